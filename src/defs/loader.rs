//! Loading a label into a typed target: read, substitute, follow `extends`, merge, apply
//! defaults and overrides, record where every value came from, validate.
//!
//! The order of the steps is the precedence: workspace defaults < extended target < the
//! target's file < environment overrides < `--set`. A [`Loader`] caches parsed files and
//! loaded targets, so an image that names a layer twice, or many images extending one base,
//! read each file once. It is `Sync`: the build engine may load from several threads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use w4b_cache::Digest;

use super::de::Spanned;
use super::error::{DefsError, DefsErrorKind};
use super::interp;
use super::label::{Label, Pattern};
use super::merge;
use super::overrides::Overrides;
use super::span::{Location, Origin, SourceFile, Span};
use super::suggest;
use super::target::{self, Context, Kind, Target};
use super::workspace::{self, Workspace, WORKSPACE_FILE};
use super::yaml::{self, Node, Value};

/// A target ready for the build engine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadedTarget {
    pub label: Label,
    pub target: Target,
    /// Every definition file that contributed, workspace-relative, with the BLAKE3 digest of
    /// its bytes: the target's file, its `extends` parents, and `w4b.yaml` when it supplied
    /// a default. Sorted by path.
    pub files: Vec<(String, Digest)>,
    /// Where each scalar (and each empty list or map) of the final document came from, by
    /// key path: `epoch`, `output.level`, `files[0].content`, `config."a.b"`.
    pub locations: BTreeMap<String, Location>,
    /// The absolute directory of the target's file.
    pub dir: PathBuf,
}

impl LoadedTarget {
    pub fn kind(&self) -> Kind {
        self.target.kind()
    }
}

struct ParsedFile {
    /// After `${VAR}` substitution.
    value: Value,
    digest: Digest,
}

/// A merged target document before typing.
struct Resolved {
    doc: Value,
    files: Vec<(String, Digest)>,
}

/// Loads targets of one workspace with one environment and one set of overrides.
pub struct Loader {
    workspace: Workspace,
    env: BTreeMap<String, String>,
    overrides: Overrides,
    files: Mutex<BTreeMap<String, Arc<ParsedFile>>>,
    targets: Mutex<BTreeMap<Label, LoadedTarget>>,
}

