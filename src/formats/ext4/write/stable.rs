//! The stable layout: which inode number and which blocks every node of the tree gets, as
//! a function of the *set* of nodes alone (§2.2 of `docs/plans/chunked-outputs.md`).
//!
//! Handing out inode numbers and blocks in walk order (as this writer did before) makes
//! the image reproducible but not *stable*: one new file renumbers every later inode and
//! shifts every later block, so every 1 MiB chunk after it changes. Here every node has a
//! **home** derived from hashes of its path, and collisions are resolved by ordered
//! probing ([`crate::formats::placement`]), so a change moves only what lies in its own
//! cluster:
//!
//! - **Inode numbers** (12 up to `s_inodes_count`; 2, 7, 8 and 11 are fixed, and a hard
//!   link shares its target's number): the numbers are shared out among the data bins
//!   (below) in proportion, and a node's home is `H(name) mod share` into the share of
//!   its data's home bin ([`Homes::number`] says why). The numbers are assigned in the
//!   order `(home, path)`, each taking the first free number at or after its home
//!   (cyclically): Amble & Knuth's ordered hash table, so the result depends on the set
//!   of paths only.
//! - **Data** goes into *bins*, the 1 MiB-aligned ranges of the image, each holding the
//!   free runs that the fixed metadata (superblock copies, descriptor tables, bitmaps,
//!   inode tables, the resize inode's block and the journal) leaves. A directory's blocks
//!   are homed at `H(dir)`. A file of more than 1 MiB is cut into whole-bin pieces of 256
//!   blocks homed at consecutive bins from `H(path)` (so large files stay mostly
//!   contiguous), and the rest (a *tail*: the last partial MiB, then the extent leaf
//!   blocks, then the xattr block) is homed where the pieces end. A smaller file is all
//!   tail, homed at `H(dir) + H(name) mod span_d(dir)`, where `span_d(dir)` is the bytes
//!   of the directory's own small files over 0.8 MiB, rounded up to a power of two, in
//!   bins. Slow symlinks' blocks are tails too. The files of one directory therefore stay
//!   neighbours, and a directory's window changes only when its size doubles or halves.
//!
//! `H` is [`placement::hash`] with the context [`CONTEXT`]; a change to these rules must
//! change the context's version.
//!
//! Trade-offs (also in `docs/decisions.md`): a file's extents break at most once per
//! MiB; every group has used inodes, so `bg_itable_unused` saves `e2fsck` nothing.

use std::collections::BTreeMap;

use super::inode::{self, Extent};
use super::layout::{Run, BLOCK_SIZE};
use super::{unsupported, Ext4WriteError, Placement};
use crate::formats::placement::{self, Bins, Item, PlaceError};

/// The `blake3::derive_key` context of every home.
pub const CONTEXT: &str = "w4b ext4 placement v1";
/// Blocks per bin: 1 MiB, the chunk size of the store.
pub const BIN_BLOCKS: u64 = (1 << 20) / BLOCK_SIZE;
/// The first inode number handed out by hash (`s_first_ino + 1`).
const FIRST_HASHED_INO: u64 = 12;
/// A directory's data window holds its files at 80 % of each bin.
const FILE_BYTES_PER_BIN: u64 = (1 << 20) * 4 / 5;

/// What the layout needs to know of one inode of the plan.
#[derive(Clone, Debug)]
pub struct Node<'a> {
    pub path: &'a str,
    /// Index of the parent directory in the same list (the root is its own parent).
    pub parent: usize,
    /// A fixed inode number (2 for `/`, 11 for `lost+found`), or `None` for a hashed one.
    pub fixed_ino: Option<u32>,
    pub is_dir: bool,
    /// Bytes this node counts towards its directory's data window (files and slow
    /// symlinks; 0 for directories).
    pub file_bytes: u64,
    /// Blocks of content (file data, directory blocks, a slow symlink's target).
    pub data_blocks: u64,
    /// Whether the inode has an xattr block.
    pub xattr_block: bool,
}

