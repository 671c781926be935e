//! The compressed image assembled from memoised frames, and the disk's block map from
//! memoised per-chunk ranges: what makes `compress` cost what changed (issue 12, design
//! `docs/plans/chunked-outputs.md` §3).
//!
//! The disk is read as 1 MiB chunks ([`CHUNK_SIZE`], aligned to its start): when it is a
//! chunked output its index names them for free, otherwise each chunk is read and hashed
//! (BLAKE3, in parallel). Chunks are cut into **spans** of `k` chunks (span `i` starts at
//! chunk `i·k`); each span is one independent zstd frame ([`zstd_frames`]) or xz block
//! ([`xz_blocks`]), memoised under the span's chunk digests. Only spans without a memo
//! are compressed, on a rayon pool of at most `threads` workers; a frame is a pure
//! function of the span's bytes, the codec, its level and the library version, so the
//! output does not depend on the thread count, nor on which frames came from memos.
//! All-zero spans of one length have the same chunk digests, hence one memo and one frame.
//!
//! The image is a chunked output whose entries are the frames in order, then a trailer:
//! zstd's seek table (seekable format) or, for xz, the stream header first and the
//! stream's index and footer as trailer. The index carries the flat BLAKE3 and SHA-256 of
//! the whole file, which the manifest, the `.sha256` line and export use.
//!
//! Memo keys (`blake3::derive_key(context, canonical bytes)`, little-endian integers):
//!
//! | memo kind | context | keyed | value, extra |
//! |---|---|---|---|
//! | `frame-zstd` | `w4b compress frame-zstd v1` | `"zstd"`, level (i32), libzstd version (u32 length + bytes), chunk count (u32), each chunk's digest and length (u32) | the frame; extra = its seek-table checksum (u32) |
//! | `frame-xz` | `w4b compress frame-xz v1` | `"xz"`, preset (u32), [`LIBLZMA`] (u32 length + bytes), chunks as above | the block; extra = Unpadded Size, Uncompressed Size (u64 each) |
//! | `bmap` | `w4b compress bmap v1` | block size (u32), the chunk's digest and length (u32) | the span's frame (a liveness anchor; the empty chunk without a codec); extra = count (u32), then per run: first and last block within the chunk (u32 each), SHA-256 |
//!
//! Deliberately not keyed: the thread count and the span's position in the disk (a frame
//! does not know where it sits; the seek table and the xz index are rebuilt every run).
//!
//! A memo only points at a blob; a frame read back for the flat digests is verified (its
//! BLAKE3 is its name), and one found missing or corrupt is compressed again from the disk
//! and its memo replaced, so a damaged cache costs time, never bytes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use sha2::{Digest as _, Sha256};
use w4b_cache::{
    zero_digest, CacheError, ChunkIndex, ChunkRef, Digest, FlatDigests, MemoKind, OutputReader, StoreDir,
    CHUNK_SIZE,
};

use crate::formats::bmap::{chunk_ranges, BmapRange, BMAP_BLOCK_SIZE};
use crate::formats::xz_blocks::{self, IndexRecord, XzBlocksError};
use crate::formats::zstd_frames::{self, FrameCompressor, SeekEntry, ZstdFramesError};

thread_local! {
    /// This thread's zstd context, kept from frame to frame (a fresh one per frame cost
    /// its tables' allocation and page faults every time). A frame does not depend on
    /// which context made it ([`FrameCompressor::compress`]).
    static ZSTD: RefCell<Option<FrameCompressor>> = const { RefCell::new(None) };
}

/// Memo kind of a span's zstd frame.
pub const FRAME_ZSTD: MemoKind = MemoKind::new("frame-zstd");
/// Memo kind of a span's xz block.
pub const FRAME_XZ: MemoKind = MemoKind::new("frame-xz");
/// Memo kind of a chunk's block-map runs.
pub const BMAP: MemoKind = MemoKind::new("bmap");

const ZSTD_CONTEXT: &str = "w4b compress frame-zstd v1";
const XZ_CONTEXT: &str = "w4b compress frame-xz v1";
const BMAP_CONTEXT: &str = "w4b compress bmap v1";

