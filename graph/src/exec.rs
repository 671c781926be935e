//! Execution: plan every step's key components in parallel, then run the graph with a
//! pool of workers, consulting the cache before each step and publishing after.
//!
//! Keys are computed just in time, when all of a step's inputs are known, because a key
//! contains its inputs' *output* digests: a step that re-runs and produces the same bytes
//! leaves its consumers' keys unchanged (early cutoff).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use w4b_cache::{Digest, PreimageEntry, Producer, Record, RECORD_SCHEMA};

use crate::cache::{Cache, Lookup, MissReason};
use crate::graph::{Graph, NodeId};
use crate::key::{upstream_name, Component, ComponentKind, Preimage, KEY_SCHEMA};
use crate::step::{InputTrees, Outputs, PlanContext, RunContext, StepError};

/// How a step ended in this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Ran,
    Cached,
    Failed,
    /// Not started: an input failed or the build was interrupted.
    Skipped,
}

/// Live events for progress displays and `--message-format json`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event<'a> {
    Planned {
        steps: usize,
    },
    StepStarted {
        step: &'a str,
        kind: &'a str,
        key: String,
        /// Why the step runs instead of being served from the cache.
        #[serde(skip_serializing_if = "Option::is_none")]
        miss: Option<&'a MissReason>,
    },
    StepProgress {
        step: &'a str,
        done: u64,
        total: Option<u64>,
    },
    StepFinished {
        step: &'a str,
        kind: &'a str,
        status: StepStatus,
        key: String,
        duration_ms: u64,
        outputs: &'a Outputs,
        #[serde(skip_serializing_if = "Option::is_none")]
        miss: Option<&'a MissReason>,
    },
    StepFailed {
        step: &'a str,
        kind: &'a str,
        error: String,
    },
    /// A running step's line for people about what it did ([`RunContext::note`]).
    StepNote {
        step: &'a str,
        message: &'a str,
    },
    /// A started step found an input missing or corrupt; its producer is re-run and the
    /// step starts again.
    StepRetrying {
        step: &'a str,
        reason: String,
    },
}

pub trait Observer: Sync {
    fn event(&self, event: &Event<'_>);
}

/// Ignores every event.
pub struct Silent;
impl Observer for Silent {
    fn event(&self, _: &Event<'_>) {}
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub jobs: usize,
    /// Ignore cached results (still publish new ones).
    pub force: bool,
    /// Keep running independent steps after a failure.
    pub keep_going: bool,
    /// Run these steps even if cached (used to repair an output found corrupt after a
    /// hit, e.g. while exporting it).
    pub force_nodes: BTreeMap<NodeId, MissReason>,
    pub producer: Producer,
}

/// The result of one step in a build.
#[derive(Clone, Debug)]
pub struct StepResult {
    pub name: String,
    pub kind: String,
    pub status: StepStatus,
    pub key: Option<Digest>,
    pub outputs: Outputs,
    pub miss: Option<MissReason>,
    pub duration_ms: u64,
}

pub struct Failure {
    pub step: String,
    pub error: StepError,
}

pub struct BuildReport {
    pub results: BTreeMap<NodeId, StepResult>,
    pub failures: Vec<Failure>,
    pub cancelled: bool,
}

impl BuildReport {
    pub fn count(&self, status: StepStatus) -> usize {
        self.results.values().filter(|r| r.status == status).count()
    }
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && !self.cancelled && self.count(StepStatus::Skipped) == 0
    }
}

/// Errors before any step ran.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("planning `{step}` failed")]
    Step {
        step: String,
        #[source]
        error: StepError,
    },
}

pub struct Engine<'a> {
    pub graph: &'a Graph,
    pub cache: &'a dyn Cache,
    pub observer: &'a dyn Observer,
    pub cancel: &'a AtomicBool,
    pub options: BuildOptions,
}

struct State {
    waiting: BTreeMap<NodeId, usize>,
    ready: VecDeque<NodeId>,
    running: usize,
    results: BTreeMap<NodeId, StepResult>,
    failures: Vec<Failure>,
    stop: bool,
    inflight: BTreeSet<Digest>,
}