/// The hashes each node's homes are made of.
struct Hashes {
    /// `H(path)` of the node itself (a directory's home).
    own: Vec<u64>,
    /// `H(name)` of the node's last component.
    name: Vec<u64>,
    /// Per node: its directory's data window in bins.
    span_d: Vec<u64>,
}

fn hashes(nodes: &[Node<'_>]) -> Hashes {
    let own: Vec<u64> = nodes
        .iter()
        .map(|n| placement::hash(CONTEXT, n.path.as_bytes()))
        .collect();
    let name = nodes
        .iter()
        .map(|n| {
            let base = n.path.rsplit('/').next().unwrap_or("");
            placement::hash(CONTEXT, base.as_bytes())
        })
        .collect();
    let mut dir_bytes = vec![0u64; nodes.len()];
    // Files of more than a bin have homes of their own, outside their directory's window.
    for n in nodes.iter().filter(|n| split(n.data_blocks).0 == 0) {
        if let Some(b) = dir_bytes.get_mut(n.parent) {
            *b = b.saturating_add(n.file_bytes);
        }
    }
    let span_d = nodes
        .iter()
        .map(|n| placement::span(dir_bytes.get(n.parent).copied().unwrap_or(0), FILE_BYTES_PER_BIN))
        .collect();
    Hashes { own, name, span_d }
}

/// Everything about the tree the layout uses, computed once per tree (the hashes do not
/// depend on the filesystem's size).
pub struct Homes<'a> {
    nodes: Vec<Node<'a>>,
    hashes: Hashes,
}

impl<'a> Homes<'a> {
    pub fn new(nodes: Vec<Node<'a>>) -> Homes<'a> {
        let hashes = hashes(&nodes);
        Homes { nodes, hashes }
    }

    /// Inodes handed out by hash.
    pub fn hashed_inodes(&self) -> u64 {
        self.nodes.iter().filter(|n| n.fixed_ino.is_none()).count() as u64
    }

    /// The inode number of every node, for a filesystem of `inodes_count` inodes and
    /// `blocks` blocks; `None` when there are too few inodes.
    ///
    /// A node's home is its data home's share of the numbers: bin `b` of `n` owns the
    /// numbers from `b · slots / n`, and the node sits at `H(name) mod share` in it. So
    /// the files that share a bin share a stretch of the inode table, and the files a
    /// change moves inside a bin have their inodes in the same 1 MiB of table. (Homed by
    /// directory over the whole table instead, as first designed, the files a new file
    /// displaced in its bin had inodes all over the table: 4 of 6 inode-table chunks
    /// changed for one new file on the test tree.)
    pub fn number(&self, inodes_count: u64, blocks: u64) -> Option<Vec<u32>> {
        let slots = inodes_count.checked_sub(FIRST_HASHED_INO - 1)?;
        if self.hashed_inodes() > slots {
            return None;
        }
        let nbins = blocks.div_ceil(BIN_BLOCKS).max(1);
        let mut order: Vec<(u64, &str, usize)> = Vec::with_capacity(self.nodes.len());
        let mut out = vec![0u32; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(ino) = n.fixed_ino {
                out[i] = ino;
                continue;
            }
            let bin = self.data_home(i, nbins);
            let share = (slots / nbins).max(1);
            let start = u128::from(bin) * u128::from(slots) / u128::from(nbins);
            let start = u64::try_from(start).unwrap_or(0);
            let home = placement::home(start, self.hashes.name[i], share, slots);
            order.push((home, n.path, i));
        }
        order.sort_unstable();
        let mut free = NextFree::new(slots);
        for (home, _, i) in order {
            let slot = free.take(home)?;
            out[i] = u32::try_from(FIRST_HASHED_INO + slot).ok()?;
        }
        Some(out)
    }

    /// Blocks the tree needs in the bins at most (data, directory blocks, symlink blocks,
    /// xattr blocks, and extent leaves as if no two pieces of a file were adjacent).
    pub fn max_units(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| {
                let (pieces, rest) = split(n.data_blocks);
                let extents = pieces + u64::from(rest > 0);
                let leaves = inode::leaf_blocks(extents as usize).unwrap_or(4) as u64;
                n.data_blocks + leaves + u64::from(n.xattr_block)
            })
            .sum()
    }

