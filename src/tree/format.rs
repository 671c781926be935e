//! The persistent, canonical encodings of directory listings and tree roots (version 1).
//!
//! These bytes are hashed into the identity of every tree and stored in shared caches, so
//! the encoding is specified here and never changed without bumping the version byte at
//! the end of the magic. Decoding is strict: exactly one byte string encodes each value,
//! so equal trees always have equal digests and a non-canonical blob is reported corrupt.
//!
//! Primitives: `u8`; `u32`, `u64`, `i64` little-endian; `str` = `u32` length + UTF-8 bytes;
//! `digest` = 32 raw BLAKE3 bytes.
//!
//! ```text
//! dir blob   = "w4b-dir" 0x01  u32 count  child{count}          (names strictly ascending
//!                                                                by bytes, no trailing bytes)
//! child      = str name  entry                                  (name: no `/`, NUL, `.`, `..`, "")
//! root blob  = "w4b-root" 0x01  entry                           (entry kind must be dir)
//! entry      = u8 tag  payload  u32 mode  u32 uid  u32 gid  i64 mtime
//!              u32 xattr_count  (str name  str-like value){xattr_count}
//!                                                               (mode ⊆ 0o7777; xattr names
//!                                                                strictly ascending, no NUL
//!                                                                or `=`; values are raw bytes
//!                                                                with a u32 length)
//! tag/payload: 1 file     digest content, u64 size
//!              2 dir      digest listing (a dir blob)
//!              3 symlink  str target (non-empty, no NUL)
//!              4 hardlink str target (a normalised absolute tree path, not `/`)
//!              5 chardev  u32 major, u32 minor
//!              6 blockdev u32 major, u32 minor
//!              7 fifo     (nothing)
//!              8 socket   (nothing)
//! ```
//!
//! A tree is named by the digest of its root blob, so the root directory's own mode,
//! owner, mtime and xattrs are part of the tree's identity like every other directory's.

// Decoding runs over untrusted bytes: no unchecked arithmetic (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;

use w4b_cache::Digest;

use super::entry::{entry_problem, Entry, Kind};
use super::path::name_problem;
use super::{TreeError, TreePath};

/// Magic and version of a directory listing blob.
pub const DIR_MAGIC: &[u8; 8] = b"w4b-dir\x01";
/// Magic and version of a tree root blob.
pub const ROOT_MAGIC: &[u8; 9] = b"w4b-root\x01";

/// The digest of the empty listing.
pub fn empty_dir_digest() -> Digest {
    Digest::of(&encode_dir(&BTreeMap::new()))
}

/// Encodes a listing; `BTreeMap<String, _>` iterates in byte order of the names.
pub fn encode_dir(children: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut e = Enc::default();
    e.bytes(DIR_MAGIC);
    e.len(children.len());
    for (name, entry) in children {
        e.str(name);
        e.entry(entry);
    }
    e.0
}

/// Decodes a listing blob named `digest`, in name order.
pub fn decode_dir(digest: Digest, blob: &[u8]) -> Result<Vec<(String, Entry)>, TreeError> {
    let mut d = Dec::new(digest, blob, "directory listing");
    d.magic(DIR_MAGIC)?;
    let count = d.u32()?;
    let mut out: Vec<(String, Entry)> = Vec::new();
    for _ in 0..count {
        let at = d.pos;
        let name = d.str()?;
        if let Some(reason) = name_problem(&name) {
            return Err(d.corrupt_at(at, format!("bad name `{}`: {reason}", name.escape_debug())));
        }
        if let Some((prev, _)) = out.last() {
            if prev.as_bytes() >= name.as_bytes() {
                return Err(d.corrupt_at(at, "names are not strictly ascending".into()));
            }
        }
        let entry = d.entry()?;
        out.push((name, entry));
    }
    d.end()?;
    Ok(out)
}

/// Encodes a root blob for the directory `entry`.
pub fn encode_root(entry: &Entry) -> Vec<u8> {
    let mut e = Enc::default();
    e.bytes(ROOT_MAGIC);
    e.entry(entry);
    e.0
}

