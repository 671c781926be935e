//! The remote cache behind a [`Store`](crate::Store): what a build asks of a cache
//! shared between machines, whatever holds it.
//!
//! Two kinds implement [`Remote`]: a shared directory ([`StoreDir`], NFS or a mounted
//! bucket) and, with the `s3` feature, an S3-compatible object store
//! (`S3Remote`). Both keep the layout of `docs/cache-format.md` and the same
//! rules: content entries are published create-if-absent and never overwritten, every
//! read is verified by the local store it lands in, a corrupt entry is quarantined (moved
//! to `v1/corrupt/`) by a writable client and only reported by a read-only one, and a
//! read-only remote is never written.
//!
//! The trait is shaped by the object store: questions are batched
//! ([`Remote::has_many`]: one call for every chunk of an index, which S3 answers with
//! concurrent HEADs), blobs move as streams into and out of the local directory, and
//! `gc`/`verify`/`stats` are the remote's own, because a directory walks its tree and a
//! bucket lists its keys.

use std::io::Read;
use std::time::SystemTime;

use crate::chunks::ChunkIndex;
use crate::dir::{Quarantined, StoreDir};
use crate::error::CacheError;
use crate::gc::{GcPolicy, GcReport};
use crate::record::Record;
use crate::refs::BlobRefs;
use crate::verify::{Stats, VerifyReport};
use crate::Digest;

#[cfg(feature = "s3")]
pub mod s3;

/// A cache shared between builders. Every method may block on the network.
pub trait Remote: Send + Sync {
    /// Where it is, for people: a directory path or an `s3://bucket/prefix` URL.
    fn describe(&self) -> String;

    /// Whether this process must never write to it (`--remote-read-only`).
    fn is_read_only(&self) -> bool;

    /// For each digest, whether the remote holds a blob or a chunk index of that name
    /// (presence only: the bytes are checked when read).
    fn has_many(&self, digests: &[Digest]) -> Result<Vec<bool>, CacheError>;

    /// Imports blob `d` into `local`, verified while copying. A remote copy whose bytes
    /// do not match is quarantined there (when writable) and the result is
    /// [`CacheError::Corrupt`]; an absent one is [`CacheError::Missing`].
    fn fetch_blob(&self, d: &Digest, local: &StoreDir) -> Result<u64, CacheError>;

    /// Uploads blob `d` of `len` bytes read from `from` (the local, verified copy),
    /// create-if-absent. Returns the bytes sent (0 when it was already there).
    fn put_blob(&self, d: &Digest, from: &mut dyn Read, len: u64) -> Result<u64, CacheError>;

    /// Chunk index `d`, checked against its keyed name and decoded; `None` when absent.
    /// A corrupt one is quarantined (when writable) and is [`CacheError::Corrupt`].
    fn index(&self, d: &Digest) -> Result<Option<ChunkIndex>, CacheError>;

    /// Publishes index bytes under `name`, create-if-absent; the caller uploaded every
    /// chunk first. Returns the bytes sent.
    fn put_index(&self, name: &Digest, bytes: &[u8]) -> Result<u64, CacheError>;

    /// Every valid record for `key`, signatures included, sorted by file name.
    fn records(&self, key: &Digest) -> Result<Vec<Record>, CacheError>;

    /// Every key that has records, sorted.
    fn record_keys(&self) -> Result<Vec<Digest>, CacheError>;

    /// Publishes `r` (filed under its signer when signed), create-if-absent.
    fn put_record(&self, r: &Record) -> Result<(), CacheError>;

    /// Marks every copy of the records for `key` naming `outputs` as used at `now`, so
    /// the remote's GC keeps them (best effort; read-only remotes do nothing).
    fn touch_outputs(&self, key: &Digest, outputs: &Digest, now: SystemTime) -> Result<(), CacheError>;

    /// The entries this client quarantined since the last call, oldest first.
    fn take_quarantined(&self) -> Vec<Quarantined>;

    /// Collects garbage (age-based with a grace period: builds on other machines hold
    /// no lock here).
    fn gc(&self, policy: &GcPolicy, refs: &dyn BlobRefs) -> Result<GcReport, CacheError>;

    /// Re-hashes every entry and checks every record and index, quarantining what is
    /// damaged or incomplete so that the next publish repairs it.
    fn verify(&self, refs: &dyn BlobRefs) -> Result<VerifyReport, CacheError>;

