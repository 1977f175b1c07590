//! Time for the shell: the daemon passes a [`Clock`]; tests pass a [`ManualClock`] they move
//! forward themselves, so nothing ever sleeps for real in a test.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use nodepool_model::Timestamp;
use tokio::sync::watch;

/// A source of time that can also wait.
#[async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The time now.
    fn now(&self) -> Timestamp;

    /// Returns once the time is `at` or later.
    async fn sleep_until(&self, at: Timestamp);

    /// Returns once `duration` has passed.
    async fn sleep(&self, duration: Duration) {
        let at = self.now().saturating_add(duration);
        self.sleep_until(at).await;
    }
}

/// A clock that moves only when told to: deterministic time for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<Timestamp>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: watch::Sender::new(start),
        }
    }

    /// Moves the clock forward by `by`, waking whoever waits for a time now reached.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now = now.saturating_add(by));
    }

    /// Sets the clock to `at` if that is later than now; a clock never goes backwards.
    pub fn advance_to(&self, at: Timestamp) {
        self.now.send_if_modified(|now| {
            let later = at > *now;
            if later {
                *now = at;
            }
            later
        });
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: Timestamp) {
        let mut now = self.now.subscribe();
        // The sender lives as long as `self`, which outlives this call: waiting cannot fail.
        let _ = now.wait_for(|now| *now >= at).await;
    }
}
