//! A realistic Raspberry Pi OS-like base image for the image-pipeline bench: about 1 GiB
//! of real files in tens of thousands of entries, laid out as Raspberry Pi OS is, built
//! with the standard tools and cached under Cargo's target directory keyed by its inputs.
//!
//! The machine has no internet, so Raspberry Pi OS itself cannot be used; the closest real
//! thing is the host's own Debian `/usr`: a deterministic, sorted selection of
//! `/usr/bin`, `/usr/sbin`, `/usr/share` and `/usr/lib` (in that order, each walked in
//! byte order) up to a byte budget, copied with `tar` (modes, owners, mtimes, symlinks and
//! hard links kept). It is an x86-64 tree in an image declared `arm64`; nothing in w4b
//! reads the binaries' architecture, and the sizes, counts and compressibility are those
//! of a real distribution, which is what the bench needs. Around it sit the files a
//! Raspberry Pi OS root carries for w4b's checks (`/etc/fstab` by PARTUUID, users,
//! `/boot/firmware` as the boot mount point, merged-`/usr` symlinks).
//!
//! Layout, as Raspberry Pi OS bookworm: an MBR with disk signature `0x1a2b3c4d`, p1 FAT32
//! `bootfs` (type `0x0c`) at sector 8192, 256 MiB, holding the ~60 MiB boot tree of
//! [`super::disk::HostTree::bootfs`] plus the real names of the Pi 4/5/3 device trees
//! (`w4b validate` checks `kernel8.img` and `bcm2711-rpi-4-b.dtb` for the pi4); p2 ext4
//! `rootfs` (type `0x83`) right after it, sized so the file data fills ~60 % of it. The
//! image is compressed with `zstd -T0 -3`.
//!
//! The cache key is BLAKE3 over a version string, the budget, and every selected entry's
//! path, mode, size, mtime and link target: a package upgrade on the host changes the
//! key and the base is rebuilt (70–140 s on the 2-core machine); otherwise reruns reuse
//! it. Older bases are removed when a new one is made, so `target/` holds one.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};
use w4b::formats::io::read_full;

use super::disk::{self, HostTree};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// The MBR disk signature; `cmdline.txt` and `/etc/fstab` name `PARTUUID=1a2b3c4d-0N`.
pub const DISK_SIGNATURE: &str = "1a2b3c4d";
/// The boot partition's first sector, as on Raspberry Pi OS.
pub const BOOT_START: u64 = 8192;
/// 256 MiB of boot partition, as on Raspberry Pi OS bookworm.
pub const BOOT_SECTORS: u64 = 256 * MIB / SECTOR;
/// The root partition starts right after the boot partition.
pub const ROOT_START: u64 = BOOT_START + BOOT_SECTORS;

/// Bumped whenever the layout below changes, so cached bases are rebuilt.
const VERSION: &str = "w4b bench pibase v1";

/// The host directories the root tree is selected from, in this order.
const SOURCES: &[&str] = &["usr/bin", "usr/sbin", "usr/share", "usr/lib"];

/// A built base: the raw disk, its `zstd -3` compression, and what is in it.
#[derive(Clone, Debug)]
pub struct PiBase {
    /// The cache directory holding the files below.
    pub dir: PathBuf,
    /// The raw disk image (sparse).
    pub raw: PathBuf,
    /// `raw` compressed with `zstd -T0 -3`.
    pub zst: PathBuf,
    /// sha256 of `zst`, hex, for the base definition.
    pub zst_sha256: String,
    /// Regular files in the root tree (counting each inode once), and their bytes.
    pub root_files: u64,
    pub root_bytes: u64,
    pub root_dirs: u64,
    pub root_symlinks: u64,
    /// Files and bytes of the boot tree.
    pub boot_files: u64,
    pub boot_bytes: u64,
    /// Sectors of the root partition (it starts at [`ROOT_START`]).
    pub root_sectors: u64,
    /// Whether this call built the base (false: it came from the cache).
    pub built: bool,
}

impl PiBase {
    /// Size of the raw disk in bytes.
    pub fn disk_bytes(&self) -> u64 {
        (ROOT_START + self.root_sectors) * SECTOR
    }

