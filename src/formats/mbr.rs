//! The classic MBR partition table: reading (primary and logical partitions) and writing
//! (primary partitions), plus the protective MBR in front of a GPT.
//!
//! Raspberry Pi OS images use it: partition 1 type 0x0C (FAT32, LBA) at sector 8192,
//! partition 2 type 0x83 (Linux) right after, and `root=PARTUUID=<disk signature>-02`.
//!
//! Byte layout of LBA 0 (UEFI 2.10 §5.2.1 "Legacy Master Boot Record", field names from
//! its Tables 5-1 and 5-2; all integers little-endian):
//!
//! | offset | size | field                | written as |
//! |--------|------|----------------------|------------|
//! | 0x000  | 440  | `BootCode`           | the table's `boot_code` (zeros by default) |
//! | 0x1B8  | 4    | `UniqueMBRDiskSignature` | the caller's disk signature (sfdisk `label-id`) |
//! | 0x1BC  | 2    | `Unknown`            | 0 |
//! | 0x1BE  | 4×16 | `PartitionRecord[4]` | slots 1..=4 |
//! | 0x1FE  | 2    | `Signature`          | 0x55 0xAA |
//!
//! A partition record: `BootIndicator` (+0, 0x80 bootable or 0x00), `StartingCHS` (+1, 3
//! bytes), `OSType` (+4), `EndingCHS` (+5, 3 bytes), `StartingLBA` (+8, u32),
//! `SizeInLBA` (+12, u32). A record with `OSType` 0 or `SizeInLBA` 0 is unused (as for
//! Linux and fdisk); unused records are written as 16 zero bytes.
//!
//! **CHS.** Nothing on a Raspberry Pi (or in Linux) reads CHS, but old tools check it, so the
//! writer computes it the standard way, exactly as sfdisk does for an image file: geometry
//! 255 heads × 63 sectors per track, `C = lba / (255·63)`, `H = (lba / 63) mod 255`,
//! `S = lba mod 63 + 1`, encoded as `[H, S | (C >> 8) << 6, C & 0xFF]`; when `C > 1023` the
//! address is unrepresentable and the field is `FE FF FF` (C 1023, H 254, S 63).
//! `StartingCHS` addresses the first sector, `EndingCHS` the last. The reader ignores CHS.
//!
//! **Logical partitions.** A primary record of type 0x05, 0x0F or 0x85 is an extended
//! partition holding a chain of EBRs: each EBR's record 0 is a logical partition (start
//! relative to that EBR), record 1 links to the next EBR (start relative to the extended
//! partition). The reader follows the chain, numbering logical partitions from 5, and
//! bounds it: at most [`MAX_LOGICAL`] EBRs, each visited once, all inside the extended
//! partition. The writer makes primary partitions only: an extended type is rejected as
//! unsupported, since no w4b image needs more than four partitions.
//!
//! **Validation on read** (each failure names the record and field): boot signature
//! 0x55AA; `BootIndicator` 0x00 or 0x80 (any other value means the sector is not an MBR,
//! e.g. a FAT boot sector of a superfloppy); no partition at LBA 0 or past the disk's end;
//! no two partitions overlapping; at most one extended partition.

#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeSet;
use std::io::{Read, Seek, Write};
use std::ops::Range;

use super::partition::{
    disk_sectors, read_sector, write_at, Partition, PartitionError, PartitionTable, PartitionType, ReadTable,
    TableKind, BOOT_CODE_LEN,
};

/// Most EBRs followed in one extended partition (Linux allows 256 partitions in all).
pub const MAX_LOGICAL: usize = 251;

/// OSType of the protective MBR entry of a GPT disk.
pub const PROTECTIVE_TYPE: u8 = 0xEE;

const DISK_SIGNATURE_OFFSET: usize = 0x1B8;
const RECORDS_OFFSET: usize = 0x1BE;
const RECORD_LEN: usize = 16;
const SIGNATURE_OFFSET: usize = 0x1FE;

/// Whether `os_type` marks an extended partition (DOS 0x05, Windows LBA 0x0F, Linux 0x85).
pub fn is_extended_type(os_type: u8) -> bool {
    matches!(os_type, 0x05 | 0x0F | 0x85)
}

