//! A Raspberry Pi disk image on a base bootstrapped from Debian's packages, cold, with a
//! warm package cache: `w4b build` against mmdebstrap plus the standard image tools for
//! the same package set, in the same run.
//!
//! **w4b**: the repository's `//bases:debian-bookworm-arm64` (see [`support::debian`]:
//! the kept lock, the `.deb`s in a local pool every repository URL is mapped to) and
//! `//images:bench` — that base, `//boards:pi4`, `output: {compression: zstd, level: 3}`.
//! An empty cache; timed from spawn to exit, two processes: `w4b build` of the base-only
//! image (the `.deb`s fetched from the pool, the bootstrap, `raspi-layout`, `graft`, and a
//! tar of nothing), then of `//images:bench` (the board's layer, the filesystems, the
//! disk, validation, compression). The split costs w4b a second start-up and a few
//! hundred milliseconds of the empty tar, and leaves the cache between the two as the
//! kept base cache the image-pipeline bench (`image_build -- --base debian`) starts
//! from.
//!
//! **Baseline**: `mmdebstrap --variant=essential --architectures=arm64 --include=<the
//! set's own package names> bookworm <dir> <the host mirror's suites>`, with
//! - a setup hook copying the locked `.deb`s from the same pool into the root's
//!   `/var/cache/apt/archives/` (apt finds them there and downloads nothing) and
//!   seeding `/etc/default/raspi-firmware` as w4b's bootstrap does
//!   (`RASPI_FIRMWARE_DEFAULTS`), dpkg keeping it (`--dpkgopt=force-confold`);
//! - the initramfs built once, as w4b does it: `INITRD=No` for the kernel's hooks during
//!   the install, `update-initramfs -c -k all` in a customize hook (`--plain` leaves the
//!   packages to build it as they do without, which is twice: the kernel's postinst and
//!   initramfs-tools' trigger);
//! - the first-boot state w4b leaves: an empty machine id, no SSH host keys, `/etc/fstab`
//!   by label;
//!
//! then `mkfs.vfat` + `mcopy` of `/boot/firmware` into a 512 MiB FAT32, `mkfs.ext4 -d` of
//! the rest into a 2 GiB ext4 (w4b's `raspi-layout` sizes and labels), `sfdisk` and
//! `dd conv=sparse` of both into the disk, `zstd -3 -T<cores>`. mmdebstrap fetches the
//! repository indices from the host mirror (`apt-get update`), work w4b did once in
//! `w4b lock`: that phase is shown, and the ratio is given with and without it.
//!
//! Checks outside the timing: the packages mmdebstrap installed against the lock (same
//! names and versions, or the difference printed), the steps w4b ran.
//!
//! Run: `cargo bench --bench bootstrap [-- --runs N] [--plain]`, default 1 round (each
//! side is ~13 min on 2 cores). Needs root (mmdebstrap's chroot mode and w4b's install
//! engine), qemu-user with binfmt_misc, mmdebstrap, dosfstools, mtools, e2fsprogs, fdisk,
//! zstd, and the host's Debian mirror for the lock and the first fill of the pool. Scratch:
//! ~6 GiB in `$TMPDIR` at the peak, removed at the end; kept: `target/tmp/bench-debian/`.

#![allow(clippy::disallowed_methods)] // A bench spawns tools and reads the clock.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::build::{du, fresh_copy, row, secs, step_table, StepTime, W4b};
use support::debian::{self, Debian, BASE, BASE_ONLY};
use support::disk;
use support::{thousands, Samples, Table};
use w4b::steps::layout::{BOOT_LABEL, BOOT_START, ROOT_LABEL};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// w4b's `raspi-layout` sizes (`src/compile/bootstrap.rs`).
const BOOT_BYTES: u64 = 512 * MIB;
const ROOT_BYTES: u64 = 2048 * MIB;
const LEVEL: u32 = 3;
/// The lock's repositories and their components (`defs/packages/debian-bookworm*.yaml`).
const COMPONENTS: &[(&str, &str)] = &[
    ("debian", "main"),
    ("debian-updates", "main"),
    ("debian-security", "main"),
    ("debian-firmware", "non-free-firmware"),
];

