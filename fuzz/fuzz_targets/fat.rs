//! The FAT12/16/32 reader: boot sector, FSInfo, the active FAT, the whole directory tree
//! (long names, volume label), then every file's contents through its cluster chain.
//!
//! The input is the start of a 48 MiB partition whose remaining bytes are zero (see
//! `w4b_fuzz::ZeroExtended`), so that FAT32 geometries — at least 65 525 clusters — are
//! reachable from inputs of a few kilobytes.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use w4b::formats::fat::read_fat;
use w4b::formats::fs::{Contents, NodeKind};
use w4b_fuzz::{drain, ZeroExtended};

/// The partition's length: room for the smallest FAT32 volume (65 525 clusters of 512
/// bytes plus two FATs).
const LEN: u64 = 48 << 20;
/// Bytes read from each file; the reader must stop at the file's size on its own.
const PER_FILE: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut img = ZeroExtended::new(data, LEN);
    let len = img.len();
    let fs = match read_fat(&mut img, 0, len) {
        Ok(fs) => fs,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = format!("{:?}", fs.info());
    let nodes = fs.nodes().to_vec();
    for node in &nodes {
        if let NodeKind::File { size, content } = &node.kind {
            // By path, and by content id as the ext4 writer asks for it.
            if let Ok(mut f) = fs.open(&node.path) {
                let got = drain(&mut f, PER_FILE);
                if let Ok(got) = got {
                    assert!(
                        got <= *size,
                        "{}: read {got} bytes of a {size}-byte file",
                        node.path
                    );
                }
            }
            if let Ok(mut r) = Contents::open(&fs, content) {
                let _ = drain(&mut r as &mut dyn Read, PER_FILE);
            }
        }
    }
});
