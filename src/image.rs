//! Opening disk images the way people have them — `.img`, `.img.xz`, `.img.zst`,
//! `.img.gz` — and reading them into a partition table and filesystems, for `w4b inspect`
//! and `w4b diff`.
//!
//! A compressed image is decompressed once into an anonymous temporary file (it honours
//! `TMPDIR`), streaming, so the image is never held in memory; runs of 64 KiB of zeros
//! become holes by seeking, so the mostly empty 4 GiB image of a fresh build costs only
//! its data on disk. The compression is recognised by its magic bytes; a `.xz`, `.zst` or
//! `.gz` name whose bytes say otherwise is an error, because it usually means a download
//! that went wrong (an HTML error page saved under the image's name).
//!
//! [`read_disk`] then finds the filesystems: a bare ext4 or FAT image (a filesystem at
//! byte 0, recognised by its magic) is one filesystem without a table; anything else must
//! have an MBR or GPT, and each partition is recognised by the magic of what it holds,
//! not by its type byte or GUID (which images often get wrong). [`nodes`] lists every
//! entry of one filesystem and hashes every file with SHA-256 (the digest auditors and
//! `sha256sum` speak) by streaming it through the format's reader.
//!
//! This module reads untrusted bytes only through [`crate::formats`], whose readers
//! return errors on damaged images; here every size is checked before it is used.
//!
//! Every read is bounded by what the image really is. [`open_image`] reads regular files
//! and block devices only (a block device's size is where it ends, found by seeking):
//! a FIFO would block the open until some writer came, and a character device such as
//! `/dev/zero` never ends, so both are refused, before the open when the path says so
//! and again on the open descriptor, which is opened non-blocking so a path swapped for
//! a FIFO in between cannot hang it either. A compressed image decompresses to at most
//! [`DEFAULT_MAX_IMAGE_SIZE`] (or the caller's limit): a few kilobytes of xz can expand
//! to terabytes of zeros, which cost nothing on disk (they become holes) but hours of
//! decompression.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::formats::ext4::spec::{compat, incompat, ro_compat};
use crate::formats::ext4::{Ext4, Ext4Error};
use crate::formats::fat::{read_fat, volume_id_text, FatError, FatType};
use crate::formats::fs::{Contents, Node, NodeKind};
use crate::formats::io::read_full;
use crate::formats::partition::{PartitionError, PartitionTable, ReadWarning};

/// Zero runs this long (and aligned to it) become holes in a decompressed image. 64 KiB
/// matches the granularity filesystems allocate holes at and keeps the check cheap.
pub const SPARSE_CHUNK: usize = 64 * 1024;

/// How much of a filesystem's start [`detect_fs`] needs: the ext4 magic ends at 1082.
pub const DETECT_BYTES: usize = 4096;

/// The most bytes a compressed image may decompress to unless the caller says otherwise
/// (`--max-image-size`, `W4B_MAX_IMAGE_SIZE`): 64 GiB, twice the largest SD card image
/// a Raspberry Pi OS release ships uncompressed today, and a minute or two of
/// decompressing zeros at the speeds xz and zstd reach.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 64 << 30;

