//! Workspace paths resolved without leaving the workspace.
//!
//! Every host file a build reads through the workspace — definitions, layer `source:` and
//! `template:` paths, a hive's `hive_file`, a sensor manager's source directory — is
//! resolved here first. The kernel walks the path with `openat2(RESOLVE_BENEATH)` from the
//! workspace root: symlinks are followed only while they stay inside it, an absolute
//! symlink or one climbing out with `..` fails, and so does a magic link under `/proc`.
//! Callers then read the returned real path, which holds no symlink at all. Symlinks
//! *inside* a source tree are imported as symlinks, never followed (see `tree::import`).
//!
//! Kernels without `openat2` (before 5.6, or seccomp filters that refuse it) get the
//! equivalent check in user space: the canonical path must lie below the canonical root.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};

/// Why a workspace path cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// The path leads out of the workspace through a symlink.
    #[error("`{path}` leads outside the workspace through a symlink")]
    Escapes { path: String },
    #[error("cannot resolve `{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The real path of `rel` (workspace-relative, `/`-separated) below `root`. A path that does
/// not exist (yet) resolves to `root/rel`: reading it reports it missing. A path whose
/// existing part leads out of the workspace is [`BeneathError::Escapes`].
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, BeneathError> {
    let rel = rel.trim_start_matches('/');
    let io_err = |source: io::Error| BeneathError::Io {
        path: rel.to_owned(),
        source,
    };
    if rel.is_empty() {
        return Ok(root.to_path_buf());
    }
    let root_fd = match openat2(
        CWD,
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => return resolve_in_user_space(root, rel),
        Err(e) => return Err(io_err(e.into())),
    };
    match openat2(
        &root_fd,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io_err),
        Err(rustix::io::Errno::XDEV) => Err(BeneathError::Escapes { path: rel.to_owned() }),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(missing(root, rel)?),
        // Interrupted by a rename racing the walk: the kernel asks to try again.
        Err(rustix::io::Errno::AGAIN) => resolve_in_user_space(root, rel),
        Err(e) => Err(io_err(e.into())),
    }
}

/// A path that does not exist: its existing prefix must still be inside.
fn missing(root: &Path, rel: &str) -> Result<PathBuf, BeneathError> {
    resolve_in_user_space(root, rel)
}

/// The same rule without `openat2`: canonicalise the longest existing prefix and check that
/// it stays below the canonical root.
fn resolve_in_user_space(root: &Path, rel: &str) -> Result<PathBuf, BeneathError> {
    let io_err = |source: io::Error| BeneathError::Io {
        path: rel.to_owned(),
        source,
    };
    let real_root = root.canonicalize().map_err(io_err)?;
    let full = root.join(rel);
    let mut existing = full.as_path();
    let mut rest = Vec::new();
    let real = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return Err(BeneathError::Escapes { path: rel.to_owned() }),
            },
        }
    };
    if !real.starts_with(&real_root) {
        return Err(BeneathError::Escapes { path: rel.to_owned() });
    }
    Ok(rest.into_iter().rev().fold(real, |p, name| p.join(name)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("defs/layers/files/v2")).unwrap();
        std::fs::write(ws.join("defs/layers/files/v2/app.conf"), "x").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        symlink("v2", ws.join("defs/layers/files/current")).unwrap();
        symlink("/etc", ws.join("defs/layers/files/hostetc")).unwrap();
        symlink("../../../../outside.txt", ws.join("defs/layers/files/up")).unwrap();
        symlink("../..", ws.join("defs/layers/files/wsroot")).unwrap();
        symlink("/proc/self/root/etc", ws.join("defs/layers/files/magic")).unwrap();
        (dir, ws)
    }

    #[test]
    fn symlinks_inside_the_workspace_resolve_to_their_real_path() {
        let (_d, ws) = setup();
        let real = ws.canonicalize().unwrap();
        assert_eq!(
            resolve(&ws, "defs/layers/files/current/app.conf").unwrap(),
            real.join("defs/layers/files/v2/app.conf")
        );
        assert_eq!(
            resolve(&ws, "defs/layers/files/wsroot/layers").unwrap(),
            real.join("defs/layers")
        );
        // Missing paths resolve to where they would be, for a "no such file" later.
        assert_eq!(
            resolve(&ws, "defs/layers/files/current/new.conf").unwrap(),
            real.join("defs/layers/files/v2/new.conf")
        );
    }

    #[test]
    fn every_way_out_is_refused() {
        let (_d, ws) = setup();
        for rel in [
            "defs/layers/files/hostetc/passwd",
            "defs/layers/files/hostetc",
            "defs/layers/files/up",
            "defs/layers/files/magic/passwd",
            "defs/layers/files/hostetc/does-not-exist",
            "../outside.txt",
            "defs/../../outside.txt",
        ] {
            assert!(
                matches!(resolve(&ws, rel), Err(BeneathError::Escapes { .. })),
                "{rel}: {:?}",
                resolve(&ws, rel)
            );
            assert!(
                matches!(resolve_in_user_space(&ws, rel), Err(BeneathError::Escapes { .. })),
                "{rel} (user space): {:?}",
                resolve_in_user_space(&ws, rel)
            );
        }
    }
}
