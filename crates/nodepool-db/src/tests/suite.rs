//! The store's behaviour, the same on every backend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use nodepool_model::{
    Attempt, BuildRequestState, ExternalId, Failure, FailureKind, HoldNote, ImageName, ImageState,
    LabelName, Node, NodeId, NodeState, ProviderName, Reason, ReasonCode, RequestState, Subject,
    Timestamp,
};

use super::support::{T0, TestDb};
use crate::{Acting, ImageFilter, NewImage, NewNode, NodeFilter, Store, StoreError};

fn at(seconds: u64) -> Timestamp {
    T0.saturating_add(Duration::from_secs(seconds))
}

fn provider(name: &str) -> ProviderName {
    ProviderName::new(name).unwrap()
}

fn label(name: &str) -> LabelName {
    LabelName::new(name).unwrap()
}

fn why(code: &'static str) -> Reason {
    Reason::new(ReasonCode::parse(code), format!("because of {code}"))
}

/// Nodes of `label` on `p`, launched and ready at `now`, oldest first by one second each.
fn ready_nodes(store: &Store, p: &str, l: &str, count: usize, now: Timestamp) -> Vec<Node> {
    let new: Vec<NewNode> = (0..count)
        .map(|_| NewNode::new(provider(p), label(l)))
        .collect();
    let nodes = store.create_nodes(&new, now, &why("min-ready")).unwrap();
    nodes
        .into_iter()
        .enumerate()
        .map(|(i, node)| {
            let when = now.saturating_add(Duration::from_secs(i as u64));
            store
                .attach_node_server(
                    node.id,
                    &ExternalId::new(format!("srv-{p}-{}", node.id)),
                    when,
                )
                .unwrap();
            store
                .set_node_state(node.id, NodeState::Ready, when, &why("ssh-ok"))
                .unwrap()
        })
        .collect()
}

fn whats(store: &Store, subject: Subject) -> Vec<String> {
    store
        .events(subject)
        .unwrap()
        .into_iter()
        .map(|e| e.what)
        .collect()
}

pub(crate) fn migrations_and_installation_id(db: &TestDb) {
    let store = &db.store;
    let id = store.installation_id().unwrap();
    assert_eq!(id.as_str().len(), 32);
    assert!(id.as_str().chars().all(|c| c.is_ascii_hexdigit()));
    // Migrating again applies nothing and keeps the installation.
    assert_eq!(store.migrate(at(10)).unwrap(), Vec::<String>::new());
    let again = Store::open_and_migrate(&db.uri, "another", at(20)).unwrap();
    assert_eq!(again.installation_id().unwrap(), id);
    again.check_schema().unwrap();
}

pub(crate) fn a_newer_schema_is_refused(db: &TestDb) {
    use diesel::RunQueryDsl;
    let mut conn = db.store.conn().unwrap();
    diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ('29990101000000')")
        .execute(&mut *conn)
        .unwrap();
    drop(conn);
    let error = db.store.migrate(at(1)).unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the store's schema is newer than this nodepool: it has migration 29990101000000, this binary knows up to 20261203000005; upgrade nodepool (a downgrade would lose data)"
    );
    assert!(matches!(
        db.store.check_schema(),
        Err(StoreError::SchemaTooNew { .. })
    ));
}

pub(crate) fn an_unmigrated_store_says_so(db: &TestDb) {
    // A second, empty database next to the test's.
    let uri = match &db.uri {
        nodepool_config::DbUri::Sqlite(path) => {
            nodepool_config::DbUri::Sqlite(path.with_file_name("empty.sqlite"))
        }
        other => other.clone(),
    };
    if let nodepool_config::DbUri::Sqlite(_) = uri {
        let store = Store::open(&uri, "reader").unwrap();
        assert!(matches!(
            store.check_schema(),
            Err(StoreError::NotInitialised(_))
        ));
        assert!(matches!(
            store.installation_id(),
            Err(StoreError::NotInitialised(_))
        ));
    }
    // On PostgreSQL, the same database before its first migration behaves the same; the
    // shared test database is migrated, so check the message shape instead.
    let message = StoreError::NotInitialised("sqlite:///x".into()).to_string();
    assert_eq!(
        message,
        "the store at sqlite:///x is not set up yet: start nodepoold, or run a nodepool command that writes"
    );
}

