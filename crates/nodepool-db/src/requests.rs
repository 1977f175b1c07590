//! Node requests: what consumers ask for, and the exclusive hand-over of ready nodes.

use std::collections::BTreeMap;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use nodepool_model::{
    LabelName, Node, NodeId, NodeRequest, NodeState, Reason, ReasonCode, RequestId, RequestState,
    Subject, Timestamp,
};

use crate::connection::{AnyConnection, update_returning};
use crate::error::{Result, StoreError};
use crate::rows::{NodeRow, RequestRow, to_i64, to_u64};
use crate::schema::{node_requests::dsl as r, nodes::dsl as n, request_labels::dsl as rl};
use crate::statement::{Statement, Value};
use crate::{Backend, Store, append_event, next_ids};

fn assemble(
    rows: Vec<RequestRow>,
    labels: Vec<(i64, i64, String, Option<i64>)>,
) -> Result<Vec<NodeRequest>> {
    let mut by_request: BTreeMap<i64, Vec<(String, Option<i64>)>> = BTreeMap::new();
    for (request, _position, label, node) in labels {
        by_request.entry(request).or_default().push((label, node));
    }
    rows.into_iter()
        .map(
            |RequestRow {
                 id,
                 requestor,
                 priority,
                 state,
                 state_time,
                 failure,
                 created,
             }| {
                let bad = |message: String| StoreError::Corrupt {
                    table: "node_requests",
                    id,
                    message,
                };
                let wanted = by_request.remove(&id).unwrap_or_default();
                Ok(NodeRequest {
                    id: RequestId::new(to_u64(id)),
                    labels: wanted
                        .iter()
                        .map(|(l, _)| {
                            LabelName::new(l.clone()).map_err(|e| bad(format!("label: {e}")))
                        })
                        .collect::<Result<_>>()?,
                    requestor,
                    priority: i32::try_from(priority).map_err(|e| bad(format!("priority: {e}")))?,
                    state: state
                        .parse::<RequestState>()
                        .map_err(|e| bad(e.to_string()))?,
                    state_time: Timestamp::from_unix_millis(state_time),
                    nodes: wanted
                        .iter()
                        .filter_map(|(_, n)| n.map(|n| NodeId::new(to_u64(n))))
                        .collect(),
                    failure,
                    created: Timestamp::from_unix_millis(created),
                })
            },
        )
        .collect()
}

pub(crate) fn load(conn: &mut AnyConnection, id: RequestId) -> Result<NodeRequest> {
    let row: Option<RequestRow> = r::node_requests
        .find(to_i64(id.get()))
        .select(RequestRow::as_select())
        .first(conn)
        .optional()?;
    let row = row.ok_or(StoreError::NotFound {
        subject: Subject::Request(id),
    })?;
    let labels = rl::request_labels
        .filter(rl::request_id.eq(to_i64(id.get())))
        .order(rl::position)
        .select((rl::request_id, rl::position, rl::label, rl::node_id))
        .load(conn)?;
    Ok(assemble(vec![row], labels)?.remove(0))
}

pub(crate) fn list_requests(
    conn: &mut AnyConnection,
    state: Option<RequestState>,
) -> Result<Vec<NodeRequest>> {
    let mut query = r::node_requests
        .select(RequestRow::as_select())
        .into_boxed();
    let mut labels = rl::request_labels
        .select((rl::request_id, rl::position, rl::label, rl::node_id))
        .into_boxed();
    if let Some(state) = state {
        query = query.filter(r::state.eq(state.as_str()));
        labels = labels.filter(
            rl::request_id.eq_any(
                r::node_requests
                    .select(r::id)
                    .filter(r::state.eq(state.as_str())),
            ),
        );
    }
    let rows = query.order((r::created, r::id)).load(conn)?;
    let labels = labels.order((rl::request_id, rl::position)).load(conn)?;
    assemble(rows, labels)
}

/// Ready, unassigned nodes of `label`, oldest first.
/// On MySQL the nodes are locked, and nodes another claim has locked are passed over.
fn claimable(conn: &mut AnyConnection, label: &LabelName, limit: i64) -> Result<Vec<i64>> {
    let query = n::nodes
        .filter(n::label.eq(label.as_str().to_owned()))
        .filter(n::state.eq(NodeState::Ready.as_str()))
        .filter(n::request_id.is_null())
        .order((n::state_time, n::id))
        .limit(limit)
        .select(n::id);
    Ok(match conn {
        #[cfg(feature = "mysql")]
        AnyConnection::Mysql(mysql) => query.for_update().skip_locked().load(mysql)?,
        _ => query.load(conn)?,
    })
}

