//! Garbage collection: records are the roots, blobs live while a kept record reaches them
//! (through its outputs, or a tree its preimage names for `why`). A chunk index is an
//! output like a blob and keeps its chunks alive; an evicted one frees the chunks no kept
//! index shares. Memos keep nothing alive: they are deleted once their value is gone.
//! The unit of least-recently-used eviction is the record (its mtime is its last use),
//! whose eviction frees only what no kept record, index or pin reaches.
//!
//! GC must never delete what a running build may still need. In a local directory
//! (`crate::lease`) the protocol is:
//!
//! 1. take `v1/gc.lock` exclusive without waiting (one GC at a time; busy → [`CacheError::Busy`]);
//! 2. scan without locks: records, their closures, blobs, indexes;
//! 3. take `v1/lock` exclusive, waiting at most [`GcPolicy::lock_wait`] (builds of older
//!    w4b versions hold it shared for their whole run, so GC never runs beside them);
//!    read the live leases' pins and the oldest start, removing stale leases;
//! 4. plan: never evict a record whose key is pinned; keep what kept records and pinned
//!    digests reach, and everything with an mtime at or after the oldest live lease's
//!    start minus [`LEASE_SLACK`](crate::lease::LEASE_SLACK);
//! 5. delete in batches of [`GC_BATCH`] files (records first), letting go of `v1/lock`
//!    between batches and reading the pins again, so a build waits at most one batch.
//!
//! A shared directory has no reliable locks, so there nothing younger than the grace
//! period (by mtime) is deleted: a build's uploads are fresh until it publishes the
//! record that makes them reachable. The clock is the caller's `now`; file times come
//! from the filesystem. A local GC also rewrites the usage base (`crate::usage`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::dir::StoreDir;
use crate::error::{io_err, CacheError};
use crate::lease::{LeaseScan, LEASE_SLACK};
use crate::record::Parsed;
use crate::refs::BlobRefs;
use crate::usage::{unix_secs, LastGc};
use crate::Digest;

/// Files deleted per hold of `v1/lock`: about 2,000 unlinks, a few milliseconds, the
/// longest a pinning build waits for a GC.
pub const GC_BATCH: usize = 2000;

#[derive(Clone, Debug)]
pub struct GcPolicy {
    /// Evict least recently used records until the store holds at most this much.
    pub max_bytes: Option<u64>,
    /// Delete records not used (see [`StoreDir::touch_record`]) for this long.
    pub max_age: Option<Duration>,
    /// Nothing younger than this is ever deleted.
    pub grace: Duration,
    /// Temp files younger than this are left alone (a writer may still be filling them).
    pub tmp_grace: Duration,
    /// How long a local GC waits for `v1/lock` before it gives up as busy.
    pub lock_wait: Duration,
    pub now: SystemTime,
}

impl GcPolicy {
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
    pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(2);

