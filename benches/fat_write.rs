//! FAT32 writing: how long w4b takes to write a Raspberry Pi boot partition (~330 files,
//! ~60 MiB: kernels, firmware, device trees, overlays) into a 512 MiB FAT32 image,
//! against `mkfs.vfat` + `mcopy` doing the same in the same run — how Pi image scripts
//! without root fill the boot partition today.
//!
//! - **w4b:** scan the host tree into nodes, `write_fat32` into a new (sparse) file,
//!   `fsync`.
//! - **Baseline:** `mkfs.vfat -C -F 32 -n bootfs IMG 524288`, then
//!   `mcopy -s -i IMG SRC/* ::/`, then `fsync` of the image (neither tool syncs on its
//!   own, so the bench does it for both sides alike).
//!
//! The source is warm in the page cache for both (one untimed warm-up each); rounds
//! alternate which side goes first. Once, outside the timing, both images are checked
//! with `fsck.fat -n` and their file listings (`mdir -/ -b`) compared.
//!
//! Target: no slower than the baseline.
//!
//! Run: `cargo bench --bench fat_write [-- --runs N]`.

#![allow(clippy::disallowed_methods)] // A bench spawns tools and reads the clock.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::disk::{self, HostTree};
use support::{thousands, Samples, Table};
use w4b::formats::fat::{write_fat32, FatOptions, FatReport};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 512 * MIB;

fn ms(d: Duration) -> f64 {
    support::ms(d)
}

fn ours(src: &Path, img: &Path) -> (Duration, FatReport) {
    disk::remove(img);
    support::time(|| {
        let (nodes, contents) = disk::scan(src);
        let mut out = fs::File::create(img).unwrap_or_else(|e| panic!("create {}: {e}", img.display()));
        let opts = FatOptions::new(SIZE, 0x1A2B_3C4D, "bootfs");
        let report = write_fat32(&mut out, &nodes, &contents, &opts)
            .unwrap_or_else(|e| panic!("write_fat32 {}: {e:?}", img.display()));
        out.sync_all()
            .unwrap_or_else(|e| panic!("fsync {}: {e}", img.display()));
        report
    })
}

/// `mkfs.vfat` + `mcopy` + fsync; returns the total and the `mkfs.vfat` share.
fn theirs(img: &Path, entries: &[PathBuf]) -> (Duration, Duration) {
    disk::remove(img);
    let (total, t_mkfs) = support::time(|| {
        let (t_mkfs, _) = support::time(|| {
            disk::run(
                Command::new("mkfs.vfat")
                    .args(["-C", "-F", "32", "-n", "bootfs"])
                    .arg(img)
                    .arg((SIZE / 1024).to_string()),
            )
        });
        disk::run(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-s", "-D", "o", "-i"])
                .arg(img)
                .args(entries)
                .arg("::/"),
        );
        disk::sync_path(img);
        t_mkfs
    });
    (total, t_mkfs)
}

