//! The ext4 writer: a tree of [`Node`]s in, a clean, `e2fsck`-valid ext4 image out.
//!
//! Raspberry Pi images carry their root filesystem as ext4. This module makes one
//! in-process, without `mke2fs`, loop devices or root, and byte-for-byte deterministic:
//! the output is a pure function of the nodes, their contents and [`Ext4Options`].
//!
//! # What it writes
//!
//! The features of `mke2fs -t ext4` (e2fsprogs 1.47): `has_journal ext_attr resize_inode
//! dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink
//! extra_isize metadata_csum`, 4 KiB blocks, 256-byte inodes, 16 groups per flex group.
//! Kernel documentation "ext4 Data Structures and Algorithms" is the specification; the
//! sub-modules name the sections they follow.
//!
//! - **Superblock** at byte 1024, copies at the start of groups 1, 3ⁿ, 5ⁿ, 7ⁿ
//!   (`s_block_group_nr` set), each followed by the group descriptor table (64-byte
//!   descriptors) and `s_reserved_gdt_blocks` reserved blocks ([`layout`]).
//!   The copies are those of the *empty* filesystem of the same geometry (`/`,
//!   `lost+found`, the journal and the resize inode), as `mke2fs` leaves them and the
//!   kernel never updates them: their free counts and checksums depend on the size alone.
//! - **Checksums**: `s_checksum_type = 1` (crc32c), seed `crc32c(~0, s_uuid)`; superblock
//!   (`crc32c(~0, bytes 0..0x3FC)`), group descriptors (`crc32c(seed, le32 group,
//!   descriptor with bg_checksum = 0) & 0xFFFF`), block and inode bitmaps (in the
//!   descriptor), inodes, extent leaves, directory blocks and xattr blocks.
//! - **Inodes**: 2 is `/`, 7 the resize inode, 8 the journal, 11 `lost+found` (created
//!   with 16 KiB of empty entries if the tree lacks it), then one inode per node from 12,
//!   numbered by hashed homes ([`stable`]); a hard link reuses its target's inode. Reserved inodes 1, 3–6, 9, 10 are
//!   zero. Every inode time is the node's `mtime`; the superblock's `s_mkfs_time`,
//!   `s_wtime` and `s_lastcheck` are [`Ext4Options::epoch`] and `s_mtime` is 0 (never
//!   mounted).
//! - **Blocks** after the metadata: the resize inode's double-indirect block and the
//!   journal first, in order (they depend on the size alone); then every inode's data,
//!   extent leaves (files of more than four extents) and xattr block go to 1 MiB bins by
//!   hashed homes ([`stable`]), so that one changed file changes only the chunks near it.
//!   A file breaks into a new extent at most once per MiB.
//! - **Resize room** (`resize_inode`): the reserved GDT blocks let `resize2fs` (offline,
//!   or the kernel online, as the Pi's first boot does) grow the filesystem up to 1024
//!   times, to at most 2³² blocks, without moving anything.
//! - **Output** is sparse: blocks that are all zero (free space, unused inode tables, the
//!   journal body, zero blocks inside files) are skipped by seeking, so the destination
//!   must read as zeros wherever nothing is written (a new or freshly truncated file).
//!
//! Not written: htree (`dx_root`) directories — linear directories of any size are valid
//! for the kernel and `e2fsck` (lookups in very large directories are slower until the
//! kernel or `e2fsck -D` indexes them); inline data; xattrs larger than one block
//! (`ea_inode`); holes in files; files fragmented into more than 1360 extents.

mod chunked;
mod dir;
mod inode;
mod journal;
mod layout;
mod stable;
mod xattr;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use crate::formats::fs::{ContentId, Contents, Node, NodeKind};
use crate::formats::io::read_full;

use super::csum;
use super::group::{GroupDesc, EXT4_BG_INODE_ZEROED};
use super::spec::{compat, incompat, ro_compat, EXT4_SUPER_MAGIC};
use super::superblock::Superblock;
pub use chunked::{ChunkBody, ChunkOut};
use dir::{ft, Entry};
use inode::{Extent, InodeFields, EXTENTS_FL};
use layout::{
    Allocator, Bitset, Geometry, GeometryError, BLOCKS_PER_GROUP, BLOCK_SIZE, DESC_SIZE, INODES_PER_BLOCK,
    INODE_SIZE,
};
use stable::Homes;
use xattr::Xattr;

/// How large the filesystem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Exactly this many bytes (rounded down to whole 4 KiB blocks).
    Fixed(u64),
    /// The smallest size (in 4 KiB steps found by search) whose free space, after the
    /// content and excluding root-reserved blocks, is at least `headroom_bytes` plus
    /// `headroom_percent` of the content's blocks.
    Fit {
        headroom_bytes: u64,
        headroom_percent: u32,
    },
}

/// Everything besides the tree that decides the image's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Options {
    pub size: Size,
    /// `s_uuid`; also seeds every metadata checksum and names the journal's owner.
    pub uuid: [u8; 16],
    /// `s_hash_seed`, for directory hashing (htree) once the kernel indexes a directory.
    pub hash_seed: [u8; 16],
    /// `s_volume_name`, at most 16 bytes (Raspberry Pi OS uses `rootfs`).
    pub label: String,
    /// Seconds since the Unix epoch for the superblock's times.
    pub epoch: i64,
    /// Journal size in blocks; `None` takes `mke2fs`'s table (16384 blocks = 64 MiB for
    /// filesystems of 2–16 GiB).
    pub journal_blocks: Option<u32>,
    /// `s_r_blocks_count` as a percentage of all blocks. 5, as `mke2fs` and therefore
    /// Raspberry Pi OS images (made by `pi-gen` with `mkfs.ext4` defaults) have.
    pub reserved_percent: u8,
    /// Bytes of filesystem per inode (`mke2fs -i`); 16384 is `mke2fs.conf`'s default.
    pub inode_ratio: u32,
}

