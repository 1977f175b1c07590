//! The nodepool store: what nodepool knows about its nodes, images and requests, on SQLite or
//! PostgreSQL, behind an API of domain types.
//!
//! Three promises make the store something a daemon can stand on:
//!
//! - **Intent before cloud call.** A node or image is recorded (`building`, no cloud id)
//!   before the cloud is asked to create it, and the cloud's id is attached in a second
//!   step. A crash between the two leaves an intent that [`Store::intents`] lists, which
//!   recovery resolves by the tags on the cloud's resources. Nothing is ever created that
//!   the store cannot find again.
//! - **Every change is explained.** Each state change stamps `state_time` and appends an
//!   [`Event`](nodepool_model::Event) with its reason in the same transaction; the log
//!   outlives its subject, so `nodepool show` can explain a node that is long gone.
//! - **Claims are exclusive.** [`Store::claim_ready_nodes`] can never hand one node to two
//!   requests, whatever the number of daemons (row locks with `SKIP LOCKED` on PostgreSQL,
//!   one writer at a time on SQLite).
//!
//! The store is synchronous (diesel); async callers run it on a blocking thread.
//! It never reads the clock: callers pass `now`.
//!
//! ```
//! use nodepool_config::DbUri;
//! use nodepool_db::{NewNode, Store};
//! use nodepool_model::{NodeState, Reason, ReasonCode, Timestamp};
//!
//! let dir = tempfile::tempdir()?;
//! let uri = DbUri::Sqlite(dir.path().join("nodepool.sqlite"));
//! let now = Timestamp::from_unix_seconds(1_400_000_000);
//! let store = Store::open_and_migrate(&uri, "example", now)?;
//!
//! // Record the intent, then attach what the cloud returned.
//! let new = NewNode::new("cloud1".parse()?, "small".parse()?);
//! let node = store.create_node(&new, now, &Reason::new(ReasonCode::Demand, "label small has 0 of 2 ready"))?;
//! assert_eq!(node.state, NodeState::Building);
//! assert_eq!(store.intents()?.nodes.len(), 1);
//! store.attach_node_server(node.id, &"4b1d-server".into(), now)?;
//! assert!(store.intents()?.nodes.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builds;
mod connection;
mod daemons;
mod error;
mod events;
mod failures;
mod images;
mod migrate;
mod nodes;
mod requests;
mod rows;
mod schema;
mod snapshot;
mod statement;

use diesel::prelude::*;
use nodepool_config::DbUri;
use nodepool_model::{InstallationId, Reason, Subject, Timestamp};

pub use connection::{Backend, MYSQL_SUPPORTED, check_mysql_version, mysql_not_built};
pub use daemons::{DaemonRecord, Planned};
pub use error::{Result, StoreError};
pub use images::{ImageFilter, NewImage};
pub use nodes::{Acting, Intents, NewNode, NodeFilter};

use connection::{AnyConnection, ConnectionPool, Mode};

/// Connections kept open per store by default.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// A handle on the store. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    pool: ConnectionPool,
    backend: Backend,
    /// Who writes: recorded in every event.
    actor: String,
    /// The database, without its password, for messages.
    uri: String,
    /// The database, for connections outside the pool.
    db: DbUri,
    /// On SQLite, writers take turns here rather than in SQLite's busy handler, which
    /// sleeps in steps of milliseconds: waiting on a lock wakes the next writer at once.
    write_turn: Option<std::sync::Arc<std::sync::Mutex<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("uri", &self.uri)
            .field("actor", &self.actor)
            .finish()
    }
}

impl Store {
    /// Opens the store at `uri` without touching its schema. `actor` names the process in
    /// the events it writes (a daemon's name, or `nodepool` for the admin command).
    ///
    /// Use [`Store::migrate`] (writers) or [`Store::check_schema`] (readers) next.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the database cannot be reached or created.
    pub fn open(uri: &DbUri, actor: impl Into<String>) -> Result<Store> {
        Self::open_with_pool_size(uri, actor, DEFAULT_POOL_SIZE)
    }

