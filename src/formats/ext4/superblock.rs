//! The ext4 superblock (`struct ext4_super_block`, 1024 bytes at byte 1024 of the
//! filesystem): geometry, feature sets, identity and the checksum seed.
//!
//! [`Superblock`] is the raw structure with the kernel's field names, decoded and encoded
//! losslessly so the writer fills the same type the reader parses. Derived values
//! (block size, 64-bit counts, group count, descriptor size) are methods, and
//! [`Superblock::validate`] checks the geometry a reader relies on before any other
//! structure is located from it. Spec: kernel `Documentation/filesystems/ext4/super.rst`.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use super::spec::{incompat, on_disk, ro_compat, EXT4_SUPER_MAGIC};

on_disk! {
    /// `struct ext4_super_block` (§"The Super Block"). Offsets are from the start of the
    /// superblock, which sits at byte 1024 of the filesystem.
    pub struct Superblock [1024] {
        s_inodes_count: u32 = 0x0,
        s_blocks_count_lo: u32 = 0x4,
        s_r_blocks_count_lo: u32 = 0x8,
        s_free_blocks_count_lo: u32 = 0xC,
        s_free_inodes_count: u32 = 0x10,
        s_first_data_block: u32 = 0x14,
        /// Block size is `2 ^ (10 + s_log_block_size)`.
        s_log_block_size: u32 = 0x18,
        s_log_cluster_size: u32 = 0x1C,
        s_blocks_per_group: u32 = 0x20,
        s_clusters_per_group: u32 = 0x24,
        s_inodes_per_group: u32 = 0x28,
        s_mtime: u32 = 0x2C,
        s_wtime: u32 = 0x30,
        s_mnt_count: u16 = 0x34,
        s_max_mnt_count: u16 = 0x36,
        s_magic: u16 = 0x38,
        s_state: u16 = 0x3A,
        s_errors: u16 = 0x3C,
        s_minor_rev_level: u16 = 0x3E,
        s_lastcheck: u32 = 0x40,
        s_checkinterval: u32 = 0x44,
        s_creator_os: u32 = 0x48,
        s_rev_level: u32 = 0x4C,
        s_def_resuid: u16 = 0x50,
        s_def_resgid: u16 = 0x52,
        s_first_ino: u32 = 0x54,
        s_inode_size: u16 = 0x58,
        s_block_group_nr: u16 = 0x5A,
        s_feature_compat: u32 = 0x5C,
        s_feature_incompat: u32 = 0x60,
        s_feature_ro_compat: u32 = 0x64,
        s_uuid: [u8; 16] = 0x68,
        s_volume_name: [u8; 16] = 0x78,
        s_last_mounted: [u8; 64] = 0x88,
        s_algorithm_usage_bitmap: u32 = 0xC8,
        s_prealloc_blocks: u8 = 0xCC,
        s_prealloc_dir_blocks: u8 = 0xCD,
        s_reserved_gdt_blocks: u16 = 0xCE,
        s_journal_uuid: [u8; 16] = 0xD0,
        s_journal_inum: u32 = 0xE0,
        s_journal_dev: u32 = 0xE4,
        s_last_orphan: u32 = 0xE8,
        /// Seed of the htree name hash.
        s_hash_seed: [u32; 4] = 0xEC,
        s_def_hash_version: u8 = 0xFC,
        s_jnl_backup_type: u8 = 0xFD,
        s_desc_size: u16 = 0xFE,
        s_default_mount_opts: u32 = 0x100,
        s_first_meta_bg: u32 = 0x104,
        s_mkfs_time: u32 = 0x108,
        s_jnl_blocks: [u32; 17] = 0x10C,
        s_blocks_count_hi: u32 = 0x150,
        s_r_blocks_count_hi: u32 = 0x154,
        s_free_blocks_count_hi: u32 = 0x158,
        s_min_extra_isize: u16 = 0x15C,
        s_want_extra_isize: u16 = 0x15E,
        s_flags: u32 = 0x160,
        s_raid_stride: u16 = 0x164,
        s_mmp_interval: u16 = 0x166,
        s_mmp_block: u64 = 0x168,
        s_raid_stripe_width: u32 = 0x170,
        s_log_groups_per_flex: u8 = 0x174,
        /// 1 = crc32c, the only defined value.
        s_checksum_type: u8 = 0x175,
        s_reserved_pad: u16 = 0x176,
        s_kbytes_written: u64 = 0x178,
        s_snapshot_inum: u32 = 0x180,
        s_snapshot_id: u32 = 0x184,
        s_snapshot_r_blocks_count: u64 = 0x188,
        s_snapshot_list: u32 = 0x190,
        s_error_count: u32 = 0x194,
        s_first_error_time: u32 = 0x198,
        s_first_error_ino: u32 = 0x19C,
        s_first_error_block: u64 = 0x1A0,
        s_first_error_func: [u8; 32] = 0x1A8,
        s_first_error_line: u32 = 0x1C8,
        s_last_error_time: u32 = 0x1CC,
        s_last_error_ino: u32 = 0x1D0,
        s_last_error_line: u32 = 0x1D4,
        s_last_error_block: u64 = 0x1D8,
        s_last_error_func: [u8; 32] = 0x1E0,
        s_mount_opts: [u8; 64] = 0x200,
        s_usr_quota_inum: u32 = 0x240,
        s_grp_quota_inum: u32 = 0x244,
        s_overhead_blocks: u32 = 0x248,
        s_backup_bgs: [u32; 2] = 0x24C,
        s_encrypt_algos: [u8; 4] = 0x254,
        s_encrypt_pw_salt: [u8; 16] = 0x258,
        s_lpf_ino: u32 = 0x268,
        s_prj_quota_inum: u32 = 0x26C,
        s_checksum_seed: u32 = 0x270,
        s_wtime_hi: u8 = 0x274,
        s_mtime_hi: u8 = 0x275,
        s_mkfs_time_hi: u8 = 0x276,
        s_lastcheck_hi: u8 = 0x277,
        s_first_error_time_hi: u8 = 0x278,
        s_last_error_time_hi: u8 = 0x279,
        s_first_error_errcode: u8 = 0x27A,
        s_last_error_errcode: u8 = 0x27B,
        s_encoding: u16 = 0x27C,
        s_encoding_flags: u16 = 0x27E,
        s_orphan_file_inum: u32 = 0x280,
        s_reserved: [u32; 94] = 0x284,
        /// crc32c of the preceding 1020 bytes (`metadata_csum`).
        s_checksum: u32 = 0x3FC,
    }
}

