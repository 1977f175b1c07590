//! Raw structs to the typed [`Config`]: meaning, ranges, defaults and cross-references.
//!
//! Each check reports at the place in the file it concerns and carries on, so that one
//! pass finds every problem. The locations of values that point outside the file (paths,
//! clouds.yaml entries) are kept in [`Origins`] for the environment checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodepool_model::{ImageName, LabelName, NameError, ProviderName};

use crate::config::{
    Api, ApiToken, BaseImage, Config, CronSchedules, Domain, Driver, ImageSource, Label, Network,
    OpenStackSettings, Project, Provider, ProviderImage, Secret, defaults,
};
use crate::cron::Schedule;
use crate::dburi::DbUri;
use crate::diagnostic::{Location, Sink};
use crate::raw::{RawApi, RawConfig, RawImage, RawLabel, RawProvider};
use crate::read::At;
use crate::suggest;

/// Where the values that refer to things outside the file were written, by key path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins(HashMap<String, Location>);

impl Origins {
    /// Where the value at `key` (such as `providers[0].cloud`) was written; for a value left
    /// to its default, where the entry holding it starts.
    pub fn get(&self, key: &str) -> Option<Location> {
        let mut key = key;
        loop {
            if let Some(location) = self.0.get(key) {
                return Some(*location);
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }

    fn note<T>(&mut self, at: &At<T>) {
        self.0.insert(at.key.clone(), at.location);
    }

    fn note_entry(&mut self, key: &str, location: Location) {
        self.0.insert(key.to_owned(), location);
    }
}

pub(crate) struct Validator<'a> {
    pub(crate) sink: &'a mut Sink,
    /// The folder of the config file, for relative paths.
    pub(crate) base: Option<&'a Path>,
    pub(crate) origins: Origins,
    /// The names of the `diskimages` entries; `None` without that section.
    pub(crate) diskimages: Option<Vec<String>>,
}

/// A name, checked; `None` if absent (already reported as missing) or invalid (reported).
fn name<T>(
    sink: &mut Sink,
    at: &Option<At<String>>,
    new: fn(String) -> Result<T, NameError>,
) -> Option<T> {
    let at = at.as_ref()?;
    match new(at.value.clone()) {
        Ok(name) => Some(name),
        Err(error) => {
            sink.error(at.location, &at.key, format!("{error}"));
            None
        }
    }
}

impl Validator<'_> {
    fn error<T>(&mut self, at: &At<T>, message: impl Into<String>) {
        self.sink.error(at.location, &at.key, message);
    }

    fn warning<T>(&mut self, at: &At<T>, message: impl Into<String>) {
        self.sink.warning(at.location, &at.key, message);
    }

    fn path(&self, value: &str) -> PathBuf {
        let path = PathBuf::from(value);
        match self.base {
            Some(base) if path.is_relative() && !base.as_os_str().is_empty() => base.join(path),
            _ => path,
        }
    }

    /// An integer in `min..=max`, or `default` when absent.
    fn int_in(
        &mut self,
        at: &Option<At<i64>>,
        min: i64,
        max: i64,
        default: i64,
        rule: &str,
    ) -> i64 {
        match at {
            None => default,
            Some(at) if (min..=max).contains(&at.value) => at.value,
            Some(at) => {
                self.error(at, format!("{} is out of range: {rule}", at.value));
                default
            }
        }
    }

    /// A number of seconds, `> 0` unless `zero_ok`.
    fn seconds(&mut self, at: &Option<At<f64>>, default: Duration, zero_ok: bool) -> Duration {
        match at {
            None => default,
            Some(at) if at.value > 0.0 || (zero_ok && at.value == 0.0) => {
                Duration::try_from_secs_f64(at.value).unwrap_or(Duration::MAX)
            }
            Some(at) => {
                let rule = if zero_ok {
                    "0 or more seconds"
                } else {
                    "more than 0 seconds"
                };
                self.error(at, format!("{} is out of range: must be {rule}", at.value));
                default
            }
        }
    }

