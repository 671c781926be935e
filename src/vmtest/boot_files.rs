//! What the virtual machine needs from the image before it can start: the root
//! partition's `PARTUUID`, the image's own kernel and initramfs, and its default target.
//!
//! `-M virt` has no Raspberry Pi firmware to read the boot partition, so QEMU loads the
//! kernel itself (`-kernel`, `-initrd`); they are copied out of the root filesystem with
//! w4b's ext4 reader, never by mounting. A Debian image has them where `linux-image-*`
//! puts them: `/boot/vmlinuz-<version>` and `/boot/initrd.img-<version>`, with `/vmlinuz`
//! and `/initrd.img` pointing at the current pair. Those are followed when present;
//! otherwise the newest version in `/boot` that has both files wins (Debian's version
//! order). Raspberry Pi kernels (`kernel8.img` on the boot partition, `*-rpi-*` versions
//! in `/boot`) drive only Raspberry Pi hardware and are not used; they are named in the
//! error so the user knows what was found.
//!
//! The root is the first ext4 partition holding an `os-release` (else the first ext4
//! partition); symlinks in paths (a
//! merged `/usr`: `/lib` → `usr/lib`) are resolved component by component, as the kernel
//! would, bounded to 40 links.

use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::VmTestError;
use crate::formats::deb::version::Version;
use crate::formats::ext4::{Ext4, Ext4Error};
use crate::formats::fat::read_fat;
use crate::formats::fs::NodeKind;
use crate::image::{Disk, FsKind};

/// Symlinks followed in one path before giving up (Linux's `MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;
/// The target a system boots into when its image names none.
const DEFAULT_TARGET: &str = "multi-user.target";

/// Where the booted kernel came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum KernelSource {
    /// The image's own, at these paths of its root filesystem.
    Image {
        kernel: String,
        initrd: String,
        version: Option<String>,
    },
    /// Files on this machine, given with `--kernel` and `--initrd`.
    Override { kernel: PathBuf, initrd: PathBuf },
    /// The pinned generic kernel (`//packages:w4b-test-kernel`), because the image has
    /// none that boots the virtual machine; `instead_of` names the kernels it has.
    Pinned {
        package: String,
        version: String,
        release: String,
        instead_of: Vec<String>,
    },
}

/// The root filesystem found: where it is and what it says about booting.
#[derive(Debug)]
pub struct Root {
    pub partition: u32,
    pub partuuid: String,
    pub offset: u64,
    pub len: u64,
    /// The image's default target (`multi-user.target` when it names none).
    pub default_target: String,
    /// Whether it is a W4B hive's root (it has the first-boot runner): `w4b test IMAGE`
    /// then runs the hive checklist in the guest unless told otherwise.
    pub is_hive: bool,
}

/// The root partition of `disk` (see the module doc).
pub fn find_root(disk: &Disk, image: &Path) -> Result<Root, VmTestError> {
    let table = disk.table.as_ref().ok_or_else(|| VmTestError::NoRoot {
        path: image.to_path_buf(),
    })?;
    // The first ext4 partition with an `os-release`, else the first ext4 partition.
    let mut candidates = Vec::new();
    for fs in disk.filesystems.iter().filter(|f| f.kind == FsKind::Ext4) {
        let Some(index) = fs.partition else { continue };
        let ext4 = open(disk, fs.offset, fs.len, image)?;
        let has_os_release = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .any(|p| matches!(resolve(&ext4, p), Ok(Some(_))));
        candidates.push((!has_os_release, index, fs));
    }
    candidates.sort_by_key(|(no_os_release, index, _)| (*no_os_release, *index));
    if let Some((_, index, fs)) = candidates.first() {
        let (index, fs) = (*index, *fs);
        let ext4 = open(disk, fs.offset, fs.len, image)?;
        let partuuid = table.partuuid(index).ok_or_else(|| VmTestError::NoRoot {
            path: image.to_path_buf(),
        })?;
        let default_target = default_target(&ext4).map_err(|source| VmTestError::RootFs {
            path: image.to_path_buf(),
            source,
        })?;
        let is_hive = is_hive(&ext4);
        return Ok(Root {
            partition: index,
            partuuid,
            offset: fs.offset,
            len: fs.len,
            default_target,
            is_hive,
        });
    }
    Err(VmTestError::NoRoot {
        path: image.to_path_buf(),
    })
}

fn open<'a>(
    disk: &'a Disk,
    offset: u64,
    len: u64,
    image: &Path,
) -> Result<Ext4<&'a std::fs::File>, VmTestError> {
    Ext4::open(&disk.file, offset, len).map_err(|source| VmTestError::RootFs {
        path: image.to_path_buf(),
        source,
    })
}

