//! Oracle tests: filesystems made by `mke2fs -d` from a source tree built here are read
//! back and compared node by node with the source (std::fs, Python for xattrs) and with
//! `debugfs`; mutated images must give errors, never panics or hangs.
#![allow(clippy::disallowed_methods)] // spawning the oracle tools and reading `CI`

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::spec::inode_flags;
use super::{Ext4, Ext4Error};
use crate::formats::fs::{Contents, Node, NodeKind};

const UUID: &str = "11111111-2222-3333-4444-555555555555";
const HASH_SEED: &str = "01234567-89ab-cdef-0123-456789abcdef";

use crate::oracle::have;

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("oracle tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).expect("write source file");
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The Raspberry-Pi-OS-like source tree every fixture is made from.
fn make_source(src: &Path, big_dir: bool, big_xattr: usize) {
    let p = |rel: &str| src.join(rel);
    for d in ["bin", "etc", "tmp", "usr/share/doc", "dev", "big"] {
        fs::create_dir_all(p(d)).expect("mkdir");
    }
    write(&p("etc/hostname"), b"hive-north\n");
    write(&p("bin/ping"), &pseudo_random(9000, 1));
    write(&p("bin/su"), b"#!/bin/sh\n");
    fs::set_permissions(p("bin/su"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    write(&p("bin/wall"), b"wall");
    fs::set_permissions(p("bin/wall"), fs::Permissions::from_mode(0o2755)).expect("chmod");
    fs::set_permissions(p("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::hard_link(p("etc/hostname"), p("usr/share/doc/hostname-link")).expect("link");
    fs::hard_link(p("etc/hostname"), p("bin/zz-hostname")).expect("link");
    std::os::unix::fs::symlink("../etc/hostname", p("bin/short-link")).expect("symlink");
    let long = format!("/usr/share/doc/{}", "a-very-long-directory-name/".repeat(4));
    std::os::unix::fs::symlink(&long, p("usr/long-link")).expect("symlink");
    // A multi-extent file: data every 256 KiB with holes between (more than 4 extents, so
    // the tree needs a leaf block), and a sparse file with data only in the middle.
    let mut f = fs::File::create(p("usr/fragmented")).expect("create");
    for i in 0..8u64 {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(i * 262_144)).expect("seek");
        f.write_all(&pseudo_random(5000, i + 10)).expect("write");
    }
    drop(f);
    let f = fs::File::create(p("usr/sparse")).expect("create");
    f.set_len(10 << 20).expect("truncate");
    drop(f);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(p("usr/sparse"))
        .expect("open");
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(5 << 20)).expect("seek");
    f.write_all(b"middle of nowhere").expect("write");
    drop(f);
    write(&p("usr/big-contiguous"), &pseudo_random(300_000, 3));
    let _sock = std::os::unix::net::UnixListener::bind(p("tmp/socket")).expect("socket");
    run(Command::new("mknod").arg(p("tmp/fifo")).arg("p"));
    if is_root() {
        run(Command::new("mknod").arg(p("dev/null")).args(["c", "1", "3"]));
        run(Command::new("mknod").arg(p("dev/sda1")).args(["b", "8", "1"]));
        run(Command::new("mknod")
            .arg(p("dev/big"))
            .args(["c", "259", "70000"]));
        std::os::unix::fs::chown(p("etc/hostname"), Some(1000), Some(1000)).expect("chown");
        std::os::unix::fs::chown(p("bin/wall"), Some(100_000), Some(200_005)).expect("chown");
    } else {
        eprintln!("not root: no device nodes or owners in the fixture");
    }
    if big_dir {
        for i in 0..10_000 {
            write(&p(&format!("big/entry-{i:05}")), b"");
        }
    }
    run(Command::new("touch")
        .args(["-h", "-d", "@1700000000"])
        .arg(p("bin/short-link")));
    run(Command::new("touch")
        .args(["-d", "@1600000000"])
        .arg(p("etc/hostname")));
    // xattrs: capability (setcap if present), user.* small and large (block), an ACL.
    // setcap may be missing or refused; the script below then sets the attribute itself.
    let _ = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(p("bin/ping"))
        .output();
    let py = r#"
import os, sys
src = sys.argv[1]
if not any(n == "security.capability" for n in os.listxattr(src + "/bin/ping")):
    os.setxattr(src + "/bin/ping", "security.capability", bytes.fromhex("0100000201000000000000000000000000000000")[:20])
os.setxattr(src + "/etc/hostname", "user.small", b"v")
os.setxattr(src + "/usr/sparse", "user.big", b"x" * int(sys.argv[2]))
os.setxattr(src + "/usr", "user.dir", b"on a directory")
acl = bytes.fromhex("02000000" "01000600ffffffff" "02000400e8030000" "04000400ffffffff" "10000400ffffffff" "20000000ffffffff")
os.setxattr(src + "/bin/su", "system.posix_acl_access", acl)
"#;
    run(Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(src)
        .arg(big_xattr.to_string()));
}

fn mkfs(src: &Path, img: &Path, args: &[&str], size: &str) {
    run(Command::new("mke2fs")
        .arg("-q")
        .args(args)
        .arg("-d")
        .arg(src)
        .arg(img)
        .arg(size)
        .env("E2FSPROGS_FAKE_TIME", "1700000000"));
}

const EXT4_ARGS: &[&str] = &[
    "-t",
    "ext4",
    "-b",
    "4096",
    "-N",
    "12000",
    "-O",
    "metadata_csum,64bit,extent,flex_bg,huge_file,dir_nlink,extra_isize",
    "-U",
    UUID,
    "-E",
    "root_owner=0:0,hash_seed=01234567-89ab-cdef-0123-456789abcdef",
];

/// The source's view of every node, in walk order, plus xattrs from Python.
fn expected(src: &Path) -> Vec<(Node, Option<[u8; 32]>)> {
    let json = run(Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import os, sys, json
root = sys.argv[1]; out = {}
for d, dirs, files in os.walk(root):
    for n in [""] + dirs + files:
        p = os.path.join(d, n) if n else d
        rel = "/" + os.path.relpath(p, root) if p != root else "/"
        out[rel] = {k: os.getxattr(p, k, follow_symlinks=False).hex() for k in os.listxattr(p, follow_symlinks=False)}
print(json.dumps(out))
"#,
        )
        .arg(src));
    let xattrs: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&json).expect("python json");
    let mut out = Vec::new();
    let mut first: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![("/".to_string(), src.to_path_buf())];
    while let Some((path, real)) = stack.pop() {
        let m = fs::symlink_metadata(&real).expect("stat");
        let ft = m.file_type();
        let rdev = m.rdev();
        let (major, minor) = (
            ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
            (rdev & 0xff) | ((rdev >> 12) & !0xff),
        );
        let mut hash = None;
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink {
                target: fs::read_link(&real)
                    .expect("readlink")
                    .to_str()
                    .expect("utf8")
                    .to_string(),
            }
        } else if ft.is_file() {
            match first.get(&(m.dev(), m.ino())) {
                Some(t) => NodeKind::HardLink { target: t.clone() },
                None => {
                    first.insert((m.dev(), m.ino()), path.clone());
                    hash = Some(*blake3::hash(&fs::read(&real).expect("read")).as_bytes());
                    NodeKind::File {
                        size: m.len(),
                        content: super::content_id(0),
                    }
                }
            }
        } else if ft.is_char_device() {
            NodeKind::CharDev {
                major: major as u32,
                minor: minor as u32,
            }
        } else if ft.is_block_device() {
            NodeKind::BlockDev {
                major: major as u32,
                minor: minor as u32,
            }
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Socket
        };
        let xa = if matches!(kind, NodeKind::HardLink { .. }) {
            BTreeMap::new()
        } else {
            xattrs[&path]
                .iter()
                .map(|(k, v)| (k.clone(), hex::decode(v).expect("hex")))
                .collect()
        };
        let node = Node {
            path: path.clone(),
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            xattrs: xa,
        };
        if ft.is_dir() {
            let mut kids: Vec<_> = fs::read_dir(&real)
                .expect("readdir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            kids.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for k in kids.into_iter().rev() {
                let name = k.to_str().expect("utf8").to_string();
                let child = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                stack.push((child, real.join(&k)));
            }
        }
        out.push((node, hash));
    }
    out
}

