//! The delete stage: which nodes go now (used, marked, vanished, removed from the config, past
//! a deadline) and which listed servers are leaks.

use std::time::Duration;

use nodepool_model::{
    ExternalId, Gone, Human, ImageId, ImageState, InstallationId, Node, NodeState, Reason,
    ReasonCode,
};

use crate::{About, Map, NODE_CLEANUP, NodeAction, Planner, SeenOwner, TEST_CLEANUP};

impl<'a> Planner<'a> {
    /// The server tagged for `node` in its provider's newest listing.
    fn tagged_server(&self, node: &Node, provider: Option<usize>) -> Option<ExternalId> {
        let listing = self.cloud(provider, &node.provider)?.listing.as_ref()?;
        listing.tagged(node.id).cloned()
    }

    /// The other installation whose tags `node`'s server carries in the latest listing: the
    /// row was copied from another installation's store, and the server is not ours.
    fn other_installation(&self, node: &Node, provider: Option<usize>) -> Option<&InstallationId> {
        let id = node.external_id.as_ref()?;
        let listing = self.cloud(provider, &node.provider)?.listing.as_ref()?;
        match &listing.get(id)?.owner {
            SeenOwner::OtherInstallation(other) => Some(other),
            _ => None,
        }
    }

    /// Whether `node`'s server is absent from two listings taken after its last change.
    fn vanished(&self, node: &Node, provider: Option<usize>) -> bool {
        let Some(id) = &node.external_id else {
            return false;
        };
        let Some(cloud) = self.cloud(provider, &node.provider) else {
            return false;
        };
        let (Some(latest), Some(previous)) = (&cloud.listing, &cloud.previous) else {
            return false;
        };
        previous.at() > node.state_time && !latest.contains(id) && !previous.contains(id)
    }

    pub(crate) fn deletes(&mut self) {
        let snapshot = self.snapshot;
        for (i, node) in snapshot.nodes.iter().enumerate() {
            let (provider, label) = self.keys[i];
            self.judge(node, provider, label);
        }
    }

