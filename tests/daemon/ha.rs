//! Two real `nodepoold` processes on one PostgreSQL store and the local OpenStack
//! (`cargo xtask cloud up`): together they fill `min-ready` once, never have more node
//! servers than `max-servers` nor two builds of an image at once (the cloud is sampled
//! all along), and when one is killed with SIGKILL mid-launch or mid-build, another
//! finishes its work with nothing leaked. Without PostgreSQL, the cloud or sshd the test is skipped on a
//! laptop and fails under `CI=true`.

use std::path::Path;
use std::time::Duration;

use nodepool_config::DbUri;
use nodepool_db::Store;
use nodepool_model::{ImageState, NodeState, ReasonCode, Snapshot};
use nodepool_provider::{IMAGE_KEY, NODE_KEY};

use crate::cloud::{clear_leftovers_of, connect, disagreement, kill_9, tagged_for};
use crate::support;
use crate::{deadline, follow, follow_until, nodepoold, past, pause, terminate, until};

const PROVIDER: &str = "daemon-ha";

fn config(dir: &Path, uri: &str, port: u16, min_ready: i32, max_servers: u32) -> String {
    format!(
        "script-dir: {dir}/scripts
dburi: {uri}
api:
  listen: 127.0.0.1:0
labels:
  - name: cloudy
    image: base
    min-ready: {min_ready}
    providers: [{{name: {PROVIDER}}}]
providers:
{provider}",
        dir = dir.display(),
        provider = support::cloud_provider(
            PROVIDER,
            dir,
            port,
            &format!(
                "    max-servers: {max_servers}\n    rate: 0.01\n    networks: [{{net-label: private}}]\n"
            ),
        ),
    )
}

/// Node servers and template servers of this provider in the cloud now.
fn counts(cloud: &crate::cloud::Tagged) -> (usize, usize) {
    let nodes = cloud
        .servers
        .iter()
        .filter(|(_, t)| t.contains_key(NODE_KEY))
        .count();
    let templates = cloud
        .servers
        .iter()
        .filter(|(_, t)| t.contains_key(IMAGE_KEY))
        .count();
    (nodes, templates)
}

