//! Debian package versions (Debian Policy §5.6.12): `[epoch:]upstream_version[-debian_revision]`,
//! and their total order, which decides every upgrade and every versioned dependency.
//!
//! - `epoch` is a decimal number (default 0) compared numerically first.
//! - `upstream_version` is everything between the epoch's colon and the *last* hyphen;
//!   it may contain `A-Za-z0-9 . + ~ - :` (hyphens only with a revision, colons only with
//!   an epoch). Policy says it *should* start with a digit; dpkg only warns, and so does
//!   nothing here: such versions are accepted.
//! - `debian_revision` (after the last hyphen) may contain `A-Za-z0-9 . + ~`; absent, it
//!   compares like `0`.
//!
//! Upstream version and revision are compared by dpkg's `verrevcmp`: alternately a run of
//! non-digits, compared character by character with `~` before everything (even the end
//! of the string), then letters, then the other characters (by ASCII); and a run of
//! digits, compared numerically (leading zeros ignored, any length). The order is total
//! but not structural: `1.0 == 1.0-0 == 0:1.0 == 1.00`, so equality is defined by the
//! order, and [`Version`] has no `Hash`.

// Parses untrusted bytes: no unchecked arithmetic or indexing (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A parsed Debian version.
#[derive(Clone, Debug)]
pub struct Version {
    epoch: u32,
    upstream: Box<str>,
    revision: Option<Box<str>>,
}

/// Why a version string is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum VersionError {
    #[error("the version is empty")]
    #[diagnostic(
        code(w4b::deb::version::empty),
        help("a Debian version looks like `1:2.36-9+deb12u4`")
    )]
    Empty,

    #[error("the version `{version}` contains white space")]
    #[diagnostic(code(w4b::deb::version::space))]
    Space { version: String },

    #[error("the epoch of `{version}` is not a number below 2^31")]
    #[diagnostic(
        code(w4b::deb::version::bad_epoch),
        help("the epoch is the decimal number before the first `:`")
    )]
    BadEpoch { version: String },

    #[error("the version `{version}` has an empty {part}")]
    #[diagnostic(code(w4b::deb::version::empty_part))]
    EmptyPart { version: String, part: &'static str },

    #[error("the version `{version}` has the character `{ch}` in its {part}")]
    #[diagnostic(
        code(w4b::deb::version::bad_char),
        help(
            "upstream versions may hold `A-Za-z0-9.+~-:`, revisions `A-Za-z0-9.+~` (Debian Policy §5.6.12)"
        )
    )]
    BadChar {
        version: String,
        ch: char,
        part: &'static str,
    },
}

impl Version {
    /// Parses `[epoch:]upstream[-revision]`; white space around it is ignored.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(VersionError::Empty);
        }
        if text.contains(char::is_whitespace) {
            return Err(VersionError::Space {
                version: text.to_owned(),
            });
        }
        let (epoch, rest) = match text.split_once(':') {
            Some((e, rest)) => {
                let valid = !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit());
                let epoch = valid
                    .then(|| e.parse::<u32>().ok())
                    .flatten()
                    .filter(|&n| i32::try_from(n).is_ok());
                match epoch {
                    Some(n) => (n, rest),
                    None => {
                        return Err(VersionError::BadEpoch {
                            version: text.to_owned(),
                        })
                    }
                }
            }
            None => (0, text),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, Some(r)),
            None => (rest, None),
        };
        let empty = |part| VersionError::EmptyPart {
            version: text.to_owned(),
            part,
        };
        if upstream.is_empty() {
            return Err(empty("upstream version"));
        }
        if revision.is_some_and(str::is_empty) {
            return Err(empty("revision"));
        }
        let bad = |ch, part| VersionError::BadChar {
            version: text.to_owned(),
            ch,
            part,
        };
        if let Some(ch) = upstream
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':')))
        {
            return Err(bad(ch, "upstream version"));
        }
        if let Some(ch) = revision
            .unwrap_or("")
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~')))
        {
            return Err(bad(ch, "revision"));
        }
        Ok(Version {
            epoch,
            upstream: upstream.into(),
            revision: revision.map(Into::into),
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Version, VersionError> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    /// The version as written, without a zero epoch that was implicit. A zero epoch is
    /// kept when the upstream version holds a `:`, which would otherwise be read back as
    /// the epoch separator (`0:1:2` is not `1:2`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 || self.upstream.contains(':') {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if let Some(r) = &self.revision {
            write!(f, "-{r}")?;
        }
        Ok(())
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream.as_bytes(), other.upstream.as_bytes()))
            .then_with(|| {
                verrevcmp(
                    self.revision.as_deref().unwrap_or("").as_bytes(),
                    other.revision.as_deref().unwrap_or("").as_bytes(),
                )
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// dpkg's character weight in a non-digit run: `~` lowest (below the end of the string,
/// weight 0), then letters by ASCII, then every other character after all letters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c).saturating_add(256),
    }
}

