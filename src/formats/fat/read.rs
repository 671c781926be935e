//! The FAT reader: validates the boot sector, loads the active FAT, walks the directory
//! tree into [`Node`]s in walk order and serves file contents by following cluster chains.
//!
//! Reads FAT32, FAT16 and FAT12 (the type follows from the cluster count, fatgen103 §3.5).
//! Every chain is followed at most as far as the volume has clusters, and each cluster may
//! belong to one chain only, so loops and cross-links are reported as corruption instead
//! of hanging or duplicating data. Long names with a wrong checksum or broken sequence
//! are ignored in favour of the short name, as drivers do. `ATTR_HIDDEN`, `ATTR_SYSTEM`
//! and `ATTR_ARCHIVE` are not represented in [`Node`] and are dropped.

// Reading parses untrusted bytes: no unchecked arithmetic (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

use super::bpb::{self, FatType, Geometry, SECTOR};
use super::dir::{self, LongNameCollector, ShortEntry, ENTRY};
use super::{name, time, FatError};
use crate::formats::fs::{ContentId, Contents, Node, NodeKind};

/// What the boot sector and root directory say about the volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatInfo {
    pub fat_type: FatType,
    /// `BS_VolID`, when `BS_BootSig` says it is present.
    pub volume_id: Option<u32>,
    /// The root directory's volume label entry, or else `BS_VolLab` unless it is
    /// `NO NAME`; trailing spaces removed.
    pub label: Option<String>,
    /// `BS_OEMName`, trailing spaces removed.
    pub oem_name: String,
    /// `BPB_HiddSec`.
    pub hidden_sectors: u32,
    pub bytes_per_sector: u32,
    pub sectors_per_cluster: u32,
    /// `CountOfClusters`.
    pub total_clusters: u32,
    /// Data clusters whose FAT entry is 0.
    pub free_clusters: u32,
}

/// Where a file's data is.
#[derive(Clone, Copy, Debug)]
struct Extent {
    first: u32,
    size: u32,
}

/// A FAT volume opened for reading.
pub struct FatFs<'a, R: Read + Seek> {
    img: RefCell<&'a mut R>,
    /// Image offset of the partition.
    base: u64,
    geo: Geometry,
    /// The active FAT, one entry per cluster number (0 ..= clusters + 1).
    fat: Vec<u32>,
    info: FatInfo,
    nodes: Vec<Node>,
    files: BTreeMap<String, Extent>,
    by_id: BTreeMap<ContentId, Extent>,
}

/// The deepest directory nesting read; deeper trees are rejected as unsupported rather
/// than risking the stack on a hostile image.
const MAX_DEPTH: usize = 256;

/// The largest directory (fatgen103 §6: 65 536 entries).
const MAX_DIR_BYTES: u64 = 65_536 * ENTRY as u64;

