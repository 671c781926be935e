//! Build history: for each target, the steps of its last few builds (name, key, status,
//! outputs). `w4b why` compares the newest two; the records they point at hold the full
//! preimages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use w4b_cache::Digest;

use crate::cache::{Cache, CacheResult, MissReason};
use crate::exec::{BuildReport, StepStatus};
use crate::graph::{Graph, NodeId};

pub const HISTORY_SCHEMA: &str = "w4b.history/1";
/// How many builds per target are kept: `why` compares the newest two.
pub const KEEP: usize = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEntry {
    pub name: String,
    pub kind: String,
    pub key: Digest,
    pub status: StepStatus,
    pub outputs: BTreeMap<String, Digest>,
    pub deps: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miss: Option<MissReason>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildEntry {
    /// Steps in topological order.
    pub steps: Vec<StepEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHistory {
    pub schema: String,
    pub target: String,
    /// Newest first.
    pub builds: Vec<BuildEntry>,
}

/// A step's name as seen from `target`: a step shared with other targets is known by
/// several names, and the history of one target must not depend on which others were
/// built alongside it.
pub fn name_for(graph: &Graph, id: NodeId, target: &str) -> String {
    let node = graph.node(id);
    let prefix = format!("{target}#");
    if node.name.starts_with(&prefix) {
        return node.name.clone();
    }
    node.aliases
        .iter()
        .find(|a| a.starts_with(&prefix))
        .cloned()
        .unwrap_or_else(|| node.name.clone())
}

fn meta_name(target: &str) -> String {
    let d = blake3::derive_key("w4b 2026-11-26 history name v1", target.as_bytes());
    format!("history-{}", &hex::encode(d)[..32])
}

pub fn load(cache: &dyn Cache, target: &str) -> CacheResult<Option<TargetHistory>> {
    Ok(cache
        .read_meta(&meta_name(target))?
        .and_then(|bytes| parse(&bytes, target)))
}

fn parse(bytes: &[u8], target: &str) -> Option<TargetHistory> {
    match serde_json::from_slice::<TargetHistory>(bytes) {
        Ok(h) if h.schema == HISTORY_SCHEMA && h.target == target => Some(h),
        // An unreadable history is no history: `why` then says there is nothing to compare.
        _ => None,
    }
}

/// Whether `bytes` is a history of `target` whose newest build is `entry`, judged by
/// bytes: the file is compact JSON written by [`record`] from the struct, so a repeat of
/// the newest build is the same text after `"builds":[`. Decoding two builds of every
/// target only to find that nothing changed was most of the history's cost on a no-op
/// rebuild. Anything else (another writer's formatting, damage) is decoded as before.
fn starts_with_build(bytes: &[u8], target: &str, entry: &BuildEntry) -> bool {
    #[derive(Serialize)]
    struct Head<'a> {
        schema: &'a str,
        target: &'a str,
    }
    let (Ok(head), Ok(entry)) = (
        serde_json::to_vec(&Head {
            schema: HISTORY_SCHEMA,
            target,
        }),
        serde_json::to_vec(entry),
    ) else {
        return false;
    };
    // `{"schema":…,"target":…` then `,"builds":[` then the entry, then `,` or `]`.
    let Some(open) = head.strip_suffix(b"}") else {
        return false;
    };
    let mut expected = open.to_vec();
    expected.extend_from_slice(b",\"builds\":[");
    expected.extend_from_slice(&entry);
    bytes.starts_with(&expected) && matches!(bytes.get(expected.len()), Some(b',' | b']'))
}

/// Appends this build of `target` (whose final steps are `roots`) to its history, if every
/// step it needs completed.
pub fn record(
    cache: &dyn Cache,
    graph: &Graph,
    report: &BuildReport,
    target: &str,
    roots: &[NodeId],
) -> CacheResult<bool> {
    let mut steps = Vec::new();
    for id in graph.closure(roots) {
        let Some(r) = report.results.get(&id) else {
            return Ok(false);
        };
        let (Some(key), StepStatus::Ran | StepStatus::Cached) = (r.key, r.status) else {
            return Ok(false);
        };
        let node = graph.node(id);
        steps.push(StepEntry {
            name: name_for(graph, id, target),
            kind: r.kind.clone(),
            key,
            status: r.status,
            outputs: r.outputs.iter().map(|(k, v)| (k.clone(), v.digest)).collect(),
            deps: node.deps.iter().map(|d| name_for(graph, *d, target)).collect(),
            miss: r.miss.clone(),
        });
    }
    let entry = BuildEntry { steps };
    let name = meta_name(target);
    let old = cache.read_meta(&name)?;
    if old
        .as_deref()
        .is_some_and(|bytes| starts_with_build(bytes, target, &entry))
    {
        // A repeat of the newest build (a no-op after a no-op): `why` would say the same
        // either way, so the file is left as it is.
        return Ok(true);
    }
    let mut history = old
        .and_then(|bytes| parse(&bytes, target))
        .unwrap_or_else(|| TargetHistory {
            schema: HISTORY_SCHEMA.into(),
            target: target.into(),
            builds: Vec::new(),
        });
    if history.builds.first() == Some(&entry) {
        return Ok(true);
    }
    history.builds.insert(0, entry);
    history.builds.truncate(KEEP);
    let bytes = serde_json::to_vec(&history)?;
    cache.write_meta(&meta_name(target), &bytes)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &[u8], status: StepStatus) -> BuildEntry {
        BuildEntry {
            steps: vec![StepEntry {
                name: "//t:x#a".into(),
                kind: "k".into(),
                key: Digest::of(key),
                status,
                outputs: BTreeMap::from([("out".to_string(), Digest::of(b"o"))]),
                deps: vec![],
                miss: None,
            }],
        }
    }

    #[test]
    fn newest_build_is_matched_by_bytes_exactly() {
        let (a, b) = (entry(b"a", StepStatus::Cached), entry(b"b", StepStatus::Cached));
        let h = TargetHistory {
            schema: HISTORY_SCHEMA.into(),
            target: "//t:x".into(),
            builds: vec![a.clone(), b.clone()],
        };
        let bytes = serde_json::to_vec(&h).unwrap();
        assert!(starts_with_build(&bytes, "//t:x", &a));
        assert!(!starts_with_build(&bytes, "//t:x", &b), "only the newest");
        assert!(!starts_with_build(&bytes, "//t:y", &a), "another target");
        assert!(!starts_with_build(&bytes, "//t:x", &entry(b"a", StepStatus::Ran)));
        let one = TargetHistory {
            builds: vec![a.clone()],
            ..h.clone()
        };
        assert!(starts_with_build(&serde_json::to_vec(&one).unwrap(), "//t:x", &a));
        // The entry must end where the file says it does.
        let cut = &bytes[..bytes.len() - 1 - serde_json::to_vec(&b).unwrap().len() - 2];
        assert!(!starts_with_build(cut, "//t:x", &a));
        let pretty = serde_json::to_vec_pretty(&h).unwrap();
        assert!(!starts_with_build(&pretty, "//t:x", &a), "decoded instead");
    }
}
