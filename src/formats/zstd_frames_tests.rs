//! Tests of [`super`]: the real `zstd` (`-t`, `-l`, `-d`) and libarchive's `bsdcat` judge
//! assembled files; properties cover assembly, the reader and the parser.

#![allow(
    clippy::disallowed_methods, // spawns the oracle tools, reads `CI`
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::oracle::have;

/// Disk-like bytes: text-ish noise with a run of zeros, deterministic.
pub(crate) fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (len / 2..len / 2 + len / 8).contains(&i) {
                0
            } else {
                b"w4b beehive frames "[(x % 19) as usize] ^ ((x >> 40) as u8 & 1)
            }
        })
        .collect()
}

/// `data` cut into `span`-byte frames at `level`, followed by their seek table.
fn seekable(data: &[u8], span: usize, level: i32) -> (Vec<u8>, usize) {
    let mut c = FrameCompressor::new(level).unwrap();
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for piece in data.chunks(span) {
        let frame = c.compress(piece).unwrap();
        entries.push(frame.entry());
        out.extend_from_slice(frame.bytes());
    }
    out.extend(seek_table(&entries).unwrap());
    (out, entries.len())
}

use crate::oracle::run_ok as run;

/// `zstd -l`'s frame and skippable-frame counts for `path`.
fn zstd_list(path: &Path) -> (u64, u64) {
    let out = run(Command::new("zstd").arg("-l").arg(path));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).unwrap_or_else(|| panic!("zstd -l: {text}"));
    let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    (fields.next().unwrap(), fields.next().unwrap())
}

#[test]
fn xxh64_matches_the_published_vectors() {
    // The xxHash reference's sanity values for seed 0 and the empty input, and for the
    // canonical "abc"; the long-input path is checked against libzstd below.
    assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
    assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
    assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
}

#[test]
fn the_checksum_read_from_the_frame_end_is_the_xxh64_of_the_span() {
    // Every tail path of XXH64: below and above one 32-byte stripe, odd remainders.
    for len in [0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 100, 4099, 1 << 20] {
        let data = sample(len, len as u64);
        let frame = compress_frame(&data, 3).unwrap();
        assert_eq!(frame.checksum(), xxh64(&data, 0) as u32, "len {len}");
        assert_eq!(frame.decompressed_size() as usize, len);
        assert_eq!(zstd::stream::decode_all(frame.bytes()).unwrap(), data);
    }
}

