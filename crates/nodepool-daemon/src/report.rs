//! What the loop tells: lasting conditions in the log, once each while they last
//! ([`Said`]); the status that `/health` and the API's long polls read; the Prometheus
//! gauges. Nothing here decides anything; it says what the round saw and the plans chose.

use std::collections::BTreeMap;
use std::sync::Arc;

use nodepool_config::Config;
use nodepool_executor::clouds::Clouds;
use nodepool_image::ImagePlan;
use nodepool_model::{ProviderName, Reason, ReasonCode, Snapshot, Timestamp};
use nodepool_node::NodePlan;
use tokio::sync::watch;

use crate::config_watch::ConfigWatch;
use crate::metrics::Gauges;
use crate::peers::Leader;
use crate::said::{Level, Said};
use crate::status::{ProviderStatus, Status};

/// The loop's reporting.
#[derive(Debug)]
pub(crate) struct Report {
    said: Said,
    /// What the API sees of the loop, published after every round.
    status: watch::Sender<Arc<Status>>,
    gauges: Gauges,
    /// Why each provider that could not be connected could not, and when.
    connect_errors: BTreeMap<ProviderName, (Timestamp, String)>,
}

impl Report {
    /// Reports to `status`.
    pub(crate) fn new(status: watch::Sender<Arc<Status>>) -> Report {
        Report {
            said: Said::default(),
            status,
            gauges: Gauges::default(),
            connect_errors: BTreeMap::new(),
        }
    }

    /// The status the API reads, for a task that must see the loop live (the lease).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Status>> {
        self.status.subscribe()
    }

    /// Records why providers could not be connected; said each round while they are not.
    pub(crate) fn connect_failed(
        &mut self,
        failed: Vec<(ProviderName, nodepool_provider::ProviderError)>,
        now: Timestamp,
    ) {
        for (provider, error) in failed {
            self.connect_errors
                .insert(provider, (now, error.to_string()));
        }
    }

    /// Records how the round's read of the store went, for `/health`.
    pub(crate) fn store_read(&mut self, now: Timestamp, result: Result<(), String>) {
        self.status.send_if_modified(|status| {
            let store = &mut Arc::make_mut(status).store;
            let before = store.clone();
            match result {
                Ok(()) => {
                    store.last_ok = Some(now);
                    store.error = None;
                }
                Err(error) => {
                    let since = store.error.as_ref().map_or(now, |(since, _)| *since);
                    store.error = Some((since, error));
                }
            }
            // Long polls wait on rounds, not on this; only a change of health is news.
            before.error.is_some() != store.error.is_some()
        });
    }

    /// Says what the policies chose not to do, once each while it lasts: what waits on the
    /// cloud (a flavor, a connection) as a warning, the rest as information.
    pub(crate) fn explain(&mut self, images: &ImagePlan, nodes: &NodePlan) {
        let reasons = images
            .waits
            .iter()
            .map(|w| &w.reason)
            .chain(nodes.notes.iter().map(|n| &n.reason));
        for reason in reasons {
            self.said.say(level(reason), reason.to_string());
        }
    }

    /// Says, while it lasts, why each provider that is not connected could not be, and
    /// what failed in the last listing of each that is; and, once per image, that images
    /// made by diskimage-builder are not built here (the image policy leaves them out, so
    /// their labels get no nodes from them).
    pub(crate) fn notes(&mut self, config: &Config, clouds: &Clouds) {
        for provider in &config.providers {
            match clouds.by_name.get(&provider.name) {
                None => {
                    if let Some((_, error)) = self.connect_errors.get(&provider.name) {
                        self.said.say(
                            Level::Warn,
                            format!("provider {}: cannot connect: {error}", provider.name),
                        );
                    }
                }
                Some(cloud) => {
                    for error in &cloud.failing {
                        self.said
                            .say(Level::Warn, format!("provider {}: {error}", provider.name));
                    }
                }
            }
            for image in &provider.images {
                if let nodepool_config::ImageSource::Diskimage(diskimage) = &image.source {
                    self.said.say(
                        Level::Warn,
                        format!(
                            "provider {}: image {} is made by diskimage-builder (diskimage {diskimage}), which this version does not build: nothing is built or launched from it; give it base-image to build it by snapshot",
                            provider.name, image.name
                        ),
                    );
                }
            }
        }
    }

    /// Says which daemon runs the periodic jobs when it becomes another one, and again
    /// when that changes.
    pub(crate) fn jobs_leader(&mut self, leader: &Leader) {
        let text = match leader {
            Leader::This => None,
            Leader::Other(first) => Some(format!(
                "the periodic jobs (cleanup, check) run in daemon {} on {}, the oldest",
                first.id, first.host
            )),
            Leader::Unknown => return,
        };
        self.said.state("jobs", Level::Info, text);
    }

    /// Ends a round: tells the API what it saw (long polls wake to read the store again),
    /// sets the gauges, and forgets the conditions it did not say.
    pub(crate) fn end_round(
        &mut self,
        now: Timestamp,
        config: &ConfigWatch,
        clouds: &Clouds,
        snapshot: &Snapshot,
    ) {
        let current = config.current().clone();
        self.connect_errors
            .retain(|name, _| current.provider(name.as_str()).is_some());
        let providers = current
            .providers
            .iter()
            .map(|p| (p.name.clone(), self.provider_status(&p.name, clouds)))
            .collect();
        let (error, loaded) = (config.error().map(str::to_owned), config.loaded());
        self.status.send_modify(|status| {
            let status = Arc::make_mut(status);
            status.config = current.clone();
            status.config_error = error;
            status.config_loaded = loaded;
            status.rounds += 1;
            status.last_round = Some(now);
            status.providers = providers;
        });
        self.gauges.update(snapshot, clouds, &current);
        self.said.end_round();
    }

    /// One provider as `/health` shows it.
    fn provider_status(&self, name: &ProviderName, clouds: &Clouds) -> ProviderStatus {
        let Some(cloud) = clouds.by_name.get(name) else {
            return ProviderStatus {
                connected: false,
                last_ok: None,
                last_error: self
                    .connect_errors
                    .get(name)
                    .map(|(at, message)| (*at, format!("connect: {message}"))),
            };
        };
        ProviderStatus {
            connected: true,
            last_ok: cloud
                .connection
                .stats()
                .values()
                .filter_map(|s| s.last_ok)
                .max(),
            last_error: cloud
                .connection
                .last_error()
                .map(|(at, operation, message)| (at, format!("{operation}: {message}"))),
        }
    }

    /// Gives the status back, so that long polls end when the loop does.
    pub(crate) fn close(self) {
        drop(self.status);
    }
}

