//! Full-fidelity exchange between a tree and a host directory, for running real programs
//! (dpkg and its maintainer scripts) on a tree.
//!
//! [`import`](super::import) normalises a host directory away from the host's accidents;
//! this module does the opposite: [`materialize`] writes every entry exactly as the tree
//! describes it (owner, setuid/setgid/sticky bits, xattrs such as `security.capability`,
//! mtime, device nodes, fifos, sockets, hard links, symlinks) and [`capture`] reads a
//! directory back with the same fidelity, so `capture(materialize(t)) == t`. Both need the
//! privileges to create devices and change owners (root, or a user namespace that maps
//! the tree's ids).
//!
//! The result never depends on the host's directory order or on scheduling: capture
//! sorts by name and forms hard-link groups by `(dev, ino)` with the first path in walk
//! order as the file, the others as [`Kind::HardLink`] to it. File contents are hashed
//! (capture) and written (materialize) in parallel with rayon; everything else is cheap
//! metadata done in walk order.
//!
//! Contents are streamed from [`Blobs::open`] rather than reflinked or copied with
//! `copy_file_range` from a store path: the store verifies every read against its digest
//! (DESIGN §5), which a kernel-side copy would skip.
//!
//! Metadata order matters and follows the kernel's rules: `chown` clears the setuid and
//! setgid bits and drops `security.capability`, so each entry is chowned first, then
//! chmodded, then given its xattrs, then its mtime; directories are finished last and
//! deepest first, because creating a child changes its parent's mtime.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Timespec, Timestamps, CWD};
use w4b_cache::Digest;

use super::path::name_problem;
use super::{walk, Blobs, Entry, Kind, TreeBuilder, TreeError, TreePath, MAX_DEPTH};

/// What [`materialize`] wrote, for progress and timing reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaterializeStats {
    /// Entries written, the root included.
    pub entries: u64,
    /// Bytes of file contents written (hard links not counted again).
    pub bytes: u64,
}

/// Writes the tree `root` into the host directory `dir` with full fidelity.
///
/// `dir` must be empty or absent (it is created); the root entry's metadata is applied
/// to `dir` itself. Needs the privileges to `chown` and `mknod`. On error `dir` holds a
/// partial tree and must be discarded by the caller.
pub fn materialize(blobs: &dyn Blobs, root: Digest, dir: &Path) -> Result<MaterializeStats, TreeError> {
    materialize_with(blobs, root, dir, None).map(|(stats, _)| stats)
}

/// Device nodes that [`materialize_without_devices`] wrote as empty regular files, by
/// the placeholder's `(dev, ino)`, with the tree's entry for each.
#[derive(Debug, Clone, Default)]
pub struct Placeholders(BTreeMap<(u64, u64), Entry>);

impl Placeholders {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The device a placeholder file stands for.
    fn device(&self, meta: &fs::Metadata) -> Option<&Entry> {
        if !meta.is_file() || meta.len() != 0 {
            return None;
        }
        self.0.get(&(meta.dev(), meta.ino()))
    }
}

/// [`materialize`] without the privileges a user namespace lacks: every owner must be
/// at most `max_id` (the ids the namespace maps; any other is
/// [`TreeError::UnmappedId`], naming the path), and character and block devices, which
/// only the host's root may create, become empty regular files with the device's
/// owner, mode and mtime. [`capture_with_placeholders`] turns the placeholders that are
/// still there back into the devices, so `capture(materialize(t)) == t` holds here too.
pub fn materialize_without_devices(
    blobs: &dyn Blobs,
    root: Digest,
    dir: &Path,
    max_id: u32,
) -> Result<(MaterializeStats, Placeholders), TreeError> {
    materialize_with(blobs, root, dir, Some(max_id))
}

