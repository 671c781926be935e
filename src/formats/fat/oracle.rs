//! Oracle tests: images this module writes are judged by `fsck.fat`, `mtools` and
//! `file`; images `mkfs.vfat` + `mcopy` write are read back and compared with their
//! source tree. A missing tool fails under `CI` and skips with a message otherwise.

#![allow(clippy::disallowed_methods)] // spawning the oracle tools and reading `CI`

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;
use crate::formats::fs::{MemContents, Node, NodeKind};

use crate::oracle::have;

fn run(cmd: &mut Command) -> Output {
    cmd.env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8");
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// A small deterministic pseudo-random stream (xorshift64*).
pub(super) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Builds nodes in walk order from (path, Some(content) | None for a directory, mode).
pub(super) fn tree(entries: &[(&str, Option<Vec<u8>>, u32)]) -> (Vec<Node>, MemContents) {
    let mut contents = MemContents::default();
    let mut nodes: Vec<Node> = Vec::new();
    let mut all: Vec<(Vec<String>, Node)> = vec![(
        Vec::new(),
        Node {
            path: "/".into(),
            kind: NodeKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: BTreeMap::new(),
        },
    )];
    for (i, (path, content, mode)) in entries.iter().enumerate() {
        let kind = match content {
            Some(bytes) => NodeKind::File {
                size: bytes.len() as u64,
                content: contents.add(bytes),
            },
            None => NodeKind::Dir,
        };
        let key = path.split('/').skip(1).map(str::to_owned).collect();
        all.push((
            key,
            Node {
                path: (*path).to_owned(),
                kind,
                mode: *mode,
                uid: 1000,
                gid: 1000,
                mtime: 1_700_000_000 + 7 * i as i64,
                xattrs: BTreeMap::new(),
            },
        ));
    }
    // Walk order: depth first, children by name bytes = component-wise order.
    all.sort_by(|a, b| a.0.cmp(&b.0));
    nodes.extend(all.into_iter().map(|(_, n)| n));
    (nodes, contents)
}

/// A tree shaped like a Raspberry Pi OS `bootfs`.
pub(super) fn pi_bootfs() -> (Vec<Node>, MemContents) {
    let mut e: Vec<(String, Option<Vec<u8>>, u32)> = vec![
        (
            "/config.txt".into(),
            Some(b"arm_64bit=1\ndtoverlay=vc4-kms-v3d\n".to_vec()),
            0o644,
        ),
        (
            "/cmdline.txt".into(),
            Some(b"console=serial0,115200 root=PARTUUID=1a2b3c4d-02 rootwait\n".to_vec()),
            0o644,
        ),
        ("/kernel8.img".into(), Some(noise(1, 6 << 20)), 0o644),
        ("/bcm2711-rpi-4-b.dtb".into(), Some(noise(2, 52_593)), 0o644),
        ("/bcm2711-rpi-400.dtb".into(), Some(noise(3, 52_000)), 0o644),
        ("/bcm2712-rpi-5-b.dtb".into(), Some(noise(4, 70_001)), 0o644),
        ("/FIXUP4.DAT".into(), Some(noise(5, 5_400)), 0o644),
        ("/START4.ELF".into(), Some(noise(6, 2_250_000)), 0o444),
        (
            "/LICENCE.broadcom".into(),
            Some(b"Copyright (c) 2006, Broadcom Corporation.\n".to_vec()),
            0o644,
        ),
        ("/README".into(), Some(b"upper\n".to_vec()), 0o644),
        ("/readme".into(), Some(b"lower\n".to_vec()), 0o644),
        ("/ReadMe.Txt".into(), Some(b"mixed\n".to_vec()), 0o644),
        ("/empty.txt".into(), Some(Vec::new()), 0o644),
        ("/cluster.bin".into(), Some(noise(7, 4096)), 0o644),
        (
            "/sparse.bin".into(),
            Some([vec![0u8; 100_000], noise(8, 5_000), vec![0u8; 70_000]].concat()),
            0o644,
        ),
        ("/empty-dir".into(), None, 0o755),
        ("/nested".into(), None, 0o755),
        ("/nested/a".into(), None, 0o555),
        ("/nested/a/b".into(), None, 0o755),
        ("/nested/a/b/c".into(), None, 0o755),
        (
            format!("/nested/a/b/c/{}.txt", "a-rather-long-file-name-".repeat(9)),
            Some(b"deep\n".to_vec()),
            0o644,
        ),
        (
            "/nested/a/b/c/héllo wörld ✓.txt".into(),
            Some(b"unicode\n".to_vec()),
            0o644,
        ),
        ("/nested/.hidden".into(), Some(b"dot\n".to_vec()), 0o644),
        (
            "/nested/a+b=c;d.tar.gz".into(),
            Some(b"odd characters\n".to_vec()),
            0o644,
        ),
        ("/overlays".into(), None, 0o755),
        ("/overlays/README".into(), Some(b"overlays\n".to_vec()), 0o644),
    ];
    for i in 0..200 {
        let len = (i * 397) % 3000;
        e.push((
            format!("/overlays/overlay-number-{i:03}-rpi.dtbo"),
            Some(noise(100 + i as u64, len)),
            0o644,
        ));
    }
    let refs: Vec<(&str, Option<Vec<u8>>, u32)> =
        e.iter().map(|(p, c, m)| (p.as_str(), c.clone(), *m)).collect();
    tree(&refs)
}

pub(super) const SIZE: u64 = 64 << 20;

pub(super) fn pi_options() -> FatOptions {
    let mut opts = FatOptions::new(SIZE, 0x1A2B_3C4D, "bootfs");
    opts.hidden_sectors = 8192;
    opts
}

fn write_image(
    dir: &Path,
    name: &str,
    nodes: &[Node],
    contents: &dyn crate::formats::fs::Contents,
    opts: &FatOptions,
) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    write_fat32(&mut f, nodes, contents, opts).unwrap();
    path
}

