//! The ext4 reader: opens a filesystem inside an image (at a partition offset), checks its
//! metadata — crc32c checksums under `metadata_csum`, crc16 descriptor checksums under
//! `gdt_csum` — and turns it into [`Node`]s in walk order plus streaming file readers.
//!
//! The walk starts at inode 2 and visits directories depth-first with children sorted by
//! name bytes (the order [`crate::formats::fs`] defines). Every loop is bounded by sizes
//! read from the image and every block a directory or mapping uses is read at most once
//! per walk, so damaged or hostile images give an [`Ext4Error`], never a hang or panic.
//!
//! Sizes are bounded by the filesystem too, because a file's holes cost no I/O to read
//! but still cost time to hash: an inode whose `i_size` is larger than the filesystem
//! (`s_blocks_count × block size`) or than its mapping can address is corrupt, and the
//! regular files of one walk may together claim at most twice the filesystem's bytes
//! (each data block belongs to one file, so that leaves as much again for holes). A
//! legal ext4 file can be sparse beyond its filesystem's size; such files are refused,
//! a trade measured against a 1 TiB `i_size` in an 8 MiB image keeping `w4b inspect`
//! hashing zeros for hours.
//!
//! File identity: readers have no content store, so a file's [`ContentId`] is its inode
//! number in a fixed encoding ([`content_id`]: the bytes `ext4`, the inode number as
//! little-endian u32, then 24 zero bytes) and [`Ext4`] implements [`Contents`] for those
//! ids. [`Ext4::walk`] gives the inode number beside every node as well.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, SeekFrom};

use super::blockmap::map_blocks;
use super::csum;
use super::dir::{self, parse_entries};
use super::error::Ext4Error;
use super::extent::{map_extents, MapContext, Run};
use super::group::{desc_location, expected_checksum, GroupDesc};
use super::inode::{FileType, Inode};
use super::spec::{incompat, inode_flags, le16, le32, ro_compat, EXT4_ROOT_INO, SUPERBLOCK_OFFSET};
use super::superblock::Superblock;
use super::xattr::{self, RawValue, EXT4_XATTR_MAGIC};
use crate::formats::fs::{ContentId, Contents, Node, NodeKind};

/// Largest extended attribute value (`XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: u32 = 65536;
/// Longest symlink target the kernel accepts (`PATH_MAX`, including the NUL).
const SYMLINK_MAX: u64 = 4096;

/// The [`ContentId`] of the file with inode `ino`: `b"ext4"`, `ino` as LE u32, then zeros.
pub fn content_id(ino: u32) -> ContentId {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(b"ext4");
    id[4..8].copy_from_slice(&ino.to_le_bytes());
    ContentId(id)
}

/// The inode number in a [`content_id`], or None for an id of another origin.
pub fn content_inode(id: &ContentId) -> Option<u32> {
    let (magic, rest) = id.0.split_at(4);
    let (ino, zeros) = rest.split_at(4);
    (magic == b"ext4" && zeros.iter().all(|&b| b == 0)).then(|| le32(ino, 0))
}

/// A node of the walk with its inode number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkEntry {
    pub node: Node,
    pub ino: u32,
}

/// Names a file for [`Ext4::open_file`]: an inode number or an absolute path.
#[derive(Clone, Copy, Debug)]
pub enum FileRef<'a> {
    Inode(u32),
    Path(&'a str),
}

impl From<u32> for FileRef<'_> {
    fn from(ino: u32) -> Self {
        FileRef::Inode(ino)
    }
}

impl<'a> From<&'a str> for FileRef<'a> {
    fn from(path: &'a str) -> Self {
        FileRef::Path(path)
    }
}

/// An inode as read from the table: its number, image offset, raw bytes and fields.
struct Loaded {
    ino: u32,
    offset: u64,
    raw: Vec<u8>,
    inode: Inode,
}

/// An open ext4 filesystem. Reads go through a `RefCell` so that several file readers and
/// the walk can share one `R`; each read borrows it only for its own seek and read.
pub struct Ext4<R> {
    io: RefCell<R>,
    /// Byte offset of the filesystem in the image.
    base: u64,
    /// Bytes of the partition.
    len: u64,
    sb: Superblock,
    groups: Vec<GroupDesc>,
    block_size: u64,
    csum_seed: u32,
}

