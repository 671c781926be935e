//! The reference tools judge the images: `e2fsck -fn` must be silent beyond its summary,
//! `debugfs` must see the nodes, their attributes and their bytes, and `resize2fs` must be
//! able to grow the result. A missing tool fails under `CI` and skips otherwise.

#![allow(clippy::disallowed_methods)]

use super::*;
use crate::formats::fs::{ContentId, Contents, Node, NodeKind};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::process::Command;

/// Contents for tests: literal bytes, or lazily generated patterns of any size.
#[derive(Default)]
struct TestContents {
    map: BTreeMap<ContentId, Source>,
}

#[derive(Clone)]
enum Source {
    Bytes(Vec<u8>),
    /// `size` bytes; block `i` (4 KiB) is `i`'s little-endian bytes repeated when
    /// `i % every == 0`, else zeros.
    Pattern {
        size: u64,
        every: u64,
    },
}

impl Source {
    fn byte(&self, at: u64) -> u8 {
        match self {
            Source::Bytes(b) => b[at as usize],
            Source::Pattern { every, .. } => {
                let blk = at / 4096;
                if blk.is_multiple_of(*every) {
                    ((blk + 1) >> ((at % 8) * 8)) as u8 | 1
                } else {
                    0
                }
            }
        }
    }
    fn size(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Pattern { size, .. } => *size,
        }
    }
}

struct SourceReader {
    src: Source,
    at: u64,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.src.size() - self.at).min(buf.len() as u64) as usize;
        match &self.src {
            Source::Bytes(b) => buf[..n].copy_from_slice(&b[self.at as usize..self.at as usize + n]),
            Source::Pattern { every, .. } => {
                // Fast path: whole zero blocks are memset.
                let mut i = 0;
                while i < n {
                    let at = self.at + i as u64;
                    let blk_end = ((at / 4096 + 1) * 4096 - self.at) as usize;
                    let end = blk_end.min(n);
                    if (at / 4096).is_multiple_of(*every) {
                        for (k, b) in buf[i..end].iter_mut().enumerate() {
                            *b = self.src.byte(at + k as u64);
                        }
                    } else {
                        buf[i..end].fill(0);
                    }
                    i = end;
                }
            }
        }
        self.at += n as u64;
        Ok(n)
    }
}

impl Contents for TestContents {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        let src = self
            .map
            .get(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no content"))?;
        Ok(Box::new(SourceReader {
            src: src.clone(),
            at: 0,
        }))
    }
}

impl TestContents {
    fn add(&mut self, src: Source) -> (ContentId, u64) {
        let mut h = blake3::Hasher::new();
        match &src {
            Source::Bytes(b) => {
                h.update(b"b");
                h.update(b);
            }
            Source::Pattern { size, every } => {
                h.update(b"p");
                h.update(&size.to_le_bytes());
                h.update(&every.to_le_bytes());
            }
        }
        let id = ContentId(*h.finalize().as_bytes());
        let size = src.size();
        self.map.insert(id, src);
        (id, size)
    }
}

/// A tree builder in walk order (callers add parents first, children sorted).
struct Tree {
    nodes: Vec<Node>,
    contents: TestContents,
}

impl Tree {
    fn new() -> Tree {
        let mut t = Tree {
            nodes: Vec::new(),
            contents: TestContents::default(),
        };
        t.push("/", NodeKind::Dir, 0o755);
        t
    }
    fn push(&mut self, path: &str, kind: NodeKind, mode: u32) -> &mut Node {
        self.nodes.push(Node {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: BTreeMap::new(),
        });
        self.nodes.last_mut().unwrap()
    }
    fn file(&mut self, path: &str, bytes: &[u8]) -> &mut Node {
        let (content, size) = self.contents.add(Source::Bytes(bytes.to_vec()));
        self.push(path, NodeKind::File { size, content }, 0o644)
    }
    fn pattern(&mut self, path: &str, size: u64, every: u64) -> &mut Node {
        let (content, size) = self.contents.add(Source::Pattern { size, every });
        self.push(path, NodeKind::File { size, content }, 0o644)
    }
    /// Sorts into walk order: parents first, siblings by name bytes.
    fn sorted(mut self) -> Tree {
        self.nodes.sort_by(|a, b| {
            let ka: Vec<&[u8]> = a
                .path
                .split('/')
                .filter(|c| !c.is_empty())
                .map(str::as_bytes)
                .collect();
            let kb: Vec<&[u8]> = b
                .path
                .split('/')
                .filter(|c| !c.is_empty())
                .map(str::as_bytes)
                .collect();
            ka.cmp(&kb)
        });
        self
    }
}

use crate::oracle::have as tool;

fn opts(size: Size) -> Ext4Options {
    let mut o = Ext4Options::new(size, [0x42; 16], [0x17; 16], 1_700_000_000);
    o.label = "rootfs".into();
    o
}

