//! FAT32 for the Raspberry Pi boot partition: a deterministic writer and a validating
//! reader (FAT32, plus FAT16 and FAT12 for reading), from the Microsoft FAT specification
//! (fatgen103, "FAT: General Overview of On-Disk Format", 2000).
//!
//! The firmware of every Pi reads its boot files from a FAT partition, so w4b must write
//! one from a tree — bit for bit the same each time — and read the one inside a
//! downloaded image back into a tree. The `fatfs` crate writes subdirectories that
//! `fsck.fat` rejects, hence this module.
//!
//! Layout written (512-byte sectors, offsets relative to the partition start):
//!
//! | sectors | contents |
//! |---|---|
//! | 0 | boot sector: `BS_jmpBoot`, `BS_OEMName`, BPB, `BS_VolID`, `BS_VolLab`, `BS_FilSysType = "FAT32   "`, 0x55AA ([`bpb`]) |
//! | 1 | FSInfo: signatures, `FSI_Free_Count`, `FSI_Nxt_Free` (exact) |
//! | 2 | zeros + 0x55AA (third boot-record sector) |
//! | 6, 7, 8 | backups of sectors 0, 1, 2 |
//! | 32 .. | FAT #1, then FAT #2 (identical, mirrored) |
//! | data | cluster 2 = root directory; every other chain where [`layout`] puts it |
//!
//! - Allocation is the stable layout of [`layout`]: clusters placed in 1 MiB bins by a
//!   hash of each path, so a changed file changes its own chunks, not every one after it.
//!   The image is a pure function of the *set* of nodes and the options.
//! - Directory entries appear in name-byte order; the root starts with the volume label
//!   entry; every subdirectory starts with `.` and `..` (`..` → cluster 0 for children of
//!   the root). Names that are not already valid upper-case 8.3 names get VFAT long-name
//!   entries and a generated `~N` short name ([`name`]).
//! - Times: the node's `mtime`, in UTC, clamped to 1980..=2107, 2-second resolution, in
//!   the write, creation and access fields (`DIR_CrtTimeTenth` = 0) ([`time`]).
//! - Attributes: directories `ATTR_DIRECTORY`, files `ATTR_ARCHIVE`; `ATTR_READ_ONLY` when
//!   the mode has no write bit (`mode & 0o222 == 0`). Owners, other mode bits and xattrs
//!   have no place in FAT and are ignored.
//! - Symlinks, devices, FIFOs and sockets are errors naming the path. A hard link is
//!   written as a copy of its target (FAT cannot share clusters between entries).
//! - Sparse: the output must read as zeros where nothing is written (a new or truncated
//!   file). Reserved sectors, both FATs and all directory clusters are written in full;
//!   all-zero runs of file data and free clusters are skipped by seeking.
//!
//! The reader validates the BPB (errors name the field and image offset), bounds every
//! cluster chain by the cluster count and rejects loops, cross-links and out-of-range
//! clusters as corrupt, so hostile images give errors, never hangs.

#![forbid(unsafe_code)]

mod bpb;
mod dir;
mod layout;
mod name;
mod read;
mod time;
mod write;

#[cfg(test)]
mod locality_tests;
#[cfg(test)]
mod oracle;

use std::io;

pub use bpb::FatType;
pub use read::{read_fat, FatFile, FatFs, FatInfo};
pub use write::{write_fat32, FatOptions, FatReport};

/// `BS_VolID` as Linux spells it (`blkid`, `/dev/disk/by-uuid/`, fstab's `UUID=`):
/// `XXXX-XXXX`, upper-case hex, high half first.
pub fn volume_id_text(volume_id: u32) -> String {
    format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xFFFF)
}

