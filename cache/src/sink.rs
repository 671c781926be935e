//! [`ChunkSink`]: an output of known length rendered chunk by chunk, in order, straight
//! into the store — no scratch file to write and read back.
//!
//! A filesystem writer that knows every chunk's contents before it renders the next (the
//! ext4 writer renders its metadata in memory and reads each file where it lands) hands
//! the sink one [`CHUNK_SIZE`] chunk at a time: the bytes of a rendered chunk, a zero
//! chunk, or a chunk given by reference (a memo knows its bytes). The sink keeps the
//! rendered ones of a batch of `ADOPT_BATCH` (32) chunks, hashes them on every core, writes
//! those the store lacks as chunk blobs, and on [`commit`](ChunkSink::commit) makes them
//! durable with one `syncfs(2)` and publishes the index. The index, and so the output's
//! name, is the one [`StoreDir::adopt_chunked_with`] gives the same bytes (a fixed index:
//! no flat digests, no trailer), so the two paths are interchangeable.
//!
//! The cost it saves: a 1.1 GiB root image written into a scratch file costs the page-cache
//! copy of every byte twice (into the scratch file, then into the chunk files) and one
//! read back; the profile of a cold build had 53 % of `mkfs-ext4` in the kernel copying
//! written pages. Memory stays at one batch of buffers (32 MiB), reused.

use crate::chunks::{ChunkIndex, ChunkRef, CHUNK_SIZE};
use crate::dir::StoreDir;
use crate::error::CacheError;
use crate::output::ADOPT_BATCH;
use crate::Digest;

/// One chunk of the batch: its entry once known, or the bytes still to hash.
enum Slot {
    Known(ChunkRef),
    Data(Vec<u8>),
}

/// Takes an output of a known length as its chunks, in order; see the module docs.
/// Dropped without [`commit`](Self::commit), the chunks it stored are unreferenced (GC
/// removes them after the grace period).
pub struct ChunkSink {
    dir: StoreDir,
    len: u64,
    /// Bytes taken so far: the offset of the next chunk.
    taken: u64,
    chunks: Vec<ChunkRef>,
    batch: Vec<Slot>,
    /// Rendered chunks in `batch`.
    pending: usize,
    spare: Vec<Vec<u8>>,
    /// Chunks were written unsynced and no enclosing `with_deferred_sync` will sync them.
    owe_sync: bool,
}

impl StoreDir {
    /// A sink for an output of `len` bytes, cut into [`CHUNK_SIZE`] chunks from its
    /// start; see [`ChunkSink`].
    pub fn chunk_sink(&self, len: u64) -> Result<ChunkSink, CacheError> {
        self.writable()?;
        Ok(ChunkSink {
            dir: self.clone(),
            len,
            taken: 0,
            chunks: Vec::with_capacity(usize::try_from(len.div_ceil(u64::from(CHUNK_SIZE))).unwrap_or(0)),
            batch: Vec::with_capacity(ADOPT_BATCH),
            pending: 0,
            spare: Vec::new(),
            owe_sync: false,
        })
    }
}

impl ChunkSink {
    /// The length of the next chunk: [`CHUNK_SIZE`], less for the last; `None` once the
    /// output is complete.
    pub fn next_len(&self) -> Option<u32> {
        let left = self.len.saturating_sub(self.taken);
        // At most `CHUNK_SIZE`, a `u32`.
        (left > 0).then(|| left.min(u64::from(CHUNK_SIZE)) as u32)
    }

    /// The number of the next chunk (its offset over [`CHUNK_SIZE`]).
    pub fn next_chunk(&self) -> u64 {
        self.taken / u64::from(CHUNK_SIZE)
    }

    /// A buffer of zeros as long as the next chunk, reusing one the sink is done with.
    pub fn buffer(&mut self) -> Vec<u8> {
        let len = self.next_len().unwrap_or(0) as usize;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        buf
    }

