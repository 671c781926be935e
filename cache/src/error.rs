//! The one error type of the store.
//!
//! Callers branch on `Missing` and `Corrupt` (both are a cache *miss*: rebuild and
//! republish), so those two carry only what a person needs to find the entry; everything
//! that is a real failure of the machine (permissions, full disk, lost mount) is `Io` with
//! the action and the path.

use std::io;
use std::path::PathBuf;

use crate::Digest;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CacheError {
    #[error("could not {action} `{}`", path.display())]
    #[diagnostic(code(w4b::cache::io))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("blob `{digest}` is not in the store at `{}`", root.display())]
    #[diagnostic(code(w4b::cache::missing))]
    Missing { digest: Digest, root: PathBuf },

    #[error("blob `{expected}` is corrupt: its bytes hash to `{actual}`")]
    #[diagnostic(
        code(w4b::cache::corrupt),
        help("the entry was moved to `{}` as evidence; it counts as a miss and the next publish repairs it", evidence.display())
    )]
    Corrupt {
        expected: Digest,
        actual: Digest,
        evidence: PathBuf,
    },

    #[error("the bytes offered as blob `{expected}` hash to `{actual}`; nothing was stored")]
    #[diagnostic(code(w4b::cache::mismatch))]
    Mismatch { expected: Digest, actual: Digest },

    #[error("record for key `{key}` names output `{output}` = `{digest}`, which is not in the store")]
    #[diagnostic(
        code(w4b::cache::incomplete_record),
        help("store every output blob before the record that names it")
    )]
    IncompleteRecord {
        key: Digest,
        output: String,
        digest: Digest,
    },

    #[error("the cache directory `{}` is read-only", root.display())]
    #[diagnostic(code(w4b::cache::read_only))]
    ReadOnly { root: PathBuf },

    #[error("cannot collect garbage in `{}`: a build is running", root.display())]
    #[diagnostic(
        code(w4b::cache::busy),
        help("builds hold a shared lock on the store; retry when they have finished")
    )]
    Busy { root: PathBuf },

    #[error("`{}` is not a w4b cache directory (no `v1/` inside)", root.display())]
    #[diagnostic(
        code(w4b::cache::not_a_store),
        help("check that the remote cache is mounted, or open it writable once to create the layout")
    )]
    NotAStore { root: PathBuf },

    #[error("`{name}` is not a valid meta file name")]
    #[diagnostic(
        code(w4b::cache::meta_name),
        help("use a plain file name: no `/`, not empty, not `.` or `..`")
    )]
    MetaName { name: String },
}

/// Shorthand for mapping an `io::Error` to [`CacheError::Io`].
pub(crate) fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.into();
    move |source| CacheError::Io { action, path, source }
}
