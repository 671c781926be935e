//! The GUID partition table: reading (with fallback to the backup copy) and writing, the
//! [`Guid`] type with its mixed-endian encoding, and the CRC32 GPT checksums use.
//!
//! Layout written (UEFI 2.10 §5.3 "GUID Partition Table (GPT) Disk Layout"), for a disk of
//! `N` sectors and `E` entries of 128 bytes (`A = ceil(E·128 / 512)` sectors, 32 for the
//! default 128 entries):
//!
//! | LBA                 | content |
//! |---------------------|---------|
//! | 0                   | protective MBR (see [`mbr`](super::mbr)), byte for byte as sfdisk writes it |
//! | 1                   | primary header |
//! | 2 .. 2+A            | primary entry array |
//! | `FirstUsableLBA` .. `LastUsableLBA` | partitions |
//! | N−1−A .. N−1        | backup entry array |
//! | N−1                 | backup header |
//!
//! Header (§5.3.2, Table 5-5; little-endian): `Signature` "EFI PART" (+0), `Revision`
//! 0x00010000 (+8), `HeaderSize` 92 (+12), `HeaderCRC32` (+16, CRC32 of the first
//! `HeaderSize` bytes with this field zero), `Reserved` (+20), `MyLBA` (+24),
//! `AlternateLBA` (+32), `FirstUsableLBA` (+40), `LastUsableLBA` (+48), `DiskGUID` (+56),
//! `PartitionEntryLBA` (+72), `NumberOfPartitionEntries` (+80), `SizeOfPartitionEntry`
//! (+84), `PartitionEntryArrayCRC32` (+88, CRC32 of `E·SizeOfPartitionEntry` bytes); the
//! rest of the sector is zero.
//!
//! Entry (§5.3.3, Table 5-6): `PartitionTypeGUID` (+0), `UniquePartitionGUID` (+16),
//! `StartingLBA` (+32), `EndingLBA` (+40, inclusive), `Attributes` (+48; bit 0 required,
//! bit 1 no block IO protocol, bit 2 legacy BIOS bootable, bits 48..63 type-specific),
//! `PartitionName` (+56, 36 UTF-16LE code units, NUL-padded). An entry with a nil type GUID
//! is unused and written as 128 zero bytes.
//!
//! **GUIDs** are stored mixed-endian: the first three fields (`time_low` u32, `time_mid`
//! u16, `time_hi_and_version` u16) little-endian, the last 8 bytes as written. So
//! `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` is stored as `28 73 2A C1 1F F8 D2 11 BA 4B ...`.
//! [`Guid`] holds the bytes in text order and converts at the disk boundary.
//!
//! **CRC32** is the IEEE 802.3 polynomial, reflected (0xEDB88320), initial value and final
//! XOR 0xFFFFFFFF, computed with a 256-entry table built at compile time (no crate: the
//! workspace has none that provides it, and it is a dozen lines).
//!
//! **Reading.** The primary header at LBA 1 is checked (signature, revision 1.x, header
//! size, header CRC, `MyLBA`, usable range inside the disk and clear of both headers and
//! the entry array, entry size 128·2ⁿ, array inside the disk, array CRC) and so are its
//! entries (start ≤ end, inside the usable range, no overlaps, names valid UTF-16). The
//! backup at the primary's `AlternateLBA` gets the same checks. If the primary fails, the
//! backup at the last sector is used and a [`ReadWarning::GptPrimaryCorrupt`] says why;
//! if both fail, the error carries both reasons. Arrays larger than [`MAX_ENTRY_ARRAY`]
//! bytes are unsupported (real disks use 16 KiB).
//!
//! **Writing** always uses 128-byte entries with the primary array at LBA 2 and the backup
//! directly before the backup header; all GUIDs come from the caller (nil ones are
//! rejected, as are duplicate partition GUIDs), so output is a function of the table and
//! the disk size alone.

#![deny(clippy::arithmetic_side_effects)]

use std::fmt;
use std::io::{Read, Seek, Write};
use std::ops::Range;
use std::str::FromStr;

use super::mbr::{self, Lba0};
use super::partition::{
    disk_sectors, read_at, read_sector, write_at, Partition, PartitionError, PartitionTable, PartitionType,
    ReadTable, ReadWarning, TableKind,
};

/// Entries in a new table (UEFI asks for at least 16 KiB of entries).
pub const DEFAULT_ENTRY_COUNT: u32 = 128;

/// Size of one entry as written.
pub const ENTRY_SIZE: u32 = 128;

const ENTRY_SIZE_U64: u64 = ENTRY_SIZE as u64;

/// Largest entry array the reader accepts, in bytes (32768 entries of 128 bytes).
pub const MAX_ENTRY_ARRAY: u64 = 4 << 20;

/// Longest `PartitionName`, in UTF-16 code units.
pub const NAME_UNITS: usize = 36;