/// The claim one statement at a time, for SQLite and MySQL. On SQLite a statement costs
/// microseconds in process, and the write transaction (begun IMMEDIATE) keeps every other
/// writer out; on MySQL the request's row and the claimed nodes are locked, and a node
/// locked by another claim is skipped.
fn claim_in_steps(
    conn: &mut AnyConnection,
    request: RequestId,
    label: &LabelName,
    max: usize,
    now: Timestamp,
    actor: &str,
) -> Result<Vec<Node>> {
    let id = to_i64(request.get());
    // Writing the request's row first locks it: claims for one request take turns.
    let requestor: Option<String> = update_returning!(
        conn,
        diesel::update(
            r::node_requests.filter(
                r::id
                    .eq(id)
                    .and(r::state.eq(RequestState::Requested.as_str())),
            ),
        )
        .set(r::state_time.eq(r::state_time)),
        r::requestor,
        r::node_requests.find(id).select(r::requestor)
    )?;
    let Some(requestor) = requestor else {
        let current = load(conn, request)?;
        return Err(StoreError::Conflict {
            subject: Subject::Request(request),
            message: format!("is {}; only a waiting request gets nodes", current.state),
        });
    };
    let open: Vec<(i64, String)> = rl::request_labels
        .filter(rl::request_id.eq(id).and(rl::node_id.is_null()))
        .order(rl::position)
        .select((rl::position, rl::label))
        .load(conn)?;
    let wanted: Vec<i64> = open
        .iter()
        .filter(|(_, l)| l == label.as_str())
        .map(|(p, _)| *p)
        .take(max)
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let candidates = claimable(conn, label, i64::try_from(wanted.len()).unwrap_or(i64::MAX))?;
    let mut claimed = Vec::with_capacity(candidates.len());
    for (node_id, position) in candidates.into_iter().zip(&wanted) {
        let node = claim_node(conn, node_id, request, now)?;
        diesel::update(
            rl::request_labels.filter(rl::request_id.eq(id).and(rl::position.eq(position))),
        )
        .set(rl::node_id.eq(node_id))
        .execute(conn)?;
        let reason = Reason::new(
            ReasonCode::Claimed,
            format!("assigned to request {request} of {requestor}"),
        );
        append_event(
            conn,
            Subject::Node(node.id),
            now,
            "state in-use",
            &reason,
            actor,
        )?;
        let reason = Reason::new(
            ReasonCode::ReadyNode,
            format!("node {} of label {label} was ready", node.id),
        );
        let what = format!("assigned node {}", node.id);
        append_event(conn, Subject::Request(request), now, &what, &reason, actor)?;
        claimed.push(node);
    }
    if claimed.len() == open.len() {
        diesel::update(r::node_requests.find(id))
            .set((
                r::state.eq(RequestState::Fulfilled.as_str()),
                r::state_time.eq(now.unix_millis()),
            ))
            .execute(conn)?;
        let reason = Reason::new(ReasonCode::Fulfilled, "every label has a node");
        append_event(
            conn,
            Subject::Request(request),
            now,
            "state fulfilled",
            &reason,
            actor,
        )?;
    }
    Ok(claimed)
}

#[derive(diesel::QueryableByName)]
struct Claimed {
    #[diesel(embed)]
    node: NodeRow,
}

