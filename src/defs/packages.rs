//! `kind: packages`: a package set — Debian repositories, the packages wanted from them, and
//! the ones never to install (DESIGN §4, "Package sets").
//!
//! A set only *names* what it wants. `w4b lock` resolves the sets an image uses against the
//! repositories' signed indices into `w4b.lock`; a build installs exactly what the lock
//! says and never reads a repository index. So nothing here is fetched or resolved, and
//! the typed set is what decides whether a lock entry is still current: a lock entry
//! records a digest of the sets it was resolved from ([`PackageSet`] serialises without
//! spans, so comments, key order and inheritance never make a lock stale).
//!
//! ```yaml
//! kind: packages
//! repositories:
//!   - {url: "http://deb.debian.org/debian", suite: bookworm, components: [main], key: keys/debian-bookworm.asc}
//! packages: [postgresql-15, "nftables (>= 1.0)"]
//! exclude: [exim4-base]
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::de::Spanned;
use super::error::DefsError;
use super::target::{url_scheme, WsPath};

/// A package set (`kind: packages`), validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageSet {
    /// Where packages come from, in order of preference for equal versions.
    pub repositories: Vec<Spanned<Repository>>,
    /// What to install, with everything it depends on.
    pub packages: Vec<Spanned<Request>>,
    /// Names never installed: a package that needs one is an error, not a surprise.
    pub exclude: Vec<Spanned<String>>,
    /// Follow `Recommends` too (off by default, like `apt-get --no-install-recommends`).
    pub recommends: bool,
    pub description: Option<String>,
}

/// A Debian repository: one suite of an archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Repository {
    /// How the lock names it: `name:`, or the last part of the URL's path and the suite
    /// (`debian-bookworm`).
    pub name: String,
    /// The archive root, without a trailing slash (`http://deb.debian.org/debian`).
    pub url: String,
    pub suite: String,
    pub components: Vec<String>,
    /// How the repository's `InRelease` is checked.
    pub trust: Trust,
    /// `apt_source: true`: the image gets an apt source for this repository
    /// (`/etc/apt/sources.list.d/<name>.sources`, its key beside it), so the installed
    /// system can update from it. Off by default: a base usually lists its own archive.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub apt_source: bool,
}

/// What vouches for a repository's indices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// An OpenPGP key (or keyring) file in the workspace, optionally narrowed to the keys
    /// with these fingerprints (40 hex digits, upper case; sorted).
    Key {
        file: WsPath,
        fingerprints: Vec<String>,
        /// `key_url:` where `w4b lock` fetches the key when `file` does not exist yet; the
        /// fetched key is kept only if its primary keys are among `fingerprints`.
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// `trusted: true`: an unsigned repository, accepted as is and marked so in the
    /// manifest.
    Unsigned,
}

/// One wanted package: a name and an optional version constraint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Request {
    pub name: String,
    pub constraint: Option<(Relation, String)>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.constraint {
            None => f.write_str(&self.name),
            Some((op, version)) => write!(f, "{} ({} {version})", self.name, op.as_str()),
        }
    }
}

/// A version relation, as Debian writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Relation {
    #[serde(rename = "<<")]
    Earlier,
    #[serde(rename = "<=")]
    EarlierOrEqual,
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = ">=")]
    LaterOrEqual,
    #[serde(rename = ">>")]
    Later,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Earlier => "<<",
            Relation::EarlierOrEqual => "<=",
            Relation::Equal => "=",
            Relation::LaterOrEqual => ">=",
            Relation::Later => ">>",
        }
    }

    fn parse(text: &str) -> Option<Relation> {
        Some(match text {
            "<<" => Relation::Earlier,
            "<=" => Relation::EarlierOrEqual,
            "=" => Relation::Equal,
            ">=" => Relation::LaterOrEqual,
            ">>" => Relation::Later,
            _ => return None,
        })
    }
}

#[derive(Deserialize)]
pub(crate) struct RawPackageSet {
    #[serde(default)]
    repositories: Vec<Spanned<RawRepository>>,
    #[serde(default)]
    packages: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    recommends: bool,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct RawRepository {
    #[serde(default)]
    name: Option<Spanned<String>>,
    url: Spanned<String>,
    suite: Spanned<String>,
    #[serde(default)]
    components: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    fingerprint: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    key_url: Option<Spanned<String>>,
    #[serde(default)]
    trusted: Option<Spanned<bool>>,
    #[serde(default)]
    apt_source: bool,
}

/// `fingerprint: X` or `fingerprint: [X, Y]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Debian Policy §5.6.1: lower-case letters, digits, `+`, `-` and `.`, starting with a
/// letter or digit, at least two characters.
pub fn is_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(c))
}