/// How a plan's note is logged: waits on the cloud are warnings.
fn level(reason: &Reason) -> Level {
    match reason.code {
        ReasonCode::NoFlavor | ReasonCode::NotConnected | ReasonCode::RemovalPending => Level::Warn,
        _ => Level::Info,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use nodepool_image::Wait;
    use nodepool_node::{About, Note};

    use super::*;

    /// What a subscriber writes, to read back.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn report() -> Report {
        let status = Status {
            started: Timestamp::from_unix_seconds(0),
            installation: nodepool_model::InstallationId::new("test"),
            config_file: "nodepool.yaml".into(),
            config: Arc::new(
                nodepool_config::parse("labels: []\nproviders: []\n", "nodepool.yaml")
                    .expect("an empty config")
                    .config,
            ),
            config_loaded: Timestamp::from_unix_seconds(0),
            config_error: None,
            rounds: 0,
            last_round: None,
            tick: std::time::Duration::from_secs(5),
            providers: BTreeMap::new(),
            store: Default::default(),
        };
        Report::new(watch::channel(Arc::new(status)).0)
    }

    #[test]
    fn a_plans_waits_are_said_once_while_they_last_waits_on_the_cloud_as_warnings() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        // Other tests' subscribers (on other threads) may have left the callsites' interest
        // and the global level hint cached for less than this one wants.
        tracing::callsite::rebuild_interest_cache();

        let flavor = ImagePlan {
            waits: vec![Wait {
                provider: "cloud1".parse().unwrap(),
                image: "big".parse().unwrap(),
                until: None,
                reason: Reason::new(ReasonCode::NoFlavor, "image big waits: no flavor"),
            }],
            ..ImagePlan::default()
        };
        let nodes = NodePlan {
            notes: vec![Note {
                about: About::Label("small".parse().unwrap()),
                reason: Reason::new(ReasonCode::AtCapacity, "label small is 1 short"),
            }],
            ..NodePlan::default()
        };
        let mut report = report();
        // Three rounds with both, one without, one with both again.
        for round in [true, true, true, false, true] {
            if round {
                report.explain(&flavor, &nodes);
            }
            report.said.end_round();
        }
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with(" WARN") && lines[0].contains("no flavor"),
            "{text}"
        );
        assert!(
            lines[1].starts_with(" INFO") && lines[1].contains("1 short"),
            "{text}"
        );
        assert_eq!(lines[2..], lines[..2]);
    }
}
