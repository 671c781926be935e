//! Loading a label into a typed target: read, substitute, follow `extends`, merge, apply
//! defaults and overrides, record where every value came from, validate.
//!
//! The order of the steps is the precedence: workspace defaults < extended target < the
//! target's file < environment overrides < `--set`. A [`Loader`] caches parsed files and
//! loaded targets, so an image that names a layer twice, or many images extending one base,
//! read each file once. It is `Sync`: the build engine may load from several threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use w4b_cache::Digest;

use super::de::Spanned;
use super::error::{DefsError, DefsErrorKind};
use super::interp;
use super::label::{Label, Pattern};
use super::merge;
use super::overrides::Overrides;
use super::parse_cache::{self, ParseCache};
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

/// A target's kind, merged document and files, before typing.
type Prepared = (Spanned<Kind>, Value, Vec<(String, Digest)>);

/// A target's merged document: see [`Loader::document`].
pub(crate) struct Document {
    pub kind: Kind,
    pub doc: Value,
    pub files: Vec<(String, Digest)>,
    pub locations: BTreeMap<String, Location>,
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
    /// Parsed files kept between builds (see [`parse_cache`]); `None` reads every file.
    parse_cache: Option<Arc<ParseCache>>,
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
            parse_cache: None,
        })
    }

    /// Reads definition files through `cache`, which keeps their parsed trees between
    /// builds. Substitution, overrides and typing still run on every load.
    pub fn with_parse_cache(mut self, cache: Arc<ParseCache>) -> Loader {
        self.parse_cache = Some(cache);
        self
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
                format!(
                    "`{}` has kind `{}`, but a `{kind}` is needed here",
                    label.value,
                    loaded.kind()
                ),
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

    /// The merged document of a target after defaults and overrides, without `kind`, with
    /// the files it came from (sorted) and the location of every value: what the hive
    /// reader types a hive target from (it reports every problem at once, which a typed
    /// [`Target`] cannot).
    pub(crate) fn document(&self, label: &Label) -> Result<Document, DefsError> {
        let (kind, doc, mut files) = self.prepare(label, None)?;
        let mut locations = BTreeMap::new();
        record_locations(&doc, "", &mut locations);
        files.sort();
        files.dedup();
        Ok(Document {
            kind: kind.value,
            doc,
            files,
            locations,
        })
    }

    fn prepare(&self, label: &Label, at: Option<&Span>) -> Result<Prepared, DefsError> {
        let Resolved { mut doc, mut files } = self.resolve(label, &mut vec![label.clone()], at)?;
        let kind = kind_of(label, &doc)?;
        doc.remove("kind");
        if kind.value == Kind::Hive {
            if let Some(defaults) = self.workspace.hive_defaults() {
                doc = merge::merge_hive_defaults(defaults, doc)?;
                files.push((WORKSPACE_FILE.to_owned(), self.workspace.config_digest()));
            }
        }
        let keys = kind.value.keys();
        if let Some(epoch) = self.workspace.epoch_entry() {
            if keys.contains(&"epoch") && doc.get("epoch").is_none() {
                if let Node::Map(entries) = &mut doc.node {
                    entries.push(epoch.clone());
                    files.push((WORKSPACE_FILE.to_owned(), self.workspace.config_digest()));
                }
            }
        }
        self.overrides.apply_for(&mut doc, kind.value)?;
        Ok((kind, doc, files))
    }

    /// The environment this loader substitutes from (also the source of `${env:…}`
    /// secrets).
    pub(crate) fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    fn load_referenced(&self, label: &Label, at: Option<&Span>) -> Result<LoadedTarget, DefsError> {
        if let Some(done) = lock(&self.targets).get(label) {
            return Ok(done.clone());
        }
        let (kind, doc, mut files) = self.prepare(label, at)?;
        let kind_span = (kind.value != Kind::Hive).then(|| kind.span.clone());
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
    fn resolve(
        &self,
        label: &Label,
        stack: &mut Vec<Label>,
        at: Option<&Span>,
    ) -> Result<Resolved, DefsError> {
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
            Some(extends) if is_hive_doc(&doc) => {
                return Err(hive_extends(&extends.key.span));
            }
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
                let parent =
                    Label::parse(&text, Some(&label.package)).map_err(|e| e.into_defs(Some(&span)))?;
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
                if is_hive_doc(&resolved.doc) {
                    return Err(hive_extends(&span));
                }
                let kind_text = |v: &Value| {
                    v.get("kind")
                        .and_then(|e| e.value.as_scalar())
                        .map(|s| s.text.clone())
                };
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
        let path = match super::beneath::resolve(self.workspace.root(), &shown) {
            Ok(path) => path,
            Err(super::beneath::BeneathError::Escapes { path }) => {
                return Err(DefsErrorKind::EscapesWorkspace { path }.into())
            }
            Err(super::beneath::BeneathError::Io { path, source }) => {
                return Err(DefsErrorKind::Io { path, source }.into())
            }
        };
        let parse = |bytes: Vec<u8>| -> Result<parse_cache::Parsed, DefsError> {
            let digest = Digest::of(&bytes);
            let text = workspace::into_text(bytes, &shown)?;
            let file = SourceFile::new(Origin::File { path: shown.clone() }, text);
            let value = yaml::parse(&file)?;
            Ok(parse_cache::Parsed { file, digest, value })
        };
        let found = match &self.parse_cache {
            Some(cache) => {
                parse_cache::read_through(cache, &path, &shown, || read_definition(&path, &shown), parse)?
            }
            None => read_definition(&path, &shown)?
                .map(|(bytes, _)| parse(bytes))
                .transpose()?,
        };
        let Some(parse_cache::Parsed {
            digest, mut value, ..
        }) = found
        else {
            return Err(self.not_found(label, &shown, at));
        };
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

/// Hives do not inherit: a hive file is the manager's, complete and unchanged, and its
/// values are what the hive's image is built from.
fn hive_extends(span: &Span) -> DefsError {
    span.invalid_value(
        "hives cannot use `extends`",
        "not for hives",
        Some("write the hive file complete; share image settings through the image it builds on (`image:` or `hives.image` in `w4b.yaml`)".into()),
    )
}

/// A definition file's bytes and metadata (taken before reading), or `None` when no
/// regular file is there. One path look-up
/// (the `open`) and a `stat` of the open file: on a no-op rebuild of 1,000 definitions a
/// separate `is_file` check and `fs::read`'s own size probe were a third of the reading.
fn read_definition(path: &Path, shown: &str) -> Result<Option<(Vec<u8>, std::fs::Metadata)>, DefsError> {
    use std::io::ErrorKind;
    let io = |source| -> DefsError {
        DefsErrorKind::Io {
            path: shown.to_owned(),
            source,
        }
        .into()
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let bytes = workspace::read_open(&mut file, meta.len(), shown)?;
    Ok(Some((bytes, meta)))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The caches only ever gain complete entries, so a panic elsewhere cannot leave them
    // inconsistent; keep using them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a document without `kind` is a hive file in the manager's format: it has
/// `hive_id` and `metadata`.
pub(crate) fn is_hive_doc(doc: &Value) -> bool {
    doc.get("kind").is_none() && doc.get("hive_id").is_some() && doc.get("metadata").is_some()
}

/// The `kind` of a merged document.
fn kind_of(label: &Label, doc: &Value) -> Result<Spanned<Kind>, DefsError> {
    if is_hive_doc(doc) {
        return Ok(Spanned::new(Kind::Hive, doc.span.clone()));
    }
    let Some(entry) = doc.get("kind") else {
        return Err(DefsErrorKind::MissingKind {
            src: doc.span.src(),
            span: doc.span.ss(),
            label: label.to_string(),
            help: format!(
                "add `kind: <kind>` (one of {}) or `extends:` a target that has one; a hive file needs `hive_id` and `metadata`",
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
    match Kind::ALL
        .iter()
        .find(|k| k.name() == text && Kind::NAMES.contains(&text))
    {
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
pub(crate) fn record_locations(value: &Value, path: &str, out: &mut BTreeMap<String, Location>) {
    match &value.node {
        Node::Map(entries) if !entries.is_empty() => {
            for entry in entries {
                let key = path_key(&entry.key.name);
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
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
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::target::{Compression, FileOp, Format, Mode, Owner};

    const MOTD: &str = r#"# defs/layers/motd.yaml
kind: layer
files:
  - {path: /etc/motd, content: "hello\n", mode: "0644"}
  - {path: /opt/app, source: files/app}
  - {path: /etc/app.conf, template: files/app.conf.j2}
  - {path: /usr/bin/app-link, symlink: /opt/app/bin/app}
  - {path: /var/lib/app, dir: true, mode: "0750", owner: "1000:1000"}
  - {path: /etc/issue, remove: true}
  - {path: /etc/profile, append: "export A=1\n"}
  - {path: /opt/blob.bin, fetch: {url: "http://127.0.0.1:8000/blob.bin", sha256: "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"}}
"#;

    const DEMO: &str = r#"kind: image
base: scratch
layers: [//layers:motd]
epoch: 1700000000
output: {format: tar, compression: zstd, level: 19}
config: {any: free-form map, n: 3, nested: {list: [1, two]}}
description: "optional text"
"#;

    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn loader(dir: &tempfile::TempDir, env: &[(&str, &str)], sets: &[&str]) -> Loader {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let ws = Workspace::open(dir.path(), &env).unwrap();
        let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
        Loader::new(ws, env, &sets).unwrap()
    }

    fn label(text: &str) -> Label {
        Label::parse(text, None).unwrap()
    }

    fn image(t: &LoadedTarget) -> &crate::defs::Image {
        match &t.target {
            Target::Image(image) => image,
            other => panic!("not an image: {other:?}"),
        }
    }

    #[test]
    fn the_documented_spellings_load() {
        let dir = workspace(&[
            ("w4b.yaml", ""),
            ("defs/layers/motd.yaml", MOTD),
            ("defs/images/demo.yaml", DEMO),
        ]);
        let l = loader(&dir, &[], &[]);
        let motd = l.load(&label("//layers:motd")).unwrap();
        let Target::Layer(layer) = &motd.target else {
            panic!()
        };
        let ops: Vec<&FileOp> = layer.files.iter().map(|f| &f.op).collect();
        assert_eq!(
            ops,
            [
                &FileOp::Content {
                    content: "hello\n".into(),
                    mode: Mode(0o644)
                },
                &FileOp::Source {
                    source: WsPathT::join("defs/layers", "files/app").unwrap(),
                    mode: None
                },
                &FileOp::Template {
                    template: WsPathT::join("defs/layers", "files/app.conf.j2").unwrap(),
                    mode: Mode(0o644)
                },
                &FileOp::Symlink {
                    target: "/opt/app/bin/app".into()
                },
                &FileOp::Dir { mode: Mode(0o750) },
                &FileOp::Remove,
                &FileOp::Append {
                    content: "export A=1\n".into()
                },
                &FileOp::Fetch {
                    url: "http://127.0.0.1:8000/blob.bin".into(),
                    sha256: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789".into(),
                    size: None,
                    mode: Mode(0o644)
                },
            ]
        );
        assert_eq!(layer.files[4].owner, Owner { uid: 1000, gid: 1000 });
        assert_eq!(layer.files[0].owner, Owner::default());
        assert_eq!(motd.dir, dir.path().join("defs/layers"));

        let demo = l.load(&label("//images:demo")).unwrap();
        let img = image(&demo);
        assert_eq!(
            img.layers.iter().map(|l| l.value.clone()).collect::<Vec<_>>(),
            [label("//layers:motd")]
        );
        assert_eq!(img.epoch, Some(1_700_000_000));
        assert_eq!(
            (img.output.format, img.output.compression, img.output.level),
            (Format::Tar, Compression::Zstd, 19)
        );
        assert_eq!(img.config["n"], crate::defs::ConfigValue::Int(3));
        assert_eq!(demo.files.len(), 1);
        assert_eq!(demo.files[0].0, "defs/images/demo.yaml");
        assert_eq!(demo.files[0].1, Digest::of(DEMO.as_bytes()));
        let layer_ref = &img.layers[0];
        let loaded = l.load_expecting(layer_ref, Kind::Layer).unwrap();
        assert_eq!(loaded.label, label("//layers:motd"));
        assert!(l
            .load_expecting(
                &Spanned::new(label("//images:demo"), layer_ref.span.clone()),
                Kind::Layer
            )
            .is_err());
    }

    use crate::defs::target::WsPath as WsPathT;

    const BASE: &str = "# defs/bases/raspios-bookworm-arm64-lite.yaml
kind: base
url: https://downloads.raspberrypi.com/raspios_lite_arm64/images/raspios_lite_arm64-2024-11-19/2024-11-19-raspios-bookworm-arm64-lite.img.xz
sha256: 6AC3A10A1F144C7E9D1F8E568D75CA809288280A593EB6CA053E49B539F465A4
arch: arm64
";
    const BOARD: &str = "kind: board
arch: arm64
config_txt: [\"dtoverlay=w1-gpio,gpiopin=4\"]
";
    const EDGE: &str = "kind: image
board: //boards:pi4
base: //bases:raspios-bookworm-arm64-lite
layers: [//layers:motd]
output: {compression: zstd, level: 19}   # <name>.img.zst
";

    #[test]
    fn the_issue_spellings_of_bases_boards_and_disk_images_load() {
        use crate::defs::{Arch, Base, Date, TableType};
        let dir = workspace(&[
            ("w4b.yaml", ""),
            ("defs/layers/motd.yaml", MOTD),
            ("defs/bases/raspios-bookworm-arm64-lite.yaml", BASE),
            ("defs/boards/pi4.yaml", BOARD),
            ("defs/boards/zero.yaml", "kind: board\narch: armhf\n"),
            (
                "defs/boards/own.yaml",
                "kind: board\narch: arm64\nkernel: {arm64: kernel_2712.img}\n",
            ),
            ("defs/images/edge.yaml", EDGE),
            (
                "defs/images/tarball.yaml",
                "extends: :edge\noutput: {format: tar}\n",
            ),
            (
                "defs/images/xz.yaml",
                "extends: :edge\noutput: {compression: xz, level: 6}\npartitions: {root: {headroom: 512MiB}}\n",
            ),
        ]);
        let l = loader(&dir, &[], &[]);
        let base = l.load(&label("//bases:raspios-bookworm-arm64-lite")).unwrap();
        let Target::Base(b) = &base.target else {
            panic!("{base:?}")
        };
        assert_eq!(b.arch, Arch::Arm64);
        assert_eq!(
            b.download().map(|d| d.sha256.as_str()),
            Some("6ac3a10a1f144c7e9d1f8e568d75ca809288280a593eb6ca053e49b539f465a4")
        );
        assert!(b.bootstrap().is_none());
        assert_eq!(
            b.date,
            Some(Date {
                year: 2024,
                month: 11,
                day: 19
            })
        );
        assert_eq!(b.epoch(), Some(1_731_974_400));
        assert_eq!(b.boot_mount.as_str(), "/boot/firmware");

        let board = l.load(&label("//boards:pi4")).unwrap();
        let Target::Board(pi4) = &board.target else {
            panic!()
        };
        assert_eq!(pi4.config_lines(), ["dtoverlay=w1-gpio,gpiopin=4"]);
        assert_eq!(pi4.partition_table, TableType::Mbr);
        // No `kernel:`: the Raspberry Pi OS kernels of every architecture the board runs.
        assert_eq!(
            pi4.kernel,
            [
                (Arch::Arm64, "kernel8.img".to_owned()),
                (Arch::Armhf, "kernel7l.img".to_owned())
            ]
            .into()
        );
        let zero = l.load(&label("//boards:zero")).unwrap();
        let Target::Board(zero) = &zero.target else {
            panic!()
        };
        assert_eq!(zero.kernel, [(Arch::Armhf, "kernel7l.img".to_owned())].into());
        let own = l.load(&label("//boards:own")).unwrap();
        let Target::Board(own) = &own.target else { panic!() };
        assert_eq!(own.kernel, [(Arch::Arm64, "kernel_2712.img".to_owned())].into());

        let edge = l.load(&label("//images:edge")).unwrap();
        let img = image(&edge);
        assert!(
            matches!(&img.base, Base::Image(l) if l.value == label("//bases:raspios-bookworm-arm64-lite"))
        );
        assert_eq!(
            img.board.as_ref().map(|b| b.value.clone()),
            Some(label("//boards:pi4"))
        );
        assert_eq!(
            (img.output.format, img.output.compression, img.output.level),
            (Format::Image, Compression::Zstd, 19)
        );
        assert_eq!(img.output.file_name("edge"), "edge.img.zst");
        assert_eq!(img.partitions.root_headroom, None);

        let tarball = l.load(&label("//images:tarball")).unwrap();
        assert_eq!(image(&tarball).output.file_name("tarball"), "tarball.tar.zst");
        let xz = l.load(&label("//images:xz")).unwrap();
        assert_eq!(image(&xz).output.file_name("xz"), "xz.img.xz");
        assert_eq!(image(&xz).output.level, 6);
        assert_eq!(image(&xz).partitions.root_headroom, Some(512 << 20));
    }

    #[test]
    fn a_bootstrapped_base_loads_with_its_sets_and_defaults() {
        use crate::defs::BootstrapPriority;
        let dir = workspace(&[
            ("w4b.yaml", ""),
            (
                "defs/packages/raspi.yaml",
                "kind: packages\npackages: [systemd]\n",
            ),
            (
                "defs/bases/deb.yaml",
                "kind: base\narch: arm64\nrelease: bookworm\nbootstrap:\n  packages: [//packages:raspi]\n",
            ),
            (
                "defs/bases/minbase.yaml",
                "extends: :deb\nbootstrap: {packages: [//packages:raspi], essential: false, priority: required, boot_size: 260MiB, root_size: 4GiB}\ndate: 2025-05-20\n",
            ),
        ]);
        let l = loader(&dir, &[], &[]);
        let base = l.load(&label("//bases:deb")).unwrap();
        let Target::Base(b) = &base.target else { panic!() };
        let boot = b.bootstrap().unwrap();
        assert_eq!(boot.packages.len(), 1);
        assert_eq!(boot.packages[0].value, label("//packages:raspi"));
        assert!(boot.essential, "essential packages by default");
        assert_eq!(boot.priority, None);
        assert_eq!(
            (boot.boot_size, boot.root_size),
            (None, None),
            "the layout's defaults"
        );
        assert_eq!(b.date, None, "no date: it comes from the lock");
        assert!(b.download().is_none());
        assert_eq!(b.boot_mount.as_str(), "/boot/firmware");
        let minbase = l.load(&label("//bases:minbase")).unwrap();
        let Target::Base(m) = &minbase.target else {
            panic!()
        };
        let boot = m.bootstrap().unwrap();
        assert!(!boot.essential);
        assert_eq!(boot.priority, Some(BootstrapPriority::Required));
        assert_eq!((boot.boot_size, boot.root_size), (Some(260 << 20), Some(4 << 30)));
        assert_eq!(m.epoch(), Some(1_747_699_200));
    }

    #[test]
    fn a_base_downloaded_and_bootstrapped_or_neither_is_an_error_at_its_line() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "kind: base\narch: arm64\nurl: https://x/y.img\nsha256: abababababababababababababababababababababababababababababababab\nbootstrap: {packages: [//packages:p]}\n",
                "b.yaml:3:6",
                &["not both", "remove `url`", "b.yaml:5:"],
            ),
            (
                "kind: base\narch: arm64\n",
                "b.yaml:",
                &["`url` and `sha256`", "`bootstrap`", "help"],
            ),
            (
                "kind: base\narch: arm64\nsha256: abababababababababababababababababababababababababababababababab\nbootstrap: {packages: [//packages:p]}\n",
                "b.yaml:3:9",
                &["pinned by `w4b.lock`"],
            ),
            (
                "kind: base\narch: arm64\nbootstrap: {packages: []}\n",
                "b.yaml:3:12",
                &["names no package set"],
            ),
            (
                "kind: base\narch: arm64\nbootstrap: {packages: [//packages:p, //packages:p]}\n",
                "b.yaml:3:38",
                &["listed twice"],
            ),
            (
                "kind: base\narch: arm64\nbootstrap: {packages: [//packages:p], esential: true}\n",
                "b.yaml:3:",
                &["esential", "essential"],
            ),
            (
                "kind: base\narch: arm64\nbootstrap: {packages: [//packages:p], priority: minbase}\n",
                "b.yaml:3:",
                &["minbase", "required"],
            ),
            (
                "kind: base\narch: arm64\nurl: https://x/y.img\n",
                "b.yaml:3:6",
                &["needs the `sha256`"],
            ),
            (
                "kind: base\narch: arm64\nbootstrap:\n  packages: [//packages:p]\n  boot_size: 128MiB\n",
                "b.yaml:5:14",
                &["`bootstrap.boot_size`", "at least 260 MiB", "boot_size: 512MiB"],
            ),
            (
                "kind: base\narch: arm64\nbootstrap:\n  packages: [//packages:p]\n  root_size: 1000000000\n",
                "b.yaml:5:14",
                &["`bootstrap.root_size`", "whole number of MiB", "root_size: 4GiB"],
            ),
        ];
        for (text, at, wanted) in cases {
            let dir = workspace(&[("w4b.yaml", ""), ("defs/bases/b.yaml", text)]);
            let l = loader(&dir, &[], &[]);
            let err = l.load(&label("//bases:b")).unwrap_err();
            let help = miette::Diagnostic::help(&err)
                .map(|h| h.to_string())
                .unwrap_or_default();
            let message = err.to_string();
            let shown = format!("{message} help: {help} {:?}", miette::Report::new(err));
            assert!(shown.contains(at), "{text}: no `{at}` in\n{shown}");
            for w in *wanted {
                assert!(shown.contains(w), "{text}: no `{w}` in\n{shown}");
            }
        }
    }

    #[test]
    fn bad_bases_boards_and_outputs_are_reported_where_written() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "defs/bases/b.yaml",
                "kind: base\nurl: ftp://x/y.img\nsha256: 00\narch: arm64\n",
                "unsupported URL",
            ),
            (
                "defs/bases/b.yaml",
                "kind: base\nurl: https://x/y.img\nsha256: 00\narch: arm64\n",
                "64 hex",
            ),
            (
                "defs/bases/b.yaml",
                "kind: base\nurl: https://x/y.img\nsha256: 00\narch: riscv64\n",
                "riscv64",
            ),
            (
                "defs/bases/b.yaml",
                "kind: base\nurl: https://x/y.img\nsha256: abababababababababababababababababababababababababababababababab\narch: arm64\ndate: 2024-02-30\n",
                "not a date",
            ),
            (
                "defs/boards/b.yaml",
                "kind: board\narch: arm64\ninterfaces: {onewire: {gpio: 40}}\n",
                "GPIO 40",
            ),
            (
                "defs/boards/b.yaml",
                "kind: board\narch: arm64\nconfig_txt: [\"a\\nb\"]\n",
                "one non-empty line",
            ),
            (
                "defs/images/b.yaml",
                "kind: image\nbase: scratch\noutput: {format: image}\n",
                "needs a base disk image",
            ),
            (
                "defs/images/b.yaml",
                "kind: image\nbase: raspios\n",
                "//bases:raspios",
            ),
            (
                "defs/images/b.yaml",
                "kind: image\nbase: scratch\noutput: {compression: xz}\n",
                "zstd or not at all",
            ),
            (
                "defs/images/b.yaml",
                "kind: image\nbase: //bases:x\noutput: {compression: xz, level: 12}\n",
                "not in 0..=9",
            ),
            (
                "defs/images/b.yaml",
                "kind: image\nbase: //bases:x\npartitions: {root: {headroom: 5 parsecs}}\n",
                "not a size",
            ),
        ];
        for (path, text, expected) in cases {
            let dir = workspace(&[("w4b.yaml", ""), (path, text)]);
            let l = loader(&dir, &[], &[]);
            let name = if path.contains("bases") {
                "//bases:b"
            } else if path.contains("boards") {
                "//boards:b"
            } else {
                "//images:b"
            };
            let err = l.load(&label(name)).expect_err(text);
            let shown = format!("{:?}", miette::Report::new(err));
            assert!(shown.contains(expected), "{text}: {shown}");
            assert!(shown.contains(path), "{text}: no file in {shown}");
        }
    }

    #[test]
    fn an_images_test_key_loads_typed_and_extends_merge_it_key_by_key() {
        let dir = workspace(&[
            ("w4b.yaml", ""),
            (
                "defs/images/base.yaml",
                "kind: image\nbase: scratch\ntest:\n  units_active: [ssh.service]\n  boot_timeout: 400\n  commands:\n    - {name: hostname, run: hostname, stdout_regex: '^edge$'}\n",
            ),
            (
                "defs/images/child.yaml",
                "kind: image\nextends: //images:base\ntest:\n  timeout: 900\n  allow_failed_units: [rpi-eeprom-update.service]\n  commands+: [{name: more, run: 'true'}]\n",
            ),
        ]);
        let l = loader(&dir, &[], &[]);
        let t = l.load(&label("//images:child")).unwrap();
        let test = image(&t).test.as_ref().expect("a test");
        assert_eq!(test.units_active, ["ssh.service"]);
        assert_eq!(test.allow_failed_units, ["rpi-eeprom-update.service"]);
        assert_eq!((test.timeout, test.boot_timeout), (Some(900), Some(400)));
        assert_eq!(test.commands[0].stdout_regex.as_deref(), Some("^edge$"));
        assert_eq!(test.commands[1].name, "more", "`commands+:` appends");
        assert_eq!(
            test.commands[0].timeout,
            crate::defs::test_spec::DEFAULT_CHECK_TIMEOUT
        );
        assert_eq!(test.span.location().to_string(), "defs/images/child.yaml:4:3");
        let spec = test.value.spec();
        assert_eq!(spec.timeout, 900);
        // Without `test:`, none.
        let dir = workspace(&[
            ("w4b.yaml", ""),
            ("defs/images/demo.yaml", DEMO),
            ("defs/layers/motd.yaml", MOTD),
        ]);
        let t = loader(&dir, &[], &[]).load(&label("//images:demo")).unwrap();
        assert!(image(&t).test.is_none());
    }

    #[test]
    fn bad_test_keys_are_reported_where_written_with_the_fix() {
        let cases: &[(&str, &[&str])] = &[
            (
                "test:\n  unit_active: [ssh.service]\n",
                &["unknown key `unit_active`", "units_active", "b.yaml:4:3"],
            ),
            (
                "test:\n  commands:\n    - {name: a, run: true, exits: 1}\n",
                &["unknown key `exits`", "b.yaml:5:"],
            ),
            ("test:\n  timeout: soon\n", &["soon", "b.yaml:4:"]),
            (
                "test:\n  commands:\n    - {name: a, run: true, stdout_regex: '(unclosed'}\n",
                &[
                    "not a valid regular expression",
                    "unclosed group",
                    "b.yaml:5:",
                    "docs.rs/regex",
                ],
            ),
            (
                "test:\n  commands:\n    - {name: a, run: 'true'}\n    - {name: a, run: 'false'}\n",
                &[
                    "two command checks are named `a`",
                    "b.yaml:6:",
                    "the first is at",
                    "b.yaml:5:14",
                ],
            ),
            ("test:\n  commands:\n    - {name: a}\n", &["run"]),
        ];
        for (tail, expected) in cases {
            let text = format!("kind: image\nbase: scratch\n{tail}");
            let dir = workspace(&[("w4b.yaml", ""), ("defs/images/b.yaml", &text)]);
            let err = loader(&dir, &[], &[])
                .load(&label("//images:b"))
                .expect_err(&text);
            let shown = format!("{:?}", miette::Report::new(err));
            for e in *expected {
                assert!(shown.contains(e), "{text}: no {e:?} in {shown}");
            }
        }
    }

    #[test]
    fn dates_and_sizes() {
        use crate::defs::target::Size;
        use crate::defs::Date;
        assert_eq!(Date::parse("1970-01-01").map(Date::epoch), Some(0));
        assert_eq!(Date::parse("2000-03-01").map(Date::epoch), Some(951_868_800));
        assert_eq!(Date::parse("2024-02-29").map(Date::epoch), Some(1_709_164_800));
        assert_eq!(Date::parse("2023-02-29"), None);
        assert_eq!(Date::parse("1969-12-31"), None);
        assert_eq!(Date::parse("2024-1-19"), None);
        assert_eq!(
            Date::in_url("https://x/y-2024/2024-11-19-raspios-bookworm-arm64-lite.img.xz")
                .map(|d| d.to_string()),
            Some("2024-11-19".into())
        );
        assert_eq!(Date::in_url("https://x/raspios.img.xz"), None);
        assert_eq!(Size::parse("512MiB"), Some(Size(512 << 20)));
        assert_eq!(Size::parse("2G"), Some(Size(2 << 30)));
        assert_eq!(Size::parse("64 KiB"), Some(Size(64 << 10)));
        assert_eq!(Size::parse("100"), Some(Size(100)));
        assert_eq!(Size::parse("1.5G"), None);
        assert_eq!(Size::parse("G"), None);
    }

    #[test]
    fn defaults_fill_what_is_not_written() {
        let dir = workspace(&[
            ("w4b.yaml", ""),
            ("defs/images/min.yaml", "kind: image\nbase: scratch\n"),
        ]);
        let t = loader(&dir, &[], &[]).load(&label("//images:min")).unwrap();
        let img = image(&t);
        assert_eq!(img.epoch, None);
        assert_eq!(img.output.level, crate::defs::Output::DEFAULT_ZSTD_LEVEL);
        assert!(img.layers.is_empty() && img.config.is_empty());
    }

    #[test]
    fn formatting_comments_and_key_order_do_not_change_the_value() {
        let reordered = r#"
# same image, written differently
description: optional text
config:
  nested:
    list:
      - 1
      - "two"
  n: 3
  any: 'free-form map'
output:
  level: 19
  compression: zstd   # comment
  format: tar
epoch: 1700000000
layers:
  - "//layers:motd"
base: "scratch"
kind: image
"#;
        let dir = workspace(&[
            ("w4b.yaml", ""),
            ("defs/images/a.yaml", DEMO),
            ("defs/images/b.yaml", reordered),
        ]);
        let l = loader(&dir, &[], &[]);
        let a = l.load(&label("//images:a")).unwrap();
        let b = l.load(&label("//images:b")).unwrap();
        assert_eq!(a.target, b.target);
        assert_eq!(
            serde_json::to_string(&a.target).unwrap(),
            serde_json::to_string(&b.target).unwrap()
        );
        let dir2 = workspace(&[
            ("w4b.yaml", ""),
            ("defs/layers/motd.yaml", MOTD),
            (
                "defs/layers/m2.yaml",
                &MOTD
                    .replace("# defs/layers/motd.yaml\n", "\n\n# moved\n")
                    .replace(", mode: \"0644\"", ""),
            ),
        ]);
        let l2 = loader(&dir2, &[], &[]);
        assert_eq!(
            l2.load(&label("//layers:motd")).unwrap().target,
            l2.load(&label("//layers:m2")).unwrap().target
        );
    }

    #[test]
    fn extends_merges_appends_and_records_locations() {
        let dir = workspace(&[
            ("w4b.yaml", "epoch: 1600000000\n"),
            ("defs/images/base.yaml", "kind: image\nbase: scratch\nlayers: [:one]\noutput: {level: 5}\nconfig: {site: {name: base, tz: UTC}}\n"),
            ("defs/images/one.yaml", "kind: layer\n"),
            ("defs/hives/north.yaml", "extends: //images:base\nlayers+: [//layers:two]\nconfig: {site: {name: north}, a.b: 1}\n"),
        ]);
        let l = loader(&dir, &[], &[]);
        let t = l.load(&label("//hives:north")).unwrap();
        let img = image(&t);
        // `:one` was written in //images, so it resolves there even when inherited.
        assert_eq!(
            img.layers.iter().map(|l| l.value.to_string()).collect::<Vec<_>>(),
            ["//images:one", "//layers:two"]
        );
        assert_eq!(img.output.level, 5);
        assert_eq!(img.epoch, Some(1_600_000_000));
        let loc = |k: &str| {
            t.locations
                .get(k)
                .map(ToString::to_string)
                .unwrap_or_else(|| panic!("no location for {k}: {:?}", t.locations.keys()))
        };
        assert_eq!(loc("kind"), "defs/images/base.yaml:1:7");
        assert_eq!(loc("layers[0]"), "defs/images/base.yaml:3:10");
        assert_eq!(loc("layers[1]"), "defs/hives/north.yaml:2:11");
        assert_eq!(loc("output.level"), "defs/images/base.yaml:4:17");
        assert_eq!(loc("config.site.name"), "defs/hives/north.yaml:3:23");
        assert_eq!(loc("config.site.tz"), "defs/images/base.yaml:5:33");
        assert_eq!(loc("config.\"a.b\""), "defs/hives/north.yaml:3:36");
        assert_eq!(loc("epoch"), "w4b.yaml:1:8");
        let files: Vec<&str> = t.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            files,
            ["defs/hives/north.yaml", "defs/images/base.yaml", "w4b.yaml"]
        );
        assert_eq!(
            l.list(&Pattern::parse("//...", None).unwrap())
                .unwrap()
                .iter()
                .map(|(l, k)| format!("{l} {k}"))
                .collect::<Vec<_>>(),
            ["//hives:north image", "//images:base image", "//images:one layer"]
        );
    }

    #[test]
    fn precedence_is_default_parent_file_env_cli() {
        let files = [
            ("w4b.yaml", "epoch: 1\n"),
            ("defs/images/base.yaml", "kind: image\nbase: scratch\nepoch: 2\n"),
            ("defs/images/child.yaml", "extends: :base\nepoch: 3\n"),
            ("defs/images/bare.yaml", "kind: image\nbase: scratch\n"),
        ];
        let dir = workspace(&files);
        let epoch = |env: &[(&str, &str)], sets: &[&str], target: &str| {
            let t = loader(&dir, env, sets).load(&label(target)).unwrap();
            (image(&t).epoch, t.locations["epoch"].to_string())
        };
        assert_eq!(epoch(&[], &[], "//images:bare"), (Some(1), "w4b.yaml:1:8".into()));
        assert_eq!(
            epoch(&[], &[], "//images:base"),
            (Some(2), "defs/images/base.yaml:3:8".into())
        );
        assert_eq!(
            epoch(&[], &[], "//images:child"),
            (Some(3), "defs/images/child.yaml:2:8".into())
        );
        assert_eq!(
            epoch(&[("W4B_EPOCH", "4")], &[], "//images:child"),
            (Some(4), "env W4B_EPOCH".into())
        );
        assert_eq!(
            epoch(&[("W4B_EPOCH", "4")], &["epoch=5"], "//images:child"),
            (Some(5), "--set epoch=5".into())
        );
        assert_eq!(
            epoch(&[("W4B_EPOCH", "4")], &["epoch=5", "epoch=6"], "//images:bare"),
            (Some(6), "--set epoch=6".into())
        );
    }

    #[test]
    fn overrides_reach_the_typed_value_and_are_validated() {
        let dir = workspace(&[
            ("w4b.yaml", ""),
            ("defs/images/demo.yaml", DEMO),
            ("defs/layers/motd.yaml", MOTD),
        ]);
        let t = loader(
            &dir,
            &[],
            &[
                "output.compression=none",
                "output.level=",
                "layers[1]=//layers:x",
                "config.any=changed",
            ],
        )
        .load(&label("//images:demo"))
        .unwrap();
        let img = image(&t);
        assert_eq!(img.output.compression, Compression::None);
        assert_eq!(img.layers.len(), 2);
        assert_eq!(
            img.config["any"],
            crate::defs::ConfigValue::String("changed".into())
        );
        // A layer has no `epoch`: W4B_EPOCH leaves it alone.
        assert!(loader(&dir, &[("W4B_EPOCH", "1")], &[])
            .load(&label("//layers:motd"))
            .is_ok());
        let err = loader(&dir, &[], &["output.fromat=tar"])
            .load(&label("//images:demo"))
            .unwrap_err();
        let DefsErrorKind::UnknownKey { help, .. } = err.kind() else {
            panic!("{err:?}")
        };
        assert_eq!(help, "did you mean `format`?");
    }

    #[test]
    fn env_substitution_uses_the_injected_map_only() {
        let dir = workspace(&[
            ("w4b.yaml", ""),
            (
                "defs/images/e.yaml",
                "kind: image\nbase: scratch\nepoch: ${EPOCH}\ndescription: \"${DESC:-none}\"\n",
            ),
        ]);
        let t = loader(&dir, &[("EPOCH", "42")], &[])
            .load(&label("//images:e"))
            .unwrap();
        assert_eq!(image(&t).epoch, Some(42));
        assert_eq!(image(&t).description.as_deref(), Some("none"));
        let env = BTreeMap::new();
        let ws = Workspace::open(dir.path(), &env).unwrap();
        let err = Loader::new(ws, env, &[])
            .unwrap()
            .load(&label("//images:e"))
            .unwrap_err();
        assert!(matches!(err.kind(), DefsErrorKind::MissingVar { .. }));
    }

    #[test]
    fn missing_targets_suggest_a_sibling() {
        let dir = workspace(&[("w4b.yaml", ""), ("defs/layers/motd.yaml", MOTD)]);
        let err = loader(&dir, &[], &[]).load(&label("//layers:mtod")).unwrap_err();
        let DefsErrorKind::TargetNotFound { help, path, .. } = err.kind() else {
            panic!("{err:?}")
        };
        assert_eq!(path, "defs/layers/mtod.yaml");
        assert_eq!(help.as_deref(), Some("did you mean `//layers:motd`?"));
    }

    /// Makes `path` a sparse file one byte past the definition size limit.
    fn oversize(dir: &tempfile::TempDir, path: &str) {
        let f = std::fs::File::create(dir.path().join(path)).unwrap();
        f.set_len(workspace::MAX_DEFINITION_BYTES + 1).unwrap();
    }

    #[test]
    fn definitions_past_the_size_limit_are_refused_by_name() {
        let limit = workspace::MAX_DEFINITION_BYTES;
        let dir = workspace(&[("w4b.yaml", ""), ("defs/images/big.yaml", "")]);
        oversize(&dir, "defs/images/big.yaml");
        let err = loader(&dir, &[], &[]).load(&label("//images:big")).unwrap_err();
        let DefsErrorKind::TooLarge { path, size, limit: l } = err.kind() else {
            panic!("{err:?}")
        };
        assert_eq!(
            (path.as_str(), *size, *l),
            ("defs/images/big.yaml", limit + 1, limit)
        );
        assert_eq!(
            err.to_string(),
            format!(
                "`defs/images/big.yaml` is {} bytes; a definition file may hold at most 16 MiB",
                limit + 1
            )
        );

        oversize(&dir, "w4b.yaml");
        let err = Workspace::open(dir.path(), &BTreeMap::new()).unwrap_err();
        assert!(
            matches!(err.kind(), DefsErrorKind::TooLarge { path, .. } if path == "w4b.yaml"),
            "{err:?}"
        );
    }

    #[test]
    fn a_definition_that_extends_one_with_many_keys_merges_them_all() {
        // Every map of every target is merged (over its parent, or over nothing): with a
        // scan per key this took seconds; it is now O(n log n).
        let n = 40_000;
        let parent: String = (0..n).map(|i| format!("  k{i}: {i}\n")).collect();
        let child: String = (0..n).step_by(2).map(|i| format!("  k{i}: child\n")).collect();
        let dir = workspace(&[
            ("w4b.yaml", ""),
            (
                "defs/images/parent.yaml",
                &format!("kind: image\nbase: scratch\nepoch: 1\nconfig:\n{parent}"),
            ),
            (
                "defs/images/child.yaml",
                &format!("kind: image\nextends: //images:parent\nconfig:\n{child}  new: 1\n"),
            ),
        ]);
        let t = loader(&dir, &[], &[]).load(&label("//images:child")).unwrap();
        let config = &image(&t).config;
        assert_eq!(config.len(), n + 1);
        assert_eq!(config["k0"], crate::defs::ConfigValue::String("child".into()));
        assert_eq!(config["k1"], crate::defs::ConfigValue::Int(1));
        assert_eq!(t.locations["config.k2"].to_string(), "defs/images/child.yaml:5:7");
        assert_eq!(
            t.locations["config.k3"].to_string(),
            "defs/images/parent.yaml:8:7"
        );
    }

    #[test]
    fn loaders_cache_and_are_shareable_between_threads() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Loader>();
        let dir = workspace(&[("w4b.yaml", ""), ("defs/layers/motd.yaml", MOTD)]);
        let l = loader(&dir, &[], &[]);
        let first = l.load(&label("//layers:motd")).unwrap();
        std::fs::remove_file(dir.path().join("defs/layers/motd.yaml")).unwrap();
        assert_eq!(l.load(&label("//layers:motd")).unwrap(), first);
    }
}
