//! Whole Raspberry Pi disk images on a realistic base: what `w4b build` costs against
//! what the same job costs done by hand, in the same run.
//!
//! The base is [`support::pibase`]: ~1 GiB of the host's real Debian `/usr` in an MBR
//! disk laid out like Raspberry Pi OS (FAT32 `bootfs` at sector 8192, ext4 `rootfs` ~60 %
//! full), compressed with `zstd -3`, cached under `target/tmp` keyed by its inputs. The
//! image built from it names `//boards:pi4` (copied from the repository), the base by a
//! `file://` URL (so the "download" is a local copy plus its sha256 check: a cached
//! download, without a network), one layer installing `/etc/w4b/bench.conf` from a source
//! file, and `output: {compression: zstd, level: 3}` (level 3 keeps the bench quick; the
//! baselines use the same level and w4b's thread count).
//!
//! (a) **One-file rebuild vs the classic flow.** w4b is warmed by an untimed cold build;
//!     each round then writes new contents to the layer's source file (unique per round,
//!     so every round really rebuilds) and times `w4b build` from spawn to exit, asserting
//!     that the layer and the image steps ran and the base's fetch and unpack did not.
//!     Baseline, same rounds: `cp --sparse=always` of the decompressed base, `mount -o
//!     loop,offset=…` of the root partition, write the file, `umount`, `zstd -3 -T<n>`
//!     (as root; otherwise `debugfs -w` on the image at the partition's offset replaces
//!     the mount, and the bench says so).
//! (b) **Cold build vs the floor.** w4b with an empty cache (only the `file://` base on
//!     disk), the whole build timed. Floor: `zstd -d` of the base to a file, one pass
//!     reading every byte of it and writing a copy (all-zero 1 MiB blocks skipped, so the
//!     copy is as sparse as w4b's), `zstd -3 -T<n>` of the copy.
//! (c) **Peak memory** of every timed w4b process: `/usr/bin/time -f %M` (max RSS from
//!     `wait4`'s rusage) wraps it, reported in MiB next to the image size.
//!
//! (d) **The release level, and the remote.** `//images:bench19` is the same image at
//!     `zstd -19`. Its warm-up builds it, with new contents in the one file, on a copy of
//!     (a)'s warm cache, publishing to an empty remote directory cache (`--remote-cache`, a key from
//!     `w4b keygen`); each round changes the one file and rebuilds on fresh copies of both
//!     caches. Baseline: `zstd -19 -T0` of the same disk, whole (decompressed untimed).
//!     Reported: the ratio, the bytes published to the remote and the local cache growth
//!     per rebuild as a share of the compressed image, and what the framing costs against
//!     the one-frame `zstd -19`.
//! (e) **Peak memory of a large image**: a cold build of `//images:bench4g` (the root
//!     partition given 3 GiB of headroom, so the disk is above 4 GiB).
//!
//! (b) runs first and the cache of its last cold build is (a)'s warm cache (one cold build
//! fewer: the longest thing here), then (d)'s; `--only a` makes its own. Checks outside the timing:
//! the steps that ran (from `--message-format json`, whose per-step times and miss
//! reasons are printed too), the new file read back with `debugfs` from both sides'
//! images, the floor's byte count.
//!
//! **`--base debian`**: the same parts (a)–(d) on the repository's bootstrapped Debian base
//! (`//bases:debian-bookworm-arm64`, [`support::debian`]: a 512 MiB FAT32 and a 2 GiB
//! ext4 root ~60 % full, ~2.5 GiB of disk). Its bootstrap (~13 min on 2 cores) is kept in
//! `target/tmp/bench-debian/base-cache`, which only the first run (or `cargo bench --bench
//! bootstrap`) pays for. There, "cold" means after the base: every (b) round starts from a
//! hard-linked copy of the base cache (the `.deb`s and the bootstrapped root: nothing of a
//! disk), so the base's `layout` and `graft` and the image's own steps all run. The baselines' disk is
//! `//images:bench` as w4b built it after the base (untimed, decompressed): the classic
//! flow copies and edits it, and the floor, with no download to decompress, is the
//! read/write copy and `zstd -3` of it. (e) is not run there.
//!
//! Rounds interleave w4b and its baseline, alternating which goes first. The outputs of
//! both sides are written to the same file system, and both end with the output written
//! by a process that exited (neither side `fsync`s what the other does not: w4b's store
//! `fsync`s its records and blobs, the baselines `fsync` their final `.img.zst`).
//!
//! Run: `cargo bench --bench image_build [-- --runs N] [--only a|b|d|e[,…]] [--base pi|debian] [--no-mount] [--keep]`:
//! default 3 rounds for (a), 2 for (b), 1 for (d) (`--runs N` sets all three); `--no-mount` takes the
//! non-root `debugfs` path as root too. Needs ~2.5 GiB under `target/tmp` for the base
//! (kept between runs) and up to ~10 GiB of scratch in `$TMPDIR` at the peak of (a): the
//! warm cache, one rebuild's additions, a baseline's copy of the disk (sizes printed).

