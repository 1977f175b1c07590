//! Connections: one connection type for every backend, pooled, set up for nodepool's use.
//!
//! SQLite gets WAL (readers never wait for the writer), a busy timeout (writers wait for
//! each other instead of failing) and foreign keys. Write transactions on SQLite start
//! with `BEGIN IMMEDIATE`, so two writers never both read and then fail to upgrade their
//! lock; on PostgreSQL, rows are locked where it matters.

use std::path::Path;
use std::time::Duration;

use diesel::Connection;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use nodepool_config::DbUri;

use crate::error::{Result, StoreError};

/// A connection to any supported database.
#[derive(diesel::MultiConnection)]
pub(crate) enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An SQLite file: one daemon.
    Sqlite,
    /// PostgreSQL: one or more daemons.
    Postgres,
}

pub(crate) type ConnectionPool = Pool<ConnectionManager<AnyConnection>>;

/// Readies every pooled SQLite connection.
#[derive(Debug)]
struct Setup;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for Setup {
    fn on_acquire(&self, conn: &mut AnyConnection) -> std::result::Result<(), diesel::r2d2::Error> {
        match conn {
            AnyConnection::Sqlite(conn) => {
                configure_sqlite(conn).map_err(diesel::r2d2::Error::QueryError)
            }
            AnyConnection::Postgresql(_) => Ok(()),
        }
    }
}

fn configure_sqlite(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    conn.batch_execute(
        "PRAGMA busy_timeout = 30000;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;",
    )
}

/// What diesel connects to for `uri`; makes an SQLite file's folder on the way.
fn target(uri: &DbUri) -> Result<(String, Backend)> {
    match uri {
        DbUri::Sqlite(path) => {
            create_parent(path, uri)?;
            Ok((path.to_string_lossy().into_owned(), Backend::Sqlite))
        }
        DbUri::Postgres(url) => Ok((url.expose().to_owned(), Backend::Postgres)),
        DbUri::Mysql(_) => Err(StoreError::Unavailable {
            uri: uri.to_string(),
            message:
                "MySQL and MariaDB are not supported by this version; use sqlite:// or postgres://"
                    .into(),
        }),
        other => Err(StoreError::Unavailable {
            uri: other.to_string(),
            message: "unsupported database".into(),
        }),
    }
}

/// Opens a pool of up to `size` connections to the database of `uri`, made on demand.
pub(crate) fn open_pool(uri: &DbUri, size: u32) -> Result<(ConnectionPool, Backend)> {
    let (url, backend) = target(uri)?;
    let pool = Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(30))
        .connection_customizer(Box::new(Setup))
        .build_unchecked(ConnectionManager::<AnyConnection>::new(url));
    Ok((pool, backend))
}

/// One connection outside the pool, for work on the schema itself.
pub(crate) fn establish(uri: &DbUri) -> Result<AnyConnection> {
    let (url, backend) = target(uri)?;
    let unavailable = |message: String| StoreError::Unavailable {
        uri: uri.to_string(),
        message,
    };
    // The backend's own connection, so that its error says what went wrong (the
    // multi-connection tries each backend and keeps none of their errors).
    let mut conn = match backend {
        Backend::Postgres => PgConnection::establish(&url).map(AnyConnection::Postgresql),
        Backend::Sqlite => SqliteConnection::establish(&url).map(AnyConnection::Sqlite),
    }
    .map_err(|e| unavailable(one_line(&e.to_string())))?;
    if let AnyConnection::Sqlite(sqlite) = &mut conn {
        configure_sqlite(sqlite).map_err(|e| unavailable(e.to_string()))?;
    }
    Ok(conn)
}

/// A driver's message on one line (libpq spreads its advice over several).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn create_parent(path: &Path, uri: &DbUri) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && path != Path::new(":memory:") => {
            std::fs::create_dir_all(parent).map_err(|error| StoreError::Unavailable {
                uri: uri.to_string(),
                message: format!("cannot create {}: {error}", parent.display()),
            })
        }
        _ => Ok(()),
    }
}

/// How a transaction begins.
#[derive(Clone, Copy)]
pub(crate) enum Mode {
    /// Reads and writes. SQLite takes the write lock at once.
    Write,
    /// Reads only, all from one consistent point in time.
    Read,
}

/// Runs `f` in a transaction: committed if it returns `Ok`, rolled back otherwise.
pub(crate) fn transaction<T>(
    conn: &mut AnyConnection,
    mode: Mode,
    f: impl FnOnce(&mut AnyConnection) -> Result<T>,
) -> Result<T> {
    let begin = match (&*conn, mode) {
        (AnyConnection::Sqlite(_), Mode::Write) => "BEGIN IMMEDIATE",
        (AnyConnection::Sqlite(_), Mode::Read) => "BEGIN DEFERRED",
        (AnyConnection::Postgresql(_), Mode::Write) => "BEGIN",
        (AnyConnection::Postgresql(_), Mode::Read) => {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        }
    };
    begin_sql(conn, begin)?;
    match f(conn) {
        Ok(value) => {
            commit(conn)?;
            Ok(value)
        }
        Err(error) => {
            // The error that made us roll back is the one worth reporting.
            let _ = rollback(conn);
            Err(error)
        }
    }
}

fn begin_sql(conn: &mut AnyConnection, sql: &str) -> Result<()> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, sql)?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction_sql(c, sql)?,
    }
    Ok(())
}

fn commit(conn: &mut AnyConnection) -> Result<()> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::commit_transaction(c)?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::commit_transaction(c)?,
    }
    Ok(())
}

fn rollback(conn: &mut AnyConnection) -> Result<()> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::rollback_transaction(c)?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::rollback_transaction(c)?,
    }
    Ok(())
}
