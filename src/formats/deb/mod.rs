//! Debian packages and their indices: the deb822 control syntax ([`control`]), versions
//! and their order ([`version`]), relationship fields ([`relation`]) and the `.deb`
//! archive ([`archive`]).
//!
//! Package sets (`w4b lock`, the package install step) read `Packages` and `Release`
//! indices, a base image's `/var/lib/dpkg/status` and the `.deb` files themselves; all of
//! it is untrusted input, so every parser here is bounded, panic-free and fuzzable
//! (errors, never panics), works on `&str`/`Read` without touching the filesystem, and
//! knows nothing about the rest of w4b. The rules are Debian Policy's (§5.1 control
//! files, §5.6.12 versions, §7 relationships) and deb(5); `dpkg` and `dpkg-deb` are the
//! oracles in the tests. See `docs/formats.md`, "Debian packages and indices".

#![forbid(unsafe_code)]

pub mod archive;
pub mod control;
pub mod relation;
pub mod version;

#[cfg(test)]
mod oracle;

pub use archive::{Compression, ControlFiles, DataReader, Deb, DebError, Md5Entry, CONTROL_LIMIT};
pub use control::{ControlError, Field, Paragraph, Paragraphs, Syntax};
pub use relation::{Alternatives, ArchQualifier, Constraint, Op, Relation, RelationError, Relations};
pub use version::{Version, VersionError};
