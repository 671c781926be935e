//! Typed targets: what a `kind: layer` or `kind: image` definition means once validated.
//!
//! Deserialisation happens in two phases. `Raw*` structs mirror the YAML shape (so serde
//! and [`super::de`] report unknown keys and type errors at their spans); conversion then
//! checks meaning — exactly one operation per file entry, octal modes, normalised absolute
//! paths, digests, labels — and fills in defaults, so the typed values below are complete
//! and canonical. Only these typed values may feed step keys: two definitions that differ
//! in comments, key order, quoting or where a value was inherited from load equal.
//!
//! `Spanned` fields keep where a value was written for later diagnostics; their equality
//! and serialisation ignore the span.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};

use super::de::{from_value, struct_fields, Spanned};
use super::error::{DefsError, DefsErrorKind};
use super::label::Label;
use super::span::Span;
use super::suggest;
use super::yaml::Value;

/// The kinds of target. More will come (`base`, `board`, `packages`, hive data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Layer,
    Image,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[Kind::Layer, Kind::Image];
    pub const NAMES: &'static [&'static str] = &["layer", "image"];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::Image => "image",
        }
    }

    /// The keys a definition of this kind may set after `kind` and `extends` are taken out.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Layer => struct_fields::<RawLayer>(),
            Kind::Image => struct_fields::<RawImage>(),
        }
    }

    /// Every top-level key of any kind, for checking `--set` paths.
    pub fn all_keys() -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = Kind::ALL.iter().flat_map(|k| k.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A loaded, validated target.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    Layer(Layer),
    Image(Image),
}

impl Target {
    pub fn kind(&self) -> Kind {
        match self {
            Target::Layer(_) => Kind::Layer,
            Target::Image(_) => Kind::Image,
        }
    }
}

/// A reusable set of file operations (`kind: layer`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Layer {
    pub files: Vec<Spanned<FileEntry>>,
    pub description: Option<String>,
}

/// A root filesystem built from a base and layers (`kind: image`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Image {
    pub base: Base,
    /// Applied in order, each over the result of the previous.
    pub layers: Vec<Spanned<Label>>,
    /// `SOURCE_DATE_EPOCH`; `None` when neither the image nor `w4b.yaml` gives one.
    pub epoch: Option<u64>,
    pub output: Output,
    /// Free-form template context, available to templates as `config`.
    pub config: BTreeMap<String, ConfigValue>,
    pub description: Option<String>,
}

/// Where an image's tree starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Base {
    /// An empty tree.
    Scratch,
}

/// How the image's root filesystem is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Output {
    pub format: Format,
    pub compression: Compression,
    /// Compression level; 0 when `compression` is `none`.
    pub level: i32,
}

impl Output {
    /// zstd level 3 unless the definition says otherwise. Measured on a 200 MB slice of a
    /// Debian `/usr/lib`, one thread: level 3 took 1.6 s (66 MB), level 9 4.0 s (60 MB),
    /// level 19 114 s (52 MB). Level 19 saves 21% but turns a 2 GB rootfs into a
    /// twenty-minute step, so it is opt-in (`level: 19`) for release images.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// The artifact's file name for a target called `name`: `north.tar.zst`.
    pub fn file_name(&self, name: &str) -> String {
        let ext = match self.format {
            Format::Tar => "tar",
        };
        match self.compression {
            Compression::None => format!("{name}.{ext}"),
            Compression::Zstd => format!("{name}.{ext}.zst"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// A tar archive of the root filesystem.
    Tar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd,
}

/// One operation on one path of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    pub path: TreePath,
    pub op: FileOp,
    /// Owner of what the operation creates (`0:0` by default; unused by `remove`).
    pub owner: Owner,
}

/// What a file entry does. Modes are resolved: files default to `0644`, directories `0755`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    /// A regular file with this content.
    Content { content: String, mode: Mode },
    /// A file or directory tree copied from the workspace. `source` is already resolved
    /// against the directory of the YAML file that wrote it. `mode`, when given, applies to
    /// every regular file copied; otherwise files keep 0644 (0755 if executable in the
    /// workspace) and directories 0755.
    Source { source: WsPath, mode: Option<Mode> },
    /// A file rendered from a minijinja template in the workspace (resolved like `source`).
    Template { template: WsPath, mode: Mode },
    /// A symbolic link to `target` (any text, relative or absolute).
    Symlink { target: String },
    /// A directory.
    Dir { mode: Mode },
    /// Removes the path (and everything below it) if present.
    Remove,
    /// Appends text to an existing file, or creates it (mode 0644) if absent.
    Append { content: String },
    /// A file downloaded from `url` and verified against `sha256` before use.
    Fetch { url: String, sha256: String, mode: Mode },
}

impl FileOp {
    pub const NAMES: &'static [&'static str] = &[
        "content", "source", "template", "symlink", "dir", "remove", "append", "fetch",
    ];
}