/// Compares the image's nodes with the source tree and the file contents with BLAKE3.
fn compare(fs: &Ext4<fs::File>, src: &Path) {
    let got: Vec<_> = fs
        .walk()
        .expect("walk")
        .into_iter()
        .filter(|e| !e.node.path.starts_with("/lost+found"))
        .collect();
    let want = expected(src);
    let got_paths: Vec<_> = got.iter().map(|e| e.node.path.as_str()).collect();
    let want_paths: Vec<_> = want.iter().map(|(n, _)| n.path.as_str()).collect();
    assert_eq!(got_paths, want_paths, "walk order");
    for (g, (w, hash)) in got.iter().zip(&want) {
        let mut g_node = g.node.clone();
        if let NodeKind::File { content, .. } = &mut g_node.kind {
            assert_eq!(super::content_inode(content), Some(g.ino));
            *content = super::content_id(0);
        }
        if w.path == "/" {
            // mke2fs -d keeps its own root mode/time; only the kind matters here.
            assert_eq!(g_node.kind, NodeKind::Dir);
            continue;
        }
        assert_eq!(&g_node, w, "node {}", w.path);
        if let Some(hash) = hash {
            let mut r = fs.open_file(g.ino).expect("open");
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut r, &mut h).expect("read file");
            assert_eq!(h.finalize().as_bytes(), hash, "content of {}", w.path);
            // The same bytes through the `Contents` trait and by path.
            let mut via_contents = Vec::new();
            if let NodeKind::File { content, .. } = &g.node.kind {
                fs.open(content)
                    .expect("contents")
                    .read_to_end(&mut via_contents)
                    .expect("read");
            }
            assert_eq!(blake3::hash(&via_contents).as_bytes(), hash);
            if !w.path.starts_with("/big/") || w.path.ends_with("09999") {
                // By path too (not for every name of the big directory: each lookup reads it).
                assert_eq!(
                    fs.open_file(w.path.as_str()).expect("by path").size(),
                    via_contents.len() as u64
                );
            }
        }
    }
}

