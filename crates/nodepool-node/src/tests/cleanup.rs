//! The cleanup job's leak check for snapshots and floating IPs.

use nodepool_model::{ExternalId, ImageId, ImageState, NodeId, NodeState};

use super::{HOUR, node, snapshot};
use crate::SeenOwner;
use crate::cleanup::{Resource, SeenResource, leaked};

fn seen(kind: Resource, id: &str, owner: SeenOwner) -> SeenResource {
    SeenResource {
        kind,
        id: ExternalId::new(id),
        owner,
    }
}

fn leaked_ids(snapshot: &nodepool_model::Snapshot, seen: &[SeenResource]) -> Vec<String> {
    leaked(snapshot, &"cloud1".parse().unwrap(), seen)
        .into_iter()
        .map(|leak| format!("{} {}: {}", leak.kind, leak.id, leak.reason.text))
        .collect()
}

#[test]
fn snapshots_belong_to_their_upload_while_it_builds_or_records_them() {
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
    let listing = [
        seen(Resource::Image, "img-1", SeenOwner::Image(ImageId::new(1))),
        // A snapshot taken but not yet recorded by a build under way.
        seen(Resource::Image, "img-7", SeenOwner::Image(ImageId::new(7))),
        // An earlier attempt of upload 3, which is READY with img-3.
        seen(
            Resource::Image,
            "img-3-try1",
            SeenOwner::Image(ImageId::new(3)),
        ),
        // The upload's row is gone: a daemon killed between the snapshot and its record.
        seen(Resource::Image, "img-9", SeenOwner::Image(ImageId::new(9))),
        seen(Resource::Image, "base", SeenOwner::NotOurs),
        seen(Resource::Image, "odd", SeenOwner::Unreadable),
    ];
    assert_eq!(
        leaked_ids(&state, &listing),
        [
            "image img-3-try1: image img-3-try1 is tagged for image upload 3, which has another image and is no longer building",
            "image img-9: image img-9 is tagged for image upload 9, which the store does not have",
        ]
    );
}

#[test]
fn floating_ips_belong_to_their_node_or_upload_while_the_row_exists() {
    let state = snapshot(vec![node(1, "cloud1", "small", NodeState::Ready, HOUR)]);
    let listing = [
        seen(
            Resource::FloatingIp,
            "fip-1",
            SeenOwner::Node(NodeId::new(1)),
        ),
        seen(
            Resource::FloatingIp,
            "fip-2",
            SeenOwner::Node(NodeId::new(2)),
        ),
        seen(
            Resource::FloatingIp,
            "fip-3",
            SeenOwner::Image(ImageId::new(3)),
        ),
        seen(
            Resource::FloatingIp,
            "fip-4",
            SeenOwner::Image(ImageId::new(4)),
        ),
    ];
    assert_eq!(
        leaked_ids(&state, &listing),
        [
            "floating IP fip-2: floating IP fip-2 is tagged for node 2, which the store does not have",
            "floating IP fip-4: floating IP fip-4 is tagged for image upload 4, which the store does not have",
        ]
    );
}

#[test]
fn another_providers_rows_do_not_vouch_for_this_ones_resources() {
    // Node 1 lives on cloud2; a floating IP on cloud1 tagged for it is a leak there.
    let state = snapshot(vec![node(1, "cloud2", "small", NodeState::Ready, HOUR)]);
    let listing = [seen(
        Resource::FloatingIp,
        "fip-1",
        SeenOwner::Node(NodeId::new(1)),
    )];
    assert_eq!(leaked_ids(&state, &listing).len(), 1);
}
