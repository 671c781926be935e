//! Where each directory and file of a FAT32 volume goes: the stable layout. Clusters are
//! handed out by [`placement::place`] as a function of the *set* of paths and sizes, so
//! a changed or added file moves its own clusters and the FAT entries and directory entry
//! that describe them, not every cluster after it (as the walk-order allocation this
//! replaces did).
//!
//! - **Fixed region:** the boot sectors, FSInfo and both FATs are where the geometry puts
//!   them, and the root directory starts at cluster 2 (`BPB_RootClus` never changes) and
//!   takes as many contiguous clusters as it needs.
//! - **Bins** are the 1 MiB ranges of the volume, counted from the volume's first byte
//!   (partitions start on 1 MiB boundaries, so these are the disk's 1 MiB chunks too).
//!   Bin `b` holds the clusters that lie *entirely* inside its range: a cluster that
//!   straddles a 1 MiB boundary (when the data region does not start on a multiple of the
//!   cluster size) is never used, so that a one-cluster file never spans two chunks.
//!   That costs one cluster per MiB on such volumes (0.4 % at 4 KiB clusters).
//! - **Items:** a directory is homed at `H(path)`; a file at `home(H(dir), H(name),
//!   span(dir), bins)`, so the files of one directory are neighbours in a window of
//!   `span` bins ([`placement::span`] of the cluster bytes of the directory's files at
//!   80 % of a bin). Chains longer than a bin's clusters are cut into whole-bin pieces,
//!   homed at consecutive bins (`home + i`), and a tail; the chain links the pieces in
//!   order. `H` is [`placement::hash`] with the context `w4b fat placement v1`.
//!
//! FAT chains need not be contiguous, so unlike ext4 extents nothing here limits how far
//! a chain's pieces may be apart.

#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;

use super::bpb::Geometry;
use super::FatError;
use crate::formats::placement::{self, Bins, Item, Run};

/// The size of a bin, and of the chunks the volume is stored in.
pub(super) const BIN_BYTES: u64 = 1 << 20;

/// The hash context of every home: changing the rule changes it.
const CONTEXT: &str = "w4b fat placement v1";

/// A file's home window is sized for bins 80 % full of its directory's files.
const PER_BIN_BYTES: u64 = BIN_BYTES / 5 * 4;

/// One directory or file to lay out.
pub(super) struct Want<'a> {
    /// Its absolute path (`/` for the root, which must come first).
    pub path: &'a str,
    /// Clusters it needs; 0 for an empty file.
    pub clusters: u64,
    pub dir: bool,
}

/// `count` clusters from `first` on, contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Extent {
    pub first: u32,
    pub count: u32,
}

/// A run of FAT entries to write: `count` clusters from `first`, each pointing at the
/// next, the last at `next` (the chain's next extent, or end-of-chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FatRun {
    pub first: u32,
    pub count: u32,
    pub next: u32,
}

