//! The daemon on the fake cloud and a real SQLite store, on tokio's paused clock: hours of
//! daemon life pass in seconds, and every wait is on virtual time. This file holds what the
//! tests share; `pool` fills and keeps pools, `recovery` kills and restarts daemons and runs
//! the periodic jobs, `peers` runs several daemons on one server store, and `logging` reads
//! the daemon's log.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodepool_db::{ImageFilter, NodeFilter, Store};
use nodepool_model::{ImageState, NodeState, ReasonCode, Snapshot, Timestamp};
use tokio::sync::{Notify, oneshot};

use crate::{Connect, Connector, Daemon, FakeRemote, Options, Recorded, TokioClock};

#[path = "../../tests/support/mod.rs"]
mod support;

mod logging;
mod ownership;
mod peers;
mod pool;
mod recovery;

/// 2014-05-13T05:00:00Z.
const T0: Timestamp = Timestamp::from_unix_seconds(1_399_957_200);

/// A config of two fake providers. What disappears from it goes at once (`removal-grace:
/// 0`), unless a test replaces that line.
fn config(dir: &Path, small_min_ready: i32, extra_label: &str) -> String {
    format!(
        "script-dir: scripts
removal-grace: 0
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