#![allow(clippy::disallowed_methods)] // A bench spawns tools and reads the clock.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::build::{
    du, fresh_copy, growth_by_kind, growth_line, median_f64, mib, row, rss_cell, secs, step_table, Run, W4b,
};
use support::debian::{self, Debian};
use support::disk;
use support::pibase::{self, PiBase, ROOT_START};
use support::{thousands, Samples, Table};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Root-tree file data of the base.
const BASE_BUDGET: u64 = GIB;
/// The image's zstd level, for w4b and the baselines alike.
const LEVEL: u32 = 3;
/// The release level of (d), for w4b and its baseline alike.
const RELEASE_LEVEL: u32 = 19;
/// (e)'s root headroom: with the base's ~1 GiB of files the disk ends above 4 GiB.
const BIG_HEADROOM: &str = "3GiB";
/// The file every (a) round changes, inside the image.
const TARGET: &str = "/etc/w4b/bench.conf";

/// The base disk the baselines start from, whichever base the image is on.
struct BaseDisk {
    /// The raw disk (sparse): what the classic flow copies and the floor reads.
    raw: PathBuf,
    /// The same, compressed, when the floor starts by decompressing it (the Pi OS-like
    /// base is published as `.img.zst`; the Debian base has no disk but w4b's).
    zst: Option<PathBuf>,
    /// The root partition, in sectors.
    root_start: u64,
    root_sectors: u64,
    bytes: u64,
}

/// The base the bench images are on (`--base pi`, the default, or `--base debian`).
enum Base {
    /// The Raspberry Pi OS-like base of [`support::pibase`], by a `file://` URL.
    Pi(PiBase),
    /// The repository's bootstrapped Debian base ([`support::debian`]).
    Debian(Debian),
}

impl Base {
    fn label(&self) -> &'static str {
        match self {
            Base::Pi(_) => "//bases:bench",
            Base::Debian(_) => debian::BASE,
        }
    }

    /// The base's own steps: a one-file rebuild or a build after the base never runs them.
    fn base_steps(&self) -> [&'static str; 2] {
        match self {
            Base::Pi(_) => ["#fetch", "#unpack"],
            Base::Debian(_) => ["#bootstrap", "#layout"],
        }
    }
}

/// The generated workspace and its scratch space.
struct Bench {
    /// Holds everything below; removed on drop unless `--keep`.
    root: tempfile::TempDir,
    ws: PathBuf,
    home: PathBuf,
    /// zstd's worker threads on the baselines' side: w4b's own count
    /// (`available_parallelism`, see `src/compile.rs`).
    threads: usize,
    base: Base,
}

