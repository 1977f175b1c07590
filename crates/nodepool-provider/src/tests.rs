//! Tests of the provider layer: the fake cloud passes the conformance suite, and the rate
//! limiter, faults, tags and flavor choice behave as documented. Time is a `ManualClock`:
//! nothing sleeps for real.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use nodepool_model::{ExternalId, ImageId, InstallationId, NodeId, Timestamp};

use crate::conformance::{self, Harness};
use crate::*;

const T0: Timestamp = Timestamp::from_unix_seconds(1_400_000_000);

fn fake(clock: &Arc<ManualClock>, config: FakeConfig) -> FakeProvider {
    FakeProvider::new("fake".parse().unwrap(), clock.clone(), config)
}

/// Runs `future` to the end, moving the clock forward by 100 ms whenever it waits.
async fn drive<T>(clock: &ManualClock, future: impl Future<Output = T>) -> T {
    tokio::pin!(future);
    loop {
        tokio::select! {
            biased;
            out = &mut future => return out,
            () = tokio::task::yield_now() => clock.advance(Duration::from_millis(100)),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn the_fake_cloud_passes_the_conformance_suite() {
    let clock = Arc::new(ManualClock::new(T0));
    let tight = FakeConfig {
        max_instances: Some(2),
        ..FakeConfig::default()
    };
    let step = clock.clone();
    // A small page, so that listings of the 30 servers below go past one page.
    let paged = FakeConfig {
        page_size: 7,
        ..FakeConfig::default()
    };
    let harness = Harness {
        provider: Arc::new(fake(&clock, paged)),
        quota_of_two: Some(Arc::new(fake(&clock, tight))),
        base_image: "Ubuntu 22.04".into(),
        min_ram: 2048,
        patience: 120,
        wait: Box::new(move || {
            step.advance(Duration::from_secs(1));
            Box::pin(async {})
        }),
        many: 30,
        networks: Vec::new(),
        floating_pool: Some("public".into()),
        installation: InstallationId::new("conformance"),
    };
    runtime().block_on(conformance::run(&harness));
}

#[test]
fn calls_are_spaced_by_the_rate() {
    let clock = Arc::new(ManualClock::new(T0));
    let limited = Limited::new(
        fake(&clock, FakeConfig::default()),
        clock.clone(),
        Duration::from_secs(2),
    );
    let times = runtime().block_on(drive(&clock, async {
        let mut times = Vec::new();
        for _ in 0..3 {
            limited.list_flavors().await.unwrap();
            times.push(clock.now());
        }
        times
    }));
    let offsets: Vec<u64> = times
        .iter()
        .map(|t| t.saturating_since(T0).as_secs())
        .collect();
    assert_eq!(offsets, [0, 2, 4]);
    let stats = limited.stats()[op::LIST_FLAVORS];
    assert_eq!((stats.calls, stats.errors), (3, 0));
    assert_eq!(stats.waited, Duration::from_secs(4));
}

#[test]
fn creates_go_one_at_a_time_in_order_while_reads_do_not_wait() {
    let clock = Arc::new(ManualClock::new(T0));
    let slow = FakeConfig {
        create_latency: Duration::from_secs(3),
        ..FakeConfig::default()
    };
    let limited = Limited::new(fake(&clock, slow), clock.clone(), Duration::ZERO);
    let image = runtime()
        .block_on(limited.list_images())
        .unwrap()
        .into_iter()
        .find(|i| i.name == "Ubuntu 22.04")
        .unwrap()
        .id;
    let create = |name: &'static str| {
        let (limited, clock) = (&limited, clock.clone());
        let spec = ServerSpec::new(name, "2", image.clone());
        async move {
            let server = limited.create_server(&spec).await.unwrap();
            (server.name, clock.now().saturating_since(T0).as_secs())
        }
    };
    let list = async {
        limited.list_servers().await.unwrap();
        clock.now().saturating_since(T0).as_secs()
    };
    let (a, b, c, listed) = runtime().block_on(drive(&clock, async {
        tokio::join!(create("a"), create("b"), create("c"), list)
    }));
    // Each create answers 3 s after it started, and starts when the one before answered.
    assert_eq!(
        [a, b, c],
        [("a".into(), 3), ("b".into(), 6), ("c".into(), 9)]
    );
    assert_eq!(listed, 0, "a listing does not wait behind creates");
}

#[test]
fn a_server_deleted_while_it_snapshots_takes_the_image_with_it() {
    let clock = Arc::new(ManualClock::new(T0));
    let cloud = fake(&clock, FakeConfig::default());
    runtime().block_on(drive(&clock, async {
        let base = cloud.image_id("Ubuntu 22.04").unwrap();
        let mut servers = Vec::new();
        for name in ["early", "late"] {
            let server = cloud
                .create_server(&ServerSpec::new(name, "2", base.clone()))
                .await
                .unwrap();
            servers.push(server.id);
        }
        while cloud.get_server(&servers[1]).await.unwrap().status != ServerStatus::Active {
            tokio::task::yield_now().await;
        }
        let early = cloud
            .create_image(&servers[0], "early", &BTreeMap::new())
            .await
            .unwrap();
        let late = cloud
            .create_image(&servers[1], "late", &BTreeMap::new())
            .await
            .unwrap();
        let busy = cloud.get_server(&servers[1]).await.unwrap();
        assert_eq!(busy.task.as_deref(), Some("image_uploading"));
        assert_eq!(
            cloud
                .create_image(&servers[1], "again", &BTreeMap::new())
                .await
                .unwrap_err()
                .kind,
            ErrorKind::BadRequest,
            "one snapshot at a time"
        );
        // The image is active before the task ends.
        while cloud.get_image(&early).await.unwrap().status != ImageStatus::Active {
            tokio::task::yield_now().await;
        }
        assert!(cloud.get_server(&servers[0]).await.unwrap().task.is_some());
        cloud.delete_server(&servers[0]).await.unwrap();
        assert_eq!(
            cloud.get_image(&early).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        // Once the task has ended, the server goes and the image stays.
        while cloud.get_server(&servers[1]).await.unwrap().task.is_some() {
            tokio::task::yield_now().await;
        }
        cloud.delete_server(&servers[1]).await.unwrap();
        assert_eq!(
            cloud.get_image(&late).await.unwrap().status,
            ImageStatus::Active
        );
    }));
}

#[test]
fn retry_after_is_honoured_and_safe_calls_retried() {
    let clock = Arc::new(ManualClock::new(T0));
    let cloud = fake(&clock, FakeConfig::default());
    cloud.inject(Fault::Fail {
        operation: op::LIST_FLAVORS,
        nth: 1,
        kind: ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(10)),
        },
    });
    let limited = Limited::new(cloud, clock.clone(), Duration::ZERO);
    let flavors = runtime()
        .block_on(drive(&clock, limited.list_flavors()))
        .unwrap();
    assert!(!flavors.is_empty());
    assert!(clock.now().saturating_since(T0) >= Duration::from_secs(10));
    assert_eq!(limited.inner().calls(op::LIST_FLAVORS), 2);
    let stats = limited.stats()[op::LIST_FLAVORS];
    assert_eq!((stats.calls, stats.errors), (2, 1));
}

#[test]
fn transient_failures_are_retried_a_bounded_number_of_times() {
    let clock = Arc::new(ManualClock::new(T0));
    let cloud = fake(&clock, FakeConfig::default());
    for nth in 1..=10 {
        cloud.inject(Fault::Fail {
            operation: op::LIST_SERVERS,
            nth,
            kind: ErrorKind::Transient,
        });
    }
    let limited = Limited::new(cloud, clock.clone(), Duration::ZERO);
    let error = runtime()
        .block_on(drive(&clock, limited.list_servers()))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert_eq!(
        error.to_string(),
        "fake: list_servers: transient failure: injected failure of call 4"
    );
    assert_eq!(
        limited.inner().calls(op::LIST_SERVERS),
        4,
        "four attempts, then the error"
    );
}

#[test]
fn creates_are_never_retried() {
    let clock = Arc::new(ManualClock::new(T0));
    let cloud = fake(&clock, FakeConfig::default());
    cloud.inject(Fault::LostCreate { nth: 1 });
    let limited = Limited::new(cloud, clock.clone(), Duration::ZERO);
    let rt = runtime();
    let image = rt.block_on(limited.list_images()).unwrap().remove(0).id;
    let spec = ServerSpec::new("lost", "2", image);
    let error = rt
        .block_on(drive(&clock, limited.create_server(&spec)))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert_eq!(limited.inner().calls(op::CREATE_SERVER), 1);
    // The answer was lost, but the server exists: recovery finds it by its tags.
    let servers = rt.block_on(limited.list_servers()).unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].name, "lost");
}

