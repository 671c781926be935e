//! Disk-format bench machinery: deterministic host trees (a root filesystem of ~20,000
//! files, a Raspberry Pi boot partition), the adapter that feeds a host tree to w4b's
//! image writers (a [`Node`] list plus [`HostContents`], which opens each host file only
//! when the writer asks for it), and the external tools the baselines run (`mke2fs`,
//! `mkfs.vfat`, `mcopy`, `mount`, `tar`) with their checkers (`e2fsck`, `fsck.fat`).
//!
//! The writers are measured on real files, as `mke2fs -d` is: the walk of the source tree
//! (one `symlink_metadata` per entry, `read_link`, hard-link detection by inode) is part
//! of what both sides do, and file contents stream from the page cache into the image.
//! Contents are pseudo-random (BLAKE3's extendable output keyed by the file's path), so
//! no side gains from all-zero blocks it could skip.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use w4b::formats::ext4::write::{Ext4Options, Ext4Report, Size};
use w4b::formats::fs::{ContentId, Contents, Node, NodeKind};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// The mix of a generated root-filesystem tree.
#[derive(Clone, Copy, Debug)]
pub struct TreeShape {
    /// Files of 0–16 KiB (configuration, scripts, small libraries).
    pub small: usize,
    /// Files of 100 KiB – 2 MiB (libraries, binaries), spread evenly among the small ones.
    pub medium: usize,
    /// Sizes in MiB of the few large files (databases, firmware blobs, models).
    pub large_mib: &'static [u64],
    pub symlinks: usize,
    /// Extra names for existing small files, in a directory of their own.
    pub hardlinks: usize,
}

impl TreeShape {
    /// Directory entries other than directories: regular files, symlinks, hard links.
    pub fn entries(&self) -> usize {
        self.small + self.medium + self.large_mib.len() + self.symlinks + self.hardlinks
    }
}

/// ~1.01 GiB in 20,000 entries: 19,400 small, 500 medium, 6 large (20–100 MiB).
pub const ROOTFS_FULL: TreeShape = TreeShape {
    small: 19_400,
    medium: 500,
    large_mib: &[20, 36, 52, 68, 84, 100],
    symlinks: 54,
    hardlinks: 40,
};

/// ~200 MiB in 5,000 entries (`--quick`).
pub const ROOTFS_QUICK: TreeShape = TreeShape {
    small: 4_850,
    medium: 75,
    large_mib: &[20, 64],
    symlinks: 40,
    hardlinks: 33,
};

/// A generated host tree in its own temporary directory (removed on drop).
pub struct HostTree {
    pub root: tempfile::TempDir,
    /// The tree itself: what `mke2fs -d` and [`scan`] read.
    pub src: PathBuf,
    /// Regular files, counting each inode once (hard links are not files here).
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
}

impl HostTree {
    /// A scratch path beside the tree (for images), inside the same temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} regular files ({} MiB), {} directories, {} symlinks, {} hard links",
            super::thousands(self.files),
            super::thousands(self.bytes / MIB),
            super::thousands(self.dirs),
            self.symlinks,
            self.hardlinks
        )
    }
}