fn write_image(tree: &Tree, opts: &Ext4Options, path: &Path) -> Ext4Report {
    let mut f = std::fs::File::create(path).unwrap();
    let r = write_ext4(&mut f, &tree.nodes, &tree.contents, opts).unwrap();
    assert_eq!(f.metadata().unwrap().len(), r.image_bytes);
    r
}

/// Runs `e2fsck -fn` and asserts it exits 0 and prints only its summary.
fn fsck_clean(img: &Path) {
    let out = Command::new("e2fsck").args(["-fn"]).arg(img).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected_lines = stdout
        .lines()
        .filter(|l| {
            !(l.starts_with("Pass ") || l.contains(" files (") && l.ends_with(" blocks") || l.is_empty())
        })
        .filter(|l| !l.starts_with("e2fsck "))
        .count();
    assert!(
        out.status.success() && expected_lines == 0,
        "e2fsck -fn {}: {}\n{stdout}\n{stderr}",
        img.display(),
        out.status
    );
}

fn debugfs(img: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs {request}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn smallest_tree_is_clean() {
    if !tool("e2fsck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut t = Tree::new();
    t.file("/hello", b"hello, world\n");
    let t = t.sorted();
    write_image(&t, &opts(Size::Fixed(32 << 20)), &img);
    fsck_clean(&img);
    let cat = debugfs(&img, "cat /hello");
    assert_eq!(cat, "hello, world\n");
}

/// Every kind of node, odd modes and owners, xattrs in the inode and in a block, a large
/// directory and a multi-extent file.
fn rich_tree() -> Tree {
    let mut t = Tree::new();
    t.push("/bin", NodeKind::Dir, 0o755);
    t.push(
        "/bin/ping",
        NodeKind::File {
            size: 0,
            content: ContentId([0; 32]),
        },
        0o4755,
    );
    let (content, size) = t.contents.add(Source::Bytes(b"#!/bin/sh\necho ping\n".to_vec()));
    t.nodes.last_mut().unwrap().kind = NodeKind::File { size, content };
    t.nodes.last_mut().unwrap().xattrs.insert(
        "security.capability".into(),
        vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    t.push("/dev", NodeKind::Dir, 0o755);
    t.push("/dev/console", NodeKind::CharDev { major: 5, minor: 1 }, 0o600);
    t.push(
        "/dev/nvme0n1p300",
        NodeKind::BlockDev {
            major: 259,
            minor: 300,
        },
        0o660,
    )
    .gid = 6;
    t.push("/dev/sda", NodeKind::BlockDev { major: 8, minor: 0 }, 0o660);
    t.push("/etc", NodeKind::Dir, 0o755);
    t.file("/etc/hostname", b"beehive\n");
    t.push(
        "/etc/localtime",
        NodeKind::Symlink {
            target: "/usr/share/zoneinfo/UTC".into(),
        },
        0o777,
    );
    let long = format!("/{}", "very-long-directory-name/".repeat(8));
    t.push("/etc/long-link", NodeKind::Symlink { target: long }, 0o777);
    t.push("/home", NodeKind::Dir, 0o755);
    let n = t.push("/home/pi", NodeKind::Dir, 0o750);
    n.uid = 1000;
    n.gid = 1000;
    let n = t.file("/home/pi/notes.txt", b"owned by pi\n");
    n.uid = 1000;
    n.gid = 1000;
    n.xattrs.insert("user.small".into(), b"1".to_vec());
    n.xattrs.insert("user.big".into(), vec![b'x'; 3072]);
    n.xattrs.insert("trusted.t".into(), b"trusted value".to_vec());
    t.push(
        "/home/pi/notes.txt.link",
        NodeKind::HardLink {
            target: "/home/pi/notes.txt".into(),
        },
        0o644,
    );
    t.push("/many", NodeKind::Dir, 0o755);
    for i in 0..10_000 {
        t.file(&format!("/many/entry-{i:05}"), format!("{i}\n").as_bytes());
    }
    t.push("/run", NodeKind::Dir, 0o755);
    t.push("/run/initctl", NodeKind::Fifo, 0o600);
    t.push("/run/sock", NodeKind::Socket, 0o666);
    t.push("/tmp", NodeKind::Dir, 0o1777);
    t.push("/usr", NodeKind::Dir, 0o755);
    t.push(
        "/usr/empty",
        NodeKind::File {
            size: 0,
            content: ContentId([0; 32]),
        },
        0o644,
    );
    let (content, size) = t.contents.add(Source::Bytes(Vec::new()));
    t.nodes.last_mut().unwrap().kind = NodeKind::File { size, content };
    t.pattern("/usr/large", 40_000 * 4096 - 123, 997);
    t.push("/usr/sgid", NodeKind::Dir, 0o2775).gid = 50;
    t.sorted()
}

fn stat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("stat {path}"))
}

#[test]
fn rich_tree_is_clean_and_reads_back() {
    if !tool("e2fsck") || !tool("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let t = rich_tree();
    write_image(&t, &opts(Size::Fixed(256 << 20)), &img);
    fsck_clean(&img);

    let root = debugfs(&img, "ls -l /");
    for name in [
        "bin",
        "dev",
        "etc",
        "home",
        "lost+found",
        "many",
        "run",
        "tmp",
        "usr",
    ] {
        assert!(root.contains(&format!(" {name}")), "{name} missing from\n{root}");
    }
    let s = stat(&img, "/bin/ping");
    assert!(s.contains("Mode:  04755"), "{s}");
    let caps = debugfs(&img, "ea_list /bin/ping");
    assert!(caps.contains("security.capability"), "{caps}");

    let s = stat(&img, "/home/pi/notes.txt");
    assert!(s.contains("User:  1000   Group:  1000"), "{s}");
    assert!(s.contains("Links: 2"), "{s}");
    assert!(
        s.contains("File ACL: ") && !s.contains("File ACL: 0"),
        "xattr block missing: {s}"
    );
    let eas = debugfs(&img, "ea_list /home/pi/notes.txt");
    assert!(eas.contains("user.small (1) = \"1\""), "{eas}");
    assert!(eas.contains("user.big (3072)"), "{eas}");
    assert!(eas.contains("trusted.t (13)"), "{eas}");
    assert_eq!(
        stat(&img, "/home/pi/notes.txt.link").lines().next(),
        s.lines().next()
    );

    assert!(stat(&img, "/dev/console").contains("Device major/minor number: 05:01"));
    let s = stat(&img, "/dev/nvme0n1p300");
    assert!(s.contains("Device major/minor number: 259:300"), "{s}");
    assert!(stat(&img, "/run/initctl").contains("Type: FIFO"));
    assert!(stat(&img, "/run/sock").contains("Type: socket"));
    assert!(stat(&img, "/tmp").contains("Mode:  01777"));
    assert!(stat(&img, "/usr/sgid").contains("Mode:  02775"));
    let s = stat(&img, "/etc/localtime");
    assert!(s.contains("Fast link dest: \"/usr/share/zoneinfo/UTC\""), "{s}");
    let s = stat(&img, "/etc/long-link");
    assert!(s.contains("EXTENTS"), "{s}");

    assert_eq!(debugfs(&img, "cat /etc/hostname"), "beehive\n");
    assert_eq!(debugfs(&img, "cat /many/entry-09999"), "9999\n");
    let many = debugfs(&img, "ls /many");
    assert_eq!(many.matches("entry-").count(), 10_000);

    // The 40,000-block file spans two extents (at most 32768 blocks each) or more.
    let s = stat(&img, "/usr/large");
    assert!(s.contains("Size: 163839877"), "{s}");
    let dumped = dir.path().join("large");
    debugfs(&img, &format!("dump /usr/large {}", dumped.display()));
    let mut expect = Vec::new();
    SourceReader {
        src: Source::Pattern {
            size: 40_000 * 4096 - 123,
            every: 997,
        },
        at: 0,
    }
    .read_to_end(&mut expect)
    .unwrap();
    assert!(std::fs::read(&dumped).unwrap() == expect, "/usr/large differs");
}

/// A small tree for the size and determinism tests.
fn small_tree() -> Tree {
    let mut t = Tree::new();
    t.push("/etc", NodeKind::Dir, 0o755);
    t.file("/etc/hostname", b"beehive\n")
        .xattrs
        .insert("user.k".into(), b"v".to_vec());
    t.push("/var", NodeKind::Dir, 0o755);
    t.pattern("/var/blob", 3 << 20, 3);
    t.push(
        "/var/link",
        NodeKind::Symlink {
            target: "blob".into(),
        },
        0o777,
    );
    t.sorted()
}

fn blake3_file(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&std::fs::read(path).unwrap());
    h.finalize().to_hex().to_string()
}

#[test]
fn same_input_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let t = small_tree();
    write_image(&t, &opts(Size::Fixed(32 << 20)), &a);
    write_image(&t, &opts(Size::Fixed(32 << 20)), &b);
    let digest = blake3_file(&a);
    assert_eq!(digest, blake3_file(&b));
    // Pinned: any change to the on-disk result must be deliberate.
    assert_eq!(
        digest,
        "a9b93205add588fd77ec52d573a4cf35207047e617697350d37cc73ae1f5b739"
    );
}

