//! The located tree to raw structs: shapes and scalar types, with every problem collected.
//!
//! Each mapping is read through [`Fields`], which hands out values by key, remembers which
//! keys were used, and reports the rest as unknown (with a did-you-mean) when it is finished.
//! A value of the wrong type is reported and read as absent, so reading always goes on.

use crate::diagnostic::{Location, Sink};
use crate::suggest;
use crate::yaml::{Kind, Node};

/// A value read from the file, with where it was written and its key path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct At<T> {
    pub(crate) value: T,
    pub(crate) location: Location,
    pub(crate) key: String,
}

/// Reading state: the source text (to quote values as written) and the diagnostics so far.
pub(crate) struct Cx<'s> {
    pub(crate) source: &'s str,
    pub(crate) sink: Sink,
}

/// Joins a key path and a key: `providers[0]` + `name` = `providers[0].name`.
pub(crate) fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Cx<'_> {
    fn type_error(&mut self, node: &Node, key: &str, expected: &str) {
        let found = node.describe(self.source);
        let hint = match &node.kind {
            Kind::Str(s) => unrendered(s)
                .map(|kind| format!("; it looks like an unrendered {kind} template: render the file before nodepool reads it"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        self.sink.error(
            node.location,
            key,
            format!("expected {expected}, found {found}{hint}"),
        );
    }

    /// A mapping, read field by field. `None` (reported) if the value is not a mapping;
    /// `None` (silently) if it is empty, which YAML writes as `key:`.
    pub(crate) fn fields<'n>(&mut self, node: &'n Node, key: &str) -> Option<Fields<'n>> {
        match &node.kind {
            Kind::Map(entries) => Some(Fields::new(self, entries, node.location, key)),
            Kind::Null => None,
            _ => {
                self.type_error(node, key, "a mapping");
                None
            }
        }
    }

    /// A list's items with their key paths. An empty value is an empty list.
    pub(crate) fn list<'n>(
        &mut self,
        node: &'n Node,
        key: &str,
    ) -> Option<Vec<(&'n Node, String)>> {
        match &node.kind {
            Kind::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (item, format!("{key}[{i}]")))
                    .collect(),
            ),
            Kind::Null => Some(Vec::new()),
            _ => {
                self.type_error(node, key, "a list");
                None
            }
        }
    }

    /// A string. Numbers and booleans are taken as written (`project-id: 0123` is "0123").
    /// One that still holds template markup is taken, with a warning.
    pub(crate) fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        if let Kind::Str(s) = &node.kind
            && let Some(kind) = unrendered(s)
        {
            // A secret's value is never quoted, template or not.
            let what = if secret(key) {
                "the value".to_owned()
            } else {
                format!("{s:?}")
            };
            self.sink.warning(
                node.location,
                key,
                format!("{what} looks like an unrendered {kind} template: render the file before nodepool reads it"),
            );
        }
        self.string_as_written(node, key)
    }

    /// A string, without the template warning: for values whose parser says more.
    pub(crate) fn string_as_written(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => node
                .source_text(self.source)
                .map(|text| text.trim().to_owned()),
            Kind::Null => None,
            Kind::Seq(_) | Kind::Map(_) => {
                self.type_error(node, key, "a string");
                None
            }
        }
    }

    /// An integer, written plainly or quoted (`max-servers: '10'`).
    pub(crate) fn integer(&mut self, node: &Node, key: &str) -> Option<i64> {
        let parsed = match &node.kind {
            Kind::Int(i) => i64::try_from(*i).ok(),
            Kind::Str(s) => s.trim().parse::<i64>().ok(),
            Kind::Null => return None,
            _ => None,
        };
        if parsed.is_none() {
            self.type_error(node, key, "an integer");
        }
        parsed
    }

    /// A boolean: `true` or `false` (YAML 1.1's `yes` and `no` too, as PyYAML read them).
    pub(crate) fn boolean(&mut self, node: &Node, key: &str) -> Option<bool> {
        let parsed = match &node.kind {
            Kind::Bool(b) => Some(*b),
            Kind::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Some(true),
                "false" | "no" | "off" => Some(false),
                _ => None,
            },
            Kind::Null => return None,
            _ => None,
        };
        if parsed.is_none() {
            self.type_error(node, key, "true or false");
        }
        parsed
    }

    /// A number, integer or not, written plainly or quoted (`rate: '0.5'`).
    pub(crate) fn number(&mut self, node: &Node, key: &str) -> Option<f64> {
        let parsed = match &node.kind {
            Kind::Int(i) => Some(*i as f64),
            Kind::Float(f) => Some(*f),
            Kind::Str(s) => s.trim().parse::<f64>().ok(),
            Kind::Null => return None,
            _ => None,
        };
        match parsed {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.type_error(node, key, "a number");
                None
            }
        }
    }

    /// A list of strings (`availability-zones: [az1, az2]`).
    pub(crate) fn strings(&mut self, node: &Node, key: &str) -> Option<Vec<At<String>>> {
        let items = self.list(node, key)?;
        Some(
            items
                .into_iter()
                .filter_map(|(item, key)| {
                    let value = self.string(item, &key)?;
                    Some(At {
                        value,
                        location: item.location,
                        key,
                    })
                })
                .collect(),
        )
    }
}

/// A mapping key as written: a number, boolean or null key is taken as its text.
pub(crate) fn key_text(source: &str, node: &Node) -> String {
    match &node.kind {
        Kind::Str(s) => s.clone(),
        _ => node
            .source_text(source)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// The fields of one mapping.
pub(crate) struct Fields<'n> {
    entries: Vec<Entry<'n>>,
    /// Where the mapping starts.
    pub(crate) location: Location,
    /// The mapping's own key path.
    pub(crate) key: String,
}

struct Entry<'n> {
    name: String,
    key_node: &'n Node,
    value: &'n Node,
    used: bool,
}