/// The compression of an image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The compression a magic number announces (zstd `28 b5 2f fd`, xz `fd 37 7a 58 5a
    /// 00`, gzip `1f 8b`); `None` when the bytes start with none of them.
    pub fn from_magic(head: &[u8]) -> Compression {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }

    /// The compression a file name announces by its extension.
    pub fn from_extension(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()) {
            Some("zst" | "zstd") => Compression::Zstd,
            Some("xz") => Compression::Xz,
            Some("gz") => Compression::Gzip,
            _ => Compression::None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

/// An image ready to read: the file itself when it was not compressed, else the
/// decompressed copy in an anonymous temporary file (deleted when dropped).
#[derive(Debug)]
pub struct OpenedImage {
    pub path: PathBuf,
    pub file: File,
    pub compression: Compression,
    /// Bytes of the file as stored.
    pub stored_size: u64,
    /// Bytes of the (decompressed) image.
    pub size: u64,
}

/// Why an image could not be opened or read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImageError {
    #[error("cannot open `{path}`")]
    #[diagnostic(code(w4b::image::open))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`{path}` is {kind}, not an image file")]
    #[diagnostic(
        code(w4b::image::not_a_file),
        help("give the path of an image file or of a block device such as `/dev/sdb`; to read an image from a pipe, save it to a file first")
    )]
    NotAFile { path: PathBuf, kind: &'static str },

    #[error("`{path}` ({compression}) decompresses to more than {limit} bytes")]
    #[diagnostic(
        code(w4b::image::too_large),
        help("a small compressed file that expands without end is a decompression bomb; if the image is genuine, raise the limit with `--max-image-size` (or `W4B_MAX_IMAGE_SIZE`)")
    )]
    TooLarge {
        path: PathBuf,
        compression: Compression,
        limit: u64,
    },

    #[error(
        "`{path}` is named like a {expected} file, but its first bytes are not {expected}'s magic number"
    )]
    #[diagnostic(
        code(w4b::image::not_compressed),
        help("the download probably failed (an error page saved under the image's name); fetch it again, or rename the file if it really is uncompressed")
    )]
    WrongCompression { path: PathBuf, expected: Compression },

    #[error("decompressing `{path}` ({compression}) failed after {offset} bytes of output")]
    #[diagnostic(
        code(w4b::image::decompress),
        help("the file is truncated or damaged; fetch it again and compare its digest")
    )]
    Decompress {
        path: PathBuf,
        compression: Compression,
        offset: u64,
        #[source]
        source: io::Error,
    },

    #[error("cannot write the decompressed image to a temporary file")]
    #[diagnostic(
        code(w4b::image::temp),
        help("decompressed images go to `TMPDIR` (default `/tmp`); point it at a directory with room for the image")
    )]
    Temp(#[source] io::Error),

    #[error("reading the image failed")]
    #[diagnostic(code(w4b::image::io))]
    Io(#[from] io::Error),

    #[error("no partition table and no filesystem: the image is neither a partitioned disk nor a bare ext4 or FAT filesystem")]
    #[diagnostic(
        code(w4b::image::unrecognised),
        help("`inspect` and `diff` read disk images (MBR or GPT) and bare ext4/FAT images, optionally compressed with xz, zstd or gzip")
    )]
    Unrecognised {
        #[source]
        reason: PartitionError,
    },

    #[error("cannot read the partition table")]
    #[diagnostic(code(w4b::image::table))]
    Table(
        #[source]
        #[diagnostic_source]
        PartitionError,
    ),

    #[error("partition {index} ends at byte {end}, past the end of the {size}-byte image")]
    #[diagnostic(
        code(w4b::image::truncated),
        help("the image is truncated; fetch it again and compare its digest")
    )]
    PartitionPastEnd { index: u32, end: u64, size: u64 },

    #[error("cannot read the ext4 filesystem of {place}")]
    #[diagnostic(code(w4b::image::ext4))]
    Ext4 {
        place: String,
        #[source]
        #[diagnostic_source]
        source: Ext4Error,
    },

    #[error("cannot read the FAT filesystem of {place}")]
    #[diagnostic(code(w4b::image::fat))]
    Fat {
        place: String,
        #[source]
        #[diagnostic_source]
        source: FatError,
    },

    #[error("cannot read `{path}` in {place}")]
    #[diagnostic(
        code(w4b::image::file),
        help("the filesystem is damaged; check it with `e2fsck -fn` or `fsck.fat -n`")
    )]
    File {
        place: String,
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("`{path}` in {place} holds {actual} bytes, but its size is {expected}")]
    #[diagnostic(
        code(w4b::image::file_size),
        help("the filesystem is damaged; check it with `e2fsck -fn` or `fsck.fat -n`")
    )]
    FileSize {
        place: String,
        path: String,
        expected: u64,
        actual: u64,
    },
}

/// What a file type is called in [`ImageError::NotAFile`], or None for the types
/// [`open_image`] reads: regular files and block devices.
fn unreadable_kind(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_file() || t.is_block_device() {
        None
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_dir() {
        Some("a directory")
    } else {
        Some("not a regular file")
    }
}

/// Bytes in `file`: the end of a regular file or of a block device (whose metadata says 0).
pub fn file_len(mut file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let end = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(end)
}

/// Opens `path` for reading if it is a regular file or a block device, without ever
/// blocking: the path's type is checked first, then the descriptor's, which is opened
/// `O_NONBLOCK` (and then made blocking again) in case the path changed in between.
fn open_readable(path: &Path) -> Result<File, ImageError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let open_err = |source| ImageError::Open {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = |kind| ImageError::NotAFile {
        path: path.to_path_buf(),
        kind,
    };
    let meta = std::fs::metadata(path).map_err(open_err)?;
    if let Some(kind) = unreadable_kind(meta.file_type()) {
        return Err(not_a_file(kind));
    }
    let nonblock = rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nonblock.bits() as i32)
        .open(path)
        .map_err(open_err)?;
    if let Some(kind) = unreadable_kind(file.metadata().map_err(open_err)?.file_type()) {
        return Err(not_a_file(kind));
    }
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| open_err(e.into()))?;
    rustix::fs::fcntl_setfl(&file, flags.difference(nonblock)).map_err(|e| open_err(e.into()))?;
    Ok(file)
}

/// Opens the image at `path`, decompressing it if its magic bytes say it is compressed,
/// to at most `max_size` bytes ([`DEFAULT_MAX_IMAGE_SIZE`] unless the user chose).
/// Refuses anything but a regular file or a block device ([`ImageError::NotAFile`]).
pub fn open_image(path: &Path, max_size: u64) -> Result<OpenedImage, ImageError> {
    let open_err = |source| ImageError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_readable(path)?;
    let stored_size = file_len(&file).map_err(open_err)?;
    let mut head = [0u8; 6];
    let n = read_full(&mut file, &mut head).map_err(open_err)?;
    let by_magic = Compression::from_magic(head.get(..n).unwrap_or(&[]));
    let by_name = Compression::from_extension(path);
    if by_name != Compression::None && by_magic != by_name {
        return Err(ImageError::WrongCompression {
            path: path.to_path_buf(),
            expected: by_name,
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(open_err)?;
    if by_magic == Compression::None {
        return Ok(OpenedImage {
            path: path.to_path_buf(),
            file,
            compression: Compression::None,
            stored_size,
            size: stored_size,
        });
    }
    let input = io::BufReader::with_capacity(1 << 20, file);
    let decoder = decoder(input, by_magic).map_err(open_err)?;
    let mut out = tempfile::tempfile().map_err(ImageError::Temp)?;
    // One byte past the limit tells an image of exactly `max_size` bytes from a larger one.
    let size = copy_sparse(decoder.take(max_size.saturating_add(1)), &mut out).map_err(|e| match e {
        SparseError::Read { offset, source } => ImageError::Decompress {
            path: path.to_path_buf(),
            compression: by_magic,
            offset,
            source,
        },
        SparseError::Write(e) => ImageError::Temp(e),
    })?;
    if size > max_size {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            compression: by_magic,
            limit: max_size,
        });
    }
    out.seek(SeekFrom::Start(0)).map_err(ImageError::Temp)?;
    Ok(OpenedImage {
        path: path.to_path_buf(),
        file: out,
        compression: by_magic,
        stored_size,
        size,
    })
}

/// A reader of the decompressed bytes of `input`, compressed with `compression`
/// (`None` passes it through). Shared by [`open_image`] and the `unpack` step, which
/// decompresses straight from a store blob.
pub fn decoder<'a, R: io::BufRead + 'a>(
    input: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        // Multi-member/multi-stream decoders: `cat a.gz b.gz` and `xz` files with several
        // streams are valid and decompress to the concatenation, as the command-line
        // tools do. The zstd decoder reads every frame by default.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Xz => Box::new(crate::formats::xz::buf_decoder(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Compression::None => Box::new(input),
    })
}