    fn schedule(&mut self, at: &Option<At<String>>, default: &str) -> Schedule {
        let fallback = || Schedule::parse(default).expect("the default schedules are valid");
        match at {
            None => fallback(),
            Some(at) => Schedule::parse(&at.value).unwrap_or_else(|error| {
                self.error(at, error.to_string());
                fallback()
            }),
        }
    }

    pub(crate) fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let script_dir = raw.script_dir.as_ref().map(|at| {
            self.origins.note(at);
            self.path(&at.value)
        });
        let dburi = match &raw.dburi {
            None => DbUri::parse(defaults::DBURI, None).ok(),
            Some(at) => match (
                DbUri::parse(&at.value, self.base),
                crate::read::unrendered(&at.value),
            ) {
                (Ok(uri), None) => {
                    self.origins.note(at);
                    Some(uri)
                }
                // A host or password still in template markup cannot work, parsed or
                // not. (Not quoted: the markup may sit beside a real password.)
                (_, Some(kind)) => {
                    self.error(
                        at,
                        format!("looks like an unrendered {kind} template: render the file before nodepool reads it"),
                    );
                    None
                }
                (Err(error), None) => {
                    self.error(at, error.to_string());
                    None
                }
            },
        };
        let cron = CronSchedules {
            image_update: self.schedule(&raw.cron.image_update, defaults::CRON_IMAGE_UPDATE),
            cleanup: self.schedule(&raw.cron.cleanup, defaults::CRON_CLEANUP),
            check: self.schedule(&raw.cron.check, defaults::CRON_CHECK),
        };
        let api = self.api(&raw.api);

        // Without a readable providers list, references to providers cannot be checked;
        // that list's own problem is already reported.
        self.diskimages = raw.diskimages.as_ref().map(|at| {
            at.value
                .iter()
                .filter_map(|d| d.name.as_ref().map(|n| n.value.clone()))
                .collect()
        });
        let providers_readable = raw.providers.is_some();
        let raw_providers = raw.providers.map(|at| at.value).unwrap_or_default();
        let providers: Vec<Provider> = raw_providers
            .iter()
            .filter_map(|p| self.provider(p, script_dir.is_some()))
            .collect();
        unique(
            self.sink,
            raw_providers.iter().map(|p| &p.name),
            "provider name",
            "",
        );

        let raw_labels = raw.labels.map(|at| at.value).unwrap_or_default();
        let labels: Vec<Label> = raw_labels
            .iter()
            .filter_map(|l| {
                let raw_providers = providers_readable.then_some(raw_providers.as_slice());
                self.label(l, raw_providers, &providers, script_dir.is_some())
            })
            .collect();
        unique(
            self.sink,
            raw_labels.iter().map(|l| &l.name),
            "label name",
            "",
        );