/// The liblzma behind `.xz` frames: the `liblzma-sys` crate vendors and statically links
/// it, so its crate version names the encoder. A test checks it against `Cargo.lock`.
pub const LIBLZMA: &str = "liblzma-sys 0.4.9";

/// The codec of a framed image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameCodec {
    Zstd { level: i32 },
    Xz { level: u32 },
}

impl FrameCodec {
    fn kind(&self) -> MemoKind {
        match self {
            FrameCodec::Zstd { .. } => FRAME_ZSTD,
            FrameCodec::Xz { .. } => FRAME_XZ,
        }
    }

    /// The memo key of the frame of a span made of `chunks`.
    pub fn frame_key(&self, chunks: &[ChunkRef]) -> Digest {
        let mut canon = Vec::with_capacity(64usize.saturating_add(chunks.len().saturating_mul(36)));
        let (context, version) = match *self {
            FrameCodec::Zstd { level } => {
                canon.extend_from_slice(b"zstd");
                canon.extend_from_slice(&level.to_le_bytes());
                (ZSTD_CONTEXT, zstd_frames::libzstd_version())
            }
            FrameCodec::Xz { level } => {
                canon.extend_from_slice(b"xz");
                canon.extend_from_slice(&level.to_le_bytes());
                (XZ_CONTEXT, LIBLZMA)
            }
        };
        canon.extend_from_slice(&(version.len() as u32).to_le_bytes());
        canon.extend_from_slice(version.as_bytes());
        canon.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        for c in chunks {
            canon.extend_from_slice(c.digest.as_bytes());
            canon.extend_from_slice(&c.len.to_le_bytes());
        }
        Digest(blake3::derive_key(context, &canon))
    }

    /// Compresses one span; returns the frame's bytes and its memo extra.
    fn compress(&self, span: &[u8]) -> Result<(Vec<u8>, FrameMeta), FramesError> {
        match *self {
            FrameCodec::Zstd { level } => {
                let frame = ZSTD
                    .with(|slot| {
                        let mut slot = slot.borrow_mut();
                        let mut c = match slot.take() {
                            Some(c) if c.level() == level => c,
                            _ => FrameCompressor::new(level)?,
                        };
                        let frame = c.compress(span);
                        *slot = Some(c);
                        frame
                    })
                    .map_err(FramesError::Zstd)?;
                let meta = FrameMeta::Zstd {
                    checksum: frame.checksum(),
                };
                Ok((frame.into_bytes(), meta))
            }
            FrameCodec::Xz { level } => {
                let block = xz_blocks::encode_block(span, level).map_err(FramesError::Xz)?;
                let meta = FrameMeta::Xz(block.record());
                Ok((block.bytes().to_vec(), meta))
            }
        }
    }
}

/// What the container needs of a frame besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameMeta {
    Zstd { checksum: u32 },
    Xz(IndexRecord),
}

impl FrameMeta {
    fn encode(&self) -> Vec<u8> {
        match self {
            FrameMeta::Zstd { checksum } => checksum.to_le_bytes().to_vec(),
            FrameMeta::Xz(r) => {
                let mut v = r.unpadded_size.to_le_bytes().to_vec();
                v.extend_from_slice(&r.uncompressed_size.to_le_bytes());
                v
            }
        }
    }

    /// The extra of a memo of `codec`; `None` when it does not fit the frame `value` of a
    /// span of `span_len` bytes (then the memo is ignored).
    fn decode(codec: FrameCodec, extra: &[u8], value: &ChunkRef, span_len: u64) -> Option<FrameMeta> {
        match codec {
            FrameCodec::Zstd { .. } => {
                let checksum = u32::from_le_bytes(extra.try_into().ok()?);
                Some(FrameMeta::Zstd { checksum })
            }
            FrameCodec::Xz { .. } => {
                let (a, b) = (extra.get(..8)?, extra.get(8..)?);
                let record = IndexRecord {
                    unpadded_size: u64::from_le_bytes(a.try_into().ok()?),
                    uncompressed_size: u64::from_le_bytes(b.try_into().ok()?),
                };
                (record.uncompressed_size == span_len && record.total_size() == u64::from(value.len))
                    .then_some(FrameMeta::Xz(record))
            }
        }
    }
}

