//! The FAT32 writer: plans the whole volume from the node list (names, entry counts,
//! cluster chains placed by [`layout`]), then writes it — boot region, both FATs, then
//! each directory and file into its chain — streaming file contents from [`Contents`].

// Sizes come from trees and options: no unchecked arithmetic (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

use super::bpb::{self, BootFields, Geometry, SECTOR};
use super::dir::{self, ShortEntry, ENTRY};
use super::layout::{self, FatRun};
use super::{name, time, FatError};
use crate::formats::fs::{ContentId, Contents, Node, NodeKind};
use crate::formats::io::read_full;

/// How to lay out the volume. Everything that reaches the image is here or in the nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatOptions {
    /// Size of the partition in bytes (a multiple of 512, at least 33 MiB for FAT32).
    pub size_bytes: u64,
    /// `BS_VolID`, the volume serial number (`1A2B-3C4D`, the `UUID` blkid reports).
    pub volume_id: u32,
    /// `BS_VolLab` and the root directory's volume label entry: up to 11 printable ASCII
    /// characters, none of `" * + , . / : ; < = > ? [ \ ] |`; stored as given (Raspberry
    /// Pi OS uses lower-case `bootfs`). Empty: `NO NAME` in the boot sector and no label
    /// entry, as `mkfs.fat` does.
    pub label: String,
    /// `BPB_HiddSec`: the partition's first LBA on its disk.
    pub hidden_sectors: u32,
    /// `BS_OEMName`, up to 8 printable ASCII characters, padded with spaces.
    /// Default `MSWIN4.1`, the value fatgen103 recommends for compatibility.
    pub oem_name: String,
    /// `BPB_SecPerClus` (a power of two, 1..=64); `None` picks fatgen103's table
    /// by size (512-byte clusters up to 260 MiB, 4 KiB up to 8 GiB, …).
    pub sectors_per_cluster: Option<u8>,
}

impl FatOptions {
    /// Options with no hidden sectors, the default OEM name and cluster size.
    pub fn new(size_bytes: u64, volume_id: u32, label: impl Into<String>) -> FatOptions {
        FatOptions {
            size_bytes,
            volume_id,
            label: label.into(),
            hidden_sectors: 0,
            oem_name: "MSWIN4.1".to_owned(),
            sectors_per_cluster: None,
        }
    }
}

/// What the writer laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatReport {
    pub sectors_per_cluster: u8,
    pub cluster_size: u32,
    /// `BPB_FATSz32`: sectors per FAT.
    pub fat_sectors: u32,
    /// Data clusters on the volume.
    pub total_clusters: u32,
    /// Clusters holding directories and file data.
    pub used_clusters: u32,
    /// `FSI_Free_Count`.
    pub free_clusters: u32,
    /// Offset of cluster 2 from the partition start.
    pub data_offset: u64,
    pub directories: u64,
    pub files: u64,
}