/// The CHS address of `lba` with 255 heads and 63 sectors per track, or `FE FF FF` when the
/// cylinder exceeds 1023 (see the module docs).
pub fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    // All three fit their bytes: head < 255, sector in 1..=63, cylinder < 1024.
    let head = ((lba / SECTORS) % HEADS) as u8;
    let sector = ((lba % SECTORS) as u8).saturating_add(1);
    let cyl_high = ((cylinder >> 8) as u8) << 6;
    [head, sector | cyl_high, (cylinder & 0xFF) as u8]
}

/// One 16-byte partition record, as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub boot_indicator: u8,
    pub os_type: u8,
    pub starting_lba: u32,
    pub size_in_lba: u32,
}

impl Record {
    fn parse(sector: &[u8; 512], slot: usize) -> Record {
        let at = RECORDS_OFFSET.saturating_add(slot.saturating_mul(RECORD_LEN));
        Record {
            boot_indicator: byte(sector, at),
            os_type: byte(sector, at.saturating_add(4)),
            starting_lba: u32_le(sector, at.saturating_add(8)),
            size_in_lba: u32_le(sector, at.saturating_add(12)),
        }
    }

    fn is_used(&self) -> bool {
        self.os_type != 0 && self.size_in_lba != 0
    }

    /// The 16 bytes of a used record covering `start..start + size`.
    fn encode(
        boot: bool,
        os_type: u8,
        start: u32,
        size: u32,
        starting_chs: [u8; 3],
        ending_chs: [u8; 3],
    ) -> [u8; 16] {
        let mut r = [0u8; 16];
        r[0] = if boot { 0x80 } else { 0x00 }; // BootIndicator
        r[1..4].copy_from_slice(&starting_chs); // StartingCHS
        r[4] = os_type; // OSType
        r[5..8].copy_from_slice(&ending_chs); // EndingCHS
        r[8..12].copy_from_slice(&start.to_le_bytes()); // StartingLBA
        r[12..16].copy_from_slice(&size.to_le_bytes()); // SizeInLBA
        r
    }
}

/// LBA 0, parsed but not yet validated beyond its boot signature.
#[derive(Debug)]
pub(crate) struct Lba0 {
    pub boot_code: [u8; BOOT_CODE_LEN],
    pub disk_signature: u32,
    pub records: [Record; 4],
}

impl Lba0 {
    /// Whether a record has type 0xEE: the disk is GPT.
    pub fn has_protective_entry(&self) -> bool {
        self.records.iter().any(|r| r.os_type == PROTECTIVE_TYPE)
    }
}

/// Parses LBA 0; fails only when the boot signature is missing.
pub(crate) fn parse_lba0(sector: &[u8; 512]) -> Result<Lba0, PartitionError> {
    let found = [
        byte(sector, SIGNATURE_OFFSET),
        byte(sector, SIGNATURE_OFFSET.saturating_add(1)),
    ];
    if found != [0x55, 0xAA] {
        return Err(PartitionError::MbrNoSignature { found });
    }
    let mut boot_code = [0u8; BOOT_CODE_LEN];
    boot_code.copy_from_slice(&sector[..BOOT_CODE_LEN]);
    Ok(Lba0 {
        boot_code,
        disk_signature: u32_le(sector, DISK_SIGNATURE_OFFSET),
        records: [0, 1, 2, 3].map(|slot| Record::parse(sector, slot)),
    })
}

/// Byte offset of field `field_offset` of record `slot` in the sector at `lba`.
fn field_offset(lba: u64, slot: usize, field_offset: usize) -> u64 {
    let in_sector = RECORDS_OFFSET
        .saturating_add(slot.saturating_mul(RECORD_LEN))
        .saturating_add(field_offset) as u64;
    lba.saturating_mul(512).saturating_add(in_sector)
}

fn corrupt(
    entry: impl Into<String>,
    field: &'static str,
    offset: u64,
    reason: impl Into<String>,
) -> PartitionError {
    PartitionError::MbrCorrupt {
        entry: entry.into(),
        field,
        offset,
        reason: reason.into(),
    }
}