impl Bench {
    /// The workspace on the Pi OS-like base, or (`pi == None`) on the Debian base.
    fn new(pi: Option<PiBase>, threads: usize) -> Bench {
        let root = tempfile::Builder::new()
            .prefix("w4b-bench-image-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ws = root.path().join("ws");
        let home = root.path().join("home");
        fs::create_dir_all(&home).unwrap_or_else(|e| panic!("create {}: {e}", home.display()));
        let write = |rel: &str, body: &str| {
            let p = ws.join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
            }
            fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        };
        let base = match pi {
            Some(base) => {
                write("w4b.yaml", "");
                let board = Path::new(env!("CARGO_MANIFEST_DIR")).join("defs/boards/pi4.yaml");
                write(
                    "defs/boards/pi4.yaml",
                    &fs::read_to_string(&board).unwrap_or_else(|e| panic!("read {}: {e}", board.display())),
                );
                write(
                    "defs/bases/bench.yaml",
                    &format!(
                        "kind: base\nurl: file://{}\nsha256: {}\narch: arm64\nrelease: bookworm\ndate: 2024-11-19\n",
                        base.zst.display(),
                        base.zst_sha256
                    ),
                );
                Base::Pi(base)
            }
            None => Base::Debian(debian::prepare(&ws, &home)),
        };
        let label = base.label();
        write(
            "defs/layers/bench.yaml",
            &format!(
                "kind: layer\nfiles:\n  - {{path: {TARGET}, source: files/bench.conf, mode: \"0644\"}}\n"
            ),
        );
        write("defs/layers/files/bench.conf", "round=warm-up\n");
        write(
            "defs/images/bench.yaml",
            &format!(
                "kind: image\nboard: //boards:pi4\nbase: {label}\nlayers: [//layers:bench]\n\
                 output: {{compression: zstd, level: {LEVEL}}}\n"
            ),
        );
        // (d): the same image at the release level.
        write(
            "defs/images/bench19.yaml",
            &format!(
                "kind: image\nboard: //boards:pi4\nbase: {label}\nlayers: [//layers:bench]\n\
                 output: {{compression: zstd, level: {RELEASE_LEVEL}}}\n"
            ),
        );
        // (e): the root partition grown until the disk is at least 4 GiB.
        write(
            "defs/images/bench4g.yaml",
            &format!(
                "kind: image\nboard: //boards:pi4\nbase: {label}\nlayers: [//layers:bench]\n\
                 partitions: {{root: {{headroom: {}}}}}\n\
                 output: {{compression: zstd, level: {LEVEL}}}\n",
                BIG_HEADROOM
            ),
        );
        Bench {
            root,
            ws,
            home,
            threads,
            base,
        }
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn out(&self) -> PathBuf {
        self.ws.join("out")
    }

    fn image(&self) -> PathBuf {
        self.image_of("bench")
    }

    fn image_of(&self, name: &str) -> PathBuf {
        self.out().join(format!("{name}.img.zst"))
    }

    /// `w4b build //images:bench` with `cache` as its cache directory, in the pinned
    /// environment of the other benches, under `/usr/bin/time -f %M`.
    fn build(&self, cache: &Path) -> Run {
        self.build_with(cache, "bench", &[])
    }

    /// `w4b build //images:<name> <extra…>`, as [`Bench::build`]; the image must exist after.
    fn build_with(&self, cache: &Path, name: &str, extra: &[&std::ffi::OsStr]) -> Run {
        let rss = self.scratch("maxrss");
        let w4b = W4b {
            ws: &self.ws,
            home: &self.home,
            rss_file: &rss,
        };
        let run = w4b.build(cache, name, extra);
        let image = self.image_of(name);
        assert!(image.exists(), "w4b wrote no {}", image.display());
        run
    }

    /// A cache for a cold build at `dst`: empty on the Pi OS-like base (its download is a
    /// local file); a copy of the kept base cache on the Debian base (the bootstrapped base
    /// cached, nothing of a disk), made sure of first.
    fn cold_cache(&self, dst: &Path) -> PathBuf {
        match &self.base {
            Base::Pi(_) => {
                if dst.exists() {
                    fs::remove_dir_all(dst).unwrap_or_else(|e| panic!("remove {}: {e}", dst.display()));
                }
                dst.to_path_buf()
            }
            Base::Debian(deb) => fresh_copy(&deb.base_cache(), dst),
        }
    }
}

/// Times of the classic flow's parts, and the total.
#[derive(Default)]
struct Classic {
    /// Size of the last round's `.img.zst`.
    image_bytes: u64,
    copy: Samples,
    edit: Samples,
    compress: Samples,
    total: Samples,
}

/// `cp --sparse=always` base → work, loop-mount its root partition, write the file,
/// `umount`, `zstd -3 -T<n>`, `fsync` the result. Without root, `debugfs -w` on
/// `work.img?offset=…` does the edit.
fn classic(bench: &Bench, base: &BaseDisk, contents: &str, mount: bool, into: &mut Classic) {
    let work = bench.scratch("classic.img");
    let out = bench.scratch("classic.img.zst");
    let mnt = bench.scratch("classic.mnt");
    let src = bench.scratch("classic.conf");
    disk::remove(&work);
    disk::remove(&out);
    fs::create_dir_all(&mnt).unwrap_or_else(|e| panic!("create {}: {e}", mnt.display()));
    fs::write(&src, contents).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
    let offset = base.root_start * 512;
    let limit = base.root_sectors * 512;

    let start = Instant::now();
    disk::run(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&base.raw)
            .arg(&work),
    );
    let copied = Instant::now();
    if mount {
        disk::run(
            Command::new("mount")
                .args(["-t", "ext4", "-o"])
                .arg(format!("loop,offset={offset},sizelimit={limit}"))
                .arg(&work)
                .arg(&mnt),
        );
        let dest = mnt.join(TARGET.trim_start_matches('/'));
        let wrote = fs::write(&dest, contents);
        disk::run(Command::new("umount").arg(&mnt));
        wrote.unwrap_or_else(|e| panic!("write {}: {e}", dest.display()));
    } else {
        // `rm` fails harmlessly when the file is not there yet; debugfs goes on. (debugfs
        // exits 0 whatever its requests do, hence the check below.)
        let (dir, name) = TARGET.rsplit_once('/').unwrap_or(("/", TARGET));
        let cmds = bench.scratch("classic.debugfs");
        fs::write(
            &cmds,
            format!("cd {dir}\nrm {name}\nwrite {} {name}\n", src.display()),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", cmds.display()));
        disk::run(
            Command::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&cmds)
                .arg(format!("{}?offset={offset}", work.display())),
        );
    }
    let edited = Instant::now();
    disk::run(
        Command::new("zstd")
            .args(["-q", "-f", &format!("-{LEVEL}"), &format!("-T{}", bench.threads)])
            .arg(&work)
            .arg("-o")
            .arg(&out),
    );
    disk::sync_path(&out);
    let done = Instant::now();
    // Outside the timing: the file really is in the image the flow compressed.
    let cat = disk::run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {TARGET}"))
            .arg(format!("{}?offset={offset}", work.display())),
    );
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout),
        contents,
        "the classic flow did not write {TARGET}"
    );
    into.image_bytes = fs::metadata(&out).map_or(0, |m| m.len());
    // Two gigabytes of scratch per round; the machine's disk is shared.
    disk::remove(&work);
    disk::remove(&out);
    into.copy.push(copied - start);
    into.edit.push(edited - copied);
    into.compress.push(done - edited);
    into.total.push(done - start);
}

/// Times of the floor's parts, and the total.
#[derive(Default)]
struct Floor {
    decompress: Samples,
    copy: Samples,
    compress: Samples,
    total: Samples,
}