/// The memo key of a chunk's block-map runs.
pub fn bmap_key(chunk: &ChunkRef) -> Digest {
    let mut canon = Vec::with_capacity(40);
    canon.extend_from_slice(&(BMAP_BLOCK_SIZE as u32).to_le_bytes());
    canon.extend_from_slice(chunk.digest.as_bytes());
    canon.extend_from_slice(&chunk.len.to_le_bytes());
    Digest(blake3::derive_key(BMAP_CONTEXT, &canon))
}

fn encode_ranges(ranges: &[BmapRange]) -> Vec<u8> {
    let mut v = (ranges.len() as u32).to_le_bytes().to_vec();
    for r in ranges {
        v.extend_from_slice(&(r.first as u32).to_le_bytes());
        v.extend_from_slice(&(r.last as u32).to_le_bytes());
        v.extend_from_slice(&r.sha256);
    }
    v
}

/// Runs of a chunk of `len` bytes from a memo's extra; `None` if malformed.
fn decode_ranges(extra: &[u8], len: u32) -> Option<Vec<BmapRange>> {
    let count = u32::from_le_bytes(extra.get(..4)?.try_into().ok()?) as usize;
    let body = extra.get(4..)?;
    if body.len() != count.checked_mul(40)? {
        return None;
    }
    let blocks = u64::from(len).div_ceil(BMAP_BLOCK_SIZE);
    let mut out: Vec<BmapRange> = Vec::with_capacity(count);
    for rec in body.chunks_exact(40) {
        let first = u64::from(u32::from_le_bytes(rec.get(..4)?.try_into().ok()?));
        let last = u64::from(u32::from_le_bytes(rec.get(4..8)?.try_into().ok()?));
        let ordered = out.last().is_none_or(|p| p.last < first);
        if first > last || last >= blocks || !ordered {
            return None;
        }
        out.push(BmapRange {
            first,
            last,
            sha256: rec.get(8..40)?.try_into().ok()?,
        });
    }
    Some(out)
}

/// What one run did, for the step's note and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameReport {
    /// Spans (frames) in the image.
    pub spans: u64,
    /// Frames compressed in this run.
    pub compressed: u64,
    /// Frames taken from memos.
    pub reused: u64,
    /// Frames whose memo pointed at a missing or corrupt blob, compressed again.
    pub repaired: u64,
    /// Chunks whose block-map runs were computed in this run (all-zero chunks need none).
    pub bmap_scanned: u64,
    /// Chunks whose runs came from memos.
    pub bmap_reused: u64,
    /// Bytes read from the disk.
    pub disk_read: u64,
}

/// The result of [`run`].
pub struct Framed {
    /// The image (an index name and its length), when a codec was given.
    pub image: Option<(Digest, u64)>,
    /// Flat digests of the image, when a codec was given.
    pub flat: FlatDigests,
    /// The disk's non-zero block runs, absolute, split at chunk boundaries.
    pub ranges: Vec<BmapRange>,
    pub report: FrameReport,
}

/// Why a framed image could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FramesError {
    #[error("reading the disk failed")]
    #[diagnostic(code(w4b::compress::read))]
    Read(#[source] io::Error),

    #[error("cannot store a frame or the image index in the cache")]
    #[diagnostic(
        code(w4b::compress::store),
        help("the compressed image is written into the cache; make room on its filesystem")
    )]
    Store(#[source] CacheError),

    #[error("zstd could not compress a span")]
    #[diagnostic(code(w4b::compress::zstd_frame))]
    Zstd(
        #[source]
        #[diagnostic_source]
        ZstdFramesError,
    ),

    #[error("xz could not compress a span")]
    #[diagnostic(code(w4b::compress::xz_block))]
    Xz(
        #[source]
        #[diagnostic_source]
        XzBlocksError,
    ),

    #[error("the build was interrupted")]
    #[diagnostic(code(w4b::compress::cancelled))]
    Cancelled,

    #[error("the memoised {what} for the span at byte {offset} differs from the span rendered again")]
    #[diagnostic(
        code(w4b::compress::memo_mismatch),
        help("a memo's key misses something its value depends on: this is a bug in w4b, please report it; `w4b cache gc --max-size 1` empties the cache, and building without `W4B_VERIFY_MEMOS` uses them unchecked")
    )]
    MemoMismatch { what: &'static str, offset: u64 },
}