#[test]
fn resize2fs_grows_a_written_image() {
    if !tool("e2fsck") || !tool("resize2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let t = small_tree();
    write_image(&t, &opts(Size::Fixed(64 << 20)), &img);
    fsck_clean(&img);
    // Grow from one partial group to several, across backup-superblock groups 1 and 3.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let out = Command::new("resize2fs").arg("-f").arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "resize2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fsck_clean(&img);
    let s = debugfs(&img, "stats");
    assert!(s.contains("Block count:              131072"), "{s}");
    assert_eq!(debugfs(&img, "cat /etc/hostname"), "beehive\n");
}

/// The free counts `dumpe2fs -h` prints for the superblock at `superblock` (0: primary).
fn dumpe2fs_free(img: &Path, superblock: u64) -> (String, String) {
    let mut cmd = Command::new("dumpe2fs");
    cmd.arg("-h");
    if superblock != 0 {
        cmd.args(["-o", &format!("superblock={superblock}"), "-o", "blocksize=4096"]);
    }
    let out = cmd.arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "dumpe2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{name}` in dumpe2fs -h:\n{text}"))
    };
    (field("Free blocks:"), field("Free inodes:"))
}

/// Superblock and GDT copies are the empty filesystem's, as `mke2fs` leaves them: the same
/// bytes whatever the tree, so they depend on the size alone. `e2fsck -b` still recovers
/// the filesystem from them, as it does one filled after `mke2fs`.
#[test]
fn backups_are_the_empty_filesystems() {
    if !tool("e2fsck") || !tool("dumpe2fs") || !tool("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (full, empty) = (dir.path().join("full"), dir.path().join("empty"));
    // 512 MiB: four groups, copies in groups 1 and 3.
    let o = opts(Size::Fixed(512 << 20));
    write_image(&small_tree(), &o, &full);
    write_image(&Tree::new().sorted(), &o, &empty);
    fsck_clean(&full);
    fsck_clean(&empty);

    let (a, b) = (std::fs::read(&full).unwrap(), std::fs::read(&empty).unwrap());
    for grp in [1u64, 3] {
        // The superblock copy and the descriptor block after it.
        let at = (grp * BLOCKS_PER_GROUP * BLOCK_SIZE) as usize;
        let end = at + 2 * BLOCK_SIZE as usize;
        assert!(
            a[at..end] == b[at..end],
            "copy in group {grp} depends on the tree"
        );
    }
    assert!(
        a[1024..2048] != b[1024..2048],
        "the primary must carry the real counts"
    );
    assert_eq!(dumpe2fs_free(&full, 32768), dumpe2fs_free(&empty, 0));
    assert_ne!(dumpe2fs_free(&full, 0), dumpe2fs_free(&empty, 0));

    // From the copy in group 1, `e2fsck -n` sees only what `mke2fs` followed by a mount
    // leaves: summary counts and bitmap checksums that differ from the copy's.
    let out = Command::new("e2fsck")
        .args(["-fn", "-b", "32768", "-B", "4096"])
        .arg(&full)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "e2fsck -fn -b 32768:\n{stdout}");
    let allowed = [
        "Pass ",
        "Free blocks count wrong",
        "Free inodes count wrong",
        "Directories count wrong",
        "Fix? no",
        "Inode bitmap differences:",
        "Block bitmap differences:",
        "IGNORED.",
        "WARNING: Filesystem still has errors",
        "e2fsck ",
    ];
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let ok = allowed.iter().any(|a| line.contains(a))
            || line.ends_with("bitmap does not match checksum.")
            || line.contains(" files (") && line.ends_with(" blocks");
        assert!(ok, "e2fsck -fn -b 32768: unexpected `{line}`\n{stdout}");
    }
    // Repaired from the copy, the filesystem is clean and whole.
    let out = Command::new("e2fsck")
        .args(["-fy", "-b", "32768", "-B", "4096"])
        .arg(&full)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -fy -b 32768: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    fsck_clean(&full);
    assert_eq!(debugfs(&full, "cat /etc/hostname"), "beehive\n");
}

