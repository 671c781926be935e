//! One store directory, local or shared: layout, atomic publish, verified reads.
//!
//! Every entry is written to `v1/tmp/`, fsynced, then published with `link(2)` to its
//! final name: create-if-absent, atomic on local filesystems and on NFS (where
//! rename-without-replace is not). `EEXIST` means someone published the same name first,
//! and names are content digests, so it is success. Nothing is ever overwritten or
//! appended, so a reader sees a whole entry or none, whatever process dies when.
//! Reads hash what they return; a mismatch moves the entry to `v1/corrupt/` and reports a
//! miss, so the next publish of that content repairs the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tempfile::NamedTempFile;

use crate::blob::{BlobWriter, VerifyingReader};
use crate::error::{io_err, CacheError};
use crate::record::{Parsed, Record, RecordHead, RecordName};
use crate::Digest;

const SUBDIRS: [&str; 10] = [
    "blobs", "indexes", "packs", "memo", "records", "meta", "tmp", "corrupt", "leases", "usage",
];

/// A store directory. Cheap to clone; holds no open files.
/// How stale a record's use-time may get before a hit refreshes it.
pub const TOUCH_GRANULARITY: std::time::Duration = std::time::Duration::from_secs(3600);

thread_local! {
    /// Set while [`StoreDir::with_deferred_sync`] runs on this thread.
    static DEFER_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread's publications are unsynced now (inside
/// [`StoreDir::with_deferred_sync`]), for work handed to another thread.
pub(crate) fn deferring() -> bool {
    DEFER_SYNC.with(|d| d.get())
}

/// Runs `f` with this thread's publications unsynced; also says whether this was the
/// outermost such call, whose caller owes the [`StoreDir::sync_filesystem`] (an inner
/// one leaves it to the outer).
pub(crate) fn unsynced<T>(f: impl FnOnce() -> T) -> (T, bool) {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEFER_SYNC.with(|d| d.set(self.0));
        }
    }
    let previous = DEFER_SYNC.with(|d| d.replace(true));
    let _reset = Reset(previous);
    (f(), !previous)
}

#[derive(Clone, Debug)]
pub struct StoreDir {
    root: PathBuf,
    v1: PathBuf,
    /// Shared between hosts (NFS): no locks, GC relies on the grace period alone.
    shared: bool,
    read_only: bool,
    /// Entries this process moved to `v1/corrupt/`, shared by every clone, for the
    /// application to report ([`StoreDir::take_quarantined`]); the store prints nothing.
    quarantined: std::sync::Arc<std::sync::Mutex<Vec<Quarantined>>>,
    /// This process's build lease, shared by every clone (`crate::lease`).
    lease: std::sync::Arc<std::sync::RwLock<Option<std::sync::Arc<crate::lease::Active>>>>,
    /// Bytes published through any clone (`crate::usage`).
    published: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The packs as last listed (`crate::pack`), shared by every clone.
    packs: std::sync::Arc<std::sync::Mutex<crate::pack::PackMap>>,
    /// Batches of memos by kind as last listed (`crate::memo`), shared by every clone.
    memo_batches:
        std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, crate::memo::KindBatches>>>,
    /// Blobs whose bytes this process hashed, shared by every clone: see [`Hashed`].
    hashed: std::sync::Arc<Hashed>,
    /// Memos held back by [`StoreDir::with_memo_batch`], shared by every clone.
    memo_held: std::sync::Arc<std::sync::Mutex<Option<crate::memo::HeldMemos>>>,
}

/// The blobs of one store directory whose bytes this process has hashed: those it wrote
/// (the digest was computed from the bytes it published) and those it read and verified.
/// A later read of such a blob in the same process returns the file's bytes without
/// hashing them again, so a chunk is hashed at most once per process however many steps
/// read it (`validate`, `compress` and the export all read the disk or the image).
///
/// The trust rule (`docs/decisions.md`, "Hash once per process"): a blob file is
/// content-addressed, published read-only by `link(2)` and never rewritten or appended by
/// any w4b process, so the bytes this process hashed are the bytes the file still holds,
/// unless something outside w4b wrote into the store **during this process's life** (the
/// check is made again by the next process). A blob this process quarantines, or finds
/// missing, is forgotten, so whatever is published in its place is hashed again. Only
/// blobs are remembered, never indexes, records or memos; about 40 bytes each.
#[derive(Debug, Default)]
pub(crate) struct Hashed(std::sync::Mutex<std::collections::BTreeSet<Digest>>);

impl Hashed {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<Digest>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An entry moved to `v1/corrupt/`: where it was, why, and where it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub path: PathBuf,
    pub reason: String,
    pub evidence: PathBuf,
}

/// A file found while walking the store.
pub(crate) struct Entry {
    /// The blob's digest, or the key a record is filed under.
    pub digest: Digest,
    pub path: PathBuf,
    pub size: u64,
    pub mtime: SystemTime,
}

impl Entry {
    fn new(digest: Digest, path: PathBuf, m: &fs::Metadata) -> Entry {
        // An mtime the filesystem cannot report counts as ancient: GC may then remove an
        // unreachable entry, never a reachable one.
        let mtime = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Entry {
            digest,
            path,
            size: m.len(),
            mtime,
        }
    }
}

impl StoreDir {
    /// Opens (creating if needed) a store private to this host.
    pub fn open(root: &Path) -> Result<StoreDir, CacheError> {
        StoreDir::create(root, false)
    }

    /// Opens (creating if needed) a directory shared between hosts, e.g. over NFS.
    pub fn open_shared(root: &Path) -> Result<StoreDir, CacheError> {
        StoreDir::create(root, true)
    }

    /// Opens an existing shared directory that this process must never write to.
    pub fn open_shared_read_only(root: &Path) -> Result<StoreDir, CacheError> {
        let dir = StoreDir::at(root, true, true);
        if !dir.v1.is_dir() {
            return Err(CacheError::NotAStore {
                root: root.to_owned(),
            });
        }
        Ok(dir)
    }

    fn at(root: &Path, shared: bool, read_only: bool) -> StoreDir {
        StoreDir {
            root: root.to_owned(),
            v1: root.join("v1"),
            shared,
            read_only,
            quarantined: Default::default(),
            lease: Default::default(),
            published: Default::default(),
            hashed: Default::default(),
            packs: Default::default(),
            memo_batches: Default::default(),
            memo_held: Default::default(),
        }
    }

    pub(crate) fn memo_held(&self) -> &std::sync::Mutex<Option<crate::memo::HeldMemos>> {
        &self.memo_held
    }