/// The claim on PostgreSQL, where every statement is a round trip: a single statement,
/// atomic on its own, locks the request, picks the oldest ready nodes (skipping those other
/// claimers hold), moves and assigns them, marks the request fulfilled when it is, and logs
/// all of it.
fn claim_on_postgres(
    pg: &mut PgConnection,
    request: RequestId,
    label: &LabelName,
    max: usize,
    now: Timestamp,
    actor: &str,
) -> Result<Vec<Node>> {
    let id = to_i64(request.get());
    let values = CLAIM_VALUES.iter().map(|name| match *name {
        "id" => Value::Int(id),
        "label" => Value::Text(label.as_str()),
        "max" => Value::Int(i64::try_from(max).unwrap_or(i64::MAX)),
        "now" => Value::Int(now.unix_millis()),
        _ => Value::Text(actor),
    });
    let claimed: Vec<Claimed> = Statement::new(CLAIM, values.collect()).load(pg)?;
    if claimed.is_empty() {
        // Nothing claimed: no ready node, or a request not waiting, which the caller must hear.
        let state: Option<String> = r::node_requests
            .find(id)
            .select(r::state)
            .first(pg)
            .optional()?;
        return match state {
            None => Err(StoreError::NotFound {
                subject: Subject::Request(request),
            }),
            Some(state) if state != RequestState::Requested.as_str() => Err(StoreError::Conflict {
                subject: Subject::Request(request),
                message: format!("is {state}; only a waiting request gets nodes"),
            }),
            Some(_) => Ok(Vec::new()),
        };
    }
    claimed.into_iter().map(|c| c.node.into_model()).collect()
}

/// Hands one ready node to `request`; the node was locked by [`claimable`].
fn claim_node(
    conn: &mut AnyConnection,
    node_id: i64,
    request: RequestId,
    now: Timestamp,
) -> Result<Node> {
    let row: Option<NodeRow> = update_returning!(
        conn,
        diesel::update(
            n::nodes.filter(
                n::id
                    .eq(node_id)
                    .and(n::state.eq(NodeState::Ready.as_str())),
            ),
        )
        .set((
            n::state.eq(NodeState::InUse.as_str()),
            n::state_time.eq(now.unix_millis()),
            n::request_id.eq(to_i64(request.get())),
        )),
        crate::schema::nodes::all_columns,
        n::nodes.find(node_id)
    )?;
    let subject = Subject::Node(NodeId::new(to_u64(node_id)));
    row.ok_or(StoreError::Raced {
        subject,
        change: "being claimed".into(),
    })?
    .into_model()
}

impl Store {
    /// Records a consumer's request for one node of each label listed (a label may be
    /// listed more than once).
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a request of no labels.
    pub fn create_request(
        &self,
        labels: &[LabelName],
        requestor: &str,
        priority: i32,
        now: Timestamp,
    ) -> Result<NodeRequest> {
        if labels.is_empty() {
            return Err(StoreError::Invalid(
                "a request needs at least one label".into(),
            ));
        }
        self.write(|conn| {
            let id = next_ids(conn, "request", 1)?;
            diesel::insert_into(r::node_requests)
                .values((
                    r::id.eq(id),
                    r::requestor.eq(requestor),
                    r::priority.eq(i64::from(priority)),
                    r::state.eq(RequestState::Requested.as_str()),
                    r::state_time.eq(now.unix_millis()),
                    r::created.eq(now.unix_millis()),
                ))
                .execute(conn)?;
            for (position, label) in labels.iter().enumerate() {
                diesel::insert_into(rl::request_labels)
                    .values((
                        rl::request_id.eq(id),
                        rl::position.eq(i64::try_from(position).unwrap_or(i64::MAX)),
                        rl::label.eq(label.as_str().to_owned()),
                    ))
                    .execute(conn)?;
            }
            let wanted: Vec<&str> = labels.iter().map(LabelName::as_str).collect();
            let reason = Reason::new(
                ReasonCode::Requested,
                format!("{requestor} asked for {}", wanted.join(", ")),
            );
            let request = RequestId::new(to_u64(id));
            append_event(
                conn,
                Subject::Request(request),
                now,
                "created",
                &reason,
                &self.actor,
            )?;
            load(conn, request)
        })
    }

    /// Hands up to `max` ready nodes of `label` to `request`, oldest ready first, for the
    /// positions of the request that want `label` and have no node yet. The nodes become
    /// `in-use`; when every position has a node the request is `fulfilled`.
    ///
    /// A node is never handed to two requests, however many daemons claim at once.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown request, [`StoreError::Conflict`] for one no
    /// longer waiting.
    pub fn claim_ready_nodes(
        &self,
        request: RequestId,
        label: &LabelName,
        max: usize,
        now: Timestamp,
    ) -> Result<Vec<Node>> {
        match self.backend {
            // One statement, atomic on its own: no transaction around it.
            Backend::Postgres => {
                let mut conn = self.conn()?;
                let AnyConnection::Postgresql(pg) = &mut *conn else {
                    unreachable!("a PostgreSQL store hands out PostgreSQL connections")
                };
                claim_on_postgres(pg, request, label, max, now, &self.actor)
            }
            _ => self.write(|conn| claim_in_steps(conn, request, label, max, now, &self.actor)),
        }
    }

