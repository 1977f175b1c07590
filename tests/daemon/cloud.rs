//! `kill -9` of the real `nodepoold` against the local OpenStack (`cargo xtask cloud up`):
//! the daemon is killed right after it records a build, after it boots the template server,
//! while the snapshot is taken and after a node's server is created; each restart must
//! finish or undo what the killed one left, until the pool is full and every tagged server,
//! image and floating IP in the cloud belongs to a row of the store. Then everything is
//! retired and nothing of the run is left in the cloud.
//!
//! Servers get fixed addresses in 127.10.0.0/16, loopback here, so the sshd this test starts
//! answers at every one of them. Without the cloud or sshd the test is skipped on a laptop
//! and fails under `CI=true`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nodepool_config::DbUri;
use nodepool_db::Store;
use nodepool_model::{ImageState, NodeState, ReasonCode, Snapshot};
use nodepool_openstack::OpenStackProvider;
use nodepool_provider::{INSTALLATION_KEY, PROVIDER_KEY, Provider};

use crate::support;
use crate::{deadline, follow_until, nodepoold, past, pause, terminate, until};

/// This test's provider name: what an interrupted run left is found by it.
const PROVIDER: &str = "daemon-kill";

pub(crate) fn connect(rt: &tokio::runtime::Runtime) -> Option<OpenStackProvider> {
    rt.block_on(support::local_cloud("the kill -9 test"))
}

fn config(dir: &Path, port: u16, min_ready: i32) -> String {
    format!(
        "script-dir: {dir}/scripts
dburi: sqlite://{dir}/nodepool.sqlite
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
            "    max-servers: 3\n    rate: 0.01\n    networks: [{net-label: private}]\n",
        ),
    )
}

pub(crate) fn kill_9(child: &mut std::process::Child) {
    child.kill().expect("SIGKILL is sent");
    child.wait().expect("the killed daemon is reaped");
}

/// What is tagged in the cloud for this provider, by kind.
pub(crate) struct Tagged {
    pub(crate) servers: Vec<(String, BTreeMap<String, String>)>,
    pub(crate) images: Vec<(String, BTreeMap<String, String>)>,
    pub(crate) floating_ips: Vec<(String, BTreeMap<String, String>)>,
}

fn tagged(rt: &tokio::runtime::Runtime, cloud: &OpenStackProvider) -> Tagged {
    tagged_for(rt, cloud, PROVIDER)
}

