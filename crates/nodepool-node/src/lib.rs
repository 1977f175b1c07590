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
pub mod share;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nodepool_config::{Config, Label};
use nodepool_model::{
    Attempt, BackingOff, Backoff, ExternalId, Flavor, Gone, Human, ImageId, ImageName, ImageState,
    InstallationId, LabelName, Node, NodeId, NodeRequest, NodeState, ProviderName, Reason,
    ReasonCode, Removals, RequestId, Snapshot, Timestamp, flavor_for,
};

use allocation::Allocator;
pub use allocation::{History, Round};

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
        /// With which flavor: the smallest that fits the image ([`flavor_for`]).
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

    /// The server tagged for `node` in its provider's newest listing.
    fn tagged_server(&self, node: &Node, provider: Option<usize>) -> Option<ExternalId> {
        let listing = self.cloud(provider, &node.provider)?.listing.as_ref()?;
        listing.tagged(node.id).cloned()
    }

    /// The other installation whose tags `node`'s server carries in the latest listing: the
    /// row was copied from another installation's store, and the server is not ours.
    fn other_installation(&self, node: &Node, provider: Option<usize>) -> Option<&InstallationId> {
        let id = node.external_id.as_ref()?;
        let listing = self.cloud(provider, &node.provider)?.listing.as_ref()?;
        match &listing.get(id)?.owner {
            SeenOwner::OtherInstallation(other) => Some(other),
            _ => None,
        }
    }

    /// Whether `node`'s server is absent from two listings taken after its last change.
    fn vanished(&self, node: &Node, provider: Option<usize>) -> bool {
        let Some(id) = &node.external_id else {
            return false;
        };
        let Some(cloud) = self.cloud(provider, &node.provider) else {
            return false;
        };
        let (Some(latest), Some(previous)) = (&cloud.listing, &cloud.previous) else {
            return false;
        };
        previous.at > node.state_time && !latest.contains(id) && !previous.contains(id)
    }

    fn deletes(&mut self) {
        let snapshot = self.snapshot;
        for (i, node) in snapshot.nodes.iter().enumerate() {
            let (provider, label) = self.keys[i];
            self.judge(node, provider, label);
        }
    }

    /// Whether to delete one node now, and if not, when to look again. `provider` and
    /// `label` are the node's positions in the config.
    fn judge(&mut self, node: &'a Node, provider: Option<usize>, label: Option<usize>) {
        let config = self.config;
        let age = self.now.saturating_since(node.state_time);
        let after = |limit: Duration| node.state_time.first_past(limit);
        if node.state == NodeState::Hold {
            if provider.is_none() || label.is_none() {
                self.note(
                    About::Node(node.id),
                    ReasonCode::Held,
                    format!(
                        "node {} is held ({}); it stays although its provider {} or label {} is gone from the config",
                        node.id,
                        node.hold.as_ref().map_or("no reason given", |h| h.reason.as_str()),
                        node.provider,
                        node.label
                    ),
                );
            }
            return;
        }
        let busy = self.busy(node.id);
        // Deadlines apply even to nodes an executor holds: a stuck launch is cancelled.
        match node.state {
            NodeState::Building => {
                let timeout = provider.map(|i| {
                    let p = &config.providers[i];
                    (p.launch_timeout.saturating_add(p.boot_timeout), p)
                });
                if let Some((timeout, p)) = timeout {
                    if age > timeout {
                        return self.delete(
                            node,
                            self.tagged_server(node, provider),
                            ReasonCode::LaunchTimeout,
                            format!(
                                "building for {}, longer than launch-timeout ({}) plus boot-timeout ({})",
                                Human(age),
                                Human(p.launch_timeout),
                                Human(p.boot_timeout)
                            ),
                        );
                    }
                    if busy {
                        return self.wake_at(after(timeout));
                    }
                }
            }
            NodeState::Test if age > TEST_CLEANUP => {
                return self.delete(
                    node,
                    None,
                    ReasonCode::TestTimeout,
                    format!(
                        "in test for {}, longer than {}",
                        Human(age),
                        Human(TEST_CLEANUP)
                    ),
                );
            }
            NodeState::Ready | NodeState::Delete | NodeState::Used => {}
            _ if age > NODE_CLEANUP => {
                return self.delete(
                    node,
                    None,
                    ReasonCode::NodeCleanup,
                    format!(
                        "in state {} for {}, longer than {}",
                        node.state,
                        Human(age),
                        Human(NODE_CLEANUP)
                    ),
                );
            }
            _ => {}
        }
        if busy {
            return;
        }
        if node.state == NodeState::Delete {
            return self.delete(
                node,
                self.tagged_server(node, provider),
                ReasonCode::Marked,
                format!("marked for deletion {} ago", Human(age)),
            );
        }
        if node.state == NodeState::Used {
            return self.delete(
                node,
                None,
                ReasonCode::Used,
                "its consumer has finished with it".into(),
            );
        }
        // A copied store (`nodepool installation-id --new`) names the original's servers:
        // never hand them out; the row is forgotten and the server left to its owner.
        if matches!(
            node.state,
            NodeState::Ready | NodeState::Building | NodeState::Test
        ) && let Some(other) = self.other_installation(node, provider)
        {
            let text = format!(
                "its server {} carries installation {other}'s tags: the row is forgotten and the server left to that installation",
                node.external_id.as_ref().map_or("", |id| id.as_str()),
            );
            return self.delete(node, None, ReasonCode::OtherInstallation, text);
        }
        if self.vanished(node, provider) {
            return self.delete(
                node,
                None,
                ReasonCode::Vanished,
                format!(
                    "its server {} is in neither of the last two listings of provider {}",
                    node.external_id.as_ref().map_or("", |id| id.as_str()),
                    node.provider
                ),
            );
        }
        let gone = if provider.is_none() {
            Some((
                ReasonCode::ProviderRemoved,
                format!("provider {} is no longer in the config", node.provider),
                Some(Gone::Provider(node.provider.clone())),
            ))
        } else {
            match label.map(|i| &config.labels[i]) {
                None => Some((
                    ReasonCode::LabelRemoved,
                    format!("label {} is no longer in the config", node.label),
                    Some(Gone::Label(node.label.clone(), None)),
                )),
                Some(label) if !label.providers.contains(&node.provider) => Some((
                    ReasonCode::LabelRemoved,
                    format!(
                        "label {} no longer lists provider {}",
                        node.label, node.provider
                    ),
                    Some(Gone::Label(node.label.clone(), Some(node.provider.clone()))),
                )),
                Some(label) if label.min_ready < 0 && node.state != NodeState::InUse => Some((
                    ReasonCode::LabelDisabled,
                    format!("label {} is disabled (min-ready -1)", node.label),
                    None,
                )),
                Some(_) => None,
            }
        };
        if let Some((code, text, removed)) = gone {
            // Gone from the config: kept for removal-grace, in case an edit brings it back.
            if let Some(removed) = removed {
                let since = self.world.removals.since(&removed).unwrap_or(self.now);
                let until = since.saturating_add(config.removal_grace);
                self.gone.insert(removed.clone());
                if self.now < until && node.state != NodeState::InUse {
                    self.wake_at(until);
                    if self.pending.insert(removed.clone()) {
                        self.note(
                            About::Node(node.id),
                            ReasonCode::RemovalPending,
                            format!(
                                "{removed} is gone from the config: its nodes are deleted at {until} (removal-grace), unless the config brings it back"
                            ),
                        );
                    }
                    return;
                }
            }
            if node.state == NodeState::InUse {
                return self.note(
                    About::Node(node.id),
                    ReasonCode::InUse,
                    format!("{text}; node {} is in use and goes once released", node.id),
                );
            }
            return self.delete(node, self.tagged_server(node, provider), code, text);
        }
        match node.state {
            NodeState::Building => self.delete(
                node,
                self.tagged_server(node, provider),
                ReasonCode::Orphaned,
                "building, but no launch is working on it (a daemon stopped during its launch)"
                    .into(),
            ),
            NodeState::Test => self.wake_at(after(TEST_CLEANUP)),
            NodeState::Ready => {}
            _ => self.wake_at(after(NODE_CLEANUP)),
        }
    }

    fn leaks(&mut self) {
        let nodes = self.node_by_id.clone();
        let images: Map<ImageId, _> = self.snapshot.images.iter().map(|i| (i.id, i)).collect();
        for (provider, cloud) in &self.world.clouds {
            let Some(latest) = &cloud.listing else {
                continue;
            };
            for server in latest.servers() {
                // A server is ours when its installation, provider and row all match: a
                // server tagged for another provider of the config is that provider's to
                // judge from its own listing (two providers may share a project).
                let tagged_for = match &server.owner {
                    SeenOwner::Node(_, tagged) | SeenOwner::Image(_, tagged) => Some(tagged),
                    _ => None,
                };
                if let Some(tagged) = tagged_for
                    && tagged != provider
                    && self.config.providers.iter().any(|p| &p.name == tagged)
                {
                    continue;
                }
                // Tagged for a row of another provider than the tags name: not provably
                // that row's, so not provably a leak either.
                let row = match &server.owner {
                    SeenOwner::Node(id, _) => {
                        nodes.get(id).map(|n| (format!("node {id}"), &n.provider))
                    }
                    SeenOwner::Image(id, _) => images
                        .get(id)
                        .map(|i| (format!("image upload {id}"), &i.provider)),
                    _ => None,
                };
                if let (Some(tagged), Some((what, on))) = (tagged_for, row)
                    && on != tagged
                {
                    self.note(
                        About::Server(provider.clone(), server.id.clone()),
                        ReasonCode::Leaked,
                        format!(
                            "server {} is tagged for {what} of provider {tagged}, but {what} is on provider {on}; left for an operator",
                            server.id
                        ),
                    );
                    continue;
                }
                let known = match &server.owner {
                    SeenOwner::Node(id, _) => match nodes.get(id) {
                        Some(n) => match &n.external_id {
                            Some(ext) => ext == &server.id,
                            // The create call has not answered yet, or the orphan delete
                            // takes it.
                            None => true,
                        },
                        None => false,
                    },
                    SeenOwner::Image(id, _) => match images.get(id) {
                        None => false,
                        // Its build is under way, or its deletion takes the template too.
                        Some(upload)
                            if matches!(
                                upload.state,
                                ImageState::Building | ImageState::Delete
                            ) =>
                        {
                            upload
                                .server_external_id
                                .as_ref()
                                .is_none_or(|ext| ext == &server.id)
                        }
                        // The build is over: its template is left over (a daemon stopped
                        // before deleting it), once the cloud has ended its snapshot task.
                        Some(_) if server.busy => {
                            self.note(
                                About::Server(provider.clone(), server.id.clone()),
                                ReasonCode::TemplateBusy,
                                format!(
                                    "template server {} of image upload {id} is left over; deleted once the cloud ends its task on it",
                                    server.id
                                ),
                            );
                            true
                        }
                        Some(_) => false,
                    },
                    SeenOwner::Unreadable => {
                        self.note(
                            About::Server(provider.clone(), server.id.clone()),
                            ReasonCode::Leaked,
                            format!(
                                "server {} on provider {provider} carries this installation's tag but no readable node or image id; left for an operator",
                                server.id
                            ),
                        );
                        true
                    }
                    SeenOwner::OtherInstallation(_) | SeenOwner::NotOurs => true,
                };
                if known {
                    continue;
                }
                let seen_before = cloud
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.contains(&server.id));
                let whose = match &server.owner {
                    SeenOwner::Node(id, _) => format!("node {id}, which the store does not have"),
                    SeenOwner::Image(id, _) if images.contains_key(id) => {
                        format!("image upload {id}, whose build is over")
                    }
                    SeenOwner::Image(id, _) => {
                        format!("image upload {id}, which the store does not have")
                    }
                    _ => String::new(),
                };
                if seen_before {
                    self.deletes.push(NodeAction::DeleteLeak {
                        provider: provider.clone(),
                        server: server.id.clone(),
                        reason: Reason::new(
                            ReasonCode::Leaked,
                            format!(
                                "server {} is tagged for {whose}, in two listings in a row",
                                server.id
                            ),
                        ),
                    });
                } else {
                    self.note(
                        About::Server(provider.clone(), server.id.clone()),
                        ReasonCode::SuspectedLeak,
                        format!(
                            "server {} is tagged for {whose}; deleted if the next listing shows it again",
                            server.id
                        ),
                    );
                }
            }
        }
    }

    /// Why a request can never be served, if it cannot.
    fn unservable(&self, request: &NodeRequest) -> Option<String> {
        for name in &request.labels {
            let Some(label) = self.label_ix.get(name).map(|&i| &self.config.labels[i]) else {
                return Some(format!("there is no label {name} in the config"));
            };
            if label.min_ready < 0 {
                return Some(format!("label {name} is disabled (min-ready -1)"));
            }
            if !label
                .providers
                .iter()
                .any(|p| self.provider_ix.contains_key(p))
            {
                return Some(format!("no provider in the config supplies label {name}"));
            }
        }
        None
    }

    /// Requests in serving order: higher priority first; within one priority, every
    /// requestor's oldest request before anyone's second; then oldest first.
    fn serving_order(&self) -> Vec<&'a NodeRequest> {
        let mut seen: Map<(i32, &str), usize> = Map::default();
        let mut by_age: Vec<&'a NodeRequest> = self.snapshot.requests.iter().collect();
        by_age.sort_by_key(|r| (r.created, r.id));
        // (priority first, this requestor's n-th request, age, id)
        type Order = (std::cmp::Reverse<i32>, usize, Timestamp, RequestId);
        let mut keyed: Vec<(Order, &'a NodeRequest)> = by_age
            .into_iter()
            .map(|r| {
                let turn = seen.entry((r.priority, r.requestor.as_str())).or_insert(0);
                *turn += 1;
                ((std::cmp::Reverse(r.priority), *turn, r.created, r.id), r)
            })
            .collect();
        keyed.sort_by_key(|(key, _)| *key);
        keyed.into_iter().map(|(_, r)| r).collect()
    }

    fn requests(&mut self) {
        // READY nodes free to hand out, per label.
        let mut ready = vec![0usize; self.config.labels.len()];
        for (node, &(_, label)) in self.snapshot.nodes.iter().zip(&self.keys) {
            if let Some(label) = label
                && node.state == NodeState::Ready
                && node.request.is_none()
                && !self.deleted.contains(&node.id)
                && !self.busy(node.id)
            {
                ready[label] += 1;
            }
        }
        for request in self.serving_order() {
            if let Some(why) = self.unservable(request) {
                self.failed_requests.push(NodeAction::FailRequest {
                    request: request.id,
                    reason: Reason::new(ReasonCode::Unservable, why),
                });
                continue;
            }
            let timeout = self.config.api.request_timeout;
            let deadline = request.created.saturating_add(timeout);
            if self.now >= deadline {
                self.failed_requests.push(NodeAction::FailRequest {
                    request: request.id,
                    reason: Reason::new(
                        ReasonCode::RequestTimeout,
                        format!("not served within {} (api.request-timeout)", Human(timeout)),
                    ),
                });
                continue;
            }
            self.wake_at(deadline);
            let mut wanted: BTreeMap<&'a LabelName, usize> = BTreeMap::new();
            for label in &request.labels {
                *wanted.entry(label).or_default() += 1;
            }
            for node in &request.nodes {
                if let Some(label) = self.node_by_id.get(node).map(|n| &n.label)
                    && let Some(n) = wanted.get_mut(label)
                {
                    *n = n.saturating_sub(1);
                }
            }
            for (label, want) in wanted {
                // Every label of a servable request is in the config.
                let Some(&ix) = self.label_ix.get(label) else {
                    continue;
                };
                let take = want.min(ready[ix]);
                if take > 0 {
                    ready[ix] -= take;
                    self.claimed[ix] += take;
                    self.claims.push(NodeAction::Claim {
                        request: request.id,
                        label: label.clone(),
                        count: take,
                        reason: Reason::new(
                            ReasonCode::Claim,
                            format!(
                                "{} asked for {want} {label} node{} (request {}, priority {})",
                                request.requestor,
                                if want == 1 { "" } else { "s" },
                                request.id,
                                request.priority
                            ),
                        ),
                    });
                }
                if want > take {
                    self.outstanding[ix] += want - take;
                }
            }
        }
    }

    /// `provider`'s launch backoff, if one is running. Launch failures count from
    /// `last_success`: the latest state change of a node of the provider that got past
    /// building.
    fn backoff(
        &self,
        provider: &ProviderName,
        last_success: Option<Timestamp>,
    ) -> Option<BackingOff<'a>> {
        let failures: Vec<_> = self
            .snapshot
            .failures
            .iter()
            .filter(|f| &f.provider == provider && matches!(f.attempt, Attempt::Launch(_)))
            .filter(|f| last_success.is_none_or(|s| f.at > s))
            .collect();
        LAUNCH_BACKOFF.running(&failures, self.now)
    }

    fn launches(&mut self) {
        let config = self.config;
        let snapshot = self.snapshot;
        // Supply per label: nodes that are or will be usable, not deleted this round.
        let mut supply = vec![0usize; config.labels.len()];
        let mut in_use = vec![0usize; config.providers.len()];
        let mut last_success: Vec<Option<Timestamp>> = vec![None; config.providers.len()];
        let mut per_zone: Vec<Vec<usize>> = config
            .providers
            .iter()
            .map(|p| vec![0; p.availability_zones.len()])
            .collect();
        for (node, &(provider, label)) in snapshot.nodes.iter().zip(&self.keys) {
            if let Some(label) = label
                && node.state.is_supply()
                && !self.deleted.contains(&node.id)
            {
                supply[label] += 1;
            }
            // Nodes of providers gone from the config count against nothing.
            let Some(p) = provider else {
                continue;
            };
            in_use[p] += 1;
            if matches!(
                node.state,
                NodeState::Ready | NodeState::InUse | NodeState::Used | NodeState::Test
            ) {
                let at = &mut last_success[p];
                *at = Some(at.map_or(node.state_time, |t| t.max(node.state_time)));
            }
            if let Some(az) = &node.az
                && let Some(z) = config.providers[p]
                    .availability_zones
                    .iter()
                    .position(|zone| zone == az)
            {
                per_zone[p][z] += 1;
            }
        }
        // Free capacity per provider, and which are backing off.
        let mut allocator = Allocator::new(&self.world.history);
        let mut slots = Vec::new();
        let mut backing_off = vec![false; config.providers.len()];
        for (i, provider) in config.providers.iter().enumerate() {
            let used = in_use[i];
            let mut free = i64::from(provider.max_servers) - used as i64;
            let headroom = self.clouds[i].map(|c| c.headroom).unwrap_or_default();
            if let Some(instances) = headroom.instances {
                free = free.min(i64::try_from(instances).unwrap_or(i64::MAX));
            }
            slots.push((provider, allocator.add_provider(free), free));
            if let Some(BackingOff {
                until,
                failures: n,
                last,
            }) = self.backoff(&provider.name, last_success[i])
            {
                let why = &last.reason;
                backing_off[i] = true;
                self.wake_at(until);
                self.note(
                    About::Provider(provider.name.clone()),
                    ReasonCode::Backoff,
                    format!(
                        "no launches on provider {} until {until}: {n} launch{} failed in a row, the last: {why}",
                        provider.name,
                        if n == 1 { "" } else { "es" }
                    ),
                );
            }
        }
        // Demand per label, and the providers that can supply it; sub-requests are kept per
        // provider slot, in label order.
        let mut subs: Vec<Vec<Sub<'_>>> = vec![Vec::new(); slots.len()];
        let mut wanted: Vec<(&LabelName, u64)> = Vec::new();
        for (li, label) in config.labels.iter().enumerate() {
            if label.min_ready < 0 {
                continue;
            }
            let outstanding = self.outstanding[li];
            let have = supply[li].saturating_sub(self.claimed[li]);
            let min_ready = usize::try_from(label.min_ready).unwrap_or(0);
            let demand = (outstanding + min_ready).saturating_sub(have);
            if demand == 0 {
                continue;
            }
            let mut suppliers = Vec::new();
            for name in &label.providers {
                let Some(&slot) = self.provider_ix.get(name) else {
                    continue;
                };
                let (provider, ix, _) = slots[slot];
                if backing_off[slot] {
                    continue;
                }
                let about = || About::LabelOn(label.name.clone(), provider.name.clone());
                let Some(&image) = self.current.get(&(&provider.name, &label.image)) else {
                    self.note(
                        about(),
                        ReasonCode::NoImage,
                        format!(
                            "label {} needs {demand} more, but provider {} has no READY image {}",
                            label.name, provider.name, label.image
                        ),
                    );
                    continue;
                };
                let Some(cloud) = self.clouds[slot] else {
                    self.note(
                        about(),
                        ReasonCode::NotConnected,
                        format!(
                            "label {} on provider {} waits: the provider is not connected",
                            label.name, provider.name
                        ),
                    );
                    continue;
                };
                // A READY upload of an image gone from the provider's config is deleted by
                // the image policy this round: nothing launches from it.
                let Some(settings) = provider.images.iter().find(|i| i.name == label.image) else {
                    continue;
                };
                match flavor_for(
                    cloud.flavors.as_deref(),
                    settings.min_ram,
                    settings.name_filter.as_deref(),
                ) {
                    Ok(flavor) => suppliers.push((slot, ix, image, flavor)),
                    Err(why) => self.note(
                        about(),
                        ReasonCode::NoFlavor,
                        format!(
                            "label {} on provider {} waits: {why}",
                            label.name, provider.name
                        ),
                    ),
                }
            }
            if suppliers.is_empty() {
                continue;
            }
            let request = allocator.add_request(label.name.clone(), demand as u64);
            wanted.push((&label.name, demand as u64));
            for (slot, ix, image, flavor) in suppliers {
                subs[slot].push(Sub {
                    label,
                    image,
                    flavor,
                    sub: allocator.add_supplier(request, ix, 0),
                    demand,
                    outstanding,
                    have,
                });
            }
        }
        for &(_, ix, _) in &slots {
            allocator.make_grants(ix);
        }
        self.round = allocator.round();
        // Grants become launches, capped by the cloud's cores and RAM.
        let mut granted_total: Map<&LabelName, u64> = Map::default();
        for (i, (&(provider, _, free), subs)) in slots.iter().zip(&subs).enumerate() {
            let cloud = self.clouds[i];
            let headroom = cloud.map(|c| c.headroom).unwrap_or_default();
            let mut cores = headroom.cores;
            let mut ram = headroom.ram_mb;
            let mut az_counts: Vec<(usize, &String)> = per_zone[i]
                .iter()
                .copied()
                .zip(&provider.availability_zones)
                .collect();
            for &Sub {
                label,
                image,
                flavor,
                sub,
                demand,
                outstanding,
                have,
            } in subs
            {
                let granted = allocator.granted(sub);
                let mut n = granted;
                for (left, per) in [(&mut cores, flavor.vcpus), (&mut ram, flavor.ram_mb)] {
                    if let Some(left) = left
                        && per > 0
                    {
                        n = n.min(*left / per);
                    }
                }
                if let Some(c) = cores.as_mut() {
                    *c -= n * flavor.vcpus;
                }
                if let Some(r) = ram.as_mut() {
                    *r -= n * flavor.ram_mb;
                }
                if n < granted {
                    self.note(
                        About::LabelOn(label.name.clone(), provider.name.clone()),
                        ReasonCode::AtCapacity,
                        format!(
                            "provider {} could launch {granted} {} but its cloud has cores or RAM for {n}",
                            provider.name, label.name
                        ),
                    );
                }
                *granted_total.entry(&label.name).or_default() += n;
                if n == 0 {
                    continue;
                }
                // One reason for the whole grant: formatting it per node would cost more
                // than the rest of the plan.
                let reason = Reason::new(
                    ReasonCode::Demand,
                    format!(
                        "label {} needs {demand} more ({outstanding} waiting request positions + min-ready {} - {have} ready or building); provider {} launches {n} ({free} free of max-servers {})",
                        label.name, label.min_ready, provider.name, provider.max_servers
                    ),
                );
                let hostname = format!("{}-{}-{{node_id}}", label.name, provider.name);
                for _ in 0..n {
                    let az =
                        az_counts
                            .iter_mut()
                            .min_by_key(|(count, _)| *count)
                            .map(|(count, az)| {
                                *count += 1;
                                (*az).clone()
                            });
                    self.launches.push(NodeAction::Launch {
                        provider: provider.name.clone(),
                        label: label.name.clone(),
                        image,
                        flavor: flavor.clone(),
                        hostname: hostname.clone(),
                        az,
                        reason: reason.clone(),
                    });
                }
            }
        }
        // Demand nobody could take.
        for (label, demand) in wanted {
            let got = granted_total.get(label).copied().unwrap_or(0);
            let Some(missing) = demand.checked_sub(got).filter(|m| *m > 0) else {
                continue;
            };
            self.note(
                About::Label(label.clone()),
                ReasonCode::AtCapacity,
                format!(
                    "label {label} is {missing} short: its providers are at max-servers, at their cloud's limits or backing off"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
