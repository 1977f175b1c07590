//! Rate limiting, retries and call statistics around any provider.
//!
//! `rate` keeps its 2014 meaning: the least time between the starts of two calls to one
//! provider (not calls per second). Callers reserve their start times in order, so no caller
//! waits longer than its place in the queue. Creates (servers, snapshots, floating IPs) go
//! one at a time, in the order they were asked for, as every call did behind 2014's task
//! manager: a cloud accepts a burst of concurrent creates no sooner than the same creates
//! one after another, but one after another the first servers start booting while the rest
//! are still being accepted. Reads and deletes run concurrently. When the cloud answers "rate limited" with a
//! retry-after, nobody calls it before that time. Operations that are safe to repeat (reads
//! and deletes) are retried on transient failures, a few times with growing waits; creates
//! are never retried here, since a lost answer may hide a created resource.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nodepool_model::{ExternalId, ProviderName, Timestamp};

use crate::{
    Clock, CloudImage, ErrorKind, Flavor, FloatingIp, Limits, Provider, Result, Server, ServerSpec,
    op,
};

/// Attempts of a safe operation, the first included.
const ATTEMPTS: u32 = 4;
/// The wait before the first retry; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Calls, errors and time spent, for one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperationStats {
    /// Calls made to the cloud, retries included.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Time spent in calls, waits for the rate limiter excluded.
    pub latency: Duration,
    /// Time spent waiting for the rate limiter.
    pub waited: Duration,
    /// When the last call that succeeded ended.
    pub last_ok: Option<Timestamp>,
    /// When the last call that failed ended.
    pub last_failed: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct State {
    /// The earliest start of the next call.
    next_slot: Option<Timestamp>,
    stats: BTreeMap<&'static str, OperationStats>,
    /// The last failure: when, which operation, and the cloud's answer.
    last_error: Option<(Timestamp, &'static str, String)>,
}

/// A provider whose every call goes through a rate limiter, with retries and statistics.
#[derive(Debug)]
pub struct Limited<P> {
    inner: P,
    clock: Arc<dyn Clock>,
    rate: Mutex<Duration>,
    state: Mutex<State>,
    /// Held by the create call under way; tokio's mutex serves waiters first come, first
    /// served.
    creating: tokio::sync::Mutex<()>,
}

impl<P: Provider> Limited<P> {
    /// Wraps `inner`, spacing call starts at least `rate` apart.
    pub fn new(inner: P, clock: Arc<dyn Clock>, rate: Duration) -> Limited<P> {
        Limited {
            inner,
            clock,
            rate: Mutex::new(rate),
            state: Mutex::new(State::default()),
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// The provider inside.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Changes the rate (a config reload); it applies from the next reservation on.
    pub fn set_rate(&self, rate: Duration) {
        *self.rate.lock().unwrap_or_else(|p| p.into_inner()) = rate;
    }

    /// Statistics per operation so far.
    pub fn stats(&self) -> BTreeMap<&'static str, OperationStats> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone()
    }

    /// The last call that failed: when it ended, its operation and the error.
    pub fn last_error(&self) -> Option<(Timestamp, &'static str, String)> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error
            .clone()
    }

    /// Reserves the next start time and waits for it.
    async fn wait_turn(&self, operation: &'static str) {
        let rate = *self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let slot = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let slot = state.next_slot.map_or(now, |next| next.max(now));
            state.next_slot = Some(slot.saturating_add(rate));
            slot
        };
        if slot > now {
            self.clock.sleep_until(slot).await;
        }
        let waited = self.clock.now().saturating_since(now);
        self.record(operation, |s| s.waited += waited);
    }

    fn record(&self, operation: &'static str, f: impl FnOnce(&mut OperationStats)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(state.stats.entry(operation).or_default());
    }

    /// Nobody calls before `at`: the cloud asked for a pause.
    fn hold_until(&self, at: Timestamp) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.next_slot = Some(state.next_slot.map_or(at, |next| next.max(at)));
    }

    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        safe_to_repeat: bool,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            self.wait_turn(operation).await;
            let start = self.clock.now();
            let result = f().await;
            let end = self.clock.now();
            let spent = end.saturating_since(start);
            let failed = result.is_err();
            self.record(operation, |s| {
                s.calls += 1;
                s.errors += u64::from(failed);
                s.latency += spent;
                if failed {
                    s.last_failed = Some(end);
                } else {
                    s.last_ok = Some(end);
                }
            });
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_error = Some((end, operation, error.to_string()));
            if let ErrorKind::RateLimited { retry_after } = error.kind {
                self.hold_until(
                    self.clock
                        .now()
                        .saturating_add(retry_after.unwrap_or(backoff)),
                );
            }
            if !(safe_to_repeat && error.is_retryable() && attempt < ATTEMPTS) {
                return Err(error);
            }
            if !matches!(error.kind, ErrorKind::RateLimited { .. }) {
                self.clock.sleep(backoff).await;
            }
            backoff *= 2;
            attempt += 1;
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for Limited<P> {
    fn name(&self) -> &ProviderName {
        self.inner.name()
    }

    async fn create_server(&self, spec: &ServerSpec) -> Result<Server> {
        let _turn = self.creating.lock().await;
        self.call(op::CREATE_SERVER, false, || self.inner.create_server(spec))
            .await
    }

    async fn get_server(&self, id: &ExternalId) -> Result<Server> {
        self.call(op::GET_SERVER, true, || self.inner.get_server(id))
            .await
    }

    async fn list_servers(&self) -> Result<Vec<Server>> {
        self.call(op::LIST_SERVERS, true, || self.inner.list_servers())
            .await
    }

    async fn list_servers_changed(&self, since: Timestamp) -> Result<Vec<Server>> {
        self.call(op::LIST_SERVERS_CHANGED, true, || {
            self.inner.list_servers_changed(since)
        })
        .await
    }

    async fn delete_server(&self, id: &ExternalId) -> Result<()> {
        self.call(op::DELETE_SERVER, true, || self.inner.delete_server(id))
            .await
    }

    async fn create_floating_ip(
        &self,
        server: &ExternalId,
        pool: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<FloatingIp> {
        let _turn = self.creating.lock().await;
        self.call(op::CREATE_FLOATING_IP, false, || {
            self.inner.create_floating_ip(server, pool, metadata)
        })
        .await
    }

    async fn list_floating_ips(&self) -> Result<Vec<FloatingIp>> {
        self.call(op::LIST_FLOATING_IPS, true, || {
            self.inner.list_floating_ips()
        })
        .await
    }

    async fn delete_floating_ip(&self, id: &ExternalId) -> Result<()> {
        self.call(op::DELETE_FLOATING_IP, true, || {
            self.inner.delete_floating_ip(id)
        })
        .await
    }

    async fn create_image(
        &self,
        server: &ExternalId,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ExternalId> {
        let _turn = self.creating.lock().await;
        self.call(op::CREATE_IMAGE, false, || {
            self.inner.create_image(server, name, metadata)
        })
        .await
    }

    async fn get_image(&self, id: &ExternalId) -> Result<CloudImage> {
        self.call(op::GET_IMAGE, true, || self.inner.get_image(id))
            .await
    }

    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        self.call(op::LIST_IMAGES, true, || self.inner.list_images())
            .await
    }

    async fn delete_image(&self, id: &ExternalId) -> Result<()> {
        self.call(op::DELETE_IMAGE, true, || self.inner.delete_image(id))
            .await
    }

    async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        self.call(op::LIST_FLAVORS, true, || self.inner.list_flavors())
            .await
    }

    async fn limits(&self) -> Result<Limits> {
        self.call(op::LIMITS, true, || self.inner.limits()).await
    }
}
