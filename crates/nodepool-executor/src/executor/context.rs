//! What every executor acts with, and the waits and steps they share: watching a
//! provider's listings for a server, finding its address, logging in, and recording a
//! failure.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nodepool_config::{Config, Provider as ProviderConfig, ProviderImage};
use nodepool_db::Store;
use std::fmt;

use nodepool_db::StoreError;
use nodepool_model::{
    Attempt, ExternalId, Failure, FailureKind, Human, Image, ImageState, InstallationId, Node,
    NodeState, ProviderName, Reason, ReasonCode, Subject, Timestamp,
};
use nodepool_provider::{
    Clock, ErrorKind, NetworkRef, Owner, Provider, ProviderError, ServerStatus, Tags,
};
use tracing::warn;

use crate::clouds::Connection;
use crate::listing::{ServerFeed, Servers};
use crate::remote::{Remote, RemoteError, Target};
use crate::store;

/// How often a wait asks the cloud again (2014 `ITERATE_INTERVAL`).
pub(super) const POLL: Duration = Duration::from_secs(2);
/// How long a template's snapshot task may go on after its image is active.
const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// What every executor needs.
#[derive(Clone, Debug)]
pub struct Context {
    /// Where every step is recorded.
    pub store: Store,
    /// The only source of time.
    pub clock: Arc<dyn Clock>,
    /// This installation's id, which tags every cloud resource.
    pub installation: InstallationId,
    /// The config in force when the action was planned.
    pub config: Arc<Config>,
}

/// Why a step failed: what kind of step, and a sentence for the event log. The kind is
/// kept with the recorded failure, so that backoff and operators can tell a full quota
/// from refused credentials or a broken script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// What kind of step failed.
    pub kind: FailureKind,
    /// Why, for the event log.
    pub why: String,
}

impl Context {
    /// A step recorded in the store, tried again while the store fails in a way that may
    /// pass, for up to [`store::PATIENCE`]: one lock or a database restart does not fail
    /// the work.
    pub async fn record<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Store) -> Result<T, StoreError> + Send + Sync + 'static,
    {
        store::call_patiently(&self.store, self.clock.as_ref(), store::PATIENCE, f).await
    }
}

impl Failed {
    pub(super) fn new(kind: FailureKind, why: impl Into<String>) -> Failed {
        Failed {
            kind,
            why: why.into(),
        }
    }

    /// A login that did not succeed: nothing answered in time (a timeout), or the server
    /// refused the login (SSH).
    pub(super) fn login(error: RemoteError, context: impl fmt::Display) -> Failed {
        let kind = match error {
            RemoteError::Unreachable { .. } => FailureKind::Timeout,
            RemoteError::Auth { .. } | RemoteError::HostKey { .. } => FailureKind::Ssh,
        };
        Failed::new(kind, format!("{context}{error}"))
    }