/// The baseline's phases, in order.
#[derive(Default)]
struct Baseline {
    /// mmdebstrap's own phases (from its `I:` lines), by name.
    mm: BTreeMap<String, Samples>,
    mm_order: Vec<String>,
    mm_total: Samples,
    /// The part of mmdebstrap that fetched the indices.
    update: Samples,
    fat: Samples,
    ext4: Samples,
    disk: Samples,
    compress: Samples,
    total: Samples,
    image_bytes: u64,
    /// Installed packages (name → version) of the last root.
    installed: BTreeMap<String, String>,
}

fn write_script(path: &Path, body: &str) {
    fs::write(path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Quotes `s` for `sh`.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `dpkg` status file's installed packages.
fn installed(root: &Path) -> BTreeMap<String, String> {
    let path = root.join("var/lib/dpkg/status");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for para in text.split("\n\n") {
        let field = |k: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        if field("Status:").is_some_and(|s| s == "install ok installed") {
            if let (Some(p), Some(v)) = (field("Package:"), field("Version:")) {
                out.insert(p, v);
            }
        }
    }
    out
}

/// mmdebstrap's `--include`: the set's own names, plus `usr-is-merged` when the lock has
/// it. `init-system-helpers` depends on `usrmerge | usr-is-merged`; w4b's lock takes
/// `usr-is-merged` (the root is merged from the start), apt the first alternative,
/// `usrmerge`, which pulls in perl (8 more packages, measured 2026-12-07).
fn include(deb: &Debian) -> Vec<String> {
    let mut names = deb.include.clone();
    if deb.debs.iter().any(|d| d.name == "usr-is-merged") && !names.iter().any(|n| n == "usr-is-merged") {
        names.push("usr-is-merged".to_string());
    }
    names
}

/// Runs mmdebstrap, timing its phases from the `I:` lines it prints as it goes.
fn mmdebstrap(deb: &Debian, dir: &Path, scratch: &Path, plain: bool, into: &mut Baseline) {
    let setup = scratch.join("setup.sh");
    let mut body =
        String::from("#!/bin/sh\nset -e\nmkdir -p \"$1/var/cache/apt/archives\" \"$1/etc/default\"\n");
    for d in &deb.debs {
        body.push_str(&format!(
            "cp {} \"$1/var/cache/apt/archives/\"{}\n",
            q(&deb.deb_path(d).display().to_string()),
            q(&d.apt_name())
        ));
    }
    body.push_str(&format!(
        "cat > \"$1/{}\" <<'W4B_EOF'\n{}W4B_EOF\n",
        w4b::install::bootstrap::RASPI_FIRMWARE_DEFAULTS_PATH,
        w4b::install::bootstrap::RASPI_FIRMWARE_DEFAULTS
    ));
    write_script(&setup, &body);
    let customize = scratch.join("customize.sh");
    let mut body = String::from("#!/bin/sh\nset -e\n");
    if !plain {
        body.push_str("env -u INITRD chroot \"$1\" update-initramfs -c -k all\n");
    }
    body.push_str(&format!(
        ": > \"$1/etc/machine-id\"\nrm -f \"$1/var/lib/dbus/machine-id\" \"$1\"/etc/ssh/ssh_host_*\n\
         printf 'LABEL={ROOT_LABEL} / ext4 rw 0 1\\nLABEL={BOOT_LABEL} /boot/firmware vfat rw 0 2\\n' > \"$1/etc/fstab\"\n"
    ));
    write_script(&customize, &body);

    // One sources line per repository URL and suite, with the components of every lock
    // repository on it.
    let mut lines: Vec<(String, String, Vec<&str>)> = Vec::new();
    for (i, r) in deb.repos.iter().enumerate() {
        let comp = COMPONENTS
            .iter()
            .find(|(n, _)| *n == r.name)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| {
                panic!(
                    "the lock's repository `{}` has no components in COMPONENTS",
                    r.name
                )
            });
        let url = deb.host_mirrors[i].clone();
        match lines.iter_mut().find(|(u, s, _)| *u == url && *s == r.suite) {
            Some((_, _, comps)) => comps.push(comp),
            None => lines.push((url, r.suite.clone(), vec![comp])),
        }
    }
    let mut cmd = Command::new("mmdebstrap");
    cmd.args([
        "--variant=essential",
        "--architectures=arm64",
        "--format=directory",
    ])
    .arg(format!("--include={}", include(deb).join(",")))
    .args(["--dpkgopt=force-confold", "--dpkgopt=force-confdef"])
    .arg(format!("--setup-hook={}", setup.display()))
    .arg(format!("--customize-hook={}", customize.display()))
    .args(["bookworm"])
    .arg(dir);
    for (url, suite, comps) in &lines {
        cmd.arg(format!("deb {url} {suite} {}", comps.join(" ")));
    }
    if !plain {
        cmd.env("INITRD", "No");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn mmdebstrap: {e}"));
    let mut log = Vec::new();
    let mut marks: Vec<(Instant, String)> = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if let Some(msg) = line.strip_prefix("I: ") {
                marks.push((Instant::now(), msg.to_string()));
            }
            log.push(line);
        }
    }
    let status = child.wait().unwrap_or_else(|e| panic!("mmdebstrap: {e}"));
    let done = Instant::now();
    let tail = log[log.len().saturating_sub(40)..].join("\n");
    assert!(status.success(), "mmdebstrap failed ({status}):\n{tail}");
    into.mm_total.push(done - start);
    for (k, (at, msg)) in marks.iter().enumerate() {
        let end = marks.get(k + 1).map_or(done, |(t, _)| *t);
        let took = end - *at;
        // Phase names without their arguments (hooks name their script).
        let name: String = msg
            .split(" in shell")
            .next()
            .unwrap_or(msg)
            .trim_end_matches("...")
            .chars()
            .take(60)
            .collect();
        if msg.starts_with("running apt-get update") {
            into.update.push(took);
        }
        if took < Duration::from_millis(500) && !into.mm.contains_key(&name) {
            continue;
        }
        if !into.mm_order.contains(&name) {
            into.mm_order.push(name.clone());
        }
        into.mm.entry(name).or_default().push(took);
    }
    if into.update.len() < into.mm_total.len() {
        into.update.push(Duration::ZERO);
    }
}