/// Writes a FAT32 volume holding `nodes` (in walk order, `/` first) to `out`, starting at
/// its current position and ending exactly `opts.size_bytes` later.
///
/// `out` must read as zeros wherever nothing is written (a new or sparse file): free
/// clusters and all-zero runs of file data are skipped by seeking. Fails on nodes FAT
/// cannot hold (symlinks, devices, FIFOs, sockets), names it cannot store, and trees
/// that do not fit; if it fails, the output is incomplete and must be discarded.
pub fn write_fat32<W: Write + Seek>(
    out: &mut W,
    nodes: &[Node],
    contents: &dyn Contents,
    opts: &FatOptions,
) -> Result<FatReport, FatError> {
    let (geo, fields) = plan_volume(opts)?;
    let tree = Tree::build(nodes, fields.label != NO_LABEL)?;
    let cs = geo.cluster_size();

    // Clusters needed by each item, then their sum: entries ≤ 65 536 and sizes < 4 GiB
    // (checked in `Tree::build`), so only the sum of many files can grow large, and
    // it saturates rather than wraps, which `NoSpace` then reports.
    let counts: Vec<u64> = tree
        .items
        .iter()
        .map(|item| match &item.kind {
            Kind::Dir { entries, .. } => entries.saturating_mul(ENTRY as u64).max(1).div_ceil(cs),
            Kind::File { size, .. } => size.div_ceil(cs),
        })
        .collect();
    let used = counts.iter().fold(0u64, |sum, &c| sum.saturating_add(c));
    if used > u64::from(geo.clusters) {
        return Err(FatError::NoSpace {
            needed: used.saturating_mul(cs),
            available: u64::from(geo.clusters).saturating_mul(cs),
            size: opts.size_bytes,
        });
    }
    // used ≤ clusters < 2^28, so every cluster number below fits u32 without overflow.
    let overflow = || FatError::Overflow {
        what: "the cluster allocation",
    };
    let used = u32::try_from(used).map_err(|_| overflow())?;
    // The stable layout: where each chain goes depends on the set of paths and sizes.
    let wants: Vec<layout::Want<'_>> = tree
        .items
        .iter()
        .zip(&counts)
        .map(|(item, &clusters)| layout::Want {
            path: &item.node.path,
            clusters,
            dir: matches!(item.kind, Kind::Dir { .. }),
        })
        .collect();
    let chains = layout::allocate(&geo, &wants)?;
    let first_cluster: Vec<u32> = chains.iter().map(|c| c.first().map_or(0, |e| e.first)).collect();
    let runs = layout::fat_runs(&chains, EOC);
    let free = geo.clusters.checked_sub(used).ok_or_else(overflow)?;
    let next_free = layout::first_free(&runs, &geo).unwrap_or(u32::MAX);

    let mut sink = Sink::new(out)?;

    // Boot region: written in full so that no stale bytes survive in reserved sectors.
    let mut reserved = vec![0u8; RESERVED_BYTES];
    let boot = bpb::encode_boot_sector(&geo, &fields);
    let fsinfo = bpb::encode_fsinfo(free, next_free);
    let third = bpb::encode_boot_sector_2();
    for (at, sector) in [
        (0, &boot),
        (bpb::FSINFO_SECTOR, &fsinfo),
        (2, &third),
        (bpb::BACKUP_BOOT_SECTOR, &boot),
        (bpb::BACKUP_FSINFO_SECTOR, &fsinfo),
        (bpb::BACKUP_THIRD_SECTOR, &third),
    ] {
        reserved
            .chunks_exact_mut(SECTOR)
            .nth(at as usize)
            .ok_or(FatError::Overflow {
                what: "the boot region",
            })?
            .copy_from_slice(sector);
    }
    sink.write_at(0, &reserved)?;

    for fat in 0..geo.num_fats {
        write_fat(&mut sink, &geo, fat, &runs)?;
    }

    let mut buf = vec![0u8; COPY_CHUNK];
    for (i, item) in tree.items.iter().enumerate() {
        let spans = chains[i]
            .iter()
            .map(|e| {
                let len = u64::from(e.count).checked_mul(cs).ok_or_else(overflow)?;
                Ok((geo.cluster_offset(e.first), len))
            })
            .collect::<Result<Vec<(u64, u64)>, FatError>>()?;
        match &item.kind {
            Kind::Dir { children, entries } => {
                let bytes = encode_dir(&tree, i, children, *entries, &first_cluster, &fields, cs)?;
                let mut rest: &[u8] = &bytes;
                for &(off, len) in &spans {
                    let n = usize::try_from(len).map_err(|_| overflow())?.min(rest.len());
                    let (now, later) = rest.split_at(n);
                    sink.write_at(off, now)?;
                    rest = later;
                }
            }
            Kind::File { size, content } if *size > 0 => {
                let mut reader = contents.open(content)?;
                copy_file(&mut sink, &spans, &item.node.path, *size, &mut reader, &mut buf)?;
            }
            Kind::File { .. } => {}
        }
    }

    // Give the output its full length even when the last clusters are free.
    if let Some(last) = opts
        .size_bytes
        .checked_sub(1)
        .filter(|_| sink.end < opts.size_bytes)
    {
        sink.write_at(last, &[0])?;
    }
    sink.out.flush()?;

    let directories = tree
        .items
        .iter()
        .filter(|i| matches!(i.kind, Kind::Dir { .. }))
        .count() as u64;
    let files = tree
        .items
        .iter()
        .filter(|i| matches!(i.kind, Kind::File { .. }))
        .count() as u64;
    Ok(FatReport {
        sectors_per_cluster: geo.sectors_per_cluster as u8,
        cluster_size: cs as u32,
        fat_sectors: geo.fat_sectors,
        total_clusters: geo.clusters,
        used_clusters: used,
        free_clusters: free,
        data_offset: geo.cluster_offset(geo.root_cluster),
        directories,
        files,
    })
}

/// The FAT32 end-of-chain mark the writer uses.
const EOC: u32 = 0x0FFF_FFFF;

/// `BS_VolLab` of a volume without a label; it gets no label entry.
const NO_LABEL: [u8; 11] = *b"NO NAME    ";

/// Bytes read from `Contents` at a time; a multiple of every cluster size.
const COPY_CHUNK: usize = 1 << 20;
/// The boot region: `BPB_RsvdSecCnt` sectors (the geometry always uses the constant).
const RESERVED_BYTES: usize = bpb::RESERVED_SECTORS as usize * SECTOR;
/// Granularity of the all-zero test that turns writes into seeks.
const ZERO_BLOCK: usize = 4096;

