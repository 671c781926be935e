//! Validation of disks written by w4b's own writers: a good Raspberry-Pi-like disk
//! passes; each kind of damage fails the check that names it.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use super::*;
use crate::formats::ext4::write::{write_ext4, Ext4Options, Size};
use crate::formats::fat::{write_fat32, FatOptions};
use crate::formats::fs::MemContents;

const SIG: u32 = 0x1a2b_3c4d;
const CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 fsck.repair=yes rootwait\n";
const FSTAB: &str = "proc /proc proc defaults 0 0\n\
PARTUUID=1a2b3c4d-01  /boot/firmware  vfat    defaults          0       2\n\
PARTUUID=1a2b3c4d-02  /               ext4    defaults,noatime  0       1\n";

fn node(path: &str, kind: NodeKind) -> Node {
    Node {
        path: path.into(),
        kind,
        mode: if path == "/" || !path.contains('.') {
            0o755
        } else {
            0o644
        },
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        xattrs: BTreeMap::new(),
    }
}

/// Nodes for `files` (paths with their parents created as directories) in walk order.
fn tree(files: &[(&str, &[u8])], contents: &mut MemContents) -> Vec<Node> {
    let mut map: BTreeMap<String, Option<&[u8]>> = BTreeMap::new();
    for (path, bytes) in files {
        let mut at = String::new();
        for part in path
            .trim_start_matches('/')
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            at.push('/');
            at.push_str(part);
            map.entry(at.clone()).or_insert(None);
        }
        map.insert(path.to_string(), Some(bytes));
    }
    let mut out = vec![node("/", NodeKind::Dir)];
    // BTreeMap order of full paths equals walk order for these simple names.
    for (path, bytes) in map {
        out.push(match bytes {
            None => node(&path, NodeKind::Dir),
            Some(b) => node(
                &path,
                NodeKind::File {
                    size: b.len() as u64,
                    content: contents.add(b),
                },
            ),
        });
    }
    out
}

struct Spec<'a> {
    boot: Vec<(&'a str, &'a [u8])>,
    root: Vec<(&'a str, &'a [u8])>,
}

fn good<'a>() -> Spec<'a> {
    Spec {
        boot: vec![
            ("/cmdline.txt", CMDLINE.as_bytes()),
            ("/config.txt", b"arm_64bit=1\n"),
            ("/kernel8.img", &[7u8; 5000]),
            ("/kernel_2712.img", &[8u8; 3000]),
            ("/bcm2711-rpi-4-b.dtb", b"dtb4"),
            ("/bcm2712-rpi-5-b.dtb", b"dtb5"),
            ("/overlays/w1-gpio.dtbo", b"overlay"),
        ],
        root: vec![("/etc/fstab", FSTAB.as_bytes()), ("/etc/hostname", b"hive\n")],
    }
}

/// An 80 MiB MBR disk (FAT32 at 4 MiB, ext4 after it) in a sparse temporary file.
fn disk(spec: &Spec) -> (File, u64) {
    let mut contents = MemContents::default();
    let boot = tree(&spec.boot, &mut contents);
    let root = tree(&spec.root, &mut contents);
    let size = 80u64 << 20;
    let table = PartitionTable::raspberry_pi_mbr(SIG, (34u64 << 20) / 512, size).unwrap();
    let mut f = tempfile::tempfile().unwrap();
    f.set_len(size).unwrap();
    table.write(&mut f, size).unwrap();
    let p1 = table.partition(1).unwrap().clone();
    let mut opts = FatOptions::new(p1.size_lba * 512, 0x1a2b_3c4d, "bootfs");
    opts.hidden_sectors = p1.start_lba as u32;
    write_fat32(&mut table.open(&mut f, 1).unwrap(), &boot, &contents, &opts).unwrap();
    let p2 = table.partition(2).unwrap().clone();
    let mut o = Ext4Options::new(Size::Fixed(p2.size_lba * 512), [7; 16], [9; 16], 1_700_000_000);
    o.label = "rootfs".into();
    write_ext4(&mut table.open(&mut f, 2).unwrap(), &root, &contents, &o).unwrap();
    (f, size)
}

