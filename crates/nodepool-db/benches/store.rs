//! Store benchmarks: `cargo xtask bench store` (or `cargo bench -p nodepool-db --bench store`).
//!
//! On SQLite and, when reachable, PostgreSQL and (built with `--features mysql`) MariaDB
//! or MySQL: insert 10,000 nodes; read one planning
//! snapshot of 10,000 nodes and 1,000 requests; 1,000 claims from 8 concurrent tasks.
//! Prints medians as a Markdown table for docs/benchmarks.md.

// A benchmark measures wall time; nothing else in the workspace may read the clock.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use diesel::{Connection, RunQueryDsl, pg::PgConnection};
use nodepool_config::DbUri;
use nodepool_db::{NewNode, Store};
use nodepool_model::{LabelName, NodeId, NodeState, ProviderName, Reason, ReasonCode, Timestamp};

const NODES: usize = 10_000;
const REQUESTS: usize = 1_000;
const CLAIMS: usize = 1_000;
const TASKS: usize = 8;

fn now() -> Timestamp {
    Timestamp::from_unix_seconds(1_400_000_000)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A fresh database: a new SQLite file, or a new PostgreSQL or MySQL database (dropped at
/// the end).
struct Fresh {
    uri: DbUri,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
    #[cfg(feature = "mysql")]
    mysql: Option<(String, String)>,
}

impl Fresh {
    fn new(backend: &str, n: usize) -> Option<Fresh> {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir().unwrap();
                Some(Fresh {
                    uri: DbUri::Sqlite(dir.path().join("bench.sqlite")),
                    _dir: Some(dir),
                    pg: None,
                    #[cfg(feature = "mysql")]
                    mysql: None,
                })
            }
            #[cfg(feature = "mysql")]
            "mysql" => {
                use diesel::mysql::MysqlConnection;
                let admin = std::env::var("NODEPOOL_TEST_MYSQL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into());
                let mut conn = MysqlConnection::establish(&admin).ok()?;
                let name = format!("nodepool_bench_{}_{n}", std::process::id());
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .unwrap();
                let base = admin.rsplit_once('/').unwrap().0;
                Some(Fresh {
                    uri: DbUri::parse(&format!("{base}/{name}"), None).unwrap(),
                    _dir: None,
                    pg: None,
                    mysql: Some((admin, name)),
                })
            }
            _ => {
                let admin = std::env::var("NODEPOOL_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let mut conn = PgConnection::establish(&admin).ok()?;
                let name = format!("nodepool_bench_{}_{n}", std::process::id());
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .unwrap();
                let base = admin.rsplit_once('/').unwrap().0;
                let uri = DbUri::parse(&format!("{base}/{name}"), None).unwrap();
                Some(Fresh {
                    uri,
                    _dir: None,
                    pg: Some((admin, name)),
                    #[cfg(feature = "mysql")]
                    mysql: None,
                })
            }
        }
    }

    fn store(&self) -> Store {
        Store::open_and_migrate(&self.uri, "bench", now()).unwrap()
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            let mut conn = PgConnection::establish(admin).unwrap();
            diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .unwrap();
        }
        #[cfg(feature = "mysql")]
        if let Some((admin, name)) = &self.mysql {
            use diesel::mysql::MysqlConnection;
            let mut conn = MysqlConnection::establish(admin).unwrap();
            diesel::sql_query(format!("DROP DATABASE {name}"))
                .execute(&mut conn)
                .unwrap();
        }
    }
}

fn new_nodes(count: usize) -> Vec<NewNode> {
    (0..count)
        .map(|i| {
            let provider = ProviderName::new(format!("provider-{}", i % 50)).unwrap();
            let label = LabelName::new(format!("label-{}", i % 500)).unwrap();
            NewNode::new(provider, label).hostname("node-{node_id}.example.org")
        })
        .collect()
}

fn insert_nodes(backend: &str) -> Option<Duration> {
    let mut samples = Vec::new();
    for round in 0..5 {
        let fresh = Fresh::new(backend, round)?;
        let store = fresh.store();
        let nodes = new_nodes(NODES);
        let start = Instant::now();
        store
            .create_nodes(&nodes, now(), &Reason::new(ReasonCode::Demand, "bench"))
            .unwrap();
        samples.push(start.elapsed());
    }
    Some(median(samples))
}

fn snapshot(backend: &str) -> Option<Duration> {
    let fresh = Fresh::new(backend, 100)?;
    let store = fresh.store();
    store
        .create_nodes(
            &new_nodes(NODES),
            now(),
            &Reason::new(ReasonCode::Demand, "bench"),
        )
        .unwrap();
    for i in 0..REQUESTS {
        let labels = [
            LabelName::new(format!("label-{}", i % 500)).unwrap(),
            LabelName::new(format!("label-{}", (i + 1) % 500)).unwrap(),
        ];
        store.create_request(&labels, "bench", 0, now()).unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let snapshot = store.snapshot().unwrap();
        samples.push(start.elapsed());
        assert_eq!(
            (snapshot.nodes.len(), snapshot.requests.len()),
            (NODES, REQUESTS)
        );
    }
    Some(median(samples))
}

/// Returns the median time for 1,000 claims by 8 concurrent tasks.
fn claims(backend: &str) -> Option<Duration> {
    let mut samples = Vec::new();
    for round in 0..3 {
        let fresh = Fresh::new(backend, 200 + round)?;
        let store = fresh.store();
        let label = LabelName::new("hot").unwrap();
        let provider = ProviderName::new("cloud").unwrap();
        let new: Vec<NewNode> = (0..CLAIMS)
            .map(|_| NewNode::new(provider.clone(), label.clone()))
            .collect();
        let nodes = store
            .create_nodes(&new, now(), &Reason::new(ReasonCode::Demand, "bench"))
            .unwrap();
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        store
            .set_node_states(
                &ids,
                NodeState::Ready,
                now(),
                &Reason::new(ReasonCode::Demand, "bench"),
            )
            .unwrap();
        let requests: Vec<_> = (0..CLAIMS)
            .map(|_| {
                store
                    .create_request(std::slice::from_ref(&label), "bench", 0, now())
                    .unwrap()
            })
            .collect();
        let start = Instant::now();
        std::thread::scope(|scope| {
            for task in 0..TASKS {
                let store = store.clone();
                let requests = &requests;
                let label = &label;
                scope.spawn(move || {
                    for request in requests.iter().skip(task).step_by(TASKS) {
                        loop {
                            match store.claim_ready_nodes(request.id, label, 1, now()) {
                                Ok(claimed) => {
                                    assert_eq!(claimed.len(), 1);
                                    break;
                                }
                                Err(error) if error.is_retryable() => continue,
                                Err(error) => panic!("{error}"),
                            }
                        }
                    }
                });
            }
        });
        samples.push(start.elapsed());
    }
    Some(median(samples))
}

fn main() {
    println!(
        "| backend | insert {NODES} nodes | snapshot ({NODES} nodes, {REQUESTS} requests) | {CLAIMS} claims, {TASKS} tasks | claims/s |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let backends: &[&str] = if cfg!(feature = "mysql") {
        &["sqlite", "postgres", "mysql"]
    } else {
        eprintln!("mysql: not built (--features mysql), skipped");
        &["sqlite", "postgres"]
    };
    for &backend in backends {
        let Some(insert) = insert_nodes(backend) else {
            eprintln!("{backend}: not reachable, skipped");
            continue;
        };
        let snapshot = snapshot(backend).unwrap();
        let claims = claims(backend).unwrap();
        println!(
            "| {backend} | {:.0} ms | {:.1} ms | {:.0} ms | {:.0} |",
            insert.as_secs_f64() * 1e3,
            snapshot.as_secs_f64() * 1e3,
            claims.as_secs_f64() * 1e3,
            CLAIMS as f64 / claims.as_secs_f64()
        );
    }
}
