//! `w4b.lock`: what `w4b lock` resolved, and what a build installs (DESIGN §4).
//!
//! A build never reads a repository index. Each image that uses package sets installs
//! exactly the packages of its lock *entry*, fetched by sha256. An entry is named by what
//! the resolution depended on — the package sets (in the image's order), the architecture
//! and the base — so the hives of a fleet that share an image share one entry:
//!
//! ```text
//! //packages:hive + //packages:monitoring for arm64 on //bases:raspios-bookworm-arm64-lite
//! ```
//!
//! and it records `inputs`, a digest of those inputs' *typed* values (the sets as
//! [`PackageSet`] serialises them, the architecture, the base's pinned sha256), so a build
//! can tell at plan time, without any network, that the lock no longer matches the
//! definitions ("stale") and say which command fixes it.
//!
//! The file is JSON written in one fixed layout: keys in a fixed order, entries sorted by
//! name, packages sorted by name, **one package per line** — so a version bump is a
//! one-line diff and a merge conflict is readable. Writing is deterministic: the same
//! resolution writes the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::defs::{Arch, Label, PackageSet};

/// The lockfile's name, at the workspace root.
pub const LOCK_FILE: &str = "w4b.lock";

/// The format version this w4b writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// BLAKE3 derive-key context of an entry's `inputs` digest.
const INPUTS_CONTEXT: &str = "w4b 2026-12-05 lock entry inputs v1";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    /// Format version ([`LOCK_VERSION`]).
    pub version: u32,
    /// By [`entry_name`].
    pub entries: BTreeMap<String, Entry>,
}

/// One resolution: the closure of some package sets for one architecture and base.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// BLAKE3 (hex) of what the resolution read from the definitions ([`inputs_digest`]).
    pub inputs: String,
    pub architecture: String,
    /// The repositories as they were when resolved.
    pub repositories: Vec<LockedRepository>,
    /// Packages the base already had that satisfied the sets (name and version), sorted:
    /// not installed again, but recorded so a changed base is visible in a diff.
    #[serde(default)]
    pub base_packages: Vec<String>,
    /// What is installed, sorted by name.
    pub packages: Vec<LockedPackage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRepository {
    pub name: String,
    /// Redacted: never carries credentials.
    pub url: String,
    pub suite: String,
    /// The fingerprint of the key that signed `InRelease`; `None` for `trusted: true`.
    pub signed_by: Option<String>,
    /// The `Date:` of the `InRelease` that was resolved against.
    pub date: Option<String>,
    /// sha256 (hex) of that `InRelease`.
    pub release_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub size: u64,
    /// sha256 (hex, lower case) of the `.deb`, from the signed index chain.
    pub sha256: String,
    /// Which of the entry's repositories it comes from.
    pub repository: String,
    /// Its path below the repository's URL (`pool/main/o/openssh/openssh-server_…_arm64.deb`).
    pub filename: String,
}

