//! Chunked outputs in a store directory: storing chunks and indexes, writing a stream or
//! adopting a finished sparse scratch file as chunks, and reading any output (plain blob
//! or index) with verified random access.
//!
//! The format lives in [`crate::chunks`]; this module owns the files. Indexes are
//! published like blobs (temp file, `link(2)`, never overwritten) under
//! `v1/indexes/<2 hex>/<64 hex>`, and every read checks the keyed name, so a flipped bit in
//! an index is a quarantined miss exactly as in a blob. An index is only stored once all
//! its chunks are ([`StoreDir::put_index`]), so a local index is complete unless a chunk
//! rotted or was deleted behind the store's back; [`OutputReader`] then reports the output
//! as missing or corrupt, naming the chunk, and the producing step runs again.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::chunks::{name_of, ChunkIndex, ChunkRef, FlatDigests, CHUNK_SIZE};
use crate::dir::StoreDir;
use crate::error::{io_err, CacheError, ChunkAt};
use crate::remote::Remote;
use crate::Digest;
use std::sync::Arc;

/// Decoded chunks an [`OutputReader`] keeps: enough for a filesystem reader that hops
/// between a superblock, a group table and the block it is reading.
const CACHED_CHUNKS: usize = 4;

impl StoreDir {
    /// Whether index `d` exists; says nothing about its bytes or its chunks.
    pub fn contains_index(&self, d: &Digest) -> bool {
        self.index_path(d).is_file()
    }

    /// Whether `d` names a blob or an index here.
    pub fn contains_output(&self, d: &Digest) -> bool {
        self.contains(d) || self.contains_index(d)
    }

    /// Stores one chunk as a blob, unless it is all zeros: zero chunks are never written
    /// (readers produce them), only named by [`zero_digest`](crate::zero_digest).
    pub fn put_chunk(&self, bytes: &[u8]) -> Result<ChunkRef, CacheError> {
        let len = u32::try_from(bytes.len()).map_err(|_| CacheError::ChunkTooLarge {
            len: bytes.len() as u64,
        })?;
        if bytes.iter().all(|&b| b == 0) {
            return Ok(ChunkRef {
                digest: crate::zero_digest(len),
                len,
            });
        }
        Ok(ChunkRef {
            digest: self.put_bytes(bytes)?,
            len,
        })
    }

    /// Stores `idx` and returns its name. Refuses ([`CacheError::IncompleteIndex`]) while
    /// any chunk but a zero one is missing, so a local index is complete when stored, and
    /// refuses an index that breaks the format's rules.
    pub fn put_index(&self, idx: &ChunkIndex) -> Result<Digest, CacheError> {
        let bytes = idx.encode();
        // The same checks a reader applies: nothing stored here fails to decode.
        ChunkIndex::decode(&bytes)?;
        let name = name_of(&bytes);
        for (position, c) in idx.chunks.iter().enumerate() {
            if !c.is_zero() && !self.contains(&c.digest) {
                return Err(CacheError::IncompleteIndex {
                    index: name,
                    chunk: c.digest,
                    position: position as u64,
                });
            }
        }
        self.write_index_bytes(&name, &bytes)?;
        Ok(name)
    }

    /// Publishes index bytes under `name` without checking its chunks: for an index
    /// copied from a remote (its chunks are fetched when read) or uploaded after them.
    pub(crate) fn write_index_bytes(&self, name: &Digest, bytes: &[u8]) -> Result<u64, CacheError> {
        let dest = self.index_path(name);
        if self.present_pinned(name, &dest)? {
            return Ok(bytes.len() as u64);
        }
        let mut tmp = self.tmp_file()?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        self.publish(tmp, &dest)?;
        Ok(bytes.len() as u64)
    }