#[test]
fn frames_are_deterministic_across_contexts_and_threads() {
    let data = sample(3 << 20, 7);
    let spans: Vec<&[u8]> = data.chunks(1 << 20).collect();
    let fresh: Vec<Frame> = spans.iter().map(|s| compress_frame(s, 19).unwrap()).collect();
    // One reused context, after compressing something else first.
    let mut c = FrameCompressor::new(19).unwrap();
    c.compress(b"warm the context up with other data").unwrap();
    let reused: Vec<Frame> = spans.iter().map(|s| c.compress(s).unwrap()).collect();
    assert_eq!(fresh, reused);
    // Two threads at once, each with its own context.
    let threaded: Vec<Frame> = std::thread::scope(|scope| {
        let handles: Vec<_> = spans
            .iter()
            .map(|s| scope.spawn(move || compress_frame(s, 19).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(fresh, threaded);
}

#[test]
fn golden_digest_of_a_fixed_input_for_this_libzstd() {
    // Pinned: a different libzstd may compress differently, which is why the version is
    // part of a cached frame's key. A libzstd upgrade updates this digest deliberately.
    assert_eq!(libzstd_version(), "1.5.7");
    let (file, n) = seekable(&sample(3 << 20, 1), 1 << 20, 3);
    assert_eq!(n, 3);
    assert_eq!(
        hex::encode(Sha256::digest(&file)),
        "32377c4d96d759e5ac27c5c696ffdba9b245f8c6cb8128c4514a0633f4f3b87e"
    );
}

#[test]
fn the_real_tools_read_assembled_frames() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(5 << 20 | 12345, 3);
    let (file, frames) = seekable(&data, 1 << 20, 3);
    assert_eq!(frames, 6);
    let path = dir.path().join("disk.img.zst");
    std::fs::write(&path, &file).unwrap();
    if have("zstd") {
        run(Command::new("zstd").arg("-qt").arg(&path));
        // `Frames` counts the skippable seek-table frame too.
        assert_eq!(zstd_list(&path), (7, 1), "six frames and the seek table");
        let out = run(Command::new("zstd").args(["-qdc"]).arg(&path));
        assert!(out.stdout == data, "zstd -d round trip");
    }
    // Raspberry Pi Imager reads images through libarchive's zstd filter.
    if have("bsdcat") {
        let out = run(Command::new("bsdcat").arg(&path));
        assert!(out.stdout == data, "bsdcat round trip");
    }
    // And so does this module's reader.
    let mut reader = SeekableReader::open(Cursor::new(file)).unwrap();
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert!(back == data);
}

#[test]
fn an_empty_input_and_a_single_frame_are_valid_files() {
    let dir = tempfile::tempdir().unwrap();
    for data in [Vec::new(), sample(1000, 9)] {
        let (file, _) = seekable(&data, 1 << 20, 1);
        let table = SeekTable::read_from(&mut Cursor::new(&file)).unwrap();
        assert_eq!(table.decompressed_size(), data.len() as u64);
        if have("zstd") {
            let path = dir.path().join("x.zst");
            std::fs::write(&path, &file).unwrap();
            let out = run(Command::new("zstd").args(["-qdc"]).arg(&path));
            assert!(out.stdout == data);
        }
    }
}

#[test]
fn a_seek_table_is_laid_out_as_the_spec_says() {
    let entries = [
        SeekEntry {
            compressed_size: 0x0102_0304,
            decompressed_size: 0x0010_0000,
            checksum: 0xDEAD_BEEF,
        },
        SeekEntry {
            compressed_size: 9,
            decompressed_size: 0,
            checksum: 0x51D8_E999,
        },
    ];
    let table = seek_table(&entries).unwrap();
    let want: Vec<u8> = [
        &[0x5E, 0x2A, 0x4D, 0x18][..], // Skippable_Magic_Number
        &[33, 0, 0, 0],                // Frame_Size: 2 · 12 + 9
        &[4, 3, 2, 1, 0, 0, 0x10, 0, 0xEF, 0xBE, 0xAD, 0xDE],
        &[9, 0, 0, 0, 0, 0, 0, 0, 0x99, 0xE9, 0xD8, 0x51],
        &[2, 0, 0, 0],             // Number_Of_Frames
        &[0x80],                   // Seek_Table_Descriptor: Checksum_Flag
        &[0xB1, 0xEA, 0x92, 0x8F], // Seekable_Magic_Number
    ]
    .concat();
    assert_eq!(table, want);
    let parsed = SeekTable::parse(&table).unwrap();
    assert_eq!(parsed.entries(), &entries);
    assert!(parsed.has_checksums());
    assert_eq!(parsed.compressed_size(), 0x0102_0304 + 9);
    assert_eq!(parsed.frame_at(0x000F_FFFF), Some(0));
    assert_eq!(parsed.frame_at(0x0010_0000), None);
}

#[test]
fn a_table_without_checksums_is_read() {
    let data = sample(10_000, 4);
    let frame = compress_frame(&data, 3).unwrap();
    let mut file = frame.bytes().to_vec();
    file.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    file.extend_from_slice(&17u32.to_le_bytes());
    file.extend_from_slice(&(frame.bytes().len() as u32).to_le_bytes());
    file.extend_from_slice(&10_000u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    file.push(0);
    file.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    let mut reader = SeekableReader::open(Cursor::new(file)).unwrap();
    assert!(!reader.table().has_checksums());
    let mut buf = [0u8; 100];
    assert_eq!(reader.read_at(9_950, &mut buf).unwrap(), 50);
    assert_eq!(&buf[..50], &data[9_950..]);
}

fn err_of(file: &[u8]) -> ZstdFramesError {
    let mut r = match SeekableReader::open(Cursor::new(file.to_vec())) {
        Err(e) => return e,
        Ok(r) => r,
    };
    let mut sink = Vec::new();
    let e = r
        .read_to_end(&mut sink)
        .expect_err("a damaged file must not read cleanly");
    *e.into_inner().unwrap().downcast::<ZstdFramesError>().unwrap()
}

fn field_of(e: &ZstdFramesError) -> (&'static str, &'static str) {
    match e {
        ZstdFramesError::Corrupt { field, .. } => ("corrupt", field),
        ZstdFramesError::Unsupported { field, .. } => ("unsupported", field),
        other => panic!("unexpected {other:?}"),
    }
}

/// A damage case: what it is, how to do it, and the (kind, field) it must be reported as.
type Damage<'a> = (
    &'static str,
    Box<dyn Fn(&mut Vec<u8>) + 'a>,
    (&'static str, &'static str),
);

#[test]
fn damage_is_reported_with_its_field() {
    let data = sample(2 << 20, 5);
    let (good, _) = seekable(&data, 1 << 20, 3);
    let n = good.len();
    let table_at = n - (8 + 2 * 12 + 9);
    let cases: Vec<Damage<'_>> = vec![
        (
            "no seek table",
            Box::new(|f| f[n - 1] ^= 1),
            ("corrupt", "Seekable_Magic_Number"),
        ),
        (
            "reserved bit",
            Box::new(|f| f[n - 5] |= 0x04),
            ("unsupported", "Seek_Table_Descriptor"),
        ),
        (
            "too many frames for the file",
            Box::new(|f| f[n - 9..n - 6].fill(0xFF)),
            ("corrupt", "Number_Of_Frames"),
        ),
        (
            "more frames than the format allows",
            Box::new(|f| f[n - 6] = 0x10),
            ("unsupported", "Number_Of_Frames"),
        ),
        (
            "frame size",
            Box::new(move |f| f[table_at + 4] ^= 1),
            ("corrupt", "Frame_Size"),
        ),
        (
            "skippable magic",
            Box::new(move |f| f[table_at] ^= 1),
            ("corrupt", "Skippable_Magic_Number"),
        ),
        (
            "sizes do not add up",
            Box::new(move |f| f[table_at + 8] ^= 1),
            ("corrupt", "Compressed_Size"),
        ),
        (
            "swapped decompressed sizes",
            Box::new(move |f| {
                f[table_at + 12] ^= 1;
                f[table_at + 24] ^= 1;
            }),
            ("corrupt", "Decompressed_Size"),
        ),
        (
            "checksum",
            Box::new(move |f| f[table_at + 16] ^= 1),
            ("corrupt", "Checksum"),
        ),
        ("frame data", Box::new(|f| f[100] ^= 0x55), ("corrupt", "Frame")),
        (
            "truncated",
            Box::new(|f| f.truncate(f.len() - 1)),
            ("corrupt", "Seekable_Magic_Number"),
        ),
    ];
    for (what, damage, want) in cases {
        let mut bad = good.clone();
        damage(&mut bad);
        let e = err_of(&bad);
        assert_eq!(field_of(&e), want, "{what}: {e}");
    }
}

#[test]
fn frames_that_cannot_go_in_a_seek_table_are_refused() {
    // No checksum (the bulk API's default), two frames, not a frame.
    let plain = zstd::bulk::compress(b"hello", 3).unwrap();
    assert_eq!(
        field_of(&Frame::parse(plain.clone()).unwrap_err()).1,
        "Content_Checksum_flag"
    );
    let one = compress_frame(b"hello", 3).unwrap().into_bytes();
    assert_eq!(
        field_of(&Frame::parse([one.clone(), one].concat()).unwrap_err()).1,
        "Frame"
    );
    assert_eq!(
        field_of(&Frame::parse(vec![1, 2, 3]).unwrap_err()).1,
        "Magic_Number"
    );
    assert!(matches!(
        FrameCompressor::new(0),
        Err(ZstdFramesError::InvalidLevel { level: 0 })
    ));
    assert!(matches!(
        FrameCompressor::new(23),
        Err(ZstdFramesError::InvalidLevel { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Frames made separately, assembled, decode to the concatenated input — with
    /// libzstd's streaming decoder, and at any offset through the seek table.
    #[test]
    fn assembled_frames_decode_to_the_concatenation(
        seed in any::<u64>(),
        cuts in proptest::collection::vec(0usize..40_000, 0..8),
        reads in proptest::collection::vec((0u64..200_000, 0usize..70_000), 1..12),
    ) {
        let data = sample(cuts.iter().sum::<usize>() + 1, seed);
        let mut file = Vec::new();
        let mut entries = Vec::new();
        let mut at = 0;
        for len in cuts.iter().copied().chain([1]) {
            let frame = compress_frame(&data[at..at + len], 1).unwrap();
            entries.push(frame.entry());
            file.extend_from_slice(frame.bytes());
            at += len;
        }
        file.extend(seek_table(&entries).unwrap());
        prop_assert!(zstd::stream::decode_all(&file[..]).unwrap() == data);
        let mut reader = SeekableReader::open(Cursor::new(&file)).unwrap();
        prop_assert_eq!(reader.table().decompressed_size(), data.len() as u64);
        for (offset, len) in reads {
            let mut buf = vec![0u8; len];
            let n = reader.read_at(offset, &mut buf).unwrap();
            let start = (offset as usize).min(data.len());
            let want = &data[start..(start + len).min(data.len())];
            prop_assert_eq!(&buf[..n], want);
        }
    }

    /// Errors are fine, panics are bugs: arbitrary bytes, and valid files with bytes
    /// overwritten, never panic the parser or the reader.
    #[test]
    fn the_parser_and_reader_never_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..200),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        tail in any::<bool>(),
    ) {
        let _ = SeekTable::parse(&junk);
        let _ = SeekTable::read_from(&mut Cursor::new(&junk));
        let (mut file, _) = seekable(&sample(5000, 2), 1024, 1);
        let len = file.len();
        for (index, byte) in flips {
            // Half the cases aim at the seek table, where the parser looks first.
            let at = if tail { len - 1 - index.index(70.min(len)) } else { index.index(len) };
            file[at] = byte;
        }
        if let Ok(mut r) = SeekableReader::open(Cursor::new(&file)) {
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        }
    }
}
