//! `scratch`: the empty tree, the base of images that start from nothing.

use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::tree_error;
use crate::store::AppStore;
use crate::tree::Tree;

pub struct ScratchStep {
    pub store: Arc<AppStore>,
}

impl Step for ScratchStep {
    fn kind(&self) -> &'static str {
        "scratch"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(Vec::new())
    }
    fn run(&self, _: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = Tree::empty(self.store.as_ref()).map_err(tree_error)?;
        let mut out = Outputs::new();
        out.insert(
            "tree".into(),
            OutputRef {
                digest: tree.root(),
                size: 0,
            },
        );
        Ok(out)
    }
}
