//! Tests of the assembly by reference: the disk's flat bytes equal what the copy-based
//! assembler (the step before version 2, kept here as [`by_copy`]) wrote for the same
//! images, over MBR and GPT, grown and moved partitions, images of odd lengths, images
//! stored as plain blobs and as indexes, and an unaligned partition; the images' chunks
//! are really referenced, not copied; `sfdisk` reads the table; damaged inputs are
//! unavailable inputs.

#![allow(clippy::disallowed_methods)] // spawns `sfdisk`, the oracle

use std::io::Cursor;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use super::*;
use crate::oracle::have;
use crate::steps::table::{GptJson, PartitionJson, TABLE_SCHEMA};
use crate::tree::Blobs;

const MIB: u64 = 1 << 20;

fn open_store() -> (tempfile::TempDir, Arc<AppStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
    (dir, store)
}

/// `store` as a later process opens it: nothing remembered as hashed, so damage done to
/// its files since is found (a process hashes each blob once).
pub(super) fn reopened(store: &AppStore) -> Arc<AppStore> {
    Arc::new(AppStore::open(store.local().root(), None, false).unwrap())
}

/// Partition `index` of `size` sectors at `start`, bootable when it is the first.
pub(super) fn part(
    index: u32,
    start: u64,
    size: u64,
    fs: FsKind,
    type_id: &str,
    partuuid: &str,
) -> PartitionJson {
    PartitionJson {
        attributes: None,
        bootable: index == 1,
        ext4: None,
        fat: None,
        filesystem: fs,
        index,
        name: None,
        partuuid: Some(partuuid.into()),
        size,
        start,
        type_id: type_id.into(),
    }
}

/// A 24 MiB MBR disk: FAT at 4 MiB (8 MiB), ext4 at 12 MiB (12 MiB), as Raspberry Pi OS
/// lays them out (4 MiB boundaries), only smaller.
fn mbr() -> TableJson {
    TableJson {
        boot_code: Some("fa".repeat(BOOT_CODE_LEN)),
        boot_mount: "/boot/firmware".into(),
        disk_id: "1a2b3c4d".into(),
        disk_size: 24 * MIB,
        gpt: None,
        kind: "mbr".into(),
        partitions: vec![
            part(1, 8192, 16_384, FsKind::Fat, "c", "1a2b3c4d-01"),
            part(2, 24_576, 24_576, FsKind::Ext4, "83", "1a2b3c4d-02"),
        ],
        schema: TABLE_SCHEMA,
        sector_size: 512,
    }
}

/// [`mbr`] as a GPT: the last partition leaves 33 sectors for the backup entries and
/// header, in the disk's last chunk.
fn gpt() -> TableJson {
    let mut t = mbr();
    t.boot_code = None;
    t.kind = "gpt".into();
    t.disk_id = "00000000-0000-0000-0000-00000000feed".into();
    t.gpt = Some(GptJson {
        entry_count: 128,
        first_usable_lba: 34,
        last_usable_lba: None,
    });
    t.partitions[0].type_id = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7".into();
    t.partitions[0].partuuid = Some("00000000-0000-0000-0000-0000000000b1".into());
    t.partitions[0].name = Some("boot".into());
    t.partitions[1].type_id = "0fc63daf-8483-4772-8e79-3d69d8477de4".into();
    t.partitions[1].partuuid = Some("00000000-0000-0000-0000-0000000000b2".into());
    t.partitions[1].name = Some("root".into());
    t.partitions[1].size -= 33;
    t
}

/// `len` bytes of filesystem-like content: noise (splitmix64 from `seed`, so images of
/// different seeds share no chunk), chunk 2 all zeros (a hole), and a zero 4 KiB block
/// now and then.
fn fs_bytes(len: u64, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize + 8);
    let mut state = seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    while (out.len() as u64) < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len as usize);
    for (block, bytes) in out.chunks_mut(4096).enumerate() {
        if block / 256 == 2 || block % 7 == 3 {
            bytes.fill(0);
        }
    }
    out
}

