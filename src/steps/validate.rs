//! `validate`: the structural checks of [`crate::validate`] on the assembled disk, before
//! anything is compressed or written out. A disk that fails stops the build with one
//! diagnostic naming every failed rule and the file it concerns; one that passes yields a
//! small `report` (the `w4b.validate/1` JSON), which `compress` takes as an input so that
//! it cannot run on an unchecked disk.
//!
//! Keyed: the board's boot files (kernel and device trees), which decide what is checked.
//! The disk is keyed as an upstream output, so a passed disk is never checked twice.
//!
//! File contents are not read back (`validate_disk_structure`): the filesystems were just
//! written from trees whose every blob the store verified, and reading a 2 GB image's
//! data again cost more than writing it; the table, both filesystems' metadata and the
//! files the rules read are checked. `w4b validate` on a finished image reads everything.
//!
//! The readers seek, so the disk is read through the store's [`OutputReader`]: verified
//! random access, each 1 MiB chunk hashed before a byte of it is used, and only the chunks
//! the checks touch are read (zero chunks cost nothing). A chunk that turns out missing or
//! corrupt makes the disk an unavailable input whatever the checks concluded, so the
//! engine re-runs `disk` (and, through it, whatever wrote the chunk) instead of reporting
//! a broken image; a failed rule on intact chunks is the validation diagnostic. This
//! replaced (`validate` version 3) opening the disk blob unverified and re-reading all of
//! it to tell a corrupt cache entry from a broken image whenever a check failed.
//!
//! What reading one filesystem's structure found (entries, sizes, label and UUID, the few
//! files the rules read) is remembered as a memo (`validate-fs`) keyed by the disk chunks
//! that hold the partition ([`crate::validate::FsSummaries`]): in a rebuild that changed
//! only the root filesystem, the boot filesystem is not read again, and its summary gives
//! the same checks as reading it. Only filesystems read without an error are remembered.
//! The step's note says how many summaries were reused.

#![forbid(unsafe_code)]

use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use w4b_cache::{CacheError, ChunkIndex, ChunkRef, MemoKind, OutputReader, OutputRef, StoreDir, CHUNK_SIZE};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use crate::defs::TableType;
use crate::formats::partition::{PartitionTable, TableKind};
use crate::store::AppStore;
use crate::tree::Blobs;
use crate::validate::{validate_disk_structure_cached, BoardCheck, FsSummaries, FS_SUMMARY_VERSION, SCHEMA};

/// Memos of what reading one filesystem's structure found (`crate::validate::FsSummaries`),
/// keyed by the chunks that hold it: an unchanged partition is not read again.
pub const FS_SUMMARY: MemoKind = MemoKind::new("validate-fs");

/// `blake3::derive_key` context of a summary's key.
const SUMMARY_CONTEXT: &str = "w4b 2026-12 validate filesystem summary";

/// Filesystem summaries in the local store's memos, keyed by the disk index's chunks.
struct ChunkSummaries<'a> {
    local: &'a StoreDir,
    /// The disk's chunks, when it is an index of fixed 1 MiB chunks.
    chunks: Option<&'a [ChunkRef]>,
    /// Summaries reused, and filesystems read.
    reused: std::cell::Cell<u32>,
    read: std::cell::Cell<u32>,
}

impl FsSummaries for ChunkSummaries<'_> {
    fn key(&self, kind: &str, offset: u64, len: u64) -> Option<[u8; 32]> {
        let size = u64::from(CHUNK_SIZE);
        let chunks = self.chunks?;
        if !offset.is_multiple_of(size) || len == 0 {
            return None;
        }
        let first = usize::try_from(offset / size).ok()?;
        let end = usize::try_from(offset.checked_add(len)?.div_ceil(size)).ok()?;
        let covering = chunks.get(first..end)?;
        let mut h = blake3::Hasher::new_derive_key(SUMMARY_CONTEXT);
        h.update(&FS_SUMMARY_VERSION.to_le_bytes());
        h.update(&(kind.len() as u64).to_le_bytes());
        h.update(kind.as_bytes());
        h.update(&len.to_le_bytes());
        for c in covering {
            h.update(c.digest.as_bytes());
            h.update(&c.len.to_le_bytes());
        }
        Some(*h.finalize().as_bytes())
    }

    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let memo = self.local.memo_get(FS_SUMMARY, &w4b_cache::Digest(*key)).ok()??;
        let bytes = self.local.read(&memo.value.digest).ok()?;
        self.reused.set(self.reused.get() + 1);
        Some(bytes)
    }

    fn put(&self, key: &[u8; 32], summary: &[u8]) {
        self.read.set(self.read.get() + 1);
        // Best effort: without the memo the next build reads the filesystem again.
        if let Ok(digest) = self.local.put_bytes(summary) {
            let value = ChunkRef {
                digest,
                len: summary.len() as u32,
            };
            let _ = self
                .local
                .memo_put(FS_SUMMARY, &w4b_cache::Digest(*key), &value, b"");
        }
    }
}

