//! Several daemons on one store: leases, claimed work, and launches and builds that are
//! checked against what others did since the plan was made.
//!
//! Each daemon registers with a lease it renews while it runs; one whose lease has expired
//! is taken for dead. An executor claims the record it works on (`work`), so that no other
//! daemon works on it at the same time, and gives it back when done; the claims of a dead
//! daemon are free for the others, whose policies then see its building nodes as orphans
//! and delete them with their servers, found by their tags.
//!
//! Launches and builds are planned on a snapshot; [`Store::create_node_checked`] and
//! [`Store::create_image_checked`] record them only if no other daemon recorded a node of
//! the same provider or label (or a build of the same image) since. Those records are made
//! one at a time (an advisory lock on PostgreSQL, the write lock on SQLite), so two daemons
//! together never launch more than one plan asked for: `max-servers`, quotas and `min-ready`
//! hold however many daemons run.

use std::time::Duration;

use diesel::prelude::*;
use nodepool_model::{Image, ImageState, InstallationId, Node, NodeId, Reason, Subject, Timestamp};

use crate::Store;
use crate::connection::AnyConnection;
use crate::error::{Result, StoreError};
use crate::images::{NewImage, insert_image};
use crate::nodes::{NewNode, insert_nodes};
use crate::rows::{to_i64, to_u64};
use crate::schema::{daemons::dsl as d, images::dsl as i, nodes::dsl as n, work::dsl as w};

/// The advisory lock every checked launch and build holds on PostgreSQL ("nodepool").
const RECORDING_LOCK: i64 = 0x6e6f_6465_706f_6f6c;

/// A daemon sharing the store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DaemonRecord {
    /// Its id: random, new at each start.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it started.
    pub started: Timestamp,
    /// When its lease ends unless renewed; after that it is taken for dead.
    pub expires: Timestamp,
}

/// What a checked launch was planned on: the snapshot's newest node, and the nodes this
/// daemon recorded since (which the plan already counted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Planned {
    /// The highest node id in the snapshot the plan was made on.
    pub newest_node: Option<NodeId>,
    /// Nodes this daemon recorded since that snapshot.
    pub recorded_since: Vec<NodeId>,
}

fn lock_recording(conn: &mut AnyConnection) -> Result<()> {
    match conn {
        AnyConnection::Postgresql(pg) => {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({RECORDING_LOCK})"))
                .execute(pg)?;
        }
        // MySQL's named locks outlive the transaction; the node counter's row lock does not.
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(mysql) => {
            use crate::schema::counters::dsl as c;
            c::counters
                .find("node")
                .select(c::value)
                .for_update()
                .first::<i64>(mysql)?;
        }
        // SQLite: the write transaction (BEGIN IMMEDIATE) already keeps every other writer out.
        AnyConnection::Sqlite(_) => {}
    }
    Ok(())
}

/// Claims `subject` for `daemon`; the caller holds the recording lock.
fn claim_in(
    conn: &mut AnyConnection,
    subject: Subject,
    daemon: &str,
    now: Timestamp,
) -> Result<bool> {
    let (kind, id) = (subject.kind(), to_i64(subject.id()));
    let holder: Option<String> = w::work
        .find((kind, id))
        .select(w::daemon)
        .first(conn)
        .optional()?;
    let Some(holder) = holder else {
        // Free. Claims are made under the recording lock, so nobody inserts in between.
        diesel::insert_into(w::work)
            .values((
                w::subject_kind.eq(kind),
                w::subject_id.eq(id),
                w::daemon.eq(daemon),
                w::since.eq(now.unix_millis()),
            ))
            .execute(conn)?;
        return Ok(true);
    };
    if holder == daemon {
        return Ok(true);
    }
    let alive: i64 = d::daemons
        .filter(d::id.eq(&holder).and(d::expires.gt(now.unix_millis())))
        .count()
        .get_result(conn)?;
    if alive > 0 {
        return Ok(false);
    }
    // Its daemon is dead: the work is ours if nobody took it first.
    let taken = diesel::update(
        w::work.filter(
            w::subject_kind
                .eq(kind)
                .and(w::subject_id.eq(id))
                .and(w::daemon.eq(&holder)),
        ),
    )
    .set((w::daemon.eq(daemon), w::since.eq(now.unix_millis())))
    .execute(conn)?;
    Ok(taken == 1)
}

