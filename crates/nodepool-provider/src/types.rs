//! What a cloud is asked for and what it answers, in provider-neutral terms.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use nodepool_model::{ExternalId, Timestamp};

/// A network to attach a server to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkRef {
    /// By the cloud's id.
    Id(String),
    /// By name.
    Name(String),
}

/// Everything needed to create a server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerSpec {
    /// The server's name (its host name).
    pub name: String,
    /// The flavor's id.
    pub flavor: String,
    /// The image to boot.
    pub image: ExternalId,
    /// An existing key pair to install.
    pub key_name: Option<String>,
    /// Networks to attach, in order; empty lets the cloud choose.
    pub networks: Vec<NetworkRef>,
    /// The availability zone; `None` lets the cloud choose.
    pub availability_zone: Option<String>,
    /// Metadata, including nodepool's ownership tags.
    pub metadata: BTreeMap<String, String>,
    /// Data for cloud-init.
    pub user_data: Option<String>,
    /// Whether to attach a config drive.
    pub config_drive: bool,
}

impl ServerSpec {
    /// A spec with the required parts; the rest empty.
    pub fn new(
        name: impl Into<String>,
        flavor: impl Into<String>,
        image: ExternalId,
    ) -> ServerSpec {
        ServerSpec {
            name: name.into(),
            flavor: flavor.into(),
            image,
            key_name: None,
            networks: Vec::new(),
            availability_zone: None,
            metadata: BTreeMap::new(),
            user_data: None,
            config_drive: false,
        }
    }
}

/// Where a server is in the cloud's eyes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerStatus {
    /// Being built.
    Building,
    /// Running.
    Active,
    /// Failed; the server's `fault` says why.
    Error,
    /// Being deleted.
    Deleting,
    /// Gone: only a listing of changes ([`Provider::list_servers_changed`]) shows a server
    /// deleted since.
    ///
    /// [`Provider::list_servers_changed`]: crate::Provider::list_servers_changed
    Deleted,
    /// Any other status, as the cloud spelled it.
    Other(String),
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerStatus::Building => f.write_str("BUILD"),
            ServerStatus::Active => f.write_str("ACTIVE"),
            ServerStatus::Error => f.write_str("ERROR"),
            ServerStatus::Deleting => f.write_str("DELETING"),
            ServerStatus::Deleted => f.write_str("DELETED"),
            ServerStatus::Other(s) => f.write_str(s),
        }
    }
}

/// How an address reaches a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    /// On a network the server is plugged into.
    Fixed,
    /// A floating IP mapped onto it.
    Floating,
}

/// One address of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// The address.
    pub ip: IpAddr,
    /// Fixed or floating.
    pub kind: AddressKind,
    /// The network's name.
    pub network: String,
}

fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            // 100.64.0.0/10 is carrier-grade NAT space: shared, not public.
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            v4.is_private() || v4.is_link_local() || v4.is_loopback() || shared
        }
        IpAddr::V6(v6) => v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// A server as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Server {
    /// The cloud's id.
    pub id: ExternalId,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: ServerStatus,
    /// Its addresses.
    pub addresses: Vec<Address>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// Why it failed, when its status is `Error`.
    pub fault: Option<String>,
    /// The image it booted from.
    pub image: Option<ExternalId>,
    /// Its flavor's id.
    pub flavor: Option<String>,
    /// Its availability zone.
    pub availability_zone: Option<String>,
    /// The cloud's task under way on it (`image_uploading` while a snapshot is taken), if
    /// any. A server must not be deleted while it snapshots: the cloud drops the image.
    pub task: Option<String>,
    /// When it last changed, by the cloud's clock (listings of changes start from it).
    pub updated: Option<Timestamp>,
}

impl Server {
    /// A server with no addresses, metadata or fault.
    pub fn new(id: ExternalId, name: impl Into<String>, status: ServerStatus) -> Server {
        Server {
            id,
            name: name.into(),
            status,
            addresses: Vec::new(),
            metadata: BTreeMap::new(),
            fault: None,
            image: None,
            flavor: None,
            availability_zone: None,
            task: None,
            updated: None,
        }
    }

    /// The address the world reaches it at, as 2014 nodepool chose it: a floating IP, else a
    /// fixed IPv4 address that is not private, else a fixed IPv6 one that is not local.
    pub fn public_ip(&self) -> Option<IpAddr> {
        let floating = self
            .addresses
            .iter()
            .find(|a| a.kind == AddressKind::Floating);
        let public = |v4: bool| {
            self.addresses.iter().find(|a| {
                a.kind == AddressKind::Fixed && a.ip.is_ipv4() == v4 && !is_private(&a.ip)
            })
        };
        floating
            .or_else(|| public(true))
            .or_else(|| public(false))
            .map(|a| a.ip)
    }

    /// Its first private fixed address.
    pub fn private_ip(&self) -> Option<IpAddr> {
        self.addresses
            .iter()
            .find(|a| a.kind == AddressKind::Fixed && is_private(&a.ip))
            .map(|a| a.ip)
    }
}

/// Where an image is in the cloud's eyes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageStatus {
    /// Created, no data yet (`queued`), or receiving it (`saving`, `uploading`, `importing`).
    Pending,
    /// Usable.
    Active,
    /// Failed (`killed`).
    Failed,
    /// Being deleted or gone (`deleted`, `pending_delete`).
    Deleted,
    /// Any other status, as the cloud spelled it.
    Other(String),
}

/// An image as the cloud reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloudImage {
    /// The cloud's id.
    pub id: ExternalId,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: ImageStatus,
    /// Its properties (metadata), including nodepool's ownership tags.
    pub properties: BTreeMap<String, String>,
}

impl CloudImage {
    /// An image with no properties.
    pub fn new(id: ExternalId, name: impl Into<String>, status: ImageStatus) -> CloudImage {
        CloudImage {
            id,
            name: name.into(),
            status,
            properties: BTreeMap::new(),
        }
    }
}

pub use nodepool_model::{Flavor, pick_flavor};

/// One absolute limit of a project: its maximum (`None` for unlimited) and what is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limit {
    /// The most the project may have; `None` when unlimited.
    pub max: Option<u64>,
    /// What it has now.
    pub used: u64,
}

impl Limit {
    /// How much more fits; `None` when unlimited.
    pub fn available(&self) -> Option<u64> {
        self.max.map(|max| max.saturating_sub(self.used))
    }
}

/// The absolute limits that cap launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Servers.
    pub instances: Limit,
    /// Virtual CPUs.
    pub cores: Limit,
    /// Memory, in MB.
    pub ram_mb: Limit,
}

/// A floating IP of the project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloatingIp {
    /// The cloud's id.
    pub id: ExternalId,
    /// The address.
    pub ip: IpAddr,
    /// The server it is mapped to, if any.
    pub server: Option<ExternalId>,
    /// The ownership tags it was created with (see [`crate::from_description`]).
    pub metadata: BTreeMap<String, String>,
}
