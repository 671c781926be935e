//! `why`: compare the last two builds of a target and explain every step that ran.
//!
//! Each step of the newest build gets a typed status:
//!
//! | status       | meaning                                                                  |
//! |--------------|--------------------------------------------------------------------------|
//! | `root`       | its key changed because one of its *own* inputs changed (listed)        |
//! | `propagated` | its key changed only because an upstream step's output changed          |
//! | `cutoff`     | an upstream step re-ran, but produced the same output, so this one didn't |
//! | `new`        | not in the previous build                                                 |
//! | `removed`    | in the previous build, not in this one                                    |
//! | `miss`       | same key as before, but it ran anyway (evicted, corrupt, forced)        |
//!
//! Steps whose key did not change and that were served from the cache are `unchanged` and
//! only counted.
//!
//! A changed component whose value stands for a tree of files (a host directory, an
//! unpacked archive) carries the root of that tree in both records (see [`crate::key`]).
//! Its change then lists the paths inside that differ ([`PathChange`]), found by a
//! [`TreeDiff`] the application supplies (the engine knows no tree format): it walks the
//! two trees side by side and descends only into subtrees whose digests differ, so the
//! cost follows the number of changed paths, not the size of the tree. The old tree is
//! read from the cache, never from disk, so the previous build is explained even after
//! the directory has changed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use w4b_cache::{Digest, PreimageEntry};

use crate::cache::{Cache, MissReason};
use crate::exec::StepStatus;
use crate::history::{BuildEntry, StepEntry, TargetHistory};

pub const WHY_SCHEMA: &str = "w4b.why/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhyStatus {
    Root,
    Propagated,
    Cutoff,
    New,
    Removed,
    Miss,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub component: String,
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub location: Option<String>,
    /// For a tree-valued component: the paths inside the tree that differ, in sorted
    /// depth-first order. Omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathChange>,
    /// Why the paths inside a tree-valued component could not be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Change {
    fn new(
        component: String,
        name: String,
        old: Option<String>,
        new: Option<String>,
        location: Option<String>,
    ) -> Change {
        Change {
            component,
            name,
            old,
            new,
            location,
            paths: Vec::new(),
            note: None,
        }
    }
}

/// How a path inside a tree-valued input differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathStatus {
    Changed,
    Added,
    Removed,
}

impl PathStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PathStatus::Changed => "changed",
            PathStatus::Added => "added",
            PathStatus::Removed => "removed",
        }
    }
}

/// One path inside a tree-valued input that differs between the two builds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathChange {
    /// Relative to the tree's root (`conf/app.conf`).
    pub path: String,
    pub change: PathStatus,
    /// What the path held: a file's content digest (BLAKE3, 64 hex), `symlink:<target>`,
    /// `dir`, or the kind of another object; `None` when the path did not exist.
    pub old: Option<String>,
    pub new: Option<String>,
    /// Permission bits (`0755`), only when both sides have the path and they differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_mode: Option<String>,
}

/// Lists the paths that differ between two trees in the store, named by their roots, in
/// sorted depth-first order. Implemented by the application, which owns the tree format.
pub trait TreeDiff {
    /// An error is a message saying why the trees cannot be read (evicted, corrupt).
    fn diff(&self, old: &Digest, new: &Digest) -> Result<Vec<PathChange>, String>;
}

/// For callers with no tree format: changes are listed without their paths.
pub struct NoTrees;