        let removal_grace = self.seconds(&raw.removal_grace, defaults::REMOVAL_GRACE, true);
        if self.sink.has_errors() {
            return None;
        }
        Some(Config {
            script_dir,
            dburi: dburi?,
            cron,
            labels,
            providers,
            api,
            removal_grace,
        })
    }

    fn api(&mut self, raw: &RawApi) -> Api {
        let mut api = Api::default();
        if let Some(at) = &raw.listen {
            match at.value.parse::<std::net::SocketAddr>() {
                Ok(address) => api.listen = address,
                Err(_) => self.error(
                    at,
                    format!(
                        "{:?} is not an address and port: write it as 127.0.0.1:8005 or [::1]:8005",
                        at.value
                    ),
                ),
            }
        }
        api.token_file = raw.token_file.as_ref().map(|at| {
            self.origins.note(at);
            self.path(&at.value)
        });
        for token in raw.tokens.iter().flat_map(|at| &at.value) {
            self.origins.note_entry(&token.key, token.location);
            let name = token.name.as_ref().and_then(|at| {
                let name = at.value.trim();
                if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
                    self.error(at, "give 1 to 255 printable characters, such as \"zuul\"");
                    return None;
                }
                if api.tokens.iter().any(|t: &ApiToken| t.name == name) {
                    self.error(at, format!("{name:?} is the name of another token"));
                    return None;
                }
                Some(name.to_owned())
            });
            let token_file = token.token_file.as_ref().map(|at| {
                self.origins.note(at);
                self.path(&at.value)
            });
            if let (Some(name), Some(token_file)) = (name, token_file) {
                api.tokens.push(ApiToken {
                    name,
                    token_file,
                    admin: token.admin.as_ref().is_some_and(|at| at.value),
                });
            }
        }
        if !api.listen.ip().is_loopback()
            && !api.wants_token()
            && let Some(at) = &raw.listen
        {
            self.error(
                at,
                format!(
                    "{} is reachable from other hosts: give `api.tokens` (a token file per consumer) or `api.token-file` (one token that may do everything)",
                    api.listen
                ),
            );
        }
        if let Some(at) = &raw.max_connections {
            match u32::try_from(at.value) {
                Ok(max) if max >= 8 => api.max_connections = max,
                _ => self.error(
                    at,
                    format!("{} is out of range: must be 8 or more", at.value),
                ),
            }
        }
        api.request_timeout = self.seconds(&raw.request_timeout, defaults::REQUEST_TIMEOUT, false);
        if let Some(at) = &raw.rate {
            match u32::try_from(at.value) {
                Ok(rate) if rate > 0 => api.rate = rate,
                _ => self.error(
                    at,
                    format!("{} is out of range: must be 1 or more", at.value),
                ),
            }
        }
        api
    }

    fn provider(&mut self, raw: &RawProvider, have_script_dir: bool) -> Option<Provider> {
        self.origins.note_entry(&raw.key, raw.location);
        let name = name(self.sink, &raw.name, ProviderName::new);
        let driver = self.driver(raw);
        let max_servers = raw.max_servers.as_ref().and_then(|at| {
            if at.value == -1 {
                // nodepool 0.3 read -1 as "no new nodes here"; real files use it to drain a
                // provider.
                self.warning(
                    at,
                    "-1: this provider takes no new nodes (as nodepool 0.3 read it); write 0 to say so",
                );
                return Some(0);
            }
            u32::try_from(at.value).ok().or_else(|| {
                self.error(
                    at,
                    format!("{} is out of range: must be 0 or more (or -1, as 0)", at.value),
                );
                None
            })
        });
        let networks = raw
            .networks
            .iter()
            .filter_map(|n| {
                let given: Vec<&At<String>> = [&n.net_id, &n.net_label, &n.name]
                    .into_iter()
                    .flatten()
                    .collect();
                match (given.len(), &n.net_id) {
                    (1, Some(id)) => Some(Network::Id(id.value.clone())),
                    (1, None) => Some(Network::Name(given[0].value.clone())),
                    (0, _) => {
                        self.sink.error(
                            n.location,
                            &n.key,
                            "a network needs one of net-id, net-label or name",
                        );
                        None
                    }
                    _ => {
                        self.sink.error(
                            n.location,
                            &n.key,
                            "give only one of net-id, net-label or name",
                        );
                        None
                    }
                }
            })
            .collect();
        let template_hostname = match &raw.template_hostname {
            None => defaults::TEMPLATE_HOSTNAME.to_owned(),
            Some(at) => {
                if let Err(message) = check_template(&at.value) {
                    self.error(at, message);
                }
                at.value.clone()
            }
        };
        let raw_images = raw
            .images
            .as_ref()
            .map(|at| at.value.as_slice())
            .unwrap_or_default();
        let images: Vec<ProviderImage> = raw_images
            .iter()
            .filter_map(|i| self.image(i, have_script_dir))
            .collect();
        unique(
            self.sink,
            raw_images.iter().map(|i| &i.name),
            "image name",
            " on this provider",
        );
        let availability_zones = raw
            .availability_zones
            .as_ref()
            .map(|at| at.value.iter().map(|az| az.value.clone()).collect())
            .unwrap_or_default();
        let rate = self.seconds(&raw.rate, defaults::RATE, true);
        let boot_timeout = self.seconds(&raw.boot_timeout, defaults::BOOT_TIMEOUT, false);
        let launch_timeout = self.seconds(&raw.launch_timeout, defaults::LAUNCH_TIMEOUT, false);
        Some(Provider {
            name: name?,
            driver: driver?,
            max_servers: max_servers?,
            rate,
            boot_timeout,
            launch_timeout,
            keypair: raw.keypair.as_ref().map(|at| at.value.clone()),
            pool: raw.pool.as_ref().map(|at| at.value.clone()),
            networks,
            availability_zones,
            template_hostname,
            images,
        })
    }

    fn driver(&mut self, raw: &RawProvider) -> Option<Driver> {
        let fake_auth_url = raw.auth_url.as_ref().filter(|at| at.value == "fake");
        match &raw.driver {
            Some(at) if at.value == "fake" => return Some(Driver::Fake),
            Some(at) if at.value != "openstack" => {
                self.error(
                    at,
                    format!("unknown driver {:?}; expected openstack or fake", at.value),
                );
                return None;
            }
            None if fake_auth_url.is_some() => {
                if let Some(at) = fake_auth_url {
                    self.warning(at, "`auth-url: fake` selects the in-memory fake cloud, as in 2014; prefer `driver: fake`");
                }
                return Some(Driver::Fake);
            }
            _ => {}
        }
        if let Some(at) = &raw.cloud {
            self.origins.note(at);
        }
        let project = match (&raw.project_name, &raw.project_id) {
            (Some(_), Some(id)) => {
                self.error(id, "give project-name or project-id, not both");
                None
            }
            (Some(name), None) => Some(Project::Name(name.value.clone())),
            (None, Some(id)) => Some(Project::Id(id.value.clone())),
            (None, None) => None,
        };
        if raw.cloud.is_none() {
            let mut missing = Vec::new();
            for (key, present) in [
                ("auth-url", raw.auth_url.is_some()),
                ("username", raw.username.is_some()),
                ("password", raw.password.is_some()),
                (
                    "project-name",
                    raw.project_name.is_some() || raw.project_id.is_some(),
                ),
            ] {
                if !present {
                    missing.push(key);
                }
            }
            if !missing.is_empty() {
                self.sink.error(
                    raw.location,
                    &raw.key,
                    format!(
                        "no credentials: set `cloud` to an entry of clouds.yaml, or all of auth-url, username, password and project-name (missing: {})",
                        missing.join(", ")
                    ),
                );
                return None;
            }
        }
        if let Some(at) = &raw.identity_api_version
            && !matches!(at.value.trim(), "3" | "3.0")
        {
            self.error(
                at,
                format!(
                    "identity API version {}: nodepool speaks Keystone v3 only; write `identity-api-version: 3` (v2 credentials work with v3, with `user-domain-name` and `project-domain-name` of their domain, `Default` unless told otherwise)",
                    at.value
                ),
            );
        }
        let user_domain = self.domain(&raw.user_domain_name, &raw.user_domain_id, "user");
        let project_domain =
            self.domain(&raw.project_domain_name, &raw.project_domain_id, "project");
        let text = |at: &Option<At<String>>| at.as_ref().map(|at| at.value.clone());
        Some(Driver::OpenStack(OpenStackSettings {
            cloud: text(&raw.cloud),
            auth_url: text(&raw.auth_url),
            username: text(&raw.username),
            password: raw
                .password
                .as_ref()
                .map(|at| Secret::new(at.value.clone())),
            project,
            region_name: text(&raw.region_name),
            service_type: text(&raw.service_type),
            service_name: text(&raw.service_name),
            user_domain,
            project_domain,
            api_timeout: raw
                .api_timeout
                .as_ref()
                .map(|_| self.seconds(&raw.api_timeout, Duration::from_secs(60), false)),
        }))
    }

    /// `{what}-domain-name` or `{what}-domain-id`, not both.
    fn domain(
        &mut self,
        name: &Option<At<String>>,
        id: &Option<At<String>>,
        what: &str,
    ) -> Option<Domain> {
        match (name, id) {
            (Some(_), Some(id)) => {
                self.error(
                    id,
                    format!("give {what}-domain-name or {what}-domain-id, not both"),
                );
                None
            }
            (Some(name), None) => Some(Domain::Name(name.value.clone())),
            (None, Some(id)) => Some(Domain::Id(id.value.clone())),
            (None, None) => None,
        }
    }

    /// How an image is made: by snapshot from `base-image`, or by diskimage-builder from the
    /// `diskimages` entry that `diskimage` names (nodepool 0.3) or that has the image's own
    /// name (nodepool 0.4, which has no `base-image`).
    fn image_source(&mut self, raw: &RawImage) -> Option<ImageSource> {
        let entry_named = |name: &str| {
            self.diskimages
                .as_ref()
                .is_some_and(|names| names.iter().any(|n| n == name))
        };
        match (&raw.base_image, &raw.diskimage) {
            (Some(base), _) if base.value.trim().is_empty() => {
                self.error(
                    base,
                    "is empty; give the name or id of the cloud image to build from",
                );
                None
            }
            (Some(base), Some(dib)) => {
                self.warning(dib, "has no effect: diskimage-builder images are not built by this version; the image is built by snapshot from `base-image`");
                Some(ImageSource::Snapshot(BaseImage::parse(base.value.trim())))
            }
            (Some(base), None) => Some(ImageSource::Snapshot(BaseImage::parse(base.value.trim()))),
            (None, Some(dib)) => {
                if !entry_named(&dib.value) {
                    let known = self.diskimages.clone().unwrap_or_default();
                    let known: Vec<&str> = known.iter().map(String::as_str).collect();
                    let hint = suggest::closest(&dib.value, &known)
                        .map(|k| format!("; did you mean {}?", suggest::quote(k)))
                        .unwrap_or_default();
                    self.error(
                        dib,
                        format!(
                            "no entry of `diskimages` is named {}{hint}",
                            suggest::quote(&dib.value)
                        ),
                    );
                    return None;
                }
                self.warning(
                    dib,
                    format!(
                        "this version does not build diskimage-builder images: image {} is neither built nor launched from; give it `base-image` (and `setup`) to build it by snapshot",
                        raw.name.as_ref().map_or("", |n| n.value.as_str())
                    ),
                );
                Some(ImageSource::Diskimage(dib.value.clone()))
            }
            // Written but unreadable: already reported.
            (None, None) if raw.base_image_written => None,
            (None, None) => {
                if let Some(name) = raw.name.as_ref().filter(|n| entry_named(&n.value)) {
                    // nodepool 0.4: the provider image uploads the diskimage of its name.
                    self.warning(
                        name,
                        format!(
                            "is made by diskimage-builder (the `diskimages` entry of this name), which this version does not build: image {} is neither built nor launched from; give it `base-image` (and `setup`) to build it by snapshot",
                            name.value
                        ),
                    );
                    return Some(ImageSource::Diskimage(name.value.clone()));
                }
                self.sink.error(
                    raw.location,
                    &format!("{}.base-image", raw.key),
                    "missing; give the name or id of the cloud image to build from (or `diskimage`, naming a `diskimages` entry)",
                );
                None
            }
        }
    }

    fn image(&mut self, raw: &RawImage, have_script_dir: bool) -> Option<ProviderImage> {
        self.origins.note_entry(&raw.key, raw.location);
        let name = name(self.sink, &raw.name, ImageName::new);
        let source = self.image_source(raw);
        let min_ram = raw.min_ram.as_ref().and_then(|at| {
            u32::try_from(at.value).ok().or_else(|| {
                self.error(
                    at,
                    format!("{} is out of range: must be 0 or more megabytes", at.value),
                );
                None
            })
        });
        if let Some(at) = &raw.setup {
            self.origins.note(at);
            if !have_script_dir {
                self.error(at, "needs `script-dir`: setup scripts are copied from there to the template server");
            }
        }
        let private_key = match &raw.private_key {
            Some(at) => {
                self.origins.note(at);
                self.path(&at.value)
            }
            None => PathBuf::from(defaults::PRIVATE_KEY),
        };
        let connection_port = match &raw.connection_port {
            Some(at) => match u16::try_from(at.value) {
                Ok(port) if port > 0 => port,
                _ => {
                    self.error(at, "a port is a number from 1 to 65535");
                    defaults::SSH_PORT
                }
            },
            None => defaults::SSH_PORT,
        };
        let mut meta = BTreeMap::new();
        for (key, value) in raw
            .meta
            .as_ref()
            .map(|at| at.value.as_slice())
            .unwrap_or_default()
        {
            // Warnings, not errors: nodepool 0.3 and 0.4 accepted such entries (and dropped
            // the whole `meta`), so files that ran then still run.
            if key.value.starts_with("nodepool-") {
                self.warning(
                    key,
                    "is ignored: keys starting with `nodepool-` are reserved for nodepool's ownership tags",
                );
            } else if key.value.is_empty() || key.value.chars().count() > 255 {
                self.warning(
                    key,
                    "is ignored: a metadata key must have 1 to 255 characters (Nova's limit)",
                );
            } else if value.value.chars().count() > 255 {
                self.warning(
                    value,
                    "is ignored: a metadata value must have at most 255 characters (Nova's limit)",
                );
            } else {
                meta.insert(key.value.clone(), value.value.clone());
            }
        }
        let text = |at: &Option<At<String>>, default: &str| {
            at.as_ref()
                .map_or_else(|| default.to_owned(), |at| at.value.clone())
        };
        Some(ProviderImage {
            name: name?,
            source: source?,
            min_ram: min_ram?,
            name_filter: raw.name_filter.as_ref().map(|at| at.value.clone()),
            setup: raw.setup.as_ref().map(|at| at.value.clone()),
            username: text(&raw.username, defaults::USERNAME),
            private_key,
            user_home: text(&raw.user_home, defaults::USER_HOME),
            connection_port,
            meta,
        })
    }

    fn label(
        &mut self,
        raw: &RawLabel,
        raw_providers: Option<&[RawProvider]>,
        providers: &[Provider],
        have_script_dir: bool,
    ) -> Option<Label> {
        let name = name(self.sink, &raw.name, LabelName::new);
        let min_ready = self.int_in(
            &raw.min_ready,
            -1,
            i64::from(i32::MAX),
            i64::from(defaults::MIN_READY),
            "must be -1 (disabled) or more",
        );
        let subnodes = self.int_in(&raw.subnodes, 0, 1000, 0, "must be 0 to 1000");
        let providers_known = raw_providers.is_some();
        let raw_providers = raw_providers.unwrap_or_default();
        let image_names: Vec<&str> = raw_providers
            .iter()
            .flat_map(|p| p.images.iter().flat_map(|i| &i.value))
            .filter_map(|i| i.name.as_ref().map(|n| n.value.as_str()))
            .collect();
        // A label image that no provider has is reported once, not again for each provider.
        let image_exists = raw
            .image
            .as_ref()
            .is_some_and(|at| image_names.contains(&at.value.as_str()));
        let image = match &raw.image {
            None => None,
            Some(at) => match ImageName::new(at.value.clone()) {
                Ok(image) => {
                    if !image_exists && providers_known && !raw_providers.is_empty() {
                        let hint = suggest::closest(&at.value, &image_names)
                            .map(|k| format!("; did you mean {}?", suggest::quote(k)))
                            .unwrap_or_default();
                        // A warning: nodepool 0.3 and 0.4 ran such files (failing each launch).
                        self.warning(
                            at,
                            format!(
                                "no provider has an image named {}, so this label gets no nodes{hint}",
                                suggest::quote(&at.value)
                            ),
                        );
                    }
                    Some(image)
                }
                Err(error) => {
                    self.error(at, error.to_string());
                    None
                }
            },
        };
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        let listed = raw
            .providers
            .as_ref()
            .map(|at| at.value.as_slice())
            .unwrap_or_default();
        for at in listed.iter().filter(|_| providers_known) {
            let Some(raw_provider) = raw_providers
                .iter()
                .find(|p| p.name.as_ref().is_some_and(|n| n.value == at.value))
            else {
                let known: Vec<&str> = raw_providers
                    .iter()
                    .filter_map(|p| p.name.as_ref().map(|n| n.value.as_str()))
                    .collect();
                let hint = suggest::closest(&at.value, &known)
                    .map(|k| format!("; did you mean {}?", suggest::quote(k)))
                    .unwrap_or_default();
                self.error(
                    at,
                    format!("no provider named {}{hint}", suggest::quote(&at.value)),
                );
                continue;
            };
            if !seen.insert(at.value.clone()) {
                self.error(
                    at,
                    format!("provider {} is listed twice", suggest::quote(&at.value)),
                );
                continue;
            }
            if let Some(image) = raw.image.as_ref().filter(|_| image_exists) {
                let has_image = raw_provider
                    .images
                    .iter()
                    .flat_map(|i| &i.value)
                    .any(|i| i.name.as_ref().is_some_and(|n| n.value == image.value));
                if !has_image {
                    self.warning(
                        at,
                        format!(
                            "provider {} has no image named {} (the label's image), so it supplies no nodes of this label",
                            suggest::quote(&at.value),
                            suggest::quote(&image.value)
                        ),
                    );
                }
            }
            if let Some(provider) = providers.iter().find(|p| p.name.as_str() == at.value) {
                names.push(provider.name.clone());
            }
        }
        if let Some(at) = raw
            .providers
            .as_ref()
            .filter(|at| at.value.is_empty() && min_ready >= 0)
        {
            self.warning(at, "is empty: this label can never get nodes");
        }
        if let Some(at) = &raw.ready_script {
            self.origins.note(at);
            if !have_script_dir {
                self.warning(
                    at,
                    "needs `script-dir`, which this file does not set: this label's launches fail until it does (ready scripts are copied from there to every node)",
                );
            }
        }
        Some(Label {
            name: name?,
            image: image?,
            min_ready: i32::try_from(min_ready).ok()?,
            providers: names,
            ready_script: raw.ready_script.as_ref().map(|at| at.value.clone()),
            subnodes: u32::try_from(subnodes).ok()?,
        })
    }
}

