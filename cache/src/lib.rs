//! w4b-cache: the content-addressed store behind every w4b build.
//!
//! It knows blobs (immutable bytes named by their BLAKE3 [`Digest`]), chunk indexes (a
//! large output as a list of chunk blobs, [`ChunkIndex`]) and step [`Record`]s (a step
//! key, its preimage, its outputs). Nothing about images, YAML or terminals. The layout,
//! identical for the local cache and a shared remote directory:
//!
//! ```text
//! <root>/v1/blobs/<2 hex>/<64 hex digest>                          blob bytes (chunks too)
//! <root>/v1/indexes/<2 hex>/<64 hex keyed digest>                  chunk indexes
//! <root>/v1/packs/<64 hex table digest>                            pack markers (local)
//! <root>/v1/memo/<kind>/<2 hex>/<64 hex key>                      memos (local only)
//! <root>/v1/memo/<kind>/batches/<64 hex>                          batches of memos (local)
//! <root>/v1/records/<2 hex>/<64 hex key>/<64 hex outputs>.json     step records
//! <root>/v1/records/<2 hex>/<64 hex key>/<64 hex outputs>.<keyid>.json  signed ones
//! <root>/v1/meta/<name>      small mutable files (atomic replace), local use
//! <root>/v1/tmp/             temp files, same filesystem, for atomic publish
//! <root>/v1/corrupt/         quarantined entries, kept as evidence
//! <root>/v1/leases/<pid>.<nonce>  one per running build: start time and pins (local)
//! <root>/v1/usage/           usage counters: `base` and one delta per build (local)
//! <root>/v1/lock             shared around each pin; exclusive while local GC deletes
//! <root>/v1/gc.lock          exclusive while a local GC runs
//! ```
//!
//! - [`StoreDir`] is one directory: write to `tmp/`, fsync, publish by hard link
//!   (create-if-absent, also on NFS); never overwrite, never append; verify every read.
//! - [`Store`] layers a local directory over an optional remote one: read-through with
//!   verification, and publish that uploads blobs before the record. Remote records may
//!   carry a [`RecordSignature`]; the caller of a look-up picks the one it trusts.
//! - Chunked outputs: [`StoreDir::chunked_writer`] stores a stream as 1 MiB chunks and an
//!   index, [`StoreDir::adopt_chunked`] a finished sparse file, [`ChunkSink`] an output
//!   rendered chunk by chunk (a filesystem image, with no scratch file);
//!   [`OutputReader`] reads any output with verified random access.
//! - Packs ([`StoreDir::pack_writer`]): many small blobs as one chunked stream and a
//!   member table, read like any blob; a local storage form (remotes get plain blobs).
//! - [`Memo`]s remember sub-step results (the chunk a recipe renders to); a memo hits
//!   only while its value is present and keeps nothing alive.
//! - [`BlobRefs`] lets the application say which blobs (tree listings) reference others,
//!   so GC and upload follow them.
//! - `stats`, `verify` and `gc` on [`StoreDir`] back `w4b cache stats|verify|gc`. A
//!   build's [`Lease`] pins what it uses so a GC beside it keeps that, and the usage
//!   counters ([`Usage`]) tell cheaply when the store is over its size limit.
//!
//! `docs/cache-format.md` describes the format for other implementations.

#![forbid(unsafe_code)]

mod blob;
mod chunks;
mod digest;
mod dir;
mod error;
mod gc;
mod lease;
mod memo;
mod output;
mod pack;
mod record;
mod refs;
mod remote;
mod sink;
mod store;
mod usage;
mod verify;

pub use blob::{BlobWriter, VerifyingReader};
pub use chunks::{zero_digest, ChunkIndex, ChunkRef, FlatDigests, CHUNK_SIZE, INDEX_CONTEXT, INDEX_MAGIC};
pub use digest::{Digest, ParseDigestError};
pub use dir::{Quarantined, StoreDir};
pub use error::{CacheError, ChunkAt};
pub use gc::{GcPolicy, GcReport, GC_BATCH};
pub use lease::{Lease, LeaseScan, LEASE_MAGIC, LEASE_SLACK};
pub use memo::{Memo, MemoKind, MEMO_BATCH_MAGIC, MEMO_BATCH_MIN, MEMO_CONTEXT, MEMO_EXTRA_MAX, MEMO_MAGIC};
pub use output::{ChunkedWriter, OutputReader};
pub use pack::{PackWriter, PACK_MAGIC, PACK_MEMBER_MAX};
pub use record::{OutputRef, PreimageEntry, Producer, Record, RecordHead, RecordSignature, RECORD_SCHEMA};
pub use refs::{BlobRefs, NoRefs};
#[cfg(feature = "s3")]
pub use remote::s3::{parse_url as parse_s3_url, S3Bucket, S3Options, S3Remote, MULTIPART_OVER};
pub use remote::Remote;
pub use sink::ChunkSink;
pub use store::{Store, Uploaded};
pub use usage::{LastGc, Usage, UsageBase};
pub use verify::{Stats, VerifyReport};
