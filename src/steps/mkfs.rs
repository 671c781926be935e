//! `mkfs-fat` and `mkfs-ext4`: a tree into a partition image (`fs`), with the base's
//! identity — volume id, UUID, hash seed, labels, geometry — taken from `unpack`'s
//! `table`, so `cmdline.txt`, `/etc/fstab` and anything else that names the filesystems
//! by `UUID=` or `LABEL=` keeps working.
//!
//! The images are written by the in-process writers ([`crate::formats::fat`],
//! [`crate::formats::ext4::write`]) and stored as chunk indexes: their 1 MiB chunks are
//! hashed in parallel, zero chunks are named and never written, and only the chunks the
//! store lacks are written, so a mostly empty 2 GiB root filesystem costs its data, and a
//! rebuild after a one-file change — which the stable layouts keep to a few chunks — costs
//! those chunks, not the image.
//!
//! - `mkfs-ext4` renders the image chunk by chunk, in order, straight into the store
//!   (`PreparedExt4::write_chunks` into a `ChunkSink`): no scratch file, so each byte of
//!   the image is copied once, into its chunk. The size is settled (a `grow` root laid out
//!   again) before anything is read or written.
//! - `mkfs-fat` writes into a temporary file in the store's own filesystem, seeking over
//!   zero runs, and publishes it with `StoreDir::adopt_chunked` (holes never read). The
//!   boot image is small (0.5 s of a cold bench build) and its writer streams the FATs,
//!   then directories and files, not chunk by chunk.
//!
//! Both give the same index for the same bytes. Consumers read `fs` with `open_output`
//! (verified random access). File contents stream from the store; progress counts
//! content bytes read, and every read checks for Ctrl-C.
//!
//! Each step also writes `report`, a small JSON blob ([`FsReport`]) with the numbers a
//! build summary shows (size, base size, free space, whether the root grew).
//!
//! | step | keyed (besides inputs and version) | deliberately not keyed |
//! |---|---|---|
//! | `mkfs-fat` | `boot.size`, `boot.label`, `boot.volume_id` when given | the table's values (an upstream output) |
//! | `mkfs-ext4` | the epoch (superblock times), `rootfs.size` (`base` or `grow:<headroom>`) | thread counts, paths |

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;
use w4b_cache::{ChunkRef, ChunkSink, Digest, MemoKind, OutputRef, CHUNK_SIZE};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::table::{load_table, uuid_bytes, PartitionJson, TableJson};
use super::{tree_error, unavailable_blob};
use crate::formats::ext4::write::{
    prepare_ext4, ChunkBody, ChunkOut, Ext4Options, Ext4WriteError, PreparedExt4, Size,
};
use crate::formats::fat::{write_fat32, FatError, FatOptions};
use crate::formats::fs::{ContentId, Contents, Node, NodeKind};
use crate::image::FsKind;
use crate::store::AppStore;
use crate::tree::fs::{to_nodes, BlobContents};
use crate::tree::Blobs;

/// Memos of `mkfs-ext4`: a chunk's recipe ([`DataChunks`]) → the chunk it rendered to, so
/// a rebuild neither writes unchanged chunks nor reads the files only they hold.
pub const EXT4_CHUNK: MemoKind = MemoKind::new("ext4-chunk");

/// `blake3::derive_key` context for a FAT volume id when the base has none (derived from
/// the base's disk id, so it is stable across builds of the same base).
const VOLUME_ID_CONTEXT: &str = "w4b 2026-01 mkfs-fat volume id";

/// What a `mkfs` step made, as the `report` blob holds it (canonical JSON: fields in
/// alphabetical order).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsReport {
    /// The base partition's size in bytes.
    pub base_bytes: u64,
    /// The image's size in bytes.
    pub bytes: u64,
    /// Bytes free for files (ext4: excluding root-reserved blocks).
    pub free_bytes: u64,
    /// Whether the image is larger than the base partition.
    pub grown: bool,
    /// `fat` or `ext4`.
    pub kind: String,
    /// ext4: how full the 1 MiB data bins of the stable layout are, in percent. Above
    /// about 70 one changed file moves more chunks (`docs/formats.md`, "Stable layout").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_load_percent: Option<u64>,
}

/// Why a partition image could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum MkfsError {
    #[error("the base image's table has no {kind} partition")]
    #[diagnostic(
        code(w4b::mkfs::no_partition),
        help("the table comes from `unpack`; this is a bug in how the graph was compiled")
    )]
    NoPartition { kind: FsKind },

    #[error(
        "the boot files need {needed} bytes, but the {size}-byte boot partition has room for {available}"
    )]
    #[diagnostic(
        code(w4b::mkfs::boot_too_small),
        help("grow the boot partition: set `boot.size` to at least {suggest_mib} MiB")
    )]
    BootTooSmall {
        needed: u64,
        available: u64,
        size: u64,
        suggest_mib: u64,
    },

    #[error("the root files need {needed} blocks of 4 KiB, but the base's {bytes}-byte root partition has {free} free")]
    #[diagnostic(
        code(w4b::mkfs::root_too_small),
        help("let the root partition grow: give it headroom (`rootfs.headroom`) instead of the base's size")
    )]
    RootTooSmall { bytes: u64, needed: u64, free: u64 },

    #[error("cannot write the boot filesystem")]
    #[diagnostic(code(w4b::mkfs::fat))]
    Fat(
        #[source]
        #[diagnostic_source]
        FatError,
    ),

    #[error("cannot write the root filesystem")]
    #[diagnostic(code(w4b::mkfs::ext4))]
    Ext4(
        #[source]
        #[diagnostic_source]
        Ext4WriteError,
    ),

    #[error("the table's {field} `{value}` is not valid")]
    #[diagnostic(
        code(w4b::mkfs::table_value),
        help("the table comes from `unpack`; rebuild it with this w4b version")
    )]
    TableValue { field: &'static str, value: String },

    #[error("the memoised chunk {chunk} of the root filesystem differs from the chunk rendered again")]
    #[diagnostic(
        code(w4b::mkfs::memo_mismatch),
        help("a memo's recipe misses something its chunk depends on: this is a bug in w4b, please report it; `w4b cache gc --max-size 1` empties the cache, and building without `W4B_VERIFY_MEMOS` uses memos unchecked")
    )]
    MemoMismatch { chunk: u64 },

    #[error("cannot write the partition image into the cache")]
    #[diagnostic(
        code(w4b::mkfs::store),
        help("partition images are written next to the cache; make room on its filesystem")
    )]
    Store(#[source] w4b_cache::CacheError),
}

