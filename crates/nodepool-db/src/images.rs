//! Image uploads: intent, template server, snapshot, state changes and removal.

use diesel::prelude::*;
use nodepool_model::{
    BuildRequestId, ExternalId, Image, ImageId, ImageName, ImageState, ProviderName, Reason,
    ReasonCode, Subject, Timestamp,
};

use crate::connection::AnyConnection;
use crate::error::{Result, StoreError};
use crate::rows::{ImageRow, to_i64};
use crate::schema::images::dsl as i;
use crate::{Store, append_event, next_ids};

/// An image upload to record before its template server is created.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewImage {
    /// The provider it is built on.
    pub provider: ProviderName,
    /// The image's config name.
    pub name: ImageName,
    /// When the build starts: the version that orders uploads.
    pub version: Timestamp,
    /// The operator's request it serves, if any.
    pub build_request: Option<BuildRequestId>,
}

impl NewImage {
    /// A build of `name` on `provider` starting at `version`.
    pub fn new(provider: ProviderName, name: ImageName, version: Timestamp) -> NewImage {
        NewImage {
            provider,
            name,
            version,
            build_request: None,
        }
    }

    /// Marks the build as serving an operator's request.
    pub fn for_request(mut self, request: BuildRequestId) -> NewImage {
        self.build_request = Some(request);
        self
    }
}

/// Which images to list; `None` fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// Only this provider's.
    pub provider: Option<ProviderName>,
    /// Only uploads of this image.
    pub name: Option<ImageName>,
    /// Only uploads in this state.
    pub state: Option<ImageState>,
    /// Only uploads serving this build request.
    pub build_request: Option<BuildRequestId>,
}

/// Inserts a building upload and its first event within the caller's transaction.
pub(crate) fn insert_image(
    conn: &mut AnyConnection,
    new: &NewImage,
    now: Timestamp,
    reason: &Reason,
    actor: &str,
) -> Result<Image> {
    let id = next_ids(conn, "image", 1)?;
    let row = ImageRow {
        id,
        provider: new.provider.to_string(),
        name: new.name.to_string(),
        version: new.version.unix_millis(),
        hostname: None,
        external_id: None,
        server_external_id: None,
        state: ImageState::Building.as_str().to_owned(),
        state_time: now.unix_millis(),
        build_request_id: new.build_request.map(|r| to_i64(r.get())),
        created: now.unix_millis(),
    };
    diesel::insert_into(i::images).values(&row).execute(conn)?;
    let image = row.into_model()?;
    append_event(
        conn,
        Subject::Image(image.id),
        now,
        "created",
        reason,
        actor,
    )?;
    Ok(image)
}