    /// Fails a waiting request with `reason`. Nodes already assigned to it go back to
    /// ready: its requestor never got them.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidTransition`] for a request no longer waiting.
    pub fn fail_request(
        &self,
        request: RequestId,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<NodeRequest> {
        self.write(|conn| {
            end(
                conn,
                request,
                RequestState::Failed,
                now,
                reason,
                &self.actor,
            )
        })
    }

    /// Withdraws a request for its requestor. A waiting request's nodes go back to ready;
    /// a fulfilled request's nodes still in use are released (they become `used`, and
    /// nodepoold deletes them).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown request, [`StoreError::InvalidTransition`]
    /// for one already failed or canceled.
    pub fn cancel_request(
        &self,
        request: RequestId,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<NodeRequest> {
        self.write(|conn| {
            end(
                conn,
                request,
                RequestState::Canceled,
                now,
                reason,
                &self.actor,
            )
        })
    }

    /// Forgets node requests that ended (fulfilled, failed or canceled) before `before` and
    /// hold no node any more, and operators' build requests that ended before it; returns
    /// how many went. Their events go later, with the other events of what is gone.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn prune_requests(&self, before: Timestamp) -> Result<usize> {
        use crate::schema::build_requests::dsl as b;
        let ended = [
            RequestState::Fulfilled.as_str(),
            RequestState::Failed.as_str(),
            RequestState::Canceled.as_str(),
        ];
        self.write(|conn| {
            let old: Vec<i64> = r::node_requests
                .filter(r::state.eq_any(ended))
                .filter(r::state_time.lt(before.unix_millis()))
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    n::nodes.filter(n::request_id.eq(r::id.nullable())),
                )))
                .select(r::id)
                .load(conn)?;
            let mut pruned = 0;
            for chunk in old.chunks(500) {
                diesel::delete(rl::request_labels.filter(rl::request_id.eq_any(chunk)))
                    .execute(conn)?;
                pruned +=
                    diesel::delete(r::node_requests.filter(r::id.eq_any(chunk))).execute(conn)?;
            }
            pruned += diesel::delete(
                b::build_requests
                    .filter(b::state.eq_any(["done", "failed"]))
                    .filter(b::state_time.lt(before.unix_millis())),
            )
            .execute(conn)?;
            Ok(pruned)
        })
    }

    /// One request, with its labels and the nodes assigned so far.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown id.
    pub fn request(&self, id: RequestId) -> Result<NodeRequest> {
        self.read(|conn| load(conn, id))
    }

    /// Requests, all or in one state, oldest first.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn requests(&self, state: Option<RequestState>) -> Result<Vec<NodeRequest>> {
        self.read(|conn| list_requests(conn, state))
    }
}

/// Ends `request` in `to` (failed or canceled), with its nodes: those of a waiting request
/// go back to ready and are no longer recorded as its; those of a fulfilled one that are
/// still in use become `used`. Nodes the request no longer holds (released, held, being
/// deleted) stay as they are.
fn end(
    conn: &mut AnyConnection,
    request: RequestId,
    to: RequestState,
    now: Timestamp,
    reason: &Reason,
    actor: &str,
) -> Result<NodeRequest> {
    let current = load(conn, request)?;
    if !current.state.can_become(to) {
        return Err(StoreError::InvalidTransition {
            subject: Subject::Request(request),
            from: current.state.to_string(),
            to: to.to_string(),
        });
    }
    let id = to_i64(request.get());
    // Writing the row first locks it, so a claim for this request waits for us and then
    // finds it no longer waiting.
    let changed = diesel::update(
        r::node_requests.filter(r::id.eq(id).and(r::state.eq(current.state.as_str()))),
    )
    .set((
        r::state.eq(to.as_str()),
        r::state_time.eq(now.unix_millis()),
        r::failure.eq((to == RequestState::Failed).then_some(&reason.text)),
    ))
    .execute(conn)?;
    if changed == 0 {
        return Err(StoreError::Raced {
            subject: Subject::Request(request),
            change: format!("becoming {to}"),
        });
    }
    append_event(
        conn,
        Subject::Request(request),
        now,
        &format!("state {to}"),
        reason,
        actor,
    )?;
    let give_back = current.state == RequestState::Requested;
    let (node_state, node_reason) = if give_back {
        (
            NodeState::Ready,
            Reason::new(
                ReasonCode::RequestEnded,
                format!("request {request} {to} before it was fulfilled"),
            ),
        )
    } else {
        (
            NodeState::Used,
            Reason::new(ReasonCode::Released, format!("request {request} {to}")),
        )
    };
    for &node in &current.nodes {
        let held = crate::nodes::load_node(conn, node)?;
        if held.state == NodeState::InUse && held.request == Some(request) {
            crate::nodes::change_state(conn, node, node_state, now, &node_reason, actor)?;
        }
    }
    if give_back {
        diesel::update(rl::request_labels.filter(rl::request_id.eq(id)))
            .set(rl::node_id.eq(None::<i64>))
            .execute(conn)?;
    }
    load(conn, request)
}

