//! nodepool's executors: what carries out a node launch, a snapshot image build and a
//! deletion in the clouds, step by step, recording each step in the store.
//!
//! The daemon (`nodepool-daemon`) decides what to do and hands each action to an executor;
//! the admin command (`nodepool delete --now`, `nodepool image-delete`) runs the same
//! executors at once through [`at_once`]. Around them sit what they act through:
//!
//! - [`clouds`]: each provider's connection behind its rate limiter, the [`Remote`] that
//!   reaches its servers, and what was last seen there (listings, limits, flavors);
//!   a [`Connector`] makes them ([`Connect`] in production).
//! - [`listing`]: when each provider's servers are listed, and the feed of listings
//!   executors watch while they wait on a server.
//! - [`Remote`]: running commands on servers, over SSH ([`SshRemote`]) or simulated for the
//!   fake cloud ([`FakeRemote`]).
//! - [`SystemClock`]: the one reader of the wall clock; [`TokioClock`] runs on tokio's
//!   (pausable) time for tests.
//! - [`store::call`]: the blocking store from async code.

pub mod at_once;
mod clock;
pub mod clouds;
pub mod executor;
pub mod listing;
mod remote;
mod ssh;
pub mod store;

pub use clock::{SystemClock, TokioClock};
pub use clouds::{Connect, Connector};
pub use remote::{FakeRemote, Output, Recorded, Remote, RemoteError, Target};
pub use ssh::SshRemote;
