//! What the admin command does at once instead of leaving it to the daemon
//! (`nodepool delete --now`, `nodepool image-delete`): the daemon's own executors, driven by
//! a small loop that lists the provider while they wait on it.

use std::sync::Arc;
use std::time::Duration;

use nodepool_config::Config;
use nodepool_db::Store;
use nodepool_model::{ImageId, NodeId, ProviderName, Reason};
use nodepool_provider::Clock;

use crate::clouds::Clouds;
use crate::executor::{self, Context};
use crate::{Connector, store};

/// How often the provider is listed while an executor waits on it, in full and in between.
const LIST_EVERY: Duration = Duration::from_secs(5);
const LIST_CHANGES_EVERY: Duration = Duration::from_secs(1);

/// Why something asked for at once was not done. What was recorded stays: a node or upload
/// already marked for deletion is finished by the daemon.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotDone(String);

/// Deletes a node now: marks it for deletion, deletes its server (and floating IPs) through
/// its provider, waits until the cloud says the server is gone, then removes the row.
///
/// # Errors
///
/// [`NotDone`] when the node is unknown, its provider is not in `config` or cannot be
/// reached, or the cloud does not delete the server; the node stays marked for deletion.
pub async fn delete_node(
    store: &Store,
    config: &Config,
    clock: Arc<dyn Clock>,
    connector: Arc<dyn Connector>,
    id: NodeId,
    reason: Reason,
) -> Result<(), NotDone> {
    let node = store::call(store, move |s| s.node(id))
        .await
        .map_err(|e| NotDone(e.to_string()))?;
    let provider = node.provider.clone();
    let server = node.external_id.clone();
    let mut at_once = AtOnce::connect(store, config, clock, connector, &provider).await?;
    let connection = at_once.clouds.handle(&provider);
    let ctx = at_once.ctx.clone();
    at_once
        .drive(executor::delete_node(ctx, connection, node, server, reason))
        .await
        .map_err(|why| NotDone(format!("node {id}: {why}")))
}

/// Deletes an image upload now: marks it for deletion, deletes its template server (waiting
/// until it is gone) and its cloud image, then removes the row.
///
/// # Errors
///
/// As [`delete_node`]; the upload stays marked for deletion.
pub async fn delete_upload(
    store: &Store,
    config: &Config,
    clock: Arc<dyn Clock>,
    connector: Arc<dyn Connector>,
    id: ImageId,
    reason: Reason,
) -> Result<(), NotDone> {
    let upload = store::call(store, move |s| s.image(id))
        .await
        .map_err(|e| NotDone(e.to_string()))?;
    let provider = upload.provider.clone();
    let mut at_once = AtOnce::connect(store, config, clock, connector, &provider).await?;
    let connection = at_once.clouds.handle(&provider);
    let ctx = at_once.ctx.clone();
    at_once
        .drive(executor::delete_upload(ctx, connection, upload, reason))
        .await
        .map_err(|why| NotDone(format!("image upload {id}: {why}")))
}

/// One provider, connected, and what its executors need.
struct AtOnce {
    clouds: Clouds,
    ctx: Context,
}

impl AtOnce {
    async fn connect(
        store: &Store,
        config: &Config,
        clock: Arc<dyn Clock>,
        connector: Arc<dyn Connector>,
        provider: &ProviderName,
    ) -> Result<AtOnce, NotDone> {
        if !config.providers.iter().any(|p| &p.name == provider) {
            return Err(NotDone(format!(
                "provider {provider} is not in the config; nodepool cannot reach it"
            )));
        }
        let installation = store::call(store, |s| s.installation_id())
            .await
            .map_err(|e| NotDone(e.to_string()))?;
        // Only the provider concerned is connected.
        let mut only = config.clone();
        only.providers.retain(|p| &p.name == provider);
        let mut clouds = Clouds::new(clock.clone(), installation.clone(), connector).servers_only();
        if let Some((name, error)) = clouds.reconcile(&only).await.into_iter().next() {
            return Err(NotDone(format!("provider {name}: cannot connect: {error}")));
        }
        let ctx = Context {
            store: store.clone(),
            clock,
            installation,
            config: Arc::new(only),
        };
        Ok(AtOnce { clouds, ctx })
    }

    /// Runs `work`, listing the provider while it waits on the cloud.
    async fn drive<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let wanted = self.clouds.wanted.clone();
        loop {
            if self.clouds.watched() {
                let now = self.ctx.clock.now();
                // A failed listing is tried again at the next turn; the work's own deadline
                // bounds the wait.
                let _ = self
                    .clouds
                    .refresh(now, LIST_EVERY, LIST_CHANGES_EVERY)
                    .await;
            }
            tokio::select! {
                done = &mut work => return done,
                // The work started waiting on a listing.
                () = wanted.notified() => {}
                () = self.ctx.clock.sleep(LIST_CHANGES_EVERY) => {}
            }
        }
    }
}
