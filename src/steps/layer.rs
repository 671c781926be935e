//! `layer`: renders a layer's file operations into a changeset (inline content, host
//! files and trees, templates, symlinks, directories, removals, appends, downloads).
//!
//! Key components, per file entry `i` (all after defaults are applied, so writing a default
//! explicitly changes nothing): `files[i].op`, `files[i].path`, `files[i].mode`,
//! `files[i].owner`, the operation's value (`content`, `append`, `symlink`), and for host
//! inputs the *digest* of the source tree or template (`input files[i].source`), never
//! its path. Templates add the `config` and `target` they are rendered with; the epoch is
//! keyed because every entry's mtime is the epoch.
//!
//! A source directory's component is recorded with the tree it was imported as (the same
//! files the keyed digest covers), so `why` names the files inside that changed.
//!
//! Templates come from definitions, which may come from a pull request, so rendering one is
//! bounded: at most [`TEMPLATE_FUEL`] template instructions (minijinja's fuel; a loop
//! iteration costs a few) and [`MAX_TEMPLATE_OUTPUT`] bytes of output, checked as it is
//! written. Past either, the step fails with [`TemplateLimit`], naming the template and the
//! limit. The templates under `defs/` use a few dozen instructions each.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, ComponentKind, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::tree_error;
use crate::store::AppStore;
use crate::tree::import::{import_dir, import_file, ImportOptions};
use crate::tree::layer::{Changeset, Op};
use crate::tree::{Entry, Kind, TreePath};

/// One resolved file operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    Content(String),
    /// A host file or directory (absolute path, resolved against the definition).
    Source(PathBuf),
    Template(PathBuf),
    Symlink(String),
    Dir,
    Remove,
    Append(String),
    /// Content from the `n`-th upstream input (a `fetch` step), with its declared sha256.
    Fetch {
        input: usize,
        sha256: String,
    },
}

impl FileOp {
    pub fn name(&self) -> &'static str {
        match self {
            FileOp::Content(_) => "content",
            FileOp::Source(_) => "source",
            FileOp::Template(_) => "template",
            FileOp::Symlink(_) => "symlink",
            FileOp::Dir => "dir",
            FileOp::Remove => "remove",
            FileOp::Append(_) => "append",
            FileOp::Fetch { .. } => "fetch",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LayerFile {
    pub path: TreePath,
    pub op: FileOp,
    /// `None`: the default for the operation (0644 files, 0755 dirs, exec bit from a
    /// source file).
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

pub struct LayerStep {
    pub store: Arc<AppStore>,
    pub files: Vec<LayerFile>,
    /// Workspace-relative locations of each key path (`files[0].content` → `defs/…:3:5`).
    pub locations: BTreeMap<String, String>,
    pub epoch: Epoch,
    /// Template context: the image's `config` and its label; `None` when no template.
    pub template_context: Option<(serde_json::Value, String)>,
    /// Workspace-relative display names of host inputs, for error messages.
    pub display: BTreeMap<usize, String>,
    /// The digests of host inputs as planned (keyed); `run` checks that what it read is
    /// the same, so a file edited during the build can never be cached under the old key.
    pub planned: std::sync::Mutex<BTreeMap<usize, w4b_cache::Digest>>,
}

/// The minijinja instructions one template may execute. A loop over a 10,000-entry list in
/// `config` with a few expressions per entry takes about 100,000; an endless loop fails
/// after about half a second instead of running for minutes.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// The bytes one template may render: a configuration file, not a disk image. Large
/// contents belong in `source:` or `fetch:`.
pub const MAX_TEMPLATE_OUTPUT: usize = 16 << 20;

/// A template went past one of the limits on rendering.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TemplateLimit {
    #[error("template `{template}`{at} ran out of fuel: it executed more than {limit} instructions")]
    #[diagnostic(
        code(w4b::layer::template_fuel),
        help("a template renders a configuration file: look for a loop over `range(…)` or a large list, nested loops or recursive macros; compute large contents outside w4b and add them with `source:`")
    )]
    Fuel {
        template: String,
        /// ` (named at defs/…:3:5)`, or empty.
        at: String,
        limit: u64,
    },
    #[error("template `{template}`{at} rendered more than {limit} bytes")]
    #[diagnostic(
        code(w4b::layer::template_output),
        help("a template renders a configuration file of at most 16 MiB: look for a loop that repeats its output, or `*` on a string; add large contents with `source:` or `fetch:`")
    )]
    Output {
        template: String,
        at: String,
        limit: usize,
    },
}