/// The image's kernel and initramfs, copied into `dir` as `vmlinuz` and `initrd.img`.
pub fn extract_kernel(
    disk: &Disk,
    root: &Root,
    image: &Path,
    dir: &Path,
) -> Result<(KernelSource, PathBuf, PathBuf), VmTestError> {
    let ext4 = open(disk, root.offset, root.len, image)?;
    let fs_err = |source| VmTestError::RootFs {
        path: image.to_path_buf(),
        source,
    };
    let (kernel, initrd, version) = match find_kernel(&ext4).map_err(fs_err)? {
        Found::Pair {
            kernel,
            initrd,
            version,
        } => (kernel, initrd, version),
        Found::NoInitrd { kernel, initrd } => {
            return Err(VmTestError::NoInitrd {
                path: image.to_path_buf(),
                kernel,
                initrd,
            })
        }
        Found::None { mut others } => {
            others.extend(pi_kernels(disk));
            return Err(VmTestError::NoKernel {
                path: image.to_path_buf(),
                found: others,
            });
        }
    };
    let kernel_out = dir.join("vmlinuz");
    let initrd_out = dir.join("initrd.img");
    copy_out(&ext4, &kernel, &kernel_out).map_err(fs_err)?;
    copy_out(&ext4, &initrd, &initrd_out).map_err(fs_err)?;
    Ok((
        KernelSource::Image {
            kernel,
            initrd,
            version,
        },
        kernel_out,
        initrd_out,
    ))
}

/// What [`find_kernel`] found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Pair {
        kernel: String,
        initrd: String,
        version: Option<String>,
    },
    NoInitrd {
        kernel: String,
        initrd: String,
    },
    /// No usable kernel; `others` are the kernels that were passed over.
    None {
        others: Vec<String>,
    },
}

/// Whether a kernel version is one of Raspberry Pi's own (`6.1.0-rpi7-rpi-v8`,
/// `6.6.51+rpt-rpi-2712`), built only for its hardware.
fn is_pi_kernel(version: &str) -> bool {
    version.contains("rpi") || version.contains("+rpt")
}

fn find_kernel<R: Read + Seek>(ext4: &Ext4<R>) -> Result<Found, Ext4Error> {
    // Debian's symlinks first: they name the kernel the system boots by default.
    if let (Some(kernel), Some(initrd)) = (resolve(ext4, "/vmlinuz")?, resolve(ext4, "/initrd.img")?) {
        let version = kernel
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .map(str::to_owned);
        if !version.as_deref().is_some_and(is_pi_kernel) && is_file(ext4, &kernel)? && is_file(ext4, &initrd)?
        {
            return Ok(Found::Pair {
                kernel,
                initrd,
                version,
            });
        }
    }
    let Some(boot) = resolve(ext4, "/boot")? else {
        return Ok(Found::None { others: Vec::new() });
    };
    let Ok(boot_ino) = ext4.lookup(&boot) else {
        return Ok(Found::None { others: Vec::new() });
    };
    let mut versions: Vec<String> = Vec::new();
    let mut others = Vec::new();
    let entries = match ext4.read_dir(boot_ino) {
        Ok(e) => e,
        Err(Ext4Error::WrongType { .. }) => return Ok(Found::None { others }),
        Err(e) => return Err(e),
    };
    for e in entries {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        if let Some(v) = name.strip_prefix("vmlinuz-") {
            if is_pi_kernel(v) {
                others.push(format!("`/boot/{name}`"));
            } else if is_file(ext4, &format!("{boot}/{name}"))? {
                versions.push(v.to_owned());
            }
        }
    }
    // Newest first, in Debian's order (a name that is no Debian version sorts as text).
    versions.sort_by(|a, b| match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => b.cmp(&a),
        _ => b.cmp(a),
    });
    let Some(newest) = versions.first() else {
        others.sort();
        return Ok(Found::None { others });
    };
    for v in &versions {
        let initrd = format!("{boot}/initrd.img-{v}");
        if is_file(ext4, &initrd)? {
            return Ok(Found::Pair {
                kernel: format!("{boot}/vmlinuz-{v}"),
                initrd,
                version: Some(v.clone()),
            });
        }
    }
    Ok(Found::NoInitrd {
        kernel: format!("{boot}/vmlinuz-{newest}"),
        initrd: format!("{boot}/initrd.img-{newest}"),
    })
}

/// Raspberry Pi firmware kernels (`kernel*.img`) on the image's FAT partitions, named for
/// the error.
fn pi_kernels(disk: &Disk) -> Vec<String> {
    let mut out = Vec::new();
    for fs in disk.filesystems.iter().filter(|f| f.kind == FsKind::Fat) {
        let mut r = &disk.file;
        let Ok(fat) = read_fat(&mut r, fs.offset, fs.len) else {
            continue;
        };
        for n in fat.nodes() {
            let name = n.path.trim_start_matches('/');
            if matches!(n.kind, NodeKind::File { .. })
                && !name.contains('/')
                && name.starts_with("kernel")
                && name.ends_with(".img")
            {
                out.push(format!("`{name}` on the boot partition ({})", fs.place()));
            }
        }
    }
    out
}

