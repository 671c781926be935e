//! `compress`: the raw disk into what `--out` holds — the compressed `image`
//! (`<name>.img.zst`, `.xz`, `.gz`, or the raw `.img`), its `bmap` (bmaptool 2.0, over the
//! raw disk, so `bmaptool copy` writes only the blocks that hold data) and `sha256`, the
//! `sha256sum` line for the image under its file name.
//!
//! zstd and xz images are **chunked outputs assembled from memoised frames**
//! ([`super::frames`]): the disk is cut into spans of `k` 1 MiB chunks, each span is one
//! independent zstd frame (then zstd's seek table) or xz block (in one xz stream), and a
//! rebuild compresses only the spans whose chunks changed. The block map is made from
//! per-chunk runs, memoised by chunk digest, so it costs what changed too. gzip is one
//! stream over the whole disk as before, and `none` is the disk itself; both still read
//! the disk a second time (hashing it for the `sha256` line, and deflating it).
//!
//! The bytes depend only on the disk, the codec, its level and the span, never on the
//! thread count or on which frames came from memos. The span per level was chosen by
//! measurement (`docs/decisions.md`, "Frame spans"; [`ImageCodec::default_span_chunks`]).
//!
//! Progress counts disk bytes: one pass for zstd and xz (spans done, read or reused), two
//! for gzip and `none` (the block map, then the image). After a run the step notes how
//! many frames it compressed and reused.
//!
//! | keyed | why |
//! |---|---|
//! | `output.compression` (`zstd:19`, `xz:6`, `gz:9`, `none`) | the image's bytes |
//! | `output.file_name` | it is written into the `sha256` line |
//! | `compress.frame_span` (zstd and xz: `16MiB`) | where frames start: the image's bytes |
//! | `gzip.deflate` (gzip only) | the deflate implementation |
//! | not keyed: `threads` | the output is the same for any thread count |
//! | not keyed: libzstd and liblzma versions | pinned by `Cargo.lock`; they key the frame memos |

#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::frames::{self, FrameCodec, FrameReport, FramesError};
use super::{tree_error, unavailable_blob};
use crate::formats::bmap::{write_bmap_ranges, BmapError};
use crate::formats::compress::{compress, sha256_line, xz_block_size, Codec, CompressError};
use crate::store::AppStore;
use crate::tree::Blobs;

/// The deflate implementation behind `.gz` output (see `components`).
pub const GZIP_DEFLATE: &str = "zlib-rs";

/// The image's compression, as keyed (threads are a separate, unkeyed setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageCodec {
    /// zstd at a level 1..=22.
    Zstd { level: i32 },
    /// xz at a preset 0..=9.
    Xz { level: u32 },
    /// gzip at a level 0..=9.
    Gzip { level: u32 },
    /// The raw image.
    None,
}

impl ImageCodec {
    /// The key component's value: `zstd:19`, `xz:6`, `gz:9`, `none`.
    pub fn key(&self) -> String {
        match self {
            ImageCodec::Zstd { level } => format!("zstd:{level}"),
            ImageCodec::Xz { level } => format!("xz:{level}"),
            ImageCodec::Gzip { level } => format!("gz:{level}"),
            ImageCodec::None => "none".into(),
        }
    }