/// Checks the options and derives the geometry and boot sector fields.
fn plan_volume(opts: &FatOptions) -> Result<(Geometry, BootFields), FatError> {
    let invalid = |field, reason: String| FatError::InvalidOption { field, reason };
    if !opts.size_bytes.is_multiple_of(SECTOR as u64) {
        return Err(invalid(
            "size_bytes",
            format!("{} is not a multiple of 512", opts.size_bytes),
        ));
    }
    let total = u32::try_from(opts.size_bytes / 512).map_err(|_| {
        invalid(
            "size_bytes",
            format!("{} bytes is more than FAT32's 2 TiB", opts.size_bytes),
        )
    })?;
    let spc = match opts.sectors_per_cluster {
        Some(n) if n.is_power_of_two() && n <= 64 => u32::from(n),
        Some(n) => {
            return Err(invalid(
                "sectors_per_cluster",
                format!("{n} is not a power of two from 1 to 64 (clusters of 512 B to 32 KiB)"),
            ))
        }
        None => bpb::default_sectors_per_cluster(total).ok_or_else(|| {
            invalid(
                "size_bytes",
                format!(
                    "{} bytes is too small for FAT32, which needs at least 33 MiB",
                    opts.size_bytes
                ),
            )
        })?,
    };
    // Both arms give a power of two, so never 0.
    let spc = std::num::NonZeroU32::new(spc)
        .ok_or_else(|| invalid("sectors_per_cluster", "0 is not a power of two".into()))?;
    let geo = Geometry::fat32(total, spc);
    if geo.clusters < bpb::MIN_FAT32_CLUSTERS || geo.clusters > bpb::MAX_FAT32_CLUSTERS {
        return Err(invalid(
            "sectors_per_cluster",
            format!(
                "{} bytes in clusters of {} bytes give {} clusters; FAT32 needs {}..={}",
                opts.size_bytes,
                geo.cluster_size(),
                geo.clusters,
                bpb::MIN_FAT32_CLUSTERS,
                bpb::MAX_FAT32_CLUSTERS
            ),
        ));
    }
    let label = if opts.label.is_empty() {
        NO_LABEL
    } else {
        const FORBIDDEN: &[u8] = b"\"*+,./:;<=>?[\\]|";
        let bytes = opts.label.as_bytes();
        if bytes.len() > 11
            || bytes
                .iter()
                .any(|b| !(0x20..0x7F).contains(b) || FORBIDDEN.contains(b))
            || bytes[0] == b' '
        {
            return Err(invalid(
                "label",
                format!(
                    "`{}` is not up to 11 printable ASCII characters without \
                     `\" * + , . / : ; < = > ? [ \\ ] |` or a leading space",
                    opts.label
                ),
            ));
        }
        let mut label = [b' '; 11];
        label[..bytes.len()].copy_from_slice(bytes);
        label
    };
    let oem = opts.oem_name.as_bytes();
    if oem.len() > 8 || oem.iter().any(|b| !(0x20..0x7F).contains(b)) {
        return Err(invalid(
            "oem_name",
            format!("`{}` is not up to 8 printable ASCII characters", opts.oem_name),
        ));
    }
    let mut oem_name = [b' '; 8];
    oem_name[..oem.len()].copy_from_slice(oem);
    Ok((
        geo,
        BootFields {
            oem_name,
            hidden_sectors: opts.hidden_sectors,
            volume_id: opts.volume_id,
            label,
        },
    ))
}

/// One node as the writer sees it.
struct Item<'a> {
    node: &'a Node,
    /// Index of the parent directory; the root is its own parent.
    parent: usize,
    kind: Kind,
}

enum Kind {
    /// Children in name-byte order with their short names and long names, and the
    /// number of 32-byte entries the directory needs.
    Dir {
        children: Vec<Child>,
        entries: u64,
    },
    File {
        size: u64,
        content: ContentId,
    },
}

struct Child {
    item: usize,
    short: [u8; 11],
    /// UTF-16 long name, when the name is not a plain 8.3 name.
    long: Option<Vec<u16>>,
}

struct Tree<'a> {
    items: Vec<Item<'a>>,
}

/// The largest number of entries in one directory (fatgen103 §6: 2^16 × 32 bytes).
const MAX_DIR_ENTRIES: u64 = 65_536;

