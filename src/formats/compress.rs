//! Compressing the finished image for `--out`, and the `sha256sum` line that goes with it.
//!
//! The image is the last and largest output of a build, so it is compressed in one
//! streaming pass with fixed memory (a 1 MiB input buffer plus the encoder's own state),
//! and the compressed bytes are hashed (SHA-256 for the `.sha256` file users check,
//! BLAKE3 for w4b's own records) on their way to the writer instead of being read back.
//!
//! Every codec is configured so that the compressed bytes depend only on the input, the
//! codec and its level, never on the thread count or the machine:
//!
//! - zstd always runs in its multithreaded mode, even for one worker. zstd promises the
//!   same frame for any `nbWorkers >= 1`, but its single-threaded mode (`nbWorkers = 0`)
//!   cuts the input differently, so "one thread" means one worker, not that mode. Frames
//!   carry a content checksum.
//! - xz always runs liblzma's multithreaded encoder, which compresses independent blocks
//!   of a fixed uncompressed size; the block size is set explicitly from the level (three
//!   times the preset's dictionary, at least 1 MiB, liblzma's own rule) so the block
//!   layout, and with it the output, does not depend on how many threads encode it. The
//!   integrity check is CRC64, as `xz` writes by default.
//! - gzip is single-threaded; its header is pinned: mtime 0, no file name, no comment,
//!   OS byte 255 ("unknown").
//!
//! The tests decompress with the real `zstd`, `xz` and `gzip` tools, compare outputs for
//! different thread counts, and pin digests of a fixed input.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// Size of the input buffer: large enough to keep the encoders busy, small enough to
/// keep memory fixed.
const CHUNK: usize = 1 << 20;

/// How the image is compressed (`output.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// zstd at `level` (1..=22) with `threads` workers (at least 1).
    Zstd { level: i32, threads: u32 },
    /// xz at preset `level` (0..=9) with `threads` encoder threads (at least 1).
    Xz { level: u32, threads: u32 },
    /// gzip (DEFLATE) at `level` (0..=9).
    Gzip { level: u32 },
    /// The image as is.
    None,
}

impl Codec {
    /// The file name suffix this codec adds after `.img`, with its dot (empty for `None`).
    pub fn extension(&self) -> &'static str {
        match self {
            Codec::Zstd { .. } => ".zst",
            Codec::Xz { .. } => ".xz",
            Codec::Gzip { .. } => ".gz",
            Codec::None => "",
        }
    }

    /// Rejects levels and thread counts the encoders would refuse or silently clamp.
    fn validate(&self) -> Result<(), CompressError> {
        let (codec, level, range, threads): (&'static str, i64, (i64, i64), Option<u32>) = match *self {
            Codec::Zstd { level, threads } => ("zstd", level.into(), (1, 22), Some(threads)),
            Codec::Xz { level, threads } => ("xz", level.into(), (0, 9), Some(threads)),
            Codec::Gzip { level } => ("gzip", level.into(), (0, 9), None),
            Codec::None => return Ok(()),
        };
        if level < range.0 || level > range.1 {
            return Err(CompressError::InvalidLevel {
                codec,
                level,
                min: range.0,
                max: range.1,
            });
        }
        if threads == Some(0) {
            return Err(CompressError::NoThreads { codec });
        }
        Ok(())
    }
}

/// What [`compress`] read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressReport {
    /// Bytes read from the input.
    pub in_bytes: u64,
    /// Bytes written to the output (the compressed file's size).
    pub out_bytes: u64,
    /// SHA-256 of the compressed output.
    pub sha256: [u8; 32],
    /// BLAKE3 of the compressed output.
    pub blake3: [u8; 32],
}

