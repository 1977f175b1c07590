//! The JSON shapes of the OpenStack APIs nodepool uses, read leniently: statuses are strings,
//! unknown fields are ignored, optional ones may be missing or null, and image properties are
//! whatever the image has. Nothing outside this crate sees these types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nodepool_model::{ExternalId, Timestamp};
use nodepool_provider::{
    Address, AddressKind, CloudImage, Flavor, FloatingIp, ImageStatus, Limit, Limits, Server,
    ServerStatus, from_description,
};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct ServerBody {
    pub(crate) server: WireServer,
}

#[derive(Deserialize)]
pub(crate) struct ServersBody {
    pub(crate) servers: Vec<WireServer>,
}

#[derive(Deserialize)]
pub(crate) struct CreatedServerBody {
    pub(crate) server: CreatedServer,
}

#[derive(Deserialize)]
pub(crate) struct CreatedServer {
    pub(crate) id: String,
}

#[derive(Deserialize)]
pub(crate) struct WireServer {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default, rename = "OS-EXT-STS:task_state")]
    task_state: Option<String>,
    #[serde(default)]
    addresses: BTreeMap<String, Vec<WireAddress>>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    fault: Option<WireFault>,
    /// `{"id": ...}`, or an empty string for a server booted from a volume.
    #[serde(default)]
    image: serde_json::Value,
    #[serde(default)]
    flavor: serde_json::Value,
    #[serde(default, rename = "OS-EXT-AZ:availability_zone")]
    availability_zone: Option<String>,
    /// When it last changed: ISO 8601, UTC.
    #[serde(default)]
    updated: Option<String>,
}

#[derive(Deserialize)]
struct WireAddress {
    addr: String,
    #[serde(default, rename = "OS-EXT-IPS:type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct WireFault {
    #[serde(default)]
    message: String,
}

impl WireServer {
    pub(crate) fn into_server(self) -> Server {
        let status = match (self.status.as_str(), self.task_state.as_deref()) {
            // Only a listing with `changes-since` shows a deleted server.
            ("DELETED", _) => ServerStatus::Deleted,
            (_, Some("deleting")) | ("SOFT_DELETED", _) => ServerStatus::Deleting,
            ("BUILD" | "REBUILD", _) => ServerStatus::Building,
            ("ACTIVE", _) => ServerStatus::Active,
            ("ERROR", _) => ServerStatus::Error,
            (other, _) => ServerStatus::Other(other.to_owned()),
        };
        let mut server = Server::new(ExternalId::new(self.id), self.name, status);
        server.task = self.task_state;
        server.updated = self.updated.as_deref().and_then(cloud_time);
        for (network, addresses) in self.addresses {
            for address in addresses {
                let Ok(ip) = address.addr.parse::<IpAddr>() else {
                    continue;
                };
                let kind = if address.kind.as_deref() == Some("floating") {
                    AddressKind::Floating
                } else {
                    AddressKind::Fixed
                };
                server.addresses.push(Address {
                    ip,
                    kind,
                    network: network.clone(),
                });
            }
        }
        server.metadata = self.metadata;
        server.fault = self.fault.map(|f| f.message).filter(|m| !m.is_empty());
        server.image = self
            .image
            .get("id")
            .and_then(|v| v.as_str())
            .map(ExternalId::new);
        server.flavor = self
            .flavor
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        server.availability_zone = self.availability_zone.filter(|az| !az.is_empty());
        server
    }
}

#[derive(Deserialize)]
pub(crate) struct FlavorsBody {
    pub(crate) flavors: Vec<WireFlavor>,
}

#[derive(Deserialize)]
pub(crate) struct WireFlavor {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ram: u64,
    #[serde(default)]
    vcpus: u64,
}

