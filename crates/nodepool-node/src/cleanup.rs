//! The `cleanup` job's leak check: snapshots and floating IPs that carry this installation's
//! tags but belong to nothing the store still has.
//!
//! Servers are checked every round from the round's listing (see [`crate::plan`]); images and
//! floating IPs are listed only when `cron: cleanup` fires, since nothing else needs them.
//!
//! The listings must be made *before* the snapshot is read. Every resource is created after
//! its row is written, and a row goes only after its resources are deleted, so a resource
//! listed before a snapshot that lacks its owner can only be one whose deletion forgot it
//! (a daemon killed between the cloud's answer and the store's record): one listing is proof
//! enough, and nothing being created right now can be taken for a leak.

use std::fmt;

use nodepool_model::{ExternalId, ImageState, ProviderName, Reason, ReasonCode, Snapshot};
use rustc_hash::FxHashMap as Map;

use crate::SeenOwner;

/// The kinds of resource the cleanup job lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// A snapshot image.
    Image,
    /// A floating IP.
    FloatingIp,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Image => "image",
            Resource::FloatingIp => "floating IP",
        })
    }
}

/// A resource of a listing, with its owner as its tags say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenResource {
    /// What it is.
    pub kind: Resource,
    /// The cloud's id.
    pub id: ExternalId,
    /// Whose it is.
    pub owner: SeenOwner,
}

/// A resource to delete, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// What it is.
    pub kind: Resource,
    /// The cloud's id.
    pub id: ExternalId,
    /// Why it goes.
    pub reason: Reason,
}

/// The resources of `provider` in `seen` that belong to no row of `snapshot`, which was read
/// after the listings were made.
///
/// A snapshot belongs to its upload while the upload is building (the snapshot may not be
/// recorded yet) or when it is the upload's recorded image; a floating IP belongs to its node
/// or upload while that row exists. Resources of other installations, and ones whose tags
/// cannot be read, are never touched.
pub fn leaked(snapshot: &Snapshot, provider: &ProviderName, seen: &[SeenResource]) -> Vec<Leak> {
    let nodes: Map<_, _> = snapshot
        .nodes
        .iter()
        .filter(|n| &n.provider == provider)
        .map(|n| (n.id, n))
        .collect();
    let images: Map<_, _> = snapshot
        .images
        .iter()
        .filter(|i| &i.provider == provider)
        .map(|i| (i.id, i))
        .collect();
    let mut leaks = Vec::new();
    for resource in seen {
        let (known, whose) = match (&resource.owner, resource.kind) {
            (SeenOwner::Node(id), _) => (nodes.contains_key(id), format!("node {id}")),
            (SeenOwner::Image(id), Resource::Image) => (
                images.get(id).is_some_and(|upload| {
                    upload.state == ImageState::Building
                        || upload.external_id.as_ref() == Some(&resource.id)
                }),
                format!("image upload {id}"),
            ),
            (SeenOwner::Image(id), Resource::FloatingIp) => {
                (images.contains_key(id), format!("image upload {id}"))
            }
            (SeenOwner::Unreadable | SeenOwner::NotOurs, _) => continue,
        };
        if known {
            continue;
        }
        let text = match (&resource.owner, resource.kind) {
            (SeenOwner::Image(id), Resource::Image) if images.contains_key(id) => format!(
                "{} {} is tagged for {whose}, which has another image and is no longer building",
                resource.kind, resource.id
            ),
            _ => format!(
                "{} {} is tagged for {whose}, which the store does not have",
                resource.kind, resource.id
            ),
        };
        leaks.push(Leak {
            kind: resource.kind,
            id: resource.id.clone(),
            reason: Reason::new(ReasonCode::Leaked, text),
        });
    }
    leaks
}
