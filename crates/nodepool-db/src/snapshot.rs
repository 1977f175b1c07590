//! The planning snapshot: everything the policies look at, from one point in time.

use nodepool_model::{RequestState, Snapshot, Subject, Timestamp};

use crate::connection::AnyConnection;

use crate::error::Result;
use crate::images::{ImageFilter, list_images};
use crate::nodes::{NodeFilter, load_nodes};
use crate::{Store, builds, failures, requests};

impl Store {
    /// Every node and image, the waiting requests and the open build requests, read in one
    /// transaction that sees a single point in time.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.read(read_snapshot)
    }

    /// A snapshot, what live daemons other than `daemon` are working on, and how many
    /// daemons are live, seen at the same point in time: a record in the snapshot that is
    /// building and not claimed is one whose daemon died.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn snapshot_and_work(
        &self,
        daemon: &str,
        now: Timestamp,
    ) -> Result<(Snapshot, Vec<Subject>, usize)> {
        self.read(|conn| {
            let snapshot = read_snapshot(conn)?;
            let work = crate::daemons::work_elsewhere(conn, daemon, now)?;
            let live = crate::daemons::live_daemons(conn, now)?;
            Ok((snapshot, work, live))
        })
    }
}

fn read_snapshot(conn: &mut AnyConnection) -> Result<Snapshot> {
    Ok(Snapshot {
        nodes: {
            let mut nodes = load_nodes(conn, &NodeFilter::default())?;
            nodes.sort_unstable_by_key(|n| n.id);
            nodes
        },
        images: list_images(conn, &ImageFilter::default())?,
        requests: requests::list_requests(conn, Some(RequestState::Requested))?,
        build_requests: builds::open_build_requests(conn)?,
        failures: failures::list_failures(conn)?,
    })
}