/// Which side of [`copy_sparse`] failed.
#[derive(Debug)]
pub enum SparseError {
    /// Reading (decompressing) failed after `offset` bytes of output.
    Read {
        offset: u64,
        source: io::Error,
    },
    Write(io::Error),
}

/// Copies `input` to `out` from its current position, seeking over every all-zero
/// [`SPARSE_CHUNK`] instead of writing it, and returns the bytes copied. `out` must read
/// as zeros where nothing is written (a new file). The last byte is written even when it
/// is zero, so the output has the full length.
pub fn copy_sparse<R: Read, W: Write + Seek>(mut input: R, out: &mut W) -> Result<u64, SparseError> {
    static ZEROS: [u8; SPARSE_CHUNK] = [0; SPARSE_CHUNK];
    let mut buf = vec![0u8; SPARSE_CHUNK];
    let mut copied: u64 = 0;
    let mut trailing_hole = false;
    loop {
        let n = read_full(&mut input, &mut buf).map_err(|source| SparseError::Read {
            offset: copied,
            source,
        })?;
        let Some(chunk) = buf.get(..n) else { break };
        if n == 0 {
            break;
        }
        // A slice comparison is a memcmp, fast even in unoptimised builds.
        if ZEROS.get(..n) == Some(chunk) {
            out.seek(SeekFrom::Current(n as i64))
                .map_err(SparseError::Write)?;
            trailing_hole = true;
        } else {
            out.write_all(chunk).map_err(SparseError::Write)?;
            trailing_hole = false;
        }
        copied = copied.saturating_add(n as u64);
        if n < SPARSE_CHUNK {
            break;
        }
    }
    if trailing_hole {
        out.seek(SeekFrom::Current(-1)).map_err(SparseError::Write)?;
        out.write_all(&[0]).map_err(SparseError::Write)?;
    }
    out.flush().map_err(SparseError::Write)?;
    Ok(copied)
}

/// What a filesystem's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Ext4,
    Fat,
    Unknown,
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            FsKind::Ext4 => "ext4",
            FsKind::Fat => "fat",
            FsKind::Unknown => "unknown",
        })
    }
}

/// Recognises a filesystem by its first bytes (at least [`DETECT_BYTES`] when the
/// filesystem is that long):
/// - ext2/3/4: `s_magic` = 0xEF53 (little-endian) at byte 1024 + 0x38 = 1080;
/// - FAT: a boot sector with `BS_jmpBoot` (0xEB or 0xE9), the signature 0x55AA at byte
///   510 and `BS_FilSysType` `FAT32   ` at byte 82 (FAT32) or `FAT12`/`FAT16`/`FAT  `
///   at byte 54 (FAT12/16). The type string is informational in the spec but every
///   formatter writes it, and it is what tells a FAT boot sector from an MBR.
pub fn detect_fs(head: &[u8]) -> FsKind {
    if head.get(1080..1082) == Some(&[0x53, 0xEF]) {
        return FsKind::Ext4;
    }
    let jump = matches!(head.first(), Some(0xEB | 0xE9));
    let signature = head.get(510..512) == Some(&[0x55, 0xAA]);
    let fat32 = head.get(82..90) == Some(b"FAT32   ");
    let fat16 = matches!(head.get(54..59), Some(b"FAT12" | b"FAT16" | b"FAT  "));
    if jump && signature && (fat32 || fat16) {
        FsKind::Fat
    } else {
        FsKind::Unknown
    }
}

/// What a filesystem's superblock or boot sector says about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FsSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// ext4 `s_uuid` (`8-4-4-4-12`); FAT `BS_VolID` as `XXXX-XXXX` (what `blkid` calls
    /// the UUID of both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// `FAT12`, `FAT16`, `FAT32`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// ext4 block size, FAT cluster size, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// Bytes the filesystem manages (ext4 blocks; FAT data clusters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_size: Option<u64>,
    /// Free bytes (ext4 including root-reserved blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_inodes: Option<u64>,
    /// ext4 feature names as `mke2fs -O` spells them; unknown bits as `compat_0x...`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// One filesystem of a disk: where it is and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsView {
    /// The partition index, or `None` for a bare filesystem image.
    pub partition: Option<u32>,
    /// Byte offset in the image.
    pub offset: u64,
    /// Bytes of the partition (the whole image for a bare filesystem).
    pub len: u64,
    pub kind: FsKind,
    pub summary: FsSummary,
}

