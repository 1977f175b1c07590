//! What nodepool needs from a cloud.
//!
//! [`Provider`] is the whole interface: servers, floating IPs, images (snapshots), flavors
//! and absolute limits. Implementations: [`FakeProvider`] (here, in memory) and the OpenStack
//! driver (`nodepool-openstack`). Every implementation runs the same conformance suite
//! (`conformance`, feature `testing`).
//!
//! Around any provider, [`Limited`] passes every call through the provider's rate limiter
//! (the 2014 `rate`: the least time between two calls), honours the cloud's retry-after,
//! retries what is safe to retry, and counts calls, errors and latencies per operation.
//!
//! Every resource nodepool creates carries ownership [`Tags`]; [`classify`] tells ours,
//! another installation's and foreign resources apart.
//!
//! ```
//! use std::sync::Arc;
//! use nodepool_model::{ImageId, InstallationId, NodeId, Timestamp};
//! use nodepool_provider::{
//!     classify, FakeConfig, FakeProvider, ManualClock, Ownership, Owner, Provider, ServerSpec, Tags,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(1_400_000_000)));
//! let cloud = FakeProvider::new("fake".parse()?, clock.clone(), FakeConfig::default());
//! let image = cloud.list_images().await?.remove(0).id;
//! let flavor = cloud.list_flavors().await?.remove(0).id;
//! let tags = Tags { installation: InstallationId::new("abc"), provider: "fake".parse()?, owner: Owner::Node(NodeId::new(7)) };
//! let mut spec = ServerSpec::new("node-7", flavor, image);
//! tags.apply(&mut spec.metadata);
//! let server = cloud.create_server(&spec).await?;
//! clock.advance(std::time::Duration::from_secs(60));
//! let server = cloud.get_server(&server.id).await?;
//! assert_eq!(server.status, nodepool_provider::ServerStatus::Active);
//! assert_eq!(
//!     classify(&server.metadata, &InstallationId::new("abc")),
//!     Ownership::Ours { provider: "fake".into(), owner: Owner::Node(NodeId::new(7)) }
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod error;
mod fake;
mod limiter;
mod tags;
mod types;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use nodepool_model::{ExternalId, ProviderName, Timestamp};

pub use clock::{Clock, ManualClock};
pub use error::{ErrorKind, ProviderError, Result};
pub use fake::{FakeConfig, FakeProvider, Fault};
pub use limiter::{Limited, OperationStats};
pub use tags::{
    DESCRIPTION_LIMIT, IMAGE_KEY, INSTALLATION_KEY, NODE_KEY, Owner, Ownership, PROVIDER_KEY,
    SOURCE_SERVER_KEY, TEMPLATE_KEY, Tags, classify, from_description, to_description,
};
pub use types::{
    Address, AddressKind, CloudImage, Flavor, FloatingIp, ImageStatus, Limit, Limits, NetworkRef,
    Server, ServerSpec, ServerStatus, pick_flavor,
};

/// The names of the operations, as errors and statistics report them.
pub mod op {
    /// [`Provider::create_server`](super::Provider::create_server).
    pub const CREATE_SERVER: &str = "create_server";
    /// [`Provider::get_server`](super::Provider::get_server).
    pub const GET_SERVER: &str = "get_server";
    /// [`Provider::list_servers`](super::Provider::list_servers).
    pub const LIST_SERVERS: &str = "list_servers";
    /// [`Provider::list_servers_changed`](super::Provider::list_servers_changed).
    pub const LIST_SERVERS_CHANGED: &str = "list_servers_changed";
    /// [`Provider::delete_server`](super::Provider::delete_server).
    pub const DELETE_SERVER: &str = "delete_server";
    /// [`Provider::create_floating_ip`](super::Provider::create_floating_ip).
    pub const CREATE_FLOATING_IP: &str = "create_floating_ip";
    /// [`Provider::list_floating_ips`](super::Provider::list_floating_ips).
    pub const LIST_FLOATING_IPS: &str = "list_floating_ips";
    /// [`Provider::delete_floating_ip`](super::Provider::delete_floating_ip).
    pub const DELETE_FLOATING_IP: &str = "delete_floating_ip";
    /// [`Provider::create_image`](super::Provider::create_image).
    pub const CREATE_IMAGE: &str = "create_image";
    /// [`Provider::get_image`](super::Provider::get_image).
    pub const GET_IMAGE: &str = "get_image";
    /// [`Provider::list_images`](super::Provider::list_images).
    pub const LIST_IMAGES: &str = "list_images";
    /// [`Provider::delete_image`](super::Provider::delete_image).
    pub const DELETE_IMAGE: &str = "delete_image";
    /// [`Provider::list_flavors`](super::Provider::list_flavors).
    pub const LIST_FLAVORS: &str = "list_flavors";
    /// [`Provider::limits`](super::Provider::limits).
    pub const LIMITS: &str = "limits";
}

