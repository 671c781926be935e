//! Garbage collection: records are the roots, blobs live while a kept record reaches them
//! (through its outputs, or a tree its preimage names for `why`). A chunk index is an
//! output like a blob and keeps its chunks alive; an evicted one frees the chunks no kept
//! index shares. Memos keep nothing alive: they are deleted once their value is gone.
//!
//! GC must never delete what a running build may still need. In a local directory builds
//! hold a shared [`Lease`](crate::Lease) and GC takes the exclusive lock without waiting,
//! failing with [`CacheError::Busy`]. A shared directory has no reliable locks, so there
//! nothing younger than the grace period (by mtime) is deleted: a build's uploads are
//! fresh until it publishes the record that makes them reachable. The clock is the
//! caller's `now`; file times come from the filesystem.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, TryLockError};
use std::io::ErrorKind;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::dir::StoreDir;
use crate::error::{io_err, CacheError};
use crate::record::Parsed;
use crate::refs::BlobRefs;
use crate::Digest;

#[derive(Clone, Debug)]
pub struct GcPolicy {
    /// Evict least recently used records until the store holds at most this much.
    pub max_bytes: Option<u64>,
    /// Delete records not used (see [`StoreDir::touch_record`]) for this long.
    pub max_age: Option<Duration>,
    /// Nothing younger than this is ever deleted.
    pub grace: Duration,
    pub now: SystemTime,
}

impl GcPolicy {
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

    /// Only unreachable blobs and temp files older than a day are removed.
    pub fn new(now: SystemTime) -> GcPolicy {
        GcPolicy {
            max_bytes: None,
            max_age: None,
            grace: GcPolicy::DEFAULT_GRACE,
            now,
        }
    }

