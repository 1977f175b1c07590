//! Every rule of the node policy, table by table, with a fixed `now`.

use nodepool_model::{Attempt, Failure, FailureKind, InstallationId, ReasonCode};

use std::sync::Arc;

use super::*;
use crate::{CloudView, Headroom, Listing, SeenOwner, SeenServer};

fn world_with(provider: &str, cloud: CloudView) -> World {
    let mut world = World::default();
    world.clouds.insert(provider.parse().unwrap(), cloud);
    world
}

fn listing(age: Duration, servers: &[(&str, SeenOwner)]) -> Arc<Listing> {
    Arc::new(Listing::new(
        ago(age),
        servers
            .iter()
            .map(|(id, owner)| SeenServer {
                id: ExternalId::new(*id),
                owner: owner.clone(),
                busy: false,
            })
            .collect(),
    ))
}

#[test]
fn an_empty_pool_fills_to_min_ready_across_providers() {
    let plan = run(&snapshot(vec![]), &config(), &World::default());
    assert_eq!(
        summary(&plan),
        [
            "launch small@cloud1/az1",
            "launch large@cloud1/az2",
            "launch small@cloud2"
        ]
    );
    let NodeAction::Launch { image, reason, .. } = &plan.actions[0] else {
        panic!("a launch");
    };
    assert_eq!(*image, ImageId::new(1), "the newest READY upload");
    assert_eq!(reason.code, ReasonCode::Demand);
    assert!(reason.text.starts_with("label small needs 2 more (0 waiting request positions + min-ready 2 - 0 ready or building)"), "{}", reason.text);
    assert_eq!(plan.round.len(), 2, "both labels asked the allocator");
}

#[test]
fn without_a_ready_image_nothing_launches_and_the_plan_says_why() {
    let mut snap = snapshot(vec![]);
    snap.images.retain(|i| i.name.as_str() != "big");
    snap.images[1].state = ImageState::Building;
    let plan = run(&snap, &config(), &World::default());
    // small only from cloud1, which has its image; large nowhere.
    assert_eq!(launches(&plan), [("small".into(), "cloud1".into(), 2)]);
    let codes: Vec<_> = plan.notes.iter().map(|n| n.reason.code.clone()).collect();
    assert_eq!(codes, [ReasonCode::NoImage, ReasonCode::NoImage]);
    assert!(
        plan.notes[1]
            .reason
            .text
            .contains("provider cloud1 has no READY image big")
    );
}

#[test]
fn demand_is_requests_plus_min_ready_minus_ready_and_building() {
    let nodes = vec![
        node(1, "cloud1", "small", NodeState::Ready, secs(60)),
        node(2, "cloud2", "small", NodeState::Building, secs(60)),
    ];
    let mut snap = snapshot(nodes);
    let mut world = World::default();
    world.busy.insert(NodeId::new(2));
    snap.requests
        .push(request(1, &["small", "small", "small"], "ci", 0, secs(30)));
    let plan = run(&snap, &config(), &world);
    assert_eq!(summary(&plan)[0], "claim 1 small for 1");
    // small: 2 unserved + min-ready 2 - (2 supply - 1 claimed) = 3; large: 1.
    assert_eq!(
        launches(&plan),
        [
            ("small".into(), "cloud1".into(), 2),
            ("large".into(), "cloud1".into(), 1),
            ("small".into(), "cloud2".into(), 1)
        ]
    );
}

#[test]
fn max_servers_counts_every_state() {
    let states = [
        NodeState::Delete,
        NodeState::Delete,
        NodeState::Hold,
        NodeState::Used,
        NodeState::InUse,
        NodeState::InUse,
        NodeState::InUse,
        NodeState::InUse,
    ];
    let nodes = states
        .iter()
        .enumerate()
        .map(|(i, &state)| {
            let n = node(i as u64 + 1, "cloud1", "small", state, secs(60));
            if state == NodeState::Hold { held(n) } else { n }
        })
        .collect();
    let plan = run(&snapshot(nodes), &config(), &World::default());
    let on_cloud1: usize = launches(&plan)
        .iter()
        .filter(|(_, p, _)| p == "cloud1")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(on_cloud1, 2, "10 max-servers - 8 nodes in any state");
}