impl TreeDiff for NoTrees {
    fn diff(&self, _: &Digest, _: &Digest) -> Result<Vec<PathChange>, String> {
        Err("no tree format is known here".into())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WhyStep {
    pub label: String,
    pub kind: String,
    pub status: WhyStatus,
    /// Whether it ran in the newest build.
    pub ran: bool,
    /// For steps that re-ran: did their output change? (`false` means it cut the rebuild off.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_changed: Option<bool>,
    pub changes: Vec<Change>,
    /// For `propagated` and `cutoff`: the upstream steps that changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub because_of: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miss: Option<MissReason>,
    /// Set when the previous record needed for a diff is no longer in the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WhySummary {
    pub steps: usize,
    pub ran: usize,
    pub cached: usize,
    pub root: usize,
    pub propagated: usize,
    pub cutoff: usize,
    pub new: usize,
    pub removed: usize,
    pub miss: usize,
    pub unchanged: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Why {
    pub schema: &'static str,
    pub target: String,
    /// False when there is no earlier build to compare with.
    pub compared: bool,
    pub summary: WhySummary,
    /// Root causes first, then propagated, cutoff, new, removed, miss; unchanged omitted.
    pub steps: Vec<WhyStep>,
}

/// Explains the newest build in `history` against the one before it; `trees` lists the
/// paths inside tree-valued inputs.
pub fn explain(cache: &dyn Cache, trees: &dyn TreeDiff, history: &TargetHistory) -> Why {
    let Some(cur) = history.builds.first() else {
        return Why {
            schema: WHY_SCHEMA,
            target: history.target.clone(),
            compared: false,
            summary: WhySummary::default(),
            steps: Vec::new(),
        };
    };
    let prev = history.builds.get(1);
    explain_pair(cache, trees, &history.target, prev, cur)
}

fn preimage_of(cache: &dyn Cache, key: &Digest) -> Option<Vec<PreimageEntry>> {
    cache.records(key).ok()?.into_iter().next().map(|r| r.preimage)
}

pub fn explain_pair(
    cache: &dyn Cache,
    trees: &dyn TreeDiff,
    target: &str,
    prev: Option<&BuildEntry>,
    cur: &BuildEntry,
) -> Why {
    let prev_by_name: BTreeMap<&str, &StepEntry> = prev
        .map(|p| p.steps.iter().map(|s| (s.name.as_str(), s)).collect())
        .unwrap_or_default();
    let cur_by_name: BTreeMap<&str, &StepEntry> = cur.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    // Steps whose key changed in this build (they re-ran or were fetched under a new key).
    let changed: BTreeSet<&str> = cur
        .steps
        .iter()
        .filter(|s| prev_by_name.get(s.name.as_str()).is_some_and(|p| p.key != s.key))
        .map(|s| s.name.as_str())
        .collect();
    let output_changed: BTreeSet<&str> = cur
        .steps
        .iter()
        .filter(|s| {
            prev_by_name
                .get(s.name.as_str())
                .is_some_and(|p| p.outputs != s.outputs)
        })
        .map(|s| s.name.as_str())
        .collect();

    let mut steps = Vec::new();
    let mut summary = WhySummary {
        steps: cur.steps.len(),
        ..WhySummary::default()
    };
    for s in &cur.steps {
        match s.status {
            StepStatus::Ran => summary.ran += 1,
            StepStatus::Cached => summary.cached += 1,
            _ => {}
        }
        let ran = s.status == StepStatus::Ran;
        let mut step = WhyStep {
            label: s.name.clone(),
            kind: s.kind.clone(),
            status: WhyStatus::Unchanged,
            ran,
            output_changed: None,
            changes: Vec::new(),
            because_of: Vec::new(),
            miss: None,
            note: None,
        };
        let Some(p) = prev_by_name.get(s.name.as_str()) else {
            if prev.is_some() {
                step.status = WhyStatus::New;
            } else if ran {
                step.status = WhyStatus::Miss;
                step.miss = s.miss.clone();
            }
            if step.status != WhyStatus::Unchanged {
                steps.push(step);
            }
            continue;
        };
        // Upstream steps that re-ran under a new key, and those whose output changed.
        let upstream_changed: Vec<String> = s
            .deps
            .iter()
            .filter(|d| changed.contains(d.as_str()))
            .cloned()
            .collect();
        let upstream_output_changed: Vec<String> = s
            .deps
            .iter()
            .filter(|d| output_changed.contains(d.as_str()))
            .cloned()
            .collect();
        if p.key == s.key {
            if ran {
                step.status = WhyStatus::Miss;
                step.miss = s.miss.clone();
            } else if !upstream_changed.is_empty() {
                step.status = WhyStatus::Cutoff;
                step.because_of = upstream_changed;
            }
        } else {
            step.output_changed = Some(output_changed.contains(s.name.as_str()));
            let old = preimage_of(cache, &p.key);
            let new = preimage_of(cache, &s.key);
            match (old, new) {
                (Some(old), Some(new)) => {
                    let mut changes = diff(&old, &new);
                    inside_trees(trees, &old, &new, &mut changes);
                    let own = changes.iter().any(|c| c.component != "upstream");
                    step.status = if own {
                        WhyStatus::Root
                    } else {
                        WhyStatus::Propagated
                    };
                    step.changes = changes;
                }
                _ => {
                    step.status = if upstream_changed.is_empty() {
                        WhyStatus::Root
                    } else {
                        WhyStatus::Propagated
                    };
                    step.note = Some(
                        "the record of one of the two builds is no longer in the cache; changes cannot be listed"
                            .into(),
                    );
                }
            }
            if step.status == WhyStatus::Propagated {
                step.because_of = if upstream_output_changed.is_empty() {
                    upstream_changed
                } else {
                    upstream_output_changed
                };
            }
        }
        if step.status != WhyStatus::Unchanged {
            steps.push(step);
        } else {
            summary.unchanged += 1;
        }
    }
    if let Some(prev) = prev {
        for p in &prev.steps {
            if !cur_by_name.contains_key(p.name.as_str()) {
                steps.push(WhyStep {
                    label: p.name.clone(),
                    kind: p.kind.clone(),
                    status: WhyStatus::Removed,
                    ran: false,
                    output_changed: None,
                    changes: Vec::new(),
                    because_of: Vec::new(),
                    miss: None,
                    note: None,
                });
            }
        }
    }
    // Stable: by status (root causes first), then graph order (already the push order).
    steps.sort_by_key(|s| s.status);
    for s in &steps {
        match s.status {
            WhyStatus::Root => summary.root += 1,
            WhyStatus::Propagated => summary.propagated += 1,
            WhyStatus::Cutoff => summary.cutoff += 1,
            WhyStatus::New => summary.new += 1,
            WhyStatus::Removed => summary.removed += 1,
            WhyStatus::Miss => summary.miss += 1,
            WhyStatus::Unchanged => {}
        }
    }
    Why {
        schema: WHY_SCHEMA,
        target: target.to_string(),
        compared: prev.is_some(),
        summary,
        steps,
    }
}

/// Component-by-component difference; own inputs first, upstream last.
pub fn diff(old: &[PreimageEntry], new: &[PreimageEntry]) -> Vec<Change> {
    let key = |e: &PreimageEntry| (e.component.clone(), e.name.clone());
    let o: BTreeMap<_, _> = old.iter().map(|e| (key(e), e)).collect();
    let n: BTreeMap<_, _> = new.iter().map(|e| (key(e), e)).collect();
    let mut out = Vec::new();
    let names: BTreeSet<_> = o.keys().chain(n.keys()).cloned().collect();
    for k in names {
        let (a, b) = (o.get(&k), n.get(&k));
        if a.map(|e| &e.value) == b.map(|e| &e.value) {
            continue;
        }
        let location = b
            .and_then(|e| e.location.clone())
            .or_else(|| a.and_then(|e| e.location.clone()));
        // A structured parameter (a module's configuration, a template's context) is
        // explained leaf by leaf: `config.updates.update_hour: 3 → 4`, not two long JSONs.
        if let (Some(x), Some(y)) = (a, b) {
            if let (Ok(jx), Ok(jy)) = (
                serde_json::from_str::<serde_json::Value>(&x.value),
                serde_json::from_str::<serde_json::Value>(&y.value),
            ) {
                if jx.is_object() && jy.is_object() {
                    let mut leaves = Vec::new();
                    json_leaves(&k.1, Some(&jx), Some(&jy), &mut leaves);
                    for (name, old, new) in leaves {
                        out.push(Change::new(k.0.clone(), name, old, new, location.clone()));
                    }
                    continue;
                }
            }
        }
        out.push(Change::new(
            k.0.clone(),
            k.1.clone(),
            a.map(|e| e.value.clone()),
            b.map(|e| e.value.clone()),
            location,
        ));
    }
    out.sort_by_key(|c| c.component == "upstream");
    out
}

/// Fills in the paths of every change whose component both records name a tree for.
fn inside_trees(trees: &dyn TreeDiff, old: &[PreimageEntry], new: &[PreimageEntry], changes: &mut [Change]) {
    let tree_of = |entries: &[PreimageEntry], c: &Change| {
        entries
            .iter()
            .find(|e| e.component == c.component && e.name == c.name)
            .map(|e| e.tree)
    };
    for c in changes {
        let (Some(a), Some(b)) = (tree_of(old, c), tree_of(new, c)) else {
            // Added or removed components, and the leaves of structured parameters.
            continue;
        };
        match (a, b) {
            (Some(a), Some(b)) if a != b => match trees.diff(&a, &b) {
                Ok(paths) => c.paths = paths,
                Err(e) => c.note = Some(format!("the files inside cannot be listed: {e}")),
            },
            (Some(_), None) | (None, Some(_)) => {
                let which = if a.is_some() { "earlier" } else { "newer" };
                c.note = Some(format!(
                    "only the {which} build recorded the files behind this value; there is nothing to compare them with"
                ));
            }
            _ => {}
        }
    }
}

/// The leaves that differ between two JSON values, as `(path, old, new)`; objects are
/// walked by key, anything else (arrays included) compared whole.
fn json_leaves(
    path: &str,
    a: Option<&serde_json::Value>,
    b: Option<&serde_json::Value>,
    out: &mut Vec<(String, Option<String>, Option<String>)>,
) {
    match (a, b) {
        (Some(serde_json::Value::Object(x)), Some(serde_json::Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                json_leaves(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (x, y) if x != y => out.push((
            path.to_owned(),
            x.map(|v| v.to_string()),
            y.map(|v| v.to_string()),
        )),
        _ => {}
    }
}

#[cfg(test)]
mod json_diff_tests {
    use super::*;

    fn entry(value: &str) -> PreimageEntry {
        PreimageEntry {
            component: "param".into(),
            name: "config".into(),
            value: value.into(),
            location: Some("defs/hives/north.yaml:3:1".into()),
            tree: None,
        }
    }

    #[test]
    fn structured_parameters_are_explained_leaf_by_leaf() {
        let old = [entry(r#"{"updates":{"hour":3,"days":["Sun"]},"port":22}"#)];
        let new = [entry(
            r#"{"updates":{"hour":4,"days":["Sun"]},"port":22,"extra":true}"#,
        )];
        let changes = diff(&old, &new);
        let shown: Vec<(String, Option<String>, Option<String>)> = changes
            .iter()
            .map(|c| (c.name.clone(), c.old.clone(), c.new.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                ("config.extra".to_owned(), None, Some("true".to_owned())),
                (
                    "config.updates.hour".to_owned(),
                    Some("3".to_owned()),
                    Some("4".to_owned())
                ),
            ]
        );
    }
}