/// A token of a suite, component or repository name: no spaces, no path tricks.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._~".contains(&c))
}

/// Turns a path written in a definition into a workspace path (`what` names it in errors).
pub(crate) type WsPathOf<'a> = dyn Fn(&Spanned<String>, &str) -> Result<WsPath, DefsError> + 'a;

/// Converts a `kind: packages` document; `ws_path` turns a path written in the file into a
/// workspace path (relative to the file, never leaving the workspace).
pub(crate) fn convert(raw: RawPackageSet, ws_path: &WsPathOf<'_>) -> Result<PackageSet, DefsError> {
    let mut repositories: Vec<Spanned<Repository>> = Vec::new();
    for repo in raw.repositories {
        let span = repo.span.clone();
        let r = convert_repository(repo.value, ws_path)?;
        if let Some(first) = repositories.iter().find(|o| o.value.name == r.name) {
            return Err(span.invalid_value(
                format!("two repositories are named `{}`", r.name),
                "second repository of this name",
                Some(format!(
                    "give one of them another `name:` (the first is at `{}`)",
                    first.span.location()
                )),
            ));
        }
        repositories.push(Spanned::new(r, span));
    }
    let mut packages: Vec<Spanned<Request>> = Vec::new();
    for text in raw.packages {
        let request = parse_request(&text)?;
        if let Some(first) = packages.iter().find(|p| p.value.name == request.name) {
            return Err(text.span.invalid_value(
                format!("`{}` is listed twice", request.name),
                "second entry",
                Some(format!(
                    "keep one entry (the first is at `{}`); a constraint goes in parentheses: `{} (>= 1.0)`",
                    first.span.location(),
                    request.name
                )),
            ));
        }
        packages.push(Spanned::new(request, text.span));
    }
    for name in &raw.exclude {
        if !is_package_name(&name.value) {
            return Err(not_a_name(name));
        }
        if let Some(p) = packages.iter().find(|p| p.value.name == name.value) {
            return Err(name.span.invalid_value(
                format!("`{}` is both wanted and excluded", name.value),
                "excluded here",
                Some(format!(
                    "remove it from `packages` (at `{}`) or from `exclude`",
                    p.span.location()
                )),
            ));
        }
    }
    let mut exclude = raw.exclude;
    exclude.sort_by(|a, b| a.value.cmp(&b.value));
    exclude.dedup_by(|a, b| a.value == b.value);
    Ok(PackageSet {
        repositories,
        packages,
        exclude,
        recommends: raw.recommends,
        description: raw.description,
    })
}

fn not_a_name(text: &Spanned<String>) -> DefsError {
    text.span.invalid_value(
        format!("`{}` is not a Debian package name", text.value),
        "not a package name",
        Some(
            "package names are lower-case letters, digits, `+`, `-` and `.` (`postgresql-15`); a version constraint goes in parentheses: `nftables (>= 1.0)`"
                .into(),
        ),
    )
}

/// `name` or `name (OP VERSION)`.
fn parse_request(text: &Spanned<String>) -> Result<Request, DefsError> {
    let t = text.value.trim();
    let (name, constraint) = match t.split_once('(') {
        None => (t, None),
        Some((name, rest)) => {
            let inner = rest.strip_suffix(')').map(str::trim);
            let parsed = inner.and_then(|inner| {
                let op_len = inner.bytes().take_while(|b| b"<>=".contains(b)).count();
                let (op, version) = inner.split_at(op_len);
                let version = version.trim();
                let ok = !version.is_empty()
                    && version
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b".+-~:".contains(&c));
                Relation::parse(op)
                    .filter(|_| ok)
                    .map(|op| (op, version.to_owned()))
            });
            match parsed {
                Some(c) => (name.trim(), Some(c)),
                None => {
                    return Err(text.span.invalid_value(
                        format!("`{}` is not a package with a version constraint", text.value),
                        "bad constraint",
                        Some("write `name (OP VERSION)` with OP one of `<<`, `<=`, `=`, `>=`, `>>`: `nftables (>= 1.0.6)`".into()),
                    ))
                }
            }
        }
    };
    if !is_package_name(name) {
        return Err(not_a_name(&Spanned::new(name.to_owned(), text.span.clone())));
    }
    Ok(Request {
        name: name.to_owned(),
        constraint,
    })
}

