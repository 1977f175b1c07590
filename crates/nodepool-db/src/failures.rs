//! Failed launches and builds: recorded by the executors, read by the policies for backoff.

use diesel::prelude::*;
use nodepool_model::{
    Attempt, Failure, FailureKind, ImageName, LabelName, ProviderName, Timestamp,
};

use crate::connection::AnyConnection;
use crate::error::Result;
use crate::rows::corrupt;
use crate::schema::failures::dsl as f;
use crate::{Store, next_ids};

#[derive(Queryable, Selectable)]
#[diesel(table_name = crate::schema::failures)]
struct FailureRow {
    id: i64,
    provider: String,
    attempt: String,
    subject: String,
    time: i64,
    reason: String,
    kind: Option<String>,
}

impl FailureRow {
    fn into_model(self) -> Result<Failure> {
        let bad = |what: &str| corrupt("failures", self.id, what);
        let provider: ProviderName = self.provider.parse().map_err(|_| bad("provider name"))?;
        let attempt = match self.attempt.as_str() {
            "launch" => Attempt::Launch(
                self.subject
                    .parse::<LabelName>()
                    .map_err(|_| bad("label name"))?,
            ),
            "build" => Attempt::Build(
                self.subject
                    .parse::<ImageName>()
                    .map_err(|_| bad("image name"))?,
            ),
            other => return Err(bad(&format!("attempt {other:?}"))),
        };
        Ok(Failure {
            provider,
            attempt,
            at: Timestamp::from_unix_millis(self.time),
            kind: self
                .kind
                .as_deref()
                .map_or(FailureKind::Unknown, FailureKind::parse),
            reason: self.reason,
        })
    }
}

pub(crate) fn list_failures(conn: &mut AnyConnection) -> Result<Vec<Failure>> {
    f::failures
        .order((f::time, f::id))
        .select(FailureRow::as_select())
        .load(conn)?
        .into_iter()
        .map(FailureRow::into_model)
        .collect()
}

impl Store {
    /// Records that a launch or build failed (the policies back off on it).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn record_failure(&self, failure: &Failure) -> Result<()> {
        let (attempt, subject) = match &failure.attempt {
            Attempt::Launch(label) => ("launch", label.as_str()),
            Attempt::Build(image) => ("build", image.as_str()),
        };
        self.write(|conn| {
            let id = next_ids(conn, "failure", 1)?;
            diesel::insert_into(f::failures)
                .values((
                    f::id.eq(id),
                    f::provider.eq(failure.provider.as_str()),
                    f::attempt.eq(attempt),
                    f::subject.eq(subject),
                    f::time.eq(failure.at.unix_millis()),
                    f::reason.eq(&failure.reason),
                    f::kind.eq(failure.kind.as_str()),
                ))
                .execute(conn)?;
            Ok(())
        })
    }

    /// Every recorded failure, oldest first.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn failures(&self) -> Result<Vec<Failure>> {
        self.read(list_failures)
    }

    /// Forgets the failures older than `before` and returns how many went.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn prune_failures(&self, before: Timestamp) -> Result<usize> {
        self.write(|conn| {
            Ok(
                diesel::delete(f::failures.filter(f::time.lt(before.unix_millis())))
                    .execute(conn)?,
            )
        })
    }
}
