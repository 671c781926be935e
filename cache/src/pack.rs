//! Packs: many small blobs stored as one chunked stream and a member table, so that
//! unpacking an image of 45,000 files creates about a thousand files in the store, not
//! 45,000.
//!
//! A pack is three kinds of entry, all ordinary ones:
//! - the **stream**: the members' bytes one after another, stored as 16 MiB chunk blobs
//!   ([`PACK_CHUNK`], hashed and written on a thread of their own while the caller goes
//!   on) and a chunk index;
//! - the **table**: a blob, `PACK_MAGIC`, the stream's index name, the member count, then
//!   per member (sorted by digest) its digest, offset in the stream and length, all
//!   little-endian;
//! - the **marker**: an empty file `v1/packs/<64 hex table digest>`, published after the
//!   table, by which readers find the pack.
//!
//! A packed member is a blob like any other to every reader of the directory
//! ([`StoreDir::read`], [`StoreDir::reader`], [`StoreDir::contains`]): its bytes are read
//! from the chunk files with `pread` and verified against the member's digest, so a
//! damaged chunk is found by the member's own hash (the chunk is then quarantined, and the
//! member is missing, which the producing step repairs). GC keeps a pack while anything
//! it keeps reaches one of the pack's members (the closure goes member → table → stream →
//! chunks); a pack is kept or dropped whole. Packs are a local storage form: publishing
//! to a remote uploads members as plain blobs, so remotes need not know packs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::chunks::{ChunkIndex, ChunkRef, FlatDigests, CHUNK_SIZE};
use crate::dir::StoreDir;
use crate::error::{io_err, CacheError};
use crate::Digest;

/// The first bytes of a pack table.
pub const PACK_MAGIC: &[u8; 8] = b"w4bpack1";

/// The length of a pack stream's chunks: 16 MiB, so unpacking a 1 GiB root filesystem
/// creates ~70 files (on a filesystem without a journal, ext4 slows every file creation
/// down for minutes after many deletions: it skips recently deleted inodes one by one).
pub const PACK_CHUNK: u32 = 16 << 20;

/// The largest blob [`PackWriter::add`] takes: larger ones are cheap enough as files of
/// their own, and a member is read whole.
pub const PACK_MEMBER_MAX: u64 = CHUNK_SIZE as u64;

const HEAD: usize = PACK_MAGIC.len() + 32 + 8;
const ENTRY: usize = 32 + 8 + 8;

/// Where a packed blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// The pack's table.
    pub pack: Digest,
    pub offset: u64,
    pub len: u64,
}

/// A decoded pack table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PackTable {
    pub stream: Digest,
    /// Sorted by digest, unique.
    pub members: Vec<(Digest, u64, u64)>,
}

impl PackTable {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD + ENTRY * self.members.len());
        b.extend_from_slice(PACK_MAGIC);
        b.extend_from_slice(self.stream.as_bytes());
        b.extend_from_slice(&(self.members.len() as u64).to_le_bytes());
        for (d, offset, len) in &self.members {
            b.extend_from_slice(d.as_bytes());
            b.extend_from_slice(&offset.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
        }
        b
    }

    /// `None` unless `bytes` are a well-formed table: the magic, a count that matches the
    /// length, members sorted and unique, each no longer than [`PACK_MEMBER_MAX`].
    pub(crate) fn decode(bytes: &[u8]) -> Option<PackTable> {
        let rest = bytes.strip_prefix(PACK_MAGIC)?;
        let stream = Digest(rest.get(..32)?.try_into().ok()?);
        let count = u64::from_le_bytes(rest.get(32..40)?.try_into().ok()?);
        let body = &rest[40..];
        if u64::try_from(body.len()).ok()? != count.checked_mul(ENTRY as u64)? {
            return None;
        }
        let mut members = Vec::with_capacity(body.len() / ENTRY);
        for e in body.chunks_exact(ENTRY) {
            let d = Digest(e[..32].try_into().ok()?);
            let offset = u64::from_le_bytes(e[32..40].try_into().ok()?);
            let len = u64::from_le_bytes(e[40..48].try_into().ok()?);
            if len > PACK_MEMBER_MAX || offset.checked_add(len).is_none() {
                return None;
            }
            if members.last().is_some_and(|(p, _, _)| *p >= d) {
                return None;
            }
            members.push((d, offset, len));
        }
        Some(PackTable { stream, members })
    }
}

