//! Tests of the domain types.

use std::time::Duration;

use crate::*;

#[test]
fn names_reject_what_cannot_be_a_name() {
    assert_eq!(ProviderName::new(""), Err(NameError::Empty));
    assert_eq!(ProviderName::new("   "), Err(NameError::Empty));
    assert_eq!(LabelName::new(" trusty"), Err(NameError::Whitespace));
    assert_eq!(LabelName::new("a\tb"), Err(NameError::Control('\t')));
    assert_eq!(
        ImageName::new("x".repeat(256)),
        Err(NameError::TooLong { len: 256 })
    );
    assert!(ImageName::new("x".repeat(255)).is_ok());
    assert_eq!(ProviderName::new("rax-dfw").unwrap().to_string(), "rax-dfw");
}

#[test]
fn state_names_round_trip_and_match_2014() {
    let names: Vec<&str> = NodeState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "building", "ready", "in-use", "used", "delete", "hold", "test"
        ]
    );
    for state in NodeState::ALL {
        assert_eq!(state.as_str().parse::<NodeState>(), Ok(*state));
    }
    for state in ImageState::ALL {
        assert_eq!(state.as_str().parse::<ImageState>(), Ok(*state));
    }
    let err = "readyy".parse::<NodeState>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown node state \"readyy\"; expected one of: building, ready, in-use, used, delete, hold, test"
    );
}

#[test]
fn node_transitions() {
    use NodeState::*;
    let allowed = |from: NodeState| -> Vec<NodeState> {
        NodeState::ALL
            .iter()
            .copied()
            .filter(|to| from.can_become(*to))
            .collect()
    };
    assert_eq!(allowed(Building), [Ready, Delete, Test]);
    assert_eq!(allowed(Ready), [InUse, Used, Delete, Hold]);
    assert_eq!(allowed(InUse), [Ready, Used, Delete, Hold]);
    assert_eq!(allowed(Used), [Delete]);
    assert_eq!(allowed(Test), [Ready, Delete]);
    assert_eq!(allowed(Hold), [Delete]);
    assert_eq!(allowed(Delete), []);
    assert!(Building.is_supply() && Ready.is_supply() && Test.is_supply());
    assert!(!Used.is_supply() && !Hold.is_supply() && !InUse.is_supply());
}

#[test]
fn image_and_request_transitions() {
    use ImageState::*;
    assert!(Building.can_become(Ready) && Building.can_become(Delete) && Ready.can_become(Delete));
    assert!(!Ready.can_become(Building) && !Delete.can_become(Ready) && !Delete.can_become(Delete));
    assert!(RequestState::Requested.can_become(RequestState::Fulfilled));
    assert!(!RequestState::Failed.can_become(RequestState::Fulfilled));
}

#[test]
fn timestamps() {
    let t = Timestamp::from_unix_seconds(1_395_705_600);
    assert_eq!(t.to_string(), "2014-03-25T00:00:00Z");
    assert_eq!(
        Timestamp::from_unix_millis(1_395_705_600_250).to_string(),
        "2014-03-25T00:00:00.250Z"
    );
    let later = t.saturating_add(Duration::from_secs(8 * 3600));
    assert_eq!(later.saturating_since(t), Duration::from_secs(8 * 3600));
    assert_eq!(t.saturating_since(later), Duration::ZERO);
    assert_eq!(later.hours_since(t), 8.0);
    assert_eq!(
        format!(
            "{:.2}",
            t.saturating_add(Duration::from_secs(36)).hours_since(t)
        ),
        "0.01"
    );
    assert_eq!(Timestamp::from_datetime(t.to_datetime()), t);
    assert_eq!(Timestamp::from_unix_millis(-1).unix_seconds(), -1);
    assert_eq!(
        Timestamp::from_unix_millis(i64::MAX).saturating_add(Duration::MAX),
        Timestamp::from_unix_millis(i64::MAX)
    );
}

