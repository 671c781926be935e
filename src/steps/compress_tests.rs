//! Tests of [`super`]: the real `zstd`, `xz`, `bsdcat`, `bmaptool` and `sha256sum` judge
//! the outputs; determinism over thread counts and warm memos; a one-chunk change
//! recompresses one span; a damaged frame in the cache is remade with the same bytes.

#![allow(clippy::disallowed_methods)] // spawns the oracle tools

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::sync::Mutex;

use w4b_cache::{ChunkIndex, ChunkRef, CHUNK_SIZE};

use super::*;
use crate::oracle::have;

const MIB: usize = 1 << 20;

fn open_store() -> (tempfile::TempDir, Arc<AppStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
    (dir, store)
}

/// `store` as a later process opens it: nothing remembered as hashed, so damage done to
/// its files since is found (a process hashes each blob once).
fn reopened(store: &AppStore) -> Arc<AppStore> {
    Arc::new(AppStore::open(store.local().root(), None, false).unwrap())
}

fn step(store: &Arc<AppStore>, codec: ImageCodec, threads: u32) -> CompressStep {
    CompressStep {
        store: store.clone(),
        codec,
        codec_location: None,
        threads,
        span_chunks: 2,
        file_name: "north.img.zst".into(),
        file_name_location: None,
        verify_memos: false,
    }
}

/// Disk-like bytes of `mib` MiB: text-ish noise per chunk (chunk `i` from `seed + i`),
/// chunks 2 and 3 all zeros, and a short tail when `tail` is set.
fn disk_bytes(mib: usize, seed: u64, tail: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(mib * MIB + tail);
    for i in 0..mib {
        if i == 2 || i == 3 {
            out.resize(out.len() + MIB, 0);
            continue;
        }
        let mut x = (seed + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        out.extend((0..MIB).map(|j| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // A zero block now and then, so a chunk has several bmap runs.
            if (j / 4096) % 5 == 4 {
                0
            } else {
                b"w4b compress spans "[(x % 19) as usize]
            }
        }));
    }
    out.extend((0..tail).map(|i| (i % 7) as u8 + 1));
    out
}

fn as_input(digest: w4b_cache::Digest, size: u64) -> Outputs {
    let mut o = Outputs::new();
    o.insert("disk".into(), OutputRef { digest, size });
    o
}

/// The disk as a plain blob.
fn blob_disk(store: &AppStore, bytes: &[u8]) -> Outputs {
    as_input(Blobs::put(store, bytes).unwrap(), bytes.len() as u64)
}

/// The disk as a chunked output (an index of 1 MiB chunks).
fn chunked_disk(store: &AppStore, bytes: &[u8]) -> Outputs {
    let mut w = store.local().chunked_writer().unwrap();
    io::Write::write_all(&mut w, bytes).unwrap();
    let (digest, size) = w.commit().unwrap();
    as_input(digest, size)
}

struct Ran {
    out: Outputs,
    notes: Vec<String>,
}

fn run(s: &CompressStep, inputs: &[Outputs], cancelled: bool) -> Result<Ran, StepError> {
    let cancel = AtomicBool::new(cancelled);
    let last = Mutex::new(None);
    let notes = Mutex::new(Vec::new());
    let progress = |d: u64, t: Option<u64>| *last.lock().unwrap() = Some((d, t));
    let note = |m: &str| notes.lock().unwrap().push(m.to_owned());
    let cx = RunContext {
        name: "//hives:t#compress",
        inputs,
        cache: s.store.as_ref(),
        cancel: &cancel,
        progress: &progress,
        trees: &Default::default(),
        note: &note,
    };
    let out = s.run(&cx)?;
    let size = inputs[0]["disk"].size;
    let total = if s.codec.framed().is_some() {
        size
    } else {
        2 * size
    };
    assert_eq!(*last.lock().unwrap(), Some((total, Some(total))));
    Ok(Ran {
        out,
        notes: notes.into_inner().unwrap(),
    })
}