/// Reads an MBR disk whose LBA 0 is `lba0`.
pub(crate) fn read<R: Read + Seek>(
    disk: &mut R,
    disk_size: u64,
    lba0: Lba0,
) -> Result<ReadTable, PartitionError> {
    let sectors = disk_sectors(disk_size);
    let mut partitions: Vec<Partition> = Vec::new();
    let mut extended: Option<(usize, Partition)> = None;
    for (slot, record) in lba0.records.iter().enumerate() {
        let index = u32::try_from(slot).unwrap_or(u32::MAX).saturating_add(1);
        let entry = format!("partition {index}");
        let Some(p) = check_record(record, &entry, 0, slot, 0, 0..sectors, index)? else {
            continue;
        };
        if let Some(q) = partitions.iter().find(|q| overlap(q, &p)) {
            return Err(corrupt(
                entry,
                "StartingLBA",
                field_offset(0, slot, 8),
                format!(
                    "sectors {}..{} overlap partition {} (sectors {}..{})",
                    p.start_lba,
                    p.end_lba(),
                    q.index,
                    q.start_lba,
                    q.end_lba()
                ),
            ));
        }
        if p.is_extended() {
            if let Some((_, first)) = &extended {
                return Err(PartitionError::MbrUnsupported {
                    entry,
                    field: "OSType",
                    offset: field_offset(0, slot, 4),
                    reason: format!(
                        "a second extended partition (partition {} is one already)",
                        first.index
                    ),
                });
            }
            extended = Some((slot, p.clone()));
        }
        partitions.push(p);
    }
    if let Some((_, container)) = extended {
        read_logical(disk, disk_size, &container, &mut partitions)?;
    }
    partitions.sort_by_key(|p| p.index);
    Ok(ReadTable {
        table: PartitionTable {
            kind: TableKind::Mbr {
                disk_signature: lba0.disk_signature,
            },
            sector_size: 512,
            boot_code: lba0.boot_code,
            partitions,
        },
        warnings: Vec::new(),
    })
}

/// Validates one record whose `StartingLBA` counts from `base`; `None` if unused.
fn check_record(
    record: &Record,
    entry: &str,
    sector_lba: u64,
    slot: usize,
    base: u64,
    allowed: Range<u64>,
    index: u32,
) -> Result<Option<Partition>, PartitionError> {
    if !record.is_used() {
        return Ok(None);
    }
    if !matches!(record.boot_indicator, 0x00 | 0x80) {
        return Err(corrupt(
            entry,
            "BootIndicator",
            field_offset(sector_lba, slot, 0),
            format!(
                "is {:#04x}, not 0x00 or 0x80 (this sector may be a filesystem boot sector, not an MBR)",
                record.boot_indicator
            ),
        ));
    }
    let start = base.saturating_add(u64::from(record.starting_lba));
    let end = start.saturating_add(u64::from(record.size_in_lba));
    if start < allowed.start || start == 0 {
        return Err(corrupt(
            entry,
            "StartingLBA",
            field_offset(sector_lba, slot, 8),
            format!(
                "puts the partition at LBA {start}, before LBA {}",
                allowed.start.max(1)
            ),
        ));
    }
    if end > allowed.end {
        return Err(corrupt(
            entry,
            "SizeInLBA",
            field_offset(sector_lba, slot, 12),
            format!(
                "makes the partition end at LBA {end}, past the {} LBA {}",
                if base == 0 {
                    "disk's end at"
                } else {
                    "extended partition's end at"
                },
                allowed.end
            ),
        ));
    }
    Ok(Some(Partition {
        index,
        start_lba: start,
        size_lba: u64::from(record.size_in_lba),
        partition_type: PartitionType::Mbr(record.os_type),
        bootable: record.boot_indicator == 0x80,
        name: String::new(),
        guid: None,
        attributes: 0,
    }))
}