fn seed(path: &str) -> u64 {
    let h = blake3::hash(path.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Writes `len` pseudo-random bytes derived from `key` to `path`, 1 MiB at a time so a
/// 100 MiB file never sits in memory.
fn write_random(path: &Path, key: &str, len: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    let mut xof = blake3::Hasher::new_derive_key("w4b bench disk tree contents v1")
        .update(key.as_bytes())
        .finalize_xof();
    let mut out = io::BufWriter::with_capacity(
        MIB as usize,
        fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())),
    );
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        xof.fill(&mut buf[..n]);
        out.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
    out.flush()
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn new_root(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let src = root.path().join("src");
    fs::create_dir(&src).unwrap_or_else(|e| panic!("create {}: {e}", src.display()));
    (root, src)
}

/// The directory (relative to the tree) of the `i`-th small or medium file: about 32
/// entries per directory, under 16 top-level directories, every third one two levels
/// deeper, so both writers walk a few hundred directories at depths 2–4.
fn dir_of(i: usize) -> String {
    let d = i / 32;
    let mut s = format!("lib{:02}/pkg{d:04}", d % 16);
    if d.is_multiple_of(3) {
        s.push_str("/share/data");
    }
    s
}

impl HostTree {
    /// Generates the root-filesystem tree of `shape`. Same shape, same bytes.
    pub fn rootfs(shape: TreeShape) -> HostTree {
        let (root, src) = new_root("w4b-bench-ext4-");
        let mut files = 0u64;
        let mut bytes = 0u64;
        let total = shape.small + shape.medium;
        let mut small_names = Vec::with_capacity(shape.small);
        for i in 0..total {
            // Exactly `medium` of the `total` indices are medium, evenly spaced.
            let medium = (i + 1) * shape.medium / total != i * shape.medium / total;
            let rel = if medium {
                format!("{}/m{i:05}.so", dir_of(i))
            } else {
                format!("{}/f{i:05}.dat", dir_of(i))
            };
            let len = if medium {
                100 * KIB + seed(&rel) % (2 * MIB - 100 * KIB + 1)
            } else {
                seed(&rel) % (16 * KIB + 1)
            };
            write_random(&src.join(&rel), &rel, len);
            if !medium {
                small_names.push(rel);
            }
            files += 1;
            bytes += len;
        }
        for (k, mib) in shape.large_mib.iter().enumerate() {
            let rel = format!("var/big/blob{k}.img");
            write_random(&src.join(&rel), &rel, mib * MIB);
            files += 1;
            bytes += mib * MIB;
        }
        // Symlinks sit beside the files they name; every other one points at a directory.
        for j in 0..shape.symlinks {
            let i = j * total / shape.symlinks.max(1);
            let link = src.join(dir_of(i)).join(format!("l{j:03}.lnk"));
            let target = if j.is_multiple_of(2) {
                format!("f{i:05}.dat")
            } else {
                "..".to_string()
            };
            std::os::unix::fs::symlink(&target, &link)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
        }
        let links = src.join("links");
        fs::create_dir_all(&links).unwrap_or_else(|e| panic!("create {}: {e}", links.display()));
        for j in 0..shape.hardlinks {
            let target = &small_names[j * small_names.len() / shape.hardlinks.max(1)];
            let link = links.join(format!("h{j:03}.dat"));
            fs::hard_link(src.join(target), &link).unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
        }
        let dirs = count_dirs(&src);
        HostTree {
            root,
            src,
            files,
            bytes,
            dirs,
            symlinks: shape.symlinks as u64,
            hardlinks: shape.hardlinks as u64,
        }
    }

    /// Generates a Raspberry Pi OS-like boot partition tree (~60 MiB in ~330 files):
    /// four kernels of 8–10 MiB, eight firmware `start*.elf` of 0.8–4.9 MiB and their
    /// `fixup*.dat`, 100 device trees of 30–60 KiB, 200 overlays of 1–5 KiB in
    /// `overlays/`, `config.txt`, `cmdline.txt`.
    pub fn bootfs() -> HostTree {
        let (root, src) = new_root("w4b-bench-fat-");
        let mut files = 0u64;
        let mut bytes = 0u64;
        let mut add = |rel: &str, len: u64| {
            write_random(&src.join(rel), rel, len);
            files += 1;
            bytes += len;
        };
        for (name, kib) in [
            ("kernel.img", 8_300),
            ("kernel7.img", 8_700),
            ("kernel7l.img", 9_200),
            ("kernel8.img", 9_800),
        ] {
            add(name, kib * KIB);
        }
        for (name, kib) in [
            ("start.elf", 2_900),
            ("start_cd.elf", 800),
            ("start_db.elf", 4_900),
            ("start_x.elf", 3_900),
            ("start4.elf", 2_200),
            ("start4cd.elf", 800),
            ("start4db.elf", 3_600),
            ("start4x.elf", 2_900),
        ] {
            add(name, kib * KIB);
            add(&name.replace("start", "fixup").replace(".elf", ".dat"), 7 * KIB);
        }
        add("bootcode.bin", 52 * KIB);
        add("LICENCE.broadcom", 1_594);
        add("issue.txt", 145);
        for k in 0..100 {
            let rel = format!("bcm27{:02}-rpi-board-rev{k:02}.dtb", 8 + k % 5);
            let len = 30 * KIB + seed(&rel) % (30 * KIB + 1);
            add(&rel, len);
        }
        for k in 0..200 {
            let rel = format!("overlays/overlay-number-{k:03}.dtbo");
            let len = KIB + seed(&rel) % (4 * KIB + 1);
            add(&rel, len);
        }
        add("overlays/README", 150 * KIB);
        let text = [
            ("config.txt", "dtparam=audio=on\ncamera_auto_detect=1\ndisplay_auto_detect=1\nauto_initramfs=1\ndtoverlay=vc4-kms-v3d\nmax_framebuffers=2\narm_64bit=1\n"),
            ("cmdline.txt", "console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 fsck.repair=yes rootwait\n"),
        ];
        for (name, body) in text {
            let path = src.join(name);
            fs::write(&path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            files += 1;
            bytes += body.len() as u64;
        }
        let dirs = count_dirs(&src);
        HostTree {
            root,
            src,
            files,
            bytes,
            dirs,
            symlinks: 0,
            hardlinks: 0,
        }
    }
}

fn count_dirs(dir: &Path) -> u64 {
    let mut n = 1;
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let e = e.unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            n += count_dirs(&e.path());
        }
    }
    n
}