    pub fn zst_bytes(&self) -> u64 {
        fs::metadata(&self.zst)
            .map(|m| m.len())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.zst.display()))
    }

    pub fn describe(&self) -> String {
        format!(
            "{} MiB disk ({} MiB zstd -3): rootfs {} files / {} MiB, {} directories, {} symlinks \
             in a {} MiB ext4 partition; bootfs {} files / {} MiB in 256 MiB FAT32",
            super::thousands(self.disk_bytes() / MIB),
            super::thousands(self.zst_bytes() / MIB),
            super::thousands(self.root_files),
            super::thousands(self.root_bytes / MIB),
            super::thousands(self.root_dirs),
            super::thousands(self.root_symlinks),
            super::thousands(self.root_sectors * SECTOR / MIB),
            self.boot_files,
            self.boot_bytes / MIB,
        )
    }
}

/// One selected host entry, relative to `/`.
struct Entry {
    rel: PathBuf,
    meta: fs::Metadata,
}

/// Walks `SOURCES` in byte order, taking every directory, symlink and regular file until
/// the regular files (each inode once) reach `budget` bytes. Anything else (sockets,
/// devices) and anything unreadable is skipped.
fn select(budget: u64) -> (Vec<Entry>, u64) {
    let mut out = Vec::new();
    let mut bytes = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    for src in SOURCES {
        if bytes >= budget {
            break;
        }
        let rel = PathBuf::from(src);
        let Ok(meta) = fs::symlink_metadata(Path::new("/").join(&rel)) else {
            continue;
        };
        if meta.is_dir() {
            out.push(Entry {
                rel: rel.clone(),
                meta,
            });
            select_dir(&rel, budget, &mut bytes, &mut seen, &mut out);
        }
    }
    (out, bytes)
}

fn select_dir(
    rel: &Path,
    budget: u64,
    bytes: &mut u64,
    seen: &mut std::collections::BTreeSet<(u64, u64)>,
    out: &mut Vec<Entry>,
) {
    let host = Path::new("/").join(rel);
    let Ok(read) = fs::read_dir(&host) else { return };
    let mut names: Vec<_> = read.filter_map(Result::ok).map(|e| e.file_name()).collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        if *bytes >= budget {
            return;
        }
        let child = rel.join(&name);
        let Ok(meta) = fs::symlink_metadata(Path::new("/").join(&child)) else {
            continue;
        };
        let t = meta.file_type();
        if t.is_dir() {
            // Unreadable directories (none are, as root) would make tar fail.
            if fs::read_dir(Path::new("/").join(&child)).is_err() {
                continue;
            }
            out.push(Entry {
                rel: child.clone(),
                meta,
            });
            select_dir(&child, budget, bytes, seen, out);
        } else if t.is_symlink() {
            out.push(Entry { rel: child, meta });
        } else if t.is_file() {
            if fs::File::open(Path::new("/").join(&child)).is_err() {
                continue;
            }
            if seen.insert((meta.dev(), meta.ino())) {
                *bytes += meta.len();
            }
            out.push(Entry { rel: child, meta });
        }
    }
}

fn key(budget: u64, entries: &[Entry]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(VERSION.as_bytes());
    h.update(&budget.to_le_bytes());
    for e in entries {
        h.update(e.rel.as_os_str().as_bytes());
        h.update(&[0]);
        let m = &e.meta;
        for v in [u64::from(m.mode()), m.len(), m.mtime() as u64, m.nlink()] {
            h.update(&v.to_le_bytes());
        }
        if m.file_type().is_symlink() {
            if let Ok(t) = fs::read_link(Path::new("/").join(&e.rel)) {
                h.update(t.as_os_str().as_bytes());
            }
        }
    }
    h.finalize().to_hex()[..16].to_string()
}

