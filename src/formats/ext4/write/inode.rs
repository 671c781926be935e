//! Inodes and extent trees as bytes.
//!
//! Kernel documentation, §"Index Nodes" and §"Extent Tree". The writer uses 256-byte
//! inodes with `i_extra_isize = 32`, so every inode carries nanosecond-extended times,
//! `i_crtime` and the high half of its checksum; bytes 160..256 hold in-inode xattrs.
//! Every time field is the node's one time: `tv_sec` low 32 bits in the base field and
//! the epoch bits (`(t - (i32)t) >> 32`, two bits) in the low bits of the `_extra` field,
//! nanoseconds zero.
//!
//! Checksum (`metadata_csum`): `crc32c(crc32c(crc32c(fs seed, le32 inode number),
//! le32 i_generation), the 256 inode bytes with l_i_checksum_lo and i_checksum_hi zero)`,
//! low half in `l_i_checksum_lo` (0x7C), high half in `i_checksum_hi` (0x82).
//!
//! Extents: a 12-byte `ext4_extent_header` (`eh_magic = 0xF30A`, `eh_entries`, `eh_max`,
//! `eh_depth`) then 12-byte entries. In `i_block` there is room for 4; with more, `i_block`
//! holds up to 4 `ext4_extent_idx` pointing at leaf blocks of 340 extents each, which end
//! with an `ext4_extent_tail` checksum (`crc32c(inode seed, block bytes before it)`).

use super::layout::BLOCK_SIZE;
use crate::formats::ext4::csum;

/// `EXT4_EXTENTS_FL`.
pub const EXTENTS_FL: u32 = 0x0008_0000;
/// `ext4_extent_header.eh_magic`.
const EXTENT_MAGIC: u16 = 0xF30A;
/// Entries that fit in `i_block` after the header.
pub const INODE_EXTENTS: usize = 4;
/// Entries per leaf block: `(4096 - 12 header - 4 tail) / 12`.
pub const LEAF_EXTENTS: usize = (BLOCK_SIZE as usize - 12) / 12;
/// Longest initialised extent (`EXT_INIT_MAX_LEN`).
pub const MAX_EXTENT_LEN: u64 = 32768;
/// `i_extra_isize`.
pub const EXTRA_ISIZE: usize = 32;
/// Where in-inode xattrs begin: 128 + `i_extra_isize`.
pub const IBODY_AT: usize = 128 + EXTRA_ISIZE;

/// One extent: `len` blocks from logical `lblk` at physical `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub lblk: u32,
    pub start: u64,
    pub len: u16,
}

/// Leaf blocks an extent list needs (0 when it fits in `i_block`), or `None` when it
/// would need a tree deeper than one index level (more than 1360 extents).
pub fn leaf_blocks(extents: usize) -> Option<usize> {
    if extents <= INODE_EXTENTS {
        return Some(0);
    }
    let leaves = extents.div_ceil(LEAF_EXTENTS);
    (leaves <= INODE_EXTENTS).then_some(leaves)
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    buf[0..2].copy_from_slice(&EXTENT_MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&depth.to_le_bytes());
}

fn leaf(buf: &mut [u8], e: &Extent) {
    buf[0..4].copy_from_slice(&e.lblk.to_le_bytes());
    buf[4..6].copy_from_slice(&e.len.to_le_bytes());
    buf[6..8].copy_from_slice(&((e.start >> 32) as u16).to_le_bytes());
    buf[8..12].copy_from_slice(&(e.start as u32).to_le_bytes());
}

/// `i_block` and the leaf blocks (number, bytes) for `extents` stored in `leaves`
/// (whose length is `leaf_blocks(extents.len())`).
pub fn extent_tree(extents: &[Extent], leaves: &[u64], inode_seed: u32) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let mut iblock = [0u8; 60];
    if leaves.is_empty() {
        header(&mut iblock, extents.len(), INODE_EXTENTS, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf(&mut iblock[12 + 12 * i..24 + 12 * i], e);
        }
        return (iblock, Vec::new());
    }
    header(&mut iblock, leaves.len(), INODE_EXTENTS, 1);
    let mut blocks = Vec::new();
    for (i, (chunk, &at)) in extents.chunks(LEAF_EXTENTS).zip(leaves).enumerate() {
        // ext4_extent_idx: ei_block, ei_leaf_lo, ei_leaf_hi, ei_unused.
        let idx = &mut iblock[12 + 12 * i..24 + 12 * i];
        idx[0..4].copy_from_slice(&chunk[0].lblk.to_le_bytes());
        idx[4..8].copy_from_slice(&(at as u32).to_le_bytes());
        idx[8..10].copy_from_slice(&((at >> 32) as u16).to_le_bytes());
        let mut b = vec![0u8; BLOCK_SIZE as usize];
        header(&mut b, chunk.len(), LEAF_EXTENTS, 0);
        for (j, e) in chunk.iter().enumerate() {
            leaf(&mut b[12 + 12 * j..24 + 12 * j], e);
        }
        let tail = 12 + 12 * LEAF_EXTENTS;
        let crc = csum::crc32c(inode_seed, &b[..tail]);
        b[tail..tail + 4].copy_from_slice(&crc.to_le_bytes());
        blocks.push((at, b));
    }
    (iblock, blocks)
}