/// Opens the FAT volume at `partition_offset` in `img`, `len` bytes long, and reads its
/// whole directory tree.
///
/// Nodes come in walk order with paths like `/overlays/vc4-kms-v3d.dtbo`. Directories have
/// mode 0755 and files 0644 (0555/0444 with `ATTR_READ_ONLY`), uid and gid 0, no xattrs,
/// `mtime` from `DIR_WrtDate`/`DIR_WrtTime` read as UTC (1980-01-01 when invalid). File
/// [`ContentId`]s are handles for this `FatFs` as a [`Contents`], not digests.
pub fn read_fat<R: Read + Seek>(
    img: &mut R,
    partition_offset: u64,
    len: u64,
) -> Result<FatFs<'_, R>, FatError> {
    let image_len = img.seek(SeekFrom::End(0))?;
    if partition_offset
        .checked_add(len)
        .is_none_or(|end| end > image_len)
    {
        return Err(FatError::Corrupt {
            offset: partition_offset,
            field: "partition",
            reason: format!(
                "{len} bytes from offset {partition_offset} extend past the {image_len}-byte image"
            ),
        });
    }
    if len < SECTOR as u64 {
        return Err(FatError::Corrupt {
            offset: partition_offset,
            field: "partition",
            reason: format!("{len} bytes cannot hold a boot sector"),
        });
    }
    let mut sector = [0u8; SECTOR];
    img.seek(SeekFrom::Start(partition_offset))?;
    img.read_exact(&mut sector)?;
    let boot = bpb::parse_boot_sector(&sector, partition_offset, len)?;
    let geo = boot.geo.clone();
    let fat = load_fat(img, partition_offset, &geo)?;
    let free_clusters = fat.iter().skip(2).filter(|&&e| e == 0).count() as u32;

    let mut walker = Walker {
        img,
        base: partition_offset,
        geo: &geo,
        fat: &fat,
        claimed: vec![0u64; (fat.len()).div_ceil(64)],
        nodes: Vec::new(),
        files: BTreeMap::new(),
        label: None,
    };
    walker.nodes.push(Node {
        path: "/".to_owned(),
        kind: NodeKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: time::FAT_MIN_UNIX,
        xattrs: BTreeMap::new(),
    });
    let root = match geo.fat_type {
        FatType::Fat32 => DirLoc::Chain(geo.root_cluster),
        FatType::Fat12 | FatType::Fat16 => DirLoc::FixedRoot,
    };
    // Errors about the root directory's chain point at `BPB_RootClus` (FAT32) or the
    // fixed root directory (FAT12/16).
    let root_origin = match root {
        DirLoc::FixedRoot => partition_offset.saturating_add(geo.root_dir_offset()),
        DirLoc::Chain(_) => partition_offset.saturating_add(44),
    };
    walker.walk("", root, root_origin, 0)?;
    let Walker {
        nodes, files, label, ..
    } = walker;

    let trim = |b: &[u8]| String::from_utf8_lossy(b).trim_end_matches(' ').to_owned();
    let label = label.or_else(|| boot.label.filter(|l| l != b"NO NAME    ").map(|l| trim(&l)));
    let info = FatInfo {
        fat_type: geo.fat_type,
        volume_id: boot.volume_id,
        label,
        oem_name: trim(&boot.oem_name),
        hidden_sectors: boot.hidden_sectors,
        bytes_per_sector: geo.bytes_per_sector,
        sectors_per_cluster: geo.sectors_per_cluster,
        total_clusters: geo.clusters,
        free_clusters,
    };
    let by_id = files.values().map(|&e| (content_id(e), e)).collect();
    Ok(FatFs {
        img: RefCell::new(img),
        base: partition_offset,
        geo,
        fat,
        info,
        nodes,
        files,
        by_id,
    })
}

/// The handle a file's [`Node`] carries: `first cluster ‖ size`, little-endian, then zeros.
fn content_id(e: Extent) -> ContentId {
    let mut id = [0u8; 32];
    id[0..4].copy_from_slice(&e.first.to_le_bytes());
    id[4..8].copy_from_slice(&e.size.to_le_bytes());
    ContentId(id)
}

/// Reads the active FAT's entries for clusters 0 ..= clusters + 1.
fn load_fat<R: Read + Seek>(img: &mut R, base: u64, geo: &Geometry) -> Result<Vec<u32>, FatError> {
    // clusters ≤ 0x0FFF_FFF5 (FAT32) or < 65 525: no overflow in u64.
    let count = u64::from(geo.clusters).saturating_add(2);
    let bytes = match geo.fat_type {
        FatType::Fat12 => count.saturating_mul(3).div_ceil(2),
        FatType::Fat16 => count.saturating_mul(2),
        FatType::Fat32 => count.saturating_mul(4),
    };
    // The boot sector check guarantees the FAT holds `count` entries and lies in the
    // partition, which lies in the image: the allocation is bounded by the image size.
    let too_large = || FatError::Unsupported {
        offset: base.saturating_add(geo.fat_offset(geo.active_fat)),
        field: "BPB_FATSz32",
        reason: format!("a FAT of {bytes} bytes does not fit this machine's memory"),
    };
    let mut raw = vec![0u8; usize::try_from(bytes).map_err(|_| too_large())?];
    img.seek(SeekFrom::Start(
        base.saturating_add(geo.fat_offset(geo.active_fat)),
    ))?;
    img.read_exact(&mut raw)?;
    let entries: Vec<u32> = match geo.fat_type {
        // Two 12-bit entries in three bytes: entry 2k is the low 12 bits of bytes
        // 3k..3k+2, entry 2k + 1 the high 12 bits of bytes 3k+1..3k+3.
        FatType::Fat12 => raw
            .chunks(3)
            .flat_map(|t| {
                let (b0, b1, b2) = (t[0], t.get(1).copied(), t.get(2).copied());
                let even = b1.map(|b1| u32::from(u16::from_le_bytes([b0, b1]) & 0x0FFF));
                let odd = b1
                    .zip(b2)
                    .map(|(b1, b2)| u32::from(u16::from_le_bytes([b1, b2]) >> 4));
                even.into_iter().chain(odd)
            })
            .collect(),
        FatType::Fat16 => raw
            .chunks_exact(2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        FatType::Fat32 => raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & bpb::FAT32_MASK)
            .collect(),
    };
    let count = usize::try_from(count).map_err(|_| too_large())?;
    match entries.get(..count) {
        Some(e) => Ok(e.to_vec()),
        None => Err(FatError::Corrupt {
            offset: base.saturating_add(geo.fat_offset(geo.active_fat)),
            field: "BPB_FATSz",
            reason: format!("the FAT holds {} entries, not {count}", entries.len()),
        }),
    }
}

