//! Where the metadata of a new ext4 filesystem goes, and the forward-only allocator for
//! the blocks that depend on the size alone (the resize inode's block and the journal).
//!
//! Geometry follows what `mke2fs -t ext4` makes for 4 KiB blocks (kernel documentation,
//! "ext4 Data Structures and Algorithms", §"Layout", §"Flexible Block Groups"):
//!
//! - `s_first_data_block = 0`; group `g` spans blocks `g·32768 .. (g+1)·32768`.
//! - `sparse_super`: groups 0, 1 and powers of 3, 5 and 7 carry a superblock copy, the group
//!   descriptor table (GDT) and the reserved GDT blocks that `resize_inode` keeps for growth.
//! - `flex_bg` with 16 groups per flex group: the block bitmaps of all groups of a flex group
//!   come first, then their inode bitmaps, then their inode tables, packed from the first
//!   free block of the flex group's first group (as `mke2fs` does for full flex groups).
//! - Reserved GDT blocks: `mke2fs`'s rule — room for descriptors of a filesystem 1024 times
//!   larger (capped at 2³² blocks and at 1024 blocks of reservation).
//!
//! After the metadata is placed the free space is a sorted list of runs. The resize
//! inode's block and the journal take the first free blocks in order, so they depend on
//! the size alone; what is left is cut into 1 MiB bins for the tree's blocks
//! (`stable.rs`).

/// Block size in bytes (the writer supports only 4 KiB blocks).
pub const BLOCK_SIZE: u64 = 4096;
/// `s_blocks_per_group` for 4 KiB blocks: one bitmap block's worth of bits.
pub const BLOCKS_PER_GROUP: u64 = 32768;
/// `s_inode_size`.
pub const INODE_SIZE: u64 = 256;
/// Inodes per inode-table block.
pub const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
/// `s_desc_size` with the `64bit` feature.
pub const DESC_SIZE: u64 = 64;
/// Group descriptors per GDT block.
pub const DESCS_PER_BLOCK: u64 = BLOCK_SIZE / DESC_SIZE;
/// `s_log_groups_per_flex = 4`: 16 groups per flex group.
pub const FLEX_GROUPS: u64 = 16;
/// Pointers per indirect block (`EXT2_ADDR_PER_BLOCK`), the cap on reserved GDT blocks.
pub const ADDRS_PER_BLOCK: u64 = BLOCK_SIZE / 4;

/// Whether group `g` holds a superblock backup under `sparse_super` (0, 1, 3ⁿ, 5ⁿ, 7ⁿ).
pub fn has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&p| {
        let mut x = g;
        while x.is_multiple_of(p) {
            x /= p;
        }
        x == 1
    })
}

/// The per-group metadata locations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMeta {
    /// `bg_block_bitmap`.
    pub block_bitmap: u64,
    /// `bg_inode_bitmap`.
    pub inode_bitmap: u64,
    /// `bg_inode_table` (first of `inode_table_blocks` contiguous blocks).
    pub inode_table: u64,
}

/// The filesystem's shape, fixed before anything is allocated.
#[derive(Clone, Debug)]
pub struct Geometry {
    /// `s_blocks_count`.
    pub blocks: u64,
    /// Number of block groups.
    pub groups: u64,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u64,
    /// Blocks of the group descriptor table.
    pub desc_blocks: u64,
    /// `s_reserved_gdt_blocks`.
    pub reserved_gdt: u64,
    pub group_meta: Vec<GroupMeta>,
    /// Blocks used by metadata (one bit per block).
    pub used: Bitset,
    /// Free runs `[start, end)` after metadata, ascending.
    pub free_runs: Vec<(u64, u64)>,
}

/// Why a geometry could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // each names what is too small or too large
pub enum GeometryError {
    /// Fewer blocks than the metadata needs.
    TooSmall { blocks: u64 },
    /// More blocks than this writer supports.
    TooLarge { blocks: u64 },
    /// More inodes per group than a bitmap block can track.
    TooManyInodes { inodes: u64 },
}

/// `s_reserved_gdt_blocks` as `mke2fs` computes it (`calc_reserved_gdt_blocks`): enough
/// descriptor blocks for 1024 times the size, at most 2³²−1 blocks, at most one
/// indirect block of them.
pub fn reserved_gdt_blocks(blocks: u64, desc_blocks: u64) -> u64 {
    let max_blocks: u64 = if blocks < 0xFFFF_FFFF / 1024 {
        blocks * 1024
    } else {
        0xFFFF_FFFF
    };
    let groups = max_blocks.div_ceil(BLOCKS_PER_GROUP);
    let gdb = groups.div_ceil(DESCS_PER_BLOCK);
    gdb.saturating_sub(desc_blocks).min(ADDRS_PER_BLOCK)
}

