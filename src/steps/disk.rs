//! `disk`: the raw disk image — the base's partition table, rebuilt, and the two
//! partition images at their offsets.
//!
//! The table keeps the base's identity: the MBR disk signature (or the GPT disk GUID,
//! partition GUIDs, names, attributes and header geometry), the boot code, every
//! partition's index, type and bootable flag, and every start. Only sizes change, and only
//! upward: a partition image larger than its base partition (a root filesystem grown for
//! headroom, a boot partition given `boot.size`) makes its partition that image's size
//! rounded up to 4 MiB, and any later partition that would now overlap moves to the next
//! 4 MiB boundary. The disk ends where the last partition ends plus whatever the base
//! kept after its last partition (the GPT backup, or padding), so an unchanged layout is
//! exactly the base's disk size.
//!
//! Resizing or moving a partition never changes a `PARTUUID`: on MBR it is
//! `<disk signature>-<index>` and both stay; on GPT it is the partition's GUID, which is
//! kept. `root=PARTUUID=…` in `cmdline.txt` and the `PARTUUID=` lines of `/etc/fstab`
//! therefore stay right. The step checks this after building the table: should anything
//! ever give a partition another `PARTUUID` than the base's, it fails (`w4b::disk::id_changed`)
//! instead of writing an image that would not boot.
//!
//! The disk is a chunked output ([`w4b_cache::ChunkIndex`], 1 MiB chunks aligned to the
//! disk's start) assembled **by reference**, in O(chunks) rather than O(bytes). The table
//! is rendered into memory ([`TableBytes`]: the byte runs the writer wrote over an
//! otherwise zero disk); then each chunk of the disk is one of
//!
//! - **a partition image's own chunk**, reused without reading it: no table byte falls in
//!   it, it lies wholly inside one image at a chunk-aligned offset of that image, and the
//!   image is an index with a full-length chunk there. `layout` puts partitions on 4 MiB
//!   boundaries, so on w4b's own layouts this is every chunk an image covers but its last;
//! - **the zero chunk** (never stored), where nothing covers it: a gap, or a partition
//!   beyond its image's end;
//! - **rendered**: zeros, the covering image bytes read through [`OutputReader`]
//!   (verified), the table bytes on top, stored with `put_chunk`. These are the table's
//!   chunks (the MBR or the primary GPT at the start, the backup GPT at the end), an image's
//!   short last chunk, and every chunk of an image stored as a plain blob or placed at an
//!   offset that is no multiple of 1 MiB (correct, and as slow as a copy: a build note
//!   names such a partition).
//!
//! On the `image_build` bench's 2 GiB disk the copy this replaces (both images into a
//! sparse scratch file, then hashed and fsynced whole) cost 10.7 s of a one-file rebuild;
//! by reference, with the images stored as indexes, the same shape of disk takes 0.2–0.7 s
//! even in a debug build (2,044 of 2,048 chunks referenced; docs/decisions.md).
//! A reused chunk must be in the local store (or the remote, from which it is fetched,
//! verified) when the index is stored; one that is gone makes the partition image an
//! unavailable input, so the engine re-runs the `mkfs` step that wrote it.
//!
//! Keyed: nothing besides the inputs (the table and both images are upstream outputs)
//! and the version — every choice here is a function of them.

#![forbid(unsafe_code)]

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::str::FromStr;
use std::sync::Arc;

use w4b_cache::{zero_digest, CacheError, ChunkIndex, ChunkRef, Digest, OutputReader, OutputRef, CHUNK_SIZE};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::table::{load_table, TableJson};
use super::unavailable_blob;
use crate::formats::gpt::Guid;
use crate::formats::partition::{
    align_up, Partition, PartitionError, PartitionTable, TableKind, BOOT_CODE_LEN, RPI_ALIGNMENT_LBA,
    SECTOR_SIZE,
};
use crate::image::FsKind;
use crate::store::AppStore;

