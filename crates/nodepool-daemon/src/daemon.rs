//! The daemon: what lives longer than a round, how it starts, how work is dispatched, and
//! how it stops. The loop is `main_loop.rs`, one round is `round.rs`, and what a round's
//! plans ask is carried out by `apply.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nodepool_db::Store;
use nodepool_model::{InstallationId, Timestamp};
use nodepool_node::History;
use nodepool_provider::Clock;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use nodepool_executor::clouds::{Clouds, Connector};
use nodepool_executor::executor::Context;
use nodepool_executor::store;

use crate::config_watch::ConfigWatch;
use crate::peers::Peers;
use crate::report::Report;
use crate::status::Status;
use crate::timers::{Timer, TimerTable};
use crate::work::{Work, WorkOn};
use crate::{DaemonError, api};

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The config file.
    pub config: PathBuf,
    /// secure.conf (nodepool 0.3 and 0.4), whose `[database] dburi` replaces the config's;
    /// `None` reads /etc/nodepool/secure.conf if it exists.
    pub secure: Option<PathBuf>,
    /// The longest wait between two rounds, and between two full listings of a provider.
    pub tick: Duration,
    /// The longest wait between two listings of a provider while executors wait on its
    /// servers (a listing is what tells them a server is ACTIVE or gone); between full
    /// listings only the changes are listed.
    pub busy_tick: Duration,
    /// How often the config file is read again.
    pub reload_every: Duration,
    /// How long a graceful stop waits for running work.
    pub stop_timeout: Duration,
    /// Serve the HTTP API (`api` in the config). Tests that run many daemons in one
    /// process turn it off.
    pub api: bool,
}

impl Options {
    /// The defaults for `config`: a round and a full listing of each provider at least every
    /// 5 s (2014 listed every 5 s too), the changes listed every second while executors wait
    /// on servers (a listing of the few servers that changed costs the cloud little), the
    /// file read every 10 s, 30 s to stop.
    pub fn new(config: impl Into<PathBuf>) -> Options {
        Options {
            config: config.into(),
            secure: None,
            tick: Duration::from_secs(5),
            busy_tick: Duration::from_secs(1),
            reload_every: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(30),
            api: true,
        }
    }
}

/// How long a provider that could not be connected waits before the next try.
pub(crate) const CONNECT_AGAIN: Duration = Duration::from_secs(60);

/// The running daemon: only what lives longer than a round.
#[derive(Debug)]
pub struct Daemon {
    pub(crate) options: Options,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Store,
    pub(crate) installation: InstallationId,
    /// The config in force, and the file it came from.
    pub(crate) config: ConfigWatch,
    /// Each provider's connection and what was last seen there.
    pub(crate) clouds: Clouds,
    /// The allocator's fairness history.
    pub(crate) history: History,
    /// The executors and jobs running.
    pub(crate) work: Work,
    /// When each thing the loop waits for is due.
    pub(crate) timers: TimerTable,
    /// This daemon among the others on the store.
    pub(crate) peers: Peers,
    /// The log of lasting conditions, the API's status, the gauges.
    pub(crate) report: Report,
    /// Since when each provider, label or image gone from the config has been seen gone.
    pub(crate) removals: nodepool_model::Removals,
    /// The API asks for a round now (a new request, a node given back).
    pub(crate) wake: Arc<Notify>,
    /// The API server, while it serves.
    api: Option<ApiServer>,
}

/// The HTTP API's task, its stop signal and where it listens.
#[derive(Debug)]
struct ApiServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    address: Option<std::net::SocketAddr>,
}

