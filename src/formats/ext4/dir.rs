//! Directory blocks: linear entries (`struct ext4_dir_entry_2`), the checksum tail of leaf
//! blocks (`struct ext4_dir_entry_tail`) and the hashed-tree (htree) index blocks
//! (`dx_root`, `dx_node`, `dx_entry`, `dx_tail`).
//!
//! A directory's blocks are read in order and each parsed as a chain of entries whose
//! `rec_len`s tile the block exactly. Htree directories need no special path for reading:
//! the dx root block is laid out as a `.` entry and a `..` entry whose `rec_len` covers the
//! index, and each dx node block starts with an unused entry (inode 0) spanning the whole
//! block, so a linear parse yields only the real names of the leaf blocks. Only the
//! checksum differs: index blocks carry a `dx_tail` instead of a dirent tail
//! ([`dx_count_offset`] tells which is which). Spec: kernel
//! `Documentation/filesystems/ext4/directory.rst`.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use super::spec::{file_type, le16, le32, on_disk};

on_disk! {
    /// The fixed part of `struct ext4_dir_entry_2`; `name_len` bytes of name follow.
    pub struct DirEntry [8] {
        inode: u32 = 0x0,
        /// Length of this record: name, padding and any slack up to the next entry.
        rec_len: u16 = 0x4,
        name_len: u8 = 0x6,
        /// `EXT4_FT_*` under the `filetype` feature, else the high byte of `name_len`.
        file_type: u8 = 0x7,
    }
}

on_disk! {
    /// `struct ext4_dir_entry_tail`: the last 12 bytes of a leaf block under `metadata_csum`.
    pub struct DirEntryTail [12] {
        det_reserved_zero1: u32 = 0x0,
        det_rec_len: u16 = 0x4,
        det_reserved_zero2: u8 = 0x6,
        det_reserved_ft: u8 = 0x7,
        det_checksum: u32 = 0x8,
    }
}

on_disk! {
    /// `struct dx_root_info`, at byte 0x18 of the dx root block.
    pub struct DxRootInfo [8] {
        reserved_zero: u32 = 0x0,
        hash_version: u8 = 0x4,
        /// Always 8.
        info_length: u8 = 0x5,
        indirect_levels: u8 = 0x6,
        unused_flags: u8 = 0x7,
    }
}

on_disk! {
    /// `struct dx_countlimit`, overlaying the first `dx_entry` of an index block.
    pub struct DxCountLimit [4] {
        limit: u16 = 0x0,
        count: u16 = 0x2,
    }
}

on_disk! {
    /// `struct dx_entry`: a hash and the directory block holding names from that hash on.
    pub struct DxEntry [8] {
        hash: u32 = 0x0,
        block: u32 = 0x4,
    }
}

on_disk! {
    /// `struct dx_tail`, after `limit` entries of an index block under `metadata_csum`.
    pub struct DxTail [8] {
        dt_reserved: u32 = 0x0,
        dt_checksum: u32 = 0x4,
    }
}

/// Offset of `dx_root_info` in the dx root block (after the `.` and `..` headers).
pub const DX_ROOT_INFO_OFFSET: usize = 0x18;

/// The on-disk size of an entry with a `name_len`-byte name (`EXT4_DIR_REC_LEN`): 8 bytes
/// of header plus the name, rounded up to 4.
pub fn rec_len_for(name_len: usize) -> usize {
    name_len.saturating_add(8 + 3) & !3
}

/// `ext4_rec_len_from_disk`: with 64 KiB blocks a full-block record is stored as 0 or
/// 65535, and the low 2 bits carry bits 16–17.
pub fn rec_len_from_disk(v: u16, block_size: u64) -> u64 {
    if block_size < 65536 {
        return u64::from(v);
    }
    if v == u16::MAX || v == 0 {
        return block_size;
    }
    u64::from(v & 0xFFFC) | (u64::from(v & 3) << 16)
}

/// `ext4_rec_len_to_disk`, the inverse of [`rec_len_from_disk`].
pub fn rec_len_to_disk(len: u64, block_size: u64) -> u16 {
    if block_size < 65536 {
        return u16::try_from(len).unwrap_or(u16::MAX);
    }
    if len == block_size {
        return if block_size == 65536 { u16::MAX } else { 0 };
    }
    u16::try_from((len & 0xFFFC) | ((len >> 16) & 3)).unwrap_or(u16::MAX)
}

/// One used entry of a directory block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub inode: u32,
    /// `EXT4_FT_*`, or 0 without the `filetype` feature.
    pub file_type: u8,
    pub name: Vec<u8>,
    /// Offset of the entry within the parsed region.
    pub offset: usize,
}

/// A malformed entry: its offset in the region, the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryProblem {
    pub offset: usize,
    pub field: &'static str,
    pub reason: String,
}