/// Blocks at the start of group `g` taken by its superblock copy, GDT and reserved GDT.
pub fn super_blocks(g: u64, desc_blocks: u64, reserved_gdt: u64) -> u64 {
    if has_super(g) {
        1 + desc_blocks + reserved_gdt
    } else {
        0
    }
}

/// A fixed-size bitset over block numbers.
#[derive(Clone, Debug, Default)]
pub struct Bitset {
    words: Vec<u64>,
    len: u64,
}

impl Bitset {
    pub fn new(len: u64) -> Bitset {
        let n = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        Bitset {
            words: vec![0; n],
            len,
        }
    }

    pub fn get(&self, i: u64) -> bool {
        i < self.len
            && usize::try_from(i / 64)
                .ok()
                .and_then(|w| self.words.get(w))
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn set(&mut self, i: u64) {
        if i < self.len {
            if let Some(w) = usize::try_from(i / 64).ok().and_then(|w| self.words.get_mut(w)) {
                *w |= 1 << (i % 64);
            }
        }
    }

    pub fn set_range(&mut self, start: u64, end: u64) {
        for i in start..end.min(self.len) {
            self.set(i);
        }
    }
}

impl Geometry {
    /// Lays out `blocks` blocks with `inodes_per_group` inodes per group (already rounded).
    pub fn new(blocks: u64, inodes_per_group: u64) -> Result<Geometry, GeometryError> {
        if blocks >= 1 << 48 {
            return Err(GeometryError::TooLarge { blocks });
        }
        if inodes_per_group > BLOCKS_PER_GROUP || inodes_per_group == 0 {
            return Err(GeometryError::TooManyInodes {
                inodes: inodes_per_group,
            });
        }
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        if groups == 0 {
            return Err(GeometryError::TooSmall { blocks });
        }
        // The u32 inode count bounds the number of groups (`s_inodes_count` is 32 bits).
        if groups.saturating_mul(inodes_per_group) > u64::from(u32::MAX) {
            return Err(GeometryError::TooLarge { blocks });
        }
        let desc_blocks = groups.div_ceil(DESCS_PER_BLOCK);
        let reserved_gdt = reserved_gdt_blocks(blocks, desc_blocks);
        let inode_table_blocks = inodes_per_group * INODE_SIZE / BLOCK_SIZE;
        let mut used = Bitset::new(blocks);
        for g in 0..groups {
            let first = g * BLOCKS_PER_GROUP;
            let n = super_blocks(g, desc_blocks, reserved_gdt);
            if first + n > blocks {
                return Err(GeometryError::TooSmall { blocks });
            }
            used.set_range(first, first + n);
        }
        // Flex-group metadata: block bitmaps, inode bitmaps, inode tables, each packed.
        let mut group_meta = Vec::with_capacity(usize::try_from(groups).unwrap_or(0));
        let mut g0 = 0;
        while g0 < groups {
            let n = FLEX_GROUPS.min(groups - g0);
            let mut cursor = g0 * BLOCKS_PER_GROUP;
            let mut take = |len: u64, used: &mut Bitset| -> Result<u64, GeometryError> {
                // The next `len` contiguous free blocks at or after the cursor.
                let mut start = cursor;
                let mut i = start;
                while i < start + len {
                    if i >= blocks {
                        return Err(GeometryError::TooSmall { blocks });
                    }
                    if used.get(i) {
                        start = i + 1;
                    }
                    i += 1;
                }
                used.set_range(start, start + len);
                cursor = start + len;
                Ok(start)
            };
            let mut bb = Vec::new();
            for _ in 0..n {
                bb.push(take(1, &mut used)?);
            }
            let mut ib = Vec::new();
            for _ in 0..n {
                ib.push(take(1, &mut used)?);
            }
            for i in 0..n as usize {
                let it = take(inode_table_blocks, &mut used)?;
                group_meta.push(GroupMeta {
                    block_bitmap: bb[i],
                    inode_bitmap: ib[i],
                    inode_table: it,
                });
            }
            g0 += n;
        }
        let mut free_runs = Vec::new();
        let mut start = None;
        for b in 0..blocks {
            match (used.get(b), start) {
                (false, None) => start = Some(b),
                (true, Some(s)) => {
                    free_runs.push((s, b));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            free_runs.push((s, blocks));
        }
        Ok(Geometry {
            blocks,
            groups,
            inodes_per_group,
            desc_blocks,
            reserved_gdt,
            group_meta,
            used,
            free_runs,
        })
    }

    /// `s_inodes_count`.
    pub fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group
    }

    /// Blocks in group `g` (the last group may be short).
    pub fn group_blocks(&self, g: u64) -> u64 {
        (self.blocks - g * BLOCKS_PER_GROUP).min(BLOCKS_PER_GROUP)
    }

    /// Groups holding superblock backups, excluding group 0, ascending.
    pub fn backup_groups(&self) -> impl Iterator<Item = u64> + '_ {
        (1..self.groups).filter(|&g| has_super(g))
    }
}

/// Hands out the free blocks after the metadata in ascending order.
#[derive(Clone, Debug)]
pub struct Allocator {
    runs: Vec<(u64, u64)>,
    run: usize,
    next: u64,
}

/// A run of physically contiguous blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub len: u64,
}

