//! Work in flight: every executor and job the daemon runs, keyed by what it works on, in
//! one map. Starting work that runs already is refused; a deadline cancels it by key; a
//! finished or cancelled task leaves the map by its task id, so that work started anew on
//! the same key (a delete after a cancelled launch) is not forgotten with it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use nodepool_model::{ExternalId, ImageId, NodeId, ProviderName, Subject};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tracing::error;

use crate::jobs;

/// What a piece of work is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum WorkOn {
    /// A node: its launch or its deletion.
    Node(NodeId),
    /// An image upload: its build or its deletion.
    Image(ImageId),
    /// A leaked server's deletion.
    Leak(ProviderName, ExternalId),
    /// The `cron: cleanup` job.
    Cleanup,
    /// The `cron: check` of one READY node.
    Check(NodeId),
}

impl WorkOn {
    /// What the store's claims call it, for work that other daemons could also take.
    pub(crate) fn subject(&self) -> Option<Subject> {
        match self {
            WorkOn::Node(id) => Some(Subject::Node(*id)),
            WorkOn::Image(id) => Some(Subject::Image(*id)),
            WorkOn::Leak(..) | WorkOn::Cleanup | WorkOn::Check(_) => None,
        }
    }
}

/// The work in flight.
#[derive(Debug)]
pub(crate) struct Work {
    tasks: JoinSet<()>,
    running: BTreeMap<WorkOn, (Id, AbortHandle)>,
    /// Bounds the checks that log in at once.
    checks: Arc<Semaphore>,
}

impl Default for Work {
    fn default() -> Self {
        Work {
            tasks: JoinSet::new(),
            running: BTreeMap::new(),
            checks: Arc::new(Semaphore::new(jobs::CHECKS_AT_ONCE)),
        }
    }
}

impl Work {
    /// Whether work on `on` runs.
    pub(crate) fn runs(&self, on: &WorkOn) -> bool {
        self.running.contains_key(on)
    }

    /// Runs `job` as the work on `on`; the caller has checked that none runs.
    pub(crate) fn spawn(&mut self, on: WorkOn, job: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(job);
        self.running.insert(on, (handle.id(), handle));
    }

    /// Cancels the work on `on`, if it runs: the next start finishes or undoes what it
    /// left, as after a crash.
    pub(crate) fn cancel(&mut self, on: &WorkOn) {
        if let Some((_, task)) = self.running.remove(on) {
            task.abort();
        }
    }

    /// The nodes whose launch or deletion runs.
    pub(crate) fn nodes(&self) -> BTreeSet<NodeId> {
        self.running
            .keys()
            .filter_map(|on| match on {
                WorkOn::Node(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The uploads whose build or deletion runs.
    pub(crate) fn images(&self) -> BTreeSet<ImageId> {
        self.running
            .keys()
            .filter_map(|on| match on {
                WorkOn::Image(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The semaphore that bounds the checks logging in at once.
    pub(crate) fn check_slots(&self) -> Arc<Semaphore> {
        self.checks.clone()
    }

    /// How many tasks run.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Waits for the next task to end (forever when none runs).
    pub(crate) async fn next_finished(&mut self) -> Result<Id, JoinError> {
        match self.tasks.join_next_with_id().await {
            Some(joined) => joined.map(|(id, ())| id),
            None => std::future::pending().await,
        }
    }

    /// A task that has ended, if one has, without waiting.
    pub(crate) fn try_finished(&mut self) -> Option<Result<Id, JoinError>> {
        self.tasks
            .try_join_next_with_id()
            .map(|joined| joined.map(|(id, ())| id))
    }

    /// Forgets the task that ended; a panic is logged.
    pub(crate) fn finished(&mut self, joined: Result<Id, JoinError>) {
        let id = match joined {
            Ok(id) => id,
            Err(join) => {
                if !join.is_cancelled() {
                    error!("an executor panicked: {join}");
                }
                join.id()
            }
        };
        self.running.retain(|_, (task, _)| *task != id);
    }

    /// Cancels everything still running.
    pub(crate) fn abort_all(&mut self) {
        self.tasks.abort_all();
        self.running.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn work_is_forgotten_by_its_task_not_by_its_key() {
        let mut work = Work::default();
        let node = WorkOn::Node(NodeId::new(5));
        work.spawn(node.clone(), std::future::pending());
        work.spawn(WorkOn::Image(ImageId::new(2)), std::future::pending());
        assert!(work.runs(&node));
        assert_eq!(work.nodes(), [NodeId::new(5)].into());
        assert_eq!(work.images(), [ImageId::new(2)].into());

        // A deadline cancels the launch, and a delete starts on the same node.
        work.cancel(&node);
        assert!(!work.runs(&node));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        work.spawn(node.clone(), async move {
            let _ = wait.await;
        });
        // The cancelled launch reports: the delete is still known to run.
        let cancelled = work.next_finished().await;
        assert!(cancelled.as_ref().is_err_and(JoinError::is_cancelled));
        work.finished(cancelled);
        assert!(work.runs(&node));
        // The delete ends: forgotten.
        let _ = go.send(());
        let done = work.next_finished().await;
        assert!(done.is_ok());
        work.finished(done);
        assert!(!work.runs(&node));
        assert_eq!(work.len(), 1, "the image's work runs on");
        work.abort_all();
        assert!(work.images().is_empty());
    }

    #[test]
    fn only_nodes_and_images_are_claimed_in_the_store() {
        let subjects: Vec<Option<Subject>> = [
            WorkOn::Node(NodeId::new(1)),
            WorkOn::Image(ImageId::new(2)),
            WorkOn::Leak("cloud1".parse().unwrap(), ExternalId::new("srv")),
            WorkOn::Cleanup,
            WorkOn::Check(NodeId::new(1)),
        ]
        .iter()
        .map(WorkOn::subject)
        .collect();
        assert_eq!(
            subjects,
            [
                Some(Subject::Node(NodeId::new(1))),
                Some(Subject::Image(ImageId::new(2))),
                None,
                None,
                None
            ]
        );
    }
}