#[test]
fn fit_holds_content_plus_headroom() {
    if !tool("e2fsck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let t = small_tree();
    let r = write_image(
        &t,
        &opts(Size::Fit {
            headroom_bytes: 16 << 20,
            headroom_percent: 10,
        }),
        &img,
    );
    fsck_clean(&img);
    assert!((r.free_blocks - r.reserved_blocks) * 4096 >= 16 << 20, "{r:?}");
    // And not wastefully more: the journal (4 MiB) and metadata are the rest.
    assert!(r.image_bytes < 40 << 20, "{r:?}");
    // Too small a fixed size is an error naming the need.
    let err = write_ext4(
        &mut std::io::Cursor::new(Vec::new()),
        &t.nodes,
        &t.contents,
        &opts(Size::Fixed(4 << 20)),
    );
    assert!(matches!(err, Err(Ext4WriteError::TooSmall { .. })), "{err:?}");
}

/// A file over 4 GiB (`large_file`, `i_size_high`, 33 extents behind an index block),
/// from a lazy source, into a sparse image.
#[test]
fn file_over_4_gib() {
    if !tool("e2fsck") || !tool("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let mut t = Tree::new();
    let size = (4u64 << 30) + 4097;
    t.pattern("/big", size, 65536);
    let t = t.sorted();
    let r = write_image(
        &t,
        &opts(Size::Fit {
            headroom_bytes: 0,
            headroom_percent: 0,
        }),
        &img,
    );
    assert!(r.image_bytes > size, "{r:?}");
    fsck_clean(&img);
    let s = stat(&img, "/big");
    assert!(s.contains(&format!("Size: {size}")), "{s}");
    assert!(s.contains("(ETB0):"), "no extent leaf block: {s}");
    // The last block has data (block 1048577 % 65536 != 0 → zero) — check a data block:
    // logical block 65536·16 = 1048576 holds the pattern.
    let phys: u64 = debugfs(&img, "bmap /big 1048576").trim().parse().unwrap();
    let mut f = std::fs::File::open(&img).unwrap();
    let mut got = vec![0u8; 4096];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(phys * 4096)).unwrap();
    f.read_exact(&mut got).unwrap();
    let mut expect = vec![0u8; 4096];
    let mut src = SourceReader {
        src: Source::Pattern { size, every: 65536 },
        at: 1048576 * 4096,
    };
    src.read_exact(&mut expect).unwrap();
    assert!(got == expect);
    // Sparse: the image occupies far less disk than its length.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&img).unwrap().blocks() * 512 < 256 << 20);
    }
}

