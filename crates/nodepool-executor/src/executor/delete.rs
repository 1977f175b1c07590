//! Deletions: a node's server and row, an upload's template server, cloud image and row,
//! and leaked servers.
//!
//! A row names what to delete, but only the resource's own tags prove it is ours: a server
//! or image that carries another installation's tags, or none, is left alone and its row
//! forgotten (a store copied from another installation's, say, names that one's servers).
//! Floating IPs are deleted with their server only when they are ours too.

use std::time::Duration;

use nodepool_db::StoreError;
use nodepool_model::InstallationId;
use nodepool_model::{
    ExternalId, FailureKind, Human, Image, ImageState, Node, NodeState, Reason, ReasonCode,
};
use nodepool_provider::{ErrorKind, Ownership, Provider, ServerStatus, classify};
use tracing::{info, warn};

use super::context::{Context, Failed};
use crate::clouds::Connection;
use crate::listing::ServerFeed;

/// How long a deleted server may take to go (2014 `waitForServerDeletion`).
const DELETE_TIMEOUT: Duration = Duration::from_secs(600);

/// What deleting a resource came to.
#[derive(Debug)]
pub(super) enum Deleted {
    /// It is gone (or was already).
    Gone,
    /// It is not provably ours, and was left alone; why.
    LeftAlone(String),
}

/// Why a resource with `metadata` is not this installation's, if it is not.
fn not_ours(
    metadata: &std::collections::BTreeMap<String, String>,
    installation: &InstallationId,
) -> Option<String> {
    match classify(metadata, installation) {
        Ownership::Ours { .. } | Ownership::OursUnreadable => None,
        Ownership::OtherInstallation(other) => {
            Some(format!("it carries installation {other}'s tags"))
        }
        Ownership::Foreign => Some("it carries no nodepool tags".to_owned()),
    }
}

/// Deletes a server and waits until the cloud says it is gone (a listing asked for after
/// the deletion no longer shows it); one already gone is fine, and one that is not ours is
/// left alone.
pub(super) async fn delete_server(
    ctx: &Context,
    connection: &Connection,
    servers: &ServerFeed,
    id: &ExternalId,
) -> Result<Deleted, Failed> {
    match connection.get_server(id).await {
        Ok(server) => {
            if let Some(why) = not_ours(&server.metadata, &ctx.installation) {
                return Ok(Deleted::LeftAlone(why));
            }
        }
        Err(error) if error.kind == ErrorKind::NotFound => return Ok(Deleted::Gone),
        Err(error) => return Err(Failed::from(error)),
    }
    // Floating IPs of ours mapped onto it go first, as 2014's cleanupServer did.
    if let Ok(ips) = connection.list_floating_ips().await {
        for ip in ips.into_iter().filter(|ip| {
            ip.server.as_ref() == Some(id) && not_ours(&ip.metadata, &ctx.installation).is_none()
        }) {
            match connection.delete_floating_ip(&ip.id).await {
                Ok(()) => {}
                Err(error) if error.kind == ErrorKind::NotFound => {}
                Err(error) => return Err(Failed::from(error)),
            }
        }
    }
    let asked = ctx.now();
    match connection.delete_server(id).await {
        Ok(()) => {}
        Err(error) if error.kind == ErrorKind::NotFound => return Ok(Deleted::Gone),
        Err(error) => return Err(Failed::from(error)),
    }
    let deadline = asked.saturating_add(DELETE_TIMEOUT);
    let mut asked_again = false;
    loop {
        // Gone, or ERROR (an ERROR server is asked once more; some clouds need it).
        let seen = ctx
            .watch_until(servers, deadline, |listing| {
                if listing.at <= asked {
                    return None;
                }
                match listing.by_id.get(id) {
                    None => Some(true),
                    Some(server) if server.status == ServerStatus::Error && !asked_again => {
                        Some(false)
                    }
                    Some(_) => None,
                }
            })
            .await?;
        match seen {
            Some(true) => return Ok(Deleted::Gone),
            Some(false) => {
                asked_again = true;
                let _ = connection.delete_server(id).await;
            }
            None => {
                return Err(Failed::new(
                    FailureKind::Timeout,
                    format!(
                        "server {id} still exists {} after its deletion",
                        Human(DELETE_TIMEOUT)
                    ),
                ));
            }
        }
    }
}

/// Deletes a node: its server (and floating IPs), then its row. The row goes only once the
/// cloud says the server is gone.
pub async fn delete_node(
    ctx: Context,
    connection: Option<(Connection, ServerFeed)>,
    node: Node,
    server: Option<ExternalId>,
    reason: Reason,
) -> Result<(), Failed> {
    let (id, provider) = (node.id, node.provider.clone());
    let deleted = try_delete_node(&ctx, connection, &node, server, &reason).await;
    match &deleted {
        Ok(()) => {
            info!(node = %id, provider = %provider, label = %node.label, "deleted: {}", reason.text);
        }
        Err(why) => warn!(node = %id, provider = %provider, "{why}"),
    }
    deleted
}

