//! Build leases and pins: what keeps a garbage collection, in this process or another,
//! from deleting what a running build looked up, opened or is writing.
//!
//! A lease is the file `v1/leases/<pid>.<nonce>`, created when a build starts and held
//! with an exclusive `flock(2)` until it ends. A dead process's lock vanishes with it, so
//! a lease GC can lock is stale, and GC deletes it. The first line is the start time by
//! the filesystem's clock (the new file's mtime, so hosts and containers with skewed
//! clocks agree with the mtimes GC compares it to); the lines after it are **pins**, one
//! digest each: the key and outputs of every cache hit, and every entry the build found
//! already stored when it went to write it.
//!
//! ```text
//! w4b-lease/1 <start, ns since the epoch> <pid>
//! <64 hex digest>
//! …
//! ```
//!
//! "Pin, then check": a pin is appended while holding `v1/lock` shared, and the presence
//! check that follows runs under the same lock. GC reads the pins with `v1/lock`
//! exclusive, so either it sees the pin (and keeps the entry with everything it reaches)
//! or the build sees the entry gone (and treats it as a miss). A pin costs about four
//! system calls (lock, write, check, unlock) and no fsync: a crash ends the lease anyway.
//!
//! What a build writes is protected by time instead: GC keeps every entry whose mtime is
//! at or after the oldest live lease's start, minus a minute.

use std::collections::BTreeSet;
use std::fs::{self, File, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::dir::{sorted_dir, StoreDir};
use crate::error::{io_err, CacheError};
use crate::Digest;

/// The first word of a lease file.
pub const LEASE_MAGIC: &str = "w4b-lease/1";

/// Slack below the oldest live lease's start within which GC still keeps what it finds:
/// an entry written just before the lease was taken (by the same build's planning) is not
/// worth the risk.
pub const LEASE_SLACK: Duration = Duration::from_secs(60);

/// A live lease of this process: the locked file pins are appended to.
#[derive(Debug)]
pub(crate) struct Active {
    id: String,
    path: PathBuf,
    /// The lease file, locked exclusively; a mutex so one pin and its check run at a time
    /// (the shared lock on `v1/lock` belongs to the open file, not to a thread).
    file: Mutex<File>,
    /// `v1/lock`, taken shared around each pin and its check.
    lock: File,
    /// What the store had published when the lease began (see [`StoreDir::published_bytes`]).
    published_at_start: u64,
}

/// A build's hold on a local store (see the module docs). Dropping it ends the lease:
/// the bytes the build published are added to the usage counters (`v1/usage/<id>`) and
/// the lease file goes. Shared and read-only directories have empty leases.
#[derive(Debug)]
pub struct Lease {
    dir: StoreDir,
    active: Option<Arc<Active>>,
}

/// What GC and `cache stats` read of the leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseScan {
    /// Leases whose process is still running.
    pub live: u64,
    /// Leases whose process is gone: removed by GC, counted by `stats`.
    pub stale: u64,
    /// The earliest start among live leases.
    pub oldest_start: Option<SystemTime>,
    /// Every digest a live lease pinned.
    pub pins: BTreeSet<Digest>,
}

