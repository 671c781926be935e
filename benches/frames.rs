//! Compressed frames: what compressing a disk in independent spans (one zstd frame or one
//! xz block per span, each cacheable on its own) costs in compression ratio against one
//! single frame of the same bytes, and how long it takes.
//!
//! Baseline, in the same run: today's single-stream output, [`w4b::formats::compress`]
//! (zstd in its multithreaded mode with 2 workers: one frame; xz through liblzma's
//! multithreaded encoder with its 24 MiB blocks at `-6`). Rows:
//!
//! - zstd `-3`, spans of 1, 2, 4 and 8 MiB, over the whole sample;
//! - zstd `-19`, the same spans, over the slow-codec subsample;
//! - xz `-6`, blocks of 8 and 24 MiB, over the slow-codec subsample.
//!
//! Loss = `size(spans) / size(single) − 1`, seek table or index included. Spans compress
//! in parallel with rayon (one per core); every output is decoded and compared with its
//! input.
//!
//! Sample: a tar (`tar --sort=name`) of the real Debian arm64 root the install tests
//! build (`/tmp/w4b-test-debian-arm64/base`, made by `tests/support/make-test-base.sh`),
//! or of `/usr` when that is missing, cut at `W4B_FRAMES_SAMPLE_MIB` (default 384); or
//! any file named by `W4B_FRAMES_SAMPLE` (a real disk image, say). zstd `-19` and xz `-6`
//! run at about 1.5 MB/s per core here, so they get a subsample of
//! `W4B_FRAMES_SLOW_WINDOWS` (default 4) windows of `W4B_FRAMES_SLOW_WINDOW_MIB` (default
//! 16) spread evenly over the sample, which keeps the whole bench under ten minutes on two
//! cores. `W4B_FRAMES_SPANS_MIB` (default `1,2,4,8`) sets the zstd spans.
//!
//! Run: `cargo bench --bench frames [-- --only zstd-3|zstd-19|xz-6]`. The last line,
//! `RESULT frames: …`, gives the loss of the largest zstd `-19` span.

#![allow(clippy::disallowed_methods)] // A bench runs `tar`, reads its environment and the clock.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rayon::prelude::*;
use support::Table;
use w4b::formats::compress::{compress, Codec};
use w4b::formats::xz_blocks::{encode_block, write_stream};
use w4b::formats::zstd_frames::{libzstd_version, seek_table, FrameCompressor};

const MIB: usize = 1 << 20;
const DEBIAN_ROOT: &str = "/tmp/w4b-test-debian-arm64/base";

/// Which sections to run: `--only zstd-3|zstd-19|xz-6` (repeatable); all by default.
fn wanted(section: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let only: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--only")
        .map(|w| w[1].as_str())
        .collect();
    only.is_empty() || only.contains(&section)
}

/// The span sizes in MiB: `W4B_FRAMES_SPANS_MIB` (comma-separated), else `default`.
fn spans(default: &[usize]) -> Vec<usize> {
    match std::env::var("W4B_FRAMES_SPANS_MIB") {
        Ok(v) => v
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("W4B_FRAMES_SPANS_MIB: `{v}`"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got `{v}`"))
        })
        .unwrap_or(default)
}

/// The sample and a sentence saying what it is.
fn sample() -> (Vec<u8>, String) {
    if let Ok(path) = std::env::var("W4B_FRAMES_SAMPLE") {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading `{path}`: {e}"));
        return (bytes, format!("`{path}`"));
    }
    let cap = env_usize("W4B_FRAMES_SAMPLE_MIB", 384) * MIB;
    let dir = if Path::new(DEBIAN_ROOT).join("usr").is_dir() {
        DEBIAN_ROOT
    } else {
        "/usr"
    };
    let out = Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "-C", dir, "-cf", "-", "."])
        .output()
        .expect("running tar");
    // `tar` warns about sockets and files that vanish under `/usr`; the archive is still
    // what it read.
    let mut bytes = out.stdout;
    assert!(!bytes.is_empty(), "tar of `{dir}` produced nothing");
    bytes.truncate(cap);
    let what = if dir == DEBIAN_ROOT {
        "a tar of the Debian bookworm arm64 root the install tests build"
    } else {
        "a tar of this machine's `/usr`"
    };
    let len = bytes.len();
    (bytes, format!("{what} (`{dir}`), {} MiB", len / MIB))
}

/// `windows` windows of `size` bytes spread evenly over `data`, concatenated.
fn subsample(data: &[u8], windows: usize, size: usize) -> Vec<u8> {
    if data.len() <= windows * size {
        return data.to_vec();
    }
    let stride = (data.len() - size) / (windows - 1).max(1);
    (0..windows)
        .flat_map(|i| &data[i * stride..i * stride + size])
        .copied()
        .collect()
}

fn baseline(data: &[u8], codec: Codec) -> (Duration, Vec<u8>) {
    support::time(|| {
        let mut out = Vec::new();
        compress(&mut &data[..], &mut out, codec, &mut |_| {}).expect("compress");
        out
    })
}

