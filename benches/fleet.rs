//! A fleet: N hives (20 by default) created with `w4b hive new` and built from one image
//! on a warm base, against one hive built alone and against a one-value change of one
//! hive, in the same run. The goal (issue 14) is a per-hive cost in proportion to what
//! differs between hives, not to the image.
//!
//! The base is [`support::pibase`] (~1 GiB of the host's real Debian `/usr` in a Raspberry
//! Pi OS-like disk, cached under `target/tmp`), served by a `file://` URL as in
//! `image_build`. The hive image `//images:edge` is what an operator's fleet builds on:
//! `//boards:pi4`, that base, the W4B modules (a hive brings system, security, database,
//! monitoring, sensor manager, first boot), a sensor-manager service from a source
//! directory, `zstd -3`. The base has no dpkg, so the modules' package sets are stood in
//! for by empty ones plus their unit files ([`support::module_stand_ins`], the tests'
//! own): no network. `w4b.yaml` names the image and the hub's key and endpoint
//! (`hives.defaults`); `w4b hive new --yes --name "Hive NN"` makes each hive, with its own
//! id, keys, passwords and VPN address (timed, reported).
//!
//! 1. **Warm-up** (untimed): `w4b build //images:edge`, the image alone: the base's fetch
//!    and unpack, the package sets, everything no hive changes.
//! 2. **One hive alone** on a hard-linked copy of the warm cache: `w4b build //hives:<first>`,
//!    time and cache growth (`du` of the cache before and after). The fleet's per-hive
//!    cost should be at or below this.
//! 3. **The fleet** on the warm cache: `w4b build //hives/...`, total time, cache growth,
//!    both ÷ N; every `target-finished` event must say `ok` (the summary table's rows).
//! 4. **What differs** (the floor): one value of the first hive's YAML changed
//!    (`collector.interval`, see [`ONE_VALUE`]), `w4b build //hives:<first>` on the fleet's
//!    cache: time and growth.
//! 5. **One hive more**: `w4b hive new` once more and `w4b build //hives:<new>` on the
//!    fleet's cache: the marginal hive, once the fleet's common work is cached.
//!
//! Reported: the ratios fleet per hive ÷ one hive alone and fleet per hive ÷ the one-value
//! rebuild, for time and for cache growth (and those of the hive added); per hive, from its
//! step notes, the ext4 chunks rendered, zstd frames compressed and filesystems validated;
//! and from the `--message-format json` events of
//! the fleet build, which steps ran once (shared by every hive) and which ran per hive,
//! with their own times, so a per-hive step that costs the whole image is named.
//!
//! Run: `cargo bench --bench fleet [-- --hives N] [--keep]`. Needs the base (~2.2 GiB
//! under `target/tmp`, kept) and in `$TMPDIR` the warm cache, the single hive's copy of
//! it (hard links: only its growth), and the outputs of one build at a time — for the
//! fleet N images at once (each build's outputs are measured and deleted after it; sizes
//! printed). Everything in `$TMPDIR` is removed at the end unless `--keep`.

#![allow(clippy::disallowed_methods)] // A bench spawns tools and reads the clock.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use support::build::{du, fresh_copy, mib, secs, Run, W4b};
use support::pibase;
use support::{disk, thousands, Table};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Root-tree file data of the base, as in `image_build`.
const BASE_BUDGET: u64 = GIB;
/// The image's zstd level, as in `image_build`.
const LEVEL: u32 = 3;
/// The line of the first hive's file the one-value rebuild changes, and what it becomes:
/// the collector's interval (`collector.interval`, seconds), one number in the image.
const ONE_VALUE: (&str, &str) = ("interval: 60", "interval: 61");

/// The hub's key and endpoint for every hive, as an operator writes them once.
const W4B_YAML: &str = "hives:\n  image: //images:edge\n  defaults:\n    security:\n      wireguard: \
                        {peer_public_key: \"hubPublicKeyFixture000000000000000000000000=\", endpoint: \
                        \"hub.example.org:51820\"}\n";

/// The generated workspace and its scratch space.
struct Fleet {
    /// Holds everything below; removed on drop unless `--keep`.
    root: tempfile::TempDir,
    ws: PathBuf,
    home: PathBuf,
}