/// Every path in the image, as `mdir -/ -b` lists them (no times, no short names).
fn listing(img: &Path) -> BTreeSet<String> {
    let out = disk::run(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-/", "-b", "-i"])
            .arg(img)
            .arg("::/"),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn fsck(img: &Path) -> String {
    let out = disk::run(Command::new("fsck.fat").arg("-n").arg(img));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| l.rsplit_once(": ").map_or(l, |(_, v)| v).trim().to_string())
        .unwrap_or_default()
}

/// `BPB_SecPerClus` (byte 13) and `BPB_FATSz32` (bytes 36..40) of an image's boot sector.
fn bpb(img: &Path) -> (u8, u32) {
    let mut sector = [0u8; 512];
    fs::File::open(img)
        .and_then(|mut f| f.read_exact(&mut sector))
        .unwrap_or_else(|e| panic!("read {}: {e}", img.display()));
    (
        sector[13],
        u32::from_le_bytes([sector[36], sector[37], sector[38], sector[39]]),
    )
}

fn main() {
    let runs = support::runs(5);
    disk::require(&["mkfs.vfat", "mcopy", "mdir", "fsck.fat"]);
    support::header(
        "fat_write: w4b's FAT32 writer vs `mkfs.vfat` + `mcopy` for a Pi boot partition",
        &format!(
            "image: {} MiB FAT32, label bootfs; both sides end with an fsync of the image\n\
             baseline: mkfs.vfat -C -F 32 -n bootfs IMG {} && mcopy -s -i IMG SRC/* ::/\n\
             {runs} interleaved rounds (order alternating) after one untimed warm-up per side",
            SIZE / MIB,
            SIZE / 1024
        ),
    );
    let (gen_time, tree) = support::time(HostTree::bootfs);
    println!(
        "   generated {} in {:.1} s",
        tree.describe(),
        gen_time.as_secs_f64()
    );
    let mut entries: Vec<PathBuf> = fs::read_dir(&tree.src)
        .unwrap_or_else(|e| panic!("read {}: {e}", tree.src.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("read: {e}")).path())
        .collect();
    entries.sort();

    let ours_img = tree.scratch("w4b.img");
    let theirs_img = tree.scratch("mkfs.img");
    let (warm_ours, report) = ours(&tree.src, &ours_img);
    assert_eq!(report.files, tree.files, "w4b wrote another number of files");
    let (warm_theirs, _) = theirs(&theirs_img, &entries);
    println!(
        "   warm-up (untimed): w4b {:.1} ms, mkfs.vfat + mcopy {:.1} ms",
        ms(warm_ours),
        ms(warm_theirs)
    );
    println!();

    let (mut w4b, mut base, mut mkfs) = (Samples::default(), Samples::default(), Samples::default());
    for round in 0..runs {
        let mut a = || w4b.push(ours(&tree.src, &ours_img).0);
        let mut b = || {
            let (t, t_mkfs) = theirs(&theirs_img, &entries);
            base.push(t);
            mkfs.push(t_mkfs);
        };
        if round % 2 == 0 {
            a();
            b();
        } else {
            b();
            a();
        }
    }

    // Checks, outside the timing, of the last round's images.
    let fsck_ours = fsck(&ours_img);
    let fsck_theirs = fsck(&theirs_img);
    let list_ours = listing(&ours_img);
    let list_theirs = listing(&theirs_img);
    assert_eq!(list_ours, list_theirs, "the two images list different paths");
    let (spc_theirs, fatsz_theirs) = bpb(&theirs_img);

    let bm = base.median();
    let mut table = Table::new(&[
        "measurement",
        "runs",
        "median ms",
        "min ms",
        "max ms",
        "× baseline",
    ]);
    let mut row = |name: &str, s: &Samples| {
        table.row(vec![
            name.to_string(),
            s.len().to_string(),
            format!("{:.1}", ms(s.median())),
            format!("{:.1}", ms(s.min())),
            format!("{:.1}", ms(s.max())),
            format!("{:.2}", s.median().as_secs_f64() / bm.as_secs_f64()),
        ]);
    };
    row("w4b: scan + write_fat32 + fsync", &w4b);
    row("baseline: mkfs.vfat + mcopy + fsync", &base);
    row("  of which: mkfs.vfat", &mkfs);
    table.print();

    let mut check = Table::new(&["image", "w4b", "mkfs.vfat + mcopy"]);
    check.row(vec![
        "cluster size (bytes)".into(),
        report.cluster_size.to_string(),
        (u32::from(spc_theirs) * 512).to_string(),
    ]);
    check.row(vec![
        "sectors per FAT".into(),
        thousands(u64::from(report.fat_sectors)),
        thousands(u64::from(fatsz_theirs)),
    ]);
    check.row(vec![
        "paths listed by mdir".into(),
        thousands(list_ours.len() as u64),
        thousands(list_theirs.len() as u64),
    ]);
    check.row(vec![
        "allocated on disk (KiB)".into(),
        thousands(disk::allocated(&ours_img) / 1024),
        thousands(disk::allocated(&theirs_img) / 1024),
    ]);
    check.row(vec!["fsck.fat -n".into(), fsck_ours, fsck_theirs]);
    check.print();

    let ratio = w4b.median().as_secs_f64() / bm.as_secs_f64();
    println!(
        "   target: no slower than mkfs.vfat + mcopy: {}",
        if ratio <= 1.0 { "met" } else { "MISS" }
    );
    println!();
    println!(
        "RESULT fat_write: {:.1} ms (ratio {ratio:.2}× baseline mkfs.vfat + mcopy {:.1} ms; {} MiB in {} files, {} MiB image)",
        ms(w4b.median()),
        ms(bm),
        thousands(tree.bytes / MIB),
        thousands(tree.files),
        SIZE / MIB
    );
}
