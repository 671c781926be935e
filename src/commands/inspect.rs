//! `w4b inspect IMAGE`: what is in a disk image — its partition table, each filesystem's
//! summary and, with `--tree` (or always in JSON), every entry with its metadata and the
//! SHA-256 of its content. Text for people, `w4b.inspect/1` JSON for tools and auditors.
//!
//! The image is opened by [`crate::image`] (decompressing `.xz`, `.zst` and `.gz`), so
//! this file only shapes and renders the report. [`load`] is shared with `diff`.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;

use miette::IntoDiagnostic;
use serde::Serialize;

use super::App;
use crate::cli::{InspectArgs, ReportFormat};
use crate::formats::fs::NodeKind;
use crate::formats::gpt;
use crate::formats::partition::{PartitionTable, PartitionType, TableKind};
use crate::image::{self, Compression, Disk, Entry, FsKind, FsSummary, FsView};

/// The JSON schema name and version; bump the version when a field changes meaning.
pub const SCHEMA: &str = "w4b.inspect/1";

/// An image opened and read, with how it was stored.
pub struct Loaded {
    pub image: ImageInfo,
    pub disk: Disk,
}

/// The image file: path as given, compression, stored and decompressed sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    pub path: String,
    pub compression: Compression,
    pub stored_size: u64,
    pub size: u64,
}

/// Opens, decompresses (to at most `max_size` bytes) and reads the image at `path`
/// (relative to the current directory).
pub fn load(app: &App, path: &Path, max_size: u64) -> miette::Result<Loaded> {
    let full = app.cwd.join(path);
    let shown = app.display_path(&full);
    let context = |e: image::ImageError| miette::Report::new(e).wrap_err(format!("cannot read `{shown}`"));
    let opened = image::open_image(&full, max_size).map_err(context)?;
    let info = ImageInfo {
        path: shown.clone(),
        compression: opened.compression,
        stored_size: opened.stored_size,
        size: opened.size,
    };
    let disk = image::read_disk(opened.file).map_err(context)?;
    Ok(Loaded { image: info, disk })
}

/// The whole report, as printed in JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub image: ImageInfo,
    /// `null` for a bare filesystem image.
    pub table: Option<TableInfo>,
    pub partitions: Vec<PartitionInfo>,
    /// What the table reader noticed and worked around.
    pub warnings: Vec<String>,
    pub filesystems: Vec<FsReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    /// `mbr` or `gpt`.
    pub kind: &'static str,
    /// MBR disk signature (8 hex digits) or GPT disk GUID.
    pub disk_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    pub index: u32,
    pub start_lba: u64,
    pub size_lba: u64,
    /// Bytes from the start of the image.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// MBR type byte in hex (`c`, `83`) or GPT type GUID, as `sfdisk --json` spells it.
    #[serde(rename = "type")]
    pub type_id: String,
    /// A name for common types (`W95 FAT32 (LBA)`, `Linux`), else `null`.
    pub type_name: Option<&'static str>,
    pub bootable: bool,
    /// What Linux calls `PARTUUID`.
    pub partuuid: Option<String>,
    /// GPT partition name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct FsReport {
    /// Partition index; `null` for a bare filesystem image.
    pub partition: Option<u32>,
    pub offset: u64,
    /// Bytes of the partition.
    pub size: u64,
    pub kind: FsKind,
    #[serde(flatten)]
    pub summary: FsSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<EntryInfo>>,
}

