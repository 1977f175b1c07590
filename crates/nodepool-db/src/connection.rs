//! Connections: one connection type for every backend, pooled, set up for nodepool's use.
//!
//! SQLite gets WAL (readers never wait for the writer), a busy timeout (writers wait for
//! each other instead of failing) and foreign keys. Write transactions on SQLite start
//! with `BEGIN IMMEDIATE`, so two writers never both read and then fail to upgrade their
//! lock; on PostgreSQL and MySQL, rows are locked where it matters.
//!
//! MySQL and MariaDB (behind the `mysql` feature) run write transactions at READ COMMITTED,
//! as PostgreSQL does by default, so that a statement after a lock sees what the lock
//! holder's predecessors committed; read transactions are REPEATABLE READ on both.

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
#[cfg(not(feature = "mysql"))]
#[derive(diesel::MultiConnection)]
pub(crate) enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// A connection to any supported database.
#[cfg(feature = "mysql")]
#[derive(diesel::MultiConnection)]
pub(crate) enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
    Mysql(diesel::mysql::MysqlConnection),
}

/// Whether this build can open MySQL and MariaDB stores (the `mysql` feature).
pub const MYSQL_SUPPORTED: bool = cfg!(feature = "mysql");

/// The oldest MariaDB with `SKIP LOCKED`, which claims need.
const MARIADB_MIN: (u32, u32) = (10, 6);
/// The oldest MySQL with `SKIP LOCKED`.
const MYSQL_MIN: (u32, u32) = (8, 0);

/// `UPDATE … RETURNING` for one row: `$update` with `.returning($returning)` where the
/// backend has it; on MySQL, which lacks it, `$update` and then `$reread` (the update holds
/// the row's lock until the transaction ends, so nothing changes it in between). `None`
/// when no row matched.
macro_rules! update_returning {
    ($conn:expr, $update:expr, $returning:expr, $reread:expr) => {{
        use diesel::{OptionalExtension as _, RunQueryDsl as _};
        match $conn {
            $crate::connection::AnyConnection::Postgresql(c) => {
                $update.returning($returning).get_result(c).optional()
            }
            $crate::connection::AnyConnection::Sqlite(c) => {
                $update.returning($returning).get_result(c).optional()
            }
            #[cfg(feature = "mysql")]
            $crate::connection::AnyConnection::Mysql(c) => match $update.execute(c) {
                Ok(0) => Ok(None),
                Ok(_) => $reread.first(c).optional(),
                Err(error) => Err(error),
            },
        }
    }};
}
pub(crate) use update_returning;

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An SQLite file: one daemon.
    Sqlite,
    /// PostgreSQL: one or more daemons.
    Postgres,
    /// MySQL or MariaDB: one or more daemons.
    Mysql,
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
            #[cfg(feature = "mysql")]
            AnyConnection::Mysql(conn) => {
                configure_mysql(conn).map_err(diesel::r2d2::Error::QueryError)
            }
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

#[cfg(feature = "mysql")]
fn configure_mysql(conn: &mut diesel::mysql::MysqlConnection) -> diesel::QueryResult<()> {
    // Wait for a row lock no longer than SQLite waits for its write lock; a timeout is an
    // error the caller may retry.
    conn.batch_execute(
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;
         SET SESSION innodb_lock_wait_timeout = 30;",
    )
}

/// The answer to a `mysql://` dburi from a build without the `mysql` feature.
pub fn mysql_not_built(uri: &DbUri) -> StoreError {
    StoreError::Unavailable {
        uri: uri.to_string(),
        message: "built without MySQL support: rebuild with `--features mysql`, or use sqlite:// or postgres://".into(),
    }
}

/// Checks that a MySQL or MariaDB server is new enough for nodepool (`SKIP LOCKED`).
///
/// # Errors
///
/// A message naming the version found and the oldest one that works.
pub fn check_mysql_version(version: &str) -> std::result::Result<(), String> {
    let mariadb = version.to_ascii_lowercase().contains("mariadb");
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let (name, min) = if mariadb {
        ("MariaDB", MARIADB_MIN)
    } else {
        ("MySQL", MYSQL_MIN)
    };
    if found < min {
        return Err(format!(
            "{name} {version} is too old: nodepool needs {name} {}.{} or newer (for SKIP LOCKED)",
            min.0, min.1
        ));
    }
    Ok(())
}