/// What [`run`] is asked to do.
pub struct Job<'a> {
    /// `None`: the block map only.
    pub codec: Option<FrameCodec>,
    /// Chunks per span (at least 1).
    pub span_chunks: u32,
    /// Worker threads (at least 1).
    pub threads: usize,
    pub cancel: &'a AtomicBool,
    /// Disk bytes done so far (spans processed, read or not).
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Re-render every memo hit (read the span, compress it, compute its block-map runs)
    /// and fail on a difference: `W4B_VERIFY_MEMOS=1`, a check that a memo's key names
    /// everything its value depends on. Costs a full compression.
    pub verify_memos: bool,
}

/// One span on its way through a batch.
struct Span {
    offset: u64,
    len: u64,
    /// The chunks, when known before reading (from the disk's index or after hashing).
    chunks: Option<Vec<ChunkRef>>,
    bytes: Option<Vec<u8>>,
    /// The frame's memo, when one was found before reading.
    frame: Option<(ChunkRef, FrameMeta)>,
    /// Per chunk: its runs, when known (a memo, or an all-zero chunk).
    ranges: Vec<Option<Vec<BmapRange>>>,
}

/// A span's frame as assembled.
struct Done {
    value: ChunkRef,
    meta: FrameMeta,
    /// The frame's bytes (read back and verified when it came from a memo); `None` when
    /// its blob turned out missing or corrupt.
    bytes: Option<Vec<u8>>,
    compressed: bool,
}

/// Disk read ahead of the span being assembled (at least two spans per worker): enough
/// that a worker seldom waits behind one slow span, little enough to bound memory, since
/// each span read ahead holds its bytes (the batches this replaced read as much).
const AHEAD_BYTES: u64 = 64 << 20;

/// Span buffers handed back after use: a fresh zeroed 8 MiB buffer per span cost a
/// `memset` and a page fault per 4 KiB on every span (about 6 % of the step).
#[derive(Default)]
struct SpanBuffers(Mutex<Vec<Vec<u8>>>);

impl SpanBuffers {
    /// A buffer of `len` bytes; its contents are whatever it held (the caller fills it).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        v.resize(len, 0);
        v
    }

    fn give(&self, v: Vec<u8>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }
}

/// The image and block map as spans are added in order.
struct Assembly {
    codec: Option<FrameCodec>,
    report: FrameReport,
    ranges: Vec<BmapRange>,
    image: Vec<ChunkRef>,
    zstd_entries: Vec<SeekEntry>,
    xz_records: Vec<IndexRecord>,
    blake: blake3::Hasher,
    sha: Sha256,
}

impl Assembly {
    fn new(codec: Option<FrameCodec>, local: &StoreDir) -> Result<Assembly, FramesError> {
        let mut a = Assembly {
            codec,
            report: FrameReport::default(),
            ranges: Vec::new(),
            image: Vec::new(),
            zstd_entries: Vec::new(),
            xz_records: Vec::new(),
            blake: blake3::Hasher::new(),
            sha: Sha256::new(),
        };
        if let Some(FrameCodec::Xz { .. }) = codec {
            let header = xz_blocks::stream_header();
            let c = local.put_chunk(&header).map_err(FramesError::Store)?;
            a.put_flat(&header, c);
        }
        Ok(a)
    }

    fn put_flat(&mut self, bytes: &[u8], value: ChunkRef) {
        self.blake.update(bytes);
        self.sha.update(bytes);
        self.image.push(value);
    }

