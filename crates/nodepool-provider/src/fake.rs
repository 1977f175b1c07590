//! An in-memory cloud: deterministic, on a virtual clock, with faults on demand.
//!
//! It is a real implementation of [`Provider`], not a double with canned answers: servers
//! boot (becoming ACTIVE `boot_time` after their creation), get fixed addresses on a private
//! network and floating ones from a pool, count against quotas, and are snapshotted into
//! images that become active `snapshot_time` later. Time is whatever the [`Clock`] says, so
//! tests move it by hand and the zero-setup demo runs on the real clock.
//!
//! Faults ([`Fault`]) make the Nth call of an operation fail, make a server go ERROR, leave a
//! snapshot unfinished, or lose the answer to a create that happened anyway. Listings are
//! paginated ([`FakeConfig::page_size`]): every page is a call of its own.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nodepool_model::{ExternalId, ProviderName, Timestamp};

use crate::{
    Address, AddressKind, Clock, CloudImage, ErrorKind, Flavor, FloatingIp, ImageStatus, Limit,
    Limits, Provider, ProviderError, Result, Server, ServerSpec, ServerStatus, op,
};

/// How the fake cloud behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FakeConfig {
    /// From create to ACTIVE.
    pub boot_time: Duration,
    /// From delete to gone.
    pub delete_time: Duration,
    /// From snapshot to an active image.
    pub snapshot_time: Duration,
    /// Instance quota; `None` for unlimited.
    pub max_instances: Option<u64>,
    /// Core quota; `None` for unlimited.
    pub max_cores: Option<u64>,
    /// RAM quota in MB; `None` for unlimited.
    pub max_ram_mb: Option<u64>,
    /// Flavors offered.
    pub flavors: Vec<Flavor>,
    /// Names of the public images servers can boot from.
    pub base_images: Vec<String>,
    /// The floating IP pool's name.
    pub floating_pool: String,
    /// How many entries one page of a listing holds: a listing of more makes one call per
    /// page, each counted (and failing) on its own, as a real cloud's paginated listing does.
    pub page_size: usize,
    /// How long a snapshot's task stays on its server after the image is active (Nova ends
    /// its bookkeeping after the upload). Deleting the server before drops the image, as
    /// Nova does.
    pub snapshot_task_tail: Duration,
    /// How long a create call (server, snapshot, floating IP) takes to answer: the cloud's
    /// API time, spent on the fake's clock before the call does anything.
    pub create_latency: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        let flavor = |id: &str, name: &str, ram_mb, vcpus| Flavor {
            id: id.into(),
            name: name.into(),
            ram_mb,
            vcpus,
        };
        FakeConfig {
            boot_time: Duration::from_secs(5),
            delete_time: Duration::from_secs(1),
            snapshot_time: Duration::from_secs(30),
            max_instances: None,
            max_cores: None,
            max_ram_mb: None,
            flavors: vec![
                flavor("1", "m1.tiny", 512, 1),
                flavor("2", "m1.small", 2048, 1),
                flavor("3", "m1.medium", 4096, 2),
                flavor("4", "m1.large", 8192, 4),
                flavor("5", "performance1-8", 8192, 8),
            ],
            base_images: vec!["Ubuntu 22.04".into(), "CentOS Stream 9".into()],
            floating_pool: "public".into(),
            page_size: 100,
            create_latency: Duration::ZERO,
            snapshot_task_tail: Duration::from_secs(2),
        }
    }
}

/// Something to go wrong, once.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The `nth` call (from 1) of `operation` fails with `kind`.
    Fail {
        /// The operation, one of [`op`](crate::op).
        operation: &'static str,
        /// Which call.
        nth: u64,
        /// How it fails.
        kind: ErrorKind,
    },
    /// The `nth` server created goes ERROR with `message` instead of ACTIVE.
    ServerError {
        /// Which server, counting creates from 1.
        nth: u64,
        /// Its fault message.
        message: String,
    },
    /// The `nth` create call creates the server, but its answer is lost (a timeout).
    LostCreate {
        /// Which call.
        nth: u64,
    },
    /// The `nth` snapshot never becomes active.
    SnapshotNeverFinishes {
        /// Which snapshot, counting from 1.
        nth: u64,
    },
}

/// How long a listing of changes still shows a server that is gone.
const TOMBSTONES_KEPT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct FakeServer {
    server: Server,
    created: Timestamp,
    deleted: Option<Timestamp>,
    fails_with: Option<String>,
    vcpus: u64,
    ram_mb: u64,
    /// The snapshot being taken of it, and when its task ends (`None`: never).
    snapshotting: Option<(ExternalId, Option<Timestamp>)>,
}

