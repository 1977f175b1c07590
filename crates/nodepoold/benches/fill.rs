//! Fill benchmark: `cargo xtask bench fill` (or `cargo bench -p nodepoold --bench fill`).
//!
//! On the local OpenStack (`cargo xtask cloud up`): the real `nodepoold` binary with 4 labels
//! × min-ready 10 (`rate: 0.001`) on a provider whose image is already built; the time from
//! the daemon's start until 40 nodes are READY (created, ACTIVE, reached over SSH), and the
//! daemon's peak resident memory. In the same run `xtask/cloud/smoke.py`, a raw HTTP client,
//! creates 40 servers and waits for them to be ACTIVE: the ceiling. An sshd started here
//! answers at every node's (loopback) address. Prints medians of five runs as a Markdown
//! table for docs/benchmarks.md: the local cloud's own pace varies by a quarter from run to
//! run, so fewer say little.
//!
//! When a PostgreSQL server answers at 127.0.0.1:5432, each run also fills the pool from a
//! PostgreSQL store with one daemon and with two daemons sharing it: two must be no slower
//! than one. `NODEPOOLD=/path/to/nodepoold` measures another build of the daemon.

// A benchmark measures wall time and waits on the cloud; it reports on stdout.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::print_stderr,
    dead_code
)]

#[path = "../../nodepool-daemon/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodepool_config::DbUri;
use nodepool_db::{ImageFilter, NodeFilter, Store};
use nodepool_model::{ImageState, NodeState, Reason, ReasonCode, Timestamp};
use nodepool_openstack::OpenStackProvider;
use nodepool_provider::{PROVIDER_KEY, Provider};