/// The flat bytes of output `o`, checked against its size.
pub(crate) fn output_bytes(store: &AppStore, o: &OutputRef) -> Vec<u8> {
    let mut r = store.inner().open_output(&o.digest).unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    assert_eq!(v.len() as u64, o.size);
    v
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

use crate::oracle::run_ok as sh;

/// Writes the outputs as `--out` would and runs every oracle that applies to `ext`.
fn judge(store: &AppStore, ran: &Outputs, disk: &[u8], ext: &str, frames: usize) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("north.img{ext}");
    let image = dir.path().join(&name);
    store.inner().copy_to(&ran["image"].digest, &image).unwrap();
    let raw = dir.path().join("raw.img");
    let bmap = dir.path().join("north.bmap");
    std::fs::write(&bmap, output_bytes(store, &ran["bmap"])).unwrap();
    let line = String::from_utf8(output_bytes(store, &ran["sha256"])).unwrap();
    assert_eq!(
        line,
        format!("{}  {name}\n", sha256_hex(&std::fs::read(&image).unwrap()))
    );
    let flat = store.inner().flat_digests(&ran["image"].digest).unwrap();
    assert_eq!(
        flat.blake3,
        Some(*blake3::hash(&std::fs::read(&image).unwrap()).as_bytes())
    );
    if have("sha256sum") {
        std::fs::write(dir.path().join(format!("{name}.sha256")), &line).unwrap();
        sh(Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{name}.sha256"))
            .current_dir(dir.path()));
    }
    match ext {
        ".zst" if have("zstd") => {
            sh(Command::new("zstd").arg("-t").arg(&image));
            let listed = sh(Command::new("zstd").arg("-l").arg(&image));
            let text = String::from_utf8_lossy(&listed.stdout);
            let counts: Vec<u64> = text
                .lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .take(2)
                .map(|f| f.parse().unwrap())
                .collect();
            // `Frames` counts the seek table's skippable frame too.
            assert_eq!(counts, [frames as u64 + 1, 1], "{text}");
            sh(Command::new("zstd")
                .args(["-q", "-d", "-f", "-o"])
                .arg(&raw)
                .arg(&image));
            assert!(
                std::fs::read(&raw).unwrap() == disk,
                "zstd -d differs from the disk"
            );
        }
        ".xz" if have("xz") => {
            sh(Command::new("xz").arg("-t").arg(&image));
            let listed = sh(Command::new("xz").args(["-l", "--robot"]).arg(&image));
            let text = String::from_utf8_lossy(&listed.stdout);
            let blocks = text
                .lines()
                .find_map(|l| l.strip_prefix("totals\t"))
                .and_then(|t| t.split('\t').nth(1))
                .unwrap_or_else(|| panic!("xz -l: {text}"));
            assert_eq!(blocks, frames.to_string(), "{text}");
            let d = sh(Command::new("xz").args(["-d", "-c"]).arg(&image));
            assert!(d.stdout == disk, "xz -d differs from the disk");
        }
        _ => {}
    }
    if have("bsdcat") {
        let d = sh(Command::new("bsdcat").arg(&image));
        assert!(d.stdout == disk, "bsdcat differs from the disk");
    }
    if have("bmaptool") {
        let target = dir.path().join("target.img");
        sh(Command::new("bmaptool")
            .args(["-q", "copy", "--bmap"])
            .arg(&bmap)
            .arg(&image)
            .arg(&target));
        assert!(
            std::fs::read(&target).unwrap() == disk,
            "bmaptool copy differs from the disk"
        );
    }
}

#[test]
fn zstd_and_xz_images_are_framed_and_every_tool_reads_them() {
    let (_d, store) = open_store();
    // 7 MiB and a short tail: spans of 2 chunks, so 4 frames, the last short.
    let bytes = disk_bytes(7, 1, 5000);
    for ins in [blob_disk(&store, &bytes), chunked_disk(&store, &bytes)] {
        let zst = run(
            &step(&store, ImageCodec::Zstd { level: 3 }, 2),
            std::slice::from_ref(&ins),
            false,
        )
        .unwrap();
        judge(&store, &zst.out, &bytes, ".zst", 4);
        let mut xz_step = step(&store, ImageCodec::Xz { level: 1 }, 2);
        xz_step.file_name = "north.img.xz".into();
        let xz = run(&xz_step, &[ins], false).unwrap();
        judge(&store, &xz.out, &bytes, ".xz", 4);
    }
    // The oracles must have run in CI.
    for tool in ["zstd", "xz", "bsdcat", "bmaptool", "sha256sum"] {
        assert!(have(tool) || !crate::oracle::in_ci(), "{tool} missing in CI");
    }
}

