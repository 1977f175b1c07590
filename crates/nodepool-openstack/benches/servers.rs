//! Driver against a raw HTTP client: `cargo xtask bench cloud` (needs `cargo xtask cloud up`).
//!
//! 20 servers are created at once through the driver, polled every 200 ms until all are
//! ACTIVE (one listing per round, as the daemon does), then deleted and polled until gone.
//! In the same run, `xtask/cloud/smoke.py` (a stdlib-only Python client speaking plain HTTP)
//! does the same with 20 servers. Runs alternate; medians of three are compared.

// A benchmark measures wall time and waits between polls.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodepool_config::{Environment, OpenStackSettings, Project, Secret};
use nodepool_openstack::OpenStackProvider;
use nodepool_provider::{ImageStatus, Provider, ServerSpec, ServerStatus, pick_flavor};

const SERVERS: usize = 20;
const POLL: Duration = Duration::from_millis(200);

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn driver_run(provider: &Arc<OpenStackProvider>) -> (Duration, Duration) {
    let images = provider.list_images().await.unwrap();
    let image = images
        .iter()
        .find(|i| i.name == "base-image" && i.status == ImageStatus::Active)
        .unwrap()
        .id
        .clone();
    let flavors = provider.list_flavors().await.unwrap();
    let flavor = pick_flavor(&flavors, 512, Some("tiny")).unwrap().id.clone();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SERVERS {
        let provider = provider.clone();
        let spec = ServerSpec::new(format!("bench-{i}"), flavor.clone(), image.clone());
        tasks.spawn(async move { provider.create_server(&spec).await.unwrap().id });
    }
    let mut ids = BTreeSet::new();
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.unwrap());
    }
    loop {
        let servers = provider.list_servers().await.unwrap();
        let active = servers
            .iter()
            .filter(|s| ids.contains(&s.id) && s.status == ServerStatus::Active)
            .count();
        assert!(
            !servers
                .iter()
                .any(|s| ids.contains(&s.id) && s.status == ServerStatus::Error),
            "a server went ERROR"
        );
        if active == SERVERS {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let active = start.elapsed();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let provider = provider.clone();
        tasks.spawn(async move { provider.delete_server(&id).await.unwrap() });
    }
    while tasks.join_next().await.is_some() {}
    loop {
        let servers = provider.list_servers().await.unwrap();
        if !servers.iter().any(|s| ids.contains(&s.id)) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    (active, start.elapsed())
}

/// Runs smoke.py and reads its "ACTIVE" and "deleted" timings.
fn smoke_run() -> (Duration, Duration) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/cloud/smoke.py");
    let output = Command::new("python3")
        .arg(script)
        .args([SERVERS.to_string().as_str(), "auto"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("SMOKE OK"),
        "smoke.py failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seconds = |marker: &str| {
        let line = text
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?} in:\n{text}"));
        let value = line
            .split_whitespace()
            .last()
            .unwrap()
            .trim_end_matches('s');
        Duration::from_secs_f64(value.parse().unwrap())
    };
    (seconds("server(s) ACTIVE"), seconds("server(s) deleted"))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut settings = OpenStackSettings::default();
    settings.auth_url = Some("http://127.0.0.1:5000/v3".into());
    settings.username = Some("admin".into());
    settings.password = Some(Secret::new("admin"));
    settings.project = Some(Project::Name("admin".into()));
    settings.region_name = Some("RegionOne".into());
    let provider = match runtime.block_on(OpenStackProvider::connect(
        "local".parse().unwrap(),
        &settings,
        &Environment::default(),
    )) {
        Ok(provider) => Arc::new(provider),
        Err(error) => {
            eprintln!("no local cloud ({error}): run `cargo xtask cloud up` first");
            std::process::exit(1);
        }
    };
    let (mut driver, mut smoke) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        driver.push(runtime.block_on(driver_run(&provider)));
        smoke.push(smoke_run());
    }
    let active = |runs: &[(Duration, Duration)]| median(runs.iter().map(|r| r.0).collect());
    let deleted = |runs: &[(Duration, Duration)]| median(runs.iter().map(|r| r.1).collect());
    println!("| client | {SERVERS} servers ACTIVE | {SERVERS} servers deleted |");
    println!("| --- | --- | --- |");
    println!(
        "| nodepool-openstack | {:.1} s | {:.1} s |",
        active(&driver).as_secs_f64(),
        deleted(&driver).as_secs_f64()
    );
    println!(
        "| smoke.py (raw HTTP) | {:.1} s | {:.1} s |",
        active(&smoke).as_secs_f64(),
        deleted(&smoke).as_secs_f64()
    );
    println!(
        "| ratio | {:.2}× | {:.2}× |",
        active(&driver).as_secs_f64() / active(&smoke).as_secs_f64(),
        deleted(&driver).as_secs_f64() / deleted(&smoke).as_secs_f64()
    );
    for (i, (d, s)) in driver.iter().zip(&smoke).enumerate() {
        eprintln!(
            "run {i}: driver {:.1}/{:.1} s, smoke.py {:.1}/{:.1} s",
            d.0.as_secs_f64(),
            d.1.as_secs_f64(),
            s.0.as_secs_f64(),
            s.1.as_secs_f64()
        );
    }
}