impl<R: Read + Seek> Ext4<R> {
    /// Opens the filesystem occupying `len` bytes at `partition_offset` of `img`: reads
    /// and checks the superblock and every group descriptor.
    pub fn open(img: R, partition_offset: u64, len: u64) -> Result<Ext4<R>, Ext4Error> {
        let mut fs = Ext4 {
            io: RefCell::new(img),
            base: partition_offset,
            len,
            sb: Superblock::zeroed(),
            groups: Vec::new(),
            block_size: 1024,
            csum_seed: 0,
        };
        let mut raw = [0u8; 1024];
        fs.read_at(SUPERBLOCK_OFFSET, &mut raw, "superblock")?;
        let sb = Superblock::decode_lenient(&raw);
        let sb_off = partition_offset.saturating_add(SUPERBLOCK_OFFSET);
        sb.validate().map_err(|p| {
            if p.unsupported {
                Ext4Error::unsupported("superblock", sb_off, p.field, p.reason)
            } else {
                Ext4Error::corrupt("superblock", sb_off, p.field, p.reason)
            }
        })?;
        if sb.has_metadata_csum() {
            let computed = csum::superblock(&raw);
            if computed != sb.s_checksum {
                return Err(Ext4Error::Checksum {
                    structure: "superblock",
                    offset: sb_off,
                    field: "s_checksum",
                    stored: sb.s_checksum,
                    computed,
                });
            }
        }
        let bs = sb.block_size();
        let fs_bytes = sb.blocks_count().checked_mul(bs);
        if fs_bytes.is_none_or(|b| b > len) {
            return Err(Ext4Error::corrupt(
                "superblock",
                sb_off,
                "s_blocks_count_lo",
                format!(
                    "{} blocks of {bs} bytes do not fit the partition's {len} bytes",
                    sb.blocks_count()
                ),
            ));
        }
        fs.block_size = bs;
        fs.csum_seed = sb.csum_seed();
        fs.sb = sb;
        fs.groups = fs.read_group_descriptors()?;
        Ok(fs)
    }

    /// The superblock: UUID (`s_uuid`), label ([`Superblock::label`]), geometry, counts,
    /// features, hash seed (`s_hash_seed`), times ([`Superblock::time`]).
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The group descriptors, in group order.
    pub fn group_descriptors(&self) -> &[GroupDesc] {
        &self.groups
    }

    /// Gives the image back.
    pub fn into_inner(self) -> R {
        self.io.into_inner()
    }

