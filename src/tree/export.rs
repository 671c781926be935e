//! Writing a tree as a normalised tar (and tar.zst) archive.
//!
//! This adapts a [`walk`] to [`crate::formats::tar`]: members in walk order, named
//! `./` (the root), `./dir/` and `./dir/file`; file contents streamed from the store one
//! at a time, so no file is ever held in memory whole. Sockets have no tar form and are
//! left out (as GNU tar does). A hard link must name a regular file earlier in the walk,
//! which [`TreeBuilder`](super::TreeBuilder) guarantees for the trees it builds.

use std::collections::BTreeSet;
use std::io::{self, Write};

use w4b_cache::Digest;

use crate::formats::tar::{TarEntry, TarKind, TarWriter};

use super::{walk, Blobs, Entry, Kind, TreeError, TreePath};

/// Writes the tree `root` as a tar archive to `out`, mtimes clamped to `epoch`; returns
/// the sink. On error the output is incomplete and must be discarded.
pub fn export_tar<W: Write>(blobs: &dyn Blobs, root: Digest, epoch: u64, out: W) -> Result<W, TreeError> {
    let mut tar = TarWriter::new(out, epoch);
    let mut files: BTreeSet<TreePath> = BTreeSet::new();
    for item in walk(blobs, root) {
        let (path, entry) = item?;
        let Some(mut member) = member(&path, &entry) else {
            continue;
        };
        match &entry.kind {
            Kind::File { digest, .. } => {
                let mut content = blobs.open(digest)?;
                tar.append(&member, &mut content)?;
                files.insert(path);
            }
            Kind::HardLink { target } => {
                if !files.contains(target) {
                    return Err(TreeError::BadHardLink {
                        path: path.to_string(),
                        target: target.to_string(),
                        reason: "is not a regular file earlier in the tree",
                    });
                }
                member.link_target = member_name(target, false);
                tar.append(&member, &mut io::empty())?;
            }
            _ => tar.append(&member, &mut io::empty())?,
        }
    }
    Ok(tar.finish()?)
}

/// [`export_tar`] compressed with zstd at `level`, single-threaded so the bytes do not
/// depend on the machine; returns the sink.
pub fn export_tar_zst<W: Write>(
    blobs: &dyn Blobs,
    root: Digest,
    epoch: u64,
    level: i32,
    out: W,
) -> Result<W, TreeError> {
    let mut encoder = zstd::stream::Encoder::new(out, level).map_err(TreeError::Compress)?;
    encoder.include_checksum(true).map_err(TreeError::Compress)?;
    let encoder = export_tar(blobs, root, epoch, encoder)?;
    encoder.finish().map_err(TreeError::Compress)
}

/// `./` for the root, `./a/b/` for directories, `./a/b` otherwise.
fn member_name(path: &TreePath, dir: bool) -> String {
    let mut name = String::from(".");
    for component in path.components() {
        name.push('/');
        name.push_str(component);
    }
    if dir {
        name.push('/');
    }
    name
}