impl CompressReport {
    /// The SHA-256 as lowercase hex, as `sha256sum` prints it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Why the image could not be compressed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CompressError {
    #[error("{codec} level {level} is out of range")]
    #[diagnostic(
        code(w4b::compress::invalid_level),
        help("use a level from {min} to {max} in `output.compression`")
    )]
    InvalidLevel {
        codec: &'static str,
        level: i64,
        min: i64,
        max: i64,
    },

    #[error("{codec} needs at least one thread")]
    #[diagnostic(
        code(w4b::compress::no_threads),
        help("use 1 or more threads; the output is the same for any thread count")
    )]
    NoThreads { codec: &'static str },

    #[error("reading the image to compress failed")]
    #[diagnostic(code(w4b::compress::read))]
    Read(#[source] io::Error),

    #[error("{codec} compression failed while writing the output")]
    #[diagnostic(code(w4b::compress::write))]
    Write {
        codec: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Passes bytes through to `inner`, counting and hashing them.
struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
    sha256: Sha256,
    blake3: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer accepted is part of the output.
        let written = &buf[..n];
        self.sha256.update(written);
        self.blake3.update(written);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses all of `input` into `out` with `codec`, calling `progress` with the number
/// of input bytes consumed so far after every chunk.
///
/// The output is flushed but not synced; the caller owns the file.
pub fn compress<R: Read, W: Write>(
    input: &mut R,
    out: &mut W,
    codec: Codec,
    progress: &mut dyn FnMut(u64),
) -> Result<CompressReport, CompressError> {
    codec.validate()?;
    let mut sink = HashingWriter {
        inner: out,
        count: 0,
        sha256: Sha256::new(),
        blake3: blake3::Hasher::new(),
    };
    let name = codec_name(codec);
    let wrap = |source: io::Error| CompressError::Write { codec: name, source };
    let in_bytes = match codec {
        Codec::Zstd { level, threads } => {
            let mut enc = zstd::stream::write::Encoder::new(&mut sink, level).map_err(wrap)?;
            enc.multithread(threads).map_err(wrap)?;
            enc.include_checksum(true).map_err(wrap)?;
            let n = pump(input, &mut enc, progress, wrap)?;
            enc.finish().map_err(wrap)?;
            n
        }
        Codec::Xz { level, threads } => {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(threads)
                .block_size(xz_block_size(level))
                .preset(level)
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .map_err(|e| wrap(e.into()))?;
            let mut enc = liblzma::write::XzEncoder::new_stream(&mut sink, stream);
            let n = pump(input, &mut enc, progress, wrap)?;
            enc.finish().map_err(wrap)?;
            n
        }
        Codec::Gzip { level } => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(&mut sink, flate2::Compression::new(level));
            let n = pump(input, &mut enc, progress, wrap)?;
            enc.finish().map_err(wrap)?;
            n
        }
        Codec::None => pump(input, &mut sink, progress, wrap)?,
    };
    sink.flush().map_err(wrap)?;
    Ok(CompressReport {
        in_bytes,
        out_bytes: sink.count,
        sha256: sink.sha256.finalize().into(),
        blake3: *sink.blake3.finalize().as_bytes(),
    })
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Zstd { .. } => "zstd",
        Codec::Xz { .. } => "xz",
        Codec::Gzip { .. } => "gzip",
        Codec::None => "copy",
    }
}

/// The xz block size for preset `level`: three times the preset's LZMA2 dictionary, at
/// least 1 MiB. Pinned here rather than left to liblzma so the block layout is part of
/// w4b's definition of the output. The framed `.img.xz` uses it as its span, which keeps
/// the ratio of this layout (docs/performance.md, "Compressed frames").
pub fn xz_block_size(level: u32) -> u64 {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    let dict = match level {
        0 => 256 * KIB,
        1 => MIB,
        2 => 2 * MIB,
        3 | 4 => 4 * MIB,
        5 | 6 => 8 * MIB,
        7 => 16 * MIB,
        8 => 32 * MIB,
        _ => 64 * MIB,
    };
    (3 * dict).max(MIB)
}

/// Copies `input` into `enc` in fixed chunks, reporting progress; returns the byte count.
fn pump<R: Read, E: Write>(
    input: &mut R,
    enc: &mut E,
    progress: &mut dyn FnMut(u64),
    wrap: impl Fn(io::Error) -> CompressError,
) -> Result<u64, CompressError> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CompressError::Read(e)),
        };
        enc.write_all(&buf[..n]).map_err(&wrap)?;
        total += n as u64;
        progress(total);
    }
    Ok(total)
}

