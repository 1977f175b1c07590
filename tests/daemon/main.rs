//! End-to-end tests of the real `nodepoold` binary: the fake cloud, a SQLite store, real
//! time. The tests follow the daemon's log as it happens instead of sleeping.

// Skipping says so on stderr, as the other suites do.
#![allow(clippy::print_stderr)]

mod api;
mod cloud;
mod ha;
mod secrets;
mod stores;
#[path = "../../crates/nodepool-daemon/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nodepool_config::DbUri;
use std::time::Duration;

use nodepool_daemon::SystemClock;
use nodepool_db::{NodeFilter, Store};
use nodepool_model::{ImageState, NodeState, Snapshot, Timestamp};
use nodepool_provider::Clock;

/// A config for the fake cloud with a store in `dir`.
fn config(dir: &Path) -> String {
    format!(
        "dburi: sqlite://{db}
api:
  listen: 127.0.0.1:0
labels:
  - name: small
    image: base
    min-ready: 2
    providers: [{{name: east}}, {{name: west}}]
providers:
{east}{west}",
        db = dir.join("nodepool.sqlite").display(),
        east = provider("east"),
        west = provider("west"),
    )
}

fn provider(name: &str) -> String {
    format!(
        "  - name: {name}
    driver: fake
    max-servers: 4
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
"
    )
}

/// The daemon's log lines, read off its stderr by a thread as they come, so that the
/// daemon never waits on a full pipe while the test is busy elsewhere.
struct Log(std::sync::mpsc::Receiver<String>);

/// The longest any one thing a test waits for in the log may take.
const LOG_DEADLINE: Duration = Duration::from_secs(180);

/// A running nodepoold, killed (and reaped) when dropped: a test that fails never leaves
/// one behind.
struct Daemon(Child);

impl Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn nodepoold(config: &Path) -> (Daemon, Log) {
    nodepoold_with(config, &[])
}

/// [`nodepoold`] with more arguments.
fn nodepoold_with(config: &Path, args: &[&str]) -> (Daemon, Log) {
    nodepoold_env(config, args, &[])
}

/// [`nodepoold`] with more arguments and environment variables. `NODEPOOLD` names another
/// build to test instead of this one (an older version, to show what a test catches).
fn nodepoold_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (Daemon, Log) {
    let binary =
        std::env::var_os("NODEPOOLD").unwrap_or_else(|| env!("CARGO_BIN_EXE_nodepoold").into());
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("nodepoold starts");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (Daemon(child), Log(log))
}

/// Reads log lines until `count` lines contain `needle`; returns everything read. Panics if
/// the daemon exits first.
fn follow(log: &mut Log, needle: &str, count: usize) -> String {
    let mut seen = 0;
    follow_until(log, &format!("logging {needle:?} {count} times"), |line| {
        seen += usize::from(line.contains(needle));
        seen == count
    })
}

/// Reads log lines until one satisfies `wanted`; returns everything read. Panics if the
/// daemon exits first, or if [`LOG_DEADLINE`] passes.
fn follow_until(log: &mut Log, what: &str, mut wanted: impl FnMut(&str) -> bool) -> String {
    let mut all = String::new();
    let end = deadline(LOG_DEADLINE);
    loop {
        let left = end.saturating_since(SystemClock.now());
        let line = match log.0.recv_timeout(left) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("nodepoold did not log {what} within {LOG_DEADLINE:?}:\n{all}")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("nodepoold exited before {what}:\n{all}")
            }
        };
        all.push_str(&line);
        all.push('\n');
        if wanted(&line) {
            return all;
        }
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for `child` to exit, for at most `limit`; it is killed if it has not.
fn exit_status(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = deadline(limit);
    loop {
        if let Some(status) = child.try_wait().expect("the daemon's status can be read") {
            return status;
        }
        if past(end) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nodepoold did not exit within {limit:?}");
        }
        pause(Duration::from_millis(50));
    }
}

fn terminate(child: &Child) {
    signal(child, "TERM");
}

/// The time between two looks at what another process changes (the store the daemon
/// writes, the cloud): those can only be polled, each wait with a deadline.
#[allow(clippy::disallowed_methods)]
fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

/// When `limit` of real time from now is over.
fn deadline(limit: Duration) -> Timestamp {
    SystemClock.now().saturating_add(limit)
}

fn past(deadline: Timestamp) -> bool {
    SystemClock.now() >= deadline
}

