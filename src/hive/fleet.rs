//! The fleet: every hive target of a workspace seen together, for what no single hive file
//! can know — that its `hive_id` and its VPN address (`security.wireguard.client_ip`) are
//! its own, which address a new hive gets, and what the hub needs to know of every hive.
//!
//! [`scan`] reads each hive target's merged document (`hives.defaults` under it, as every
//! build reads it) but types nothing: a fleet with one broken hive file still lists, and
//! still finds a free address. The values keep their spans, so a conflict is reported at
//! both files' lines ([`FleetProblem`]): over a whole pattern ([`check`]), or for one hive
//! against every other hive file ([`check_one`]). The hive's own rules stay with
//! [`super::convert`]; an address outside the subnet is one of them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

use crate::defs::workspace::VpnSubnet;
use crate::defs::yaml::Value;
use crate::defs::{DefsError, Kind, Label, Loader, Origin, Span};

/// One hive target as the fleet sees it: the values read from its merged document, each
/// with where it was written.
#[derive(Clone, Debug)]
pub struct Member {
    pub label: Label,
    /// The hive file, workspace-relative (`defs/hives/hive_AbCd1234.yaml`).
    pub file: String,
    pub hive_id: Option<(String, Span)>,
    /// `security.wireguard.client_ip` as written, and its address when it is `a.b.c.d/32`.
    pub client_ip: Option<(String, Option<Ipv4Addr>, Span)>,
    pub name: Option<String>,
    /// `metadata.location.address`, else the time zone.
    pub location: Option<String>,
    /// The image it builds on: its `image:` or `hives.image` of `w4b.yaml`.
    pub image: Option<String>,
    /// `security.wireguard.public_key`.
    pub public_key: Option<String>,
}

impl Member {
    /// The hive id, or the label's name when the file has none.
    pub fn id(&self) -> &str {
        self.hive_id
            .as_ref()
            .map_or(&self.label.name, |(id, _)| id.as_str())
    }

    pub fn address(&self) -> Option<Ipv4Addr> {
        self.client_ip.as_ref().and_then(|(_, a, _)| *a)
    }
}

/// The hive targets among `labels` (others are skipped), in label order, and the problems
/// of the files that could not be read at all.
pub fn scan(loader: &Loader, labels: &[Label]) -> (Vec<Member>, Vec<DefsError>) {
    let ws = loader.workspace();
    let default_image = ws.config().hive_image.as_ref().map(|l| l.value.to_string());
    let mut members = Vec::new();
    let mut problems = Vec::new();
    for label in labels {
        let doc = match loader.document(label) {
            Ok(d) if d.kind == Kind::Hive => d.doc,
            Ok(_) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let text = |path: &[&str]| scalar(&doc, path).map(|(t, _)| t);
        let client_ip = scalar(&doc, &["security", "wireguard", "client_ip"]).map(|(t, span)| {
            let addr = t.strip_suffix("/32").and_then(|a| a.parse().ok());
            (t, addr, span)
        });
        members.push(Member {
            label: label.clone(),
            file: ws.target_file(label),
            hive_id: scalar(&doc, &["hive_id"]),
            client_ip,
            name: text(&["metadata", "name"]),
            location: text(&["metadata", "location", "address"])
                .or_else(|| text(&["metadata", "location", "timezone"])),
            image: text(&["image"]).or_else(|| default_image.clone()),
            public_key: text(&["security", "wireguard", "public_key"]),
        });
    }
    (members, problems)
}

/// The text of the scalar at `path` and its span.
fn scalar(doc: &Value, path: &[&str]) -> Option<(String, Span)> {
    let mut v = doc;
    for key in path {
        v = &v.get(key)?.value;
    }
    let s = v.as_scalar().filter(|s| !s.is_null())?;
    Some((s.text.clone(), v.span.clone()))
}

/// The lowest hive address of `vpn` no member uses; `None` when the subnet is full.
pub fn next_free_address(members: &[Member], vpn: &VpnSubnet) -> Option<Ipv4Addr> {
    let used: std::collections::BTreeSet<Ipv4Addr> = members.iter().filter_map(Member::address).collect();
    vpn.clients().find(|a| !used.contains(a))
}

/// Two hives sharing what must be theirs alone. Each names both files: the diagnostic
/// points at the second use, and its related note at the first. When a value does not come
/// from the hive's own file — an environment variable such as `W4B_HIVE_ID`, a `--set`,
/// `hives.defaults` of `w4b.yaml` — the message says so (`via`) and the help is about that
/// source, since editing the hive files would not help.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FleetProblem {
    #[error("hive id `{id}` is used by both `{first}` and `{second}`{via}")]
    #[diagnostic(code(w4b::hive::duplicate_id))]
    DuplicateId {
        id: String,
        first: String,
        second: String,
        /// Where the value came from when not from the hive files themselves, or empty.
        via: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("used again here")]
        span: SourceSpan,
        #[related]
        first_use: Vec<FirstUse>,
        #[help]
        help: String,
    },
    #[error("VPN address `{address}` is given to both `{first}` and `{second}`{via}")]
    #[diagnostic(code(w4b::hive::duplicate_address))]
    DuplicateAddress {
        address: String,
        first: String,
        second: String,
        /// Where the value came from when not from the hive files themselves, or empty.
        via: String,
        #[source_code]
        src: NamedSource<Arc<str>>,
        #[label("given again here")]
        span: SourceSpan,
        #[related]
        first_use: Vec<FirstUse>,
        #[help]
        help: String,
    },
}