impl Daemon {
    /// Loads the config, opens (and migrates) the store, connects the providers and recovers
    /// what a previous run left half done.
    ///
    /// # Errors
    ///
    /// An unreadable or invalid config, or an unusable store.
    pub async fn start(
        options: Options,
        clock: Arc<dyn Clock>,
        connector: Arc<dyn Connector>,
    ) -> Result<Daemon, DaemonError> {
        let now = clock.now();
        let config = ConfigWatch::open(&options.config, options.secure.as_deref(), now)?;
        let sqlite = match &config.current().dburi {
            nodepool_config::DbUri::Sqlite(path) => Some(path.as_path()),
            _ => None,
        };
        let (me, sqlite_lock) = Peers::identify(sqlite, now)?;
        let actor = format!("nodepoold {} (pid {} on {})", &me.id[..8], me.pid, me.host);
        let uri = config.current().dburi.clone();
        let (store, api_store) = tokio::task::spawn_blocking(move || {
            let store = Store::open_and_migrate(&uri, actor, now)?;
            // The API's own connections: a flood of requests never takes the loop's.
            let api_store = store.with_own_connections(api::STORE_CONNECTIONS)?;
            Ok::<_, nodepool_db::StoreError>((store, api_store))
        })
        .await
        .map_err(|e| DaemonError::Store(e.to_string()))?
        .map_err(|e| DaemonError::Store(e.to_string()))?;
        let installation = store::call(&store, |s| s.installation_id())
            .await
            .map_err(|e| DaemonError::Store(e.to_string()))?;
        info!(installation = %installation, config = %options.config.display(), daemon = %me.id, "starting");
        let (status, status_seen) = watch::channel(Arc::new(Status {
            started: now,
            installation: installation.clone(),
            config_file: options.config.clone(),
            config: config.current().clone(),
            config_loaded: now,
            config_error: None,
            rounds: 0,
            last_round: None,
            tick: options.tick,
            providers: BTreeMap::new(),
            store: Default::default(),
        }));
        let report = Report::new(status);
        let wake = Arc::new(Notify::new());
        // The API's address and token are checked before the daemon registers, so that a
        // start they fail leaves no lease behind; it serves once the daemon is registered.
        let listening = if options.api {
            let api = &config.current().api;
            let tokens = api::Tokens::read(api)?;
            let limits = api::Limits::new(api.max_connections);
            Some((api::bind(api.listen).await?, tokens, limits))
        } else {
            None
        };
        let peers = Peers::register(
            &store,
            &clock,
            me,
            &installation,
            sqlite_lock,
            report.subscribe(),
        )
        .await?;
        let api = listening.map(|(listener, tokens, limits)| {
            let address = listener.local_addr().ok();
            if let Some(address) = address {
                info!(token = tokens.wanted(), "API listening on http://{address}");
            }
            let shared = api::Shared::new(
                api_store,
                clock.clone(),
                status_seen,
                wake.clone(),
                crate::metrics::handle(),
                tokens,
            );
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(api::serve(listener, shared, limits, async {
                let _ = stopped.await;
            }));
            ApiServer {
                stop,
                task,
                address,
            }
        });
        let clouds = Clouds::new(clock.clone(), installation.clone(), connector);
        let mut daemon = Daemon {
            options,
            clock,
            store,
            installation,
            config,
            clouds,
            history: History::new(),
            removals: Default::default(),
            work: Work::default(),
            timers: TimerTable::default(),
            peers,
            report,
            wake,
            api,
        };
        // Providers that cannot be connected are said by the first round, and again only
        // once they have been connected and fail again.
        daemon.connect(now).await;
        daemon.config_applied(now);
        Ok(daemon)
    }

    /// The store the daemon uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where the HTTP API listens, when it is served.
    pub fn api_address(&self) -> Option<std::net::SocketAddr> {
        self.api.as_ref().and_then(|api| api.address)
    }

    /// What every executor is given.
    pub(crate) fn context(&self) -> Context {
        Context {
            store: self.store.clone(),
            clock: self.clock.clone(),
            installation: self.installation.clone(),
            config: self.config.current().clone(),
        }
    }

