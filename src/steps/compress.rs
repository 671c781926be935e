//! `compress`: the raw disk into what `--out` holds — the compressed `image`
//! (`<name>.img.zst`, `.xz`, `.gz`, or the raw `.img`), its `bmap` (bmaptool 2.0, over the
//! raw disk, so `bmaptool copy` writes only the blocks that hold data) and `sha256`, the
//! `sha256sum` line for the image under its file name.
//!
//! The compressed bytes depend only on the disk, the codec and the level
//! ([`crate::formats::compress`] pins zstd's and xz's block layout), so the thread count
//! is a run-time choice, deliberately not keyed; the image is byte-identical whatever it
//! is. An uncompressed image is the disk blob itself: nothing is copied.
//!
//! Progress counts bytes read from the disk over both passes (block map, then
//! compression), out of twice the disk's size; every read checks for Ctrl-C.
//!
//! | keyed | why |
//! |---|---|
//! | `output.compression` (`zstd:19`, `xz:6`, `gz:9`, `none`) | the image's bytes |
//! | `output.file_name` | it is written into the `sha256` line |
//! | not keyed: `threads` | the output is the same for any thread count |

#![forbid(unsafe_code)]

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::{tree_error, unavailable_blob};
use crate::formats::bmap::{write_bmap, BmapError};
use crate::formats::compress::{compress, sha256_line, Codec, CompressError};
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
}

/// A blob stream that reports progress, stops on Ctrl-C, and can "seek" to where it is
/// (all [`write_bmap`] asks of it: a rewind to the start it is already at).
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

impl<R: Read> Seek for Feed<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match to {
            SeekFrom::Start(p) if p == self.pos => Ok(p),
            SeekFrom::Current(0) => Ok(self.pos),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a blob stream reads forward only",
            )),
        }
    }
}

/// `compress`: input 0 is `disk` (`disk`); outputs `image`, `bmap` and `sha256`.
pub struct CompressStep {
    pub store: Arc<AppStore>,
    pub codec: ImageCodec,
    pub codec_location: Option<String>,
    /// Worker threads for zstd and xz (at least 1); not keyed.
    pub threads: u32,
    /// The image's file name in `--out` (`north.img.zst`), for the `sha256` line.
    pub file_name: String,
    pub file_name_location: Option<String>,
}