fn digest_file(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path).unwrap()).unwrap();
    hasher.finalize().to_hex().to_string()
}

/// (path, size) of every file and (path/, 0) of every directory below `/`.
fn expected_listing(nodes: &[Node]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = nodes[1..]
        .iter()
        .map(|n| match n.kind {
            NodeKind::File { size, .. } => (n.path.clone(), size),
            _ => (format!("{}/", n.path), 0),
        })
        .collect();
    out.sort();
    out
}

/// Parses `mdir -/ -a` output into (path, size) like [`expected_listing`].
fn parse_mdir(text: &str) -> Vec<(String, u64)> {
    let mut dir = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("Directory for ::") {
            dir = d.trim_end_matches('/').to_owned();
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let is_date = |t: &&str| t.len() == 10 && t.as_bytes()[4] == b'-' && t.as_bytes()[7] == b'-';
        let Some(at) = tokens.iter().position(is_date) else {
            continue;
        };
        if at < 2 || at + 1 >= tokens.len() {
            continue;
        }
        let short = tokens[..at - 1].join(".");
        if short == "." || short == ".." {
            continue;
        }
        // The long name is whatever follows the time column.
        let after_date = line.find(tokens[at]).unwrap() + 10;
        let time_at = after_date + line[after_date..].find(tokens[at + 1]).unwrap() + tokens[at + 1].len();
        let long = line[time_at..].trim_start().trim_end_matches(' ');
        let name = if long.is_empty() { short } else { long.to_owned() };
        match tokens[at - 1] {
            "<DIR>" => out.push((format!("{dir}/{name}/"), 0)),
            size => out.push((format!("{dir}/{name}"), size.parse().unwrap())),
        }
    }
    out.sort();
    out
}

/// The image of [`pi_bootfs`], written once per test run.
fn pi_image(dir: &Path) -> (Vec<Node>, MemContents, PathBuf) {
    let (nodes, contents) = pi_bootfs();
    let img = write_image(dir, "boot.img", &nodes, &contents, &pi_options());
    (nodes, contents, img)
}

fn content_of<'c>(contents: &'c MemContents, node: &Node) -> &'c [u8] {
    match &node.kind {
        NodeKind::File { content, .. } => &contents.0[content],
        _ => panic!("{} is not a file", node.path),
    }
}

