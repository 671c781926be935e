//! Memos: sub-step results a producer may reuse, such as "the chunk this recipe renders
//! to" or "the frame this chunk compresses to".
//!
//! A memo maps a key (the caller's `derive_key` of a canonical recipe, with a versioned
//! context per kind) to a value blob, its length and a few kind-specific bytes. It lives at
//! `v1/memo/<kind>/<2 hex>/<64 hex key>` and is
//!
//! - **a hint, never a root:** [`StoreDir::memo_get`] is a hit only while the value blob is
//!   present (a zero chunk always is); GC never keeps a value because a memo names it, and
//!   deletes memos whose value is gone; `verify` reports and deletes them too;
//! - **local only:** a memo cannot be checked without redoing the work, so it is never
//!   published to a shared directory;
//! - **replaceable:** unlike blobs it is not named by its content, so a newer memo for a
//!   key replaces the older one (temp file + `rename(2)`); a reader sees one or the other.
//!   It is not fsynced: a torn memo fails its checksum and is a miss;
//! - **batched** when a step remembers many at once ([`StoreDir::memo_put_many`]): one file
//!   `v1/memo/<kind>/batches/<64 hex BLAKE3 of the file>` holding them all (a cold build
//!   of a 2 GiB image remembers ~3,700 chunks; one file per memo made file creation a
//!   measurable part of it). A memo file for a key wins over a batch; among batches the
//!   newest file wins. GC removes a batch once none of its values is present.
//!
//! The bytes (little-endian; `docs/cache-format.md`, "Memos"):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `magic` = `W4BMEMO\x01` (the last byte is the version) |
//! | 8 | 32 | `key` (must equal the file name) |
//! | 40 | 32 | `value` digest (BLAKE3 of the value blob) |
//! | 72 | 4 | `len`, the value's length |
//! | 76 | 4 | `extra_len` (≤ [`MEMO_EXTRA_MAX`]) |
//! | 80 | `extra_len` | `extra`, kind-specific |
//! | 80 + `extra_len` | 32 | `check`: BLAKE3 `derive_key("w4b-cache memo v1", bytes 0 .. 80 + extra_len)` |

#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::chunks::ChunkRef;
use crate::dir::{sorted_dir, StoreDir};
use crate::error::{io_err, CacheError};
use crate::Digest;

pub const MEMO_MAGIC: [u8; 8] = *b"W4BMEMO\x01";
/// The first bytes of a batch of memos: then, per memo, its length (`u32`) and its bytes.
pub const MEMO_BATCH_MAGIC: [u8; 8] = *b"W4BMEMB\x01";
/// Fewer memos than this are filed one file each by [`StoreDir::memo_put_many`].
pub const MEMO_BATCH_MIN: usize = 16;
/// The `derive_key` context of a memo's trailing checksum.
pub const MEMO_CONTEXT: &str = "w4b-cache memo v1";
/// The most kind-specific bytes a memo carries (a bmap range list, a SHA-256 state).
pub const MEMO_EXTRA_MAX: u32 = 64 * 1024;
const HEADER_LEN: usize = 80;

/// The kind of a memo: a directory name under `v1/memo/`, chosen by the application
/// (w4b: `ext4-chunk`, `fat-chunk`, `disk-edge`, `frame-zstd`, `frame-xz`, `bmap`,
/// `sha256-state`). 1 to 32 characters of `a-z`, `0-9` and `-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemoKind(&'static str);

impl MemoKind {
    pub const fn new(name: &'static str) -> MemoKind {
        MemoKind(name)
    }

    pub fn name(&self) -> &'static str {
        self.0
    }

    fn check(&self) -> Result<&'static str, CacheError> {
        let ok = (1..=32).contains(&self.0.len())
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        match ok {
            true => Ok(self.0),
            false => Err(CacheError::MemoKind { name: self.0.into() }),
        }
    }
}

/// What a memo remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Memo {
    pub value: ChunkRef,
    pub extra: Vec<u8>,
}

