//! Structural validation of a Raspberry Pi disk image: the checks a built image must pass
//! before w4b writes it out, and that `w4b validate` runs on any image.
//!
//! The image is read once, through w4b's own readers ([`crate::formats`]): the partition
//! table (MBR or GPT: readable, every partition inside the disk, no overlaps, starts on
//! 1 MiB boundaries), exactly one FAT boot and one ext4 root filesystem, each walked
//! completely with every byte of every file read (the readers verify checksums, cluster
//! chains and sizes on the way), then the files that make the image boot: `cmdline.txt`'s
//! `root=` must name the ext4 partition of this disk, `/etc/fstab` must name partitions
//! that exist with matching types, `/` must be the ext4 one and the boot mount point the
//! FAT one, and `config.txt`, the kernels and the device trees of the board must be on the
//! boot partition.
//!
//! Each rule gives a [`Check`] (pass, fail or skip, with the file it looked at) in a
//! [`Report`]; [`Report::into_result`] turns failures into one [`ValidationFailed`]
//! diagnostic listing them. Nothing here spawns a tool or needs root: the external
//! oracles (`fsck.fat`, `e2fsck`) live in [`oracle`] and the kernel comparison in
//! [`mount`], both used only by `w4b validate`, never by a build.

#![forbid(unsafe_code)]

pub mod archive;
pub mod board;
pub mod cmdline;
pub mod device;
pub mod fstab;
pub mod hive;
pub mod mount;
pub mod oracle;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Seek};
use std::path::Path;

use serde::Serialize;

pub use board::{board_check, BoardCheck, BOARDS};
use device::{DeviceRef, PartInfo, Resolved};

use crate::formats::ext4::spec::incompat;
use crate::formats::ext4::Ext4;
use crate::formats::fat::{read_fat, volume_id_text};
use crate::formats::fs::{Contents, Node, NodeKind};
use crate::formats::partition::{PartitionTable, TableKind};
use crate::image::{detect_fs, open_image, read_head, FsKind, ImageError};

/// The JSON schema name of `w4b validate --format json`.
pub const SCHEMA: &str = "w4b.validate/1";

/// Partitions must start on this many sectors (1 MiB): every partitioning tool has
/// aligned to it since 2010, and SD cards' erase blocks are a divisor of 4 MiB.
pub const ALIGNMENT_LBA: u64 = 2048;

/// Largest `cmdline.txt`, `config.txt` or `fstab` read into memory (they are a few
/// hundred bytes; anything this large is not a text file).
const MAX_TEXT: u64 = 1 << 20;

/// Where the boot partition is mounted on Raspberry Pi OS (bookworm; `/boot` before).
const BOOT_MOUNT_POINTS: &[&str] = &["/boot/firmware", "/boot"];

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
        })
    }
}

/// One rule applied to the image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The rule, in snake case: `partition_table`, `cmdline`, `fstab`, `kernel`, …
    /// (the diagnostic code of a failure is `w4b::validate::<name>`).
    pub name: String,
    pub status: Status,
    /// What was found, one sentence.
    pub detail: String,
    /// The file looked at: `bootfs:/cmdline.txt`, `rootfs:/etc/fstab:3` (with the line),
    /// or `None` for the disk itself.
    pub file: Option<String>,
    /// How to fix a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// Every check run, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The checks named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Check> {
        self.checks.iter().filter(move |c| c.name == name)
    }

    /// The report if every check passed (or was skipped), else one diagnostic listing the
    /// failures.
    pub fn into_result(self) -> Result<Report, ValidationFailed> {
        let failures: Vec<CheckFailure> = self
            .failures()
            .map(|c| CheckFailure {
                rule: c.name.clone(),
                file: c.file.clone(),
                detail: c.detail.clone(),
                help: c.help.clone(),
            })
            .collect();
        if failures.is_empty() {
            Ok(self)
        } else {
            Err(ValidationFailed {
                count: failures.len(),
                failures,
            })
        }
    }

    /// Adds a passed check.
    pub fn pass(&mut self, name: &str, file: Option<String>, detail: impl Into<String>) {
        self.push(name, Status::Pass, file, detail.into(), None);
    }

    /// Adds a skipped check (`detail` says why).
    pub fn skip(&mut self, name: &str, file: Option<String>, detail: impl Into<String>) {
        self.push(name, Status::Skip, file, detail.into(), None);
    }

    /// Adds a failed check with the fix in `help`.
    pub fn fail(
        &mut self,
        name: &str,
        file: Option<String>,
        detail: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(name, Status::Fail, file, detail.into(), Some(help.into()));
    }

    /// Adds a check.
    pub fn push(
        &mut self,
        name: &str,
        status: Status,
        file: Option<String>,
        detail: String,
        help: Option<String>,
    ) {
        self.checks.push(Check {
            name: name.to_string(),
            status,
            detail,
            file,
            help,
        });
    }
}

/// The image failed validation: one related diagnostic per failed check.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the image failed {count} validation check(s)")]
#[diagnostic(
    code(w4b::validate::failed),
    help("each failure names the file and the rule; `docs/troubleshooting.md` has an entry per rule")
)]
pub struct ValidationFailed {
    pub count: usize,
    #[related]
    pub failures: Vec<CheckFailure>,
}

