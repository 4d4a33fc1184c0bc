//! Log files of the processes a test started: their tails are printed when a
//! test fails, and a stray ERROR line fails a test unless it was expected.
use std::path::{Path, PathBuf};

/// Last `n` lines of a file (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Removes ANSI colour sequences so log levels can be matched as text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines at level ERROR in a tracing log that match none of `allowed`.
pub fn unexpected_errors(path: &Path, allowed: &[&str]) -> Vec<String> {
    let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
    text.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("ERROR"))
        .filter(|l| !allowed.iter().any(|a| l.contains(a)))
        .map(str::to_string)
        .collect()
}

/// Prints the tail of each log to stderr (shown by the test runner for a
/// failing test).
pub fn print_tails(logs: &[(String, PathBuf)]) {
    for (name, path) in logs {
        eprintln!(
            "──── last lines of {name} ({}) ────\n{}",
            path.display(),
            tail(path, 60)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_error_lines_and_honours_the_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(
            &log,
            "2026-01-01T00:00:00Z  INFO a: fine\n\
             2026-01-01T00:00:01Z ERROR a: disk on fire\n\
             \u{1b}[2m2026-01-01T00:00:02Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m a: expected boom\n",
        )
        .unwrap();
        let all = unexpected_errors(&log, &[]);
        assert_eq!(all.len(), 2, "{all:?}");
        let rest = unexpected_errors(&log, &["expected boom"]);
        assert_eq!(rest.len(), 1);
        assert!(rest[0].contains("disk on fire"));
    }
}