#[derive(Debug, Clone)]
struct FakeImage {
    image: CloudImage,
    ready_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct State {
    servers: BTreeMap<ExternalId, FakeServer>,
    /// Servers gone, as listings of changes show them, for [`TOMBSTONES_KEPT`].
    gone: BTreeMap<ExternalId, Server>,
    images: BTreeMap<ExternalId, FakeImage>,
    floating: BTreeMap<ExternalId, FloatingIp>,
    next_id: u64,
    calls: BTreeMap<&'static str, u64>,
    servers_created: u64,
    snapshots_taken: u64,
    faults: Vec<Fault>,
}

/// The in-memory cloud.
#[derive(Debug)]
pub struct FakeProvider {
    name: ProviderName,
    clock: Arc<dyn Clock>,
    config: FakeConfig,
    state: Mutex<State>,
}

impl FakeProvider {
    /// Waits out `create_latency` on the fake's clock.
    async fn answer_delay(&self) {
        if !self.config.create_latency.is_zero() {
            self.clock.sleep(self.config.create_latency).await;
        }
    }

    /// A cloud with `config`'s flavors and base images and nothing else.
    pub fn new(name: ProviderName, clock: Arc<dyn Clock>, config: FakeConfig) -> FakeProvider {
        let mut state = State::default();
        for name in &config.base_images {
            let id = next_id(&mut state);
            let mut image = CloudImage::new(id.clone(), name.clone(), ImageStatus::Active);
            image
                .properties
                .insert("visibility".into(), "public".into());
            state.images.insert(
                id,
                FakeImage {
                    image,
                    ready_at: None,
                },
            );
        }
        FakeProvider {
            name,
            clock,
            config,
            state: Mutex::new(state),
        }
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// The id of the image named `name` (one of the base images, say); not counted as a
    /// call.
    pub fn image_id(&self, name: &str) -> Option<ExternalId> {
        self.lock()
            .images
            .values()
            .find(|i| i.image.name == name)
            .map(|i| i.image.id.clone())
    }

    /// How many calls of `operation` were made.
    pub fn calls(&self, operation: &str) -> u64 {
        self.lock().calls.get(operation).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(
        &self,
        kind: ErrorKind,
        operation: &'static str,
        message: impl Into<String>,
    ) -> ProviderError {
        ProviderError::new(kind, operation, self.name.as_str(), message)
    }

    /// Counts a call, brings the cloud up to the clock, and fails it if a fault says so.
    fn begin(&self, state: &mut State, operation: &'static str) -> Result<u64> {
        let nth = {
            let calls = state.calls.entry(operation).or_insert(0);
            *calls += 1;
            *calls
        };
        self.settle(state);
        let armed = state.faults.iter().position(|f| matches!(f, Fault::Fail { operation: o, nth: n, .. } if *o == operation && *n == nth));
        if let Some(i) = armed
            && let Fault::Fail { kind, .. } = state.faults.remove(i)
        {
            return Err(self.error(kind, operation, format!("injected failure of call {nth}")));
        }
        Ok(nth)
    }

    /// A listing of `items`, one call per page: the first page's call was `begin`'s, the others
    /// are made here, each of which may fail.
    fn pages<T>(
        &self,
        state: &mut State,
        operation: &'static str,
        items: Vec<T>,
    ) -> Result<Vec<T>> {
        let pages = items.len().div_ceil(self.config.page_size.max(1)).max(1);
        for _ in 1..pages {
            self.begin(state, operation)?;
        }
        Ok(items)
    }

    /// Applies what time has done: boots finish, deletes complete, snapshots activate.
    fn settle(&self, state: &mut State) {
        let now = self.clock.now();
        let delete_time = self.config.delete_time;
        let done: Vec<ExternalId> = state
            .servers
            .iter()
            .filter(|(_, s)| {
                s.deleted
                    .is_some_and(|at| at.saturating_add(delete_time) <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            if let Some(mut gone) = state.servers.remove(&id) {
                gone.server.status = ServerStatus::Deleted;
                gone.server.task = None;
                gone.server.updated = Some(now);
                state.gone.insert(id, gone.server);
            }
        }
        state.gone.retain(|_, s| {
            s.updated
                .is_some_and(|at| now.saturating_since(at) < TOMBSTONES_KEPT)
        });
        for s in state.servers.values_mut() {
            let before = (s.server.status.clone(), s.server.task.clone());
            if s.snapshotting
                .as_ref()
                .is_some_and(|(_, until)| until.is_some_and(|at| at <= now))
            {
                s.snapshotting = None;
                s.server.task = None;
            }
            if s.deleted.is_some() {
                s.server.status = ServerStatus::Deleting;
            } else if s.server.status == ServerStatus::Building
                && s.created.saturating_add(self.config.boot_time) <= now
            {
                match &s.fails_with {
                    Some(message) => {
                        s.server.status = ServerStatus::Error;
                        s.server.fault = Some(message.clone());
                    }
                    None => s.server.status = ServerStatus::Active,
                }
            }
            if (s.server.status.clone(), s.server.task.clone()) != before {
                s.server.updated = Some(now);
            }
        }
        for image in state.images.values_mut() {
            if image.image.status == ImageStatus::Pending
                && image.ready_at.is_some_and(|at| at <= now)
            {
                image.image.status = ImageStatus::Active;
            }
        }
    }

    fn take_fault(state: &mut State, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let i = state.faults.iter().position(matches)?;
        Some(state.faults.remove(i))
    }

    fn usage(state: &State) -> (u64, u64, u64) {
        state
            .servers
            .values()
            .filter(|s| s.deleted.is_none())
            .fold((0, 0, 0), |(n, c, r), s| (n + 1, c + s.vcpus, r + s.ram_mb))
    }
}

fn next_id(state: &mut State) -> ExternalId {
    state.next_id += 1;
    // UUID-shaped, so that ids and names are told apart as with a real cloud.
    ExternalId::new(format!("00000000-0000-4000-8000-{:012x}", state.next_id))
}

#[async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    async fn create_server(&self, spec: &ServerSpec) -> Result<Server> {
        self.answer_delay().await;
        let mut state = self.lock();
        let nth = self.begin(&mut state, op::CREATE_SERVER)?;
        let flavor = self
            .config
            .flavors
            .iter()
            .find(|f| f.id == spec.flavor)
            .ok_or_else(|| {
                self.error(
                    ErrorKind::BadRequest,
                    op::CREATE_SERVER,
                    format!("flavor {} not found", spec.flavor),
                )
            })?
            .clone();
        if !state
            .images
            .get(&spec.image)
            .is_some_and(|i| i.image.status == ImageStatus::Active)
        {
            return Err(self.error(
                ErrorKind::BadRequest,
                op::CREATE_SERVER,
                format!("image {} is not an active image", spec.image),
            ));
        }
        let (instances, cores, ram) = Self::usage(&state);
        let over =
            |used: u64, more: u64, max: Option<u64>| max.is_some_and(|max| used + more > max);
        if over(instances, 1, self.config.max_instances)
            || over(cores, flavor.vcpus, self.config.max_cores)
            || over(ram, flavor.ram_mb, self.config.max_ram_mb)
        {
            return Err(self.error(
                ErrorKind::QuotaExceeded,
                op::CREATE_SERVER,
                format!("quota exceeded for instances, cores or ram: {instances} instances, {cores} cores, {ram} MB in use"),
            ));
        }
        state.servers_created += 1;
        let created_nth = state.servers_created;
        let fails_with = match Self::take_fault(
            &mut state,
            |f| matches!(f, Fault::ServerError { nth, .. } if *nth == created_nth),
        ) {
            Some(Fault::ServerError { message, .. }) => Some(message),
            _ => None,
        };
        let id = next_id(&mut state);
        let mut server = Server::new(id.clone(), spec.name.clone(), ServerStatus::Building);
        server.metadata = spec.metadata.clone();
        server.image = Some(spec.image.clone());
        server.flavor = Some(flavor.id.clone());
        server.availability_zone = Some(
            spec.availability_zone
                .clone()
                .unwrap_or_else(|| "nova".into()),
        );
        let n = state.next_id;
        server.addresses.push(Address {
            ip: IpAddr::V4(Ipv4Addr::new(
                10,
                ((n >> 16) & 0xff) as u8,
                ((n >> 8) & 0xff) as u8,
                (n & 0xff) as u8,
            )),
            kind: AddressKind::Fixed,
            network: "private".into(),
        });
        server.updated = Some(self.clock.now());
        let record = FakeServer {
            server: server.clone(),
            created: self.clock.now(),
            deleted: None,
            fails_with,
            vcpus: flavor.vcpus,
            ram_mb: flavor.ram_mb,
            snapshotting: None,
        };
        state.servers.insert(id, record);
        if Self::take_fault(
            &mut state,
            |f| matches!(f, Fault::LostCreate { nth: n } if *n == nth),
        )
        .is_some()
        {
            return Err(self.error(
                ErrorKind::Transient,
                op::CREATE_SERVER,
                "timed out waiting for the answer",
            ));
        }
        Ok(server)
    }

    async fn get_server(&self, id: &ExternalId) -> Result<Server> {
        let mut state = self.lock();
        self.begin(&mut state, op::GET_SERVER)?;
        state
            .servers
            .get(id)
            .map(|s| s.server.clone())
            .ok_or_else(|| {
                self.error(
                    ErrorKind::NotFound,
                    op::GET_SERVER,
                    format!("server {id} not found"),
                )
            })
    }

    async fn list_servers(&self) -> Result<Vec<Server>> {
        let mut state = self.lock();
        self.begin(&mut state, op::LIST_SERVERS)?;
        let servers = state.servers.values().map(|s| s.server.clone()).collect();
        self.pages(&mut state, op::LIST_SERVERS, servers)
    }

    async fn list_servers_changed(&self, since: Timestamp) -> Result<Vec<Server>> {
        let mut state = self.lock();
        self.begin(&mut state, op::LIST_SERVERS_CHANGED)?;
        let changed = |s: &&Server| s.updated.is_some_and(|at| at >= since);
        let servers = state
            .servers
            .values()
            .map(|s| &s.server)
            .chain(state.gone.values())
            .filter(changed)
            .cloned()
            .collect();
        self.pages(&mut state, op::LIST_SERVERS_CHANGED, servers)
    }

    async fn delete_server(&self, id: &ExternalId) -> Result<()> {
        let mut state = self.lock();
        self.begin(&mut state, op::DELETE_SERVER)?;
        let now = self.clock.now();
        let server = state.servers.get_mut(id).ok_or_else(|| {
            self.error(
                ErrorKind::NotFound,
                op::DELETE_SERVER,
                format!("server {id} not found"),
            )
        })?;
        server.deleted.get_or_insert(now);
        server.server.status = ServerStatus::Deleting;
        server.server.updated = Some(now);
        // Deleted while it snapshots: the snapshot fails and its image goes.
        if let Some((image, _)) = server.snapshotting.take() {
            server.server.task = Some("deleting".into());
            state.images.remove(&image);
        }
        // Floating IPs stay allocated but are unmapped, as on a real cloud.
        for ip in state
            .floating
            .values_mut()
            .filter(|ip| ip.server.as_ref() == Some(id))
        {
            ip.server = None;
        }
        self.settle(&mut state);
        Ok(())
    }

    async fn create_floating_ip(
        &self,
        server: &ExternalId,
        pool: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<FloatingIp> {
        self.answer_delay().await;
        let mut state = self.lock();
        self.begin(&mut state, op::CREATE_FLOATING_IP)?;
        if pool != self.config.floating_pool {
            return Err(self.error(
                ErrorKind::NotFound,
                op::CREATE_FLOATING_IP,
                format!("no floating IP pool {pool:?}"),
            ));
        }
        if state
            .servers
            .get(server)
            .is_none_or(|s| s.deleted.is_some())
        {
            return Err(self.error(
                ErrorKind::NotFound,
                op::CREATE_FLOATING_IP,
                format!("server {server} not found"),
            ));
        }
        let id = next_id(&mut state);
        let n = state.next_id;
        let ip = IpAddr::V4(Ipv4Addr::new(
            203,
            0,
            ((n >> 8) & 0xff) as u8,
            (n & 0xff) as u8,
        ));
        let floating = FloatingIp {
            id: id.clone(),
            ip,
            server: Some(server.clone()),
            metadata: metadata.clone(),
        };
        state.floating.insert(id, floating.clone());
        let now = self.clock.now();
        if let Some(s) = state.servers.get_mut(server) {
            s.server.addresses.push(Address {
                ip,
                kind: AddressKind::Floating,
                network: "private".into(),
            });
            s.server.updated = Some(now);
        }
        Ok(floating)
    }

    async fn list_floating_ips(&self) -> Result<Vec<FloatingIp>> {
        let mut state = self.lock();
        self.begin(&mut state, op::LIST_FLOATING_IPS)?;
        let ips = state.floating.values().cloned().collect();
        self.pages(&mut state, op::LIST_FLOATING_IPS, ips)
    }

    async fn delete_floating_ip(&self, id: &ExternalId) -> Result<()> {
        let mut state = self.lock();
        self.begin(&mut state, op::DELETE_FLOATING_IP)?;
        let ip = state.floating.remove(id).ok_or_else(|| {
            self.error(
                ErrorKind::NotFound,
                op::DELETE_FLOATING_IP,
                format!("floating IP {id} not found"),
            )
        })?;
        if let Some(server) = ip.server.and_then(|s| state.servers.get_mut(&s)) {
            server.server.addresses.retain(|a| a.ip != ip.ip);
        }
        Ok(())
    }

    async fn create_image(
        &self,
        server: &ExternalId,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ExternalId> {
        self.answer_delay().await;
        let mut state = self.lock();
        self.begin(&mut state, op::CREATE_IMAGE)?;
        match state.servers.get(server) {
            Some(s) if s.snapshotting.is_some() => {
                let message = format!("server {server} is already being snapshotted");
                return Err(self.error(ErrorKind::BadRequest, op::CREATE_IMAGE, message));
            }
            Some(s) if s.server.status == ServerStatus::Active => {}
            Some(s) => {
                let message = format!(
                    "server {server} is {}; only an active server can be snapshotted",
                    s.server.status
                );
                return Err(self.error(ErrorKind::BadRequest, op::CREATE_IMAGE, message));
            }
            None => {
                return Err(self.error(
                    ErrorKind::NotFound,
                    op::CREATE_IMAGE,
                    format!("server {server} not found"),
                ));
            }
        }
        state.snapshots_taken += 1;
        let taken = state.snapshots_taken;
        let never = Self::take_fault(
            &mut state,
            |f| matches!(f, Fault::SnapshotNeverFinishes { nth } if *nth == taken),
        )
        .is_some();
        let id = next_id(&mut state);
        let mut image = CloudImage::new(id.clone(), name, ImageStatus::Pending);
        // As Nova makes a snapshot: the properties of the image the server booted from,
        // then the ones asked for, then which server it is a snapshot of.
        let booted_from = state
            .servers
            .get(server)
            .and_then(|s| s.server.image.clone())
            .and_then(|image| state.images.get(&image))
            .map(|image| image.image.properties.clone())
            .unwrap_or_default();
        image.properties = booted_from;
        image.properties.extend(metadata.clone());
        image
            .properties
            .insert("image_type".into(), "snapshot".into());
        image
            .properties
            .insert(crate::SOURCE_SERVER_KEY.into(), server.to_string());
        let ready_at = (!never).then(|| self.clock.now().saturating_add(self.config.snapshot_time));
        if let Some(s) = state.servers.get_mut(server) {
            let task_ends = ready_at.map(|at| at.saturating_add(self.config.snapshot_task_tail));
            s.snapshotting = Some((id.clone(), task_ends));
            s.server.task = Some("image_uploading".into());
            s.server.updated = Some(self.clock.now());
        }
        state
            .images
            .insert(id.clone(), FakeImage { image, ready_at });
        Ok(id)
    }

    async fn get_image(&self, id: &ExternalId) -> Result<CloudImage> {
        let mut state = self.lock();
        self.begin(&mut state, op::GET_IMAGE)?;
        state
            .images
            .get(id)
            .map(|i| i.image.clone())
            .ok_or_else(|| {
                self.error(
                    ErrorKind::NotFound,
                    op::GET_IMAGE,
                    format!("image {id} not found"),
                )
            })
    }

    async fn list_images(&self) -> Result<Vec<CloudImage>> {
        let mut state = self.lock();
        self.begin(&mut state, op::LIST_IMAGES)?;
        let images = state.images.values().map(|i| i.image.clone()).collect();
        self.pages(&mut state, op::LIST_IMAGES, images)
    }

    async fn delete_image(&self, id: &ExternalId) -> Result<()> {
        let mut state = self.lock();
        self.begin(&mut state, op::DELETE_IMAGE)?;
        state.images.remove(id).map(|_| ()).ok_or_else(|| {
            self.error(
                ErrorKind::NotFound,
                op::DELETE_IMAGE,
                format!("image {id} not found"),
            )
        })
    }

    async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        let mut state = self.lock();
        self.begin(&mut state, op::LIST_FLAVORS)?;
        Ok(self.config.flavors.clone())
    }

    async fn limits(&self) -> Result<Limits> {
        let mut state = self.lock();
        self.begin(&mut state, op::LIMITS)?;
        let (instances, cores, ram) = Self::usage(&state);
        Ok(Limits {
            instances: Limit {
                max: self.config.max_instances,
                used: instances,
            },
            cores: Limit {
                max: self.config.max_cores,
                used: cores,
            },
            ram_mb: Limit {
                max: self.config.max_ram_mb,
                used: ram,
            },
        })
    }
}
