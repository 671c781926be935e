//! Every way a definition can be wrong, as miette diagnostics with stable codes.
//!
//! Each variant names one mistake a person can fix, points at the offending characters
//! (file, line and column) and says how to fix it in a `help:` line. The codes
//! (`w4b::defs::*`) are stable: documentation and tests refer to them. [`DefsError`] boxes the
//! kind so `Result<_, DefsError>` stays one pointer wide on the happy path.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};

use super::span::Span;

type Src = NamedSource<Arc<str>>;

/// A definition error: see [`DefsErrorKind`] for the cases.
pub struct DefsError(Box<DefsErrorKind>);

impl DefsError {
    pub fn kind(&self) -> &DefsErrorKind {
        &self.0
    }

    pub fn into_kind(self) -> DefsErrorKind {
        *self.0
    }
}

impl From<DefsErrorKind> for DefsError {
    fn from(kind: DefsErrorKind) -> DefsError {
        DefsError(Box::new(kind))
    }
}

impl fmt::Debug for DefsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DefsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DefsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

// miette has no blanket impl for boxes of concrete diagnostics, so delegate by hand.
impl Diagnostic for DefsError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.0.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.help()
    }
    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.url()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.0.labels()
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        self.0.related()
    }
    fn diagnostic_source(&self) -> Option<&dyn Diagnostic> {
        self.0.diagnostic_source()
    }
}