/// One entry as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryInfo {
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`, `socket`.
    pub kind: &'static str,
    /// Permission bits in octal, 4 digits (`0644`, `4755`).
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Bytes: a file's (a hard link's target's), a symlink target's length, else 0.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// Symlink target, or the path a hard link shares its inode with.
    pub target: Option<String>,
    /// `major:minor` of a device node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Extended attribute names, sorted.
    pub xattrs: Vec<String>,
    /// SHA-256 of the content (files and hard links), lowercase hex.
    pub sha256: Option<String>,
}

pub fn run(app: &App, args: &InspectArgs) -> miette::Result<i32> {
    let loaded = load(app, &args.image, args.max_image_size)?;
    if args.packages {
        let report = packages_report(&loaded)?;
        if args.format == ReportFormat::Json || app.style.json {
            println!("{}", serde_json::to_string_pretty(&report).into_diagnostic()?);
        } else {
            print!("{}", render_packages(&report));
        }
        return Ok(0);
    }
    let with_entries = args.tree || args.format == ReportFormat::Json;
    let report = build_report(&loaded, with_entries)?;
    match args.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report).into_diagnostic()?),
        ReportFormat::Text => print!("{}", render_text(&report)),
    }
    Ok(0)
}

/// The JSON schema of `--packages`.
pub const PACKAGES_SCHEMA: &str = "w4b.inspect.packages/1";

/// Where dpkg keeps its database of packages.
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// A status file larger than this is not one dpkg wrote (Raspberry Pi OS with a desktop
/// has about 3 MB); reading stops there rather than filling memory.
const MAX_STATUS: u64 = 256 << 20;

/// `w4b inspect --packages`: the image's dpkg database.
#[derive(Debug, Serialize)]
pub struct PackagesReport {
    pub schema: &'static str,
    pub image: ImageInfo,
    /// The partition holding the database; `null` for a bare filesystem image.
    pub partition: Option<u32>,
    /// The file read, [`DPKG_STATUS`].
    pub database: &'static str,
    /// Every package dpkg knows, sorted by name and architecture.
    pub packages: Vec<DpkgPackage>,
}

/// One paragraph of dpkg's status file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DpkgPackage {
    pub name: String,
    /// Empty for a package dpkg only remembers (`Architecture` absent).
    pub architecture: String,
    /// Empty for a purged package dpkg still lists (`Version` absent).
    pub version: String,
    /// `Status` as dpkg writes it: want, error flag, state (`install ok installed`).
    pub status: String,
}

impl DpkgPackage {
    /// Whether dpkg considers it installed: its state is `installed`.
    pub fn installed(&self) -> bool {
        self.status.split_whitespace().nth(2) == Some("installed")
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PackagesError {
    #[error("`{image}` has no dpkg database: no filesystem holds `{DPKG_STATUS}`")]
    #[diagnostic(
        code(w4b::inspect::no_dpkg),
        help("`--packages` reads a Debian-based root filesystem (Raspberry Pi OS, Debian, or a w4b image on one); this image's has no package database, or the image has no ext4 root filesystem")
    )]
    NoDatabase { image: String },

    #[error("`{DPKG_STATUS}` in {place} of `{image}` is larger than {MAX_STATUS} bytes")]
    #[diagnostic(
        code(w4b::inspect::dpkg_status_size),
        help("the image is damaged or not what it claims to be")
    )]
    TooLarge { image: String, place: String },

    #[error("`{DPKG_STATUS}` in {place} of `{image}` is corrupt: {message}")]
    #[diagnostic(
        code(w4b::inspect::dpkg_status),
        help("check the image with `dpkg --admindir=… --audit` on a copy of its `/var/lib/dpkg`")
    )]
    Corrupt {
        image: String,
        place: String,
        message: String,
    },
}

/// Finds `/var/lib/dpkg/status` on the image's ext4 filesystems (the first that has one)
/// and lists its packages.
pub fn packages_report(loaded: &Loaded) -> miette::Result<PackagesReport> {
    let shown = &loaded.image.path;
    let context = |e: image::ImageError| miette::Report::new(e).wrap_err(format!("cannot read `{shown}`"));
    for fs in &loaded.disk.filesystems {
        if fs.kind != FsKind::Ext4 {
            continue;
        }
        let ext4_err = |source| image::ImageError::Ext4 {
            place: fs.place(),
            source,
        };
        let ext4 = crate::formats::ext4::Ext4::open(&loaded.disk.file, fs.offset, fs.len)
            .map_err(|e| context(ext4_err(e)))?;
        use crate::formats::ext4::Ext4Error;
        let ino = match ext4.lookup(DPKG_STATUS) {
            Ok(ino) => ino,
            // Absent, or a path component that is not a directory: no database here.
            Err(Ext4Error::NotFound { .. } | Ext4Error::WrongType { .. }) => continue,
            Err(e) => return Err(context(ext4_err(e))),
        };
        let reader = ext4.open_file(ino).map_err(|e| context(ext4_err(e)))?;
        let mut bytes = Vec::new();
        reader
            .take(MAX_STATUS.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| {
                context(image::ImageError::File {
                    place: fs.place(),
                    path: DPKG_STATUS.to_owned(),
                    source: e,
                })
            })?;
        if bytes.len() as u64 > MAX_STATUS {
            return Err(PackagesError::TooLarge {
                image: shown.clone(),
                place: fs.place(),
            }
            .into());
        }
        // Descriptions may hold any bytes; names, versions and states are ASCII.
        let text = String::from_utf8_lossy(&bytes);
        let packages = parse_dpkg_status(&text).map_err(|message| PackagesError::Corrupt {
            image: shown.clone(),
            place: fs.place(),
            message,
        })?;
        return Ok(PackagesReport {
            schema: PACKAGES_SCHEMA,
            image: loaded.image.clone(),
            partition: fs.partition,
            database: DPKG_STATUS,
            packages,
        });
    }
    Err(PackagesError::NoDatabase { image: shown.clone() }.into())
}

/// Every paragraph of a dpkg status file, sorted; an error names the line.
pub fn parse_dpkg_status(text: &str) -> Result<Vec<DpkgPackage>, String> {
    use crate::formats::deb::{Paragraphs, Syntax};
    let mut out = Vec::new();
    for p in Paragraphs::new(text, Syntax::Strict) {
        let p = p.map_err(|e| e.to_string())?;
        let field = |name: &'static str| p.get(name).map(|v| v.trim().to_owned());
        let Some(name) = field("Package").filter(|n| !n.is_empty()) else {
            return Err(format!("the paragraph on line {} has no `Package`", p.line()));
        };
        let Some(status) = field("Status") else {
            return Err(format!("package `{name}` (line {}) has no `Status`", p.line()));
        };
        out.push(DpkgPackage {
            name,
            architecture: field("Architecture").unwrap_or_default(),
            version: field("Version").unwrap_or_default(),
            status,
        });
    }
    out.sort();
    Ok(out)
}

/// The people's rendering of `--packages`: a header line, then one aligned row a package.
pub fn render_packages(r: &PackagesReport) -> String {
    let mut o = String::new();
    let installed = r.packages.iter().filter(|p| p.installed()).count();
    let place = r
        .partition
        .map_or("the image".to_owned(), |i| format!("partition {i}"));
    let _ = writeln!(
        o,
        "`{}` in {place} of `{}`: {} package(s), {installed} installed",
        r.database,
        r.image.path,
        r.packages.len()
    );
    let w = |f: &dyn Fn(&DpkgPackage) -> usize, title: &str| {
        r.packages.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let nw = w(&|p| p.name.len(), "name");
    let vw = w(&|p| p.version.len(), "version");
    let aw = w(&|p| p.architecture.len(), "architecture");
    let _ = writeln!(
        o,
        "{:nw$}  {:vw$}  {:aw$}  status",
        "name", "version", "architecture"
    );
    for p in &r.packages {
        let _ = writeln!(
            o,
            "{:nw$}  {:vw$}  {:aw$}  {}",
            p.name, p.version, p.architecture, p.status
        );
    }
    o
}

/// Builds the report; reads and hashes every file when `with_entries`.
pub fn build_report(loaded: &Loaded, with_entries: bool) -> miette::Result<Report> {
    let disk = &loaded.disk;
    let mut filesystems = Vec::new();
    for fs in &disk.filesystems {
        let entries = if with_entries {
            Some(entries(disk, fs, &loaded.image.path)?)
        } else {
            None
        };
        filesystems.push(FsReport {
            partition: fs.partition,
            offset: fs.offset,
            size: fs.len,
            kind: fs.kind,
            summary: fs.summary.clone(),
            entries,
        });
    }
    Ok(Report {
        schema: SCHEMA,
        image: loaded.image.clone(),
        table: disk.table.as_ref().map(table_info),
        partitions: disk.table.as_ref().map(partitions).unwrap_or_default(),
        warnings: disk.warnings.iter().map(|w| w.to_string()).collect(),
        filesystems,
    })
}

/// The entries of `fs` as reported, with errors naming the image.
pub fn entries(disk: &Disk, fs: &FsView, shown: &str) -> miette::Result<Vec<EntryInfo>> {
    let list = image::nodes(disk, fs)
        .map_err(|e| miette::Report::new(e).wrap_err(format!("cannot read `{shown}`")))?;
    let sizes = image::file_sizes(&list);
    Ok(list.iter().map(|e| entry_info(e, &sizes)).collect())
}

pub fn entry_info(e: &Entry, sizes: &std::collections::BTreeMap<String, u64>) -> EntryInfo {
    let n = &e.node;
    let (target, device) = match &n.kind {
        NodeKind::Symlink { target } | NodeKind::HardLink { target } => (Some(target.clone()), None),
        NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } => {
            (None, Some(format!("{major}:{minor}")))
        }
        _ => (None, None),
    };
    EntryInfo {
        path: n.path.clone(),
        kind: kind_name(&n.kind),
        mode: format!("{:04o}", n.mode & 0o7777),
        uid: n.uid,
        gid: n.gid,
        size: e.size(sizes),
        mtime: n.mtime,
        target,
        device,
        xattrs: n.xattrs.keys().cloned().collect(),
        sha256: e.sha256.clone(),
    }
}

pub fn kind_name(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::File { .. } => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink { .. } => "symlink",
        NodeKind::HardLink { .. } => "hardlink",
        NodeKind::CharDev { .. } => "char",
        NodeKind::BlockDev { .. } => "block",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
    }
}

pub fn table_info(t: &PartitionTable) -> TableInfo {
    match &t.kind {
        TableKind::Mbr { disk_signature } => TableInfo {
            kind: "mbr",
            disk_id: format!("{disk_signature:08x}"),
        },
        TableKind::Gpt { disk_guid, .. } => TableInfo {
            kind: "gpt",
            disk_id: disk_guid.to_string(),
        },
    }
}

pub fn partitions(t: &PartitionTable) -> Vec<PartitionInfo> {
    t.partitions
        .iter()
        .map(|p| {
            let range = p.byte_range();
            PartitionInfo {
                index: p.index,
                start_lba: p.start_lba,
                size_lba: p.size_lba,
                start: range.start,
                size: range.end.saturating_sub(range.start),
                type_id: p.partition_type.to_string(),
                type_name: type_name(p.partition_type),
                bootable: p.bootable,
                partuuid: t.partuuid(p.index),
                name: p.name.clone(),
            }
        })
        .collect()
}

/// Names of the partition types Raspberry Pi images and their neighbours use.
pub fn type_name(t: PartitionType) -> Option<&'static str> {
    Some(match t {
        PartitionType::Mbr(0x01) => "FAT12",
        PartitionType::Mbr(0x04 | 0x06) => "FAT16",
        PartitionType::Mbr(0x05) => "Extended",
        PartitionType::Mbr(0x0b) => "W95 FAT32",
        PartitionType::Mbr(0x0c) => "W95 FAT32 (LBA)",
        PartitionType::Mbr(0x0e) => "W95 FAT16 (LBA)",
        PartitionType::Mbr(0x0f) => "W95 Extended (LBA)",
        PartitionType::Mbr(0x82) => "Linux swap",
        PartitionType::Mbr(0x83) => "Linux",
        PartitionType::Mbr(0x85) => "Linux extended",
        PartitionType::Mbr(0xee) => "GPT protective",
        PartitionType::Mbr(0xef) => "EFI (FAT-12/16/32)",
        PartitionType::Gpt(g) if g == gpt::EFI_SYSTEM => "EFI System",
        PartitionType::Gpt(g) if g == gpt::MICROSOFT_BASIC_DATA => "Microsoft basic data",
        PartitionType::Gpt(g) if g == gpt::LINUX_FILESYSTEM => "Linux filesystem",
        PartitionType::Gpt(g) if g == gpt::LINUX_ROOT_ARM64 => "Linux root (ARM-64)",
        _ => return None,
    })
}

/// `drwxr-xr-x`, `-rwsr-xr-x`, `lrwxrwxrwx`: the type and mode as `ls -l` shows them.
pub fn mode_string(kind: &str, mode: u32) -> String {
    let t = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "char" => 'c',
        "block" => 'b',
        "fifo" => 'p',
        "socket" => 's',
        _ => '-',
    };
    let bit = |b: u32, c: char| if mode & b != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (mode & x != 0, mode & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// `2023-11-14T22:13:20Z`: seconds since the epoch as a UTC date and time.
pub fn utc(secs: i64) -> String {
    crate::manifest::sbom::rfc3339(secs)
}

fn fs_name(partition: Option<u32>) -> String {
    match partition {
        Some(i) => format!("p{i}"),
        None => "image".to_string(),
    }
}

/// The people's rendering.
pub fn render_text(r: &Report) -> String {
    let mut o = String::new();
    let img = &r.image;
    let how = match img.compression {
        Compression::None => String::new(),
        c => format!(" ({c}, {} compressed)", crate::ui::bytes(img.stored_size)),
    };
    let _ = writeln!(
        o,
        "image       `{}`: {}{how}",
        img.path,
        crate::ui::bytes(img.size)
    );
    match &r.table {
        Some(t) => {
            let _ = writeln!(o, "table       {}, disk id {}", t.kind, t.disk_id);
            let _ = writeln!(
                o,
                "  {:>3} {:>4} {:>10} {:>10} {:>10}  {:<36} type",
                "#", "boot", "start", "sectors", "size", "partuuid"
            );
            for p in &r.partitions {
                let ty = match p.type_name {
                    Some(n) => format!("{} ({n})", p.type_id),
                    None => p.type_id.clone(),
                };
                let name = if p.name.is_empty() {
                    String::new()
                } else {
                    format!(" `{}`", p.name)
                };
                let _ = writeln!(
                    o,
                    "  {:>3} {:>4} {:>10} {:>10} {:>10}  {:<36} {ty}{name}",
                    p.index,
                    if p.bootable { "*" } else { "" },
                    p.start_lba,
                    p.size_lba,
                    crate::ui::bytes(p.size),
                    p.partuuid.as_deref().unwrap_or("-"),
                );
            }
        }
        None => {
            let _ = writeln!(o, "table       none (a bare filesystem image)");
        }
    }
    for w in &r.warnings {
        let _ = writeln!(o, "warning     {w}");
    }
    for fs in &r.filesystems {
        let _ = writeln!(o, "{}", fs_line(fs));
        if !fs.summary.features.is_empty() {
            let _ = writeln!(o, "{:12}features: {}", "", fs.summary.features.join(" "));
        }
    }
    for fs in &r.filesystems {
        let Some(entries) = &fs.entries else { continue };
        if fs.kind == FsKind::Unknown {
            continue;
        }
        let label = fs
            .summary
            .label
            .as_ref()
            .map(|l| format!(" `{l}`"))
            .unwrap_or_default();
        let _ = writeln!(o, "\n{} {}{label}:", fs_name(fs.partition), fs.kind);
        o.push_str(&render_tree(entries));
    }
    o
}

/// One summary line of a filesystem.
fn fs_line(fs: &FsReport) -> String {
    let s = &fs.summary;
    let mut parts: Vec<String> = Vec::new();
    if let Some(v) = &s.variant {
        parts.push(v.clone());
    }
    if let Some(l) = &s.label {
        parts.push(format!("label `{l}`"));
    }
    if let Some(u) = &s.uuid {
        parts.push(format!("uuid {u}"));
    }
    if let Some(b) = s.block_size {
        let unit = if fs.kind == FsKind::Fat {
            "clusters"
        } else {
            "blocks"
        };
        parts.push(format!("{b}-byte {unit}"));
    }
    if let (Some(size), Some(free)) = (s.fs_size, s.free) {
        parts.push(format!(
            "{} ({} free)",
            crate::ui::bytes(size),
            crate::ui::bytes(free)
        ));
    }
    if let (Some(n), Some(free)) = (s.inodes, s.free_inodes) {
        parts.push(format!("{n} inodes ({free} free)"));
    }
    if fs.kind == FsKind::Unknown {
        parts.push(format!("no known filesystem in {}", crate::ui::bytes(fs.size)));
    }
    format!(
        "{:<11} {:<5} {}",
        format!("fs {}", fs_name(fs.partition)),
        fs.kind,
        parts.join(", ")
    )
}

/// `ls -l`-style lines: mode, `uid:gid`, size (or `major,minor`), path, `-> target`,
/// `[xattr names]`, the first 12 hex digits of the SHA-256.
pub fn render_tree(entries: &[EntryInfo]) -> String {
    let owner = |e: &EntryInfo| format!("{}:{}", e.uid, e.gid);
    let size = |e: &EntryInfo| match &e.device {
        Some(d) => d.replace(':', ","),
        None => e.size.to_string(),
    };
    let ow = entries.iter().map(|e| owner(e).len()).max().unwrap_or(0);
    let sw = entries.iter().map(|e| size(e).len()).max().unwrap_or(0);
    let mut o = String::new();
    for e in entries {
        let mut line = format!(
            "{} {:>ow$} {:>sw$} {}",
            mode_string(e.kind, u32::from_str_radix(&e.mode, 8).unwrap_or(0)),
            owner(e),
            size(e),
            e.path
        );
        match (e.kind, &e.target) {
            ("symlink", Some(t)) => {
                let _ = write!(line, " -> {t}");
            }
            ("hardlink", Some(t)) => {
                let _ = write!(line, " link to {t}");
            }
            _ => {}
        }
        if !e.xattrs.is_empty() {
            let _ = write!(line, " [{}]", e.xattrs.join(", "));
        }
        if let Some(h) = &e.sha256 {
            let _ = write!(line, "  sha256:{}", h.get(..12).unwrap_or(h));
        }
        o.push_str(&line);
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string("dir", 0o755), "drwxr-xr-x");
        assert_eq!(mode_string("file", 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string("file", 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string("dir", 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string("dir", 0o1776), "drwxrwxrwT");
        assert_eq!(mode_string("symlink", 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string("char", 0o600), "crw-------");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn tree_lines() {
        let e = |path: &str, kind: &'static str, mode: &str, size, target: Option<&str>| EntryInfo {
            path: path.into(),
            kind,
            mode: mode.into(),
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            target: target.map(Into::into),
            device: None,
            xattrs: Vec::new(),
            sha256: None,
        };
        let mut sudo = e("/usr/bin/sudo", "file", "4755", 1234, None);
        sudo.xattrs = vec!["security.capability".into()];
        sudo.sha256 = Some("0123456789abcdef".repeat(4));
        sudo.gid = 1000;
        let mut null = e("/dev/null", "char", "0666", 0, None);
        null.device = Some("1:3".into());
        let text = render_tree(&[
            e("/", "dir", "0755", 0, None),
            e("/bin", "symlink", "0777", 7, Some("usr/bin")),
            sudo,
            null,
        ]);
        assert_eq!(
            text,
            "drwxr-xr-x    0:0    0 /\n\
             lrwxrwxrwx    0:0    7 /bin -> usr/bin\n\
             -rwsr-xr-x 0:1000 1234 /usr/bin/sudo [security.capability]  sha256:0123456789ab\n\
             crw-rw-rw-    0:0  1,3 /dev/null\n"
        );
    }

    const STATUS: &str = "Package: zlib1g\nStatus: install ok installed\nPriority: optional\n\
        Architecture: arm64\nMulti-Arch: same\nVersion: 1:1.2.13.dfsg-1\n\
        Description: compression library - runtime\n zlib is a library.\n\n\
        Package: bash\nEssential: yes\nStatus: install ok installed\nArchitecture: arm64\n\
        Version: 5.2.15-2+b2\n\n\
        Package: old-conf\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1.0\n\n\
        Package: gone\nStatus: purge ok not-installed\n";

    #[test]
    fn dpkg_status_lists_every_package_sorted_with_its_state() {
        let p = parse_dpkg_status(STATUS).unwrap();
        let rows: Vec<(&str, &str, &str, &str, bool)> = p
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.architecture.as_str(),
                    p.status.as_str(),
                    p.installed(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("bash", "5.2.15-2+b2", "arm64", "install ok installed", true),
                ("gone", "", "", "purge ok not-installed", false),
                ("old-conf", "1.0", "all", "deinstall ok config-files", false),
                ("zlib1g", "1:1.2.13.dfsg-1", "arm64", "install ok installed", true),
            ]
        );
        let report = PackagesReport {
            schema: PACKAGES_SCHEMA,
            image: ImageInfo {
                path: "edge.img".into(),
                compression: Compression::None,
                stored_size: 1,
                size: 1,
            },
            partition: Some(2),
            database: DPKG_STATUS,
            packages: p,
        };
        let text = render_packages(&report);
        assert_eq!(
            text.lines().take(3).collect::<Vec<_>>(),
            [
                "`/var/lib/dpkg/status` in partition 2 of `edge.img`: 4 package(s), 2 installed",
                "name      version          architecture  status",
                "bash      5.2.15-2+b2      arm64         install ok installed",
            ]
        );
    }

    #[test]
    fn a_damaged_dpkg_status_is_an_error_naming_the_line() {
        let e = parse_dpkg_status("Package: a\nStatus: install ok installed\n\nVersion: 1\n").unwrap_err();
        assert!(e.contains("line 4") && e.contains("`Package`"), "{e}");
        let e = parse_dpkg_status("Package: a\nVersion: 1\n").unwrap_err();
        assert!(e.contains("`a`") && e.contains("`Status`"), "{e}");
        let e = parse_dpkg_status("Package: a\n# comment\n").unwrap_err();
        assert!(!e.is_empty());
        assert_eq!(parse_dpkg_status("").unwrap(), vec![]);
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name(PartitionType::MBR_FAT32_LBA), Some("W95 FAT32 (LBA)"));
        assert_eq!(type_name(PartitionType::GPT_LINUX), Some("Linux filesystem"));
        assert_eq!(type_name(PartitionType::Mbr(0x42)), None);
    }
}
