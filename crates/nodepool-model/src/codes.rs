//! The codes of reasons: one short, stable, lower-case word for every kind of "why".
//!
//! A code is a persisted interface: the store keeps it beside each event, `nodepool show`
//! and the API print it, and metrics use it as a label value. The strings never change;
//! a test pins the whole list. Code compares codes as [`ReasonCode`] values, never as
//! strings, and only this module spells them.
//!
//! A store that a newer nodepool wrote may hold codes this version does not know; they
//! are read back as [`ReasonCode::Unknown`] and printed as they were stored.

use std::fmt;

macro_rules! reason_codes {
    (
        $(
            $(#[$vdoc:meta])* $variant:ident => $text:literal,
        )+
    ) => {
        /// Why something happened or did not, as a stable code (see the module docs).
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $( $(#[$vdoc])* $variant, )+
            /// A code this version does not know, read back from a store a newer nodepool
            /// wrote. Made only by [`ReasonCode::parse`].
            Unknown(UnknownCode),
        }

        impl ReasonCode {
            /// Every code this version gives, in the order of this list.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant),+];

            /// The code as stored and printed.
            pub fn as_str(&self) -> &str {
                match self {
                    $( ReasonCode::$variant => $text, )+
                    ReasonCode::Unknown(code) => &code.0,
                }
            }

            /// The code of a stored string: a known one, or [`ReasonCode::Unknown`] holding
            /// the string as it is.
            pub fn parse(code: &str) -> ReasonCode {
                match code {
                    $( $text => ReasonCode::$variant, )+
                    other => ReasonCode::Unknown(UnknownCode(other.into())),
                }
            }
        }
    };
}

reason_codes! {
    // The node policy.
    /// A label needs more nodes than it has (requests and `min-ready`).
    Demand => "demand",
    /// Ready nodes handed to a request.
    Claim => "claim",
    /// A request that can never be served.
    Unservable => "unservable",
    /// A request that waited longer than `api.request-timeout`.
    RequestTimeout => "request-timeout",
    /// A consumer has finished with the node.
    Used => "used",
    /// Already marked for deletion (by an operator, a failure or an earlier round).
    Marked => "marked",
    /// Its server is gone from the cloud.
    Vanished => "vanished",
    /// Its server carries another installation's tags (the store was copied from it): the
    /// row is forgotten and the server left alone.
    OtherInstallation => "other-installation",
    /// Its provider is gone from the config.
    ProviderRemoved => "provider-removed",
    /// Its label is gone from the config, or no longer lists its provider.
    LabelRemoved => "label-removed",
    /// Its label has `min-ready: -1`.
    LabelDisabled => "label-disabled",
    /// Its provider, label or image is gone from the config, and it is kept for
    /// `removal-grace` in case the config brings it back.
    RemovalPending => "removal-pending",
    /// Building, and no launch is working on it.
    Orphaned => "orphaned",
    /// Building past `launch-timeout` + `boot-timeout`.
    LaunchTimeout => "launch-timeout",
    /// In TEST past 5 minutes.
    TestTimeout => "test-timeout",
    /// In a state other than READY or HOLD past 8 hours.
    NodeCleanup => "node-cleanup",
    /// A server or resource tagged by this installation that the store does not know.
    Leaked => "leaked",
    /// A template server left over after its build, still busy with the cloud's snapshot
    /// task.
    TemplateBusy => "template-busy",
    /// A leak seen once, to be deleted if the next listing shows it again.
    SuspectedLeak => "suspected-leak",
    /// A held node whose provider or label is gone: kept, as holds are.
    Held => "held",
    /// In use by a request although its provider or label is gone: deleted once released.
    InUse => "in-use",
    /// No READY image for the label on the provider.
    NoImage => "no-image",
    /// Recent launches or builds on the provider failed; the next one waits.
    Backoff => "backoff",
    /// Demand the providers cannot meet now (max-servers or the cloud's limits).
    AtCapacity => "at-capacity",
    /// No flavor of the provider fits the image (or its flavors are not listed yet).
    NoFlavor => "no-flavor",
    /// The provider is not connected: nothing can be created or deleted there now.
    NotConnected => "not-connected",

    // The image policy.
    /// No READY or BUILDING upload of an image a label uses.
    Missing => "missing",
    /// The `image-update` schedule fired.
    Scheduled => "scheduled",
    /// Someone asked: an operator for a build (`nodepool image-update`), a consumer for
    /// nodes (a node request).
    Requested => "requested",
    /// Neither the newest nor the second-newest READY upload, and 8 hours in its state.
    Retention => "retention",
    /// Its image is gone from the provider's config.
    ImageRemoved => "image-removed",
    /// The build ran past its timeout.
    BuildTimeout => "build-timeout",
    /// The daemon building it stopped before the build finished.
    Interrupted => "interrupted",
    /// Another build of the same image on the same provider is running.
    BuildRunning => "build-running",
    /// Every build a request asked for is READY.
    BuildDone => "build-done",
    /// A build failed, or a build request names nothing buildable.
    BuildFailed => "build-failed",

    // The executors and the periodic jobs.
    /// A launch failed; the node is deleted.
    LaunchFailed => "launch-failed",
    /// A node is READY.
    Launched => "launched",
    /// An image upload is READY.
    Built => "built",
    /// The output of an image's setup script.
    SetupOutput => "setup-output",
    /// Gone from the cloud and from the store.
    Deleted => "deleted",
    /// A READY node presented another host key than the one recorded at launch.
    HostKeyChanged => "host-key-changed",
    /// A READY node did not answer the check's SSH login.
    CheckFailed => "check-failed",

    // The store.
    /// The cloud accepted a server's create call.
    ServerCreated => "server-created",
    /// The cloud accepted a snapshot.
    SnapshotCreated => "snapshot-created",
    /// A server's addresses are known.
    Addresses => "addresses",
    /// A server's SSH host keys are recorded.
    HostKeys => "host-keys",
    /// A consumer gave a node back.
    Released => "released",
    /// An operator held a node.
    OperatorHold => "operator-hold",
    /// A node was assigned to a request.
    Claimed => "claimed",
    /// A request was served from a ready node.
    ReadyNode => "ready-node",
    /// A request has every node it asked for.
    Fulfilled => "fulfilled",
    /// A request ended (failed or canceled) before it was fulfilled.
    RequestEnded => "request-ended",
    /// An operator recorded a build request.
    Operator => "operator",
    /// An operator deleted a node or an image upload.
    OperatorDelete => "operator-delete",
    /// A request was canceled through the API.
    Canceled => "canceled",
}

impl ReasonCode {
    /// Whether this version gives the code (it is not [`ReasonCode::Unknown`]).
    pub fn is_known(&self) -> bool {
        !matches!(self, ReasonCode::Unknown(_))
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored code this version does not know, kept as it was stored.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UnknownCode(Box<str>);
