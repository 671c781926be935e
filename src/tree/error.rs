//! The one error type of the tree module.
//!
//! Every failure a tree operation can meet — a missing or corrupt blob, an unsafe path in
//! a layer, a host file w4b cannot represent — is a variant with a stable diagnostic code,
//! so the application can map it to an exit code and a `help:` line in one place.

use std::path::PathBuf;

use w4b_cache::Digest;

use crate::formats::tar::TarError;

/// Why a tree operation failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TreeError {
    #[error("blob `{digest}` is not in the store")]
    #[diagnostic(
        code(w4b::tree::blob_missing),
        help("the cache lost an entry this tree needs; run `w4b cache verify`")
    )]
    BlobMissing { digest: Digest },

    #[error("blob `{digest}` does not match its digest")]
    #[diagnostic(
        code(w4b::tree::blob_corrupt),
        help("the cache entry is damaged; run `w4b cache verify` to repair it")
    )]
    BlobCorrupt { digest: Digest },

    /// A [`Blobs`](super::Blobs) implementation's own failure (the cache store's
    /// error, wrapped by its adapter).
    #[error("the blob store failed")]
    #[diagnostic(code(w4b::tree::store))]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),

    #[error("{what} `{}`", path.display())]
    #[diagnostic(code(w4b::tree::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("blob `{digest}` is not a valid {what}: {reason} (at byte {offset})")]
    #[diagnostic(
        code(w4b::tree::corrupt),
        help("the blob is damaged or was not written by w4b; run `w4b cache verify`")
    )]
    Corrupt {
        digest: Digest,
        what: &'static str,
        offset: usize,
        reason: String,
    },

    #[error("blob `{digest}` is a {what} of format version {version}, which this w4b does not support")]
    #[diagnostic(
        code(w4b::tree::unsupported_version),
        help("the cache was written by a newer w4b; upgrade w4b or use another cache directory")
    )]
    UnsupportedVersion {
        digest: Digest,
        what: &'static str,
        version: u8,
    },

    #[error("concatenating an appended file failed: {what}")]
    #[diagnostic(code(w4b::tree::spool))]
    Spool {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid path `{path}`: {reason}")]
    #[diagnostic(
        code(w4b::tree::invalid_path),
        help("tree paths are absolute and `/`-separated, without `.`, `..`, empty components or NUL, e.g. `/etc/hostname`")
    )]
    InvalidPath { path: String, reason: &'static str },

    #[error("`{path}` is owned by id {id}, outside the ids the user namespace maps (0 to {max})")]
    #[diagnostic(
        code(w4b::tree::unmapped_id),
        help("an unprivileged install maps only 0 to {max}; run w4b as root to install into a tree with higher uids or gids")
    )]
    UnmappedId { path: String, id: u32, max: u32 },

    #[error("invalid entry at `{path}`: {reason}")]
    #[diagnostic(code(w4b::tree::invalid_entry))]
    InvalidEntry { path: String, reason: String },

    #[error("`{path}` would be written through the symlink `{symlink}` (→ `{target}`)")]
    #[diagnostic(
        code(w4b::tree::through_symlink),
        help("w4b never follows symlinks in layers; write to the link's target path directly, e.g. under `{target}`")
    )]
    ThroughSymlink {
        path: String,
        symlink: String,
        target: String,
    },

    #[error("`{path}` needs `{parent}` to be a directory, but it is a {kind}")]
    #[diagnostic(
        code(w4b::tree::not_a_directory),
        help("remove or replace `{parent}` in an earlier operation first")
    )]
    NotADirectory {
        path: String,
        parent: String,
        kind: &'static str,
    },

    #[error("cannot {op} the root directory `/`")]
    #[diagnostic(code(w4b::tree::root))]
    Root { op: &'static str },

    #[error("cannot append to `{path}`: it is a {kind}, not a regular file")]
    #[diagnostic(
        code(w4b::tree::append_not_file),
        help("appends only extend regular files; put a whole new file instead")
    )]
    AppendNotFile { path: String, kind: &'static str },

    #[error("`{path}` is given twice")]
    #[diagnostic(code(w4b::tree::duplicate_path))]
    DuplicatePath { path: String },

    #[error("hard link `{path}` points to `{target}`, which {reason}")]
    #[diagnostic(
        code(w4b::tree::bad_hard_link),
        help("a hard link must name a regular file that comes before it in sorted order")
    )]
    BadHardLink {
        path: String,
        target: String,
        reason: &'static str,
    },

    #[error("`{}` is a {kind}, which cannot be imported into a tree", path.display())]
    #[diagnostic(
        code(w4b::tree::unsupported_host_file),
        help("only regular files, directories and symlinks can be imported; remove it from the source directory")
    )]
    UnsupportedHostFile { path: PathBuf, kind: &'static str },

    #[error("the name of `{}` is not valid UTF-8", path.display())]
    #[diagnostic(code(w4b::tree::non_utf8), help("rename the file; tree paths are UTF-8"))]
    NonUtf8 { path: PathBuf },

    #[error("tar member `{path}`: {reason}")]
    #[diagnostic(code(w4b::tree::tar_member))]
    TarMember { path: String, reason: String },

    #[error("reading the tar archive failed")]
    #[diagnostic(code(w4b::tree::tar_read))]
    TarRead(#[source] std::io::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Tar(#[from] TarError),

    #[error("writing the compressed archive failed")]
    #[diagnostic(code(w4b::tree::compress))]
    Compress(#[source] std::io::Error),
}
