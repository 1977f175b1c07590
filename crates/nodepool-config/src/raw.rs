//! Raw structs: the file's shape, with types checked but no meaning yet.
//!
//! Every field is optional and remembers where it was written, so that `validate` can
//! report a missing or wrong value at its place in the file.

use crate::diagnostic::Location;
use crate::read::{At, Cx, Fields};
use crate::yaml::Node;

/// Keys that belonged to the Jenkins/Gearman/ZMQ coupling of 2014.
const NO_JENKINS: &str = "nodepool-rs hands nodes to CI systems through its node request API, \
                          not through Jenkins, Gearman or ZMQ";
const NO_DIB: &str = "diskimage-builder images are not built by this version; \
                      images are built by snapshot from `base-image`";
/// Why a `diskimages` entry is read but not built.
pub(crate) const NO_DIB_BUILDS: &str = "this version does not build diskimage-builder images: \
                                        provider images made from these are neither built nor \
                                        launched from; give them `base-image` (and `setup`) to \
                                        build them by snapshot";

pub(crate) const TOP_KEYS: &[&str] = &[
    "script-dir",
    "dburi",
    "cron",
    "labels",
    "providers",
    "targets",
    "gearman-servers",
    "zmq-publishers",
    "elements-dir",
    "images-dir",
    "diskimages",
    "zookeeper-servers",
    "api",
    "removal-grace",
];
pub(crate) const API_KEYS: &[&str] = &[
    "listen",
    "token-file",
    "tokens",
    "max-connections",
    "request-timeout",
    "rate",
];
pub(crate) const API_TOKEN_KEYS: &[&str] = &["name", "token-file", "admin"];
pub(crate) const CRON_KEYS: &[&str] = &["image-update", "cleanup", "check"];
pub(crate) const LABEL_KEYS: &[&str] = &[
    "name",
    "image",
    "min-ready",
    "providers",
    "ready-script",
    "subnodes",
];
pub(crate) const DISKIMAGE_KEYS: &[&str] = &[
    "name",
    "elements",
    "release",
    "env-vars",
    "qemu-img-options",
    "pause",
    "rebuild-age",
];
pub(crate) const LABEL_PROVIDER_KEYS: &[&str] = &["name"];
pub(crate) const PROVIDER_KEYS: &[&str] = &[
    "name",
    "driver",
    "cloud",
    "auth-url",
    "username",
    "password",
    "project-name",
    "project-id",
    "region-name",
    "service-type",
    "service-name",
    "user-domain-name",
    "user-domain-id",
    "project-domain-name",
    "project-domain-id",
    "identity-api-version",
    "max-servers",
    "rate",
    "boot-timeout",
    "launch-timeout",
    "keypair",
    "pool",
    "networks",
    "availability-zones",
    "template-hostname",
    "images",
    "api-timeout",
    "image-type",
    "ipv6-preferred",
    "clean-floating-ips",
];
pub(crate) const NETWORK_KEYS: &[&str] = &["net-id", "net-label", "name", "public"];
pub(crate) const IMAGE_KEYS: &[&str] = &[
    "name",
    "base-image",
    "min-ram",
    "name-filter",
    "setup",
    "reset",
    "username",
    "private-key",
    "user-home",
    "meta",
    "diskimage",
    "connection-port",
    "config-drive",
    "pause",
];

/// One `meta` entry: the key and the value, each where it was written.
pub(crate) type MetaEntry = (At<String>, At<String>);

/// Not `Debug`: it holds `dburi`, password and all.
#[derive(Default)]
pub(crate) struct RawConfig {
    pub(crate) script_dir: Option<At<String>>,
    pub(crate) dburi: Option<At<String>>,
    pub(crate) cron: RawCron,
    pub(crate) labels: Option<At<Vec<RawLabel>>>,
    pub(crate) providers: Option<At<Vec<RawProvider>>>,
    pub(crate) api: RawApi,
    pub(crate) diskimages: Option<At<Vec<RawDiskimage>>>,
    pub(crate) removal_grace: Option<At<f64>>,
}