    /// As [`Store::open`], with `size` pooled connections.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn open_with_pool_size(uri: &DbUri, actor: impl Into<String>, size: u32) -> Result<Store> {
        let (pool, backend) = connection::open_pool(uri, size.max(1))?;
        let write_turn = (backend == Backend::Sqlite).then(Default::default);
        Ok(Store {
            pool,
            backend,
            actor: actor.into(),
            uri: uri.to_string(),
            db: uri.clone(),
            write_turn,
        })
    }

    /// The same store through `size` connections of its own: a part of the process (the
    /// HTTP API) that must never take the others' connections. On SQLite its writers still
    /// take turns with this store's, as one store's writers do.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn with_own_connections(&self, size: u32) -> Result<Store> {
        let (pool, backend) = connection::open_pool(&self.db, size.max(1))?;
        Ok(Store {
            pool,
            backend,
            actor: self.actor.clone(),
            uri: self.uri.clone(),
            db: self.db.clone(),
            write_turn: self.write_turn.clone(),
        })
    }

    /// Opens the store and brings its schema up to date.
    ///
    /// # Errors
    ///
    /// As [`Store::open`] and [`Store::migrate`].
    pub fn open_and_migrate(
        uri: &DbUri,
        actor: impl Into<String>,
        now: Timestamp,
    ) -> Result<Store> {
        let store = Self::open(uri, actor)?;
        store.migrate(now)?;
        Ok(store)
    }

    /// Applies the migrations the database lacks and makes the installation id on first use.
    /// Returns the versions applied now (empty when the schema was current).
    ///
    /// # Errors
    ///
    /// [`StoreError::SchemaTooNew`] if a newer nodepool has migrated the database.
    pub fn migrate(&self, now: Timestamp) -> Result<Vec<String>> {
        let mut conn = connection::establish(&self.db)?;
        // Under the migration lock: two daemons starting at once on a new store would
        // otherwise both find no installation row and both make one.
        migrate::run_pending(&mut conn, |conn| {
            connection::transaction(conn, Mode::Write, |conn| {
                use schema::installation::dsl as i;
                let exists = i::installation.count().get_result::<i64>(conn)? > 0;
                if !exists {
                    let id = random_id().map_err(|e| {
                        StoreError::Invalid(format!("cannot make an installation id: {e}"))
                    })?;
                    diesel::insert_into(i::installation)
                        .values((
                            i::singleton.eq(1),
                            i::installation_id.eq(id),
                            i::created.eq(now.unix_millis()),
                        ))
                        .execute(conn)?;
                }
                Ok(())
            })
        })
    }

    /// Gives the store a new installation id, and returns it: for a copy of another
    /// installation's store (a staging copy of production), which would otherwise take that
    /// installation's servers and images for its own. Afterwards this store never touches
    /// what carries the old id: its rows naming such resources are forgotten, the resources
    /// left alone.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] while a daemon's lease on the store is alive: a running
    /// daemon keeps the id it started with.
    pub fn new_installation_id(&self, now: Timestamp) -> Result<InstallationId> {
        use schema::daemons::dsl as d;
        use schema::installation::dsl as i;
        self.write(|conn| {
            let alive = d::daemons
                .filter(d::expires.gt(now.unix_millis()))
                .count()
                .get_result::<i64>(conn)?;
            if alive > 0 {
                return Err(StoreError::Invalid(format!(
                    "{alive} nodepoold running on this store (see daemon-list): stop them first"
                )));
            }
            let id = random_id()
                .map_err(|e| StoreError::Invalid(format!("cannot make an installation id: {e}")))?;
            diesel::update(i::installation)
                .set(i::installation_id.eq(&id))
                .execute(conn)?;
            Ok(InstallationId::new(id))
        })
    }

    /// Checks that the schema is set up and not newer than this binary, for processes that
    /// only read.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotInitialised`] or [`StoreError::SchemaTooNew`].
    pub fn check_schema(&self) -> Result<()> {
        let mut conn = connection::establish(&self.db)?;
        let applied = migrate::check_not_newer(&mut conn)?;
        if applied.len() < migrate::known_versions().len() {
            return Err(StoreError::NotInitialised(self.uri.clone()));
        }
        Ok(())
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Who this store's events are written by.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The installation's id, made at random when the store was first migrated. Every cloud
    /// resource nodepool creates is tagged with it.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotInitialised`] before the first migration.
    pub fn installation_id(&self) -> Result<InstallationId> {
        let mut conn = connection::establish(&self.db)?;
        use schema::installation::dsl as i;
        let id = i::installation
            .select(i::installation_id)
            .first::<String>(&mut conn)
            .optional()
            .map_err(|_| StoreError::NotInitialised(self.uri.clone()))?;
        id.map(InstallationId::new)
            .ok_or_else(|| StoreError::NotInitialised(self.uri.clone()))
    }

    fn conn(
        &self,
    ) -> Result<diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<AnyConnection>>>
    {
        self.pool.get().map_err(|e| StoreError::Unavailable {
            uri: self.uri.clone(),
            message: connection::scrubbed(&self.db, &e.to_string()),
        })
    }

    /// Runs `f` in a write transaction.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut AnyConnection) -> Result<T>) -> Result<T> {
        // A writer that panicked left no transaction open (it was rolled back when its
        // connection was dropped), so a poisoned turn is still a valid turn.
        let _turn = self
            .write_turn
            .as_ref()
            .map(|turn| turn.lock().unwrap_or_else(|p| p.into_inner()));
        let mut conn = self.conn()?;
        connection::transaction(&mut conn, Mode::Write, f)
    }

    /// Runs `f` in a read-only transaction that sees one point in time.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut AnyConnection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        connection::transaction(&mut conn, Mode::Read, f)
    }
}