/// The packs of a directory as this process last saw `v1/packs/`, shared by every clone.
#[derive(Debug, Default)]
pub(crate) struct PackMap {
    /// The mtime of `v1/packs/` when it was last listed.
    listed: Option<SystemTime>,
    tables: BTreeMap<Digest, Arc<PackTable>>,
    /// Every pack holding a blob, in table-digest order (a blob repacked after one of its
    /// chunks was lost is in two).
    members: BTreeMap<Digest, Vec<Member>>,
    streams: BTreeMap<Digest, Arc<ChunkIndex>>,
}

impl StoreDir {
    fn packs_dir(&self) -> PathBuf {
        self.sub("packs")
    }

    fn marker_path(&self, table: &Digest) -> PathBuf {
        self.packs_dir().join(table.to_hex())
    }

    /// The packs holding `d` (whether or not it is also a loose blob), as last listed;
    /// with `relist` (or when `d` is in none), `v1/packs/` is listed again first if it
    /// changed since the last look, so packs another process (or a repair) wrote
    /// meanwhile are found.
    pub(crate) fn packed_in(&self, d: &Digest, relist: bool) -> Vec<Member> {
        let mut map = self.pack_map().lock().unwrap_or_else(|e| e.into_inner());
        if !relist {
            if let Some(m) = map.members.get(d) {
                return m.clone();
            }
        }
        let changed = fs::metadata(self.packs_dir())
            .and_then(|m| m.modified())
            .ok()
            .is_some_and(|t| map.listed != Some(t));
        if changed {
            self.relist_packs(&mut map);
        }
        map.members.get(d).cloned().unwrap_or_default()
    }

    /// [`packed_in`](Self::packed_in) without forcing a new listing.
    pub(crate) fn packed(&self, d: &Digest) -> Vec<Member> {
        self.packed_in(d, false)
    }

    /// Whether `d` is packed in a pack whose chunks holding it are all here.
    pub(crate) fn packed_present(&self, d: &Digest) -> bool {
        self.packed(d).iter().any(|m| self.member_present(m))
            || self.packed_in(d, true).iter().any(|m| self.member_present(m))
    }

