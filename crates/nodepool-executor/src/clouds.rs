//! The daemon's view of each provider: its connection (behind the rate limiter), the remote
//! that reaches its servers, and what it last saw there (listings, limits, flavors). When
//! each provider is listed, and what executors watch of its listings, is
//! [`listing`](crate::listing).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use std::time::Duration;

use nodepool_config::{Config, Driver, Environment, Provider as ProviderConfig};
use nodepool_model::{InstallationId, ProviderName, Timestamp};
use nodepool_node::{CloudView, Headroom, Listing, SeenOwner, SeenServer};
use nodepool_openstack::OpenStackProvider;
use nodepool_provider::{
    Clock, FakeConfig, FakeProvider, Flavor, Limited, Owner, Ownership, Provider, ProviderError,
    classify,
};

use tokio::sync::Notify;

use crate::listing::{Ask, Cadence, ServerFeed, Servers};
use crate::remote::Remote;

/// A provider as every executor calls it: through its rate limiter.
pub type Connection = Arc<Limited<Arc<dyn Provider>>>;

/// How often the cloud's absolute limits are read again.
const LIMITS_EVERY: Duration = Duration::from_secs(60);

/// Makes the connection to a provider of the config, and the remote that reaches its
/// servers. [`Connect`] is the real one; tests bring their own to keep a fake cloud across
/// daemon restarts.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Connects `provider`.
    async fn connect(
        &self,
        provider: &ProviderConfig,
    ) -> Result<(Arc<dyn Provider>, Arc<dyn Remote>), ProviderError>;
}

/// The standard connector: an in-memory cloud for `driver: fake` (reached through
/// `fake_remote`), OpenStack for the rest (reached through `ssh_remote`).
#[derive(Debug)]
pub struct Connect {
    clock: Arc<dyn Clock>,
    fake_remote: Arc<dyn Remote>,
    ssh_remote: Arc<dyn Remote>,
}

impl Connect {
    /// A connector whose fake clouds run on `clock`.
    pub fn new(
        clock: Arc<dyn Clock>,
        fake_remote: Arc<dyn Remote>,
        ssh_remote: Arc<dyn Remote>,
    ) -> Connect {
        Connect {
            clock,
            fake_remote,
            ssh_remote,
        }
    }
}

#[async_trait]
impl Connector for Connect {
    async fn connect(
        &self,
        provider: &ProviderConfig,
    ) -> Result<(Arc<dyn Provider>, Arc<dyn Remote>), ProviderError> {
        Ok(match &provider.driver {
            Driver::Fake => {
                let mut fake = FakeConfig::default();
                for image in &provider.images {
                    let name = match image.source.base_image() {
                        Some(nodepool_config::BaseImage::Id(id)) => id.clone(),
                        Some(nodepool_config::BaseImage::Name(name)) => name.clone(),
                        None => continue,
                    };
                    if !fake.base_images.contains(&name) {
                        fake.base_images.push(name);
                    }
                }
                if let Some(pool) = &provider.pool {
                    fake.floating_pool = pool.clone();
                }
                let cloud = FakeProvider::new(provider.name.clone(), self.clock.clone(), fake);
                (Arc::new(cloud), self.fake_remote.clone())
            }
            Driver::OpenStack(settings) => {
                let mut cloud = OpenStackProvider::connect(
                    provider.name.clone(),
                    settings,
                    &Environment::from_process(),
                )
                .await?;
                if let Some(timeout) = settings.api_timeout {
                    cloud = cloud.with_timeout(timeout);
                }
                (Arc::new(cloud), self.ssh_remote.clone())
            }
            other => {
                return Err(ProviderError::new(
                    nodepool_provider::ErrorKind::Fatal,
                    "connect",
                    provider.name.as_str(),
                    format!("this nodepool cannot drive {other:?} providers"),
                ));
            }
        })
    }
}

/// One provider of the running config.
#[derive(Debug)]
pub struct Cloud {
    /// Its connection, behind its rate limiter.
    pub connection: Connection,
    /// What runs commands on its servers.
    pub remote: Arc<dyn Remote>,
    /// What the policies see of it: the last two listings, limits and flavors.
    pub view: CloudView,
    limits_at: Option<Timestamp>,
    /// When its servers were listed, and so when they are next.
    cadence: Cadence,
    /// The settings it was made from; a change means a new connection.
    made_from: ProviderConfig,
    /// Gone from the config; kept only to delete what it still has.
    retired: bool,
    /// The newest listing's servers, for executors waiting on a server's status.
    pub servers: ServerFeed,
    /// What failed in its last listing (servers, limits or flavors); empty once one
    /// succeeds.
    pub failing: Vec<String>,
}