#[test]
fn the_image_is_the_same_for_any_thread_count_cold_or_warm_and_blob_or_chunked() {
    let bytes = disk_bytes(9, 2, 0);
    for codec in [ImageCodec::Zstd { level: 3 }, ImageCodec::Xz { level: 1 }] {
        let mut seen = Vec::new();
        for threads in [1, 4] {
            let (_d, store) = open_store();
            let ins = [blob_disk(&store, &bytes)];
            let cold = run(&step(&store, codec, threads), &ins, false).unwrap();
            let warm = run(&step(&store, codec, threads), &ins, false).unwrap();
            assert_eq!(cold.out, warm.out, "{codec:?}");
            assert!(
                warm.notes[0].contains(": 0 of 5 frames compressed, 5 reused"),
                "{:?}",
                warm.notes
            );
            let chunked = run(
                &step(&store, codec, threads),
                &[chunked_disk(&store, &bytes)],
                false,
            )
            .unwrap();
            assert_eq!(chunked.out, cold.out);
            // Every chunk known from the index and every memo present: nothing is read.
            assert!(
                chunked.notes[0].ends_with("; 0 B of disk read"),
                "{:?}",
                chunked.notes
            );
            seen.push(cold.out);
        }
        assert_eq!(seen[0], seen[1], "{codec:?}: 1 thread vs 4");
    }
    let (_d, store) = open_store();
    let cx = PlanContext { name: "t" };
    let c1 = step(&store, ImageCodec::Zstd { level: 19 }, 1)
        .components(&cx)
        .unwrap();
    let c8 = step(&store, ImageCodec::Zstd { level: 19 }, 8)
        .components(&cx)
        .unwrap();
    assert_eq!(c1, c8);
    let values: Vec<_> = c1.iter().map(|c| format!("{}={}", c.name, c.value)).collect();
    assert_eq!(
        values,
        [
            "output.compression=zstd:19",
            "output.file_name=north.img.zst",
            "compress.frame_span=2MiB"
        ]
    );
}

#[test]
fn one_changed_chunk_recompresses_exactly_one_span() {
    let (_d, store) = open_store();
    let bytes = disk_bytes(12, 3, 0);
    let s = step(&store, ImageCodec::Zstd { level: 3 }, 2);
    let first = run(&s, &[chunked_disk(&store, &bytes)], false).unwrap();
    assert!(
        first.notes[0].contains(": 6 of 6 frames compressed, 0 reused"),
        "{:?}",
        first.notes
    );
    let mut changed = bytes.clone();
    changed[9 * MIB + 123] ^= 0x55;
    let ins = [chunked_disk(&store, &changed)];
    let second = run(&s, &ins, false).unwrap();
    assert!(
        second.notes[0].contains(": 1 of 6 frames compressed, 5 reused; block map: 1 chunks scanned, 9 reused; 2.0 MiB of disk read"),
        "{:?}",
        second.notes
    );
    judge(&store, &second.out, &changed, ".zst", 6);
    // The same bytes as a cold build of the changed disk.
    let (_d2, fresh) = open_store();
    let cold = run(
        &step(&fresh, ImageCodec::Zstd { level: 3 }, 1),
        &[blob_disk(&fresh, &changed)],
        false,
    )
    .unwrap();
    assert_eq!(cold.out, second.out);
}

/// The frames of an image: its index's entries but the trailer.
fn frames_of(store: &AppStore, image: &OutputRef) -> Vec<ChunkRef> {
    let idx: ChunkIndex = store.inner().index(&image.digest).unwrap().unwrap();
    assert!(idx.trailer && idx.chunk_size == 0);
    idx.chunks[..idx.chunks.len() - 1].to_vec()
}