/// Parses a region of directory entries (a whole block, or an inline-data area) whose
/// records must tile it exactly. Entries with inode 0 (unused, the checksum tail, the
/// htree node's spanning entry) are skipped; `.` and `..` are returned like any name.
pub fn parse_entries(region: &[u8], block_size: u64, filetype: bool) -> Result<Vec<Entry>, EntryProblem> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < region.len() {
        let problem = |field: &'static str, reason: String| EntryProblem {
            offset: off,
            field,
            reason,
        };
        let Some(hdr) = region.get(off..).and_then(DirEntry::decode) else {
            return Err(problem(
                "rec_len",
                format!(
                    "{} bytes left, too few for an entry",
                    region.len().saturating_sub(off)
                ),
            ));
        };
        let rec_len = usize::try_from(rec_len_from_disk(hdr.rec_len, block_size)).unwrap_or(usize::MAX);
        let name_len = if filetype {
            usize::from(hdr.name_len)
        } else {
            usize::from(hdr.name_len) | (usize::from(hdr.file_type) << 8)
        };
        if rec_len < 8 || rec_len % 4 != 0 {
            return Err(problem(
                "rec_len",
                format!("{rec_len} is not a multiple of 4 of at least 8"),
            ));
        }
        let end = off.saturating_add(rec_len);
        if end > region.len() {
            return Err(problem(
                "rec_len",
                format!("{rec_len} runs past the end of the block"),
            ));
        }
        if hdr.inode != 0 {
            if name_len == 0 || rec_len_for(name_len) > rec_len {
                return Err(problem(
                    "name_len",
                    format!("{name_len} does not fit a {rec_len}-byte record"),
                ));
            }
            let name = region
                .get(off.saturating_add(8)..off.saturating_add(8).saturating_add(name_len))
                .unwrap_or(&[]);
            if name.iter().any(|&b| b == 0 || b == b'/') {
                return Err(problem(
                    "name",
                    format!("{:?} contains NUL or `/`", String::from_utf8_lossy(name)),
                ));
            }
            out.push(Entry {
                inode: hdr.inode,
                file_type: if filetype {
                    hdr.file_type
                } else {
                    file_type::EXT4_FT_UNKNOWN
                },
                name: name.to_vec(),
                offset: off,
            });
        }
        off = end;
    }
    Ok(out)
}

/// Whether `block` ends in a well-formed `ext4_dir_entry_tail`; returns its checksum.
pub fn leaf_tail(block: &[u8]) -> Option<u32> {
    let at = block.len().checked_sub(DirEntryTail::SIZE)?;
    let t = DirEntryTail::decode(block.get(at..)?)?;
    let ok = t.det_reserved_zero1 == 0
        && usize::from(t.det_rec_len) == DirEntryTail::SIZE
        && t.det_reserved_zero2 == 0
        && t.det_reserved_ft == file_type::EXT4_FT_DIR_CSUM;
    ok.then_some(t.det_checksum)
}

/// For a block of an htree directory: the offset of its `dx_countlimit` if it is an index
/// block — the root (file block 0) or a node (an unused entry spanning the whole block) —
/// else None (a leaf).
pub fn dx_count_offset(block: &[u8], logical: u64, block_size: u64) -> Option<usize> {
    if logical == 0 {
        let info_len = usize::from(*block.get(DX_ROOT_INFO_OFFSET.saturating_add(5))?);
        return Some(DX_ROOT_INFO_OFFSET.saturating_add(info_len));
    }
    let spans = le32(block, 0) == 0 && rec_len_from_disk(le16(block, 4), block_size) == block_size;
    spans.then_some(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ext4::spec::check_layout;

    #[test]
    fn layouts() {
        check_layout("DirEntry", DirEntry::SIZE, DirEntry::FIELDS);
        check_layout("DirEntryTail", DirEntryTail::SIZE, DirEntryTail::FIELDS);
        check_layout("DxRootInfo", DxRootInfo::SIZE, DxRootInfo::FIELDS);
    }

    fn entry(ino: u32, rec_len: u16, ft: u8, name: &[u8]) -> Vec<u8> {
        let mut v = DirEntry {
            inode: ino,
            rec_len,
            name_len: name.len() as u8,
            file_type: ft,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(name);
        v.resize(usize::from(rec_len), 0);
        v
    }

    #[test]
    fn parses_a_block_with_a_checksum_tail() {
        let mut block = entry(2, 12, 2, b".");
        block.extend(entry(2, 12, 2, b".."));
        block.extend(entry(12, 1024 - 24 - 12, 1, b"hello"));
        block.extend(
            DirEntryTail {
                det_reserved_zero1: 0,
                det_rec_len: 12,
                det_reserved_zero2: 0,
                det_reserved_ft: 0xDE,
                det_checksum: 0xABCD,
            }
            .encode(),
        );
        let names: Vec<_> = parse_entries(&block, 1024, true)
            .expect("valid")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, [b".".to_vec(), b"..".to_vec(), b"hello".to_vec()]);
        assert_eq!(leaf_tail(&block), Some(0xABCD));
    }

    #[test]
    fn bad_rec_lens_are_reported_with_their_offset() {
        let mut block = entry(2, 12, 2, b".");
        block.extend(entry(3, 12, 1, b"x"));
        block[16..18].copy_from_slice(&2000u16.to_le_bytes());
        block.resize(1024, 0);
        let p = parse_entries(&block, 1024, true).unwrap_err();
        assert_eq!((p.offset, p.field), (12, "rec_len"));
    }

    #[test]
    fn rec_len_for_64k_blocks() {
        for len in [12u64, 4096, 65532, 65536] {
            assert_eq!(rec_len_from_disk(rec_len_to_disk(len, 65536), 65536), len);
        }
        assert_eq!(rec_len_from_disk(4096, 4096), 4096);
    }
}