impl<'a> Tree<'a> {
    /// Validates the node list and works out every directory's names and size.
    fn build(nodes: &'a [Node], has_label: bool) -> Result<Tree<'a>, FatError> {
        let tree_err = |path: &str, reason: String| FatError::InvalidTree {
            path: path.to_owned(),
            reason,
        };
        let root = nodes
            .first()
            .ok_or_else(|| tree_err("/", "the node list is empty; it must start with `/`".into()))?;
        if root.path != "/" || root.kind != NodeKind::Dir {
            return Err(tree_err(
                &root.path,
                "the first node must be the directory `/`".into(),
            ));
        }
        let mut items: Vec<Item<'a>> = Vec::with_capacity(nodes.len());
        let mut by_path: BTreeMap<&'a str, usize> = BTreeMap::new();
        // Names of each directory's children, by directory index.
        let mut names: BTreeMap<usize, Vec<(&'a str, usize)>> = BTreeMap::new();
        for node in nodes {
            let path = node.path.as_str();
            let (parent, child_name) = if items.is_empty() {
                (0, "")
            } else {
                let (dir, base) = path
                    .rsplit_once('/')
                    .filter(|(dir, base)| (dir.is_empty() || dir.starts_with('/')) && !base.is_empty())
                    .ok_or_else(|| tree_err(path, "not an absolute, normalised path".into()))?;
                let dir = if dir.is_empty() { "/" } else { dir };
                let parent = *by_path
                    .get(dir)
                    .ok_or_else(|| tree_err(path, format!("its directory `{dir}` does not precede it")))?;
                if !matches!(items[parent].kind, Kind::Dir { .. }) {
                    return Err(tree_err(path, format!("its parent `{dir}` is not a directory")));
                }
                (parent, base)
            };
            let unsupported = |what| FatError::UnsupportedNode {
                path: path.to_owned(),
                what,
            };
            let kind = match &node.kind {
                NodeKind::Dir => Kind::Dir {
                    children: Vec::new(),
                    entries: 0,
                },
                NodeKind::File { size, content } => Kind::File {
                    size: *size,
                    content: *content,
                },
                NodeKind::HardLink { target } => {
                    // FAT has no hard links: the link becomes a copy of its target.
                    match by_path.get(target.as_str()).map(|&t| &items[t].kind) {
                        Some(Kind::File { size, content }) => Kind::File {
                            size: *size,
                            content: *content,
                        },
                        _ => {
                            return Err(tree_err(
                                path,
                                format!("hard link target `{target}` is not an earlier regular file"),
                            ))
                        }
                    }
                }
                NodeKind::Symlink { .. } => return Err(unsupported("symbolic link")),
                NodeKind::CharDev { .. } => return Err(unsupported("character device")),
                NodeKind::BlockDev { .. } => return Err(unsupported("block device")),
                NodeKind::Fifo => return Err(unsupported("FIFO")),
                NodeKind::Socket => return Err(unsupported("socket")),
            };
            if let Kind::File { size, .. } = kind {
                if size > u64::from(u32::MAX) {
                    return Err(FatError::FileTooLarge {
                        path: path.to_owned(),
                        size,
                    });
                }
            }
            let index = items.len();
            if by_path.insert(path, index).is_some() {
                return Err(tree_err(path, "appears twice".into()));
            }
            if index > 0 {
                names.entry(parent).or_default().push((child_name, index));
            }
            items.push(Item { node, parent, kind });
        }

        for (dir, mut kids) in names {
            kids.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let mut used: BTreeSet<[u8; 11]> = BTreeSet::new();
            let mut shorts: Vec<Option<[u8; 11]>> = Vec::with_capacity(kids.len());
            // Exact 8.3 names first: they are fixed, generated names must avoid them.
            for (child_name, _) in &kids {
                let exact = name::exact_short(child_name);
                if let Some(short) = exact {
                    used.insert(short);
                }
                shorts.push(exact);
            }
            let mut children = Vec::with_capacity(kids.len());
            // The root holds the volume label entry; the others `.` and `..`.
            let mut entries: u64 = if dir == 0 { u64::from(has_label) } else { 2 };
            for ((child_name, item), exact) in kids.iter().zip(shorts) {
                let path = &items[*item].node.path;
                let units = name::long_units(child_name).map_err(|reason| FatError::InvalidName {
                    path: path.clone(),
                    reason,
                })?;
                let (short, long) = match exact {
                    Some(short) => (short, None),
                    None => {
                        let short =
                            name::generate_short(child_name, &mut used).ok_or(FatError::InvalidName {
                                path: path.clone(),
                                reason: "every `~N` short name is taken",
                            })?;
                        (short, Some(units))
                    }
                };
                // A long name is at most 255 units: 20 entries, plus the short one.
                let long_entries = long
                    .as_ref()
                    .map_or(0, |u| u.len().div_ceil(name::UNITS_PER_ENTRY) as u64);
                entries = entries.saturating_add(long_entries).saturating_add(1);
                children.push(Child {
                    item: *item,
                    short,
                    long,
                });
            }
            if entries > MAX_DIR_ENTRIES {
                return Err(FatError::DirectoryTooLarge {
                    path: items[dir].node.path.clone(),
                    entries,
                });
            }
            items[dir].kind = Kind::Dir { children, entries };
        }
        // Directories without children still hold `.` and `..`, or the label.
        for (i, item) in items.iter_mut().enumerate() {
            if let Kind::Dir { children, entries } = &mut item.kind {
                if children.is_empty() {
                    *entries = if i == 0 { u64::from(has_label) } else { 2 };
                }
            }
        }
        Ok(Tree { items })
    }
}

/// The attribute byte for a node: read-only when no write bit is set.
fn attributes(node: &Node, base: u8) -> u8 {
    if node.mode & 0o222 == 0 {
        base | dir::ATTR_READ_ONLY
    } else {
        base
    }
}

fn short_entry(
    name: [u8; 11],
    attr: u8,
    first_cluster: u32,
    size: u32,
    mtime: i64,
) -> Result<ShortEntry, FatError> {
    let (date, time) = time::to_fat(mtime).ok_or(FatError::Overflow {
        what: "a FAT timestamp",
    })?;
    Ok(ShortEntry {
        name,
        attr,
        nt_res: 0,
        crt_time_tenth: 0,
        crt_time: time,
        crt_date: date,
        lst_acc_date: date,
        first_cluster,
        wrt_time: time,
        wrt_date: date,
        file_size: size,
    })
}

/// The full clusters of directory `i`: label or dot entries, then the children.
fn encode_dir(
    tree: &Tree<'_>,
    i: usize,
    children: &[Child],
    entries: u64,
    first_cluster: &[u32],
    fields: &BootFields,
    cs: u64,
) -> Result<Vec<u8>, FatError> {
    let overflow = || FatError::Overflow {
        what: "a directory's size",
    };
    let item = &tree.items[i];
    // `entries` ≤ 65536 (checked in `Tree::build`), so this is at most 2 MiB.
    let bytes = entries.checked_mul(ENTRY as u64).ok_or_else(overflow)?;
    let capacity = bytes.div_ceil(cs).max(1).checked_mul(cs).ok_or_else(overflow)?;
    let mut out: Vec<u8> = Vec::with_capacity(usize::try_from(capacity).map_err(|_| overflow())?);
    let mtime = item.node.mtime;
    if i == 0 {
        if fields.label != NO_LABEL {
            out.extend_from_slice(&short_entry(fields.label, dir::ATTR_VOLUME_ID, 0, 0, mtime)?.encode());
        }
    } else {
        let attr = attributes(item.node, dir::ATTR_DIRECTORY);
        out.extend_from_slice(&short_entry(*b".          ", attr, first_cluster[i], 0, mtime)?.encode());
        // `..` names the root as cluster 0 (fatgen103 §6.7).
        let parent = if item.parent == 0 {
            0
        } else {
            first_cluster[item.parent]
        };
        out.extend_from_slice(&short_entry(*b"..         ", attr, parent, 0, mtime)?.encode());
    }
    for child in children {
        if let Some(units) = &child.long {
            for e in dir::long_entries(units, name::checksum(&child.short)) {
                out.extend_from_slice(&e);
            }
        }
        let c = &tree.items[child.item];
        let entry = match c.kind {
            Kind::Dir { .. } => short_entry(
                child.short,
                attributes(c.node, dir::ATTR_DIRECTORY),
                first_cluster[child.item],
                0,
                c.node.mtime,
            )?,
            // Checked ≤ u32::MAX in `Tree::build`.
            Kind::File { size, .. } => short_entry(
                child.short,
                attributes(c.node, dir::ATTR_ARCHIVE),
                first_cluster[child.item],
                u32::try_from(size).map_err(|_| FatError::FileTooLarge {
                    path: c.node.path.clone(),
                    size,
                })?,
                c.node.mtime,
            )?,
        };
        out.extend_from_slice(&entry.encode());
    }
    let full = (out.len() as u64)
        .div_ceil(cs)
        .max(1)
        .checked_mul(cs)
        .ok_or_else(overflow)?;
    out.resize(usize::try_from(full).map_err(|_| overflow())?, 0);
    Ok(out)
}

/// Writes FAT number `index`: entries 0 and 1 (media byte, clean-shutdown bits), the
/// chains of `runs` (sorted by cluster; each cluster points at the next, the last of a run
/// at the run's `next`), and free (0) entries everywhere else, to the end of the FAT's
/// sectors.
fn write_fat<W: Write + Seek>(
    sink: &mut Sink<'_, W>,
    geo: &Geometry,
    index: u32,
    runs: &[FatRun],
) -> Result<(), FatError> {
    let overflow = || FatError::Overflow { what: "a FAT" };
    let start = geo.fat_offset(index);
    let total = geo.fat_bytes();
    // Bytes of this FAT written so far; ≤ its size, so start + written stays in the volume.
    let mut written = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK);
    let mut push = |sink: &mut Sink<'_, W>, value: u32| -> Result<(), FatError> {
        buf.extend_from_slice(&value.to_le_bytes());
        if buf.len() >= COPY_CHUNK {
            sink.write_at(start.checked_add(written).ok_or_else(overflow)?, &buf)?;
            written = written.checked_add(buf.len() as u64).ok_or_else(overflow)?;
            buf.clear();
        }
        Ok(())
    };
    push(sink, 0x0FFF_FF00 | u32::from(bpb::MEDIA_FIXED))?;
    push(sink, EOC)?;
    // The next cluster whose entry is due.
    let mut at = 2u32;
    for run in runs {
        // Runs fit the volume and do not overlap, so first + count ≤ clusters + 2 < 2^28.
        let end = run.first.checked_add(run.count).ok_or_else(overflow)?;
        if run.first < at || run.count == 0 {
            return Err(overflow());
        }
        for _ in at..run.first {
            push(sink, 0)?;
        }
        for c in run.first..end {
            let next = c.checked_add(1).ok_or_else(overflow)?;
            push(sink, if next == end { run.next } else { next })?;
        }
        at = end;
    }
    sink.write_at(start.checked_add(written).ok_or_else(overflow)?, &buf)?;
    written = written.checked_add(buf.len() as u64).ok_or_else(overflow)?;
    let zeros = vec![0u8; COPY_CHUNK];
    loop {
        let left = total.saturating_sub(written);
        if left == 0 {
            break;
        }
        // ≤ COPY_CHUNK.
        let n = left.min(COPY_CHUNK as u64) as usize;
        sink.write_at(start.checked_add(written).ok_or_else(overflow)?, &zeros[..n])?;
        written = written.checked_add(n as u64).ok_or_else(overflow)?;
    }
    Ok(())
}

