//! What changed between two configs.
//!
//! The daemon re-reads its config every few seconds and applies exactly what
//! [`Config::diff`] names: providers to start or drain, quotas, images, labels and schedules.

use std::fmt;

use nodepool_model::{ImageName, LabelName, ProviderName};

use crate::config::{Config, CronJob, Label, Provider, ProviderImage};

/// Changes from one config to the next, each list in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigDiff {
    /// Providers only in the new config.
    pub providers_added: Vec<ProviderName>,
    /// Providers only in the old config.
    pub providers_removed: Vec<ProviderName>,
    /// Providers in both whose settings or images differ.
    pub providers_changed: Vec<ProviderChange>,
    /// Labels only in the new config.
    pub labels_added: Vec<LabelName>,
    /// Labels only in the old config.
    pub labels_removed: Vec<LabelName>,
    /// Labels in both, with the keys that differ.
    pub labels_changed: Vec<(LabelName, Vec<&'static str>)>,
    /// Periodic jobs whose schedule differs.
    pub cron_changed: Vec<CronJob>,
    /// `dburi` differs: the store must be reopened (the daemon needs a restart for that).
    pub dburi_changed: bool,
    /// `script-dir` differs.
    pub script_dir_changed: bool,
    /// Keys of `api` that differ (`listen` and `token-file` take effect at the next start).
    pub api_changed: Vec<&'static str>,
}

/// How one provider changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderChange {
    /// The provider.
    pub name: ProviderName,
    /// Its own keys that differ (`max-servers`, `rate`, ...), `images` excluded.
    pub fields: Vec<&'static str>,
    /// Images only in the new config.
    pub images_added: Vec<ImageName>,
    /// Images only in the old config.
    pub images_removed: Vec<ImageName>,
    /// Images in both, with the keys that differ.
    pub images_changed: Vec<(ImageName, Vec<&'static str>)>,
}

impl ConfigDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

/// Lists the keys whose values differ between two records.
macro_rules! changed {
    ($old:expr, $new:expr, { $($field:ident => $key:literal),+ $(,)? }) => {{
        let mut keys = Vec::new();
        $( if $old.$field != $new.$field { keys.push($key); } )+
        keys
    }};
}

fn provider_fields(old: &Provider, new: &Provider) -> Vec<&'static str> {
    changed!(old, new, {
        driver => "driver",
        max_servers => "max-servers",
        rate => "rate",
        boot_timeout => "boot-timeout",
        launch_timeout => "launch-timeout",
        keypair => "keypair",
        pool => "pool",
        networks => "networks",
        availability_zones => "availability-zones",
        template_hostname => "template-hostname",
    })
}

fn image_fields(old: &ProviderImage, new: &ProviderImage) -> Vec<&'static str> {
    changed!(old, new, {
        source => "base-image",
        min_ram => "min-ram",
        name_filter => "name-filter",
        setup => "setup",
        username => "username",
        private_key => "private-key",
        user_home => "user-home",
        connection_port => "connection-port",
        meta => "meta",
    })
}

fn label_fields(old: &Label, new: &Label) -> Vec<&'static str> {
    changed!(old, new, {
        image => "image",
        min_ready => "min-ready",
        providers => "providers",
        ready_script => "ready-script",
        subnodes => "subnodes",
    })
}

/// Splits two named lists into (added, removed, changed) by name.
fn by_name<'a, T, N: PartialEq + Clone + 'a, F>(
    old: &'a [T],
    new: &'a [T],
    name: impl Fn(&T) -> &N,
    mut fields: impl FnMut(&T, &T) -> Option<F>,
) -> (Vec<N>, Vec<N>, Vec<F>) {
    let added = new
        .iter()
        .filter(|n| !old.iter().any(|o| name(o) == name(n)))
        .map(|n| name(n).clone())
        .collect();
    let removed = old
        .iter()
        .filter(|o| !new.iter().any(|n| name(o) == name(n)))
        .map(|o| name(o).clone())
        .collect();
    let changed = new
        .iter()
        .filter_map(|n| {
            old.iter()
                .find(|o| name(o) == name(n))
                .and_then(|o| fields(o, n))
        })
        .collect();
    (added, removed, changed)
}

