//! `w4b inspect` and `w4b diff` against Raspberry-Pi-OS-shaped disks written by the
//! library's own writers (MBR; FAT32 `bootfs` at sector 8192; ext4 `rootfs`), raw and
//! compressed with the `zstd`, `xz` and `gzip` command-line tools.

#![allow(clippy::disallowed_methods)] // Tests run compressors and read `CI`.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::Digest as _;
use w4b::formats::ext4::write::{write_ext4, Ext4Options, Size};
use w4b::formats::fat::{write_fat32, FatOptions};
use w4b::formats::fs::{MemContents, Node, NodeKind};
use w4b::formats::partition::PartitionTable;

use crate::env::TestEnv;
use crate::oracle;

const EPOCH: i64 = 1_700_000_000;
const DISK_SIZE: u64 = 80 << 20;
const BOOT_SECTORS: u64 = (34 << 20) / 512;

/// What differs between the test images.
struct Variant {
    hostname: &'static [u8],
    motd_mode: u32,
}

const NORTH: Variant = Variant {
    hostname: b"hive-north\n",
    motd_mode: 0o644,
};

fn kernel() -> Vec<u8> {
    (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn big() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i % 253) as u8).collect()
}

/// Nodes in walk order and their contents, for the boot and root filesystems.
fn trees(v: &Variant) -> (Vec<Node>, Vec<Node>, MemContents) {
    let mut c = MemContents::default();
    let n = |path: &str, kind: NodeKind, mode: u32| Node {
        path: path.into(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: EPOCH,
        xattrs: BTreeMap::new(),
    };
    let mut file = |path: &str, bytes: &[u8], mode: u32| {
        n(
            path,
            NodeKind::File {
                size: bytes.len() as u64,
                content: c.add(bytes),
            },
            mode,
        )
    };
    let boot = vec![
        n("/", NodeKind::Dir, 0o755),
        file(
            "/cmdline.txt",
            b"console=serial0,115200 root=PARTUUID=1a2b3c4d-02 rootwait\n",
            0o644,
        ),
        file("/config.txt", b"arm_64bit=1\n", 0o644),
        file("/kernel8.img", &kernel(), 0o644),
        n("/overlays", NodeKind::Dir, 0o755),
        file("/overlays/w1-gpio.dtbo", b"dtbo", 0o644),
    ];
    let mut sudo = file("/usr/bin/sudo", b"#!/bin/sudo\n", 0o4755);
    sudo.xattrs.insert("security.capability".into(), vec![1, 0, 0, 2]);
    sudo.xattrs.insert("user.hive".into(), b"north".to_vec());
    let mut wg = file("/etc/wireguard/wg0.key", b"not a real key\n", 0o600);
    wg.uid = 1000;
    wg.gid = 1001;
    let root = vec![
        n("/", NodeKind::Dir, 0o755),
        n(
            "/bin",
            NodeKind::Symlink {
                target: "usr/bin".into(),
            },
            0o777,
        ),
        n("/dev", NodeKind::Dir, 0o755),
        n("/dev/null", NodeKind::CharDev { major: 1, minor: 3 }, 0o666),
        n("/etc", NodeKind::Dir, 0o755),
        file("/etc/hostname", v.hostname, 0o644),
        file("/etc/motd", b"Welcome to the hive.\n", v.motd_mode),
        n("/etc/wireguard", NodeKind::Dir, 0o700),
        wg,
        n("/usr", NodeKind::Dir, 0o755),
        n("/usr/bin", NodeKind::Dir, 0o755),
        file("/usr/bin/big", &big(), 0o755),
        sudo,
        n(
            "/usr/bin/sudoedit",
            NodeKind::HardLink {
                target: "/usr/bin/sudo".into(),
            },
            0o4755,
        ),
    ];
    (boot, root, c)
}

/// Writes a Raspberry-Pi-OS-like disk to `path`.
fn pi_disk(path: &Path, v: &Variant) {
    let (boot, root, contents) = trees(v);
    let table = PartitionTable::raspberry_pi_mbr(0x1a2b_3c4d, BOOT_SECTORS, DISK_SIZE).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(DISK_SIZE).unwrap();
    table.write(&mut f, DISK_SIZE).unwrap();
    let p1 = table.partition(1).unwrap().clone();
    assert_eq!(p1.start_lba, 8192);
    let mut opts = FatOptions::new(p1.size_lba * 512, 0x1a2b_3c4d, "bootfs");
    opts.hidden_sectors = p1.start_lba as u32;
    write_fat32(&mut table.open(&mut f, 1).unwrap(), &boot, &contents, &opts).unwrap();
    let p2 = table.partition(2).unwrap().clone();
    let mut opts = Ext4Options::new(Size::Fixed(p2.size_lba * 512), [7; 16], [9; 16], EPOCH);
    opts.label = "rootfs".into();
    write_ext4(&mut table.open(&mut f, 2).unwrap(), &root, &contents, &opts).unwrap();
}

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(env: &TestEnv, image: &Path) -> Value {
    let out = env.run(&["inspect", "--format", "json", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("inspect json")
}

/// Compresses `img` with a command-line tool; returns the compressed file.
fn compress(img: &Path, tool: &str) -> PathBuf {
    let (args, ext): (&[&str], &str) = match tool {
        "zstd" => (&["-q", "-k", "-f", "-3"], "zst"),
        "xz" => (&["-k", "-f", "-0", "-T1"], "xz"),
        "gzip" => (&["-k", "-f", "-1"], "gz"),
        other => panic!("no compressor {other}"),
    };
    let status = Command::new(tool).args(args).arg(img).status().unwrap();
    assert!(status.success(), "{tool} failed");
    let mut out = img.as_os_str().to_owned();
    out.push(format!(".{ext}"));
    PathBuf::from(out)
}

#[test]
fn inspect_shows_both_partitions_and_filesystems() {
    let env = TestEnv::new();
    let img = env.root.path().join("disk.img");
    pi_disk(&img, &NORTH);
    let out = env.run(&["inspect", img.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "table       mbr, disk id 1a2b3c4d",
        "1a2b3c4d-01",
        "1a2b3c4d-02",
        "c (W95 FAT32 (LBA))",
        "83 (Linux)",
        "FAT32, label `bootfs`, uuid 1A2B-3C4D, 512-byte clusters",
        "label `rootfs`, uuid 07070707-0707-0707-0707-070707070707, 4096-byte blocks",
        "features: has_journal ext_attr",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let p1 = lines.iter().find(|l| l.trim_start().starts_with("1 ")).unwrap();
    assert!(p1.contains(" 8192 "), "{p1}");
    assert!(lines.iter().any(|l| l.starts_with("fs p1       fat")), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("fs p2       ext4")), "{text}");
    // No entries without --tree.
    assert!(!text.contains("/etc/hostname"), "{text}");

    let out = env.run(&["inspect", "--tree", img.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // Columns are aligned per filesystem; compare with single spaces.
    let line = |path: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(3) == Some(path))
            .unwrap_or_else(|| panic!("no line for {path} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(text.contains("\np2 ext4 `rootfs`:\n"), "{text}");
    assert_eq!(
        line("/usr/bin/sudo"),
        format!(
            "-rwsr-xr-x 0:0 12 /usr/bin/sudo [security.capability, user.hive] sha256:{}",
            &sha256(b"#!/bin/sudo\n")[..12]
        )
    );
    assert!(line("/bin").ends_with("/bin -> usr/bin"), "{text}");
    assert!(line("/dev/null").starts_with("crw-rw-rw- 0:0 1,3 "), "{text}");
    assert!(
        line("/etc/wireguard/wg0.key").starts_with("-rw------- 1000:1001 "),
        "{text}"
    );
    assert!(
        line("/usr/bin/sudoedit").contains("link to /usr/bin/sudo"),
        "{text}"
    );
    assert!(line("/config.txt").starts_with("-rw-r--r-- "), "{text}");
}

#[test]
fn inspect_json_lists_every_entry_with_its_sha256() {
    let env = TestEnv::new();
    let img = env.root.path().join("disk.img");
    pi_disk(&img, &NORTH);
    let v = json(&env, &img);
    assert_eq!(v["schema"], "w4b.inspect/1");
    assert_eq!(v["image"]["compression"], "none");
    assert_eq!(v["image"]["size"], DISK_SIZE);
    assert_eq!(v["table"]["kind"], "mbr");
    assert_eq!(v["table"]["disk_id"], "1a2b3c4d");
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["start_lba"], 8192);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[1]["type"], "83");
    assert_eq!(parts[1]["partuuid"], "1a2b3c4d-02");
    let fss = v["filesystems"].as_array().unwrap();
    assert_eq!(fss[0]["kind"], "fat");
    assert_eq!(fss[0]["label"], "bootfs");
    assert_eq!(fss[1]["kind"], "ext4");
    assert_eq!(fss[1]["label"], "rootfs");

    let entries = |i: usize| -> BTreeMap<String, Value> {
        fss[i]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["path"].as_str().unwrap().to_string(), e.clone()))
            .collect()
    };
    // Every file of the source with the SHA-256 of its bytes, and nothing else.
    let (boot, root, contents) = trees(&NORTH);
    for (i, nodes) in [(0, &boot), (1, &root)] {
        let got = entries(i);
        for n in nodes.iter() {
            let e = got.get(&n.path).unwrap_or_else(|| panic!("{} missing", n.path));
            if let NodeKind::File { content, size } = &n.kind {
                let bytes = &contents.0[content];
                assert_eq!(e["sha256"], sha256(bytes), "{}", n.path);
                assert_eq!(e["size"], *size, "{}", n.path);
            }
        }
        let extra: Vec<&String> = got
            .keys()
            .filter(|p| !nodes.iter().any(|n| &n.path == *p) && *p != "/lost+found")
            .collect();
        assert!(extra.is_empty(), "{extra:?}");
    }
    let root = entries(1);
    let sudo = &root["/usr/bin/sudo"];
    assert_eq!(sudo["kind"], "file");
    assert_eq!(sudo["mode"], "4755");
    assert_eq!(
        sudo["xattrs"],
        serde_json::json!(["security.capability", "user.hive"])
    );
    assert_eq!(sudo["mtime"], EPOCH);
    let link = &root["/usr/bin/sudoedit"];
    assert_eq!(link["kind"], "hardlink");
    assert_eq!(link["target"], "/usr/bin/sudo");
    assert_eq!(link["sha256"], sudo["sha256"]);
    assert_eq!(root["/bin"]["kind"], "symlink");
    assert_eq!(root["/bin"]["target"], "usr/bin");
    assert_eq!(root["/bin"]["sha256"], Value::Null);
    assert_eq!(root["/dev/null"]["device"], "1:3");
    let key = &root["/etc/wireguard/wg0.key"];
    assert_eq!(
        (key["uid"].clone(), key["gid"].clone(), key["mode"].clone()),
        (1000.into(), 1001.into(), "0600".into())
    );
    assert_eq!(root["/"]["kind"], "dir");
}

#[test]
fn compressed_images_inspect_identically() {
    let env = TestEnv::new();
    let img = env.root.path().join("disk.img");
    pi_disk(&img, &NORTH);
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("image");
        v
    };
    let raw = strip(json(&env, &img));
    let raw_text = stdout(&env.run(&["inspect", "--tree", img.to_str().unwrap()]));
    let body = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    for (tool, name) in [("zstd", "zstd"), ("xz", "xz"), ("gzip", "gzip")] {
        if !oracle::have(tool) {
            continue;
        }
        let packed = compress(&img, tool);
        let v = json(&env, &packed);
        assert_eq!(v["image"]["compression"], name);
        assert_eq!(v["image"]["size"], DISK_SIZE);
        assert!(v["image"]["stored_size"].as_u64().unwrap() < DISK_SIZE / 4);
        assert!(strip(v) == raw, "{tool}: the report differs from the raw image's");
        let text = stdout(&env.run(&["inspect", "--tree", packed.to_str().unwrap()]));
        assert!(
            text.lines().next().unwrap().contains(&format!("({name}, ")),
            "{text}"
        );
        assert_eq!(body(&text), body(&raw_text), "{tool}");
    }
}

#[test]
fn diff_reports_exactly_a_content_and_a_mode_change() {
    let env = TestEnv::new();
    let a = env.root.path().join("north.img");
    let b = env.root.path().join("south.img");
    pi_disk(&a, &NORTH);
    pi_disk(
        &b,
        &Variant {
            hostname: b"hive-south\n",
            motd_mode: 0o600,
        },
    );
    let out = env.run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "~ p2:/etc/hostname: content\n~ p2:/etc/motd: mode 0644 → 0600\n"
    );
    assert!(
        stderr(&out).contains("2 entries (0 added, 0 removed, 2 changed)"),
        "{}",
        stderr(&out)
    );

    let out = env.run(&[
        "diff",
        "--format",
        "json",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "w4b.diff/1");
    assert_eq!(v["identical"], false);
    assert_eq!(v["disk"], serde_json::json!([]));
    assert_eq!(v["partitions"], serde_json::json!([]));
    let fss = v["filesystems"].as_array().unwrap();
    assert_eq!(fss.len(), 1);
    assert_eq!(fss[0]["partition"], 2);
    let host = &fss[0]["entries"][0];
    assert_eq!(host["path"], "/etc/hostname");
    assert_eq!(host["fields"][0]["field"], "content");
    assert_eq!(host["fields"][0]["old"], sha256(b"hive-north\n"));
    assert_eq!(host["fields"][0]["new"], sha256(b"hive-south\n"));
    assert_eq!(fss[0]["entries"][1]["fields"][0]["new"], "0600");

    // --ignore mode leaves only the content change.
    let out = env.run(&[
        "diff",
        "--ignore",
        "mode",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&out), "~ p2:/etc/hostname: content\n");
}

#[test]
fn diff_of_identical_images_exits_0() {
    let env = TestEnv::new();
    let a = env.root.path().join("a.img");
    let b = env.root.path().join("b.img");
    pi_disk(&a, &NORTH);
    pi_disk(&b, &NORTH);
    let out = env.run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("are identical"), "{}", stderr(&out));
    if oracle::have("zstd") {
        let packed = compress(&b, "zstd");
        let out = env.run(&[
            "diff",
            "--format",
            "json",
            a.to_str().unwrap(),
            packed.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["identical"], true);
    }
}

#[test]
fn damaged_images_give_clear_errors_not_panics() {
    let env = TestEnv::new();
    let good = env.root.path().join("good.img");
    pi_disk(&good, &NORTH);
    let check = |path: &Path, want: &str| {
        let out = env.run(&["inspect", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(err.contains(want), "{}: want {want:?} in\n{err}", path.display());
        assert!(!err.contains("panicked"), "{err}");
        let out = env.run(&["diff", good.to_str().unwrap(), path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "diff: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
    };

    // Cut off in the middle of the root partition.
    let cut = env.root.path().join("cut.img");
    std::fs::copy(&good, &cut).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(DISK_SIZE / 2)
        .unwrap();
    check(&cut, "cannot read the partition table");

    // A damaged ext4 superblock (s_free_inodes_count changed, checksum not).
    let bad_sb = env.root.path().join("bad-sb.img");
    std::fs::copy(&good, &bad_sb).unwrap();
    let table = {
        let mut f = std::fs::File::open(&good).unwrap();
        PartitionTable::read(&mut f, DISK_SIZE).unwrap().table
    };
    let p2 = table.partition(2).unwrap().byte_range().start;
    let mut f = std::fs::OpenOptions::new().write(true).open(&bad_sb).unwrap();
    f.seek(SeekFrom::Start(p2 + 1024 + 0x10)).unwrap();
    f.write_all(&[0xff]).unwrap();
    drop(f);
    check(&bad_sb, "cannot read the ext4 filesystem of partition 2");

    // Not a disk image at all, under a compressed name and plain.
    let junk = env.root.path().join("junk.img.xz");
    std::fs::write(&junk, b"<html>Not Found</html>").unwrap();
    check(&junk, "w4b::image::not_compressed");
    let junk = env.root.path().join("junk.img");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    check(&junk, "no partition table and no filesystem");
    check(&env.root.path().join("missing.img"), "cannot open");

    // A truncated download.
    if oracle::have("zstd") {
        let packed = compress(&good, "zstd");
        let bytes = std::fs::read(&packed).unwrap();
        let cut = env.root.path().join("cut.img.zst");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        check(&cut, "decompressing");
    }
}

#[test]
fn a_bare_filesystem_image_and_usage_errors() {
    let env = TestEnv::new();
    let (boot, _, contents) = trees(&NORTH);
    let img = env.root.path().join("bootfs.img");
    let mut f = std::fs::File::create(&img).unwrap();
    f.set_len(34 << 20).unwrap();
    write_fat32(&mut f, &boot, &contents, &FatOptions::new(34 << 20, 1, "bootfs")).unwrap();
    drop(f);
    let v = json(&env, &img);
    assert_eq!(v["table"], Value::Null);
    assert_eq!(v["filesystems"][0]["partition"], Value::Null);
    assert_eq!(v["filesystems"][0]["kind"], "fat");
    let text = stdout(&env.run(&["inspect", img.to_str().unwrap()]));
    assert!(text.contains("table       none"), "{text}");
    // Usage errors exit with 2.
    assert_eq!(env.run(&["diff", img.to_str().unwrap()]).status.code(), Some(2));
    assert_eq!(
        env.run(&["inspect", "--format", "yaml", "x.img"]).status.code(),
        Some(2)
    );
}

/// The report agrees with the reference tools: `sfdisk --json` for the table, `blkid` for
/// labels and UUIDs, `dumpe2fs -h` for the ext4 features and counts.
#[test]
fn inspect_agrees_with_sfdisk_blkid_and_dumpe2fs() {
    if !(oracle::have("sfdisk") && oracle::have("blkid") && oracle::have("dumpe2fs")) {
        return;
    }
    let env = TestEnv::new();
    let img = env.root.path().join("disk.img");
    pi_disk(&img, &NORTH);
    let v = json(&env, &img);

    let out = Command::new("sfdisk").arg("--json").arg(&img).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let sf: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sf = &sf["partitiontable"];
    assert_eq!(sf["id"], format!("0x{}", v["table"]["disk_id"].as_str().unwrap()));
    let ours = v["partitions"].as_array().unwrap();
    let theirs = sf["partitions"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(o["start_lba"], t["start"]);
        assert_eq!(o["size_lba"], t["size"]);
        assert_eq!(o["type"], t["type"]);
    }

    for fs in v["filesystems"].as_array().unwrap() {
        let offset = fs["offset"].as_u64().unwrap();
        let out = Command::new("blkid")
            .args(["-p", "-o", "export", "-O", &offset.to_string()])
            .arg(&img)
            .output()
            .unwrap();
        let tags: BTreeMap<String, String> = stdout(&out)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            Some(&fs["label"].as_str().unwrap().to_string()),
            tags.get("LABEL"),
            "{tags:?}"
        );
        assert_eq!(
            Some(&fs["uuid"].as_str().unwrap().to_string()),
            tags.get("UUID"),
            "{tags:?}"
        );
        if fs["kind"] == "fat" {
            assert_eq!(
                Some(&fs["variant"].as_str().unwrap().to_string()),
                tags.get("VERSION")
            );
        }
    }

    let ext4 = &v["filesystems"][1];
    let part = env.root.path().join("rootfs.img");
    let bytes = std::fs::read(&img).unwrap();
    let start = ext4["offset"].as_u64().unwrap() as usize;
    let len = ext4["size"].as_u64().unwrap() as usize;
    std::fs::write(&part, &bytes[start..start + len]).unwrap();
    let out = Command::new("dumpe2fs").arg("-h").arg(&part).output().unwrap();
    let text = stdout(&out);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .map(|r| r.trim_start_matches(':').trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let features: Vec<&str> = ext4["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(features.join(" "), field("Filesystem features"));
    assert_eq!(ext4["inodes"].to_string(), field("Inode count"));
    assert_eq!(ext4["free_inodes"].to_string(), field("Free inodes"));
    let bs: u64 = field("Block size").parse().unwrap();
    let free_blocks: u64 = field("Free blocks").parse().unwrap();
    assert_eq!(ext4["free"].as_u64().unwrap(), free_blocks * bs);
}

/// Runs `w4b ARGS` and waits at most `secs` for it: a command that hangs on a hostile
/// input fails the test instead of hanging it.
fn run_bounded(env: &TestEnv, args: &[&str], secs: u64) -> Output {
    use std::process::Stdio;
    let mut child = env
        .command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn w4b");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`w4b {}` still ran after {secs} s: {}",
                args.join(" "),
                stderr(&out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_fifo_is_refused_at_once_not_waited_on() {
    let env = TestEnv::new();
    let fifo = env.root.path().join("disk.img");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let img = env.root.path().join("good.img");
    pi_disk(&img, &NORTH);
    let (f, g) = (fifo.to_str().unwrap(), img.to_str().unwrap());
    for args in [vec!["inspect", f], vec!["validate", f], vec!["diff", g, f]] {
        let out = run_bounded(&env, &args, 60);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        for want in [
            "w4b::image::not_a_file",
            "is a FIFO (named pipe), not an image file",
            "save it to a file",
        ] {
            assert!(err.contains(want), "{args:?}: missing {want:?} in {err}");
        }
    }
}

#[test]
fn a_terabyte_inode_in_a_small_image_fails_fast() {
    crate::oracle::require!("debugfs");
    let env = TestEnv::new();
    let img = env.root.path().join("disk.img");
    pi_disk(&img, &NORTH);
    // Cut the root filesystem out, give `/etc/motd` an `i_size` of 1 TiB, put it back.
    let v = json(&env, &img);
    let ext4 = &v["filesystems"][1];
    let start = ext4["offset"].as_u64().unwrap();
    let len = ext4["size"].as_u64().unwrap() as usize;
    let mut bytes = std::fs::read(&img).unwrap();
    let part = env.root.path().join("rootfs.img");
    std::fs::write(&part, &bytes[start as usize..start as usize + len]).unwrap();
    let out = Command::new("debugfs")
        .args(["-w", "-R", "sif /etc/motd size 1099511627776"])
        .arg(&part)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    bytes[start as usize..start as usize + len].copy_from_slice(&std::fs::read(&part).unwrap());
    std::fs::write(&img, &bytes).unwrap();
    let (i, good) = (img.to_str().unwrap(), env.root.path().join("good.img"));
    pi_disk(&good, &NORTH);
    let want = "(`/etc/motd`) is 1099511627776 bytes, more than the";
    for args in [
        vec!["inspect", "--tree", i],
        vec!["diff", good.to_str().unwrap(), i],
    ] {
        let out = run_bounded(&env, &args, 120);
        assert!(!out.status.success(), "{args:?}");
        // miette wraps long lines: compare with single spaces.
        let err = stderr(&out).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            err.contains("w4b::image::ext4") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    let out = run_bounded(&env, &["validate", i], 120);
    assert!(!out.status.success());
    let text = stdout(&out).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("the ext4 filesystem cannot be read") && text.contains(want),
        "{text}"
    );
}