    /// Connects the providers of the config in force that are not (and drops those gone
    /// from it); the ones that fail are tried again a minute after the first failed try.
    /// Returns whether a provider was connected.
    pub(crate) async fn connect(&mut self, now: Timestamp) -> bool {
        let config = self.config.current().clone();
        let before = self.clouds.connected();
        let failed = self.clouds.reconcile(&config).await;
        self.report.connect_failed(failed, now);
        let connected = self.clouds.connected();
        if connected < config.providers.len() {
            if self.timers.get(Timer::Connect).is_none() {
                self.timers
                    .set(Timer::Connect, Some(now.saturating_add(CONNECT_AGAIN)));
            }
        } else {
            self.timers.set(Timer::Connect, None);
        }
        connected > before
    }

    /// Sets the timers that follow the config in force: its next read, and the periodic
    /// jobs by its schedules (fires missed while the daemon was stopped are not made up:
    /// the next one comes on schedule).
    pub(crate) fn config_applied(&mut self, now: Timestamp) {
        let config = self.config.current().clone();
        self.timers.set(
            Timer::Reload,
            Some(now.saturating_add(self.options.reload_every)),
        );
        self.timers
            .set(Timer::Cleanup, config.cron.cleanup.next_after(now));
        self.timers
            .set(Timer::Check, config.cron.check.next_after(now));
    }

    /// Runs `job` as the work on `on`, once: work that runs already is not started again.
    /// Work on a node or an upload is claimed in the store first, unless `claimed` (a
    /// launch or build claims it as it records it), and given back when the job ends.
    /// Returns whether the job started.
    pub(crate) async fn dispatch(
        &mut self,
        on: WorkOn,
        claimed: bool,
        now: Timestamp,
        job: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        // Fenced, or due to be: the lease may have run out, and the work be another
        // daemon's.
        if self.work.runs(&on) || self.peers.fenced || now >= self.peers.fence_at() {
            return false;
        }
        let subject = on.subject();
        if let Some(subject) = subject
            && !claimed
            && !self.peers.claim(&self.store, subject, now).await
        {
            return false;
        }
        let release = subject.map(|subject| self.peers.release(&self.store, subject));
        self.work.spawn(on, async move {
            job.await;
            if let Some(release) = release {
                release.await;
            }
        });
        true
    }

    /// Stops: no new work, running work gets `stop_timeout` to end (the next start
    /// finishes or undoes what it leaves), the lease ends, and the API stops serving.
    pub(crate) async fn stop(mut self) -> Result<(), DaemonError> {
        info!(
            running = self.work.len(),
            "stopping: no new work; waiting up to {}s for running work",
            self.options.stop_timeout.as_secs()
        );
        let deadline = self.clock.now().saturating_add(self.options.stop_timeout);
        while self.work.len() > 0 {
            tokio::select! {
                () = self.clock.sleep_until(deadline) => {
                    warn!(left = self.work.len(), "stopping with work unfinished; the next start finishes it");
                    self.work.abort_all();
                    break;
                }
                done = self.work.next_finished() => self.work.finished(done),
            }
        }
        for (name, cloud) in &self.clouds.by_name {
            let calls: Vec<String> = cloud
                .connection
                .stats()
                .into_iter()
                .map(|(operation, stats)| {
                    let mean =
                        stats.latency / u32::try_from(stats.calls.max(1)).unwrap_or(u32::MAX);
                    format!(
                        "{operation} {} calls ({} failed, mean {} ms)",
                        stats.calls,
                        stats.errors,
                        mean.as_millis()
                    )
                })
                .collect();
            info!(provider = %name, "cloud calls: {}", calls.join(", "));
        }
        let Daemon {
            api,
            report,
            peers,
            store,
            clock,
            ..
        } = self;
        let lost = peers.lost();
        peers.retire(&store, clock.now()).await;
        // Long polls end when the status they wait on is gone; then the server stops.
        report.close();
        if let Some(api) = api {
            let _ = api.stop.send(());
            let _ = api.task.await;
        }
        if let Some(why) = lost {
            return Err(DaemonError::Store(why));
        }
        info!("stopped");
        Ok(())
    }
}
