//! The nodepool daemon as a library: the event loop, live config reload and the periodic
//! jobs; the executors that launch, build and delete live in `nodepool-executor`.
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

mod api;
mod apply;
mod config_watch;
mod daemon;
mod jobs;
mod main_loop;
mod metrics;
mod peers;
mod report;
mod round;
mod said;
mod status;
mod timers;
mod work;

use std::path::PathBuf;

pub use daemon::{Daemon, Options};
// What a daemon is started with, so that embedders need only this crate.
pub use nodepool_executor::{
    Connect, Connector, FakeRemote, Output, Recorded, Remote, RemoteError, SshRemote, SystemClock,
    Target, TokioClock,
};

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
    /// The HTTP API cannot be served (its address is taken, its token file unreadable).
    #[error("{0}")]
    Api(String),
}

#[cfg(test)]
mod tests;
