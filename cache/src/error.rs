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

    /// `digest` is the blob or index asked for; `chunk` names the chunk of that index
    /// that is missing, when it is one.
    #[error("{} `{digest}` is not in the store at `{}`{}", noun(chunk), root.display(), in_chunk(chunk))]
    #[diagnostic(code(w4b::cache::missing))]
    Missing {
        digest: Digest,
        root: PathBuf,
        chunk: Option<Box<ChunkAt>>,
    },

    /// `expected` is the blob or index asked for; for a bad chunk of an index, `chunk`
    /// names it and `actual` is what the chunk's bytes hash to.
    #[error("{}", corrupt_message(expected, actual, chunk))]
    #[diagnostic(
        code(w4b::cache::corrupt),
        help("the entry was moved to `{}` as evidence; it counts as a miss and the next publish repairs it", evidence.display())
    )]
    Corrupt {
        expected: Digest,
        actual: Digest,
        evidence: PathBuf,
        chunk: Option<Box<ChunkAt>>,
    },

    #[error("chunk index at byte {offset} (`{field}`) is malformed: {problem}")]
    #[diagnostic(
        code(w4b::cache::index_corrupt),
        help("the index does not follow `docs/cache-format.md`; it is a miss, and the step that produced it runs again")
    )]
    IndexFormat {
        offset: u64,
        field: &'static str,
        problem: String,
    },

    #[error("chunk index at byte {offset} (`{field}`) has value {value}, which this w4b does not know")]
    #[diagnostic(
        code(w4b::cache::index_unsupported),
        help("a newer w4b wrote this index; upgrade w4b, or use a cache directory of this version only")
    )]
    IndexUnsupported {
        offset: u64,
        field: &'static str,
        value: u64,
    },

    #[error("chunk index `{index}` names chunk {position} (`{chunk}`), which is not in the store")]
    #[diagnostic(
        code(w4b::cache::incomplete_index),
        help("store every chunk (`put_chunk`) before the index that lists it")
    )]
    IncompleteIndex {
        index: Digest,
        chunk: Digest,
        position: u64,
    },

    #[error("`{name}` is not a valid memo kind")]
    #[diagnostic(
        code(w4b::cache::memo_kind),
        help("a memo kind is 1 to 32 characters of `a-z`, `0-9` and `-`, such as `frame-zstd`")
    )]
    MemoKind { name: String },

    #[error("a memo's extra bytes are {len} bytes, more than the 64 KiB a memo may carry")]
    #[diagnostic(
        code(w4b::cache::memo_too_large),
        help("store large results as a blob and memoise its digest instead")
    )]
    MemoTooLarge { len: u64 },

    #[error("a chunk of {len} bytes is larger than a chunk index can describe (4 GiB)")]
    #[diagnostic(
        code(w4b::cache::chunk_too_large),
        help("cut the output into chunks of `CHUNK_SIZE` bytes, as `chunked_writer` does")
    )]
    ChunkTooLarge { len: u64 },

    #[error("a chunk of {len} bytes at byte {at} of a {output}-byte output, where the next chunk has {expected} bytes")]
    #[diagnostic(
        code(w4b::cache::chunk_length),
        help("a chunk sink takes every chunk of its output in order, each of `CHUNK_SIZE` bytes but the last; this is a bug in the writer that fed it, please report it")
    )]
    ChunkLength {
        at: u64,
        output: u64,
        len: u64,
        expected: u64,
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

    #[error("cannot collect garbage in `{}`: another GC, or a build of an older w4b, holds it", root.display())]
    #[diagnostic(
        code(w4b::cache::busy),
        help("builds of older w4b versions lock the store for their whole run, and one GC runs at a time; retry when they have finished")
    )]
    Busy { root: PathBuf },

    #[error("`{}` is not a w4b cache directory (no `v1/` inside)", root.display())]
    #[diagnostic(
        code(w4b::cache::not_a_store),
        help("check that the remote cache is mounted, or open it writable once to create the layout")
    )]
    NotAStore { root: PathBuf },

    /// A request to a remote object store failed (network, permissions, the server).
    #[error("could not {action} `{url}` in the remote cache")]
    #[diagnostic(
        code(w4b::cache::remote_io),
        help("check the endpoint, the bucket and the credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`); see the troubleshooting guide")
    )]
    RemoteIo {
        action: &'static str,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The object store accepted a second create-if-absent write of one key: it ignores
    /// conditional writes, and concurrent publishers could overwrite each other.
    #[error("the object store at `{url}` ignores conditional writes (`If-None-Match: *`): a second create-if-absent PUT of `{probe}` succeeded")]
    #[diagnostic(
        code(w4b::cache::s3_no_conditional_put),
        help("use it with `--remote-read-only`, or a store that supports conditional writes (AWS S3, MinIO, Cloudflare R2, Ceph RGW 18+, Garage 1.0+)")
    )]
    S3NoConditionalPut { url: String, probe: String },

    #[error("`{url}` is not a remote cache location: {problem}")]
    #[diagnostic(
        code(w4b::cache::remote_url),
        help("give a directory, or `s3://BUCKET/PREFIX` for an S3-compatible object store")
    )]
    RemoteUrl { url: String, problem: String },

    #[error("`{name}` is not a valid meta file name")]
    #[diagnostic(
        code(w4b::cache::meta_name),
        help("use a plain file name: no `/`, not empty, not `.` or `..`")
    )]
    MetaName { name: String },
}

/// The chunk of an index a [`CacheError::Missing`] or [`CacheError::Corrupt`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkAt {
    /// The chunk blob.
    pub chunk: Digest,
    /// Its entry number in the index.
    pub position: u64,
    /// The logical offset of its first byte in the output.
    pub offset: u64,
}

fn noun(chunk: &Option<Box<ChunkAt>>) -> &'static str {
    match chunk {
        Some(_) => "output",
        None => "blob",
    }
}

fn in_chunk(chunk: &Option<Box<ChunkAt>>) -> String {
    match chunk {
        Some(c) => format!(
            ": its chunk {} (`{}`, at byte {}) is gone",
            c.position, c.chunk, c.offset
        ),
        None => String::new(),
    }
}

fn corrupt_message(expected: &Digest, actual: &Digest, chunk: &Option<Box<ChunkAt>>) -> String {
    match chunk {
        Some(c) => format!(
            "output `{expected}` is corrupt: its chunk {} (`{}`, at byte {}) hashes to `{actual}`",
            c.position, c.chunk, c.offset
        ),
        None => format!("blob `{expected}` is corrupt: its bytes hash to `{actual}`"),
    }
}

/// Shorthand for mapping an `io::Error` to [`CacheError::Io`].
pub(crate) fn io_err(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.into();
    move |source| CacheError::Io { action, path, source }
}