/// How many daemons hold a lease now.
pub(crate) fn live_daemons(conn: &mut AnyConnection, now: Timestamp) -> Result<usize> {
    let live: i64 = d::daemons
        .filter(d::expires.gt(now.unix_millis()))
        .count()
        .get_result(conn)?;
    Ok(usize::try_from(live).unwrap_or(0))
}

/// What live daemons other than `daemon` are working on.
pub(crate) fn work_elsewhere(
    conn: &mut AnyConnection,
    daemon: &str,
    now: Timestamp,
) -> Result<Vec<Subject>> {
    let rows: Vec<(String, i64)> = w::work
        .filter(w::daemon.ne(daemon))
        .filter(
            w::daemon.eq_any(
                d::daemons
                    .filter(d::expires.gt(now.unix_millis()))
                    .select(d::id),
            ),
        )
        .select((w::subject_kind, w::subject_id))
        .order((w::subject_kind, w::subject_id))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, id)| {
            let id = to_u64(id);
            match kind.as_str() {
                "node" => Some(Subject::Node(NodeId::new(id))),
                "image" => Some(Subject::Image(nodepool_model::ImageId::new(id))),
                _ => None,
            }
        })
        .collect())
}

impl DaemonRecord {
    /// A daemon starting now on `host` as process `pid`, with a new random id.
    ///
    /// # Errors
    ///
    /// The system's random source failed.
    pub fn new(host: impl Into<String>, pid: u32, started: Timestamp) -> Result<DaemonRecord> {
        let id = crate::random_id()
            .map_err(|e| StoreError::Invalid(format!("no random daemon id: {e}")))?;
        Ok(DaemonRecord {
            id,
            host: host.into(),
            pid,
            started,
            expires: started,
        })
    }
}

