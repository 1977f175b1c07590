//! Table tests of every image rule with a fixed `now`, and property tests over random
//! snapshots.

use std::time::Duration;

use nodepool_config::Config;
use nodepool_model::{
    Attempt, BuildRequest, BuildRequestId, BuildRequestState, Failure, FailureKind, Flavor, Image,
    ImageId, ImageName, ImageState, ProviderName, ReasonCode, Snapshot, Timestamp,
};
use proptest::prelude::*;

mod choices;

use crate::{ImageAction, ImagePlan, World, current};

/// The clouds' flavors: 2048 MB for `base`, 8192 MB for `big`.
fn flavors() -> std::sync::Arc<[Flavor]> {
    let flavor = |id: &str, ram_mb, vcpus| Flavor {
        id: id.into(),
        name: id.into(),
        ram_mb,
        vcpus,
    };
    [flavor("f-2g", 2048, 2), flavor("f-8g", 8192, 4)].into()
}

/// Plans as a daemon whose providers (of the config and of the uploads) are all connected
/// with [`flavors`], and whose executors run every build in the store. Tests of what the
/// daemon knows beyond the store call [`crate::plan`] themselves.
fn plan(snapshot: &Snapshot, config: &Config, now: Timestamp) -> ImagePlan {
    plan_with(snapshot, config, now, nodepool_model::Removals::default())
}

/// [`plan`], with what the daemon remembers of removals from the config.
fn plan_with(
    snapshot: &Snapshot,
    config: &Config,
    now: Timestamp,
    removals: nodepool_model::Removals,
) -> ImagePlan {
    let mut world = World {
        removals,
        ..World::default()
    };
    let names = config
        .providers
        .iter()
        .map(|p| &p.name)
        .chain(snapshot.images.iter().map(|i| &i.provider));
    for name in names {
        world.clouds.insert(name.clone(), Some(flavors()));
    }
    world.busy = snapshot
        .images
        .iter()
        .filter(|i| i.state == ImageState::Building)
        .map(|i| i.id)
        .collect();
    crate::plan(snapshot, config, now, &world)
}

/// 2014-05-13T05:00:00Z: a Tuesday, 2 h 46 min after that day's 02:14 image-update.
const NOW: Timestamp = Timestamp::from_unix_seconds(1_399_957_200);

const HOUR: Duration = Duration::from_secs(3600);

fn ago(d: Duration) -> Timestamp {
    NOW.saturating_sub(d)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Two providers with image `base`, one also with `big`; label `small` uses `base` on both,
/// label `large` uses `big` on cloud1 with `min-ready` from the argument.
fn config_with(large_min_ready: i32, extra: &str) -> Config {
    let text = format!(
        "labels:
  - name: small
    image: base
    min-ready: 2
    providers: [{{name: cloud1}}, {{name: cloud2}}]
  - name: large
    image: big
    min-ready: {large_min_ready}
    providers: [{{name: cloud1}}]
providers:
  - name: cloud1
    driver: fake
    max-servers: 10
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
      - {{name: big, base-image: Ubuntu 22.04, min-ram: 8192}}
  - name: cloud2
    driver: fake
    max-servers: 10
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
{extra}"
    );
    match nodepool_config::parse(&text, "nodepool.yaml") {
        Ok(loaded) => loaded.config,
        Err(errors) => panic!("test config: {errors:?}"),
    }
}

fn config() -> Config {
    config_with(1, "")
}

fn p(name: &str) -> ProviderName {
    name.parse().unwrap()
}

fn i(name: &str) -> ImageName {
    name.parse().unwrap()
}

fn upload(id: u64, provider: &str, image: &str, state: ImageState, version: Timestamp) -> Image {
    Image {
        id: ImageId::new(id),
        provider: p(provider),
        name: i(image),
        version,
        hostname: None,
        external_id: None,
        server_external_id: None,
        state,
        state_time: version,
    }
}

/// READY uploads of every image in use, built an hour ago: nothing to do.
fn settled() -> Vec<Image> {
    vec![
        upload(1, "cloud1", "base", ImageState::Ready, ago(HOUR)),
        upload(2, "cloud2", "base", ImageState::Ready, ago(HOUR)),
        upload(3, "cloud1", "big", ImageState::Ready, ago(HOUR)),
    ]
}

fn snapshot(images: Vec<Image>) -> Snapshot {
    Snapshot {
        images,
        ..Snapshot::default()
    }
}

fn build_failure(provider: &str, image: &str, at: Timestamp) -> Failure {
    Failure {
        provider: p(provider),
        attempt: Attempt::Build(i(image)),
        at,
        kind: FailureKind::Script,
        reason: "setup script exited with 1".into(),
    }
}

/// The plan's actions as short strings, for table comparisons.
fn summary(plan: &ImagePlan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| match a {
            ImageAction::Build {
                provider,
                image,
                request,
                reason,
                ..
            } => match request {
                Some(r) => format!("build {image}@{provider} for request {r} ({})", reason.code),
                None => format!("build {image}@{provider} ({})", reason.code),
            },
            ImageAction::Delete { upload, reason, .. } => {
                format!("delete {upload} ({})", reason.code)
            }
            ImageAction::FailBuild { upload, reason, .. } => {
                format!("fail {upload} ({})", reason.code)
            }
            ImageAction::FinishRequest {
                request, failure, ..
            } => match failure {
                None => format!("request {request} done"),
                Some(why) => format!("request {request} failed: {why}"),
            },
        })
        .collect()
}

