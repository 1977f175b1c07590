//! Why things happened: reasons and the event log.
//!
//! Every state change nodepool makes is recorded with a reason, so that an operator can
//! ask "why was this node launched, held, deleted?" and get an answer (`nodepool show`).
//! A reason has a short stable code for machines ([`ReasonCode`]: `demand`,
//! `launch-timeout`, `operator-delete`) and a sentence for people.

use std::fmt;

use crate::{ImageId, NodeId, ReasonCode, RequestId, Timestamp};

/// Why something happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reason {
    /// A short, stable code such as `demand` or `launch-timeout`.
    pub code: ReasonCode,
    /// A sentence for people, naming what matters (counts, limits, who asked).
    pub text: String,
}

impl Reason {
    /// A reason: its code and its sentence.
    pub fn new(code: ReasonCode, text: impl Into<String>) -> Reason {
        Reason {
            code,
            text: text.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text, self.code)
    }
}

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A node.
    Node(NodeId),
    /// An image upload.
    Image(ImageId),
    /// A node request.
    Request(RequestId),
    /// An image build request.
    Build(BuildRequestId),
}

impl Subject {
    /// The kind of subject, as stored: `node`, `image`, `request` or `build`.
    pub const fn kind(self) -> &'static str {
        match self {
            Subject::Node(_) => "node",
            Subject::Image(_) => "image",
            Subject::Request(_) => "request",
            Subject::Build(_) => "build",
        }
    }

    /// The subject's id.
    pub const fn id(self) -> u64 {
        match self {
            Subject::Node(id) => id.get(),
            Subject::Image(id) => id.get(),
            Subject::Request(id) => id.get(),
            Subject::Build(id) => id.get(),
        }
    }

    /// The subject of a stored kind and id; `None` for an unknown kind.
    pub fn from_parts(kind: &str, id: u64) -> Option<Subject> {
        Some(match kind {
            "node" => Subject::Node(NodeId::new(id)),
            "image" => Subject::Image(ImageId::new(id)),
            "request" => Subject::Request(RequestId::new(id)),
            "build" => Subject::Build(BuildRequestId::new(id)),
            _ => return None,
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// One entry of a subject's history. Entries are never changed once written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What it is about.
    pub subject: Subject,
    /// Its position in the subject's history, from 1.
    pub seq: u64,
    /// When it happened.
    pub time: Timestamp,
    /// What happened: `created`, `state ready`, `server 1f0c...`, `hold`, ...
    pub what: String,
    /// Why.
    pub reason: Reason,
    /// Which process did it: a daemon's name, or `nodepool` for the admin command.
    pub actor: String,
}

crate::ids::id_type!(
    /// The store's id of an image build request.
    BuildRequestId
);

crate::state::state_enum! {
    /// Where an image build request is.
    BuildRequestState, "build request" {
        /// Recorded; no daemon has started it yet.
        Pending => "pending",
        /// A daemon has started the builds it asks for.
        Started => "started",
        /// Every build it asked for is ready.
        Done => "done",
        /// A build it asked for failed; the record says why.
        Failed => "failed",
    }
}

/// An operator's request to build an image now (`nodepool image-update`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRequest {
    /// The store's id.
    pub id: BuildRequestId,
    /// The provider to build on; `None` for every provider that has the image.
    pub provider: Option<crate::ProviderName>,
    /// The image to build.
    pub image: crate::ImageName,
    /// Who asked.
    pub requested_by: String,
    /// Where it is.
    pub state: BuildRequestState,
    /// When it entered `state`.
    pub state_time: Timestamp,
    /// Why it failed, once it has.
    pub failure: Option<String>,
    /// When it was made.
    pub created: Timestamp,
}