impl Config {
    /// What changed from `self` (the config in force) to `new`.
    pub fn diff(&self, new: &Config) -> ConfigDiff {
        let (providers_added, providers_removed, providers_changed) = by_name(
            &self.providers,
            &new.providers,
            |p| &p.name,
            |old, new| {
                let (images_added, images_removed, images_changed) = by_name(
                    &old.images,
                    &new.images,
                    |i| &i.name,
                    |o, n| {
                        let fields = image_fields(o, n);
                        (!fields.is_empty()).then(|| (n.name.clone(), fields))
                    },
                );
                let change = ProviderChange {
                    name: new.name.clone(),
                    fields: provider_fields(old, new),
                    images_added,
                    images_removed,
                    images_changed,
                };
                let unchanged = change.fields.is_empty()
                    && change.images_added.is_empty()
                    && change.images_removed.is_empty()
                    && change.images_changed.is_empty();
                (!unchanged).then_some(change)
            },
        );
        let (labels_added, labels_removed, labels_changed) = by_name(
            &self.labels,
            &new.labels,
            |l| &l.name,
            |o, n| {
                let fields = label_fields(o, n);
                (!fields.is_empty()).then(|| (n.name.clone(), fields))
            },
        );
        ConfigDiff {
            providers_added,
            providers_removed,
            providers_changed,
            labels_added,
            labels_removed,
            labels_changed,
            cron_changed: CronJob::ALL
                .into_iter()
                .filter(|job| self.cron.get(*job) != new.cron.get(*job))
                .collect(),
            dburi_changed: self.dburi != new.dburi,
            script_dir_changed: self.script_dir != new.script_dir,
            api_changed: changed!(self.api, new.api, {
                listen => "listen",
                token_file => "token-file",
                request_timeout => "request-timeout",
                rate => "rate",
            }),
        }
    }
}

impl fmt::Display for ConfigDiff {
    /// One change per line, such as `provider cloud1 changed: max-servers, rate`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut lines: Vec<String> = Vec::new();
        lines.extend(
            self.providers_added
                .iter()
                .map(|p| format!("provider {p} added")),
        );
        lines.extend(
            self.providers_removed
                .iter()
                .map(|p| format!("provider {p} removed")),
        );
        for change in &self.providers_changed {
            if !change.fields.is_empty() {
                lines.push(format!(
                    "provider {} changed: {}",
                    change.name,
                    change.fields.join(", ")
                ));
            }
            lines.extend(
                change
                    .images_added
                    .iter()
                    .map(|i| format!("image {i} added to provider {}", change.name)),
            );
            lines.extend(
                change
                    .images_removed
                    .iter()
                    .map(|i| format!("image {i} removed from provider {}", change.name)),
            );
            lines.extend(change.images_changed.iter().map(|(i, fields)| {
                format!(
                    "image {i} on provider {} changed: {}",
                    change.name,
                    fields.join(", ")
                )
            }));
        }
        lines.extend(self.labels_added.iter().map(|l| format!("label {l} added")));
        lines.extend(
            self.labels_removed
                .iter()
                .map(|l| format!("label {l} removed")),
        );
        lines.extend(
            self.labels_changed
                .iter()
                .map(|(l, fields)| format!("label {l} changed: {}", fields.join(", "))),
        );
        lines.extend(
            self.cron_changed
                .iter()
                .map(|job| format!("cron {job} changed")),
        );
        if self.dburi_changed {
            lines.push("dburi changed (takes effect at the next restart)".to_owned());
        }
        if self.script_dir_changed {
            lines.push("script-dir changed".to_owned());
        }
        for key in &self.api_changed {
            lines.push(if matches!(*key, "listen" | "token-file") {
                format!("api.{key} changed (takes effect at the next restart)")
            } else {
                format!("api.{key} changed")
            });
        }
        f.write_str(&lines.join("\n"))
    }
}