/// `debugfs -R 'ls -l /'`: inode, mode, uid, gid and size of each entry of `/` agree.
fn compare_debugfs(fs: &Ext4<fs::File>, img: &Path) {
    let out = run(Command::new("debugfs").arg("-R").arg("ls -l /").arg(img));
    let mut n = 0;
    for line in out.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [ino, mode, _ft, uid, gid, size, _date, _time, name] = cols[..] else {
            continue;
        };
        let ino: u32 = ino.parse().expect("ino");
        let inode = fs.inode(ino).expect("inode");
        assert_eq!(format!("{:o}", inode.i_mode), mode, "{name}");
        assert_eq!(inode.uid().to_string(), uid, "{name}");
        assert_eq!(inode.gid().to_string(), gid, "{name}");
        assert_eq!(inode.size().to_string(), size, "{name}");
        if name != "." && name != ".." {
            assert_eq!(fs.lookup(&format!("/{name}")).expect("lookup"), ino);
        }
        n += 1;
    }
    assert!(n >= 8, "debugfs listed {n} entries:\n{out}");
}

#[test]
fn ext4_with_metadata_csum_matches_the_source_tree() {
    if !have("mke2fs") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    make_source(&src, true, 3072);
    let img = dir.path().join("img");
    mkfs(&src, &img, EXT4_ARGS, "64M");
    // Index the large directory (htree), then check the fixture itself.
    let _ = Command::new("e2fsck").args(["-fyD"]).arg(&img).output();
    run(Command::new("e2fsck").arg("-fn").arg(&img));

    let len = fs::metadata(&img).expect("stat").len();
    let ext4 = Ext4::open(fs::File::open(&img).expect("open"), 0, len).expect("open ext4");
    let sb = ext4.superblock();
    assert_eq!(sb.block_size(), 4096);
    assert_eq!(hex::encode(sb.s_uuid), UUID.replace('-', ""));
    let seed: Vec<u8> = sb.s_hash_seed.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(hex::encode(seed), HASH_SEED.replace('-', ""));
    assert!(sb.has_metadata_csum());

    let big = ext4.lookup("/big").expect("lookup");
    assert!(
        ext4.inode(big)
            .expect("inode")
            .has_flag(inode_flags::EXT4_INDEX_FL),
        "e2fsck -D should index /big"
    );
    let frag = ext4
        .inode(ext4.lookup("/usr/fragmented").expect("lookup"))
        .expect("inode");
    assert!(
        frag.i_block[0] & 0xFFFF == 0xF30A && (frag.i_block[1] >> 16) >= 1,
        "fragmented file has a deeper extent tree"
    );
    let host = ext4
        .inode(ext4.lookup("/etc/hostname").expect("lookup"))
        .expect("inode");
    assert_eq!(host.mtime().secs, 1_600_000_000);
    assert!(host.crtime().is_some());
    compare(&ext4, &src);
    compare_debugfs(&ext4, &img);
}

