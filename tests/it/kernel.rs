//! The Linux kernel as the final oracle for disk images: root-only tests attach an image
//! read-only to a loop device (`loopdev-3`), mount it (`sys-mount`), and read every file
//! the way a Raspberry Pi will. Outside CI a non-root run skips these tests with a
//! message; in CI (`CI` set, running as root) they must run.

#![allow(clippy::disallowed_methods)] // Tests read `CI` and run `getfattr`.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sys_mount::{Mount, MountFlags, Unmount, UnmountFlags};

/// Whether this process is root (reads `/proc/self/status`, no libc needed).
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

/// True when the test may use loop devices; otherwise skips (or fails in CI).
pub fn require_root(test: &str) -> bool {
    if is_root() && Path::new("/dev/loop-control").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: CI runs as root with loop devices; this test must not be skipped");
    }
    eprintln!("skipping {test}: needs root and /dev/loop-control");
    false
}

/// A read-only mount of a byte range of an image; unmounted and detached on drop.
pub struct Mounted {
    pub dir: tempfile::TempDir,
    mount: Option<Mount>,
    device: loopdev::LoopDevice,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m
                .unmount(UnmountFlags::empty())
                .or_else(|_| m.unmount(UnmountFlags::DETACH));
        }
        let _ = self.device.detach();
    }
}

/// Mounts `len` bytes at `offset` of `image` read-only as `fstype` (`ext4`, `vfat`).
pub fn mount_ro(image: &Path, offset: u64, len: u64, fstype: &str) -> io::Result<Mounted> {
    let control = loopdev::LoopControl::open()?;
    let device = control.next_free()?;
    device
        .with()
        .offset(offset)
        .size_limit(len)
        .read_only(true)
        .attach(image)?;
    let dir = tempfile::tempdir()?;
    let path = device
        .path()
        .ok_or_else(|| io::Error::other("loop device has no path"))?;
    let mount = Mount::builder()
        .fstype(fstype)
        .flags(MountFlags::RDONLY)
        .mount(&path, dir.path());
    match mount {
        Ok(mount) => Ok(Mounted {
            dir,
            mount: Some(mount),
            device,
        }),
        Err(e) => {
            let _ = device.detach();
            Err(e)
        }
    }
}

/// Extended attributes of every path below `root`, as `getfattr` reports them.
fn xattrs(root: &Path) -> BTreeMap<PathBuf, BTreeMap<String, String>> {
    let out = std::process::Command::new("getfattr")
        .args(["-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(root)
        .output();
    let mut map: BTreeMap<PathBuf, BTreeMap<String, String>> = BTreeMap::new();
    let Ok(out) = out else {
        assert!(
            std::env::var_os("CI").is_none(),
            "getfattr is missing (apt-get install attr)"
        );
        return map;
    };
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            current = Some(PathBuf::from(p));
        } else if let (Some(p), Some((k, v))) = (&current, line.split_once('=')) {
            map.entry(p.clone())
                .or_default()
                .insert(k.to_string(), v.to_string());
        }
    }
    map
}

