//! Turning host directories, host files and tar archives into trees.
//!
//! Imports are where the host's accidents (umask, owner, checkout time, directory order)
//! would leak into a build, so they are normalised away here: a host directory imports
//! to the same tree on every machine. Archives are untrusted input: member names are
//! normalised and anything that could escape the tree (`..`) is rejected, never followed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use rayon::prelude::*;
use w4b_cache::Digest;

use super::path::name_problem;
use super::{store_dir, store_root, Blobs, Entry, Kind, TreeBuilder, TreeError, TreePath, MAX_DEPTH};

/// Archive members larger than this are buffered in a temporary file, not memory.
const SPOOL_THRESHOLD: u64 = 16 << 20;

/// How host files are described in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Owner of every imported entry.
    pub uid: u32,
    pub gid: u32,
    /// Mode of every regular file; `None`: `0755` if the host file has any execute bit,
    /// else `0644`.
    pub file_mode: Option<u32>,
    /// Mode of every directory, the top one included.
    pub dir_mode: u32,
    /// Modification time of every entry (the target's epoch).
    pub mtime: i64,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            uid: 0,
            gid: 0,
            file_mode: None,
            dir_mode: 0o755,
            mtime: 0,
        }
    }
}

impl ImportOptions {
    fn check(&self) -> Result<(), TreeError> {
        let modes = [self.file_mode.unwrap_or(0), self.dir_mode];
        if modes.iter().any(|m| m & !0o7777 != 0) {
            return Err(TreeError::InvalidEntry {
                path: "/".into(),
                reason: "import modes may only set the bits 0o7777".into(),
            });
        }
        Ok(())
    }

    fn file_mode(&self, host_mode: u32) -> u32 {
        self.file_mode
            .unwrap_or(if host_mode & 0o111 != 0 { 0o755 } else { 0o644 })
    }

    fn owned(&self, mut entry: Entry) -> Entry {
        entry.uid = self.uid;
        entry.gid = self.gid;
        entry.mtime = self.mtime;
        entry
    }
}

/// Imports the host directory `host_dir` (followed if it is itself a symlink) as a tree;
/// returns the tree digest, whose root carries `opts.dir_mode` and owner.
///
/// The result depends only on names, contents, execute bits and symlink targets: modes
/// come from `opts`, owners from `opts`, every mtime is `opts.mtime`, children are sorted by name.
/// Symlinks inside are kept as symlinks with their targets as-is (never followed). Host
/// hard links become independent files. Fifos, sockets and devices are rejected.
/// File contents are hashed in parallel; the result does not depend on scheduling.
pub fn import_dir(blobs: &dyn Blobs, host_dir: &Path, opts: &ImportOptions) -> Result<Digest, TreeError> {
    opts.check()?;
    let meta = fs::metadata(host_dir).map_err(io_error("cannot read", host_dir))?;
    if !meta.is_dir() {
        return Err(TreeError::Io {
            what: "not a directory:",
            path: host_dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "expected a directory"),
        });
    }
    let listing = import_listing(blobs, host_dir, opts, 0)?;
    let root = opts.owned(Entry::new(Kind::Dir { digest: listing }, opts.dir_mode));
    store_root(blobs, &root)
}

/// Imports one host file (followed if it is a symlink) as a regular-file entry, with the
/// mode rule, owner and mtime of [`import_dir`].
pub fn import_file(blobs: &dyn Blobs, host_file: &Path, opts: &ImportOptions) -> Result<Entry, TreeError> {
    opts.check()?;
    let meta = fs::metadata(host_file).map_err(io_error("cannot read", host_file))?;
    if !meta.is_file() {
        return Err(TreeError::UnsupportedHostFile {
            path: host_file.to_owned(),
            kind: host_kind(&meta.file_type()),
        });
    }
    file_entry(blobs, host_file, meta.permissions().mode(), opts)
}

fn file_entry(
    blobs: &dyn Blobs,
    path: &Path,
    host_mode: u32,
    opts: &ImportOptions,
) -> Result<Entry, TreeError> {
    let (digest, size) = blobs.put_file(path)?;
    Ok(opts.owned(Entry::file(digest, size, opts.file_mode(host_mode))))
}

