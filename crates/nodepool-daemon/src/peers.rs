//! This daemon among the others that share its store: its lease (renewed while its loop
//! runs rounds), the lock that keeps a second daemon off a SQLite store, its claims on
//! work, and which daemon runs the periodic jobs.
//!
//! Fencing: the other daemons take this one's work over once its lease has run out. A
//! daemon that cannot renew its lease (its store is unreachable, say) stops all its work
//! [`FENCE_MARGIN`] before that, and starts none until a renewal succeeds: two daemons
//! never work on one node or image at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodepool_db::{DaemonRecord, Store, StoreError};
use nodepool_model::{InstallationId, Subject, Timestamp};
use nodepool_provider::Clock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use nodepool_executor::store;

use crate::DaemonError;
use crate::status::Status;

/// How long a daemon's claims outlive its last sign of life; the work of a daemon silent
/// for longer is taken over by the others.
const LEASE: Duration = Duration::from_secs(30);
/// A loop without a round for this long is stalled: its daemon stops renewing its lease.
const LOOP_STALL: Duration = Duration::from_secs(60);
/// How often a daemon renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long before its lease runs out a daemon that could not renew it stops its work.
pub(crate) const FENCE_MARGIN: Duration = Duration::from_secs(10);

/// This daemon, as the store's other daemons see it.
#[derive(Debug)]
pub(crate) struct Peers {
    me: DaemonRecord,
    /// Renews `me`'s lease while the daemon lives (a daemon dropped mid-run, as a killed
    /// one, stops renewing).
    heartbeat: AbortOnDrop,
    /// Held while the daemon runs on a SQLite store, which serves one daemon.
    _sqlite_lock: Option<std::fs::File>,
    /// Since when launches this daemon planned have been left to the other daemons.
    pub(crate) held_back_since: Option<Timestamp>,
    /// Until when the lease last renewed holds.
    lease: watch::Receiver<Timestamp>,
    /// The work was stopped because the lease could not be renewed; none starts until it
    /// is.
    pub(crate) fenced: bool,
    /// Why this daemon must stop, once its store says it can no longer run (its
    /// installation id changed).
    lost: watch::Receiver<Option<String>>,
}

impl Peers {
    /// Who this daemon is, before it registers: on a SQLite store (`sqlite`), the store's
    /// lock is taken first, so that a second daemon is refused before it touches anything.
    pub(crate) fn identify(
        sqlite: Option<&Path>,
        now: Timestamp,
    ) -> Result<(DaemonRecord, Option<std::fs::File>), DaemonError> {
        let lock = sqlite.map(lock_sqlite).transpose()?;
        let me = DaemonRecord::new(hostname(), std::process::id(), now)
            .map_err(|e| DaemonError::Store(e.to_string()))?;
        Ok((me, lock))
    }

    /// Registers `me` with the store and starts renewing its lease while the loop runs
    /// rounds (as `status` tells). Daemons that cannot still run end their leases now: on
    /// SQLite every other one (the lock proves it), elsewhere those of this host whose
    /// process is gone (a restart after a crash).
    pub(crate) async fn register(
        store: &Store,
        clock: &Arc<dyn Clock>,
        me: DaemonRecord,
        installation: &InstallationId,
        sqlite_lock: Option<std::fs::File>,
        status: watch::Receiver<Arc<Status>>,
    ) -> Result<Peers, DaemonError> {
        let now = clock.now();
        let single = sqlite_lock.is_some();
        let registered = {
            let (me, installation) = (me.clone(), installation.clone());
            store::call(store, move |s| {
                for other in s.daemons()? {
                    let gone = other.id != me.id
                        && (single
                            || (other.host == me.host
                                && other.pid != me.pid
                                && !Path::new(&format!("/proc/{}", other.pid)).exists()));
                    if gone && other.expires > now {
                        s.retire_daemon(&other.id, now)?;
                    }
                }
                s.renew_lease(&me, &installation, now, LEASE)
            })
            .await
        };
        registered.map_err(|e| DaemonError::Store(e.to_string()))?;
        let (held, lease) = watch::channel(now.saturating_add(LEASE));
        let (lose, lost) = watch::channel(None);
        let heartbeat = heartbeat(
            store.clone(),
            clock.clone(),
            (me.clone(), installation.clone()),
            status,
            (held, lose),
        );
        Ok(Peers {
            me,
            heartbeat,
            _sqlite_lock: sqlite_lock,
            held_back_since: None,
            lease,
            fenced: false,
            lost,
        })
    }

