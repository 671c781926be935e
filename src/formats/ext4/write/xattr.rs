//! Extended attributes: in the inode's spare space when they fit, else in one xattr block.
//!
//! Kernel documentation, §"Extended Attributes". Names lose a known prefix, recorded as
//! `e_name_index` (1 `user.`, 2 `system.posix_acl_access`, 3 `system.posix_acl_default`,
//! 4 `trusted.`, 6 `security.`, 7 `system.`). An entry is `ext4_xattr_entry`:
//! `e_name_len` u8, `e_name_index` u8, `e_value_offs` u16, `e_value_inum` u32,
//! `e_value_size` u32, `e_hash` u32, then the name, padded to 4 bytes. The list ends with
//! four zero bytes; values (each padded to 4 bytes) are packed downwards from the end.
//!
//! - In-inode (`ibody`): after `i_extra_isize`, a `h_magic = 0xEA020000` word, then the
//!   entries; `e_value_offs` counts from the first entry.
//! - Block: a 32-byte `ext4_xattr_header` (`h_magic`, `h_refcount = 1`, `h_blocks = 1`,
//!   `h_hash`, `h_checksum`), entries from byte 32, `e_value_offs` counts from the block
//!   start. `h_checksum = crc32c(seed, le64 block number, block with h_checksum = 0)`.
//!
//! Entries are sorted by (index, name length, name) — the order the kernel keeps in
//! blocks — and the writer fills the inode with the longest prefix of that order that
//! fits, the rest going to the block. POSIX ACLs arrive in the user-space
//! `posix_acl_xattr` form (version 2) and are stored in ext4's compact form (version 1),
//! as the kernel and `e2fsprogs` do.

use crate::formats::ext4::csum;

/// `EXT4_XATTR_MAGIC`.
pub const XATTR_MAGIC: u32 = 0xEA02_0000;
/// Bytes of an entry before its name.
const ENTRY_HEAD: usize = 16;
/// `ext4_xattr_header` size.
const BLOCK_HEAD: usize = 32;

/// One attribute, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Xattr {
    /// Splits a full name into the on-disk index and suffix and converts ACL values.
    pub fn from_full(full: &str, value: &[u8]) -> Result<Xattr, String> {
        let table: [(&str, u8); 6] = [
            ("user.", 1),
            ("trusted.", 4),
            ("security.", 6),
            ("system.posix_acl_access", 2),
            ("system.posix_acl_default", 3),
            ("system.", 7),
        ];
        for (prefix, index) in table {
            if let Some(rest) = full.strip_prefix(prefix) {
                if index == 2 || index == 3 {
                    return Ok(Xattr {
                        index,
                        name: Vec::new(),
                        value: acl_to_disk(value)?,
                    });
                }
                if rest.is_empty() {
                    return Err(format!("extended attribute `{full}` has an empty name"));
                }
                if rest.len() > 255 {
                    return Err(format!("extended attribute `{full}` has a name over 255 bytes"));
                }
                return Ok(Xattr {
                    index,
                    name: rest.as_bytes().to_vec(),
                    value: value.to_vec(),
                });
            }
        }
        Err(format!(
            "extended attribute `{full}` has no namespace ext4 stores (user., trusted., security., system.)"
        ))
    }

    fn entry_len(&self) -> usize {
        pad4(ENTRY_HEAD + self.name.len())
    }

    fn value_len(&self) -> usize {
        pad4(self.value.len())
    }

    /// `ext4_xattr_hash_entry`: the name bytes, then the value as little-endian words.
    pub fn hash(&self) -> u32 {
        let mut hash: u32 = 0;
        for &b in &self.name {
            hash = (hash << 5) ^ (hash >> 27) ^ u32::from(b);
        }
        let mut padded = self.value.clone();
        padded.resize(self.value_len(), 0);
        for w in padded.chunks_exact(4) {
            let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            hash = (hash << 16) ^ (hash >> 16) ^ v;
        }
        hash
    }
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Sorts attributes in the kernel's block order.
pub fn sort(attrs: &mut [Xattr]) {
    attrs.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
}

/// Bytes a list of attributes needs in a region (entries, end marker, values).
fn region_len(attrs: &[Xattr]) -> usize {
    attrs.iter().map(|a| a.entry_len() + a.value_len()).sum::<usize>() + 4
}

/// Splits sorted attributes into (in-inode, block) given `ibody` bytes after the magic.
pub fn split(attrs: &[Xattr], ibody: usize) -> (usize, bool) {
    let mut n = 0;
    while n < attrs.len() && region_len(&attrs[..=n]) <= ibody {
        n += 1;
    }
    (n, n < attrs.len())
}

