//! ext4 reading: how long w4b takes to read every file out of an ext4 image (the step
//! that turns a downloaded Raspberry Pi OS image into a tree), against the kernel doing
//! the same through a loop mount in the same run — the flow image tools use today.
//!
//! The image is the one `ext4_write` measures: w4b's writer over the generated tree of
//! about 1 GiB and 20,000 files (`--quick`: 200 MiB, 5,000), written once, untimed.
//!
//! - **w4b:** `Ext4::open` on the image file, `nodes()`, then `open_file` and read to end
//!   for every regular file, hashing each with BLAKE3 (what importing a tree into the
//!   store costs). The bytes are checked against the source tree's digests once.
//! - **w4b, no hash:** the same walk and reads without BLAKE3, to show the hash's share.
//! - **Baseline:** `mount -o ro,loop IMG MNT`, `tar -cf - -C MNT .` into a pipe whose
//!   bytes are counted (`| wc -c`), `umount`: every file read through the kernel's ext4.
//!   This needs root; without it the bench prints `SKIPPED` for the baseline and still
//!   times w4b's reader.
//!
//! Caches: by default every side runs **warm** — the image file is in the page cache
//! (one untimed warm-up each), so the comparison is of the software, not the disk. The
//! kernel side still starts each round with an empty ext4 page cache, since unmounting
//! drops it. `--cold` drops the image file's pages before every timed run, for both
//! sides: `dd iflag=nocache` (`posix_fadvise(DONTNEED)` on the image alone, no root, and
//! the shared machine's other caches stay warm), else `/proc/sys/vm/drop_caches`; the
//! bench prints which. The loop device's own cache goes with it: `mount -o loop`
//! detaches the device at `umount`.
//!
//! Target: w4b no slower than 1.5× the loop-mount baseline.
//!
//! Run: `cargo bench --bench ext4_read [-- --quick] [--cold] [--runs N]`.

#![allow(clippy::disallowed_methods)] // A bench spawns tools and reads the clock.

mod support;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::disk::{self, HostTree, ROOTFS_FULL, ROOTFS_QUICK};
use support::{thousands, Samples, Table};
use w4b::formats::ext4::{content_inode, Ext4};
use w4b::formats::fs::NodeKind;

const MIB: u64 = 1 << 20;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// What a read of the whole image found.
#[derive(Debug, PartialEq, Eq)]
struct ReadTotals {
    files: u64,
    bytes: u64,
    /// The combined digest (see `disk::tree_digest`) when hashing, else None.
    digest: Option<blake3::Hash>,
}

/// w4b's side: every regular file of the image, read to end through `Ext4`.
fn read_image(img: &Path, hash: bool, buf: &mut [u8]) -> ReadTotals {
    let file = fs::File::open(img).unwrap_or_else(|e| panic!("open {}: {e}", img.display()));
    let len = file
        .metadata()
        .unwrap_or_else(|e| panic!("stat {}: {e}", img.display()))
        .len();
    let fs = Ext4::open(file, 0, len).unwrap_or_else(|e| panic!("Ext4::open: {e:?}"));
    let nodes = fs.nodes().unwrap_or_else(|e| panic!("nodes: {e:?}"));
    let mut all = blake3::Hasher::new();
    let (mut files, mut bytes) = (0, 0);
    for n in &nodes {
        let NodeKind::File { size, content } = &n.kind else {
            continue;
        };
        let ino = content_inode(content).unwrap_or_else(|| panic!("{}: not an ext4 content id", n.path));
        let mut r = fs
            .open_file(ino)
            .unwrap_or_else(|e| panic!("open_file {}: {e:?}", n.path));
        let got = if hash {
            let (d, got) = disk::hash_reader(&mut r, buf).unwrap_or_else(|e| panic!("read {}: {e}", n.path));
            disk::combine(&mut all, &n.path, &d);
            got
        } else {
            let mut got = 0u64;
            loop {
                let k = r.read(buf).unwrap_or_else(|e| panic!("read {}: {e}", n.path));
                if k == 0 {
                    break;
                }
                got += k as u64;
            }
            got
        };
        assert_eq!(got, *size, "{}: read {got} bytes of {size}", n.path);
        files += 1;
        bytes += got;
    }
    ReadTotals {
        files,
        bytes,
        digest: hash.then(|| all.finalize()),
    }
}