    pub(crate) fn memo_batches(
        &self,
    ) -> &std::sync::Mutex<std::collections::BTreeMap<&'static str, crate::memo::KindBatches>> {
        &self.memo_batches
    }

    pub(crate) fn pack_map(&self) -> &std::sync::Mutex<crate::pack::PackMap> {
        &self.packs
    }

    /// Remembers that this process hashed blob `d`'s bytes (see [`Hashed`]).
    pub(crate) fn note_hashed(&self, d: &Digest) {
        self.hashed.set().insert(*d);
    }

    /// Whether this process hashed blob `d`'s bytes already (see [`Hashed`]).
    pub(crate) fn was_hashed(&self, d: &Digest) -> bool {
        self.hashed.set().contains(d)
    }

    /// Forgets blob `d`: it was found missing or corrupt, so the next copy is hashed.
    pub(crate) fn forget_hashed(&self, d: &Digest) {
        self.hashed.set().remove(d);
    }

    /// Forgets every blob hashed so far: for tests that damage the store, which stands
    /// for damage done before a later process reads it.
    #[cfg(test)]
    pub(crate) fn forget_all_hashed(&self) {
        self.hashed.set().clear();
    }

    pub(crate) fn lease_slot(&self) -> &std::sync::RwLock<Option<std::sync::Arc<crate::lease::Active>>> {
        &self.lease
    }

    pub(crate) fn published_counter(&self) -> &std::sync::atomic::AtomicU64 {
        &self.published
    }

    /// Whether `path`, the file of entry `d`, exists; when it does and a build lease is
    /// live, `d` is pinned first and the answer is checked again under the lease's lock
    /// (`crate::lease`). For writers that skip what is already stored: GC must not take
    /// away an entry a build is about to name.
    pub(crate) fn present_pinned(&self, d: &Digest, path: &Path) -> Result<bool, CacheError> {
        if !path.is_file() {
            return Ok(false);
        }
        self.pinned(&[*d], || path.is_file())
    }

    /// The entries this directory (through any clone) moved to `v1/corrupt/` since the
    /// last call, oldest first.
    pub fn take_quarantined(&self) -> Vec<Quarantined> {
        let mut q = self.quarantined.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *q)
    }

    fn create(root: &Path, shared: bool) -> Result<StoreDir, CacheError> {
        let dir = StoreDir::at(root, shared, false);
        for sub in SUBDIRS {
            let p = dir.v1.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create directory", p))?;
        }
        let lock = dir.v1.join("lock");
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io_err("create", lock))?;
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn sub(&self, name: &str) -> PathBuf {
        self.v1.join(name)
    }

    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.v1.join("blobs").join(&hex[..2]).join(hex)
    }

    /// Where chunk index `d` lives (`crate::chunks`): its own namespace, so an index and
    /// a blob can never be taken for one another.
    pub(crate) fn index_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_hex();
        self.v1.join("indexes").join(&hex[..2]).join(hex)
    }

    fn record_dir(&self, key: &Digest) -> PathBuf {
        let hex = key.to_hex();
        self.v1.join("records").join(&hex[..2]).join(hex)
    }

    /// Where `r` is filed: `<outputs>.json`, or `<outputs>.<keyid>.json` when signed.
    pub(crate) fn record_path(&self, r: &Record) -> PathBuf {
        self.record_dir(&r.key).join(r.name().file_name())
    }

    fn record_file(&self, key: &Digest, outputs: &Digest) -> PathBuf {
        let name = RecordName {
            outputs: *outputs,
            keyid: None,
        };
        self.record_dir(key).join(name.file_name())
    }

    pub(crate) fn writable(&self) -> Result<(), CacheError> {
        match self.read_only {
            true => Err(CacheError::ReadOnly {
                root: self.root.clone(),
            }),
            false => Ok(()),
        }
    }

    /// A new temp file in `v1/tmp/`, read-only for everyone once published.
    pub(crate) fn tmp_file(&self) -> Result<NamedTempFile, CacheError> {
        self.writable()?;
        let tmp = self.sub("tmp");
        tempfile::Builder::new()
            .prefix("w4b-")
            .permissions(fs::Permissions::from_mode(0o444))
            .tempfile_in(&tmp)
            .map_err(io_err("create a temp file in", tmp))
    }

    /// A temp file in the store's own filesystem for an output written with seeks (a
    /// sparse disk or filesystem image, whose zero runs stay holes), to be published with
    /// [`adopt`](Self::adopt) (one blob) or [`adopt_chunked`](Self::adopt_chunked) (chunks
    /// and an index). Dropped unpublished, it is deleted.
    pub fn scratch_file(&self) -> Result<NamedTempFile, CacheError> {
        self.tmp_file()
    }

    /// Publishes a file made with [`scratch_file`](Self::scratch_file): hashes it in
    /// place (holes read as zeros without touching the disk) and links it into the
    /// store, so a mostly empty 4 GiB image costs its data, not 4 GiB of writes.
    /// Returns the digest and the length.
    pub fn adopt(&self, tmp: NamedTempFile) -> Result<(Digest, u64), CacheError> {
        let mut file = tmp.as_file();
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).map_err(io_err("read", tmp.path()))?;
        let mut hasher = blake3::Hasher::new();
        let size = io::copy(&mut io::BufReader::with_capacity(1 << 20, file), &mut hasher)
            .map_err(io_err("read", tmp.path()))?;
        let digest: Digest = hasher.finalize().into();
        let dest = self.blob_path(&digest);
        if !self.present_pinned(&digest, &dest)? && self.publish(tmp, &dest)? {
            self.note_hashed(&digest);
        }
        Ok((digest, size))
    }

    /// Runs `f` with this thread's blob publications unsynced, then makes them all durable
    /// with one `syncfs(2)` of the store's filesystem before returning. For a step that
    /// stores tens of thousands of small files (unpacking an image): one flush instead of
    /// one `fsync` per blob. The guarantee is the same — every blob is durable before the
    /// step returns, so before any record can name it — and a failure to sync is an error.
    pub fn with_deferred_sync<T>(&self, f: impl FnOnce() -> T) -> Result<T, CacheError> {
        let (out, outermost) = unsynced(f);
        if outermost {
            self.sync_filesystem()?;
        }
        Ok(out)
    }

    /// `syncfs(2)` of the store's filesystem: every entry published unsynced (see
    /// [`unsynced`]) is durable when it returns.
    pub(crate) fn sync_filesystem(&self) -> Result<(), CacheError> {
        let blobs = self.sub("blobs");
        let dir = fs::File::open(&blobs).map_err(io_err("open", &blobs))?;
        rustix::fs::syncfs(&dir).map_err(|e| io_err("sync the filesystem of", &blobs)(e.into()))
    }

    /// Publishes a finished temp file at `dest` if nothing is there yet; see module docs.
    /// Returns whether `tmp` became the entry (false: someone published that name first).
    pub(crate) fn publish(&self, tmp: NamedTempFile, dest: &Path) -> Result<bool, CacheError> {
        if !DEFER_SYNC.with(|d| d.get()) {
            tmp.as_file().sync_all().map_err(io_err("sync", tmp.path()))?;
        }
        let parent = dest.parent().unwrap_or(&self.v1);
        // GC removes emptied record directories; if it does so between our mkdir and our
        // link, the link fails with ENOENT, and trying again is correct.
        let mut attempts = 0;
        loop {
            attempts += 1;
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
            match fs::hard_link(tmp.path(), dest) {
                Ok(()) => {
                    self.count_published(tmp.as_file().metadata().map_or(0, |m| m.len()));
                    return Ok(true);
                }
                // Named by a digest (a blob, an index): the caller will rely on it, so it is
                // pinned; if a GC took it since the link failed, link again.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let Some(d) = dest
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse::<Digest>().ok())
                    else {
                        return Ok(false);
                    };
                    if self.pinned(&[d], || dest.is_file())? || attempts >= 3 {
                        return Ok(false);
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::NotFound && attempts < 3 => continue,
                // Filesystems without hard links (some FUSE bucket mounts) get
                // check-then-rename: a race there replaces an entry with identical
                // content, which readers cannot tell from the original.
                Err(e) if matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::PermissionDenied) => {
                    if dest.exists() {
                        return Ok(false);
                    }
                    let len = tmp.as_file().metadata().map_or(0, |m| m.len());
                    tmp.persist(dest).map_err(|e| io_err("publish", dest)(e.error))?;
                    self.count_published(len);
                    return Ok(true);
                }
                Err(e) => return Err(io_err("publish", dest)(e)),
            }
        }
    }

    /// Moves a bad entry to `v1/corrupt/<evidence>` unless the directory is read-only or
    /// the path no longer names the file we found bad (someone already repaired it).
    /// Best effort: if the move fails the entry is simply found bad again next time.
    pub(crate) fn quarantine(
        &self,
        path: &Path,
        evidence: &str,
        seen: Option<&File>,
        reason: &str,
    ) -> PathBuf {
        let dest = self.sub("corrupt").join(evidence);
        if self.read_only {
            return path.to_owned();
        }
        if let Some(file) = seen {
            let same = match (file.metadata(), fs::symlink_metadata(path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                return dest;
            }
        }
        if fs::rename(path, &dest).is_ok() {
            self.quarantined
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Quarantined {
                    path: path.to_owned(),
                    reason: reason.to_owned(),
                    evidence: dest.clone(),
                });
        }
        dest
    }

    // ---- blobs ----

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, CacheError> {
        let d = Digest::of(bytes);
        let dest = self.blob_path(&d);
        if self.present_pinned(&d, &dest)? {
            return Ok(d);
        }
        // Straight to the temp file: the digest is already known, so the bytes are not
        // hashed a second time on the way in (a `BlobWriter` would).
        let tmp = self.tmp_file()?;
        write_sparse(tmp.as_file(), bytes).map_err(io_err("write", tmp.path()))?;
        if self.publish(tmp, &dest)? {
            self.note_hashed(&d);
        }
        Ok(d)
    }

    /// A writer that streams to a temp file while hashing; `commit` publishes it.
    pub fn writer(&self) -> Result<BlobWriter, CacheError> {
        Ok(BlobWriter::new(self.clone(), self.tmp_file()?))
    }

    /// Copies and hashes `path` in one pass.
    pub fn put_file(&self, path: &Path) -> Result<(Digest, u64), CacheError> {
        let mut src = File::open(path).map_err(io_err("open", path))?;
        let mut w = self.writer()?;
        io::copy(&mut src, &mut w).map_err(io_err("copy into the store", path))?;
        w.commit()
    }

    /// Stores what `from` yields as `expected`, verifying while copying; on a mismatch
    /// nothing is published and the error is [`CacheError::Mismatch`].
    pub fn import_blob(&self, expected: &Digest, from: &mut dyn Read) -> Result<u64, CacheError> {
        let path = self.blob_path(expected);
        if let Ok(m) = fs::metadata(&path) {
            if self.present_pinned(expected, &path)? {
                return Ok(m.len());
            }
        }
        let mut w = self.writer()?;
        if let Err(e) = io::copy(from, &mut w) {
            return Err(crate::blob::unwrap_corrupt(e).unwrap_or_else(|e| io_err("import", path)(e)));
        }
        Ok(w.commit_expecting(Some(expected))?.1)
    }

    /// Publishes `tmp` as blob `expected` by linking it: no copy, no second hash. For a
    /// finished, durable file on this store's filesystem whose bytes the caller hashed as
    /// it wrote them (a verified download), exactly as a [`BlobWriter`] publishes what it
    /// hashed on the way in; the caller vouches that `expected` is that hash. The file is
    /// made read-only first, and dropping `tmp` removes its own name once it is linked.
    /// Returns the blob's length.
    pub fn adopt_hashed(&self, expected: &Digest, tmp: NamedTempFile) -> Result<u64, CacheError> {
        self.writable()?;
        let len = tmp
            .as_file()
            .metadata()
            .map_err(io_err("read", tmp.path()))?
            .len();
        let dest = self.blob_path(expected);
        if self.present_pinned(expected, &dest)? {
            return Ok(len);
        }
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_err("write", tmp.path()))?;
        if self.publish(tmp, &dest)? {
            self.note_hashed(expected);
        }
        Ok(len)
    }

    /// Whether the blob exists, as a file or packed (`crate::pack`); says nothing about
    /// its bytes.
    pub fn contains(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file() || self.packed_present(d)
    }

    /// The blob's length, as a file or packed; `None` when it is not here.
    pub fn blob_len(&self, d: &Digest) -> Option<u64> {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) if m.is_file() => Some(m.len()),
            _ => [false, true]
                .into_iter()
                .flat_map(|relist| self.packed_in(d, relist))
                .find(|m| self.member_present(m))
                .map(|m| m.len),
        }
    }

    pub(crate) fn open_raw(&self, d: &Digest) -> Result<File, CacheError> {
        let path = self.blob_path(d);
        File::open(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => {
                self.forget_hashed(d);
                CacheError::Missing {
                    digest: *d,
                    root: self.root.clone(),
                    chunk: None,
                }
            }
            _ => io_err("open", path)(e),
        })
    }

    /// The blob's bytes, verified: hashed, unless this process hashed them before
    /// ([`Hashed`]).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        let mut file = match self.open_raw(d) {
            Err(e @ CacheError::Missing { .. }) => return self.read_packed(d).unwrap_or(Err(e)),
            other => other?,
        };
        // Sized from the file: one allocation, no growth copies for a 1 MiB chunk.
        let size = file.metadata().map_or(0, |m| m.len());
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
        file.read_to_end(&mut bytes)
            .map_err(io_err("read", self.blob_path(d)))?;
        self.check_read(d, &bytes, &file)?;
        Ok(bytes)
    }

    /// Checks bytes just read from blob `d`'s `file`: hashes them unless this process did
    /// before, quarantines the file on a mismatch, and remembers a match.
    pub(crate) fn check_read(&self, d: &Digest, bytes: &[u8], file: &File) -> Result<(), CacheError> {
        if self.was_hashed(d) {
            return Ok(());
        }
        let actual = Digest::of(bytes);
        if actual != *d {
            return Err(self.corrupt_blob(d, actual, file));
        }
        self.note_hashed(d);
        Ok(())
    }

    pub(crate) fn corrupt_blob(&self, expected: &Digest, actual: Digest, seen: &File) -> CacheError {
        self.forget_hashed(expected);
        let evidence = self.quarantine(
            &self.blob_path(expected),
            &format!("{expected}.{actual}"),
            Some(seen),
            &format!("blob `{expected}` is corrupt: its bytes hash to `{actual}`"),
        );
        CacheError::Corrupt {
            expected: *expected,
            actual,
            evidence,
            chunk: None,
        }
    }

    /// A streaming reader that verifies at end of file; see [`VerifyingReader`].
    pub fn reader(&self, d: &Digest) -> Result<VerifyingReader, CacheError> {
        match self.open_raw(d) {
            Ok(file) => Ok(VerifyingReader::new(self.clone(), *d, file)),
            // Packed blobs are small and verified whole before the first byte is returned.
            Err(e @ CacheError::Missing { .. }) => match self.read_packed(d) {
                Some(bytes) => Ok(VerifyingReader::verified(self.clone(), *d, bytes?)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Writes the blob to `dest` through a temp file beside it, renamed into place only
    /// once the bytes are verified.
    /// A chunked output (an index) is assembled, every chunk verified, its zero chunks
    /// left as holes.
    pub fn copy_to(&self, d: &Digest, dest: &Path) -> Result<(), CacheError> {
        if self.contains_index(d) {
            return crate::output::copy_output_to(self.open_output(d)?, dest);
        }
        let mut src = self.reader(d)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".w4b-")
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(io_err("create a temp file in", dir))?;
        if let Err(e) = io::copy(&mut src, &mut tmp) {
            return Err(crate::blob::unwrap_corrupt(e).unwrap_or_else(|e| io_err("copy to", dest)(e)));
        }
        // Durable before it replaces the previous output: a power loss must not leave an
        // empty file where a good image was.
        tmp.as_file().sync_all().map_err(io_err("sync", tmp.path()))?;
        tmp.persist(dest)
            .map(drop)
            .map_err(|e| io_err("replace", dest)(e.error))
    }

    // ---- records ----

    /// Stores `r` unless a record with the same key and outputs exists. Every output
    /// (blob or chunk index) must already be in this directory.
    pub fn put_record(&self, r: &Record) -> Result<(), CacheError> {
        for (name, out) in &r.outputs {
            if !self.contains_output(&out.digest) {
                return Err(CacheError::IncompleteRecord {
                    key: r.key,
                    output: name.clone(),
                    digest: out.digest,
                });
            }
        }
        self.write_record(r)
    }

    /// [`put_record`](Self::put_record) without the output check: for records copied
    /// from a remote, whose blobs are fetched on first read.
    pub(crate) fn write_record(&self, r: &Record) -> Result<(), CacheError> {
        let mut tmp = self.tmp_file()?;
        tmp.write_all(&r.to_json()).map_err(io_err("write", tmp.path()))?;
        self.publish(tmp, &self.record_path(r)).map(drop)
    }

    /// Every valid record for `key`, sorted by outputs digest. Invalid files are
    /// quarantined and skipped; records of another schema are skipped.
    pub fn records(&self, key: &Digest) -> Result<Vec<Record>, CacheError> {
        let mut out = Vec::new();
        for path in sorted_dir(&self.record_dir(key))? {
            if let Some((Parsed::Valid(r), _)) = self.load_record(key, &path)? {
                out.push(*r);
            }
        }
        Ok(out)
    }

    /// The outputs of every valid record for `key`, sorted by outputs digest: what a cache
    /// hit needs, without decoding preimages (see [`RecordHead`]). Invalid files are
    /// quarantined and skipped, as by [`records`](Self::records).
    pub fn heads(&self, key: &Digest) -> Result<Vec<RecordHead>, CacheError> {
        let mut out = Vec::new();
        for path in sorted_dir(&self.record_dir(key))? {
            let Some((bytes, used)) = read_record_file(&path)? else {
                continue;
            };
            let parsed = match record_name(&path) {
                Some(name) => Record::parse_head(&bytes, key, &name),
                None => Parsed::Invalid,
            };
            match parsed {
                Parsed::Valid(mut head) => {
                    head.used = used;
                    out.push(head);
                }
                Parsed::Foreign => {}
                Parsed::Invalid => self.quarantine_record(key, &path, &bytes),
            }
        }
        Ok(out)
    }

    /// Reads and checks the record file at `path` (filed under `key`); an invalid one is
    /// quarantined. `None` if it vanished meanwhile.
    pub(crate) fn load_record(
        &self,
        key: &Digest,
        path: &Path,
    ) -> Result<Option<(Parsed, Vec<u8>)>, CacheError> {
        let Some((bytes, _)) = read_record_file(path)? else {
            return Ok(None);
        };
        let parsed = match record_name(path) {
            Some(name) => Record::parse(&bytes, key, &name),
            None => Parsed::Invalid,
        };
        if let Parsed::Invalid = parsed {
            self.quarantine_record(key, path, &bytes);
        }
        Ok(Some((parsed, bytes)))
    }

    fn quarantine_record(&self, key: &Digest, path: &Path, bytes: &[u8]) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let evidence = format!("{key}-{name}.{}", Digest::of(bytes));
        self.quarantine(
            path,
            &evidence,
            None,
            &format!("record for key `{key}` is not a valid record of that key and outputs"),
        );
    }

    /// Marks `r` as used at `now` (its mtime is the LRU clock of GC). A no-op on a
    /// read-only directory.
    pub fn touch_record(&self, r: &Record, now: SystemTime) -> Result<(), CacheError> {
        self.touch(&RecordHead::from(r), now)
    }

    /// [`touch_record`](Self::touch_record) for a record found by [`heads`](Self::heads),
    /// which already knows the file's mtime.
    pub fn touch(&self, r: &RecordHead, now: SystemTime) -> Result<(), CacheError> {
        if self.read_only {
            return Ok(());
        }
        let path = self.record_file(&r.key, &r.outputs_digest());
        // LRU needs hours, not nanoseconds: a record used within the last hour is not
        // touched again, so a no-op rebuild costs no write (and, with the mtime read
        // along with the record, no `stat` either).
        let modified = match r.used {
            Some(t) => Some(t),
            None => fs::metadata(&path).and_then(|m| m.modified()).ok(),
        };
        if let Some(modified) = modified {
            if now
                .duration_since(modified)
                .is_ok_and(|age| age < TOUCH_GRANULARITY)
            {
                return Ok(());
            }
        }
        let file = File::open(&path).map_err(io_err("open", &path))?;
        file.set_modified(now).map_err(io_err("touch", path))
    }

    /// Marks `r` used at `now` however recently it was: before a GC, so the records the
    /// build that triggers it just used rank as the most recently used ones (a hit
    /// refreshes a record's mtime only hourly). A record gone meanwhile is no error.
    pub fn mark_used(&self, r: &RecordHead, now: SystemTime) -> Result<(), CacheError> {
        if self.read_only {
            return Ok(());
        }
        let path = self.record_file(&r.key, &r.outputs_digest());
        match File::open(&path) {
            Ok(file) => file.set_modified(now).map_err(io_err("touch", path)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("open", path)(e)),
        }
    }

    /// Marks every record file of `key` with these outputs as used, whoever signed it:
    /// for a shared directory, where the copy a hit came from is one of several. A no-op
    /// on a read-only directory.
    pub fn touch_outputs(&self, key: &Digest, outputs: &Digest, now: SystemTime) -> Result<(), CacheError> {
        if self.read_only {
            return Ok(());
        }
        for path in sorted_dir(&self.record_dir(key))? {
            if record_name(&path).is_none_or(|n| n.outputs != *outputs) {
                continue;
            }
            let fresh = fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age < TOUCH_GRANULARITY));
            if !fresh {
                let file = File::open(&path).map_err(io_err("open", &path))?;
                file.set_modified(now).map_err(io_err("touch", path))?;
            }
        }
        Ok(())
    }

    // ---- meta ----

    fn meta_path(&self, name: &str) -> Result<PathBuf, CacheError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return Err(CacheError::MetaName {
                name: name.to_owned(),
            });
        }
        Ok(self.sub("meta").join(name))
    }

    /// Replaces `meta/<name>` atomically (temp file + rename).
    pub fn write_meta(&self, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.meta_path(name)?;
        let mut tmp = self.tmp_file()?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err("sync", tmp.path()))?;
        tmp.persist(&path)
            .map(drop)
            .map_err(|e| io_err("replace", path)(e.error))
    }

    /// [`write_meta`](Self::write_meta) without the `fsync`: for conveniences (build
    /// history, the stat cache) that are rewritten on every build and may be lost in a
    /// crash. Readers still never see a partial file (the replace is a rename), and a
    /// file emptied by a power loss reads as unusable, which callers treat as absent.
    pub fn write_meta_unsynced(&self, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.meta_path(name)?;
        let mut tmp = self.tmp_file()?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        tmp.persist(&path)
            .map(drop)
            .map_err(|e| io_err("replace", path)(e.error))
    }

    pub fn read_meta(&self, name: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.meta_path(name)?;
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }

    // ---- locking ----

    pub(crate) fn lock_file(&self) -> Result<File, CacheError> {
        let path = self.sub("lock");
        File::open(&path).map_err(io_err("open", path))
    }

    // ---- walking ----

    /// Files two levels below `v1/<top>/` (`<shard>/<name>`), sorted, with their stat.
    fn walk2(&self, top: &str) -> Result<Vec<(PathBuf, fs::Metadata)>, CacheError> {
        let mut out = Vec::new();
        for shard in sorted_dir(&self.sub(top))? {
            if !shard.is_dir() {
                continue;
            }
            for path in sorted_dir(&shard)? {
                if let Ok(m) = fs::symlink_metadata(&path) {
                    out.push((path, m));
                }
            }
        }
        Ok(out)
    }

    /// Every file under `blobs/` named by a digest.
    pub(crate) fn blob_entries(&self) -> Result<Vec<Entry>, CacheError> {
        self.digest_entries("blobs")
    }

    /// Every file under `indexes/` named by a digest.
    pub(crate) fn index_entries(&self) -> Result<Vec<Entry>, CacheError> {
        self.digest_entries("indexes")
    }

    fn digest_entries(&self, top: &str) -> Result<Vec<Entry>, CacheError> {
        let mut out = Vec::new();
        for (path, m) in self.walk2(top)? {
            let digest = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok());
            if let (Some(digest), true) = (digest, m.is_file()) {
                out.push(Entry::new(digest, path, &m));
            }
        }
        Ok(out)
    }

    /// Every key with a record directory, sorted.
    pub fn record_keys(&self) -> Result<Vec<Digest>, CacheError> {
        let mut keys: Vec<Digest> = self.record_entries()?.into_iter().map(|e| e.digest).collect();
        keys.dedup();
        Ok(keys)
    }

    /// Every record file, as an entry whose digest is the key it is filed under.
    pub(crate) fn record_entries(&self) -> Result<Vec<Entry>, CacheError> {
        let mut out = Vec::new();
        for (key_dir, m) in self.walk2("records")? {
            if !m.is_dir() {
                continue;
            }
            let name = key_dir.file_name().and_then(|n| n.to_str());
            let Some(key) = name.and_then(|n| n.parse().ok()) else {
                continue;
            };
            for path in sorted_dir(&key_dir)? {
                if let Ok(m) = fs::symlink_metadata(&path) {
                    out.push(Entry::new(key, path, &m));
                }
            }
        }
        Ok(out)
    }
}