    /// Places every node's blocks into the bins made of `free` (ascending `[start, end)`
    /// runs left after the fixed metadata) in a filesystem of `blocks` blocks. `Ok(None)`
    /// when they do not fit.
    pub fn place(&self, free: &[(u64, u64)], blocks: u64) -> Result<Option<Placed>, Ext4WriteError> {
        let bins = bins_of(free, blocks);
        let capacity = bins.free();
        let nbins = bins.len() as u64;
        let homes: Vec<u64> = (0..self.nodes.len()).map(|i| self.data_home(i, nbins)).collect();

        // Whole-bin pieces first (`place` would process them first anyway), so that each
        // file's extent count, and with it the leaf blocks in its tail, is known.
        let mut items = Vec::new();
        let mut owners = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let (pieces, _) = split(n.data_blocks);
            for p in 0..pieces {
                items.push(Item {
                    key: key(n.path, b'p', p),
                    home: homes[i].wrapping_add(p),
                    units: BIN_BLOCKS,
                    whole_bin: true,
                });
                owners.push((i, p));
            }
        }
        let whole = match placement::place(&bins, &items) {
            Ok(p) => p,
            Err(PlaceError::NoSpace { .. }) => return Ok(None),
            Err(e) => return Err(Ext4WriteError::Placement(e)),
        };
        let mut pieces: Vec<Vec<u64>> = vec![Vec::new(); self.nodes.len()];
        let mut taken = vec![false; bins.len()];
        for (&(i, _), pl) in owners.iter().zip(&whole) {
            pieces[i].push(pl.start);
            taken[pl.bin] = true;
        }
        let mut units: u64 = items.iter().map(|i| i.units).sum();

