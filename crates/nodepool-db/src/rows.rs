//! Rows as diesel reads and writes them, and their conversion to and from domain types.
//! Nothing here leaves the crate.

use std::net::IpAddr;

use diesel::prelude::*;
use nodepool_model::{
    BuildRequest, BuildRequestId, BuildRequestState, Event, ExternalId, HoldNote, Image, ImageId,
    ImageName, ImageState, LabelName, Node, NodeId, NodeState, ProviderName, Reason, ReasonCode,
    RequestId, Subject, Timestamp,
};

use crate::error::{Result, StoreError};
use crate::schema::{build_requests, events, images, node_requests, nodes};

#[derive(Queryable, QueryableByName, Selectable, Insertable, Debug)]
#[diesel(table_name = nodes)]
pub(crate) struct NodeRow {
    pub(crate) id: i64,
    pub(crate) provider: String,
    pub(crate) label: String,
    pub(crate) az: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) public_ip: Option<String>,
    pub(crate) private_ip: Option<String>,
    pub(crate) state: String,
    pub(crate) state_time: i64,
    pub(crate) image_id: Option<i64>,
    pub(crate) request_id: Option<i64>,
    pub(crate) hold_reason: Option<String>,
    pub(crate) hold_by: Option<String>,
    pub(crate) created: i64,
    pub(crate) host_keys: Option<String>,
}

#[derive(Queryable, Selectable, Insertable, Debug)]
#[diesel(table_name = images)]
pub(crate) struct ImageRow {
    pub(crate) id: i64,
    pub(crate) provider: String,
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) hostname: Option<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) server_external_id: Option<String>,
    pub(crate) state: String,
    pub(crate) state_time: i64,
    pub(crate) build_request_id: Option<i64>,
    pub(crate) created: i64,
}

#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = node_requests)]
pub(crate) struct RequestRow {
    pub(crate) id: i64,
    pub(crate) requestor: String,
    pub(crate) priority: i64,
    pub(crate) state: String,
    pub(crate) state_time: i64,
    pub(crate) failure: Option<String>,
    pub(crate) created: i64,
}

#[derive(Queryable, Selectable, Insertable, Debug)]
#[diesel(table_name = build_requests)]
pub(crate) struct BuildRequestRow {
    pub(crate) id: i64,
    pub(crate) provider: Option<String>,
    pub(crate) image: String,
    pub(crate) requested_by: String,
    pub(crate) state: String,
    pub(crate) state_time: i64,
    pub(crate) failure: Option<String>,
    pub(crate) created: i64,
}

#[derive(Queryable, Selectable, Insertable, Debug)]
#[diesel(table_name = events)]
pub(crate) struct EventRow {
    pub(crate) subject_kind: String,
    pub(crate) subject_id: i64,
    pub(crate) seq: i64,
    pub(crate) time: i64,
    pub(crate) what: String,
    pub(crate) reason_code: String,
    pub(crate) reason: String,
    pub(crate) actor: String,
}

/// Ids are positive and well below 2^63 in practice; the conversions say so in one place.
pub(crate) fn to_u64(id: i64) -> u64 {
    id.max(0).unsigned_abs()
}

pub(crate) fn to_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

pub(crate) fn corrupt(table: &'static str, id: i64, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        id,
        message: message.to_string(),
    }
}

fn ip(table: &'static str, id: i64, value: Option<String>) -> Result<Option<IpAddr>> {
    value
        .map(|v| {
            v.parse()
                .map_err(|e| corrupt(table, id, format!("address {v:?}: {e}")))
        })
        .transpose()
}

impl NodeRow {
    pub(crate) fn into_model(self) -> Result<Node> {
        let id = self.id;
        let bad = |m: String| corrupt("nodes", id, m);
        let hold = match (self.hold_reason, self.hold_by) {
            (Some(reason), by) => Some(HoldNote {
                reason,
                by: by.unwrap_or_default(),
            }),
            (None, Some(by)) => Some(HoldNote {
                reason: String::new(),
                by,
            }),
            (None, None) => None,
        };
        Ok(Node {
            id: NodeId::new(to_u64(id)),
            provider: ProviderName::new(self.provider)
                .map_err(|e| bad(format!("provider: {e}")))?,
            label: LabelName::new(self.label).map_err(|e| bad(format!("label: {e}")))?,
            az: self.az,
            hostname: self.hostname,
            external_id: self.external_id.map(ExternalId::new),
            public_ip: ip("nodes", id, self.public_ip)?,
            private_ip: ip("nodes", id, self.private_ip)?,
            state: self
                .state
                .parse::<NodeState>()
                .map_err(|e| bad(e.to_string()))?,
            state_time: Timestamp::from_unix_millis(self.state_time),
            image: self.image_id.map(|i| ImageId::new(to_u64(i))),
            request: self.request_id.map(|r| RequestId::new(to_u64(r))),
            hold,
            created: Timestamp::from_unix_millis(self.created),
            host_keys: self
                .host_keys
                .map(|keys| keys.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

impl ImageRow {
    pub(crate) fn into_model(self) -> Result<Image> {
        let id = self.id;
        let bad = |m: String| corrupt("images", id, m);
        Ok(Image {
            id: ImageId::new(to_u64(id)),
            provider: ProviderName::new(self.provider)
                .map_err(|e| bad(format!("provider: {e}")))?,
            name: ImageName::new(self.name).map_err(|e| bad(format!("name: {e}")))?,
            version: Timestamp::from_unix_millis(self.version),
            hostname: self.hostname,
            external_id: self.external_id.map(ExternalId::new),
            server_external_id: self.server_external_id.map(ExternalId::new),
            state: self
                .state
                .parse::<ImageState>()
                .map_err(|e| bad(e.to_string()))?,
            state_time: Timestamp::from_unix_millis(self.state_time),
        })
    }
}

impl BuildRequestRow {
    pub(crate) fn into_model(self) -> Result<BuildRequest> {
        let id = self.id;
        let bad = |m: String| corrupt("build_requests", id, m);
        Ok(BuildRequest {
            id: BuildRequestId::new(to_u64(id)),
            provider: self
                .provider
                .map(|p| ProviderName::new(p).map_err(|e| bad(format!("provider: {e}"))))
                .transpose()?,
            image: ImageName::new(self.image).map_err(|e| bad(format!("image: {e}")))?,
            requested_by: self.requested_by,
            state: self
                .state
                .parse::<BuildRequestState>()
                .map_err(|e| bad(e.to_string()))?,
            state_time: Timestamp::from_unix_millis(self.state_time),
            failure: self.failure,
            created: Timestamp::from_unix_millis(self.created),
        })
    }
}

impl EventRow {
    pub(crate) fn into_model(self) -> Result<Event> {
        let subject =
            Subject::from_parts(&self.subject_kind, to_u64(self.subject_id)).ok_or_else(|| {
                corrupt(
                    "events",
                    self.subject_id,
                    format!("subject kind {:?}", self.subject_kind),
                )
            })?;
        Ok(Event {
            subject,
            seq: to_u64(self.seq),
            time: Timestamp::from_unix_millis(self.time),
            what: self.what,
            reason: Reason {
                code: ReasonCode::parse(&self.reason_code),
                text: self.reason,
            },
            actor: self.actor,
        })
    }
}