/// mmdebstrap, then the standard image tools; everything removed after.
fn baseline(deb: &Debian, scratch: &Path, threads: usize, plain: bool, into: &mut Baseline) {
    let root = scratch.join("mm-root");
    let fw = scratch.join("mm-firmware");
    let boot = scratch.join("mm-boot.img");
    let rootfs = scratch.join("mm-root.img");
    let raw = scratch.join("mm-disk.img");
    let out = scratch.join("mm-disk.img.zst");
    let start = Instant::now();
    mmdebstrap(deb, &root, scratch, plain, into);
    into.installed = installed(&root);

    let t = Instant::now();
    fs::rename(root.join("boot/firmware"), &fw).unwrap_or_else(|e| panic!("move /boot/firmware: {e}"));
    fs::create_dir(root.join("boot/firmware")).unwrap_or_else(|e| panic!("mkdir /boot/firmware: {e}"));
    disk::fat_image(
        &boot,
        &fw,
        BOOT_BYTES,
        &["-n", BOOT_LABEL, "-s", "8", "-h", &BOOT_START.to_string()],
    );
    disk::sync_path(&boot);
    into.fat.push(t.elapsed());

    let t = Instant::now();
    disk::remove(&rootfs);
    disk::run(
        disk::tool("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-b",
                "4096",
                "-L",
                ROOT_LABEL,
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(&root)
            .arg(&rootfs)
            .arg(format!("{}k", ROOT_BYTES / 1024)),
    );
    disk::sync_path(&rootfs);
    into.ext4.push(t.elapsed());

    let t = Instant::now();
    let boot_sectors = BOOT_BYTES / SECTOR;
    let root_start = BOOT_START + boot_sectors;
    let root_sectors = ROOT_BYTES / SECTOR;
    disk::remove(&raw);
    disk::run(
        Command::new("truncate")
            .arg("-s")
            .arg(((root_start + root_sectors) * SECTOR).to_string())
            .arg(&raw),
    );
    disk::mbr(
        &raw,
        "5e1f2a3b",
        &[(BOOT_START, boot_sectors, "c"), (root_start, root_sectors, "83")],
    );
    for (img, at) in [(&boot, BOOT_START), (&rootfs, root_start)] {
        disk::run(
            Command::new("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", raw.display()))
                .args(["bs=1M", "conv=sparse,notrunc", "status=none"])
                .arg(format!("seek={}", at * SECTOR / MIB)),
        );
    }
    disk::sync_path(&raw);
    into.disk.push(t.elapsed());

    let t = Instant::now();
    disk::run(
        Command::new("zstd")
            .args(["-q", "-f", &format!("-{LEVEL}"), &format!("-T{threads}")])
            .arg(&raw)
            .arg("-o")
            .arg(&out),
    );
    disk::sync_path(&out);
    into.compress.push(t.elapsed());
    into.total.push(start.elapsed());
    into.image_bytes = fs::metadata(&out).map_or(0, |m| m.len());

    for p in [&boot, &rootfs, &raw, &out] {
        disk::remove(p);
    }
    for d in [&root, &fw] {
        fs::remove_dir_all(d).unwrap_or_else(|e| panic!("remove {}: {e}", d.display()));
    }
}

