//! The event loop: one clock, one round at a time.
//!
//! Each round reads the clock once, re-reads the config when due, lists every provider's
//! servers once, takes one snapshot of the store, asks the two policies what to do, and hands
//! their actions to executors. Rounds run every few seconds, at once when an executor
//! finishes, and at the policies' next deadline; nothing is polled per node.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodepool_config::{Config, ConfigErrors};
use nodepool_db::{DaemonRecord, NewImage, NewNode, Planned, Store, StoreError};
use nodepool_image::{ImageAction, ImagePlan};
use nodepool_model::{
    BuildRequestState, ExternalId, ImageId, ImageState, NodeId, NodeState, ProviderName, Reason,
    ReasonCode, Snapshot, Subject, Timestamp,
};
use nodepool_node::share::Share;
use nodepool_node::{History, NodeAction, NodePlan, World};
use nodepool_provider::Clock;
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use nodepool_executor::clouds::{Clouds, Connector};
use nodepool_executor::executor::{self, Context};
use nodepool_executor::store;

use crate::metrics::Gauges;
use crate::said::{Level, Said};
use crate::status::{ProviderStatus, Status};
use crate::{DaemonError, api, jobs};

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
const CONNECT_AGAIN: Duration = Duration::from_secs(60);
/// How long a daemon's claims outlive its last sign of life; the work of a daemon silent
/// for longer is taken over by the others.
const LEASE: Duration = Duration::from_secs(30);
/// How soon a daemon whose plan another daemon outdated plans again.
const REPLAN_AFTER: Duration = Duration::from_millis(200);
/// A loop without a round for this long is stalled: its daemon stops renewing its lease.
const LOOP_STALL: Duration = Duration::from_secs(60);
/// How often a daemon renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// What finished.
#[derive(Debug)]
enum Done {
    Node(NodeId),
    Image(ImageId),
    Leak(ProviderName, ExternalId),
    Cleanup,
    Check(NodeId),
}

