//! Inodes (`struct ext4_inode`): type and permissions, owners, sizes, the four
//! timestamps, flags, and the 60-byte `i_block` area that holds an extent tree root, a
//! block map, a fast symlink target, inline data or device numbers.
//!
//! [`Inode`] is the raw 160-byte structure with the kernel's field names; fields past
//! `128 + i_extra_isize` are not part of a given inode and its accessors ignore them.
//! The bytes after that, up to `s_inode_size`, hold in-inode extended attributes (see
//! `xattr.rs`). Spec: kernel `Documentation/filesystems/ext4/inodes.rst`.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use super::spec::{inode_flags, mode, on_disk, EXT4_GOOD_OLD_INODE_SIZE};

on_disk! {
    /// `struct ext4_inode` (§"Index Nodes"), Linux `osd1`/`osd2` variants, with the
    /// large-inode fields up to `i_projid`.
    pub struct Inode [160] {
        i_mode: u16 = 0x0,
        i_uid: u16 = 0x2,
        i_size_lo: u32 = 0x4,
        i_atime: u32 = 0x8,
        i_ctime: u32 = 0xC,
        i_mtime: u32 = 0x10,
        i_dtime: u32 = 0x14,
        i_gid: u16 = 0x18,
        i_links_count: u16 = 0x1A,
        i_blocks_lo: u32 = 0x1C,
        i_flags: u32 = 0x20,
        /// `osd1.linux1.l_i_version`.
        l_i_version: u32 = 0x24,
        i_block: [u32; 15] = 0x28,
        i_generation: u32 = 0x64,
        i_file_acl_lo: u32 = 0x68,
        i_size_high: u32 = 0x6C,
        i_obso_faddr: u32 = 0x70,
        l_i_blocks_high: u16 = 0x74,
        l_i_file_acl_high: u16 = 0x76,
        l_i_uid_high: u16 = 0x78,
        l_i_gid_high: u16 = 0x7A,
        l_i_checksum_lo: u16 = 0x7C,
        l_i_reserved: u16 = 0x7E,
        i_extra_isize: u16 = 0x80,
        i_checksum_hi: u16 = 0x82,
        i_ctime_extra: u32 = 0x84,
        i_mtime_extra: u32 = 0x88,
        i_atime_extra: u32 = 0x8C,
        i_crtime: u32 = 0x90,
        i_crtime_extra: u32 = 0x94,
        i_version_hi: u32 = 0x98,
        i_projid: u32 = 0x9C,
    }
}

/// A timestamp: seconds since the Unix epoch and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    /// Decodes a base field and its optional `_extra` word (§"Inode Timestamps"): the base
    /// is signed seconds; the low 2 bits of `extra` extend it past 2038 (added as bits
    /// 32–33), the high 30 bits are nanoseconds.
    pub fn decode(base: u32, extra: Option<u32>) -> Timestamp {
        let secs = i64::from(base as i32);
        match extra {
            None => Timestamp { secs, nanos: 0 },
            Some(e) => Timestamp {
                secs: secs.saturating_add(i64::from(e & 3) << 32),
                nanos: e >> 2,
            },
        }
    }

    /// The `(base, extra)` pair that decodes to `self` (seconds within ±2^33 − epoch bits).
    pub fn encode(self) -> (u32, u32) {
        let rel = self.secs.wrapping_sub(i64::from(self.secs as i32));
        let epoch = ((rel >> 32) & 3) as u32;
        (self.secs as u32, (self.nanos << 2) | epoch)
    }
}

