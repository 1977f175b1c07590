//! Test databases: an SQLite file in a temporary folder, or a PostgreSQL database created
//! for one test and dropped after it.

use std::sync::atomic::{AtomicU32, Ordering};

use diesel::{Connection, RunQueryDsl, pg::PgConnection};
use nodepool_config::DbUri;
use nodepool_model::Timestamp;

use crate::Store;

/// The server the PostgreSQL tests use; a database per test is created in it.
pub(crate) fn postgres_admin_url() -> String {
    std::env::var("NODEPOOL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The time tests start at: 2014-03-25T00:00:00Z.
pub(crate) const T0: Timestamp = Timestamp::from_unix_seconds(1_395_705_600);

pub(crate) struct TestDb {
    pub(crate) uri: DbUri,
    pub(crate) store: Store,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub(crate) fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let uri = DbUri::Sqlite(dir.path().join("state/nodepool.sqlite"));
        let store = Store::open_and_migrate(&uri, "test-daemon", T0).unwrap();
        TestDb {
            uri,
            store,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a note on stderr) when no server is
    /// reachable on a developer's machine. Under `CI=true` a missing server fails the test.
    #[allow(clippy::print_stderr)]
    pub(crate) fn postgres() -> Option<TestDb> {
        let admin_url = postgres_admin_url();
        let mut admin = match PgConnection::establish(&admin_url) {
            Ok(conn) => conn,
            Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("PostgreSQL is required in CI but {admin_url} cannot be reached: {error}")
            }
            Err(error) => {
                eprintln!(
                    "skipping a PostgreSQL test: {admin_url} cannot be reached ({error}); set CI=true to make this a failure"
                );
                return None;
            }
        };
        drop_stale_databases(&mut admin);
        let name = format!(
            "nodepool_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .unwrap();
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let uri = DbUri::parse(&format!("{base}/{name}"), None).unwrap();
        let store = Store::open_and_migrate(&uri, "test-daemon", T0).unwrap();
        Some(TestDb {
            uri,
            store,
            _dir: None,
            postgres: Some(name),
        })
    }
}

/// Drops the test databases of test processes that died without cleaning up (killed runs).
fn drop_stale_databases(admin: &mut PgConnection) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[derive(diesel::QueryableByName)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            datname: String,
        }
        let names: Vec<Name> = diesel::sql_query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'nodepool_test_%'",
        )
        .load(admin)
        .unwrap();
        for Name { datname } in names {
            let pid = datname
                .trim_start_matches("nodepool_test_")
                .split('_')
                .next()
                .unwrap_or("");
            let alive = std::path::Path::new("/proc").join(pid).exists();
            if !alive
                && datname
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {datname} WITH (FORCE)"))
                    .execute(admin)
                    .unwrap();
            }
        }
    });
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.postgres
            && let Ok(mut admin) = PgConnection::establish(&postgres_admin_url())
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin);
        }
    }
}
