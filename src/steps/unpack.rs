//! `unpack`: a vendor disk image (Raspberry Pi OS, as a `fetch` step downloaded it) into
//! what the rest of the graph builds on — the boot partition's tree, the root partition's
//! tree, and the partition table as canonical JSON.
//!
//! The image blob is decompressed (xz, zstd, gzip, recognised by magic, or raw) straight
//! from the store into a sparse temporary file in the store's own filesystem: the
//! filesystem readers need to seek, and a 4 GiB image that is mostly empty then costs only
//! its data. Nothing holds the image in memory; file contents stream from the partition
//! into the store one file at a time.
//!
//! The key is the image itself (the engine keys on the upstream digest) plus the step's
//! version: there is nothing else to choose. Partitions are recognised by what they hold,
//! not by their type byte, and the image must hold exactly one FAT and exactly one ext4
//! filesystem — anything else is ambiguous about which is `/boot/firmware` and which is
//! `/`, so it is an error that names the partitions found.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::{tree_error, unavailable_blob};
use crate::formats::ext4::Ext4;
use crate::formats::fat::read_fat;
use crate::formats::fs::{ContentId, Contents};
use crate::formats::partition::{PartitionTable, TableKind};
use crate::image::{self, copy_sparse, Compression, Disk, FsKind, FsView, ImageError, SparseError};
use crate::store::AppStore;
use crate::tree::{fs::from_nodes, Blobs};

/// Version of the `table` JSON; bump it (and the step version) when its shape changes.
pub const TABLE_SCHEMA: u32 = 1;

pub struct UnpackStep {
    pub store: Arc<AppStore>,
    /// How errors name the image (its URL or the definition's name for it).
    pub image: String,
}

/// Why an image could not be unpacked.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum UnpackError {
    #[error("cannot read the disk image `{image}`")]
    #[diagnostic(code(w4b::unpack::image))]
    Image {
        image: String,
        #[source]
        #[diagnostic_source]
        source: ImageError,
    },

    #[error("`{image}` has no partition table: {found}")]
    #[diagnostic(
        code(w4b::unpack::no_table),
        help("`unpack` takes a whole-disk image (MBR or GPT) with a FAT boot partition and an ext4 root partition, optionally compressed with xz, zstd or gzip")
    )]
    NoTable { image: String, found: String },

    #[error("`{image}` has no FAT boot partition (found: {found})")]
    #[diagnostic(
        code(w4b::unpack::no_fat),
        help("a Raspberry Pi image boots from a FAT partition (`bootfs`); check that the URL names a Raspberry Pi image")
    )]
    NoFat { image: String, found: String },

    #[error("`{image}` has no ext4 root partition (found: {found})")]
    #[diagnostic(
        code(w4b::unpack::no_ext4),
        help("`unpack` reads ext4 root filesystems only; check that the URL names a Raspberry Pi OS-style image")
    )]
    NoExt4 { image: String, found: String },

    #[error(
        "`{image}` has more than one {kind} partition ({partitions}), so which one is meant is ambiguous"
    )]
    #[diagnostic(
        code(w4b::unpack::ambiguous),
        help("`unpack` expects exactly one FAT boot partition and one ext4 root partition, as Raspberry Pi OS images have")
    )]
    Ambiguous {
        image: String,
        kind: FsKind,
        partitions: String,
    },

    #[error("cannot write the decompressed image to `{}`", dir.display())]
    #[diagnostic(
        code(w4b::unpack::temp),
        help("the image is decompressed next to the cache; make room on the cache's filesystem")
    )]
    Temp {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks for Ctrl-C between reads and reports progress through the compressed input.
struct Watched<'a, R> {
    inner: R,
    cancel: &'a AtomicBool,
    read: u64,
    total: u64,
    progress: &'a (dyn Fn(u64, Option<u64>) + Sync),
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the build was interrupted"));
        }
        let n = self.inner.read(buf)?;
        self.read = self.read.saturating_add(n as u64);
        (self.progress)(self.read, Some(self.total));
        Ok(n)
    }
}

/// A filesystem's contents, checking for Ctrl-C before each file.
struct CancellableContents<'a> {
    inner: &'a dyn Contents,
    cancel: &'a AtomicBool,
}

impl Contents for CancellableContents<'_> {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("the build was interrupted"));
        }
        self.inner.open(id)
    }
}