    /// The bytes of index `d`, checked against its keyed name; `None` if absent. A
    /// mismatch quarantines the file and is [`CacheError::Corrupt`].
    pub(crate) fn index_bytes(&self, d: &Digest) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.index_path(d);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", path)(e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err("read", &path))?;
        let actual = name_of(&bytes);
        if actual != *d {
            let evidence = self.quarantine(
                &path,
                &format!("{d}.{actual}.index"),
                Some(&file),
                &format!("chunk index `{d}` is corrupt: its bytes name `{actual}`"),
            );
            return Err(CacheError::Corrupt {
                expected: *d,
                actual,
                evidence,
                chunk: None,
            });
        }
        Ok(Some(bytes))
    }

    /// Index `d`, verified (its bytes must produce its keyed name) and decoded; `None` if
    /// there is no such index (it may still be a blob). A well-named index that does not
    /// decode is quarantined unless it is merely of a newer version.
    pub fn index(&self, d: &Digest) -> Result<Option<ChunkIndex>, CacheError> {
        let Some(bytes) = self.index_bytes(d)? else {
            return Ok(None);
        };
        match ChunkIndex::decode(&bytes) {
            Ok(idx) => Ok(Some(idx)),
            Err(e @ CacheError::IndexUnsupported { .. }) => Err(e),
            Err(e) => {
                self.quarantine(
                    &self.index_path(d),
                    &format!("{d}.malformed.index"),
                    None,
                    &format!("chunk index `{d}` is malformed: {e}"),
                );
                Err(e)
            }
        }
    }

    /// A writer that cuts what it is given into [`CHUNK_SIZE`] chunks and stores them;
    /// [`ChunkedWriter::commit`] stores the index.
    pub fn chunked_writer(&self) -> Result<ChunkedWriter, CacheError> {
        self.writable()?;
        Ok(ChunkedWriter {
            dir: self.clone(),
            buf: Vec::with_capacity(CHUNK_SIZE as usize),
            size: CHUNK_SIZE,
            chunks: Vec::new(),
            flat: None,
        })
    }

    /// Publishes a finished scratch file ([`scratch_file`](Self::scratch_file)), possibly
    /// sparse, as a chunked output: cut into [`CHUNK_SIZE`] chunks aligned to its start,
    /// stored as chunk blobs and an index. Returns the index's name and the logical length
    /// — the same name [`chunked_writer`](Self::chunked_writer) gives the same bytes.
    ///
    /// For a filesystem image whose layout keeps a change local, a rebuild then costs the
    /// chunks that changed, not the image:
    /// - holes (found with `SEEK_DATA`/`SEEK_HOLE`) become zero chunks without being read,
    ///   and a chunk read as all zeros is a zero chunk too; neither is ever stored;
    /// - the other chunks are read with `pread` and hashed on every core, in batches of
    ///   `ADOPT_BATCH` (32) chunks, so memory stays bounded whatever the file's size;
    /// - only chunks the store lacks are written (a present one is pinned, as by
    ///   [`put_chunk`](Self::put_chunk)), without an `fsync` each: one `syncfs(2)` makes
    ///   them all durable before the index is published (fsynced, as every entry is), and
    ///   none is needed when every chunk was already stored. Inside
    ///   [`with_deferred_sync`](Self::with_deferred_sync) the chunks and the index are
    ///   both left to that call's `syncfs`.
    ///
    /// The scratch file itself is never synced: it is deleted before the `syncfs`, so its
    /// dirty pages (the whole image, on a fast rebuild still in the page cache) are dropped
    /// rather than written back.
    ///
    /// Measured (release, a 1,773 MiB file holding 400 MiB of random data in 400 chunks,
    /// 2 busy cores, 5 rounds): with 4 chunks changed since the last adopt, 0.18–0.38 s
    /// against 1.5–4.7 s for [`adopt`](Self::adopt); 0.8–1.6 s while the scratch file was
    /// still linked during the `syncfs`. Cold, 0.8–2.6 s against 1.6–3.9 s.
    pub fn adopt_chunked(&self, tmp: NamedTempFile) -> Result<(Digest, u64), CacheError> {
        self.adopt_chunked_with(tmp, &std::collections::BTreeMap::new())
    }

    /// [`adopt_chunked`](Self::adopt_chunked), with the chunks at the positions `given`
    /// names taken as given instead of read: a writer that skipped them because it knew
    /// their bytes (a memo) left holes there. The caller vouches for each given chunk's
    /// length and keeps it stored (a memo hit is pinned by [`StoreDir::memo_get`]).
    pub fn adopt_chunked_with(
        &self,
        tmp: NamedTempFile,
        given: &std::collections::BTreeMap<u64, ChunkRef>,
    ) -> Result<(Digest, u64), CacheError> {
        self.writable()?;
        let (len, chunks, must_sync) = {
            let (file, path) = (tmp.as_file(), tmp.path());
            let len = file.metadata().map_err(io_err("read", path))?.len();
            let data = data_extents(file, len).map_err(io_err("read", path))?;
            let spans = chunk_spans(len, &data);
            let (stored, outermost) = crate::dir::unsynced(|| -> Result<_, CacheError> {
                let mut chunks = Vec::with_capacity(spans.len());
                let mut written = 0usize;
                for batch in spans.chunks(ADOPT_BATCH) {
                    let (refs, n) = self.adopt_batch(file, path, batch, given)?;
                    chunks.extend(refs);
                    written += n;
                }
                Ok((chunks, written))
            });
            let (chunks, written) = stored?;
            (len, chunks, written > 0 && outermost)
        };
        drop(tmp);
        if must_sync {
            self.sync_filesystem()?;
        }
        let name = self.put_index(&ChunkIndex::fixed(chunks))?;
        Ok((name, len))
    }

    /// Hashes one batch of chunks in parallel and stores those the store lacks; returns
    /// the batch's entries and how many chunks it wrote.
    fn adopt_batch(
        &self,
        file: &File,
        path: &Path,
        batch: &[ChunkSpan],
        given: &std::collections::BTreeMap<u64, ChunkRef>,
    ) -> Result<(Vec<ChunkRef>, usize), CacheError> {
        use rayon::prelude::*;
        let hashed: Vec<(ChunkRef, Option<Vec<u8>>)> = batch
            .par_iter()
            .map(|span| -> io::Result<(ChunkRef, Option<Vec<u8>>)> {
                if let Some(c) = given.get(&(span.start / u64::from(CHUNK_SIZE))) {
                    if c.len != span.len {
                        return Err(io::Error::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "a given chunk of {} bytes at {} of a {}-byte chunk",
                                c.len, span.start, span.len
                            ),
                        ));
                    }
                    return Ok((*c, None));
                }
                let zero = ChunkRef {
                    digest: crate::zero_digest(span.len),
                    len: span.len,
                };
                if !span.data {
                    return Ok((zero, None));
                }
                let mut buf = vec![0u8; span.len as usize];
                file.read_exact_at(&mut buf, span.start)?;
                let c = ChunkRef {
                    digest: Digest::of(&buf),
                    len: span.len,
                };
                // Written zeros: named by their digest, as a hole is (comparing digests
                // costs nothing more, where a byte scan is slow in unoptimised builds).
                match c == zero {
                    true => Ok((zero, None)),
                    false => Ok((c, Some(buf))),
                }
            })
            .collect::<io::Result<_>>()
            .map_err(io_err("read", path))?;
        let stored = self.store_hashed(hashed)?;
        Ok((stored.refs, stored.written))
    }

    /// Stores the chunks of `hashed` that carry bytes and that the store lacks (one pin,
    /// and one lock, for every chunk already stored), in order, unsynced when the caller
    /// runs inside [`unsynced`](crate::dir::unsynced).
    pub(crate) fn store_hashed(
        &self,
        hashed: Vec<(ChunkRef, Option<Vec<u8>>)>,
    ) -> Result<Stored, CacheError> {
        let stored: Vec<Digest> = hashed
            .iter()
            .filter(|(_, bytes)| bytes.is_some())
            .map(|(c, _)| c.digest)
            .filter(|d| self.contains(d))
            .collect();
        let kept: Vec<Digest> = match stored.is_empty() {
            true => Vec::new(),
            false => self.pinned(&stored, || {
                stored.iter().copied().filter(|d| self.contains(d)).collect()
            })?,
        };
        let mut out = Vec::with_capacity(hashed.len());
        let mut spare = Vec::new();
        let mut written = 0;
        for (c, bytes) in hashed {
            if let Some(bytes) = bytes {
                if !kept.contains(&c.digest) {
                    let tmp = self.tmp_file()?;
                    crate::dir::write_sparse(tmp.as_file(), &bytes).map_err(io_err("write", tmp.path()))?;
                    if self.publish(tmp, &self.blob_path(&c.digest))? {
                        self.note_hashed(&c.digest);
                    }
                    written += 1;
                }
                spare.push(bytes);
            }
            out.push(c);
        }
        Ok(Stored {
            refs: out,
            written,
            spare,
        })
    }

    /// Opens output `d`, an index or a plain blob, for verified random access.
    pub fn open_output(&self, d: &Digest) -> Result<OutputReader, CacheError> {
        OutputReader::open(self.clone(), None, d)
    }
}

/// What [`StoreDir::store_hashed`] did with a batch.
pub(crate) struct Stored {
    /// The batch's entries, in order.
    pub refs: Vec<ChunkRef>,
    /// Chunks written (the others were zero, given, or already stored).
    pub written: usize,
    /// The buffers of the chunks that carried bytes, for reuse.
    pub spare: Vec<Vec<u8>>,
}

/// Chunks [`StoreDir::adopt_chunked`] reads, hashes and holds at once: 32 MiB of buffers at
/// most, whatever the file's size, and enough work per batch for every core.
pub(crate) const ADOPT_BATCH: usize = 32;

/// One chunk of a scratch file: where it starts, its length, and whether any of it is
/// data rather than a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChunkSpan {
    start: u64,
    len: u32,
    data: bool,
}

/// The data extents of `file` (`[start, end)`, ascending), found with `SEEK_DATA` and
/// `SEEK_HOLE`. A filesystem that cannot tell holes from data is all data.
fn data_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom as At};
    use rustix::io::Errno;
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let start = match seek(file, At::Data(at)) {
            Ok(s) => s,
            // Only holes from `at` to the end.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) if at == 0 => return Ok(vec![(0, len)]),
            Err(e) => return Err(e.into()),
        };
        if start >= len {
            break;
        }
        let end = seek(file, At::Hole(start))?.min(len);
        if end <= start {
            // Not a hole after all: read the rest rather than loop.
            out.push((start, len));
            break;
        }
        out.push((start, end));
        at = end;
    }
    Ok(out)
}