impl Lease {
    /// `<pid>.<nonce>`, the name of the lease file and of the build's usage delta.
    pub fn id(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.id.as_str())
    }

    /// Ends the lease now, reporting a failure to record the usage delta (dropping the
    /// lease does the same silently).
    pub fn finish(mut self) -> Result<(), CacheError> {
        self.end()
    }

    fn end(&mut self) -> Result<(), CacheError> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        self.dir.set_active_lease(None);
        let delta = self
            .dir
            .published_bytes()
            .saturating_sub(active.published_at_start);
        let written = self.dir.write_usage_delta(&active.id, delta);
        // The delta first: a GC between the two sees the bytes counted, never lost.
        let removed = fs::remove_file(&active.path);
        drop(active);
        written?;
        match removed {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("remove", self.dir.sub("leases"))(e)),
            _ => Ok(()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

impl StoreDir {
    /// Begins a build's lease (see the module docs) and attaches it to this directory
    /// and every clone of it, so their look-ups and writes pin what they find. A
    /// directory that already has a live lease gets an empty one: the first lease covers
    /// the whole process.
    pub fn lease(&self) -> Result<Lease, CacheError> {
        let empty = Lease {
            dir: self.clone(),
            active: None,
        };
        if self.is_shared() || self.is_read_only() || self.active_lease().is_some() {
            return Ok(empty);
        }
        // Made and locked in `tmp/`, then renamed into `leases/`: GC never sees an
        // unlocked lease that is still being born.
        let tmp = tempfile::Builder::new()
            .prefix("lease-")
            .tempfile_in(self.sub("tmp"))
            .map_err(io_err("create a temp file in", self.sub("tmp")))?;
        let nonce = tmp
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("lease-"))
            .unwrap_or("0")
            .to_owned();
        let id = format!("{}.{nonce}", std::process::id());
        let path = self.sub("leases").join(&id);
        lock_now(tmp.as_file(), tmp.path())?;
        let start = tmp
            .as_file()
            .metadata()
            .and_then(|m| m.modified())
            .map_err(io_err("stat", tmp.path()))?;
        let start_ns = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut file = tmp.persist(&path).map_err(|e| io_err("create", &path)(e.error))?;
        writeln!(file, "{LEASE_MAGIC} {start_ns} {}", std::process::id()).map_err(io_err("write", &path))?;
        let active = Arc::new(Active {
            id,
            path,
            file: Mutex::new(file),
            lock: self.lock_file()?,
            published_at_start: self.published_bytes(),
        });
        self.set_active_lease(Some(active.clone()));
        Ok(Lease {
            dir: self.clone(),
            active: Some(active),
        })
    }

    /// Pins `digests` in this process's lease, then runs `check` while still holding
    /// `v1/lock` shared ("pin, then check"; see the module docs). Without a lease it just
    /// runs `check`. `check` must not pin.
    pub fn pinned<T>(&self, digests: &[Digest], check: impl FnOnce() -> T) -> Result<T, CacheError> {
        let Some(active) = self.active_lease() else {
            return Ok(check());
        };
        let lock_path = || self.sub("lock");
        let mut file = active.file.lock().unwrap_or_else(|e| e.into_inner());
        active.lock.lock_shared().map_err(io_err("lock", lock_path()))?;
        let mut lines = String::with_capacity(digests.len() * 65);
        for d in digests {
            lines.push_str(&d.to_hex());
            lines.push('\n');
        }
        let written = file.write_all(lines.as_bytes());
        let out = written.is_ok().then(check);
        let unlocked = active.lock.unlock();
        drop(file);
        written.map_err(io_err("write", &active.path))?;
        unlocked.map_err(io_err("unlock", lock_path()))?;
        // `out` is `Some` whenever the write succeeded.
        out.ok_or_else(|| io_err("write", &active.path)(ErrorKind::Other.into()))
    }

    /// Reads every lease: live ones give their start and pins, stale ones are counted
    /// and, with `remove_stale`, deleted. GC calls this holding `v1/lock` exclusive, so no
    /// pin is half written.
    pub fn scan_leases(&self, remove_stale: bool) -> Result<LeaseScan, CacheError> {
        let mut scan = LeaseScan::default();
        for path in sorted_dir(&self.sub("leases"))? {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open", path)(e)),
            };
            match file.try_lock() {
                Ok(()) => {
                    // Nobody holds it: its build is gone.
                    scan.stale += 1;
                    if remove_stale {
                        match fs::remove_file(&path) {
                            Err(e) if e.kind() != ErrorKind::NotFound => {
                                return Err(io_err("remove", path)(e))
                            }
                            _ => {}
                        }
                    }
                    continue;
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_err("lock", path)(e)),
            }
            scan.live += 1;
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(io_err("read", &path))?;
            let (start, pins) = parse_lease(&text);
            // A header that does not parse (a newer format): its file's mtime is no
            // later than the build's start.
            let start = match start {
                Some(s) => s,
                None => file
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            };
            scan.oldest_start = Some(scan.oldest_start.map_or(start, |o| o.min(start)));
            scan.pins.extend(pins);
        }
        Ok(scan)
    }

    /// This process's live lease, if any.
    pub(crate) fn active_lease(&self) -> Option<Arc<Active>> {
        self.lease_slot()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_active_lease(&self, active: Option<Arc<Active>>) {
        *self.lease_slot().write().unwrap_or_else(|e| e.into_inner()) = active;
    }

    /// Takes `v1/lock` exclusive, trying for at most `wait`; [`CacheError::Busy`] when a
    /// build of an older w4b (which holds it shared for its whole run) does not let go.
    pub(crate) fn lock_exclusive(&self, wait: Duration) -> Result<File, CacheError> {
        let lock = self.lock_file()?;
        try_lock_for(&lock, &self.sub("lock"), wait, self.root())?;
        Ok(lock)
    }
}

