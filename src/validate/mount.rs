//! `w4b validate --mount`: the Linux kernel as the final judge. Each filesystem is
//! attached read-only to a loop device (`losetup --read-only --offset --sizelimit`),
//! mounted read-only (`ro`, and `noload` for ext4 so not even a journal replay writes),
//! walked with `std::fs`, and compared entry by entry with what our reader saw: names,
//! types, sizes, permission bits, owners, symlink targets, device numbers, and the BLAKE3
//! of every file's content. Root only.
//!
//! The loop device is attached with util-linux `losetup` rather than a loop-ioctl crate:
//! the maintained one (`loopdev-3`) needs `bindgen` and libclang to build, a heavy price
//! for a root-only diagnostic. Mounting goes through `sys-mount` (plain `mount(2)`).
//! FAT is compared without modes and owners, which vfat invents from mount options.
//! Kernels built without `vfat` (this project's CI VM) get a skip with that reason.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sys_mount::{Mount, MountFlags, Unmount, UnmountFlags};

use super::{EntryKind, Layout, Report, TreeEntry};

/// Why the kernel comparison could not run.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum MountError {
    #[error("`--mount` needs root: it attaches loop devices and mounts the image's filesystems")]
    #[diagnostic(
        code(w4b::validate::mount_not_root),
        help(
            "run `sudo w4b validate IMAGE --mount`, or drop `--mount`: the other checks need no privileges"
        )
    )]
    NotRoot,

    #[error("`--mount` needs loop devices, and `/dev/loop-control` does not exist")]
    #[diagnostic(
        code(w4b::validate::mount_no_loop),
        help("load the loop module (`modprobe loop`); in a container, give it the loop devices (`--privileged` or `--device /dev/loop-control`)")
    )]
    NoLoop,

    #[error("attaching partition {partition} to a loop device failed: {reason}")]
    #[diagnostic(
        code(w4b::validate::mount_losetup),
        help("`losetup` (util-linux) must be installed and a loop device free (`losetup -a` lists them)")
    )]
    Attach { partition: u32, reason: String },
}

/// Whether this process runs as root (`Uid:` of `/proc/self/status`, no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether the running kernel has the filesystem `fstype` (`/proc/filesystems`).
pub fn kernel_has(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some(fstype)))
        .unwrap_or(false)
}

/// A loop device; detached on drop.
struct Loop {
    device: String,
}

