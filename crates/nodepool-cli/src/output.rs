//! Tables as 2014's `nodepool` printed them, and what every listing shares.

use std::fmt::Display;
use std::io::Write;

use nodepool_model::Timestamp;
use serde::Serialize;

/// A table drawn as 2014's PrettyTable did: `+---+` borders, one rule under the header,
/// none between rows, cells left-aligned and padded by one space, never wrapped (scripts
/// cut its columns). Drawn here rather than by a table crate: 2014's look is all it needs,
/// and a 10,000-node `list` renders in a few milliseconds this way (a general table crate
/// took 75 ms, most of the command's time).
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Adds a row: one cell per header.
    pub(crate) fn add_row(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let width = |cell: &String| cell.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(width).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut rule = String::from("+");
        for w in &widths {
            rule.extend(std::iter::repeat_n('-', w + 2));
            rule.push('+');
        }
        rule.push('\n');
        let mut line = String::new();
        let mut write_row = |out: &mut dyn Write, cells: &[String]| {
            line.clear();
            line.push('|');
            for (cell, w) in cells.iter().zip(&widths) {
                line.push(' ');
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', w - width(cell) + 1));
                line.push('|');
            }
            line.push('\n');
            out.write_all(line.as_bytes())
        };
        out.write_all(rule.as_bytes())?;
        write_row(out, &self.headers)?;
        out.write_all(rule.as_bytes())?;
        for row in &self.rows {
            write_row(out, row)?;
        }
        out.write_all(rule.as_bytes())
    }
}

/// A table with `headers`.
pub(crate) fn table(headers: &[&str]) -> Table {
    Table {
        headers: headers.iter().map(|h| (*h).to_owned()).collect(),
        rows: Vec::new(),
    }
}

/// Writes a table.
pub(crate) fn print_table(out: &mut dyn Write, table: &Table) -> std::io::Result<()> {
    table.write(out)
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

/// Hours from `since` to `now` rounded to two decimals, as `--json` gives ages.
pub(crate) fn age_hours(now: Timestamp, since: Timestamp) -> f64 {
    (hours(now, since) * 100.0).round() / 100.0
}

/// Hours from `since` to `now` (negative if `since` is later: a clock skewed between hosts).
fn hours(now: Timestamp, since: Timestamp) -> f64 {
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
