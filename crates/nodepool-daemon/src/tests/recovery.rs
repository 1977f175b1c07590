//! Daemons killed and restarted mid-work, and the periodic jobs (check, cleanup) that
//! find what is dead or left over.

use super::*;

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
    let base = cloud.image_id("Ubuntu 22.04").unwrap();
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
    // Snapshots of the ready node's server (the daemon keeps it).
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
    // A snapshot made (as a build makes one) from a server it names as its template, for
    // an upload the store does not have.
    let mut lost = tags(Owner::Image(nodepool_model::ImageId::new(901)));
    lost.insert(nodepool_provider::TEMPLATE_KEY.to_owned(), node.to_string());
    let image = snapshot_of_node("lost-snapshot", lost).await;
    // Someone's snapshot of the node: the cloud copies our tags from the node's image into
    // it, but it was not made from the template they name.
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