    /// Only unreachable blobs and temp files older than a day are removed.
    pub fn new(now: SystemTime) -> GcPolicy {
        GcPolicy {
            max_bytes: None,
            max_age: None,
            grace: GcPolicy::DEFAULT_GRACE,
            tmp_grace: GcPolicy::DEFAULT_GRACE,
            lock_wait: GcPolicy::DEFAULT_LOCK_WAIT,
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
    /// Blobs and indexes kept.
    pub bytes_kept: u64,
    /// Everything the store holds afterwards: records, blobs, indexes, memos.
    pub bytes_total: u64,
    pub tmp_removed: u64,
    /// Records kept only because a running build pinned them.
    pub records_pinned: u64,
    /// Builds running beside this GC, and leases of dead ones removed.
    pub leases_live: u64,
    pub leases_stale_removed: u64,
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
    key: Digest,
    path: PathBuf,
    size: u64,
    mtime: SystemTime,
    outputs: Vec<Digest>,
}

/// One planned deletion.
#[derive(Clone, Copy)]
enum Victim {
    Record(usize),
    /// A blob or (`true`) an index, by position in its list.
    Entry(usize, bool),
}

/// What running builds protect, as GC last read it.
struct Protection {
    scan: LeaseScan,
    /// Everything pinned digests reach.
    reach: BTreeSet<Digest>,
}

impl Protection {
    fn none() -> Protection {
        Protection {
            scan: LeaseScan::default(),
            reach: BTreeSet::new(),
        }
    }

    /// An entry written since just before the oldest running build began.
    fn fresh(&self, mtime: SystemTime) -> bool {
        self.scan
            .oldest_start
            .is_some_and(|s| mtime >= s.checked_sub(LEASE_SLACK).unwrap_or(SystemTime::UNIX_EPOCH))
    }
}

impl StoreDir {
    pub fn gc(&self, policy: &GcPolicy, refs: &dyn BlobRefs) -> Result<GcReport, CacheError> {
        self.writable()?;
        let local = !self.is_shared();
        let _gc_lock = match local {
            true => Some(self.gc_lock()?),
            false => None,
        };
        // The deltas this GC will have counted: any written later stay.
        let counted = match local {
            true => self.usage_deltas()?,
            false => Vec::new(),
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
                key: e.digest,
                path: e.path,
                size: e.size,
                mtime: e.mtime,
                outputs,
            });
        }
        // Least recently used first; the path breaks ties so runs are reproducible.
        roots.sort_by(|a, b| (a.mtime, &a.path).cmp(&(b.mtime, &b.path)));

        // Indexes are sized, kept and removed like blobs; their digests never collide.
        let indexes = self.index_entries()?;
        let blobs = self.blob_entries()?;
        let mut memo = BTreeMap::new();
        let mut closures = Vec::with_capacity(roots.len());
        for r in &roots {
            closures.push(self.closure(r.outputs.iter().copied(), refs, &mut memo)?);
        }

        // From here on, what running builds pinned counts.
        let mut lock = match local {
            true => Some(self.lock_exclusive(policy.lock_wait)?),
            false => None,
        };
        let mut prot = match local {
            true => self.protection(refs, &mut memo, &mut rep, None)?,
            false => Protection::none(),
        };
        let protected = |mtime: SystemTime, prot: &Protection| !old(mtime) || prot.fresh(mtime);

        let mut evict = vec![false; roots.len()];
        let pinned_key = |i: usize, prot: &Protection| prot.scan.pins.contains(&roots[i].key);
        if let Some(max_age) = policy.max_age {
            for (i, r) in roots.iter().enumerate() {
                evict[i] = !protected(r.mtime, &prot) && policy.age(r.mtime) > max_age;
            }
        }
        if let Some(max_bytes) = policy.max_bytes {
            let size: BTreeMap<Digest, (u64, bool)> = blobs
                .iter()
                .chain(&indexes)
                .map(|b| {
                    let removable = !protected(b.mtime, &prot) && !prot.reach.contains(&b.digest);
                    (b.digest, (b.size, removable))
                })
                .collect();
            let mut count = BTreeMap::<Digest, u64>::new();
            for (c, _) in closures.iter().zip(&evict).filter(|(_, e)| !**e) {
                for d in c {
                    *count.entry(*d).or_default() += 1;
                }
            }
            // What would remain: kept records, blobs they reach, and protected blobs.
            let mut total: u64 = roots
                .iter()
                .zip(&evict)
                .filter(|(_, e)| !**e)
                .map(|(r, _)| r.size)
                .sum();
            total += blobs
                .iter()
                .chain(&indexes)
                .filter(|b| count.contains_key(&b.digest) || !size.get(&b.digest).is_some_and(|s| s.1))
                .map(|b| b.size)
                .sum::<u64>();
            for i in 0..roots.len() {
                if total <= max_bytes {
                    break;
                }
                if evict[i] || protected(roots[i].mtime, &prot) {
                    continue;
                }
                if pinned_key(i, &prot) {
                    rep.records_pinned += 1;
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
        for (i, e) in evict.iter_mut().enumerate() {
            if *e && pinned_key(i, &prot) {
                *e = false;
            }
        }

        let mut reachable = BTreeSet::new();
        for (i, c) in closures.iter().enumerate() {
            if !evict[i] {
                reachable.extend(c.iter().copied());
            }
        }
        // Records first, so a record a late pin rescues still has its blobs.
        let mut victims: Vec<Victim> = (0..roots.len())
            .filter(|i| evict[*i])
            .map(Victim::Record)
            .collect();
        for (list, is_index) in [(&indexes, true), (&blobs, false)] {
            for (i, b) in list.iter().enumerate() {
                if !reachable.contains(&b.digest)
                    && !protected(b.mtime, &prot)
                    && !prot.reach.contains(&b.digest)
                {
                    victims.push(Victim::Entry(i, is_index));
                }
            }
        }

        let mut removed_records = vec![false; roots.len()];
        let mut removed = [vec![false; blobs.len()], vec![false; indexes.len()]];
        for (n, batch) in victims.chunks(GC_BATCH).enumerate() {
            if n > 0 && local {
                drop(lock.take());
                // Builds pin between batches; a GC that cannot get back in stops here.
                match self.lock_exclusive(policy.lock_wait) {
                    Ok(l) => lock = Some(l),
                    Err(CacheError::Busy { .. }) => break,
                    Err(e) => return Err(e),
                }
                prot = self.protection(refs, &mut memo, &mut rep, Some(prot))?;
                // A record pinned since keeps what it reaches.
                for (i, r) in roots.iter().enumerate() {
                    if evict[i] && !removed_records[i] && prot.scan.pins.contains(&r.key) {
                        evict[i] = false;
                        reachable.extend(closures[i].iter().copied());
                    }
                }
            }
            for v in batch {
                match *v {
                    Victim::Record(i) => {
                        if !evict[i] {
                            continue;
                        }
                        let path = &roots[i].path;
                        if remove(path)? {
                            removed_records[i] = true;
                        }
                        // Keep the index from growing with empty key directories; fails
                        // harmlessly if another record is still there (publish retries if
                        // we win a race).
                        if let Some(key_dir) = path.parent() {
                            let _ = fs::remove_dir(key_dir);
                        }
                    }
                    Victim::Entry(i, is_index) => {
                        let b = if is_index { &indexes[i] } else { &blobs[i] };
                        if reachable.contains(&b.digest) || prot.reach.contains(&b.digest) {
                            continue;
                        }
                        if remove(&b.path)? {
                            removed[usize::from(is_index)][i] = true;
                        }
                    }
                }
            }
        }
        drop(lock);

        for (i, r) in roots.iter().enumerate() {
            if removed_records[i] {
                rep.records_removed += 1;
                rep.bytes_freed += r.size;
            } else {
                rep.records_kept += 1;
                rep.bytes_total += r.size;
            }
        }
        for (list, is_index) in [(&blobs, false), (&indexes, true)] {
            let (kept, gone) = match is_index {
                true => (&mut rep.indexes_kept, &mut rep.indexes_removed),
                false => (&mut rep.blobs_kept, &mut rep.blobs_removed),
            };
            for (i, b) in list.iter().enumerate() {
                if removed[usize::from(is_index)][i] {
                    *gone += 1;
                    rep.bytes_freed += b.size;
                } else {
                    *kept += 1;
                    rep.bytes_kept += b.size;
                }
            }
        }
        rep.bytes_total += rep.bytes_kept;
        // After the blobs: a memo whose value was just removed goes too.
        let (kept, removed_memos) = self.prune_memos(None)?;
        rep.memos_kept = kept.len() as u64;
        rep.memos_removed = removed_memos.len() as u64;
        // The markers of packs whose table went (`crate::pack`).
        self.prune_pack_markers()?;
        rep.bytes_total += kept
            .iter()
            .filter_map(|m| fs::metadata(&m.path).ok())
            .map(|m| m.len())
            .sum::<u64>();
        for path in crate::dir::sorted_dir(&self.sub("tmp"))? {
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if m.is_file() && policy.age(mtime) > policy.tmp_grace && remove(&path)? {
                rep.tmp_removed += 1;
            }
        }
        if local {
            let note = LastGc {
                at: unix_secs(policy.now),
                bytes_freed: rep.bytes_freed,
                records_removed: rep.records_removed,
            };
            self.write_usage_base(rep.bytes_total, Some(note), &counted)?;
        }
        Ok(rep)
    }

    /// `v1/gc.lock`, taken exclusive without waiting: one GC at a time.
    fn gc_lock(&self) -> Result<File, CacheError> {
        let path = self.sub("gc.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        crate::lease::try_lock_for(&file, &path, Duration::ZERO, self.root())?;
        Ok(file)
    }

    /// Reads the leases (removing stale ones) and extends what their pins reach; called
    /// with `v1/lock` held exclusive.
    fn protection(
        &self,
        refs: &dyn BlobRefs,
        memo: &mut BTreeMap<Digest, Vec<Digest>>,
        rep: &mut GcReport,
        before: Option<Protection>,
    ) -> Result<Protection, CacheError> {
        let scan = self.scan_leases(true)?;
        rep.leases_stale_removed += scan.stale;
        rep.leases_live = rep.leases_live.max(scan.live);
        let mut prot = before.unwrap_or_else(Protection::none);
        let new: Vec<Digest> = scan.pins.difference(&prot.scan.pins).copied().collect();
        prot.reach.extend(self.closure(new, refs, memo)?);
        // Pins only grow; the oldest start only matters while its build runs, but keeping
        // the earliest seen is the safe side.
        let oldest = match (prot.scan.oldest_start, scan.oldest_start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut pins = std::mem::take(&mut prot.scan.pins);
        pins.extend(scan.pins.iter().copied());
        prot.scan = LeaseScan {
            live: scan.live,
            stale: scan.stale,
            oldest_start: oldest,
            pins,
        };
        Ok(prot)
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

    /// Sets an entry's mtime (its age, and for a record its last use).
    fn age_file(path: &std::path::Path, t: SystemTime) {
        File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn a_running_build_keeps_what_it_pinned_and_what_it_wrote() {
        let (_t, dir) = store();
        let now = SystemTime::now();
        let long_ago = now - 2 * DAY;
        let mut recs = Vec::new();
        for name in ["hit", "other"] {
            let d = dir.put_bytes(name.as_bytes()).unwrap();
            let r = record(name, &[("o", d, 3)]);
            dir.put_record(&r).unwrap();
            age_file(&dir.blob_path(&d), long_ago);
            age_file(&dir.record_path(&r), long_ago);
            recs.push((r, d));
        }
        let lease = dir.lease().unwrap();
        // The build's look-up: pin, then check.
        let (hit, hit_out) = (&recs[0].0, recs[0].1);
        assert!(dir
            .pinned(&[hit.key, hit_out], || dir.contains(&hit_out))
            .unwrap());
        // …and an output it is writing, not yet recorded.
        let fresh = dir.put_bytes(b"being written").unwrap();

        let tight = GcPolicy {
            max_bytes: Some(0),
            grace: Duration::ZERO,
            ..GcPolicy::new(now)
        };
        let rep = dir.gc(&tight, &NoRefs).unwrap();
        assert_eq!(
            (rep.records_removed, rep.records_kept, rep.records_pinned),
            (1, 1, 1)
        );
        assert_eq!((rep.leases_live, rep.leases_stale_removed), (1, 0));
        assert!(dir.contains(&hit_out) && dir.contains(&fresh));
        assert!(!dir.records(&hit.key).unwrap().is_empty());
        assert!(!dir.contains(&recs[1].1) && dir.records(&recs[1].0.key).unwrap().is_empty());
        let usage = dir.usage().unwrap();
        assert_eq!(usage.estimate(), Some(rep.bytes_total));
        assert_eq!(usage.base.unwrap().last_gc.unwrap().records_removed, 1);

        // The build ends: its delta is counted, nothing is protected any more.
        drop(lease);
        assert!(dir.usage().unwrap().deltas > 0);
        let later = GcPolicy {
            now: SystemTime::now() + Duration::from_secs(1),
            ..tight
        };
        let rep = dir.gc(&later, &NoRefs).unwrap();
        assert_eq!((rep.records_removed, rep.blobs_kept, rep.bytes_total), (1, 0, 0));
        assert!(!dir.contains(&fresh));
        let usage = dir.usage().unwrap();
        assert_eq!((usage.estimate(), usage.delta_files), (Some(0), 0));
    }

    #[test]
    fn a_dedup_write_pins_what_it_found() {
        let (_t, dir) = store();
        let now = SystemTime::now();
        let d = dir.put_bytes(b"already here").unwrap();
        age_file(&dir.blob_path(&d), now - 2 * DAY);
        let _lease = dir.lease().unwrap();
        // A step produces bytes the store already has: nothing is written, so the old
        // mtime stays, and only the pin keeps GC off it until the record names it.
        assert_eq!(dir.put_bytes(b"already here").unwrap(), d);
        let gc = GcPolicy {
            grace: Duration::ZERO,
            ..GcPolicy::new(now)
        };
        dir.gc(&gc, &NoRefs).unwrap();
        assert!(dir.contains(&d));
        dir.put_record(&record("k", &[("o", d, 12)])).unwrap();
    }

    #[test]
    fn an_old_build_or_another_gc_makes_gc_busy_and_the_shared_one_uses_grace() {
        let (_t, dir) = store();
        let policy = GcPolicy {
            lock_wait: Duration::from_millis(50),
            ..GcPolicy::new(SystemTime::now())
        };
        // A build of an older w4b holds `v1/lock` shared for its whole run.
        let old_build = dir.lock_file().unwrap();
        old_build.lock_shared().unwrap();
        assert!(matches!(dir.gc(&policy, &NoRefs), Err(CacheError::Busy { .. })));
        drop(old_build);
        let other_gc = dir.gc_lock().unwrap();
        assert!(matches!(dir.gc(&policy, &NoRefs), Err(CacheError::Busy { .. })));
        drop(other_gc);
        // A lease of this version does not block GC.
        let _lease = dir.lease().unwrap();
        dir.gc(&policy, &NoRefs).unwrap();

        let shared = StoreDir::open_shared(dir.root()).unwrap();
        let orphan = shared.put_bytes(b"fresh upload").unwrap();
        shared.gc(&policy, &NoRefs).unwrap();
        assert!(shared.contains(&orphan), "younger than grace");
        shared
            .gc(&GcPolicy::new(SystemTime::now() + 2 * DAY), &NoRefs)
            .unwrap();
        assert!(!shared.contains(&orphan));
    }

    #[test]
    fn a_gc_of_more_than_one_batch_removes_everything_unreachable() {
        let (_t, dir) = store();
        let n = GC_BATCH + 5;
        for i in 0..n {
            dir.put_bytes(format!("orphan {i}").as_bytes()).unwrap();
        }
        let rep = dir
            .gc(&GcPolicy::new(SystemTime::now() + 2 * DAY), &NoRefs)
            .unwrap();
        assert_eq!((rep.blobs_removed, rep.blobs_kept), (n as u64, 0));
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
