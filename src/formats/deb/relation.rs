//! Relationship fields (Debian Policy §7.1, §7.5; deb-src-control(5) for restrictions):
//! `Depends`, `Pre-Depends`, `Recommends`, `Suggests`, `Conflicts`, `Breaks`,
//! `Provides`, `Replaces`.
//!
//! A field is a comma-separated list of groups that must all hold; a group is a
//! `|`-separated list of alternatives of which one must hold. An alternative is
//!
//! ```text
//! name[:qualifier] [(op version)] [[arch ...]] [<profile ...>]...
//! ```
//!
//! - `op` is `<<`, `<=`, `=`, `>=` or `>>`; the obsolete `<` and `>` mean `<=` and `>=`
//!   (Policy §7.1), as dpkg still reads them.
//! - the qualifier is `any`, `native` or an architecture name (Multi-Arch, §7.1 and the
//!   multiarch spec).
//! - `[amd64 !armel]` restricts the alternative to (or away from) architectures; the
//!   list is all positive or all negated. `linux-any` and `any-<cpu>` wildcards match the
//!   Linux architectures Debian ships.
//! - `<!nocheck> <stage1 cross>` are build profiles: the alternative applies when any one
//!   formula (a space-separated conjunction of possibly negated profile names) holds.
//!
//! Restrictions appear in source packages' build dependencies; parsing them everywhere
//! lets callers drop alternatives that do not apply ([`Relations::restrict`]) instead of
//! failing on them.

// Parses untrusted bytes: no unchecked arithmetic or indexing (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::fmt;

use super::version::{Version, VersionError};

/// A version comparison in a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `<<`
    Lt,
    /// `<=` (and the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }
}

/// `(op version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub op: Op,
    pub version: Version,
}

impl Constraint {
    /// Whether `version` satisfies the constraint.
    pub fn satisfied_by(&self, version: &Version) -> bool {
        let ord = version.cmp(&self.version);
        match self.op {
            Op::Lt => ord.is_lt(),
            Op::Le => ord.is_le(),
            Op::Eq => ord.is_eq(),
            Op::Ge => ord.is_ge(),
            Op::Gt => ord.is_gt(),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.version)
    }
}

/// The architecture qualifier after `name:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchQualifier {
    /// `:any`: satisfied by a package of any architecture that is `Multi-Arch: allowed`.
    Any,
    /// `:native`: the native architecture.
    Native,
    /// `:arm64` and the like.
    Arch(String),
}

/// One term of an architecture restriction list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchTerm {
    pub negated: bool,
    pub arch: String,
}

/// One term of a build-profile formula.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileTerm {
    pub negated: bool,
    pub profile: String,
}

/// One alternative: a package name with optional qualifier, version and restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub qualifier: Option<ArchQualifier>,
    pub constraint: Option<Constraint>,
    /// `[...]`, empty when absent.
    pub archs: Vec<ArchTerm>,
    /// `<...> <...>`: a disjunction of conjunctions, empty when absent.
    pub profiles: Vec<Vec<ProfileTerm>>,
}

impl Relation {
    /// Whether a package at `version` meets the version constraint (always, without one).
    pub fn satisfied_by(&self, version: &Version) -> bool {
        self.constraint.as_ref().is_none_or(|c| c.satisfied_by(version))
    }

    /// Whether the architecture restriction admits `arch` (always, without one).
    pub fn applies_to_arch(&self, arch: &str) -> bool {
        if self.archs.is_empty() {
            return true;
        }
        let negated = self.archs.iter().all(|t| t.negated);
        let hit = self.archs.iter().any(|t| arch_matches(&t.arch, arch));
        if negated {
            !hit
        } else {
            hit
        }
    }

    /// Whether the build-profile formula holds for the `active` profiles (always,
    /// without one).
    pub fn applies_to_profiles(&self, active: &[&str]) -> bool {
        self.profiles.is_empty()
            || self.profiles.iter().any(|conj| {
                conj.iter()
                    .all(|t| active.contains(&t.profile.as_str()) != t.negated)
            })
    }
}