const NODES: usize = 40;
/// Runs of each client; `FILL_RUNS` overrides it for a quick look.
fn runs() -> usize {
    std::env::var("FILL_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}
const PROVIDER: &str = "bench-fill";

fn config(dir: &Path, dburi: &str, port: u16, min_ready: i32) -> String {
    let labels: String = (1..=4)
        .map(|i| {
            format!(
                "  - name: label{i}\n    image: base\n    min-ready: {min_ready}\n    providers: [{{name: {PROVIDER}}}]\n"
            )
        })
        .collect();
    // No `networks`: Nova picks the network, as it does for smoke.py.
    format!(
        "script-dir: {dir}/scripts
dburi: {dburi}
api:
  listen: 127.0.0.1:0
labels:
{labels}providers:
{provider}",
        dir = dir.display(),
        provider = support::cloud_provider(
            PROVIDER,
            dir,
            port,
            &format!("    max-servers: {NODES}\n    rate: 0.001\n"),
        ),
    )
}

/// This build's nodepoold, or the binary `NODEPOOLD` names (another version, to compare
/// side by side).
fn nodepoold(config: &Path) -> Child {
    let binary =
        std::env::var_os("NODEPOOLD").unwrap_or_else(|| env!("CARGO_BIN_EXE_nodepoold").into());
    Command::new(binary)
        .arg("-c")
        .arg(config)
        // FILL_LOG=info shows where the time goes (every launch step is logged with its time).
        .env(
            "RUST_LOG",
            std::env::var("FILL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nodepoold starts")
}

fn stop(mut child: Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// The CPU time (user and system) a running process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) start with the state.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Linux reports in USER_HZ, 100 per second on every architecture it runs on.
    ticks / 100.0
}

/// The peak resident memory of a running process, from /proc.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn wait_for(store: &Store, what: &str, limit: Duration, done: impl Fn(&Store) -> bool) {
    let start = Instant::now();
    while !done(store) {
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes this benchmark's servers (and, with `images`, its snapshots) from the cloud.
fn clear(runtime: &tokio::runtime::Runtime, cloud: &OpenStackProvider, images: bool) {
    runtime.block_on(async {
        let ours = |m: &std::collections::BTreeMap<String, String>| {
            m.get(PROVIDER_KEY).is_some_and(|p| p == PROVIDER)
        };
        let servers: Vec<_> = cloud
            .list_servers()
            .await
            .unwrap()
            .into_iter()
            .filter(|s| ours(&s.metadata))
            .collect();
        for server in &servers {
            let _ = cloud.delete_server(&server.id).await;
        }
        for server in &servers {
            while cloud.get_server(&server.id).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if images {
            for image in cloud.list_images().await.unwrap() {
                if ours(&image.properties) {
                    let _ = cloud.delete_image(&image.id).await;
                }
            }
        }
    });
}

/// smoke.py's time to 40 ACTIVE servers.
fn smoke() -> Duration {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/cloud/smoke.py");
    let output = Command::new("python3")
        .arg(script)
        .args([NODES.to_string().as_str(), "auto"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("SMOKE OK"),
        "smoke.py failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("server(s) ACTIVE"))
        .unwrap();
    let seconds = line
        .split_whitespace()
        .last()
        .unwrap()
        .trim_end_matches('s');
    Duration::from_secs_f64(seconds.parse().unwrap())
}

/// Opens the store once the daemon has made it.
fn open(uri: &DbUri) -> Store {
    loop {
        if let Ok(store) = Store::open(uri, "bench")
            && store.check_schema().is_ok()
        {
            return store;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Builds the image into the store of `path` (min-ready 0 launches nothing).
fn build_image(path: &Path, uri: &DbUri) -> Store {
    let child = nodepoold(path);
    let store = open(uri);
    wait_for(&store, "the image", Duration::from_secs(600), |s| {
        s.images(&ImageFilter::default())
            .unwrap()
            .iter()
            .any(|i| i.state == ImageState::Ready)
    });
    stop(child);
    store
}

/// Starts `daemons` daemons on `path` and times them to 40 READY nodes; then empties the
/// pool. Returns the time, and the first daemon's peak RSS and CPU.
fn fill(
    runtime: &tokio::runtime::Runtime,
    cloud: &OpenStackProvider,
    store: &Store,
    path: &Path,
    daemons: usize,
) -> (f64, f64, f64) {
    let start = Instant::now();
    let children: Vec<Child> = (0..daemons).map(|_| nodepoold(path)).collect();
    wait_for(store, "40 ready nodes", Duration::from_secs(600), |s| {
        s.nodes(&NodeFilter::default())
            .unwrap()
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .count()
            >= NODES
    });
    let fill = start.elapsed().as_secs_f64();
    let peak = peak_rss_mb(children[0].id());
    let used = cpu_seconds(children[0].id());
    for child in children {
        stop(child);
    }
    // Back to an empty pool for the next run: servers deleted, rows removed.
    clear(runtime, cloud, false);
    let now = Timestamp::from_unix_seconds(0);
    let why = Reason::new(ReasonCode::OperatorDelete, "next run");
    for node in store.nodes(&NodeFilter::default()).unwrap() {
        store
            .set_node_state(node.id, NodeState::Delete, node.state_time, &why)
            .unwrap();
        store
            .remove_node(node.id, now.max(node.state_time), &why)
            .unwrap();
    }
    (fill, peak, used)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(cloud) = runtime.block_on(support::local_cloud("the fill benchmark")) else {
        std::process::exit(1);
    };
    let Some(sshd) = support::sshd() else {
        eprintln!("no sshd: install openssh-server");
        std::process::exit(1);
    };
    let dir = sshd.dir.path();
    clear(&runtime, &cloud, true);
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("scripts/prepare.sh"), "#!/bin/sh\ntrue\n").unwrap();
    let path = dir.join("nodepool.yaml");

    // The image first, in each store (min-ready 0 builds it and launches nothing).
    let sqlite = format!("sqlite://{}/nodepool.sqlite", dir.display());
    std::fs::write(&path, config(dir, &sqlite, sshd.port, 0)).unwrap();
    let store = build_image(&path, &DbUri::Sqlite(dir.join("nodepool.sqlite")));
    let pg = support::ServerDb::postgres("bench_fill").map(|db| {
        let uri = db.uri();
        let pg_path = dir.join("nodepool-pg.yaml");
        std::fs::write(&pg_path, config(dir, &uri, sshd.port, 0)).unwrap();
        let store = build_image(&pg_path, &DbUri::parse(&uri, None).unwrap());
        std::fs::write(&pg_path, config(dir, &uri, sshd.port, 10)).unwrap();
        (db, pg_path, store)
    });
    if pg.is_none() {
        eprintln!("no PostgreSQL at 127.0.0.1:5432: one daemon on SQLite only");
    }

    let (mut fills, mut rss, mut cpu, mut smokes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pg_one, mut pg_two) = (Vec::new(), Vec::new());
    std::fs::write(&path, config(dir, &sqlite, sshd.port, 10)).unwrap();
    for run in 1..=runs() {
        let (time, peak, used) = fill(&runtime, &cloud, &store, &path, 1);
        let raw = smoke();
        eprintln!(
            "run {run}: nodepoold {time:.1} s to {NODES} READY (peak RSS {peak:.1} MB, CPU {used:.2} s); smoke.py {:.1} s to {NODES} ACTIVE",
            raw.as_secs_f64()
        );
        fills.push(time);
        rss.push(peak);
        cpu.push(used);
        smokes.push(raw.as_secs_f64());
        if let Some((_, pg_path, pg_store)) = &pg {
            let (one, ..) = fill(&runtime, &cloud, pg_store, pg_path, 1);
            let (two, ..) = fill(&runtime, &cloud, pg_store, pg_path, 2);
            eprintln!("run {run}: on PostgreSQL, one daemon {one:.1} s, two daemons {two:.1} s");
            pg_one.push(one);
            pg_two.push(two);
        }
    }
    clear(&runtime, &cloud, true);
    let runs = fills.len();
    let (fill, raw) = (median(fills), median(smokes));
    println!("| client | {NODES} nodes (median of {runs}) | peak RSS | CPU |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| nodepoold, start to READY (SSH reached) | {fill:.1} s | {:.1} MB | {:.2} s |",
        median(rss),
        median(cpu)
    );
    println!("| smoke.py (raw HTTP), create to ACTIVE | {raw:.1} s | | |");
    println!("| ratio | {:.2}x | | |", fill / raw);
    if pg.is_some() {
        let (one, two) = (median(pg_one), median(pg_two));
        println!();
        println!("| PostgreSQL store | {NODES} nodes (median of {runs}) |");
        println!("| --- | ---: |");
        println!("| one nodepoold | {one:.1} s |");
        println!("| two nodepoold sharing it | {two:.1} s |");
        println!("| two / one | {:.2}x |", two / one);
    }
}
