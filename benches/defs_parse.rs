//! Loading definitions: how the definition loader scales with the size of one file, and how
//! fast it refuses files past its limits.
//!
//! Each workspace holds one image whose free-form `config:` map has `n` keys (`n` = 4,000,
//! 40,000 and 400,000; the largest file is about 11 MB, under the 16 MiB limit). A row loads
//! it in-process with a fresh [`Loader`] (read, YAML with spans and the duplicate-key check,
//! `${VAR}`, merge, overrides, location table, typing), as `w4b build` does on a cold
//! parse cache.
//!
//! Baseline: `saphyr-parser`'s event stream over the same text, in the same rounds — the
//! scanner every YAML load has to run, with no tree built. `× baseline` is how much the
//! loader adds on top of merely scanning the bytes; it stays flat when the loader is
//! linear. The scaling line compares 40,000 keys with 4,000: a linear loader takes about
//! 10× as long, a quadratic one about 100× (it took 12.8 s for 40,000 keys before the
//! merge and duplicate-key checks were indexed). The bench fails when the ratio passes
//! 30×.
//!
//! Refusals: a 50 MB definition (refused by its size before it is read) and a YAML alias
//! bomb (nine anchors, each aliasing the previous nine times: 9⁹ values written in 400
//! bytes), both timed against the 4,000-key load.
//!
//! Run: `cargo bench --bench defs_parse [-- --runs N]`.

#![allow(clippy::disallowed_methods)] // A bench reads the clock.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use support::{Samples, Table};
use w4b::defs::{DefsError, DefsErrorKind, Label, Loader, Workspace};

const SIZES: [usize; 3] = [4_000, 40_000, 400_000];
/// The scaling from 4,000 to 40,000 keys above which the loader counts as superlinear.
const MAX_SCALING: f64 = 30.0;

/// The image definition with `keys` entries in `config:`.
fn image_text(keys: usize) -> String {
    let mut s = String::from("kind: image\nbase: scratch\nepoch: 1700000000\nlayers: []\nconfig:\n");
    for i in 0..keys {
        let _ = writeln!(s, "  key_{i:07}: \"value number {i}\"");
    }
    s
}

/// Nine anchors, each a list aliasing the previous one nine times.
fn alias_bomb() -> String {
    let mut s = String::from("kind: image\nbase: scratch\nepoch: 1700000000\nconfig:\n  a0: &a0 [lol]\n");
    for level in 1..=9 {
        let prev = level - 1;
        let items = vec![format!("*a{prev}"); 9].join(", ");
        let _ = writeln!(s, "  a{level}: &a{level} [{items}]");
    }
    s
}

fn workspace(image: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("w4b.yaml"), "").expect("w4b.yaml");
    let images = dir.path().join("defs/images");
    std::fs::create_dir_all(&images).expect("defs/images");
    std::fs::write(images.join("big.yaml"), image).expect("big.yaml");
    dir
}

fn load(root: &Path) -> Result<usize, DefsError> {
    let env = BTreeMap::new();
    let ws = Workspace::open(root, &env)?;
    let loader = Loader::new(ws, env, &[])?;
    let label = Label::parse("//images:big", None).expect("label");
    Ok(loader.load(&label)?.locations.len())
}

/// Every event of `text` through `saphyr-parser`, building nothing.
fn scan(text: &str) -> usize {
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut events = 0;
    while let Some(event) = parser.next_event() {
        event.expect("valid YAML");
        events += 1;
    }
    events
}