/// A file of `len` bytes cut into [`CHUNK_SIZE`] spans from offset 0, each marked by
/// whether it overlaps one of the ascending `data` extents.
fn chunk_spans(len: u64, data: &[(u64, u64)]) -> Vec<ChunkSpan> {
    let size = u64::from(CHUNK_SIZE);
    let mut spans = Vec::with_capacity(usize::try_from(len.div_ceil(size)).unwrap_or(0));
    let mut next = 0;
    let mut start = 0;
    while start < len {
        let end = start.saturating_add(size).min(len);
        while data.get(next).is_some_and(|&(_, e)| e <= start) {
            next += 1;
        }
        spans.push(ChunkSpan {
            start,
            // At most `CHUNK_SIZE`, a `u32`.
            len: (end - start) as u32,
            data: data.get(next).is_some_and(|&(s, _)| s < end),
        });
        start = end;
    }
    spans
}

/// Streams an output into the store as chunks of [`CHUNK_SIZE`], aligned to its start.
/// Dropped without [`commit`](Self::commit), the chunks it stored are unreferenced (GC
/// removes them after the grace period).
pub struct ChunkedWriter {
    dir: StoreDir,
    buf: Vec<u8>,
    /// The chunks' length ([`CHUNK_SIZE`] unless [`with_chunk_size`](Self::with_chunk_size)).
    size: u32,
    chunks: Vec<ChunkRef>,
    flat: Option<blake3::Hasher>,
}

impl ChunkedWriter {
    /// Also computes the BLAKE3 of the whole stream and records it in the index (one more
    /// hash pass over every byte: only for outputs someone reads it of).
    pub fn with_flat_blake3(mut self) -> ChunkedWriter {
        self.flat = Some(blake3::Hasher::new());
        self
    }

    /// Cuts chunks of `size` bytes instead: fewer, larger files for a stream that is never
    /// compared chunk by chunk with another (a pack's, `crate::pack`).
    pub fn with_chunk_size(mut self, size: u32) -> ChunkedWriter {
        self.size = size.max(1);
        self.buf = Vec::with_capacity(self.size as usize);
        self
    }

    fn cut(&mut self) -> Result<(), CacheError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let c = self.dir.put_chunk(&self.buf)?;
        self.chunks.push(c);
        self.buf.clear();
        Ok(())
    }

    /// Stores the last chunk and the index; returns the index's name and the logical
    /// length.
    pub fn commit(mut self) -> Result<(Digest, u64), CacheError> {
        self.cut()?;
        let idx = ChunkIndex {
            chunk_size: self.size,
            chunks: std::mem::take(&mut self.chunks),
            trailer: false,
            flat: FlatDigests {
                blake3: self.flat.take().map(|h| *h.finalize().as_bytes()),
                sha256: None,
            },
        };
        let name = self.dir.put_index(&idx)?;
        Ok((name, idx.total_len()))
    }
}

impl Write for ChunkedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = (self.size as usize).saturating_sub(self.buf.len());
        let n = data.len().min(room);
        let part = &data[..n];
        self.buf.extend_from_slice(part);
        if let Some(h) = &mut self.flat {
            h.update(part);
        }
        if self.buf.len() == self.size as usize {
            self.cut()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Read + Seek over an output, whatever its form. Every byte it returns was verified
/// first: a plain blob is hashed whole when opened, an index's chunks are each hashed
/// when loaded (the last [`CACHED_CHUNKS`] are kept), and zero chunks cost no I/O.
///
/// A chunk that is missing or corrupt (quarantined) fails the read with an `io::Error`
/// of kind [`ErrorKind::InvalidData`] wrapping [`CacheError::Missing`] or
/// [`CacheError::Corrupt`] for the **index** digest, with the chunk in `chunk`; recover it
/// with [`OutputReader::cache_error`]. Callers treat it as the output being unavailable.
pub struct OutputReader {
    digest: Digest,
    local: StoreDir,
    remote: Option<Arc<dyn Remote>>,
    len: u64,
    pos: u64,
    kind: Kind,
}

enum Kind {
    Blob(File),
    Index {
        idx: ChunkIndex,
        starts: Vec<u64>,
        /// Most recently used first.
        cache: Vec<(usize, Vec<u8>)>,
        /// With [`OutputReader::rereading_verified`]: which chunks were hashed once already.
        verified: Option<Vec<bool>>,
    },
}

impl OutputReader {
    /// Opens `d` in `local`, reading through to `remote` (if any) for what is missing or
    /// corrupt there: the index when it is first opened, each chunk when first read.
    pub(crate) fn open(
        local: StoreDir,
        remote: Option<Arc<dyn Remote>>,
        d: &Digest,
    ) -> Result<OutputReader, CacheError> {
        let idx = match (local.index(d), &remote) {
            (Ok(Some(idx)), _) => Some(idx),
            (Ok(None) | Err(CacheError::Corrupt { .. }), Some(r)) => match r.index(d)? {
                Some(idx) => {
                    local.write_index_bytes(d, &idx.encode())?;
                    Some(idx)
                }
                None => None,
            },
            (Ok(None), None) => None,
            (Err(e), _) => return Err(e),
        };
        let (len, kind) = match idx {
            Some(idx) => (
                idx.total_len(),
                Kind::Index {
                    starts: idx.starts(),
                    idx,
                    cache: Vec::with_capacity(CACHED_CHUNKS),
                    verified: None,
                },
            ),
            None => {
                let (file, len) = open_verified_blob(&local, remote.as_deref(), d)?;
                (len, Kind::Blob(file))
            }
        };
        Ok(OutputReader {
            digest: *d,
            local,
            remote,
            len,
            pos: 0,
            kind,
        })
    }

    /// For readers that hop across far more chunks than the reader keeps (a filesystem
    /// walk): each chunk is still hashed in full the first time it is loaded, but when it is
    /// needed again after being evicted, only the bytes asked for are read from its file,
    /// without hashing it again. What this gives up is noticing a chunk file that changes
    /// *during* this reader's life; store files are content-addressed, read-only and never
    /// rewritten, and a consumer that publishes the bytes reads them again verified.
    ///
    /// Measured on a 2 GiB disk (`validate`'s walk of both filesystems' metadata): 1,376
    /// distinct chunks, loaded 10,629 times with the [`CACHED_CHUNKS`] kept; hashing each
    /// load was most of the step's time.
    pub fn rereading_verified(mut self) -> OutputReader {
        if let Kind::Index { idx, verified, .. } = &mut self.kind {
            *verified = Some(vec![false; idx.chunks.len()]);
        }
        self
    }

    /// The output's digest (the index name for a chunked output).
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The logical length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index, for a chunked output.
    pub fn index(&self) -> Option<&ChunkIndex> {
        match &self.kind {
            Kind::Index { idx, .. } => Some(idx),
            Kind::Blob(_) => None,
        }
    }

    /// The [`CacheError`] a failed read wrapped, or the `io::Error` itself when it is not
    /// one (a failing disk).
    pub fn cache_error(e: io::Error) -> Result<CacheError, io::Error> {
        crate::blob::unwrap_corrupt(e)
    }

    /// Reads up to `buf.len()` bytes at the current position from chunk `i`, loading and
    /// verifying it if it is not cached.
    fn read_chunk(&mut self, buf: &mut [u8]) -> Result<usize, CacheError> {
        let digest = self.digest;
        let (local, remote, pos) = (&self.local, self.remote.as_deref(), self.pos);
        let Kind::Index {
            idx,
            starts,
            cache,
            verified,
        } = &mut self.kind
        else {
            return Ok(0);
        };
        let i = starts.partition_point(|&s| s <= pos).saturating_sub(1);
        let (Some(c), Some(&start)) = (idx.chunks.get(i).copied(), starts.get(i)) else {
            return Ok(0);
        };
        let within = (pos - start) as usize;
        let n = buf.len().min(c.len as usize - within);
        let slot = match cache.iter().position(|(j, _)| *j == i) {
            Some(slot) => slot,
            None if c.is_zero() => {
                buf[..n].fill(0);
                return Ok(n);
            }
            None => {
                let at = ChunkAt {
                    chunk: c.digest,
                    position: i as u64,
                    offset: start,
                };
                if verified.as_ref().and_then(|v| v.get(i)) == Some(&true) {
                    reread_chunk(local, &digest, &c, at, within as u64, &mut buf[..n])?;
                    return Ok(n);
                }
                // The whole chunk asked for (a sequential reader with a large buffer): read
                // it straight into the caller's buffer, neither allocated nor copied again.
                if within == 0 && n == c.len as usize && read_chunk_into(local, &c, &mut buf[..n]) {
                    if let Some(flag) = verified.as_mut().and_then(|v| v.get_mut(i)) {
                        *flag = true;
                    }
                    return Ok(n);
                }
                let bytes = load_chunk(local, remote, &digest, &c, at)?;
                if let Some(flag) = verified.as_mut().and_then(|v| v.get_mut(i)) {
                    *flag = true;
                }
                cache.insert(0, (i, bytes));
                cache.truncate(CACHED_CHUNKS);
                0
            }
        };
        let entry = cache.remove(slot);
        buf[..n].copy_from_slice(&entry.1[within..within + n]);
        cache.insert(0, entry);
        Ok(n)
    }
}

impl Read for OutputReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let left = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        let n = match &self.kind {
            Kind::Blob(file) => file.read_at(&mut buf[..want], self.pos)?,
            Kind::Index { .. } => self
                .read_chunk(&mut buf[..want])
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for OutputReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            ));
        };
        self.pos = target;
        Ok(target)
    }
}