impl Ext4Options {
    /// Options with the defaults above.
    pub fn new(size: Size, uuid: [u8; 16], hash_seed: [u8; 16], epoch: i64) -> Ext4Options {
        Ext4Options {
            size,
            uuid,
            hash_seed,
            label: String::new(),
            epoch,
            journal_blocks: None,
            reserved_percent: 5,
            inode_ratio: 16384,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Report {
    /// Bytes of the image (`s_blocks_count` × 4096).
    pub image_bytes: u64,
    pub block_size: u32,
    /// `s_blocks_count`.
    pub blocks: u64,
    /// `s_inodes_count`.
    pub inodes: u64,
    /// `s_free_blocks_count` (including root-reserved blocks).
    pub free_blocks: u64,
    /// `s_r_blocks_count`.
    pub reserved_blocks: u64,
    /// `s_free_inodes_count`.
    pub free_inodes: u64,
    pub journal_blocks: u32,
    /// `s_reserved_gdt_blocks`: how far `resize2fs` can grow the image in place.
    pub reserved_gdt_blocks: u64,
    /// Blocks placed into the 1 MiB bins (file data, directory and symlink blocks, extent
    /// leaves, xattr blocks).
    pub placed_blocks: u64,
    /// Free blocks of the bins before placing: what the fixed metadata and the journal
    /// leave.
    pub bin_capacity_blocks: u64,
}

impl Ext4Report {
    /// The data bins' load in percent (`placed_blocks / bin_capacity_blocks`, rounded
    /// up): above about 70 one change moves more bins (see the stable layout in
    /// `docs/formats.md`).
    pub fn data_load_percent(&self) -> u64 {
        (self.placed_blocks * 100).div_ceil(self.bin_capacity_blocks.max(1))
    }
}

/// Why an image could not be written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Ext4WriteError {
    #[error("writing the ext4 image failed")]
    #[diagnostic(code(w4b::ext4::io))]
    Io(#[from] io::Error),

    #[error("`{path}` cannot go into an ext4 image: {reason}")]
    #[diagnostic(code(w4b::ext4::invalid_node))]
    InvalidNode { path: String, reason: String },

    #[error("`{path}` needs an ext4 feature this writer does not produce: {what}")]
    #[diagnostic(code(w4b::ext4::unsupported))]
    Unsupported { path: String, what: String },

    #[error("ext4 option `{field}` is invalid: {reason}")]
    #[diagnostic(code(w4b::ext4::invalid_option))]
    InvalidOption { field: &'static str, reason: String },

    #[error("the content needs {needed} blocks of 4 KiB but a {bytes}-byte ext4 image has only {free} free")]
    #[diagnostic(
        code(w4b::ext4::too_small),
        help("give the image a larger fixed size, or use the fitting size with headroom")
    )]
    TooSmall { bytes: u64, needed: u64, free: u64 },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Placement(crate::formats::placement::PlaceError),

    #[error("a {bytes}-byte ext4 image is beyond what this writer supports: {reason}")]
    #[diagnostic(code(w4b::ext4::too_large))]
    TooLarge { bytes: u64, reason: &'static str },

    #[error("opening the content of `{path}` failed")]
    #[diagnostic(code(w4b::ext4::content_open))]
    ContentOpen {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("reading the content of `{path}` failed")]
    #[diagnostic(code(w4b::ext4::content_read))]
    ContentRead {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("the content of `{path}` has {actual} bytes, but its node says {expected}")]
    #[diagnostic(code(w4b::ext4::content_size))]
    ContentSize {
        path: String,
        expected: u64,
        actual: String,
    },
}

// Inode numbers (§"Special inodes").
const ROOT_INO: u32 = 2;
const RESIZE_INO: u32 = 7;
const JOURNAL_INO: u32 = 8;
const LOST_FOUND_INO: u32 = 11;
/// `s_first_ino`.
const FIRST_INO: u32 = 11;

// `i_mode` type bits.
const S_IFIFO: u16 = 0o010000;
const S_IFCHR: u16 = 0o020000;
const S_IFDIR: u16 = 0o040000;
const S_IFBLK: u16 = 0o060000;
const S_IFREG: u16 = 0o100000;
const S_IFLNK: u16 = 0o120000;
const S_IFSOCK: u16 = 0o140000;

/// Most links an inode counts; directories beyond it record 1 (`dir_nlink`).
const EXT4_LINK_MAX: u32 = 65000;
/// Bytes for in-inode xattr entries and values: 256 − 160, less the magic word.
const IBODY_ROOM: usize = INODE_SIZE as usize - inode::IBODY_AT - 4;

/// What an inode holds besides its attributes.
#[derive(Debug)]
enum Body {
    File {
        content: ContentId,
        node: usize,
    },
    Dir {
        entries: Vec<Entry>,
        parent: u32,
        min_blocks: usize,
    },
    FastSymlink(Vec<u8>),
    SlowSymlink(Vec<u8>),
    Device {
        major: u32,
        minor: u32,
    },
    Special,
}

/// One inode of the tree, before allocation.
#[derive(Debug)]
struct Planned {
    /// The plan's own number: 2 for `/`, 11 for `lost+found`, then 12, 13, … in walk
    /// order. Directory entries name inodes by it; [`Layout::ino`] gives the number the
    /// image uses.
    ino: u32,
    path: String,
    mode: u16,
    uid: u32,
    gid: u32,
    time: i64,
    links: u32,
    size: u64,
    body: Body,
    /// Blocks of content (file data, directory blocks, a slow symlink's target).
    data_blocks: u64,
    ibody_attrs: Vec<Xattr>,
    block_attrs: Vec<Xattr>,
}

/// Where an inode's blocks went.
#[derive(Debug, Default, Clone)]
struct Placement {
    extents: Vec<Extent>,
    leaves: Vec<u64>,
    xattr_block: Option<u64>,
}

/// The tree as inodes, independent of the filesystem size.
struct Plan {
    /// Plan numbers 2, 11, 12, 13, … in order.
    inodes: Vec<Planned>,
}

impl Plan {
    /// The position of the inode the plan numbered `ino`.
    fn index(ino: u32) -> usize {
        match ino {
            ROOT_INO => 0,
            LOST_FOUND_INO => 1,
            n => (n as usize).saturating_sub(10),
        }
    }

    /// What the stable layout needs of each inode.
    fn homes(&self) -> Homes<'_> {
        let paths: Vec<&str> = self.inodes.iter().map(|p| p.path.as_str()).collect();
        let parents = stable::parents(&paths);
        let nodes = self
            .inodes
            .iter()
            .zip(parents)
            .map(|(p, parent)| stable::Node {
                path: &p.path,
                parent,
                fixed_ino: (p.ino <= FIRST_INO).then_some(p.ino),
                is_dir: matches!(p.body, Body::Dir { .. }),
                file_bytes: match &p.body {
                    Body::File { .. } | Body::SlowSymlink(_) => p.data_blocks * BLOCK_SIZE,
                    _ => 0,
                },
                data_blocks: p.data_blocks,
                xattr_block: !p.block_attrs.is_empty(),
            })
            .collect();
        Homes::new(nodes)
    }

    /// Blocks the tree needs besides metadata and journal (extent leaves estimated).
    fn content_blocks(&self) -> u64 {
        self.inodes
            .iter()
            .map(|p| {
                p.data_blocks
                    + p.data_blocks / (inode::MAX_EXTENT_LEN * 4)
                    + u64::from(!p.block_attrs.is_empty())
            })
            .sum()
    }
}

fn split_path(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

fn invalid(path: &str, reason: impl Into<String>) -> Ext4WriteError {
    Ext4WriteError::InvalidNode {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn unsupported(path: &str, what: impl Into<String>) -> Ext4WriteError {
    Ext4WriteError::Unsupported {
        path: path.to_string(),
        what: what.into(),
    }
}

fn attrs_of(node: &Node) -> Result<(Vec<Xattr>, Vec<Xattr>), Ext4WriteError> {
    let mut attrs = Vec::new();
    for (name, value) in &node.xattrs {
        attrs.push(Xattr::from_full(name, value).map_err(|r| invalid(&node.path, r))?);
    }
    xattr::sort(&mut attrs);
    let (n, _) = xattr::split(&attrs, IBODY_ROOM);
    let block = attrs.split_off(n);
    if !xattr::fits_block(&block, BLOCK_SIZE as usize) {
        return Err(unsupported(
            &node.path,
            "extended attributes larger than one 4 KiB block (ea_inode)",
        ));
    }
    Ok((attrs, block))
}

/// Turns the walk-ordered nodes into inodes with directory entries and link counts.
fn plan(nodes: &[Node], epoch: i64) -> Result<Plan, Ext4WriteError> {
    let root = nodes.first().ok_or_else(|| invalid("/", "the tree is empty"))?;
    if root.path != "/" || root.kind != NodeKind::Dir {
        return Err(invalid(&root.path, "the first node must be the directory `/`"));
    }
    let mut inodes: Vec<Planned> = Vec::with_capacity(nodes.len() + 1);
    // path -> (ino, is_dir, is_file)
    let mut by_path: BTreeMap<&str, (u32, bool, bool)> = BTreeMap::new();
    let mut next_ino = FIRST_INO + 1;
    let mut lost_found: Option<Planned> = None;
    let mut subdirs: BTreeMap<u32, u32> = BTreeMap::new();
    let mut entries: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();

    for (i, node) in nodes.iter().enumerate() {
        if node.mode & !0o7777 != 0 {
            return Err(invalid(
                &node.path,
                format!("mode {:#o} has bits beyond 0o7777", node.mode),
            ));
        }
        let (ino, parent) = if i == 0 {
            (ROOT_INO, ROOT_INO)
        } else {
            let (parent_path, name) =
                split_path(&node.path).ok_or_else(|| invalid(&node.path, "the path is not absolute"))?;
            if name.is_empty() || name == "." || name == ".." || name.len() > 255 || name.contains('\0') {
                return Err(invalid(
                    &node.path,
                    "the name is empty, `.`, `..`, over 255 bytes or has a NUL",
                ));
            }
            let &(parent, is_dir, _) = by_path
                .get(parent_path)
                .ok_or_else(|| invalid(&node.path, "its parent directory does not precede it"))?;
            if !is_dir {
                return Err(invalid(&node.path, "its parent is not a directory"));
            }
            if by_path.contains_key(node.path.as_str()) {
                return Err(invalid(&node.path, "the path appears twice"));
            }
            let file_type = match &node.kind {
                NodeKind::File { .. } | NodeKind::HardLink { .. } => ft::REG,
                NodeKind::Dir => ft::DIR,
                NodeKind::Symlink { .. } => ft::SYMLINK,
                NodeKind::CharDev { .. } => ft::CHR,
                NodeKind::BlockDev { .. } => ft::BLK,
                NodeKind::Fifo => ft::FIFO,
                NodeKind::Socket => ft::SOCK,
            };
            let ino = if let NodeKind::HardLink { target } = &node.kind {
                let &(t, _, is_file) = by_path.get(target.as_str()).ok_or_else(|| {
                    invalid(
                        &node.path,
                        format!("its hard-link target `{target}` does not precede it"),
                    )
                })?;
                if !is_file {
                    return Err(invalid(
                        &node.path,
                        format!("its hard-link target `{target}` is not a regular file"),
                    ));
                }
                // While planning, `inodes` holds `/` then 12, 13, …: inode t sits at t − 11.
                let p = &mut inodes[t as usize - 11];
                p.links += 1;
                if p.links > EXT4_LINK_MAX {
                    return Err(unsupported(&node.path, "more than 65000 hard links to one file"));
                }
                t
            } else if node.path == "/lost+found" {
                if node.kind != NodeKind::Dir {
                    return Err(invalid(
                        &node.path,
                        "`/lost+found` must be a directory (e2fsck needs it)",
                    ));
                }
                LOST_FOUND_INO
            } else {
                let n = next_ino;
                next_ino = next_ino
                    .checked_add(1)
                    .ok_or_else(|| unsupported(&node.path, "more than 2³² inodes"))?;
                n
            };
            entries.entry(parent).or_default().push(Entry {
                name: name.as_bytes().to_vec(),
                ino,
                file_type,
            });
            if node.kind == NodeKind::Dir {
                *subdirs.entry(parent).or_default() += 1;
            }
            (ino, parent)
        };
        by_path.insert(
            &node.path,
            (
                ino,
                node.kind == NodeKind::Dir,
                matches!(node.kind, NodeKind::File { .. }),
            ),
        );
        if matches!(node.kind, NodeKind::HardLink { .. }) {
            continue;
        }
        let (ibody_attrs, block_attrs) = attrs_of(node)?;
        let (type_bits, size, body, data_blocks) = match &node.kind {
            NodeKind::File { size, content } => {
                let blocks = size.div_ceil(BLOCK_SIZE);
                if blocks > u64::from(u32::MAX) {
                    return Err(unsupported(&node.path, "a file of 16 TiB or more"));
                }
                (
                    S_IFREG,
                    *size,
                    Body::File {
                        content: *content,
                        node: i,
                    },
                    blocks,
                )
            }
            NodeKind::Dir => {
                let min_blocks = if ino == LOST_FOUND_INO { 4 } else { 1 };
                (
                    S_IFDIR,
                    0,
                    Body::Dir {
                        entries: Vec::new(),
                        parent,
                        min_blocks,
                    },
                    0,
                )
            }
            NodeKind::Symlink { target } => {
                let t = target.as_bytes().to_vec();
                if t.is_empty() || t.len() >= BLOCK_SIZE as usize || t.contains(&0) {
                    return Err(invalid(
                        &node.path,
                        "a symlink target must have 1 to 4095 bytes and no NUL",
                    ));
                }
                let len = t.len() as u64;
                if t.len() < 60 {
                    (S_IFLNK, len, Body::FastSymlink(t), 0)
                } else {
                    (S_IFLNK, len, Body::SlowSymlink(t), 1)
                }
            }
            NodeKind::CharDev { major, minor } => (
                S_IFCHR,
                0,
                Body::Device {
                    major: *major,
                    minor: *minor,
                },
                0,
            ),
            NodeKind::BlockDev { major, minor } => (
                S_IFBLK,
                0,
                Body::Device {
                    major: *major,
                    minor: *minor,
                },
                0,
            ),
            NodeKind::Fifo => (S_IFIFO, 0, Body::Special, 0),
            NodeKind::Socket => (S_IFSOCK, 0, Body::Special, 0),
            NodeKind::HardLink { .. } => continue,
        };
        if let Body::Device { major, minor } = body {
            if major > 0xFFF || minor > 0xF_FFFF {
                return Err(invalid(
                    &node.path,
                    "device numbers beyond 12-bit major, 20-bit minor",
                ));
            }
        }
        let planned = Planned {
            ino,
            path: node.path.clone(),
            mode: type_bits | node.mode as u16,
            uid: node.uid,
            gid: node.gid,
            time: node.mtime,
            links: 1,
            size,
            body,
            data_blocks,
            ibody_attrs,
            block_attrs,
        };
        if ino == LOST_FOUND_INO {
            lost_found = Some(planned);
        } else {
            inodes.push(planned);
        }
    }
    let lost_found = match lost_found {
        Some(p) => p,
        None => {
            let name = b"lost+found".to_vec();
            let root_entries = entries.entry(ROOT_INO).or_default();
            let at = root_entries.partition_point(|e| e.name < name);
            root_entries.insert(
                at,
                Entry {
                    name,
                    ino: LOST_FOUND_INO,
                    file_type: ft::DIR,
                },
            );
            *subdirs.entry(ROOT_INO).or_default() += 1;
            Planned {
                ino: LOST_FOUND_INO,
                path: "/lost+found".into(),
                mode: S_IFDIR | 0o700,
                uid: 0,
                gid: 0,
                time: epoch,
                links: 1,
                size: 0,
                body: Body::Dir {
                    entries: Vec::new(),
                    parent: ROOT_INO,
                    min_blocks: 4,
                },
                data_blocks: 0,
                ibody_attrs: Vec::new(),
                block_attrs: Vec::new(),
            }
        }
    };
    inodes.insert(1, lost_found);
    // Directory contents, sizes and link counts.
    for p in &mut inodes {
        if let Body::Dir {
            entries: e,
            min_blocks,
            ..
        } = &mut p.body
        {
            *e = entries.remove(&p.ino).unwrap_or_default();
            // By name, whatever order the nodes came in (walk order already is).
            e.sort_by(|a, b| a.name.cmp(&b.name));
            let blocks = dir::pack(e, BLOCK_SIZE as usize, *min_blocks).len() as u64;
            p.data_blocks = blocks;
            p.size = blocks * BLOCK_SIZE;
            let links = 2 + subdirs.get(&p.ino).copied().unwrap_or(0);
            p.links = if links > EXT4_LINK_MAX { 1 } else { links };
        }
    }
    Ok(Plan { inodes })
}

/// Everything decided by the size: geometry, inode numbers and placements.
struct Layout {
    geometry: Geometry,
    journal_blocks: u32,
    resize_dind: Option<u64>,
    journal: Placement,
    /// Per inode of the plan (in plan order): its number.
    inos: Vec<u32>,
    /// Per inode of the plan: where its blocks went.
    placements: Vec<Placement>,
    reserved_blocks: u64,
    /// Free blocks left after everything is placed.
    free: u64,
    /// Blocks placed into the 1 MiB bins, and the bins' free blocks before placing.
    placed: u64,
    capacity: u64,
}

impl Layout {
    /// The final number of the inode the plan numbered `ino`.
    fn ino(&self, ino: u32) -> u32 {
        self.inos.get(Plan::index(ino)).copied().unwrap_or(0)
    }
}

/// How full the data bins may be when the writer picks the size (`Size::Fit`): 7/10.
/// The placement measured one change moving a median of 1 bin, p90 3 at 70 % load and
/// p90 9 at 85 % (`src/formats/placement.rs`); quantising the size up (below) makes the
/// load 62–70 %.
const FIT_LOAD: (u64, u64) = (7, 10);

/// Lays out a filesystem of `blocks` blocks; `Ok(None)` when the content does not fit
/// (or, with `max_load`, fills the data bins beyond that fraction).
fn lay_out(
    homes: &Homes<'_>,
    opts: &Ext4Options,
    mut blocks: u64,
    max_load: Option<(u64, u64)>,
) -> Result<Option<Layout>, Ext4WriteError> {
    let bytes = blocks * BLOCK_SIZE;
    // Like mke2fs, drop a last group too small to be worth its superblock backup.
    let last = blocks % BLOCKS_PER_GROUP;
    if blocks > BLOCKS_PER_GROUP && last != 0 && last < 2048 {
        blocks -= last;
    }
    let groups = blocks.div_ceil(BLOCKS_PER_GROUP).max(1);
    let needed_inodes = u64::from(FIRST_INO) + homes.hashed_inodes();
    let by_ratio = (blocks * BLOCK_SIZE / u64::from(opts.inode_ratio)).div_ceil(groups);
    let ipg = by_ratio
        .max(needed_inodes.div_ceil(groups))
        .div_ceil(INODES_PER_BLOCK)
        .max(1)
        * INODES_PER_BLOCK;
    let geometry = match Geometry::new(blocks, ipg) {
        Ok(g) => g,
        Err(GeometryError::TooSmall { .. }) => return Ok(None),
        Err(GeometryError::TooLarge { .. }) => {
            return Err(Ext4WriteError::TooLarge {
                bytes,
                reason: "more than 2⁴⁸ blocks or 2³² inodes",
            })
        }
        Err(GeometryError::TooManyInodes { .. }) => {
            return Err(Ext4WriteError::TooSmall {
                bytes,
                needed: needed_inodes,
                free: 0,
            })
            .or_else(|e| {
                if matches!(opts.size, Size::Fit { .. }) {
                    Ok(None)
                } else {
                    Err(e)
                }
            })
        }
    };
    let journal_blocks = match opts.journal_blocks {
        Some(j) => j,
        None => journal::default_blocks(blocks),
    };
    if journal_blocks < 1024 {
        return Ok(None);
    }
    let Some(a) = allocate(homes, &geometry, journal_blocks, max_load)? else {
        return Ok(None);
    };
    let reserved_blocks = blocks * u64::from(opts.reserved_percent) / 100;
    Ok(Some(Layout {
        free: a.free,
        geometry,
        journal_blocks,
        resize_dind: a.resize_dind,
        journal: a.journal,
        inos: a.inos,
        placements: a.placements,
        reserved_blocks,
        placed: a.placed,
        capacity: a.capacity,
    }))
}

/// Where the fixed blocks and the tree went.
struct Allocated {
    resize_dind: Option<u64>,
    journal: Placement,
    inos: Vec<u32>,
    placements: Vec<Placement>,
    /// Free blocks left.
    free: u64,
    placed: u64,
    capacity: u64,
}

/// The resize inode's double-indirect block and the journal take the first free blocks
/// after the metadata, in order (they depend on the size alone); then inode numbers and
/// the tree's blocks go to their hashed homes ([`stable`]). `Ok(None)` when the content
/// does not fit, or fills the data bins beyond `max_load`.
fn allocate(
    homes: &Homes<'_>,
    geometry: &Geometry,
    journal_blocks: u32,
    max_load: Option<(u64, u64)>,
) -> Result<Option<Allocated>, Ext4WriteError> {
    let mut alloc = Allocator::new(geometry);
    let resize_dind = if geometry.reserved_gdt > 0 {
        match alloc.take(1) {
            Some(r) => Some(r[0].start),
            None => return Ok(None),
        }
    } else {
        None
    };
    let Some(runs) = alloc.take(u64::from(journal_blocks)) else {
        return Ok(None);
    };
    let extents = stable::runs_to_extents(&runs);
    let Some(leaves) = inode::leaf_blocks(extents.len()) else {
        return Err(unsupported("/", "a journal of more than 1360 extents"));
    };
    let Some(leaf_runs) = alloc.take(leaves as u64) else {
        return Ok(None);
    };
    let journal = Placement {
        extents,
        leaves: leaf_runs.iter().flat_map(|r| r.start..r.start + r.len).collect(),
        xattr_block: None,
    };
    let Some(inos) = homes.number(geometry.inodes(), geometry.blocks) else {
        return Ok(None);
    };
    let free = alloc.rest();
    let capacity: u64 = free.iter().map(|r| r.1 - r.0).sum();
    if let Some((num, den)) = max_load {
        if homes.max_units().saturating_mul(den) > capacity.saturating_mul(num) {
            return Ok(None);
        }
    }
    let Some(placed) = homes.place(&free, geometry.blocks)? else {
        return Ok(None);
    };
    Ok(Some(Allocated {
        resize_dind,
        journal,
        inos,
        placements: placed.placements,
        free: placed.capacity - placed.units,
        placed: placed.units,
        capacity: placed.capacity,
    }))
}

/// `blocks` rounded up to the next of 8 steps per doubling (`m · 2ᵏ`, 8 ≤ m < 16), so
/// that a fitted size, and with it the geometry and the whole layout, changes only when
/// the content grows or shrinks by about 9 %.
fn quantise(blocks: u64) -> u64 {
    if blocks <= 16 {
        return blocks;
    }
    let step = 1u64 << (63 - blocks.leading_zeros() - 3);
    blocks.div_ceil(step) * step
}

/// Finds the layout for the requested size.
fn size_layout(plan: &Plan, homes: &Homes<'_>, opts: &Ext4Options) -> Result<Layout, Ext4WriteError> {
    let content = plan.content_blocks();
    match opts.size {
        Size::Fixed(bytes) => {
            let blocks = bytes / BLOCK_SIZE;
            lay_out(homes, opts, blocks, None)?.ok_or(Ext4WriteError::TooSmall {
                bytes,
                needed: content,
                free: blocks,
            })
        }
        Size::Fit {
            headroom_bytes,
            headroom_percent,
        } => {
            let headroom = headroom_bytes.div_ceil(BLOCK_SIZE) + content * u64::from(headroom_percent) / 100;
            let want = content + headroom;
            // The smallest quantised size that holds content and headroom with the data
            // bins at most `FIT_LOAD` full; start below it and step up.
            let load_floor = homes.max_units() * FIT_LOAD.1 / FIT_LOAD.0;
            let mut blocks = quantise(want.max(load_floor).max(2048));
            for _ in 0..200 {
                if let Some(l) = lay_out(homes, opts, blocks, Some(FIT_LOAD))? {
                    let usable = l.free.saturating_sub(l.reserved_blocks);
                    if usable >= headroom {
                        return Ok(l);
                    }
                }
                blocks = quantise(blocks + 1);
            }
            Err(Ext4WriteError::TooSmall {
                bytes: blocks * BLOCK_SIZE,
                needed: want,
                free: 0,
            })
        }
    }
}

/// The metadata blocks `emit` renders, in the order it renders them; written out after
/// the chunks' recipes are known, so a reused chunk's metadata is not written either.
#[derive(Default)]
struct Recorder {
    writes: Vec<(u64, Vec<u8>)>,
}

impl Recorder {
    fn block(&mut self, block: u64, bytes: &[u8]) -> io::Result<()> {
        self.writes.push((block, bytes.to_vec()));
        Ok(())
    }
}

/// Seeks only when the next write does not follow the last one.
struct Sink<'a, W: Write + Seek> {
    out: BufWriter<&'a mut W>,
    pos: u64,
    end: u64,
}

impl<W: Write + Seek> Sink<'_, W> {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if offset != self.pos {
            self.out.seek(SeekFrom::Start(offset))?;
        }
        self.out.write_all(bytes)?;
        self.pos = offset + bytes.len() as u64;
        self.end = self.end.max(self.pos);
        Ok(())
    }

    fn block(&mut self, block: u64, bytes: &[u8]) -> io::Result<()> {
        self.write_at(block * BLOCK_SIZE, bytes)
    }
}

/// Writes an ext4 filesystem holding `nodes` to `out` (which must read as zeros where
/// nothing is written) and reports its shape.
pub fn write_ext4(
    out: &mut (impl Write + Seek),
    nodes: &[Node],
    contents: &dyn Contents,
    opts: &Ext4Options,
) -> Result<Ext4Report, Ext4WriteError> {
    write_ext4_reusing(out, nodes, contents, opts, None).map(|(report, _)| report)
}

/// `blake3::derive_key` context of a data chunk's recipe ([`DataChunks`]).
pub const DATA_CHUNK_CONTEXT: &str = "w4b 2026-12 ext4 chunk v2";

/// The image's chunks that hold anything, each named by its *recipe*: the chunk's length,
/// for every run of regular-file blocks in it where the run starts in the chunk, the
/// file's content digest and size and which of its blocks, and for every metadata block
/// rendered into it (inode table, bitmaps, directories, extent leaves, xattr blocks,
/// superblocks and descriptors, the journal's superblock) its place and the BLAKE3 of its
/// bytes. Every other block is zero. The bytes of a chunk are a function of its recipe
/// alone (a file block is its content's bytes, zero-padded past the end), so a chunk
/// rendered once under a recipe can be reused whenever the recipe recurs (`mkfs-ext4`'s
/// `ext4-chunk` memos). The metadata is rendered in memory every time (it is what the
/// recipes name); file contents are read only for chunks that are not reused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataChunks {
    /// The chunk size the recipes were cut at (a multiple of the 4 KiB block).
    pub chunk_size: u64,
    /// Chunk number → recipe key, for every chunk that holds anything.
    pub recipes: std::collections::BTreeMap<u64, [u8; 32]>,
    /// The chunks the writer skipped because `reuse` said their bytes are known: they are
    /// left unwritten (holes) in `out`.
    pub reused: std::collections::BTreeSet<u64>,
}

