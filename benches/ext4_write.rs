//! ext4 writing: how long w4b takes to turn a host tree of about 1 GiB and 20,000 files
//! into an ext4 image, against `mke2fs -d` making an image of the same size from the same
//! tree in the same run — what a Pi image builder runs today — and how much memory
//! w4b's writer needs for it.
//!
//! Both sides do the whole job a user waits for: walk the source tree, read every file,
//! write the image (sparse, into a new file), `fsync` it (`mke2fs` does so before it
//! exits; w4b's side calls `sync_all`). Both read the same source files, so each side
//! gets one untimed warm-up and every timed round runs with the source in the page
//! cache; rounds alternate which side goes first. The image size and features are the
//! same: `mke2fs -t ext4 -b 4096` defaults, which w4b's writer reproduces (the bench
//! prints both superblocks' geometry side by side). Both images are checked with
//! `e2fsck -fn` once, outside the timing.
//!
//! Peak memory: the bench re-runs itself as a child (`--rss-child`) that scans the tree
//! and writes the image once, then reports its own `VmHWM` (peak resident set, from
//! `/proc/self/status`); when `/usr/bin/time` exists, both the child and `mke2fs` also
//! run under `time -f %M` (max RSS from `wait4`'s rusage), the same method on both sides.
//!
//! Targets: no slower than `mke2fs -d` (ratio ≤ 1.0); peak RSS ≤ 300 MiB.
//!
//! Run: `cargo bench --bench ext4_write [-- --quick] [--runs N]`; `--quick` uses a tree
//! of 200 MiB / 5,000 entries and a 512 MiB image instead of 1 GiB / 20,000 and 1.5 GiB.

#![allow(clippy::disallowed_methods)] // A bench spawns tools and reads the clock.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::disk::{self, HostTree, ROOTFS_FULL, ROOTFS_QUICK};
use support::{thousands, Samples, Table};

const MIB: u64 = 1 << 20;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mke2fs(src: &Path, img: &Path, size: u64) -> Command {
    let mut c = Command::new("mke2fs");
    c.args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(src)
        .arg(img)
        .arg(format!("{}k", size / 1024));
    c
}

/// The superblock fields both images are compared on, from `dumpe2fs -h`.
const GEOMETRY: &[&str] = &[
    "Filesystem features",
    "Block count",
    "Reserved block count",
    "Free blocks",
    "Inode count",
    "Free inodes",
    "Inode size",
    "Reserved GDT blocks",
    "Flex block group size",
    "Total journal blocks",
];

fn geometry(img: &Path) -> Vec<String> {
    let out = disk::run(Command::new("dumpe2fs").arg("-h").arg(img));
    let text = String::from_utf8_lossy(&out.stdout);
    GEOMETRY
        .iter()
        .map(|field| {
            text.lines()
                .find_map(|l| l.strip_prefix(field)?.trim_start().strip_prefix(':'))
                .map_or_else(|| "-".to_string(), |v| v.trim().to_string())
        })
        .collect()
}

fn e2fsck(img: &Path) -> String {
    let out = disk::run(Command::new("e2fsck").arg("-fn").arg(img));
    let text = String::from_utf8_lossy(&out.stdout);
    // The summary line, without the image's path.
    text.lines()
        .last()
        .map(|l| l.rsplit_once(": ").map_or(l, |(_, v)| v).to_string())
        .unwrap_or_default()
}

/// Child mode: scan and write once, then print the peak resident set.
fn rss_child(args: &[String]) {
    let [src, img, size] = args else {
        panic!("--rss-child SRC IMG SIZE, got {args:?}");
    };
    let size: u64 = size.parse().unwrap_or_else(|_| panic!("size `{size}`"));
    let start = disk::proc_status_kib("VmHWM").unwrap_or(0);
    disk::write_ext4(Path::new(src), Path::new(img), size);
    let peak = disk::proc_status_kib("VmHWM").unwrap_or(0);
    println!("VmHWM-start {start}");
    println!("VmHWM {peak}");
}