#[test]
fn fsck_fat_finds_nothing_to_fix() {
    if !have("fsck.fat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _, img) = pi_image(dir.path());
    let out = run(Command::new("fsck.fat").arg("-n").arg("-V").arg(&img));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // Only the banner, the verification pass notice and the summary: any warning adds lines.
    assert!(lines[0].starts_with("fsck.fat "), "{stdout}");
    let summary = lines.last().unwrap();
    // fsck.fat counts the root directory too.
    let files = nodes.len();
    assert!(
        summary.ends_with(&format!(": {files} files, 18140/129022 clusters")),
        "{stdout}"
    );
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("Starting check/repair pass.")
                || l.starts_with("Starting verification pass.")),
        "{stdout}"
    );
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn mtools_lists_and_copies_the_tree() {
    if !have("mdir") || !have("mcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nodes, contents, img) = pi_image(dir.path());
    let out = run(Command::new("mdir").args(["-/", "-a", "-i"]).arg(&img).arg("::"));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Volume in drive : is bootfs"), "{text}");
    assert!(text.contains("Volume Serial Number is 1A2B-3C4D"), "{text}");
    assert_eq!(parse_mdir(&text), expected_listing(&nodes));

    // Everything, at once: names, sizes and bytes.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let out = run(Command::new("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(&img)
        .arg("::/")
        .arg(&copy));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for node in &nodes[1..] {
        let local = copy.join(&node.path[1..]);
        match node.kind {
            NodeKind::Dir => assert!(local.is_dir(), "{}", node.path),
            _ => assert_eq!(
                std::fs::read(&local).unwrap(),
                content_of(&contents, node),
                "{}",
                node.path
            ),
        }
    }
    // And one file through a pipe, the way the brief's oracle does it.
    let out = run(Command::new("mcopy")
        .arg("-i")
        .arg(&img)
        .arg("::/kernel8.img")
        .arg("-"));
    let kernel = nodes.iter().find(|n| n.path == "/kernel8.img").unwrap();
    assert_eq!(out.stdout, content_of(&contents, kernel));
}

#[test]
fn file_reports_the_boot_sector_fields() {
    if !have("file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, _, img) = pi_image(dir.path());
    let out = run(Command::new("file").arg("-s").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "hidden sectors 8192",
        "FAT (32 bit)",
        "serial number 0x1a2b3c4d",
        "label: \"bootfs     \"",
        "OEM-ID \"MSWIN4.1\"",
    ] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }
}

#[test]
fn reads_back_what_it_wrote_and_rewrites_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, contents, img) = pi_image(dir.path());
    let mut file = File::open(&img).unwrap();
    let fs = read_fat(&mut file, 0, SIZE).unwrap();
    let info = fs.info().clone();
    assert_eq!(info.fat_type, FatType::Fat32);
    assert_eq!(info.volume_id, Some(0x1A2B_3C4D));
    assert_eq!(info.label.as_deref(), Some("bootfs"));
    assert_eq!(info.hidden_sectors, 8192);
    assert_eq!(info.free_clusters, 129_022 - 18_140);

    assert_eq!(fs.nodes().len(), nodes.len());
    for (got, want) in fs.nodes().iter().zip(&nodes) {
        assert_eq!(got.path, want.path);
        let (mode, size) = match want.kind {
            NodeKind::Dir => (if want.mode & 0o222 == 0 { 0o555 } else { 0o755 }, None),
            NodeKind::File { size, .. } => (if want.mode & 0o222 == 0 { 0o444 } else { 0o644 }, Some(size)),
            _ => unreachable!(),
        };
        assert_eq!(got.mode, mode, "{}", got.path);
        assert_eq!((got.uid, got.gid), (0, 0));
        if want.path != "/" {
            assert_eq!(got.mtime, want.mtime - want.mtime.rem_euclid(2), "{}", got.path);
        }
        match (&got.kind, size) {
            (NodeKind::File { size: s, .. }, Some(size)) => {
                assert_eq!(*s, size);
                let mut bytes = Vec::new();
                fs.open(&got.path).unwrap().read_to_end(&mut bytes).unwrap();
                assert_eq!(bytes, content_of(&contents, want), "{}", got.path);
            }
            (NodeKind::Dir, None) => {}
            other => panic!("{}: {other:?}", got.path),
        }
    }

    // Write again from what was read, with the reader as the contents.
    let mut read_nodes = fs.nodes().to_vec();
    read_nodes[0].mtime = nodes[0].mtime; // the root has no entry of its own
    let again = dir.path().join("again.img");
    write_fat32(
        &mut File::create(&again).unwrap(),
        &read_nodes,
        &fs,
        &pi_options(),
    )
    .unwrap();
    assert_eq!(digest_file(&again), digest_file(&img));
}