/// EFI System Partition.
pub const EFI_SYSTEM: Guid = Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
/// Microsoft basic data (FAT and NTFS data partitions).
pub const MICROSOFT_BASIC_DATA: Guid = Guid::from_u128(0xEBD0A0A2_B9E5_4433_87C0_68B6B72699C7);
/// Linux filesystem data.
pub const LINUX_FILESYSTEM: Guid = Guid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);
/// Linux root partition for 64-bit ARM (Discoverable Partitions Specification).
pub const LINUX_ROOT_ARM64: Guid = Guid::from_u128(0xB921B045_1DF0_41C3_AF44_4C6F280D3FAE);

/// `Attributes` bit 2, which [`Partition::bootable`] stands for.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;

/// A GUID, held in the byte order of its text form (`00112233-4455-...` is `[0x00, 0x11, ...]`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid([u8; 16]);

impl Guid {
    pub const NIL: Guid = Guid([0; 16]);

    /// The GUID whose text is the 32 hex digits of `v` (`0xC12A7328_F81F_...`).
    pub const fn from_u128(v: u128) -> Guid {
        Guid(v.to_be_bytes())
    }

    /// The GUID whose text form lists `bytes` in order.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// The bytes in text order.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The 16 bytes as stored on disk (first three fields little-endian).
    pub fn to_disk(&self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
            b[15],
        ]
    }

    /// The GUID stored on disk as `d`.
    pub fn from_disk(d: [u8; 16]) -> Guid {
        // The swap is its own inverse.
        Guid(Guid(d).to_disk())
    }
}

impl fmt::Display for Guid {
    /// Lowercase `8-4-4-4-12` hex, as Linux prints `PARTUUID`s.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        let (a, rest) = h.split_at(8);
        let (b, rest) = rest.split_at(4);
        let (c, rest) = rest.split_at(4);
        let (d, e) = rest.split_at(4);
        write!(f, "{a}-{b}-{c}-{d}-{e}")
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A string that is not a GUID in `8-4-4-4-12` hex form.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error(
    "`{text}` is not a GUID (expected 8-4-4-4-12 hex digits, like `0fc63daf-8483-4772-8e79-3d69d8477de4`)"
)]
#[diagnostic(code(w4b::gpt::bad_guid))]
pub struct GuidParseError {
    pub text: String,
}

impl FromStr for Guid {
    type Err = GuidParseError;

    /// Either case; hyphens exactly at positions 8, 13, 18 and 23.
    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        let err = || GuidParseError { text: s.to_owned() };
        let bytes = s.as_bytes();
        if bytes.len() != 36 {
            return Err(err());
        }
        let mut digits = String::with_capacity(32);
        for (i, &c) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(err());
                }
            } else {
                digits.push(char::from(c));
            }
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(&digits, &mut out).map_err(|_| err())?;
        Ok(Guid(out))
    }
}

pub use crate::formats::crc::crc32;

/// Sectors taken by an array of `entries` 128-byte entries.
pub fn entry_array_sectors(entries: u32) -> u64 {
    (u64::from(entries).saturating_mul(u64::from(ENTRY_SIZE))).div_ceil(512)
}

/// The smallest `FirstUsableLBA` for `entries` 128-byte entries: after LBA 0, the header
/// and the array (34 for 128 entries).
pub fn min_first_usable_lba(entries: u32) -> u64 {
    entry_array_sectors(entries).saturating_add(2)
}

/// Which copy of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Primary,
    Backup,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Primary => "primary",
            Which::Backup => "backup",
        }
    }
}

/// A parsed, checked header.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    alternate_lba: u64,
    first_usable_lba: u64,
    last_usable_lba: u64,
    disk_guid: Guid,
    partition_entry_lba: u64,
    number_of_partition_entries: u32,
    size_of_partition_entry: u32,
}

/// One checked copy: its header and partitions.
struct TableCopy {
    header: Header,
    partitions: Vec<Partition>,
}