        // Then the tails; a tail with its leaves and xattr block larger than a bin keeps
        // those in a piece of their own, homed with it.
        let rest_bins = Bins {
            runs: bins
                .runs
                .iter()
                .zip(&taken)
                .map(|(r, &t)| if t { Vec::new() } else { r.clone() })
                .collect(),
        };
        let mut extents: Vec<Vec<Extent>> = Vec::with_capacity(self.nodes.len());
        let mut leaves_of = Vec::with_capacity(self.nodes.len());
        let mut items = Vec::new();
        // (node, what): what 0 = tail (data, leaves, xattr), 1 = leaves and xattr alone.
        let mut owners = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let (_, rest) = split(n.data_blocks);
            let mut ext = runs_to_extents(&merge(&pieces[i]));
            let count = ext.len() + usize::from(rest > 0);
            let leaves = inode::leaf_blocks(count).ok_or_else(|| {
                unsupported(
                    n.path,
                    "more than 1360 extents (a tree deeper than one index level)",
                )
            })? as u64;
            if rest > 0 {
                // The tail's extent; `start` is set once it is placed.
                let lblk = u32::try_from(n.data_blocks - rest)
                    .map_err(|_| unsupported(n.path, "a file of 16 TiB or more"))?;
                ext.push(Extent {
                    lblk,
                    start: 0,
                    len: rest as u16,
                });
            }
            extents.push(ext);
            leaves_of.push(leaves);
            let meta = leaves + u64::from(n.xattr_block);
            let together = rest + meta <= BIN_BLOCKS;
            let tail = if together { rest + meta } else { rest };
            if tail > 0 {
                items.push(Item {
                    key: key(n.path, b't', 0),
                    home: self.tail_home(i, homes[i], nbins),
                    units: tail,
                    whole_bin: false,
                });
                owners.push((i, 0u8));
            }
            if !together {
                items.push(Item {
                    key: key(n.path, b'm', 0),
                    home: self.tail_home(i, homes[i], nbins),
                    units: meta,
                    whole_bin: false,
                });
                owners.push((i, 1u8));
            }
        }
        let tails = match placement::place(&rest_bins, &items) {
            Ok(p) => p,
            Err(PlaceError::NoSpace { .. }) => return Ok(None),
            Err(e) => return Err(Ext4WriteError::Placement(e)),
        };
        units += items.iter().map(|i| i.units).sum::<u64>();

        let mut out: Vec<Placement> = extents
            .into_iter()
            .map(|extents| Placement {
                extents,
                leaves: Vec::new(),
                xattr_block: None,
            })
            .collect();
        for (&(i, what), pl) in owners.iter().zip(&tails) {
            let n = &self.nodes[i];
            let (_, rest) = split(n.data_blocks);
            let mut at = pl.start;
            if what == 0 && rest > 0 {
                if let Some(e) = out[i].extents.last_mut() {
                    e.start = at;
                }
                at += rest;
            }
            let together = rest + leaves_of[i] + u64::from(n.xattr_block) <= BIN_BLOCKS;
            if what == 1 || together {
                out[i].leaves = (at..at + leaves_of[i]).collect();
                at += leaves_of[i];
                if n.xattr_block {
                    out[i].xattr_block = Some(at);
                }
            }
        }
        Ok(Some(Placed {
            placements: out,
            units,
            capacity,
        }))
    }

    /// The bin a node's data is homed at: `H(dir)` for a directory, `H(path)` for a file
    /// of more than one bin (its pieces go to the consecutive bins from there), and
    /// `H(dir) + H(name) mod span_d(dir)` for other files.
    ///
    /// Large files get homes of their own because their pieces need empty bins: homed in
    /// their directory's window, the pieces of a directory's large files overlapped, and
    /// growing one by a MiB shifted the pieces of the others (31 chunks changed on the
    /// test tree at 45 % load).
    fn data_home(&self, i: usize, nbins: u64) -> u64 {
        let n = &self.nodes[i];
        if n.is_dir || split(n.data_blocks).0 > 0 {
            return placement::home(self.hashes.own[i], 0, 1, nbins);
        }
        let parent = self.hashes.own[n.parent];
        placement::home(parent, self.hashes.name[i], self.hashes.span_d[i], nbins)
    }

    /// A tail is homed where the file's pieces end (its own home for a file of one bin
    /// or less).
    fn tail_home(&self, i: usize, home: u64, nbins: u64) -> u64 {
        let (pieces, _) = split(self.nodes[i].data_blocks);
        home.wrapping_add(pieces).checked_rem(nbins.max(1)).unwrap_or(0)
    }
}

/// What [`Homes::place`] decided.
pub struct Placed {
    /// Per node: its extents, leaf blocks and xattr block.
    pub placements: Vec<Placement>,
    /// Blocks placed into the bins.
    pub units: u64,
    /// Free blocks of the bins before placing.
    pub capacity: u64,
}

/// Whole-bin pieces and the blocks left for the tail: a file of one bin or less is all
/// tail.
fn split(blocks: u64) -> (u64, u64) {
    if blocks <= BIN_BLOCKS {
        (0, blocks)
    } else {
        (blocks / BIN_BLOCKS, blocks % BIN_BLOCKS)
    }
}

/// `path NUL kind index`: unique per item, as paths hold no NUL.
fn key(path: &str, kind: u8, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.len() + 10);
    k.extend_from_slice(path.as_bytes());
    k.push(0);
    k.push(kind);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The bins of a filesystem of `blocks` blocks: bin `b` covers blocks `256·b .. 256·(b+1)`
/// and holds the parts of the free runs inside it.
fn bins_of(free: &[(u64, u64)], blocks: u64) -> Bins {
    let nbins = blocks.div_ceil(BIN_BLOCKS) as usize;
    let mut runs: Vec<Vec<placement::Run>> = vec![Vec::new(); nbins];
    for &(mut start, end) in free {
        while start < end {
            let bin = start / BIN_BLOCKS;
            let stop = end.min((bin + 1) * BIN_BLOCKS);
            if let Some(r) = runs.get_mut(bin as usize) {
                r.push(placement::Run {
                    start,
                    len: stop - start,
                });
            }
            start = stop;
        }
    }
    Bins { runs }
}

