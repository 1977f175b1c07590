//! What the loop tells the HTTP API after each round: the config in force, whether the newest
//! file failed to load, each provider's last call, and a round counter that long polls wait
//! on. The API never touches the loop's state; it reads this and the store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use nodepool_config::Config;
use nodepool_model::{InstallationId, ProviderName, Timestamp};

/// The loop's report, replaced after every round.
#[derive(Clone, Debug)]
pub(crate) struct Status {
    pub(crate) started: Timestamp,
    pub(crate) installation: InstallationId,
    pub(crate) config_file: PathBuf,
    /// The config in force.
    pub(crate) config: Arc<Config>,
    /// When the config in force was loaded.
    pub(crate) config_loaded: Timestamp,
    /// Why the newest edit of the file was refused, while it is.
    pub(crate) config_error: Option<String>,
    /// Rounds run so far; each one may have served requests.
    pub(crate) rounds: u64,
    /// When the last round started.
    pub(crate) last_round: Option<Timestamp>,
    /// The longest a healthy loop goes between two rounds.
    pub(crate) tick: std::time::Duration,
    /// Each provider of the config in force.
    pub(crate) providers: BTreeMap<ProviderName, ProviderStatus>,
    /// The store, as the last round's read of it found it.
    pub(crate) store: StoreStatus,
}

/// The store, as the loop last read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StoreStatus {
    /// When a read last succeeded.
    pub(crate) last_ok: Option<Timestamp>,
    /// The failed reads, while no read has succeeded since: when the first was, and why
    /// the last failed.
    pub(crate) error: Option<(Timestamp, String)>,
}

/// One provider, as the loop last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProviderStatus {
    /// Its connection is made.
    pub(crate) connected: bool,
    /// When a call to it last succeeded.
    pub(crate) last_ok: Option<Timestamp>,
    /// The last failure: when, and what (a failed connection or call).
    pub(crate) last_error: Option<(Timestamp, String)>,
}

impl Status {
    /// Ready to serve: live, a first round is done (recovery and the first look at the
    /// clouds), and the last read of the store succeeded.
    pub(crate) fn ready(&self, now: Timestamp) -> bool {
        self.live(now) && self.rounds > 0 && self.store.error.is_none()
    }

    /// Whether the loop is running: a round (or the start) within three ticks, or two
    /// minutes, whichever is longer (a round that connects to a slow cloud may take that).
    pub(crate) fn live(&self, now: Timestamp) -> bool {
        let within = self
            .tick
            .saturating_mul(3)
            .max(std::time::Duration::from_secs(120));
        now.saturating_since(self.last_round.unwrap_or(self.started)) <= within
    }
}