/// The store's contents for the writers, reporting bytes read and stopping on Ctrl-C.
struct Watched<'a> {
    inner: BlobContents<'a>,
    cx: &'a RunContext<'a>,
    done: Cell<u64>,
    total: u64,
}

struct WatchedRead<'w, 'a> {
    inner: Box<dyn Read + 'w>,
    owner: &'w Watched<'a>,
}

impl Contents for Watched<'_> {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        if self.cx.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the build was interrupted"));
        }
        Ok(Box::new(WatchedRead {
            inner: self.inner.open(id)?,
            owner: self,
        }))
    }
}

impl Read for WatchedRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.owner.cx.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the build was interrupted"));
        }
        let n = self.inner.read(buf)?;
        let done = self.owner.done.get().saturating_add(n as u64);
        self.owner.done.set(done);
        self.owner.cx.progress(done, Some(self.owner.total));
        Ok(n)
    }
}

/// Bytes of file content in `nodes`: the progress total.
fn content_bytes(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .map(|n| match n.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        })
        .sum()
}

/// A writer error that is not the format's own: Ctrl-C, or a missing blob (which the
/// engine repairs by re-running its producer).
fn interrupted(cx: &RunContext<'_>, e: &(dyn std::error::Error + 'static)) -> Option<StepError> {
    if cx.cancel.load(Ordering::Relaxed) {
        Some(StepError::Cancelled)
    } else {
        unavailable_blob(e).map(StepError::InputUnavailable)
    }
}

fn scratch(store: &AppStore) -> Result<NamedTempFile, StepError> {
    store
        .local()
        .scratch_file()
        .map_err(|e| StepError::diag(MkfsError::Store(e)))
}

/// Publishes the image (as a chunk index) and the report.
fn publish(store: &AppStore, image: NamedTempFile, report: &FsReport) -> Result<Outputs, StepError> {
    let (digest, size) = store
        .local()
        .adopt_chunked(image)
        .map_err(|e| StepError::diag(MkfsError::Store(e)))?;
    outputs(store, digest, size, report)
}

/// The outputs: the image already stored as `digest`, and the report.
fn outputs(store: &AppStore, digest: Digest, size: u64, report: &FsReport) -> Result<Outputs, StepError> {
    let json = serde_json::to_vec(report)
        .map_err(|e| StepError::msg(format!("cannot serialise the report: {e}")))?;
    let report_digest: Digest = Blobs::put(store, &json).map_err(tree_error)?;
    let mut out = Outputs::new();
    out.insert("fs".into(), OutputRef { digest, size });
    out.insert(
        "report".into(),
        OutputRef {
            digest: report_digest,
            size: json.len() as u64,
        },
    );
    Ok(out)
}

fn partition(table: &TableJson, kind: FsKind) -> Result<&PartitionJson, StepError> {
    table
        .partition_of(kind)
        .ok_or_else(|| StepError::diag(MkfsError::NoPartition { kind }))
}

/// `mkfs-fat`: input 0 provides `bootfs` (from `split`), input 1 `table` (from `unpack`);
/// outputs `fs` (the FAT32 partition image) and `report` ([`FsReport`]).
///
/// The volume is FAT32 of the base partition's size, volume id, label and OEM name, with
/// `BPB_HiddSec` = the partition's first sector and — when the size is the base's and the
/// base was FAT32 — its cluster size. Each `Option` overrides the table; only given
/// overrides are keyed. `BPB_HiddSec` is the base's start: `disk` moves a partition only
/// when a grown partition before it forces it, and the boot partition comes first on
/// every Raspberry Pi image (the firmware does not read the field either way).
pub struct MkfsFatStep {
    pub store: Arc<AppStore>,
    /// Partition size in bytes (a multiple of 512).
    pub size: Option<u64>,
    pub size_location: Option<String>,
    pub label: Option<String>,
    pub label_location: Option<String>,
    pub volume_id: Option<u32>,
    pub volume_id_location: Option<String>,
}