/// What an inode is, from the `S_IFMT` bits of `i_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl Inode {
    /// Whether a large-inode field ending at byte `end` lies inside `128 + i_extra_isize`.
    pub fn has_extra(&self, end: usize) -> bool {
        EXT4_GOOD_OLD_INODE_SIZE.saturating_add(usize::from(self.i_extra_isize)) >= end
    }

    /// The type, or None for an invalid `S_IFMT` value.
    pub fn file_type(&self) -> Option<FileType> {
        Some(match self.i_mode & mode::S_IFMT {
            mode::S_IFREG => FileType::Regular,
            mode::S_IFDIR => FileType::Directory,
            mode::S_IFLNK => FileType::Symlink,
            mode::S_IFCHR => FileType::CharDevice,
            mode::S_IFBLK => FileType::BlockDevice,
            mode::S_IFIFO => FileType::Fifo,
            mode::S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }

    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub fn permissions(&self) -> u32 {
        u32::from(self.i_mode & 0o7777)
    }

    /// Owner: `i_uid` plus `l_i_uid_high` (Linux layout).
    pub fn uid(&self) -> u32 {
        (u32::from(self.l_i_uid_high) << 16) | u32::from(self.i_uid)
    }

    /// Group: `i_gid` plus `l_i_gid_high`.
    pub fn gid(&self) -> u32 {
        (u32::from(self.l_i_gid_high) << 16) | u32::from(self.i_gid)
    }

    /// Size in bytes: `i_size_lo` plus `i_size_high`.
    pub fn size(&self) -> u64 {
        (u64::from(self.i_size_high) << 32) | u64::from(self.i_size_lo)
    }

    /// The extended attribute block (`i_file_acl_lo` plus `l_i_file_acl_high`), 0 if none.
    pub fn file_acl(&self) -> u64 {
        (u64::from(self.l_i_file_acl_high) << 32) | u64::from(self.i_file_acl_lo)
    }

    /// `i_blocks` in 512-byte units, honouring `EXT4_HUGE_FILE_FL` (units of fs blocks).
    pub fn blocks_512(&self, block_size: u64, huge_file_feature: bool) -> u64 {
        let raw = (u64::from(self.l_i_blocks_high) << 32) | u64::from(self.i_blocks_lo);
        if huge_file_feature && self.has_flag(inode_flags::EXT4_HUGE_FILE_FL) {
            raw.saturating_mul(block_size / 512)
        } else if huge_file_feature {
            raw
        } else {
            u64::from(self.i_blocks_lo)
        }
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.i_flags & flag != 0
    }

    pub fn links_count(&self) -> u16 {
        self.i_links_count
    }

    fn extra(&self, value: u32, end: usize) -> Option<u32> {
        self.has_extra(end).then_some(value)
    }

    pub fn atime(&self) -> Timestamp {
        Timestamp::decode(self.i_atime, self.extra(self.i_atime_extra, 0x90))
    }

    pub fn ctime(&self) -> Timestamp {
        Timestamp::decode(self.i_ctime, self.extra(self.i_ctime_extra, 0x88))
    }

    pub fn mtime(&self) -> Timestamp {
        Timestamp::decode(self.i_mtime, self.extra(self.i_mtime_extra, 0x8C))
    }

    /// Creation time, when the inode is large enough to have one.
    pub fn crtime(&self) -> Option<Timestamp> {
        self.has_extra(0x94)
            .then(|| Timestamp::decode(self.i_crtime, self.extra(self.i_crtime_extra, 0x98)))
    }

    /// Deletion time (seconds, 32-bit); non-zero only for deleted or orphaned inodes.
    pub fn dtime(&self) -> u32 {
        self.i_dtime
    }

    /// The 60 raw bytes of `i_block`.
    pub fn i_block_bytes(&self) -> [u8; 60] {
        let mut out = [0u8; 60];
        for (dst, word) in out.chunks_exact_mut(4).zip(self.i_block.iter()) {
            dst.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Device numbers of a character or block device (§"Inode.i_block" device special
    /// files): the old encoding in `i_block[0]` (8-bit major and minor) when non-zero,
    /// else the new one in `i_block[1]` (12-bit major, 20-bit minor split around it).
    pub fn device(&self) -> (u32, u32) {
        let old = self.i_block[0];
        if old != 0 {
            return ((old >> 8) & 0xFF, old & 0xFF);
        }
        let new = self.i_block[1];
        ((new & 0xF_FF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xF_FF00))
    }

    /// The `i_block` words for a device, as the kernel writes them: old encoding when
    /// both numbers fit 8 bits, else the new one.
    pub fn encode_device(major: u32, minor: u32) -> [u32; 2] {
        if major < 256 && minor < 256 {
            [(major << 8) | minor, 0]
        } else {
            [
                0,
                (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & !0xFF) << 12),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_160_bytes_without_overlaps() {
        crate::formats::ext4::spec::check_layout("Inode", Inode::SIZE, Inode::FIELDS);
        let covered: usize = Inode::FIELDS.iter().map(|f| f.2).sum();
        assert_eq!(covered, 160);
    }

    #[test]
    fn round_trip_and_accessors() {
        let mut raw = [0u8; 160];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (i * 13 + 1) as u8;
        }
        let ino = Inode::decode(&raw).expect("160 bytes");
        assert_eq!(ino.encode(), raw);
        assert_eq!(ino.uid() & 0xFFFF, u32::from(ino.i_uid));
        assert_eq!(ino.uid() >> 16, u32::from(ino.l_i_uid_high));
    }

    #[test]
    fn timestamps_decode_epoch_bits_and_nanoseconds() {
        assert_eq!(Timestamp::decode(0xFFFF_FFFF, None).secs, -1);
        assert_eq!(Timestamp::decode(0xFFFF_FFFF, Some(1)).secs, (1i64 << 32) - 1);
        let t = Timestamp::decode(5, Some((123_456_789 << 2) | 1));
        assert_eq!(
            t,
            Timestamp {
                secs: 5 + (1 << 32),
                nanos: 123_456_789
            }
        );
        for secs in [0i64, -1, 1_700_000_000, (1 << 32) + 7, (1 << 33) + 9, -(1 << 31)] {
            let t = Timestamp { secs, nanos: 42 };
            let (b, e) = t.encode();
            assert_eq!(Timestamp::decode(b, Some(e)), t, "{secs}");
        }
    }

    #[test]
    fn device_numbers_both_encodings() {
        let mut ino = Inode::zeroed();
        ino.i_block[..2].copy_from_slice(&Inode::encode_device(8, 1));
        assert_eq!(ino.device(), (8, 1));
        ino.i_block[..2].copy_from_slice(&Inode::encode_device(259, 70000));
        assert_eq!(ino.i_block[0], 0);
        assert_eq!(ino.device(), (259, 70000));
    }
}
