//! The state machines of nodes, images and requests.
//!
//! Node states, with the names `nodepool list` has printed since 2014
//! (`in-use` is new: a node handed to a consumer through the request API):
//!
//! ```text
//!             +--------> test ---------+
//!             |                        v
//!   building -+---------------------> ready ----> in-use ----> used ----> delete
//!       |                              |  ^          |                      ^
//!       |                              |  +----------+ (request cancelled)  |
//!       +------------------------------+-----------------------------------+
//!   any state but delete ----> hold ----> delete          (operator hold)
//! ```
//!
//! Every move stamps the record's `state_time`; ages and timeouts count from it.
//! `delete` is terminal: the row disappears once the cloud confirms the server is gone.
//!
//! Images (one upload of one version on one provider) go `building → ready → delete`,
//! and a failed build goes `building → delete`.

/// A state name that is not one of the known states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} state {name:?}; expected one of: {expected}")]
pub struct ParseStateError {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) expected: String,
}

macro_rules! state_enum_impl {
    (
        $(#[$doc:meta])*
        $ty:ident, $kind:literal {
            $( $(#[$vdoc:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        #[non_exhaustive]
        pub enum $ty {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $ty {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The state's name, as the CLI prints it and the store records it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $ty::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::ParseStateError;
            fn from_str(s: &str) -> Result<Self, $crate::ParseStateError> {
                match s {
                    $( $text => Ok($ty::$variant), )+
                    _ => Err($crate::ParseStateError {
                        kind: $kind,
                        name: s.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

pub(crate) use state_enum_impl as state_enum;

state_enum! {
    /// Where a node is in its life.
    NodeState, "node" {
        /// The provider is building the server; it is not usable yet.
        Building => "building",
        /// Booted, reachable over SSH and waiting for a consumer.
        Ready => "ready",
        /// Handed to a consumer through a node request.
        InUse => "in-use",
        /// A consumer has finished with it; it will be deleted.
        Used => "used",
        /// To be deleted as soon as possible.
        Delete => "delete",
        /// Kept indefinitely by an operator.
        Hold => "hold",
        /// Running an acceptance test before it becomes ready (2014 `test-job`).
        Test => "test",
    }
}

impl NodeState {
    /// Whether a node may move from `self` to `next`.
    ///
    /// Staying in the same state is not a move. A ready or in-use node may be held, and
    /// any state may be marked for deletion.
    pub const fn can_become(self, next: NodeState) -> bool {
        use NodeState::*;
        match (self, next) {
            (Delete, _) => false,
            (_, Delete) => true,
            (Hold, _) => false,
            // Held for someone to look at: a node being launched or checked is the
            // launch's, and holding it would fail the launch.
            (Ready | InUse, Hold) => true,
            (_, Hold) => false,
            (Building, Ready | Test) => true,
            (Test, Ready) => true,
            (Ready, InUse | Used) => true,
            // A cancelled request gives its node back.
            (InUse, Used | Ready) => true,
            _ => false,
        }
    }

    /// Whether nodes in this state count as supply toward a label's `min-ready`
    /// (2014: ready, building and test).
    pub const fn is_supply(self) -> bool {
        matches!(
            self,
            NodeState::Building | NodeState::Ready | NodeState::Test
        )
    }
}

state_enum! {
    /// Where one image upload is in its life.
    ImageState, "image" {
        /// The template server is being built, set up or snapshotted.
        Building => "building",
        /// The snapshot is active; the newest ready upload is the one launches use.
        Ready => "ready",
        /// To be deleted from the cloud, then from the store.
        Delete => "delete",
    }
}

impl ImageState {
    /// Whether an upload may move from `self` to `next`.
    pub const fn can_become(self, next: ImageState) -> bool {
        matches!(
            (self, next),
            (ImageState::Building, ImageState::Ready | ImageState::Delete)
                | (ImageState::Ready, ImageState::Delete)
        )
    }
}

state_enum! {
    /// Where a consumer's node request is.
    RequestState, "request" {
        /// Waiting for nodes.
        Requested => "requested",
        /// Every label has a node assigned.
        Fulfilled => "fulfilled",
        /// It cannot or will not be served; the record says why.
        Failed => "failed",
        /// Its requestor withdrew it; nodes it never handed over went back to ready.
        Canceled => "canceled",
    }
}

impl RequestState {
    /// Whether a request may move from `self` to `next`.
    pub const fn can_become(self, next: RequestState) -> bool {
        matches!(
            (self, next),
            (
                RequestState::Requested,
                RequestState::Fulfilled | RequestState::Failed | RequestState::Canceled
            ) | (RequestState::Fulfilled, RequestState::Canceled)
        )
    }
}