#[test]
fn injected_cloud_failures() {
    let clock = Arc::new(ManualClock::new(T0));
    let cloud = fake(&clock, FakeConfig::default());
    cloud.inject(Fault::ServerError {
        nth: 2,
        message: "No valid host was found.".into(),
    });
    cloud.inject(Fault::SnapshotNeverFinishes { nth: 1 });
    let rt = runtime();
    let image = rt.block_on(cloud.list_images()).unwrap().remove(0).id;
    let first = rt
        .block_on(cloud.create_server(&ServerSpec::new("a", "2", image.clone())))
        .unwrap();
    let second = rt
        .block_on(cloud.create_server(&ServerSpec::new("b", "2", image)))
        .unwrap();
    assert_eq!(first.status, ServerStatus::Building);
    clock.advance(Duration::from_secs(5));
    let first = rt.block_on(cloud.get_server(&first.id)).unwrap();
    let second = rt.block_on(cloud.get_server(&second.id)).unwrap();
    assert_eq!(first.status, ServerStatus::Active);
    assert_eq!(
        (second.status, second.fault.as_deref()),
        (ServerStatus::Error, Some("No valid host was found."))
    );
    let snapshot = rt
        .block_on(cloud.create_image(&first.id, "snap", &BTreeMap::new()))
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        rt.block_on(cloud.get_image(&snapshot)).unwrap().status,
        ImageStatus::Pending
    );
    let error = rt
        .block_on(cloud.create_image(&second.id, "snap", &BTreeMap::new()))
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadRequest);
}