/// `zstd -d` the base to a file (when it is compressed), read it all while writing a
/// sparse copy, `zstd -3 -T<n>` the copy, `fsync` the result.
fn floor(bench: &Bench, base: &BaseDisk, into: &mut Floor) -> u64 {
    let decompressed_to = bench.scratch("floor.img");
    let copy = bench.scratch("floor-copy.img");
    let out = bench.scratch("floor.img.zst");
    for p in [&decompressed_to, &copy, &out] {
        disk::remove(p);
    }
    let start = Instant::now();
    let raw = match &base.zst {
        Some(zst) => {
            disk::run(
                Command::new("zstd")
                    .args(["-q", "-d", "-f"])
                    .arg(zst)
                    .arg("-o")
                    .arg(&decompressed_to),
            );
            decompressed_to.clone()
        }
        None => base.raw.clone(),
    };
    let decompressed = Instant::now();
    let bytes = copy_all(&raw, &copy);
    let copied = Instant::now();
    disk::run(
        Command::new("zstd")
            .args(["-q", "-f", &format!("-{LEVEL}"), &format!("-T{}", bench.threads)])
            .arg(&copy)
            .arg("-o")
            .arg(&out),
    );
    disk::sync_path(&out);
    let done = Instant::now();
    into.decompress.push(decompressed - start);
    into.copy.push(copied - decompressed);
    into.compress.push(done - copied);
    into.total.push(done - start);
    for p in [&decompressed_to, &copy, &out] {
        disk::remove(p);
    }
    bytes
}

/// Reads every byte of `src` once and writes a copy at `dst`, seeking over all-zero
/// 1 MiB blocks. Returns the bytes read.
fn copy_all(src: &Path, dst: &Path) -> u64 {
    use std::io::{Seek, SeekFrom, Write};
    let mut r = fs::File::open(src).unwrap_or_else(|e| panic!("open {}: {e}", src.display()));
    let mut w = fs::File::create(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0u64;
    loop {
        let n = w4b::formats::io::read_full(&mut r, &mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            w.seek(SeekFrom::Start(at))
                .and_then(|_| w.write_all(&buf[..n]))
                .unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
        }
        at += n as u64;
    }
    w.set_len(at)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", dst.display()));
    at
}

/// `zstd -d` of `image` into the scratch file `name`, returned.
fn decompress(bench: &Bench, image: &Path, name: &str) -> PathBuf {
    let raw = bench.scratch(name);
    disk::run(
        Command::new("zstd")
            .args(["-q", "-d", "-f"])
            .arg(image)
            .arg("-o")
            .arg(&raw),
    );
    raw
}

/// The second partition (the root) of a raw disk: start and size in sectors, by `sfdisk`.
fn root_partition(raw: &Path) -> (u64, u64) {
    let table = disk::run(Command::new("sfdisk").arg("--json").arg(raw));
    let table: serde_json::Value = serde_json::from_slice(&table.stdout)
        .unwrap_or_else(|e| panic!("sfdisk --json {}: {e}", raw.display()));
    let root = &table["partitiontable"]["partitions"][1];
    match (root["start"].as_u64(), root["size"].as_u64()) {
        (Some(start), Some(size)) => (start, size),
        _ => panic!("no second partition in {}", raw.display()),
    }
}

/// [`TARGET`] as found in the root partition (the second) of a compressed disk image.
fn read_back(bench: &Bench, image: &Path) -> String {
    let raw = decompress(bench, image, "readback.img");
    let (start, _) = root_partition(&raw);
    let cat = disk::run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {TARGET}"))
            .arg(format!("{}?offset={}", raw.display(), start * 512)),
    );
    disk::remove(&raw);
    String::from_utf8_lossy(&cat.stdout).into_owned()
}

/// The disk the baselines start from, and on the Debian base the cache that made it.
///
/// The Pi OS-like base is a disk already. The Debian base has no disk but the ones w4b
/// writes, so the baselines' disk is `//images:bench` itself, built cold after the base
/// (untimed: the page cache then holds the base's files for both sides) and decompressed;
/// the kept base cache is made first (the whole bootstrap, the first time).
fn base_disk(bench: &Bench) -> (BaseDisk, Option<PathBuf>) {
    let deb = match &bench.base {
        Base::Pi(base) => {
            let disk = BaseDisk {
                raw: base.raw.clone(),
                zst: Some(base.zst.clone()),
                root_start: ROOT_START,
                root_sectors: base.root_sectors,
                bytes: base.disk_bytes(),
            };
            return (disk, None);
        }
        Base::Debian(deb) => deb,
    };
    let rss = bench.scratch("maxrss");
    let w4b = W4b {
        ws: &bench.ws,
        home: &bench.home,
        rss_file: &rss,
    };
    let made = debian::ensure_base_cache(deb, &w4b);
    println!(
        "   base: {} .debs ({} MiB) bootstrapped, {} in {:.1} s: {} ({} MiB)",
        deb.debs.len(),
        thousands(deb.deb_bytes() / MIB),
        if made.ran("#bootstrap") { "built" } else { "cached" },
        secs(made.took),
        deb.base_cache().display(),
        thousands(du(&deb.base_cache()) / MIB)
    );
    let cache = bench.cold_cache(&bench.scratch("cache-prep"));
    let prep = bench.build(&cache);
    let raw = decompress(bench, &bench.image(), "debian-base.img");
    let (root_start, root_sectors) = root_partition(&raw);
    let bytes = fs::metadata(&raw).map_or(0, |m| m.len());
    println!(
        "   the baselines' disk: //images:bench built after the base ({:.1} s, untimed): {} MiB, \
         {} MiB of it allocated, root partition {} MiB",
        secs(prep.took),
        thousands(bytes / MIB),
        thousands(disk::allocated(&raw) / MIB),
        thousands(root_sectors * 512 / MIB)
    );
    let disk = BaseDisk {
        raw,
        zst: None,
        root_start,
        root_sectors,
        bytes,
    };
    (disk, Some(cache))
}