#[test]
fn a_settled_pool_needs_nothing() {
    let plan = plan(&snapshot(settled()), &config(), NOW);
    assert_eq!(summary(&plan), Vec::<String>::new());
    assert!(plan.waits.is_empty());
}

#[test]
fn missing_images_are_built_at_once() {
    let plan = plan(&Snapshot::default(), &config(), NOW);
    assert_eq!(
        summary(&plan),
        [
            "build base@cloud1 (missing)",
            "build base@cloud2 (missing)",
            "build big@cloud1 (missing)"
        ]
    );
}

/// Images made by diskimage-builder (`diskimage: NAME` as in nodepool 0.3, or a
/// `diskimages` entry of the image's own name as in 0.4) are never built, missing or
/// requested, while snapshot images beside them are.
#[test]
fn images_made_by_diskimage_builder_are_never_built() {
    let text = "diskimages:
  - {name: dib-base, elements: [ubuntu-minimal], release: 16}
  - {name: xenial}
labels:
  - {name: small, image: base, min-ready: 2, providers: [{name: cloud1}, {name: cloud2}]}
  - {name: large, image: xenial, min-ready: 1, providers: [{name: cloud1}]}
providers:
  - name: cloud1
    driver: fake
    max-servers: 10
    images:
      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048}
      - {name: xenial, min-ram: 8192}
  - name: cloud2
    driver: fake
    max-servers: 10
    images:
      - {name: base, diskimage: dib-base, min-ram: 2048}
";
    let config = nodepool_config::parse(text, "nodepool.yaml")
        .unwrap_or_else(|e| panic!("{e:?}"))
        .config;
    let missing = plan(&Snapshot::default(), &config, NOW);
    assert_eq!(summary(&missing), ["build base@cloud1 (missing)"]);

    let asked = Snapshot {
        build_requests: vec![
            build_request(1, Some("cloud2"), "base", BuildRequestState::Pending, NOW),
            build_request(2, None, "xenial", BuildRequestState::Pending, NOW),
        ],
        ..Snapshot::default()
    };
    let requested = plan(&asked, &config, NOW);
    assert_eq!(
        summary(&requested)[..2],
        [
            "request 1 failed: image base of provider cloud2 is made by diskimage-builder, which this version does not build",
            "request 2 failed: image xenial is made by diskimage-builder on every provider that has it, which this version does not build",
        ]
    );
}