/// The running daemon.
#[derive(Debug)]
pub struct Daemon {
    options: Options,
    clock: Arc<dyn Clock>,
    store: Store,
    config: Arc<Config>,
    /// The bytes of the config file in force, to notice edits.
    config_bytes: Vec<u8>,
    /// The bytes of the newest file that failed, so that its errors are logged once.
    broken_bytes: Option<Vec<u8>>,
    config_read_at: Timestamp,
    clouds: Clouds,
    /// When providers that could not be connected are tried again.
    connect_again_at: Timestamp,
    installation: nodepool_model::InstallationId,
    history: History,
    tasks: JoinSet<Done>,
    busy_nodes: BTreeMap<NodeId, AbortHandle>,
    busy_images: BTreeMap<ImageId, AbortHandle>,
    busy_leaks: BTreeSet<(ProviderName, ExternalId)>,
    /// When `cron: cleanup` and `cron: check` fire next.
    next_cleanup: Option<Timestamp>,
    next_check: Option<Timestamp>,
    /// A cleanup job is under way.
    cleaning: bool,
    busy_checks: BTreeSet<NodeId>,
    /// Bounds the checks that log in at once.
    checks: Arc<Semaphore>,
    /// What the last round logged of the conditions that last.
    said: Said,
    /// What the API sees of the loop, published after every round.
    status: watch::Sender<Arc<Status>>,
    /// Why the newest edit of the config was refused, while it is.
    config_error: Option<String>,
    config_loaded: Timestamp,
    /// Why each provider that could not be connected could not.
    connect_errors: BTreeMap<ProviderName, (Timestamp, String)>,
    /// The API asks for a round now (a new request, a node given back).
    wake: Arc<Notify>,
    /// The API server: its stop signal and task.
    api: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    api_address: Option<std::net::SocketAddr>,
    gauges: Gauges,
    /// This daemon, as the store's other daemons see it.
    me: DaemonRecord,
    /// Renews `me`'s lease while the daemon lives (a daemon dropped mid-run, as a killed
    /// one, stops renewing).
    heartbeat: AbortOnDrop,
    /// Held while the daemon runs on a SQLite store, which serves one daemon.
    _sqlite_lock: Option<std::fs::File>,
    /// What other live daemons work on, as of this round's snapshot.
    elsewhere_nodes: BTreeSet<NodeId>,
    elsewhere_images: BTreeSet<ImageId>,
    /// What this round's launches were planned on.
    planned: Planned,
    /// Daemons sharing the store, this one included, as of this round's snapshot.
    live_daemons: usize,
    /// Another daemon recorded a launch or build since this round's snapshot: plan again
    /// soon, on fresh data.
    outdated: bool,
    /// Since when launches this daemon planned have been left to the other daemons.
    held_back_since: Option<Timestamp>,
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
        let bytes = std::fs::read(&options.config).map_err(|e| DaemonError::Config {
            file: options.config.clone(),
            message: e.to_string(),
        })?;
        let config =
            load(&options.config, &bytes, options.secure.as_deref()).map_err(|errors| {
                DaemonError::Config {
                    file: options.config.clone(),
                    message: errors.to_string(),
                }
            })?;
        let now = clock.now();
        let sqlite_lock = match &config.dburi {
            nodepool_config::DbUri::Sqlite(path) => Some(lock_sqlite(path)?),
            _ => None,
        };
        let me = DaemonRecord::new(hostname(), std::process::id(), now)
            .map_err(|e| DaemonError::Store(e.to_string()))?;
        let actor = format!("nodepoold {} (pid {} on {})", &me.id[..8], me.pid, me.host);
        let uri = config.dburi.clone();
        let store = tokio::task::spawn_blocking(move || Store::open_and_migrate(&uri, actor, now))
            .await
            .map_err(|e| DaemonError::Store(e.to_string()))?
            .map_err(|e| DaemonError::Store(e.to_string()))?;
        let installation = store::call(&store, |s| s.installation_id())
            .await
            .map_err(|e| DaemonError::Store(e.to_string()))?;
        info!(installation = %installation, config = %options.config.display(), daemon = %me.id, "starting");
        let single = sqlite_lock.is_some();
        let config = Arc::new(config);
        let (status, status_seen) = watch::channel(Arc::new(Status {
            started: now,
            installation: installation.clone(),
            config_file: options.config.clone(),
            config: config.clone(),
            config_loaded: now,
            config_error: None,
            rounds: 0,
            last_round: None,
            tick: options.tick,
            providers: BTreeMap::new(),
        }));
        let wake = Arc::new(Notify::new());
        // The API's address and token are checked before the daemon registers, so that a
        // start they fail leaves no lease behind; it serves once the daemon is registered.
        let listening = if options.api {
            let token = config
                .api
                .token_file
                .as_deref()
                .map(api::read_token)
                .transpose()?;
            Some((api::bind(config.api.listen).await?, token))
        } else {
            None
        };
        let heartbeat = register(&store, &clock, &me, single, status.subscribe()).await?;
        let (api, api_address) = match listening {
            Some((listener, token)) => {
                let address = listener.local_addr().ok();
                if let Some(address) = address {
                    info!(token = token.is_some(), "API listening on http://{address}");
                }
                let shared = api::Shared::new(
                    store.clone(),
                    clock.clone(),
                    status_seen,
                    wake.clone(),
                    crate::metrics::handle(),
                    token,
                );
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(api::serve(listener, shared, async {
                    let _ = stopped.await;
                }));
                (Some((stop, task)), address)
            }
            None => (None, None),
        };
        let mut clouds = Clouds::new(clock.clone(), installation.clone(), connector);
        // Providers that cannot be connected are said by the first round, and again only
        // once they have been connected and fail again.
        let mut connect_errors = BTreeMap::new();
        for (provider, error) in clouds.reconcile(&config).await {
            connect_errors.insert(provider, (now, error.to_string()));
        }
        let mut daemon = Daemon {
            options,
            clock,
            store,
            config,
            config_bytes: bytes,
            broken_bytes: None,
            config_read_at: now,
            clouds,
            connect_again_at: now.saturating_add(CONNECT_AGAIN),
            installation,
            history: History::new(),
            tasks: JoinSet::new(),
            busy_nodes: BTreeMap::new(),
            busy_images: BTreeMap::new(),
            busy_leaks: BTreeSet::new(),
            next_cleanup: None,
            next_check: None,
            cleaning: false,
            busy_checks: BTreeSet::new(),
            checks: Arc::new(Semaphore::new(jobs::CHECKS_AT_ONCE)),
            said: Said::default(),
            status,
            config_error: None,
            config_loaded: now,
            connect_errors,
            wake,
            api,
            api_address,
            gauges: Gauges::default(),
            me,
            heartbeat,
            _sqlite_lock: sqlite_lock,
            elsewhere_nodes: BTreeSet::new(),
            elsewhere_images: BTreeSet::new(),
            planned: Planned::default(),
            live_daemons: 1,
            outdated: false,
            held_back_since: None,
        };
        daemon.schedule_jobs(now);
        Ok(daemon)
    }

    /// The store the daemon uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where the HTTP API listens, when it is served.
    pub fn api_address(&self) -> Option<std::net::SocketAddr> {
        self.api_address
    }

    /// Claims the work on `subject` for this daemon: false if another live daemon has it
    /// (or the store cannot say: then nobody should start on it now).
    async fn claim(&self, subject: Subject, now: Timestamp) -> bool {
        let me = self.me.id.clone();
        match store::call(&self.store, move |s| s.claim_work(subject, &me, now)).await {
            Ok(claimed) => claimed,
            Err(e) => {
                warn!(%subject, "cannot claim the work: {e}");
                false
            }
        }
    }

    /// What gives the work on `subject` back once an executor is done with it.
    fn release(&self, subject: Subject) -> impl Future<Output = ()> + Send + 'static {
        let (store, me) = (self.store.clone(), self.me.id.clone());
        async move {
            if let Err(e) = store::call(&store, move |s| s.release_work(subject, &me)).await {
                warn!(%subject, "cannot give the work back: {e}");
            }
        }
    }

    fn context(&self) -> Context {
        Context {
            store: self.store.clone(),
            clock: self.clock.clone(),
            installation: self.installation.clone(),
            config: self.config.clone(),
        }
    }

    /// Runs rounds until `stop` completes; `reload` asks for the config to be read at once.
    ///
    /// # Errors
    ///
    /// None yet: problems of one round are logged and the next round tries again.
    pub async fn run(
        mut self,
        stop: impl Future<Output = ()>,
        reload: Arc<Notify>,
    ) -> Result<(), DaemonError> {
        tokio::pin!(stop);
        let (clock, wanted, wake) = (
            self.clock.clone(),
            self.clouds.wanted.clone(),
            self.wake.clone(),
        );
        let mut next = self.round().await;
        loop {
            tokio::select! {
                () = &mut stop => return self.stop().await,
                () = reload.notified() => self.config_read_at = Timestamp::EPOCH,
                // A request came or a node was given back: serve it now.
                () = wake.notified() => {}
                () = clock.sleep_until(next) => {}
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.finished(done);
                    // Let a burst of finishing work end before planning again.
                    while let Some(done) = self.tasks.try_join_next() {
                        self.finished(done);
                    }
                }
                // An executor started waiting on a listing: the next round (which lists)
                // comes at the busy pace; nothing to plan before.
                () = wanted.notified() => {
                    let (every, busy_every) = (self.options.tick, self.options.busy_tick);
                    if let Some(due) = self.clouds.next_listing(every, busy_every) {
                        next = next.min(due);
                    }
                    continue;
                }
            }
            next = self.round().await;
        }
    }

    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) {
        match done {
            Ok(Done::Node(id)) => {
                self.busy_nodes.remove(&id);
            }
            Ok(Done::Image(id)) => {
                self.busy_images.remove(&id);
            }
            Ok(Done::Leak(provider, server)) => {
                self.busy_leaks.remove(&(provider, server));
            }
            Ok(Done::Cleanup) => self.cleaning = false,
            Ok(Done::Check(node)) => {
                self.busy_checks.remove(&node);
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => error!("an executor panicked: {join}"),
        }
        // Aborted tasks never report: forget them.
        self.busy_nodes.retain(|_, task| !task.is_finished());
        self.busy_images.retain(|_, task| !task.is_finished());
    }

    async fn stop(mut self) -> Result<(), DaemonError> {
        info!(
            running = self.tasks.len(),
            "stopping: no new work; waiting up to {}s for running work",
            self.options.stop_timeout.as_secs()
        );
        let deadline = self.clock.now().saturating_add(self.options.stop_timeout);
        loop {
            if self.tasks.is_empty() {
                break;
            }
            tokio::select! {
                () = self.clock.sleep_until(deadline) => {
                    warn!(left = self.tasks.len(), "stopping with work unfinished; the next start finishes it");
                    self.tasks.abort_all();
                    break;
                }
                Some(done) = self.tasks.join_next() => self.finished(done),
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
        self.heartbeat.0.abort();
        let (me, now) = (self.me.id.clone(), self.clock.now());
        if let Err(e) = store::call(&self.store, move |s| s.retire_daemon(&me, now)).await {
            warn!("cannot end this daemon's lease: {e}; the others wait for it to run out");
        }
        let Daemon { api, status, .. } = self;
        // Long polls end when the status they wait on is gone; then the server stops.
        drop(status);
        if let Some((stop, task)) = api {
            let _ = stop.send(());
            let _ = task.await;
        }
        info!("stopped");
        Ok(())
    }

    /// Tells the API what this round saw; long polls wake to read the store again.
    fn publish(&mut self, now: Timestamp) {
        let config = self.config.clone();
        self.connect_errors
            .retain(|name, _| config.provider(name.as_str()).is_some());
        let providers = self
            .config
            .providers
            .iter()
            .map(|p| {
                let cloud = self.clouds.by_name.get(&p.name);
                let mut seen = ProviderStatus {
                    connected: cloud.is_some(),
                    ..ProviderStatus::default()
                };
                if let Some(cloud) = cloud {
                    seen.last_ok = cloud
                        .connection
                        .stats()
                        .values()
                        .filter_map(|s| s.last_ok)
                        .max();
                    seen.last_error = cloud
                        .connection
                        .last_error()
                        .map(|(at, operation, message)| (at, format!("{operation}: {message}")));
                } else {
                    seen.last_error = self
                        .connect_errors
                        .get(&p.name)
                        .map(|(at, message)| (*at, format!("connect: {message}")));
                }
                (p.name.clone(), seen)
            })
            .collect();
        let (config, config_error, config_loaded) = (
            self.config.clone(),
            self.config_error.clone(),
            self.config_loaded,
        );
        self.status.send_modify(|status| {
            let status = Arc::make_mut(status);
            status.config = config;
            status.config_error = config_error;
            status.config_loaded = config_loaded;
            status.rounds += 1;
            status.last_round = Some(now);
            status.providers = providers;
        });
    }

    /// Reads the config file again if it is due; applies it if it changed and is valid, and
    /// otherwise keeps the running one and says why (once per broken file).
    async fn reload(&mut self, now: Timestamp) {
        if now.saturating_since(self.config_read_at) < self.options.reload_every {
            return;
        }
        self.config_read_at = now;
        let bytes = match std::fs::read(&self.options.config) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(config = %self.options.config.display(), "cannot read the config; keeping the running one: {e}");
                return;
            }
        };
        if bytes == self.config_bytes || self.broken_bytes.as_ref() == Some(&bytes) {
            return;
        }
        match load(&self.options.config, &bytes, self.options.secure.as_deref()) {
            Ok(config) => {
                let changes = self.config.diff(&config);
                info!(config = %self.options.config.display(), "config changed: {changes}");
                for (provider, error) in self.clouds.reconcile(&config).await {
                    self.connect_errors
                        .insert(provider, (now, error.to_string()));
                }
                self.config = Arc::new(config);
                self.config_bytes = bytes;
                self.broken_bytes = None;
                self.config_error = None;
                self.config_loaded = now;
                self.schedule_jobs(now);
            }
            Err(errors) => {
                error!(config = %self.options.config.display(), "the edited config is invalid; keeping the running one:\n{errors}");
                self.broken_bytes = Some(bytes);
                self.config_error = Some(errors.to_string());
            }
        }
    }

    /// One round; returns when the next one is due at the latest.
    async fn round(&mut self) -> Timestamp {
        let now = self.clock.now();
        self.reload(now).await;
        self.note_unbuildable_images();
        if self.clouds.connected() < self.config.providers.len() && now >= self.connect_again_at {
            self.connect_again_at = now.saturating_add(CONNECT_AGAIN);
            let config = self.config.clone();
            for (provider, error) in self.clouds.reconcile(&config).await {
                self.connect_errors
                    .insert(provider, (now, error.to_string()));
            }
        }
        let (every, busy_every) = (self.options.tick, self.options.busy_tick);
        self.clouds.refresh(now, every, busy_every).await;
        self.note_unreachable_providers();
        let me = self.me.id.clone();
        let snapshot = match store::call(&self.store, move |s| s.snapshot_and_work(&me, now)).await
        {
            Ok((snapshot, elsewhere, live)) => {
                self.live_daemons = live.max(1);
                self.elsewhere_nodes.clear();
                self.elsewhere_images.clear();
                for subject in elsewhere {
                    match subject {
                        Subject::Node(id) => {
                            self.elsewhere_nodes.insert(id);
                        }
                        Subject::Image(id) => {
                            self.elsewhere_images.insert(id);
                        }
                        _ => {}
                    }
                }
                self.planned = Planned {
                    newest_node: snapshot.nodes.iter().map(|n| n.id).max(),
                    recorded_since: Vec::new(),
                };
                snapshot
            }
            Err(e) => {
                error!("cannot read the store: {e}");
                return now.saturating_add(self.options.tick);
            }
        };
        self.clouds.forget_retired(|provider| {
            snapshot.nodes.iter().any(|n| &n.provider == provider)
                || snapshot.images.iter().any(|i| &i.provider == provider)
        });
        let images = nodepool_image::plan(
            &snapshot,
            &self.config,
            now,
            &nodepool_image::World {
                clouds: self.clouds.flavors(),
                busy: self.busy_images.keys().copied().collect(),
                elsewhere: self.elsewhere_images.clone(),
            },
        );
        let world = World {
            clouds: self.clouds.views(),
            busy: self.busy_nodes.keys().copied().collect(),
            elsewhere: self.elsewhere_nodes.clone(),
            history: self.history.clone(),
        };
        let nodes = nodepool_node::plan(&snapshot, &self.config, now, &world);
        self.history.push(nodes.round.clone());
        self.explain(&images, &nodes);
        self.apply_images(&snapshot, &images, now).await;
        self.apply_nodes(&snapshot, &nodes, now).await;
        self.publish(now);
        self.gauges.update(&snapshot, &self.clouds, &self.config);
        self.run_jobs(&snapshot, now).await;
        self.said.end_round();
        metrics::histogram!("nodepool_round_seconds")
            .record(self.clock.now().saturating_since(now).as_secs_f64());
        // The next round comes when a provider's listing is due (sooner while an executor
        // waits on one), or something planned is, or at once if this plan was outdated.
        // With other daemons on the store, a round comes every busy tick: nothing wakes this
        // loop when another daemon leaves it a share of the launches.
        let most = if self.live_daemons > 1 {
            self.options.busy_tick
        } else {
            self.options.tick
        };
        let mut next = now.saturating_add(most);
        if std::mem::take(&mut self.outdated) {
            next = next.min(now.saturating_add(REPLAN_AFTER));
        }
        if let Some(since) = self.held_back_since {
            next = next.min(since.saturating_add(nodepool_node::share::SHARE_GRACE));
        }
        for at in [
            self.clouds.next_listing(every, busy_every),
            images.next_wakeup,
            nodes.next_wakeup,
            self.next_cleanup,
            self.next_check,
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(at);
        }
        next
    }

    /// When the periodic jobs fire next, by the running config's schedules. Fires missed
    /// while the daemon was stopped are not made up: the next one comes on schedule.
    fn schedule_jobs(&mut self, now: Timestamp) {
        self.next_cleanup = self.config.cron.cleanup.next_after(now);
        self.next_check = self.config.cron.check.next_after(now);
    }

    /// Whether this daemon runs the periodic jobs: of the daemons sharing the store, the
    /// live one that started first does, so that N daemons do not list and probe every
    /// cloud N times. When it dies its lease lapses and the next takes over.
    async fn runs_jobs(&mut self, now: Timestamp) -> bool {
        if self.live_daemons <= 1 {
            self.said.state("jobs", Level::Info, None);
            return true;
        }
        match store::call(&self.store, |s| s.daemons()).await {
            // Listed by start: the first live one leads.
            Ok(daemons) => match daemons.iter().find(|d| d.expires > now) {
                Some(first) if first.id != self.me.id => {
                    self.said.state(
                        "jobs",
                        Level::Info,
                        Some(format!(
                            "the periodic jobs (cleanup, check) run in daemon {} on {}, the oldest",
                            first.id, first.host
                        )),
                    );
                    false
                }
                _ => {
                    self.said.state("jobs", Level::Info, None);
                    true
                }
            },
            // Better twice than never.
            Err(_) => true,
        }
    }

    /// Starts the periodic jobs that are due.
    async fn run_jobs(&mut self, snapshot: &Snapshot, now: Timestamp) {
        let cleanup_due = self.next_cleanup.is_some_and(|at| now >= at);
        let check_due = self.next_check.is_some_and(|at| now >= at);
        if !(cleanup_due || check_due) {
            return;
        }
        if !self.runs_jobs(now).await {
            self.next_cleanup = self.config.cron.cleanup.next_after(now);
            self.next_check = self.config.cron.check.next_after(now);
            return;
        }
        if cleanup_due {
            self.next_cleanup = self.config.cron.cleanup.next_after(now);
            if !self.cleaning {
                let connections = self
                    .clouds
                    .by_name
                    .values()
                    .map(|c| c.connection.clone())
                    .collect();
                let ctx = self.context();
                self.tasks.spawn(async move {
                    jobs::cleanup(ctx, connections).await;
                    Done::Cleanup
                });
                self.cleaning = true;
            }
            self.prune(now).await;
        }
        if check_due {
            self.next_check = self.config.cron.check.next_after(now);
            let ready = snapshot.nodes.iter().filter(|n| {
                n.state == NodeState::Ready
                    && !self.busy_nodes.contains_key(&n.id)
                    && !self.busy_checks.contains(&n.id)
            });
            let mut started = Vec::new();
            for node in ready {
                let Some(cloud) = self.clouds.by_name.get(&node.provider) else {
                    continue;
                };
                let (ctx, remote) = (self.context(), cloud.remote.clone());
                let (node, limit) = (node.clone(), self.checks.clone());
                let id = node.id;
                self.tasks.spawn(async move {
                    jobs::check(ctx, remote, node, limit).await;
                    Done::Check(id)
                });
                started.push(id);
            }
            if !started.is_empty() {
                info!("checking {} ready node(s) over SSH", started.len());
            }
            self.busy_checks.extend(started);
        }
    }

    /// Forgets old history: requests that ended long ago, events of what no longer
    /// exists, and failures the backoff no longer looks at.
    async fn prune(&self, now: Timestamp) {
        let events_before = now.saturating_sub(jobs::HISTORY_KEPT);
        let failures_before = now.saturating_sub(jobs::FAILURES_KEPT);
        match store::call(&self.store, move |s| {
            Ok((
                s.prune_requests(events_before)?,
                s.prune_events(events_before)?,
                s.prune_failures(failures_before)?,
            ))
        })
        .await
        {
            Ok((0, 0, 0)) => {}
            Ok((requests, events, failures)) => {
                info!(
                    "pruned {requests} old request(s), {events} old event(s) and {failures} old failure(s)"
                )
            }
            Err(e) => warn!("cannot prune old history: {e}"),
        }
    }

    /// Logs what the policies chose not to do, once each while it lasts.
    fn explain(&mut self, images: &ImagePlan, nodes: &NodePlan) {
        for reason in images
            .waits
            .iter()
            .map(|w| &w.reason)
            .chain(nodes.notes.iter().map(|n| &n.reason))
        {
            let level = match reason.code {
                ReasonCode::NoFlavor | ReasonCode::NotConnected => Level::Warn,
                _ => Level::Info,
            };
            self.said.say(level, reason.to_string());
        }
    }

    /// Says, while it lasts, why each provider that is not connected could not be, and
    /// what failed in the last listing of each that is.
    fn note_unreachable_providers(&mut self) {
        for provider in &self.config.providers {
            match self.clouds.by_name.get(&provider.name) {
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
        }
    }

    /// Says once per image that images made by diskimage-builder are not built here (the
    /// image policy leaves them out, so their labels get no nodes from them).
    fn note_unbuildable_images(&mut self) {
        let config = self.config.clone();
        for provider in &config.providers {
            for image in &provider.images {
                if let nodepool_config::ImageSource::Diskimage(diskimage) = &image.source {
                    self.say(
                        format!(
                            "provider {}: image {} is made by diskimage-builder (diskimage {diskimage}), which this version does not build: nothing is built or launched from it; give it base-image to build it by snapshot",
                            provider.name, image.name
                        ),
                        true,
                    );
                }
            }
        }
    }

    fn say(&mut self, text: String, is_error: bool) {
        let level = if is_error { Level::Warn } else { Level::Info };
        self.said.say(level, text);
    }

    async fn apply_images(&mut self, snapshot: &Snapshot, plan: &ImagePlan, now: Timestamp) {
        for action in &plan.actions {
            match action {
                ImageAction::Build {
                    provider,
                    image,
                    flavor,
                    request,
                    reason,
                } => {
                    self.start_build(provider, image, flavor.id.clone(), *request, reason, now)
                        .await
                }
                ImageAction::FailBuild {
                    upload,
                    provider,
                    image,
                    reason,
                } => {
                    let (id, why) = (*upload, reason.clone());
                    match store::call(&self.store, move |s| {
                        s.set_image_state(id, ImageState::Delete, now, &why)
                    })
                    .await
                    {
                        Ok(_) => {
                            warn!(image = %id, provider = %provider, name = %image, "build interrupted: its daemon stopped; deleting it")
                        }
                        Err(e) => warn!(image = %id, "cannot fail the interrupted build: {e}"),
                    }
                }
                ImageAction::Delete {
                    upload,
                    cancel,
                    reason,
                    ..
                } => {
                    let Some(record) = snapshot.images.iter().find(|i| i.id == *upload) else {
                        continue;
                    };
                    if *cancel && let Some(task) = self.busy_images.get(upload) {
                        task.abort();
                    }
                    let connection = self.clouds.handle(&record.provider);
                    if !self.claim(Subject::Image(*upload), now).await {
                        continue;
                    }
                    let ctx = self.context();
                    let (record, reason, id) = (record.clone(), reason.clone(), *upload);
                    let done = self.release(Subject::Image(id));
                    let task = self.tasks.spawn(async move {
                        let _ = executor::delete_upload(ctx, connection, record, reason).await;
                        done.await;
                        Done::Image(id)
                    });
                    self.busy_images.insert(id, task);
                }
                ImageAction::FinishRequest {
                    request,
                    failure,
                    reason,
                } => {
                    let state = if failure.is_some() {
                        BuildRequestState::Failed
                    } else {
                        BuildRequestState::Done
                    };
                    let (id, reason) = (*request, reason.clone());
                    match store::call(&self.store, move |s| {
                        s.set_build_request_state(id, state, now, &reason)
                    })
                    .await
                    {
                        Ok(_) => info!(build_request = %id, "build request {state}"),
                        Err(e) => warn!(build_request = %id, "cannot finish: {e}"),
                    }
                }
            }
        }
    }

    async fn start_build(
        &mut self,
        provider: &ProviderName,
        image: &nodepool_model::ImageName,
        flavor: String,
        request: Option<nodepool_model::BuildRequestId>,
        reason: &Reason,
        now: Timestamp,
    ) {
        let Some(cloud) = self.clouds.by_name.get(provider) else {
            return;
        };
        let mut new = NewImage::new(provider.clone(), image.clone(), now);
        if let Some(request) = request {
            new = new.for_request(request);
        }
        let why = reason.clone();
        let me = self.me.id.clone();
        let created = store::call(&self.store, move |s| {
            let Some(upload) = s.create_image_checked(&new, &me, now, &why)? else {
                return Ok(None);
            };
            if let Some(request) = request {
                s.set_build_request_state(request, BuildRequestState::Started, now, &why)?;
            }
            Ok(Some(upload))
        })
        .await;
        let upload = match created {
            Ok(Some(upload)) => upload,
            Ok(None) => {
                debug!(provider = %provider, name = %image, "another daemon builds it");
                self.outdated = true;
                return;
            }
            Err(e) => {
                warn!(provider = %provider, name = %image, "cannot record the build: {e}");
                return;
            }
        };
        info!(image = %upload.id, provider = %provider, name = %image, "building: {}", reason.text);
        let ctx = self.context();
        let (connection, remote) = (cloud.connection.clone(), cloud.remote.clone());
        let servers = cloud.servers.clone();
        let id = upload.id;
        let done = self.release(Subject::Image(id));
        let task = self.tasks.spawn(async move {
            executor::build(ctx, connection, servers, remote, upload, flavor).await;
            done.await;
            Done::Image(id)
        });
        self.busy_images.insert(id, task);
    }

    async fn apply_nodes(&mut self, snapshot: &Snapshot, plan: &NodePlan, now: Timestamp) {
        // Nodes each request has, to tell when a claim fulfils it.
        let mut claimed: BTreeMap<nodepool_model::RequestId, usize> = BTreeMap::new();
        let planned = plan
            .actions
            .iter()
            .filter(|a| matches!(a, NodeAction::Launch { .. }))
            .count();
        let building = snapshot
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Building);
        let (everywhere, here) = building.fold((0, 0), |(all, here), n| {
            (
                all + 1,
                here + usize::from(self.busy_nodes.contains_key(&n.id)),
            )
        });
        let peers = nodepool_node::share::Peers {
            live: self.live_daemons,
            building: everywhere,
            building_here: here,
            held_back_since: self.held_back_since,
        };
        let Share {
            start: mut share,
            held_back_since,
        } = nodepool_node::share::share(planned, &peers, now);
        self.held_back_since = held_back_since;
        for action in &plan.actions {
            match action {
                NodeAction::Claim {
                    request,
                    label,
                    count,
                    reason,
                } => {
                    let (id, label, count) = (*request, label.clone(), *count);
                    match store::call(&self.store, move |s| {
                        s.claim_ready_nodes(id, &label, count, now)
                    })
                    .await
                    {
                        Ok(nodes) => {
                            info!(request = %id, "{} node(s) handed out: {}", nodes.len(), reason.text);
                            if let Some(asked) = snapshot.requests.iter().find(|r| r.id == id) {
                                let got = claimed.entry(id).or_insert(asked.nodes.len());
                                *got += nodes.len();
                                if *got == asked.labels.len() {
                                    metrics::histogram!("nodepool_request_wait_seconds")
                                        .record(now.saturating_since(asked.created).as_secs_f64());
                                    metrics::counter!("nodepool_requests_total", "outcome" => ReasonCode::Fulfilled.as_str())
                                        .increment(1);
                                }
                            }
                        }
                        Err(e) => warn!(request = %id, "cannot hand out nodes: {e}"),
                    }
                }
                NodeAction::FailRequest { request, reason } => {
                    let (id, why) = (*request, reason.clone());
                    match store::call(&self.store, move |s| s.fail_request(id, now, &why)).await {
                        Ok(_) => {
                            info!(request = %id, "failed: {}", reason.text);
                            metrics::counter!("nodepool_requests_total", "outcome" => reason.code.as_str().to_owned())
                                .increment(1);
                        }
                        // Another daemon failed it first.
                        Err(StoreError::InvalidTransition { .. }) => {}
                        Err(e) => warn!(request = %id, "cannot fail: {e}"),
                    }
                }
                NodeAction::Launch { .. } => {
                    if share == 0 {
                        continue;
                    }
                    share -= 1;
                    self.start_launch(snapshot, action, now).await;
                }
                NodeAction::Delete {
                    node,
                    server,
                    cancel,
                    reason,
                } => {
                    let Some(record) = snapshot.nodes.iter().find(|n| n.id == *node) else {
                        continue;
                    };
                    if *cancel && let Some(task) = self.busy_nodes.get(node) {
                        task.abort();
                    }
                    let connection = self.clouds.handle(&record.provider);
                    if !self.claim(Subject::Node(*node), now).await {
                        continue;
                    }
                    let ctx = self.context();
                    let (record, server, reason, id) =
                        (record.clone(), server.clone(), reason.clone(), *node);
                    let done = self.release(Subject::Node(id));
                    let task = self.tasks.spawn(async move {
                        let _ =
                            executor::delete_node(ctx, connection, record, server, reason).await;
                        done.await;
                        Done::Node(id)
                    });
                    self.busy_nodes.insert(id, task);
                }
                NodeAction::DeleteLeak {
                    provider,
                    server,
                    reason,
                } => {
                    let key = (provider.clone(), server.clone());
                    if self.busy_leaks.contains(&key) {
                        continue;
                    }
                    let ctx = self.context();
                    let Some((connection, servers)) = self.clouds.handle(provider) else {
                        continue;
                    };
                    let (server, reason) = (server.clone(), reason.clone());
                    let done = key.clone();
                    self.tasks.spawn(async move {
                        executor::delete_leak(ctx, connection, servers, server, reason).await;
                        Done::Leak(done.0, done.1)
                    });
                    self.busy_leaks.insert(key);
                }
            }
        }
    }

    async fn start_launch(&mut self, snapshot: &Snapshot, action: &NodeAction, now: Timestamp) {
        let NodeAction::Launch {
            provider,
            label,
            image,
            flavor,
            hostname,
            az,
            reason,
        } = action
        else {
            return;
        };
        let Some(cloud) = self.clouds.by_name.get(provider) else {
            return;
        };
        let Some(upload) = snapshot.images.iter().find(|i| i.id == *image) else {
            return;
        };
        let flavor = flavor.id.clone();
        let mut new = NewNode::new(provider.clone(), label.clone())
            .image(*image)
            .hostname(hostname.clone());
        if let Some(az) = az {
            new = new.az(az.clone());
        }
        let why = reason.clone();
        let (me, planned) = (self.me.id.clone(), self.planned.clone());
        let node = match store::call(&self.store, move |s| {
            s.create_node_checked(&new, &planned, &me, now, &why)
        })
        .await
        {
            Ok(Some(node)) => node,
            Ok(None) => {
                debug!(provider = %provider, label = %label, "another daemon launched since this plan; planning again");
                self.outdated = true;
                return;
            }
            Err(e) => {
                warn!(provider = %provider, label = %label, "cannot record the launch: {e}");
                return;
            }
        };
        let ctx = self.context();
        let (connection, remote) = (cloud.connection.clone(), cloud.remote.clone());
        let servers = cloud.servers.clone();
        let (id, upload) = (node.id, upload.clone());
        self.planned.recorded_since.push(id);
        let done = self.release(Subject::Node(id));
        let task = self.tasks.spawn(async move {
            executor::launch(ctx, connection, servers, remote, node, upload, flavor).await;
            done.await;
            Done::Node(id)
        });
        self.busy_nodes.insert(id, task);
    }
}