impl Memo {
    /// The memo's bytes for `key`.
    fn encode(&self, key: &Digest) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(self.extra.len()).saturating_add(32));
        out.extend_from_slice(&MEMO_MAGIC);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(self.value.digest.as_bytes());
        out.extend_from_slice(&self.value.len.to_le_bytes());
        out.extend_from_slice(&(self.extra.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.extra);
        let check = blake3::derive_key(MEMO_CONTEXT, &out);
        out.extend_from_slice(&check);
        out
    }

    /// Parses memo bytes filed under `key`; `None` for anything malformed (torn, flipped,
    /// filed under another key, another version).
    fn decode(bytes: &[u8], key: &Digest) -> Option<Memo> {
        let body_len = bytes.len().checked_sub(32)?;
        let (body, check) = bytes.split_at_checked(body_len)?;
        if blake3::derive_key(MEMO_CONTEXT, body) != *check {
            return None;
        }
        let magic = body.get(0..8)?;
        let k = body.get(8..40)?;
        let value: [u8; 32] = body.get(40..72)?.try_into().ok()?;
        let len = u32::from_le_bytes(body.get(72..76)?.try_into().ok()?);
        let extra_len = u32::from_le_bytes(body.get(76..80)?.try_into().ok()?);
        let extra = body.get(HEADER_LEN..)?;
        if magic != MEMO_MAGIC
            || k != key.as_bytes()
            || extra.len() != extra_len as usize
            || extra_len > MEMO_EXTRA_MAX
        {
            return None;
        }
        Some(Memo {
            value: ChunkRef {
                digest: Digest(value),
                len,
            },
            extra: extra.to_vec(),
        })
    }
}

/// A memo file found by a walk: one memo, or a batch (whose `key` is the file's name).
pub(crate) struct MemoFile {
    pub kind: String,
    pub key: Digest,
    pub path: PathBuf,
    pub batch: bool,
}

/// Memos held back by [`StoreDir::with_memo_batch`], by kind and key.
pub(crate) type HeldMemos = std::collections::BTreeMap<(MemoKind, Digest), Memo>;

/// The batches of one kind as last listed, shared by every clone of a directory.
#[derive(Debug, Default)]
pub(crate) struct KindBatches {
    listed: Option<std::time::SystemTime>,
    memos: std::collections::BTreeMap<Digest, Memo>,
}