/// One failed check as a diagnostic: code `w4b::validate::<rule>`.
#[derive(Debug, thiserror::Error)]
pub struct CheckFailure {
    pub rule: String,
    pub file: Option<String>,
    pub detail: String,
    pub help: Option<String>,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{} (`{file}`): {}", self.rule, self.detail),
            None => write!(f, "{}: {}", self.rule, self.detail),
        }
    }
}

impl miette::Diagnostic for CheckFailure {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(format!("w4b::validate::{}", self.rule)))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// Why validation could not run (as opposed to an image that fails it).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ValidateError {
    #[error("reading the image failed")]
    #[diagnostic(code(w4b::validate::io))]
    Io(#[from] io::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] ImageError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Failed(#[from] ValidationFailed),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Mount(#[from] mount::MountError),
}

/// One partition as validation saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartView {
    pub info: PartInfo,
    /// Byte offset in the image.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// Whether the partition lies inside the image (else its contents were not read).
    pub inside: bool,
}

/// The partitions of the image, for [`oracle`] and [`mount`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub parts: Vec<PartView>,
    /// The partition index of the FAT boot and ext4 root filesystems, when found.
    pub boot: Option<u32>,
    pub root: Option<u32>,
}

impl Layout {
    pub fn part(&self, index: u32) -> Option<&PartView> {
        self.parts.iter().find(|p| p.info.index == index)
    }
}

/// An entry of a filesystem as our reader sees it, hard links resolved to their target's
/// content, for comparison with the kernel's view ([`mount`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeEntry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    File { size: u64, blake3: [u8; 32] },
    Dir,
    Symlink { target: String },
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
    Socket,
}

/// What [`inspect_disk`] found: the report, the partitions, and (when asked) both trees.
#[derive(Debug, Default)]
pub struct Validation {
    pub report: Report,
    pub layout: Layout,
    pub boot_tree: Option<Vec<TreeEntry>>,
    pub root_tree: Option<Vec<TreeEntry>>,
}

/// Validates the disk image `disk` of `size` bytes: every in-process check, no tools, no
/// root. `board` adds the board's kernels and device trees to the checks; without it at
/// least one `kernel*.img` and one `*.dtb` must be present. Reads every byte of every
/// file once. `Err` only when the image cannot be read at all; a damaged image gives a
/// report with failures ([`Report::into_result`]).
pub fn validate_disk<R: Read + Seek>(
    disk: &mut R,
    size: u64,
    board: Option<&BoardCheck>,
) -> Result<Report, ValidateError> {
    Ok(inspect_disk(disk, size, board, false)?.report)
}

/// [`validate_disk`] without reading file contents: the partition table, both
/// filesystems' metadata (superblocks, every directory and inode), and the files the rules
/// read (`cmdline.txt`, `config.txt`, `/etc/fstab`). For disks this process has just
/// written from verified trees, where reading 2 GB of file data back would check the
/// store again, not the image; `w4b validate` on a finished image reads everything.
pub fn validate_disk_structure<R: Read + Seek>(
    disk: &mut R,
    size: u64,
    board: Option<&BoardCheck>,
) -> Result<Report, ValidateError> {
    Ok(inspect(disk, size, board, false, false, None)?.report)
}

/// A cache of what reading one filesystem's structure found, for
/// [`validate_disk_structure_cached`]: a build validates a new disk whose unchanged
/// partition it has read before, and the caller can name a partition's bytes without
/// reading them (a chunked disk's chunk digests).
pub trait FsSummaries {
    /// A name for the disk's bytes `[offset, offset + len)` read as a `kind` filesystem
    /// (`fat`, `ext4`), or `None` when the caller cannot name them cheaply. It must change
    /// whenever those bytes do, and name this module's reading (see [`FS_SUMMARY_VERSION`]).
    fn key(&self, kind: &str, offset: u64, len: u64) -> Option<[u8; 32]>;
    /// The summary stored under `key`, if any.
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>>;
    /// Stores a summary (best effort).
    fn put(&self, key: &[u8; 32], summary: &[u8]);
}

/// Changes whenever what a filesystem summary holds, or how it is read, changes: callers
/// put it in their [`FsSummaries::key`].
pub const FS_SUMMARY_VERSION: u32 = 2;

/// [`validate_disk_structure`], taking each filesystem's summary from `cache` when it has
/// one for the partition's bytes, and storing the summaries of filesystems it read
/// without error. The report is the same as without the cache.
pub fn validate_disk_structure_cached<R: Read + Seek>(
    disk: &mut R,
    size: u64,
    board: Option<&BoardCheck>,
    cache: &dyn FsSummaries,
) -> Result<Report, ValidateError> {
    Ok(inspect(disk, size, board, false, false, Some(cache))?.report)
}