/// Why a FAT image could not be written or read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FatError {
    #[error("reading or writing the FAT image failed")]
    #[diagnostic(code(w4b::fat::io))]
    Io(#[from] io::Error),

    #[error("`{path}` cannot be stored in a FAT filesystem: it is a {what}")]
    #[diagnostic(
        code(w4b::fat::unsupported_node),
        help("FAT holds only directories and regular files; keep {what}s out of the boot partition's tree")
    )]
    UnsupportedNode { path: String, what: &'static str },

    #[error("`{path}` has a name FAT cannot store: {reason}")]
    #[diagnostic(
        code(w4b::fat::invalid_name),
        help("rename the file in the layer that adds it")
    )]
    InvalidName { path: String, reason: &'static str },

    #[error("`{path}`: {reason}")]
    #[diagnostic(
        code(w4b::fat::invalid_tree),
        help("nodes must be in walk order: `/` first, every directory before its children")
    )]
    InvalidTree { path: String, reason: String },

    #[error("`{path}` is {size} bytes; a FAT file holds at most 4 GiB - 1")]
    #[diagnostic(
        code(w4b::fat::file_too_large),
        help("keep large files on the root filesystem")
    )]
    FileTooLarge { path: String, size: u64 },

    #[error("directory `{path}` needs {entries} entries; a FAT directory holds at most 65536")]
    #[diagnostic(
        code(w4b::fat::directory_too_large),
        help("split the directory (long names take 1 + ⌈length / 13⌉ entries each)")
    )]
    DirectoryTooLarge { path: String, entries: u64 },

    #[error("FAT option `{field}`: {reason}")]
    #[diagnostic(code(w4b::fat::invalid_option))]
    InvalidOption { field: &'static str, reason: String },

    #[error(
        "the files and directories need {needed} bytes of clusters, but the {size}-byte FAT32 \
         partition has {available}"
    )]
    #[diagnostic(code(w4b::fat::no_space), help("make the boot partition larger"))]
    NoSpace { needed: u64, available: u64, size: u64 },

    /// The clusters do not fit around each other in their 1 MiB bins, although their
    /// sum fits the volume: the stable layout needs some slack.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Placement(#[from] crate::formats::placement::PlaceError),

    #[error("content of `{path}` ended after {actual} bytes, but its size is {expected}")]
    #[diagnostic(
        code(w4b::fat::content_too_short),
        help("the stored blob does not match the tree entry; run `w4b cache verify`")
    )]
    ContentTooShort {
        path: String,
        expected: u64,
        actual: u64,
    },

    #[error("content of `{path}` is longer than its size {expected}")]
    #[diagnostic(
        code(w4b::fat::content_too_long),
        help("the stored blob does not match the tree entry; run `w4b cache verify`")
    )]
    ContentTooLong { path: String, expected: u64 },

    #[error("corrupt FAT filesystem: `{field}` at byte {offset}: {reason}")]
    #[diagnostic(code(w4b::fat::corrupt), help("check the image with `fsck.fat -n`"))]
    Corrupt {
        offset: u64,
        field: &'static str,
        reason: String,
    },

    #[error("unsupported FAT filesystem: `{field}` at byte {offset}: {reason}")]
    #[diagnostic(code(w4b::fat::unsupported))]
    Unsupported {
        offset: u64,
        field: &'static str,
        reason: String,
    },

    #[error("computing {what} overflowed")]
    #[diagnostic(
        code(w4b::fat::overflow),
        help("the tree or the options describe a volume beyond what FAT32 can address; this is a w4b bug if the partition is under 2 TiB")
    )]
    Overflow { what: &'static str },

    #[error("no file `{path}` in the FAT filesystem")]
    #[diagnostic(code(w4b::fat::not_found))]
    NotFound { path: String },
}

#[cfg(test)]
mod tests {
    #[test]
    fn volume_ids_are_spelled_as_blkid_does() {
        assert_eq!(super::volume_id_text(0x1a2b_3c4d), "1A2B-3C4D");
        assert_eq!(super::volume_id_text(0x0000_00ff), "0000-00FF");
    }
}
