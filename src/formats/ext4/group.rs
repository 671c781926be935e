//! Block group descriptors (`struct ext4_group_desc`): where each group's bitmaps and
//! inode table live, its free counts, and its checksum.
//!
//! Descriptors are 32 bytes, or `s_desc_size` (64) under the `64bit` feature, where the
//! `_hi` halves extend every block number and count. [`GroupDesc`] always holds all 64
//! bytes' fields; [`GroupDesc::decode_sized`]/[`GroupDesc::encode_sized`] handle the short
//! form. [`desc_location`] finds the block holding a descriptor, including the `meta_bg`
//! layout. Spec: kernel `Documentation/filesystems/ext4/group_descr.rst` and
//! `blockgroup.rst` (sparse_super backups, meta_bg).

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use super::spec::{compat, incompat, on_disk, ro_compat};
use super::superblock::Superblock;

on_disk! {
    /// `struct ext4_group_desc` (§"Block Group Descriptors"), 64-byte form.
    pub struct GroupDesc [64] {
        bg_block_bitmap_lo: u32 = 0x0,
        bg_inode_bitmap_lo: u32 = 0x4,
        bg_inode_table_lo: u32 = 0x8,
        bg_free_blocks_count_lo: u16 = 0xC,
        bg_free_inodes_count_lo: u16 = 0xE,
        bg_used_dirs_count_lo: u16 = 0x10,
        /// `EXT4_BG_INODE_UNINIT` 0x1, `EXT4_BG_BLOCK_UNINIT` 0x2, `EXT4_BG_INODE_ZEROED` 0x4.
        bg_flags: u16 = 0x12,
        bg_exclude_bitmap_lo: u32 = 0x14,
        bg_block_bitmap_csum_lo: u16 = 0x18,
        bg_inode_bitmap_csum_lo: u16 = 0x1A,
        bg_itable_unused_lo: u16 = 0x1C,
        bg_checksum: u16 = 0x1E,
        bg_block_bitmap_hi: u32 = 0x20,
        bg_inode_bitmap_hi: u32 = 0x24,
        bg_inode_table_hi: u32 = 0x28,
        bg_free_blocks_count_hi: u16 = 0x2C,
        bg_free_inodes_count_hi: u16 = 0x2E,
        bg_used_dirs_count_hi: u16 = 0x30,
        bg_itable_unused_hi: u16 = 0x32,
        bg_exclude_bitmap_hi: u32 = 0x34,
        bg_block_bitmap_csum_hi: u16 = 0x38,
        bg_inode_bitmap_csum_hi: u16 = 0x3A,
        bg_reserved: u32 = 0x3C,
    }
}

/// `bg_flags` bits.
pub const EXT4_BG_INODE_UNINIT: u16 = 0x1;
pub const EXT4_BG_BLOCK_UNINIT: u16 = 0x2;
pub const EXT4_BG_INODE_ZEROED: u16 = 0x4;

fn join(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

fn join16(hi: u16, lo: u16) -> u32 {
    (u32::from(hi) << 16) | u32::from(lo)
}

impl GroupDesc {
    /// Decodes a descriptor of `desc_size` bytes (32 or more); the short form leaves the
    /// `_hi` fields zero. None when `buf` is shorter than `desc_size` or than 32.
    pub fn decode_sized(buf: &[u8], desc_size: usize) -> Option<GroupDesc> {
        let used = buf.get(..desc_size.max(32))?;
        Some(GroupDesc::decode_lenient(used.get(..used.len().min(Self::SIZE))?))
    }

    /// Encodes to `desc_size` bytes: 32 (no `64bit`) or more, zero-padded past 64.
    pub fn encode_sized(&self, desc_size: usize) -> Vec<u8> {
        let full = self.encode();
        let mut out = vec![0u8; desc_size.max(32)];
        let n = out.len().min(full.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), full.get(..n)) {
            dst.copy_from_slice(src);
        }
        out
    }

    pub fn block_bitmap(&self) -> u64 {
        join(self.bg_block_bitmap_hi, self.bg_block_bitmap_lo)
    }

    pub fn inode_bitmap(&self) -> u64 {
        join(self.bg_inode_bitmap_hi, self.bg_inode_bitmap_lo)
    }

    pub fn inode_table(&self) -> u64 {
        join(self.bg_inode_table_hi, self.bg_inode_table_lo)
    }

    pub fn free_blocks_count(&self) -> u32 {
        join16(self.bg_free_blocks_count_hi, self.bg_free_blocks_count_lo)
    }

    pub fn free_inodes_count(&self) -> u32 {
        join16(self.bg_free_inodes_count_hi, self.bg_free_inodes_count_lo)
    }

    pub fn used_dirs_count(&self) -> u32 {
        join16(self.bg_used_dirs_count_hi, self.bg_used_dirs_count_lo)
    }

    pub fn itable_unused(&self) -> u32 {
        join16(self.bg_itable_unused_hi, self.bg_itable_unused_lo)
    }
}