/// Asked by [`write_ext4_reusing`] for each chunk's recipe key: `true` when the
/// caller already has that chunk's bytes, so the writer need not read or write them.
pub type Reuse<'a> = &'a mut dyn FnMut(&[u8; 32]) -> bool;

/// [`write_ext4`], cutting the image into `chunk_size` chunks (with `Some`) and naming
/// every chunk by its recipe ([`DataChunks`]): the chunks whose recipe `reuse` knows are
/// not written (nor their files read, when a file lies wholly in such chunks).
pub fn write_ext4_reusing(
    out: &mut (impl Write + Seek),
    nodes: &[Node],
    contents: &dyn Contents,
    opts: &Ext4Options,
    chunks: Option<(u64, Reuse<'_>)>,
) -> Result<(Ext4Report, DataChunks), Ext4WriteError> {
    prepare_ext4(nodes, opts, chunks)?.write(out, contents)
}

/// An image laid out, its metadata rendered in memory and its chunks named, before any
/// file is read or any byte written: [`prepare_ext4`] makes it, [`write`](Self::write)
/// writes it to a file, [`write_chunks`](Self::write_chunks) hands it over chunk by chunk.
/// Holds the metadata blocks (a few MiB for a large tree), never file contents.
pub struct PreparedExt4<'n> {
    nodes: &'n [Node],
    plan: Plan,
    layout: Layout,
    meta: Recorder,
    /// Plan positions of the regular files, in the order [`write`](Self::write) copies them.
    files: Vec<usize>,
    report: Ext4Report,
    data: DataChunks,
}