impl Fleet {
    fn new(base: &pibase::PiBase) -> Fleet {
        let root = tempfile::Builder::new()
            .prefix("w4b-bench-fleet-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ws = root.path().join("ws");
        let home = root.path().join("home");
        fs::create_dir_all(&home).unwrap_or_else(|e| panic!("create {}: {e}", home.display()));
        let fleet = Fleet { root, ws, home };
        fleet.write("w4b.yaml", W4B_YAML);
        let board = Path::new(env!("CARGO_MANIFEST_DIR")).join("defs/boards/pi4.yaml");
        fleet.write(
            "defs/boards/pi4.yaml",
            &fs::read_to_string(&board).unwrap_or_else(|e| panic!("read {}: {e}", board.display())),
        );
        fleet.write(
            "defs/bases/bench.yaml",
            &format!(
                "kind: base\nurl: file://{}\nsha256: {}\narch: arm64\nrelease: bookworm\ndate: 2024-11-19\n",
                base.zst.display(),
                base.zst_sha256
            ),
        );
        for (path, body) in support::module_stand_ins::files() {
            fleet.write(&path, &body);
        }
        // The modules enable `getty@tty1` (system) and `ssh` (security), whose unit files
        // a Raspberry Pi OS root ships and the base's selection of the host's `/usr` does
        // not: stand-ins, as the hive checklist wants a unit file behind every link.
        let mut units = String::from("kind: layer\nfiles:\n");
        for (unit, exec) in [
            ("getty@.service", "/sbin/agetty %I"),
            ("ssh.service", "/usr/sbin/sshd -D"),
        ] {
            units.push_str(&format!(
                "  - {{path: /usr/lib/systemd/system/{unit}, content: \"[Service]\\nExecStart={exec}\\n\"}}\n"
            ));
        }
        fleet.write("defs/layers/base-units.yaml", &units);
        fleet.write(
            "defs/images/edge.yaml",
            &format!(
                "kind: image\nboard: //boards:pi4\nbase: //bases:bench\n\
                 layers: [//layers:base-units, //layers:packaged-units]\n\
                 output: {{compression: zstd, level: {LEVEL}}}\nservices:\n  sensor_manager:\n    \
                 source: {{path: sensor-manager}}\n"
            ),
        );
        fleet.write(
            "defs/images/sensor-manager/sensor_manager/__main__.py",
            "print('w4b sensor manager')\n",
        );
        fleet
    }

    fn write(&self, rel: &str, body: &str) {
        let p = self.ws.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn w4b<'a>(&'a self, rss: &'a Path) -> W4b<'a> {
        W4b {
            ws: &self.ws,
            home: &self.home,
            rss_file: rss,
        }
    }

    /// `w4b hive new --yes --name NAME` with no terminal: the new hive's id.
    fn new_hive(&self, cache: &Path, name: &str) -> String {
        let rss = self.scratch("maxrss");
        let out = self
            .w4b(&rss)
            .command(cache)
            .args(["hive", "new", "--yes", "--name", name])
            .output()
            .unwrap_or_else(|e| panic!("spawn w4b: {e}"));
        assert!(
            out.status.success(),
            "w4b hive new --name {name:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let file = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Path::new(&file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| s.starts_with("hive_"))
            .unwrap_or_else(|| panic!("w4b hive new printed no hive file: {file:?}"))
    }

    /// `w4b build LABEL --out <scratch>` with `cache`, timed; its outputs are measured and
    /// deleted after (twenty images at once would not fit the shared disk).
    fn build(&self, cache: &Path, label: &str) -> (Run, u64) {
        let rss = self.scratch("maxrss");
        let out = self.scratch("out");
        let run = self
            .w4b(&rss)
            .build_label(cache, label, &[OsStr::new("--out"), out.as_os_str()]);
        let written = du(&out);
        fs::remove_dir_all(&out).unwrap_or_else(|e| panic!("remove {}: {e}", out.display()));
        (run, written)
    }
}

/// A step's name with its target's hive id replaced by `{hive}`, so the same step of
/// every hive groups under one name.
fn generic(full: &str) -> String {
    let Some((target, step)) = full.rsplit_once('#') else {
        return full.to_string();
    };
    let id = target.rsplit_once(':').map_or(target, |(_, id)| id);
    let step = if id.starts_with("hive_") {
        step.replace(id, "{hive}")
    } else {
        step.to_string()
    };
    let package = target.rsplit_once(':').map_or(target, |(p, _)| p);
    if id.starts_with("hive_") {
        format!("{package}:{{hive}}#{step}")
    } else {
        format!("{target}#{step}")
    }
}

/// Per generic step name: (kind, times it ran, its own milliseconds summed, times cached).
fn step_groups(run: &Run) -> BTreeMap<String, (String, usize, u64, usize)> {
    let mut groups: BTreeMap<String, (String, usize, u64, usize)> = BTreeMap::new();
    for (full, t) in run.ran.iter().zip(&run.timings) {
        let g = groups.entry(generic(full)).or_default();
        g.0.clone_from(&t.kind);
        g.1 += 1;
        g.2 += t.ms;
    }
    for full in &run.cached {
        groups.entry(generic(full)).or_default().3 += 1;
    }
    groups
}

/// The numbers in a step note's message, in order (`1559 of 1707 chunks hold data: 1279
/// reused from memos (their files not read), 280 rendered` → 1559, 1707, 1279, 280).
fn numbers(note: &str) -> Vec<f64> {
    let message = note.split_once("#").map_or(note, |(_, m)| m);
    let message = message.split_once(": ").map_or(message, |(_, m)| m);
    message
        .split_whitespace()
        .filter_map(|w| w.trim_matches(|c: char| ",;:()".contains(c)).parse().ok())
        .collect()
}

/// One row per hive of the fleet build, in label order: the own time of the steps that ran
/// for it (shared ones in every hive that uses them); from the step notes, the ext4 chunks it rendered (not reused from
/// another hive's or the image's memos) of those holding data, the zstd frames it
/// compressed of the disk's, and the disk bytes `#compress` read.
fn per_hive_table(run: &Run, ids: &[String]) {
    let mut table = Table::new(&[
        "hive",
        "steps' own s",
        "ext4 chunks rendered",
        "of",
        "zstd frames compressed",
        "of",
        "disk read MiB",
        "filesystems validated",
    ]);
    for t in &run.targets {
        let id = t.label.rsplit_once(':').map_or(t.label.as_str(), |(_, id)| id);
        if !ids.iter().any(|i| i == id) {
            continue;
        }
        let note = |step: &str| {
            run.notes
                .iter()
                .find(|n| n.starts_with(&format!("{}#{step}:", t.label)))
                .map(|n| numbers(n))
                .unwrap_or_default()
        };
        let (ext4, zstd, check) = (note("rootfs.ext4"), note("compress"), note("validate"));
        let cell = |v: Option<&f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        table.row(vec![
            t.label.clone(),
            format!("{:.2}", t.ran_ms as f64 / 1e3),
            cell(ext4.last()),
            cell(ext4.first()),
            cell(zstd.first()),
            cell(zstd.get(1)),
            cell(zstd.last()),
            cell(check.last()),
        ]);
    }
    table.print();
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn main() {
    let hives: usize = support::arg("--hives")
        .map(|n| {
            n.parse()
                .ok()
                .filter(|&n: &usize| n >= 2)
                .unwrap_or_else(|| panic!("--hives takes a number ≥ 2, got `{n}`"))
        })
        .unwrap_or(20);
    let keep = support::flag("--keep");
    disk::require(&["zstd", "cp", "du"]);
    assert!(
        Path::new("/usr/bin/time").exists(),
        "/usr/bin/time (GNU time) measures the peak memory; install `time`"
    );
    support::header(
        "fleet: N hives from one image on a warm base vs one hive alone and a one-value rebuild",
        &format!(
            "image: //boards:pi4, a file:// base, the W4B modules (stand-in package sets), a sensor-manager \
             service, zstd -{LEVEL}\n\
             {hives} hives made by `w4b hive new --yes`; 1. warm-up: `w4b build //images:edge` (untimed)\n\
             2. baseline: one hive alone on a copy of the warm cache (time, growth)\n\
             3. `w4b build //hives/...` on the warm cache: total, cache growth, both ÷ {hives}\n\
             4. floor: one value of one hive's YAML changed, that hive rebuilt on the fleet's cache\n\
             5. one hive more (`hive new`, then built alone) on the fleet's cache\n\
             steps that ran once for the fleet vs per hive, from --message-format json"
        ),
    );

    let cache_root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (t_base, base) = support::time(|| pibase::realistic(&cache_root, BASE_BUDGET));
    println!(
        "   base: {}\n   {} in {:.1} s: {}",
        base.describe(),
        if base.built { "built" } else { "cached" },
        secs(t_base),
        base.dir.display()
    );
    let fleet = Fleet::new(&base);
    println!("   workspace: {}", fleet.ws.display());
    let warm = fleet.scratch("cache-warm");

    // The hives, by the operator's command.
    let start = Instant::now();
    let ids: Vec<String> = (1..=hives)
        .map(|i| fleet.new_hive(&warm, &format!("Hive {i:02}")))
        .collect();
    let t_new = start.elapsed();
    println!(
        "   {hives} × `w4b hive new --yes`: {:.2} s ({:.0} ms per hive)",
        secs(t_new),
        secs(t_new) * 1e3 / hives as f64
    );
    let first = ids
        .iter()
        .min()
        .cloned()
        .unwrap_or_else(|| panic!("no hive was made"));

    // 1. Warm-up: the image alone.
    let (warm_run, warm_out) = fleet.build(&warm, "//images:edge");
    let warm_bytes = du(&warm);
    println!(
        "   warm-up `w4b build //images:edge`: {:.1} s, {} steps ran; cache {:.0} MiB, image {:.0} MiB",
        secs(warm_run.took),
        warm_run.ran.len(),
        warm_bytes as f64 / MIB as f64,
        warm_out as f64 / MIB as f64,
    );
    println!();

    // 2. One hive alone, on a copy of the warm cache (before the fleet touches it).
    let single_cache = fresh_copy(&warm, &fleet.scratch("cache-single"));
    let single_before = du(&single_cache);
    let (single, single_out) = fleet.build(&single_cache, &format!("//hives:{first}"));
    let single_growth = du(&single_cache).saturating_sub(single_before);
    assert!(
        single.targets.len() == 1 && single.targets[0].result == "ok",
        "the single hive did not build: {:?}",
        single.targets
    );
    fs::remove_dir_all(&single_cache).unwrap_or_else(|e| panic!("remove {}: {e}", single_cache.display()));

    // 3. The fleet on the warm cache.
    let fleet_before = du(&warm);
    let (all, fleet_out) = fleet.build(&warm, "//hives/...");
    let fleet_growth = du(&warm).saturating_sub(fleet_before);
    let ok = all.targets.iter().filter(|t| t.result == "ok").count();
    assert_eq!(
        (ok, all.targets.len()),
        (hives, hives),
        "the fleet's summary: {:?}",
        all.targets
    );

    // 4. What differs: one value of the first hive, rebuilt on the fleet's cache.
    let file = fleet.ws.join(format!("defs/hives/{first}.yaml"));
    let yaml = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let changed: String = yaml
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(ONE_VALUE.0) {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}{}\n", ONE_VALUE.1)
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(changed, yaml, "no `{}` line in {}", ONE_VALUE.0, file.display());
    fs::write(&file, &changed).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    let one_before = du(&warm);
    let (one, one_out) = fleet.build(&warm, &format!("//hives:{first}"));
    let one_growth = du(&warm).saturating_sub(one_before);

    // 5. One hive more on the fleet's cache: what the next hive costs once the fleet's
    // common work is cached.
    let next = fleet.new_hive(&warm, &format!("Hive {:02}", hives + 1));
    let next_before = du(&warm);
    let (more, more_out) = fleet.build(&warm, &format!("//hives:{next}"));
    let more_growth = du(&warm).saturating_sub(next_before);
    assert!(
        more.targets.len() == 1 && more.targets[0].result == "ok",
        "the next hive did not build: {:?}",
        more.targets
    );
    assert!(
        !one.ran.is_empty(),
        "changing `{}` of {first} rebuilt nothing",
        ONE_VALUE.1
    );

    // The results.
    let n = hives as f64;
    let per_hive_s = secs(all.took) / n;
    let per_hive_growth = fleet_growth as f64 / n;
    let mut table = Table::new(&[
        "build",
        "wall s",
        "ran",
        "cached",
        "cache growth MiB",
        "outputs MiB",
        "peak RSS MiB",
    ]);
    for (name, run, growth, out) in [
        (
            "warm-up: //images:edge (untimed)",
            &warm_run,
            warm_bytes,
            warm_out,
        ),
        ("one hive alone", &single, single_growth, single_out),
        (&*format!("fleet of {hives}"), &all, fleet_growth, fleet_out),
        ("one value of one hive changed", &one, one_growth, one_out),
        (
            &*format!("hive {} added to the fleet", hives + 1),
            &more,
            more_growth,
            more_out,
        ),
    ] {
        table.row(vec![
            name.to_string(),
            format!("{:.2}", secs(run.took)),
            run.ran.len().to_string(),
            run.cached.len().to_string(),
            format!("{:.1}", growth as f64 / MIB as f64),
            format!("{:.0}", out as f64 / MIB as f64),
            format!("{:.0}", mib(run.max_rss_kib)),
        ]);
    }
    table.print();

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let t_single = secs(single.took);
    let t_one = secs(one.took);
    let (g_single, g_one) = (single_growth as f64, one_growth as f64);
    let (t_more, g_more) = (secs(more.took), more_growth as f64);
    let mut ratios = Table::new(&["", "value", "÷ one hive alone", "÷ one-value rebuild"]);
    for (name, value, shown, single, one) in [
        (
            "fleet per hive: time",
            per_hive_s,
            format!("{per_hive_s:.2} s"),
            t_single,
            t_one,
        ),
        (
            "fleet per hive: cache growth",
            per_hive_growth,
            format!("{:.1} MiB", per_hive_growth / MIB as f64),
            g_single,
            g_one,
        ),
        (
            "one hive added: time",
            t_more,
            format!("{t_more:.2} s"),
            t_single,
            t_one,
        ),
        (
            "one hive added: cache growth",
            g_more,
            format!("{:.1} MiB", g_more / MIB as f64),
            g_single,
            g_one,
        ),
    ] {
        ratios.row(vec![
            name.to_string(),
            shown,
            format!("{:.2}×", ratio(value, single)),
            format!("{:.2}×", ratio(value, one)),
        ]);
    }
    ratios.print();

    // Which steps ran once for the fleet, which per hive.
    let groups = step_groups(&all);
    let total_ms: u64 = groups.values().map(|g| g.2).sum();
    let mut steps = Table::new(&[
        "fleet step",
        "kind",
        "ran",
        "cached",
        "own s (sum)",
        "% of steps' time",
    ]);
    let (mut once, mut per_hive, mut other) = (0, 0, 0);
    let mut by_time: Vec<_> = groups.iter().collect();
    by_time.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then(a.0.cmp(b.0)));
    for (name, (kind, ran, ms, cached)) in &by_time {
        // A step whose key is the same for every hive runs once (the others find it
        // cached, or share its node); one whose key differs runs once per hive.
        match *ran {
            0 => {}
            1 => once += 1,
            r if r == hives => per_hive += 1,
            _ => other += 1,
        }
        steps.row(vec![
            name.to_string(),
            kind.to_string(),
            ran.to_string(),
            cached.to_string(),
            format!("{:.2}", *ms as f64 / 1e3),
            format!("{:.1}", pct(*ms, total_ms)),
        ]);
    }
    steps.print();
    let warm_steps = warm_run.ran.len();
    println!(
        "   steps: {warm_steps} ran once in the warm-up (the image alone: base fetch and unpack, package sets, \
         image layers);\n   in the fleet build {once} ran once (shared by every hive), {per_hive} ran {hives}× (once \
         per hive), {other} otherwise; {} step results were cached",
        all.cached.len()
    );
    per_hive_table(&all, &ids);
    for note in &one.notes {
        println!("   note (one value): {note}");
    }
    for note in &more.notes {
        println!("   note (hive {}): {note}", hives + 1);
    }
    println!(
        "   scratch at the end: warm cache {} MiB",
        thousands(du(&warm) / MIB)
    );

    if keep {
        let kept = fleet.root.keep();
        println!("   kept: {}", kept.display());
    }
    println!(
        "RESULT fleet: {hives} hives in {:.1} s, {per_hive_s:.2} s and {:.1} MiB of cache per hive \
         (ratio {:.2}× one hive alone {t_single:.2} s / {:.1} MiB; {:.2}× a one-value rebuild {t_one:.2} s / {:.1} MiB); \
         one hive more {t_more:.2} s / {:.1} MiB",
        secs(all.took),
        per_hive_growth / MIB as f64,
        ratio(per_hive_s, t_single),
        g_single / MIB as f64,
        ratio(per_hive_s, t_one),
        g_one / MIB as f64,
        g_more / MIB as f64,
    );
}
