//! Digests of input files and directories (layer sources, templates), with a stat cache
//! so a no-op rebuild re-hashes nothing.
//!
//! The cache maps an absolute path to `(size, mtime, ctime, inode) → BLAKE3`. An entry is
//! trusted only while all four match, and never when the file changed less than
//! [`RACY_WINDOW_NS`] before the cache was written (a write in the same timestamp tick
//! could otherwise go unnoticed — git calls this "racily clean"). Paths live only in this
//! local cache, never in keys: keys see the digest.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use w4b_cache::Digest;

/// Files modified within this window before the cache was saved are re-hashed next time.
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    schema: String,
    /// ctime-clock reading (ns) of the cache file when it was written.
    saved_at_ns: i128,
    entries: BTreeMap<PathBuf, (Stamp, Digest)>,
}

/// Thread-safe stat cache, loaded once per build and saved at the end.
#[derive(Default)]
pub struct StatCache {
    old: BTreeMap<PathBuf, (Stamp, Digest)>,
    saved_at_ns: i128,
    new: Mutex<BTreeMap<PathBuf, (Stamp, Digest)>>,
    pub hashed_bytes: std::sync::atomic::AtomicU64,
}

const SCHEMA: &str = "w4b.statcache/1";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InputError {
    #[error("cannot read `{path}`")]
    #[diagnostic(code(w4b::inputs::read))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is neither a regular file, a directory nor a symlink")]
    #[diagnostic(
        code(w4b::inputs::special_file),
        help("layer sources may contain only files, directories and symlinks")
    )]
    Special { path: PathBuf },
}

impl StatCache {
    pub fn from_bytes(bytes: Option<&[u8]>) -> StatCache {
        let saved: Saved = bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .filter(|s: &Saved| s.schema == SCHEMA)
            .unwrap_or_default();
        StatCache {
            old: saved.entries,
            saved_at_ns: saved.saved_at_ns,
            ..StatCache::default()
        }
    }

    /// Serialises the entries used in this build; `now_ns` is the ctime of a freshly
    /// written file, so only the filesystem's clock is consulted.
    pub fn to_bytes(&self, now_ns: i128) -> Vec<u8> {
        let entries = self.new.lock().map(|m| m.clone()).unwrap_or_default();
        let saved = Saved {
            schema: SCHEMA.into(),
            saved_at_ns: now_ns,
            entries,
        };
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// BLAKE3 of a file's bytes.
    pub fn file(&self, path: &Path) -> Result<Digest, InputError> {
        let err = |source| InputError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(err)?;
        let stamp = Stamp::of(&meta);
        if let Some((s, d)) = self.old.get(path) {
            if *s == stamp && stamp.mtime_ns < self.saved_at_ns - RACY_WINDOW_NS {
                self.remember(path, stamp, *d);
                return Ok(*d);
            }
        }
        let mut f = fs::File::open(path).map_err(err)?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            h.update(&buf[..n]);
        }
        self.hashed_bytes
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        let d = Digest::from(h.finalize());
        self.remember(path, stamp, d);
        Ok(d)
    }

    fn remember(&self, path: &Path, stamp: Stamp, d: Digest) {
        if let Ok(mut m) = self.new.lock() {
            m.insert(path.to_path_buf(), (stamp, d));
        }
    }

    /// A digest of a file or of a whole directory tree as a layer source sees it: relative
    /// names (sorted), type, the executable bit, symlink targets and content digests.
    /// Host owners, mtimes and other permission bits are not part of it, because the
    /// layer does not copy them.
    pub fn tree(&self, root: &Path) -> Result<Digest, InputError> {
        let mut h = blake3::Hasher::new_derive_key("w4b 2026-11-26 source tree digest v1");
        self.tree_into(root, Path::new(""), &mut h)?;
        Ok(Digest::from(h.finalize()))
    }

    fn tree_into(&self, path: &Path, rel: &Path, h: &mut blake3::Hasher) -> Result<(), InputError> {
        let err = |source| InputError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::symlink_metadata(path).map_err(err)?;
        let name = rel.as_os_str().as_encoded_bytes();
        let ft = meta.file_type();
        let (tag, payload): (u8, Vec<u8>) = if ft.is_symlink() {
            let t = fs::read_link(path).map_err(err)?;
            (b'l', t.as_os_str().as_encoded_bytes().to_vec())
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let d = self.file(path)?;
            let mut p = d.as_bytes().to_vec();
            p.push(exec as u8);
            (b'f', p)
        } else if ft.is_dir() {
            (b'd', Vec::new())
        } else {
            return Err(InputError::Special {
                path: path.to_path_buf(),
            });
        };
        h.update(&[tag]);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        h.update(&(payload.len() as u64).to_le_bytes());
        h.update(&payload);
        if ft.is_dir() {
            let mut children: Vec<_> = fs::read_dir(path)
                .map_err(err)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            children.sort();
            for c in children {
                self.tree_into(&path.join(&c), &rel.join(&c), h)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_not_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, b"hello").unwrap();
        // Pretend the file is old so it is not racy.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let c = StatCache::default();
        let d = c.file(&f).unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        let saved = c.to_bytes(i128::MAX / 2);
        let c2 = StatCache::from_bytes(Some(&saved));
        assert_eq!(c2.file(&f).unwrap(), d);
        assert_eq!(c2.hashed_bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
        // A change of content (and size) is noticed.
        fs::write(&f, b"hello!").unwrap();
        assert_eq!(c2.file(&f).unwrap(), Digest::of(b"hello!"));
    }

    #[test]
    fn racy_entries_are_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, b"x").unwrap();
        let c = StatCache::default();
        c.file(&f).unwrap();
        let c2 = StatCache::from_bytes(Some(&c.to_bytes(0)));
        c2.file(&f).unwrap();
        assert_eq!(c2.hashed_bytes.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn tree_digest_ignores_host_metadata_but_not_exec_bit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/f"), b"1").unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("l")).unwrap();
        let c = StatCache::default();
        let a = c.tree(&root).unwrap();
        fs::set_permissions(root.join("sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.tree(&root).unwrap(), a);
        fs::set_permissions(root.join("sub/f"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_ne!(c.tree(&root).unwrap(), a);
    }
}
