//! In which rounds dpkg unpacks and configures a set of packages.
//!
//! One `dpkg --unpack` of every package followed by `dpkg --configure --pending` is the
//! fastest way through dpkg, and dpkg orders the configure phase by `Depends` itself
//! (cycles included). What it does not do is `Pre-Depends`: dpkg refuses to unpack a
//! package whose pre-dependency is not *configured* yet ("pre-dependency problem - not
//! installing"), even when that pre-dependency is unpacked earlier in the same run. apt
//! avoids this by calling dpkg several times; so do we, with as few rounds as possible:
//! the packages some other package of the set pre-depends on, together with everything
//! they need (`Depends` and `Pre-Depends`, transitively, within the set), form an
//! earlier round, recursively. Without pre-dependencies inside the set there is one round.
//!
//! The fields come from the packages' control files ([`Control::parse`] reads the
//! paragraph `dpkg-deb --field` prints). Alternatives (`a | b`) count for every
//! alternative in the set, and `Provides` names count for their providers: it is better
//! to configure one package too early than one too late.

use std::collections::{BTreeMap, BTreeSet};

/// The fields of a package's control file that decide the install order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Groups of alternatives, by package name (versions and architecture qualifiers
    /// dropped).
    pub pre_depends: Vec<Vec<String>>,
    pub depends: Vec<Vec<String>>,
    pub provides: Vec<String>,
}

impl Control {
    /// Parses one deb822 paragraph (fields may continue on indented lines). A missing
    /// `Package` field is an error; the other fields default to empty.
    pub fn parse(text: &str) -> Result<Control, String> {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let Some(name) = &current else {
                    return Err(format!("continuation line before any field: `{line}`"));
                };
                if let Some(value) = fields.get_mut(name) {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("line without a field name: `{line}`"));
            };
            let name = name.trim().to_ascii_lowercase();
            fields.insert(name.clone(), value.trim().to_owned());
            current = Some(name);
        }
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let package = get("package");
        if package.is_empty() {
            return Err("no `Package` field".into());
        }
        Ok(Control {
            package,
            version: get("version"),
            architecture: get("architecture"),
            pre_depends: relations(&get("pre-depends")),
            depends: relations(&get("depends")),
            provides: relations(&get("provides")).into_iter().flatten().collect(),
        })
    }
}

/// `a (>= 1) | b:any, c [amd64]` → `[[a, b], [c]]`.
fn relations(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.trim().split([' ', '(', '[', '<', ':']).next().unwrap_or("");
                    (!name.is_empty()).then(|| name.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// The rounds to install `packages` in: indices into `packages`, each round in the
/// given order. Every index appears exactly once.
pub fn rounds(packages: &[Control]) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..packages.len()).collect();
    let mut out = Vec::new();
    split(packages, &all, &mut out);
    out
}

fn split(packages: &[Control], set: &[usize], out: &mut Vec<Vec<usize>>) {
    if set.is_empty() {
        return;
    }
    // Names (and provided names) → members of this set.
    let mut by_name: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for &i in set {
        let Some(c) = packages.get(i) else { continue };
        by_name.entry(&c.package).or_default().insert(i);
        for p in &c.provides {
            by_name.entry(p).or_default().insert(i);
        }
    }
    let resolve = |groups: &[Vec<String>], into: &mut BTreeSet<usize>| {
        for alt in groups.iter().flatten() {
            if let Some(found) = by_name.get(alt.as_str()) {
                into.extend(found);
            }
        }
    };
    let mut needed = BTreeSet::new();
    for &i in set {
        let Some(c) = packages.get(i) else { continue };
        let mut pre = BTreeSet::new();
        resolve(&c.pre_depends, &mut pre);
        pre.remove(&i);
        needed.extend(pre);
    }
    if needed.is_empty() {
        out.push(set.to_vec());
        return;
    }
    // Close over what the early packages need to be configured.
    let mut early = needed.clone();
    let mut queue: Vec<usize> = needed.into_iter().collect();
    while let Some(i) = queue.pop() {
        let Some(c) = packages.get(i) else { continue };
        let mut deps = BTreeSet::new();
        resolve(&c.pre_depends, &mut deps);
        resolve(&c.depends, &mut deps);
        for d in deps {
            if early.insert(d) {
                queue.push(d);
            }
        }
    }
    if early.len() == set.len() {
        // A pre-dependency cycle: nothing can go first, dpkg will say why.
        out.push(set.to_vec());
        return;
    }
    let (first, rest): (Vec<usize>, Vec<usize>) = set.iter().partition(|i| early.contains(i));
    split(packages, &first, out);
    split(packages, &rest, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Control {
        Control::parse(text).unwrap()
    }

    #[test]
    fn parses_relations_with_versions_alternatives_and_continuations() {
        let x = c(
            "Package: openssh-server\nVersion: 1:9.2p1-2+deb12u5\nArchitecture: arm64\n\
                   Pre-Depends: init-system-helpers (>= 1.54~)\n\
                   Depends: adduser, libc6 (>= 2.36) | libc6.1,\n libssl3:any [arm64],\n\tucf\n\
                   Provides: ssh-server\n",
        );
        assert_eq!(x.package, "openssh-server");
        assert_eq!(x.version, "1:9.2p1-2+deb12u5");
        assert_eq!(x.architecture, "arm64");
        assert_eq!(x.pre_depends, [["init-system-helpers"]]);
        assert_eq!(
            x.depends,
            vec![
                vec!["adduser".to_owned()],
                vec!["libc6".into(), "libc6.1".into()],
                vec!["libssl3".into()],
                vec!["ucf".into()]
            ]
        );
        assert_eq!(x.provides, ["ssh-server"]);
        assert!(Control::parse("Version: 1\n").is_err());
        assert!(Control::parse(" leading continuation\n").is_err());
        assert!(Control::parse("Package x\n").is_err());
    }

    #[test]
    fn one_round_without_pre_dependencies_inside_the_set() {
        let set = [
            c("Package: a\nDepends: b\nPre-Depends: libc6\n"),
            c("Package: b\nDepends: a\n"),
        ];
        assert_eq!(rounds(&set), [vec![0, 1]]);
    }

    #[test]
    fn pre_dependencies_and_what_they_need_go_first() {
        let set = [
            c("Package: server\nPre-Depends: helpers\nDepends: runtime\n"),
            c("Package: runtime\nDepends: libx\n"),
            c("Package: helpers\nDepends: perl-base | perl\n"),
            c("Package: perl\nProvides: perl-x\n"),
            c("Package: unrelated\n"),
            c("Package: libx\n"),
        ];
        // `helpers` and its dependency `perl` first; the rest after.
        assert_eq!(rounds(&set), [vec![2, 3], vec![0, 1, 4, 5]]);
        // Through a provided name, and nested: `c` pre-depends on `b`, which
        // pre-depends on a virtual package `a` provides.
        let set = [
            c("Package: c\nPre-Depends: b\n"),
            c("Package: b\nPre-Depends: virt\n"),
            c("Package: a\nProvides: virt\n"),
        ];
        assert_eq!(rounds(&set), [vec![2], vec![1], vec![0]]);
    }

    #[test]
    fn a_pre_dependency_cycle_is_one_round() {
        let set = [
            c("Package: a\nPre-Depends: b\n"),
            c("Package: b\nPre-Depends: a\n"),
        ];
        assert_eq!(rounds(&set), [vec![0, 1]]);
    }
}
