//! The `unpack` step against disk images made by the standard tools
//! (`tests/support/make-test-base.sh`: sfdisk, mkfs.vfat, mtools, mke2fs, debugfs), raw and
//! compressed, and fetched over HTTP first as a pipeline does. What the step reads is
//! cross-checked against what the tools wrote (`mtype`, `debugfs`) and against the
//! script's fixed contents.

#![allow(clippy::disallowed_methods)] // Tests run the image tools and read `CI`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use w4b::steps::fetch::{FetchConfig, FetchStep, Fetcher};
use w4b::steps::unpack::UnpackStep;
use w4b::store::AppStore;
use w4b::tree::{lookup, Blobs, Entry, Kind, TreePath};
use w4b_cache::{Digest, OutputRef};
use w4b_graph::{Outputs, RunContext, Step, StepError};

use crate::http;
use crate::testbase::images;

const BOOT_OFFSET: u64 = 8192 * 512;
const ROOT_OFFSET: u64 = (8192 + 131_072) * 512;

fn new_store() -> (tempfile::TempDir, Arc<AppStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
    (dir, store)
}

fn run(step: &dyn Step, store: &AppStore, inputs: &[Outputs]) -> Result<Outputs, StepError> {
    let cancel = AtomicBool::new(false);
    let progress = |_: u64, _: Option<u64>| {};
    let cx = RunContext {
        name: "//bases:rpios#unpack",
        inputs,
        cache: store,
        cancel: &cancel,
        progress: &progress,
        trees: &Default::default(),
        note: &|_| {},
    };
    step.run(&cx)
}

/// Unpacks the image file at `path` as if a fetch step had produced it.
fn unpack(store: &Arc<AppStore>, path: &Path) -> Result<Outputs, StepError> {
    let (digest, size) = store.local().put_file(path).unwrap();
    let mut fetched = Outputs::new();
    fetched.insert("file".into(), OutputRef { digest, size });
    let step = UnpackStep {
        store: store.clone(),
        image: path.display().to_string(),
    };
    run(&step, store, &[fetched])
}

fn entry(store: &AppStore, root: Digest, path: &str) -> Entry {
    lookup(store, root, &TreePath::parse(path).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("{path} is missing"))
}

fn content(store: &AppStore, root: Digest, path: &str) -> Vec<u8> {
    match entry(store, root, path).kind {
        Kind::File { digest, size } => {
            let bytes = Blobs::get(store, &digest).unwrap();
            assert_eq!(bytes.len() as u64, size, "{path}");
            bytes
        }
        other => panic!("{path} is not a file: {other:?}"),
    }
}