    /// The next span in order: its block-map runs, then (with a codec) its frame, made
    /// again from the disk when its memoised blob turned out damaged.
    fn add(
        &mut self,
        finished: Finished,
        disk: &mut OutputReader,
        local: &StoreDir,
        buffers: &SpanBuffers,
        job: &Job<'_>,
    ) -> Result<(), FramesError> {
        let chunk = u64::from(CHUNK_SIZE);
        let Finished {
            span,
            done,
            scanned,
            reused,
        } = finished;
        self.report.bmap_scanned = self.report.bmap_scanned.saturating_add(scanned);
        self.report.bmap_reused = self.report.bmap_reused.saturating_add(reused);
        let base_block = span.offset / BMAP_BLOCK_SIZE;
        for (i, rs) in span.ranges.iter().enumerate() {
            let chunk_block = (i as u64).saturating_mul(chunk / BMAP_BLOCK_SIZE);
            for r in rs.iter().flatten() {
                self.ranges.push(BmapRange {
                    first: base_block + chunk_block + r.first,
                    last: base_block + chunk_block + r.last,
                    sha256: r.sha256,
                });
            }
        }
        let (Some(codec), Some(mut done)) = (self.codec, done) else {
            (job.progress)(span.offset.saturating_add(span.len));
            return Ok(());
        };
        self.report.spans = self.report.spans.saturating_add(1);
        if done.bytes.is_none() {
            // The memo's frame is gone or damaged: make it again from the disk.
            let bytes = read_span(disk, span.offset, span.len, buffers)?;
            self.report.disk_read = self.report.disk_read.saturating_add(span.len);
            let chunks = match span.chunks {
                Some(c) => c,
                None => hash_chunks(&bytes),
            };
            let made = codec.compress(&bytes);
            buffers.give(bytes);
            let (frame, meta) = made?;
            let value = local.put_chunk(&frame).map_err(FramesError::Store)?;
            local
                .memo_put(codec.kind(), &codec.frame_key(&chunks), &value, &meta.encode())
                .map_err(FramesError::Store)?;
            done = Done {
                value,
                meta,
                bytes: Some(frame),
                compressed: true,
            };
            self.report.repaired = self.report.repaired.saturating_add(1);
        }
        if done.compressed {
            self.report.compressed = self.report.compressed.saturating_add(1);
        } else {
            self.report.reused = self.report.reused.saturating_add(1);
        }
        match done.meta {
            FrameMeta::Zstd { checksum } => self.zstd_entries.push(SeekEntry {
                compressed_size: done.value.len,
                // At most the span (≤ 1 GiB, checked when the span size is chosen).
                decompressed_size: span.len as u32,
                checksum,
            }),
            FrameMeta::Xz(record) => self.xz_records.push(record),
        }
        self.put_flat(done.bytes.as_deref().unwrap_or_default(), done.value);
        (job.progress)(span.offset.saturating_add(span.len));
        Ok(())
    }

    /// The trailer and the index (with a codec).
    fn finish(mut self, local: &StoreDir) -> Result<Framed, FramesError> {
        let Some(codec) = self.codec else {
            return Ok(Framed {
                image: None,
                flat: FlatDigests::default(),
                ranges: self.ranges,
                report: self.report,
            });
        };
        let trailer = match codec {
            FrameCodec::Zstd { .. } => {
                zstd_frames::seek_table(&self.zstd_entries).map_err(FramesError::Zstd)?
            }
            FrameCodec::Xz { .. } => {
                xz_blocks::index_and_footer(&self.xz_records).map_err(FramesError::Xz)?
            }
        };
        let c = local.put_chunk(&trailer).map_err(FramesError::Store)?;
        self.put_flat(&trailer, c);
        let idx = ChunkIndex {
            chunk_size: 0,
            chunks: self.image,
            trailer: true,
            flat: FlatDigests {
                blake3: Some(*self.blake.finalize().as_bytes()),
                sha256: Some(self.sha.finalize().into()),
            },
        };
        let name = local.put_index(&idx).map_err(FramesError::Store)?;
        Ok(Framed {
            image: Some((name, idx.total_len())),
            flat: idx.flat,
            ranges: self.ranges,
            report: self.report,
        })
    }
}