    /// Whether packed blob `d` has its table, stream index and chunk files: like a loose
    /// blob's file existing, it says nothing about the bytes.
    pub(crate) fn member_present(&self, m: &Member) -> bool {
        let Ok(stream) = self.stream_of(&m.pack) else {
            return false;
        };
        let size = u64::from(stream.chunk_size.max(1));
        let first = m.offset / size;
        let last = (m.offset + m.len.max(1) - 1) / size;
        (first..=last).all(|i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| stream.chunks.get(i))
                .is_some_and(|c| c.is_zero() || self.blob_path(&c.digest).is_file())
        })
    }

    /// The verified bytes of packed blob `d` from the first of its packs that has them.
    pub(crate) fn read_packed(&self, d: &Digest) -> Option<Result<Vec<u8>, CacheError>> {
        let mut last = None;
        // A member missing from every pack known may be in one written since (a repair).
        for relist in [false, true] {
            for m in self.packed_in(d, relist) {
                match self.read_member(d, m) {
                    Err(e @ CacheError::Missing { .. }) => last = Some(Err(e)),
                    other => return Some(other),
                }
            }
        }
        last
    }

    /// The tables of every pack here (the markers whose table is present and sound).
    pub(crate) fn pack_tables(&self) -> Vec<(Digest, Arc<PackTable>)> {
        let mut map = self.pack_map().lock().unwrap_or_else(|e| e.into_inner());
        self.relist_packs(&mut map);
        map.tables.iter().map(|(d, t)| (*d, t.clone())).collect()
    }

    fn relist_packs(&self, map: &mut PackMap) {
        let dir = self.packs_dir();
        map.listed = fs::metadata(&dir).and_then(|m| m.modified()).ok();
        let mut names = BTreeSet::new();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Some(d) = e.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) {
                names.insert(d);
            }
        }
        map.tables.retain(|d, _| names.contains(d));
        for name in names {
            if map.tables.contains_key(&name) {
                continue;
            }
            // A marker whose table is gone or bad names nothing (GC removes it).
            if let Some(t) = self.read(&name).ok().and_then(|b| PackTable::decode(&b)) {
                map.tables.insert(name, Arc::new(t));
            }
        }
        map.streams.retain(|d, _| map.tables.contains_key(d));
        // Sorted by table digest: the first pack holding a blob is the one used.
        let mut members: BTreeMap<Digest, Vec<Member>> = BTreeMap::new();
        for (pack, t) in &map.tables {
            for (d, offset, len) in &t.members {
                members.entry(*d).or_default().push(Member {
                    pack: *pack,
                    offset: *offset,
                    len: *len,
                });
            }
        }
        map.members = members;
    }

    fn stream_of(&self, pack: &Digest) -> Result<Arc<ChunkIndex>, CacheError> {
        let table = {
            let map = self.pack_map().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.streams.get(pack) {
                return Ok(s.clone());
            }
            map.tables.get(pack).cloned()
        };
        let missing = || CacheError::Missing {
            digest: *pack,
            root: self.root().to_owned(),
            chunk: None,
        };
        let table = table.ok_or_else(missing)?;
        let idx = self.index(&table.stream)?.ok_or_else(missing)?;
        if idx.chunk_size == 0 {
            return Err(missing());
        }
        let idx = Arc::new(idx);
        let mut map = self.pack_map().lock().unwrap_or_else(|e| e.into_inner());
        map.streams.insert(*pack, idx.clone());
        Ok(idx)
    }

    /// The verified bytes of packed blob `d`. A chunk that is missing makes `d` missing; a
    /// mismatch finds the damaged chunk by its own digest and quarantines it.
    pub(crate) fn read_member(&self, d: &Digest, m: Member) -> Result<Vec<u8>, CacheError> {
        let missing = || CacheError::Missing {
            digest: *d,
            root: self.root().to_owned(),
            chunk: None,
        };
        let stream = self.stream_of(&m.pack).map_err(|e| match e {
            CacheError::Missing { .. } | CacheError::Corrupt { .. } => missing(),
            other => other,
        })?;
        let size = u64::from(stream.chunk_size.max(1));
        let len = usize::try_from(m.len).map_err(|_| missing())?;
        let mut bytes = vec![0u8; len];
        let mut touched = Vec::new();
        let mut at = m.offset;
        let end = m.offset.checked_add(m.len).ok_or_else(missing)?;
        while at < end {
            let i = usize::try_from(at / size).map_err(|_| missing())?;
            let chunk = stream.chunks.get(i).ok_or_else(missing)?;
            let within = at % size;
            let take = (u64::from(chunk.len).saturating_sub(within)).min(end - at);
            if take == 0 {
                return Err(missing());
            }
            let dst = &mut bytes[(at - m.offset) as usize..(at - m.offset + take) as usize];
            if !chunk.is_zero() {
                let path = self.blob_path(&chunk.digest);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(io_err("open", path)(e)),
                };
                file.read_exact_at(dst, within).map_err(|e| match e.kind() {
                    // A truncated chunk: its own hash says so below, on the next read.
                    ErrorKind::UnexpectedEof => missing(),
                    _ => io_err("read", &path)(e),
                })?;
                touched.push(chunk.digest);
            }
            at += take;
        }
        let actual = Digest::of(&bytes);
        if actual == *d {
            return Ok(bytes);
        }
        // Which chunk rotted: hashing each names it (and quarantines it).
        let mut evidence = self.sub("corrupt");
        for c in touched {
            // Hashed for real, even if this process wrote or checked it before.
            self.forget_hashed(&c);
            if let Err(CacheError::Corrupt { evidence: e, .. }) = self.read(&c) {
                evidence = e;
            }
        }
        Err(CacheError::Corrupt {
            expected: *d,
            actual,
            evidence,
            chunk: None,
        })
    }

    /// A writer that packs small blobs; see the module docs.
    pub fn pack_writer(&self) -> Result<PackWriter, CacheError> {
        self.pack_writer_cut(PACK_CHUNK)
    }

    /// A pack writer cutting its stream into `chunk`-byte chunks.
    pub(crate) fn pack_writer_cut(&self, chunk: u32) -> Result<PackWriter, CacheError> {
        self.writable()?;
        // The chunks are hashed and written on a thread of their own while the caller
        // reads the next files; unsynced if the caller's writes are.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let dir = self.clone();
        let deferred = crate::dir::deferring();
        let worker = std::thread::spawn(move || {
            let run = || -> Result<Vec<ChunkRef>, CacheError> {
                rx.into_iter().map(|buf| dir.put_chunk(&buf)).collect()
            };
            match deferred {
                true => crate::dir::unsynced(run).0,
                false => run(),
            }
        });
        Ok(PackWriter {
            dir: self.clone(),
            chunk,
            buf: Vec::with_capacity(chunk as usize),
            tx: Some(tx),
            worker: Some(worker),
            members: BTreeMap::new(),
            offset: 0,
        })
    }
}