    /// Whether to delete one node now, and if not, when to look again. `provider` and
    /// `label` are the node's positions in the config.
    fn judge(&mut self, node: &'a Node, provider: Option<usize>, label: Option<usize>) {
        let config = self.config;
        let age = self.now.saturating_since(node.state_time);
        let after = |limit: Duration| node.state_time.first_past(limit);
        if node.state == NodeState::Hold {
            if provider.is_none() || label.is_none() {
                self.note(
                    About::Node(node.id),
                    ReasonCode::Held,
                    format!(
                        "node {} is held ({}); it stays although its provider {} or label {} is gone from the config",
                        node.id,
                        node.hold.as_ref().map_or("no reason given", |h| h.reason.as_str()),
                        node.provider,
                        node.label
                    ),
                );
            }
            return;
        }
        let busy = self.busy(node.id);
        // Deadlines apply even to nodes an executor holds: a stuck launch is cancelled.
        match node.state {
            NodeState::Building => {
                let timeout = provider.map(|i| {
                    let p = &config.providers[i];
                    (p.launch_timeout.saturating_add(p.boot_timeout), p)
                });
                if let Some((timeout, p)) = timeout {
                    if age > timeout {
                        return self.delete(
                            node,
                            self.tagged_server(node, provider),
                            ReasonCode::LaunchTimeout,
                            format!(
                                "building for {}, longer than launch-timeout ({}) plus boot-timeout ({})",
                                Human(age),
                                Human(p.launch_timeout),
                                Human(p.boot_timeout)
                            ),
                        );
                    }
                    if busy {
                        return self.wake_at(after(timeout));
                    }
                }
            }
            NodeState::Test if age > TEST_CLEANUP => {
                return self.delete(
                    node,
                    None,
                    ReasonCode::TestTimeout,
                    format!(
                        "in test for {}, longer than {}",
                        Human(age),
                        Human(TEST_CLEANUP)
                    ),
                );
            }
            NodeState::Ready | NodeState::Delete | NodeState::Used => {}
            _ if age > NODE_CLEANUP => {
                return self.delete(
                    node,
                    None,
                    ReasonCode::NodeCleanup,
                    format!(
                        "in state {} for {}, longer than {}",
                        node.state,
                        Human(age),
                        Human(NODE_CLEANUP)
                    ),
                );
            }
            _ => {}
        }
        if busy {
            return;
        }
        if node.state == NodeState::Delete {
            return self.delete(
                node,
                self.tagged_server(node, provider),
                ReasonCode::Marked,
                format!("marked for deletion {} ago", Human(age)),
            );
        }
        if node.state == NodeState::Used {
            return self.delete(
                node,
                None,
                ReasonCode::Used,
                "its consumer has finished with it".into(),
            );
        }
        // A copied store (`nodepool installation-id --new`) names the original's servers:
        // never hand them out; the row is forgotten and the server left to its owner.
        if matches!(
            node.state,
            NodeState::Ready | NodeState::Building | NodeState::Test
        ) && let Some(other) = self.other_installation(node, provider)
        {
            let text = format!(
                "its server {} carries installation {other}'s tags: the row is forgotten and the server left to that installation",
                node.external_id.as_ref().map_or("", |id| id.as_str()),
            );
            return self.delete(node, None, ReasonCode::OtherInstallation, text);
        }
        if self.vanished(node, provider) {
            return self.delete(
                node,
                None,
                ReasonCode::Vanished,
                format!(
                    "its server {} is in neither of the last two listings of provider {}",
                    node.external_id.as_ref().map_or("", |id| id.as_str()),
                    node.provider
                ),
            );
        }
        let gone = if provider.is_none() {
            Some((
                ReasonCode::ProviderRemoved,
                format!("provider {} is no longer in the config", node.provider),
                Some(Gone::Provider(node.provider.clone())),
            ))
        } else {
            match label.map(|i| &config.labels[i]) {
                None => Some((
                    ReasonCode::LabelRemoved,
                    format!("label {} is no longer in the config", node.label),
                    Some(Gone::Label(node.label.clone(), None)),
                )),
                Some(label) if !label.providers.contains(&node.provider) => Some((
                    ReasonCode::LabelRemoved,
                    format!(
                        "label {} no longer lists provider {}",
                        node.label, node.provider
                    ),
                    Some(Gone::Label(node.label.clone(), Some(node.provider.clone()))),
                )),
                Some(label) if label.min_ready < 0 && node.state != NodeState::InUse => Some((
                    ReasonCode::LabelDisabled,
                    format!("label {} is disabled (min-ready -1)", node.label),
                    None,
                )),
                Some(_) => None,
            }
        };
        if let Some((code, text, removed)) = gone {
            // Gone from the config: kept for removal-grace, in case an edit brings it back.
            if let Some(removed) = removed {
                let since = self.world.removals.since(&removed).unwrap_or(self.now);
                let until = since.saturating_add(config.removal_grace);
                self.gone.insert(removed.clone());
                if self.now < until && node.state != NodeState::InUse {
                    self.wake_at(until);
                    if self.pending.insert(removed.clone()) {
                        self.note(
                            About::Node(node.id),
                            ReasonCode::RemovalPending,
                            format!(
                                "{removed} is gone from the config: its nodes are deleted at {until} (removal-grace), unless the config brings it back"
                            ),
                        );
                    }
                    return;
                }
            }
            if node.state == NodeState::InUse {
                return self.note(
                    About::Node(node.id),
                    ReasonCode::InUse,
                    format!("{text}; node {} is in use and goes once released", node.id),
                );
            }
            return self.delete(node, self.tagged_server(node, provider), code, text);
        }
        match node.state {
            NodeState::Building => self.delete(
                node,
                self.tagged_server(node, provider),
                ReasonCode::Orphaned,
                "building, but no launch is working on it (a daemon stopped during its launch)"
                    .into(),
            ),
            NodeState::Test => self.wake_at(after(TEST_CLEANUP)),
            NodeState::Ready => {}
            _ => self.wake_at(after(NODE_CLEANUP)),
        }
    }