/// The tar description of an entry; `None` for sockets.
fn member(path: &TreePath, entry: &Entry) -> Option<TarEntry> {
    let (kind, size, link_target, dev) = match &entry.kind {
        Kind::File { size, .. } => (TarKind::File, *size, String::new(), (0, 0)),
        Kind::Dir { .. } => (TarKind::Dir, 0, String::new(), (0, 0)),
        Kind::Symlink { target } => (TarKind::Symlink, 0, target.clone(), (0, 0)),
        Kind::HardLink { .. } => (TarKind::HardLink, 0, String::new(), (0, 0)),
        Kind::CharDev { major, minor } => (TarKind::CharDev, 0, String::new(), (*major, *minor)),
        Kind::BlockDev { major, minor } => (TarKind::BlockDev, 0, String::new(), (*major, *minor)),
        Kind::Fifo => (TarKind::Fifo, 0, String::new(), (0, 0)),
        Kind::Socket => return None,
    };
    Some(TarEntry {
        path: member_name(path, kind == TarKind::Dir),
        kind,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
        size,
        link_target,
        dev_major: dev.0,
        dev_minor: dev.1,
        xattrs: entry.xattrs.clone(),
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // GNU tar is the oracle.
mod tests {
    use super::*;
    use crate::tree::import::import_tar;
    use crate::tree::{MemBlobs, TreeBuilder};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::process::Command;

    fn p(s: &str) -> TreePath {
        s.parse().unwrap()
    }

    /// A small tree with every kind of entry and the tricky cases.
    fn fixture(blobs: &dyn Blobs, with_devices: bool) -> Digest {
        let put = |bytes: &[u8]| blobs.put(bytes).unwrap();
        let mut b = TreeBuilder::new();
        let mut ins = |path: &str, entry: Entry| b.insert(p(path), entry).unwrap();
        ins(
            "/",
            Entry {
                mtime: 1_600_000_000,
                ..Entry::dir(0o755)
            },
        );
        ins(
            "/etc/hostname",
            Entry {
                mtime: 2_000_000_000,
                ..Entry::file(put(b"north\n"), 6, 0o644)
            },
        );
        let mut secret = Entry::file(put(b"wg-key\n"), 7, 0o600);
        secret.uid = 1000;
        secret.gid = 1001;
        ins("/etc/wireguard/wg0.key", secret);
        let mut ping = Entry::file(put(b"\x7fELF ping"), 9, 0o4755);
        ping.xattrs
            .insert("security.capability".into(), vec![1, 0, 0, 2, 0, 0x20, 0, 0]);
        ping.mtime = 1_500_000_000;
        ins("/usr/bin/ping", ping);
        ins(
            "/usr/bin/ping6",
            Entry::new(
                Kind::HardLink {
                    target: p("/usr/bin/ping"),
                },
                0o4755,
            ),
        );
        ins("/usr/bin/sh", Entry::symlink("dash"));
        ins("/tmp", Entry::dir(0o1777));
        let long = format!("/usr/share/{}/{}", "d".repeat(90), "f".repeat(60));
        ins(&long, Entry::file(put(b""), 0, 0o644));
        ins(
            "/usr/share/zoneinfo/Europe/Zürich",
            Entry::file(put(b"tz"), 2, 0o644),
        );
        ins("/run/fifo", Entry::new(Kind::Fifo, 0o600));
        ins("/run/sock", Entry::new(Kind::Socket, 0o600));
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        ins("/var/big.bin", Entry::file(put(&big), big.len() as u64, 0o644));
        if with_devices {
            ins(
                "/dev/null",
                Entry::new(Kind::CharDev { major: 1, minor: 3 }, 0o666),
            );
            ins(
                "/dev/mmcblk0",
                Entry::new(Kind::BlockDev { major: 179, minor: 0 }, 0o660),
            );
        }
        b.finish(blobs).unwrap()
    }

    const EPOCH: u64 = 1_700_000_000;

    fn gnu_tar() -> bool {
        let ok = Command::new("tar")
            .arg("--version")
            .output()
            .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GNU tar"))
            .unwrap_or(false);
        if !ok {
            crate::oracle::unavailable("GNU `tar` is not installed");
        }
        ok
    }

    #[test]
    fn export_is_deterministic_and_round_trips() {
        let blobs = MemBlobs::new();
        let root = fixture(&blobs, true);
        let one = export_tar(&blobs, root, EPOCH, Vec::new()).unwrap();
        let two = export_tar(&blobs, root, EPOCH, Vec::new()).unwrap();
        assert_eq!(one, two);
        assert_eq!(one.len() % 512, 0);
        assert!(one[one.len() - 1024..].iter().all(|&b| b == 0));

        // tar → tree: the same tree, except what tar cannot carry: the socket, and
        // mtimes after the epoch.
        let back = import_tar(&blobs, &one[..]).unwrap();
        let mut b = TreeBuilder::new();
        for item in walk(&blobs, root) {
            let (path, mut entry) = item.unwrap();
            if entry.kind == Kind::Socket {
                continue;
            }
            entry.mtime = entry.mtime.min(EPOCH as i64);
            b.insert(path, entry).unwrap();
        }
        assert_eq!(back, b.finish(&blobs).unwrap());
        // A tree that tar can carry exactly round-trips to the same root digest.
        assert_eq!(
            import_tar(&blobs, &export_tar(&blobs, back, EPOCH, Vec::new()).unwrap()[..]).unwrap(),
            back
        );
    }

    #[test]
    fn golden_tar_zst() {
        let blobs = MemBlobs::new();
        let root = fixture(&blobs, true);
        let zst = export_tar_zst(&blobs, root, EPOCH, 19, Vec::new()).unwrap();
        let tar = zstd::stream::decode_all(&zst[..]).unwrap();
        assert_eq!(tar, export_tar(&blobs, root, EPOCH, Vec::new()).unwrap());
        // Pinned: any change to the tree encoding, the tar rules or the vendored zstd
        // (zstd-sys is locked in Cargo.lock) shows up here first.
        assert_eq!(
            Digest::of(&tar).to_hex(),
            "5c8118fb290a18e15453d89d24fb34525a7489e59a914ceacec7e8f649f9dfd0"
        );
        assert_eq!(
            Digest::of(&zst).to_hex(),
            "b2d41a497c013b1167820595026cc836e64ba48db6b026171e7f601ccbeae774"
        );
    }

    #[test]
    fn gnu_tar_lists_it() {
        if !gnu_tar() {
            return;
        }
        let blobs = MemBlobs::new();
        let root = fixture(&blobs, true);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.tar");
        std::fs::write(&file, export_tar(&blobs, root, EPOCH, Vec::new()).unwrap()).unwrap();
        let out = Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvf"])
            .arg(&file)
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.is_empty(), "{stderr}");
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<String> = listing
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let long = format!("./usr/share/{}/{}", "d".repeat(90), "f".repeat(60));
        let expected = [
            "drwxr-xr-x 0/0 0 2020-09-13 12:26:40 ./".to_string(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./dev/".into(),
            "brw-rw---- 0/0 179,0 1970-01-01 00:00:00 ./dev/mmcblk0".into(),
            "crw-rw-rw- 0/0 1,3 1970-01-01 00:00:00 ./dev/null".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./etc/".into(),
            "-rw-r--r-- 0/0 6 2023-11-14 22:13:20 ./etc/hostname".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./etc/wireguard/".into(),
            "-rw------- 1000/1001 7 1970-01-01 00:00:00 ./etc/wireguard/wg0.key".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./run/".into(),
            "prw------- 0/0 0 1970-01-01 00:00:00 ./run/fifo".into(),
            "drwxrwxrwt 0/0 0 1970-01-01 00:00:00 ./tmp/".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./usr/".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./usr/bin/".into(),
            "-rwsr-xr-x 0/0 9 2017-07-14 02:40:00 ./usr/bin/ping".into(),
            "hrwsr-xr-x 0/0 0 2017-07-14 02:40:00 ./usr/bin/ping6 link to ./usr/bin/ping".into(),
            "lrwxrwxrwx 0/0 0 1970-01-01 00:00:00 ./usr/bin/sh -> dash".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./usr/share/".into(),
            format!(
                "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./usr/share/{}/",
                "d".repeat(90)
            ),
            format!("-rw-r--r-- 0/0 0 1970-01-01 00:00:00 {long}"),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./usr/share/zoneinfo/".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./usr/share/zoneinfo/Europe/".into(),
            "-rw-r--r-- 0/0 2 1970-01-01 00:00:00 ./usr/share/zoneinfo/Europe/Zürich".into(),
            "drwxr-xr-x 0/0 0 1970-01-01 00:00:00 ./var/".into(),
            "-rw-r--r-- 0/0 200000 1970-01-01 00:00:00 ./var/big.bin".into(),
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn gnu_tar_extracts_it() {
        if !gnu_tar() {
            return;
        }
        let blobs = MemBlobs::new();
        // Device nodes need privileges to extract; the listing test covers them.
        let root = fixture(&blobs, false);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.tar.zst");
        let zst = export_tar_zst(&blobs, root, EPOCH, 3, Vec::new()).unwrap();
        std::fs::write(&file, zst).unwrap();
        let dest = dir.path().join("x");
        std::fs::create_dir(&dest).unwrap();
        let out = Command::new("tar")
            .args(["--zstd", "--numeric-owner", "--no-same-owner", "-xpf"])
            .arg(&file)
            .arg("-C")
            .arg(&dest)
            .output()
            .unwrap();
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("zstd") {
            crate::oracle::unavailable("`zstd` is not installed for GNU tar --zstd");
            return;
        }
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        for item in walk(&blobs, root) {
            let (path, entry) = item.unwrap();
            let host = dest.join(path.components().join("/"));
            if entry.kind == Kind::Socket {
                assert!(!host.exists());
                continue;
            }
            let meta = std::fs::symlink_metadata(&host).unwrap();
            match &entry.kind {
                Kind::File { digest, .. } => {
                    assert_eq!(
                        std::fs::read(&host).unwrap(),
                        blobs.get(digest).unwrap(),
                        "{path}"
                    );
                }
                Kind::Symlink { target } => {
                    assert_eq!(std::fs::read_link(&host).unwrap(), Path::new(target));
                    continue;
                }
                Kind::HardLink { target } => {
                    let target_meta = std::fs::metadata(dest.join(target.components().join("/"))).unwrap();
                    assert_eq!(meta.ino(), target_meta.ino(), "{path} is not a hard link");
                    assert_eq!(meta.nlink(), 2);
                }
                Kind::Dir { .. } => assert!(meta.is_dir()),
                Kind::Fifo => assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type())),
                _ => {}
            }
            assert_eq!(meta.permissions().mode() & 0o7777, entry.mode, "{path}");
            if !path.is_root() {
                assert_eq!(meta.mtime(), entry.mtime.min(EPOCH as i64), "{path}");
            }
        }
    }

    #[test]
    fn dangling_hard_links_fail_export() {
        // Hard links put by a layer are not canonicalised; export checks them.
        let blobs = MemBlobs::new();
        let base = TreeBuilder::new().finish(&blobs).unwrap();
        let layer = crate::tree::layer::Changeset::new(vec![crate::tree::layer::Op::Put {
            path: p("/a"),
            entry: Entry::new(Kind::HardLink { target: p("/z") }, 0o644),
        }]);
        let root = crate::tree::layer::apply(&blobs, base, &[layer], 0).unwrap();
        assert!(matches!(
            export_tar(&blobs, root, 0, Vec::new()),
            Err(TreeError::BadHardLink { .. })
        ));
    }

    #[test]
    fn archives_written_by_gnu_tar_import() {
        if !gnu_tar() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let long = format!("{}/{}", "d".repeat(80), "f".repeat(80));
        std::fs::create_dir_all(src.join("d".repeat(80))).unwrap();
        std::fs::write(src.join(&long), b"long").unwrap();
        std::fs::write(src.join("a"), b"a").unwrap();
        std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
        std::os::unix::fs::symlink("a", src.join("s")).unwrap();
        let blobs = MemBlobs::new();
        for format in ["gnu", "pax", "ustar"] {
            let archive = dir.path().join(format!("{format}.tar"));
            let out = Command::new("tar")
                .arg(format!("--format={format}"))
                .args(["--sort=name", "-cf"])
                .arg(&archive)
                .arg("-C")
                .arg(&src)
                .arg(".")
                .output()
                .unwrap();
            if format == "ustar" {
                // ustar cannot hold a 161-byte name without a prefix split GNU tar
                // cannot make here; that failure is GNU tar's, not ours.
                if !out.status.success() {
                    continue;
                }
            }
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let root = import_tar(&blobs, std::fs::File::open(&archive).unwrap()).unwrap();
            let file = crate::tree::lookup(&blobs, root, &p(&format!("/{long}")))
                .unwrap()
                .unwrap();
            assert_eq!(
                file.kind,
                Kind::File {
                    digest: Digest::of(b"long"),
                    size: 4
                },
                "{format}"
            );
            let b = crate::tree::lookup(&blobs, root, &p("/b")).unwrap().unwrap();
            assert_eq!(b.kind, Kind::HardLink { target: p("/a") }, "{format}");
            let s = crate::tree::lookup(&blobs, root, &p("/s")).unwrap().unwrap();
            assert_eq!(s.kind, Kind::Symlink { target: "a".into() }, "{format}");
        }
    }
}