fn import_listing(
    blobs: &dyn Blobs,
    dir: &Path,
    opts: &ImportOptions,
    depth: usize,
) -> Result<Digest, TreeError> {
    if depth >= MAX_DEPTH {
        return Err(TreeError::InvalidPath {
            path: dir.display().to_string(),
            reason: "it is deeper than 1024 components",
        });
    }
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(io_error("cannot list", dir))? {
        let item = item.map_err(io_error("cannot list", dir))?;
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| TreeError::NonUtf8 { path: item.path() })?;
        if let Some(reason) = name_problem(&name) {
            return Err(TreeError::InvalidPath {
                path: item.path().display().to_string(),
                reason,
            });
        }
        names.push(name);
    }
    // Byte order of UTF-8 names, whatever order the host filesystem returned.
    names.sort_unstable();
    let children: Vec<Result<Entry, TreeError>> = names
        .par_iter()
        .map(|name| import_child(blobs, &dir.join(name), opts, depth))
        .collect();
    let mut listing = BTreeMap::new();
    for (name, child) in names.into_iter().zip(children) {
        listing.insert(name, child?);
    }
    store_dir(blobs, &listing)
}

fn import_child(
    blobs: &dyn Blobs,
    path: &Path,
    opts: &ImportOptions,
    depth: usize,
) -> Result<Entry, TreeError> {
    let meta = fs::symlink_metadata(path).map_err(io_error("cannot read", path))?;
    let kind = meta.file_type();
    if kind.is_file() {
        file_entry(blobs, path, meta.permissions().mode(), opts)
    } else if kind.is_dir() {
        let digest = import_listing(blobs, path, opts, depth + 1)?;
        Ok(opts.owned(Entry::new(Kind::Dir { digest }, opts.dir_mode)))
    } else if kind.is_symlink() {
        let target = fs::read_link(path)
            .map_err(io_error("cannot read symlink", path))?
            .into_os_string()
            .into_string()
            .map_err(|_| TreeError::NonUtf8 {
                path: path.to_owned(),
            })?;
        Ok(opts.owned(Entry::symlink(target)))
    } else {
        Err(TreeError::UnsupportedHostFile {
            path: path.to_owned(),
            kind: host_kind(&kind),
        })
    }
}

fn host_kind(kind: &fs::FileType) -> &'static str {
    if kind.is_dir() {
        "directory"
    } else if kind.is_symlink() {
        "symlink"
    } else if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