    /// The same failure, its sentence prefixed with `context`.
    pub(super) fn context(self, context: impl fmt::Display) -> Failed {
        Failed {
            kind: self.kind,
            why: format!("{context}: {}", self.why),
        }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl From<ProviderError> for Failed {
    fn from(error: ProviderError) -> Failed {
        let kind = match error.kind {
            ErrorKind::QuotaExceeded => FailureKind::Quota,
            ErrorKind::Auth => FailureKind::Auth,
            ErrorKind::Transient | ErrorKind::RateLimited { .. } => FailureKind::CloudError,
            // Not found, bad request, fatal, and kinds a newer provider crate adds.
            _ => FailureKind::CloudRefused,
        };
        Failed::new(kind, error.to_string())
    }
}

impl From<RemoteError> for Failed {
    fn from(error: RemoteError) -> Failed {
        Failed::new(FailureKind::Ssh, error.to_string())
    }
}

impl From<StoreError> for Failed {
    fn from(error: StoreError) -> Failed {
        Failed::new(FailureKind::Store, error.to_string())
    }
}

impl Context {
    /// The clock's time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(super) fn tags(
        &self,
        provider: &ProviderConfig,
        owner: Owner,
    ) -> std::collections::BTreeMap<String, String> {
        Tags {
            installation: self.installation.clone(),
            provider: provider.name.clone(),
            owner,
        }
        .to_metadata()
    }

    /// Waits for a server to become ACTIVE, until `timeout` after `since`, watching the
    /// provider's listings (the loop lists each provider once per round) instead of asking
    /// the cloud about this one server.
    pub(super) async fn until_active(
        &self,
        servers: &ServerFeed,
        id: &ExternalId,
        since: Timestamp,
        timeout: Duration,
    ) -> Result<nodepool_provider::Server, Failed> {
        let deadline = since.saturating_add(timeout);
        let seen = self
            .watch_until(servers, deadline, |listing| {
                let server = listing.by_id.get(id)?;
                match server.status {
                    ServerStatus::Active => Some(Ok(server.clone())),
                    ServerStatus::Error => Some(Err(Failed::new(
                        FailureKind::CloudRefused,
                        format!(
                            "server {id} went ERROR: {}",
                            server
                                .fault
                                .as_deref()
                                .unwrap_or("the cloud gave no reason")
                        ),
                    ))),
                    _ => None,
                }
            })
            .await?;
        seen.unwrap_or_else(|| {
            Err(Failed::new(
                FailureKind::Timeout,
                format!("server {id} was not ACTIVE after {}", Human(timeout)),
            ))
        })
    }

    /// Waits, watching the listings, until the cloud has no task under way on a server (or
    /// the server is gone), for at most [`TASK_TIMEOUT`].
    pub(super) async fn until_idle(
        &self,
        servers: &ServerFeed,
        id: &ExternalId,
    ) -> Result<(), Failed> {
        let asked = self.now();
        let deadline = asked.saturating_add(TASK_TIMEOUT);
        self.watch_until(servers, deadline, |listing| {
            (listing.at > asked && listing.by_id.get(id).is_none_or(|s| s.task.is_none()))
                .then_some(())
        })
        .await?
        .ok_or_else(|| {
            Failed::new(
                FailureKind::Timeout,
                format!(
                    "the cloud's task on it is still under way after {}",
                    Human(TASK_TIMEOUT)
                ),
            )
        })
    }

    /// Watches the provider's listings (the newest, then each new one) until `seen` makes
    /// something of one; `None` once `deadline` has passed.
    pub(super) async fn watch_until<T>(
        &self,
        servers: &ServerFeed,
        deadline: Timestamp,
        mut seen: impl FnMut(&Servers) -> Option<T>,
    ) -> Result<Option<T>, Failed> {
        let mut watching = servers.watch();
        loop {
            let listing = watching.borrow_and_update().clone();
            if let Some(found) = seen(&listing) {
                return Ok(Some(found));
            }
            if self.now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                changed = watching.changed() => changed.map_err(|_| Failed::new(FailureKind::CloudError, "the provider is no longer connected"))?,
                () = self.clock.sleep_until(deadline) => {}
            }
        }
    }

    /// The address to reach a server at: its public one, else a floating IP from `pool`, else
    /// its private one (a private network the daemon shares).
    pub(super) async fn address(
        &self,
        connection: &Connection,
        provider: &ProviderConfig,
        server: &nodepool_provider::Server,
        owner: Owner,
    ) -> Result<(Option<IpAddr>, Option<IpAddr>), Failed> {
        let private = server.private_ip();
        if let Some(public) = server.public_ip() {
            return Ok((Some(public), private));
        }
        if let Some(pool) = &provider.pool {
            let ip = connection
                .create_floating_ip(&server.id, pool, &self.tags(provider, owner))
                .await
                .map_err(Failed::from)?;
            return Ok((Some(ip.ip), private));
        }
        if private.is_none() {
            return Err(Failed::new(
                FailureKind::CloudRefused,
                format!("server {} has no address", server.id),
            ));
        }
        Ok((None, private))
    }

    /// Logs in as soon as the server answers, until `timeout` after `since`; returns the
    /// host key the server presented.
    pub async fn reach(
        &self,
        remote: &dyn Remote,
        target: &Target,
        since: Timestamp,
        timeout: Duration,
    ) -> Result<Option<String>, RemoteError> {
        let deadline = since.saturating_add(timeout);
        loop {
            match remote.run(target, "echo access okay").await {
                Ok(output) if output.status == 0 => return Ok(output.host_key),
                Ok(output) => {
                    return Err(RemoteError::Unreachable {
                        target: target.to_string(),
                        message: format!("the login shell failed: {}", output.output.trim()),
                    });
                }
                // Another key than the one pinned will not change by waiting.
                Err(error @ RemoteError::HostKey { .. }) => return Err(error),
                Err(error) if self.now() >= deadline => return Err(error),
                Err(_) => self.clock.sleep(POLL).await,
            }
        }
    }