/// Lays out an ext4 filesystem holding `nodes` and renders its metadata; with `chunks`,
/// names every chunk by its recipe and asks `reuse` about each ([`write_ext4_reusing`]).
/// Fails as [`write_ext4`] does when the options are invalid or the tree does not fit.
pub fn prepare_ext4<'n>(
    nodes: &'n [Node],
    opts: &Ext4Options,
    chunks: Option<(u64, Reuse<'_>)>,
) -> Result<PreparedExt4<'n>, Ext4WriteError> {
    if opts.label.len() > 16 {
        return Err(Ext4WriteError::InvalidOption {
            field: "label",
            reason: "longer than 16 bytes".into(),
        });
    }
    if opts.reserved_percent > 50 {
        return Err(Ext4WriteError::InvalidOption {
            field: "reserved_percent",
            reason: "more than 50".into(),
        });
    }
    if opts.inode_ratio < 1024 || opts.inode_ratio > 64 * 1024 * 1024 {
        return Err(Ext4WriteError::InvalidOption {
            field: "inode_ratio",
            reason: "outside 1024..=64 MiB".into(),
        });
    }
    let plan = plan(nodes, opts.epoch)?;
    let layout = {
        let homes = plan.homes();
        size_layout(&plan, &homes, opts)?
    };
    let mut meta = Recorder::default();
    let mut files = Vec::new();
    let report = emit(&mut meta, &plan, &layout, opts, &mut files)?;
    let mut data = DataChunks::default();
    if let Some((chunk_size, reuse)) = chunks {
        data = data_chunks(&plan, &layout, &meta, chunk_size, reuse)?;
    }
    Ok(PreparedExt4 {
        nodes,
        plan,
        layout,
        meta,
        files,
        report,
        data,
    })
}

