//! The launch of a node: its server, address, SSH login and ready script, then READY.

use std::sync::Arc;

use nodepool_config::{Config, Label, Provider as ProviderConfig, ProviderImage};
use nodepool_model::{FailureKind, Human, Image, Node, NodeState, Reason, ReasonCode};
use nodepool_provider::{Owner, Provider, ServerSpec};
use tracing::{debug, info};

use super::context::{Context, Failed, networks};
use super::output::last_lines;
use crate::clouds::Connection;
use crate::listing::ServerFeed;
use crate::remote::{Remote, Target};

/// Launches `node` (its row already written): server, address, SSH, ready script, READY.
pub async fn launch(
    ctx: Context,
    connection: Connection,
    servers: ServerFeed,
    remote: Arc<dyn Remote>,
    node: Node,
    upload: Image,
    flavor: String,
) {
    let started = ctx.now();
    let result = try_launch(
        &ctx,
        &connection,
        &servers,
        remote.as_ref(),
        &node,
        &upload,
        flavor,
    )
    .await;
    metrics::histogram!(
        "nodepool_launch_seconds",
        "provider" => node.provider.to_string(),
        "label" => node.label.to_string(),
        "outcome" => if result.is_ok() { "ready" } else { "failed" },
    )
    .record(ctx.now().saturating_since(started).as_secs_f64());
    if let Err(why) = result {
        ctx.launch_failed(&node, why).await;
    }
}

async fn try_launch(
    ctx: &Context,
    connection: &Connection,
    servers: &ServerFeed,
    remote: &dyn Remote,
    node: &Node,
    upload: &Image,
    flavor: String,
) -> Result<(), Failed> {
    let (provider, label, image) = find(&ctx.config, node)?;
    // Checked before anything is made in the cloud.
    if let Some(script) = &label.ready_script
        && ctx.config.script_dir.is_none()
    {
        return Err(Failed::new(
            FailureKind::Config,
            format!(
                "label {} has ready-script {script}, but the config has no script-dir to copy it from: set script-dir",
                label.name
            ),
        ));
    }
    let image_id = upload.external_id.clone().ok_or_else(|| {
        Failed::new(
            FailureKind::Store,
            format!("image upload {} has no cloud image", upload.id),
        )
    })?;
    let name = node
        .hostname
        .clone()
        .unwrap_or_else(|| format!("{}-{}-{}", node.label, node.provider, node.id));
    let mut spec = ServerSpec::new(name, flavor, image_id);
    spec.metadata = image.meta.clone();
    spec.metadata
        .extend(ctx.tags(provider, Owner::Node(node.id)));
    spec.key_name = provider.keypair.clone();
    spec.availability_zone = node.az.clone();
    spec.networks = networks(provider);
    let started = ctx.now();
    let server = connection
        .create_server(&spec)
        .await
        .map_err(Failed::from)?;
    let id = node.id;
    let server_id = server.id.clone();
    ctx.record(move |s| s.attach_node_server(id, &server_id, started))
        .await
        .map_err(Failed::from)?;
    info!(node = %node.id, provider = %node.provider, label = %node.label, "server {} created", server.id);
    let server = ctx
        .until_active(servers, &server.id, started, provider.launch_timeout)
        .await?;
    debug!(node = %node.id, "server {} ACTIVE", server.id);
    let (public, private) = ctx
        .address(connection, provider, &server, Owner::Node(node.id))
        .await?;
    let now = ctx.now();
    ctx.record(move |s| s.set_node_addresses(id, public, private, now))
        .await
        .map_err(Failed::from)?;
    let host = public
        .or(private)
        .ok_or_else(|| Failed::new(FailureKind::CloudRefused, "no address to log in at"))?;
    let mut target = Target {
        host,
        port: image.connection_port,
        user: image.username.clone(),
        key: ctx.key(image),
        host_key: None,
    };
    let host_key = ctx
        .reach(remote, &target, ctx.now(), provider.boot_timeout)
        .await
        .map_err(|e| {
            let within = format!(
                "no SSH within boot-timeout ({}): ",
                Human(provider.boot_timeout)
            );
            Failed::login(e, within)
        })?;
    debug!(node = %node.id, "reached as {target}");
    // The key seen first is the only one the rest of the launch accepts.
    target.host_key.clone_from(&host_key);
    if let Some(key) = host_key {
        let now = ctx.now();
        ctx.record(move |s| s.set_node_host_keys(id, std::slice::from_ref(&key), now))
            .await
            .map_err(Failed::from)?;
    }
    if let Some(script) = &label.ready_script {
        let command = format!(
            "cd {} && ./{} {}",
            nodepool_config::defaults::SCRIPTS_ON_NODE,
            crate::ssh::quote(script),
            crate::ssh::quote(node.hostname.as_deref().unwrap_or_default())
        );
        let output = remote.run(&target, &command).await.map_err(Failed::from)?;
        if output.status != 0 {
            return Err(Failed::new(
                FailureKind::Script,
                format!(
                    "ready-script {script} exited with {}: {}",
                    output.status,
                    last_lines(&output.output)
                ),
            ));
        }
    }
    let now = ctx.now();
    let took = now.saturating_since(node.state_time);
    let reason = Reason::new(
        ReasonCode::Launched,
        format!(
            "reachable over SSH as {}; launched in {}",
            target,
            Human(took)
        ),
    );
    ctx.record(move |s| s.set_node_state(id, NodeState::Ready, now, &reason))
        .await
        .map_err(Failed::from)?;
    info!(node = %node.id, provider = %node.provider, label = %node.label, "ready in {}", Human(took));
    Ok(())
}

/// The provider, label and provider image of a node, from the running config.
fn find<'c>(
    config: &'c Config,
    node: &Node,
) -> Result<(&'c ProviderConfig, &'c Label, &'c ProviderImage), Failed> {
    let provider = config
        .providers
        .iter()
        .find(|p| p.name == node.provider)
        .ok_or_else(|| {
            Failed::new(
                FailureKind::Config,
                format!("provider {} is no longer in the config", node.provider),
            )
        })?;
    let label = config
        .labels
        .iter()
        .find(|l| l.name == node.label)
        .ok_or_else(|| {
            Failed::new(
                FailureKind::Config,
                format!("label {} is no longer in the config", node.label),
            )
        })?;
    let image = provider
        .images
        .iter()
        .find(|i| i.name == label.image)
        .ok_or_else(|| {
            Failed::new(
                FailureKind::Config,
                format!("provider {} has no image {}", provider.name, label.image),
            )
        })?;
    Ok((provider, label, image))
}