enum DirLoc {
    /// The fixed root directory of FAT12/FAT16.
    FixedRoot,
    /// A directory stored in a cluster chain.
    Chain(u32),
}

/// One entry of a directory as read.
struct Found {
    name: String,
    short: ShortEntry,
    /// Image offset of the short entry.
    offset: u64,
}

struct Walker<'w, R: Read + Seek> {
    img: &'w mut R,
    base: u64,
    geo: &'w Geometry,
    fat: &'w [u32],
    /// One bit per cluster number: already part of a chain.
    claimed: Vec<u64>,
    nodes: Vec<Node>,
    files: BTreeMap<String, Extent>,
    label: Option<String>,
}

impl<R: Read + Seek> Walker<'_, R> {
    fn fat_entry_offset(&self, c: u32) -> u64 {
        // For error messages only; `c` < 2^28, so nothing saturates.
        let c = u64::from(c);
        let within = match self.geo.fat_type {
            FatType::Fat12 => c.saturating_add(c / 2),
            FatType::Fat16 => c.saturating_mul(2),
            FatType::Fat32 => c.saturating_mul(4),
        };
        self.base
            .saturating_add(self.geo.fat_offset(self.geo.active_fat))
            .saturating_add(within)
    }

    /// Marks cluster `c` as used; `false` if it already was.
    fn claim(&mut self, c: u32) -> bool {
        let (word, bit) = ((c / 64) as usize, c % 64);
        match self.claimed.get_mut(word) {
            Some(w) if *w & (1 << bit) == 0 => {
                *w |= 1 << bit;
                true
            }
            _ => false,
        }
    }

    /// Follows the chain from `first` (named by the field at image offset `origin`),
    /// claiming each cluster, until end-of-chain or `limit` clusters.
    /// Returns the clusters and whether the chain ended.
    fn chain(&mut self, first: u32, origin: u64, limit: u64) -> Result<(Vec<u32>, bool), FatError> {
        let mut out = Vec::new();
        let (mut c, mut from, mut field) = (first, origin, "DIR_FstClusLO");
        let eoc = self.geo.fat_type.end_of_chain();
        loop {
            if !self.geo.is_data_cluster(c) {
                return Err(FatError::Corrupt {
                    offset: from,
                    field,
                    reason: format!(
                        "cluster {c:#x} is {} inside a chain",
                        if c == 0 {
                            "free"
                        } else if c == eoc.saturating_sub(1) {
                            "marked bad"
                        } else {
                            "out of range"
                        }
                    ),
                });
            }
            if !self.claim(c) {
                return Err(FatError::Corrupt {
                    offset: from,
                    field,
                    reason: format!("cluster {c} is already part of a chain (a loop or a cross-link)"),
                });
            }
            out.push(c);
            if out.len() as u64 >= limit {
                return Ok((out, false));
            }
            // A data cluster: c ≤ clusters + 1 < fat.len().
            let Some(&next) = self.fat.get(c as usize) else {
                return Err(FatError::Corrupt {
                    offset: from,
                    field,
                    reason: format!("cluster {c} has no FAT entry"),
                });
            };
            if next >= eoc {
                return Ok((out, true));
            }
            (c, from, field) = (next, self.fat_entry_offset(c), "FAT entry");
        }
    }

    /// Reads a directory's raw bytes.
    fn dir_bytes(&mut self, loc: &DirLoc, origin: u64) -> Result<(Vec<u8>, Vec<u64>), FatError> {
        let cs = self.geo.cluster_size();
        match *loc {
            DirLoc::FixedRoot => {
                let off = self.base.saturating_add(self.geo.root_dir_offset());
                // At most 65 535 entries of 32 bytes.
                let mut bytes = vec![0u8; (self.geo.root_entries as usize).saturating_mul(ENTRY)];
                self.img.seek(SeekFrom::Start(off))?;
                self.img.read_exact(&mut bytes)?;
                Ok((bytes, vec![off]))
            }
            DirLoc::Chain(first) => {
                let limit = MAX_DIR_BYTES.div_ceil(cs);
                let (clusters, ended) = self.chain(first, origin, limit.saturating_add(1))?;
                if !ended {
                    return Err(FatError::Corrupt {
                        offset: origin,
                        field: "DIR_FstClusLO",
                        reason: format!("the directory's chain is longer than {MAX_DIR_BYTES} bytes"),
                    });
                }
                // At most MAX_DIR_BYTES plus one cluster (≤ 256 KiB): 2.3 MiB.
                // A cluster is at most 4096 · 128 bytes.
                let cs = cs as usize;
                let mut bytes = vec![0u8; clusters.len().saturating_mul(cs)];
                let mut offsets = Vec::with_capacity(clusters.len());
                for (&c, buf) in clusters.iter().zip(bytes.chunks_exact_mut(cs)) {
                    let off = self.base.saturating_add(self.geo.cluster_offset(c));
                    self.img.seek(SeekFrom::Start(off))?;
                    self.img.read_exact(buf)?;
                    offsets.push(off);
                }
                Ok((bytes, offsets))
            }
        }
    }

    /// Parses a directory into its named entries (no `.`, `..`, labels or deleted ones).
    fn entries(&mut self, loc: &DirLoc, origin: u64, is_root: bool) -> Result<Vec<Found>, FatError> {
        let (bytes, offsets) = self.dir_bytes(loc, origin)?;
        let per_cluster = match loc {
            DirLoc::FixedRoot => bytes.len(),
            DirLoc::Chain(_) => self.geo.cluster_size() as usize,
        };
        // Each entry's image offset: the offset of its cluster (or of the fixed root)
        // plus its place in it.
        let entry_offsets = offsets.iter().flat_map(|&start| {
            (0..per_cluster)
                .step_by(ENTRY)
                .map(move |within| start.saturating_add(within as u64))
        });
        let mut found = Vec::new();
        let mut long = LongNameCollector::default();
        for (chunk, offset) in bytes.chunks_exact(ENTRY).zip(entry_offsets) {
            let mut e = [0u8; ENTRY];
            e.copy_from_slice(chunk);
            match e[0] {
                dir::END_MARK => break,
                dir::DELETED_MARK => {
                    long.reset();
                    continue;
                }
                _ => {}
            }
            let attr = e[11];
            if attr & dir::ATTR_LONG_NAME_MASK == dir::ATTR_LONG_NAME {
                long.push(&e);
                continue;
            }
            let short = ShortEntry::decode(&e);
            if attr & dir::ATTR_VOLUME_ID != 0 {
                long.reset();
                if is_root && self.label.is_none() {
                    let text = String::from_utf8_lossy(&short.name);
                    self.label = Some(text.trim_end_matches(' ').to_owned());
                }
                continue;
            }
            if short.name[0] == b'.' {
                // `.` and `..`: the tree structure is known from the walk itself.
                long.reset();
                continue;
            }
            let corrupt = |field, reason: &str| FatError::Corrupt {
                offset,
                field,
                reason: reason.to_owned(),
            };
            let name = match long.take(&short.name) {
                Ok(Some(name)) => name,
                Ok(None) => name::short_to_string(&short.name, short.nt_res).map_err(|reason| {
                    FatError::Unsupported {
                        offset,
                        field: "DIR_Name",
                        reason: reason.to_owned(),
                    }
                })?,
                Err(reason) => return Err(corrupt("LDIR_Name", reason)),
            };
            if name.contains(['/', '\0']) || name == "." || name == ".." {
                return Err(corrupt(
                    "LDIR_Name",
                    "a long name is `.`/`..` or contains `/` or NUL",
                ));
            }
            found.push(Found { name, short, offset });
        }
        found.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        if let Some(pair) = found.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(FatError::Corrupt {
                offset: pair[1].offset,
                field: "DIR_Name",
                reason: format!("the name `{}` appears twice in one directory", pair[1].name),
            });
        }
        Ok(found)
    }

    /// Appends the nodes below directory `path` (`""` for the root) in walk order;
    /// `origin` is the image offset of the field that points at the directory.
    fn walk(&mut self, path: &str, loc: DirLoc, origin: u64, depth: usize) -> Result<(), FatError> {
        if depth > MAX_DEPTH {
            return Err(FatError::Unsupported {
                offset: origin,
                field: "DIR_FstClusLO",
                reason: format!("directories nested deeper than {MAX_DEPTH} levels"),
            });
        }
        let entries = self.entries(&loc, origin, depth == 0)?;
        for found in entries {
            let child = format!("{path}/{}", found.name);
            let e = &found.short;
            let read_only = e.attr & dir::ATTR_READ_ONLY != 0;
            let mtime = time::from_fat(e.wrt_date, e.wrt_time).unwrap_or(time::FAT_MIN_UNIX);
            let is_dir = e.attr & dir::ATTR_DIRECTORY != 0;
            let kind = if is_dir {
                NodeKind::Dir
            } else {
                let extent = Extent {
                    first: e.first_cluster,
                    size: e.file_size,
                };
                self.check_file(&extent, found.offset)?;
                self.files.insert(child.clone(), extent);
                NodeKind::File {
                    size: u64::from(e.file_size),
                    content: content_id(extent),
                }
            };
            self.nodes.push(Node {
                path: child.clone(),
                kind,
                mode: match (is_dir, read_only) {
                    (true, false) => 0o755,
                    (true, true) => 0o555,
                    (false, false) => 0o644,
                    (false, true) => 0o444,
                },
                uid: 0,
                gid: 0,
                mtime,
                xattrs: BTreeMap::new(),
            });
            if is_dir {
                if e.first_cluster == 0 {
                    return Err(FatError::Corrupt {
                        offset: found.offset.saturating_add(26),
                        field: "DIR_FstClusLO",
                        reason: format!("subdirectory `{child}` has no cluster"),
                    });
                }
                self.walk(
                    &child,
                    DirLoc::Chain(e.first_cluster),
                    found.offset.saturating_add(26),
                    depth.saturating_add(1),
                )?;
            }
        }
        Ok(())
    }

    /// Checks that a file's chain is long enough for its size and claims its clusters.
    /// Clusters past the size are not followed (drivers ignore them too).
    fn check_file(&mut self, extent: &Extent, entry_offset: u64) -> Result<(), FatError> {
        let need = u64::from(extent.size).div_ceil(self.geo.cluster_size());
        if need == 0 {
            return Ok(());
        }
        let origin = entry_offset.saturating_add(26);
        let (clusters, _) = self.chain(extent.first, origin, need)?;
        if (clusters.len() as u64) < need {
            return Err(FatError::Corrupt {
                offset: entry_offset.saturating_add(28),
                field: "DIR_FileSize",
                reason: format!(
                    "{} bytes need {need} clusters, but the chain has {}",
                    extent.size,
                    clusters.len()
                ),
            });
        }
        Ok(())
    }
}