    /// Reads `buf.len()` bytes at byte `pos` of the filesystem.
    fn read_at(&self, pos: u64, buf: &mut [u8], structure: &'static str) -> Result<(), Ext4Error> {
        let abs = self.base.saturating_add(pos);
        let end = pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(Ext4Error::corrupt(
                structure,
                abs,
                "(location)",
                format!("lies past the end of the {}-byte partition", self.len),
            ));
        }
        let mut io = self.io.borrow_mut();
        io.seek(SeekFrom::Start(abs))
            .and_then(|_| io.read_exact(buf))
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Ext4Error::corrupt(
                        structure,
                        abs,
                        "(location)",
                        "the image ends before this structure (truncated download?)",
                    )
                } else {
                    Ext4Error::Io {
                        offset: abs,
                        source: e,
                    }
                }
            })
    }

    fn block_pos(&self, block: u64) -> u64 {
        block.saturating_mul(self.block_size)
    }

    /// Image byte offset of filesystem byte `pos`.
    fn abs(&self, pos: u64) -> u64 {
        self.base.saturating_add(pos)
    }

    fn read_block(&self, block: u64, structure: &'static str) -> Result<Vec<u8>, Ext4Error> {
        if block >= self.sb.blocks_count() {
            return Err(Ext4Error::corrupt(
                structure,
                self.abs(self.block_pos(block)),
                "(block number)",
                format!(
                    "block {block} lies past the filesystem's {} blocks",
                    self.sb.blocks_count()
                ),
            ));
        }
        let mut buf = vec![0u8; usize::try_from(self.block_size).unwrap_or(0)];
        self.read_at(self.block_pos(block), &mut buf, structure)?;
        Ok(buf)
    }

    fn read_group_descriptors(&self) -> Result<Vec<GroupDesc>, Ext4Error> {
        const S: &str = "group descriptor";
        let count = self.sb.group_count();
        let ds = usize::from(self.sb.desc_size());
        let itable_blocks = u64::from(self.sb.s_inodes_per_group)
            .saturating_mul(u64::from(self.sb.inode_size()))
            .div_ceil(self.block_size);
        let mut groups = Vec::new();
        let mut cached: Option<(u64, Vec<u8>)> = None;
        for g in 0..count {
            let (block, within) = desc_location(&self.sb, g).ok_or_else(|| {
                Ext4Error::corrupt(S, self.abs(0), "s_desc_size", "descriptor location overflows")
            })?;
            if cached.as_ref().is_none_or(|(b, _)| *b != block) {
                cached = Some((block, self.read_block(block, S)?));
            }
            let buf = cached.as_ref().map(|(_, v)| v.as_slice()).unwrap_or(&[]);
            let at = usize::try_from(within).unwrap_or(usize::MAX);
            let offset = self.abs(self.block_pos(block).saturating_add(within));
            let raw = buf.get(at..at.saturating_add(ds)).ok_or_else(|| {
                Ext4Error::corrupt(S, offset, "s_desc_size", "descriptor crosses its block")
            })?;
            let gd = GroupDesc::decode_sized(raw, ds).unwrap_or_else(GroupDesc::zeroed);
            let group = u32::try_from(g).unwrap_or(u32::MAX);
            if let Some(computed) = expected_checksum(&self.sb, group, raw) {
                if computed != gd.bg_checksum {
                    return Err(Ext4Error::Checksum {
                        structure: S,
                        offset,
                        field: "bg_checksum",
                        stored: u32::from(gd.bg_checksum),
                        computed: u32::from(computed),
                    });
                }
            }
            let table = gd.inode_table();
            if table == 0
                || table
                    .checked_add(itable_blocks)
                    .is_none_or(|end| end > self.sb.blocks_count())
            {
                return Err(Ext4Error::corrupt(
                    S,
                    offset,
                    "bg_inode_table_lo",
                    format!("inode table at block {table} does not fit the filesystem"),
                ));
            }
            groups.push(gd);
        }
        Ok(groups)
    }

    fn load(&self, ino: u32) -> Result<Loaded, Ext4Error> {
        const S: &str = "inode";
        if ino == 0 || ino > self.sb.s_inodes_count {
            return Err(Ext4Error::corrupt(
                "directory entry",
                self.abs(0),
                "inode",
                format!("inode number {ino} is outside 1..={}", self.sb.s_inodes_count),
            ));
        }
        let ipg = self.sb.s_inodes_per_group;
        let index0 = ino.saturating_sub(1);
        let group = usize::try_from(index0.checked_div(ipg).unwrap_or(u32::MAX)).unwrap_or(usize::MAX);
        let within = u64::from(index0.checked_rem(ipg).unwrap_or(0));
        let gd = self.groups.get(group).ok_or_else(|| {
            Ext4Error::corrupt(
                S,
                self.abs(0),
                "inode",
                format!("inode {ino} is in group {group}, which does not exist"),
            )
        })?;
        let isz = self.sb.inode_size();
        let pos = self
            .block_pos(gd.inode_table())
            .saturating_add(within.saturating_mul(u64::from(isz)));
        let offset = self.abs(pos);
        let mut raw = vec![0u8; usize::from(isz)];
        self.read_at(pos, &mut raw, S)?;
        let inode = Inode::decode_lenient(&raw);
        let inode = if isz > 128 {
            let extra = usize::from(inode.i_extra_isize);
            if extra % 4 != 0 || extra.saturating_add(128) > usize::from(isz) {
                return Err(Ext4Error::corrupt(
                    S,
                    offset,
                    "i_extra_isize",
                    format!("{extra} does not fit a {isz}-byte inode"),
                ));
            }
            inode
        } else {
            Inode::decode_lenient(raw.get(..128).unwrap_or(&[]))
        };
        if self.sb.has_metadata_csum() && raw.iter().any(|&b| b != 0) {
            let seed = csum::inode_seed(self.csum_seed, ino, inode.i_generation);
            let computed = csum::inode(seed, &raw);
            let has_hi = isz > 128 && inode.i_extra_isize >= 4;
            let (stored, computed) = if has_hi {
                (
                    (u32::from(inode.i_checksum_hi) << 16) | u32::from(inode.l_i_checksum_lo),
                    computed,
                )
            } else {
                (u32::from(inode.l_i_checksum_lo), computed & 0xFFFF)
            };
            if stored != computed {
                return Err(Ext4Error::Checksum {
                    structure: S,
                    offset,
                    field: "l_i_checksum_lo",
                    stored,
                    computed,
                });
            }
        }
        if inode.has_flag(inode_flags::EXT4_ENCRYPT_FL) {
            return Err(Ext4Error::unsupported(
                S,
                offset,
                "i_flags",
                format!("inode {ino} is encrypted (fscrypt)"),
            ));
        }
        Ok(Loaded {
            ino,
            offset,
            raw,
            inode,
        })
    }

    /// The raw inode `ino`, checksum-verified: every timestamp with nanoseconds
    /// ([`Inode::atime`], [`Inode::ctime`], [`Inode::mtime`], [`Inode::crtime`]), link
    /// count, flags, generation and the rest of `struct ext4_inode`.
    pub fn inode(&self, ino: u32) -> Result<Inode, Ext4Error> {
        Ok(self.load(ino)?.inode)
    }

    fn inode_seed(&self, li: &Loaded) -> Option<u32> {
        self.sb
            .has_metadata_csum()
            .then(|| csum::inode_seed(self.csum_seed, li.ino, li.inode.i_generation))
    }

    /// Bytes of the filesystem: `s_blocks_count × block size` (checked against the
    /// partition by [`Ext4::open`]).
    fn fs_bytes(&self) -> u64 {
        self.sb.blocks_count().saturating_mul(self.block_size)
    }

    /// Refuses an inode whose `i_size` is larger than the filesystem or than its mapping
    /// can address (12 direct blocks and three levels of indirect blocks for a block map,
    /// 2³² blocks for extents), naming the inode and, when known, its path. Reading such
    /// a file would produce holes (zeros) far past anything the image stores.
    fn check_size(&self, li: &Loaded, path: Option<&str>) -> Result<(), Ext4Error> {
        let size = li.inode.size();
        let fs_bytes = self.fs_bytes();
        let addressable_blocks = if li.inode.has_flag(inode_flags::EXT4_EXTENTS_FL) {
            1u64 << 32
        } else {
            let per = self.block_size / 4;
            [1u32, 2, 3]
                .iter()
                .fold(12u64, |n, &l| n.saturating_add(per.saturating_pow(l)))
        };
        let addressable = addressable_blocks.saturating_mul(self.block_size);
        let (limit, what) = if addressable < fs_bytes {
            (addressable, "its block map can address")
        } else {
            (fs_bytes, "the filesystem holds")
        };
        if size <= limit {
            return Ok(());
        }
        let ino = li.ino;
        let at = path.map(|p| format!(" (`{p}`)")).unwrap_or_default();
        Err(Ext4Error::corrupt(
            "inode",
            li.offset,
            "i_size_lo",
            format!("of inode {ino}{at} is {size} bytes, more than the {limit} bytes {what}"),
        ))
    }

    /// The block runs of a non-inline inode, up to its size.
    fn runs(&self, li: &Loaded) -> Result<Vec<Run>, Ext4Error> {
        self.check_size(li, None)?;
        let max_logical = li.inode.size().div_ceil(self.block_size);
        let mut load = |b: u64| self.read_block(b, "file mapping block");
        let mut ctx = MapContext {
            block_size: self.block_size,
            blocks_count: self.sb.blocks_count(),
            first_data_block: u64::from(self.sb.s_first_data_block),
            max_logical,
            csum_seed: self.inode_seed(li),
            base: self.base,
            load: &mut load,
        };
        let i_block_offset = li.offset.saturating_add(0x28);
        if li.inode.has_flag(inode_flags::EXT4_EXTENTS_FL) {
            map_extents(&li.inode.i_block_bytes(), i_block_offset, &mut ctx)
        } else {
            map_blocks(&li.inode.i_block, i_block_offset, &mut ctx)
        }
    }

    /// Entries of the in-inode attribute area and the attribute block, with full names
    /// (`system.data` included), values not yet fetched from EA inodes.
    fn raw_xattrs(&self, li: &Loaded) -> Result<Vec<(String, RawValue, u64)>, Ext4Error> {
        let mut out = Vec::new();
        let body_start = 128usize.saturating_add(usize::from(li.inode.i_extra_isize));
        let region = li.raw.get(body_start..).unwrap_or(&[]);
        let region_off = li.offset.saturating_add(body_start as u64);
        if li.raw.len() > 128 && le32(region, 0) == EXT4_XATTR_MAGIC {
            let entries = xattr::parse_entries(region, 4, 4).map_err(|p| {
                Ext4Error::corrupt(
                    "in-inode xattr",
                    region_off.saturating_add(p.offset as u64),
                    p.field,
                    p.reason,
                )
            })?;
            for e in entries {
                out.push((
                    self.xattr_name(&e, region_off)?,
                    e.value,
                    region_off.saturating_add(e.offset as u64),
                ));
            }
        }
        let acl = li.inode.file_acl();
        if acl != 0 {
            const S: &str = "xattr block";
            let offset = self.abs(self.block_pos(acl));
            if acl < u64::from(self.sb.s_first_data_block) || acl >= self.sb.blocks_count() {
                return Err(Ext4Error::corrupt(
                    "inode",
                    li.offset,
                    "i_file_acl_lo",
                    format!("block {acl} lies outside the filesystem"),
                ));
            }
            let block = self.read_block(acl, S)?;
            let h = xattr::XattrHeader::decode_lenient(&block);
            if h.h_magic != EXT4_XATTR_MAGIC {
                return Err(Ext4Error::corrupt(
                    S,
                    offset,
                    "h_magic",
                    format!("{:#x} is not 0xea020000", h.h_magic),
                ));
            }
            if h.h_blocks != 1 {
                return Err(Ext4Error::corrupt(
                    S,
                    offset,
                    "h_blocks",
                    format!("{} is not 1", h.h_blocks),
                ));
            }
            if self.sb.has_metadata_csum() {
                let computed = csum::xattr_block(self.csum_seed, acl, &block);
                if computed != h.h_checksum {
                    return Err(Ext4Error::Checksum {
                        structure: S,
                        offset,
                        field: "h_checksum",
                        stored: h.h_checksum,
                        computed,
                    });
                }
            }
            let entries = xattr::parse_entries(&block, xattr::XattrHeader::SIZE, 0).map_err(|p| {
                Ext4Error::corrupt(S, offset.saturating_add(p.offset as u64), p.field, p.reason)
            })?;
            for e in entries {
                out.push((
                    self.xattr_name(&e, offset)?,
                    e.value,
                    offset.saturating_add(e.offset as u64),
                ));
            }
        }
        Ok(out)
    }

    fn xattr_name(&self, e: &xattr::RawEntry, region_off: u64) -> Result<String, Ext4Error> {
        xattr::full_name(e.index, &e.name).ok_or_else(|| {
            Ext4Error::unsupported(
                "xattr entry",
                region_off.saturating_add(e.offset as u64),
                "e_name_index",
                format!(
                    "attribute {:?} with name index {} (unknown index or non-UTF-8 name)",
                    String::from_utf8_lossy(&e.name),
                    e.index
                ),
            )
        })
    }

    fn xattrs_of(&self, li: &Loaded) -> Result<BTreeMap<String, Vec<u8>>, Ext4Error> {
        let mut out = BTreeMap::new();
        for (name, value, at) in self.raw_xattrs(li)? {
            if name == "system.data" {
                continue; // inline data, not an attribute users see
            }
            let mut bytes = self.xattr_value(value, at)?;
            if name == "system.posix_acl_access" || name == "system.posix_acl_default" {
                bytes = xattr::acl_from_disk(&bytes).ok_or_else(|| {
                    Ext4Error::corrupt(
                        "xattr entry",
                        at,
                        "e_value_offs",
                        format!("`{name}` is not a valid ext4 ACL"),
                    )
                })?;
            }
            out.insert(name, bytes);
        }
        Ok(out)
    }

    fn xattr_value(&self, value: RawValue, at: u64) -> Result<Vec<u8>, Ext4Error> {
        match value {
            RawValue::Inline(v) => Ok(v),
            RawValue::Inode { inum, size } => {
                if size > XATTR_SIZE_MAX {
                    return Err(Ext4Error::corrupt(
                        "xattr entry",
                        at,
                        "e_value_size",
                        format!("{size} exceeds the 64 KiB limit"),
                    ));
                }
                let li = self.load(inum)?;
                if !li.inode.has_flag(inode_flags::EXT4_EA_INODE_FL) || li.inode.size() < u64::from(size) {
                    return Err(Ext4Error::corrupt(
                        "xattr entry",
                        at,
                        "e_value_inum",
                        format!("inode {inum} is not an attribute inode of at least {size} bytes"),
                    ));
                }
                let mut v = Vec::new();
                self.data_reader(&li)?
                    .take(u64::from(size))
                    .read_to_end(&mut v)
                    .map_err(|e| Ext4Error::Io {
                        offset: li.offset,
                        source: e,
                    })?;
                Ok(v)
            }
        }
    }

    /// Extended attributes of inode `ino` by full name; ACLs in the VFS format.
    pub fn xattrs(&self, ino: u32) -> Result<BTreeMap<String, Vec<u8>>, Ext4Error> {
        self.xattrs_of(&self.load(ino)?)
    }

    /// Inline data: the 60 bytes of `i_block` then the `system.data` attribute, cut at
    /// the size.
    fn inline_data(&self, li: &Loaded) -> Result<Vec<u8>, Ext4Error> {
        if !self.sb.has_incompat(incompat::INLINE_DATA) {
            return Err(Ext4Error::corrupt(
                "inode",
                li.offset,
                "i_flags",
                "inline data flag without the inline_data feature",
            ));
        }
        let mut data = li.inode.i_block_bytes().to_vec();
        for (name, value, at) in self.raw_xattrs(li)? {
            if name == "system.data" {
                data.extend(self.xattr_value(value, at)?);
            }
        }
        let size = usize::try_from(li.inode.size()).unwrap_or(usize::MAX);
        if size > data.len() {
            return Err(Ext4Error::corrupt(
                "inode",
                li.offset,
                "i_size_lo",
                format!("{size} bytes of inline data, but only {} stored", data.len()),
            ));
        }
        data.truncate(size);
        Ok(data)
    }

    /// A reader of the inode's data bytes, whatever its type.
    fn data_reader(&self, li: &Loaded) -> Result<FileReader<'_, R>, Ext4Error> {
        let data = if li.inode.has_flag(inode_flags::EXT4_INLINE_DATA_FL) {
            Data::Inline(self.inline_data(li)?)
        } else {
            Data::Runs(self.runs(li)?)
        };
        Ok(FileReader {
            fs: self,
            size: li.inode.size(),
            pos: 0,
            data,
        })
    }

    /// Entries of directory inode `li`, `.` and `..` included. `seen` collects the blocks
    /// read, to reject blocks shared between directories during a walk.
    fn dir_entries(
        &self,
        li: &Loaded,
        mut seen: Option<&mut BTreeSet<u64>>,
    ) -> Result<Vec<dir::Entry>, Ext4Error> {
        const S: &str = "directory block";
        let filetype = self.sb.has_incompat(incompat::FILETYPE);
        if li.inode.has_flag(inode_flags::EXT4_INLINE_DATA_FL) {
            let data = self.inline_data(li)?;
            let parent = le32(&data, 0);
            let mut out = vec![
                dir::Entry {
                    inode: li.ino,
                    file_type: 2,
                    name: b".".to_vec(),
                    offset: 0,
                },
                dir::Entry {
                    inode: parent,
                    file_type: 2,
                    name: b"..".to_vec(),
                    offset: 0,
                },
            ];
            // The rest of i_block, then the system.data value, each a region of entries.
            let (first, second) = data.split_at(data.len().min(60));
            for region in [first.get(4..).unwrap_or(&[]), second] {
                let entries = parse_entries(region, self.block_size, filetype)
                    .map_err(|p| Ext4Error::corrupt("inline directory", li.offset, p.field, p.reason))?;
                out.extend(entries);
            }
            return Ok(out);
        }
        let runs = self.runs(li)?;
        let nblocks = li.inode.size().div_ceil(self.block_size);
        let seed = self.inode_seed(li);
        let htree = li.inode.has_flag(inode_flags::EXT4_INDEX_FL);
        let mut out = Vec::new();
        let mut runs_iter = runs.iter().peekable();
        for logical in 0..nblocks {
            while runs_iter.peek().is_some_and(|r| r.logical_end() <= logical) {
                runs_iter.next();
            }
            let physical = match runs_iter.peek() {
                Some(r) if r.logical <= logical && !r.uninit => {
                    r.physical.saturating_add(logical.saturating_sub(r.logical))
                }
                _ => {
                    return Err(Ext4Error::corrupt(
                        "directory",
                        li.offset,
                        "i_block",
                        format!("directory inode {} has a hole at block {logical}", li.ino),
                    ))
                }
            };
            if let Some(seen) = seen.as_deref_mut() {
                if !seen.insert(physical) {
                    return Err(Ext4Error::corrupt(
                        S,
                        self.abs(self.block_pos(physical)),
                        "(block number)",
                        format!("block {physical} belongs to two directories"),
                    ));
                }
            }
            let block = self.read_block(physical, S)?;
            let offset = self.abs(self.block_pos(physical));
            if let Some(seed) = seed {
                self.check_dir_block(&block, logical, htree, seed, offset)?;
            }
            let entries = parse_entries(&block, self.block_size, filetype).map_err(|p| {
                Ext4Error::corrupt(S, offset.saturating_add(p.offset as u64), p.field, p.reason)
            })?;
            out.extend(entries);
        }
        Ok(out)
    }

    fn check_dir_block(
        &self,
        block: &[u8],
        logical: u64,
        htree: bool,
        seed: u32,
        offset: u64,
    ) -> Result<(), Ext4Error> {
        const S: &str = "directory block";
        if let Some(co) = htree
            .then(|| dir::dx_count_offset(block, logical, self.block_size))
            .flatten()
        {
            let limit = usize::from(le16(block, co));
            let count = usize::from(le16(block, co.saturating_add(2)));
            let tail = co.saturating_add(limit.saturating_mul(8));
            if count > limit || tail.saturating_add(8) > block.len() {
                return Err(Ext4Error::corrupt(
                    "htree index block",
                    offset.saturating_add(co as u64),
                    "limit",
                    format!("count {count} and limit {limit} do not fit the block with its dx_tail"),
                ));
            }
            let covered = block
                .get(..co.saturating_add(count.saturating_mul(8)))
                .unwrap_or(&[]);
            let computed = csum::dx_block(seed, covered, le32(block, tail));
            let stored = le32(block, tail.saturating_add(4));
            if computed != stored {
                return Err(Ext4Error::Checksum {
                    structure: "htree index block",
                    offset: offset.saturating_add(tail as u64),
                    field: "dt_checksum",
                    stored,
                    computed,
                });
            }
            return Ok(());
        }
        let Some(stored) = dir::leaf_tail(block) else {
            return Err(Ext4Error::corrupt(
                S,
                offset,
                "det_reserved_ft",
                "metadata_csum is on but the block has no checksum tail",
            ));
        };
        let covered = block
            .get(..block.len().saturating_sub(dir::DirEntryTail::SIZE))
            .unwrap_or(&[]);
        let computed = csum::dir_block(seed, covered);
        if computed != stored {
            let tail_off = offset.saturating_add(covered.len() as u64);
            return Err(Ext4Error::Checksum {
                structure: S,
                offset: tail_off,
                field: "det_checksum",
                stored,
                computed,
            });
        }
        Ok(())
    }

    /// Entries of the directory with inode `ino` (`.` and `..` included), in disk order.
    pub fn read_dir(&self, ino: u32) -> Result<Vec<dir::Entry>, Ext4Error> {
        let li = self.load(ino)?;
        if li.inode.file_type() != Some(FileType::Directory) {
            return Err(Ext4Error::WrongType {
                path: format!("<inode {ino}>"),
                expected: "directory",
            });
        }
        self.dir_entries(&li, None)
    }

    /// The inode number of absolute `path`, without following symlinks.
    pub fn lookup(&self, path: &str) -> Result<u32, Ext4Error> {
        let mut ino = EXT4_ROOT_INO;
        let mut walked = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            let li = self.load(ino)?;
            if li.inode.file_type() != Some(FileType::Directory) {
                return Err(Ext4Error::WrongType {
                    path: if walked.is_empty() { "/".into() } else { walked },
                    expected: "directory",
                });
            }
            walked.push('/');
            walked.push_str(comp);
            ino = self
                .dir_entries(&li, None)?
                .into_iter()
                .find(|e| e.name == comp.as_bytes())
                .map(|e| e.inode)
                .ok_or_else(|| Ext4Error::NotFound { path: walked.clone() })?;
        }
        Ok(ino)
    }

    /// A reader of a regular file's bytes: holes and uninitialised extents read as zeros,
    /// the length is exactly `i_size`.
    pub fn open_file<'a>(&self, file: impl Into<FileRef<'a>>) -> Result<FileReader<'_, R>, Ext4Error> {
        let file = file.into();
        let (ino, name) = match file {
            FileRef::Inode(ino) => (ino, format!("<inode {ino}>")),
            FileRef::Path(p) => (self.lookup(p)?, p.to_string()),
        };
        let li = self.load(ino)?;
        if li.inode.file_type() != Some(FileType::Regular) {
            return Err(Ext4Error::WrongType {
                path: name,
                expected: "regular file",
            });
        }
        if let FileRef::Path(p) = file {
            self.check_size(&li, Some(p))?;
        }
        self.data_reader(&li)
    }

    /// The target of the symlink at absolute `path` (the link itself, not followed), or
    /// `None` when `path` is not a symlink.
    pub fn read_link(&self, path: &str) -> Result<Option<String>, Ext4Error> {
        let li = self.load(self.lookup(path)?)?;
        if li.inode.file_type() != Some(FileType::Symlink) {
            return Ok(None);
        }
        self.symlink_target(&li).map(Some)
    }

    fn symlink_target(&self, li: &Loaded) -> Result<String, Ext4Error> {
        const S: &str = "symlink";
        let inode = &li.inode;
        let size = inode.size();
        if size > SYMLINK_MAX {
            return Err(Ext4Error::corrupt(
                S,
                li.offset,
                "i_size_lo",
                format!("target of {size} bytes exceeds 4096"),
            ));
        }
        let ea_blocks = if inode.file_acl() != 0 {
            self.block_size / 512
        } else {
            0
        };
        let huge = self.sb.has_ro_compat(ro_compat::HUGE_FILE);
        let data_blocks = inode.blocks_512(self.block_size, huge).saturating_sub(ea_blocks);
        let fast = !inode.has_flag(inode_flags::EXT4_EXTENTS_FL)
            && !inode.has_flag(inode_flags::EXT4_INLINE_DATA_FL)
            && size < 60
            && data_blocks == 0;
        let bytes = if fast {
            let n = usize::try_from(size).unwrap_or(0);
            inode.i_block_bytes().get(..n).unwrap_or(&[]).to_vec()
        } else {
            let mut v = Vec::new();
            self.data_reader(li)?
                .read_to_end(&mut v)
                .map_err(|e| Ext4Error::Io {
                    offset: li.offset,
                    source: e,
                })?;
            v
        };
        String::from_utf8(bytes).map_err(|e| {
            Ext4Error::unsupported(
                S,
                li.offset,
                "i_block",
                format!("target {:?} is not UTF-8", String::from_utf8_lossy(e.as_bytes())),
            )
        })
    }

    fn node(
        &self,
        li: &Loaded,
        path: &str,
        first_paths: &mut BTreeMap<u32, String>,
    ) -> Result<Node, Ext4Error> {
        let inode = &li.inode;
        if matches!(inode.file_type(), Some(FileType::Regular | FileType::Directory)) {
            self.check_size(li, Some(path))?;
        }
        let kind = match inode.file_type() {
            Some(FileType::Regular) => match first_paths.get(&li.ino) {
                Some(first) => NodeKind::HardLink {
                    target: first.clone(),
                },
                None => {
                    first_paths.insert(li.ino, path.to_string());
                    NodeKind::File {
                        size: inode.size(),
                        content: content_id(li.ino),
                    }
                }
            },
            Some(FileType::Directory) => NodeKind::Dir,
            Some(FileType::Symlink) => NodeKind::Symlink {
                target: self.symlink_target(li)?,
            },
            Some(FileType::CharDevice) => {
                let (major, minor) = inode.device();
                NodeKind::CharDev { major, minor }
            }
            Some(FileType::BlockDevice) => {
                let (major, minor) = inode.device();
                NodeKind::BlockDev { major, minor }
            }
            Some(FileType::Fifo) => NodeKind::Fifo,
            Some(FileType::Socket) => NodeKind::Socket,
            None => {
                return Err(Ext4Error::corrupt(
                    "inode",
                    li.offset,
                    "i_mode",
                    format!("{:#o} at `{path}` is no file type", inode.i_mode),
                ));
            }
        };
        let xattrs = if matches!(kind, NodeKind::HardLink { .. }) {
            BTreeMap::new()
        } else {
            self.xattrs_of(li)?
        };
        Ok(Node {
            path: path.to_string(),
            kind,
            mode: inode.permissions(),
            uid: inode.uid(),
            gid: inode.gid(),
            mtime: inode.mtime().secs,
            xattrs,
        })
    }

    /// Every node reachable from `/` in walk order, with its inode number.
    ///
    /// The first path of a regular file with several names is its `File` node; later
    /// paths are `HardLink`s to it (with the same mode, owner and time, and no xattrs of
    /// their own). Other inode types with several names appear once per name.
    pub fn walk(&self) -> Result<Vec<WalkEntry>, Ext4Error> {
        let mut out = Vec::new();
        let mut first_paths = BTreeMap::new();
        let mut dirs_seen: BTreeMap<u32, String> = BTreeMap::new();
        let mut dir_blocks = BTreeSet::new();
        let mut stack = vec![("/".to_string(), EXT4_ROOT_INO)];
        // Bytes the regular files claim, each inode once: what reading them all costs.
        let budget = self.fs_bytes().saturating_mul(2);
        let mut claimed: u64 = 0;
        while let Some((path, ino)) = stack.pop() {
            let li = self.load(ino)?;
            let node = self.node(&li, &path, &mut first_paths)?;
            if let NodeKind::File { size, .. } = node.kind {
                claimed = claimed.saturating_add(size);
                if claimed > budget {
                    return Err(Ext4Error::corrupt(
                        "inode",
                        li.offset,
                        "i_size_lo",
                        format!(
                            "of inode {ino} (`{path}`) brings the regular files to {claimed} bytes, \
                             more than twice the filesystem's {} bytes (its data plus as much in holes)",
                            self.fs_bytes()
                        ),
                    ));
                }
            }
            let is_dir = node.kind == NodeKind::Dir;
            if ino == EXT4_ROOT_INO && !is_dir {
                return Err(Ext4Error::corrupt(
                    "inode",
                    li.offset,
                    "i_mode",
                    "the root inode is not a directory",
                ));
            }
            out.push(WalkEntry { node, ino });
            if !is_dir {
                continue;
            }
            if let Some(other) = dirs_seen.insert(ino, path.clone()) {
                return Err(Ext4Error::corrupt(
                    "directory",
                    li.offset,
                    "i_links_count",
                    format!("directory inode {ino} appears at both `{other}` and `{path}`"),
                ));
            }
            let mut children: Vec<(Vec<u8>, u32)> = self
                .dir_entries(&li, Some(&mut dir_blocks))?
                .into_iter()
                .filter(|e| e.name != b"." && e.name != b"..")
                .map(|e| (e.name, e.inode))
                .collect();
            children.sort();
            if let Some(w) = children
                .windows(2)
                .find(|w| w.first().map(|a| &a.0) == w.get(1).map(|b| &b.0))
            {
                let name = w
                    .first()
                    .map(|a| String::from_utf8_lossy(&a.0).into_owned())
                    .unwrap_or_default();
                return Err(Ext4Error::corrupt(
                    "directory",
                    li.offset,
                    "name",
                    format!("`{path}` holds `{name}` twice"),
                ));
            }
            for (name, child) in children.into_iter().rev() {
                let name = String::from_utf8(name).map_err(|e| {
                    Ext4Error::unsupported(
                        "directory entry",
                        li.offset,
                        "name",
                        format!(
                            "a name in `{path}` is not UTF-8: {:?}",
                            String::from_utf8_lossy(e.as_bytes())
                        ),
                    )
                })?;
                let child_path = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                stack.push((child_path, child));
            }
        }
        Ok(out)
    }

    /// Every node reachable from `/` in walk order (see [`Ext4::walk`]); a file's
    /// [`ContentId`] is [`content_id`] of its inode.
    pub fn nodes(&self) -> Result<Vec<Node>, Ext4Error> {
        Ok(self.walk()?.into_iter().map(|e| e.node).collect())
    }
}

