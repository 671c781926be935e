//! The partition table of a disk image, MBR or GPT, as one small model: which partitions
//! exist, where they are, what they hold. [`mbr`](super::mbr) and [`gpt`](super::gpt) read
//! and write its bytes; this module owns the model, its validation, the errors, and the
//! helpers the image steps need around it (PARTUUIDs, 4 MiB alignment, a window onto one
//! partition's bytes).
//!
//! Raspberry Pi images are a FAT32 boot partition and an ext4 root partition behind an MBR
//! (Raspberry Pi OS) or a GPT. To unpack a downloaded image w4b reads the table and opens
//! each partition as its own `Read + Seek`; to build one it writes the table sectors and lets
//! the filesystem writers fill the partitions through the same windows.
//!
//! Rules that hold for both formats:
//! - Sectors are 512 bytes; `disk_size` is a byte count given by the caller (normally the
//!   image file's length) and the disk has `disk_size / 512` whole sectors.
//! - Every ID (MBR disk signature, GPT disk and partition GUIDs) is an input. Nothing is
//!   derived from the clock or a random source, so the same table and disk size always
//!   give the same bytes.
//! - Writers write only the table's own sectors (MBR: LBA 0; GPT: LBA 0..=33 and the last
//!   33 sectors) and never touch partition contents; callers start from a zeroed (sparse)
//!   file.
//! - Readers take untrusted bytes: every offset is checked against `disk_size`, every loop
//!   is bounded by sizes read from the image, and they return errors, never panic.

#![deny(clippy::arithmetic_side_effects)]

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;

use super::gpt::{self, Guid};
use super::mbr;

/// The only sector size supported (every Raspberry Pi medium and image uses it).
pub const SECTOR_SIZE: u32 = 512;

/// Raspberry Pi OS starts its first partition at sector 8192 (4 MiB) and keeps every
/// partition start on a 4 MiB boundary, which suits the erase blocks of SD cards.
pub const RPI_ALIGNMENT_LBA: u64 = 8192;

/// Bytes 0..440 of LBA 0: code a BIOS runs from the MBR. Raspberry Pis never run it.
pub const BOOT_CODE_LEN: usize = 440;

/// Which scheme the table uses, with its disk-wide identifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// A classic MBR. `disk_signature` is the 32-bit ID at byte 0x1B8 (sfdisk `label-id`),
    /// which Linux turns into `PARTUUID=<signature>-<index>`.
    Mbr { disk_signature: u32 },
    /// A GUID partition table behind a protective MBR.
    Gpt {
        disk_guid: Guid,
        /// Slots in the partition entry array (128 is the usual and the minimum UEFI
        /// asks for); each takes 128 bytes.
        entry_count: u32,
        /// `FirstUsableLBA`. At least `2 + entry array sectors` (34 with 128 entries);
        /// sfdisk uses 2048.
        first_usable_lba: u64,
        /// `LastUsableLBA`; `None` means the standard value for the disk size, the sector
        /// before the backup entry array (`disk sectors - 34` with 128 entries).
        last_usable_lba: Option<u64>,
    },
}

/// A partition's type: an MBR system ID byte or a GPT type GUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PartitionType {
    Mbr(u8),
    Gpt(Guid),
}

impl PartitionType {
    /// MBR type of a FAT32 filesystem addressed by LBA (the Raspberry Pi boot partition).
    pub const MBR_FAT32_LBA: PartitionType = PartitionType::Mbr(0x0C);
    /// MBR type of a Linux filesystem (the Raspberry Pi root partition).
    pub const MBR_LINUX: PartitionType = PartitionType::Mbr(0x83);
    /// GPT EFI System Partition.
    pub const GPT_EFI_SYSTEM: PartitionType = PartitionType::Gpt(gpt::EFI_SYSTEM);
    /// GPT Microsoft basic data (what a FAT boot partition uses outside of UEFI).
    pub const GPT_BASIC_DATA: PartitionType = PartitionType::Gpt(gpt::MICROSOFT_BASIC_DATA);
    /// GPT Linux filesystem data.
    pub const GPT_LINUX: PartitionType = PartitionType::Gpt(gpt::LINUX_FILESYSTEM);
}

impl fmt::Display for PartitionType {
    /// The spelling `sfdisk --json` uses: hex without `0x` for MBR, the GUID for GPT.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionType::Mbr(b) => write!(f, "{b:x}"),
            PartitionType::Gpt(g) => write!(f, "{g}"),
        }
    }
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The Linux partition number: MBR slots 1..=4, logical partitions from 5 on; GPT
    /// entry slot + 1. Holes are kept (an MBR with only slot 2 used has partition 2).
    pub index: u32,
    /// First sector.
    pub start_lba: u64,
    /// Length in sectors, at least 1.
    pub size_lba: u64,
    pub partition_type: PartitionType,
    /// MBR: the boot indicator (0x80). GPT: attribute bit 2, `LegacyBIOSBootable`.
    pub bootable: bool,
    /// GPT `PartitionName` (at most 36 UTF-16 code units, no NUL); empty for MBR.
    pub name: String,
    /// GPT `UniquePartitionGUID`; `None` for MBR.
    pub guid: Option<Guid>,
    /// GPT `Attributes` without bit 2 (that is `bootable`); 0 for MBR.
    pub attributes: u64,
}

impl Partition {
    /// An MBR primary partition.
    pub fn mbr(index: u32, start_lba: u64, size_lba: u64, type_byte: u8, bootable: bool) -> Partition {
        Partition {
            index,
            start_lba,
            size_lba,
            partition_type: PartitionType::Mbr(type_byte),
            bootable,
            name: String::new(),
            guid: None,
            attributes: 0,
        }
    }