impl<'a, R: Read + Seek> FatFs<'a, R> {
    pub fn info(&self) -> &FatInfo {
        &self.info
    }

    /// Every directory and file, in walk order (`/` first).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A reader of the file at `path` (as in [`FatFs::nodes`]).
    pub fn open(&self, path: &str) -> Result<FatFile<'_, 'a, R>, FatError> {
        let extent = self.files.get(path).ok_or_else(|| FatError::NotFound {
            path: path.to_owned(),
        })?;
        Ok(self.file(*extent))
    }

    fn file(&self, extent: Extent) -> FatFile<'_, 'a, R> {
        FatFile {
            fs: self,
            cluster: extent.first,
            pos: 0,
            size: u64::from(extent.size),
        }
    }
}

impl<R: Read + Seek> Contents for FatFs<'_, R> {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        match self.by_id.get(id) {
            Some(extent) => Ok(Box::new(self.file(*extent))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such file in the FAT volume",
            )),
        }
    }
}

/// The contents of one file, read cluster run by cluster run.
pub struct FatFile<'f, 'a, R: Read + Seek> {
    fs: &'f FatFs<'a, R>,
    /// The cluster holding byte `pos`.
    cluster: u32,
    pos: u64,
    size: u64,
}

impl<R: Read + Seek> Read for FatFile<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let geo = &self.fs.geo;
        let fat = &self.fs.fat;
        // The geometry was validated: a cluster is 512 B ..= 512 KiB, so never 0.
        let cs = std::num::NonZeroU64::new(geo.cluster_size())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "FAT clusters of 0 bytes"))?;
        let in_cluster = self.pos % cs;
        // pos < size (checked above).
        let want = (buf.len() as u64).min(self.size.saturating_sub(self.pos));
        // Read physically consecutive clusters of the chain in one go.
        let mut avail = cs.get().saturating_sub(in_cluster);
        let mut last = self.cluster;
        while avail < want {
            match fat.get(last as usize) {
                Some(&next) if Some(next) == last.checked_add(1) && geo.is_data_cluster(next) => {
                    last = next;
                    avail = avail.saturating_add(cs.get());
                }
                _ => break,
            }
        }
        // ≤ buf.len().
        let n = want.min(avail) as usize;
        if !geo.is_data_cluster(self.cluster) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "FAT chain leaves the volume",
            ));
        }
        {
            let mut img = self
                .fs
                .img
                .try_borrow_mut()
                .map_err(|_| io::Error::other("the FAT image is busy"))?;
            img.seek(SeekFrom::Start(
                self.fs
                    .base
                    .saturating_add(geo.cluster_offset(self.cluster))
                    .saturating_add(in_cluster),
            ))?;
            img.read_exact(&mut buf[..n])?;
        }
        // pos + n ≤ size.
        self.pos = self.pos.saturating_add(n as u64);
        let crossed = in_cluster.saturating_add(n as u64) / cs;
        for _ in 0..crossed {
            if self.pos >= self.size {
                break;
            }
            self.cluster = fat.get(self.cluster as usize).copied().unwrap_or(0);
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;
    use crate::formats::fat::oracle::{noise, tree};
    use crate::formats::fat::{write_fat32, FatOptions};
    use proptest::prelude::*;
    use std::io::Cursor;
    use std::sync::OnceLock;

    const SIZE: u64 = 34 << 20;

    /// A small valid image (directories, long names, multi-cluster files) and the offset
    /// of its data region.
    fn base() -> &'static (Vec<u8>, u64) {
        static IMAGE: OnceLock<(Vec<u8>, u64)> = OnceLock::new();
        IMAGE.get_or_init(|| {
            let (nodes, contents) = tree(&[
                ("/config.txt", Some(b"x=1\n".to_vec()), 0o644),
                ("/kernel8.img", Some(noise(1, 20_000)), 0o644),
                ("/overlays", None, 0o755),
                ("/overlays/a-long-overlay-name.dtbo", Some(noise(2, 1500)), 0o644),
                ("/overlays/B.DTB", Some(noise(3, 600)), 0o444),
                ("/overlays/sub", None, 0o755),
                ("/overlays/sub/deep.txt", Some(noise(4, 700)), 0o644),
            ]);
            let mut img = Cursor::new(Vec::new());
            let report = write_fat32(&mut img, &nodes, &contents, &FatOptions::new(SIZE, 1, "T")).unwrap();
            (img.into_inner(), report.data_offset)
        })
    }

    /// The base image with bytes replaced, without copying 34 MiB per case.
    struct Patched {
        base: &'static [u8],
        patches: BTreeMap<u64, u8>,
        pos: u64,
    }

    impl Read for Patched {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let start = self.pos.min(self.base.len() as u64) as usize;
            let n = buf.len().min(self.base.len() - start);
            buf[..n].copy_from_slice(&self.base[start..start + n]);
            for (&at, &b) in self.patches.range(start as u64..(start + n) as u64) {
                buf[at as usize - start] = b;
            }
            self.pos += n as u64;
            Ok(n)
        }
    }

    impl Seek for Patched {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            let len = self.base.len() as i128;
            let new = match pos {
                SeekFrom::Start(p) => i128::from(p),
                SeekFrom::End(d) => len + i128::from(d),
                SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
            };
            self.pos = u64::try_from(new).map_err(|_| io::Error::other("negative seek"))?;
            Ok(self.pos)
        }
    }

    /// Reads everything the image offers; errors are fine, panics and hangs are bugs.
    fn exercise(img: &mut Patched, len: u64) -> usize {
        match read_fat(img, 0, len) {
            Err(_) => 0,
            Ok(fs) => {
                let mut total = 0;
                let paths: Vec<String> = fs
                    .nodes()
                    .iter()
                    .filter(|n| matches!(n.kind, NodeKind::File { .. }))
                    .map(|n| n.path.clone())
                    .collect();
                for p in paths {
                    let mut bytes = Vec::new();
                    if let Ok(mut f) = fs.open(&p) {
                        let _ = f.read_to_end(&mut bytes);
                    }
                    total += bytes.len();
                }
                total
            }
        }
    }

    #[test]
    fn the_base_image_reads_back() {
        let (bytes, _) = base();
        let mut img = Patched {
            base: bytes,
            patches: BTreeMap::new(),
            pos: 0,
        };
        assert_eq!(exercise(&mut img, SIZE), 4 + 20_000 + 1500 + 600 + 700);
        let fs = read_fat(&mut img, 0, SIZE).unwrap();
        let modes: Vec<(&str, u32)> = fs.nodes().iter().map(|n| (n.path.as_str(), n.mode)).collect();
        assert!(modes.contains(&("/overlays/B.DTB", 0o444)));
        assert!(modes.contains(&("/overlays", 0o755)));
    }

    #[test]
    fn loops_and_cross_links_are_corrupt() {
        let (bytes, data) = base();
        let fat = 32 * 512u64;
        // kernel8.img spans 40 clusters from the first cluster its root entry names (the
        // root directory is cluster 2); point its second cluster back at the first.
        let root = &bytes[*data as usize..*data as usize + 512];
        let entry = root
            .chunks_exact(32)
            .find(|e| &e[..11] == b"KERNEL8 IMG")
            .unwrap();
        let first = u32::from(u16::from_le_bytes([entry[20], entry[21]])) << 16
            | u32::from(u16::from_le_bytes([entry[26], entry[27]]));
        let second = u64::from(first + 1);
        let mut patches = BTreeMap::new();
        for (i, b) in first.to_le_bytes().iter().enumerate() {
            patches.insert(fat + 4 * second + i as u64, *b);
        }
        let mut img = Patched {
            base: bytes,
            patches,
            pos: 0,
        };
        let config = read_fat(&mut img, 0, SIZE);
        match config {
            Err(FatError::Corrupt { field, reason, .. }) => {
                assert_eq!(field, "FAT entry");
                assert!(reason.contains("loop"), "{reason}");
            }
            other => panic!("{:?}", other.map(|f| f.nodes().len())),
        }
        // A chain pointing past the last cluster.
        let mut patches = BTreeMap::new();
        for (i, b) in 0x0FFF_FFF0u32.to_le_bytes().iter().enumerate() {
            patches.insert(fat + 4 * second + i as u64, *b);
        }
        let mut img = Patched {
            base: bytes,
            patches,
            pos: 0,
        };
        assert!(matches!(
            read_fat(&mut img, 0, SIZE),
            Err(FatError::Corrupt { .. })
        ));
    }

    #[test]
    fn partitions_past_the_image_are_corrupt() {
        let (bytes, _) = base();
        let mut img = Patched {
            base: bytes,
            patches: BTreeMap::new(),
            pos: 0,
        };
        assert!(matches!(
            read_fat(&mut img, 512, SIZE),
            Err(FatError::Corrupt {
                field: "partition",
                ..
            })
        ));
        assert!(matches!(
            read_fat(&mut img, 0, 100),
            Err(FatError::Corrupt { .. })
        ));
        assert!(matches!(
            read_fat(&mut img, 0, SIZE - 512),
            Err(FatError::Corrupt {
                field: "BPB_TotSec32",
                ..
            })
        ));
    }

    fn patched(edits: &[(u64, &[u8])]) -> Patched {
        let mut patches = BTreeMap::new();
        for &(at, bytes) in edits {
            for (i, &b) in bytes.iter().enumerate() {
                patches.insert(at + i as u64, b);
            }
        }
        Patched {
            base: &base().0,
            patches,
            pos: 0,
        }
    }

    /// BPB fields at the ends of their ranges: each is an error naming the field, never a
    /// panic, an overflow or a volume read with a wrong geometry.
    #[test]
    fn extreme_bpb_fields_are_corrupt() {
        let cases: &[(&str, u64, &[u8], &str)] = &[
            ("huge FAT", 36, &u32::MAX.to_le_bytes(), "BPB_FATSz"),
            // 65 535 reserved sectors leave too few clusters for FAT32: read as FAT12,
            // which needs a fixed root directory.
            (
                "all sectors reserved",
                14,
                &u16::MAX.to_le_bytes(),
                "BPB_RootEntCnt",
            ),
            ("255 FATs", 16, &[255], "BPB_FATSz"),
            ("no FAT", 16, &[0], "BPB_NumFATs"),
            ("4 GiB sectors", 32, &u32::MAX.to_le_bytes(), "BPB_TotSec32"),
            ("4 KiB sectors", 11, &4096u16.to_le_bytes(), "BPB_TotSec32"),
            ("128 sectors per cluster", 13, &[128], "BPB_RootEntCnt"),
            ("0 sectors per cluster", 13, &[0], "BPB_SecPerClus"),
            (
                "root cluster past the end",
                44,
                &u32::MAX.to_le_bytes(),
                "BPB_RootClus",
            ),
            ("root cluster 0", 44, &0u32.to_le_bytes(), "BPB_RootClus"),
            ("active FAT 15 of 2", 40, &0x008Fu16.to_le_bytes(), "BPB_ExtFlags"),
        ];
        for &(what, at, bytes, field) in cases {
            let mut img = patched(&[(at, bytes)]);
            match read_fat(&mut img, 0, SIZE) {
                Err(FatError::Corrupt { field: f, .. }) => assert_eq!(f, field, "{what}"),
                Err(other) => panic!("{what}: {other}"),
                Ok(_) => panic!("{what}: read as valid"),
            }
        }
    }

    /// Directory entries with extreme values: a 4 GiB - 1 file in a small volume, first
    /// clusters that are reserved or past the end, a subdirectory at 0x0FFFFFFF or 0.
    #[test]
    fn extreme_directory_entries_are_corrupt() {
        let (bytes, data) = base();
        // The root directory is cluster 2, at the start of the data region.
        let root = &bytes[*data as usize..*data as usize + 4096];
        let entry_of = |short: &[u8; 11]| {
            let i = root
                .chunks_exact(ENTRY)
                .position(|e| &e[..11] == short)
                .expect("entry");
            data + (i * ENTRY) as u64
        };
        let kernel = entry_of(b"KERNEL8 IMG");
        let overlays = entry_of(b"OVERLAYS   ");
        let cases: &[(&str, u64, &[u8], &str)] = &[
            (
                "4 GiB - 1 bytes",
                kernel + 28,
                &u32::MAX.to_le_bytes(),
                "DIR_FileSize",
            ),
            (
                "reserved cluster 1",
                kernel + 26,
                &1u16.to_le_bytes(),
                "DIR_FstClusLO",
            ),
            (
                "cluster past the end (high)",
                kernel + 20,
                &0x0FFFu16.to_le_bytes(),
                "DIR_FstClusLO",
            ),
            (
                "directory at 0x0FFFFFFF",
                overlays + 20,
                &0x0FFFu16.to_le_bytes(),
                "DIR_FstClusLO",
            ),
            (
                "directory at cluster 0",
                overlays + 26,
                &0u16.to_le_bytes(),
                "DIR_FstClusLO",
            ),
        ];
        for &(what, at, patch, field) in cases {
            let mut img = patched(&[(at, patch)]);
            match read_fat(&mut img, 0, SIZE) {
                Err(FatError::Corrupt { field: f, .. }) => assert_eq!(f, field, "{what}"),
                Err(other) => panic!("{what}: {other}"),
                Ok(_) => panic!("{what}: read as valid"),
            }
        }
    }

    /// A partition offset near `u64::MAX` cannot wrap around to the start of the image.
    #[test]
    fn partition_offsets_near_the_end_of_u64_are_corrupt() {
        let mut img = patched(&[]);
        for (offset, len) in [(u64::MAX, 1), (u64::MAX - 511, 512), (1, u64::MAX)] {
            assert!(
                matches!(
                    read_fat(&mut img, offset, len),
                    Err(FatError::Corrupt {
                        field: "partition",
                        ..
                    })
                ),
                "{offset} + {len}"
            );
        }
    }

    fn region() -> impl Strategy<Value = u64> {
        let (_, data) = *base();
        prop_oneof![
            0u64..512,                       // boot sector
            (32 * 512u64)..(32 * 512 + 256), // start of the FAT
            data..data + 2048,               // root directory, first files
            data + 20_480..data + 24_576,    // the overlays directories
            0u64..SIZE,                      // anywhere
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn mutated_images_never_panic(patches in prop::collection::btree_map(region(), any::<u8>(), 1..24)) {
            let (bytes, _) = base();
            let mut img = Patched { base: bytes, patches, pos: 0 };
            exercise(&mut img, SIZE);
        }

        #[test]
        fn random_boot_sectors_never_panic(sector in prop::collection::vec(any::<u8>(), 512), len in 0u64..SIZE) {
            let (bytes, _) = base();
            let mut patches: BTreeMap<u64, u8> = sector.into_iter().enumerate().map(|(i, b)| (i as u64, b)).collect();
            // Keep the jump and signature so that the BPB checks are reached.
            patches.insert(0, 0xEB);
            patches.insert(510, 0x55);
            patches.insert(511, 0xAA);
            let mut img = Patched { base: bytes, patches, pos: 0 };
            exercise(&mut img, len);
        }
    }
}
