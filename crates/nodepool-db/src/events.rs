//! Reading and pruning the event log.

use diesel::prelude::*;
use nodepool_model::{
    BuildRequestId, Event, ImageId, NodeId, Reason, RequestId, Subject, Timestamp,
};

use crate::error::{Result, StoreError};
use crate::rows::{EventRow, to_i64};
use crate::schema::events::dsl as e;
use crate::{Store, append_event};

impl Store {
    /// The whole history of `subject`, oldest first. A subject that never existed has none.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn events(&self, subject: Subject) -> Result<Vec<Event>> {
        self.read(|conn| {
            e::events
                .filter(
                    e::subject_kind
                        .eq(subject.kind())
                        .and(e::subject_id.eq(to_i64(subject.id()))),
                )
                .order(e::seq)
                .select(EventRow::as_select())
                .load(conn)?
                .into_iter()
                .map(EventRow::into_model)
                .collect()
        })
    }

    /// Appends `what` to the history of an existing subject without changing it: the output
    /// of a setup script, the result of a periodic check.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for a subject that does not exist.
    pub fn note(
        &self,
        subject: Subject,
        what: &str,
        reason: &Reason,
        now: Timestamp,
    ) -> Result<()> {
        self.write(|conn| {
            // Writing the subject's row locks it, which keeps its sequence numbers in order.
            // Only a constant table name and an integer are spliced in.
            let sql = format!(
                "UPDATE {} SET id = id WHERE id = {}",
                table(subject),
                to_i64(subject.id())
            );
            if diesel::sql_query(sql).execute(conn)? == 0 {
                return Err(StoreError::NotFound { subject });
            }
            append_event(conn, subject, now, what, reason, &self.actor)
        })
    }

    /// Deletes the events older than `before` of subjects that no longer exist, and returns
    /// how many went. The histories of existing subjects are kept whole.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn prune_events(&self, before: Timestamp) -> Result<usize> {
        self.write(|conn| {
            let mut pruned = 0;
            for subject in [
                Subject::Node(NodeId::new(0)),
                Subject::Image(ImageId::new(0)),
                Subject::Request(RequestId::new(0)),
                Subject::Build(BuildRequestId::new(0)),
            ] {
                let (kind, table) = (subject.kind(), table(subject));
                // Only constants and an integer are spliced in: nothing from outside.
                let sql = format!(
                    "DELETE FROM events WHERE time < {} AND subject_kind = '{kind}' \
                     AND subject_id NOT IN (SELECT id FROM {table})",
                    before.unix_millis()
                );
                pruned += diesel::sql_query(sql).execute(conn)?;
            }
            Ok(pruned)
        })
    }
}

/// The table of a subject's rows.
fn table(subject: Subject) -> &'static str {
    match subject {
        Subject::Node(_) => "nodes",
        Subject::Image(_) => "images",
        Subject::Request(_) => "node_requests",
        Subject::Build(_) => "build_requests",
    }
}