impl FsView {
    /// `partition 2`, or `the image` for a bare filesystem: how errors name it.
    pub fn place(&self) -> String {
        match self.partition {
            Some(i) => format!("partition {i}"),
            None => "the image".to_string(),
        }
    }
}

/// A disk image read: its table (if any) and its filesystems, in partition order.
#[derive(Debug)]
pub struct Disk {
    pub file: File,
    /// Bytes of the image.
    pub size: u64,
    pub table: Option<PartitionTable>,
    pub warnings: Vec<ReadWarning>,
    pub filesystems: Vec<FsView>,
}

/// One entry of a filesystem, with the SHA-256 (lowercase hex) of its content for
/// regular files and hard links (a hard link has its target's digest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    pub sha256: Option<String>,
}

impl Entry {
    /// Bytes of content: the file's size (a hard link's target's), a symlink's target
    /// length (as `ls -l` shows), else 0.
    pub fn size(&self, sizes: &BTreeMap<String, u64>) -> u64 {
        match &self.node.kind {
            NodeKind::File { size, .. } => *size,
            NodeKind::HardLink { target } => sizes.get(target).copied().unwrap_or(0),
            NodeKind::Symlink { target } => target.len() as u64,
            _ => 0,
        }
    }
}

/// Reads the partition table and recognises every filesystem of the image in `file`.
pub fn read_disk(file: File) -> Result<Disk, ImageError> {
    let size = file_len(&file)?;
    let head = read_head(&file, 0, size)?;
    let bare = detect_fs(&head);
    if bare != FsKind::Unknown {
        let fs = view(&file, None, 0, size, bare)?;
        return Ok(Disk {
            file,
            size,
            table: None,
            warnings: Vec::new(),
            filesystems: vec![fs],
        });
    }
    let read = {
        let mut r = &file;
        PartitionTable::read(&mut r, size)
    };
    let read = match read {
        Ok(read) => read,
        Err(reason @ (PartitionError::MbrNoSignature { .. } | PartitionError::DiskTooSmall { .. })) => {
            return Err(ImageError::Unrecognised { reason })
        }
        Err(e) => return Err(ImageError::Table(e)),
    };
    let mut filesystems = Vec::new();
    for p in &read.table.partitions {
        if p.is_extended() {
            continue;
        }
        let range = p.byte_range();
        if range.end > size {
            return Err(ImageError::PartitionPastEnd {
                index: p.index,
                end: range.end,
                size,
            });
        }
        let len = range.end.saturating_sub(range.start);
        let head = read_head(&file, range.start, len)?;
        filesystems.push(view(&file, Some(p.index), range.start, len, detect_fs(&head))?);
    }
    Ok(Disk {
        file,
        size,
        table: Some(read.table),
        warnings: read.warnings,
        filesystems,
    })
}

/// The first [`DETECT_BYTES`] (or fewer, if the range of `len` bytes is shorter, or the
/// image ends sooner) at `offset`: what [`detect_fs`] looks at.
pub fn read_head<R: Read + Seek>(mut r: R, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let n = usize::try_from(len.min(DETECT_BYTES as u64)).unwrap_or(DETECT_BYTES);
    let mut buf = vec![0u8; n];
    r.seek(SeekFrom::Start(offset))?;
    let got = read_full(&mut r, &mut buf)?;
    buf.truncate(got);
    Ok(buf)
}

/// Opens the filesystem just far enough to summarise it.
fn view(
    file: &File,
    partition: Option<u32>,
    offset: u64,
    len: u64,
    kind: FsKind,
) -> Result<FsView, ImageError> {
    let mut fs = FsView {
        partition,
        offset,
        len,
        kind,
        summary: FsSummary::default(),
    };
    fs.summary = match kind {
        FsKind::Ext4 => {
            let ext4 = Ext4::open(file, offset, len).map_err(|source| ImageError::Ext4 {
                place: fs.place(),
                source,
            })?;
            ext4_summary(&ext4)
        }
        FsKind::Fat => {
            let mut r = file;
            let fat = read_fat(&mut r, offset, len).map_err(|source| ImageError::Fat {
                place: fs.place(),
                source,
            })?;
            let info = fat.info();
            let cluster =
                u64::from(info.bytes_per_sector).saturating_mul(u64::from(info.sectors_per_cluster));
            FsSummary {
                label: info.label.clone(),
                uuid: info.volume_id.map(volume_id_text),
                variant: Some(
                    match info.fat_type {
                        FatType::Fat12 => "FAT12",
                        FatType::Fat16 => "FAT16",
                        FatType::Fat32 => "FAT32",
                    }
                    .to_string(),
                ),
                block_size: Some(cluster),
                fs_size: Some(cluster.saturating_mul(u64::from(info.total_clusters))),
                free: Some(cluster.saturating_mul(u64::from(info.free_clusters))),
                ..FsSummary::default()
            }
        }
        FsKind::Unknown => FsSummary::default(),
    };
    Ok(fs)
}

fn ext4_summary<R: Read + Seek>(fs: &Ext4<R>) -> FsSummary {
    let sb = fs.superblock();
    let bs = sb.block_size();
    let label = sb.label();
    let u = sb.s_uuid;
    FsSummary {
        label: (!label.is_empty()).then_some(label),
        uuid: Some(format!(
            "{}-{}-{}-{}-{}",
            hex::encode(&u[..4]),
            hex::encode(&u[4..6]),
            hex::encode(&u[6..8]),
            hex::encode(&u[8..10]),
            hex::encode(&u[10..])
        )),
        variant: None,
        block_size: Some(bs),
        fs_size: Some(sb.blocks_count().saturating_mul(bs)),
        free: Some(sb.free_blocks_count().saturating_mul(bs)),
        inodes: Some(u64::from(sb.s_inodes_count)),
        free_inodes: Some(u64::from(sb.s_free_inodes_count)),
        features: ext4_features(sb.s_feature_compat, sb.s_feature_incompat, sb.s_feature_ro_compat),
    }
}

