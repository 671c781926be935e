//! The disk pipeline end to end, step by step through a real store: `unpack` a base made
//! by the standard tools (`tests/support/make-test-base.sh`), `graft`, a changeset,
//! `split`, `mkfs-fat`, `mkfs-ext4`, `disk`, `compress` — and the result judged by the
//! reference tools: `sfdisk --json` (same signature, starts, types), `fsck.fat -n` and
//! `e2fsck -fn` on the partitions, `debugfs` and `mtype` for files a layer added on each
//! side of the boot mount point, `zstd -d` and `sha256sum` for the image, `bmaptool copy`
//! for the block map.

#![allow(clippy::disallowed_methods)] // Tests run the image tools and read `CI`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use w4b::formats::ext4::Ext4;
use w4b::formats::fat::read_fat;
use w4b::steps::compress::{CompressStep, ImageCodec};
use w4b::steps::disk::DiskStep;
use w4b::steps::graft::{GraftStep, SplitStep};
use w4b::steps::mkfs::{FsReport, MkfsExt4Step, MkfsFatStep, RootSize};
use w4b::steps::table::TableJson;
use w4b::steps::unpack::UnpackStep;
use w4b::store::AppStore;
use w4b::tree::fs::from_nodes;
use w4b::tree::layer::{Changeset, Op};
use w4b::tree::{Blobs, Entry, TreePath};
use w4b_cache::{Digest, OutputRef};
use w4b_graph::{Outputs, RunContext, Step, StepError};

const EPOCH: i64 = 1_700_000_000;
const MIB: u64 = 1 << 20;

fn new_store() -> (tempfile::TempDir, Arc<AppStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
    (dir, store)
}

fn run(step: &dyn Step, store: &AppStore, inputs: &[Outputs]) -> Result<Outputs, StepError> {
    let cancel = AtomicBool::new(false);
    let progress = |_: u64, _: Option<u64>| {};
    let cx = RunContext {
        name: "//hives:test#step",
        inputs,
        cache: store,
        cancel: &cancel,
        progress: &progress,
        trees: &Default::default(),
        note: &|_| {},
    };
    step.run(&cx)
}

fn tree_outputs(name: &str, digest: Digest) -> Outputs {
    let mut o = Outputs::new();
    o.insert(name.into(), OutputRef { digest, size: 0 });
    o
}