    /// The file name suffix after `.img`, with its dot (empty for `None`).
    pub fn extension(&self) -> &'static str {
        self.codec(1).extension()
    }

    /// The frame span's length in 1 MiB chunks for this codec and level (0 for gzip and
    /// `none`, which are not framed). Measured on the bench root (docs/performance.md,
    /// "Compressed frames"; decision in docs/decisions.md, "Frame spans"): zstd -3 loses
    /// 2.1 % at 4 MiB and 0.2 % at 8 MiB against one frame, zstd -19 3.2–3.7 % at 8 MiB
    /// and 1.2 % at 16 MiB; xz keeps its blocks of 3 × the dictionary (−0.0 % against
    /// today's output). Levels up to 12 use windows of at most 4 MiB, as -3's 2 MiB; 13–19
    /// use 8 MiB, as -19; 20–22 (32–128 MiB windows) take 32 MiB, unmeasured.
    pub fn default_span_chunks(&self) -> u32 {
        match *self {
            ImageCodec::Zstd { level } if level <= 12 => 8,
            ImageCodec::Zstd { level } if level <= 19 => 16,
            ImageCodec::Zstd { .. } => 32,
            ImageCodec::Xz { level } => (xz_block_size(level) >> 20) as u32,
            ImageCodec::Gzip { .. } | ImageCodec::None => 0,
        }
    }

    fn framed(&self) -> Option<FrameCodec> {
        match *self {
            ImageCodec::Zstd { level } => Some(FrameCodec::Zstd { level }),
            ImageCodec::Xz { level } => Some(FrameCodec::Xz { level }),
            ImageCodec::Gzip { .. } | ImageCodec::None => None,
        }
    }

    fn codec(&self, threads: u32) -> Codec {
        match *self {
            ImageCodec::Zstd { level } => Codec::Zstd { level, threads },
            ImageCodec::Xz { level } => Codec::Xz { level, threads },
            ImageCodec::Gzip { level } => Codec::Gzip { level },
            ImageCodec::None => Codec::None,
        }
    }
}

/// Why the outputs could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CompressStepError {
    #[error("cannot compress the image")]
    #[diagnostic(code(w4b::compress::step))]
    Compress(
        #[source]
        #[diagnostic_source]
        CompressError,
    ),

    #[error("cannot make the block map")]
    #[diagnostic(code(w4b::compress::bmap))]
    Bmap(
        #[source]
        #[diagnostic_source]
        BmapError,
    ),

    #[error("cannot write the image into the cache")]
    #[diagnostic(
        code(w4b::compress::store),
        help("the compressed image is written into the cache; make room on its filesystem")
    )]
    Store(#[source] w4b_cache::CacheError),

    #[error("cannot assemble the image from frames")]
    #[diagnostic(code(w4b::compress::frames))]
    Frames(
        #[source]
        #[diagnostic_source]
        FramesError,
    ),

    #[error("a frame span of {chunks} chunks is out of range")]
    #[diagnostic(
        code(w4b::compress::frame_span),
        help("a span is 1 to 1024 chunks of 1 MiB (zstd's seekable format caps a frame at 1 GiB)")
    )]
    FrameSpan { chunks: u32 },
}

/// The most chunks a span may hold: a seekable zstd frame is at most 1 GiB.
pub const MAX_SPAN_CHUNKS: u32 = 1024;

/// The disk as a stream that reports progress and stops on Ctrl-C.
struct Feed<'a, R> {
    inner: R,
    pos: u64,
    base: u64,
    total: u64,
    cancel: &'a AtomicBool,
    progress: &'a (dyn Fn(u64, Option<u64>) + Sync),
}

impl<R: Read> Read for Feed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the build was interrupted"));
        }
        let n = self.inner.read(buf)?;
        self.pos = self.pos.saturating_add(n as u64);
        (self.progress)(self.base.saturating_add(self.pos), Some(self.total));
        Ok(n)
    }
}

/// `compress`: input 0 is `disk` (`disk`); outputs `image`, `bmap` and `sha256`.
pub struct CompressStep {
    pub store: Arc<AppStore>,
    pub codec: ImageCodec,
    pub codec_location: Option<String>,
    /// Worker threads for zstd and xz (at least 1); not keyed.
    pub threads: u32,
    /// Chunks (1 MiB) per zstd frame or xz block; [`ImageCodec::default_span_chunks`]
    /// unless a test says otherwise. Ignored for gzip and `none`.
    pub span_chunks: u32,
    /// The image's file name in `--out` (`north.img.zst`), for the `sha256` line.
    pub file_name: String,
    pub file_name_location: Option<String>,
    /// `W4B_VERIFY_MEMOS`: re-render every frame and block-map memo hit and fail on a
    /// difference (see [`frames::Job::verify_memos`]); not keyed (it never changes bytes).
    pub verify_memos: bool,
}