#[test]
fn ext2_block_maps_and_inline_data_match_the_source_tree() {
    if !have("mke2fs") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    make_source(&src, false, 700);
    // ext2 with 1 KiB blocks: the 300 KB file needs double-indirect blocks; uninit_bg
    // gives crc16 group descriptor checksums.
    let img = dir.path().join("ext2");
    mkfs(
        &src,
        &img,
        &["-t", "ext2", "-b", "1024", "-O", "uninit_bg", "-I", "256"],
        "24M",
    );
    run(Command::new("e2fsck").arg("-fn").arg(&img));
    let len = fs::metadata(&img).expect("stat").len();
    let ext2 = Ext4::open(fs::File::open(&img).expect("open"), 0, len).expect("open ext2");
    assert_eq!(ext2.superblock().block_size(), 1024);
    compare(&ext2, &src);
    compare_debugfs(&ext2, &img);

    // inline_data: small files and directories live in the inode. (mke2fs 1.47 records a
    // wrong size for sparse files with inline_data, so that file stays out.)
    fs::remove_file(src.join("usr/sparse")).expect("rm");
    let img = dir.path().join("inline");
    mkfs(
        &src,
        &img,
        &["-t", "ext4", "-O", "inline_data,metadata_csum"],
        "24M",
    );
    run(Command::new("e2fsck").arg("-fn").arg(&img));
    let len = fs::metadata(&img).expect("stat").len();
    let inl = Ext4::open(fs::File::open(&img).expect("open"), 0, len).expect("open inline");
    let host = inl
        .inode(inl.lookup("/etc/hostname").expect("lookup"))
        .expect("inode");
    assert!(
        host.has_flag(inode_flags::EXT4_INLINE_DATA_FL),
        "hostname should be inline"
    );
    compare(&inl, &src);
}