/// Reads one filesystem's summary through `cache` (a structure-only walk: no trees, no
/// contents): a hit is decoded, a miss is read by `read` and, when it succeeded, stored.
fn cached_summary<T: Serialize + serde::de::DeserializeOwned + Default>(
    cache: Option<&dyn FsSummaries>,
    kind: &str,
    p: &PartView,
    read: impl FnOnce(&mut T) -> Result<Option<Vec<TreeEntry>>, String>,
    out: &mut T,
) -> Result<Option<Vec<TreeEntry>>, String> {
    let key = cache.and_then(|c| c.key(kind, p.offset, p.len));
    if let (Some(c), Some(k)) = (cache, &key) {
        if let Some(hit) = c.get(k).and_then(|b| serde_json::from_slice::<T>(&b).ok()) {
            *out = hit;
            return Ok(None);
        }
    }
    let tree = read(out)?;
    if let (Some(c), Some(k)) = (cache, &key) {
        if let Ok(bytes) = serde_json::to_vec(&*out) {
            c.put(k, &bytes);
        }
    }
    Ok(tree)
}

/// [`validate_disk`] on the image file at `path`, decompressed first when it is `.xz`,
/// `.zst` or `.gz` ([`crate::image::open_image`], to at most
/// [`crate::image::DEFAULT_MAX_IMAGE_SIZE`]).
pub fn validate_image(path: &Path, board: Option<&BoardCheck>) -> Result<Report, ValidateError> {
    let mut opened = open_image(path, crate::image::DEFAULT_MAX_IMAGE_SIZE)?;
    let size = opened.size;
    validate_disk(&mut opened.file, size, board)
}

/// [`validate_disk`], also returning the partitions and, with `trees`, both filesystems'
/// entries with BLAKE3 content digests (for `--mount`).
pub fn inspect_disk<R: Read + Seek>(
    disk: &mut R,
    size: u64,
    board: Option<&BoardCheck>,
    trees: bool,
) -> Result<Validation, ValidateError> {
    inspect(disk, size, board, trees, true, None)
}

fn inspect<R: Read + Seek>(
    disk: &mut R,
    size: u64,
    board: Option<&BoardCheck>,
    trees: bool,
    contents: bool,
    cache: Option<&dyn FsSummaries>,
) -> Result<Validation, ValidateError> {
    // Summaries hold no trees and no contents: only a structure-only walk uses them.
    let cache = cache.filter(|_| !trees && !contents);
    let mut v = Validation::default();
    let Some(table) = check_table(disk, size, &mut v.report) else {
        for rule in [
            "filesystems",
            "boot_fs",
            "root_fs",
            "cmdline",
            "fstab",
            "config_txt",
            "kernel",
            "device_tree",
        ] {
            v.report.skip(rule, None, "no readable partition table");
        }
        return Ok(v);
    };
    v.layout.parts = partitions(disk, &table, size)?;
    check_filesystems(&mut v);

    // The boot partition: walk, read every file, keep the few files the rules read.
    let mut boot = BootFiles::default();
    match v.layout.boot.and_then(|i| v.layout.part(i)).cloned() {
        Some(p) => match cached_summary(
            cache,
            "fat",
            &p,
            |out| read_boot(disk, &p, trees, contents, out),
            &mut boot,
        ) {
            Ok(tree) => {
                v.report.pass(
                    "boot_fs",
                    Some(format!("partition {}", p.info.index)),
                    if contents {
                        format!("FAT read completely: {} entries, {} bytes of file data", boot.entries, boot.bytes)
                    } else {
                        format!("FAT structure read: {} entries, {} bytes of file data (contents not read)", boot.entries, boot.bytes)
                    },
                );
                v.boot_tree = tree;
                set_fs_ids(&mut v.layout, p.info.index, boot.label.clone(), boot.uuid.clone());
            }
            Err(e) => v.report.fail(
                "boot_fs",
                Some(format!("partition {}", p.info.index)),
                format!("the FAT filesystem cannot be read: {e}"),
                "the boot partition is damaged; check it with `fsck.fat -n` (or `w4b validate --oracles`) and rebuild the image",
            ),
        },
        None => v.report.skip("boot_fs", None, "no FAT partition"),
    }

    let mut root = RootFiles::default();
    match v.layout.root.and_then(|i| v.layout.part(i)).cloned() {
        Some(p) => match cached_summary(
            cache,
            "ext4",
            &p,
            |out| read_root(disk, &p, trees, contents, out),
            &mut root,
        ) {
            Ok(tree) => {
                v.report.pass(
                    "root_fs",
                    Some(format!("partition {}", p.info.index)),
                    if contents {
                        format!("ext4 read completely: {} entries, {} bytes of file data", root.entries, root.bytes)
                    } else {
                        format!("ext4 structure read: {} entries, {} bytes of file data (contents not read)", root.entries, root.bytes)
                    },
                );
                v.root_tree = tree;
                set_fs_ids(&mut v.layout, p.info.index, root.label.clone(), root.uuid.clone());
            }
            Err(e) => v.report.fail(
                "root_fs",
                Some(format!("partition {}", p.info.index)),
                format!("the ext4 filesystem cannot be read: {e}"),
                "the root partition is damaged; check it with `e2fsck -fn` (or `w4b validate --oracles`) and rebuild the image",
            ),
        },
        None => v.report.skip("root_fs", None, "no ext4 partition"),
    }

    let infos: Vec<PartInfo> = v.layout.parts.iter().map(|p| p.info.clone()).collect();
    check_cmdline(&mut v.report, &boot, &infos, v.layout.root);
    check_fstab(&mut v.report, &root, &infos, &v.layout);
    check_boot_files(&mut v.report, &boot, board);
    Ok(v)
}