/// Why the disk could not be assembled.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DiskError {
    #[error("the base's partition table has a {field} `{value}` this w4b cannot rebuild")]
    #[diagnostic(
        code(w4b::disk::unsupported),
        help("w4b rebuilds MBR tables of primary partitions and GPTs with 512-byte sectors")
    )]
    Unsupported { field: &'static str, value: String },

    #[error("partition {index} would get PARTUUID `{new}` instead of the base's `{base}`")]
    #[diagnostic(
        code(w4b::disk::id_changed),
        help("`cmdline.txt` and `/etc/fstab` name partitions by PARTUUID; keeping the base's disk id is required for now")
    )]
    IdChanged { index: u32, base: String, new: String },

    #[error("the rebuilt partition table is invalid")]
    #[diagnostic(code(w4b::disk::table))]
    Table(
        #[source]
        #[diagnostic_source]
        PartitionError,
    ),

    #[error("the disk would be {bytes} bytes, larger than this w4b supports")]
    #[diagnostic(code(w4b::disk::too_large))]
    TooLarge { bytes: u128 },

    #[error("cannot store the disk image in the cache")]
    #[diagnostic(
        code(w4b::disk::store),
        help("the disk's new chunks and its index are written into the cache; make room on its filesystem")
    )]
    Store(#[source] w4b_cache::CacheError),

    #[error("cannot read the image of partition {partition} (`{digest}`)")]
    #[diagnostic(
        code(w4b::disk::read),
        help("the image is read from the cache; check the disk the cache is on (`dmesg`), then build again")
    )]
    Read {
        partition: u32,
        digest: Digest,
        #[source]
        source: io::Error,
    },
}

fn unsupported(field: &'static str, value: impl ToString) -> StepError {
    StepError::diag(DiskError::Unsupported {
        field,
        value: value.to_string(),
    })
}

/// The new layout: the table and the disk size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub table: PartitionTable,
    pub disk_size: u64,
    /// `(partition index, first byte)` of each partition that gets a filesystem image
    /// (the FAT and the ext4 one); other partitions keep zeros.
    pub placements: Vec<(u32, u64)>,
}

