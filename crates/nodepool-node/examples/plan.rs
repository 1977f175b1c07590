//! Drives the node policy from a hand-written snapshot and prints what it would do, and why.
//!
//! `cargo run -p nodepool-node --example plan`
//!
//! A pool of two providers: `rax` has room, `hp` is at its limit and its last launch failed.
//! Three CI requests wait; one ready node exists; one node is used. The plan hands out the
//! ready node, deletes the used one, and launches the rest where capacity allows.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use nodepool_model::{
    Attempt, ExternalId, Failure, FailureKind, Flavor, Image, ImageId, ImageState, Node, NodeId,
    NodeRequest, NodeState, RequestId, RequestState, Snapshot, Timestamp,
};
use nodepool_node::{CloudView, NodeAction, World, plan};

const CONFIG: &str = "
labels:
  - name: trusty
    image: devstack-trusty
    min-ready: 2
    providers: [{name: rax}, {name: hp}]
providers:
  - name: rax
    driver: fake
    max-servers: 4
    images:
      - {name: devstack-trusty, base-image: Ubuntu 14.04, min-ram: 8192}
  - name: hp
    driver: fake
    max-servers: 1
    images:
      - {name: devstack-trusty, base-image: Ubuntu 14.04, min-ram: 8192}
";

fn main() {
    let config = nodepool_config::parse(CONFIG, "example.yaml")
        .unwrap_or_else(|e| panic!("{e:?}"))
        .config;
    let now = Timestamp::from_unix_seconds(1_400_000_000);
    let ago = |minutes: u64| now.saturating_sub(Duration::from_secs(60 * minutes));
    let image = |id, provider: &str| Image {
        id: ImageId::new(id),
        provider: provider.parse().unwrap(),
        name: "devstack-trusty".parse().unwrap(),
        version: ago(600),
        hostname: None,
        external_id: Some(ExternalId::new(format!("img-{id}"))),
        server_external_id: None,
        state: ImageState::Ready,
        state_time: ago(540),
    };
    let node = |id, provider: &str, state, minutes| Node {
        id: NodeId::new(id),
        provider: provider.parse().unwrap(),
        label: "trusty".parse().unwrap(),
        az: None,
        hostname: Some(format!("trusty-{provider}-{id}")),
        external_id: Some(ExternalId::new(format!("server-{id}"))),
        public_ip: None,
        private_ip: None,
        state,
        state_time: ago(minutes),
        image: Some(ImageId::new(1)),
        request: None,
        hold: None,
        created: ago(minutes + 5),
        host_keys: Vec::new(),
    };
    let request = |id, who: &str, minutes| NodeRequest {
        id: RequestId::new(id),
        labels: vec!["trusty".parse().unwrap()],
        requestor: who.into(),
        priority: 0,
        state: RequestState::Requested,
        state_time: ago(minutes),
        nodes: Vec::new(),
        failure: None,
        created: ago(minutes),
    };
    let snapshot = Snapshot {
        nodes: vec![
            node(1, "rax", NodeState::Ready, 30),
            node(2, "rax", NodeState::Used, 2),
        ],
        images: vec![image(1, "rax"), image(2, "hp")],
        requests: vec![
            request(1, "zuul-gate", 3),
            request(2, "zuul-check", 2),
            request(3, "zuul-gate", 1),
        ],
        failures: vec![Failure {
            provider: "hp".parse().unwrap(),
            attempt: Attempt::Launch("trusty".parse().unwrap()),
            at: now.saturating_sub(Duration::from_secs(4)),
            kind: FailureKind::CloudRefused,
            reason: "No valid host was found".into(),
        }],
        ..Snapshot::default()
    };
    // Both clouds are connected and list one flavor that fits the image.
    let flavors: std::sync::Arc<[Flavor]> = [Flavor {
        id: "performance1-8".into(),
        name: "8 GB Performance".into(),
        ram_mb: 8192,
        vcpus: 2,
    }]
    .into();
    let mut world = World::default();
    for provider in ["rax", "hp"] {
        let view = CloudView {
            flavors: Some(flavors.clone()),
            ..CloudView::default()
        };
        world.clouds.insert(provider.parse().unwrap(), view);
    }
    let plan = plan(&snapshot, &config, now, &world);
    println!("actions:");
    for action in &plan.actions {
        let (what, reason) = match action {
            NodeAction::Claim {
                request,
                label,
                count,
                reason,
            } => (
                format!("claim {count} {label} for request {request}"),
                reason,
            ),
            NodeAction::FailRequest { request, reason } => {
                (format!("fail request {request}"), reason)
            }
            NodeAction::Launch {
                provider,
                label,
                flavor,
                reason,
                ..
            } => (
                format!("launch {label} on {provider} ({})", flavor.name),
                reason,
            ),
            NodeAction::Delete { node, reason, .. } => (format!("delete node {node}"), reason),
            NodeAction::DeleteLeak {
                provider,
                server,
                reason,
            } => (
                format!("delete leaked server {server} on {provider}"),
                reason,
            ),
        };
        println!("  {what}\n      because {reason}");
    }
    println!("not done:");
    for note in &plan.notes {
        println!("  {}", note.reason);
    }
    if let Some(at) = plan.next_wakeup {
        println!("ask again by {at}");
    }
}
