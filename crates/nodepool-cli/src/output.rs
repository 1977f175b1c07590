//! Tables as 2014's `nodepool` printed them, and what every listing shares.

use std::fmt::Display;
use std::io::Write;

use comfy_table::{ContentArrangement, Table};
use nodepool_model::Timestamp;
use serde::Serialize;

/// PrettyTable's look: `+`, `-` and `|`, a rule under the header, none between rows.
const PRETTY_TABLE: &str = "||--+-++|    ++++++";

/// A table with `headers`, drawn as 2014's PrettyTable did (`+---+` borders, one header
/// rule, left-aligned cells) and never wrapped: scripts cut its columns.
pub(crate) fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(PRETTY_TABLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    table
}

/// Writes a table followed by a newline.
pub(crate) fn print_table(out: &mut dyn Write, table: &Table) -> std::io::Result<()> {
    writeln!(out, "{table}")
}

/// Writes `value` as pretty JSON followed by a newline.
pub(crate) fn print_json(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Hours from `since` to `now` with two decimals, as 2014 printed ages.
pub(crate) fn age(now: Timestamp, since: Timestamp) -> String {
    format!("{:.2}", hours(now, since))
}

/// Hours from `since` to `now` (negative if `since` is later: a clock skewed between hosts).
pub(crate) fn hours(now: Timestamp, since: Timestamp) -> f64 {
    let millis = now.unix_millis() - since.unix_millis();
    // Ages are small enough for an f64 to hold exactly.
    #[allow(clippy::cast_precision_loss)]
    let hours = millis as f64 / 3_600_000.0;
    hours
}

/// A time for people: RFC 3339 in UTC to the second (the JSON output keeps milliseconds).
pub(crate) fn time(at: Timestamp) -> String {
    at.to_datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A cell for an optional value: `None` when absent, as 2014 printed it.
pub(crate) fn cell<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| v.to_string())
}
