//! `w4b cache stats` and `w4b cache verify`: what is in a store directory, and whether
//! all of it is sound.
//!
//! Stats lists directories and decodes chunk indexes (small: 36 bytes a chunk). Verify
//! rehashes every blob, checks every index against its keyed name, parses every record
//! and checks that each record's outputs, with everything their listings and indexes
//! reference, are present. In a shared directory it also quarantines listings and indexes
//! whose children are gone: uploads skip a subtree whose root is present, so such a hole
//! would otherwise never be refilled.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use crate::dir::StoreDir;
use crate::error::CacheError;
use crate::record::Parsed;
use crate::refs::BlobRefs;
use crate::Digest;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blob files (chunks included) and their bytes.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Chunk index files and their bytes.
    pub indexes: u64,
    pub index_bytes: u64,
    /// What the chunked outputs would take flat: the sum of the indexes' lengths.
    pub logical_bytes: u64,
    /// What they take here: their index files plus the distinct chunks they name that
    /// are present (zero chunks take nothing). `logical_bytes / physical_bytes` is the
    /// deduplication ratio.
    pub physical_bytes: u64,
    pub records: u64,
    pub keys: u64,
    /// Keys with records of different outputs: non-determinism (or, in a shared
    /// directory, a record someone forged). Records of one outputs by several signers
    /// are not divergent.
    pub divergent_keys: Vec<Digest>,
    /// Temp files left by interrupted writers (GC removes them after the grace period).
    pub tmp_files: u64,
    pub tmp_bytes: u64,
    pub corrupt_entries: u64,
    /// Memo files (local only).
    pub memos: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub records_checked: u64,
    /// Blobs whose bytes did not match their name; quarantined.
    pub corrupt_blobs: Vec<Digest>,
    /// Record files that did not parse or did not match their path; quarantined.
    pub invalid_records: Vec<PathBuf>,
    /// Listings with a child missing (quarantined in shared directories).
    pub incomplete_listings: Vec<Digest>,
    pub indexes_checked: u64,
    /// Indexes whose bytes do not give their name, or that do not decode; quarantined.
    pub corrupt_indexes: Vec<Digest>,
    /// Indexes with a chunk missing or corrupt (quarantined in shared directories).
    pub incomplete_indexes: Vec<Digest>,
    /// Memos (kind, key) whose value is gone or corrupt; deleted (a memo is only a hint).
    pub memos_without_value: Vec<(String, Digest)>,
    /// Valid records (key, outputs digest) whose outputs are not all present and complete.
    pub dangling_records: Vec<(Digest, Digest)>,
    pub divergent_keys: Vec<Digest>,
}

impl StoreDir {
    pub fn stats(&self) -> Result<Stats, CacheError> {
        let mut s = Stats::default();
        let mut sizes = BTreeMap::new();
        for b in self.blob_entries()? {
            s.blobs += 1;
            s.blob_bytes += b.size;
            sizes.insert(b.digest, b.size);
        }
        let mut chunks = BTreeSet::new();
        for e in self.index_entries()? {
            s.indexes += 1;
            s.index_bytes += e.size;
            // A bad index is verify's business (and quarantined by this read).
            if let Ok(Some(idx)) = self.index(&e.digest) {
                s.logical_bytes += idx.total_len();
                chunks.extend(idx.chunks.iter().map(|c| c.digest));
            }
        }
        s.physical_bytes = s.index_bytes + chunks.iter().filter_map(|d| sizes.get(d)).sum::<u64>();
        let mut per_key = BTreeMap::<Digest, BTreeSet<Option<Digest>>>::new();
        for e in self.record_entries()? {
            s.records += 1;
            let outputs = crate::dir::record_name(&e.path).map(|n| n.outputs);
            per_key.entry(e.digest).or_default().insert(outputs);
        }
        s.keys = per_key.len() as u64;
        s.divergent_keys = divergent(per_key);
        for path in crate::dir::sorted_dir(&self.sub("tmp"))? {
            if let Ok(m) = std::fs::symlink_metadata(&path) {
                s.tmp_files += 1;
                s.tmp_bytes += m.len();
            }
        }
        s.corrupt_entries = crate::dir::sorted_dir(&self.sub("corrupt"))?.len() as u64;
        s.memos = self.memo_files()?.len() as u64;
        Ok(s)
    }