/// Reads a config file's bytes, and secure.conf (`secure`, or the default one if it
/// exists), whose `dburi` replaces the file's as in nodepool 0.3 and 0.4.
fn load(path: &Path, bytes: &[u8], secure: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut loaded = nodepool_config::parse_bytes(bytes, path)?;
    match loaded.read_secure(secure) {
        Ok(Some(replaced)) => info!("{replaced}"),
        Ok(None) => {}
        Err(error) => {
            return Err(ConfigErrors {
                errors: vec![error],
                warnings: Vec::new(),
            });
        }
    }
    Ok(loaded.config)
}

/// This machine's name, for the store's list of daemons and the event log.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// SQLite serves one daemon: a second one on the same file is refused, by a lock the system
/// drops when its holder dies (so a crashed daemon never blocks its restart).
fn lock_sqlite(path: &Path) -> Result<std::fs::File, DaemonError> {
    use std::io::{Read, Seek, Write};
    let lock_path = {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    };
    let fail = |message: String| DaemonError::Store(message);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| fail(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(fail(format!(
                "another nodepoold (pid {}) runs on the SQLite store {}: SQLite serves one daemon; to run several, use PostgreSQL (dburi: postgres://USER@HOST/DATABASE)",
                holder.trim(),
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(fail(format!("cannot lock {}: {e}", lock_path.display())))
        }
    }
}

/// Registers `me` with the store and starts renewing its lease. Daemons that cannot still
/// run end their leases now: on SQLite every other one (the lock proves it), elsewhere
/// those of this host whose process is gone (a restart after a crash).
async fn register(
    store: &Store,
    clock: &Arc<dyn Clock>,
    me: &DaemonRecord,
    single: bool,
    status: watch::Receiver<Arc<Status>>,
) -> Result<AbortOnDrop, DaemonError> {
    let now = clock.now();
    let registered = {
        let me = me.clone();
        store::call(store, move |s| {
            for other in s.daemons()? {
                let gone = other.id != me.id
                    && (single
                        || (other.host == me.host
                            && other.pid != me.pid
                            && !Path::new(&format!("/proc/{}", other.pid)).exists()));
                if gone && other.expires > now {
                    s.retire_daemon(&other.id, now)?;
                }
            }
            s.renew_lease(&me, now, LEASE)
        })
        .await
    };
    registered.map_err(|e| DaemonError::Store(e.to_string()))?;
    let (store, clock, me) = (store.clone(), clock.clone(), me.clone());
    Ok(AbortOnDrop(tokio::spawn(async move {
        loop {
            clock.sleep(RENEW_EVERY).await;
            let (me, now) = (me.clone(), clock.now());
            // A loop that stopped running rounds lets its lease run out, so that the other
            // daemons take over its work.
            let last = {
                let status = status.borrow();
                status.last_round.unwrap_or(status.started)
            };
            if now.saturating_since(last) > LOOP_STALL {
                warn!(
                    "no round for {}s: not renewing this daemon's lease",
                    now.saturating_since(last).as_secs()
                );
                continue;
            }
            if let Err(e) = store::call(&store, move |s| s.renew_lease(&me, now, LEASE)).await {
                warn!("cannot renew this daemon's lease: {e}");
            }
        }
    })))
}

/// A task that ends with its owner.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
