//! Extended attributes: the in-inode area after `i_extra_isize` (`struct
//! ext4_xattr_ibody_header`) and the shared attribute block named by `i_file_acl`
//! (`struct ext4_xattr_header`), both holding `struct ext4_xattr_entry` lists.
//!
//! Names are stored as a prefix index plus suffix ([`PREFIXES`]): `security.capability` is
//! index 6 + `capability`. POSIX ACLs (`system.posix_acl_access`/`_default`) are stored in
//! ext4's compact format and converted to and from the VFS format (`getfattr`, tar
//! `SCHILY.xattr`) here, so trees hold one representation. Values live in the same region
//! (offsets from the first entry in the inode, from the block start in a block) or, under
//! `ea_inode`, in an inode of their own. Spec: kernel
//! `Documentation/filesystems/ext4/attributes.rst` and `fs/ext4/xattr.[ch]`, `acl.[ch]`.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use super::spec::{le16, le32, on_disk};

/// `h_magic` of both headers.
pub const EXT4_XATTR_MAGIC: u32 = 0xEA02_0000;

on_disk! {
    /// `struct ext4_xattr_header`: the first 32 bytes of an attribute block.
    pub struct XattrHeader [32] {
        h_magic: u32 = 0x0,
        h_refcount: u32 = 0x4,
        /// Always 1.
        h_blocks: u32 = 0x8,
        h_hash: u32 = 0xC,
        h_checksum: u32 = 0x10,
        h_reserved: [u32; 3] = 0x14,
    }
}

on_disk! {
    /// The fixed part of `struct ext4_xattr_entry`; `e_name_len` bytes of name follow, then
    /// padding to 4 bytes.
    pub struct XattrEntry [16] {
        e_name_len: u8 = 0x0,
        e_name_index: u8 = 0x1,
        e_value_offs: u16 = 0x2,
        /// Under `ea_inode`: the inode holding the value; else 0.
        e_value_inum: u32 = 0x4,
        e_value_size: u32 = 0x8,
        e_hash: u32 = 0xC,
    }
}

/// Name prefixes by `e_name_index` (kernel `ext4_xattr_handler_map`). Indices 2 and 3 are
/// complete names with an empty suffix.
pub const PREFIXES: &[(u8, &str)] = &[
    (1, "user."),
    (2, "system.posix_acl_access"),
    (3, "system.posix_acl_default"),
    (4, "trusted."),
    (6, "security."),
    (7, "system."),
    (8, "system.richacl"),
];

/// The full name of an entry, or None for an unknown index.
pub fn full_name(index: u8, suffix: &[u8]) -> Option<String> {
    let prefix = PREFIXES.iter().find(|(i, _)| *i == index)?.1;
    let suffix = std::str::from_utf8(suffix).ok()?;
    Some(format!("{prefix}{suffix}"))
}

/// Splits a full name into the index and suffix ext4 stores (the longest matching
/// prefix wins, so ACL names get their own index). None if no prefix matches.
pub fn split_name(name: &str) -> Option<(u8, &str)> {
    let mut best: Option<(u8, &str, usize)> = None;
    for &(index, prefix) in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            let whole_name = index == 2 || index == 3 || index == 8;
            if whole_name && !rest.is_empty() {
                continue;
            }
            if best.is_none_or(|b| prefix.len() > b.2) {
                best = Some((index, rest, prefix.len()));
            }
        }
    }
    best.map(|(i, r, _)| (i, r))
}

/// An entry as found on disk, before its value is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: RawValue,
    /// Offset of the entry within the region.
    pub offset: usize,
}

/// Where an entry's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawValue {
    Inline(Vec<u8>),
    /// `ea_inode`: `size` bytes in inode `inum`.
    Inode {
        inum: u32,
        size: u32,
    },
}

/// A malformed entry: its offset in the region, the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XattrProblem {
    pub offset: usize,
    pub field: &'static str,
    pub reason: String,
}

/// Parses the entry list of `region` starting at `first`, ended by four zero bytes or the
/// region's end. Inline values are at `e_value_offs` from `value_base` within the region.
pub fn parse_entries(region: &[u8], first: usize, value_base: usize) -> Result<Vec<RawEntry>, XattrProblem> {
    let mut out = Vec::new();
    let mut off = first;
    // Each entry is at least 16 bytes, so the loop ends within region.len() / 16 turns.
    while off.saturating_add(4) <= region.len() && le32(region, off) != 0 {
        let problem = |field: &'static str, reason: String| XattrProblem {
            offset: off,
            field,
            reason,
        };
        let e = region.get(off..).and_then(XattrEntry::decode).ok_or_else(|| {
            problem(
                "e_name_len",
                "entry runs past the end of the attribute area".into(),
            )
        })?;
        let name_start = off.saturating_add(XattrEntry::SIZE);
        let name_end = name_start.saturating_add(usize::from(e.e_name_len));
        let name = region.get(name_start..name_end).ok_or_else(|| {
            problem(
                "e_name_len",
                format!("name of {} bytes runs past the end", e.e_name_len),
            )
        })?;
        let value = if e.e_value_inum != 0 {
            RawValue::Inode {
                inum: e.e_value_inum,
                size: e.e_value_size,
            }
        } else {
            let start = value_base.saturating_add(usize::from(e.e_value_offs));
            let len = usize::try_from(e.e_value_size).unwrap_or(usize::MAX);
            let end = start.saturating_add(len);
            RawValue::Inline(
                region
                    .get(start..end)
                    .ok_or_else(|| {
                        problem(
                            "e_value_size",
                            format!("value of {len} bytes at {start} runs past the end"),
                        )
                    })?
                    .to_vec(),
            )
        };
        out.push(RawEntry {
            index: e.e_name_index,
            name: name.to_vec(),
            value,
            offset: off,
        });
        off = name_end.saturating_add(3) & !3;
    }
    Ok(out)
}

