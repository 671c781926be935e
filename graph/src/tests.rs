//! Engine tests against an in-memory cache with fault injection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use w4b_cache::{Digest, OutputRef, Producer, Record};

use crate::cache::{Cache, CacheResult, Lookup, MissReason};
use crate::exec::{BuildOptions, Engine, Silent, StepStatus};
use crate::explain::{explain, NoTrees, PathChange, PathStatus, TreeDiff, WhyStatus};
use crate::graph::{identity, Graph, NodeId};
use crate::history;
use crate::key::{Component, ComponentKind};
use crate::step::{Outputs, PlanContext, RunContext, Step, StepError};

#[derive(Default)]
struct MemCache {
    blobs: Mutex<BTreeMap<Digest, Vec<u8>>>,
    records: Mutex<BTreeMap<Digest, Vec<Record>>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Cache for MemCache {
    fn lookup(&self, _step: &str, key: &Digest) -> CacheResult<Lookup> {
        let recs = self.records.lock().unwrap();
        let Some(r) = recs.get(key).and_then(|v| v.first()) else {
            return Ok(Lookup::Miss(MissReason::NoRecord));
        };
        let blobs = self.blobs.lock().unwrap();
        for (name, o) in &r.outputs {
            if !blobs.contains_key(&o.digest) {
                return Ok(Lookup::Miss(MissReason::OutputMissing {
                    output: name.clone(),
                    digest: o.digest,
                }));
            }
        }
        Ok(Lookup::Hit(r.outputs.clone()))
    }
    fn publish(&self, record: &Record, _: bool) -> CacheResult<()> {
        let mut recs = self.records.lock().unwrap();
        let v = recs.entry(record.key).or_default();
        if !v.iter().any(|r| r.outputs == record.outputs) {
            v.push(record.clone());
        }
        Ok(())
    }
    fn records(&self, key: &Digest) -> CacheResult<Vec<Record>> {
        Ok(self.records.lock().unwrap().get(key).cloned().unwrap_or_default())
    }
    fn put(&self, bytes: &[u8]) -> CacheResult<Digest> {
        let d = Digest::of(bytes);
        self.blobs.lock().unwrap().insert(d, bytes.to_vec());
        Ok(d)
    }
    fn get(&self, digest: &Digest) -> CacheResult<Vec<u8>> {
        match self.blobs.lock().unwrap().get(digest) {
            Some(b) if Digest::of(b) == *digest => Ok(b.clone()),
            _ => Err("missing or corrupt".into()),
        }
    }
    fn read_meta(&self, name: &str) -> CacheResult<Option<Vec<u8>>> {
        Ok(self.meta.lock().unwrap().get(name).cloned())
    }
    fn write_meta(&self, name: &str, bytes: &[u8]) -> CacheResult<()> {
        self.meta.lock().unwrap().insert(name.into(), bytes.to_vec());
        Ok(())
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Concatenates a parameter with its inputs' bytes; `lossy` keeps only the length of the
/// parameter, so different parameters can give identical outputs (for cutoff tests).
struct Concat {
    param: String,
    lossy: bool,
    fail: bool,
    runs: Arc<AtomicUsize>,
}

impl Step for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![
            Component::param("param", &self.param).at(Some("defs/x.yaml:1:1".into()))
        ])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.fail {
            return Err(StepError::msg("boom"));
        }
        let mut bytes = if self.lossy {
            self.param.len().to_string().into_bytes()
        } else {
            self.param.clone().into_bytes()
        };
        for i in 0..cx.inputs.len() {
            let o = cx.input(i, "out")?;
            let b = cx
                .cache
                .get(&o.digest)
                .map_err(|_| StepError::InputUnavailable(o.digest))?;
            bytes.extend_from_slice(&b);
        }
        let d = cx.cache.put(&bytes).map_err(|e| StepError::msg(e.to_string()))?;
        let mut out = Outputs::new();
        out.insert(
            "out".into(),
            OutputRef {
                digest: d,
                size: bytes.len() as u64,
            },
        );
        Ok(out)
    }
}

struct Fixture {
    graph: Graph,
    runs: Vec<Arc<AtomicUsize>>,
    ids: Vec<NodeId>,
}