/// An image stored as an index of 1 MiB chunks.
fn fs_index(store: &AppStore, bytes: &[u8]) -> OutputRef {
    let mut w = store.local().chunked_writer().unwrap();
    w.write_all(bytes).unwrap();
    let (digest, size) = w.commit().unwrap();
    OutputRef { digest, size }
}

/// An image stored as a plain blob.
fn fs_blob(store: &AppStore, bytes: &[u8]) -> OutputRef {
    OutputRef {
        digest: Blobs::put(store, bytes).unwrap(),
        size: bytes.len() as u64,
    }
}

fn outputs(name: &str, o: OutputRef) -> Outputs {
    let mut out = Outputs::new();
    out.insert(name.into(), o);
    out
}

fn inputs(store: &AppStore, t: &TableJson, boot: OutputRef, root: OutputRef) -> Vec<Outputs> {
    let json = serde_json::to_vec(t).unwrap();
    let table = OutputRef {
        digest: Blobs::put(store, &json).unwrap(),
        size: json.len() as u64,
    };
    vec![outputs("table", table), outputs("fs", boot), outputs("fs", root)]
}

struct Ran {
    disk: OutputRef,
    notes: Vec<String>,
}

fn run(store: &Arc<AppStore>, ins: &[Outputs], cancelled: bool) -> Result<Ran, StepError> {
    let step = DiskStep { store: store.clone() };
    let cancel = AtomicBool::new(cancelled);
    let last = Mutex::new(None);
    let notes = Mutex::new(Vec::new());
    let progress = |d: u64, t: Option<u64>| *last.lock().unwrap() = Some((d, t));
    let note = |m: &str| notes.lock().unwrap().push(m.to_owned());
    let cx = RunContext {
        name: "//images:t#disk",
        inputs: ins,
        cache: store.as_ref(),
        cancel: &cancel,
        progress: &progress,
        trees: &Default::default(),
        note: &note,
    };
    let out = step.run(&cx)?;
    let disk = out["disk"];
    assert_eq!(*last.lock().unwrap(), Some((disk.size, Some(disk.size))));
    Ok(Ran {
        disk,
        notes: notes.into_inner().unwrap(),
    })
}

use crate::steps::compress::tests::output_bytes as flat;

/// The disk as the copy-based assembler (`disk` version 1) wrote it: the table into a
/// zeroed disk, then each image copied sparsely (zero runs seeked over) to its offset.
fn by_copy(store: &AppStore, t: &TableJson, boot: &OutputRef, root: &OutputRef) -> Vec<u8> {
    let l = layout(t, boot.size, root.size).unwrap();
    let mut disk = Cursor::new(vec![0u8; l.disk_size as usize]);
    l.table.write(&mut disk, l.disk_size).unwrap();
    for (index, offset) in &l.placements {
        let kind = t
            .partitions
            .iter()
            .find(|p| p.index == *index)
            .map(|p| p.filesystem);
        let fs = if kind == Some(FsKind::Fat) { boot } else { root };
        disk.seek(SeekFrom::Start(*offset)).unwrap();
        crate::image::copy_sparse(Cursor::new(flat(store, fs)), &mut disk).unwrap();
    }
    disk.into_inner()
}

