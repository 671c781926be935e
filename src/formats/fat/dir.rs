//! Directory entries: the 32-byte short entry (`DIR_*`, fatgen103 §6) and the 32-byte
//! long-name entry (`LDIR_*`, fatgen103 §7), encoded and decoded field by field.
//!
//! Short entry layout: `DIR_Name` 0..11, `DIR_Attr` 11, `DIR_NTRes` 12,
//! `DIR_CrtTimeTenth` 13, `DIR_CrtTime` 14..16, `DIR_CrtDate` 16..18, `DIR_LstAccDate`
//! 18..20, `DIR_FstClusHI` 20..22, `DIR_WrtTime` 22..24, `DIR_WrtDate` 24..26,
//! `DIR_FstClusLO` 26..28, `DIR_FileSize` 28..32, all little-endian.
//!
//! Long entry layout: `LDIR_Ord` 0, `LDIR_Name1` 1..11 (5 units), `LDIR_Attr` 11 (= 0x0F),
//! `LDIR_Type` 12 (= 0), `LDIR_Chksum` 13, `LDIR_Name2` 14..26 (6 units),
//! `LDIR_FstClusLO` 26..28 (= 0), `LDIR_Name3` 28..32 (2 units).

// Reading parses untrusted bytes: no unchecked arithmetic (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects)]

use super::name::{MAX_LONG_UNITS, UNITS_PER_ENTRY};

/// Size of one directory entry.
pub(crate) const ENTRY: usize = 32;

pub(crate) const ATTR_READ_ONLY: u8 = 0x01;
pub(crate) const ATTR_VOLUME_ID: u8 = 0x08;
pub(crate) const ATTR_DIRECTORY: u8 = 0x10;
pub(crate) const ATTR_ARCHIVE: u8 = 0x20;
/// `ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME_ID`: marks a long-name entry.
pub(crate) const ATTR_LONG_NAME: u8 = 0x0F;
/// The bits of `DIR_Attr` that decide whether an entry is a long-name entry.
pub(crate) const ATTR_LONG_NAME_MASK: u8 = 0x3F;

/// `DIR_Name[0]` of a free entry that ends the directory.
pub(crate) const END_MARK: u8 = 0x00;
/// `DIR_Name[0]` of a deleted entry.
pub(crate) const DELETED_MARK: u8 = 0xE5;
/// `LDIR_Ord` flag of the last (first stored) long-name entry.
pub(crate) const LAST_LONG_ENTRY: u8 = 0x40;

/// One short directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShortEntry {
    pub name: [u8; 11],
    pub attr: u8,
    pub nt_res: u8,
    pub crt_time_tenth: u8,
    pub crt_time: u16,
    pub crt_date: u16,
    pub lst_acc_date: u16,
    pub first_cluster: u32,
    pub wrt_time: u16,
    pub wrt_date: u16,
    pub file_size: u32,
}

/// The u16 at `at`, a constant offset of the entry layout.
fn le16(b: &[u8; ENTRY], at: usize) -> u16 {
    let b = &b[at..];
    u16::from_le_bytes([b[0], b[1]])
}