impl Loop {
    fn attach(image: &Path, offset: u64, len: u64, partition: u32) -> Result<Loop, MountError> {
        #[allow(clippy::disallowed_methods)] // `--mount` is a diagnostic run by hand, never in a build.
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--offset"])
            .arg(offset.to_string())
            .arg("--sizelimit")
            .arg(len.to_string())
            .arg(image)
            .output()
            .map_err(|e| MountError::Attach {
                partition,
                reason: format!("cannot run `losetup`: {e}"),
            })?;
        if !out.status.success() {
            return Err(MountError::Attach {
                partition,
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !device.starts_with("/dev/") {
            return Err(MountError::Attach {
                partition,
                reason: format!("`losetup --show` printed `{device}`, not a device"),
            });
        }
        Ok(Loop { device })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        #[allow(clippy::disallowed_methods)] // Detaching what `attach` made.
        let _ = Command::new("losetup").arg("--detach").arg(&self.device).output();
    }
}

/// A read-only mount; unmounted (lazily if busy) on drop, before its directory goes.
struct Mounted {
    mount: Option<Mount>,
    dir: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m
                .unmount(UnmountFlags::empty())
                .or_else(|_| m.unmount(UnmountFlags::DETACH));
        }
    }
}

fn mount_ro(device: &str, fstype: &str, data: &str) -> io::Result<Mounted> {
    let dir = tempfile::tempdir()?;
    let mut b = Mount::builder().fstype(fstype).flags(MountFlags::RDONLY);
    if !data.is_empty() {
        b = b.data(data);
    }
    let mount = b.mount(device, dir.path())?;
    Ok(Mounted {
        mount: Some(mount),
        dir,
    })
}

/// Compares the kernel's view of the root (and, when the kernel has vfat, the boot)
/// filesystem with `root_tree`/`boot_tree`, adding `mount_rootfs` and `mount_bootfs`
/// checks. `image` is a path the loop device can open.
pub fn compare_with_kernel(
    image: &Path,
    layout: &Layout,
    boot_tree: Option<&[TreeEntry]>,
    root_tree: Option<&[TreeEntry]>,
    report: &mut Report,
) -> Result<(), MountError> {
    if !is_root() {
        return Err(MountError::NotRoot);
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(MountError::NoLoop);
    }
    for (rule, index, tree, fstype, data, full) in [
        ("mount_rootfs", layout.root, root_tree, "ext4", "noload", true),
        ("mount_bootfs", layout.boot, boot_tree, "vfat", "", false),
    ] {
        let (Some(p), Some(tree)) = (index.and_then(|i| layout.part(i)).filter(|p| p.inside), tree) else {
            report.skip(
                rule,
                None,
                "the filesystem was not read, so there is nothing to compare",
            );
            continue;
        };
        let file = Some(format!("partition {}", p.info.index));
        if !kernel_has(fstype) {
            report.skip(
                rule,
                file,
                format!("this kernel cannot mount {fstype} (not in `/proc/filesystems`)"),
            );
            continue;
        }
        let lo = Loop::attach(image, p.offset, p.len, p.info.index)?;
        let mounted = match mount_ro(&lo.device, fstype, data) {
            Ok(m) => m,
            Err(e) => {
                report.fail(
                    rule,
                    file,
                    format!("the kernel refused to mount it read-only as {fstype}: {e}"),
                    "`dmesg` shows the kernel's reason; the filesystem is damaged or uses a feature this kernel lacks",
                );
                continue;
            }
        };
        let kernel = match walk(mounted.dir.path(), full) {
            Ok(k) => k,
            Err(e) => {
                report.fail(
                    rule,
                    file,
                    format!("reading the mounted filesystem failed: {e}"),
                    "`dmesg` shows the kernel's reason",
                );
                continue;
            }
        };
        drop(mounted);
        drop(lo);
        let ours: Vec<TreeEntry> = tree
            .iter()
            .map(|e| if full { e.clone() } else { without_owner(e) })
            .collect();
        let diffs = differences(&ours, &kernel);
        if diffs.is_empty() {
            report.pass(
                rule,
                file,
                format!(
                    "the kernel sees the same {} entries (names, types, sizes, {}symlink targets, content digests)",
                    kernel.len(),
                    if full { "modes, owners, " } else { "" }
                ),
            );
        } else {
            const SHOWN: usize = 12;
            let mut detail = format!(
                "{} difference(s) between our reader and the kernel: ",
                diffs.len()
            );
            detail.push_str(&diffs.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; "));
            if diffs.len() > SHOWN {
                detail.push_str("; ...");
            }
            report.fail(
                rule,
                file,
                detail,
                "our reader and the kernel disagree: report it with the image (a reader bug), or check the filesystem with `--oracles`",
            );
        }
    }
    Ok(())
}

/// FAT entries compared without mode and owner.
fn without_owner(e: &TreeEntry) -> TreeEntry {
    TreeEntry {
        mode: 0,
        uid: 0,
        gid: 0,
        ..e.clone()
    }
}

/// Every entry below `root` (as `/`, `/etc`, ...), sorted by path, with BLAKE3 digests.
/// Without `full`, modes and owners are zeroed.
pub fn walk(root: &Path, full: bool) -> io::Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), "/".to_string())];
    let mut buf = vec![0u8; 1 << 20];
    while let Some((path, name)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            let mut children: Vec<(String, PathBuf)> = std::fs::read_dir(&path)?
                .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
                .collect::<io::Result<_>>()?;
            children.sort();
            for (child, child_path) in children.into_iter().rev() {
                let child_name = if name == "/" {
                    format!("/{child}")
                } else {
                    format!("{name}/{child}")
                };
                stack.push((child_path, child_name));
            }
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: std::fs::read_link(&path)?.to_string_lossy().into_owned(),
            }
        } else if ft.is_file() {
            let mut f = std::fs::File::open(&path)?;
            let mut h = blake3::Hasher::new();
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some(chunk) = buf.get(..n) {
                            h.update(chunk);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            EntryKind::File {
                size: meta.len(),
                blake3: *h.finalize().as_bytes(),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = dev_numbers(meta.rdev());
            if ft.is_char_device() {
                EntryKind::CharDev { major, minor }
            } else {
                EntryKind::BlockDev { major, minor }
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::Socket
        };
        let (mode, uid, gid) = if full {
            (meta.mode() & 0o7777, meta.uid(), meta.gid())
        } else {
            (0, 0, 0)
        };
        out.push(TreeEntry {
            path: name,
            kind,
            mode,
            uid,
            gid,
        });
    }
    out.sort();
    Ok(out)
}

/// glibc's `major()`/`minor()` of a Linux `dev_t`.
fn dev_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}