/// The checksum a descriptor should carry in `bg_checksum`, or None when the filesystem
/// has neither `metadata_csum` nor `gdt_csum`. `raw` is the descriptor's `desc_size` bytes.
pub fn expected_checksum(sb: &Superblock, group: u32, raw: &[u8]) -> Option<u16> {
    if sb.has_metadata_csum() {
        Some(super::csum::group_desc_crc32c(sb.csum_seed(), group, raw))
    } else if sb.has_ro_compat(ro_compat::GDT_CSUM) {
        Some(super::csum::group_desc_crc16(&sb.s_uuid, group, raw))
    } else {
        None
    }
}

/// Whether group `group` holds a superblock backup (and, without `meta_bg`, a copy of the
/// descriptor table): every group without `sparse_super`; groups 0, 1 and powers of 3, 5
/// and 7 with it; group 0 and the two `s_backup_bgs` with `sparse_super2`.
pub fn has_superblock(sb: &Superblock, group: u64) -> bool {
    if group == 0 {
        return true;
    }
    if sb.has_compat(compat::SPARSE_SUPER2) {
        return sb.s_backup_bgs.iter().any(|&g| u64::from(g) == group);
    }
    if group <= 1 || !sb.has_ro_compat(ro_compat::SPARSE_SUPER) {
        return true;
    }
    if group & 1 == 0 {
        return false;
    }
    [3u64, 5, 7].iter().any(|&base| is_power_of(group, base))
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n % base == 0 {
        n /= base;
    }
    n == 1
}

/// First block of group `group`.
pub fn group_first_block(sb: &Superblock, group: u64) -> Option<u64> {
    group
        .checked_mul(u64::from(sb.s_blocks_per_group))?
        .checked_add(u64::from(sb.s_first_data_block))
}

/// Block number and byte offset within that block of descriptor `group`.
///
/// Without `meta_bg` the table starts in the block after the primary superblock. With it,
/// descriptor blocks from `s_first_meta_bg` on live in the first group of their
/// meta-group (a block's worth of groups), after that group's superblock backup if any.
pub fn desc_location(sb: &Superblock, group: u64) -> Option<(u64, u64)> {
    let ds = u64::from(sb.desc_size());
    let per_block = sb.block_size().checked_div(ds)?;
    let index = group.checked_div(per_block)?;
    let within = (group % per_block).checked_mul(ds)?;
    let first_gdt = u64::from(sb.s_first_data_block).checked_add(1)?;
    let block = if !sb.has_incompat(incompat::META_BG) || index < u64::from(sb.s_first_meta_bg) {
        first_gdt.checked_add(index)?
    } else {
        let meta_first_group = index.checked_mul(per_block)?;
        let start = group_first_block(sb, meta_first_group)?;
        start.checked_add(u64::from(has_superblock(sb, meta_first_group)))?
    };
    Some((block, within))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_64_bytes_without_overlaps() {
        crate::formats::ext4::spec::check_layout("GroupDesc", GroupDesc::SIZE, GroupDesc::FIELDS);
        let covered: usize = GroupDesc::FIELDS.iter().map(|f| f.2).sum();
        assert_eq!(covered, 64);
    }

    #[test]
    fn short_descriptors_leave_the_high_halves_zero() {
        let raw: Vec<u8> = (0u8..64).collect();
        let short = GroupDesc::decode_sized(&raw, 32).expect("32 bytes");
        assert_eq!(short.bg_block_bitmap_hi, 0);
        assert_eq!(short.block_bitmap(), u64::from(u32::from_le_bytes([0, 1, 2, 3])));
        assert_eq!(short.encode_sized(32), raw[..32]);
        let long = GroupDesc::decode_sized(&raw, 64).expect("64 bytes");
        assert_eq!(long.encode_sized(64), raw);
        assert_eq!(
            long.inode_table(),
            (u64::from(u32::from_le_bytes([40, 41, 42, 43])) << 32)
                | u64::from(u32::from_le_bytes([8, 9, 10, 11]))
        );
    }

    #[test]
    fn sparse_super_backups() {
        let mut sb = Superblock::zeroed();
        sb.s_feature_ro_compat = ro_compat::SPARSE_SUPER;
        let with: Vec<u64> = (0..50).filter(|&g| has_superblock(&sb, g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
