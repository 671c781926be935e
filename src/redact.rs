//! The process's registry of secret values, so that no log line shows one.
//!
//! `-vv` and `--log-file` print what external tools write, and a tool may echo anything it
//! was given (a maintainer script its configuration, a failing command its arguments).
//! Typed masking ([`crate::hive::config::Secret`] prints as `***`) protects what w4b itself
//! formats; this registry protects the rest: every [`Secret`](crate::hive::config::Secret)
//! registers its value when it is created (the hive loader resolving `password:`,
//! `${env:…}` and `{file:…}` positions), modules register values derived from one (a
//! password's crypt hash), and [`redact`] replaces each known value in a line by `***`
//! before [`crate::ui::log`] writes it to the terminal or the log file.
//!
//! Rules, and why:
//! - a value shorter than [`MIN_LEN`] bytes is not registered: a password of `a` would turn
//!   every `a` in the log into `***` and make the log useless (such a value is rejected by
//!   `hive validate`'s length rules anyway);
//! - a multi-line value (a private key, a whole `wg0.conf`) also registers each of its lines
//!   of at least [`MIN_LEN`] bytes, because tools print line by line;
//! - a value with a `'` also registers the form a single-quoted shell word gives it
//!   (`'\''` for each quote), which is how `-vv` prints command lines;
//! - longer values are replaced first, so a value that contains another disappears whole.
//!
//! The registry only grows for the life of the process; it holds what the process has
//! already loaded into memory, nothing more.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::RwLock;

/// The shortest value that is redacted (see the module documentation).
pub const MIN_LEN: usize = 4;

/// What replaces a secret value.
pub const MASK: &str = "***";

static SECRETS: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Registers `value` (and, when it has several lines, each line) as secret.
pub fn register(value: &str) {
    let value = value.trim_end_matches('\n');
    if value.len() < MIN_LEN {
        return;
    }
    let mut set = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if set.contains(value) {
        return;
    }
    set.insert(value.to_owned());
    // As `-vv` shows it inside a single-quoted command-line word (`ui::log::shell_words`).
    if value.contains('\'') {
        set.insert(value.replace('\'', "'\\''"));
    }
    if value.contains('\n') {
        for line in value.lines().map(str::trim) {
            if line.len() >= MIN_LEN {
                set.insert(line.to_owned());
            }
        }
    }
}

/// `text` with every registered secret value replaced by [`MASK`]; borrowed when it holds
/// none (the common case costs one substring search per secret).
pub fn redact(text: &str) -> Cow<'_, str> {
    let set = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !set.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut by_len: Vec<&String> = set.iter().collect();
    by_len.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    let mut out = text.to_owned();
    for s in by_len {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_and_the_lines_of_a_key_are_masked() {
        register("redact-test-password-1");
        register(
            "-----BEGIN redact-test KEY-----\nredact-test-line-AAAA\nredact-test-line-BBBB\n-----END-----\n",
        );
        assert_eq!(redact("pw=redact-test-password-1!"), "pw=***!");
        assert_eq!(redact("got redact-test-line-BBBB here"), "got *** here");
        assert!(matches!(redact("nothing secret"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_value_with_a_quote_is_masked_as_a_command_line_shows_it() {
        register("redact-test-it's-secret");
        let line = crate::ui::log::shell_words(
            ["chpasswd", "--pw", "redact-test-it's-secret"].map(std::ffi::OsStr::new),
        );
        assert_eq!(redact(&line), "chpasswd --pw '***'");
        assert_eq!(redact("pw=redact-test-it's-secret"), "pw=***");
    }

    #[test]
    fn short_values_are_not_registered_and_longer_values_win() {
        register("ab");
        assert_eq!(redact("a b ab"), "a b ab");
        register("redact-test-x");
        register("redact-test-x-longer");
        assert_eq!(redact("[redact-test-x-longer]"), "[***]");
    }
}