    fn age(&self, mtime: SystemTime) -> Duration {
        self.now.duration_since(mtime).unwrap_or(Duration::ZERO)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub records_removed: u64,
    pub records_kept: u64,
    /// Blobs, chunks included.
    pub blobs_removed: u64,
    pub blobs_kept: u64,
    pub indexes_removed: u64,
    pub indexes_kept: u64,
    /// Memos whose value is gone (they never keep one alive).
    pub memos_removed: u64,
    pub memos_kept: u64,
    pub bytes_freed: u64,
    pub bytes_kept: u64,
    pub tmp_removed: u64,
}

/// Just enough of any record schema to find its roots, so GC keeps the outputs of
/// records written by a newer w4b sharing the directory.
#[derive(Deserialize)]
struct RootsProbe {
    outputs: BTreeMap<String, OutputProbe>,
}

#[derive(Deserialize)]
struct OutputProbe {
    digest: Digest,
}

/// The trees a record of another schema names in its preimage, if it has that shape;
/// probed separately so a preimage of another shape never costs the outputs their root.
#[derive(Deserialize)]
struct TreesProbe {
    preimage: Vec<TreeProbe>,
}

#[derive(Deserialize)]
struct TreeProbe {
    #[serde(default)]
    tree: Option<Digest>,
}

/// The roots of a record of another schema: its outputs, then the trees of its preimage.
pub(crate) fn foreign_roots(bytes: &[u8]) -> Vec<Digest> {
    let mut out: Vec<Digest> = serde_json::from_slice::<RootsProbe>(bytes)
        .map(|p| p.outputs.values().map(|o| o.digest).collect())
        .unwrap_or_default();
    if let Ok(p) = serde_json::from_slice::<TreesProbe>(bytes) {
        out.extend(p.preimage.iter().filter_map(|e| e.tree));
    }
    out
}

struct Root {
    path: std::path::PathBuf,
    size: u64,
    mtime: SystemTime,
    outputs: Vec<Digest>,
}

impl StoreDir {
    pub fn gc(&self, policy: &GcPolicy, refs: &dyn BlobRefs) -> Result<GcReport, CacheError> {
        self.writable()?;
        let _lock = match self.is_shared() {
            true => None,
            false => {
                let lock = self.lock_file()?;
                match lock.try_lock() {
                    Ok(()) => Some(lock),
                    Err(TryLockError::WouldBlock) => {
                        return Err(CacheError::Busy {
                            root: self.root().to_owned(),
                        })
                    }
                    Err(TryLockError::Error(e)) => return Err(io_err("lock", self.sub("lock"))(e)),
                }
            }
        };
        let mut rep = GcReport::default();
        let old = |mtime| policy.age(mtime) > policy.grace;

        let mut roots = Vec::new();
        for e in self.record_entries()? {
            let outputs = match self.load_record(&e.digest, &e.path)? {
                Some((Parsed::Valid(r), _)) => r.roots(),
                Some((Parsed::Foreign, bytes)) => foreign_roots(&bytes),
                Some((Parsed::Invalid, _)) | None => continue,
            };
            roots.push(Root {
                path: e.path,
                size: e.size,
                mtime: e.mtime,
                outputs,
            });
        }
        // Least recently used first; the path breaks ties so runs are reproducible.
        roots.sort_by(|a, b| (a.mtime, &a.path).cmp(&(b.mtime, &b.path)));
        let mut evict = vec![false; roots.len()];
        if let Some(max_age) = policy.max_age {
            for (i, r) in roots.iter().enumerate() {
                evict[i] = old(r.mtime) && policy.age(r.mtime) > max_age;
            }
        }

        // Indexes are sized, kept and removed like blobs; their digests never collide.
        let indexes = self.index_entries()?;
        let blobs = self.blob_entries()?;
        let mut memo = BTreeMap::new();
        let mut closures = Vec::with_capacity(roots.len());
        for r in &roots {
            closures.push(self.closure(r.outputs.iter().copied(), refs, &mut memo)?);
        }
        if let Some(max_bytes) = policy.max_bytes {
            let size: BTreeMap<Digest, (u64, bool)> = blobs
                .iter()
                .chain(&indexes)
                .map(|b| (b.digest, (b.size, old(b.mtime))))
                .collect();
            let mut count = BTreeMap::<Digest, u64>::new();
            for (c, _) in closures.iter().zip(&evict).filter(|(_, e)| !**e) {
                for d in c {
                    *count.entry(*d).or_default() += 1;
                }
            }
            // What would remain: kept records, blobs they reach, and young blobs.
            let mut total: u64 = roots
                .iter()
                .zip(&evict)
                .filter(|(_, e)| !**e)
                .map(|(r, _)| r.size)
                .sum();
            total += blobs
                .iter()
                .chain(&indexes)
                .filter(|b| count.contains_key(&b.digest) || !old(b.mtime))
                .map(|b| b.size)
                .sum::<u64>();
            for i in 0..roots.len() {
                if total <= max_bytes {
                    break;
                }
                if evict[i] || !old(roots[i].mtime) {
                    continue;
                }
                evict[i] = true;
                total = total.saturating_sub(roots[i].size);
                for d in &closures[i] {
                    let n = count.entry(*d).or_default();
                    *n = n.saturating_sub(1);
                    if let (0, Some((bytes, true))) = (*n, size.get(d)) {
                        total = total.saturating_sub(*bytes);
                    }
                }
            }
        }

        let mut reachable = BTreeSet::new();
        for (i, r) in roots.iter().enumerate() {
            if !evict[i] {
                rep.records_kept += 1;
                reachable.extend(closures[i].iter().copied());
                continue;
            }
            if remove(&r.path)? {
                rep.records_removed += 1;
            }
            // Keep the index from growing with empty key directories; fails harmlessly
            // if another record is still there (publish retries if we win a race).
            if let Some(key_dir) = r.path.parent() {
                let _ = fs::remove_dir(key_dir);
            }
        }
        for (b, is_index) in blobs
            .iter()
            .map(|b| (b, false))
            .chain(indexes.iter().map(|b| (b, true)))
        {
            let (kept, removed) = match is_index {
                true => (&mut rep.indexes_kept, &mut rep.indexes_removed),
                false => (&mut rep.blobs_kept, &mut rep.blobs_removed),
            };
            if reachable.contains(&b.digest) || !old(b.mtime) {
                *kept += 1;
                rep.bytes_kept += b.size;
            } else if remove(&b.path)? {
                *removed += 1;
                rep.bytes_freed += b.size;
            }
        }
        // After the blobs: a memo whose value was just removed goes too.
        let (kept, removed) = self.prune_memos(None)?;
        rep.memos_kept = kept.len() as u64;
        rep.memos_removed = removed.len() as u64;
        for path in crate::dir::sorted_dir(&self.sub("tmp"))? {
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            if m.is_file() && old(m.modified().unwrap_or(SystemTime::UNIX_EPOCH)) && remove(&path)? {
                rep.tmp_removed += 1;
            }
        }
        Ok(rep)
    }
}

/// Removes a file; `false` if someone else already did.
fn remove(path: &std::path::Path) -> Result<bool, CacheError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
mod tests {
    use super::*;
    use crate::dir::tests::store;
    use crate::record::tests::record;
    use crate::refs::tests::{listing, ListRefs};
    use crate::NoRefs;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn unreachable_blobs_go_reachable_ones_stay() {
        let (_t, dir) = store();
        let leaf = dir.put_bytes(b"leaf").unwrap();
        let inner = dir.put_bytes(&listing(&[leaf])).unwrap();
        let top = dir.put_bytes(&listing(&[inner])).unwrap();
        let orphan = dir.put_bytes(b"orphan").unwrap();
        dir.put_record(&record("k", &[("tree", top, 0)])).unwrap();
        let now = SystemTime::now();

        let young = dir.gc(&GcPolicy::new(now), &ListRefs).unwrap();
        assert_eq!(
            (young.blobs_removed, young.blobs_kept),
            (0, 4),
            "grace protects young blobs"
        );

        let later = GcPolicy::new(now + 2 * DAY);
        let rep = dir.gc(&later, &ListRefs).unwrap();
        assert_eq!((rep.blobs_removed, rep.blobs_kept, rep.records_kept), (1, 3, 1));
        assert!(!dir.contains(&orphan));
        assert!([leaf, inner, top].iter().all(|d| dir.contains(d)));

        // Without the hook the listing's children are unreachable.
        assert_eq!(dir.gc(&later, &NoRefs).unwrap().blobs_removed, 2);
        assert!(dir.contains(&top) && !dir.contains(&leaf));
    }