fn validate(spec: &Spec, board: Option<&BoardCheck>) -> Report {
    let (mut f, size) = disk(spec);
    validate_disk(&mut f, size, board).unwrap()
}

/// The failed checks as `(name, file)`.
fn failed(r: &Report) -> Vec<(String, Option<String>)> {
    r.failures().map(|c| (c.name.clone(), c.file.clone())).collect()
}

fn replace<'a>(list: &mut Vec<(&'a str, &'a [u8])>, path: &'a str, bytes: Option<&'a [u8]>) {
    list.retain(|(p, _)| *p != path);
    if let Some(b) = bytes {
        list.push((path, b));
    }
}

#[test]
fn a_good_disk_passes_every_check() {
    let r = validate(&good(), board_check("pi4", "arm64").as_ref());
    assert!(r.passed(), "{r:#?}");
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    for rule in [
        "partition_table",
        "partition_alignment",
        "filesystems",
        "boot_fs",
        "root_fs",
        "cmdline",
        "fstab",
        "config_txt",
        "kernel",
        "device_tree",
    ] {
        assert!(names.contains(&rule), "{rule} missing from {names:?}");
    }
    assert!(r.checks.iter().all(|c| c.status == Status::Pass), "{r:#?}");
    let r = validate(&good(), board_check("pi5", "arm64").as_ref());
    assert!(r.passed(), "{r:#?}");
    // Without a board, any kernel and device tree will do.
    assert!(validate(&good(), None).passed());
}

#[test]
fn cmdline_root_on_a_missing_partition_fails() {
    let mut s = good();
    let bad = CMDLINE.replace("-02", "-03");
    replace(&mut s.boot, "/cmdline.txt", Some(bad.as_bytes()));
    let r = validate(&s, None);
    assert_eq!(
        failed(&r),
        [("cmdline".to_string(), Some("bootfs:/cmdline.txt".to_string()))]
    );
    let c = r.named("cmdline").next().unwrap();
    assert!(c.detail.contains("root=PARTUUID=1a2b3c4d-03"), "{}", c.detail);
    assert!(c.help.as_deref().unwrap().contains("PARTUUID=1a2b3c4d-02"));
}

#[test]
fn cmdline_root_on_the_boot_partition_fails() {
    let mut s = good();
    replace(&mut s.boot, "/cmdline.txt", Some(b"root=/dev/mmcblk0p1 rootwait"));
    let r = validate(&s, None);
    assert_eq!(failed(&r).len(), 1);
    assert!(r.named("cmdline").next().unwrap().detail.contains("holds FAT"));
    let mut s = good();
    replace(&mut s.boot, "/cmdline.txt", Some(b"root=/dev/mmcblk0p2 rootwait"));
    assert!(validate(&s, None).passed());
}

#[test]
fn cmdline_on_two_lines_or_missing_fails() {
    let mut s = good();
    replace(
        &mut s.boot,
        "/cmdline.txt",
        Some(b"console=tty1\nroot=PARTUUID=1a2b3c4d-02\n"),
    );
    let r = validate(&s, None);
    let details: Vec<&str> = r.named("cmdline").map(|c| c.detail.as_str()).collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(details[0].contains("only the first line"));
    assert!(details[1].contains("no `root=`"));
    let mut s = good();
    replace(&mut s.boot, "/cmdline.txt", None);
    let r = validate(&s, None);
    assert_eq!(
        failed(&r),
        [("cmdline".to_string(), Some("bootfs:/cmdline.txt".to_string()))]
    );
}