impl From<WireFlavor> for Flavor {
    fn from(f: WireFlavor) -> Flavor {
        Flavor {
            id: f.id,
            name: f.name,
            ram_mb: f.ram,
            vcpus: f.vcpus,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct LimitsBody {
    limits: WireLimits,
}

#[derive(Deserialize)]
struct WireLimits {
    absolute: BTreeMap<String, i64>,
}

impl LimitsBody {
    pub(crate) fn into_limits(self) -> Limits {
        let absolute = self.limits.absolute;
        let limit = |max: &str, used: &str| Limit {
            max: absolute
                .get(max)
                .copied()
                .filter(|m| *m >= 0)
                .map(i64::unsigned_abs),
            used: absolute
                .get(used)
                .copied()
                .unwrap_or(0)
                .max(0)
                .unsigned_abs(),
        };
        Limits {
            instances: limit("maxTotalInstances", "totalInstancesUsed"),
            cores: limit("maxTotalCores", "totalCoresUsed"),
            ram_mb: limit("maxTotalRAMSize", "totalRAMUsed"),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CreatedImageBody {
    pub(crate) image_id: String,
}

#[derive(Deserialize)]
pub(crate) struct ImagesBody {
    pub(crate) images: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Keys of a Glance image that are fields of the image, not properties.
const IMAGE_FIELDS: &[&str] = &[
    "id",
    "name",
    "status",
    "self",
    "file",
    "schema",
    "locations",
    "tags",
];

/// A Glance image from its JSON object; every other string-valued key is a property.
pub(crate) fn image_from_json(
    mut object: serde_json::Map<String, serde_json::Value>,
) -> Option<CloudImage> {
    let id = object.remove("id")?.as_str()?.to_owned();
    let name = object
        .get("name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let status = match object
        .get("status")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
    {
        "active" => ImageStatus::Active,
        "queued" | "saving" | "uploading" | "importing" => ImageStatus::Pending,
        "killed" => ImageStatus::Failed,
        "deleted" | "pending_delete" => ImageStatus::Deleted,
        other => ImageStatus::Other(other.to_owned()),
    };
    let mut image = CloudImage::new(ExternalId::new(id), name, status);
    image.properties = object
        .into_iter()
        .filter(|(key, _)| !IMAGE_FIELDS.contains(&key.as_str()))
        .filter_map(|(key, value)| value.as_str().map(|v| (key, v.to_owned())))
        .collect();
    Some(image)
}

#[derive(Deserialize)]
pub(crate) struct NetworksBody {
    pub(crate) networks: Vec<IdOnly>,
}

#[derive(Deserialize)]
pub(crate) struct PortsBody {
    pub(crate) ports: Vec<WirePort>,
}

#[derive(Deserialize)]
pub(crate) struct WirePort {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) device_id: String,
}

#[derive(Deserialize)]
pub(crate) struct IdOnly {
    pub(crate) id: String,
}

#[derive(Deserialize)]
pub(crate) struct FloatingIpBody {
    pub(crate) floatingip: WireFloatingIp,
}

#[derive(Deserialize)]
pub(crate) struct FloatingIpsBody {
    pub(crate) floatingips: Vec<WireFloatingIp>,
}

#[derive(Deserialize)]
pub(crate) struct WireFloatingIp {
    pub(crate) id: String,
    pub(crate) floating_ip_address: String,
    #[serde(default)]
    pub(crate) port_id: Option<String>,
    #[serde(default)]
    pub(crate) description: Option<String>,
}

impl WireFloatingIp {
    /// The floating IP, mapped to the server owning its port (looked up in `ports`).
    pub(crate) fn into_floating_ip(self, ports: &[WirePort]) -> Option<FloatingIp> {
        let ip = self.floating_ip_address.parse().ok()?;
        let server = self
            .port_id
            .and_then(|port| ports.iter().find(|p| p.id == port))
            .filter(|p| !p.device_id.is_empty())
            .map(|p| ExternalId::new(p.device_id.clone()));
        Some(FloatingIp {
            id: ExternalId::new(self.id),
            ip,
            server,
            metadata: from_description(self.description.as_deref().unwrap_or_default()),
        })
    }
}

/// A time as Nova writes it (`2026-11-25T21:12:31Z`, sometimes without the zone); `None` if
/// it cannot be read.
pub(crate) fn cloud_time(text: &str) -> Option<Timestamp> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(Timestamp::from_datetime(at.to_utc()));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|at| Timestamp::from_datetime(at.and_utc()))
}