/// Follows the EBR chain of `container`, appending logical partitions 5, 6, ...
fn read_logical<R: Read + Seek>(
    disk: &mut R,
    disk_size: u64,
    container: &Partition,
    partitions: &mut Vec<Partition>,
) -> Result<(), PartitionError> {
    let inside = container.start_lba..container.end_lba();
    let mut visited = BTreeSet::new();
    let mut ebr_lba = container.start_lba;
    let mut index = 5u32;
    for _ in 0..MAX_LOGICAL {
        visited.insert(ebr_lba);
        let entry = format!("EBR at LBA {ebr_lba}");
        let sector = read_sector(disk, ebr_lba, disk_size)?;
        let signature = [
            byte(&sector, SIGNATURE_OFFSET),
            byte(&sector, SIGNATURE_OFFSET.saturating_add(1)),
        ];
        if signature != [0x55, 0xAA] {
            return Err(corrupt(
                entry,
                "Signature",
                ebr_lba
                    .saturating_mul(512)
                    .saturating_add(SIGNATURE_OFFSET as u64),
                format!("is {signature:02x?}, not [55, aa]"),
            ));
        }
        let data = Record::parse(&sector, 0);
        let logical_entry = format!("logical partition {index} ({entry})");
        if let Some(p) = check_record(&data, &logical_entry, ebr_lba, 0, ebr_lba, inside.clone(), index)? {
            if p.is_extended() {
                return Err(corrupt(
                    logical_entry,
                    "OSType",
                    field_offset(ebr_lba, 0, 4),
                    "is an extended type in the data record of an EBR",
                ));
            }
            if let Some(q) = partitions
                .iter()
                .filter(|q| q.index >= 5)
                .find(|q| overlap(q, &p))
            {
                return Err(corrupt(
                    logical_entry,
                    "StartingLBA",
                    field_offset(ebr_lba, 0, 8),
                    format!("overlaps logical partition {}", q.index),
                ));
            }
            partitions.push(p);
            index = index.saturating_add(1);
        }
        let link = Record::parse(&sector, 1);
        if !link.is_used() {
            return Ok(());
        }
        if !is_extended_type(link.os_type) {
            return Err(corrupt(
                entry,
                "OSType",
                field_offset(ebr_lba, 1, 4),
                format!(
                    "of the link record is {:#04x}, not an extended type",
                    link.os_type
                ),
            ));
        }
        let next = container.start_lba.saturating_add(u64::from(link.starting_lba));
        if !inside.contains(&next) {
            return Err(corrupt(
                entry,
                "StartingLBA",
                field_offset(ebr_lba, 1, 8),
                format!("links to LBA {next}, outside the extended partition"),
            ));
        }
        if visited.contains(&next) {
            return Err(corrupt(
                entry,
                "StartingLBA",
                field_offset(ebr_lba, 1, 8),
                format!("links back to the EBR at LBA {next}: the chain is a loop"),
            ));
        }
        ebr_lba = next;
    }
    Err(PartitionError::MbrUnsupported {
        entry: format!("extended partition {}", container.index),
        field: "StartingLBA",
        offset: ebr_lba.saturating_mul(512),
        reason: format!("the EBR chain is longer than {MAX_LOGICAL} logical partitions"),
    })
}

fn overlap(a: &Partition, b: &Partition) -> bool {
    a.start_lba < b.end_lba() && b.start_lba < a.end_lba()
}

/// MBR-specific checks for writing; returns the sectors partitions may use.
pub(crate) fn validate(table: &PartitionTable, disk_size: u64) -> Result<Range<u64>, PartitionError> {
    let sectors = disk_sectors(disk_size);
    if sectors < 2 {
        return Err(PartitionError::DiskTooSmall {
            disk_size,
            what: "an MBR and a partition",
        });
    }
    for p in &table.partitions {
        let what = || format!("partition {}", p.index);
        if !(1..=4).contains(&p.index) {
            return Err(PartitionError::UnsupportedWrite {
                what: what(),
                reason: "MBR partitions are numbered 1 to 4 (logical partitions are not written)".into(),
            });
        }
        match p.partition_type {
            PartitionType::Mbr(0) => {
                return Err(PartitionError::invalid(
                    what(),
                    "partition_type",
                    "is 0, which marks an unused slot",
                ))
            }
            PartitionType::Mbr(PROTECTIVE_TYPE) => {
                return Err(PartitionError::invalid(
                    what(),
                    "partition_type",
                    "is 0xee, which marks a GPT disk",
                ))
            }
            PartitionType::Mbr(t) if is_extended_type(t) => {
                return Err(PartitionError::UnsupportedWrite {
                    what: what(),
                    reason: format!(
                        "type {t:#04x} is an extended partition; only primary partitions are written"
                    ),
                })
            }
            PartitionType::Mbr(_) => {}
            PartitionType::Gpt(_) => {
                return Err(PartitionError::invalid(
                    what(),
                    "partition_type",
                    "is a GPT type in an MBR table",
                ))
            }
        }
        if u32::try_from(p.start_lba).is_err() {
            return Err(PartitionError::invalid(
                what(),
                "start_lba",
                "does not fit the MBR's 32 bits",
            ));
        }
        if u32::try_from(p.size_lba).is_err() {
            return Err(PartitionError::invalid(
                what(),
                "size_lba",
                "does not fit the MBR's 32 bits",
            ));
        }
        if !p.name.is_empty() {
            return Err(PartitionError::invalid(
                what(),
                "name",
                "must be empty: MBR partitions have no names",
            ));
        }
        if p.guid.is_some() {
            return Err(PartitionError::invalid(
                what(),
                "guid",
                "must be None: MBR partitions have no GUIDs",
            ));
        }
        if p.attributes != 0 {
            return Err(PartitionError::invalid(
                what(),
                "attributes",
                "must be 0: MBR partitions have no attributes",
            ));
        }
    }
    Ok(1..sectors)
}