/// Copies exactly `size` bytes of a file into `spans` (offset, length) in order, seeking
/// over all-zero blocks.
fn copy_file<W: Write + Seek>(
    sink: &mut Sink<'_, W>,
    spans: &[(u64, u64)],
    path: &str,
    size: u64,
    reader: &mut dyn Read,
    buf: &mut [u8],
) -> Result<(), FatError> {
    let overflow = || FatError::Overflow {
        what: "a file's offset",
    };
    // Bytes copied so far: `done` ≤ `size` < 4 GiB.
    let mut done = 0u64;
    for &(off, len) in spans {
        // Bytes of this span copied so far.
        let mut within_span = 0u64;
        loop {
            let left = size.saturating_sub(done).min(len.saturating_sub(within_span));
            if left == 0 {
                break;
            }
            // ≤ buf.len().
            let want = left.min(buf.len() as u64) as usize;
            let n = read_full(reader, &mut buf[..want])?;
            if n < want {
                return Err(FatError::ContentTooShort {
                    path: path.to_owned(),
                    expected: size,
                    actual: done.saturating_add(n as u64),
                });
            }
            let at = off.checked_add(within_span).ok_or_else(overflow)?;
            // Write the runs of `ZERO_BLOCK`-sized blocks that are not all zero; seek over
            // the others.
            let mut run: Option<(usize, usize)> = None;
            let mut within = 0usize;
            for block in buf[..n].chunks(ZERO_BLOCK) {
                let end = within.saturating_add(block.len());
                if block.iter().all(|&b| b == 0) {
                    if let Some((from, to)) = run.take() {
                        sink.write_at(at.saturating_add(from as u64), &buf[from..to])?;
                    }
                } else {
                    run = Some((run.map_or(within, |(from, _)| from), end));
                }
                within = end;
            }
            if let Some((from, to)) = run {
                sink.write_at(at.saturating_add(from as u64), &buf[from..to])?;
            }
            done = done.saturating_add(n as u64);
            within_span = within_span.saturating_add(n as u64);
        }
    }
    if done < size {
        return Err(overflow());
    }
    let mut extra = [0u8; 1];
    if read_full(reader, &mut extra)? > 0 {
        return Err(FatError::ContentTooLong {
            path: path.to_owned(),
            expected: size,
        });
    }
    Ok(())
}

