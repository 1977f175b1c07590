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
//!   absolute limits (instances, cores, RAM). Only providers with a READY image for the
//!   label take part, and a provider whose launches keep failing waits (10 s, doubling, at
//!   most 5 minutes).
//! - **Deletes**: used nodes; nodes marked for deletion; nodes whose server vanished (absent
//!   from two listings taken after the node's last change); nodes of providers or labels
//!   removed from the config, or of disabled labels; building nodes no launch is working on
//!   (a daemon restarted) or past `launch-timeout` + `boot-timeout`; test nodes after
//!   5 minutes; nodes in any other state but READY after 8 hours. Nodes in use by a request
//!   are left to finish, held nodes are never touched. Leaked servers (tagged by this
//!   installation, unknown to the store) are deleted once seen in two listings in a row;
//!   another installation's servers never are.
//!
//! ```
//! use nodepool_model::{Snapshot, Timestamp};
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
//! assert_eq!(plan.notes[0].reason.code, "no-image");
//! ```

pub mod allocation;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nodepool_config::{Config, Label, Provider};
use nodepool_model::{
    Attempt, ExternalId, Human, ImageId, ImageName, LabelName, Node, NodeId, NodeRequest,
    NodeState, ProviderName, Reason, RequestId, Snapshot, Timestamp,
};

use allocation::Allocator;
pub use allocation::{History, Round};

/// Nodes in any state but READY and HOLD are deleted after this long in it (2014
/// `NODE_CLEANUP`).
pub const NODE_CLEANUP: Duration = Duration::from_secs(8 * 3600);

/// Nodes in TEST are deleted after this long (2014 `TEST_CLEANUP`).
pub const TEST_CLEANUP: Duration = Duration::from_secs(5 * 60);

/// The wait after a provider's first failed launch; it doubles per failure in a row.
pub const LAUNCH_BACKOFF_FIRST: Duration = Duration::from_secs(10);

/// The longest wait between failed launches on one provider.
pub const LAUNCH_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// The stable codes of the reasons this policy gives.
pub mod codes {
    /// A label needs more nodes than it has (requests and `min-ready`).
    pub const DEMAND: &str = "demand";
    /// Ready nodes handed to a request.
    pub const CLAIM: &str = "claim";
    /// A request that can never be served.
    pub const UNSERVABLE: &str = "unservable";
    /// A consumer has finished with the node.
    pub const USED: &str = "used";
    /// Already marked for deletion (by an operator, a failure or an earlier round).
    pub const MARKED: &str = "marked";
    /// Its server is gone from the cloud.
    pub const VANISHED: &str = "vanished";
    /// Its provider is gone from the config.
    pub const PROVIDER_REMOVED: &str = "provider-removed";
    /// Its label is gone from the config, or no longer lists its provider.
    pub const LABEL_REMOVED: &str = "label-removed";
    /// Its label has `min-ready: -1`.
    pub const LABEL_DISABLED: &str = "label-disabled";
    /// Building, and no launch is working on it.
    pub const ORPHANED: &str = "orphaned";
    /// Building past `launch-timeout` + `boot-timeout`.
    pub const LAUNCH_TIMEOUT: &str = "launch-timeout";
    /// In TEST past 5 minutes.
    pub const TEST_TIMEOUT: &str = "test-timeout";
    /// In a state other than READY or HOLD past 8 hours.
    pub const NODE_CLEANUP: &str = "node-cleanup";
    /// A server tagged by this installation that the store does not know.
    pub const LEAKED: &str = "leaked";
    /// A leak seen once, to be deleted if the next listing shows it again.
    pub const SUSPECTED_LEAK: &str = "suspected-leak";
    /// A held node whose provider or label is gone: kept, as holds are.
    pub const HELD: &str = "held";
    /// In use by a request although its provider or label is gone: deleted once released.
    pub const IN_USE: &str = "in-use";
    /// No READY image for the label on the provider.
    pub const NO_IMAGE: &str = "no-image";
    /// Recent launches on the provider failed; the next one waits.
    pub const BACKOFF: &str = "backoff";
    /// Demand the providers cannot meet now (max-servers or the cloud's limits).
    pub const AT_CAPACITY: &str = "at-capacity";
}

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
}

