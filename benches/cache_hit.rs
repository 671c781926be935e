//! Cache-hit overhead: what one cached step costs in a no-op rebuild, against the least
//! a cache hit can do, measured in the same run.
//!
//! Two workspaces of the same kind differ only in their number of steps (about 100 and
//! 500; every layer is one inline file, so inputs are tiny and hashing files plays no
//! part). Both are built cold, then rebuilt with nothing changed, in interleaved rounds.
//! The *marginal* cost per cached step is the slope between them,
//! `(t_large − t_small) / (steps_large − steps_small)`: process start-up, workspace
//! discovery and everything else paid once per build cancel out. The *gross* cost
//! (`t_large / steps_large`) is printed beside it.
//!
//! Baselines, in-process, over the record files of the large workspace's own cache,
//! each addressed by its known path (a hit knows its key, and the key names the path,
//! so no directory listing is timed):
//! - **stat per record** (headline): `symlink_metadata` of each record file. A cached
//!   step must at least find its record; a stat is the cheapest way to ask the file
//!   system whether it exists.
//! - **read per record**: `open` + `read` of each record file. A hit needs the record's
//!   output digests, so reading it is the honest floor of a hit; the gap between this
//!   and the marginal cost is w4b's own work (definition parsing, key computation,
//!   graph planning, verifying and touching the record, event output).
//!
//! Run: `cargo bench --bench cache_hit [-- --runs N]`.

#![allow(clippy::disallowed_methods)] // A bench spawns the binary and reads the clock.

mod support;

use support::{ms, us, Samples, Shape, Table, Visit, Workspace};

const SMALL: Shape = Shape {
    images: 5,
    layers_per_image: 17,
    files_per_layer: 0,
    file_bytes: (0, 0),
};

const LARGE: Shape = Shape {
    images: 5,
    layers_per_image: 97,
    files_per_layer: 0,
    file_bytes: (0, 0),
};

/// Builds `ws` cold, then once more untimed (racy stat-cache entries, page cache), and
/// returns its step count.
fn prepare(ws: &Workspace, name: &str) -> u64 {
    let (cold_time, cold) = ws.build();
    assert_eq!(cold.failed, 0, "{name}: cold build had failures");
    let (_, warm) = ws.build();
    assert_eq!(warm.ran, 0, "{name}: no-op rebuild ran steps: {warm:?}");
    println!(
        "   {name}: {} steps, cold build {:.0} ms",
        cold.steps,
        ms(cold_time)
    );
    cold.steps
}

fn main() {
    let runs = support::runs(10);
    support::header(
        "cache_hit: cost of one cached step in a no-op rebuild",
        &format!(
            "marginal cost = slope between a small and a large no-op rebuild (start-up cancels out)\n\
             baselines: stat / open+read of each record file of the large cache, by known path, in-process\n\
             {runs} interleaved rounds"
        ),
    );

    let small = Workspace::generate(SMALL);
    let large = Workspace::generate(LARGE);
    let small_steps = prepare(&small, "small");
    let large_steps = prepare(&large, "large");
    assert!(
        large_steps > small_steps,
        "the large workspace must have more steps"
    );
    let records_dir = large.cache.join("v1/records");
    let records = support::files_under(&records_dir);
    let expected = support::visit_each(&records, Visit::Read);
    assert!(
        expected.files > 0,
        "no record files under {}",
        records_dir.display()
    );
    if expected.files != large_steps {
        // Steps with identical keys (e.g. every image's `scratch` base) share a record.
        println!("   note: {} record files for {large_steps} steps", expected.files);
    }
    println!();

    let mut t_small = Samples::default();
    let mut t_large = Samples::default();
    let mut stat = Samples::default();
    let mut read = Samples::default();
    for _ in 0..runs {
        let (t, f) = small.build();
        assert_eq!(f.ran, 0, "small no-op ran steps: {f:?}");
        t_small.push(t);
        let (t, f) = large.build();
        assert_eq!(f.ran, 0, "large no-op ran steps: {f:?}");
        t_large.push(t);
        let (t, totals) = support::time(|| support::visit_each(&records, Visit::Stat));
        assert_eq!(totals.files, expected.files, "records changed under the bench");
        stat.push(t);
        let (t, totals) = support::time(|| support::visit_each(&records, Visit::Read));
        assert_eq!(totals, expected, "records changed under the bench");
        read.push(t);
    }

    let extra_steps = (large_steps - small_steps) as f64;
    let marginal_us = (us(t_large.median()) - us(t_small.median())) / extra_steps;
    // The slope from the fastest runs too: less exposed to a neighbour's load burst.
    let marginal_min_us = (us(t_large.min()) - us(t_small.min())) / extra_steps;
    let gross_us = us(t_large.median()) / large_steps as f64;
    let n_records = expected.files as f64;
    let stat_us = us(stat.median()) / n_records;
    let read_us = us(read.median()) / n_records;

    let mut table = Table::new(&["measurement", "runs", "median ms", "min ms", "max ms"]);
    for (name, s) in [
        (format!("no-op, {small_steps} steps"), &t_small),
        (format!("no-op, {large_steps} steps"), &t_large),
        (format!("baseline: stat {} records", expected.files), &stat),
        (format!("baseline: read {} records", expected.files), &read),
    ] {
        table.row(vec![
            name,
            s.len().to_string(),
            format!("{:.2}", ms(s.median())),
            format!("{:.2}", ms(s.min())),
            format!("{:.2}", ms(s.max())),
        ]);
    }
    table.print();

    let mut per = Table::new(&["per cached step", "us", "× stat", "× read"]);
    for (name, v) in [
        ("marginal (slope of medians)", marginal_us),
        ("marginal (slope of minimums)", marginal_min_us),
        ("gross (large no-op / its steps)", gross_us),
        ("baseline: stat one record", stat_us),
        ("baseline: open+read one record", read_us),
    ] {
        per.row(vec![
            name.to_string(),
            format!("{v:.1}"),
            format!("{:.1}", v / stat_us),
            format!("{:.1}", v / read_us),
        ]);
    }
    per.print();

    println!(
        "   record files: {} ({} bytes on average)",
        expected.files,
        expected.bytes / expected.files.max(1)
    );
    println!();
    println!(
        "RESULT cache_hit: {marginal_us:.1} us/step (ratio {:.1}× baseline stat/record; {:.1}× open+read/record)",
        marginal_us / stat_us,
        marginal_us / read_us
    );
}
