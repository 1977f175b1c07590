//! `nodepool image-update` against a running daemon: the request is served, the build's
//! events are followed, and the exit code says how it ended. The daemon runs in this
//! process on the real clock, with a fake cloud that boots and snapshots in seconds; the
//! command is the real binary on the same store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodepool_daemon::{Connector, Daemon, FakeRemote, Options, Remote, SystemClock};
use nodepool_db::{ImageFilter, Store};
use nodepool_model::ImageState;
use nodepool_provider::{FakeConfig, FakeProvider, Provider, ProviderError};

/// Fake clouds that boot in a second and snapshot in two.
#[derive(Debug)]
struct QuickClouds {
    remote: Arc<FakeRemote>,
}

#[async_trait::async_trait]
impl Connector for QuickClouds {
    async fn connect(
        &self,
        provider: &nodepool_config::Provider,
    ) -> Result<(Arc<dyn Provider>, Arc<dyn Remote>), ProviderError> {
        let mut config = FakeConfig::default();
        config.boot_time = Duration::from_secs(1);
        config.snapshot_time = Duration::from_secs(2);
        config.snapshot_task_tail = Duration::ZERO;
        let cloud = FakeProvider::new(provider.name.clone(), Arc::new(SystemClock), config);
        Ok((Arc::new(cloud), self.remote.clone()))
    }
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    crate::nodepool_with(&dir.join("nodepool.yaml"), args)
}

async fn run_async(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let (dir, args): (std::path::PathBuf, Vec<String>) =
        (dir.to_owned(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&dir, &args)
    })
    .await
    .unwrap()
}

fn ready_uploads(store: &Store) -> usize {
    store
        .images(&ImageFilter {
            state: Some(ImageState::Ready),
            ..ImageFilter::default()
        })
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_update_follows_the_build_the_daemon_serves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/prepare.sh"), "#!/bin/sh\ntrue\n").unwrap();
    std::fs::write(
        dir.path().join("nodepool.yaml"),
        format!(
            "script-dir: {dir}/scripts
dburi: sqlite://{dir}/nodepool.sqlite
labels:
  - name: small
    image: base
    min-ready: 0
    providers: [{{name: cloud1}}]
providers:
  - name: cloud1
    driver: fake
    max-servers: 2
    rate: 0.01
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh}}
",
            dir = dir.path().display()
        ),
    )
    .unwrap();

    // Usage errors come before anything is recorded.
    let (code, _, stderr) = run_async(dir.path(), &["image-update", "cloud1", "other"]).await;
    assert_eq!(
        (code, stderr.as_str()),
        (
            2,
            "nodepool: provider cloud1 has no image other in the config\n"
        )
    );
    let (code, _, stderr) = run_async(dir.path(), &["image-update", "cloud9", "base"]).await;
    assert_eq!(
        (code, stderr.as_str()),
        (2, "nodepool: no provider cloud9 in the config\n")
    );

    // No daemon yet: the command says so, and the request stays for the daemon to serve.
    let (code, stdout, stderr) = run_async(
        dir.path(),
        &["image-update", "all", "base", "--daemon-timeout", "2"],
    )
    .await;
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        stderr,
        "nodepool: no nodepoold took build request 1 within 2s: is one running on this store? The request stays recorded and is built when one starts\n"
    );

    let clock = Arc::new(SystemClock);
    let connector = Arc::new(QuickClouds {
        remote: Arc::new(FakeRemote::new()),
    });
    let mut options = Options::new(dir.path().join("nodepool.yaml"));
    options.api = false;
    options.tick = Duration::from_secs(1);
    let daemon = Daemon::start(options, clock, connector).await.unwrap();
    let store = daemon.store().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(
        async {
            let _ = stopped.await;
        },
        Default::default(),
    ));

    // The image is built once because it is missing (and request 1 is served by it).
    let (code, stdout, stderr) = run_async(dir.path(), &["image-update", "cloud1", "base"]).await;
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"build request 2: image base on provider cloud1")
    );
    assert_eq!(lines.last(), Some(&"image base built on provider cloud1"));
    for step in ["created", "template server", "snapshot", "state ready"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!(": {step}"))),
            "the {step} step is shown: {stdout}"
        );
    }
    assert!(ready_uploads(&store) >= 2, "a new upload besides the first");

    let (code, stdout, _) = run_async(
        dir.path(),
        &["--json", "image-update", "all", "base", "--no-wait"],
    )
    .await;
    assert_eq!(code, 0);
    let recorded: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (recorded["request"].as_u64(), recorded["state"].as_str()),
        (Some(3), Some("pending"))
    );

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