/// Writes LBA 0 of a validated MBR table.
pub(crate) fn write<W: Write + Seek>(table: &PartitionTable, disk: &mut W) -> Result<(), PartitionError> {
    let TableKind::Mbr { disk_signature } = table.kind else {
        return Err(PartitionError::invalid("table", "kind", "is not MBR"));
    };
    let mut records = [[0u8; 16]; 4];
    for p in &table.partitions {
        let (Ok(start), Ok(size), PartitionType::Mbr(os_type)) = (
            u32::try_from(p.start_lba),
            u32::try_from(p.size_lba),
            p.partition_type,
        ) else {
            return Err(PartitionError::invalid(
                format!("partition {}", p.index),
                "start_lba",
                "was not validated",
            ));
        };
        let last = p.end_lba().saturating_sub(1);
        let slot = usize::try_from(p.index).ok().and_then(|i| i.checked_sub(1));
        let Some(record) = slot.and_then(|s| records.get_mut(s)) else {
            return Err(PartitionError::invalid(
                format!("partition {}", p.index),
                "index",
                "is not 1 to 4",
            ));
        };
        *record = Record::encode(p.bootable, os_type, start, size, chs(p.start_lba), chs(last));
    }
    let sector = encode_lba0(&table.boot_code, disk_signature, &records);
    write_at(disk, 0, &sector)
}

/// The protective MBR of a GPT disk with `sectors` sectors: one record of type 0xEE from
/// LBA 1 over the whole disk (capped at 2³²−1 sectors), byte for byte what sfdisk writes,
/// including an `EndingCHS` of `FF FF FF` and a zero disk signature (UEFI §5.2.3).
pub(crate) fn protective(boot_code: &[u8; BOOT_CODE_LEN], sectors: u64) -> [u8; 512] {
    let size = u32::try_from(sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    let record = Record::encode(
        false,
        PROTECTIVE_TYPE,
        1,
        size,
        [0x00, 0x02, 0x00],
        [0xFF, 0xFF, 0xFF],
    );
    encode_lba0(boot_code, 0, &[record, [0; 16], [0; 16], [0; 16]])
}

fn encode_lba0(boot_code: &[u8; BOOT_CODE_LEN], disk_signature: u32, records: &[[u8; 16]; 4]) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..BOOT_CODE_LEN].copy_from_slice(boot_code); // BootCode
    s[0x1B8..0x1BC].copy_from_slice(&disk_signature.to_le_bytes()); // UniqueMBRDiskSignature
    for (slot, record) in records.iter().enumerate() {
        let at = RECORDS_OFFSET.saturating_add(slot.saturating_mul(RECORD_LEN));
        if let Some(dst) = s.get_mut(at..at.saturating_add(RECORD_LEN)) {
            dst.copy_from_slice(record); // PartitionRecord[slot]
        }
    }
    s[0x1FE] = 0x55; // Signature
    s[0x1FF] = 0xAA;
    s
}

fn byte(sector: &[u8; 512], at: usize) -> u8 {
    sector.get(at).copied().unwrap_or(0)
}