#[test]
fn a_building_upload_counts_as_present() {
    let mut images = settled();
    images[1] = upload(2, "cloud2", "base", ImageState::Building, ago(secs(60)));
    assert_eq!(
        summary(&plan(&snapshot(images), &config(), NOW)),
        Vec::<String>::new()
    );
}

#[test]
fn min_ready_minus_one_disables_a_label_and_zero_does_not() {
    let images = settled()[..2].to_vec();
    assert_eq!(
        summary(&plan(&snapshot(images.clone()), &config_with(-1, ""), NOW)),
        Vec::<String>::new()
    );
    assert_eq!(
        summary(&plan(&snapshot(images), &config_with(0, ""), NOW)),
        ["build big@cloud1 (missing)"]
    );
}

#[test]
fn failed_builds_back_off_doubling_up_to_half_an_hour() {
    let cases = [
        // (failures, seconds ago of the last one, built now?)
        (1, 59, false),
        (1, 60, true),
        (2, 119, false),
        (2, 120, true),
        (3, 239, false),
        (6, 1_799, false),
        (6, 1_800, true),
        (20, 1_800, true),
    ];
    for (n, last_ago, builds) in cases {
        let mut snap = snapshot(settled()[1..].to_vec());
        for k in (0..n).rev() {
            snap.failures.push(build_failure(
                "cloud1",
                "base",
                ago(secs(last_ago + 10 * k)),
            ));
        }
        let plan = plan(&snap, &config(), NOW);
        let built = summary(&plan) == ["build base@cloud1 (missing)"];
        assert_eq!(built, builds, "{n} failures, the last {last_ago} s ago");
        if !builds {
            assert_eq!(plan.waits.len(), 1);
            assert_eq!(plan.waits[0].reason.code, ReasonCode::Backoff);
            assert_eq!(plan.next_wakeup, plan.waits[0].until);
        }
    }
}

#[test]
fn failures_before_the_last_success_do_not_count() {
    // cloud1/base was last built yesterday, after five failures; today's fire rebuilds it
    // at once, with no backoff.
    let mut snap = snapshot(settled());
    snap.images[0] = upload(1, "cloud1", "base", ImageState::Ready, ago(HOUR * 31));
    for k in 0..5 {
        snap.failures
            .push(build_failure("cloud1", "base", ago(HOUR * 32 + secs(k))));
    }
    assert_eq!(
        summary(&plan(&snap, &config(), NOW)),
        ["build base@cloud1 (scheduled)"]
    );
    // With no READY upload left, every failure counts.
    snap.images[0].state = ImageState::Delete;
    snap.failures
        .push(build_failure("cloud1", "base", ago(secs(30))));
    let plan = plan(&snap, &config(), NOW);
    assert_eq!(summary(&plan), ["delete 1 (marked)"]);
    assert_eq!(plan.waits[0].reason.code, ReasonCode::Backoff);
    assert_eq!(
        plan.waits[0].until,
        Some(ago(secs(30)).saturating_add(crate::BACKOFF.max))
    );
}

#[test]
fn the_schedule_rebuilds_every_image_in_use_once_per_fire() {
    // Built yesterday at 03:00; today's 02:14 fire has not been served.
    let yesterday =
        |id, provider, image| upload(id, provider, image, ImageState::Ready, ago(HOUR * 31));
    let images = vec![
        yesterday(1, "cloud1", "base"),
        yesterday(2, "cloud2", "base"),
        yesterday(3, "cloud1", "big"),
    ];
    let plan1 = plan(&snapshot(images.clone()), &config(), NOW);
    assert_eq!(
        summary(&plan1),
        [
            "build base@cloud1 (scheduled)",
            "build base@cloud2 (scheduled)",
            "build big@cloud1 (scheduled)"
        ]
    );
    // Once a build has started (any state since the fire), it is not asked for again...
    let fire = Timestamp::from_unix_seconds(1_399_947_240); // 02:14 that day
    let mut served = images.clone();
    served.push(upload(4, "cloud1", "base", ImageState::Building, fire));
    served.push(upload(5, "cloud2", "base", ImageState::Delete, ago(HOUR)));
    // ... and a failure since the fire also counts as served: the next fire retries.
    let mut snap = snapshot(served);
    snap.failures
        .push(build_failure("cloud1", "big", ago(HOUR)));
    assert_eq!(summary(&plan(&snap, &config(), NOW)), ["delete 5 (marked)"]);
}

