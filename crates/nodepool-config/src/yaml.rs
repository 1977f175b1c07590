//! YAML to a located tree.
//!
//! `serde-saphyr` parses the text, expands anchors, aliases and `<<:` merge keys, and hands
//! every value over with its position. We keep that as a small tree instead of deserializing
//! straight into structs, because serde stops at the first error while operators deserve
//! every error of a file at once. The reader (`read.rs`) walks this tree.
//!
//! Duplicate keys are passed through by the parser and reported by the reader, so that a
//! duplicate does not hide the other problems of the file either.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::Location;

/// The largest config file accepted. Real configs with hundreds of images are well under
/// one MiB; anything this large is almost certainly the wrong file.
pub(crate) const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// A YAML value with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Where the value is written (for an alias, where its anchor is).
    pub(crate) location: Location,
    /// Byte range of the value's text in the source, when known.
    span: Option<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value's text exactly as written in the file, quotes included.
    pub(crate) fn source_text<'s>(&self, source: &'s str) -> Option<&'s str> {
        let (start, len) = self.span?;
        source.get(start..start.checked_add(len)?)
    }

    /// A short description of what the value is, for "expected X, found Y" messages.
    pub(crate) fn describe(&self, source: &str) -> String {
        match &self.kind {
            Kind::Null => "nothing (an empty value)".to_owned(),
            Kind::Bool(b) => format!("the boolean {b}"),
            Kind::Int(_) | Kind::Float(_) => match self.source_text(source) {
                Some(text) => format!("the number {}", text.trim()),
                None => "a number".to_owned(),
            },
            Kind::Str(s) => {
                let shown: String = s.chars().take(60).collect();
                let ellipsis = if shown.len() < s.len() { "..." } else { "" };
                format!("{:?}{ellipsis}", shown)
            }
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// Where a parse failed and why.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub(crate) location: Option<Location>,
    pub(crate) message: String,
}

/// Parses a YAML document into a located tree. An empty document is `Kind::Null`.
pub(crate) fn parse(source: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
    };
    match serde_saphyr::from_str_with_options::<Option<Spanned<Tree>>>(source, options) {
        Ok(Some(tree)) => Ok(into_node(tree)),
        Ok(None) => Ok(Node {
            kind: Kind::Null,
            location: Location::START,
            span: None,
        }),
        Err(error) => Err(syntax_error(&error)),
    }
}

fn syntax_error(error: &serde_saphyr::Error) -> SyntaxError {
    let location = error.location().filter(|l| l.line() > 0).map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    // The rendered text starts with "error: line L column C: "; the location is reported
    // separately, so keep only the message.
    let rendered = error.without_snippet().to_string();
    let message = rendered
        .split_once(": ")
        .filter(|(head, _)| head.starts_with("error"))
        .map_or(rendered.as_str(), |(_, rest)| rest);
    let message = match message.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest,
        _ => message,
    };
    // The location is reported separately; drop the parser's own " at line L, column C".
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => &message[..i],
        _ => message,
    };
    SyntaxError {
        location,
        message: message.trim().to_owned(),
    }
}

fn into_node(tree: Spanned<Tree>) -> Node {
    let defined = tree.defined;
    let location = Location {
        line: defined.line(),
        column: defined.column(),
    };
    let span = defined.span();
    let span = match (span.byte_offset(), span.byte_len()) {
        (Some(start), Some(len)) => usize::try_from(start).ok().zip(usize::try_from(len).ok()),
        _ => None,
    };
    let kind = match tree.value {
        Tree::Null => Kind::Null,
        Tree::Bool(b) => Kind::Bool(b),
        Tree::Int(i) => Kind::Int(i),
        Tree::Float(f) => Kind::Float(f),
        Tree::Str(s) => Kind::Str(s),
        Tree::Seq(items) => Kind::Seq(items.into_iter().map(into_node).collect()),
        Tree::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| (into_node(k), into_node(v)))
                .collect(),
        ),
    };
    Node {
        kind,
        location,
        span,
    }
}

/// What serde-saphyr hands us: any YAML value, every child with its span.
enum Tree {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Tree>>),
    Map(Vec<(Spanned<Tree>, Spanned<Tree>)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Tree, D::Error> {
        Tree::deserialize(deserializer)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Tree, E> {
        Ok(Tree::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Tree, E> {
        Ok(i128::try_from(v).map_or(Tree::Float(v as f64), Tree::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Tree, E> {
        Ok(Tree::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Tree>>()? {
            let value = map.next_value::<Spanned<Tree>>()?;
            entries.push((key, value));
        }
        Ok(Tree::Map(entries))
    }
}