/// The whole `Error` chain of `e`, joined with `: `.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// Reads the partition table and checks bounds, overlaps and alignment. `None` when
/// there is no usable table.
fn check_table<R: Read + Seek>(disk: &mut R, size: u64, report: &mut Report) -> Option<PartitionTable> {
    let read = match PartitionTable::read(disk, size) {
        Ok(r) => r,
        Err(e) => {
            report.fail(
                "partition_table",
                None,
                format!("the partition table cannot be read: {}", chain(&e)),
                "w4b validate checks whole disk images (MBR or GPT); a truncated image must be fetched or built again",
            );
            return None;
        }
    };
    let table = read.table;
    let mut problems = Vec::new();
    for w in &read.warnings {
        problems.push(chain(w));
    }
    let real: Vec<_> = table.partitions.iter().filter(|p| !p.is_extended()).collect();
    for p in &real {
        let range = p.byte_range();
        if range.end > size {
            problems.push(format!(
                "partition {} ends at byte {}, past the end of the {size}-byte image",
                p.index, range.end
            ));
        }
        for q in &real {
            if q.index > p.index && p.start_lba < q.end_lba() && q.start_lba < p.end_lba() {
                problems.push(format!("partitions {} and {} overlap", p.index, q.index));
            }
        }
    }
    let kind = match &table.kind {
        TableKind::Mbr { disk_signature } => format!("MBR, disk signature {disk_signature:08x}"),
        TableKind::Gpt { disk_guid, .. } => format!("GPT, disk GUID {disk_guid}"),
    };
    if problems.is_empty() {
        report.pass(
            "partition_table",
            None,
            format!("{kind}, {} partition(s)", real.len()),
        );
    } else {
        report.fail(
            "partition_table",
            None,
            format!("{kind}: {}", problems.join("; ")),
            "the image is truncated or its table was edited by hand; fetch or build it again (`sfdisk --verify` shows the table)",
        );
    }
    let misaligned: Vec<String> = real
        .iter()
        .filter(|p| p.start_lba % ALIGNMENT_LBA != 0)
        .map(|p| format!("partition {} starts at sector {}", p.index, p.start_lba))
        .collect();
    if misaligned.is_empty() {
        report.pass(
            "partition_alignment",
            None,
            "every partition starts on a 1 MiB boundary",
        );
    } else {
        report.fail(
            "partition_alignment",
            None,
            format!(
                "{}, not a multiple of {ALIGNMENT_LBA} (1 MiB)",
                misaligned.join(", ")
            ),
            "start partitions on 1 MiB (2048-sector) boundaries; Raspberry Pi OS uses 4 MiB (8192)",
        );
    }
    Some(table)
}

/// Every partition with what its first bytes hold.
fn partitions<R: Read + Seek>(disk: &mut R, table: &PartitionTable, size: u64) -> io::Result<Vec<PartView>> {
    let mut out = Vec::new();
    for p in table.partitions.iter().filter(|p| !p.is_extended()) {
        let range = p.byte_range();
        let len = range.end.saturating_sub(range.start);
        let inside = range.end <= size;
        let fs = if inside {
            detect_fs(&read_head(&mut *disk, range.start, len)?)
        } else {
            FsKind::Unknown
        };
        out.push(PartView {
            info: PartInfo {
                index: p.index,
                partuuid: table.partuuid(p.index),
                name: p.name.clone(),
                fs,
                fs_label: None,
                fs_uuid: None,
            },
            offset: range.start,
            len,
            inside,
        });
    }
    Ok(out)
}

fn set_fs_ids(layout: &mut Layout, index: u32, label: Option<String>, uuid: Option<String>) {
    if let Some(p) = layout.parts.iter_mut().find(|p| p.info.index == index) {
        p.info.fs_label = label;
        p.info.fs_uuid = uuid;
    }
}

fn check_filesystems(v: &mut Validation) {
    let of = |kind: FsKind| -> Vec<u32> {
        v.layout
            .parts
            .iter()
            .filter(|p| p.info.fs == kind)
            .map(|p| p.info.index)
            .collect()
    };
    let (fat, ext4) = (of(FsKind::Fat), of(FsKind::Ext4));
    v.layout.boot = fat.first().copied();
    v.layout.root = ext4.first().copied();
    let list = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|i| format!("partition {i}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if fat.len() == 1 && ext4.len() == 1 {
        v.report.pass(
            "filesystems",
            None,
            format!("FAT boot on {}, ext4 root on {}", list(&fat), list(&ext4)),
        );
    } else {
        let outside: Vec<String> = v
            .layout
            .parts
            .iter()
            .filter(|p| !p.inside)
            .map(|p| format!("partition {} lies past the end of the image", p.info.index))
            .collect();
        let mut detail = format!(
            "expected exactly one FAT and one ext4 filesystem; FAT: {}; ext4: {}",
            list(&fat),
            list(&ext4)
        );
        if !outside.is_empty() {
            detail.push_str(&format!(" ({})", outside.join(", ")));
        }
        v.report.fail(
            "filesystems",
            None,
            detail,
            "a Raspberry Pi image holds a FAT boot partition and an ext4 root partition; a filesystem whose superblock is damaged is not recognised",
        );
    }
}