impl LockedPackage {
    /// `name=version`, how `why` and messages show a package.
    pub fn spec(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// The name of the entry for `sets` (in the image's order) on `base` for `arch`.
pub fn entry_name(sets: &[Label], arch: Arch, base: Option<&Label>) -> String {
    let sets: Vec<String> = sets.iter().map(|l| l.to_string()).collect();
    match base {
        Some(base) => format!("{} for {} on {base}", sets.join(" + "), arch.name()),
        None => format!("{} for {} on scratch", sets.join(" + "), arch.name()),
    }
}

/// The digest that makes an entry current: the typed sets in order, the architecture and
/// the base's pinned sha256 (`None`: an empty base).
pub fn inputs_digest(sets: &[(&Label, &PackageSet)], arch: Arch, base_sha256: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Inputs<'a> {
        sets: Vec<(String, &'a PackageSet)>,
        architecture: &'a str,
        base_sha256: Option<&'a str>,
    }
    let inputs = Inputs {
        sets: sets.iter().map(|(l, s)| (l.to_string(), *s)).collect(),
        architecture: arch.name(),
        base_sha256,
    };
    // Serialising typed values with derived `Serialize` (fields in declaration order,
    // BTreeMaps sorted) cannot fail and is canonical.
    let json = serde_json::to_vec(&inputs).unwrap_or_default();
    let mut h = blake3::Hasher::new_derive_key(INPUTS_CONTEXT);
    h.update(&json);
    h.finalize().to_hex().to_string()
}

/// The name of the entry that bootstraps `base` from `sets` for `arch`:
/// `//packages:debian-bookworm-raspi for arm64 bootstrapping //bases:debian-bookworm-arm64`.
pub fn bootstrap_entry_name(sets: &[Label], arch: Arch, base: &Label) -> String {
    let sets: Vec<String> = sets.iter().map(|l| l.to_string()).collect();
    format!("{} for {} bootstrapping {base}", sets.join(" + "), arch.name())
}

/// The digest that makes a bootstrap entry current: the typed sets in order, the
/// architecture, and what the base adds to the sets' requests (`essential`, `priority`).
/// It also stands for the base in the `inputs` of the entries of images built on it
/// ([`inputs_digest`]'s `base_sha256`), so an image's entry goes stale with its base's.
pub fn bootstrap_inputs_digest(
    sets: &[(&Label, &PackageSet)],
    arch: Arch,
    essential: bool,
    priority: Option<crate::defs::BootstrapPriority>,
) -> String {
    #[derive(Serialize)]
    struct Inputs<'a> {
        sets: Vec<(String, &'a PackageSet)>,
        architecture: &'a str,
        essential: bool,
        priority: Option<crate::defs::BootstrapPriority>,
    }
    let inputs = Inputs {
        sets: sets.iter().map(|(l, s)| (l.to_string(), *s)).collect(),
        architecture: arch.name(),
        essential,
        priority,
    };
    let json = serde_json::to_vec(&inputs).unwrap_or_default();
    let mut h = blake3::Hasher::new_derive_key(BOOTSTRAP_INPUTS_CONTEXT);
    h.update(&json);
    h.finalize().to_hex().to_string()
}

/// The name of the pinned test kernel's entry (`crate::vmtest::test_kernel`), resolved on
/// no base: `//packages:w4b-test-kernel for arm64 booting tests`.
pub fn test_kernel_entry_name(set: &Label, arch: Arch) -> String {
    format!("{set} for {} booting tests", arch.name())
}

/// BLAKE3 derive-key context of a bootstrap entry's `inputs` digest.
const BOOTSTRAP_INPUTS_CONTEXT: &str = "w4b 2027-01-10 lock bootstrap entry inputs v1";

#[derive(Debug, Error, Diagnostic)]
pub enum LockError {
    #[error("`{path}` is not a lockfile w4b can read: {message}")]
    #[diagnostic(
        code(w4b::lock::unreadable),
        help("`w4b.lock` is written by `w4b lock`; restore it from version control, or delete it and run `w4b lock` again")
    )]
    Unreadable {
        path: String,
        message: String,
        #[source_code]
        src: NamedSource<String>,
        #[label("here")]
        at: Option<SourceSpan>,
    },
    #[error("`{path}` has format version {found}; this w4b reads version {LOCK_VERSION}")]
    #[diagnostic(
        code(w4b::lock::version),
        help("run the w4b that wrote it, or `w4b lock` to rewrite it in this version's format")
    )]
    Version { path: String, found: u32 },
}

impl Lockfile {
    pub fn new() -> Lockfile {
        Lockfile {
            version: LOCK_VERSION,
            entries: BTreeMap::new(),
        }
    }

    /// Parses the text of `path` (for messages).
    pub fn parse(path: &str, text: &str) -> Result<Lockfile, Box<LockError>> {
        let lock: Lockfile = serde_json::from_str(text).map_err(|e| {
            let at = offset_of(text, e.line(), e.column()).map(|o| SourceSpan::from((o, 0)));
            Box::new(LockError::Unreadable {
                path: path.to_owned(),
                message: e.to_string(),
                src: NamedSource::new(path, text.to_owned()),
                at,
            })
        })?;
        if lock.version != LOCK_VERSION {
            return Err(Box::new(LockError::Version {
                path: path.to_owned(),
                found: lock.version,
            }));
        }
        Ok(lock)
    }

    /// The file's text: fixed key order, two-space indents, one package per line, ending
    /// in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let _ = writeln!(out, "{{\n  \"version\": {},\n  \"entries\": {{", self.version);
        let n = self.entries.len();
        for (i, (name, e)) in self.entries.iter().enumerate() {
            let _ = writeln!(out, "    {}: {{", q(name));
            let _ = writeln!(out, "      \"inputs\": {},", q(&e.inputs));
            let _ = writeln!(out, "      \"architecture\": {},", q(&e.architecture));
            out.push_str("      \"repositories\": [");
            for (j, r) in e.repositories.iter().enumerate() {
                let line = serde_json::to_string(r).unwrap_or_default();
                let sep = if j + 1 < e.repositories.len() { "," } else { "" };
                let _ = write!(out, "\n        {line}{sep}");
            }
            out.push_str(if e.repositories.is_empty() {
                "],\n"
            } else {
                "\n      ],\n"
            });
            out.push_str("      \"base_packages\": [");
            for (j, p) in e.base_packages.iter().enumerate() {
                let sep = if j + 1 < e.base_packages.len() { "," } else { "" };
                let _ = write!(out, "\n        {}{sep}", q(p));
            }
            out.push_str(if e.base_packages.is_empty() {
                "],\n"
            } else {
                "\n      ],\n"
            });
            out.push_str("      \"packages\": [");
            for (j, p) in e.packages.iter().enumerate() {
                let line = serde_json::to_string(p).unwrap_or_default();
                let sep = if j + 1 < e.packages.len() { "," } else { "" };
                let _ = write!(out, "\n        {line}{sep}");
            }
            out.push_str(if e.packages.is_empty() {
                "]\n"
            } else {
                "\n      ]\n"
            });
            let sep = if i + 1 < n { "," } else { "" };
            let _ = writeln!(out, "    }}{sep}");
        }
        out.push_str("  }\n}\n");
        out
    }
}

