//! apt's source lists: which repositories a Debian host uses, read from
//! `/etc/apt/sources.list.d/*.sources` (deb822, apt ≥ 1.1) and `/etc/apt/sources.list`
//! (one line per repository), as `sources.list(5)` defines them.
//!
//! w4b resolves package sets against repositories named in its own definitions; this
//! reader lets `w4b lock` (and the tests against real Debian) start from the mirror a
//! machine already uses, instead of a host name written into the code. It keeps `deb`
//! entries only (not `deb-src`), skips entries marked `Enabled: no`, and keeps the
//! `Signed-By` keyring path when there is one (an inline key block is reported as such).
//!
//! Parsing is pure (text in); [`read_host`] is the one function that touches the disk.

#![forbid(unsafe_code)]
// Parses bytes from the network: no unchecked arithmetic or indexing (docs/security.md).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

/// One repository as apt would use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The archive root, e.g. `http://deb.debian.org/debian`, without a trailing `/`.
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Option<SignedBy>,
    /// Where it was read, for messages: `path:line`.
    pub origin: String,
}

/// What `Signed-By` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignedBy {
    /// A keyring file (or several, apt allows a comma-separated list).
    Keyrings(Vec<PathBuf>),
    /// Fingerprints to pin from the default keyrings.
    Fingerprints(Vec<String>),
    /// An armored key block written into the `.sources` file itself.
    Inline(String),
}

/// A line or stanza apt would refuse.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("`{origin}`: {reason}")]
#[diagnostic(
    code(w4b::apt::sources_malformed),
    help("see `man 5 sources.list` for both formats")
)]
pub struct SourcesError {
    pub origin: String,
    pub reason: String,
}

/// Parses deb822 `.sources` text (several stanzas separated by blank lines).
pub fn parse_deb822(text: &str, file: &str) -> Result<Vec<Source>, SourcesError> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let mut start = 1usize;
    let lines: Vec<&str> = text.lines().collect();
    for (index, raw) in lines.iter().chain(std::iter::once(&"")).enumerate() {
        let line_no = index.saturating_add(1);
        if raw.trim_start().starts_with('#') {
            continue;
        }
        if raw.trim().is_empty() {
            if !stanza.is_empty() {
                out.extend(stanza_source(&stanza, &format!("{file}:{start}"))?);
                stanza.clear();
            }
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let Some((_, value)) = stanza.last_mut() else {
                return Err(SourcesError {
                    origin: format!("{file}:{line_no}"),
                    reason: "a continuation line with no field before it".into(),
                });
            };
            value.push('\n');
            value.push_str(raw.trim());
            continue;
        }
        let Some((name, value)) = raw.split_once(':') else {
            return Err(SourcesError {
                origin: format!("{file}:{line_no}"),
                reason: format!("`{raw}` is not `Field: value`"),
            });
        };
        if stanza.is_empty() {
            start = line_no;
        }
        stanza.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(out)
}

fn stanza_source(fields: &[(String, String)], origin: &str) -> Result<Option<Source>, SourcesError> {
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let words = |name: &str| -> Vec<String> {
        get(name)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let missing = |field: &str| SourcesError {
        origin: origin.to_owned(),
        reason: format!("no `{field}` field"),
    };
    if get("enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
        return Ok(None);
    }
    let types = words("types");
    if types.is_empty() {
        return Err(missing("Types"));
    }
    if !types.iter().any(|t| t == "deb") {
        return Ok(None);
    }
    let uri = words("uris").into_iter().next().ok_or_else(|| missing("URIs"))?;
    let suites = words("suites");
    if suites.is_empty() {
        return Err(missing("Suites"));
    }
    let signed_by = get("signed-by").map(|v| {
        if v.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            SignedBy::Inline(v.to_owned())
        } else {
            signed_by_value(v)
        }
    });
    Ok(Some(Source {
        uri: uri.trim_end_matches('/').to_owned(),
        suites,
        components: words("components"),
        signed_by,
        origin: origin.to_owned(),
    }))
}

fn signed_by_value(v: &str) -> SignedBy {
    let items: Vec<&str> = v
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.iter().all(|i| i.starts_with('/')) {
        SignedBy::Keyrings(items.iter().map(PathBuf::from).collect())
    } else {
        SignedBy::Fingerprints(items.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// Parses one-line `sources.list` text: `deb [options] uri suite [component...]`.
pub fn parse_one_line(text: &str, file: &str) -> Result<Vec<Source>, SourcesError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let origin = format!("{file}:{}", index.saturating_add(1));
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if kind == "deb-src" {
            continue;
        }
        if kind != "deb" {
            return Err(SourcesError {
                origin,
                reason: format!("`{kind}` is neither `deb` nor `deb-src`"),
            });
        }
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(after) => {
                let Some((opts, rest)) = after.split_once(']') else {
                    return Err(SourcesError {
                        origin,
                        reason: "`[` without `]`".into(),
                    });
                };
                (opts, rest)
            }
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            return Err(SourcesError {
                origin,
                reason: "expected `deb URI SUITE [COMPONENT...]`".into(),
            });
        };
        let signed_by = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by=").map(signed_by_value));
        out.push(Source {
            uri: uri.trim_end_matches('/').to_owned(),
            suites: vec![suite.to_owned()],
            components: words.map(str::to_owned).collect(),
            signed_by,
            origin,
        });
    }
    Ok(out)
}