/// Feature names as e2fsprogs spells them (`mke2fs -O`, `dumpe2fs`), compat, then
/// incompat, then ro_compat, each in bit order.
pub fn ext4_features(compat_bits: u32, incompat_bits: u32, ro_compat_bits: u32) -> Vec<String> {
    const COMPAT: &[(u32, &str)] = &[
        (compat::DIR_PREALLOC, "dir_prealloc"),
        (compat::IMAGIC_INODES, "imagic_inodes"),
        (compat::HAS_JOURNAL, "has_journal"),
        (compat::EXT_ATTR, "ext_attr"),
        (compat::RESIZE_INODE, "resize_inode"),
        (compat::DIR_INDEX, "dir_index"),
        (compat::LAZY_BG, "lazy_bg"),
        (compat::EXCLUDE_BITMAP, "snapshot_bitmap"),
        (compat::SPARSE_SUPER2, "sparse_super2"),
        (compat::FAST_COMMIT, "fast_commit"),
        (compat::STABLE_INODES, "stable_inodes"),
        (compat::ORPHAN_FILE, "orphan_file"),
    ];
    const INCOMPAT: &[(u32, &str)] = &[
        (incompat::COMPRESSION, "compression"),
        (incompat::FILETYPE, "filetype"),
        (incompat::RECOVER, "needs_recovery"),
        (incompat::JOURNAL_DEV, "journal_dev"),
        (incompat::META_BG, "meta_bg"),
        (incompat::EXTENTS, "extent"),
        (incompat::BIT64, "64bit"),
        (incompat::MMP, "mmp"),
        (incompat::FLEX_BG, "flex_bg"),
        (incompat::EA_INODE, "ea_inode"),
        (incompat::DIRDATA, "dirdata"),
        (incompat::CSUM_SEED, "metadata_csum_seed"),
        (incompat::LARGEDIR, "large_dir"),
        (incompat::INLINE_DATA, "inline_data"),
        (incompat::ENCRYPT, "encrypt"),
        (incompat::CASEFOLD, "casefold"),
    ];
    const RO_COMPAT: &[(u32, &str)] = &[
        (ro_compat::SPARSE_SUPER, "sparse_super"),
        (ro_compat::LARGE_FILE, "large_file"),
        (ro_compat::BTREE_DIR, "btree_dir"),
        (ro_compat::HUGE_FILE, "huge_file"),
        (ro_compat::GDT_CSUM, "uninit_bg"),
        (ro_compat::DIR_NLINK, "dir_nlink"),
        (ro_compat::EXTRA_ISIZE, "extra_isize"),
        (ro_compat::HAS_SNAPSHOT, "snapshot"),
        (ro_compat::QUOTA, "quota"),
        (ro_compat::BIGALLOC, "bigalloc"),
        (ro_compat::METADATA_CSUM, "metadata_csum"),
        (ro_compat::REPLICA, "replica"),
        (ro_compat::READONLY, "read-only"),
        (ro_compat::PROJECT, "project"),
        (ro_compat::SHARED_BLOCKS, "shared_blocks"),
        (ro_compat::VERITY, "verity"),
        (ro_compat::ORPHAN_PRESENT, "orphan_present"),
    ];
    let mut out = Vec::new();
    for (set, bits, table) in [
        ("compat", compat_bits, COMPAT),
        ("incompat", incompat_bits, INCOMPAT),
        ("ro_compat", ro_compat_bits, RO_COMPAT),
    ] {
        for bit in (0..32).map(|i| 1u32 << i).filter(|b| bits & b != 0) {
            match table.iter().find(|(b, _)| *b == bit) {
                Some((_, name)) => out.push((*name).to_string()),
                None => out.push(format!("{set}_{bit:#x}")),
            }
        }
    }
    out
}

/// Every entry of `fs` in walk order (`/` first), each regular file hashed with SHA-256
/// by streaming it through the filesystem's reader. An [`FsKind::Unknown`] filesystem
/// has no entries.
pub fn nodes(disk: &Disk, fs: &FsView) -> Result<Vec<Entry>, ImageError> {
    let place = fs.place();
    match fs.kind {
        FsKind::Ext4 => {
            let ext4 = Ext4::open(&disk.file, fs.offset, fs.len).map_err(|source| ImageError::Ext4 {
                place: place.clone(),
                source,
            })?;
            let list = ext4.nodes().map_err(|source| ImageError::Ext4 {
                place: place.clone(),
                source,
            })?;
            hash_entries(list, &ext4, &place)
        }
        FsKind::Fat => {
            let mut r = &disk.file;
            let fat = read_fat(&mut r, fs.offset, fs.len).map_err(|source| ImageError::Fat {
                place: place.clone(),
                source,
            })?;
            let list = fat.nodes().to_vec();
            hash_entries(list, &fat, &place)
        }
        FsKind::Unknown => Ok(Vec::new()),
    }
}

