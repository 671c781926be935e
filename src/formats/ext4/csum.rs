//! The two checksums ext4 uses for metadata: crc32c (`metadata_csum`) and crc16
//! (`gdt_csum`, the older group-descriptor-only scheme), plus the per-structure recipes.
//!
//! ext4 uses crc32c (Castagnoli, reflected polynomial `0x82F63B78`) **without** the final
//! inversion of the textbook CRC: the kernel's `ext4_chksum(seed, data)` feeds `seed` in as
//! the running register and stores the register as is. Every recipe starts from either
//! `!0` (the superblock) or the filesystem's checksum seed — `crc32c(!0, s_uuid)`, or
//! `s_checksum_seed` under `metadata_csum_seed` — extended per inode by the inode number
//! and generation. Recipes follow the kernel's `fs/ext4/*.c` and e2fsprogs `lib/ext2fs/csum.c`;
//! the reader verifies with them and the writer stamps with them, so both share this file.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

/// Lookup table for the reflected Castagnoli polynomial.
const CRC32C_TABLE: [u32; 256] = crate::formats::crc::reflected_table(0x82F6_3B78);

/// Lookup table for the reflected CRC-16/ARC polynomial (`0xA001`), as `gdt_csum` uses.
const CRC16_TABLE: [u32; 256] = crate::formats::crc::reflected_table(0xA001);

/// crc32c with the register seeded by `seed` and no final inversion (`ext4_chksum`).
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    crate::formats::crc::update32(&CRC32C_TABLE, seed, data)
}

/// crc16 (ARC, reflected) with the register seeded by `seed` (e2fsprogs `ext2fs_crc16`).
pub fn crc16(seed: u16, data: &[u8]) -> u16 {
    // The table's entries fit in 16 bits, so the register never leaves them.
    let crc = crate::formats::crc::update32(&CRC16_TABLE, u32::from(seed), data);
    u16::try_from(crc & 0xFFFF).unwrap_or(0)
}

/// The filesystem-wide seed: `s_checksum_seed` if `metadata_csum_seed` is set, else the
/// crc32c of `s_uuid`.
pub fn fs_seed(uuid: &[u8; 16], csum_seed_feature: bool, s_checksum_seed: u32) -> u32 {
    if csum_seed_feature {
        s_checksum_seed
    } else {
        crc32c(!0, uuid)
    }
}

/// Per-inode seed: the fs seed extended by the inode number and `i_generation` (both LE).
/// Extent blocks, directory blocks and the inode itself start from it.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let crc = crc32c(fs_seed, &ino.to_le_bytes());
    crc32c(crc, &generation.to_le_bytes())
}

/// `s_checksum`: crc32c(!0) of the superblock up to the checksum field (offset 0x3FC).
pub fn superblock(sb_bytes: &[u8; 1024]) -> u32 {
    crc32c(!0, sb_bytes.get(..0x3FC).unwrap_or(&[]))
}

/// Offset of `bg_checksum` in a group descriptor.
const BG_CHECKSUM_OFFSET: usize = 0x1E;

/// `bg_checksum` of group `group` under `metadata_csum`: the low 16 bits of crc32c over the
/// group number (LE32) and the descriptor with the checksum field left out.
pub fn group_desc_crc32c(fs_seed: u32, group: u32, desc: &[u8]) -> u16 {
    let crc = crc32c(fs_seed, &group.to_le_bytes());
    let crc = crc32c(crc, desc.get(..BG_CHECKSUM_OFFSET).unwrap_or(desc));
    let crc = crc32c(crc, &[0, 0]);
    let rest = desc.get(BG_CHECKSUM_OFFSET.saturating_add(2)..).unwrap_or(&[]);
    (crc32c(crc, rest) & 0xFFFF) as u16
}

/// `bg_checksum` of group `group` under `gdt_csum` (no `metadata_csum`): crc16 over the
/// UUID, the group number (LE32) and the descriptor without its checksum field.
pub fn group_desc_crc16(uuid: &[u8; 16], group: u32, desc: &[u8]) -> u16 {
    let crc = crc16(!0, uuid);
    let crc = crc16(crc, &group.to_le_bytes());
    let crc = crc16(crc, desc.get(..BG_CHECKSUM_OFFSET).unwrap_or(desc));
    let rest = desc.get(BG_CHECKSUM_OFFSET.saturating_add(2)..).unwrap_or(&[]);
    crc16(crc, rest)
}