async fn try_delete_node(
    ctx: &Context,
    connection: Option<(Connection, ServerFeed)>,
    node: &Node,
    server: Option<ExternalId>,
    reason: &Reason,
) -> Result<(), Failed> {
    let id = node.id;
    let now = ctx.now();
    if node.state != NodeState::Delete {
        let why = reason.clone();
        ctx.record(move |s| s.set_node_state(id, NodeState::Delete, now, &why))
            .await
            .map_err(|e| Failed::from(e).context("cannot mark for deletion"))?;
    }
    let mut left = None;
    if let Some(server) = &server {
        let Some((connection, servers)) = connection else {
            return Err(Failed::new(
                FailureKind::CloudError,
                format!("server {server} kept: the provider is not connected"),
            ));
        };
        if let Deleted::LeftAlone(why) = delete_server(ctx, &connection, &servers, server)
            .await
            .map_err(|why| why.context(format!("server {server} not deleted yet")))?
        {
            warn!(node = %id, provider = %node.provider, "server {server} is left alone and the node forgotten: {why}");
            left = Some(why);
        }
    }
    let now = ctx.now();
    let gone = Reason::new(
        ReasonCode::Deleted,
        match (&server, left) {
            (Some(server), Some(why)) => format!(
                "server {server} is not this installation's and was left alone: {why} ({})",
                reason.text
            ),
            (Some(server), None) => format!("server {server} is gone ({})", reason.text),
            (None, _) => format!("it had no server ({})", reason.text),
        },
    );
    match ctx.record(move |s| s.remove_node(id, now, &gone)).await {
        // Another process (a daemon, an admin's `delete --now`) finished it first.
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(Failed::from(e).context("cannot remove the row")),
    }
}

/// Deletes a leaked server.
pub async fn delete_leak(
    ctx: Context,
    connection: Connection,
    servers: ServerFeed,
    server: ExternalId,
    reason: Reason,
) {
    match delete_server(&ctx, &connection, &servers, &server).await {
        Ok(Deleted::Gone) => {
            info!(provider = %connection.name(), "deleted leaked server {server}: {}", reason.text)
        }
        Ok(Deleted::LeftAlone(why)) => {
            warn!(provider = %connection.name(), "server {server} left alone: {why}")
        }
        Err(why) => {
            warn!(provider = %connection.name(), "leaked server {server} not deleted yet: {why}")
        }
    }
}

/// Deletes an upload: its template server, its cloud image, then its row.
pub async fn delete_upload(
    ctx: Context,
    connection: Option<(Connection, ServerFeed)>,
    upload: Image,
    reason: Reason,
) -> Result<(), Failed> {
    let deleted = try_delete_upload(&ctx, connection, &upload, &reason).await;
    match &deleted {
        Ok(()) => {
            info!(image = %upload.id, provider = %upload.provider, name = %upload.name, "deleted: {}", reason.text);
        }
        Err(why) => warn!(image = %upload.id, provider = %upload.provider, "{why}"),
    }
    deleted
}

async fn try_delete_upload(
    ctx: &Context,
    connection: Option<(Connection, ServerFeed)>,
    upload: &Image,
    reason: &Reason,
) -> Result<(), Failed> {
    let id = upload.id;
    let now = ctx.now();
    if upload.state != ImageState::Delete {
        let why = reason.clone();
        ctx.record(move |s| s.set_image_state(id, ImageState::Delete, now, &why))
            .await
            .map_err(|e| Failed::from(e).context("cannot mark for deletion"))?;
    }
    if upload.server_external_id.is_some() || upload.external_id.is_some() {
        let Some((connection, servers)) = connection else {
            return Err(Failed::new(
                FailureKind::CloudError,
                "kept: the provider is not connected",
            ));
        };
        if let Some(server) = &upload.server_external_id
            && let Deleted::LeftAlone(why) = delete_server(ctx, &connection, &servers, server)
                .await
                .map_err(|why| why.context(format!("template server {server} not deleted yet")))?
        {
            warn!(image = %id, provider = %upload.provider, "template server {server} left alone: {why}");
        }
        if let Some(image) = &upload.external_id {
            match connection.get_image(image).await {
                Ok(found) => {
                    if let Some(why) = not_ours(&found.properties, &ctx.installation) {
                        warn!(image = %id, provider = %upload.provider, "cloud image {image} left alone: {why}");
                        return forget_upload(ctx, id, reason).await;
                    }
                }
                Err(error) if error.kind == ErrorKind::NotFound => {
                    return forget_upload(ctx, id, reason).await;
                }
                Err(error) => {
                    return Err(
                        Failed::from(error).context(format!("cloud image {image} not deleted yet"))
                    );
                }
            }
            match connection.delete_image(image).await {
                Ok(()) => {}
                Err(error) if error.kind == ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(
                        Failed::from(error).context(format!("cloud image {image} not deleted yet"))
                    );
                }
            }
        }
    }
    forget_upload(ctx, id, reason).await
}

/// Removes an upload's row once its resources are gone (or left alone).
async fn forget_upload(
    ctx: &Context,
    id: nodepool_model::ImageId,
    reason: &Reason,
) -> Result<(), Failed> {
    let now = ctx.now();
    let gone = Reason::new(
        ReasonCode::Deleted,
        format!("gone from the cloud ({})", reason.text),
    );
    match ctx.record(move |s| s.remove_image(id, now, &gone)).await {
        // Another process finished it first.
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(Failed::from(e).context("cannot remove the row")),
    }
}