/// Reads a GPT disk whose LBA 0 (`lba0`) has a protective entry.
pub(crate) fn read<R: Read + Seek>(
    disk: &mut R,
    disk_size: u64,
    lba0: &Lba0,
) -> Result<ReadTable, PartitionError> {
    let sectors = disk_sectors(disk_size);
    let Some(last_lba) = sectors.checked_sub(1).filter(|&l| l >= 2) else {
        return Err(PartitionError::DiskTooSmall {
            disk_size,
            what: "a GPT",
        });
    };
    let mut warnings = Vec::new();
    let others = lba0
        .records
        .iter()
        .filter(|r| r.os_type != 0 && r.os_type != mbr::PROTECTIVE_TYPE)
        .count();
    if others > 0 {
        warnings.push(ReadWarning::GptHybridMbr { count: others });
    }
    let chosen = match read_copy(disk, disk_size, Which::Primary, 1) {
        Ok(primary) => {
            let alternate = primary.header.alternate_lba;
            if alternate != last_lba {
                warnings.push(ReadWarning::GptBackupNotAtEnd {
                    alternate_lba: alternate,
                    last_lba,
                });
            }
            match read_copy(disk, disk_size, Which::Backup, alternate) {
                Ok(backup) => {
                    if let Some(field) = difference(&primary, &backup) {
                        warnings.push(ReadWarning::GptCopiesDiffer { field });
                    }
                }
                Err(PartitionError::Io(e)) => return Err(PartitionError::Io(e)),
                Err(reason) => warnings.push(ReadWarning::GptBackupCorrupt {
                    reason: Box::new(reason),
                }),
            }
            primary
        }
        Err(PartitionError::Io(e)) => return Err(PartitionError::Io(e)),
        Err(primary_err) => match read_copy(disk, disk_size, Which::Backup, last_lba) {
            Ok(backup) => {
                warnings.push(ReadWarning::GptPrimaryCorrupt {
                    backup_lba: last_lba,
                    reason: Box::new(primary_err),
                });
                backup
            }
            Err(PartitionError::Io(e)) => return Err(PartitionError::Io(e)),
            Err(backup_err) => {
                return Err(PartitionError::GptNoValidCopy {
                    primary: Box::new(primary_err),
                    backup: Box::new(backup_err),
                })
            }
        },
    };
    let h = &chosen.header;
    let standard_last = standard_last_usable(sectors, h.number_of_partition_entries);
    Ok(ReadTable {
        table: PartitionTable {
            kind: TableKind::Gpt {
                disk_guid: h.disk_guid,
                entry_count: h.number_of_partition_entries,
                first_usable_lba: h.first_usable_lba,
                last_usable_lba: (Some(h.last_usable_lba) != standard_last).then_some(h.last_usable_lba),
            },
            sector_size: 512,
            boot_code: lba0.boot_code,
            partitions: chosen.partitions,
        },
        warnings,
    })
}

/// The first field in which two good copies disagree (beyond their locations).
fn difference(primary: &TableCopy, backup: &TableCopy) -> Option<&'static str> {
    let (p, b) = (&primary.header, &backup.header);
    if b.alternate_lba != 1 {
        Some("AlternateLBA")
    } else if p.disk_guid != b.disk_guid {
        Some("DiskGUID")
    } else if (p.first_usable_lba, p.last_usable_lba) != (b.first_usable_lba, b.last_usable_lba) {
        Some("FirstUsableLBA/LastUsableLBA")
    } else if p.number_of_partition_entries != b.number_of_partition_entries {
        Some("NumberOfPartitionEntries")
    } else if primary.partitions != backup.partitions {
        Some("partition entries")
    } else {
        None
    }
}

/// `LastUsableLBA` as the writer sets it: before the backup array and header.
fn standard_last_usable(sectors: u64, entries: u32) -> Option<u64> {
    sectors.checked_sub(2)?.checked_sub(entry_array_sectors(entries))
}

/// Reads and checks the copy whose header is at `lba`.
fn read_copy<R: Read + Seek>(
    disk: &mut R,
    disk_size: u64,
    copy: Which,
    lba: u64,
) -> Result<TableCopy, PartitionError> {
    let sector = read_sector(disk, lba, disk_size)?;
    let header = parse_header(&sector, copy, lba, disk_sectors(disk_size))?;
    let array_len = u64::from(header.number_of_partition_entries)
        .saturating_mul(u64::from(header.size_of_partition_entry));
    // parse_header bounded array_len by MAX_ENTRY_ARRAY, so it fits memory and usize.
    let mut array = vec![0u8; usize::try_from(array_len).unwrap_or(0)];
    read_at(disk, header.partition_entry_lba, &mut array, disk_size)?;
    let header_offset = lba.saturating_mul(512);
    let stored = u32_le(&sector, 88);
    let actual = crc32(&array);
    if stored != actual {
        return Err(PartitionError::GptCorrupt {
            place: format!("{} header", copy.name()),
            field: "PartitionEntryArrayCRC32",
            offset: header_offset.saturating_add(88),
            reason: format!("is {stored:#010x} but the entry array's CRC32 is {actual:#010x}"),
        });
    }
    let partitions = parse_entries(&array, &header, copy)?;
    Ok(TableCopy { header, partitions })
}

