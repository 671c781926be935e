//! The dependency resolver of `w4b lock`: from requested package names to the closure of
//! Debian packages to install on a base image, with the reason each one is there.
//!
//! It is pure and deterministic: the same universe (in any order), base and requests give
//! the same [`Resolution`]. It is greedy like apt's, not an exhaustive solver: each
//! choice is made once, with the rules below, and a dead end is an error that names the
//! chain of packages that led to it, never a silent backtrack.
//!
//! Inputs: the *universe* of [`Candidate`]s (paragraphs of one or more repositories'
//! `Packages` indices, each tagged with the repository's position in the configured
//! order), the packages *installed* in the base (its `/var/lib/dpkg/status`,
//! [`read_status`]), the [`Request`]s (`postgresql-15`, `nftables (>= 1.0)`) and the
//! [`Options`] (target architecture, excluded names, whether to follow `Recommends`).
//!
//! Rules:
//! 1. Only packages of the target architecture or `all` exist; one architecture is
//!    installed (no multi-arch mixing). `name:any` is satisfied only by a package that is
//!    `Multi-Arch: allowed`; `name:native` and `name:<target>` by any package; any other
//!    qualifier by none.
//! 2. Among candidates of one name, the highest version that meets the constraint wins;
//!    equal versions from several repositories go to the first repository, then (for
//!    duplicates within one) to the smaller `Filename` and `SHA256`, so the input order
//!    never matters.
//! 3. `Pre-Depends` and `Depends` are followed, breadth first from the requests in the
//!    order given; `Recommends` only with [`Options::recommends`] (default off, like
//!    `--no-install-recommends`), and a `Recommends` that cannot be met is skipped.
//!    Relations restricted to other architectures or build profiles are dropped.
//! 4. A group of alternatives (`a | b`) is satisfied if any alternative is already
//!    satisfied by the closure or the base, checked in order; otherwise the first
//!    alternative with an installable candidate is chosen. Excluded names are skipped as
//!    alternatives; when every alternative is excluded or impossible it is an error.
//! 5. A virtual name (`Provides`, possibly versioned `(= v)`; an unversioned Provides
//!    never meets a versioned relation) is resolved by: a provider already chosen or
//!    installed; else a real package of that name; else the single provider; else the
//!    provider with the highest `Priority` (required > important > standard > optional >
//!    extra > none), then the smaller name.
//! 6. A requested package is installed at its best candidate, upgrading the base's
//!    copy when the candidate is newer (like `apt-get install`); a dependency already met
//!    by the base is not reinstalled and is listed in [`Resolution::from_base`].
//! 7. A base package too old for a versioned dependency is upgraded: its best candidate
//!    meeting the constraint enters the closure. When an upgrade leaves a base package's
//!    own `Depends` unmet (`foo (= old)`), that package is upgraded too, or it is an error.
//!    And like apt (`APT::Get::Upgrade-By-Source-Package`), when a package enters the
//!    closure, installed binaries of the same source package are upgraded to the
//!    candidate built from the same source version, when there is one.
//! 8. Once a name is chosen its version is fixed; a later relation the chosen version
//!    does not meet is an error naming both chains.
//! 9. `Conflicts` and `Breaks` between chosen packages, or between a chosen package and
//!    a base package it does not replace, are errors naming both (a package that
//!    conflicts with a virtual name it provides itself is the usual idiom and is fine).
//!
//! Complexity: indexing is O(n log n) in the universe; each requested or pulled-in
//! package costs a few map lookups per relation. Measured (tests/it/resolve.rs, debug
//! build): indexing 66 579 bookworm candidates and resolving the 113-package closure of
//! `postgresql-15 openssh-server nftables wireguard-tools` takes about 1 s, nearly all of
//! it the index.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::formats::deb::{
    Alternatives, ArchQualifier, Constraint, Paragraph, Relation, RelationError, Relations, Syntax, Version,
    VersionError,
};

/// `Multi-Arch` (the multiarch spec): only `allowed` matters with one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MultiArch {
    No,
    Same,
    Foreign,
    Allowed,
}

/// `Priority`, in order of preference when choosing among providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Required,
    Important,
    Standard,
    Optional,
    Extra,
    /// Absent or not one of the above.
    Unknown,
}

impl Priority {
    fn parse(text: Option<&str>) -> Priority {
        match text.map(str::trim) {
            Some("required") => Priority::Required,
            Some("important") => Priority::Important,
            Some("standard") => Priority::Standard,
            Some("optional") => Priority::Optional,
            Some("extra") => Priority::Extra,
            _ => Priority::Unknown,
        }
    }
}

/// A package's relations, as the resolver reads them from a `Packages` or `status`
/// paragraph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relationships {
    pub pre_depends: Relations,
    pub depends: Relations,
    pub recommends: Relations,
    /// `Provides`, one relation per provided name.
    pub provides: Vec<Relation>,
    pub conflicts: Relations,
    pub breaks: Relations,
}

/// One installable package of a repository (a `Packages` paragraph).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub version: Version,
    /// The source package and its version (`Source: name (version)`; both default to
    /// the binary's).
    pub source: String,
    pub source_version: Version,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    pub priority: Priority,
    pub relations: Relationships,
    /// The repository's position in the configured order (lower is preferred).
    pub repository: usize,
    /// `Filename`: the path below the repository's root.
    pub filename: String,
    /// `Size` in bytes.
    pub size: u64,
    /// `SHA256`, lower-case hex.
    pub sha256: String,
}

/// A package installed in the base (a `status` paragraph).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: Version,
    pub source: String,
    pub source_version: Version,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub relations: Relationships,
}

/// Why a paragraph does not describe a package.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PackageError {
    #[error("the paragraph on line {line} has no `{field}` field")]
    #[diagnostic(
        code(w4b::apt::missing_field),
        help("the index is corrupt or not a `Packages`/`status` file")
    )]
    MissingField { line: usize, field: &'static str },

    #[error("package `{package}` (line {line}) has an invalid `{field}`: `{value}`")]
    #[diagnostic(code(w4b::apt::bad_field), help("the index is corrupt"))]
    BadField {
        package: String,
        line: usize,
        field: &'static str,
        value: String,
    },

    #[error("package `{package}` (line {line}) has an invalid `Version`")]
    #[diagnostic(code(w4b::apt::bad_version))]
    Version {
        package: String,
        line: usize,
        #[source]
        source: VersionError,
    },

    #[error("package `{package}` (line {line}) has an invalid `{field}`")]
    #[diagnostic(code(w4b::apt::bad_relation))]
    Relation {
        package: String,
        line: usize,
        field: &'static str,
        #[source]
        source: RelationError,
    },

    #[error("the index is not valid control data (deb822)")]
    #[diagnostic(
        code(w4b::apt::bad_index),
        help("the `Packages` or `status` file is corrupt or truncated")
    )]
    Syntax(#[source] crate::formats::deb::ControlError),
}

/// The fields common to `Packages` and `status` paragraphs.
struct Common {
    name: String,
    version: Version,
    source: String,
    source_version: Version,
    architecture: String,
    multi_arch: MultiArch,
    relations: Relationships,
}

