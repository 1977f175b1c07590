//! `nodepool config-validate`.

use std::io::Write;

use nodepool_config::{DbUri, Diagnostic, Environment, Loaded, Severity};
use serde::Serialize;

use crate::{Cli, EXIT_OK, EXIT_USAGE};

/// One diagnostic in `--json` output. The field names are a stable interface.
#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    severity: String,
    file: &'a str,
    line: Option<u64>,
    column: Option<u64>,
    key: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    valid: bool,
    errors: Vec<JsonDiagnostic<'a>>,
    warnings: Vec<JsonDiagnostic<'a>>,
}

fn json(d: &Diagnostic) -> JsonDiagnostic<'_> {
    JsonDiagnostic {
        severity: d.severity.to_string(),
        file: &d.file,
        line: d.location.map(|l| l.line),
        column: d.location.map(|l| l.column),
        key: &d.key,
        message: &d.message,
    }
}

/// The same problem outside the file (one missing key file that 300 images name) said
/// once, at its first place, with how many other places share it.
fn once_each(diagnostics: impl IntoIterator<Item = Diagnostic>) -> Vec<Diagnostic> {
    let mut kept: Vec<(Diagnostic, usize)> = Vec::new();
    for diagnostic in diagnostics {
        match kept
            .iter_mut()
            .find(|(d, _)| d.message == diagnostic.message)
        {
            Some((_, more)) => *more += 1,
            None => kept.push((diagnostic, 0)),
        }
    }
    kept.into_iter()
        .map(|(mut diagnostic, more)| {
            if more > 0 {
                let places = if more == 1 { "place" } else { "places" };
                diagnostic.message = format!("{} (and {more} other {places})", diagnostic.message);
            }
            diagnostic
        })
        .collect()
}

/// A store this build cannot open: a warning here (the file may be meant for another
/// build), an error when nodepoold starts.
fn unsupported_store(loaded: &Loaded) -> Option<Diagnostic> {
    let uri = &loaded.config.dburi;
    if !matches!(uri, DbUri::Mysql(_)) || nodepool_db::MYSQL_SUPPORTED {
        return None;
    }
    let error = nodepool_db::mysql_not_built(uri);
    let message = match &error {
        nodepool_db::StoreError::Unavailable { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Some(Diagnostic {
        severity: Severity::Warning,
        file: loaded.file.clone(),
        location: loaded.origins.get("dburi"),
        key: "dburi".into(),
        message: format!("{message}; nodepoold built this way will not start with it"),
    })
}

pub(crate) fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<u8> {
    let (valid, errors, mut warnings) = match nodepool_config::load(&cli.config) {
        Ok(mut loaded) => {
            let mut warnings = loaded.warnings.clone();
            match loaded.read_secure(cli.secure.as_deref()) {
                Err(error) => (false, vec![error], warnings),
                Ok(replaced) => {
                    warnings.extend(replaced);
                    let environment = loaded.check_environment(&Environment::from_process());
                    warnings.extend(once_each(
                        environment.into_iter().map(|issue| issue.diagnostic),
                    ));
                    warnings.extend(unsupported_store(&loaded));
                    (true, Vec::new(), warnings)
                }
            }
        }
        Err(failure) => (false, failure.errors, failure.warnings),
    };
    warnings.sort_by_key(|d| d.location);
    if cli.json {
        let report = JsonReport {
            valid,
            errors: errors.iter().map(json).collect(),
            warnings: warnings.iter().map(json).collect(),
        };
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        for diagnostic in errors.iter().chain(&warnings) {
            writeln!(err, "{diagnostic}")?;
        }
        if valid {
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            writeln!(
                out,
                "{}: valid ({} warning{})",
                cli.config.display(),
                warnings.len(),
                plural(warnings.len())
            )?;
        } else {
            writeln!(
                err,
                "{}: invalid: {} error{}",
                cli.config.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(if valid { EXIT_OK } else { EXIT_USAGE })
}
