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

/// What the admin command acts with: the store, the running config, the clock, and how to
/// connect a provider.
#[derive(Clone, Debug)]
pub struct AtOnce<'a> {
    store: &'a Store,
    config: &'a Config,
    clock: Arc<dyn Clock>,
    connector: Arc<dyn Connector>,
}

impl<'a> AtOnce<'a> {
    /// Acts on `store`'s records in the clouds of `config`.
    pub fn new(
        store: &'a Store,
        config: &'a Config,
        clock: Arc<dyn Clock>,
        connector: Arc<dyn Connector>,
    ) -> AtOnce<'a> {
        AtOnce {
            store,
            config,
            clock,
            connector,
        }
    }

    /// Deletes a node now: marks it for deletion, deletes its server (and floating IPs)
    /// through its provider, waits until the cloud says the server is gone, then removes
    /// the row.
    ///
    /// # Errors
    ///
    /// [`NotDone`] when the node is unknown, its provider is not in the config or cannot be
    /// reached, or the cloud does not delete the server; the node stays marked for deletion.
    pub async fn delete_node(&self, id: NodeId, reason: Reason) -> Result<(), NotDone> {
        let node = store::call(self.store, move |s| s.node(id))
            .await
            .map_err(|e| NotDone(e.to_string()))?;
        let mut driver = self.connect(&node.provider).await?;
        let connection = driver.clouds.handle(&node.provider);
        let server = node.external_id.clone();
        let work = executor::delete_node(driver.ctx.clone(), connection, node, server, reason);
        driver
            .drive(work)
            .await
            .map_err(|why| NotDone(format!("node {id}: {why}")))
    }

    /// Deletes an image upload now: marks it for deletion, deletes its template server
    /// (waiting until it is gone) and its cloud image, then removes the row.
    ///
    /// # Errors
    ///
    /// As [`AtOnce::delete_node`]; the upload stays marked for deletion.
    pub async fn delete_upload(&self, id: ImageId, reason: Reason) -> Result<(), NotDone> {
        let upload = store::call(self.store, move |s| s.image(id))
            .await
            .map_err(|e| NotDone(e.to_string()))?;
        let mut driver = self.connect(&upload.provider).await?;
        let connection = driver.clouds.handle(&upload.provider);
        let work = executor::delete_upload(driver.ctx.clone(), connection, upload, reason);
        driver
            .drive(work)
            .await
            .map_err(|why| NotDone(format!("image upload {id}: {why}")))
    }

    /// Connects `provider` alone, for its executors.
    async fn connect(&self, provider: &ProviderName) -> Result<Driver, NotDone> {
        if !self.config.providers.iter().any(|p| &p.name == provider) {
            return Err(NotDone(format!(
                "provider {provider} is not in the config; nodepool cannot reach it"
            )));
        }
        let installation = store::call(self.store, |s| s.installation_id())
            .await
            .map_err(|e| NotDone(e.to_string()))?;
        let mut only = self.config.clone();
        only.providers.retain(|p| &p.name == provider);
        let mut clouds = Clouds::new(
            self.clock.clone(),
            installation.clone(),
            self.connector.clone(),
        )
        .servers_only();
        if let Some((name, error)) = clouds.reconcile(&only).await.into_iter().next() {
            return Err(NotDone(format!("provider {name}: cannot connect: {error}")));
        }
        let ctx = Context {
            store: self.store.clone(),
            clock: self.clock.clone(),
            installation,
            config: Arc::new(only),
        };
        Ok(Driver { clouds, ctx })
    }
}

/// One provider, connected, and what its executors need.
struct Driver {
    clouds: Clouds,
    ctx: Context,
}

impl Driver {
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
