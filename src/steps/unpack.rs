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

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::table::{uuid_text, Ext4Json, FatJson, TableJson, DEFAULT_BOOT_MOUNT};
use super::{tree_error, unavailable_blob};
use crate::formats::ext4::spec::compat;
use crate::formats::ext4::Ext4;
use crate::formats::fat::{read_fat, volume_id_text, FatType};
use crate::formats::fs::{ContentId, Contents};
use crate::image::{self, copy_sparse, Compression, Disk, FsKind, FsView, ImageError, SparseError};
use crate::store::AppStore;
use crate::tree::{fs::from_nodes, Blobs};
use crate::validate::device::PartInfo;
use crate::validate::fstab;

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

    #[error("cannot make the unpacked files durable in the cache")]
    #[diagnostic(
        code(w4b::unpack::store),
        help("the files are stored in the cache; check that its filesystem has room and is writable")
    )]
    Store(#[source] w4b_cache::CacheError),

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
        // The store verifies a blob only at its end, and a decoder usually chokes on
        // damaged bytes before that: read the blob through once more to tell a damaged
        // cache entry (the engine fetches it again) from a damaged download.
        if let Ok(mut r) = self.store.inner().reader(&input.digest) {
            if let Err(e) = io::copy(&mut r, &mut io::sink()) {
                if let Some(d) = unavailable_blob(&e) {
                    return StepError::InputUnavailable(d);
                }
            }
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

    /// Streams one filesystem into the store as a tree (its small files into `blobs`'s
    /// pack).
    fn tree(
        &self,
        cx: &RunContext<'_>,
        blobs: &dyn Blobs,
        disk: &Disk,
        fs: &FsView,
    ) -> Result<OutputRef, StepError> {
        let place = fs.place();
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

impl UnpackStep {
    /// What the boot sector says about the FAT filesystem.
    fn fat_identity(&self, disk: &Disk, fs: &FsView) -> Result<FatJson, StepError> {
        let mut r = &disk.file;
        let fat = read_fat(&mut r, fs.offset, fs.len).map_err(|source| {
            self.image_error(ImageError::Fat {
                place: fs.place(),
                source,
            })
        })?;
        let info = fat.info();
        Ok(FatJson {
            cluster_size: info.bytes_per_sector.saturating_mul(info.sectors_per_cluster),
            fat_type: match info.fat_type {
                FatType::Fat12 => "FAT12",
                FatType::Fat16 => "FAT16",
                FatType::Fat32 => "FAT32",
            }
            .to_owned(),
            hidden_sectors: info.hidden_sectors,
            label: info.label.clone(),
            oem_name: info.oem_name.clone(),
            volume_id: info.volume_id.map(|v| format!("{v:08x}")),
        })
    }

    /// What the superblock (and the journal inode) say about the ext4 filesystem.
    fn ext4_identity(&self, disk: &Disk, fs: &FsView) -> Result<Ext4Json, StepError> {
        let err = |source| {
            self.image_error(ImageError::Ext4 {
                place: fs.place(),
                source,
            })
        };
        let ext4 = Ext4::open(&disk.file, fs.offset, fs.len).map_err(err)?;
        let sb = ext4.superblock();
        let bs = sb.block_size();
        let blocks = sb.blocks_count();
        let mut seed = [0u8; 16];
        for (chunk, w) in seed.chunks_exact_mut(4).zip(sb.s_hash_seed) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let journal_blocks = if sb.has_compat(compat::HAS_JOURNAL) && sb.s_journal_inum != 0 {
            let size = ext4.inode(sb.s_journal_inum).map_err(err)?.size();
            u32::try_from(size.checked_div(bs).unwrap_or(0)).ok()
        } else {
            None
        };
        let bytes = blocks.saturating_mul(bs);
        let inodes = u64::from(sb.s_inodes_count).max(1);
        let ratio = (bytes / inodes).clamp(1024, 64 << 20);
        let reserved = sb.r_blocks_count();
        let percent = reserved
            .saturating_mul(100)
            .saturating_add(blocks / 2)
            .checked_div(blocks)
            .unwrap_or(0)
            .min(50);
        Ok(Ext4Json {
            block_size: bs,
            blocks,
            hash_seed: uuid_text(&seed),
            inode_count: u64::from(sb.s_inodes_count),
            inode_ratio: u32::try_from(ratio).unwrap_or(16384),
            journal_blocks,
            label: sb.label(),
            reserved_blocks: reserved,
            reserved_percent: u8::try_from(percent).unwrap_or(5),
            uuid: uuid_text(&sb.s_uuid),
        })
    }

    /// `/etc/fstab` of the root tree, when it is a regular file.
    fn fstab(&self, root: w4b_cache::Digest) -> Result<Option<String>, StepError> {
        let blobs: &dyn Blobs = self.store.as_ref();
        let path = crate::tree::TreePath::parse("/etc/fstab").map_err(tree_error)?;
        match crate::tree::lookup(blobs, root, &path).map_err(tree_error)? {
            Some(crate::tree::Entry {
                kind: crate::tree::Kind::File { digest, .. },
                ..
            }) => {
                let bytes = blobs.get(&digest).map_err(tree_error)?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            _ => Ok(None),
        }
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
        // 2: table schema 2 (filesystem identities, disk size, boot mount point).
        // 3: the boot mount point from the validator's fstab device rule (exact labels,
        //    `PARTLABEL=`, kernel names), which may read unusual fstabs differently.
        3
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        // The image is the upstream `file` output, which the engine keys on already; the
        // display name is deliberately not keyed (a renamed definition is the same image).
        Ok(Vec::new())
    }
    /// Everything is stored unsynced, then made durable by one `syncfs` once the
    /// decompressed image is deleted (so its pages are dropped, never written back): the
    /// small files go into one pack (`w4b_cache` packs), the rest are plain blobs.
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        self.store
            .local()
            .with_deferred_sync(|| self.unpack(cx))
            .map_err(|e| StepError::diag(UnpackError::Store(e)))?
    }
}

impl UnpackStep {
    fn unpack(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
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
        let mut json = TableJson::from_table(table, &disk.filesystems);
        json.disk_size = disk.size;
        let fat_id = self.fat_identity(&disk, fat)?;
        let ext4_id = self.ext4_identity(&disk, ext4)?;
        let packing = self.store.packing().map_err(tree_error)?;
        let bootfs = self.tree(cx, &packing, &disk, fat)?;
        let rootfs = self.tree(cx, &packing, &disk, ext4)?;
        packing.finish().map_err(tree_error)?;
        for p in &mut json.partitions {
            if Some(p.index) == fat.partition {
                p.fat = Some(fat_id.clone());
            } else if Some(p.index) == ext4.partition {
                p.ext4 = Some(ext4_id.clone());
            }
        }
        let boot = fat
            .partition
            .and_then(|i| json.partitions.iter().find(|p| p.index == i));
        // The boot partition as `/etc/fstab` may name it, matched by the validator's rules.
        let device = PartInfo {
            index: boot.map_or(1, |p| p.index),
            partuuid: boot.and_then(|p| p.partuuid.clone()),
            name: boot.and_then(|p| p.name.clone()).unwrap_or_default(),
            fs: FsKind::Fat,
            fs_label: fat_id.label.clone(),
            fs_uuid: fat_id
                .volume_id
                .as_deref()
                .and_then(|v| u32::from_str_radix(v, 16).ok())
                .map(volume_id_text),
        };
        json.boot_mount = self
            .fstab(rootfs.digest)?
            .and_then(|text| fstab::mount_point(&text, &device))
            .unwrap_or_else(|| DEFAULT_BOOT_MOUNT.to_owned());
        let json = serde_json::to_vec(&json)
            .map_err(|e| StepError::msg(format!("cannot serialise the partition table: {e}")))?;
        let table_digest = Blobs::put(self.store.as_ref(), &json).map_err(tree_error)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{Seek, SeekFrom, Write};

    use super::*;
    use crate::formats::ext4::write::{write_ext4, Ext4Options, Size};
    use crate::formats::fat::{write_fat32, FatOptions};
    use crate::formats::fs::{MemContents, Node, NodeKind};
    use crate::formats::partition::PartitionTable;

    fn node(path: &str, kind: NodeKind) -> Node {
        Node {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: BTreeMap::new(),
        }
    }

    /// A small Raspberry Pi disk from the crate's own writers; `root_is_fat` puts a second
    /// FAT filesystem where the ext4 one belongs.
    fn disk(root_is_fat: bool) -> Vec<u8> {
        let mut contents = MemContents::default();
        let cfg = contents.add(b"arm_64bit=1\n");
        let list = vec![
            node("/", NodeKind::Dir),
            node(
                "/config.txt",
                NodeKind::File {
                    size: 12,
                    content: cfg,
                },
            ),
        ];
        let size = 80u64 << 20;
        let table = PartitionTable::raspberry_pi_mbr(0x1a2b3c4d, (34u64 << 20) / 512, size).unwrap();
        let mut f = std::io::Cursor::new(vec![0u8; size as usize]);
        table.write(&mut f, size).unwrap();
        for index in [1, 2] {
            let p = table.partition(index).unwrap().clone();
            let mut w = table.open(&mut f, index).unwrap();
            if index == 1 || root_is_fat {
                let mut opts = FatOptions::new(p.size_lba * 512, 0x1234_abcd, "bootfs");
                opts.hidden_sectors = p.start_lba as u32;
                write_fat32(&mut w, &list, &contents, &opts).unwrap();
            } else {
                let o = Ext4Options::new(Size::Fixed(p.size_lba * 512), [7; 16], [9; 16], 1_700_000_000);
                write_ext4(&mut w, &list, &contents, &o).unwrap();
            }
        }
        f.into_inner()
    }

    fn store() -> (tempfile::TempDir, Arc<AppStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        (dir, store)
    }

    fn run(store: &Arc<AppStore>, image: &[u8], cancelled: bool) -> Result<Outputs, StepError> {
        let digest = Blobs::put(store.as_ref(), image).unwrap();
        let file = OutputRef {
            digest,
            size: image.len() as u64,
        };
        run_on(store, file, cancelled)
    }

    fn run_on(store: &Arc<AppStore>, file: OutputRef, cancelled: bool) -> Result<Outputs, StepError> {
        let mut fetched = Outputs::new();
        fetched.insert("file".into(), file);
        let step = UnpackStep {
            store: store.clone(),
            image: "test.img".into(),
        };
        let cancel = AtomicBool::new(cancelled);
        let progress = |_: u64, _: Option<u64>| {};
        let inputs = [fetched];
        let cx = RunContext {
            name: "//bases:t#unpack",
            inputs: &inputs,
            cache: store.as_ref(),
            cancel: &cancel,
            progress: &progress,
            trees: &Default::default(),
            note: &|_| {},
        };
        step.run(&cx)
    }

    fn code(e: &StepError) -> String {
        match e {
            StepError::Diagnostic(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_pi_disk_unpacks_and_zstd_gives_the_same_outputs() {
        let (_dir, store) = store();
        let raw = disk(false);
        let out = run(&store, &raw, false).unwrap();
        let boot = crate::tree::lookup(
            store.as_ref(),
            out["bootfs"].digest,
            &crate::tree::TreePath::parse("/config.txt").unwrap(),
        )
        .unwrap()
        .unwrap();
        match boot.kind {
            crate::tree::Kind::File { digest, .. } => {
                assert_eq!(Blobs::get(store.as_ref(), &digest).unwrap(), b"arm_64bit=1\n")
            }
            other => panic!("{other:?}"),
        }
        let zst = zstd::stream::encode_all(&raw[..], 1).unwrap();
        assert_eq!(run(&store, &zst, false).unwrap(), out);
        let json = Blobs::get(store.as_ref(), &out["table"].digest).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"boot_mount":"/boot/firmware","disk_id":"1a2b3c4d","disk_size":83886080,"kind":"mbr","partitions":[{"bootable":false,"fat":{"cluster_size":512,"fat_type":"FAT32","hidden_sectors":8192,"label":"bootfs","oem_name":"MSWIN4.1","volume_id":"1234abcd"},"filesystem":"fat","index":1,"partuuid":"1a2b3c4d-01","size":69632,"start":8192,"type":"c"}"#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""type":"83"}],"schema":2,"sector_size":512}"#),
            "{text}"
        );
        // Canonical: serde_json's `Value` sorts keys; re-serialising changes nothing.
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), json);
        let t = TableJson::parse(&json).unwrap();
        let e = t.partition_of(FsKind::Ext4).unwrap().ext4.clone().unwrap();
        assert_eq!(e.uuid, uuid_text(&[7; 16]));
        assert_eq!(e.hash_seed, uuid_text(&[9; 16]));
        assert_eq!(e.reserved_percent, 5);
        assert_eq!(e.inode_ratio, 16384);
        assert_eq!(e.label, "");
        assert!(e.journal_blocks.is_some_and(|j| j >= 1024), "{e:?}");
    }

    #[test]
    fn two_fat_partitions_are_ambiguous() {
        let (_dir, store) = store();
        let e = run(&store, &disk(true), false).unwrap_err();
        assert_eq!(code(&e), "w4b::unpack::ambiguous");
        assert!(
            e.to_string()
                .contains("more than one fat partition (partition 1, partition 2)"),
            "{e}"
        );
    }

    #[test]
    fn a_cancelled_unpack_stops() {
        let (_dir, store) = store();
        assert!(matches!(
            run(&store, &disk(false), true),
            Err(StepError::Cancelled)
        ));
    }

    #[test]
    fn a_corrupt_image_blob_is_an_unavailable_input() {
        let (dir, store) = store();
        let raw = disk(false);
        let digest = Blobs::put(store.as_ref(), &raw).unwrap();
        // Damage the stored blob in place: the verifying reader notices at the end.
        let mut damaged = 0;
        for entry in walkdir(&dir.path().join("cache")) {
            if std::fs::metadata(&entry).is_ok_and(|m| m.len() == raw.len() as u64) {
                let mut f = std::fs::File::options().write(true).open(&entry).unwrap();
                f.seek(SeekFrom::Start(1 << 20)).unwrap();
                f.write_all(b"damage").unwrap();
                damaged += 1;
            }
        }
        assert_eq!(damaged, 1);
        let file = OutputRef {
            digest,
            size: raw.len() as u64,
        };
        match run_on(&store, file, false) {
            Err(StepError::InputUnavailable(d)) => assert_eq!(d, digest),
            other => panic!("{other:?}"),
        }
        // Compressed: the decoder fails first, and the blob is still found to be damaged.
        let zst = zstd::stream::encode_all(&raw[..], 1).unwrap();
        let digest = Blobs::put(store.as_ref(), &zst).unwrap();
        let mut damaged = 0;
        for entry in walkdir(&dir.path().join("cache")) {
            if std::fs::metadata(&entry).is_ok_and(|m| m.len() == zst.len() as u64) {
                let mut f = std::fs::File::options().write(true).open(&entry).unwrap();
                f.seek(SeekFrom::Start(zst.len() as u64 / 2)).unwrap();
                f.write_all(&[0xff; 64]).unwrap();
                damaged += 1;
            }
        }
        assert_eq!(damaged, 1);
        let file = OutputRef {
            digest,
            size: zst.len() as u64,
        };
        match run_on(&store, file, false) {
            Err(StepError::InputUnavailable(d)) => assert_eq!(d, digest),
            other => panic!("{other:?}"),
        }
    }

    fn walkdir(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
