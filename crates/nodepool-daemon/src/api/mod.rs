//! The HTTP API: CI systems ask for nodes and give them back, operators list what the pool
//! holds, Prometheus scrapes `/metrics`, and load balancers ask `/health`.
//!
//! Handlers read and write the store and read the loop's [`Status`]; they never plan.
//! A new or canceled request wakes the loop, whose next round hands out ready nodes (by
//! priority, fairly across requestors) or launches more. Every error is JSON naming what
//! is wrong; bad input is a 4xx, never a 500.
//!
//! Served on loopback by default. With `api.token-file`, every endpoint but `/health`
//! wants `Authorization: Bearer TOKEN` (compared in constant time); the config refuses a
//! non-loopback address without one. Each client address gets `api.rate` requests per
//! second (bursts of twice that), and bodies are limited to 64 KiB.

mod routes;
mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use nodepool_db::{Store, StoreError};
use nodepool_model::Timestamp;
use nodepool_provider::Clock;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::DaemonError;
use crate::status::Status;

/// The largest request body accepted.
const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) status: watch::Receiver<Arc<Status>>,
    /// Wakes the loop for a round now.
    pub(crate) wake: Arc<Notify>,
    pub(crate) metrics: PrometheusHandle,
    token: Option<Vec<u8>>,
    buckets: Mutex<Buckets>,
}

type App = Arc<Shared>;

impl Shared {
    pub(crate) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        status: watch::Receiver<Arc<Status>>,
        wake: Arc<Notify>,
        metrics: PrometheusHandle,
        token: Option<Vec<u8>>,
    ) -> Shared {
        Shared {
            store,
            clock,
            status,
            wake,
            metrics,
            token,
            buckets: Mutex::new(Buckets::default()),
        }
    }
}

/// Reads the bearer token from `api.token-file`: its content without surrounding
/// whitespace, which must not be empty.
pub(crate) fn read_token(file: &Path) -> Result<Vec<u8>, DaemonError> {
    let fail = |message: String| DaemonError::Api(format!("api.token-file: {message}"));
    let text = std::fs::read_to_string(file)
        .map_err(|e| fail(format!("cannot read {}: {e}", file.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!(
            "{} is empty: put the bearer token clients must send in it",
            file.display()
        )));
    }
    Ok(token.as_bytes().to_vec())
}

/// Binds the API's address.
pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(address).await.map_err(|e| {
        DaemonError::Api(format!(
            "cannot listen on {address} (api.listen): {e}; is another nodepoold running?"
        ))
    })
}

/// Serves the API on `listener` until `stop` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Shared,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let router = router(Arc::new(app));
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!("the API stopped: {e}");
    }
}

fn router(app: App) -> Router {
    let guarded = Router::new()
        .route(
            "/v1/requests",
            post(routes::create_request).get(routes::list_requests),
        )
        .route(
            "/v1/requests/{id}",
            get(routes::get_request).delete(routes::cancel_request),
        )
        .route("/v1/nodes", get(routes::list_nodes))
        .route("/v1/nodes/{id}", get(routes::get_node))
        .route("/v1/nodes/{id}/release", post(routes::release_node))
        .route("/v1/nodes/{id}/hold", post(routes::hold_node))
        .route("/v1/images", get(routes::list_images))
        .route("/v1/providers", get(routes::list_providers))
        .route("/metrics", get(routes::metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), guard));
    Router::new()
        .merge(guarded)
        .route("/health", get(routes::health))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such endpoint: see docs/api.md")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method: see docs/api.md",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// The rate limit, then the token.
async fn guard(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let rate = app.status.borrow().config.api.rate;
    let now = app.clock.now();
    let allowed = app
        .buckets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .allow(peer.ip(), now, rate);
    if !allowed {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {rate} requests per second from {}: slow down (api.rate)",
                peer.ip()
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    if let Some(token) = &app.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let good = given
            .is_some_and(|given| subtle::ConstantTimeEq::ct_eq(given, token.as_slice()).into());
        if !good {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "send the API token as `Authorization: Bearer TOKEN` (api.token-file)",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// A token bucket per client address.
#[derive(Debug, Default)]
struct Buckets {
    by_client: HashMap<IpAddr, (f64, Timestamp)>,
}

impl Buckets {
    /// Clients remembered before full buckets are forgotten.
    const REMEMBERED: usize = 10_000;

    fn allow(&mut self, client: IpAddr, now: Timestamp, rate: u32) -> bool {
        let rate = f64::from(rate);
        let burst = rate * 2.0;
        if self.by_client.len() >= Self::REMEMBERED {
            self.by_client.retain(|_, (tokens, at)| {
                *tokens + now.saturating_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self.by_client.entry(client).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// An error answer: `{"error": "...", "field": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: wire::ErrorBody,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: wire::ErrorBody {
                error: error.into(),
                field: None,
            },
        }
    }

    /// A 400 about one field of the body or query.
    pub(crate) fn field(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: wire::ErrorBody {
                error: error.into(),
                field: Some(field.into()),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let status = match &error {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::InvalidTransition { .. }
            | StoreError::Conflict { .. }
            | StoreError::Raced { .. } => StatusCode::CONFLICT,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::Unavailable { .. } | StoreError::NotInitialised(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("API: store: {error}");
        }
        ApiError::new(status, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_client_gets_a_burst_of_twice_the_rate_then_the_rate() {
        let mut buckets = Buckets::default();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Timestamp::from_unix_seconds(1_000);
        let allowed = (0..25).filter(|_| buckets.allow(client, t0, 10)).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        assert!(
            buckets.allow(other, t0, 10),
            "each client has its own bucket"
        );
        let later = t0.saturating_add(Duration::from_millis(300));
        let allowed = (0..10).filter(|_| buckets.allow(client, later, 10)).count();
        assert_eq!(allowed, 3, "10 per second refill 3 in 300 ms");
    }
}
