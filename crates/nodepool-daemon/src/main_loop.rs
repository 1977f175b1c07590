//! The closed event loop: everything that can wake the daemon is an [`Event`], and
//! [`Daemon::handle`] is the one place that says what each leads to. Deadlines are timers
//! of one [`TimerTable`](crate::timers::TimerTable); the loop sleeps until the earliest.
//!
//! A round (`round.rs`) follows every event that may change a plan: a timer of its own, a
//! listing or a periodic job falling due, finished work, a request from the API, a config
//! that changed or was refused, SIGHUP, a provider newly connected. Nothing is polled per
//! node.

use std::future::Future;
use std::sync::Arc;

use nodepool_model::Timestamp;
use tokio::sync::Notify;
use tokio::task::{Id, JoinError};

use crate::DaemonError;
use crate::config_watch::Reread;
use crate::daemon::Daemon;
use crate::timers::Timer;

/// What wakes the daemon.
#[derive(Debug)]
pub(crate) enum Event {
    /// A timer expired.
    Timer(Timer),
    /// The config file is to be read at once (SIGHUP).
    Reload,
    /// The API asks for a round (a new request, a node given back).
    Wake,
    /// Work ended (finished, failed or cancelled).
    Finished(Result<Id, JoinError>),
    /// An executor started waiting on a provider's listings: they come at the busy pace.
    ListingWanted,
    /// Stop.
    Stop,
}

/// What the loop does after an event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// Runs a round now.
    Round,
    /// Waits for the next event.
    Wait,
    /// Stops.
    Stop,
}

impl Daemon {
    /// Runs rounds until `stop` completes; `reload` asks for the config to be read at once.
    ///
    /// # Errors
    ///
    /// None yet: problems of one round are logged and the next round tries again.
    pub async fn run(
        mut self,
        stop: impl Future<Output = ()>,
        reload: Arc<Notify>,
    ) -> Result<(), DaemonError> {
        tokio::pin!(stop);
        self.round().await;
        loop {
            let event = self.next_event(&mut stop, &reload).await;
            match self.handle(event).await {
                Then::Round => self.round().await,
                Then::Wait => {}
                Then::Stop => return self.stop().await,
            }
        }
    }

    /// Waits for what comes first.
    async fn next_event(
        &mut self,
        stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        reload: &Notify,
    ) -> Event {
        let (clock, wanted, wake, lost) = (
            self.clock.clone(),
            self.clouds.wanted.clone(),
            self.wake.clone(),
            self.peers.when_lost(),
        );
        // The fence follows the lease; while fenced, a look every second for its renewal.
        let fence = if self.peers.fenced {
            self.clock
                .now()
                .saturating_add(std::time::Duration::from_secs(1))
        } else {
            self.peers.fence_at()
        };
        self.timers.set(Timer::Fence, Some(fence));
        let next = self.timers.next();
        let timer = async {
            match next {
                Some((timer, at)) => {
                    clock.sleep_until(at).await;
                    timer
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.as_mut() => Event::Stop,
            () = lost => Event::Stop,
            () = reload.notified() => Event::Reload,
            () = wake.notified() => Event::Wake,
            timer = timer => Event::Timer(timer),
            done = self.work.next_finished() => Event::Finished(done),
            () = wanted.notified() => Event::ListingWanted,
        }
    }

    /// What an event leads to.
    pub(crate) async fn handle(&mut self, event: Event) -> Then {
        let now = self.clock.now();
        // Whatever came first, the fence is brought up to date before any more work (a
        // loop held up by a slow store, or kept busy by other events, may find its timer
        // past due or never reach it).
        let fenced = self.fence(now);
        match event {
            Event::Stop => Then::Stop,
            Event::Wake => Then::Round,
            Event::Finished(done) => {
                self.work.finished(done);
                // Let a burst of finishing work end before planning again.
                while let Some(done) = self.work.try_finished() {
                    self.work.finished(done);
                }
                Then::Round
            }
            Event::ListingWanted => {
                let (every, busy_every) = (self.options.tick, self.options.busy_tick);
                if let Some(due) = self.clouds.next_listing(every, busy_every) {
                    self.timers.sooner(Timer::Listing, due);
                }
                Then::Wait
            }
            // SIGHUP: read at once, and a round whatever the file holds.
            Event::Reload => {
                self.reload(now).await;
                Then::Round
            }
            Event::Timer(Timer::Reload) => self.reload(now).await,
            Event::Timer(Timer::Connect) => {
                self.timers.set(Timer::Connect, None);
                if self.connect(now).await {
                    Then::Round
                } else {
                    Then::Wait
                }
            }
            Event::Timer(Timer::Fence) => fenced,
            Event::Timer(Timer::Round | Timer::Listing | Timer::Cleanup | Timer::Check) => {
                Then::Round
            }
        }
    }

    /// Stops all work when the lease could not be renewed in time (before the other
    /// daemons may take the work over), and lets work start again once it is.
    fn fence(&mut self, now: Timestamp) -> Then {
        let fence_at = self.peers.fence_at();
        if self.peers.fenced {
            if now < fence_at {
                self.peers.fenced = false;
                tracing::info!("this daemon's lease is renewed: its work starts again");
                return Then::Round;
            }
            return Then::Wait;
        }
        if now < fence_at {
            return Then::Wait;
        }
        tracing::warn!(
            stopped = self.work.len(),
            "this daemon could not renew its lease, which runs out at {}: its work is stopped now, before other daemons may take it over; nothing starts until the store answers again",
            self.peers.lease_until()
        );
        self.work.abort_all();
        self.peers.fenced = true;
        Then::Wait
    }

    /// Reads the config file; a change that is valid is applied at once (providers
    /// connected or dropped, the periodic jobs' schedules) and planned for, and one that is
    /// refused is reported by a round.
    async fn reload(&mut self, now: Timestamp) -> Then {
        self.timers.set(
            Timer::Reload,
            Some(now.saturating_add(self.options.reload_every)),
        );
        match self.config.check(now) {
            Reread::Unchanged => Then::Wait,
            Reread::Refused => Then::Round,
            Reread::Applied => {
                self.connect(now).await;
                self.config_applied(now);
                Then::Round
            }
        }
    }
}
