//! The "new" portable cpio format (`newc`, magic `070701`): what the Linux kernel unpacks
//! as an initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`). w4b
//! writes one for the pinned test kernel's initramfs (`crate::vmtest::test_kernel`).
//!
//! Only writing, of directories, regular files and symlinks, deterministically: entries
//! sorted by path (so a directory comes before what it holds), inode numbers counted from
//! 1 in that order, every `c_mtime`, `c_uid` and `c_gid` 0, one link each, no device
//! numbers. A header is 110 ASCII bytes:
//!
//! | offset | size | field | written as |
//! |---|---|---|---|
//! | 0 | 6 | `c_magic` | `070701` |
//! | 6 | 8 | `c_ino` | 1, 2, … in path order |
//! | 14 | 8 | `c_mode` | file type bits and permissions |
//! | 22 | 8 | `c_uid` | 0 |
//! | 30 | 8 | `c_gid` | 0 |
//! | 38 | 8 | `c_nlink` | 1 (2 for a directory) |
//! | 46 | 8 | `c_mtime` | 0 |
//! | 54 | 8 | `c_filesize` | the file's length, or the symlink target's |
//! | 62 | 8×4 | `c_maj`, `c_min`, `c_rmaj`, `c_rmin` | 0 |
//! | 94 | 8 | `c_namesize` | the name's length with its NUL |
//! | 102 | 8 | `c_chksum` | 0 |
//!
//! each number 8 hexadecimal digits; the name (no leading `/`) and its NUL follow, padded
//! to a multiple of 4 counted from the header's start, then the data, padded to 4. The
//! archive ends with the entry `TRAILER!!!`.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// What one entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpioKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One entry: a path (`init`, `lib/modules`; no leading `/`), permissions and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioEntry {
    pub path: String,
    /// Permission bits (`0o755`); the type bits come from `kind`.
    pub mode: u32,
    pub kind: CpioKind,
}

/// A problem with the entries given to [`write_newc`].
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("cpio entry `{0}` is given twice")]
    Duplicate(String),
    #[error("cpio entry `{0}` has an empty, absolute or `..` path")]
    BadPath(String),
    #[error("cpio entry `{path}` is {len} bytes, more than newc's 4 GiB")]
    TooLarge { path: String, len: usize },
    #[error("cannot write the cpio archive: {0}")]
    Io(#[from] io::Error),
}

const TRAILER: &str = "TRAILER!!!";

fn header(w: &mut impl Write, ino: u32, mode: u32, nlink: u32, size: u32, name: &str) -> io::Result<usize> {
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let written = 110 + name.len() + 1;
    let pad = (4 - written % 4) % 4;
    w.write_all(&[0u8; 3][..pad])?;
    Ok(written + pad)
}

