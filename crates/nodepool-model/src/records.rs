//! Plain records of what nodepool manages.
//!
//! These are snapshots of stored rows in domain types. They hold no behaviour beyond
//! a few derived values; the store decides how they change and the policies decide why.

use std::net::IpAddr;

use crate::{
    ExternalId, ImageId, ImageName, ImageState, LabelName, NodeId, NodeState, ProviderName,
    RequestId, RequestState, Timestamp,
};

/// Why and by whom a node is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldNote {
    /// Free text given by the operator (`nodepool hold ID --reason ...`).
    pub reason: String,
    /// Who held it: a user name or an API client.
    pub by: String,
}

/// One cloud server that nodepool manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The store's id.
    pub id: NodeId,
    /// The provider the server lives on.
    pub provider: ProviderName,
    /// The label it was launched for.
    pub label: LabelName,
    /// The availability zone it was launched in, if the provider names zones.
    pub az: Option<String>,
    /// Its fully qualified host name, set once the launch has started.
    pub hostname: Option<String>,
    /// The cloud's server id; `None` until the cloud has answered the create call.
    pub external_id: Option<ExternalId>,
    /// The address consumers reach it at.
    pub public_ip: Option<IpAddr>,
    /// Its address on the cloud's private network, if it has one.
    pub private_ip: Option<IpAddr>,
    /// Where it is in its life.
    pub state: NodeState,
    /// When it entered `state`; ages and timeouts count from here.
    pub state_time: Timestamp,
    /// The image upload it was booted from.
    pub image: Option<ImageId>,
    /// The request it is assigned to, if any.
    pub request: Option<RequestId>,
    /// Why it is held, while it is held.
    pub hold: Option<HoldNote>,
    /// When the store first recorded it.
    pub created: Timestamp,
    /// The SSH host keys its server presented when it was reached (OpenSSH public key
    /// lines); empty until then.
    pub host_keys: Vec<String>,
}

impl Node {
    /// The host name up to its first dot: the 2014 `NodeName` column.
    pub fn nodename(&self) -> Option<&str> {
        self.hostname
            .as_deref()
            .map(|host| host.split_once('.').map_or(host, |(short, _)| short))
    }
}

/// One version of an image uploaded to one provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The store's id.
    pub id: ImageId,
    /// The provider it lives on.
    pub provider: ProviderName,
    /// The image's config name.
    pub name: ImageName,
    /// When its build started; the newest ready version is the one launches use.
    pub version: Timestamp,
    /// Host name of the template server, which is also the snapshot's name.
    pub hostname: Option<String>,
    /// The cloud's image id, once the snapshot exists.
    pub external_id: Option<ExternalId>,
    /// The cloud's id of the template server the snapshot was taken from.
    pub server_external_id: Option<ExternalId>,
    /// Where it is in its life.
    pub state: ImageState,
    /// When it entered `state`; the 8-hour retention rule counts from here.
    pub state_time: Timestamp,
}

/// A consumer's request for a set of nodes, one per label listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRequest {
    /// The store's id.
    pub id: RequestId,
    /// One node is wanted per entry; a label may appear more than once.
    pub labels: Vec<LabelName>,
    /// Who asked: a CI system's name, used for fairness between consumers.
    pub requestor: String,
    /// Higher is served first.
    pub priority: i32,
    /// Where it is in its life.
    pub state: RequestState,
    /// When it entered `state`.
    pub state_time: Timestamp,
    /// The nodes assigned so far.
    pub nodes: Vec<NodeId>,
    /// Why it failed, once it has.
    pub failure: Option<String>,
    /// When it was made.
    pub created: Timestamp,
}

/// What failed: a node launch or an image build.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attempt {
    /// Launching a node of this label.
    Launch(LabelName),
    /// Building this image.
    Build(ImageName),
}

/// A launch or build that failed, kept for a while after its node or image row is gone so
/// that the policies can back off instead of retrying a broken cloud or script at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The provider it failed on.
    pub provider: ProviderName,
    /// What was attempted.
    pub attempt: Attempt,
    /// When it failed.
    pub at: Timestamp,
    /// What kind of step failed.
    pub kind: FailureKind,
    /// Why, as the executor saw it.
    pub reason: String,
}

/// What kind of step failed, as the executor classified it. Each failure keeps its kind,
/// so that the backoff and operators can tell a full quota from refused credentials, a
/// cloud that is down, or a broken script. Like reason codes, the strings are a persisted
/// interface and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// A quota of the project was exceeded.
    Quota,
    /// The cloud refused the credentials.
    Auth,
    /// The cloud failed or was unreachable (a 5xx, a reset connection, throttling): it
    /// may pass.
    CloudError,
    /// The cloud refused the request (a 4xx, a server or image in ERROR): it will not pass
    /// by itself.
    CloudRefused,
    /// A wait ran out: for a server to be ACTIVE, an SSH login, a snapshot.
    Timeout,
    /// SSH failed: no connection, a refused login, a changed host key.
    Ssh,
    /// A script on the node (setup, ready) exited with an error.
    Script,
    /// The store could not record a step.
    Store,
    /// The config no longer has what the step needs (its label or image), or what it
    /// names is missing (a script folder).
    Config,
    /// Recorded before failures had kinds, or by a newer version with a kind this one does
    /// not know.
    Unknown,
}

impl FailureKind {
    /// Every kind, in the order of the enum.
    pub const ALL: &'static [FailureKind] = &[
        FailureKind::Quota,
        FailureKind::Auth,
        FailureKind::CloudError,
        FailureKind::CloudRefused,
        FailureKind::Timeout,
        FailureKind::Ssh,
        FailureKind::Script,
        FailureKind::Store,
        FailureKind::Config,
        FailureKind::Unknown,
    ];

    /// The kind as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Quota => "quota",
            FailureKind::Auth => "auth",
            FailureKind::CloudError => "cloud-error",
            FailureKind::CloudRefused => "cloud-refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Ssh => "ssh",
            FailureKind::Script => "script",
            FailureKind::Store => "store",
            FailureKind::Config => "config",
            FailureKind::Unknown => "unknown",
        }
    }

    /// The kind of a stored string; one this version does not know is
    /// [`FailureKind::Unknown`].
    pub fn parse(kind: &str) -> FailureKind {
        FailureKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == kind)
            .unwrap_or(FailureKind::Unknown)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
