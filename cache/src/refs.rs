//! Blobs that name other blobs, and the closure of a set of roots.
//!
//! The store knows nothing of trees, but GC and upload must: a directory listing in a
//! Merkle tree keeps its children alive and must travel with them. The application
//! describes such blobs through [`BlobRefs`]; only blobs that start with its magic bytes
//! are read whole, so large file contents are never parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use crate::dir::StoreDir;
use crate::error::CacheError;
use crate::pack::{PackTable, PACK_MAGIC};
use crate::Digest;

/// Application hook: which blobs reference other blobs, and which.
pub trait BlobRefs {
    /// Blobs starting with these bytes are parsed by [`refs`](Self::refs). Empty means
    /// no blob references another.
    fn magic(&self) -> &[u8];
    /// The digests a blob starting with the magic names. The bytes are verified but
    /// otherwise untrusted: return what parses, never panic.
    fn refs(&self, blob: &[u8]) -> Vec<Digest>;
}

/// For stores whose blobs reference nothing.
pub struct NoRefs;

impl BlobRefs for NoRefs {
    fn magic(&self) -> &[u8] {
        b""
    }
    fn refs(&self, _: &[u8]) -> Vec<Digest> {
        Vec::new()
    }
}

impl StoreDir {
    /// The digests `d` references; empty for leaves. A chunk index references its
    /// stored chunks (every one but the zero chunks), natively, before the hook is asked.
    /// Reads only the magic's length unless the blob is a listing, which is then read
    /// whole and verified.
    pub(crate) fn children(&self, d: &Digest, refs: &dyn BlobRefs) -> Result<Vec<Digest>, CacheError> {
        if let Some(idx) = self.index(d)? {
            let mut kids: Vec<Digest> = idx
                .chunks
                .iter()
                .filter(|c| !c.is_zero())
                .map(|c| c.digest)
                .collect();
            kids.sort();
            kids.dedup();
            return Ok(kids);
        }
        let magic = refs.magic();
        let want = magic.len().max(PACK_MAGIC.len());
        let head = match self.open_raw(d) {
            Ok(file) => {
                let mut head = Vec::with_capacity(want);
                file.take(want as u64)
                    .read_to_end(&mut head)
                    .map_err(crate::error::io_err("read", self.blob_path(d)))?;
                head
            }
            // A packed blob is small: read whole (and verified) at once.
            Err(e @ CacheError::Missing { .. }) => {
                let bytes = self.read_packed(d).unwrap_or(Err(e))?;
                return Ok(match !magic.is_empty() && bytes.starts_with(magic) {
                    true => refs.refs(&bytes),
                    false => Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        // A pack's table names its stream, natively (`crate::pack`).
        if head.starts_with(PACK_MAGIC) {
            if let Some(t) = PackTable::decode(&self.read(d)?) {
                return Ok(vec![t.stream]);
            }
        }
        if magic.is_empty() || !head.starts_with(magic) {
            return Ok(Vec::new());
        }
        Ok(refs.refs(&self.read(d)?))
    }

    /// Every present, readable blob reachable from `roots`. Missing or corrupt blobs are
    /// left out (and the corrupt ones quarantined); `memo` caches children across calls.
    pub(crate) fn closure(
        &self,
        roots: impl IntoIterator<Item = Digest>,
        refs: &dyn BlobRefs,
        memo: &mut BTreeMap<Digest, Vec<Digest>>,
    ) -> Result<BTreeSet<Digest>, CacheError> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Digest> = roots.into_iter().collect();
        while let Some(d) = stack.pop() {
            if seen.contains(&d) {
                continue;
            }
            let kids = match memo.get(&d) {
                Some(k) => k.clone(),
                None => match self.children(&d, refs) {
                    Ok(mut k) => {
                        // A packed blob keeps its packs (their tables, streams, chunks).
                        if !self.blob_path(&d).is_file() {
                            k.extend(self.packed(&d).into_iter().map(|m| m.pack));
                        }
                        memo.insert(d, k.clone());
                        k
                    }
                    Err(CacheError::Missing { .. } | CacheError::Corrupt { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            seen.insert(d);
            stack.extend(kids);
        }
        Ok(seen)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
pub(crate) mod tests {
    use super::*;

    /// Test listing format: `LIST` then 32-byte digests.
    pub(crate) struct ListRefs;

    impl BlobRefs for ListRefs {
        fn magic(&self) -> &[u8] {
            b"LIST"
        }
        fn refs(&self, blob: &[u8]) -> Vec<Digest> {
            blob[4..]
                .chunks_exact(32)
                .filter_map(|c| c.try_into().ok().map(Digest))
                .collect()
        }
    }

    pub(crate) fn listing(children: &[Digest]) -> Vec<u8> {
        let mut b = b"LIST".to_vec();
        for c in children {
            b.extend_from_slice(c.as_bytes());
        }
        b
    }

    #[test]
    fn closure_follows_listings_only() {
        let t = tempfile::tempdir().unwrap();
        let dir = StoreDir::open(t.path()).unwrap();
        let leaf = dir.put_bytes(b"leaf").unwrap();
        // A leaf whose bytes look like digests must not be followed.
        let fake = dir.put_bytes(&[7u8; 64]).unwrap();
        let inner = dir.put_bytes(&listing(&[leaf, Digest::of(b"absent")])).unwrap();
        let top = dir.put_bytes(&listing(&[inner, fake])).unwrap();
        let got = dir.closure([top], &ListRefs, &mut BTreeMap::new()).unwrap();
        assert_eq!(got, BTreeSet::from([top, inner, leaf, fake]));
        assert_eq!(
            dir.closure([top], &NoRefs, &mut BTreeMap::new()).unwrap(),
            BTreeSet::from([top])
        );
    }
}