#[test]
fn cron_boundaries_are_exact() {
    let fire = Timestamp::from_unix_seconds(1_399_947_240); // 02:14:00
    let built_before = |at: Timestamp| {
        let images = vec![
            upload(1, "cloud1", "base", ImageState::Ready, at),
            upload(2, "cloud2", "base", ImageState::Ready, at),
            upload(3, "cloud1", "big", ImageState::Ready, at),
        ];
        snapshot(images)
    };
    let at = |t: Timestamp, version: Timestamp| plan(&built_before(version), &config(), t);
    // A moment before the fire: yesterday's fire was served by a build an hour ago.
    let just_before = fire.saturating_sub(Duration::from_millis(1));
    assert!(summary(&at(just_before, fire.saturating_sub(HOUR))).is_empty());
    assert_eq!(
        at(just_before, fire.saturating_sub(HOUR)).next_wakeup,
        Some(fire)
    );
    // At the fire itself: rebuilt.
    assert_eq!(summary(&at(fire, fire.saturating_sub(HOUR))).len(), 3);
    // A build that started exactly at the fire serves it.
    assert!(summary(&at(fire, fire)).is_empty());
}

#[test]
fn a_build_running_when_the_schedule_fires_is_followed_by_another() {
    let fire = Timestamp::from_unix_seconds(1_399_947_240);
    let mut images = settled();
    for image in &mut images {
        image.version = fire.saturating_sub(HOUR);
    }
    images.push(upload(
        7,
        "cloud2",
        "base",
        ImageState::Building,
        fire.saturating_sub(secs(60)),
    ));
    let plan = plan(&snapshot(images), &config(), NOW);
    assert_eq!(
        summary(&plan),
        [
            "build base@cloud1 (scheduled)",
            "build big@cloud1 (scheduled)"
        ]
    );
    assert_eq!(plan.waits.len(), 1);
    assert_eq!(plan.waits[0].reason.code, ReasonCode::BuildRunning);
}

#[test]
fn retention_keeps_the_newest_two_ready_and_counts_eight_hours_strictly() {
    // Three READY versions of cloud1/base; the oldest goes 8 hours after it became READY.
    let ready = |id, version: Duration, state_age: Duration| Image {
        state_time: ago(state_age),
        ..upload(id, "cloud1", "base", ImageState::Ready, ago(version))
    };
    let cases = [
        (HOUR * 8 - secs(1), false),
        (HOUR * 8, false),
        (HOUR * 8 + secs(1), true),
    ];
    for (age, deleted) in cases {
        let images = vec![
            ready(1, HOUR * 400, age),
            ready(2, HOUR * 2, HOUR * 2),
            ready(3, HOUR, HOUR),
            upload(5, "cloud2", "base", ImageState::Ready, ago(HOUR)),
            upload(6, "cloud1", "big", ImageState::Ready, ago(HOUR)),
        ];
        let plan = plan(&snapshot(images), &config(), NOW);
        let expected: &[&str] = if deleted {
            &["delete 1 (retention)"]
        } else {
            &[]
        };
        assert_eq!(summary(&plan), expected, "state age {age:?}");
        if !deleted {
            assert_eq!(
                plan.next_wakeup,
                Some(ago(age).saturating_add(HOUR * 8 + Duration::from_millis(1)))
            );
        }
    }
}