impl CompressStep {
    fn feed<'a, R: Read>(
        cx: &'a RunContext<'a>,
        disk: OutputRef,
        base: u64,
        reader: R,
    ) -> Feed<'a, impl Read> {
        Feed {
            inner: io::BufReader::with_capacity(1 << 20, reader),
            pos: 0,
            base,
            total: disk.size.saturating_mul(2),
            cancel: cx.cancel,
            progress: cx.progress,
        }
    }

    /// The disk (a blob or a chunked output), verified as it is read.
    fn open_disk(&self, disk: OutputRef) -> Result<w4b_cache::OutputReader, StepError> {
        use w4b_cache::CacheError;
        self.store.inner().open_output(&disk.digest).map_err(|e| match e {
            CacheError::Missing { .. } | CacheError::Corrupt { .. } => {
                StepError::InputUnavailable(disk.digest)
            }
            other => StepError::diag(CompressStepError::Store(other)),
        })
    }

    /// A failed read of the disk: Ctrl-C, or a missing or corrupt blob.
    fn read_error(cx: &RunContext<'_>, disk: OutputRef, e: &io::Error) -> StepError {
        if cx.cancel.load(Ordering::Relaxed) {
            StepError::Cancelled
        } else {
            StepError::InputUnavailable(unavailable_blob(e).unwrap_or(disk.digest))
        }
    }
}

impl CompressStep {
    /// gzip and `none`: one stream over the whole disk (the second pass), as a plain blob
    /// (gzip) or the disk itself (`none`, hashed for the `sha256` line).
    fn stream_image(
        &self,
        cx: &RunContext<'_>,
        disk: OutputRef,
        mut reader: w4b_cache::OutputReader,
    ) -> Result<(OutputRef, [u8; 32]), StepError> {
        use std::io::Seek as _;
        reader
            .seek(io::SeekFrom::Start(0))
            .map_err(|e| Self::read_error(cx, disk, &e))?;
        let mut feed = Self::feed(cx, disk, disk.size, reader);
        let codec = self.codec.codec(self.threads.max(1));
        let map_err = |e: CompressError| match e {
            CompressError::Read(io) => Self::read_error(cx, disk, &io),
            other => StepError::diag(CompressStepError::Compress(other)),
        };
        if self.codec == ImageCodec::None {
            let report = compress(&mut feed, &mut io::sink(), codec, &mut |_| {}).map_err(map_err)?;
            return Ok((disk, report.sha256));
        }
        let mut w = self
            .store
            .local()
            .writer()
            .map_err(|e| StepError::diag(CompressStepError::Store(e)))?;
        let report = compress(&mut feed, &mut w, codec, &mut |_| {}).map_err(map_err)?;
        cx.check_cancel()?;
        let (digest, size) = w
            .commit()
            .map_err(|e| StepError::diag(CompressStepError::Store(e)))?;
        Ok((OutputRef { digest, size }, report.sha256))
    }
}

/// The step's line for people: what it compressed and what it reused.
fn note(codec: &ImageCodec, r: &FrameReport) -> String {
    let bmap = format!(
        "block map: {} chunks scanned, {} reused",
        r.bmap_scanned, r.bmap_reused
    );
    let read = crate::ui::bytes(r.disk_read);
    match codec.framed() {
        Some(_) => {
            let mut s = format!(
                "{}: {} of {} frames compressed, {} reused",
                codec.key(),
                r.compressed,
                r.spans,
                r.reused
            );
            if r.repaired > 0 {
                s.push_str(&format!(
                    " ({} remade: their cached copy was damaged)",
                    r.repaired
                ));
            }
            format!("{s}; {bmap}; {read} of disk read")
        }
        None => format!("{}: one stream over the disk; {bmap}", codec.key()),
    }
}