/// What the boot partition walk kept.
#[derive(Default, serde::Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[derive(Serialize)]
struct BootFiles {
    read: bool,
    entries: usize,
    bytes: u64,
    label: Option<String>,
    uuid: Option<String>,
    /// Regular files at the top of the partition, by lowercased name → name as stored.
    top: BTreeMap<String, String>,
    cmdline: Option<Result<String, String>>,
    /// `config.txt`'s text, when the partition has one.
    #[serde(default)]
    config: Option<Result<String, String>>,
}

impl BootFiles {
    /// The name as stored of the top-level file `name` (compared case-insensitively).
    fn find(&self, name: &str) -> Option<&str> {
        self.top.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default, Serialize, serde::Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct RootFiles {
    read: bool,
    entries: usize,
    bytes: u64,
    label: Option<String>,
    uuid: Option<String>,
    fstab: Option<Result<String, String>>,
}

/// Reads `contents` of every file in `nodes`, checking sizes; returns the tree with
/// digests when `keep`. Hard links take their target's content.
fn read_all(
    nodes: &[Node],
    contents: &dyn Contents,
    keep: bool,
    read_contents: bool,
    bytes: &mut u64,
) -> Result<Option<Vec<TreeEntry>>, String> {
    let mut buf = vec![0u8; 1 << 20];
    let mut files: BTreeMap<&str, EntryKind> = BTreeMap::new();
    let mut tree = Vec::new();
    for n in nodes {
        let kind = match &n.kind {
            NodeKind::File { size, .. } if !read_contents && !keep => {
                *bytes = bytes.saturating_add(*size);
                let kind = EntryKind::File {
                    size: *size,
                    blake3: [0; 32],
                };
                files.insert(n.path.as_str(), kind.clone());
                kind
            }
            NodeKind::File { size, content } => {
                let mut r = contents
                    .open(content)
                    .map_err(|e| format!("cannot open `{}`: {e}", n.path))?;
                let mut hasher = keep.then(blake3::Hasher::new);
                let mut read: u64 = 0;
                loop {
                    let got = match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("cannot read `{}` after {read} bytes: {e}", n.path)),
                    };
                    if let (Some(h), Some(chunk)) = (hasher.as_mut(), buf.get(..got)) {
                        h.update(chunk);
                    }
                    read = read.saturating_add(got as u64);
                    if read > *size {
                        break;
                    }
                }
                if read != *size {
                    return Err(format!("`{}` holds {read} bytes but its size is {size}", n.path));
                }
                *bytes = bytes.saturating_add(read);
                let kind = EntryKind::File {
                    size: *size,
                    blake3: hasher.map(|h| *h.finalize().as_bytes()).unwrap_or([0; 32]),
                };
                files.insert(n.path.as_str(), kind.clone());
                kind
            }
            NodeKind::HardLink { target } => files.get(target.as_str()).cloned().ok_or_else(|| {
                format!(
                    "`{}` is a hard link to `{target}`, which is not an earlier regular file",
                    n.path
                )
            })?,
            NodeKind::Dir => EntryKind::Dir,
            NodeKind::Symlink { target } => EntryKind::Symlink {
                target: target.clone(),
            },
            NodeKind::CharDev { major, minor } => EntryKind::CharDev {
                major: *major,
                minor: *minor,
            },
            NodeKind::BlockDev { major, minor } => EntryKind::BlockDev {
                major: *major,
                minor: *minor,
            },
            NodeKind::Fifo => EntryKind::Fifo,
            NodeKind::Socket => EntryKind::Socket,
        };
        if keep {
            tree.push(TreeEntry {
                path: n.path.clone(),
                kind,
                mode: n.mode & 0o7777,
                uid: n.uid,
                gid: n.gid,
            });
        }
    }
    Ok(keep.then_some(tree))
}

/// Reads a small text file through `open`, bounded by [`MAX_TEXT`].
fn read_text(r: impl Read, size: u64) -> Result<String, String> {
    if size > MAX_TEXT {
        return Err(format!("it is {size} bytes, too large for a text file"));
    }
    let mut bytes = Vec::new();
    r.take(MAX_TEXT)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
}

