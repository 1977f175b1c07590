//! The daemon on the fake cloud and a real SQLite store, on tokio's paused clock: hours of
//! daemon life pass in seconds, and every wait is on virtual time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodepool_db::{ImageFilter, NodeFilter, Store};
use nodepool_model::{ImageState, NodeState, Snapshot, Timestamp};
use tokio::sync::{Notify, oneshot};

use crate::{Daemon, FakeRemote, Options, Recorded, TokioClock};

/// 2014-05-13T05:00:00Z.
const T0: Timestamp = Timestamp::from_unix_seconds(1_399_957_200);

fn config(dir: &Path, small_min_ready: i32, extra_label: &str) -> String {
    format!(
        "script-dir: scripts
dburi: sqlite://{db}
labels:
  - name: small
    image: base
    min-ready: {small_min_ready}
    providers: [{{name: cloud1}}, {{name: cloud2}}]
{extra_label}
providers:
  - name: cloud1
    driver: fake
    max-servers: 6
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}}
  - name: cloud2
    driver: fake
    max-servers: 4
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}}
",
        db = dir.join("nodepool.sqlite").display()
    )
}

struct Running {
    store: Store,
    remote: Arc<FakeRemote>,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    reload: Arc<Notify>,
}

async fn start(dir: &Path, text: &str) -> Running {
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("scripts/prepare.sh"), "#!/bin/sh\necho prepared\n").unwrap();
    std::fs::write(dir.join("nodepool.yaml"), text).unwrap();
    let remote = Arc::new(FakeRemote::new());
    let mut options = Options::new(dir.join("nodepool.yaml"));
    options.tick = Duration::from_secs(10);
    let daemon = Daemon::start(
        options,
        Arc::new(TokioClock::starting_at(T0)),
        remote.clone(),
        remote.clone(),
    )
    .await
    .unwrap();
    let store = daemon.store().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let reload = Arc::new(Notify::new());
    let on_reload = reload.clone();
    let done = tokio::spawn(async move {
        daemon
            .run(
                async {
                    let _ = stopped.await;
                },
                on_reload,
            )
            .await
            .unwrap();
    });
    Running {
        store,
        remote,
        stop,
        done,
        reload,
    }
}

impl Running {
    async fn snapshot(&self) -> Snapshot {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.snapshot())
            .await
            .unwrap()
            .unwrap()
    }

    /// Lets virtual time pass, a second at a time, until `done` holds; at most `limit`.
    async fn until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        let mut waited = Duration::ZERO;
        loop {
            let snapshot = self.snapshot().await;
            if done(&snapshot) {
                return snapshot;
            }
            assert!(
                waited < limit,
                "{what}: not after {waited:?}: {snapshot:#?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            waited += Duration::from_secs(1);
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.done.await.unwrap();
    }
}

fn ready(snapshot: &Snapshot, label: &str) -> usize {
    snapshot
        .nodes
        .iter()
        .filter(|n| n.label.as_str() == label && n.state == NodeState::Ready)
        .count()
}

fn ready_images(snapshot: &Snapshot) -> usize {
    snapshot
        .images
        .iter()
        .filter(|i| i.state == ImageState::Ready)
        .count()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn builds_images_then_fills_min_ready() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), &config(dir.path(), 3, "")).await;
    let snapshot = running
        .until(Duration::from_secs(600), "3 ready small nodes", |s| {
            ready_images(s) == 2 && ready(s, "small") == 3
        })
        .await;
    // The images were set up over the (simulated) shell: scripts copied, setup run as root.
    let log = running.remote.log();
    assert!(log.iter().any(
        |r| matches!(r, Recorded::Upload { path, .. } if path == "/opt/nodepool-scripts/prepare.sh")
    ));
    assert!(log.iter().any(|r| matches!(r, Recorded::Run { target, command }
        if target.user == "root" && command.ends_with("./prepare.sh base-1399957200.template.openstack.org"))));
    // Every node was reached as the image's user.
    for node in snapshot
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Ready)
    {
        let ip = node
            .public_ip
            .or(node.private_ip)
            .expect("a ready node has an address");
        // (Both fake clouds hand out the same private range, so an address may repeat.)
        assert!(
            log.iter()
                .any(|r| matches!(r, Recorded::Run { target, command }
                if target.host == ip && target.user == "ci" && command == "echo access okay")),
            "node {} was never reached",
            node.id
        );
        assert!(node.hostname.as_deref().unwrap().starts_with("small-"));
        assert!(node.external_id.is_some());
    }
    // The store keeps the whole story.
    let events = running
        .store
        .events(nodepool_model::Subject::Node(snapshot.nodes[0].id))
        .unwrap();
    let whats: Vec<&str> = events.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(whats.first(), Some(&"created"));
    assert!(
        events.iter().any(|e| e.reason.code == "launched"),
        "{events:#?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn config_edits_apply_live_and_a_broken_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), &config(dir.path(), 2, "")).await;
    running
        .until(Duration::from_secs(600), "2 ready", |s| {
            ready(s, "small") == 2
        })
        .await;
    // Raise min-ready and add a label: applied without a restart.
    let edited = config(
        dir.path(),
        4,
        "  - name: other\n    image: base\n    min-ready: 1\n    providers: [{name: cloud2}]",
    );
    std::fs::write(dir.path().join("nodepool.yaml"), &edited).unwrap();
    running
        .until(Duration::from_secs(600), "4 small + 1 other", |s| {
            ready(s, "small") == 4 && ready(s, "other") == 1
        })
        .await;
    // A broken edit keeps the running config.
    std::fs::write(dir.path().join("nodepool.yaml"), "labels: [oops").unwrap();
    running.reload.notify_one();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let snapshot = running.snapshot().await;
    assert_eq!(
        (ready(&snapshot, "small"), ready(&snapshot, "other")),
        (4, 1)
    );
    // Removing the label deletes its nodes.
    std::fs::write(dir.path().join("nodepool.yaml"), config(dir.path(), 4, "")).unwrap();
    running
        .until(Duration::from_secs(600), "other's node deleted", |s| {
            !s.nodes.iter().any(|n| n.label.as_str() == "other")
        })
        .await;
    running.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failing_setup_script_backs_off_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), &config(dir.path(), 1, "")).await;
    running.remote.fail_commands("./prepare.sh", 3);
    let snapshot = running
        .until(Duration::from_secs(600), "failures recorded", |s| {
            s.failures.len() >= 2 && s.images.iter().all(|i| i.state != ImageState::Building)
        })
        .await;
    assert!(
        snapshot.failures[0]
            .reason
            .contains("setup script prepare.sh exited with 3"),
        "{:?}",
        snapshot.failures
    );
    assert_eq!(ready_images(&snapshot), 0);
    // Failed uploads are deleted (with their template servers) once marked.
    let snapshot = running
        .until(Duration::from_secs(120), "failed uploads deleted", |s| {
            s.images.iter().all(|i| i.state != ImageState::Delete)
        })
        .await;
    assert!(snapshot.nodes.is_empty());
    running.stop().await;
    let store = Store::open(
        &nodepool_config::DbUri::Sqlite(dir.path().join("nodepool.sqlite")),
        "test",
    )
    .unwrap();
    assert!(
        store
            .images(&ImageFilter::default())
            .unwrap()
            .iter()
            .all(|i| i.state != ImageState::Ready)
    );
    assert!(store.nodes(&NodeFilter::default()).unwrap().is_empty());
}
