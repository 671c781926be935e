//! Chunking filesystem images for the store (issue 12, design §1.1): fixed 1 MiB chunks
//! aligned to the start of the image against content-defined chunks (FastCDC 2020, the
//! `fastcdc` crate, averages of 1 MiB and 256 KiB), on pairs of real images: a base, and
//! the same tree after one change.
//!
//! - **ext4:** the real Debian arm64 root the install tests build
//!   (`/tmp/w4b-test-debian-arm64/base`, made by `tests/support/make-test-base.sh`), or
//!   `/usr` of this host when that is missing, written by w4b's ext4 writer into an image of
//!   a fixed size (twice the tree, at least 512 MiB). Changes: `/etc/motd` edited (one line
//!   more); one new file (`/etc/w4b-hive.conf`); a package-sized set added (100 files,
//!   5 MiB, under `/usr/lib/w4b-demo/`).
//! - **FAT:** the Raspberry Pi OS–like `bootfs` of the `fat_write` bench, written by w4b's
//!   FAT writer into 512 MiB. Changes: `config.txt` edited; one overlay added.
//!
//! Per pair and method: **new bytes** = the lengths of the distinct chunks of B that A does
//! not have (what a rebuild adds to the store and sends to a remote); **chunks** = entries
//! in B's index; **index** = its size in the index format of docs/cache-format.md (96 bytes
//! of header and flat digests, 36 per chunk); **MiB/s** = cutting and BLAKE3-hashing B,
//! read from the page cache. Zero chunks count like any other (they dedupe in both).
//!
//! Baseline in the same run: fixed 1 MiB is itself the baseline the design proposes; the
//! ratio column is CDC's new bytes over fixed's.
//!
//! Run: `cargo bench --bench chunking`. The scratch directory (images, the generated boot
//! tree) is removed on exit. About 1–3 minutes here.

#![allow(clippy::disallowed_methods)] // A bench reads the clock and its environment.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fastcdc::v2020::StreamCDC;
use support::disk::{self, HostContents, HostTree};
use support::{thousands, Table};
use w4b::formats::fat::{write_fat32, FatOptions};
use w4b::formats::fs::{ContentId, Contents, MemContents, Node, NodeKind};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const DEBIAN_ROOT: &str = "/tmp/w4b-test-debian-arm64/base";

/// How an image is cut.
#[derive(Clone, Copy)]
enum Method {
    Fixed(u64),
    /// FastCDC 2020: min, avg, max.
    Cdc(u64, u64, u64),
}

impl Method {
    fn name(self) -> String {
        match self {
            Method::Fixed(n) => format!("fixed {} KiB, aligned", n / KIB),
            Method::Cdc(_, avg, _) => format!("FastCDC avg {} KiB", avg / KIB),
        }
    }
}

const METHODS: [Method; 3] = [
    Method::Fixed(MIB),
    Method::Cdc(MIB / 4, MIB, 4 * MIB),
    Method::Cdc(64 * KIB, 256 * KIB, MIB),
];

/// The chunks of an image: (BLAKE3, length) in order.
type Chunks = Vec<([u8; 32], u64)>;

fn chunk(path: &Path, method: Method) -> (Chunks, Duration) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let start = Instant::now();
    let mut out = Vec::new();
    match method {
        Method::Fixed(size) => {
            let mut r = BufReader::with_capacity(size as usize, file);
            let mut buf = vec![0u8; size as usize];
            loop {
                let n = fill(&mut r, &mut buf).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                if n == 0 {
                    break;
                }
                out.push((*blake3::hash(&buf[..n]).as_bytes(), n as u64));
            }
        }
        Method::Cdc(min, avg, max) => {
            for c in StreamCDC::new(file, min as usize, avg as usize, max as usize) {
                let c = c.unwrap_or_else(|e| panic!("chunk {}: {e}", path.display()));
                out.push((*blake3::hash(&c.data).as_bytes(), c.length as u64));
            }
        }
    }
    (out, start.elapsed())
}

fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Host files for the scanned tree, in-memory bytes for what a scenario adds or changes.
/// A host content id has only its first 8 bytes set; a memory one is a BLAKE3.
struct Both<'a> {
    host: &'a HostContents,
    mem: MemContents,
}

impl Contents for Both<'_> {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        if id.0[8..].iter().all(|&b| b == 0) {
            self.host.open(id)
        } else {
            self.mem.open(id)
        }
    }
}