#[test]
fn output_is_pinned_and_independent_of_the_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, contents, img) = pi_image(dir.path());
    // Golden digest: any change to the layout must be deliberate.
    assert_eq!(digest_file(&img), GOLDEN_PI_BOOTFS);

    // Written 1 MiB into a disk image, the partition's bytes are the same.
    let disk = dir.path().join("disk.img");
    let mut f = File::create(&disk).unwrap();
    f.write_all(&[0xAA; 1 << 20]).unwrap();
    write_fat32(&mut f, &nodes, &contents, &pi_options()).unwrap();
    drop(f);
    let mut f = File::open(&disk).unwrap();
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), (1 << 20) + SIZE);
    let fs = read_fat(&mut f, 1 << 20, SIZE).unwrap();
    assert_eq!(fs.nodes().len(), nodes.len());
    let mut part = Vec::new();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.read_to_end(&mut part).unwrap();
    assert_eq!(blake3::hash(&part).to_hex().as_str(), GOLDEN_PI_BOOTFS);
}

/// BLAKE3 of the [`pi_bootfs`] image with [`pi_options`].
const GOLDEN_PI_BOOTFS: &str = "263b717e075bc6ee1b58bd0e1cb33c4192ae819fb85a54fde9d06ad0e2417996";

/// Unmounts on drop, so a failed comparison leaves no mount behind.
struct Mounted<'p>(&'p Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let out = run(Command::new("umount").arg(self.0));
        assert!(out.status.success() || std::thread::panicking(), "umount failed");
    }
}