/// a -> b -> c, with a's parameter and lossiness chosen by the test.
fn chain(a_param: &str, lossy: bool) -> Fixture {
    let mut graph = Graph::new();
    let mut runs = Vec::new();
    let mut ids: Vec<NodeId> = Vec::new();
    for (i, (name, param)) in [("//t:x#a", a_param), ("//t:x#b", "b"), ("//t:x#c", "c")]
        .iter()
        .enumerate()
    {
        let r = Arc::new(AtomicUsize::new(0));
        runs.push(r.clone());
        let deps: Vec<NodeId> = ids.last().copied().into_iter().collect();
        let dep_nodes: Vec<_> = deps.iter().map(|d| graph.node(*d)).collect();
        let idn = identity("concat", param.as_bytes(), &dep_nodes);
        let step = Arc::new(Concat {
            param: param.to_string(),
            lossy: lossy && i == 0,
            fail: false,
            runs: r,
        });
        ids.push(graph.add(*name, idn, step, deps));
    }
    Fixture { graph, runs, ids }
}

fn opts() -> BuildOptions {
    BuildOptions {
        jobs: 4,
        force: false,
        keep_going: false,
        force_nodes: Default::default(),
        producer: Producer {
            tool: "test".into(),
            host: None,
        },
    }
}

fn build(f: &Fixture, cache: &MemCache) -> crate::exec::BuildReport {
    let cancel = AtomicBool::new(false);
    let engine = Engine {
        graph: &f.graph,
        cache,
        observer: &Silent,
        cancel: &cancel,
        options: opts(),
    };
    let target = *f.ids.last().unwrap();
    let report = engine.build(&[target]).unwrap();
    history::record(cache, &f.graph, &report, "//t:x", &[target]).unwrap();
    report
}

fn runs(f: &Fixture) -> Vec<usize> {
    f.runs.iter().map(|r| r.load(Ordering::SeqCst)).collect()
}

#[test]
fn rebuild_is_all_cached() {
    let cache = MemCache::default();
    let f = chain("a", false);
    let r = build(&f, &cache);
    assert_eq!(r.count(StepStatus::Ran), 3);
    let r = build(&f, &cache);
    assert_eq!(r.count(StepStatus::Cached), 3);
    assert_eq!(runs(&f), vec![1, 1, 1]);
}

#[test]
fn change_propagates_and_why_names_it() {
    let cache = MemCache::default();
    build(&chain("a", false), &cache);
    let f2 = chain("A", false);
    let r = build(&f2, &cache);
    assert_eq!(r.count(StepStatus::Ran), 3);
    let h = history::load(&cache, "//t:x").unwrap().unwrap();
    let why = explain(&cache, &NoTrees, &h);
    assert_eq!(why.steps.len(), 3);
    assert_eq!(why.steps[0].status, WhyStatus::Root);
    assert_eq!(why.steps[0].label, "//t:x#a");
    assert_eq!(why.steps[0].changes[0].name, "param");
    assert_eq!(why.steps[0].changes[0].old.as_deref(), Some("a"));
    assert_eq!(why.steps[0].changes[0].new.as_deref(), Some("A"));
    assert_eq!(
        why.steps[0].changes[0].location.as_deref(),
        Some("defs/x.yaml:1:1")
    );
    assert_eq!(why.steps[1].status, WhyStatus::Propagated);
    assert_eq!(why.steps[1].because_of, vec!["//t:x#a".to_string()]);
    assert_eq!(why.steps[2].status, WhyStatus::Propagated);
}

#[test]
fn identical_output_cuts_off() {
    let cache = MemCache::default();
    build(&chain("aa", true), &cache);
    let f2 = chain("bb", true); // same length -> same output
    let r = build(&f2, &cache);
    assert_eq!(runs(&f2), vec![1, 0, 0]);
    assert_eq!(r.count(StepStatus::Cached), 2);
    let why = explain(
        &cache,
        &NoTrees,
        &history::load(&cache, "//t:x").unwrap().unwrap(),
    );
    assert_eq!(why.steps[0].status, WhyStatus::Root);
    assert_eq!(why.steps[0].output_changed, Some(false));
    assert_eq!(why.steps[1].status, WhyStatus::Cutoff);
    assert_eq!(why.summary.cutoff, 1);
}