    /// A GPT partition with no attributes.
    pub fn gpt(
        index: u32,
        start_lba: u64,
        size_lba: u64,
        type_guid: Guid,
        guid: Guid,
        name: &str,
    ) -> Partition {
        Partition {
            index,
            start_lba,
            size_lba,
            partition_type: PartitionType::Gpt(type_guid),
            bootable: false,
            name: name.to_owned(),
            guid: Some(guid),
            attributes: 0,
        }
    }

    /// The sector after the last one (saturating: only meaningful once validated).
    pub fn end_lba(&self) -> u64 {
        self.start_lba.saturating_add(self.size_lba)
    }

    /// The partition's bytes on the disk (saturating: only meaningful once validated).
    pub fn byte_range(&self) -> Range<u64> {
        let sector = u64::from(SECTOR_SIZE);
        self.start_lba.saturating_mul(sector)..self.end_lba().saturating_mul(sector)
    }

    /// Whether this MBR entry is an extended-partition container (types 0x05, 0x0F, 0x85).
    pub fn is_extended(&self) -> bool {
        matches!(self.partition_type, PartitionType::Mbr(t) if mbr::is_extended_type(t))
    }
}

/// A disk's partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// Always [`SECTOR_SIZE`]; writers reject anything else.
    pub sector_size: u32,
    /// MBR bootstrap code, bytes 0..440 of LBA 0 (also of a GPT's protective MBR). Kept as
    /// read; zeros for new tables.
    pub boot_code: [u8; BOOT_CODE_LEN],
    /// Sorted by `index`.
    pub partitions: Vec<Partition>,
}

/// A table as read, with what the reader noticed but could work around.
#[derive(Debug)]
pub struct ReadTable {
    pub table: PartitionTable,
    pub warnings: Vec<ReadWarning>,
}

/// A problem the reader survived. Callers show these; they do not stop an unpack.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[diagnostic(severity(Warning))]
pub enum ReadWarning {
    #[error("the primary GPT header is unusable, so the backup at LBA {backup_lba} was used")]
    #[diagnostic(
        code(w4b::gpt::primary_corrupt),
        help(
            "`sfdisk` can rewrite the primary copy from the backup: `sfdisk --relocate gpt-bak-std <image>`"
        )
    )]
    GptPrimaryCorrupt {
        backup_lba: u64,
        #[source]
        reason: Box<PartitionError>,
    },

    #[error("the backup GPT is unusable; the primary was used")]
    #[diagnostic(code(w4b::gpt::backup_corrupt))]
    GptBackupCorrupt {
        #[source]
        reason: Box<PartitionError>,
    },

    #[error("the backup GPT header is at LBA {alternate_lba}, not at the last sector {last_lba}")]
    #[diagnostic(
        code(w4b::gpt::backup_not_at_end),
        help("the image was probably resized after partitioning; `sfdisk --relocate gpt-bak-std <image>` moves it")
    )]
    GptBackupNotAtEnd { alternate_lba: u64, last_lba: u64 },

    #[error("the primary and backup GPT disagree ({field}); the primary was used")]
    #[diagnostic(code(w4b::gpt::copies_differ))]
    GptCopiesDiffer { field: &'static str },

    #[error("the protective MBR also lists {count} MBR partition(s) (a hybrid MBR); they were ignored")]
    #[diagnostic(code(w4b::gpt::hybrid_mbr))]
    GptHybridMbr { count: usize },
}

/// Why a table could not be read or written.
///
/// "Corrupt" means the bytes break the format; "unsupported" means they are valid but use
/// something this code does not handle; "invalid" means a table given to a writer cannot
/// be written. Each names the entry, the spec field and, when reading, its byte offset.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PartitionError {
    #[error("reading or writing the partition table failed")]
    #[diagnostic(code(w4b::partition::io))]
    Io(#[from] io::Error),

    #[error("the image ends before byte {offset:#x} although its size was given as {disk_size} bytes")]
    #[diagnostic(
        code(w4b::partition::truncated),
        help("the download or copy of the image is probably incomplete; fetch it again")
    )]
    Truncated { offset: u64, disk_size: u64 },

    #[error("a disk of {disk_size} bytes is too small for {what}")]
    #[diagnostic(code(w4b::partition::disk_too_small))]
    DiskTooSmall { disk_size: u64, what: &'static str },

    #[error("sector size {sector_size} is not supported, only 512")]
    #[diagnostic(code(w4b::partition::unsupported_sector_size))]
    UnsupportedSectorSize { sector_size: u32 },

    #[error("no partition table: the boot signature at byte 0x1fe is {found:02x?}, not [55, aa]")]
    #[diagnostic(
        code(w4b::mbr::no_signature),
        help("the image is not partitioned, or its first sector was overwritten")
    )]
    MbrNoSignature { found: [u8; 2] },

    #[error("corrupt MBR: {entry}, field `{field}` at byte {offset:#x}: {reason}")]
    #[diagnostic(code(w4b::mbr::corrupt))]
    MbrCorrupt {
        entry: String,
        field: &'static str,
        offset: u64,
        reason: String,
    },

    #[error("unsupported MBR: {entry}, field `{field}` at byte {offset:#x}: {reason}")]
    #[diagnostic(code(w4b::mbr::unsupported))]
    MbrUnsupported {
        entry: String,
        field: &'static str,
        offset: u64,
        reason: String,
    },

    #[error("corrupt GPT: {place}, field `{field}` at byte {offset:#x}: {reason}")]
    #[diagnostic(code(w4b::gpt::corrupt))]
    GptCorrupt {
        place: String,
        field: &'static str,
        offset: u64,
        reason: String,
    },

    #[error("unsupported GPT: {place}, field `{field}` at byte {offset:#x}: {reason}")]
    #[diagnostic(code(w4b::gpt::unsupported))]
    GptUnsupported {
        place: String,
        field: &'static str,
        offset: u64,
        reason: String,
    },

    #[error("neither GPT copy is usable: primary: {primary}; backup: {backup}")]
    #[diagnostic(
        code(w4b::gpt::no_valid_header),
        help("the image is damaged beyond what the backup GPT can repair; fetch it again")
    )]
    GptNoValidCopy {
        primary: Box<PartitionError>,
        backup: Box<PartitionError>,
    },

    #[error("cannot write the partition table: {what}: `{field}` {reason}")]
    #[diagnostic(code(w4b::partition::invalid))]
    Invalid {
        /// `partition 2`, `table`.
        what: String,
        field: &'static str,
        reason: String,
    },

    #[error("cannot write the partition table: {what}: {reason}")]
    #[diagnostic(
        code(w4b::partition::unsupported_write),
        help("the writer makes primary MBR partitions and GPT partitions only")
    )]
    UnsupportedWrite { what: String, reason: String },

    #[error("there is no partition {index}")]
    #[diagnostic(code(w4b::partition::no_such_partition))]
    NoSuchPartition { index: u32 },
}

