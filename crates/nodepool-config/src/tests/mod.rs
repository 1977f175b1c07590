//! Tests of the config loader, by feature: keys and defaults, malformed files, cron,
//! diffs, environment checks, the shipped examples, and fuzzing.

mod cron;
mod dburi;
mod diff;
mod environment;
mod examples;
mod fuzz;
mod keys;
mod malformed;
mod secure;

use crate::{ConfigErrors, Loaded};

/// A small valid config that tests extend or break.
pub(crate) const MINIMAL: &str = "\
labels:
  - name: small
    image: ubuntu
    providers:
      - name: cloud1
providers:
  - name: cloud1
    driver: fake
    max-servers: 10
    images:
      - name: ubuntu
        base-image: Ubuntu 22.04
        min-ram: 2048
";

#[track_caller]
pub(crate) fn load(text: &str) -> Loaded {
    match crate::parse(text, "nodepool.yaml") {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

#[track_caller]
pub(crate) fn errors(text: &str) -> ConfigErrors {
    match crate::parse(text, "nodepool.yaml") {
        Ok(loaded) => panic!("expected errors, got a valid config: {:#?}", loaded.config),
        Err(errors) => errors,
    }
}

/// Every diagnostic, errors first, one per line.
pub(crate) fn render(text: &str) -> String {
    let (errors, warnings) = match crate::parse(text, "nodepool.yaml") {
        Ok(loaded) => (Vec::new(), loaded.warnings),
        Err(failure) => (failure.errors, failure.warnings),
    };
    errors
        .iter()
        .chain(&warnings)
        .map(|d| format!("{d}\n"))
        .collect()
}