impl MkfsFatStep {
    /// The writer's options for `table`.
    pub fn options(&self, table: &TableJson) -> Result<FatOptions, StepError> {
        let p = partition(table, FsKind::Fat)?;
        let base_bytes = p.size.saturating_mul(u64::from(table.sector_size));
        let fat = p.fat.clone();
        let volume_id = match (self.volume_id, fat.as_ref().and_then(|f| f.volume_id.as_deref())) {
            (Some(v), _) => v,
            (None, Some(text)) => u32::from_str_radix(text, 16).map_err(|_| {
                StepError::diag(MkfsError::TableValue {
                    field: "volume_id",
                    value: text.to_owned(),
                })
            })?,
            (None, None) => {
                let k = blake3::derive_key(VOLUME_ID_CONTEXT, table.disk_id.as_bytes());
                u32::from_le_bytes([k[0], k[1], k[2], k[3]])
            }
        };
        let label = self
            .label
            .clone()
            .or_else(|| fat.as_ref().and_then(|f| f.label.clone()))
            .unwrap_or_default();
        let size = self.size.unwrap_or(base_bytes);
        let mut opts = FatOptions::new(size, volume_id, label);
        opts.hidden_sectors = u32::try_from(p.start).map_err(|_| {
            StepError::diag(MkfsError::TableValue {
                field: "start",
                value: p.start.to_string(),
            })
        })?;
        if let Some(f) = &fat {
            let printable = f.oem_name.len() <= 8 && f.oem_name.bytes().all(|b| (0x20..0x7f).contains(&b));
            if printable && !f.oem_name.is_empty() {
                opts.oem_name = f.oem_name.clone();
            }
            // The base's cluster size fits the base's size; a resized volume takes the
            // writer's choice for its size.
            if f.fat_type == "FAT32" && size == base_bytes {
                opts.sectors_per_cluster = u8::try_from(f.cluster_size / 512)
                    .ok()
                    .filter(|s| s.is_power_of_two());
            }
        }
        Ok(opts)
    }
}

impl Step for MkfsFatStep {
    fn kind(&self) -> &'static str {
        "mkfs-fat"
    }
    fn version(&self) -> u32 {
        // 2: the stable layout (clusters placed by path hash in 1 MiB bins).
        // 3: `fs` is stored as a chunk index, not a plain blob: the same bytes under
        // another digest, so a key names one output digest (`build --check` and
        // `verify --rebuild` compare digests) and version 2's blobs are not reused.
        3
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let mut c = Vec::new();
        if let Some(s) = self.size {
            c.push(Component::param("boot.size", s.to_string()).at(self.size_location.clone()));
        }
        if let Some(l) = &self.label {
            c.push(Component::param("boot.label", l).at(self.label_location.clone()));
        }
        if let Some(v) = self.volume_id {
            c.push(
                Component::param("boot.volume_id", format!("{v:08x}")).at(self.volume_id_location.clone()),
            );
        }
        Ok(c)
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = cx.input(0, "bootfs")?;
        let table = load_table(&self.store, cx.input(1, "table")?)?;
        let opts = self.options(&table)?;
        let base_bytes = partition(&table, FsKind::Fat)?
            .size
            .saturating_mul(u64::from(table.sector_size));
        let blobs: &dyn Blobs = self.store.as_ref();
        let nodes = to_nodes(blobs, tree.digest).map_err(tree_error)?;
        cx.check_cancel()?;
        let contents = Watched {
            inner: BlobContents(blobs),
            cx,
            done: Cell::new(0),
            total: content_bytes(&nodes),
        };
        let image = scratch(&self.store)?;
        let mut f = image.as_file();
        let report = write_fat32(&mut f, &nodes, &contents, &opts).map_err(|e| {
            if let Some(i) = interrupted(cx, &e) {
                return i;
            }
            match e {
                FatError::NoSpace {
                    needed,
                    available,
                    size,
                } => {
                    // Room for the clusters, the FATs and the reserved sectors, with
                    // a margin, in whole MiB.
                    let suggest =
                        (size.saturating_add(needed.saturating_sub(available)) * 5 / 4).div_ceil(1 << 20);
                    StepError::diag(MkfsError::BootTooSmall {
                        needed,
                        available,
                        size,
                        suggest_mib: suggest,
                    })
                }
                other => StepError::diag(MkfsError::Fat(other)),
            }
        })?;
        cx.check_cancel()?;
        let fs = FsReport {
            base_bytes,
            bytes: opts.size_bytes,
            free_bytes: u64::from(report.free_clusters) * u64::from(report.cluster_size),
            grown: opts.size_bytes > base_bytes,
            kind: "fat".into(),
            data_load_percent: None,
        };
        publish(&self.store, image, &fs)
    }
}

/// How large the root filesystem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootSize {
    /// The base's root filesystem size; an error when the files do not fit.
    Base,
    /// The base's size, or larger when the files plus `headroom` bytes of free space
    /// (beyond the root-reserved blocks) need more: `max(base, fit + headroom)`.
    Grow { headroom: u64 },
}

impl RootSize {
    /// The key component's value: `base` or `grow:<headroom bytes>`.
    pub fn key(&self) -> String {
        match self {
            RootSize::Base => "base".into(),
            RootSize::Grow { headroom } => format!("grow:{headroom}"),
        }
    }
}

/// `mkfs-ext4`: input 0 provides `rootfs` (from `split`), input 1 `table` (from
/// `unpack`); outputs `fs` (the ext4 partition image) and `report` ([`FsReport`]).
///
/// The filesystem keeps the base's UUID, hash seed, label, inode ratio, reserved
/// percentage and journal size; its size follows [`RootSize`]. The epoch is every
/// superblock time.
pub struct MkfsExt4Step {
    pub store: Arc<AppStore>,
    pub epoch: Epoch,
    pub size: RootSize,
    pub size_location: Option<String>,
    /// `W4B_VERIFY_MEMOS`: render every chunk an `ext4-chunk` memo knows and fail on a
    /// difference; not keyed (it never changes bytes).
    pub verify_memos: bool,
}