/// Offsets of `l_i_checksum_lo` and `i_checksum_hi` in an inode.
const I_CHECKSUM_LO: usize = 0x7C;
const I_CHECKSUM_HI: usize = 0x82;

/// The inode checksum: crc32c from the inode seed over the whole on-disk inode
/// (`s_inode_size` bytes) with both checksum halves zeroed. The caller stores the low 16
/// bits in `l_i_checksum_lo` and, when `i_extra_isize >= 4`, the high 16 in `i_checksum_hi`.
pub fn inode(inode_seed: u32, raw_inode: &[u8]) -> u32 {
    let has_hi = raw_inode.len() > 128 && super::spec::le16(raw_inode, 0x80) >= 4;
    let mut crc = crc32c(inode_seed, raw_inode.get(..I_CHECKSUM_LO).unwrap_or(raw_inode));
    crc = crc32c(crc, &[0, 0]);
    let hi_or_end = if has_hi { I_CHECKSUM_HI } else { raw_inode.len() };
    crc = crc32c(
        crc,
        raw_inode
            .get(I_CHECKSUM_LO.saturating_add(2)..hi_or_end)
            .unwrap_or(&[]),
    );
    if has_hi {
        crc = crc32c(crc, &[0, 0]);
        crc = crc32c(
            crc,
            raw_inode.get(I_CHECKSUM_HI.saturating_add(2)..).unwrap_or(&[]),
        );
    }
    crc
}

/// `et_checksum` of an extent tree block: crc32c from the inode seed over the block up to
/// the tail (`12 + 12 * eh_max` bytes).
pub fn extent_block(inode_seed: u32, covered: &[u8]) -> u32 {
    crc32c(inode_seed, covered)
}

/// `det_checksum` of a leaf directory block: crc32c from the inode seed over the block
/// without its 12-byte tail.
pub fn dir_block(inode_seed: u32, covered: &[u8]) -> u32 {
    crc32c(inode_seed, covered)
}

/// `dt_checksum` of an htree root or node block: crc32c from the inode seed over the
/// block up to the end of the used `dx_entry`s (`count_offset + 8 * count`), then over the
/// `dx_tail` with its checksum as zero.
pub fn dx_block(inode_seed: u32, covered: &[u8], dt_reserved: u32) -> u32 {
    let crc = crc32c(inode_seed, covered);
    let crc = crc32c(crc, &dt_reserved.to_le_bytes());
    crc32c(crc, &[0; 4])
}

/// `h_checksum` of an extended attribute block: crc32c from the fs seed over the block
/// number (LE64) and the block with `h_checksum` (offset 0x10) zeroed.
pub fn xattr_block(fs_seed: u32, block_nr: u64, block: &[u8]) -> u32 {
    let crc = crc32c(fs_seed, &block_nr.to_le_bytes());
    let crc = crc32c(crc, block.get(..0x10).unwrap_or(block));
    let crc = crc32c(crc, &[0; 4]);
    crc32c(crc, block.get(0x14..).unwrap_or(&[]))
}

/// Block or inode bitmap checksum: crc32c from the fs seed over the bitmap's meaningful
/// bytes (`s_clusters_per_group / 8` or `s_inodes_per_group / 8`). The low 16 bits go in
/// the `_lo` field, the high 16 in `_hi` when descriptors are 64 bytes.
pub fn bitmap(fs_seed: u32, bitmap: &[u8]) -> u32 {
    crc32c(fs_seed, bitmap)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The catalogue check value of CRC-32C is for the inverted form.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc16_matches_the_standard_check_value() {
        // CRC-16/ARC: init 0, reflected 0xA001, check value 0xBB3D.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }

    #[test]
    fn xattr_block_checksum_ignores_the_checksum_field() {
        let mut block = vec![7u8; 1024];
        let a = xattr_block(1, 5, &block);
        block[0x10..0x14].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(a, xattr_block(1, 5, &block));
        block[0x20] = 0;
        assert_ne!(a, xattr_block(1, 5, &block));
    }
}
