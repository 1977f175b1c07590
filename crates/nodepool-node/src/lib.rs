//! Nodepool's node lifecycle policy: which nodes to launch where, which ready nodes to hand
//! to which request, which nodes and leaked servers to delete, and why.
//!
//! The policy decides; it never acts. [`plan`] is a pure function of the store's
//! [`Snapshot`], the [`Config`], the time and what the daemon last saw in each cloud
//! ([`World`]): no I/O, no clock, no randomness. Every [`NodeAction`] carries a [`Reason`]
//! that `nodepool show` and the logs print, and every decision not to act that an operator
//! would ask about is a [`Note`].
//!
//! The rules, nodepool's since 2014 unless marked:
//!
//! - **Requests first** (new): waiting requests take READY nodes, oldest ready first; among
//!   requests, higher priority first, then each requestor's oldest before anyone's second.
//!   A request naming an unknown or disabled label, or one no provider supplies, fails at once.
//! - **Demand** per label = request positions still unserved + `min-ready` − (ready + building
//!   + test) nodes; `min-ready: -1` disables a label.
//! - **Allocation** across providers by the 2014 allocator ([`allocation`]): scarce labels
//!   first, shares proportional to free capacity, half rounded away from zero, labels that
//!   went without served first next round. Free capacity is `max-servers` minus every node
//!   of the provider in any state (deleting and held ones too), further capped by the cloud's
//!   absolute limits (instances, cores, RAM). Only connected providers with a READY image
//!   for the label and a flavor that fits it take part; each launch names that flavor (the
//!   smallest that fits) and its host name. A provider whose launches keep failing waits
//!   (10 s, doubling, at most 5 minutes).
//! - **Deletes**: used nodes; nodes marked for deletion; nodes whose server vanished (absent
//!   from two listings taken after the node's last change); nodes of providers or labels
//!   removed from the config, or of disabled labels; building nodes no launch is working on
//!   (a daemon restarted) or past `launch-timeout` + `boot-timeout`; test nodes after
//!   5 minutes; nodes in any other state but READY after 8 hours. Nodes in use by a request
//!   are left to finish, held nodes are never touched. Only the deadlines (launch and
//!   8-hour) take a node from the executor working on it, and the delete says so
//!   (`cancel`); another daemon's work is left to that daemon. Leaked servers (tagged by this
//!   installation, unknown to the store) are deleted once seen in two listings in a row;
//!   another installation's servers never are.
//!
//! ```
//! use nodepool_model::{ReasonCode, Snapshot, Timestamp};
//! use nodepool_node::{NodeAction, World, plan};
//!
//! let config = nodepool_config::parse(
//!     "labels:\n  - name: small\n    image: base\n    min-ready: 2\n    providers: [{name: cloud1}]\n\
//!      providers:\n  - name: cloud1\n    driver: fake\n    max-servers: 10\n    images:\n      - name: base\n        base-image: Ubuntu 22.04\n        min-ram: 2048\n",
//!     "nodepool.yaml",
//! )
//! .unwrap()
//! .config;
//! let now = Timestamp::from_unix_seconds(1_400_000_000);
//! // No image is READY yet: nothing can launch, and the plan says why.
//! let plan = plan(&Snapshot::default(), &config, now, &World::default());
//! assert!(plan.actions.is_empty());
//! assert_eq!(plan.notes[0].reason.code, ReasonCode::NoImage);
//! ```

pub mod allocation;
pub mod cleanup;
mod deletes;
mod launches;
mod requests;
pub mod share;
mod world;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use nodepool_config::{Config, Label};
use nodepool_model::{
    Backoff, ExternalId, Flavor, Gone, ImageId, ImageName, ImageState, LabelName, Node, NodeId,
    NodeState, ProviderName, Reason, ReasonCode, RequestId, Snapshot, Timestamp,
};

pub use allocation::{History, Round};
pub use world::{CloudView, Headroom, Listing, SeenOwner, SeenServer, World};

/// Nodes in any state but READY and HOLD are deleted after this long in it (2014
/// `NODE_CLEANUP`).
pub const NODE_CLEANUP: Duration = Duration::from_secs(8 * 3600);

/// Nodes in TEST are deleted after this long (2014 `TEST_CLEANUP`).
pub const TEST_CLEANUP: Duration = Duration::from_secs(5 * 60);

/// The wait after a provider's failed launches in a row: 10 s after the first, doubling
/// per failure, at most 5 minutes.
pub const LAUNCH_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(10),
    max: Duration::from_secs(5 * 60),
};