/// The `deb` sources of the system rooted at `root` (`/` for this host): every
/// `etc/apt/sources.list.d/*.sources` and `*.list` in name order, then
/// `etc/apt/sources.list`. Missing files are not an error; unreadable ones are.
pub fn read_host(root: &Path) -> Result<Vec<Source>, SourcesError> {
    let mut out = Vec::new();
    let io = |path: &Path, e: std::io::Error| SourcesError {
        origin: path.display().to_string(),
        reason: e.to_string(),
    };
    let dir = root.join("etc/apt/sources.list.d");
    let mut files = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                files.push(entry.map_err(|e| io(&dir, e))?.path());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&dir, e)),
    }
    files.sort();
    let main = root.join("etc/apt/sources.list");
    files.push(main);
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let deb822 = name.ends_with(".sources");
        if !deb822 && !name.ends_with(".list") {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path, e)),
        };
        let shown = path.display().to_string();
        if deb822 {
            out.extend(parse_deb822(&text, &shown)?);
        } else {
            out.extend(parse_one_line(&text, &shown)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // tests index their own fixtures
mod tests {
    use super::*;

    #[test]
    fn deb822_stanzas_with_comments_and_disabled_entries() {
        let text = "Types: deb deb-src
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://example.invalid/debian
Suites: sid

Types: deb
URIs: https://repo.example.invalid/apt
Suites: stable
Components: main contrib
Signed-By: 0123456789ABCDEF0123456789ABCDEF01234567
";
        let sources = parse_deb822(text, "debian.sources").unwrap();
        assert_eq!(sources.len(), 2, "{sources:#?}");
        assert_eq!(sources[0].uri, "http://deb.debian.org/debian");
        assert_eq!(sources[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(sources[0].components, ["main"]);
        assert_eq!(
            sources[0].signed_by,
            Some(SignedBy::Keyrings(vec![PathBuf::from(
                "/usr/share/keyrings/debian-archive-keyring.gpg"
            )]))
        );
        assert_eq!(sources[0].origin, "debian.sources:1");
        assert_eq!(
            sources[1].signed_by,
            Some(SignedBy::Fingerprints(vec![
                "0123456789ABCDEF0123456789ABCDEF01234567".into()
            ]))
        );
    }

    #[test]
    fn deb822_inline_key_is_recognised() {
        let text = "Types: deb\nURIs: http://x.invalid/\nSuites: s\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n -----END PGP PUBLIC KEY BLOCK-----\n";
        let sources = parse_deb822(text, "x.sources").unwrap();
        assert!(matches!(sources[0].signed_by, Some(SignedBy::Inline(_))));
    }

    #[test]
    fn deb822_errors_name_the_stanza() {
        let e = parse_deb822("Types: deb\nSuites: s\n", "a.sources").unwrap_err();
        assert_eq!(e.origin, "a.sources:1");
        assert!(e.reason.contains("URIs"), "{e}");
        let e = parse_deb822("Types: deb\nnonsense\n", "a.sources").unwrap_err();
        assert_eq!(e.origin, "a.sources:2");
    }

    #[test]
    fn one_line_format_with_options() {
        let text = "# comment\n\
            deb http://deb.debian.org/debian bookworm main contrib # trailing\n\
            deb-src http://deb.debian.org/debian bookworm main\n\
            deb [arch=arm64 signed-by=/etc/apt/keyrings/x.gpg] https://x.invalid/apt/ stable main\n";
        let sources = parse_one_line(text, "sources.list").unwrap();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].components, ["main", "contrib"]);
        assert_eq!(sources[0].signed_by, None);
        assert_eq!(sources[1].uri, "https://x.invalid/apt");
        assert_eq!(
            sources[1].signed_by,
            Some(SignedBy::Keyrings(vec![PathBuf::from("/etc/apt/keyrings/x.gpg")]))
        );
        assert_eq!(sources[1].origin, "sources.list:4");
        assert!(parse_one_line("deb http://x\n", "l").is_err());
        assert!(parse_one_line("rpm http://x s\n", "l").is_err());
        assert!(parse_one_line("deb [arch=arm64 http://x s\n", "l").is_err());
    }

    #[test]
    fn read_host_walks_both_formats_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("b.sources"),
            "Types: deb\nURIs: http://b.invalid\nSuites: b\n",
        )
        .unwrap();
        std::fs::write(d.join("a.list"), "deb http://a.invalid a main\n").unwrap();
        std::fs::write(d.join("ignored.save"), "garbage").unwrap();
        std::fs::write(
            dir.path().join("etc/apt/sources.list"),
            "deb http://c.invalid c\n",
        )
        .unwrap();
        let uris: Vec<String> = read_host(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.uri)
            .collect();
        assert_eq!(uris, ["http://a.invalid", "http://b.invalid", "http://c.invalid"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(read_host(empty.path()).unwrap().is_empty());
    }
}
