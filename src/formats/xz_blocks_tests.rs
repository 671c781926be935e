//! Tests of [`super`]: the real `xz` (`-t`, `-l`, `-d`) and libarchive's `bsdcat` judge
//! assembled streams; liblzma's own one-block streams pin the layout byte for byte;
//! properties cover assembly and the parser.

#![allow(
    clippy::disallowed_methods, // spawns the oracle tools, reads `CI`
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::io::{Cursor, Read as _, Write as _};
use std::process::Command;

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::formats::zstd_frames::tests::sample;
use crate::oracle::have;

fn assemble(data: &[u8], span: usize, preset: u32) -> (Vec<u8>, usize) {
    let blocks: Vec<XzBlock> = data
        .chunks(span)
        .map(|s| encode_block(s, preset).unwrap())
        .collect();
    let mut out = Vec::new();
    let n = write_stream(&mut out, &blocks).unwrap();
    assert_eq!(n, out.len() as u64);
    (out, blocks.len())
}

fn decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::formats::xz::decoder(bytes).read_to_end(&mut out).unwrap();
    out
}

use crate::oracle::run_ok as run;

#[test]
fn the_real_tools_read_assembled_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(3 << 20 | 777, 11);
    let (file, blocks) = assemble(&data, 1 << 20, 1);
    assert_eq!(blocks, 4);
    let path = dir.path().join("disk.img.xz");
    std::fs::write(&path, &file).unwrap();
    if have("xz") {
        run(Command::new("xz").arg("-t").arg(&path));
        // `--robot -l`: the `totals` line is streams, blocks, compressed, uncompressed, …
        let out = run(Command::new("xz").args(["--robot", "-l"]).arg(&path));
        let text = String::from_utf8_lossy(&out.stdout);
        let totals: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("totals\t"))
            .unwrap_or_else(|| panic!("xz -l: {text}"))
            .split('\t')
            .collect();
        assert_eq!(
            &totals[1..5],
            ["1", "4", &file.len().to_string(), &data.len().to_string()]
        );
        assert_eq!(totals[6], "CRC64");
        let out = run(Command::new("xz").arg("-dc").arg(&path));
        assert!(out.stdout == data, "xz -d round trip");
    }
    // Raspberry Pi Imager reads images through libarchive's xz filter.
    if have("bsdcat") {
        let out = run(Command::new("bsdcat").arg(&path));
        assert!(out.stdout == data, "bsdcat round trip");
    }
    let index = read_index(&mut Cursor::new(&file)).unwrap();
    assert_eq!(index.records().len(), 4);
    assert_eq!(index.uncompressed_size(), data.len() as u64);
    assert_eq!(index.block_start(3).unwrap().1, 3 << 20);
}

#[test]
fn one_block_reassembled_is_byte_for_byte_what_liblzma_wrote() {
    // The header, index and footer written here are liblzma's for a one-block stream.
    for (len, preset) in [(1usize, 0u32), (1000, 6), (300_000, 1)] {
        let data = sample(len, len as u64);
        let stream =
            liblzma::stream::Stream::new_easy_encoder(preset, liblzma::stream::Check::Crc64).unwrap();
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(&data).unwrap();
        let theirs = enc.finish().unwrap();
        let mut ours = Vec::new();
        write_stream(&mut ours, [&encode_block(&data, preset).unwrap()]).unwrap();
        assert!(ours == theirs, "len {len}, preset {preset}");
    }
}

#[test]
fn the_stream_header_and_an_empty_stream_are_as_the_spec_says() {
    // CRC32 of the flags `00 04` is 0x46B4D6E6.
    assert_eq!(
        stream_header(),
        [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0, 0, 4, 0xE6, 0xD6, 0xB4, 0x46]
    );
    let mut empty = Vec::new();
    write_stream(&mut empty, []).unwrap();
    // liblzma's empty stream (what `xz` writes for an empty file) is the same 32 bytes.
    let stream = liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc64).unwrap();
    let theirs = liblzma::write::XzEncoder::new_stream(Vec::new(), stream)
        .finish()
        .unwrap();
    assert_eq!(empty, theirs);
    assert!(decode(&empty).is_empty());
}

