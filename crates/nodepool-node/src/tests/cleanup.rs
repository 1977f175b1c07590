//! The cleanup job's leak check for snapshots and floating IPs.

use nodepool_model::{ExternalId, ImageId, ImageState, NodeId, NodeState, ProviderName};

use super::{HOUR, node, snapshot};
use crate::SeenOwner;
use crate::cleanup::{Resource, SeenResource, leaked};

fn cloud(name: &str) -> ProviderName {
    name.parse().unwrap()
}

fn seen(kind: Resource, id: &str, owner: SeenOwner) -> SeenResource {
    SeenResource::new(kind, ExternalId::new(id), owner)
}

/// A snapshot made from `template`, as the cloud and its tags say.
fn snapshot_of(
    id: &str,
    owner: SeenOwner,
    made_from: &str,
    template: Option<&str>,
) -> SeenResource {
    SeenResource {
        made_from: Some(ExternalId::new(made_from)),
        template: template.map(ExternalId::new),
        ..seen(Resource::Image, id, owner)
    }
}

/// What cloud1's cleanup deletes, with cloud1 and cloud2 in the config.
fn leaked_ids(snapshot: &nodepool_model::Snapshot, seen: &[SeenResource]) -> Vec<String> {
    leaked(
        snapshot,
        &cloud("cloud1"),
        &[cloud("cloud1"), cloud("cloud2")],
        seen,
    )
    .into_iter()
    .map(|leak| format!("{} {}: {}", leak.kind, leak.id, leak.reason.text))
    .collect()
}

#[test]
fn a_snapshot_goes_only_when_its_upload_is_gone_and_it_was_made_from_its_template() {
    let mut state = snapshot(Vec::new());
    // Upload 1 (cloud1, READY, img-1) and upload 3 (cloud1, READY, img-3) exist.
    let building = {
        let mut upload = state.images[0].clone();
        upload.id = ImageId::new(7);
        upload.state = ImageState::Building;
        upload.external_id = None;
        upload
    };
    state.images.push(building);
    let image = |id| SeenOwner::Image(ImageId::new(id), cloud("cloud1"));
    let listing = [
        snapshot_of("img-1", image(1), "tpl-1", Some("tpl-1")),
        // A snapshot taken but not yet recorded by a build under way.
        snapshot_of("img-7", image(7), "tpl-7", Some("tpl-7")),
        // An earlier attempt of upload 3: kept while the upload is.
        snapshot_of("img-3-try1", image(3), "tpl-3", Some("tpl-3")),
        // The upload's row is gone: a daemon killed between the snapshot and its record.
        snapshot_of("img-9", image(9), "tpl-9", Some("tpl-9")),
        // Someone's snapshot of a node booted from upload 9's image: our tags, copied by
        // the cloud from the node's image, but made from the node.
        snapshot_of("users-snapshot", image(9), "node-server", Some("tpl-9")),
        // A snapshot tagged before snapshots named their template: not provably ours.
        snapshot_of("old-snapshot", image(9), "tpl-old", None),
        seen(Resource::Image, "base", SeenOwner::NotOurs),
        seen(Resource::Image, "odd", SeenOwner::Unreadable),
    ];
    assert_eq!(
        leaked_ids(&state, &listing),
        [
            "image img-9: image img-9 is tagged for image upload 9 of provider cloud1, which the store does not have"
        ]
    );
}

#[test]
fn floating_ips_belong_to_their_node_or_upload_while_the_row_exists() {
    let state = snapshot(vec![node(1, "cloud1", "small", NodeState::Ready, HOUR)]);
    let node_ = |id| SeenOwner::Node(NodeId::new(id), cloud("cloud1"));
    let image = |id| SeenOwner::Image(ImageId::new(id), cloud("cloud1"));
    let listing = [
        seen(Resource::FloatingIp, "fip-1", node_(1)),
        seen(Resource::FloatingIp, "fip-2", node_(2)),
        seen(Resource::FloatingIp, "fip-3", image(3)),
        seen(Resource::FloatingIp, "fip-4", image(4)),
    ];
    assert_eq!(
        leaked_ids(&state, &listing),
        [
            "floating IP fip-2: floating IP fip-2 is tagged for node 2 of provider cloud1, which the store does not have",
            "floating IP fip-4: floating IP fip-4 is tagged for image upload 4 of provider cloud1, which the store does not have",
        ]
    );
}

#[test]
fn a_sibling_providers_resources_in_a_shared_project_are_its_own_to_clean() {
    // cloud1 and cloud2 share a project: cloud1's listing shows cloud2's resources.
    let state = snapshot(vec![node(1, "cloud2", "small", NodeState::Ready, HOUR)]);
    let listing = [
        // cloud2's live node's floating IP, and a real leak of cloud2's.
        seen(
            Resource::FloatingIp,
            "fip-1",
            SeenOwner::Node(NodeId::new(1), cloud("cloud2")),
        ),
        seen(
            Resource::FloatingIp,
            "fip-8",
            SeenOwner::Node(NodeId::new(8), cloud("cloud2")),
        ),
        // cloud2's snapshot whose row is gone.
        snapshot_of(
            "img-8",
            SeenOwner::Image(ImageId::new(8), cloud("cloud2")),
            "t",
            Some("t"),
        ),
        // Tagged for a provider no longer in the config, whose rows are gone: cloud1,
        // which lists it, deletes it.
        seen(
            Resource::FloatingIp,
            "fip-9",
            SeenOwner::Node(NodeId::new(9), cloud("gone")),
        ),
    ];
    assert_eq!(
        leaked_ids(&state, &listing),
        [
            "floating IP fip-9: floating IP fip-9 is tagged for node 9 of provider gone, which the store does not have"
        ]
    );
    // cloud2's own cleanup deletes its leaks, and keeps its live node's address.
    let cloud2 = leaked(
        &state,
        &cloud("cloud2"),
        &[cloud("cloud1"), cloud("cloud2")],
        &listing,
    );
    let ids: Vec<&str> = cloud2.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["fip-8", "img-8", "fip-9"]);
}