/// File contents by host path: the [`ContentId`] of a scanned file is its index in
/// `paths` (little-endian in the first 8 bytes). Files are opened only when a writer
/// asks, so a 1 GiB tree costs a list of paths, not 1 GiB of memory.
#[derive(Default)]
pub struct HostContents {
    paths: Vec<PathBuf>,
}

impl HostContents {
    fn add(&mut self, path: PathBuf) -> ContentId {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(self.paths.len() as u64).to_le_bytes());
        self.paths.push(path);
        ContentId(id)
    }
}

impl Contents for HostContents {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        let index = u64::from_le_bytes(id.0[..8].try_into().unwrap_or([0xff; 8]));
        let path = usize::try_from(index)
            .ok()
            .and_then(|i| self.paths.get(i))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host content"))?;
        Ok(Box::new(fs::File::open(path)?))
    }
}

/// Walks the host tree at `src` into nodes in walk order (`/`, then depth-first, children
/// by name bytes) with each host file's mode, owner and mtime, as `mke2fs -d` copies them.
/// A regular file with several names is a `File` at its first path and `HardLink`s after.
/// Extended attributes are not read (std has no API for them; the generated trees have
/// none, so `mke2fs -d` finds none either).
pub fn scan(src: &Path) -> (Vec<Node>, HostContents) {
    let mut nodes = Vec::new();
    let mut contents = HostContents::default();
    let mut seen = BTreeMap::new();
    let meta = fs::symlink_metadata(src).unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
    nodes.push(node("/".to_string(), NodeKind::Dir, &meta));
    scan_dir(src, "", &mut nodes, &mut contents, &mut seen);
    (nodes, contents)
}

fn node(path: String, kind: NodeKind, m: &fs::Metadata) -> Node {
    Node {
        path,
        kind,
        mode: m.permissions().mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        xattrs: BTreeMap::new(),
    }
}