/// One line per entry that differs, in path order.
pub fn differences(ours: &[TreeEntry], kernel: &[TreeEntry]) -> Vec<String> {
    let a: BTreeMap<&str, &TreeEntry> = ours.iter().map(|e| (e.path.as_str(), e)).collect();
    let b: BTreeMap<&str, &TreeEntry> = kernel.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut out = Vec::new();
    let paths: std::collections::BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    for p in paths {
        match (a.get(p), b.get(p)) {
            (Some(_), None) => out.push(format!("`{p}` only in our reader's view")),
            (None, Some(_)) => out.push(format!("`{p}` only in the kernel's view")),
            (Some(x), Some(y)) if x != y => {
                out.push(format!("`{p}`: ours {} vs kernel {}", describe(x), describe(y)))
            }
            _ => {}
        }
    }
    out
}

fn describe(e: &TreeEntry) -> String {
    let kind = match &e.kind {
        EntryKind::File { size, blake3 } => {
            format!(
                "file {size} bytes blake3 {}",
                hex::encode(blake3.get(..6).unwrap_or(&[]))
            )
        }
        EntryKind::Dir => "dir".to_string(),
        EntryKind::Symlink { target } => format!("symlink -> {target}"),
        EntryKind::CharDev { major, minor } => format!("char {major}:{minor}"),
        EntryKind::BlockDev { major, minor } => format!("block {major}:{minor}"),
        EntryKind::Fifo => "fifo".to_string(),
        EntryKind::Socket => "socket".to_string(),
    };
    format!("{kind} mode {:04o} owner {}:{}", e.mode, e.uid, e.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, d: u8) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: EntryKind::File {
                size,
                blake3: [d; 32],
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn differences_name_each_path() {
        let ours = vec![file("/a", 1, 1), file("/b", 2, 2), file("/c", 3, 3)];
        let mut kernel = vec![file("/a", 1, 1), file("/b", 2, 9), file("/d", 4, 4)];
        kernel[0].mode = 0o644;
        let d = differences(&ours, &kernel);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("`/b`: ours file 2 bytes"), "{}", d[0]);
        assert_eq!(d[1], "`/c` only in our reader's view");
        assert_eq!(d[2], "`/d` only in the kernel's view");
        assert!(differences(&ours, &ours).is_empty());
    }

    #[test]
    fn device_numbers_follow_glibc() {
        // glibc's makedev().
        fn makedev(major: u64, minor: u64) -> u64 {
            ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
        }
        assert_eq!(dev_numbers(makedev(1, 3)), (1, 3));
        assert_eq!(dev_numbers(makedev(259, 65536)), (259, 65536));
        assert_eq!(dev_numbers(makedev(7, 0)), (7, 0));
    }

    #[test]
    fn walk_lists_a_directory_sorted_with_digests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x"), b"hello").unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        std::os::unix::fs::symlink("sub/x", dir.path().join("l")).unwrap();
        let w = walk(dir.path(), false).unwrap();
        let paths: Vec<_> = w.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/", "/a", "/l", "/sub", "/sub/x"]);
        assert_eq!(
            w[4].kind,
            EntryKind::File {
                size: 5,
                blake3: *blake3::hash(b"hello").as_bytes()
            }
        );
        assert_eq!(
            w[2].kind,
            EntryKind::Symlink {
                target: "sub/x".into()
            }
        );
    }
}
