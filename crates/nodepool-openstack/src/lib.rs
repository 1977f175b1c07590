//! The OpenStack driver: [`OpenStackProvider`] implements [`Provider`] against Keystone v3,
//! Nova, Glance and Neutron.
//!
//! `osauth` logs in and finds endpoints in the service catalogue; the requests and their JSON
//! are this crate's own. That choice is deliberate: the `openstack` crate's server create
//! verifies the flavor, image, key pair and networks with one extra request each and reloads
//! the server afterwards (five calls where the API needs one, all of them around nodepool's
//! rate limiter), has no way to set user data or a config drive, fails a whole image listing
//! when one image is `uploading`, and drops image properties.
//!
//! Every operation is the requests it needs and no more: a create is one `POST` (its answer
//! is the new server, building), a snapshot is one `createImage` at microversion 2.45 (whose
//! answer carries the image id), a listing follows `limit` and `marker` until an empty page.

mod auth;
mod http;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use nodepool_config::{Environment, OpenStackSettings};
use nodepool_model::{ExternalId, ProviderName, Timestamp};
use nodepool_provider::{
    CloudImage, ErrorKind, Flavor, FloatingIp, Limits, NetworkRef, Provider, Result, Server,
    ServerSpec, ServerStatus, op, to_description,
};
use osauth::services::{COMPUTE, IMAGE, NETWORK};
use serde_json::{Value, json};

use http::Op;

/// Items asked for per page of a listing.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// How long one request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One OpenStack project, as nodepool uses it. Its `Debug` leaves the session out: it holds
/// the credentials.
pub struct OpenStackProvider {
    name: ProviderName,
    session: osauth::Session,
    page_size: usize,
    timeout: Duration,
    /// Network ids by (name, external), looked up once: every launch names its networks.
    /// Forgotten when a create fails, in case a network was replaced under its name.
    network_ids: std::sync::Mutex<BTreeMap<(String, bool), String>>,
}