/// Why a superblock cannot be used; the caller wraps it with the image offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperblockProblem {
    /// The offending field (spec name).
    pub field: &'static str,
    pub reason: String,
    /// True when the value is valid ext4 this reader does not handle (vs corrupt).
    pub unsupported: bool,
}

fn corrupt(field: &'static str, reason: impl Into<String>) -> SuperblockProblem {
    SuperblockProblem {
        field,
        reason: reason.into(),
        unsupported: false,
    }
}

fn unsupported(field: &'static str, reason: impl Into<String>) -> SuperblockProblem {
    SuperblockProblem {
        field,
        reason: reason.into(),
        unsupported: true,
    }
}

/// Incompatible features this reader understands; any other bit is unsupported.
pub const READER_INCOMPAT: u32 = incompat::FILETYPE
    | incompat::META_BG
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::MMP
    | incompat::FLEX_BG
    | incompat::EA_INODE
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA
    | incompat::ENCRYPT
    | incompat::CASEFOLD;

impl Superblock {
    /// Block size in bytes (1 KiB to 64 KiB once validated).
    pub fn block_size(&self) -> u64 {
        1u64.checked_shl(self.s_log_block_size.saturating_add(10))
            .unwrap_or(0)
    }

    /// `s_blocks_count_lo` plus `s_blocks_count_hi` under `64bit`.
    pub fn blocks_count(&self) -> u64 {
        self.hi_lo(self.s_blocks_count_hi, self.s_blocks_count_lo)
    }

    /// Reserved blocks count (64-bit aware).
    pub fn r_blocks_count(&self) -> u64 {
        self.hi_lo(self.s_r_blocks_count_hi, self.s_r_blocks_count_lo)
    }

    /// Free blocks count (64-bit aware).
    pub fn free_blocks_count(&self) -> u64 {
        self.hi_lo(self.s_free_blocks_count_hi, self.s_free_blocks_count_lo)
    }

    fn hi_lo(&self, hi: u32, lo: u32) -> u64 {
        let hi = if self.has_incompat(incompat::BIT64) {
            u64::from(hi)
        } else {
            0
        };
        (hi << 32) | u64::from(lo)
    }

