//! Checks of what a config refers to outside itself: clouds.yaml entries, `script-dir` and
//! its scripts, SSH key files.
//!
//! They are kept apart from parsing because they depend on the machine: `config-validate`
//! may run on a laptop with none of these, so it reports them as warnings, while the daemon
//! treats each as an error for the provider or label it concerns.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nodepool_model::{LabelName, ProviderName};

use crate::Loaded;
use crate::config::Driver;
use crate::diagnostic::{Diagnostic, Severity};

/// Where to look for files that the environment supplies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// `OS_CLIENT_CONFIG_FILE`: a clouds.yaml to use instead of the standard search path.
    pub clouds_yaml: Option<PathBuf>,
    /// The user's home folder, for `~/.config/openstack/clouds.yaml`.
    pub home: Option<PathBuf>,
    /// The current folder, for `./clouds.yaml`.
    pub current_dir: Option<PathBuf>,
}

impl Environment {
    /// The environment of this process: its variables and current folder.
    pub fn from_process() -> Environment {
        Environment {
            clouds_yaml: std::env::var_os("OS_CLIENT_CONFIG_FILE").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
            current_dir: std::env::current_dir().ok(),
        }
    }

    /// Where clouds.yaml is looked for, in order, as openstacksdk does: `OS_CLIENT_CONFIG_FILE`
    /// alone if set, otherwise `./clouds.yaml`, `~/.config/openstack/clouds.yaml` and
    /// `/etc/openstack/clouds.yaml`.
    pub fn clouds_yaml_candidates(&self) -> Vec<PathBuf> {
        if let Some(path) = &self.clouds_yaml {
            return vec![path.clone()];
        }
        let mut paths = Vec::new();
        if let Some(dir) = &self.current_dir {
            paths.push(dir.join("clouds.yaml"));
        }
        if let Some(home) = &self.home {
            paths.push(home.join(".config/openstack/clouds.yaml"));
        }
        paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
        paths
    }
}

/// What an environment problem makes unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Concern {
    /// The whole config (`script-dir`).
    All,
    /// One provider (its clouds.yaml entry, setup scripts, key files).
    Provider(ProviderName),
    /// One label (its ready script).
    Label(LabelName),
    /// Nothing: advice (a secret file others may read).
    Nothing,
}

/// Whether users other than the file's owner (its group, or everyone) may read `path`: a
/// token or key file should be readable by its owner only. `false` when it cannot be
/// told (no such file, or not on Unix).
pub fn readable_by_others(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// The warning for a secret file others may read.
pub fn readable_by_others_warning(path: &std::path::Path) -> String {
    format!(
        "{} may be read by other users of this machine: make it readable by its owner only (chmod 600)",
        path.display()
    )
}

/// One problem outside the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentIssue {
    /// What it makes unusable.
    pub concern: Concern,
    /// Where in the config the reference is, and what is wrong (a warning).
    pub diagnostic: Diagnostic,
}

#[derive(serde::Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: Option<BTreeMap<String, serde::de::IgnoredAny>>,
}

/// Reads the cloud names of the first clouds.yaml found. Messages never quote the file's
/// contents, which hold passwords.
fn cloud_names(env: &Environment) -> Result<(PathBuf, Vec<String>), String> {
    let candidates = env.clouds_yaml_candidates();
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "no clouds.yaml found (looked in {})",
            list.join(", ")
        ));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: CloudsFile = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        format!("{}{at} is not a valid clouds.yaml", path.display())
    })?;
    Ok((
        path.clone(),
        file.clouds
            .map(|c| c.into_keys().collect())
            .unwrap_or_default(),
    ))
}

impl Loaded {
    /// Checks everything the config refers to outside the file.
    pub fn check_environment(&self, env: &Environment) -> Vec<EnvironmentIssue> {
        let mut issues = Vec::new();
        let mut report = |concern: Concern, key: String, message: String| {
            issues.push(EnvironmentIssue {
                concern,
                diagnostic: Diagnostic {
                    severity: Severity::Warning,
                    file: self.file.clone(),
                    location: self.origins.get(&key),
                    key,
                    message,
                },
            });
        };
        let config = &self.config;
        let script_dir = config.script_dir.as_deref();
        if let Some(dir) = script_dir
            && !dir.is_dir()
        {
            report(
                Concern::All,
                "script-dir".into(),
                format!("{} is not a folder on this machine", dir.display()),
            );
        }
        let token_files =
            config
                .api
                .token_file
                .iter()
                .map(|file| ("api.token-file".to_owned(), file))
                .chain(
                    config.api.tokens.iter().enumerate().map(|(i, token)| {
                        (format!("api.tokens[{i}].token-file"), &token.token_file)
                    }),
                );
        for (key, file) in token_files {
            match std::fs::read_to_string(file) {
                Ok(token) if token.trim().is_empty() => report(
                    Concern::All,
                    key,
                    format!(
                        "{} is empty: put the API's bearer token in it",
                        file.display()
                    ),
                ),
                Ok(_) if readable_by_others(file) => {
                    report(Concern::Nothing, key, readable_by_others_warning(file));
                }
                Ok(_) => {}
                Err(e) => report(
                    Concern::All,
                    key,
                    format!("{} cannot be read on this machine: {e}", file.display()),
                ),
            }
        }
        let script_missing = |name: &str| -> Option<String> {
            let dir = script_dir.filter(|d| d.is_dir())?;
            let path = dir.join(name);
            (!path.is_file()).then(|| format!("{} is not a file on this machine", path.display()))
        };
        let mut clouds: Option<Result<(PathBuf, Vec<String>), String>> = None;
        for (p, provider) in config.providers.iter().enumerate() {
            let concern = || Concern::Provider(provider.name.clone());
            if let Driver::OpenStack(settings) = &provider.driver
                && let Some(cloud) = &settings.cloud
            {
                let key = format!("providers[{p}].cloud");
                match clouds.get_or_insert_with(|| cloud_names(env)) {
                    Err(message) => report(concern(), key, message.clone()),
                    Ok((path, names)) if !names.contains(cloud) => report(
                        concern(),
                        key,
                        format!(
                            "no cloud named {cloud:?} in {} (it has: {})",
                            path.display(),
                            names.join(", ")
                        ),
                    ),
                    Ok(_) => {}
                }
            }
            for (i, image) in provider.images.iter().enumerate() {
                if let Some(message) = image.setup.as_deref().and_then(script_missing) {
                    report(
                        concern(),
                        format!("providers[{p}].images[{i}].setup"),
                        message,
                    );
                }
                // The fake cloud simulates SSH sessions; it needs no key.
                let needs_key = !matches!(provider.driver, Driver::Fake);
                if let Some(error) = needs_key
                    .then(|| std::fs::File::open(&image.private_key).err())
                    .flatten()
                {
                    report(
                        concern(),
                        format!("providers[{p}].images[{i}].private-key"),
                        format!("cannot read {}: {error}", image.private_key.display()),
                    );
                } else if needs_key && readable_by_others(&image.private_key) {
                    report(
                        Concern::Nothing,
                        format!("providers[{p}].images[{i}].private-key"),
                        readable_by_others_warning(&image.private_key),
                    );
                }
            }
        }
        for (l, label) in config.labels.iter().enumerate() {
            if let Some(message) = label.ready_script.as_deref().and_then(script_missing) {
                report(
                    Concern::Label(label.name.clone()),
                    format!("labels[{l}].ready-script"),
                    message,
                );
            }
        }
        issues.sort_by_key(|issue| issue.diagnostic.location);
        issues
    }
}
