//! Extent trees (`struct ext4_extent_header`, `ext4_extent_idx`, `ext4_extent`,
//! `ext4_extent_tail`): how an inode with `EXT4_EXTENTS_FL` maps file blocks to disk blocks.
//!
//! The root node lives in the inode's 60-byte `i_block` (header plus up to 4 entries);
//! deeper nodes are whole blocks ending in a crc32c tail. Index nodes point to child nodes
//! by the first logical block they cover; leaves hold runs of up to 32768 blocks, and a
//! length above 32768 marks an uninitialised (preallocated, reads-as-zero) run.
//! [`map_extents`] flattens a tree into sorted [`Run`]s, checking every structure and
//! reading each tree block at most once, so a hostile image cannot make it loop.
//! Spec: kernel `Documentation/filesystems/ext4/ifork.rst` §"Extent Tree".

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeSet;

use super::error::Ext4Error;
use super::spec::{le32, on_disk};

/// `eh_magic`.
pub const EXT4_EXT_MAGIC: u16 = 0xF30A;
/// Longest initialised extent; `ee_len` above it means uninitialised.
pub const EXT_INIT_MAX_LEN: u16 = 32768;
/// Deepest tree the kernel builds (`EXT4_MAX_EXTENT_DEPTH`).
pub const EXT4_MAX_EXTENT_DEPTH: u16 = 5;

on_disk! {
    /// `struct ext4_extent_header`, at the start of every node.
    pub struct ExtentHeader [12] {
        eh_magic: u16 = 0x0,
        eh_entries: u16 = 0x2,
        eh_max: u16 = 0x4,
        /// 0 for leaves; the root's depth is the tree's height.
        eh_depth: u16 = 0x6,
        eh_generation: u32 = 0x8,
    }
}

on_disk! {
    /// `struct ext4_extent_idx`: an index entry of an interior node.
    pub struct ExtentIdx [12] {
        ei_block: u32 = 0x0,
        ei_leaf_lo: u32 = 0x4,
        ei_leaf_hi: u16 = 0x8,
        ei_unused: u16 = 0xA,
    }
}

on_disk! {
    /// `struct ext4_extent`: a leaf entry.
    pub struct Extent [12] {
        ee_block: u32 = 0x0,
        ee_len: u16 = 0x4,
        ee_start_hi: u16 = 0x6,
        ee_start_lo: u32 = 0x8,
    }
}

on_disk! {
    /// `struct ext4_extent_tail`, right after `eh_max` entries of a non-root node.
    pub struct ExtentTail [4] {
        et_checksum: u32 = 0x0,
    }
}

impl ExtentIdx {
    /// Block of the child node.
    pub fn leaf(&self) -> u64 {
        (u64::from(self.ei_leaf_hi) << 32) | u64::from(self.ei_leaf_lo)
    }
}

impl Extent {
    /// First physical block.
    pub fn start(&self) -> u64 {
        (u64::from(self.ee_start_hi) << 32) | u64::from(self.ee_start_lo)
    }

    /// Number of blocks, whether or not initialised.
    pub fn len(&self) -> u16 {
        if self.ee_len > EXT_INIT_MAX_LEN {
            self.ee_len.wrapping_sub(EXT_INIT_MAX_LEN)
        } else {
            self.ee_len
        }
    }

    /// Whether the extent has no blocks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the run is preallocated but unwritten (reads as zeros).
    pub fn is_uninit(&self) -> bool {
        self.ee_len > EXT_INIT_MAX_LEN
    }
}

/// A contiguous mapping of file blocks to disk blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First file block.
    pub logical: u64,
    /// First disk block.
    pub physical: u64,
    /// Number of blocks.
    pub len: u64,
    /// Preallocated, unwritten: reads as zeros.
    pub uninit: bool,
}

impl Run {
    /// One past the last file block.
    pub fn logical_end(&self) -> u64 {
        self.logical.saturating_add(self.len)
    }
}

/// What a mapping walk needs to know about the filesystem and the file.
pub struct MapContext<'a> {
    pub block_size: u64,
    /// Blocks in the filesystem: every mapped block must lie below it.
    pub blocks_count: u64,
    /// First block that can hold data (`s_first_data_block`).
    pub first_data_block: u64,
    /// Blocks the file's size covers; mappings at or past it are dropped unread.
    pub max_logical: u64,
    /// Inode checksum seed under `metadata_csum`.
    pub csum_seed: Option<u32>,
    /// Byte offset of block 0 in the image, for error offsets.
    pub base: u64,
    /// Reads one filesystem block.
    pub load: &'a mut dyn FnMut(u64) -> Result<Vec<u8>, Ext4Error>,
}

impl MapContext<'_> {
    fn block_offset(&self, block: u64) -> u64 {
        block.saturating_mul(self.block_size).saturating_add(self.base)
    }

    pub(crate) fn check_range(
        &self,
        structure: &'static str,
        offset: u64,
        field: &'static str,
        start: u64,
        len: u64,
    ) -> Result<(), Ext4Error> {
        let end = start.checked_add(len);
        if start < self.first_data_block || end.is_none_or(|e| e > self.blocks_count) {
            return Err(Ext4Error::corrupt(
                structure,
                offset,
                field,
                format!(
                    "blocks {start}+{len} lie outside the filesystem's {} blocks",
                    self.blocks_count
                ),
            ));
        }
        Ok(())
    }
}