/// A `diskimages` entry: read for its name and checked, never built.
#[derive(Debug)]
pub(crate) struct RawDiskimage {
    pub(crate) name: Option<At<String>>,
}

#[derive(Debug, Default)]
pub(crate) struct RawApi {
    pub(crate) listen: Option<At<String>>,
    pub(crate) token_file: Option<At<String>>,
    pub(crate) tokens: Option<At<Vec<RawApiToken>>>,
    pub(crate) max_connections: Option<At<i64>>,
    pub(crate) request_timeout: Option<At<f64>>,
    pub(crate) rate: Option<At<i64>>,
}

#[derive(Debug)]
pub(crate) struct RawApiToken {
    pub(crate) key: String,
    pub(crate) location: Location,
    pub(crate) name: Option<At<String>>,
    pub(crate) token_file: Option<At<String>>,
    pub(crate) admin: Option<At<bool>>,
}

#[derive(Debug, Default)]
pub(crate) struct RawCron {
    pub(crate) image_update: Option<At<String>>,
    pub(crate) cleanup: Option<At<String>>,
    pub(crate) check: Option<At<String>>,
}

#[derive(Debug)]
pub(crate) struct RawLabel {
    pub(crate) name: Option<At<String>>,
    pub(crate) image: Option<At<String>>,
    pub(crate) min_ready: Option<At<i64>>,
    pub(crate) providers: Option<At<Vec<At<String>>>>,
    pub(crate) ready_script: Option<At<String>>,
    pub(crate) subnodes: Option<At<i64>>,
}

/// Not `Debug`: it holds the password.
pub(crate) struct RawProvider {
    pub(crate) location: Location,
    pub(crate) key: String,
    pub(crate) name: Option<At<String>>,
    pub(crate) driver: Option<At<String>>,
    pub(crate) cloud: Option<At<String>>,
    pub(crate) auth_url: Option<At<String>>,
    pub(crate) username: Option<At<String>>,
    pub(crate) password: Option<At<String>>,
    pub(crate) project_name: Option<At<String>>,
    pub(crate) project_id: Option<At<String>>,
    pub(crate) region_name: Option<At<String>>,
    pub(crate) service_type: Option<At<String>>,
    pub(crate) service_name: Option<At<String>>,
    pub(crate) api_timeout: Option<At<f64>>,
    pub(crate) user_domain_name: Option<At<String>>,
    pub(crate) user_domain_id: Option<At<String>>,
    pub(crate) project_domain_name: Option<At<String>>,
    pub(crate) project_domain_id: Option<At<String>>,
    pub(crate) identity_api_version: Option<At<String>>,
    pub(crate) max_servers: Option<At<i64>>,
    pub(crate) rate: Option<At<f64>>,
    pub(crate) boot_timeout: Option<At<f64>>,
    pub(crate) launch_timeout: Option<At<f64>>,
    pub(crate) keypair: Option<At<String>>,
    pub(crate) pool: Option<At<String>>,
    pub(crate) networks: Vec<RawNetwork>,
    pub(crate) availability_zones: Option<At<Vec<At<String>>>>,
    pub(crate) template_hostname: Option<At<String>>,
    pub(crate) images: Option<At<Vec<RawImage>>>,
}

#[derive(Debug)]
pub(crate) struct RawNetwork {
    pub(crate) location: Location,
    pub(crate) key: String,
    pub(crate) net_id: Option<At<String>>,
    pub(crate) net_label: Option<At<String>>,
    pub(crate) name: Option<At<String>>,
}

