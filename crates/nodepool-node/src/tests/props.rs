//! Property tests over random snapshots: the invariants no plan may break.

use std::collections::{BTreeMap, BTreeSet};

use nodepool_model::{ImageId, NodeId, NodeState, RequestId};
use proptest::prelude::*;

use super::*;
use crate::{CloudView, Headroom};

fn arb_state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        Just(NodeState::Building),
        Just(NodeState::Ready),
        Just(NodeState::InUse),
        Just(NodeState::Used),
        Just(NodeState::Delete),
        Just(NodeState::Hold),
        Just(NodeState::Test),
    ]
}

fn arb_node() -> impl Strategy<Value = (&'static str, &'static str, NodeState, u64, bool)> {
    (
        prop_oneof![Just("cloud1"), Just("cloud2"), Just("gone")],
        prop_oneof![Just("small"), Just("large"), Just("old")],
        arb_state(),
        0u64..10 * 3600,
        any::<bool>(),
    )
}

#[derive(Debug, Clone)]
struct Case {
    snapshot: Snapshot,
    world: World,
    config: Config,
}

/// The test config with random capacities and `min-ready`s (−1 disables a label).
fn arb_config() -> impl Strategy<Value = Config> {
    (0u32..14, 0u32..8, -1i32..5, -1i32..3).prop_map(|(max1, max2, small, large)| {
        let text = config_text()
            .replace("max-servers: 10", &format!("max-servers: {max1}"))
            .replace("max-servers: 5", &format!("max-servers: {max2}"))
            .replace("min-ready: 2", &format!("min-ready: {small}"))
            .replace("min-ready: 1", &format!("min-ready: {large}"));
        parse(&text)
    })
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(arb_node(), 0..30),
        proptest::collection::vec(
            (
                proptest::collection::vec(prop_oneof![Just("small"), Just("large")], 1..4),
                0i32..3,
                prop_oneof![Just("ci-a"), Just("ci-b")],
            ),
            0..6,
        ),
        proptest::option::of(0u64..12),
        proptest::option::of(0u64..20),
        any::<bool>(),
        arb_config(),
    )
        .prop_map(|(nodes, requests, instances, cores, no_images, config)| {
            let mut busy = BTreeSet::new();
            let nodes: Vec<Node> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (provider, label, state, age, is_busy))| {
                    let mut n = node(i as u64 + 1, provider, label, state, secs(age));
                    if state == NodeState::Hold {
                        n = held(n);
                    }
                    if is_busy {
                        busy.insert(n.id);
                    }
                    n
                })
                .collect();
            let requests = requests
                .into_iter()
                .enumerate()
                .map(|(i, (labels, priority, who))| {
                    request(i as u64 + 1, &labels, who, priority, secs(60 - i as u64))
                })
                .collect();
            let mut snapshot = snapshot(nodes);
            snapshot.requests = requests;
            if no_images {
                snapshot.images.truncate(1);
            } else {
                // A second READY upload of cloud1/base with the same version: the higher id
                // is current.
                let mut twin = snapshot.images[0].clone();
                twin.id = ImageId::new(4);
                snapshot.images.push(twin);
            }
            let mut world = World {
                busy,
                ..World::default()
            };
            world.clouds.insert(
                "cloud1".parse().unwrap(),
                CloudView {
                    headroom: Headroom {
                        instances,
                        cores,
                        ram_mb: None,
                    },
                    // `base` costs 2 cores, `big` 4.
                    flavors: Some(flavors()),
                    ..CloudView::default()
                },
            );
            Case {
                snapshot,
                world,
                config,
            }
        })
}

proptest! {
    #[test]
    fn plans_keep_the_invariants(case in arb_case()) {
        let config = &case.config;
        let plan = run(&case.snapshot, config, &case.world);
        // Deterministic.
        prop_assert_eq!(&plan, &run(&case.snapshot, config, &case.world));

        let mut launched: BTreeMap<String, u64> = BTreeMap::new();
        let mut cores_used = 0;
        let mut deleted = BTreeSet::new();
        let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
        let mut failed: BTreeSet<RequestId> = BTreeSet::new();
        for action in &plan.actions {
            match action {
                NodeAction::Launch { provider, label, .. } => {
                    *launched.entry(provider.to_string()).or_default() += 1;
                    if provider.as_str() == "cloud1" {
                        cores_used += if label.as_str() == "large" { 4 } else { 2 };
                    }
                }
                NodeAction::Delete { node, .. } => {
                    prop_assert!(deleted.insert(*node), "node {} deleted twice", node);
                }
                NodeAction::Claim { label, count, request, .. } => {
                    prop_assert!(!failed.contains(request));
                    *claimed.entry(label.to_string()).or_default() += count;
                }
                NodeAction::FailRequest { request, .. } => {
                    failed.insert(*request);
                }
                NodeAction::DeleteLeak { .. } => {}
            }
        }
        let nodes: BTreeMap<NodeId, &Node> =
            case.snapshot.nodes.iter().map(|n| (n.id, n)).collect();
        // Held nodes are never deleted.
        for id in &deleted {
            prop_assert!(nodes[id].state != NodeState::Hold, "held node {} deleted", id);
        }
        // max-servers and the cloud's instance limit hold, counting every node.
        for provider in &config.providers {
            let existing = case.snapshot.nodes.iter().filter(|n| n.provider == provider.name).count() as u64;
            let new = launched.get(provider.name.as_str()).copied().unwrap_or(0);
            if new > 0 {
                prop_assert!(existing + new <= u64::from(provider.max_servers),
                    "{}: {} nodes + {} launches > max-servers {}", provider.name, existing, new, provider.max_servers);
            }
            if let Some(limit) = case.world.clouds.get(&provider.name).and_then(|c| c.headroom.instances) {
                prop_assert!(new <= limit, "{}: {} launches > {} instances left", provider.name, new, limit);
            }
        }
        // Nor does it exceed the cloud's cores.
        if let Some(cores) = case.world.clouds.values().next().and_then(|c| c.headroom.cores) {
            prop_assert!(cores_used <= cores, "{} cores launched, {} left", cores_used, cores);
        }
        // No READY node is handed out twice: claims never exceed the free ready nodes.
        for (label, count) in &claimed {
            let free = case.snapshot.nodes.iter().filter(|n| {
                n.label.as_str() == label && n.state == NodeState::Ready && n.request.is_none()
                    && !case.world.busy.contains(&n.id)
            }).count();
            prop_assert!(*count <= free, "{} {} claimed of {} ready", count, label, free);
        }
        // Launches use the upload the image policy calls current.
        for action in &plan.actions {
            if let NodeAction::Launch { image, provider, label, .. } = action {
                let wanted = &config.labels.iter().find(|l| &l.name == label).unwrap().image;
                let current = nodepool_image::current(&case.snapshot.images, provider, wanted);
                prop_assert_eq!(current.map(|i| i.id), Some(*image));
            }
        }
        if let Some(at) = plan.next_wakeup {
            prop_assert!(at > NOW);
        }
    }
}