fn parse_header(sector: &[u8; 512], copy: Which, lba: u64, sectors: u64) -> Result<Header, PartitionError> {
    let place = format!("{} header at LBA {lba}", copy.name());
    let base = lba.saturating_mul(512);
    let corrupt = |field: &'static str, at: u64, reason: String| PartitionError::GptCorrupt {
        place: place.clone(),
        field,
        offset: base.saturating_add(at),
        reason,
    };
    if sector.get(..8) != Some(&SIGNATURE[..]) {
        return Err(corrupt("Signature", 0, "is not \"EFI PART\"".into()));
    }
    let revision = u32_le(sector, 8);
    if revision >> 16 != REVISION_1_0 >> 16 {
        return Err(PartitionError::GptUnsupported {
            place,
            field: "Revision",
            offset: base.saturating_add(8),
            reason: format!("is {revision:#010x}; only revision 1.x is known"),
        });
    }
    let header_size = u32_le(sector, 12);
    if !(HEADER_SIZE..=512).contains(&header_size) {
        return Err(corrupt(
            "HeaderSize",
            12,
            format!("is {header_size}, not between 92 and the sector size 512"),
        ));
    }
    let mut zeroed = *sector;
    zeroed[16..20].fill(0);
    let stored = u32_le(sector, 16);
    let actual = crc32(zeroed.get(..header_size as usize).unwrap_or(&[]));
    if stored != actual {
        return Err(corrupt(
            "HeaderCRC32",
            16,
            format!("is {stored:#010x} but the header's CRC32 is {actual:#010x}"),
        ));
    }
    let my_lba = u64_le(sector, 24);
    if my_lba != lba {
        return Err(corrupt(
            "MyLBA",
            24,
            format!("is {my_lba}, but the header was read from LBA {lba}"),
        ));
    }
    let h = Header {
        alternate_lba: u64_le(sector, 32),
        first_usable_lba: u64_le(sector, 40),
        last_usable_lba: u64_le(sector, 48),
        disk_guid: guid_at(sector, 56),
        partition_entry_lba: u64_le(sector, 72),
        number_of_partition_entries: u32_le(sector, 80),
        size_of_partition_entry: u32_le(sector, 84),
    };
    if h.alternate_lba == my_lba {
        return Err(corrupt(
            "AlternateLBA",
            32,
            format!("is {my_lba}, this header's own LBA"),
        ));
    }
    let usable = h.first_usable_lba..h.last_usable_lba.saturating_add(1);
    if h.first_usable_lba > h.last_usable_lba {
        return Err(corrupt(
            "FirstUsableLBA",
            40,
            format!(
                "is {}, after LastUsableLBA {}",
                h.first_usable_lba, h.last_usable_lba
            ),
        ));
    }
    if h.last_usable_lba >= sectors {
        return Err(corrupt(
            "LastUsableLBA",
            48,
            format!(
                "is {}, past the disk's last sector {}",
                h.last_usable_lba,
                sectors.saturating_sub(1)
            ),
        ));
    }
    if usable.contains(&0) || usable.contains(&my_lba) || usable.contains(&h.alternate_lba) {
        return Err(corrupt(
            "FirstUsableLBA",
            40,
            format!(
                "the usable sectors {}..={} include LBA 0 or a GPT header (LBA {my_lba} or {})",
                h.first_usable_lba, h.last_usable_lba, h.alternate_lba
            ),
        ));
    }
    let entry_size = h.size_of_partition_entry;
    if entry_size < ENTRY_SIZE
        || !entry_size.is_multiple_of(ENTRY_SIZE)
        || !(entry_size / ENTRY_SIZE).is_power_of_two()
    {
        return Err(corrupt(
            "SizeOfPartitionEntry",
            84,
            format!("is {entry_size}, not 128·2ⁿ"),
        ));
    }
    let array_len = u64::from(h.number_of_partition_entries).saturating_mul(u64::from(entry_size));
    if array_len > MAX_ENTRY_ARRAY {
        return Err(PartitionError::GptUnsupported {
            place,
            field: "NumberOfPartitionEntries",
            offset: base.saturating_add(80),
            reason: format!(
                "{} entries of {entry_size} bytes exceed the {MAX_ENTRY_ARRAY}-byte limit",
                h.number_of_partition_entries
            ),
        });
    }
    let array = h.partition_entry_lba..h.partition_entry_lba.saturating_add(array_len.div_ceil(512));
    if array.end > sectors || array.start == 0 {
        return Err(corrupt(
            "PartitionEntryLBA",
            72,
            format!(
                "puts the entry array at sectors {}..{}, outside the disk's {sectors}",
                array.start, array.end
            ),
        ));
    }
    if array.contains(&my_lba) || (array.start < usable.end && usable.start < array.end) {
        return Err(corrupt(
            "PartitionEntryLBA",
            72,
            format!(
                "puts the entry array at sectors {}..{}, over the header or the usable sectors",
                array.start, array.end
            ),
        ));
    }
    Ok(h)
}

