//! The nodepool daemon as a library: the event loop, the executors that launch, build and
//! delete, live config reload, and the one clock.
//!
//! `nodepoold` is a thin binary over [`Daemon`]. Each round the daemon reads the clock once,
//! re-reads its config file when due (an invalid edit keeps the running config and is
//! reported once), lists every provider's servers once, snapshots the store, asks the image
//! and node policies what to do, and hands their actions to executors that run concurrently,
//! each cloud call through the provider's rate limiter.
//!
//! Time comes from a [`Clock`](nodepool_provider::Clock): [`SystemClock`] in production, a
//! `ManualClock` in tests, where the fake cloud moves on the same clock.
//!
//! ```no_run
//! use std::sync::Arc;
//! use nodepool_daemon::{Connect, Daemon, FakeRemote, Options, SystemClock};
//!
//! # async fn demo() -> Result<(), nodepool_daemon::DaemonError> {
//! let clock = Arc::new(SystemClock);
//! let remote = Arc::new(FakeRemote::new());
//! let connect = Connect::new(clock.clone(), remote.clone(), remote);
//! let daemon = Daemon::start(
//!     Options::new("config-examples/local.yaml"),
//!     clock,
//!     Arc::new(connect),
//! )
//! .await?;
//! let stop = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! daemon.run(stop, Default::default()).await
//! # }
//! ```

pub mod at_once;
mod clock;
mod clouds;
mod daemon;
mod executor;
mod jobs;
mod remote;
mod ssh;
mod store;

use std::path::PathBuf;

pub use clock::{SystemClock, TokioClock};
pub use clouds::{Connect, Connector};
pub use daemon::{Daemon, Options};
pub use remote::{FakeRemote, Output, Recorded, Remote, RemoteError, Target};
pub use ssh::SshRemote;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file is unreadable or invalid.
    #[error("{}: {message}", file.display())]
    Config {
        /// The file.
        file: PathBuf,
        /// Every problem, one per line.
        message: String,
    },
    /// The store cannot be opened or migrated.
    #[error("store: {0}")]
    Store(String),
}

#[cfg(test)]
mod tests;