/// Positioned writes relative to where the output stood when writing began, seeking only
/// when the next write is not where the last one ended.
struct Sink<'w, W: Write + Seek> {
    out: &'w mut W,
    base: u64,
    pos: u64,
    /// The furthest byte written, relative to `base`.
    end: u64,
}

impl<'w, W: Write + Seek> Sink<'w, W> {
    fn new(out: &'w mut W) -> io::Result<Sink<'w, W>> {
        let base = out.stream_position()?;
        Ok(Sink {
            out,
            base,
            pos: 0,
            end: 0,
        })
    }

    fn write_at(&mut self, off: u64, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let overflow = || io::Error::new(io::ErrorKind::InvalidInput, "a FAT write offset overflows");
        let end = off.checked_add(bytes.len() as u64).ok_or_else(overflow)?;
        if off != self.pos {
            self.out
                .seek(SeekFrom::Start(self.base.checked_add(off).ok_or_else(overflow)?))?;
        }
        self.out.write_all(bytes)?;
        self.pos = end;
        self.end = self.end.max(self.pos);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;
    use crate::formats::fat::oracle::{noise, tree};
    use crate::formats::fat::read_fat;
    use crate::formats::fs::MemContents;
    use std::io::Cursor;

    /// Discards everything: for tests that only look at errors and reports.
    struct Null(u64);
    impl Write for Null {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Null {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            if let SeekFrom::Start(p) = pos {
                self.0 = p;
            }
            Ok(self.0)
        }
    }

    const SMALL: u64 = 34 << 20;

    fn opts() -> FatOptions {
        FatOptions::new(SMALL, 7, "BOOT")
    }

    fn write(nodes: &[Node], contents: &MemContents, opts: &FatOptions) -> Result<FatReport, FatError> {
        write_fat32(&mut Null(0), nodes, contents, opts)
    }

    #[test]
    fn nodes_fat_cannot_hold_are_named() {
        for (kind, what) in [
            (NodeKind::Symlink { target: "x".into() }, "symbolic link"),
            (NodeKind::CharDev { major: 1, minor: 3 }, "character device"),
            (NodeKind::BlockDev { major: 8, minor: 0 }, "block device"),
            (NodeKind::Fifo, "FIFO"),
            (NodeKind::Socket, "socket"),
        ] {
            let (mut nodes, contents) = tree(&[("/d", None, 0o755)]);
            let mut odd = nodes[1].clone();
            odd.path = "/d/odd".into();
            odd.kind = kind;
            nodes.push(odd);
            match write(&nodes, &contents, &opts()) {
                Err(FatError::UnsupportedNode { path, what: w }) => {
                    assert_eq!((path.as_str(), w), ("/d/odd", what));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn hard_links_become_copies() {
        let (mut nodes, contents) = tree(&[("/a.bin", Some(noise(1, 5000)), 0o644)]);
        let mut link = nodes[1].clone();
        link.path = "/b.bin".into();
        link.kind = NodeKind::HardLink {
            target: "/a.bin".into(),
        };
        nodes.push(link);
        let mut img = Cursor::new(Vec::new());
        let report = write_fat32(&mut img, &nodes, &contents, &opts()).unwrap();
        // Root (1 cluster) + two copies of 5000 bytes (10 clusters each).
        assert_eq!(report.used_clusters, 21);
        let len = img.get_ref().len() as u64;
        assert_eq!(len, SMALL);
        let fs = read_fat(&mut img, 0, len).unwrap();
        let mut a = Vec::new();
        let mut b = Vec::new();
        fs.open("/a.bin").unwrap().read_to_end(&mut a).unwrap();
        fs.open("/b.bin").unwrap().read_to_end(&mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, noise(1, 5000));
    }

    #[test]
    fn too_much_content_is_an_error_with_sizes() {
        let (nodes, contents) = tree(&[("/big", Some(noise(2, 40 << 20)), 0o644)]);
        match write(&nodes, &contents, &opts()) {
            Err(FatError::NoSpace {
                needed,
                available,
                size,
            }) => {
                assert_eq!(size, SMALL);
                assert!(needed > available, "{needed} {available}");
                assert_eq!(needed, (40 << 20) + 512);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_must_match_the_declared_size() {
        let (mut nodes, contents) = tree(&[("/f", Some(b"abc".to_vec()), 0o644)]);
        let NodeKind::File { content, .. } = nodes[1].kind else {
            unreachable!()
        };
        nodes[1].kind = NodeKind::File { size: 4, content };
        assert!(matches!(
            write(&nodes, &contents, &opts()),
            Err(FatError::ContentTooShort {
                expected: 4,
                actual: 3,
                ..
            })
        ));
        nodes[1].kind = NodeKind::File { size: 2, content };
        assert!(matches!(
            write(&nodes, &contents, &opts()),
            Err(FatError::ContentTooLong { expected: 2, .. })
        ));
    }

    #[test]
    fn bad_trees_and_names_are_rejected() {
        let (nodes, contents) = tree(&[("/d", None, 0o755), ("/d/f", Some(vec![1]), 0o644)]);
        // Child before parent.
        let swapped = vec![nodes[0].clone(), nodes[2].clone(), nodes[1].clone()];
        assert!(matches!(
            write(&swapped, &contents, &opts()),
            Err(FatError::InvalidTree { .. })
        ));
        // No root.
        assert!(matches!(
            write(&nodes[1..], &contents, &opts()),
            Err(FatError::InvalidTree { .. })
        ));
        // A file as a parent.
        let (mut nodes2, contents2) = tree(&[("/f", Some(vec![1]), 0o644)]);
        let mut under = nodes2[1].clone();
        under.path = "/f/g".into();
        nodes2.push(under);
        assert!(matches!(
            write(&nodes2, &contents2, &opts()),
            Err(FatError::InvalidTree { .. })
        ));
        for bad in ["/a:b", "/trailing.", "/q?"] {
            let (nodes, contents) = tree(&[(bad, Some(vec![1]), 0o644)]);
            match write(&nodes, &contents, &opts()) {
                Err(FatError::InvalidName { path, .. }) => assert_eq!(path, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn options_are_checked() {
        let (nodes, contents) = tree(&[]);
        let check = |o: FatOptions, field: &str| match write(&nodes, &contents, &o) {
            Err(FatError::InvalidOption { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{other:?}"),
        };
        check(FatOptions::new(SMALL + 1, 0, "X"), "size_bytes");
        check(FatOptions::new(16 << 20, 0, "X"), "size_bytes");
        check(FatOptions::new(SMALL, 0, "TWELVE CHARS"), "label");
        check(FatOptions::new(SMALL, 0, "A.B"), "label");
        check(
            FatOptions {
                sectors_per_cluster: Some(3),
                ..opts()
            },
            "sectors_per_cluster",
        );
        // 34 MiB in 1 KiB clusters is too few clusters for FAT32.
        check(
            FatOptions {
                sectors_per_cluster: Some(2),
                ..opts()
            },
            "sectors_per_cluster",
        );
        check(
            FatOptions {
                oem_name: "NINE CHAR".into(),
                ..opts()
            },
            "oem_name",
        );
    }

    #[test]
    fn label_entry_and_dot_entries() {
        let (nodes, contents) = tree(&[("/SUB", None, 0o755), ("/SUB/INNER", None, 0o755)]);
        let mut img = Cursor::new(Vec::new());
        let report = write_fat32(&mut img, &nodes, &contents, &opts()).unwrap();
        let bytes = img.into_inner();
        let root = report.data_offset as usize;
        assert_eq!(&bytes[root..root + 11], b"BOOT       ");
        assert_eq!(bytes[root + 11], dir::ATTR_VOLUME_ID);
        assert_eq!(&bytes[root + 32..root + 43], b"SUB        ");
        let cluster_at = |entry: usize| {
            u32::from(u16::from_le_bytes([bytes[entry + 20], bytes[entry + 21]])) << 16
                | u32::from(u16::from_le_bytes([bytes[entry + 26], bytes[entry + 27]]))
        };
        // 512-byte clusters; the layout puts /SUB and /SUB/INNER where it likes.
        let at = |c: u32| root + (c as usize - 2) * 512;
        let sub_cluster = cluster_at(root + 32);
        let sub = at(sub_cluster);
        assert_eq!(&bytes[sub..sub + 11], b".          ");
        assert_eq!(cluster_at(sub), sub_cluster);
        assert_eq!(&bytes[sub + 32..sub + 43], b"..         ");
        assert_eq!(cluster_at(sub + 32), 0, "`..` of a root child is cluster 0");
        assert_eq!(&bytes[sub + 64..sub + 75], b"INNER      ");
        let inner = at(cluster_at(sub + 64));
        assert_eq!(cluster_at(inner + 32), sub_cluster, "`..` of /SUB/INNER is /SUB");
        // FSInfo: 3 clusters used, and the next free one is the lowest with a 0 entry.
        assert_eq!(
            u32::from_le_bytes(bytes[512 + 488..512 + 492].try_into().unwrap()),
            report.total_clusters - 3
        );
        let fat = |c: usize| u32::from_le_bytes(bytes[32 * 512 + 4 * c..][..4].try_into().unwrap());
        let lowest_free = (2..).find(|&c| fat(c) == 0).unwrap() as u32;
        assert_eq!(
            u32::from_le_bytes(bytes[512 + 492..512 + 496].try_into().unwrap()),
            lowest_free
        );
        // The backup boot sector equals the boot sector.
        assert_eq!(bytes[..512], bytes[6 * 512..7 * 512]);
    }

    #[test]
    fn empty_label_writes_no_label_entry() {
        let (nodes, contents) = tree(&[("/A", None, 0o755)]);
        let mut img = Cursor::new(Vec::new());
        let report = write_fat32(&mut img, &nodes, &contents, &FatOptions::new(SMALL, 1, "")).unwrap();
        let bytes = img.into_inner();
        assert_eq!(&bytes[71..82], b"NO NAME    ");
        let root = report.data_offset as usize;
        assert_eq!(&bytes[root..root + 11], b"A          ");
    }
}
