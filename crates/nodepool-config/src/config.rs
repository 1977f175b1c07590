//! The typed config: what the rest of nodepool reads.
//!
//! Values here have been checked: names are valid and unique, references resolve,
//! numbers are in range and every default of the 2014 format is filled in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nodepool_model::{ImageName, LabelName, ProviderName};

use crate::cron::Schedule;
use crate::dburi::DbUri;

/// Defaults of the 2014 format (reference: nodepool at its first docs, March 2014).
pub mod defaults {
    use std::time::Duration;

    /// `labels[].min-ready` (since May 2014; it was required before).
    pub const MIN_READY: i32 = 2;
    /// `providers[].rate`: seconds between two API calls to the provider.
    pub const RATE: Duration = Duration::from_secs(1);
    /// `providers[].boot-timeout`: how long to keep trying SSH once a server is ACTIVE.
    pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
    /// `providers[].launch-timeout`: how long to wait for a server to become ACTIVE.
    pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(3600);
    /// `providers[].template-hostname`: host name of snapshot template servers.
    pub const TEMPLATE_HOSTNAME: &str = "{image.name}-{timestamp}.template.openstack.org";
    /// `providers[].images[].username`: the user nodes are reached as.
    pub const USERNAME: &str = "jenkins";
    /// `providers[].images[].private-key`: the key nodes are reached with.
    pub const PRIVATE_KEY: &str = "/var/lib/jenkins/.ssh/id_rsa";
    /// `providers[].images[].user-home`: the home folder of `username` on nodes.
    pub const USER_HOME: &str = "/home/jenkins";
    /// `cron.image-update`: rebuild every image daily at 02:14.
    pub const CRON_IMAGE_UPDATE: &str = "14 2 * * *";
    /// `cron.cleanup`: every minute, as the 2014 code did (its docs said `27 */6 * * *`).
    pub const CRON_CLEANUP: &str = "* * * * *";
    /// `cron.check`: probe ready nodes over SSH every 15 minutes.
    pub const CRON_CHECK: &str = "*/15 * * * *";
    /// `dburi` when none is given.
    pub const DBURI: &str = "sqlite:///var/lib/nodepool/nodepool.sqlite";
    /// Where every regular file of `script-dir` is copied on template servers.
    pub const SCRIPTS_ON_NODE: &str = "/opt/nodepool-scripts";
    /// The SSH port of nodes and template servers.
    pub const SSH_PORT: u16 = 22;
    /// `api.listen`: the node request API, on loopback only.
    pub const API_LISTEN: &str = "127.0.0.1:8005";
    /// `api.request-timeout`: a node request still waiting after this long fails.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
    /// `api.rate`: requests per second one client address may make (bursts of twice that).
    pub const API_RATE: u32 = 100;
    /// `api.max-connections`: connections the API holds open at once, all clients together
    /// (one client address, or IPv6 /64, may hold half of them). Each is a file descriptor:
    /// keep it well under the daemon's open-files limit.
    pub const API_MAX_CONNECTIONS: u32 = 512;
    /// `removal-grace`: how long the nodes and uploads of a provider, label or image gone
    /// from the config are kept, in case the config brings it back.
    pub const REMOVAL_GRACE: Duration = Duration::from_secs(600);
    /// The priorities a node request may have; others are clamped to the nearest.
    pub const PRIORITIES: std::ops::RangeInclusive<i32> = -1000..=1000;
}

/// A whole, valid config.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `script-dir`: a local folder whose regular files are copied to every template server.
    pub script_dir: Option<PathBuf>,
    /// `dburi`: where the store lives.
    pub dburi: DbUri,
    /// `cron`: when the periodic jobs run.
    pub cron: CronSchedules,
    /// `labels`, in file order.
    pub labels: Vec<Label>,
    /// `providers`, in file order.
    pub providers: Vec<Provider>,
    /// `api`: the HTTP API for consumers and the metrics scraper (ours, not 2014's).
    pub api: Api,
    /// `removal-grace`: how long the nodes and uploads of a provider, label or image gone
    /// from the config are kept, in case an edit brings it back (ours).
    pub removal_grace: Duration,
}

/// `api`: where and how the daemon serves its HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Api {
    /// `api.listen`: the address and port to bind.
    pub listen: std::net::SocketAddr,
    /// `api.token-file`: a file holding a bearer token that may do everything (an admin
    /// token, as `tokens` with `admin: true`). A token is required when `listen` is not a
    /// loopback address.
    pub token_file: Option<PathBuf>,
    /// `api.tokens`: one token per consumer, which owns the requests it makes and the
    /// nodes they get.
    pub tokens: Vec<ApiToken>,
    /// `api.max-connections`: connections held open at once, all clients together.
    pub max_connections: u32,
    /// `api.request-timeout`: how long a node request may wait before it fails.
    pub request_timeout: Duration,
    /// `api.rate`: requests per second one client address may make.
    pub rate: u32,
}

