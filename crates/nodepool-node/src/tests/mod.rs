//! Tests of the node policy: the 2014 allocator's own cases, table tests of every rule with
//! a fixed `now`, and property tests over random snapshots.

mod allocator;
mod choices;
mod cleanup;
mod props;
mod rules;

use std::time::Duration;

use nodepool_config::Config;
use nodepool_model::{
    ExternalId, Flavor, HoldNote, Image, ImageId, ImageState, Node, NodeId, NodeRequest, NodeState,
    RequestId, RequestState, Snapshot, Timestamp,
};

use crate::{NodeAction, NodePlan, World, plan};

/// 2014-05-13T05:00:00Z.
const NOW: Timestamp = Timestamp::from_unix_seconds(1_399_957_200);
const HOUR: Duration = Duration::from_secs(3600);

fn ago(d: Duration) -> Timestamp {
    NOW.saturating_sub(d)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Label `small` (min-ready 2) on cloud1 and cloud2; label `large` (min-ready 1) on cloud1
/// only; cloud1 has max-servers 10 and two zones, cloud2 max-servers 5.
fn config_text() -> String {
    "labels:
  - name: small
    image: base
    min-ready: 2
    providers: [{name: cloud1}, {name: cloud2}]
  - name: large
    image: big
    min-ready: 1
    providers: [{name: cloud1}]
providers:
  - name: cloud1
    driver: fake
    max-servers: 10
    availability-zones: [az1, az2]
    images:
      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048}
      - {name: big, base-image: Ubuntu 22.04, min-ram: 8192}
  - name: cloud2
    driver: fake
    max-servers: 5
    images:
      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048}
"
    .into()
}

fn parse(text: &str) -> Config {
    match nodepool_config::parse(text, "nodepool.yaml") {
        Ok(loaded) => loaded.config,
        Err(errors) => panic!("test config: {errors:?}"),
    }
}

fn config() -> Config {
    parse(&config_text())
}

/// READY images everywhere they are used.
fn images() -> Vec<Image> {
    let image = |id, provider: &str, name: &str| Image {
        id: ImageId::new(id),
        provider: provider.parse().unwrap(),
        name: name.parse().unwrap(),
        version: ago(HOUR * 2),
        hostname: None,
        external_id: Some(ExternalId::new(format!("img-{id}"))),
        server_external_id: None,
        state: ImageState::Ready,
        state_time: ago(HOUR),
    };
    vec![
        image(1, "cloud1", "base"),
        image(2, "cloud2", "base"),
        image(3, "cloud1", "big"),
    ]
}

fn node(id: u64, provider: &str, label: &str, state: NodeState, age: Duration) -> Node {
    Node {
        id: NodeId::new(id),
        provider: provider.parse().unwrap(),
        label: label.parse().unwrap(),
        az: None,
        hostname: None,
        external_id: Some(ExternalId::new(format!("srv-{id}"))),
        public_ip: None,
        private_ip: None,
        state,
        state_time: ago(age),
        image: None,
        request: None,
        hold: None,
        created: ago(age),
        host_keys: Vec::new(),
    }
}

fn held(mut n: Node) -> Node {
    n.state = NodeState::Hold;
    n.hold = Some(HoldNote {
        reason: "debugging a failure".into(),
        by: "alice".into(),
    });
    n
}

fn request(id: u64, labels: &[&str], requestor: &str, priority: i32, age: Duration) -> NodeRequest {
    NodeRequest {
        id: RequestId::new(id),
        labels: labels.iter().map(|l| l.parse().unwrap()).collect(),
        requestor: requestor.into(),
        priority,
        state: RequestState::Requested,
        state_time: ago(age),
        nodes: Vec::new(),
        failure: None,
        created: ago(age),
    }
}

fn snapshot(nodes: Vec<Node>) -> Snapshot {
    Snapshot {
        nodes,
        images: images(),
        ..Snapshot::default()
    }
}

/// The plan's actions as short strings.
fn summary(plan: &NodePlan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| match a {
            NodeAction::Claim {
                request,
                label,
                count,
                ..
            } => format!("claim {count} {label} for {request}"),
            NodeAction::FailRequest { request, reason } => {
                format!("fail {request}: {}", reason.text)
            }
            NodeAction::Launch {
                provider,
                label,
                az,
                ..
            } => match az {
                Some(az) => format!("launch {label}@{provider}/{az}"),
                None => format!("launch {label}@{provider}"),
            },
            NodeAction::Delete {
                node,
                server,
                reason,
                ..
            } => match server {
                Some(s) => format!("delete {node} ({}) server {s}", reason.code),
                None => format!("delete {node} ({})", reason.code),
            },
            NodeAction::DeleteLeak {
                provider, server, ..
            } => format!("delete leak {server}@{provider}"),
        })
        .collect()
}

/// The cloud's flavors: one for `base` (2 cores, 2048 MB) and one for `big` (4 cores,
/// 8192 MB).
fn flavors() -> std::sync::Arc<[Flavor]> {
    let flavor = |id: &str, ram_mb, vcpus| Flavor {
        id: id.into(),
        name: id.into(),
        ram_mb,
        vcpus,
    };
    [flavor("f-2g", 2048, 2), flavor("f-8g", 8192, 4)].into()
}

/// Plans with every provider of the config and of the nodes connected (a view the world
/// lacks is an empty one), each with [`flavors`] unless its view says otherwise. Tests of
/// unconnected providers and unlisted flavors call [`plan`] themselves.
fn run(snap: &Snapshot, config: &Config, world: &World) -> NodePlan {
    let mut world = world.clone();
    let names = config
        .providers
        .iter()
        .map(|p| &p.name)
        .chain(snap.nodes.iter().map(|n| &n.provider));
    for name in names {
        let view = world.clouds.entry(name.clone()).or_default();
        if view.flavors.is_none() {
            view.flavors = Some(flavors());
        }
    }
    plan(snap, config, NOW, &world)
}

/// Launch counts per (label, provider).
fn launches(plan: &NodePlan) -> Vec<(String, String, usize)> {
    let mut counts: Vec<(String, String, usize)> = Vec::new();
    for action in &plan.actions {
        if let NodeAction::Launch {
            provider, label, ..
        } = action
        {
            match counts
                .iter_mut()
                .find(|(l, p, _)| l == label.as_str() && p == provider.as_str())
            {
                Some(entry) => entry.2 += 1,
                None => counts.push((label.to_string(), provider.to_string(), 1)),
            }
        }
    }
    counts
}