impl PartitionError {
    pub(crate) fn invalid(
        what: impl Into<String>,
        field: &'static str,
        reason: impl Into<String>,
    ) -> PartitionError {
        PartitionError::Invalid {
            what: what.into(),
            field,
            reason: reason.into(),
        }
    }
}

impl PartitionTable {
    /// An empty MBR table.
    pub fn new_mbr(disk_signature: u32) -> PartitionTable {
        PartitionTable {
            kind: TableKind::Mbr { disk_signature },
            sector_size: SECTOR_SIZE,
            boot_code: [0; BOOT_CODE_LEN],
            partitions: Vec::new(),
        }
    }

    /// An empty GPT with 128 entries, first usable LBA 34, last usable LBA standard.
    pub fn new_gpt(disk_guid: Guid) -> PartitionTable {
        PartitionTable {
            kind: TableKind::Gpt {
                disk_guid,
                entry_count: gpt::DEFAULT_ENTRY_COUNT,
                first_usable_lba: gpt::min_first_usable_lba(gpt::DEFAULT_ENTRY_COUNT),
                last_usable_lba: None,
            },
            sector_size: SECTOR_SIZE,
            boot_code: [0; BOOT_CODE_LEN],
            partitions: Vec::new(),
        }
    }

    /// The Raspberry Pi OS layout: partition 1 FAT32 (type 0x0C) at sector 8192 with
    /// `boot_size_lba` sectors, partition 2 Linux (0x83) from the next 4 MiB boundary to the
    /// end of the disk.
    pub fn raspberry_pi_mbr(
        disk_signature: u32,
        boot_size_lba: u64,
        disk_size: u64,
    ) -> Result<PartitionTable, PartitionError> {
        let sectors = disk_sectors(disk_size);
        let boot_end = RPI_ALIGNMENT_LBA.checked_add(boot_size_lba);
        let root_start = boot_end.and_then(|end| align_up(end, RPI_ALIGNMENT_LBA));
        let root_size = root_start
            .and_then(|start| sectors.checked_sub(start))
            .filter(|&n| n > 0);
        let (Some(root_start), Some(root_size)) = (root_start, root_size) else {
            return Err(PartitionError::DiskTooSmall {
                disk_size,
                what: "the boot partition and a root partition",
            });
        };
        let mut table = PartitionTable::new_mbr(disk_signature);
        table
            .partitions
            .push(Partition::mbr(1, RPI_ALIGNMENT_LBA, boot_size_lba, 0x0C, false));
        table
            .partitions
            .push(Partition::mbr(2, root_start, root_size, 0x83, false));
        table.validate(disk_size)?;
        Ok(table)
    }

    /// Reads the table of a disk of `disk_size` bytes: a GPT if the MBR has a protective
    /// (0xEE) entry, else the MBR with its logical partitions.
    pub fn read<R: Read + Seek>(disk: &mut R, disk_size: u64) -> Result<ReadTable, PartitionError> {
        if disk_sectors(disk_size) == 0 {
            return Err(PartitionError::DiskTooSmall {
                disk_size,
                what: "a partition table",
            });
        }
        let lba0 = read_sector(disk, 0, disk_size)?;
        let mbr = mbr::parse_lba0(&lba0)?;
        if mbr.has_protective_entry() {
            gpt::read(disk, disk_size, &mbr)
        } else {
            mbr::read(disk, disk_size, mbr)
        }
    }

    /// Writes the table's sectors (and nothing else) to a disk of `disk_size` bytes.
    pub fn write<W: Write + Seek>(&self, disk: &mut W, disk_size: u64) -> Result<(), PartitionError> {
        self.validate(disk_size)?;
        match &self.kind {
            TableKind::Mbr { .. } => mbr::write(self, disk),
            TableKind::Gpt { .. } => gpt::write(self, disk, disk_size),
        }
    }

