//! End-to-end tests: the real `nodepool` binary, run as an admin would run it.

mod admin;
mod cloud;
mod config_corpus;
mod config_validate;
mod image_update;
#[path = "../../crates/nodepool-daemon/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root folder.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `nodepool` with `args` and returns what it printed and its exit code.
fn nodepool(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_nodepool"))
        .args(args)
        .current_dir(root())
        .env_remove("OS_CLIENT_CONFIG_FILE")
        .output()
        .expect("the nodepool binary runs");
    let code = status
        .code()
        .expect("nodepool exits, not killed by a signal");
    (
        code,
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// Runs `nodepool -c CONFIG args` as user alice (who the events name) and returns its exit
/// code, stdout and stderr.
fn nodepool_with(config: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_nodepool"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env("USER", "alice")
        .output()
        .expect("the nodepool binary runs");
    (
        output
            .status
            .code()
            .expect("nodepool exits, not killed by a signal"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}