fn scan_dir(
    dir: &Path,
    prefix: &str,
    nodes: &mut Vec<Node>,
    contents: &mut HostContents,
    seen: &mut BTreeMap<(u64, u64), String>,
) {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("read {}: {e}", dir.display())))
        .collect();
    entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for e in entries {
        let host = e.path();
        let name = e.file_name();
        let name = name
            .to_str()
            .unwrap_or_else(|| panic!("non-UTF-8 name {}", host.display()));
        let path = format!("{prefix}/{name}");
        let m = fs::symlink_metadata(&host).unwrap_or_else(|e| panic!("stat {}: {e}", host.display()));
        let t = m.file_type();
        if t.is_dir() {
            nodes.push(node(path.clone(), NodeKind::Dir, &m));
            scan_dir(&host, &path, nodes, contents, seen);
        } else if t.is_symlink() {
            let target = fs::read_link(&host)
                .unwrap_or_else(|e| panic!("readlink {}: {e}", host.display()))
                .to_str()
                .unwrap_or_else(|| panic!("non-UTF-8 link {}", host.display()))
                .to_string();
            nodes.push(node(path, NodeKind::Symlink { target }, &m));
        } else if t.is_file() {
            let first = (m.nlink() > 1)
                .then(|| seen.get(&(m.dev(), m.ino())).cloned())
                .flatten();
            let kind = match first {
                Some(target) => NodeKind::HardLink { target },
                None => {
                    if m.nlink() > 1 {
                        seen.insert((m.dev(), m.ino()), path.clone());
                    }
                    NodeKind::File {
                        size: m.len(),
                        content: contents.add(host),
                    }
                }
            };
            nodes.push(node(path, kind, &m));
        } else {
            // Device nodes, FIFOs and sockets: a real root (the Debian base's `/dev`) has
            // a few.
            use std::os::unix::fs::FileTypeExt;
            let rdev = m.rdev();
            let major = (((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff)) as u32;
            let minor = ((rdev & 0xff) | ((rdev >> 12) & !0xff)) as u32;
            let kind = if t.is_char_device() {
                NodeKind::CharDev { major, minor }
            } else if t.is_block_device() {
                NodeKind::BlockDev { major, minor }
            } else if t.is_fifo() {
                NodeKind::Fifo
            } else if t.is_socket() {
                NodeKind::Socket
            } else {
                panic!("{}: unknown file type", host.display());
            };
            nodes.push(node(path, kind, &m));
        }
    }
}

/// BLAKE3 over every regular file of the host tree (first names of hard-linked files
/// only), combined in walk order as `path \0 digest`: what reading an image of the tree
/// back must reproduce.
pub fn tree_digest(src: &Path) -> blake3::Hash {
    let (nodes, contents) = scan(src);
    let mut all = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * KIB as usize];
    for n in &nodes {
        if let NodeKind::File { content, .. } = &n.kind {
            let mut r = contents
                .open(content)
                .unwrap_or_else(|e| panic!("open {}: {e}", n.path));
            let d = hash_reader(&mut r, &mut buf).unwrap_or_else(|e| panic!("read {}: {e}", n.path));
            combine(&mut all, &n.path, &d.0);
        }
    }
    all.finalize()
}

/// Adds one file to a [`tree_digest`]-style combined digest.
pub fn combine(all: &mut blake3::Hasher, path: &str, digest: &blake3::Hash) {
    all.update(path.as_bytes());
    all.update(&[0]);
    all.update(digest.as_bytes());
}

