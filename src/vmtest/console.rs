//! The last lines of the serial console, as failures quote them.
//!
//! The console is the guest's own output, untrusted: colour escapes (systemd's `[  OK  ]`
//! in green), carriage returns and other control characters are removed, long lines are
//! cut, and only the tail of the file is read however large the log grew.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Lines a failure quotes from the console.
pub const TAIL_LINES: usize = 30;
/// Bytes read from the end of the log to find them.
const TAIL_BYTES: u64 = 64 * 1024;
/// Characters kept of one line.
const LINE_MAX: usize = 300;

/// The last `n` non-empty lines of the log at `path` (none when it cannot be read).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if f.take(TAIL_BYTES).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text.lines().map(clean).filter(|l| !l.trim().is_empty()).collect();
    // The first line may be cut in the middle when the read started inside it.
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    lines.split_off(skip)
}

/// `line` without escape sequences and control characters, at most [`LINE_MAX`] long.
pub fn clean(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e).
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\t' {
            out.push(' ');
        } else if !c.is_control() {
            out.push(c);
        }
        if out.chars().count() >= LINE_MAX {
            break;
        }
    }
    out.trim_end().to_owned()
}

/// The last `n` non-empty lines of `text`, cleaned.
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text.lines().map(clean).filter(|l| !l.trim().is_empty()).collect();
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_carriage_returns_go() {
        assert_eq!(
            clean("[\u{1b}[0;32m  OK  \u{1b}[0m] Started x.\r"),
            "[  OK  ] Started x."
        );
    }

    #[test]
    fn the_tail_of_a_large_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!("line {i}\n\n"));
        }
        std::fs::write(&p, text).unwrap();
        let t = tail(&p, 3);
        assert_eq!(t, ["line 9997", "line 9998", "line 9999"]);
        assert!(tail(&dir.path().join("missing"), 3).is_empty());
        assert_eq!(last_lines("a\nb\nc\n", 2), ["b", "c"]);
    }
}
