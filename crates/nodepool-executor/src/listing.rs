//! A provider's server listings: when the next one is due and what it asks for
//! (`Cadence`), the servers one listing shows ([`Servers`]), and the feed executors watch
//! while they wait on a server ([`ServerFeed`]).
//!
//! A provider is listed in full every tick. While an executor waits on one of its servers,
//! it is listed every busy tick, and then only the servers changed since the newest change
//! seen (Nova's `changes-since`, which also shows servers deleted since), merged into the
//! last listing. A round that comes early does not put the next listing off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodepool_model::{ExternalId, Timestamp};
use nodepool_provider::{Server, ServerStatus};
use tokio::sync::{Notify, watch};

/// How far before the newest change seen a listing of changes starts: a change the cloud
/// stamped a little before another it had already shown (two API workers) is not missed.
const CHANGES_OVERLAP: Duration = Duration::from_secs(5);

/// A listing to ask a provider for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Every server.
    All,
    /// The servers changed since then, by the cloud's clock.
    Changes(Timestamp),
}

/// When a provider was listed, and so when it is next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cadence {
    /// When its servers were last listed, in full or only the changes (whether or not the
    /// cloud answered).
    listed_at: Option<Timestamp>,
    /// When all its servers were last listed.
    listed_all_at: Option<Timestamp>,
    /// The newest change a listing showed, by the cloud's clock: listings of changes start
    /// there.
    newest_change: Option<Timestamp>,
}

impl Cadence {
    /// When the next listing is due: `every` after the last full one, and while an executor
    /// waits on the provider (`watched`), `busy_every` after the last of any kind; `None`
    /// before the first.
    pub(crate) fn due(
        &self,
        watched: bool,
        every: Duration,
        busy_every: Duration,
    ) -> Option<Timestamp> {
        let all = self.listed_all_at?.saturating_add(every);
        if watched {
            Some(all.min(self.listed_at?.saturating_add(busy_every)))
        } else {
            Some(all)
        }
    }

    /// What to list at `now`: everything when a full listing is due (or no change was ever
    /// seen to start from), else the changes; `None` when no listing is due.
    pub(crate) fn ask(
        &self,
        watched: bool,
        now: Timestamp,
        every: Duration,
        busy_every: Duration,
    ) -> Option<Ask> {
        let all_due = self
            .listed_all_at
            .is_none_or(|at| now.saturating_since(at) >= every);
        if all_due {
            return Some(Ask::All);
        }
        let due = watched
            && self
                .listed_at
                .is_none_or(|at| now.saturating_since(at) >= busy_every);
        match self.newest_change {
            Some(newest) if due => Some(Ask::Changes(newest.saturating_sub(CHANGES_OVERLAP))),
            None if due => Some(Ask::All),
            _ => None,
        }
    }

    /// Notes that `ask` was asked at `now`.
    pub(crate) fn asked(&mut self, ask: Ask, now: Timestamp) {
        self.listed_at = Some(now);
        if ask == Ask::All {
            self.listed_all_at = Some(now);
        }
    }

    /// Notes the newest change a listing showed.
    pub(crate) fn seen(&mut self, newest: Option<Timestamp>) {
        self.newest_change = self.newest_change.max(newest);
    }
}

/// A provider's listings as they are made. An executor watches them only while it waits on
/// a server (to become ACTIVE, or to be gone): the loop lists a provider often only while
/// someone watches, and is woken when someone starts to.
#[derive(Clone, Debug)]
pub struct ServerFeed {
    latest: Arc<watch::Sender<Arc<Servers>>>,
    wanted: Arc<Notify>,
}

impl ServerFeed {
    pub(crate) fn new(wanted: Arc<Notify>) -> ServerFeed {
        ServerFeed {
            latest: Arc::new(watch::Sender::new(Arc::new(Servers::default()))),
            wanted,
        }
    }

