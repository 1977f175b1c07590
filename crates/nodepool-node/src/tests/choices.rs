//! The choices the plan makes so that the daemon only executes: which flavor and host name a
//! launch gets, which providers can take launches at all, and which deletes take a node
//! from the executor working on it.

use nodepool_model::ReasonCode;

use super::*;
use crate::CloudView;

/// A world where `connected` providers are connected, each listing `flavors` (`None`: not
/// listed yet).
fn world(connected: &[&str], flavors: Option<std::sync::Arc<[Flavor]>>) -> World {
    let mut world = World::default();
    for provider in connected {
        let view = CloudView {
            flavors: flavors.clone(),
            ..CloudView::default()
        };
        world.clouds.insert(provider.parse().unwrap(), view);
    }
    world
}

/// Each launch's (label, provider, flavor id, host name).
fn launched(plan: &NodePlan) -> Vec<(String, String, String, String)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            NodeAction::Launch {
                provider,
                label,
                flavor,
                hostname,
                ..
            } => Some((
                label.to_string(),
                provider.to_string(),
                flavor.id.clone(),
                hostname.clone(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_launch_names_the_smallest_flavor_that_fits_and_its_host_name() {
    let flavor = |id: &str, name: &str, ram_mb, vcpus| Flavor {
        id: id.into(),
        name: name.into(),
        ram_mb,
        vcpus,
    };
    // Listed in no order; a name filter is the config's.
    let flavors: std::sync::Arc<[Flavor]> = [
        flavor("f-16g", "m1.xlarge", 16384, 8),
        flavor("f-1g", "m1.tiny", 1024, 1),
        flavor("f-8g", "m1.large", 8192, 4),
        flavor("f-2g-fast", "m1.small.fast", 2048, 1),
        flavor("f-2g", "m1.small", 2048, 1),
        flavor("f-4g", "m1.medium", 4096, 2),
    ]
    .into();
    let cases = [
        ("", vec![("small", "f-2g"), ("large", "f-8g")]),
        (
            "        name-filter: fast\n",
            vec![("small", "f-2g-fast"), ("large", "f-8g")],
        ),
    ];
    for (filter, expected) in cases {
        let text = config_text().replace(
            "      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048}\n      - {name: big",
            &format!(
                "      - name: base\n        base-image: Ubuntu 22.04\n        min-ram: 2048\n{filter}      - {{name: big"
            ),
        );
        let config = parse(&text);
        let plan = plan(
            &snapshot(vec![]),
            &config,
            NOW,
            &world(&["cloud1"], Some(flavors.clone())),
        );
        let got: Vec<(String, String)> = launched(&plan)
            .into_iter()
            .map(|(label, _, flavor, _)| (label, flavor))
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(l, f)| ((*l).to_owned(), (*f).to_owned()))
            .collect();
        // Two small and one large on cloud1 (cloud2 is not connected).
        assert_eq!(got.len(), 3, "{filter:?}: {got:?}");
        for pair in &want {
            assert!(got.contains(pair), "{filter:?}: {pair:?} in {got:?}");
        }
    }
    let plan = plan(
        &snapshot(vec![]),
        &config(),
        NOW,
        &world(&["cloud1"], Some(flavors)),
    );
    assert_eq!(launched(&plan)[0].3, "small-cloud1-{node_id}");
}

/// Connected providers, their flavors, the launches per (label, provider), the notes.
type ProviderCase = (
    &'static [&'static str],
    Option<std::sync::Arc<[Flavor]>>,
    Vec<(&'static str, &'static str, usize)>,
    Vec<&'static str>,
);

#[test]
fn only_connected_providers_with_a_fitting_flavor_take_launches() {
    let small_only: std::sync::Arc<[Flavor]> = [Flavor {
        id: "f-2g".into(),
        name: "m1.small".into(),
        ram_mb: 2048,
        vcpus: 1,
    }]
    .into();
    // (connected, flavors, launches per (label, provider), notes)
    let cases: [ProviderCase; 4] = [
        (
            &["cloud1", "cloud2"],
            Some(flavors()),
            vec![
                ("small", "cloud1", 1),
                ("large", "cloud1", 1),
                ("small", "cloud2", 1),
            ],
            vec![],
        ),
        // cloud2 is not connected: cloud1 takes all of small.
        (
            &["cloud1"],
            Some(flavors()),
            vec![("small", "cloud1", 2), ("large", "cloud1", 1)],
            vec!["label small on provider cloud2 waits: the provider is not connected"],
        ),
        // The flavors are not listed yet: nothing launches, and the plan says why.
        (
            &["cloud1", "cloud2"],
            None,
            vec![],
            vec![
                "label small on provider cloud1 waits: its flavors are not listed yet",
                "label small on provider cloud2 waits: its flavors are not listed yet",
                "label large on provider cloud1 waits: its flavors are not listed yet",
            ],
        ),
        // No flavor has the 8192 MB `big` needs.
        (
            &["cloud1", "cloud2"],
            Some(small_only),
            vec![("small", "cloud1", 1), ("small", "cloud2", 1)],
            vec![
                "label large on provider cloud1 waits: no flavor with 8192 MB of RAM is known yet",
            ],
        ),
    ];
    for (connected, flavors, expected, notes) in cases {
        let plan = plan(
            &snapshot(vec![]),
            &config(),
            NOW,
            &world(connected, flavors),
        );
        let expected: Vec<(String, String, usize)> = expected
            .iter()
            .map(|(l, p, n)| ((*l).to_owned(), (*p).to_owned(), *n))
            .collect();
        assert_eq!(launches(&plan), expected, "{connected:?}");
        let said: Vec<&str> = plan
            .notes
            .iter()
            .filter(|n| {
                matches!(
                    n.reason.code,
                    ReasonCode::NoFlavor | ReasonCode::NotConnected
                )
            })
            .map(|n| n.reason.text.as_str())
            .collect();
        assert_eq!(said, notes, "{connected:?}");
    }
}

#[test]
fn only_deadlines_cancel_an_executor_and_another_daemons_work_is_never_touched() {
    let launch_timeout = HOUR + secs(3600 * 2);
    // (state, age, whose work it is, the delete it gets)
    let cases = [
        // Nobody works on it: deleted as the rules say.
        (NodeState::Used, secs(10), "", Some(("used", false))),
        (NodeState::Delete, secs(10), "", Some(("marked", false))),
        // An executor here works on it: only a deadline takes it, cancelling the executor.
        (NodeState::Used, secs(10), "here", None),
        (NodeState::Delete, secs(10), "here", None),
        (
            NodeState::Building,
            launch_timeout,
            "here",
            Some(("launch-timeout", true)),
        ),
        (
            NodeState::InUse,
            HOUR * 9,
            "here",
            Some(("node-cleanup", true)),
        ),
        (NodeState::Test, HOUR, "here", None),
        // Another daemon works on it: never, not even past a deadline.
        (NodeState::Used, secs(10), "elsewhere", None),
        (NodeState::Building, launch_timeout, "elsewhere", None),
        (NodeState::InUse, HOUR * 9, "elsewhere", None),
    ];
    for (state, age, whose, expected) in cases {
        let n = node(5, "cloud1", "small", state, age);
        let mut world = world(&["cloud1", "cloud2"], Some(flavors()));
        match whose {
            "here" => world.busy.insert(n.id),
            "elsewhere" => world.elsewhere.insert(n.id),
            _ => true,
        };
        let plan = plan(&snapshot(vec![n]), &config(), NOW, &world);
        let deletes: Vec<(String, bool)> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                NodeAction::Delete { reason, cancel, .. } => {
                    Some((reason.code.to_string(), *cancel))
                }
                _ => None,
            })
            .collect();
        let expected: Vec<(String, bool)> = expected
            .iter()
            .map(|(code, cancel)| ((*code).to_owned(), *cancel))
            .collect();
        assert_eq!(deletes, expected, "{state} {age:?} {whose:?}");
    }
}

#[test]
fn a_marked_node_waits_for_its_provider_to_connect() {
    let marked = node(5, "cloud2", "small", NodeState::Delete, secs(10));
    let used = node(6, "cloud2", "small", NodeState::Used, secs(10));
    let plan = plan(
        &snapshot(vec![marked, used]),
        &config(),
        NOW,
        &world(&["cloud1"], Some(flavors())),
    );
    // The used node is marked for deletion (its executor records that, and deletes the
    // server once the provider connects); the marked one has nothing to do until then.
    assert_eq!(summary(&plan)[..1], ["delete 6 (used) server srv-6"]);
    let waits: Vec<&str> = plan
        .notes
        .iter()
        .filter(|n| {
            n.reason.code == ReasonCode::NotConnected
                && n.about == crate::About::Node(NodeId::new(5))
        })
        .map(|n| n.reason.text.as_str())
        .collect();
    assert_eq!(
        waits,
        ["node 5 waits for its deletion: provider cloud2 is not connected"]
    );
}