/// A read-only loop mount, unmounted on drop (also when a round panics).
struct Mounted(PathBuf);

impl Mounted {
    fn new(img: &Path, mnt: &Path) -> Result<Mounted, String> {
        let out = Command::new("mount")
            .args(["-t", "ext4", "-o", "ro,loop"])
            .arg(img)
            .arg(mnt)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("spawn mount: {e}"))?;
        if out.status.success() {
            Ok(Mounted(mnt.to_path_buf()))
        } else {
            Err(format!(
                "mount failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not unmount {}", self.0.display());
        }
    }
}

/// The baseline: mount, `tar -cf - -C MNT .` counted like `| wc -c`, unmount. Returns the
/// time of the whole flow and of `tar` alone, and the archive's size.
fn loop_mount_tar(img: &Path, mnt: &Path, buf: &mut [u8]) -> (Duration, Duration, u64) {
    let start = Instant::now();
    let m = Mounted::new(img, mnt).unwrap_or_else(|e| panic!("{e}"));
    let tar_start = Instant::now();
    let mut child = Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(&m.0)
        .arg(".")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn tar: {e}"));
    let mut out = child.stdout.take().unwrap_or_else(|| panic!("tar has no stdout"));
    let mut n = 0u64;
    loop {
        let k = out.read(buf).unwrap_or_else(|e| panic!("read tar: {e}"));
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let status = child.wait().unwrap_or_else(|e| panic!("wait tar: {e}"));
    assert!(status.success(), "tar failed: {status}");
    let t_tar = tar_start.elapsed();
    drop(m);
    (start.elapsed(), t_tar, n)
}

fn main() {
    let quick = support::flag("--quick");
    let cold = support::flag("--cold");
    let (shape, image) = if quick {
        (ROOTFS_QUICK, 512 * MIB)
    } else {
        (ROOTFS_FULL, 1536 * MIB)
    };
    let runs = support::runs(3);
    let root = disk::is_root();
    support::header(
        "ext4_read: w4b's ext4 reader vs the kernel through a loop mount",
        &format!(
            "tree: {} ({} entries besides directories), written once by w4b into a {} MiB image\n\
             w4b: Ext4::open + nodes() + open_file/read/BLAKE3 of every file\n\
             baseline: mount -o ro,loop + tar -cf - -C MNT . | wc -c + umount{}\n\
             caches: {}\n\
             {runs} interleaved rounds (order rotating) after one untimed warm-up per side",
            if quick {
                "--quick, ~200 MiB"
            } else {
                "full, ~1 GiB"
            },
            thousands(shape.entries() as u64),
            image / MIB,
            if root { "" } else { " (SKIPPED: needs root)" },
            if cold {
                "cold: the image's pages are dropped before every timed run"
            } else {
                "warm: the image file stays in the page cache (the kernel's ext4 cache is empty after each umount)"
            }
        ),
    );

    let (gen_time, tree) = support::time(|| HostTree::rootfs(shape));
    println!("   generated {} in {:.1} s", tree.describe(), secs(gen_time));
    let img = tree.scratch("w4b.img");
    let (write_time, _) = support::time(|| disk::write_ext4(&tree.src, &img, image));
    let (digest_time, expected) = support::time(|| disk::tree_digest(&tree.src));
    println!(
        "   wrote the image in {:.1} s (untimed); source digests in {:.1} s",
        secs(write_time),
        secs(digest_time)
    );
    let mnt = tree.scratch("mnt");
    fs::create_dir(&mnt).unwrap_or_else(|e| panic!("create {}: {e}", mnt.display()));

    let mut buf = vec![0u8; 256 << 10];
    let skip = if !root {
        Some("needs root for the loop-mount baseline".to_string())
    } else {
        // Probe once: root in a container may still lack loop devices.
        Mounted::new(&img, &mnt).err()
    };
    if let Some(why) = &skip {
        println!("   SKIPPED: {why}");
    }
    let mut drop_how = None;
    let mut prepare = || {
        if cold {
            drop_how = disk::drop_cache(&img);
            if drop_how.is_none() {
                println!("   note: could not drop the image's cache; this round ran warm");
            }
        }
    };

    // Warm-up, untimed; the hashed read also checks every byte against the source tree.
    let first = read_image(&img, true, &mut buf);
    assert_eq!(
        first.digest,
        Some(expected),
        "the image's files differ from the source tree"
    );
    assert_eq!((first.files, first.bytes), (tree.files, tree.bytes));
    if skip.is_none() {
        let (_, _, n) = loop_mount_tar(&img, &mnt, &mut buf);
        assert!(
            n >= tree.bytes,
            "tar produced {n} bytes for {} of files",
            tree.bytes
        );
    }
    println!();

    let (mut hashed, mut plain, mut base, mut tar_only) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for round in 0..runs {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    prepare();
                    let (t, got) = support::time(|| read_image(&img, true, &mut buf));
                    assert_eq!(got, first, "reads differ between rounds");
                    hashed.push(t);
                }
                1 => {
                    prepare();
                    let (t, got) = support::time(|| read_image(&img, false, &mut buf));
                    assert_eq!((got.files, got.bytes), (first.files, first.bytes));
                    plain.push(t);
                }
                _ if skip.is_none() => {
                    prepare();
                    let (t, t_tar, n) = loop_mount_tar(&img, &mnt, &mut buf);
                    assert!(
                        n >= tree.bytes,
                        "tar produced {n} bytes for {} of files",
                        tree.bytes
                    );
                    base.push(t);
                    tar_only.push(t_tar);
                }
                _ => {}
            }
        }
    }
    if cold {
        println!(
            "   cache drop: {}",
            drop_how.unwrap_or("FAILED: every round ran warm")
        );
    }

    let b = (base.len() > 0).then(|| base.median());
    let mut table = Table::new(&[
        "measurement",
        "runs",
        "median s",
        "min s",
        "max s",
        "MB/s",
        "× loop mount",
    ]);
    let mut row = |name: &str, s: &Samples| {
        if s.len() == 0 {
            table.row(vec![
                name.to_string(),
                "0".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "SKIPPED".into(),
            ]);
            return;
        }
        table.row(vec![
            name.to_string(),
            s.len().to_string(),
            format!("{:.2}", secs(s.median())),
            format!("{:.2}", secs(s.min())),
            format!("{:.2}", secs(s.max())),
            format!("{:.0}", tree.bytes as f64 / secs(s.median()) / 1e6),
            b.map_or_else(
                || "-".to_string(),
                |b| format!("{:.2}", secs(s.median()) / secs(b)),
            ),
        ]);
    };
    row("w4b: Ext4 walk + read + BLAKE3", &hashed);
    row("w4b: Ext4 walk + read (no hash)", &plain);
    row("baseline: mount + tar | wc -c + umount", &base);
    row("  of which: tar", &tar_only);
    table.print();

    let value = secs(hashed.median());
    let sizes = format!(
        "{} MiB in {} files{}{}",
        thousands(tree.bytes / MIB),
        thousands(tree.files),
        if quick { ", --quick" } else { "" },
        if cold { ", cold" } else { ", warm" }
    );
    match b {
        Some(b) => {
            let ratio = value / secs(b);
            println!(
                "   target: ≤ 1.5× the loop mount: {}",
                if ratio <= 1.5 { "met" } else { "MISS" }
            );
            println!();
            println!(
                "RESULT ext4_read: {value:.2} s (ratio {ratio:.2}× baseline loop mount + tar {:.2} s; {sizes})",
                secs(b)
            );
        }
        None => {
            println!();
            println!("RESULT ext4_read: {value:.2} s (baseline SKIPPED: needs root for the loop-mount baseline; {sizes})");
        }
    }
}
