//! The config file, watched: read when due or asked (SIGHUP), applied when it changed and
//! is valid, and otherwise kept as it runs, with the newest file's errors said once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nodepool_config::{Config, ConfigErrors};
use nodepool_model::Timestamp;
use tracing::{error, info, warn};

use crate::DaemonError;

/// What a read of the config file found.
#[derive(Debug)]
pub(crate) enum Reread {
    /// The file is as it was (or as it was when it last failed), or unreadable.
    Unchanged,
    /// An edit that is valid: now in force.
    Applied,
    /// An edit that is invalid: the running config is kept, and the error said.
    Refused,
}

/// The config in force and what the file last held. Its `Debug` leaves the file's bytes
/// out: they hold its passwords.
pub(crate) struct ConfigWatch {
    path: PathBuf,
    /// secure.conf, whose `dburi` replaces the file's (`None`: the default one, if it
    /// exists).
    secure: Option<PathBuf>,
    config: Arc<Config>,
    /// The bytes of the file in force, to notice edits.
    bytes: Vec<u8>,
    /// The bytes of the newest file that failed, so that its errors are said once.
    broken: Option<Vec<u8>>,
    /// When the config in force was loaded.
    loaded: Timestamp,
    /// Why the newest edit of the file was refused, while it is.
    error: Option<String>,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("path", &self.path)
            .field("secure", &self.secure)
            .field("config", &self.config)
            .field("loaded", &self.loaded)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl ConfigWatch {
    /// Reads and loads the file at start.
    ///
    /// # Errors
    ///
    /// An unreadable or invalid file (or secure.conf).
    pub(crate) fn open(
        path: &Path,
        secure: Option<&Path>,
        now: Timestamp,
    ) -> Result<ConfigWatch, DaemonError> {
        let failed = |message: String| DaemonError::Config {
            file: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let config = load(path, &bytes, secure).map_err(|errors| failed(errors.to_string()))?;
        Ok(ConfigWatch {
            path: path.to_owned(),
            secure: secure.map(Path::to_owned),
            config: Arc::new(config),
            bytes,
            broken: None,
            loaded: now,
            error: None,
        })
    }

    /// The config in force.
    pub(crate) fn current(&self) -> &Arc<Config> {
        &self.config
    }

    /// When the config in force was loaded.
    pub(crate) fn loaded(&self) -> Timestamp {
        self.loaded
    }

    /// Why the newest edit of the file was refused, while it is.
    pub(crate) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Reads the file again. A valid edit is in force at once (what changed is logged); an
    /// invalid one keeps the running config and is said once per broken file.
    pub(crate) fn check(&mut self, now: Timestamp) -> Reread {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(config = %self.path.display(), "cannot read the config; keeping the running one: {e}");
                return Reread::Unchanged;
            }
        };
        if bytes == self.bytes || self.broken.as_ref() == Some(&bytes) {
            return Reread::Unchanged;
        }
        match load(&self.path, &bytes, self.secure.as_deref()) {
            Ok(config) => {
                let changes = self.config.diff(&config);
                info!(config = %self.path.display(), "config changed: {changes}");
                self.config = Arc::new(config);
                self.bytes = bytes;
                self.broken = None;
                self.error = None;
                self.loaded = now;
                Reread::Applied
            }
            Err(errors) => {
                error!(config = %self.path.display(), "the edited config is invalid; keeping the running one:\n{errors}");
                self.broken = Some(bytes);
                self.error = Some(errors.to_string());
                Reread::Refused
            }
        }
    }
}

/// Reads a config file's bytes, and secure.conf (`secure`, or the default one if it
/// exists), whose `dburi` replaces the file's as in nodepool 0.3 and 0.4.
fn load(path: &Path, bytes: &[u8], secure: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut loaded = nodepool_config::parse_bytes(bytes, path)?;
    match loaded.read_secure(secure) {
        Ok(Some(replaced)) => info!("{replaced}"),
        Ok(None) => {}
        Err(error) => {
            return Err(ConfigErrors {
                errors: vec![error],
                warnings: Vec::new(),
            });
        }
    }
    Ok(loaded.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_seconds(1_400_000_000);

    fn text(max_servers: u32) -> String {
        format!(
            "labels:\n  - {{name: small, image: base, min-ready: 1, providers: [{{name: cloud1}}]}}\n\
             providers:\n  - name: cloud1\n    driver: fake\n    max-servers: {max_servers}\n    \
             images:\n      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}\n"
        )
    }

    #[test]
    fn an_edit_is_applied_once_and_a_broken_one_is_refused_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodepool.yaml");
        // No secure.conf: an empty file whose database section is absent.
        let secure = dir.path().join("secure.conf");
        std::fs::write(&secure, "").unwrap();
        std::fs::write(&path, text(5)).unwrap();
        let mut watch = ConfigWatch::open(&path, Some(&secure), T0).unwrap();
        assert_eq!(watch.current().providers[0].max_servers, 5);

        let at = |s| T0.saturating_add(std::time::Duration::from_secs(s));
        // Unchanged: nothing.
        assert!(matches!(watch.check(at(10)), Reread::Unchanged));

        // A valid edit is in force at once, once.
        std::fs::write(&path, text(7)).unwrap();
        assert!(matches!(watch.check(at(20)), Reread::Applied));
        assert_eq!(watch.current().providers[0].max_servers, 7);
        assert_eq!(watch.loaded(), at(20));
        assert!(matches!(watch.check(at(30)), Reread::Unchanged));

        // A broken edit keeps the running config and says why while it lasts.
        std::fs::write(&path, "labels: [").unwrap();
        assert!(matches!(watch.check(at(40)), Reread::Refused));
        assert!(watch.error().is_some());
        assert!(matches!(watch.check(at(50)), Reread::Unchanged));
        assert_eq!(watch.current().providers[0].max_servers, 7);
        assert_eq!(watch.loaded(), at(20));

        // Fixed: applied, and the error is gone.
        std::fs::write(&path, text(9)).unwrap();
        assert!(matches!(watch.check(at(60)), Reread::Applied));
        assert_eq!(watch.error(), None);
        assert_eq!(watch.current().providers[0].max_servers, 9);
    }

    #[test]
    fn an_unreadable_or_invalid_file_fails_the_start_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.yaml");
        let error = ConfigWatch::open(&path, None, T0).unwrap_err();
        assert!(error.to_string().contains("missing.yaml"), "{error}");
    }
}
