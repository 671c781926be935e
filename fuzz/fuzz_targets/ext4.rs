//! The ext4 reader: superblock and group descriptors (with their checksums), then the
//! whole tree from `/` — directories (linear and htree), inodes, extent trees and block
//! maps, inline data, xattrs in the inode and in blocks, symlinks — and every regular
//! file's bytes; then path look-ups and the first inodes by number, reachable or not.
//!
//! The input is the start of a 64 MiB partition whose remaining bytes are zero (see
//! `w4b_fuzz::ZeroExtended`): `mke2fs` seeds keep only their non-zero prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use w4b::formats::ext4::Ext4;
use w4b::formats::fs::NodeKind;
use w4b_fuzz::{drain, ZeroExtended};

const LEN: u64 = 64 << 20;
/// Bytes read from each file. A sparse file may rightly claim far more than the image
/// holds; the reader must not allocate by that claim, which the run's RSS limit checks.
const PER_FILE: u64 = 1 << 20;
/// Paths looked up again by name, and inodes read by number.
const LOOKUPS: usize = 64;
const INODES: u32 = 64;

fuzz_target!(|data: &[u8]| {
    let img = ZeroExtended::new(data, LEN);
    let len = img.len();
    let fs = match Ext4::open(img, 0, len) {
        Ok(fs) => fs,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = (fs.superblock().label(), fs.group_descriptors().len());
    match fs.walk() {
        Ok(entries) => {
            for e in &entries {
                if let NodeKind::File { size, .. } = e.node.kind {
                    if let Ok(mut f) = fs.open_file(e.ino) {
                        assert_eq!(f.size(), size, "{}: two sizes", e.node.path);
                        if let Ok(got) = drain(&mut f, PER_FILE) {
                            assert!(got <= size, "{}: read {got} bytes of {size}", e.node.path);
                        }
                    }
                }
            }
            for e in entries.iter().take(LOOKUPS) {
                match fs.lookup(&e.node.path) {
                    Ok(ino) => assert_eq!(ino, e.ino, "`{}` looks up elsewhere", e.node.path),
                    Err(err) => panic!("`{}` was walked but does not look up: {err}", e.node.path),
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            // A damaged tree still has a root directory worth reading entry by entry.
            if let Ok(children) = fs.read_dir(2) {
                for c in children.iter().take(LOOKUPS) {
                    let _ = fs.xattrs(c.inode);
                    if let Ok(mut f) = fs.open_file(c.inode) {
                        let _ = drain(&mut f, PER_FILE);
                    }
                }
            }
        }
    }
    for ino in 1..=INODES {
        if fs.inode(ino).is_err() {
            continue;
        }
        let _ = fs.xattrs(ino);
        let _ = fs.read_dir(ino);
        if let Ok(mut f) = fs.open_file(ino) {
            let _ = drain(&mut f, PER_FILE);
        }
    }
});
