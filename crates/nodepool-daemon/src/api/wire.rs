//! The API's JSON: what clients send (read strictly: unknown fields are refused) and what
//! they get back. `docs/api/openapi.yaml` describes the same shapes; a test keeps them equal.

use std::net::IpAddr;

use nodepool_config::Config;
use nodepool_model::{Image, Node, NodeRequest};
use serde::{Deserialize, Serialize};

/// `POST /v1/requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRequest {
    /// One node per entry; a label may be listed more than once.
    pub(crate) labels: Vec<String>,
    /// Who asks: served fairly against other requestors. A consumer's token names it.
    #[serde(default, deserialize_with = "present")]
    pub(crate) requestor: Option<String>,
    /// Higher is served first; clamped to -1000..=1000.
    #[serde(default)]
    pub(crate) priority: i32,
}

/// `POST /v1/nodes/{id}/hold` (the body is optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hold {
    /// Why the node is kept.
    #[serde(default, deserialize_with = "present")]
    pub(crate) reason: Option<String>,
    /// Who holds it.
    #[serde(default, deserialize_with = "present")]
    pub(crate) by: Option<String>,
}

/// An optional string field: absent is `None`, `null` is refused (the field is a string
/// when it is there).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// `GET /v1/nodes` filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeQuery {
    pub(crate) provider: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) state: Option<String>,
}

/// `GET /v1/images` filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImageQuery {
    pub(crate) provider: Option<String>,
    pub(crate) image: Option<String>,
    pub(crate) state: Option<String>,
}

/// `GET /v1/requests` filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestQuery {
    pub(crate) state: Option<String>,
    pub(crate) requestor: Option<String>,
}

/// `GET /v1/requests/{id}`: `wait` seconds for the request to stop waiting (long poll).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    pub(crate) wait: Option<f64>,
}

/// An error: what is wrong and, for a bad body or query, which field.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
}

/// Why and by whom a node is held.
#[derive(Debug, Serialize)]
pub(crate) struct HoldOut {
    pub(crate) reason: String,
    pub(crate) by: String,
}

/// A node, with what a consumer needs to log in.
#[derive(Debug, Serialize)]
pub(crate) struct NodeOut {
    pub(crate) id: u64,
    pub(crate) provider: String,
    pub(crate) label: String,
    pub(crate) az: Option<String>,
    pub(crate) state: &'static str,
    pub(crate) state_time: String,
    pub(crate) hostname: Option<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) public_ip: Option<IpAddr>,
    pub(crate) private_ip: Option<IpAddr>,
    /// The port and user to log in with, from the node's provider image in the running
    /// config (`null` once the config no longer has it).
    pub(crate) ssh_port: Option<u16>,
    pub(crate) username: Option<String>,
    pub(crate) host_keys: Vec<String>,
    pub(crate) image: Option<u64>,
    pub(crate) request: Option<u64>,
    pub(crate) hold: Option<HoldOut>,
    pub(crate) created: String,
}

impl NodeOut {
    pub(crate) fn new(node: Node, config: &Config) -> NodeOut {
        let image = config.label(node.label.as_str()).and_then(|label| {
            config
                .provider(node.provider.as_str())?
                .images
                .iter()
                .find(|i| i.name == label.image)
        });
        NodeOut {
            id: node.id.get(),
            provider: node.provider.to_string(),
            label: node.label.to_string(),
            az: node.az,
            state: node.state.as_str(),
            state_time: node.state_time.to_string(),
            hostname: node.hostname,
            external_id: node.external_id.map(|id| id.as_str().to_owned()),
            public_ip: node.public_ip,
            private_ip: node.private_ip,
            ssh_port: image.map(|i| i.connection_port),
            username: image.map(|i| i.username.clone()),
            host_keys: node.host_keys,
            image: node.image.map(|i| i.get()),
            request: node.request.map(|r| r.get()),
            hold: node.hold.map(|h| HoldOut {
                reason: h.reason,
                by: h.by,
            }),
            created: node.created.to_string(),
        }
    }
}

/// A node request. `node_ids` are the nodes set aside for it so far; `nodes` describes
/// them in full once it is fulfilled (and only in an answer about this one request).
#[derive(Debug, Serialize)]
pub(crate) struct RequestOut {
    pub(crate) id: u64,
    pub(crate) labels: Vec<String>,
    pub(crate) requestor: String,
    pub(crate) priority: i32,
    pub(crate) state: &'static str,
    pub(crate) state_time: String,
    pub(crate) failure: Option<String>,
    pub(crate) node_ids: Vec<u64>,
    pub(crate) nodes: Vec<NodeOut>,
    pub(crate) created: String,
}

impl RequestOut {
    pub(crate) fn new(request: NodeRequest, nodes: Vec<NodeOut>) -> RequestOut {
        RequestOut {
            id: request.id.get(),
            labels: request.labels.iter().map(ToString::to_string).collect(),
            requestor: request.requestor,
            priority: request.priority,
            state: request.state.as_str(),
            state_time: request.state_time.to_string(),
            failure: request.failure,
            node_ids: request.nodes.iter().map(|n| n.get()).collect(),
            nodes,
            created: request.created.to_string(),
        }
    }
}

/// One image upload.
#[derive(Debug, Serialize)]
pub(crate) struct ImageOut {
    pub(crate) id: u64,
    pub(crate) provider: String,
    pub(crate) image: String,
    pub(crate) version: String,
    pub(crate) state: &'static str,
    pub(crate) state_time: String,
    pub(crate) hostname: Option<String>,
    pub(crate) external_id: Option<String>,
}

impl From<Image> for ImageOut {
    fn from(image: Image) -> ImageOut {
        ImageOut {
            id: image.id.get(),
            provider: image.provider.to_string(),
            image: image.name.to_string(),
            version: image.version.to_string(),
            state: image.state.as_str(),
            state_time: image.state_time.to_string(),
            hostname: image.hostname,
            external_id: image.external_id.map(|id| id.as_str().to_owned()),
        }
    }
}