/// A root image laid out and its metadata rendered, before any file is read.
struct Prepared<'n> {
    image: PreparedExt4<'n>,
    /// Recipe key → the chunk its memo names (reused, or, verifying, to compare with).
    memos: std::collections::BTreeMap<[u8; 32], ChunkRef>,
}

/// The writer's chunks into the store: rendered ones stored, zero ones named, reused ones
/// named by their memo. A store error is kept here (the writer sees an I/O error) so the
/// step reports it as the store's.
struct ToStore<'m> {
    sink: ChunkSink,
    memos: &'m std::collections::BTreeMap<[u8; 32], ChunkRef>,
    failed: Option<w4b_cache::CacheError>,
}

impl ChunkOut for ToStore<'_> {
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self.sink.buffer();
        // Only on a length mismatch, which `put` then reports.
        buf.resize(len, 0);
        buf
    }

    fn chunk(&mut self, chunk: u64, body: ChunkBody) -> io::Result<()> {
        let stored = match body {
            ChunkBody::Data(bytes) => self.sink.put(bytes),
            ChunkBody::Zero { len } => {
                let len = u32::try_from(len).unwrap_or(u32::MAX);
                self.sink.given(ChunkRef {
                    digest: w4b_cache::zero_digest(len),
                    len,
                })
            }
            ChunkBody::Reused { recipe, .. } => match self.memos.get(&recipe) {
                Some(c) => self.sink.given(*c),
                None => {
                    return Err(io::Error::other(format!(
                        "chunk {chunk} was reused without a memo of its recipe"
                    )))
                }
            },
        };
        stored.map_err(|e| {
            let message = e.to_string();
            self.failed = Some(e);
            io::Error::other(message)
        })
    }
}

impl MkfsExt4Step {
    /// The writer's options for `table` at the base's size, and that size in bytes.
    pub fn options(&self, table: &TableJson, epoch: i64) -> Result<(Ext4Options, u64), StepError> {
        let p = partition(table, FsKind::Ext4)?;
        let part_bytes = p.size.saturating_mul(u64::from(table.sector_size));
        let bad = |field: &'static str, value: &str| {
            StepError::diag(MkfsError::TableValue {
                field,
                value: value.to_owned(),
            })
        };
        let Some(e) = &p.ext4 else {
            return Err(bad("ext4", "absent"));
        };
        let uuid = uuid_bytes(&e.uuid).ok_or_else(|| bad("uuid", &e.uuid))?;
        let seed = uuid_bytes(&e.hash_seed).ok_or_else(|| bad("hash_seed", &e.hash_seed))?;
        // The base filesystem's own size (it may be smaller than its partition).
        let base = e.blocks.saturating_mul(e.block_size).min(part_bytes);
        let mut opts = Ext4Options::new(Size::Fixed(base), uuid, seed, epoch);
        opts.label = e.label.clone();
        opts.inode_ratio = e.inode_ratio;
        opts.reserved_percent = e.reserved_percent;
        opts.journal_blocks = e.journal_blocks;
        Ok((opts, base))
    }

    /// Lays out one image and asks the memos for its chunks; `Ok(None)` when it does not
    /// fit.
    fn prepare<'n>(&self, nodes: &'n [Node], opts: &Ext4Options) -> Result<Option<Prepared<'n>>, StepError> {
        let local = self.store.local();
        let memos = std::cell::RefCell::new(std::collections::BTreeMap::new());
        let mut reuse = |key: &[u8; 32]| -> bool {
            match local.memo_get(EXT4_CHUNK, &Digest(*key)) {
                Ok(Some(m)) => {
                    memos.borrow_mut().insert(*key, m.value);
                    !self.verify_memos
                }
                _ => false,
            }
        };
        match prepare_ext4(nodes, opts, Some((u64::from(CHUNK_SIZE), &mut reuse))) {
            Ok(image) => Ok(Some(Prepared {
                image,
                memos: memos.into_inner(),
            })),
            Err(Ext4WriteError::TooSmall { .. }) if matches!(self.size, RootSize::Grow { .. }) => Ok(None),
            Err(Ext4WriteError::TooSmall { bytes, needed, free }) => {
                Err(StepError::diag(MkfsError::RootTooSmall { bytes, needed, free }))
            }
            Err(e) => Err(StepError::diag(MkfsError::Ext4(e))),
        }
    }
}

