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
    // CI runs as root with loop devices: there this fails.
    crate::oracle::unavailable(&format!("{test} needs root and /dev/loop-control"));
    false
}

/// Whether the running kernel can mount `fstype`. Some kernels (this project's CI VM's
/// among them) are built without `vfat`; there the FAT oracle is `fsck.fat` and mtools
/// alone, and the kernel test says so instead of failing.
pub fn kernel_supports(fstype: &str, test: &str) -> bool {
    let known = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some(fstype)))
        .unwrap_or(false);
    if !known {
        crate::oracle::skipped(&format!(
            "{test}: this kernel cannot mount {fstype} (not in /proc/filesystems)"
        ));
    }
    known
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

/// A host directory as the formats' neutral node list (walk order), with its contents in
/// memory and its xattrs as `getfattr` reports them.
pub fn nodes_from_dir(root: &Path) -> (Vec<w4b::formats::fs::Node>, w4b::formats::fs::MemContents) {
    use w4b::formats::fs::{MemContents, Node, NodeKind};
    let attrs = xattrs(root);
    let mut contents = MemContents::default();
    let mut nodes = Vec::new();
    let mut first_path_of_inode: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap();
        let ft = meta.file_type();
        let path = format!("/{}", rel.display());
        let path = if path == "/" {
            path
        } else {
            path.trim_end_matches('/').to_string()
        };
        let rdev = meta.rdev();
        let (major, minor) = (((rdev >> 8) & 0xfff) as u32, (rdev & 0xff) as u32);
        let kind = if ft.is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&full)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            children.sort();
            for c in children.into_iter().rev() {
                stack.push(rel.join(c));
            }
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink {
                target: std::fs::read_link(&full).unwrap().display().to_string(),
            }
        } else if ft.is_file() {
            match first_path_of_inode.get(&meta.ino()) {
                Some(first) if meta.nlink() > 1 => NodeKind::HardLink {
                    target: first.clone(),
                },
                _ => {
                    first_path_of_inode.insert(meta.ino(), path.clone());
                    let bytes = std::fs::read(&full).unwrap();
                    NodeKind::File {
                        size: bytes.len() as u64,
                        content: contents.add(&bytes),
                    }
                }
            }
        } else if ft.is_char_device() {
            NodeKind::CharDev { major, minor }
        } else if ft.is_block_device() {
            NodeKind::BlockDev { major, minor }
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Socket
        };
        let xattrs = attrs
            .get(&full)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), hex::decode(v.trim_start_matches("0x")).unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        nodes.push(Node {
            path,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            xattrs,
        });
    }
    (nodes, contents)
}

#[test]
fn the_kernel_reads_a_fat32_bootfs_we_wrote() {
    use w4b::formats::fat::{write_fat32, FatOptions};
    let name = "kernel::the_kernel_reads_a_fat32_bootfs_we_wrote";
    if !require_root(name) || !kernel_supports("vfat", name) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let w = |p: &str, b: &[u8]| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    };
    w("config.txt", b"dtoverlay=w1-gpio,gpiopin=4\n");
    w(
        "cmdline.txt",
        b"console=serial0,115200 root=PARTUUID=1a2b3c4d-02 rootwait\n",
    );
    w(
        "kernel8.img",
        &(0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>(),
    );
    for i in 0..150 {
        w(
            &format!("overlays/overlay-number-{i:03}.dtbo"),
            format!("overlay {i}").as_bytes(),
        );
    }
    w("bcm2711-rpi-4-b.dtb", b"dtb");
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    let (nodes, contents) = nodes_from_dir(&src);
    let img = tmp.path().join("bootfs.img");
    let size = 64u64 << 20;
    let mut f = std::fs::File::create(&img).unwrap();
    f.set_len(size).unwrap();
    write_fat32(
        &mut f,
        &nodes,
        &contents,
        &FatOptions::new(size, 0x1a2b_3c4d, "bootfs"),
    )
    .unwrap();
    drop(f);
    let m = mount_ro(&img, 0, size, "vfat").expect("loop mount");
    // FAT has no owners or modes: compare what it keeps (names, types, sizes, bytes).
    let strip = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                let mut parts: Vec<&str> = l.split(' ').collect();
                if parts.get(1) == Some(&"file") {
                    parts.truncate(4);
                } else {
                    parts.truncate(2);
                }
                parts.join(" ")
            })
            .collect()
    };
    assert_eq!(strip(snapshot(m.path(), &[])), strip(snapshot(&src, &[])));
}

#[test]
fn the_kernel_reads_an_ext4_rootfs_we_wrote() {
    use w4b::formats::ext4::write::{write_ext4, Ext4Options, Size};
    let name = "kernel::the_kernel_reads_an_ext4_rootfs_we_wrote";
    if !require_root(name) || !kernel_supports("ext4", name) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    rootfs_like_source(&src);
    // A directory too big for one block, and a file with several extents' worth of data.
    for i in 0..3000 {
        std::fs::write(src.join(format!("etc/entry-{i:05}")), i.to_string()).unwrap();
    }
    std::fs::write(
        src.join("usr/bin/big"),
        (0..9_000_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let (nodes, contents) = nodes_from_dir(&src);
    let img = tmp.path().join("rootfs.img");
    let mut f = std::fs::File::create(&img).unwrap();
    let opts = Ext4Options::new(Size::Fixed(96 << 20), [7; 16], [9; 16], 1_700_000_000);
    write_ext4(&mut f, &nodes, &contents, &opts).unwrap();
    drop(f);
    let len = std::fs::metadata(&img).unwrap().len();
    let m = mount_ro(&img, 0, len, "ext4").expect("loop mount");
    let seen = snapshot(m.path(), &["lost+found"]);
    let want = snapshot(&src, &[]);
    assert_eq!(seen, want);
}
