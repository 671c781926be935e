//! What the engine needs from a store, as a trait, so tests can inject faults and the
//! application decides how local and remote directories combine.

use w4b_cache::{Digest, Record};

use crate::step::Outputs;

/// Why a key that has been seen before still had to run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum MissReason {
    /// No record for the key, locally or remotely (never built, or evicted by GC).
    NoRecord,
    /// A record exists but an output blob is gone (evicted).
    OutputMissing { output: String, digest: Digest },
    /// An output blob failed verification; it was quarantined.
    OutputCorrupt { output: String, digest: Digest },
    /// Re-run because a downstream step found this step's output missing or corrupt.
    Repair { digest: Digest },
    /// The user asked for a rebuild without caches.
    Forced,
    /// The remote cache had records for the key, but none the builder may use (unsigned,
    /// signed by a key it does not trust, a bad signature, or trusted signers disagreeing).
    RemoteUntrusted { why: String },
}

impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissReason::NoRecord => {
                f.write_str("no record in the local or remote cache (never built, or evicted)")
            }
            MissReason::OutputMissing { output, digest } => {
                write!(
                    f,
                    "output `{output}` ({}) was missing from the cache",
                    digest.short(12)
                )
            }
            MissReason::OutputCorrupt { output, digest } => {
                write!(
                    f,
                    "output `{output}` ({}) was corrupt and has been quarantined",
                    digest.short(12)
                )
            }
            MissReason::Repair { digest } => {
                write!(
                    f,
                    "a downstream step found output {} missing or corrupt",
                    digest.short(12)
                )
            }
            MissReason::Forced => f.write_str("caches were bypassed on request"),
            MissReason::RemoteUntrusted { why } => {
                write!(f, "the remote cache's record was not used: {why}")
            }
        }
    }
}

pub enum Lookup {
    /// The outputs of a record for the key, all present. Only the outputs: decoding the
    /// record's preimage is left to `why`, which reads [`Cache::records`].
    Hit(Outputs),
    Miss(MissReason),
}

pub type CacheResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The store as the engine sees it.
pub trait Cache: Sync {
    /// A record for `key` whose outputs are all present (existence, not content: content is
    /// verified whenever a blob is read). `step` names the step being looked up, for the
    /// store's warnings.
    fn lookup(&self, step: &str, key: &Digest) -> CacheResult<Lookup>;
    /// Stores a record after its step succeeded (and, for shareable steps, publishes it
    /// to a remote cache).
    fn publish(&self, record: &Record, shareable: bool) -> CacheResult<()>;
    /// Every record stored for `key` (several only when a step was non-deterministic).
    fn records(&self, key: &Digest) -> CacheResult<Vec<Record>>;
    fn put(&self, bytes: &[u8]) -> CacheResult<Digest>;
    /// Verified read; a missing or corrupt blob is an error the step maps to
    /// [`crate::StepError::InputUnavailable`].
    fn get(&self, digest: &Digest) -> CacheResult<Vec<u8>>;
    fn read_meta(&self, name: &str) -> CacheResult<Option<Vec<u8>>>;
    fn write_meta(&self, name: &str, bytes: &[u8]) -> CacheResult<()>;
    /// Downcast hook so steps can reach the concrete store for streaming access.
    fn as_any(&self) -> &dyn std::any::Any;
}