/// The partition table as the `table` output holds it. Fields are declared in
/// alphabetical order so the compact serialisation is canonical (sorted keys, no
/// whitespace) without a second pass.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TableJson {
    /// The MBR disk signature as 8 lowercase hex digits, or the GPT disk GUID.
    pub disk_id: String,
    /// `mbr` or `gpt`.
    pub kind: &'static str,
    pub partitions: Vec<PartitionJson>,
    pub schema: u32,
    pub sector_size: u32,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PartitionJson {
    pub bootable: bool,
    /// What the partition holds, by its magic: `ext4`, `fat`, `unknown`.
    pub filesystem: FsKind,
    pub index: u32,
    /// GPT partition name; absent for MBR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What Linux calls `PARTUUID` (`1a2b3c4d-02`, or the GPT partition GUID).
    pub partuuid: Option<String>,
    /// Sectors of [`TableJson::sector_size`] bytes.
    pub size: u64,
    /// First sector.
    pub start: u64,
    /// MBR type byte in hex (`c`, `83`) or GPT type GUID, as `sfdisk` spells them.
    #[serde(rename = "type")]
    pub type_id: String,
}

/// The canonical JSON of `table`, with the filesystem each partition was found to hold.
pub fn table_json(table: &PartitionTable, filesystems: &[FsView]) -> TableJson {
    let (kind, disk_id) = match &table.kind {
        TableKind::Mbr { disk_signature } => ("mbr", format!("{disk_signature:08x}")),
        TableKind::Gpt { disk_guid, .. } => ("gpt", disk_guid.to_string()),
    };
    let partitions = table
        .partitions
        .iter()
        .map(|p| PartitionJson {
            bootable: p.bootable,
            filesystem: filesystems
                .iter()
                .find(|f| f.partition == Some(p.index))
                .map_or(FsKind::Unknown, |f| f.kind),
            index: p.index,
            name: matches!(table.kind, TableKind::Gpt { .. }).then(|| p.name.clone()),
            partuuid: table.partuuid(p.index),
            size: p.size_lba,
            start: p.start_lba,
            type_id: p.partition_type.to_string(),
        })
        .collect();
    TableJson {
        disk_id,
        kind,
        partitions,
        schema: TABLE_SCHEMA,
        sector_size: table.sector_size,
    }
}

impl UnpackStep {
    /// Decompresses the image blob into an anonymous sparse file beside the cache.
    fn spool(&self, cx: &RunContext<'_>, input: OutputRef) -> Result<File, StepError> {
        let reader = self
            .store
            .inner()
            .reader(&input.digest)
            .map_err(|_| StepError::InputUnavailable(input.digest))?;
        let mut watched = BufReader::with_capacity(
            1 << 20,
            Watched {
                inner: reader,
                cancel: cx.cancel,
                read: 0,
                total: input.size,
                progress: cx.progress,
            },
        );
        let head = io::BufRead::fill_buf(&mut watched).map_err(|e| self.read_error(cx, input, 0, e))?;
        let compression = Compression::from_magic(head);
        let decoded = image::decoder(watched, compression).map_err(|e| self.read_error(cx, input, 0, e))?;
        let dir = self
            .store
            .scratch_path("unpack")
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let temp_err = |source| {
            StepError::diag(UnpackError::Temp {
                dir: dir.clone(),
                source,
            })
        };
        std::fs::create_dir_all(&dir).map_err(temp_err)?;
        let mut out = tempfile::tempfile_in(&dir).map_err(temp_err)?;
        match copy_sparse(decoded, &mut out) {
            Ok(_) => {}
            Err(SparseError::Write(e)) => return Err(temp_err(e)),
            Err(SparseError::Read { offset, source }) => {
                return Err(self.decompress_error(cx, input, compression, offset, source))
            }
        }
        Ok(out)
    }

    /// A failed read of the blob: Ctrl-C, a missing or corrupt blob (the engine refetches
    /// it), or damaged bytes.
    fn read_error(&self, cx: &RunContext<'_>, input: OutputRef, offset: u64, e: io::Error) -> StepError {
        self.decompress_error(cx, input, Compression::None, offset, e)
    }

    fn decompress_error(
        &self,
        cx: &RunContext<'_>,
        input: OutputRef,
        compression: Compression,
        offset: u64,
        source: io::Error,
    ) -> StepError {
        if cx.cancel.load(Ordering::Relaxed) {
            return StepError::Cancelled;
        }
        if let Some(d) = unavailable_blob(&source) {
            return StepError::InputUnavailable(d);
        }
        if source.kind() == io::ErrorKind::NotFound {
            return StepError::InputUnavailable(input.digest);
        }
        self.image_error(ImageError::Decompress {
            path: PathBuf::from(&self.image),
            compression,
            offset,
            source,
        })
    }

    fn image_error(&self, source: ImageError) -> StepError {
        StepError::diag(UnpackError::Image {
            image: self.image.clone(),
            source,
        })
    }