#[derive(Debug)]
pub(crate) struct RawImage {
    pub(crate) location: Location,
    pub(crate) key: String,
    pub(crate) name: Option<At<String>>,
    pub(crate) base_image: Option<At<String>>,
    /// Whether `base-image` is written at all (it may be of the wrong type).
    pub(crate) base_image_written: bool,
    pub(crate) min_ram: Option<At<i64>>,
    pub(crate) name_filter: Option<At<String>>,
    pub(crate) setup: Option<At<String>>,
    pub(crate) username: Option<At<String>>,
    pub(crate) private_key: Option<At<String>>,
    pub(crate) user_home: Option<At<String>>,
    pub(crate) meta: Option<At<Vec<MetaEntry>>>,
    pub(crate) diskimage: Option<At<String>>,
    pub(crate) connection_port: Option<At<i64>>,
}

/// Reads the whole document. A document that is not a mapping is reported and read as empty.
pub(crate) fn read_config(cx: &mut Cx<'_>, root: &Node) -> RawConfig {
    let Some(mut f) = cx.fields(root, "") else {
        if matches!(root.kind, crate::yaml::Kind::Null) {
            cx.sink.error(
                root.location,
                "",
                "the file is empty; a config needs at least `labels` and `providers`",
            );
        }
        return RawConfig::default();
    };
    let config = RawConfig {
        script_dir: f.string(cx, "script-dir"),
        dburi: f.string_as_written(cx, "dburi"),
        cron: match f.get("cron") {
            Some(node) => read_cron(cx, node, &f.path("cron")),
            None => RawCron::default(),
        },
        labels: f.read(cx, "labels", |cx, node, key| {
            list_of(cx, node, key, read_label)
        }),
        providers: f.read(cx, "providers", |cx, node, key| {
            list_of(cx, node, key, read_provider)
        }),
        api: match f.get("api") {
            Some(node) => read_api(cx, node, &f.path("api")),
            None => RawApi::default(),
        },
        removal_grace: f.number(cx, "removal-grace"),
        diskimages: f.read(cx, "diskimages", |cx, node, key| {
            let entries = list_of(cx, node, key, read_diskimage);
            if entries.as_ref().is_some_and(|e| !e.is_empty()) {
                cx.sink.warning(node.location, key, NO_DIB_BUILDS);
            }
            entries
        }),
    };
    for legacy in ["targets", "gearman-servers", "zmq-publishers"] {
        if let Some(node) = f.get(legacy) {
            check_legacy(cx, node, &f.path(legacy), legacy);
        }
        f.ignore(cx, legacy, NO_JENKINS);
    }
    if let Some(node) = f.get("zookeeper-servers") {
        check_legacy(cx, node, &f.path("zookeeper-servers"), "zookeeper-servers");
    }
    for dib in ["elements-dir", "images-dir"] {
        f.ignore(cx, dib, NO_DIB);
    }
    f.ignore(
        cx,
        "zookeeper-servers",
        "nodepool-rs keeps its state in its own store (`dburi`), not in ZooKeeper",
    );
    f.require(cx, "labels", "a config needs a list of labels");
    f.require(cx, "providers", "a config needs a list of providers");
    f.finish(cx, TOP_KEYS);
    config
}

fn list_of<T>(
    cx: &mut Cx<'_>,
    node: &Node,
    key: &str,
    read: fn(&mut Cx<'_>, Fields<'_>) -> T,
) -> Option<Vec<T>> {
    let items = cx.list(node, key)?;
    Some(
        items
            .into_iter()
            .filter_map(|(item, key)| cx.fields(item, &key).map(|f| read(cx, f)))
            .collect(),
    )
}

/// The keys nodepool 0.3 and 0.4 accepted in the sections that have no effect here.
const TARGET_KEYS: &[&str] = &[
    "name",
    "hostname",
    "subnode-hostname",
    "assign-via-gearman",
    "rate",
    "jenkins",
];
const JENKINS_KEYS: &[&str] = &["url", "user", "apikey", "credentials-id", "test-job"];
const GEARMAN_KEYS: &[&str] = &["host", "port"];
const ZOOKEEPER_KEYS: &[&str] = &["host", "port", "chroot"];

