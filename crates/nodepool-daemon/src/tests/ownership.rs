//! Two providers of one installation on one project, beside what is not theirs: another
//! installation's server, image and floating IP, an untagged server, and someone's snapshot
//! of a held node. Ten cleanup rounds and a provider renamed: nothing that is not ours is
//! deleted, and neither provider deletes the other's.

use std::collections::BTreeMap;

use nodepool_model::{ExternalId, HoldNote, InstallationId, NodeId};
use nodepool_provider::{FakeConfig, FakeProvider, Owner, Provider, Tags};

use super::*;

/// The ids of every image, server and floating IP in `cloud`.
async fn in_the_cloud(cloud: &FakeProvider) -> (Vec<ExternalId>, Vec<ExternalId>, Vec<ExternalId>) {
    let images = cloud.list_images().await.unwrap();
    let servers = cloud.list_servers().await.unwrap();
    let ips = cloud.list_floating_ips().await.unwrap();
    (
        images.into_iter().map(|i| i.id).collect(),
        servers.into_iter().map(|s| s.id).collect(),
        ips.into_iter().map(|i| i.id).collect(),
    )
}

fn config(dir: &Path, west: &str) -> String {
    format!(
        "script-dir: scripts
removal-grace: 60
dburi: sqlite://{db}
cron:
  cleanup: '* * * * *'
labels:
  - name: small
    image: base
    min-ready: 2
    providers: [{{name: east}}, {{name: {west}}}]
providers:
  - name: east
    driver: fake
    max-servers: 2
    pool: public
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}}
  - name: {west}
    driver: fake
    max-servers: 2
    pool: public
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}}
",
        db = dir.join("nodepool.sqlite").display()
    )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cleanup_deletes_only_what_is_ours_and_never_a_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    // One project for east, west and (after the rename) west2.
    let project = Arc::new(FakeProvider::new(
        "project".parse().unwrap(),
        clock.clone(),
        FakeConfig::default(),
    ));
    for name in ["east", "west", "west2"] {
        shared
            .clouds
            .lock()
            .unwrap()
            .insert(name.into(), project.clone());
    }
    // What is not ours, there before the daemon: another installation's server with a
    // floating IP and a snapshot, and a server nobody tagged.
    let base = project.image_id("Ubuntu 22.04").unwrap();
    let theirs = Tags {
        installation: InstallationId::new("another-installation"),
        provider: "east".parse().unwrap(),
        owner: Owner::Node(NodeId::new(1)),
    }
    .to_metadata();
    let mut spec = nodepool_provider::ServerSpec::new("theirs", "2", base.clone());
    spec.metadata = theirs.clone();
    let their_server = project.create_server(&spec).await.unwrap().id;
    let untagged = project
        .create_server(&nodepool_provider::ServerSpec::new("someones", "2", base))
        .await
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let their_ip = project
        .create_floating_ip(&their_server, "public", &theirs)
        .await
        .unwrap()
        .id;
    let their_image = project
        .create_image(&their_server, "their-snapshot", &theirs)
        .await
        .unwrap();

    let daemon_clock = clock.clone();
    let running = start_with(
        dir.path(),
        &config(dir.path(), "west"),
        clock,
        shared.clone(),
        remote,
    )
    .await;
    let filled = running
        .until(Duration::from_secs(1800), "both providers' pools", |s| {
            ready_images(s) == 2
                && ["east", "west"].iter().all(|p| {
                    s.nodes
                        .iter()
                        .any(|n| n.provider.as_str() == *p && n.state == NodeState::Ready)
                })
        })
        .await;
    // Someone holds a node of west and snapshots it: the cloud copies the tags of the
    // node's image (west's upload) into the snapshot.
    let held = filled
        .nodes
        .iter()
        .find(|n| n.provider.as_str() == "west" && n.state == NodeState::Ready)
        .unwrap()
        .clone();
    let store = running.store.clone();
    let note = HoldNote {
        reason: "a failure to look at".into(),
        by: "alice".into(),
    };
    let now = nodepool_provider::Clock::now(daemon_clock.as_ref());
    tokio::task::spawn_blocking(move || {
        store.hold_node(held.id, &note, now, nodepool_db::Acting::Anyone)
    })
    .await
    .unwrap()
    .unwrap();
    let users_snapshot = project
        .create_image(
            held.external_id.as_ref().unwrap(),
            "alice-debugging",
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    let inherited = project.get_image(&users_snapshot).await.unwrap().properties;
    assert!(
        inherited.contains_key(nodepool_provider::IMAGE_KEY),
        "the snapshot carries our tags: {inherited:?}"
    );
    let east_before: Vec<ExternalId> = filled
        .nodes
        .iter()
        .filter(|n| n.provider.as_str() == "east")
        .filter_map(|n| n.external_id.clone())
        .collect();

    // Ten cleanup rounds, then west renamed west2: west's uploads go after the grace (its
    // image's row with them), the held node stays.
    tokio::time::sleep(Duration::from_secs(600)).await;
    // Every node of both providers still has its floating IP: neither provider's cleanup
    // took the other's for a leak.
    let ips = project.list_floating_ips().await.unwrap();
    let state = running.snapshot().await;
    for node in state.nodes.iter().filter(|n| n.state == NodeState::Ready) {
        assert!(
            ips.iter().any(|ip| ip.server == node.external_id),
            "node {} of {} lost its floating IP",
            node.id,
            node.provider
        );
    }
    std::fs::write(
        dir.path().join("nodepool.yaml"),
        config(dir.path(), "west2"),
    )
    .unwrap();
    running.reload.notify_one();
    let after = running
        .until(Duration::from_secs(1800), "west's uploads gone", |s| {
            !s.images.iter().any(|i| i.provider.as_str() == "west")
                && s.images
                    .iter()
                    .any(|i| i.provider.as_str() == "west2" && i.state == ImageState::Ready)
        })
        .await;
    // Ten more cleanup rounds with the upload's row gone.
    tokio::time::sleep(Duration::from_secs(600)).await;

    let (images, servers, ips) = in_the_cloud(&project).await;
    assert!(
        images.contains(&their_image),
        "another installation's image"
    );
    assert!(
        images.contains(&users_snapshot),
        "someone's snapshot of a held node"
    );
    assert!(
        servers.contains(&their_server),
        "another installation's server"
    );
    assert!(servers.contains(&untagged), "an untagged server");
    assert!(
        ips.contains(&their_ip),
        "another installation's floating IP"
    );
    assert!(
        servers.contains(held.external_id.as_ref().unwrap()),
        "the held node's server"
    );
    // East's nodes were never touched by west's (or west2's) cleanup.
    let now = running.snapshot().await;
    for server in &east_before {
        assert!(
            now.nodes
                .iter()
                .any(|n| n.external_id.as_ref() == Some(server)),
            "east's node with server {server} is still there"
        );
        assert!(servers.contains(server));
    }
    assert!(after.nodes.iter().any(|n| n.id == held.id), "the held node");
    running.stop().await;
}