/// Flattens the extent tree rooted in `root` (the inode's `i_block`, found at image byte
/// `root_offset`) into runs sorted by file block.
pub fn map_extents(root: &[u8], root_offset: u64, ctx: &mut MapContext<'_>) -> Result<Vec<Run>, Ext4Error> {
    let mut walk = Walk {
        runs: Vec::new(),
        next_logical: 0,
        visited: BTreeSet::new(),
    };
    walk.node(root, root_offset, None, ctx)?;
    Ok(walk.runs)
}

struct Walk {
    runs: Vec<Run>,
    /// Every extent must start at or after the end of the previous one.
    next_logical: u64,
    visited: BTreeSet<u64>,
}

impl Walk {
    /// Walks one node; `depth` is None for the root, else the depth the parent implies.
    fn node(
        &mut self,
        buf: &[u8],
        offset: u64,
        depth: Option<u16>,
        ctx: &mut MapContext<'_>,
    ) -> Result<(), Ext4Error> {
        const S: &str = "extent tree node";
        let h = ExtentHeader::decode(buf)
            .ok_or_else(|| Ext4Error::corrupt(S, offset, "eh_magic", "node is shorter than its header"))?;
        if h.eh_magic != EXT4_EXT_MAGIC {
            return Err(Ext4Error::corrupt(
                S,
                offset,
                "eh_magic",
                format!("{:#06x} is not 0xf30a", h.eh_magic),
            ));
        }
        let capacity = buf.len().saturating_sub(12) / 12;
        if usize::from(h.eh_max) > capacity || h.eh_entries > h.eh_max {
            return Err(Ext4Error::corrupt(
                S,
                offset,
                "eh_entries",
                format!(
                    "{} entries of at most {} in room for {capacity}",
                    h.eh_entries, h.eh_max
                ),
            ));
        }
        match depth {
            None if h.eh_depth > EXT4_MAX_EXTENT_DEPTH => {
                return Err(Ext4Error::corrupt(
                    S,
                    offset,
                    "eh_depth",
                    format!("{} exceeds the maximum of {EXT4_MAX_EXTENT_DEPTH}", h.eh_depth),
                ));
            }
            Some(want) if h.eh_depth != want => {
                return Err(Ext4Error::corrupt(
                    S,
                    offset,
                    "eh_depth",
                    format!("is {} below a node that implies {want}", h.eh_depth),
                ));
            }
            _ => {}
        }
        if depth.is_some() {
            if let Some(seed) = ctx.csum_seed {
                let tail = 12usize.saturating_add(usize::from(h.eh_max).saturating_mul(12));
                let stored = buf
                    .get(tail..tail.saturating_add(4))
                    .map(|_| le32(buf, tail))
                    .ok_or_else(|| {
                        Ext4Error::corrupt(S, offset, "et_checksum", "no room for the checksum tail")
                    })?;
                let computed = super::csum::extent_block(seed, buf.get(..tail).unwrap_or(&[]));
                if stored != computed {
                    return Err(Ext4Error::Checksum {
                        structure: S,
                        offset,
                        field: "et_checksum",
                        stored,
                        computed,
                    });
                }
            }
        }
        let entries = (0..usize::from(h.eh_entries)).map(|i| {
            let at = i.saturating_mul(12).saturating_add(12);
            (at, buf.get(at..).unwrap_or(&[]))
        });
        if h.eh_depth == 0 {
            for (at, raw) in entries {
                let e = Extent::decode_lenient(raw);
                let entry_offset = offset.saturating_add(at as u64);
                if e.is_empty() {
                    return Err(Ext4Error::corrupt("extent", entry_offset, "ee_len", "is zero"));
                }
                let (logical, len) = (u64::from(e.ee_block), u64::from(e.len()));
                if logical < self.next_logical {
                    return Err(Ext4Error::corrupt(
                        "extent",
                        entry_offset,
                        "ee_block",
                        format!("{logical} overlaps or precedes the previous extent"),
                    ));
                }
                self.next_logical = logical.saturating_add(len);
                ctx.check_range("extent", entry_offset, "ee_start_lo", e.start(), len)?;
                if logical < ctx.max_logical {
                    self.runs.push(Run {
                        logical,
                        physical: e.start(),
                        len,
                        uninit: e.is_uninit(),
                    });
                }
            }
            return Ok(());
        }
        let child_depth = h.eh_depth.saturating_sub(1);
        let mut prev: Option<u32> = None;
        for (at, raw) in entries {
            let idx = ExtentIdx::decode_lenient(raw);
            let entry_offset = offset.saturating_add(at as u64);
            if prev.is_some_and(|p| idx.ei_block <= p) {
                return Err(Ext4Error::corrupt(
                    "extent index",
                    entry_offset,
                    "ei_block",
                    "is not above the previous index entry",
                ));
            }
            prev = Some(idx.ei_block);
            if u64::from(idx.ei_block) >= ctx.max_logical {
                continue;
            }
            let leaf = idx.leaf();
            ctx.check_range("extent index", entry_offset, "ei_leaf_lo", leaf, 1)?;
            if !self.visited.insert(leaf) {
                return Err(Ext4Error::corrupt(
                    "extent index",
                    entry_offset,
                    "ei_leaf_lo",
                    format!("block {leaf} appears twice in one tree"),
                ));
            }
            let child = (ctx.load)(leaf)?;
            let child_offset = ctx.block_offset(leaf);
            self.node(&child, child_offset, Some(child_depth), ctx)?;
        }
        Ok(())
    }
}