/// The chain of every wanted item, in the order of `wants` (empty for empty files).
pub(super) fn allocate(geo: &Geometry, wants: &[Want<'_>]) -> Result<Vec<Vec<Extent>>, FatError> {
    let overflow = || FatError::Overflow {
        what: "the cluster layout",
    };
    let root = wants.first().ok_or_else(overflow)?;
    let root_count = u32::try_from(root.clusters.max(1)).map_err(|_| overflow())?;
    let root_end = geo.root_cluster.checked_add(root_count).ok_or_else(overflow)?;
    let (bins, full) = bins(geo, root_end)?;
    let nbins = bins.len() as u64;

    // The cluster bytes of each directory's files, for the width of its home window.
    let cs = geo.cluster_size();
    let mut dir_bytes: BTreeMap<&str, u64> = BTreeMap::new();
    for w in wants.iter().skip(1).filter(|w| !w.dir) {
        let (dir, _) = split(w.path);
        let sum = dir_bytes.entry(dir).or_default();
        *sum = sum.saturating_add(w.clusters.saturating_mul(cs));
    }
    let dir_hashes: BTreeMap<&str, u64> = wants
        .iter()
        .filter(|w| w.dir)
        .map(|w| (w.path, placement::hash(CONTEXT, w.path.as_bytes())))
        .collect();

    // Items, and for each the wanted item and the piece number it is (tails last).
    let mut items: Vec<Item> = Vec::new();
    let mut owner: Vec<(usize, u64)> = Vec::new();
    for (i, w) in wants.iter().enumerate().skip(1) {
        if w.clusters == 0 {
            continue;
        }
        let base = if w.dir {
            dir_hashes.get(w.path).copied().unwrap_or(0)
        } else {
            let (dir, name) = split(w.path);
            let span = placement::span(dir_bytes.get(dir).copied().unwrap_or(0), PER_BIN_BYTES);
            placement::home(
                dir_hashes.get(dir).copied().unwrap_or(0),
                placement::hash(CONTEXT, name.as_bytes()),
                span,
                nbins,
            )
        };
        let base = base.checked_rem(nbins).unwrap_or(0);
        let pieces = w.clusters.checked_div(full).unwrap_or(0);
        let tail = w.clusters.checked_rem(full).unwrap_or(w.clusters);
        for p in 0..pieces {
            let mut key = w.path.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(p.to_string().as_bytes());
            items.push(Item {
                key,
                home: base.saturating_add(p),
                units: full,
                whole_bin: true,
            });
            owner.push((i, p));
        }
        if tail > 0 {
            items.push(Item {
                key: w.path.as_bytes().to_vec(),
                home: base.saturating_add(pieces),
                units: tail,
                whole_bin: false,
            });
            owner.push((i, pieces));
        }
    }

    let placed = placement::place(&bins, &items)?;
    // Pieces in order: (wanted item, piece number) → extent.
    let mut chains: Vec<Vec<(u64, Extent)>> = vec![Vec::new(); wants.len()];
    chains[0].push((
        0,
        Extent {
            first: geo.root_cluster,
            count: root_count,
        },
    ));
    for ((item, p), &(i, piece)) in items.iter().zip(&placed).zip(&owner) {
        let extent = Extent {
            first: u32::try_from(p.start).map_err(|_| overflow())?,
            count: u32::try_from(item.units).map_err(|_| overflow())?,
        };
        chains[i].push((piece, extent));
    }
    Ok(chains
        .into_iter()
        .map(|mut c| {
            c.sort_unstable_by_key(|(piece, _)| *piece);
            c.into_iter().map(|(_, e)| e).collect()
        })
        .collect())
}

/// The FAT entries of `chains`, sorted by cluster.
pub(super) fn fat_runs(chains: &[Vec<Extent>], end_of_chain: u32) -> Vec<FatRun> {
    let mut runs: Vec<FatRun> = chains
        .iter()
        .flat_map(|chain| {
            chain.iter().enumerate().map(|(k, e)| FatRun {
                first: e.first,
                count: e.count,
                next: k
                    .checked_add(1)
                    .and_then(|n| chain.get(n))
                    .map_or(end_of_chain, |n| n.first),
            })
        })
        .collect();
    runs.sort_unstable_by_key(|r| r.first);
    runs
}

/// The lowest free cluster (`FSI_Nxt_Free`), or `None` when every cluster is used.
pub(super) fn first_free(runs: &[FatRun], geo: &Geometry) -> Option<u32> {
    let mut c = 2u32;
    for r in runs {
        if r.first > c {
            break;
        }
        c = c.max(r.first.saturating_add(r.count));
    }
    geo.is_data_cluster(c).then_some(c)
}

/// `(directory, name)` of an absolute path; the root's children are in `/`.
fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("/", path),
    }
}