#[test]
fn floating_ips_and_addresses() {
    let clock = Arc::new(ManualClock::new(T0));
    let cloud = fake(&clock, FakeConfig::default());
    let rt = runtime();
    let image = rt.block_on(cloud.list_images()).unwrap().remove(0).id;
    let server = rt
        .block_on(cloud.create_server(&ServerSpec::new("a", "2", image)))
        .unwrap();
    assert_eq!(server.public_ip(), None, "a private fixed address only");
    assert!(server.private_ip().is_some());
    let ip = rt
        .block_on(cloud.create_floating_ip(&server.id, "public", &BTreeMap::new()))
        .unwrap();
    let server = rt.block_on(cloud.get_server(&server.id)).unwrap();
    assert_eq!(server.public_ip(), Some(ip.ip));
    assert_eq!(
        rt.block_on(cloud.create_floating_ip(&server.id, "nope", &BTreeMap::new()))
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    rt.block_on(cloud.delete_server(&server.id)).unwrap();
    let ips = rt.block_on(cloud.list_floating_ips()).unwrap();
    assert_eq!(ips.len(), 1);
    assert_eq!(
        ips[0].server, None,
        "unmapped, still allocated: a leak to clean up"
    );
    rt.block_on(cloud.delete_floating_ip(&ips[0].id)).unwrap();
    assert!(rt.block_on(cloud.list_floating_ips()).unwrap().is_empty());
}

#[test]
fn limits_follow_usage() {
    let clock = Arc::new(ManualClock::new(T0));
    let cloud = fake(
        &clock,
        FakeConfig {
            max_instances: Some(3),
            max_cores: Some(4),
            ..FakeConfig::default()
        },
    );
    let rt = runtime();
    let image = rt.block_on(cloud.list_images()).unwrap().remove(0).id;
    rt.block_on(cloud.create_server(&ServerSpec::new("a", "3", image.clone())))
        .unwrap();
    let limits = rt.block_on(cloud.limits()).unwrap();
    assert_eq!(
        limits.instances,
        Limit {
            max: Some(3),
            used: 1
        }
    );
    assert_eq!(limits.cores.available(), Some(2));
    assert_eq!(limits.ram_mb.available(), None);
    let error = rt
        .block_on(cloud.create_server(&ServerSpec::new("b", "4", image)))
        .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::QuotaExceeded,
        "4 more cores do not fit in 2"
    );
}

#[test]
fn ownership_tags() {
    let ours = InstallationId::new("a1b2");
    let tags = Tags {
        installation: ours.clone(),
        provider: "cloud1".parse().unwrap(),
        owner: Owner::Node(NodeId::new(42)),
    };
    let metadata = tags.to_metadata();
    assert_eq!(
        metadata,
        BTreeMap::from([
            ("nodepool-installation".to_owned(), "a1b2".to_owned()),
            ("nodepool-node-id".to_owned(), "42".to_owned()),
            ("nodepool-provider".to_owned(), "cloud1".to_owned()),
        ])
    );
    assert_eq!(
        classify(&metadata, &ours),
        Ownership::Ours {
            provider: "cloud1".into(),
            owner: Owner::Node(NodeId::new(42))
        }
    );
    let image = Tags {
        owner: Owner::Image(ImageId::new(7)),
        ..tags
    }
    .to_metadata();
    assert_eq!(
        classify(&image, &ours),
        Ownership::Ours {
            provider: "cloud1".into(),
            owner: Owner::Image(ImageId::new(7))
        }
    );
    assert_eq!(
        classify(&metadata, &InstallationId::new("other")),
        Ownership::OtherInstallation(ours.clone())
    );
    assert_eq!(classify(&BTreeMap::new(), &ours), Ownership::Foreign);
    let mut edited = metadata.clone();
    edited.insert("nodepool-node-id".into(), "forty-two".into());
    assert_eq!(classify(&edited, &ours), Ownership::OursUnreadable);
}