/// A normalised absolute path in the image: starts with `/`, no `.` or `..` components, no
/// empty components, no trailing `/` (except the root itself).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TreePath(String);

impl TreePath {
    pub fn parse(text: &str) -> Result<TreePath, &'static str> {
        if !text.starts_with('/') {
            return Err("must be absolute");
        }
        if text.contains('\0') {
            return Err("contains a NUL byte");
        }
        if text == "/" {
            return Ok(TreePath(text.to_owned()));
        }
        if text.ends_with('/') {
            return Err("ends with `/`");
        }
        for component in text[1..].split('/') {
            match component {
                "" => return Err("contains `//`"),
                "." => return Err("contains a `.` component"),
                ".." => return Err("contains a `..` component"),
                _ => {}
            }
        }
        Ok(TreePath(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A normalised path relative to the workspace root, with `/` separators.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WsPath(String);

impl WsPath {
    /// `relative` joined onto the workspace-relative directory `dir`, normalised; `None` if
    /// it would leave the workspace.
    pub fn join(dir: &str, relative: &str) -> Option<WsPath> {
        let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                part => parts.push(part),
            }
        }
        (!parts.is_empty()).then(|| WsPath(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Permission bits, at most `07777`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mode(pub u32);

impl Mode {
    pub const FILE: Mode = Mode(0o644);
    pub const DIR: Mode = Mode(0o755);

    /// Parses an octal string: `"0644"`, `"644"`, `"04755"`.
    pub fn parse(text: &str) -> Result<Mode, &'static str> {
        if text.is_empty() {
            return Err("empty");
        }
        if text.len() > 5 || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err("not an octal number");
        }
        match u32::from_str_radix(text, 8) {
            Ok(bits) if bits <= 0o7777 => Ok(Mode(bits)),
            _ => Err("larger than 07777"),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Numeric owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// `"uid:gid"`, or `"uid"` meaning the group of the same number.
    pub fn parse(text: &str) -> Option<Owner> {
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        match text.split_once(':') {
            Some((uid, gid)) => Some(Owner {
                uid: number(uid)?,
                gid: number(gid)?,
            }),
            None => {
                let id = number(text)?;
                Some(Owner { uid: id, gid: id })
            }
        }
    }
}

/// A value of the free-form `config` map, resolved by the YAML core schema.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    List(Vec<ConfigValue>),
    Map(BTreeMap<String, ConfigValue>),
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ConfigValue, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Null)
            }
            fn visit_none<E>(self) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ConfigValue, E> {
                Ok(i64::try_from(v).map_or(ConfigValue::UInt(v), ConfigValue::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue::String(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ConfigValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(ConfigValue::List(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ConfigValue, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, ConfigValue>()? {
                    entries.insert(key, value);
                }
                Ok(ConfigValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// The YAML shapes.

#[derive(Deserialize)]
struct RawLayer {
    #[serde(default)]
    files: Vec<Spanned<RawFile>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawFile {
    path: Spanned<String>,
    content: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
    symlink: Option<Spanned<String>>,
    dir: Option<Spanned<bool>>,
    remove: Option<Spanned<bool>>,
    append: Option<Spanned<String>>,
    fetch: Option<Spanned<RawFetch>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawFetch {
    url: Spanned<String>,
    sha256: Spanned<String>,
}

#[derive(Deserialize)]
struct RawImage {
    base: Spanned<String>,
    #[serde(default)]
    layers: Vec<Spanned<String>>,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    output: Option<RawOutput>,
    #[serde(default)]
    config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawOutput {
    format: Option<Format>,
    compression: Option<Compression>,
    level: Option<Spanned<i32>>,
}

/// What conversion needs to know about the target being loaded.
pub(crate) struct Context<'a> {
    /// Workspace-relative defs folder, such as `defs`.
    pub defs_dir: &'a str,
    /// The target's own package, for values that came from overrides.
    pub package: &'a str,
    /// Workspace-relative directory of the target's own file.
    pub dir: &'a str,
}

impl Context<'_> {
    /// The package and directory of the file `span` points into (or the target's own).
    fn origin_of(&self, span: &Span) -> (String, String) {
        let Some(path) = span.file.path() else {
            return (self.package.to_owned(), self.dir.to_owned());
        };
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        let package = if dir == self.defs_dir {
            String::new()
        } else {
            dir.strip_prefix(self.defs_dir)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(self.package)
                .to_owned()
        };
        (package, dir)
    }
}

/// Converts the merged document (without `kind` and `extends`) into a typed target.
pub(crate) fn convert(kind: Kind, doc: &Value, ctx: &Context<'_>) -> Result<Target, DefsError> {
    match kind {
        Kind::Layer => {
            let raw: RawLayer = from_value(doc)?;
            let files = raw
                .files
                .into_iter()
                .map(|entry| convert_file(entry, ctx))
                .collect::<Result<_, _>>()?;
            Ok(Target::Layer(Layer {
                files,
                description: raw.description,
            }))
        }
        Kind::Image => {
            let raw: RawImage = from_value(doc)?;
            let base = match raw.base.value.as_str() {
                "scratch" => Base::Scratch,
                other => {
                    return Err(raw.base.span.invalid_value(
                        format!("unknown base `{other}`"),
                        "not a base",
                        Some(suggest::help_for(other, &["scratch"], "bases")),
                    ))
                }
            };
            let layers = raw
                .layers
                .into_iter()
                .map(|text| {
                    let (package, _) = ctx.origin_of(&text.span);
                    match Label::parse(&text.value, Some(&package)) {
                        Ok(label) => Ok(Spanned::new(label, text.span)),
                        Err(e) => Err(e.into_defs(Some(&text.span))),
                    }
                })
                .collect::<Result<_, _>>()?;
            Ok(Target::Image(Image {
                base,
                layers,
                epoch: raw.epoch,
                output: convert_output(raw.output)?,
                config: raw.config,
                description: raw.description,
            }))
        }
    }
}

fn convert_output(raw: Option<RawOutput>) -> Result<Output, DefsError> {
    let Some(raw) = raw else {
        return Ok(Output {
            format: Format::Tar,
            compression: Compression::Zstd,
            level: Output::DEFAULT_ZSTD_LEVEL,
        });
    };
    let compression = raw.compression.unwrap_or(Compression::Zstd);
    let level = match (compression, raw.level) {
        (Compression::Zstd, None) => Output::DEFAULT_ZSTD_LEVEL,
        (Compression::Zstd, Some(level)) if (1..=22).contains(&level.value) => level.value,
        (Compression::Zstd, Some(level)) => {
            return Err(level.span.invalid_value(
                format!("zstd level {} is out of range", level.value),
                "not in 1..=22",
                Some(format!(
                    "use a level from 1 (fastest) to 22 (smallest); the default is {}",
                    Output::DEFAULT_ZSTD_LEVEL
                )),
            ))
        }
        (Compression::None, None) => 0,
        (Compression::None, Some(level)) => {
            return Err(level.span.invalid_value(
                "`level` is set but `compression` is `none`",
                "nothing to apply this level to",
                Some("remove `level`, or set `compression: zstd`".into()),
            ))
        }
    };
    Ok(Output {
        format: raw.format.unwrap_or(Format::Tar),
        compression,
        level,
    })
}

fn convert_file(raw: Spanned<RawFile>, ctx: &Context<'_>) -> Result<Spanned<FileEntry>, DefsError> {
    let entry_span = raw.span;
    let raw = raw.value;
    let path_text = raw.path.value.as_str();
    let path = TreePath::parse(path_text).map_err(|reason| {
        raw.path.span.bad_path(
            path_text,
            reason,
            Some("paths in an image are absolute and normalised, such as `/etc/motd`".into()),
        )
    })?;

    let present: Vec<&str> = [
        ("content", raw.content.is_some()),
        ("source", raw.source.is_some()),
        ("template", raw.template.is_some()),
        ("symlink", raw.symlink.is_some()),
        ("dir", raw.dir.is_some()),
        ("remove", raw.remove.is_some()),
        ("append", raw.append.is_some()),
        ("fetch", raw.fetch.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let op_error = |message: String, label: &str, help: String| -> DefsError {
        DefsErrorKind::FileOperation {
            src: entry_span.src(),
            span: entry_span.ss(),
            message,
            label: label.to_owned(),
            help,
        }
        .into()
    };
    match present.len() {
        1 => {}
        0 => {
            return Err(op_error(
                format!("the entry for `{path_text}` has no operation"),
                "no operation",
                format!("give exactly one of {}", suggest::backticked(FileOp::NAMES)),
            ))
        }
        _ => {
            return Err(op_error(
                format!(
                    "the entry for `{path_text}` has {} operations: {}",
                    present.len(),
                    suggest::backticked(&present)
                ),
                "more than one operation",
                "split it into one entry per operation; entries apply in order".into(),
            ))
        }
    }
    let op_name = present[0];
    if path.as_str() == "/" && op_name != "dir" {
        return Err(raw.path.span.bad_path(
            path_text,
            "is the root directory",
            Some("only `dir: true` may name `/`".into()),
        ));
    }

    let mode = match &raw.mode {
        None => None,
        Some(text) => Some(Mode::parse(&text.value).map_err(|reason| -> DefsError {
            DefsErrorKind::BadMode {
                src: text.span.src(),
                span: text.span.ss(),
                text: text.value.clone(),
                reason: reason.to_owned(),
            }
            .into()
        })?),
    };
    let owner = match &raw.owner {
        None => Owner::default(),
        Some(text) => Owner::parse(&text.value).ok_or_else(|| -> DefsError {
            DefsErrorKind::BadOwner {
                src: text.span.src(),
                span: text.span.ss(),
                text: text.value.clone(),
            }
            .into()
        })?,
    };
    let not_with = |key: &str, value: &Option<Spanned<String>>, why: &str| -> Result<(), DefsError> {
        match value {
            Some(value) => Err(value.span.invalid_value(
                format!("`{key}` cannot be used with `{op_name}`"),
                why.to_owned(),
                Some(format!("remove `{key}`")),
            )),
            None => Ok(()),
        }
    };
    let ws_path = |text: &Spanned<String>| -> Result<WsPath, DefsError> {
        let value = text.value.as_str();
        if value.is_empty() || value.starts_with('/') || value.contains('\0') {
            return Err(text.span.bad_path(
                value,
                "must be relative to the definition file",
                Some("write a path relative to the YAML file's directory, such as `files/app.conf`".into()),
            ));
        }
        let (_, dir) = ctx.origin_of(&text.span);
        WsPath::join(&dir, value).ok_or_else(|| {
            text.span.bad_path(
                value,
                "leaves the workspace",
                Some("files used by a definition must be inside the workspace".into()),
            )
        })
    };
    let flag = |value: &Spanned<bool>, key: &str| -> Result<(), DefsError> {
        if value.value {
            Ok(())
        } else {
            Err(value.span.invalid_value(
                format!("`{key}: false` does nothing"),
                "only `true` is meaningful",
                Some(format!("write `{key}: true`, or remove the entry")),
            ))
        }
    };

    let op = if let Some(content) = raw.content {
        FileOp::Content {
            content: content.value,
            mode: mode.unwrap_or(Mode::FILE),
        }
    } else if let Some(source) = &raw.source {
        FileOp::Source {
            source: ws_path(source)?,
            mode,
        }
    } else if let Some(template) = &raw.template {
        FileOp::Template {
            template: ws_path(template)?,
            mode: mode.unwrap_or(Mode::FILE),
        }
    } else if let Some(target) = raw.symlink {
        not_with("mode", &raw.mode, "symbolic links have no mode")?;
        if target.value.is_empty() || target.value.contains('\0') {
            return Err(target.span.invalid_value(
                "empty or NUL-containing symlink target",
                "invalid target",
                None,
            ));
        }
        FileOp::Symlink { target: target.value }
    } else if let Some(dir) = &raw.dir {
        flag(dir, "dir")?;
        FileOp::Dir {
            mode: mode.unwrap_or(Mode::DIR),
        }
    } else if let Some(remove) = &raw.remove {
        flag(remove, "remove")?;
        not_with("mode", &raw.mode, "nothing is created")?;
        not_with("owner", &raw.owner, "nothing is created")?;
        FileOp::Remove
    } else if let Some(append) = raw.append {
        not_with("mode", &raw.mode, "appending keeps the file's mode")?;
        not_with("owner", &raw.owner, "appending keeps the file's owner")?;
        FileOp::Append {
            content: append.value,
        }
    } else if let Some(fetch) = raw.fetch {
        let RawFetch { url, sha256 } = fetch.value;
        if !["http://", "https://", "file://"]
            .iter()
            .any(|scheme| url.value.starts_with(scheme))
        {
            return Err(url.span.invalid_value(
                format!("unsupported URL `{}`", url.value),
                "not an http, https or file URL",
                Some("fetch from `https://…`, `http://…` or `file:///…`".into()),
            ));
        }
        let digest = sha256.value.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(sha256.span.invalid_value(
                "`sha256` must be 64 hex characters",
                "not a SHA-256 digest",
                Some("compute it with `sha256sum <file>`".into()),
            ));
        }
        FileOp::Fetch {
            url: url.value,
            sha256: digest,
            mode: mode.unwrap_or(Mode::FILE),
        }
    } else {
        // `present.len() == 1` above guarantees one branch matched.
        return Err(op_error(
            format!("the entry for `{path_text}` has no operation"),
            "no operation",
            format!("give exactly one of {}", suggest::backticked(FileOp::NAMES)),
        ));
    };
    Ok(Spanned::new(FileEntry { path, op, owner }, entry_span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("0644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("04755"), Ok(Mode(0o4755)));
        assert_eq!(Mode::parse("7777"), Ok(Mode(0o7777)));
        assert!(Mode::parse("10000").is_err());
        assert!(Mode::parse("0o644").is_err());
        assert!(Mode::parse("0x1ff").is_err());
        assert!(Mode::parse("0648").is_err());
        assert!(Mode::parse("").is_err());
        assert!(Mode::parse("000644").is_err());
        assert_eq!(Mode(0o644).to_string(), "0644");
    }

    #[test]
    fn owners() {
        assert_eq!(Owner::parse("1000:100"), Some(Owner { uid: 1000, gid: 100 }));
        assert_eq!(Owner::parse("1000"), Some(Owner { uid: 1000, gid: 1000 }));
        for bad in ["", "root", "1:", ":1", "-1", "1:2:3", "99999999999"] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn tree_paths() {
        assert!(TreePath::parse("/etc/motd").is_ok());
        assert!(TreePath::parse("/").is_ok());
        for bad in [
            "etc/motd",
            "/etc/",
            "/etc//motd",
            "/etc/../x",
            "/./x",
            "/a\0b",
            "",
        ] {
            assert!(TreePath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn workspace_paths() {
        assert_eq!(
            WsPath::join("defs/layers", "files/app").unwrap().as_str(),
            "defs/layers/files/app"
        );
        assert_eq!(
            WsPath::join("defs/layers", "../shared/./x").unwrap().as_str(),
            "defs/shared/x"
        );
        assert!(WsPath::join("defs/layers", "../../../etc/passwd").is_none());
    }

    #[test]
    fn output_file_names() {
        let out = Output {
            format: Format::Tar,
            compression: Compression::Zstd,
            level: 3,
        };
        assert_eq!(out.file_name("demo"), "demo.tar.zst");
    }

    #[test]
    fn kinds_know_their_keys() {
        assert!(Kind::Image.keys().contains(&"layers"));
        assert!(Kind::Layer.keys().contains(&"files"));
        assert!(Kind::all_keys().contains(&"epoch"));
    }
}