/// The checksum seed of one inode (also used by its directory blocks and extent leaves).
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    csum::crc32c(
        csum::crc32c(fs_seed, &ino.to_le_bytes()),
        &generation.to_le_bytes(),
    )
}

/// Everything an inode records.
#[derive(Clone, Debug)]
pub struct InodeFields {
    /// `i_mode`: type and permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub time: i64,
    pub links: u16,
    /// `i_blocks` in 512-byte sectors.
    pub sectors: u64,
    pub flags: u32,
    pub i_block: [u8; 60],
    /// `i_file_acl`: the xattr block, or 0.
    pub file_acl: u64,
    /// Bytes 160..256: the in-inode xattr region (zeros when empty).
    pub ibody: Vec<u8>,
}

fn time_parts(t: i64) -> (u32, u32) {
    let lo = t as i32;
    let epoch = ((t - i64::from(lo)) >> 32) & 3;
    (lo as u32, epoch as u32)
}

/// Encodes inode `ino` (256 bytes) with its checksum.
pub fn encode(ino: u32, f: &InodeFields, fs_seed: u32) -> [u8; 256] {
    let mut b = [0u8; 256];
    let (t, t_extra) = time_parts(f.time);
    let w16 = |b: &mut [u8; 256], at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let w32 = |b: &mut [u8; 256], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    w16(&mut b, 0x00, f.mode); // i_mode
    w16(&mut b, 0x02, f.uid as u16); // i_uid
    w32(&mut b, 0x04, f.size as u32); // i_size_lo
    w32(&mut b, 0x08, t); // i_atime
    w32(&mut b, 0x0C, t); // i_ctime
    w32(&mut b, 0x10, t); // i_mtime
    w16(&mut b, 0x18, f.gid as u16); // i_gid
    w16(&mut b, 0x1A, f.links); // i_links_count
    w32(&mut b, 0x1C, f.sectors as u32); // i_blocks_lo
    w32(&mut b, 0x20, f.flags); // i_flags
    b[0x28..0x64].copy_from_slice(&f.i_block);
    w32(&mut b, 0x68, f.file_acl as u32); // i_file_acl_lo
    w32(&mut b, 0x6C, (f.size >> 32) as u32); // i_size_high
    w16(&mut b, 0x74, (f.sectors >> 32) as u16); // l_i_blocks_high
    w16(&mut b, 0x76, (f.file_acl >> 32) as u16); // l_i_file_acl_high
    w16(&mut b, 0x78, (f.uid >> 16) as u16); // l_i_uid_high
    w16(&mut b, 0x7A, (f.gid >> 16) as u16); // l_i_gid_high
    w16(&mut b, 0x80, EXTRA_ISIZE as u16); // i_extra_isize
    w32(&mut b, 0x84, t_extra); // i_ctime_extra
    w32(&mut b, 0x88, t_extra); // i_mtime_extra
    w32(&mut b, 0x8C, t_extra); // i_atime_extra
    w32(&mut b, 0x90, t); // i_crtime
    w32(&mut b, 0x94, t_extra); // i_crtime_extra
    let n = f.ibody.len().min(256 - IBODY_AT);
    b[IBODY_AT..IBODY_AT + n].copy_from_slice(&f.ibody[..n]);
    let crc = csum::crc32c(inode_seed(fs_seed, ino, 0), &b);
    w16(&mut b, 0x7C, crc as u16); // l_i_checksum_lo
    w16(&mut b, 0x82, (crc >> 16) as u16); // i_checksum_hi
    b
}

/// The device number in `i_block` as the kernel stores it: the old 16-bit form in word 0
/// when both numbers are below 256, else the new form in word 1.
pub fn device_block(major: u32, minor: u32) -> [u8; 60] {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        b[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let v = (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & !0xFF) << 12);
        b[4..8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_carry_epoch_bits() {
        assert_eq!(time_parts(0), (0, 0));
        assert_eq!(time_parts(-1), (u32::MAX, 0));
        assert_eq!(time_parts(1 << 31), (0x8000_0000, 1));
        assert_eq!(time_parts(1 << 32), (0, 1));
    }

    #[test]
    fn leaf_counts() {
        assert_eq!(leaf_blocks(4), Some(0));
        assert_eq!(leaf_blocks(5), Some(1));
        assert_eq!(leaf_blocks(340 * 4), Some(4));
        assert_eq!(leaf_blocks(340 * 4 + 1), None);
    }

    #[test]
    fn checksum_covers_the_inode() {
        let f = InodeFields {
            mode: 0o100644,
            uid: 0,
            gid: 0,
            size: 1,
            time: 0,
            links: 1,
            sectors: 8,
            flags: EXTENTS_FL,
            i_block: [0; 60],
            file_acl: 0,
            ibody: Vec::new(),
        };
        let a = encode(12, &f, 1);
        let b = encode(13, &f, 1);
        assert_ne!(a[0x7C..0x7E], b[0x7C..0x7E]);
    }

    #[test]
    fn big_device_numbers_use_the_new_encoding() {
        let b = device_block(259, 0x12345);
        assert_eq!(&b[0..4], &[0; 4]);
        assert_eq!(
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            0x45 | (259 << 8) | (0x12300 << 12)
        );
    }
}