/// The sibling reader gives back what the writer was given: every node with its kind,
/// mode, owner, time, xattrs and bytes (files by size and content).
#[test]
fn reader_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let t = rich_tree();
    let r = write_image(&t, &opts(Size::Fixed(256 << 20)), &img);
    let fs = crate::formats::ext4::Ext4::open(std::fs::File::open(&img).unwrap(), 0, r.image_bytes).unwrap();
    let back = fs.nodes().unwrap();
    let by_path: BTreeMap<&str, &Node> = back.iter().map(|n| (n.path.as_str(), n)).collect();
    assert!(by_path.contains_key("/lost+found"));
    for n in &t.nodes {
        let b = by_path
            .get(n.path.as_str())
            .unwrap_or_else(|| panic!("{} not read back", n.path));
        // A hard link is a second name of its target's inode: its own attributes are moot.
        if !matches!(n.kind, NodeKind::HardLink { .. }) {
            assert_eq!(
                (b.mode, b.uid, b.gid, b.mtime),
                (n.mode, n.uid, n.gid, n.mtime),
                "{}",
                n.path
            );
            assert_eq!(b.xattrs, n.xattrs, "{}", n.path);
        }
        match (&n.kind, &b.kind) {
            (
                NodeKind::File { size, content },
                NodeKind::File {
                    size: bsize,
                    content: bc,
                },
            ) => {
                assert_eq!(size, bsize, "{}", n.path);
                if *size < 1 << 20 {
                    let mut want = Vec::new();
                    t.contents.open(content).unwrap().read_to_end(&mut want).unwrap();
                    let mut got = Vec::new();
                    fs.open(bc).unwrap().read_to_end(&mut got).unwrap();
                    assert!(want == got, "{} content differs", n.path);
                }
            }
            (a, b) => assert_eq!(a, b, "{}", n.path),
        }
    }
    assert_eq!(back.len(), t.nodes.len() + 1);
}

fn write_err(t: &Tree) -> Ext4WriteError {
    write_ext4(
        &mut std::io::Cursor::new(Vec::new()),
        &t.nodes,
        &t.contents,
        &opts(Size::Fixed(32 << 20)),
    )
    .expect_err("the tree is invalid")
}

#[test]
fn invalid_trees_are_errors() {
    let mut t = Tree::new();
    t.file("/a/b", b"orphan");
    assert!(matches!(write_err(&t), Ext4WriteError::InvalidNode { ref path, .. } if path == "/a/b"));

    let mut t = Tree::new();
    t.push("/d", NodeKind::Dir, 0o755);
    t.push("/l", NodeKind::HardLink { target: "/d".into() }, 0o644);
    assert!(matches!(write_err(&t), Ext4WriteError::InvalidNode { ref path, .. } if path == "/l"));

    let mut t = Tree::new();
    t.file("/x", b"").xattrs.insert("os2.name".into(), b"v".to_vec());
    assert!(matches!(write_err(&t), Ext4WriteError::InvalidNode { .. }));

    let mut t = Tree::new();
    t.file("/x", b"").xattrs.insert("user.huge".into(), vec![0; 5000]);
    assert!(matches!(write_err(&t), Ext4WriteError::Unsupported { .. }));

    let mut t = Tree::new();
    t.file("/lost+found", b"not a dir");
    assert!(matches!(write_err(&t), Ext4WriteError::InvalidNode { .. }));

    let mut t = Tree::new();
    t.file("/x", b"");
    t.file("/x", b"");
    assert!(matches!(write_err(&t), Ext4WriteError::InvalidNode { .. }));

    // Content shorter than the node says.
    let mut t = Tree::new();
    let (content, _) = t.contents.add(Source::Bytes(b"abc".to_vec()));
    t.push("/short", NodeKind::File { size: 10, content }, 0o644);
    assert!(matches!(
        write_err(&t),
        Ext4WriteError::ContentSize { expected: 10, .. }
    ));
    // And longer.
    let mut t = Tree::new();
    let (content, _) = t.contents.add(Source::Bytes(b"abcdef".to_vec()));
    t.push("/long", NodeKind::File { size: 2, content }, 0o644);
    assert!(matches!(
        write_err(&t),
        Ext4WriteError::ContentSize { expected: 2, .. }
    ));
}