fn io_error<'p>(what: &'static str, path: &'p Path) -> impl Fn(io::Error) -> TreeError + 'p {
    move |source| TreeError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Reads a tar archive (ustar, pax, GNU long names) into a tree; returns its digest.
///
/// Member names are normalised (`./`, a leading `/`, `.` and empty components dropped;
/// a trailing `/` ignored); a `..` component is an error, as is a hard link whose
/// target escapes the same way. `./` or `/` sets the root's metadata. Later members
/// replace earlier ones of the same name, as extraction would. Pax `SCHILY.xattr.*`
/// records become xattrs and pax `uid`/`gid`/`mtime` override the header. Sparse files
/// and other exotic member types are rejected; pax global headers are ignored.
pub fn import_tar(blobs: &dyn Blobs, reader: impl Read) -> Result<Digest, TreeError> {
    let mut builder = TreeBuilder::new();
    read_tar_into(blobs, reader, &mut builder, &|p| Some(p))?;
    builder.finish(blobs)
}

/// Reads a tar archive's members into `builder` as [`import_tar`] does, each member's
/// path (and a hard link's target) passed through `place` first: `None` skips the member.
/// This is how a package's `data.tar` is extracted into a merged-`/usr` root, where
/// `bin/…` lands in `usr/bin/…` and the member `bin/` itself is the symlink's.
pub fn read_tar_into(
    blobs: &dyn Blobs,
    reader: impl Read,
    builder: &mut TreeBuilder,
    place: &dyn Fn(TreePath) -> Option<TreePath>,
) -> Result<(), TreeError> {
    let mut archive = tar::Archive::new(reader);
    for member in archive.entries().map_err(TreeError::TarRead)? {
        let mut member = member.map_err(TreeError::TarRead)?;
        let raw_name = member.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let bad = |reason: String| TreeError::TarMember {
            path: name.escape_debug().to_string(),
            reason,
        };
        let kind = member.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let text = std::str::from_utf8(&raw_name).map_err(|_| bad("the name is not UTF-8".into()))?;
        let Some(path) = place(member_path(text).map_err(|reason| bad(reason.into()))?) else {
            continue;
        };

        let header = member.header();
        let mode = header.mode().map_err(|e| bad(format!("bad mode: {e}")))? & 0o7777;
        let mut uid = header.uid().map_err(|e| bad(format!("bad uid: {e}")))?;
        let mut gid = header.gid().map_err(|e| bad(format!("bad gid: {e}")))?;
        let mut mtime = i64::try_from(header.mtime().map_err(|e| bad(format!("bad mtime: {e}")))?)
            .map_err(|_| bad("mtime out of range".into()))?;
        let mut xattrs = BTreeMap::new();
        if let Some(records) = member.pax_extensions().map_err(TreeError::TarRead)? {
            for record in records {
                let record = record.map_err(TreeError::TarRead)?;
                let key = record.key().map_err(|_| bad("a pax key is not UTF-8".into()))?;
                let number = || {
                    record
                        .value()
                        .ok()
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| bad(format!("pax `{key}` is not a number")))
                };
                if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(xattr.to_owned(), record.value_bytes().to_vec());
                } else if key == "uid" {
                    uid = u64::try_from(number()?).map_err(|_| bad("negative uid".into()))?;
                } else if key == "gid" {
                    gid = u64::try_from(number()?).map_err(|_| bad("negative gid".into()))?;
                } else if key == "mtime" {
                    mtime = number()?;
                }
            }
        }
        let uid = u32::try_from(uid).map_err(|_| bad("uid does not fit 32 bits".into()))?;
        let gid = u32::try_from(gid).map_err(|_| bad("gid does not fit 32 bits".into()))?;

        let link_target = |member: &tar::Entry<'_, _>| -> Result<String, TreeError> {
            let target = member
                .link_name_bytes()
                .ok_or_else(|| bad("the link target is missing".into()))?;
            String::from_utf8(target.into_owned()).map_err(|_| bad("the link target is not UTF-8".into()))
        };
        let device = |member: &tar::Entry<'_, _>| -> Result<(u32, u32), TreeError> {
            let h = member.header();
            let major = h.device_major().map_err(|e| bad(format!("bad devmajor: {e}")))?;
            let minor = h.device_minor().map_err(|e| bad(format!("bad devminor: {e}")))?;
            Ok((major.unwrap_or(0), minor.unwrap_or(0)))
        };
        let kind = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (digest, size) = store_member(blobs, &mut member).map_err(|e| match e {
                    MemberError::Io(e) => bad(format!("cannot read its content: {e}")),
                    MemberError::Tree(e) => e,
                })?;
                Kind::File { digest, size }
            }
            tar::EntryType::Directory => Kind::Dir {
                digest: super::format::empty_dir_digest(),
            },
            tar::EntryType::Symlink => Kind::Symlink {
                target: link_target(&member)?,
            },
            tar::EntryType::Link => {
                let target = link_target(&member)?;
                let target = member_path(&target).map_err(|reason| {
                    bad(format!("hard link target `{}`: {reason}", target.escape_debug()))
                })?;
                let target =
                    place(target).ok_or_else(|| bad("the hard link's target is not placed".into()))?;
                Kind::HardLink { target }
            }
            tar::EntryType::Char => {
                let (major, minor) = device(&member)?;
                Kind::CharDev { major, minor }
            }
            tar::EntryType::Block => {
                let (major, minor) = device(&member)?;
                Kind::BlockDev { major, minor }
            }
            tar::EntryType::Fifo => Kind::Fifo,
            other => return Err(bad(format!("unsupported member type {other:?}"))),
        };
        let entry = Entry {
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };
        if path.is_root() && !entry.is_dir() {
            return Err(bad("the archive root must be a directory".into()));
        }
        entry.validate(&path)?;
        builder.replace(path, entry);
    }
    Ok(())
}

/// Normalises a member name into a tree path.
fn member_path(name: &str) -> Result<TreePath, &'static str> {
    let mut components = Vec::new();
    for component in name.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("`..` components would escape the tree"),
            other => {
                if let Some(reason) = name_problem(other) {
                    return Err(reason);
                }
                components.push(other);
            }
        }
    }
    TreePath::from_components(&components).map_err(|_| "the path is too deep")
}

enum MemberError {
    Io(io::Error),
    Tree(TreeError),
}

