//! `cargo xtask`: the project's automation, in Rust so that it runs wherever cargo does.
//!
//! - `cargo xtask ci`: everything CI checks, in order: formatting, the local OpenStack
//!   (installed and started if need be), clippy with warnings as errors, every test, and the
//!   docs with warnings as errors. The tests also need PostgreSQL (`NODEPOOL_TEST_POSTGRES`,
//!   by default `postgres://postgres@127.0.0.1:5432/postgres`); under CI a missing server or
//!   cloud fails them.
//! - `cargo xtask bench [SUITE]`: the benchmarks, medians printed as Markdown tables for
//!   `docs/benchmarks.md`.
//! - `cargo xtask docs`: regenerates `docs/nodepool.1` (the man page) from the `nodepool`
//!   command line's definition; a test fails while it is stale.
//! - `cargo xtask cloud install|up|down|reset|smoke|env`: a real OpenStack on 127.0.0.1 for
//!   the driver tests (`xtask/cloud/README.md`).
//! - `cargo xtask api`: the HTTP API against `docs/api/openapi.yaml`, with schemathesis
//!   (`xtask/api-check.sh`).
//!
//! The tidy checks (module docs, architecture rules) are ordinary tests of this crate,
//! so `cargo test` runs them too.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;

use anyhow::{Context, bail};

mod tidy;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(args.get(1).map(String::as_str)),
        Some("docs") => docs(),
        Some("cloud") => cloud(&args[1..]),
        Some("api") => api(),
        Some("help") | Some("--help") | Some("-h") | None => {
            println!(
                "usage: cargo xtask <task>\n\ntasks:\n  ci             formatting, clippy -D warnings, all tests, docs -D warnings\n  bench [SUITE]  benchmarks (store, policy, cli, cloud, fill, api; all by default), as Markdown tables\n  docs           regenerate docs/nodepool.1, the man page, from the command line's definition\n  cloud CMD      local OpenStack: install, up, down, reset, smoke [N], env\n  api            the HTTP API against docs/api/openapi.yaml (schemathesis)"
            );
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}; run `cargo xtask help`"),
    }
}

/// Runs one step, echoing it, and fails if it fails.
fn step(name: &str, program: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("\n==> {name}: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// Writes the man page that `nodepool` renders of itself to docs/nodepool.1.
fn docs() -> anyhow::Result<()> {
    let root = tidy::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&root)
        .args(["run", "-q", "--locked", "-p", "nodepool", "--", "man"])
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "nodepool man failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = root.join("docs/nodepool.1");
    std::fs::write(&path, &output.stdout)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The benchmark suites: (name, package, bench target).
const BENCHES: &[(&str, &str, &str)] = &[
    // With the MySQL store: MariaDB is measured when a server answers at 127.0.0.1:3306.
    ("store", "nodepool-db", "store"),
    ("policy", "nodepool-node", "policy"),
    ("cli", "nodepool", "cli"),
    // Needs the local cloud: `cargo xtask cloud up`.
    ("cloud", "nodepool-openstack", "servers"),
    // Needs the local cloud and sshd (openssh-server).
    ("fill", "nodepoold", "fill"),
    // PostgreSQL is measured when a server answers at 127.0.0.1:5432.
    ("api", "nodepoold", "api"),
];

fn bench(only: Option<&str>) -> anyhow::Result<()> {
    let root = tidy::workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let selected: Vec<_> = BENCHES
        .iter()
        .filter(|(name, ..)| only.is_none_or(|o| o == *name))
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = BENCHES.iter().map(|(name, ..)| *name).collect();
        bail!(
            "no benchmark suite {:?}; the suites are: {}",
            only.unwrap_or_default(),
            names.join(", ")
        );
    }
    for (name, package, target) in selected {
        let mut args = vec!["bench", "--locked", "-p", package, "--bench", target];
        if *name == "store" {
            args.extend(["--features", "mysql"]);
        }
        step(&format!("bench {name}"), &cargo, &args, &[])?;
    }
    Ok(())
}

/// The local OpenStack: the scripts in `xtask/cloud/` do the work.
fn cloud(args: &[String]) -> anyhow::Result<()> {
    let dir = tidy::workspace_root().join("xtask/cloud");
    let script = |name: &str| dir.join(name).display().to_string();
    match args.first().map(String::as_str) {
        Some(command @ ("install" | "up" | "down" | "reset")) => step(
            &format!("cloud {command}"),
            "bash",
            &[&script("cloud.sh"), command],
            &[],
        ),
        Some("smoke") => {
            let count = args.get(1).map_or("10", String::as_str);
            step(
                "cloud smoke",
                "python3",
                &[&script("smoke.py"), count, "auto"],
                &[],
            )
        }
        Some("env") => {
            print!(
                "{}",
                std::fs::read_to_string(script("openrc.sh")).context("cannot read openrc.sh")?
            );
            Ok(())
        }
        _ => bail!("usage: cargo xtask cloud install|up|down|reset|smoke [N]|env"),
    }
}

/// The HTTP API against its OpenAPI document.
fn api() -> anyhow::Result<()> {
    let script = tidy::workspace_root().join("xtask/api-check.sh");
    step("api", "bash", &[&script.display().to_string()], &[])
}

fn ci() -> anyhow::Result<()> {
    let root = tidy::workspace_root();
    std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // System packages and services the tests need, installed and started when missing.
    step(
        "setup",
        "bash",
        &[&root.join("xtask/setup.sh").display().to_string()],
        &[],
    )?;
    step("format", &cargo, &["fmt", "--all", "--", "--check"], &[])?;
    // The OpenStack driver's tests run against a real local cloud.
    cloud(&["install".to_owned()])?;
    cloud(&["up".to_owned()])?;
    // Linted as built by default (no system MySQL library) and with every feature; tested
    // and documented with every feature, so that the MySQL store's tests run too.
    for features in [None, Some("--all-features")] {
        let mut args = vec!["clippy", "--workspace", "--all-targets", "--locked"];
        args.extend(features);
        args.extend(["--", "-D", "warnings"]);
        step("clippy", &cargo, &args, &[])?;
    }
    step(
        "tests",
        &cargo,
        &["test", "--workspace", "--all-features", "--locked"],
        &[("CI", "true")],
    )?;
    step(
        "api",
        "bash",
        &[&tidy::workspace_root()
            .join("xtask/api-check.sh")
            .display()
            .to_string()],
        &[("NODEPOOLD_FEATURES", "mysql")],
    )?;
    step(
        "docs",
        &cargo,
        &[
            "doc",
            "--workspace",
            "--all-features",
            "--no-deps",
            "--locked",
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    eprintln!("\n==> ci: all checks passed");
    Ok(())
}