#[test]
fn the_clouds_limits_cap_launches() {
    let mut cloud = CloudView {
        headroom: Headroom {
            instances: Some(1),
            ..Headroom::default()
        },
        ..CloudView::default()
    };
    let plan = run(
        &snapshot(vec![]),
        &config(),
        &world_with("cloud1", cloud.clone()),
    );
    assert_eq!(
        launches(&plan),
        [
            ("large".into(), "cloud1".into(), 1),
            ("small".into(), "cloud2".into(), 2)
        ]
    );
    // Cores for one more 2-core node only.
    cloud.headroom = Headroom {
        cores: Some(3),
        ..Headroom::default()
    };
    // A base node costs 2 cores, a big one 4 (the flavors `run` gives).
    let plan = run(&snapshot(vec![]), &config(), &world_with("cloud1", cloud));
    assert_eq!(
        launches(&plan),
        [
            ("small".into(), "cloud1".into(), 1),
            ("small".into(), "cloud2".into(), 1)
        ]
    );
    let capped: Vec<_> = plan
        .notes
        .iter()
        .filter(|n| n.reason.code == ReasonCode::AtCapacity)
        .map(|n| n.reason.text.as_str())
        .collect();
    assert_eq!(
        capped,
        [
            "provider cloud1 could launch 1 large but its cloud has cores or RAM for 0",
            "label large is 1 short: its providers are at max-servers, at their cloud's limits or backing off"
        ]
    );
}

#[test]
fn requests_take_ready_nodes_by_priority_then_fairly_across_requestors() {
    let nodes = (1..=3)
        .map(|i| node(i, "cloud1", "small", NodeState::Ready, secs(600)))
        .collect();
    let mut snap = snapshot(nodes);
    snap.requests = vec![
        request(1, &["small", "small"], "ci-a", 0, secs(600)),
        request(2, &["small"], "ci-a", 0, secs(540)),
        request(3, &["small"], "ci-b", 0, secs(480)),
        request(4, &["small"], "ci-c", 5, secs(60)),
    ];
    let plan = run(&snap, &config(), &World::default());
    let claims: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|s| s.starts_with("claim"))
        .collect();
    assert_eq!(claims, ["claim 1 small for 4", "claim 2 small for 1"]);
    // Requests 3 and 2 still wait: 2 positions + min-ready 2 - 0 left = 4 launches.
    let total: usize = launches(&plan)
        .iter()
        .filter(|(l, _, _)| l == "small")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(total, 4);
}

#[test]
fn positions_already_served_are_not_served_again() {
    let mut assigned = node(1, "cloud1", "small", NodeState::InUse, secs(60));
    assigned.request = Some(RequestId::new(1));
    let ready = node(2, "cloud1", "small", NodeState::Ready, secs(60));
    let mut snap = snapshot(vec![assigned, ready]);
    let mut r = request(1, &["small", "large"], "ci", 0, secs(60));
    r.nodes = vec![NodeId::new(1)];
    snap.requests = vec![r];
    let plan = run(&snap, &config(), &World::default());
    assert!(
        !summary(&plan).iter().any(|s| s.starts_with("claim")),
        "{:?}",
        summary(&plan)
    );
}

#[test]
fn requests_nothing_could_serve_fail_at_once() {
    let text = config_text().replace("min-ready: 1", "min-ready: -1");
    let mut snap = snapshot(vec![]);
    snap.requests = vec![
        request(1, &["small", "nope"], "ci", 0, secs(5)),
        request(2, &["large"], "ci", 0, secs(4)),
    ];
    let plan = run(&snap, &parse(&text), &World::default());
    let failed: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|s| s.starts_with("fail"))
        .collect();
    assert_eq!(
        failed,
        [
            "fail 1: there is no label nope in the config",
            "fail 2: label large is disabled (min-ready -1)"
        ]
    );
}

