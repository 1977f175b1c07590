//! `list`, `hold`, `delete` and `show node`.

use std::io::Write;

use nodepool_db::{Acting, NodeFilter, StoreError};
use nodepool_model::{
    HoldNote, LabelName, Node, NodeId, NodeState, ProviderName, Reason, ReasonCode, Subject,
    Timestamp,
};
use serde::Serialize;

use crate::context::{Context, user};
use crate::output::{age, age_hours, cell, print_json, print_table, table, time};
use crate::{Cli, EXIT_OK, Outcome, events};

/// The 2014 `list` columns.
const COLUMNS: [&str; 11] = [
    "ID",
    "Provider",
    "AZ",
    "Label",
    "Target",
    "Hostname",
    "NodeName",
    "Server ID",
    "IP",
    "State",
    "Age (hours)",
];

/// A node in `--json` output. The field names are a stable interface (docs/cli.md).
#[derive(Serialize)]
pub(crate) struct JsonNode {
    id: u64,
    provider: String,
    az: Option<String>,
    label: String,
    hostname: Option<String>,
    nodename: Option<String>,
    server_id: Option<String>,
    public_ip: Option<String>,
    private_ip: Option<String>,
    state: String,
    state_time: String,
    age_hours: f64,
    image_id: Option<u64>,
    request_id: Option<u64>,
    held_by: Option<String>,
    hold_reason: Option<String>,
    created: String,
    host_keys: Vec<String>,
}

impl JsonNode {
    pub(crate) fn new(node: &Node, now: Timestamp) -> JsonNode {
        JsonNode {
            id: node.id.get(),
            provider: node.provider.to_string(),
            az: node.az.clone(),
            label: node.label.to_string(),
            hostname: node.hostname.clone(),
            nodename: node.nodename().map(str::to_owned),
            server_id: node.external_id.as_ref().map(ToString::to_string),
            public_ip: node.public_ip.map(|ip| ip.to_string()),
            private_ip: node.private_ip.map(|ip| ip.to_string()),
            state: node.state.to_string(),
            state_time: node.state_time.to_string(),
            age_hours: age_hours(now, node.state_time),
            image_id: node.image.map(|i| i.get()),
            request_id: node.request.map(|r| r.get()),
            held_by: node.hold.as_ref().map(|h| h.by.clone()),
            hold_reason: node.hold.as_ref().map(|h| h.reason.clone()),
            created: node.created.to_string(),
            host_keys: node.host_keys.clone(),
        }
    }
}

/// Prints `nodes` as the `list` table, or as JSON.
fn print(cli: &Cli, out: &mut dyn Write, nodes: &[Node], now: Timestamp) -> anyhow::Result<()> {
    if cli.json {
        let rows: Vec<JsonNode> = nodes.iter().map(|n| JsonNode::new(n, now)).collect();
        return print_json(out, &rows);
    }
    let mut rows = table(&COLUMNS);
    for node in nodes {
        rows.add_row(vec![
            node.id.to_string(),
            node.provider.to_string(),
            cell(node.az.as_deref()),
            node.label.to_string(),
            String::new(),
            cell(node.hostname.as_deref()),
            cell(node.nodename()),
            cell(node.external_id.as_ref()),
            // The address consumers reach it at: public, else private.
            cell(node.public_ip.or(node.private_ip)),
            node.state.to_string(),
            age(now, node.state_time),
        ]);
    }
    print_table(out, &rows)?;
    Ok(())
}

/// `nodepool list`.
pub(crate) fn list(
    cli: &Cli,
    out: &mut dyn Write,
    provider: Option<ProviderName>,
    label: Option<LabelName>,
    state: Option<NodeState>,
) -> Outcome {
    let ctx = Context::read(cli)?;
    let filter = NodeFilter {
        provider,
        label,
        state,
    };
    let nodes = ctx.store.nodes(&filter)?;
    print(cli, out, &nodes, ctx.now)?;
    Ok(EXIT_OK)
}

