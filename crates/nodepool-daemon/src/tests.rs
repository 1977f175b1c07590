//! The daemon on the fake cloud and a real SQLite store, on tokio's paused clock: hours of
//! daemon life pass in seconds, and every wait is on virtual time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodepool_db::{ImageFilter, NodeFilter, Store};
use nodepool_model::{ImageState, NodeState, ReasonCode, Snapshot, Timestamp};
use tokio::sync::{Notify, oneshot};

use crate::{Connect, Connector, Daemon, FakeRemote, Options, Recorded, TokioClock};

#[path = "../tests/support/mod.rs"]
mod support;

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
    let remote = Arc::new(FakeRemote::new());
    let clock = Arc::new(TokioClock::starting_at(T0));
    let connect = Arc::new(Connect::new(clock.clone(), remote.clone(), remote.clone()));
    start_with(dir, text, clock, connect, remote).await
}

async fn start_with(
    dir: &Path,
    text: &str,
    clock: Arc<TokioClock>,
    connector: Arc<dyn Connector>,
    remote: Arc<FakeRemote>,
) -> Running {
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("scripts/prepare.sh"), "#!/bin/sh\necho prepared\n").unwrap();
    std::fs::write(dir.join("nodepool.yaml"), text).unwrap();
    let mut options = Options::new(dir.join("nodepool.yaml"));
    options.api = false;
    options.tick = Duration::from_secs(10);
    let daemon = Daemon::start(options, clock, connector).await.unwrap();
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
        self.until_every(Duration::from_secs(1), limit, what, done)
            .await
    }

    /// As [`Running::until`], looking every `step`.
    async fn until_every(
        &self,
        step: Duration,
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
            tokio::time::sleep(step).await;
            waited += step;
        }
    }

    /// Lets virtual time pass until every server and image of the fake clouds `names`
    /// belongs to a row of the store; at most `limit`.
    async fn until_converged(&self, shared: &SharedClouds, names: &[&str], limit: Duration) {
        let mut waited = Duration::ZERO;
        loop {
            let result = converged_on(shared, names, &self.snapshot().await).await;
            if result.is_ok() {
                return;
            }
            assert!(waited < limit, "not converged after {waited:?}: {result:?}");
            tokio::time::sleep(Duration::from_secs(10)).await;
            waited += Duration::from_secs(10);
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
        events.iter().any(|e| e.reason.code == ReasonCode::Launched),
        "{events:#?}"
    );
    running.stop().await;
}