/// One line per entry below `root` — path, type, mode, owner, size or device, symlink
/// target, content BLAKE3, hard-link group, xattrs — in sorted path order, without times.
/// Two trees with equal snapshots hold the same files as far as a Linux system can tell.
pub fn snapshot(root: &Path, skip: &[&str]) -> Vec<String> {
    let attrs = xattrs(root);
    let mut lines = Vec::new();
    let mut first_path_of_inode: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
        let ft = meta.file_type();
        let shown = format!("/{}", rel.display());
        let kind = if ft.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            children.sort();
            for c in children.into_iter().rev() {
                let child = rel.join(&c);
                if !skip.iter().any(|s| Path::new(s) == child) {
                    stack.push(child);
                }
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&full).unwrap().display())
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = first_path_of_inode.get(&meta.ino()) {
                    lines.push(format!("{shown} hardlink -> {first}"));
                    continue;
                }
                first_path_of_inode.insert(meta.ino(), shown.clone());
            }
            let bytes = std::fs::read(&full).unwrap();
            format!("file {} {}", bytes.len(), blake3::hash(&bytes).to_hex())
        } else if ft.is_char_device() {
            format!("char {}:{}", meta.rdev() >> 8 & 0xfff, meta.rdev() & 0xff)
        } else if ft.is_block_device() {
            format!("block {}:{}", meta.rdev() >> 8 & 0xfff, meta.rdev() & 0xff)
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "socket".to_string()
        };
        let x = attrs
            .get(&full)
            .map(|m| m.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>())
            .unwrap_or_default();
        lines.push(format!(
            "{shown} {kind} {:04o} {}:{}{x}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    lines
}

/// A source tree with what a Raspberry Pi OS rootfs has: nested dirs, a setuid binary, a
/// capability xattr, user xattrs (one too big for the inode), symlinks short and long,
/// hard links, device nodes, a fifo, other owners.
pub fn rootfs_like_source(dir: &Path) {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    let w = |p: &str, b: &[u8]| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    };
    w("etc/hostname", b"raspberrypi\n");
    w("etc/fstab", b"proc /proc proc defaults 0 0\n");
    w("usr/bin/ping", &vec![0x7f; 70_000]);
    w("usr/bin/sudo", b"\x7fELF sudo");
    w("home/pi/.bashrc", b"# bashrc\n");
    std::fs::set_permissions(dir.join("usr/bin/sudo"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    chown(dir.join("home/pi"), Some(1000), Some(1000)).unwrap();
    chown(dir.join("home/pi/.bashrc"), Some(1000), Some(1000)).unwrap();
    symlink("../usr/bin/ping", dir.join("etc/short-link")).unwrap();
    symlink(
        format!("/usr/lib/{}", "very-long-directory-name/".repeat(4)),
        dir.join("etc/long-link"),
    )
    .unwrap();
    std::fs::hard_link(dir.join("usr/bin/sudo"), dir.join("usr/bin/sudoedit")).unwrap();
    let set = |p: &str, name: &str, hex: &str| {
        let st = std::process::Command::new("setfattr")
            .args(["-h", "-n", name, "-v", hex])
            .arg(dir.join(p))
            .status()
            .expect("setfattr (apt-get install attr)");
        assert!(st.success());
    };
    set(
        "usr/bin/ping",
        "security.capability",
        "0x0100000200200000000000000000000000000000",
    );
    set("etc/hostname", "user.small", "0x6869");
    set("etc/fstab", "user.big", &format!("0x{}", "ab".repeat(3000)));
    for (p, kind, dev) in [
        ("dev/null", "c", "1 3"),
        ("dev/loop0", "b", "7 0"),
        ("run/initctl", "p", ""),
    ] {
        std::fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
        let mut args = vec![dir.join(p).display().to_string(), kind.to_string()];
        args.extend(dev.split_whitespace().map(String::from));
        assert!(std::process::Command::new("mknod")
            .args(&args)
            .status()
            .unwrap()
            .success());
    }
}

#[test]
fn the_kernel_sees_what_mke2fs_copied() {
    // Validates the oracle itself: a tree copied into ext4 by `mke2fs -d` and mounted
    // by the kernel has the same snapshot as the source directory.
    if !require_root("kernel::the_kernel_sees_what_mke2fs_copied") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    rootfs_like_source(&src);
    let img = tmp.path().join("rootfs.img");
    let st = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success());
    let len = std::fs::metadata(&img).unwrap().len();
    let m = mount_ro(&img, 0, len, "ext4").expect("loop mount");
    let seen = snapshot(m.path(), &["lost+found"]);
    let want = snapshot(&src, &[]);
    // The root directory itself differs (mke2fs gives it its own owner/mode).
    assert_eq!(seen[1..], want[1..]);
    assert!(
        seen.iter().any(|l| l.contains("security.capability=0x01000002")),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("hardlink -> /usr/bin/sudo")),
        "{seen:#?}"
    );
}