#[test]
fn nodename_is_the_short_hostname() {
    let node = Node {
        id: NodeId::new(1),
        provider: ProviderName::new("fake-provider").unwrap(),
        label: LabelName::new("fake-label").unwrap(),
        az: None,
        hostname: Some("fake-label-fake-provider-1.slave.openstack.org".into()),
        external_id: None,
        public_ip: None,
        private_ip: None,
        state: NodeState::Ready,
        state_time: Timestamp::EPOCH,
        image: None,
        request: None,
        hold: None,
        created: Timestamp::EPOCH,
        host_keys: Vec::new(),
    };
    assert_eq!(node.nodename(), Some("fake-label-fake-provider-1"));
}

#[test]
fn durations_read_like_a_person_wrote_them() {
    use crate::Human;
    use std::time::Duration;
    let human = |ms: u64| Human(Duration::from_millis(ms)).to_string();
    assert_eq!(human(0), "0s");
    assert_eq!(human(250), "250ms");
    assert_eq!(human(90_000), "1m 30s");
    assert_eq!(human(8 * 3_600_000), "8h");
    assert_eq!(human(8 * 3_600_000 - 1_000), "7h 59m 59s");
    assert_eq!(human(26 * 3_600_000 + 5_000), "1d 2h 5s");
}

/// The codes are a persisted interface (the store, `nodepool show`, the API, metrics
/// labels): this list changes only by adding to it.
#[test]
fn reason_codes_keep_their_strings() {
    use crate::ReasonCode;
    let codes: Vec<&str> = ReasonCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        codes,
        [
            "demand",
            "claim",
            "unservable",
            "request-timeout",
            "used",
            "marked",
            "vanished",
            "other-installation",
            "provider-removed",
            "label-removed",
            "label-disabled",
            "removal-pending",
            "orphaned",
            "launch-timeout",
            "test-timeout",
            "node-cleanup",
            "leaked",
            "template-busy",
            "suspected-leak",
            "held",
            "in-use",
            "no-image",
            "backoff",
            "at-capacity",
            "no-flavor",
            "not-connected",
            "missing",
            "scheduled",
            "requested",
            "retention",
            "image-removed",
            "build-timeout",
            "interrupted",
            "build-running",
            "build-done",
            "build-failed",
            "launch-failed",
            "launched",
            "built",
            "setup-output",
            "deleted",
            "host-key-changed",
            "check-failed",
            "server-created",
            "snapshot-created",
            "addresses",
            "host-keys",
            "released",
            "operator-hold",
            "claimed",
            "ready-node",
            "fulfilled",
            "request-ended",
            "operator",
            "operator-delete",
            "canceled",
        ]
    );
    for code in ReasonCode::ALL {
        assert_eq!(&ReasonCode::parse(code.as_str()), code);
        assert!(code.is_known());
    }
    // A code a newer nodepool wrote comes back as it was stored.
    let newer = ReasonCode::parse("quota-exceeded-v2");
    assert!(!newer.is_known());
    assert_eq!(newer.to_string(), "quota-exceeded-v2");
}

#[test]
fn failure_kinds_are_a_pinned_list_and_unknown_ones_read_back_as_unknown() {
    use crate::FailureKind;
    let stored: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        stored,
        [
            "quota",
            "auth",
            "cloud-error",
            "cloud-refused",
            "timeout",
            "ssh",
            "script",
            "store",
            "config",
            "unknown"
        ]
    );
    for kind in FailureKind::ALL {
        assert_eq!(FailureKind::parse(kind.as_str()), *kind);
    }
    assert_eq!(FailureKind::parse("gpu-shortage"), FailureKind::Unknown);
}

#[test]
fn backoff_doubles_from_its_first_wait_up_to_its_longest() {
    use crate::Backoff;
    use std::time::Duration;
    let backoff = Backoff {
        first: Duration::from_secs(10),
        max: Duration::from_secs(300),
    };
    let waits: Vec<u64> = (0..8).map(|n| backoff.wait(n).as_secs()).collect();
    assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(backoff.wait(usize::MAX), Duration::from_secs(300));
}

#[test]
fn deadlines_are_strict() {
    use std::time::Duration;
    let start = Timestamp::from_unix_seconds(100);
    assert_eq!(
        start.first_past(Duration::from_secs(8)),
        Timestamp::from_unix_millis(108_001)
    );
}
