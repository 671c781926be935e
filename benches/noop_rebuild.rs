//! No-op rebuild: how long `w4b build //images/...` takes when nothing changed, on a
//! workspace of about 1,000 steps and 20,000 input files, against the cheapest possible
//! freshness check of the same inputs measured in the same run.
//!
//! Baseline: a recursive `symlink_metadata` walk of `defs/` (every definition and every
//! layer source file), in-process. Any build tool that decides "nothing changed" from
//! file metadata must at least stat each input once, so this walk is the floor a no-op
//! can approach; the ratio says how much w4b spends above it (process start-up, parsing
//! definitions, computing keys, looking up records, writing outputs). A second
//! reference row reads and BLAKE3-hashes every input: what a no-op would cost without
//! w4b's stat cache. The start-up floor (`w4b --version`) is measured too, so the
//! report can say how much of a no-op is the process itself.
//!
//! Target: no-op ≤ 100 ms. A miss is printed as `MISS`, never a failure: benchmarks
//! inform, and CI does not run them.
//!
//! Run: `cargo bench --bench noop_rebuild [-- --runs N] [--keep]`; `--keep` leaves the
//! generated workspace and its warm cache on disk and prints how to rebuild it by hand
//! (for `perf`/`strace`).

#![allow(clippy::disallowed_methods)] // A bench spawns the binary and reads the clock.

mod support;

use std::time::Duration;

use support::{ms, thousands, Samples, Shape, Table, Visit, Workspace};

/// 10 images × (97 layers + base + rootfs + tar) = 1,000 steps;
/// 970 layers × 21 files = 20,370 source files of 200–500 bytes.
const SHAPE: Shape = Shape {
    images: 10,
    layers_per_image: 97,
    files_per_layer: 21,
    file_bytes: (200, 500),
};

const TARGET: Duration = Duration::from_millis(100);

fn main() {
    let runs = support::runs(10);
    support::header(
        "noop_rebuild: `w4b build //images/...` with nothing changed",
        &format!(
            "baseline: in-process recursive symlink_metadata walk of the same defs/ tree\n\
             shape: {} images x {} layers x {} source files ({}-{} bytes each); {runs} interleaved rounds",
            SHAPE.images,
            SHAPE.layers_per_image,
            SHAPE.files_per_layer,
            SHAPE.file_bytes.0,
            SHAPE.file_bytes.1
        ),
    );

    let (gen_time, ws) = support::time(|| Workspace::generate(SHAPE));
    println!(
        "   generated {} source files ({} bytes) and {} definitions in {:.0} ms",
        thousands(ws.source_files as u64),
        thousands(ws.source_bytes),
        ws.def_files,
        ms(gen_time)
    );

    let (cold_time, cold) = ws.build();
    println!(
        "   cold build: {} steps, ran {}, cached {}, failed {} in {:.0} ms",
        cold.steps,
        cold.ran,
        cold.cached,
        cold.failed,
        ms(cold_time)
    );
    assert_eq!(cold.failed, 0, "cold build had failures");
    assert_eq!(cold.cached, 0, "a fresh cache cannot hit");
    if cold.steps as usize != SHAPE.expected_steps() {
        println!(
            "   note: {} steps where the shape predicts {}: identical steps (the `scratch` base) are shared",
            cold.steps,
            SHAPE.expected_steps()
        );
    }

    // The first no-op may re-hash files written within the stat cache's racy window
    // of the cold build; it is reported, not counted. Its walk warms the page cache
    // for the baselines alike.
    let (first_time, first) = ws.build();
    assert_eq!(first.ran, 0, "first no-op rebuild ran steps: {first:?}");
    let expected = support::walk(&ws.defs(), Visit::Stat);
    println!("   first no-op (untimed warm-up): {:.1} ms", ms(first_time));
    println!();

    let mut noop = Samples::default();
    let mut version = Samples::default();
    let mut stat = Samples::default();
    let mut hash = Samples::default();
    let mut steps = 0;
    for _ in 0..runs {
        version.push(ws.version());
        let (t, f) = ws.build();
        assert_eq!(f.ran, 0, "no-op rebuild ran steps: {f:?}");
        assert_eq!(f.failed, 0, "no-op rebuild failed steps: {f:?}");
        steps = f.steps;
        noop.push(t);
        let (t, totals) = support::time(|| support::walk(&ws.defs(), Visit::Stat));
        assert_eq!(totals, expected, "defs/ changed under the bench");
        stat.push(t);
        let (t, totals) = support::time(|| support::walk(&ws.defs(), Visit::ReadHash));
        assert_eq!((totals.files, totals.bytes), (expected.files, expected.bytes));
        hash.push(t);
    }

    let base = stat.median();
    let mut table = Table::new(&[
        "measurement",
        "runs",
        "median ms",
        "min ms",
        "max ms",
        "× stat walk",
    ]);
    let mut row = |name: &str, s: &Samples| {
        table.row(vec![
            name.to_string(),
            s.len().to_string(),
            format!("{:.1}", ms(s.median())),
            format!("{:.1}", ms(s.min())),
            format!("{:.1}", ms(s.max())),
            format!("{:.2}", s.median().as_secs_f64() / base.as_secs_f64()),
        ]);
    };
    row(&format!("no-op rebuild ({steps} steps, ran 0)"), &noop);
    row("w4b --version (start-up floor)", &version);
    row(
        &format!("baseline: stat walk ({} files)", thousands(expected.files)),
        &stat,
    );
    row("reference: read + BLAKE3 walk", &hash);
    table.row(vec![
        "cold build (once)".to_string(),
        "1".to_string(),
        format!("{:.1}", ms(cold_time)),
        "-".to_string(),
        "-".to_string(),
        format!("{:.1}", cold_time.as_secs_f64() / base.as_secs_f64()),
    ]);
    table.print();

    let median = noop.median();
    let above_startup = median.saturating_sub(version.median());
    let ratio = median.as_secs_f64() / base.as_secs_f64();
    println!("   no-op minus start-up: {:.1} ms", ms(above_startup));
    println!(
        "   per step: {:.1} us; per input file: {:.2} us",
        ms(median) * 1e3 / steps.max(1) as f64,
        ms(median) * 1e3 / expected.files.max(1) as f64
    );
    println!("   ratio no-op / stat walk: {ratio:.1}×");
    let verdict = if median <= TARGET { "MET" } else { "MISS" };
    println!(
        "   target no-op <= {} ms: {verdict} (median {:.1} ms, min {:.1} ms)",
        TARGET.as_millis(),
        ms(median),
        ms(noop.min())
    );
    println!();
    if support::flag("--keep") {
        let root = ws.keep();
        println!(
            "   kept: cd {} && W4B_CACHE_DIR={} w4b build //images/...",
            root.join("ws").display(),
            root.join("cache").display()
        );
        println!();
    }
    println!(
        "RESULT noop_rebuild: {:.1} ms (ratio {ratio:.1}× baseline) target<=100ms {verdict}",
        ms(median)
    );
}