impl std::fmt::Debug for OpenStackProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackProvider")
            .field("name", &self.name)
            .field("page_size", &self.page_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OpenStackProvider {
    /// Logs in with a provider's settings (clouds.yaml looked up through `env`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Auth`] when the credentials are refused; [`ErrorKind::Transient`] when
    /// Keystone cannot be reached; [`ErrorKind::Fatal`] for unusable settings.
    pub async fn connect(
        name: ProviderName,
        settings: &OpenStackSettings,
        env: &Environment,
    ) -> Result<Self> {
        let op = Op {
            name: "connect",
            provider: name.as_str(),
        };
        let config =
            auth::cloud_config(settings, env).map_err(|e| op.error(ErrorKind::Fatal, e.0))?;
        // The error names the key, never its value (serde's messages quote values).
        let config: osauth::CloudConfig =
            serde_path_to_error::deserialize(config).map_err(|e| {
                op.error(
                    ErrorKind::Fatal,
                    format!(
                        "unusable cloud configuration: `{}` is not of the form or type expected",
                        e.path()
                    ),
                )
            })?;
        let session = config
            .create_session()
            .await
            .map_err(|e| op.osauth_error(e))?;
        Ok(Self::from_session(name, session))
    }

    /// A provider on an existing session.
    pub fn from_session(name: ProviderName, session: osauth::Session) -> Self {
        OpenStackProvider {
            name,
            session,
            page_size: DEFAULT_PAGE_SIZE,
            timeout: DEFAULT_TIMEOUT,
            network_ids: Default::default(),
        }
    }

    /// Sets how many items a listing asks for per page.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Sets how long one request may take (the config's `api-timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn op(&self, name: &'static str) -> Op<'_> {
        Op {
            name,
            provider: self.name.as_str(),
        }
    }

    /// Every page of a listing at `path`: `limit` and `marker` until an empty page. A short
    /// page is not the end: Nova returns short pages while servers are still being scheduled.
    /// A page of only items already seen ends the listing with a transient error (asked
    /// again by the rate limiter) rather than looping for ever.
    async fn pages<S, B, T>(
        &self,
        op: Op<'_>,
        service: S,
        path: &[&str],
        filters: &[(&'static str, String)],
        items: fn(B) -> Vec<T>,
        id: fn(&T) -> String,
    ) -> Result<Vec<T>>
    where
        S: osauth::services::ServiceType + Send + Sync + Clone,
        B: serde::de::DeserializeOwned,
        T: Send,
    {
        let mut all: Vec<T> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut marker: Option<String> = None;
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", self.page_size.to_string()));
            if let Some(marker) = &marker {
                query.push(("marker", marker.clone()));
            }
            let request = self
                .session
                .get(service.clone(), path)
                .query(&query)
                .timeout(self.timeout);
            let page = items(op.json::<S, B>(request).await?);
            if page.is_empty() {
                return Ok(all);
            }
            let mut new = 0;
            for item in page {
                if seen.insert(id(&item)) {
                    new += 1;
                    all.push(item);
                }
            }
            if new == 0 {
                // Nova does this when the marker was a server that moved from scheduling into
                // a cell between two pages; a cloud that ignores markers does it always. The
                // listing is worth asking again (the rate limiter retries it), never looping.
                return Err(op.error(
                    ErrorKind::Transient,
                    "the cloud answered a page with only servers already listed (the marker moved under it, or it ignores markers)",
                ));
            }
            marker = all.last().map(id);
        }
    }

    async fn network_id(&self, op: Op<'_>, name: &str, external: bool) -> Result<String> {
        let key = (name.to_owned(), external);
        if let Some(id) = self.known_networks().get(&key) {
            return Ok(id.clone());
        }
        let id = self.look_up_network(op, name, external).await?;
        self.known_networks().insert(key, id.clone());
        Ok(id)
    }

    fn known_networks(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, bool), String>> {
        self.network_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn look_up_network(&self, op: Op<'_>, name: &str, external: bool) -> Result<String> {
        let mut query = vec![("name", name.to_owned())];
        if external {
            query.push(("router:external", "true".to_owned()));
        }
        let request = self
            .session
            .get(NETWORK, &["networks"])
            .query(&query)
            .timeout(self.timeout);
        let body: wire::NetworksBody = op.json(request).await?;
        match body.networks.as_slice() {
            [network] => Ok(network.id.clone()),
            [] => Err(op.error(ErrorKind::NotFound, format!("no network named {name:?}"))),
            _ => Err(op.error(
                ErrorKind::BadRequest,
                format!("more than one network is named {name:?}; use its id"),
            )),
        }
    }

    async fn ports(&self, op: Op<'_>, device: Option<&ExternalId>) -> Result<Vec<wire::WirePort>> {
        let mut query = vec![
            ("fields", "id".to_owned()),
            ("fields", "device_id".to_owned()),
        ];
        if let Some(device) = device {
            query.push(("device_id", device.to_string()));
        }
        let request = self
            .session
            .get(NETWORK, &["ports"])
            .query(&query)
            .timeout(self.timeout);
        let body: wire::PortsBody = op.json(request).await?;
        Ok(body.ports)
    }
}

#[async_trait]
impl Provider for OpenStackProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    async fn create_server(&self, spec: &ServerSpec) -> Result<Server> {
        let op = self.op(op::CREATE_SERVER);
        let mut networks = Vec::with_capacity(spec.networks.len());
        for network in &spec.networks {
            let id = match network {
                NetworkRef::Id(id) => id.clone(),
                NetworkRef::Name(name) => self.network_id(op, name, false).await?,
            };
            networks.push(json!({"uuid": id}));
        }
        let mut server = json!({
            "name": spec.name,
            "flavorRef": spec.flavor,
            "imageRef": spec.image.as_str(),
            "metadata": spec.metadata,
            // Since 2.37 a server needs networks: "auto" lets the cloud give it one.
            "networks": if networks.is_empty() { json!("auto") } else { Value::Array(networks) },
        });
        if let Some(key) = &spec.key_name {
            server["key_name"] = json!(key);
        }
        if let Some(az) = &spec.availability_zone {
            server["availability_zone"] = json!(az);
        }
        if let Some(data) = &spec.user_data {
            server["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
        }
        if spec.config_drive {
            server["config_drive"] = json!(true);
        }
        let request = self
            .session
            .post(COMPUTE, &["servers"])
            .api_version((2, 37))
            .json(&json!({"server": server}))
            .timeout(self.timeout);
        let created: wire::CreatedServerBody = match op.json(request).await {
            Ok(created) => created,
            Err(error) => {
                self.known_networks().clear();
                return Err(error);
            }
        };
        let mut server = Server::new(
            ExternalId::new(created.server.id),
            spec.name.clone(),
            ServerStatus::Building,
        );
        server.metadata = spec.metadata.clone();
        server.image = Some(spec.image.clone());
        server.flavor = Some(spec.flavor.clone());
        server.availability_zone = spec.availability_zone.clone();
        Ok(server)
    }

    async fn get_server(&self, id: &ExternalId) -> Result<Server> {
        let op = self.op(op::GET_SERVER);
        let request = self
            .session
            .get(COMPUTE, &["servers", id.as_str()])
            .timeout(self.timeout);
        let body: wire::ServerBody = op.json(request).await?;
        Ok(body.server.into_server())
    }

    async fn list_servers(&self) -> Result<Vec<Server>> {
        let op = self.op(op::LIST_SERVERS);
        self.pages(
            op,
            COMPUTE,
            &["servers", "detail"],
            &[],
            servers_of,
            |server: &Server| server.id.to_string(),
        )
        .await
    }

    async fn list_servers_changed(&self, since: Timestamp) -> Result<Vec<Server>> {
        let op = self.op(op::LIST_SERVERS_CHANGED);
        // Nova reads `changes-since` as "updated at or after", deleted servers included.
        let since = since.to_datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        self.pages(
            op,
            COMPUTE,
            &["servers", "detail"],
            &[("changes-since", since)],
            servers_of,
            |server: &Server| server.id.to_string(),
        )
        .await
    }

    async fn delete_server(&self, id: &ExternalId) -> Result<()> {
        let op = self.op(op::DELETE_SERVER);
        op.send(
            self.session
                .delete(COMPUTE, &["servers", id.as_str()])
                .timeout(self.timeout),
        )
        .await?;
        Ok(())
    }

    async fn create_floating_ip(
        &self,
        server: &ExternalId,
        pool: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<FloatingIp> {
        let op = self.op(op::CREATE_FLOATING_IP);
        let network = self.network_id(op, pool, true).await?;
        let ports = self.ports(op, Some(server)).await?;
        let port = ports
            .first()
            .ok_or_else(|| op.error(ErrorKind::NotFound, format!("server {server} has no port")))?;
        let request = self
            .session
            .post(NETWORK, &["floatingips"])
            .json(&json!({"floatingip": {
                "floating_network_id": network,
                "port_id": port.id,
                "description": to_description(metadata),
            }}))
            .timeout(self.timeout);
        let body: wire::FloatingIpBody = match op.json(request).await {
            Ok(body) => body,
            Err(error) => {
                self.known_networks().clear();
                return Err(error);
            }
        };
        body.floatingip
            .into_floating_ip(&ports)
            .ok_or_else(|| op.error(ErrorKind::Fatal, "the floating IP has no valid address"))
    }

    async fn list_floating_ips(&self) -> Result<Vec<FloatingIp>> {
        let op = self.op(op::LIST_FLOATING_IPS);
        let request = self
            .session
            .get(NETWORK, &["floatingips"])
            .timeout(self.timeout);
        let body: wire::FloatingIpsBody = op.json(request).await?;
        let ports = self.ports(op, None).await?;
        Ok(body
            .floatingips
            .into_iter()
            .filter_map(|ip| ip.into_floating_ip(&ports))
            .collect())
    }

    async fn delete_floating_ip(&self, id: &ExternalId) -> Result<()> {
        let op = self.op(op::DELETE_FLOATING_IP);
        op.send(
            self.session
                .delete(NETWORK, &["floatingips", id.as_str()])
                .timeout(self.timeout),
        )
        .await?;
        Ok(())
    }

    async fn create_image(
        &self,
        server: &ExternalId,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ExternalId> {
        let op = self.op(op::CREATE_IMAGE);
        // From 2.45 on, the answer carries the new image's id.
        let request = self
            .session
            .post(COMPUTE, &["servers", server.as_str(), "action"])
            .api_version((2, 45))
            .json(&json!({"createImage": {"name": name, "metadata": metadata}}))
            .timeout(self.timeout);
        let body: wire::CreatedImageBody = op.json(request).await?;
        Ok(ExternalId::new(body.image_id))
    }

    async fn get_image(&self, id: &ExternalId) -> Result<CloudImage> {
        let op = self.op(op::GET_IMAGE);
        let request = self
            .session
            .get(IMAGE, &["images", id.as_str()])
            .timeout(self.timeout);
        let object: serde_json::Map<String, Value> = op.json(request).await?;
        wire::image_from_json(object)
            .ok_or_else(|| op.error(ErrorKind::Fatal, "an image without an id"))
    }

    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        let op = self.op(op::LIST_IMAGES);
        self.pages(
            op,
            IMAGE,
            &["images"],
            &[],
            |body: wire::ImagesBody| {
                body.images
                    .into_iter()
                    .filter_map(wire::image_from_json)
                    .collect()
            },
            |image: &CloudImage| image.id.to_string(),
        )
        .await
    }

    async fn delete_image(&self, id: &ExternalId) -> Result<()> {
        let op = self.op(op::DELETE_IMAGE);
        op.send(
            self.session
                .delete(IMAGE, &["images", id.as_str()])
                .timeout(self.timeout),
        )
        .await?;
        Ok(())
    }

    async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        let op = self.op(op::LIST_FLAVORS);
        let request = self
            .session
            .get(COMPUTE, &["flavors", "detail"])
            .timeout(self.timeout);
        let body: wire::FlavorsBody = op.json(request).await?;
        Ok(body.flavors.into_iter().map(Flavor::from).collect())
    }

    async fn limits(&self) -> Result<Limits> {
        let op = self.op(op::LIMITS);
        let request = self.session.get(COMPUTE, &["limits"]).timeout(self.timeout);
        let body: wire::LimitsBody = op.json(request).await?;
        Ok(body.into_limits())
    }
}

/// The servers of one page of `servers/detail`.
fn servers_of(body: wire::ServersBody) -> Vec<Server> {
    body.servers
        .into_iter()
        .map(wire::WireServer::into_server)
        .collect()
}

#[cfg(test)]
mod tests;