#[test]
fn the_newest_two_ready_uploads_are_kept_however_old() {
    let images = vec![
        upload(1, "cloud1", "base", ImageState::Ready, ago(HOUR * 900)),
        upload(2, "cloud1", "base", ImageState::Ready, ago(HOUR * 800)),
        upload(3, "cloud1", "base", ImageState::Ready, ago(HOUR * 700)),
    ];
    let plan = plan(&snapshot(images), &config(), NOW);
    let deletes: Vec<_> = summary(&plan)
        .into_iter()
        .filter(|a| a.starts_with("delete"))
        .collect();
    assert_eq!(deletes, ["delete 1 (retention)"]);
}

#[test]
fn stuck_builds_fail_after_launch_timeout_plus_six_hours() {
    // Default launch-timeout is one hour: a build may run 7 hours.
    for (age, deleted) in [(HOUR * 7, false), (HOUR * 7 + secs(1), true)] {
        let mut images = settled();
        images.push(upload(8, "cloud1", "base", ImageState::Building, ago(age)));
        let plan = plan(&snapshot(images), &config(), NOW);
        let expected: &[&str] = if deleted {
            &["delete 8 (build-timeout)"]
        } else {
            &[]
        };
        assert_eq!(summary(&plan), expected, "build age {age:?}");
    }
}

#[test]
fn uploads_of_removed_providers_and_images_go_after_the_removal_grace() {
    let mut images = settled();
    images.push(upload(10, "gone", "base", ImageState::Ready, ago(secs(5))));
    images.push(upload(11, "cloud2", "big", ImageState::Ready, ago(secs(5))));
    images.push(upload(12, "gone", "base", ImageState::Ready, ago(secs(9))));
    let state = snapshot(images);
    // Seen gone now: kept, with one warning each, until the grace (10 minutes) is over.
    let first = plan(&state, &config(), NOW);
    assert_eq!(summary(&first), Vec::<String>::new());
    let waits: Vec<_> = first
        .waits
        .iter()
        .map(|w| (w.reason.code.as_str(), w.reason.text.as_str()))
        .collect();
    let at = NOW.saturating_add(secs(600));
    assert_eq!(
        waits,
        [
            (
                "removal-pending",
                &*format!(
                    "image big of provider cloud2 is gone from the config: its image uploads are deleted at {at} (removal-grace), unless the config brings it back"
                )
            ),
            (
                "removal-pending",
                &*format!(
                    "provider gone is gone from the config: its image uploads are deleted at {at} (removal-grace), unless the config brings it back"
                )
            ),
        ]
    );
    assert_eq!(first.next_wakeup, Some(at));
    // The daemon remembers since when; ten minutes on, they go.
    let mut removals = nodepool_model::Removals::default();
    removals.observe(first.gone.iter().cloned(), NOW);
    let later = plan_with(&state, &config(), at, removals.clone());
    assert_eq!(
        summary(&later),
        [
            "delete 10 (provider-removed)",
            "delete 11 (image-removed)",
            "delete 12 (provider-removed)"
        ]
    );
    // With `removal-grace: 0`, at once.
    let mut config = config();
    config.removal_grace = Duration::ZERO;
    assert_eq!(summary(&plan(&state, &config, NOW)).len(), 3);
}

#[test]
fn launches_use_the_newest_ready_and_fall_back_when_it_is_deleted() {
    let mut images = vec![
        upload(1, "cloud1", "base", ImageState::Ready, ago(HOUR * 30)),
        upload(2, "cloud1", "base", ImageState::Ready, ago(HOUR * 5)),
        upload(3, "cloud1", "base", ImageState::Building, ago(HOUR)),
    ];
    let newest = current(&images, &p("cloud1"), &i("base")).map(|i| i.id);
    assert_eq!(newest, Some(ImageId::new(2)));
    images[1].state = ImageState::Delete;
    let fallback = current(&images, &p("cloud1"), &i("base")).map(|i| i.id);
    assert_eq!(fallback, Some(ImageId::new(1)));
    assert_eq!(current(&images, &p("cloud2"), &i("base")), None);
}