pub struct ValidateStep {
    pub store: Arc<AppStore>,
    pub board: BoardCheck,
    /// The partition table the board boots from; a disk with the other kind fails.
    pub partition_table: TableType,
    /// The board's label, for messages.
    pub board_label: String,
    /// Where the board's kernel and device trees are declared, for `why`.
    pub board_location: Option<String>,
}

/// The disk's partition table is not the kind the board boots from.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the disk has an {found} partition table, but `{board}` is set up to boot from {wanted}")]
#[diagnostic(
    code(w4b::validate::partition_table_kind),
    help("set `partition_table: {found}` in the board (Raspberry Pi OS images use MBR), or use a base with a {wanted} table; w4b does not convert between the two")
)]
pub struct WrongTableKind {
    pub found: &'static str,
    pub wanted: &'static str,
    pub board: String,
}

impl ValidateStep {
    fn table_name(&self) -> &'static str {
        match self.partition_table {
            TableType::Mbr => "mbr",
            TableType::Gpt => "gpt",
        }
    }
}

/// The disk's verified reader, remembering whether any read met a missing or corrupt
/// chunk: the filesystem readers turn a failed read into a failed check, and such a
/// failure is the cache's, not the image's.
struct DiskReader {
    inner: OutputReader,
    damaged: bool,
}

impl Read for DiskReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if crate::steps::unavailable_blob(e).is_some() {
                self.damaged = true;
            }
        })
    }
}

impl Seek for DiskReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Read buffer over the disk: the checks hop between metadata blocks, so a small buffer
/// reads less than a large one; chunks are cached by the [`OutputReader`] itself.
const READ_BUFFER: usize = 64 << 10;

impl Step for ValidateStep {
    fn kind(&self) -> &'static str {
        "validate"
    }

    fn version(&self) -> u32 {
        // 2: the structure is checked without reading file contents back.
        // 3: the disk is read through verified chunks; a damaged one repairs `disk`.
        // 4: `config.txt`'s `kernel=`, `initramfs` and `upstream_kernel=1` are followed.
        4
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![
            Component::param("board.kernels", self.board.kernels.join(",")).at(self.board_location.clone()),
            Component::param("board.device_trees", self.board.device_trees.join(","))
                .at(self.board_location.clone()),
            Component::param("board.partition_table", self.table_name()).at(self.board_location.clone()),
        ])
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let disk = cx.input(0, "disk")?;
        let inner = self
            .store
            .inner()
            .open_output(&disk.digest)
            .map(OutputReader::rereading_verified)
            .map_err(|e| match e {
                CacheError::Missing { .. } | CacheError::Corrupt { .. } => {
                    StepError::InputUnavailable(disk.digest)
                }
                other => StepError::diag(other),
            })?;
        cx.check_cancel()?;
        let mut reader = BufReader::with_capacity(
            READ_BUFFER,
            DiskReader {
                inner,
                damaged: false,
            },
        );
        let damaged = |r: &BufReader<DiskReader>| r.get_ref().damaged;
        let index: Option<ChunkIndex> = reader
            .get_ref()
            .inner
            .index()
            .filter(|i| i.chunk_size == CHUNK_SIZE && !i.trailer)
            .cloned();
        let summaries = ChunkSummaries {
            local: self.store.local(),
            chunks: index.as_ref().map(|i| i.chunks.as_slice()),
            reused: Default::default(),
            read: Default::default(),
        };
        let checked = validate_disk_structure_cached(&mut reader, disk.size, Some(&self.board), &summaries);
        if damaged(&reader) {
            return Err(StepError::InputUnavailable(disk.digest));
        }
        cx.check_cancel()?;
        let report = checked
            .map_err(StepError::diag)?
            .into_result()
            .map_err(StepError::diag)?;
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| StepError::msg(e.to_string()))?;
        let found = match PartitionTable::read(&mut reader, disk.size) {
            Ok(t) => match t.table.kind {
                TableKind::Mbr { .. } => "mbr",
                TableKind::Gpt { .. } => "gpt",
            },
            Err(_) if damaged(&reader) => return Err(StepError::InputUnavailable(disk.digest)),
            Err(e) => return Err(StepError::diag(e)),
        };
        if found != self.table_name() {
            return Err(StepError::diag(WrongTableKind {
                found,
                wanted: self.table_name(),
                board: self.board_label.clone(),
            }));
        }
        cx.note(&format!(
            "filesystems: {} unchanged since a checked disk (summary reused), {} read",
            summaries.reused.get(),
            summaries.read.get()
        ));
        let json = serde_json::json!({"schema": SCHEMA, "checks": report.checks});
        let bytes = serde_json::to_vec(&json).map_err(|e| StepError::msg(e.to_string()))?;
        let digest = self.store.put(&bytes).map_err(crate::steps::tree_error)?;
        let mut out = Outputs::new();
        out.insert(
            "report".into(),
            OutputRef {
                digest,
                size: bytes.len() as u64,
            },
        );
        Ok(out)
    }
}
