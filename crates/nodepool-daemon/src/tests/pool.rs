//! Pools filled and kept: images built and rebuilt, labels filled, config edits applied,
//! failing scripts backed off, providers removed, listings of changes.

use super::*;

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
        if target.user == "root" && command.ends_with("./'prepare.sh' 'base-1399957200.template.openstack.org'"))));
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
    running.remote.fail_commands("prepare.sh", 3);
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

/// A failure keeps the kind of step that failed, in the store, past its upload.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failure_is_recorded_with_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), &config(dir.path(), 1, "")).await;
    running.remote.fail_commands("prepare.sh", 3);
    let snapshot = running
        .until(Duration::from_secs(600), "a failure recorded", |s| {
            !s.failures.is_empty()
        })
        .await;
    let kinds: Vec<_> = snapshot.failures.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds[0],
        nodepool_model::FailureKind::Script,
        "{snapshot:?}"
    );
    running.stop().await;
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
async fn a_provider_gone_from_the_config_is_kept_for_the_removal_grace_then_deleted() {
    use nodepool_provider::Provider;
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    let graced = |text: String| text.replace("removal-grace: 0", "removal-grace: 600");
    // The images first: launched while only one provider had its image, every node would
    // go there.
    let running = start_with(
        dir.path(),
        &graced(config(dir.path(), 0, "")),
        clock.clone(),
        shared.clone(),
        remote,
    )
    .await;
    running
        .until(Duration::from_secs(600), "both images", |s| {
            ready_images(s) == 2
        })
        .await;
    std::fs::write(
        dir.path().join("nodepool.yaml"),
        graced(config(dir.path(), 4, "")),
    )
    .unwrap();
    running.reload.notify_one();
    let before = running
        .until(Duration::from_secs(600), "nodes on both providers", |s| {
            ready(s, "small") == 4 && s.nodes.iter().any(|n| n.provider.as_str() == "cloud2")
        })
        .await;
    let on_cloud2 = |s: &Snapshot| -> (Vec<nodepool_model::NodeId>, Vec<nodepool_model::ImageId>) {
        (
            s.nodes
                .iter()
                .filter(|n| n.provider.as_str() == "cloud2")
                .map(|n| n.id)
                .collect(),
            s.images
                .iter()
                .filter(|i| i.provider.as_str() == "cloud2")
                .map(|i| i.id)
                .collect(),
        )
    };
    let only_cloud1 = graced(config(dir.path(), 4, "")).replace(
        "providers: [{name: cloud1}, {name: cloud2}]",
        "providers: [{name: cloud1}]",
    );
    let i = only_cloud1.find("  - name: cloud2").unwrap();
    // A provider renamed by mistake: cloud2 gone for five minutes, then back. Nothing of
    // it is deleted meanwhile.
    let full = graced(config(dir.path(), 4, ""));
    let j = full.find("  - name: cloud2").unwrap();
    let renamed = only_cloud1[..i].to_owned()
        + &full[j..].replace("  - name: cloud2", "  - name: cloud2-typo");
    std::fs::write(dir.path().join("nodepool.yaml"), &renamed).unwrap();
    running.reload.notify_one();
    tokio::time::sleep(Duration::from_secs(300)).await;
    let during = running.snapshot().await;
    assert_eq!(on_cloud2(&during), on_cloud2(&before), "kept while gone");
    std::fs::write(
        dir.path().join("nodepool.yaml"),
        graced(config(dir.path(), 4, "")),
    )
    .unwrap();
    running.reload.notify_one();
    tokio::time::sleep(Duration::from_secs(900)).await;
    let after = running.snapshot().await;
    assert_eq!(on_cloud2(&after), on_cloud2(&before), "kept once back");
    // Removed for good: deleted once the grace is over, not before.
    std::fs::write(dir.path().join("nodepool.yaml"), &only_cloud1[..i]).unwrap();
    running.reload.notify_one();
    tokio::time::sleep(Duration::from_secs(540)).await;
    assert_eq!(
        on_cloud2(&running.snapshot().await),
        on_cloud2(&before),
        "kept within the grace"
    );
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

/// A label's ready-script in a file without script-dir: the file is accepted (with a
/// warning), and the label's launches fail with the reason before anything is made in the
/// cloud.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_ready_script_without_script_dir_fails_launches_before_the_cloud_is_asked() {
    use nodepool_provider::Provider;
    let dir = tempfile::tempdir().unwrap();
    let (clock, remote, shared) = shared_clouds();
    let text = config(dir.path(), 1, "")
        .replace("script-dir: scripts\n", "")
        .replace(", setup: prepare.sh", "")
        .replace(
            "    providers: [{name: cloud1}, {name: cloud2}]",
            "    providers: [{name: cloud1}]\n    ready-script: ready.sh",
        );
    let running = start_with(dir.path(), &text, clock, shared.clone(), remote).await;
    let snapshot = running
        .until(Duration::from_secs(600), "a launch failed", |s| {
            s.failures
                .iter()
                .any(|f| matches!(f.attempt, nodepool_model::Attempt::Launch(_)))
        })
        .await;
    let failure = snapshot
        .failures
        .iter()
        .find(|f| matches!(f.attempt, nodepool_model::Attempt::Launch(_)))
        .unwrap();
    assert_eq!(failure.kind, nodepool_model::FailureKind::Config);
    assert!(
        failure
            .reason
            .contains("has ready-script ready.sh, but the config has no script-dir"),
        "{failure:?}"
    );
    let servers = shared.cloud("cloud1").list_servers().await.unwrap();
    assert!(
        servers.iter().all(|s| !s.name.contains("small")),
        "no node server was made: {servers:?}"
    );
    running.stop().await;
}