    pub fn verify(&self, refs: &dyn BlobRefs) -> Result<VerifyReport, CacheError> {
        let mut rep = VerifyReport::default();
        let mut present = BTreeSet::new();
        for b in self.blob_entries()? {
            rep.blobs_checked += 1;
            rep.bytes_checked += b.size;
            let mut reader = match self.reader(&b.digest) {
                Ok(r) => r,
                Err(CacheError::Missing { .. }) => continue,
                Err(e) => return Err(e),
            };
            match io::copy(&mut reader, &mut io::sink()) {
                Ok(_) => {
                    present.insert(b.digest);
                }
                Err(e) => match crate::blob::unwrap_corrupt(e) {
                    Ok(_) => rep.corrupt_blobs.push(b.digest),
                    Err(e) => return Err(crate::error::io_err("read", b.path)(e)),
                },
            }
        }

        // An index is complete when all its stored chunks are present and sound.
        let blobs_present = present.clone();
        for e in self.index_entries()? {
            rep.indexes_checked += 1;
            let idx = match self.index(&e.digest) {
                Ok(Some(idx)) => idx,
                Ok(None) | Err(CacheError::IndexUnsupported { .. }) => continue,
                Err(CacheError::Corrupt { .. } | CacheError::IndexFormat { .. }) => {
                    rep.corrupt_indexes.push(e.digest);
                    continue;
                }
                Err(err) => return Err(err),
            };
            if idx
                .chunks
                .iter()
                .all(|c| c.is_zero() || blobs_present.contains(&c.digest))
            {
                present.insert(e.digest);
                continue;
            }
            rep.incomplete_indexes.push(e.digest);
            if self.is_shared() {
                self.quarantine(
                    &e.path,
                    &format!("{}.incomplete.index", e.digest),
                    None,
                    &format!(
                        "chunk index `{}` names a chunk that is not in the store",
                        e.digest
                    ),
                );
            }
        }

        // A packed blob is present when its pack's table and stream are (`crate::pack`).
        for (pack, table) in self.pack_tables() {
            if present.contains(&pack) && present.contains(&table.stream) {
                present.extend(table.members.iter().map(|(d, _, _)| *d));
            }
        }

        // A listing is complete when all its children are present and complete.
        let mut listings = BTreeMap::new();
        for d in &blobs_present {
            let kids = self.children(d, refs)?;
            if !kids.is_empty() {
                listings.insert(*d, kids);
            }
        }
        let mut complete = present.clone();
        loop {
            let broken: Vec<Digest> = listings
                .iter()
                .filter(|(d, kids)| complete.contains(*d) && kids.iter().any(|k| !complete.contains(k)))
                .map(|(d, _)| *d)
                .collect();
            if broken.is_empty() {
                break;
            }
            for d in broken {
                complete.remove(&d);
                rep.incomplete_listings.push(d);
                if self.is_shared() {
                    self.quarantine(
                        &self.blob_path(&d),
                        &format!("{d}.incomplete"),
                        None,
                        &format!("listing `{d}` names a blob that is not in the store"),
                    );
                }
            }
        }
        rep.incomplete_listings.sort();

        let mut per_key = BTreeMap::<Digest, BTreeSet<Option<Digest>>>::new();
        for e in self.record_entries()? {
            rep.records_checked += 1;
            match self.load_record(&e.digest, &e.path)? {
                Some((Parsed::Valid(r), _)) => {
                    per_key.entry(r.key).or_default().insert(Some(r.outputs_digest()));
                    if r.outputs.values().any(|o| !complete.contains(&o.digest)) {
                        rep.dangling_records.push((r.key, r.outputs_digest()));
                    }
                }
                Some((Parsed::Invalid, _)) => rep.invalid_records.push(e.path),
                Some((Parsed::Foreign, _)) | None => {}
            }
        }
        rep.divergent_keys = divergent(per_key);
        // Against the blobs just verified: a memo of a quarantined value is gone too.
        let (_, removed) = self.prune_memos(Some(&blobs_present))?;
        rep.memos_without_value = removed.into_iter().map(|m| (m.kind, m.key)).collect();
        Ok(rep)
    }
}