/// What is tagged in the cloud for `provider`.
pub(crate) fn tagged_for(
    rt: &tokio::runtime::Runtime,
    cloud: &OpenStackProvider,
    provider: &str,
) -> Tagged {
    let ours = |m: &BTreeMap<String, String>| m.get(PROVIDER_KEY).is_some_and(|p| p == provider);
    // A listing may meet a transient error while the daemons change the cloud under it
    // (a page whose marker moved); such a listing is asked again.
    async fn again<T, F: Future<Output = nodepool_provider::Result<T>>>(call: impl Fn() -> F) -> T {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => return value,
                Err(e) if e.is_retryable() && attempt < 5 => attempt += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    rt.block_on(async {
        Tagged {
            servers: again(|| cloud.list_servers())
                .await
                .into_iter()
                .filter(|s| ours(&s.metadata))
                .map(|s| (s.id.to_string(), s.metadata))
                .collect(),
            images: again(|| cloud.list_images())
                .await
                .into_iter()
                .filter(|i| ours(&i.properties))
                .map(|i| (i.id.to_string(), i.properties))
                .collect(),
            floating_ips: again(|| cloud.list_floating_ips())
                .await
                .into_iter()
                .filter(|ip| ours(&ip.metadata))
                .map(|ip| (ip.id.to_string(), ip.metadata))
                .collect(),
        }
    })
}

/// Deletes what an interrupted run of this test left.
fn clear_leftovers(rt: &tokio::runtime::Runtime, cloud: &OpenStackProvider) {
    clear_leftovers_of(rt, cloud, PROVIDER);
}

/// Deletes what an interrupted run left for `provider`.
pub(crate) fn clear_leftovers_of(
    rt: &tokio::runtime::Runtime,
    cloud: &OpenStackProvider,
    provider: &str,
) {
    let left = tagged_for(rt, cloud, provider);
    rt.block_on(async {
        for (id, _) in left.floating_ips {
            let _ = cloud.delete_floating_ip(&id.as_str().into()).await;
        }
        for (id, _) in left.servers {
            let _ = cloud.delete_server(&id.as_str().into()).await;
        }
        for (id, _) in left.images {
            let _ = cloud.delete_image(&id.as_str().into()).await;
        }
    });
}

/// Why the cloud and the store disagree, if they do: a tagged server that is no node's or
/// building upload's, a tagged image that is no upload's.
pub(crate) fn disagreement(snapshot: &Snapshot, cloud: &Tagged) -> Option<String> {
    for (id, _) in &cloud.servers {
        let known = snapshot
            .nodes
            .iter()
            .any(|n| n.external_id.as_ref().is_some_and(|e| e.as_str() == id))
            || snapshot.images.iter().any(|i| {
                i.state == ImageState::Building
                    && i.server_external_id
                        .as_ref()
                        .is_some_and(|e| e.as_str() == id)
            });
        if !known {
            return Some(format!("server {id} belongs to no node or build"));
        }
    }
    for (id, _) in &cloud.images {
        if !snapshot
            .images
            .iter()
            .any(|i| i.external_id.as_ref().is_some_and(|e| e.as_str() == id))
        {
            return Some(format!("image {id} belongs to no upload"));
        }
    }
    if let Some((id, _)) = cloud.floating_ips.first() {
        return Some(format!("floating IP {id} (no pool is configured)"));
    }
    None
}

/// A moment to kill the daemon at: what it is, and the log line that says it came.
type Step = (&'static str, fn(&str) -> bool);

#[test]
fn a_daemon_killed_at_every_step_converges_with_nothing_leaked() {
    let Some(sshd) = support::sshd() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(cloud) = connect(&rt) else { return };
    clear_leftovers(&rt, &cloud);
    let dir = sshd.dir.path();
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(
        dir.join("scripts/prepare.sh"),
        "#!/bin/sh\necho prepared $1\n",
    )
    .unwrap();
    let path = dir.join("nodepool.yaml");
    std::fs::write(&path, config(dir, sshd.port, 2)).unwrap();

    // Killed after the build's row is written (the cloud may or may not have been asked),
    // after the template server is created, while the snapshot is taken, and after a
    // node's server is created.
    let steps: [Step; 4] = [
        ("the build recorded", |l| l.contains("building:")),
        ("the template created", |l| l.contains("template server")),
        ("the snapshot requested", |l| {
            l.contains("snapshot") && l.contains("requested")
        }),
        ("a node's server created", |l| {
            l.contains("created") && l.contains("node=") && !l.contains("template")
        }),
    ];
    for (what, step) in steps {
        let (mut child, mut log) = nodepoold(&path);
        follow_until(&mut log, what, step);
        kill_9(&mut child);
    }

    // The fifth run finishes what the others left.
    let (child, mut log) = nodepoold(&path);
    let store = Store::open(&DbUri::Sqlite(dir.join("nodepool.sqlite")), "test").unwrap();
    let installation = store.installation_id().unwrap();
    let end = deadline(Duration::from_secs(600));
    loop {
        let snapshot = store.snapshot().unwrap();
        let full = snapshot.nodes.len() == 2
            && snapshot.nodes.iter().all(|n| n.state == NodeState::Ready)
            && !snapshot.images.is_empty()
            && snapshot.images.iter().all(|i| i.state == ImageState::Ready);
        let problem = if full {
            disagreement(&snapshot, &tagged(&rt, &cloud))
        } else {
            Some("the pool is not full yet".to_owned())
        };
        let Some(problem) = problem else { break };
        assert!(
            !past(end),
            "not converged after 10 minutes: {problem}: {snapshot:#?}"
        );
        // The cleanup job runs every minute.
        pause(Duration::from_secs(2));
    }
    for (_, tags) in tagged(&rt, &cloud).servers {
        assert_eq!(tags[INSTALLATION_KEY], installation.as_str());
    }

    // Retire everything, then stop.
    std::fs::write(&path, config(dir, sshd.port, -1)).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    // Applied before the images go: with the label still enabled, the daemon would build
    // the image again the moment the last one is marked for deletion.
    crate::follow(&mut log, "config changed", 1);
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
    // A server deleted a moment ago may still be listed, and one whose row went without it
    // is a leak the daemon deletes within two listings: the cloud empties while it runs.
    let end = deadline(Duration::from_secs(120));
    let mut left = tagged(&rt, &cloud);
    let empty = |t: &Tagged| t.servers.is_empty() && t.images.is_empty();
    while !empty(&left) && !past(end) {
        pause(Duration::from_secs(2));
        left = tagged(&rt, &cloud);
    }
    terminate(&child);
    crate::follow(&mut log, "stopped", 1);
    let mut child = child;
    assert!(super::exit_status(&mut child, Duration::from_secs(60)).success());
    assert!(
        left.servers.is_empty() && left.images.is_empty() && left.floating_ips.is_empty(),
        "left in the cloud: servers {:?}, images {:?}, floating IPs {:?}",
        left.servers,
        left.images,
        left.floating_ips
    );
}