fn blob_files(store: &AppStore) -> std::collections::BTreeSet<String> {
    let mut v = std::collections::BTreeSet::new();
    let root = store.local().root().join("v1/blobs");
    for d in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            v.insert(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    v
}

fn blob_path(store: &AppStore, d: &Digest) -> std::path::PathBuf {
    let hex = d.to_string();
    store.local().root().join("v1/blobs").join(&hex[..2]).join(hex)
}

fn index_of(store: &AppStore, o: &OutputRef) -> ChunkIndex {
    store.inner().index(&o.digest).unwrap().expect("an index")
}

/// Builds a disk from `t` and the two images (`blob` chooses plain blobs over indexes),
/// asserts its bytes equal [`by_copy`]'s, and returns it with the chunks it stored.
fn check(
    store: &Arc<AppStore>,
    t: &TableJson,
    boot: (&[u8], bool),
    root: (&[u8], bool),
) -> (Ran, OutputRef, OutputRef, Vec<String>) {
    let put = |(bytes, blob): (&[u8], bool)| match blob {
        true => fs_blob(store, bytes),
        false => fs_index(store, bytes),
    };
    let (b, r) = (put(boot), put(root));
    let ins = inputs(store, t, b, r);
    let before = blob_files(store);
    let ran = run(store, &ins, false).unwrap();
    let added: Vec<String> = blob_files(store).difference(&before).cloned().collect();
    let ours = flat(store, &ran.disk);
    let theirs = by_copy(store, t, &b, &r);
    assert_eq!(ours.len(), theirs.len());
    let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(first, None, "the disks differ first at byte {first:?}");
    (ran, b, r, added)
}

/// Asserts that the disk's chunks from `at` on are image `fs`'s full chunks.
fn assert_references(store: &AppStore, disk: &OutputRef, fs: &OutputRef, at: u64) {
    let d = index_of(store, disk);
    let f = index_of(store, fs);
    let full = (fs.size / MIB) as usize;
    let first = (at / MIB) as usize;
    assert_eq!(d.chunks[first..first + full], f.chunks[..full]);
}

#[test]
fn an_unchanged_mbr_layout_references_every_image_chunk_and_renders_only_the_table() {
    let (_dir, store) = open_store();
    let (boot, root) = (fs_bytes(8 * MIB, 1), fs_bytes(12 * MIB, 2));
    let (ran, b, r, added) = check(&store, &mbr(), (&boot, false), (&root, false));
    assert_eq!(ran.disk.size, 24 * MIB);
    assert_references(&store, &ran.disk, &b, 4 * MIB);
    assert_references(&store, &ran.disk, &r, 12 * MIB);
    // Only chunk 0 (the MBR) is new; chunks 1-3 are zeros, never stored.
    let d = index_of(&store, &ran.disk);
    assert_eq!(added, vec![d.chunks[0].digest.to_string()]);
    assert!(d.chunks[1..4].iter().all(|c| c.is_zero()));
    assert!(
        ran.notes
            .iter()
            .any(|n| n == "20 chunks by reference, 1 rendered, 3 zero"),
        "{:?}",
        ran.notes
    );
    // Deterministic: the same inputs name the same disk.
    let again = run(&store, &inputs(&store, &mbr(), b, r), false).unwrap();
    assert_eq!(again.disk, ran.disk);
}

#[test]
fn a_grown_boot_and_root_move_and_resize_partitions_and_the_root_edge_is_rendered() {
    let (_dir, store) = open_store();
    // Boot grows to 12 MiB, which moves the root to 16 MiB; the root, 14 MiB and a bit,
    // grows to 16 MiB and ends in a partial chunk.
    let (boot, root) = (fs_bytes(9 * MIB, 3), fs_bytes(14 * MIB + 300_000, 4));
    let (ran, b, r, added) = check(&store, &mbr(), (&boot, false), (&root, false));
    let l = layout(&mbr(), b.size, r.size).unwrap();
    assert_eq!(l.placements, vec![(1, 4 * MIB), (2, 16 * MIB)]);
    assert_eq!(ran.disk.size, 32 * MIB);
    assert_references(&store, &ran.disk, &b, 4 * MIB);
    assert_references(&store, &ran.disk, &r, 16 * MIB);
    let d = index_of(&store, &ran.disk);
    // New: the MBR chunk and the root's last chunk (its 300,000 bytes, then zeros); the
    // rest of the grown partition is zeros.
    let edge = d.chunks[16 + 14];
    assert_ne!(
        edge,
        index_of(&store, &r).chunks[14],
        "the short chunk is padded, so new"
    );
    assert_eq!(edge.len as u64, MIB);
    let mut want = vec![d.chunks[0].digest.to_string(), edge.digest.to_string()];
    want.sort();
    assert_eq!(added, want);
    assert!(d.chunks[31].is_zero());
}

#[test]
fn a_gpt_disk_renders_its_primary_and_backup_table_chunks() {
    let (_dir, store) = open_store();
    // The root's image ends inside the last chunk, beside the backup GPT.
    let (boot, root) = (fs_bytes(8 * MIB, 5), fs_bytes(11 * MIB + 5000, 6));
    let (ran, b, r, added) = check(&store, &gpt(), (&boot, false), (&root, false));
    assert_eq!(ran.disk.size, 24 * MIB);
    assert_references(&store, &ran.disk, &b, 4 * MIB);
    assert_references(&store, &ran.disk, &r, 12 * MIB);
    let d = index_of(&store, &ran.disk);
    let mut want = vec![d.chunks[0].digest.to_string(), d.chunks[23].digest.to_string()];
    want.sort();
    assert_eq!(added, want);
}

#[test]
fn a_grown_gpt_disk_keeps_its_backup_area_after_the_moved_root() {
    let (_dir, store) = open_store();
    let (boot, root) = (fs_bytes(5 * MIB + 17, 7), fs_bytes(20 * MIB + 1, 8));
    let (ran, ..) = check(&store, &gpt(), (&boot, false), (&root, false));
    let l = layout(&gpt(), 5 * MIB + 17, 20 * MIB + 1).unwrap();
    assert_eq!(ran.disk.size, l.disk_size);
    assert_eq!(l.disk_size % MIB, 33 * 512, "the disk's last chunk is short");
}

#[test]
fn images_stored_as_plain_blobs_are_rendered_chunk_by_chunk() {
    let (_dir, store) = open_store();
    let (boot, root) = (fs_bytes(8 * MIB, 9), fs_bytes(12 * MIB - 4096, 10));
    let (ran, _, r, _) = check(&store, &mbr(), (&boot, true), (&root, false));
    // The blob's chunks are rendered (its zero chunk stays a zero chunk); the index's are
    // referenced but for its short last one.
    assert_references(&store, &ran.disk, &r, 12 * MIB);
    assert!(
        ran.notes
            .iter()
            .any(|n| n == "11 chunks by reference, 10 rendered, 3 zero"),
        "{:?}",
        ran.notes
    );
    // Both as blobs: nothing to reference.
    let (blobs, ..) = check(&store, &mbr(), (&boot, true), (&root, true));
    assert!(
        blobs
            .notes
            .iter()
            .any(|n| n == "0 chunks by reference, 21 rendered, 3 zero"),
        "{:?}",
        blobs.notes
    );
    // Rendered chunks are the images' chunks: the disk's index is the same whichever way
    // its images were stored.
    let (indexes, ..) = check(&store, &mbr(), (&boot, false), (&root, false));
    assert_eq!(blobs.disk, ran.disk);
    assert_eq!(indexes.disk, ran.disk);
}

#[test]
fn an_unaligned_partition_is_rendered_and_named_in_a_note() {
    let (_dir, store) = open_store();
    let mut t = mbr();
    // A base whose FAT starts 100 sectors past 4 MiB and is a little shorter.
    t.partitions[0].start += 100;
    t.partitions[0].size -= 100;
    let (boot, root) = (fs_bytes(8 * MIB - 51_200, 11), fs_bytes(12 * MIB, 12));
    let (ran, _, r, _) = check(&store, &t, (&boot, false), (&root, false));
    assert_references(&store, &ran.disk, &r, 12 * MIB);
    assert!(
        ran.notes
            .iter()
            .any(|n| n.starts_with("partition 1 starts at byte 4245504, not on a 1 MiB boundary")),
        "{:?}",
        ran.notes
    );
}

#[test]
fn sfdisk_reads_the_assembled_tables() {
    if !have("sfdisk") {
        return;
    }
    let (dir, store) = open_store();
    for (name, t) in [("mbr", mbr()), ("gpt", gpt())] {
        let (boot, root) = (fs_bytes(9 * MIB, 13), fs_bytes(13 * MIB + 1, 14));
        let (ran, b, r, _) = check(&store, &t, (&boot, false), (&root, false));
        let path = dir.path().join(format!("{name}.img"));
        store.inner().copy_to(&ran.disk.digest, &path).unwrap();
        let out = crate::oracle::run_ok(std::process::Command::new("sfdisk").arg("--json").arg(&path));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let pt = &v["partitiontable"];
        let l = layout(&t, b.size, r.size).unwrap();
        assert_eq!(pt["label"], if name == "mbr" { "dos" } else { "gpt" });
        for (i, p) in l.table.partitions.iter().enumerate() {
            assert_eq!(pt["partitions"][i]["start"], p.start_lba, "{name}: {pt}");
            assert_eq!(pt["partitions"][i]["size"], p.size_lba, "{name}: {pt}");
        }
        crate::oracle::run_ok(std::process::Command::new("sfdisk").arg("--verify").arg(&path));
    }
}

#[test]
fn a_referenced_chunk_gone_from_the_store_makes_its_image_unavailable() {
    let (_dir, store) = open_store();
    let r = fs_index(&store, &fs_bytes(12 * MIB, 15));
    let b = fs_index(&store, &fs_bytes(8 * MIB, 16));
    let victim = index_of(&store, &r).chunks[5].digest;
    std::fs::remove_file(blob_path(&store, &victim)).unwrap();
    match run(&store, &inputs(&store, &mbr(), b, r), false) {
        Err(StepError::InputUnavailable(d)) => assert_eq!(d, r.digest),
        other => panic!("{:?}", other.map(|r| r.disk)),
    }
}

#[test]
fn a_corrupt_image_read_for_rendering_makes_it_unavailable() {
    let (_dir, store) = open_store();
    // A flipped byte in a plain blob, and in the short last chunk of an index: both are
    // read, verified, for rendering.
    let b = fs_blob(&store, &fs_bytes(8 * MIB, 17));
    let r = fs_index(&store, &fs_bytes(12 * MIB - 10, 18));
    let flip = |path: std::path::PathBuf| {
        use std::os::unix::fs::PermissionsExt as _;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1000] ^= 0x40;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, bytes).unwrap();
    };
    flip(blob_path(&store, &b.digest));
    let store = reopened(&store);
    match run(&store, &inputs(&store, &mbr(), b, r), false) {
        Err(StepError::InputUnavailable(d)) => assert_eq!(d, b.digest),
        other => panic!("{:?}", other.map(|r| r.disk)),
    }
    let b = fs_index(&store, &fs_bytes(8 * MIB, 17));
    flip(blob_path(&store, &index_of(&store, &r).chunks[11].digest));
    let store = reopened(&store);
    match run(&store, &inputs(&store, &mbr(), b, r), false) {
        Err(StepError::InputUnavailable(d)) => assert_eq!(d, r.digest),
        other => panic!("{:?}", other.map(|r| r.disk)),
    }
}