#[test]
fn deletes_and_their_boundaries() {
    let min = |m: u64| secs(60 * m);
    let cases: Vec<(&str, Node, bool, Option<&str>)> = vec![
        (
            "used",
            node(1, "cloud1", "small", NodeState::Used, secs(1)),
            false,
            Some("used"),
        ),
        (
            "marked",
            node(1, "cloud1", "small", NodeState::Delete, secs(1)),
            false,
            Some("marked"),
        ),
        (
            "in use 8h",
            node(1, "cloud1", "small", NodeState::InUse, HOUR * 8),
            false,
            None,
        ),
        (
            "in use 8h 1s",
            node(1, "cloud1", "small", NodeState::InUse, HOUR * 8 + secs(1)),
            false,
            Some("node-cleanup"),
        ),
        (
            "test 5m",
            node(1, "cloud1", "small", NodeState::Test, min(5)),
            false,
            None,
        ),
        (
            "test 5m 1s",
            node(1, "cloud1", "small", NodeState::Test, min(5) + secs(1)),
            false,
            Some("test-timeout"),
        ),
        (
            "building, no launch",
            node(1, "cloud1", "small", NodeState::Building, secs(5)),
            false,
            Some("orphaned"),
        ),
        (
            "building, launching",
            node(1, "cloud1", "small", NodeState::Building, min(61)),
            true,
            None,
        ),
        (
            "building past the timeouts",
            node(1, "cloud1", "small", NodeState::Building, min(61) + secs(1)),
            true,
            Some("launch-timeout"),
        ),
        (
            "ready a week",
            node(1, "cloud1", "small", NodeState::Ready, HOUR * 168),
            false,
            None,
        ),
        (
            "held a week",
            held(node(1, "cloud1", "small", NodeState::Ready, HOUR * 168)),
            false,
            None,
        ),
        (
            "held, busy, building forever",
            held(node(1, "cloud1", "small", NodeState::Building, HOUR * 168)),
            true,
            None,
        ),
        (
            "ready on a removed provider",
            node(1, "gone", "small", NodeState::Ready, secs(5)),
            false,
            None,
        ),
        (
            "ready of a removed label",
            node(1, "cloud1", "medium", NodeState::Ready, secs(5)),
            false,
            None,
        ),
        (
            "ready where its label no longer looks",
            node(1, "cloud2", "large", NodeState::Ready, secs(5)),
            false,
            None,
        ),
        (
            "in use on a removed provider",
            node(1, "gone", "small", NodeState::InUse, secs(5)),
            false,
            None,
        ),
    ];
    for (name, n, busy, expected) in cases {
        let mut world = World::default();
        if busy {
            world.busy.insert(n.id);
        }
        let plan = run(&snapshot(vec![n]), &config(), &world);
        let deleted: Vec<_> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                NodeAction::Delete { reason, .. } => Some(reason.code.to_string()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
        assert_eq!(deleted, expected, "{name}");
    }
}

#[test]
fn nodes_of_what_is_gone_from_the_config_go_after_the_removal_grace() {
    let nodes = vec![
        node(1, "gone", "small", NodeState::Ready, secs(5)),
        node(2, "gone", "small", NodeState::Ready, secs(5)),
        node(3, "cloud1", "medium", NodeState::Ready, secs(5)),
        node(4, "cloud2", "large", NodeState::Ready, secs(5)),
    ];
    let state = snapshot(nodes);
    let deletes = |plan: &NodePlan| -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                NodeAction::Delete { node, reason, .. } => Some(format!("{node} {}", reason.code)),
                _ => None,
            })
            .collect()
    };
    let first = run(&state, &config(), &World::default());
    assert_eq!(deletes(&first), Vec::<String>::new());
    let at = NOW.saturating_add(Duration::from_secs(600));
    let pending: Vec<_> = first
        .notes
        .iter()
        .filter(|n| n.reason.code == ReasonCode::RemovalPending)
        .map(|n| n.reason.text.clone())
        .collect();
    assert_eq!(
        pending,
        [
            format!(
                "provider gone is gone from the config: its nodes are deleted at {at} (removal-grace), unless the config brings it back"
            ),
            format!(
                "label medium is gone from the config: its nodes are deleted at {at} (removal-grace), unless the config brings it back"
            ),
            format!(
                "provider cloud2 of label large is gone from the config: its nodes are deleted at {at} (removal-grace), unless the config brings it back"
            ),
        ],
        "one warning for each, not for each node"
    );
    assert_eq!(first.next_wakeup.map(|t| t <= at), Some(true));
    // Ten minutes later, as the daemon remembers it.
    let mut world = World::default();
    world.removals.observe(first.gone.iter().cloned(), NOW);
    let later = plan(&state, &config(), at, &{
        let mut w = world.clone();
        for p in ["cloud1", "cloud2", "gone"] {
            w.clouds.entry(p.parse().unwrap()).or_default().flavors = Some(flavors());
        }
        w
    });
    assert_eq!(
        deletes(&later),
        [
            "1 provider-removed",
            "2 provider-removed",
            "3 label-removed",
            "4 label-removed"
        ]
    );
}