impl Allocator {
    pub fn new(geometry: &Geometry) -> Allocator {
        let next = geometry.free_runs.first().map_or(0, |r| r.0);
        Allocator {
            runs: geometry.free_runs.clone(),
            run: 0,
            next,
        }
    }

    /// The next `count` free blocks as runs, or `None` when the filesystem is full.
    pub fn take(&mut self, mut count: u64) -> Option<Vec<Run>> {
        let mut out: Vec<Run> = Vec::new();
        while count > 0 {
            let &(_, end) = self.runs.get(self.run)?;
            let n = (end - self.next).min(count);
            match out.last_mut() {
                Some(last) if last.start + last.len == self.next => last.len += n,
                _ => out.push(Run {
                    start: self.next,
                    len: n,
                }),
            }
            self.next += n;
            count -= n;
            if self.next == end {
                self.run += 1;
                if let Some(&(s, _)) = self.runs.get(self.run) {
                    self.next = s;
                }
            }
        }
        Some(out)
    }

    /// The free runs `[start, end)` not yet handed out, ascending.
    pub fn rest(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (i, &(s, e)) in self.runs.iter().enumerate().skip(self.run) {
            let s = if i == self.run { self.next.max(s) } else { s };
            if s < e {
                out.push((s, e));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let backups: Vec<u64> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(backups, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn reserved_gdt_matches_mke2fs() {
        // `mke2fs -b 4096` on 256 MiB reports "Reserved GDT blocks at 2-32".
        assert_eq!(reserved_gdt_blocks(65536, 1), 31);
        // 4 GiB: room for 1024 × 2²⁰ blocks = 32768 groups = 512 GDT blocks, less the one used.
        assert_eq!(reserved_gdt_blocks(1 << 20, 1), 511);
        // 64 GiB: capped at 2³² − 1 blocks, 2048 GDT blocks, less the 8 used.
        assert_eq!(reserved_gdt_blocks(1 << 24, 8), 1024);
    }

    #[test]
    fn flex_metadata_is_packed_like_mke2fs() {
        // `mke2fs -b 4096 -N 65536` on 256 MiB: bitmaps 33,34 / 35,36, tables 37 and 2085.
        let g = Geometry::new(65536, 32768).unwrap();
        assert_eq!(
            g.group_meta[0],
            GroupMeta {
                block_bitmap: 33,
                inode_bitmap: 35,
                inode_table: 37
            }
        );
        assert_eq!(
            g.group_meta[1],
            GroupMeta {
                block_bitmap: 34,
                inode_bitmap: 36,
                inode_table: 2085
            }
        );
        assert_eq!(g.free_runs[0], (4133, 32768));
    }

    #[test]
    fn allocator_skips_metadata_and_merges_runs() {
        let g = Geometry::new(65536, 8192).unwrap();
        let mut a = Allocator::new(&g);
        let first = g.free_runs[0];
        let total: u64 = a.rest().iter().map(|r| r.1 - r.0).sum();
        let runs = a.take(first.1 - first.0 + 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs[0],
            Run {
                start: first.0,
                len: first.1 - first.0
            }
        );
        assert_eq!(runs[1].start, 32768 + 1 + 1 + 31);
        let left: u64 = a.rest().iter().map(|r| r.1 - r.0).sum();
        assert_eq!(left, total - (first.1 - first.0 + 10));
        assert!(a.take(total).is_none());
    }
}
