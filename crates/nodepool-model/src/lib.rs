//! Domain types of nodepool, shared by every other crate.
//!
//! Nodepool keeps pools of ready cloud servers ("nodes") for CI systems and
//! builds the images they boot from.
//! This crate names the things it manages and the states they move through:
//!
//! - names chosen by operators in the config: [`ProviderName`], [`LabelName`], [`ImageName`];
//! - ids given by the store ([`NodeId`], [`ImageId`], [`RequestId`]) and by the cloud ([`ExternalId`]);
//! - the state machines [`NodeState`], [`ImageState`] and [`RequestState`],
//!   with the state names nodepool has printed since 2014;
//! - [`Timestamp`], the only notion of time the policies see;
//! - plain records: [`Node`], [`Image`] and [`NodeRequest`];
//! - [`Reason`]s with their stable [`ReasonCode`]s, and the event log;
//! - the few rules both policies share ([`Backoff`], [`current_upload`], [`pick_flavor`]).
//!
//! It performs no I/O and knows nothing of YAML, SQL or OpenStack.
//!
//! ```
//! use nodepool_model::{LabelName, NodeState, Timestamp};
//!
//! let label = LabelName::new("ubuntu-jammy")?;
//! assert_eq!(label.as_str(), "ubuntu-jammy");
//!
//! // States print with their 2014 names and refuse impossible moves.
//! assert_eq!(NodeState::Ready.to_string(), "ready");
//! assert!(NodeState::Ready.can_become(NodeState::Hold));
//! assert!(!NodeState::Ready.can_become(NodeState::Building));
//!
//! // Ages are measured from the last state change, in hours, as `nodepool list` shows them.
//! let changed = Timestamp::from_unix_seconds(1_400_000_000);
//! let now = Timestamp::from_unix_seconds(1_400_000_000 + 5400);
//! assert_eq!(now.hours_since(changed), 1.5);
//! # Ok::<(), nodepool_model::NameError>(())
//! ```

mod codes;
mod events;
mod ids;
mod records;
mod removals;
mod rules;
mod snapshot;
mod state;
mod time;

pub use codes::{ReasonCode, UnknownCode};
pub use events::{BuildRequest, BuildRequestId, BuildRequestState, Event, Reason, Subject};
pub use ids::{
    ExternalId, ImageId, ImageName, InstallationId, LabelName, MAX_NAME_LEN, NameError, NodeId,
    ProviderName, RequestId,
};
pub use records::{Attempt, Failure, FailureKind, HoldNote, Image, Node, NodeRequest};
pub use removals::{Gone, Removals};
pub use rules::{BackingOff, Backoff, Flavor, current_upload, flavor_for, pick_flavor};
pub use snapshot::Snapshot;
pub use state::{ImageState, NodeState, ParseStateError, RequestState};
pub use time::{Human, Timestamp};

#[cfg(test)]
mod tests;
