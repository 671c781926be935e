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
//! The readers seek, so the disk blob is opened in place, unverified; a failure is only
//! reported after the blob's digest has been checked (a corrupt cache entry is a missing
//! input that the engine repairs, not a broken image), and a pass needs no check of its
//! own because `compress` streams the same blob through a verifying reader.

#![forbid(unsafe_code)]

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use w4b_cache::{CacheError, OutputRef};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use crate::defs::TableType;
use crate::formats::partition::{PartitionTable, TableKind};
use crate::store::AppStore;
use crate::tree::Blobs;
use crate::validate::{validate_disk_structure, BoardCheck, SCHEMA};

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

    /// Whether the blob still has the digest it is stored under (reads it once).
    fn intact(&self, disk: OutputRef) -> Result<bool, StepError> {
        let mut r = match self.store.inner().reader(&disk.digest) {
            Ok(r) => r,
            Err(_) => return Ok(false),
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) => {
                    return match crate::steps::unavailable_blob(&e) {
                        Some(_) => Ok(false),
                        None => Err(StepError::context("reading the disk back failed", &e)),
                    }
                }
            }
        }
    }
}

impl Step for ValidateStep {
    fn kind(&self) -> &'static str {
        "validate"
    }

    fn version(&self) -> u32 {
        // 2: the structure is checked without reading file contents back.
        2
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
        let file = self
            .store
            .inner()
            .open_unverified(&disk.digest)
            .map_err(|e| match e {
                CacheError::Missing { .. } | CacheError::Corrupt { .. } => {
                    StepError::InputUnavailable(disk.digest)
                }
                other => StepError::diag(other),
            })?;
        cx.check_cancel()?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let report = match validate_disk_structure(&mut reader, disk.size, Some(&self.board)) {
            Ok(report) => report,
            Err(e) => {
                if !self.intact(disk)? {
                    return Err(StepError::InputUnavailable(disk.digest));
                }
                return Err(StepError::diag(e));
            }
        };
        cx.check_cancel()?;
        if !report.passed() && !self.intact(disk)? {
            return Err(StepError::InputUnavailable(disk.digest));
        }
        let report = report.into_result().map_err(StepError::diag)?;
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| StepError::msg(e.to_string()))?;
        let found = match PartitionTable::read(&mut reader, disk.size) {
            Ok(t) => match t.table.kind {
                TableKind::Mbr { .. } => "mbr",
                TableKind::Gpt { .. } => "gpt",
            },
            // The checks above read the same table; a failure now is a changed blob.
            Err(_) => return Err(StepError::InputUnavailable(disk.digest)),
        };
        if found != self.table_name() {
            return Err(StepError::diag(WrongTableKind {
                found,
                wanted: self.table_name(),
                board: self.board_label.clone(),
            }));
        }
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