    /// Checks that [`write`](Self::write) can write this table to a disk of `disk_size`
    /// bytes: IDs present, types of the right scheme, partitions inside the usable area
    /// and not overlapping.
    pub fn validate(&self, disk_size: u64) -> Result<(), PartitionError> {
        if self.sector_size != SECTOR_SIZE {
            return Err(PartitionError::UnsupportedSectorSize {
                sector_size: self.sector_size,
            });
        }
        let usable = match &self.kind {
            TableKind::Mbr { .. } => mbr::validate(self, disk_size)?,
            TableKind::Gpt { .. } => gpt::validate(self, disk_size)?,
        };
        let mut seen: Vec<&Partition> = Vec::new();
        for p in &self.partitions {
            let what = || format!("partition {}", p.index);
            if seen.iter().any(|q| q.index == p.index) {
                return Err(PartitionError::invalid(what(), "index", "is used twice"));
            }
            if p.size_lba == 0 {
                return Err(PartitionError::invalid(what(), "size_lba", "is 0"));
            }
            let Some(end) = p.start_lba.checked_add(p.size_lba) else {
                return Err(PartitionError::invalid(what(), "size_lba", "overflows"));
            };
            if p.start_lba < usable.start || end > usable.end {
                return Err(PartitionError::invalid(
                    what(),
                    "start_lba",
                    format!(
                        "puts it at sectors {}..{}, outside the usable sectors {}..{}",
                        p.start_lba, end, usable.start, usable.end
                    ),
                ));
            }
            if let Some(q) = seen.iter().find(|q| overlaps(q, p)) {
                return Err(PartitionError::invalid(
                    what(),
                    "start_lba",
                    format!("overlaps partition {}", q.index),
                ));
            }
            seen.push(p);
        }
        Ok(())
    }

    /// The partition numbered `index`.
    pub fn partition(&self, index: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.index == index)
    }

    /// The `PARTUUID` Linux gives partition `index` (`root=PARTUUID=...` in a Raspberry Pi
    /// `cmdline.txt`): `<disk signature, 8 hex digits>-<index, 2 hex digits>` for MBR, the
    /// partition's GUID in lowercase for GPT.
    pub fn partuuid(&self, index: u32) -> Option<String> {
        let p = self.partition(index)?;
        match &self.kind {
            TableKind::Mbr { disk_signature } => Some(mbr_partuuid(*disk_signature, index)),
            TableKind::Gpt { .. } => p.guid.map(|g| g.to_string()),
        }
    }

    /// A window onto partition `index` of `disk`: reads, writes and seeks stay inside it.
    pub fn open<T: Seek>(&self, disk: T, index: u32) -> Result<PartitionIo<T>, PartitionError> {
        let p = self
            .partition(index)
            .ok_or(PartitionError::NoSuchPartition { index })?;
        Ok(PartitionIo::new(disk, p.byte_range()))
    }
}

/// `PARTUUID` of MBR partition `index` on a disk with `disk_signature` (`1a2b3c4d-02`).
pub fn mbr_partuuid(disk_signature: u32, index: u32) -> String {
    format!("{disk_signature:08x}-{index:02x}")
}

/// `lba` rounded up to a multiple of `alignment` (e.g. [`RPI_ALIGNMENT_LBA`]); `None` on
/// overflow or a zero alignment.
pub fn align_up(lba: u64, alignment: u64) -> Option<u64> {
    let rem = lba.checked_rem(alignment)?;
    if rem == 0 {
        Some(lba)
    } else {
        lba.checked_add(alignment.checked_sub(rem)?)
    }
}

/// Whole sectors on a disk of `disk_size` bytes.
pub fn disk_sectors(disk_size: u64) -> u64 {
    const SECTOR: u64 = SECTOR_SIZE as u64;
    disk_size / SECTOR
}

fn overlaps(a: &Partition, b: &Partition) -> bool {
    a.start_lba < b.end_lba() && b.start_lba < a.end_lba()
}

/// Reads sector `lba`, which must lie inside the disk.
pub(crate) fn read_sector<R: Read + Seek>(
    disk: &mut R,
    lba: u64,
    disk_size: u64,
) -> Result<[u8; 512], PartitionError> {
    let mut buf = [0u8; 512];
    read_at(disk, lba, &mut buf, disk_size)?;
    Ok(buf)
}

/// Fills `buf` from sector `lba` on; the whole range must lie inside the disk.
pub(crate) fn read_at<R: Read + Seek>(
    disk: &mut R,
    lba: u64,
    buf: &mut [u8],
    disk_size: u64,
) -> Result<(), PartitionError> {
    let offset = lba.checked_mul(u64::from(SECTOR_SIZE));
    let end = offset.and_then(|o| o.checked_add(buf.len() as u64));
    let (Some(offset), Some(end)) = (offset, end) else {
        return Err(PartitionError::Truncated {
            offset: u64::MAX,
            disk_size,
        });
    };
    if end > disk_size {
        return Err(PartitionError::Truncated {
            offset: end,
            disk_size,
        });
    }
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => PartitionError::Truncated {
            offset: end,
            disk_size,
        },
        _ => PartitionError::Io(e),
    })
}

/// Writes `buf` at sector `lba`.
pub(crate) fn write_at<W: Write + Seek>(disk: &mut W, lba: u64, buf: &[u8]) -> Result<(), PartitionError> {
    let offset = lba
        .checked_mul(u64::from(SECTOR_SIZE))
        .ok_or_else(|| PartitionError::invalid("table", "lba", "overflows a byte offset"))?;
    disk.seek(SeekFrom::Start(offset))?;
    disk.write_all(buf)?;
    Ok(())
}

/// A byte range of a disk seen as a device of its own: positions are relative to the
/// range's start, reads stop at its end and writes past it fail. Filesystem readers and
/// writers get one per partition.
#[derive(Debug)]
pub struct PartitionIo<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T> PartitionIo<T> {
    /// The bytes `range` of `inner`.
    pub fn new(inner: T, range: Range<u64>) -> PartitionIo<T> {
        PartitionIo {
            inner,
            start: range.start,
            len: range.end.saturating_sub(range.start),
            pos: 0,
        }
    }