/// Checks the shape of a section that has no effect here (`targets`, `gearman-servers`,
/// `zmq-publishers`, `zookeeper-servers`). Its values are never used, so what nodepool
/// 0.3 and 0.4 would have refused is only a warning: a misspelling here changes nothing.
fn check_legacy(cx: &mut Cx<'_>, node: &Node, key: &str, section: &str) {
    use crate::yaml::Kind;
    let Kind::Seq(items) = &node.kind else {
        if !matches!(node.kind, Kind::Null) {
            cx.sink.warning(
                node.location,
                key,
                "nodepool 0.3 and 0.4 wanted a list here; it is ignored anyway",
            );
        }
        return;
    };
    let known = match section {
        "targets" => TARGET_KEYS,
        "gearman-servers" => GEARMAN_KEYS,
        "zookeeper-servers" => ZOOKEEPER_KEYS,
        // `zmq-publishers` is a list of addresses.
        _ => &[],
    };
    for (i, item) in items.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        match (&item.kind, known.is_empty()) {
            (Kind::Map(entries), false) => {
                for (name, value) in entries {
                    let name_text = crate::read::key_text(cx.source, name);
                    let path = crate::read::child(&item_key, &crate::suggest::escape(&name_text));
                    if !known.contains(&name_text.as_str()) {
                        cx.sink.warning(
                            name.location,
                            &path,
                            crate::suggest::unknown_key(&name_text, known),
                        );
                    } else if name_text == "jenkins"
                        && let Kind::Map(jenkins) = &value.kind
                    {
                        for (inner, _) in jenkins {
                            let inner_text = crate::read::key_text(cx.source, inner);
                            if !JENKINS_KEYS.contains(&inner_text.as_str()) {
                                cx.sink.warning(
                                    inner.location,
                                    &crate::read::child(
                                        &path,
                                        &crate::suggest::escape(&inner_text),
                                    ),
                                    crate::suggest::unknown_key(&inner_text, JENKINS_KEYS),
                                );
                            }
                        }
                    }
                }
            }
            (Kind::Str(_), true) => {}
            (_, false) => cx.sink.warning(
                item.location,
                &item_key,
                "nodepool 0.3 and 0.4 wanted a mapping here; it is ignored anyway",
            ),
            (_, true) => cx.sink.warning(
                item.location,
                &item_key,
                "nodepool 0.3 and 0.4 wanted an address here; it is ignored anyway",
            ),
        }
    }
}

fn read_diskimage(cx: &mut Cx<'_>, mut f: Fields<'_>) -> RawDiskimage {
    let diskimage = RawDiskimage {
        name: f.string(cx, "name"),
    };
    // Checked for their types, as nodepool checked them, and otherwise unused.
    f.strings(cx, "elements");
    f.string(cx, "release");
    f.read(cx, "env-vars", read_meta);
    f.string(cx, "qemu-img-options");
    f.string(cx, "pause");
    f.integer(cx, "rebuild-age");
    f.require(cx, "name", "every diskimage needs a name");
    f.finish(cx, DISKIMAGE_KEYS);
    diskimage
}

fn read_cron(cx: &mut Cx<'_>, node: &Node, key: &str) -> RawCron {
    let Some(mut f) = cx.fields(node, key) else {
        return RawCron::default();
    };
    let cron = RawCron {
        image_update: f.string(cx, "image-update"),
        cleanup: f.string(cx, "cleanup"),
        check: f.string(cx, "check"),
    };
    f.finish(cx, CRON_KEYS);
    cron
}