    pub(crate) fn leaks(&mut self) {
        let nodes = self.node_by_id.clone();
        let images: Map<ImageId, _> = self.snapshot.images.iter().map(|i| (i.id, i)).collect();
        for (provider, cloud) in &self.world.clouds {
            let Some(latest) = &cloud.listing else {
                continue;
            };
            for server in latest.servers() {
                // A server is ours when its installation, provider and row all match: a
                // server tagged for another provider of the config is that provider's to
                // judge from its own listing (two providers may share a project).
                let tagged_for = match &server.owner {
                    SeenOwner::Node(_, tagged) | SeenOwner::Image(_, tagged) => Some(tagged),
                    _ => None,
                };
                if let Some(tagged) = tagged_for
                    && tagged != provider
                    && self.config.providers.iter().any(|p| &p.name == tagged)
                {
                    continue;
                }
                // Tagged for a row of another provider than the tags name: not provably
                // that row's, so not provably a leak either.
                let row = match &server.owner {
                    SeenOwner::Node(id, _) => {
                        nodes.get(id).map(|n| (format!("node {id}"), &n.provider))
                    }
                    SeenOwner::Image(id, _) => images
                        .get(id)
                        .map(|i| (format!("image upload {id}"), &i.provider)),
                    _ => None,
                };
                if let (Some(tagged), Some((what, on))) = (tagged_for, row)
                    && on != tagged
                {
                    self.note(
                        About::Server(provider.clone(), server.id.clone()),
                        ReasonCode::Leaked,
                        format!(
                            "server {} is tagged for {what} of provider {tagged}, but {what} is on provider {on}; left for an operator",
                            server.id
                        ),
                    );
                    continue;
                }
                let known = match &server.owner {
                    SeenOwner::Node(id, _) => match nodes.get(id) {
                        Some(n) => match &n.external_id {
                            Some(ext) => ext == &server.id,
                            // The create call has not answered yet, or the orphan delete
                            // takes it.
                            None => true,
                        },
                        None => false,
                    },
                    SeenOwner::Image(id, _) => match images.get(id) {
                        None => false,
                        // Its build is under way, or its deletion takes the template too.
                        Some(upload)
                            if matches!(
                                upload.state,
                                ImageState::Building | ImageState::Delete
                            ) =>
                        {
                            upload
                                .server_external_id
                                .as_ref()
                                .is_none_or(|ext| ext == &server.id)
                        }
                        // The build is over: its template is left over (a daemon stopped
                        // before deleting it), once the cloud has ended its snapshot task.
                        Some(_) if server.busy => {
                            self.note(
                                About::Server(provider.clone(), server.id.clone()),
                                ReasonCode::TemplateBusy,
                                format!(
                                    "template server {} of image upload {id} is left over; deleted once the cloud ends its task on it",
                                    server.id
                                ),
                            );
                            true
                        }
                        Some(_) => false,
                    },
                    SeenOwner::Unreadable => {
                        self.note(
                            About::Server(provider.clone(), server.id.clone()),
                            ReasonCode::Leaked,
                            format!(
                                "server {} on provider {provider} carries this installation's tag but no readable node or image id; left for an operator",
                                server.id
                            ),
                        );
                        true
                    }
                    SeenOwner::OtherInstallation(_) | SeenOwner::NotOurs => true,
                };
                if known {
                    continue;
                }
                let seen_before = cloud
                    .previous
                    .as_ref()
                    .is_some_and(|p| p.contains(&server.id));
                let whose = match &server.owner {
                    SeenOwner::Node(id, _) => format!("node {id}, which the store does not have"),
                    SeenOwner::Image(id, _) if images.contains_key(id) => {
                        format!("image upload {id}, whose build is over")
                    }
                    SeenOwner::Image(id, _) => {
                        format!("image upload {id}, which the store does not have")
                    }
                    _ => String::new(),
                };
                if seen_before {
                    self.deletes.push(NodeAction::DeleteLeak {
                        provider: provider.clone(),
                        server: server.id.clone(),
                        reason: Reason::new(
                            ReasonCode::Leaked,
                            format!(
                                "server {} is tagged for {whose}, in two listings in a row",
                                server.id
                            ),
                        ),
                    });
                } else {
                    self.note(
                        About::Server(provider.clone(), server.id.clone()),
                        ReasonCode::SuspectedLeak,
                        format!(
                            "server {} is tagged for {whose}; deleted if the next listing shows it again",
                            server.id
                        ),
                    );
                }
            }
        }
    }
}