/// BLAKE3 of everything `r` yields, read through `buf`, and the byte count.
pub fn hash_reader(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<(blake3::Hash, u64)> {
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    loop {
        match r.read(buf) {
            Ok(0) => return Ok((h.finalize(), n)),
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `src` as an ext4 image of `size` bytes at `img` with w4b's writer, the way a
/// user's build would: scan the host tree, stream contents, `fsync` (as `mke2fs` does
/// before it exits).
pub fn write_ext4(src: &Path, img: &Path, size: u64) -> Ext4Report {
    let (nodes, contents) = scan(src);
    write_ext4_nodes(&nodes, &contents, img, size)
}

/// The writing half of [`write_ext4`]: creates `img` fresh (so it reads as zeros and
/// stays sparse), writes, `fsync`s.
pub fn write_ext4_nodes(nodes: &[Node], contents: &HostContents, img: &Path, size: u64) -> Ext4Report {
    let mut out = fs::File::create(img).unwrap_or_else(|e| panic!("create {}: {e}", img.display()));
    let opts = Ext4Options::new(Size::Fixed(size), [0x42; 16], [0x24; 16], super::EPOCH as i64);
    let report = w4b::formats::ext4::write::write_ext4(&mut out, nodes, contents, &opts)
        .unwrap_or_else(|e| panic!("write_ext4 {}: {e:?}", img.display()));
    out.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", img.display()));
    report
}

/// Runs `cmd` with stdin closed, panicking with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Panics with a clear message when a baseline's tool is missing: a bench without its
/// baseline has no ratio to report.
pub fn require(tools: &[&str]) {
    // Tools are found as the tests' oracle policy finds them; a bench has no "skip".
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| super::oracle::find(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "missing baseline tools {missing:?}: install e2fsprogs, dosfstools, mtools"
    );
}

/// `fsync`s a file another process wrote, so both sides of a bench end with the image
/// on disk, whatever the tool itself does.
pub fn sync_path(path: &Path) {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

/// Removes a file if it exists (between rounds, outside the timing).
pub fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove {}: {e}", path.display()),
    }
}

/// Bytes the file occupies on disk (its allocated blocks), to show how sparse it is.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
}

/// A `VmHWM`/`VmRSS`-style field of `/proc/self/status`, in KiB.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Drops the page cache's copy of `path`: `posix_fadvise(DONTNEED)` on that file alone,
/// through GNU `dd iflag=nocache count=0` (no root needed, and the shared machine's other
/// caches stay warm); else `/proc/sys/vm/drop_caches` (root, drops everything). Returns
/// how, or None when neither worked.
pub fn drop_cache(path: &Path) -> Option<&'static str> {
    // Dirty pages cannot be dropped; the writers fsync, this is for good measure.
    sync_path(path);
    let targeted = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if targeted {
        return Some("dd iflag=nocache (fadvise DONTNEED on the image file)");
    }
    fs::write("/proc/sys/vm/drop_caches", "3")
        .is_ok()
        .then_some("/proc/sys/vm/drop_caches")
}

/// Whether the bench runs as root (effective uid 0, from `/proc/self/status`): the
/// loop-mount baselines need it.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A command for an image tool with the fixed time and settings every baseline gives it
/// (`SOURCE_DATE_EPOCH`, `E2FSPROGS_FAKE_TIME`, `TZ=UTC`, `LC_ALL=C`, mtools' geometry
/// check off), so the image depends on its inputs only.
pub fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.env("SOURCE_DATE_EPOCH", super::EPOCH.to_string())
        .env("E2FSPROGS_FAKE_TIME", super::EPOCH.to_string())
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("MTOOLS_SKIP_CHECK", "1");
    c
}

/// A FAT32 image of `bytes` at `img` holding the tree at `src`, with the standard tools:
/// `truncate`, `mkfs.vfat --invariant -F 32 <args…>` (label, volume id, hidden sectors,
/// cluster size), `mcopy -s -m` of every top-level entry in name order.
pub fn fat_image(img: &Path, src: &Path, bytes: u64, args: &[&str]) {
    remove(img);
    run(Command::new("truncate").arg("-s").arg(bytes.to_string()).arg(img));
    run(tool("mkfs.vfat")
        .args(["--invariant", "-F", "32"])
        .args(args)
        .arg(img));
    let mut top: Vec<PathBuf> = fs::read_dir(src)
        .unwrap_or_else(|e| panic!("read {}: {e}", src.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("read {}: {e}", src.display())).path())
        .collect();
    top.sort();
    if top.is_empty() {
        return;
    }
    run(tool("mcopy")
        .args(["-s", "-m", "-i"])
        .arg(img)
        .args(&top)
        .arg("::/"));
}

/// Writes an MBR partition table with disk signature `signature` (hex) and the
/// partitions `(start, size, type)` in sectors onto the disk file `raw`, by `sfdisk`.
pub fn mbr(raw: &Path, signature: &str, parts: &[(u64, u64, &str)]) {
    let mut script = format!("label: dos\nlabel-id: 0x{signature}\nunit: sectors\n\n");
    for (start, size, kind) in parts {
        script.push_str(&format!("start={start}, size={size}, type={kind}\n"));
    }
    let mut sfdisk = tool("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(raw)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn sfdisk: {e}"));
    sfdisk
        .stdin
        .take()
        .map(|mut s| s.write_all(script.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("write to sfdisk: {e}"));
    let st = sfdisk.wait().unwrap_or_else(|e| panic!("sfdisk: {e}"));
    assert!(st.success(), "sfdisk failed: {st}");
}