#[test]
fn a_flipped_or_deleted_frame_in_the_cache_is_remade_with_the_same_bytes() {
    let (_d, store) = open_store();
    let bytes = disk_bytes(8, 4, 0);
    let s = step(&store, ImageCodec::Zstd { level: 3 }, 2);
    let ins = [blob_disk(&store, &bytes)];
    let good = run(&s, &ins, false).unwrap();
    let frames = frames_of(&store, &good.out["image"]);
    let blob = |c: &ChunkRef| {
        let hex = c.digest.to_hex();
        store.local().root().join("v1/blobs").join(&hex[..2]).join(hex)
    };
    let flip = |c: &ChunkRef| {
        let p = blob(c);
        let mut b = std::fs::read(&p).unwrap();
        b[10] ^= 1;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&p, b).unwrap();
    };
    // Frame 1 flipped (its memo still points at it), frame 3 deleted (a memo miss), as a
    // later process finds them (a process hashes each blob once).
    flip(&frames[1]);
    std::fs::remove_file(blob(&frames[3])).unwrap();
    let store = reopened(&store);
    let s = step(&store, ImageCodec::Zstd { level: 3 }, 2);
    let again = run(&s, &ins, false).unwrap();
    assert_eq!(again.out, good.out);
    assert!(
        again.notes[0].contains(": 2 of 4 frames compressed, 2 reused (1 remade"),
        "{:?}",
        again.notes
    );
    // Frame 0 flipped: reading the image (as export does) finds it and quarantines it;
    // the step, run again, makes it again.
    flip(&frames[0]);
    let store = reopened(&store);
    let s = step(&store, ImageCodec::Zstd { level: 3 }, 2);
    let mut r = store.inner().open_output(&good.out["image"].digest).unwrap();
    assert!(r.read_to_end(&mut Vec::new()).is_err());
    let again = run(&s, &ins, false).unwrap();
    assert_eq!(again.out, good.out);
    assert!(
        again.notes[0].contains(": 1 of 4 frames compressed, 3 reused;"),
        "{:?}",
        again.notes
    );
    judge(&store, &again.out, &bytes, ".zst", 4);
}