fn tool(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything one run of the pipeline produced.
struct Built {
    unpacked: Outputs,
    split: Outputs,
    fat: Outputs,
    ext4: Outputs,
    disk: OutputRef,
    compressed: Outputs,
}

/// Runs the whole chain on the base in `store`, with `changes` applied to the combined
/// tree.
fn build(store: &Arc<AppStore>, raw: &Path, changes: Option<Changeset>, size: RootSize) -> Built {
    let (digest, size_bytes) = store.local().put_file(raw).unwrap();
    let mut fetched = Outputs::new();
    fetched.insert(
        "file".into(),
        OutputRef {
            digest,
            size: size_bytes,
        },
    );
    let unpack = UnpackStep {
        store: store.clone(),
        image: "base.img".into(),
    };
    let unpacked = run(&unpack, store, &[fetched]).unwrap();
    let graft = GraftStep {
        store: store.clone(),
        boot_mount: None,
        boot_mount_location: None,
    };
    let grafted = run(&graft, store, std::slice::from_ref(&unpacked)).unwrap();
    let mut tree = grafted["tree"].digest;
    if let Some(set) = changes {
        tree = w4b::tree::layer::apply(store.as_ref(), tree, &[set], EPOCH).unwrap();
    }
    let split_step = SplitStep {
        store: store.clone(),
        boot_mount: None,
        boot_mount_location: None,
        part: None,
    };
    let split = run(
        &split_step,
        store,
        &[tree_outputs("tree", tree), unpacked.clone()],
    )
    .unwrap();
    let fat_step = MkfsFatStep {
        store: store.clone(),
        size: None,
        size_location: None,
        label: None,
        label_location: None,
        volume_id: None,
        volume_id_location: None,
    };
    let fat = run(&fat_step, store, &[split.clone(), unpacked.clone()]).unwrap();
    let ext4_step = MkfsExt4Step {
        store: store.clone(),
        epoch: w4b::steps::epoch::Epoch::fixed(EPOCH),
        size,
        size_location: None,
        verify_memos: false,
    };
    let ext4 = run(&ext4_step, store, &[split.clone(), unpacked.clone()]).unwrap();
    let disk_step = DiskStep { store: store.clone() };
    let disk = run(&disk_step, store, &[unpacked.clone(), fat.clone(), ext4.clone()]).unwrap()["disk"];
    let mut outs = Outputs::new();
    outs.insert("disk".into(), disk);
    let compress = CompressStep {
        store: store.clone(),
        codec: ImageCodec::Zstd { level: 3 },
        codec_location: None,
        threads: 2,
        span_chunks: ImageCodec::Zstd { level: 3 }.default_span_chunks(),
        file_name: "test.img.zst".into(),
        file_name_location: None,
        verify_memos: false,
    };
    let compressed = run(&compress, store, &[outs]).unwrap();
    Built {
        unpacked,
        split,
        fat,
        ext4,
        disk,
        compressed,
    }
}

fn export(store: &AppStore, digest: Digest, dest: &Path) {
    store.export(&digest, dest).unwrap();
}

/// Partition `index` of the disk image at `disk`, copied out to `dest`.
fn extract(disk: &Path, table: &serde_json::Value, index: usize, dest: &Path) {
    let p = &table["partitiontable"]["partitions"][index];
    let start = p["start"].as_u64().unwrap();
    let size = p["size"].as_u64().unwrap();
    tool(&[
        "dd",
        &format!("if={}", disk.display()),
        &format!("of={}", dest.display()),
        "bs=512",
        &format!("skip={start}"),
        &format!("count={size}"),
        "conv=sparse",
        "status=none",
    ]);
}

fn sfdisk(disk: &Path) -> serde_json::Value {
    serde_json::from_str(&tool(&["sfdisk", "--json", disk.to_str().unwrap()])).unwrap()
}

fn report(store: &AppStore, out: &Outputs) -> FsReport {
    serde_json::from_slice(&Blobs::get(store, &out["report"].digest).unwrap()).unwrap()
}

#[test]
fn an_unchanged_base_round_trips_through_the_pipeline_and_the_tools_agree() {
    let Some(imgs) = crate::testbase::images() else {
        return;
    };
    let raw = &imgs.raw;
    let (dir, store) = new_store();
    let b = build(&store, raw, None, RootSize::Base);

    // split(graft(bootfs, rootfs)) is exactly what unpack gave.
    assert_eq!(b.split["bootfs"].digest, b.unpacked["bootfs"].digest);
    assert_eq!(b.split["rootfs"].digest, b.unpacked["rootfs"].digest);

    // The table: schema 2 with the base's identities and the fstab's mount point.
    let table = TableJson::parse(&Blobs::get(store.as_ref(), &b.unpacked["table"].digest).unwrap()).unwrap();
    assert_eq!(table.boot_mount, "/boot/firmware");
    assert_eq!(table.disk_size, std::fs::metadata(raw).unwrap().len());
    let fat_id = table.partitions[0].fat.clone().unwrap();
    assert_eq!(fat_id.volume_id.as_deref(), Some("1a2b3c4d"));
    assert_eq!(fat_id.label.as_deref(), Some("bootfs"));
    assert_eq!(fat_id.hidden_sectors, 8192);
    let ext4_id = table.partitions[1].ext4.clone().unwrap();
    assert_eq!(ext4_id.uuid, "0b0e0e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f");
    assert_eq!(ext4_id.hash_seed, "5a6b7c8d-0b0e-4e0f-9a2b-1c3d4e5f6a7b");
    assert_eq!(ext4_id.label, "rootfs");

    // Both partition images read back to the trees unpack gave.
    let fat_path = dir.path().join("boot.fat");
    export(&store, b.fat["fs"].digest, &fat_path);
    let f = std::fs::File::open(&fat_path).unwrap();
    let mut r = &f;
    let fat = read_fat(&mut r, 0, b.fat["fs"].size).unwrap();
    let reread = from_nodes(store.as_ref(), fat.nodes(), &fat).unwrap();
    assert_eq!(
        reread, b.unpacked["bootfs"].digest,
        "the FAT re-reads to the base's boot tree"
    );
    let ext4_path = dir.path().join("root.ext4");
    export(&store, b.ext4["fs"].digest, &ext4_path);
    let f = std::fs::File::open(&ext4_path).unwrap();
    let ext4 = Ext4::open(&f, 0, b.ext4["fs"].size).unwrap();
    let reread = from_nodes(store.as_ref(), &ext4.nodes().unwrap(), &ext4).unwrap();
    assert_eq!(
        reread, b.unpacked["rootfs"].digest,
        "the ext4 re-reads to the base's root tree"
    );
    let r = report(&store, &b.ext4);
    assert!(!r.grown, "{r:?}");
    assert_eq!(r.bytes, r.base_bytes);

    // The disk: the base's table, byte for byte where sfdisk looks.
    let disk_path = dir.path().join("disk.img");
    export(&store, b.disk.digest, &disk_path);
    assert_eq!(b.disk.size, std::fs::metadata(raw).unwrap().len());
    let (ours, theirs) = (sfdisk(&disk_path), sfdisk(raw));
    assert_eq!(ours["partitiontable"]["id"], theirs["partitiontable"]["id"]);
    assert_eq!(ours["partitiontable"]["label"], "dos");
    let strip = |v: &serde_json::Value| -> Vec<(u64, u64, String)> {
        v["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["start"].as_u64().unwrap(),
                    p["size"].as_u64().unwrap(),
                    p["type"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&ours), strip(&theirs));
    let p1 = dir.path().join("p1");
    let p2 = dir.path().join("p2");
    extract(&disk_path, &ours, 0, &p1);
    extract(&disk_path, &ours, 1, &p2);
    tool(&["fsck.fat", "-n", p1.to_str().unwrap()]);
    tool(&["e2fsck", "-fn", p2.to_str().unwrap()]);
    let stats = tool(&["debugfs", "-R", "stats", p2.to_str().unwrap()]);
    assert!(stats.contains("Filesystem volume name:   rootfs"), "{stats}");
    assert!(stats.contains("0b0e0e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f"), "{stats}");
    assert!(
        tool(&["mtype", "-i", p1.to_str().unwrap(), "::cmdline.txt"]).contains("root=PARTUUID=1a2b3c4d-02")
    );

    // The disk is a chunk index in the store whose zero chunks are never stored: it holds
    // far fewer bytes than its size.
    let idx = store
        .inner()
        .index(&b.disk.digest)
        .unwrap()
        .expect("the disk is a chunk index");
    let stored: u64 = idx
        .chunks
        .iter()
        .filter(|c| !c.is_zero())
        .map(|c| u64::from(c.len))
        .sum();
    assert!(
        stored < b.disk.size / 4,
        "{stored} of {} bytes stored",
        b.disk.size
    );

    // The image decompresses to the disk; the sha256 line names it; the bmap copies it.
    let img = dir.path().join("test.img.zst");
    export(&store, b.compressed["image"].digest, &img);
    let raw_again = dir.path().join("again.img");
    tool(&[
        "zstd",
        "-q",
        "-d",
        "-o",
        raw_again.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&raw_again).unwrap(),
        std::fs::read(&disk_path).unwrap()
    );
    let line =
        String::from_utf8(Blobs::get(store.as_ref(), &b.compressed["sha256"].digest).unwrap()).unwrap();
    let sums = dir.path().join("test.img.zst.sha256");
    std::fs::write(&sums, &line).unwrap();
    let check = Command::new("sha256sum")
        .args(["-c", sums.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let bmap = dir.path().join("test.bmap");
    export(&store, b.compressed["bmap"].digest, &bmap);
    let copy = dir.path().join("copied.img");
    tool(&[
        "bmaptool",
        "copy",
        "--bmap",
        bmap.to_str().unwrap(),
        disk_path.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&disk_path).unwrap());

    // Determinism: another store, the same bytes.
    let (_dir2, store2) = new_store();
    let again = build(&store2, raw, None, RootSize::Base);
    assert_eq!(again.disk, b.disk);
    assert_eq!(again.compressed, b.compressed);
}

#[test]
fn files_a_layer_adds_land_on_their_partition_and_a_grown_root_stays_clean() {
    let Some(imgs) = crate::testbase::images() else {
        return;
    };
    let raw = &imgs.raw;
    let (dir, store) = new_store();
    let put = |path: &str, text: &str| {
        let digest = Blobs::put(store.as_ref(), text.as_bytes()).unwrap();
        Op::Put {
            path: TreePath::parse(path).unwrap(),
            entry: Entry {
                mtime: EPOCH,
                ..Entry::file(digest, text.len() as u64, 0o644)
            },
        }
    };
    let set = Changeset::new(vec![
        put("/etc/w4b-hive", "north\n"),
        put("/boot/firmware/w4b.txt", "dtoverlay=w1-gpio\n"),
    ]);
    // 300 MiB free asks for more than the base's 188 MiB root filesystem.
    let b = build(&store, raw, Some(set), RootSize::Grow { headroom: 300 * MIB });
    let r = report(&store, &b.ext4);
    assert!(r.grown && r.bytes > r.base_bytes, "{r:?}");
    assert!(r.free_bytes >= 300 * MIB, "{r:?}");

    let disk_path = dir.path().join("disk.img");
    export(&store, b.disk.digest, &disk_path);
    let (ours, theirs) = (sfdisk(&disk_path), sfdisk(raw));
    assert_eq!(ours["partitiontable"]["id"], theirs["partitiontable"]["id"]);
    let (o2, t2) = (
        &ours["partitiontable"]["partitions"][1],
        &theirs["partitiontable"]["partitions"][1],
    );
    assert_eq!(o2["start"], t2["start"]);
    assert!(
        o2["size"].as_u64().unwrap() > t2["size"].as_u64().unwrap(),
        "{o2} vs {t2}"
    );
    assert!(o2["size"].as_u64().unwrap() * 512 >= r.bytes);
    for field in ["start", "size", "type"] {
        assert_eq!(
            ours["partitiontable"]["partitions"][0][field],
            theirs["partitiontable"]["partitions"][0][field]
        );
    }

    let p1 = dir.path().join("p1");
    let p2 = dir.path().join("p2");
    extract(&disk_path, &ours, 0, &p1);
    extract(&disk_path, &ours, 1, &p2);
    tool(&["fsck.fat", "-n", p1.to_str().unwrap()]);
    tool(&["e2fsck", "-fn", p2.to_str().unwrap()]);
    let hive = tool(&["debugfs", "-R", "cat /etc/w4b-hive", p2.to_str().unwrap()]);
    assert_eq!(hive, "north\n");
    let fw = tool(&["mtype", "-i", p1.to_str().unwrap(), "::w4b.txt"]);
    assert_eq!(fw, "dtoverlay=w1-gpio\n");
    // The boot file is not on the root filesystem, whose mount point stays empty.
    let ls = tool(&["debugfs", "-R", "ls -l /boot/firmware", p2.to_str().unwrap()]);
    assert!(!ls.contains("w4b.txt"), "{ls}");
}