pub(crate) fn node_lifecycle_with_events(db: &TestDb) {
    let store = &db.store;
    let new = NewNode::new(provider("cloud1"), label("small"))
        .az("az1")
        .hostname("small-cloud1-{node_id}.example.org");
    let node = store.create_node(&new, at(0), &why("min-ready")).unwrap();
    assert_eq!(node.state, NodeState::Building);
    assert_eq!(node.state_time, at(0));
    assert_eq!(
        node.hostname.as_deref(),
        Some(format!("small-cloud1-{}.example.org", node.id).as_str())
    );
    assert_eq!(
        node.nodename(),
        Some(format!("small-cloud1-{}", node.id).as_str())
    );
    assert_eq!(node.external_id, None);
    assert_eq!(store.intents().unwrap().nodes, std::slice::from_ref(&node));

    let node = store
        .attach_node_server(node.id, &"server-1".into(), at(5))
        .unwrap();
    assert_eq!(node.external_id, Some("server-1".into()));
    assert_eq!(
        node.state_time,
        at(0),
        "attaching a server is not a state change"
    );
    assert!(store.intents().unwrap().nodes.is_empty());
    // Attaching the same server again is a no-op, not an error.
    store
        .attach_node_server(node.id, &"server-1".into(), at(6))
        .unwrap();

    let public: IpAddr = "203.0.113.7".parse().unwrap();
    let private: IpAddr = "10.0.0.7".parse().unwrap();
    let node = store
        .set_node_addresses(node.id, Some(public), Some(private), at(30))
        .unwrap();
    assert_eq!(
        (node.public_ip, node.private_ip),
        (Some(public), Some(private))
    );

    let node = store
        .set_node_state(node.id, NodeState::Ready, at(60), &why("ssh-ok"))
        .unwrap();
    assert_eq!((node.state, node.state_time), (NodeState::Ready, at(60)));
    let node = store
        .set_node_state(node.id, NodeState::Used, at(120), &why("released"))
        .unwrap();
    let node = store
        .set_node_state(node.id, NodeState::Delete, at(180), &why("used"))
        .unwrap();
    assert_eq!(store.node(node.id).unwrap(), node);
    store
        .remove_node(node.id, at(200), &why("server-gone"))
        .unwrap();
    assert!(matches!(
        store.node(node.id),
        Err(StoreError::NotFound { .. })
    ));

    let events = store.events(Subject::Node(node.id)).unwrap();
    let shown: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} [{}] {}", e.seq, e.what, e.reason.code, e.actor))
        .collect();
    assert_eq!(
        shown,
        [
            "1 created [min-ready] test-daemon",
            "2 server server-1 [server-created] test-daemon",
            "3 addresses public 203.0.113.7 private 10.0.0.7 [addresses] test-daemon",
            "4 state ready [ssh-ok] test-daemon",
            "5 state used [released] test-daemon",
            "6 state delete [used] test-daemon",
            "7 removed [server-gone] test-daemon",
        ]
    );
    assert_eq!(events[3].time, at(60));
    assert_eq!(events[3].reason.text, "because of ssh-ok");
}

pub(crate) fn wrong_moves_are_refused_and_write_nothing(db: &TestDb) {
    let store = &db.store;
    let node = ready_nodes(store, "cloud1", "small", 1, at(0)).remove(0);
    let before = store.events(Subject::Node(node.id)).unwrap().len();

    let error = store
        .set_node_state(node.id, NodeState::Building, at(1), &why("x"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("node {} is ready; it cannot become building", node.id)
    );
    let error = store
        .set_node_state(node.id, NodeState::Test, at(1), &why("x"))
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidTransition { .. }));
    let error = store.remove_node(node.id, at(1), &why("x")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "node {}: is ready; only a node in delete can be removed",
            node.id
        )
    );
    let error = store
        .attach_node_server(node.id, &"other".into(), at(1))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "node {}: already has server srv-cloud1-{}",
            node.id, node.id
        )
    );
    let error = store
        .set_node_state(node.id, NodeState::Hold, at(1), &why("x"))
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid(_)));

    let missing = NodeId::new(999_999);
    let error = store
        .set_node_state(missing, NodeState::Delete, at(1), &why("x"))
        .unwrap_err();
    assert_eq!(error.to_string(), "node 999999 not found");
    assert!(matches!(
        store.attach_node_server(missing, &"s".into(), at(1)),
        Err(StoreError::NotFound { .. })
    ));

    // Nothing was written by any of these.
    assert_eq!(store.node(node.id).unwrap(), node);
    assert_eq!(store.events(Subject::Node(node.id)).unwrap().len(), before);
    assert!(store.events(Subject::Node(missing)).unwrap().is_empty());

    // Deleted is final.
    store
        .set_node_state(node.id, NodeState::Delete, at(2), &why("x"))
        .unwrap();
    assert!(matches!(
        store.set_node_state(node.id, NodeState::Ready, at(3), &why("x")),
        Err(StoreError::InvalidTransition { .. })
    ));
}

/// Names and cloud ids compare byte for byte on every backend (MySQL's default collation
/// would fold case): `Small` is another label, `ABC` another server.
pub(crate) fn names_and_ids_compare_byte_for_byte(db: &TestDb) {
    let store = &db.store;
    let lower = store
        .create_node(
            &NewNode::new(provider("cloud1"), label("small")),
            at(0),
            &why("x"),
        )
        .unwrap();
    let upper = store
        .create_node(
            &NewNode::new(provider("cloud1"), label("Small")),
            at(0),
            &why("x"),
        )
        .unwrap();
    store
        .attach_node_server(lower.id, &"abc".into(), at(1))
        .unwrap();
    store
        .attach_node_server(upper.id, &"ABC".into(), at(1))
        .unwrap();
    let small = store
        .nodes(&NodeFilter {
            label: Some(label("small")),
            ..NodeFilter::default()
        })
        .unwrap();
    assert_eq!(small.iter().map(|n| n.id).collect::<Vec<_>>(), [lower.id]);
    assert_eq!(small[0].external_id, Some("abc".into()));
}

