//! `hive-check`: the hive checklist ([`crate::validate::hive`]) on a hive image's combined
//! tree, after every layer and module has been applied and before the partitions are
//! written. A failure stops the build with every failed rule and its file; a pass yields a
//! `report` that `compress` takes as an input, so no unchecked hive image is exported.
//!
//! Keyed: nothing besides the tree (an upstream output).

use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::tree_error;
use crate::store::AppStore;
use crate::tree::Blobs;
use crate::validate::hive::{check, FilesError, Stage, TreeFiles};
use crate::validate::SCHEMA;

pub struct HiveCheckStep {
    pub store: Arc<AppStore>,
}

impl Step for HiveCheckStep {
    fn kind(&self) -> &'static str {
        "hive-check"
    }

    fn version(&self) -> u32 {
        1
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(Vec::new())
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = cx.input(0, "tree")?;
        // Make sure the tree is readable before judging it: a missing listing is an
        // unavailable input, not a failed rule.
        crate::tree::load_root(self.store.as_ref(), &tree.digest).map_err(tree_error)?;
        let files = TreeFiles::new(self.store.as_ref(), tree.digest);
        // A blob the rules could not read is an unavailable input (the engine re-runs its
        // producer), never a file the report calls absent.
        let report = match check(&files, Stage::Image) {
            Ok(report) => report,
            Err(FilesError::Tree { source, .. }) => return Err(tree_error(source)),
            Err(other) => return Err(StepError::diag(other)),
        };
        let report = report.into_result().map_err(StepError::diag)?;
        let json = serde_json::json!({"schema": SCHEMA, "checklist": "hive", "checks": report.checks});
        let bytes = serde_json::to_vec(&json).map_err(|e| StepError::msg(e.to_string()))?;
        let digest = self.store.put(&bytes).map_err(tree_error)?;
        let mut out = Outputs::new();
        out.insert(
            "report".into(),
            OutputRef {
                digest,
                size: bytes.len() as u64,
            },
        );
        Ok(out)
    }
}
