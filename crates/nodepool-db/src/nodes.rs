//! Nodes: intent, cloud id, addresses, state changes, holds and removal.

use std::net::IpAddr;

use diesel::prelude::*;
use nodepool_model::{
    ExternalId, HoldNote, Image, ImageId, LabelName, Node, NodeId, NodeState, ProviderName, Reason,
    ReasonCode, RequestId, Subject, Timestamp,
};

use crate::connection::{AnyConnection, update_returning};
use crate::error::{Result, StoreError};
use crate::rows::{EventRow, NodeRow, to_i64};
use crate::schema::nodes::dsl as n;
use crate::{Store, append_event, next_ids};

/// A node to record before its server is created.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewNode {
    /// The provider it will be launched on.
    pub provider: ProviderName,
    /// The label it is for.
    pub label: LabelName,
    /// The availability zone chosen for it.
    pub az: Option<String>,
    /// The image upload it will boot from.
    pub image: Option<ImageId>,
    /// Its host name; `{node_id}` is replaced by the id the store gives it.
    pub hostname: Option<String>,
}

impl NewNode {
    /// A node of `label` on `provider`, with nothing else chosen yet.
    pub fn new(provider: ProviderName, label: LabelName) -> NewNode {
        NewNode {
            provider,
            label,
            az: None,
            image: None,
            hostname: None,
        }
    }

    /// Sets the availability zone.
    pub fn az(mut self, az: impl Into<String>) -> NewNode {
        self.az = Some(az.into());
        self
    }

    /// Sets the image upload it boots from.
    pub fn image(mut self, image: ImageId) -> NewNode {
        self.image = Some(image);
        self
    }

    /// Sets its host name; `{node_id}` is replaced by its id.
    pub fn hostname(mut self, hostname: impl Into<String>) -> NewNode {
        self.hostname = Some(hostname.into());
        self
    }
}

/// Which nodes to list; `None` fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// Only this provider's.
    pub provider: Option<ProviderName>,
    /// Only this label's.
    pub label: Option<LabelName>,
    /// Only nodes in this state.
    pub state: Option<NodeState>,
}

/// Records whose cloud resource was asked for but never attached: what a crash left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intents {
    /// Building nodes without a server id.
    pub nodes: Vec<Node>,
    /// Building images without a template server id.
    pub images: Vec<Image>,
}