/// A provider image made by diskimage-builder (a 0.3-era file) is neither built nor
/// launched from; the same label keeps filling from the provider that builds by snapshot.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn images_made_by_diskimage_builder_are_skipped_and_the_rest_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = config(dir.path(), 3, "");
    // cloud2's image, the second of the two lines.
    let snapshot_built =
        "{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}";
    let at = text.rfind(snapshot_built).unwrap();
    text.replace_range(
        at..at + snapshot_built.len(),
        "{name: base, diskimage: dib-base, min-ram: 2048, username: ci}",
    );
    text.push_str(
        "diskimages:\n  - {name: dib-base, elements: [ubuntu-minimal, vm], release: 16}\n",
    );
    let running = start(dir.path(), &text).await;
    running
        .until(Duration::from_secs(600), "3 ready small nodes", |s| {
            ready(s, "small") == 3
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let snapshot = running.snapshot().await;
    assert_eq!(ready(&snapshot, "small"), 3);
    assert!(
        snapshot
            .images
            .iter()
            .all(|i| i.provider.as_str() == "cloud1"),
        "{:#?}",
        snapshot.images
    );
    assert!(
        snapshot
            .nodes
            .iter()
            .all(|n| n.provider.as_str() == "cloud1"),
        "{:#?}",
        snapshot.nodes
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

/// Fake clouds that outlive a daemon: a restarted daemon finds what the killed one left.
#[derive(Debug)]
struct SharedClouds {
    clock: Arc<TokioClock>,
    remote: Arc<FakeRemote>,
    clouds:
        std::sync::Mutex<std::collections::BTreeMap<String, Arc<nodepool_provider::FakeProvider>>>,
}

/// Fake clouds that outlive daemons, on a virtual clock starting at `T0`, and the remote
/// that reaches their servers.
fn shared_clouds() -> (Arc<TokioClock>, Arc<FakeRemote>, Arc<SharedClouds>) {
    let clock = Arc::new(TokioClock::starting_at(T0));
    let remote = Arc::new(FakeRemote::new());
    let shared = SharedClouds::new(clock.clone(), remote.clone());
    (clock, remote, shared)
}

impl SharedClouds {
    fn new(clock: Arc<TokioClock>, remote: Arc<FakeRemote>) -> Arc<SharedClouds> {
        Arc::new(SharedClouds {
            clock,
            remote,
            clouds: Default::default(),
        })
    }

    fn cloud(&self, name: &str) -> Arc<nodepool_provider::FakeProvider> {
        self.clouds.lock().unwrap()[name].clone()
    }
}

#[async_trait::async_trait]
impl Connector for SharedClouds {
    async fn connect(
        &self,
        provider: &nodepool_config::Provider,
    ) -> Result<
        (Arc<dyn nodepool_provider::Provider>, Arc<dyn crate::Remote>),
        nodepool_provider::ProviderError,
    > {
        let cloud = self
            .clouds
            .lock()
            .unwrap()
            .entry(provider.name.to_string())
            .or_insert_with(|| {
                let mut config = nodepool_provider::FakeConfig::default();
                // A cloud slow to end its snapshot task: a template deleted before takes the
                // new image with it.
                config.snapshot_task_tail = Duration::from_secs(60);
                Arc::new(nodepool_provider::FakeProvider::new(
                    provider.name.clone(),
                    self.clock.clone(),
                    config,
                ))
            })
            .clone();
        Ok((cloud, self.remote.clone()))
    }
}

/// Every server and image of the fake clouds `names` belongs to a row of the store.
async fn converged_on(
    shared: &SharedClouds,
    names: &[&str],
    snapshot: &Snapshot,
) -> Result<(), String> {
    use nodepool_provider::Provider;
    for &name in names {
        let cloud = shared.cloud(name);
        for server in cloud.list_servers().await.unwrap() {
            let known = snapshot
                .nodes
                .iter()
                .any(|n| n.external_id.as_ref() == Some(&server.id));
            if !known {
                return Err(format!(
                    "{name}: server {} ({}) belongs to no node",
                    server.id, server.name
                ));
            }
        }
        for image in cloud.list_images().await.unwrap() {
            if !image
                .properties
                .contains_key(nodepool_provider::INSTALLATION_KEY)
            {
                continue;
            }
            let known = snapshot
                .images
                .iter()
                .any(|i| i.external_id.as_ref() == Some(&image.id));
            if !known {
                return Err(format!("{name}: image {} belongs to no upload", image.id));
            }
        }
        // And the other way round: every READY upload's image is in the cloud.
        let images = cloud.list_images().await.unwrap();
        for upload in snapshot
            .images
            .iter()
            .filter(|i| i.provider.as_str() == name && i.state == ImageState::Ready)
        {
            let there = images.iter().any(|i| {
                Some(&i.id) == upload.external_id.as_ref()
                    && i.status == nodepool_provider::ImageStatus::Active
            });
            if !there {
                return Err(format!(
                    "{name}: upload {} is READY but its image is not in the cloud",
                    upload.id
                ));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_daemon_killed_mid_launch_and_mid_build_leaves_nothing_behind_once_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    let first = start_with(
        dir.path(),
        &config(dir.path(), 2, ""),
        clock.clone(),
        shared.clone(),
        remote.clone(),
    )
    .await;
    first
        .until(Duration::from_secs(600), "2 ready", |s| {
            ready(s, "small") == 2
        })
        .await;
    // More nodes and a rebuild are wanted; nothing answers SSH, so both hang mid-way.
    remote.refuse_next(usize::MAX);
    let store = first.store.clone();
    tokio::task::spawn_blocking(move || {
        store.request_image_build(None, &"base".parse().unwrap(), "alice", T0)
    })
    .await
    .unwrap()
    .unwrap();
    std::fs::write(dir.path().join("nodepool.yaml"), config(dir.path(), 5, "")).unwrap();
    first
        .until(
            Duration::from_secs(600),
            "launches and builds under way in the cloud",
            |s| {
                s.nodes
                    .iter()
                    .filter(|n| n.state == NodeState::Building && n.external_id.is_some())
                    .count()
                    >= 2
                    && s.images
                        .iter()
                        .any(|i| i.state == ImageState::Building && i.server_external_id.is_some())
            },
        )
        .await;
    // kill -9: the loop and every executor stop where they are.
    first.done.abort();
    let _ = first.done.await;
    drop(first.stop);

    remote.refuse_next(0);
    let second = start_with(
        dir.path(),
        &config(dir.path(), 5, ""),
        clock.clone(),
        shared.clone(),
        remote.clone(),
    )
    .await;
    second
        .until(
            Duration::from_secs(1800),
            "5 ready, nothing half done",
            |s| {
                ready(s, "small") == 5
                    && s.nodes.iter().all(|n| n.state == NodeState::Ready)
                    && s.images.iter().all(|i| i.state == ImageState::Ready)
            },
        )
        .await;
    // Leaks are deleted only after two listings; give the cleanup its rounds.
    second
        .until_converged(&shared, &["cloud1", "cloud2"], Duration::from_secs(600))
        .await;
    second.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn images_are_rebuilt_on_schedule_and_the_third_newest_retired_after_eight_hours() {
    let dir = tempfile::tempdir().unwrap();
    // Rebuild every four hours; one provider.
    let text = config(dir.path(), 1, "")
        .replace("labels:", "cron:\n  image-update: '0 */4 * * *'\nlabels:")
        .replace(
            "providers: [{name: cloud1}, {name: cloud2}]",
            "providers: [{name: cloud1}]",
        );
    let running = start(dir.path(), &text).await;
    let hour = |h: i64| Timestamp::from_unix_seconds(T0.unix_seconds() + h * 3600);
    // v1 at 05:00 (missing), v2 at 08:00, v3 at 12:00; v1 is third-newest from ~12:01 and
    // goes 8 hours after it became READY (~13:01).
    let snapshot = running
        .until_every(
            Duration::from_secs(60),
            Duration::from_secs(10 * 3600),
            "v1 retired",
            |s| {
                let ready: Vec<_> = s
                    .images
                    .iter()
                    .filter(|i| i.provider.as_str() == "cloud1" && i.state == ImageState::Ready)
                    .collect();
                ready.len() == 2
                    && ready.iter().all(|i| i.version >= hour(3))
                    && !s.images.iter().any(|i| i.version < hour(1))
            },
        )
        .await;
    let mut versions: Vec<Timestamp> = snapshot.images.iter().map(|i| i.version).collect();
    versions.sort();
    assert_eq!(
        versions,
        [hour(3), hour(7)],
        "the 08:00 and 12:00 builds stay"
    );
    // An operator deletes the newest: launches fall back to the previous one at once.
    let newest = snapshot.images.iter().max_by_key(|i| i.version).unwrap().id;
    let previous = snapshot.images.iter().min_by_key(|i| i.version).unwrap().id;
    let store = running.store.clone();
    tokio::task::spawn_blocking(move || {
        store.set_image_state(
            newest,
            ImageState::Delete,
            hour(8),
            &nodepool_model::Reason::new(ReasonCode::Operator, "bad image"),
        )
    })
    .await
    .unwrap()
    .unwrap();
    std::fs::write(
        dir.path().join("nodepool.yaml"),
        text.replace("min-ready: 1", "min-ready: 3"),
    )
    .unwrap();
    let snapshot = running
        .until(Duration::from_secs(600), "3 ready", |s| {
            ready(s, "small") == 3
        })
        .await;
    let fresh: Vec<_> = snapshot
        .nodes
        .iter()
        .filter(|n| n.created > hour(8))
        .collect();
    assert_eq!(fresh.len(), 2);
    assert!(
        fresh.iter().all(|n| n.image == Some(previous)),
        "{fresh:#?}"
    );
    assert!(
        !snapshot.images.iter().any(|i| i.id == newest),
        "the deleted image is gone"
    );
    running.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_provider_removed_from_the_config_has_its_nodes_and_images_deleted() {
    use nodepool_provider::Provider;
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    // The images first: launched while only one provider had its image, every node would
    // go there.
    let running = start_with(
        dir.path(),
        &config(dir.path(), 0, ""),
        clock,
        shared.clone(),
        remote,
    )
    .await;
    running
        .until(Duration::from_secs(600), "both images", |s| {
            ready_images(s) == 2
        })
        .await;
    std::fs::write(dir.path().join("nodepool.yaml"), config(dir.path(), 4, "")).unwrap();
    running.reload.notify_one();
    running
        .until(Duration::from_secs(600), "nodes on both providers", |s| {
            ready(s, "small") == 4 && s.nodes.iter().any(|n| n.provider.as_str() == "cloud2")
        })
        .await;
    let only_cloud1 = config(dir.path(), 4, "").replace(
        "providers: [{name: cloud1}, {name: cloud2}]",
        "providers: [{name: cloud1}]",
    );
    let i = only_cloud1.find("  - name: cloud2").unwrap();
    std::fs::write(dir.path().join("nodepool.yaml"), &only_cloud1[..i]).unwrap();
    let snapshot = running
        .until(
            Duration::from_secs(600),
            "cloud2 emptied, cloud1 refilled",
            |s| {
                !s.nodes.iter().any(|n| n.provider.as_str() == "cloud2")
                    && !s.images.iter().any(|i| i.provider.as_str() == "cloud2")
                    && ready(s, "small") == 4
            },
        )
        .await;
    assert!(
        snapshot
            .nodes
            .iter()
            .all(|n| n.provider.as_str() == "cloud1")
    );
    let cloud2 = shared.cloud("cloud2");
    assert!(
        cloud2.list_servers().await.unwrap().is_empty(),
        "servers left on cloud2"
    );
    assert!(
        !cloud2.list_images().await.unwrap().iter().any(|i| i
            .properties
            .contains_key(nodepool_provider::INSTALLATION_KEY)),
        "images left on cloud2"
    );
    running.stop().await;
}

/// `config` with cloud1 only: the fake clouds number their addresses alike, and the shared
/// fake remote knows servers by address.
fn one_cloud(dir: &Path, min_ready: i32) -> String {
    let text = config(dir, min_ready, "").replace(
        "providers: [{name: cloud1}, {name: cloud2}]",
        "providers: [{name: cloud1}]",
    );
    let i = text.find("  - name: cloud2").unwrap();
    text[..i].to_owned()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn host_keys_are_recorded_and_the_check_deletes_dead_and_changed_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(FakeRemote::new());
    remote.answer("prepare.sh", 0, "installing packages\nprepared\n");
    let clock = Arc::new(TokioClock::starting_at(T0));
    let connect = Arc::new(Connect::new(clock.clone(), remote.clone(), remote.clone()));
    let running = start_with(
        dir.path(),
        &one_cloud(dir.path(), 3),
        clock,
        connect,
        remote.clone(),
    )
    .await;
    let snapshot = running
        .until(Duration::from_secs(600), "3 ready", |s| {
            ready(s, "small") == 3
        })
        .await;
    // The setup script's output is in the image's event log.
    let store = running.store.clone();
    let image = snapshot.images[0].id;
    let events =
        tokio::task::spawn_blocking(move || store.events(nodepool_model::Subject::Image(image)))
            .await
            .unwrap()
            .unwrap();
    let setup = events
        .iter()
        .find(|e| e.what == "setup prepare.sh exited with 0")
        .expect("a setup event");
    assert_eq!(setup.reason.text, "installing packages\nprepared\n");
    // Each node has the host key its server presented.
    for node in &snapshot.nodes {
        let host = node.public_ip.or(node.private_ip).unwrap();
        assert_eq!(node.host_keys, [remote.host_key(host)], "{node:#?}");
    }
    // One node dies, another is replaced behind our back; the third is fine.
    let (dead, changed, fine) = (&snapshot.nodes[0], &snapshot.nodes[1], &snapshot.nodes[2]);
    let address = |n: &nodepool_model::Node| n.public_ip.or(n.private_ip).unwrap();
    remote.unplug(address(dead));
    remote.set_host_key(address(changed), "ssh-ed25519 AAAAsomeoneelse");
    // `check` fires at 05:15 by default; the dead node gets its minute to answer.
    let snapshot = running
        .until_every(
            Duration::from_secs(10),
            Duration::from_secs(1800),
            "the two bad nodes replaced",
            |s| {
                ready(s, "small") == 3
                    && !s
                        .nodes
                        .iter()
                        .any(|n| n.id == dead.id || n.id == changed.id)
            },
        )
        .await;
    assert!(snapshot.nodes.iter().any(|n| n.id == fine.id));
    for (node, code) in [
        (dead.id, ReasonCode::CheckFailed),
        (changed.id, ReasonCode::HostKeyChanged),
    ] {
        let store = running.store.clone();
        let events =
            tokio::task::spawn_blocking(move || store.events(nodepool_model::Subject::Node(node)))
                .await
                .unwrap()
                .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.what == "state delete" && e.reason.code == code),
            "{node}: {events:#?}"
        );
    }
    running.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_cleanup_job_deletes_snapshots_and_floating_ips_whose_rows_are_gone() {
    use nodepool_provider::{Owner, Provider, ServerSpec, Tags};
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    let running = start_with(
        dir.path(),
        &one_cloud(dir.path(), 1),
        clock,
        shared.clone(),
        remote,
    )
    .await;
    running
        .until(Duration::from_secs(600), "1 ready", |s| {
            ready(s, "small") == 1
        })
        .await;
    // What a daemon killed at the wrong moment would leave: a server, its snapshot and a
    // floating IP, tagged for a node and an upload the store does not have.
    let store = running.store.clone();
    let installation = tokio::task::spawn_blocking(move || store.installation_id())
        .await
        .unwrap()
        .unwrap();
    let cloud = shared.cloud("cloud1");
    let tags = |owner| {
        Tags {
            installation: installation.clone(),
            provider: "cloud1".parse().unwrap(),
            owner,
        }
        .to_metadata()
    };
    let base = cloud
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.name == "Ubuntu 22.04")
        .unwrap()
        .id;
    let mut spec = ServerSpec::new("lost", "2", base.clone());
    spec.metadata = tags(Owner::Node(nodepool_model::NodeId::new(900)));
    let server = cloud.create_server(&spec).await.unwrap();
    while cloud.get_server(&server.id).await.unwrap().status
        != nodepool_provider::ServerStatus::Active
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ip = cloud
        .create_floating_ip(
            &server.id,
            "public",
            &tags(Owner::Node(nodepool_model::NodeId::new(900))),
        )
        .await
        .unwrap();
    // Snapshots of the ready node's server (the daemon keeps it): one tagged for an upload
    // the store does not have, one of someone else's.
    let node = running.snapshot().await.nodes[0]
        .external_id
        .clone()
        .unwrap();
    let snapshot_of_node = |name: &'static str, metadata| {
        let cloud = cloud.clone();
        let node = node.clone();
        async move {
            let image = cloud.create_image(&node, name, &metadata).await.unwrap();
            while cloud.get_server(&node).await.unwrap().task.is_some() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            image
        }
    };
    let image = snapshot_of_node(
        "lost-snapshot",
        tags(Owner::Image(nodepool_model::ImageId::new(901))),
    )
    .await;
    let foreign = snapshot_of_node("not-ours", Default::default()).await;
    let mut gone = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let images = cloud.list_images().await.unwrap();
        let ips = cloud.list_floating_ips().await.unwrap();
        let servers = cloud.list_servers().await.unwrap();
        if !images.iter().any(|i| i.id == image)
            && !ips.iter().any(|i| i.id == ip.id)
            && !servers.iter().any(|s| s.id == server.id)
        {
            assert!(
                images.iter().any(|i| i.id == foreign),
                "the foreign image stays"
            );
            gone = true;
            break;
        }
    }
    assert!(gone, "the leaks are still there after 5 minutes");
    assert_eq!(running.snapshot().await.nodes.len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_daemon_killed_while_a_snapshot_is_taken_leaves_nothing_behind_once_restarted() {
    use nodepool_provider::{ImageStatus, Provider};
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    let text = one_cloud(dir.path(), 1);
    let first = start_with(
        dir.path(),
        &text,
        clock.clone(),
        shared.clone(),
        remote.clone(),
    )
    .await;
    // The first build's snapshot exists in the cloud and is not active yet: the store does
    // not know its id.
    let mut taken = None;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cloud = shared.clouds.lock().unwrap().get("cloud1").cloned();
        if let Some(cloud) = cloud {
            let images = cloud.list_images().await.unwrap();
            taken = images.into_iter().find(|i| {
                i.properties
                    .contains_key(nodepool_provider::INSTALLATION_KEY)
                    && i.status != ImageStatus::Active
            });
        }
        if taken.is_some() {
            break;
        }
    }
    let taken = taken.expect("a snapshot under way");
    assert!(
        first
            .snapshot()
            .await
            .images
            .iter()
            .all(|i| i.external_id.is_none())
    );
    // kill -9.
    first.done.abort();
    let _ = first.done.await;
    drop(first.stop);

    let second = start_with(dir.path(), &text, clock, shared.clone(), remote).await;
    let snapshot = second
        .until(Duration::from_secs(1800), "rebuilt and filled", |s| {
            ready(s, "small") == 1 && s.images.iter().all(|i| i.state == ImageState::Ready)
        })
        .await;
    assert!(
        snapshot
            .images
            .iter()
            .all(|i| i.external_id.as_ref() != Some(&taken.id))
    );
    // The interrupted build's snapshot goes with the next cleanup (every minute).
    second
        .until_converged(&shared, &["cloud1"], Duration::from_secs(300))
        .await;
    second.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn between_full_listings_only_the_changes_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    let running = start_with(
        dir.path(),
        &one_cloud(dir.path(), 4),
        clock.clone(),
        shared.clone(),
        remote,
    )
    .await;
    use nodepool_provider::Clock as _;
    running
        .until(Duration::from_secs(600), "4 ready", |s| {
            ready(s, "small") == 4
        })
        .await;
    let cloud = shared.cloud("cloud1");
    let listings = || {
        (
            cloud.calls(nodepool_provider::op::LIST_SERVERS),
            cloud.calls(nodepool_provider::op::LIST_SERVERS_CHANGED),
        )
    };
    let (started, before) = (clock.now(), listings());
    // A node deleted: the daemon sees its server gone in a listing of changes (the fake
    // shows a deleted server there, as Nova does) and removes the row; a new node replaces it.
    let snapshot = running.snapshot().await;
    let victim = snapshot
        .nodes
        .iter()
        .find(|n| n.state == NodeState::Ready)
        .unwrap()
        .clone();
    let store = running.store.clone();
    let now = clock.now();
    tokio::task::spawn_blocking(move || {
        let why = nodepool_model::Reason::new(ReasonCode::OperatorDelete, "deleted by the test");
        store.set_node_state(victim.id, NodeState::Delete, now, &why)
    })
    .await
    .unwrap()
    .unwrap();
    running
        .until(
            Duration::from_secs(600),
            "the node gone and replaced",
            |s| !s.nodes.iter().any(|n| n.id == victim.id) && ready(s, "small") == 4,
        )
        .await;
    let after = listings();
    running
        .until_converged(&shared, &["cloud1"], Duration::from_secs(120))
        .await;
    let (all, changes) = (after.0 - before.0, after.1 - before.1);
    // Full listings at most one per tick (10 s here); the changes in between, every second
    // while executors wait on servers.
    let ticks = clock.now().saturating_since(started).as_secs() / 10;
    assert!(all <= ticks + 1, "{all} full listings in {ticks} ticks");
    assert!(
        changes > all,
        "{changes} listings of changes, {all} full ones"
    );
    running.stop().await;
}

/// `config` with its store moved to `uri`.
fn on_store(text: &str, dir: &Path, uri: &str) -> String {
    text.replace(
        &format!("dburi: sqlite://{}", dir.join("nodepool.sqlite").display()),
        &format!("dburi: {uri}"),
    )
}

/// How many node servers (template servers of image builds aside) a fake cloud holds now.
async fn servers_in(shared: &SharedClouds, name: &str) -> usize {
    use nodepool_provider::Provider;
    shared
        .cloud(name)
        .list_servers()
        .await
        .unwrap()
        .iter()
        .filter(|s| s.metadata.contains_key(nodepool_provider::NODE_KEY))
        .count()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn three_daemons_on_one_postgresql_fill_min_ready_once_within_max_servers() {
    let Some(db) = support::ServerDb::postgres("three_fill") else {
        return;
    };
    three_daemons_fill_min_ready_once_within_max_servers(&db.uri()).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn three_daemons_on_one_mariadb_fill_min_ready_once_within_max_servers() {
    let Some(db) = support::ServerDb::mariadb("three_fill") else {
        return;
    };
    three_daemons_fill_min_ready_once_within_max_servers(&db.uri()).await;
}

/// Three daemons on one store (`uri`) sharing two fake clouds.
async fn three_daemons_fill_min_ready_once_within_max_servers(uri: &str) {
    let (clock, remote, shared) = shared_clouds();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut daemons = Vec::new();
    for dir in &dirs {
        let text = on_store(&config(dir.path(), 8, ""), dir.path(), uri);
        daemons.push(
            start_with(
                dir.path(),
                &text,
                clock.clone(),
                shared.clone(),
                remote.clone(),
            )
            .await,
        );
    }
    // Sampled at every step: never more node servers than max-servers.
    let mut waited = Duration::ZERO;
    loop {
        let (one, two) = (
            servers_in(&shared, "cloud1").await,
            servers_in(&shared, "cloud2").await,
        );
        assert!(
            one <= 6 && two <= 4,
            "max-servers exceeded: cloud1 {one}, cloud2 {two}"
        );
        let snapshot = daemons[0].snapshot().await;
        if ready(&snapshot, "small") == 8 {
            break;
        }
        assert!(
            waited < Duration::from_secs(1800),
            "not filled: {snapshot:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
    }
    // Let the daemons run on: nothing more is launched or built, and the cleanup job
    // (every minute) lists each cloud once a minute, not once per daemon.
    let listed = || {
        shared
            .cloud("cloud1")
            .calls(nodepool_provider::op::LIST_FLOATING_IPS)
    };
    // (After a minute: the last template servers' deletions list floating IPs too.)
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = listed();
    tokio::time::sleep(Duration::from_secs(180)).await;
    let cleanups = listed() - before;
    assert!(
        (2..=4).contains(&cleanups),
        "{cleanups} cleanup listings of cloud1 in 3 minutes: one daemon runs the periodic jobs"
    );
    let snapshot = daemons[0].snapshot().await;
    assert_eq!(snapshot.nodes.len(), 8, "{:#?}", snapshot.nodes);
    assert!(
        snapshot.nodes.iter().all(|n| n.id.get() <= 8),
        "each node was recorded once: no launch was planned twice"
    );
    assert_eq!(ready_images(&snapshot), 2);
    assert!(
        snapshot.images.iter().all(|i| i.id.get() <= 2),
        "one build per provider"
    );
    // Each daemon did part of the work.
    let store = daemons[0].store.clone();
    let actors: std::collections::BTreeSet<String> = tokio::task::spawn_blocking(move || {
        (1..=8u64)
            .map(|id| {
                store
                    .events(nodepool_model::Subject::Node(nodepool_model::NodeId::new(
                        id,
                    )))
                    .unwrap()[0]
                    .actor
                    .clone()
            })
            .collect()
    })
    .await
    .unwrap();
    assert!(actors.len() >= 2, "the launches were shared: {actors:?}");
    for daemon in daemons {
        daemon.stop().await;
    }
    let store = Store::open(&nodepool_config::DbUri::parse(uri, None).unwrap(), "test").unwrap();
    assert!(
        store.daemons().unwrap().is_empty(),
        "each daemon ended its lease"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_daemon_killed_mid_launch_and_mid_build_has_its_work_finished_by_another() {
    let Some(db) = support::ServerDb::postgres("takeover") else {
        return;
    };
    work_of_a_killed_daemon_is_finished_by_another(&db.uri()).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn on_mariadb_a_daemon_killed_mid_launch_and_mid_build_has_its_work_finished_by_another() {
    let Some(db) = support::ServerDb::mariadb("takeover") else {
        return;
    };
    work_of_a_killed_daemon_is_finished_by_another(&db.uri()).await;
}

/// Two daemons on one store (`uri`): the first is killed with work under way.
async fn work_of_a_killed_daemon_is_finished_by_another(uri: &str) {
    let (clock, remote, shared) = shared_clouds();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let text = |dir: &Path, min_ready| on_store(&config(dir, min_ready, ""), dir, uri);
    let first = start_with(
        dir_a.path(),
        &text(dir_a.path(), 2),
        clock.clone(),
        shared.clone(),
        remote.clone(),
    )
    .await;
    first
        .until(Duration::from_secs(600), "2 ready", |s| {
            ready(s, "small") == 2
        })
        .await;
    // More nodes and a rebuild are wanted; nothing answers SSH, so both hang mid-way.
    remote.refuse_next(usize::MAX);
    let store = first.store.clone();
    tokio::task::spawn_blocking(move || {
        store.request_image_build(None, &"base".parse().unwrap(), "alice", T0)
    })
    .await
    .unwrap()
    .unwrap();
    std::fs::write(dir_a.path().join("nodepool.yaml"), text(dir_a.path(), 5)).unwrap();
    first
        .until(
            Duration::from_secs(600),
            "launches and builds under way",
            |s| {
                s.nodes
                    .iter()
                    .filter(|n| n.state == NodeState::Building && n.external_id.is_some())
                    .count()
                    >= 2
                    && s.images
                        .iter()
                        .any(|i| i.state == ImageState::Building && i.server_external_id.is_some())
            },
        )
        .await;
    // A second daemon joins, then the first is killed (kill -9: no goodbye, its lease
    // just stops being renewed).
    let second = start_with(
        dir_b.path(),
        &text(dir_b.path(), 5),
        clock.clone(),
        shared.clone(),
        remote.clone(),
    )
    .await;
    first.done.abort();
    let _ = first.done.await;
    drop(first.stop);
    remote.refuse_next(0);
    second
        .until(
            Duration::from_secs(1800),
            "5 ready, nothing half done",
            |s| {
                ready(s, "small") == 5
                    && s.nodes.iter().all(|n| n.state == NodeState::Ready)
                    && s.images.iter().all(|i| i.state == ImageState::Ready)
            },
        )
        .await;
    second
        .until_converged(&shared, &["cloud1", "cloud2"], Duration::from_secs(600))
        .await;
    second.stop().await;
}

/// A connector that cannot connect the providers named in `failing`.
#[derive(Debug)]
struct Flaky {
    inner: Connect,
    failing: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[async_trait::async_trait]
impl Connector for Flaky {
    async fn connect(
        &self,
        provider: &nodepool_config::Provider,
    ) -> Result<
        (Arc<dyn nodepool_provider::Provider>, Arc<dyn crate::Remote>),
        nodepool_provider::ProviderError,
    > {
        if self
            .failing
            .lock()
            .unwrap()
            .contains(provider.name.as_str())
        {
            return Err(nodepool_provider::ProviderError::new(
                nodepool_provider::ErrorKind::Transient,
                "connect",
                provider.name.as_str(),
                "connection refused",
            ));
        }
        self.inner.connect(provider).await
    }
}

/// The daemon's log, as a subscriber writes it.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

/// Conditions that last are logged once while they do, and again only once they have ended
/// and returned: an image made by diskimage-builder, an image or label waiting for a flavor,
/// a provider that cannot be connected.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lasting_conditions_are_logged_once_while_they_last() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let text = |dib: bool, big_ram: u64, huge: i32, far: bool| {
        let mut text = format!(
            "script-dir: scripts
dburi: sqlite://{db}
labels:
  - {{name: small, image: base, min-ready: 1, providers: [{{name: cloud1}}]}}
  - {{name: huge, image: big, min-ready: {huge}, providers: [{{name: cloud1}}]}}
",
            db = dir.path().join("nodepool.sqlite").display()
        );
        if dib {
            text.push_str(
                "  - {name: dibbed, image: dib, min-ready: 1, providers: [{name: cloud1}]}\n",
            );
        }
        if far {
            text.push_str(
                "  - {name: far, image: base, min-ready: 1, providers: [{name: cloud3}]}\n",
            );
        }
        text.push_str(&format!(
            "providers:
  - name: cloud1
    driver: fake
    max-servers: 6
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}}
      - {{name: big, base-image: Ubuntu 22.04, min-ram: {big_ram}, setup: prepare.sh, username: ci}}
"
        ));
        if dib {
            text.push_str(
                "      - {name: dib, diskimage: dib-base, min-ram: 2048, username: ci}\n",
            );
        }
        if far {
            text.push_str(
                "  - name: cloud3
    driver: fake
    max-servers: 2
    images:
      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}
",
            );
        }
        text.push_str("diskimages:\n  - {name: dib-base, elements: [ubuntu-minimal]}\n");
        text
    };
    const TOO_BIG: u64 = 4_000_000;
    let remote = Arc::new(FakeRemote::new());
    let clock = Arc::new(TokioClock::starting_at(T0));
    let flaky = Arc::new(Flaky {
        inner: Connect::new(clock.clone(), remote.clone(), remote.clone()),
        failing: std::sync::Mutex::new(["cloud3".to_owned()].into()),
    });
    let running = start_with(
        dir.path(),
        &text(true, TOO_BIG, 1, true),
        clock,
        flaky.clone(),
        remote,
    )
    .await;
    let counts = |log: &Log| {
        [
            log.count("is made by diskimage-builder"),
            log.count("no flavor with 4000000 MB"),
            log.count("cannot connect"),
        ]
    };
    let edit = |text: String| {
        std::fs::write(dir.path().join("nodepool.yaml"), text).unwrap();
        running.reload.notify_one();
    };

    // Ten minutes with every cause in place: each said once (about 60 rounds and 10
    // connection attempts).
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(counts(&log), [1, 1, 1], "all said once");

    // Each cause ends: no diskimage-builder image, a flavor that fits, cloud3 reachable.
    // (The edit makes the provider's flavors be listed again: until they are, the image
    // waits with another sentence, a condition of its own.)
    flaky.failing.lock().unwrap().clear();
    edit(text(false, 2048, 1, true));
    running
        .until(
            Duration::from_secs(600),
            "cloud3 and the big image in use",
            |s| ready(s, "far") == 1 && ready(s, "huge") == 1,
        )
        .await;
    // cloud3 leaves the config, so that it is connected anew when it comes back.
    edit(text(false, 2048, 1, false));
    running
        .until(Duration::from_secs(600), "cloud3's node gone", |s| {
            ready(s, "far") == 0
        })
        .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        counts(&log),
        [1, 1, 1],
        "nothing said again while the causes are gone"
    );

    // Each cause returns: said once more, and only once over the next ten minutes.
    flaky.failing.lock().unwrap().insert("cloud3".to_owned());
    edit(text(true, TOO_BIG, 2, true));
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(counts(&log), [2, 2, 2], "each said again once it returned");
    running.stop().await;
}