fn read_api(cx: &mut Cx<'_>, node: &Node, key: &str) -> RawApi {
    let Some(mut f) = cx.fields(node, key) else {
        return RawApi::default();
    };
    let api = RawApi {
        listen: f.string(cx, "listen"),
        token_file: f.string(cx, "token-file"),
        tokens: f.read(cx, "tokens", |cx, node, key| {
            list_of(cx, node, key, read_api_token)
        }),
        max_connections: f.integer(cx, "max-connections"),
        request_timeout: f.number(cx, "request-timeout"),
        rate: f.integer(cx, "rate"),
    };
    f.finish(cx, API_KEYS);
    api
}

fn read_api_token(cx: &mut Cx<'_>, mut f: Fields<'_>) -> RawApiToken {
    let token = RawApiToken {
        key: f.key.clone(),
        location: f.location,
        name: f.string(cx, "name"),
        token_file: f.string(cx, "token-file"),
        admin: f.read(cx, "admin", Cx::boolean),
    };
    f.require(cx, "name", "name the consumer that uses this token");
    f.require(
        cx,
        "token-file",
        "give the file holding the consumer's bearer token",
    );
    f.finish(cx, API_TOKEN_KEYS);
    token
}

fn read_label(cx: &mut Cx<'_>, mut f: Fields<'_>) -> RawLabel {
    let label = RawLabel {
        name: f.string(cx, "name"),
        image: f.string(cx, "image"),
        min_ready: f.integer(cx, "min-ready"),
        providers: f.read(cx, "providers", read_label_providers),
        ready_script: f.string(cx, "ready-script"),
        subnodes: f.integer(cx, "subnodes"),
    };
    f.require(cx, "name", "every label needs a name");
    f.require(
        cx,
        "image",
        "give the name of the provider image its nodes boot from",
    );
    f.require(
        cx,
        "providers",
        "list the providers that may supply this label",
    );
    f.finish(cx, LABEL_KEYS);
    label
}

/// `providers: [{name: cloud1}, ...]` as in 2014; a plain `[cloud1, ...]` is accepted too.
fn read_label_providers(cx: &mut Cx<'_>, node: &Node, key: &str) -> Option<Vec<At<String>>> {
    let items = cx.list(node, key)?;
    let mut names = Vec::with_capacity(items.len());
    for (item, key) in items {
        if let crate::yaml::Kind::Map(_) = item.kind {
            let Some(mut f) = cx.fields(item, &key) else {
                continue;
            };
            match f.string(cx, "name") {
                Some(name) => names.push(name),
                None if f.get("name").is_none() => {
                    cx.sink
                        .error(item.location, &key, "missing `name` of the provider")
                }
                None => {}
            }
            f.finish(cx, LABEL_PROVIDER_KEYS);
        } else if let Some(value) = cx.string(item, &key) {
            names.push(At {
                value,
                location: item.location,
                key,
            });
        }
    }
    Some(names)
}