/// What diesel connects to for `uri`; makes an SQLite file's folder on the way.
fn target(uri: &DbUri) -> Result<(String, Backend)> {
    match uri {
        DbUri::Sqlite(path) => {
            create_parent(path, uri)?;
            Ok((path.to_string_lossy().into_owned(), Backend::Sqlite))
        }
        DbUri::Postgres(url) => Ok((url.expose().to_owned(), Backend::Postgres)),
        #[cfg(feature = "mysql")]
        DbUri::Mysql(url) => Ok((mysql_url(url.expose()), Backend::Mysql)),
        #[cfg(not(feature = "mysql"))]
        DbUri::Mysql(_) => Err(mysql_not_built(uri)),
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
        // A database that does not answer fails a call within 5 s, so that the daemon's loop
        // is never held up long (it says the store is down and goes on); work in flight tries
        // again patiently.
        .connection_timeout(Duration::from_secs(5))
        .connection_customizer(Box::new(Setup))
        .build_unchecked(ConnectionManager::<AnyConnection>::new(url));
    Ok((pool, backend))
}

/// One connection outside the pool, for work on the schema itself.
pub(crate) fn establish(uri: &DbUri) -> Result<AnyConnection> {
    let (url, backend) = target(uri)?;
    let unavailable = |message: String| StoreError::Unavailable {
        uri: uri.to_string(),
        message: scrubbed(uri, &message),
    };
    // The backend's own connection, so that its error says what went wrong (the
    // multi-connection tries each backend and keeps none of their errors).
    let mut conn = match backend {
        Backend::Postgres => PgConnection::establish(&url).map(AnyConnection::Postgresql),
        Backend::Sqlite => SqliteConnection::establish(&url).map(AnyConnection::Sqlite),
        #[cfg(feature = "mysql")]
        Backend::Mysql => diesel::mysql::MysqlConnection::establish(&url).map(AnyConnection::Mysql),
        #[cfg(not(feature = "mysql"))]
        Backend::Mysql => return Err(mysql_not_built(uri)),
    }
    .map_err(|e| unavailable(one_line(&e.to_string())))?;
    match &mut conn {
        AnyConnection::Sqlite(sqlite) => {
            configure_sqlite(sqlite).map_err(|e| unavailable(e.to_string()))?;
        }
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(mysql) => {
            use diesel::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct Version {
                #[diesel(sql_type = diesel::sql_types::Text)]
                version: String,
            }
            let found: Version = diesel::sql_query("SELECT VERSION() AS version")
                .get_result(mysql)
                .map_err(|e| unavailable(e.to_string()))?;
            check_mysql_version(&found.version).map_err(unavailable)?;
            configure_mysql(mysql).map_err(|e| unavailable(e.to_string()))?;
        }
        AnyConnection::Postgresql(_) => {}
    }
    Ok(conn)
}

/// The URL diesel's MySQL connection reads: query options it does not know, such as
/// SQLAlchemy's `charset=utf8`, are dropped (diesel always speaks utf8mb4).
#[cfg(feature = "mysql")]
fn mysql_url(url: &str) -> String {
    const KNOWN: [&str; 5] = ["unix_socket", "ssl_mode", "ssl_ca", "ssl_cert", "ssl_key"];
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| KNOWN.contains(&pair.split('=').next().unwrap_or("")))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// A driver's message on one line (libpq spreads its advice over several).
/// A driver's `message` without the secrets of `uri` (libpq, for one, quotes the part of a
/// URL it could not read, which may be the password).
pub(crate) fn scrubbed(uri: &DbUri, message: &str) -> String {
    match uri {
        DbUri::Postgres(url) | DbUri::Mysql(url) => url.scrub(message),
        _ => message.to_owned(),
    }
}

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
        #[cfg(feature = "mysql")]
        (AnyConnection::Mysql(_), Mode::Write) => "START TRANSACTION READ WRITE",
        #[cfg(feature = "mysql")]
        (AnyConnection::Mysql(_), Mode::Read) => {
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
             START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT"
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
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => AnsiTransactionManager::begin_transaction_sql(c, sql)?,
    }
    Ok(())
}

fn commit(conn: &mut AnyConnection) -> Result<()> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::commit_transaction(c)?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::commit_transaction(c)?,
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => AnsiTransactionManager::commit_transaction(c)?,
    }
    Ok(())
}

fn rollback(conn: &mut AnyConnection) -> Result<()> {
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::rollback_transaction(c)?,
        AnyConnection::Postgresql(c) => AnsiTransactionManager::rollback_transaction(c)?,
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => AnsiTransactionManager::rollback_transaction(c)?,
    }
    Ok(())
}
