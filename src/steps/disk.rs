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
//! The disk is written into a sparse temporary file in the store's filesystem (zero runs
//! of the partition images are seeked over, never written) and published by hashing it
//! in place, so a 2 GiB disk that holds 300 MiB of data costs 300 MiB of writes.
//!
//! Keyed: nothing besides the inputs (the table and both images are upstream outputs)
//! and the version — every choice here is a function of them.

#![forbid(unsafe_code)]

use std::io::{self, Read, Seek, SeekFrom};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::table::{load_table, TableJson};
use super::unavailable_blob;
use crate::formats::gpt::Guid;
use crate::formats::partition::{
    align_up, Partition, PartitionError, PartitionTable, TableKind, BOOT_CODE_LEN, RPI_ALIGNMENT_LBA,
    SECTOR_SIZE,
};
use crate::image::{copy_sparse, FsKind, SparseError};
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

    #[error("cannot write the disk image into the cache")]
    #[diagnostic(
        code(w4b::disk::store),
        help("the disk is written next to the cache; make room on its filesystem")
    )]
    Store(#[source] w4b_cache::CacheError),

    #[error("cannot write the disk image")]
    #[diagnostic(
        code(w4b::disk::write),
        help("the disk is written next to the cache; make room on its filesystem")
    )]
    Write(#[source] io::Error),
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

/// A blob being copied into the disk: counts bytes for progress, stops on Ctrl-C.
struct Feed<'a, R> {
    inner: R,
    cancel: &'a AtomicBool,
    done: &'a mut u64,
    total: u64,
    progress: &'a (dyn Fn(u64, Option<u64>) + Sync),
}

impl<R: Read> Read for Feed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the build was interrupted"));
        }
        let n = self.inner.read(buf)?;
        *self.done = self.done.saturating_add(n as u64);
        (self.progress)(*self.done, Some(self.total));
        Ok(n)
    }
}

/// `disk`: input 0 is `unpack` (`table`), input 1 `mkfs-fat` (`fs`), input 2 `mkfs-ext4`
/// (`fs`); output `disk`, the raw image.
pub struct DiskStep {
    pub store: Arc<AppStore>,
}

impl Step for DiskStep {
    fn kind(&self) -> &'static str {
        "disk"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(Vec::new())
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let base = load_table(&self.store, cx.input(0, "table")?)?;
        let boot = cx.input(1, "fs")?;
        let root = cx.input(2, "fs")?;
        let l = layout(&base, boot.size, root.size)?;
        let image = self
            .store
            .local()
            .scratch_file()
            .map_err(|e| StepError::diag(DiskError::Store(e)))?;
        let write_err = |e: io::Error| StepError::diag(DiskError::Write(e));
        let mut f = image.as_file();
        f.set_len(l.disk_size).map_err(write_err)?;
        l.table.write(&mut f, l.disk_size).map_err(|e| match e {
            PartitionError::Io(io) => write_err(io),
            other => StepError::diag(DiskError::Table(other)),
        })?;
        let mut done = 0u64;
        let total = boot.size.saturating_add(root.size);
        for (index, offset) in &l.placements {
            let kind = base
                .partitions
                .iter()
                .find(|p| p.index == *index)
                .map(|p| p.filesystem);
            let blob = if kind == Some(FsKind::Fat) { boot } else { root };
            let reader = self
                .store
                .inner()
                .open_output(&blob.digest)
                .map_err(|_| StepError::InputUnavailable(blob.digest))?;
            f.seek(SeekFrom::Start(*offset)).map_err(write_err)?;
            let feed = Feed {
                inner: io::BufReader::with_capacity(1 << 20, reader),
                cancel: cx.cancel,
                done: &mut done,
                total,
                progress: cx.progress,
            };
            match copy_sparse(feed, &mut f) {
                Ok(_) => {}
                Err(SparseError::Write(e)) => return Err(write_err(e)),
                Err(SparseError::Read { source, .. }) => {
                    cx.check_cancel()?;
                    return Err(match unavailable_blob(&source) {
                        Some(d) => StepError::InputUnavailable(d),
                        None => StepError::InputUnavailable(blob.digest),
                    });
                }
            }
        }
        cx.check_cancel()?;
        let (digest, size) = self
            .store
            .local()
            .adopt(image)
            .map_err(|e| StepError::diag(DiskError::Store(e)))?;
        let mut out = Outputs::new();
        out.insert("disk".into(), OutputRef { digest, size });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::table::{GptJson, PartitionJson, TABLE_SCHEMA};

    fn part(index: u32, start: u64, size: u64, fs: FsKind, type_id: &str, partuuid: &str) -> PartitionJson {
        PartitionJson {
            attributes: None,
            bootable: false,
            ext4: None,
            fat: None,
            filesystem: fs,
            index,
            name: None,
            partuuid: Some(partuuid.into()),
            size,
            start,
            type_id: type_id.into(),
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