#[test]
fn two_daemons_share_one_store_and_one_finishes_what_a_killed_one_left() {
    let Some(sshd) = support::sshd() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(cloud) = connect(&rt) else { return };
    let Some(db) = support::ServerDb::postgres("ha") else {
        return;
    };
    clear_leftovers_of(&rt, &cloud, PROVIDER);
    let dir = sshd.dir.path();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(
        dir.join("scripts/prepare.sh"),
        "#!/bin/sh\necho prepared $1\n",
    )
    .unwrap();
    let path = dir.join("nodepool.yaml");
    std::fs::write(&path, config(dir, &db.uri(), sshd.port, 3, 3)).unwrap();

    let (mut a, mut a_log) = nodepoold(&path);
    let (b, mut b_log) = nodepoold(&path);
    follow(&mut a_log, "API listening", 1);
    follow(&mut b_log, "API listening", 1);
    let store = Store::open(&DbUri::parse(&db.uri(), None).unwrap(), "test").unwrap();
    let full = |s: &Snapshot, n: usize| {
        s.nodes.len() == n
            && s.nodes.iter().all(|n| n.state == NodeState::Ready)
            && !s.images.is_empty()
            && s.images.iter().all(|i| i.state == ImageState::Ready)
    };
    // The cloud is sampled while the two fill the pool.
    let end = deadline(Duration::from_secs(600));
    loop {
        let (nodes, templates) = counts(&tagged_for(&rt, &cloud, PROVIDER));
        assert!(nodes <= 3, "{nodes} node servers: max-servers is 3");
        assert!(
            templates <= 1,
            "{templates} template servers: one build at a time"
        );
        let snapshot = store.snapshot().unwrap();
        if full(&snapshot, 3) {
            assert!(
                snapshot.nodes.iter().all(|n| n.id.get() <= 3),
                "min-ready filled once: {:#?}",
                snapshot.nodes
            );
            assert_eq!(snapshot.images.len(), 1, "one build");
            break;
        }
        assert!(!past(end), "not full after 10 minutes: {snapshot:#?}");
        pause(Duration::from_millis(500));
    }
    assert_eq!(store.daemons().unwrap().len(), 2);

    // b leaves; a launches one more, and is killed once its server exists; c starts.
    terminate(&b);
    follow(&mut b_log, "stopped", 1);
    std::fs::write(&path, config(dir, &db.uri(), sshd.port, 4, 4)).unwrap();
    crate::signal(&a, "HUP");
    // Past everything a logged before the edit.
    follow(&mut a_log, "config changed", 1);
    follow_until(&mut a_log, "a node's server created", |l| {
        l.contains("created") && l.contains("node=") && !l.contains("template")
    });
    kill_9(&mut a);
    let killed = store.snapshot().unwrap();
    assert!(
        killed.nodes.iter().any(|n| n.state == NodeState::Building),
        "a was killed mid-launch: {killed:#?}"
    );
    let (c, mut c_log) = nodepoold(&path);
    follow(&mut c_log, "API listening", 1);

    // c takes over (a's process is gone from this host, so its lease ends at c's start;
    // from another host it would run out): the half-launched node goes, with its server.
    let end = deadline(Duration::from_secs(600));
    loop {
        let snapshot = store.snapshot().unwrap();
        let problem = if full(&snapshot, 4) {
            disagreement(&snapshot, &tagged_for(&rt, &cloud, PROVIDER))
        } else {
            Some("the pool is not full yet".to_owned())
        };
        let Some(problem) = problem else { break };
        assert!(
            !past(end),
            "not converged after 10 minutes: {problem}: {snapshot:#?}"
        );
        pause(Duration::from_secs(2));
    }

    // An operator asks for a rebuild; c is killed once the build's template server exists,
    // and d cleans up: the half-built upload goes with its template server, and the
    // operator's request ends (failed: the build was interrupted; the next one is cron's).
    let now = nodepool_provider::Clock::now(&nodepool_daemon::SystemClock);
    store
        .request_image_build(None, &"base".parse().unwrap(), "operator", now)
        .unwrap();
    let mut c = c;
    follow_until(&mut c_log, "the rebuild's template server created", |l| {
        l.contains("template server") && l.contains("created")
    });
    kill_9(&mut c);
    let (d, mut d_log) = nodepoold(&path);
    follow(&mut d_log, "API listening", 1);
    let end = deadline(Duration::from_secs(600));
    loop {
        let snapshot = store.snapshot().unwrap();
        let settled = full(&snapshot, 4) && snapshot.build_requests.is_empty();
        let problem = if settled {
            disagreement(&snapshot, &tagged_for(&rt, &cloud, PROVIDER))
        } else {
            Some("the interrupted build is not cleaned up yet".to_owned())
        };
        let Some(problem) = problem else { break };
        assert!(
            !past(end),
            "not settled after 10 minutes: {problem}: {snapshot:#?}"
        );
        pause(Duration::from_secs(2));
    }

    // Retire everything, then stop.
    let (c, mut c_log) = (d, d_log);
    std::fs::write(&path, config(dir, &db.uri(), sshd.port, -1, 4)).unwrap();
    crate::signal(&c, "HUP");
    follow(&mut c_log, "config changed", 1);
    let now = nodepool_provider::Clock::now(&nodepool_daemon::SystemClock);
    let why = nodepool_model::Reason::new(ReasonCode::Operator, "end of the test");
    for image in store.snapshot().unwrap().images {
        store
            .set_image_state(image.id, ImageState::Delete, now, &why)
            .unwrap();
    }
    until(
        &store,
        Duration::from_secs(300),
        "everything retired",
        |s| s.nodes.is_empty() && s.images.is_empty(),
    );
    // A server deleted a moment ago may still be listed; a leak is deleted by the
    // daemon's cleanup within two listings. Either way the cloud empties while c runs.
    let end = deadline(Duration::from_secs(120));
    let mut left = tagged_for(&rt, &cloud, PROVIDER);
    let empty = |t: &crate::cloud::Tagged| t.servers.is_empty() && t.images.is_empty();
    while !empty(&left) && !past(end) {
        pause(Duration::from_secs(2));
        left = tagged_for(&rt, &cloud, PROVIDER);
    }
    terminate(&c);
    follow(&mut c_log, "stopped", 1);
    let histories: Vec<_> = left
        .servers
        .iter()
        .filter_map(|(_, tags)| tags.get(NODE_KEY)?.parse::<u64>().ok())
        .map(|id| {
            store
                .events(nodepool_model::Subject::Node(nodepool_model::NodeId::new(
                    id,
                )))
                .unwrap()
        })
        .collect();
    assert!(
        left.servers.is_empty() && left.images.is_empty(),
        "left in the cloud: servers {:?}, images {:?}; their nodes' histories: {histories:#?}",
        left.servers,
        left.images
    );
}
