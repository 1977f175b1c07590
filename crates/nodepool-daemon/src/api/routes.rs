//! The endpoints. Each reads its input strictly, does one store operation on the blocking
//! pool, and answers JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nodepool_db::{ImageFilter, NodeFilter};
use nodepool_model::{
    HoldNote, ImageName, ImageState, LabelName, NodeId, NodeState, ProviderName, Reason,
    ReasonCode, RequestId, RequestState,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::wire::{
    Hold, ImageOut, ImageQuery, NewRequest, NodeOut, NodeQuery, RequestOut, RequestQuery, WaitQuery,
};
use super::{ApiError, App, Caller};

/// The most labels one request may list.
const MAX_LABELS: usize = 100;
/// The longest a `GET /v1/requests/{id}?wait=` may wait.
const MAX_WAIT: Duration = Duration::from_secs(60);

type Answer = Result<Response, ApiError>;

/// Reads a JSON body strictly; `empty` is what an empty body means, if it may be empty.
fn body<T: DeserializeOwned>(
    bytes: Result<Bytes, BytesRejection>,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let bytes = bytes.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!("the body is larger than {} KiB", super::BODY_LIMIT / 1024),
            )
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "the body is empty: send a JSON object",
            )
        });
    }
    // Syntax first (with line and column), then the shape (with the field's path).
    let mut reader = serde_json::Deserializer::from_slice(&bytes);
    let value = Value::deserialize(&mut reader)
        .and_then(|value| reader.end().map(|()| value))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid JSON body: expected an object",
        ));
    }
    let value: T = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = format!("invalid JSON body: {}", error.inner());
        if path == "." || path == "?" {
            ApiError::new(StatusCode::BAD_REQUEST, message)
        } else {
            ApiError::field(path, message)
        }
    })?;
    Ok(value)
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text()))
}

fn id(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::field(
            "id",
            format!("{text:?} is not a {what} id: ids are whole numbers"),
        )
    })
}

/// Parses an optional filter, naming the field when it is wrong.
fn filter<T, E: std::fmt::Display>(
    field: &str,
    value: Option<String>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    value
        .map(|v| parse(&v).map_err(|e| ApiError::field(field, format!("{v:?}: {e}"))))
        .transpose()
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (status, Json(value)).into_response()
}

