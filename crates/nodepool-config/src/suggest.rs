//! Did-you-mean for misspelt keys.
//!
//! A key matches a known one when they are equal after normalisation (case, `_` for `-`,
//! invisible characters dropped) or within a small edit distance. A few misspellings found
//! in real files are matched by name, such as the `update-image` of 2014's sample config.

/// Misspellings seen in real configs, with the key meant.
const KNOWN_MISSPELLINGS: &[(&str, &str)] =
    &[("update-image", "image-update"), ("min_ready", "min-ready")];

/// Characters that are invisible or look like a space, which a key should never contain.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00a0}' | '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}'
                | '\u{17b4}' | '\u{17b5}' | '\u{180e}' | '\u{2000}'..='\u{200f}'
                | '\u{2028}'..='\u{202f}' | '\u{205f}'..='\u{206f}' | '\u{3000}' | '\u{feff}'
        )
}

/// A key with invisible characters shown as escapes (`boot\u{ad}timeout`).
pub(crate) fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if is_invisible(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A key in quotes, with invisible characters shown as escapes (`"boot\u{ad}timeout"`).
pub(crate) fn quote(key: &str) -> String {
    format!(
        "\"{}\"",
        escape(&key.replace('\\', "\\\\").replace('"', "\\\""))
    )
}

fn normalise(key: &str) -> String {
    key.chars()
        .filter(|c| !is_invisible(*c))
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The known key closest to `key`, if any is close enough to be what was meant.
pub(crate) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    if let Some((_, meant)) = KNOWN_MISSPELLINGS.iter().find(|(wrong, _)| *wrong == key)
        && let Some(meant) = known.iter().find(|k| *k == meant)
    {
        return Some(meant);
    }
    let norm = normalise(key);
    if let Some(exact) = known.iter().find(|k| normalise(k) == norm) {
        return Some(exact);
    }
    let limit = if norm.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&norm, k), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// The message for a key nobody reads.
pub(crate) fn unknown_key(key: &str, known: &[&str]) -> String {
    match closest(key, known) {
        Some(meant) => format!("unknown key {}; did you mean {}?", quote(key), quote(meant)),
        None => format!(
            "unknown key {}; expected one of: {}",
            quote(key),
            known.join(", ")
        ),
    }
}
