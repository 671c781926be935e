//! Linear directories: blocks of `ext4_dir_entry_2` records, each block closed by the
//! `metadata_csum` tail.
//!
//! Kernel documentation, §"Directory Entries": a record is `inode` u32, `rec_len` u16,
//! `name_len` u8, `file_type` u8 (`filetype` feature), then the name; `rec_len` is the
//! record length rounded up to 4, and the last record of a block stretches to the tail.
//! The tail (`ext4_dir_entry_tail`) is a fake 12-byte record: `det_reserved_zero1 = 0`,
//! `det_rec_len = 12`, `det_reserved_zero2 = 0`, `det_reserved_ft = 0xDE`, then
//! `det_checksum = crc32c(inode seed, block bytes before the tail)` where the inode seed is
//! `crc32c(crc32c(fs seed, le32 inode), le32 i_generation)`.
//!
//! The first block starts with `.` and `..`; names follow in the order given (walk order,
//! i.e. sorted). A record never spans blocks. Directories are linear (no `dx_root`):
//! the kernel and `e2fsck` accept linear directories of any size.

use crate::formats::ext4::csum;

/// The size of `ext4_dir_entry_tail`.
pub const TAIL_LEN: usize = 12;

/// `file_type` values (`EXT4_FT_*`).
pub mod ft {
    pub const REG: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHR: u8 = 3;
    pub const BLK: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCK: u8 = 6;
    pub const SYMLINK: u8 = 7;
}

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u32,
    pub file_type: u8,
}

fn rec_len(name_len: usize) -> usize {
    (8 + name_len).div_ceil(4) * 4
}

/// Splits `entries` (without `.`/`..`) into blocks: the ranges of entries in each block.
/// The first block also holds `.` and `..`; a directory has at least `min_blocks` blocks.
pub fn pack(entries: &[Entry], block_size: usize, min_blocks: usize) -> Vec<std::ops::Range<usize>> {
    let room = block_size - TAIL_LEN;
    let mut blocks = Vec::new();
    let mut start = 0;
    let mut used = rec_len(1) + rec_len(2);
    for (i, e) in entries.iter().enumerate() {
        let n = rec_len(e.name.len());
        if used + n > room {
            blocks.push(start..i);
            start = i;
            used = 0;
        }
        used += n;
    }
    blocks.push(start..entries.len());
    while blocks.len() < min_blocks {
        blocks.push(entries.len()..entries.len());
    }
    blocks
}

fn put(buf: &mut [u8], at: usize, ino: u32, rec: usize, name: &[u8], file_type: u8) {
    buf[at..at + 4].copy_from_slice(&ino.to_le_bytes());
    buf[at + 4..at + 6].copy_from_slice(&(rec as u16).to_le_bytes());
    buf[at + 6] = name.len() as u8;
    buf[at + 7] = file_type;
    buf[at + 8..at + 8 + name.len()].copy_from_slice(name);
}

/// Renders one directory block. `dots` is `Some((self, parent))` for the first block.
pub fn render(entries: &[Entry], dots: Option<(u32, u32)>, block_size: usize, inode_seed: u32) -> Vec<u8> {
    let room = block_size - TAIL_LEN;
    let mut buf = vec![0u8; block_size];
    // Records as (ino, name, type); the last one's rec_len stretches to the tail.
    let mut recs: Vec<(u32, &[u8], u8)> = Vec::new();
    if let Some((me, parent)) = dots {
        recs.push((me, b".", ft::DIR));
        recs.push((parent, b"..", ft::DIR));
    }
    for e in entries {
        recs.push((e.ino, &e.name, e.file_type));
    }
    let mut at = 0;
    if recs.is_empty() {
        // An empty block: one unused record spanning it.
        put(&mut buf, 0, 0, room, b"", 0);
    }
    let last = recs.len().saturating_sub(1);
    for (i, (ino, name, t)) in recs.iter().enumerate() {
        let rec = if i == last { room - at } else { rec_len(name.len()) };
        put(&mut buf, at, *ino, rec, name, *t);
        at += rec;
    }
    // ext4_dir_entry_tail
    buf[room + 4..room + 6].copy_from_slice(&(TAIL_LEN as u16).to_le_bytes());
    buf[room + 7] = 0xDE;
    let crc = csum::crc32c(inode_seed, &buf[..room]);
    buf[room + 8..room + 12].copy_from_slice(&crc.to_le_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            ino: 12,
            file_type: ft::REG,
        }
    }

    #[test]
    fn packing_respects_the_tail() {
        // 12 + 12 for the dots, then 16-byte records (names of 5..8 bytes): (4084-24)/16.
        let names: Vec<Entry> = (0..300).map(|i| e(&format!("f{i:05}"))).collect();
        let blocks = pack(&names, 4096, 1);
        assert_eq!(blocks[0], 0..253);
        assert_eq!(blocks[1], 253..300);
        assert_eq!(pack(&[], 4096, 4).len(), 4);
    }

    #[test]
    fn last_record_reaches_the_tail() {
        let b = render(&[e("a")], Some((2, 2)), 4096, 0);
        // `.` 12, `..` 12, `a` stretches to 4084.
        assert_eq!(u16::from_le_bytes([b[28], b[29]]), 4084 - 24);
        assert_eq!(b[4084 + 7], 0xDE);
    }
}