/// `nodepool hold ID`.
pub(crate) fn hold(cli: &Cli, out: &mut dyn Write, id: NodeId, reason: &str) -> Outcome {
    let ctx = Context::write(cli)?;
    let node = ctx.store.node(id)?;
    let node = if node.state == NodeState::Hold {
        node
    } else {
        let note = HoldNote {
            reason: reason.to_owned(),
            by: user(),
        };
        ctx.store.hold_node(id, &note, ctx.now, Acting::Anyone)?
    };
    print(cli, out, &[node], ctx.now)?;
    Ok(EXIT_OK)
}

/// `nodepool delete ID`: marks the node; the daemon deletes its server, then the row.
pub(crate) fn delete(cli: &Cli, out: &mut dyn Write, id: NodeId) -> Outcome {
    let ctx = Context::write(cli)?;
    let node = ctx.store.node(id)?;
    let node = if node.state == NodeState::Delete {
        node
    } else {
        let reason = Reason::new(
            ReasonCode::OperatorDelete,
            format!("deleted from the command line by {}", user()),
        );
        ctx.store
            .set_node_state(id, NodeState::Delete, ctx.now, &reason)?
    };
    print(cli, out, &[node], ctx.now)?;
    Ok(EXIT_OK)
}

/// `nodepool delete --now ID`: deletes the server through its provider, waits until the
/// cloud says it is gone, then removes the row.
pub(crate) fn delete_now(cli: &Cli, out: &mut dyn Write, id: NodeId) -> Outcome {
    let ctx = Context::write(cli)?;
    let mut node = ctx.store.node(id)?;
    let reason = Reason::new(
        ReasonCode::OperatorDelete,
        format!("deleted at once from the command line by {}", user()),
    );
    // Marked first: whatever happens next, the daemon finishes the deletion.
    if node.state != NodeState::Delete {
        node = ctx
            .store
            .set_node_state(id, NodeState::Delete, ctx.now, &reason)?;
    }
    ctx.delete_at_once(ctx.at_once().delete_node(id, reason))?;
    match &node.external_id {
        Some(server) => writeln!(out, "node {id} deleted: server {server} is gone")?,
        None => writeln!(out, "node {id} deleted (it had no server)")?,
    }
    Ok(EXIT_OK)
}

/// `nodepool show node ID`.
pub(crate) fn show(cli: &Cli, out: &mut dyn Write, id: NodeId) -> Outcome {
    let ctx = Context::read(cli)?;
    let history = ctx.store.events(Subject::Node(id))?;
    // A deleted node's row is gone; its history stays (a week), and says why it went.
    let node = match ctx.store.node(id) {
        Ok(node) => Some(node),
        Err(StoreError::NotFound { .. }) if !history.is_empty() => None,
        Err(error) => return Err(error.into()),
    };
    if cli.json {
        #[derive(Serialize)]
        struct Shown {
            node: Option<JsonNode>,
            events: Vec<events::JsonEvent>,
        }
        print_json(
            out,
            &Shown {
                node: node.as_ref().map(|n| JsonNode::new(n, ctx.now)),
                events: history.iter().map(events::JsonEvent::new).collect(),
            },
        )?;
        return Ok(EXIT_OK);
    }
    let Some(node) = node else {
        writeln!(out, "Node {id} is gone.")?;
        events::print_history(out, &history)?;
        return Ok(EXIT_OK);
    };
    let mut fields = vec![
        ("ID", node.id.to_string()),
        ("Provider", node.provider.to_string()),
        ("AZ", cell(node.az.as_deref())),
        ("Label", node.label.to_string()),
        ("Hostname", cell(node.hostname.as_deref())),
        ("Server ID", cell(node.external_id.as_ref())),
        ("Public IP", cell(node.public_ip)),
        ("Private IP", cell(node.private_ip)),
        (
            "State",
            format!(
                "{} since {} ({} hours)",
                node.state,
                time(node.state_time),
                age(ctx.now, node.state_time)
            ),
        ),
        ("Image upload", cell(node.image)),
        ("Request", cell(node.request)),
        ("Created", time(node.created)),
    ];
    if let Some(hold) = &node.hold {
        fields.push(("Held by", format!("{}: {}", hold.by, hold.reason)));
    }
    for key in &node.host_keys {
        fields.push(("Host key", key.clone()));
    }
    events::print_fields(out, &fields)?;
    events::print_history(out, &history)?;
    Ok(EXIT_OK)
}