#[test]
fn the_kernel_mounts_it_and_reads_every_file_back() {
    if !crate::validate::mount::is_root() {
        crate::oracle::unavailable("a loop mount needs root");
        return;
    }
    if !crate::validate::mount::kernel_has("vfat") {
        crate::oracle::skipped("the running kernel has no `vfat` filesystem");
        return;
    }
    if !have("mount") || !have("umount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nodes, contents, img) = pi_image(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = run(Command::new("mount")
        .args(["-t", "vfat", "-o", "ro,loop"])
        .arg(&img)
        .arg(&mnt));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _mounted = Mounted(&mnt);
    for node in &nodes[1..] {
        let local = mnt.join(&node.path[1..]);
        match node.kind {
            NodeKind::Dir => assert!(local.is_dir(), "{}", node.path),
            _ => assert_eq!(
                std::fs::read(&local).unwrap(),
                content_of(&contents, node),
                "{}",
                node.path
            ),
        }
    }
    let mut listed = 0;
    let mut stack = vec![mnt.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            listed += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert_eq!(
        listed,
        nodes.len() - 1,
        "the kernel lists exactly the nodes written"
    );
}

/// Files with their mtimes for a `mkfs.vfat` + `mcopy` fixture.
fn fixture_source(dir: &Path) -> Vec<(String, Option<Vec<u8>>, i64)> {
    let files: Vec<(String, Option<Vec<u8>>, i64)> = vec![
        (
            "/config.txt".into(),
            Some(b"arm_64bit=1\n".to_vec()),
            1_600_000_000,
        ),
        ("/KERNEL8.IMG".into(), Some(noise(9, 300_000)), 1_600_000_010),
        (
            "/bcm2711-rpi-4-b.dtb".into(),
            Some(noise(10, 50_000)),
            1_600_000_020,
        ),
        ("/empty".into(), None, 1_600_000_030),
        ("/empty.txt".into(), Some(Vec::new()), 1_600_000_040),
        ("/overlays".into(), None, 1_600_000_050),
        (
            "/overlays/vc4-kms-v3d.dtbo".into(),
            Some(noise(11, 3_000)),
            1_600_000_060,
        ),
        (
            "/overlays/a name with spaces.dtbo".into(),
            Some(noise(12, 4_096)),
            1_600_000_070,
        ),
        ("/overlays/deeper".into(), None, 1_600_000_080),
        (
            "/overlays/deeper/Mixed.Case.Name.txt".into(),
            Some(b"m\n".to_vec()),
            1_600_000_090,
        ),
    ];
    for (path, content, _) in &files {
        let local = dir.join(&path[1..]);
        match content {
            Some(bytes) => std::fs::write(&local, bytes).unwrap(),
            None => std::fs::create_dir(&local).unwrap(),
        }
    }
    // Children before parents, so that setting a file's time does not touch the dir's.
    for (path, _, mtime) in files.iter().rev() {
        let out = run(Command::new("touch")
            .arg("-d")
            .arg(format!("@{mtime}"))
            .arg(dir.join(&path[1..])));
        assert!(out.status.success());
    }
    files
}

/// Formats `img` with `mkfs.vfat <args>`, copies [`fixture_source`] in and reads it back.
fn check_fixture(fat_args: &[&str], kib: u32, fat_type: FatType) -> Option<FatInfo> {
    if !have("mkfs.vfat") || !have("mcopy") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let files = fixture_source(&src);
    let img = dir.path().join("fixture.img");
    let out = run(Command::new("mkfs.vfat")
        .arg("-C")
        .args(fat_args)
        .arg(&img)
        .arg(kib.to_string()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut mcopy = Command::new("mcopy");
    mcopy.args(["-s", "-m", "-i"]).arg(&img);
    for entry in [
        "config.txt",
        "KERNEL8.IMG",
        "bcm2711-rpi-4-b.dtb",
        "empty",
        "empty.txt",
        "overlays",
    ] {
        mcopy.arg(src.join(entry));
    }
    let out = run(mcopy.arg("::/"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut f = File::open(&img).unwrap();
    let len = u64::from(kib) * 1024;
    let fs = read_fat(&mut f, 0, len).unwrap();
    assert_eq!(fs.info().fat_type, fat_type);
    let mut want: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    want.sort_by(|a, b| {
        let key = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
        key(a).cmp(&key(b))
    });
    let got: Vec<&str> = fs.nodes()[1..].iter().map(|n| n.path.as_str()).collect();
    assert_eq!(got, want);
    for (path, content, mtime) in &files {
        let node = fs.nodes().iter().find(|n| &n.path == path).unwrap();
        match content {
            Some(bytes) => {
                assert!(
                    matches!(node.kind, NodeKind::File { size, .. } if size == bytes.len() as u64),
                    "{path}"
                );
                let mut read = Vec::new();
                fs.open(path).unwrap().read_to_end(&mut read).unwrap();
                assert_eq!(&read, bytes, "{path}");
                // mcopy -m keeps file times (in TZ=UTC, at 2-second resolution).
                assert_eq!(node.mtime, mtime - mtime.rem_euclid(2), "{path}");
                assert_eq!(node.mode, 0o644);
            }
            None => {
                assert_eq!(node.kind, NodeKind::Dir, "{path}");
                assert_eq!(node.mode, 0o755);
            }
        }
    }
    Some(fs.info().clone())
}

#[test]
fn reads_a_mkfs_vfat_fat32_fixture() {
    let Some(info) = check_fixture(
        &["-F", "32", "-n", "BOOTFS", "-i", "1a2b3c4d"],
        65_536,
        FatType::Fat32,
    ) else {
        return;
    };
    assert_eq!(info.volume_id, Some(0x1A2B_3C4D));
    assert_eq!(info.label.as_deref(), Some("BOOTFS"));
    assert_eq!(info.oem_name, "mkfs.fat");
}

#[test]
fn reads_a_mkfs_vfat_fat16_fixture() {
    check_fixture(
        &["-F", "16", "-n", "BOOT16", "-i", "00c0ffee"],
        16_384,
        FatType::Fat16,
    );
}

#[test]
fn reads_a_mkfs_vfat_fat12_fixture() {
    check_fixture(
        &["-F", "12", "-n", "BOOT12", "-i", "00c0ffee"],
        2_048,
        FatType::Fat12,
    );
}

#[test]
fn a_full_size_512_mib_bootfs_is_clean() {
    if !have("fsck.fat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nodes, contents) = pi_bootfs();
    let opts = FatOptions::new(512 << 20, 0xB007_0001, "bootfs");
    let img = dir.path().join("bootfs.img");
    let report = write_fat32(&mut File::create(&img).unwrap(), &nodes, &contents, &opts).unwrap();
    // fatgen103's table: 4 KiB clusters from 260 MiB to 8 GiB.
    assert_eq!(report.cluster_size, 4096);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 512 << 20);
    let out = run(Command::new("fsck.fat").arg("-n").arg(&img));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let summary = format!(
        ": {} files, {}/{} clusters",
        nodes.len(),
        report.used_clusters,
        report.total_clusters
    );
    assert!(stdout.trim_end().ends_with(&summary), "{stdout}");
}