#[test]
fn a_partition_offset_and_a_truncated_image() {
    if !have("mke2fs") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    write(&src.join("f"), b"content");
    let img = dir.path().join("img");
    mkfs(&src, &img, &["-t", "ext4"], "4M");
    let fs_bytes = fs::read(&img).expect("read");
    let mut disk = vec![0u8; 1 << 20];
    disk.extend_from_slice(&fs_bytes);
    let ext4 = Ext4::open(Cursor::new(&disk), 1 << 20, fs_bytes.len() as u64).expect("open at offset");
    let mut s = String::new();
    ext4.open_file("/f")
        .expect("open")
        .read_to_string(&mut s)
        .expect("read");
    assert_eq!(s, "content");
    assert!(matches!(ext4.open_file("/nope"), Err(Ext4Error::NotFound { .. })));
    assert!(matches!(ext4.open_file("/"), Err(Ext4Error::WrongType { .. })));
    // A partition claiming fewer bytes than the filesystem needs.
    let err = Ext4::open(Cursor::new(&disk), 1 << 20, 1 << 20)
        .err()
        .expect("too short");
    assert!(err.is_corrupt(), "{err}");
    // An image cut short.
    disk.truncate((1 << 20) + 8192);
    let r = Ext4::open(Cursor::new(&disk), 1 << 20, fs_bytes.len() as u64).and_then(|f| {
        for e in f.walk()? {
            if let NodeKind::File { .. } = e.node.kind {
                std::io::copy(&mut f.open_file(e.ino)?, &mut std::io::sink())
                    .map_err(|e| Ext4Error::Io { offset: 0, source: e })?;
            }
        }
        Ok(())
    });
    assert!(r.is_err(), "a truncated image is an error");
}

/// An 8 MiB ext4 image made by `mke2fs -d` from `files` (name, bytes), then changed by
/// each `debugfs -w` request of `edits`; None (after reporting) without the tools.
fn edited_image(dir: &Path, files: &[(&str, &[u8])], edits: &[&str]) -> Option<std::path::PathBuf> {
    if !have("mke2fs") || !have("debugfs") {
        return None;
    }
    let src = dir.join("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    for (name, bytes) in files {
        write(&src.join(name), bytes);
    }
    let img = dir.join("img");
    mkfs(&src, &img, EXT4_ARGS, "8M");
    for edit in edits {
        run(Command::new("debugfs").arg("-w").arg("-R").arg(edit).arg(&img));
    }
    Some(img)
}

/// The bytes a file reader gives before it stops, at most `cap`: a bound on the work a
/// regression could do, so it fails instead of reading a terabyte of holes.
fn bytes_readable(fs: &Ext4<fs::File>, ino: u32, cap: u64) -> Result<u64, Ext4Error> {
    let r = fs.open_file(ino)?;
    std::io::copy(&mut r.take(cap), &mut std::io::sink()).map_err(|e| Ext4Error::Io { offset: 0, source: e })
}

#[test]
fn a_terabyte_i_size_in_a_small_image_is_a_corrupt_inode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(img) = edited_image(dir.path(), &[("big", b"data")], &["sif /big size 1099511627776"]) else {
        return;
    };
    let file = fs::File::open(&img).expect("open");
    let len = file.metadata().expect("stat").len();
    let ext4 = Ext4::open(file, 0, len).expect("the superblock is fine");
    let err = ext4.walk().expect_err("the walk refuses the inode");
    let text = err.to_string();
    assert!(err.is_corrupt(), "{text}");
    for want in [
        "i_size_lo",
        "(`/big`)",
        "1099511627776 bytes",
        "more than the 8388608 bytes",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
    // Opened directly, by path or by inode number, the reader refuses it too.
    let by_path = ext4.open_file("/big").err().expect("by path");
    assert!(by_path.to_string().contains("(`/big`)"), "{by_path}");
    let ino = ext4.lookup("/big").expect("lookup");
    let by_ino = bytes_readable(&ext4, ino, 64 << 20).expect_err("by inode");
    assert!(
        by_ino.to_string().contains(&format!("inode {ino} is")),
        "{by_ino}"
    );
}

#[test]
fn a_directory_larger_than_its_filesystem_is_a_corrupt_inode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(img) = edited_image(dir.path(), &[], &["sif /d size 0x10000000000"]) else {
        return;
    };
    let file = fs::File::open(&img).expect("open");
    let len = file.metadata().expect("stat").len();
    let ext4 = Ext4::open(file, 0, len).expect("open");
    let err = ext4.walk().expect_err("refused");
    assert!(err.to_string().contains("(`/d`)"), "{err}");
    let ino = ext4.lookup("/d").expect("lookup");
    assert!(ext4.read_dir(ino).expect_err("read_dir").is_corrupt());
}