/// Whether the architecture (or wildcard) `pattern` of a restriction matches the concrete
/// architecture `arch`. Debian's Linux architectures are `<cpu>` names, so `linux-any`
/// and `any` match all of them and `any-<cpu>` matches `<cpu>`.
pub fn arch_matches(pattern: &str, arch: &str) -> bool {
    match pattern {
        "any" | "linux-any" => true,
        _ => match pattern.strip_prefix("any-") {
            Some(cpu) => cpu == arch,
            None => pattern == arch,
        },
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.qualifier {
            None => {}
            Some(ArchQualifier::Any) => f.write_str(":any")?,
            Some(ArchQualifier::Native) => f.write_str(":native")?,
            Some(ArchQualifier::Arch(a)) => write!(f, ":{a}")?,
        }
        if let Some(c) = &self.constraint {
            write!(f, " ({c})")?;
        }
        if !self.archs.is_empty() {
            let terms: Vec<String> = self
                .archs
                .iter()
                .map(|t| format!("{}{}", if t.negated { "!" } else { "" }, t.arch))
                .collect();
            write!(f, " [{}]", terms.join(" "))?;
        }
        for conj in &self.profiles {
            let terms: Vec<String> = conj
                .iter()
                .map(|t| format!("{}{}", if t.negated { "!" } else { "" }, t.profile))
                .collect();
            write!(f, " <{}>", terms.join(" "))?;
        }
        Ok(())
    }
}

/// A group of alternatives (`a | b`): one must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternatives(pub Vec<Relation>);

impl fmt::Display for Alternatives {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A whole relationship field: every group must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations(pub Vec<Alternatives>);

impl Relations {
    /// Parses a field value (folded or not; line breaks are white space). An empty value
    /// is an empty list; a trailing comma is accepted, as dpkg does.
    pub fn parse(text: &str) -> Result<Relations, RelationError> {
        let mut groups = Vec::new();
        let items: Vec<&str> = text.split(',').collect();
        let last = items.len().saturating_sub(1);
        for (i, item) in items.into_iter().enumerate() {
            if item.trim().is_empty() {
                if i == last {
                    break;
                }
                return Err(RelationError::new(text, "an empty entry between commas"));
            }
            let mut alts = Vec::new();
            for alt in item.split('|') {
                alts.push(parse_relation(alt).map_err(|why| RelationError::new(text, why))?);
            }
            groups.push(Alternatives(alts));
        }
        Ok(Relations(groups))
    }

    /// The relations that apply on `arch` with the `active` build profiles: alternatives
    /// whose restrictions exclude them are dropped, and groups left empty with them
    /// (Policy §7.1: such a relation is ignored).
    pub fn restrict(&self, arch: &str, active: &[&str]) -> Relations {
        Relations(
            self.0
                .iter()
                .filter_map(|g| {
                    let kept: Vec<Relation> =
                        g.0.iter()
                            .filter(|r| r.applies_to_arch(arch) && r.applies_to_profiles(active))
                            .cloned()
                            .collect();
                    (!kept.is_empty()).then_some(Alternatives(kept))
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Alternatives> {
        self.0.iter()
    }
}

impl fmt::Display for Relations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

/// Why a relationship field could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("the relationship field `{field}` is invalid: {why}")]
#[diagnostic(
    code(w4b::deb::relation::invalid),
    help("relations look like `libc6 (>= 2.36), default-mta | mail-transport-agent` (Debian Policy §7.1)")
)]
pub struct RelationError {
    /// The field value (shortened to 200 characters).
    pub field: String,
    pub why: String,
}

impl RelationError {
    fn new(field: &str, why: impl Into<String>) -> RelationError {
        let mut shown: String = field.split_whitespace().collect::<Vec<_>>().join(" ");
        if shown.chars().count() > 200 {
            shown = shown.chars().take(200).chain("…".chars()).collect();
        }
        RelationError {
            field: shown,
            why: why.into(),
        }
    }
}

/// Whether `name` is a valid package name (Policy §5.6.1): at least two characters of
/// `a-z0-9+-.`, starting with a letter or digit.
pub fn valid_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.'))
}

/// A cursor over one alternative's text.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    /// Takes characters up to (not including) white space or one of `stops`.
    fn word(&mut self, stops: &[char]) -> &'a str {
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || stops.contains(&c))
            .unwrap_or(self.rest.len());
        let (w, r) = self.rest.split_at(end);
        self.rest = r;
        w
    }

    /// Takes everything up to `close`, consuming it.
    fn until(&mut self, close: char) -> Option<&'a str> {
        let (inside, r) = self.rest.split_once(close)?;
        self.rest = r;
        Some(inside)
    }
}