#[test]
fn blocks_are_deterministic_across_calls_and_threads() {
    let data = sample(2 << 20, 5);
    let once: Vec<XzBlock> = data
        .chunks(1 << 20)
        .map(|s| encode_block(s, 6).unwrap())
        .collect();
    let again: Vec<XzBlock> = data
        .chunks(1 << 20)
        .map(|s| encode_block(s, 6).unwrap())
        .collect();
    assert_eq!(once, again);
    let threaded: Vec<XzBlock> = std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .chunks(1 << 20)
            .map(|s| scope.spawn(move || encode_block(s, 6).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(once, threaded);
}

#[test]
fn golden_digest_of_a_fixed_input() {
    // Pinned for the liblzma that liblzma-sys 0.4.9 vendors (5.8): an upgrade that
    // changes its encoder output changes this deliberately.
    let (file, _) = assemble(&sample(3 << 20, 1), 1 << 20, 6);
    assert_eq!(
        hex::encode(Sha256::digest(&file)),
        "4b1032a94f738a1cb3ae34e82c1b8d7a9754d1e5944cee3e63d74da4372d84c5"
    );
}

#[test]
fn liblzma_multithreaded_streams_with_sizes_in_block_headers_are_read() {
    // The multithreaded encoder records both sizes in each block header; those must
    // agree with the index.
    let data = sample(3 << 20, 8);
    let mut out = Vec::new();
    crate::formats::compress::compress(
        &mut &data[..],
        &mut out,
        crate::formats::compress::Codec::Xz { level: 0, threads: 2 },
        &mut |_| {},
    )
    .unwrap();
    let index = read_index(&mut Cursor::new(&out)).unwrap();
    assert_eq!(
        index.records().len(),
        3,
        "1 MiB blocks at preset 0 (3 × 256 KiB, at least 1 MiB)"
    );
    let first = index.records()[0];
    let block = XzBlock::new(out[12..12 + first.total_size() as usize].to_vec(), first).unwrap();
    // Its header's declared sizes are checked against the record.
    let wrong = IndexRecord {
        uncompressed_size: first.uncompressed_size - 1,
        ..first
    };
    let e = XzBlock::new(block.bytes().to_vec(), wrong).unwrap_err();
    assert!(
        matches!(
            e,
            XzBlocksError::Corrupt {
                field: "Uncompressed Size",
                ..
            }
        ),
        "{e}"
    );
}

fn field_of(e: &XzBlocksError) -> (&'static str, &'static str) {
    match e {
        XzBlocksError::Corrupt { field, .. } => ("corrupt", field),
        XzBlocksError::Unsupported { field, .. } => ("unsupported", field),
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
    let (good, _) = assemble(&sample(200_000, 3), 100_000, 1);
    let n = good.len();
    let cases: Vec<Damage<'_>> = vec![
        (
            "magic",
            Box::new(|f| f[1] ^= 1),
            ("corrupt", "Header Magic Bytes"),
        ),
        (
            "header flags",
            Box::new(|f| f[7] ^= 1),
            ("corrupt", "Stream Header CRC32"),
        ),
        (
            "a CRC32 stream",
            Box::new(|f| {
                f[7] = 1;
                let crc = crc32(&[0, 1]).to_le_bytes();
                f[8..12].copy_from_slice(&crc);
            }),
            ("unsupported", "Stream Flags"),
        ),
        (
            "footer magic",
            Box::new(|f| f[n - 1] ^= 1),
            ("corrupt", "Footer Magic Bytes"),
        ),
        (
            "footer crc",
            Box::new(|f| f[n - 12] ^= 1),
            ("corrupt", "Stream Footer CRC32"),
        ),
        (
            "stream padding",
            Box::new(|f| f.extend([0; 4])),
            ("unsupported", "Stream Padding"),
        ),
        (
            "block header",
            Box::new(|f| f[13] ^= 1),
            ("corrupt", "Block Header CRC32"),
        ),
        (
            "index record",
            Box::new(|f| f.truncate(0)),
            ("corrupt", "Stream Header"),
        ),
    ];
    for (what, damage, want) in cases {
        let mut bad = good.clone();
        damage(&mut bad);
        let e = read_index(&mut Cursor::new(&bad)).unwrap_err();
        assert_eq!(field_of(&e), want, "{what}: {e}");
    }
    // An index whose CRC32 is right but whose sizes do not match the blocks.
    let blocks: Vec<XzBlock> = [&b"one"[..], b"two"]
        .iter()
        .map(|s| encode_block(s, 0).unwrap())
        .collect();
    let mut records: Vec<IndexRecord> = blocks.iter().map(XzBlock::record).collect();
    records[1].unpadded_size += 4;
    let mut bad = stream_header().to_vec();
    blocks.iter().for_each(|b| bad.extend_from_slice(b.bytes()));
    bad.extend(index_and_footer(&records).unwrap());
    let e = read_index(&mut Cursor::new(&bad)).unwrap_err();
    assert_eq!(field_of(&e), ("corrupt", "Unpadded Size"), "{e}");
}

#[test]
fn blocks_that_cannot_be_made_or_placed_are_refused() {
    assert!(matches!(encode_block(b"", 6), Err(XzBlocksError::EmptySpan)));
    assert!(matches!(
        encode_block(b"x", 10),
        Err(XzBlocksError::InvalidLevel { level: 10 })
    ));
    let block = encode_block(b"hello hello hello", 6).unwrap();
    let r = block.record();
    let longer = IndexRecord {
        unpadded_size: r.unpadded_size + 4,
        ..r
    };
    assert!(XzBlock::new(block.bytes().to_vec(), longer).is_err());
    let mut bytes = block.bytes().to_vec();
    bytes[0] = 0;
    assert_eq!(
        field_of(&XzBlock::new(bytes, r).unwrap_err()),
        ("corrupt", "Block Header Size")
    );
    // A two-block stream is not a single block.
    let (two, _) = assemble(b"0123456789", 5, 0);
    assert_eq!(
        field_of(&block_of_single_block_stream(&two).unwrap_err()),
        ("unsupported", "Number of Records")
    );
}

#[test]
fn vlis_round_trip_and_refuse_non_minimal_encodings() {
    for v in [0, 1, 127, 128, 16_383, 16_384, 1 << 40, VLI_MAX] {
        let mut buf = Vec::new();
        write_vli(&mut buf, v);
        assert_eq!(read_vli(&buf, 0, 0).unwrap(), (v, buf.len()));
    }
    assert!(read_vli(&[0x80, 0x00], 0, 0).is_err());
    assert!(read_vli(&[0xFF; 10], 0, 0).is_err());
    assert!(read_vli(&[0x80], 0, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Blocks made separately, assembled, decode to the concatenated input, and the
    /// index places each block where its data starts.
    #[test]
    fn assembled_blocks_decode_to_the_concatenation(
        seed in any::<u64>(),
        cuts in proptest::collection::vec(1usize..30_000, 0..6),
    ) {
        let data = sample(cuts.iter().sum::<usize>() + 1, seed);
        let mut blocks = Vec::new();
        let mut at = 0;
        for len in cuts.iter().copied().chain([1]) {
            blocks.push(encode_block(&data[at..at + len], 0).unwrap());
            at += len;
        }
        let mut file = Vec::new();
        write_stream(&mut file, &blocks).unwrap();
        prop_assert!(decode(&file) == data);
        let index = read_index(&mut Cursor::new(&file)).unwrap();
        let mut offset = 0;
        for (i, len) in cuts.iter().copied().chain([1]).enumerate() {
            prop_assert_eq!(index.block_start(i).unwrap().1, offset);
            offset += len as u64;
        }
    }

    /// Errors are fine, panics are bugs.
    #[test]
    fn the_parser_never_panics(
        junk in proptest::collection::vec(any::<u8>(), 0..120),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        tail in any::<bool>(),
    ) {
        let _ = read_index(&mut Cursor::new(&junk));
        let _ = block_of_single_block_stream(&junk);
        let (mut file, _) = assemble(&sample(3000, 2), 1000, 0);
        let len = file.len();
        for (index, byte) in flips {
            let at = if tail { len - 1 - index.index(40.min(len)) } else { index.index(len) };
            file[at] = byte;
        }
        let _ = read_index(&mut Cursor::new(&file));
        let _ = block_of_single_block_stream(&file);
    }
}