fn common(p: &Paragraph<'_>) -> Result<Common, PackageError> {
    let line = p.line();
    let required = |field: &'static str| p.get(field).ok_or(PackageError::MissingField { line, field });
    let name = required("Package")?.trim().to_owned();
    if !crate::formats::deb::relation::valid_package_name(&name) {
        return Err(PackageError::BadField {
            package: name.clone(),
            line,
            field: "Package",
            value: name,
        });
    }
    let version = Version::parse(required("Version")?).map_err(|source| PackageError::Version {
        package: name.clone(),
        line,
        source,
    })?;
    let (source, source_version) = match p.get("Source").map(str::trim) {
        None | Some("") => (name.clone(), version.clone()),
        Some(text) => match text.split_once('(') {
            None => (text.to_owned(), version.clone()),
            Some((src, rest)) => {
                let v = rest.strip_suffix(')').unwrap_or(rest);
                let v = Version::parse(v).map_err(|source| PackageError::Version {
                    package: name.clone(),
                    line,
                    source,
                })?;
                (src.trim().to_owned(), v)
            }
        },
    };
    let architecture = required("Architecture")?.trim().to_owned();
    let multi_arch = match p.get("Multi-Arch").map(str::trim) {
        None | Some("no") => MultiArch::No,
        Some("same") => MultiArch::Same,
        Some("foreign") => MultiArch::Foreign,
        Some("allowed") => MultiArch::Allowed,
        Some(other) => {
            return Err(PackageError::BadField {
                package: name,
                line,
                field: "Multi-Arch",
                value: other.to_owned(),
            })
        }
    };
    let rel = |field: &'static str| -> Result<Relations, PackageError> {
        match p.get(field) {
            None => Ok(Relations::default()),
            Some(v) => Relations::parse(v).map_err(|source| PackageError::Relation {
                package: name.clone(),
                line,
                field,
                source,
            }),
        }
    };
    let relations = Relationships {
        pre_depends: rel("Pre-Depends")?,
        depends: rel("Depends")?,
        recommends: rel("Recommends")?,
        provides: rel("Provides")?.0.into_iter().flat_map(|g| g.0).collect(),
        conflicts: rel("Conflicts")?,
        breaks: rel("Breaks")?,
    };
    Ok(Common {
        name,
        version,
        source,
        source_version,
        architecture,
        multi_arch,
        relations,
    })
}

impl Candidate {
    /// Reads a `Packages` paragraph of the repository at position `repository`.
    pub fn from_paragraph(p: &Paragraph<'_>, repository: usize) -> Result<Candidate, PackageError> {
        let c = common(p)?;
        let line = p.line();
        let required = |field: &'static str| p.get(field).ok_or(PackageError::MissingField { line, field });
        let bad = |field: &'static str, value: &str| PackageError::BadField {
            package: c.name.clone(),
            line,
            field,
            value: value.to_owned(),
        };
        let filename = required("Filename")?.trim().to_owned();
        if filename.is_empty() || filename.starts_with('/') || filename.split('/').any(|s| s == "..") {
            return Err(bad("Filename", &filename));
        }
        let size_text = required("Size")?.trim();
        let size = size_text.parse::<u64>().map_err(|_| bad("Size", size_text))?;
        let sha256 = required("SHA256")?.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("SHA256", &sha256));
        }
        Ok(Candidate {
            essential: p.get("Essential").is_some_and(|v| v.trim() == "yes"),
            priority: Priority::parse(p.get("Priority")),
            name: c.name,
            version: c.version,
            source: c.source,
            source_version: c.source_version,
            architecture: c.architecture,
            multi_arch: c.multi_arch,
            relations: c.relations,
            repository,
            filename,
            size,
            sha256,
        })
    }

    /// Reads every paragraph of a `Packages` index of the repository at `repository`.
    pub fn read_index(text: &str, repository: usize) -> Result<Vec<Candidate>, PackageError> {
        crate::formats::deb::Paragraphs::new(text, Syntax::Strict)
            .map(|p| {
                p.map_err(PackageError::Syntax)
                    .and_then(|p| Candidate::from_paragraph(&p, repository))
            })
            .collect()
    }
}

impl Installed {
    /// Reads a `status` paragraph: `None` unless its `Status` is `<want> ok installed`
    /// (half-installed, config-files-only and unpacked packages satisfy nothing).
    pub fn from_status_paragraph(p: &Paragraph<'_>) -> Result<Option<Installed>, PackageError> {
        let status: Vec<&str> = p.get("Status").unwrap_or("").split_whitespace().collect();
        if !matches!(status.as_slice(), [_, "ok", "installed"]) {
            return Ok(None);
        }
        let c = common(p)?;
        Ok(Some(Installed {
            name: c.name,
            version: c.version,
            source: c.source,
            source_version: c.source_version,
            architecture: c.architecture,
            multi_arch: c.multi_arch,
            relations: c.relations,
        }))
    }
}

/// The installed packages of a base's `/var/lib/dpkg/status`.
pub fn read_status(text: &str) -> Result<Vec<Installed>, PackageError> {
    let mut out = Vec::new();
    for p in crate::formats::deb::Paragraphs::new(text, Syntax::Strict) {
        let p = p.map_err(PackageError::Syntax)?;
        if let Some(i) = Installed::from_status_paragraph(&p)? {
            out.push(i);
        }
    }
    Ok(out)
}

/// A requested package: a name and an optional version constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub constraint: Option<Constraint>,
}

impl Request {
    /// Parses `name` or `name (op version)`.
    pub fn parse(text: &str) -> Result<Request, ResolveError> {
        let bad = |why: String| ResolveError::BadRequest {
            request: text.to_owned(),
            why,
        };
        let rels = Relations::parse(text).map_err(|e| bad(e.why))?;
        match rels.0.as_slice() {
            [Alternatives(alts)] => match alts.as_slice() {
                [r] if r.qualifier.is_none() && r.archs.is_empty() && r.profiles.is_empty() => Ok(Request {
                    name: r.name.clone(),
                    constraint: r.constraint.clone(),
                }),
                [_] => Err(bad(String::from(
                    "qualifiers and restrictions have no meaning here",
                ))),
                _ => Err(bad(String::from("alternatives (`|`) cannot be requested"))),
            },
            _ => Err(bad(String::from("one package per request"))),
        }
    }

    fn relation(&self) -> Relation {
        Relation {
            name: self.name.clone(),
            qualifier: None,
            constraint: self.constraint.clone(),
            archs: Vec::new(),
            profiles: Vec::new(),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.relation())
    }
}

/// How to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The target architecture (`arm64`, `armhf`); `all` packages are always included.
    pub architecture: String,
    /// Names never to install (as a request, a dependency or a provider).
    pub exclude: BTreeSet<String>,
    /// Follow `Recommends` (default: no).
    pub recommends: bool,
}

impl Options {
    pub fn new(architecture: impl Into<String>) -> Options {
        Options {
            architecture: architecture.into(),
            exclude: BTreeSet::new(),
            recommends: false,
        }
    }
}

/// The relationship field that pulled a package in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepField {
    PreDepends,
    Depends,
    Recommends,
}

impl DepField {
    pub fn as_str(self) -> &'static str {
        match self {
            DepField::PreDepends => "Pre-Depends",
            DepField::Depends => "Depends",
            DepField::Recommends => "Recommends",
        }
    }
}