/// One cloud account, as nodepool uses it.
///
/// Every method is one logical cloud operation; listings return every page.
/// Errors carry an [`ErrorKind`] to decide on.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's name in the config.
    fn name(&self) -> &ProviderName;

    /// Creates a server; it starts `Building`.
    async fn create_server(&self, spec: &ServerSpec) -> Result<Server>;

    /// One server.
    async fn get_server(&self, id: &ExternalId) -> Result<Server>;

    /// Every server of the project.
    async fn list_servers(&self) -> Result<Vec<Server>>;

    /// The servers that changed at or after `since`, a time by the cloud's clock (read off
    /// an earlier listing's [`Server::updated`]); those deleted since are listed as
    /// [`ServerStatus::Deleted`]. Between full listings this keeps a busy cloud's listings
    /// small.
    async fn list_servers_changed(&self, since: Timestamp) -> Result<Vec<Server>>;

    /// Deletes a server (with nothing attached to it). It may linger as `Deleting` for a while.
    async fn delete_server(&self, id: &ExternalId) -> Result<()>;

    /// Takes a floating IP from `pool`, tagged with `metadata`, and maps it onto `server`.
    async fn create_floating_ip(
        &self,
        server: &ExternalId,
        pool: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<FloatingIp>;

    /// Every floating IP of the project.
    async fn list_floating_ips(&self) -> Result<Vec<FloatingIp>>;

    /// Gives a floating IP back to its pool.
    async fn delete_floating_ip(&self, id: &ExternalId) -> Result<()>;

    /// Snapshots `server` into a new image named `name` with `metadata`; returns its id at once
    /// (the image becomes active later).
    async fn create_image(
        &self,
        server: &ExternalId,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ExternalId>;

    /// One image.
    async fn get_image(&self, id: &ExternalId) -> Result<CloudImage>;

    /// Every image the project can see (its own and public ones), whatever their status.
    async fn list_images(&self) -> Result<Vec<CloudImage>>;

    /// Deletes an image.
    async fn delete_image(&self, id: &ExternalId) -> Result<()>;

    /// Every flavor.
    async fn list_flavors(&self) -> Result<Vec<Flavor>>;

    /// The project's absolute limits and usage.
    async fn limits(&self) -> Result<Limits>;
}

#[cfg(test)]
mod tests;

/// A shared provider is a provider: the daemon keeps each behind an `Arc` and wraps it in a
/// [`Limited`].
#[async_trait]
impl<P: Provider + ?Sized> Provider for std::sync::Arc<P> {
    fn name(&self) -> &ProviderName {
        (**self).name()
    }

    async fn create_server(&self, spec: &ServerSpec) -> Result<Server> {
        (**self).create_server(spec).await
    }

    async fn get_server(&self, id: &ExternalId) -> Result<Server> {
        (**self).get_server(id).await
    }

    async fn list_servers(&self) -> Result<Vec<Server>> {
        (**self).list_servers().await
    }

    async fn list_servers_changed(&self, since: Timestamp) -> Result<Vec<Server>> {
        (**self).list_servers_changed(since).await
    }

    async fn delete_server(&self, id: &ExternalId) -> Result<()> {
        (**self).delete_server(id).await
    }

    async fn create_floating_ip(
        &self,
        server: &ExternalId,
        pool: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<FloatingIp> {
        (**self).create_floating_ip(server, pool, metadata).await
    }

    async fn list_floating_ips(&self) -> Result<Vec<FloatingIp>> {
        (**self).list_floating_ips().await
    }

    async fn delete_floating_ip(&self, id: &ExternalId) -> Result<()> {
        (**self).delete_floating_ip(id).await
    }

    async fn create_image(
        &self,
        server: &ExternalId,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ExternalId> {
        (**self).create_image(server, name, metadata).await
    }

    async fn get_image(&self, id: &ExternalId) -> Result<CloudImage> {
        (**self).get_image(id).await
    }

    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        (**self).list_images().await
    }

    async fn delete_image(&self, id: &ExternalId) -> Result<()> {
        (**self).delete_image(id).await
    }

    async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        (**self).list_flavors().await
    }

    async fn limits(&self) -> Result<Limits> {
        (**self).limits().await
    }
}