pub(super) async fn create_request(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let new: NewRequest = body(bytes, None)?;
    if new.labels.is_empty() {
        return Err(ApiError::field("labels", "give at least one label"));
    }
    if new.labels.len() > MAX_LABELS {
        return Err(ApiError::field(
            "labels",
            format!(
                "{} labels: one request may ask for at most {MAX_LABELS} nodes",
                new.labels.len()
            ),
        ));
    }
    let labels = new
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            LabelName::new(l.clone())
                .map_err(|e| ApiError::field(format!("labels[{i}]"), format!("{l:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A consumer's requests are its own, whatever the body says; an admin may ask for
    // anyone. Unnamed, a request is the token's, or else the client address's.
    let requestor = match (&caller, new.requestor) {
        (Caller::Consumer(name), _) | (Caller::Admin(Some(name)), None) => name.clone(),
        (_, Some(given)) => given.trim().to_owned(),
        (_, None) => peer.ip().to_string(),
    };
    if requestor.is_empty() || requestor.len() > 255 || requestor.chars().any(char::is_control) {
        return Err(ApiError::field(
            "requestor",
            "name who asks (1 to 255 printable characters), such as the CI system's name",
        ));
    }
    let now = app.clock.now();
    let range = nodepool_config::defaults::PRIORITIES;
    let priority = new.priority.clamp(*range.start(), *range.end());
    let request = app
        .call(move |s| s.create_request(&labels, &requestor, priority, now))
        .await?;
    app.wake.notify_one();
    let location = format!("/v1/requests/{}", request.id);
    let mut response = json(StatusCode::ACCEPTED, &RequestOut::new(request, Vec::new()));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

pub(super) async fn list_requests(
    State(app): State<App>,
    q: Result<Query<RequestQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let state = filter("state", q.state, RequestState::from_str)?;
    let requests = app.call(move |s| s.requests(state)).await?;
    let out: Vec<RequestOut> = requests
        .into_iter()
        .filter(|r| q.requestor.as_ref().is_none_or(|who| &r.requestor == who))
        .map(|r| RequestOut::new(r, Vec::new()))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// One request; with `?wait=SECONDS` (at most 60), answers as soon as it stops waiting, or
/// when the time is up.
pub(super) async fn get_request(
    State(app): State<App>,
    Path(text): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Answer {
    let request = RequestId::new(id(&text, "request")?);
    let wait = match query(q)?.wait {
        None => Duration::ZERO,
        Some(secs) if secs.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        Some(secs) => {
            return Err(ApiError::field(
                "wait",
                format!("{secs}: give 0 to 60 seconds"),
            ));
        }
    };
    let deadline = app.clock.now().saturating_add(wait);
    let mut rounds = app.status.clone();
    loop {
        // Seen before the read: a round that ends after it wakes us.
        rounds.borrow_and_update();
        let found = app.call(move |s| s.request(request)).await?;
        if found.state != RequestState::Requested || app.clock.now() >= deadline {
            return Ok(json(StatusCode::OK, &render(&app, found).await?));
        }
        tokio::select! {
            changed = rounds.changed() => if changed.is_err() {
                return Ok(json(StatusCode::OK, &render(&app, found).await?));
            },
            () = app.clock.sleep_until(deadline) => {}
        }
    }
}

/// A request with its nodes, once it is fulfilled.
async fn render(app: &App, request: nodepool_model::NodeRequest) -> Result<RequestOut, ApiError> {
    if request.state != RequestState::Fulfilled {
        return Ok(RequestOut::new(request, Vec::new()));
    }
    let ids = request.nodes.clone();
    let nodes = app
        .call(move |s| {
            let mut nodes = Vec::with_capacity(ids.len());
            for id in ids {
                match s.node(id) {
                    Ok(node) => nodes.push(node),
                    // Released and deleted since.
                    Err(nodepool_db::StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(nodes)
        })
        .await?;
    let config = app.status.borrow().config.clone();
    let nodes = nodes
        .into_iter()
        .map(|n| NodeOut::new(n, &config))
        .collect();
    Ok(RequestOut::new(request, nodes))
}

pub(super) async fn cancel_request(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
) -> Answer {
    let request = RequestId::new(id(&text, "request")?);
    let now = app.clock.now();
    let by = who(&caller, peer);
    let reason = Reason::new(
        ReasonCode::Canceled,
        format!("canceled through the API by {by}"),
    );
    let canceled = app
        .call(move |s| {
            let found = s.request(request)?;
            if !caller.may_act_for(Some(&found.requestor)) {
                return Ok(Err(not_yours(
                    &caller,
                    format!("request {request} is {}'s", found.requestor),
                )));
            }
            s.cancel_request(request, now, &reason).map(Ok)
        })
        .await??;
    app.wake.notify_one();
    Ok(json(StatusCode::OK, &render(&app, canceled).await?))
}

/// Who did something through the API, for the event log: the token's name, or where the
/// call came from.
fn who(caller: &Caller, peer: SocketAddr) -> String {
    match caller.name() {
        Some(name) => name.to_owned(),
        None => format!("an API client at {}", peer.ip()),
    }
}

/// The 403 for a consumer acting on what is not its own.
fn not_yours(caller: &Caller, what: String) -> ApiError {
    let me = caller.name().unwrap_or("this token");
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("{what}, not {me}'s: only its owner or an admin token may change it"),
    )
}

pub(super) async fn list_nodes(
    State(app): State<App>,
    q: Result<Query<NodeQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let filter = NodeFilter {
        provider: filter("provider", q.provider, |v| ProviderName::new(v.to_owned()))?,
        label: filter("label", q.label, |v| LabelName::new(v.to_owned()))?,
        state: filter("state", q.state, NodeState::from_str)?,
    };
    let nodes = app.call(move |s| s.nodes(&filter)).await?;
    let config = app.status.borrow().config.clone();
    let out: Vec<NodeOut> = nodes
        .into_iter()
        .map(|n| NodeOut::new(n, &config))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

pub(super) async fn get_node(State(app): State<App>, Path(text): Path<String>) -> Answer {
    let node = NodeId::new(id(&text, "node")?);
    let found = app.call(move |s| s.node(node)).await?;
    let config = app.status.borrow().config.clone();
    Ok(json(StatusCode::OK, &NodeOut::new(found, &config)))
}

pub(super) async fn release_node(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
) -> Answer {
    let node = NodeId::new(id(&text, "node")?);
    let now = app.clock.now();
    let by = who(&caller, peer);
    let released = app
        .call(move |s| s.release_node(node, now, &by, caller.acting()))
        .await?;
    app.wake.notify_one();
    let config = app.status.borrow().config.clone();
    Ok(json(StatusCode::OK, &NodeOut::new(released, &config)))
}

pub(super) async fn hold_node(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer {
    let node = NodeId::new(id(&text, "node")?);
    let hold: Hold = body(bytes, Some(Hold::default()))?;
    // A consumer holds under its own name; an admin or a token-less API may name anyone.
    let by = match (&caller, hold.by) {
        (Caller::Consumer(name), _) => name.clone(),
        (_, Some(by)) if !by.trim().is_empty() => by.trim().to_owned(),
        (_, _) => who(&caller, peer),
    };
    let note = HoldNote {
        reason: hold.reason.unwrap_or_default(),
        by,
    };
    if note.reason.chars().count() > 1024 || note.by.chars().count() > 255 {
        return Err(ApiError::field(
            "reason",
            "a reason of at most 1024 bytes, and `by` of at most 255",
        ));
    }
    let now = app.clock.now();
    let held = app
        .call(move |s| s.hold_node(node, &note, now, caller.acting()))
        .await?;
    let config = app.status.borrow().config.clone();
    Ok(json(StatusCode::OK, &NodeOut::new(held, &config)))
}

pub(super) async fn list_images(
    State(app): State<App>,
    q: Result<Query<ImageQuery>, QueryRejection>,
) -> Answer {
    let q = query(q)?;
    let filter = ImageFilter {
        provider: filter("provider", q.provider, |v| ProviderName::new(v.to_owned()))?,
        name: filter("image", q.image, |v| ImageName::new(v.to_owned()))?,
        state: filter("state", q.state, ImageState::from_str)?,
        build_request: None,
    };
    let images = app.call(move |s| s.images(&filter)).await?;
    let out: Vec<ImageOut> = images.into_iter().map(ImageOut::from).collect();
    Ok(json(StatusCode::OK, &out))
}

/// Each provider of the running config: its quota, its nodes by state, and its last call.
pub(super) async fn list_providers(State(app): State<App>) -> Answer {
    let nodes = app.call(|s| s.nodes(&NodeFilter::default())).await?;
    let status = app.status.borrow().clone();
    let out: Vec<Value> = status
        .config
        .providers
        .iter()
        .map(|p| {
            let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
            for node in nodes.iter().filter(|n| n.provider == p.name) {
                *by_state.entry(node.state.as_str()).or_default() += 1;
            }
            let seen = status.providers.get(&p.name).cloned().unwrap_or_default();
            json!({
                "name": p.name.as_str(),
                "driver": match p.driver {
                    nodepool_config::Driver::Fake => "fake",
                    _ => "openstack",
                },
                "max_servers": p.max_servers,
                "nodes": by_state,
                "connected": seen.connected,
                "last_ok": seen.last_ok.map(|t| t.to_string()),
                "last_error": seen.last_error.map(|(at, message)| json!({"at": at.to_string(), "message": message})),
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

/// Live: the loop runs rounds. Ready: live, a first round is done (recovery and the first
/// look at the clouds), and the loop's last read of the store succeeded. 200 when ready,
/// else 503. Answered from what the loop last reported: a call costs no store connection.
pub(super) async fn health(State(app): State<App>) -> Response {
    let status = app.status.borrow().clone();
    let now = app.clock.now();
    let live = status.live(now);
    let ready = status.ready(now);
    let providers: BTreeMap<&str, Value> = status
        .providers
        .iter()
        .map(|(name, p)| {
            (
                name.as_str(),
                json!({
                    "connected": p.connected,
                    "last_ok": p.last_ok.map(|t| t.to_string()),
                    "last_error": p.last_error.as_ref().map(|(at, message)| json!({"at": at.to_string(), "message": message})),
                }),
            )
        })
        .collect();
    let store = match &status.store.error {
        None => json!({"ok": true, "last_ok": status.store.last_ok.map(|t| t.to_string())}),
        Some((at, error)) => json!({
            "ok": false,
            "error": error,
            "since": at.to_string(),
            "last_ok": status.store.last_ok.map(|t| t.to_string()),
        }),
    };
    let body = json!({
        "live": live,
        "ready": ready,
        "installation": status.installation.to_string(),
        "started": status.started.to_string(),
        "last_round": status.last_round.map(|t| t.to_string()),
        "store": store,
        "config": {
            "file": status.config_file.display().to_string(),
            "loaded": status.config_loaded.to_string(),
            "error": status.config_error,
        },
        "providers": providers,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &body)
}

/// Prometheus' text format.
pub(super) async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        app.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_strictly_and_errors_name_the_field() {
        let read = |text: &'static str| body::<NewRequest>(Ok(Bytes::from(text)), None);
        let ok = read(r#"{"labels": ["small"], "requestor": "zuul"}"#).unwrap();
        assert_eq!((ok.labels.len(), ok.priority), (1, 0));
        let error = read(r#"{"labels": ["small"], "requestor": "zuul", "prio": 1}"#).unwrap_err();
        assert!(
            error.body.error.contains("unknown field `prio`"),
            "{error:?}"
        );
        let error =
            read(r#"{"labels": ["small"], "requestor": "zuul", "priority": "high"}"#).unwrap_err();
        assert_eq!(error.body.field.as_deref(), Some("priority"));
        let error = read(r#"{"labels": ["small"], "requestor": null}"#).unwrap_err();
        assert_eq!(error.body.field.as_deref(), Some("requestor"), "{error:?}");
        assert!(
            read(r#"{"labels": ["small"]}"#)
                .unwrap()
                .requestor
                .is_none()
        );
        let error = read(r#"{"labels": [1], "requestor": "zuul"}"#).unwrap_err();
        assert_eq!(error.body.field.as_deref(), Some("labels[0]"));
        let error = read(r#"{"labels": ["small"], "requestor": "zuul"} {}"#).unwrap_err();
        assert!(
            error.body.error.contains("trailing characters"),
            "{error:?}"
        );
        let error = read("[]").unwrap_err();
        assert_eq!(error.body.error, "invalid JSON body: expected an object");
        let error = read("  ").unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let error = read(r#"{"labels": ["small"]"#).unwrap_err();
        assert!(
            error.body.error.starts_with("invalid JSON body: EOF"),
            "{error:?}"
        );
    }
}
