//! `request-list`.

use std::io::Write;

use nodepool_model::NodeRequest;
use serde::Serialize;

use crate::context::Context;
use crate::output::{age, age_hours, cell, print_json, print_table, table};
use crate::{Cli, EXIT_OK, Outcome};

/// A node request in `--json` output. The field names are a stable interface
/// (docs/cli.md).
#[derive(Serialize)]
struct JsonRequest {
    id: u64,
    requestor: String,
    priority: i32,
    labels: Vec<String>,
    state: String,
    state_time: String,
    age_hours: f64,
    nodes: Vec<u64>,
    failure: Option<String>,
    created: String,
}

/// `nodepool request-list`: every request, oldest first.
pub(crate) fn list(cli: &Cli, out: &mut dyn Write) -> Outcome {
    let ctx = Context::read(cli)?;
    let requests = ctx.store.requests(None)?;
    if cli.json {
        let rows: Vec<JsonRequest> = requests
            .iter()
            .map(|r: &NodeRequest| JsonRequest {
                id: r.id.get(),
                requestor: r.requestor.clone(),
                priority: r.priority,
                labels: r.labels.iter().map(ToString::to_string).collect(),
                state: r.state.to_string(),
                state_time: r.state_time.to_string(),
                age_hours: age_hours(ctx.now, r.state_time),
                nodes: r.nodes.iter().map(|n| n.get()).collect(),
                failure: r.failure.clone(),
                created: r.created.to_string(),
            })
            .collect();
        print_json(out, &rows)?;
        return Ok(EXIT_OK);
    }
    let mut rows = table(&[
        "ID",
        "Requestor",
        "Priority",
        "Labels",
        "Nodes",
        "State",
        "Why",
        "Age (hours)",
    ]);
    for request in &requests {
        let join = |items: Vec<String>| items.join(",");
        rows.add_row(vec![
            request.id.to_string(),
            request.requestor.clone(),
            request.priority.to_string(),
            join(request.labels.iter().map(ToString::to_string).collect()),
            join(request.nodes.iter().map(ToString::to_string).collect()),
            request.state.to_string(),
            cell(request.failure.as_deref()),
            age(ctx.now, request.state_time),
        ]);
    }
    print_table(out, &rows)?;
    Ok(EXIT_OK)
}
