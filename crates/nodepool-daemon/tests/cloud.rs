//! The daemon against the local OpenStack (`cargo xtask cloud up`), on real time: a snapshot
//! image built over SSH, min-ready filled with real Nova servers (their host keys recorded),
//! a used node deleted and replaced, an image rebuilt on request, demand above
//! `max-servers` (the cloud sampled throughout: never more node servers than allowed), then
//! everything retired, with nothing of this run left in the cloud.
//!
//! The fake hypervisor gives servers fixed addresses in 127.10.0.0/16, loopback on this
//! machine, so the sshd this test starts (on a free port, `connection-port`) answers at every
//! node's address and the SSH steps run for real. Without the cloud or sshd the test is
//! skipped on a laptop and fails under `CI=true`.

// Skipping says so on stderr, as the other suites do.
#![allow(clippy::print_stderr)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nodepool_daemon::{Connect, Daemon, FakeRemote, Options, SshRemote, SystemClock};
use nodepool_db::Store;
use nodepool_model::{ImageState, NodeState, ReasonCode, Snapshot};
use nodepool_openstack::OpenStackProvider;
use nodepool_provider::{Clock, ErrorKind, INSTALLATION_KEY, Provider};

/// Deletes what an interrupted run of this test left (its provider name is its own).
async fn clear_leftovers(cloud: &OpenStackProvider) {
    let left = |m: &std::collections::BTreeMap<String, String>| {
        m.get(nodepool_provider::PROVIDER_KEY)
            .is_some_and(|p| p == "daemon-e2e")
    };
    for server in cloud.list_servers().await.unwrap() {
        if left(&server.metadata) {
            let _ = cloud.delete_server(&server.id).await;
        }
    }
    for image in cloud.list_images().await.unwrap() {
        if left(&image.properties) {
            let _ = cloud.delete_image(&image.id).await;
        }
    }
}

fn config(dir: &Path, port: u16, min_ready: i32) -> String {
    format!(
        "script-dir: {dir}/scripts
dburi: sqlite://{dir}/nodepool.sqlite
labels:
  - name: cloudy
    image: base
    min-ready: {min_ready}
    providers: [{{name: daemon-e2e}}]
providers:
{provider}",
        dir = dir.display(),
        provider = support::cloud_provider(
            "daemon-e2e",
            dir,
            port,
            "    max-servers: 3\n    rate: 0.01\n    networks: [{net-label: private}]\n",
        ),
    )
}

async fn snapshot(store: &Store) -> Snapshot {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.snapshot())
        .await
        .unwrap()
        .unwrap()
}