#[test]
fn kept_nodes_of_removed_providers_are_explained() {
    let nodes = vec![
        held(node(1, "gone", "small", NodeState::Ready, secs(5))),
        node(2, "gone", "small", NodeState::InUse, secs(5)),
    ];
    let plan = run(&snapshot(nodes), &config(), &World::default());
    let notes: Vec<_> = plan.notes.iter().map(|n| n.reason.text.as_str()).collect();
    assert_eq!(
        notes,
        [
            "node 1 is held (debugging a failure); it stays although its provider gone or label small is gone from the config",
            "provider gone is no longer in the config; node 2 is in use and goes once released"
        ]
    );
}

#[test]
fn a_building_node_without_a_server_id_is_deleted_with_the_server_its_tags_name() {
    let mut orphan = node(7, "cloud1", "small", NodeState::Building, secs(30));
    orphan.external_id = None;
    let cloud = CloudView {
        listing: Some(listing(
            secs(1),
            &[(
                "srv-x",
                SeenOwner::Node(NodeId::new(7), "cloud1".parse().unwrap()),
            )],
        )),
        ..CloudView::default()
    };
    let plan = run(
        &snapshot(vec![orphan]),
        &config(),
        &world_with("cloud1", cloud),
    );
    assert_eq!(summary(&plan)[0], "delete 7 (orphaned) server srv-x");
}

#[test]
fn a_server_missing_from_two_listings_after_the_nodes_last_change_has_vanished() {
    let ready = node(5, "cloud1", "small", NodeState::Ready, HOUR);
    let cases = [
        // (previous listing age, latest listing age, latest shows it, vanished)
        (secs(60), secs(30), false, true),
        (secs(60), secs(30), true, false),
        // The previous listing is older than the node's last change: not yet.
        (HOUR + secs(1), secs(30), false, false),
    ];
    for (previous, latest, shown, vanished) in cases {
        let servers: &[(&str, SeenOwner)] = if shown {
            &[(
                "srv-5",
                SeenOwner::Node(NodeId::new(5), "cloud1".parse().unwrap()),
            )]
        } else {
            &[]
        };
        let cloud = CloudView {
            listing: Some(listing(latest, servers)),
            previous: Some(listing(previous, &[])),
            ..CloudView::default()
        };
        let plan = run(
            &snapshot(vec![ready.clone()]),
            &config(),
            &world_with("cloud1", cloud),
        );
        let deleted = summary(&plan).contains(&"delete 5 (vanished) server srv-5".to_owned());
        assert_eq!(deleted, vanished, "{previous:?} {latest:?} {shown}");
    }
}

#[test]
fn a_copied_stores_rows_naming_another_installations_servers_are_forgotten() {
    // `nodepool installation-id --new` on a copy of another installation's store: its rows
    // still name the original's servers, whose tags now say they are not ours.
    let theirs = || SeenOwner::OtherInstallation(InstallationId::new("original"));
    let servers = [
        ("srv-1", theirs()),
        ("srv-2", theirs()),
        ("srv-3", SeenOwner::NotOurs),
    ];
    let cloud = CloudView {
        listing: Some(listing(secs(10), &servers)),
        previous: Some(listing(secs(20), &servers)),
        ..CloudView::default()
    };
    let nodes = vec![
        node(1, "cloud1", "small", NodeState::Ready, secs(60)),
        node(2, "cloud1", "small", NodeState::InUse, secs(60)),
        node(3, "cloud1", "small", NodeState::Ready, secs(60)),
    ];
    let plan = run(&snapshot(nodes), &config(), &world_with("cloud1", cloud));
    let deletes: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|s| s.starts_with("delete"))
        .collect();
    // The ready node goes (its executor leaves the server alone and forgets the row); the
    // one in use waits for its consumer; an untagged server is not another installation's.
    assert_eq!(deletes, ["delete 1 (other-installation) server srv-1"]);
}