fn parse_relation(text: &str) -> Result<Relation, String> {
    let mut c = Cursor { rest: text };
    c.skip_ws();
    let name = c.word(&[':', '(', '[', '<']);
    if name.is_empty() {
        return Err(String::from("an alternative without a package name"));
    }
    if !valid_package_name(name) {
        return Err(format!("`{name}` is not a valid package name"));
    }
    let qualifier = if c.eat(':') {
        let q = c.word(&['(', '[', '<']);
        Some(match q {
            "any" => ArchQualifier::Any,
            "native" => ArchQualifier::Native,
            "" => return Err(format!("`{name}:` has an empty architecture qualifier")),
            a if a
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                ArchQualifier::Arch(a.to_owned())
            }
            a => return Err(format!("`{a}` is not an architecture qualifier")),
        })
    } else {
        None
    };
    c.skip_ws();
    let mut constraint = None;
    if c.eat('(') {
        let inside = c
            .until(')')
            .ok_or_else(|| format!("the version constraint of `{name}` has no `)`"))?;
        let inside = inside.trim();
        let (op, rest) = [
            ("<<", Op::Lt),
            ("<=", Op::Le),
            (">=", Op::Ge),
            (">>", Op::Gt),
            ("=", Op::Eq),
            ("<", Op::Le),
            (">", Op::Ge),
        ]
        .into_iter()
        .find_map(|(p, op)| inside.strip_prefix(p).map(|r| (op, r)))
        .ok_or_else(|| format!("`({inside})` has no operator (`<<`, `<=`, `=`, `>=`, `>>`)"))?;
        let version =
            Version::parse(rest).map_err(|e: VersionError| format!("`{name}` has a bad version: {e}"))?;
        constraint = Some(Constraint { op, version });
        c.skip_ws();
    }
    let mut archs = Vec::new();
    if c.eat('[') {
        let inside = c
            .until(']')
            .ok_or_else(|| format!("the architecture list of `{name}` has no `]`"))?;
        for term in inside.split_whitespace() {
            let (negated, arch) = match term.strip_prefix('!') {
                Some(a) => (true, a),
                None => (false, term),
            };
            if arch.is_empty() || !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!("`{term}` is not an architecture"));
            }
            archs.push(ArchTerm {
                negated,
                arch: arch.to_owned(),
            });
        }
        if archs.is_empty() {
            return Err(format!("the architecture list of `{name}` is empty"));
        }
        let negs = archs.iter().filter(|t| t.negated).count();
        if negs != 0 && negs != archs.len() {
            return Err(format!(
                "the architecture list of `{name}` mixes negated and plain architectures"
            ));
        }
        c.skip_ws();
    }
    let mut profiles = Vec::new();
    while c.eat('<') {
        let inside = c
            .until('>')
            .ok_or_else(|| format!("a build profile of `{name}` has no `>`"))?;
        let mut conj = Vec::new();
        for term in inside.split_whitespace() {
            let (negated, profile) = match term.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, term),
            };
            if profile.is_empty()
                || !profile
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'+'))
            {
                return Err(format!("`{term}` is not a build profile"));
            }
            conj.push(ProfileTerm {
                negated,
                profile: profile.to_owned(),
            });
        }
        if conj.is_empty() {
            return Err(format!("a build profile formula of `{name}` is empty"));
        }
        profiles.push(conj);
        c.skip_ws();
    }
    if let Some(ch) = c.peek() {
        return Err(format!("unexpected `{ch}` after `{name}`"));
    }
    Ok(Relation {
        name: name.to_owned(),
        qualifier,
        constraint,
        archs,
        profiles,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // tests index their own fixtures
mod tests {
    use super::*;

    fn ver(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_groups_alternatives_and_constraints() {
        let r = Relations::parse(
            "libc6 (>= 2.36), default-mta | mail-transport-agent,\n libssl3 (>=3.0.0), python3:any (<< 3.12),\n foo (= 1:2-3)",
        )
        .unwrap();
        assert_eq!(r.0.len(), 5);
        assert_eq!(r.0[1].0.len(), 2);
        assert_eq!(r.0[1].0[1].name, "mail-transport-agent");
        let libc = &r.0[0].0[0];
        assert_eq!(libc.constraint.as_ref().unwrap().op, Op::Ge);
        assert!(libc.satisfied_by(&ver("2.36-9")));
        assert!(!libc.satisfied_by(&ver("2.35")));
        let py = &r.0[3].0[0];
        assert_eq!(py.qualifier, Some(ArchQualifier::Any));
        assert!(py.satisfied_by(&ver("3.11.2-1")) && !py.satisfied_by(&ver("3.12")));
        assert_eq!(
            r.to_string(),
            "libc6 (>= 2.36), default-mta | mail-transport-agent, libssl3 (>= 3.0.0), python3:any (<< 3.12), foo (= 1:2-3)"
        );
    }

    #[test]
    fn every_operator_compares_as_policy_says() {
        let cases = [
            ("<<", "1.0", [true, false, false]),
            ("<=", "1.0", [true, true, false]),
            ("<", "1.0", [true, true, false]),
            ("=", "1.0", [false, true, false]),
            (">=", "1.0", [false, true, true]),
            (">", "1.0", [false, true, true]),
            (">>", "1.0", [false, false, true]),
        ];
        for (op, v, want) in cases {
            let r = Relations::parse(&format!("a0 ({op} {v})")).unwrap();
            let rel = &r.0[0].0[0];
            let got = ["0.9", "1.0-0", "1.0.1"].map(|x| rel.satisfied_by(&ver(x)));
            assert_eq!(got, want, "{op}");
        }
    }

    #[test]
    fn restrictions_are_parsed_and_applied() {
        let r = Relations::parse(
            "libfoo [amd64 arm64] <!nocheck>, libbar [!armel !armhf], libqux <stage1 cross> <!stage1>, gcc-arm [any-arm64]",
        )
        .unwrap();
        assert_eq!(r.0[0].0[0].archs.len(), 2);
        assert_eq!(r.0[2].0[0].profiles.len(), 2);
        let names = |rs: &Relations| rs.0.iter().map(|g| g.0[0].name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&r.restrict("arm64", &[])),
            ["libfoo", "libbar", "libqux", "gcc-arm"]
        );
        assert_eq!(names(&r.restrict("armhf", &["nocheck"])), ["libqux"]);
        assert_eq!(names(&r.restrict("armhf", &["stage1"])), Vec::<String>::new());
        assert_eq!(
            names(&r.restrict("amd64", &["stage1", "cross"])),
            ["libfoo", "libbar", "libqux"]
        );
        assert_eq!(names(&r.restrict("armel", &["stage1"])), Vec::<String>::new());
    }

    #[test]
    fn provides_with_versions_and_qualifiers() {
        let r = Relations::parse("mail-transport-agent, libfoo-abi (= 3), gcc:arm64, xx:native").unwrap();
        assert_eq!(r.0[1].0[0].constraint.as_ref().unwrap().version, ver("3"));
        assert_eq!(r.0[2].0[0].qualifier, Some(ArchQualifier::Arch("arm64".into())));
        assert_eq!(r.0[3].0[0].qualifier, Some(ArchQualifier::Native));
    }

    #[test]
    fn empty_and_trailing_commas() {
        assert!(Relations::parse("").unwrap().is_empty());
        assert!(Relations::parse("  \n ").unwrap().is_empty());
        assert_eq!(Relations::parse("a1, b2,").unwrap().0.len(), 2);
        assert!(Relations::parse("a1, , b2").is_err());
        assert!(Relations::parse("a1 | , b2").is_err());
    }

    #[test]
    fn rejects_malformed_relations() {
        for bad in [
            "Libc6",
            "a",
            "libc6 (2.36)",
            "libc6 (>= 2.36",
            "libc6 (>= )",
            "libc6 [amd64 !arm64]",
            "libc6 [amd64",
            "libc6 []",
            "libc6 <>",
            "libc6 <nocheck",
            "libc6 junk",
            "libc6:",
            "libc6:Any",
            "libc6 (>= 1 0)",
        ] {
            let err = Relations::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("is invalid"), "{bad}: {err}");
        }
    }
}