    /// The window's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Bytes left before the end, capped at `want`, and positions `inner` there.
    fn prepare(&mut self, want: usize) -> io::Result<usize>
    where
        T: Seek,
    {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(want);
        if n > 0 {
            let at = self
                .start
                .checked_add(self.pos)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "partition offset overflows"))?;
            self.inner.seek(SeekFrom::Start(at))?;
        }
        Ok(n)
    }
}

impl<T: Read + Seek> Read for PartitionIo<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prepare(buf.len())?;
        let Some(dst) = buf.get_mut(..n) else { return Ok(0) };
        if n == 0 {
            return Ok(0);
        }
        let got = self.inner.read(dst)?;
        self.pos = self.pos.saturating_add(got as u64);
        Ok(got)
    }
}

impl<T: Write + Seek> Write for PartitionIo<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.prepare(buf.len())?;
        let Some(src) = buf.get(..n).filter(|s| !s.is_empty()) else {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("write past the end of the partition ({} bytes)", self.len),
            ));
        };
        let put = self.inner.write(src)?;
        self.pos = self.pos.saturating_add(put as u64);
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for PartitionIo<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )
        })?;
        self.pos = new;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn align_up_rounds_to_the_boundary() {
        assert_eq!(align_up(0, 8192), Some(0));
        assert_eq!(align_up(1, 8192), Some(8192));
        assert_eq!(align_up(8192, 8192), Some(8192));
        assert_eq!(align_up(532_479, 8192), Some(532_480));
        assert_eq!(align_up(5, 0), None);
        assert_eq!(align_up(u64::MAX, 8192), None);
    }

    #[test]
    fn mbr_partuuid_matches_linux() {
        assert_eq!(mbr_partuuid(0x1a2b_3c4d, 2), "1a2b3c4d-02");
        assert_eq!(mbr_partuuid(0xabc, 5), "00000abc-05");
    }

    #[test]
    fn raspberry_pi_layout() {
        let t = PartitionTable::raspberry_pi_mbr(0x1a2b_3c4d, 1_048_576, 4 << 30).unwrap();
        assert_eq!(t.partitions[0].start_lba, 8192);
        assert_eq!(t.partitions[0].partition_type, PartitionType::MBR_FAT32_LBA);
        assert_eq!(t.partitions[1].start_lba, 8192 + 1_048_576);
        assert_eq!(t.partitions[1].end_lba(), (4 << 30) / 512);
        assert_eq!(t.partuuid(2).as_deref(), Some("1a2b3c4d-02"));
        assert!(matches!(
            PartitionTable::raspberry_pi_mbr(1, 8192, 8 << 20),
            Err(PartitionError::DiskTooSmall { .. })
        ));
    }

    #[test]
    fn validate_rejects_overlap_duplicates_and_out_of_range() {
        let mut t = PartitionTable::new_mbr(1);
        t.partitions.push(Partition::mbr(1, 2048, 4096, 0x83, false));
        t.partitions.push(Partition::mbr(2, 4000, 100, 0x83, false));
        let e = t.validate(64 << 20).unwrap_err();
        assert!(e.to_string().contains("overlaps partition 1"), "{e}");
        t.partitions[1].index = 1;
        t.partitions[1].start_lba = 8192;
        let e = t.validate(64 << 20).unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
        t.partitions[1].index = 2;
        t.partitions[1].size_lba = 1 << 20;
        let e = t.validate(64 << 20).unwrap_err();
        assert!(e.to_string().contains("outside the usable sectors"), "{e}");
        t.sector_size = 4096;
        assert!(matches!(
            t.validate(64 << 20),
            Err(PartitionError::UnsupportedSectorSize { sector_size: 4096 })
        ));
    }

    #[test]
    fn partition_io_stays_inside_its_range() {
        let mut disk = Cursor::new((0..=255u8).cycle().take(4096).collect::<Vec<u8>>());
        let mut w = PartitionIo::new(&mut disk, 1024..1536);
        let mut buf = vec![0u8; 1000];
        assert_eq!(w.read(&mut buf).unwrap(), 512);
        assert_eq!(buf[0], 0);
        assert_eq!(w.read(&mut buf).unwrap(), 0);
        w.seek(SeekFrom::End(-2)).unwrap();
        w.write_all(&[7, 7]).unwrap();
        assert!(w.write_all(&[1]).is_err());
        assert!(w.seek(SeekFrom::Current(-1000)).is_err());
        assert_eq!(&disk.get_ref()[1533..1537], &[253, 7, 7, 0]);
    }
}

/// External oracles: `sfdisk` (util-linux) must read what we write exactly as we meant it,
/// we must read what it writes exactly as it reports it, and for the same layout our table
/// sectors must equal its bytes. Images are sparse 64 MiB files in a temp dir.
#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::arithmetic_side_effects)] // spawns the oracle, reads `CI`
mod oracle {
    use super::*;
    use crate::formats::gpt::{EFI_SYSTEM, LINUX_FILESYSTEM, MICROSOFT_BASIC_DATA};
    use serde_json::Value;
    use std::fs::{File, OpenOptions};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    const DISK: u64 = 64 << 20;

