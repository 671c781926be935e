//! `scratch`: the empty tree, the base of images that start from nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::tree_error;
use crate::store::AppStore;
use crate::tree::{store_dir, store_root, Entry, Kind};

pub struct ScratchStep {
    pub store: Arc<AppStore>,
    /// The root directory's mtime.
    pub epoch: Epoch,
}

impl Step for ScratchStep {
    fn kind(&self) -> &'static str {
        "scratch"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![self.epoch.component()])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let epoch = self.epoch.resolve(self.store.as_ref(), cx)?;
        // The empty listing must be in the store too: the root names it.
        let listing = store_dir(self.store.as_ref(), &BTreeMap::new()).map_err(tree_error)?;
        let root = Entry {
            mtime: epoch,
            ..Entry::new(Kind::Dir { digest: listing }, 0o755)
        };
        let digest = store_root(self.store.as_ref(), &root).map_err(tree_error)?;
        let mut out = Outputs::new();
        out.insert("tree".into(), OutputRef { digest, size: 0 });
        Ok(out)
    }
}