fn read_boot<R: Read + Seek>(
    disk: &mut R,
    p: &PartView,
    keep: bool,
    read_contents: bool,
    out: &mut BootFiles,
) -> Result<Option<Vec<TreeEntry>>, String> {
    let fat = read_fat(disk, p.offset, p.len).map_err(|e| chain(&e))?;
    let info = fat.info();
    out.label = info.label.clone();
    out.uuid = info.volume_id.map(volume_id_text);
    let nodes = fat.nodes();
    out.entries = nodes.len();
    let tree = read_all(nodes, &fat, keep, read_contents, &mut out.bytes)?;
    for n in nodes {
        let Some(name) = n.path.strip_prefix('/') else {
            continue;
        };
        if matches!(n.kind, NodeKind::File { .. }) && !name.is_empty() && !name.contains('/') {
            out.top.insert(name.to_ascii_lowercase(), name.to_string());
        }
    }
    let text_of = |name: &str| {
        let path = format!("/{name}");
        let size = nodes
            .iter()
            .find(|n| n.path == path)
            .and_then(|n| match n.kind {
                NodeKind::File { size, .. } => Some(size),
                _ => None,
            })
            .unwrap_or(0);
        match fat.open(&path) {
            Ok(r) => read_text(r, size),
            Err(e) => Err(chain(&e)),
        }
    };
    if let Some(name) = out.find("cmdline.txt").map(str::to_string) {
        out.cmdline = Some(text_of(&name));
    }
    if let Some(name) = out.find("config.txt").map(str::to_string) {
        out.config = Some(text_of(&name));
    }
    out.read = true;
    Ok(tree)
}

fn read_root<R: Read + Seek>(
    disk: &mut R,
    p: &PartView,
    keep: bool,
    read_contents: bool,
    out: &mut RootFiles,
) -> Result<Option<Vec<TreeEntry>>, String> {
    let fs = Ext4::open(&mut *disk, p.offset, p.len).map_err(|e| chain(&e))?;
    let sb = fs.superblock();
    // s_state bit 2 (EXT2_ERROR_FS): the kernel found an error and fsck has not run.
    if sb.s_state & 0x2 != 0 {
        return Err("the superblock records errors (s_state has EXT2_ERROR_FS); run `e2fsck -f`".into());
    }
    if sb.has_incompat(incompat::RECOVER) {
        return Err("the journal needs recovery (incompat `needs_recovery`): the filesystem was not unmounted cleanly".into());
    }
    let label = sb.label();
    out.label = (!label.is_empty()).then_some(label);
    let u = sb.s_uuid;
    out.uuid = Some(format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&u[..4]),
        hex::encode(&u[4..6]),
        hex::encode(&u[6..8]),
        hex::encode(&u[8..10]),
        hex::encode(&u[10..])
    ));
    let nodes = fs.nodes().map_err(|e| chain(&e))?;
    out.entries = nodes.len();
    let tree = read_all(&nodes, &fs, keep, read_contents, &mut out.bytes)?;
    // /etc/fstab, following one symlink (some images link it elsewhere).
    let mut path = "/etc/fstab".to_string();
    for _ in 0..2 {
        let Some(n) = nodes.iter().find(|n| n.path == path) else {
            break;
        };
        match &n.kind {
            NodeKind::Symlink { target } => {
                path = if target.starts_with('/') {
                    target.clone()
                } else {
                    format!("/etc/{target}")
                };
            }
            NodeKind::File { size, .. } => {
                out.fstab = Some(match fs.open_file(path.as_str()) {
                    Ok(r) => read_text(r, *size),
                    Err(e) => Err(chain(&e)),
                });
                break;
            }
            NodeKind::HardLink { target } => {
                path = target.clone();
            }
            _ => {
                out.fstab = Some(Err(format!("`{path}` is not a regular file")));
                break;
            }
        }
    }
    out.read = true;
    Ok(tree)
}

fn fs_name(kind: FsKind) -> &'static str {
    match kind {
        FsKind::Ext4 => "ext4",
        FsKind::Fat => "FAT",
        FsKind::Unknown => "no recognised filesystem",
    }
}

fn check_cmdline(report: &mut Report, boot: &BootFiles, parts: &[PartInfo], root: Option<u32>) {
    const RULE: &str = "cmdline";
    if !boot.read {
        report.skip(RULE, None, "the boot partition was not read");
        return;
    }
    let name = boot.find("cmdline.txt").unwrap_or("cmdline.txt");
    let file = Some(format!("bootfs:/{name}"));
    let text = match &boot.cmdline {
        None => {
            report.fail(
                RULE,
                file,
                "there is no `cmdline.txt` on the boot partition",
                "the firmware passes `cmdline.txt` to the kernel as its command line; without `root=` the Pi cannot find its root filesystem",
            );
            return;
        }
        Some(Err(e)) => {
            report.fail(
                RULE,
                file,
                format!("cannot read it: {e}"),
                "write `cmdline.txt` as one line of UTF-8 text",
            );
            return;
        }
        Some(Ok(t)) => t,
    };
    let c = cmdline::parse(text);
    if !c.ignored_lines.is_empty() {
        report.fail(
            RULE,
            file.clone(),
            format!(
                "the firmware reads only the first line, but line(s) {:?} hold text too",
                c.ignored_lines
            ),
            "put every kernel parameter on the first line, separated by spaces",
        );
    }
    let Some(spec) = c.get("root") else {
        report.fail(
            RULE,
            file,
            "the first line has no `root=` parameter",
            "add `root=PARTUUID=<disk signature>-02` (the ext4 partition) to the first line",
        );
        return;
    };
    let dev = DeviceRef::parse(spec);
    match device::resolve(&dev, parts) {
        Resolved::Partition(i) if Some(i) == root => {
            report.pass(
                RULE,
                file,
                format!("`root={spec}` is partition {i}, the ext4 root filesystem"),
            );
        }
        Resolved::Partition(i) => {
            let what = parts
                .iter()
                .find(|p| p.index == i)
                .map(|p| fs_name(p.fs))
                .unwrap_or("?");
            report.fail(
                RULE,
                file,
                format!("`root={spec}` is partition {i}, which holds {what}, not the ext4 root filesystem"),
                root_help(parts, root),
            );
        }
        Resolved::Missing | Resolved::NotADevice => report.fail(
            RULE,
            file,
            format!("`root={spec}` names no partition of this disk"),
            root_help(parts, root),
        ),
    }
}