impl ShortEntry {
    pub(crate) fn encode(&self) -> [u8; ENTRY] {
        let mut e = [0u8; ENTRY];
        e[0..11].copy_from_slice(&self.name);
        e[11] = self.attr;
        e[12] = self.nt_res;
        e[13] = self.crt_time_tenth;
        e[14..16].copy_from_slice(&self.crt_time.to_le_bytes());
        e[16..18].copy_from_slice(&self.crt_date.to_le_bytes());
        e[18..20].copy_from_slice(&self.lst_acc_date.to_le_bytes());
        e[20..22].copy_from_slice(&((self.first_cluster >> 16) as u16).to_le_bytes());
        e[22..24].copy_from_slice(&self.wrt_time.to_le_bytes());
        e[24..26].copy_from_slice(&self.wrt_date.to_le_bytes());
        e[26..28].copy_from_slice(&(self.first_cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&self.file_size.to_le_bytes());
        e
    }

    pub(crate) fn decode(e: &[u8; ENTRY]) -> ShortEntry {
        let mut name = [0u8; 11];
        name.copy_from_slice(&e[0..11]);
        ShortEntry {
            name,
            attr: e[11],
            nt_res: e[12],
            crt_time_tenth: e[13],
            crt_time: le16(e, 14),
            crt_date: le16(e, 16),
            lst_acc_date: le16(e, 18),
            first_cluster: u32::from(le16(e, 20)) << 16 | u32::from(le16(e, 26)),
            wrt_time: le16(e, 22),
            wrt_date: le16(e, 24),
            file_size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
        }
    }
}

/// Byte offsets of the 13 UTF-16 units in a long-name entry.
const UNIT_OFFSETS: [usize; UNITS_PER_ENTRY] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// The long-name entries for `units`, in the order they are stored (highest ordinal,
/// flagged [`LAST_LONG_ENTRY`], first). The name is terminated by 0x0000 when it does not
/// fill the last entry, and the rest padded with 0xFFFF (fatgen103 §7).
pub(crate) fn long_entries(units: &[u16], chksum: u8) -> Vec<[u8; ENTRY]> {
    let chunks: Vec<&[u16]> = units.chunks(UNITS_PER_ENTRY).collect();
    let count = chunks.len();
    let mut out = Vec::with_capacity(count);
    // Entry k (0-based) holds ordinal k + 1 and units 13k..13k + 13.
    for (ord, chunk) in (1..=count).rev().zip(chunks.iter().rev()) {
        let mut e = [0u8; ENTRY];
        // count ≤ 20 (255 units / 13), so the ordinal fits with its flag.
        e[0] = ord as u8 | if ord == count { LAST_LONG_ENTRY } else { 0 };
        e[11] = ATTR_LONG_NAME;
        e[13] = chksum;
        for (slot, &at) in UNIT_OFFSETS.iter().enumerate() {
            let unit = match slot.cmp(&chunk.len()) {
                std::cmp::Ordering::Less => chunk[slot],
                std::cmp::Ordering::Equal => 0x0000,
                std::cmp::Ordering::Greater => 0xFFFF,
            };
            e[at..][..2].copy_from_slice(&unit.to_le_bytes());
        }
        out.push(e);
    }
    out
}

/// Collects long-name entries while a directory is scanned and hands out the name when the
/// short entry they belong to arrives. Entries out of sequence or with a wrong checksum
/// are dropped, as every driver does (they are orphans of a deleted or renamed file).
#[derive(Default)]
pub(crate) struct LongNameCollector {
    /// Units by entry, index = ordinal - 1.
    parts: Vec<[u16; UNITS_PER_ENTRY]>,
    /// The ordinal expected next, 0 when not collecting.
    next: u8,
    chksum: u8,
}

impl LongNameCollector {
    pub(crate) fn reset(&mut self) {
        self.parts.clear();
        self.next = 0;
    }

    /// Feeds one long-name entry.
    pub(crate) fn push(&mut self, e: &[u8; ENTRY]) {
        let ord = e[0];
        let mut units = [0u16; UNITS_PER_ENTRY];
        for (slot, &at) in UNIT_OFFSETS.iter().enumerate() {
            units[slot] = le16(e, at);
        }
        let max_ord = MAX_LONG_UNITS.div_ceil(UNITS_PER_ENTRY) as u8;
        if ord & LAST_LONG_ENTRY != 0 {
            let n = ord & !LAST_LONG_ENTRY;
            // Ordinals count from 1: the entry with ordinal `n` goes to `parts[n - 1]`.
            let Some(prev) = n.checked_sub(1).filter(|_| n <= max_ord) else {
                self.reset();
                return;
            };
            self.parts = vec![[0xFFFF; UNITS_PER_ENTRY]; usize::from(n)];
            self.parts[usize::from(prev)] = units;
            self.chksum = e[13];
            self.next = prev;
        } else if self.next != 0 && ord == self.next && e[13] == self.chksum {
            // 1 ≤ ord = next < n = parts.len().
            let prev = ord.saturating_sub(1);
            match self.parts.get_mut(usize::from(prev)) {
                Some(slot) => {
                    *slot = units;
                    self.next = prev;
                }
                None => self.reset(),
            }
        } else {
            self.reset();
        }
    }