#[test]
fn files_claiming_more_than_twice_the_filesystem_are_refused_together() {
    // Each 7 MiB file fits the 8 MiB filesystem; together, as holes, they cannot.
    let dir = tempfile::tempdir().expect("tempdir");
    let files: &[(&str, &[u8])] = &[("a", b"a"), ("b", b"b"), ("c", b"c")];
    let edits = [
        "sif /a size 7340032",
        "sif /b size 7340032",
        "sif /c size 7340032",
    ];
    let Some(img) = edited_image(dir.path(), files, &edits) else {
        return;
    };
    let file = fs::File::open(&img).expect("open");
    let len = file.metadata().expect("stat").len();
    let ext4 = Ext4::open(file, 0, len).expect("open");
    let err = ext4.walk().expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("(`/c`)") && text.contains("more than twice the filesystem's 8388608 bytes"),
        "{text}"
    );
    // One such file alone reads, holes and all.
    let ino = ext4.lookup("/a").expect("lookup");
    assert_eq!(bytes_readable(&ext4, ino, u64::MAX).expect("reads"), 7_340_032);
}

/// Small images for the mutation test: one with metadata_csum (mutations mostly hit a
/// checksum), one without (mutations reach the parsers).
fn fuzz_images() -> &'static Option<[Vec<u8>; 2]> {
    static IMAGES: OnceLock<Option<[Vec<u8>; 2]>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        if !have("mke2fs") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        make_source(&src, false, 700);
        for i in 0..300 {
            write(&src.join(format!("big/e{i}")), b"");
        }
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        mkfs(
            &src,
            &a,
            &["-t", "ext4", "-b", "1024", "-N", "512", "-O", "metadata_csum"],
            "16M",
        );
        mkfs(
            &src,
            &b,
            &[
                "-t",
                "ext4",
                "-b",
                "1024",
                "-N",
                "512",
                "-O",
                "^metadata_csum,inline_data",
            ],
            "16M",
        );
        let _ = Command::new("e2fsck").args(["-fyD"]).arg(&a).output();
        let _ = Command::new("e2fsck").args(["-fyD"]).arg(&b).output();
        Some([fs::read(&a).expect("read"), fs::read(&b).expect("read")])
    })
}

/// Opens, walks and reads everything, uncapped: the reader bounds every size by the
/// filesystem's, so a mutated `i_size` cannot make this read gigabytes of holes; any
/// error is fine.
fn exercise(img: &[u8]) -> Result<(), Ext4Error> {
    let fs = Ext4::open(Cursor::new(img), 0, img.len() as u64)?;
    for e in fs.walk()? {
        if let NodeKind::File { .. } = e.node.kind {
            let mut r = fs.open_file(e.ino)?;
            std::io::copy(&mut r, &mut std::io::sink())
                .map_err(|e| Ext4Error::Io { offset: 0, source: e })?;
        }
        let _ = fs.xattrs(e.ino);
    }
    Ok(())
}

#[test]
fn the_unmutated_fuzz_images_read_cleanly() {
    if let Some(images) = fuzz_images() {
        for img in images {
            exercise(img).expect("clean image");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn mutated_images_give_errors_not_panics(
        which in 0usize..2,
        flips in proptest::collection::vec((0usize..400 * 1024, any::<u8>()), 1..8),
    ) {
        if let Some(images) = fuzz_images() {
            let mut img = images[which].clone();
            for (at, x) in flips {
                if let Some(b) = img.get_mut(at) {
                    *b ^= x | 1;
                }
            }
            let _ = exercise(&img);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_superblock_give_errors(tail in proptest::collection::vec(any::<u8>(), 0..8192)) {
        if let Some(images) = fuzz_images() {
            let mut img = images[1][..2048].to_vec();
            img.extend(tail);
            let _ = exercise(&img);
        }
    }
}