/// `help` naming the right `root=` value.
fn root_help(parts: &[PartInfo], root: Option<u32>) -> String {
    match root
        .and_then(|r| parts.iter().find(|p| p.index == r))
        .and_then(|p| p.partuuid.as_deref())
    {
        Some(u) => format!("the ext4 root partition is `PARTUUID={u}`; use `root=PARTUUID={u}`"),
        None => "point `root=` at the ext4 partition (`PARTUUID=...`)".to_string(),
    }
}

fn check_fstab(report: &mut Report, root: &RootFiles, parts: &[PartInfo], layout: &Layout) {
    const RULE: &str = "fstab";
    if !root.read {
        report.skip(RULE, None, "the root partition was not read");
        return;
    }
    let at = |line: usize| Some(format!("rootfs:/etc/fstab:{line}"));
    let text = match &root.fstab {
        None => {
            report.fail(
                RULE,
                Some("rootfs:/etc/fstab".into()),
                "there is no `/etc/fstab` on the root filesystem",
                "Raspberry Pi OS mounts `/` and `/boot/firmware` from `/etc/fstab`; add entries for both",
            );
            return;
        }
        Some(Err(e)) => {
            report.fail(
                RULE,
                Some("rootfs:/etc/fstab".into()),
                format!("cannot read it: {e}"),
                "write `/etc/fstab` as UTF-8 text",
            );
            return;
        }
        Some(Ok(t)) => t,
    };
    let failed_before = report.failures().count();
    let (entries, problems) = fstab::parse(text);
    for p in problems {
        report.fail(
            RULE,
            at(p.line),
            format!("line {} {}", p.line, p.reason),
            "see fstab(5): `DEVICE MOUNTPOINT TYPE OPTIONS DUMP PASS`",
        );
    }
    let mut saw_root = false;
    let mut saw_boot = false;
    for e in &entries {
        let dev = DeviceRef::parse(&e.device);
        let is_root = e.mount_point == "/";
        let is_boot = BOOT_MOUNT_POINTS.contains(&e.mount_point.as_str());
        saw_root |= is_root;
        saw_boot |= is_boot;
        let target = match device::resolve(&dev, parts) {
            Resolved::NotADevice => {
                if is_root || is_boot {
                    report.fail(
                        RULE,
                        at(e.line),
                        format!(
                            "`{}` is mounted from `{}`, which is not a partition",
                            e.mount_point, e.device
                        ),
                        "mount `/` from the ext4 partition and the boot mount point from the FAT partition",
                    );
                }
                continue;
            }
            Resolved::Missing => {
                if e.optional() && !is_root {
                    continue;
                }
                report.fail(
                    RULE,
                    at(e.line),
                    format!("`{}` (for `{}`) names no partition of this disk", e.device, e.mount_point),
                    "a missing device stops the boot in emergency mode; name an existing partition (`PARTUUID=...`), or add `nofail` if the device is removable",
                );
                continue;
            }
            Resolved::Partition(i) => i,
        };
        let fs = parts
            .iter()
            .find(|p| p.index == target)
            .map(|p| p.fs)
            .unwrap_or(FsKind::Unknown);
        let type_ok = match fs {
            FsKind::Fat => matches!(e.fs_type.as_str(), "vfat" | "msdos" | "fat" | "auto"),
            FsKind::Ext4 => matches!(e.fs_type.as_str(), "ext4" | "auto"),
            FsKind::Unknown => false,
        };
        if !type_ok {
            report.fail(
                RULE,
                at(e.line),
                format!(
                    "`{}` is partition {target}, which holds {}, but the entry says type `{}`",
                    e.device,
                    fs_name(fs),
                    e.fs_type
                ),
                "use type `vfat` for the FAT boot partition and `ext4` for the root partition",
            );
        }
        if is_root && Some(target) != layout.root {
            report.fail(
                RULE,
                at(e.line),
                format!("`/` is mounted from partition {target}, not the ext4 root partition"),
                root_help(parts, layout.root),
            );
        }
        if is_boot && Some(target) != layout.boot {
            report.fail(
                RULE,
                at(e.line),
                format!(
                    "`{}` is mounted from partition {target}, not the FAT boot partition",
                    e.mount_point
                ),
                "mount the FAT boot partition at `/boot/firmware`",
            );
        }
    }
    if !saw_root {
        report.fail(
            RULE,
            Some("rootfs:/etc/fstab".into()),
            "no entry mounts `/`",
            "add an entry for the ext4 root partition: `PARTUUID=<signature>-02 / ext4 defaults,noatime 0 1`",
        );
    }
    if !saw_boot {
        report.fail(
            RULE,
            Some("rootfs:/etc/fstab".into()),
            "no entry mounts the boot partition at `/boot/firmware` (or `/boot`)",
            "kernel and firmware updates write to `/boot/firmware`; add `PARTUUID=<signature>-01 /boot/firmware vfat defaults 0 2`",
        );
    }
    if report.failures().count() == failed_before {
        report.pass(
            RULE,
            Some("rootfs:/etc/fstab".into()),
            format!(
                "{} entries; `/` and the boot mount point name the right partitions",
                entries.len()
            ),
        );
    }
}