/// Every provider of the running config.
#[derive(Debug)]
pub struct Clouds {
    /// The connected providers.
    pub by_name: BTreeMap<ProviderName, Cloud>,
    /// Notified when an executor starts watching a provider's listings.
    pub wanted: Arc<Notify>,
    clock: Arc<dyn Clock>,
    installation: InstallationId,
    connector: Arc<dyn Connector>,
    /// Only servers are listed, never limits or flavors: for work done at once, which
    /// plans nothing.
    servers_only: bool,
}

impl Clouds {
    /// No provider connected yet; [`Clouds::reconcile`] connects those of a config.
    pub fn new(
        clock: Arc<dyn Clock>,
        installation: InstallationId,
        connector: Arc<dyn Connector>,
    ) -> Self {
        Clouds {
            by_name: BTreeMap::new(),
            wanted: Arc::new(Notify::new()),
            clock,
            installation,
            connector,
            servers_only: false,
        }
    }

    /// Clouds whose listings are only of servers (no limits or flavors): for executors
    /// run at once, outside the daemon's rounds.
    pub fn servers_only(mut self) -> Self {
        self.servers_only = true;
        self
    }

    /// Whether an executor waits on a listing of any provider.
    pub fn watched(&self) -> bool {
        self.by_name.values().any(|c| c.servers.watched())
    }