/// Waits (real time: the cloud is real) until `done`, at most `limit`.
async fn until(
    store: &Store,
    limit: Duration,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let step = Duration::from_secs(1);
    let mut waited = Duration::ZERO;
    loop {
        let snapshot = snapshot(store).await;
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

fn ready(snapshot: &Snapshot) -> usize {
    snapshot
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Ready)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_over_ssh_fills_min_ready_on_nova_and_leaves_nothing() {
    let Some(sshd) = support::sshd() else { return };
    let Some(cloud) = support::local_cloud("the daemon's cloud test").await else {
        return;
    };
    clear_leftovers(&cloud).await;
    let cloud = Arc::new(cloud);
    let dir = sshd.dir.path();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    // The setup script leaves a mark where the test can see it: proof it ran over SSH.
    std::fs::write(
        dir.join("scripts/prepare.sh"),
        format!(
            "#!/bin/sh\necho \"prepared $1\" > {}/prepared-$1\n",
            dir.display()
        ),
    )
    .unwrap();
    let path = dir.join("nodepool.yaml");
    std::fs::write(&path, config(dir, sshd.port, 2)).unwrap();
    let clock = Arc::new(SystemClock);
    let connect = Connect::new(
        clock.clone(),
        Arc::new(FakeRemote::new()),
        Arc::new(SshRemote::new()),
    );
    let mut options = Options::new(&path);
    options.api = false;
    options.tick = Duration::from_secs(1);
    options.reload_every = Duration::from_secs(1);
    let daemon = Daemon::start(options, clock, Arc::new(connect))
        .await
        .unwrap();
    let store = daemon.store().clone();
    let installation = store.installation_id().unwrap();
    // The cloud, sampled throughout: the most node servers of this run seen at once.
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let (cloud, most, installation) = (cloud.clone(), most.clone(), installation.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(servers) = cloud.list_servers().await {
                    let nodes = servers
                        .iter()
                        .filter(|s| {
                            s.metadata.get(INSTALLATION_KEY) == Some(&installation.to_string())
                                && s.metadata.contains_key(nodepool_provider::NODE_KEY)
                        })
                        .count();
                    most.fetch_max(nodes, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(
        async {
            let _ = stopped.await;
        },
        Default::default(),
    ));

    let filled = until(
        &store,
        Duration::from_secs(600),
        "image built and 2 nodes ready",
        |s| s.images.iter().any(|i| i.state == ImageState::Ready) && ready(s) == 2,
    )
    .await;
    let image = filled
        .images
        .iter()
        .find(|i| i.state == ImageState::Ready)
        .unwrap();
    let hostname = image.hostname.clone().unwrap();
    let mark = std::fs::read_to_string(dir.join(format!("prepared-{hostname}"))).unwrap();
    assert_eq!(mark, format!("prepared {hostname}\n"));
    // The template is gone; the nodes are real, ACTIVE servers booted from the snapshot.
    let template = image.server_external_id.clone().unwrap();
    assert_eq!(
        cloud.get_server(&template).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    for node in filled.nodes.iter().filter(|n| n.state == NodeState::Ready) {
        let server = cloud
            .get_server(node.external_id.as_ref().unwrap())
            .await
            .unwrap();
        assert_eq!(
            server.image.as_ref(),
            image.external_id.as_ref(),
            "node {}",
            node.id
        );
        assert_eq!(server.metadata[INSTALLATION_KEY], installation.as_str());
        // The host key the node presented is sshd's, as known_hosts would hold it.
        let public = std::fs::read_to_string(dir.join("host.pub")).unwrap();
        let expected: Vec<&str> = public.split_whitespace().take(2).collect();
        assert_eq!(node.host_keys, [expected.join(" ")], "node {}", node.id);
    }

    // A used node is deleted (its server too) and replaced.
    let used = filled
        .nodes
        .iter()
        .find(|n| n.state == NodeState::Ready)
        .unwrap()
        .clone();
    let why = nodepool_model::Reason::new(ReasonCode::Released, "the job finished");
    let (id, s) = (used.id, store.clone());
    tokio::task::spawn_blocking(move || {
        s.set_node_state(id, NodeState::Used, SystemClock.now(), &why)
    })
    .await
    .unwrap()
    .unwrap();
    until(
        &store,
        Duration::from_secs(300),
        "used node deleted and replaced",
        |s| !s.nodes.iter().any(|n| n.id == used.id) && ready(s) == 2,
    )
    .await;
    assert_eq!(
        cloud
            .get_server(used.external_id.as_ref().unwrap())
            .await
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );

    // An operator asks for a rebuild: a second snapshot, and new nodes boot from it.
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.request_image_build(None, &"base".parse().unwrap(), "test", SystemClock.now())
    })
    .await
    .unwrap()
    .unwrap();
    let rebuilt = until(
        &store,
        Duration::from_secs(600),
        "a second image built",
        |s| {
            s.images
                .iter()
                .filter(|i| i.state == ImageState::Ready)
                .count()
                == 2
        },
    )
    .await;
    let newest = rebuilt.images.iter().max_by_key(|i| i.version).unwrap();
    assert_ne!(newest.id, image.id);
    assert!(newest.external_id.is_some());

    // Demand above max-servers (3): six wanted ready; three are launched, never more.
    std::fs::write(&path, config(dir, sshd.port, 6)).unwrap();
    until(
        &store,
        Duration::from_secs(300),
        "max-servers nodes ready",
        |s| ready(s) == 3,
    )
    .await;
    // A while at the limit, with launches wanted all along.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(ready(&snapshot(&store).await), 3);
    sampler.abort();
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= 3, "{most} node servers at once; max-servers is 3");

    // Retire everything: the label disabled (its nodes go), then the images deleted by the
    // operator (before the edit is in force, a missing image would be rebuilt).
    std::fs::write(&path, config(dir, sshd.port, -1)).unwrap();
    until(
        &store,
        Duration::from_secs(300),
        "the disabled label's nodes deleted",
        |s| s.nodes.is_empty(),
    )
    .await;
    let why = nodepool_model::Reason::new(ReasonCode::Operator, "end of the test");
    let uploads: Vec<_> = rebuilt.images.iter().map(|i| i.id).collect();
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        for upload in uploads {
            s.set_image_state(upload, ImageState::Delete, SystemClock.now(), &why)
                .unwrap();
        }
    })
    .await
    .unwrap();
    until(
        &store,
        Duration::from_secs(300),
        "nothing left in the store",
        |s| s.nodes.is_empty() && s.images.is_empty(),
    )
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    let ours = |m: &std::collections::BTreeMap<String, String>| {
        m.get(INSTALLATION_KEY)
            .is_some_and(|i| i == installation.as_str())
    };
    let servers: Vec<_> = cloud
        .list_servers()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| ours(&s.metadata))
        .collect();
    assert!(servers.is_empty(), "servers left: {servers:#?}");
    let images: Vec<_> = cloud
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| ours(&i.properties))
        .collect();
    assert!(images.is_empty(), "images left: {images:#?}");
}