/// Reads `disk` span by span, reusing memoised frames and block-map runs, compressing the
/// rest, and (with a codec) stores the image as a chunked output in `local`.
///
/// A pipeline: this thread reads spans in order (looking their memos up first, so a
/// span whose frame and runs are all memoised is not read), `threads` workers hash,
/// compress and store them, and this thread assembles the finished spans in order (the
/// image's flat BLAKE3 and SHA-256, the seek table, the block map) between reads. The
/// reading, the flat hashes and the compression overlap; the batches this replaced left
/// the workers idle while a batch was read and assembled, and at each batch's tail.
pub fn run(disk: &mut OutputReader, local: &StoreDir, job: &Job<'_>) -> Result<Framed, FramesError> {
    let len = disk.len();
    let chunk = u64::from(CHUNK_SIZE);
    let span_chunks = u64::from(job.span_chunks.max(1));
    let span_bytes = span_chunks.saturating_mul(chunk);
    let known: Option<Vec<ChunkRef>> = disk
        .index()
        .filter(|i| i.chunk_size == CHUNK_SIZE && !i.trailer && i.total_len() == len)
        .map(|i| i.chunks.clone());
    let threads = job.threads.max(1);
    let spans = len.div_ceil(span_bytes);
    let ahead = (AHEAD_BYTES / span_bytes).max(2 * threads as u64);
    let buffers = SpanBuffers::default();
    let mut asm = Assembly::new(job.codec, local)?;

    type Outcome = std::thread::Result<Result<Finished, FramesError>>;
    let stopped = || FramesError::Read(io::Error::other("the compression workers stopped"));
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Span)>(threads);
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|scope| -> Result<(), FramesError> {
        // Owned here, so the workers see the channel close whenever this returns.
        let work_tx = work_tx;
        let (done_tx, done_rx) = mpsc::channel::<(u64, Outcome)>();
        for i in 0..threads {
            let (work_rx, done_tx, buffers) = (&work_rx, done_tx.clone(), &buffers);
            std::thread::Builder::new()
                .name(format!("w4b-compress-{i}"))
                .spawn_scoped(scope, move || loop {
                    let next = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((at, span)) = next else {
                        return;
                    };
                    // A panic is handed to the reader, which would otherwise wait for
                    // this span forever.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        finish_span(local, job.codec, span, job.verify_memos, buffers)
                    }));
                    if done_tx.send((at, outcome)).is_err() {
                        return;
                    }
                })
                .map_err(FramesError::Read)?;
        }
        drop(done_tx);
        let mut pending: BTreeMap<u64, Outcome> = BTreeMap::new();
        let (mut next_read, mut next_done) = (0u64, 0u64);
        while next_done < spans {
            if job.cancel.load(Ordering::Relaxed) {
                return Err(FramesError::Cancelled);
            }
            if next_read < spans && next_read - next_done < ahead {
                let span = prepare_span(disk, local, job, known.as_deref(), next_read, &buffers)?;
                if span.bytes.is_some() {
                    asm.report.disk_read = asm.report.disk_read.saturating_add(span.len);
                }
                work_tx.send((next_read, span)).map_err(|_| stopped())?;
                next_read += 1;
                pending.extend(done_rx.try_iter());
            } else {
                let (at, outcome) = done_rx.recv().map_err(|_| stopped())?;
                pending.insert(at, outcome);
            }
            while let Some(outcome) = pending.remove(&next_done) {
                let finished = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                asm.add(finished, disk, local, &buffers, job)?;
                next_done += 1;
            }
        }
        Ok(())
    })?;
    asm.finish(local)
}

/// Span `i` as the reader hands it to a worker: what memos say about it and, unless they
/// say everything, its bytes.
fn prepare_span(
    disk: &mut OutputReader,
    local: &StoreDir,
    job: &Job<'_>,
    known: Option<&[ChunkRef]>,
    i: u64,
    buffers: &SpanBuffers,
) -> Result<Span, FramesError> {
    let chunk = u64::from(CHUNK_SIZE);
    let span_bytes = u64::from(job.span_chunks.max(1)).saturating_mul(chunk);
    let offset = i.saturating_mul(span_bytes);
    let span_len = span_bytes.min(disk.len().saturating_sub(offset));
    let first_chunk = (offset / chunk) as usize;
    let n_chunks = span_len.div_ceil(chunk) as usize;
    let chunks = known
        .and_then(|k| k.get(first_chunk..first_chunk.saturating_add(n_chunks)))
        .map(<[ChunkRef]>::to_vec);
    let mut span = Span {
        offset,
        len: span_len,
        chunks,
        bytes: None,
        frame: None,
        ranges: vec![None; n_chunks],
    };
    if span.chunks.is_some() {
        lookup(local, job.codec, &mut span)?;
    }
    let complete = span.chunks.is_some()
        && (job.codec.is_none() || span.frame.is_some())
        && span.ranges.iter().all(Option::is_some)
        && !job.verify_memos;
    if !complete {
        span.bytes = Some(read_span(disk, offset, span_len, buffers)?);
    }
    Ok(span)
}