fn build_request(
    id: u64,
    provider: Option<&str>,
    image: &str,
    state: BuildRequestState,
    at: Timestamp,
) -> BuildRequest {
    BuildRequest {
        id: BuildRequestId::new(id),
        provider: provider.map(p),
        image: i(image),
        requested_by: "alice".into(),
        state,
        state_time: at,
        failure: None,
        created: at,
    }
}

#[test]
fn build_requests_are_started_followed_and_finished() {
    let started = ago(secs(600));
    type Case = (
        &'static str,
        Vec<Image>,
        BuildRequest,
        Vec<Failure>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "pending, all providers, nothing running",
            settled(),
            build_request(1, None, "base", BuildRequestState::Pending, NOW),
            vec![],
            vec![
                "build base@cloud1 for request 1 (requested)",
                "build base@cloud2 for request 1 (requested)",
            ],
        ),
        (
            "pending, one build running: waits",
            [
                settled(),
                vec![upload(
                    9,
                    "cloud2",
                    "base",
                    ImageState::Building,
                    ago(secs(5)),
                )],
            ]
            .concat(),
            build_request(1, None, "base", BuildRequestState::Pending, NOW),
            vec![],
            vec![],
        ),
        (
            "pending, unknown provider",
            settled(),
            build_request(1, Some("nope"), "base", BuildRequestState::Pending, NOW),
            vec![],
            vec!["request 1 failed: there is no provider nope in the config"],
        ),
        (
            "pending, provider without the image",
            settled(),
            build_request(1, Some("cloud2"), "big", BuildRequestState::Pending, NOW),
            vec![],
            vec!["request 1 failed: provider cloud2 has no image big"],
        ),
        (
            "started, still building",
            [
                settled(),
                vec![upload(9, "cloud1", "big", ImageState::Building, started)],
            ]
            .concat(),
            build_request(
                1,
                Some("cloud1"),
                "big",
                BuildRequestState::Started,
                started,
            ),
            vec![],
            vec![],
        ),
        (
            "started, ready since",
            [
                settled(),
                vec![upload(9, "cloud1", "big", ImageState::Ready, started)],
            ]
            .concat(),
            build_request(
                1,
                Some("cloud1"),
                "big",
                BuildRequestState::Started,
                started,
            ),
            vec![],
            vec!["request 1 done"],
        ),
        (
            "started, failed since",
            settled(),
            build_request(
                1,
                Some("cloud1"),
                "big",
                BuildRequestState::Started,
                started,
            ),
            vec![build_failure("cloud1", "big", ago(secs(10)))],
            vec![
                "request 1 failed: the build of image big on provider cloud1 failed: setup script exited with 1",
            ],
        ),
    ];
    for (name, images, request, failures, expected) in cases {
        let snap = Snapshot {
            images,
            build_requests: vec![request],
            failures,
            ..Snapshot::default()
        };
        assert_eq!(summary(&plan(&snap, &config(), NOW)), expected, "{name}");
    }
}

#[test]
fn a_request_and_a_missing_image_make_one_build() {
    let snap = Snapshot {
        images: settled()[1..].to_vec(),
        build_requests: vec![build_request(
            4,
            Some("cloud1"),
            "base",
            BuildRequestState::Pending,
            NOW,
        )],
        ..Snapshot::default()
    };
    assert_eq!(
        summary(&plan(&snap, &config(), NOW)),
        ["build base@cloud1 for request 4 (requested)"]
    );
}

#[test]
fn requested_builds_do_not_back_off() {
    let mut snap = Snapshot {
        images: settled(),
        build_requests: vec![build_request(
            4,
            Some("cloud1"),
            "base",
            BuildRequestState::Pending,
            NOW,
        )],
        ..Snapshot::default()
    };
    snap.failures
        .push(build_failure("cloud1", "base", ago(secs(1))));
    assert_eq!(
        summary(&plan(&snap, &config(), NOW)),
        ["build base@cloud1 for request 4 (requested)"]
    );
}

fn arb_state() -> impl Strategy<Value = ImageState> {
    prop_oneof![
        Just(ImageState::Building),
        Just(ImageState::Ready),
        Just(ImageState::Delete)
    ]
}