    /// The one filesystem of `kind`, or an error naming what was found.
    fn pick<'d>(&self, disk: &'d Disk, kind: FsKind) -> Result<&'d FsView, StepError> {
        let found: Vec<&FsView> = disk.filesystems.iter().filter(|f| f.kind == kind).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => {
                let found = describe(&disk.filesystems);
                Err(StepError::diag(match kind {
                    FsKind::Fat => UnpackError::NoFat {
                        image: self.image.clone(),
                        found,
                    },
                    _ => UnpackError::NoExt4 {
                        image: self.image.clone(),
                        found,
                    },
                }))
            }
            several => Err(StepError::diag(UnpackError::Ambiguous {
                image: self.image.clone(),
                kind,
                partitions: several.iter().map(|f| f.place()).collect::<Vec<_>>().join(", "),
            })),
        }
    }

    /// Streams one filesystem into the store as a tree.
    fn tree(&self, cx: &RunContext<'_>, disk: &Disk, fs: &FsView) -> Result<OutputRef, StepError> {
        let place = fs.place();
        let blobs: &dyn Blobs = self.store.as_ref();
        let result = match fs.kind {
            FsKind::Ext4 => {
                let ext4 = Ext4::open(&disk.file, fs.offset, fs.len).map_err(|source| {
                    self.image_error(ImageError::Ext4 {
                        place: place.clone(),
                        source,
                    })
                })?;
                let nodes = ext4.nodes().map_err(|source| {
                    self.image_error(ImageError::Ext4 {
                        place: place.clone(),
                        source,
                    })
                })?;
                let contents = CancellableContents {
                    inner: &ext4,
                    cancel: cx.cancel,
                };
                from_nodes(blobs, &nodes, &contents)
            }
            // `pick` only hands out FAT and ext4 views.
            FsKind::Fat | FsKind::Unknown => {
                let mut r = &disk.file;
                let fat = read_fat(&mut r, fs.offset, fs.len).map_err(|source| {
                    self.image_error(ImageError::Fat {
                        place: place.clone(),
                        source,
                    })
                })?;
                let contents = CancellableContents {
                    inner: &fat,
                    cancel: cx.cancel,
                };
                from_nodes(blobs, fat.nodes(), &contents)
            }
        };
        cx.check_cancel()?;
        let digest = result.map_err(|e| match e {
            // A file the filesystem cannot produce is damage in the image, not in the store.
            crate::tree::TreeError::Io { path, source, .. } if unavailable_blob(&source).is_none() => self
                .image_error(ImageError::File {
                    place: place.clone(),
                    path: path.display().to_string(),
                    source,
                }),
            other => tree_error(other),
        })?;
        Ok(OutputRef { digest, size: 0 })
    }
}

/// `partition 1 (fat), partition 2 (unknown)`: what an image was found to hold.
fn describe(filesystems: &[FsView]) -> String {
    if filesystems.is_empty() {
        return "no partitions".into();
    }
    filesystems
        .iter()
        .map(|f| format!("{} ({})", f.place(), f.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Step for UnpackStep {
    fn kind(&self) -> &'static str {
        "unpack"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        // The image is the upstream `file` output, which the engine keys on already; the
        // display name is deliberately not keyed (a renamed definition is the same image).
        Ok(Vec::new())
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let input = cx.input(0, "file")?;
        let file = self.spool(cx, input)?;
        cx.check_cancel()?;
        let disk = match image::read_disk(file) {
            Ok(disk) => disk,
            Err(ImageError::Unrecognised { reason }) => {
                return Err(StepError::diag(UnpackError::NoTable {
                    image: self.image.clone(),
                    found: format!("its bytes are neither a partitioned disk nor a filesystem ({reason})"),
                }))
            }
            Err(e) => return Err(self.image_error(e)),
        };
        let Some(table) = &disk.table else {
            let found = disk.filesystems.first().map_or(FsKind::Unknown, |f| f.kind);
            return Err(StepError::diag(UnpackError::NoTable {
                image: self.image.clone(),
                found: format!("it is a bare {found} filesystem, not a whole disk"),
            }));
        };
        let fat = self.pick(&disk, FsKind::Fat)?;
        let ext4 = self.pick(&disk, FsKind::Ext4)?;
        let json = serde_json::to_vec(&table_json(table, &disk.filesystems))
            .map_err(|e| StepError::msg(format!("cannot serialise the partition table: {e}")))?;
        let table_digest = Blobs::put(self.store.as_ref(), &json).map_err(tree_error)?;
        let bootfs = self.tree(cx, &disk, fat)?;
        let rootfs = self.tree(cx, &disk, ext4)?;
        let mut out = Outputs::new();
        out.insert("bootfs".into(), bootfs);
        out.insert("rootfs".into(), rootfs);
        out.insert(
            "table".into(),
            OutputRef {
                digest: table_digest,
                size: json.len() as u64,
            },
        );
        Ok(out)
    }
}