/// The decompressed size of a `.zst`, from its frame headers (`zstd -l`'s "Decompressed").
fn raw_size(bench: &Bench, image: &Path) -> u64 {
    let raw = decompress(bench, image, "size.img");
    let n = fs::metadata(&raw).map_or(0, |m| m.len());
    disk::remove(&raw);
    n
}

/// (d): the image at the release level, with a remote directory cache. The warm-up builds
/// `//images:bench19` with new contents in the one file on a copy of `warm`, publishing
/// every step from the layer on (and the trees their records name) to an empty remote; each round changes
/// the one file, rebuilds on fresh copies of both caches, and is timed against a full
/// `zstd -19 -T0` of the disk w4b built (decompressed outside the timing).
fn release_level(bench: &Bench, warm: &Path, runs: usize) -> String {
    let key_base = bench.scratch("remote-key");
    let out = disk::run(
        Command::new(env!("CARGO_BIN_EXE_w4b"))
            .arg("keygen")
            .arg("--out")
            .arg(&key_base)
            .env("HOME", &bench.home),
    );
    assert!(out.status.success(), "w4b keygen failed");
    let key = key_base.with_extension("key");
    let remote = bench.scratch("remote-warm");
    fs::create_dir_all(&remote).unwrap_or_else(|e| panic!("create {}: {e}", remote.display()));
    let args = |remote: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "--remote-cache".into(),
            remote.as_os_str().to_owned(),
            "--remote-sign-key".into(),
            key.as_os_str().to_owned(),
        ]
    };
    let local = fresh_copy(warm, &bench.scratch("cache-d-warm"));
    // New contents for the warm-up, so every step from the layer on runs and publishes
    // (with the trees its record names): the remote is then as warm as the local cache,
    // and a round publishes only what the change made.
    let src = bench.ws.join("defs/layers/files/bench.conf");
    fs::write(&src, "round=d-warm-up\n").unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
    let a = args(&remote);
    let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
    let first = bench.build_with(&local, "bench19", &refs);
    let remote_bytes = du(&remote);
    println!(
        "   (d) warm-up at zstd -{RELEASE_LEVEL}: {:.1} s ({} steps ran); remote holds {} MiB",
        secs(first.took),
        first.ran.len(),
        thousands(remote_bytes / MIB)
    );
    let local_bytes = du(&local);
    let mut ours = Samples::default();
    let mut theirs = Samples::default();
    let (mut published, mut grown, mut image_bytes, mut full_bytes) = (Vec::new(), Vec::new(), 0u64, 0u64);
    let mut timings = Vec::new();
    for round in 0..runs {
        let contents = format!("round=d{round}\nthe one file the (d) rounds change\n");
        fs::write(&src, &contents).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
        let cache = fresh_copy(&local, &bench.scratch("cache-d-round"));
        let rem = fresh_copy(&remote, &bench.scratch("remote-round"));
        let a = args(&rem);
        let refs: Vec<&std::ffi::OsStr> = a.iter().map(|s| s.as_os_str()).collect();
        let run = bench.build_with(&cache, "bench19", &refs);
        assert!(
            run.ran("#compress") && !run.ran("#unpack"),
            "(d) round {round}: {:?}",
            run.ran
        );
        ours.push(run.took);
        timings.push(run.timings.clone());
        for n in &run.notes {
            println!("   (d) round {round}: {n}");
        }
        let image = bench.image_of("bench19");
        image_bytes = fs::metadata(&image).map_or(1, |m| m.len().max(1));
        published.push(du(&rem).saturating_sub(remote_bytes));
        grown.push(du(&cache).saturating_sub(local_bytes));
        println!(
            "   (d) round {round}: local growth by kind: {}",
            growth_line(&growth_by_kind(&cache))
        );
        fs::remove_dir_all(&cache).unwrap_or_else(|e| panic!("remove {}: {e}", cache.display()));
        fs::remove_dir_all(&rem).unwrap_or_else(|e| panic!("remove {}: {e}", rem.display()));
        // The baseline: the same disk, compressed whole.
        let raw = decompress(bench, &image, "d-disk.img");
        let full = bench.scratch("d-full.img.zst");
        let start = Instant::now();
        disk::run(
            Command::new("zstd")
                .args(["-q", "-f", &format!("-{RELEASE_LEVEL}"), "-T0"])
                .arg(&raw)
                .arg("-o")
                .arg(&full),
        );
        disk::sync_path(&full);
        theirs.push(start.elapsed());
        full_bytes = fs::metadata(&full).map_or(0, |m| m.len());
        disk::remove(&full);
        disk::remove(&raw);
    }
    fs::remove_dir_all(&local).unwrap_or_else(|e| panic!("remove {}: {e}", local.display()));
    fs::remove_dir_all(&remote).unwrap_or_else(|e| panic!("remove {}: {e}", remote.display()));
    let b = theirs.median();
    let mut table = Table::new(&[
        "(d) one-file rebuild, release level",
        "runs",
        "median s",
        "min s",
        "max s",
        "× full",
    ]);
    row(&mut table, &format!("w4b build, zstd -{RELEASE_LEVEL}"), &ours, b);
    row(
        &mut table,
        &format!("zstd -{RELEASE_LEVEL} -T0, whole disk"),
        &theirs,
        b,
    );
    table.print();
    step_table("(d) w4b steps, own time", &timings);
    let pct = |v: &[u64]| {
        let f: Vec<f64> = v.iter().map(|&x| x as f64 / image_bytes as f64).collect();
        100.0 * median_f64(&f)
    };
    println!(
        "   (d) image {} MiB (one zstd -{RELEASE_LEVEL} frame: {} MiB, framing costs {:.2} %); published to the remote per rebuild: {} MiB = {:.2} % of the image; local cache growth {} MiB = {:.2} %",
        thousands(image_bytes / MIB),
        thousands(full_bytes / MIB),
        100.0 * (image_bytes as f64 / full_bytes.max(1) as f64 - 1.0),
        thousands(published.iter().copied().max().unwrap_or(0) / MIB),
        pct(&published),
        thousands(grown.iter().copied().max().unwrap_or(0) / MIB),
        pct(&grown)
    );
    println!();
    format!(
        "zstd -{RELEASE_LEVEL} one-file rebuild {:.2} s (ratio {:.3}× zstd -{RELEASE_LEVEL} -T0 {:.2} s; published {:.2} %, growth {:.2} % of the image)",
        secs(ours.median()),
        secs(ours.median()) / secs(b),
        secs(b),
        pct(&published),
        pct(&grown)
    )
}