/// Whose a server in a listing is, as its tags say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeenOwner {
    /// This installation's, for a node.
    Node(NodeId),
    /// This installation's, for an image build (a template server).
    Image(ImageId),
    /// Tagged with this installation, but the rest of its tags are unreadable.
    Unreadable,
    /// Another installation's, or not nodepool's.
    NotOurs,
}

/// One server of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenServer {
    /// The cloud's id.
    pub id: ExternalId,
    /// Whose it is.
    pub owner: SeenOwner,
}

/// One complete server listing of a provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// When the listing was asked for (before the call).
    pub at: Timestamp,
    /// Every server it returned.
    pub servers: Vec<SeenServer>,
}

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

/// What one node of an image costs: its flavor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Cores.
    pub vcpus: u64,
    /// RAM in MB.
    pub ram_mb: u64,
}

/// What the daemon last saw of one provider's cloud.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudView {
    /// The newest complete listing, if one succeeded.
    pub listing: Option<Listing>,
    /// The one before it.
    pub previous: Option<Listing>,
    /// The cloud's remaining capacity, if known.
    pub headroom: Headroom,
    /// The flavor each image launches with, if known.
    pub costs: BTreeMap<ImageName, Cost>,
}

/// What the policy knows beyond the store and the config.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Each provider's cloud as last seen.
    pub clouds: BTreeMap<ProviderName, CloudView>,
    /// Nodes an executor is working on (launching or deleting): only timeouts touch them.
    pub busy: BTreeSet<NodeId>,
    /// The allocator's fairness history.
    pub history: History,
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

/// One label's request from one provider, as the launch stage reads it back.
#[derive(Clone, Copy)]
struct Sub<'a> {
    label: &'a Label,
    image: ImageId,
    sub: allocation::SubIx,
    demand: usize,
    outstanding: usize,
    have: usize,
}

/// One provider's listings, indexed.
#[derive(Default)]
struct Seen<'a> {
    /// Server ids of the newest listing.
    latest: BTreeSet<&'a ExternalId>,
    /// Server ids of the listing before it.
    previous: BTreeSet<&'a ExternalId>,
    /// The server each node's tag names, in the newest listing.
    tagged: BTreeMap<NodeId, &'a ExternalId>,
}

struct Planner<'a> {
    snapshot: &'a Snapshot,
    seen: BTreeMap<&'a ProviderName, Seen<'a>>,
    /// The upload each (provider, image) launches from.
    current: BTreeMap<(&'a ProviderName, &'a ImageName), ImageId>,
    config: &'a Config,
    now: Timestamp,
    world: &'a World,
    providers: BTreeMap<&'a ProviderName, &'a Provider>,
    labels: BTreeMap<&'a LabelName, &'a Label>,
    /// Nodes deleted this round.
    deleted: BTreeSet<NodeId>,
    /// Ready nodes claimed this round, per label.
    claimed: BTreeMap<&'a LabelName, usize>,
    /// Request positions not served by ready nodes, per label.
    outstanding: BTreeMap<&'a LabelName, usize>,
    failed_requests: Vec<NodeAction>,
    claims: Vec<NodeAction>,
    deletes: Vec<NodeAction>,
    launches: Vec<NodeAction>,
    notes: Vec<Note>,
    round: Round,
    next_wakeup: Option<Timestamp>,
}

impl<'a> Planner<'a> {
    fn new(snapshot: &'a Snapshot, config: &'a Config, now: Timestamp, world: &'a World) -> Self {
        let mut seen: BTreeMap<&'a ProviderName, Seen<'a>> = BTreeMap::new();
        for (provider, cloud) in &world.clouds {
            let entry = seen.entry(provider).or_default();
            if let Some(latest) = &cloud.listing {
                for server in &latest.servers {
                    entry.latest.insert(&server.id);
                    if let SeenOwner::Node(id) = server.owner {
                        entry.tagged.entry(id).or_insert(&server.id);
                    }
                }
            }
            if let Some(previous) = &cloud.previous {
                entry.previous = previous.servers.iter().map(|s| &s.id).collect();
            }
        }
        let mut current: BTreeMap<(&'a ProviderName, &'a ImageName), &'a nodepool_model::Image> =
            BTreeMap::new();
        for image in &snapshot.images {
            if image.state == nodepool_model::ImageState::Ready {
                let best = current
                    .entry((&image.provider, &image.name))
                    .or_insert(image);
                if (image.version, image.id) > (best.version, best.id) {
                    *best = image;
                }
            }
        }
        Planner {
            snapshot,
            seen,
            current: current.into_iter().map(|(k, i)| (k, i.id)).collect(),
            config,
            now,
            world,
            providers: config.providers.iter().map(|p| (&p.name, p)).collect(),
            labels: config.labels.iter().map(|l| (&l.name, l)).collect(),
            deleted: BTreeSet::new(),
            claimed: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            failed_requests: Vec::new(),
            claims: Vec::new(),
            deletes: Vec::new(),
            launches: Vec::new(),
            notes: Vec::new(),
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
        }
    }