#[test]
fn leaks_are_deleted_only_when_seen_twice_and_never_another_installations() {
    let tagged = |id| SeenOwner::Node(NodeId::new(id), "cloud1".parse().unwrap());
    let servers = [
        ("leak-twice", tagged(99)),
        ("leak-once", tagged(98)),
        ("theirs", SeenOwner::NotOurs),
        (
            "template",
            SeenOwner::Image(ImageId::new(3), "cloud1".parse().unwrap()),
        ),
        ("duplicate-of-1", tagged(1)),
        ("srv-1", tagged(1)),
    ];
    let cloud = CloudView {
        listing: Some(listing(secs(10), &servers)),
        previous: Some(listing(
            secs(20),
            &[
                ("leak-twice", tagged(99)),
                ("theirs", SeenOwner::NotOurs),
                ("duplicate-of-1", tagged(1)),
            ],
        )),
        ..CloudView::default()
    };
    let ready = node(1, "cloud1", "small", NodeState::Ready, secs(60));
    let plan = run(
        &snapshot(vec![ready]),
        &config(),
        &world_with("cloud1", cloud),
    );
    let leaks: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|s| s.starts_with("delete leak"))
        .collect();
    assert_eq!(
        leaks,
        [
            "delete leak leak-twice@cloud1",
            "delete leak duplicate-of-1@cloud1"
        ]
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.reason.code == ReasonCode::SuspectedLeak
                && n.reason.text.contains("leak-once"))
    );
}

#[test]
fn failed_launches_hold_a_provider_back_with_a_doubling_wait() {
    let failure = |age| Failure {
        provider: "cloud1".parse().unwrap(),
        attempt: Attempt::Launch("small".parse().unwrap()),
        at: ago(age),
        kind: FailureKind::CloudRefused,
        reason: "No valid host was found".into(),
    };
    let cases = [
        (vec![secs(9)], true),
        (vec![secs(10)], false),
        (vec![secs(30), secs(19)], true),
        (vec![secs(30), secs(20)], false),
        (vec![secs(3000); 12], false),
    ];
    for (failures, backing_off) in cases {
        let mut snap = snapshot(vec![]);
        snap.failures = failures.iter().map(|&a| failure(a)).collect();
        let plan = run(&snap, &config(), &World::default());
        let on_cloud1 = launches(&plan).iter().any(|(_, p, _)| p == "cloud1");
        assert_eq!(!on_cloud1, backing_off, "{failures:?}");
        if backing_off {
            assert_eq!(plan.notes[0].reason.code, ReasonCode::Backoff);
            assert!(plan.next_wakeup.is_some());
            // small still comes from cloud2.
            assert_eq!(launches(&plan), [("small".into(), "cloud2".into(), 2)]);
        }
    }
}

#[test]
fn zones_are_filled_evenly() {
    let mut existing = node(1, "cloud1", "large", NodeState::Ready, secs(60));
    existing.az = Some("az1".into());
    let text = config_text().replace("min-ready: 2", "min-ready: 4");
    let plan = run(&snapshot(vec![existing]), &parse(&text), &World::default());
    let zones: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|s| s.contains("@cloud1/"))
        .collect();
    assert_eq!(
        zones,
        [
            "launch small@cloud1/az2",
            "launch small@cloud1/az1",
            "launch small@cloud1/az2"
        ]
    );
}

#[test]
fn the_next_wakeup_is_the_nearest_deadline() {
    let nodes = vec![
        node(1, "cloud1", "small", NodeState::Test, secs(60)),
        node(2, "cloud1", "small", NodeState::InUse, secs(60)),
    ];
    let plan = run(&snapshot(nodes), &config(), &World::default());
    assert_eq!(
        plan.next_wakeup,
        Some(ago(secs(60)).saturating_add(crate::TEST_CLEANUP + Duration::from_millis(1)))
    );
}