fn arb_upload() -> impl Strategy<Value = (String, String, ImageState, u64, u64)> {
    (
        prop_oneof![Just("cloud1"), Just("cloud2"), Just("gone")].prop_map(str::to_owned),
        prop_oneof![Just("base"), Just("big")].prop_map(str::to_owned),
        arb_state(),
        0u64..40 * 3600,
        0u64..40 * 3600,
    )
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        proptest::collection::vec(arb_upload(), 0..24),
        proptest::collection::vec(
            (
                prop_oneof![Just("cloud1"), Just("cloud2")],
                prop_oneof![Just("base"), Just("big")],
                0u64..7200,
            ),
            0..6,
        ),
        proptest::collection::vec(
            (
                proptest::option::of(prop_oneof![Just("cloud1"), Just("cloud2"), Just("x")]),
                any::<bool>(),
            ),
            0..3,
        ),
    )
        .prop_map(|(uploads, failures, requests)| {
            let images = uploads
                .into_iter()
                .enumerate()
                .map(|(n, (provider, image, state, version_ago, state_ago))| {
                    let version = ago(secs(version_ago));
                    Image {
                        state_time: ago(secs(state_ago.min(version_ago))),
                        ..upload(n as u64 + 1, &provider, &image, state, version)
                    }
                })
                .collect();
            let failures = failures
                .into_iter()
                .map(|(provider, image, at)| build_failure(provider, image, ago(secs(at))))
                .collect();
            let build_requests = requests
                .into_iter()
                .enumerate()
                .map(|(n, (provider, started))| {
                    let state = if started {
                        BuildRequestState::Started
                    } else {
                        BuildRequestState::Pending
                    };
                    build_request(n as u64 + 1, provider, "base", state, ago(secs(600)))
                })
                .collect();
            Snapshot {
                images,
                failures,
                build_requests,
                ..Snapshot::default()
            }
        })
}

proptest! {
    #[test]
    fn plans_keep_the_invariants(snap in arb_snapshot(), large in -1i32..3) {
        let config = config_with(large, "");
        let plan1 = plan(&snap, &config, NOW);
        // Deterministic.
        prop_assert_eq!(&plan1, &plan(&snap, &config, NOW));
        let deleted: Vec<ImageId> = plan1.actions.iter().filter_map(|a| match a {
            ImageAction::Delete { upload, .. } => Some(*upload),
            _ => None,
        }).collect();
        // Never the newest or second-newest READY upload of a configured image.
        for provider in ["cloud1", "cloud2"] {
            for image in ["base", "big"] {
                let configured = config.providers.iter().any(|p| p.name.as_str() == provider
                    && p.images.iter().any(|i| i.name.as_str() == image));
                if !configured { continue; }
                let mut ready: Vec<&Image> = snap.images.iter().filter(|i| i.state == ImageState::Ready
                    && i.provider.as_str() == provider && i.name.as_str() == image).collect();
                ready.sort_by_key(|i| std::cmp::Reverse((i.version, i.id)));
                for kept in ready.iter().take(2) {
                    prop_assert!(!deleted.contains(&kept.id), "deleted kept upload {}", kept.id);
                }
            }
        }
        // Never two builds of one image on one provider at once.
        let mut building: Vec<(String, String)> = snap.images.iter()
            .filter(|i| i.state == ImageState::Building)
            .map(|i| (i.provider.to_string(), i.name.to_string()))
            .collect();
        building.sort();
        building.dedup();
        for action in &plan1.actions {
            if let ImageAction::Build { provider, image, .. } = action {
                let key = (provider.to_string(), image.to_string());
                prop_assert!(!building.contains(&key), "second build of {:?}", key);
                building.push(key);
            }
        }
        // Each upload is deleted at most once; the wakeup is in the future.
        let mut unique = deleted.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), deleted.len());
        if let Some(at) = plan1.next_wakeup {
            prop_assert!(at > NOW);
        }
    }
}