impl<R: Read + Seek> Contents for Ext4<R> {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        let ino = content_inode(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not an ext4 content id"))?;
        let reader = self.open_file(ino).map_err(io::Error::other)?;
        Ok(Box::new(reader))
    }
}

enum Data {
    Runs(Vec<Run>),
    Inline(Vec<u8>),
}

/// Streams one file's bytes (see [`Ext4::open_file`]).
pub struct FileReader<'a, R> {
    fs: &'a Ext4<R>,
    size: u64,
    pos: u64,
    data: Data,
}

impl<R> FileReader<'_, R> {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl<R: Read + Seek> Read for FileReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = left.min(buf.len() as u64);
        let bs = self.fs.block_size;
        let n = match &self.data {
            Data::Inline(bytes) => {
                let start = usize::try_from(self.pos).unwrap_or(usize::MAX);
                let n = usize::try_from(want).unwrap_or(0);
                let src = bytes.get(start..start.saturating_add(n)).unwrap_or(&[]);
                buf.get_mut(..src.len()).unwrap_or(&mut []).copy_from_slice(src);
                src.len()
            }
            Data::Runs(runs) => {
                let logical = self.pos.checked_div(bs).unwrap_or(0);
                let idx = runs.partition_point(|r| r.logical_end() <= logical);
                let run = runs.get(idx).filter(|r| r.logical <= logical);
                let (n, physical) = match run {
                    Some(r) => {
                        let end = r.logical_end().saturating_mul(bs);
                        let n = want.min(end.saturating_sub(self.pos));
                        let phys = r
                            .physical
                            .saturating_add(logical.saturating_sub(r.logical))
                            .saturating_mul(bs)
                            .saturating_add(self.pos.checked_rem(bs).unwrap_or(0));
                        (n, (!r.uninit).then_some(phys))
                    }
                    None => {
                        let next = runs.get(idx).map_or(u64::MAX, |r| r.logical.saturating_mul(bs));
                        (want.min(next.saturating_sub(self.pos)), None)
                    }
                };
                let n = usize::try_from(n).unwrap_or(0);
                let dst = buf.get_mut(..n).unwrap_or(&mut []);
                match physical {
                    Some(p) => self.fs.read_at(p, dst, "file data").map_err(io::Error::other)?,
                    None => dst.fill(0),
                }
                n
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ext4 file mapping made no progress",
            ));
        }
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}