/// Packs blobs of at most [`PACK_MEMBER_MAX`] bytes ([`StoreDir::pack_writer`]).
/// Dropped without [`finish`](Self::finish), what it stored is unreferenced (GC removes
/// it after the grace period).
pub struct PackWriter {
    dir: StoreDir,
    /// The stream's chunk length, and the chunk being filled.
    chunk: u32,
    buf: Vec<u8>,
    /// Full chunks go to the worker, which stores them and returns their references.
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<Result<Vec<ChunkRef>, CacheError>>>,
    members: BTreeMap<Digest, (u64, u64)>,
    offset: u64,
}

impl PackWriter {
    /// Stores `bytes` and returns their digest: appended to the pack unless the store
    /// already has them (loose or packed; then they are pinned, as a deduplicated write
    /// is) or this pack does. Larger than [`PACK_MEMBER_MAX`]: a loose blob.
    pub fn add(&mut self, bytes: &[u8]) -> Result<Digest, CacheError> {
        if bytes.len() as u64 > PACK_MEMBER_MAX {
            return self.dir.put_bytes(bytes);
        }
        let d = Digest::of(bytes);
        if self.members.contains_key(&d) || self.dir.pinned(&[d], || self.dir.contains(&d))? {
            return Ok(d);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = (self.chunk as usize).saturating_sub(self.buf.len());
            let (now, later) = rest.split_at(rest.len().min(room));
            self.buf.extend_from_slice(now);
            rest = later;
            if self.buf.len() == self.chunk as usize {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk as usize));
                self.send(full)?;
            }
        }
        self.members.insert(d, (self.offset, bytes.len() as u64));
        self.offset += bytes.len() as u64;
        Ok(d)
    }

    /// Hands a chunk to the worker; if it stopped, its error.
    fn send(&mut self, chunk: Vec<u8>) -> Result<(), CacheError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        match sent {
            true => Ok(()),
            false => self.join().map(drop),
        }
    }

    /// Waits for the worker: the stream's chunks, or its error.
    fn join(&mut self) -> Result<Vec<ChunkRef>, CacheError> {
        drop(self.tx.take());
        let gone = || CacheError::Io {
            action: "write a pack in",
            path: self.dir.sub("blobs"),
            source: std::io::Error::other("the pack's writer thread stopped"),
        };
        match self.worker.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(gone()),
        }
    }

    /// Members added so far.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Stores the stream, then the table, then the marker that makes the members
    /// readable; returns the table's digest, or `None` (nothing stored) when no member was
    /// added.
    pub fn finish(mut self) -> Result<Option<Digest>, CacheError> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send(last)?;
        }
        let chunks = self.join()?;
        if self.members.is_empty() {
            return Ok(None);
        }
        let stream = self.dir.put_index(&ChunkIndex {
            chunk_size: self.chunk,
            chunks,
            trailer: false,
            flat: FlatDigests::default(),
        })?;
        let table = PackTable {
            stream,
            members: std::mem::take(&mut self.members)
                .into_iter()
                .map(|(d, (o, l))| (d, o, l))
                .collect(),
        };
        let name = self.dir.put_bytes(&table.encode())?;
        let marker = self.dir.marker_path(&name);
        if !marker.is_file() {
            let tmp = self.dir.tmp_file()?;
            self.dir.publish(tmp, &marker)?;
        }
        Ok(Some(name))
    }
}

