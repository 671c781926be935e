//! The boot sector with its BIOS Parameter Block (fatgen103 §3), the FAT32 FSInfo sector
//! (§5), and the geometry both imply: where the FATs, the root directory and each cluster
//! are, and whether the volume is FAT12, FAT16 or FAT32 (§3.5: by cluster count only).
//!
//! Boot sector, common part (offset, field):
//! 0 `BS_jmpBoot`[3], 3 `BS_OEMName`[8], 11 `BPB_BytsPerSec` u16, 13 `BPB_SecPerClus` u8,
//! 14 `BPB_RsvdSecCnt` u16, 16 `BPB_NumFATs` u8, 17 `BPB_RootEntCnt` u16,
//! 19 `BPB_TotSec16` u16, 21 `BPB_Media` u8, 22 `BPB_FATSz16` u16, 24 `BPB_SecPerTrk` u16,
//! 26 `BPB_NumHeads` u16, 28 `BPB_HiddSec` u32, 32 `BPB_TotSec32` u32.
//! FAT32 continues: 36 `BPB_FATSz32` u32, 40 `BPB_ExtFlags` u16, 42 `BPB_FSVer` u16,
//! 44 `BPB_RootClus` u32, 48 `BPB_FSInfo` u16, 50 `BPB_BkBootSec` u16, 52 `BPB_Reserved`[12],
//! 64 `BS_DrvNum`, 65 `BS_Reserved1`, 66 `BS_BootSig` (0x29), 67 `BS_VolID` u32,
//! 71 `BS_VolLab`[11], 82 `BS_FilSysType`[8]. FAT12/16 have the `BS_DrvNum`..`BS_FilSysType`
//! block at 36 instead. Bytes 510–511 are 0x55 0xAA.
//!
//! FSInfo: 0 `FSI_LeadSig` 0x41615252, 484 `FSI_StrucSig` 0x61417272, 488
//! `FSI_Free_Count`, 492 `FSI_Nxt_Free`, 508 `FSI_TrailSig` 0xAA550000.
//!
//! Every size here is widened from a u8/u16/u32 field before it is multiplied, and no
//! product of such fields exceeds 2^61, so offsets are computed in `u64` without overflow;
//! the geometry methods still saturate rather than wrap, so no mistake in that bound can
//! panic or alias another offset (a saturated offset lies past the partition and reads
//! fail there).

// Reading parses untrusted bytes: no unchecked arithmetic (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects)]

use super::FatError;

/// Sector size of the volumes we write (fatgen103: the only size all drivers handle).
pub(crate) const SECTOR: usize = 512;
/// `BPB_RsvdSecCnt` we write: 32 is what the spec and every formatter use for FAT32.
pub(crate) const RESERVED_SECTORS: u32 = 32;
pub(crate) const NUM_FATS: u32 = 2;
pub(crate) const FSINFO_SECTOR: u32 = 1;
pub(crate) const BACKUP_BOOT_SECTOR: u32 = 6;
/// The backups of sectors 1 and 2 follow the backup boot sector.
pub(crate) const BACKUP_FSINFO_SECTOR: u32 = 7;
pub(crate) const BACKUP_THIRD_SECTOR: u32 = 8;
/// `BPB_Media` for fixed disks; also the low byte of FAT entry 0.
pub(crate) const MEDIA_FIXED: u8 = 0xF8;
/// Fewer clusters than this make a volume FAT16 (§3.5).
pub(crate) const MIN_FAT32_CLUSTERS: u32 = 65_525;
/// Fewer clusters than this make a volume FAT12 (§3.5).
pub(crate) const MIN_FAT16_CLUSTERS: u32 = 4_085;
/// Cluster numbers end at 0x0FFFFFF6 (0x0FFFFFF7 means bad).
pub(crate) const MAX_FAT32_CLUSTERS: u32 = 0x0FFF_FFF5;
/// FAT32 entries are 28 bits; the top 4 are reserved.
pub(crate) const FAT32_MASK: u32 = 0x0FFF_FFFF;

const FSI_LEAD_SIG: u32 = 0x4161_5252;
const FSI_STRUC_SIG: u32 = 0x6141_7272;
const FSI_TRAIL_SIG: u32 = 0xAA55_0000;

/// Which FAT variant a volume is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