/// Whole-bin pieces in logical order as runs, adjacent ones merged.
fn merge(starts: &[u64]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for &s in starts {
        match out.last_mut() {
            Some(r) if r.start + r.len == s => r.len += BIN_BLOCKS,
            _ => out.push(Run {
                start: s,
                len: BIN_BLOCKS,
            }),
        }
    }
    out
}

/// Runs as extents from logical block 0, none longer than `EXT_INIT_MAX_LEN`.
pub fn runs_to_extents(runs: &[Run]) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut lblk: u64 = 0;
    for r in runs {
        let mut off = 0;
        while off < r.len {
            let len = (r.len - off).min(inode::MAX_EXTENT_LEN);
            out.push(Extent {
                lblk: lblk as u32,
                start: r.start + off,
                len: len as u16,
            });
            lblk += len;
            off += len;
        }
    }
    out
}

/// The first free slot at or after a position, cyclically, with path compression:
/// `next[s]` points at a slot at or after `s` that is free or closer to one.
struct NextFree {
    next: Vec<u64>,
    slots: u64,
}

impl NextFree {
    fn new(slots: u64) -> NextFree {
        // Slot `slots` is a sentinel that is never free: it sends the search to 0.
        NextFree {
            next: (0..=slots).collect(),
            slots,
        }
    }

    fn find(&mut self, mut s: u64) -> u64 {
        let mut root = s;
        while self.next[root as usize] != root {
            root = self.next[root as usize];
        }
        while self.next[s as usize] != root {
            let n = self.next[s as usize];
            self.next[s as usize] = root;
            s = n;
        }
        root
    }

    /// Takes the first free slot at or after `home`, wrapping around; `None` when full.
    fn take(&mut self, home: u64) -> Option<u64> {
        let mut s = self.find(home % self.slots.max(1));
        if s == self.slots {
            s = self.find(0);
        }
        if s == self.slots {
            return None;
        }
        // The sentinel is not free: point at it rather than past it.
        self.next[s as usize] = s + 1;
        Some(s)
    }
}

/// The directory of each path in `paths` (which lists every directory before its
/// entries): its index, or the root's (0) when absent.
pub fn parents(paths: &[&str]) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = paths.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    paths
        .iter()
        .map(|p| {
            let parent = match p.rfind('/') {
                Some(0) | None => "/",
                Some(i) => &p[..i],
            };
            index.get(parent).copied().unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_free_wraps_and_fills() {
        let mut f = NextFree::new(4);
        assert_eq!(f.take(2), Some(2));
        assert_eq!(f.take(2), Some(3));
        assert_eq!(f.take(3), Some(0));
        assert_eq!(f.take(0), Some(1));
        assert_eq!(f.take(1), None);
    }

    #[test]
    fn bins_split_runs_at_mib_boundaries() {
        let b = bins_of(&[(10, 300), (600, 700)], 700);
        assert_eq!(b.len(), 3);
        assert_eq!(b.runs[0], vec![placement::Run { start: 10, len: 246 }]);
        assert_eq!(b.runs[1], vec![placement::Run { start: 256, len: 44 }]);
        assert_eq!(b.runs[2], vec![placement::Run { start: 600, len: 100 }]);
    }

    #[test]
    fn pieces_merge_when_adjacent() {
        assert_eq!(split(256), (0, 256));
        assert_eq!(split(257), (1, 1));
        assert_eq!(split(512), (2, 0));
        let runs = merge(&[256, 512, 1024]);
        assert_eq!(
            runs,
            vec![
                Run { start: 256, len: 512 },
                Run {
                    start: 1024,
                    len: 256
                }
            ]
        );
    }

    /// Pinned: the homes are part of the on-disk result, so a change of the hash or its
    /// context must be deliberate (and bump the context's version).
    #[test]
    fn homes_are_pinned() {
        let h = placement::hash(CONTEXT, b"/etc");
        assert_eq!(format!("{h:016x}"), "87db934f41bf23b5");
    }
}