/// Rebuilds the base's table for partition images of `boot_bytes` (FAT) and `root_bytes`
/// (ext4) bytes. See the module docs for the rules.
pub fn layout(base: &TableJson, boot_bytes: u64, root_bytes: u64) -> Result<Layout, StepError> {
    if base.sector_size != SECTOR_SIZE {
        return Err(unsupported("sector size", base.sector_size));
    }
    let sector = u64::from(SECTOR_SIZE);
    let mut table = match base.kind.as_str() {
        "mbr" => {
            let sig =
                u32::from_str_radix(&base.disk_id, 16).map_err(|_| unsupported("disk id", &base.disk_id))?;
            PartitionTable::new_mbr(sig)
        }
        "gpt" => {
            let guid = Guid::from_str(&base.disk_id).map_err(|_| unsupported("disk GUID", &base.disk_id))?;
            let mut t = PartitionTable::new_gpt(guid);
            if let (
                Some(g),
                TableKind::Gpt {
                    entry_count,
                    first_usable_lba,
                    ..
                },
            ) = (&base.gpt, &mut t.kind)
            {
                *entry_count = g.entry_count;
                *first_usable_lba = g.first_usable_lba;
            }
            t
        }
        other => return Err(unsupported("table kind", other)),
    };
    if let Some(code) = &base.boot_code {
        let bytes = hex::decode(code).map_err(|_| unsupported("boot code", "not hex"))?;
        table.boot_code = <[u8; BOOT_CODE_LEN]>::try_from(bytes.as_slice())
            .map_err(|_| unsupported("boot code length", bytes.len()))?;
    }
    let mut parts: Vec<_> = base.partitions.iter().collect();
    parts.sort_by_key(|p| p.start);
    let base_end = parts
        .iter()
        .map(|p| p.start.saturating_add(p.size))
        .max()
        .unwrap_or(0);
    let mut prev_end = 0u64;
    let mut placements = Vec::new();
    for p in parts {
        let image = match p.filesystem {
            FsKind::Fat => Some(boot_bytes),
            FsKind::Ext4 => Some(root_bytes),
            FsKind::Unknown => None,
        };
        let needed = image.map_or(0, |b| b.div_ceil(sector));
        let size = if needed > p.size {
            align_up(needed, RPI_ALIGNMENT_LBA).ok_or_else(|| unsupported("partition size", needed))?
        } else {
            p.size
        };
        let start = if prev_end <= p.start {
            p.start
        } else {
            align_up(prev_end, RPI_ALIGNMENT_LBA).ok_or_else(|| unsupported("partition start", prev_end))?
        };
        prev_end = start.saturating_add(size);
        let partition = match &table.kind {
            TableKind::Mbr { .. } => {
                let t = u8::from_str_radix(&p.type_id, 16)
                    .map_err(|_| unsupported("partition type", &p.type_id))?;
                if crate::formats::mbr::is_extended_type(t) {
                    return Err(unsupported("extended partition", p.index));
                }
                Partition::mbr(p.index, start, size, t, p.bootable)
            }
            TableKind::Gpt { .. } => {
                let t = Guid::from_str(&p.type_id).map_err(|_| unsupported("partition type", &p.type_id))?;
                let id = p.partuuid.as_deref().unwrap_or_default();
                let guid = Guid::from_str(id).map_err(|_| unsupported("partition GUID", id))?;
                let mut q = Partition::gpt(
                    p.index,
                    start,
                    size,
                    t,
                    guid,
                    p.name.as_deref().unwrap_or_default(),
                );
                q.bootable = p.bootable;
                q.attributes = p.attributes.unwrap_or(0);
                q
            }
        };
        if image.is_some() {
            placements.push((p.index, start.saturating_mul(sector)));
        }
        table.partitions.push(partition);
    }
    table.partitions.sort_by_key(|p| p.index);
    // Whatever the base kept after its last partition (the GPT backup, padding) follows
    // the new last partition too.
    let slack = base.disk_size.saturating_sub(base_end.saturating_mul(sector));
    let new_end = u128::from(prev_end.max(base_end)) * u128::from(sector);
    let disk = new_end + u128::from(slack);
    let disk_size = u64::try_from(disk).map_err(|_| StepError::diag(DiskError::TooLarge { bytes: disk }))?;
    if let (TableKind::Gpt { last_usable_lba, .. }, Some(g)) = (&mut table.kind, &base.gpt) {
        // A non-standard last usable sector moves with the disk's end.
        *last_usable_lba = g
            .last_usable_lba
            .map(|l| l.saturating_add((disk_size.saturating_sub(base.disk_size)) / sector));
    }
    // The guarantee `cmdline.txt` and `fstab` rely on.
    for p in &base.partitions {
        let new = table.partuuid(p.index);
        if new != p.partuuid {
            return Err(StepError::diag(DiskError::IdChanged {
                index: p.index,
                base: p.partuuid.clone().unwrap_or_default(),
                new: new.unwrap_or_default(),
            }));
        }
    }
    table
        .validate(disk_size)
        .map_err(|e| StepError::diag(DiskError::Table(e)))?;
    Ok(Layout {
        table,
        disk_size,
        placements,
    })
}

/// The partition table as [`PartitionTable::write`] leaves it on a disk of zeros: the
/// byte runs it wrote, in the order written (a later run wins where two overlap). The
/// writer only seeks and writes, so recording its writes is rendering the table.
#[derive(Debug, Default)]
pub struct TableBytes {
    runs: Vec<(u64, Vec<u8>)>,
    pos: u64,
    len: u64,
}

impl TableBytes {
    /// `table` rendered for a disk of `disk_size` bytes.
    pub fn render(table: &PartitionTable, disk_size: u64) -> Result<TableBytes, PartitionError> {
        let mut t = TableBytes {
            len: disk_size,
            ..TableBytes::default()
        };
        table.write(&mut t, disk_size)?;
        Ok(t)
    }

    /// Whether any written byte lies in `[start, end)`.
    pub fn touches(&self, start: u64, end: u64) -> bool {
        self.runs
            .iter()
            .any(|(at, b)| *at < end && at.saturating_add(b.len() as u64) > start)
    }