impl StoreDir {
    /// Removes the markers of packs whose table is gone (after a GC): returns how many.
    pub(crate) fn prune_pack_markers(&self) -> Result<u64, CacheError> {
        let dir = self.packs_dir();
        let mut removed = 0;
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Some(d) = e.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) else {
                continue;
            };
            if !self.blob_path(&d).is_file() {
                match fs::remove_file(e.path()) {
                    Ok(()) => removed += 1,
                    Err(err) if err.kind() == ErrorKind::NotFound => {}
                    Err(err) => return Err(io_err("remove", e.path())(err)),
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
mod tests {
    use super::*;
    use crate::gc::GcPolicy;
    use crate::record::tests::record;
    use crate::refs::tests::{listing, ListRefs};
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::time::Duration;

    fn blob(i: u32, len: usize) -> Vec<u8> {
        let mut b = Vec::with_capacity(len);
        let mut x = i.wrapping_mul(2_654_435_761).wrapping_add(1);
        while b.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.truncate(len);
        b
    }

    fn files(dir: &StoreDir) -> usize {
        dir.blob_entries().unwrap().len()
    }

    #[test]
    fn many_small_blobs_become_a_few_files_and_read_back_verified() {
        let t = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(t.path()).unwrap();
        let mut w = dir.pack_writer().unwrap();
        let mut want = BTreeMap::new();
        // 3,000 blobs of up to 2 KiB (some crossing chunk edges), a duplicate, an empty one.
        for i in 0..3000u32 {
            let b = blob(i, (i as usize * 37) % 2048);
            want.insert(w.add(&b).unwrap(), b);
        }
        let dup = w.add(&blob(7, 7 * 37)).unwrap();
        assert!(want.contains_key(&dup));
        let big = blob(9999, PACK_MEMBER_MAX as usize + 1);
        let big_d = w.add(&big).unwrap();
        let pack = w.finish().unwrap().unwrap();
        // Stream chunks + the table + the big loose blob: a handful of files, not 3,000.
        let n = files(&dir);
        assert!(n < 10, "{n} files");
        assert!(dir.contains(&big_d) && dir.blob_path(&big_d).is_file());
        for (d, b) in &want {
            assert!(dir.contains(d));
            assert_eq!(&dir.read(d).unwrap(), b);
            let mut r = dir.reader(d).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(&got, b);
            assert_eq!(dir.blob_len(d), Some(b.len() as u64));
        }
        assert_eq!(dir.pack_tables().len(), 1);
        assert_eq!(dir.pack_tables()[0].0, pack);
        // Another process (a fresh handle) finds the pack through its marker.
        let other = StoreDir::open(t.path()).unwrap();
        let (d, b) = want.iter().next().unwrap();
        assert_eq!(&other.read(d).unwrap(), b);
        // A second pack of the same blobs stores nothing new: they are all present.
        let mut again = other.pack_writer().unwrap();
        for b in want.values() {
            again.add(b).unwrap();
        }
        assert!(again.is_empty());
        assert_eq!(again.finish().unwrap(), None);
    }

    #[test]
    fn a_damaged_chunk_makes_its_members_corrupt_then_missing_and_a_repack_repairs() {
        let t = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(t.path()).unwrap();
        let blobs: Vec<Vec<u8>> = (0..600u32).map(|i| blob(i, 4000)).collect();
        let mut w = dir.pack_writer_cut(CHUNK_SIZE).unwrap();
        let ds: Vec<Digest> = blobs.iter().map(|b| w.add(b).unwrap()).collect();
        let pack = w.finish().unwrap().unwrap();
        let table = PackTable::decode(&dir.read(&pack).unwrap()).unwrap();
        let stream = dir.index(&table.stream).unwrap().unwrap();
        let first = stream.chunks[0].digest;
        crate::dir::tests::flip_byte(&dir.blob_path(&first));
        match dir.read(&ds[0]) {
            Err(CacheError::Corrupt { expected, .. }) => assert_eq!(expected, ds[0]),
            other => panic!("{other:?}"),
        }
        // The chunk was quarantined: its members are now missing, the others still read.
        assert!(!dir.blob_path(&first).exists());
        assert!(matches!(dir.read(&ds[1]), Err(CacheError::Missing { .. })));
        assert!(!dir.contains(&ds[1]));
        assert_eq!(dir.read(&ds[599]).unwrap(), blobs[599]);
        // Packing the same blobs again (the producer re-running) stores only the lost
        // chunk's members, in a second pack; every blob reads again.
        let mut w = dir.pack_writer_cut(CHUNK_SIZE).unwrap();
        for b in &blobs {
            w.add(b).unwrap();
        }
        let lost = w.len();
        assert!((1..600).contains(&lost), "{lost} repacked");
        let second = w.finish().unwrap().unwrap();
        assert_ne!(second, pack);
        for (d, b) in ds.iter().zip(&blobs) {
            assert_eq!(&dir.read(d).unwrap(), b);
        }
    }

    /// A store holding a pack of `n` 3000-byte blobs and a listing naming the first
    /// `named` of them, with a record whose output is the listing.
    fn packed_tree(dir: &StoreDir, n: u32, named: usize) -> (Vec<Digest>, Digest, crate::Record) {
        let mut w = dir.pack_writer_cut(CHUNK_SIZE).unwrap();
        let ds: Vec<Digest> = (0..n).map(|i| w.add(&blob(i, 3000)).unwrap()).collect();
        w.finish().unwrap().unwrap();
        let tree = dir.put_bytes(&listing(&ds[..named])).unwrap();
        let r = record("packed", &[("tree", tree, 0)]);
        dir.put_record(&r).unwrap();
        (ds, tree, r)
    }

    #[test]
    fn gc_keeps_a_pack_while_a_kept_listing_names_a_member_and_drops_it_whole_after() {
        let t = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(t.path()).unwrap();
        let (ds, tree, r) = packed_tree(&dir, 1000, 1);
        let later = GcPolicy::new(SystemTime::now() + Duration::from_secs(2 * 86_400));
        let rep = dir.gc(&later, &ListRefs).unwrap();
        assert_eq!((rep.blobs_removed, rep.indexes_removed), (0, 0), "{rep:?}");
        assert!(ds.iter().all(|d| dir.read(d).is_ok()), "the whole pack stays");
        // The record goes: so do the listing, the table, the stream and its chunks.
        std::fs::remove_file(dir.record_path(&r)).unwrap();
        let rep = dir.gc(&later, &ListRefs).unwrap();
        assert_eq!(rep.blobs_kept + rep.indexes_kept, 0, "{rep:?}");
        assert!(!dir.contains(&tree) && !dir.contains(&ds[0]));
        assert_eq!(fs::read_dir(dir.packs_dir()).unwrap().count(), 0, "marker pruned");
        let fresh = StoreDir::open(t.path()).unwrap();
        assert!(matches!(fresh.read(&ds[0]), Err(CacheError::Missing { .. })));
    }

    #[test]
    fn verify_counts_packed_members_present_until_a_chunk_goes() {
        let t = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(t.path()).unwrap();
        let (_, tree, r) = packed_tree(&dir, 1000, 1000);
        let rep = dir.verify(&ListRefs).unwrap();
        assert!(
            rep.incomplete_listings.is_empty() && rep.dangling_records.is_empty(),
            "{rep:?}"
        );
        let (name, pack) = dir.pack_tables()[0].clone();
        let chunk = dir.index(&pack.stream).unwrap().unwrap().chunks[1].digest;
        fs::remove_file(dir.blob_path(&chunk)).unwrap();
        let rep = dir.verify(&ListRefs).unwrap();
        assert_eq!(rep.incomplete_indexes, vec![pack.stream]);
        // The table names the stream as a listing names its children.
        let mut want = vec![tree, name];
        want.sort();
        assert_eq!(rep.incomplete_listings, want);
        assert_eq!(rep.dangling_records, vec![(r.key, r.outputs_digest())]);
    }

    #[test]
    fn publish_uploads_packed_members_as_plain_blobs_and_a_reader_gets_them() {
        let t = tempfile::tempdir().unwrap();
        let local = StoreDir::open(&t.path().join("local")).unwrap();
        let remote = StoreDir::open_shared(&t.path().join("remote")).unwrap();
        let (ds, _, r) = packed_tree(&local, 300, 300);
        let store = crate::Store::new(local, Some(remote.clone()));
        let up = store.publish(&r, &ListRefs).unwrap();
        // The members and the listing; not the pack's chunks, table or stream.
        assert_eq!(
            (up.blobs, up.indexes, up.bytes),
            (301, 0, 300 * 3000 + 4 + 300 * 32)
        );
        assert!(ds.iter().all(|d| remote.blob_path(d).is_file()));
        assert!(remote.pack_tables().is_empty());
        let reader = crate::Store::new(StoreDir::open(&t.path().join("other")).unwrap(), Some(remote));
        assert_eq!(reader.read(&ds[7]).unwrap(), blob(7, 3000));
    }

    #[test]
    fn tables_round_trip_and_malformed_ones_are_refused() {
        let t = PackTable {
            stream: Digest::of(b"s"),
            members: vec![(Digest([1; 32]), 0, 5), (Digest([2; 32]), 5, 7)],
        };
        let b = t.encode();
        assert_eq!(PackTable::decode(&b), Some(t.clone()));
        assert_eq!(PackTable::decode(&b[..b.len() - 1]), None);
        let mut unsorted = t.clone();
        unsorted.members.reverse();
        assert_eq!(PackTable::decode(&unsorted.encode()), None);
        let mut huge = t;
        huge.members[0].2 = PACK_MEMBER_MAX + 1;
        assert_eq!(PackTable::decode(&huge.encode()), None);
        assert_eq!(PackTable::decode(b"w4bpack0"), None);
    }
}