#[test]
fn a_template_left_after_its_build_goes_once_the_clouds_task_on_it_ends() {
    let template = |busy| SeenServer {
        id: ExternalId::new("template"),
        owner: SeenOwner::Image(ImageId::new(1), "cloud1".parse().unwrap()),
        busy,
    };
    let plan_with = |state: ImageState, busy: bool| {
        let mut snapshot = snapshot(vec![]);
        snapshot.images[0].state = state;
        snapshot.images[0].server_external_id = Some(ExternalId::new("template"));
        let cloud = CloudView {
            listing: Some(Arc::new(Listing::new(ago(secs(10)), vec![template(busy)]))),
            previous: Some(Arc::new(Listing::new(ago(secs(20)), vec![template(busy)]))),
            ..CloudView::default()
        };
        run(&snapshot, &config(), &world_with("cloud1", cloud))
    };
    let deletes = |plan: &NodePlan| {
        summary(plan)
            .into_iter()
            .filter(|s| s.starts_with("delete leak"))
            .collect::<Vec<_>>()
    };
    // Upload 1 is READY: its template is a leftover.
    let plan = plan_with(ImageState::Ready, false);
    assert_eq!(deletes(&plan), ["delete leak template@cloud1"]);
    let plan = plan_with(ImageState::Ready, true);
    assert!(deletes(&plan).is_empty());
    assert!(
        plan.notes
            .iter()
            .any(|n| n.reason.code == ReasonCode::TemplateBusy)
    );
    // Building, its build uses it; being deleted, the upload's deletion takes it.
    for state in [ImageState::Building, ImageState::Delete] {
        assert!(deletes(&plan_with(state, false)).is_empty(), "{state}");
    }
}

#[test]
fn a_request_fails_once_it_has_waited_request_timeout_and_not_a_millisecond_before() {
    let text = format!("{}api:\n  request-timeout: 600\n", config_text());
    let mut snap = snapshot(vec![]);
    snap.requests = vec![
        request(1, &["small"], "ci", 0, secs(600)),
        request(2, &["small"], "ci", 0, secs(600) - Duration::from_millis(1)),
    ];
    let plan = run(&snap, &parse(&text), &World::default());
    let failed: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|s| s.starts_with("fail"))
        .collect();
    assert_eq!(
        failed,
        ["fail 1: not served within 10m (api.request-timeout)"]
    );
    assert_eq!(
        plan.next_wakeup,
        Some(NOW.saturating_add(Duration::from_millis(1))),
        "the round that fails request 2 is planned"
    );
}

#[test]
fn a_sibling_providers_servers_in_a_shared_project_are_its_own_to_judge() {
    // cloud1 lists a project it shares with cloud2: cloud2's servers show in its listings.
    let tagged = |id, provider: &str| SeenOwner::Node(NodeId::new(id), provider.parse().unwrap());
    let servers = [
        // cloud2's server whose row is gone: cloud2's own listing judges it.
        ("siblings", tagged(50, "cloud2")),
        // A provider gone from the config, its rows gone: cloud1, which lists it, does.
        ("of-a-gone-provider", tagged(51, "gone")),
        // Tagged for cloud1 but the node is cloud2's: not provably a leak.
        ("mixed-up", tagged(1, "cloud1")),
    ];
    let cloud = CloudView {
        listing: Some(listing(secs(10), &servers)),
        previous: Some(listing(secs(20), &servers)),
        ..CloudView::default()
    };
    let on_cloud2 = node(1, "cloud2", "small", NodeState::Ready, secs(60));
    let plan = run(
        &snapshot(vec![on_cloud2]),
        &config(),
        &world_with("cloud1", cloud),
    );
    let leaks: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|s| s.starts_with("delete leak"))
        .collect();
    assert_eq!(leaks, ["delete leak of-a-gone-provider@cloud1"]);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.reason.code == ReasonCode::Leaked
                && n.reason.text.contains("but node 1 is on provider cloud2"))
    );
}