fn read_provider(cx: &mut Cx<'_>, mut f: Fields<'_>) -> RawProvider {
    let networks = match f.get("networks") {
        Some(node) => {
            let key = f.path("networks");
            list_of(cx, node, &key, read_network).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let provider = RawProvider {
        location: f.location,
        key: f.key.clone(),
        name: f.string(cx, "name"),
        driver: f.string(cx, "driver"),
        cloud: f.string(cx, "cloud"),
        auth_url: f.string(cx, "auth-url"),
        username: f.string(cx, "username"),
        password: f.string(cx, "password"),
        project_name: f.string(cx, "project-name"),
        project_id: f.string(cx, "project-id"),
        region_name: f.string(cx, "region-name"),
        service_type: f.string(cx, "service-type"),
        service_name: f.string(cx, "service-name"),
        api_timeout: f.number(cx, "api-timeout"),
        user_domain_name: f.string(cx, "user-domain-name"),
        user_domain_id: f.string(cx, "user-domain-id"),
        project_domain_name: f.string(cx, "project-domain-name"),
        project_domain_id: f.string(cx, "project-domain-id"),
        identity_api_version: f.string(cx, "identity-api-version"),
        max_servers: f.integer(cx, "max-servers"),
        rate: f.number(cx, "rate"),
        boot_timeout: f.number(cx, "boot-timeout"),
        launch_timeout: f.number(cx, "launch-timeout"),
        keypair: f.string(cx, "keypair"),
        pool: f.string(cx, "pool"),
        networks,
        availability_zones: f.strings(cx, "availability-zones"),
        template_hostname: f.string(cx, "template-hostname"),
        images: f.read(cx, "images", |cx, node, key| {
            list_of(cx, node, key, read_image)
        }),
    };
    f.require(cx, "name", "every provider needs a name");
    f.require(
        cx,
        "max-servers",
        "a provider needs a server quota (0 launches nothing)",
    );
    f.require(cx, "images", "a provider needs a list of images");
    for (key, why) in [
        (
            "image-type",
            "it chose the disk format of diskimage-builder uploads, which this version does not make",
        ),
        (
            "ipv6-preferred",
            "nodes are reached at their public address, else their private one, as the cloud lists them",
        ),
        (
            "clean-floating-ips",
            "the cleanup job already deletes the floating IPs nodepool tagged whose node is gone, and never others",
        ),
    ] {
        f.ignore(cx, key, why);
    }
    f.finish(cx, PROVIDER_KEYS);
    provider
}

fn read_network(cx: &mut Cx<'_>, mut f: Fields<'_>) -> RawNetwork {
    let network = RawNetwork {
        location: f.location,
        key: f.key.clone(),
        net_id: f.string(cx, "net-id"),
        net_label: f.string(cx, "net-label"),
        name: f.string(cx, "name"),
    };
    f.ignore(
        cx,
        "public",
        "which address is public is read from the cloud's answer, not from the config",
    );
    f.finish(cx, NETWORK_KEYS);
    network
}

fn read_image(cx: &mut Cx<'_>, mut f: Fields<'_>) -> RawImage {
    f.ignore(
        cx,
        "reset",
        "2014 nodepool parsed `reset` but never ran it, and neither does this one",
    );
    let image = RawImage {
        location: f.location,
        key: f.key.clone(),
        name: f.string(cx, "name"),
        base_image_written: f.get("base-image").is_some(),
        base_image: f.string(cx, "base-image"),
        min_ram: f.integer(cx, "min-ram"),
        name_filter: f.string(cx, "name-filter"),
        setup: f.string(cx, "setup"),
        username: f.string(cx, "username"),
        private_key: f.string(cx, "private-key"),
        user_home: f.string(cx, "user-home"),
        meta: f.read(cx, "meta", read_meta),
        diskimage: f.string(cx, "diskimage"),
        connection_port: f.integer(cx, "connection-port"),
    };
    f.ignore(
        cx,
        "config-drive",
        "servers are created with Nova's default for config drives",
    );
    f.ignore(
        cx,
        "pause",
        "it paused diskimage-builder uploads, which this version does not make; to stop building an image, set min-ready: -1 on the labels that use it",
    );
    f.require(cx, "name", "every image needs a name");
    f.require(
        cx,
        "min-ram",
        "give the least RAM in MB a node's flavor must have",
    );
    f.finish(cx, IMAGE_KEYS);
    image
}

/// `meta: {key: value}`: string keys and scalar values, kept in file order.
fn read_meta(cx: &mut Cx<'_>, node: &Node, key: &str) -> Option<Vec<MetaEntry>> {
    let fields = cx.fields(node, key)?;
    let mut pairs = Vec::new();
    for (name, key_node, value_node) in fields.entries() {
        let path = crate::read::child(key, &name);
        let value = cx.string(value_node, &path).unwrap_or_default();
        pairs.push((
            At {
                value: name,
                location: key_node.location,
                key: path.clone(),
            },
            At {
                value,
                location: value_node.location,
                key: path,
            },
        ));
    }
    Some(pairs)
}