impl FatType {
    /// The smallest FAT entry value that marks the end of a chain.
    pub(crate) fn end_of_chain(self) -> u32 {
        match self {
            FatType::Fat12 => 0xFF8,
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        }
    }
}

/// Where everything is on a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub bytes_per_sector: u32,
    pub sectors_per_cluster: u32,
    pub reserved_sectors: u32,
    pub num_fats: u32,
    pub fat_sectors: u32,
    /// `BPB_RootEntCnt`: entries of the fixed FAT12/16 root directory; 0 on FAT32.
    pub root_entries: u32,
    pub total_sectors: u32,
    /// `CountOfClusters`: data clusters, numbered 2 ..= clusters + 1.
    pub clusters: u32,
    pub fat_type: FatType,
    /// `BPB_RootClus` on FAT32; 0 otherwise.
    pub root_cluster: u32,
    /// The FAT a reader uses (`BPB_ExtFlags` bits 0–3 when mirroring is off).
    pub active_fat: u32,
}

impl Geometry {
    pub(crate) fn cluster_size(&self) -> u64 {
        u64::from(self.bytes_per_sector).saturating_mul(u64::from(self.sectors_per_cluster))
    }

    pub(crate) fn fat_offset(&self, index: u32) -> u64 {
        u64::from(index)
            .saturating_mul(u64::from(self.fat_sectors))
            .saturating_add(u64::from(self.reserved_sectors))
            .saturating_mul(u64::from(self.bytes_per_sector))
    }

    pub(crate) fn fat_bytes(&self) -> u64 {
        u64::from(self.fat_sectors).saturating_mul(u64::from(self.bytes_per_sector))
    }

    fn root_dir_sectors(&self) -> u64 {
        // `bytes_per_sector` is never 0 (512..=4096 when read, 512 when written).
        (u64::from(self.root_entries).saturating_mul(32)).div_ceil(u64::from(self.bytes_per_sector).max(1))
    }

    /// Offset of the fixed FAT12/16 root directory.
    pub(crate) fn root_dir_offset(&self) -> u64 {
        self.fat_offset(self.num_fats)
    }

    fn first_data_sector(&self) -> u64 {
        u64::from(self.num_fats)
            .saturating_mul(u64::from(self.fat_sectors))
            .saturating_add(u64::from(self.reserved_sectors))
            .saturating_add(self.root_dir_sectors())
    }

    /// Offset of cluster `c` (2 ≤ c ≤ clusters + 1; callers check).
    pub(crate) fn cluster_offset(&self, c: u32) -> u64 {
        u64::from(c.saturating_sub(2))
            .saturating_mul(u64::from(self.sectors_per_cluster))
            .saturating_add(self.first_data_sector())
            .saturating_mul(u64::from(self.bytes_per_sector))
    }

    /// Whether `c` names a data cluster.
    pub(crate) fn is_data_cluster(&self, c: u32) -> bool {
        c >= 2 && u64::from(c) <= u64::from(self.clusters).saturating_add(1)
    }

    /// The FAT32 geometry for a partition of `total_sectors` 512-byte sectors: 32 reserved
    /// sectors, 2 FATs each just large enough for the clusters that remain (the smallest
    /// `BPB_FATSz32` with `FATSz32 * 128 ≥ clusters + 2`, found by bisection because the
    /// cluster count shrinks as the FATs grow).
    pub(crate) fn fat32(total_sectors: u32, sectors_per_cluster: std::num::NonZeroU32) -> Geometry {
        // `fat` ≤ total_sectors < 2^32 below, so none of these saturate.
        let spc = std::num::NonZeroU64::from(sectors_per_cluster);
        let clusters_for = |fat: u64| -> u64 {
            let meta = u64::from(NUM_FATS)
                .saturating_mul(fat)
                .saturating_add(u64::from(RESERVED_SECTORS));
            u64::from(total_sectors).saturating_sub(meta) / spc
        };
        let fits = |fat: u64| fat.saturating_mul(SECTOR as u64 / 4) >= clusters_for(fat).saturating_add(2);
        let (mut lo, mut hi) = (1u64, u64::from(total_sectors).max(1));
        while lo < hi {
            // lo < hi, so neither the difference nor the midpoint can overflow.
            let mid = lo.saturating_add(hi.saturating_sub(lo) / 2);
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid.saturating_add(1);
            }
        }
        Geometry {
            bytes_per_sector: SECTOR as u32,
            sectors_per_cluster: sectors_per_cluster.get(),
            reserved_sectors: RESERVED_SECTORS,
            num_fats: NUM_FATS,
            // Both fit u32: lo ≤ total_sectors, and clusters ≤ total_sectors.
            fat_sectors: lo as u32,
            root_entries: 0,
            total_sectors,
            clusters: clusters_for(lo) as u32,
            fat_type: FatType::Fat32,
            root_cluster: 2,
            active_fat: 0,
        }
    }
}