#[test]
fn failures_are_not_cached_and_skip_dependents() {
    let cache = MemCache::default();
    let mut graph = Graph::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let a = graph.add(
        "//t:f#a",
        identity("concat", b"a", &[]),
        Arc::new(Concat {
            param: "a".into(),
            lossy: false,
            fail: true,
            runs: runs.clone(),
        }),
        vec![],
    );
    let b = graph.add(
        "//t:f#b",
        identity("concat", b"b", &[graph.node(a)]),
        Arc::new(Concat {
            param: "b".into(),
            lossy: false,
            fail: false,
            runs: runs.clone(),
        }),
        vec![a],
    );
    let cancel = AtomicBool::new(false);
    let engine = Engine {
        graph: &graph,
        cache: &cache,
        observer: &Silent,
        cancel: &cancel,
        options: opts(),
    };
    let r = engine.build(&[b]).unwrap();
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.results[&a].status, StepStatus::Failed);
    assert_eq!(r.results[&b].status, StepStatus::Skipped);
    assert!(cache.records.lock().unwrap().is_empty());
    assert!(!history::record(&cache, &graph, &r, "//t:f", &[b]).unwrap());
}

#[test]
fn evicted_input_is_repaired() {
    let cache = MemCache::default();
    let f = chain("a", false);
    build(&f, &cache);
    // Evict c's record (so c must run) and b's output blob (so c's input is unavailable).
    let c_key = build(&f, &cache).results[&f.ids[2]].key.unwrap();
    cache.records.lock().unwrap().remove(&c_key);
    let b_out = cache
        .records
        .lock()
        .unwrap()
        .values()
        .flatten()
        .find(|r| r.step == "//t:x#b")
        .unwrap()
        .outputs["out"]
        .digest;
    cache.blobs.lock().unwrap().remove(&b_out);
    let r = build(&f, &cache);
    assert!(r.ok());
    // b re-ran once (lookup saw its missing output) and c ran.
    assert_eq!(runs(&f), vec![1, 2, 2]);
    let why = explain(
        &cache,
        &NoTrees,
        &history::load(&cache, "//t:x").unwrap().unwrap(),
    );
    assert!(why.steps.iter().all(|s| s.status == WhyStatus::Miss));
    assert_eq!(why.steps.len(), 2);
}

#[test]
fn corrupt_input_is_repaired_by_rerunning_producer() {
    let cache = MemCache::default();
    let f = chain("a", false);
    let first = build(&f, &cache);
    let c_key = first.results[&f.ids[2]].key.unwrap();
    cache.records.lock().unwrap().remove(&c_key);
    let b_out = first.results[&f.ids[1]].outputs["out"].digest;
    cache.blobs.lock().unwrap().get_mut(&b_out).unwrap()[0] ^= 1; // present but corrupt
    let r = build(&f, &cache);
    assert!(r.ok());
    // c ran, found its input corrupt, b re-ran (repair), c ran again.
    assert_eq!(runs(&f), vec![1, 2, 3]);
    assert!(matches!(
        r.results[&f.ids[1]].miss,
        Some(MissReason::Repair { .. })
    ));
    assert_eq!(r.results[&f.ids[2]].outputs, first.results[&f.ids[2]].outputs);
}

#[test]
fn identical_nodes_are_shared() {
    let mut graph = Graph::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let mk = || {
        Arc::new(Concat {
            param: "x".into(),
            lossy: false,
            fail: false,
            runs: runs.clone(),
        })
    };
    let a = graph.add("//images:b#motd", identity("concat", b"x", &[]), mk(), vec![]);
    let b = graph.add("//images:a#motd", identity("concat", b"x", &[]), mk(), vec![]);
    assert_eq!(a, b);
    assert_eq!(graph.node(a).name, "//images:a#motd");
    assert_eq!(graph.node(a).aliases, vec!["//images:b#motd".to_string()]);
    assert_eq!(graph.len(), 1);
}