fn main() {
    let runs = support::runs(5);
    support::header(
        "defs_parse: loading one definition file with many keys",
        &format!(
            "baseline: saphyr-parser's event stream over the same text (no tree)\n\
             {runs} interleaved rounds after one warm-up round"
        ),
    );

    let texts: Vec<String> = SIZES.iter().map(|&n| image_text(n)).collect();
    let dirs: Vec<tempfile::TempDir> = texts.iter().map(|t| workspace(t.as_bytes())).collect();
    let huge = workspace(b"");
    let huge_file = huge.path().join("defs/images/big.yaml");
    std::fs::File::create(&huge_file)
        .and_then(|f| f.set_len(50_000_000))
        .expect("50 MB file");
    let bomb = workspace(alias_bomb().as_bytes());

    let mut loads = vec![Samples::default(); SIZES.len()];
    let mut scans = vec![Samples::default(); SIZES.len()];
    let mut refuse_huge = Samples::default();
    let mut refuse_bomb = Samples::default();
    for round in 0..=runs {
        for (i, (dir, text)) in dirs.iter().zip(&texts).enumerate() {
            let (t_scan, events) = support::time(|| scan(black_box(text)));
            assert!(events > SIZES[i] * 2, "scanned {events} events");
            let (t_load, located) = support::time(|| load(dir.path()));
            let located = located.unwrap_or_else(|e| panic!("{} keys: {e}", SIZES[i]));
            assert!(located >= SIZES[i], "{located} locations for {} keys", SIZES[i]);
            if round > 0 {
                scans[i].push(t_scan);
                loads[i].push(t_load);
            }
        }
        let (t_huge, r) = support::time(|| load(huge.path()));
        let refused = r.as_ref().err().map(DefsError::kind);
        assert!(
            matches!(refused, Some(DefsErrorKind::TooLarge { .. })),
            "50 MB file: {r:?}"
        );
        let (t_bomb, r) = support::time(|| load(bomb.path()));
        let refused = r.as_ref().err().map(DefsError::kind);
        assert!(
            matches!(refused, Some(DefsErrorKind::TooManyValues { .. })),
            "alias bomb: {r:?}"
        );
        if round > 0 {
            refuse_huge.push(t_huge);
            refuse_bomb.push(t_bomb);
        }
    }

    let mut table = Table::new(&[
        "keys in `config:`",
        "file MB",
        "median load ms",
        "baseline scan ms",
        "× baseline",
        "µs per key",
    ]);
    for (i, &n) in SIZES.iter().enumerate() {
        let load = loads[i].median();
        let scan = scans[i].median();
        table.row(vec![
            support::thousands(n as u64),
            format!("{:.1}", texts[i].len() as f64 / 1e6),
            format!("{:.1}", support::ms(load)),
            format!("{:.1}", support::ms(scan)),
            format!("{:.2}", load.as_secs_f64() / scan.as_secs_f64()),
            format!("{:.2}", support::us(load) / n as f64),
        ]);
    }
    table.print();

    let base = loads[0].median();
    let ratio = |d: Duration| d.as_secs_f64() / base.as_secs_f64();
    let mut refusals = Table::new(&["refused", "median ms", "× 4,000-key load"]);
    for (name, s) in [
        ("a 50 MB definition (size limit)", &refuse_huge),
        ("an alias bomb of 9⁹ values (value limit)", &refuse_bomb),
    ] {
        refusals.row(vec![
            name.to_string(),
            format!("{:.2}", support::ms(s.median())),
            format!("{:.2}", ratio(s.median())),
        ]);
    }
    refusals.print();

    let scaling = ratio(loads[1].median());
    let scan_scaling = scans[1].median().as_secs_f64() / scans[0].median().as_secs_f64();
    println!(
        "RESULT defs_parse: 40,000 keys load in {:.1} ms, {scaling:.1}× the time of 4,000 keys \
         (linear: ~10×; the scan alone {scan_scaling:.1}×); load is {:.2}× baseline scan at 40,000 keys",
        support::ms(loads[1].median()),
        loads[1].median().as_secs_f64() / scans[1].median().as_secs_f64(),
    );
    assert!(
        scaling < MAX_SCALING,
        "loading 10× the keys took {scaling:.1}× the time: the loader is superlinear again"
    );
}
