//! Ownership tags: how nodepool recognises what it created in a cloud.
//!
//! Every server and image nodepool creates carries three metadata keys:
//!
//! | key | value |
//! | --- | --- |
//! | `nodepool-installation` | the installation's id (from its store) |
//! | `nodepool-provider` | the provider's name in the config |
//! | `nodepool-node-id` or `nodepool-image-id` | the store's id of the node or image upload |
//!
//! Floating IPs have no metadata; they carry the same keys in their description, as
//! `key=value` pairs separated by spaces ([`to_description`], [`from_description`]).
//!
//! With them a listing splits into what this installation owns (and can match against its
//! store), what another installation sharing the project owns (never touched), and foreign
//! resources (reported by `alien-list`, never deleted).

use std::collections::BTreeMap;

use nodepool_model::{ImageId, InstallationId, NodeId, ProviderName};

/// The metadata key naming the installation.
pub const INSTALLATION_KEY: &str = "nodepool-installation";
/// The metadata key naming the provider.
pub const PROVIDER_KEY: &str = "nodepool-provider";
/// The metadata key with the node's id.
pub const NODE_KEY: &str = "nodepool-node-id";
/// The metadata key with the image upload's id.
pub const IMAGE_KEY: &str = "nodepool-image-id";
/// On a snapshot: the template server it was made from. The cloud says which server a
/// snapshot was made from ([`SOURCE_SERVER_KEY`]); the two agree only on snapshots nodepool
/// made, not on someone's snapshot of a node, which inherits the node image's tags.
pub const TEMPLATE_KEY: &str = "nodepool-template-server";
/// The property in which Nova records the server an image is a snapshot of.
pub const SOURCE_SERVER_KEY: &str = "instance_uuid";

/// What a cloud resource was created for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// A node (its server).
    Node(NodeId),
    /// An image upload (its template server or its snapshot).
    Image(ImageId),
}

/// The tags to put on a resource nodepool creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tags {
    /// This installation.
    pub installation: InstallationId,
    /// The provider, by its config name.
    pub provider: ProviderName,
    /// The record the resource belongs to.
    pub owner: Owner,
}

impl Tags {
    /// The tags as metadata entries.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let (key, id) = match self.owner {
            Owner::Node(id) => (NODE_KEY, id.get()),
            Owner::Image(id) => (IMAGE_KEY, id.get()),
        };
        BTreeMap::from([
            (INSTALLATION_KEY.to_owned(), self.installation.to_string()),
            (PROVIDER_KEY.to_owned(), self.provider.to_string()),
            (key.to_owned(), id.to_string()),
        ])
    }

    /// Adds the tags to existing metadata (the tags win over same-named keys).
    pub fn apply(&self, metadata: &mut BTreeMap<String, String>) {
        metadata.extend(self.to_metadata());
    }
}

/// The longest description a cloud keeps (Neutron's limit).
pub const DESCRIPTION_LIMIT: usize = 255;

/// Metadata written as a one-line description, for resources that have no metadata (floating
/// IPs): `nodepool-installation=… nodepool-node-id=… nodepool-provider=…`. The provider comes
/// last because its name may hold spaces; the line is cut at [`DESCRIPTION_LIMIT`] bytes.
pub fn to_description(metadata: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<(&String, &String)> = metadata.iter().collect();
    pairs.sort_by_key(|(key, _)| key.as_str() == PROVIDER_KEY);
    let mut line = pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    if line.len() > DESCRIPTION_LIMIT {
        let mut end = DESCRIPTION_LIMIT;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// Reads a description written by [`to_description`]; any other text yields no entries.
pub fn from_description(description: &str) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::new();
    let mut rest = description.trim();
    while let Some((key, value)) = rest.split_once('=') {
        if !key.starts_with("nodepool-") || key.contains(' ') {
            break;
        }
        let (value, next) = match value.split_once(' ') {
            Some((value, next)) if key != PROVIDER_KEY => (value, next),
            _ => (value, ""),
        };
        metadata.insert(key.to_owned(), value.to_owned());
        rest = next;
    }
    metadata
}

/// Whose a resource found in a cloud is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// This installation's, created for `owner` on `provider`.
    Ours {
        /// The provider named in the tags.
        provider: String,
        /// The record it belongs to.
        owner: Owner,
    },
    /// This installation's by its installation tag, but the rest of the tags are missing or
    /// unreadable (someone edited them): ours, but not matched to a record.
    OursUnreadable,
    /// Another nodepool installation's.
    OtherInstallation(InstallationId),
    /// Not created by nodepool.
    Foreign,
}

/// Reads the tags of a resource's metadata against this installation's id.
pub fn classify(metadata: &BTreeMap<String, String>, installation: &InstallationId) -> Ownership {
    let Some(tagged) = metadata.get(INSTALLATION_KEY) else {
        return Ownership::Foreign;
    };
    if tagged != installation.as_str() {
        return Ownership::OtherInstallation(InstallationId::new(tagged.clone()));
    }
    let id = |key: &str| metadata.get(key).and_then(|v| v.parse::<u64>().ok());
    let owner = match (id(NODE_KEY), id(IMAGE_KEY)) {
        (Some(node), None) => Owner::Node(NodeId::new(node)),
        (None, Some(image)) => Owner::Image(ImageId::new(image)),
        _ => return Ownership::OursUnreadable,
    };
    match metadata.get(PROVIDER_KEY) {
        Some(provider) => Ownership::Ours {
            provider: provider.clone(),
            owner,
        },
        None => Ownership::OursUnreadable,
    }
}