fn one_provider(db: &Path) -> String {
    format!(
        "script-dir: scripts
dburi: sqlite://{db}
labels:
  - name: small
    image: base
    min-ready: 2
    providers: [{{name: east}}]
providers:
  - name: east
    driver: fake
    max-servers: 4
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}}
",
        db = db.display()
    )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_copied_store_given_a_new_installation_id_leaves_the_originals_servers_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (original, copy) = (dir.path().join("original"), dir.path().join("copy"));
    let (clock, remote, shared) = shared_clouds();
    let running = start_with(
        &original,
        &one_provider(&original.join("nodepool.sqlite")),
        clock.clone(),
        shared.clone(),
        remote.clone(),
    )
    .await;
    let filled = running
        .until(Duration::from_secs(1800), "the original's pool", |s| {
            ready(s, "small") == 2
        })
        .await;
    running.stop().await;
    let theirs: Vec<ExternalId> = filled
        .nodes
        .iter()
        .filter_map(|n| n.external_id.clone())
        .collect();

    // A staging copy of the store, given its own id before its first daemon starts.
    std::fs::create_dir_all(&copy).unwrap();
    for file in [
        "nodepool.sqlite",
        "nodepool.sqlite-wal",
        "nodepool.sqlite-shm",
    ] {
        if original.join(file).exists() {
            std::fs::copy(original.join(file), copy.join(file)).unwrap();
        }
    }
    let uri = nodepool_config::DbUri::Sqlite(copy.join("nodepool.sqlite"));
    let now = nodepool_provider::Clock::now(clock.as_ref());
    let store = Store::open(&uri, "test").unwrap();
    let previous = store.installation_id().unwrap();
    let renewed = store.new_installation_id(now).unwrap();
    assert_ne!(previous, renewed);

    let staging = start_with(
        &copy,
        &one_provider(&copy.join("nodepool.sqlite")),
        clock,
        shared.clone(),
        remote,
    )
    .await;
    staging
        .until(Duration::from_secs(1800), "the copy's own pool", |s| {
            ready(s, "small") == 2
                && s.nodes.iter().all(|n| {
                    n.external_id
                        .as_ref()
                        .is_none_or(|server| !theirs.contains(server))
                })
        })
        .await;
    // The original's servers are all still there: the copy forgot its rows naming them.
    let (_, servers, _) = in_the_cloud(&shared.cloud("east")).await;
    for server in &theirs {
        assert!(servers.contains(server), "the original's server {server}");
    }
    staging.stop().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_daemon_whose_store_gets_a_new_installation_id_stops_at_its_next_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, _, shared) = shared_clouds();
    let text = one_provider(&dir.path().join("nodepool.sqlite"));
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/prepare.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(dir.path().join("nodepool.yaml"), text).unwrap();
    let mut options = Options::new(dir.path().join("nodepool.yaml"));
    options.api = false;
    let daemon = Daemon::start(options, clock.clone(), shared).await.unwrap();
    let store = daemon.store().clone();
    let running = tokio::spawn(daemon.run(std::future::pending(), Arc::new(Notify::new())));
    tokio::time::sleep(Duration::from_secs(20)).await;

    // Its lease has lapsed unseen (its row gone, as after a long stall): the command that
    // gives the store a new id does not see it.
    let now = nodepool_provider::Clock::now(clock.as_ref());
    let renewed = tokio::task::spawn_blocking(move || {
        for daemon in store.daemons().unwrap() {
            store.retire_daemon(&daemon.id, now).unwrap();
        }
        store.new_installation_id(now).unwrap()
    })
    .await
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the daemon stops within a lease renewal or two")
        .unwrap();
    let error = ended.expect_err("a daemon that lost its installation stops with an error");
    assert!(
        error
            .to_string()
            .contains(&format!("installation id is now {renewed}")),
        "{error}"
    );
}