/// Builds the `i_block` of an inode whose extents fit in the root (at most 4): header
/// plus leaf entries, zero-padded to 60 bytes. For writers.
pub fn encode_root(extents: &[Extent]) -> Option<[u8; 60]> {
    if extents.len() > 4 {
        return None;
    }
    let mut out = [0u8; 60];
    let header = ExtentHeader {
        eh_magic: EXT4_EXT_MAGIC,
        eh_entries: u16::try_from(extents.len()).ok()?,
        eh_max: 4,
        eh_depth: 0,
        eh_generation: 0,
    };
    out.get_mut(..12)?.copy_from_slice(&header.encode());
    for (i, e) in extents.iter().enumerate() {
        let at = i.checked_mul(12)?.checked_add(12)?;
        out.get_mut(at..at.checked_add(12)?)?.copy_from_slice(&e.encode());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ext4::spec::check_layout;

    #[test]
    fn layouts() {
        check_layout("ExtentHeader", ExtentHeader::SIZE, ExtentHeader::FIELDS);
        check_layout("ExtentIdx", ExtentIdx::SIZE, ExtentIdx::FIELDS);
        check_layout("Extent", Extent::SIZE, Extent::FIELDS);
    }

    fn ctx_map(root: &[u8], blocks: &[(u64, Vec<u8>)], max_logical: u64) -> Result<Vec<Run>, Ext4Error> {
        let mut load = |b: u64| {
            blocks
                .iter()
                .find(|(n, _)| *n == b)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Ext4Error::corrupt("test", b, "block", "missing"))
        };
        let mut ctx = MapContext {
            block_size: 1024,
            blocks_count: 100,
            first_data_block: 1,
            max_logical,
            csum_seed: None,
            base: 0,
            load: &mut load,
        };
        map_extents(root, 0, &mut ctx)
    }

    fn ext(block: u32, len: u16, start: u32) -> Extent {
        Extent {
            ee_block: block,
            ee_len: len,
            ee_start_hi: 0,
            ee_start_lo: start,
        }
    }

    #[test]
    fn root_leaf_maps_runs_and_uninit() {
        let root = encode_root(&[ext(0, 2, 10), ext(5, EXT_INIT_MAX_LEN + 3, 20)]).expect("fits");
        let runs = ctx_map(&root, &[], 100).expect("valid");
        assert_eq!(
            runs,
            [
                Run {
                    logical: 0,
                    physical: 10,
                    len: 2,
                    uninit: false
                },
                Run {
                    logical: 5,
                    physical: 20,
                    len: 3,
                    uninit: true
                }
            ]
        );
        // Runs past the file's size are dropped.
        assert_eq!(ctx_map(&root, &[], 2).expect("valid").len(), 1);
    }

    #[test]
    fn overlapping_and_out_of_range_extents_are_corrupt() {
        let root = encode_root(&[ext(0, 4, 10), ext(3, 1, 20)]).expect("fits");
        assert!(ctx_map(&root, &[], 100).unwrap_err().is_corrupt());
        let root = encode_root(&[ext(0, 4, 98)]).expect("fits");
        assert!(ctx_map(&root, &[], 100).unwrap_err().is_corrupt());
    }

    #[test]
    fn an_index_pointing_at_itself_is_caught() {
        // Root of depth 2 whose child (block 7) is an index node pointing at block 7 again.
        let mut root = [0u8; 60];
        root[..12].copy_from_slice(
            &ExtentHeader {
                eh_magic: EXT4_EXT_MAGIC,
                eh_entries: 1,
                eh_max: 4,
                eh_depth: 2,
                eh_generation: 0,
            }
            .encode(),
        );
        let idx = ExtentIdx {
            ei_block: 0,
            ei_leaf_lo: 7,
            ei_leaf_hi: 0,
            ei_unused: 0,
        };
        root[12..24].copy_from_slice(&idx.encode());
        let mut node = vec![0u8; 1024];
        node[..12].copy_from_slice(
            &ExtentHeader {
                eh_magic: EXT4_EXT_MAGIC,
                eh_entries: 1,
                eh_max: 84,
                eh_depth: 1,
                eh_generation: 0,
            }
            .encode(),
        );
        node[12..24].copy_from_slice(&idx.encode());
        let err = ctx_map(&root, &[(7, node)], 100).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