impl Engine<'_> {
    /// Builds `targets` and everything they need.
    pub fn build(&self, targets: &[NodeId]) -> Result<BuildReport, PlanError> {
        let order = self.graph.closure(targets);
        self.observer.event(&Event::Planned { steps: order.len() });

        // Planning: each step's own components, in parallel (this hashes input files).
        let planned: Vec<(NodeId, Result<Vec<Component>, StepError>)> = order
            .par_iter()
            .map(|&id| {
                let node = self.graph.node(id);
                (id, node.step.components(&PlanContext { name: &node.name }))
            })
            .collect();
        let mut own = BTreeMap::new();
        for (id, r) in planned {
            match r {
                Ok(c) => {
                    own.insert(id, c);
                }
                Err(error) => {
                    return Err(PlanError::Step {
                        step: self.graph.node(id).name.clone(),
                        error,
                    })
                }
            }
        }

        let in_closure: BTreeSet<NodeId> = order.iter().copied().collect();
        let mut waiting = BTreeMap::new();
        let mut ready = VecDeque::new();
        for &id in &order {
            let n = self.graph.node(id).deps.iter().collect::<BTreeSet<_>>().len();
            if n == 0 {
                ready.push_back(id);
            } else {
                waiting.insert(id, n);
            }
        }
        let state = Mutex::new(State {
            waiting,
            ready,
            running: 0,
            results: BTreeMap::new(),
            failures: Vec::new(),
            stop: false,
            inflight: BTreeSet::new(),
        });
        let cv = Condvar::new();
        let jobs = self.options.jobs.max(1).min(order.len().max(1));

        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| self.worker(&state, &cv, &own, &in_closure));
            }
        });

        let st = state.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut results = st.results;
        for &id in &order {
            results.entry(id).or_insert_with(|| {
                let node = self.graph.node(id);
                StepResult {
                    name: node.name.clone(),
                    kind: node.step.kind().to_string(),
                    status: StepStatus::Skipped,
                    key: None,
                    outputs: Outputs::new(),
                    miss: None,
                    duration_ms: 0,
                }
            });
        }
        Ok(BuildReport {
            results,
            failures: st.failures,
            cancelled: self.cancel.load(Ordering::Relaxed),
        })
    }

    fn worker(
        &self,
        state: &Mutex<State>,
        cv: &Condvar,
        own: &BTreeMap<NodeId, Vec<Component>>,
        in_closure: &BTreeSet<NodeId>,
    ) {
        loop {
            let id = {
                let mut st = lock(state);
                loop {
                    if st.stop || self.cancel.load(Ordering::Relaxed) {
                        st.stop = true;
                        cv.notify_all();
                        return;
                    }
                    if let Some(id) = st.ready.pop_front() {
                        st.running += 1;
                        break id;
                    }
                    if st.running == 0 {
                        cv.notify_all();
                        return;
                    }
                    st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let outcome = self.process(id, state, cv, own);
            let mut st = lock(state);
            st.running -= 1;
            match outcome {
                Ok(result) => {
                    st.results.insert(id, result);
                    for dep in self.graph.dependents(id) {
                        if !in_closure.contains(&dep) {
                            continue;
                        }
                        if let Some(n) = st.waiting.get_mut(&dep) {
                            *n -= 1;
                            if *n == 0 {
                                st.waiting.remove(&dep);
                                st.ready.push_back(dep);
                            }
                        }
                    }
                }
                Err(boxed) => {
                    let (result, failure) = *boxed;
                    st.results.insert(id, result);
                    if !matches!(failure.error, StepError::Cancelled) {
                        st.failures.push(failure);
                    }
                    if !self.options.keep_going {
                        st.stop = true;
                    }
                }
            }
            cv.notify_all();
        }
    }

    fn upstream(&self, id: NodeId, state: &Mutex<State>) -> Vec<Outputs> {
        let st = lock(state);
        self.graph
            .node(id)
            .deps
            .iter()
            .map(|d| st.results.get(d).map(|r| r.outputs.clone()).unwrap_or_default())
            .collect()
    }

    fn preimage(&self, id: NodeId, own: &[Component], inputs: &[Outputs]) -> Result<Preimage, StepError> {
        let node = self.graph.node(id);
        let mut comps = vec![
            Component::new(ComponentKind::Schema, "schema", KEY_SCHEMA.to_string()),
            Component::new(ComponentKind::Kind, "kind", node.step.kind()),
            Component::new(ComponentKind::Version, "version", node.step.version().to_string()),
        ];
        comps.extend(own.iter().cloned());
        for (i, outs) in inputs.iter().enumerate() {
            let from = self.graph.node(node.deps[i]).name.clone();
            for (name, r) in outs {
                comps.push(
                    Component::new(ComponentKind::Upstream, upstream_name(i, name), r.digest.to_hex())
                        .at(Some(from.clone())),
                );
            }
        }
        Preimage::new(comps).map_err(StepError::diag)
    }

    /// Looks up or runs one step; on `InputUnavailable` re-runs the producer and retries.
    fn process(
        &self,
        id: NodeId,
        state: &Mutex<State>,
        cv: &Condvar,
        own: &BTreeMap<NodeId, Vec<Component>>,
    ) -> Result<StepResult, Box<(StepResult, Failure)>> {
        self.process_inner(id, state, cv, own, None, 0)
    }

    fn process_inner(
        &self,
        id: NodeId,
        state: &Mutex<State>,
        cv: &Condvar,
        own: &BTreeMap<NodeId, Vec<Component>>,
        forced: Option<MissReason>,
        depth: usize,
    ) -> Result<StepResult, Box<(StepResult, Failure)>> {
        let node = self.graph.node(id);
        let kind = node.step.kind();
        let fail = |key: Option<Digest>, error: StepError| {
            // An interrupted step did not fail: it is reported as not run.
            let cancelled = matches!(error, StepError::Cancelled);
            if !cancelled {
                self.observer.event(&Event::StepFailed {
                    step: &node.name,
                    kind,
                    error: render_error(&error),
                });
            }
            Box::new((
                StepResult {
                    name: node.name.clone(),
                    kind: kind.to_string(),
                    status: if cancelled {
                        StepStatus::Skipped
                    } else {
                        StepStatus::Failed
                    },
                    key,
                    outputs: Outputs::new(),
                    miss: None,
                    duration_ms: 0,
                },
                Failure {
                    step: node.name.clone(),
                    error,
                },
            ))
        };
        let empty = Vec::new();
        let own_comps = own.get(&id).unwrap_or(&empty);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let inputs = self.upstream(id, state);
            let preimage = self.preimage(id, own_comps, &inputs).map_err(|e| fail(None, e))?;
            let key = preimage.key();

            // Identical keys run once: wait while another worker runs this key.
            {
                let mut st = lock(state);
                while st.inflight.contains(&key) {
                    st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.inflight.insert(key);
            }
            let result = self.lookup_or_run(id, &key, &preimage, &inputs, forced.clone());
            {
                let mut st = lock(state);
                st.inflight.remove(&key);
                cv.notify_all();
            }
            match result {
                Ok(r) => return Ok(r),
                Err(StepError::InputUnavailable(digest)) if attempts <= 3 && depth < 16 => {
                    // Re-run the producer of the unavailable blob, then retry. A blob that is
                    // no direct output (a file inside a tree, say) may come from anywhere
                    // upstream: first re-run the direct inputs, and if that was not enough,
                    // every ancestor, in order.
                    self.observer.event(&Event::StepRetrying {
                        step: &node.name,
                        reason: format!("input blob {} is missing or corrupt", digest.short(12)),
                    });
                    let direct = node
                        .deps
                        .iter()
                        .enumerate()
                        .find(|(i, _)| inputs[*i].values().any(|o| o.digest == digest))
                        .map(|(_, d)| vec![*d]);
                    let to_repair = match direct {
                        Some(d) => d,
                        None if attempts == 1 => node.deps.clone(),
                        None => self.graph.closure(&node.deps),
                    };
                    for dep in to_repair {
                        let repaired = self.process_inner(
                            dep,
                            state,
                            cv,
                            own,
                            Some(MissReason::Repair { digest }),
                            depth + 1,
                        );
                        match repaired {
                            Ok(r) => {
                                lock(state).results.insert(dep, r);
                            }
                            Err(boxed) => {
                                let (result, failure) = *boxed;
                                let upstream = failure.step.clone();
                                lock(state).results.insert(dep, result);
                                return Err(fail(
                                    Some(key),
                                    StepError::msg(format!(
                                        "re-running input step `{upstream}` to repair it failed: {}",
                                        render_error(&failure.error)
                                    )),
                                ));
                            }
                        }
                    }
                }
                Err(e) => return Err(fail(Some(key), e)),
            }
        }
    }

    fn lookup_or_run(
        &self,
        id: NodeId,
        key: &Digest,
        preimage: &Preimage,
        inputs: &[Outputs],
        forced: Option<MissReason>,
    ) -> Result<StepResult, StepError> {
        let node = self.graph.node(id);
        let kind = node.step.kind();
        let miss = if let Some(reason) = forced {
            reason
        } else if let Some(reason) = self.options.force_nodes.get(&id) {
            reason.clone()
        } else if self.options.force {
            MissReason::Forced
        } else {
            match self.cache.lookup(&node.name, key) {
                Ok(Lookup::Hit(outputs)) => {
                    self.observer.event(&Event::StepFinished {
                        step: &node.name,
                        kind,
                        status: StepStatus::Cached,
                        key: key.to_hex(),
                        duration_ms: 0,
                        outputs: &outputs,
                        miss: None,
                    });
                    return Ok(StepResult {
                        name: node.name.clone(),
                        kind: kind.to_string(),
                        status: StepStatus::Cached,
                        key: Some(*key),
                        outputs,
                        miss: None,
                        duration_ms: 0,
                    });
                }
                Ok(Lookup::Miss(reason)) => reason,
                Err(e) => return Err(StepError::msg(format!("cache lookup failed: {e}"))),
            }
        };

        self.observer.event(&Event::StepStarted {
            step: &node.name,
            kind,
            key: key.to_hex(),
            miss: Some(&miss),
        });
        let started = Instant::now();
        let progress = |done: u64, total: Option<u64>| {
            self.observer.event(&Event::StepProgress {
                step: &node.name,
                done,
                total,
            })
        };
        let note = |message: &str| {
            self.observer.event(&Event::StepNote {
                step: &node.name,
                message,
            })
        };
        let trees = InputTrees::default();
        let cx = RunContext {
            name: &node.name,
            inputs,
            cache: self.cache,
            cancel: self.cancel,
            progress: &progress,
            trees: &trees,
            note: &note,
        };
        // A panicking step must not take the engine down with it (a worker that never
        // returns would leave the others waiting forever).
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.step.run(&cx)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(StepError::Failed {
                    message: format!("the step panicked: {what}"),
                    help: Some(
                        "this is a bug in w4b; please report it with the definitions that trigger it".into(),
                    ),
                })
            })?;
        if self.cancel.load(Ordering::Relaxed) {
            // A step that may have been cut short is never recorded.
            return Err(StepError::Cancelled);
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        let record = Record {
            schema: RECORD_SCHEMA.to_string(),
            key: *key,
            step: node.name.clone(),
            kind: kind.to_string(),
            preimage: preimage
                .components()
                .iter()
                .map(|c| PreimageEntry {
                    component: c.kind.as_str().to_string(),
                    name: c.name.clone(),
                    value: c.value.clone(),
                    location: c.location.clone(),
                    tree: trees.get(c.kind, &c.name),
                })
                .collect(),
            outputs: outputs.clone(),
            duration_ms,
            producer: self.options.producer.clone(),
            signature: None,
        };
        self.cache
            .publish(&record, self.graph.shareable(id))
            .map_err(|e| StepError::msg(format!("storing the result of `{}` failed: {e}", node.name)))?;
        self.observer.event(&Event::StepFinished {
            step: &node.name,
            kind,
            status: StepStatus::Ran,
            key: key.to_hex(),
            duration_ms,
            outputs: &outputs,
            miss: Some(&miss),
        });
        Ok(StepResult {
            name: node.name.clone(),
            kind: kind.to_string(),
            status: StepStatus::Ran,
            key: Some(*key),
            outputs,
            miss: Some(miss),
            duration_ms,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One line per cause, for events and logs.
pub fn render_error(e: &StepError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
