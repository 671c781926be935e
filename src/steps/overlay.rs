//! `overlay`: applies layer changesets, in order, to a base tree. Only directories on
//! touched paths are read and rewritten, so the cost follows the layers' size.

use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::tree_error;
use crate::store::AppStore;
use crate::tree::layer::{apply, Changeset};

/// Input 0 is the base (`tree`), inputs 1.. are layers (`changeset`), in order, and the
/// base's epoch when it is read from the base (see [`Epoch::FromBase`]).
pub struct OverlayStep {
    pub store: Arc<AppStore>,
    /// The layers' labels in order. Keyed so that reordering is a root cause `why` can
    /// point at, not just "inputs changed".
    pub layers: String,
    pub layers_location: Option<String>,
    /// The mtime of directories the layers' paths create.
    pub epoch: Epoch,
}

impl Step for OverlayStep {
    fn kind(&self) -> &'static str {
        "overlay"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![
            Component::param("layers", &self.layers).at(self.layers_location.clone()),
            self.epoch.component(),
        ])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let blobs = self.store.as_ref();
        let base = cx.input(0, "tree")?;
        let mut sets = Vec::new();
        let epoch = self.epoch.resolve(blobs, cx)?;
        for i in (1..cx.inputs.len()).filter(|i| Some(*i) != self.epoch.input()) {
            let c = cx.input(i, "changeset")?;
            sets.push(Changeset::load(blobs, &c.digest).map_err(tree_error)?);
        }
        cx.check_cancel()?;
        let root = apply(blobs, base.digest, &sets, epoch).map_err(tree_error)?;
        let mut out = Outputs::new();
        out.insert(
            "tree".into(),
            OutputRef {
                digest: root,
                size: 0,
            },
        );
        Ok(out)
    }
}