impl PreparedExt4<'_> {
    /// What the image will be: its size, free blocks, load.
    pub fn report(&self) -> &Ext4Report {
        &self.report
    }

    /// The chunks' recipes and which of them `reuse` knew.
    pub fn data_chunks(&self) -> &DataChunks {
        &self.data
    }

    /// Writes the image to `out` (which must read as zeros where nothing is written):
    /// the metadata, then every file in the order of its first block, seeking over zero
    /// blocks and the chunks `reuse` knew.
    pub fn write(
        self,
        out: &mut (impl Write + Seek),
        contents: &dyn Contents,
    ) -> Result<(Ext4Report, DataChunks), Ext4WriteError> {
        let PreparedExt4 {
            nodes,
            plan,
            layout,
            meta,
            files,
            report,
            data,
        } = self;
        let mut sink = Sink {
            out: BufWriter::with_capacity(1 << 20, out),
            pos: 0,
            end: 0,
        };
        sink.out.seek(SeekFrom::Start(0))?;
        let per = (data.chunk_size / BLOCK_SIZE).max(1);
        for (block, bytes) in &meta.writes {
            if data.reused.is_empty() {
                sink.block(*block, bytes)?;
                continue;
            }
            for (k, one) in bytes.chunks(BLOCK_SIZE as usize).enumerate() {
                let b = block + k as u64;
                if !data.reused.contains(&(b / per)) {
                    sink.block(b, one)?;
                }
            }
        }
        drop(meta);
        for i in files {
            let (p, pl) = (&plan.inodes[i], &layout.placements[i]);
            if let Body::File { content, node } = &p.body {
                let path = nodes.get(*node).map_or("", |n| n.path.as_str());
                copy_file(&mut sink, contents, content, p.size, pl, path, &data)?;
            }
        }
        let image = layout.geometry.blocks * BLOCK_SIZE;
        if sink.end < image {
            // Give the (sparse) image its full length.
            sink.write_at(image - 1, &[0])?;
        }
        sink.out.flush()?;
        Ok((report, data))
    }
}

/// The recipes of the laid-out image's chunks; asks `reuse` about each.
fn data_chunks(
    plan: &Plan,
    layout: &Layout,
    meta: &Recorder,
    chunk_size: u64,
    reuse: Reuse<'_>,
) -> Result<DataChunks, Ext4WriteError> {
    if chunk_size == 0 || !chunk_size.is_multiple_of(BLOCK_SIZE) {
        return Err(Ext4WriteError::InvalidOption {
            field: "chunk_size",
            reason: "not a positive multiple of the 4 KiB block".into(),
        });
    }
    let per = chunk_size / BLOCK_SIZE;
    let image_blocks = layout.geometry.blocks;
    // Per chunk: the file runs in it (block in chunk, content, size, first file block,
    // blocks), and how many of its blocks are file data.
    type Run = (u64, [u8; 32], u64, u64, u64);
    let mut runs: std::collections::BTreeMap<u64, Vec<Run>> = std::collections::BTreeMap::new();
    for (p, pl) in plan.inodes.iter().zip(&layout.placements) {
        let Body::File { content, .. } = &p.body else {
            continue;
        };
        let mut fb = 0u64;
        for e in &pl.extents {
            let (mut at, end) = (e.start, e.start + u64::from(e.len));
            while at < end {
                let chunk = at / per;
                let stop = end.min((chunk + 1) * per);
                runs.entry(chunk)
                    .or_default()
                    .push((at - chunk * per, content.0, p.size, fb, stop - at));
                fb += stop - at;
                at = stop;
            }
        }
    }
    // Per chunk: the metadata blocks rendered into it (block in chunk, BLAKE3 of its bytes).
    let mut blocks: std::collections::BTreeMap<u64, Vec<(u64, [u8; 32])>> = std::collections::BTreeMap::new();
    for (block, bytes) in &meta.writes {
        for (k, one) in bytes.chunks(BLOCK_SIZE as usize).enumerate() {
            let b = block + k as u64;
            let chunk = b / per;
            blocks
                .entry(chunk)
                .or_default()
                .push((b - chunk * per, *blake3::hash(one).as_bytes()));
        }
    }
    let mut out = DataChunks {
        chunk_size,
        ..DataChunks::default()
    };
    let chunks: std::collections::BTreeSet<u64> = runs.keys().chain(blocks.keys()).copied().collect();
    for chunk in chunks {
        let first = chunk * per;
        let last = image_blocks.min(first + per);
        let mut rs = runs.remove(&chunk).unwrap_or_default();
        let mut ms = blocks.remove(&chunk).unwrap_or_default();
        rs.sort_unstable();
        ms.sort_unstable();
        let mut h = blake3::Hasher::new_derive_key(DATA_CHUNK_CONTEXT);
        h.update(&((last - first) * BLOCK_SIZE).to_le_bytes());
        h.update(&(rs.len() as u64).to_le_bytes());
        for (at, content, size, fb, n) in &rs {
            h.update(&at.to_le_bytes());
            h.update(content);
            h.update(&size.to_le_bytes());
            h.update(&fb.to_le_bytes());
            h.update(&n.to_le_bytes());
        }
        h.update(&(ms.len() as u64).to_le_bytes());
        for (at, digest) in &ms {
            h.update(&at.to_le_bytes());
            h.update(digest);
        }
        let key = *h.finalize().as_bytes();
        if reuse(&key) {
            out.reused.insert(chunk);
        }
        out.recipes.insert(chunk, key);
    }
    Ok(out)
}

/// Per-group counts for the descriptors.
struct GroupCounts {
    free_blocks: u64,
    free_inodes: u64,
    used_dirs: u64,
    itable_unused: u64,
}