/// `BPB_SecPerClus` for a FAT32 volume of `total_sectors` 512-byte sectors, from the
/// table in fatgen103 §3.5 (`DskTableFAT32`); `None` below 66 600 sectors (32.5 MiB),
/// where FAT32 would have too few clusters.
pub(crate) fn default_sectors_per_cluster(total_sectors: u32) -> Option<u32> {
    match total_sectors {
        0..=66_600 => None,
        66_601..=532_480 => Some(1),         // up to 260 MiB: 512-byte clusters
        532_481..=16_777_216 => Some(8),     // up to 8 GiB: 4 KiB
        16_777_217..=33_554_432 => Some(16), // up to 16 GiB: 8 KiB
        33_554_433..=67_108_864 => Some(32), // up to 32 GiB: 16 KiB
        _ => Some(64),                       // larger: 32 KiB
    }
}

/// What the writer puts in the boot sector besides the geometry.
pub(crate) struct BootFields {
    pub oem_name: [u8; 8],
    pub hidden_sectors: u32,
    pub volume_id: u32,
    pub label: [u8; 11],
}

/// The FAT32 boot sector (also written as the backup at sector 6).
pub(crate) fn encode_boot_sector(geo: &Geometry, f: &BootFields) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    // BS_jmpBoot: a short jump over the BPB to the boot code at 0x5A, then NOP.
    s[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    s[3..11].copy_from_slice(&f.oem_name);
    s[11..13].copy_from_slice(&(geo.bytes_per_sector as u16).to_le_bytes());
    s[13] = geo.sectors_per_cluster as u8;
    s[14..16].copy_from_slice(&(geo.reserved_sectors as u16).to_le_bytes());
    s[16] = geo.num_fats as u8;
    // BPB_RootEntCnt, BPB_TotSec16 and BPB_FATSz16 stay 0 on FAT32.
    s[21] = MEDIA_FIXED;
    // BPB_SecPerTrk / BPB_NumHeads: the usual LBA-translated geometry; nothing reads it
    // on an SD card, but 0 upsets some old tools.
    s[24..26].copy_from_slice(&63u16.to_le_bytes());
    s[26..28].copy_from_slice(&255u16.to_le_bytes());
    s[28..32].copy_from_slice(&f.hidden_sectors.to_le_bytes());
    s[32..36].copy_from_slice(&geo.total_sectors.to_le_bytes());
    s[36..40].copy_from_slice(&geo.fat_sectors.to_le_bytes());
    // BPB_ExtFlags 0: the FATs are mirrored. BPB_FSVer 0.0.
    s[44..48].copy_from_slice(&geo.root_cluster.to_le_bytes());
    s[48..50].copy_from_slice(&(FSINFO_SECTOR as u16).to_le_bytes());
    s[50..52].copy_from_slice(&(BACKUP_BOOT_SECTOR as u16).to_le_bytes());
    s[64] = 0x80; // BS_DrvNum: a hard disk
    s[66] = 0x29; // BS_BootSig: BS_VolID, BS_VolLab and BS_FilSysType follow
    s[67..71].copy_from_slice(&f.volume_id.to_le_bytes());
    s[71..82].copy_from_slice(&f.label);
    s[82..90].copy_from_slice(b"FAT32   ");
    // Boot code: `int 18h` (tell the BIOS there is nothing to boot), then `hlt` forever.
    // A Raspberry Pi never runs it; a PC that tries stops cleanly.
    s[90..95].copy_from_slice(&[0xCD, 0x18, 0xF4, 0xEB, 0xFD]);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// The FSInfo sector with the free cluster count and the next free cluster hint.
pub(crate) fn encode_fsinfo(free_count: u32, next_free: u32) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    s[0..4].copy_from_slice(&FSI_LEAD_SIG.to_le_bytes());
    s[484..488].copy_from_slice(&FSI_STRUC_SIG.to_le_bytes());
    s[488..492].copy_from_slice(&free_count.to_le_bytes());
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&FSI_TRAIL_SIG.to_le_bytes());
    s
}