impl<'n> Fields<'n> {
    fn new(cx: &mut Cx<'_>, entries: &'n [(Node, Node)], location: Location, key: &str) -> Self {
        let mut kept: Vec<Entry<'n>> = Vec::with_capacity(entries.len());
        for (key_node, value) in entries {
            let name = match &key_node.kind {
                Kind::Seq(_) | Kind::Map(_) => {
                    cx.sink.error(
                        key_node.location,
                        key,
                        "a key must be a plain string, not a list or mapping",
                    );
                    continue;
                }
                _ => key_text(cx.source, key_node),
            };
            if let Some(first) = kept.iter().find(|e| e.name == name) {
                let message = format!(
                    "duplicate key {}; it is first set at line {}, and only that value is used",
                    suggest::quote(&name),
                    first.key_node.location.line
                );
                cx.sink.error(
                    key_node.location,
                    &child(key, &suggest::escape(&name)),
                    message,
                );
                continue;
            }
            kept.push(Entry {
                name,
                key_node,
                value,
                used: false,
            });
        }
        Fields {
            entries: kept,
            location,
            key: key.to_owned(),
        }
    }

    /// The key path of a field of this mapping.
    pub(crate) fn path(&self, name: &str) -> String {
        child(&self.key, name)
    }

    /// The value of a field, if present; marks the field as known.
    pub(crate) fn get(&mut self, name: &str) -> Option<&'n Node> {
        let entry = self.entries.iter_mut().find(|e| e.name == name)?;
        entry.used = true;
        Some(entry.value)
    }

    /// Reads a field with `read`, keeping where it was written.
    pub(crate) fn read<'s, T>(
        &mut self,
        cx: &mut Cx<'s>,
        name: &str,
        read: impl FnOnce(&mut Cx<'s>, &Node, &str) -> Option<T>,
    ) -> Option<At<T>> {
        let node = self.get(name)?;
        let key = self.path(name);
        let value = read(cx, node, &key)?;
        Some(At {
            value,
            location: node.location,
            key,
        })
    }

    pub(crate) fn string(&mut self, cx: &mut Cx<'_>, name: &str) -> Option<At<String>> {
        self.read(cx, name, Cx::string)
    }

    /// As [`Fields::string`], without the template warning.
    pub(crate) fn string_as_written(&mut self, cx: &mut Cx<'_>, name: &str) -> Option<At<String>> {
        self.read(cx, name, Cx::string_as_written)
    }

    pub(crate) fn integer(&mut self, cx: &mut Cx<'_>, name: &str) -> Option<At<i64>> {
        self.read(cx, name, Cx::integer)
    }

    pub(crate) fn number(&mut self, cx: &mut Cx<'_>, name: &str) -> Option<At<f64>> {
        self.read(cx, name, Cx::number)
    }

    pub(crate) fn strings(&mut self, cx: &mut Cx<'_>, name: &str) -> Option<At<Vec<At<String>>>> {
        self.read(cx, name, Cx::strings)
    }

    /// Reports `name` as missing unless the mapping has it (even with a null or wrong value,
    /// which is reported where it is read).
    pub(crate) fn require(&self, cx: &mut Cx<'_>, name: &str, why: &str) {
        let present = self.entries.iter().any(|e| e.name == name);
        // A misspelling of this key is reported as an unknown key with a did-you-mean;
        // saying it is missing too would count one mistake twice.
        let misspelt = self
            .entries
            .iter()
            .any(|e| e.name != name && !e.used && suggest::closest(&e.name, &[name]).is_some());
        if !present && !misspelt {
            cx.sink
                .error(self.location, &self.path(name), format!("missing; {why}"));
        }
    }

    /// Accepts a key that has no effect, with a warning.
    pub(crate) fn ignore(&mut self, cx: &mut Cx<'_>, name: &str, why: &str) {
        if let Some(node) = self.get(name) {
            let location = node.location;
            cx.sink
                .warning(location, &self.path(name), format!("has no effect: {why}"));
        }
    }

    /// Every entry, for mappings whose keys are free (`meta`). Duplicates and keys that are
    /// not strings were reported when the mapping was read.
    pub(crate) fn entries(self) -> Vec<(String, &'n Node, &'n Node)> {
        self.entries
            .into_iter()
            .map(|e| (e.name, e.key_node, e.value))
            .collect()
    }

    /// Reports every key not read as unknown, suggesting the closest known one.
    pub(crate) fn finish(self, cx: &mut Cx<'_>, known: &[&str]) {
        for entry in self.entries.iter().filter(|e| !e.used) {
            let message = suggest::unknown_key(&entry.name, known);
            cx.sink.error(
                entry.key_node.location,
                &child(&self.key, &suggest::escape(&entry.name)),
                message,
            );
        }
    }
}

/// Whether the key path `key` names a secret (`providers[0].password`): its value is never
/// quoted in a message.
pub(crate) fn secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    last.ends_with("password")
        || last.ends_with("secret")
        || matches!(last.as_str(), "apikey" | "api-key" | "token" | "dburi")
}

/// The template language whose markup `text` still holds, if any: what a deployment tool
/// (Puppet's ERB, Ansible's or Salt's Jinja) should have replaced before writing the file.
pub(crate) fn unrendered(text: &str) -> Option<&'static str> {
    let between = |open: &str, close: &str| {
        text.find(open)
            .is_some_and(|at| text[at + open.len()..].contains(close))
    };
    if between("<%", "%>") {
        Some("ERB")
    } else if between("{{", "}}") || between("{%", "%}") {
        Some("Jinja")
    } else {
        None
    }
}