/// Something the daemon should do about nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// Hand `count` READY nodes of `label` to `request`, oldest ready first.
    Claim {
        /// The request.
        request: RequestId,
        /// The label.
        label: LabelName,
        /// How many nodes.
        count: usize,
        /// Why.
        reason: Reason,
    },
    /// Fail a request that can never be served.
    FailRequest {
        /// The request.
        request: RequestId,
        /// Why.
        reason: Reason,
    },
    /// Launch one node.
    Launch {
        /// Where.
        provider: ProviderName,
        /// Of which label.
        label: LabelName,
        /// From which image upload (the newest READY one).
        image: ImageId,
        /// With which flavor: the smallest that fits the image
        /// ([`flavor_for`](nodepool_model::flavor_for)).
        flavor: Flavor,
        /// Its host name; `{node_id}` stands for the id the store gives the node.
        hostname: String,
        /// In which availability zone, if the provider names zones.
        az: Option<String>,
        /// Why.
        reason: Reason,
    },
    /// Delete a node: its server (if it has one), then its row.
    Delete {
        /// The node.
        node: NodeId,
        /// Its server: the node's, or one found by its tags when the launch never recorded it.
        server: Option<ExternalId>,
        /// An executor of this daemon works on the node (a launch past its deadline): stop
        /// it first. Only deadlines take a node from the executor working on it.
        cancel: bool,
        /// Why.
        reason: Reason,
    },
    /// Delete a leaked server.
    DeleteLeak {
        /// Its provider.
        provider: ProviderName,
        /// The server.
        server: ExternalId,
        /// Why.
        reason: Reason,
    },
}

/// What a [`Note`] is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum About {
    /// A label.
    Label(LabelName),
    /// A provider.
    Provider(ProviderName),
    /// A label on one provider.
    LabelOn(LabelName, ProviderName),
    /// A node.
    Node(NodeId),
    /// A server in a cloud.
    Server(ProviderName, ExternalId),
}

/// A decision not to act, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// What it is about.
    pub about: About,
    /// Why nothing is done.
    pub reason: Reason,
}

/// The policy's answer for one round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePlan {
    /// What to do now: failed requests, claims, deletes, then launches.
    pub actions: Vec<NodeAction>,
    /// Decisions not to act.
    pub notes: Vec<Note>,
    /// What each label asked of the allocator and got, for [`History::push`].
    pub round: Round,
    /// The latest time to ask again, if some deadline is pending.
    pub next_wakeup: Option<Timestamp>,
    /// What the config no longer has that nodes still name (to remember since when, in
    /// [`World::removals`]).
    pub gone: BTreeSet<Gone>,
}

/// Decides what to launch, claim and delete now. See the crate documentation for the rules.
pub fn plan(snapshot: &Snapshot, config: &Config, now: Timestamp, world: &World) -> NodePlan {
    let mut planner = Planner::new(snapshot, config, now, world);
    planner.deletes();
    planner.leaks();
    planner.requests();
    planner.launches();
    planner.into_plan()
}

/// Hash maps for lookups by name or id, with FxHash: fast on short keys and seedless (same
/// input, same work). Nothing is ever iterated from them, so their order never reaches a plan.
type Map<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;
type Set<K> = HashSet<K, rustc_hash::FxBuildHasher>;

/// One label's request from one provider, as the launch stage reads it back.
#[derive(Clone, Copy)]
struct Sub<'a> {
    label: &'a Label,
    image: ImageId,
    flavor: &'a Flavor,
    sub: allocation::SubIx,
    demand: usize,
    outstanding: usize,
    have: usize,
}

struct Planner<'a> {
    snapshot: &'a Snapshot,
    node_by_id: Map<NodeId, &'a Node>,
    /// Each node's provider and label as positions in the config (`None`: gone from it),
    /// resolved once so that per-node counting is by index, not by name.
    keys: Vec<(Option<usize>, Option<usize>)>,
    /// Each config provider's cloud view.
    clouds: Vec<Option<&'a CloudView>>,
    /// The upload each (provider, image) launches from.
    current: Map<(&'a ProviderName, &'a ImageName), ImageId>,
    config: &'a Config,
    now: Timestamp,
    world: &'a World,
    provider_ix: Map<&'a ProviderName, usize>,
    label_ix: Map<&'a LabelName, usize>,
    /// Nodes deleted this round.
    deleted: Set<NodeId>,
    /// Ready nodes claimed this round, per label.
    claimed: Vec<usize>,
    /// Request positions not served by ready nodes, per label.
    outstanding: Vec<usize>,
    failed_requests: Vec<NodeAction>,
    claims: Vec<NodeAction>,
    deletes: Vec<NodeAction>,
    launches: Vec<NodeAction>,
    notes: Vec<Note>,
    /// What the config no longer has that nodes still name.
    gone: BTreeSet<Gone>,
    /// What of that is still in its grace, said once a round.
    pending: BTreeSet<Gone>,
    round: Round,
    next_wakeup: Option<Timestamp>,
}

