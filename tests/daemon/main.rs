//! End-to-end tests of the real `nodepoold` binary: the fake cloud, a SQLite store, real
//! time. The tests follow the daemon's log as it happens instead of sleeping.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

use nodepool_config::DbUri;
use nodepool_db::{NodeFilter, Store};
use nodepool_model::NodeState;

/// A config for the fake cloud with a store in `dir`.
fn config(dir: &Path) -> String {
    format!(
        "dburi: sqlite://{db}
labels:
  - name: small
    image: base
    min-ready: 2
    providers: [{{name: east}}, {{name: west}}]
providers:
  - name: east
    driver: fake
    max-servers: 4
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
  - name: west
    driver: fake
    max-servers: 4
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
",
        db = dir.join("nodepool.sqlite").display()
    )
}

fn nodepoold(config: &Path) -> (Child, BufReader<ChildStderr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodepoold"))
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("nodepoold starts");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    (child, stderr)
}

/// Reads log lines until `count` lines contain `needle`; returns everything read. Panics if
/// the daemon exits first.
fn follow(log: &mut BufReader<ChildStderr>, needle: &str, count: usize) -> String {
    let mut seen = 0;
    let mut all = String::new();
    let mut line = String::new();
    while seen < count {
        line.clear();
        let n = log.read_line(&mut line).expect("the log is readable");
        assert!(
            n > 0,
            "nodepoold exited before logging {needle:?} {count} times:\n{all}"
        );
        if line.contains(needle) {
            seen += 1;
        }
        all.push_str(&line);
    }
    all
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn builds_images_fills_the_pool_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodepool.yaml");
    std::fs::write(&path, config(dir.path())).unwrap();
    let (mut child, mut log) = nodepoold(&path);
    let started = follow(&mut log, "starting", 1);
    assert!(started.contains("installation="), "{started}");
    // Two images (one per provider), then min-ready 2 of small.
    follow(&mut log, "ready in", 4);
    let store = Store::open(&DbUri::Sqlite(dir.path().join("nodepool.sqlite")), "test").unwrap();
    let nodes = store.nodes(&NodeFilter::default()).unwrap();
    let ready = nodes.iter().filter(|n| n.state == NodeState::Ready).count();
    assert!(ready >= 2, "{nodes:#?}");
    terminate(&child);
    let rest = follow(&mut log, "stopped", 1);
    assert!(rest.contains("SIGTERM"), "{rest}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn an_invalid_config_at_start_is_refused_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodepool.yaml");
    std::fs::write(&path, "labels:\n  - name: small\n    imag: base\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_nodepoold"))
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("nodepool.yaml:3:5"), "{stderr}");
    assert!(stderr.contains("did you mean"), "{stderr}");
}
