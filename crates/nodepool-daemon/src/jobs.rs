//! The periodic jobs of `cron: cleanup` and `cron: check`.
//!
//! - **cleanup** lists each provider's images and floating IPs and deletes the ones tagged
//!   by this installation that belong to nothing the store has (servers are checked every
//!   round from the round's listing already), and prunes old history.
//! - **check** logs in to every READY node as a launch did and deletes the ones that do not
//!   answer, or answer with another host key than the one recorded at launch.
//!
//! With several daemons on a store, only the oldest live one runs them.

use std::sync::Arc;
use std::time::Duration;

use nodepool_model::{
    ExternalId, Human, InstallationId, Node, NodeState, ProviderName, Reason, ReasonCode, Timestamp,
};
use nodepool_node::cleanup::{Resource, SeenResource, leaked};
use nodepool_provider::{ErrorKind, Provider, SOURCE_SERVER_KEY, TEMPLATE_KEY};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use nodepool_executor::clouds::{Connection, seen_owner};
use nodepool_executor::executor::Context;
use nodepool_executor::store;
use nodepool_executor::{Remote, RemoteError, Target};

use crate::daemon::Daemon;
use crate::peers::Leader;
use crate::round::Round;
use crate::timers::Timer;
use crate::work::WorkOn;

/// How long a check keeps trying to log in to a node (2014 `ssh_connect`'s default).
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// How many nodes are checked at once.
pub(crate) const CHECKS_AT_ONCE: usize = 16;

/// Events of nodes, images and requests that no longer exist are kept this long.
pub(crate) const HISTORY_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Failures are kept this long; the backoff they feed looks back at most 30 minutes.
pub(crate) const FAILURES_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Lists every provider's images and floating IPs (concurrently), reads the store once
/// after all the listings, and deletes what this installation tagged that the store no
/// longer accounts for.
pub(crate) async fn cleanup(ctx: Context, connections: Vec<Connection>) {
    let mut listings = tokio::task::JoinSet::new();
    for connection in connections {
        let installation = ctx.installation.clone();
        listings.spawn(async move {
            let seen = list_tagged(&connection, &installation).await;
            (connection, seen)
        });
    }
    let mut listed = Vec::new();
    while let Some(joined) = listings.join_next().await {
        if let Ok((connection, seen)) = joined
            && !seen.is_empty()
        {
            listed.push((connection, seen));
        }
    }
    if listed.is_empty() {
        return;
    }
    let snapshot = match store::call(&ctx.store, |s| s.snapshot()).await {
        Ok(snapshot) => snapshot,
        Err(e) => {
            warn!("cleanup: cannot read the store: {e}");
            return;
        }
    };
    let configured: Vec<ProviderName> = ctx
        .config
        .providers
        .iter()
        .map(|p| p.name.clone())
        .collect();
    for (connection, seen) in listed {
        let provider = connection.name();
        for leak in leaked(&snapshot, provider, &configured, &seen) {
            let deleted = match leak.kind {
                Resource::Image => connection.delete_image(&leak.id).await,
                Resource::FloatingIp => connection.delete_floating_ip(&leak.id).await,
            };
            match deleted {
                Ok(()) => {
                    info!(provider = %provider, "deleted leaked {} {}: {}", leak.kind, leak.id, leak.reason.text)
                }
                Err(error) if error.kind == ErrorKind::NotFound => {}
                Err(error) => {
                    warn!(provider = %provider, "leaked {} {} not deleted yet: {error}", leak.kind, leak.id)
                }
            }
        }
    }
}

/// A provider's images and floating IPs with their owners. Each listing stands on its own:
/// one that fails leaves the other's leaks to delete.
async fn list_tagged(connection: &Connection, installation: &InstallationId) -> Vec<SeenResource> {
    let provider = connection.name();
    let mut seen = Vec::new();
    match connection.list_images().await {
        Ok(images) => seen.extend(images.into_iter().map(|image| {
            let property = |key: &str| image.properties.get(key).map(ExternalId::new);
            SeenResource {
                kind: Resource::Image,
                owner: seen_owner(&image.properties, installation),
                made_from: property(SOURCE_SERVER_KEY),
                template: property(TEMPLATE_KEY),
                id: image.id,
            }
        })),
        Err(error) => warn!(provider = %provider, "cleanup: cannot list images: {error}"),
    }
    match connection.list_floating_ips().await {
        Ok(ips) => seen.extend(ips.into_iter().map(|ip| {
            let owner = seen_owner(&ip.metadata, installation);
            SeenResource::new(Resource::FloatingIp, ip.id, owner)
        })),
        // A cloud without floating IPs has none to leak.
        Err(error) if error.kind == ErrorKind::NotFound => {}
        Err(error) => warn!(provider = %provider, "cleanup: cannot list floating IPs: {error}"),
    }
    seen
}

