//! The `cleanup` job's leak check: snapshots and floating IPs that carry this installation's
//! tags but belong to nothing the store still has.
//!
//! Servers are checked every round from the round's listing (see [`crate::plan`]); images and
//! floating IPs are listed only when `cron: cleanup` fires, since nothing else needs them.
//!
//! A resource is ours only when its installation tag, its provider tag and a row all match,
//! across every provider of the installation: a resource tagged for another provider of
//! the config is left to that provider's cleanup (two providers may share a project, and
//! each lists the other's resources), and one tagged for a provider gone from the config is
//! judged by whichever provider lists it. A snapshot is ours only when the cloud says it was
//! made from the template server its tags name: Nova copies the properties of a server's
//! image into a snapshot of the server, so someone's snapshot of one of our nodes carries
//! our tags too, but was made from the node. It goes only once its upload's row is gone.
//!
//! The listings must be made *before* the snapshot is read. Every resource is created after
//! its row is written, and a row goes only after its resources are deleted, so a resource
//! listed before a snapshot that lacks its owner can only be one whose deletion forgot it
//! (a daemon killed between the cloud's answer and the store's record): one listing is proof
//! enough, and nothing being created right now can be taken for a leak.

use std::fmt;

use nodepool_model::{ExternalId, ProviderName, Reason, ReasonCode, Snapshot};
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
    /// For a snapshot: the server the cloud says it was made from (Nova's `instance_uuid`).
    pub made_from: Option<ExternalId>,
    /// For a snapshot: the template server its tags name (`nodepool-template-server`).
    pub template: Option<ExternalId>,
}

impl SeenResource {
    /// A resource with no snapshot properties (a floating IP, or an image that is not a
    /// snapshot).
    pub fn new(kind: Resource, id: ExternalId, owner: SeenOwner) -> SeenResource {
        SeenResource {
            kind,
            id,
            owner,
            made_from: None,
            template: None,
        }
    }
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

/// The resources of `provider`'s listing `seen` that belong to no row of `snapshot`, which
/// was read after the listings were made; `configured` are the providers of the config.
///
/// A snapshot belongs to its upload while the upload's row exists, and is never ours unless
/// it was made from the template server its tags name; a floating IP belongs to its node or
/// upload while that row exists. Resources tagged for another provider of the config, of
/// other installations, and ones whose tags cannot be read, are never touched.
pub fn leaked(
    snapshot: &Snapshot,
    provider: &ProviderName,
    configured: &[ProviderName],
    seen: &[SeenResource],
) -> Vec<Leak> {
    let nodes: Map<_, _> = snapshot.nodes.iter().map(|n| (n.id, n)).collect();
    let images: Map<_, _> = snapshot.images.iter().map(|i| (i.id, i)).collect();
    let mut leaks = Vec::new();
    for resource in seen {
        let (tagged, whose, has_row) = match &resource.owner {
            SeenOwner::Node(id, tagged) => (tagged, format!("node {id}"), nodes.contains_key(id)),
            SeenOwner::Image(id, tagged) => (
                tagged,
                format!("image upload {id}"),
                images.contains_key(id),
            ),
            SeenOwner::Unreadable | SeenOwner::OtherInstallation(_) | SeenOwner::NotOurs => {
                continue;
            }
        };
        if tagged != provider && configured.contains(tagged) {
            continue;
        }
        if resource.kind == Resource::Image
            && (resource.template.is_none() || resource.made_from != resource.template)
        {
            continue;
        }
        // A row, even of another provider than the tags name (not provably this
        // resource's owner, and so not provably a leak), keeps it.
        if has_row {
            continue;
        }
        let text = format!(
            "{} {} is tagged for {whose} of provider {tagged}, which the store does not have",
            resource.kind, resource.id
        );
        leaks.push(Leak {
            kind: resource.kind,
            id: resource.id.clone(),
            reason: Reason::new(ReasonCode::Leaked, text),
        });
    }
    leaks
}