    /// Whether `sfdisk` runs; without it the test fails under CI and skips visibly otherwise.
    fn have_sfdisk() -> bool {
        let ok = Command::new("sfdisk")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            crate::oracle::unavailable("`sfdisk` (util-linux's `fdisk` package) is not installed");
        }
        ok
    }

    /// A sparse zeroed image of `size` bytes at `<tempdir>/disk.img` (a name sfdisk
    /// suffixes plainly: `disk.img1`).
    fn sparse(dir: &tempfile::TempDir, name: &str, size: u64) -> PathBuf {
        let path = dir.path().join(name);
        File::create(&path).unwrap().set_len(size).unwrap();
        path
    }

    fn sfdisk_json(path: &Path) -> Value {
        let out = Command::new("sfdisk")
            .arg("--json")
            .arg(path)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sfdisk --json: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["partitiontable"].clone()
    }

    fn sfdisk_verify(path: &Path) {
        let out = Command::new("sfdisk")
            .arg("--verify")
            .arg(path)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("No errors detected"),
            "sfdisk --verify: {text}"
        );
    }

    fn sfdisk_script(path: &Path, script: &str) {
        use std::io::Write as _;
        let mut child = Command::new("sfdisk")
            .arg("--quiet")
            .arg(path)
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sfdisk script: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn write_table(path: &Path, table: &PartitionTable) {
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        table.write(&mut f, DISK).unwrap();
    }

    fn read_table(path: &Path) -> ReadTable {
        let mut f = File::open(path).unwrap();
        let size = f.metadata().unwrap().len();
        PartitionTable::read(&mut f, size).unwrap()
    }

    fn bytes(path: &Path, range: Range<u64>) -> Vec<u8> {
        let mut f = File::open(path).unwrap();
        f.seek(SeekFrom::Start(range.start)).unwrap();
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        f.read_exact(&mut buf).unwrap();
        buf
    }

    /// `sfdisk --json` shows exactly `table`: label, disk ID, and per partition number,
    /// start, size, type, bootable flag, GUID, name and attributes.
    fn assert_sfdisk_shows(json: &Value, table: &PartitionTable) {
        assert_eq!(json["sectorsize"], 512);
        match &table.kind {
            TableKind::Mbr { disk_signature } => {
                assert_eq!(json["label"], "dos");
                assert_eq!(json["id"], format!("0x{disk_signature:08x}"));
            }
            TableKind::Gpt {
                disk_guid,
                first_usable_lba,
                ..
            } => {
                assert_eq!(json["label"], "gpt");
                assert_eq!(json["id"], disk_guid.to_string().to_uppercase());
                assert_eq!(json["firstlba"], *first_usable_lba);
            }
        }
        let parts = json["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), table.partitions.len(), "{json:#}");
        for (j, p) in parts.iter().zip(&table.partitions) {
            let node = j["node"].as_str().unwrap();
            assert_eq!(
                node.rsplit_once("disk.img").unwrap().1,
                p.index.to_string(),
                "{j}"
            );
            assert_eq!(j["start"], p.start_lba, "{j}");
            assert_eq!(j["size"], p.size_lba, "{j}");
            // sfdisk prints MBR types in lowercase hex and GPT types in uppercase.
            let expected_type = match p.partition_type {
                PartitionType::Mbr(b) => format!("{b:x}"),
                PartitionType::Gpt(g) => g.to_string().to_uppercase(),
            };
            assert_eq!(j["type"], expected_type, "{j}");
            match table.kind {
                TableKind::Mbr { .. } => {
                    assert_eq!(j["bootable"].as_bool().unwrap_or(false), p.bootable, "{j}");
                }
                TableKind::Gpt { .. } => {
                    assert_eq!(j["uuid"], p.guid.unwrap().to_string().to_uppercase(), "{j}");
                    assert_eq!(j["name"].as_str().unwrap_or(""), p.name, "{j}");
                    assert_eq!(j["attrs"].as_str().unwrap_or(""), sfdisk_attrs(p), "{j}");
                }
            }
        }
    }

    /// sfdisk's spelling of a GPT partition's attributes.
    fn sfdisk_attrs(p: &Partition) -> String {
        let mut words = Vec::new();
        if p.attributes & 1 != 0 {
            words.push("RequiredPartition".to_owned());
        }
        if p.attributes & 2 != 0 {
            words.push("NoBlockIOProtocol".to_owned());
        }
        if p.bootable {
            words.push("LegacyBIOSBootable".to_owned());
        }
        for bit in 48..64 {
            if p.attributes & (1 << bit) != 0 {
                words.push(format!("GUID:{bit}"));
            }
        }
        words.join(" ")
    }

    fn pi_mbr() -> PartitionTable {
        let mut t = PartitionTable::raspberry_pi_mbr(0x1a2b_3c4d, 102_400, DISK).unwrap();
        t.partitions[0].bootable = true;
        t
    }

    fn pi_gpt() -> PartitionTable {
        let g = |s: &str| s.parse::<Guid>().unwrap();
        let mut t = PartitionTable::new_gpt(g("01234567-89ab-cdef-0123-456789abcdef"));
        let mut boot = Partition::gpt(
            1,
            8192,
            102_400,
            MICROSOFT_BASIC_DATA,
            g("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"),
            "bootfs",
        );
        boot.bootable = true;
        boot.attributes = 1 | (1 << 60);
        t.partitions.push(boot);
        t.partitions.push(Partition::gpt(
            2,
            110_592,
            DISK / 512 - 34 - 110_592 + 1,
            LINUX_FILESYSTEM,
            g("0fc63daf-8483-4772-8e79-3d69d8477de4"),
            "rootfs",
        ));
        t.partitions.push(Partition::gpt(
            4,
            2048,
            4096,
            EFI_SYSTEM,
            g("12345678-9abc-def0-1234-56789abcdef0"),
            "EFI ☃ system",
        ));
        t.partitions.sort_by_key(|p| p.index);
        t
    }

    #[test]
    fn sfdisk_reads_our_mbr() {
        if !have_sfdisk() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = sparse(&dir, "disk.img", DISK);
        let t = pi_mbr();
        write_table(&path, &t);
        assert_sfdisk_shows(&sfdisk_json(&path), &t);
        sfdisk_verify(&path);
    }

    #[test]
    fn sfdisk_reads_our_gpt() {
        if !have_sfdisk() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = sparse(&dir, "disk.img", DISK);
        let t = pi_gpt();
        write_table(&path, &t);
        let json = sfdisk_json(&path);
        assert_sfdisk_shows(&json, &t);
        assert_eq!(json["lastlba"], DISK / 512 - 34);
        sfdisk_verify(&path);
    }

    #[test]
    fn we_read_sfdisk_mbr_and_write_the_same_sector() {
        if !have_sfdisk() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = sparse(&dir, "disk.img", DISK);
        sfdisk_script(
            &theirs,
            "label: dos\nlabel-id: 0x1a2b3c4d\n8192,102400,c,*\n114688,,83\n",
        );
        let read = read_table(&theirs);
        assert!(read.warnings.is_empty());
        assert_eq!(read.table, pi_mbr());
        assert_sfdisk_shows(&sfdisk_json(&theirs), &read.table);
        assert_eq!(read.table.partuuid(2).as_deref(), Some("1a2b3c4d-02"));

        // Our LBA 0 for the same table is sfdisk's, CHS fields included.
        let ours = sparse(&dir, "ours.img", DISK);
        write_table(&ours, &read.table);
        assert_eq!(bytes(&ours, 0..512), bytes(&theirs, 0..512));
        assert_eq!(read_table(&ours).table, read.table);
    }

    #[test]
    fn we_read_sfdisk_logical_partitions() {
        if !have_sfdisk() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = sparse(&dir, "disk.img", DISK);
        sfdisk_script(
            &path,
            "label: dos\nlabel-id: 0x0badcafe\n2048,4096,83\n8192,,E\n10240,10000,L\n22528,20000,b,*\n45056,,S\n",
        );
        let read = read_table(&path);
        assert_sfdisk_shows(&sfdisk_json(&path), &read.table);
        let indexes: Vec<u32> = read.table.partitions.iter().map(|p| p.index).collect();
        assert_eq!(indexes, [1, 2, 5, 6, 7]);
        assert_eq!(read.table.partuuid(6).as_deref(), Some("0badcafe-06"));
    }

    #[test]
    fn we_read_sfdisk_gpt_and_write_the_same_sectors() {
        if !have_sfdisk() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = sparse(&dir, "disk.img", DISK);
        sfdisk_script(
            &theirs,
            "label: gpt\nlabel-id: 01234567-89AB-CDEF-0123-456789ABCDEF\n\
             start=2048, size=4096, type=U, uuid=12345678-9ABC-DEF0-1234-56789ABCDEF0, name=\"EFI ☃ system\"\n\
             start=8192, size=102400, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, \
             uuid=AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE, name=bootfs, attrs=\"RequiredPartition LegacyBIOSBootable GUID:60\"\n\
             start=110592, type=L, uuid=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=rootfs\n",
        );
        let json = sfdisk_json(&theirs);
        let read = read_table(&theirs);
        assert!(read.warnings.is_empty(), "{:?}", read.warnings);
        assert_sfdisk_shows(&json, &read.table);
        assert_eq!(json["lastlba"], DISK / 512 - 34);
        assert_eq!(
            read.table.partuuid(3).as_deref(),
            Some("0fc63daf-8483-4772-8e79-3d69d8477de4")
        );
        assert_eq!(
            read.table.partition(2).map(|p| (p.bootable, p.attributes)),
            Some((true, 1 | 1 << 60))
        );

        // Write what we read: every table sector equals sfdisk's (protective MBR, both
        // headers, both arrays), and reading it back gives the same table.
        let ours = sparse(&dir, "ours.img", DISK);
        write_table(&ours, &read.table);
        let head = 0..34 * 512;
        let tail = DISK - 33 * 512..DISK;
        assert_eq!(bytes(&ours, head.clone()), bytes(&theirs, head));
        assert_eq!(bytes(&ours, tail.clone()), bytes(&theirs, tail));
        assert_eq!(read_table(&ours).table, read.table);
    }

    #[test]
    fn sfdisk_and_we_both_recover_from_a_broken_primary() {
        if !have_sfdisk() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = sparse(&dir, "disk.img", DISK);
        let t = pi_gpt();
        write_table(&path, &t);
        {
            // Scribble over the primary header's DiskGUID.
            let mut f = OpenOptions::new().write(true).open(&path).unwrap();
            f.seek(SeekFrom::Start(512 + 56)).unwrap();
            f.write_all(&[0xFF; 4]).unwrap();
        }
        let read = read_table(&path);
        assert_eq!(read.table, t);
        assert!(matches!(
            read.warnings.as_slice(),
            [ReadWarning::GptPrimaryCorrupt { .. }]
        ));
        assert_sfdisk_shows(&sfdisk_json(&path), &t);
    }

    /// Same table, same bytes; the first and last MiB of each image are pinned.
    #[test]
    fn golden_digests() {
        let dir = tempfile::tempdir().unwrap();
        for (table, first, last) in [
            (
                pi_mbr(),
                "91f30d18049217f236e82fd5b909f3af1a7b680855615443ebf643b28a0725c5",
                "488de202f73bd976de4e7048f4e1f39a776d86d582b7348ff53bf432b987fca8",
            ),
            (
                pi_gpt(),
                "96902985ad01620d67062693f59d1b2f157dbdf66a8dcc5f9980ab6c5803b371",
                "7cff0bc4cada14a21cd61dde555e2342d9904c116f504fd04953045dee9d7e55",
            ),
        ] {
            let a = sparse(&dir, "a.img", DISK);
            let b = sparse(&dir, "b.img", DISK);
            write_table(&a, &table);
            write_table(&b, &table);
            assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            let digest = |r: Range<u64>| blake3::hash(&bytes(&a, r)).to_hex().to_string();
            assert_eq!(digest(0..1 << 20), first, "first MiB of {:?}", table.kind);
            assert_eq!(
                digest(DISK - (1 << 20)..DISK),
                last,
                "last MiB of {:?}",
                table.kind
            );
        }
    }
}

/// Readers take untrusted bytes: random and mutated images give errors, never panics.
#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod proptests {
    use super::*;
    use crate::formats::gpt::{crc32, LINUX_FILESYSTEM, MICROSOFT_BASIC_DATA};
    use proptest::prelude::*;
    use std::io::Cursor;

    /// 256 KiB: room for a GPT, its backup and a few small partitions.
    const DISK: u64 = 256 << 10;

    fn valid(gpt: bool) -> Vec<u8> {
        let mut t = if gpt {
            let mut t = PartitionTable::new_gpt(Guid::from_u128(1));
            t.partitions.push(Partition::gpt(
                1,
                40,
                100,
                MICROSOFT_BASIC_DATA,
                Guid::from_u128(2),
                "boot",
            ));
            t.partitions.push(Partition::gpt(
                2,
                140,
                200,
                LINUX_FILESYSTEM,
                Guid::from_u128(3),
                "root",
            ));
            t
        } else {
            let mut t = PartitionTable::new_mbr(0xdead_beef);
            t.partitions.push(Partition::mbr(1, 8, 100, 0x0C, true));
            t.partitions.push(Partition::mbr(2, 120, 300, 0x83, false));
            t
        };
        t.boot_code[0] = 0xFA;
        let mut disk = Cursor::new(vec![0u8; DISK as usize]);
        t.write(&mut disk, DISK).unwrap();
        disk.into_inner()
    }

    /// Recomputes the primary GPT's CRCs so mutations reach the semantic checks.
    fn fix_primary_crcs(disk: &mut [u8]) {
        let count = u32::from_le_bytes(disk[512 + 80..512 + 84].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(disk[512 + 84..512 + 88].try_into().unwrap()) as usize;
        let lba = u64::from_le_bytes(disk[512 + 72..512 + 80].try_into().unwrap()) as usize;
        let len = count.saturating_mul(size);
        if let Some(array) = lba
            .checked_mul(512)
            .and_then(|s| disk.get(s..s.checked_add(len)?))
        {
            let crc = crc32(array);
            disk[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        }
        let header_size =
            (u32::from_le_bytes(disk[512 + 12..512 + 16].try_into().unwrap()) as usize).min(512);
        disk[512 + 16..512 + 20].fill(0);
        let crc = crc32(&disk[512..512 + header_size]);
        disk[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
    }

    fn read(disk: &[u8], disk_size: u64) -> Result<ReadTable, PartitionError> {
        PartitionTable::read(&mut Cursor::new(disk), disk_size)
    }

    proptest! {
        #[test]
        fn random_sectors_never_panic(
            lba0 in proptest::collection::vec(any::<u8>(), 512),
            rest in proptest::collection::vec(any::<u8>(), 0..4096),
            protective in any::<bool>(),
            disk_size in 0u64..(1 << 20),
        ) {
            let mut disk = lba0;
            disk[510] = 0x55;
            disk[511] = 0xAA;
            if protective {
                disk[0x1BE + 4] = 0xEE;
            }
            disk.extend_from_slice(&rest);
            let _ = read(&disk, disk_size);
            let _ = read(&disk, disk.len() as u64);
        }

        #[test]
        fn mutated_tables_never_panic(
            gpt in any::<bool>(),
            // Offsets into the table areas: LBA 0..34 and the last 33 sectors.
            edits in proptest::collection::vec((0usize..67 * 512, any::<u8>()), 1..16),
            fix_crcs in any::<bool>(),
            shrink in 0u64..DISK,
        ) {
            let mut disk = valid(gpt);
            let tail = disk.len() - 33 * 512;
            for (at, value) in edits {
                let at = if at < 34 * 512 { at } else { tail + at - 34 * 512 };
                disk[at] = value;
            }
            if gpt && fix_crcs {
                fix_primary_crcs(&mut disk);
            }
            if let Ok(t) = read(&disk, DISK) {
                // Whatever was accepted is consistent enough to write again.
                let t = t.table;
                for p in &t.partitions {
                    prop_assert!(p.end_lba() <= DISK / 512);
                }
                let _ = t.write(&mut Cursor::new(Vec::new()), DISK);
            }
            let _ = read(&disk, DISK - shrink);
        }
    }

    /// The fixtures above are what the mutations start from: read → write gives them back.
    #[test]
    fn valid_fixtures_round_trip() {
        for gpt in [false, true] {
            let disk = valid(gpt);
            let t = read(&disk, DISK).unwrap().table;
            let mut again = Cursor::new(vec![0u8; DISK as usize]);
            t.write(&mut again, DISK).unwrap();
            assert!(again.into_inner() == disk, "gpt: {gpt}");
        }
    }
}