/// Stores a member's content, through a temporary file when it is large.
fn store_member(blobs: &dyn Blobs, member: &mut dyn Read) -> Result<(Digest, u64), MemberError> {
    let mut head = Vec::new();
    let read = member
        .take(SPOOL_THRESHOLD + 1)
        .read_to_end(&mut head)
        .map_err(MemberError::Io)?;
    if read as u64 <= SPOOL_THRESHOLD {
        let digest = blobs.put(&head).map_err(MemberError::Tree)?;
        return Ok((digest, head.len() as u64));
    }
    let mut spool = tempfile::NamedTempFile::new().map_err(MemberError::Io)?;
    spool.write_all(&head).map_err(MemberError::Io)?;
    io::copy(member, spool.as_file_mut()).map_err(MemberError::Io)?;
    spool.flush().map_err(MemberError::Io)?;
    blobs.put_file(spool.path()).map_err(MemberError::Tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{walk, MemBlobs};
    use std::fs::File;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, SystemTime};

    fn populate(dir: &Path, umask_like: u32, time: SystemTime) {
        let mode = |m: u32| fs::Permissions::from_mode(m & !umask_like);
        fs::create_dir_all(dir.join("etc/ssh")).unwrap();
        fs::create_dir_all(dir.join("usr/bin")).unwrap();
        fs::write(dir.join("etc/hostname"), b"north\n").unwrap();
        fs::write(dir.join("etc/ssh/sshd_config"), b"PermitRootLogin no\n").unwrap();
        fs::write(dir.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(dir.join("etc/hostname"), mode(0o666)).unwrap();
        fs::set_permissions(dir.join("etc/ssh/sshd_config"), mode(0o600)).unwrap();
        fs::set_permissions(dir.join("usr/bin/tool"), mode(0o777)).unwrap();
        fs::set_permissions(dir.join("etc"), mode(0o777)).unwrap();
        symlink("../usr/bin/tool", dir.join("etc/alt")).unwrap();
        for f in ["etc/hostname", "etc/ssh/sshd_config", "usr/bin/tool"] {
            File::options()
                .write(true)
                .open(dir.join(f))
                .unwrap()
                .set_modified(time)
                .unwrap();
        }
    }

    #[test]
    fn import_dir_is_deterministic_across_hosts() {
        let blobs = MemBlobs::new();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        populate(
            a.path(),
            0o022,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        );
        populate(
            b.path(),
            0o077,
            SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
        );
        let opts = ImportOptions::default();
        let ra = import_dir(&blobs, a.path(), &opts).unwrap();
        let rb = import_dir(&blobs, b.path(), &opts).unwrap();
        assert_eq!(ra, rb);

        let listed: Vec<String> = walk(&blobs, ra)
            .map(|r| {
                let (p, e) = r.unwrap();
                format!("{p} {:o} {}:{} {}", e.mode, e.uid, e.gid, e.mtime)
            })
            .collect();
        assert_eq!(
            listed,
            [
                "/ 755 0:0 0",
                "/etc 755 0:0 0",
                "/etc/alt 777 0:0 0",
                "/etc/hostname 644 0:0 0",
                "/etc/ssh 755 0:0 0",
                "/etc/ssh/sshd_config 644 0:0 0",
                "/usr 755 0:0 0",
                "/usr/bin 755 0:0 0",
                "/usr/bin/tool 755 0:0 0",
            ]
        );
        let alt = crate::tree::lookup(&blobs, ra, &"/etc/alt".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            alt.kind,
            Kind::Symlink {
                target: "../usr/bin/tool".into()
            }
        );

        // Options change the result.
        let owned = ImportOptions {
            uid: 1000,
            gid: 1000,
            file_mode: Some(0o600),
            dir_mode: 0o700,
            mtime: 0,
        };
        let rc = import_dir(&blobs, a.path(), &owned).unwrap();
        assert_ne!(rc, ra);
        let host = crate::tree::lookup(&blobs, rc, &"/etc/hostname".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((host.mode, host.uid, host.gid), (0o600, 1000, 1000));
        // Content changes the result.
        fs::write(a.path().join("etc/hostname"), b"south\n").unwrap();
        assert_ne!(import_dir(&blobs, a.path(), &opts).unwrap(), ra);
    }

    #[test]
    fn import_rejects_special_files_and_bad_options() {
        let blobs = MemBlobs::new();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = import_dir(&blobs, dir.path(), &ImportOptions::default()).unwrap_err();
        assert!(
            matches!(&err, TreeError::UnsupportedHostFile { kind: "socket", path } if path == &sock),
            "{err:?}"
        );
        assert!(import_file(&blobs, &sock, &ImportOptions::default()).is_err());
        let bad = ImportOptions {
            dir_mode: 0o40755,
            ..ImportOptions::default()
        };
        assert!(import_dir(&blobs, dir.path(), &bad).is_err());
        assert!(import_dir(&blobs, &dir.path().join("missing"), &ImportOptions::default()).is_err());
    }

    #[test]
    fn import_file_uses_the_exec_bit() {
        let blobs = MemBlobs::new();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("run");
        fs::write(&f, b"abc").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o700)).unwrap();
        let e = import_file(&blobs, &f, &ImportOptions::default()).unwrap();
        assert_eq!(e, Entry::file(Digest::of(b"abc"), 3, 0o755));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            import_file(&blobs, &f, &ImportOptions::default()).unwrap().mode,
            0o644
        );
    }

    #[test]
    fn member_names_are_normalised_and_escapes_rejected() {
        assert_eq!(member_path("./etc/x").unwrap().to_string(), "/etc/x");
        assert_eq!(member_path("/etc//x/").unwrap().to_string(), "/etc/x");
        assert_eq!(member_path("./").unwrap().to_string(), "/");
        assert_eq!(member_path("a/./b").unwrap().to_string(), "/a/b");
        assert!(member_path("../etc/passwd").is_err());
        assert!(member_path("a/../../b").is_err());
    }

    /// A tar built from raw ustar headers, so hostile names are possible, and the
    /// offsets of its headers.
    fn raw_tar_at(members: &[(&str, u8, &[u8], &str)]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut headers = Vec::new();
        for (name, kind, data, link) in members {
            let mut h = tar::Header::new_ustar();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::new(*kind));
            h.set_cksum();
            headers.push(out.len());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        (out, headers)
    }

    fn raw_tar(members: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
        raw_tar_at(members).0
    }

    /// Rewrites the checksum of the header at `at`, so mutations get past it.
    fn fix_checksum(bytes: &mut [u8], at: usize) {
        let block = &mut bytes[at..at + 512];
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn hostile_archives_are_rejected() {
        let blobs = MemBlobs::new();
        for (members, why) in [
            (vec![("../escape", b'0', &b"x"[..], "")], "escape the tree"),
            (vec![("a/../../escape", b'0', &b"x"[..], "")], "escape the tree"),
            (
                vec![("ok", b'0', &b"x"[..], ""), ("link", b'1', &b""[..], "../ok")],
                "escape the tree",
            ),
            (
                vec![("f", b'0', &b"x"[..], ""), ("f/below", b'0', &b"x"[..], "")],
                "needs `/f` to be a directory",
            ),
            (vec![("./", b'0', &b"x"[..], "")], "root must be a directory"),
            (vec![("sparse", b'S', &b""[..], "")], "reading the tar archive"),
            (vec![("unknown", b'Z', &b""[..], "")], "unsupported member type"),
            (vec![("dangling", b'1', &b""[..], "nothing")], "does not exist"),
        ] {
            let bytes = raw_tar(&members);
            let err = import_tar(&blobs, &bytes[..]).expect_err("accepted");
            assert!(err.to_string().contains(why), "{members:?}: {err}");
        }
        let ok = raw_tar(&[("./a/b", b'0', b"x", ""), ("a/c", b'2', b"", "/etc/passwd")]);
        let root = import_tar(&blobs, &ok[..]).unwrap();
        assert_eq!(walk(&blobs, root).count(), 4);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn import_tar_never_panics_on_random_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let blobs = MemBlobs::new();
            let _ = import_tar(&blobs, &bytes[..]);
        }

        #[test]
        fn import_tar_never_panics_on_mutated_archives(
            edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..16),
            cut in 0usize..5000,
            fix in proptest::prelude::any::<bool>(),
        ) {
            let (mut bytes, headers) = raw_tar_at(&[
                ("./", b'5', b"", ""),
                ("./etc/hostname", b'0', b"north\n", ""),
                ("./etc/alt", b'2', b"", "hostname"),
                ("./etc/hard", b'1', b"", "./etc/hostname"),
                ("./dev/null", b'3', b"", ""),
            ]);
            for (at, byte) in edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if fix {
                for at in headers {
                    fix_checksum(&mut bytes, at);
                }
            }
            bytes.truncate(cut.min(bytes.len()));
            let blobs = MemBlobs::new();
            let _ = import_tar(&blobs, &bytes[..]);
        }
    }
}