/// Waits for the store to satisfy `done`, for at most `limit` of real time.
fn until(store: &Store, limit: Duration, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let end = deadline(limit);
    loop {
        let snapshot = store.snapshot().unwrap();
        if done(&snapshot) {
            return snapshot;
        }
        assert!(!past(end), "{what}: not after {limit:?}: {snapshot:#?}");
        pause(Duration::from_millis(200));
    }
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
    let status = exit_status(&mut child, Duration::from_secs(60));
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

#[test]
fn config_edits_apply_on_sighup_and_a_broken_edit_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodepool.yaml");
    let with_tiny = config(dir.path()).replace(
        "providers:\n  - name: east",
        "  - name: tiny\n    image: base\n    min-ready: 1\n    providers: [{name: east}]\nproviders:\n  - name: east",
    );
    std::fs::write(&path, &with_tiny).unwrap();
    let (child, mut log) = nodepoold(&path);
    let store = Store::open(&DbUri::Sqlite(dir.path().join("nodepool.sqlite")), "test").unwrap();
    let ready = |s: &Snapshot, label: &str| {
        s.nodes
            .iter()
            .filter(|n| n.label.as_str() == label && n.state == NodeState::Ready)
            .count()
    };
    follow(&mut log, "starting", 1);
    until(&store, Duration::from_secs(300), "the pool filled", |s| {
        ready(s, "small") == 2 && ready(s, "tiny") == 1
    });

    // A broken edit is refused with its errors; the running config stays.
    std::fs::write(&path, with_tiny.replace("min-ready: 2", "min-ready: lots")).unwrap();
    signal(&child, "HUP");
    follow(&mut log, "keeping the running one", 1);
    // Its errors follow, one per line, naming the key.
    follow_until(&mut log, "the broken key named", |l| {
        l.contains("min-ready")
    });

    // A good edit: a provider added, min-ready raised, a label removed (its node kept for
    // removal-grace, two seconds here, with a warning).
    let edited = format!(
        "removal-grace: 2\n{}{}",
        config(dir.path())
            .replace("min-ready: 2", "min-ready: 3")
            .replace("{name: west}]", "{name: west}, {name: north}]"),
        provider("north")
    );
    std::fs::write(&path, edited).unwrap();
    signal(&child, "HUP");
    let changed = follow(&mut log, "config changed", 1);
    assert!(changed.contains("north"), "{changed}");
    let warned = follow(&mut log, "label tiny is gone from the config", 1);
    assert!(
        warned.lines().last().unwrap().contains("WARN")
            && warned.contains("its nodes are deleted at"),
        "{warned}"
    );
    until(&store, Duration::from_secs(300), "the edit applied", |s| {
        ready(s, "small") == 3
            && !s.nodes.iter().any(|n| n.label.as_str() == "tiny")
            && s.images
                .iter()
                .any(|i| i.provider.as_str() == "north" && i.state == ImageState::Ready)
    });
    terminate(&child);
    follow(&mut log, "stopped", 1);
    let mut child = child;
    assert!(exit_status(&mut child, Duration::from_secs(60)).success());
}

#[test]
fn a_second_daemon_on_one_sqlite_store_is_refused_and_a_killed_ones_restart_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodepool.yaml");
    std::fs::write(&path, config(dir.path())).unwrap();
    let (mut first, mut log) = nodepoold(&path);
    follow(&mut log, "API listening", 1);
    let output = Command::new(env!("CARGO_BIN_EXE_nodepoold"))
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "another nodepoold (pid {}) runs on the SQLite store",
            first.id()
        )) && stderr.contains("use PostgreSQL"),
        "{stderr}"
    );
    // kill -9: the lock goes with the process, and its claims with the next start.
    signal(&first, "KILL");
    exit_status(&mut first, Duration::from_secs(60));
    let (second, mut log) = nodepoold(&path);
    follow(&mut log, "API listening", 1);
    let store = Store::open(&DbUri::Sqlite(dir.path().join("nodepool.sqlite")), "test").unwrap();
    let daemons = store.daemons().unwrap();
    assert_eq!(
        daemons.len(),
        1,
        "the killed daemon's lease ended: {daemons:?}"
    );
    assert_eq!(daemons[0].pid, second.id());
    terminate(&second);
    follow(&mut log, "stopped", 1);
}

/// `nodepoold -s secure.conf`: the store is the one secure.conf's `[database] dburi` names,
/// as nodepool 0.3 and 0.4 did, whatever the config's `dburi` says.
#[test]
fn secure_conf_names_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodepool.yaml");
    let elsewhere = dir.path().join("from-secure.sqlite");
    // The config's own store could not be opened: the daemon must not try it.
    let text = config(dir.path()).replace(
        &format!(
            "dburi: sqlite://{}",
            dir.path().join("nodepool.sqlite").display()
        ),
        "dburi: mysql://nodepool@127.0.0.1:1/nodepool",
    );
    std::fs::write(&path, text).unwrap();
    let secure = dir.path().join("secure.conf");
    std::fs::write(
        &secure,
        format!("[database]\ndburi = sqlite://{}\n", elsewhere.display()),
    )
    .unwrap();
    let (child, mut log) = nodepoold_with(&path, &["-s", secure.to_str().unwrap()]);
    follow(&mut log, "ready in", 1);
    let store = Store::open(&DbUri::Sqlite(elsewhere), "test").unwrap();
    let snapshot = store.snapshot().unwrap();
    assert!(
        snapshot.images.iter().any(|i| i.state == ImageState::Ready),
        "{snapshot:#?}"
    );
    terminate(&child);
    follow(&mut log, "stopped", 1);
}
