//! The stable layout, measured: on a boot partition shaped like Raspberry Pi OS's (a
//! 9 MiB kernel, an initramfs, firmware, 40 device trees, 200 overlays), one change
//! touches the 1 MiB chunks it must and no others; and the image depends on the set of
//! nodes, never on their order.

#![allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Seek, SeekFrom, Write};

use proptest::prelude::*;

use super::oracle::{noise, tree};
use super::{write_fat32, FatOptions, FatReport};
use crate::formats::fs::{MemContents, Node};

const CHUNK: u64 = 1 << 20;

/// A sparse image in memory, kept as the 1 MiB chunks that were written to.
#[derive(Default)]
pub(super) struct Chunks {
    chunks: BTreeMap<u64, Vec<u8>>,
    pos: u64,
    len: u64,
}

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let at = self.pos + done as u64;
            let (index, within) = (at / CHUNK, (at % CHUNK) as usize);
            let n = (CHUNK as usize - within).min(buf.len() - done);
            let chunk = self
                .chunks
                .entry(index)
                .or_insert_with(|| vec![0; CHUNK as usize]);
            chunk[within..within + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        self.pos += buf.len() as u64;
        self.len = self.len.max(self.pos);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Chunks {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match pos {
            SeekFrom::Start(p) => self.pos = p,
            SeekFrom::Current(0) => {}
            _ => return Err(io::Error::other("only absolute seeks")),
        }
        Ok(self.pos)
    }
}

impl Chunks {
    fn chunk(&self, index: u64) -> Option<&[u8]> {
        self.chunks
            .get(&index)
            .map(Vec::as_slice)
            .filter(|c| c.iter().any(|&b| b != 0))
    }

    /// The chunks whose bytes differ from `other`'s.
    fn differing(&self, other: &Chunks) -> BTreeSet<u64> {
        let indices: BTreeSet<u64> = self.chunks.keys().chain(other.chunks.keys()).copied().collect();
        indices
            .into_iter()
            .filter(|&i| self.chunk(i) != other.chunk(i))
            .collect()
    }

    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        (at..at + len as u64)
            .map(|p| self.chunk(p / CHUNK).map_or(0, |c| c[(p % CHUNK) as usize]))
            .collect()
    }

    /// The clusters of the chain that starts at `first`, by the first FAT.
    fn chain(&self, first: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut c = first;
        while (2..0x0FFF_FFF8).contains(&c) {
            out.push(c);
            let entry = self.read(32 * 512 + 4 * u64::from(c), 4);
            c = u32::from_le_bytes(entry.try_into().unwrap());
        }
        out
    }

    /// The chunks holding the clusters of the root directory's only file of `size` bytes,
    /// found through its entry and its FAT chain.
    fn chunks_of(&self, report: &FatReport, size: u32) -> BTreeSet<u64> {
        let cs = u64::from(report.cluster_size);
        let at = |c: u32| report.data_offset + u64::from(c - 2) * cs;
        let root: Vec<u8> = self
            .chain(2)
            .into_iter()
            .flat_map(|c| self.read(at(c), cs as usize))
            .collect();
        let mut found = root
            .chunks_exact(32)
            .filter(|e| e[11] != 0x0F && u32::from_le_bytes(e[28..32].try_into().unwrap()) == size);
        let e = found.next().unwrap();
        assert!(found.next().is_none());
        let first = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
            | u32::from(u16::from_le_bytes([e[26], e[27]]));
        let mut out = BTreeSet::new();
        for c in self.chain(first) {
            out.insert(at(c) / CHUNK);
            out.insert((at(c) + cs - 1) / CHUNK);
        }
        out
    }
}

const KERNEL_SIZE: u32 = 9 * (1 << 20) + 123_456;

