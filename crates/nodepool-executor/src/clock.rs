//! The one place nodepool reads the wall clock.

use std::time::Duration;

use async_trait::async_trait;
use nodepool_model::Timestamp;
use nodepool_provider::Clock;

/// The real clock: the system's time, and tokio's timers to wait.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> Timestamp {
        // The single sanctioned read of the wall clock; everything else gets time from here.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp::from_unix_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    async fn sleep_until(&self, at: Timestamp) {
        let wait = at.saturating_since(self.now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A clock on tokio's timer: with tokio's time paused (tests, simulations) it is virtual and
/// jumps ahead whenever every task waits; otherwise it follows the monotonic clock from
/// `start`.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: Timestamp) -> TokioClock {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

#[async_trait]
impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.start.saturating_add(self.origin.elapsed())
    }

    async fn sleep_until(&self, at: Timestamp) {
        let wait = at.saturating_since(self.now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
