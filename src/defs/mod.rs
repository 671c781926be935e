//! The definitions layer: from a workspace of YAML files to typed, validated targets.
//!
//! ```text
//! Workspace::discover ─ w4b.yaml ─┐
//! Label ("//layers:motd") ────────┤
//!                                 ▼
//! Loader::load: read file → yaml::parse (spans, duplicate keys; kept between builds by
//!               parse_cache, keyed by file stamps) → interp (${VAR})
//!             → extends chain → merge (maps by key, `key+` appends) → w4b.yaml defaults
//!             → overrides (W4B_* env, then --set) → location table → de + target (typed,
//!               unknown keys and bad values diagnosed at their spans)
//! ```
//!
//! Nothing here reads the process environment or prints: the environment comes in as a map
//! and every failure is a [`DefsError`], a miette diagnostic with a stable
//! `w4b::defs::*` code, the offending span and a `help:` line. Only the typed values (never
//! comments, formatting, key order or spans) are meant to feed step keys.

pub mod beneath;
pub mod de;
pub mod error;
pub mod image_settings;
pub mod interp;
pub mod label;
pub mod loader;
pub mod merge;
pub mod overrides;
pub mod packages;
pub mod parse_cache;
pub mod span;
pub mod suggest;
pub mod target;
pub mod test_spec;
pub mod timezones;
pub mod workspace;
pub mod yaml;

#[cfg(test)]
mod corpus;

pub use de::Spanned;
pub use error::{DefsError, DefsErrorKind};
pub use label::{Label, LabelError, Pattern, StepLabel};
pub use loader::{LoadedTarget, Loader};
pub use overrides::{EnvOverride, ENV_OVERRIDES};
pub use packages::PackageSet;
pub use span::{Location, Origin, SourceFile, Span};
pub use target::{
    Arch, Base, BaseImage, BaseSource, Board, Bootstrap, BootstrapPriority, Compression, ConfigValue, Date,
    Download, FileEntry, FileOp, Format, HiveTarget, Image, ImageHive, Interfaces, Kind, Layer, Mode, Output,
    Owner, Partitions, Size, TableType, Target, TreePath, WsPath, MIN_BOOTSTRAP_BOOT_SIZE,
    MIN_BOOTSTRAP_ROOT_SIZE,
};
pub use workspace::{CacheConfig, S3Config, Workspace, WorkspaceConfig, WORKSPACE_FILE};