    #[test]
    fn a_tree_named_by_a_preimage_lives_as_long_as_its_record() {
        let (_t, dir) = store();
        let leaf = dir.put_bytes(b"old file").unwrap();
        let tree = dir.put_bytes(&listing(&[leaf])).unwrap();
        let out = dir.put_bytes(b"output").unwrap();
        let mut r = record("k", &[("out", out, 6)]);
        r.preimage[0].tree = Some(tree);
        dir.put_record(&r).unwrap();
        let later = GcPolicy::new(SystemTime::now() + 2 * DAY);
        let rep = dir.gc(&later, &ListRefs).unwrap();
        assert_eq!((rep.blobs_removed, rep.blobs_kept), (0, 3));
        assert!([leaf, tree, out].iter().all(|d| dir.contains(d)));

        // A record of another schema keeps its preimage's trees too.
        let text = String::from_utf8(r.to_json())
            .unwrap()
            .replace("w4b.record/1", "w4b.record/9");
        let path = dir.record_path(&r);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, text).unwrap();
        assert_eq!(dir.gc(&later, &ListRefs).unwrap().blobs_removed, 0);
        assert!(dir.contains(&leaf));

        // Once the record goes, so does its tree.
        let evict = GcPolicy {
            max_age: Some(DAY),
            ..GcPolicy::new(SystemTime::now() + 3 * DAY)
        };
        let rep = dir.gc(&evict, &ListRefs).unwrap();
        assert_eq!((rep.records_removed, rep.blobs_removed), (1, 3));
    }

    #[test]
    fn a_lease_blocks_local_gc_but_not_shared_gc() {
        let (_t, dir) = store();
        let policy = GcPolicy::new(SystemTime::now());
        let lease = dir.lease().unwrap();
        assert!(matches!(dir.gc(&policy, &NoRefs), Err(CacheError::Busy { .. })));
        let second = dir.lease().unwrap();
        drop((lease, second));
        dir.gc(&policy, &NoRefs).unwrap();

        let shared = StoreDir::open_shared(dir.root()).unwrap();
        let _lease = shared.lease().unwrap();
        let _local_lease = dir.lease().unwrap();
        let orphan = shared.put_bytes(b"fresh upload").unwrap();
        shared.gc(&policy, &NoRefs).unwrap();
        assert!(shared.contains(&orphan), "younger than grace");
        shared
            .gc(&GcPolicy::new(SystemTime::now() + 2 * DAY), &NoRefs)
            .unwrap();
        assert!(!shared.contains(&orphan));
    }

    #[test]
    fn records_expire_by_age_then_by_lru_size() {
        let (_t, dir) = store();
        let t0 = SystemTime::now();
        let mut recs = Vec::new();
        for (i, age_days) in [(0u8, 90u64), (1, 20), (2, 10), (3, 5)] {
            let d = dir.put_bytes(&[i; 100_000]).unwrap();
            let r = record(&i.to_string(), &[("o", d, 100_000)]);
            dir.put_record(&r).unwrap();
            dir.touch_record(&r, t0 + DAY * 100 - DAY * age_days as u32)
                .unwrap();
            recs.push((r, d));
        }
        let policy = GcPolicy {
            max_bytes: Some(250_000),
            max_age: Some(DAY * 30),
            ..GcPolicy::new(t0 + DAY * 100)
        };
        let rep = dir.gc(&policy, &NoRefs).unwrap();
        assert_eq!(
            (rep.records_removed, rep.records_kept, rep.blobs_removed),
            (2, 2, 2)
        );
        let kept: Vec<bool> = recs
            .iter()
            .map(|(r, d)| !dir.records(&r.key).unwrap().is_empty() && dir.contains(d))
            .collect();
        assert_eq!(
            kept,
            [false, false, true, true],
            "expired first, then least recently used"
        );
        assert!(
            !dir.record_path(&recs[0].0).parent().unwrap().exists(),
            "empty key dir removed"
        );
    }
}