/// Deterministic pseudo-random bytes.
fn noise(key: &str, len: u64) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    blake3::Hasher::new_derive_key("w4b bench chunking contents v1")
        .update(key.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A change to a scanned tree: nodes replaced or added (by path), then walk order again.
struct Change {
    name: &'static str,
    set: Vec<(String, Option<Vec<u8>>)>,
}

fn apply(base: &[Node], change: &Change, mem: &mut MemContents) -> Vec<Node> {
    let mut by_path: BTreeMap<Vec<String>, Node> =
        base.iter().map(|n| (components(&n.path), n.clone())).collect();
    for (path, content) in &change.set {
        let template = base
            .iter()
            .find(|n| matches!(n.kind, NodeKind::File { .. }) && n.path == "/etc/hostname")
            .or_else(|| base.iter().find(|n| matches!(n.kind, NodeKind::File { .. })))
            .expect("a file in the tree");
        let mut node = by_path.get(&components(path)).cloned().unwrap_or_else(|| Node {
            path: path.clone(),
            ..template.clone()
        });
        node.kind = match content {
            Some(bytes) => NodeKind::File {
                size: bytes.len() as u64,
                content: mem.add(bytes),
            },
            None => {
                node.mode = 0o755;
                NodeKind::Dir
            }
        };
        by_path.insert(components(path), node);
    }
    by_path.into_values().collect()
}

/// Walk order is the order of path components (children by name bytes, depth first).
fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One row per method: how B chunks against A.
fn compare(title: &str, a: &Path, b: &Path, table: &mut Table, out: &mut Vec<String>) {
    let mut fixed_new = 0u64;
    for method in METHODS {
        let (ca, _) = chunk(a, method);
        let (cb, took) = chunk(b, method);
        let known: BTreeSet<[u8; 32]> = ca.iter().map(|(d, _)| *d).collect();
        let mut fresh: BTreeMap<[u8; 32], u64> = BTreeMap::new();
        for (d, len) in &cb {
            if !known.contains(d) {
                fresh.insert(*d, *len);
            }
        }
        let new_bytes: u64 = fresh.values().sum();
        let total: u64 = cb.iter().map(|(_, l)| l).sum();
        if matches!(method, Method::Fixed(_)) {
            fixed_new = new_bytes;
        }
        let ratio = if fixed_new == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", new_bytes as f64 / fixed_new as f64)
        };
        let mibs = total as f64 / MIB as f64 / took.as_secs_f64();
        table.row(vec![
            title.to_string(),
            method.name(),
            format!("{:.2}", new_bytes as f64 / MIB as f64),
            thousands(fresh.len() as u64),
            thousands(cb.len() as u64),
            thousands(96 + 36 * cb.len() as u64),
            ratio,
            format!("{mibs:.0}"),
        ]);
        out.push(format!(
            "{title} | {} | {:.2} MiB new in {} chunks | {} chunks | {} B index | {mibs:.0} MiB/s",
            method.name(),
            new_bytes as f64 / MIB as f64,
            fresh.len(),
            cb.len(),
            96 + 36 * cb.len() as u64
        ));
    }
}

fn head() -> Table {
    Table::new(&[
        "change",
        "chunking",
        "new MiB",
        "new chunks",
        "chunks",
        "index B",
        "vs fixed",
        "MiB/s",
    ])
}

fn ext4_scenarios() -> Vec<Change> {
    let mut package = vec![
        ("/usr/lib/w4b-demo".to_string(), None),
        ("/usr/lib/w4b-demo/plugins".to_string(), None),
    ];
    // 100 files, 5 MiB: sizes from 4 KiB to 100 KiB.
    for i in 0..100u64 {
        let len = 4 * KIB + (i * 7_919 * 13) % (96 * KIB);
        let dir = if i % 4 == 0 {
            "/usr/lib/w4b-demo/plugins"
        } else {
            "/usr/lib/w4b-demo"
        };
        let name = format!("{dir}/part-{i:03}.so");
        package.push((name.clone(), Some(noise(&name, len))));
    }
    let motd = std::fs::read(Path::new(DEBIAN_ROOT).join("etc/motd")).unwrap_or_default();
    let mut motd2 = motd.clone();
    motd2.extend_from_slice(b"Welcome to the hive.\n");
    vec![
        Change {
            name: "/etc/motd edited",
            set: vec![("/etc/motd".into(), Some(motd2))],
        },
        Change {
            name: "a file added",
            set: vec![(
                "/etc/w4b-hive.conf".into(),
                Some(b"hive=edge\nrole=sensor\n".to_vec()),
            )],
        },
        Change {
            name: "a package added (100 files, 5 MiB)",
            set: package,
        },
    ]
}