impl Step for CompressStep {
    fn kind(&self) -> &'static str {
        "compress"
    }
    fn version(&self) -> u32 {
        // 2: zstd and xz images are frames (seekable zstd, multi-block xz) in a chunked
        // output; the block map's ranges are split at chunk boundaries.
        2
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let mut c = vec![
            Component::param("output.compression", self.codec.key()).at(self.codec_location.clone()),
            Component::param("output.file_name", &self.file_name).at(self.file_name_location.clone()),
        ];
        // gzip's bytes depend on the deflate implementation: flate2 runs zlib-rs since the
        // OpenPGP crate enabled it (it was miniz_oxide before), so a cached `.gz` made by
        // the other one must not be reused. zstd and xz are pinned by their own crates.
        if let ImageCodec::Gzip { .. } = self.codec {
            c.push(Component::param("gzip.deflate", GZIP_DEFLATE));
        }
        if self.codec.framed().is_some() {
            c.push(Component::param(
                "compress.frame_span",
                format!("{}MiB", self.span_chunks),
            ));
        }
        Ok(c)
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let disk = cx.input(0, "disk")?;
        let blobs: &dyn Blobs = self.store.as_ref();
        let framed = self.codec.framed();
        if framed.is_some() && !(1..=MAX_SPAN_CHUNKS).contains(&self.span_chunks) {
            return Err(StepError::diag(CompressStepError::FrameSpan {
                chunks: self.span_chunks,
            }));
        }

        // One pass over the disk's spans: the block map and, for zstd and xz, the image.
        let total = match framed {
            Some(_) => disk.size,
            None => disk.size.saturating_mul(2),
        };
        let progress = |done: u64| (cx.progress)(done, Some(total));
        let job = frames::Job {
            codec: framed,
            span_chunks: self.span_chunks,
            threads: self.threads.max(1) as usize,
            cancel: cx.cancel,
            progress: &progress,
            verify_memos: self.verify_memos,
        };
        let mut reader = self.open_disk(disk)?;
        // The workers' frame and block-map memos are written as one batch per kind at
        // the end: a cold build remembers thousands.
        let local = self.store.local();
        let pass = local
            .with_memo_batch(|| frames::run(&mut reader, local, &job))
            .map_err(|e| StepError::diag(CompressStepError::Store(e)))?
            .map_err(|e| match e {
                FramesError::Read(io) => Self::read_error(cx, disk, &io),
                FramesError::Cancelled => StepError::Cancelled,
                other => StepError::diag(CompressStepError::Frames(other)),
            })?;
        cx.check_cancel()?;
        cx.note(&note(&self.codec, &pass.report));
        let mut bmap = Vec::new();
        write_bmap_ranges(disk.size, pass.ranges, &mut bmap)
            .map_err(|e| StepError::diag(CompressStepError::Bmap(e)))?;
        let bmap_digest = blobs.put(&bmap).map_err(tree_error)?;

        let (image, sha256) = match (pass.image, pass.flat.sha256) {
            (Some((digest, size)), Some(sha256)) => (OutputRef { digest, size }, sha256),
            _ => self.stream_image(cx, disk, reader)?,
        };
        cx.check_cancel()?;
        let line = sha256_line(&sha256, &self.file_name);
        let sha_digest = blobs.put(line.as_bytes()).map_err(tree_error)?;

        let mut out = Outputs::new();
        out.insert("image".into(), image);
        out.insert(
            "bmap".into(),
            OutputRef {
                digest: bmap_digest,
                size: bmap.len() as u64,
            },
        );
        out.insert(
            "sha256".into(),
            OutputRef {
                digest: sha_digest,
                size: line.len() as u64,
            },
        );
        Ok(out)
    }
}

#[cfg(test)]
#[path = "compress_tests.rs"]
pub(crate) mod tests;