/// Locks a file just created; nobody else can hold it.
fn lock_now(file: &File, path: &Path) -> Result<(), CacheError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(io_err("lock", path)(ErrorKind::WouldBlock.into())),
        Err(TryLockError::Error(e)) => Err(io_err("lock", path)(e)),
    }
}

/// Polls for an exclusive lock on `lock` for at most `wait`.
pub(crate) fn try_lock_for(lock: &File, path: &Path, wait: Duration, root: &Path) -> Result<(), CacheError> {
    const STEP: Duration = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if waited < wait => {
                std::thread::sleep(STEP);
                waited += STEP;
            }
            Err(TryLockError::WouldBlock) => {
                return Err(CacheError::Busy {
                    root: root.to_owned(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", path)(e)),
        }
    }
}

/// A lease's start (when its header parses) and its pins; a torn last line is skipped.
fn parse_lease(text: &str) -> (Option<SystemTime>, Vec<Digest>) {
    let mut lines = text.split_inclusive('\n');
    let start = lines.next().and_then(|header| {
        let mut words = header.split_whitespace();
        (words.next() == Some(LEASE_MAGIC)).then_some(())?;
        let ns: u128 = words.next()?.parse().ok()?;
        let secs = u64::try_from(ns / 1_000_000_000).ok()?;
        let nanos = u32::try_from(ns % 1_000_000_000).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    });
    let pins = lines
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| l.parse().ok())
        .collect();
    (start, pins)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
mod tests {
    use super::*;
    use crate::dir::tests::store;

    #[test]
    fn a_lease_pins_and_ends_with_a_usage_delta() {
        let (_t, dir) = store();
        let lease = dir.lease().unwrap();
        let id = lease.id().unwrap().to_owned();
        assert!(id.starts_with(&format!("{}.", std::process::id())));
        assert!(dir.lease().unwrap().id().is_none(), "one lease per process");
        let d = dir.put_bytes(b"new bytes").unwrap();
        let seen = dir.pinned(&[d], || dir.contains(&d)).unwrap();
        assert!(seen);
        let scan = dir.scan_leases(false).unwrap();
        assert_eq!((scan.live, scan.stale), (1, 0));
        assert!(scan.pins.contains(&d));
        let start = scan.oldest_start.unwrap();
        let mtime = fs::metadata(dir.sub("leases").join(&id))
            .unwrap()
            .modified()
            .unwrap();
        assert!(start <= mtime);

        lease.finish().unwrap();
        assert_eq!(dir.scan_leases(false).unwrap(), LeaseScan::default());
        let usage = dir.usage().unwrap();
        assert_eq!(usage.deltas, 9, "the blob's bytes");
        assert_eq!(usage.delta_files, 1);
    }

    #[test]
    fn a_lease_whose_process_is_gone_is_stale_and_removed() {
        let (_t, dir) = store();
        // What a killed build leaves: a lease file nobody holds.
        let path = dir.sub("leases").join("4194304.dead01");
        fs::write(&path, format!("{LEASE_MAGIC} 1 4194304\n{}\n", Digest::of(b"x"))).unwrap();
        let scan = dir.scan_leases(false).unwrap();
        assert_eq!((scan.live, scan.stale), (0, 1));
        assert!(scan.pins.is_empty(), "a stale lease pins nothing");
        assert!(path.exists(), "stats only counts");
        dir.scan_leases(true).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_torn_pin_is_ignored() {
        let d = Digest::of(b"x");
        let (start, pins) = parse_lease(&format!("{LEASE_MAGIC} 1500000000 7\n{d}\n{}", &d.to_hex()[..10]));
        assert_eq!(start, Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)));
        assert_eq!(pins, vec![d]);
        assert_eq!(parse_lease("other 1 2\n").0, None);
    }
}
