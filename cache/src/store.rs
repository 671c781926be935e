//! The store a build uses: a local directory, optionally backed by a shared remote one.
//!
//! Reads go local first and fall back to the remote, importing (and verifying) what they
//! fetch, so a corrupt or evicted local entry is repaired transparently. Publishing
//! writes the local record, then uploads the outputs with everything their listings
//! reference, children before parents, and the record last: a remote reader that finds a
//! record finds its blobs. Steps whose outputs derive from secrets must not be published
//! here; write them with `store.local().put_record` instead.
//!
//! The remote is shared, so its records are not taken on faith: a look-up hands every
//! remote record for the key (signatures included) to the caller, which picks the one it
//! trusts, if any; only that one is copied into the local directory, without its
//! signature (the local directory is the builder's own). Blobs need no such choice: their
//! names are their BLAKE3, checked whenever one is imported.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::blob::VerifyingReader;
use crate::chunks::{ChunkIndex, FlatDigests};
use crate::dir::StoreDir;
use crate::error::CacheError;
use crate::output::OutputReader;
use crate::record::{Record, RecordHead};
use crate::refs::BlobRefs;
use crate::remote::Remote;
use crate::Digest;

pub struct Store {
    local: StoreDir,
    remote: Option<Arc<dyn Remote>>,
}

/// What [`Store::publish`] sent to the remote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// Blobs uploaded, chunks included.
    pub blobs: u64,
    /// Chunk indexes uploaded.
    pub indexes: u64,
    pub bytes: u64,
}

impl Store {
    /// `remote` is typically [`StoreDir::open_shared`] or, for untrusted builds,
    /// [`StoreDir::open_shared_read_only`].
    pub fn new(local: StoreDir, remote: Option<StoreDir>) -> Store {
        Store::with_remote(local, remote.map(|r| Arc::new(r) as Arc<dyn Remote>))
    }

    /// A store over any [`Remote`] (a shared directory, an object store).
    pub fn with_remote(local: StoreDir, remote: Option<Arc<dyn Remote>>) -> Store {
        Store { local, remote }
    }

    pub fn local(&self) -> &StoreDir {
        &self.local
    }

