//! A record's fields and history, as `show` prints them.

use std::io::Write;

use nodepool_model::Event;
use serde::Serialize;

use crate::output::{print_table, table, time};

/// One event in `--json` output. The field names are a stable interface (docs/cli.md).
#[derive(Serialize)]
pub(crate) struct JsonEvent {
    seq: u64,
    time: String,
    what: String,
    code: String,
    reason: String,
    actor: String,
}

impl JsonEvent {
    pub(crate) fn new(event: &Event) -> JsonEvent {
        JsonEvent {
            seq: event.seq,
            time: event.time.to_string(),
            what: event.what.clone(),
            code: event.reason.code.to_string(),
            reason: event.reason.text.clone(),
            actor: event.actor.clone(),
        }
    }
}

/// `Key: value` lines, the keys aligned.
pub(crate) fn print_fields(out: &mut dyn Write, fields: &[(&str, String)]) -> std::io::Result<()> {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in fields {
        writeln!(out, "{:<width$} {value}", format!("{key}:"))?;
    }
    Ok(())
}

/// The history as a table, oldest first.
pub(crate) fn print_history(out: &mut dyn Write, history: &[Event]) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "History:")?;
    let mut rows = table(&["Time", "What", "Why", "Code", "By"]);
    for event in history {
        rows.add_row(vec![
            time(event.time),
            event.what.clone(),
            event.reason.text.clone(),
            event.reason.code.to_string(),
            event.actor.clone(),
        ]);
    }
    print_table(out, &rows)
}