/// Max RSS in KiB of `cmd` under `/usr/bin/time -f %M` (the last line of its stderr).
fn time_max_rss(cmd: &Command) -> Option<u64> {
    if !Path::new("/usr/bin/time").exists() {
        return None;
    }
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M"]).arg(cmd.get_program()).args(cmd.get_args());
    let out = disk::run(&mut c);
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        return rss_child(&args[i + 1..]);
    }
    let quick = support::flag("--quick");
    let (shape, image) = if quick {
        (ROOTFS_QUICK, 512 * MIB)
    } else {
        (ROOTFS_FULL, 1536 * MIB)
    };
    let runs = support::runs(3);
    disk::require(&["mke2fs", "e2fsck", "dumpe2fs"]);
    support::header(
        "ext4_write: w4b's ext4 writer vs `mke2fs -d` on the same host tree",
        &format!(
            "tree: {} ({} entries besides directories); image: {} MiB, 4 KiB blocks\n\
             both sides: walk + read the tree, write a sparse image, fsync; source warm in the page cache\n\
             baseline: mke2fs -q -F -t ext4 -b 4096 -d SRC IMG {}k\n\
             {runs} interleaved rounds (order alternating) after one untimed warm-up per side",
            if quick {
                "--quick, ~200 MiB"
            } else {
                "full, ~1 GiB"
            },
            thousands(shape.entries() as u64),
            image / MIB,
            image / 1024
        ),
    );

    let (gen_time, tree) = support::time(|| HostTree::rootfs(shape));
    println!("   generated {} in {:.1} s", tree.describe(), secs(gen_time));

    let ours_img = tree.scratch("w4b.img");
    let theirs_img = tree.scratch("mke2fs.img");
    let ours = |scan: &mut Samples, total: &mut Samples| {
        disk::remove(&ours_img);
        let (t_scan, (nodes, contents)) = support::time(|| disk::scan(&tree.src));
        let (t_write, report) = support::time(|| disk::write_ext4_nodes(&nodes, &contents, &ours_img, image));
        assert_eq!(report.image_bytes, image, "w4b wrote an image of another size");
        scan.push(t_scan);
        total.push(t_scan + t_write);
    };
    let theirs = |total: &mut Samples| {
        disk::remove(&theirs_img);
        let mut cmd = mke2fs(&tree.src, &theirs_img, image);
        let (t, _) = support::time(|| disk::run(&mut cmd));
        total.push(t);
    };

    let (mut warm_scan, mut warm_ours, mut warm_theirs) =
        (Samples::default(), Samples::default(), Samples::default());
    ours(&mut warm_scan, &mut warm_ours);
    theirs(&mut warm_theirs);
    println!(
        "   warm-up (untimed): w4b {:.2} s, mke2fs {:.2} s",
        secs(warm_ours.median()),
        secs(warm_theirs.median())
    );
    println!();

    let (mut scan, mut w4b, mut base) = (Samples::default(), Samples::default(), Samples::default());
    for round in 0..runs {
        if round % 2 == 0 {
            ours(&mut scan, &mut w4b);
            theirs(&mut base);
        } else {
            theirs(&mut base);
            ours(&mut scan, &mut w4b);
        }
    }

    // Checks, outside the timing: both images of the last round.
    let fsck_ours = e2fsck(&ours_img);
    let fsck_theirs = e2fsck(&theirs_img);
    let geo_ours = geometry(&ours_img);
    let geo_theirs = geometry(&theirs_img);

    let b = base.median();
    let mut table = Table::new(&["measurement", "runs", "median s", "min s", "max s", "× mke2fs"]);
    let mut row = |name: &str, s: &Samples| {
        table.row(vec![
            name.to_string(),
            s.len().to_string(),
            format!("{:.2}", secs(s.median())),
            format!("{:.2}", secs(s.min())),
            format!("{:.2}", secs(s.max())),
            format!("{:.2}", secs(s.median()) / secs(b)),
        ]);
    };
    row("w4b: scan + write_ext4 + fsync", &w4b);
    row("  of which: scan of the host tree", &scan);
    row("baseline: mke2fs -d", &base);
    table.print();

    // The feature list is too wide for a column: printed once when both agree.
    let mut geo = Table::new(&["dumpe2fs -h", "w4b", "mke2fs"]);
    for ((field, a), b) in GEOMETRY.iter().zip(&geo_ours).zip(&geo_theirs) {
        if *field == "Filesystem features" {
            if a == b {
                println!("   features (both): {a}");
            } else {
                println!("   features (w4b):    {a}");
                println!("   features (mke2fs): {b}");
            }
            continue;
        }
        geo.row(vec![field.to_string(), a.clone(), b.clone()]);
    }
    geo.row(vec![
        "allocated on disk (MiB)".to_string(),
        thousands(disk::allocated(&ours_img) / MIB),
        thousands(disk::allocated(&theirs_img) / MIB),
    ]);
    geo.row(vec!["e2fsck -fn".to_string(), fsck_ours, fsck_theirs]);
    geo.print();

    // Peak memory, in a child of its own so the bench's own allocations do not count.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let rss_img = tree.scratch("rss.img");
    let mut child = Command::new(&exe);
    child
        .arg("--rss-child")
        .arg(&tree.src)
        .arg(&rss_img)
        .arg(image.to_string());
    let out = disk::run(&mut child);
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` from the RSS child:\n{text}"))
    };
    let (hwm_start, hwm) = (field("VmHWM-start "), field("VmHWM "));
    disk::remove(&rss_img);
    let time_ours = time_max_rss(&child);
    disk::remove(&rss_img);
    disk::remove(&theirs_img);
    let time_theirs = time_max_rss(&mke2fs(&tree.src, &theirs_img, image));
    let mib = |k: Option<u64>| k.map_or_else(|| "n/a".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let mut rss = Table::new(&["peak RSS (MiB)", "w4b", "mke2fs"]);
    rss.row(vec![
        "VmHWM in the child, after the write".to_string(),
        mib(Some(hwm)),
        "-".to_string(),
    ]);
    rss.row(vec![
        "  (VmHWM at the child's start)".to_string(),
        mib(Some(hwm_start)),
        "-".to_string(),
    ]);
    rss.row(vec![
        "/usr/bin/time -f %M (rusage max RSS)".to_string(),
        mib(time_ours),
        mib(time_theirs),
    ]);
    rss.print();

    let ratio = secs(w4b.median()) / secs(b);
    let verdict = |ok: bool| if ok { "met" } else { "MISS" };
    println!(
        "   target: no slower than mke2fs -d: {}; peak RSS ≤ 300 MiB: {}",
        verdict(ratio <= 1.0),
        verdict(hwm <= 300 * 1024)
    );
    println!();
    println!(
        "RESULT ext4_write: {:.2} s (ratio {ratio:.2}× baseline mke2fs -d {:.2} s; {} MiB in {} files, {} MiB image, peak RSS {:.1} MiB{})",
        secs(w4b.median()),
        secs(b),
        thousands(tree.bytes / MIB),
        thousands(tree.files),
        image / MIB,
        hwm as f64 / 1024.0,
        if quick { ", --quick" } else { "" }
    );
}