impl Step for MkfsExt4Step {
    fn kind(&self) -> &'static str {
        "mkfs-ext4"
    }
    /// 2: the stable layout (hashed inode numbers and 1 MiB bins).
    /// 3: `fs` is stored as a chunk index, not a plain blob: the same bytes under another
    /// digest, so a key names one output digest (`build --check` and `verify --rebuild`
    /// compare digests) and version 2's blobs are not reused.
    fn version(&self) -> u32 {
        3
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![
            self.epoch.component(),
            Component::param("rootfs.size", self.size.key()).at(self.size_location.clone()),
        ])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = cx.input(0, "rootfs")?;
        let table = load_table(&self.store, cx.input(1, "table")?)?;
        let epoch = self.epoch.resolve(self.store.as_ref(), cx)?;
        let (mut opts, base) = self.options(&table, epoch)?;
        let nodes = to_nodes(self.store.as_ref(), tree.digest).map_err(tree_error)?;
        cx.check_cancel()?;
        // At the base's size first: usually it fits with room to spare, and one layout
        // is all it takes. Nothing is read or written before the size is settled.
        let mut prepared = self.prepare(&nodes, &opts)?;
        if let (RootSize::Grow { headroom }, Some(p)) = (self.size, &prepared) {
            let r = p.image.report();
            let spare = r
                .free_blocks
                .saturating_sub(r.reserved_blocks)
                .saturating_mul(u64::from(r.block_size));
            if spare < headroom {
                prepared = None;
            }
        }
        let Prepared { image, memos } = match (prepared, self.size) {
            (Some(p), _) => p,
            (None, RootSize::Grow { headroom }) => {
                cx.check_cancel()?;
                opts.size = Size::Fit {
                    headroom_bytes: headroom,
                    headroom_percent: 0,
                };
                self.prepare(&nodes, &opts)?
                    .ok_or_else(|| StepError::msg("the root filesystem does not fit at its fitting size"))?
            }
            // `prepare` fails with `RootTooSmall` for `Base`.
            (None, RootSize::Base) => return Err(StepError::msg("the root filesystem does not fit")),
        };
        cx.check_cancel()?;
        // Rendered chunk by chunk straight into the store: no scratch image.
        let local = self.store.local();
        let store_err = |e| StepError::diag(MkfsError::Store(e));
        let mut out = ToStore {
            sink: local.chunk_sink(image.report().image_bytes).map_err(store_err)?,
            memos: &memos,
            failed: None,
        };
        let blobs: &dyn Blobs = self.store.as_ref();
        let total = content_bytes(&nodes);
        let contents = Watched {
            inner: BlobContents(blobs),
            cx,
            done: Cell::new(0),
            total,
        };
        let (report, data) = match image.write_chunks(&mut out, &contents) {
            Ok(written) => written,
            Err(e) => {
                if let Some(failed) = out.failed.take() {
                    return Err(store_err(failed));
                }
                return Err(interrupted(cx, &e).unwrap_or_else(|| StepError::diag(MkfsError::Ext4(e))));
            }
        };
        // Files in reused chunks are not read: the progress ends at its total.
        cx.progress(total, Some(total));
        cx.check_cancel()?;
        let fs = FsReport {
            base_bytes: base,
            bytes: report.image_bytes,
            free_bytes: report
                .free_blocks
                .saturating_sub(report.reserved_blocks)
                .saturating_mul(u64::from(report.block_size)),
            grown: report.image_bytes > base,
            kind: "ext4".into(),
            data_load_percent: Some(report.data_load_percent()),
        };
        let (digest, size) = out.sink.commit().map_err(store_err)?;
        let index = local
            .index(&digest)
            .map_err(|e| StepError::diag(MkfsError::Store(e)))?
            .ok_or_else(|| StepError::msg("the root image's index is not in the cache"))?;
        // Remember what every chunk rendered to (in one batch: a cold build renders
        // thousands); verifying, compare.
        let mut remembered = Vec::new();
        for (c, key) in &data.recipes {
            if data.reused.contains(c) {
                continue;
            }
            let Some(chunk) = usize::try_from(*c).ok().and_then(|i| index.chunks.get(i)) else {
                continue;
            };
            match memos.get(key) {
                Some(known) if known != chunk => {
                    return Err(StepError::diag(MkfsError::MemoMismatch { chunk: *c }));
                }
                Some(_) => {}
                None => remembered.push((
                    Digest(*key),
                    w4b_cache::Memo {
                        value: *chunk,
                        extra: Vec::new(),
                    },
                )),
            }
        }
        local
            .memo_put_many(EXT4_CHUNK, &remembered)
            .map_err(|e| StepError::diag(MkfsError::Store(e)))?;
        cx.note(&format!(
            "{} of {} chunks hold data: {} reused from memos (their files not read), {} rendered",
            data.recipes.len(),
            index.chunks.len(),
            data.reused.len(),
            remembered.len()
        ));
        outputs(&self.store, digest, size, &fs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::steps::table::{Ext4Json, FatJson, TABLE_SCHEMA};
    use crate::tree::{Entry, TreeBuilder, TreePath};

    const MIB: u64 = 1 << 20;

    fn store() -> (tempfile::TempDir, Arc<AppStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        (dir, store)
    }

    /// A table with a FAT partition of `boot_mib` and an ext4 one of `root_mib`.
    fn table(boot_mib: u64, root_mib: u64) -> TableJson {
        let part = |index, start: u64, mib: u64, fs| PartitionJson {
            attributes: None,
            bootable: false,
            ext4: (fs == FsKind::Ext4).then(|| Ext4Json {
                block_size: 4096,
                blocks: mib * MIB / 4096,
                hash_seed: "5a6b7c8d-0b0e-4e0f-9a2b-1c3d4e5f6a7b".into(),
                inode_count: 0,
                inode_ratio: 16384,
                journal_blocks: Some(1024),
                label: "rootfs".into(),
                reserved_blocks: 0,
                reserved_percent: 5,
                uuid: "0b0e0e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f".into(),
            }),
            fat: (fs == FsKind::Fat).then(|| FatJson {
                cluster_size: 512,
                fat_type: "FAT32".into(),
                hidden_sectors: 8192,
                label: Some("bootfs".into()),
                oem_name: "mkfs.fat".into(),
                volume_id: Some("1a2b3c4d".into()),
            }),
            filesystem: fs,
            index,
            name: None,
            partuuid: Some(format!("1a2b3c4d-0{index}")),
            size: mib * MIB / 512,
            start,
            type_id: if fs == FsKind::Fat {
                "c".into()
            } else {
                "83".into()
            },
        };
        let root_start = 8192 + boot_mib * MIB / 512;
        TableJson {
            boot_code: None,
            boot_mount: "/boot/firmware".into(),
            disk_id: "1a2b3c4d".into(),
            disk_size: (root_start * 512) + root_mib * MIB,
            gpt: None,
            kind: "mbr".into(),
            partitions: vec![
                part(1, 8192, boot_mib, FsKind::Fat),
                part(2, root_start, root_mib, FsKind::Ext4),
            ],
            schema: TABLE_SCHEMA,
            sector_size: 512,
        }
    }

    /// Upstream outputs: the tree (as `name`) with one file of `bytes` zeros, and `table`.
    fn inputs(store: &AppStore, name: &str, bytes: usize, t: &TableJson) -> [Outputs; 2] {
        let d = Blobs::put(store, &vec![0x5a; bytes]).unwrap();
        let mut b = TreeBuilder::new();
        b.insert(
            TreePath::parse("/big").unwrap(),
            Entry::file(d, bytes as u64, 0o644),
        )
        .unwrap();
        let tree = b.finish(store).unwrap();
        let json = serde_json::to_vec(t).unwrap();
        let td = Blobs::put(store, &json).unwrap();
        let mut a = Outputs::new();
        a.insert(
            name.into(),
            OutputRef {
                digest: tree,
                size: 0,
            },
        );
        let mut b = Outputs::new();
        b.insert(
            "table".into(),
            OutputRef {
                digest: td,
                size: json.len() as u64,
            },
        );
        [a, b]
    }

    fn run(
        step: &dyn Step,
        store: &AppStore,
        inputs: &[Outputs],
        cancelled: bool,
    ) -> Result<Outputs, StepError> {
        let cancel = AtomicBool::new(cancelled);
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |done: u64, total: Option<u64>| seen.lock().unwrap().push((done, total));
        let cx = RunContext {
            name: "//hives:t#mkfs",
            inputs,
            cache: store,
            cancel: &cancel,
            progress: &progress,
            trees: &Default::default(),
            note: &|_| {},
        };
        let out = step.run(&cx);
        if out.is_ok() {
            let seen = seen.lock().unwrap();
            let last = seen.last().copied();
            assert!(
                matches!(last, Some((d, Some(t))) if d == t && t > 0),
                "progress: {last:?}"
            );
        }
        out
    }

    fn code(e: &StepError) -> String {
        match e {
            StepError::Diagnostic(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
            other => format!("{other:?}"),
        }
    }

    fn fat_step(store: &Arc<AppStore>, size: Option<u64>) -> MkfsFatStep {
        MkfsFatStep {
            store: store.clone(),
            size,
            size_location: None,
            label: None,
            label_location: None,
            volume_id: None,
            volume_id_location: None,
        }
    }

    fn ext4_step(store: &Arc<AppStore>, size: RootSize) -> MkfsExt4Step {
        MkfsExt4Step {
            store: store.clone(),
            epoch: Epoch::fixed(1_700_000_000),
            size,
            size_location: None,
            verify_memos: false,
        }
    }

    #[test]
    fn the_fat_keeps_the_base_identity_and_a_full_boot_partition_says_how_to_grow_it() {
        let (_d, store) = store();
        let t = table(40, 16);
        let opts = fat_step(&store, None).options(&t).unwrap();
        assert_eq!(
            (
                opts.size_bytes,
                opts.volume_id,
                opts.label.as_str(),
                opts.hidden_sectors
            ),
            (40 * MIB, 0x1a2b_3c4d, "bootfs", 8192)
        );
        assert_eq!(
            (opts.oem_name.as_str(), opts.sectors_per_cluster),
            ("mkfs.fat", Some(1))
        );
        let ins = inputs(&store, "bootfs", MIB as usize, &t);
        let out = run(&fat_step(&store, None), &store, &ins, false).unwrap();
        assert_eq!(out["fs"].size, 40 * MIB);
        assert!(
            store.local().contains_index(&out["fs"].digest),
            "`fs` is a chunk index"
        );
        let r: FsReport =
            serde_json::from_slice(&Blobs::get(store.as_ref(), &out["report"].digest).unwrap()).unwrap();
        assert_eq!((r.kind.as_str(), r.grown, r.bytes), ("fat", false, 40 * MIB));

        let ins = inputs(&store, "bootfs", (45 * MIB) as usize, &t);
        let e = run(&fat_step(&store, None), &store, &ins, false).unwrap_err();
        assert_eq!(code(&e), "w4b::mkfs::boot_too_small");
        let StepError::Diagnostic(d) = &e else {
            unreachable!()
        };
        let help = d.help().unwrap().to_string();
        assert!(help.contains("`boot.size`"), "{help}");
        // Following the advice works.
        let mib: u64 = help.split_whitespace().rev().nth(1).unwrap().parse().unwrap();
        let out = run(&fat_step(&store, Some(mib * MIB)), &store, &ins, false).unwrap();
        assert_eq!(out["fs"].size, mib * MIB);
    }

    #[test]
    fn a_root_that_does_not_fit_the_base_size_grows_only_when_allowed() {
        let (_d, store) = store();
        let t = table(40, 16);
        let ins = inputs(&store, "rootfs", (20 * MIB) as usize, &t);
        let e = run(&ext4_step(&store, RootSize::Base), &store, &ins, false).unwrap_err();
        assert_eq!(code(&e), "w4b::mkfs::root_too_small");
        let out = run(
            &ext4_step(&store, RootSize::Grow { headroom: 8 * MIB }),
            &store,
            &ins,
            false,
        )
        .unwrap();
        let r: FsReport =
            serde_json::from_slice(&Blobs::get(store.as_ref(), &out["report"].digest).unwrap()).unwrap();
        assert!(r.grown && r.bytes > 16 * MIB && r.free_bytes >= 8 * MIB, "{r:?}");
        assert_eq!(out["fs"].size, r.bytes);
        assert!(
            store.local().contains_index(&out["fs"].digest),
            "`fs` is a chunk index"
        );
        // Small content: the base's size, even when growing is allowed.
        let ins = inputs(&store, "rootfs", 4096, &t);
        let out = run(
            &ext4_step(&store, RootSize::Grow { headroom: MIB }),
            &store,
            &ins,
            false,
        )
        .unwrap();
        assert_eq!(out["fs"].size, 16 * MIB);
        let same = run(&ext4_step(&store, RootSize::Base), &store, &ins, false).unwrap();
        assert_eq!(same["fs"], out["fs"]);
    }

    #[test]
    fn keys_name_the_size_and_epoch_and_a_cancelled_mkfs_stops() {
        let (_d, store) = store();
        let cx = PlanContext { name: "t" };
        let names = |c: Vec<Component>| {
            c.into_iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                ext4_step(&store, RootSize::Grow { headroom: 5 })
                    .components(&cx)
                    .unwrap()
            ),
            ["epoch=1700000000", "rootfs.size=grow:5"]
        );
        assert!(fat_step(&store, None).components(&cx).unwrap().is_empty());
        assert_eq!(
            names(fat_step(&store, Some(64 * MIB)).components(&cx).unwrap()),
            ["boot.size=67108864"]
        );
        let t = table(40, 16);
        let ins = inputs(&store, "rootfs", 4096, &t);
        assert!(matches!(
            run(&ext4_step(&store, RootSize::Base), &store, &ins, true),
            Err(StepError::Cancelled)
        ));
        let ins = inputs(&store, "bootfs", 4096, &t);
        assert!(matches!(
            run(&fat_step(&store, None), &store, &ins, true),
            Err(StepError::Cancelled)
        ));
    }
    /// A root tree of 48 files of 200 KiB (distinct bytes) and `/etc/motd` = `motd`.
    fn many_files(store: &AppStore, motd: &str, t: &TableJson) -> [Outputs; 2] {
        let mut b = TreeBuilder::new();
        for i in 0..48u32 {
            let bytes: Vec<u8> = (0..200 * 1024u32)
                .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 13) as u8)
                .collect();
            let d = Blobs::put(store, &bytes).unwrap();
            b.insert(
                TreePath::parse(&format!("/usr/lib/f{i:02}")).unwrap(),
                Entry::file(d, bytes.len() as u64, 0o644),
            )
            .unwrap();
        }
        let m = Blobs::put(store, motd.as_bytes()).unwrap();
        b.insert(
            TreePath::parse("/etc/motd").unwrap(),
            Entry::file(m, motd.len() as u64, 0o644),
        )
        .unwrap();
        let tree = b.finish(store).unwrap();
        let [_, table] = inputs(store, "rootfs", 1, t);
        let mut a = Outputs::new();
        a.insert(
            "rootfs".into(),
            OutputRef {
                digest: tree,
                size: 0,
            },
        );
        [a, table]
    }

    /// Runs `step`, returning its outputs and notes.
    fn run_noted(
        step: &dyn Step,
        store: &AppStore,
        inputs: &[Outputs],
    ) -> Result<(Outputs, Vec<String>), StepError> {
        let cancel = AtomicBool::new(false);
        let notes = std::sync::Mutex::new(Vec::new());
        let note = |m: &str| notes.lock().unwrap().push(m.to_owned());
        let cx = RunContext {
            name: "//hives:t#mkfs",
            inputs,
            cache: store,
            cancel: &cancel,
            progress: &|_, _| {},
            trees: &Default::default(),
            note: &note,
        };
        let out = step.run(&cx)?;
        Ok((out, notes.into_inner().unwrap()))
    }

    #[test]
    fn unchanged_data_chunks_come_from_memos_and_the_image_is_a_cold_builds() {
        let t = table(4, 64);
        let (_d, store) = self::store();
        let step = ext4_step(&store, RootSize::Base);
        let (_, notes) = run_noted(&step, &store, &many_files(&store, "one\n", &t)).unwrap();
        assert!(
            notes[0].contains(" reused from memos (their files not read), "),
            "{notes:?}"
        );
        assert!(notes[0].contains(": 0 reused"), "{notes:?}");
        let changed = many_files(&store, "two, longer\n", &t);
        let (warm, notes) = run_noted(&step, &store, &changed).unwrap();
        let reused: u64 = notes[0]
            .split(": ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{notes:?}"));
        assert!(reused >= 8, "{notes:?}");

        let (_d2, fresh) = self::store();
        let cold_in = many_files(&fresh, "two, longer\n", &t);
        let (cold, _) = run_noted(&ext4_step(&fresh, RootSize::Base), &fresh, &cold_in).unwrap();
        assert_eq!(warm["fs"], cold["fs"], "the same index, so the same bytes");

        // A memo that lies (names another chunk of the same length): trusted, it reaches
        // the image; with W4B_VERIFY_MEMOS the step fails naming the chunk.
        // The keys, from the memo files and the batches (`docs/cache-format.md`, "Memos").
        let dir = store.local().root().join("v1/memo/ext4-chunk");
        let mut keys: Vec<Digest> = Vec::new();
        for shard in std::fs::read_dir(&dir).unwrap() {
            let shard = shard.unwrap().path();
            for f in std::fs::read_dir(&shard).unwrap() {
                let f = f.unwrap().path();
                if !shard.ends_with("batches") {
                    keys.push(f.file_name().unwrap().to_str().unwrap().parse().unwrap());
                    continue;
                }
                let bytes = std::fs::read(&f).unwrap();
                let mut rest = &bytes[8..];
                while !rest.is_empty() {
                    let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                    keys.push(Digest(rest[4 + 8..4 + 40].try_into().unwrap()));
                    rest = &rest[4 + len..];
                }
            }
        }
        keys.sort();
        let values: Vec<ChunkRef> = keys
            .iter()
            .map(|k| store.local().memo_get(EXT4_CHUNK, k).unwrap().unwrap().value)
            .collect();
        let (a, b) = (0..values.len())
            .flat_map(|a| (0..values.len()).map(move |b| (a, b)))
            .find(|&(a, b)| values[a].len == values[b].len && values[a] != values[b])
            .expect("two different memoised chunks");
        // A memo file for a key wins over a batch.
        store
            .local()
            .memo_put(EXT4_CHUNK, &keys[a], &values[b], b"")
            .unwrap();
        let (lied, _) = run_noted(&step, &store, &changed).unwrap();
        assert_ne!(lied["fs"], cold["fs"]);
        let mut verifying = ext4_step(&store, RootSize::Base);
        verifying.verify_memos = true;
        let err = run_noted(&verifying, &store, &changed).unwrap_err();
        assert_eq!(code(&err), "w4b::mkfs::memo_mismatch", "{err:?}");
    }

    /// The `fs` the step stored before it rendered chunk by chunk: the image written to a
    /// scratch file (the chunks the memos know left as holes) and adopted with those
    /// chunks given. Stores no memo.
    fn adopted(step: &MkfsExt4Step, store: &AppStore, ins: &[Outputs; 2], t: &TableJson) -> Digest {
        let local = store.local();
        let nodes = to_nodes(store, ins[0]["rootfs"].digest).unwrap();
        let (opts, _) = step.options(t, 1_700_000_000).unwrap();
        let mut memos = std::collections::BTreeMap::new();
        let mut reuse = |key: &[u8; 32]| match local.memo_get(EXT4_CHUNK, &Digest(*key)).unwrap() {
            Some(m) => {
                memos.insert(*key, m.value);
                !step.verify_memos
            }
            None => false,
        };
        let prepared = prepare_ext4(&nodes, &opts, Some((u64::from(CHUNK_SIZE), &mut reuse))).unwrap();
        let tmp = local.scratch_file().unwrap();
        let (_, data) = prepared.write(&mut tmp.as_file(), &BlobContents(store)).unwrap();
        let given = data
            .reused
            .iter()
            .map(|c| (*c, memos[&data.recipes[c]]))
            .collect();
        local.adopt_chunked_with(tmp, &given).unwrap().0
    }

    #[test]
    fn the_root_image_is_stored_as_adopting_the_written_image_would_store_it() {
        let t = table(4, 64);
        let (_d, store) = self::store();
        let step = ext4_step(&store, RootSize::Base);
        // An empty tree: the metadata alone.
        let [mut empty, table] = inputs(&store, "rootfs", 1, &t);
        empty.get_mut("rootfs").unwrap().digest = TreeBuilder::new().finish(store.as_ref()).unwrap();
        let empty = [empty, table];
        let old = adopted(&step, &store, &empty, &t);
        assert_eq!(run_noted(&step, &store, &empty).unwrap().0["fs"].digest, old);
        // One file of 3 MiB and a bit (across chunk edges), cold.
        let big = inputs(&store, "rootfs", 3 * MIB as usize + 5, &t);
        let old = adopted(&step, &store, &big, &t);
        assert_eq!(run(&step, &store, &big, false).unwrap()["fs"].digest, old);
        // Many small files, cold and then with one changed (chunks from memos).
        let one = many_files(&store, "one\n", &t);
        let old = adopted(&step, &store, &one, &t);
        assert_eq!(run(&step, &store, &one, false).unwrap()["fs"].digest, old);
        let two = many_files(&store, "two, longer\n", &t);
        let old = adopted(&step, &store, &two, &t);
        let (warm, notes) = run_noted(&step, &store, &two).unwrap();
        assert_eq!(warm["fs"].digest, old, "{notes:?}");
        assert!(!notes[0].contains(": 0 reused"), "{notes:?}");
        // Verifying the memos renders every chunk: the same image again.
        let mut verifying = ext4_step(&store, RootSize::Base);
        verifying.verify_memos = true;
        assert_eq!(adopted(&verifying, &store, &two, &t), old);
        assert_eq!(run(&verifying, &store, &two, false).unwrap()["fs"], warm["fs"]);
        // Grown to fit: laid out twice, rendered once (only the final image's chunks and
        // the report are new blobs).
        let (_d2, fresh) = self::store();
        let big = inputs(&fresh, "rootfs", 3 * MIB as usize + 5, &t);
        let before = fresh.local().stats().unwrap().blobs;
        let grow = ext4_step(&fresh, RootSize::Grow { headroom: 80 * MIB });
        let grown = run(&grow, &fresh, &big, false).unwrap();
        assert!(grown["fs"].size > 64 * MIB, "{:?}", grown["fs"]);
        let idx = fresh.local().index(&grown["fs"].digest).unwrap().unwrap();
        let chunks: std::collections::BTreeSet<Digest> = idx
            .chunks
            .iter()
            .filter(|c| !c.is_zero())
            .map(|c| c.digest)
            .collect();
        assert_eq!(
            fresh.local().stats().unwrap().blobs,
            before + chunks.len() as u64 + 1
        );
        assert!(
            std::fs::read_dir(store.local().root().join("v1/tmp"))
                .unwrap()
                .next()
                .is_none(),
            "no scratch file left"
        );
    }
}