/// Hashes every file of `list` through `contents`, checking it yields exactly its size.
fn hash_entries(list: Vec<Node>, contents: &dyn Contents, place: &str) -> Result<Vec<Entry>, ImageError> {
    let mut by_path: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(list.len());
    let mut buf = vec![0u8; 256 * 1024];
    for node in list {
        let sha256 = match &node.kind {
            NodeKind::File { size, content } => {
                let file_err = |source| ImageError::File {
                    place: place.to_string(),
                    path: node.path.clone(),
                    source,
                };
                let mut reader = contents.open(content).map_err(file_err)?;
                let mut hasher = Sha256::new();
                let mut read: u64 = 0;
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(file_err(e)),
                    };
                    let Some(chunk) = buf.get(..n) else { break };
                    if n == 0 {
                        break;
                    }
                    hasher.update(chunk);
                    read = read.saturating_add(n as u64);
                    // Bounded by the declared size: a reader that runs on is a damaged image.
                    if read > *size {
                        break;
                    }
                }
                if read != *size {
                    return Err(ImageError::FileSize {
                        place: place.to_string(),
                        path: node.path.clone(),
                        expected: *size,
                        actual: read,
                    });
                }
                let hex = hex::encode(hasher.finalize());
                by_path.insert(node.path.clone(), hex.clone());
                Some(hex)
            }
            NodeKind::HardLink { target } => by_path.get(target).cloned(),
            _ => None,
        };
        out.push(Entry { node, sha256 });
    }
    Ok(out)
}