/// Collects a template's output, refusing to grow past `limit` bytes.
struct CappedOutput {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("the template output limit was reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}

impl LayerStep {
    fn loc(&self, key: &str) -> Option<String> {
        self.locations.get(key).cloned().or_else(|| {
            // Defaults have no location of their own: point at the entry.
            let entry = key.rsplit_once('.').map(|(e, _)| e).unwrap_or(key);
            self.locations.get(entry).cloned()
        })
    }

    fn default_mode(&self, op: &FileOp) -> Option<u32> {
        match op {
            FileOp::Dir => Some(0o755),
            FileOp::Symlink(_) => Some(0o777),
            FileOp::Remove => None,
            FileOp::Source(_) => None, // from the host's execute bit
            _ => Some(0o644),
        }
    }

    fn shown(&self, i: usize, path: &std::path::Path) -> String {
        self.display
            .get(&i)
            .cloned()
            .unwrap_or_else(|| path.display().to_string())
    }

    /// A host input could not be read while planning: name it as the definition did.
    fn unreadable(
        &self,
        i: usize,
        what: &str,
        path: &std::path::Path,
        e: crate::inputs::InputError,
    ) -> StepError {
        let at = self
            .loc(&format!("files[{i}].{what}"))
            .map(|l| format!(" (named at {l})"))
            .unwrap_or_default();
        let source = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        StepError::Failed {
            message: format!("cannot read {what} `{}`{at}: {source}", self.shown(i, path)),
            help: Some(format!(
                "`{what}:` paths are relative to the YAML file that names them"
            )),
        }
    }

    /// Fails when the bytes a step used differ from the ones its key was computed from.
    fn check_unchanged(
        &self,
        i: usize,
        path: &std::path::Path,
        used: w4b_cache::Digest,
    ) -> Result<(), StepError> {
        let planned = self.planned.lock().ok().and_then(|m| m.get(&i).copied());
        match planned {
            Some(p) if p != used => Err(StepError::Failed {
                message: format!("`{}` changed while the build was running", self.shown(i, path)),
                help: Some("run the build again; nothing was recorded for this step".into()),
            }),
            _ => Ok(()),
        }
    }

    fn render(&self, i: usize, path: &std::path::Path, epoch: i64) -> Result<Vec<u8>, StepError> {
        let shown = self
            .display
            .get(&i)
            .cloned()
            .unwrap_or_else(|| path.display().to_string());
        let text = std::fs::read_to_string(path)
            .map_err(|e| StepError::context(format_args!("cannot read template `{shown}`"), &e))?;
        self.check_unchanged(i, path, w4b_cache::Digest::of(text.as_bytes()))?;
        let (config, target) = self
            .template_context
            .clone()
            .unwrap_or((serde_json::Value::Null, String::new()));
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        let ctx = minijinja::context! {
            config => minijinja::Value::from_serialize(&config),
            target => minijinja::context! { label => target.clone(), name => target.rsplit(':').next().unwrap_or("") },
            epoch => epoch,
        };
        let mut out = CappedOutput {
            bytes: Vec::new(),
            limit: MAX_TEMPLATE_OUTPUT,
            overflowed: false,
        };
        let rendered = env
            .template_from_named_str(&shown, &text)
            .and_then(|t| t.render_captured_to(ctx, &mut out).map(drop));
        let e = match rendered {
            Ok(()) => return Ok(out.bytes),
            Err(e) => e,
        };
        let at = || {
            self.loc(&format!("files[{i}].template"))
                .map(|l| format!(" (named at {l})"))
                .unwrap_or_default()
        };
        if out.overflowed {
            return Err(StepError::diag(TemplateLimit::Output {
                template: shown,
                at: at(),
                limit: MAX_TEMPLATE_OUTPUT,
            }));
        }
        if e.kind() == minijinja::ErrorKind::OutOfFuel {
            return Err(StepError::diag(TemplateLimit::Fuel {
                template: shown,
                at: at(),
                limit: TEMPLATE_FUEL,
            }));
        }
        let (line, snippet) = match e.line() {
            Some(l) => (
                format!(":{l}"),
                text.lines()
                    .nth(l.saturating_sub(1))
                    .map(|t| format!("\n    {}", t.trim()))
                    .unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
        Err(StepError::Failed {
            message: format!("template `{shown}{line}`: {}{detail}{snippet}", e.kind()),
            help: Some(
                "templates see `config` (the image's `config:` map), `target.label`, `target.name` and `epoch`".into(),
            ),
        })
    }
}

impl Step for LayerStep {
    fn kind(&self) -> &'static str {
        "layer"
    }
    fn version(&self) -> u32 {
        1
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let mut c = vec![self.epoch.component()];
        for (i, f) in self.files.iter().enumerate() {
            let k = |s: &str| format!("files[{i}].{s}");
            c.push(Component::param(k("op"), f.op.name()).at(self.loc(&format!("files[{i}]"))));
            c.push(Component::param(k("path"), f.path.to_string()).at(self.loc(&k("path"))));
            if !matches!(f.op, FileOp::Remove) {
                let mode = f
                    .mode
                    .or(self.default_mode(&f.op))
                    .map(mode_str)
                    .unwrap_or_else(|| "from-source".into());
                c.push(Component::param(k("mode"), mode).at(self.loc(&k("mode"))));
                c.push(
                    Component::param(k("owner"), format!("{}:{}", f.uid, f.gid)).at(self.loc(&k("owner"))),
                );
            }
            match &f.op {
                FileOp::Content(s) => c.push(Component::param(k("content"), s).at(self.loc(&k("content")))),
                FileOp::Append(s) => c.push(Component::param(k("append"), s).at(self.loc(&k("append")))),
                FileOp::Symlink(s) => c.push(Component::param(k("symlink"), s).at(self.loc(&k("symlink")))),
                FileOp::Source(p) => {
                    let d = self
                        .store
                        .stats
                        .tree(p)
                        .map_err(|e| self.unreadable(i, "source", p, e))?;
                    if let Ok(mut m) = self.planned.lock() {
                        m.insert(i, d);
                    }
                    c.push(Component::input(k("source"), &d).at(self.loc(&k("source"))));
                }
                FileOp::Template(p) => {
                    let d = self
                        .store
                        .stats
                        .file(p)
                        .map_err(|e| self.unreadable(i, "template", p, e))?;
                    if let Ok(mut m) = self.planned.lock() {
                        m.insert(i, d);
                    }
                    c.push(Component::input(k("template"), &d).at(self.loc(&k("template"))));
                }
                FileOp::Fetch { sha256, .. } => {
                    c.push(Component::param(k("fetch.sha256"), sha256).at(self.loc(&k("fetch.sha256"))))
                }
                FileOp::Dir | FileOp::Remove => {}
            }
        }
        if let Some((config, target)) = &self.template_context {
            c.push(
                // `Value`'s `Display` is its compact JSON, and cannot fail.
                Component::param("config", config.to_string()).at(self.loc("config")),
            );
            c.push(Component::param("target", target));
        }
        Ok(c)
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let blobs = self.store.as_ref();
        let epoch = self.epoch.resolve(blobs, cx)?;
        let mut ops = Vec::with_capacity(self.files.len());
        for (i, f) in self.files.iter().enumerate() {
            cx.check_cancel()?;
            let own = |mut e: Entry| {
                e.uid = f.uid;
                e.gid = f.gid;
                e.mtime = epoch;
                e
            };
            let mode = f.mode.or(self.default_mode(&f.op)).unwrap_or(0o644);
            let put = |entry| Op::Put {
                path: f.path.clone(),
                entry,
            };
            let op = match &f.op {
                FileOp::Content(s) => {
                    let d = crate::tree::Blobs::put(blobs, s.as_bytes()).map_err(tree_error)?;
                    put(own(Entry::file(d, s.len() as u64, mode)))
                }
                FileOp::Template(p) => {
                    let bytes = self.render(i, p, epoch)?;
                    let d = crate::tree::Blobs::put(blobs, &bytes).map_err(tree_error)?;
                    put(own(Entry::file(d, bytes.len() as u64, mode)))
                }
                FileOp::Source(p) => {
                    let opts = ImportOptions {
                        uid: f.uid,
                        gid: f.gid,
                        // `mode` sets the files' mode; directories of a source tree are 0755.
                        file_mode: f.mode,
                        dir_mode: 0o755,
                        mtime: epoch,
                    };
                    let meta = std::fs::metadata(p).map_err(|e| {
                        StepError::msg(format!(
                            "cannot read source `{}`: {e}",
                            self.display
                                .get(&i)
                                .cloned()
                                .unwrap_or_else(|| p.display().to_string())
                        ))
                    })?;
                    let (op, tree) = if meta.is_dir() {
                        let root = import_dir(blobs, p, &opts).map_err(tree_error)?;
                        let op = Op::PutTree {
                            path: f.path.clone(),
                            root,
                        };
                        (op, Some(root))
                    } else {
                        (put(import_file(blobs, p, &opts).map_err(tree_error)?), None)
                    };
                    // Checked after the import: a write during it changed the files' ctime,
                    // so the stat cache re-hashes them and the digest differs.
                    let now = self.store.stats.tree(p).map_err(StepError::diag)?;
                    self.check_unchanged(i, p, now)?;
                    // The imported tree is what the keyed digest stands for: recorded with
                    // it, `why` names the files inside that changed.
                    if let Some(root) = tree {
                        cx.input_tree(ComponentKind::Input, &format!("files[{i}].source"), root);
                    }
                    op
                }
                FileOp::Symlink(t) => put(own(Entry::symlink(t.clone()))),
                FileOp::Dir => put(own(Entry::dir(mode))),
                FileOp::Remove => Op::Remove { path: f.path.clone() },
                FileOp::Append(s) => {
                    let d = crate::tree::Blobs::put(blobs, s.as_bytes()).map_err(tree_error)?;
                    Op::Append {
                        path: f.path.clone(),
                        digest: d,
                        mode,
                        uid: f.uid,
                        gid: f.gid,
                    }
                }
                FileOp::Fetch { input, .. } => {
                    let o = cx.input(*input, "file")?;
                    put(own(Entry::new(
                        Kind::File {
                            digest: o.digest,
                            size: o.size,
                        },
                        mode,
                    )))
                }
            };
            ops.push(op);
        }
        let set = Changeset::new(ops);
        let digest = set.store(blobs).map_err(tree_error)?;
        let mut out = Outputs::new();
        out.insert("changeset".into(), OutputRef { digest, size: 0 });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn step(store: Arc<AppStore>, files: Vec<LayerFile>) -> LayerStep {
        LayerStep {
            store,
            files,
            locations: BTreeMap::new(),
            epoch: Epoch::fixed(1),
            template_context: Some((serde_json::json!({"x": 1}), "//images:t".into())),
            display: BTreeMap::new(),
            planned: Default::default(),
        }
    }

    fn run(step: &LayerStep) -> Result<Outputs, StepError> {
        let cancel = AtomicBool::new(false);
        let progress = |_: u64, _: Option<u64>| {};
        let cx = RunContext {
            name: "//images:t#l",
            inputs: &[],
            cache: step.store.as_ref(),
            cancel: &cancel,
            progress: &progress,
            trees: &Default::default(),
            note: &|_| {},
        };
        step.run(&cx)
    }

    #[test]
    fn a_source_directory_is_recorded_with_the_tree_it_was_imported_as() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "one").unwrap();
        std::fs::write(dir.path().join("single"), "file").unwrap();
        let file = |op| LayerFile {
            path: TreePath::parse("/opt/x").unwrap(),
            op,
            mode: None,
            uid: 0,
            gid: 0,
        };
        let s = step(
            store.clone(),
            vec![
                file(FileOp::Source(src.clone())),
                file(FileOp::Source(dir.path().join("single"))),
            ],
        );
        s.components(&PlanContext { name: "t" }).unwrap();
        let trees = w4b_graph::InputTrees::default();
        let cancel = AtomicBool::new(false);
        let progress = |_: u64, _: Option<u64>| {};
        let cx = RunContext {
            name: "//images:t#l",
            inputs: &[],
            cache: store.as_ref(),
            cancel: &cancel,
            progress: &progress,
            trees: &trees,
            note: &|_| {},
        };
        let out = s.run(&cx).unwrap();
        let root = trees
            .get(ComponentKind::Input, "files[0].source")
            .expect("the directory's tree");
        let set = Changeset::load(store.as_ref(), &out["changeset"].digest).unwrap();
        assert!(set.refs().contains(&root), "the very tree the layer puts");
        let f = crate::tree::lookup(store.as_ref(), root, &TreePath::parse("/sub/f").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            f.kind,
            Kind::File {
                digest: w4b_cache::Digest::of(b"one"),
                size: 3
            }
        );
        assert_eq!(
            trees.get(ComponentKind::Input, "files[1].source"),
            None,
            "a file is no tree"
        );
    }

    /// Plans and runs a layer of one template with `text`, named `files/t.j2` at
    /// `defs/layers/t.yaml:3:5`; returns its output or the error's rendering with its code.
    fn render_template(text: &str) -> Result<Vec<u8>, (String, Option<String>)> {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let tpl = dir.path().join("t.j2");
        std::fs::write(&tpl, text).unwrap();
        let mut s = step(
            store.clone(),
            vec![LayerFile {
                path: TreePath::parse("/etc/t").unwrap(),
                op: FileOp::Template(tpl),
                mode: None,
                uid: 0,
                gid: 0,
            }],
        );
        s.display.insert(0, "defs/layers/files/t.j2".into());
        s.locations
            .insert("files[0].template".into(), "defs/layers/t.yaml:3:5".into());
        s.components(&PlanContext { name: "t" }).unwrap();
        let out = run(&s).map_err(|e| {
            let code = match &e {
                StepError::Diagnostic(d) => d.code().map(|c| c.to_string()),
                _ => None,
            };
            (e.to_string(), code)
        })?;
        let set = Changeset::load(store.as_ref(), &out["changeset"].digest).unwrap();
        let root = apply(store.as_ref(), &set);
        let entry = crate::tree::lookup(store.as_ref(), root, &TreePath::parse("/etc/t").unwrap())
            .unwrap()
            .unwrap();
        let Kind::File { digest, .. } = entry.kind else {
            panic!("not a file")
        };
        Ok(crate::tree::Blobs::get(store.as_ref(), &digest).unwrap())
    }

    fn apply(store: &AppStore, set: &Changeset) -> w4b_cache::Digest {
        let blobs: &dyn crate::tree::Blobs = store;
        let empty = crate::tree::Tree::empty(blobs).unwrap().root();
        crate::tree::layer::apply(blobs, empty, std::slice::from_ref(set), 0).unwrap()
    }

    #[test]
    fn templates_render_within_their_limits() {
        let out =
            render_template("x={{ config.x }}\n{% for i in range(1000) %}{{ i }},{% endfor %}\n").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("x=1\n0,1,2,"), "{text}");
        assert!(text.ends_with("998,999,\n"), "{text}");
    }

    #[test]
    fn a_template_that_loops_without_end_runs_out_of_fuel_quickly() {
        // Ten billion iterations: this ran for minutes and took gigabytes before fuel.
        let (message, code) = render_template(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert_eq!(code.as_deref(), Some("w4b::layer::template_fuel"));
        assert_eq!(
            message,
            format!(
                "template `defs/layers/files/t.j2` (named at defs/layers/t.yaml:3:5) ran out of fuel: \
                 it executed more than {TEMPLATE_FUEL} instructions"
            )
        );
    }

    #[test]
    fn a_template_whose_output_passes_the_limit_fails_naming_it() {
        // 100 MB of output in few instructions: the cap stops it at 16 MiB.
        let (message, code) =
            render_template("{% for i in range(100) %}{{ \"x\" * 1000000 }}{% endfor %}").unwrap_err();
        assert_eq!(code.as_deref(), Some("w4b::layer::template_output"));
        assert_eq!(
            message,
            format!(
                "template `defs/layers/files/t.j2` (named at defs/layers/t.yaml:3:5) rendered more than \
                 {MAX_TEMPLATE_OUTPUT} bytes"
            )
        );
    }

    #[test]
    fn an_input_edited_between_planning_and_running_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let tpl = dir.path().join("t.j2");
        let src = dir.path().join("src");
        std::fs::write(&tpl, "x={{ config.x }}\n").unwrap();
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), "one").unwrap();
        let file = |op| LayerFile {
            path: TreePath::parse("/etc/f").unwrap(),
            op,
            mode: None,
            uid: 0,
            gid: 0,
        };
        for (edit, op) in [
            (tpl.clone(), FileOp::Template(tpl.clone())),
            (src.join("f"), FileOp::Source(src.clone())),
        ] {
            let s = step(store.clone(), vec![file(op)]);
            s.components(&PlanContext { name: "t" }).unwrap();
            assert!(run(&s).is_ok());
            std::fs::write(&edit, "edited while building").unwrap();
            let err = run(&s).unwrap_err().to_string();
            assert!(err.contains("changed while the build was running"), "{err}");
        }
    }
}
