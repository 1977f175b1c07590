//! Test databases: an SQLite file in a temporary folder, or a PostgreSQL or MySQL database
//! created for one test and dropped after it.

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

/// The server the MySQL tests use (MariaDB on these machines).
#[cfg(feature = "mysql")]
pub(crate) fn mysql_admin_url() -> String {
    std::env::var("NODEPOOL_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into())
}

/// The time tests start at: 2014-03-25T00:00:00Z.
pub(crate) const T0: Timestamp = Timestamp::from_unix_seconds(1_395_705_600);

/// A database server that tests make their own databases in.
#[derive(Clone, Copy, Debug)]
enum Server {
    Postgres,
    #[cfg(feature = "mysql")]
    Mysql,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            #[cfg(feature = "mysql")]
            Server::Mysql => "MySQL",
        }
    }

    fn admin_url(self) -> String {
        match self {
            Server::Postgres => postgres_admin_url(),
            #[cfg(feature = "mysql")]
            Server::Mysql => mysql_admin_url(),
        }
    }

    /// Runs `sql` as the server's administrator.
    fn admin(self, sql: &str) -> Result<(), String> {
        let url = self.admin_url();
        match self {
            Server::Postgres => PgConnection::establish(&url)
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    diesel::sql_query(sql)
                        .execute(&mut c)
                        .map_err(|e| e.to_string())
                }),
            #[cfg(feature = "mysql")]
            Server::Mysql => diesel::mysql::MysqlConnection::establish(&url)
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    diesel::sql_query(sql)
                        .execute(&mut c)
                        .map_err(|e| e.to_string())
                }),
        }
        .map(drop)
    }

    /// The names of the test databases on the server.
    fn test_databases(self) -> Vec<String> {
        #[derive(diesel::QueryableByName)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let url = self.admin_url();
        let names: Vec<Name> = match self {
            Server::Postgres => diesel::sql_query(
                "SELECT datname AS name FROM pg_database WHERE datname LIKE 'nodepool_test_%'",
            )
            .load(&mut PgConnection::establish(&url).unwrap())
            .unwrap(),
            #[cfg(feature = "mysql")]
            Server::Mysql => diesel::sql_query(
                "SELECT schema_name AS name FROM information_schema.schemata \
                 WHERE schema_name LIKE 'nodepool\\_test\\_%'",
            )
            .load(&mut diesel::mysql::MysqlConnection::establish(&url).unwrap())
            .unwrap(),
        };
        names.into_iter().map(|n| n.name).collect()
    }

    fn drop_database(self, name: &str) -> Result<(), String> {
        match self {
            // Connections a killed test left open would keep the database.
            Server::Postgres => self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            #[cfg(feature = "mysql")]
            Server::Mysql => self.admin(&format!("DROP DATABASE IF EXISTS {name}")),
        }
    }

    /// The URL of database `name` on the server.
    fn url_of(self, name: &str) -> String {
        let admin_url = self.admin_url();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        format!("{base}/{name}")
    }
}

pub(crate) struct TestDb {
    pub(crate) uri: DbUri,
    pub(crate) store: Store,
    _dir: Option<tempfile::TempDir>,
    server: Option<(Server, String)>,
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
            server: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a note on stderr) when no server is
    /// reachable on a developer's machine. Under `CI=true` a missing server fails the test.
    pub(crate) fn postgres() -> Option<TestDb> {
        TestDb::on_server(Server::Postgres, true)
    }

    /// A fresh MySQL (MariaDB) database, as [`TestDb::postgres`].
    #[cfg(feature = "mysql")]
    pub(crate) fn mysql() -> Option<TestDb> {
        TestDb::on_server(Server::Mysql, true)
    }

    /// Empty databases, not migrated, on each server backend this build has.
    pub(crate) fn empty_on_servers() -> Vec<TestDb> {
        let servers = [
            Some(Server::Postgres),
            #[cfg(feature = "mysql")]
            Some(Server::Mysql),
        ];
        servers
            .into_iter()
            .flatten()
            .filter_map(|server| TestDb::on_server(server, false))
            .collect()
    }

    #[allow(clippy::print_stderr)]
    fn on_server(server: Server, migrated: bool) -> Option<TestDb> {
        let admin_url = server.admin_url();
        if let Err(error) = server.admin("SELECT 1") {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{} is required in CI but {admin_url} cannot be reached: {error}",
                    server.name()
                );
            }
            eprintln!(
                "skipping a {} test: {admin_url} cannot be reached ({error}); set CI=true to make this a failure",
                server.name()
            );
            return None;
        }
        drop_stale_databases(server);
        let name = format!(
            "nodepool_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        server.drop_database(&name).unwrap();
        server.admin(&format!("CREATE DATABASE {name}")).unwrap();
        let uri = DbUri::parse(&server.url_of(&name), None).unwrap();
        let store = if migrated {
            Store::open_and_migrate(&uri, "test-daemon", T0).unwrap()
        } else {
            Store::open(&uri, "test-daemon").unwrap()
        };
        Some(TestDb {
            uri,
            store,
            _dir: None,
            server: Some((server, name)),
        })
    }
}

/// Drops the test databases of test processes that died without cleaning up (killed runs).
fn drop_stale_databases(server: Server) {
    static POSTGRES: std::sync::Once = std::sync::Once::new();
    #[cfg(feature = "mysql")]
    static MYSQL: std::sync::Once = std::sync::Once::new();
    let once = match server {
        Server::Postgres => &POSTGRES,
        #[cfg(feature = "mysql")]
        Server::Mysql => &MYSQL,
    };
    once.call_once(|| {
        for name in server.test_databases() {
            let pid = name
                .trim_start_matches("nodepool_test_")
                .split('_')
                .next()
                .unwrap_or("");
            let alive = std::path::Path::new("/proc").join(pid).exists();
            if !alive && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                server.drop_database(&name).unwrap();
            }
        }
    });
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.server {
            let _ = server.drop_database(name);
        }
    }
}