fn tool_output(args: &[&str]) -> Vec<u8> {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn code(e: &StepError) -> String {
    match e {
        StepError::Diagnostic(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
        other => format!("not a diagnostic: {other}"),
    }
}

#[test]
fn unpack_reads_both_partitions_and_the_table() {
    let Some(img) = images() else { return };
    let (_dir, store) = new_store();
    let out = unpack(&store, &img.raw).unwrap();
    let keys: Vec<_> = out.keys().map(String::as_str).collect();
    assert_eq!(keys, ["bootfs", "rootfs", "table"]);

    // Boot partition: exact bytes, cross-checked with mtools.
    let boot = out["bootfs"].digest;
    assert_eq!(
        content(&store, boot, "/cmdline.txt"),
        b"console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
    );
    let fat_img = format!("{}@@{BOOT_OFFSET}", img.raw.display());
    for path in [
        "/config.txt",
        "/kernel8.img",
        "/overlays/w1-gpio.dtbo",
        "/bcm2712-rpi-5-b.dtb",
    ] {
        let want = tool_output(&["mtype", "-i", &fat_img, &format!("::{path}")]);
        assert!(content(&store, boot, path) == want, "{path} differs from mtype's");
    }
    let config = String::from_utf8(content(&store, boot, "/config.txt")).unwrap();
    assert!(config.lines().any(|l| l == "arm_64bit=1"), "{config}");
    assert!(config.lines().any(|l| l == "dtparam=audio=on"), "{config}");
    assert_eq!(content(&store, boot, "/kernel8.img").len(), 2 << 20);
    assert!(matches!(entry(&store, boot, "/overlays").kind, Kind::Dir { .. }));

    // Root partition.
    let root = out["rootfs"].digest;
    let fstab = String::from_utf8(content(&store, root, "/etc/fstab")).unwrap();
    assert!(fstab.contains("PARTUUID=1a2b3c4d-01  /boot/firmware  vfat    defaults          0       2\n"));
    assert!(fstab.contains("PARTUUID=1a2b3c4d-02  /               ext4    defaults,noatime  0       1\n"));
    let ext4_img = std::env::temp_dir().join(format!("unpack-root-{}.img", std::process::id()));
    let st = Command::new("dd")
        .arg(format!("if={}", img.raw.display()))
        .arg(format!("of={}", ext4_img.display()))
        .args([
            "bs=512",
            &format!("skip={}", ROOT_OFFSET / 512),
            "status=none",
            "conv=sparse",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    for path in [
        "/etc/fstab",
        "/etc/passwd",
        "/usr/lib/libc.so.6",
        "/usr/bin/busybox",
    ] {
        let want = tool_output(&[
            "debugfs",
            "-R",
            &format!("cat {path}"),
            &ext4_img.display().to_string(),
        ]);
        assert!(
            content(&store, root, path) == want,
            "{path} differs from debugfs's"
        );
    }
    let _ = std::fs::remove_file(&ext4_img);

    let ping = entry(&store, root, "/usr/bin/ping");
    assert_eq!(
        ping.xattrs.get("security.capability").map(Vec::as_slice),
        Some(&[1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..])
    );
    assert_eq!(ping.mode, 0o755);
    let shadow = entry(&store, root, "/etc/shadow");
    assert_eq!((shadow.mode, shadow.uid, shadow.gid), (0o640, 0, 42));
    let home = entry(&store, root, "/home/pi");
    assert!(matches!(home.kind, Kind::Dir { .. }));
    assert_eq!((home.mode, home.uid, home.gid), (0o700, 1000, 1000));
    let bashrc = entry(&store, root, "/home/pi/.bashrc");
    assert_eq!((bashrc.uid, bashrc.gid), (1000, 1000));
    let sudo = entry(&store, root, "/usr/bin/sudo");
    assert_eq!((sudo.mode, sudo.uid, sudo.gid), (0o4755, 0, 0));
    match entry(&store, root, "/usr/bin/sh.busybox").kind {
        Kind::HardLink { target } => assert_eq!(target.to_string(), "/usr/bin/busybox"),
        other => panic!("not a hard link: {other:?}"),
    }
    let null = entry(&store, root, "/dev/null");
    assert_eq!(null.kind, Kind::CharDev { major: 1, minor: 3 });
    assert_eq!(null.mode, 0o666);
    let loop0 = entry(&store, root, "/dev/loop0");
    assert_eq!(loop0.kind, Kind::BlockDev { major: 7, minor: 0 });
    assert_eq!((loop0.mode, loop0.gid), (0o660, 6));
    assert_eq!(
        entry(&store, root, "/bin/sh").kind,
        Kind::Symlink {
            target: "../usr/bin/busybox".into()
        }
    );
    let firmware = entry(&store, root, "/boot/firmware");
    assert_eq!(
        firmware.kind,
        Kind::Dir {
            digest: w4b::tree::format::empty_dir_digest()
        }
    );
    assert_eq!(entry(&store, root, "/tmp").mode, 0o1777);
    assert_eq!(entry(&store, root, "/etc/hostname").mtime, 1_700_000_000);

    // The table: canonical JSON.
    let json = Blobs::get(store.as_ref(), &out["table"].digest).unwrap();
    assert_eq!(json.len() as u64, out["table"].size);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["kind"], "mbr");
    assert_eq!(v["disk_id"], "1a2b3c4d");
    assert_eq!(v["sector_size"], 512);
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let summary: Vec<_> = parts
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap(),
                p["start"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
                p["partuuid"].as_str().unwrap().to_string(),
                p["filesystem"].as_str().unwrap().to_string(),
                p["bootable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, 8192, "c".into(), "1a2b3c4d-01".into(), "fat".into(), false),
            (
                2,
                139_264,
                "83".into(),
                "1a2b3c4d-02".into(),
                "ext4".into(),
                false
            ),
        ]
    );
    // Canonical: re-serialising the parsed value (serde_json sorts object keys) is a no-op.
    assert_eq!(serde_json::to_vec(&v).unwrap(), json);
}

#[test]
fn compressed_and_raw_images_unpack_to_the_same_outputs() {
    let Some(img) = images() else { return };
    let (_dir, store) = new_store();
    let raw = unpack(&store, &img.raw).unwrap();
    for p in [&img.xz, &img.zst] {
        assert_eq!(unpack(&store, p).unwrap(), raw, "{}", p.display());
    }
    // And in a fresh store: nothing depends on what the store held before.
    let (_dir2, other) = new_store();
    assert_eq!(unpack(&other, &img.xz).unwrap(), raw);
}

#[test]
fn damaged_or_wrong_images_give_unpack_errors() {
    let Some(img) = images() else { return };
    let (dir, store) = new_store();
    let at = |name: &str| dir.path().join(name);

    // Truncated download: the partition table points past the end.
    let cut = at("cut.img");
    std::fs::copy(&img.raw, &cut).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    assert_eq!(code(&unpack(&store, &cut).unwrap_err()), "w4b::unpack::image");

    // A truncated .xz: a decompression error, not a short image.
    let xz = std::fs::read(&img.xz).unwrap();
    std::fs::write(at("cut.img.xz"), &xz[..xz.len() / 2]).unwrap();
    let e = unpack(&store, &at("cut.img.xz")).unwrap_err();
    assert_eq!(code(&e), "w4b::unpack::image");
    let chain = chain(&e);
    assert!(chain.contains("decompressing"), "{chain}");

    // Not a disk at all (an HTML error page).
    std::fs::write(at("page.img"), b"<html>404 not found</html>\n").unwrap();
    assert_eq!(
        code(&unpack(&store, &at("page.img")).unwrap_err()),
        "w4b::unpack::no_table"
    );

    // A bare root filesystem rather than a disk.
    let bare = at("root.img");
    let st = Command::new("dd")
        .arg(format!("if={}", img.raw.display()))
        .arg(format!("of={}", bare.display()))
        .args([
            "bs=512",
            &format!("skip={}", ROOT_OFFSET / 512),
            "status=none",
            "conv=sparse",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(code(&unpack(&store, &bare).unwrap_err()), "w4b::unpack::no_table");

    // The boot sector wiped: no FAT, and the message says what there is.
    let wiped = at("nofat.img");
    std::fs::copy(&img.raw, &wiped).unwrap();
    overwrite(&wiped, BOOT_OFFSET, &[0u8; 4096]);
    let e = unpack(&store, &wiped).unwrap_err();
    assert_eq!(code(&e), "w4b::unpack::no_fat");
    assert!(
        e.to_string()
            .contains("partition 1 (unknown), partition 2 (ext4)"),
        "{e}"
    );

    // The ext4 superblock wiped: no ext4.
    let wiped = at("noext4.img");
    std::fs::copy(&img.raw, &wiped).unwrap();
    overwrite(&wiped, ROOT_OFFSET + 1024, &[0u8; 1024]);
    assert_eq!(code(&unpack(&store, &wiped).unwrap_err()), "w4b::unpack::no_ext4");

    // Two FAT partitions: the start of the ext4 partition overwritten with the FAT one
    // (its type byte still says Linux; partitions are recognised by what they hold).
    let two = at("twofat.img");
    std::fs::copy(&img.raw, &two).unwrap();
    let fat = read_range(&img.raw, BOOT_OFFSET, 131_072 * 512);
    overwrite(&two, ROOT_OFFSET, &fat);
    let e = unpack(&store, &two).unwrap_err();
    assert_eq!(code(&e), "w4b::unpack::ambiguous");
    assert!(e.to_string().contains("partition 1, partition 2"), "{e}");
}

/// The error and its sources, one per line.
fn chain(e: &StepError) -> String {
    let mut lines = vec![e.to_string()];
    let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
        StepError::Diagnostic(d) => d.source(),
        _ => None,
    };
    while let Some(err) = cur {
        lines.push(err.to_string());
        cur = err.source();
    }
    lines.join("\n")
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::options().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read_range(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn a_missing_image_blob_is_an_unavailable_input() {
    let (_dir, store) = new_store();
    let missing = Digest::from(blake3::hash(b"never stored"));
    let mut fetched = Outputs::new();
    fetched.insert(
        "file".into(),
        OutputRef {
            digest: missing,
            size: 12,
        },
    );
    let step = UnpackStep {
        store: store.clone(),
        image: "rpios.img.xz".into(),
    };
    let e = run(&step, &store, &[fetched]).unwrap_err();
    assert!(
        matches!(e, StepError::InputUnavailable(d) if d == missing),
        "{e:?}"
    );
}

#[test]
fn a_fetched_image_unpacks_like_a_local_one() {
    let Some(img) = images() else { return };
    let bytes = std::fs::read(&img.zst).unwrap();
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let server = http::TestServer::start();
    server.serve("/images/rpios.img.zst", bytes);
    let (_dir, store) = new_store();
    let fetcher = Fetcher::new(&FetchConfig {
        system_proxy: false,
        ..FetchConfig::default()
    })
    .unwrap();
    let fetch = FetchStep {
        store: store.clone(),
        fetcher: Arc::new(fetcher),
        url: server.url("/images/rpios.img.zst"),
        sha256: sha,
        size: None,
        mirrors: Vec::new(),
        declared_in: "defs/bases/rpios.yaml:3:9".into(),
    };
    let fetched = run(&fetch, &store, &[]).unwrap();
    let step = UnpackStep {
        store: store.clone(),
        image: server.url("/images/rpios.img.zst"),
    };
    let out = run(&step, &store, &[fetched]).unwrap();
    let local = unpack(&store, &img.raw).unwrap();
    assert_eq!(out, local);
}
