//! `w4b diff A B`: what differs between two disk images — the partition table, each
//! filesystem's identity, and every entry added, removed or changed (kind, symlink or
//! hard-link target, device numbers, size, content SHA-256, mode, owner, each xattr by
//! name and value, mtime). For auditors ("what exactly did this rebuild change?") and for
//! debugging non-determinism. Text prints one line per difference; `w4b.diff/1` JSON
//! gives old and new values.
//!
//! Filesystems pair by partition index (a bare filesystem image pairs with the other
//! bare image); entries pair by path. Exit status as `diff(1)`: 0 identical, 1 different,
//! 2 when an image cannot be read or the arguments are wrong (see `commands::run`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use miette::IntoDiagnostic;
use serde::Serialize;

use super::inspect::{self, ImageInfo, Loaded, PartitionInfo, TableInfo};
use super::App;
use crate::cli::{DiffArgs, DiffField, ReportFormat};
use crate::formats::fs::NodeKind;
use crate::image::{self, Entry, FsKind, FsView};

/// The JSON schema name and version; bump the version when a field changes meaning.
pub const SCHEMA: &str = "w4b.diff/1";

#[derive(Debug, Serialize)]
pub struct DiffReport {
    pub schema: &'static str,
    pub a: ImageInfo,
    pub b: ImageInfo,
    pub identical: bool,
    /// Fields left out with `--ignore`.
    pub ignored: Vec<&'static str>,
    /// Disk-wide differences: `size`, `table` (kind), `disk_id`.
    pub disk: Vec<FieldChange>,
    pub partitions: Vec<PartitionDiff>,
    /// Only filesystems with differences.
    pub filesystems: Vec<FsDiff>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    fn sign(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Changed => '~',
        }
    }
}

/// One field's old and new value (`None`: absent on that side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    /// The attribute's name, for `field: "xattr"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionDiff {
    pub index: u32,
    pub change: Change,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Serialize)]
pub struct FsDiff {
    /// Partition index; `null` for bare filesystem images.
    pub partition: Option<u32>,
    pub change: Change,
    /// The filesystem's kind (B's, when it has one).
    pub kind: FsKind,
    /// Differences of the filesystems' identity: kind, label, uuid, variant, sizes.
    pub fields: Vec<FieldChange>,
    /// Entry differences, in path order. Empty for an added or removed filesystem.
    pub entries: Vec<EntryDiff>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryDiff {
    pub path: String,
    pub change: Change,
    /// What changed (empty for added and removed entries).
    pub fields: Vec<FieldChange>,
}

pub fn run(app: &App, args: &DiffArgs) -> miette::Result<i32> {
    let a = inspect::load(app, &args.a, args.max_image_size)?;
    let b = inspect::load(app, &args.b, args.max_image_size)?;
    let ignore: BTreeSet<DiffField> = args.ignore.iter().copied().collect();
    let report = diff(&a, &b, &ignore)?;
    match args.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report).into_diagnostic()?),
        ReportFormat::Text => {
            print!("{}", render_text(&report));
            if !app.global.quiet {
                eprintln!("{}", summary(&report));
            }
        }
    }
    Ok(if report.identical { 0 } else { 1 })
}