/// Sizes of the regular files of `entries` by path, for [`Entry::size`] of hard links.
pub fn file_sizes(entries: &[Entry]) -> BTreeMap<String, u64> {
    entries
        .iter()
        .filter_map(|e| match e.node.kind {
            NodeKind::File { size, .. } => Some((e.node.path.clone(), size)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::formats::ext4::write::{write_ext4, Ext4Options, Size};
    use crate::formats::fat::{write_fat32, FatOptions};
    use crate::formats::fs::MemContents;
    use crate::formats::partition::PartitionTable;

    fn node(path: &str, kind: NodeKind, mode: u32) -> Node {
        Node {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: BTreeMap::new(),
        }
    }

    #[test]
    fn magic_numbers_name_the_compression() {
        assert_eq!(
            Compression::from_magic(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_magic(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
            Compression::Xz
        );
        assert_eq!(Compression::from_magic(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::from_magic(&[0xfd, 0x37, 0x7a]), Compression::None);
        assert_eq!(Compression::from_magic(&[]), Compression::None);
        assert_eq!(
            Compression::from_extension(Path::new("a.img.xz")),
            Compression::Xz
        );
        assert_eq!(Compression::from_extension(Path::new("a.img")), Compression::None);
    }

    #[test]
    fn copy_sparse_keeps_bytes_and_length() {
        let mut data = vec![0u8; SPARSE_CHUNK * 3 + 100];
        data[SPARSE_CHUNK + 7] = 1;
        for tail_zero in [true, false] {
            let mut data = data.clone();
            if !tail_zero {
                *data.last_mut().unwrap() = 9;
            }
            let mut out = Cursor::new(Vec::new());
            let n = copy_sparse(&data[..], &mut out).unwrap();
            assert_eq!(n, data.len() as u64);
            assert_eq!(out.into_inner(), data);
        }
        let mut out = Cursor::new(Vec::new());
        assert_eq!(copy_sparse(&[][..], &mut out).unwrap(), 0);
        assert!(out.into_inner().is_empty());
    }

    #[test]
    fn copy_sparse_makes_holes_in_files() {
        use std::os::unix::fs::MetadataExt;
        let mut data = vec![0u8; 64 << 20];
        data[5] = 1;
        let mut f = tempfile::tempfile().unwrap();
        copy_sparse(&data[..], &mut f).unwrap();
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), 64 << 20);
        // 512-byte blocks allocated: the one data chunk and the last byte, not 64 MiB.
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    }

    #[test]
    fn detect_fs_reads_magic_numbers() {
        let mut ext4 = vec![0u8; 2048];
        ext4[1080] = 0x53;
        ext4[1081] = 0xEF;
        assert_eq!(detect_fs(&ext4), FsKind::Ext4);
        let mut fat = vec![0u8; 512];
        fat[0] = 0xEB;
        fat[82..90].copy_from_slice(b"FAT32   ");
        fat[510] = 0x55;
        fat[511] = 0xAA;
        assert_eq!(detect_fs(&fat), FsKind::Fat);
        let mut mbr = fat.clone();
        mbr[82..90].copy_from_slice(&[0; 8]);
        assert_eq!(detect_fs(&mbr), FsKind::Unknown);
        assert_eq!(detect_fs(&fat[..300]), FsKind::Unknown);
        assert_eq!(detect_fs(&[]), FsKind::Unknown);
    }

    #[test]
    fn feature_names_follow_e2fsprogs() {
        let f = ext4_features(
            compat::HAS_JOURNAL | 0x8000_0000,
            incompat::EXTENTS | incompat::BIT64,
            ro_compat::METADATA_CSUM,
        );
        assert_eq!(
            f,
            [
                "has_journal",
                "compat_0x80000000",
                "extent",
                "64bit",
                "metadata_csum"
            ]
        );
    }

    /// A two-partition disk (FAT32 + ext4) in a temporary file.
    fn pi_disk(hostname: &[u8]) -> File {
        let mut contents = MemContents::default();
        let cfg = contents.add(b"arm_64bit=1\n");
        let host = contents.add(hostname);
        let boot = vec![
            node("/", NodeKind::Dir, 0o755),
            node(
                "/config.txt",
                NodeKind::File {
                    size: 12,
                    content: cfg,
                },
                0o644,
            ),
        ];
        let root = vec![
            node("/", NodeKind::Dir, 0o755),
            node("/etc", NodeKind::Dir, 0o755),
            node(
                "/etc/hostname",
                NodeKind::File {
                    size: hostname.len() as u64,
                    content: host,
                },
                0o644,
            ),
            node(
                "/etc/name",
                NodeKind::HardLink {
                    target: "/etc/hostname".into(),
                },
                0o644,
            ),
        ];
        let size = 80u64 << 20;
        let boot_lba = (34u64 << 20) / 512;
        let table = PartitionTable::raspberry_pi_mbr(0x1a2b3c4d, boot_lba, size).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        table.write(&mut f, size).unwrap();
        let p1 = table.partition(1).unwrap().clone();
        let mut opts = FatOptions::new(p1.size_lba * 512, 0x1234_abcd, "bootfs");
        opts.hidden_sectors = p1.start_lba as u32;
        let mut w = table.open(&mut f, 1).unwrap();
        write_fat32(&mut w, &boot, &contents, &opts).unwrap();
        let p2 = table.partition(2).unwrap().clone();
        let mut w = table.open(&mut f, 2).unwrap();
        let mut o = Ext4Options::new(Size::Fixed(p2.size_lba * 512), [7; 16], [9; 16], 1_700_000_000);
        o.label = "rootfs".into();
        write_ext4(&mut w, &root, &contents, &o).unwrap();
        f
    }

    #[test]
    fn read_disk_finds_both_filesystems_and_hashes_files() {
        let disk = read_disk(pi_disk(b"hive-north\n")).unwrap();
        assert!(disk.table.is_some());
        let kinds: Vec<_> = disk.filesystems.iter().map(|f| (f.partition, f.kind)).collect();
        assert_eq!(kinds, [(Some(1), FsKind::Fat), (Some(2), FsKind::Ext4)]);
        assert_eq!(disk.filesystems[0].summary.label.as_deref(), Some("bootfs"));
        assert_eq!(disk.filesystems[0].summary.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(disk.filesystems[1].summary.label.as_deref(), Some("rootfs"));
        assert_eq!(
            disk.filesystems[1].summary.uuid.as_deref(),
            Some("07070707-0707-0707-0707-070707070707")
        );
        let root = nodes(&disk, &disk.filesystems[1]).unwrap();
        let want = hex::encode(Sha256::digest(b"hive-north\n"));
        let host = root.iter().find(|e| e.node.path == "/etc/hostname").unwrap();
        assert_eq!(host.sha256.as_deref(), Some(want.as_str()));
        let link = root.iter().find(|e| e.node.path == "/etc/name").unwrap();
        assert_eq!(link.sha256.as_deref(), Some(want.as_str()));
        assert_eq!(link.size(&file_sizes(&root)), 11);
        let boot = nodes(&disk, &disk.filesystems[0]).unwrap();
        let cfg = boot.iter().find(|e| e.node.path == "/config.txt").unwrap();
        assert_eq!(
            cfg.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"arm_64bit=1\n")).as_str())
        );
    }

    #[test]
    fn a_bare_filesystem_has_no_table() {
        let mut contents = MemContents::default();
        let id = contents.add(b"x");
        let list = vec![
            node("/", NodeKind::Dir, 0o755),
            node("/x", NodeKind::File { size: 1, content: id }, 0o600),
        ];
        let mut f = tempfile::tempfile().unwrap();
        let o = Ext4Options::new(Size::Fixed(8 << 20), [1; 16], [2; 16], 0);
        write_ext4(&mut f, &list, &contents, &o).unwrap();
        let disk = read_disk(f).unwrap();
        assert!(disk.table.is_none());
        assert_eq!(disk.filesystems.len(), 1);
        assert_eq!(disk.filesystems[0].partition, None);
        let entries = nodes(&disk, &disk.filesystems[0]).unwrap();
        assert!(entries
            .iter()
            .any(|e| e.node.path == "/x" && e.node.mode == 0o600));
    }

    #[test]
    fn a_truncated_disk_is_an_error_naming_the_cause() {
        let f = pi_disk(b"h\n");
        f.set_len(40 << 20).unwrap();
        let err = read_disk(f).unwrap_err();
        assert!(
            matches!(err, ImageError::Table(_) | ImageError::PartitionPastEnd { .. }),
            "{err:?}"
        );
        let mut junk = tempfile::tempfile().unwrap();
        junk.write_all(&[0x42; 4096]).unwrap();
        assert!(matches!(
            read_disk(junk).unwrap_err(),
            ImageError::Unrecognised { .. }
        ));
        let empty = tempfile::tempfile().unwrap();
        assert!(matches!(
            read_disk(empty).unwrap_err(),
            ImageError::Unrecognised { .. }
        ));
    }

    #[test]
    fn compressed_names_must_hold_compressed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("raspios.img.xz");
        std::fs::write(&p, b"<html>404</html>").unwrap();
        let err = open_image(&p, DEFAULT_MAX_IMAGE_SIZE).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::WrongCompression {
                    expected: Compression::Xz,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn fifos_character_devices_and_directories_are_not_images() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.img");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        // Hold the FIFO open for writing, with bytes in it, so that a regression (an
        // open or read that waits for a writer) returns instead of hanging the test.
        let mut writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)
            .unwrap();
        writer.write_all(&[0u8; 4096]).unwrap();
        for (path, kind) in [
            (fifo.as_path(), "a FIFO (named pipe)"),
            (Path::new("/dev/zero"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            match open_image(path, DEFAULT_MAX_IMAGE_SIZE) {
                Err(ImageError::NotAFile { kind: k, .. }) => assert_eq!(k, kind, "{path:?}"),
                other => panic!("{path:?}: {other:?}"),
            }
        }
        let err = open_image(&fifo, DEFAULT_MAX_IMAGE_SIZE).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("`{}` is a FIFO (named pipe), not an image file", fifo.display())
        );
        drop(writer);
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let size = 4u64 << 20;
        let zst = zstd::stream::encode_all(&vec![0u8; size as usize][..], 19).unwrap();
        assert!(zst.len() < 4096, "{} bytes", zst.len());
        let p = dir.path().join("bomb.img.zst");
        std::fs::write(&p, &zst).unwrap();
        match open_image(&p, size - 1) {
            Err(ImageError::TooLarge {
                limit,
                compression: Compression::Zstd,
                ..
            }) => assert_eq!(limit, size - 1),
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is fine.
        assert_eq!(open_image(&p, size).unwrap().size, size);
    }

    #[test]
    fn gzip_xz_and_zstd_decompress_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * SPARSE_CHUNK];
        data.extend((0..100_000u32).map(|i| (i % 251) as u8));
        data.extend(vec![0u8; SPARSE_CHUNK]);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&data[..], 1).unwrap();
        for (name, bytes, kind) in [
            ("a.img.gz", &gz, Compression::Gzip),
            ("a.img.xz", &xz, Compression::Xz),
            ("a.img.zst", &zst, Compression::Zstd),
            // The magic decides, whatever the name.
            ("a.img", &zst, Compression::Zstd),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let mut img = open_image(&p, DEFAULT_MAX_IMAGE_SIZE).unwrap();
            assert_eq!(img.compression, kind, "{name}");
            assert_eq!(img.size, data.len() as u64);
            let mut back = Vec::new();
            img.file.read_to_end(&mut back).unwrap();
            assert!(back == data, "{name}");
            // Truncated: an error, not a short image.
            let p = dir.path().join(format!("cut-{name}"));
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            let err = open_image(&p, DEFAULT_MAX_IMAGE_SIZE).unwrap_err();
            assert!(matches!(err, ImageError::Decompress { .. }), "{name}: {err:?}");
        }
    }

    /// A GPT disk: one ext4 partition at 1 MiB and an empty one.
    fn gpt_disk() -> Vec<u8> {
        use crate::formats::gpt::{Guid, LINUX_FILESYSTEM};
        use crate::formats::partition::Partition;
        let mut contents = MemContents::default();
        let id = contents.add(b"gpt\n");
        let list = vec![
            node("/", NodeKind::Dir, 0o755),
            node("/f", NodeKind::File { size: 4, content: id }, 0o644),
        ];
        let size = 12u64 << 20;
        let mut t = PartitionTable::new_gpt(Guid::from_u128(0xfeed));
        t.partitions.push(Partition::gpt(
            1,
            2048,
            8 << 11,
            LINUX_FILESYSTEM,
            Guid::from_u128(0xbeef),
            "root",
        ));
        t.partitions.push(Partition::gpt(
            2,
            2048 + (8 << 11),
            2048,
            LINUX_FILESYSTEM,
            Guid::from_u128(0xcafe),
            "x",
        ));
        let mut disk = Cursor::new(vec![0u8; size as usize]);
        t.write(&mut disk, size).unwrap();
        let mut w = t.open(&mut disk, 1).unwrap();
        write_ext4(
            &mut w,
            &list,
            &contents,
            &Ext4Options::new(Size::Fixed(8 << 20), [3; 16], [4; 16], 0),
        )
        .unwrap();
        disk.into_inner()
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn gpt_partitions_are_read_by_their_contents() {
        let disk = read_disk(file_of(&gpt_disk())).unwrap();
        let table = disk.table.as_ref().unwrap();
        assert_eq!(
            table.partuuid(1).as_deref(),
            Some("00000000-0000-0000-0000-00000000beef")
        );
        let kinds: Vec<_> = disk.filesystems.iter().map(|f| (f.partition, f.kind)).collect();
        // Same type GUID on both; only the first holds a filesystem.
        assert_eq!(kinds, [(Some(1), FsKind::Ext4), (Some(2), FsKind::Unknown)]);
        assert!(nodes(&disk, &disk.filesystems[1]).unwrap().is_empty());
        let e = nodes(&disk, &disk.filesystems[0]).unwrap();
        assert!(e.iter().any(|e| e.node.path == "/f"));
    }

    mod proptests {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

            /// Damaged disks (bytes changed in the tables, the superblock, the
            /// directories) and cut-off disks give errors or reports, never panics.
            #[test]
            fn damaged_disks_never_panic(
                edits in proptest::collection::vec((0usize..(2 << 20) + 64 * 1024, any::<u8>()), 1..24),
                cut in proptest::option::of(0usize..12 << 20),
            ) {
                let mut bytes = gpt_disk();
                for (at, v) in edits {
                    // The first 2 MiB hold the GPT, then the ext4 superblock and metadata.
                    let at = if at < 64 * 1024 { at } else { at - 64 * 1024 + (1 << 20) };
                    if let Some(b) = bytes.get_mut(at) {
                        *b = v;
                    }
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut);
                }
                if let Ok(disk) = read_disk(file_of(&bytes)) {
                    for fs in &disk.filesystems {
                        let _ = nodes(&disk, fs);
                    }
                }
            }
        }
    }
}