    /// The long name for the short entry `short`, if a complete, matching one was
    /// collected; `Err` if it was complete and matching but is not valid UTF-16.
    /// Resets the collector either way.
    pub(crate) fn take(&mut self, short: &[u8; 11]) -> Result<Option<String>, &'static str> {
        let complete =
            !self.parts.is_empty() && self.next == 0 && self.chksum == super::name::checksum(short);
        let parts = std::mem::take(&mut self.parts);
        self.reset();
        if !complete {
            return Ok(None);
        }
        let mut units: Vec<u16> = parts.iter().flatten().copied().take_while(|&u| u != 0).collect();
        // A name that fills its last entry exactly has no terminator; padding without a
        // terminator is malformed but harmless, so drop it rather than keep U+FFFF.
        while units.last() == Some(&0xFFFF) {
            units.pop();
        }
        if units.is_empty() {
            return Ok(None);
        }
        String::from_utf16(&units)
            .map(Some)
            .map_err(|_| "a long name is not valid UTF-16")
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;
    use crate::formats::fat::name::checksum;

    #[test]
    fn short_entry_round_trips() {
        let e = ShortEntry {
            name: *b"KERNEL8 IMG",
            attr: ATTR_ARCHIVE,
            nt_res: 0,
            crt_time_tenth: 0,
            crt_time: 0x1234,
            crt_date: 0x5678,
            lst_acc_date: 0x5678,
            first_cluster: 0x0012_3456,
            wrt_time: 0x1234,
            wrt_date: 0x5678,
            file_size: 6_000_000,
        };
        let b = e.encode();
        assert_eq!(&b[20..22], &[0x12, 0x00]);
        assert_eq!(&b[26..28], &[0x56, 0x34]);
        assert_eq!(ShortEntry::decode(&b), e);
    }

    #[test]
    fn long_entries_are_stored_last_first_and_padded() {
        let name: Vec<u16> = "bcm2711-rpi-4-b.dtb".encode_utf16().collect();
        let short = *b"BCM271~1DTB";
        let entries = long_entries(&name, checksum(&short));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0][0], 0x42);
        assert_eq!(entries[1][0], 0x01);
        // Unit 19 (0-based) of 26 is the terminator, the rest 0xFFFF.
        assert_eq!(&entries[0][13], &checksum(&short));
        assert_eq!(&entries[0][14..16], &[b'b', 0]);
        assert_eq!(&entries[0][16..18], &[0, 0]);
        assert_eq!(&entries[0][18..20], &[0xFF, 0xFF]);
        assert_eq!(&entries[0][30..32], &[0xFF, 0xFF]);

        let mut c = LongNameCollector::default();
        for e in &entries {
            c.push(e);
        }
        assert_eq!(c.take(&short).unwrap().as_deref(), Some("bcm2711-rpi-4-b.dtb"));
        // A full 13-unit name has no terminator.
        let thirteen: Vec<u16> = "abcdefghijklm".encode_utf16().collect();
        let entries = long_entries(&thirteen, 7);
        assert_eq!(entries.len(), 1);
        assert_eq!(&entries[0][30..32], &[b'm', 0]);
    }

    #[test]
    fn orphans_are_dropped() {
        let name: Vec<u16> = "a-long-name-of-thirty-units-xx".encode_utf16().collect();
        let short = *b"ALONGN~1   ";
        let entries = long_entries(&name, checksum(&short));
        let mut c = LongNameCollector::default();
        // Missing the middle entry.
        c.push(&entries[0]);
        c.push(&entries[2]);
        assert_eq!(c.take(&short).unwrap(), None);
        // Wrong short entry.
        for e in &entries {
            c.push(e);
        }
        assert_eq!(c.take(b"OTHER      ").unwrap(), None);
        // Bad UTF-16.
        let entries = long_entries(&[0xD800], checksum(&short));
        c.push(&entries[0]);
        assert!(c.take(&short).is_err());
    }
}
