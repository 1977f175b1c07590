//! `daemon-list`.

use std::io::Write;

use serde::Serialize;

use crate::context::Context;
use crate::output::{age, age_hours, print_json, print_table, table, time};
use crate::{Cli, EXIT_OK, Outcome};

/// A daemon in `--json` output. The field names are a stable interface (docs/cli.md).
#[derive(Serialize)]
struct JsonDaemon {
    id: String,
    host: String,
    pid: u32,
    started: String,
    up_hours: f64,
    lease_expires: String,
    alive: bool,
    work: usize,
}

/// `nodepool daemon-list`: every daemon registered in the store, oldest first.
pub(crate) fn list(cli: &Cli, out: &mut dyn Write) -> Outcome {
    let ctx = Context::read(cli)?;
    let daemons = ctx.store.daemons()?;
    let work = ctx.store.work_by_daemon()?;
    let claimed = |id: &str| work.get(id).copied().unwrap_or(0);
    if cli.json {
        let rows: Vec<JsonDaemon> = daemons
            .iter()
            .map(|d| JsonDaemon {
                id: d.id.clone(),
                host: d.host.clone(),
                pid: d.pid,
                started: d.started.to_string(),
                up_hours: age_hours(ctx.now, d.started),
                lease_expires: d.expires.to_string(),
                alive: d.expires > ctx.now,
                work: claimed(&d.id),
            })
            .collect();
        print_json(out, &rows)?;
        return Ok(EXIT_OK);
    }
    let mut rows = table(&[
        "ID",
        "Host",
        "PID",
        "Started",
        "Up (hours)",
        "Lease",
        "Work",
    ]);
    for daemon in &daemons {
        let lease = if daemon.expires > ctx.now {
            "alive".to_owned()
        } else {
            format!("expired {}", time(daemon.expires))
        };
        rows.add_row(vec![
            daemon.id.clone(),
            daemon.host.clone(),
            daemon.pid.to_string(),
            time(daemon.started),
            age(ctx.now, daemon.started),
            lease,
            claimed(&daemon.id).to_string(),
        ]);
    }
    print_table(out, &rows)?;
    Ok(EXIT_OK)
}

/// `nodepool installation-id [--new]`.
pub(crate) fn installation_id(cli: &Cli, out: &mut dyn Write, new: bool) -> Outcome {
    let ctx = Context::read(cli)?;
    let old = ctx.store.installation_id()?;
    let id = if new {
        ctx.store.new_installation_id(ctx.now)?
    } else {
        old.clone()
    };
    if cli.json {
        let value = serde_json::json!({"installation": id.to_string(), "previous": new.then(|| old.to_string())});
        print_json(out, &value)?;
    } else if new {
        writeln!(out, "{id} (was {old})")?;
    } else {
        writeln!(out, "{id}")?;
    }
    Ok(EXIT_OK)
}
