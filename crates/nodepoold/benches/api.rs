//! API benchmark: `cargo xtask bench api` (or `cargo bench -p nodepoold --bench api`).
//!
//! The real `nodepoold` on the fake cloud (two providers, `min-ready: 200`), once on SQLite
//! and once on PostgreSQL (a database made for the run; skipped without a server). Once the
//! pool is full:
//! - latency: 200 requests for one node, one after another, each timed from the POST to
//!   the answer of a long-polling GET that shows it fulfilled (from ready nodes); p50, p99.
//! - throughput: 100 clients at once, each asking for one node and waiting for it; the
//!   requests fulfilled per second of wall time.
//!
//! Prints a Markdown table for docs/benchmarks.md. `NODEPOOLD=/path/to/nodepoold` measures
//! another build of the daemon (an older version, side by side with this one).

// A benchmark measures wall time; it reports on stdout.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)]

#[path = "../../nodepool-daemon/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const POOL: usize = 200;
const SEQUENTIAL: usize = 200;
const CLIENTS: usize = 100;

fn config(dir: &Path, dburi: &str) -> String {
    let provider = |name: &str| {
        format!(
            "  - name: {name}\n    driver: fake\n    max-servers: {POOL}\n    rate: 0.001\n    images:\n      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}\n"
        )
    };
    format!(
        "dburi: {dburi}
api:
  listen: 127.0.0.1:0
  rate: 1000000
labels:
  - name: small
    image: base
    min-ready: {POOL}
    providers: [{{name: east}}, {{name: west}}]
providers:
{}{}",
        provider("east"),
        provider("west"),
    )
    .replace("{dir}", &dir.display().to_string())
}

/// Starts nodepoold (this build's, or the binary `NODEPOOLD` names, to compare another
/// version side by side) and returns it with its API's base URL.
fn start(config: &Path) -> (Child, String) {
    let binary =
        std::env::var_os("NODEPOOLD").unwrap_or_else(|| env!("CARGO_BIN_EXE_nodepoold").into());
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nodepoold starts");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in stderr.lines().map_while(Result::ok) {
            if !sent && let Some((_, url)) = line.split_once("API listening on ") {
                let _ = tx.send(url.split_whitespace().next().unwrap().to_owned());
                sent = true;
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the API listens");
    (child, base)
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Asks for one node and waits for it; returns the node's id.
async fn one_node(client: &reqwest::Client, base: &str, who: &str) -> u64 {
    let created = call(
        client,
        reqwest::Method::POST,
        format!("{base}/v1/requests"),
        Some(json!({"labels": ["small"], "requestor": who})),
    )
    .await;
    let id = created["id"].as_u64().unwrap();
    loop {
        let got = call(
            client,
            reqwest::Method::GET,
            format!("{base}/v1/requests/{id}?wait=30"),
            None,
        )
        .await;
        match got["state"].as_str().unwrap() {
            "fulfilled" => return got["node_ids"][0].as_u64().unwrap(),
            "requested" => continue,
            other => panic!("request {id} {other}: {got}"),
        }
    }
}

async fn ready(client: &reqwest::Client, base: &str, at_least: usize) {
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let nodes = call(
            client,
            reqwest::Method::GET,
            format!("{base}/v1/nodes?state=ready"),
            None,
        )
        .await;
        if nodes.as_array().unwrap().len() >= at_least {
            return;
        }
        assert!(Instant::now() < end, "the pool did not fill");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// (p50, p99, requests per second).
fn measure(dburi: &str, dir: &Path) -> (Duration, Duration, f64) {
    let path = dir.join("nodepool.yaml");
    std::fs::write(&path, config(dir, dburi)).unwrap();
    let (mut child, base) = start(&path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        ready(&client, &base, POOL).await;
        let mut latencies = Vec::with_capacity(SEQUENTIAL);
        for _ in 0..SEQUENTIAL {
            let start = Instant::now();
            let node = one_node(&client, &base, "bench").await;
            latencies.push(start.elapsed());
            call(
                &client,
                reqwest::Method::POST,
                format!("{base}/v1/nodes/{node}/release"),
                None,
            )
            .await;
        }
        latencies.sort();
        ready(&client, &base, CLIENTS).await;
        let start = Instant::now();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(
                    async move { one_node(&client, &base, &format!("ci-{}", i % 10)).await },
                )
            })
            .collect();
        let mut nodes = std::collections::BTreeSet::new();
        for task in tasks {
            assert!(nodes.insert(task.await.unwrap()), "a node served twice");
        }
        let rate = CLIENTS as f64 / start.elapsed().as_secs_f64();
        (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            rate,
        )
    });
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result
}

fn main() {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}/nodepool.sqlite", dir.path().display());
    rows.push(("SQLite", measure(&sqlite, dir.path())));
    if let Some(db) = support::ServerDb::postgres("bench_api") {
        let dir = tempfile::tempdir().unwrap();
        rows.push(("PostgreSQL", measure(&db.uri(), dir.path())));
    }
    println!(
        "\n| store | request → fulfilled from ready, p50 | p99 | {CLIENTS} clients at once: requests fulfilled/s |"
    );
    println!("|---|---|---|---|");
    for (store, (p50, p99, rate)) in rows {
        println!(
            "| {store} | {:.1} ms | {:.1} ms | {rate:.0} |",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
}
