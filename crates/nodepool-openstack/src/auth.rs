//! Logging in: a Keystone v3 session from a provider's settings.
//!
//! `cloud:` names an entry of clouds.yaml, read from the same search path `config-validate`
//! checks (`OS_CLIENT_CONFIG_FILE` alone if set, otherwise `./clouds.yaml`,
//! `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml`); inline keys of the
//! provider override the entry's. Without `cloud:`, the inline keys are the whole
//! configuration, with the `Default` domain unless `user-domain-*` / `project-domain-*` say
//! otherwise. Both end as one `osauth::CloudConfig`, which
//! supports password and application-credential authentication.

use std::collections::BTreeMap;

use nodepool_config::{Domain, Environment, OpenStackSettings, Project};
use serde_json::{Map, Value, json};

/// Why a session could not be made. Messages never contain a password.
#[derive(Debug)]
pub(crate) struct AuthError(pub(crate) String);

#[derive(serde::Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, Value>,
}

/// clouds.yaml read again for its entries' `auth` scalars as written: YAML takes
/// `password: 12345` or `project_id: 0123` for numbers, which they are not (openstacksdk
/// takes them as strings), and a number loses how it was written (`0123` is 123).
#[derive(serde::Deserialize)]
struct AuthTexts {
    #[serde(default)]
    clouds: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: BTreeMap<String, Written>,
}

/// A scalar as written, or nothing for what is not a scalar.
struct Written(Option<String>);

impl<'de> serde::Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Written, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Written;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E>(self, v: &str) -> Result<Written, E> {
                Ok(Written(Some(v.to_owned())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Written, E> {
                Ok(Written(Some(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Written, E> {
                Ok(Written(Some(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Written, E> {
                Ok(Written(Some(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Written, E> {
                Ok(Written(Some(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Written, E> {
                Ok(Written(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Written, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Written(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Written, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Written(None))
            }
        }
        // Asked for a string, the YAML reader gives a plain scalar's text as written.
        deserializer.deserialize_string(Visitor)
    }
}

/// The clouds.yaml entry for `cloud`, as JSON.
fn cloud_entry(cloud: &str, env: &Environment) -> Result<Value, AuthError> {
    let candidates = env.clouds_yaml_candidates();
    let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        AuthError(format!(
            "no clouds.yaml found (looked in {})",
            list.join(", ")
        ))
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuthError(format!("cannot read {}: {e}", path.display())))?;
    let file: CloudsFile = serde_saphyr::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        AuthError(format!("{}{at} is not a valid clouds.yaml", path.display()))
    })?;
    let names: Vec<&str> = file.clouds.keys().map(String::as_str).collect();
    let mut entry = file.clouds.get(cloud).cloned().ok_or_else(|| {
        AuthError(format!(
            "no cloud named {cloud:?} in {} (it has: {})",
            path.display(),
            names.join(", ")
        ))
    })?;
    // Numbers in the entry's auth become the text they were written as.
    if let Some(Value::Object(auth)) = entry.get_mut("auth") {
        let written = serde_saphyr::from_str::<AuthTexts>(&text)
            .ok()
            .and_then(|mut t| t.clouds.remove(cloud))
            .map(|e| e.auth)
            .unwrap_or_default();
        for (key, value) in auth.iter_mut() {
            if let Value::Number(number) = value {
                *value = Value::String(match written.get(key) {
                    Some(Written(Some(text))) => text.clone(),
                    _ => number.to_string(),
                });
            }
        }
    }
    Ok(entry)
}

/// The `CloudConfig` (as JSON) for a provider's settings.
pub(crate) fn cloud_config(
    settings: &OpenStackSettings,
    env: &Environment,
) -> Result<Value, AuthError> {
    let mut config = match &settings.cloud {
        Some(cloud) => cloud_entry(cloud, env)?,
        None => json!({"auth": {"user_domain_name": "Default", "project_domain_name": "Default"}}),
    };
    let Value::Object(root) = &mut config else {
        return Err(AuthError("the clouds.yaml entry is not a mapping".into()));
    };
    let auth = root
        .entry("auth")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auth) = auth else {
        return Err(AuthError(
            "the clouds.yaml entry's auth is not a mapping".into(),
        ));
    };
    let mut set = |key: &str, value: Option<&str>| {
        if let Some(value) = value {
            auth.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    };
    set("auth_url", settings.auth_url.as_deref());
    set("username", settings.username.as_deref());
    set("password", settings.password.as_ref().map(|p| p.expose()));
    match &settings.project {
        Some(Project::Name(name)) => set("project_name", Some(name)),
        Some(Project::Id(id)) => set("project_id", Some(id)),
        None => {}
    }
    // A domain given inline replaces the entry's (or the default's), by name or by id.
    for (what, domain) in [
        ("user", &settings.user_domain),
        ("project", &settings.project_domain),
    ] {
        let (key, other, value) = match domain {
            Some(Domain::Name(name)) => ("name", "id", name),
            Some(Domain::Id(id)) => ("id", "name", id),
            None => continue,
        };
        auth.remove(&format!("{what}_domain_{other}"));
        auth.insert(format!("{what}_domain_{key}"), Value::String(value.clone()));
    }
    if let Some(region) = &settings.region_name {
        root.insert("region_name".into(), Value::String(region.clone()));
    }
    Ok(config)
}