/// The byte offset of 1-based `line`, `column` in `text`.
fn offset_of(text: &str, line: usize, column: usize) -> Option<usize> {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.checked_sub(1)?)
        .map(str::len)
        .sum();
    Some(start.saturating_add(column.saturating_sub(1)).min(text.len()))
}

/// How one package changed between two entries, for `w4b lock` and `why`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added(LockedPackage),
    Removed(LockedPackage),
    /// Same name, another version (or the same version with other bytes).
    Changed {
        old: LockedPackage,
        new: LockedPackage,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(p) => write!(f, "{}: added {}", p.name, p.version),
            Change::Removed(p) => write!(f, "{}: removed {}", p.name, p.version),
            Change::Changed { old, new } if old.version == new.version => write!(
                f,
                "{}: {} rebuilt (sha256 {} → {})",
                new.name,
                new.version,
                short(&old.sha256),
                short(&new.sha256)
            ),
            Change::Changed { old, new } => write!(f, "{}: {} → {}", new.name, old.version, new.version),
        }
    }
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// The package changes from `old` to `new`, by name.
pub fn changes(old: &[LockedPackage], new: &[LockedPackage]) -> Vec<Change> {
    let old: BTreeMap<&str, &LockedPackage> = old.iter().map(|p| (p.name.as_str(), p)).collect();
    let new: BTreeMap<&str, &LockedPackage> = new.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut out = Vec::new();
    for (name, o) in &old {
        match new.get(name) {
            None => out.push(Change::Removed((*o).clone())),
            Some(n) if n != o => out.push(Change::Changed {
                old: (*o).clone(),
                new: (*n).clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, n) in &new {
        if !old.contains_key(name) {
            out.push(Change::Added((*n).clone()));
        }
    }
    out.sort_by(|a, b| change_name(a).cmp(change_name(b)));
    out
}

fn change_name(c: &Change) -> &str {
    match c {
        Change::Added(p) | Change::Removed(p) => &p.name,
        Change::Changed { new, .. } => &new.name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            architecture: "arm64".into(),
            size: 1000,
            sha256: format!("{:0>64}", name.len()),
            repository: "debian-bookworm".into(),
            filename: format!("pool/main/{name}_{version}_arm64.deb"),
        }
    }

    fn sample() -> Lockfile {
        let mut lock = Lockfile::new();
        lock.entries.insert(
            "//packages:hive for arm64 on //bases:pi".into(),
            Entry {
                inputs: "ab".repeat(32),
                architecture: "arm64".into(),
                repositories: vec![LockedRepository {
                    name: "debian-bookworm".into(),
                    url: "http://127.0.0.1:8080/debian".into(),
                    suite: "bookworm".into(),
                    signed_by: Some("0123456789ABCDEF0123456789ABCDEF01234567".into()),
                    date: Some("Sat, 10 May 2025 09:00:00 UTC".into()),
                    release_sha256: "cd".repeat(32),
                }],
                base_packages: vec!["libc6=2.36-9+deb12u10".into()],
                packages: vec![
                    pkg("nftables", "1.0.6-2+deb12u2"),
                    pkg("wireguard-tools", "1.0.20210914-1"),
                ],
            },
        );
        lock
    }

    #[test]
    fn a_lockfile_renders_one_package_per_line_and_reads_back() {
        let lock = sample();
        let text = lock.render();
        insta::assert_snapshot!(text);
        assert_eq!(Lockfile::parse("w4b.lock", &text).unwrap(), lock);
        // Valid JSON that any tool reads.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(
            Lockfile::new().render(),
            "{\n  \"version\": 1,\n  \"entries\": {\n  }\n}\n"
        );
        assert_eq!(
            Lockfile::parse("w4b.lock", &Lockfile::new().render()).unwrap(),
            Lockfile::new()
        );
    }

    #[test]
    fn a_damaged_lockfile_is_an_error_at_its_line() {
        let text = sample().render().replace("\"size\":1000", "\"size\":\"big\"");
        let e = Lockfile::parse("w4b.lock", &text).unwrap_err();
        let LockError::Unreadable { at: Some(at), .. } = &*e else {
            panic!("{e:?}")
        };
        let line = text[..at.offset()].matches('\n').count() + 1;
        assert_eq!(
            text.lines().nth(line - 1).map(|l| l.contains("\"big\"")),
            Some(true)
        );
        let e = Lockfile::parse(
            "w4b.lock",
            &sample().render().replace("\"version\": 1", "\"version\": 7"),
        )
        .unwrap_err();
        assert!(matches!(*e, LockError::Version { found: 7, .. }), "{e:?}");
        let e = Lockfile::parse("w4b.lock", "{\"version\":1,\"entries\":{},\"extra\":1}").unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }

    #[test]
    fn changes_name_added_removed_and_moved_packages() {
        let old = vec![pkg("a", "1"), pkg("b", "1"), pkg("c", "1")];
        let new = vec![pkg("b", "2"), pkg("c", "1"), pkg("d", "1")];
        let text: Vec<String> = changes(&old, &new).iter().map(|c| c.to_string()).collect();
        assert_eq!(text, ["a: removed 1", "b: 1 → 2", "d: added 1"]);
    }
}
