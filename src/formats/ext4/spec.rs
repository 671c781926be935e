//! Shared vocabulary of the ext4 on-disk format: feature and flag bits, magic numbers and
//! the little-endian struct codec every on-disk structure in this module is declared with.
//!
//! Names follow the kernel's `Documentation/filesystems/ext4/` and `fs/ext4/ext4.h`, so a
//! reader can grep the spec for any constant here. Structures are declared once with
//! [`on_disk!`] as `field: type = offset` lists; the macro derives a lossless
//! `decode`/`encode` pair, so the reader and the writer share one layout and a typo in an
//! offset shows up in both directions (and in the overlap test below).

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

/// `s_magic` (superblock §"The Super Block").
pub const EXT4_SUPER_MAGIC: u16 = 0xEF53;
/// Byte offset of the primary superblock from the start of the filesystem.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Inode number of the root directory.
pub const EXT4_ROOT_INO: u32 = 2;
/// `i_block` is 15 32-bit words = 60 bytes (fast symlinks, inline data, extent root).
pub const EXT4_N_BLOCKS: usize = 15;
/// Size of the classic inode (`EXT2_GOOD_OLD_INODE_SIZE`); `i_extra_isize` counts from here.
pub const EXT4_GOOD_OLD_INODE_SIZE: usize = 128;

/// `s_feature_compat` bits.
pub mod compat {
    pub const DIR_PREALLOC: u32 = 0x1;
    pub const IMAGIC_INODES: u32 = 0x2;
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const EXT_ATTR: u32 = 0x8;
    pub const RESIZE_INODE: u32 = 0x10;
    pub const DIR_INDEX: u32 = 0x20;
    pub const LAZY_BG: u32 = 0x40;
    pub const EXCLUDE_BITMAP: u32 = 0x100;
    pub const SPARSE_SUPER2: u32 = 0x200;
    pub const FAST_COMMIT: u32 = 0x400;
    pub const STABLE_INODES: u32 = 0x800;
    pub const ORPHAN_FILE: u32 = 0x1000;
}

/// `s_feature_incompat` bits.
pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    /// The journal needs replaying (`needs_recovery`).
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
}

/// `s_feature_ro_compat` bits.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const BTREE_DIR: u32 = 0x4;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const DIR_NLINK: u32 = 0x20;
    pub const EXTRA_ISIZE: u32 = 0x40;
    pub const HAS_SNAPSHOT: u32 = 0x80;
    pub const QUOTA: u32 = 0x100;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    pub const REPLICA: u32 = 0x800;
    pub const READONLY: u32 = 0x1000;
    pub const PROJECT: u32 = 0x2000;
    pub const SHARED_BLOCKS: u32 = 0x4000;
    pub const VERITY: u32 = 0x8000;
    pub const ORPHAN_PRESENT: u32 = 0x10000;
}

/// `i_flags` bits (§"Inode Table", `i_flags`).
pub mod inode_flags {
    pub const EXT4_SECRM_FL: u32 = 0x1;
    pub const EXT4_UNRM_FL: u32 = 0x2;
    pub const EXT4_COMPR_FL: u32 = 0x4;
    pub const EXT4_SYNC_FL: u32 = 0x8;
    pub const EXT4_IMMUTABLE_FL: u32 = 0x10;
    pub const EXT4_APPEND_FL: u32 = 0x20;
    pub const EXT4_NODUMP_FL: u32 = 0x40;
    pub const EXT4_NOATIME_FL: u32 = 0x80;
    pub const EXT4_ENCRYPT_FL: u32 = 0x800;
    /// Hashed-tree directory (`htree`).
    pub const EXT4_INDEX_FL: u32 = 0x1000;
    pub const EXT4_JOURNAL_DATA_FL: u32 = 0x4000;
    pub const EXT4_DIRSYNC_FL: u32 = 0x10000;
    pub const EXT4_TOPDIR_FL: u32 = 0x20000;
    /// `i_blocks` counts filesystem blocks, not 512-byte sectors.
    pub const EXT4_HUGE_FILE_FL: u32 = 0x40000;
    /// `i_block` holds an extent tree rather than a block map.
    pub const EXT4_EXTENTS_FL: u32 = 0x80000;
    pub const EXT4_VERITY_FL: u32 = 0x100000;
    /// The inode stores a large extended attribute value.
    pub const EXT4_EA_INODE_FL: u32 = 0x200000;
    pub const EXT4_INLINE_DATA_FL: u32 = 0x10000000;
    pub const EXT4_PROJINHERIT_FL: u32 = 0x20000000;
    pub const EXT4_CASEFOLD_FL: u32 = 0x40000000;
}

/// File type bits of `i_mode` (`S_IFMT` and friends).
pub mod mode {
    pub const S_IFMT: u16 = 0xF000;
    pub const S_IFIFO: u16 = 0x1000;
    pub const S_IFCHR: u16 = 0x2000;
    pub const S_IFDIR: u16 = 0x4000;
    pub const S_IFBLK: u16 = 0x6000;
    pub const S_IFREG: u16 = 0x8000;
    pub const S_IFLNK: u16 = 0xA000;
    pub const S_IFSOCK: u16 = 0xC000;
}