/// Whether `attrs` fit one block.
pub fn fits_block(attrs: &[Xattr], block_size: usize) -> bool {
    BLOCK_HEAD + region_len(attrs) <= block_size
}

/// Writes entries at `buf[entries_at..]` and values downwards from `buf.len()`;
/// `e_value_offs` is relative to `base`.
fn encode_region(buf: &mut [u8], entries_at: usize, base: usize, attrs: &[Xattr]) {
    let mut at = entries_at;
    let mut value_end = buf.len();
    for a in attrs {
        let vlen = a.value_len();
        let voff = value_end - vlen;
        buf[voff..voff + a.value.len()].copy_from_slice(&a.value);
        value_end = voff;
        buf[at] = a.name.len() as u8;
        buf[at + 1] = a.index;
        let rel = if a.value.is_empty() { 0 } else { voff - base };
        buf[at + 2..at + 4].copy_from_slice(&(rel as u16).to_le_bytes());
        buf[at + 4..at + 8].copy_from_slice(&0u32.to_le_bytes());
        buf[at + 8..at + 12].copy_from_slice(&(a.value.len() as u32).to_le_bytes());
        buf[at + 12..at + 16].copy_from_slice(&a.hash().to_le_bytes());
        buf[at + 16..at + 16 + a.name.len()].copy_from_slice(&a.name);
        at += a.entry_len();
    }
}

/// The in-inode region (`i_extra_isize` onwards), `len` bytes: magic, entries, values.
pub fn encode_ibody(attrs: &[Xattr], len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    if attrs.is_empty() {
        return buf;
    }
    buf[0..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
    encode_region(&mut buf, 4, 4, attrs);
    buf
}

/// An xattr block numbered `block` with checksum seed `csum_seed`.
pub fn encode_block(attrs: &[Xattr], block: u64, block_size: usize, csum_seed: u32) -> Vec<u8> {
    let mut buf = vec![0u8; block_size];
    buf[0..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&1u32.to_le_bytes()); // h_refcount
    buf[8..12].copy_from_slice(&1u32.to_le_bytes()); // h_blocks
    encode_region(&mut buf, BLOCK_HEAD, 0, attrs);
    // `ext4_xattr_rehash`: fold the entry hashes (a zero entry hash zeroes the block hash).
    let mut hash: u32 = 0;
    for a in attrs {
        let h = a.hash();
        if h == 0 {
            hash = 0;
            break;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    buf[12..16].copy_from_slice(&hash.to_le_bytes());
    let crc = csum::crc32c(csum_seed, &block.to_le_bytes());
    let crc = csum::crc32c(crc, &buf);
    buf[16..20].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Converts a user-space POSIX ACL (`posix_acl_xattr_header` version 2, then 8-byte
/// `{e_tag u16, e_perm u16, e_id u32}` entries) to ext4's on-disk form: version 1, and
/// 4-byte entries for `ACL_USER_OBJ`, `ACL_GROUP_OBJ`, `ACL_MASK`, `ACL_OTHER`.
fn acl_to_disk(value: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "a POSIX ACL value is not a version-2 posix_acl_xattr".to_string();
    let version = value.get(0..4).ok_or_else(bad)?;
    if version != 2u32.to_le_bytes() || !(value.len() - 4).is_multiple_of(8) {
        return Err(bad());
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[0..4]);
        match tag {
            0x01 | 0x04 | 0x10 | 0x20 => {}
            0x02 | 0x08 => out.extend_from_slice(&e[4..8]),
            _ => return Err(format!("a POSIX ACL has an unknown tag {tag:#x}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_prefix() {
        let x = Xattr::from_full("security.capability", b"v").unwrap();
        assert_eq!((x.index, x.name.as_slice()), (6, &b"capability"[..]));
        assert!(Xattr::from_full("os2.x", b"").is_err());
        assert!(Xattr::from_full("user.", b"").is_err());
    }

    #[test]
    fn acl_is_compacted() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let x = Xattr::from_full("system.posix_acl_access", &v).unwrap();
        assert_eq!(x.index, 2);
        assert_eq!(x.value.len(), 4 + 4 + 8 + 4 + 4 + 4);
    }

    #[test]
    fn split_fills_the_inode_first() {
        let small = Xattr::from_full("user.a", b"1").unwrap();
        let big = Xattr::from_full("user.big", &[7; 3072]).unwrap();
        let mut attrs = vec![big, small];
        sort(&mut attrs);
        assert_eq!(split(&attrs, 92), (1, true));
        assert!(fits_block(&attrs[1..], 4096));
    }
}