/// One line of a `sha256sum` file for `file_name`: `<hex>  <name>\n`.
///
/// Names with a backslash or a newline are written the way GNU `sha256sum` writes them:
/// the line starts with `\` and those characters are escaped as `\\` and `\n`.
pub fn sha256_line(digest: &[u8; 32], file_name: &str) -> String {
    let hex = hex::encode(digest);
    if file_name.contains(['\\', '\n']) {
        let escaped = file_name.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{hex}  {escaped}\n")
    } else {
        format!("{hex}  {file_name}\n")
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // spawns the oracle tools, reads `CI`
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    use crate::oracle::have;

    /// 8 MiB that compress to something but not to nothing: a xorshift stream over a
    /// small alphabet, with a zeroed stretch like the free space of an image.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(len);
        for i in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = if (len / 2..len / 2 + len / 8).contains(&i) {
                0
            } else {
                b"w4b beehive "[(x % 12) as usize] ^ ((x >> 40) as u8 & 3)
            };
            v.push(b);
        }
        v
    }

    fn run(input: &[u8], codec: Codec) -> (Vec<u8>, CompressReport) {
        let mut out = Vec::new();
        let mut last = 0;
        let report = compress(&mut &input[..], &mut out, codec, &mut |n| {
            assert!(n > last, "progress must increase");
            last = n;
        })
        .expect("compress");
        assert_eq!(last, input.len() as u64);
        assert_eq!(report.in_bytes, input.len() as u64);
        assert_eq!(report.out_bytes, out.len() as u64);
        assert_eq!(report.sha256, <[u8; 32]>::from(Sha256::digest(&out)));
        assert_eq!(report.blake3, *blake3::hash(&out).as_bytes());
        (out, report)
    }

    /// Decompresses `data` with the real command-line tool.
    fn decompress_with(tool: &str, data: &[u8], dir: &Path) -> Vec<u8> {
        let path = dir.join(format!("in.{tool}"));
        std::fs::write(&path, data).expect("write");
        let out = Command::new(tool)
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} -dc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn every_codec_round_trips_through_the_real_tools() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = sample(3 << 20);
        for (tool, codec) in [
            ("zstd", Codec::Zstd { level: 3, threads: 2 }),
            ("xz", Codec::Xz { level: 1, threads: 2 }),
            ("gzip", Codec::Gzip { level: 6 }),
        ] {
            let (out, report) = run(&input, codec);
            assert!(report.out_bytes < report.in_bytes, "{tool} did not compress");
            assert!(
                decompress_with(tool, &out, dir.path()) == input,
                "{tool} round trip"
            );
        }
        let (out, _) = run(&input, Codec::None);
        assert!(out == input);
    }

    #[test]
    fn empty_input_is_a_valid_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (tool, codec) in [
            ("zstd", Codec::Zstd { level: 3, threads: 1 }),
            ("xz", Codec::Xz { level: 0, threads: 1 }),
            ("gzip", Codec::Gzip { level: 9 }),
        ] {
            let (out, _) = run(&[], codec);
            assert!(!out.is_empty());
            if !have(tool) {
                continue;
            }
            assert!(decompress_with(tool, &out, dir.path()).is_empty(), "{tool}");
        }
    }

    #[test]
    fn zstd_output_is_the_same_for_any_worker_count() {
        // More than one zstd job at level 3 (jobs are 4 × window = 8 MiB there), so
        // workers really split the input.
        let input = sample(20 << 20);
        let one = run(&input, Codec::Zstd { level: 3, threads: 1 }).0;
        for threads in [2, 4] {
            let other = run(&input, Codec::Zstd { level: 3, threads }).0;
            assert!(one == other, "zstd output differs for {threads} workers");
        }
    }

    #[test]
    fn xz_output_is_the_same_for_any_thread_count() {
        // Level 0: 1 MiB blocks, so 3 MiB of input makes several blocks to spread.
        let input = sample(3 << 20);
        let one = run(&input, Codec::Xz { level: 0, threads: 1 }).0;
        for threads in [2, 3] {
            let other = run(&input, Codec::Xz { level: 0, threads }).0;
            assert!(one == other, "xz output differs for {threads} threads");
        }
    }

    #[test]
    fn gzip_header_is_pinned() {
        let (out, _) = run(b"hello", Codec::Gzip { level: 6 });
        // Magic, deflate, no flags (no name/comment), mtime 0, XFL 0, OS 255.
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn golden_digests_of_a_fixed_8_mib_input() {
        let input = sample(8 << 20);
        // Pinned: a change here changes every published image digest, so it must be a
        // deliberate one (an encoder upgrade or a change of settings), noted in the changelog.
        let cases = [
            (
                Codec::Zstd { level: 3, threads: 2 },
                "0b985c13b629eb0f6970192a7273f18d2e1a35ffc48409def714c22c07c50471",
            ),
            (
                Codec::Xz { level: 1, threads: 2 },
                "d59de984d60b12ae981dd31a7a059651964329a80a27b6135b2741f4dad08b9d",
            ),
            (
                Codec::Gzip { level: 6 },
                "9f833104546e284b61a9a9869270ee595f0d7dc056ec974cf67efd1a191f7bd0",
            ),
            (
                Codec::None,
                "b95bff1feaaa866925cb4048c59d706ce0f0c25c53a4a4d0a3e5308bac4e339f",
            ),
        ];
        for (codec, want) in cases {
            let (_, report) = run(&input, codec);
            assert_eq!(report.sha256_hex(), want, "{codec:?}");
        }
    }

    #[test]
    fn levels_and_threads_are_checked() {
        let bad = [
            Codec::Zstd { level: 0, threads: 1 },
            Codec::Zstd {
                level: 23,
                threads: 1,
            },
            Codec::Zstd { level: 3, threads: 0 },
            Codec::Xz {
                level: 10,
                threads: 1,
            },
            Codec::Xz { level: 6, threads: 0 },
            Codec::Gzip { level: 10 },
        ];
        for codec in bad {
            let err = compress(&mut &b""[..], &mut Vec::new(), codec, &mut |_| {});
            assert!(err.is_err(), "{codec:?} accepted");
        }
    }

    #[test]
    fn read_errors_are_reported_as_such() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = compress(&mut Broken, &mut Vec::new(), Codec::None, &mut |_| {});
        assert!(matches!(err, Err(CompressError::Read(_))));
    }

    #[test]
    fn sha256_lines_check_with_the_real_sha256sum() {
        if !have("sha256sum") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut list = String::new();
        for (name, content) in [
            ("pi.img.zst", &b"image"[..]),
            ("odd name.img", b"x"),
            ("back\\slash.img", b"y"),
        ] {
            std::fs::write(dir.path().join(name), content).expect("write");
            list.push_str(&sha256_line(&Sha256::digest(content).into(), name));
        }
        assert!(list
            .starts_with("6105d6cc76af400325e94d588ce511be5bfdbb73b437dc51eca43917d7a43e3d  pi.img.zst\n"));
        std::fs::write(dir.path().join("SUMS"), &list).expect("write");
        let out = Command::new("sha256sum")
            .args(["-c", "--strict", "SUMS"])
            .current_dir(dir.path())
            .output()
            .expect("running sha256sum");
        assert!(
            out.status.success(),
            "sha256sum -c: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A wrong digest must fail the check.
        std::fs::write(dir.path().join("pi.img.zst"), b"imagf").expect("write");
        let out = Command::new("sha256sum")
            .args(["-c", "SUMS"])
            .current_dir(dir.path())
            .output()
            .expect("running sha256sum");
        assert!(!out.status.success());
    }
}