fn u32_le(sector: &[u8; 512], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = sector.get(at..at.saturating_add(4)) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;
    use std::io::Cursor;

    const DISK: u64 = 64 << 20;

    fn pi_table() -> PartitionTable {
        let mut t = PartitionTable::new_mbr(0x1a2b_3c4d);
        t.partitions.push(Partition::mbr(1, 8192, 102_400, 0x0C, true));
        t.partitions.push(Partition::mbr(2, 110_592, 20_480, 0x83, false));
        t
    }

    fn write_to_vec(t: &PartitionTable, disk_size: u64) -> Vec<u8> {
        let mut disk = Cursor::new(vec![0u8; disk_size as usize]);
        t.write(&mut disk, disk_size).unwrap();
        disk.into_inner()
    }

    fn read_vec(disk: &[u8]) -> Result<ReadTable, PartitionError> {
        PartitionTable::read(&mut Cursor::new(disk), disk.len() as u64)
    }

    #[test]
    fn chs_matches_sfdisk() {
        // Values sfdisk wrote for an 8192/102400 partition on a 64 MiB image.
        assert_eq!(chs(8192), [0x82, 0x03, 0x00]);
        assert_eq!(chs(110_591), [0xE1, 0x1B, 0x06]);
        assert_eq!(chs(0), [0x00, 0x01, 0x00]);
        // Cylinder 1023 is the last representable one; its high bits go into the S byte.
        assert_eq!(chs(1023 * 16065), [0x00, 0xC1, 0xFF]);
        assert_eq!(chs(1024 * 16065), [0xFE, 0xFF, 0xFF]);
        assert_eq!(chs(u64::MAX), [0xFE, 0xFF, 0xFF]);
    }

    #[test]
    fn writes_the_documented_bytes() {
        let mut t = pi_table();
        t.boot_code[0] = 0xEB;
        let disk = write_to_vec(&t, DISK);
        assert_eq!(disk[0], 0xEB);
        assert_eq!(&disk[0x1B8..0x1BE], &[0x4d, 0x3c, 0x2b, 0x1a, 0, 0]);
        assert_eq!(
            &disk[0x1BE..0x1CE],
            &[0x80, 0x82, 0x03, 0x00, 0x0C, 0xE1, 0x1B, 0x06, 0x00, 0x20, 0, 0, 0x00, 0x90, 0x01, 0x00]
        );
        assert_eq!(&disk[0x1DE..0x1FE], &[0u8; 32]);
        assert_eq!(&disk[0x1FE..0x200], &[0x55, 0xAA]);
        assert!(disk[0x200..].iter().all(|&b| b == 0), "only LBA 0 is written");
    }

    #[test]
    fn round_trip() {
        let mut t = pi_table();
        t.boot_code[17] = 3;
        let back = read_vec(&write_to_vec(&t, DISK)).unwrap();
        assert!(back.warnings.is_empty());
        assert_eq!(back.table, t);
    }

    #[test]
    fn missing_signature_is_not_a_table() {
        let mut disk = write_to_vec(&pi_table(), DISK);
        disk[0x1FF] = 0;
        assert!(matches!(
            read_vec(&disk),
            Err(PartitionError::MbrNoSignature { found: [0x55, 0] })
        ));
    }

    #[test]
    fn corrupt_records_name_entry_and_field() {
        let good = write_to_vec(&pi_table(), DISK);
        let cases: [(usize, &[u8], &str); 4] = [
            (0x1BE, &[0x12], "partition 1, field `BootIndicator` at byte 0x1be"),
            (
                0x1CE + 8,
                &0u32.to_le_bytes(),
                "partition 2, field `StartingLBA` at byte 0x1d6",
            ),
            (
                0x1CE + 12,
                &1_000_000u32.to_le_bytes(),
                "partition 2, field `SizeInLBA` at byte 0x1da",
            ),
            (0x1CE + 8, &9000u32.to_le_bytes(), "overlap partition 1"),
        ];
        for (at, bytes, expect) in cases {
            let mut disk = good.clone();
            disk[at..at + bytes.len()].copy_from_slice(bytes);
            let err = read_vec(&disk).unwrap_err();
            assert!(matches!(err, PartitionError::MbrCorrupt { .. }), "{err:?}");
            assert!(err.to_string().contains(expect), "{err} lacks {expect}");
        }
    }

    #[test]
    fn unused_records_are_skipped_and_holes_kept() {
        let mut t = PartitionTable::new_mbr(7);
        t.partitions.push(Partition::mbr(3, 2048, 100, 0x83, false));
        let back = read_vec(&write_to_vec(&t, DISK)).unwrap().table;
        assert_eq!(back.partitions.len(), 1);
        assert_eq!(back.partitions[0].index, 3);
        assert_eq!(back.partuuid(3).as_deref(), Some("00000007-03"));
    }

    #[test]
    fn writer_rejects_what_it_cannot_write() {
        let cases = [
            Partition::mbr(5, 2048, 100, 0x83, false),
            Partition::mbr(1, 2048, 100, 0x05, false),
            Partition::mbr(1, 2048, 100, 0xEE, false),
            Partition::mbr(1, 2048, 100, 0x00, false),
            Partition::mbr(1, 0, 100, 0x83, false),
            Partition::mbr(1, 1 << 32, 100, 0x83, false),
        ];
        for p in cases {
            let mut t = PartitionTable::new_mbr(1);
            t.partitions.push(p.clone());
            let err = t.write(&mut Cursor::new(Vec::new()), 4 << 40).unwrap_err();
            assert!(
                matches!(
                    err,
                    PartitionError::Invalid { .. } | PartitionError::UnsupportedWrite { .. }
                ),
                "{p:?}: {err:?}"
            );
        }
    }

    /// Builds an extended partition at `ext_start` with logical partitions described by
    /// `(ebr_lba, data_rel_start, size)` and links in the given order.
    fn with_logicals(ext_start: u32, ext_size: u32, logicals: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut disk = write_to_vec(&pi_table(), DISK);
        let r = Record::encode(false, 0x05, ext_start, ext_size, chs(0), chs(0));
        disk[0x1DE..0x1EE].copy_from_slice(&r);
        for (i, &(ebr, rel, size)) in logicals.iter().enumerate() {
            let mut s = [0u8; 512];
            s[0x1BE..0x1CE].copy_from_slice(&Record::encode(false, 0x83, rel, size, chs(0), chs(0)));
            if let Some(&(next, _, _)) = logicals.get(i + 1) {
                s[0x1CE..0x1DE].copy_from_slice(&Record::encode(
                    false,
                    0x05,
                    next - ext_start,
                    100,
                    chs(0),
                    chs(0),
                ));
            }
            s[0x1FE] = 0x55;
            s[0x1FF] = 0xAA;
            let at = ebr as usize * 512;
            disk[at..at + 512].copy_from_slice(&s);
        }
        disk
    }

    #[test]
    fn reads_logical_partitions() {
        let disk = with_logicals(2048, 6000, &[(2048, 1, 999), (3048, 2, 998), (5000, 1, 1000)]);
        let t = read_vec(&disk).unwrap().table;
        let got: Vec<_> = t
            .partitions
            .iter()
            .map(|p| (p.index, p.start_lba, p.size_lba))
            .collect();
        assert_eq!(
            got,
            [
                (1, 8192, 102_400),
                (2, 110_592, 20_480),
                (3, 2048, 6000),
                (5, 2049, 999),
                (6, 3050, 998),
                (7, 5001, 1000)
            ]
        );
        // Round trip stops here: the writer does not make extended partitions.
        assert!(matches!(
            t.write(&mut Cursor::new(Vec::new()), DISK),
            Err(PartitionError::UnsupportedWrite { .. })
        ));
    }

    #[test]
    fn ebr_loop_is_corrupt() {
        let mut disk = with_logicals(2048, 6000, &[(2048, 1, 999), (3048, 2, 998)]);
        // Point the second EBR's link back at the first.
        let at = 3048 * 512 + 0x1CE;
        disk[at..at + 16].copy_from_slice(&Record::encode(false, 0x05, 0, 100, chs(0), chs(0)));
        let err = read_vec(&disk).unwrap_err();
        assert!(err.to_string().contains("loop"), "{err}");
        disk[at..at + 16].copy_from_slice(&Record::encode(false, 0x05, 10_000, 100, chs(0), chs(0)));
        let err = read_vec(&disk).unwrap_err();
        assert!(
            err.to_string().contains("outside the extended partition"),
            "{err}"
        );
    }

    #[test]
    fn logical_outside_its_container_is_corrupt() {
        let disk = with_logicals(2048, 2000, &[(2048, 1, 999), (3048, 2, 1500)]);
        let err = read_vec(&disk).unwrap_err();
        assert!(
            err.to_string()
                .contains("logical partition 6 (EBR at LBA 3048), field `SizeInLBA`"),
            "{err}"
        );
    }

    #[test]
    fn truncated_image() {
        let disk = with_logicals(2048, 6000, &[(2048, 1, 999)]);
        let err = PartitionTable::read(&mut Cursor::new(&disk[..4096]), DISK).unwrap_err();
        assert!(matches!(err, PartitionError::Truncated { .. }), "{err:?}");
    }
}