/// A Raspberry Pi OS–like `bootfs`: (path, content or `None` for a directory).
fn pi_os_bootfs() -> Vec<(String, Option<Vec<u8>>)> {
    let mut e: Vec<(String, Option<Vec<u8>>)> = vec![
        ("/config.txt".into(), Some(config_txt(1_500, 0))),
        (
            "/cmdline.txt".into(),
            Some(b"console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-02 rootfstype=ext4 fsck.repair=yes rootwait\n".to_vec()),
        ),
        ("/kernel8.img".into(), Some(noise(1, KERNEL_SIZE as usize))),
        ("/kernel_2712.img".into(), Some(noise(2, 9 * (1 << 20) + 654_321))),
        ("/initramfs8".into(), Some(noise(3, 11 * (1 << 20) + 4_321))),
        ("/start4.elf".into(), Some(noise(4, 2_253_088))),
        ("/fixup4.dat".into(), Some(noise(5, 5_399))),
        ("/bootcode.bin".into(), Some(noise(6, 52_476))),
        ("/LICENCE.broadcom".into(), Some(noise(7, 1_594))),
        ("/issue.txt".into(), Some(b"Raspberry Pi reference 2026-12-06\n".to_vec())),
        ("/overlays".into(), None),
        ("/overlays/README".into(), Some(noise(8, 75_000))),
    ];
    let mut x = 0x2545_F491u64;
    let mut next = |lo: u64, hi: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (x >> 33) % (hi - lo)
    };
    for i in 0..40 {
        let len = next(20_000, 80_000) as usize;
        e.push((
            format!("/bcm27{:02}-rpi-{i}-b.dtb", 10 + i % 3),
            Some(noise(100 + i, len)),
        ));
    }
    for i in 0..200 {
        let len = next(1_024, 100 * 1_024) as usize;
        e.push((
            format!("/overlays/overlay-{i:03}.dtbo"),
            Some(noise(1_000 + i, len)),
        ));
    }
    e
}

/// `len` bytes of a config.txt, varying with `variant`.
fn config_txt(len: usize, variant: u8) -> Vec<u8> {
    let mut text = format!("# variant {variant}\narm_64bit=1\ndtoverlay=vc4-kms-v3d\n").into_bytes();
    while text.len() < len {
        text.extend_from_slice(b"#----------------------------------------------------------\n");
    }
    text.truncate(len);
    text
}

fn nodes_of(entries: &[(String, Option<Vec<u8>>)]) -> (Vec<Node>, MemContents) {
    let refs: Vec<(&str, Option<Vec<u8>>, u32)> = entries
        .iter()
        .map(|(p, c)| (p.as_str(), c.clone(), if c.is_some() { 0o644 } else { 0o755 }))
        .collect();
    let (mut nodes, contents) = tree(&refs);
    // The same mtime for every node, so that adding one leaves the others' alone (`tree`
    // numbers them).
    for n in &mut nodes {
        n.mtime = 1_700_000_000;
    }
    (nodes, contents)
}

fn image(entries: &[(String, Option<Vec<u8>>)], opts: &FatOptions) -> (Chunks, FatReport) {
    let (nodes, contents) = nodes_of(entries);
    let mut img = Chunks::default();
    let report = write_fat32(&mut img, &nodes, &contents, opts).unwrap();
    assert_eq!(img.len, opts.size_bytes);
    (img, report)
}

fn with(
    entries: &[(String, Option<Vec<u8>>)],
    path: &str,
    content: Option<Vec<u8>>,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<_> = entries.iter().filter(|(p, _)| p != path).cloned().collect();
    out.push((path.to_owned(), content));
    out
}

