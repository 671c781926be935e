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
    let Some(bytes) = cache.read_meta(&meta_name(target))? else {
        return Ok(None);
    };
    match serde_json::from_slice::<TargetHistory>(&bytes) {
        Ok(h) if h.schema == HISTORY_SCHEMA && h.target == target => Ok(Some(h)),
        // An unreadable history is no history: `why` then says there is nothing to compare.
        _ => Ok(None),
    }
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
    let mut history = load(cache, target)?.unwrap_or_else(|| TargetHistory {
        schema: HISTORY_SCHEMA.into(),
        target: target.into(),
        builds: Vec::new(),
    });
    let entry = BuildEntry { steps };
    if history.builds.first() == Some(&entry) {
        // A repeat of the newest build (a no-op after a no-op): `why` would say the same
        // either way, so the file is left as it is.
        return Ok(true);
    }
    history.builds.insert(0, entry);
    history.builds.truncate(KEEP);
    let bytes = serde_json::to_vec(&history)?;
    cache.write_meta(&meta_name(target), &bytes)?;
    Ok(true)
}