fn main() {
    let only = support::arg("--only");
    let wants = |part: &str| only.as_deref().is_none_or(|o| o.split(',').any(|p| p == part));
    let on_debian = match support::arg("--base").as_deref() {
        None | Some("pi") => false,
        Some("debian") => true,
        Some(other) => panic!("--base takes `pi` or `debian`, got `{other}`"),
    };
    let (do_a, do_b, do_d) = (wants("a"), wants("b"), wants("d"));
    // (e) is the synthetic base's: the Debian base's root partition is sized by its layout.
    let do_e = wants("e") && !on_debian;
    let explicit = std::env::args().any(|a| a == "--runs");
    let (runs_a, runs_b, runs_d) = if explicit {
        (support::runs(3), support::runs(2), support::runs(1))
    } else {
        (3, 2, 1)
    };
    // `--no-mount`: the non-root path (debugfs instead of a loop mount), as root too.
    let root = disk::is_root() && !support::flag("--no-mount");
    disk::require(&["zstd", "cp", "debugfs", "mount", "umount"]);
    assert!(
        Path::new("/usr/bin/time").exists(),
        "/usr/bin/time (GNU time) measures the peak memory; install `time`"
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    support::header(
        "image_build: w4b disk images on a realistic base vs the classic flow and the floor",
        &format!(
            "image: //boards:pi4, {}, one layer with one source file, zstd -{LEVEL}\n\
             (a) one-file rebuild, warm cache, {runs_a} rounds: vs cp --sparse + {} + zstd -{LEVEL} -T{threads}\n\
             (b) cold build, {} cache, {runs_b} rounds: vs {}read/write copy + zstd -{LEVEL} -T{threads}\n\
             (c) peak RSS of every timed w4b process (/usr/bin/time -f %M)\n\
             (d) one-file rebuild at zstd -{RELEASE_LEVEL}, warm cache and a remote directory cache, {runs_d} rounds:\n    \
             vs zstd -{RELEASE_LEVEL} -T0 of the same disk; bytes published to the remote and cache growth vs the image\n\
             (e) peak RSS of a cold build of a >= 4 GiB image (root headroom {BIG_HEADROOM})\n\
             rounds interleave w4b and its baseline, alternating which goes first",
            if on_debian {
                "the bootstrapped //bases:debian-bookworm-arm64 (the .debs from a local pool)"
            } else {
                "a file:// base (cached download)"
            },
            if root {
                "mount -o loop,offset + write + umount"
            } else {
                "debugfs -w write (no loop mount: not root, or --no-mount)"
            },
            if on_debian {
                "the base's (bootstrap and layout cached)"
            } else {
                "an empty"
            },
            if on_debian { "" } else { "zstd -d + " },
        ),
    );

    let bench = if on_debian {
        Bench::new(None, threads)
    } else {
        let cache_root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let (t_base, base) = support::time(|| pibase::realistic(&cache_root, BASE_BUDGET));
        println!(
            "   base: {}\n   {} in {:.1} s: {}",
            base.describe(),
            if base.built { "built" } else { "cached" },
            secs(t_base),
            base.dir.display()
        );
        Bench::new(Some(base), threads)
    };
    println!("   workspace: {}", bench.ws.display());
    // (b) first: the cache of its last cold build is (a)'s warm cache, which saves one
    // cold build (the longest thing here). On the Debian base, the build that makes the
    // baselines' disk is the first such cache.
    let (base, mut warm_cache) = base_disk(&bench);
    println!();

    let mut results = Vec::new();
    let image_mib = base.bytes as f64 / MIB as f64;
    if do_b {
        let mut w4b = Samples::default();
        let mut rss = Vec::new();
        let mut timings = Vec::new();
        let mut floor_t = Floor::default();
        let mut raw_bytes = 0;
        // One untimed warm-up of the floor puts the base in the page cache for both sides.
        floor(&bench, &base, &mut Floor::default());
        for round in 0..runs_b {
            // Only the last round's cache is kept (for (a)); a cold build's cache is
            // several GiB.
            if let Some(old) = warm_cache.take() {
                fs::remove_dir_all(&old).unwrap_or_else(|e| panic!("remove {}: {e}", old.display()));
            }
            let cache = bench.cold_cache(&bench.scratch(&format!("cache-b{round}")));
            let ours = |w4b: &mut Samples, rss: &mut Vec<u64>, timings: &mut Vec<_>| {
                let out = bench.out();
                if out.exists() {
                    fs::remove_dir_all(&out).unwrap_or_else(|e| panic!("remove {}: {e}", out.display()));
                }
                let run = bench.build(&cache);
                let [own_a, own_b] = bench.base.base_steps();
                let cold = match bench.base {
                    Base::Pi(_) => run.ran(own_a) && run.ran(own_b) && run.cached.is_empty(),
                    // Only the base's steps, its `.deb`s and the board (which the base-only
                    // build shares) cached: the bootstrap always, its `layout` and `graft`
                    // not (the base-only build is a tar, which needs neither), so they
                    // count in w4b's cold time.
                    Base::Debian(_) => {
                        let _ = own_b;
                        run.cached(own_a)
                            && run.cached.iter().all(|s| {
                                s.starts_with("//bases:")
                                    || s.starts_with("//packages#")
                                    || s.ends_with("#board")
                            })
                    }
                };
                assert!(
                    cold && run.ran("#compress"),
                    "not a cold build: ran {:?}, cached {:?}",
                    run.ran,
                    run.cached
                );
                w4b.push(run.took);
                rss.push(run.max_rss_kib);
                timings.push(run.timings);
            };
            if round % 2 == 0 {
                ours(&mut w4b, &mut rss, &mut timings);
                raw_bytes = floor(&bench, &base, &mut floor_t);
            } else {
                raw_bytes = floor(&bench, &base, &mut floor_t);
                ours(&mut w4b, &mut rss, &mut timings);
            }
            warm_cache = Some(cache);
        }
        assert_eq!(raw_bytes, base.bytes, "the floor read the whole disk");
        let b = floor_t.total.median();
        let mut table = Table::new(&["(b) cold build", "runs", "median s", "min s", "max s", "× floor"]);
        row(&mut table, "w4b build, cold", &w4b, b);
        row(&mut table, "floor, total", &floor_t.total, b);
        if base.zst.is_some() {
            row(&mut table, "  zstd -d", &floor_t.decompress, b);
        }
        row(&mut table, "  read + write copy", &floor_t.copy, b);
        row(
            &mut table,
            &format!("  zstd -{LEVEL} -T{threads} + fsync"),
            &floor_t.compress,
            b,
        );
        table.print();
        step_table("(b) w4b steps, own time", &timings);
        let cache_bytes = warm_cache.as_deref().map_or(0, du);
        println!(
            "   (c) peak RSS of w4b, cold builds: {} MiB; image {image_mib:.0} MiB raw; cache after one cold build: {} MiB",
            rss_cell(&rss),
            thousands(cache_bytes / MIB)
        );
        println!();
        let ratio = secs(w4b.median()) / secs(b);
        results.push(format!(
            "cold build {:.2} s (ratio {ratio:.2}× floor {:.2} s, peak RSS {} MiB)",
            secs(w4b.median()),
            secs(b),
            rss_cell(&rss)
        ));
        if !do_a && !do_d {
            if let Some(c) = warm_cache.take() {
                fs::remove_dir_all(&c).unwrap_or_else(|e| panic!("remove {}: {e}", c.display()));
            }
        }
    }

    if do_a {
        let warm = match warm_cache.take() {
            Some(c) => c,
            None => {
                let c = bench.cold_cache(&bench.scratch("cache-warm"));
                let cold = bench.build(&c);
                println!(
                    "   (a) warm-up: cold build {:.1} s ({} steps, peak RSS {:.0} MiB)",
                    secs(cold.took),
                    cold.steps,
                    mib(cold.max_rss_kib),
                );
                c
            }
        };
        let noop = bench.build(&warm);
        assert!(
            noop.ran.is_empty(),
            "a build with nothing changed ran {:?}",
            noop.ran
        );
        println!(
            "   (a) warm cache: no-op build {:.2} s, {} steps cached",
            secs(noop.took),
            noop.cached.len()
        );

        let mut w4b = Samples::default();
        let mut rss = Vec::new();
        let mut timings = Vec::new();
        let mut classic_t = Classic::default();
        let mut last_image: Option<Vec<u8>> = None;
        let src = bench.ws.join("defs/layers/files/bench.conf");
        let warm_bytes = du(&warm);
        let round_bytes = std::cell::Cell::new(0);
        let growth = std::cell::RefCell::new(Vec::new());
        for round in 0..runs_a {
            let contents = format!("round={round}\nthe one file the (a) rounds change\n");
            let ours = |w4b: &mut Samples, rss: &mut Vec<u64>, timings: &mut Vec<_>| {
                fs::write(&src, &contents).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
                let cache = fresh_copy(&warm, &bench.scratch("cache-round"));
                let run = bench.build(&cache);
                // What this round added (GiB) goes; the warm cache stays as it was.
                round_bytes.set(du(&cache));
                let kinds = growth_line(&growth_by_kind(&cache));
                fs::remove_dir_all(&cache).unwrap_or_else(|e| panic!("remove {}: {e}", cache.display()));
                for must in ["#bench", "#compress"] {
                    assert!(run.ran(must), "round {round}: no step {must} ran: {:?}", run.ran);
                }
                for mustnt in bench.base.base_steps() {
                    assert!(
                        !run.ran(mustnt),
                        "round {round}: {mustnt} ran again: {:?}",
                        run.ran
                    );
                }
                for n in &run.notes {
                    println!("   (a) round {round}: {n}");
                }
                let grew = round_bytes.get().saturating_sub(warm_bytes);
                let image = fs::metadata(bench.image()).map_or(1, |m| m.len().max(1));
                growth.borrow_mut().push(grew as f64 / image as f64);
                println!(
                    "   (a) round {round}: cache grew {} MiB = {:.1} % of the {} MiB image",
                    thousands(grew / MIB),
                    100.0 * grew as f64 / image as f64,
                    thousands(image / MIB)
                );
                println!("   (a) round {round}: growth by kind: {kinds}");
                w4b.push(run.took);
                rss.push(run.max_rss_kib);
                timings.push(run.timings);
            };
            if round % 2 == 0 {
                ours(&mut w4b, &mut rss, &mut timings);
                classic(&bench, &base, &contents, root, &mut classic_t);
            } else {
                classic(&bench, &base, &contents, root, &mut classic_t);
                ours(&mut w4b, &mut rss, &mut timings);
            }
            let image = fs::read(bench.image()).unwrap_or_else(|e| panic!("read image: {e}"));
            assert!(
                last_image.as_ref() != Some(&image),
                "round {round}: the image did not change"
            );
            last_image = Some(image);
        }
        // Outside the timing: the last round's contents are in w4b's image.
        let last = format!("round={}\nthe one file the (a) rounds change\n", runs_a - 1);
        assert_eq!(
            read_back(&bench, &bench.image()),
            last,
            "w4b's image lacks the change"
        );
        println!(
            "   (a) w4b image {} MiB, classic image {} MiB (zstd -{LEVEL}); both checked to hold the new {TARGET}",
            thousands(last_image.as_ref().map_or(0, |i| i.len() as u64) / MIB),
            thousands(
classic_t.image_bytes / MIB
            )
        );
        println!();
        let b = classic_t.total.median();
        let mut table = Table::new(&[
            "(a) one-file rebuild",
            "runs",
            "median s",
            "min s",
            "max s",
            "× classic",
        ]);
        row(&mut table, "w4b build (spawn to exit)", &w4b, b);
        row(&mut table, "classic flow, total", &classic_t.total, b);
        row(&mut table, "  cp --sparse=always", &classic_t.copy, b);
        let edit = if root {
            "  mount, write, umount"
        } else {
            "  debugfs -w write"
        };
        row(&mut table, edit, &classic_t.edit, b);
        row(
            &mut table,
            &format!("  zstd -{LEVEL} -T{threads} + fsync"),
            &classic_t.compress,
            b,
        );
        table.print();
        step_table("(a) w4b steps, own time", &timings);
        println!(
            "   (c) peak RSS of w4b, one-file rebuilds: {} MiB; image {image_mib:.0} MiB raw; cache {} MiB warm, {} MiB after a rebuild",
            rss_cell(&rss),
            thousands(warm_bytes / MIB),
            thousands(round_bytes.get() / MIB)
        );
        println!();
        let ratio = secs(w4b.median()) / secs(b);
        results.push(format!(
            "one-file rebuild {:.2} s (ratio {ratio:.2}× classic flow {:.2} s, peak RSS {} MiB, cache growth {:.1} % of the image)",
            secs(w4b.median()),
            secs(b),
            rss_cell(&rss),
            100.0 * median_f64(&growth.borrow())
        ));
        if do_d {
            warm_cache = Some(warm);
        } else {
            fs::remove_dir_all(&warm).unwrap_or_else(|e| panic!("remove {}: {e}", warm.display()));
        }
    }

    if do_d {
        let warm = warm_cache.take().unwrap_or_else(|| {
            let c = bench.cold_cache(&bench.scratch("cache-warm"));
            let cold = bench.build(&c);
            println!(
                "   (d) warm-up: cold build {:.1} s ({} steps)",
                secs(cold.took),
                cold.steps
            );
            c
        });
        results.push(release_level(&bench, &warm, runs_d));
        fs::remove_dir_all(&warm).unwrap_or_else(|e| panic!("remove {}: {e}", warm.display()));
    }

    if do_e {
        let cache = bench.scratch("cache-e");
        let run = bench.build_with(&cache, "bench4g", &[]);
        let image = bench.image_of("bench4g");
        let raw = raw_size(&bench, &image);
        assert!(raw >= 4 * GIB, "(e) built a {raw}-byte disk, not >= 4 GiB");
        println!(
            "   (e) cold build of a {} MiB disk ({} MiB as zstd -{LEVEL}): {:.1} s, peak RSS {:.0} MiB",
            thousands(raw / MIB),
            thousands(fs::metadata(&image).map_or(0, |m| m.len()) / MIB),
            secs(run.took),
            mib(run.max_rss_kib)
        );
        step_table("(e) w4b steps, own time", std::slice::from_ref(&run.timings));
        println!();
        results.push(format!(
            "peak RSS {:.0} MiB building a {:.1} GiB image",
            mib(run.max_rss_kib),
            raw as f64 / GIB as f64
        ));
        fs::remove_dir_all(&cache).unwrap_or_else(|e| panic!("remove {}: {e}", cache.display()));
        disk::remove(&image);
    }

    if support::flag("--keep") {
        println!("   kept: {}", bench.root.keep().display());
    }
    println!(
        "RESULT image_build ({:.0} MiB image): {}",
        image_mib,
        results.join("; ")
    );
}