#[test]
fn fstab_naming_a_missing_partuuid_fails_with_its_line() {
    let mut s = good();
    let bad = FSTAB.replace("1a2b3c4d-01", "1a2b3c4d-05");
    replace(&mut s.root, "/etc/fstab", Some(bad.as_bytes()));
    let r = validate(&s, None);
    assert_eq!(
        failed(&r),
        [("fstab".to_string(), Some("rootfs:/etc/fstab:2".to_string()))]
    );
    // `nofail` makes a missing device harmless.
    let mut s = good();
    let ok = format!("{FSTAB}UUID=dead-beef /mnt/usb vfat defaults,nofail 0 0\n");
    replace(&mut s.root, "/etc/fstab", Some(ok.as_bytes()));
    assert!(validate(&s, None).passed());
}

#[test]
fn fstab_types_and_mount_points_must_match_the_partitions() {
    let mut s = good();
    let bad = FSTAB.replace("vfat", "ext4");
    replace(&mut s.root, "/etc/fstab", Some(bad.as_bytes()));
    let r = validate(&s, None);
    assert_eq!(
        failed(&r),
        [("fstab".to_string(), Some("rootfs:/etc/fstab:2".to_string()))]
    );
    // `/` from the boot partition, by label: wrong partition and wrong type.
    let mut s = good();
    let bad = "LABEL=bootfs / ext4 defaults 0 1\nLABEL=bootfs /boot/firmware vfat defaults 0 2\n";
    replace(&mut s.root, "/etc/fstab", Some(bad.as_bytes()));
    let r = validate(&s, None);
    let f = failed(&r);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f
        .iter()
        .all(|(n, file)| n == "fstab" && file.as_deref() == Some("rootfs:/etc/fstab:1")));
    // By filesystem label and UUID it resolves too.
    let mut s = good();
    let ok = "LABEL=rootfs / ext4 defaults 0 1\nUUID=1A2B-3C4D /boot/firmware vfat defaults 0 2\n";
    replace(&mut s.root, "/etc/fstab", Some(ok.as_bytes()));
    let r = validate(&s, None);
    assert!(r.passed(), "{r:#?}");
    // No fstab at all.
    let mut s = good();
    replace(&mut s.root, "/etc/fstab", None);
    assert_eq!(
        failed(&validate(&s, None)),
        [("fstab".to_string(), Some("rootfs:/etc/fstab".to_string()))]
    );
}

#[test]
fn a_missing_board_kernel_fails() {
    let mut s = good();
    replace(&mut s.boot, "/kernel_2712.img", None);
    let r = validate(&s, board_check("pi5", "arm64").as_ref());
    assert_eq!(
        failed(&r),
        [("kernel".to_string(), Some("bootfs:/kernel_2712.img".to_string()))]
    );
    // The pi4 needs only kernel8.img.
    assert!(validate(&s, board_check("pi4", "arm64").as_ref()).passed());
    let r = validate(&s, board_check("cm4", "arm64").as_ref());
    assert_eq!(
        failed(&r),
        [(
            "device_tree".to_string(),
            Some("bootfs:/bcm2711-rpi-cm4.dtb".to_string())
        )]
    );
}

#[test]
fn no_kernel_no_dtb_no_config_fail_without_a_board() {
    let s = Spec {
        boot: vec![("/cmdline.txt", CMDLINE.as_bytes()), ("/readme.txt", b"x")],
        root: good().root,
    };
    let r = validate(&s, None);
    let names: Vec<String> = failed(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["config_txt", "kernel", "device_tree"]);
}

#[test]
fn a_truncated_disk_fails_the_partition_table() {
    let (mut f, _) = disk(&good());
    let cut = 60u64 << 20;
    f.set_len(cut).unwrap();
    let r = validate_disk(&mut f, cut, None).unwrap();
    assert!(!r.passed());
    assert!(
        r.named("partition_table").all(|c| c.status == Status::Fail),
        "{r:#?}"
    );
    let err = r.into_result().unwrap_err();
    assert!(err.failures.iter().any(|f| f.rule == "partition_table"));
    let text = format!("{:?}", miette::Report::new(err));
    assert!(text.contains("w4b::validate::partition_table"), "{text}");
}

