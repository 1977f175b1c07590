//! Several daemons on one PostgreSQL or MariaDB store.

use super::*;

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