fn parse_entries(array: &[u8], h: &Header, copy: Which) -> Result<Vec<Partition>, PartitionError> {
    let size = h.size_of_partition_entry as usize;
    let base = h.partition_entry_lba.saturating_mul(512);
    let mut partitions: Vec<Partition> = Vec::new();
    for (slot, entry) in array.chunks_exact(size.max(1)).enumerate() {
        let entry_offset = base.saturating_add(slot.saturating_mul(size) as u64);
        let index = u32::try_from(slot).unwrap_or(u32::MAX).saturating_add(1);
        let corrupt = |field: &'static str, at: u64, reason: String| PartitionError::GptCorrupt {
            place: format!("{} entry {slot} (partition {index})", copy.name()),
            field,
            offset: entry_offset.saturating_add(at),
            reason,
        };
        let type_guid = guid_at(entry, 0);
        if type_guid.is_nil() {
            continue;
        }
        let start = u64_le(entry, 32);
        let end = u64_le(entry, 40);
        if start > end {
            return Err(corrupt(
                "EndingLBA",
                40,
                format!("is {end}, before StartingLBA {start}"),
            ));
        }
        if start < h.first_usable_lba {
            return Err(corrupt(
                "StartingLBA",
                32,
                format!("is {start}, before FirstUsableLBA {}", h.first_usable_lba),
            ));
        }
        if end > h.last_usable_lba {
            return Err(corrupt(
                "EndingLBA",
                40,
                format!("is {end}, after LastUsableLBA {}", h.last_usable_lba),
            ));
        }
        let mut units = Vec::with_capacity(NAME_UNITS);
        for pair in entry.get(56..128).unwrap_or(&[]).chunks_exact(2) {
            let unit = u16::from_le_bytes([
                pair.first().copied().unwrap_or(0),
                pair.get(1).copied().unwrap_or(0),
            ]);
            if unit == 0 {
                break;
            }
            units.push(unit);
        }
        let name = String::from_utf16(&units)
            .map_err(|_| corrupt("PartitionName", 56, "is not valid UTF-16".into()))?;
        let attributes = u64_le(entry, 48);
        let p = Partition {
            index,
            start_lba: start,
            // start <= end <= LastUsableLBA < disk sectors, so this cannot overflow.
            size_lba: end.saturating_sub(start).saturating_add(1),
            partition_type: PartitionType::Gpt(type_guid),
            bootable: attributes & LEGACY_BIOS_BOOTABLE != 0,
            name,
            guid: Some(guid_at(entry, 16)),
            attributes: attributes & !LEGACY_BIOS_BOOTABLE,
        };
        if let Some(q) = partitions
            .iter()
            .find(|q| q.start_lba < p.end_lba() && p.start_lba < q.end_lba())
        {
            return Err(corrupt(
                "StartingLBA",
                32,
                format!(
                    "sectors {}..={end} overlap partition {} (sectors {}..{})",
                    start,
                    q.index,
                    q.start_lba,
                    q.end_lba()
                ),
            ));
        }
        partitions.push(p);
    }
    Ok(partitions)
}

/// GPT-specific checks for writing; returns the usable sectors.
pub(crate) fn validate(table: &PartitionTable, disk_size: u64) -> Result<Range<u64>, PartitionError> {
    let TableKind::Gpt {
        disk_guid,
        entry_count,
        first_usable_lba,
        last_usable_lba,
    } = table.kind
    else {
        return Err(PartitionError::invalid("table", "kind", "is not GPT"));
    };
    let sectors = disk_sectors(disk_size);
    if disk_guid.is_nil() {
        return Err(PartitionError::invalid(
            "table",
            "disk_guid",
            "is nil; derive it from the image's key",
        ));
    }
    let max_entries = MAX_ENTRY_ARRAY / ENTRY_SIZE_U64;
    if entry_count == 0 || u64::from(entry_count) > max_entries {
        return Err(PartitionError::invalid(
            "table",
            "entry_count",
            format!("is {entry_count}, not 1 to {max_entries}"),
        ));
    }
    let min_first = min_first_usable_lba(entry_count);
    if first_usable_lba < min_first {
        return Err(PartitionError::invalid(
            "table",
            "first_usable_lba",
            format!("is {first_usable_lba}, inside the primary entry array (the minimum is {min_first})"),
        ));
    }
    let Some(standard_last) = standard_last_usable(sectors, entry_count).filter(|&l| l >= first_usable_lba)
    else {
        return Err(PartitionError::DiskTooSmall {
            disk_size,
            what: "a GPT with its backup",
        });
    };
    let last = last_usable_lba.unwrap_or(standard_last);
    if last > standard_last || last < first_usable_lba {
        return Err(PartitionError::invalid(
            "table",
            "last_usable_lba",
            format!("is {last}, not between first_usable_lba {first_usable_lba} and {standard_last}"),
        ));
    }
    let mut guids: Vec<Guid> = Vec::new();
    for p in &table.partitions {
        let what = || format!("partition {}", p.index);
        if p.index == 0 || p.index > entry_count {
            return Err(PartitionError::invalid(
                what(),
                "index",
                format!("is not 1 to entry_count {entry_count}"),
            ));
        }
        match p.partition_type {
            PartitionType::Gpt(t) if t.is_nil() => {
                return Err(PartitionError::invalid(
                    what(),
                    "partition_type",
                    "is nil, which marks an unused entry",
                ))
            }
            PartitionType::Gpt(_) => {}
            PartitionType::Mbr(_) => {
                return Err(PartitionError::invalid(
                    what(),
                    "partition_type",
                    "is an MBR type in a GPT",
                ))
            }
        }
        match p.guid {
            None => {
                return Err(PartitionError::invalid(
                    what(),
                    "guid",
                    "is missing; derive it from the image's key",
                ))
            }
            Some(g) if g.is_nil() => {
                return Err(PartitionError::invalid(
                    what(),
                    "guid",
                    "is nil; derive it from the image's key",
                ))
            }
            Some(g) if guids.contains(&g) => {
                return Err(PartitionError::invalid(
                    what(),
                    "guid",
                    format!("{g} is used twice"),
                ))
            }
            Some(g) => guids.push(g),
        }
        if p.name.encode_utf16().count() > NAME_UNITS || p.name.contains('\0') {
            return Err(PartitionError::invalid(
                what(),
                "name",
                format!(
                    "`{}` is longer than {NAME_UNITS} UTF-16 units or contains NUL",
                    p.name
                ),
            ));
        }
        if p.attributes & LEGACY_BIOS_BOOTABLE != 0 {
            return Err(PartitionError::invalid(
                what(),
                "attributes",
                "has bit 2 (LegacyBIOSBootable) set; set `bootable` instead",
            ));
        }
    }
    Ok(first_usable_lba..last.saturating_add(1))
}

