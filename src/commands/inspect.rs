//! `w4b inspect IMAGE`: what is in a disk image — its partition table, each filesystem's
//! summary and, with `--tree` (or always in JSON), every entry with its metadata and the
//! SHA-256 of its content. Text for people, `w4b.inspect/1` JSON for tools and auditors.
//!
//! The image is opened by [`crate::image`] (decompressing `.xz`, `.zst` and `.gz`), so
//! this file only shapes and renders the report. [`load`] is shared with `diff`.

use std::fmt::Write as _;
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
    let with_entries = args.tree || args.format == ReportFormat::Json;
    let report = build_report(&loaded, with_entries)?;
    match args.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report).into_diagnostic()?),
        ReportFormat::Text => print!("{}", render_text(&report)),
    }
    Ok(0)
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
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from a day count (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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

    #[test]
    fn type_names() {
        assert_eq!(type_name(PartitionType::MBR_FAT32_LBA), Some("W95 FAT32 (LBA)"));
        assert_eq!(type_name(PartitionType::GPT_LINUX), Some("Linux filesystem"));
        assert_eq!(type_name(PartitionType::Mbr(0x42)), None);
    }
}