/// The bins of the volume (bin `b` = the `b`-th 1 MiB range, from the first range with a
/// data cluster): each one run of the clusters entirely inside it, from `after_root` on.
/// Also returns the clusters of a full bin, the size of a whole-bin piece.
fn bins(geo: &Geometry, after_root: u32) -> Result<(Bins, u64), FatError> {
    let overflow = || FatError::Overflow {
        what: "the 1 MiB bins",
    };
    let cs = geo.cluster_size();
    let data = geo.cluster_offset(2);
    let end = u64::from(geo.clusters).checked_add(2).ok_or_else(overflow)?;
    let volume_end = data
        .checked_add(u64::from(geo.clusters).checked_mul(cs).ok_or_else(overflow)?)
        .ok_or_else(overflow)?;
    // Cluster `c` covers `data + (c − 2)·cs ..` ; the first cluster starting at or after
    // `at`, and the first cluster ending after `at` (so the ones before it end by `at`).
    let starting_from = |at: u64| -> u64 { at.saturating_sub(data).div_ceil(cs).saturating_add(2) };
    let ending_by = |at: u64| -> u64 {
        at.saturating_sub(data)
            .checked_div(cs)
            .unwrap_or(0)
            .saturating_add(2)
    };
    let first_bin = data.checked_div(BIN_BYTES).unwrap_or(0);
    let last_bin = volume_end.div_ceil(BIN_BYTES);
    let mut runs = Vec::new();
    for b in first_bin..last_bin {
        let lo = b.checked_mul(BIN_BYTES).ok_or_else(overflow)?;
        let hi = lo.checked_add(BIN_BYTES).ok_or_else(overflow)?;
        let from = starting_from(lo).max(u64::from(after_root));
        let to = ending_by(hi).min(end);
        runs.push(vec![Run {
            start: from,
            len: to.saturating_sub(from),
        }]);
    }
    // A full bin: 1 MiB of clusters, less the one that straddles its start when the data
    // region is not aligned to the cluster size.
    let per_bin = BIN_BYTES.checked_div(cs).unwrap_or(1);
    let full = if data.is_multiple_of(cs) {
        per_bin
    } else {
        per_bin.saturating_sub(1)
    };
    Ok((Bins { runs }, full.max(1)))
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn geo(total_sectors: u32, spc: u32) -> Geometry {
        Geometry::fat32(total_sectors, std::num::NonZeroU32::new(spc).unwrap())
    }

    #[test]
    fn bins_hold_only_clusters_inside_their_mib() {
        for (sectors, spc) in [(1 << 20, 8), (131_072, 1), (200_000, 4)] {
            let g = geo(sectors, spc);
            let cs = g.cluster_size();
            let (bins, full) = bins(&g, 3).unwrap();
            let mut seen = 0;
            for (i, runs) in bins.runs.iter().enumerate() {
                let b = g.cluster_offset(2) / BIN_BYTES + i as u64;
                for r in runs {
                    for c in r.start..r.start + r.len {
                        let at = g.cluster_offset(c as u32);
                        assert!(c >= 3 && g.is_data_cluster(c as u32));
                        assert_eq!(at / BIN_BYTES, b, "cluster {c}");
                        assert_eq!((at + cs - 1) / BIN_BYTES, b, "cluster {c} straddles");
                        seen += 1;
                    }
                    assert!(r.len <= full);
                }
            }
            // Every cluster but the root's and the straddling ones.
            let straddling = (0..g.clusters)
                .map(|k| g.cluster_offset(k + 2))
                .filter(|at| at / BIN_BYTES != (at + cs - 1) / BIN_BYTES)
                .count() as u64;
            assert_eq!(seen, u64::from(g.clusters) - 1 - straddling);
            let aligned = g.cluster_offset(2).is_multiple_of(cs);
            assert_eq!(full, BIN_BYTES / cs - u64::from(!aligned));
        }
    }

    #[test]
    fn chains_link_pieces_in_order_and_the_fat_runs_are_sorted() {
        let g = geo(1 << 20, 8); // 512 MiB in 4 KiB clusters
        let wants = [
            Want {
                path: "/",
                clusters: 2,
                dir: true,
            },
            Want {
                path: "/kernel8.img",
                clusters: 2_400, // 9.4 MiB: 9 whole-bin pieces and a tail
                dir: false,
            },
            Want {
                path: "/overlays",
                clusters: 3,
                dir: true,
            },
            Want {
                path: "/overlays/a.dtbo",
                clusters: 1,
                dir: false,
            },
            Want {
                path: "/empty",
                clusters: 0,
                dir: false,
            },
        ];
        let chains = allocate(&g, &wants).unwrap();
        assert_eq!(chains[0], [Extent { first: 2, count: 2 }]);
        assert!(chains[4].is_empty());
        let (_, full) = bins(&g, 4).unwrap();
        let kernel = &chains[1];
        assert_eq!(kernel.len(), 10);
        assert!(kernel[..9].iter().all(|e| u64::from(e.count) == full));
        assert_eq!(kernel.iter().map(|e| u64::from(e.count)).sum::<u64>(), 2_400);
        let runs = fat_runs(&chains, 0x0FFF_FFFF);
        assert!(runs.windows(2).all(|w| w[0].first + w[0].count <= w[1].first));
        for (k, e) in kernel.iter().enumerate() {
            let run = runs.iter().find(|r| r.first == e.first).unwrap();
            let next = kernel.get(k + 1).map_or(0x0FFF_FFFF, |n| n.first);
            assert_eq!(run.next, next);
        }
        assert_eq!(first_free(&runs, &g), Some(4));
    }

    #[test]
    fn first_free_skips_used_runs() {
        let g = geo(131_072, 1);
        let run = |first, count| FatRun {
            first,
            count,
            next: 0,
        };
        assert_eq!(first_free(&[run(2, 3), run(5, 2), run(9, 1)], &g), Some(7));
        assert_eq!(first_free(&[run(3, 1)], &g), Some(2));
        assert_eq!(first_free(&[run(2, g.clusters)], &g), None);
    }
}