/// Writes the protective MBR, both headers and both entry arrays of a validated table.
pub(crate) fn write<W: Write + Seek>(
    table: &PartitionTable,
    disk: &mut W,
    disk_size: u64,
) -> Result<(), PartitionError> {
    let TableKind::Gpt {
        disk_guid,
        entry_count,
        first_usable_lba,
        last_usable_lba,
    } = table.kind
    else {
        return Err(PartitionError::invalid("table", "kind", "is not GPT"));
    };
    let sectors = disk_sectors(disk_size);
    let array_sectors = entry_array_sectors(entry_count);
    let standard_last = standard_last_usable(sectors, entry_count);
    let (Some(last_lba), Some(last_usable), Some(array_bytes)) = (
        sectors.checked_sub(1),
        last_usable_lba.or(standard_last),
        array_sectors
            .checked_mul(512)
            .and_then(|n| usize::try_from(n).ok()),
    ) else {
        return Err(PartitionError::DiskTooSmall {
            disk_size,
            what: "a GPT with its backup",
        });
    };
    let backup_array_lba = last_lba.saturating_sub(array_sectors);

    // The array, padded with zeros to whole sectors; the CRC covers the entries only.
    let mut array = vec![0u8; array_bytes];
    for p in &table.partitions {
        let at = usize::try_from(p.index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|slot| slot.checked_mul(ENTRY_SIZE as usize));
        let Some(dst) = at.and_then(|at| array.get_mut(at..at.saturating_add(ENTRY_SIZE as usize))) else {
            return Err(PartitionError::invalid(
                format!("partition {}", p.index),
                "index",
                "was not validated",
            ));
        };
        dst.copy_from_slice(&encode_entry(p));
    }
    let entries_len = (entry_count as usize).saturating_mul(ENTRY_SIZE as usize);
    let array_crc = crc32(array.get(..entries_len).unwrap_or(&[]));

    let header = |my_lba: u64, alternate_lba: u64, entry_lba: u64| {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(SIGNATURE); // Signature
        s[8..12].copy_from_slice(&REVISION_1_0.to_le_bytes()); // Revision
        s[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes()); // HeaderSize
        s[24..32].copy_from_slice(&my_lba.to_le_bytes()); // MyLBA
        s[32..40].copy_from_slice(&alternate_lba.to_le_bytes()); // AlternateLBA
        s[40..48].copy_from_slice(&first_usable_lba.to_le_bytes()); // FirstUsableLBA
        s[48..56].copy_from_slice(&last_usable.to_le_bytes()); // LastUsableLBA
        s[56..72].copy_from_slice(&disk_guid.to_disk()); // DiskGUID
        s[72..80].copy_from_slice(&entry_lba.to_le_bytes()); // PartitionEntryLBA
        s[80..84].copy_from_slice(&entry_count.to_le_bytes()); // NumberOfPartitionEntries
        s[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes()); // SizeOfPartitionEntry
        s[88..92].copy_from_slice(&array_crc.to_le_bytes()); // PartitionEntryArrayCRC32
        let crc = crc32(&s[..HEADER_SIZE as usize]);
        s[16..20].copy_from_slice(&crc.to_le_bytes()); // HeaderCRC32
        s
    };

    write_at(disk, 0, &mbr::protective(&table.boot_code, sectors))?;
    write_at(disk, 1, &header(1, last_lba, 2))?;
    write_at(disk, 2, &array)?;
    write_at(disk, backup_array_lba, &array)?;
    write_at(disk, last_lba, &header(last_lba, 1, backup_array_lba))?;
    Ok(())
}