#[test]
fn a_corrupt_ext4_superblock_fails() {
    let (mut f, size) = disk(&good());
    // Partition 2 starts at 40 MiB; the superblock at +1024. Damage `s_inodes_count`,
    // which `metadata_csum` covers, keeping the magic.
    let sb = (40u64 << 20) + 1024;
    f.seek(SeekFrom::Start(sb)).unwrap();
    f.write_all(&[0xff, 0xff, 0xff, 0x7f]).unwrap();
    let r = validate_disk(&mut f, size, None).unwrap();
    let names: Vec<String> = failed(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["root_fs"], "{r:#?}");
    assert_eq!(r.named("fstab").next().unwrap().status, Status::Skip);
    // A destroyed magic leaves no ext4 filesystem at all.
    f.seek(SeekFrom::Start(sb + 0x38)).unwrap();
    f.write_all(&[0, 0]).unwrap();
    let r = validate_disk(&mut f, size, None).unwrap();
    let names: Vec<String> = failed(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["filesystems", "cmdline"], "{r:#?}");
}

#[test]
fn a_damaged_fat_fails_the_boot_fs() {
    let (mut f, size) = disk(&good());
    // The first FAT starts at reserved sector 32 of partition 1 (4 MiB): point the root
    // directory's chain (cluster 2) at cluster 2 itself, a loop.
    f.seek(SeekFrom::Start((4u64 << 20) + 32 * 512 + 8)).unwrap();
    f.write_all(&2u32.to_le_bytes()).unwrap();
    let r = validate_disk(&mut f, size, None).unwrap();
    let names: Vec<String> = failed(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["boot_fs"], "{r:#?}");
}

#[test]
fn trees_carry_digests_and_resolve_hard_links() {
    let (mut f, size) = disk(&good());
    let v = inspect_disk(&mut f, size, None, true).unwrap();
    assert!(v.report.passed());
    let root = v.root_tree.unwrap();
    let host = root.iter().find(|e| e.path == "/etc/hostname").unwrap();
    assert_eq!(
        host.kind,
        EntryKind::File {
            size: 5,
            blake3: *blake3::hash(b"hive\n").as_bytes()
        }
    );
    assert_eq!(v.layout.boot, Some(1));
    assert_eq!(v.layout.root, Some(2));
    assert_eq!(v.layout.part(1).unwrap().info.fs_label.as_deref(), Some("bootfs"));
    assert!(v
        .boot_tree
        .unwrap()
        .iter()
        .any(|e| e.path == "/overlays/w1-gpio.dtbo"));
}

#[test]
fn not_a_disk_fails_the_table_and_skips_the_rest() {
    let mut junk = std::io::Cursor::new(vec![0x42u8; 1 << 20]);
    let r = validate_disk(&mut junk, 1 << 20, None).unwrap();
    assert_eq!(failed(&r), [("partition_table".to_string(), None)]);
    assert!(r.checks.iter().skip(1).all(|c| c.status == Status::Skip));
}

#[test]
fn the_json_report_is_stable() {
    let r = validate(&good(), board_check("pi4", "arm64").as_ref());
    let json = serde_json::to_value(&r).unwrap();
    let first = &json["checks"][0];
    assert_eq!(first["name"], "partition_table");
    assert_eq!(first["status"], "pass");
    assert_eq!(first["file"], serde_json::Value::Null);
    assert!(first.get("help").is_none());
}

#[test]
fn validate_image_opens_compressed_files() {
    let (mut f, _) = disk(&good());
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.img");
    let mut out = File::create(&raw).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    std::io::copy(&mut f, &mut out).unwrap();
    drop(out);
    assert!(validate_image(&raw, None).unwrap().passed());
    let zst = dir.path().join("disk.img.zst");
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::write(&zst, zstd::stream::encode_all(&bytes[..], 1).unwrap()).unwrap();
    let r = validate_image(&zst, board_check("pi4", "arm64").as_ref()).unwrap();
    assert!(r.passed(), "{r:#?}");
    let missing = dir.path().join("nope.img");
    assert!(matches!(
        validate_image(&missing, None),
        Err(ValidateError::Image(_))
    ));
}