/// Entries of `dir` in name order; a missing directory is empty (GC may remove it).
/// A record file's bytes and its mtime, when the filesystem reports one.
type RecordFile = (Vec<u8>, Option<SystemTime>);

/// A record file's bytes and mtime (from the open file: no second path look-up); `None`
/// if it vanished meanwhile (GC, or a concurrent quarantine).
fn read_record_file(path: &Path) -> Result<Option<RecordFile>, CacheError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let meta = file.metadata().map_err(io_err("read", path))?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 20) + 1);
    // Through `take`: `File::read_to_end` would ask the kernel for the size (and the
    // position) again, one `statx` and one `lseek` per record on a no-op rebuild.
    Read::take(&mut file, u64::MAX)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    Ok(Some((bytes, meta.modified().ok())))
}

/// What a record file's name claims (`<64 hex>.json` or `<64 hex>.<keyid>.json`).
/// The unit [`write_sparse`] leaves out: the block size of the filesystems a store lives
/// on (ext4, XFS, btrfs and tmpfs all allocate 4 KiB pages), so a skipped block is a hole.
const SPARSE_BLOCK: usize = 4096;

/// Writes `bytes` into the empty file `file`, leaving every all-zero [`SPARSE_BLOCK`] a
/// hole: the file reads back as exactly `bytes` (a hole reads as zeros), and costs only
/// its non-zero blocks on disk. A rendered filesystem chunk is mostly such blocks (an
/// inode-table chunk's free inodes, a data bin's free blocks, the tails of small files),
/// so a rebuild that renders a few chunks stores what they hold, not 1 MiB each. Blobs
/// shorter than two blocks are written whole.
pub(crate) fn write_sparse(file: &File, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if bytes.len() < 2 * SPARSE_BLOCK {
        return (&*file).write_all(bytes);
    }
    // OR-folded 16 bytes at a time: vectorised, and quick in unoptimised builds too.
    let zero = |block: &[u8]| {
        let mut words = block.chunks_exact(16);
        let folded = words.by_ref().fold(0u128, |acc, w| {
            acc | u128::from_ne_bytes(w.try_into().unwrap_or([1; 16]))
        });
        folded == 0 && words.remainder().iter().all(|&b| b == 0)
    };
    let mut run: Option<usize> = None;
    for (i, block) in bytes.chunks(SPARSE_BLOCK).enumerate() {
        let at = i * SPARSE_BLOCK;
        match (zero(block), run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                file.write_all_at(&bytes[start..at], start as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        file.write_all_at(&bytes[start..], start as u64)?;
    }
    // Trailing zero blocks: the length, as a hole.
    file.set_len(bytes.len() as u64)
}

pub(crate) fn record_name(path: &Path) -> Option<RecordName> {
    RecordName::parse(path.file_name()?.to_str()?)
}

pub(crate) fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        out.push(e.map_err(io_err("list", dir))?.path());
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
pub(crate) mod tests {
    use super::*;
    use crate::record::tests::record;
    use crate::refs::NoRefs;
    use proptest::prelude::*;

    pub(crate) fn store() -> (tempfile::TempDir, StoreDir) {
        let t = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(t.path()).unwrap();
        (t, dir)
    }

    /// Simulates bit rot: flips one byte of a published (read-only) file in place.
    pub(crate) fn flip_byte(path: &Path) {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = fs::read(path).unwrap();
        bytes[0] ^= 0x20;
        fs::write(path, bytes).unwrap();
    }

    /// Bit rot in blob `path` of `dir` as a later process meets it: the byte flipped, and
    /// nothing remembered as hashed (within one process a blob is hashed once; see
    /// `Hashed`).
    pub(crate) fn rot(dir: &StoreDir, path: &Path) {
        flip_byte(path);
        dir.forget_all_hashed();
    }

    fn corrupt_count(dir: &StoreDir) -> usize {
        sorted_dir(&dir.sub("corrupt")).unwrap().len()
    }

    #[test]
    fn an_adopted_sparse_file_keeps_its_holes_and_reads_back_verified() {
        let (_t, dir) = store();
        let tmp = dir.scratch_file().unwrap();
        let mut f = tmp.as_file();
        // 64 MiB with data only at both ends.
        f.write_all(b"head").unwrap();
        io::Seek::seek(&mut f, io::SeekFrom::Start((64 << 20) - 4)).unwrap();
        f.write_all(b"tail").unwrap();
        let (d, size) = dir.adopt(tmp).unwrap();
        assert_eq!(size, 64 << 20);
        let path = dir.blob_path(&d);
        let m = fs::metadata(&path).unwrap();
        assert!(m.blocks() * 512 < 1 << 20, "{} blocks allocated", m.blocks());
        let mut bytes = Vec::new();
        dir.reader(&d).unwrap().read_to_end(&mut bytes).unwrap();
        assert_eq!(Digest::of(&bytes), d);
        assert_eq!(&bytes[..4], b"head");
        // Adopting the same bytes again is a no-op.
        let tmp = dir.scratch_file().unwrap();
        tmp.as_file().write_all(&bytes).unwrap();
        assert_eq!(dir.adopt(tmp).unwrap(), (d, size));
    }

    #[test]
    fn a_chunk_s_zero_blocks_are_stored_as_holes() {
        let (_t, dir) = store();
        // 1 MiB as a rendered inode-table chunk looks: a few used blocks, the rest zeros;
        // one non-zero byte in the last word of a block, and a short tail of zeros.
        let mut bytes = vec![0u8; 1 << 20];
        bytes[..100].fill(7);
        bytes[40 * 4096 + 4095] = 1;
        bytes[41 * 4096..43 * 4096].fill(9);
        let d = dir.put_chunk(&bytes).unwrap().digest;
        let m = fs::metadata(dir.blob_path(&d)).unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert!(
            m.blocks() * 512 <= 16 * 4096,
            "{} bytes allocated",
            m.blocks() * 512
        );
        assert_eq!(dir.read(&d).unwrap(), bytes);
        // Through a later process (not hashed before), byte for byte.
        let later = StoreDir::open(dir.root()).unwrap();
        assert_eq!(later.read(&d).unwrap(), bytes);

        // Data up to the end, an odd length, and a chunk shorter than two blocks.
        for len in [(1 << 20) - 5, 4096 + 17, 100] {
            let mut b = vec![0u8; len];
            b[len - 1] = 3;
            b[0] = 1;
            let d = dir.put_chunk(&b).unwrap().digest;
            assert_eq!(later.read(&d).unwrap(), b, "{len} bytes");
        }

        // The chunk sink stores its rendered chunks the same way.
        let mut sink = dir.chunk_sink(2 << 20).unwrap();
        let mut second = bytes.clone();
        second[500_000] = 0xff;
        sink.put(second.clone()).unwrap();
        sink.put(bytes.clone()).unwrap();
        let (idx, _) = sink.commit().unwrap();
        let chunk = Digest::of(&second);
        let m = fs::metadata(dir.blob_path(&chunk)).unwrap();
        assert!(
            m.blocks() * 512 <= 16 * 4096,
            "{} bytes allocated",
            m.blocks() * 512
        );
        let mut all = Vec::new();
        later.open_output(&idx).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, [second, bytes].concat());
    }

    #[test]
    fn blob_round_trips() {
        let (t, dir) = store();
        let d = dir.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(dir.read(&d).unwrap(), b"hello");
        assert!(dir.contains(&d));

        let mut w = dir.writer().unwrap();
        w.write_all(&vec![3u8; 1 << 20]).unwrap();
        w.write_all(b"tail").unwrap();
        let (big, size) = w.commit().unwrap();
        assert_eq!(size, (1 << 20) + 4);
        assert_eq!(dir.read(&big).unwrap().len() as u64, size);
        let mut streamed = Vec::new();
        dir.reader(&big).unwrap().read_to_end(&mut streamed).unwrap();
        assert_eq!(Digest::of(&streamed), big);

        let src = t.path().join("src");
        fs::write(&src, b"file bytes").unwrap();
        assert_eq!(dir.put_file(&src).unwrap(), (Digest::of(b"file bytes"), 10));
        let dest = t.path().join("out/copy");
        fs::create_dir(t.path().join("out")).unwrap();
        dir.copy_to(&d, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");

        let e = Digest::of(b"import");
        assert_eq!(dir.import_blob(&e, &mut &b"import"[..]).unwrap(), 6);
        assert!(matches!(
            dir.import_blob(&Digest::of(b"x"), &mut &b"not x"[..]),
            Err(CacheError::Mismatch { .. })
        ));
        assert!(!dir.contains(&Digest::of(b"x")));
        assert!(!dir.contains(&Digest::of(b"not x")));
        assert!(matches!(
            dir.read(&Digest::of(b"absent")),
            Err(CacheError::Missing { .. })
        ));
        assert_eq!(dir.stats().unwrap().tmp_files, 0, "temp files are cleaned up");
    }

    #[test]
    fn flipped_byte_is_a_quarantined_miss_that_republish_repairs() {
        let (t, dir) = store();
        let d = dir.put_bytes(b"precious bytes").unwrap();

        rot(&dir, &dir.blob_path(&d));
        assert!(matches!(dir.read(&d), Err(CacheError::Corrupt { .. })));
        assert!(!dir.contains(&d));
        assert_eq!(corrupt_count(&dir), 1);
        dir.put_bytes(b"precious bytes").unwrap();
        assert_eq!(dir.read(&d).unwrap(), b"precious bytes");

        rot(&dir, &dir.blob_path(&d));
        let mut r = dir.reader(&d).unwrap();
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(matches!(
            crate::blob::unwrap_corrupt(err),
            Ok(CacheError::Corrupt { .. })
        ));
        assert!(!dir.contains(&d));
        dir.put_bytes(b"precious bytes").unwrap();

        rot(&dir, &dir.blob_path(&d));
        let dest = t.path().join("dest");
        fs::write(&dest, b"old").unwrap();
        assert!(matches!(dir.copy_to(&d, &dest), Err(CacheError::Corrupt { .. })));
        assert_eq!(fs::read(&dest).unwrap(), b"old", "dest untouched");
        assert!(!dir.contains(&d));
        assert_eq!(
            sorted_dir(t.path()).unwrap().len(),
            2,
            "no temp file left beside dest"
        );
    }

    /// The trust rule of `Hashed`: a blob this process wrote or verified is read again
    /// without hashing (what it gives up: damage done meanwhile, seen only by a later
    /// process); one it did not hash (another process published it) is hashed on its first
    /// read; one found bad is forgotten, and its repaired copy remembered again.
    #[test]
    fn a_blob_is_hashed_once_per_process_and_again_by_a_later_one() {
        let (t, dir) = store();
        let d = dir.put_bytes(b"precious bytes").unwrap();
        assert!(dir.was_hashed(&d), "written here");
        let later = StoreDir::open(t.path()).unwrap();
        assert!(!later.was_hashed(&d), "published by another process");
        flip_byte(&dir.blob_path(&d));
        assert_eq!(dir.read(&d).unwrap(), b"Precious bytes", "not hashed again");
        assert!(matches!(later.read(&d), Err(CacheError::Corrupt { .. })));
        assert!(!later.was_hashed(&d));
        // Quarantined by the other: here it is missing now, and forgotten.
        assert!(matches!(dir.read(&d), Err(CacheError::Missing { .. })));
        assert!(!dir.was_hashed(&d));
        later.put_bytes(b"precious bytes").unwrap();
        assert_eq!(dir.read(&d).unwrap(), b"precious bytes");
        assert!(dir.was_hashed(&d), "verified by this read");
    }

    #[test]
    fn an_adopted_hashed_file_is_linked_not_copied() {
        let (_t, dir) = store();
        let bytes = b"a verified download".repeat(1000);
        let d = Digest::of(&bytes);
        let mut tmp = dir.scratch_file().unwrap();
        tmp.write_all(&bytes).unwrap();
        let (ino, tmp_path) = (tmp.as_file().metadata().unwrap().ino(), tmp.path().to_owned());
        assert_eq!(dir.adopt_hashed(&d, tmp).unwrap(), bytes.len() as u64);
        let m = fs::metadata(dir.blob_path(&d)).unwrap();
        assert_eq!((m.ino(), m.nlink(), m.mode() & 0o777), (ino, 1, 0o444));
        assert!(!tmp_path.exists(), "its own name is removed");
        assert!(dir.was_hashed(&d));
        assert_eq!(dir.read(&d).unwrap(), bytes);
        // Already stored: the blob stays, the new file goes.
        let mut again = dir.scratch_file().unwrap();
        again.write_all(&bytes).unwrap();
        let again_path = again.path().to_owned();
        assert_eq!(dir.adopt_hashed(&d, again).unwrap(), bytes.len() as u64);
        assert_eq!(fs::metadata(dir.blob_path(&d)).unwrap().ino(), ino);
        assert!(!again_path.exists());
    }

    #[test]
    fn quarantines_are_reported_with_path_and_reason() {
        let (_t, dir) = store();
        let d = dir.put_bytes(b"precious bytes").unwrap();
        let path = dir.blob_path(&d);
        rot(&dir, &path);
        let Err(CacheError::Corrupt { actual, evidence, .. }) = dir.clone().read(&d) else {
            panic!("not corrupt");
        };
        let r = record("k", &[("out", d, 1)]);
        let liar = dir.record_dir(&r.key).join(format!("{}.json", Digest::of(b"zz")));
        fs::create_dir_all(liar.parent().unwrap()).unwrap();
        fs::write(&liar, b"{").unwrap();
        assert!(dir.heads(&r.key).unwrap().is_empty());
        let q = dir.take_quarantined();
        assert_eq!(q.len(), 2, "{q:?}");
        assert_eq!((&q[0].path, &q[0].evidence), (&path, &evidence));
        assert_eq!(
            q[0].reason,
            format!("blob `{d}` is corrupt: its bytes hash to `{actual}`")
        );
        assert_eq!(q[1].path, liar);
        assert!(q[1].reason.contains("is not a valid record"), "{}", q[1].reason);
        assert!(q[1].evidence.exists());
        assert!(dir.take_quarantined().is_empty(), "each is reported once");
    }

    #[test]
    fn records_dedupe_diverge_and_survive_garbage() {
        let (_t, dir) = store();
        let a = dir.put_bytes(b"a").unwrap();
        let b = dir.put_bytes(b"b").unwrap();
        let r1 = record("k", &[("out", a, 1)]);
        let r2 = record("k", &[("out", b, 1)]);
        let missing = record("k", &[("out", Digest::of(b"nope"), 4)]);
        assert!(matches!(
            dir.put_record(&missing),
            Err(CacheError::IncompleteRecord { .. })
        ));
        assert!(dir.records(&r1.key).unwrap().is_empty());

        dir.put_record(&r1).unwrap();
        let mut again = r1.clone();
        again.duration_ms = 7;
        dir.put_record(&again).unwrap();
        assert_eq!(
            dir.records(&r1.key).unwrap(),
            vec![r1.clone()],
            "first writer wins"
        );
        dir.put_record(&r2).unwrap();
        let mut both = vec![r1.clone(), r2.clone()];
        both.sort_by_key(|r| r.outputs_digest());
        assert_eq!(dir.records(&r1.key).unwrap(), both);
        assert_eq!(dir.stats().unwrap().divergent_keys, vec![r1.key]);

        let bad = dir
            .record_dir(&r1.key)
            .join(format!("{}.json", Digest::of(b"zz")));
        fs::write(&bad, b"{not json").unwrap();
        assert_eq!(dir.records(&r1.key).unwrap(), both);
        assert!(!bad.exists());
        assert_eq!(corrupt_count(&dir), 1);
    }

    #[test]
    fn heads_agree_with_records_and_quarantine_the_same_files() {
        let (_t, dir) = store();
        let a = dir.put_bytes(b"a").unwrap();
        let b = dir.put_bytes(b"b").unwrap();
        let r1 = record("k", &[("out", a, 1)]);
        let r2 = record("k", &[("out", b, 1), ("log", a, 1)]);
        assert!(dir.heads(&r1.key).unwrap().is_empty());
        dir.put_record(&r1).unwrap();
        dir.put_record(&r2).unwrap();
        let heads = dir.heads(&r1.key).unwrap();
        let records = dir.records(&r1.key).unwrap();
        assert_eq!(heads.len(), 2);
        for (h, r) in heads.iter().zip(&records) {
            assert_eq!((h.key, &h.outputs), (r.key, &r.outputs));
            assert!(h.used.is_some(), "the mtime comes along with the bytes");
        }

        // Valid JSON whose outputs do not match the file name, and a truncated file: both
        // are quarantined by a head look-up as they would be by a full one.
        let liar = dir
            .record_dir(&r1.key)
            .join(format!("{}.json", Digest::of(b"zz")));
        fs::write(&liar, r1.to_json()).unwrap();
        let cut = dir
            .record_dir(&r1.key)
            .join(format!("{}.json", Digest::of(b"yy")));
        let json = r2.to_json();
        fs::write(&cut, &json[..json.len() / 2]).unwrap();
        assert_eq!(dir.heads(&r1.key).unwrap(), heads);
        assert!(!liar.exists() && !cut.exists());
        assert_eq!(corrupt_count(&dir), 2);

        // Another schema is skipped and kept.
        let foreign = dir
            .record_dir(&r1.key)
            .join(format!("{}.json", Digest::of(b"xx")));
        fs::write(&foreign, br#"{"schema":"w4b.record/9","outputs":[1,2]}"#).unwrap();
        assert_eq!(dir.heads(&r1.key).unwrap(), heads);
        assert!(foreign.exists());
    }

    #[test]
    fn touch_through_a_head_uses_the_mtime_it_read() {
        let (_t, dir) = store();
        let a = dir.put_bytes(b"a").unwrap();
        let r = record("k", &[("out", a, 1)]);
        dir.put_record(&r).unwrap();
        let path = dir.record_path(&r);
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        File::open(&path).unwrap().set_modified(old).unwrap();
        let head = dir.heads(&r.key).unwrap().remove(0);
        assert_eq!(head.used, Some(old));

        // Within the granularity of the mtime read: nothing is written.
        dir.touch(&head, old + TOUCH_GRANULARITY / 2).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), old);
        // Stale: the file is touched.
        let now = old + TOUCH_GRANULARITY * 2;
        dir.touch(&head, now).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), now);
        // A head that knows no mtime (copied from a remote) stats the file instead.
        let later = now + TOUCH_GRANULARITY / 2;
        dir.touch(&RecordHead::from(&r), later).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), now);
    }

    #[test]
    fn meta_replaces_atomically_and_rejects_paths() {
        let (_t, dir) = store();
        assert_eq!(dir.read_meta("state").unwrap(), None);
        dir.write_meta("state", b"one").unwrap();
        dir.write_meta("state", b"two").unwrap();
        assert_eq!(dir.read_meta("state").unwrap().as_deref(), Some(&b"two"[..]));
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                dir.write_meta(bad, b""),
                Err(CacheError::MetaName { .. })
            ));
        }
    }

    #[test]
    fn read_only_directory_is_never_written() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            StoreDir::open_shared_read_only(t.path()),
            Err(CacheError::NotAStore { .. })
        ));
        let rw = StoreDir::open_shared(t.path()).unwrap();
        let d = rw.put_bytes(b"shared").unwrap();
        let ro = StoreDir::open_shared_read_only(t.path()).unwrap();
        assert!(matches!(ro.put_bytes(b"x"), Err(CacheError::ReadOnly { .. })));
        assert!(matches!(
            ro.write_meta("m", b"x"),
            Err(CacheError::ReadOnly { .. })
        ));
        flip_byte(&rw.blob_path(&d));
        assert!(matches!(ro.read(&d), Err(CacheError::Corrupt { .. })));
        assert!(
            rw.blob_path(&d).exists(),
            "a read-only reader does not quarantine"
        );
    }

    /// The blobs and records one writer publishes in the concurrency tests: a shared
    /// part every writer publishes and a part only writer `id` does.
    #[test]
    fn deferred_sync_publishes_every_blob_and_restores_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(tmp.path()).unwrap();
        let digests = dir
            .with_deferred_sync(|| {
                assert!(DEFER_SYNC.with(|d| d.get()));
                // Nested: the inner call neither resets the flag nor syncs early.
                let inner = dir
                    .with_deferred_sync(|| dir.put_bytes(b"inner").unwrap())
                    .unwrap();
                assert!(DEFER_SYNC.with(|d| d.get()));
                let mut v: Vec<Digest> = (0..50)
                    .map(|i| dir.put_bytes(format!("blob {i}").as_bytes()).unwrap())
                    .collect();
                v.push(inner);
                v
            })
            .unwrap();
        assert!(!DEFER_SYNC.with(|d| d.get()));
        for d in &digests {
            assert!(dir.contains(d));
            assert_eq!(Digest::of(&dir.read(d).unwrap()), *d);
        }
        // A panic inside still restores the flag.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dir.with_deferred_sync(|| panic!("boom")).unwrap();
        }));
        assert!(r.is_err());
        assert!(!DEFER_SYNC.with(|d| d.get()));
    }

    fn publish_batch(dir: &StoreDir, id: usize) {
        for i in 0..40 {
            for content in [format!("shared {i}"), format!("own {id} {i}")] {
                let d = dir.put_bytes(content.repeat(i * 50 + 1).as_bytes()).unwrap();
                let r = record(&format!("key {}", i % 10), &[("out", d, 0)]);
                dir.put_record(&r).unwrap();
            }
        }
    }

    fn assert_sound(dir: &StoreDir, writers: usize) {
        let rep = dir.verify(&NoRefs).unwrap();
        assert!(
            rep.corrupt_blobs.is_empty() && rep.invalid_records.is_empty(),
            "{rep:?}"
        );
        assert!(rep.dangling_records.is_empty(), "{rep:?}");
        assert_eq!(rep.blobs_checked, 40 * (writers as u64 + 1));
        assert_eq!(dir.stats().unwrap().tmp_files, 0);
        for i in 0..40 {
            let d = Digest::of(format!("shared {i}").repeat(i * 50 + 1).as_bytes());
            assert!(dir.read(&d).is_ok());
        }
    }

    #[test]
    fn eight_threads_publish_into_one_directory() {
        let (_t, dir) = store();
        std::thread::scope(|s| {
            for id in 0..8 {
                let dir = &dir;
                s.spawn(move || publish_batch(dir, id));
            }
        });
        assert_sound(&dir, 8);
    }

    /// Runs this test binary again, as the named child test, on `root`.
    fn spawn_child(test: &str, root: &Path, id: usize) -> std::process::Child {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env("W4B_CACHE_TEST_ROOT", root)
            .env("W4B_CACHE_TEST_ID", id.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn child_env() -> Option<(StoreDir, usize)> {
        let root = std::env::var_os("W4B_CACHE_TEST_ROOT")?;
        let id = std::env::var("W4B_CACHE_TEST_ID").ok()?.parse().ok()?;
        Some((StoreDir::open_shared(Path::new(&root)).unwrap(), id))
    }

    /// Child half of `two_processes_publish_into_one_directory`; passes trivially when run
    /// directly.
    #[test]
    fn child_publisher() {
        if let Some((dir, id)) = child_env() {
            publish_batch(&dir, id);
        }
    }

    /// Child half of `sigkill_leaves_only_temp_garbage`: publishes until killed.
    #[test]
    fn child_endless_publisher() {
        if let Some((dir, _)) = child_env() {
            for i in 0u64.. {
                let d = dir.put_bytes(&i.to_le_bytes().repeat(4096)).unwrap();
                dir.put_record(&record(&i.to_string(), &[("o", d, 0)])).unwrap();
            }
        }
    }

    #[test]
    fn two_processes_publish_into_one_directory() {
        let (_t, dir) = store();
        let mut kids: Vec<_> = (0..2)
            .map(|id| spawn_child("dir::tests::child_publisher", dir.root(), id))
            .collect();
        publish_batch(&dir, 2);
        for k in &mut kids {
            assert!(k.wait().unwrap().success());
        }
        assert_sound(&dir, 3);
    }

    #[test]
    fn sigkill_leaves_only_temp_garbage() {
        let (_t, dir) = store();
        let mut kid = spawn_child("dir::tests::child_endless_publisher", dir.root(), 0);
        while dir.stats().unwrap().records < 30 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        kid.kill().unwrap();
        kid.wait().unwrap();
        let rep = dir.verify(&NoRefs).unwrap();
        assert!(
            rep.corrupt_blobs.is_empty() && rep.invalid_records.is_empty(),
            "{rep:?}"
        );
        assert!(rep.dangling_records.is_empty());
    }

    #[test]
    fn crash_before_publish_leaves_tmp_garbage_that_gc_cleans() {
        let (_t, dir) = store();
        let mut w = dir.writer().unwrap();
        w.write_all(b"never published").unwrap();
        w.flush().unwrap();
        // What SIGKILL does: no destructor runs.
        std::mem::forget(w);
        let stats = dir.stats().unwrap();
        assert_eq!((stats.tmp_files, stats.blobs), (1, 0));
        assert!(!dir.contains(&Digest::of(b"never published")));
        assert!(dir.verify(&NoRefs).unwrap().blobs_checked == 0);

        let now = SystemTime::now();
        let young = dir.gc(&crate::GcPolicy::new(now), &NoRefs).unwrap();
        assert_eq!(young.tmp_removed, 0, "younger than the grace period");
        let later = now + crate::GcPolicy::DEFAULT_GRACE * 2;
        assert_eq!(
            dir.gc(&crate::GcPolicy::new(later), &NoRefs).unwrap().tmp_removed,
            1
        );
        assert_eq!(dir.stats().unwrap().tmp_files, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn put_read_identity(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (_t, dir) = store();
            let d = dir.put_bytes(&bytes).unwrap();
            prop_assert_eq!(dir.read(&d).unwrap(), bytes);
        }

        #[test]
        fn garbage_record_files_never_panic(garbage in proptest::collection::vec(any::<u8>(), 0..512), json in "\\{\"schema\":\"w4b.record/1\".{0,80}\\}") {
            let (_t, dir) = store();
            let key = Digest::of(b"k");
            fs::create_dir_all(dir.record_dir(&key)).unwrap();
            fs::write(dir.record_dir(&key).join(format!("{}.json", Digest::of(&garbage))), &garbage).unwrap();
            fs::write(dir.record_dir(&key).join("junk"), json.as_bytes()).unwrap();
            prop_assert!(dir.records(&key).unwrap().is_empty());
            dir.verify(&NoRefs).unwrap();
            dir.gc(&crate::GcPolicy::new(SystemTime::UNIX_EPOCH), &NoRefs).unwrap();
        }
    }
}