/// Where the value a [`FleetProblem`] is about was first used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("first used in `{file}`")]
#[diagnostic(severity(Advice))]
pub struct FirstUse {
    file: String,
    #[source_code]
    src: NamedSource<Arc<str>>,
    #[label("first used here")]
    span: SourceSpan,
}

impl FirstUse {
    fn at(file: &str, span: &Span) -> Vec<FirstUse> {
        vec![FirstUse {
            file: file.to_owned(),
            src: span.named_source(),
            span: span.source_span(),
        }]
    }
}

/// What set a member's value when it is not simply written in the member's own file.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// A `W4B_*` variable, a `--set`, or another file (`w4b.yaml`'s `hives.defaults`, an
    /// extended file).
    Override(Origin),
    /// `${VAR}` in the hive file itself, substituted from the environment.
    Substituted(String),
}

/// Where `span`'s value came from, when not the text of `member_file` itself.
fn set_by(span: &Span, member_file: &str) -> Option<Source> {
    match span.file.origin() {
        Origin::File { path } if path == member_file => substituted(span).map(Source::Substituted),
        other => Some(Source::Override(other.clone())),
    }
}

/// The first variable of a `${VAR}`/`${VAR:-default}` in the text at `span` (not `$${`, an
/// escaped one, nor `${env:…}`, a secret reference).
fn substituted(span: &Span) -> Option<String> {
    let written = span.file.text().get(span.start..span.end)?;
    let mut rest = written;
    while let Some(i) = rest.find("${") {
        let escaped = i > 0 && rest[..i].ends_with('$');
        let after = &rest[i + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !escaped && !name.is_empty() && !after.starts_with("env:") {
            return Some(name);
        }
        rest = after;
    }
    None
}

fn describe(source: &Source) -> String {
    match source {
        Source::Override(Origin::Env { var }) => format!("the environment variable `{var}`"),
        Source::Override(Origin::Cli { arg }) => format!("`--set {arg}`"),
        Source::Override(Origin::File { path }) => format!("`{path}`"),
        Source::Substituted(var) => format!("`${{{var}}}` (the environment variable `{var}`)"),
    }
}

/// The `via` of a [`FleetProblem`] (empty when both values are the files' own) and, when a
/// value came from elsewhere, the help that fits that source rather than `fallback`.
fn provenance(
    key: &str,
    (first, first_span): (&Member, &Span),
    (second, second_span): (&Member, &Span),
    fallback: String,
) -> (String, String) {
    let a = set_by(first_span, &first.file);
    let b = set_by(second_span, &second.file);
    let via = match (&a, &b) {
        (None, None) => return (String::new(), fallback),
        (Some(a), Some(b)) if a == b => format!(", both set by {}", describe(a)),
        (Some(a), Some(b)) => format!(", set by {} and by {}", describe(a), describe(b)),
        (Some(a), None) => format!(", set for `{}` by {}", first.file, describe(a)),
        (None, Some(b)) => format!(", set for `{}` by {}", second.file, describe(b)),
    };
    let source = b.or(a).unwrap_or(Source::Override(Origin::File {
        path: second.file.clone(),
    }));
    let help = match &source {
        Source::Override(Origin::Env { var }) => format!(
            "`{var}` sets the `{key}` of every hive a command reads, so it fits one hive at a time: unset it to work on several (`env -u {var} w4b …`), or give it a value no hive file has"
        ),
        Source::Override(Origin::Cli { arg }) => format!(
            "`--set {arg}` sets the `{key}` of every hive a command reads: leave it out when working on several hives, or give a value no hive file has"
        ),
        Source::Override(Origin::File { path }) => format!(
            "`{path}` gives the same `{key}` to more than one hive: write each hive's own `{key}` in its hive file instead"
        ),
        Source::Substituted(var) => format!(
            "`${{{var}}}` takes the `{key}` from the environment, where `{var}` has one value for every file that names it: give each hive its own variable, or write its `{key}` itself"
        ),
    };
    (via, help)
}

/// The problem of `second` using the hive id `first` already has.
fn duplicate_id(first: &Member, second: &Member) -> Option<FleetProblem> {
    let (first_id, first_span) = first.hive_id.as_ref()?;
    let (id, span) = second.hive_id.as_ref()?;
    let same = if first_id == id {
        String::new()
    } else {
        format!(" (`{first_id}` differs only in case, and host names are lower case)")
    };
    let (via, help) = provenance(
        "hive_id",
        (first, first_span),
        (second, span),
        format!(
            "every hive needs its own `hive_id`{same}: a copied hive file keeps its original's; make a new hive with `w4b hive new` or give this one another id (`hive_` and 8 letters or digits)"
        ),
    );
    Some(FleetProblem::DuplicateId {
        id: id.clone(),
        first: first.file.clone(),
        second: second.file.clone(),
        via,
        src: span.named_source(),
        span: span.source_span(),
        first_use: FirstUse::at(&first.file, first_span),
        help,
    })
}

/// The problem of `second` using the VPN address `first` already has; `next` is the
/// lowest free address, for the help.
fn duplicate_address(
    first: &Member,
    second: &Member,
    vpn: &VpnSubnet,
    next: Option<Ipv4Addr>,
) -> Option<FleetProblem> {
    let (_, _, first_span) = first.client_ip.as_ref()?;
    let (text, _, span) = second.client_ip.as_ref()?;
    let free = match next {
        Some(a) => format!("`{a}/32` is the lowest free one"),
        None => format!("`{}` has none left", vpn.cidr()),
    };
    let (via, help) = provenance(
        "security.wireguard.client_ip",
        (first, first_span),
        (second, span),
        format!("give one of them another `security.wireguard.client_ip`: {free}"),
    );
    Some(FleetProblem::DuplicateAddress {
        address: text.clone(),
        first: format!("{} ({})", first.file, first.id()),
        second: format!("{} ({})", second.file, second.id()),
        via,
        src: span.named_source(),
        span: span.source_span(),
        first_use: FirstUse::at(&first.file, first_span),
        help,
    })
}

fn same_id(a: &Member, b: &Member) -> bool {
    match (&a.hive_id, &b.hive_id) {
        (Some((x, _)), Some((y, _))) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

fn same_address(a: &Member, b: &Member) -> bool {
    matches!((a.address(), b.address()), (Some(x), Some(y)) if x == y)
}

/// Every hive id used twice (compared without case: the host name `w4b-<id>` is lower
/// case, so `hive_AbCd1234` and `hive_abcd1234` would be one machine on the network) and
/// every VPN address given twice, in label order of the second use.
pub fn check(members: &[Member], vpn: &VpnSubnet) -> Vec<FleetProblem> {
    let mut problems = Vec::new();
    let mut ids: BTreeMap<String, &Member> = BTreeMap::new();
    let mut addresses: BTreeMap<Ipv4Addr, &Member> = BTreeMap::new();
    // A value one override gives every hive (`W4B_HIVE_ID` over `//hives/...`) is reported
    // once, with the number of further hives it reaches, not once per hive: (problem, more).
    let mut shared: BTreeMap<(bool, String), (usize, usize)> = BTreeMap::new();
    let mut report =
        |problems: &mut Vec<FleetProblem>, key: Option<(bool, String)>, p: Option<FleetProblem>| {
            if let Some(key) = key {
                if let Some((_, more)) = shared.get_mut(&key) {
                    *more += 1;
                    return;
                }
                shared.insert(key, (problems.len(), 0));
            }
            problems.extend(p);
        };
    let next = next_free_address(members, vpn);
    for m in members {
        if let Some((id, span)) = &m.hive_id {
            match ids.get(&id.to_ascii_lowercase()) {
                Some(first) => {
                    let key = first
                        .hive_id
                        .as_ref()
                        .and_then(|(_, s)| one_override(s, span))
                        .map(|o| (true, o));
                    report(&mut problems, key, duplicate_id(first, m));
                }
                None => {
                    ids.insert(id.to_ascii_lowercase(), m);
                }
            }
        }
        if let (Some(addr), Some((_, _, span))) = (m.address(), &m.client_ip) {
            match addresses.get(&addr) {
                Some(first) => {
                    let key = first
                        .client_ip
                        .as_ref()
                        .and_then(|(_, _, s)| one_override(s, span))
                        .map(|o| (false, o));
                    report(&mut problems, key, duplicate_address(first, m, vpn, next));
                }
                None => {
                    addresses.insert(addr, m);
                }
            }
        }
    }
    for (at, more) in shared.into_values() {
        if more == 0 {
            continue;
        }
        let s = if more == 1 { "" } else { "s" };
        if let Some(FleetProblem::DuplicateId { via, .. } | FleetProblem::DuplicateAddress { via, .. }) =
            problems.get_mut(at)
        {
            via.push_str(&format!(", and for {more} more hive{s} the same way"));
        }
    }
    problems
}

/// The `W4B_*` variable or `--set` (as its display name) that gave both values, if one did.
fn one_override(a: &Span, b: &Span) -> Option<String> {
    match (a.file.origin(), b.file.origin()) {
        (Origin::File { .. }, _) => None,
        (x, y) if x == y => Some(a.file.display_name()),
        _ => None,
    }
}

/// What of [`check`] concerns `one` alone: every other member (`others`, in label order;
/// `one`'s own label among them is skipped) that has its hive id or its VPN address. The
/// diagnostic points at `one`'s value, its note at the other file's.
pub fn check_one(one: &Member, others: &[Member], vpn: &VpnSubnet) -> Vec<FleetProblem> {
    let others: Vec<&Member> = others.iter().filter(|m| m.label != one.label).collect();
    let mut all: Vec<Member> = others.iter().map(|m| (*m).clone()).collect();
    all.push(one.clone());
    let next = next_free_address(&all, vpn);
    let mut problems = Vec::new();
    for other in &others {
        if same_id(other, one) {
            problems.extend(duplicate_id(other, one));
        }
    }
    for other in &others {
        if same_address(other, one) {
            problems.extend(duplicate_address(other, one, vpn, next));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::Workspace;

    fn fleet(files: &[(&str, &str)]) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        for (p, t) in files {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let ws = Workspace::open(dir.path(), &Default::default()).unwrap();
        (dir, ws)
    }

    fn hive(id: &str, ip: &str) -> String {
        format!("hive_id: {id}\nmetadata: {{name: {id}}}\nsecurity:\n  wireguard: {{client_ip: \"{ip}\"}}\n")
    }

    #[test]
    fn duplicates_name_both_files_and_the_next_free_address() {
        let (_d, ws) = fleet(&[
            ("w4b.yaml", ""),
            ("defs/hives/a.yaml", &hive("hive_Aaaa0001", "10.10.0.2/32")),
            ("defs/hives/b.yaml", &hive("hive_Bbbb0002", "10.10.0.2/32")),
            ("defs/hives/c.yaml", &hive("hive_aaaa0001", "10.10.0.4/32")),
            ("defs/images/i.yaml", "kind: image\nbase: scratch\n"),
        ]);
        let loader = Loader::new(ws.clone(), Default::default(), &[]).unwrap();
        let labels = ws
            .expand(&crate::defs::Pattern::parse("//...", None).unwrap())
            .unwrap();
        let (members, problems) = scan(&loader, &labels);
        assert!(problems.is_empty());
        assert_eq!(members.len(), 3);
        let vpn = VpnSubnet::default();
        assert_eq!(
            next_free_address(&members, &vpn),
            Some(Ipv4Addr::new(10, 10, 0, 3))
        );
        let found = check(&members, &vpn);
        let text: Vec<String> = found
            .iter()
            .map(|p| format!("{:?}", miette::Report::msg(p.to_string())))
            .collect();
        assert_eq!(found.len(), 2, "{text:?}");
        assert_eq!(
            found[0].to_string(),
            "VPN address `10.10.0.2/32` is given to both `defs/hives/a.yaml (hive_Aaaa0001)` and `defs/hives/b.yaml (hive_Bbbb0002)`"
        );
        assert_eq!(
            found[1].to_string(),
            "hive id `hive_aaaa0001` is used by both `defs/hives/a.yaml` and `defs/hives/c.yaml`"
        );
        match &found[0] {
            FleetProblem::DuplicateAddress { help, .. } => assert!(help.contains("`10.10.0.3/32`"), "{help}"),
            other => panic!("{other:?}"),
        }
    }

    fn members_with(ws: &Workspace, env: &[(&str, &str)], sets: &[String]) -> Vec<Member> {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let loader = Loader::new(ws.clone(), env, sets).unwrap();
        let labels = ws
            .expand(&crate::defs::Pattern::parse("//...", None).unwrap())
            .unwrap();
        let (members, problems) = scan(&loader, &labels);
        assert!(problems.is_empty());
        members
    }

    #[test]
    fn a_duplicate_set_by_an_environment_variable_names_it() {
        let (_d, ws) = fleet(&[
            ("w4b.yaml", ""),
            ("defs/hives/a.yaml", &hive("hive_Aaaa0001", "10.10.0.2/32")),
            ("defs/hives/b.yaml", &hive("hive_Bbbb0002", "10.10.0.3/32")),
        ]);
        let vpn = VpnSubnet::default();
        let members = members_with(&ws, &[("W4B_HIVE_ID", "hive_Same0000")], &[]);
        let found = check(&members, &vpn);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "hive id `hive_Same0000` is used by both `defs/hives/a.yaml` and `defs/hives/b.yaml`, both set by the environment variable `W4B_HIVE_ID`"
        );
        // A third hive: still one problem, which counts it.
        std::fs::write(
            ws.root().join("defs/hives/c.yaml"),
            hive("hive_Cccc0003", "10.10.0.4/32"),
        )
        .unwrap();
        let found = check(&members_with(&ws, &[("W4B_HIVE_ID", "hive_Same0000")], &[]), &vpn);
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .to_string()
                .ends_with("`W4B_HIVE_ID`, and for 1 more hive the same way"),
            "{}",
            found[0]
        );
        match &found[0] {
            FleetProblem::DuplicateId { help, .. } => {
                assert!(help.contains("`env -u W4B_HIVE_ID w4b …`"), "{help}")
            }
            other => panic!("{other:?}"),
        }

        // `--set` of an address: named the same way.
        let set = ["security.wireguard.client_ip=10.10.0.9/32".to_owned()];
        let found = check(&members_with(&ws, &[], &set), &vpn);
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .to_string()
                .ends_with(", both set by `--set security.wireguard.client_ip=10.10.0.9/32`, and for 1 more hive the same way"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_duplicate_substituted_from_a_variable_names_it() {
        let hive = |id: &str, ip: &str| {
            format!(
                "hive_id: \"{id}\"\nmetadata:\n  name: x\nsecurity:\n  wireguard: {{client_ip: \"{ip}\"}}\n"
            )
        };
        let (_d, ws) = fleet(&[
            ("w4b.yaml", ""),
            ("defs/hives/a.yaml", &hive("${HIVE_ID}", "10.10.0.2/32")),
            ("defs/hives/b.yaml", &hive("${HIVE_ID:-x}", "10.10.0.3/32")),
            ("defs/hives/c.yaml", &hive("hive_$${HIVE_ID}", "10.10.0.4/32")),
        ]);
        let members = members_with(&ws, &[("HIVE_ID", "hive_Same0000")], &[]);
        let found = check(&members, &VpnSubnet::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].to_string(),
            "hive id `hive_Same0000` is used by both `defs/hives/a.yaml` and `defs/hives/b.yaml`, both set by `${HIVE_ID}` (the environment variable `HIVE_ID`)"
        );
    }

    #[test]
    fn one_hive_is_checked_against_the_other_files() {
        let (_d, ws) = fleet(&[
            ("w4b.yaml", ""),
            ("defs/hives/a.yaml", &hive("hive_Aaaa0001", "10.10.0.2/32")),
            ("defs/hives/b.yaml", &hive("hive_Bbbb0002", "10.10.0.2/32")),
            ("defs/hives/c.yaml", &hive("hive_Cccc0003", "10.10.0.4/32")),
        ]);
        let vpn = VpnSubnet::default();
        let plain = members_with(&ws, &[], &[]);
        let b = plain.iter().find(|m| m.label.name == "b").unwrap();
        let found = check_one(b, &plain, &vpn);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "VPN address `10.10.0.2/32` is given to both `defs/hives/a.yaml (hive_Aaaa0001)` and `defs/hives/b.yaml (hive_Bbbb0002)`"
        );
        let c = plain.iter().find(|m| m.label.name == "c").unwrap();
        assert!(check_one(c, &plain, &vpn).is_empty());

        // `W4B_HIVE_ID` gives `c` the id of `a`: the file and the variable are named.
        let with = members_with(&ws, &[("W4B_HIVE_ID", "hive_aaaa0001")], &[]);
        let c = with.iter().find(|m| m.label.name == "c").unwrap();
        let found = check_one(c, &plain, &vpn);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "hive id `hive_aaaa0001` is used by both `defs/hives/a.yaml` and `defs/hives/c.yaml`, set for `defs/hives/c.yaml` by the environment variable `W4B_HIVE_ID`"
        );
    }

    #[test]
    fn the_subnet_decides_the_free_addresses() {
        let vpn = VpnSubnet::default();
        let clients: Vec<Ipv4Addr> = vpn.clients().collect();
        assert_eq!(clients.first(), Some(&Ipv4Addr::new(10, 10, 0, 2)));
        assert_eq!(clients.last(), Some(&Ipv4Addr::new(10, 10, 0, 253)));
        assert_eq!(clients.len(), 252);
        assert!(!vpn.is_client(Ipv4Addr::new(10, 10, 0, 1)));
        assert!(!vpn.is_client(Ipv4Addr::new(10, 10, 1, 2)));
        let (_d, ws) = fleet(&[(
            "w4b.yaml",
            "hives: {vpn: {subnet: 10.20.0.0/29, hub: 10.20.0.6}}\n",
        )]);
        let small = ws.config().vpn;
        let clients: Vec<String> = small.clients().map(|a| a.to_string()).collect();
        assert_eq!(
            clients,
            ["10.20.0.1", "10.20.0.2", "10.20.0.3", "10.20.0.4", "10.20.0.5"]
        );
        assert_eq!(small.client_range(), "`10.20.0.1/32` to `10.20.0.5/32`");
        for bad in [
            "hives: {vpn: {subnet: 10.20.0.1/24}}",
            "hives: {vpn: {subnet: nope}}",
            "hives: {vpn: {hub: 10.11.0.1}}",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("w4b.yaml"), bad).unwrap();
            assert!(Workspace::open(dir.path(), &Default::default()).is_err(), "{bad}");
        }
    }
}