#[test]
fn a_gpt_disk_resolves_partuuids_and_partlabels() {
    use crate::formats::gpt::{Guid, LINUX_FILESYSTEM, MICROSOFT_BASIC_DATA};
    use crate::formats::partition::Partition;
    let root_guid = Guid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let cmdline = format!("root=PARTUUID={root_guid} rootwait\n");
    let fstab = format!(
        "PARTLABEL=boot /boot/firmware vfat defaults 0 2\nPARTUUID={root_guid} / ext4 defaults 0 1\n"
    );
    let mut s = good();
    replace(&mut s.boot, "/cmdline.txt", Some(cmdline.as_bytes()));
    replace(&mut s.root, "/etc/fstab", Some(fstab.as_bytes()));
    let mut contents = MemContents::default();
    let boot = tree(&s.boot, &mut contents);
    let root = tree(&s.root, &mut contents);
    let size = 80u64 << 20;
    let mut t = PartitionTable::new_gpt(Guid::from_u128(0xfeed));
    t.partitions.push(Partition::gpt(
        1,
        2048,
        36 << 11,
        MICROSOFT_BASIC_DATA,
        Guid::from_u128(0xb007),
        "boot",
    ));
    t.partitions.push(Partition::gpt(
        2,
        38 << 11,
        40 << 11,
        LINUX_FILESYSTEM,
        root_guid,
        "root",
    ));
    let mut f = tempfile::tempfile().unwrap();
    f.set_len(size).unwrap();
    t.write(&mut f, size).unwrap();
    let opts = FatOptions::new(36 << 20, 0x1234_5678, "bootfs");
    write_fat32(&mut t.open(&mut f, 1).unwrap(), &boot, &contents, &opts).unwrap();
    let o = Ext4Options::new(Size::Fixed(40 << 20), [7; 16], [9; 16], 1_700_000_000);
    write_ext4(&mut t.open(&mut f, 2).unwrap(), &root, &contents, &o).unwrap();
    let r = validate_disk(&mut f, size, None).unwrap();
    assert!(r.passed(), "{r:#?}");
    assert!(r
        .named("partition_table")
        .next()
        .unwrap()
        .detail
        .starts_with("GPT"));
    // A partition GUID of no partition fails.
    let mut s2 = good();
    let bad = "root=PARTUUID=00000000-0000-0000-0000-000000000001\n";
    replace(&mut s2.boot, "/cmdline.txt", Some(bad.as_bytes()));
    let mut contents = MemContents::default();
    let boot = tree(&s2.boot, &mut contents);
    write_fat32(&mut t.open(&mut f, 1).unwrap(), &boot, &contents, &opts).unwrap();
    let r = validate_disk(&mut f, size, None).unwrap();
    let names: Vec<String> = failed(&r).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["cmdline"], "{r:#?}");
}

mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        /// Damage anywhere in the tables, the boot sector and FATs, or the ext4
        /// metadata gives failed checks, never a panic or an `Err`.
        #[test]
        fn damaged_disks_give_reports_not_panics(
            edits in proptest::collection::vec((0u8..3, 0u64..256 * 1024, any::<u8>()), 1..32),
        ) {
            let (mut f, size) = disk(&good());
            for (region, at, v) in edits {
                let base = match region {
                    0 => 0,
                    1 => 4u64 << 20,
                    _ => 40u64 << 20,
                };
                f.seek(SeekFrom::Start(base + at)).unwrap();
                f.write_all(&[v]).unwrap();
            }
            let r = validate_disk(&mut f, size, None);
            prop_assert!(r.is_ok(), "{r:?}");
        }

        #[test]
        fn text_parsers_never_panic(text in "\\PC{0,200}") {
            let _ = cmdline::parse(&text);
            let _ = fstab::parse(&text);
            let _ = device::DeviceRef::parse(&text);
        }
    }
}

