//! The store a build uses: a local directory, optionally backed by a shared remote one.
//!
//! Reads go local first and fall back to the remote, importing (and verifying) what they
//! fetch, so a corrupt or evicted local entry is repaired transparently. Publishing
//! writes the local record, then uploads the outputs with everything their listings
//! reference, children before parents, and the record last: a remote reader that finds a
//! record finds its blobs. Steps whose outputs derive from secrets must not be published
//! here; write them with `store.local().put_record` instead.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::SystemTime;

use crate::blob::VerifyingReader;
use crate::dir::StoreDir;
use crate::error::CacheError;
use crate::record::Record;
use crate::refs::BlobRefs;
use crate::Digest;

pub struct Store {
    local: StoreDir,
    remote: Option<StoreDir>,
}

/// What [`Store::publish`] sent to the remote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    pub blobs: u64,
    pub bytes: u64,
}

impl Store {
    /// `remote` is typically [`StoreDir::open_shared`] or, for untrusted builds,
    /// [`StoreDir::open_shared_read_only`].
    pub fn new(local: StoreDir, remote: Option<StoreDir>) -> Store {
        Store { local, remote }
    }

    pub fn local(&self) -> &StoreDir {
        &self.local
    }

    pub fn remote(&self) -> Option<&StoreDir> {
        self.remote.as_ref()
    }

    /// Records for `key`: the local ones, or else the remote ones, copied into the local
    /// directory (their blobs are fetched when first read).
    pub fn lookup(&self, key: &Digest) -> Result<Vec<Record>, CacheError> {
        let local = self.local.records(key)?;
        let Some(remote) = self.remote.as_ref().filter(|_| local.is_empty()) else {
            return Ok(local);
        };
        let found = remote.records(key)?;
        for r in &found {
            self.local.write_record(r)?;
        }
        Ok(found)
    }

    /// Marks a record used as a hit (GC evicts least recently used records first).
    pub fn touch_record(&self, r: &Record, now: SystemTime) -> Result<(), CacheError> {
        self.local.touch_record(r, now)
    }

    /// Imports blob `d` from the remote into the local directory, verified.
    pub fn fetch(&self, d: &Digest) -> Result<u64, CacheError> {
        let Some(remote) = &self.remote else {
            return Err(CacheError::Missing {
                digest: *d,
                root: self.local.root().to_owned(),
            });
        };
        let mut file = remote.open_raw(d)?;
        match self.local.import_blob(d, &mut file) {
            Err(CacheError::Mismatch { actual, .. }) => Err(remote.corrupt_blob(d, actual, &file)),
            other => other,
        }
    }

    /// Runs `f` on the local directory; on a miss, fetches `d` and runs it again.
    fn read_through<T>(&self, d: &Digest, f: impl Fn(&StoreDir) -> Result<T, CacheError>) -> Result<T, CacheError> {
        match f(&self.local) {
            Err(CacheError::Missing { .. } | CacheError::Corrupt { .. }) if self.remote.is_some() => {
                self.fetch(d)?;
                f(&self.local)
            }
            other => other,
        }
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        self.read_through(d, |dir| dir.read(d))
    }

    /// Streaming read; corruption surfaces at end of file (see [`VerifyingReader`]).
    pub fn reader(&self, d: &Digest) -> Result<VerifyingReader, CacheError> {
        self.read_through(d, |dir| dir.reader(d))
    }

    pub fn copy_to(&self, d: &Digest, dest: &Path) -> Result<(), CacheError> {
        self.read_through(d, |dir| dir.copy_to(d, dest))
    }

    /// Stores `r` locally, then (unless the remote is absent or read-only) uploads its
    /// outputs' closure and the record. Returns what was uploaded.
    pub fn publish(&self, r: &Record, refs: &dyn BlobRefs) -> Result<Uploaded, CacheError> {
        self.local.put_record(r)?;
        let mut up = Uploaded::default();
        let Some(remote) = self.remote.as_ref().filter(|d| !d.is_read_only()) else {
            return Ok(up);
        };
        let mut seen = BTreeSet::new();
        for out in r.outputs.values() {
            self.upload(remote, &out.digest, refs, &mut seen, &mut up)?;
        }
        remote.put_record(r)?;
        Ok(up)
    }

    /// Uploads `d` after its children. A blob already in the remote is taken to have its
    /// children there too (they were uploaded first); `verify` repairs it when not.
    fn upload(
        &self,
        remote: &StoreDir,
        d: &Digest,
        refs: &dyn BlobRefs,
        seen: &mut BTreeSet<Digest>,
        up: &mut Uploaded,
    ) -> Result<(), CacheError> {
        if !seen.insert(*d) || remote.contains(d) {
            return Ok(());
        }
        for child in self.local.children(d, refs)? {
            self.upload(remote, &child, refs, seen, up)?;
        }
        up.bytes += remote.import_blob(d, &mut self.local.reader(d)?)?;
        up.blobs += 1;
        Ok(())
    }
}
