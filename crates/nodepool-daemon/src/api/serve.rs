//! The API's connections: accepted under a cap, each client address held to a share of it
//! when connections run short, every connection given a deadline to send its request's
//! headers (which is also how long an idle keep-alive connection is kept), every request a
//! deadline to be answered, and every write of an answer a deadline to make progress.
//! A stop asks every connection to close after its current answer and waits a few seconds
//! at most: an idle or half-sent connection never holds the daemon up.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the API treats its connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The most connections open at once.
    pub(crate) connections: usize,
    /// The most one client address (or IPv6 /64) may hold open once three quarters of
    /// `connections` are.
    pub(crate) per_client: usize,
    /// How long a client has to send a request's headers, from when the connection opens
    /// or its last answer was sent.
    pub(crate) headers: Duration,
    /// How long an answer may wait on a client that does not read it.
    pub(crate) write: Duration,
    /// How long a stop waits for answers being written.
    pub(crate) stop: Duration,
}

impl Limits {
    /// The limits for `api.max-connections`.
    pub(crate) fn new(max_connections: u32) -> Limits {
        let connections = usize::try_from(max_connections).unwrap_or(usize::MAX);
        Limits {
            connections,
            per_client: (connections / 2).max(1),
            headers: Duration::from_secs(10),
            write: Duration::from_secs(30),
            stop: Duration::from_secs(5),
        }
    }
}

/// Who holds how many connections.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<ClientKey, usize>,
}

/// A client as the limits count it: an IPv4 address, or an IPv6 address's /64 (one host or
/// one customer is given a /64, and can use any address in it).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct ClientKey(u128);

impl ClientKey {
    pub(crate) fn of(address: IpAddr) -> ClientKey {
        match address {
            IpAddr::V4(v4) => ClientKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(u128::from(u32::from(v4))),
                None => ClientKey((u128::from(v6) >> 64) | (1 << 127)),
            },
        }
    }
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    client: ClientKey,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, client: ClientKey, limits: Limits) -> Option<Admitted> {
    let mut guard = open.lock().unwrap_or_else(|p| p.into_inner());
    let mine = guard.by_client.get(&client).copied().unwrap_or(0);
    // A client's share binds only once three quarters of the connections are taken: a
    // busy client alone may use more, and a hostile one leaves a quarter to the others.
    let crowded = guard.total >= limits.connections - limits.connections / 4;
    if guard.total >= limits.connections || (crowded && mine >= limits.per_client) {
        return None;
    }
    guard.total += 1;
    *guard.by_client.entry(client).or_default() += 1;
    Some(Admitted {
        open: open.clone(),
        client,
    })
}

/// Serves `router` on `listener` until `stop` completes, then closes every connection
/// within `limits.stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    // Refused connections are said at most once a minute.
    let mut refused_said: Option<tokio::time::Instant> = None;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.headers)
        .max_buf_size(64 * 1024);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: the connections open will
                    // end by their deadlines.
                    tracing::warn!("the API cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let client = ClientKey::of(peer.ip());
        let Some(admitted) = admit(&open, client, limits) else {
            if refused_said.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                tracing::warn!(
                    client = %peer.ip(),
                    "the API refuses connections over its limit ({} in all, {} per client; api.max-connections)",
                    limits.connections,
                    limits.per_client
                );
                refused_said = Some(tokio::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move { tower_service::Service::call(&mut router.clone(), request).await }
        });
        // A write that makes no progress for `limits.write` ends the connection: a client
        // that asks and never reads holds no connection for longer.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write));
        let connection = http.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let mut closed = closed.clone();
        connections.spawn(async move {
            let _admitted = admitted;
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closed.wait_for(|closing| *closing) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let deadline = tokio::time::Instant::now() + limits.stop;
    while !connections.is_empty() {
        tokio::select! {
            _ = connections.join_next() => {}
            () = tokio::time::sleep_until(deadline) => {
                tracing::info!(open = connections.len(), "the API closes the connections still open");
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_ipv4_mapped_as_ipv4() {
        let key = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_ne!(
            key("0.0.0.1"),
            key("::1:0:0:0:0"),
            "v4 and v6 never collide"
        );
    }

    #[tokio::test]
    async fn a_client_that_never_reads_its_answer_loses_its_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Far more than the socket buffers of both ends hold.
        let big = Arc::new(vec![b'x'; 32 << 20]);
        let router = Router::new()
            .route(
                "/big",
                axum::routing::get(move || {
                    let big = big.clone();
                    async move { big.as_ref().clone() }
                }),
            )
            .route("/small", axum::routing::get(|| async { "small" }));
        let limits = Limits {
            connections: 1,
            per_client: 1,
            headers: Duration::from_secs(10),
            write: Duration::from_secs(1),
            stop: Duration::from_secs(1),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        let ask = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            Some(String::from_utf8_lossy(&answer).into_owned())
        };

        // Asks for the big answer, and never reads it.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stuck = socket.connect(address).await.unwrap();
        stuck
            .write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let asked = tokio::time::Instant::now();
        // It holds the only place until its answer's write deadline passes; then the place
        // is given back and another client is answered.
        let deadline = asked + Duration::from_secs(30);
        let answered = loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stuck client still holds its connection"
            );
            match ask("/small").await {
                Some(answer) if answer.starts_with("HTTP/1.1 200") => break answer,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        assert!(answered.ends_with("small"), "{answered}");
        assert!(
            asked.elapsed() >= limits.write,
            "answered before the deadline"
        );
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn connections_are_capped_in_all_and_per_client_and_given_back() {
        let limits = Limits {
            connections: 4,
            per_client: 1,
            headers: Duration::from_secs(1),
            write: Duration::from_secs(1),
            stop: Duration::from_secs(1),
        };
        let open = Arc::new(Mutex::new(Open::default()));
        let a = ClientKey::of("192.0.2.1".parse().unwrap());
        let b = ClientKey::of("192.0.2.2".parse().unwrap());
        let c = ClientKey::of("192.0.2.3".parse().unwrap());
        // Four in all, crowded from three, one each then.
        let a1 = admit(&open, a, limits).unwrap();
        let a2 = admit(&open, a, limits).unwrap();
        let _a3 = admit(&open, a, limits).expect("more than its share while there is room");
        assert!(admit(&open, a, limits).is_none(), "its share, once crowded");
        let _b1 = admit(&open, b, limits).expect("the others' quarter");
        assert!(admit(&open, c, limits).is_none(), "the cap in all");
        drop(a1);
        assert!(admit(&open, a, limits).is_none(), "still over its share");
        let _c1 = admit(&open, c, limits).expect("a place given back");
        drop(a2);
        assert_eq!(open.lock().unwrap().total, 3);
    }
}