impl Store {
    /// Registers a daemon (or renews its lease): it holds its claims until `now + lease`.
    /// `installation` is the installation id the daemon started with: once the store has
    /// another (`nodepool installation-id --new` while the daemon's lease had lapsed), the
    /// lease is not renewed.
    ///
    /// # Errors
    ///
    /// [`StoreError::InstallationChanged`] as above; database errors.
    pub fn renew_lease(
        &self,
        daemon: &DaemonRecord,
        installation: &InstallationId,
        now: Timestamp,
        lease: Duration,
    ) -> Result<()> {
        use crate::schema::installation::dsl as inst;
        let expires = now.saturating_add(lease).unix_millis();
        self.write(|conn| {
            let current = inst::installation
                .select(inst::installation_id)
                .first::<String>(conn)?;
            if current != installation.as_str() {
                return Err(StoreError::InstallationChanged {
                    started_as: installation.clone(),
                    now: InstallationId::new(current),
                });
            }
            let renewed = diesel::update(d::daemons.find(&daemon.id))
                .set(d::expires.eq(expires))
                .execute(conn)?;
            if renewed == 0 {
                diesel::insert_into(d::daemons)
                    .values((
                        d::id.eq(&daemon.id),
                        d::host.eq(&daemon.host),
                        d::pid.eq(i64::from(daemon.pid)),
                        d::started.eq(daemon.started.unix_millis()),
                        d::expires.eq(expires),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
    }

    /// A daemon stops: its lease and claims end now. Daemons long dead are forgotten too.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn retire_daemon(&self, daemon: &str, now: Timestamp) -> Result<()> {
        let forgotten = now
            .saturating_sub(Duration::from_secs(24 * 3600))
            .unix_millis();
        self.write(|conn| {
            diesel::delete(w::work.filter(w::daemon.eq(daemon))).execute(conn)?;
            diesel::delete(d::daemons.filter(d::id.eq(daemon).or(d::expires.lt(forgotten))))
                .execute(conn)?;
            Ok(())
        })
    }

    /// Every registered daemon, live or not, by start.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn daemons(&self) -> Result<Vec<DaemonRecord>> {
        let rows: Vec<(String, String, i64, i64, i64)> = self.read(|conn| {
            Ok(d::daemons
                .select((d::id, d::host, d::pid, d::started, d::expires))
                .order((d::started, d::id))
                .load(conn)?)
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, host, pid, started, expires)| DaemonRecord {
                id,
                host,
                pid: u32::try_from(pid).unwrap_or(0),
                started: Timestamp::from_unix_millis(started),
                expires: Timestamp::from_unix_millis(expires),
            })
            .collect())
    }

    /// How many launches, builds and deletions each daemon has claimed, by daemon id.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn work_by_daemon(&self) -> Result<std::collections::BTreeMap<String, usize>> {
        let rows: Vec<(String, i64)> = self.read(|conn| {
            Ok(w::work
                .group_by(w::daemon)
                .select((w::daemon, diesel::dsl::count_star()))
                .load(conn)?)
        })?;
        Ok(rows
            .into_iter()
            .map(|(daemon, n)| (daemon, usize::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Claims the work on `subject` for `daemon`: true if it is now ours (it was free,
    /// already ours, or its daemon is dead), false if a live daemon works on it.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn claim_work(&self, subject: Subject, daemon: &str, now: Timestamp) -> Result<bool> {
        self.write(|conn| {
            lock_recording(conn)?;
            claim_in(conn, subject, daemon, now)
        })
    }

    /// Gives back the work on `subject`, if `daemon` holds it.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn release_work(&self, subject: Subject, daemon: &str) -> Result<()> {
        self.write(|conn| {
            diesel::delete(
                w::work.filter(
                    w::subject_kind
                        .eq(subject.kind())
                        .and(w::subject_id.eq(to_i64(subject.id())))
                        .and(w::daemon.eq(daemon)),
                ),
            )
            .execute(conn)?;
            Ok(())
        })
    }

    /// What other live daemons are working on.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn work_elsewhere(&self, daemon: &str, now: Timestamp) -> Result<Vec<Subject>> {
        self.read(|conn| work_elsewhere(conn, daemon, now))
    }

    /// Records a node to launch, claimed by `daemon`, unless another writer recorded a node
    /// of the same provider or label since the plan's snapshot: then `None`, and the next
    /// plan, made on fresh data, decides again.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn create_node_checked(
        &self,
        new: &NewNode,
        planned: &Planned,
        daemon: &str,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<Option<Node>> {
        let newest = planned.newest_node.map_or(0, |id| to_i64(id.get()));
        let mine: Vec<i64> = planned
            .recorded_since
            .iter()
            .map(|id| to_i64(id.get()))
            .collect();
        self.write(|conn| {
            lock_recording(conn)?;
            let others: i64 = n::nodes
                .filter(n::id.gt(newest))
                .filter(n::id.ne_all(&mine))
                .filter(
                    n::provider
                        .eq(new.provider.as_str())
                        .or(n::label.eq(new.label.as_str())),
                )
                .count()
                .get_result(conn)?;
            if others > 0 {
                return Ok(None);
            }
            let node =
                insert_nodes(conn, std::slice::from_ref(new), now, reason, &self.actor)?.remove(0);
            if !claim_in(conn, Subject::Node(node.id), daemon, now)? {
                return Err(StoreError::Invalid(format!(
                    "node {} was claimed before it was recorded",
                    node.id
                )));
            }
            Ok(Some(node))
        })
    }

    /// Records an image build, claimed by `daemon`, unless an upload of the same image on
    /// the same provider is already building: then `None`.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn create_image_checked(
        &self,
        new: &NewImage,
        daemon: &str,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<Option<Image>> {
        self.write(|conn| {
            lock_recording(conn)?;
            let building: i64 = i::images
                .filter(i::provider.eq(new.provider.as_str()))
                .filter(i::name.eq(new.name.as_str()))
                .filter(i::state.eq(ImageState::Building.as_str()))
                .count()
                .get_result(conn)?;
            if building > 0 {
                return Ok(None);
            }
            let image = insert_image(conn, new, now, reason, &self.actor)?;
            if !claim_in(conn, Subject::Image(image.id), daemon, now)? {
                return Err(StoreError::Invalid(format!(
                    "image {} was claimed before it was recorded",
                    image.id
                )));
            }
            Ok(Some(image))
        })
    }
}