    /// Copies the written bytes that fall in `buf` (which holds the disk from `start`)
    /// over it.
    pub fn overlay(&self, start: u64, buf: &mut [u8]) {
        let end = start.saturating_add(buf.len() as u64);
        for (at, bytes) in &self.runs {
            let lo = start.max(*at);
            let hi = end.min(at.saturating_add(bytes.len() as u64));
            if lo >= hi {
                continue;
            }
            let (n, from, to) = ((hi - lo) as usize, (lo - at) as usize, (lo - start) as usize);
            if let (Some(dst), Some(src)) = (buf.get_mut(to..to + n), bytes.get(from..from + n)) {
                dst.copy_from_slice(src);
            }
        }
    }
}

impl Write for TableBytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.runs.push((self.pos, buf.to_vec()));
            self.pos = self.pos.saturating_add(buf.len() as u64);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for TableBytes {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the disk's start"))?;
        Ok(self.pos)
    }
}

/// A partition image placed on the disk.
#[derive(Clone, Debug)]
pub struct Piece {
    /// The partition's index, for messages.
    pub partition: u32,
    /// Its first byte on the disk.
    pub start: u64,
    /// The image: its digest and length.
    pub fs: OutputRef,
    /// The image's chunks when it is an index of [`CHUNK_SIZE`] chunks covering exactly
    /// `fs.size` bytes (the only kind whose chunks a disk chunk can be); `None` for a plain
    /// blob.
    pub chunks: Option<Vec<ChunkRef>>,
}

impl Piece {
    fn end(&self) -> u64 {
        self.start.saturating_add(self.fs.size)
    }
}

/// Where one chunk of the disk comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Nothing covers it: the zero chunk of this length.
    Zero(u32),
    /// Chunk `chunk` of piece `piece`'s image, as it is.
    Reuse { piece: usize, chunk: ChunkRef },
    /// Table bytes, an image's partial chunk, an image that is a blob or sits at an
    /// unaligned offset: read and stored.
    Render,
}

/// The source of every chunk of a disk of `disk_size` bytes (the last chunk may be
/// short), from where the table wrote and where the images lie. Reads nothing.
pub fn plan_chunks(disk_size: u64, table: &TableBytes, pieces: &[Piece]) -> Vec<Source> {
    let chunk = u64::from(CHUNK_SIZE);
    (0..disk_size.div_ceil(chunk))
        .map(|k| {
            let start = k * chunk;
            let end = disk_size.min(start.saturating_add(chunk));
            let len = (end - start) as u32;
            if table.touches(start, end) {
                return Source::Render;
            }
            let mut covering = pieces
                .iter()
                .enumerate()
                .filter(|(_, p)| p.fs.size > 0 && p.start < end && p.end() > start);
            let Some((i, p)) = covering.next() else {
                return Source::Zero(len);
            };
            if covering.next().is_some() || p.start > start || p.end() < end {
                return Source::Render;
            }
            let within = start - p.start;
            let own = within
                .is_multiple_of(chunk)
                .then_some(p.chunks.as_ref())
                .flatten()
                .and_then(|c| c.get((within / chunk) as usize))
                .filter(|c| c.len == len);
            match own {
                Some(c) => Source::Reuse { piece: i, chunk: *c },
                None => Source::Render,
            }
        })
        .collect()
}

/// How many chunks of each kind a disk was assembled from, for the build note.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assembly {
    pub reused: u64,
    pub zero: u64,
    pub rendered: u64,
}

/// `disk`: input 0 is `unpack` (`table`), input 1 `mkfs-fat` (`fs`), input 2 `mkfs-ext4`
/// (`fs`); output `disk`, the raw image as a chunked output.
pub struct DiskStep {
    pub store: Arc<AppStore>,
}

/// Chunks between two checks for Ctrl-C and progress reports: 64 MiB of disk, a few
/// milliseconds when rendering, far less when chunks are reused.
const CHECK_EVERY: u64 = 64;

impl DiskStep {
    fn store_err(e: CacheError) -> StepError {
        StepError::diag(DiskError::Store(e))
    }

    /// An input that cannot be read as asked: a missing or corrupt one is unavailable
    /// (the engine re-runs its producer), anything else a failure of the cache itself.
    fn input_err(fs: &OutputRef, e: CacheError) -> StepError {
        match e {
            CacheError::Missing { .. } | CacheError::Corrupt { .. } => StepError::InputUnavailable(fs.digest),
            other => Self::store_err(other),
        }
    }