    fn stats(&self) -> Result<Stats, CacheError>;
}

/// The shared directory, as before the trait existed: `link(2)` publication, `stat` for
/// presence, mtimes for use.
impl Remote for StoreDir {
    fn describe(&self) -> String {
        self.root().display().to_string()
    }

    fn is_read_only(&self) -> bool {
        StoreDir::is_read_only(self)
    }

    fn has_many(&self, digests: &[Digest]) -> Result<Vec<bool>, CacheError> {
        Ok(digests.iter().map(|d| self.contains_output(d)).collect())
    }

    fn fetch_blob(&self, d: &Digest, local: &StoreDir) -> Result<u64, CacheError> {
        let mut file = self.open_raw(d)?;
        match local.import_blob(d, &mut file) {
            Err(CacheError::Mismatch { actual, .. }) => Err(self.corrupt_blob(d, actual, &file)),
            other => other,
        }
    }

    fn put_blob(&self, d: &Digest, from: &mut dyn Read, _len: u64) -> Result<u64, CacheError> {
        self.import_blob(d, from)
    }

    fn index(&self, d: &Digest) -> Result<Option<ChunkIndex>, CacheError> {
        StoreDir::index(self, d)
    }

    fn put_index(&self, name: &Digest, bytes: &[u8]) -> Result<u64, CacheError> {
        self.write_index_bytes(name, bytes)
    }

    fn records(&self, key: &Digest) -> Result<Vec<Record>, CacheError> {
        StoreDir::records(self, key)
    }

    fn record_keys(&self) -> Result<Vec<Digest>, CacheError> {
        StoreDir::record_keys(self)
    }

    fn put_record(&self, r: &Record) -> Result<(), CacheError> {
        StoreDir::put_record(self, r)
    }

    fn touch_outputs(&self, key: &Digest, outputs: &Digest, now: SystemTime) -> Result<(), CacheError> {
        StoreDir::touch_outputs(self, key, outputs, now)
    }

    fn take_quarantined(&self) -> Vec<Quarantined> {
        StoreDir::take_quarantined(self)
    }

    fn gc(&self, policy: &GcPolicy, refs: &dyn BlobRefs) -> Result<GcReport, CacheError> {
        StoreDir::gc(self, policy, refs)
    }

    fn verify(&self, refs: &dyn BlobRefs) -> Result<VerifyReport, CacheError> {
        StoreDir::verify(self, refs)
    }

    fn stats(&self) -> Result<Stats, CacheError> {
        StoreDir::stats(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::tests::flip_byte;

    #[test]
    fn a_directory_answers_presence_in_one_batch() {
        let t = tempfile::tempdir().unwrap();
        let dir = StoreDir::open_shared(t.path()).unwrap();
        let blob = dir.put_bytes(b"chunk").unwrap();
        let idx = dir
            .put_index(&ChunkIndex::fixed(vec![crate::ChunkRef { digest: blob, len: 5 }]))
            .unwrap();
        let absent = Digest::of(b"absent");
        let remote: &dyn Remote = &dir;
        assert_eq!(
            remote.has_many(&[blob, absent, idx]).unwrap(),
            [true, false, true]
        );
        assert!(remote.has_many(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_directory_quarantines_a_blob_that_fails_its_fetch() {
        let t = tempfile::tempdir().unwrap();
        let remote = StoreDir::open_shared(&t.path().join("remote")).unwrap();
        let local = StoreDir::open(&t.path().join("local")).unwrap();
        let d = remote.put_bytes(b"shared bytes").unwrap();
        assert_eq!(Remote::fetch_blob(&remote, &d, &local).unwrap(), 12);
        let other = StoreDir::open(&t.path().join("other")).unwrap();
        flip_byte(&remote.blob_path(&d));
        assert!(matches!(
            Remote::fetch_blob(&remote, &d, &other),
            Err(CacheError::Corrupt { .. })
        ));
        assert!(!other.contains(&d), "nothing wrong reaches the local store");
        assert_eq!(Remote::take_quarantined(&remote).len(), 1);
        assert!(matches!(
            Remote::fetch_blob(&remote, &d, &other),
            Err(CacheError::Missing { .. })
        ));
    }
}