    fn expect(&self, len: u64) -> Result<u32, CacheError> {
        match self.next_len() {
            Some(n) if u64::from(n) == len => Ok(n),
            expected => Err(CacheError::ChunkLength {
                at: self.taken,
                output: self.len,
                len,
                expected: expected.map_or(0, u64::from),
            }),
        }
    }

    fn push(&mut self, slot: Slot, len: u32) -> Result<(), CacheError> {
        if matches!(slot, Slot::Data(_)) {
            self.pending += 1;
        }
        self.batch.push(slot);
        self.taken += u64::from(len);
        if self.pending >= ADOPT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// The next chunk's bytes, rendered. Stored unless all zeros (a zero chunk) or
    /// already in the store (pinned).
    pub fn put(&mut self, bytes: Vec<u8>) -> Result<(), CacheError> {
        let len = self.expect(bytes.len() as u64)?;
        self.push(Slot::Data(bytes), len)
    }

    /// The next chunk is all zeros: named, never written.
    pub fn zero(&mut self) -> Result<(), CacheError> {
        // Past the end, a chunk of 1 byte is as wrong as any.
        let len = self.expect(self.next_len().map_or(1, u64::from))?;
        self.push(
            Slot::Known(ChunkRef {
                digest: crate::zero_digest(len),
                len,
            }),
            len,
        )
    }

    /// The next chunk is `chunk`, which the caller knows to be stored (a memo hit is
    /// pinned by [`StoreDir::memo_get`]) or all zeros; its length must be the chunk's.
    pub fn given(&mut self, chunk: ChunkRef) -> Result<(), CacheError> {
        let len = self.expect(u64::from(chunk.len))?;
        self.push(Slot::Known(chunk), len)
    }

    /// Hashes the batch's rendered chunks on every core and stores those the store lacks.
    fn flush(&mut self) -> Result<(), CacheError> {
        use rayon::prelude::*;
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.pending = 0;
        let mut hashed: Vec<(ChunkRef, Option<Vec<u8>>)> = batch
            .into_par_iter()
            .map(|slot| match slot {
                Slot::Known(c) => (c, None),
                Slot::Data(bytes) => {
                    let c = ChunkRef {
                        digest: Digest::of(&bytes),
                        // At most `CHUNK_SIZE` (checked by `put`).
                        len: bytes.len() as u32,
                    };
                    (c, Some(bytes))
                }
            })
            .collect();
        // Rendered zeros: named by their digest, never stored, as `adopt_chunked` does.
        for (c, bytes) in &mut hashed {
            if bytes.is_some() && c.is_zero() {
                self.spare.extend(bytes.take());
            }
        }
        let dir = self.dir.clone();
        let (stored, outermost) = crate::dir::unsynced(|| dir.store_hashed(hashed));
        let stored = stored?;
        if stored.written > 0 && outermost {
            self.owe_sync = true;
        }
        self.chunks.extend(stored.refs);
        self.spare.extend(stored.spare);
        self.batch = Vec::with_capacity(ADOPT_BATCH);
        Ok(())
    }

    /// Stores the last batch, makes every chunk durable (one `syncfs(2)`, unless inside
    /// [`StoreDir::with_deferred_sync`] or nothing was written) and publishes the index;
    /// returns its name and the output's length. Fails unless every chunk was given.
    pub fn commit(mut self) -> Result<(Digest, u64), CacheError> {
        if let Some(n) = self.next_len() {
            return Err(CacheError::ChunkLength {
                at: self.taken,
                output: self.len,
                len: 0,
                expected: u64::from(n),
            });
        }
        self.flush()?;
        self.spare.clear();
        if self.owe_sync {
            self.dir.sync_filesystem()?;
        }
        let name = self
            .dir
            .put_index(&ChunkIndex::fixed(std::mem::take(&mut self.chunks)))?;
        Ok((name, self.len))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::dir::tests::store;

    const MIB: usize = CHUNK_SIZE as usize;

    /// 36 MiB + 777 bytes: more than a batch of data chunks, with zero chunks never
    /// written, a chunk of written zeros, a chunk half zeros, and a short tail.
    fn image() -> Vec<u8> {
        let len = 36 * MIB + 777;
        let mut v: Vec<u8> = (0..len).map(|i| (i % 253) as u8 ^ (i >> 20) as u8 | 1).collect();
        for c in [1, 2, 5, 6, 20] {
            v[c * MIB..(c + 1) * MIB].fill(0);
        }
        v[9 * MIB..9 * MIB + MIB / 2].fill(0);
        v
    }

    /// The old way: a scratch file holding `flat` with holes where it is zero and at the
    /// `given` chunks, adopted with them.
    fn adopted(dir: &StoreDir, flat: &[u8], given: &BTreeMap<u64, ChunkRef>) -> Digest {
        let tmp = dir.scratch_file().unwrap();
        tmp.as_file().set_len(flat.len() as u64).unwrap();
        for (c, bytes) in flat.chunks(MIB).enumerate() {
            // Chunk 2 is written although it is zeros: read, found zero, not stored.
            if given.contains_key(&(c as u64)) || (c != 2 && bytes.iter().all(|&b| b == 0)) {
                continue;
            }
            tmp.as_file().write_all_at(bytes, (c * MIB) as u64).unwrap();
        }
        let (d, len) = dir.adopt_chunked_with(tmp, given).unwrap();
        assert_eq!(len, flat.len() as u64);
        d
    }

    /// The new way: every chunk handed to a sink, as a writer does (zero chunks it knows of
    /// as zeros, the others rendered).
    fn sunk(dir: &StoreDir, flat: &[u8], given: &BTreeMap<u64, ChunkRef>) -> Digest {
        let mut sink = dir.chunk_sink(flat.len() as u64).unwrap();
        for (c, bytes) in flat.chunks(MIB).enumerate() {
            assert_eq!(sink.next_chunk(), c as u64);
            assert_eq!(sink.next_len(), Some(bytes.len() as u32));
            if let Some(g) = given.get(&(c as u64)) {
                sink.given(*g).unwrap();
            } else if c != 2 && bytes.iter().all(|&b| b == 0) {
                sink.zero().unwrap();
            } else {
                let mut buf = sink.buffer();
                assert!(buf.len() == bytes.len() && buf.iter().all(|&b| b == 0));
                buf.copy_from_slice(bytes);
                sink.put(buf).unwrap();
            }
        }
        assert_eq!(sink.next_len(), None);
        let (d, len) = sink.commit().unwrap();
        assert_eq!(len, flat.len() as u64);
        d
    }

    fn read_all(dir: &StoreDir, d: &Digest) -> Vec<u8> {
        let mut out = Vec::new();
        dir.open_output(d).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_sink_names_and_stores_what_adopting_the_scratch_file_would() {
        let (_t, dir) = store();
        let flat = image();
        let d = sunk(&dir, &flat, &BTreeMap::new());
        let idx = dir.index(&d).unwrap().unwrap();
        let zeros: Vec<usize> = (0..idx.chunks.len())
            .filter(|&c| idx.chunks[c].is_zero())
            .collect();
        assert_eq!(zeros, [1, 2, 5, 6, 20]);
        assert_eq!(idx.chunks[36].len, 777, "a short tail");
        assert_eq!(dir.stats().unwrap().blobs, 32, "only the data chunks are stored");
        assert_eq!(read_all(&dir, &d), flat);

        // A fresh store: the scratch path gives the same index bytes.
        let (_t2, other) = store();
        assert_eq!(adopted(&other, &flat, &BTreeMap::new()), d);
        assert_eq!(other.index_bytes(&d).unwrap(), dir.index_bytes(&d).unwrap());

        // Again into the same store: nothing but the index name is new, nothing is written.
        let before = dir.published_bytes();
        assert_eq!(sunk(&dir, &flat, &BTreeMap::new()), d);
        assert_eq!(dir.published_bytes(), before);
        assert!(
            std::fs::read_dir(dir.sub("tmp")).unwrap().next().is_none(),
            "no temp files left"
        );
    }

    #[test]
    fn a_sink_inside_deferred_sync_or_dropped_midway_leaves_a_consistent_store() {
        let (_t, dir) = store();
        let flat = image();
        let plain = {
            let (_t2, other) = store();
            sunk(&other, &flat, &BTreeMap::new())
        };
        let d = dir
            .with_deferred_sync(|| sunk(&dir, &flat, &BTreeMap::new()))
            .unwrap();
        assert_eq!(d, plain);
        assert_eq!(read_all(&dir, &d), flat);

        // Abandoned midway: the full batch is stored, nothing is left in `tmp/`, and no
        // index names the partial output.
        let (_t3, fresh) = store();
        let mut sink = fresh.chunk_sink(flat.len() as u64).unwrap();
        for bytes in flat.chunks(MIB).take(33) {
            let mut buf = sink.buffer();
            buf.copy_from_slice(bytes);
            sink.put(buf).unwrap();
        }
        drop(sink);
        assert!(std::fs::read_dir(fresh.sub("tmp")).unwrap().next().is_none());
        assert_eq!(fresh.stats().unwrap().indexes, 0);
        assert_eq!(
            fresh.stats().unwrap().blobs,
            27,
            "the first batch (32 chunks, 5 of them zeros) was stored"
        );
    }

    #[test]
    fn given_chunks_are_named_not_rendered() {
        let (_t, dir) = store();
        let flat = image();
        // Two data chunks and a zero one, known (as from memos) before rendering.
        let mut given = BTreeMap::new();
        for c in [0usize, 6, 36] {
            let end = flat.len().min((c + 1) * MIB);
            given.insert(c as u64, dir.put_chunk(&flat[c * MIB..end]).unwrap());
        }
        let d = sunk(&dir, &flat, &given);
        assert_eq!(adopted(&dir, &flat, &given), d);
        assert_eq!(read_all(&dir, &d), flat);
        let (_t2, other) = store();
        assert_eq!(
            sunk(&other, &flat, &BTreeMap::new()),
            d,
            "the same bytes, the same name"
        );
    }

    #[test]
    fn a_sink_refuses_chunks_of_the_wrong_length_and_an_early_commit() {
        let (_t, dir) = store();
        let code = |e: CacheError| miette::Diagnostic::code(&e).unwrap().to_string();
        let mut sink = dir.chunk_sink(MIB as u64 + 10).unwrap();
        let e = sink.put(vec![1; 10]).unwrap_err();
        assert_eq!(code(e), "w4b::cache::chunk_length");
        sink.put(vec![1; MIB]).unwrap();
        let short = ChunkRef {
            digest: crate::zero_digest(9),
            len: 9,
        };
        assert!(sink.given(short).is_err());
        let early = dir.chunk_sink(10).unwrap().commit().unwrap_err();
        assert_eq!(code(early), "w4b::cache::chunk_length");
        sink.zero().unwrap();
        assert_eq!(sink.next_len(), None);
        assert!(
            sink.zero().is_err() && sink.put(vec![1]).is_err(),
            "nothing past the end"
        );
        let (d, len) = sink.commit().unwrap();
        assert_eq!(len, MIB as u64 + 10);
        let mut flat = vec![1u8; MIB + 10];
        flat[MIB..].fill(0);
        assert_eq!(read_all(&dir, &d), flat);

        // An empty output is the empty index.
        let (e, len) = dir.chunk_sink(0).unwrap().commit().unwrap();
        assert_eq!((e, len), dir.chunked_writer().unwrap().commit().unwrap());
    }
}