impl CompressStep {
    fn feed<'a>(
        &self,
        cx: &'a RunContext<'a>,
        disk: OutputRef,
        base: u64,
    ) -> Result<Feed<'a, impl Read>, StepError> {
        let reader = self
            .store
            .inner()
            .reader(&disk.digest)
            .map_err(|_| StepError::InputUnavailable(disk.digest))?;
        Ok(Feed {
            inner: io::BufReader::with_capacity(1 << 20, reader),
            pos: 0,
            base,
            total: disk.size.saturating_mul(2),
            cancel: cx.cancel,
            progress: cx.progress,
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

impl Step for CompressStep {
    fn kind(&self) -> &'static str {
        "compress"
    }
    fn version(&self) -> u32 {
        1
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
        Ok(c)
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let disk = cx.input(0, "disk")?;
        let blobs: &dyn Blobs = self.store.as_ref();

        // The block map, over the raw disk.
        let mut bmap = Vec::new();
        let mut feed = self.feed(cx, disk, 0)?;
        write_bmap(&mut feed, &mut bmap).map_err(|e| match e {
            BmapError::Read(io) => Self::read_error(cx, disk, &io),
            other => StepError::diag(CompressStepError::Bmap(other)),
        })?;
        cx.check_cancel()?;
        let bmap_digest = blobs.put(&bmap).map_err(tree_error)?;

        // The image.
        let mut feed = self.feed(cx, disk, disk.size)?;
        let codec = self.codec.codec(self.threads.max(1));
        let map_err = |e: CompressError| match e {
            CompressError::Read(io) => Self::read_error(cx, disk, &io),
            other => StepError::diag(CompressStepError::Compress(other)),
        };
        let (image, report) = if self.codec == ImageCodec::None {
            // The image is the disk: hash it for the sha256 line, copy nothing.
            let report = compress(&mut feed, &mut io::sink(), codec, &mut |_| {}).map_err(map_err)?;
            (disk, report)
        } else {
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
            (OutputRef { digest, size }, report)
        };
        cx.check_cancel()?;
        let line = sha256_line(&report.sha256, &self.file_name);
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
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<AppStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        (dir, store)
    }

    fn step(store: &Arc<AppStore>, codec: ImageCodec, threads: u32) -> CompressStep {
        CompressStep {
            store: store.clone(),
            codec,
            codec_location: None,
            threads,
            file_name: "north.img.zst".into(),
            file_name_location: None,
        }
    }

    /// A 3 MiB "disk": data, a zero run, data.
    fn disk(store: &AppStore) -> Outputs {
        let mut bytes = vec![0u8; 3 << 20];
        for (i, b) in bytes[..1 << 20].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        bytes[(3 << 20) - 1] = 1;
        let digest = Blobs::put(store, &bytes).unwrap();
        let mut o = Outputs::new();
        o.insert(
            "disk".into(),
            OutputRef {
                digest,
                size: bytes.len() as u64,
            },
        );
        o
    }

    fn run(s: &CompressStep, inputs: &[Outputs], cancelled: bool) -> Result<Outputs, StepError> {
        let cancel = AtomicBool::new(cancelled);
        let last = std::sync::Mutex::new(None);
        let progress = |d: u64, t: Option<u64>| *last.lock().unwrap() = Some((d, t));
        let cx = RunContext {
            name: "//hives:t#compress",
            inputs,
            cache: s.store.as_ref(),
            cancel: &cancel,
            progress: &progress,
            trees: &Default::default(),
        };
        let out = s.run(&cx);
        if out.is_ok() {
            let total = 2 * inputs[0]["disk"].size;
            assert_eq!(*last.lock().unwrap(), Some((total, Some(total))));
        }
        out
    }

    #[test]
    fn the_image_is_the_same_for_any_thread_count_and_threads_are_not_keyed() {
        let (_d, store) = store();
        let ins = [disk(&store)];
        for codec in [ImageCodec::Zstd { level: 3 }, ImageCodec::Xz { level: 1 }] {
            let one = run(&step(&store, codec, 1), &ins, false).unwrap();
            let three = run(&step(&store, codec, 3), &ins, false).unwrap();
            assert_eq!(one, three, "{codec:?}");
        }
        let cx = PlanContext { name: "t" };
        let c1 = step(&store, ImageCodec::Zstd { level: 19 }, 1)
            .components(&cx)
            .unwrap();
        let c8 = step(&store, ImageCodec::Zstd { level: 19 }, 8)
            .components(&cx)
            .unwrap();
        assert_eq!(c1, c8);
        let values: Vec<_> = c1.iter().map(|c| format!("{}={}", c.name, c.value)).collect();
        assert_eq!(
            values,
            ["output.compression=zstd:19", "output.file_name=north.img.zst"]
        );
    }

    #[test]
    fn outputs_are_the_image_its_sha256_line_and_a_bmap_and_none_copies_nothing() {
        let (_d, store) = store();
        let ins = [disk(&store)];
        let out = run(&step(&store, ImageCodec::Gzip { level: 6 }, 1), &ins, false).unwrap();
        let image = Blobs::get(store.as_ref(), &out["image"].digest).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&image[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, Blobs::get(store.as_ref(), &ins[0]["disk"].digest).unwrap());
        let line = String::from_utf8(Blobs::get(store.as_ref(), &out["sha256"].digest).unwrap()).unwrap();
        let sha = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&image))
        };
        assert_eq!(line, format!("{sha}  north.img.zst\n"));
        let bmap = String::from_utf8(Blobs::get(store.as_ref(), &out["bmap"].digest).unwrap()).unwrap();
        assert!(bmap.contains("<ImageSize> 3145728 </ImageSize>"), "{bmap}");
        // 256 data blocks, then the last block: two ranges.
        assert!(
            bmap.contains("> 0-255 </Range>") && bmap.contains("> 767 </Range>"),
            "{bmap}"
        );

        let none = run(&step(&store, ImageCodec::None, 1), &ins, false).unwrap();
        assert_eq!(none["image"], ins[0]["disk"]);
        assert_eq!(none["bmap"], out["bmap"]);
        assert_ne!(none["sha256"], out["sha256"]);
    }

    #[test]
    fn a_cancelled_or_missing_disk_is_reported_as_such() {
        let (_d, store) = store();
        let ins = [disk(&store)];
        assert!(matches!(
            run(&step(&store, ImageCodec::Zstd { level: 1 }, 1), &ins, true),
            Err(StepError::Cancelled)
        ));
        let mut gone = ins[0].clone();
        let missing = w4b_cache::Digest::of(b"not stored");
        gone.insert(
            "disk".into(),
            OutputRef {
                digest: missing,
                size: 10,
            },
        );
        match run(&step(&store, ImageCodec::Zstd { level: 1 }, 1), &[gone], false) {
            Err(StepError::InputUnavailable(d)) => assert_eq!(d, missing),
            other => panic!("{other:?}"),
        }
    }
}