fn convert_repository(raw: RawRepository, ws_path: &WsPathOf<'_>) -> Result<Repository, DefsError> {
    let url = raw.url.value.trim_end_matches('/').to_owned();
    if !["http://", "https://", "file://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return Err(raw.url.span.invalid_value(
            format!("unsupported URL scheme `{}`", url_scheme(&url)),
            "not an http, https or file URL",
            Some("the archive's root, such as `http://deb.debian.org/debian`".into()),
        ));
    }
    if !is_token(&raw.suite.value) {
        return Err(raw.suite.span.invalid_value(
            format!("`{}` is not a suite name", raw.suite.value),
            "not a suite",
            Some("a suite or codename as in `dists/<suite>/InRelease`: `bookworm`, `bookworm-updates`, `stable`".into()),
        ));
    }
    let components = match raw.components {
        None => vec!["main".to_owned()],
        Some(list) => {
            if list.is_empty() {
                return Err(raw.suite.span.invalid_value(
                    "`components` is empty",
                    "this repository",
                    Some("list at least one component: `components: [main]`".into()),
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for c in list {
                if !is_token(&c.value) {
                    return Err(c.span.invalid_value(
                        format!("`{}` is not a component name", c.value),
                        "not a component",
                        Some("components are single words: `main`, `contrib`, `non-free-firmware`".into()),
                    ));
                }
                if out.contains(&c.value) {
                    return Err(c.span.invalid_value(
                        format!("component `{}` is listed twice", c.value),
                        "second entry",
                        Some("list each component once".into()),
                    ));
                }
                out.push(c.value);
            }
            out
        }
    };
    let trusted = raw.trusted.as_ref().is_some_and(|t| t.value);
    let fingerprints = match &raw.fingerprint {
        None => Vec::new(),
        Some(f) => {
            let list = match &f.value {
                OneOrMany::One(one) => vec![one.clone()],
                OneOrMany::Many(many) => many.clone(),
            };
            if list.is_empty() {
                return Err(f.span.invalid_value(
                    "`fingerprint` is an empty list",
                    "no fingerprint",
                    Some("list the 40-hex-digit fingerprints of the keys that sign the archive, or leave `fingerprint` out".into()),
                ));
            }
            let mut out = Vec::new();
            for text in list {
                let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(f.span.invalid_value(
                        format!("`{text}` is not a key fingerprint (40 hex digits)"),
                        "not a fingerprint",
                        Some("copy it from `gpg --show-keys --with-fingerprint <key file>` (spaces are allowed)".into()),
                    ));
                }
                out.push(hex.to_ascii_uppercase());
            }
            out.sort();
            out.dedup();
            out
        }
    };
    let trust = match (raw.key, trusted) {
        (Some(key), false) => {
            let url = match raw.key_url {
                None => None,
                Some(u) => {
                    if !u.value.starts_with("https://") && !u.value.starts_with("http://") {
                        return Err(u.span.invalid_value(
                            format!("unsupported URL scheme `{}`", url_scheme(&u.value)),
                            "not an http or https URL",
                            Some("the URL the archive publishes its key at, such as `https://packagecloud.io/timescale/timescaledb/gpgkey`".into()),
                        ));
                    }
                    if fingerprints.is_empty() {
                        return Err(u.span.invalid_value(
                            "a key fetched from a URL must be pinned by its fingerprint",
                            "no `fingerprint`",
                            Some("add `fingerprint:` with the key's fingerprint, checked out of band (the archive's documentation)".into()),
                        ));
                    }
                    Some(u.value)
                }
            };
            Trust::Key {
                file: ws_path(&key, "a repository key")?,
                fingerprints,
                url,
            }
        }
        (Some(key), true) => {
            return Err(key.span.invalid_value(
                "a repository is either signed (`key`) or `trusted: true`, not both",
                "a key for a trusted repository",
                Some("remove `trusted: true`: a repository with a pinned key is checked against it".into()),
            ))
        }
        (None, true) => {
            if let Some(f) = raw.fingerprint {
                return Err(f.span.invalid_value(
                    "a fingerprint needs the key file it picks from",
                    "no `key`",
                    Some("add `key: keys/<archive>.asc` and drop `trusted: true`".into()),
                ));
            }
            if raw.apt_source {
                return Err(raw.url.span.invalid_value(
                    "an unsigned repository cannot be an apt source of the image",
                    "`trusted: true` with `apt_source: true`",
                    Some("pin the archive's key (`key:`), or drop `apt_source: true`".into()),
                ));
            }
            Trust::Unsigned
        }
        (None, false) => {
            if let Some(u) = raw.key_url {
                return Err(u.span.invalid_value(
                    "`key_url` needs `key:`, the workspace file `w4b lock` keeps the fetched key in",
                    "no `key`",
                    Some("add `key: keys/<archive>.asc` (it need not exist yet: `w4b lock` fetches it, checks its fingerprint and writes it there)".into()),
                ));
            }
            return Err(raw.url.span.invalid_value(
                "this repository's signing key is not pinned",
                "no `key`",
                Some(
                    "add `key: keys/<archive>.asc` (the archive's public key, in the workspace), or `trusted: true` for an unsigned repository you trust by other means"
                        .into(),
                ),
            ));
        }
    };
    let name = match raw.name {
        Some(n) => {
            if !is_token(&n.value) {
                return Err(n.span.invalid_value(
                    format!("`{}` is not a repository name", n.value),
                    "not a name",
                    Some("a single word such as `debian` or `timescale`".into()),
                ));
            }
            n.value
        }
        None => {
            let path = url.split_once("://").map_or("", |(_, rest)| rest);
            let last = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("repo");
            let last: String = last
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "+-._".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("{last}-{}", raw.suite.value)
        }
    };
    Ok(Repository {
        name,
        url,
        suite: raw.suite.value,
        components,
        trust,
        apt_source: raw.apt_source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::defs::{Label, Loader, Target, Workspace};

    fn load(files: &[(&str, &str)], label: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let ws = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
        let loader = Loader::new(ws, BTreeMap::new(), &[]).unwrap();
        loader
            .load(&Label::parse(label, None).unwrap())
            .unwrap()
            .target
            .clone()
    }

    const BASE_SET: &str = r#"kind: packages
repositories:
  - url: "http://deb.debian.org/debian/"
    suite: bookworm
    key: ../../keys/debian.asc
    fingerprint: "4D64 FEC1 19C2 0290 67D6  E791 F8D2 585B 8783 D481"
  - {name: timescale, url: "https://packagecloud.io/timescale/timescaledb/debian", suite: bookworm, trusted: true}
packages: [nftables, "postgresql-15 (>= 15.8)"]
exclude: [exim4-base, exim4-base]
"#;

    #[test]
    fn a_package_set_is_typed_with_defaults_and_extends_another() {
        let files = [
            ("w4b.yaml", ""),
            ("keys/debian.asc", "key"),
            ("defs/packages/base.yaml", BASE_SET),
            (
                "defs/packages/hive.yaml",
                "extends: //packages:base\npackages+: [wireguard-tools]\nrecommends: true\n",
            ),
        ];
        let Target::Packages(set) = load(&files, "//packages:hive") else {
            panic!("not a package set")
        };
        let debian = &set.repositories[0].value;
        assert_eq!(debian.name, "debian-bookworm");
        assert_eq!(debian.url, "http://deb.debian.org/debian");
        assert_eq!(debian.components, ["main"]);
        assert_eq!(
            debian.trust,
            Trust::Key {
                file: WsPath::join("", "keys/debian.asc").unwrap(),
                fingerprints: vec!["4D64FEC119C2029067D6E791F8D2585B8783D481".into()],
                url: None,
            }
        );
        assert!(!debian.apt_source);
        assert_eq!(set.repositories[1].value.name, "timescale");
        assert_eq!(set.repositories[1].value.trust, Trust::Unsigned);
        let wanted: Vec<String> = set.packages.iter().map(|p| p.value.to_string()).collect();
        assert_eq!(wanted, ["nftables", "postgresql-15 (>= 15.8)", "wireguard-tools"]);
        assert_eq!(set.exclude.len(), 1);
        assert!(set.recommends);
    }

    fn load_err(set: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("defs/packages/x.yaml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, set).unwrap();
        std::fs::write(dir.path().join("w4b.yaml"), "").unwrap();
        let ws = Workspace::open(dir.path(), &BTreeMap::new()).unwrap();
        let loader = Loader::new(ws, BTreeMap::new(), &[]).unwrap();
        match loader.load(&Label::parse("//packages:x", None).unwrap()) {
            Ok(_) => panic!("accepted:\n{set}"),
            Err(e) => {
                let help = miette::Diagnostic::help(&e)
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                format!("{e} / {help}")
            }
        }
    }

    #[test]
    fn a_key_from_a_url_is_pinned_by_fingerprints_and_may_be_an_apt_source() {
        let set = r#"kind: packages
repositories:
  - name: timescale
    url: https://packagecloud.io/timescale/timescaledb/debian
    suite: bookworm
    key: keys/timescale.asc
    key_url: https://packagecloud.io/timescale/timescaledb/gpgkey
    fingerprint: ["0641 009A 8366 FDE4 444A  7B62 E739 1C94 0804 29FF", 1005FB68604CE9B8F6879CF759F18EDF47F24417]
    apt_source: true
"#;
        let Target::Packages(set) = load(&[("w4b.yaml", ""), ("defs/packages/t.yaml", set)], "//packages:t")
        else {
            panic!("not a package set")
        };
        let r = &set.repositories[0].value;
        assert!(r.apt_source);
        assert_eq!(
            r.trust,
            Trust::Key {
                file: WsPath::join("", "defs/packages/keys/timescale.asc").unwrap(),
                fingerprints: vec![
                    "0641009A8366FDE4444A7B62E7391C94080429FF".into(),
                    "1005FB68604CE9B8F6879CF759F18EDF47F24417".into()
                ],
                url: Some("https://packagecloud.io/timescale/timescaledb/gpgkey".into()),
            }
        );
        let repo = |extra: &str| {
            format!(
                "kind: packages\nrepositories:\n  - {{url: \"http://x/debian\", suite: bookworm, {extra}}}\n"
            )
        };
        let e = load_err(&repo("key: k.asc, key_url: \"https://x/key\""));
        assert!(
            e.contains("pinned by its fingerprint") && e.contains("fingerprint:"),
            "{e}"
        );
        let e = load_err(&repo(
            "key_url: \"https://x/key\", fingerprint: 1005FB68604CE9B8F6879CF759F18EDF47F24417",
        ));
        assert!(e.contains("`key_url` needs `key:`"), "{e}");
        let e = load_err(&repo(
            "key: k.asc, key_url: \"ftp://x/key\", fingerprint: 1005FB68604CE9B8F6879CF759F18EDF47F24417",
        ));
        assert!(e.contains("unsupported URL scheme `ftp`"), "{e}");
        let e = load_err(&repo("trusted: true, apt_source: true"));
        assert!(e.contains("cannot be an apt source"), "{e}");
        let e = load_err(&repo("key: k.asc, fingerprint: []"));
        assert!(e.contains("empty list"), "{e}");
        let e = load_err(&repo(
            "key: k.asc, fingerprint: [1005FB, 1005FB68604CE9B8F6879CF759F18EDF47F24417]",
        ));
        assert!(e.contains("`1005FB` is not a key fingerprint"), "{e}");
    }

    #[test]
    fn an_image_lists_package_sets_by_label() {
        let files = [
            ("w4b.yaml", ""),
            ("keys/debian.asc", "key"),
            ("defs/packages/base.yaml", BASE_SET),
            (
                "defs/images/edge.yaml",
                "kind: image\nbase: scratch\noutput: {format: tar}\npackages: [//packages:base, :local]\n",
            ),
        ];
        let Target::Image(image) = load(&files, "//images:edge") else {
            panic!("not an image")
        };
        let labels: Vec<String> = image.packages.iter().map(|l| l.value.to_string()).collect();
        assert_eq!(labels, ["//packages:base", "//images:local"]);
    }

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in [
            "nftables",
            "postgresql-15",
            "libstdc++6",
            "g++",
            "python3.11",
            "0ad",
        ] {
            assert!(is_package_name(ok), "{ok}");
        }
        for bad in ["", "a", "Nftables", "-x", ".x", "a_b", "a b", "nftables:arm64"] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }
}