pub(crate) fn load_node(conn: &mut AnyConnection, id: NodeId) -> Result<Node> {
    n::nodes
        .find(to_i64(id.get()))
        .select(NodeRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(StoreError::NotFound {
            subject: Subject::Node(id),
        })?
        .into_model()
}

/// On whose behalf a node given to a request is released or held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting<'a> {
    /// An operator or an admin token: any node.
    Anyone,
    /// A consumer: only nodes given to a request of this requestor.
    For(&'a str),
}

impl Acting<'_> {
    /// Refuses, inside the transaction that changes the node, a consumer acting on a node
    /// that is not given to one of its requests.
    fn check(self, conn: &mut AnyConnection, node: &Node) -> Result<()> {
        let Acting::For(who) = self else {
            return Ok(());
        };
        let owner = match node.request {
            None => None,
            Some(request) => match crate::requests::load(conn, request) {
                Ok(found) => Some(found.requestor),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        if owner.as_deref() == Some(who) {
            Ok(())
        } else {
            Err(StoreError::NotGivenTo {
                subject: Subject::Node(node.id),
                requestor: who.to_owned(),
            })
        }
    }
}

/// Moves a node from the state it was read in to `to` (and, with `request`, sets or clears
/// its request), refusing if another writer moved it first. Returns the node as written.
pub(crate) fn move_node(
    conn: &mut AnyConnection,
    node: &Node,
    to: NodeState,
    now: Timestamp,
    request: Option<Option<RequestId>>,
) -> Result<Node> {
    let id = to_i64(node.id.get());
    let target = n::nodes.filter(n::id.eq(id).and(n::state.eq(node.state.as_str())));
    let moved: Option<NodeRow> = match request {
        Some(request) => update_returning!(
            conn,
            diesel::update(target).set((
                n::state.eq(to.as_str()),
                n::state_time.eq(now.unix_millis()),
                n::request_id.eq(request.map(|r| to_i64(r.get()))),
            )),
            crate::schema::nodes::all_columns,
            n::nodes.find(id)
        )?,
        None => update_returning!(
            conn,
            diesel::update(target).set((
                n::state.eq(to.as_str()),
                n::state_time.eq(now.unix_millis()),
            )),
            crate::schema::nodes::all_columns,
            n::nodes.find(id)
        )?,
    };
    match moved {
        Some(row) => row.into_model(),
        None => Err(StoreError::Raced {
            subject: Subject::Node(node.id),
            change: format!("becoming {to}"),
        }),
    }
}

/// Inserts building nodes and their first events within the caller's transaction.
pub(crate) fn insert_nodes(
    conn: &mut AnyConnection,
    new: &[NewNode],
    now: Timestamp,
    reason: &Reason,
    actor: &str,
) -> Result<Vec<Node>> {
    let first = next_ids(conn, "node", new.len())?;
    let rows: Vec<NodeRow> = new
        .iter()
        .zip(first..)
        .map(|(new, id)| NodeRow {
            id,
            provider: new.provider.to_string(),
            label: new.label.to_string(),
            az: new.az.clone(),
            hostname: new
                .hostname
                .as_ref()
                .map(|h| h.replace("{node_id}", &id.to_string())),
            external_id: None,
            public_ip: None,
            private_ip: None,
            state: NodeState::Building.as_str().to_owned(),
            state_time: now.unix_millis(),
            image_id: new.image.map(|i| to_i64(i.get())),
            request_id: None,
            hold_reason: None,
            hold_by: None,
            created: now.unix_millis(),
            host_keys: None,
        })
        .collect();
    // A new node's history starts here: its first event has sequence number 1.
    let events: Vec<EventRow> = rows
        .iter()
        .map(|row| EventRow {
            subject_kind: "node".to_owned(),
            subject_id: row.id,
            seq: 1,
            time: now.unix_millis(),
            what: "created".to_owned(),
            reason_code: reason.code.as_str().to_owned(),
            reason: reason.text.clone(),
            actor: actor.to_owned(),
        })
        .collect();
    // One statement per 500 rows, within the limit on bound parameters.
    macro_rules! in_chunks {
        ($conn:expr) => {{
            for chunk in rows.chunks(500) {
                diesel::insert_into(n::nodes).values(chunk).execute($conn)?;
            }
            for chunk in events.chunks(500) {
                diesel::insert_into(crate::schema::events::table)
                    .values(chunk)
                    .execute($conn)?;
            }
        }};
    }
    match conn {
        AnyConnection::Postgresql(pg) => in_chunks!(pg),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(mysql) => in_chunks!(mysql),
        // SQLite runs in process: one statement per row costs microseconds.
        AnyConnection::Sqlite(sqlite) => {
            for row in &rows {
                diesel::insert_into(n::nodes).values(row).execute(sqlite)?;
            }
            for event in &events {
                diesel::insert_into(crate::schema::events::table)
                    .values(event)
                    .execute(sqlite)?;
            }
        }
    }
    let nodes = rows
        .into_iter()
        .map(NodeRow::into_model)
        .collect::<Result<Vec<_>>>()?;
    Ok(nodes)
}

/// Moves one node to `to` within the caller's transaction; staying put is not a move.
pub(crate) fn change_state(
    conn: &mut AnyConnection,
    id: NodeId,
    to: NodeState,
    now: Timestamp,
    reason: &Reason,
    actor: &str,
) -> Result<Node> {
    let node = load_node(conn, id)?;
    if node.state == to {
        return Ok(node);
    }
    check_move(&node, to)?;
    // A node given back by a request (in-use to ready) no longer belongs to it.
    let request = (node.state == NodeState::InUse && to == NodeState::Ready).then_some(None);
    let moved = move_node(conn, &node, to, now, request)?;
    append_event(
        conn,
        Subject::Node(id),
        now,
        &format!("state {to}"),
        reason,
        actor,
    )?;
    Ok(moved)
}

fn check_move(node: &Node, to: NodeState) -> Result<()> {
    if node.state.can_become(to) {
        Ok(())
    } else {
        Err(StoreError::InvalidTransition {
            subject: Subject::Node(node.id),
            from: node.state.to_string(),
            to: to.to_string(),
        })
    }
}

impl Store {
    /// Records a node about to be launched: state `building`, no cloud id yet.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn create_node(&self, new: &NewNode, now: Timestamp, reason: &Reason) -> Result<Node> {
        let mut nodes = self.create_nodes(std::slice::from_ref(new), now, reason)?;
        Ok(nodes.remove(0))
    }

    /// Records several nodes at once, in one transaction.
    ///
    /// # Errors
    ///
    /// Database errors only; then none is recorded.
    pub fn create_nodes(
        &self,
        new: &[NewNode],
        now: Timestamp,
        reason: &Reason,
    ) -> Result<Vec<Node>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|conn| insert_nodes(conn, new, now, reason, &self.actor))
    }

    /// Attaches the cloud's server id to a node recorded by [`Store::create_node`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if the node already has a server or is no longer building;
    /// [`StoreError::DuplicateExternalId`] if another node of the provider has this server.
    pub fn attach_node_server(
        &self,
        id: NodeId,
        external_id: &ExternalId,
        now: Timestamp,
    ) -> Result<Node> {
        self.write(|conn| {
            let node = load_node(conn, id)?;
            if node.external_id.as_ref() == Some(external_id) {
                return Ok(node);
            }
            if let Some(existing) = &node.external_id {
                return Err(StoreError::Conflict {
                    subject: Subject::Node(id),
                    message: format!("already has server {existing}"),
                });
            }
            if node.state != NodeState::Building {
                return Err(StoreError::Conflict {
                    subject: Subject::Node(id),
                    message: format!("is {}; only a building node gets a server", node.state),
                });
            }
            let updated = diesel::update(
                n::nodes.filter(n::id.eq(to_i64(id.get())).and(n::external_id.is_null())),
            )
            .set(n::external_id.eq(external_id.as_str()))
            .execute(conn);
            match updated {
                Ok(1) => {}
                Ok(_) => {
                    return Err(StoreError::Conflict {
                        subject: Subject::Node(id),
                        message: "got a server from another writer".into(),
                    });
                }
                Err(error) if crate::error::is_unique_violation(&error) => {
                    return Err(StoreError::DuplicateExternalId {
                        subject: Subject::Node(id),
                        provider: node.provider.to_string(),
                        external_id: external_id.to_string(),
                    });
                }
                Err(error) => return Err(error.into()),
            }
            let reason = Reason::new(
                ReasonCode::ServerCreated,
                "the cloud accepted the create call",
            );
            append_event(
                conn,
                Subject::Node(id),
                now,
                &format!("server {external_id}"),
                &reason,
                &self.actor,
            )?;
            load_node(conn, id)
        })
    }

    /// Records a node's addresses once its server is up.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown node.
    pub fn set_node_addresses(
        &self,
        id: NodeId,
        public_ip: Option<IpAddr>,
        private_ip: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Node> {
        self.write(|conn| {
            load_node(conn, id)?;
            diesel::update(n::nodes.find(to_i64(id.get())))
                .set((
                    n::public_ip.eq(public_ip.map(|ip| ip.to_string())),
                    n::private_ip.eq(private_ip.map(|ip| ip.to_string())),
                ))
                .execute(conn)?;
            let shown =
                |ip: Option<IpAddr>| ip.map_or_else(|| "none".to_owned(), |ip| ip.to_string());
            let what = format!(
                "addresses public {} private {}",
                shown(public_ip),
                shown(private_ip)
            );
            append_event(
                conn,
                Subject::Node(id),
                now,
                &what,
                &Reason::new(ReasonCode::Addresses, "the server is up"),
                &self.actor,
            )?;
            load_node(conn, id)
        })
    }

    /// Records the SSH host keys a node's server presented (OpenSSH public key lines).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown node; [`StoreError::Invalid`] for a key that
    /// is not one line.
    pub fn set_node_host_keys(&self, id: NodeId, keys: &[String], now: Timestamp) -> Result<Node> {
        if let Some(bad) = keys.iter().find(|k| k.is_empty() || k.contains('\n')) {
            return Err(StoreError::Invalid(format!(
                "node {id}: a host key must be one non-empty line, not {bad:?}"
            )));
        }
        self.write(|conn| {
            load_node(conn, id)?;
            diesel::update(n::nodes.find(to_i64(id.get())))
                .set(n::host_keys.eq((!keys.is_empty()).then(|| keys.join("\n"))))
                .execute(conn)?;
            let kinds: Vec<&str> = keys
                .iter()
                .map(|k| k.split_whitespace().next().unwrap_or_default())
                .collect();
            append_event(
                conn,
                Subject::Node(id),
                now,
                &format!("host keys {}", kinds.join(" ")),
                &Reason::new(
                    ReasonCode::HostKeys,
                    "presented by the server when it was reached",
                ),
                &self.actor,
            )?;
            load_node(conn, id)
        })
    }

    /// Moves a node to `to`, stamping `state_time` and logging `reason`.
    ///
    /// Use [`Store::hold_node`] to hold and [`Store::claim_ready_nodes`] to hand nodes to a
    /// request; a node given back by a request (`in-use` to `ready`) loses its request.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidTransition`] for a move the node state machine does not allow.
    pub fn set_node_state(
        &self,
        id: NodeId,
        to: NodeState,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<Node> {
        if matches!(to, NodeState::Hold | NodeState::InUse) {
            return Err(StoreError::Invalid(format!(
                "a node becomes {to} through {}",
                if to == NodeState::Hold {
                    "hold_node"
                } else {
                    "claim_ready_nodes"
                }
            )));
        }
        self.write(|conn| change_state(conn, id, to, now, reason, &self.actor))
    }

    /// Moves a node from `from` to `to`, and only from there: what a check decided about a
    /// ready node must not touch it once a consumer has taken it.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidTransition`] if the node is no longer `from` (or cannot move).
    pub fn set_node_state_from(
        &self,
        id: NodeId,
        from: NodeState,
        to: NodeState,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<Node> {
        self.write(|conn| {
            let node = load_node(conn, id)?;
            if node.state != from {
                return Err(StoreError::InvalidTransition {
                    subject: Subject::Node(id),
                    from: node.state.to_string(),
                    to: to.to_string(),
                });
            }
            change_state(conn, id, to, now, reason, &self.actor)
        })
    }

    /// Moves several nodes to `to` in one transaction, as [`Store::set_node_state`] does
    /// one: all of them, or (on the first refused move) none.
    ///
    /// # Errors
    ///
    /// As [`Store::set_node_state`], for the first node that cannot move.
    pub fn set_node_states(
        &self,
        ids: &[NodeId],
        to: NodeState,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<Vec<Node>> {
        if matches!(to, NodeState::Hold | NodeState::InUse) {
            return Err(StoreError::Invalid(format!(
                "a node becomes {to} through a hold or a claim"
            )));
        }
        self.write(|conn| {
            ids.iter()
                .map(|&id| change_state(conn, id, to, now, reason, &self.actor))
                .collect()
        })
    }

    /// A consumer has finished with a node handed to its request: `in-use` becomes `used`,
    /// and nodepoold deletes it.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidTransition`] for a node not in use; [`StoreError::NotGivenTo`]
    /// when `acting` is a requestor other than the one the node was given to.
    pub fn release_node(
        &self,
        id: NodeId,
        now: Timestamp,
        by: &str,
        acting: Acting<'_>,
    ) -> Result<Node> {
        let reason = Reason::new(ReasonCode::Released, format!("released by {by}"));
        self.write(|conn| {
            let node = load_node(conn, id)?;
            acting.check(conn, &node)?;
            if node.state != NodeState::InUse {
                return Err(StoreError::InvalidTransition {
                    subject: Subject::Node(id),
                    from: node.state.to_string(),
                    to: NodeState::Used.to_string(),
                });
            }
            change_state(conn, id, NodeState::Used, now, &reason, &self.actor)
        })
    }

    /// Holds a node: nodepool will not touch it until an operator deletes it.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidTransition`] for a node being deleted; [`StoreError::NotGivenTo`]
    /// as for [`Store::release_node`].
    pub fn hold_node(
        &self,
        id: NodeId,
        note: &HoldNote,
        now: Timestamp,
        acting: Acting<'_>,
    ) -> Result<Node> {
        self.write(|conn| {
            let node = load_node(conn, id)?;
            acting.check(conn, &node)?;
            check_move(&node, NodeState::Hold)?;
            move_node(conn, &node, NodeState::Hold, now, None)?;
            diesel::update(n::nodes.find(to_i64(id.get())))
                .set((n::hold_reason.eq(&note.reason), n::hold_by.eq(&note.by)))
                .execute(conn)?;
            let reason = Reason::new(
                ReasonCode::OperatorHold,
                format!("held by {}: {}", note.by, note.reason),
            );
            append_event(
                conn,
                Subject::Node(id),
                now,
                "state hold",
                &reason,
                &self.actor,
            )?;
            load_node(conn, id)
        })
    }

    /// Forgets a node whose server the cloud has confirmed gone. Its events stay.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] unless the node is in `delete`.
    pub fn remove_node(&self, id: NodeId, now: Timestamp, reason: &Reason) -> Result<()> {
        self.write(|conn| {
            let node = load_node(conn, id)?;
            if node.state != NodeState::Delete {
                return Err(StoreError::Conflict {
                    subject: Subject::Node(id),
                    message: format!("is {}; only a node in delete can be removed", node.state),
                });
            }
            diesel::delete(
                n::nodes.filter(
                    n::id
                        .eq(to_i64(id.get()))
                        .and(n::state.eq(NodeState::Delete.as_str())),
                ),
            )
            .execute(conn)?;
            append_event(conn, Subject::Node(id), now, "removed", reason, &self.actor)
        })
    }

    /// One node.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown id.
    pub fn node(&self, id: NodeId) -> Result<Node> {
        self.read(|conn| load_node(conn, id))
    }

    /// Nodes matching `filter`, ordered by provider, label and id (the 2014 order).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn nodes(&self, filter: &NodeFilter) -> Result<Vec<Node>> {
        self.read(|conn| list_nodes(conn, filter))
    }

    /// Building nodes and images whose cloud resource was never attached: left by a crash
    /// between recording the intent and hearing back from the cloud.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn intents(&self) -> Result<Intents> {
        self.read(|conn| {
            let nodes = n::nodes
                .filter(
                    n::state
                        .eq(NodeState::Building.as_str())
                        .and(n::external_id.is_null()),
                )
                .order(n::id)
                .select(NodeRow::as_select())
                .load(conn)?
                .into_iter()
                .map(NodeRow::into_model)
                .collect::<Result<_>>()?;
            Ok(Intents {
                nodes,
                images: crate::images::image_intents(conn)?,
            })
        })
    }
}

/// Nodes matching `filter`, in no particular order.
pub(crate) fn load_nodes(conn: &mut AnyConnection, filter: &NodeFilter) -> Result<Vec<Node>> {
    // Built per backend: large reads through the backend's own connection skip the
    // multi-backend row wrapper, which costs a third of the time of a 10,000-node read.
    macro_rules! load {
        ($conn:expr, $backend:ty) => {{
            let mut query = n::nodes
                .select(NodeRow::as_select())
                .into_boxed::<$backend>();
            if let Some(provider) = &filter.provider {
                query = query.filter(n::provider.eq(provider.as_str().to_owned()));
            }
            if let Some(label) = &filter.label {
                query = query.filter(n::label.eq(label.as_str().to_owned()));
            }
            if let Some(state) = filter.state {
                query = query.filter(n::state.eq(state.as_str()));
            }
            query.load::<NodeRow>($conn)?
        }};
    }
    let rows = match conn {
        AnyConnection::Sqlite(c) => load!(c, diesel::sqlite::Sqlite),
        AnyConnection::Postgresql(c) => load!(c, diesel::pg::Pg),
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(c) => load!(c, diesel::mysql::Mysql),
    };
    rows.into_iter().map(NodeRow::into_model).collect()
}

/// Nodes matching `filter`, ordered by provider, label and id.
pub(crate) fn list_nodes(conn: &mut AnyConnection, filter: &NodeFilter) -> Result<Vec<Node>> {
    // Sorting here is cheaper than asking the database to: a plain scan beats walking an
    // index and fetching each row, on every backend.
    let mut nodes = load_nodes(conn, filter)?;
    nodes
        .sort_unstable_by(|a, b| (&a.provider, &a.label, a.id).cmp(&(&b.provider, &b.label, b.id)));
    Ok(nodes)
}