/// Opens blob `d` and hashes it whole, so that a seeking reader returns only verified
/// bytes. A missing or corrupt local copy is fetched from `remote` (verified) once.
fn open_verified_blob(
    local: &StoreDir,
    remote: Option<&dyn Remote>,
    d: &Digest,
) -> Result<(File, u64), CacheError> {
    let first = hash_blob(local, d);
    match (first, remote) {
        (Err(CacheError::Missing { .. } | CacheError::Corrupt { .. }), Some(r)) => {
            r.fetch_blob(d, local)?;
            hash_blob(local, d)
        }
        (other, _) => other,
    }
}

fn hash_blob(dir: &StoreDir, d: &Digest) -> Result<(File, u64), CacheError> {
    let mut file = dir.open_raw(d)?;
    if dir.was_hashed(d) {
        let len = file.metadata().map_err(io_err("read", dir.blob_path(d)))?.len();
        return Ok((file, len));
    }
    let mut hasher = blake3::Hasher::new();
    let len = io::copy(&mut io::BufReader::with_capacity(1 << 20, &file), &mut hasher)
        .map_err(io_err("read", dir.blob_path(d)))?;
    let actual: Digest = hasher.finalize().into();
    if actual != *d {
        return Err(dir.corrupt_blob(d, actual, &file));
    }
    dir.note_hashed(d);
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("read", dir.blob_path(d)))?;
    Ok((file, len))
}

/// The verified bytes of chunk `c` of index `index`, fetched from `remote` when the local
/// copy is missing or corrupt. Failures name the index and the chunk.
fn load_chunk(
    local: &StoreDir,
    remote: Option<&dyn Remote>,
    index: &Digest,
    c: &ChunkRef,
    at: ChunkAt,
) -> Result<Vec<u8>, CacheError> {
    let mut result = local.read(&c.digest);
    if let (Err(CacheError::Missing { .. } | CacheError::Corrupt { .. }), Some(r)) = (&result, remote) {
        result = r.fetch_blob(&c.digest, local).and_then(|_| local.read(&c.digest));
    }
    match result {
        Ok(bytes) if bytes.len() == c.len as usize => Ok(bytes),
        Ok(bytes) => Err(CacheError::IndexFormat {
            offset: 0,
            field: "len",
            problem: format!(
                "index `{index}` gives chunk {} a length of {}, but its blob `{}` has {} bytes",
                at.position,
                c.len,
                c.digest,
                bytes.len()
            ),
        }),
        Err(CacheError::Missing { root, .. }) => Err(CacheError::Missing {
            digest: *index,
            root,
            chunk: Some(Box::new(at)),
        }),
        Err(CacheError::Corrupt { actual, evidence, .. }) => Err(CacheError::Corrupt {
            expected: *index,
            actual,
            evidence,
            chunk: Some(Box::new(at)),
        }),
        Err(e) => Err(e),
    }
}

/// Reads chunk `c` whole into `buf` (`c.len` bytes) from its local file, verified (hashed
/// unless this process hashed it before). `false` when that fails in any way — missing,
/// another length, other bytes, a read error: the caller then goes through [`load_chunk`],
/// which reads it again and reports, quarantines or fetches it as usual.
fn read_chunk_into(local: &StoreDir, c: &ChunkRef, buf: &mut [u8]) -> bool {
    let Ok(file) = local.open_raw(&c.digest) else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.len() == u64::from(c.len)) || file.read_exact_at(buf, 0).is_err() {
        return false;
    }
    if local.was_hashed(&c.digest) {
        return true;
    }
    if Digest::of(buf) != c.digest {
        return false;
    }
    local.note_hashed(&c.digest);
    true
}

/// Reads `buf.len()` bytes at `within` of chunk `c` (of index `index`), hashed whole by
/// this reader before, from its local file without hashing it again; see
/// [`OutputReader::rereading_verified`]. A file gone since (quarantined by another reader)
/// is the output missing, as in [`load_chunk`].
fn reread_chunk(
    local: &StoreDir,
    index: &Digest,
    c: &ChunkRef,
    at: ChunkAt,
    within: u64,
    buf: &mut [u8],
) -> Result<(), CacheError> {
    let file = local.open_raw(&c.digest).map_err(|e| match e {
        CacheError::Missing { root, .. } => CacheError::Missing {
            digest: *index,
            root,
            chunk: Some(Box::new(at)),
        },
        other => other,
    })?;
    file.read_exact_at(buf, within)
        .map_err(io_err("read", local.blob_path(&c.digest)))
}