/// A third boot-region sector that carries only the 0x55AA signature (fatgen103 §3.1:
/// the FAT32 boot record is three sectors, each ending in the signature).
pub(crate) fn encode_boot_sector_2() -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// What a reader learns from the boot sector.
#[derive(Clone, Debug)]
pub(crate) struct ParsedBoot {
    pub geo: Geometry,
    pub oem_name: [u8; 8],
    pub hidden_sectors: u32,
    /// `BS_VolID` and `BS_VolLab` when `BS_BootSig` is 0x29.
    pub volume_id: Option<u32>,
    pub label: Option<[u8; 11]>,
}

// Offsets are constants of the layout above, inside the sector.
fn u16_at(s: &[u8], at: usize) -> u16 {
    let b = &s[at..];
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_at(s: &[u8], at: usize) -> u32 {
    let b = &s[at..];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses and validates the boot sector `s` found at image offset `base` of a partition
/// of `len` bytes. Every error names the field and its image offset.
pub(crate) fn parse_boot_sector(s: &[u8; SECTOR], base: u64, len: u64) -> Result<ParsedBoot, FatError> {
    let corrupt = |at: u64, field: &'static str, reason: String| FatError::Corrupt {
        offset: base.saturating_add(at),
        field,
        reason,
    };
    if !matches!(s[0], 0xEB | 0xE9) {
        return Err(corrupt(
            0,
            "BS_jmpBoot",
            format!(
                "{:#04x} is not a jump instruction: this is not a FAT boot sector",
                s[0]
            ),
        ));
    }
    if s[510] != 0x55 || s[511] != 0xAA {
        return Err(corrupt(
            510,
            "signature",
            "the boot sector does not end in 0x55 0xAA".into(),
        ));
    }
    let bytes_per_sector = u32::from(u16_at(s, 11));
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return Err(corrupt(
            11,
            "BPB_BytsPerSec",
            format!("{bytes_per_sector} is not 512, 1024, 2048 or 4096"),
        ));
    }
    let sectors_per_cluster = u32::from(s[13]);
    if !sectors_per_cluster.is_power_of_two() {
        return Err(corrupt(
            13,
            "BPB_SecPerClus",
            format!("{sectors_per_cluster} is not a power of two"),
        ));
    }
    let reserved_sectors = u32::from(u16_at(s, 14));
    if reserved_sectors == 0 {
        return Err(corrupt(14, "BPB_RsvdSecCnt", "0 reserved sectors".into()));
    }
    let num_fats = u32::from(s[16]);
    if num_fats == 0 {
        return Err(corrupt(16, "BPB_NumFATs", "no FAT".into()));
    }
    let root_entries = u32::from(u16_at(s, 17));
    let total_sectors = match u16_at(s, 19) {
        0 => u32_at(s, 32),
        n => u32::from(n),
    };
    if total_sectors == 0 {
        return Err(corrupt(32, "BPB_TotSec32", "0 sectors".into()));
    }
    // < 2^32 · 2^13: no overflow.
    let volume = u64::from(total_sectors).saturating_mul(u64::from(bytes_per_sector));
    if volume > len {
        return Err(corrupt(
            32,
            "BPB_TotSec32",
            format!("{total_sectors} sectors ({volume} bytes) do not fit the {len}-byte partition"),
        ));
    }
    let fat16 = u32::from(u16_at(s, 22));
    let fat_sectors = if fat16 != 0 { fat16 } else { u32_at(s, 36) };
    if fat_sectors == 0 {
        return Err(corrupt(36, "BPB_FATSz32", "0 sectors per FAT".into()));
    }
    let mut geo = Geometry {
        bytes_per_sector,
        sectors_per_cluster,
        reserved_sectors,
        num_fats,
        fat_sectors,
        root_entries,
        total_sectors,
        clusters: 0,
        fat_type: FatType::Fat32,
        root_cluster: 0,
        active_fat: 0,
    };
    let data_sectors = u64::from(total_sectors)
        .checked_sub(geo.first_data_sector())
        .ok_or_else(|| {
            corrupt(
                22,
                "BPB_FATSz",
                format!(
                    "reserved sectors, {num_fats} FATs of {fat_sectors} sectors and the root \
                     directory need more than the {total_sectors} sectors of the volume"
                ),
            )
        })?;
    // `sectors_per_cluster` is a power of two (never 0), and the quotient is at most
    // `total_sectors`, so it fits u32.
    let clusters = data_sectors
        .checked_div(u64::from(sectors_per_cluster))
        .and_then(|c| u32::try_from(c).ok());
    geo.clusters = clusters.ok_or_else(|| {
        corrupt(
            13,
            "BPB_SecPerClus",
            format!("{sectors_per_cluster} sectors per cluster"),
        )
    })?;
    geo.fat_type = if geo.clusters < MIN_FAT16_CLUSTERS {
        FatType::Fat12
    } else if geo.clusters < MIN_FAT32_CLUSTERS {
        FatType::Fat16
    } else {
        FatType::Fat32
    };
    if geo.clusters == 0 {
        return Err(corrupt(
            13,
            "BPB_SecPerClus",
            "the volume has no data cluster".into(),
        ));
    }
    // Entries of 12, 16 or 32 bits.
    let fat_capacity = match geo.fat_type {
        FatType::Fat12 => geo.fat_bytes().saturating_mul(2) / 3,
        FatType::Fat16 => geo.fat_bytes() / 2,
        FatType::Fat32 => geo.fat_bytes() / 4,
    };
    if fat_capacity < u64::from(geo.clusters).saturating_add(2) {
        return Err(corrupt(
            if fat16 != 0 { 22 } else { 36 },
            "BPB_FATSz",
            format!(
                "a FAT of {fat_sectors} sectors cannot hold {} clusters",
                geo.clusters
            ),
        ));
    }
    let ext_off: usize;
    if geo.fat_type == FatType::Fat32 {
        if root_entries != 0 {
            return Err(corrupt(
                17,
                "BPB_RootEntCnt",
                format!("{root_entries}, but FAT32 has no fixed root directory"),
            ));
        }
        if geo.clusters > MAX_FAT32_CLUSTERS {
            return Err(corrupt(
                13,
                "BPB_SecPerClus",
                format!("{} clusters are more than FAT32 can number", geo.clusters),
            ));
        }
        let version = u16_at(s, 42);
        if version != 0 {
            return Err(FatError::Unsupported {
                offset: base.saturating_add(42),
                field: "BPB_FSVer",
                reason: format!("version {}.{}; only 0.0 exists", version >> 8, version & 0xFF),
            });
        }
        let ext_flags = u16_at(s, 40);
        if ext_flags & 0x80 != 0 {
            geo.active_fat = u32::from(ext_flags & 0x0F);
            if geo.active_fat >= num_fats {
                return Err(corrupt(
                    40,
                    "BPB_ExtFlags",
                    format!("active FAT {} of {num_fats}", geo.active_fat),
                ));
            }
        }
        geo.root_cluster = u32_at(s, 44);
        if !geo.is_data_cluster(geo.root_cluster) {
            return Err(corrupt(
                44,
                "BPB_RootClus",
                format!(
                    "cluster {} is outside 2..={}",
                    geo.root_cluster,
                    u64::from(geo.clusters) + 1
                ),
            ));
        }
        ext_off = 64;
    } else {
        if root_entries == 0 {
            return Err(corrupt(
                17,
                "BPB_RootEntCnt",
                "FAT12/FAT16 need a root directory".into(),
            ));
        }
        if fat16 == 0 {
            return Err(corrupt(
                22,
                "BPB_FATSz16",
                format!("0 on a volume of {} clusters (FAT12/FAT16)", geo.clusters),
            ));
        }
        ext_off = 36;
    }
    let mut oem_name = [0u8; 8];
    oem_name.copy_from_slice(&s[3..11]);
    // The extended boot signature block: `BS_DrvNum`, `BS_Reserved1`, `BS_BootSig`,
    // `BS_VolID` at +3, `BS_VolLab` at +7..+18.
    let ext = &s[ext_off..];
    let (volume_id, label) = if ext[2] == 0x29 {
        let mut label = [0u8; 11];
        label.copy_from_slice(&ext[7..18]);
        (Some(u32_at(ext, 3)), Some(label))
    } else {
        (None, None)
    };
    Ok(ParsedBoot {
        geo,
        oem_name,
        hidden_sectors: u32_at(s, 28),
        volume_id,
        label,
    })
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;

    fn fields() -> BootFields {
        BootFields {
            oem_name: *b"MSWIN4.1",
            hidden_sectors: 8192,
            volume_id: 0x1A2B_3C4D,
            label: *b"bootfs     ",
        }
    }

    #[test]
    fn fat_size_is_minimal() {
        for (sectors, spc) in [(131_072u32, 1u32), (1_048_576, 8), (66_601, 1), (4_000_000, 8)] {
            let g = Geometry::fat32(sectors, std::num::NonZeroU32::new(spc).unwrap());
            assert!(u64::from(g.fat_sectors) * 128 >= u64::from(g.clusters) + 2);
            // One sector less would not hold the clusters that would then exist.
            let meta = 32 + 2 * u64::from(g.fat_sectors - 1);
            let c = (u64::from(sectors) - meta) / u64::from(spc);
            assert!(u64::from(g.fat_sectors - 1) * 128 < c + 2, "{sectors}");
            assert_eq!(
                u64::from(g.clusters),
                (u64::from(sectors) - 32 - 2 * u64::from(g.fat_sectors)) / u64::from(spc)
            );
        }
    }

    #[test]
    fn boot_sector_round_trips() {
        let geo = Geometry::fat32(1_048_576, std::num::NonZeroU32::new(8).unwrap());
        let s = encode_boot_sector(&geo, &fields());
        let p = parse_boot_sector(&s, 0, 512 << 20).unwrap();
        assert_eq!(p.geo, geo);
        assert_eq!(p.hidden_sectors, 8192);
        assert_eq!(p.volume_id, Some(0x1A2B_3C4D));
        assert_eq!(&p.label.unwrap(), b"bootfs     ");
        assert_eq!(&s[82..90], b"FAT32   ");
    }

    #[test]
    fn bad_fields_are_named() {
        let geo = Geometry::fat32(131_072, std::num::NonZeroU32::MIN);
        let good = encode_boot_sector(&geo, &fields());
        let field_of = |edit: &dyn Fn(&mut [u8; SECTOR]), len: u64| {
            let mut s = good;
            edit(&mut s);
            match parse_boot_sector(&s, 1000, len) {
                Err(FatError::Corrupt { field, offset, .. }) => (field, offset),
                Err(FatError::Unsupported { field, offset, .. }) => (field, offset),
                other => panic!("{other:?}"),
            }
        };
        let len = 64 << 20;
        assert_eq!(field_of(&|s| s[11] = 3, len), ("BPB_BytsPerSec", 1011));
        assert_eq!(field_of(&|s| s[13] = 3, len), ("BPB_SecPerClus", 1013));
        assert_eq!(field_of(&|s| s[510] = 0, len), ("signature", 1510));
        assert_eq!(field_of(&|_| (), len - 1), ("BPB_TotSec32", 1032));
        assert_eq!(field_of(&|s| s[44] = 1, len), ("BPB_RootClus", 1044));
        assert_eq!(field_of(&|s| s[42] = 1, len), ("BPB_FSVer", 1042));
        assert_eq!(
            field_of(&|s| s[36..40].copy_from_slice(&[1, 0, 0, 0]), len),
            ("BPB_FATSz", 1036)
        );
        assert_eq!(
            field_of(&|s| s[36..40].copy_from_slice(&[0, 0, 1, 0]), len),
            ("BPB_FATSz", 1022)
        );
    }

    #[test]
    fn sectors_per_cluster_table() {
        assert_eq!(default_sectors_per_cluster(65_536), None);
        assert_eq!(default_sectors_per_cluster(131_072), Some(1));
        assert_eq!(default_sectors_per_cluster(1_048_576), Some(8));
        assert_eq!(default_sectors_per_cluster(u32::MAX), Some(64));
    }
}