/// A root filesystem's shape in small: 4,000-odd files in 40 directories, mostly small,
/// some of tens of KiB, a few of 1–2 MiB and three large ones (5, 12 and 30 MiB), one hard
/// link and slow and fast symlinks. In 256 MiB the data bins are about 70 % full (the
/// test prints the figure). `edit` changes it before it is sorted.
fn realistic_tree(edit: impl FnOnce(&mut Tree)) -> Tree {
    let mut t = Tree::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let dirs: Vec<String> = [
        "/etc",
        "/etc/default",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/share",
        "/usr/share/doc",
        "/var",
        "/var/lib",
    ]
    .iter()
    .map(|d| d.to_string())
    .chain((0..31).map(|i| format!("/usr/share/doc/pkg-{i:02}")))
    .collect();
    for d in &dirs {
        t.push(d, NodeKind::Dir, 0o755);
    }
    for i in 0..4000u64 {
        let dir = &dirs[(next() % dirs.len() as u64) as usize];
        let r = next() % 100;
        let size = match r {
            0..=59 => 1 + next() % 4096,
            60..=98 => 4096 + next() % (60 << 10),
            _ => (1 << 20) + next() % (1 << 20),
        };
        let path = format!("{dir}/file-{i:04}");
        if size < 64 << 10 {
            let bytes: Vec<u8> = (0..size).map(|_| next() as u8).collect();
            t.file(&path, &bytes);
        } else {
            t.pattern(&path, size, 1 + i % 3);
        }
    }
    t.file("/etc/motd", b"Welcome to the beehive.\n");
    for (name, mib) in [("big-a", 5u64), ("big-b", 12), ("big-c", 30)] {
        t.pattern(&format!("/usr/lib/{name}"), (mib << 20) - 1000, 2);
    }
    t.push(
        "/usr/share/doc/pkg-03/big-link",
        NodeKind::HardLink {
            target: "/usr/lib/big-a".into(),
        },
        0o644,
    );
    t.push(
        "/etc/localtime",
        NodeKind::Symlink {
            target: "/usr/share/zoneinfo/UTC".into(),
        },
        0o777,
    );
    t.push(
        "/etc/long-link",
        NodeKind::Symlink {
            target: format!("/{}", "a-long-directory-name/".repeat(5)),
        },
        0o777,
    );
    edit(&mut t);
    t.sorted()
}

/// One change of the locality test: what, how, and the most chunks it may touch.
type Change<'a> = (&'static str, Box<dyn FnOnce(&mut Tree) + 'a>, Option<usize>);

/// The image size of the locality test.
const LOCALITY_MIB: u64 = 256;

/// The 1 MiB chunks in which two images of the same length differ.
fn differing_chunks(a: &Path, b: &Path) -> Vec<u64> {
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "the images differ in size"
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut out = Vec::new();
    for chunk in 0.. {
        let n = read_full(&mut fa, &mut ba).unwrap();
        read_full(&mut fb, &mut bb).unwrap();
        if n == 0 {
            break;
        }
        if ba[..n] != bb[..n] {
            out.push(chunk);
        }
    }
    out
}

/// One change to the realistic tree touches only the chunks that hold what changed and
/// the metadata that describes it (the design's targets: 1 chunk for a same-size edit,
/// at most 2 within the block count, at most 6 for a new or removed file). The counts are
/// printed (`--nocapture`) and recorded in `docs/performance.md`, "Stable layout".
#[test]
fn one_change_touches_few_chunks() {
    if !tool("e2fsck") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Size::Fixed(LOCALITY_MIB << 20));
    let base = dir.path().join("base");
    let r = write_image(&realistic_tree(|_| {}), &o, &base);
    fsck_clean(&base);
    println!(
        "realistic tree: {} MiB image, data bins {} % full",
        r.image_bytes >> 20,
        r.data_load_percent()
    );
    let set = |t: &mut Tree, path: &str, bytes: &[u8]| {
        let (content, size) = t.contents.add(Source::Bytes(bytes.to_vec()));
        let n = t.nodes.iter_mut().find(|n| n.path == path).unwrap();
        n.kind = NodeKind::File { size, content };
    };
    let changes: Vec<Change<'_>> = vec![
        (
            "/etc/motd: new content, same size",
            Box::new(|t| set(t, "/etc/motd", b"Welcome to the hornets.\n")),
            Some(1),
        ),
        (
            "/etc/motd: new size, same block count",
            Box::new(|t| set(t, "/etc/motd", b"Welcome to the beehive, friend.\n")),
            Some(2),
        ),
        (
            "new small file /etc/hostname",
            Box::new(|t| {
                t.file("/etc/hostname", b"beehive\n");
            }),
            Some(6),
        ),
        (
            "file removed: /usr/share/doc/pkg-07's first",
            Box::new(|t| {
                let at = t
                    .nodes
                    .iter()
                    .position(|n| n.path.starts_with("/usr/share/doc/pkg-07/file-"))
                    .unwrap();
                t.nodes.remove(at);
            }),
            Some(6),
        ),
        (
            "/usr/lib/big-b grown by 1 MiB",
            Box::new(|t| {
                let (content, size) = t.contents.add(Source::Pattern {
                    size: (13 << 20) - 1000,
                    every: 2,
                });
                let n = t.nodes.iter_mut().find(|n| n.path == "/usr/lib/big-b").unwrap();
                n.kind = NodeKind::File { size, content };
            }),
            None,
        ),
    ];
    let img = dir.path().join("changed");
    let mut failed = Vec::new();
    for (what, edit, limit) in changes {
        write_image(&realistic_tree(edit), &o, &img);
        fsck_clean(&img);
        let diff = differing_chunks(&base, &img);
        println!("{what}: {} differing 1 MiB chunks {diff:?}", diff.len());
        if limit.is_some_and(|l| diff.len() > l) || diff.is_empty() {
            failed.push(format!("{what}: {diff:?}"));
        }
    }
    assert!(failed.is_empty(), "too many chunks changed: {failed:#?}");
}

