//! No input, however broken, makes the loader panic; every error it reports is located.

use proptest::prelude::*;

use super::MINIMAL;

/// Pieces of real configs, so that random text often looks like YAML and gets deep.
const PIECES: &[&str] = &[
    "labels:",
    "providers:",
    "images:",
    "cron:",
    "- name: a",
    "  ",
    "    ",
    "\n",
    "- ",
    ": ",
    "name: ",
    "max-servers: ",
    "min-ready: ",
    "min-ram: ",
    "rate: ",
    "'10'",
    "-1",
    "1e9",
    "0x1f",
    "~",
    "null",
    "&a ",
    "*a",
    "<<: *a",
    "[",
    "]",
    "{",
    "}",
    ",",
    "? ",
    "!!int ",
    "|\n",
    ">-\n",
    "#",
    "\"",
    "'",
    "driver: fake",
    "base-image: x",
    "image: a",
    "providers: [a]",
    "\t",
    "---\n",
    "...\n",
    "\u{ad}",
];

fn check_no_panic_and_located(text: &str) {
    if let Err(failure) = crate::parse(text, "fuzz.yaml") {
        assert!(!failure.errors.is_empty());
        for error in &failure.errors {
            assert!(error.location.is_some(), "unlocated error: {error}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = crate::parse_bytes(&bytes, "fuzz.yaml");
    }

    #[test]
    fn arbitrary_text(text in "\\PC{0,300}") {
        check_no_panic_and_located(&text);
    }

    #[test]
    fn yaml_like_text(pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..60)) {
        check_no_panic_and_located(&pieces.concat());
    }

    #[test]
    fn mutated_valid_config(position in 0..MINIMAL.len(), piece in proptest::sample::select(PIECES), cut in 0usize..8) {
        let mut text = MINIMAL.to_owned();
        let position = (0..=position).rev().find(|p| text.is_char_boundary(*p)).unwrap_or(0);
        let end = (position + cut).min(text.len());
        let end = (end..=text.len()).find(|p| text.is_char_boundary(*p)).unwrap_or(text.len());
        text.replace_range(position..end, piece);
        check_no_panic_and_located(&text);
    }
}

#[test]
fn deep_nesting_and_alias_bombs_are_refused_not_fatal() {
    let deep = format!("labels: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    check_no_panic_and_located(&deep);
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_owned()
        } else {
            format!("b{}", i - 1)
        };
        bomb.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    check_no_panic_and_located(&bomb);
}
