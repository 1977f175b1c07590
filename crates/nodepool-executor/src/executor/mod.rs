//! The executors: what carries out a launch, an image build and a deletion, step by step,
//! each cloud call through the provider's rate limiter.
//!
//! Rows are written before the cloud is asked for anything (the loop creates them), and each
//! step's outcome is recorded as it happens, so a daemon killed at any moment leaves rows the
//! next one can finish: nodes and uploads in `delete` are deleted again, building ones are
//! found by their tags.
//!
//! A failure never deletes inline: the executor records the failure (for the policies'
//! backoff), marks the row for deletion with the reason, and the next round's plan deletes it
//! with everything it had in the cloud.

mod build;
mod context;
mod delete;
mod launch;
mod output;

pub use build::build;
pub use context::{Context, Failed};
pub use delete::{delete_leak, delete_node, delete_upload};
pub use launch::launch;
