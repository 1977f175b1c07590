//! Files in a format this version does not run, recognised before they are read key by key:
//! one message that names the format and says what to do, instead of a screen of unknown
//! keys.
//!
//! - nodepool v3 and later: providers with `pools`, or labels without `image` in a file
//!   that talks to ZooKeeper and has no `targets`.
//! - the 2013 format: images listed under `targets[].images[]` with a `min-ready` per
//!   provider, and no `labels`. The message carries the equivalent `labels:` section.

use crate::diagnostic::Location;
use crate::yaml::{Kind, Node};

/// A format this version does not run: where it shows, and what to say.
pub(crate) struct Foreign {
    pub(crate) location: Location,
    pub(crate) key: String,
    pub(crate) message: String,
}

fn entries(node: &Node) -> &[(Node, Node)] {
    match &node.kind {
        Kind::Map(entries) => entries,
        _ => &[],
    }
}

fn items(node: &Node) -> &[Node] {
    match &node.kind {
        Kind::Seq(items) => items,
        _ => &[],
    }
}

fn get<'n>(node: &'n Node, name: &str) -> Option<&'n Node> {
    entries(node)
        .iter()
        .find(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == name))
        .map(|(_, v)| v)
}

fn text(node: &Node) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
        Kind::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The format of `root` if it is one this version does not run.
pub(crate) fn foreign(root: &Node) -> Option<Foreign> {
    newer(root).or_else(|| older(root))
}

fn newer(root: &Node) -> Option<Foreign> {
    let providers = get(root, "providers").map(items).unwrap_or_default();
    let pools = providers.iter().enumerate().find_map(|(i, p)| {
        get(p, "pools").map(|pools| (pools.location, format!("providers[{i}].pools")))
    });
    let zookeeper_only = get(root, "zookeeper-servers").is_some() && get(root, "targets").is_none();
    let labels = get(root, "labels").map(items).unwrap_or_default();
    let imageless = (zookeeper_only && !labels.is_empty())
        .then(|| labels.iter().position(|l| get(l, "image").is_none()))
        .flatten()
        .map(|i| (labels[i].location, format!("labels[{i}]")));
    let (location, key) = pools.or(imageless)?;
    Some(Foreign {
        location,
        key,
        message: "this is a nodepool v3 (or later) file: providers with `pools`, labels without `image`, ZooKeeper instead of a database. This version runs the earlier format (nodepool up to 0.4: `labels` with `image` and `providers`, `providers[].images`, `dburi`); see \"Coming from nodepool v3\" in docs/configuration.md for how each part maps".to_owned(),
    })
}

fn older(root: &Node) -> Option<Foreign> {
    if get(root, "labels").is_some() {
        return None;
    }
    let targets = get(root, "targets")?;
    // (image, [(provider, min-ready)]) in file order.
    let mut images: Vec<(String, Vec<(String, i128)>)> = Vec::new();
    let mut first = None;
    for target in items(targets) {
        for image in get(target, "images").map(items).unwrap_or_default() {
            first.get_or_insert(image.location);
            let Some(name) = get(image, "name").and_then(text) else {
                continue;
            };
            let at = match images.iter().position(|(n, _)| *n == name) {
                Some(at) => at,
                None => {
                    images.push((name, Vec::new()));
                    images.len() - 1
                }
            };
            for provider in get(image, "providers").map(items).unwrap_or_default() {
                let Some(provider_name) = get(provider, "name").and_then(text) else {
                    continue;
                };
                let min_ready = match get(provider, "min-ready").map(|n| &n.kind) {
                    Some(Kind::Int(n)) => *n,
                    _ => 0,
                };
                let providers = &mut images[at].1;
                match providers.iter_mut().find(|(p, _)| *p == provider_name) {
                    Some((_, total)) => *total += min_ready,
                    None => providers.push((provider_name, min_ready)),
                }
            }
        }
    }
    let location = first?;
    let mut labels = String::from("labels:\n");
    for (image, providers) in &images {
        let total: i128 = providers.iter().map(|(_, n)| n).sum();
        let names: Vec<String> = providers
            .iter()
            .map(|(p, _)| format!("{{name: {p}}}"))
            .collect();
        labels.push_str(&format!(
            "  - name: {image}\n    image: {image}\n    min-ready: {total}\n    providers: [{}]\n",
            names.join(", ")
        ));
    }
    Some(Foreign {
        location,
        key: "targets".to_owned(),
        message: format!(
            "this is the 2013 format: images listed under `targets[].images[]`, with a `min-ready` per provider. Since 2014 nodes are asked for by label: add this `labels:` section (each image's min-ready is the sum over its providers; the allocator spreads it over them), then remove `images` from each target\n\n{labels}"
        ),
    })
}