/// `file_type` byte of `ext4_dir_entry_2` (when the `filetype` feature is on).
pub mod file_type {
    pub const EXT4_FT_UNKNOWN: u8 = 0;
    pub const EXT4_FT_REG_FILE: u8 = 1;
    pub const EXT4_FT_DIR: u8 = 2;
    pub const EXT4_FT_CHRDEV: u8 = 3;
    pub const EXT4_FT_BLKDEV: u8 = 4;
    pub const EXT4_FT_FIFO: u8 = 5;
    pub const EXT4_FT_SOCK: u8 = 6;
    pub const EXT4_FT_SYMLINK: u8 = 7;
    /// Marks the checksum tail of a leaf directory block (`det_reserved_ft`).
    pub const EXT4_FT_DIR_CSUM: u8 = 0xDE;
}

/// A fixed-size little-endian field of an on-disk structure.
///
/// `get` and `put` never panic: a field that would lie outside the buffer reads as zero and
/// is not written. The layout tests check that every field lies inside its structure.
pub trait LeField: Sized {
    /// Width of the field in bytes.
    const WIDTH: usize;
    fn get(buf: &[u8], offset: usize) -> Self;
    fn put(&self, buf: &mut [u8], offset: usize);
}

fn field_bytes<const N: usize>(buf: &[u8], offset: usize) -> [u8; N] {
    offset
        .checked_add(N)
        .and_then(|end| buf.get(offset..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

fn put_bytes(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = offset
        .checked_add(bytes.len())
        .and_then(|end| buf.get_mut(offset..end))
    {
        dst.copy_from_slice(bytes);
    }
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl LeField for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn get(buf: &[u8], offset: usize) -> Self {
                <$t>::from_le_bytes(field_bytes(buf, offset))
            }
            fn put(&self, buf: &mut [u8], offset: usize) {
                put_bytes(buf, offset, &self.to_le_bytes());
            }
        }
    )*};
}
le_int!(u8, u16, u32, u64);

impl<const N: usize> LeField for [u8; N] {
    const WIDTH: usize = N;
    fn get(buf: &[u8], offset: usize) -> Self {
        field_bytes(buf, offset)
    }
    fn put(&self, buf: &mut [u8], offset: usize) {
        put_bytes(buf, offset, self);
    }
}

impl<const N: usize> LeField for [u32; N] {
    const WIDTH: usize = N * 4;
    fn get(buf: &[u8], offset: usize) -> Self {
        let mut out = [0u32; N];
        for (i, word) in out.iter_mut().enumerate() {
            *word = i
                .checked_mul(4)
                .and_then(|o| o.checked_add(offset))
                .map_or(0, |o| u32::get(buf, o));
        }
        out
    }
    fn put(&self, buf: &mut [u8], offset: usize) {
        for (i, word) in self.iter().enumerate() {
            if let Some(o) = i.checked_mul(4).and_then(|o| o.checked_add(offset)) {
                word.put(buf, o);
            }
        }
    }
}

/// Reads a little-endian `u16` at `offset`, zero when out of bounds.
pub fn le16(buf: &[u8], offset: usize) -> u16 {
    u16::get(buf, offset)
}

/// Reads a little-endian `u32` at `offset`, zero when out of bounds.
pub fn le32(buf: &[u8], offset: usize) -> u32 {
    u32::get(buf, offset)
}

/// Declares an on-disk structure as `field: type = offset` and derives its codec.
///
/// The generated type has `SIZE`, `FIELDS` (name, offset, width — for layout tests and
/// dumps), `zeroed()`, `decode(&[u8]) -> Option<Self>` (None when the buffer is shorter than
/// `SIZE`) and `encode() -> [u8; SIZE]`. Bytes not covered by a field encode as zero.
macro_rules! on_disk {
    (
        $(#[$meta:meta])*
        pub struct $name:ident [$size:expr] {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $off:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            /// Size of the structure on disk, in bytes.
            pub const SIZE: usize = $size;
            /// `(name, offset, width)` of every field, in declaration order.
            pub const FIELDS: &'static [(&'static str, usize, usize)] = &[
                $( (stringify!($field), $off, <$ty as $crate::formats::ext4::spec::LeField>::WIDTH), )*
            ];

            /// All fields zero.
            pub fn zeroed() -> Self {
                Self::decode_lenient(&[])
            }

            /// Decodes the structure from the first `SIZE` bytes of `buf`.
            pub fn decode(buf: &[u8]) -> Option<Self> {
                if buf.len() < Self::SIZE {
                    return None;
                }
                Some(Self::decode_lenient(buf))
            }

            /// Decodes what `buf` holds; fields beyond its end read as zero.
            pub fn decode_lenient(buf: &[u8]) -> Self {
                Self {
                    $( $field: <$ty as $crate::formats::ext4::spec::LeField>::get(buf, $off), )*
                }
            }

            /// Encodes the structure; uncovered bytes are zero.
            pub fn encode(&self) -> [u8; $size] {
                let mut buf = [0u8; $size];
                $( $crate::formats::ext4::spec::LeField::put(&self.$field, &mut buf, $off); )*
                buf
            }
        }
    };
}
pub(crate) use on_disk;

/// Checks a `FIELDS` table: every field inside `size`, none overlapping. For layout tests.
#[cfg(test)]
pub(crate) fn check_layout(name: &str, size: usize, fields: &[(&str, usize, usize)]) {
    let mut sorted: Vec<_> = fields.to_vec();
    sorted.sort_by_key(|f| f.1);
    let mut end = 0usize;
    for (field, off, width) in sorted {
        assert!(
            off >= end,
            "{name}.{field} at {off:#x} overlaps the previous field ending at {end:#x}"
        );
        end = off + width;
        assert!(
            end <= size,
            "{name}.{field} ends at {end:#x}, past the structure size {size:#x}"
        );
    }
}