fn main() {
    support::header(
        "chunking",
        "fixed 1 MiB aligned chunks vs FastCDC (avg 1 MiB, 256 KiB) on pairs of real images:\n\
         new bytes a rebuild stores, chunk count, index size, chunking throughput",
    );
    let scratch = tempfile::Builder::new()
        .prefix("w4b-bench-chunking-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut results = Vec::new();

    // ext4, today's writer.
    let src = if Path::new(DEBIAN_ROOT).is_dir() {
        PathBuf::from(DEBIAN_ROOT)
    } else {
        PathBuf::from("/usr")
    };
    let (nodes, host) = disk::scan(&src);
    let bytes: u64 = nodes
        .iter()
        .map(|n| match n.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    let size = (2 * bytes).div_ceil(MIB).max(512) * MIB;
    println!(
        "   ext4: {} ({} nodes, {} MiB of files) in a {} MiB image, walk-order writer",
        src.display(),
        thousands(nodes.len() as u64),
        thousands(bytes / MIB),
        size / MIB
    );
    let a = scratch.path().join("a.ext4");
    disk::write_ext4_nodes(&nodes, &host, &a, size);
    let mut table = head();
    for change in ext4_scenarios() {
        let mut both = Both {
            host: &host,
            mem: MemContents::default(),
        };
        let changed = apply(&nodes, &change, &mut both.mem);
        let b = scratch.path().join("b.ext4");
        let mut out = File::create(&b).unwrap_or_else(|e| panic!("create {}: {e}", b.display()));
        let opts = w4b::formats::ext4::write::Ext4Options::new(
            w4b::formats::ext4::write::Size::Fixed(size),
            [0x42; 16],
            [0x24; 16],
            support::EPOCH as i64,
        );
        w4b::formats::ext4::write::write_ext4(&mut out, &changed, &both, &opts)
            .unwrap_or_else(|e| panic!("write_ext4: {e:?}"));
        drop(out);
        compare(
            &format!("ext4: {}", change.name),
            &a,
            &b,
            &mut table,
            &mut results,
        );
        disk::remove(&b);
    }
    disk::remove(&a);
    table.print();

    // FAT, the stable layout.
    let tree = HostTree::bootfs();
    let (nodes, host) = disk::scan(&tree.src);
    println!(
        "   FAT: the `fat_write` bench's bootfs ({}) in 512 MiB, stable-layout writer",
        tree.describe()
    );
    let opts = FatOptions::new(512 * MIB, 0x1A2B_3C4D, "bootfs");
    let write = |nodes: &[Node], contents: &dyn Contents, path: &Path| {
        let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        write_fat32(&mut f, nodes, contents, &opts).unwrap_or_else(|e| panic!("write_fat32: {e:?}"));
    };
    let a = scratch.path().join("a.fat");
    write(&nodes, &host, &a);
    let config = std::fs::read(tree.src.join("config.txt")).unwrap_or_default();
    let mut config2 = config.clone();
    if let Some(b) = config2.first_mut() {
        *b ^= 0x20;
    }
    let mut table = head();
    for change in [
        Change {
            name: "config.txt edited",
            set: vec![("/config.txt".into(), Some(config2))],
        },
        Change {
            name: "an overlay added",
            set: vec![("/overlays/w4b-hive.dtbo".into(), Some(noise("overlay", 30 * KIB)))],
        },
    ] {
        let mut both = Both {
            host: &host,
            mem: MemContents::default(),
        };
        let changed = apply(&nodes, &change, &mut both.mem);
        let b = scratch.path().join("b.fat");
        write(&changed, &both, &b);
        compare(&format!("FAT: {}", change.name), &a, &b, &mut table, &mut results);
        disk::remove(&b);
    }
    table.print();
    drop(tree);
    drop(scratch);
    for r in results {
        println!("RESULT chunking: {r}");
    }
}