/// Why a package is in the closure (or used from the base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Named in the requests.
    Requested,
    /// `of`'s `field` holds `relation`, which this package satisfies.
    Dependency {
        of: String,
        field: DepField,
        relation: String,
    },
    /// A base package upgraded because the upgrade of `upgraded` broke its `relation`.
    Upgrade { upgraded: String, relation: String },
    /// A base package upgraded along with `of`, a binary of the same source package.
    SameSource { of: String, source: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Requested => f.write_str("requested"),
            Reason::Dependency { of, field, relation } => {
                write!(f, "`{of}` {}: `{relation}`", field.as_str())
            }
            Reason::Upgrade { upgraded, relation } => {
                write!(f, "upgrading `{upgraded}` breaks the base's `{relation}`")
            }
            Reason::SameSource { of, source } => {
                write!(f, "upgraded with `{of}` (both from source `{source}`)")
            }
        }
    }
}

/// A package of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen<'u> {
    pub candidate: &'u Candidate,
    /// The base's version this replaces, when it is an upgrade.
    pub upgrades: Option<Version>,
    /// Every reason, the first being the one that pulled it in.
    pub reasons: Vec<Reason>,
}

/// A base package that satisfies a relation of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromBase {
    pub name: String,
    pub version: Version,
    pub reasons: Vec<Reason>,
}

/// The result: what to install, sorted by name, and what the base already provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution<'u> {
    pub install: Vec<Chosen<'u>>,
    pub from_base: Vec<FromBase>,
}

/// Why a set of packages cannot be resolved. `chain` reads `a → b → c (>= 1)`: the
/// request, the packages that led on, and the relation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum ResolveError {
    #[error("`{request}` is not a valid package request: {why}")]
    #[diagnostic(
        code(w4b::apt::bad_request),
        help("a request is a package name with an optional version: `nftables` or `nftables (>= 1.0)`")
    )]
    BadRequest { request: String, why: String },

    #[error("`{chain}`: no package `{name}` in the repositories for `{architecture}`")]
    #[diagnostic(
        code(w4b::apt::unknown_package),
        help("check the name (`apt-cache search`) and that the repositories and components that carry it are configured")
    )]
    Unknown {
        chain: String,
        name: String,
        architecture: String,
    },

    #[error("`{chain}` → no candidate; the repositories have {available}")]
    #[diagnostic(
        code(w4b::apt::no_candidate),
        help("add a repository that carries a matching version, or relax the constraint")
    )]
    NoCandidate { chain: String, available: String },

    #[error("`{chain}`: `{name}` is excluded")]
    #[diagnostic(
        code(w4b::apt::excluded),
        help("remove `{name}` from `exclude`, or drop the package that needs it")
    )]
    Excluded { chain: String, name: String },

    #[error(
        "`{chain}`: `{name}` {version} is already chosen (for `{chosen_for}`) and does not satisfy this"
    )]
    #[diagnostic(
        code(w4b::apt::version_clash),
        help("the resolver does not backtrack: request the version that satisfies both explicitly (`{name} (= ...)`)")
    )]
    VersionClash {
        chain: String,
        name: String,
        version: String,
        chosen_for: String,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Conflict(Box<ConflictError>),

    #[error("upgrading `{upgraded}` breaks the base's `{package}` (`{relation}`), and no candidate of `{package}` fixes it")]
    #[diagnostic(
        code(w4b::apt::broken_base),
        help("`{upgraded}` is upgraded for `{chain}`; use a base image with newer packages, or request versions that match the base")
    )]
    BrokenBase {
        upgraded: String,
        package: String,
        relation: String,
        chain: String,
    },
}

/// Two packages that cannot be installed together (rule 9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("`{a}` {a_version} {field} `{relation}`, which `{b}` {b_version} matches")]
#[diagnostic(
    code(w4b::apt::conflict),
    help("`{a}` is here for `{a_chain}`, `{b}` for `{b_chain}`; exclude one, or pick an alternative that avoids it")
)]
pub struct ConflictError {
    pub a: String,
    pub a_version: String,
    pub a_chain: String,
    pub field: &'static str,
    pub relation: String,
    pub b: String,
    pub b_version: String,
    pub b_chain: String,
}

/// One resolution in progress; see the module doc for the rules.
struct Solver<'u> {
    universe: &'u [Candidate],
    options: &'u Options,
    /// Candidates by name, best first (rule 2).
    by_name: BTreeMap<&'u str, Vec<usize>>,
    /// Providers by virtual name: (candidate, provided version).
    providers: BTreeMap<&'u str, Vec<(usize, Option<&'u Version>)>>,
    base: BTreeMap<&'u str, &'u Installed>,
    /// Base packages by source package name.
    base_by_source: BTreeMap<&'u str, Vec<&'u Installed>>,
    base_providers: BTreeMap<&'u str, Vec<(&'u Installed, Option<&'u Version>)>>,
    chosen: BTreeMap<&'u str, (usize, Vec<Reason>)>,
    from_base: BTreeMap<&'u str, Vec<Reason>>,
    queue: VecDeque<(&'u str, DepField, &'u Alternatives)>,
}

/// What satisfies a relation.
enum Met {
    Chosen,
    Base(String),
}

/// Why an alternative could not be chosen, for the error.
enum Miss {
    Unknown(String),
    NoVersion(String),
    Excluded(String),
    Clash(String),
}

/// Resolves `requests` over `universe` on top of `base` (see the module doc).
pub fn resolve<'u>(
    universe: &'u [Candidate],
    base: &'u [Installed],
    requests: &[Request],
    options: &'u Options,
) -> Result<Resolution<'u>, ResolveError> {
    let arch_ok = |a: &str| a == options.architecture || a == "all";
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut providers: BTreeMap<&str, Vec<(usize, Option<&Version>)>> = BTreeMap::new();
    for (i, c) in universe.iter().enumerate() {
        if !arch_ok(&c.architecture) {
            continue;
        }
        by_name.entry(&c.name).or_default().push(i);
        for p in &c.relations.provides {
            providers
                .entry(&p.name)
                .or_default()
                .push((i, provided_version(p)));
        }
    }
    let preference = |&a: &usize, &b: &usize| {
        let (x, y) = (&universe[a], &universe[b]);
        y.version
            .cmp(&x.version)
            .then(x.repository.cmp(&y.repository))
            .then_with(|| x.filename.cmp(&y.filename))
            .then_with(|| x.sha256.cmp(&y.sha256))
            .then(a.cmp(&b))
    };
    for list in by_name.values_mut() {
        list.sort_by(preference);
    }
    for list in providers.values_mut() {
        list.sort_by(|a, b| preference(&a.0, &b.0));
    }
    let mut base_map: BTreeMap<&str, &Installed> = BTreeMap::new();
    for i in base.iter().filter(|i| arch_ok(&i.architecture)) {
        let slot = base_map.entry(&i.name).or_insert(i);
        if i.version > slot.version {
            *slot = i;
        }
    }
    let mut base_providers: BTreeMap<&str, Vec<(&Installed, Option<&Version>)>> = BTreeMap::new();
    for i in base_map.values() {
        for p in &i.relations.provides {
            base_providers
                .entry(&p.name)
                .or_default()
                .push((i, provided_version(p)));
        }
    }

    let mut base_by_source: BTreeMap<&str, Vec<&Installed>> = BTreeMap::new();
    for i in base_map.values() {
        base_by_source.entry(&i.source).or_default().push(i);
    }
    let mut s = Solver {
        universe,
        options,
        by_name,
        providers,
        base: base_map,
        base_by_source,
        base_providers,
        chosen: BTreeMap::new(),
        from_base: BTreeMap::new(),
        queue: VecDeque::new(),
    };
    for r in requests {
        s.request(r)?;
    }
    loop {
        s.drain()?;
        if !s.repair_base()? {
            break;
        }
    }
    s.check_conflicts()?;

    let install = s
        .chosen
        .iter()
        .map(|(name, (i, reasons))| Chosen {
            candidate: &universe[*i],
            upgrades: s.base.get(name).map(|b| b.version.clone()),
            reasons: reasons.clone(),
        })
        .collect();
    let from_base = s
        .from_base
        .iter()
        .filter(|(name, _)| !s.chosen.contains_key(*name))
        .filter_map(|(name, reasons)| {
            s.base.get(name).map(|b| FromBase {
                name: b.name.clone(),
                version: b.version.clone(),
                reasons: reasons.clone(),
            })
        })
        .collect();
    Ok(Resolution { install, from_base })
}