impl Default for Api {
    fn default() -> Api {
        Api {
            listen: defaults::API_LISTEN
                .parse()
                .expect("the default address is valid"),
            token_file: None,
            tokens: Vec::new(),
            max_connections: defaults::API_MAX_CONNECTIONS,
            request_timeout: defaults::REQUEST_TIMEOUT,
            rate: defaults::API_RATE,
        }
    }
}

impl Api {
    /// Whether clients must send a token.
    pub fn wants_token(&self) -> bool {
        self.token_file.is_some() || !self.tokens.is_empty()
    }
}

/// An `api.tokens` entry: a consumer of the API and the file holding its token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiToken {
    /// `name`: who the consumer is. Its requests are recorded with this requestor, and only
    /// it (or an admin) may cancel them and release or hold their nodes.
    pub name: String,
    /// `token-file`: a file holding the consumer's bearer token.
    pub token_file: PathBuf,
    /// `admin`: the token may do everything, to every consumer's requests and nodes.
    pub admin: bool,
}

impl ApiToken {
    /// A consumer's token (not an admin's) read from `token_file`.
    pub fn new(name: impl Into<String>, token_file: impl Into<PathBuf>) -> ApiToken {
        ApiToken {
            name: name.into(),
            token_file: token_file.into(),
            admin: false,
        }
    }
}

impl Config {
    /// The provider of that name.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name.as_str() == name)
    }

    /// The label of that name.
    pub fn label(&self, name: &str) -> Option<&Label> {
        self.labels.iter().find(|l| l.name.as_str() == name)
    }
}

/// The three periodic jobs of the daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct CronSchedules {
    /// `cron.image-update`: rebuild every image in use.
    pub image_update: Schedule,
    /// `cron.cleanup`: delete what should go (used nodes, old images, leaks).
    pub cleanup: Schedule,
    /// `cron.check`: probe ready nodes over SSH.
    pub check: Schedule,
}

/// The periodic jobs, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CronJob {
    /// `cron.image-update`.
    ImageUpdate,
    /// `cron.cleanup`.
    Cleanup,
    /// `cron.check`.
    Check,
}

impl CronJob {
    /// Every job.
    pub const ALL: [CronJob; 3] = [CronJob::ImageUpdate, CronJob::Cleanup, CronJob::Check];

    /// The job's key under `cron:`.
    pub const fn key(self) -> &'static str {
        match self {
            CronJob::ImageUpdate => "image-update",
            CronJob::Cleanup => "cleanup",
            CronJob::Check => "check",
        }
    }
}

impl fmt::Display for CronJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl CronSchedules {
    /// The schedule of one job.
    pub fn get(&self, job: CronJob) -> &Schedule {
        match job {
            CronJob::ImageUpdate => &self.image_update,
            CronJob::Cleanup => &self.cleanup,
            CronJob::Check => &self.check,
        }
    }
}

/// What CI jobs ask for: nodes booted from one image, kept ready in advance.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Label {
    /// `name`.
    pub name: LabelName,
    /// `image`: the provider image its nodes boot from.
    pub image: ImageName,
    /// `min-ready`: nodes kept ready (or building) beyond outstanding requests;
    /// `-1` disables the label (no nodes, no image builds).
    pub min_ready: i32,
    /// `providers`: who may supply it, in file order.
    pub providers: Vec<ProviderName>,
    /// `ready-script`: run from the scripts folder on each node before it becomes ready.
    pub ready_script: Option<String>,
    /// `subnodes`: extra nodes launched with, and tied to, each node.
    pub subnodes: u32,
}

impl Label {
    /// Whether the label is in use (`min-ready` is not -1).
    pub fn is_enabled(&self) -> bool {
        self.min_ready >= 0
    }

    /// How many ready nodes to keep; zero for a disabled label.
    pub fn min_ready_count(&self) -> u32 {
        u32::try_from(self.min_ready).unwrap_or(0)
    }
}

/// A value that must never be printed: a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that sends it to its service.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Which implementation talks to the cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Driver {
    /// A real OpenStack cloud (`driver: openstack`, the default).
    OpenStack(OpenStackSettings),
    /// The in-memory fake cloud (`driver: fake`, or 2014's `auth-url: fake`):
    /// for tests and for trying nodepool with zero setup.
    Fake,
}

/// How to reach an OpenStack cloud.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct OpenStackSettings {
    /// `cloud`: an entry of clouds.yaml. Inline values below override its fields.
    pub cloud: Option<String>,
    /// `auth-url`: the Keystone endpoint.
    pub auth_url: Option<String>,
    /// `username`.
    pub username: Option<String>,
    /// `password`.
    pub password: Option<Secret>,
    /// `project-name` (or 2014's `project-id`, which held a name or an id).
    pub project: Option<Project>,
    /// `region-name`.
    pub region_name: Option<String>,
    /// `service-type` of the compute endpoint.
    pub service_type: Option<String>,
    /// `service-name` of the compute endpoint.
    pub service_name: Option<String>,
    /// `user-domain-name` or `user-domain-id`: the Keystone v3 domain of the user
    /// (`Default` when neither is given and no clouds.yaml entry says).
    pub user_domain: Option<Domain>,
    /// `project-domain-name` or `project-domain-id`: the domain of the project.
    pub project_domain: Option<Domain>,
    /// `api-timeout`: how long one request to the cloud may take (the driver's default,
    /// 60 s, when not given).
    pub api_timeout: Option<Duration>,
}