/// The keys with more than one distinct outputs digest among their records.
fn divergent<T>(per_key: BTreeMap<Digest, BTreeSet<T>>) -> Vec<Digest> {
    per_key
        .into_iter()
        .filter(|(_, outputs)| outputs.len() > 1)
        .map(|(k, _)| k)
        .collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
mod tests {
    use super::*;
    use crate::dir::tests::{flip_byte, store};
    use crate::record::tests::record;
    use crate::refs::tests::{listing, ListRefs};

    #[test]
    fn verify_finds_corrupt_dangling_incomplete_and_divergent() {
        for shared in [false, true] {
            let t = tempfile::tempdir().unwrap();
            let dir = match shared {
                true => StoreDir::open_shared(t.path()).unwrap(),
                false => StoreDir::open(t.path()).unwrap(),
            };
            let good = dir.put_bytes(b"good").unwrap();
            let rot = dir.put_bytes(b"rot").unwrap();
            let lost = dir.put_bytes(b"lost").unwrap();
            let tree = dir.put_bytes(&listing(&[good, lost])).unwrap();
            let a = record("a", &[("o", good, 4)]);
            let b = record("a", &[("o", rot, 3)]);
            let c = record("c", &[("tree", tree, 0)]);
            for r in [&a, &b, &c] {
                dir.put_record(r).unwrap();
            }
            flip_byte(&dir.blob_path(&rot));
            std::fs::remove_file(dir.blob_path(&lost)).unwrap();

            let rep = dir.verify(&ListRefs).unwrap();
            assert_eq!(rep.blobs_checked, 3);
            assert_eq!(rep.corrupt_blobs, vec![rot]);
            assert_eq!(rep.incomplete_listings, vec![tree]);
            let mut dangling = vec![(b.key, b.outputs_digest()), (c.key, c.outputs_digest())];
            dangling.sort();
            assert_eq!(rep.dangling_records, dangling);
            assert_eq!(rep.divergent_keys, vec![a.key]);
            assert!(!dir.contains(&rot));
            assert_eq!(
                dir.contains(&tree),
                !shared,
                "only shared directories drop incomplete listings"
            );
            let stats = dir.stats().unwrap();
            assert_eq!(stats.corrupt_entries, 1 + shared as u64);
            assert_eq!((stats.records, stats.keys), (3, 2));
        }
    }

    #[test]
    fn one_result_signed_twice_is_not_divergent() {
        let (_t, dir) = store();
        let d = dir.put_bytes(b"x").unwrap();
        let r = record("k", &[("o", d, 1)]);
        for keyid in ["aa", "bb"] {
            let mut s = r.clone();
            s.signature = Some(crate::RecordSignature {
                keyid: keyid.into(),
                sig: "x".into(),
            });
            dir.put_record(&s).unwrap();
        }
        dir.put_record(&r).unwrap();
        let rep = dir.verify(&ListRefs).unwrap();
        assert_eq!(rep.records_checked, 3);
        assert!(
            rep.divergent_keys.is_empty() && rep.invalid_records.is_empty(),
            "{rep:?}"
        );
        let stats = dir.stats().unwrap();
        assert_eq!((stats.records, stats.keys), (3, 1));
        assert!(stats.divergent_keys.is_empty());
        assert_eq!(dir.records(&r.key).unwrap().len(), 3);
    }

    #[test]
    fn clean_store_verifies_clean() {
        let (_t, dir) = store();
        let d = dir.put_bytes(b"x").unwrap();
        dir.put_record(&record("k", &[("o", d, 1)])).unwrap();
        let rep = dir.verify(&ListRefs).unwrap();
        assert_eq!((rep.blobs_checked, rep.records_checked), (1, 1));
        assert_eq!(
            rep,
            VerifyReport {
                blobs_checked: 1,
                bytes_checked: 1,
                records_checked: 1,
                ..Default::default()
            }
        );
    }
}