pub(crate) fn duplicate_external_ids_are_refused(db: &TestDb) {
    let store = &db.store;
    let new = NewNode::new(provider("cloud1"), label("small"));
    let first = store.create_node(&new, at(0), &why("min-ready")).unwrap();
    let second = store.create_node(&new, at(0), &why("min-ready")).unwrap();
    store
        .attach_node_server(first.id, &"same".into(), at(1))
        .unwrap();
    let error = store
        .attach_node_server(second.id, &"same".into(), at(1))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "node {}: cloud id \"same\" on provider cloud1 already belongs to another record",
            second.id
        )
    );
    assert_eq!(store.node(second.id).unwrap().external_id, None);
    assert_eq!(whats(store, Subject::Node(second.id)), ["created"]);
    // The same server id on another provider is a different server.
    let elsewhere = store
        .create_node(
            &NewNode::new(provider("cloud2"), label("small")),
            at(0),
            &why("x"),
        )
        .unwrap();
    store
        .attach_node_server(elsewhere.id, &"same".into(), at(1))
        .unwrap();

    let image = store
        .create_image(
            &NewImage::new(provider("cloud1"), ImageName::new("u").unwrap(), at(0)),
            at(0),
            &why("x"),
        )
        .unwrap();
    let other = store
        .create_image(
            &NewImage::new(provider("cloud1"), ImageName::new("u").unwrap(), at(1)),
            at(1),
            &why("x"),
        )
        .unwrap();
    store
        .attach_image_snapshot(image.id, &"img".into(), at(2))
        .unwrap();
    assert!(matches!(
        store.attach_image_snapshot(other.id, &"img".into(), at(2)),
        Err(StoreError::DuplicateExternalId { .. })
    ));
}

pub(crate) fn holds(db: &TestDb) {
    let store = &db.store;
    let node = ready_nodes(store, "cloud1", "small", 1, at(0)).remove(0);
    let note = HoldNote {
        reason: "debugging a flaky job".into(),
        by: "alice".into(),
    };
    let held = store
        .hold_node(node.id, &note, at(100), Acting::Anyone)
        .unwrap();
    assert_eq!(
        (held.state, held.state_time, held.hold.clone()),
        (NodeState::Hold, at(100), Some(note.clone()))
    );
    let last = store.events(Subject::Node(node.id)).unwrap().pop().unwrap();
    assert_eq!(
        (last.what.as_str(), last.reason.text.as_str()),
        ("state hold", "held by alice: debugging a flaky job")
    );
    assert!(matches!(
        store.set_node_state(node.id, NodeState::Ready, at(101), &why("x")),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.hold_node(node.id, &note, at(101), Acting::Anyone),
        Err(StoreError::InvalidTransition { .. })
    ));
    let deleted = store
        .set_node_state(node.id, NodeState::Delete, at(102), &why("operator"))
        .unwrap();
    assert_eq!(deleted.hold, Some(note), "the note stays for the record");
}

pub(crate) fn image_lifecycle(db: &TestDb) {
    let store = &db.store;
    let name = ImageName::new("ubuntu-jammy").unwrap();
    let build = store
        .request_image_build(Some(&provider("cloud1")), &name, "alice", at(0))
        .unwrap();
    let image = store
        .create_image(
            &NewImage::new(provider("cloud1"), name.clone(), at(10)).for_request(build.id),
            at(10),
            &why("operator"),
        )
        .unwrap();
    assert_eq!(
        (image.state, image.version, image.external_id.clone()),
        (ImageState::Building, at(10), None)
    );
    assert_eq!(
        store.intents().unwrap().images,
        std::slice::from_ref(&image)
    );
    let image = store
        .attach_image_template(
            image.id,
            &"tmpl-1".into(),
            "ubuntu-jammy-1395705610.template.example.org",
            at(11),
        )
        .unwrap();
    assert_eq!(
        image.hostname.as_deref(),
        Some("ubuntu-jammy-1395705610.template.example.org")
    );
    assert!(store.intents().unwrap().images.is_empty());
    let image = store
        .attach_image_snapshot(image.id, &"snap-1".into(), at(500))
        .unwrap();
    let image = store
        .set_image_state(
            image.id,
            ImageState::Ready,
            at(900),
            &why("snapshot-active"),
        )
        .unwrap();
    assert_eq!(
        (image.state, image.state_time),
        (ImageState::Ready, at(900))
    );
    assert!(matches!(
        store.attach_image_snapshot(image.id, &"snap-2".into(), at(901)),
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.set_image_state(image.id, ImageState::Building, at(901), &why("x")),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.remove_image(image.id, at(901), &why("x")),
        Err(StoreError::Conflict { .. })
    ));

    let by_request = store
        .images(&ImageFilter {
            build_request: Some(build.id),
            ..ImageFilter::default()
        })
        .unwrap();
    assert_eq!(by_request, std::slice::from_ref(&image));
    store
        .set_image_state(image.id, ImageState::Delete, at(1000), &why("retention"))
        .unwrap();
    store
        .remove_image(image.id, at(1001), &why("gone"))
        .unwrap();
    assert!(store.images(&ImageFilter::default()).unwrap().is_empty());
    assert_eq!(
        whats(store, Subject::Image(image.id)),
        [
            "created",
            "template server tmpl-1 (ubuntu-jammy-1395705610.template.example.org)",
            "snapshot snap-1",
            "state ready",
            "state delete",
            "removed"
        ]
    );
}