    /// Why this daemon must stop, if its store said so.
    pub(crate) fn lost(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Completes once the store says this daemon must stop.
    pub(crate) fn when_lost(&self) -> impl Future<Output = ()> + use<> {
        let mut lost = self.lost.clone();
        async move {
            if lost.wait_for(Option::is_some).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// This daemon's id in the store.
    pub(crate) fn id(&self) -> &str {
        &self.me.id
    }

    /// When this daemon's work must have stopped unless its lease is renewed before.
    pub(crate) fn fence_at(&self) -> Timestamp {
        self.lease.borrow().saturating_sub(FENCE_MARGIN)
    }

    /// Until when the lease last renewed holds.
    pub(crate) fn lease_until(&self) -> Timestamp {
        *self.lease.borrow()
    }

    /// Claims the work on `subject` for this daemon: false if another live daemon has it
    /// (or the store cannot say: then nobody should start on it now).
    pub(crate) async fn claim(&self, store: &Store, subject: Subject, now: Timestamp) -> bool {
        let me = self.me.id.clone();
        match store::call(store, move |s| s.claim_work(subject, &me, now)).await {
            Ok(claimed) => claimed,
            Err(e) => {
                warn!(%subject, "cannot claim the work: {e}");
                false
            }
        }
    }

    /// What gives the work on `subject` back once an executor is done with it.
    pub(crate) fn release(
        &self,
        store: &Store,
        subject: Subject,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (store, me) = (store.clone(), self.me.id.clone());
        async move {
            if let Err(e) = store::call(&store, move |s| s.release_work(subject, &me)).await {
                warn!(%subject, "cannot give the work back: {e}");
            }
        }
    }

    /// Which daemon runs the periodic jobs: of the daemons sharing the store, the live one
    /// that started first, so that N daemons do not list and probe every cloud N times.
    /// When it dies its lease lapses and the next takes over.
    pub(crate) async fn jobs_leader(&self, store: &Store, live: usize, now: Timestamp) -> Leader {
        if live <= 1 {
            return Leader::This;
        }
        match store::call(store, |s| s.daemons()).await {
            Ok(daemons) => match leader(&daemons, &self.me.id, now) {
                Some(other) => Leader::Other(other.clone()),
                None => Leader::This,
            },
            Err(_) => Leader::Unknown,
        }
    }

    /// Ends this daemon's lease: its work is the others' at once.
    pub(crate) async fn retire(self, store: &Store, now: Timestamp) {
        self.heartbeat.0.abort();
        let me = self.me.id.clone();
        if let Err(e) = store::call(store, move |s| s.retire_daemon(&me, now)).await {
            warn!("cannot end this daemon's lease: {e}; the others wait for it to run out");
        }
    }
}

/// Who runs the periodic jobs.
#[derive(Debug)]
pub(crate) enum Leader {
    /// This daemon.
    This,
    /// Another one.
    Other(DaemonRecord),
    /// The store cannot say: this daemon runs them (better twice than never).
    Unknown,
}

/// Of `daemons` (listed by start), the live one that leads the periodic jobs, if it is
/// not `me`.
fn leader<'d>(daemons: &'d [DaemonRecord], me: &str, now: Timestamp) -> Option<&'d DaemonRecord> {
    daemons
        .iter()
        .find(|d| d.expires > now)
        .filter(|first| first.id != me)
}

/// Renews `me`'s lease every few seconds while the loop runs rounds. A loop that stopped
/// running rounds lets its lease run out, so that the other daemons take over its work.
/// A store whose installation id is no longer `me`'s says so through `lose`, once.
fn heartbeat(
    store: Store,
    clock: Arc<dyn Clock>,
    (me, installation): (DaemonRecord, InstallationId),
    status: watch::Receiver<Arc<Status>>,
    (held, lose): (watch::Sender<Timestamp>, watch::Sender<Option<String>>),
) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            clock.sleep(RENEW_EVERY).await;
            let (me, installation, now) = (me.clone(), installation.clone(), clock.now());
            let last = {
                let status = status.borrow();
                status.last_round.unwrap_or(status.started)
            };
            if now.saturating_since(last) > LOOP_STALL {
                warn!(
                    "no round for {}s: not renewing this daemon's lease",
                    now.saturating_since(last).as_secs()
                );
                continue;
            }
            match store::call(&store, move |s| {
                s.renew_lease(&me, &installation, now, LEASE)
            })
            .await
            {
                Ok(()) => {
                    held.send_replace(now.saturating_add(LEASE));
                }
                Err(e @ StoreError::InstallationChanged { .. }) => {
                    error!("{e}");
                    lose.send_replace(Some(e.to_string()));
                    // The lease runs out and the fence holds until the loop stops.
                    return;
                }
                Err(e) => warn!("cannot renew this daemon's lease: {e}"),
            }
        }
    }))
}

/// This machine's name, for the store's list of daemons and the event log.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// SQLite serves one daemon: a second one on the same file is refused, by a lock the system
/// drops when its holder dies (so a crashed daemon never blocks its restart).
fn lock_sqlite(path: &Path) -> Result<std::fs::File, DaemonError> {
    use std::io::{Read, Seek, Write};
    let lock_path = {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    };
    let fail = |message: String| DaemonError::Store(message);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| fail(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(fail(format!(
                "another nodepoold (pid {}) runs on the SQLite store {}: SQLite serves one daemon; to run several, use PostgreSQL (dburi: postgres://USER@HOST/DATABASE)",
                holder.trim(),
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(fail(format!("cannot lock {}: {e}", lock_path.display())))
        }
    }
}

/// A task that ends with its owner.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(id: &str, expires: i64) -> DaemonRecord {
        let mut record = DaemonRecord::new("host", 1, Timestamp::from_unix_seconds(0)).unwrap();
        record.id = id.to_owned();
        record.expires = Timestamp::from_unix_seconds(expires);
        record
    }

    #[test]
    fn the_oldest_live_daemon_leads_the_periodic_jobs() {
        let now = Timestamp::from_unix_seconds(100);
        // Listed by start, as the store lists them: (daemons, me, the leader if not me).
        let cases = [
            (vec![daemon("a", 130), daemon("b", 130)], "a", None),
            (vec![daemon("a", 130), daemon("b", 130)], "b", Some("a")),
            // a's lease lapsed: b leads.
            (vec![daemon("a", 90), daemon("b", 130)], "b", None),
            (
                vec![daemon("a", 100), daemon("b", 130), daemon("c", 130)],
                "c",
                Some("b"),
            ),
        ];
        for (daemons, me, expected) in cases {
            let got = leader(&daemons, me, now).map(|d| d.id.as_str());
            assert_eq!(got, expected, "{me}");
        }
    }

    #[test]
    fn a_second_daemon_on_a_sqlite_store_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("nodepool.sqlite");
        let _held = lock_sqlite(&store).unwrap();
        let error = lock_sqlite(&store).unwrap_err().to_string();
        assert!(
            error.contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        assert!(error.contains("use PostgreSQL"), "{error}");
    }
}