fn is_file<R: Read + Seek>(ext4: &Ext4<R>, path: &str) -> Result<bool, Ext4Error> {
    match ext4.open_file(path) {
        Ok(_) => Ok(true),
        Err(Ext4Error::NotFound { .. } | Ext4Error::WrongType { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The image's default target: the name `default.target` links to, in
/// `/etc/systemd/system` or else systemd's own directory.
fn default_target<R: Read + Seek>(ext4: &Ext4<R>) -> Result<String, Ext4Error> {
    for link in [
        "/etc/systemd/system/default.target",
        "/usr/lib/systemd/system/default.target",
        "/lib/systemd/system/default.target",
    ] {
        if let Some(path) = resolve(ext4, link)? {
            let name = path.rsplit('/').next().unwrap_or_default();
            if name.ends_with(".target") && name != "default.target" {
                return Ok(name.to_owned());
            }
        }
    }
    Ok(DEFAULT_TARGET.to_owned())
}

/// `path` with every symlink resolved (absolute targets from the root, relative ones
/// from the link's directory, `..` never above `/`), or `None` when some component does
/// not exist.
/// Whether the root is a W4B hive's: it has the first-boot runner (as
/// [`crate::validate::hive::is_hive`] decides for `w4b validate`). One that cannot be read
/// is not.
fn is_hive<R: Read + Seek>(ext4: &Ext4<R>) -> bool {
    matches!(resolve(ext4, crate::steps::firstboot::RUNNER), Ok(Some(_)))
}

fn resolve<R: Read + Seek>(ext4: &Ext4<R>, path: &str) -> Result<Option<String>, Ext4Error> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0u32;
    while let Some(comp) = pending.pop() {
        match comp.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = format!(
            "/{}",
            done.iter().chain([&comp]).cloned().collect::<Vec<_>>().join("/")
        );
        match ext4.read_link(&candidate) {
            Err(Ext4Error::NotFound { .. } | Ext4Error::WrongType { .. }) => return Ok(None),
            Err(e) => return Err(e),
            Ok(None) => done.push(comp),
            Ok(Some(target)) => {
                links = links.saturating_add(1);
                if links > MAX_LINKS {
                    return Ok(None);
                }
                if target.starts_with('/') {
                    done.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_owned),
                );
            }
        }
    }
    Ok(Some(format!("/{}", done.join("/"))))
}

fn copy_out<R: Read + Seek>(ext4: &Ext4<R>, path: &str, to: &Path) -> Result<(), Ext4Error> {
    let io_err = |source: io::Error| Ext4Error::Io { offset: 0, source };
    let mut reader = ext4.open_file(path)?;
    let mut out = std::fs::File::create(to).map_err(io_err)?;
    io::copy(&mut reader, &mut out).map_err(io_err)?;
    out.flush().map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Cursor;

    use super::*;
    use crate::formats::ext4::write::{write_ext4, Ext4Options, Size};
    use crate::formats::fs::{MemContents, Node};

    fn node(path: &str, kind: NodeKind) -> Node {
        let mode = match kind {
            NodeKind::Dir => 0o755,
            NodeKind::Symlink { .. } => 0o777,
            _ => 0o644,
        };
        Node {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: BTreeMap::new(),
        }
    }

    /// A path with the bytes of a file, or the target of a symlink, or neither (a directory).
    type Entry<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>);

    /// An ext4 image of `entries`.
    fn ext4(entries: &[Entry<'_>]) -> Ext4<Cursor<Vec<u8>>> {
        let mut contents = MemContents::default();
        let mut nodes = vec![node("/", NodeKind::Dir)];
        for (path, bytes, link) in entries {
            let kind = match (bytes, link) {
                (Some(b), _) => NodeKind::File {
                    size: b.len() as u64,
                    content: contents.add(b),
                },
                (None, Some(t)) => NodeKind::Symlink { target: (*t).into() },
                (None, None) => NodeKind::Dir,
            };
            nodes.push(node(path, kind));
        }
        let mut img = Cursor::new(Vec::new());
        let opts = Ext4Options::new(Size::Fixed(16 << 20), [7; 16], [9; 16], 1_700_000_000);
        write_ext4(&mut img, &nodes, &contents, &opts).unwrap();
        let len = img.get_ref().len() as u64;
        Ext4::open(img, 0, len).unwrap()
    }

    #[test]
    fn debian_symlinks_name_the_kernel_through_a_merged_usr() {
        let fs = ext4(&[
            ("/boot", None, None),
            ("/boot/vmlinuz-6.1.0-27-arm64", Some(b"old"), None),
            ("/boot/initrd.img-6.1.0-27-arm64", Some(b"old"), None),
            ("/boot/vmlinuz-6.1.0-28-arm64", Some(b"k"), None),
            ("/boot/initrd.img-6.1.0-28-arm64", Some(b"i"), None),
            ("/vmlinuz", None, Some("boot/vmlinuz-6.1.0-27-arm64")),
            ("/initrd.img", None, Some("boot/initrd.img-6.1.0-27-arm64")),
            ("/lib", None, Some("usr/lib")),
            ("/usr", None, None),
            ("/usr/lib", None, None),
            ("/usr/lib/systemd", None, None),
            ("/usr/lib/systemd/system", None, None),
            ("/usr/lib/systemd/system/graphical.target", Some(b""), None),
            (
                "/usr/lib/systemd/system/default.target",
                None,
                Some("graphical.target"),
            ),
        ]);
        // The symlinks win over the newer version: they are what the system boots.
        assert_eq!(
            find_kernel(&fs).unwrap(),
            Found::Pair {
                kernel: "/boot/vmlinuz-6.1.0-27-arm64".into(),
                initrd: "/boot/initrd.img-6.1.0-27-arm64".into(),
                version: Some("6.1.0-27-arm64".into()),
            }
        );
        assert_eq!(default_target(&fs).unwrap(), "graphical.target");
        assert_eq!(
            resolve(&fs, "/lib/systemd/../systemd/system/default.target")
                .unwrap()
                .as_deref(),
            Some("/usr/lib/systemd/system/graphical.target")
        );
        assert_eq!(resolve(&fs, "/lib/nothing").unwrap(), None);
        assert!(!is_hive(&fs), "a plain Debian root is no hive");
    }

    #[test]
    fn a_hive_root_has_the_first_boot_runner() {
        let fs = ext4(&[
            ("/usr", None, None),
            ("/usr/local", None, None),
            ("/usr/local/lib", None, None),
            ("/usr/local/lib/w4b", None, None),
            ("/usr/local/lib/w4b/firstboot", Some(b"#!/bin/sh\n"), None),
        ]);
        assert!(is_hive(&fs));
    }

    #[test]
    fn without_symlinks_the_newest_version_with_an_initramfs_wins() {
        let fs = ext4(&[
            ("/boot", None, None),
            ("/boot/vmlinuz-6.1.0-9-arm64", Some(b"a"), None),
            ("/boot/initrd.img-6.1.0-9-arm64", Some(b"a"), None),
            ("/boot/vmlinuz-6.1.0-10-arm64", Some(b"b"), None),
            ("/boot/initrd.img-6.1.0-10-arm64", Some(b"b"), None),
            ("/boot/vmlinuz-6.1.0-11-arm64", Some(b"c"), None),
        ]);
        // 6.1.0-11 has no initramfs; 6.1.0-10 is newer than 6.1.0-9 in Debian's order.
        assert_eq!(
            find_kernel(&fs).unwrap(),
            Found::Pair {
                kernel: "/boot/vmlinuz-6.1.0-10-arm64".into(),
                initrd: "/boot/initrd.img-6.1.0-10-arm64".into(),
                version: Some("6.1.0-10-arm64".into()),
            }
        );
        assert_eq!(default_target(&fs).unwrap(), "multi-user.target");
    }

    #[test]
    fn raspberry_pi_kernels_are_passed_over_and_named() {
        let fs = ext4(&[
            ("/boot", None, None),
            ("/boot/vmlinuz-6.6.51+rpt-rpi-v8", Some(b"a"), None),
            ("/boot/initrd.img-6.6.51+rpt-rpi-v8", Some(b"a"), None),
        ]);
        assert_eq!(
            find_kernel(&fs).unwrap(),
            Found::None {
                others: vec!["`/boot/vmlinuz-6.6.51+rpt-rpi-v8`".into()]
            }
        );
        let fs = ext4(&[
            ("/boot", None, None),
            ("/boot/vmlinuz-6.1.0-28-arm64", Some(b"k"), None),
        ]);
        assert_eq!(
            find_kernel(&fs).unwrap(),
            Found::NoInitrd {
                kernel: "/boot/vmlinuz-6.1.0-28-arm64".into(),
                initrd: "/boot/initrd.img-6.1.0-28-arm64".into(),
            }
        );
    }

    #[test]
    fn symlink_loops_end() {
        let fs = ext4(&[("/a", None, Some("b")), ("/b", None, Some("a"))]);
        assert_eq!(resolve(&fs, "/a/x").unwrap(), None);
    }
}