/// Copies output `reader` to `dest` through a temp file beside it, renamed into place
/// once every byte was read (and so verified). Zero chunks become holes.
/// Copies blob `d` (`n` bytes, hashed by this process already) to `out` at `at` with
/// `copy_file_range(2)`: no read into memory, and a filesystem that shares extents shares
/// them. `false` when that fails (another length, a filesystem or kernel without it): the
/// caller then reads the chunk through the verified reader, which reports what is wrong.
fn copy_hashed_chunk(local: &StoreDir, d: &Digest, n: u64, out: &File, at: u64) -> bool {
    let Ok(file) = local.open_raw(d) else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.len() == n) {
        return false;
    }
    let (mut from, mut to) = (0u64, at);
    while from < n {
        let want = usize::try_from(n - from).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(&file, Some(&mut from), out, Some(&mut to), want) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
    true
}

/// The most [`copy_output_to`] reads at once: a whole chunk or frame (up to 16 MiB), or
/// a plain blob in pieces of this size.
const COPY_PIECE: u64 = 16 << 20;

pub(crate) fn copy_output_to(mut reader: OutputReader, dest: &std::path::Path) -> Result<(), CacheError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".w4b-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(io_err("create a temp file in", dir))?;
    let len = reader.len();
    // Chunk by chunk, each read whole into one reused buffer (the reader then fills it
    // straight from the chunk's file) and written at its offset; zero chunks are skipped,
    // so they stay holes. A plain blob is one piece. A chunk this process hashed already
    // (the frames `compress` just stored) is copied by the kernel from its file instead.
    let pieces: Vec<(u64, u64, Option<Digest>)> = match reader.index() {
        Some(idx) => idx
            .chunks
            .iter()
            .zip(idx.starts())
            .filter(|(c, _)| !c.is_zero())
            .map(|(c, s)| (s, u64::from(c.len), Some(c.digest)))
            .collect(),
        None => vec![(0, len, None)],
    };
    let mut buf = Vec::new();
    for (start, n, digest) in pieces {
        if let Some(d) = digest.filter(|d| reader.local.was_hashed(d)) {
            if copy_hashed_chunk(&reader.local, &d, n, tmp.as_file(), start) {
                continue;
            }
        }
        reader
            .seek(SeekFrom::Start(start))
            .map_err(io_err("copy to", dest))?;
        let mut done = 0u64;
        while done < n {
            let want = usize::try_from((n - done).min(COPY_PIECE)).unwrap_or(usize::MAX);
            buf.resize(want, 0);
            reader
                .read_exact(&mut buf)
                .map_err(|e| OutputReader::cache_error(e).unwrap_or_else(|e| io_err("copy to", dest)(e)))?;
            tmp.as_file()
                .write_all_at(&buf, start + done)
                .map_err(io_err("write", tmp.path()))?;
            done += want as u64;
        }
    }
    tmp.as_file().set_len(len).map_err(io_err("write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io_err("sync", tmp.path()))?;
    tmp.persist(dest)
        .map(drop)
        .map_err(|e| io_err("replace", dest)(e.error))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
mod tests {
    use super::*;
    use crate::dir::tests::{flip_byte, rot, store};
    use crate::record::tests::record;
    use crate::{GcPolicy, NoRefs, Store, Uploaded};
    use proptest::prelude::*;
    use std::time::{Duration, SystemTime};

    const MIB: usize = CHUNK_SIZE as usize;

    /// 3.5 MiB: a patterned chunk, a zero chunk, another patterned chunk, a half tail.
    fn sample() -> Vec<u8> {
        let mut v: Vec<u8> = (0..MIB * 7 / 2)
            .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
            .collect();
        v[MIB..2 * MIB].fill(0);
        v
    }

    fn put_chunked(dir: &StoreDir, bytes: &[u8]) -> Digest {
        let mut w = dir.chunked_writer().unwrap().with_flat_blake3();
        // Odd write sizes: the cuts must not depend on them.
        for part in bytes.chunks(300_007) {
            w.write_all(part).unwrap();
        }
        let (d, len) = w.commit().unwrap();
        assert_eq!(len, bytes.len() as u64);
        d
    }

    fn read_all(r: &mut OutputReader) -> Result<Vec<u8>, CacheError> {
        let mut out = Vec::new();
        match r.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(OutputReader::cache_error(e).unwrap()),
        }
    }

    #[test]
    fn a_stream_round_trips_as_chunks_with_zero_chunks_unstored() {
        let (t, dir) = store();
        let bytes = sample();
        let d = put_chunked(&dir, &bytes);
        let idx = dir.index(&d).unwrap().unwrap();
        assert_eq!(idx.chunks.len(), 4);
        assert_eq!(
            idx.chunks.iter().map(|c| c.len).collect::<Vec<_>>(),
            [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE / 2]
        );
        assert!(idx.chunks[1].is_zero());
        assert_eq!(idx.flat.blake3, Some(*Digest::of(&bytes).as_bytes()));
        assert!(
            !dir.contains(&idx.chunks[1].digest),
            "zero chunks are never written"
        );
        assert_eq!(dir.stats().unwrap().blobs, 3);
        assert!(!dir.contains(&d) && dir.contains_index(&d) && dir.contains_output(&d));
        assert_eq!(d, idx.name());
        assert_ne!(d, Digest::of(&bytes));

        let mut r = dir.open_output(&d).unwrap();
        assert_eq!(r.len(), bytes.len() as u64);
        assert_eq!(read_all(&mut r).unwrap(), bytes);
        // Same bytes again: the same name, nothing new stored.
        assert_eq!(put_chunked(&dir, &bytes), d);
        assert_eq!(dir.stats().unwrap().blobs, 3);

        let dest = t.path().join("out.img");
        dir.copy_to(&d, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        let store = Store::new(dir.clone(), None);
        assert_eq!(
            store.flat_digests(&d).unwrap().blake3,
            Some(*Digest::of(&bytes).as_bytes())
        );

        // An empty stream is an empty index.
        let (e, len) = dir.chunked_writer().unwrap().commit().unwrap();
        assert_eq!(len, 0);
        assert!(read_all(&mut dir.open_output(&e).unwrap()).unwrap().is_empty());
    }

    /// 8 MiB + 12,345 bytes as a mkfs writer leaves it: data, a hole, written zeros, a
    /// chunk half hole and half data, three chunks of hole, data, and a short data tail.
    /// Returns the scratch file and its flat bytes.
    fn sparse_scratch(dir: &StoreDir) -> (NamedTempFile, Vec<u8>) {
        let len = 8 * MIB + 12_345;
        let mut flat = vec![0u8; len];
        let pattern =
            |at: usize, n: usize| -> Vec<u8> { (at..at + n).map(|i| (i % 251) as u8 | 1).collect() };
        let tmp = dir.scratch_file().unwrap();
        let f = tmp.as_file();
        f.set_len(len as u64).unwrap();
        for (at, n) in [
            (0, MIB),
            (3 * MIB + MIB / 2, MIB / 2),
            (7 * MIB, MIB),
            (8 * MIB, 12_345),
        ] {
            let bytes = pattern(at, n);
            f.write_all_at(&bytes, at as u64).unwrap();
            flat[at..at + n].copy_from_slice(&bytes);
        }
        f.write_all_at(&vec![0u8; MIB], 2 * MIB as u64).unwrap();
        (tmp, flat)
    }

    #[test]
    fn an_adopted_sparse_file_round_trips_as_chunks_with_zero_chunks_unstored() {
        let (_t, dir) = store();
        let (tmp, flat) = sparse_scratch(&dir);
        let data = data_extents(tmp.as_file(), flat.len() as u64).unwrap();
        // Every data byte lies in an extent (holes are an optimisation the filesystem may
        // decline, never a loss).
        for (i, _) in flat.iter().enumerate().filter(|(_, b)| **b != 0).step_by(4099) {
            assert!(
                data.iter().any(|&(s, e)| s <= i as u64 && (i as u64) < e),
                "{i}: {data:?}"
            );
        }
        // Holes are found (every filesystem a store lives on reports them), so the hole
        // chunks are never read.
        let (hole_start, hole_end) = (4 * MIB as u64, 7 * MIB as u64);
        assert!(
            data.iter().all(|&(s, e)| e <= hole_start || s >= hole_end),
            "{data:?}"
        );
        let scratch_path = tmp.path().to_owned();

        let before = dir.published_bytes();
        let (d, len) = dir.adopt_chunked(tmp).unwrap();
        assert_eq!(len, flat.len() as u64);
        assert!(!scratch_path.exists(), "the scratch file is deleted");
        let idx = dir.index(&d).unwrap().unwrap();
        let zeros: Vec<bool> = idx.chunks.iter().map(ChunkRef::is_zero).collect();
        assert_eq!(zeros, [false, true, true, false, true, true, true, false, false]);
        assert_eq!(idx.chunks[8].len, 12_345, "a short tail");
        assert!(idx
            .chunks
            .iter()
            .filter(|c| c.is_zero())
            .all(|c| !dir.contains(&c.digest)));
        assert_eq!(dir.stats().unwrap().blobs, 4, "only the data chunks are stored");
        let idx_len = fs::metadata(dir.index_path(&d)).unwrap().len();
        assert_eq!(
            dir.published_bytes() - before,
            (3 * MIB + 12_345) as u64 + idx_len,
            "counted for the usage counters"
        );
        assert_eq!(read_all(&mut dir.open_output(&d).unwrap()).unwrap(), flat);

        // The same bytes as a stream: the same name.
        let mut w = dir.chunked_writer().unwrap();
        w.write_all(&flat).unwrap();
        assert_eq!(w.commit().unwrap(), (d, flat.len() as u64));

        // Adopted again under a build's lease: nothing new is stored or counted, and the
        // chunks it names were pinned before being relied on.
        let lease = dir.lease().unwrap();
        let before = dir.published_bytes();
        let (tmp, _) = sparse_scratch(&dir);
        assert_eq!(dir.adopt_chunked(tmp).unwrap(), (d, flat.len() as u64));
        assert_eq!(dir.published_bytes(), before);
        assert_eq!(dir.stats().unwrap().blobs, 4);
        let pins = dir.scan_leases(false).unwrap().pins;
        assert!(
            idx.chunks
                .iter()
                .filter(|c| !c.is_zero())
                .all(|c| pins.contains(&c.digest)),
            "{pins:?}"
        );
        lease.finish().unwrap();
        assert!(
            fs::read_dir(dir.sub("tmp")).unwrap().next().is_none(),
            "no temp files left"
        );
    }

    #[test]
    fn an_adopted_empty_file_is_the_empty_index() {
        let (_t, dir) = store();
        let (d, len) = dir.adopt_chunked(dir.scratch_file().unwrap()).unwrap();
        assert_eq!(len, 0);
        assert_eq!(dir.chunked_writer().unwrap().commit().unwrap(), (d, 0));
        assert!(read_all(&mut dir.open_output(&d).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn chunk_spans_mark_what_overlaps_data() {
        let m = u64::from(CHUNK_SIZE);
        let spans = chunk_spans(
            3 * m + 1,
            &[(m - 1, m), (2 * m + 5, 2 * m + 6), (3 * m, 3 * m + 1)],
        );
        let got: Vec<(u64, u32, bool)> = spans.iter().map(|s| (s.start, s.len, s.data)).collect();
        assert_eq!(
            got,
            [
                (0, CHUNK_SIZE, true),
                (m, CHUNK_SIZE, false),
                (2 * m, CHUNK_SIZE, true),
                (3 * m, 1, true)
            ]
        );
        assert!(chunk_spans(0, &[]).is_empty());
        assert!(chunk_spans(m, &[]).iter().all(|s| !s.data));
    }

    #[test]
    fn put_index_refuses_missing_chunks_and_malformed_indexes() {
        let (_t, dir) = store();
        let a = dir.put_chunk(&[1u8; MIB]).unwrap();
        let absent = ChunkRef {
            digest: Digest::of(b"absent"),
            len: 6,
        };
        let zero = dir.put_chunk(&[0u8; 6]).unwrap();
        assert!(zero.is_zero() && !dir.contains(&zero.digest));
        let idx = ChunkIndex::fixed(vec![a, absent]);
        match dir.put_index(&idx) {
            Err(CacheError::IncompleteIndex {
                index,
                chunk,
                position,
            }) => {
                assert_eq!((index, chunk, position), (idx.name(), absent.digest, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.contains_index(&idx.name()));
        // Zero chunks need not be present.
        let ok = ChunkIndex::fixed(vec![a, zero]);
        assert_eq!(dir.put_index(&ok).unwrap(), ok.name());
        // A short chunk before the last breaks the format.
        let bad = ChunkIndex::fixed(vec![zero, a]);
        assert!(matches!(dir.put_index(&bad), Err(CacheError::IndexFormat { .. })));
    }

    #[test]
    fn a_rereading_reader_hashes_each_chunk_once_and_reads_only_what_is_asked_after() {
        let (_t, dir) = store();
        // Ten patterned chunks: more than the reader keeps.
        let bytes: Vec<u8> = (0..10 * MIB)
            .map(|i| (i % 253) as u8 ^ (i >> 20) as u8 | 1)
            .collect();
        let d = put_chunked(&dir, &bytes);
        let idx = dir.index(&d).unwrap().unwrap();
        let mut r = dir.open_output(&d).unwrap().rereading_verified();
        let mut buf = [0u8; 100];
        // Hop over every chunk twice: the second round re-reads evicted, verified chunks.
        for round in 0..2 {
            for k in (0..10).rev() {
                let at = (k * MIB + 1000 * (round + 1)) as u64;
                r.seek(SeekFrom::Start(at)).unwrap();
                r.read_exact(&mut buf).unwrap();
                assert_eq!(&buf[..], &bytes[at as usize..at as usize + 100]);
            }
        }
        // What it gives up: a chunk file changed after its first hash is not noticed by
        // this reader (chunk 9 was evicted long ago) ...
        let victim = dir.blob_path(&idx.chunks[9].digest);
        let mut changed = fs::read(&victim).unwrap();
        changed[5] ^= 0x40;
        let _ = fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o644));
        fs::write(&victim, &changed).unwrap();
        r.seek(SeekFrom::Start(9 * MIB as u64)).unwrap();
        r.read_exact(&mut buf[..10]).unwrap();
        assert_eq!(buf[..10], changed[..10]);
        // ... nor by any reader in this process, which hashed it once already; a later
        // process's reader hashes it and reports the output corrupt, naming the chunk.
        let mut same = dir.open_output(&d).unwrap();
        same.seek(SeekFrom::Start(9 * MIB as u64)).unwrap();
        same.read_exact(&mut buf[..10]).unwrap();
        assert_eq!(buf[..10], changed[..10]);
        dir.forget_all_hashed();
        let mut fresh = dir.open_output(&d).unwrap().rereading_verified();
        fresh.seek(SeekFrom::Start(9 * MIB as u64)).unwrap();
        let e = OutputReader::cache_error(fresh.read_exact(&mut buf).unwrap_err()).unwrap();
        assert!(matches!(e, CacheError::Corrupt { expected, chunk: Some(_), .. } if expected == d));
        // A verified chunk whose file is gone since is the output missing.
        fs::remove_file(dir.blob_path(&idx.chunks[8].digest)).unwrap();
        r.seek(SeekFrom::Start(8 * MIB as u64)).unwrap();
        let e = OutputReader::cache_error(r.read_exact(&mut buf).unwrap_err()).unwrap();
        assert!(matches!(e, CacheError::Missing { digest, chunk: Some(_), .. } if digest == d));
    }

    #[test]
    fn a_flipped_index_is_a_quarantined_miss() {
        let (_t, dir) = store();
        let d = put_chunked(&dir, &sample());
        flip_byte(&dir.index_path(&d));
        assert!(matches!(dir.index(&d), Err(CacheError::Corrupt { expected, .. }) if expected == d));
        assert!(!dir.contains_index(&d));
        assert_eq!(dir.take_quarantined().len(), 1);
        assert!(matches!(dir.open_output(&d), Err(CacheError::Missing { .. })));
    }

    /// A flipped, truncated or deleted chunk fails the read with the index's digest and
    /// the chunk's, and is quarantined; putting the output again repairs it.
    #[test]
    fn a_bad_chunk_is_reported_for_the_index_and_quarantined() {
        for damage in ["flip", "truncate", "delete"] {
            let (_t, dir) = store();
            let bytes = sample();
            let d = put_chunked(&dir, &bytes);
            let idx = dir.index(&d).unwrap().unwrap();
            let bad = idx.chunks[2];
            let path = dir.blob_path(&bad.digest);
            match damage {
                "flip" => flip_byte(&path),
                "truncate" => {
                    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
                    File::options()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(1000)
                        .unwrap();
                }
                _ => fs::remove_file(&path).unwrap(),
            }
            // Damage found by a later process (this one hashed the chunks as it put them).
            dir.forget_all_hashed();
            let mut r = dir.open_output(&d).unwrap();
            // The chunks before the bad one read fine.
            let mut head = vec![0u8; 2 * MIB];
            r.read_exact(&mut head).unwrap();
            assert_eq!(head, bytes[..2 * MIB]);
            let err = read_all(&mut r).unwrap_err();
            let at = ChunkAt {
                chunk: bad.digest,
                position: 2,
                offset: 2 * MIB as u64,
            };
            match (&err, damage) {
                (CacheError::Corrupt { expected, chunk, .. }, "flip" | "truncate") => {
                    assert_eq!((expected, chunk.as_deref()), (&d, Some(&at)));
                }
                (CacheError::Missing { digest, chunk, .. }, "delete") => {
                    assert_eq!((digest, chunk.as_deref()), (&d, Some(&at)));
                }
                _ => panic!("{damage}: {err:?}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains(&d.to_hex()) && msg.contains(&bad.digest.to_hex()),
                "{msg}"
            );
            assert!(msg.contains("chunk 2"), "{msg}");
            assert!(!dir.contains(&bad.digest));
            assert_eq!(
                dir.take_quarantined().len(),
                usize::from(damage != "delete"),
                "{damage}"
            );
            // A seek past the bad chunk still reads verified bytes.
            r.seek(SeekFrom::Start(3 * MIB as u64 + 5)).unwrap();
            let mut tail = Vec::new();
            r.read_to_end(&mut tail).unwrap();
            assert_eq!(tail, bytes[3 * MIB + 5..]);
            // Verify names the index incomplete, the record that names it dangling.
            let rep = dir.verify(&NoRefs).unwrap();
            assert_eq!(rep.incomplete_indexes, vec![d]);
            assert!(
                dir.contains_index(&d),
                "a local index is kept: its producer repairs it"
            );
            // Running the producer again repairs the store.
            assert_eq!(put_chunked(&dir, &bytes), d);
            assert_eq!(read_all(&mut dir.open_output(&d).unwrap()).unwrap(), bytes);
        }
    }

    /// Whole chunks go straight into the caller's buffer, verified: a damaged one is
    /// still reported for the index and the chunk, and the chunks before it read fine.
    #[test]
    fn whole_chunk_reads_fill_the_callers_buffer_verified() {
        let (_t, dir) = store();
        let bytes = sample();
        let d = put_chunked(&dir, &bytes);
        let idx = dir.index(&d).unwrap().unwrap();
        let mut buf = vec![0u8; MIB];
        for fresh in [false, true] {
            if fresh {
                dir.forget_all_hashed();
            }
            let mut r = dir.open_output(&d).unwrap();
            for (i, want) in bytes.chunks(MIB).enumerate() {
                r.read_exact(&mut buf[..want.len()]).unwrap();
                assert!(buf[..want.len()] == *want, "chunk {i}");
            }
        }
        rot(&dir, &dir.blob_path(&idx.chunks[2].digest));
        let mut r = dir.open_output(&d).unwrap();
        r.read_exact(&mut buf).unwrap();
        r.read_exact(&mut buf).unwrap();
        let e = OutputReader::cache_error(r.read_exact(&mut buf).unwrap_err()).unwrap();
        assert!(
            matches!(&e, CacheError::Corrupt { expected, chunk: Some(at), .. } if *expected == d && at.position == 2),
            "{e:?}"
        );
    }

    #[test]
    fn a_plain_blob_reads_and_seeks_verified() {
        let (_t, dir) = store();
        let bytes = sample();
        let d = dir.put_bytes(&bytes).unwrap();
        let mut r = dir.open_output(&d).unwrap();
        assert!(r.index().is_none());
        r.seek(SeekFrom::End(-10)).unwrap();
        let mut tail = Vec::new();
        r.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, bytes[bytes.len() - 10..]);
        assert!(r.seek(SeekFrom::Current(-(bytes.len() as i64) - 1)).is_err());
        rot(&dir, &dir.blob_path(&d));
        assert!(matches!(dir.open_output(&d), Err(CacheError::Corrupt { .. })));
        assert!(matches!(dir.open_output(&d), Err(CacheError::Missing { .. })));
    }

    #[test]
    fn a_remote_index_is_imported_and_its_chunks_fetched_on_first_read() {
        let t = tempfile::tempdir().unwrap();
        let writer = Store::new(
            StoreDir::open(&t.path().join("a")).unwrap(),
            Some(StoreDir::open_shared(&t.path().join("remote")).unwrap()),
        );
        let bytes = sample();
        let d = put_chunked(writer.local(), &bytes);
        let r = record("k", &[("disk", d, bytes.len() as u64)]);
        let up = writer.publish(&r, &NoRefs).unwrap();
        let idx_len = fs::metadata(writer.local().index_path(&d)).unwrap().len();
        assert_eq!(
            up,
            Uploaded {
                blobs: 3,
                indexes: 1,
                bytes: 5 * MIB as u64 / 2 + idx_len,
            }
        );
        assert_eq!(writer.publish(&r, &NoRefs).unwrap(), Uploaded::default());

        let reader = Store::with_remote(
            StoreDir::open(&t.path().join("b")).unwrap(),
            writer.remote().cloned(),
        );
        assert_eq!(reader.lookup(&r.key, |v| v.into_iter().next()).unwrap().len(), 1);
        let mut out = reader.open_output(&d).unwrap();
        assert!(reader.local().contains_index(&d));
        out.seek(SeekFrom::Start(3 * MIB as u64)).unwrap();
        let mut tail = Vec::new();
        out.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, bytes[3 * MIB..]);
        let idx = reader.index(&d).unwrap().unwrap();
        let fetched: Vec<bool> = idx
            .chunks
            .iter()
            .map(|c| reader.local().contains(&c.digest))
            .collect();
        assert_eq!(
            fetched,
            [false, false, false, true],
            "only the chunk read was fetched"
        );
        out.seek(SeekFrom::Start(0)).unwrap();
        assert_eq!(read_all(&mut out).unwrap(), bytes);
        let dest = t.path().join("copy");
        reader.copy_to(&d, &dest).unwrap();
        assert_eq!(fs::read(dest).unwrap(), bytes);

        // A rotten local index is quarantined and read again from the remote.
        flip_byte(&reader.local().index_path(&d));
        assert_eq!(reader.index(&d).unwrap(), Some(idx));
        assert_eq!(reader.local().take_quarantined().len(), 1);
        assert!(reader.local().index(&d).unwrap().is_some());
        // A plain blob's flat BLAKE3 is its name.
        let plain = writer.local().put_bytes(b"plain").unwrap();
        assert_eq!(writer.flat_digests(&plain).unwrap().blake3, Some(plain.0));
    }

    /// Publish skips an index the remote has; verify on the shared directory finds it
    /// incomplete once a chunk is gone there and quarantines it, so the next publish
    /// uploads the chunk and the index again.
    #[test]
    fn an_incomplete_remote_index_is_dropped_by_verify_and_republished() {
        let t = tempfile::tempdir().unwrap();
        let remote = StoreDir::open_shared(&t.path().join("remote")).unwrap();
        let writer = Store::new(StoreDir::open(&t.path().join("a")).unwrap(), Some(remote.clone()));
        let bytes = sample();
        let d = put_chunked(writer.local(), &bytes);
        let r = record("k", &[("disk", d, bytes.len() as u64)]);
        writer.publish(&r, &NoRefs).unwrap();
        let idx = remote.index(&d).unwrap().unwrap();
        fs::remove_file(remote.blob_path(&idx.chunks[3].digest)).unwrap();
        assert_eq!(
            writer.publish(&r, &NoRefs).unwrap(),
            Uploaded::default(),
            "the index hides the hole"
        );

        let reader = Store::new(StoreDir::open(&t.path().join("b")).unwrap(), Some(remote.clone()));
        let mut out = reader.open_output(&d).unwrap();
        assert!(
            matches!(read_all(&mut out), Err(CacheError::Missing { digest, chunk: Some(_), .. }) if digest == d)
        );

        let rep = remote.verify(&NoRefs).unwrap();
        assert_eq!(rep.incomplete_indexes, vec![d]);
        assert_eq!(rep.dangling_records, vec![(r.key, r.outputs_digest())]);
        assert!(!remote.contains_index(&d), "quarantined in a shared directory");
        let up = writer.publish(&r, &NoRefs).unwrap();
        assert_eq!((up.blobs, up.indexes), (1, 1));
        let rep = remote.verify(&NoRefs).unwrap();
        assert!(
            rep.incomplete_indexes.is_empty() && rep.dangling_records.is_empty(),
            "{rep:?}"
        );
        assert_eq!(read_all(&mut reader.open_output(&d).unwrap()).unwrap(), bytes);
    }

    #[test]
    fn gc_keeps_the_chunks_of_a_kept_index_and_drops_an_evicted_ones() {
        let (_t, dir) = store();
        let old = sample();
        let mut new = old.clone();
        new[3 * MIB + 1] ^= 1;
        let a = put_chunked(&dir, &old);
        let b = put_chunked(&dir, &new);
        let ra = record("a", &[("disk", a, old.len() as u64)]);
        let rb = record("b", &[("disk", b, new.len() as u64)]);
        dir.put_record(&ra).unwrap();
        dir.put_record(&rb).unwrap();
        let (ia, ib) = (dir.index(&a).unwrap().unwrap(), dir.index(&b).unwrap().unwrap());
        let stats = dir.stats().unwrap();
        assert_eq!((stats.blobs, stats.indexes), (4, 2), "three chunks shared");
        assert_eq!(stats.logical_bytes, 2 * old.len() as u64);
        assert_eq!(
            stats.physical_bytes,
            2 * MIB as u64 + 2 * (MIB as u64 / 2) + stats.index_bytes
        );

        let t0 = SystemTime::now();
        let day = Duration::from_secs(86_400);
        dir.touch_record(&ra, t0).unwrap();
        dir.touch_record(&rb, t0 + day).unwrap();
        let rep = dir.gc(&GcPolicy::new(t0 + 3 * day), &NoRefs).unwrap();
        assert_eq!(
            (rep.blobs_removed, rep.indexes_removed, rep.indexes_kept),
            (0, 0, 2)
        );
        let evict_a = GcPolicy {
            max_age: Some(2 * day + day / 2),
            ..GcPolicy::new(t0 + 3 * day)
        };
        let rep = dir.gc(&evict_a, &NoRefs).unwrap();
        assert_eq!(
            (rep.records_removed, rep.indexes_removed, rep.blobs_removed),
            (1, 1, 1)
        );
        assert!(!dir.contains_index(&a) && dir.contains_index(&b));
        assert!(
            !dir.contains(&ia.chunks[3].digest),
            "the evicted index's own chunk is gone"
        );
        assert!(ib.chunks.iter().all(|c| c.is_zero() || dir.contains(&c.digest)));
        assert_eq!(read_all(&mut dir.open_output(&b).unwrap()).unwrap(), new);
        assert!(dir.verify(&NoRefs).unwrap().incomplete_indexes.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Random seeks and reads over a chunked output return the flat bytes.
        #[test]
        fn random_access_matches_the_flat_bytes(len in 0usize..(3 * MIB), probes in proptest::collection::vec((any::<u32>(), 0usize..(2 * MIB)), 1..8)) {
            let (_t, dir) = store();
            let bytes: Vec<u8> = (0..len).map(|i| ((i * 7) % 256) as u8 & if i / MIB == 1 { 0 } else { 0xff }).collect();
            let d = put_chunked(&dir, &bytes);
            let mut r = dir.open_output(&d).unwrap();
            for (at, n) in probes {
                let at = if len == 0 { 0 } else { at as usize % len };
                r.seek(SeekFrom::Start(at as u64)).unwrap();
                let mut got = Vec::new();
                Read::take(&mut r, n as u64).read_to_end(&mut got).unwrap();
                prop_assert_eq!(&got[..], &bytes[at..(at + n).min(len)]);
            }
        }
    }
}
