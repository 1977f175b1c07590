//! What the executors keep of a command's output.

/// How much of a setup script's output the image's event log keeps (its end).
pub(super) const SETUP_OUTPUT_KEPT: usize = 16 * 1024;

/// The last `limit` bytes of `output` or less, cut at a line start, marked when cut.
pub(super) fn tail(output: &str, limit: usize) -> String {
    if output.len() <= limit {
        return output.to_owned();
    }
    let mut start = output.len() - limit;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    let cut = &output[start..];
    let cut = cut.split_once('\n').map_or(cut, |(_, rest)| rest);
    format!(
        "[{} bytes before this left out]\n{cut}",
        output.len() - cut.len()
    )
}

/// The end of a long output, for an event log line.
pub(super) fn last_lines(output: &str) -> String {
    let lines: Vec<&str> = output.trim_end().lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn a_long_output_keeps_its_last_whole_lines() {
        assert_eq!(tail("short\n", 100), "short\n");
        let output = "first line\nsecond line\nthird é line\n";
        // The cut falls inside "second line": that line goes whole.
        assert_eq!(
            tail(output, 20),
            format!("[{} bytes before this left out]\nthird é line\n", 23)
        );
        // A cut inside a multi-byte character moves past it.
        assert!(tail("ééééé\nok\n", 6).ends_with("ok\n"));
    }
}
