//! CLI benchmark: `cargo xtask bench cli` (or `cargo bench -p nodepool --bench cli`).
//!
//! The real `nodepool` binary against an SQLite store holding 10,000 nodes (in three states,
//! over four providers and five labels: building, ready and used) and 200 image uploads: the wall time of `list`,
//! `list --json`, `list --state ready` and `image-list`, process start to exit, the output
//! read through a pipe as a script would. Prints medians (and the slowest run) of 20 runs as
//! a Markdown table for docs/benchmarks.md. Target: `list` under 100 ms.

// A benchmark measures wall time; it reports on stdout.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nodepool_config::DbUri;
use nodepool_db::{NewImage, NewNode, Store};
use nodepool_model::{ExternalId, NodeState, Reason, ReasonCode, Timestamp};

const NODES: usize = 10_000;
const RUNS: usize = 20;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nodepool.sqlite");
    let providers = ["east", "west", "north", "south"];
    let labels = ["small", "medium", "large", "xlarge", "gpu"];
    let mut config = format!("dburi: sqlite://{}\nlabels:\n", db.display());
    for label in labels {
        config.push_str(&format!(
            "  - name: {label}\n    image: base\n    min-ready: 1\n    providers: [{}]\n",
            providers.map(|p| format!("{{name: {p}}}")).join(", ")
        ));
    }
    config.push_str("providers:\n");
    for provider in providers {
        config.push_str(&format!(
            "  - name: {provider}\n    driver: fake\n    max-servers: 5000\n    images:\n      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}\n"
        ));
    }
    let path = dir.path().join("nodepool.yaml");
    std::fs::write(&path, config).unwrap();

    let t0 = Timestamp::from_unix_seconds(1_700_000_000);
    let store = Store::open_and_migrate(&DbUri::Sqlite(db), "bench", t0).unwrap();
    let why = Reason::new(ReasonCode::Demand, "the benchmark's pool");
    for provider in providers {
        for v in 0..50 {
            let new = NewImage::new(
                provider.parse().unwrap(),
                "base".parse().unwrap(),
                Timestamp::from_unix_seconds(1_700_000_000 + v * 3600),
            );
            store.create_image(&new, t0, &why).unwrap();
        }
    }
    let news: Vec<NewNode> = (0..NODES)
        .map(|i| {
            NewNode::new(
                providers[i % providers.len()].parse().unwrap(),
                labels[i % labels.len()].parse().unwrap(),
            )
            .hostname(format!(
                "{}-{}-{{node_id}}.slave.example.org",
                labels[i % labels.len()],
                providers[i % providers.len()]
            ))
        })
        .collect();
    let nodes = store.create_nodes(&news, t0, &why).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        if i % 4 == 0 {
            continue; // building
        }
        store
            .attach_node_server(node.id, &ExternalId::new(format!("srv-{i:08}")), t0)
            .unwrap();
        store
            .set_node_addresses(
                node.id,
                Some(
                    format!("203.0.{}.{}", (i / 250) % 250, i % 250)
                        .parse()
                        .unwrap(),
                ),
                None,
                t0,
            )
            .unwrap();
        store
            .set_node_state(node.id, NodeState::Ready, t0, &why)
            .unwrap();
        if i % 4 == 3 {
            store
                .set_node_state(node.id, NodeState::Used, t0, &why)
                .unwrap();
        }
    }

    let time = |args: &[&str]| -> (f64, f64, usize) {
        let mut runs = Vec::with_capacity(RUNS);
        let mut bytes = 0;
        for _ in 0..RUNS {
            let start = Instant::now();
            let output = Command::new(env!("CARGO_BIN_EXE_nodepool"))
                .arg("-c")
                .arg(&path)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            runs.push(start.elapsed());
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            bytes = output.stdout.len();
        }
        runs.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        (ms(runs[RUNS / 2]), ms(runs[RUNS - 1]), bytes)
    };
    println!(
        "| command ({NODES} nodes, 200 uploads, SQLite) | median | slowest of {RUNS} | output |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for args in [
        &["list"][..],
        &["--json", "list"][..],
        &["list", "--state", "ready"][..],
        &["image-list"][..],
    ] {
        let (median, slowest, bytes) = time(args);
        println!(
            "| `nodepool {}` | {median:.1} ms | {slowest:.1} ms | {:.0} KB |",
            args.join(" "),
            bytes as f64 / 1024.0
        );
    }
}
