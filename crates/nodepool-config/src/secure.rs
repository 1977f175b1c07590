//! `secure.conf`: the INI file where nodepool 0.3 and 0.4 kept what should not sit in
//! nodepool.yaml. Of it only `[database] dburi` matters here (the `[jenkins "NAME"]`
//! sections held Jenkins credentials, which have no use any more). As in those versions,
//! its `dburi` replaces the one in nodepool.yaml.
//!
//! Read by hand rather than with an INI library: one key is wanted, and a mistake in it
//! must be reported at its line.

use std::path::{Path, PathBuf};

use crate::Loaded;
use crate::dburi::DbUri;
use crate::diagnostic::{Diagnostic, Location, Severity};

/// Where nodepool 0.3 and 0.4 read it from unless told otherwise (`-s`).
pub const DEFAULT_SECURE_PATH: &str = "/etc/nodepool/secure.conf";

/// What a secure.conf holds for nodepool.
/// Its `Debug` shows `dburi` redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secure {
    /// The file, as named.
    pub file: PathBuf,
    /// `[database] dburi` as written, and where.
    pub dburi: Option<(String, Location)>,
}

impl Secure {
    /// Reads `path`. With `explicit` false (no `-s` given), a missing file is no secure.conf
    /// at all (`Ok(None)`).
    ///
    /// # Errors
    ///
    /// A diagnostic naming the file (and line) when it cannot be read or is not INI.
    pub fn read(path: &Path, explicit: bool) -> Result<Option<Secure>, Diagnostic> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error(&file, None, "", format!("cannot read it: {e}"))),
        };
        Secure::parse(&text, path).map(Some)
    }

    /// Reads secure.conf's text; `path` names it in diagnostics.
    ///
    /// # Errors
    ///
    /// A diagnostic naming the line that is neither a section, a `key = value` (or
    /// `key: value`), a comment nor blank.
    pub fn parse(text: &str, path: &Path) -> Result<Secure, Diagnostic> {
        let file = path.display().to_string();
        let mut section = String::new();
        let mut dburi = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1);
            let at = Location {
                line: count(n),
                column: count(raw.chars().count() - raw.trim_start().chars().count()),
            };
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(error(
                    &file,
                    Some(at),
                    &section,
                    "expected `[section]`, `key = value` or a comment".into(),
                ));
            };
            // configparser reads keys case-insensitively. nodepool read nothing else from
            // [database]: another key there is a mistake that would leave the store unset.
            if section == "database" {
                if !key.trim().eq_ignore_ascii_case("dburi") {
                    return Err(error(
                        &file,
                        Some(at),
                        "database",
                        format!(
                            "unknown key {}; expected `dburi = URL`",
                            crate::suggest::quote(key.trim())
                        ),
                    ));
                }
                dburi = Some((value.trim().to_owned(), at));
            }
        }
        Ok(Secure {
            file: path.to_owned(),
            dburi,
        })
    }
}

fn error(file: &str, location: Option<Location>, key: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_owned(),
        location,
        key: key.to_owned(),
        message,
    }
}

impl Loaded {
    /// Reads secure.conf (`path`, given with `-s`; otherwise [`DEFAULT_SECURE_PATH`] if
    /// it exists) and applies it with [`Loaded::apply_secure`].
    ///
    /// # Errors
    ///
    /// As [`Secure::read`] and [`Loaded::apply_secure`].
    pub fn read_secure(&mut self, path: Option<&Path>) -> Result<Option<Diagnostic>, Diagnostic> {
        let secure = match path {
            Some(path) => Secure::read(path, true)?,
            None => Secure::read(Path::new(DEFAULT_SECURE_PATH), false)?,
        };
        match secure {
            Some(secure) => self.apply_secure(&secure),
            None => Ok(None),
        }
    }

    /// Puts secure.conf's `dburi`, if it has one, in place of the file's, as nodepool 0.3
    /// and 0.4 did. Returns a warning when it replaces a different `dburi` written in the
    /// file, so that nobody wonders which store is used.
    ///
    /// # Errors
    ///
    /// A diagnostic at secure.conf's line when its `dburi` is not a database URL.
    pub fn apply_secure(&mut self, secure: &Secure) -> Result<Option<Diagnostic>, Diagnostic> {
        let Some((text, at)) = &secure.dburi else {
            return Ok(None);
        };
        let file = secure.file.display().to_string();
        let uri = DbUri::parse(text, secure.file.parent())
            .map_err(|e| error(&file, Some(*at), "database.dburi", e.to_string()))?;
        let replaced = self.config.dburi.clone();
        self.config.dburi = uri;
        let written = self
            .origins
            .get("dburi")
            .filter(|_| replaced != self.config.dburi);
        Ok(written.map(|location| Diagnostic {
            severity: Severity::Warning,
            file: self.file.clone(),
            location: Some(location),
            key: "dburi".into(),
            message: format!(
                "is replaced by `[database] dburi` of {file} (line {}), as nodepool 0.3 and 0.4 did",
                at.line
            ),
        }))
    }
}

impl std::fmt::Debug for Secure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dburi = self
            .dburi
            .as_ref()
            .map(|(text, at)| (crate::dburi::redact(text), at));
        f.debug_struct("Secure")
            .field("file", &self.file)
            .field("dburi", &dburi)
            .finish()
    }
}
