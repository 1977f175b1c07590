//! Reading and pruning the event log.

use diesel::prelude::*;
use nodepool_model::{Event, Subject, Timestamp};

use crate::Store;
use crate::error::Result;
use crate::rows::{EventRow, to_i64};
use crate::schema::events::dsl as e;

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

    /// Deletes the events older than `before` of subjects that no longer exist, and returns
    /// how many went. The histories of existing subjects are kept whole.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn prune_events(&self, before: Timestamp) -> Result<usize> {
        self.write(|conn| {
            let mut pruned = 0;
            for (kind, table) in [
                ("node", "nodes"),
                ("image", "images"),
                ("request", "node_requests"),
                ("build", "build_requests"),
            ] {
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