/// Compares two read images; reads and hashes every file of both.
pub fn diff(a: &Loaded, b: &Loaded, ignore: &BTreeSet<DiffField>) -> miette::Result<DiffReport> {
    let mut disk = Vec::new();
    push(&mut disk, "size", Some(a.image.size), Some(b.image.size));
    let (ta, tb) = (
        a.disk.table.as_ref().map(inspect::table_info),
        b.disk.table.as_ref().map(inspect::table_info),
    );
    push(
        &mut disk,
        "table",
        Some(ta.as_ref().map_or("none", |t| t.kind)),
        Some(tb.as_ref().map_or("none", |t| t.kind)),
    );
    push(
        &mut disk,
        "disk_id",
        ta.as_ref().map(|t: &TableInfo| t.disk_id.clone()),
        tb.as_ref().map(|t: &TableInfo| t.disk_id.clone()),
    );
    let partitions = compare_partitions(
        &a.disk.table.as_ref().map(inspect::partitions).unwrap_or_default(),
        &b.disk.table.as_ref().map(inspect::partitions).unwrap_or_default(),
    );

    let by_part = |l: &Loaded| -> BTreeMap<Option<u32>, FsView> {
        l.disk
            .filesystems
            .iter()
            .map(|f| (f.partition, f.clone()))
            .collect()
    };
    let (fa, fb) = (by_part(a), by_part(b));
    let keys: BTreeSet<Option<u32>> = fa.keys().chain(fb.keys()).copied().collect();
    let mut filesystems = Vec::new();
    for key in keys {
        match (fa.get(&key), fb.get(&key)) {
            (Some(x), Some(y)) => {
                let fields = compare_summaries(x, y);
                let ea = read_entries(a, x)?;
                let eb = read_entries(b, y)?;
                let entries = compare_entries(&ea, &eb, ignore);
                if !fields.is_empty() || !entries.is_empty() {
                    filesystems.push(FsDiff {
                        partition: key,
                        change: Change::Changed,
                        kind: y.kind,
                        fields,
                        entries,
                    });
                }
            }
            (Some(x), None) => filesystems.push(FsDiff {
                partition: key,
                change: Change::Removed,
                kind: x.kind,
                fields: Vec::new(),
                entries: Vec::new(),
            }),
            (None, Some(y)) => filesystems.push(FsDiff {
                partition: key,
                change: Change::Added,
                kind: y.kind,
                fields: Vec::new(),
                entries: Vec::new(),
            }),
            (None, None) => {}
        }
    }
    let identical = disk.is_empty() && partitions.is_empty() && filesystems.is_empty();
    Ok(DiffReport {
        schema: SCHEMA,
        a: a.image.clone(),
        b: b.image.clone(),
        identical,
        ignored: ignore.iter().map(|f| field_name(*f)).collect(),
        disk,
        partitions,
        filesystems,
    })
}

fn field_name(f: DiffField) -> &'static str {
    match f {
        DiffField::Mtime => "mtime",
        DiffField::Mode => "mode",
        DiffField::Owner => "owner",
        DiffField::Xattrs => "xattrs",
    }
}

fn read_entries(l: &Loaded, fs: &FsView) -> miette::Result<Vec<Entry>> {
    image::nodes(&l.disk, fs)
        .map_err(|e| miette::Report::new(e).wrap_err(format!("cannot read `{}`", l.image.path)))
}

/// Adds a [`FieldChange`] when `old != new`.
fn push<T: PartialEq + ToString>(
    out: &mut Vec<FieldChange>,
    field: &'static str,
    old: Option<T>,
    new: Option<T>,
) {
    if old != new {
        out.push(FieldChange {
            field,
            name: None,
            old: old.map(|v| v.to_string()),
            new: new.map(|v| v.to_string()),
        });
    }
}

fn partition_fields(out: &mut Vec<FieldChange>, a: Option<&PartitionInfo>, b: Option<&PartitionInfo>) {
    push(out, "start_lba", a.map(|p| p.start_lba), b.map(|p| p.start_lba));
    push(out, "size_lba", a.map(|p| p.size_lba), b.map(|p| p.size_lba));
    push(
        out,
        "type",
        a.map(|p| p.type_id.clone()),
        b.map(|p| p.type_id.clone()),
    );
    push(out, "bootable", a.map(|p| p.bootable), b.map(|p| p.bootable));
    push(
        out,
        "partuuid",
        a.and_then(|p| p.partuuid.clone()),
        b.and_then(|p| p.partuuid.clone()),
    );
    push(
        out,
        "name",
        a.map(|p| p.name.clone()).filter(|n| !n.is_empty()),
        b.map(|p| p.name.clone()).filter(|n| !n.is_empty()),
    );
}

/// Partitions paired by index.
pub fn compare_partitions(a: &[PartitionInfo], b: &[PartitionInfo]) -> Vec<PartitionDiff> {
    let index: BTreeSet<u32> = a.iter().chain(b).map(|p| p.index).collect();
    let mut out = Vec::new();
    for i in index {
        let (pa, pb) = (a.iter().find(|p| p.index == i), b.iter().find(|p| p.index == i));
        let mut fields = Vec::new();
        partition_fields(&mut fields, pa, pb);
        let change = match (pa, pb) {
            (Some(_), None) => Change::Removed,
            (None, Some(_)) => Change::Added,
            _ if fields.is_empty() => continue,
            _ => Change::Changed,
        };
        out.push(PartitionDiff {
            index: i,
            change,
            fields,
        });
    }
    out
}

