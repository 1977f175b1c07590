//! One round: the clock read once, each provider's servers listed when due, one snapshot
//! of the store, the two plans, their actions carried out, the report, the periodic jobs
//! that are due, and the timers set for what comes next. What a round knows is a [`Round`]
//! value passed down, never kept on the daemon.

use std::collections::BTreeSet;
use std::time::Duration;

use nodepool_db::Planned;
use nodepool_image::ImagePlan;
use nodepool_model::{ImageId, NodeId, Snapshot, Subject, Timestamp};
use nodepool_node::{NodePlan, World};
use tracing::error;

use nodepool_executor::store;

use crate::daemon::Daemon;
use crate::timers::Timer;

/// How soon a daemon whose plan another daemon outdated plans again.
const REPLAN_AFTER: Duration = Duration::from_millis(200);

/// What one round knows, from its start to its end.
#[derive(Debug)]
pub(crate) struct Round {
    /// The round's one reading of the clock.
    pub(crate) now: Timestamp,
    /// The store, as of the round's start.
    pub(crate) snapshot: Snapshot,
    /// Nodes other live daemons work on.
    pub(crate) elsewhere_nodes: BTreeSet<NodeId>,
    /// Uploads other live daemons work on.
    pub(crate) elsewhere_images: BTreeSet<ImageId>,
    /// Daemons sharing the store, this one included.
    pub(crate) live: usize,
    /// What this round's launches were planned on.
    pub(crate) planned: Planned,
    /// Another daemon recorded a launch or build since the snapshot: plan again soon, on
    /// fresh data.
    pub(crate) outdated: bool,
}

impl Daemon {
    /// Runs one round, and sets the timers for the next.
    pub(crate) async fn round(&mut self) {
        let now = self.clock.now();
        let (every, busy_every) = (self.options.tick, self.options.busy_tick);
        self.clouds.refresh(now, every, busy_every).await;
        let config = self.config.current().clone();
        self.report.notes(&config, &self.clouds);
        let Some(mut round) = self.begin(now).await else {
            // Tried again in a tick; until then, nothing that is due may wake the loop.
            let again = now.saturating_add(every);
            self.timers.set(Timer::Round, Some(again));
            self.timers
                .set(Timer::Listing, self.clouds.next_listing(every, busy_every));
            for job in [Timer::Cleanup, Timer::Check] {
                if self.timers.is_due(job, now) {
                    self.timers.set(job, Some(again));
                }
            }
            return;
        };
        let snapshot = &round.snapshot;
        self.clouds.forget_retired(|provider| {
            snapshot.nodes.iter().any(|n| &n.provider == provider)
                || snapshot.images.iter().any(|i| &i.provider == provider)
        });
        let (images, nodes) = self.plan(&round);
        // Fenced (or due to be): nothing is recorded or started until the lease is renewed.
        if self.peers.fenced || self.clock.now() >= self.peers.fence_at() {
            self.report
                .end_round(now, &self.config, &self.clouds, &round.snapshot);
            self.set_timers(&round, &images, &nodes);
            return;
        }
        self.history.push(nodes.round.clone());
        self.removals
            .observe(images.gone.iter().chain(&nodes.gone).cloned(), now);
        self.report.explain(&images, &nodes);
        self.apply_images(&mut round, &images).await;
        self.apply_nodes(&mut round, &nodes).await;
        self.report
            .end_round(now, &self.config, &self.clouds, &round.snapshot);
        self.run_jobs(&round).await;
        metrics::histogram!("nodepool_round_seconds")
            .record(self.clock.now().saturating_since(now).as_secs_f64());
        self.set_timers(&round, &images, &nodes);
    }

    /// Reads the store for a round: the snapshot, the work other live daemons have
    /// claimed, and how many daemons live, in one transaction.
    async fn begin(&mut self, now: Timestamp) -> Option<Round> {
        let me = self.peers.id().to_owned();
        let (snapshot, elsewhere, live) =
            match store::call(&self.store, move |s| s.snapshot_and_work(&me, now)).await {
                Ok(read) => {
                    self.report.store_read(now, Ok(()));
                    read
                }
                Err(e) => {
                    error!("cannot read the store: {e}");
                    self.report.store_read(now, Err(e.to_string()));
                    return None;
                }
            };
        let mut round = Round {
            now,
            planned: Planned {
                newest_node: snapshot.nodes.iter().map(|n| n.id).max(),
                recorded_since: Vec::new(),
            },
            snapshot,
            elsewhere_nodes: BTreeSet::new(),
            elsewhere_images: BTreeSet::new(),
            live: live.max(1),
            outdated: false,
        };
        for subject in elsewhere {
            match subject {
                Subject::Node(id) => {
                    round.elsewhere_nodes.insert(id);
                }
                Subject::Image(id) => {
                    round.elsewhere_images.insert(id);
                }
                _ => {}
            }
        }
        Some(round)
    }

    /// Both policies' plans for the round.
    fn plan(&self, round: &Round) -> (ImagePlan, NodePlan) {
        let config = self.config.current();
        let images = nodepool_image::plan(
            &round.snapshot,
            config,
            round.now,
            &nodepool_image::World {
                clouds: self.clouds.flavors(),
                busy: self.work.images(),
                elsewhere: round.elsewhere_images.clone(),
                removals: self.removals.clone(),
            },
        );
        let world = World {
            clouds: self.clouds.views(),
            busy: self.work.nodes(),
            elsewhere: round.elsewhere_nodes.clone(),
            history: self.history.clone(),
            removals: self.removals.clone(),
        };
        let nodes = nodepool_node::plan(&round.snapshot, config, round.now, &world);
        (images, nodes)
    }

    /// The next round comes when a provider's listing is due (sooner while an executor
    /// waits on one), or something planned is, or at once if this plan was outdated. With
    /// other daemons on the store, a round comes every busy tick: nothing wakes this loop
    /// when another daemon leaves it a share of the launches.
    fn set_timers(&mut self, round: &Round, images: &ImagePlan, nodes: &NodePlan) {
        let now = round.now;
        let (every, busy_every) = (self.options.tick, self.options.busy_tick);
        let most = if round.live > 1 { busy_every } else { every };
        let mut next = now.saturating_add(most);
        if round.outdated {
            next = next.min(now.saturating_add(REPLAN_AFTER));
        }
        if let Some(since) = self.peers.held_back_since {
            next = next.min(since.saturating_add(nodepool_node::share::SHARE_GRACE));
        }
        for at in [images.next_wakeup, nodes.next_wakeup]
            .into_iter()
            .flatten()
        {
            next = next.min(at);
        }
        self.timers.set(Timer::Round, Some(next));
        self.timers
            .set(Timer::Listing, self.clouds.next_listing(every, busy_every));
    }
}