    pub(super) fn key(&self, image: &ProviderImage) -> PathBuf {
        // The config resolved it against the config file's folder already.
        image.private_key.clone()
    }

    /// Marks `node` for deletion after a failed launch, and remembers the failure.
    pub(super) async fn launch_failed(&self, node: &Node, why: Failed) {
        warn!(node = %node.id, provider = %node.provider, label = %node.label, "launch failed: {why}");
        let attempt = Attempt::Launch(node.label.clone());
        self.failed(Subject::Node(node.id), &node.provider, attempt, why)
            .await;
    }

    /// Marks `upload` for deletion after a failed build, and remembers the failure.
    pub(super) async fn build_failed(&self, upload: &Image, why: Failed) {
        warn!(image = %upload.id, provider = %upload.provider, name = %upload.name, "build failed: {why}");
        let attempt = Attempt::Build(upload.name.clone());
        self.failed(Subject::Image(upload.id), &upload.provider, attempt, why)
            .await;
    }

    /// Records a failure (the policies back off on it) and marks its subject for deletion:
    /// the next round deletes it with everything it had in the cloud.
    pub(super) async fn failed(
        &self,
        subject: Subject,
        provider: &ProviderName,
        attempt: Attempt,
        why: Failed,
    ) {
        let now = self.now();
        let code = match attempt {
            Attempt::Launch(_) => ReasonCode::LaunchFailed,
            Attempt::Build(_) => ReasonCode::BuildFailed,
        };
        let reason = Reason::new(code, why.why.clone());
        let failure = Failure {
            provider: provider.clone(),
            attempt,
            at: now,
            kind: why.kind,
            reason: why.why,
        };
        let _ = self
            .record(move |s| {
                s.record_failure(&failure)?;
                match subject {
                    Subject::Node(id) => s
                        .set_node_state(id, NodeState::Delete, now, &reason)
                        .map(drop),
                    Subject::Image(id) => s
                        .set_image_state(id, ImageState::Delete, now, &reason)
                        .map(drop),
                    Subject::Request(_) | Subject::Build(_) => Ok(()),
                }
            })
            .await
            .map_err(|e| warn!(%subject, "cannot record the failure: {e}"));
    }
}

pub(super) fn networks(provider: &ProviderConfig) -> Vec<NetworkRef> {
    provider
        .networks
        .iter()
        .map(|n| match n {
            nodepool_config::Network::Id(id) => NetworkRef::Id(id.clone()),
            nodepool_config::Network::Name(name) => NetworkRef::Name(name.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_kind_of_what_failed() {
        let provider =
            |kind| Failed::from(ProviderError::new(kind, "create server", "cloud1", "no"));
        let cases = [
            (provider(ErrorKind::QuotaExceeded), FailureKind::Quota),
            (provider(ErrorKind::Auth), FailureKind::Auth),
            (provider(ErrorKind::Transient), FailureKind::CloudError),
            (
                provider(ErrorKind::RateLimited { retry_after: None }),
                FailureKind::CloudError,
            ),
            (provider(ErrorKind::BadRequest), FailureKind::CloudRefused),
            (provider(ErrorKind::NotFound), FailureKind::CloudRefused),
            (provider(ErrorKind::Fatal), FailureKind::CloudRefused),
            (
                Failed::from(RemoteError::Auth {
                    target: "ci@192.0.2.1".into(),
                    message: "denied".into(),
                }),
                FailureKind::Ssh,
            ),
            (
                Failed::from(StoreError::Invalid("no".into())),
                FailureKind::Store,
            ),
        ];
        for (failed, kind) in cases {
            assert_eq!(failed.kind, kind, "{failed}");
        }
        // Context is added to the sentence; the kind stays.
        let failed = provider(ErrorKind::QuotaExceeded).context("server s1 not deleted yet");
        assert_eq!(failed.kind, FailureKind::Quota);
        assert!(
            failed.why.starts_with("server s1 not deleted yet: "),
            "{failed}"
        );
    }
}
