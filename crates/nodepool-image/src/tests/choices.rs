//! The choices the plan makes so that the daemon only executes: which flavor a build gets,
//! where builds wait, which builds were interrupted, and which deletes cancel an executor.

use super::*;

/// A world where `connected` providers are connected with `flavors`; `here` and
/// `elsewhere` are the uploads this daemon's and other daemons' executors work on.
fn world(
    connected: &[&str],
    flavors: Option<std::sync::Arc<[Flavor]>>,
    here: &[u64],
    elsewhere: &[u64],
) -> World {
    World {
        clouds: connected
            .iter()
            .map(|p| (p.parse().unwrap(), flavors.clone()))
            .collect(),
        busy: here.iter().map(|id| ImageId::new(*id)).collect(),
        elsewhere: elsewhere.iter().map(|id| ImageId::new(*id)).collect(),
        removals: Default::default(),
    }
}

/// Connected providers, their flavors, the builds and the waits.
type BuildCase = (
    &'static [&'static str],
    Option<std::sync::Arc<[Flavor]>>,
    Vec<&'static str>,
    Vec<&'static str>,
);

/// An upload, the daemons working on it (here, elsewhere), and the delete it gets.
type DeleteCase = (
    Image,
    &'static [u64],
    &'static [u64],
    Option<(&'static str, bool)>,
);

#[test]
fn a_build_names_its_flavor_or_waits_saying_why() {
    let small_only: std::sync::Arc<[Flavor]> = [Flavor {
        id: "f-2g".into(),
        name: "m1.small".into(),
        ram_mb: 2048,
        vcpus: 1,
    }]
    .into();
    // (connected, flavors, builds as image@provider/flavor, waits)
    let cases: [BuildCase; 4] = [
        (
            &["cloud1", "cloud2"],
            Some(flavors()),
            vec!["base@cloud1/f-2g", "base@cloud2/f-2g", "big@cloud1/f-8g"],
            vec![],
        ),
        (
            &["cloud1"],
            Some(flavors()),
            vec!["base@cloud1/f-2g", "big@cloud1/f-8g"],
            vec!["image base on provider cloud2 waits: the provider is not connected"],
        ),
        (
            &["cloud1", "cloud2"],
            None,
            vec![],
            vec![
                "image base on provider cloud1 waits: its flavors are not listed yet",
                "image base on provider cloud2 waits: its flavors are not listed yet",
                "image big on provider cloud1 waits: its flavors are not listed yet",
            ],
        ),
        (
            &["cloud1", "cloud2"],
            Some(small_only),
            vec!["base@cloud1/f-2g", "base@cloud2/f-2g"],
            vec!["image big on provider cloud1 waits: no flavor with 8192 MB of RAM is known yet"],
        ),
    ];
    for (connected, flavors, builds, waits) in cases {
        let plan = crate::plan(
            &Snapshot::default(),
            &config(),
            NOW,
            &world(connected, flavors, &[], &[]),
        );
        let built: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                ImageAction::Build {
                    provider,
                    image,
                    flavor,
                    ..
                } => Some(format!("{image}@{provider}/{}", flavor.id)),
                _ => None,
            })
            .collect();
        assert_eq!(built, builds, "{connected:?}");
        let said: Vec<&str> = plan.waits.iter().map(|w| w.reason.text.as_str()).collect();
        assert_eq!(said, waits, "{connected:?}");
    }
}

#[test]
fn a_build_no_executor_works_on_was_interrupted() {
    let mut images = settled();
    images.push(upload(
        7,
        "cloud1",
        "base",
        ImageState::Building,
        ago(secs(600)),
    ));
    // (whose build it is, what the plan does of it)
    let cases: [(&[u64], &[u64], Vec<&str>); 3] = [
        (&[], &[], vec!["fail 7 (interrupted)"]),
        (&[7], &[], vec![]),
        (&[], &[7], vec![]),
    ];
    for (here, elsewhere, expected) in cases {
        let plan = crate::plan(
            &snapshot(images.clone()),
            &config(),
            NOW,
            &world(&["cloud1", "cloud2"], Some(flavors()), here, elsewhere),
        );
        assert_eq!(summary(&plan), expected, "{here:?} {elsewhere:?}");
    }
}

#[test]
fn only_the_build_deadline_cancels_an_executor_and_another_daemons_work_is_left() {
    let stuck = |id| {
        upload(
            id,
            "cloud1",
            "base",
            ImageState::Building,
            ago(HOUR * 7 + secs(1)),
        )
    };
    let marked = |id| upload(id, "cloud1", "base", ImageState::Delete, ago(secs(60)));
    // (upload, here, elsewhere, the delete it gets)
    let cases: [DeleteCase; 5] = [
        (stuck(8), &[8], &[], Some(("build-timeout", true))),
        (stuck(8), &[], &[8], None),
        (marked(8), &[], &[], Some(("marked", false))),
        (marked(8), &[8], &[], None),
        (marked(8), &[], &[8], None),
    ];
    for (upload, here, elsewhere, expected) in cases {
        let mut images = settled();
        images.push(upload.clone());
        let plan = crate::plan(
            &snapshot(images),
            &config(),
            NOW,
            &world(&["cloud1", "cloud2"], Some(flavors()), here, elsewhere),
        );
        let deletes: Vec<(String, bool)> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                ImageAction::Delete { reason, cancel, .. } => {
                    Some((reason.code.to_string(), *cancel))
                }
                _ => None,
            })
            .collect();
        let expected: Vec<(String, bool)> = expected
            .iter()
            .map(|(code, cancel)| ((*code).to_owned(), *cancel))
            .collect();
        assert_eq!(deletes, expected, "{} {here:?} {elsewhere:?}", upload.state);
    }
}

#[test]
fn a_marked_upload_in_the_cloud_waits_for_its_provider_to_connect() {
    let mut marked = upload(9, "cloud2", "base", ImageState::Delete, ago(secs(60)));
    marked.external_id = Some(nodepool_model::ExternalId::new("img-9"));
    let mut images = settled();
    images.push(marked);
    let plan = crate::plan(
        &snapshot(images),
        &config(),
        NOW,
        &world(&["cloud1"], Some(flavors()), &[], &[]),
    );
    assert!(summary(&plan).is_empty(), "{:?}", summary(&plan));
    let waits: Vec<&str> = plan.waits.iter().map(|w| w.reason.text.as_str()).collect();
    assert_eq!(
        waits,
        ["image upload 9 waits for its deletion: provider cloud2 is not connected"]
    );
}