/// The version a `Provides` entry provides: only `(= v)` provides a version.
fn provided_version(p: &Relation) -> Option<&Version> {
    p.constraint
        .as_ref()
        .filter(|c| c.op == crate::formats::deb::Op::Eq)
        .map(|c| &c.version)
}

/// Whether a provided version meets `rel` (an unversioned Provides meets only an
/// unversioned relation).
fn provides_meets(rel: &Relation, provided: Option<&Version>) -> bool {
    match (&rel.constraint, provided) {
        (None, _) => true,
        (Some(c), Some(v)) => c.satisfied_by(v),
        (Some(_), None) => false,
    }
}

impl<'u> Solver<'u> {
    /// Whether a package with this architecture and Multi-Arch meets `rel`'s qualifier.
    fn qualifier_ok(&self, rel: &Relation, multi_arch: MultiArch) -> bool {
        match &rel.qualifier {
            None | Some(ArchQualifier::Native) => true,
            Some(ArchQualifier::Any) => multi_arch == MultiArch::Allowed,
            Some(ArchQualifier::Arch(a)) => *a == self.options.architecture,
        }
    }

    fn applies(&self, rel: &Relation) -> bool {
        rel.applies_to_arch(&self.options.architecture) && rel.applies_to_profiles(&[])
    }

    /// Whether the closure or the base already meets `rel` (rule 4 and 5, first part).
    fn met(&self, rel: &Relation) -> Option<Met> {
        if let Some(&(i, _)) = self.chosen.get(rel.name.as_str()) {
            let c = &self.universe[i];
            if rel.satisfied_by(&c.version) && self.qualifier_ok(rel, c.multi_arch) {
                return Some(Met::Chosen);
            }
        } else if let Some(b) = self.base.get(rel.name.as_str()) {
            if rel.satisfied_by(&b.version) && self.qualifier_ok(rel, b.multi_arch) {
                return Some(Met::Base(b.name.clone()));
            }
        }
        for &(i, v) in self.providers.get(rel.name.as_str()).into_iter().flatten() {
            let c = &self.universe[i];
            let is_chosen = self.chosen.get(c.name.as_str()).is_some_and(|&(j, _)| j == i);
            if is_chosen && provides_meets(rel, v) && self.qualifier_ok(rel, c.multi_arch) {
                return Some(Met::Chosen);
            }
        }
        for &(b, v) in self.base_providers.get(rel.name.as_str()).into_iter().flatten() {
            if !self.chosen.contains_key(b.name.as_str())
                && provides_meets(rel, v)
                && self.qualifier_ok(rel, b.multi_arch)
            {
                return Some(Met::Base(b.name.clone()));
            }
        }
        None
    }

    /// The candidate to install for `rel` (rule 2 and 5), or why there is none.
    fn pick(&self, rel: &Relation) -> Result<usize, Miss> {
        if self.options.exclude.contains(&rel.name) {
            return Err(Miss::Excluded(rel.name.clone()));
        }
        if let Some(&(i, _)) = self.chosen.get(rel.name.as_str()) {
            // Chosen, and `met` found it lacking: its version is fixed (rule 8).
            return Err(Miss::Clash(self.universe[i].name.clone()));
        }
        if let Some(list) = self.by_name.get(rel.name.as_str()) {
            if let Some(&i) = list.iter().find(|&&i| {
                let c = &self.universe[i];
                rel.satisfied_by(&c.version) && self.qualifier_ok(rel, c.multi_arch)
            }) {
                return Ok(i);
            }
        }
        let mut options: Vec<usize> = self
            .providers
            .get(rel.name.as_str())
            .into_iter()
            .flatten()
            .filter(|&&(i, v)| {
                let c = &self.universe[i];
                provides_meets(rel, v)
                    && self.qualifier_ok(rel, c.multi_arch)
                    && !self.options.exclude.contains(&c.name)
                    // A provider whose name is chosen at another version cannot be added.
                    && self.chosen.get(c.name.as_str()).is_none_or(|&(j, _)| j == i)
            })
            .map(|&(i, _)| i)
            .collect();
        // A stable sort: within one name the providers stay in preference order.
        options.sort_by(|&a, &b| {
            let (x, y) = (&self.universe[a], &self.universe[b]);
            x.priority.cmp(&y.priority).then_with(|| x.name.cmp(&y.name))
        });
        if let Some(&i) = options.first() {
            return Ok(i);
        }
        match self.by_name.get(rel.name.as_str()) {
            Some(list) => {
                let mut versions: Vec<String> = list
                    .iter()
                    .map(|&i| format!("`{}`", self.universe[i].version))
                    .collect();
                versions.dedup();
                Err(Miss::NoVersion(versions.join(", ")))
            }
            None if self.providers.contains_key(rel.name.as_str()) => Err(Miss::NoVersion(String::from(
                "providers of it, but none that matches (or none that is not excluded)",
            ))),
            None => Err(Miss::Unknown(rel.name.clone())),
        }
    }

    /// Adds candidate `i` to the closure and queues its relations.
    fn add(&mut self, i: usize, reason: Reason) {
        let universe = self.universe;
        let c = &universe[i];
        self.chosen.insert(&c.name, (i, vec![reason]));
        let r = &c.relations;
        for g in &r.pre_depends.0 {
            self.queue.push_back((&c.name, DepField::PreDepends, g));
        }
        for g in &r.depends.0 {
            self.queue.push_back((&c.name, DepField::Depends, g));
        }
        if self.options.recommends {
            for g in &r.recommends.0 {
                self.queue.push_back((&c.name, DepField::Recommends, g));
            }
        }
        // Rule 7, third part (apt's `APT::Get::Upgrade-By-Source-Package`): installed
        // binaries of the same source follow to the same source version, so a library
        // and its `-dev` or client package never straddle two builds.
        let siblings: Vec<usize> = self
            .base_by_source
            .get(c.source.as_str())
            .into_iter()
            .flatten()
            .filter(|b| b.name != c.name && !self.chosen.contains_key(b.name.as_str()))
            .filter(|b| !self.options.exclude.contains(&b.name))
            .filter_map(|b| {
                self.by_name.get(b.name.as_str())?.iter().copied().find(|&j| {
                    let s = &universe[j];
                    s.source == c.source && s.source_version == c.source_version && s.version > b.version
                })
            })
            .collect();
        for j in siblings {
            if !self.chosen.contains_key(universe[j].name.as_str()) {
                self.add(
                    j,
                    Reason::SameSource {
                        of: c.name.clone(),
                        source: c.source.clone(),
                    },
                );
            }
        }
    }