pub(crate) fn requests_are_served_oldest_ready_first(db: &TestDb) {
    let store = &db.store;
    let small = ready_nodes(store, "cloud1", "small", 3, at(0));
    let large = ready_nodes(store, "cloud1", "large", 1, at(0));
    let request = store
        .create_request(
            &[label("small"), label("large"), label("small")],
            "zuul",
            5,
            at(100),
        )
        .unwrap();
    assert_eq!(
        (request.state, request.priority, request.requestor.as_str()),
        (RequestState::Requested, 5, "zuul")
    );
    assert!(request.nodes.is_empty());

    let claimed = store
        .claim_ready_nodes(request.id, &label("small"), 10, at(101))
        .unwrap();
    let ids: Vec<NodeId> = claimed.iter().map(|n| n.id).collect();
    assert_eq!(
        ids,
        [small[0].id, small[1].id],
        "the two oldest ready nodes, no more than wanted"
    );
    assert!(claimed.iter().all(|n| n.state == NodeState::InUse
        && n.request == Some(request.id)
        && n.state_time == at(101)));
    assert_eq!(store.node(small[2].id).unwrap().state, NodeState::Ready);
    assert_eq!(
        store.request(request.id).unwrap().state,
        RequestState::Requested
    );
    // Nothing more is wanted of this label.
    assert!(
        store
            .claim_ready_nodes(request.id, &label("small"), 10, at(102))
            .unwrap()
            .is_empty()
    );

    let claimed = store
        .claim_ready_nodes(request.id, &label("large"), 1, at(103))
        .unwrap();
    assert_eq!(claimed[0].id, large[0].id);
    let request = store.request(request.id).unwrap();
    assert_eq!(
        (request.state, request.state_time),
        (RequestState::Fulfilled, at(103))
    );
    assert_eq!(
        request.nodes,
        [small[0].id, large[0].id, small[1].id],
        "in the order the labels were asked"
    );
    assert_eq!(
        whats(store, Subject::Request(request.id)),
        [
            "created".to_owned(),
            format!("assigned node {}", small[0].id),
            format!("assigned node {}", small[1].id),
            format!("assigned node {}", large[0].id),
            "state fulfilled".to_owned()
        ]
    );
    let node_events = store.events(Subject::Node(small[0].id)).unwrap();
    assert_eq!(
        node_events.last().unwrap().reason.text,
        format!("assigned to request {} of zuul", request.id)
    );

    // Given back (a cancelled request), a node is ready again and belongs to no request.
    let back = store
        .set_node_state(small[0].id, NodeState::Ready, at(200), &why("cancelled"))
        .unwrap();
    assert_eq!((back.state, back.request), (NodeState::Ready, None));
    assert!(store.create_request(&[], "zuul", 0, at(1)).is_err());
}

pub(crate) fn failed_and_finished_requests_get_no_nodes(db: &TestDb) {
    let store = &db.store;
    ready_nodes(store, "cloud1", "small", 2, at(0));
    let request = store
        .create_request(&[label("nonexistent")], "ci", 0, at(1))
        .unwrap();
    let failed = store
        .fail_request(
            request.id,
            at(2),
            &Reason::new(ReasonCode::Unservable, "no label named nonexistent"),
        )
        .unwrap();
    assert_eq!(
        (failed.state, failed.failure.as_deref()),
        (RequestState::Failed, Some("no label named nonexistent"))
    );
    let error = store
        .claim_ready_nodes(request.id, &label("small"), 1, at(3))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "request {}: is failed; only a waiting request gets nodes",
            request.id
        )
    );
    assert!(matches!(
        store.fail_request(request.id, at(4), &why("x")),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.claim_ready_nodes(
            nodepool_model::RequestId::new(424_242),
            &label("small"),
            1,
            at(3)
        ),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.requests(Some(RequestState::Failed)).unwrap(),
        [failed]
    );
    assert!(
        store
            .requests(Some(RequestState::Requested))
            .unwrap()
            .is_empty()
    );
}

pub(crate) fn ending_a_request_returns_or_releases_its_nodes(db: &TestDb) {
    let store = &db.store;
    let small = ready_nodes(store, "cloud1", "small", 3, at(0));
    let by = |r: &str| Reason::new(ReasonCode::Canceled, format!("canceled by {r}"));

    // Canceled while waiting: the node it got goes back to ready, and is no longer its.
    let waiting = store
        .create_request(&[label("small"), label("large")], "zuul", 0, at(1))
        .unwrap();
    store
        .claim_ready_nodes(waiting.id, &label("small"), 1, at(2))
        .unwrap();
    let canceled = store
        .cancel_request(waiting.id, at(3), &by("zuul"))
        .unwrap();
    assert_eq!(
        (
            canceled.state,
            canceled.failure.as_deref(),
            canceled.nodes.len()
        ),
        (RequestState::Canceled, None, 0)
    );
    let back = store.node(small[0].id).unwrap();
    assert_eq!((back.state, back.request), (NodeState::Ready, None));
    assert!(matches!(
        store.cancel_request(waiting.id, at(4), &by("zuul")),
        Err(StoreError::InvalidTransition { .. })
    ));

    // Failed (timed out) while waiting: the same.
    let timed_out = store
        .create_request(&[label("small"), label("large")], "zuul", 0, at(5))
        .unwrap();
    let got = store
        .claim_ready_nodes(timed_out.id, &label("small"), 1, at(6))
        .unwrap();
    store
        .fail_request(timed_out.id, at(7), &why("request-timeout"))
        .unwrap();
    assert_eq!(store.node(got[0].id).unwrap().state, NodeState::Ready);

    // Canceled once fulfilled: nodes still in use are released; one already released
    // or held stays as it is.
    let fulfilled = store
        .create_request(&[label("small"), label("small")], "ci", 0, at(8))
        .unwrap();
    let nodes = store
        .claim_ready_nodes(fulfilled.id, &label("small"), 2, at(9))
        .unwrap();
    // A consumer changes only what is given to its own requests, checked in the same
    // transaction: another requestor is refused and the node is left as it was.
    for refused in [
        store.release_node(nodes[0].id, at(10), "other", Acting::For("other")),
        store.hold_node(
            nodes[0].id,
            &HoldNote {
                reason: "mine".into(),
                by: "other".into(),
            },
            at(10),
            Acting::For("other"),
        ),
    ] {
        assert!(
            matches!(refused, Err(StoreError::NotGivenTo { ref requestor, .. }) if requestor == "other"),
            "{refused:?}"
        );
    }
    assert_eq!(store.node(nodes[0].id).unwrap().state, NodeState::InUse);
    let released = store
        .release_node(nodes[0].id, at(10), "ci", Acting::For("ci"))
        .unwrap();
    assert_eq!(released.state, NodeState::Used);
    assert!(matches!(
        store.release_node(nodes[0].id, at(10), "ci", Acting::Anyone),
        Err(StoreError::InvalidTransition { .. })
    ));
    let canceled = store
        .cancel_request(fulfilled.id, at(11), &by("ci"))
        .unwrap();
    assert_eq!(canceled.state, RequestState::Canceled);
    assert_eq!(
        canceled.nodes.len(),
        2,
        "a fulfilled request keeps its history"
    );
    assert_eq!(store.node(nodes[1].id).unwrap().state, NodeState::Used);
    assert_eq!(
        whats(store, Subject::Node(nodes[1].id)).last().unwrap(),
        "state used"
    );
    assert!(matches!(
        store.cancel_request(nodepool_model::RequestId::new(424_242), at(12), &by("ci")),
        Err(StoreError::NotFound { .. })
    ));
}