/// The values of [`CLAIM`]'s markers, in order.
const CLAIM_VALUES: [&str; 16] = [
    "id", "label", "max", "label", "now", "id", "id", "now", "now", "actor", "now", "label",
    "actor", "now", "actor", "id",
];

/// See [`claim_on_postgres`].
const CLAIM: &str = "
WITH req AS (
    SELECT r.id, r.requestor,
           (SELECT count(*) FROM request_labels rl WHERE rl.request_id = r.id AND rl.node_id IS NULL) AS open_total,
           (SELECT COALESCE(max(e.seq), 0) FROM events e WHERE e.subject_kind = 'request' AND e.subject_id = r.id) AS last_seq
    FROM node_requests r WHERE r.id = $? AND r.state = 'requested' FOR UPDATE
), pos AS (
    SELECT rl.position, row_number() OVER (ORDER BY rl.position) AS n
    FROM request_labels rl JOIN req ON rl.request_id = req.id
    WHERE rl.label = $? AND rl.node_id IS NULL
    ORDER BY rl.position
    LIMIT $?
), cand AS (
    SELECT c.id, row_number() OVER (ORDER BY c.state_time, c.id) AS n
    FROM (SELECT id, state_time FROM nodes
          WHERE label = $? AND state = 'ready' AND request_id IS NULL
          ORDER BY state_time, id
          LIMIT (SELECT count(*) FROM pos)
          FOR UPDATE SKIP LOCKED) c
), pairs AS (
    SELECT cand.id AS node_id, pos.position, cand.n FROM cand JOIN pos ON cand.n = pos.n
), claimed AS (
    UPDATE nodes SET state = 'in-use', state_time = $?, request_id = $?
    FROM pairs WHERE nodes.id = pairs.node_id AND nodes.state = 'ready'
    RETURNING nodes.*
), assigned AS (
    UPDATE request_labels rl SET node_id = pairs.node_id
    FROM pairs WHERE rl.request_id = $? AND rl.position = pairs.position
), done AS (
    UPDATE node_requests SET state = 'fulfilled', state_time = $?
    FROM req
    WHERE node_requests.id = req.id AND req.open_total > 0
      AND req.open_total = (SELECT count(*) FROM pairs)
    RETURNING node_requests.id
), node_events AS (
    INSERT INTO events (subject_kind, subject_id, seq, time, what, reason_code, reason, actor)
    SELECT 'node', claimed.id,
           COALESCE((SELECT max(e.seq) FROM events e WHERE e.subject_kind = 'node' AND e.subject_id = claimed.id), 0) + 1,
           $?, 'state in-use', 'claimed', 'assigned to request ' || req.id || ' of ' || req.requestor, $?
    FROM claimed, req
), request_events AS (
    INSERT INTO events (subject_kind, subject_id, seq, time, what, reason_code, reason, actor)
    SELECT 'request', req.id, req.last_seq + pairs.n,
           $?, 'assigned node ' || pairs.node_id, 'ready-node',
           'node ' || pairs.node_id || ' of label ' || $? || ' was ready', $?
    FROM pairs, req
    UNION ALL
    SELECT 'request', done.id, req.last_seq + (SELECT count(*) FROM pairs) + 1,
           $?, 'state fulfilled', 'fulfilled', 'every label has a node', $?
    FROM done, req
)
SELECT claimed.* FROM claimed JOIN pairs ON pairs.node_id = claimed.id
WHERE claimed.request_id = $?
ORDER BY pairs.n";