pub(crate) fn load_image(conn: &mut AnyConnection, id: ImageId) -> Result<Image> {
    i::images
        .find(to_i64(id.get()))
        .select(ImageRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(StoreError::NotFound {
            subject: Subject::Image(id),
        })?
        .into_model()
}

pub(crate) fn image_intents(conn: &mut AnyConnection) -> Result<Vec<Image>> {
    i::images
        .filter(
            i::state
                .eq(ImageState::Building.as_str())
                .and(i::server_external_id.is_null()),
        )
        .order(i::id)
        .select(ImageRow::as_select())
        .load(conn)?
        .into_iter()
        .map(ImageRow::into_model)
        .collect()
}

pub(crate) fn list_images(conn: &mut AnyConnection, filter: &ImageFilter) -> Result<Vec<Image>> {
    let mut query = i::images.select(ImageRow::as_select()).into_boxed();
    if let Some(provider) = &filter.provider {
        query = query.filter(i::provider.eq(provider.as_str().to_owned()));
    }
    if let Some(name) = &filter.name {
        query = query.filter(i::name.eq(name.as_str().to_owned()));
    }
    if let Some(state) = filter.state {
        query = query.filter(i::state.eq(state.as_str()));
    }
    if let Some(request) = filter.build_request {
        query = query.filter(i::build_request_id.eq(to_i64(request.get())));
    }
    query
        .order((i::provider, i::name, i::version, i::id))
        .load(conn)?
        .into_iter()
        .map(ImageRow::into_model)
        .collect()
}

fn not_building(image: &Image, what: &str) -> StoreError {
    StoreError::Conflict {
        subject: Subject::Image(image.id),
        message: format!("is {}; only a building image gets {what}", image.state),
    }
}

impl Store {
    /// Records an image build about to start: state `building`, no template server yet.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn create_image(&self, new: &NewImage, now: Timestamp, reason: &Reason) -> Result<Image> {
        self.write(|conn| insert_image(conn, new, now, reason, &self.actor))
    }

    /// Attaches the template server the build boots, and its host name (which is also the
    /// snapshot's name).
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if the image already has a template server or is not building.
    pub fn attach_image_template(
        &self,
        id: ImageId,
        server: &ExternalId,
        hostname: &str,
        now: Timestamp,
    ) -> Result<Image> {
        self.write(|conn| {
            let image = load_image(conn, id)?;
            if image.server_external_id.as_ref() == Some(server) {
                return Ok(image);
            }
            if image.state != ImageState::Building {
                return Err(not_building(&image, "a template server"));
            }
            let changed = diesel::update(
                i::images.filter(
                    i::id
                        .eq(to_i64(id.get()))
                        .and(i::server_external_id.is_null()),
                ),
            )
            .set((
                i::server_external_id.eq(server.as_str()),
                i::hostname.eq(hostname),
            ))
            .execute(conn)?;
            if changed == 0 {
                return Err(StoreError::Conflict {
                    subject: Subject::Image(id),
                    message: format!(
                        "already has template server {}",
                        image
                            .server_external_id
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ),
                });
            }
            let reason = Reason::new(
                ReasonCode::ServerCreated,
                "the cloud accepted the template server",
            );
            append_event(
                conn,
                Subject::Image(id),
                now,
                &format!("template server {server} ({hostname})"),
                &reason,
                &self.actor,
            )?;
            load_image(conn, id)
        })
    }

    /// Attaches the cloud's id of the snapshot taken from the template server.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if the image already has a snapshot or is not building;
    /// [`StoreError::DuplicateExternalId`] if another upload of the provider has this id.
    pub fn attach_image_snapshot(
        &self,
        id: ImageId,
        external_id: &ExternalId,
        now: Timestamp,
    ) -> Result<Image> {
        self.write(|conn| {
            let image = load_image(conn, id)?;
            if image.external_id.as_ref() == Some(external_id) {
                return Ok(image);
            }
            if image.state != ImageState::Building {
                return Err(not_building(&image, "a snapshot"));
            }
            let updated = diesel::update(
                i::images.filter(i::id.eq(to_i64(id.get())).and(i::external_id.is_null())),
            )
            .set(i::external_id.eq(external_id.as_str()))
            .execute(conn);
            match updated {
                Ok(1) => {}
                Ok(_) => {
                    return Err(StoreError::Conflict {
                        subject: Subject::Image(id),
                        message: "already has a snapshot".into(),
                    });
                }
                Err(error) if crate::error::is_unique_violation(&error) => {
                    return Err(StoreError::DuplicateExternalId {
                        subject: Subject::Image(id),
                        provider: image.provider.to_string(),
                        external_id: external_id.to_string(),
                    });
                }
                Err(error) => return Err(error.into()),
            }
            let reason = Reason::new(
                ReasonCode::SnapshotCreated,
                "the cloud accepted the snapshot",
            );
            append_event(
                conn,
                Subject::Image(id),
                now,
                &format!("snapshot {external_id}"),
                &reason,
                &self.actor,
            )?;
            load_image(conn, id)
        })
    }

    /// Moves an image upload to `to`, stamping `state_time` and logging `reason`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidTransition`] for a move the image state machine does not allow.
    pub fn set_image_state(
        &self,
        id: ImageId,
        to: ImageState,
        now: Timestamp,
        reason: &Reason,
    ) -> Result<Image> {
        self.write(|conn| {
            let image = load_image(conn, id)?;
            if image.state == to {
                return Ok(image);
            }
            if !image.state.can_become(to) {
                return Err(StoreError::InvalidTransition {
                    subject: Subject::Image(id),
                    from: image.state.to_string(),
                    to: to.to_string(),
                });
            }
            let changed = diesel::update(
                i::images.filter(
                    i::id
                        .eq(to_i64(id.get()))
                        .and(i::state.eq(image.state.as_str())),
                ),
            )
            .set((
                i::state.eq(to.as_str()),
                i::state_time.eq(now.unix_millis()),
            ))
            .execute(conn)?;
            if changed == 0 {
                return Err(StoreError::Raced {
                    subject: Subject::Image(id),
                    change: format!("becoming {to}"),
                });
            }
            append_event(
                conn,
                Subject::Image(id),
                now,
                &format!("state {to}"),
                reason,
                &self.actor,
            )?;
            load_image(conn, id)
        })
    }

    /// Forgets an upload whose cloud image and template server are gone. Its events stay.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] unless the upload is in `delete`.
    pub fn remove_image(&self, id: ImageId, now: Timestamp, reason: &Reason) -> Result<()> {
        self.write(|conn| {
            let image = load_image(conn, id)?;
            if image.state != ImageState::Delete {
                return Err(StoreError::Conflict {
                    subject: Subject::Image(id),
                    message: format!("is {}; only an image in delete can be removed", image.state),
                });
            }
            diesel::delete(i::images.find(to_i64(id.get()))).execute(conn)?;
            append_event(
                conn,
                Subject::Image(id),
                now,
                "removed",
                reason,
                &self.actor,
            )
        })
    }

    /// One image upload.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown id.
    pub fn image(&self, id: ImageId) -> Result<Image> {
        self.read(|conn| load_image(conn, id))
    }

    /// Image uploads matching `filter`, ordered by provider, image and version.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn images(&self, filter: &ImageFilter) -> Result<Vec<Image>> {
        self.read(|conn| list_images(conn, filter))
    }
}
