//! Where a definition value came from: source texts, byte spans and printable locations.
//!
//! Every YAML node, every map key and every `--set`/environment override carries a [`Span`]
//! into a [`SourceFile`], so a diagnostic can underline the exact characters and the build
//! engine can say which file, line and column produced a key component. [`Location`] is the
//! small, serialisable, `Arc`-free form of a span that records and `w4b why` keep.

use std::fmt;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use serde::Serialize;

/// What produced a source text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// A file in the workspace; `path` is workspace-relative with `/` separators.
    File { path: String },
    /// A documented `W4B_*` environment override; the text is `VAR=value`.
    Env { var: String },
    /// A `--set key=value` argument; the text is `key=value`.
    Cli { arg: String },
}

/// One source text (a definition file or a synthetic override text) shared by all spans into it.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceFile {
    origin: Origin,
    text: Arc<str>,
}

impl SourceFile {
    pub fn new(origin: Origin, text: impl Into<Arc<str>>) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            origin,
            text: text.into(),
        })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The name shown above a diagnostic's snippet: a workspace-relative path, `env VAR` or
    /// `--set key=value`.
    pub fn display_name(&self) -> String {
        match &self.origin {
            Origin::File { path } => path.clone(),
            Origin::Env { var } => format!("env {var}"),
            Origin::Cli { arg } => format!("--set {arg}"),
        }
    }

    /// The source for a miette diagnostic.
    pub fn named_source(&self) -> NamedSource<Arc<str>> {
        NamedSource::new(self.display_name(), Arc::clone(&self.text)).with_language("yaml")
    }

    /// The workspace-relative path, if this text is a file.
    pub fn path(&self) -> Option<&str> {
        match &self.origin {
            Origin::File { path } => Some(path),
            _ => None,
        }
    }
}

/// A byte range in a [`SourceFile`] with the 1-based line and column of its start.
#[derive(Clone, Debug)]
pub struct Span {
    pub file: Arc<SourceFile>,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// 1-based line of `start`.
    pub line: u32,
    /// 1-based column (in characters) of `start`.
    pub col: u32,
}

impl Span {
    /// An empty span at the very start of `file`, for values with no better position.
    pub fn start_of(file: &Arc<SourceFile>) -> Span {
        Span {
            file: Arc::clone(file),
            start: 0,
            end: 0,
            line: 1,
            col: 1,
        }
    }

    /// The span as miette wants it.
    pub fn source_span(&self) -> SourceSpan {
        SourceSpan::from(self.start..self.end.max(self.start))
    }

    /// The source for a miette diagnostic.
    pub fn named_source(&self) -> NamedSource<Arc<str>> {
        self.file.named_source()
    }

    /// The printable, serialisable form of this span.
    pub fn location(&self) -> Location {
        match self.file.origin() {
            Origin::File { path } => Location::File {
                file: path.clone(),
                line: self.line,
                col: self.col,
            },
            Origin::Env { var } => Location::Env { var: var.clone() },
            Origin::Cli { arg } => Location::Cli { arg: arg.clone() },
        }
    }

    /// The exact source text under the span.
    pub fn snippet(&self) -> &str {
        self.file.text().get(self.start..self.end).unwrap_or("")
    }
}

/// Two spans are equal when they cover the same bytes of the same text.
impl PartialEq for Span {
    fn eq(&self, other: &Span) -> bool {
        self.start == other.start && self.end == other.end && self.file == other.file
    }
}

impl Eq for Span {}

/// Where a value of a loaded target came from, in the form records and `w4b why` print.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "origin", rename_all = "lowercase")]
pub enum Location {
    /// `defs/layers/motd.yaml:3:5` (workspace-relative path, 1-based line and column).
    File { file: String, line: u32, col: u32 },
    /// `env W4B_EPOCH`.
    Env { var: String },
    /// `--set epoch=1700000000`.
    Cli { arg: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file, line, col } => write!(f, "{file}:{line}:{col}"),
            Location::Env { var } => write!(f, "env {var}"),
            Location::Cli { arg } => write!(f, "--set {arg}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_print_as_file_line_col_or_origin() {
        let file = SourceFile::new(
            Origin::File {
                path: "defs/layers/motd.yaml".into(),
            },
            "kind: layer\n",
        );
        let span = Span {
            file,
            start: 6,
            end: 11,
            line: 1,
            col: 7,
        };
        assert_eq!(span.snippet(), "layer");
        assert_eq!(span.location().to_string(), "defs/layers/motd.yaml:1:7");
        let env = SourceFile::new(
            Origin::Env {
                var: "W4B_EPOCH".into(),
            },
            "W4B_EPOCH=1",
        );
        assert_eq!(Span::start_of(&env).location().to_string(), "env W4B_EPOCH");
        let cli = SourceFile::new(
            Origin::Cli {
                arg: "epoch=1".into(),
            },
            "epoch=1",
        );
        assert_eq!(Span::start_of(&cli).location().to_string(), "--set epoch=1");
    }
}
