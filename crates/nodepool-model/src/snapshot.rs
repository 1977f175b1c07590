//! A consistent view of everything the store holds, for one planning round.

use std::collections::BTreeMap;

use crate::{BuildRequest, Failure, Image, LabelName, Node, NodeRequest, NodeState, ProviderName};

/// Everything the policies need to decide, read from the store at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every node, ordered by id (oldest first).
    pub nodes: Vec<Node>,
    /// Every image upload, ordered by provider, image name and version.
    pub images: Vec<Image>,
    /// Requests still waiting for nodes, oldest first.
    pub requests: Vec<NodeRequest>,
    /// Image build requests not yet finished, oldest first.
    pub build_requests: Vec<BuildRequest>,
    /// Recent failed launches and builds, oldest first.
    pub failures: Vec<Failure>,
}

impl Snapshot {
    /// How many nodes each (provider, label) has in each state.
    pub fn node_counts(&self) -> BTreeMap<(&ProviderName, &LabelName, NodeState), usize> {
        let mut counts = BTreeMap::new();
        for node in &self.nodes {
            *counts
                .entry((&node.provider, &node.label, node.state))
                .or_insert(0) += 1;
        }
        counts
    }
}
