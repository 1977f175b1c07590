//! Image build requests: an operator's `nodepool image-update`, served by a daemon.

use diesel::prelude::*;
use nodepool_model::{
    BuildRequest, BuildRequestId, BuildRequestState, ImageName, ProviderName, Reason, ReasonCode,
    Subject, Timestamp,
};

use crate::connection::AnyConnection;
use crate::error::{Result, StoreError};
use crate::rows::{BuildRequestRow, to_i64};
use crate::schema::build_requests::dsl as b;
use crate::{Store, append_event, next_ids};

fn load(conn: &mut AnyConnection, id: BuildRequestId) -> Result<BuildRequest> {
    b::build_requests
        .find(to_i64(id.get()))
        .select(BuildRequestRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(StoreError::NotFound {
            subject: Subject::Build(id),
        })?
        .into_model()
}

pub(crate) fn open_build_requests(conn: &mut AnyConnection) -> Result<Vec<BuildRequest>> {
    b::build_requests
        .filter(b::state.eq_any([
            BuildRequestState::Pending.as_str(),
            BuildRequestState::Started.as_str(),
        ]))
        .order((b::created, b::id))
        .select(BuildRequestRow::as_select())
        .load(conn)?
        .into_iter()
        .map(BuildRequestRow::into_model)
        .collect()
}

impl Store {
    /// Records a request to build `image` now, on `provider` or (with `None`) on every
    /// provider that has it.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn request_image_build(
        &self,
        provider: Option<&ProviderName>,
        image: &ImageName,
        requested_by: &str,
        now: Timestamp,
    ) -> Result<BuildRequest> {
        self.write(|conn| {
            let id = next_ids(conn, "build", 1)?;
            let row = BuildRequestRow {
                id,
                provider: provider.map(ToString::to_string),
                image: image.to_string(),
                requested_by: requested_by.to_owned(),
                state: BuildRequestState::Pending.as_str().to_owned(),
                state_time: now.unix_millis(),
                failure: None,
                created: now.unix_millis(),
            };
            diesel::insert_into(b::build_requests)
                .values(&row)
                .execute(conn)?;
            let request = row.into_model()?;
            let on =
                provider.map_or_else(|| "every provider".to_owned(), |p| format!("provider {p}"));
            let reason = Reason::new(
                ReasonCode::Operator,
                format!("{requested_by} asked for a build of {image} on {on}"),
            );
            append_event(
                conn,
                Subject::Build(request.id),
                now,
                "created",
                &reason,
                &self.actor,
            )?;
            Ok(request)
        })
    }

    /// Moves a build request on: `pending` to `started` to `done` or `failed`.
    /// A failed request keeps `reason`'s text as its failure.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidTransition`] for a move backwards or out of a finished request.
    pub fn set_build_request_state(
        &self,
        id: BuildRequestId,
        to: BuildRequestState,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<BuildRequest> {
        use BuildRequestState::{Done, Failed, Pending, Started};
        self.write(|conn| {
            let request = load(conn, id)?;
            if request.state == to {
                return Ok(request);
            }
            let allowed = matches!(
                (request.state, to),
                (Pending, Started | Done | Failed) | (Started, Done | Failed)
            );
            if !allowed {
                return Err(StoreError::InvalidTransition {
                    subject: Subject::Build(id),
                    from: request.state.to_string(),
                    to: to.to_string(),
                });
            }
            let failure = (to == Failed).then(|| reason.text.clone());
            let changed = diesel::update(
                b::build_requests.filter(
                    b::id
                        .eq(to_i64(id.get()))
                        .and(b::state.eq(request.state.as_str())),
                ),
            )
            .set((
                b::state.eq(to.as_str()),
                b::state_time.eq(now.unix_millis()),
                b::failure.eq(failure),
            ))
            .execute(conn)?;
            if changed == 0 {
                return Err(StoreError::Raced {
                    subject: Subject::Build(id),
                    change: format!("becoming {to}"),
                });
            }
            append_event(
                conn,
                Subject::Build(id),
                now,
                &format!("state {to}"),
                reason,
                &self.actor,
            )?;
            load(conn, id)
        })
    }

    /// One build request.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown id.
    pub fn build_request(&self, id: BuildRequestId) -> Result<BuildRequest> {
        self.read(|conn| load(conn, id))
    }

    /// Build requests not yet finished (`pending` or `started`), oldest first.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn open_build_requests(&self) -> Result<Vec<BuildRequest>> {
        self.read(open_build_requests)
    }
}