/// Decodes a root blob named `digest`.
pub fn decode_root(digest: Digest, blob: &[u8]) -> Result<Entry, TreeError> {
    let mut d = Dec::new(digest, blob, "tree root");
    d.magic(ROOT_MAGIC)?;
    let at = d.pos;
    let entry = d.entry()?;
    if !entry.is_dir() {
        return Err(d.corrupt_at(at, format!("the root is a {}", entry.kind.name())));
    }
    d.end()?;
    Ok(entry)
}

/// The blobs a tree-format blob refers to, for the cache's garbage collector: file
/// contents and child listings of a dir blob, the listing of a root blob, and every
/// content, listing and tree named by a changeset blob. Any other blob (file content,
/// or bytes that do not decode) refers to nothing.
pub fn dir_refs(blob: &[u8]) -> Vec<Digest> {
    let digest = Digest::of(blob);
    if blob.starts_with(DIR_MAGIC) {
        decode_dir(digest, blob)
            .map(|children| children.iter().filter_map(|(_, e)| entry_ref(e)).collect())
            .unwrap_or_default()
    } else if blob.starts_with(ROOT_MAGIC) {
        decode_root(digest, blob)
            .ok()
            .and_then(|e| e.dir_digest())
            .into_iter()
            .collect()
    } else if blob.starts_with(super::layer::CHANGESET_MAGIC) {
        super::layer::Changeset::decode(digest, blob)
            .map(|c| c.refs())
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// The blob an entry names, if any.
pub(super) fn entry_ref(entry: &Entry) -> Option<Digest> {
    match entry.kind {
        Kind::File { digest, .. } | Kind::Dir { digest } => Some(digest),
        _ => None,
    }
}

/// Canonical encoder.
#[derive(Default)]
pub(super) struct Enc(pub(super) Vec<u8>);

impl Enc {
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    /// A count or length. Anything in memory on a 64-bit host fits a `u32` here in
    /// practice; saturating keeps a pathological value from silently wrapping.
    pub(super) fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub(super) fn str(&mut self, s: &str) {
        self.blob(s.as_bytes());
    }
    pub(super) fn blob(&mut self, b: &[u8]) {
        self.len(b.len());
        self.bytes(b);
    }
    pub(super) fn digest(&mut self, d: &Digest) {
        self.bytes(d.as_bytes());
    }
    pub(super) fn entry(&mut self, entry: &Entry) {
        match &entry.kind {
            Kind::File { digest, size } => {
                self.u8(1);
                self.digest(digest);
                self.u64(*size);
            }
            Kind::Dir { digest } => {
                self.u8(2);
                self.digest(digest);
            }
            Kind::Symlink { target } => {
                self.u8(3);
                self.str(target);
            }
            Kind::HardLink { target } => {
                self.u8(4);
                self.str(&target.to_string());
            }
            Kind::CharDev { major, minor } => {
                self.u8(5);
                self.u32(*major);
                self.u32(*minor);
            }
            Kind::BlockDev { major, minor } => {
                self.u8(6);
                self.u32(*major);
                self.u32(*minor);
            }
            Kind::Fifo => self.u8(7),
            Kind::Socket => self.u8(8),
        }
        self.u32(entry.mode);
        self.u32(entry.uid);
        self.u32(entry.gid);
        self.bytes(&entry.mtime.to_le_bytes());
        self.len(entry.xattrs.len());
        for (name, value) in &entry.xattrs {
            self.str(name);
            self.blob(value);
        }
    }
}

/// Strict decoder over untrusted bytes: every failure names the blob and the offset.
pub(super) struct Dec<'a> {
    digest: Digest,
    what: &'static str,
    bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Dec<'a> {
    pub(super) fn new(digest: Digest, bytes: &'a [u8], what: &'static str) -> Dec<'a> {
        Dec {
            digest,
            what,
            bytes,
            pos: 0,
        }
    }

    pub(super) fn corrupt_at(&self, offset: usize, reason: String) -> TreeError {
        TreeError::Corrupt {
            digest: self.digest,
            what: self.what,
            offset,
            reason,
        }
    }

    /// Checks the magic; a known family with another version byte is "unsupported",
    /// anything else "corrupt".
    pub(super) fn magic(&mut self, magic: &[u8]) -> Result<(), TreeError> {
        if self.bytes.starts_with(magic) {
            self.pos = magic.len();
            return Ok(());
        }
        let Some((&version, family)) = magic.split_last() else {
            return Err(self.corrupt_at(0, "wrong magic".into()));
        };
        match self.bytes.get(family.len()) {
            Some(&v) if self.bytes.starts_with(family) && v != version => {
                Err(TreeError::UnsupportedVersion {
                    digest: self.digest,
                    what: self.what,
                    version: v,
                })
            }
            _ => Err(self.corrupt_at(0, "wrong magic".into())),
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], TreeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.corrupt_at(self.pos, format!("truncated: {n} more bytes expected")))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TreeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, TreeError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u32(&mut self) -> Result<u32, TreeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, TreeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(super) fn i64(&mut self) -> Result<i64, TreeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub(super) fn digest(&mut self) -> Result<Digest, TreeError> {
        Ok(Digest(self.array()?))
    }
    pub(super) fn blob(&mut self) -> Result<&'a [u8], TreeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(super) fn str(&mut self) -> Result<String, TreeError> {
        let at = self.pos;
        let b = self.blob()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt_at(at, "text is not UTF-8".into()))
    }
    pub(super) fn path(&mut self) -> Result<TreePath, TreeError> {
        let at = self.pos;
        let s = self.str()?;
        TreePath::parse(&s).map_err(|e| self.corrupt_at(at, e.to_string()))
    }

    pub(super) fn entry(&mut self) -> Result<Entry, TreeError> {
        let at = self.pos;
        let kind = match self.u8()? {
            1 => Kind::File {
                digest: self.digest()?,
                size: self.u64()?,
            },
            2 => Kind::Dir {
                digest: self.digest()?,
            },
            3 => Kind::Symlink { target: self.str()? },
            4 => Kind::HardLink { target: self.path()? },
            5 => Kind::CharDev {
                major: self.u32()?,
                minor: self.u32()?,
            },
            6 => Kind::BlockDev {
                major: self.u32()?,
                minor: self.u32()?,
            },
            7 => Kind::Fifo,
            8 => Kind::Socket,
            tag => return Err(self.corrupt_at(at, format!("unknown entry tag {tag}"))),
        };
        let mode = self.u32()?;
        let uid = self.u32()?;
        let gid = self.u32()?;
        let mtime = self.i64()?;
        let count = self.u32()?;
        let mut xattrs = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..count {
            let name_at = self.pos;
            let name = self.str()?;
            if last.as_ref().is_some_and(|l| l.as_bytes() >= name.as_bytes()) {
                return Err(self.corrupt_at(name_at, "xattr names are not strictly ascending".into()));
            }
            let value = self.blob()?.to_vec();
            last = Some(name.clone());
            xattrs.insert(name, value);
        }
        let entry = Entry {
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };
        if let Some(reason) = entry_problem(&entry) {
            return Err(self.corrupt_at(at, reason));
        }
        Ok(entry)
    }

    pub(super) fn end(&self) -> Result<(), TreeError> {
        if self.pos != self.bytes.len() {
            return Err(self.corrupt_at(self.pos, "trailing bytes".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests index their own fixtures
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, Entry> {
        let mut m = BTreeMap::new();
        let mut f = Entry::file(Digest::of(b"x"), 1, 0o4755);
        f.uid = 1000;
        f.mtime = -5;
        f.xattrs.insert("security.capability".into(), vec![0, 1, 2]);
        f.xattrs.insert("user.a".into(), vec![]);
        m.insert("bin".into(), f);
        m.insert("dir".into(), Entry::dir(0o700));
        m.insert("link".into(), Entry::symlink("../x"));
        m.insert(
            "hl".into(),
            Entry::new(
                Kind::HardLink {
                    target: TreePath::parse("/bin").unwrap(),
                },
                0o755,
            ),
        );
        m.insert(
            "null".into(),
            Entry::new(Kind::CharDev { major: 1, minor: 3 }, 0o666),
        );
        m.insert(
            "sda".into(),
            Entry::new(Kind::BlockDev { major: 8, minor: 0 }, 0o660),
        );
        m.insert("p".into(), Entry::new(Kind::Fifo, 0o600));
        m.insert("s".into(), Entry::new(Kind::Socket, 0o600));
        m
    }

    #[test]
    fn dir_round_trip_and_refs() {
        let m = sample();
        let blob = encode_dir(&m);
        let d = Digest::of(&blob);
        let back: BTreeMap<String, Entry> = decode_dir(d, &blob).unwrap().into_iter().collect();
        assert_eq!(back, m);
        let refs = dir_refs(&blob);
        assert_eq!(refs, vec![Digest::of(b"x"), empty_dir_digest()]);
        assert!(dir_refs(b"plain file content").is_empty());
    }

    #[test]
    fn empty_dir_digest_is_pinned() {
        // The encoding is persistent: this digest may only change with a version bump.
        assert_eq!(
            encode_dir(&BTreeMap::new()),
            b"w4b-dir\x01\x00\x00\x00\x00".to_vec()
        );
        assert_eq!(
            empty_dir_digest().to_hex(),
            Digest::of(b"w4b-dir\x01\x00\x00\x00\x00").to_hex()
        );
        let blob = encode_dir(&sample());
        assert_eq!(
            Digest::of(&blob).to_hex(),
            "82d73d7b370a611d53c4eebb6bd4ebd6c337122a6b0a08334ef44b012047e533"
        );
    }

    #[test]
    fn non_canonical_and_truncated_blobs_are_rejected() {
        let blob = encode_dir(&sample());
        let d = Digest::of(&blob);
        for cut in 0..blob.len() {
            assert!(decode_dir(d, &blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = blob.clone();
        trailing.push(0);
        assert!(matches!(decode_dir(d, &trailing), Err(TreeError::Corrupt { .. })));
        // Swap two names' order by hand: a listing out of order.
        let mut two = BTreeMap::new();
        two.insert("a".to_string(), Entry::dir(0o755));
        two.insert("b".to_string(), Entry::dir(0o755));
        let mut blob = encode_dir(&two);
        let a = 12 + blob[12..].iter().position(|&b| b == b'a').unwrap();
        let b = 12 + blob[12..].iter().position(|&b| b == b'b').unwrap();
        blob.swap(a, b);
        assert!(matches!(
            decode_dir(d, &blob),
            Err(TreeError::Corrupt { reason, .. }) if reason.contains("ascending")
        ));
        let mut v2 = encode_dir(&two);
        v2[7] = 2;
        assert!(matches!(
            decode_dir(d, &v2),
            Err(TreeError::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn root_round_trip() {
        let mut root = Entry::dir(0o755);
        root.mtime = 42;
        let blob = encode_root(&root);
        assert_eq!(decode_root(Digest::of(&blob), &blob).unwrap(), root);
        assert_eq!(dir_refs(&blob), vec![empty_dir_digest()]);
        let not_dir = encode_root(&Entry::new(Kind::Fifo, 0o644));
        assert!(decode_root(Digest::of(&not_dir), &not_dir).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let d = Digest::of(&bytes);
            let _ = decode_dir(d, &bytes);
            let _ = decode_root(d, &bytes);
            let _ = crate::tree::layer::Changeset::decode(d, &bytes);
            let _ = dir_refs(&bytes);
        }

        #[test]
        fn mutated_listings_never_panic(
            edits in proptest::collection::vec((0usize..1024, proptest::prelude::any::<u8>()), 1..8),
        ) {
            let mut blob = encode_dir(&sample());
            for (at, byte) in edits {
                let at = at % blob.len();
                blob[at] = byte;
            }
            let d = Digest::of(&blob);
            if let Ok(children) = decode_dir(d, &blob) {
                // Whatever decodes must be canonical: it re-encodes to the same bytes.
                let map: BTreeMap<String, Entry> = children.into_iter().collect();
                proptest::prop_assert_eq!(encode_dir(&map), blob);
            }
        }
    }
}