#[test]
fn wide_graph_runs_in_parallel_and_once_each() {
    let cache = MemCache::default();
    let mut graph = Graph::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut leaves = Vec::new();
    for i in 0..200 {
        let p = format!("p{i}");
        leaves.push(graph.add(
            format!("//t:w#{i}"),
            identity("concat", p.as_bytes(), &[]),
            Arc::new(Concat {
                param: p,
                lossy: false,
                fail: false,
                runs: runs.clone(),
            }),
            vec![],
        ));
    }
    let deps: Vec<_> = leaves.iter().map(|l| graph.node(*l)).collect();
    let top_id = identity("concat", b"top", &deps);
    let top = graph.add(
        "//t:w#top",
        top_id,
        Arc::new(Concat {
            param: "top".into(),
            lossy: false,
            fail: false,
            runs: runs.clone(),
        }),
        leaves.clone(),
    );
    let cancel = AtomicBool::new(false);
    let engine = Engine {
        graph: &graph,
        cache: &cache,
        observer: &Silent,
        cancel: &cancel,
        options: opts(),
    };
    let r = engine.build(&[top]).unwrap();
    assert!(r.ok());
    assert_eq!(runs.load(Ordering::SeqCst), 201);
    let out = cache.get(&r.results[&top].outputs["out"].digest).unwrap();
    let expected: String = std::iter::once("top".to_string())
        .chain((0..200).map(|i| format!("p{i}")))
        .collect();
    assert_eq!(out, expected.into_bytes());
}

#[test]
fn cancelled_build_records_nothing_new() {
    let cache = MemCache::default();
    let f = chain("a", false);
    let cancel = AtomicBool::new(true);
    let engine = Engine {
        graph: &f.graph,
        cache: &cache,
        observer: &Silent,
        cancel: &cancel,
        options: opts(),
    };
    let r = engine.build(&[f.ids[2]]).unwrap();
    assert!(r.cancelled);
    assert!(!r.ok());
    assert!(cache.records.lock().unwrap().is_empty());
}

struct Panics;

impl Step for Panics {
    fn kind(&self) -> &'static str {
        "panics"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![])
    }
    fn run(&self, _: &RunContext<'_>) -> Result<Outputs, StepError> {
        panic!("boom")
    }
}

#[test]
fn a_panicking_step_fails_the_build_without_hanging_it() {
    let cache = MemCache::default();
    let mut graph = Graph::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let p = graph.add(
        "//t:p#panics",
        identity("panics", b"", &[]),
        Arc::new(Panics),
        vec![],
    );
    let others: Vec<_> = (0..2)
        .map(|i| {
            let param = format!("o{i}");
            graph.add(
                format!("//t:p#o{i}"),
                identity("concat", param.as_bytes(), &[]),
                Arc::new(Concat {
                    param,
                    lossy: false,
                    fail: false,
                    runs: runs.clone(),
                }),
                vec![],
            )
        })
        .collect();
    let cancel = AtomicBool::new(false);
    let engine = Engine {
        graph: &graph,
        cache: &cache,
        observer: &Silent,
        cancel: &cancel,
        options: opts(),
    };
    let mut roots = others.clone();
    roots.push(p);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = engine.build(&roots).unwrap();
            let _ = tx.send((r.failures.len(), r.results[&p].status));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("engine hung after a step panicked");
        assert_eq!(got, (1, StepStatus::Failed));
    });
}

/// A step that is not shareable (derived from a secret), wrapping a `Concat`.
struct Secretive(Concat);

impl Step for Secretive {
    fn kind(&self) -> &'static str {
        "secretive"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, cx: &PlanContext) -> Result<Vec<Component>, StepError> {
        self.0.components(cx)
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        self.0.run(cx)
    }
    fn shareable(&self) -> bool {
        false
    }
}

#[test]
fn what_is_derived_from_an_unshareable_step_is_unshareable() {
    let mut graph = Graph::new();
    let concat = |p: &str| Concat {
        param: p.into(),
        lossy: false,
        fail: false,
        runs: Arc::new(AtomicUsize::new(0)),
    };
    let a = graph.add(
        "//t:x#a",
        identity("concat", b"a", &[]),
        Arc::new(concat("a")),
        vec![],
    );
    let s = graph.add(
        "//t:x#s",
        identity("secretive", b"s", &[]),
        Arc::new(Secretive(concat("s"))),
        vec![],
    );
    let ids = [a, s];
    let nodes: Vec<_> = ids.iter().map(|d| graph.node(*d)).collect();
    let both = graph.add(
        "//t:x#both",
        identity("concat", b"both", &nodes),
        Arc::new(concat("both")),
        vec![a, s],
    );
    let after = graph.add(
        "//t:x#after",
        identity("concat", b"after", &[graph.node(both)]),
        Arc::new(concat("after")),
        vec![both],
    );
    assert!(graph.shareable(a));
    assert!(!graph.shareable(s));
    assert!(!graph.shareable(both));
    assert!(!graph.shareable(after));
}