impl<'a> Planner<'a> {
    fn new(snapshot: &'a Snapshot, config: &'a Config, now: Timestamp, world: &'a World) -> Self {
        let mut current: Map<(&'a ProviderName, &'a ImageName), &'a nodepool_model::Image> =
            Map::default();
        for image in &snapshot.images {
            if image.state == ImageState::Ready {
                let best = current
                    .entry((&image.provider, &image.name))
                    .or_insert(image);
                if image.recency() > best.recency() {
                    *best = image;
                }
            }
        }
        let provider_ix: Map<&'a ProviderName, usize> = config
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| (&p.name, i))
            .collect();
        let label_ix: Map<&'a LabelName, usize> = config
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (&l.name, i))
            .collect();
        let keys = snapshot
            .nodes
            .iter()
            .map(|n| {
                (
                    provider_ix.get(&n.provider).copied(),
                    label_ix.get(&n.label).copied(),
                )
            })
            .collect();
        let clouds = config
            .providers
            .iter()
            .map(|p| world.clouds.get(&p.name))
            .collect();
        Planner {
            snapshot,
            node_by_id: snapshot.nodes.iter().map(|n| (n.id, n)).collect(),
            keys,
            clouds,
            current: current.into_iter().map(|(k, i)| (k, i.id)).collect(),
            config,
            now,
            world,
            provider_ix,
            label_ix,
            deleted: Set::default(),
            claimed: vec![0; config.labels.len()],
            outstanding: vec![0; config.labels.len()],
            failed_requests: Vec::new(),
            claims: Vec::new(),
            deletes: Vec::new(),
            launches: Vec::new(),
            notes: Vec::new(),
            gone: BTreeSet::new(),
            pending: BTreeSet::new(),
            round: Round::new(),
            next_wakeup: None,
        }
    }

    fn into_plan(self) -> NodePlan {
        let mut actions = self.failed_requests;
        actions.extend(self.claims);
        actions.extend(self.deletes);
        actions.extend(self.launches);
        NodePlan {
            actions,
            notes: self.notes,
            round: self.round,
            next_wakeup: self.next_wakeup,
            gone: self.gone,
        }
    }

    fn wake_at(&mut self, at: Timestamp) {
        if at > self.now {
            self.next_wakeup = Some(self.next_wakeup.map_or(at, |t| t.min(at)));
        }
    }

    fn note(&mut self, about: About, code: ReasonCode, text: String) {
        self.notes.push(Note {
            about,
            reason: Reason::new(code, text),
        });
    }

    /// Deletes `node` (it no longer counts as supply), unless another daemon works on it,
    /// or an executor here does and the reason is not a deadline that cancels it, or its
    /// server must go from a provider that is not connected.
    fn delete(&mut self, node: &Node, server: Option<ExternalId>, code: ReasonCode, text: String) {
        self.deleted.insert(node.id);
        if self.world.elsewhere.contains(&node.id) {
            return;
        }
        let cancel = self.world.busy.contains(&node.id);
        if cancel && !matches!(code, ReasonCode::LaunchTimeout | ReasonCode::NodeCleanup) {
            return;
        }
        let server = server.or_else(|| node.external_id.clone());
        let connected = self
            .cloud(
                self.provider_ix.get(&node.provider).copied(),
                &node.provider,
            )
            .is_some();
        // Marked for deletion already: nothing to do until the provider connects.
        if !connected && server.is_some() && node.state == NodeState::Delete {
            return self.note(
                About::Node(node.id),
                ReasonCode::NotConnected,
                format!(
                    "node {} waits for its deletion: provider {} is not connected",
                    node.id, node.provider
                ),
            );
        }
        self.deletes.push(NodeAction::Delete {
            node: node.id,
            server,
            cancel,
            reason: Reason::new(code, text),
        });
    }

    /// Whether an executor (of this daemon or another) works on `node`.
    fn busy(&self, node: NodeId) -> bool {
        self.world.busy.contains(&node) || self.world.elsewhere.contains(&node)
    }

    /// The cloud view of the provider at config position `provider`, or of a provider gone
    /// from the config by name.
    fn cloud(&self, provider: Option<usize>, name: &ProviderName) -> Option<&'a CloudView> {
        match provider {
            Some(i) => self.clouds[i],
            None => self.world.clouds.get(name),
        }
    }
}

#[cfg(test)]
mod tests;
