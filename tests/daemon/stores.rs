//! The demo config (`config-examples/local.yaml`) on each server store: `nodepoold` fills
//! its pools with the `dburi` pointed at PostgreSQL and, in a build with the `mysql`
//! feature, at MariaDB, and `nodepool list` reads what it wrote.

use std::time::Duration;

use clap::Parser;
use nodepool_config::DbUri;
use nodepool_db::Store;
use nodepool_model::NodeState;

use crate::support;
use crate::{follow, nodepoold, terminate, until};

/// The ready nodes the demo keeps: three `ubuntu-small`, one `ubuntu-large`.
const DEMO_READY: usize = 4;

fn runs_the_demo_on(dburi: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let demo = std::fs::read_to_string(root.join("config-examples/local.yaml")).unwrap();
    let scripts = root.join("config-examples/scripts");
    let text = demo
        .replace(
            "dburi: sqlite:///tmp/nodepool-local.sqlite",
            &format!("dburi: {dburi}\napi:\n  listen: 127.0.0.1:0"),
        )
        .replace(
            "script-dir: scripts",
            &format!("script-dir: {}", scripts.display()),
        );
    assert_ne!(
        text, demo,
        "the demo config no longer has the lines this test replaces"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodepool.yaml");
    std::fs::write(&path, text).unwrap();

    let (child, mut log) = nodepoold(&path);
    follow(&mut log, "API listening", 1);
    let store = Store::open(&DbUri::parse(dburi, None).unwrap(), "test").unwrap();
    until(&store, Duration::from_secs(120), "the demo's pools", |s| {
        s.nodes
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .count()
            == DEMO_READY
    });

    let cli = nodepool_cli::Cli::parse_from(
        ["nodepool", "--json", "-c"]
            .into_iter()
            .map(String::from)
            .chain([path.display().to_string(), "list".into()]),
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = nodepool_cli::run(&cli, &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let listed: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let ready: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "ready")
        .map(|n| n["label"].as_str().unwrap())
        .collect();
    assert_eq!(ready.len(), DEMO_READY, "{listed:#}");
    assert_eq!(ready.iter().filter(|l| **l == "ubuntu-large").count(), 1);

    terminate(&child);
    follow(&mut log, "stopped", 1);
}

#[test]
fn the_demo_runs_on_postgresql() {
    let Some(db) = support::ServerDb::postgres("demo") else {
        return;
    };
    runs_the_demo_on(&db.uri());
}

#[cfg(feature = "mysql")]
#[test]
fn the_demo_runs_on_mariadb() {
    let Some(db) = support::ServerDb::mariadb("demo") else {
        return;
    };
    runs_the_demo_on(&db.uri());
}