/// Renders every metadata block into `sink` and lists the plan positions of the regular
/// files, in the order their data should be written.
fn emit(
    sink: &mut Recorder,
    plan: &Plan,
    layout: &Layout,
    opts: &Ext4Options,
    files: &mut Vec<usize>,
) -> Result<Ext4Report, Ext4WriteError> {
    let g = &layout.geometry;
    let seed = csum::crc32c(!0, &opts.uuid);
    let bs = BLOCK_SIZE as usize;

    // Used blocks: metadata, the journal and everything placed.
    let used = used_blocks(layout);
    // Inodes in use: 1..=11 (reserved ones count as used, as mke2fs marks them) and the
    // tree's.
    let (used_inodes, dirs) = used_inodes(plan, layout);

    // Bitmaps and descriptors.
    let (gdt, totals) = group_tables(g, &used, &used_inodes, &dirs, seed, |meta, bb, ib| {
        sink.block(meta.block_bitmap, bb)?;
        sink.block(meta.inode_bitmap, ib)
    })?;

    // Superblock and its copies, each followed by the GDT. The copies are the empty
    // filesystem's, as `mke2fs` leaves them (see `empty_tables`).
    let journal_iblock = {
        let (ib, _) = inode::extent_tree(&layout.journal.extents, &layout.journal.leaves, 0);
        ib
    };
    let sb = SuperFields {
        free_blocks: totals.0,
        free_inodes: totals.1,
        journal_iblock,
    };
    let mut block0 = vec![0u8; bs];
    block0[1024..2048].copy_from_slice(&superblock(layout, opts, &sb, 0));
    sink.block(0, &block0)?;
    sink.block(1, &gdt)?;
    let (empty_gdt, empty_totals) = empty_tables(layout, opts, seed)?;
    let empty_sb = SuperFields {
        free_blocks: empty_totals.0,
        free_inodes: empty_totals.1,
        journal_iblock,
    };
    for grp in g.backup_groups() {
        let mut b = vec![0u8; bs];
        b[..1024].copy_from_slice(&superblock(layout, opts, &empty_sb, grp));
        sink.block(grp * BLOCKS_PER_GROUP, &b)?;
        sink.block(grp * BLOCKS_PER_GROUP + 1, &empty_gdt)?;
    }

    // The resize inode's double-indirect block and the primary reserved GDT blocks, each
    // an indirect block listing its copies in the backup groups (e2fsprogs `res_gdt.c`).
    let mut resize_sectors = 0;
    if let Some(dind) = layout.resize_dind {
        let per = layout::ADDRS_PER_BLOCK;
        let mut dbuf = vec![0u8; bs];
        let backups: Vec<u64> = g.backup_groups().collect();
        for j in 0..g.reserved_gdt {
            let pblk = 1 + g.desc_blocks + j;
            let at = (((g.desc_blocks + j) % per) * 4) as usize;
            dbuf[at..at + 4].copy_from_slice(&(pblk as u32).to_le_bytes());
            let mut ibuf = vec![0u8; bs];
            for (k, grp) in backups.iter().enumerate() {
                let v = (pblk + grp * BLOCKS_PER_GROUP) as u32;
                ibuf[k * 4..k * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            sink.block(pblk, &ibuf)?;
        }
        sink.block(dind, &dbuf)?;
        resize_sectors = (1 + g.reserved_gdt * (1 + backups.len() as u64)) * (BLOCK_SIZE / 512);
    }

    // Journal: its superblock; the rest stays zero.
    if let Some(first) = layout.journal.extents.first() {
        sink.block(
            first.start,
            &journal::superblock(BLOCK_SIZE as u32, layout.journal_blocks, &opts.uuid),
        )?;
    }
    for (at, leaf) in inode::extent_tree(
        &layout.journal.extents,
        &layout.journal.leaves,
        inode::inode_seed(seed, JOURNAL_INO, 0),
    )
    .1
    {
        sink.block(at, &leaf)?;
    }

    // Inode table: the special inodes, then the tree's in ascending number.
    let ipg = g.inodes_per_group;
    let mut table: Vec<u8> = Vec::new();
    let mut table_block: Option<u64> = None;
    let mut numbered: Vec<(u32, Option<usize>)> = (1..FIRST_INO)
        .filter(|&i| i != ROOT_INO)
        .map(|i| (i, None))
        .collect();
    numbered.extend(layout.inos.iter().enumerate().map(|(i, &ino)| (ino, Some(i))));
    numbered.sort_unstable();
    for (ino, at) in numbered {
        let bytes = inode_bytes(ino, at, plan, layout, opts, seed, resize_sectors);
        let grp = (u64::from(ino) - 1) / ipg;
        let idx = (u64::from(ino) - 1) % ipg;
        let blk = g.group_meta[grp as usize].inode_table + idx / INODES_PER_BLOCK;
        if table_block != Some(blk) {
            if let Some(b) = table_block {
                sink.block(b, &table)?;
            }
            table = vec![0u8; bs];
            table_block = Some(blk);
        }
        let off = ((idx % INODES_PER_BLOCK) * INODE_SIZE) as usize;
        table[off..off + INODE_SIZE as usize].copy_from_slice(&bytes);
    }
    if let Some(b) = table_block {
        sink.block(b, &table)?;
    }

    // Directory blocks, symlink targets, extent leaves, xattr blocks, file data, in the
    // order of their first block so that writes mostly ascend.
    let mut order: Vec<(u64, usize)> = layout
        .placements
        .iter()
        .enumerate()
        .map(|(i, pl)| {
            let first = pl.extents.first().map(|e| e.start);
            (
                first
                    .or(pl.leaves.first().copied())
                    .or(pl.xattr_block)
                    .unwrap_or(0),
                i,
            )
        })
        .collect();
    order.sort_unstable();
    for (_, i) in order {
        let (p, pl) = (&plan.inodes[i], &layout.placements[i]);
        let ino = layout.inos[i];
        let iseed = inode::inode_seed(seed, ino, 0);
        for (at, leaf) in inode::extent_tree(&pl.extents, &pl.leaves, iseed).1 {
            sink.block(at, &leaf)?;
        }
        if let Some(at) = pl.xattr_block {
            sink.block(at, &xattr::encode_block(&p.block_attrs, at, bs, seed))?;
        }
        let physical = pl
            .extents
            .iter()
            .flat_map(|e| e.start..e.start + u64::from(e.len));
        match &p.body {
            Body::Dir {
                entries,
                parent,
                min_blocks,
            } => {
                let ranges = dir::pack(entries, bs, *min_blocks);
                let entries: Vec<Entry> = entries
                    .iter()
                    .map(|e| Entry {
                        ino: layout.ino(e.ino),
                        ..e.clone()
                    })
                    .collect();
                for (i, (range, at)) in ranges.into_iter().zip(physical).enumerate() {
                    let dots = (i == 0).then_some((ino, layout.ino(*parent)));
                    sink.block(at, &dir::render(&entries[range], dots, bs, iseed))?;
                }
            }
            Body::SlowSymlink(target) => {
                if let Some(at) = physical.into_iter().next() {
                    let mut b = vec![0u8; bs];
                    b[..target.len()].copy_from_slice(target);
                    sink.block(at, &b)?;
                }
            }
            Body::File { .. } => files.push(i),
            _ => {}
        }
    }

    Ok(Ext4Report {
        image_bytes: g.blocks * BLOCK_SIZE,
        block_size: BLOCK_SIZE as u32,
        blocks: g.blocks,
        inodes: g.inodes(),
        free_blocks: totals.0,
        reserved_blocks: layout.reserved_blocks,
        free_inodes: totals.1,
        journal_blocks: layout.journal_blocks,
        reserved_gdt_blocks: g.reserved_gdt,
        placed_blocks: layout.placed,
        bin_capacity_blocks: layout.capacity,
    })
}

/// The metadata blocks, the resize inode's block, the journal and every placed block.
fn used_blocks(layout: &Layout) -> Bitset {
    let mut used: Bitset = layout.geometry.used.clone();
    let placements = std::iter::once(&layout.journal).chain(&layout.placements);
    for pl in placements {
        for e in &pl.extents {
            used.set_range(e.start, e.start + u64::from(e.len));
        }
        for &b in pl.leaves.iter().chain(&pl.xattr_block) {
            used.set(b);
        }
    }
    if let Some(b) = layout.resize_dind {
        used.set(b);
    }
    used
}

/// The inodes in use (bit `ino − 1`): the reserved ones, 1 to 11, and the tree's; and
/// the numbers of the directories.
fn used_inodes(plan: &Plan, layout: &Layout) -> (Bitset, Vec<u32>) {
    let mut used = Bitset::new(layout.geometry.inodes());
    used.set_range(0, u64::from(FIRST_INO));
    let mut dirs = Vec::new();
    for (p, &ino) in plan.inodes.iter().zip(&layout.inos) {
        used.set(u64::from(ino) - 1);
        if matches!(p.body, Body::Dir { .. }) {
            dirs.push(ino);
        }
    }
    (used, dirs)
}

/// The group descriptor table and the (free blocks, free inodes) totals of a filesystem
/// whose used blocks are `used` and whose used inodes are `inodes` (bit `ino − 1`), `dirs`
/// of them directories. `bitmaps` receives each group's block and inode bitmap.
fn group_tables(
    g: &Geometry,
    used: &Bitset,
    inodes: &Bitset,
    dirs: &[u32],
    seed: u32,
    mut bitmaps: impl FnMut(&layout::GroupMeta, &[u8], &[u8]) -> io::Result<()>,
) -> io::Result<(Vec<u8>, (u64, u64))> {
    let bs = BLOCK_SIZE as usize;
    let ipg = g.inodes_per_group;
    let mut gdt = vec![0u8; (g.desc_blocks * BLOCK_SIZE) as usize];
    let mut totals = (0u64, 0u64);
    for grp in 0..g.groups {
        let first = grp * BLOCKS_PER_GROUP;
        let n = g.group_blocks(grp);
        let mut bb = vec![0u8; bs];
        let mut used_blocks = 0;
        for i in 0..BLOCKS_PER_GROUP {
            if i >= n || used.get(first + i) {
                bb[(i / 8) as usize] |= 1 << (i % 8);
                used_blocks += u64::from(i < n);
            }
        }
        let mut ib = vec![0u8; bs];
        let (mut used_inodes, mut high) = (0, 0);
        for i in 0..(bs as u64 * 8) {
            let in_use = i < ipg && inodes.get(grp * ipg + i);
            if in_use {
                used_inodes += 1;
                high = i + 1;
            }
            if in_use || i >= ipg {
                ib[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        let counts = GroupCounts {
            free_blocks: n - used_blocks,
            free_inodes: ipg - used_inodes,
            used_dirs: dirs.iter().filter(|&&d| (u64::from(d) - 1) / ipg == grp).count() as u64,
            // The table beyond the last used inode is unused (`e2fsck` skips it).
            itable_unused: ipg - high,
        };
        totals.0 += counts.free_blocks;
        totals.1 += counts.free_inodes;
        let meta = &g.group_meta[grp as usize];
        bitmaps(meta, &bb, &ib)?;
        let bb_csum = csum::bitmap(seed, &bb);
        let ib_csum = csum::bitmap(seed, &ib[..(ipg / 8) as usize]);
        let d = descriptor(grp, meta, &counts, bb_csum, ib_csum, seed);
        gdt[(grp * DESC_SIZE) as usize..((grp + 1) * DESC_SIZE) as usize].copy_from_slice(&d);
    }
    Ok((gdt, totals))
}

/// The descriptor table and totals of the *empty* filesystem of this geometry: `/` and
/// `lost+found` only, the journal and the resize inode where this image has them. The
/// superblock and GDT copies carry these, as `mke2fs` leaves them and the kernel never
/// updates them (Raspberry Pi OS images carry such mkfs-time copies too), so the copies
/// depend on the size alone and a changed file does not change the blocks that hold them.
/// `e2fsck -b` finds the real counts from the primary bitmaps and inodes, as it does for
/// any filesystem filled after `mke2fs`.
fn empty_tables(
    layout: &Layout,
    opts: &Ext4Options,
    seed: u32,
) -> Result<(Vec<u8>, (u64, u64)), Ext4WriteError> {
    let root = Node {
        path: "/".into(),
        kind: NodeKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: opts.epoch,
        xattrs: BTreeMap::new(),
    };
    let empty = plan(std::slice::from_ref(&root), opts.epoch)?;
    let g = &layout.geometry;
    let a = allocate(&empty.homes(), g, layout.journal_blocks, None)?.ok_or(Ext4WriteError::TooSmall {
        bytes: g.blocks * BLOCK_SIZE,
        needed: 0,
        free: 0,
    })?;
    let empty_layout = Layout {
        geometry: g.clone(),
        journal_blocks: layout.journal_blocks,
        resize_dind: a.resize_dind,
        journal: a.journal,
        inos: a.inos,
        placements: a.placements,
        reserved_blocks: layout.reserved_blocks,
        free: a.free,
        placed: a.placed,
        capacity: a.capacity,
    };
    let used = used_blocks(&empty_layout);
    let (inodes, dirs) = used_inodes(&empty, &empty_layout);
    group_tables(g, &used, &inodes, &dirs, seed, |_, _, _| Ok(())).map_err(Ext4WriteError::from)
}

/// Streams one file's content into its extents, skipping all-zero blocks.
fn copy_file<W: Write + Seek>(
    sink: &mut Sink<'_, W>,
    contents: &dyn Contents,
    id: &ContentId,
    size: u64,
    pl: &Placement,
    path: &str,
    data: &DataChunks,
) -> Result<(), Ext4WriteError> {
    let per = (data.chunk_size / BLOCK_SIZE).max(1);
    let skipped = |block: u64| !data.reused.is_empty() && data.reused.contains(&(block / per));
    // Every block in reused chunks: the file is not even read.
    if !data.reused.is_empty()
        && pl
            .extents
            .iter()
            .all(|e| (e.start..e.start + u64::from(e.len)).all(skipped))
    {
        return Ok(());
    }
    let mut reader = contents.open(id).map_err(|source| Ext4WriteError::ContentOpen {
        path: path.to_string(),
        source,
    })?;
    let bs = BLOCK_SIZE as usize;
    let mut buf = vec![0u8; 256 * bs];
    let zero = vec![0u8; bs];
    let mut done: u64 = 0;
    for e in &pl.extents {
        let mut phys = e.start;
        let mut left = u64::from(e.len);
        while left > 0 {
            let n = left.min(256);
            let want = (n * BLOCK_SIZE).min(size - done) as usize;
            let chunk = &mut buf[..(n * BLOCK_SIZE) as usize];
            chunk.fill(0);
            let got =
                read_full(&mut reader, &mut chunk[..want]).map_err(|source| Ext4WriteError::ContentRead {
                    path: path.to_string(),
                    source,
                })?;
            if got < want {
                return Err(Ext4WriteError::ContentSize {
                    path: path.to_string(),
                    expected: size,
                    actual: (done + got as u64).to_string(),
                });
            }
            // Write runs of non-zero blocks in one go; seek over zero blocks.
            let mut i = 0;
            while i < n as usize {
                if chunk[i * bs..(i + 1) * bs] == zero[..] {
                    i += 1;
                    continue;
                }
                let skip = skipped(phys + i as u64);
                let mut j = i + 1;
                while j < n as usize
                    && chunk[j * bs..(j + 1) * bs] != zero[..]
                    && skipped(phys + j as u64) == skip
                {
                    j += 1;
                }
                if !skip {
                    sink.block(phys + i as u64, &chunk[i * bs..j * bs])?;
                }
                i = j;
            }
            done += want as u64;
            phys += n;
            left -= n;
        }
    }
    let mut extra = [0u8; 1];
    let more = read_full(&mut reader, &mut extra).map_err(|source| Ext4WriteError::ContentRead {
        path: path.to_string(),
        source,
    })?;
    if more > 0 {
        return Err(Ext4WriteError::ContentSize {
            path: path.to_string(),
            expected: size,
            actual: "more".into(),
        });
    }
    Ok(())
}

/// The 256 bytes of inode `ino`: a special inode (`at` is `None`), or the tree's inode at
/// position `at` of the plan.
fn inode_bytes(
    ino: u32,
    at: Option<usize>,
    plan: &Plan,
    layout: &Layout,
    opts: &Ext4Options,
    seed: u32,
    resize_sectors: u64,
) -> [u8; 256] {
    let per_block = BLOCK_SIZE / 512;
    let empty_ibody = xattr::encode_ibody(&[], INODE_SIZE as usize - inode::IBODY_AT);
    let special = |mode: u16, size: u64, sectors: u64, flags: u32, i_block: [u8; 60]| InodeFields {
        mode,
        uid: 0,
        gid: 0,
        size,
        time: opts.epoch,
        links: 1,
        sectors,
        flags,
        i_block,
        file_acl: 0,
        ibody: empty_ibody.clone(),
    };
    let fields = match ino {
        RESIZE_INO if layout.resize_dind.is_some() => {
            let mut ib = [0u8; 60];
            let dind = layout.resize_dind.unwrap_or(0) as u32;
            ib[13 * 4..14 * 4].copy_from_slice(&dind.to_le_bytes());
            // i_size covers every block a double-indirect map can address (res_gdt.c).
            let apb = layout::ADDRS_PER_BLOCK;
            let size = (apb * apb + apb + 12) * BLOCK_SIZE;
            special(S_IFREG | 0o600, size, resize_sectors, 0, ib)
        }
        JOURNAL_INO => {
            let j = &layout.journal;
            let (ib, _) = inode::extent_tree(&j.extents, &j.leaves, 0);
            let blocks = u64::from(layout.journal_blocks) + j.leaves.len() as u64;
            special(
                S_IFREG | 0o600,
                u64::from(layout.journal_blocks) * BLOCK_SIZE,
                blocks * per_block,
                EXTENTS_FL,
                ib,
            )
        }
        _ if at.is_some() => {
            let idx = at.unwrap_or(0);
            let (Some(p), Some(pl)) = (plan.inodes.get(idx), layout.placements.get(idx)) else {
                return [0; 256];
            };
            let iseed = inode::inode_seed(seed, ino, 0);
            let (i_block, flags) = match &p.body {
                Body::FastSymlink(t) => {
                    let mut b = [0u8; 60];
                    b[..t.len()].copy_from_slice(t);
                    (b, 0)
                }
                Body::Device { major, minor } => (inode::device_block(*major, *minor), 0),
                Body::Special => ([0u8; 60], 0),
                _ => (inode::extent_tree(&pl.extents, &pl.leaves, iseed).0, EXTENTS_FL),
            };
            let blocks = p.data_blocks + pl.leaves.len() as u64 + u64::from(pl.xattr_block.is_some());
            InodeFields {
                mode: p.mode,
                uid: p.uid,
                gid: p.gid,
                size: p.size,
                time: p.time,
                links: p.links as u16,
                sectors: blocks * per_block,
                flags,
                i_block,
                file_acl: pl.xattr_block.unwrap_or(0),
                ibody: xattr::encode_ibody(&p.ibody_attrs, INODE_SIZE as usize - inode::IBODY_AT),
            }
        }
        _ => return [0; 256],
    };
    inode::encode(ino, &fields, seed)
}

/// One 64-byte group descriptor (§"Block Group Descriptors").
fn descriptor(
    grp: u64,
    m: &layout::GroupMeta,
    c: &GroupCounts,
    bb_csum: u32,
    ib_csum: u32,
    seed: u32,
) -> [u8; 64] {
    let mut d = GroupDesc::zeroed();
    d.bg_block_bitmap_lo = m.block_bitmap as u32;
    d.bg_block_bitmap_hi = (m.block_bitmap >> 32) as u32;
    d.bg_inode_bitmap_lo = m.inode_bitmap as u32;
    d.bg_inode_bitmap_hi = (m.inode_bitmap >> 32) as u32;
    d.bg_inode_table_lo = m.inode_table as u32;
    d.bg_inode_table_hi = (m.inode_table >> 32) as u32;
    d.bg_free_blocks_count_lo = c.free_blocks as u16;
    d.bg_free_blocks_count_hi = (c.free_blocks >> 16) as u16;
    d.bg_free_inodes_count_lo = c.free_inodes as u16;
    d.bg_free_inodes_count_hi = (c.free_inodes >> 16) as u16;
    d.bg_used_dirs_count_lo = c.used_dirs as u16;
    d.bg_used_dirs_count_hi = (c.used_dirs >> 16) as u16;
    // The inode table reads as zeros (the sink leaves unwritten blocks zero).
    d.bg_flags = EXT4_BG_INODE_ZEROED;
    d.bg_block_bitmap_csum_lo = bb_csum as u16;
    d.bg_block_bitmap_csum_hi = (bb_csum >> 16) as u16;
    d.bg_inode_bitmap_csum_lo = ib_csum as u16;
    d.bg_inode_bitmap_csum_hi = (ib_csum >> 16) as u16;
    d.bg_itable_unused_lo = c.itable_unused as u16;
    d.bg_itable_unused_hi = (c.itable_unused >> 16) as u16;
    d.bg_checksum = csum::group_desc_crc32c(seed, grp as u32, &d.encode());
    d.encode()
}

/// Superblock values computed while writing.
struct SuperFields {
    free_blocks: u64,
    free_inodes: u64,
    journal_iblock: [u8; 60],
}

/// The 1024-byte superblock as stored in group `grp` (§"The Super Block").
fn superblock(layout: &Layout, opts: &Ext4Options, f: &SuperFields, grp: u64) -> [u8; 1024] {
    let g = &layout.geometry;
    let t = opts.epoch as u32;
    let t_hi = (opts.epoch >> 32) as u8;
    let mut s = Superblock::zeroed();
    s.s_inodes_count = g.inodes() as u32;
    s.s_blocks_count_lo = g.blocks as u32;
    s.s_blocks_count_hi = (g.blocks >> 32) as u32;
    s.s_r_blocks_count_lo = layout.reserved_blocks as u32;
    s.s_r_blocks_count_hi = (layout.reserved_blocks >> 32) as u32;
    s.s_free_blocks_count_lo = f.free_blocks as u32;
    s.s_free_blocks_count_hi = (f.free_blocks >> 32) as u32;
    s.s_free_inodes_count = f.free_inodes as u32;
    s.s_first_data_block = 0;
    s.s_log_block_size = 2; // 1024 << 2
    s.s_log_cluster_size = 2;
    s.s_blocks_per_group = BLOCKS_PER_GROUP as u32;
    s.s_clusters_per_group = BLOCKS_PER_GROUP as u32;
    s.s_inodes_per_group = g.inodes_per_group as u32;
    s.s_wtime = t;
    s.s_wtime_hi = t_hi;
    s.s_mkfs_time = t;
    s.s_mkfs_time_hi = t_hi;
    s.s_lastcheck = t;
    s.s_lastcheck_hi = t_hi;
    s.s_max_mnt_count = 0xFFFF; // -1: no mount-count checks
    s.s_magic = EXT4_SUPER_MAGIC;
    s.s_state = 1; // EXT4_VALID_FS
    s.s_errors = 1; // continue
    s.s_rev_level = 1; // EXT4_DYNAMIC_REV
    s.s_first_ino = FIRST_INO;
    s.s_inode_size = INODE_SIZE as u16;
    s.s_block_group_nr = grp as u16;
    s.s_feature_compat = compat::HAS_JOURNAL
        | compat::EXT_ATTR
        | compat::DIR_INDEX
        | if g.reserved_gdt > 0 {
            compat::RESIZE_INODE
        } else {
            0
        };
    s.s_feature_incompat = incompat::FILETYPE | incompat::EXTENTS | incompat::BIT64 | incompat::FLEX_BG;
    s.s_feature_ro_compat = ro_compat::SPARSE_SUPER
        | ro_compat::LARGE_FILE
        | ro_compat::HUGE_FILE
        | ro_compat::DIR_NLINK
        | ro_compat::EXTRA_ISIZE
        | ro_compat::METADATA_CSUM;
    s.s_uuid = opts.uuid;
    s.s_volume_name[..opts.label.len()].copy_from_slice(opts.label.as_bytes());
    s.s_reserved_gdt_blocks = g.reserved_gdt as u16;
    s.s_journal_inum = JOURNAL_INO;
    for (w, b) in s.s_hash_seed.iter_mut().zip(opts.hash_seed.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    s.s_def_hash_version = 1; // half_md4
    s.s_jnl_backup_type = 1; // EXT3_JNL_BACKUP_BLOCKS
    s.s_desc_size = DESC_SIZE as u16;
    s.s_default_mount_opts = 0x0C; // user_xattr | acl
                                   // s_jnl_blocks: the journal inode's i_block, then i_size_high and i_size.
    for (w, b) in s.s_jnl_blocks.iter_mut().zip(f.journal_iblock.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let jsize = u64::from(layout.journal_blocks) * BLOCK_SIZE;
    s.s_jnl_blocks[15] = (jsize >> 32) as u32;
    s.s_jnl_blocks[16] = jsize as u32;
    s.s_min_extra_isize = inode::EXTRA_ISIZE as u16;
    s.s_want_extra_isize = inode::EXTRA_ISIZE as u16;
    s.s_flags = 0x1; // EXT2_FLAGS_SIGNED_HASH, as mke2fs on x86
    s.s_log_groups_per_flex = 4;
    s.s_checksum_type = 1; // crc32c
    s.s_checksum = csum::superblock(&s.encode());
    s.encode()
}

#[cfg(test)]
mod oracle;
