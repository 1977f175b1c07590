//! Schema migrations, embedded in the binary and applied in order.
//!
//! One set of SQL files serves every backend. A database that has a migration this binary
//! does not know was written by a newer nodepool: that is an error, never a silent downgrade.

use diesel::RunQueryDsl;
use diesel::migration::MigrationSource;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::connection::AnyConnection;
use crate::error::{Result, StoreError};

pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The versions of the migrations this binary has, oldest first.
pub(crate) fn known_versions() -> Vec<String> {
    let migrations: Vec<_> = MigrationSource::<diesel::sqlite::Sqlite>::migrations(&MIGRATIONS)
        .expect("embedded migrations are readable");
    migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect()
}

fn migration_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        message: format!("migration failed: {error}"),
        retryable: false,
    }
}

/// Fails with [`StoreError::SchemaTooNew`] if the database has migrations this binary lacks.
pub(crate) fn check_not_newer(conn: &mut AnyConnection) -> Result<Vec<String>> {
    let applied: Vec<String> = conn
        .applied_migrations()
        .map_err(migration_error)?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    let known = known_versions();
    if let Some(unknown) = applied.iter().filter(|v| !known.contains(v)).max() {
        return Err(StoreError::SchemaTooNew {
            newest: unknown.clone(),
            known: known.last().cloned().unwrap_or_default(),
        });
    }
    Ok(applied)
}

/// The session lock that lets one process at a time migrate a PostgreSQL store ("migrate").
const MIGRATION_LOCK: i64 = 0x006d_6967_7261_7465;

/// Applies every pending migration, then `then` (the first use's setup), and returns the
/// versions applied now. Daemons starting together on one PostgreSQL or MySQL store take
/// turns: the first migrates and sets up, the others find nothing left to do.
pub(crate) fn run_pending(
    conn: &mut AnyConnection,
    then: impl FnOnce(&mut AnyConnection) -> Result<()>,
) -> Result<Vec<String>> {
    lock(conn, true)?;
    let result: Result<Vec<String>> = check_not_newer(conn).and_then(|applied| {
        if applied.is_empty() {
            before_first_migration(conn)?;
        }
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(migration_error)?
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        then(conn)?;
        Ok(applied)
    });
    lock(conn, false)?;
    result
}

/// Takes or gives back the session lock that serialises migrations (SQLite's file lock
/// does that on its own).
fn lock(conn: &mut AnyConnection, take: bool) -> Result<()> {
    match conn {
        AnyConnection::Postgresql(pg) => {
            let function = if take {
                "pg_advisory_lock"
            } else {
                "pg_advisory_unlock"
            };
            diesel::sql_query(format!("SELECT {function}({MIGRATION_LOCK})")).execute(pg)?;
        }
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(mysql) => {
            let sql = if take {
                "SELECT GET_LOCK('nodepool-migrate', 600)"
            } else {
                "SELECT RELEASE_LOCK('nodepool-migrate')"
            };
            diesel::sql_query(sql).execute(mysql)?;
        }
        AnyConnection::Sqlite(_) => {}
    }
    Ok(())
}

/// Prepares an empty database. On MySQL, text compares byte for byte as on the other
/// backends (the server's default collation would take `Small` and `small` for one label,
/// and one cloud id for another that differs in case only).
fn before_first_migration(conn: &mut AnyConnection) -> Result<()> {
    match conn {
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(mysql) => {
            diesel::sql_query("ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                .execute(mysql)?;
        }
        AnyConnection::Postgresql(_) | AnyConnection::Sqlite(_) => {}
    }
    Ok(())
}