fn check_boot_files(report: &mut Report, boot: &BootFiles, board: Option<&BoardCheck>) {
    if !boot.read {
        for rule in ["config_txt", "kernel", "device_tree"] {
            report.skip(rule, None, "the boot partition was not read");
        }
        return;
    }
    match boot.find("config.txt") {
        Some(n) => report.pass("config_txt", Some(format!("bootfs:/{n}")), "present"),
        None => report.fail(
            "config_txt",
            Some("bootfs:/config.txt".into()),
            "there is no `config.txt` on the boot partition",
            "the firmware reads its settings (`arm_64bit`, `dtoverlay=`, ...) from `config.txt`; add one",
        ),
    }
    let top = || boot.top.values();
    let config = match &boot.config {
        Some(Ok(text)) => board::FirmwareConfig::parse(text),
        _ => board::FirmwareConfig::default(),
    };
    // What `config.txt` names itself must be there, whatever the board.
    for (directive, name) in [("kernel=", &config.kernel), ("initramfs", &config.initramfs)] {
        let Some(name) = name else { continue };
        match boot.find(name) {
            Some(n) => report.pass("kernel", Some(format!("bootfs:/{n}")), format!("named by `config.txt` (`{directive}`)")),
            None => report.fail(
                "kernel",
                Some(format!("bootfs:/{name}")),
                format!("`config.txt` names `{name}` (`{directive}`), which is not on the boot partition"),
                "the firmware loads exactly the file `config.txt` names; install the kernel package that provides it, or correct the line",
            ),
        }
    }
    match board {
        Some(b) => {
            // A kernel named by `config.txt` replaces the board's default names; with
            // `upstream_kernel=1` the firmware looks for the mainline names of the trees.
            let kernels = if config.kernel.is_some() {
                Vec::new()
            } else {
                b.kernels.clone()
            };
            let trees: Vec<String> = if config.upstream_kernel {
                b.device_trees
                    .iter()
                    .map(|t| board::upstream_device_tree(t).to_owned())
                    .collect()
            } else {
                b.device_trees.clone()
            };
            for (rule, names, what) in [
                ("kernel", &kernels, "kernel"),
                ("device_tree", &trees, "device tree"),
            ] {
                for name in names {
                    match boot.find(name) {
                        Some(n) => report.pass(rule, Some(format!("bootfs:/{n}")), "present"),
                        None => report.fail(
                            rule,
                            Some(format!("bootfs:/{name}")),
                            format!("the board's {what} `{name}` is missing from the boot partition"),
                            format!("the firmware of this board loads `{name}`; install the Raspberry Pi kernel package for the board (or check `--board`/`--arch`)"),
                        ),
                    }
                }
            }
        }
        None => {
            let kernels: Vec<&String> = top()
                .filter(|n| {
                    let l = n.to_ascii_lowercase();
                    l.starts_with("kernel") && l.ends_with(".img")
                })
                .collect();
            let dtbs: Vec<&String> = top()
                .filter(|n| n.to_ascii_lowercase().ends_with(".dtb"))
                .collect();
            match kernels.as_slice() {
                // Checked above, by the name `config.txt` gives.
                [] if config.kernel.is_some() => {}
                [] => report.fail(
                    "kernel",
                    Some("bootfs:/kernel*.img".into()),
                    "no `kernel*.img` on the boot partition",
                    "the firmware loads the kernel from `kernel8.img` (64-bit) or `kernel7l.img`/`kernel7.img` (32-bit)",
                ),
                k => report.pass(
                    "kernel",
                    Some(format!("bootfs:/{}", k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))),
                    format!("{} kernel image(s); pass `--board` to check the board's", k.len()),
                ),
            }
            match dtbs.as_slice() {
                [] => report.fail(
                    "device_tree",
                    Some("bootfs:/*.dtb".into()),
                    "no `*.dtb` device tree on the boot partition",
                    "the firmware passes the board's device tree (`bcm2711-rpi-4-b.dtb`, ...) to the kernel; install them",
                ),
                d => report.pass(
                    "device_tree",
                    None,
                    format!("{} device tree(s); pass `--board` to check the board's", d.len()),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests;