fn daemon(id: &str, started: Timestamp) -> crate::DaemonRecord {
    crate::DaemonRecord {
        id: id.to_owned(),
        host: "ci-host".to_owned(),
        pid: 4242,
        started,
        expires: started,
    }
}

pub(crate) fn daemons_claim_work_and_a_dead_ones_work_is_free(db: &TestDb) {
    let store = &db.store;
    let installation = store.installation_id().unwrap();
    let lease = Duration::from_secs(30);
    let (a, b) = (daemon("a", at(0)), daemon("b", at(1)));
    store.renew_lease(&a, &installation, at(0), lease).unwrap();
    store.renew_lease(&b, &installation, at(1), lease).unwrap();
    assert_eq!(
        store
            .daemons()
            .unwrap()
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    let new = NewNode::new(provider("cloud1"), label("small"));
    let planned = crate::Planned::default();
    let node = store
        .create_node_checked(&new, &planned, "a", at(2), &why("min-ready"))
        .unwrap()
        .expect("nothing recorded since the plan");
    let subject = Subject::Node(node.id);
    assert!(
        store.claim_work(subject, "a", at(3)).unwrap(),
        "already a's"
    );
    assert!(
        !store.claim_work(subject, "b", at(3)).unwrap(),
        "a is alive"
    );
    assert_eq!(store.work_elsewhere("b", at(3)).unwrap(), [subject]);
    assert!(store.work_elsewhere("a", at(3)).unwrap().is_empty());
    assert_eq!(
        store.work_by_daemon().unwrap(),
        [("a".to_owned(), 1)].into_iter().collect()
    );

    // a stops renewing: once its lease is over, b may take the work.
    store.renew_lease(&b, &installation, at(25), lease).unwrap();
    assert!(
        store.work_elsewhere("b", at(31)).unwrap().is_empty(),
        "a is dead"
    );
    assert!(store.claim_work(subject, "b", at(31)).unwrap());
    assert_eq!(store.work_elsewhere("a", at(31)).unwrap(), [subject]);
    assert_eq!(
        store.work_by_daemon().unwrap(),
        [("b".to_owned(), 1)].into_iter().collect()
    );
    store.release_work(subject, "a").unwrap();
    assert_eq!(
        store.work_elsewhere("a", at(31)).unwrap(),
        [subject],
        "only b gives it back"
    );
    store.release_work(subject, "b").unwrap();
    assert!(store.work_elsewhere("a", at(31)).unwrap().is_empty());
    store.retire_daemon("b", at(32)).unwrap();
    assert_eq!(store.daemons().unwrap().len(), 1);

    // A new installation id while a's lease has lapsed: a's next renewal is refused, so
    // a never works on under the old id.
    let renewed = store.new_installation_id(at(40)).unwrap();
    assert!(matches!(
        store.renew_lease(&a, &installation, at(41), lease),
        Err(StoreError::InstallationChanged { ref now, .. }) if *now == renewed
    ));
    store.renew_lease(&a, &renewed, at(41), lease).unwrap();
}

pub(crate) fn launches_and_builds_recorded_since_the_plan_win(db: &TestDb) {
    let store = &db.store;
    let installation = store.installation_id().unwrap();
    for (id, started) in [("a", 0), ("b", 0)] {
        store
            .renew_lease(
                &daemon(id, at(started)),
                &installation,
                at(0),
                Duration::from_secs(30),
            )
            .unwrap();
    }
    let small_east = NewNode::new(provider("east"), label("small"));
    let small_west = NewNode::new(provider("west"), label("small"));
    let large_west = NewNode::new(provider("west"), label("large"));
    let other = NewNode::new(provider("north"), label("tiny"));
    let seen = crate::Planned::default();
    let first = store
        .create_node_checked(&small_east, &seen, "a", at(1), &why("min-ready"))
        .unwrap()
        .unwrap();
    // b planned on the same snapshot: a node of its label was recorded since.
    assert_eq!(
        store
            .create_node_checked(&small_west, &seen, "b", at(1), &why("min-ready"))
            .unwrap(),
        None
    );
    // Nor may b add to east, whatever the label: east's count changed.
    let east_large = NewNode::new(provider("east"), label("large"));
    assert_eq!(
        store
            .create_node_checked(&east_large, &seen, "b", at(1), &why("min-ready"))
            .unwrap(),
        None
    );
    // A node of another provider and label is not in the way.
    assert!(
        store
            .create_node_checked(&other, &seen, "b", at(1), &why("min-ready"))
            .unwrap()
            .is_some()
    );
    // a counted its own launch; b, on a snapshot that shows it, may launch too.
    let mine = crate::Planned {
        newest_node: None,
        recorded_since: vec![first.id],
    };
    assert!(
        store
            .create_node_checked(&large_west, &mine, "a", at(2), &why("min-ready"))
            .unwrap()
            .is_some()
    );
    let fresh = crate::Planned {
        newest_node: Some(NodeId::new(first.id.get() + 10)),
        recorded_since: Vec::new(),
    };
    assert!(
        store
            .create_node_checked(&small_west, &fresh, "b", at(3), &why("min-ready"))
            .unwrap()
            .is_some()
    );

    // One build of an image on a provider at a time.
    let build = NewImage::new(provider("east"), ImageName::new("base").unwrap(), at(4));
    let image = store
        .create_image_checked(&build, "a", at(4), &why("missing"))
        .unwrap()
        .expect("none building");
    assert_eq!(
        store
            .create_image_checked(&build, "b", at(4), &why("missing"))
            .unwrap(),
        None
    );
    assert!(
        !store
            .claim_work(Subject::Image(image.id), "b", at(5))
            .unwrap()
    );
    store
        .set_image_state(image.id, ImageState::Delete, at(6), &why("failed"))
        .unwrap();
    assert!(
        store
            .create_image_checked(&build, "b", at(7), &why("missing"))
            .unwrap()
            .is_some()
    );

    // Many writers on one snapshot: exactly one records its launch.
    let seen = crate::Planned {
        newest_node: Some(NodeId::new(1_000_000)),
        recorded_since: Vec::new(),
    };
    let before = store.nodes(&NodeFilter::default()).unwrap();
    let seen = crate::Planned {
        newest_node: before.iter().map(|n| n.id).max(),
        ..seen
    };
    let recorded: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (store, seen) = (store.clone(), seen.clone());
                scope.spawn(move || {
                    let new = NewNode::new(provider("south"), label("contended"));
                    store
                        .create_node_checked(&new, &seen, &format!("d{i}"), at(8), &why("x"))
                        .unwrap()
                        .is_some()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    assert_eq!(recorded, 1);
}

pub(crate) fn requests_that_ended_long_ago_are_forgotten(db: &TestDb) {
    let store = &db.store;
    let small = ready_nodes(store, "cloud1", "small", 2, at(0));
    let failed = store
        .create_request(&[label("gpu")], "ci", 0, at(1))
        .unwrap();
    store
        .fail_request(failed.id, at(2), &why("unservable"))
        .unwrap();
    let holding = store
        .create_request(&[label("small")], "ci", 0, at(3))
        .unwrap();
    store
        .claim_ready_nodes(holding.id, &label("small"), 1, at(4))
        .unwrap();
    let waiting = store
        .create_request(&[label("small")], "ci", 0, at(5))
        .unwrap();
    let build = store
        .request_image_build(None, &ImageName::new("base").unwrap(), "alice", at(6))
        .unwrap();
    for state in [BuildRequestState::Started, BuildRequestState::Failed] {
        store
            .set_build_request_state(build.id, state, at(7), &why("x"))
            .unwrap();
    }
    // Only what ended before the cut goes: not a request still holding its node, not one
    // still waiting.
    assert_eq!(store.prune_requests(at(100)).unwrap(), 2);
    let left: Vec<_> = store.requests(None).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, [holding.id, waiting.id]);
    store
        .release_node(small[0].id, at(200), "ci", Acting::Anyone)
        .unwrap();
    store
        .set_node_state(small[0].id, NodeState::Delete, at(201), &why("used"))
        .unwrap();
    store
        .remove_node(small[0].id, at(202), &why("deleted"))
        .unwrap();
    assert_eq!(
        store.prune_requests(at(300)).unwrap(),
        1,
        "its node is gone"
    );
    assert_eq!(store.requests(None).unwrap().len(), 1);
    assert!(
        store.prune_events(at(400)).unwrap() > 0,
        "their events go too"
    );
}

pub(crate) fn build_requests(db: &TestDb) {
    let store = &db.store;
    let image = ImageName::new("centos").unwrap();
    let all = store
        .request_image_build(None, &image, "bob", at(0))
        .unwrap();
    let one = store
        .request_image_build(Some(&provider("cloud2")), &image, "carol", at(1))
        .unwrap();
    assert_eq!(
        store.open_build_requests().unwrap(),
        [all.clone(), one.clone()]
    );
    store
        .set_build_request_state(all.id, BuildRequestState::Started, at(2), &why("daemon"))
        .unwrap();
    let done = store
        .set_build_request_state(all.id, BuildRequestState::Done, at(3), &why("built"))
        .unwrap();
    assert_eq!(
        (done.state, done.state_time),
        (BuildRequestState::Done, at(3))
    );
    let failed = store
        .set_build_request_state(
            one.id,
            BuildRequestState::Failed,
            at(4),
            &Reason::new(ReasonCode::BuildFailed, "prepare.sh exited 1"),
        )
        .unwrap();
    assert_eq!(failed.failure.as_deref(), Some("prepare.sh exited 1"));
    assert!(matches!(
        store.set_build_request_state(all.id, BuildRequestState::Pending, at(5), &why("x")),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(store.open_build_requests().unwrap().is_empty());
    assert_eq!(
        whats(store, Subject::Build(all.id)),
        ["created", "state started", "state done"]
    );
    assert_eq!(
        store.events(Subject::Build(one.id)).unwrap()[0].reason.text,
        "carol asked for a build of centos on provider cloud2"
    );
}

pub(crate) fn snapshot_sees_everything_in_order(db: &TestDb) {
    let store = &db.store;
    ready_nodes(store, "cloud2", "small", 2, at(0));
    ready_nodes(store, "cloud1", "small", 1, at(0));
    ready_nodes(store, "cloud1", "large", 1, at(0));
    let building = store
        .create_node(
            &NewNode::new(provider("cloud1"), label("small")),
            at(5),
            &why("x"),
        )
        .unwrap();
    let image = store
        .create_image(
            &NewImage::new(provider("cloud1"), ImageName::new("u").unwrap(), at(0)),
            at(0),
            &why("x"),
        )
        .unwrap();
    let request = store
        .create_request(&[label("small")], "zuul", 0, at(6))
        .unwrap();
    let done = store
        .create_request(&[label("large")], "zuul", 0, at(7))
        .unwrap();
    store
        .claim_ready_nodes(done.id, &label("large"), 1, at(8))
        .unwrap();
    let build = store
        .request_image_build(None, &ImageName::new("u").unwrap(), "alice", at(9))
        .unwrap();

    let snapshot = store.snapshot().unwrap();
    let ids: Vec<NodeId> = snapshot.nodes.iter().map(|n| n.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "snapshot nodes are in id order: {ids:?}"
    );
    let listed = store.nodes(&NodeFilter::default()).unwrap();
    let order: Vec<(String, String)> = listed
        .iter()
        .map(|n| (n.provider.to_string(), n.label.to_string()))
        .collect();
    assert_eq!(listed.len(), snapshot.nodes.len());
    assert_eq!(
        order,
        [
            ("cloud1", "large"),
            ("cloud1", "small"),
            ("cloud1", "small"),
            ("cloud2", "small"),
            ("cloud2", "small")
        ]
        .map(|(p, l)| (p.to_owned(), l.to_owned()))
    );
    assert!(snapshot.nodes.contains(&store.node(building.id).unwrap()));
    assert_eq!(snapshot.images, [image]);
    assert_eq!(snapshot.requests, [request], "only waiting requests");
    assert_eq!(snapshot.build_requests, [build]);
    let counts = snapshot.node_counts();
    assert_eq!(
        counts[&(&provider("cloud1"), &label("small"), NodeState::Ready)],
        1
    );
    assert_eq!(
        counts[&(&provider("cloud1"), &label("small"), NodeState::Building)],
        1
    );
    assert_eq!(
        counts[&(&provider("cloud1"), &label("large"), NodeState::InUse)],
        1
    );
    assert_eq!(
        counts[&(&provider("cloud2"), &label("small"), NodeState::Ready)],
        2
    );
    let filtered = store
        .nodes(&NodeFilter {
            provider: Some(provider("cloud1")),
            state: Some(NodeState::Ready),
            ..NodeFilter::default()
        })
        .unwrap();
    assert_eq!(filtered.len(), 1);
}

pub(crate) fn pruning_keeps_live_histories(db: &TestDb) {
    let store = &db.store;
    let mut nodes = ready_nodes(store, "cloud1", "small", 2, at(0));
    let gone = nodes.remove(0);
    let alive = nodes.remove(0);
    store
        .set_node_state(gone.id, NodeState::Delete, at(10), &why("x"))
        .unwrap();
    store.remove_node(gone.id, at(20), &why("x")).unwrap();
    // Nothing is old enough yet.
    assert_eq!(store.prune_events(at(0)).unwrap(), 0);
    let pruned = store.prune_events(at(1_000)).unwrap();
    assert_eq!(pruned, 5, "created, server, ready, delete, removed");
    assert!(store.events(Subject::Node(gone.id)).unwrap().is_empty());
    assert_eq!(whats(store, Subject::Node(alive.id)).len(), 3);
}

pub(crate) fn concurrent_claims_never_share_a_node(db: &TestDb) {
    let store = &db.store;
    const TASKS: usize = 8;
    const WANTED: usize = 3;
    for round in 0..3u64 {
        let now = at(1_000 * (round + 1));
        // Fewer nodes than wanted, so that the claimers really compete.
        let nodes = ready_nodes(store, "cloud1", "contended", TASKS * WANTED - 4, now);
        let requests: Vec<_> = (0..TASKS)
            .map(|i| {
                store
                    .create_request(
                        &vec![label("contended"); WANTED],
                        &format!("ci-{i}"),
                        0,
                        now,
                    )
                    .unwrap()
            })
            .collect();
        let claims: Vec<Vec<Node>> = std::thread::scope(|scope| {
            let handles: Vec<_> = requests
                .iter()
                .map(|request| {
                    let store = store.clone();
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        for _ in 0..WANTED {
                            loop {
                                match store.claim_ready_nodes(
                                    request.id,
                                    &label("contended"),
                                    1,
                                    now,
                                ) {
                                    Ok(claimed) => {
                                        mine.extend(claimed);
                                        break;
                                    }
                                    Err(error) if error.is_retryable() => continue,
                                    Err(error) => panic!("{error}"),
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut owner: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (task, claimed) in claims.iter().enumerate() {
            for node in claimed {
                assert!(
                    owner.insert(node.id, task).is_none(),
                    "node {} claimed twice",
                    node.id
                );
            }
        }
        let all: BTreeSet<NodeId> = nodes.iter().map(|n| n.id).collect();
        assert_eq!(
            owner.keys().copied().collect::<BTreeSet<_>>(),
            all,
            "every ready node claimed, none lost"
        );
        for (task, request) in requests.iter().enumerate() {
            let stored = store.request(request.id).unwrap();
            let expected: Vec<NodeId> = claims[task].iter().map(|n| n.id).collect();
            assert_eq!(
                stored.nodes.iter().copied().collect::<BTreeSet<_>>(),
                expected.iter().copied().collect()
            );
        }
        for node in &nodes {
            let stored = store.node(node.id).unwrap();
            assert_eq!(stored.state, NodeState::InUse);
            assert_eq!(stored.request, Some(requests[owner[&node.id]].id));
            let claimed_events = store
                .events(Subject::Node(node.id))
                .unwrap()
                .into_iter()
                .filter(|e| e.what == "state in-use")
                .count();
            assert_eq!(claimed_events, 1, "node {} claim logged once", node.id);
        }
    }
}

pub(crate) fn an_aborted_transaction_leaves_the_previous_state(db: &TestDb) {
    let store = &db.store;
    let node = ready_nodes(store, "cloud1", "small", 1, at(0)).remove(0);
    // A transaction that writes, then fails, leaves nothing behind.
    let result: crate::Result<()> = store.write(|conn| {
        let node = crate::nodes::load_node(conn, node.id)?;
        crate::nodes::move_node(conn, &node, NodeState::Used, at(5), None)?;
        crate::append_event(
            conn,
            Subject::Node(node.id),
            at(5),
            "state used",
            &why("x"),
            "test",
        )?;
        Err(StoreError::Invalid("the process died here".into()))
    });
    assert!(result.is_err());
    assert_eq!(store.node(node.id).unwrap(), node);
    assert_eq!(store.events(Subject::Node(node.id)).unwrap().len(), 3);

    // A connection dropped in the middle of a transaction (a crashed client) leaves nothing
    // either, and does not block the next writer.
    {
        let mut conn = store.conn().unwrap();
        crate::connection::transaction(&mut conn, crate::connection::Mode::Write, |conn| {
            crate::nodes::move_node(conn, &node, NodeState::Used, at(6), None)?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        // That one committed; now begin another and drop the connection without ending it.
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let url = match &db.uri {
            nodepool_config::DbUri::Sqlite(path) => path.display().to_string(),
            nodepool_config::DbUri::Postgres(url) | nodepool_config::DbUri::Mysql(url) => {
                url.expose().to_owned()
            }
            other => panic!("{other}"),
        };
        let mut raw = crate::connection::AnyConnection::establish(&url).unwrap();
        raw.batch_execute(match store.backend() {
            crate::Backend::Sqlite => "BEGIN IMMEDIATE; UPDATE nodes SET state = 'delete'",
            _ => "BEGIN; UPDATE nodes SET state = 'delete'",
        })
        .unwrap();
        drop(raw);
    }
    let now = store.node(node.id).unwrap();
    assert_eq!(now.state, NodeState::Used);
    store
        .set_node_state(node.id, NodeState::Delete, at(7), &why("after the crash"))
        .unwrap();
}

pub(crate) fn failures_are_kept_for_backoff_and_pruned_by_age(db: &TestDb) {
    let store = &db.store;
    let failure = |seconds, attempt, kind| Failure {
        provider: provider("cloud1"),
        attempt,
        at: at(seconds),
        kind,
        reason: format!("failed at {seconds}"),
    };
    // Each keeps its kind.
    let launch = failure(20, Attempt::Launch(label("small")), FailureKind::Quota);
    let build = failure(
        10,
        Attempt::Build(ImageName::new("base").unwrap()),
        FailureKind::Script,
    );
    store.record_failure(&launch).unwrap();
    store.record_failure(&build).unwrap();
    assert_eq!(
        store.failures().unwrap(),
        vec![build.clone(), launch.clone()]
    );
    assert_eq!(
        store.snapshot().unwrap().failures,
        vec![build, launch.clone()]
    );
    assert_eq!(store.prune_failures(at(15)).unwrap(), 1);
    assert_eq!(store.failures().unwrap(), vec![launch]);
}

pub(crate) fn host_keys_and_notes_join_a_nodes_history(db: &TestDb) {
    let store = &db.store;
    let node = ready_nodes(store, "cloud1", "small", 1, at(0)).remove(0);
    assert!(node.host_keys.is_empty());
    let keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBiq".to_owned(),
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY".to_owned(),
    ];
    let updated = store.set_node_host_keys(node.id, &keys, at(5)).unwrap();
    assert_eq!(updated.host_keys, keys);
    assert_eq!(store.node(node.id).unwrap().host_keys, keys);
    assert!(matches!(
        store.set_node_host_keys(node.id, &["two\nlines".to_owned()], at(6)),
        Err(StoreError::Invalid(_))
    ));
    store
        .note(Subject::Node(node.id), "check ok", &why("check"), at(7))
        .unwrap();
    let whats = whats(store, Subject::Node(node.id));
    assert_eq!(
        &whats[whats.len() - 2..],
        ["host keys ssh-ed25519 ecdsa-sha2-nistp256", "check ok"]
    );
    assert!(matches!(
        store.note(Subject::Node(NodeId::new(999)), "x", &why("check"), at(8)),
        Err(StoreError::NotFound { .. })
    ));
    // A move only from a given state.
    assert!(matches!(
        store.set_node_state_from(
            node.id,
            NodeState::Used,
            NodeState::Delete,
            at(8),
            &why("check")
        ),
        Err(StoreError::InvalidTransition { .. })
    ));
    assert_eq!(store.node(node.id).unwrap().state, NodeState::Ready);
    // Cleared by an empty list.
    assert!(
        store
            .set_node_host_keys(node.id, &[], at(9))
            .unwrap()
            .host_keys
            .is_empty()
    );
}