/// Encodes a batch of memos.
fn encode_batch(memos: &[(Digest, Memo)]) -> Vec<u8> {
    let mut out = MEMO_BATCH_MAGIC.to_vec();
    for (key, memo) in memos {
        let bytes = memo.encode(key);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Decodes a batch; `None` when any part is malformed.
fn decode_batch(bytes: &[u8]) -> Option<Vec<(Digest, Memo)>> {
    let mut rest = bytes.strip_prefix(&MEMO_BATCH_MAGIC)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let memo = rest.get(4..4usize.checked_add(len)?)?;
        let key = Digest(memo.get(8..40)?.try_into().ok()?);
        out.push((key, Memo::decode(memo, &key)?));
        rest = rest.get(4usize.checked_add(len)?..)?;
    }
    Some(out)
}

impl StoreDir {
    fn memo_path(&self, kind: MemoKind, key: &Digest) -> Result<PathBuf, CacheError> {
        let hex = key.to_hex();
        Ok(self
            .sub("memo")
            .join(kind.check()?)
            .join(hex.get(..2).unwrap_or_default())
            .join(hex))
    }

    /// Whether `value` is here with its length: what makes a memo naming it a hit.
    fn memo_value_present(&self, value: &ChunkRef) -> bool {
        value.is_zero()
            || fs::metadata(self.blob_path(&value.digest)).is_ok_and(|m| m.len() == u64::from(value.len))
    }

    /// Runs `f` with every [`memo_put`](Self::memo_put) through any clone of this
    /// directory, on any thread, held back and then written by kind with
    /// [`memo_put_many`](Self::memo_put_many) (batches): for a step whose workers remember
    /// one memo each per piece of work. Held-back memos are hits for
    /// [`memo_get`](Self::memo_get) meanwhile. Nested calls leave the writing to the
    /// outermost; `f`'s result is returned even when writing the memos fails, as the
    /// error's alternative.
    pub fn with_memo_batch<T>(&self, f: impl FnOnce() -> T) -> Result<T, CacheError> {
        let outermost = {
            let mut held = self.memo_held().lock().unwrap_or_else(|e| e.into_inner());
            match held.is_some() {
                true => false,
                false => {
                    *held = Some(std::collections::BTreeMap::new());
                    true
                }
            }
        };
        let out = f();
        if !outermost {
            return Ok(out);
        }
        let held = self
            .memo_held()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        let mut by_kind: std::collections::BTreeMap<MemoKind, Vec<(Digest, Memo)>> = Default::default();
        for ((kind, key), memo) in held {
            by_kind.entry(kind).or_default().push((key, memo));
        }
        for (kind, memos) in by_kind {
            self.memo_put_many(kind, &memos)?;
        }
        Ok(out)
    }

    /// Remembers that `key` (of `kind`) gives `value`, replacing an older memo for it.
    /// The value must be stored first (or be a zero chunk).
    pub fn memo_put(
        &self,
        kind: MemoKind,
        key: &Digest,
        value: &ChunkRef,
        extra: &[u8],
    ) -> Result<(), CacheError> {
        let path = self.memo_path(kind, key)?;
        if extra.len() > MEMO_EXTRA_MAX as usize {
            return Err(CacheError::MemoTooLarge {
                len: extra.len() as u64,
            });
        }
        if !self.memo_value_present(value) {
            return Err(CacheError::Missing {
                digest: value.digest,
                root: self.root().to_owned(),
                chunk: None,
            });
        }
        let memo = Memo {
            value: *value,
            extra: extra.to_vec(),
        };
        if let Some(held) = self
            .memo_held()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            held.insert((kind, *key), memo);
            return Ok(());
        }
        let mut tmp = self.tmp_file()?;
        let bytes = memo.encode(key);
        tmp.write_all(&bytes).map_err(io_err("write", tmp.path()))?;
        self.count_published(bytes.len() as u64);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
        }
        tmp.persist(&path)
            .map(drop)
            .map_err(|e| io_err("replace", &path)(e.error))
    }

    /// Remembers many memos of `kind` at once: one batch file (see the module docs), or
    /// a file each when there are fewer than [`MEMO_BATCH_MIN`]. Every value must be
    /// stored first (or be a zero chunk).
    pub fn memo_put_many(&self, kind: MemoKind, memos: &[(Digest, Memo)]) -> Result<(), CacheError> {
        if memos.len() < MEMO_BATCH_MIN {
            for (key, m) in memos {
                self.memo_put(kind, key, &m.value, &m.extra)?;
            }
            return Ok(());
        }
        for (_, m) in memos {
            if m.extra.len() > MEMO_EXTRA_MAX as usize {
                return Err(CacheError::MemoTooLarge {
                    len: m.extra.len() as u64,
                });
            }
            if !self.memo_value_present(&m.value) {
                return Err(CacheError::Missing {
                    digest: m.value.digest,
                    root: self.root().to_owned(),
                    chunk: None,
                });
            }
        }
        let bytes = encode_batch(memos);
        let dir = self.sub("memo").join(kind.check()?).join("batches");
        let path = dir.join(Digest::of(&bytes).to_hex());
        let mut tmp = self.tmp_file()?;
        tmp.write_all(&bytes).map_err(io_err("write", tmp.path()))?;
        self.count_published(bytes.len() as u64);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        tmp.persist(&path)
            .map(drop)
            .map_err(|e| io_err("replace", &path)(e.error))
    }

    /// The memo of `kind` for `key` in a batch, listing the kind's batches again when
    /// their directory changed since the last look.
    fn batched_memo(&self, kind: MemoKind, key: &Digest) -> Result<Option<Memo>, CacheError> {
        let dir = self.sub("memo").join(kind.check()?).join("batches");
        let mut all = self.memo_batches().lock().unwrap_or_else(|e| e.into_inner());
        let batches = all.entry(kind.name()).or_default();
        let mtime = fs::metadata(&dir).and_then(|m| m.modified()).ok();
        if mtime.is_some() && batches.listed != mtime {
            batches.listed = mtime;
            batches.memos.clear();
            // Oldest first, so the newest batch's memo for a key is the one kept.
            let mut files: Vec<(std::time::SystemTime, PathBuf)> = sorted_dir(&dir)?
                .into_iter()
                .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
                .collect();
            files.sort();
            for (_, path) in files {
                if let Some(memos) = self.load_batch(&path)? {
                    batches.memos.extend(memos);
                }
            }
        }
        Ok(batches.memos.get(key).cloned())
    }

    /// Reads and checks one batch file; a malformed one is quarantined. `None` when
    /// absent or malformed.
    fn load_batch(&self, path: &Path) -> Result<Option<Vec<(Digest, Memo)>>, CacheError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<Digest>().ok());
        let actual = Digest::of(&bytes);
        match decode_batch(&bytes).filter(|_| named == Some(actual)) {
            Some(m) => Ok(Some(m)),
            None => {
                self.quarantine(
                    path,
                    &format!("memo-batch-{actual}"),
                    None,
                    "a batch of memos is malformed",
                );
                Ok(None)
            }
        }
    }

    /// The memo for `key` of `kind`, if there is one **and** its value is present. A
    /// malformed memo is quarantined and a miss.
    pub fn memo_get(&self, kind: MemoKind, key: &Digest) -> Result<Option<Memo>, CacheError> {
        let path = self.memo_path(kind, key)?;
        let held = self
            .memo_held()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|h| h.get(&(kind, *key)).cloned());
        let memo = match held {
            Some(m) => Some(m),
            None => match self.load_memo(&path, key)? {
                Some(m) => Some(m),
                None => self.batched_memo(kind, key)?,
            },
        };
        let Some(memo) = memo else {
            return Ok(None);
        };
        // A hit is used at once: its value is pinned, then checked (`crate::lease`).
        let value = memo.value;
        let present = self.memo_value_present(&value)
            && (value.is_zero() || self.pinned(&[value.digest], || self.memo_value_present(&value))?);
        Ok(Some(memo).filter(|_| present))
    }

    /// Reads and checks one memo file; a malformed one is quarantined. `None` when absent
    /// or malformed.
    fn load_memo(&self, path: &Path, key: &Digest) -> Result<Option<Memo>, CacheError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", path)(e)),
        };
        let mut bytes = Vec::new();
        Read::take(&mut file, u64::from(MEMO_EXTRA_MAX).saturating_add(1024))
            .read_to_end(&mut bytes)
            .map_err(io_err("read", path))?;
        match Memo::decode(&bytes, key) {
            Some(m) => Ok(Some(m)),
            None => {
                self.quarantine(
                    path,
                    &format!("memo-{key}.{}", Digest::of(&bytes)),
                    Some(&file),
                    &format!("memo `{key}` is malformed"),
                );
                Ok(None)
            }
        }
    }

    /// Every memo file, by kind then key.
    pub(crate) fn memo_files(&self) -> Result<Vec<MemoFile>, CacheError> {
        let mut out = Vec::new();
        for kind_dir in sorted_dir(&self.sub("memo"))? {
            let Some(kind) = kind_dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            for shard in sorted_dir(&kind_dir)? {
                let batch = shard.file_name().is_some_and(|n| n == "batches");
                for path in sorted_dir(&shard)? {
                    let key = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse().ok());
                    if let Some(key) = key {
                        out.push(MemoFile {
                            kind: kind.clone(),
                            key,
                            path,
                            batch,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes memos that are malformed or whose value is not in `present` (or, with
    /// `None`, not in the store); returns (kept, removed).
    pub(crate) fn prune_memos(
        &self,
        present: Option<&std::collections::BTreeSet<Digest>>,
    ) -> Result<(Vec<MemoFile>, Vec<MemoFile>), CacheError> {
        let (mut kept, mut removed) = (Vec::new(), Vec::new());
        let live_value = |v: &ChunkRef| match present {
            Some(p) => v.is_zero() || p.contains(&v.digest),
            None => self.memo_value_present(v),
        };
        for m in self.memo_files()? {
            if m.batch {
                // Kept whole while any of its values is here; removed, it reports each memo.
                let Some(memos) = self.load_batch(&m.path)? else {
                    continue;
                };
                if memos.iter().any(|(_, memo)| live_value(&memo.value)) {
                    kept.push(m);
                    continue;
                }
                match fs::remove_file(&m.path) {
                    Ok(()) => removed.extend(memos.into_iter().map(|(key, _)| MemoFile {
                        kind: m.kind.clone(),
                        key,
                        path: m.path.clone(),
                        batch: true,
                    })),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &m.path)(e)),
                }
                continue;
            }
            let live = match self.load_memo(&m.path, &m.key)? {
                Some(memo) => match present {
                    Some(p) => memo.value.is_zero() || p.contains(&memo.value.digest),
                    None => self.memo_value_present(&memo.value),
                },
                // Malformed: already quarantined.
                None => {
                    continue;
                }
            };
            if live {
                kept.push(m);
                continue;
            }
            match fs::remove_file(&m.path) {
                Ok(()) => removed.push(m),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &m.path)(e)),
            }
        }
        Ok((kept, removed))
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use crate::dir::tests::{flip_byte, store};
    use crate::{GcPolicy, NoRefs};
    use std::time::{Duration, SystemTime};

    const FRAME: MemoKind = MemoKind::new("frame-zstd");

    /// Pins the layout (`docs/cache-format.md` quotes it).
    #[test]
    fn golden_vector() {
        let memo = Memo {
            value: ChunkRef {
                digest: Digest::of(b"abcd"),
                len: 4,
            },
            extra: b"xy".to_vec(),
        };
        let key = Digest::of(b"recipe");
        let bytes = memo.encode(&key);
        assert_eq!(bytes.len(), 80 + 2 + 32);
        assert_eq!(&bytes[..8], b"W4BMEMO\x01");
        assert_eq!(&bytes[8..40], key.as_bytes());
        assert_eq!(&bytes[40..72], Digest::of(b"abcd").as_bytes());
        assert_eq!(hex::encode(&bytes[72..82]), "04000000020000007879");
        assert_eq!(
            hex::encode(&bytes[82..]),
            "c9b45e2336466cace0db1c611b85c0c922896be968b2749486de9d727d6dd3ed",
            "the checksum is pinned"
        );
        assert_eq!(Memo::decode(&bytes, &key), Some(memo.clone()));
        assert_eq!(
            Memo::decode(&bytes, &Digest::of(b"other")),
            None,
            "filed under another key"
        );
        for n in 0..bytes.len() {
            assert_eq!(Memo::decode(&bytes[..n], &key), None);
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert_eq!(Memo::decode(&b, &key), None, "flip at {at}");
        }
    }

    #[test]
    fn a_memo_hits_only_while_its_value_is_present() {
        let (_t, dir) = store();
        let key = Digest::of(b"chunk 7 at level 3");
        assert_eq!(dir.memo_get(FRAME, &key).unwrap(), None);
        let absent = ChunkRef {
            digest: Digest::of(b"frame"),
            len: 5,
        };
        assert!(matches!(
            dir.memo_put(FRAME, &key, &absent, b""),
            Err(CacheError::Missing { .. })
        ));
        let v = dir.put_chunk(b"frame").unwrap();
        dir.memo_put(FRAME, &key, &v, b"seek").unwrap();
        let hit = dir.memo_get(FRAME, &key).unwrap().unwrap();
        assert_eq!((hit.value, &hit.extra[..]), (v, &b"seek"[..]));
        assert_eq!(
            dir.memo_get(MemoKind::new("frame-xz"), &key).unwrap(),
            None,
            "kinds are separate"
        );
        // A newer memo replaces the old one.
        let w = dir.put_chunk(b"frame 2").unwrap();
        dir.memo_put(FRAME, &key, &w, b"").unwrap();
        assert_eq!(dir.memo_get(FRAME, &key).unwrap().unwrap().value, w);

        // The value gone: a miss, though the memo file is still there.
        fs::remove_file(dir.blob_path(&w.digest)).unwrap();
        assert_eq!(dir.memo_get(FRAME, &key).unwrap(), None);
        // A zero chunk is always present.
        let zero = dir.put_chunk(&[0; 4096]).unwrap();
        dir.memo_put(FRAME, &key, &zero, b"").unwrap();
        assert_eq!(dir.memo_get(FRAME, &key).unwrap().unwrap().value, zero);

        assert!(matches!(
            dir.memo_put(MemoKind::new("../x"), &key, &zero, b""),
            Err(CacheError::MemoKind { .. })
        ));
        assert!(matches!(
            dir.memo_put(FRAME, &key, &zero, &vec![0; MEMO_EXTRA_MAX as usize + 1]),
            Err(CacheError::MemoTooLarge { .. })
        ));
        assert_eq!(dir.stats().unwrap().memos, 1);
    }

    #[test]
    fn a_malformed_memo_is_a_quarantined_miss() {
        let (_t, dir) = store();
        let key = Digest::of(b"k");
        let v = dir.put_chunk(b"value").unwrap();
        dir.memo_put(FRAME, &key, &v, b"").unwrap();
        let path = dir.memo_path(FRAME, &key).unwrap();
        flip_byte(&path);
        assert_eq!(dir.memo_get(FRAME, &key).unwrap(), None);
        assert!(!path.exists());
        assert_eq!(dir.take_quarantined().len(), 1);
    }

    /// A value that rots is quarantined on read; its memo then misses, and GC (which
    /// never keeps a value for a memo) deletes the memo.
    #[test]
    fn gc_prunes_memos_whose_value_is_gone_and_keeps_no_value_alive() {
        let (_t, dir) = store();
        let (k1, k2) = (Digest::of(b"one"), Digest::of(b"two"));
        let rotten = dir.put_chunk(b"rotten frame").unwrap();
        let orphan = dir.put_chunk(b"orphan frame").unwrap();
        dir.memo_put(FRAME, &k1, &rotten, b"").unwrap();
        dir.memo_put(FRAME, &k2, &orphan, b"").unwrap();
        crate::dir::tests::rot(&dir, &dir.blob_path(&rotten.digest));
        assert!(matches!(
            dir.read(&rotten.digest),
            Err(CacheError::Corrupt { .. })
        ));
        assert_eq!(dir.memo_get(FRAME, &k1).unwrap(), None);

        let now = SystemTime::now();
        let rep = dir.gc(&GcPolicy::new(now), &NoRefs).unwrap();
        assert_eq!((rep.memos_removed, rep.memos_kept), (1, 1));
        assert!(dir.memo_get(FRAME, &k2).unwrap().is_some(), "its value is young");
        // Past the grace period the unreferenced value goes, memo or not, then its memo.
        let rep = dir
            .gc(&GcPolicy::new(now + Duration::from_secs(2 * 86_400)), &NoRefs)
            .unwrap();
        assert_eq!((rep.blobs_removed, rep.memos_removed, rep.memos_kept), (1, 1, 0));
        assert!(!dir.contains(&orphan.digest));
        assert!(dir.memo_files().unwrap().is_empty());
    }

    #[test]
    fn a_batch_is_one_file_read_like_memo_files_and_collected_whole() {
        let (_t, dir) = store();
        let values: Vec<ChunkRef> = (0..40u32)
            .map(|i| dir.put_chunk(format!("frame {i}").as_bytes()).unwrap())
            .collect();
        let memos: Vec<(Digest, Memo)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let memo = Memo {
                    value: *v,
                    extra: vec![i as u8],
                };
                (Digest::of(format!("recipe {i}").as_bytes()), memo)
            })
            .collect();
        // Below the threshold: a file each.
        dir.memo_put_many(FRAME, &memos[..3]).unwrap();
        assert_eq!(dir.memo_files().unwrap().len(), 3);
        dir.memo_put_many(FRAME, &memos).unwrap();
        let files = dir.memo_files().unwrap();
        assert_eq!(files.iter().filter(|f| f.batch).count(), 1);
        assert_eq!(dir.stats().unwrap().memos, 4);
        // Another handle (another process) reads them all from the batch.
        let other = StoreDir::open(dir.root()).unwrap();
        for (key, memo) in &memos {
            assert_eq!(other.memo_get(FRAME, key).unwrap().as_ref(), Some(memo));
        }
        assert_eq!(
            other.memo_get(MemoKind::new("frame-xz"), &memos[5].0).unwrap(),
            None
        );
        // A memo file for a key wins over the batch.
        dir.memo_put(FRAME, &memos[5].0, &values[6], b"newer").unwrap();
        assert_eq!(
            other.memo_get(FRAME, &memos[5].0).unwrap().unwrap().extra,
            b"newer"
        );

        // One value left: the batch stays; none: GC removes it, reporting its memos.
        for v in &values[..39] {
            fs::remove_file(dir.blob_path(&v.digest)).unwrap();
        }
        let now = SystemTime::now();
        dir.gc(&GcPolicy::new(now), &NoRefs).unwrap();
        assert_eq!(dir.memo_files().unwrap().iter().filter(|f| f.batch).count(), 1);
        assert_eq!(
            other.memo_get(FRAME, &memos[0].0).unwrap(),
            None,
            "value gone: a miss"
        );
        assert!(other.memo_get(FRAME, &memos[39].0).unwrap().is_some());
        fs::remove_file(dir.blob_path(&values[39].digest)).unwrap();
        let rep = dir.verify(&NoRefs).unwrap();
        assert_eq!(rep.memos_without_value.len(), 40, "the batch's 40 memos");
        assert!(dir.memo_files().unwrap().iter().all(|f| !f.batch));
    }

    #[test]
    fn memos_put_in_a_batch_scope_on_any_thread_are_held_then_written_as_one_file() {
        let (_t, dir) = store();
        let values: Vec<ChunkRef> = (0..32u32)
            .map(|i| dir.put_chunk(format!("f{i}").as_bytes()).unwrap())
            .collect();
        let out = dir
            .with_memo_batch(|| {
                std::thread::scope(|s| {
                    for half in values.chunks(16) {
                        let dir = dir.clone();
                        s.spawn(move || {
                            for v in half {
                                dir.memo_put(FRAME, &v.digest, v, b"").unwrap();
                            }
                        });
                    }
                });
                // Held, not yet written, and already hits.
                assert!(dir.memo_files().unwrap().is_empty());
                dir.memo_get(FRAME, &values[3].digest).unwrap().map(|m| m.value)
            })
            .unwrap();
        assert_eq!(out, Some(values[3]));
        let files = dir.memo_files().unwrap();
        assert_eq!((files.len(), files[0].batch), (1, true));
        let other = StoreDir::open(dir.root()).unwrap();
        assert!(values
            .iter()
            .all(|v| other.memo_get(FRAME, &v.digest).unwrap().map(|m| m.value) == Some(*v)));
    }

    #[test]
    fn a_damaged_batch_is_a_quarantined_miss() {
        let (_t, dir) = store();
        let memos: Vec<(Digest, Memo)> = (0..20u32)
            .map(|i| {
                let memo = Memo {
                    value: dir.put_chunk(format!("v{i}").as_bytes()).unwrap(),
                    extra: Vec::new(),
                };
                (Digest::of(&i.to_le_bytes()), memo)
            })
            .collect();
        dir.memo_put_many(FRAME, &memos).unwrap();
        let batch = dir.memo_files().unwrap().remove(0);
        flip_byte(&batch.path);
        assert_eq!(dir.memo_get(FRAME, &memos[3].0).unwrap(), None);
        assert!(!batch.path.exists());
        assert_eq!(dir.take_quarantined().len(), 1);
    }

    #[test]
    fn verify_reports_and_removes_memos_whose_value_is_gone() {
        let (_t, dir) = store();
        let key = Digest::of(b"k");
        let v = dir.put_chunk(b"value").unwrap();
        dir.memo_put(FRAME, &key, &v, b"").unwrap();
        assert!(dir.verify(&NoRefs).unwrap().memos_without_value.is_empty());
        flip_byte(&dir.blob_path(&v.digest));
        let rep = dir.verify(&NoRefs).unwrap();
        assert_eq!(rep.corrupt_blobs, vec![v.digest]);
        assert_eq!(rep.memos_without_value, vec![("frame-zstd".to_owned(), key)]);
        assert!(dir.memo_files().unwrap().is_empty());
    }
}