    fn note(&mut self, met: Met, reason: Reason, rel_name: &str) {
        match met {
            Met::Chosen => {
                // The name satisfying it: the package itself or the chosen provider.
                let name = match self.chosen.get(rel_name) {
                    Some(_) => Some(rel_name.to_owned()),
                    None => self
                        .providers
                        .get(rel_name)
                        .into_iter()
                        .flatten()
                        .find_map(|&(i, _)| {
                            let n = self.universe[i].name.as_str();
                            (self.chosen.get(n).map(|&(j, _)| j) == Some(i)).then(|| n.to_owned())
                        }),
                };
                if let Some((_, reasons)) = name.and_then(|n| self.chosen.get_mut(n.as_str())) {
                    if !reasons.contains(&reason) {
                        reasons.push(reason);
                    }
                }
            }
            Met::Base(name) => {
                if let Some(b) = self.base.get(name.as_str()) {
                    let reasons = self.from_base.entry(&b.name).or_default();
                    if !reasons.contains(&reason) {
                        reasons.push(reason);
                    }
                }
            }
        }
    }

    /// A requested package (rule 6).
    fn request(&mut self, r: &Request) -> Result<(), ResolveError> {
        let rel = r.relation();
        let chain = r.to_string();
        if self.options.exclude.contains(&r.name) {
            return Err(ResolveError::Excluded {
                chain,
                name: r.name.clone(),
            });
        }
        if let Some(met) = self.met(&rel) {
            // Already in the closure, or in the base with nothing newer to install.
            let newer = match &met {
                Met::Base(n) if *n == r.name => self.pick(&rel).ok().filter(|&i| {
                    self.base
                        .get(r.name.as_str())
                        .is_some_and(|b| self.universe[i].version > b.version)
                }),
                _ => None,
            };
            match newer {
                Some(i) => self.add(i, Reason::Requested),
                None => self.note(met, Reason::Requested, &r.name),
            }
            return Ok(());
        }
        match self.pick(&rel) {
            Ok(i) => {
                self.add(i, Reason::Requested);
                Ok(())
            }
            Err(miss) => Err(self.miss_error(miss, chain)),
        }
    }

    fn miss_error(&self, miss: Miss, chain: String) -> ResolveError {
        match miss {
            Miss::Unknown(name) => ResolveError::Unknown {
                chain,
                name,
                architecture: self.options.architecture.clone(),
            },
            Miss::NoVersion(available) => ResolveError::NoCandidate { chain, available },
            Miss::Excluded(name) => ResolveError::Excluded { chain, name },
            Miss::Clash(name) => {
                let (version, chosen_for) = match self.chosen.get(name.as_str()) {
                    Some(&(i, _)) => (self.universe[i].version.to_string(), self.chain(&name)),
                    None => (String::new(), String::new()),
                };
                ResolveError::VersionClash {
                    chain,
                    name,
                    version,
                    chosen_for,
                }
            }
        }
    }

    /// `request → … → name`, following each package's first reason.
    fn chain(&self, name: &str) -> String {
        let mut names = vec![name.to_owned()];
        let mut at = name.to_owned();
        // Each step moves to an earlier-chosen package, so the walk ends; the bound is a
        // guard against a bug, not a limit real closures reach.
        for _ in 0..=self.chosen.len() {
            let next = match self.chosen.get(at.as_str()).and_then(|(_, r)| r.first()) {
                Some(Reason::Dependency { of, .. }) => of.clone(),
                Some(Reason::Upgrade { upgraded, .. }) => upgraded.clone(),
                Some(Reason::SameSource { of, .. }) => of.clone(),
                _ => break,
            };
            names.push(next.clone());
            at = next;
        }
        names.reverse();
        names.join(" → ")
    }

    /// Processes queued relation groups until none is left (rules 3–5, 7, 8).
    fn drain(&mut self) -> Result<(), ResolveError> {
        while let Some((of, field, group)) = self.queue.pop_front() {
            let alts: Vec<&'u Relation> = group.0.iter().filter(|r| self.applies(r)).collect();
            if alts.is_empty() {
                continue;
            }
            let reason = Reason::Dependency {
                of: of.to_owned(),
                field,
                relation: group.to_string(),
            };
            if let Some((met, rel)) = alts.iter().find_map(|r| self.met(r).map(|m| (m, *r))) {
                self.note(met, reason, &rel.name);
                continue;
            }
            let mut first_miss = None;
            let mut picked = None;
            for rel in &alts {
                match self.pick(rel) {
                    Ok(i) => {
                        picked = Some(i);
                        break;
                    }
                    Err(m) => {
                        first_miss.get_or_insert(m);
                    }
                }
            }
            match (picked, first_miss) {
                (Some(i), _) => self.add(i, reason),
                (None, _) if field == DepField::Recommends => {}
                (None, miss) => {
                    let chain = format!("{} → {}", self.chain(of), group);
                    let miss = miss.unwrap_or_else(|| Miss::Unknown(group.to_string()));
                    return Err(self.miss_error(miss, chain));
                }
            }
        }
        Ok(())
    }

    /// Rule 7, second part: upgrades base packages whose `Pre-Depends`/`Depends` an
    /// upgrade broke. Returns whether anything was added.
    fn repair_base(&mut self) -> Result<bool, ResolveError> {
        let mut fixes: Vec<(usize, Reason)> = Vec::new();
        for (name, b) in &self.base {
            if self.chosen.contains_key(name) {
                continue;
            }
            let r = &b.relations;
            for g in r.pre_depends.0.iter().chain(&r.depends.0) {
                let alts: Vec<&Relation> = g.0.iter().filter(|r| self.applies(r)).collect();
                let touched = alts.iter().find(|r| {
                    self.chosen.contains_key(r.name.as_str()) && self.base.contains_key(r.name.as_str())
                });
                let Some(upgraded) = touched else { continue };
                if alts.iter().any(|r| self.met(r).is_some()) {
                    continue;
                }
                let fix = self
                    .by_name
                    .get(name)
                    .and_then(|l| l.first())
                    .copied()
                    .filter(|&i| {
                        self.universe[i].version > b.version && !self.options.exclude.contains(&b.name)
                    });
                match fix {
                    Some(i) => {
                        fixes.push((
                            i,
                            Reason::Upgrade {
                                upgraded: upgraded.name.clone(),
                                relation: g.to_string(),
                            },
                        ));
                        break;
                    }
                    None => {
                        return Err(ResolveError::BrokenBase {
                            upgraded: upgraded.name.clone(),
                            package: b.name.clone(),
                            relation: g.to_string(),
                            chain: self.chain(&upgraded.name),
                        })
                    }
                }
            }
        }
        let added = !fixes.is_empty();
        for (i, reason) in fixes {
            self.add(i, reason);
        }
        Ok(added)
    }