/// Reports every name that appears twice, at its second place.
fn unique<'a>(
    sink: &mut Sink,
    names: impl Iterator<Item = &'a Option<At<String>>>,
    what: &str,
    scope: &str,
) {
    let mut first: HashMap<&str, u64> = HashMap::new();
    for at in names.flatten() {
        match first.get(at.value.as_str()) {
            Some(line) => sink.error(
                at.location,
                &at.key,
                format!(
                    "duplicate {what} {}{scope}; it is first used at line {line}",
                    suggest::quote(&at.value)
                ),
            ),
            None => {
                first.insert(&at.value, at.location.line);
            }
        }
    }
}

/// Checks a `template-hostname` such as `{image.name}-{timestamp}.template.example.org`.
fn check_template(template: &str) -> Result<(), String> {
    const FIELDS: &[&str] = &["image.name", "provider.name", "timestamp"];
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        let (c, after) = (rest.as_bytes()[i], &rest[i + 1..]);
        if after.starts_with(c as char) {
            rest = &after[1..];
            continue;
        }
        if c == b'}' {
            return Err("has a `}` with no `{`; write `}}` for a literal brace".into());
        }
        let Some(end) = after.find('}') else {
            return Err("has a `{` with no `}`; write `{{` for a literal brace".into());
        };
        let field = &after[..end];
        if !FIELDS.contains(&field) {
            return Err(format!(
                "unknown field {{{field}}}; the fields are {{image.name}}, {{provider.name}} and {{timestamp}}"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}
