//! What the policy knows beyond the store and the config: what the daemon last saw of each
//! provider's cloud, the work in flight and the allocator's history.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nodepool_model::{
    ExternalId, Flavor, ImageId, InstallationId, NodeId, ProviderName, Removals, Timestamp,
};

use crate::{History, Map};

/// Whose a server (or image, or floating IP) in a listing is, as its tags say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeenOwner {
    /// This installation's, for a node of the provider named.
    Node(NodeId, ProviderName),
    /// This installation's, for an image build (a template server, a snapshot) of the
    /// provider named.
    Image(ImageId, ProviderName),
    /// Tagged with this installation, but the rest of its tags are unreadable.
    Unreadable,
    /// Tagged with another installation of nodepool.
    OtherInstallation(InstallationId),
    /// Not nodepool's.
    NotOurs,
}

/// One server of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenServer {
    /// The cloud's id.
    pub id: ExternalId,
    /// Whose it is.
    pub owner: SeenOwner,
    /// The cloud has a task under way on it (a snapshot being taken): deleting it now
    /// would drop the image.
    pub busy: bool,
}

/// One complete server listing of a provider, indexed when it is made: a listing serves two
/// planning rounds (as the newest, then as the previous one), so its index is built once.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    at: Timestamp,
    servers: Vec<SeenServer>,
    ids: Map<ExternalId, usize>,
    tagged: Map<NodeId, usize>,
}

impl Listing {
    /// A listing asked for at `at` (before the call) that returned `servers`.
    pub fn new(at: Timestamp, servers: Vec<SeenServer>) -> Listing {
        let ids = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let mut tagged = Map::default();
        for (i, server) in servers.iter().enumerate() {
            if let SeenOwner::Node(id, _) = server.owner {
                tagged.entry(id).or_insert(i);
            }
        }
        Listing {
            at,
            servers,
            ids,
            tagged,
        }
    }

    /// When it was asked for.
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// Every server it returned, in the cloud's order.
    pub fn servers(&self) -> &[SeenServer] {
        &self.servers
    }

    /// Whether it shows the server `id`.
    pub fn contains(&self, id: &ExternalId) -> bool {
        self.ids.contains_key(id)
    }

    /// The server `id`, if it shows it.
    pub fn get(&self, id: &ExternalId) -> Option<&SeenServer> {
        self.ids.get(id).map(|&i| &self.servers[i])
    }

    /// The first server tagged for `node`.
    pub fn tagged(&self, node: NodeId) -> Option<&ExternalId> {
        self.tagged.get(&node).map(|&i| &self.servers[i].id)
    }
}

impl PartialEq for Listing {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.servers == other.servers
    }
}

impl Eq for Listing {}

/// What the cloud still allows, from its absolute limits (`None`: unlimited or unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Headroom {
    /// More servers.
    pub instances: Option<u64>,
    /// More cores.
    pub cores: Option<u64>,
    /// More RAM, in MB.
    pub ram_mb: Option<u64>,
}

/// What the daemon last saw of one connected provider's cloud.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudView {
    /// The newest complete listing, if one succeeded.
    pub listing: Option<Arc<Listing>>,
    /// The one before it.
    pub previous: Option<Arc<Listing>>,
    /// The cloud's remaining capacity, if known.
    pub headroom: Headroom,
    /// The cloud's flavors, once a listing of them succeeded: each launch gets the smallest
    /// that fits its image, and its cores and RAM count against the headroom.
    pub flavors: Option<Arc<[Flavor]>>,
}

/// What the policy knows beyond the store and the config.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Each connected provider's cloud as last seen. A provider without a view is not
    /// connected: nothing is launched there, and its nodes' servers wait to be deleted.
    pub clouds: BTreeMap<ProviderName, CloudView>,
    /// Nodes an executor of this daemon is working on (launching or deleting): only
    /// deadlines touch them, and the delete then cancels the executor.
    pub busy: BTreeSet<NodeId>,
    /// Nodes another live daemon works on: never touched here (their daemon applies the
    /// deadlines), but counted as this daemon counts its own busy nodes.
    pub elsewhere: BTreeSet<NodeId>,
    /// The allocator's fairness history.
    pub history: History,
    /// Since when each provider or label gone from the config has been seen gone: their
    /// nodes are kept for `removal-grace` from then.
    pub removals: Removals,
}