/// Logs in to a READY node; marks it for deletion if it does not answer within
/// [`CHECK_TIMEOUT`] or presents another host key than the one recorded at launch. A node a
/// consumer took meanwhile is left alone.
pub(crate) async fn check(
    ctx: Context,
    remote: Arc<dyn Remote>,
    node: Node,
    limit: Arc<Semaphore>,
) {
    let Ok(_permit) = limit.acquire().await else {
        return;
    };
    let Some(target) = target(&ctx, &node) else {
        return;
    };
    let failed = match ctx
        .reach(remote.as_ref(), &target, ctx.now(), CHECK_TIMEOUT)
        .await
    {
        Ok(Some(key)) if !node.host_keys.is_empty() && !node.host_keys.contains(&key) => {
            Some(Reason::new(
                ReasonCode::HostKeyChanged,
                format!(
                    "{target} presented the host key {key}, not the one recorded when it was launched"
                ),
            ))
        }
        Ok(_) => None,
        Err(RemoteError::HostKey { presented, .. }) => Some(Reason::new(
            ReasonCode::HostKeyChanged,
            format!(
                "{target} presented the host key {presented}, not the one recorded when it was launched"
            ),
        )),
        Err(error) => Some(Reason::new(
            ReasonCode::CheckFailed,
            format!("no SSH login within {}: {error}", Human(CHECK_TIMEOUT)),
        )),
    };
    let Some(reason) = failed else {
        return;
    };
    let (id, now) = (node.id, ctx.now());
    let why = reason.clone();
    match store::call(&ctx.store, move |s| {
        s.set_node_state_from(id, NodeState::Ready, NodeState::Delete, now, &why)
    })
    .await
    {
        Ok(_) => {
            warn!(node = %node.id, provider = %node.provider, label = %node.label, "check failed; deleting it: {}", reason.text)
        }
        Err(nodepool_db::StoreError::InvalidTransition { from, .. }) => {
            info!(node = %node.id, "check failed, but the node is {from} by now; left alone")
        }
        Err(e) => warn!(node = %node.id, "cannot mark the unreachable node for deletion: {e}"),
    }
}

/// Where and as whom a node's launch logged in.
fn target(ctx: &Context, node: &Node) -> Option<Target> {
    let provider = ctx
        .config
        .providers
        .iter()
        .find(|p| p.name == node.provider)?;
    let label = ctx.config.labels.iter().find(|l| l.name == node.label)?;
    let image = provider.images.iter().find(|i| i.name == label.image)?;
    Some(Target {
        host: node.public_ip.or(node.private_ip)?,
        port: image.connection_port,
        user: image.username.clone(),
        key: image.private_key.clone(),
        // The key recorded at launch: a server with another is refused before anything is
        // sent to it.
        host_key: node.host_keys.first().cloned(),
    })
}

impl Daemon {
    /// Starts the periodic jobs that are due, in the daemon that leads them.
    pub(crate) async fn run_jobs(&mut self, round: &Round) {
        let now = round.now;
        let cleanup_due = self.timers.is_due(Timer::Cleanup, now);
        let check_due = self.timers.is_due(Timer::Check, now);
        if !(cleanup_due || check_due) {
            return;
        }
        let cron = self.config.current().cron.clone();
        let leader = self.peers.jobs_leader(&self.store, round.live, now).await;
        self.report.jobs_leader(&leader);
        if matches!(leader, Leader::Other(_)) {
            self.timers
                .set(Timer::Cleanup, cron.cleanup.next_after(now));
            self.timers.set(Timer::Check, cron.check.next_after(now));
            return;
        }
        if cleanup_due {
            self.timers
                .set(Timer::Cleanup, cron.cleanup.next_after(now));
            let connections = self
                .clouds
                .by_name
                .values()
                .map(|c| c.connection.clone())
                .collect();
            let ctx = self.context();
            self.dispatch(WorkOn::Cleanup, true, now, cleanup(ctx, connections))
                .await;
            self.prune(now).await;
        }
        if check_due {
            self.timers.set(Timer::Check, cron.check.next_after(now));
            let busy = self.work.nodes();
            let ready: Vec<&Node> = round
                .snapshot
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Ready && !busy.contains(&n.id))
                .collect();
            let mut started = 0;
            for node in ready {
                let Some(cloud) = self.clouds.by_name.get(&node.provider) else {
                    continue;
                };
                let (ctx, remote) = (self.context(), cloud.remote.clone());
                let (node, limit) = (node.clone(), self.work.check_slots());
                let on = WorkOn::Check(node.id);
                if self
                    .dispatch(on, true, now, check(ctx, remote, node, limit))
                    .await
                {
                    started += 1;
                }
            }
            if started > 0 {
                info!("checking {started} ready node(s) over SSH");
            }
        }
    }

    /// Forgets old history: requests that ended long ago, events of what no longer
    /// exists, and failures the backoff no longer looks at.
    async fn prune(&self, now: Timestamp) {
        let events_before = now.saturating_sub(HISTORY_KEPT);
        let failures_before = now.saturating_sub(FAILURES_KEPT);
        match store::call(&self.store, move |s| {
            Ok((
                s.prune_requests(events_before)?,
                s.prune_events(events_before)?,
                s.prune_failures(failures_before)?,
            ))
        })
        .await
        {
            Ok((0, 0, 0)) => {}
            Ok((requests, events, failures)) => {
                info!(
                    "pruned {requests} old request(s), {events} old event(s) and {failures} old failure(s)"
                )
            }
            Err(e) => warn!("cannot prune old history: {e}"),
        }
    }
}