#[test]
fn flavor_choice() {
    let flavor = |id: &str, name: &str, ram_mb, vcpus| Flavor {
        id: id.into(),
        name: name.into(),
        ram_mb,
        vcpus,
    };
    let flavors = [
        flavor("a", "general-8", 8192, 4),
        flavor("b", "performance-8", 8192, 2),
        flavor("c", "performance-16", 16384, 4),
        flavor("d", "general-2", 2048, 1),
    ];
    let pick = |ram, filter| pick_flavor(&flavors, ram, filter).map(|f| f.id.as_str());
    assert_eq!(pick(4096, None), Some("b"), "least RAM, then fewest vCPUs");
    assert_eq!(pick(8192, Some("general")), Some("a"));
    assert_eq!(pick(9000, Some("performance")), Some("c"));
    assert_eq!(pick(0, None), Some("d"));
    assert_eq!(pick(32768, None), None);
}

#[test]
fn public_address_choice() {
    let address = |ip: &str, kind| Address {
        ip: ip.parse::<IpAddr>().unwrap(),
        kind,
        network: "n".into(),
    };
    let mut server = Server::new(ExternalId::new("s"), "s", ServerStatus::Active);
    server.addresses = vec![
        address("10.1.2.3", AddressKind::Fixed),
        address("2001:db8::5", AddressKind::Fixed),
    ];
    assert_eq!(server.public_ip(), Some("2001:db8::5".parse().unwrap()));
    server
        .addresses
        .push(address("198.51.100.9", AddressKind::Fixed));
    assert_eq!(
        server.public_ip(),
        Some("198.51.100.9".parse().unwrap()),
        "IPv4 first, as in 2014"
    );
    server
        .addresses
        .push(address("203.0.113.4", AddressKind::Floating));
    assert_eq!(server.public_ip(), Some("203.0.113.4".parse().unwrap()));
    assert_eq!(server.private_ip(), Some("10.1.2.3".parse().unwrap()));
    server.addresses = vec![address("100.64.0.1", AddressKind::Fixed)];
    assert_eq!(
        server.public_ip(),
        None,
        "carrier-grade NAT space is not public"
    );
}

#[test]
fn a_listing_is_one_call_per_page_and_any_page_can_fail() {
    let clock = Arc::new(ManualClock::new(T0));
    let config = FakeConfig {
        page_size: 4,
        ..FakeConfig::default()
    };
    let cloud = fake(&clock, config);
    let rt = runtime();
    let image = rt.block_on(cloud.list_images()).unwrap().remove(0).id;
    assert_eq!(rt.block_on(cloud.list_servers()).unwrap().len(), 0);
    assert_eq!(
        cloud.calls(op::LIST_SERVERS),
        1,
        "an empty listing is one call"
    );
    for i in 0..9 {
        let spec = ServerSpec::new(format!("s{i}"), "1", image.clone());
        rt.block_on(cloud.create_server(&spec)).unwrap();
    }
    assert_eq!(rt.block_on(cloud.list_servers()).unwrap().len(), 9);
    assert_eq!(
        cloud.calls(op::LIST_SERVERS),
        1 + 3,
        "9 servers are 3 pages of 4"
    );
    cloud.inject(Fault::Fail {
        operation: op::LIST_SERVERS,
        nth: 6,
        kind: ErrorKind::Transient,
    });
    let error = rt.block_on(cloud.list_servers()).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient, "the second page failed");
}

#[test]
fn tags_survive_a_description() {
    let tags = Tags {
        installation: InstallationId::new("3f0c"),
        provider: "rax dfw".parse().unwrap(),
        owner: Owner::Node(NodeId::new(42)),
    }
    .to_metadata();
    let line = to_description(&tags);
    assert_eq!(
        line,
        "nodepool-installation=3f0c nodepool-node-id=42 nodepool-provider=rax dfw"
    );
    assert_eq!(from_description(&line), tags);
    assert!(from_description("").is_empty());
    assert!(from_description("made by hand=yes").is_empty());
    let long = Tags {
        provider: "p".repeat(255).parse().unwrap(),
        ..Tags {
            installation: InstallationId::new("3f0c"),
            provider: "x".parse().unwrap(),
            owner: Owner::Image(ImageId::new(1)),
        }
    };
    assert_eq!(to_description(&long.to_metadata()).len(), DESCRIPTION_LIMIT);
}