#[test]
fn an_interrupted_assembly_stops() {
    let (_dir, store) = open_store();
    let b = fs_index(&store, &fs_bytes(8 * MIB, 19));
    let r = fs_index(&store, &fs_bytes(12 * MIB, 20));
    assert!(matches!(
        run(&store, &inputs(&store, &mbr(), b, r), true),
        Err(StepError::Cancelled)
    ));
}

#[test]
fn the_table_recorder_keeps_what_was_written_and_zeros_elsewhere() {
    let mut t = TableBytes {
        len: 10_000,
        ..TableBytes::default()
    };
    t.seek(SeekFrom::Start(10)).unwrap();
    t.write_all(b"abc").unwrap();
    t.seek(SeekFrom::End(-2)).unwrap();
    t.write_all(b"yz").unwrap();
    t.seek(SeekFrom::Start(11)).unwrap();
    t.write_all(b"B").unwrap();
    assert!(t.touches(12, 13) && t.touches(9_999, 10_000));
    assert!(!t.touches(0, 10) && !t.touches(13, 9_998));
    let mut buf = [0u8; 6];
    t.overlay(9, &mut buf);
    assert_eq!(&buf, b"\0aBc\0\0");
    let mut tail = [7u8; 4];
    t.overlay(9_997, &mut tail);
    assert_eq!(&tail, &[7, b'y', b'z', 7]);
    assert!(t.seek(SeekFrom::Current(-20_000)).is_err());
}