/// The same set of nodes in another order (parents still before children) gives the
/// same image, byte for byte: the layout depends on the set, not on the walk.
#[test]
fn input_order_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(Size::Fixed(256 << 20));
    let t = realistic_tree(|_| {});
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_image(&t, &o, &a);
    let mut shuffled = realistic_tree(|_| {});
    // Reverse, then stable-sort by depth: parents first, siblings and cousins reversed.
    let root = shuffled.nodes.remove(0);
    shuffled.nodes.reverse();
    shuffled.nodes.sort_by_key(|n| n.path.matches('/').count());
    shuffled.nodes.insert(0, root);
    assert_ne!(
        shuffled.nodes.iter().map(|n| &n.path).collect::<Vec<_>>(),
        t.nodes.iter().map(|n| &n.path).collect::<Vec<_>>()
    );
    write_image(&shuffled, &o, &b);
    assert!(
        differing_chunks(&a, &b).is_empty(),
        "the input order changed the image"
    );
}

/// `debugfs` reads every file of the realistic tree back byte for byte.
#[test]
fn debugfs_reads_every_file_back() {
    if !tool("e2fsck") || !tool("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let t = realistic_tree(|_| {});
    write_image(&t, &opts(Size::Fixed(256 << 20)), &img);
    fsck_clean(&img);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    debugfs(&img, &format!("rdump / {}", out.display()));
    let mut checked = 0;
    for n in &t.nodes {
        let NodeKind::File { content, .. } = &n.kind else {
            continue;
        };
        let mut want = Vec::new();
        t.contents.open(content).unwrap().read_to_end(&mut want).unwrap();
        let got = std::fs::read(out.join(&n.path[1..])).unwrap();
        assert!(got == want, "{} differs", n.path);
        checked += 1;
    }
    assert!(checked > 4000, "{checked}");
}

/// What `write_chunks` handed over: per chunk its kind (`d`ata, `z`ero, `r`eused) and the
/// BLAKE3 of its bytes (zeros for a reused chunk, as `write` leaves it a hole).
#[derive(Default)]
struct Collected {
    chunks: Vec<(char, [u8; 32])>,
    /// Buffers asked for and handed back, as the store's sink reuses them.
    spare: Vec<Vec<u8>>,
}

impl ChunkOut for Collected {
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        // Dirty on purpose: a buffer must come back zeroed.
        b.clear();
        b.resize(len, 0);
        b
    }

    fn chunk(&mut self, chunk: u64, body: ChunkBody) -> io::Result<()> {
        assert_eq!(chunk, self.chunks.len() as u64, "chunks come in order");
        let zeros = |len: u64| *blake3::hash(&vec![0u8; len as usize]).as_bytes();
        self.chunks.push(match body {
            ChunkBody::Data(b) => {
                let d = *blake3::hash(&b).as_bytes();
                let mut b = b;
                b.fill(0xA5);
                self.spare.push(b);
                ('d', d)
            }
            ChunkBody::Zero { len } => ('z', zeros(len)),
            ChunkBody::Reused { len, .. } => ('r', zeros(len)),
        });
        Ok(())
    }
}