/// The history is compared by bytes on a repeat build; the byte comparison must agree with
/// the decoded one: a repeat leaves the file as it is, a change adds a build, and a history
/// written in another formatting (pretty JSON) is still read and still recognised.
#[test]
fn history_repeat_is_recognised_by_bytes_and_by_value() {
    let cache = MemCache::default();
    let meta = || cache.meta.lock().unwrap().clone();
    let f = chain("a", false);
    build(&f, &cache); // ran
    build(&f, &cache); // cached: a change of status
    let settled = meta();
    assert_eq!(settled.len(), 1);
    assert_eq!(history::load(&cache, "//t:x").unwrap().unwrap().builds.len(), 2);
    build(&f, &cache);
    assert_eq!(meta(), settled, "a repeat leaves the history as it is");

    let f2 = chain("b", false);
    build(&f2, &cache);
    let h = history::load(&cache, "//t:x").unwrap().unwrap();
    assert_eq!(
        h.builds[0].steps[0].status,
        StepStatus::Ran,
        "a change is recorded"
    );
    build(&f2, &cache);
    let h = history::load(&cache, "//t:x").unwrap().unwrap();
    let changed = meta();
    assert_ne!(changed, settled);

    // Pretty-printed by someone else: not a byte match, but the same newest build.
    let (name, _) = changed.iter().next().unwrap();
    let pretty = serde_json::to_vec_pretty(&h).unwrap();
    cache.meta.lock().unwrap().insert(name.clone(), pretty.clone());
    build(&f2, &cache);
    assert_eq!(cache.meta.lock().unwrap()[name], pretty, "recognised by value");
    build(&f, &cache);
    let h2 = history::load(&cache, "//t:x").unwrap().unwrap();
    assert_eq!(h2.builds[1], h.builds[0], "the pretty file was read");
    assert_ne!(h2.builds[0], h2.builds[1]);
}

/// A host directory as a key component: its value is a digest of `files`, and running it
/// reports the tree `tree:<files>` for that component. With `unpack`, it is instead an
/// archive's unpacker: it reports a tree for its upstream output.
struct TreeInput {
    files: String,
    unpack: bool,
}

impl Step for TreeInput {
    fn kind(&self) -> &'static str {
        "tree-input"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        if self.unpack {
            return Ok(vec![]);
        }
        Ok(vec![Component::input("dir", &Digest::of(self.files.as_bytes()))])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let bytes = if self.unpack {
            let o = cx.input(0, "out")?;
            let b = cx
                .cache
                .get(&o.digest)
                .map_err(|_| StepError::InputUnavailable(o.digest))?;
            cx.upstream_tree(0, "out", fake_tree(&b));
            b
        } else {
            cx.input_tree(ComponentKind::Input, "dir", fake_tree(self.files.as_bytes()));
            self.files.clone().into_bytes()
        };
        let d = cx.cache.put(&bytes).map_err(|e| StepError::msg(e.to_string()))?;
        let mut out = Outputs::new();
        out.insert(
            "out".into(),
            OutputRef {
                digest: d,
                size: bytes.len() as u64,
            },
        );
        Ok(out)
    }
}

fn fake_tree(content: &[u8]) -> Digest {
    Digest::of(&[b"tree:", content].concat())
}

/// Answers every diff with one changed path named after the two roots, and counts calls.
#[derive(Default)]
struct FakeTrees(Mutex<Vec<(Digest, Digest)>>);

impl TreeDiff for FakeTrees {
    fn diff(&self, old: &Digest, new: &Digest) -> Result<Vec<PathChange>, String> {
        self.0.lock().unwrap().push((*old, *new));
        Ok(vec![PathChange {
            path: "etc/f".into(),
            change: PathStatus::Changed,
            old: Some(old.to_hex()),
            new: Some(new.to_hex()),
            old_mode: None,
            new_mode: None,
        }])
    }
}