/// Differences in what two filesystems say about themselves. Free space is left out:
/// it follows from the entries, which are compared one by one.
pub fn compare_summaries(a: &FsView, b: &FsView) -> Vec<FieldChange> {
    let (sa, sb) = (&a.summary, &b.summary);
    let mut out = Vec::new();
    push(&mut out, "kind", Some(a.kind), Some(b.kind));
    push(&mut out, "label", sa.label.clone(), sb.label.clone());
    push(&mut out, "uuid", sa.uuid.clone(), sb.uuid.clone());
    push(&mut out, "variant", sa.variant.clone(), sb.variant.clone());
    push(&mut out, "block_size", sa.block_size, sb.block_size);
    push(&mut out, "fs_size", sa.fs_size, sb.fs_size);
    push(&mut out, "inodes", sa.inodes, sb.inodes);
    push(
        &mut out,
        "features",
        Some(sa.features.join(" ")),
        Some(sb.features.join(" ")),
    );
    out
}

/// Entries paired by path, in path order.
pub fn compare_entries(a: &[Entry], b: &[Entry], ignore: &BTreeSet<DiffField>) -> Vec<EntryDiff> {
    let (sizes_a, sizes_b) = (image::file_sizes(a), image::file_sizes(b));
    let ma: BTreeMap<&str, &Entry> = a.iter().map(|e| (e.node.path.as_str(), e)).collect();
    let mb: BTreeMap<&str, &Entry> = b.iter().map(|e| (e.node.path.as_str(), e)).collect();
    let paths: BTreeSet<&str> = ma.keys().chain(mb.keys()).copied().collect();
    let mut out = Vec::new();
    for path in paths {
        let (change, fields) = match (ma.get(path), mb.get(path)) {
            (Some(_), None) => (Change::Removed, Vec::new()),
            (None, Some(_)) => (Change::Added, Vec::new()),
            (Some(x), Some(y)) => {
                let fields = entry_fields(x, y, &sizes_a, &sizes_b, ignore);
                if fields.is_empty() {
                    continue;
                }
                (Change::Changed, fields)
            }
            (None, None) => continue,
        };
        out.push(EntryDiff {
            path: path.to_string(),
            change,
            fields,
        });
    }
    out
}

fn entry_fields(
    x: &Entry,
    y: &Entry,
    sizes_a: &BTreeMap<String, u64>,
    sizes_b: &BTreeMap<String, u64>,
    ignore: &BTreeSet<DiffField>,
) -> Vec<FieldChange> {
    let (nx, ny) = (&x.node, &y.node);
    let mut out = Vec::new();
    push(
        &mut out,
        "kind",
        Some(inspect::kind_name(&nx.kind)),
        Some(inspect::kind_name(&ny.kind)),
    );
    let target = |k: &NodeKind| match k {
        NodeKind::Symlink { target } | NodeKind::HardLink { target } => Some(target.clone()),
        _ => None,
    };
    push(&mut out, "target", target(&nx.kind), target(&ny.kind));
    let device = |k: &NodeKind| match k {
        NodeKind::CharDev { major, minor } | NodeKind::BlockDev { major, minor } => {
            Some(format!("{major}:{minor}"))
        }
        _ => None,
    };
    push(&mut out, "device", device(&nx.kind), device(&ny.kind));
    push(&mut out, "size", Some(x.size(sizes_a)), Some(y.size(sizes_b)));
    // Content only where both sides have some; a kind change already says the rest.
    if let (Some(hx), Some(hy)) = (&x.sha256, &y.sha256) {
        push(&mut out, "content", Some(hx), Some(hy));
    }
    if !ignore.contains(&DiffField::Mode) {
        push(
            &mut out,
            "mode",
            Some(format!("{:04o}", nx.mode & 0o7777)),
            Some(format!("{:04o}", ny.mode & 0o7777)),
        );
    }
    if !ignore.contains(&DiffField::Owner) {
        push(&mut out, "uid", Some(nx.uid), Some(ny.uid));
        push(&mut out, "gid", Some(nx.gid), Some(ny.gid));
    }
    if !ignore.contains(&DiffField::Xattrs) {
        let names: BTreeSet<&String> = nx.xattrs.keys().chain(ny.xattrs.keys()).collect();
        for name in names {
            let (vx, vy) = (nx.xattrs.get(name), ny.xattrs.get(name));
            if vx != vy {
                out.push(FieldChange {
                    field: "xattr",
                    name: Some(name.clone()),
                    old: vx.map(|v| format!("0x{}", hex::encode(v))),
                    new: vy.map(|v| format!("0x{}", hex::encode(v))),
                });
            }
        }
    }
    if !ignore.contains(&DiffField::Mtime) {
        push(
            &mut out,
            "mtime",
            Some(inspect::utc(nx.mtime)),
            Some(inspect::utc(ny.mtime)),
        );
    }
    out
}

