//! Block maps: how inodes without `EXT4_EXTENTS_FL` (ext2/ext3 images, and old files in
//! converted filesystems) map file blocks to disk blocks.
//!
//! `i_block[0..12]` point at the first 12 data blocks; `i_block[12]`, `[13]` and `[14]`
//! point at single, double and triple indirect blocks, each a block of little-endian
//! 32-bit block numbers. Zero is a hole. [`map_blocks`] turns the map into merged
//! [`Run`]s, reading only the indirect blocks the file's size reaches and each at most
//! once. Spec: kernel `Documentation/filesystems/ext4/ifork.rst` §"Direct/Indirect Block
//! Addressing".

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeSet;

use super::error::Ext4Error;
use super::extent::{MapContext, Run};
use super::spec::le32;

/// Number of direct pointers in `i_block`.
pub const EXT4_NDIR_BLOCKS: usize = 12;

/// Flattens the block map in `i_block` (found at image byte `i_block_offset`) into runs.
pub fn map_blocks(
    i_block: &[u32; 15],
    i_block_offset: u64,
    ctx: &mut MapContext<'_>,
) -> Result<Vec<Run>, Ext4Error> {
    let mut walk = Walk {
        runs: Vec::new(),
        visited: BTreeSet::new(),
        per: ctx.block_size / 4,
    };
    for (i, &ptr) in i_block.iter().enumerate().take(EXT4_NDIR_BLOCKS) {
        let logical = i as u64;
        if logical >= ctx.max_logical {
            return Ok(walk.runs);
        }
        let at = i_block_offset.saturating_add(logical.saturating_mul(4));
        walk.data(ptr, logical, at, ctx)?;
    }
    let mut start = EXT4_NDIR_BLOCKS as u64;
    for (level, &ptr) in (1u32..=3).zip(i_block.iter().skip(EXT4_NDIR_BLOCKS)) {
        let span = walk.per.checked_pow(level).unwrap_or(u64::MAX);
        if start >= ctx.max_logical {
            break;
        }
        let at = i_block_offset.saturating_add(u64::from(11 + level) * 4);
        walk.indirect(ptr, level, start, at, ctx)?;
        start = start.saturating_add(span);
    }
    Ok(walk.runs)
}

struct Walk {
    runs: Vec<Run>,
    visited: BTreeSet<u64>,
    /// Pointers per indirect block.
    per: u64,
}

impl Walk {
    fn data(&mut self, ptr: u32, logical: u64, at: u64, ctx: &MapContext<'_>) -> Result<(), Ext4Error> {
        if ptr == 0 {
            return Ok(());
        }
        let physical = u64::from(ptr);
        ctx.check_range("block map", at, "i_block", physical, 1)?;
        if let Some(last) = self.runs.last_mut() {
            if last.logical_end() == logical && last.physical.saturating_add(last.len) == physical {
                last.len = last.len.saturating_add(1);
                return Ok(());
            }
        }
        if self.runs.len() as u64 >= ctx.blocks_count {
            return Err(Ext4Error::corrupt(
                "block map",
                at,
                "i_block",
                "maps more blocks than the filesystem has",
            ));
        }
        self.runs.push(Run {
            logical,
            physical,
            len: 1,
            uninit: false,
        });
        Ok(())
    }

    /// Walks an indirect block of `level` (1 = its entries are data blocks) whose first
    /// entry maps file block `start`.
    fn indirect(
        &mut self,
        ptr: u32,
        level: u32,
        start: u64,
        at: u64,
        ctx: &mut MapContext<'_>,
    ) -> Result<(), Ext4Error> {
        if ptr == 0 {
            return Ok(());
        }
        let block = u64::from(ptr);
        ctx.check_range("block map", at, "indirect block", block, 1)?;
        if !self.visited.insert(block) {
            return Err(Ext4Error::corrupt(
                "block map",
                at,
                "indirect block",
                format!("block {block} appears twice in one map"),
            ));
        }
        let buf = (ctx.load)(block)?;
        let base = block.saturating_mul(ctx.block_size).saturating_add(ctx.base);
        let child_span = self.per.checked_pow(level.saturating_sub(1)).unwrap_or(u64::MAX);
        for j in 0..self.per {
            let logical = start.saturating_add(j.saturating_mul(child_span));
            if logical >= ctx.max_logical {
                break;
            }
            let off = usize::try_from(j.saturating_mul(4)).unwrap_or(usize::MAX);
            let entry = le32(&buf, off);
            let entry_at = base.saturating_add(j.saturating_mul(4));
            if level == 1 {
                self.data(entry, logical, entry_at, ctx)?;
            } else {
                self.indirect(entry, level.saturating_sub(1), logical, entry_at, ctx)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_and_single_indirect_blocks_merge_into_runs() {
        let mut i_block = [0u32; 15];
        for (i, b) in i_block.iter_mut().enumerate().take(12) {
            *b = 20 + i as u32;
        }
        i_block[5] = 0; // a hole
        i_block[12] = 50;
        let mut ind = vec![0u8; 1024];
        ind[..4].copy_from_slice(&32u32.to_le_bytes());
        ind[4..8].copy_from_slice(&33u32.to_le_bytes());
        let mut load = |b: u64| {
            if b == 50 {
                Ok(ind.clone())
            } else {
                Err(Ext4Error::corrupt("t", b, "b", "x"))
            }
        };
        let mut ctx = MapContext {
            block_size: 1024,
            blocks_count: 100,
            first_data_block: 1,
            max_logical: 14,
            csum_seed: None,
            base: 0,
            load: &mut load,
        };
        let runs = map_blocks(&i_block, 0, &mut ctx).expect("valid");
        assert_eq!(
            runs,
            [
                Run {
                    logical: 0,
                    physical: 20,
                    len: 5,
                    uninit: false
                },
                Run {
                    logical: 6,
                    physical: 26,
                    len: 8,
                    uninit: false
                },
            ]
        );
    }

    #[test]
    fn an_indirect_block_used_twice_is_corrupt() {
        let mut i_block = [0u32; 15];
        i_block[13] = 60; // double indirect whose entries all point at block 60 again
        let dbl: Vec<u8> = (0..256).flat_map(|_| 60u32.to_le_bytes()).collect();
        let mut load = |_| Ok(dbl.clone());
        let mut ctx = MapContext {
            block_size: 1024,
            blocks_count: 100,
            first_data_block: 1,
            max_logical: u64::MAX,
            csum_seed: None,
            base: 0,
            load: &mut load,
        };
        assert!(map_blocks(&i_block, 0, &mut ctx).unwrap_err().is_corrupt());
    }
}