/// Fills in what memos know about a span whose chunks are known.
fn lookup(local: &StoreDir, codec: Option<FrameCodec>, span: &mut Span) -> Result<(), FramesError> {
    let Some(chunks) = &span.chunks else {
        return Ok(());
    };
    if let (Some(codec), None) = (codec, &span.frame) {
        if let Some(m) = local
            .memo_get(codec.kind(), &codec.frame_key(chunks))
            .map_err(FramesError::Store)?
        {
            span.frame = FrameMeta::decode(codec, &m.extra, &m.value, span.len).map(|meta| (m.value, meta));
        }
    }
    for (c, slot) in chunks.iter().zip(span.ranges.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        if c.is_zero() {
            *slot = Some(Vec::new());
            continue;
        }
        if let Some(m) = local.memo_get(BMAP, &bmap_key(c)).map_err(FramesError::Store)? {
            *slot = decode_ranges(&m.extra, c.len);
        }
    }
    Ok(())
}

/// The chunk refs of a span's bytes (an all-zero chunk is named without hashing it).
fn hash_chunks(bytes: &[u8]) -> Vec<ChunkRef> {
    bytes
        .chunks(CHUNK_SIZE as usize)
        .map(|c| ChunkRef {
            digest: if c.iter().all(|&b| b == 0) {
                zero_digest(c.len() as u32)
            } else {
                blake3::hash(c).into()
            },
            len: c.len() as u32,
        })
        .collect()
}

/// A span after [`finish_span`].
struct Finished {
    /// With its runs filled in.
    span: Span,
    /// Its frame (with a codec).
    done: Option<Done>,
    /// Chunks whose runs were computed, and reused from memos.
    scanned: u64,
    reused: u64,
}

/// Completes one span on a worker: its runs, its frame.
fn finish_span(
    local: &StoreDir,
    codec: Option<FrameCodec>,
    mut span: Span,
    verify: bool,
    buffers: &SpanBuffers,
) -> Result<Finished, FramesError> {
    let finished = complete_span(local, codec, &mut span, verify);
    if let Some(bytes) = span.bytes.take() {
        buffers.give(bytes);
    }
    let (done, scanned, reused) = finished?;
    Ok(Finished {
        span,
        done,
        scanned,
        reused,
    })
}

/// [`finish_span`]'s work, leaving the span's bytes in it: its frame, and the runs and
/// reused chunks of its block map.
fn complete_span(
    local: &StoreDir,
    codec: Option<FrameCodec>,
    span: &mut Span,
    verify: bool,
) -> Result<(Option<Done>, u64, u64), FramesError> {
    if span.chunks.is_none() {
        if let Some(bytes) = &span.bytes {
            span.chunks = Some(hash_chunks(bytes));
        }
        lookup(local, codec, span)?;
    }
    let chunks = span.chunks.clone().unwrap_or_default();
    let data_chunks = chunks.iter().filter(|c| !c.is_zero()).count() as u64;

    // The frame.
    let done = match codec {
        None => None,
        Some(codec) => Some(match span.frame {
            Some((value, meta)) => {
                let bytes = read_frame(local, &value)?;
                if let (true, Some(frame), Some(raw)) = (verify, &bytes, &span.bytes) {
                    let (again, again_meta) = codec.compress(raw)?;
                    if &again != frame || again_meta != meta {
                        return Err(FramesError::MemoMismatch {
                            what: "frame",
                            offset: span.offset,
                        });
                    }
                }
                Done {
                    value,
                    meta,
                    bytes,
                    compressed: false,
                }
            }
            None => {
                let bytes = span.bytes.as_deref().unwrap_or_default();
                let (frame, meta) = codec.compress(bytes)?;
                let value = local.put_chunk(&frame).map_err(FramesError::Store)?;
                local
                    .memo_put(codec.kind(), &codec.frame_key(&chunks), &value, &meta.encode())
                    .map_err(FramesError::Store)?;
                Done {
                    value,
                    meta,
                    bytes: Some(frame),
                    compressed: true,
                }
            }
        }),
    };

    // The block-map runs of chunks no memo had. A bmap memo lives as long as the frame it
    // names; without a codec, on the empty chunk (a few bytes per chunk of disk data).
    let anchor = done.as_ref().map_or(
        ChunkRef {
            digest: zero_digest(0),
            len: 0,
        },
        |d| d.value,
    );
    let mut scanned = 0u64;
    if let Some(bytes) = &span.bytes {
        for ((c, slot), piece) in chunks
            .iter()
            .zip(span.ranges.iter_mut())
            .zip(bytes.chunks(CHUNK_SIZE as usize))
        {
            if let Some(known) = slot {
                if verify && *known != chunk_ranges(piece) {
                    return Err(FramesError::MemoMismatch {
                        what: "block-map runs",
                        offset: span.offset,
                    });
                }
                continue;
            }
            let runs = chunk_ranges(piece);
            local
                .memo_put(BMAP, &bmap_key(c), &anchor, &encode_ranges(&runs))
                .map_err(FramesError::Store)?;
            *slot = Some(runs);
            scanned += 1;
        }
    }
    let reused = data_chunks.saturating_sub(scanned);
    Ok((done, scanned, reused))
}