fn main() {
    let runs = support::runs(1);
    let plain = support::flag("--plain");
    disk::require(&[
        "mmdebstrap",
        "chroot",
        "mkfs.vfat",
        "mcopy",
        "mkfs.ext4",
        "sfdisk",
        "dd",
        "zstd",
        "cp",
        "du",
    ]);
    assert!(
        disk::is_root(),
        "the bootstrap bench runs as root: mmdebstrap's chroot mode and w4b's install engine need it"
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    support::header(
        "bootstrap: a disk image on a Debian base bootstrapped from packages, cold, warm package cache",
        &format!(
            "w4b: {BASE} + //boards:pi4, zstd -{LEVEL}, an empty cache, the .debs from a local pool\n\
             baseline: mmdebstrap --variant=essential (the same set, the .debs pre-placed{}) +\n    \
             mkfs.vfat/mcopy 512 MiB + mkfs.ext4 -d 2 GiB + sfdisk/dd conv=sparse + zstd -{LEVEL} -T{threads}\n\
             {runs} round(s), alternating which side goes first",
            if plain {
                "; --plain: the initramfs as the packages build it"
            } else {
                "; the initramfs built once, as w4b does"
            }
        ),
    );
    let scratch = tempfile::Builder::new()
        .prefix("w4b-bench-bootstrap-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ws = scratch.path().join("ws");
    let home = scratch.path().join("home");
    fs::create_dir_all(&home).unwrap_or_else(|e| panic!("create {}: {e}", home.display()));
    let deb = debian::prepare(&ws, &home);
    let image = ws.join("defs/images/bench.yaml");
    fs::write(
        &image,
        format!(
            "kind: image\nbase: {BASE}\nboard: //boards:pi4\noutput: {{compression: zstd, level: {LEVEL}}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", image.display()));
    println!(
        "   set: {} .debs locked ({} MiB), {} named: {}",
        deb.debs.len(),
        thousands(deb.deb_bytes() / MIB),
        deb.include.len(),
        deb.include.join(" ")
    );
    println!();

    let rss_file = scratch.path().join("maxrss");
    let w4b = W4b {
        ws: &ws,
        home: &home,
        rss_file: &rss_file,
    };
    let mut ours = Samples::default();
    let mut ours_base = Samples::default();
    let mut ours_image = Samples::default();
    let mut timings: Vec<Vec<StepTime>> = Vec::new();
    let mut rss = Vec::new();
    let mut image_bytes = 0;
    let mut theirs = Baseline::default();
    for round in 0..runs {
        let mut ours_round = || {
            let cache = scratch.path().join("cache");
            if cache.exists() {
                fs::remove_dir_all(&cache).unwrap_or_else(|e| panic!("remove {}: {e}", cache.display()));
            }
            let base = w4b.build(&cache, BASE_ONLY, &[]);
            assert!(
                base.ran("#bootstrap") && base.cached.is_empty(),
                "a cold build ran {:?} and found {:?} cached",
                base.ran,
                base.cached
            );
            // Untimed: the cache as it is now is the kept base cache.
            let kept = deb.base_cache();
            let next = fresh_copy(&cache, &kept.with_extension("new"));
            if kept.exists() {
                fs::remove_dir_all(&kept).unwrap_or_else(|e| panic!("remove {}: {e}", kept.display()));
            }
            fs::rename(&next, &kept).unwrap_or_else(|e| panic!("rename to {}: {e}", kept.display()));
            let img = w4b.build(&cache, "bench", &[]);
            assert!(
                img.cached("#bootstrap") && img.ran("#compress"),
                "the image build ran {:?}",
                img.ran
            );
            ours_base.push(base.took);
            ours_image.push(img.took);
            ours.push(base.took + img.took);
            rss.push(base.max_rss_kib.max(img.max_rss_kib));
            let mut t = base.timings;
            t.extend(img.timings);
            timings.push(t);
            let out = ws.join("out/bench.img.zst");
            image_bytes = fs::metadata(&out).map_or(0, |m| m.len());
            println!(
                "   round {round}: w4b {:.1} s (cache {} MiB)",
                secs(base.took + img.took),
                thousands(du(&cache) / MIB)
            );
            fs::remove_dir_all(&cache).unwrap_or_else(|e| panic!("remove {}: {e}", cache.display()));
            fs::remove_dir_all(ws.join("out")).unwrap_or_else(|e| panic!("remove out: {e}"));
        };
        let theirs_round = |theirs: &mut Baseline| {
            baseline(&deb, scratch.path(), threads, plain, theirs);
            println!(
                "   round {round}: baseline {:.1} s",
                secs(*theirs.total.0.last().unwrap_or(&Duration::ZERO))
            );
        };
        if round % 2 == 0 {
            ours_round();
            theirs_round(&mut theirs);
        } else {
            theirs_round(&mut theirs);
            ours_round();
        }
    }
    println!();

    // The same packages?
    let locked: BTreeMap<&str, &str> = deb
        .debs
        .iter()
        .map(|d| (d.name.as_str(), d.version.as_str()))
        .collect();
    let differ: Vec<String> = theirs
        .installed
        .iter()
        .filter(|(n, v)| locked.get(n.as_str()) != Some(&v.as_str()))
        .map(|(n, v)| format!("{n} {v}"))
        .chain(
            locked
                .iter()
                .filter(|(n, _)| !theirs.installed.contains_key(**n))
                .map(|(n, v)| format!("-{n} {v}")),
        )
        .collect();
    println!(
        "   packages: w4b {} (the lock), mmdebstrap {}; {}",
        locked.len(),
        theirs.installed.len(),
        if differ.is_empty() {
            "the same names and versions".to_string()
        } else {
            format!(
                "differing (mmdebstrap's; `-` only in the lock): {}",
                differ.join(", ")
            )
        }
    );
    println!(
        "   images: w4b {} MiB, baseline {} MiB (zstd -{LEVEL})",
        thousands(image_bytes / MIB),
        thousands(theirs.image_bytes / MIB)
    );
    println!();

    let b = theirs.total.median();
    let mut table = Table::new(&["cold build", "runs", "median s", "min s", "max s", "× baseline"]);
    row(&mut table, "w4b, total (2 processes)", &ours, b);
    row(
        &mut table,
        &format!("  w4b build //images:{BASE_ONLY}"),
        &ours_base,
        b,
    );
    row(&mut table, "  w4b build //images:bench", &ours_image, b);
    row(&mut table, "baseline, total", &theirs.total, b);
    row(&mut table, "  mmdebstrap", &theirs.mm_total, b);
    for name in &theirs.mm_order {
        row(&mut table, &format!("    {name}"), &theirs.mm[name], b);
    }
    row(&mut table, "  mkfs.vfat + mcopy", &theirs.fat, b);
    row(&mut table, "  mkfs.ext4 -d", &theirs.ext4, b);
    row(&mut table, "  sfdisk + dd conv=sparse", &theirs.disk, b);
    row(
        &mut table,
        &format!("  zstd -{LEVEL} -T{threads}"),
        &theirs.compress,
        b,
    );
    table.print();
    step_table("w4b steps, own time", &timings);

    let ratio = secs(ours.median()) / secs(b);
    let without_update = b.saturating_sub(theirs.update.median());
    let ratio_offline = secs(ours.median()) / secs(without_update);
    println!("   peak RSS of w4b: {} MiB", support::build::rss_cell(&rss));
    println!(
        "RESULT bootstrap: cold build with a warm package cache {:.1} s, ratio {ratio:.2}× baseline {:.1} s \
         ({ratio_offline:.2}× without mmdebstrap's apt-get update, {:.1} s){}",
        secs(ours.median()),
        secs(b),
        secs(theirs.update.median()),
        if plain { "; baseline --plain" } else { "" }
    );
}