/// Writes `tree` both ways — to a file as `write_ext4_reusing` does, and chunk by chunk —
/// with the same chunks reused, and checks that every chunk has the same bytes. Returns
/// the kinds of the chunks.
fn both_ways(tree: &Tree, o: &Ext4Options, reuse: fn(&[u8; 32]) -> bool) -> String {
    let mib = 1u64 << 20;
    let file = tempfile::tempfile().unwrap();
    let mut f = &file;
    let mut old_reuse = |k: &[u8; 32]| reuse(k);
    let (old_report, old_data) = write_ext4_reusing(
        &mut f,
        &tree.nodes,
        &tree.contents,
        o,
        Some((mib, &mut old_reuse)),
    )
    .unwrap();
    let mut new_reuse = |k: &[u8; 32]| reuse(k);
    let prepared = prepare_ext4(&tree.nodes, o, Some((mib, &mut new_reuse))).unwrap();
    assert_eq!(prepared.report(), &old_report);
    let mut out = Collected::default();
    let (report, data) = prepared.write_chunks(&mut out, &tree.contents).unwrap();
    assert_eq!((report, &data), (old_report.clone(), &old_data));
    assert_eq!(file.metadata().unwrap().len(), old_report.image_bytes);
    assert_eq!(out.chunks.len() as u64, old_report.image_bytes.div_ceil(mib));
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut buf = vec![0u8; mib as usize];
    let mut kinds = String::new();
    for (c, (kind, digest)) in out.chunks.iter().enumerate() {
        let c = c as u64;
        let n = read_full(&mut f, &mut buf).unwrap();
        assert_eq!(
            *blake3::hash(&buf[..n]).as_bytes(),
            *digest,
            "chunk {c} ({kind}) differs"
        );
        let expected = match (data.reused.contains(&c), data.recipes.contains_key(&c)) {
            (true, _) => 'r',
            (false, true) => 'd',
            (false, false) => 'z',
        };
        assert_eq!(*kind, expected, "chunk {c}");
        kinds.push(*kind);
    }
    kinds
}

fn reuse_none(_: &[u8; 32]) -> bool {
    false
}

/// About a third of the chunks, by their recipe.
fn reuse_some(k: &[u8; 32]) -> bool {
    k[0].is_multiple_of(3)
}

#[test]
fn chunk_by_chunk_is_byte_for_byte_the_written_image() {
    // Empty: the metadata alone.
    let kinds = both_ways(&Tree::new(), &opts(Size::Fixed(32 << 20)), reuse_none);
    assert!(kinds.contains('z') && kinds.contains('d'), "{kinds}");
    assert!(!kinds.contains('r'));
    // Every kind of node, 10,000 small files, xattr blocks, a multi-extent file, empty
    // files; then with chunks reused (files partly in them are read past them).
    let rich = rich_tree();
    both_ways(&rich, &opts(Size::Fixed(256 << 20)), reuse_none);
    let kinds = both_ways(&rich, &opts(Size::Fixed(256 << 20)), reuse_some);
    assert!(kinds.contains('r') && kinds.contains('d'), "{kinds}");
    // Files across chunk edges, large ones in whole-bin pieces, at about 70 % load.
    let realistic = realistic_tree(|_| {});
    both_ways(&realistic, &opts(Size::Fixed(LOCALITY_MIB << 20)), reuse_none);
    both_ways(&realistic, &opts(Size::Fixed(LOCALITY_MIB << 20)), reuse_some);
    // Every chunk reused: nothing rendered, no file read.
    let kinds = both_ways(&realistic, &opts(Size::Fixed(LOCALITY_MIB << 20)), |_| true);
    assert!(!kinds.contains('d'), "{kinds}");
}

/// A file whose blocks do not ascend with its logical blocks (its pieces wrapped round the
/// end of the image) is read again from its start: the bytes are still the written ones.
#[test]
fn chunk_by_chunk_rereads_a_file_whose_pieces_wrap() {
    let o = opts(Size::Fixed(48 << 20));
    let mut wrapped = None;
    for i in 0..40 {
        let mut t = Tree::new();
        t.file("/a", b"small");
        t.pattern(&format!("/big-{i}"), (30 << 20) + 5000, 3);
        let t = t.sorted();
        let p = prepare_ext4(&t.nodes, &o, Some((1 << 20, &mut |_: &[u8; 32]| false))).unwrap();
        let descends = p.layout.placements.iter().any(|pl| {
            let starts: Vec<u64> = pl.extents.iter().map(|e| e.start).collect();
            starts.windows(2).any(|w| w[1] < w[0])
        });
        if descends {
            wrapped = Some(t);
            break;
        }
    }
    let t = wrapped.expect("some name homes a 30 MiB file near the end of a 48 MiB image");
    both_ways(&t, &o, reuse_none);
    both_ways(&t, &o, reuse_some);
}

/// Content shorter or longer than its node says fails chunk by chunk too, whichever chunk
/// the file ends in.
#[test]
fn chunk_by_chunk_checks_every_files_length() {
    for (declared, actual) in [(3 << 20, (3 << 20) - 1), (5000, 5001), (0, 1)] {
        let mut t = Tree::new();
        let (content, _) = t.contents.add(Source::Bytes(vec![7; actual]));
        t.push(
            "/f",
            NodeKind::File {
                size: declared,
                content,
            },
            0o644,
        );
        let p = prepare_ext4(
            &t.nodes,
            &opts(Size::Fixed(32 << 20)),
            Some((1 << 20, &mut |_: &[u8; 32]| false)),
        )
        .unwrap();
        let err = p
            .write_chunks(&mut Collected::default(), &t.contents)
            .unwrap_err();
        assert!(
            matches!(err, Ext4WriteError::ContentSize { ref path, .. } if path == "/f"),
            "{declared}/{actual}: {err:?}"
        );
    }
}