    /// Rule 9.
    fn check_conflicts(&self) -> Result<(), ResolveError> {
        // Everything present after installation: name → (version, relations, chosen?).
        let mut present: BTreeMap<&str, (&Version, &Relationships, bool)> = BTreeMap::new();
        for (name, b) in &self.base {
            present.insert(name, (&b.version, &b.relations, false));
        }
        for (name, &(i, _)) in &self.chosen {
            let c = &self.universe[i];
            present.insert(name, (&c.version, &c.relations, true));
        }
        let mut provided: BTreeMap<&str, Vec<(&str, Option<&Version>)>> = BTreeMap::new();
        for (name, (_, rels, _)) in &present {
            for p in &rels.provides {
                provided
                    .entry(&p.name)
                    .or_default()
                    .push((name, provided_version(p)));
            }
        }
        for (a, (a_version, rels, a_chosen)) in &present {
            for (field, list) in [("Conflicts", &rels.conflicts), ("Breaks", &rels.breaks)] {
                for rel in list.0.iter().flat_map(|g| &g.0).filter(|r| self.applies(r)) {
                    let mut hits: Vec<&str> = Vec::new();
                    if let Some((v, _, _)) = present.get(rel.name.as_str()) {
                        if rel.name != *a && rel.satisfied_by(v) {
                            hits.push(&rel.name);
                        }
                    }
                    for &(p, v) in provided.get(rel.name.as_str()).into_iter().flatten() {
                        if p != *a && provides_meets(rel, v) {
                            hits.push(p);
                        }
                    }
                    for b in hits {
                        let Some((b_version, _, b_chosen)) = present.get(b) else {
                            continue;
                        };
                        if !a_chosen && !b_chosen {
                            continue;
                        }
                        let chain_of = |n: &str| {
                            if self.chosen.contains_key(n) {
                                self.chain(n)
                            } else {
                                String::from("the base")
                            }
                        };
                        return Err(ResolveError::Conflict(Box::new(ConflictError {
                            a: (*a).to_owned(),
                            a_version: a_version.to_string(),
                            a_chain: chain_of(a),
                            field,
                            relation: rel.to_string(),
                            b: b.to_owned(),
                            b_version: b_version.to_string(),
                            b_chain: chain_of(b),
                        })));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::deb::control;

    /// A candidate from `name version [Field: value]...` of the target architecture.
    fn cand(name: &str, version: &str, fields: &[(&str, &str)]) -> Candidate {
        cand_in(0, name, version, fields)
    }

    fn cand_in(repo: usize, name: &str, version: &str, fields: &[(&str, &str)]) -> Candidate {
        let mut text = format!("Package: {name}\nVersion: {version}\n");
        if !fields.iter().any(|(f, _)| *f == "Architecture") {
            text.push_str("Architecture: arm64\n");
        }
        for (f, v) in fields {
            text.push_str(&format!("{f}: {v}\n"));
        }
        let digest = blake3::hash(format!("{repo}{name}{version}").as_bytes()).to_hex();
        text.push_str(&format!(
            "Filename: pool/main/{name}_{version}.deb\nSize: 100\nSHA256: {digest}\n"
        ));
        let p = control::parse_single(&text, Syntax::Strict).unwrap().unwrap();
        Candidate::from_paragraph(&p, repo).unwrap()
    }

    fn installed(name: &str, version: &str, fields: &[(&str, &str)]) -> Installed {
        let mut text = format!(
            "Package: {name}\nStatus: install ok installed\nVersion: {version}\nArchitecture: arm64\n"
        );
        for (f, v) in fields {
            text.push_str(&format!("{f}: {v}\n"));
        }
        read_status(&text).unwrap().remove(0)
    }

    fn req(list: &[&str]) -> Vec<Request> {
        list.iter().map(|r| Request::parse(r).unwrap()).collect()
    }

    fn opts() -> Options {
        Options::new("arm64")
    }

    /// `name=version` of the closure, sorted by name.
    fn names(r: &Resolution<'_>) -> Vec<String> {
        r.install
            .iter()
            .map(|c| format!("{}={}", c.candidate.name, c.candidate.version))
            .collect()
    }

    fn run(
        universe: &[Candidate],
        base: &[Installed],
        requests: &[&str],
    ) -> Result<Vec<String>, ResolveError> {
        let o = opts();
        resolve(universe, base, &req(requests), &o).map(|r| names(&r))
    }

    #[test]
    fn follows_depends_and_pre_depends_and_records_reasons() {
        let u = vec![
            cand(
                "app",
                "1.0",
                &[
                    ("Depends", "libfoo (>= 1.0), tool"),
                    ("Pre-Depends", "init-system-helpers"),
                ],
            ),
            cand("libfoo", "1.2", &[("Depends", "libc6")]),
            cand("tool", "2", &[]),
            cand("libc6", "2.36", &[]),
            cand("init-system-helpers", "1.65", &[]),
            cand("unrelated", "1", &[]),
        ];
        let o = opts();
        let r = resolve(&u, &[], &req(&["app"]), &o).unwrap();
        assert_eq!(
            names(&r),
            [
                "app=1.0",
                "init-system-helpers=1.65",
                "libc6=2.36",
                "libfoo=1.2",
                "tool=2"
            ]
        );
        let reason = |n: &str| r.install.iter().find(|c| c.candidate.name == n).unwrap().reasons[0].clone();
        assert_eq!(reason("app"), Reason::Requested);
        assert_eq!(
            reason("libfoo"),
            Reason::Dependency {
                of: "app".into(),
                field: DepField::Depends,
                relation: "libfoo (>= 1.0)".into()
            }
        );
        assert_eq!(
            reason("init-system-helpers"),
            Reason::Dependency {
                of: "app".into(),
                field: DepField::PreDepends,
                relation: "init-system-helpers".into()
            }
        );
        assert_eq!(reason("libc6").to_string(), "`libfoo` Depends: `libc6`");
    }

    #[test]
    fn the_highest_version_wins_unless_a_constraint_says_otherwise() {
        let u = vec![
            cand("libfoo", "1.0", &[]),
            cand("libfoo", "2.0", &[]),
            cand("libfoo", "1:0.1", &[]),
            cand("old-app", "1", &[("Depends", "libfoo (<< 1:0)")]),
        ];
        assert_eq!(run(&u, &[], &["libfoo"]).unwrap(), ["libfoo=1:0.1"]);
        assert_eq!(run(&u, &[], &["libfoo (<< 2)"]).unwrap(), ["libfoo=1.0"]);
        assert_eq!(run(&u, &[], &["old-app"]).unwrap(), ["libfoo=2.0", "old-app=1"]);
    }

    #[test]
    fn equal_versions_go_to_the_first_repository() {
        let u = vec![
            cand_in(1, "libfoo", "1.0", &[]),
            cand_in(0, "libfoo", "1.0", &[]),
            cand_in(2, "libfoo", "0.9", &[]),
        ];
        let o = opts();
        let r = resolve(&u, &[], &req(&["libfoo"]), &o).unwrap();
        assert_eq!(r.install[0].candidate.repository, 0);
        let u = vec![cand_in(0, "libfoo", "1.0", &[]), cand_in(1, "libfoo", "1.1", &[])];
        let r = resolve(&u, &[], &req(&["libfoo"]), &o).unwrap();
        assert_eq!(
            r.install[0].candidate.repository, 1,
            "a higher version beats repository order"
        );
    }

    #[test]
    fn alternatives_prefer_what_is_already_there_then_the_first_installable() {
        let u = vec![
            cand(
                "app",
                "1",
                &[("Depends", "default-mta | mail-transport-agent, awk-a | awk-b")],
            ),
            cand("default-mta", "1", &[("Provides", "mail-transport-agent")]),
            cand("postfix", "1", &[("Provides", "mail-transport-agent")]),
            cand("awk-b", "1", &[]),
            cand("other", "1", &[("Depends", "postfix")]),
        ];
        // Nothing there: the first alternative with a candidate, skipping `awk-a`.
        assert_eq!(
            run(&u, &[], &["app"]).unwrap(),
            ["app=1", "awk-b=1", "default-mta=1"]
        );
        // A provider already chosen satisfies the second alternative.
        assert_eq!(
            run(&u, &[], &["other", "app"]).unwrap(),
            ["app=1", "awk-b=1", "other=1", "postfix=1"]
        );
        // A provider in the base does too, and is listed as used from the base.
        let base = [installed(
            "exim4",
            "4.96",
            &[("Provides", "mail-transport-agent")],
        )];
        let o = opts();
        let r = resolve(&u, &base, &req(&["app"]), &o).unwrap();
        assert_eq!(names(&r), ["app=1", "awk-b=1"]);
        assert_eq!(r.from_base.len(), 1);
        assert_eq!(r.from_base[0].name, "exim4");
    }

    #[test]
    fn virtual_packages_real_single_priority_then_name() {
        let base_u = vec![cand("app", "1", &[("Depends", "virt")])];
        let with = |extra: Vec<Candidate>| {
            let mut u = base_u.clone();
            u.extend(extra);
            run(&u, &[], &["app"]).unwrap()
        };
        // A real package of the name beats providers.
        assert_eq!(
            with(vec![
                cand("virt", "1", &[]),
                cand("aaa", "1", &[("Provides", "virt")])
            ]),
            ["app=1", "virt=1"]
        );
        // The single provider.
        assert_eq!(
            with(vec![cand("zzz", "1", &[("Provides", "virt")])]),
            ["app=1", "zzz=1"]
        );
        // Priority first, then the name.
        assert_eq!(
            with(vec![
                cand("aaa", "1", &[("Provides", "virt"), ("Priority", "optional")]),
                cand("zzz", "1", &[("Provides", "virt"), ("Priority", "important")]),
                cand("mmm", "1", &[("Provides", "virt"), ("Priority", "important")]),
            ]),
            ["app=1", "mmm=1"]
        );
    }

    #[test]
    fn versioned_provides() {
        let u = vec![
            cand("app", "1", &[("Depends", "libfoo-abi (>= 2)")]),
            cand("libfoo1", "1", &[("Provides", "libfoo-abi (= 1)")]),
            cand("libfoo2", "1", &[("Provides", "libfoo-abi (= 2)")]),
            cand("libfoo-any", "1", &[("Provides", "libfoo-abi")]),
        ];
        assert_eq!(run(&u, &[], &["app"]).unwrap(), ["app=1", "libfoo2=1"]);
        let u2 = vec![u[0].clone(), u[1].clone(), u[3].clone()];
        let err = run(&u2, &[], &["app"]).unwrap_err();
        assert!(matches!(err, ResolveError::NoCandidate { .. }), "{err}");
    }

    #[test]
    fn base_packages_satisfy_or_get_upgraded() {
        let u = vec![
            cand("app", "1", &[("Depends", "libssl3 (>= 3.0.11), libc6")]),
            cand("libssl3", "3.0.13-1", &[]),
            cand("libc6", "2.36-9+deb12u4", &[]),
        ];
        let base = [
            installed("libssl3", "3.0.9-1", &[]),
            installed("libc6", "2.36-9", &[]),
        ];
        let o = opts();
        let r = resolve(&u, &base, &req(&["app"]), &o).unwrap();
        assert_eq!(names(&r), ["app=1", "libssl3=3.0.13-1"]);
        assert_eq!(r.install[1].upgrades, Some(Version::parse("3.0.9-1").unwrap()));
        assert_eq!(
            r.from_base.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
            ["libc6"]
        );
        // Requesting a base package installs its newer candidate, like `apt-get install`.
        let r = resolve(&u, &base, &req(&["libc6"]), &o).unwrap();
        assert_eq!(names(&r), ["libc6=2.36-9+deb12u4"]);
        // ... and nothing when the base has the newest.
        let base = [installed("libc6", "2.36-9+deb12u4", &[])];
        let r = resolve(&u, &base, &req(&["libc6"]), &o).unwrap();
        assert!(r.install.is_empty());
        assert_eq!(r.from_base[0].reasons, [Reason::Requested]);
    }

    #[test]
    fn an_upgrade_that_breaks_a_base_package_upgrades_it_too() {
        let u = vec![
            cand("app", "1", &[("Depends", "libpq5 (>= 15.10)")]),
            cand("libpq5", "15.10-0", &[]),
            cand("libpq-dev", "15.10-0", &[("Depends", "libpq5 (= 15.10-0)")]),
        ];
        let base = [
            installed("libpq5", "15.8-0", &[]),
            installed("libpq-dev", "15.8-0", &[("Depends", "libpq5 (= 15.8-0)")]),
        ];
        let o = opts();
        let r = resolve(&u, &base, &req(&["app"]), &o).unwrap();
        assert_eq!(names(&r), ["app=1", "libpq-dev=15.10-0", "libpq5=15.10-0"]);
        assert!(matches!(&r.install[1].reasons[0], Reason::Upgrade { upgraded, .. } if upgraded == "libpq5"));
        // Without a newer libpq-dev, it is an error.
        let err = resolve(&u[..2], &base, &req(&["app"]), &o).unwrap_err();
        assert!(
            matches!(&err, ResolveError::BrokenBase { package, .. } if package == "libpq-dev"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "upgrading `libpq5` breaks the base's `libpq-dev` (`libpq5 (= 15.8-0)`), and no candidate of `libpq-dev` fixes it"
        );
    }

    #[test]
    fn errors_name_the_chain() {
        let u = vec![
            cand(
                "postgresql-15",
                "15.8-0+deb12u1",
                &[("Depends", "libpq5 (>= 15.10)")],
            ),
            cand("libpq5", "15.8-0+deb12u1", &[]),
            cand("app", "1", &[("Depends", "postgresql-15, missing-lib")]),
        ];
        let err = run(&u, &[], &["postgresql-15"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`postgresql-15 → libpq5 (>= 15.10)` → no candidate; the repositories have `15.8-0+deb12u1`"
        );
        let u2 = vec![cand("libpq5", "15.10", &[]), u[0].clone(), u[2].clone()];
        let err = run(&u2, &[], &["app"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`app → missing-lib`: no package `missing-lib` in the repositories for `arm64`"
        );
        let err = run(&u2, &[], &["nope"]).unwrap_err();
        assert!(matches!(err, ResolveError::Unknown { .. }));
        let err = run(&u2, &[], &["libpq5 (>= 16)"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`libpq5 (>= 16)` → no candidate; the repositories have `15.10`"
        );
    }

    #[test]
    fn excluded_packages() {
        let u = vec![
            cand("app", "1", &[("Depends", "systemd-sysv | sysvinit-core, libfoo")]),
            cand("systemd-sysv", "252", &[]),
            cand("sysvinit-core", "3.06", &[]),
            cand("libfoo", "1", &[]),
        ];
        let mut o = opts();
        o.exclude.insert("systemd-sysv".into());
        let r = resolve(&u, &[], &req(&["app"]), &o).unwrap();
        assert_eq!(names(&r), ["app=1", "libfoo=1", "sysvinit-core=3.06"]);
        o.exclude.insert("libfoo".into());
        let err = resolve(&u, &[], &req(&["app"]), &o).unwrap_err();
        assert_eq!(err.to_string(), "`app → libfoo`: `libfoo` is excluded");
        let err = resolve(&u, &[], &req(&["libfoo"]), &o).unwrap_err();
        assert!(matches!(err, ResolveError::Excluded { .. }));
    }

    #[test]
    fn conflicts_and_breaks() {
        let u = vec![
            cand("a1", "1", &[("Depends", "b1")]),
            cand("b1", "1", &[("Conflicts", "c1")]),
            cand("c1", "1", &[]),
            cand("d1", "2", &[("Breaks", "e1 (<< 2)")]),
            cand("e1", "1", &[]),
            cand(
                "mta",
                "1",
                &[
                    ("Provides", "mail-transport-agent"),
                    ("Conflicts", "mail-transport-agent"),
                ],
            ),
        ];
        let err = run(&u, &[], &["a1", "c1"]).unwrap_err();
        let ResolveError::Conflict(c) = &err else {
            panic!("{err}")
        };
        let ConflictError {
            a, b, field, a_chain, ..
        } = &**c;
        assert_eq!(
            (a.as_str(), b.as_str(), *field, a_chain.as_str()),
            ("b1", "c1", "Conflicts", "a1 → b1")
        );
        assert_eq!(err.to_string(), "`b1` 1 Conflicts `c1`, which `c1` 1 matches");
        assert!(matches!(
            run(&u, &[], &["d1", "e1"]),
            Err(ResolveError::Conflict(_))
        ));
        // With the base: a chosen package that breaks an installed one.
        let base = [installed("e1", "1", &[])];
        assert!(matches!(run(&u, &base, &["d1"]), Err(ResolveError::Conflict(_))));
        // An installed package that conflicts with a chosen one.
        let base = [installed("old", "1", &[("Conflicts", "c1")])];
        assert!(matches!(run(&u, &base, &["c1"]), Err(ResolveError::Conflict(_))));
        // Provides + Conflicts of the same virtual name is fine.
        assert_eq!(run(&u, &[], &["mta"]).unwrap(), ["mta=1"]);
    }

    #[test]
    fn a_fixed_version_that_a_later_relation_rejects_is_a_clash() {
        let u = vec![
            cand("a1", "1", &[("Depends", "lib1, b1")]),
            cand("b1", "1", &[("Depends", "lib1 (<< 2)")]),
            cand("lib1", "2", &[]),
            cand("lib1", "1", &[]),
        ];
        let err = run(&u, &[], &["a1"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`a1 → b1 → lib1 (<< 2)`: `lib1` 2 is already chosen (for `a1 → lib1`) and does not satisfy this"
        );
        // Requesting the version that satisfies both works.
        assert_eq!(
            run(&u, &[], &["lib1 (<< 2)", "a1"]).unwrap(),
            ["a1=1", "b1=1", "lib1=1"]
        );
    }

    #[test]
    fn architectures_and_multi_arch() {
        let u = vec![
            cand(
                "app",
                "1",
                &[("Depends", "python3:any, data, libx:arm64, liby:native")],
            ),
            cand("python3", "3.11", &[("Multi-Arch", "allowed")]),
            cand("data", "1", &[("Architecture", "all")]),
            cand("data", "2", &[("Architecture", "amd64")]),
            cand("libx", "1", &[]),
            cand("liby", "1", &[]),
            cand("only-amd64", "1", &[("Architecture", "amd64")]),
        ];
        assert_eq!(
            run(&u, &[], &["app"]).unwrap(),
            ["app=1", "data=1", "libx=1", "liby=1", "python3=3.11"]
        );
        assert!(matches!(
            run(&u, &[], &["only-amd64"]),
            Err(ResolveError::Unknown { .. })
        ));
        let mut u2 = u.clone();
        u2[1] = cand("python3", "3.11", &[]);
        assert!(matches!(
            run(&u2, &[], &["app"]),
            Err(ResolveError::NoCandidate { .. })
        ));
        let u3 = vec![
            cand("app", "1", &[("Depends", "libz:amd64")]),
            cand("libz", "1", &[]),
        ];
        assert!(run(&u3, &[], &["app"]).is_err());
    }

    #[test]
    fn recommends_only_when_asked_and_never_fatal() {
        let u = vec![
            cand("app", "1", &[("Recommends", "extra, missing")]),
            cand("extra", "1", &[]),
        ];
        assert_eq!(run(&u, &[], &["app"]).unwrap(), ["app=1"]);
        let mut o = opts();
        o.recommends = true;
        let r = resolve(&u, &[], &req(&["app"]), &o).unwrap();
        assert_eq!(names(&r), ["app=1", "extra=1"]);
        assert_eq!(r.install[1].reasons[0].to_string(), "`app` Recommends: `extra`");
    }

    #[test]
    fn the_universe_order_does_not_matter() {
        let u = vec![
            cand("app", "1", &[("Depends", "virt, lib (>= 1), alt-a | alt-b")]),
            cand_in(0, "lib", "1.5", &[]),
            cand_in(1, "lib", "1.5", &[]),
            cand_in(1, "lib", "1.4", &[]),
            cand("p1", "1", &[("Provides", "virt")]),
            cand("p2", "1", &[("Provides", "virt")]),
            cand("alt-b", "1", &[("Depends", "lib")]),
            cand("alt-a", "1", &[("Architecture", "armhf")]),
        ];
        let o = opts();
        let want = resolve(&u, &[], &req(&["app"]), &o).unwrap();
        let summary = |r: &Resolution<'_>| {
            r.install
                .iter()
                .map(|c| (c.candidate.clone(), c.reasons.clone()))
                .collect::<Vec<_>>()
        };
        let mut shuffled = u.clone();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20 {
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let got = resolve(&shuffled, &[], &req(&["app"]), &o).unwrap();
            assert_eq!(summary(&got), summary(&want));
        }
        assert_eq!(names(&want), ["alt-b=1", "app=1", "lib=1.5", "p1=1"]);
        assert_eq!(want.install[2].candidate.repository, 0);
    }

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse("nftables").unwrap().to_string(), "nftables");
        let r = Request::parse(" nftables (>= 1.0) ").unwrap();
        assert_eq!(r.constraint.unwrap().to_string(), ">= 1.0");
        for bad in ["a | b", "a, b", "python3:any", "Bad", ""] {
            assert!(
                matches!(Request::parse(bad), Err(ResolveError::BadRequest { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_keeps_installed_packages_only() {
        let text = "Package: a1\nStatus: install ok installed\nVersion: 1\nArchitecture: arm64\nProvides: v1 (= 2)\n\n\
                    Package: b1\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: arm64\n\n\
                    Package: c1\nStatus: hold ok installed\nVersion: 1\nArchitecture: all\n\n\
                    Package: d1\nStatus: install reinstreq half-installed\nVersion: 1\nArchitecture: arm64\n";
        let s = read_status(text).unwrap();
        assert_eq!(
            s.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["a1", "c1"]
        );
        assert_eq!(s[0].relations.provides[0].to_string(), "v1 (= 2)");
    }

    #[test]
    fn bad_paragraphs_are_errors_naming_the_package_and_line() {
        let bad = [
            ("Package: a1\nArchitecture: arm64\n", "the paragraph on line 1 has no `Version` field"),
            (
                "Package: a1\nVersion: 1\nArchitecture: arm64\nDepends: (x)\nFilename: a\nSize: 1\nSHA256: 00\n",
                "package `a1` (line 1) has an invalid `Depends`",
            ),
            (
                "Package: a1\nVersion: 1\nArchitecture: arm64\nFilename: a\nSize: x\nSHA256: 00\n",
                "package `a1` (line 1) has an invalid `Size`: `x`",
            ),
            (
                "Package: a1\nVersion: 1\nArchitecture: arm64\nFilename: ../a\nSize: 1\nSHA256: 00\n",
                "package `a1` (line 1) has an invalid `Filename`: `../a`",
            ),
        ];
        for (text, want) in bad {
            let err = Candidate::read_index(text, 0).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
