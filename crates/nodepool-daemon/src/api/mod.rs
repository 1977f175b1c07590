//! The HTTP API: CI systems ask for nodes and give them back, operators list what the pool
//! holds, Prometheus scrapes `/metrics`, and load balancers ask `/health`.
//!
//! Handlers read and write the store and read the loop's [`Status`]; they never plan.
//! A new or canceled request wakes the loop, whose next round hands out ready nodes (by
//! priority, fairly across requestors) or launches more. Every error is JSON naming what
//! is wrong; bad input is a 4xx, never a 500.
//!
//! Served on loopback by default. With tokens (`api.tokens`, `api.token-file`), every
//! endpoint but `/health` wants `Authorization: Bearer TOKEN` (compared in constant time),
//! and what a token may do is in [`auth`]; the config refuses a non-loopback address
//! without one. Each client address (an IPv6 client's /64) gets `api.rate` requests per
//! second (bursts of twice that) on every endpoint, `/health` included; bodies are limited
//! to 64 KiB, and every answer must be ready within [`REQUEST_DEADLINE`]. How connections
//! are held to their limits is in [`serve`].

mod auth;
mod routes;
mod serve;
mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use nodepool_db::{Store, StoreError};
use nodepool_executor::store;
use nodepool_model::Timestamp;
use nodepool_provider::Clock;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::DaemonError;
use crate::status::Status;
pub(crate) use auth::{Caller, Tokens};
use serve::ClientKey;
pub(crate) use serve::Limits;

/// The largest request body accepted.
const BODY_LIMIT: usize = 64 * 1024;
/// The longest an answer may take: a long poll's 60 s, and time to read the store.
const REQUEST_DEADLINE: Duration = Duration::from_secs(75);
/// The `Keep-Alive` header of every answer: an idle connection is closed after the time a
/// client has to send a request's headers ([`Limits::headers`]).
const KEEP_ALIVE: &str = "timeout=10";

/// What every handler shares.
pub(crate) struct Shared {
    /// The API's own connections to the store ([`STORE_CONNECTIONS`]): however many
    /// requests come, the loop and the lease's renewal keep theirs.
    store: Store,
    /// One per connection; requests wait for theirs here, not in a blocking thread.
    turns: tokio::sync::Semaphore,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) status: watch::Receiver<Arc<Status>>,
    /// Wakes the loop for a round now.
    pub(crate) wake: Arc<Notify>,
    pub(crate) metrics: PrometheusHandle,
    tokens: Tokens,
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
        tokens: Tokens,
    ) -> Shared {
        Shared {
            store,
            turns: tokio::sync::Semaphore::new(STORE_CONNECTIONS as usize),
            clock,
            status,
            wake,
            metrics,
            tokens,
            buckets: Mutex::new(Buckets::default()),
        }
    }
}

/// How many store connections the API has: requests beyond wait their turn.
pub(crate) const STORE_CONNECTIONS: u32 = 4;

impl Shared {
    /// Runs `f` with one of the API's store connections, once one is free.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let Ok(_turn) = self.turns.acquire().await else {
            unreachable!("the API's semaphore is never closed")
        };
        store::call(&self.store, f).await
    }
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
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    serve::serve(listener, router(Arc::new(app)), limits, stop).await;
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
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
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
        .layer(middleware::from_fn_with_state(app.clone(), limit))
        .with_state(app)
}

/// The rate limit and the deadline, for every endpoint.
async fn limit(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let rate = app.status.borrow().config.api.rate;
    let now = app.clock.now();
    let allowed = app.buckets.lock().unwrap_or_else(|p| p.into_inner()).allow(
        ClientKey::of(peer.ip()),
        now,
        rate,
    );
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
    let mut response = match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer within {} s: the store is slow or unreachable; try again",
                REQUEST_DEADLINE.as_secs()
            ),
        )
        .into_response(),
    };
    // Tells clients when an idle connection is closed, so that they stop using it first.
    response
        .headers_mut()
        .insert("keep-alive", HeaderValue::from_static(KEEP_ALIVE));
    response
}

/// Who the caller is, by its token; handlers find the [`Caller`] among the request's
/// extensions.
async fn authenticate(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let Some(caller) = app.tokens.caller(given) else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send your API token as `Authorization: Bearer TOKEN` (api.tokens)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// A token bucket per client (an IPv4 address, an IPv6 /64), for at most
/// [`Buckets::REMEMBERED`] clients.
#[derive(Debug, Default)]
struct Buckets {
    by_client: HashMap<ClientKey, (f64, Timestamp)>,
}

impl Buckets {
    /// Clients remembered at most. When that many are, the full buckets are forgotten
    /// (a forgotten client comes back to a full bucket, as it would be); if that is not
    /// enough, the half seen longest ago.
    const REMEMBERED: usize = 10_000;

    fn allow(&mut self, client: ClientKey, now: Timestamp, rate: u32) -> bool {
        let rate = f64::from(rate);
        let burst = rate * 2.0;
        if self.by_client.len() >= Self::REMEMBERED && !self.by_client.contains_key(&client) {
            self.by_client.retain(|_, (tokens, at)| {
                *tokens + now.saturating_since(*at).as_secs_f64() * rate < burst
            });
            if self.by_client.len() >= Self::REMEMBERED {
                let mut seen: Vec<Timestamp> = self.by_client.values().map(|(_, at)| *at).collect();
                let middle = seen.len() / 2;
                let (_, cut, _) = seen.select_nth_unstable(middle);
                let cut = *cut;
                self.by_client.retain(|_, (_, at)| *at > cut);
            }
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
            StoreError::NotGivenTo { .. } => StatusCode::FORBIDDEN,
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
        let client = ClientKey::of("192.0.2.1".parse().unwrap());
        let other = ClientKey::of("192.0.2.2".parse().unwrap());
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

    #[test]
    fn the_keep_alive_header_says_the_header_deadline() {
        let headers = Limits::new(512).headers.as_secs();
        assert_eq!(KEEP_ALIVE, format!("timeout={headers}"));
    }

    #[test]
    fn the_buckets_stay_bounded_and_a_busy_client_keeps_its_own() {
        let mut buckets = Buckets::default();
        let t0 = Timestamp::from_unix_seconds(1_000);
        let busy = ClientKey::of("192.0.2.1".parse().unwrap());
        let allowed = (0..30).filter(|_| buckets.allow(busy, t0, 10)).count();
        assert_eq!(allowed, 20);
        // Many clients from new IPv6 /64s, each with one request, later than the busy one.
        for i in 0..(3 * Buckets::REMEMBERED as u128) {
            let address = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | (i << 64));
            let at = t0.saturating_add(Duration::from_micros(u64::try_from(i).unwrap()));
            buckets.allow(ClientKey::of(address.into()), at, 10);
            assert!(buckets.by_client.len() <= Buckets::REMEMBERED);
        }
        // The busy client was forgotten (the oldest), so it starts again with a full
        // bucket: bounded memory costs at most one burst.
        let later = t0.saturating_add(Duration::from_millis(100));
        assert!(buckets.allow(busy, later, 10));
    }
}