    /// Starts watching: the next listings are made at the busy pace.
    pub fn watch(&self) -> watch::Receiver<Arc<Servers>> {
        let watching = self.latest.subscribe();
        self.wanted.notify_one();
        watching
    }

    /// Whether an executor is waiting on a listing.
    pub(crate) fn watched(&self) -> bool {
        self.latest.receiver_count() > 0
    }

    /// The newest listing's servers.
    pub(crate) fn latest(&self) -> Arc<Servers> {
        self.latest.borrow().clone()
    }

    /// Publishes a new listing to the executors watching.
    pub(crate) fn publish(&self, servers: Servers) {
        self.latest.send_replace(Arc::new(servers));
    }
}

/// One listing's servers with their status and addresses: executors wait on these instead of
/// asking the cloud about each server.
#[derive(Debug, Default)]
pub struct Servers {
    /// When the listing was asked for.
    pub at: Timestamp,
    /// Every server of the provider, as of then.
    pub by_id: BTreeMap<ExternalId, Server>,
}

impl Servers {
    /// The servers after `changes` (a listing of changes, asked for `at`): changed and new
    /// servers replace what was seen, deleted ones go.
    pub(crate) fn changed(&self, at: Timestamp, changes: Vec<Server>) -> Servers {
        let mut by_id = self.by_id.clone();
        for server in changes {
            if server.status == ServerStatus::Deleted {
                by_id.remove(&server.id);
            } else {
                by_id.insert(server.id.clone(), server);
            }
        }
        Servers { at, by_id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, status: ServerStatus) -> Server {
        Server::new(ExternalId::new(id), id, status)
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(s)
    }

    #[test]
    fn changes_replace_add_and_remove_servers() {
        let before = Servers {
            at: t(10),
            by_id: [
                server("a", ServerStatus::Building),
                server("b", ServerStatus::Active),
                server("c", ServerStatus::Active),
            ]
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect(),
        };
        let after = before.changed(
            t(11),
            vec![
                server("a", ServerStatus::Active),
                server("c", ServerStatus::Deleted),
                server("d", ServerStatus::Building),
                // Deleted before it was ever seen: nothing to remove.
                server("e", ServerStatus::Deleted),
            ],
        );
        let statuses: Vec<(&str, &ServerStatus)> = after
            .by_id
            .values()
            .map(|s| (s.id.as_str(), &s.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("a", &ServerStatus::Active),
                ("b", &ServerStatus::Active),
                ("d", &ServerStatus::Building),
            ]
        );
        assert_eq!(after.at, t(11));
    }

    #[test]
    fn full_listings_every_tick_and_changes_every_busy_tick_while_watched() {
        let (every, busy) = (Duration::from_secs(5), Duration::from_secs(1));
        let mut cadence = Cadence::default();
        // Never listed: everything, now.
        assert_eq!(cadence.due(false, every, busy), None);
        assert_eq!(cadence.ask(false, t(0), every, busy), Some(Ask::All));
        cadence.asked(Ask::All, t(0));
        assert_eq!(cadence.due(false, every, busy), Some(t(5)));
        assert_eq!(cadence.due(true, every, busy), Some(t(1)));
        // Unwatched, nothing until the tick; watched, the busy tick, all while no change
        // was ever seen to start from.
        assert_eq!(cadence.ask(false, t(2), every, busy), None);
        assert_eq!(cadence.ask(true, t(2), every, busy), Some(Ask::All));
        cadence.seen(Some(t(100)));
        cadence.seen(None);
        // Changes since the newest one seen, less the overlap.
        assert_eq!(
            cadence.ask(true, t(2), every, busy),
            Some(Ask::Changes(t(95)))
        );
        cadence.asked(Ask::Changes(t(95)), t(2));
        assert_eq!(cadence.ask(true, t(2), every, busy), None);
        assert_eq!(cadence.due(true, every, busy), Some(t(3)));
        // The full listing stays due on its own tick.
        assert_eq!(cadence.ask(true, t(5), every, busy), Some(Ask::All));
    }
}