/// The chunks each change touches, for a volume of `size` bytes in the default clusters.
/// Each change with the chunks it touched.
type Touched = [(&'static str, BTreeSet<u64>); 4];

fn changes(size: u64) -> (FatReport, Touched, BTreeSet<u64>) {
    let opts = FatOptions::new(size, 0x1A2B_3C4D, "bootfs");
    let base = pi_os_bootfs();
    let (a, report) = image(&base, &opts);
    let same_size = with(&base, "/config.txt", Some(config_txt(1_500, 1)));
    let resized = with(&base, "/config.txt", Some(config_txt(9_000, 0)));
    let added = with(&base, "/overlays/new-overlay.dtbo", Some(noise(7_777, 30_000)));
    let kernel = with(&base, "/kernel8.img", Some(noise(9, KERNEL_SIZE as usize)));
    let kernel_chunks = a.chunks_of(&report, KERNEL_SIZE);
    let diff = |entries: &[(String, Option<Vec<u8>>)]| image(entries, &opts).0.differing(&a);
    let touched = [
        ("config.txt edited, same size", diff(&same_size)),
        ("config.txt grown from 1,500 to 9,000 bytes", diff(&resized)),
        ("an overlay added", diff(&added)),
        ("kernel8.img replaced, same size", diff(&kernel)),
    ];
    (report, touched, kernel_chunks)
}

/// Raspberry Pi OS's boot partition: 512 MiB in 4 KiB clusters, so both FATs and the
/// FSInfo sector share the first chunk.
#[test]
fn one_change_touches_only_its_chunks_on_a_512_mib_bootfs() {
    let (report, touched, kernel) = changes(512 << 20);
    assert_eq!(report.cluster_size, 4096);
    for (what, chunks) in &touched {
        eprintln!(
            "512 MiB, 4 KiB clusters: {what}: {} chunks {chunks:?}",
            chunks.len()
        );
    }
    let [(_, same), (_, resized), (_, added), (_, replaced)] = touched;
    assert_eq!(same.len(), 1, "{same:?}");
    assert!(!same.contains(&0), "{same:?}");
    assert!(resized.len() <= 3, "{resized:?}");
    assert!(added.len() <= 5, "{added:?}");
    assert_eq!(replaced, kernel);
}

/// A 256 MiB boot partition in fatgen103's 512-byte clusters: each FAT is 2 MiB, so a
/// chain change touches a chunk of each FAT copy and FSInfo's chunk 0 besides the data.
#[test]
fn one_change_touches_few_chunks_on_a_256_mib_bootfs() {
    let (report, touched, kernel) = changes(256 << 20);
    assert_eq!(report.cluster_size, 512);
    for (what, chunks) in &touched {
        eprintln!(
            "256 MiB, 512 B clusters: {what}: {} chunks {chunks:?}",
            chunks.len()
        );
    }
    let [(_, same), (_, resized), (_, added), (_, replaced)] = touched;
    assert_eq!(same.len(), 1, "{same:?}");
    assert!(resized.len() <= 5, "{resized:?}");
    assert!(added.len() <= 7, "{added:?}");
    assert_eq!(replaced, kernel);
}

/// Walk order, but otherwise shuffled: directories still come before their children,
/// which `write_fat32` requires.
fn reorder(nodes: &[Node], order: &[usize]) -> Vec<Node> {
    let mut out: Vec<Node> = order
        .iter()
        .filter(|&&i| i < nodes.len())
        .map(|&i| nodes[i].clone())
        .collect();
    out.sort_by_key(|n| {
        if n.path == "/" {
            0
        } else {
            n.path.matches('/').count()
        }
    });
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The same set of nodes in any (valid) order gives the same bytes.
    #[test]
    fn the_image_depends_on_the_set_of_nodes_only(
        order in Just((0..60).collect::<Vec<usize>>()).prop_shuffle(),
        seed in any::<u64>(),
    ) {
        let mut entries: Vec<(String, Option<Vec<u8>>)> = vec![
            ("/overlays".into(), None),
            ("/overlays/deeper".into(), None),
        ];
        for i in 0..57u64 {
            let len = (seed.rotate_left(i as u32) % 40_000) as usize;
            let dir = ["", "/overlays", "/overlays/deeper"][(i % 3) as usize];
            entries.push((format!("{dir}/file-{i}.bin"), Some(noise(seed ^ i, len))));
        }
        let (nodes, contents) = nodes_of(&entries);
        prop_assert_eq!(nodes.len(), 60);
        let opts = FatOptions::new(40 << 20, 1, "T");
        let mut a = Chunks::default();
        write_fat32(&mut a, &nodes, &contents, &opts).unwrap();
        let shuffled = reorder(&nodes, &order);
        prop_assert_eq!(shuffled.len(), nodes.len());
        let mut b = Chunks::default();
        write_fat32(&mut b, &shuffled, &contents, &opts).unwrap();
        prop_assert!(a.differing(&b).is_empty());
    }
}

#[test]
fn reorder_keeps_parents_first_and_changes_the_order() {
    let (nodes, _) = nodes_of(&[
        ("/b".into(), None),
        ("/b/x".into(), Some(vec![1])),
        ("/a".into(), Some(vec![2])),
    ]);
    let out = reorder(&nodes, &[3, 2, 1, 0]);
    let paths: Vec<&str> = out.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, ["/", "/b", "/a", "/b/x"]);
    assert_ne!(paths, nodes.iter().map(|n| n.path.as_str()).collect::<Vec<_>>());
}