/// `content`, `xattr user.x added`, `mode 0644 → 0600`.
fn render_field(f: &FieldChange) -> String {
    match (f.field, &f.old, &f.new) {
        ("content", _, _) => "content".to_string(),
        ("xattr", old, new) => {
            let name = f.name.as_deref().unwrap_or("?");
            match (old, new) {
                (None, _) => format!("xattr {name} added"),
                (_, None) => format!("xattr {name} removed"),
                _ => format!("xattr {name}"),
            }
        }
        (field, Some(old), Some(new)) => format!("{field} {old} → {new}"),
        (field, None, Some(v)) | (field, Some(v), None) => format!("{field} {v}"),
        (field, None, None) => field.to_string(),
    }
}

fn render_fields(fields: &[FieldChange]) -> String {
    fields.iter().map(render_field).collect::<Vec<_>>().join(", ")
}

/// One line per difference.
pub fn render_text(r: &DiffReport) -> String {
    let mut o = String::new();
    if !r.disk.is_empty() {
        let _ = writeln!(o, "~ disk: {}", render_fields(&r.disk));
    }
    for p in &r.partitions {
        let _ = writeln!(
            o,
            "{} partition {}: {}",
            p.change.sign(),
            p.index,
            render_fields(&p.fields)
        );
    }
    for fs in &r.filesystems {
        let name = match fs.partition {
            Some(i) => format!("filesystem p{i}"),
            None => "filesystem".to_string(),
        };
        match fs.change {
            Change::Added | Change::Removed => {
                let _ = writeln!(o, "{} {name} ({})", fs.change.sign(), fs.kind);
            }
            Change::Changed if !fs.fields.is_empty() => {
                let _ = writeln!(o, "~ {name}: {}", render_fields(&fs.fields));
            }
            Change::Changed => {}
        }
        let prefix = fs.partition.map(|i| format!("p{i}:")).unwrap_or_default();
        for e in &fs.entries {
            let _ = write!(o, "{} {prefix}{}", e.change.sign(), e.path);
            if !e.fields.is_empty() {
                let _ = write!(o, ": {}", render_fields(&e.fields));
            }
            o.push('\n');
        }
    }
    o
}