/// A Keystone v3 domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// By name (`...-domain-name`).
    Name(String),
    /// By id (`...-domain-id`).
    Id(String),
}

/// The project (tenant) to work in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Project {
    /// `project-name`.
    Name(String),
    /// `project-id`. In 2014 this key carried what Keystone v2 called the tenant name
    /// or id; the driver tries it as an id and then as a name.
    Id(String),
}

/// A network a node is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// `net-id`: by id.
    Id(String),
    /// `net-label` (2014) or `name`: by name, resolved through the network API.
    Name(String),
}

/// One cloud account nodepool launches nodes in.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Provider {
    /// `name`.
    pub name: ProviderName,
    /// `driver` and its settings.
    pub driver: Driver,
    /// `max-servers`: at most this many servers in any state (building, ready, held,
    /// deleting...), subnodes included.
    pub max_servers: u32,
    /// `rate`: the least time between two API calls to this provider (not calls per second).
    pub rate: Duration,
    /// `boot-timeout`: how long to keep trying SSH once a server is ACTIVE.
    pub boot_timeout: Duration,
    /// `launch-timeout`: how long to wait for a server to become ACTIVE.
    pub launch_timeout: Duration,
    /// `keypair`: an existing key pair for template servers.
    pub keypair: Option<String>,
    /// `pool`: the floating IP pool to take an address from when a server has no public one.
    pub pool: Option<String>,
    /// `networks`, in file order.
    pub networks: Vec<Network>,
    /// `availability-zones`: each node goes to one of these; empty lets the cloud choose.
    pub availability_zones: Vec<String>,
    /// `template-hostname`: host name of template servers, with `{image.name}`,
    /// `{provider.name}` and `{timestamp}` filled in.
    pub template_hostname: String,
    /// `images`, in file order.
    pub images: Vec<ProviderImage>,
}

impl Provider {
    /// The image of that name on this provider.
    pub fn image(&self, name: &str) -> Option<&ProviderImage> {
        self.images.iter().find(|i| i.name.as_str() == name)
    }
}

/// The cloud image a template server boots from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseImage {
    /// A value that looks like a UUID is an image id.
    Id(String),
    /// Anything else is an image name.
    Name(String),
}

impl BaseImage {
    /// Reads `base-image` the 2014 way: a value starting with a UUID is an id.
    pub fn parse(value: &str) -> BaseImage {
        let looks_like_uuid = value.len() >= 36
            && value.as_bytes()[..36]
                .iter()
                .enumerate()
                .all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => *b == b'-',
                    _ => b.is_ascii_hexdigit(),
                });
        if looks_like_uuid {
            BaseImage::Id(value.to_owned())
        } else {
            BaseImage::Name(value.to_owned())
        }
    }
}

/// How an image is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// By snapshot: a template server boots `base-image`, runs `setup`, and is snapshotted.
    Snapshot(BaseImage),
    /// By diskimage-builder, from the `diskimages` entry of this name (`diskimage`). This
    /// version does not build such images: nothing is built or launched from them.
    Diskimage(String),
}

impl ImageSource {
    /// The base image of a snapshot build; `None` for an image this version cannot build.
    pub fn base_image(&self) -> Option<&BaseImage> {
        match self {
            ImageSource::Snapshot(base) => Some(base),
            ImageSource::Diskimage(_) => None,
        }
    }
}

/// How to build one image on one provider, and how to reach nodes booted from it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderImage {
    /// `name`: labels refer to it; the same name on several providers means equivalent images.
    pub name: ImageName,
    /// `base-image` (a snapshot build) or `diskimage` (a diskimage-builder image).
    pub source: ImageSource,
    /// `min-ram`: the flavor is the one with the least RAM of at least this many MB.
    pub min_ram: u32,
    /// `name-filter`: the flavor's name must contain this.
    pub name_filter: Option<String>,
    /// `setup`: the script (in `script-dir`) run on the template server before the snapshot.
    pub setup: Option<String>,
    /// `username`: the user nodes are reached as.
    pub username: String,
    /// `private-key`: the key nodes are reached with.
    pub private_key: PathBuf,
    /// `user-home`: the home folder of `username` on nodes.
    pub user_home: String,
    /// The port SSH listens on, on nodes and template servers (`connection-port`, default 22).
    pub connection_port: u16,
    /// `meta`: metadata put on the snapshot, by key.
    pub meta: BTreeMap<String, String>,
}