    /// Image `fs`'s chunks if it is an index a disk can reference, `None` for a plain blob
    /// (or an index of another shape, which is rendered like one).
    fn chunks_of(&self, fs: &OutputRef) -> Result<Option<Vec<ChunkRef>>, StepError> {
        let idx = self
            .store
            .inner()
            .index(&fs.digest)
            .map_err(|e| Self::input_err(fs, e))?;
        Ok(idx
            .filter(|i| i.chunk_size == CHUNK_SIZE && !i.trailer && i.total_len() == fs.size)
            .map(|i| i.chunks))
    }

    /// Makes sure every reused chunk is in the local store: pins each image (GC keeps
    /// what a pinned index reaches) and then looks, fetching what is missing from the
    /// remote. A chunk found nowhere makes its image an unavailable input.
    fn ensure_local(&self, pieces: &[Piece], plan: &[Source]) -> Result<(), StepError> {
        let local = self.store.local();
        for (i, p) in pieces.iter().enumerate() {
            let wanted: Vec<Digest> = plan
                .iter()
                .filter_map(|s| match s {
                    Source::Reuse { piece, chunk } if *piece == i && !chunk.is_zero() => Some(chunk.digest),
                    _ => None,
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let missing: Vec<Digest> = local
                .pinned(&[p.fs.digest], || {
                    wanted.iter().copied().filter(|d| !local.contains(d)).collect()
                })
                .map_err(Self::store_err)?;
            for d in missing {
                self.store
                    .inner()
                    .fetch(&d)
                    .map_err(|e| Self::input_err(&p.fs, e))?;
            }
        }
        Ok(())
    }

    /// Chunk `[start, start + len)` of the disk: zeros, the images' bytes that fall in it
    /// (read verified; `readers` opens each image once, when first needed), the table on
    /// top.
    fn render(
        &self,
        start: u64,
        len: u32,
        pieces: &[Piece],
        readers: &mut [Option<OutputReader>],
        table: &TableBytes,
    ) -> Result<Vec<u8>, StepError> {
        let mut buf = vec![0u8; len as usize];
        let end = start.saturating_add(u64::from(len));
        for (p, reader) in pieces.iter().zip(readers.iter_mut()) {
            let (lo, hi) = (start.max(p.start), end.min(p.end()));
            if lo >= hi {
                continue;
            }
            let r = match reader {
                Some(r) => r,
                None => reader.insert(
                    self.store
                        .inner()
                        .open_output(&p.fs.digest)
                        .map_err(|e| Self::input_err(&p.fs, e))?,
                ),
            };
            let dst = &mut buf[(lo - start) as usize..(hi - start) as usize];
            r.seek(SeekFrom::Start(lo - p.start))
                .and_then(|_| r.read_exact(dst))
                .map_err(|e| match unavailable_blob(&e) {
                    Some(_) => StepError::InputUnavailable(p.fs.digest),
                    None => StepError::diag(DiskError::Read {
                        partition: p.partition,
                        digest: p.fs.digest,
                        source: e,
                    }),
                })?;
        }
        table.overlay(start, &mut buf);
        Ok(buf)
    }

    /// Assembles the disk of layout `l` from `pieces` and stores its index; returns the
    /// index's name and what it was made of.
    pub fn assemble(
        &self,
        cx: &RunContext<'_>,
        l: &Layout,
        pieces: &[Piece],
    ) -> Result<(Digest, Assembly), StepError> {
        let table =
            TableBytes::render(&l.table, l.disk_size).map_err(|e| StepError::diag(DiskError::Table(e)))?;
        let plan = plan_chunks(l.disk_size, &table, pieces);
        self.ensure_local(pieces, &plan)?;
        let mut readers: Vec<Option<OutputReader>> = pieces.iter().map(|_| None).collect();
        let step = u64::from(CHUNK_SIZE);
        let list = || -> Result<(Vec<ChunkRef>, Assembly), StepError> {
            let mut chunks = Vec::with_capacity(plan.len());
            let mut made = Assembly::default();
            for (k, source) in plan.iter().enumerate() {
                let start = k as u64 * step;
                if (k as u64).is_multiple_of(CHECK_EVERY) {
                    cx.check_cancel()?;
                    cx.progress(start, Some(l.disk_size));
                }
                chunks.push(match *source {
                    Source::Zero(len) => {
                        made.zero += 1;
                        ChunkRef {
                            digest: zero_digest(len),
                            len,
                        }
                    }
                    Source::Reuse { chunk, .. } => {
                        made.reused += 1;
                        chunk
                    }
                    Source::Render => {
                        made.rendered += 1;
                        let len = (l.disk_size.min(start.saturating_add(step)) - start) as u32;
                        let bytes = self.render(start, len, pieces, &mut readers, &table)?;
                        self.store.local().put_chunk(&bytes).map_err(Self::store_err)?
                    }
                });
            }
            Ok((chunks, made))
        };
        // Rendered chunks are published unsynced and made durable by one `syncfs(2)`
        // before the index names them: up to 2,048 `fsync`s otherwise, for a disk whose
        // images are plain blobs.
        let (chunks, made) = self
            .store
            .local()
            .with_deferred_sync(list)
            .map_err(Self::store_err)??;
        cx.check_cancel()?;
        // The image a reused chunk came from.
        let owner = |d: &Digest| {
            plan.iter().find_map(|s| match s {
                Source::Reuse { piece, chunk } if chunk.digest == *d => pieces.get(*piece),
                _ => None,
            })
        };
        let name = self
            .store
            .local()
            .put_index(&ChunkIndex::fixed(chunks))
            .map_err(|e| match e {
                // A reused chunk removed behind the build's back since it was looked for.
                CacheError::IncompleteIndex { chunk, .. } if owner(&chunk).is_some() => {
                    StepError::InputUnavailable(owner(&chunk).map_or(chunk, |p| p.fs.digest))
                }
                other => Self::store_err(other),
            })?;
        cx.progress(l.disk_size, Some(l.disk_size));
        Ok((name, made))
    }
}

impl Step for DiskStep {
    fn kind(&self) -> &'static str {
        "disk"
    }
    fn version(&self) -> u32 {
        // 2: the disk is a chunk index assembled by reference (same bytes, but the output
        // is named by its index, not by a blob's BLAKE3).
        2
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(Vec::new())
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let base = load_table(&self.store, cx.input(0, "table")?)?;
        let boot = cx.input(1, "fs")?;
        let root = cx.input(2, "fs")?;
        let l = layout(&base, boot.size, root.size)?;
        let (boot_chunks, root_chunks) = (self.chunks_of(&boot)?, self.chunks_of(&root)?);
        let mut pieces = Vec::new();
        for (index, offset) in &l.placements {
            let kind = base
                .partitions
                .iter()
                .find(|p| p.index == *index)
                .map(|p| p.filesystem);
            let (fs, chunks) = match kind {
                Some(FsKind::Fat) => (boot, boot_chunks.clone()),
                _ => (root, root_chunks.clone()),
            };
            if !offset.is_multiple_of(u64::from(CHUNK_SIZE)) {
                cx.note(&format!(
                    "partition {index} starts at byte {offset}, not on a 1 MiB boundary: its chunks are read and stored again instead of reused"
                ));
            }
            pieces.push(Piece {
                partition: *index,
                start: *offset,
                fs,
                chunks,
            });
        }
        let (digest, made) = self.assemble(cx, &l, &pieces)?;
        cx.note(&format!(
            "{} chunks by reference, {} rendered, {} zero",
            made.reused, made.rendered, made.zero
        ));
        let mut out = Outputs::new();
        out.insert(
            "disk".into(),
            OutputRef {
                digest,
                size: l.disk_size,
            },
        );
        Ok(out)
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod assembly_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::table::{GptJson, PartitionJson, TABLE_SCHEMA};

    /// [`super::assembly_tests::part`], not bootable.
    fn part(index: u32, start: u64, size: u64, fs: FsKind, type_id: &str, partuuid: &str) -> PartitionJson {
        PartitionJson {
            bootable: false,
            ..super::assembly_tests::part(index, start, size, fs, type_id, partuuid)
        }
    }

    fn mbr() -> TableJson {
        TableJson {
            boot_code: None,
            boot_mount: "/boot/firmware".into(),
            disk_id: "1a2b3c4d".into(),
            disk_size: 256 << 20,
            gpt: None,
            kind: "mbr".into(),
            partitions: vec![
                part(1, 8192, 131_072, FsKind::Fat, "c", "1a2b3c4d-01"),
                part(2, 139_264, 385_024, FsKind::Ext4, "83", "1a2b3c4d-02"),
            ],
            schema: TABLE_SCHEMA,
            sector_size: 512,
        }
    }

    #[test]
    fn an_unchanged_layout_is_the_base_table() {
        let l = layout(&mbr(), 64 << 20, 188 << 20).unwrap();
        assert_eq!(l.disk_size, 256 << 20);
        let p2 = l.table.partition(2).unwrap();
        assert_eq!((p2.start_lba, p2.size_lba), (139_264, 385_024));
        assert_eq!(
            l.table.kind,
            TableKind::Mbr {
                disk_signature: 0x1a2b_3c4d
            }
        );
        assert_eq!(l.placements, vec![(1, 8192 * 512), (2, 139_264 * 512)]);
    }

    #[test]
    fn a_grown_root_grows_its_partition_and_the_disk_keeping_partuuids() {
        let l = layout(&mbr(), 64 << 20, 300 << 20).unwrap();
        let p2 = l.table.partition(2).unwrap();
        assert_eq!(p2.start_lba, 139_264);
        assert_eq!(p2.size_lba, (300 << 20) / 512);
        assert_eq!(l.disk_size, (139_264 + ((300 << 20) / 512)) * 512);
        assert_eq!(l.table.partuuid(2).as_deref(), Some("1a2b3c4d-02"));
    }

    #[test]
    fn a_grown_boot_partition_moves_the_root_partition_to_the_next_4_mib() {
        let l = layout(&mbr(), (64 << 20) + 1, 188 << 20).unwrap();
        let p1 = l.table.partition(1).unwrap();
        assert_eq!(p1.size_lba, 131_072 + 8192);
        let p2 = l.table.partition(2).unwrap();
        assert_eq!(p2.start_lba, 139_264 + 8192);
        assert_eq!(l.placements[1], (2, (139_264 + 8192) * 512));
        assert_eq!(l.disk_size, (256 << 20) + (4 << 20));
    }

    #[test]
    fn gpt_keeps_guids_names_and_the_backup_area() {
        let mut t = mbr();
        t.kind = "gpt".into();
        t.disk_id = "00000000-0000-0000-0000-00000000feed".into();
        t.gpt = Some(GptJson {
            entry_count: 128,
            first_usable_lba: 34,
            last_usable_lba: None,
        });
        t.partitions[0].type_id = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7".into();
        t.partitions[0].partuuid = Some("00000000-0000-0000-0000-0000000000b1".into());
        t.partitions[0].name = Some("boot".into());
        t.partitions[1].type_id = "0fc63daf-8483-4772-8e79-3d69d8477de4".into();
        t.partitions[1].partuuid = Some("00000000-0000-0000-0000-0000000000b2".into());
        t.partitions[1].size -= 34;
        let l = layout(&t, 64 << 20, 300 << 20).unwrap();
        assert_eq!(l.table.partition(1).unwrap().name, "boot");
        assert_eq!(
            l.table.partuuid(2).as_deref(),
            Some("00000000-0000-0000-0000-0000000000b2")
        );
        // 34 sectors of backup GPT after the grown partition.
        let p2 = l.table.partition(2).unwrap();
        assert_eq!(l.disk_size, (p2.end_lba() + 34) * 512);
    }

    #[test]
    fn extended_partitions_are_refused() {
        let mut t = mbr();
        t.partitions[1].type_id = "5".into();
        t.partitions[1].filesystem = FsKind::Unknown;
        match layout(&t, 64 << 20, 0) {
            Err(StepError::Diagnostic(d)) => {
                assert_eq!(d.code().unwrap().to_string(), "w4b::disk::unsupported")
            }
            other => panic!("{other:?}"),
        }
    }
}