/// The cases of [`DefsError`].
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum DefsErrorKind {
    #[error("cannot read `{path}`")]
    #[diagnostic(code(w4b::defs::io))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{path}` leads outside the workspace through a symlink")]
    #[diagnostic(
        code(w4b::defs::escapes_workspace),
        help("definitions are read only from inside the workspace: copy the file or package in, or point the symlink inside the workspace")
    )]
    EscapesWorkspace { path: String },

    #[error("no `w4b.yaml` found in `{start}` or any parent directory")]
    #[diagnostic(
        code(w4b::defs::no_workspace),
        help("create a `w4b.yaml` (it may be empty) at the workspace root, or pass `--workspace <dir>`")
    )]
    NoWorkspace { start: String },

    #[error("invalid YAML: {message}")]
    #[diagnostic(
        code(w4b::defs::yaml_syntax),
        help("check indentation, quotes and brackets at and just before this point; quote values that contain `: ` or start with `[`, `{{`, `*`, `&`, `!`, `%` or `@`")
    )]
    Syntax {
        #[source_code]
        src: Src,
        #[label("here")]
        span: SourceSpan,
        message: String,
    },

    #[error("{message}")]
    #[diagnostic(code(w4b::defs::unsupported_yaml))]
    UnsupportedYaml {
        #[source_code]
        src: Src,
        #[label("not supported")]
        span: SourceSpan,
        message: String,
        #[help]
        help: Option<String>,
    },

    #[error("duplicate key `{key}`")]
    #[diagnostic(
        code(w4b::defs::duplicate_key),
        help("remove one of the two; a key may appear once per map")
    )]
    DuplicateKey {
        #[source_code]
        src: Src,
        #[label("defined again here")]
        span: SourceSpan,
        #[label("first defined here")]
        first: SourceSpan,
        key: String,
    },

    #[error("`{file}` holds more than {limit} values")]
    #[diagnostic(
        code(w4b::defs::too_many_values),
        help("an alias (`*name`) copies every value of its anchor each time it is used, so aliases of aliases multiply; write the values out, or split the definition into several files")
    )]
    TooManyValues {
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        file: String,
        limit: usize,
        label: String,
    },

    #[error("`{path}` is {size} bytes; a definition file may hold at most {} MiB", limit >> 20)]
    #[diagnostic(
        code(w4b::defs::too_large),
        help("definitions hold configuration, not data: split it into several files (`extends` shares their common part), and name large contents with `source:` or `fetch:`")
    )]
    TooLarge { path: String, size: u64, limit: u64 },

    #[error("unknown key `{key}`{context}")]
    #[diagnostic(code(w4b::defs::unknown_key))]
    UnknownKey {
        #[source_code]
        src: Src,
        #[label("not a valid key here")]
        span: SourceSpan,
        key: String,
        /// ` in a file entry` and the like, or empty.
        context: String,
        #[help]
        help: String,
    },

    #[error("invalid type: expected {expected}, found {found}")]
    #[diagnostic(code(w4b::defs::invalid_type))]
    InvalidType {
        #[source_code]
        src: Src,
        #[label("expected {expected}")]
        span: SourceSpan,
        expected: String,
        found: String,
        #[help]
        help: Option<String>,
    },

    #[error("missing key `{field}`")]
    #[diagnostic(code(w4b::defs::missing_key))]
    MissingKey {
        #[source_code]
        src: Src,
        #[label("this map needs `{field}`")]
        span: SourceSpan,
        field: String,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(w4b::defs::invalid_value))]
    InvalidValue {
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        message: String,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("invalid mode `{text}`")]
    #[diagnostic(
        code(w4b::defs::bad_mode),
        help("write the mode as an octal string of at most 4 digits, such as `\"0644\"` or `\"04755\"` (at most `07777`)")
    )]
    BadMode {
        #[source_code]
        src: Src,
        #[label("{reason}")]
        span: SourceSpan,
        text: String,
        reason: String,
    },

    #[error("invalid owner `{text}`")]
    #[diagnostic(
        code(w4b::defs::bad_owner),
        help("write the owner as numeric `uid:gid` (such as `\"1000:1000\"`) or `uid` (the group is then the same number)")
    )]
    BadOwner {
        #[source_code]
        src: Src,
        #[label("not a numeric owner")]
        span: SourceSpan,
        text: String,
    },

    #[error("invalid path `{path}`: {reason}")]
    #[diagnostic(code(w4b::defs::bad_path))]
    BadPath {
        #[source_code]
        src: Src,
        #[label("{reason}")]
        span: SourceSpan,
        path: String,
        reason: String,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(w4b::defs::file_operation))]
    FileOperation {
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        message: String,
        label: String,
        #[help]
        help: String,
    },

    #[error("unknown target kind `{kind}`")]
    #[diagnostic(code(w4b::defs::unknown_kind))]
    UnknownKind {
        #[source_code]
        src: Src,
        #[label("not a target kind")]
        span: SourceSpan,
        kind: String,
        #[help]
        help: String,
    },

    #[error("`{label}` does not say what kind of target it is")]
    #[diagnostic(code(w4b::defs::missing_kind))]
    MissingKind {
        #[source_code]
        src: Src,
        #[label("no `kind` key in this map")]
        span: SourceSpan,
        label: String,
        #[help]
        help: String,
    },

    #[error("`extends` forms a cycle: {cycle}")]
    #[diagnostic(
        code(w4b::defs::extends_cycle),
        help("a target cannot inherit from itself, directly or through others; remove one `extends`")
    )]
    ExtendsCycle {
        #[source_code]
        src: Src,
        #[label("closes the cycle")]
        span: SourceSpan,
        cycle: String,
    },

    #[error("`{label}` (kind `{kind}`) cannot extend `{parent}` (kind `{parent_kind}`)")]
    #[diagnostic(
        code(w4b::defs::extends_kind),
        help("a target can only extend a target of the same kind")
    )]
    ExtendsKind {
        #[source_code]
        src: Src,
        #[label("kind `{parent_kind}`")]
        span: SourceSpan,
        label: String,
        kind: String,
        parent: String,
        parent_kind: String,
    },

    #[error("`{key}+` appends to a list, but {what}")]
    #[diagnostic(
        code(w4b::defs::bad_append),
        help("use `{key}+:` only with a list that extends an inherited list; write `{key}:` to replace the value")
    )]
    BadAppend {
        #[source_code]
        src: Src,
        #[label("append here")]
        span: SourceSpan,
        key: String,
        what: String,
    },

    #[error("environment variable `{var}` is not set")]
    #[diagnostic(code(w4b::defs::missing_var))]
    MissingVar {
        #[source_code]
        src: Src,
        #[label("`{var}` is not set")]
        span: SourceSpan,
        var: String,
        #[help]
        help: String,
    },

    #[error("invalid substitution: {message}")]
    #[diagnostic(
        code(w4b::defs::bad_substitution),
        help("write `${{NAME}}` or `${{NAME:-default}}`; write `$${{` for a literal `${{`")
    )]
    BadSubstitution {
        #[source_code]
        src: Src,
        #[label("here")]
        span: SourceSpan,
        message: String,
    },

    #[error("invalid label `{text}`: {reason}")]
    #[diagnostic(code(w4b::defs::bad_label))]
    BadLabel {
        #[source_code]
        src: Option<Src>,
        #[label("{reason}")]
        span: Option<SourceSpan>,
        text: String,
        reason: String,
        #[help]
        help: String,
    },

    #[error("target `{label}` not found: no file `{path}`")]
    #[diagnostic(code(w4b::defs::target_not_found))]
    TargetNotFound {
        #[source_code]
        src: Option<Src>,
        #[label("referenced here")]
        span: Option<SourceSpan>,
        label: String,
        path: String,
        #[help]
        help: Option<String>,
    },

    #[error("no targets match `{pattern}`")]
    #[diagnostic(
        code(w4b::defs::no_match),
        help("`{pattern}` looks for `*.yaml` files under `{dir}`")
    )]
    NoMatch { pattern: String, dir: String },

    #[error("hive `{label}` has {count} problem(s)")]
    #[diagnostic(
        code(w4b::defs::hive_invalid),
        help("fix each problem listed below; `w4b hive validate {label}` lists them all")
    )]
    HiveInvalid {
        label: String,
        count: usize,
        #[related]
        problems: Vec<DefsError>,
    },

    #[error("secret `{key}`: {message}")]
    #[diagnostic(code(w4b::defs::secret_source))]
    SecretSource {
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        /// The secret's key path; never its value.
        key: String,
        message: String,
        label: String,
        #[help]
        help: String,
    },

    #[error("no image for hive `{label}`")]
    #[diagnostic(
        code(w4b::defs::no_hive_image),
        help("add `image: //images:<name>` to the hive file, or `hives: {{image: //images:<name>}}` to `w4b.yaml`")
    )]
    NoHiveImage { label: String },

    #[error("`{label}` is a `{kind}`, not a hive")]
    #[diagnostic(
        code(w4b::defs::not_a_hive),
        help("name a hive file (with `hive_id` and `metadata`), or an image with `hive_file:` or a `hive:` section")
    )]
    NotAHive { label: String, kind: String },

    #[error("invalid override: {message}")]
    #[diagnostic(code(w4b::defs::bad_override))]
    BadOverride {
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        message: String,
        label: String,
        #[help]
        help: String,
    },
}

/// Shorthands to build spanned variants without repeating the source and span plumbing.
impl Span {
    pub(crate) fn src(&self) -> Src {
        self.named_source()
    }

    pub(crate) fn ss(&self) -> SourceSpan {
        self.source_span()
    }

    pub(crate) fn invalid_value(
        &self,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> DefsError {
        DefsErrorKind::InvalidValue {
            src: self.src(),
            span: self.ss(),
            message: message.into(),
            label: label.into(),
            help,
        }
        .into()
    }

    pub(crate) fn bad_path(&self, path: &str, reason: impl Into<String>, help: Option<String>) -> DefsError {
        DefsErrorKind::BadPath {
            src: self.src(),
            span: self.ss(),
            path: path.to_owned(),
            reason: reason.into(),
            help,
        }
        .into()
    }
}
