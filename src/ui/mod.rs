//! Everything w4b shows a person or a tool while it works: progress bars on a terminal,
//! plain lines otherwise, a JSON-lines event stream with `--message-format json`, and the
//! rendering of diagnostics. Data goes to stdout, everything else to stderr.

pub mod log;
pub mod progress;
pub mod prompt;

use std::io::IsTerminal;

/// How to talk to the user, decided once from the arguments and the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Progress bars and colour may be drawn on stderr.
    pub tty: bool,
    pub color: bool,
    pub json: bool,
    pub quiet: bool,
}

impl Style {
    pub fn detect(json: bool, quiet: bool, no_color: bool) -> Style {
        let tty = std::io::stderr().is_terminal();
        Style {
            tty: tty && !json,
            color: tty && !no_color,
            json,
            quiet,
        }
    }
}

/// Formats a byte count for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Formats milliseconds: `850ms`, `1.2s`, `3m04s`.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_units() {
        assert_eq!(super::bytes(10), "10 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::duration_ms(850), "850ms");
        assert_eq!(super::duration_ms(1200), "1.2s");
        assert_eq!(super::duration_ms(184_000), "3m04s");
    }
}