    fn wake_at(&mut self, at: Timestamp) {
        if at > self.now {
            self.next_wakeup = Some(self.next_wakeup.map_or(at, |t| t.min(at)));
        }
    }

    fn note(&mut self, about: About, code: &'static str, text: String) {
        self.notes.push(Note {
            about,
            reason: Reason::new(code, text),
        });
    }

    fn delete(
        &mut self,
        node: &Node,
        server: Option<ExternalId>,
        code: &'static str,
        text: String,
    ) {
        self.deleted.insert(node.id);
        self.deletes.push(NodeAction::Delete {
            node: node.id,
            server: server.or_else(|| node.external_id.clone()),
            reason: Reason::new(code, text),
        });
    }

    /// The server tagged for `node` in its provider's newest listing.
    fn tagged_server(&self, node: &Node) -> Option<ExternalId> {
        let seen = self.seen.get(&node.provider)?;
        seen.tagged.get(&node.id).map(|id| (*id).clone())
    }

    /// Whether `node`'s server is absent from two listings taken after its last change.
    fn vanished(&self, node: &Node) -> bool {
        let Some(id) = &node.external_id else {
            return false;
        };
        let Some(cloud) = self.world.clouds.get(&node.provider) else {
            return false;
        };
        let (Some(_), Some(previous)) = (&cloud.listing, &cloud.previous) else {
            return false;
        };
        let Some(seen) = self.seen.get(&node.provider) else {
            return false;
        };
        previous.at > node.state_time && !seen.latest.contains(id) && !seen.previous.contains(id)
    }

    fn deletes(&mut self) {
        for node in &self.snapshot.nodes {
            self.judge(node);
        }
    }

