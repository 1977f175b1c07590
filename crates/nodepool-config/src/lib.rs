//! The nodepool config file: the 2014 YAML format, read into a typed, validated [`Config`].
//!
//! Reading goes in three steps, each in its own module:
//!
//! 1. `yaml`: the text is parsed (anchors, aliases and `<<:` merge keys expanded) into a
//!    tree where every value knows its line and column;
//! 2. `raw`: the tree is read into raw structs, checking shapes and scalar types and
//!    reporting unknown keys with a did-you-mean;
//! 3. `validate`: ranges, names, defaults and cross-references, giving a [`Config`].
//!
//! Every step reports every problem it finds and carries on, so one run lists all the
//! errors of a file, each with `file:line:column` and its key path.
//!
//! ```
//! let text = r#"
//! labels:
//!   - name: small
//!     image: ubuntu
//!     providers: [{name: cloud1}]
//! providers:
//!   - name: cloud1
//!     driver: fake
//!     max-servers: 10
//!     images:
//!       - name: ubuntu
//!         base-image: Ubuntu 22.04
//!         min-ram: 2048
//! "#;
//! let loaded = nodepool_config::parse(text, "nodepool.yaml")?;
//! let label = loaded.config.label("small").unwrap();
//! assert_eq!(label.min_ready, 2); // the 2014 default
//!
//! let broken = text.replace("max-servers: 10", "max-server: 10");
//! let errors = nodepool_config::parse(&broken, "nodepool.yaml").unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "nodepool.yaml:9:5: error: providers[0].max-server: unknown key \"max-server\"; did you mean \"max-servers\"?"
//! );
//! # Ok::<(), nodepool_config::ConfigErrors>(())
//! ```
//!
//! What the file refers to outside itself (clouds.yaml, scripts, key files) is checked
//! separately by [`Loaded::check_environment`].

mod config;
mod cron;
mod dburi;
mod diagnostic;
mod diff;
mod environment;
mod formats;
mod raw;
mod read;
mod secure;
mod suggest;
mod validate;
mod yaml;

use std::path::Path;

pub use config::{
    Api, ApiToken, BaseImage, Config, CronJob, CronSchedules, Domain, Driver, ImageSource, Label,
    Network, OpenStackSettings, Project, Provider, ProviderImage, Secret, defaults,
};
pub use cron::{Schedule, ScheduleError};
pub use dburi::{DbUri, DbUriError, DbUrl};
pub use diagnostic::{ConfigErrors, Diagnostic, Location, Severity};
pub use diff::{ConfigDiff, ProviderChange};
pub use environment::{
    Concern, Environment, EnvironmentIssue, readable_by_others, readable_by_others_warning,
};
pub use secure::{DEFAULT_SECURE_PATH, Secure};
pub use validate::Origins;

use diagnostic::Sink;

/// The default config path, as in 2014.
pub const DEFAULT_PATH: &str = "/etc/nodepool/nodepool.yaml";

/// A valid config, with the warnings found while reading it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Keys with no effect and other doubtful things, in file order.
    pub warnings: Vec<Diagnostic>,
    /// Where values that point outside the file were written.
    pub origins: Origins,
    /// The file name diagnostics use.
    pub file: String,
}

/// Parses and validates a config.
///
/// `source` names the file in diagnostics; its folder is the base of relative paths
/// (`script-dir`, `private-key`, an SQLite `dburi`).
///
/// # Errors
///
/// Returns every error found, with the warnings, when the config cannot be used.
pub fn parse(text: &str, source: impl AsRef<Path>) -> Result<Loaded, ConfigErrors> {
    let source = source.as_ref();
    let file = source.display().to_string();
    let mut sink = Sink::new(file.clone());
    if text.len() > yaml::MAX_FILE_BYTES {
        sink.push(
            Severity::Error,
            Some(Location::START),
            "",
            format!(
                "the file is {:.1} MiB; a config may be at most {} MiB (is this the right file?)",
                text.len() as f64 / 1_048_576.0,
                yaml::MAX_FILE_BYTES / 1_048_576
            ),
        );
        return Err(into_errors(sink));
    }
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(error) => {
            let message = format!("not valid YAML: {}", error.message);
            sink.push(
                Severity::Error,
                error.location.or(Some(Location::START)),
                "",
                message,
            );
            return Err(into_errors(sink));
        }
    };
    if let Some(foreign) = formats::foreign(&root) {
        sink.push(
            Severity::Error,
            Some(foreign.location),
            &foreign.key,
            foreign.message,
        );
        return Err(into_errors(sink));
    }
    let mut cx = read::Cx { source: text, sink };
    let raw = raw::read_config(&mut cx, &root);
    let mut sink = cx.sink;
    let base = source.parent();
    let mut validator = validate::Validator {
        sink: &mut sink,
        base,
        origins: Origins::default(),
        diskimages: None,
    };
    let config = validator.config(raw);
    let origins = validator.origins;
    match config {
        Some(config) if !sink.has_errors() => {
            let (_, warnings) = sink.finish();
            Ok(Loaded {
                config,
                warnings,
                origins,
                file,
            })
        }
        _ => Err(into_errors(sink)),
    }
}

fn into_errors(sink: Sink) -> ConfigErrors {
    let (errors, warnings) = sink.finish();
    ConfigErrors { errors, warnings }
}

/// Parses and validates a config given as bytes, which must be UTF-8.
///
/// # Errors
///
/// As [`parse`]; bytes that are not UTF-8 are one error at the first bad byte.
pub fn parse_bytes(bytes: &[u8], source: impl AsRef<Path>) -> Result<Loaded, ConfigErrors> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text.strip_prefix('\u{feff}').unwrap_or(text), source),
        Err(error) => {
            let good = &bytes[..error.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&good[line_start..]).chars().count() as u64 + 1;
            let mut sink = Sink::new(source.as_ref().display().to_string());
            sink.push(
                Severity::Error,
                Some(Location { line, column }),
                "",
                format!(
                    "the file is not valid UTF-8 (byte {} is 0x{:02x})",
                    error.valid_up_to(),
                    bytes[error.valid_up_to()]
                ),
            );
            Err(into_errors(sink))
        }
    }
}

/// Reads, parses and validates the config file at `path`.
///
/// # Errors
///
/// As [`parse`]; a file that cannot be read is one error saying why.
pub fn load(path: impl AsRef<Path>) -> Result<Loaded, ConfigErrors> {
    let path = path.as_ref();
    match std::fs::read(path) {
        Ok(bytes) => parse_bytes(&bytes, path),
        Err(error) => {
            let mut sink = Sink::new(path.display().to_string());
            sink.push(
                Severity::Error,
                None,
                "",
                format!("cannot read the config file: {error}"),
            );
            Err(into_errors(sink))
        }
    }
}

#[cfg(test)]
mod tests;