/// A memoised frame's bytes, verified; `None` when the blob is missing or corrupt (it is
/// quarantined by the read), so the caller makes the frame again.
fn read_frame(local: &StoreDir, value: &ChunkRef) -> Result<Option<Vec<u8>>, FramesError> {
    match local.read(&value.digest) {
        Ok(b) if b.len() == value.len as usize => Ok(Some(b)),
        Ok(_) | Err(CacheError::Missing { .. } | CacheError::Corrupt { .. }) => Ok(None),
        Err(e) => Err(FramesError::Store(e)),
    }
}

/// The disk's bytes at `offset`, in a buffer from `buffers` (give it back when done).
fn read_span(
    disk: &mut OutputReader,
    offset: u64,
    len: u64,
    buffers: &SpanBuffers,
) -> Result<Vec<u8>, FramesError> {
    let mut buf = buffers.take(len as usize);
    let read = disk
        .seek(SeekFrom::Start(offset))
        .and_then(|_| disk.read_exact(&mut buf));
    match read {
        Ok(()) => Ok(buf),
        Err(e) => {
            buffers.give(buf);
            Err(FramesError::Read(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liblzma_names_the_locked_crate() {
        let lock = include_str!("../../Cargo.lock");
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"liblzma-sys\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .expect("liblzma-sys in Cargo.lock");
        assert_eq!(LIBLZMA, format!("liblzma-sys {version}"));
    }

    #[test]
    fn ranges_round_trip_and_malformed_extras_are_misses() {
        let runs = vec![
            BmapRange {
                first: 0,
                last: 3,
                sha256: [1; 32],
            },
            BmapRange {
                first: 7,
                last: 7,
                sha256: [2; 32],
            },
        ];
        let e = encode_ranges(&runs);
        assert_eq!(decode_ranges(&e, CHUNK_SIZE), Some(runs.clone()));
        assert_eq!(decode_ranges(&e[..e.len() - 1], CHUNK_SIZE), None);
        // Block 7 is beyond a chunk of 5 blocks.
        assert_eq!(decode_ranges(&e, 5 * 4096), None);
        let backwards = encode_ranges(&[runs[1].clone(), runs[0].clone()]);
        assert_eq!(decode_ranges(&backwards, CHUNK_SIZE), None);
    }

    #[test]
    fn frame_keys_name_codec_level_and_every_chunk() {
        let c = |b: u8, len| ChunkRef {
            digest: Digest([b; 32]),
            len,
        };
        let z3 = FrameCodec::Zstd { level: 3 };
        let base = z3.frame_key(&[c(1, 10), c(2, 10)]);
        assert_ne!(
            base,
            FrameCodec::Zstd { level: 4 }.frame_key(&[c(1, 10), c(2, 10)])
        );
        assert_ne!(base, FrameCodec::Xz { level: 3 }.frame_key(&[c(1, 10), c(2, 10)]));
        assert_ne!(base, z3.frame_key(&[c(2, 10), c(1, 10)]));
        assert_ne!(base, z3.frame_key(&[c(1, 10), c(2, 11)]));
        assert_ne!(base, z3.frame_key(&[c(1, 10)]));
        assert_ne!(bmap_key(&c(1, 10)), bmap_key(&c(1, 11)));
    }
}