/// [`materialize`], or with `max_id` [`materialize_without_devices`].
fn materialize_with(
    blobs: &dyn Blobs,
    root: Digest,
    dir: &Path,
    max_id: Option<u32>,
) -> Result<(MaterializeStats, Placeholders), TreeError> {
    match fs::read_dir(dir) {
        Ok(mut items) => {
            if items.next().is_some() {
                return Err(TreeError::Io {
                    what: "cannot materialize a tree into the non-empty directory",
                    path: dir.to_owned(),
                    source: io::Error::new(io::ErrorKind::DirectoryNotEmpty, "directory not empty"),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
        }
        Err(e) => return Err(io_error("cannot read", dir)(e)),
    }
    let entries: Vec<(TreePath, Entry)> = walk(blobs, root).collect::<Result<_, _>>()?;
    let host = |p: &TreePath| host_path(dir, p);
    let unprivileged = max_id.is_some();
    if let Some(max) = max_id {
        for (path, entry) in &entries {
            if let Some(id) = [entry.uid, entry.gid].into_iter().find(|&id| id > max) {
                return Err(TreeError::UnmappedId {
                    path: path.to_string(),
                    id,
                    max,
                });
            }
        }
    }

    // Directories first, in walk order (parents before children), private until their
    // metadata is applied at the end.
    for (path, entry) in &entries {
        if entry.is_dir() && !path.is_root() {
            let h = host(path);
            rfs::mkdirat(CWD, &h, Mode::from_raw_mode(0o700))
                .map_err(errno("cannot create directory", &h))?;
        }
    }
    // Everything that is not a directory or a hard link, in parallel: the contents are
    // the expensive part.
    let bytes: u64 = entries
        .par_iter()
        .filter(|(_, e)| !e.is_dir() && !matches!(e.kind, Kind::HardLink { .. }))
        .map(|(path, entry)| create_leaf(blobs, &host(path), entry, unprivileged))
        .try_reduce(|| 0, |a, b| Ok(a.saturating_add(b)))?;
    // Metadata of the leaves before their hard links exist: a link shares the inode, so
    // setting it once is enough, and linking cannot disturb it.
    entries
        .par_iter()
        .filter(|(_, e)| !e.is_dir() && !matches!(e.kind, Kind::HardLink { .. }))
        .try_for_each(|(path, entry)| apply_metadata(&host(path), entry))?;
    for (path, entry) in &entries {
        if let Kind::HardLink { target } = &entry.kind {
            let (h, t) = (host(path), host(target));
            rfs::linkat(CWD, &t, CWD, &h, AtFlags::empty()).map_err(errno("cannot create hard link", &h))?;
        }
    }
    let mut placeholders = Placeholders::default();
    if unprivileged {
        for (path, entry) in &entries {
            if matches!(entry.kind, Kind::CharDev { .. } | Kind::BlockDev { .. }) {
                let h = host(path);
                let meta = fs::symlink_metadata(&h).map_err(io_error("cannot read", &h))?;
                placeholders.0.insert((meta.dev(), meta.ino()), entry.clone());
            }
        }
    }
    // Directories last and deepest first, so no later creation touches their mtime.
    for (path, entry) in entries.iter().rev() {
        if entry.is_dir() {
            apply_metadata(&host(path), entry)?;
        }
    }
    Ok((
        MaterializeStats {
            entries: entries.len() as u64,
            bytes,
        },
        placeholders,
    ))
}

/// The host path of `path` below `dir`.
fn host_path(dir: &Path, path: &TreePath) -> PathBuf {
    let mut h = dir.to_path_buf();
    for c in path.components() {
        h.push(c);
    }
    h
}

/// Creates a non-directory, non-hard-link entry; returns the content bytes written.
/// `placeholder_devices`: a device becomes an empty regular file.
fn create_leaf(
    blobs: &dyn Blobs,
    h: &Path,
    entry: &Entry,
    placeholder_devices: bool,
) -> Result<u64, TreeError> {
    if placeholder_devices && matches!(entry.kind, Kind::CharDev { .. } | Kind::BlockDev { .. }) {
        File::create_new(h).map_err(io_error("cannot create", h))?;
        return Ok(0);
    }
    let node = |file_type, dev| {
        rfs::mknodat(CWD, h, file_type, Mode::from_raw_mode(0o600), dev).map_err(errno("cannot create", h))
    };
    match &entry.kind {
        Kind::File { digest, size } => {
            let mut out = File::create_new(h).map_err(io_error("cannot create", h))?;
            let mut content = blobs.open(digest)?;
            let written = io::copy(&mut content, &mut out).map_err(io_error("cannot write", h))?;
            if written != *size {
                return Err(TreeError::InvalidEntry {
                    path: h.display().to_string(),
                    reason: format!("the entry declares {size} bytes, its blob has {written}"),
                });
            }
            Ok(written)
        }
        Kind::Symlink { target } => {
            rfs::symlinkat(target.as_str(), CWD, h).map_err(errno("cannot create symlink", h))?;
            Ok(0)
        }
        Kind::CharDev { major, minor } => {
            node(FileType::CharacterDevice, rfs::makedev(*major, *minor)).map(|()| 0)
        }
        Kind::BlockDev { major, minor } => {
            node(FileType::BlockDevice, rfs::makedev(*major, *minor)).map(|()| 0)
        }
        Kind::Fifo => node(FileType::Fifo, 0).map(|()| 0),
        Kind::Socket => node(FileType::Socket, 0).map(|()| 0),
        Kind::Dir { .. } | Kind::HardLink { .. } => Ok(0),
    }
}

/// Owner, then mode, then xattrs, then mtime (see the module doc for why this order).
fn apply_metadata(h: &Path, entry: &Entry) -> Result<(), TreeError> {
    let symlink = matches!(entry.kind, Kind::Symlink { .. });
    rfs::chownat(
        CWD,
        h,
        Some(rfs::Uid::from_raw(entry.uid)),
        Some(rfs::Gid::from_raw(entry.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno("cannot change the owner of", h))?;
    // Linux has no mode on symlinks (always 0777): chmod would follow the link.
    if !symlink {
        rfs::chmodat(CWD, h, Mode::from_raw_mode(entry.mode), AtFlags::empty())
            .map_err(errno("cannot change the mode of", h))?;
    }
    for (name, value) in &entry.xattrs {
        rfs::lsetxattr(h, name.as_str(), value, rfs::XattrFlags::empty())
            .map_err(errno("cannot set an extended attribute on", h))?;
    }
    let t = Timespec {
        tv_sec: entry.mtime,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rfs::utimensat(CWD, h, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno("cannot set the mtime of", h))
}

/// One host object found by [`capture`]'s scan.
struct Scanned {
    path: TreePath,
    host: PathBuf,
    meta: fs::Metadata,
}

/// Reads the host directory `dir` into a tree with full fidelity; returns the tree
/// digest. `dir`'s own metadata becomes the root entry's.
///
/// Owners, modes (with setuid/setgid/sticky), xattrs, mtimes (whole seconds), device
/// numbers, fifos and sockets are kept; files sharing an inode become one file and
/// [`Kind::HardLink`]s to it. The result depends only on what is on disk, never on
/// directory order or thread scheduling.
pub fn capture(blobs: &dyn Blobs, dir: &Path) -> Result<Digest, TreeError> {
    capture_with_placeholders(blobs, dir, &Placeholders::default())
}

/// [`capture`] of a directory [`materialize_without_devices`] wrote: an empty regular
/// file that is one of `placeholders` (the same inode, so neither replaced nor written)
/// is captured as the device it stands for, with the owner, mode and mtime it has now.
/// A placeholder that was removed stays removed.
pub fn capture_with_placeholders(
    blobs: &dyn Blobs,
    dir: &Path,
    placeholders: &Placeholders,
) -> Result<Digest, TreeError> {
    let top = fs::symlink_metadata(dir).map_err(io_error("cannot read", dir))?;
    if !top.is_dir() {
        return Err(TreeError::Io {
            what: "not a directory:",
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "expected a directory"),
        });
    }
    let mut scanned = vec![Scanned {
        path: TreePath::root(),
        host: dir.to_owned(),
        meta: top,
    }];
    scan(dir, &TreePath::root(), 0, &mut scanned)?;
    scanned.sort_by(|a, b| a.path.cmp(&b.path));

    // Hard-link groups: the first path of an inode in walk order holds the file.
    let mut leaders: BTreeMap<(u64, u64), TreePath> = BTreeMap::new();
    let mut link_to: Vec<Option<TreePath>> = Vec::with_capacity(scanned.len());
    for s in &scanned {
        let is_linked_file = s.meta.is_file() && s.meta.nlink() > 1 && placeholders.device(&s.meta).is_none();
        let target = if is_linked_file {
            match leaders.entry((s.meta.dev(), s.meta.ino())) {
                std::collections::btree_map::Entry::Occupied(o) => Some(o.get().clone()),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(s.path.clone());
                    None
                }
            }
        } else {
            None
        };
        link_to.push(target);
    }

    let entries: Vec<Entry> = scanned
        .par_iter()
        .zip(link_to.par_iter())
        .map(|(s, link)| captured_entry(blobs, s, link.as_ref(), placeholders))
        .collect::<Result<_, _>>()?;
    let mut b = TreeBuilder::new();
    for (s, e) in scanned.into_iter().zip(entries) {
        b.insert(s.path, e)?;
    }
    b.finish(blobs)
}

/// Appends every object below `dir` (at tree path `at`) to `out`, without following
/// symlinks.
fn scan(dir: &Path, at: &TreePath, depth: usize, out: &mut Vec<Scanned>) -> Result<(), TreeError> {
    if depth >= MAX_DEPTH {
        return Err(TreeError::InvalidPath {
            path: dir.display().to_string(),
            reason: "it is deeper than 1024 components",
        });
    }
    for item in fs::read_dir(dir).map_err(io_error("cannot list", dir))? {
        let item = item.map_err(io_error("cannot list", dir))?;
        let host = item.path();
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| TreeError::NonUtf8 { path: host.clone() })?;
        if let Some(reason) = name_problem(&name) {
            return Err(TreeError::InvalidPath {
                path: host.display().to_string(),
                reason,
            });
        }
        let meta = fs::symlink_metadata(&host).map_err(io_error("cannot read", &host))?;
        let path = at.join(&name)?;
        let is_dir = meta.is_dir();
        out.push(Scanned {
            path: path.clone(),
            host: host.clone(),
            meta,
        });
        if is_dir {
            scan(&host, &path, depth + 1, out)?;
        }
    }
    Ok(())
}

/// The entry for one scanned object; regular files are stored (or linked to `link`).
fn captured_entry(
    blobs: &dyn Blobs,
    s: &Scanned,
    link: Option<&TreePath>,
    placeholders: &Placeholders,
) -> Result<Entry, TreeError> {
    let ft = s.meta.file_type();
    let rdev = s.meta.rdev();
    let (major, minor) = (rfs::major(rdev), rfs::minor(rdev));
    let kind = if let Some(device) = placeholders.device(&s.meta) {
        device.kind.clone()
    } else if let Some(target) = link {
        Kind::HardLink {
            target: target.clone(),
        }
    } else if ft.is_file() {
        let (digest, size) = blobs.put_file(&s.host)?;
        if size != s.meta.len() {
            return Err(TreeError::Io {
                what: "file changed while it was captured:",
                path: s.host.clone(),
                source: io::Error::other(format!("{} bytes when listed, {size} when read", s.meta.len())),
            });
        }
        Kind::File { digest, size }
    } else if ft.is_dir() {
        // The builder computes the listing from the children.
        Kind::Dir {
            digest: super::format::empty_dir_digest(),
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(&s.host)
            .map_err(io_error("cannot read symlink", &s.host))?
            .into_os_string()
            .into_string()
            .map_err(|_| TreeError::NonUtf8 { path: s.host.clone() })?;
        Kind::Symlink { target }
    } else if ft.is_char_device() {
        Kind::CharDev { major, minor }
    } else if ft.is_block_device() {
        Kind::BlockDev { major, minor }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else {
        return Err(TreeError::UnsupportedHostFile {
            path: s.host.clone(),
            kind: "file of unknown type",
        });
    };
    let mut e = Entry::new(kind, s.meta.mode() & 0o7777);
    e.uid = s.meta.uid();
    e.gid = s.meta.gid();
    e.mtime = s.meta.mtime();
    e.xattrs = read_xattrs(&s.host)?;
    Ok(e)
}

/// Every extended attribute of `h` (not following a symlink), by name.
fn read_xattrs(h: &Path) -> Result<BTreeMap<String, Vec<u8>>, TreeError> {
    let mut out = BTreeMap::new();
    let mut names = Vec::new();
    loop {
        let want = match rfs::llistxattr_query(h) {
            Ok(n) => n,
            // Filesystems without xattrs (some tmpfs, procfs) have none to keep.
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(out),
            Err(e) => return Err(errno("cannot list the extended attributes of", h)(e)),
        };
        if want == 0 {
            return Ok(out);
        }
        names.clear();
        names.reserve(want);
        match rfs::llistxattr(h, rustix::buffer::spare_capacity(&mut names)) {
            Ok(_) => break,
            // Grew between the two calls: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(errno("cannot list the extended attributes of", h)(e)),
        }
    }
    for raw in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(raw)
            .map_err(|_| TreeError::NonUtf8 { path: h.to_owned() })?
            .to_owned();
        let value = loop {
            let want = rfs::lgetxattr_query(h, name.as_str())
                .map_err(errno("cannot read an extended attribute of", h))?;
            let mut value = Vec::with_capacity(want);
            match rfs::lgetxattr(h, name.as_str(), rustix::buffer::spare_capacity(&mut value)) {
                Ok(_) => break value,
                Err(rustix::io::Errno::RANGE) => continue,
                Err(e) => return Err(errno("cannot read an extended attribute of", h)(e)),
            }
        };
        out.insert(name, value);
    }
    Ok(out)
}

fn io_error<'p>(what: &'static str, path: &'p Path) -> impl Fn(io::Error) -> TreeError + 'p {
    move |source| TreeError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn errno<'p>(what: &'static str, path: &'p Path) -> impl Fn(rustix::io::Errno) -> TreeError + 'p {
    move |e| TreeError::Io {
        what,
        path: path.to_owned(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemBlobs;

    fn p(s: &str) -> TreePath {
        s.parse().unwrap()
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// A tree with every kind of entry and every piece of metadata that is easy to lose.
    fn every_kind(blobs: &MemBlobs) -> Digest {
        let f = |content: &[u8], mode: u32| {
            let d = blobs.put(content).unwrap();
            Entry::file(d, content.len() as u64, mode)
        };
        let mut b = TreeBuilder::new();
        let mut root = Entry::dir(0o755);
        root.mtime = 1_700_000_000;
        b.insert(TreePath::root(), root).unwrap();
        let mut ping = f(b"\x7fELF ping", 0o755);
        ping.xattrs.insert(
            "security.capability".into(),
            vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        ping.mtime = 1_600_000_000;
        b.insert(p("/usr/bin/ping"), ping).unwrap();
        let mut su = f(b"su", 0o4755);
        su.gid = 42;
        b.insert(p("/usr/bin/su"), su).unwrap();
        let mut wall = f(b"wall", 0o2755);
        wall.gid = 5;
        b.insert(p("/usr/bin/wall"), wall).unwrap();
        let mut tmp = Entry::dir(0o1777);
        tmp.mtime = 12345;
        b.insert(p("/tmp"), tmp).unwrap();
        let mut home = Entry::dir(0o750);
        home.uid = 1000;
        home.gid = 1000;
        home.xattrs.insert("user.note".into(), b"kept".to_vec());
        b.insert(p("/home/pi"), home).unwrap();
        let mut secret = f(b"s3cret", 0o600);
        secret.uid = 1000;
        secret.gid = 1000;
        secret.mtime = 7;
        b.insert(p("/home/pi/.secret"), secret).unwrap();
        b.insert(p("/etc/empty"), f(b"", 0o644)).unwrap();
        b.insert(p("/etc/big"), f(&vec![0xa5; 3 << 20], 0o644)).unwrap();
        let mut link = Entry::symlink("../usr/bin/ping");
        link.uid = 3;
        link.mtime = 99;
        b.insert(p("/etc/alt-ping"), link).unwrap();
        b.insert(p("/etc/dangling"), Entry::symlink("/nowhere/at/all"))
            .unwrap();
        b.insert(
            p("/dev/null"),
            Entry::new(Kind::CharDev { major: 1, minor: 3 }, 0o666),
        )
        .unwrap();
        b.insert(
            p("/dev/loop9"),
            Entry::new(Kind::BlockDev { major: 7, minor: 9 }, 0o660),
        )
        .unwrap();
        b.insert(
            p("/dev/big"),
            Entry::new(
                Kind::CharDev {
                    major: 300,
                    minor: 70000,
                },
                0o600,
            ),
        )
        .unwrap();
        b.insert(p("/run/initctl"), Entry::new(Kind::Fifo, 0o600))
            .unwrap();
        b.insert(p("/run/sock"), Entry::new(Kind::Socket, 0o755)).unwrap();
        let hard = |t: &str| Entry::new(Kind::HardLink { target: p(t) }, 0o755);
        b.insert(p("/usr/bin/a-ping"), hard("/usr/bin/ping")).unwrap();
        b.insert(p("/sbin/ping2"), hard("/usr/bin/ping")).unwrap();
        b.finish(blobs).unwrap()
    }

    #[test]
    fn every_kind_round_trips_through_a_host_directory() {
        if !is_root() {
            crate::oracle::unavailable("materialize needs root to chown and mknod");
            return;
        }
        let blobs = MemBlobs::new();
        let root = every_kind(&blobs);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("root");
        let stats = materialize(&blobs, root, &dir).unwrap();
        assert_eq!(stats.entries, 25);
        assert_eq!(stats.bytes, 9 + 2 + 4 + 6 + (3 << 20));

        // The kernel's view, independent of `capture`.
        let m = fs::symlink_metadata(dir.join("usr/bin/su")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.gid()), (0o4755, 42));
        let m = fs::symlink_metadata(dir.join("sbin/ping2")).unwrap();
        assert_eq!(
            m.ino(),
            fs::symlink_metadata(dir.join("usr/bin/ping")).unwrap().ino()
        );
        assert_eq!(m.nlink(), 3);
        let m = fs::symlink_metadata(dir.join("dev/big")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!((rfs::major(m.rdev()), rfs::minor(m.rdev())), (300, 70000));
        assert_eq!(fs::symlink_metadata(&dir).unwrap().mtime(), 1_700_000_000);
        assert_eq!(fs::symlink_metadata(dir.join("etc/alt-ping")).unwrap().uid(), 3);
        let cap = read_xattrs(&dir.join("usr/bin/ping")).unwrap();
        assert_eq!(cap["security.capability"].len(), 20, "capability survived chown");

        let blobs2 = MemBlobs::new();
        assert_eq!(
            capture(&blobs2, &dir).unwrap(),
            root,
            "capture(materialize(t)) == t"
        );
        // Materializing into a non-empty directory is refused.
        assert!(matches!(
            materialize(&blobs, root, &dir),
            Err(TreeError::Io { .. })
        ));
    }

    #[test]
    fn capture_forms_hard_link_groups_by_inode_in_walk_order() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("b")).unwrap();
        fs::write(d.join("z"), b"same").unwrap();
        fs::hard_link(d.join("z"), d.join("b/y")).unwrap();
        fs::hard_link(d.join("z"), d.join("a")).unwrap();
        fs::write(d.join("c"), b"same").unwrap();
        let blobs = MemBlobs::new();
        let root = capture(&blobs, d).unwrap();
        let t = crate::tree::Tree::open(&blobs, root);
        assert!(matches!(
            t.lookup(&p("/a")).unwrap().unwrap().kind,
            Kind::File { .. }
        ));
        for l in ["/b/y", "/z"] {
            assert_eq!(
                t.lookup(&p(l)).unwrap().unwrap().kind,
                Kind::HardLink { target: p("/a") },
                "{l}"
            );
        }
        // Equal contents in another inode are a separate file, not a link.
        assert!(matches!(
            t.lookup(&p("/c")).unwrap().unwrap().kind,
            Kind::File { .. }
        ));
        // Stable: the same directory captures to the same digest.
        assert_eq!(capture(&blobs, d).unwrap(), root);
    }

    #[test]
    fn capture_refuses_a_file_and_keeps_owner_mode_and_mtime() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"x").unwrap();
        let blobs = MemBlobs::new();
        assert!(capture(&blobs, &f).is_err());
        rfs::chmodat(CWD, &f, Mode::from_raw_mode(0o640), AtFlags::empty()).unwrap();
        let t = Timespec {
            tv_sec: 86400,
            tv_nsec: 5,
        };
        rfs::utimensat(
            CWD,
            &f,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::empty(),
        )
        .unwrap();
        let root = capture(&blobs, tmp.path()).unwrap();
        let e = crate::tree::lookup(&blobs, root, &p("/f")).unwrap().unwrap();
        assert_eq!((e.mode, e.mtime), (0o640, 86400));
        assert_eq!(e.uid, fs::metadata(&f).unwrap().uid());
    }
}