    /// Whether to delete one node now, and if not, when to look again.
    fn judge(&mut self, node: &'a Node) {
        let age = self.now.saturating_since(node.state_time);
        let after = |limit: Duration| {
            node.state_time
                .saturating_add(limit)
                .saturating_add(Duration::from_millis(1))
        };
        if node.state == NodeState::Hold {
            if !self.providers.contains_key(&node.provider)
                || !self.labels.contains_key(&node.label)
            {
                self.note(
                    About::Node(node.id),
                    codes::HELD,
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
        let busy = self.world.busy.contains(&node.id);
        // Deadlines apply even to nodes an executor holds: a stuck launch is cancelled.
        match node.state {
            NodeState::Building => {
                let timeout = self
                    .providers
                    .get(&node.provider)
                    .map(|p| (p.launch_timeout.saturating_add(p.boot_timeout), p));
                if let Some((timeout, p)) = timeout {
                    if age > timeout {
                        return self.delete(
                            node,
                            self.tagged_server(node),
                            codes::LAUNCH_TIMEOUT,
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
                    codes::TEST_TIMEOUT,
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
                    codes::NODE_CLEANUP,
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
                self.tagged_server(node),
                codes::MARKED,
                format!("marked for deletion {} ago", Human(age)),
            );
        }
        if node.state == NodeState::Used {
            return self.delete(
                node,
                None,
                codes::USED,
                "its consumer has finished with it".into(),
            );
        }
        if self.vanished(node) {
            return self.delete(
                node,
                None,
                codes::VANISHED,
                format!(
                    "its server {} is in neither of the last two listings of provider {}",
                    node.external_id.as_ref().map_or("", |id| id.as_str()),
                    node.provider
                ),
            );
        }
        let gone = if !self.providers.contains_key(&node.provider) {
            Some((
                codes::PROVIDER_REMOVED,
                format!("provider {} is no longer in the config", node.provider),
            ))
        } else {
            match self.labels.get(&node.label) {
                None => Some((
                    codes::LABEL_REMOVED,
                    format!("label {} is no longer in the config", node.label),
                )),
                Some(label) if !label.providers.contains(&node.provider) => Some((
                    codes::LABEL_REMOVED,
                    format!(
                        "label {} no longer lists provider {}",
                        node.label, node.provider
                    ),
                )),
                Some(label) if label.min_ready < 0 && node.state != NodeState::InUse => Some((
                    codes::LABEL_DISABLED,
                    format!("label {} is disabled (min-ready -1)", node.label),
                )),
                Some(_) => None,
            }
        };
        if let Some((code, text)) = gone {
            if node.state == NodeState::InUse {
                return self.note(
                    About::Node(node.id),
                    codes::IN_USE,
                    format!("{text}; node {} is in use and goes once released", node.id),
                );
            }
            return self.delete(node, self.tagged_server(node), code, text);
        }
        match node.state {
            NodeState::Building => self.delete(
                node,
                self.tagged_server(node),
                codes::ORPHANED,
                "building, but no launch is working on it (a daemon stopped during its launch)"
                    .into(),
            ),
            NodeState::Test => self.wake_at(after(TEST_CLEANUP)),
            NodeState::Ready => {}
            _ => self.wake_at(after(NODE_CLEANUP)),
        }
    }

    fn leaks(&mut self) {
        let nodes: BTreeMap<NodeId, &Node> =
            self.snapshot.nodes.iter().map(|n| (n.id, n)).collect();
        let images: BTreeMap<ImageId, _> = self.snapshot.images.iter().map(|i| (i.id, i)).collect();
        for (provider, cloud) in &self.world.clouds {
            let Some(latest) = &cloud.listing else {
                continue;
            };
            for server in &latest.servers {
                let known = match &server.owner {
                    SeenOwner::Node(id) => nodes.get(id).is_some_and(|n| match &n.external_id {
                        Some(ext) => ext == &server.id,
                        // The create call has not answered yet, or the orphan delete takes it.
                        None => true,
                    }),
                    SeenOwner::Image(id) => images.get(id).is_some_and(|i| {
                        i.server_external_id
                            .as_ref()
                            .is_none_or(|ext| ext == &server.id)
                    }),
                    SeenOwner::Unreadable => {
                        self.note(
                            About::Server(provider.clone(), server.id.clone()),
                            codes::LEAKED,
                            format!(
                                "server {} on provider {provider} carries this installation's tag but no readable node or image id; left for an operator",
                                server.id
                            ),
                        );
                        true
                    }
                    SeenOwner::NotOurs => true,
                };
                if known {
                    continue;
                }
                let seen_before = self
                    .seen
                    .get(provider)
                    .is_some_and(|s| s.previous.contains(&server.id));
                let whose = match &server.owner {
                    SeenOwner::Node(id) => format!("node {id}"),
                    SeenOwner::Image(id) => format!("image upload {id}"),
                    _ => String::new(),
                };
                if seen_before {
                    self.deletes.push(NodeAction::DeleteLeak {
                        provider: provider.clone(),
                        server: server.id.clone(),
                        reason: Reason::new(
                            codes::LEAKED,
                            format!(
                                "server {} is tagged for {whose}, which the store does not have, in two listings in a row",
                                server.id
                            ),
                        ),
                    });
                } else {
                    self.note(
                        About::Server(provider.clone(), server.id.clone()),
                        codes::SUSPECTED_LEAK,
                        format!(
                            "server {} is tagged for {whose}, which the store does not have; deleted if the next listing shows it again",
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
            let Some(label) = self.labels.get(name) else {
                return Some(format!("there is no label {name} in the config"));
            };
            if label.min_ready < 0 {
                return Some(format!("label {name} is disabled (min-ready -1)"));
            }
            if !label
                .providers
                .iter()
                .any(|p| self.providers.contains_key(p))
            {
                return Some(format!("no provider in the config supplies label {name}"));
            }
        }
        None
    }

    /// Requests in serving order: higher priority first; within one priority, every
    /// requestor's oldest request before anyone's second; then oldest first.
    fn serving_order(&self) -> Vec<&'a NodeRequest> {
        let mut seen: BTreeMap<(i32, &str), usize> = BTreeMap::new();
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
        let mut ready: BTreeMap<&'a LabelName, usize> = BTreeMap::new();
        for node in &self.snapshot.nodes {
            if node.state == NodeState::Ready
                && node.request.is_none()
                && !self.deleted.contains(&node.id)
                && !self.world.busy.contains(&node.id)
            {
                *ready.entry(&node.label).or_default() += 1;
            }
        }
        let node_labels: BTreeMap<NodeId, &LabelName> = self
            .snapshot
            .nodes
            .iter()
            .map(|n| (n.id, &n.label))
            .collect();
        for request in self.serving_order() {
            if let Some(why) = self.unservable(request) {
                self.failed_requests.push(NodeAction::FailRequest {
                    request: request.id,
                    reason: Reason::new(codes::UNSERVABLE, why),
                });
                continue;
            }
            let mut wanted: BTreeMap<&'a LabelName, usize> = BTreeMap::new();
            for label in &request.labels {
                *wanted.entry(label).or_default() += 1;
            }
            for node in &request.nodes {
                if let Some(label) = node_labels.get(node)
                    && let Some(n) = wanted.get_mut(*label)
                {
                    *n = n.saturating_sub(1);
                }
            }
            for (label, want) in wanted {
                let free = ready.entry(label).or_default();
                let take = want.min(*free);
                if take > 0 {
                    *free -= take;
                    *self.claimed.entry(label).or_default() += take;
                    self.claims.push(NodeAction::Claim {
                        request: request.id,
                        label: label.clone(),
                        count: take,
                        reason: Reason::new(
                            codes::CLAIM,
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
                    *self.outstanding.entry(label).or_default() += want - take;
                }
            }
        }
    }

    /// The end of `provider`'s launch backoff, if one is running.
    /// Launch failures count from `last_success`: the latest state change of a node of the
    /// provider that got past building.
    fn backoff(
        &self,
        provider: &ProviderName,
        last_success: Option<Timestamp>,
    ) -> Option<(Timestamp, usize, String)> {
        let failures: Vec<_> = self
            .snapshot
            .failures
            .iter()
            .filter(|f| &f.provider == provider && matches!(f.attempt, Attempt::Launch(_)))
            .filter(|f| last_success.is_none_or(|s| f.at > s))
            .collect();
        let last = failures.last()?;
        let n = failures.len();
        let exponent = u32::try_from(n - 1).unwrap_or(u32::MAX).min(16);
        let wait = LAUNCH_BACKOFF_FIRST
            .saturating_mul(1 << exponent)
            .min(LAUNCH_BACKOFF_MAX);
        let until = last.at.saturating_add(wait);
        (until > self.now).then(|| (until, n, last.reason.clone()))
    }

    fn launches(&mut self) {
        let config = self.config;
        let snapshot = self.snapshot;
        // Supply per label: nodes that are or will be usable, not deleted this round.
        let mut supply: BTreeMap<&LabelName, usize> = BTreeMap::new();
        let mut in_use: BTreeMap<&ProviderName, usize> = BTreeMap::new();
        let mut last_success: BTreeMap<&ProviderName, Timestamp> = BTreeMap::new();
        let mut per_zone: BTreeMap<(&ProviderName, &str), usize> = BTreeMap::new();
        for node in &snapshot.nodes {
            *in_use.entry(&node.provider).or_default() += 1;
            if matches!(
                node.state,
                NodeState::Ready | NodeState::InUse | NodeState::Used | NodeState::Test
            ) {
                let at = last_success
                    .entry(&node.provider)
                    .or_insert(node.state_time);
                *at = (*at).max(node.state_time);
            }
            if let Some(az) = &node.az {
                *per_zone.entry((&node.provider, az.as_str())).or_default() += 1;
            }
            if node.state.is_supply() && !self.deleted.contains(&node.id) {
                *supply.entry(&node.label).or_default() += 1;
            }
        }
        // Free capacity per provider, and which are backing off.
        let mut allocator = Allocator::new(&self.world.history);
        let mut slots = Vec::new();
        let mut backing_off = BTreeSet::new();
        for provider in &config.providers {
            let used = in_use.get(&provider.name).copied().unwrap_or(0);
            let mut free = i64::from(provider.max_servers) - used as i64;
            let headroom = self
                .world
                .clouds
                .get(&provider.name)
                .map(|c| c.headroom)
                .unwrap_or_default();
            if let Some(instances) = headroom.instances {
                free = free.min(i64::try_from(instances).unwrap_or(i64::MAX));
            }
            slots.push((provider, allocator.add_provider(free), free));
            let success = last_success.get(&provider.name).copied();
            if let Some((until, n, why)) = self.backoff(&provider.name, success) {
                backing_off.insert(&provider.name);
                self.wake_at(until);
                self.note(
                    About::Provider(provider.name.clone()),
                    codes::BACKOFF,
                    format!(
                        "no launches on provider {} until {until}: {n} launch{} failed in a row, the last: {why}",
                        provider.name,
                        if n == 1 { "" } else { "es" }
                    ),
                );
            }
        }
        let slot_of: BTreeMap<&ProviderName, usize> = slots
            .iter()
            .enumerate()
            .map(|(i, (p, _, _))| (&p.name, i))
            .collect();
        // Demand per label, and the providers that can supply it; sub-requests are kept per
        // provider slot, in label order.
        let mut subs: Vec<Vec<Sub<'_>>> = vec![Vec::new(); slots.len()];
        let mut wanted: Vec<(&LabelName, u64)> = Vec::new();
        for label in config.labels.iter().filter(|l| l.min_ready >= 0) {
            let outstanding = self.outstanding.get(&label.name).copied().unwrap_or(0);
            let claimed = self.claimed.get(&label.name).copied().unwrap_or(0);
            let have = supply
                .get(&label.name)
                .copied()
                .unwrap_or(0)
                .saturating_sub(claimed);
            let min_ready = usize::try_from(label.min_ready).unwrap_or(0);
            let demand = (outstanding + min_ready).saturating_sub(have);
            if demand == 0 {
                continue;
            }
            let mut suppliers = Vec::new();
            for name in &label.providers {
                let Some(&slot) = slot_of.get(name) else {
                    continue;
                };
                let (provider, ix, _) = slots[slot];
                if backing_off.contains(&provider.name) {
                    continue;
                }
                match self.current.get(&(&provider.name, &label.image)) {
                    Some(&image) => suppliers.push((slot, ix, image)),
                    None => self.note(
                        About::LabelOn(label.name.clone(), provider.name.clone()),
                        codes::NO_IMAGE,
                        format!(
                            "label {} needs {demand} more, but provider {} has no READY image {}",
                            label.name, provider.name, label.image
                        ),
                    ),
                }
            }
            if suppliers.is_empty() {
                continue;
            }
            let request = allocator.add_request(label.name.clone(), demand as u64);
            wanted.push((&label.name, demand as u64));
            for (slot, ix, image) in suppliers {
                subs[slot].push(Sub {
                    label,
                    image,
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
        let mut granted_total: BTreeMap<&LabelName, u64> = BTreeMap::new();
        for (&(provider, _, free), subs) in slots.iter().zip(&subs) {
            let cloud = self.world.clouds.get(&provider.name);
            let headroom = cloud.map(|c| c.headroom).unwrap_or_default();
            let mut cores = headroom.cores;
            let mut ram = headroom.ram_mb;
            let mut az_counts: Vec<(usize, &String)> = provider
                .availability_zones
                .iter()
                .map(|az| {
                    let n = per_zone
                        .get(&(&provider.name, az.as_str()))
                        .copied()
                        .unwrap_or(0);
                    (n, az)
                })
                .collect();
            for &Sub {
                label,
                image,
                sub,
                demand,
                outstanding,
                have,
            } in subs
            {
                let granted = allocator.granted(sub);
                let mut n = granted;
                if let Some(cost) = cloud.and_then(|c| c.costs.get(&label.image)) {
                    for (left, per) in [(&mut cores, cost.vcpus), (&mut ram, cost.ram_mb)] {
                        if let Some(left) = left
                            && per > 0
                        {
                            n = n.min(*left / per);
                        }
                    }
                    if let Some(c) = cores.as_mut() {
                        *c -= n * cost.vcpus;
                    }
                    if let Some(r) = ram.as_mut() {
                        *r -= n * cost.ram_mb;
                    }
                }
                if n < granted {
                    self.note(
                        About::LabelOn(label.name.clone(), provider.name.clone()),
                        codes::AT_CAPACITY,
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
                    codes::DEMAND,
                    format!(
                        "label {} needs {demand} more ({outstanding} waiting request positions + min-ready {} - {have} ready or building); provider {} launches {n} ({free} free of max-servers {})",
                        label.name, label.min_ready, provider.name, provider.max_servers
                    ),
                );
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
                codes::AT_CAPACITY,
                format!(
                    "label {label} is {missing} short: its providers are at max-servers or their cloud's limits"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