fn zstd_spans(data: &[u8], level: i32, span: usize) -> (Duration, Vec<u8>) {
    support::time(|| {
        let frames: Vec<_> = data
            .par_chunks(span)
            .map_init(
                || FrameCompressor::new(level).expect("compressor"),
                |c, s| c.compress(s).expect("frame"),
            )
            .collect();
        let entries: Vec<_> = frames.iter().map(|f| f.entry()).collect();
        let mut out: Vec<u8> = frames.into_iter().flat_map(|f| f.into_bytes()).collect();
        out.extend(seek_table(&entries).expect("seek table"));
        out
    })
}

fn xz_spans(data: &[u8], preset: u32, span: usize) -> (Duration, Vec<u8>) {
    support::time(|| {
        let blocks: Vec<_> = data
            .par_chunks(span)
            .map(|s| encode_block(s, preset).expect("block"))
            .collect();
        let mut out = Vec::new();
        write_stream(&mut out, &blocks).expect("stream");
        out
    })
}

fn check_zstd(out: &[u8], data: &[u8]) {
    assert!(
        zstd::stream::decode_all(out).expect("decode") == data,
        "zstd round trip"
    );
}

fn check_xz(out: &[u8], data: &[u8]) {
    use std::io::Read as _;
    let mut back = Vec::new();
    w4b::formats::xz::decoder(out)
        .read_to_end(&mut back)
        .expect("decode");
    assert!(back == data, "xz round trip");
}

struct Rows<'a> {
    table: Table,
    base_len: usize,
    base_time: Duration,
    input: &'a [u8],
}

impl Rows<'_> {
    /// Adds a row; returns its loss.
    fn add(&mut self, what: String, time: Duration, out_len: usize) -> f64 {
        let loss = out_len as f64 / self.base_len as f64 - 1.0;
        self.table.row(vec![
            what,
            support::thousands(out_len as u64),
            format!("{:.3}", self.input.len() as f64 / out_len as f64),
            format!("{:+.2} %", loss * 100.0),
            format!("{:.1}", time.as_secs_f64()),
            format!("{:.2}", time.as_secs_f64() / self.base_time.as_secs_f64()),
        ]);
        loss
    }
}

fn section<'a>(name: &str, input: &'a [u8], base: (Duration, Vec<u8>), check: fn(&[u8], &[u8])) -> Rows<'a> {
    check(&base.1, input);
    let mut rows = Rows {
        table: Table::new(&["output", "bytes", "ratio", "loss", "time s", "time ÷ single"]),
        base_len: base.1.len(),
        base_time: base.0,
        input,
    };
    println!("   {name}, {} MiB in:", input.len() / MIB);
    let _ = rows.add("single frame/stream (baseline)".into(), base.0, base.1.len());
    rows
}

fn main() {
    let (data, what) = sample();
    let windows = env_usize("W4B_FRAMES_SLOW_WINDOWS", 4);
    let window = env_usize("W4B_FRAMES_SLOW_WINDOW_MIB", 16);
    let slow = subsample(&data, windows, window * MIB);
    let threads = rayon::current_num_threads();
    support::header(
        "frames: independent zstd frames / xz blocks per span vs one single frame",
        &format!(
            "sample: {what}\n\
             zstd -19 and xz -6 on {windows} × {window} MiB windows of it ({} MiB)\n\
             baseline: one frame (zstd MT, 2 workers) / one stream of 24 MiB blocks (xz MT, 2 threads)\n\
             spans compress on {threads} rayon threads; libzstd {}; loss includes the seek table / index",
            slow.len() / MIB,
            libzstd_version()
        ),
    );

    let mut headline = None;
    for (level, input) in [(3, &data[..]), (19, &slow[..])] {
        if !wanted(&format!("zstd-{level}")) {
            continue;
        }
        let base = baseline(input, Codec::Zstd { level, threads: 2 });
        let mut rows = section(&format!("zstd -{level}"), input, base, check_zstd);
        for span in spans(&[1, 2, 4, 8]) {
            let (t, out) = zstd_spans(input, level, span * MIB);
            check_zstd(&out, input);
            let loss = rows.add(format!("{span} MiB frames"), t, out.len());
            if level == 19 {
                headline = Some((span, loss));
            }
        }
        rows.table.print();
    }
    if let Some((span, loss)) = headline {
        println!(
            "RESULT frames: zstd -19 in {span} MiB frames loses {:+.2} % against one frame (goal ≤ 3 %)",
            loss * 100.0
        );
    }
    if !wanted("xz-6") {
        return;
    }

    let base = baseline(&slow, Codec::Xz { level: 6, threads: 2 });
    let mut rows = section("xz -6", &slow, base, check_xz);
    for span in [8, 24] {
        let (t, out) = xz_spans(&slow, 6, span * MIB);
        check_xz(&out, &slow);
        let _ = rows.add(format!("{span} MiB blocks"), t, out.len());
    }
    rows.table.print();
}
