//! Hashing throughput: BLAKE3 (every w4b digest and key) over a 256 MiB buffer, against
//! `memcpy` of the same buffer in the same run, with SHA-256 (the digest of downloaded
//! base images and of manifest subjects) for comparison.
//!
//! Baseline: `copy_from_slice` of the buffer into a second, pre-faulted buffer. A copy
//! is the least any pass over the bytes can cost — it is bound by memory bandwidth, not
//! by computation — so `time(hash) / time(memcpy)` says how far hashing is from "free",
//! and stays meaningful when the machine's absolute speed wanders. Single-threaded
//! only: w4b does not enable blake3's `rayon` feature; it parallelises across files.
//!
//! Rows:
//! - `blake3::hash` — one call over the whole buffer (the SIMD tree path);
//! - `blake3::Hasher::update`, 64 KiB at a time — how the store hashes a file as it
//!   reads it;
//! - `sha2::Sha256` — one call (SHA-NI is used when the CPU has it).
//!
//! Run: `cargo bench --bench hashing [-- --runs N]`.

#![allow(clippy::disallowed_methods)] // A bench reads the clock.

mod support;

use std::hint::black_box;
use std::time::Duration;

use sha2::Digest as _;
use support::{Samples, Table};

const SIZE: usize = 256 << 20;
const CHUNK: usize = 64 << 10;

fn gbps(d: Duration) -> f64 {
    SIZE as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let runs = support::runs(5);
    support::header(
        "hashing: single-thread digest throughput over a 256 MiB buffer",
        &format!(
            "baseline: memcpy (copy_from_slice) of the same buffer into a pre-faulted one\n\
             GB/s = 10^9 bytes per second; {runs} interleaved rounds after one warm-up round"
        ),
    );

    // Deterministic, incompressible contents: BLAKE3's extendable output from a fixed key.
    let mut src = vec![0u8; SIZE];
    blake3::Hasher::new_derive_key("w4b bench hashing buffer v1")
        .finalize_xof()
        .fill(&mut src);
    let mut dst = vec![0u8; SIZE];

    let expected_blake3 = blake3::hash(&src);
    let expected_sha256 = sha2::Sha256::digest(&src);

    let mut copy = Samples::default();
    let mut one_shot = Samples::default();
    let mut streaming = Samples::default();
    let mut sha256 = Samples::default();
    // Round 0 is the warm-up (page faults in `dst`, CPU frequency ramp) and is dropped.
    for round in 0..=runs {
        let (t_copy, ()) = support::time(|| dst.copy_from_slice(black_box(&src)));
        black_box(&mut dst);
        let (t_one, h) = support::time(|| blake3::hash(black_box(&src)));
        assert_eq!(h, expected_blake3);
        let (t_stream, h) = support::time(|| {
            let mut hasher = blake3::Hasher::new();
            for chunk in black_box(&src).chunks(CHUNK) {
                hasher.update(chunk);
            }
            hasher.finalize()
        });
        assert_eq!(h, expected_blake3, "streaming and one-shot BLAKE3 differ");
        let (t_sha, h) = support::time(|| sha2::Sha256::digest(black_box(&src)));
        assert_eq!(h, expected_sha256);
        if round > 0 {
            copy.push(t_copy);
            one_shot.push(t_one);
            streaming.push(t_stream);
            sha256.push(t_sha);
        }
    }
    assert_eq!(dst, src, "memcpy baseline copied wrong bytes");

    let base = copy.median();
    let mut table = Table::new(&[
        "operation",
        "median GB/s",
        "best GB/s",
        "median ms",
        "× memcpy time",
    ]);
    for (name, s) in [
        ("baseline: memcpy (copy_from_slice)", &copy),
        ("blake3::hash (one call)", &one_shot),
        ("blake3::Hasher::update (64 KiB)", &streaming),
        ("sha2::Sha256 (one call)", &sha256),
    ] {
        table.row(vec![
            name.to_string(),
            format!("{:.2}", gbps(s.median())),
            format!("{:.2}", gbps(s.min())),
            format!("{:.1}", support::ms(s.median())),
            format!("{:.2}", s.median().as_secs_f64() / base.as_secs_f64()),
        ]);
    }
    table.print();

    let ratio = one_shot.median().as_secs_f64() / base.as_secs_f64();
    println!(
        "   BLAKE3 is {:.1}× the speed of SHA-256 here",
        sha256.median().as_secs_f64() / one_shot.median().as_secs_f64()
    );
    println!();
    println!(
        "RESULT hashing: blake3 {:.2} GB/s (ratio {ratio:.2}× baseline memcpy time; memcpy {:.2} GB/s, sha256 {:.2} GB/s)",
        gbps(one_shot.median()),
        gbps(base),
        gbps(sha256.median())
    );
}
