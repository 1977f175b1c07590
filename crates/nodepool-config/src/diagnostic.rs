//! Diagnostics: what is wrong (or doubtful) in a config file, and where.
//!
//! Every problem carries the file, the line and column, the key path
//! (`providers[1].images[0].min-ram`) and a message. They print one per line, like a compiler:
//!
//! ```text
//! nodepool.yaml:12:7: error: providers[1].images[0].min-ram: expected an integer, found "lots"
//! ```

use std::fmt;

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The file can still be used; something in it has no effect or looks doubtful.
    Warning,
    /// The file cannot be used.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A line and column in a file, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location {
    /// Line, from 1.
    pub line: u64,
    /// Column in characters, from 1.
    pub column: u64,
}

impl Location {
    /// The start of a file.
    pub const START: Location = Location { line: 1, column: 1 };
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem found in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file the problem is in, as the user named it.
    pub file: String,
    /// Where in the file; `None` for a problem with the file as a whole (it cannot be read).
    pub location: Option<Location>,
    /// The key path, such as `providers[1].images[0].min-ram`; empty for the whole document.
    pub key: String,
    /// What is wrong, in lower case without a final period.
    pub message: String,
}

impl Diagnostic {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(location) = self.location {
            write!(f, ":{location}")?;
        }
        write!(f, ": {}: ", self.severity)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// A config that cannot be used, with every error found in it and the warnings besides.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// Every error, in file order. Never empty.
    pub errors: Vec<Diagnostic>,
    /// Warnings found on the way, in file order.
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    /// One diagnostic per line, errors only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics while a file is read.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) file: String,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn new(file: String) -> Self {
        Sink {
            file,
            diagnostics: Vec::new(),
        }
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        location: Option<Location>,
        key: &str,
        message: impl Into<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.clone(),
            location,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn error(&mut self, location: Location, key: &str, message: impl Into<String>) {
        self.push(Severity::Error, Some(location), key, message);
    }

    pub(crate) fn warning(&mut self, location: Location, key: &str, message: impl Into<String>) {
        self.push(Severity::Warning, Some(location), key, message);
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Splits into errors and warnings, each sorted by position in the file.
    pub(crate) fn finish(self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        let mut diagnostics = self.diagnostics;
        diagnostics.sort_by_key(|d| d.location);
        diagnostics.into_iter().partition(Diagnostic::is_error)
    }
}