/// dir (a host directory) -> unpack (its output read as an archive).
fn tree_graph(files: &str) -> Fixture {
    let mut graph = Graph::new();
    let dir = graph.add(
        "//t:x#dir",
        identity("tree-input", files.as_bytes(), &[]),
        Arc::new(TreeInput {
            files: files.into(),
            unpack: false,
        }),
        vec![],
    );
    let unpack = graph.add(
        "//t:x#unpack",
        identity("tree-input", b"unpack", &[graph.node(dir)]),
        Arc::new(TreeInput {
            files: String::new(),
            unpack: true,
        }),
        vec![dir],
    );
    Fixture {
        graph,
        runs: vec![],
        ids: vec![dir, unpack],
    }
}

#[test]
fn trees_reported_while_running_are_recorded_and_why_lists_their_paths() {
    let cache = MemCache::default();
    let f = tree_graph("one");
    let first = build(&f, &cache);
    let dir_key = first.results[&f.ids[0]].key.unwrap();
    let rec = &cache.records(&dir_key).unwrap()[0];
    let dir = rec.preimage.iter().find(|e| e.name == "dir").unwrap();
    assert_eq!(
        dir.tree,
        Some(fake_tree(b"one")),
        "recorded next to its component"
    );
    assert!(rec
        .preimage
        .iter()
        .filter(|e| e.name != "dir")
        .all(|e| e.tree.is_none()));

    build(&tree_graph("two"), &cache);
    let trees = FakeTrees::default();
    let why = explain(&cache, &trees, &history::load(&cache, "//t:x").unwrap().unwrap());
    assert_eq!(
        *trees.0.lock().unwrap(),
        vec![
            (fake_tree(b"one"), fake_tree(b"two")),
            (fake_tree(b"one"), fake_tree(b"two"))
        ],
        "the old trees come from the records, one diff per tree-valued change"
    );
    let root = &why.steps[0];
    assert_eq!((root.label.as_str(), root.status), ("//t:x#dir", WhyStatus::Root));
    assert_eq!(root.changes[0].paths[0].path, "etc/f");
    assert_eq!(root.changes[0].paths[0].old, Some(fake_tree(b"one").to_hex()));
    let unpack = &why.steps[1];
    assert_eq!(unpack.status, WhyStatus::Propagated);
    assert_eq!(unpack.changes[0].name, "in0.out");
    assert_eq!(unpack.changes[0].paths.len(), 1);
    let json = serde_json::to_value(&why).unwrap();
    assert_eq!(json["steps"][0]["changes"][0]["paths"][0]["change"], "changed");

    // Without a tree format the change is still there, with a note instead of paths.
    let why = explain(
        &cache,
        &NoTrees,
        &history::load(&cache, "//t:x").unwrap().unwrap(),
    );
    assert!(why.steps[0].changes[0].paths.is_empty());
    assert!(why.steps[0].changes[0]
        .note
        .as_deref()
        .unwrap()
        .contains("cannot be listed"));
}

#[test]
fn a_tree_recorded_on_one_side_only_is_a_note_not_a_diff() {
    let cache = MemCache::default();
    build(&tree_graph("one"), &cache);
    // As if the earlier build had been made by a w4b that recorded no trees.
    for recs in cache.records.lock().unwrap().values_mut() {
        for r in recs {
            for e in &mut r.preimage {
                e.tree = None;
            }
        }
    }
    build(&tree_graph("two"), &cache);
    let trees = FakeTrees::default();
    let why = explain(&cache, &trees, &history::load(&cache, "//t:x").unwrap().unwrap());
    assert!(trees.0.lock().unwrap().is_empty());
    let c = &why.steps[0].changes[0];
    assert!(c.paths.is_empty());
    assert!(
        c.note.as_deref().unwrap().contains("only the newer build"),
        "{c:?}"
    );
    // Unchanged trees are never walked, and components without one get no note.
    build(&tree_graph("two"), &cache);
    let why = explain(&cache, &trees, &history::load(&cache, "//t:x").unwrap().unwrap());
    assert!(why.steps.is_empty() && trees.0.lock().unwrap().is_empty());
}