#[test]
fn gzip_and_none_stream_the_disk_and_share_the_block_map() {
    let (_d, store) = open_store();
    let bytes = disk_bytes(3, 5, 100);
    let ins = [blob_disk(&store, &bytes)];
    let out = run(&step(&store, ImageCodec::Gzip { level: 6 }, 1), &ins, false)
        .unwrap()
        .out;
    let image = output_bytes(&store, &out["image"]);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&image[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert!(raw == bytes);
    let line = String::from_utf8(output_bytes(&store, &out["sha256"])).unwrap();
    assert_eq!(line, format!("{}  north.img.zst\n", sha256_hex(&image)));
    let bmap = String::from_utf8(output_bytes(&store, &out["bmap"])).unwrap();
    assert!(bmap.contains("<ImageSize> 3145828 </ImageSize>"), "{bmap}");
    // Runs split at the chunk boundary: chunk 0 ends with block 255 mapped, chunk 1
    // starts with blocks 256-259 mapped: two ranges rather than one `255-259`.
    assert!(
        bmap.contains("> 255 </Range>") && bmap.contains("> 256-259 </Range>"),
        "{bmap}"
    );
    assert!(bmap.contains("> 768 </Range>"), "the short tail: {bmap}");

    let none = run(&step(&store, ImageCodec::None, 1), &ins, false).unwrap().out;
    assert_eq!(none["image"], ins[0]["disk"]);
    assert_eq!(none["bmap"], out["bmap"]);
    assert_ne!(none["sha256"], out["sha256"]);
}

#[test]
fn a_cancelled_or_missing_disk_is_reported_as_such() {
    let (_d, store) = open_store();
    let ins = [blob_disk(&store, &disk_bytes(3, 6, 0))];
    assert!(matches!(
        run(&step(&store, ImageCodec::Zstd { level: 1 }, 1), &ins, true),
        Err(StepError::Cancelled)
    ));
    let missing = w4b_cache::Digest::of(b"not stored");
    match run(
        &step(&store, ImageCodec::Zstd { level: 1 }, 1),
        &[as_input(missing, 10)],
        false,
    ) {
        Err(StepError::InputUnavailable(d)) => assert_eq!(d, missing),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a missing disk compressed"),
    }
    // A chunk of a chunked disk gone: the disk (its index) is unavailable.
    let ins = [chunked_disk(&store, &disk_bytes(3, 7, 0))];
    let idx = store.inner().index(&ins[0]["disk"].digest).unwrap().unwrap();
    let hex = idx.chunks[0].digest.to_hex();
    std::fs::remove_file(store.local().root().join("v1/blobs").join(&hex[..2]).join(&hex)).unwrap();
    match run(&step(&store, ImageCodec::Zstd { level: 1 }, 1), &ins, false) {
        Err(StepError::InputUnavailable(d)) => assert_eq!(d, ins[0]["disk"].digest),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a damaged disk compressed"),
    }
}

#[test]
fn frame_spans_are_bounded() {
    let (_d, store) = open_store();
    let ins = [blob_disk(&store, &disk_bytes(1, 8, 0))];
    let mut s = step(&store, ImageCodec::Zstd { level: 1 }, 1);
    s.span_chunks = 0;
    assert!(matches!(run(&s, &ins, false), Err(StepError::Diagnostic(_))));
    assert_eq!(ImageCodec::Zstd { level: 3 }.default_span_chunks(), 8);
    assert_eq!(ImageCodec::Zstd { level: 19 }.default_span_chunks(), 16);
    assert_eq!(ImageCodec::Xz { level: 6 }.default_span_chunks(), 24);
    assert_eq!(ImageCodec::Xz { level: 0 }.default_span_chunks(), 1);
    assert_eq!(CHUNK_SIZE as usize, MIB);
}

#[test]
fn verify_memos_passes_on_good_memos_and_catches_a_memo_whose_key_lies() {
    let (_d, store) = open_store();
    let bytes = disk_bytes(8, 5, 0);
    let ins = [chunked_disk(&store, &bytes)];
    let plain = step(&store, ImageCodec::Zstd { level: 3 }, 2);
    let good = run(&plain, &ins, false).unwrap();
    let mut verifying = step(&store, ImageCodec::Zstd { level: 3 }, 2);
    verifying.verify_memos = true;
    // Every memo hit re-rendered and equal: the same image.
    let checked = run(&verifying, &ins, false).unwrap();
    assert_eq!(checked.out, good.out);
    assert!(
        checked.notes[0].contains(": 0 of 4 frames compressed, 4 reused"),
        "{:?}",
        checked.notes
    );

    // A memo that names the wrong frame for span 0 (span 1's: a valid blob, wrong bytes),
    // as a key that missed an input would.
    let frames = frames_of(&store, &good.out["image"]);
    let idx = store.inner().index(&ins[0]["disk"].digest).unwrap().unwrap();
    let codec = frames::FrameCodec::Zstd { level: 3 };
    let key = codec.frame_key(&idx.chunks[..2]);
    let memo = store.local().memo_get(frames::FRAME_ZSTD, &key).unwrap().unwrap();
    assert_eq!(memo.value, frames[0]);
    let hex = key.to_hex();
    let path = store
        .local()
        .root()
        .join("v1/memo/frame-zstd")
        .join(&hex[..2])
        .join(&hex);
    std::fs::remove_file(&path).unwrap();
    store
        .local()
        .memo_put(frames::FRAME_ZSTD, &key, &frames[1], &memo.extra)
        .unwrap();
    // Trusted, the lie reaches the image; verified, it is an error naming the span.
    let lied = run(&plain, &ins, false).unwrap();
    assert_ne!(lied.out, good.out);
    let err = run(&verifying, &ins, false)
        .err()
        .expect("the lying memo is caught");
    let text = format!("{err:?}");
    assert!(
        text.contains("MemoMismatch") && text.contains("offset: 0"),
        "{text}"
    );
}