/// The base for `budget` bytes of root-tree data: from the cache under `cache_root` if
/// it is there, else built (and the other bases in `cache_root` removed).
pub fn realistic(cache_root: &Path, budget: u64) -> PiBase {
    disk::require(&["sfdisk", "mkfs.vfat", "mcopy", "mke2fs", "zstd", "tar"]);
    let (entries, _) = select(budget);
    let key = key(budget, &entries);
    let dir = cache_root.join(format!("bench-pibase-{key}"));
    let info_path = dir.join("base.info");
    if let Some(base) = load(&dir, &info_path) {
        return base;
    }
    // A new key: drop older bases (1.5 GiB each) and any half-built one.
    if let Ok(read) = fs::read_dir(cache_root) {
        for e in read.flatten() {
            if e.file_name().as_bytes().starts_with(b"bench-pibase-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let base = build(&dir, &entries);
    let info = format!(
        "{} {} {} {} {} {} {} {}\n",
        base.zst_sha256,
        base.root_files,
        base.root_bytes,
        base.root_dirs,
        base.root_symlinks,
        base.boot_files,
        base.boot_bytes,
        base.root_sectors
    );
    // Written last: a base without it is half-built and is rebuilt.
    fs::write(&info_path, info).unwrap_or_else(|e| panic!("write {}: {e}", info_path.display()));
    base
}

fn load(dir: &Path, info_path: &Path) -> Option<PiBase> {
    let info = fs::read_to_string(info_path).ok()?;
    let f: Vec<&str> = info.split_whitespace().collect();
    let [sha, files, bytes, dirs, links, bfiles, bbytes, sectors] = f.as_slice() else {
        return None;
    };
    let n = |s: &str| s.parse::<u64>().ok();
    let base = PiBase {
        dir: dir.to_path_buf(),
        raw: dir.join("base.img"),
        zst: dir.join("base.img.zst"),
        zst_sha256: (*sha).to_string(),
        root_files: n(files)?,
        root_bytes: n(bytes)?,
        root_dirs: n(dirs)?,
        root_symlinks: n(links)?,
        boot_files: n(bfiles)?,
        boot_bytes: n(bbytes)?,
        root_sectors: n(sectors)?,
        built: false,
    };
    (base.raw.exists() && base.zst.exists()).then_some(base)
}

fn write_file(path: &Path, body: &str, mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    }
    fs::write(path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn build(dir: &Path, entries: &[Entry]) -> PiBase {
    let stage = dir.join("stage");
    let root = stage.join("root");
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));

    // The /usr selection, copied by tar from a NUL-separated list (names may hold
    // anything), without recursion: the list already names every directory.
    let list = stage.join("list");
    let mut names = Vec::new();
    for e in entries {
        names.extend_from_slice(e.rel.as_os_str().as_bytes());
        names.push(0);
    }
    fs::write(&list, names).unwrap_or_else(|e| panic!("write {}: {e}", list.display()));
    let pack = format!(
        "tar -C / --null --no-recursion -T '{}' -cf - | tar -C '{}' --numeric-owner -xpf -",
        list.display(),
        root.display()
    );
    disk::run(Command::new("bash").args(["-c", &format!("set -o pipefail; {pack}")]));

    // What a Raspberry Pi OS root has besides /usr.
    for d in [
        "boot/firmware",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "var/log",
        "var/lib",
        "home/pi",
        "root",
        "etc/w4b",
    ] {
        fs::create_dir_all(root.join(d)).unwrap_or_else(|e| panic!("create {d}: {e}"));
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
        .unwrap_or_else(|e| panic!("chmod tmp: {e}"));
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        std::os::unix::fs::symlink(target, root.join(link)).unwrap_or_else(|e| panic!("symlink {link}: {e}"));
    }
    let sig = DISK_SIGNATURE;
    write_file(
        &root.join("etc/fstab"),
        &format!(
            "proc            /proc           proc    defaults          0       0\n\
             PARTUUID={sig}-01  /boot/firmware  vfat    defaults          0       2\n\
             PARTUUID={sig}-02  /               ext4    defaults,noatime  0       1\n"
        ),
        0o644,
    );
    write_file(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
        0o644,
    );
    write_file(
        &root.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nsudo:x:27:pi\nnogroup:x:65534:\npi:x:1000:\n",
        0o644,
    );
    write_file(
        &root.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\npi:!:19000:0:99999:7:::\n",
        0o640,
    );
    write_file(&root.join("etc/hostname"), "raspberrypi\n", 0o644);
    write_file(
        &root.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n",
        0o644,
    );

    // Counts of the root tree as it goes into the image.
    let (root_files, root_bytes, root_dirs, root_symlinks) = count(&root);

    // --- boot partition: the fat_write tree plus the device trees' real names.
    let boot_tree = HostTree::bootfs();
    let boot = &boot_tree.src;
    let mut boot_files = boot_tree.files;
    let mut boot_bytes = boot_tree.bytes;
    for (name, kib) in [
        ("bcm2711-rpi-4-b.dtb", 54u64),
        ("bcm2711-rpi-400.dtb", 54),
        ("bcm2711-rpi-cm4.dtb", 55),
        ("bcm2712-rpi-5-b.dtb", 76),
        ("bcm2710-rpi-3-b.dtb", 33),
        ("bcm2710-rpi-3-b-plus.dtb", 34),
        ("bcm2710-rpi-zero-2-w.dtb", 33),
    ] {
        let mut bytes = Vec::with_capacity((kib * 1024) as usize);
        let mut block = *blake3::hash(name.as_bytes()).as_bytes();
        while (bytes.len() as u64) < kib * 1024 {
            bytes.extend_from_slice(&block);
            block = *blake3::hash(&block).as_bytes();
        }
        let p = boot.join(name);
        fs::write(&p, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        boot_files += 1;
        boot_bytes += bytes.len() as u64;
    }
    disk::run(Command::new("find").arg(boot).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        &format!("@{}", super::EPOCH),
        "{}",
        "+",
    ]));
    let boot_img = stage.join("boot.img");
    disk::fat_image(
        &boot_img,
        boot,
        BOOT_SECTORS * SECTOR,
        &["-n", "bootfs", "-i", "1A2B3C4D", "-h", &BOOT_START.to_string()],
    );

    // --- root partition: data fills ~60 %, whole MiB.
    let root_mib = (root_bytes * 5 / 3).div_ceil(MIB).max(256);
    let root_sectors = root_mib * MIB / SECTOR;
    let root_img = stage.join("root.img");
    disk::run(
        disk::tool("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "rootfs"])
            .args(["-U", "0b0e0e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"])
            .args([
                "-E",
                "hash_seed=5a6b7c8d-0b0e-4e0f-9a2b-1c3d4e5f6a7b,root_owner=0:0",
            ])
            .arg("-d")
            .arg(&root)
            .arg(&root_img)
            .arg(format!("{}k", root_mib * 1024)),
    );

    // --- the disk.
    let raw = dir.join("base.img");
    disk::remove(&raw);
    disk::run(
        Command::new("truncate")
            .arg("-s")
            .arg(((ROOT_START + root_sectors) * SECTOR).to_string())
            .arg(&raw),
    );
    disk::mbr(
        &raw,
        DISK_SIGNATURE,
        &[(BOOT_START, BOOT_SECTORS, "c"), (ROOT_START, root_sectors, "83")],
    );
    copy_sparse(&boot_img, &raw, BOOT_START * SECTOR);
    copy_sparse(&root_img, &raw, ROOT_START * SECTOR);
    let zst = dir.join("base.img.zst");
    disk::run(
        disk::tool("zstd")
            .args(["-q", "-f", "-T0", "-3"])
            .arg(&raw)
            .arg("-o")
            .arg(&zst),
    );
    fs::remove_dir_all(&stage).unwrap_or_else(|e| panic!("remove {}: {e}", stage.display()));

    PiBase {
        dir: dir.to_path_buf(),
        raw,
        zst_sha256: sha256_file(&zst),
        zst,
        root_files,
        root_bytes,
        root_dirs,
        root_symlinks,
        boot_files,
        boot_bytes,
        root_sectors,
        built: true,
    }
}

/// Regular files (each inode once), their bytes, directories and symlinks below `dir`.
fn count(dir: &Path) -> (u64, u64, u64, u64) {
    let (mut files, mut bytes, mut dirs, mut links) = (0, 0, 1, 0);
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let p = e.unwrap_or_else(|e| panic!("read {}: {e}", d.display())).path();
            let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
            if m.is_dir() {
                dirs += 1;
                stack.push(p);
            } else if m.file_type().is_symlink() {
                links += 1;
            } else if m.is_file() && seen.insert(m.ino()) {
                files += 1;
                bytes += m.len();
            }
        }
    }
    (files, bytes, dirs, links)
}

/// Copies `src` into `dst` at byte `offset`, seeking over all-zero 64 KiB blocks so the
/// disk stays as sparse as the filesystem images (what `dd conv=sparse` does).
pub fn copy_sparse(src: &Path, dst: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom};
    let mut r = fs::File::open(src).unwrap_or_else(|e| panic!("open {}: {e}", src.display()));
    let mut w = fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .unwrap_or_else(|e| panic!("open {}: {e}", dst.display()));
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    loop {
        let n = read_full(&mut r, &mut buf).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
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
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut f, &mut buf).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut s = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(s, "{b:02x}");
    }
    s
}