impl Loader {
    /// `env` feeds `${VAR}` substitution and the `W4B_*` overrides; `sets` are `--set`
    /// arguments (`key.path=value`), applied after the environment in the order given.
    pub fn new(
        workspace: Workspace,
        env: BTreeMap<String, String>,
        sets: &[String],
    ) -> Result<Loader, DefsError> {
        let overrides = Overrides::new(&env, sets, &Kind::all_keys())?;
        Ok(Loader {
            workspace,
            env,
            overrides,
            files: Mutex::new(BTreeMap::new()),
            targets: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// Loads a target named on the command line.
    pub fn load(&self, label: &Label) -> Result<LoadedTarget, DefsError> {
        self.load_referenced(label, None)
    }

    /// Loads a target named in a definition (such as an image's layer), checking its kind;
    /// errors point at the reference.
    pub fn load_expecting(&self, label: &Spanned<Label>, kind: Kind) -> Result<LoadedTarget, DefsError> {
        let loaded = self.load_referenced(&label.value, Some(&label.span))?;
        if loaded.kind() != kind {
            return Err(label.span.invalid_value(
                format!("`{}` is a `{}`, but a `{kind}` is needed here", label.value, loaded.kind()),
                format!("not a `{kind}`"),
                None,
            ));
        }
        Ok(loaded)
    }

    /// Every target a pattern names, with its kind, sorted by label (for `w4b ls`). Kinds are
    /// read through `extends`, but targets are not otherwise validated.
    pub fn list(&self, pattern: &Pattern) -> Result<Vec<(Label, Kind)>, DefsError> {
        self.workspace
            .expand(pattern)?
            .into_iter()
            .map(|label| {
                let resolved = self.resolve(&label, &mut vec![label.clone()], None)?;
                let kind = kind_of(&label, &resolved.doc)?;
                Ok((label, kind.value))
            })
            .collect()
    }

    fn load_referenced(&self, label: &Label, at: Option<&Span>) -> Result<LoadedTarget, DefsError> {
        if let Some(done) = lock(&self.targets).get(label) {
            return Ok(done.clone());
        }
        let Resolved { mut doc, mut files } = self.resolve(label, &mut vec![label.clone()], at)?;
        let kind = kind_of(label, &doc)?;
        let kind_span = doc.remove("kind").map(|e| e.value.span);
        let keys = kind.value.keys();

        // Workspace defaults sit below everything the target's files say.
        if let Some(epoch) = self.workspace.epoch_entry() {
            if keys.contains(&"epoch") && doc.get("epoch").is_none() {
                if let Node::Map(entries) = &mut doc.node {
                    entries.push(epoch.clone());
                    files.push((WORKSPACE_FILE.to_owned(), self.workspace.config_digest()));
                }
            }
        }
        self.overrides.apply(&mut doc, keys)?;

        let mut locations = BTreeMap::new();
        if let Some(span) = kind_span {
            locations.insert("kind".to_owned(), span.location());
        }
        record_locations(&doc, "", &mut locations);

        let own_file = self.workspace.target_file(label);
        let own_dir = own_file.rsplit_once('/').map_or("", |(dir, _)| dir);
        let ctx = Context {
            defs_dir: &self.workspace.config().defs,
            package: &label.package,
            dir: own_dir,
        };
        let target = target::convert(kind.value, &doc, &ctx)?;
        files.sort();
        files.dedup();
        let loaded = LoadedTarget {
            label: label.clone(),
            target,
            files,
            locations,
            dir: self.workspace.root().join(own_dir),
        };
        lock(&self.targets).insert(label.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Reads `label`'s file and everything it extends, merged; `stack` holds the labels being
    /// resolved, outermost first, to detect cycles.
    fn resolve(&self, label: &Label, stack: &mut Vec<Label>, at: Option<&Span>) -> Result<Resolved, DefsError> {
        let parsed = self.read(label, at)?;
        let mut doc = parsed.value.clone();
        if doc.is_null() {
            doc = Value::empty_map(doc.span);
        }
        if !matches!(doc.node, Node::Map(_)) {
            return Err(DefsErrorKind::InvalidType {
                src: doc.span.src(),
                span: doc.span.ss(),
                expected: "a map of keys".into(),
                found: doc.describe(),
                help: Some("a definition file is a map such as `kind: layer`".into()),
            }
            .into());
        }
        let mut files = vec![(self.workspace.target_file(label), parsed.digest)];
        let base = match doc.remove("extends") {
            None => Value::empty_map(doc.span.clone()),
            Some(extends) => {
                let span = extends.value.span.clone();
                let text = match extends.value.as_scalar() {
                    Some(s) if !s.is_null() => s.text.clone(),
                    _ => {
                        return Err(DefsErrorKind::InvalidType {
                            src: span.src(),
                            span: span.ss(),
                            expected: "a label such as `//images:base`".into(),
                            found: extends.value.describe(),
                            help: None,
                        }
                        .into())
                    }
                };
                let parent = Label::parse(&text, Some(&label.package)).map_err(|e| e.into_defs(Some(&span)))?;
                if let Some(start) = stack.iter().position(|l| *l == parent) {
                    let cycle = stack[start..]
                        .iter()
                        .chain(std::iter::once(&parent))
                        .map(|l| format!("`{l}`"))
                        .collect::<Vec<_>>()
                        .join(" -> ");
                    return Err(DefsErrorKind::ExtendsCycle {
                        src: span.src(),
                        span: span.ss(),
                        cycle,
                    }
                    .into());
                }
                stack.push(parent.clone());
                let resolved = self.resolve(&parent, stack, Some(&span))?;
                stack.pop();
                let kind_text = |v: &Value| v.get("kind").and_then(|e| e.value.as_scalar()).map(|s| s.text.clone());
                if let (Some(kind), Some(parent_kind)) = (kind_text(&doc), kind_text(&resolved.doc)) {
                    if kind != parent_kind {
                        return Err(DefsErrorKind::ExtendsKind {
                            src: span.src(),
                            span: span.ss(),
                            label: label.to_string(),
                            kind,
                            parent: parent.to_string(),
                            parent_kind,
                        }
                        .into());
                    }
                }
                files.extend(resolved.files);
                resolved.doc
            }
        };
        Ok(Resolved {
            doc: merge::merge(base, doc)?,
            files,
        })
    }

    fn read(&self, label: &Label, at: Option<&Span>) -> Result<Arc<ParsedFile>, DefsError> {
        let shown = self.workspace.target_file(label);
        if let Some(parsed) = lock(&self.files).get(&shown) {
            return Ok(Arc::clone(parsed));
        }
        let path = self.workspace.root().join(&shown);
        if !path.is_file() {
            return Err(self.not_found(label, &shown, at));
        }
        let bytes = workspace::read(&path, &shown)?;
        let digest = Digest::of(&bytes);
        let text = workspace::into_text(bytes, &shown)?;
        let file = SourceFile::new(Origin::File { path: shown.clone() }, text);
        let mut value = yaml::parse(&file)?;
        interp::interpolate(&mut value, &self.env)?;
        let parsed = Arc::new(ParsedFile { value, digest });
        lock(&self.files).insert(shown, Arc::clone(&parsed));
        Ok(parsed)
    }

    fn not_found(&self, label: &Label, shown: &str, at: Option<&Span>) -> DefsError {
        // Suggest a sibling target with a similar name.
        let package_dir = self.workspace.defs_dir().join(&label.package);
        let siblings: Vec<String> = std::fs::read_dir(&package_dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.strip_suffix(".yaml").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let help = suggest::did_you_mean(&label.name, siblings.iter().map(String::as_str)).map(|near| {
            let near = Label {
                package: label.package.clone(),
                name: near.to_owned(),
            };
            format!("did you mean `{near}`?")
        });
        DefsErrorKind::TargetNotFound {
            src: at.map(Span::src),
            span: at.map(Span::ss),
            label: label.to_string(),
            path: shown.to_owned(),
            help,
        }
        .into()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The caches only ever gain complete entries, so a panic elsewhere cannot leave them
    // inconsistent; keep using them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `kind` of a merged document.
fn kind_of(label: &Label, doc: &Value) -> Result<Spanned<Kind>, DefsError> {
    let Some(entry) = doc.get("kind") else {
        return Err(DefsErrorKind::MissingKind {
            src: doc.span.src(),
            span: doc.span.ss(),
            label: label.to_string(),
            help: format!(
                "add `kind: <kind>` (one of {}) or `extends:` a target that has one",
                suggest::backticked(Kind::NAMES)
            ),
        }
        .into());
    };
    let text = entry
        .value
        .as_scalar()
        .map(|s| s.text.as_str())
        .unwrap_or_default();
    match Kind::ALL.iter().find(|k| k.name() == text) {
        Some(kind) => Ok(Spanned::new(*kind, entry.value.span.clone())),
        None => Err(DefsErrorKind::UnknownKind {
            src: entry.value.span.src(),
            span: entry.value.span.ss(),
            kind: text.to_owned(),
            help: suggest::help_for(text, Kind::NAMES, "kinds"),
        }
        .into()),
    }
}

/// Records the location of every leaf under `value`, keyed by its path.
fn record_locations(value: &Value, path: &str, out: &mut BTreeMap<String, Location>) {
    match &value.node {
        Node::Map(entries) if !entries.is_empty() => {
            for entry in entries {
                let key = path_key(&entry.key.name);
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                record_locations(&entry.value, &child, out);
            }
        }
        Node::Seq(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                record_locations(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {
            out.insert(path.to_owned(), value.span.location());
        }
    }
}

/// A key as it appears in a location path: bare when it is a simple word, quoted otherwise.
fn path_key(name: &str) -> String {
    if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}