/// 128 random bits as 32 hex digits.
fn random_id() -> std::result::Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Takes `n` consecutive ids of `kind` and returns the first.
pub(crate) fn next_ids(conn: &mut AnyConnection, kind: &str, n: usize) -> Result<i64> {
    use schema::counters::dsl as c;
    let n = i64::try_from(n).map_err(|_| StoreError::Invalid("too many records at once".into()))?;
    let last: Option<i64> = connection::update_returning!(
        conn,
        diesel::update(c::counters.find(kind)).set(c::value.eq(c::value + n)),
        c::value,
        c::counters.find(kind).select(c::value)
    )?;
    let last = last.ok_or_else(|| StoreError::Invalid(format!("no {kind} counter")))?;
    Ok(last - n + 1)
}

/// Appends an event to `subject`'s history. The caller has already written (and so locked)
/// the subject's row in this transaction, which keeps the sequence numbers of one subject
/// from racing.
pub(crate) fn append_event(
    conn: &mut AnyConnection,
    subject: Subject,
    now: Timestamp,
    what: &str,
    reason: &Reason,
    actor: &str,
) -> Result<()> {
    use statement::{Statement, Value};
    // One statement: the next sequence number is computed where the row is inserted.
    const SQL: &str = "INSERT INTO events (subject_kind, subject_id, seq, time, what, reason_code, reason, actor) \
         SELECT $?, $?, COALESCE(max(seq), 0) + 1, $?, $?, $?, $?, $? FROM events \
         WHERE subject_kind = $? AND subject_id = $?";
    let kind = subject.kind();
    let id = rows::to_i64(subject.id());
    Statement::new(
        SQL,
        vec![
            Value::Text(kind),
            Value::Int(id),
            Value::Int(now.unix_millis()),
            Value::Text(what),
            Value::Text(reason.code.as_str()),
            Value::Text(&reason.text),
            Value::Text(actor),
            Value::Text(kind),
            Value::Int(id),
        ],
    )
    .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests;