/// dpkg's `verrevcmp` (lib/dpkg/version.c) over byte strings.
fn verrevcmp(mut a: &[u8], mut b: &[u8]) -> Ordering {
    fn is_digit(s: &[u8]) -> bool {
        s.first().is_some_and(u8::is_ascii_digit)
    }
    fn advance(s: &mut &[u8]) {
        *s = s.get(1..).unwrap_or(&[]);
    }
    while !a.is_empty() || !b.is_empty() {
        // A run of non-digits, character by character.
        while (!a.is_empty() && !is_digit(a)) || (!b.is_empty() && !is_digit(b)) {
            let (ac, bc) = (order(a.first().copied()), order(b.first().copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            advance(&mut a);
            advance(&mut b);
        }
        // A run of digits, numerically: skip leading zeros, then the longer run is the
        // larger number, and for equal lengths the first differing digit decides.
        while a.first() == Some(&b'0') {
            advance(&mut a);
        }
        while b.first() == Some(&b'0') {
            advance(&mut b);
        }
        let mut first_diff = Ordering::Equal;
        while is_digit(a) && is_digit(b) {
            if first_diff == Ordering::Equal {
                first_diff = a.first().cmp(&b.first());
            }
            advance(&mut a);
            advance(&mut b);
        }
        if is_digit(a) {
            return Ordering::Greater;
        }
        if is_digit(b) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests index their own fixtures
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn printing_keeps_a_zero_epoch_that_a_colon_in_upstream_needs() {
        for text in ["0:1:2", "0:1:2-3", "2:1:2", "1.0", "0:1.0-1", "3:a:b:c-d"] {
            let parsed = v(text);
            let printed = parsed.to_string();
            let again = v(&printed);
            assert_eq!(again, parsed, "{text} printed as {printed}");
            assert_eq!(again.cmp(&parsed), Ordering::Equal);
            assert_eq!(again.epoch, parsed.epoch);
            assert_eq!(again.upstream, parsed.upstream);
        }
        assert_eq!(v("0:1:2").to_string(), "0:1:2");
        assert_eq!(v("0:1.0-1").to_string(), "1.0-1");
    }

    #[test]
    fn parses_the_three_parts() {
        let x = v("1:2.36-9+deb12u4");
        assert_eq!(
            (x.epoch(), x.upstream(), x.revision()),
            (1, "2.36", Some("9+deb12u4"))
        );
        let x = v("1.2-3-4");
        assert_eq!((x.upstream(), x.revision()), ("1.2-3", Some("4")));
        let x = v("2:1:2");
        assert_eq!((x.epoch(), x.upstream(), x.revision()), (2, "1:2", None));
        assert_eq!(v("0:1.0").to_string(), "1.0");
        assert_eq!(v(" 7:1.0~rc1-2 ").to_string(), "7:1.0~rc1-2");
    }

    #[test]
    fn rejects_malformed_versions() {
        assert_eq!(Version::parse("  "), Err(VersionError::Empty));
        for bad in [
            "1 0",
            "a:1",
            ":1",
            "1.0-",
            "-1",
            "1:",
            "1.0_1",
            "1.0-1:2",
            "99999999999:1",
            "1.0-a-b_c",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            Version::parse("1.0@"),
            Err(VersionError::BadChar {
                ch: '@',
                part: "upstream version",
                ..
            })
        ));
    }

    /// Edge cases from Policy §5.6.12 and dpkg's own test suite (t-version.c).
    #[test]
    fn orders_like_policy_and_dpkg() {
        use Ordering::*;
        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~~a", Less),
            ("1.0~~a", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0a", "1.0+", Less),
            ("1.0+", "1.0.", Less),
            ("1.0", "1.0-0", Equal),
            ("1.0", "0:1.0", Equal),
            ("1.00", "1.0", Equal),
            ("1.0", "1.0.0", Less),
            ("1:0.1", "2.0", Greater),
            ("1.10", "1.9", Greater),
            ("1.0-1", "1.0-1.1", Less),
            ("1.0-1~bpo1", "1.0-1", Less),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1.0-1", "1.0+1-1", Less),
            ("a", "b", Less),
            ("1a", "1.", Less),
            ("0000000000000000000000000000001", "1", Equal),
            ("18446744073709551616", "18446744073709551615", Greater),
            ("1~", "1~~", Greater),
            ("1-a", "1-", Greater),
        ];
        for (a, b, want) in cases {
            let (va, vb) = (Version::parse(a), Version::parse(b));
            let (Ok(va), Ok(vb)) = (va, vb) else {
                // "1-" is not a version; compare the revisions directly.
                let ra = a.rsplit_once('-').map_or("", |x| x.1).as_bytes();
                let rb = b.rsplit_once('-').map_or("", |x| x.1).as_bytes();
                assert_eq!(verrevcmp(ra, rb), want, "{a} vs {b}");
                continue;
            };
            assert_eq!(va.cmp(&vb), want, "{a} vs {b}");
            assert_eq!(vb.cmp(&va), want.reverse(), "{b} vs {a}");
        }
    }
}

/// `dpkg --compare-versions` judges the order on generated versions.
#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // spawns the oracle
mod oracle {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    /// dpkg's verdict on `a OP b`.
    fn dpkg(a: &str, op: &str, b: &str) -> bool {
        let status = Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .status()
            .unwrap_or_else(|e| panic!("running dpkg: {e}"));
        match status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!("dpkg --compare-versions {a} {op} {b}: exit {other:?}"),
        }
    }

    fn version() -> impl Strategy<Value = String> {
        (
            prop::option::of(0u32..3),
            "[0-9][0-9a-c.+~]{0,6}",
            prop::option::of("[0-9a-b.+~]{1,4}"),
        )
            .prop_map(|(epoch, upstream, revision)| {
                let mut s = String::new();
                if let Some(e) = epoch {
                    s.push_str(&format!("{e}:"));
                }
                s.push_str(&upstream);
                if let Some(r) = revision {
                    s.push('-');
                    s.push_str(&r);
                }
                s
            })
    }

    /// Pairs that share a prefix, so the interesting tails (`~`, letters, zeros) meet.
    fn pair() -> impl Strategy<Value = (String, String)> {
        (version(), "[0-9a-c.+~]{0,3}", "[0-9a-c.+~]{0,3}").prop_map(|(base, x, y)| {
            let (head, tail) = match base.rsplit_once('-') {
                Some((h, t)) => (h.to_owned(), format!("-{t}")),
                None => (base.clone(), String::new()),
            };
            (format!("{head}{x}{tail}"), format!("{head}{y}{tail}"))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

        #[test]
        fn order_matches_dpkg_compare_versions((a, b) in prop_oneof![pair(), (version(), version())]) {
            if !crate::oracle::have("dpkg") {
                return Ok(());
            }
            let (va, vb) = (Version::parse(&a).unwrap(), Version::parse(&b).unwrap());
            let ours = va.cmp(&vb);
            let theirs = if dpkg(&a, "lt", &b) {
                Ordering::Less
            } else if dpkg(&a, "eq", &b) {
                Ordering::Equal
            } else {
                Ordering::Greater
            };
            prop_assert_eq!(ours, theirs, "{} vs {}", a, b);
        }
    }
}