    /// Brings the providers in line with `config`: new ones are connected, removed ones
    /// dropped, changed ones reconnected (a fake cloud keeps its servers: it is the cloud).
    /// Returns the providers that could not be connected, with why.
    pub async fn reconcile(&mut self, config: &Config) -> Vec<(ProviderName, ProviderError)> {
        let wanted: Vec<&ProviderConfig> = config.providers.iter().collect();
        // A provider gone from the config keeps its connection until its nodes and images
        // are deleted ([`Clouds::forget_retired`]).
        for (name, cloud) in &mut self.by_name {
            cloud.retired = !wanted.iter().any(|p| &p.name == name);
        }
        let mut to_connect = Vec::new();
        for provider in wanted {
            if let Some(cloud) = self.by_name.get_mut(&provider.name) {
                if cloud.made_from == *provider {
                    cloud.retired = false;
                    continue;
                }
                let same_cloud = cloud.made_from.driver == provider.driver
                    || matches!(provider.driver, Driver::Fake);
                if same_cloud {
                    cloud.retired = false;
                    cloud.connection.set_rate(provider.rate);
                    cloud.made_from = provider.clone();
                    cloud.view.flavors = None;
                    continue;
                }
            }
            to_connect.push(provider.clone());
        }
        // Every provider logs in at once: a site with many clouds starts in one login's time.
        let mut logins = tokio::task::JoinSet::new();
        for provider in to_connect {
            let connector = self.connector.clone();
            logins.spawn(async move {
                let connected = connector.connect(&provider).await;
                (provider, connected)
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = logins.join_next().await {
            let Ok((provider, connected)) = joined else {
                continue;
            };
            match connected {
                Ok((inner, remote)) => {
                    tracing::debug!(provider = %provider.name, "connected");
                    let cloud = Cloud {
                        connection: Arc::new(Limited::new(
                            inner,
                            self.clock.clone(),
                            provider.rate,
                        )),
                        remote,
                        view: CloudView::default(),
                        limits_at: None,
                        cadence: Cadence::default(),
                        made_from: provider.clone(),
                        retired: false,
                        servers: ServerFeed::new(self.wanted.clone()),
                        failing: Vec::new(),
                    };
                    self.by_name.insert(provider.name.clone(), cloud);
                }
                Err(error) => failed.push((provider.name.clone(), error)),
            }
        }
        failed.sort_by(|a, b| a.0.cmp(&b.0));
        failed
    }

    /// Drops the connections of providers gone from the config once `still_used` says
    /// nothing of theirs is left in the store.
    pub fn forget_retired(&mut self, still_used: impl Fn(&ProviderName) -> bool) {
        self.by_name
            .retain(|name, cloud| !cloud.retired || still_used(name));
    }

    /// How many providers of the config are connected.
    pub fn connected(&self) -> usize {
        self.by_name.values().filter(|c| !c.retired).count()
    }

    /// Lists the servers of every provider whose newest listing is older than `every` (or
    /// `busy_every` while an executor waits on one), and now and then its limits and flavors,
    /// so that one listing serves every check of a round, and rounds that come sooner (an
    /// executor finished) do not list again. A provider whose listing fails keeps its last
    /// view, and says so.
    pub async fn refresh(
        &mut self,
        now: Timestamp,
        every: Duration,
        busy_every: Duration,
    ) -> Vec<(ProviderName, ProviderError)> {
        let installation = self.installation.clone();
        let mut tasks = tokio::task::JoinSet::new();
        for (name, cloud) in &mut self.by_name {
            let watched = cloud.servers.watched();
            let Some(ask) = cloud.cadence.ask(watched, now, every, busy_every) else {
                continue;
            };
            cloud.cadence.asked(ask, now);
            let connection = cloud.connection.clone();
            let want_limits = !self.servers_only
                && cloud
                    .limits_at
                    .is_none_or(|at| now.saturating_since(at) >= LIMITS_EVERY);
            let want_flavors = !self.servers_only && cloud.view.flavors.is_none();
            let name = name.clone();
            tasks.spawn(async move {
                let (servers, limits, flavors) = tokio::join!(
                    async {
                        match ask {
                            Ask::All => connection.list_servers().await,
                            Ask::Changes(since) => connection.list_servers_changed(since).await,
                        }
                    },
                    async {
                        if want_limits {
                            Some(connection.limits().await)
                        } else {
                            None
                        }
                    },
                    async {
                        if want_flavors {
                            Some(connection.list_flavors().await)
                        } else {
                            None
                        }
                    },
                );
                (name, ask, servers, limits, flavors)
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((name, ask, servers, limits, flavors)) = joined else {
                continue;
            };
            let Some(cloud) = self.by_name.get_mut(&name) else {
                continue;
            };
            let failed_before = failed.len();
            match servers {
                Ok(servers) => {
                    let newest = servers.iter().filter_map(|s| s.updated).max();
                    cloud.cadence.seen(newest);
                    let servers = match ask {
                        Ask::All => {
                            tracing::debug!(provider = %name, servers = servers.len(), "listed");
                            Servers {
                                at: now,
                                by_id: servers.into_iter().map(|s| (s.id.clone(), s)).collect(),
                            }
                        }
                        Ask::Changes(since) => {
                            tracing::debug!(provider = %name, changed = servers.len(), "listed changes since {since}");
                            cloud.servers.latest().changed(now, servers)
                        }
                    };
                    let seen = servers
                        .by_id
                        .values()
                        .map(|s| SeenServer {
                            owner: seen_owner(&s.metadata, &installation),
                            id: s.id.clone(),
                            busy: s.task.is_some(),
                        })
                        .collect();
                    cloud.view.previous = cloud.view.listing.take();
                    cloud.view.listing = Some(Arc::new(Listing::new(now, seen)));
                    cloud.servers.publish(servers);
                }
                Err(error) => failed.push((name.clone(), error)),
            }
            match limits {
                Some(Ok(limits)) => {
                    cloud.limits_at = Some(now);
                    cloud.view.headroom = Headroom {
                        instances: limits.instances.available(),
                        cores: limits.cores.available(),
                        ram_mb: limits.ram_mb.available(),
                    };
                }
                Some(Err(error)) => failed.push((name.clone(), error)),
                None => {}
            }
            match flavors {
                Some(Ok(flavors)) => cloud.view.flavors = Some(flavors.into()),
                Some(Err(error)) => failed.push((name.clone(), error)),
                None => {}
            }
            cloud.failing = failed[failed_before..]
                .iter()
                .map(|(_, error)| error.to_string())
                .collect();
        }
        failed
    }

    /// When the next listing is due, for the provider whose listing is due first: rounds
    /// that come between (an executor finished) do not put it off.
    pub fn next_listing(&self, every: Duration, busy_every: Duration) -> Option<Timestamp> {
        self.by_name
            .values()
            .filter_map(|cloud| {
                cloud
                    .cadence
                    .due(cloud.servers.watched(), every, busy_every)
            })
            .min()
    }

    /// What an executor needs to act on `provider`: its connection and its listings.
    pub fn handle(&self, provider: &ProviderName) -> Option<(Connection, ServerFeed)> {
        self.by_name
            .get(provider)
            .map(|c| (c.connection.clone(), c.servers.clone()))
    }

    /// Each provider's view, for the node policy.
    pub fn views(&self) -> BTreeMap<ProviderName, CloudView> {
        self.by_name
            .iter()
            .map(|(name, cloud)| (name.clone(), cloud.view.clone()))
            .collect()
    }

    /// Each provider's flavors (`None` until listed), for the image policy.
    pub fn flavors(&self) -> BTreeMap<ProviderName, Option<Arc<[Flavor]>>> {
        self.by_name
            .iter()
            .map(|(name, cloud)| (name.clone(), cloud.view.flavors.clone()))
            .collect()
    }
}

/// Whose a cloud resource is, by its tags: ours (with its node or image and the provider
/// named), another installation's, or nobody's.
pub fn seen_owner(metadata: &BTreeMap<String, String>, installation: &InstallationId) -> SeenOwner {
    match classify(metadata, installation) {
        Ownership::Ours { provider, owner } => match (ProviderName::new(provider), owner) {
            (Ok(provider), Owner::Node(id)) => SeenOwner::Node(id, provider),
            (Ok(provider), Owner::Image(id)) => SeenOwner::Image(id, provider),
            (Err(_), _) => SeenOwner::Unreadable,
        },
        Ownership::OursUnreadable => SeenOwner::Unreadable,
        Ownership::OtherInstallation(other) => SeenOwner::OtherInstallation(other),
        Ownership::Foreign => SeenOwner::NotOurs,
    }
}