/// `ext4_xattr_hash_entry`: the `e_hash` of an inline value (names hashed as unsigned
/// bytes; identical to the kernel's signed variant for ASCII names).
pub fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut hash = 0u32;
    for &b in name {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(b);
    }
    for chunk in value.chunks(4) {
        let mut word = [0u8; 4];
        word.get_mut(..chunk.len())
            .unwrap_or(&mut [])
            .copy_from_slice(chunk);
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(word);
    }
    hash
}

/// `ext4_xattr_rehash`: the block's `h_hash` from its entries' `e_hash`es in order (0 if
/// any entry hash is 0).
pub fn block_hash(entry_hashes: &[u32]) -> u32 {
    let mut hash = 0u32;
    for &h in entry_hashes {
        if h == 0 {
            return 0;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    hash
}

/// ACL tags (`ACL_USER_OBJ`, …) and versions.
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const EXT4_ACL_VERSION: u32 = 1;
const POSIX_ACL_XATTR_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Converts an ACL from ext4's on-disk form (version 1; 4-byte entries, 8 bytes for named
/// users and groups) to the VFS xattr form (version 2; 8-byte entries). None if malformed.
pub fn acl_from_disk(disk: &[u8]) -> Option<Vec<u8>> {
    if le32(disk, 0) != EXT4_ACL_VERSION || disk.len() < 4 {
        return None;
    }
    let mut out = POSIX_ACL_XATTR_VERSION.to_le_bytes().to_vec();
    let mut off = 4usize;
    while off < disk.len() {
        let tag = le16(disk, off);
        let perm = le16(disk, off.saturating_add(2));
        let (id, len) = match tag {
            ACL_USER | ACL_GROUP => (le32(disk, off.saturating_add(4)), 8usize),
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => (ACL_UNDEFINED_ID, 4),
            _ => return None,
        };
        if off.saturating_add(len) > disk.len() {
            return None;
        }
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        off = off.saturating_add(len);
    }
    Some(out)
}

/// The inverse of [`acl_from_disk`], for writers. None if malformed.
pub fn acl_to_disk(vfs: &[u8]) -> Option<Vec<u8>> {
    if le32(vfs, 0) != POSIX_ACL_XATTR_VERSION || vfs.len() < 4 || (vfs.len() - 4) % 8 != 0 {
        return None;
    }
    let mut out = EXT4_ACL_VERSION.to_le_bytes().to_vec();
    for entry in vfs.get(4..)?.chunks_exact(8) {
        let tag = le16(entry, 0);
        out.extend_from_slice(entry.get(..4)?);
        match tag {
            ACL_USER | ACL_GROUP => out.extend_from_slice(entry.get(4..8)?),
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {}
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ext4::spec::check_layout;

    #[test]
    fn layouts() {
        check_layout("XattrHeader", XattrHeader::SIZE, XattrHeader::FIELDS);
        check_layout("XattrEntry", XattrEntry::SIZE, XattrEntry::FIELDS);
    }

    #[test]
    fn names_split_and_join() {
        assert_eq!(split_name("security.capability"), Some((6, "capability")));
        assert_eq!(split_name("system.posix_acl_access"), Some((2, "")));
        assert_eq!(split_name("system.data"), Some((7, "data")));
        assert_eq!(split_name("user.x"), Some((1, "x")));
        assert_eq!(split_name("bogus.x"), None);
        assert_eq!(
            full_name(6, b"capability").as_deref(),
            Some("security.capability")
        );
        assert_eq!(full_name(2, b"").as_deref(), Some("system.posix_acl_access"));
    }

    #[test]
    fn entries_and_values_parse() {
        let mut region = vec![0u8; 128];
        let e = XattrEntry {
            e_name_len: 1,
            e_name_index: 1,
            e_value_offs: 100,
            e_value_inum: 0,
            e_value_size: 3,
            e_hash: 0,
        };
        region[4..20].copy_from_slice(&e.encode());
        region[20] = b'a';
        region[100..103].copy_from_slice(b"xyz");
        let got = parse_entries(&region, 4, 0).expect("valid");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, b"a");
        assert_eq!(got[0].value, RawValue::Inline(b"xyz".to_vec()));
        region[2..4].copy_from_slice(&[0, 0]);
        let e = XattrEntry {
            e_value_offs: 126,
            ..e
        };
        region[4..20].copy_from_slice(&e.encode());
        assert_eq!(parse_entries(&region, 4, 0).unwrap_err().field, "e_value_size");
    }

    #[test]
    fn acls_convert_both_ways() {
        let mut disk = 1u32.to_le_bytes().to_vec();
        disk.extend([1, 0, 6, 0]); // user::rw-
        disk.extend([2, 0, 4, 0, 0xE8, 3, 0, 0]); // user:1000:r--
        disk.extend([4, 0, 4, 0, 0x10, 0, 4, 0, 0x20, 0, 0, 0]); // group::r-- mask::r-- other::---
        let vfs = acl_from_disk(&disk).expect("valid");
        assert_eq!(vfs.len(), 4 + 5 * 8);
        assert_eq!(&vfs[12..20], &[2, 0, 4, 0, 0xE8, 3, 0, 0]);
        assert_eq!(acl_to_disk(&vfs), Some(disk));
    }

    #[test]
    fn hashes_are_order_sensitive() {
        let a = entry_hash(b"capability", &[1, 0, 0, 2]);
        assert_ne!(a, entry_hash(b"capabilitz", &[1, 0, 0, 2]));
        assert_eq!(block_hash(&[a, 0]), 0);
        assert_ne!(block_hash(&[a, 1]), block_hash(&[1, a]));
    }
}
