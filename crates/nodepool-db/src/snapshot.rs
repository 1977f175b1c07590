//! The planning snapshot: everything the policies look at, from one point in time.

use nodepool_model::{RequestState, Snapshot};

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
        self.read(|conn| {
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
        })
    }
}