fn data(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes)?;
    let pad = (4 - bytes.len() % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

/// Writes `entries` as a newc archive, in path order whatever their order here.
pub fn write_newc<W: Write>(w: &mut W, entries: &[CpioEntry]) -> Result<(), CpioError> {
    let mut sorted: BTreeMap<&str, &CpioEntry> = BTreeMap::new();
    for e in entries {
        let p = e.path.as_str();
        if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(CpioError::BadPath(e.path.clone()));
        }
        if sorted.insert(p, e).is_some() {
            return Err(CpioError::Duplicate(e.path.clone()));
        }
    }
    let size = |path: &str, len: usize| {
        u32::try_from(len).map_err(|_| CpioError::TooLarge {
            path: path.to_owned(),
            len,
        })
    };
    for (i, (path, e)) in sorted.iter().enumerate() {
        let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let perm = e.mode & 0o7777;
        match &e.kind {
            CpioKind::Dir => {
                header(w, ino, 0o040_000 | perm, 2, 0, path)?;
            }
            CpioKind::File(bytes) => {
                header(w, ino, 0o100_000 | perm, 1, size(path, bytes.len())?, path)?;
                data(w, bytes)?;
            }
            CpioKind::Symlink(target) => {
                header(w, ino, 0o120_000 | perm, 1, size(path, target.len())?, path)?;
                data(w, target.as_bytes())?;
            }
        }
    }
    header(w, 0, 0, 1, 0, TRAILER)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<CpioEntry> {
        let e = |path: &str, mode, kind| CpioEntry {
            path: path.into(),
            mode,
            kind,
        };
        vec![
            e(
                "init",
                0o755,
                CpioKind::File(b"#!/bin/busybox sh\necho hi\n".to_vec()),
            ),
            e("bin/sh", 0o777, CpioKind::Symlink("busybox".into())),
            e("bin", 0o755, CpioKind::Dir),
            e(
                "bin/busybox",
                0o755,
                CpioKind::File(vec![0x7f, b'E', b'L', b'F', 1]),
            ),
            e("empty", 0o644, CpioKind::File(Vec::new())),
        ]
    }

    #[test]
    fn the_layout_is_sorted_padded_and_fixed() {
        let mut out = Vec::new();
        write_newc(&mut out, &sample()).unwrap();
        assert_eq!(out.len() % 4, 0);
        // The first entry is `bin`, a directory, inode 1.
        assert_eq!(
            &out[..110],
            concat!(
                "070701", "00000001", "000041ed", "00000000", "00000000", "00000002", "00000000", "00000000",
                "00000000", "00000000", "00000000", "00000000", "00000004", "00000000"
            )
            .as_bytes()
        );
        assert_eq!(&out[110..114], b"bin\0");
        assert!(out.ends_with(b"TRAILER!!!\0\0\0\0"));
        // The same entries in another order: the same bytes.
        let mut reversed = sample();
        reversed.reverse();
        let mut again = Vec::new();
        write_newc(&mut again, &reversed).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn bad_entries_are_refused() {
        let mut s = sample();
        s.push(s[0].clone());
        assert!(matches!(write_newc(&mut Vec::new(), &s), Err(CpioError::Duplicate(p)) if p == "init"));
        for bad in ["/init", "a/../b", "", "a//b"] {
            let e = CpioEntry {
                path: bad.into(),
                mode: 0o644,
                kind: CpioKind::Dir,
            };
            assert!(matches!(
                write_newc(&mut Vec::new(), &[e]),
                Err(CpioError::BadPath(_))
            ));
        }
    }

    /// `bsdcpio` (libarchive) and GNU `cpio` read it back: names, types, sizes, contents.
    #[test]
    fn cpio_and_bsdcpio_read_it_back() {
        let mut out = Vec::new();
        write_newc(&mut out, &sample()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &out).unwrap();
        if !crate::oracle::have_all(&["cpio", "bsdcpio"]) {
            return;
        }
        for tool in ["cpio", "bsdcpio"] {
            let run = |args: &[&str], cwd: &std::path::Path| {
                #[allow(clippy::disallowed_methods)] // the oracle
                let o = std::process::Command::new(tool)
                    .args(args)
                    .current_dir(cwd)
                    .stdin(std::fs::File::open(&archive).unwrap())
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "{tool}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                String::from_utf8(o.stdout).unwrap()
            };
            let listing = run(&["-t", "--quiet"], dir.path());
            let names: Vec<&str> = listing.lines().collect();
            assert_eq!(names, ["bin", "bin/busybox", "bin/sh", "empty", "init"], "{tool}");
            let x = dir.path().join(tool);
            std::fs::create_dir(&x).unwrap();
            run(&["-i", "-d", "--quiet"], &x);
            assert_eq!(
                std::fs::read(x.join("init")).unwrap(),
                b"#!/bin/busybox sh\necho hi\n"
            );
            assert_eq!(
                std::fs::read_link(x.join("bin/sh")).unwrap(),
                std::path::Path::new("busybox")
            );
            assert_eq!(std::fs::read(x.join("empty")).unwrap(), b"");
        }
    }
}