    pub fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.as_ref()
    }

    /// Records for `key`, as a cache hit needs them: the local ones or, when there are
    /// none, the remote one `select` picks from every valid remote record for the key
    /// (sorted by file name, signatures included), copied into the local directory without
    /// its signature (its blobs are fetched when first read). `select` is not called when
    /// the remote has no record for the key.
    pub fn lookup(
        &self,
        key: &Digest,
        select: impl FnOnce(Vec<Record>) -> Option<Record>,
    ) -> Result<Vec<RecordHead>, CacheError> {
        let local = self.local.heads(key)?;
        let Some(remote) = self.remote.as_ref().filter(|_| local.is_empty()) else {
            return Ok(local);
        };
        let found = remote.records(key)?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let Some(chosen) = select(found) else {
            return Ok(Vec::new());
        };
        let chosen = chosen.unsigned();
        self.local.write_record(&chosen)?;
        Ok(vec![RecordHead::from(&chosen)])
    }

    /// Marks a record used as a hit (GC evicts least recently used records first), here
    /// and in a writable remote, whose GC would otherwise see only upload times.
    pub fn touch_record(&self, r: &RecordHead, now: SystemTime) -> Result<(), CacheError> {
        if let Some(remote) = self.remote.as_ref().filter(|r| !r.is_read_only()) {
            // Best effort: the remote copies may be gone or owned by another CI user, and a
            // stale use time only makes GC evict that record a little early. The mtime a
            // lookup read belongs to the local copy, so the remote ones are stat'ed; every
            // signer's copy of these outputs counts as used.
            let _ = remote.touch_outputs(&r.key, &r.outputs_digest(), now);
        }
        self.local.touch(r, now)
    }

    /// Whether `d` (a blob or an index) is in the local directory or the remote.
    pub fn contains_output(&self, d: &Digest) -> Result<bool, CacheError> {
        if self.local.contains_output(d) {
            return Ok(true);
        }
        match &self.remote {
            Some(r) => Ok(r.has_many(&[*d])?.first().copied().unwrap_or(false)),
            None => Ok(false),
        }
    }

    /// Imports blob `d` from the remote into the local directory, verified.
    pub fn fetch(&self, d: &Digest) -> Result<u64, CacheError> {
        let Some(remote) = &self.remote else {
            return Err(CacheError::Missing {
                digest: *d,
                root: self.local.root().to_owned(),
                chunk: None,
            });
        };
        remote.fetch_blob(d, &self.local)
    }

    /// Chunk index `d`: the local one or, when it is absent or corrupt there, the
    /// remote's, checked against its name and copied locally (its chunks are fetched when
    /// first read). `None` when `d` is no index (it may be a blob).
    pub fn index(&self, d: &Digest) -> Result<Option<ChunkIndex>, CacheError> {
        match (self.local.index(d), &self.remote) {
            (Ok(None) | Err(CacheError::Corrupt { .. }), Some(remote)) => match remote.index(d)? {
                Some(idx) => {
                    self.local.write_index_bytes(d, &idx.encode())?;
                    Ok(Some(idx))
                }
                None => Ok(None),
            },
            (other, _) => other,
        }
    }

    /// Output `d` (a chunked output or a plain blob) for verified random access, read
    /// through to the remote chunk by chunk; see [`OutputReader`].
    pub fn open_output(&self, d: &Digest) -> Result<OutputReader, CacheError> {
        OutputReader::open(self.local.clone(), self.remote.clone(), d)
    }

    /// The flat digests of output `d`: those its index carries, or for a plain blob its
    /// BLAKE3, which is its name.
    pub fn flat_digests(&self, d: &Digest) -> Result<FlatDigests, CacheError> {
        match self.index(d)? {
            Some(idx) => Ok(idx.flat),
            None => Ok(FlatDigests {
                blake3: Some(*d.as_bytes()),
                sha256: None,
            }),
        }
    }

    /// Runs `f` on the local directory; on a miss, fetches `d` and runs it again.
    fn read_through<T>(
        &self,
        d: &Digest,
        f: impl Fn(&StoreDir) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
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

    /// Copies output `d` to `dest`, verified; a chunked output is assembled.
    pub fn copy_to(&self, d: &Digest, dest: &Path) -> Result<(), CacheError> {
        if self.index(d)?.is_some() {
            return crate::output::copy_output_to(self.open_output(d)?, dest);
        }
        self.read_through(d, |dir| dir.copy_to(d, dest))
    }

    /// Stores `r` locally (without a signature), then (unless the remote is absent or
    /// read-only) uploads its outputs' closure, the closure of the trees its preimage
    /// names, and the record as given: signed, it is filed under its signer.
    /// Returns what was uploaded.
    pub fn publish(&self, r: &Record, refs: &dyn BlobRefs) -> Result<Uploaded, CacheError> {
        self.local.put_record(&r.unsigned())?;
        let mut up = Uploaded::default();
        let Some(remote) = self.remote.as_deref().filter(|d| !d.is_read_only()) else {
            return Ok(up);
        };
        let mut seen = BTreeSet::new();
        let mut roots: Vec<Digest> = r.outputs.values().map(|o| o.digest).collect();
        // The trees `why` reads, so a reader of the record can explain it too. They only
        // explain: one that is not here (a damaged local store) is left out, not an error.
        roots.extend(
            r.roots()
                .into_iter()
                .skip(r.outputs.len())
                .filter(|d| self.local.contains(d)),
        );
        self.upload_all(remote, &roots, refs, &mut seen, &mut up)?;
        remote.put_record(r)?;
        Ok(up)
    }

    /// Uploads those of `ds` the remote lacks (asked in one batch), each after its
    /// children: a listing's blobs, an index's chunks (zero chunks are never stored). A
    /// blob or index already in the remote is taken to have its children there too (they
    /// were uploaded first); `verify` quarantines it when not, and the next publish
    /// uploads it again.
    fn upload_all(
        &self,
        remote: &dyn Remote,
        ds: &[Digest],
        refs: &dyn BlobRefs,
        seen: &mut BTreeSet<Digest>,
        up: &mut Uploaded,
    ) -> Result<(), CacheError> {
        let fresh: Vec<Digest> = ds.iter().copied().filter(|d| seen.insert(*d)).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let present = remote.has_many(&fresh)?;
        for (d, there) in fresh.iter().zip(present) {
            if there {
                continue;
            }
            let children = self.local.children(d, refs)?;
            self.upload_all(remote, &children, refs, seen, up)?;
            if let Some(bytes) = self.local.index_bytes(d)? {
                up.bytes += remote.put_index(d, &bytes)?;
                up.indexes += 1;
                continue;
            }
            let mut reader = self.local.reader(d)?;
            // Packed blobs go up as plain ones: remotes know no packs (`crate::pack`).
            let len = self.local.blob_len(d).unwrap_or(0);
            up.bytes += remote.put_blob(d, &mut reader, len)?;
            up.blobs += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
mod tests {
    use super::*;
    use crate::dir::tests::flip_byte;
    use crate::record::tests::record;
    use crate::refs::tests::{listing, ListRefs};
    use std::collections::BTreeMap;

    fn dirs() -> (tempfile::TempDir, StoreDir, StoreDir) {
        let t = tempfile::tempdir().unwrap();
        let local = StoreDir::open(&t.path().join("local")).unwrap();
        let remote = StoreDir::open_shared(&t.path().join("remote")).unwrap();
        (t, local, remote)
    }

    /// Every file under `root` with its bytes.
    fn snapshot(root: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_owned()];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(crate::dir::sorted_dir(&p).unwrap());
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
        out
    }

    #[test]
    fn publish_uploads_closure_then_reader_reads_through() {
        let (t, local, remote) = dirs();
        let writer = Store::new(local, Some(remote.clone()));
        let leaf = writer.local().put_bytes(b"leaf").unwrap();
        let tree = writer.local().put_bytes(&listing(&[leaf])).unwrap();
        let r = record("k", &[("tree", tree, 36)]);
        let up = writer.publish(&r, &ListRefs).unwrap();
        assert_eq!(
            up,
            Uploaded {
                blobs: 2,
                indexes: 0,
                bytes: 4 + 36
            }
        );
        assert_eq!(remote.records(&r.key).unwrap(), vec![r.clone()]);
        assert_eq!(writer.publish(&r, &ListRefs).unwrap(), Uploaded::default());

        let reader = Store::new(
            StoreDir::open(&t.path().join("other")).unwrap(),
            Some(remote.clone()),
        );
        assert!(!reader.local().contains(&leaf));
        assert_eq!(
            reader.lookup(&r.key, |v| v.into_iter().next()).unwrap(),
            vec![RecordHead::from(&r)]
        );
        assert_eq!(
            reader.local().records(&r.key).unwrap(),
            vec![r.clone()],
            "copied locally"
        );
        assert_eq!(reader.read(&leaf).unwrap(), b"leaf");
        assert!(reader.local().contains(&leaf));
        let used = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 31);
        reader.touch_record(&RecordHead::from(&r), used).unwrap();
        for dir in [reader.local(), &remote] {
            let m = std::fs::metadata(dir.record_path(&r)).unwrap();
            assert_eq!(m.modified().unwrap(), used);
        }

        // A corrupt local copy is repaired from the remote.
        crate::dir::tests::rot(reader.local(), &reader.local().blob_path(&leaf));
        assert_eq!(reader.read(&leaf).unwrap(), b"leaf");
        let dest = t.path().join("tree.bin");
        reader.copy_to(&tree, &dest).unwrap();
        assert_eq!(Digest::of(&std::fs::read(dest).unwrap()), tree);

        // A corrupt remote copy is a quarantined miss, never wrong bytes.
        let third = Store::new(
            StoreDir::open(&t.path().join("third")).unwrap(),
            Some(remote.clone()),
        );
        flip_byte(&remote.blob_path(&leaf));
        assert!(matches!(third.read(&leaf), Err(CacheError::Corrupt { .. })));
        assert!(!remote.contains(&leaf) && !third.local().contains(&leaf));
        // Verify drops the now-incomplete listing; republishing repairs the remote.
        assert_eq!(remote.verify(&ListRefs).unwrap().incomplete_listings, vec![tree]);
        assert_eq!(writer.publish(&r, &ListRefs).unwrap().blobs, 2);
        assert_eq!(third.read(&leaf).unwrap(), b"leaf");
    }

    #[test]
    fn a_lookup_copies_only_the_chosen_remote_record_unsigned() {
        let (t, local, remote) = dirs();
        let writer = Store::new(local, Some(remote.clone()));
        let sign = |r: &Record, keyid: &str| Record {
            signature: Some(crate::RecordSignature {
                keyid: keyid.into(),
                sig: "s".into(),
            }),
            ..r.clone()
        };
        let a = writer.local().put_bytes(b"genuine").unwrap();
        let b = writer.local().put_bytes(b"forged").unwrap();
        let genuine = record("k", &[("o", a, 7)]);
        let forged = record("k", &[("o", b, 6)]);
        writer.publish(&sign(&genuine, "aa"), &ListRefs).unwrap();
        writer.publish(&sign(&genuine, "bb"), &ListRefs).unwrap();
        writer.publish(&forged, &ListRefs).unwrap();
        assert_eq!(
            writer.local().records(&genuine.key).unwrap().len(),
            2,
            "locally unsigned, one per outputs"
        );
        assert!(writer
            .local()
            .records(&genuine.key)
            .unwrap()
            .iter()
            .all(|r| r.signature.is_none()));

        let reader = Store::new(
            StoreDir::open(&t.path().join("other")).unwrap(),
            Some(remote.clone()),
        );
        let mut seen = Vec::new();
        let heads = reader
            .lookup(&genuine.key, |v| {
                seen = v
                    .iter()
                    .map(|r| r.signature.as_ref().map(|s| s.keyid.clone()))
                    .collect();
                v.into_iter()
                    .find(|r| r.signature.as_ref().is_some_and(|s| s.keyid == "bb"))
            })
            .unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.contains(&None) && seen.contains(&Some("aa".into())));
        assert_eq!(heads, vec![RecordHead::from(&genuine)]);
        assert_eq!(
            reader.local().records(&genuine.key).unwrap(),
            vec![genuine.clone()]
        );

        // Nothing chosen: nothing copied, a miss.
        let third = Store::new(
            StoreDir::open(&t.path().join("third")).unwrap(),
            Some(remote.clone()),
        );
        assert!(third.lookup(&genuine.key, |_| None).unwrap().is_empty());
        assert!(third.local().records(&genuine.key).unwrap().is_empty());
        // No remote record: `select` is not asked.
        assert!(third
            .lookup(&Digest::of(b"none"), |_| panic!("asked"))
            .unwrap()
            .is_empty());

        // A hit marks every signer's copy of those outputs used in the remote.
        let used = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 31);
        reader.touch_record(&RecordHead::from(&genuine), used).unwrap();
        for keyid in ["aa", "bb"] {
            let m = std::fs::metadata(remote.record_path(&sign(&genuine, keyid))).unwrap();
            assert_eq!(m.modified().unwrap(), used);
        }
        let m = std::fs::metadata(remote.record_path(&forged)).unwrap();
        assert_ne!(m.modified().unwrap(), used);
    }

    #[test]
    fn publish_uploads_the_trees_a_preimage_names() {
        let (_t, local, remote) = dirs();
        let writer = Store::new(local, Some(remote.clone()));
        let leaf = writer.local().put_bytes(b"a source file").unwrap();
        let tree = writer.local().put_bytes(&listing(&[leaf])).unwrap();
        let out = writer.local().put_bytes(b"output").unwrap();
        let mut r = record("k", &[("out", out, 6)]);
        r.preimage[0].tree = Some(tree);
        assert_eq!(writer.publish(&r, &ListRefs).unwrap().blobs, 3);
        assert!([leaf, tree, out].iter().all(|d| remote.contains(d)));
        assert_eq!(remote.records(&r.key).unwrap(), vec![r.clone()]);

        // A tree the local store lost only explains: the record is still published.
        let (_t2, local, remote) = dirs();
        let writer = Store::new(local, Some(remote.clone()));
        writer.local().put_bytes(b"output").unwrap();
        r.preimage[0].tree = Some(Digest::of(b"gone"));
        assert_eq!(writer.publish(&r, &ListRefs).unwrap().blobs, 1);
        assert_eq!(remote.records(&r.key).unwrap(), vec![r]);
    }

    #[test]
    fn read_only_remote_is_read_never_written() {
        let (_t, local, remote) = dirs();
        let shared = remote.put_bytes(b"from ci").unwrap();
        let before = snapshot(remote.root());
        let store = Store::new(
            local,
            Some(StoreDir::open_shared_read_only(remote.root()).unwrap()),
        );
        assert_eq!(store.read(&shared).unwrap(), b"from ci");
        let mine = store.local().put_bytes(b"from a pull request").unwrap();
        let r = record("pr", &[("o", mine, 19)]);
        assert_eq!(store.publish(&r, &ListRefs).unwrap(), Uploaded::default());
        assert_eq!(store.local().records(&r.key).unwrap(), vec![r]);
        assert_eq!(snapshot(remote.root()), before);
    }

    #[test]
    fn publish_refuses_outputs_that_are_nowhere() {
        let (_t, local, remote) = dirs();
        let store = Store::new(local, Some(remote.clone()));
        let child = Digest::of(b"never stored");
        let tree = store.local().put_bytes(&listing(&[child])).unwrap();
        let r = record("k", &[("tree", tree, 36)]);
        assert!(matches!(
            store.publish(&r, &ListRefs),
            Err(CacheError::Missing { .. })
        ));
        assert!(
            remote.records(&r.key).unwrap().is_empty(),
            "no record without its blobs"
        );
        assert!(!remote.contains(&tree));
    }
}