    pub fn has_compat(&self, bit: u32) -> bool {
        self.s_feature_compat & bit != 0
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.s_feature_incompat & bit != 0
    }

    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.s_feature_ro_compat & bit != 0
    }

    /// `metadata_csum` is on: crc32c on every metadata structure.
    pub fn has_metadata_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM)
    }

    /// On-disk inode size (128 for revision 0).
    pub fn inode_size(&self) -> u16 {
        if self.s_rev_level == 0 {
            128
        } else {
            self.s_inode_size
        }
    }

    /// First non-reserved inode (11 for revision 0).
    pub fn first_ino(&self) -> u32 {
        if self.s_rev_level == 0 {
            11
        } else {
            self.s_first_ino
        }
    }

    /// Group descriptor size: `s_desc_size` under `64bit`, else 32.
    pub fn desc_size(&self) -> u16 {
        if self.has_incompat(incompat::BIT64) {
            self.s_desc_size
        } else {
            32
        }
    }

    /// Number of block groups: blocks after `s_first_data_block`, rounded up per group.
    pub fn group_count(&self) -> u64 {
        let data = self
            .blocks_count()
            .saturating_sub(u64::from(self.s_first_data_block));
        let per = u64::from(self.s_blocks_per_group);
        if per == 0 {
            return 0;
        }
        data.div_ceil(per)
    }

    /// The volume label (`s_volume_name` up to its first NUL), lossily as UTF-8.
    pub fn label(&self) -> String {
        let end = self.s_volume_name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(self.s_volume_name.get(..end).unwrap_or(&[])).into_owned()
    }

    /// Seconds since the epoch from a 32-bit field and its 8-bit `_hi` extension.
    pub fn time(lo: u32, hi: u8) -> i64 {
        (i64::from(hi) << 32) | i64::from(lo)
    }

    /// Checksum seed for every crc32c except the superblock's own.
    pub fn csum_seed(&self) -> u32 {
        super::csum::fs_seed(
            &self.s_uuid,
            self.has_incompat(incompat::CSUM_SEED),
            self.s_checksum_seed,
        )
    }

    /// Checks the geometry a reader relies on. Does not check the checksum.
    pub fn validate(&self) -> Result<(), SuperblockProblem> {
        if self.s_magic != EXT4_SUPER_MAGIC {
            return Err(corrupt(
                "s_magic",
                format!("{:#06x} is not the ext2/3/4 magic 0xef53", self.s_magic),
            ));
        }
        if self.s_log_block_size > 6 {
            return Err(corrupt(
                "s_log_block_size",
                format!("{} gives a block size above 64 KiB", self.s_log_block_size),
            ));
        }
        let bs = self.block_size();
        let unknown = self.s_feature_incompat & !READER_INCOMPAT;
        if unknown != 0 {
            let what = if unknown & incompat::RECOVER != 0 {
                "the journal needs recovery (the filesystem was not cleanly unmounted)".to_string()
            } else {
                format!("incompatible feature bits {unknown:#x} are not supported")
            };
            return Err(unsupported("s_feature_incompat", what));
        }
        if self.s_blocks_per_group == 0 || u64::from(self.s_blocks_per_group) > bs.saturating_mul(8) {
            return Err(corrupt(
                "s_blocks_per_group",
                format!("{} does not fit one bitmap block", self.s_blocks_per_group),
            ));
        }
        if self.s_inodes_per_group == 0 || u64::from(self.s_inodes_per_group) > bs.saturating_mul(8) {
            return Err(corrupt(
                "s_inodes_per_group",
                format!("{} does not fit one bitmap block", self.s_inodes_per_group),
            ));
        }
        let isz = self.inode_size();
        if isz < 128 || !isz.is_power_of_two() || u64::from(isz) > bs {
            return Err(corrupt(
                "s_inode_size",
                format!("{isz} is not a power of two between 128 and the block size"),
            ));
        }
        let ds = self.desc_size();
        if self.has_incompat(incompat::BIT64) && (ds < 32 || !ds.is_power_of_two() || ds > 1024) {
            return Err(corrupt(
                "s_desc_size",
                format!("{ds} is not a power of two between 32 and 1024"),
            ));
        }
        if u64::from(self.s_first_data_block) >= self.blocks_count() {
            return Err(corrupt(
                "s_first_data_block",
                "lies past the end of the filesystem",
            ));
        }
        if bs == 1024 && self.s_first_data_block != 1 || bs > 1024 && self.s_first_data_block != 0 {
            return Err(corrupt(
                "s_first_data_block",
                format!("{} is wrong for {bs}-byte blocks", self.s_first_data_block),
            ));
        }
        let groups = self.group_count();
        let max_inodes = groups.saturating_mul(u64::from(self.s_inodes_per_group));
        if u64::from(self.s_inodes_count) > max_inodes {
            return Err(corrupt(
                "s_inodes_count",
                format!(
                    "{} exceeds {groups} groups of {} inodes",
                    self.s_inodes_count, self.s_inodes_per_group
                ),
            ));
        }
        if self.has_metadata_csum() && self.s_checksum_type != 1 {
            return Err(unsupported(
                "s_checksum_type",
                format!("checksum type {} (only 1, crc32c, exists)", self.s_checksum_type),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_1024_bytes_without_overlaps() {
        crate::formats::ext4::spec::check_layout("Superblock", Superblock::SIZE, Superblock::FIELDS);
        let covered: usize = Superblock::FIELDS.iter().map(|f| f.2).sum();
        assert_eq!(covered, 1024, "every superblock byte belongs to a field");
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut raw = [0u8; 1024];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let sb = Superblock::decode(&raw).expect("1024 bytes");
        assert_eq!(sb.encode(), raw);
        assert_eq!(sb.s_magic, u16::from_le_bytes([raw[0x38], raw[0x39]]));
        assert_eq!(
            sb.s_checksum,
            u32::from_le_bytes([raw[0x3FC], raw[0x3FD], raw[0x3FE], raw[0x3FF]])
        );
        assert!(Superblock::decode(&raw[..1023]).is_none());
    }

    #[test]
    fn validate_rejects_a_bad_magic_and_unknown_features() {
        let mut sb = Superblock::zeroed();
        assert_eq!(sb.validate().unwrap_err().field, "s_magic");
        sb.s_magic = EXT4_SUPER_MAGIC;
        sb.s_feature_incompat = incompat::COMPRESSION;
        let p = sb.validate().unwrap_err();
        assert!(p.unsupported, "{p:?}");
        sb.s_feature_incompat = incompat::RECOVER;
        assert!(sb.validate().unwrap_err().reason.contains("recovery"));
    }
}
