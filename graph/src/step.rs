//! The step abstraction: what a kind of step must tell the engine, and what the engine
//! hands it when it runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use w4b_cache::{Digest, OutputRef};

use crate::cache::Cache;
use crate::key::{upstream_name, Component, ComponentKind};

/// Named outputs of a step, each a blob in the store.
pub type Outputs = BTreeMap<String, OutputRef>;

/// A kind of work with a deterministic result. Implementations live in the application.
pub trait Step: Send + Sync {
    /// The kind name, e.g. `layer`. Part of the key.
    fn kind(&self) -> &'static str;

    /// The implementation version of this kind; bump it when the output for the same
    /// inputs changes. Part of the key.
    fn version(&self) -> u32;

    /// The step's own key components (parameters, input file digests, epoch, …).
    /// Upstream outputs are added by the engine. Called once per build, possibly in
    /// parallel with other steps' planning; may read (and hash) input files.
    fn components(&self, cx: &PlanContext) -> Result<Vec<Component>, StepError>;

    /// Produces the outputs. Must be a pure function of the key's components: read only
    /// declared inputs and upstream outputs, write blobs to `cx.cache()`.
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError>;

    /// Whether results may be shared through the remote cache (false for anything
    /// derived from a secret).
    fn shareable(&self) -> bool {
        true
    }
}

/// What planning may consult.
pub struct PlanContext<'a> {
    pub name: &'a str,
}

/// What a running step gets: its upstream outputs (in dependency order), the store,
/// cancellation and progress, where to report the trees behind its inputs, and a line
/// for people about what it did.
pub struct RunContext<'a> {
    pub name: &'a str,
    pub inputs: &'a [Outputs],
    pub cache: &'a dyn Cache,
    pub cancel: &'a AtomicBool,
    pub progress: &'a (dyn Fn(u64, Option<u64>) + Sync),
    pub trees: &'a InputTrees,
    /// Receives [`RunContext::note`]s; the engine shows them as `note` events.
    pub note: &'a (dyn Fn(&str) + Sync),
}

/// The trees a running step reported for its tree-valued key components (see
/// [`RunContext::input_tree`]); the engine records each next to its component.
#[derive(Debug, Default)]
pub struct InputTrees(Mutex<BTreeMap<(ComponentKind, String), Digest>>);

impl InputTrees {
    /// The tree reported for the component `(kind, name)`, if any.
    pub fn get(&self, kind: ComponentKind, name: &str) -> Option<Digest> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(kind, name.to_owned()))
            .copied()
    }

    fn insert(&self, kind: ComponentKind, name: String, root: Digest) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((kind, name), root);
    }
}

impl RunContext<'_> {
    /// The single output named `output` of upstream `index`.
    pub fn input(&self, index: usize, output: &str) -> Result<OutputRef, StepError> {
        self.inputs
            .get(index)
            .and_then(|o| o.get(output))
            .copied()
            .ok_or_else(|| StepError::Failed {
                message: format!("upstream #{index} has no output `{output}`"),
                help: Some("this is a bug in how the graph was compiled".into()),
            })
    }

    /// Fails with [`StepError::Cancelled`] once the user interrupted the build.
    pub fn check_cancel(&self) -> Result<(), StepError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(StepError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports progress in the step's own unit (usually bytes).
    pub fn progress(&self, done: u64, total: Option<u64>) {
        (self.progress)(done, total)
    }

    /// Tells the user, in one line, what the step did beyond producing its outputs (how
    /// much it reused, say). Shown with the step's result; never part of any output.
    pub fn note(&self, message: &str) {
        (self.note)(message)
    }

    /// Says that the key component `(kind, name)`, a digest standing for a whole tree of
    /// files (a host directory), has the content of the tree `root`, stored in the cache.
    /// The record keeps `root` next to the component (never hashed), so `why` can name the
    /// files that differ between two builds by walking only the subtrees that differ.
    pub fn input_tree(&self, kind: ComponentKind, name: &str, root: Digest) {
        self.trees.insert(kind, name.to_owned(), root);
    }

    /// [`input_tree`](Self::input_tree) for the output `output` of upstream `index` (an
    /// archive the step unpacked): `root` is the tree of what the archive holds.
    pub fn upstream_tree(&self, index: usize, output: &str, root: Digest) {
        self.trees
            .insert(ComponentKind::Upstream, upstream_name(index, output), root);
    }
}

/// Why a step failed. `InputUnavailable` is special: the engine repairs the input by
/// re-running its producer and retries the step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("input blob {0} is missing or corrupt")]
    InputUnavailable(Digest),
    #[error("interrupted")]
    Cancelled,
    #[error("{message}")]
    Failed { message: String, help: Option<String> },
    #[error(transparent)]
    Diagnostic(Box<dyn miette::Diagnostic + Send + Sync + 'static>),
}

impl StepError {
    pub fn msg(message: impl Into<String>) -> StepError {
        StepError::Failed {
            message: message.into(),
            help: None,
        }
    }

    pub fn diag(d: impl miette::Diagnostic + Send + Sync + 'static) -> StepError {
        StepError::Diagnostic(Box::new(d))
    }

    /// `context: error: cause: …` — the whole chain of `error`'s sources, so a wrapped
    /// operating-system error (`No space left on device`) is never lost to a summary.
    pub fn context(context: impl std::fmt::Display, error: &(dyn std::error::Error + 'static)) -> StepError {
        let mut message = format!("{context}: {error}");
        let mut src = error.source();
        while let Some(inner) = src {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            src = inner.source();
        }
        StepError::msg(message)
    }
}