fn encode_entry(p: &Partition) -> [u8; 128] {
    let mut e = [0u8; 128];
    let type_guid = match p.partition_type {
        PartitionType::Gpt(g) => g,
        PartitionType::Mbr(_) => Guid::NIL,
    };
    let attributes = p.attributes | if p.bootable { LEGACY_BIOS_BOOTABLE } else { 0 };
    e[0..16].copy_from_slice(&type_guid.to_disk()); // PartitionTypeGUID
    e[16..32].copy_from_slice(&p.guid.unwrap_or(Guid::NIL).to_disk()); // UniquePartitionGUID
    e[32..40].copy_from_slice(&p.start_lba.to_le_bytes()); // StartingLBA
    e[40..48].copy_from_slice(&p.end_lba().saturating_sub(1).to_le_bytes()); // EndingLBA
    e[48..56].copy_from_slice(&attributes.to_le_bytes()); // Attributes
    for (dst, unit) in e[56..128].chunks_exact_mut(2).zip(p.name.encode_utf16()) {
        dst.copy_from_slice(&unit.to_le_bytes()); // PartitionName
    }
    e
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut d = [0u8; 16];
    if let Some(src) = b.get(at..at.saturating_add(16)) {
        d.copy_from_slice(src);
    }
    Guid::from_disk(d)
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    let mut d = [0u8; 4];
    if let Some(src) = b.get(at..at.saturating_add(4)) {
        d.copy_from_slice(src);
    }
    u32::from_le_bytes(d)
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut d = [0u8; 8];
    if let Some(src) = b.get(at..at.saturating_add(8)) {
        d.copy_from_slice(src);
    }
    u64::from_le_bytes(d)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;
    use std::io::Cursor;

    const DISK: u64 = 8 << 20;

    fn g(s: &str) -> Guid {
        s.parse().unwrap()
    }

    fn table() -> PartitionTable {
        let mut t = PartitionTable::new_gpt(g("01234567-89ab-cdef-0123-456789abcdef"));
        let mut boot = Partition::gpt(
            1,
            2048,
            4096,
            EFI_SYSTEM,
            g("11111111-2222-3333-4444-555555555555"),
            "EFI boot",
        );
        boot.bootable = true;
        boot.attributes = 1 | (1 << 60);
        t.partitions.push(boot);
        t.partitions.push(Partition::gpt(
            3,
            8192,
            4096,
            LINUX_FILESYSTEM,
            g("0fc63daf-8483-4772-8e79-3d69d8477de4"),
            "røøt ☃",
        ));
        t
    }

    fn write_to_vec(t: &PartitionTable) -> Vec<u8> {
        let mut disk = Cursor::new(vec![0u8; DISK as usize]);
        t.write(&mut disk, DISK).unwrap();
        disk.into_inner()
    }

    fn read_vec(disk: &[u8]) -> Result<ReadTable, PartitionError> {
        PartitionTable::read(&mut Cursor::new(disk), disk.len() as u64)
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guid_mixed_endian() {
        let esp = EFI_SYSTEM;
        assert_eq!(esp.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            esp.to_disk(),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9,
                0x3B
            ]
        );
        assert_eq!(Guid::from_disk(esp.to_disk()), esp);
        assert_eq!(g("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), esp);
        for bad in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93",
            "g12a7328-f81f-11d2-ba4b-00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b+00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec9é",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trip_and_partuuid() {
        let t = table();
        let back = read_vec(&write_to_vec(&t)).unwrap();
        assert!(back.warnings.is_empty(), "{:?}", back.warnings);
        assert_eq!(back.table, t);
        assert_eq!(
            back.table.partuuid(3).as_deref(),
            Some("0fc63daf-8483-4772-8e79-3d69d8477de4")
        );
    }

    #[test]
    fn layout_is_standard() {
        let disk = write_to_vec(&table());
        let last = DISK / 512 - 1;
        assert_eq!(&disk[512..520], b"EFI PART");
        assert_eq!(&disk[(last * 512) as usize..][..8], b"EFI PART");
        assert_eq!(u64_le(&disk, 512 + 40), 34);
        assert_eq!(u64_le(&disk, 512 + 48), last - 33);
        assert_eq!(u64_le(&disk, (last * 512) as usize + 72), last - 32);
        // Entry of partition 3 is slot 2; slot 1 is zeros.
        assert!(disk[1024 + 128..1024 + 256].iter().all(|&b| b == 0));
        assert_eq!(&disk[1024 + 256..1024 + 272], &LINUX_FILESYSTEM.to_disk());
        assert_eq!(u64_le(&disk, 1024 + 48), 1 | 4 | (1 << 60));
    }

    fn damage(disk: &mut [u8], at: usize) {
        disk[at] ^= 0x40;
    }

    #[test]
    fn corrupt_primary_falls_back_to_backup() {
        let t = table();
        for at in [512 + 60, 1024 + 33, 512] {
            let mut disk = write_to_vec(&t);
            damage(&mut disk, at);
            let back = read_vec(&disk).unwrap();
            assert_eq!(back.table, t);
            assert!(
                matches!(back.warnings.as_slice(), [ReadWarning::GptPrimaryCorrupt { backup_lba, .. }] if *backup_lba == DISK / 512 - 1),
                "{:?}",
                back.warnings
            );
        }
    }

    #[test]
    fn corrupt_backup_is_a_warning() {
        let mut disk = write_to_vec(&table());
        let n = disk.len();
        damage(&mut disk, n - 512 + 60);
        let back = read_vec(&disk).unwrap();
        assert!(
            matches!(back.warnings.as_slice(), [ReadWarning::GptBackupCorrupt { .. }]),
            "{:?}",
            back.warnings
        );
    }

    #[test]
    fn both_corrupt_names_both() {
        let mut disk = write_to_vec(&table());
        let n = disk.len();
        damage(&mut disk, 512 + 60);
        damage(&mut disk, n - 512 + 16);
        let err = read_vec(&disk).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PartitionError::GptNoValidCopy { .. }));
        assert!(
            text.contains("primary header at LBA 1, field `HeaderCRC32`"),
            "{text}"
        );
        assert!(
            text.contains("backup header at LBA 16383, field `HeaderCRC32` at byte 0x7ffe10"),
            "{text}"
        );
    }

    /// Rewrites field bytes of the primary (header or entry) and fixes both CRCs, so only
    /// the semantic check can catch it.
    fn patch_primary(disk: &mut [u8], at: usize, bytes: &[u8]) {
        disk[at..at + bytes.len()].copy_from_slice(bytes);
        let array_crc = crc32(&disk[1024..1024 + 128 * 128]);
        disk[512 + 88..512 + 92].copy_from_slice(&array_crc.to_le_bytes());
        disk[512 + 16..512 + 20].fill(0);
        let crc = crc32(&disk[512..512 + 92]);
        disk[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn semantic_checks_name_the_field() {
        let cases: [(usize, Vec<u8>, &str); 7] = [
            (
                512 + 32,
                1u64.to_le_bytes().to_vec(),
                "field `AlternateLBA` at byte 0x220",
            ),
            (
                1024 + 32,
                20u64.to_le_bytes().to_vec(),
                "primary entry 0 (partition 1), field `StartingLBA`",
            ),
            (
                1024 + 40,
                1000u64.to_le_bytes().to_vec(),
                "field `EndingLBA` at byte 0x428: is 1000, before",
            ),
            (
                1024 + 256 + 32,
                3000u64.to_le_bytes().to_vec(),
                "overlap partition 1",
            ),
            (1024 + 56, vec![0x00, 0xD8], "field `PartitionName`"),
            (
                512 + 84,
                100u32.to_le_bytes().to_vec(),
                "field `SizeOfPartitionEntry`",
            ),
            (
                512 + 48,
                (DISK / 512).to_le_bytes().to_vec(),
                "field `LastUsableLBA`",
            ),
        ];
        for (at, bytes, expect) in cases {
            let mut disk = write_to_vec(&table());
            patch_primary(&mut disk, at, &bytes);
            let back = read_vec(&disk).unwrap();
            let [ReadWarning::GptPrimaryCorrupt { reason, .. }] = back.warnings.as_slice() else {
                panic!("{expect}: {:?}", back.warnings);
            };
            assert!(reason.to_string().contains(expect), "{reason} lacks {expect}");
        }
    }

    #[test]
    fn unsupported_revision() {
        let mut disk = write_to_vec(&table());
        patch_primary(&mut disk, 512 + 8, &0x0002_0000u32.to_le_bytes());
        let back = read_vec(&disk).unwrap();
        let [ReadWarning::GptPrimaryCorrupt { reason, .. }] = back.warnings.as_slice() else {
            panic!("{:?}", back.warnings);
        };
        assert!(matches!(
            **reason,
            PartitionError::GptUnsupported {
                field: "Revision",
                ..
            }
        ));
    }

    #[test]
    fn hybrid_mbr_is_noted() {
        let mut disk = write_to_vec(&table());
        disk[0x1CE + 4] = 0x0C;
        disk[0x1CE + 12] = 1;
        let back = read_vec(&disk).unwrap();
        assert!(matches!(
            back.warnings.as_slice(),
            [ReadWarning::GptHybridMbr { count: 1 }]
        ));
    }

    #[test]
    fn custom_usable_range_round_trips() {
        let mut t = table();
        if let TableKind::Gpt {
            first_usable_lba,
            last_usable_lba,
            ..
        } = &mut t.kind
        {
            *first_usable_lba = 2048;
            *last_usable_lba = Some(15_000);
        }
        let back = read_vec(&write_to_vec(&t)).unwrap();
        assert_eq!(back.table, t);
    }

    #[test]
    fn writer_rejects_what_it_cannot_write() {
        type Mutation = fn(&mut PartitionTable);
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |t| {
                    t.kind = TableKind::Gpt {
                        disk_guid: Guid::NIL,
                        entry_count: 128,
                        first_usable_lba: 34,
                        last_usable_lba: None,
                    }
                },
                "disk_guid",
            ),
            (|t| t.partitions[0].guid = None, "guid"),
            (|t| t.partitions[1].guid = t.partitions[0].guid, "used twice"),
            (|t| t.partitions[0].name = "x".repeat(37), "name"),
            (|t| t.partitions[0].attributes = 4, "LegacyBIOSBootable"),
            (
                |t| t.partitions[0].partition_type = PartitionType::Mbr(0x83),
                "MBR type",
            ),
            (|t| t.partitions[0].start_lba = 33, "outside the usable"),
            (|t| t.partitions[1].index = 129, "entry_count"),
            (|t| t.partitions[1].size_lba = 1 << 20, "outside the usable"),
        ];
        for (mutate, expect) in cases {
            let mut t = table();
            mutate(&mut t);
            let err = t.write(&mut Cursor::new(Vec::new()), DISK).unwrap_err();
            assert!(err.to_string().contains(expect), "{err} lacks {expect}");
        }
    }
}