/// A summary cache over a file: keys are the BLAKE3 of the partition's bytes (a test may
/// read them; a build names them by chunk digests), with counts of hits and stores.
struct FileSummaries {
    disk: std::cell::RefCell<File>,
    stored: std::cell::RefCell<BTreeMap<[u8; 32], Vec<u8>>>,
    hits: std::cell::Cell<usize>,
    puts: std::cell::Cell<usize>,
}

impl FileSummaries {
    fn new(f: &File) -> FileSummaries {
        FileSummaries {
            disk: std::cell::RefCell::new(f.try_clone().unwrap()),
            stored: Default::default(),
            hits: Default::default(),
            puts: Default::default(),
        }
    }
}

impl FsSummaries for FileSummaries {
    fn key(&self, kind: &str, offset: u64, len: u64) -> Option<[u8; 32]> {
        let mut f = self.disk.borrow_mut();
        f.seek(SeekFrom::Start(offset)).unwrap();
        let mut h = blake3::Hasher::new();
        h.update(kind.as_bytes());
        std::io::copy(&mut std::io::Read::take(&mut *f, len), &mut h).unwrap();
        Some(*h.finalize().as_bytes())
    }
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let hit = self.stored.borrow().get(key).cloned();
        if hit.is_some() {
            self.hits.set(self.hits.get() + 1);
        }
        hit
    }
    fn put(&self, key: &[u8; 32], summary: &[u8]) {
        self.puts.set(self.puts.get() + 1);
        self.stored.borrow_mut().insert(*key, summary.to_vec());
    }
}

#[test]
fn filesystem_summaries_are_reused_for_unchanged_partitions_and_give_the_same_report() {
    let board = board_check("pi4", "arm64");
    let (mut f, size) = disk(&good());
    let plain = validate_disk_structure(&mut f, size, board.as_ref()).unwrap();
    let cache = FileSummaries::new(&f);
    let cold = validate_disk_structure_cached(&mut f, size, board.as_ref(), &cache).unwrap();
    assert_eq!((cache.hits.get(), cache.puts.get()), (0, 2));
    let warm = validate_disk_structure_cached(&mut f, size, board.as_ref(), &cache).unwrap();
    assert_eq!((cache.hits.get(), cache.puts.get()), (2, 2));
    let json = |r: &Report| serde_json::to_string(&r.checks).unwrap();
    assert_eq!(json(&cold), json(&plain));
    assert_eq!(json(&warm), json(&plain));

    // Another root filesystem (fstab names a missing partition): the boot summary is
    // reused, the root one is read, and the report finds the bad line.
    let mut spec = good();
    let bad = FSTAB.replace("1a2b3c4d-02", "1a2b3c4d-07");
    replace(&mut spec.root, "/etc/fstab", Some(bad.as_bytes()));
    let (mut g, size) = disk(&spec);
    let cache2 = FileSummaries::new(&g);
    *cache2.stored.borrow_mut() = cache.stored.borrow().clone();
    let r = validate_disk_structure_cached(&mut g, size, board.as_ref(), &cache2).unwrap();
    assert_eq!((cache2.hits.get(), cache2.puts.get()), (1, 1));
    assert_eq!(
        failed(&r),
        [("fstab".to_string(), Some("rootfs:/etc/fstab:3".to_string()))],
        "{r:#?}"
    );

    // A damaged filesystem is never stored: its failure is read again each time.
    let (mut h, size) = disk(&good());
    h.seek(SeekFrom::Start((4u64 << 20) + 32 * 512 + 8)).unwrap();
    h.write_all(&2u32.to_le_bytes()).unwrap();
    let cache3 = FileSummaries::new(&h);
    for _ in 0..2 {
        let r = validate_disk_structure_cached(&mut h, size, None, &cache3).unwrap();
        assert_eq!(
            failed(&r).into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["boot_fs"]
        );
    }
    assert_eq!(
        (cache3.hits.get(), cache3.puts.get()),
        (1, 1),
        "only the root's summary is stored and reused"
    );
}