/// The stderr line after a text diff.
pub fn summary(r: &DiffReport) -> String {
    if r.identical {
        return format!("`{}` and `{}` are identical", r.a.path, r.b.path);
    }
    let entries = || r.filesystems.iter().flat_map(|f| &f.entries);
    let count = |c: Change| entries().filter(|e| e.change == c).count();
    let mut parts = Vec::new();
    let n = entries().count();
    if n > 0 {
        parts.push(format!(
            "{n} {} ({} added, {} removed, {} changed)",
            if n == 1 { "entry" } else { "entries" },
            count(Change::Added),
            count(Change::Removed),
            count(Change::Changed)
        ));
    }
    let fs = r
        .filesystems
        .iter()
        .filter(|f| f.change != Change::Changed || !f.fields.is_empty())
        .count();
    for (n, one, many) in [
        (fs, "filesystem", "filesystems"),
        (r.partitions.len(), "partition", "partitions"),
        (r.disk.len(), "disk field", "disk fields"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {}", if n == 1 { one } else { many }));
        }
    }
    format!("`{}` and `{}` differ: {}", r.a.path, r.b.path, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::fs::{ContentId, Node};

    fn entry(path: &str, kind: NodeKind, mode: u32, sha: Option<&str>) -> Entry {
        Entry {
            node: Node {
                path: path.into(),
                kind,
                mode,
                uid: 0,
                gid: 0,
                mtime: 1_700_000_000,
                xattrs: BTreeMap::new(),
            },
            sha256: sha.map(Into::into),
        }
    }

    fn file(path: &str, size: u64, mode: u32, sha: &str) -> Entry {
        entry(
            path,
            NodeKind::File {
                size,
                content: ContentId([0; 32]),
            },
            mode,
            Some(sha),
        )
    }

    #[test]
    fn entries_added_removed_changed() {
        let a = vec![
            entry("/", NodeKind::Dir, 0o755, None),
            file("/etc/hostname", 6, 0o644, "aa"),
            file("/etc/issue", 3, 0o644, "bb"),
            file("/same", 1, 0o644, "cc"),
        ];
        let mut b = vec![
            entry("/", NodeKind::Dir, 0o755, None),
            file("/etc/hostname", 6, 0o600, "dd"),
            file("/etc/motd", 3, 0o644, "ee"),
            file("/same", 1, 0o644, "cc"),
        ];
        let d = compare_entries(&a, &b, &BTreeSet::new());
        let lines: Vec<String> = d
            .iter()
            .map(|e| format!("{} {} {}", e.change.sign(), e.path, render_fields(&e.fields)))
            .collect();
        assert_eq!(
            lines,
            [
                "~ /etc/hostname content, mode 0644 → 0600",
                "- /etc/issue ",
                "+ /etc/motd ",
            ]
        );
        // Metadata only: xattrs by value, owner, mtime; and --ignore leaves them out.
        b[3].node.xattrs.insert("user.x".into(), b"1".to_vec());
        b[3].node.uid = 1000;
        b[3].node.mtime += 2;
        let d = compare_entries(&a[3..], &b[3..], &BTreeSet::new());
        assert_eq!(
            render_fields(&d[0].fields),
            "uid 0 → 1000, xattr user.x added, mtime 2023-11-14T22:13:20Z → 2023-11-14T22:13:22Z"
        );
        assert_eq!(d[0].fields[1].new.as_deref(), Some("0x31"));
        let all: BTreeSet<DiffField> = [DiffField::Owner, DiffField::Xattrs, DiffField::Mtime].into();
        assert!(compare_entries(&a[3..], &b[3..], &all).is_empty());
    }

    #[test]
    fn kind_and_target_changes() {
        let a = vec![entry(
            "/bin",
            NodeKind::Symlink {
                target: "usr/bin".into(),
            },
            0o777,
            None,
        )];
        let b = vec![entry("/bin", NodeKind::Dir, 0o755, None)];
        let d = compare_entries(&a, &b, &BTreeSet::new());
        assert_eq!(
            render_fields(&d[0].fields),
            "kind symlink → dir, target usr/bin, size 7 → 0, mode 0777 → 0755"
        );
    }

    #[test]
    fn partitions_pair_by_index() {
        let p = |index, start_lba, ty: &str| PartitionInfo {
            index,
            start_lba,
            size_lba: 100,
            start: start_lba * 512,
            size: 51200,
            type_id: ty.into(),
            type_name: None,
            bootable: false,
            partuuid: Some(format!("1a2b3c4d-{index:02x}")),
            name: String::new(),
        };
        let d = compare_partitions(
            &[p(1, 8192, "c"), p(2, 9000, "83")],
            &[p(1, 8192, "b"), p(3, 9000, "83")],
        );
        let lines: Vec<String> = d
            .iter()
            .map(|p| format!("{} {} {}", p.change.sign(), p.index, render_fields(&p.fields)))
            .collect();
        assert_eq!(
            lines,
            [
                "~ 1 type c → b",
                "- 2 start_lba 9000, size_lba 100, type 83, bootable false, partuuid 1a2b3c4d-02",
                "+ 3 start_lba 9000, size_lba 100, type 83, bootable false, partuuid 1a2b3c4d-03",
            ]
        );
    }
}
