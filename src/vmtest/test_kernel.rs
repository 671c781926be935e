//! The pinned generic kernel that boots images whose own kernel cannot drive the virtual
//! machine (Raspberry Pi OS: `kernel8.img`, `kernel_2712.img` know only Raspberry Pi
//! hardware). It is made from two `.deb`s of the `//packages:w4b-test-kernel` set, locked
//! in `w4b.lock` and fetched by sha256 like every package: Debian's `linux-image-<release>`
//! (the kernel and its modules) and `busybox-static`.
//!
//! What QEMU boots:
//!
//! - `vmlinuz`: `/boot/vmlinuz-<release>` from the kernel package, as it is.
//! - `initrd`: a newc cpio archive (`crate::formats::cpio`), written here, deterministic
//!   (sorted, every time 0, owner root), uncompressed (the kernel takes it as is, and the
//!   modules would gain little):
//!   - `/bin/busybox` (static) and `/bin/sh`;
//!   - the modules of [`ROOT_MODULES`] that the kernel has as modules, with every module they
//!     `depends=` on (read from each module's `.modinfo`: the package ships no `modules.dep`,
//!     `depmod` writes it on installation), under `/lib/modules/<release>/`, with the
//!     package's `modules.builtin*` and `modules.order`;
//!   - `/init` ([`INIT`]): mounts `/proc`, `/sys`, `/dev`; loads the modules in dependency
//!     order; waits for the root device the harness names with `w4b.root=` (the image's
//!     root partition: QEMU's first disk, `/dev/vda<N>`); mounts it; mounts a `tmpfs` over
//!     its `/lib/modules` and copies the modules there (and, when the image has `depmod`,
//!     runs it on that copy, so the image's udev loads what it asks for); moves `/dev`,
//!     `/proc` and `/sys` over and hands over to the image's `/sbin/init` with
//!     `switch_root`. The image is never modified: the `tmpfs` is memory, and QEMU opens the
//!     disk with `snapshot=on` anyway.
//!
//! A failure in `/init` is printed on the console (`w4b initramfs: …`) and ends PID 1: the
//! kernel panics, restarts (`panic=1`), and `-no-reboot` ends QEMU, so the host sees it at
//! once and the boot log says why.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::formats::cpio::{write_newc, CpioEntry, CpioError, CpioKind};
use crate::formats::deb::archive::Deb;
use crate::formats::kmod;

/// The version of what [`build`] makes (the module list, the `/init` script, the layout).
/// Part of the `test-kernel` step's key: bump it whenever the initramfs would change.
pub const BUILDER_VERSION: u32 = 1;

/// The schema of the step's `meta` output.
pub const META_SCHEMA: &str = "w4b.test-kernel/1";

/// The modules `/init` loads before it mounts the root: the virt machine's virtio
/// transports and devices (the disks, the harness's results port, the network card, the
/// random number generator), ext4 and the checksum it needs, FAT and the code pages a
/// Raspberry Pi image's `/boot/firmware` line in `/etc/fstab` needs (without them the
/// image's `local-fs.target` fails), the virt machine's clock, and what systemd loads by
/// itself. Names the kernel has
/// built in are fine (nothing to load); names it has neither way are noted in `meta`.
pub const ROOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "virtio_rng",
    "crc32c_generic",
    "libcrc32c",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "rtc_pl031",
    // What systemd loads itself early (`autofs4`) or through `modprobe@.service`.
    "autofs4",
    "configfs",
    "fuse",
    "loop",
];

/// `/init`, with `@RELEASE@` replaced by the kernel's release.
const INIT: &str = r#"#!/bin/sh
# The initramfs of w4b's pinned test kernel (w4b test): load the virt machine's drivers,
# mount the image's root, lend it this kernel's modules on a tmpfs, hand over to its init.
export PATH=/bin
release=@RELEASE@
say() { echo "w4b initramfs: $*"; }
fail() { say "$*"; say "cannot boot the image with the pinned test kernel"; exit 1; }
busybox mkdir -p /proc /sys /dev /newroot
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
while read -r m; do
    busybox insmod "/lib/modules/$release/$m" || say "cannot load $m"
done < /w4b-modules
root=
init=/sbin/init
for arg in $(busybox cat /proc/cmdline); do
    case "$arg" in
        w4b.root=*) root="${arg#w4b.root=}" ;;
        init=*) init="${arg#init=}" ;;
    esac
done
[ -n "$root" ] || fail "no w4b.root= on the kernel command line"
i=0
while [ ! -b "$root" ]; do
    [ "$i" -lt 600 ] || fail "$root did not appear within 60 s"
    busybox sleep 0.1
    i=$((i + 1))
done
busybox mount -t ext4 -o rw "$root" /newroot || fail "cannot mount $root"
if [ -d /newroot/lib/modules ]; then
    busybox mount -t tmpfs -o mode=0755 w4b-test-modules /newroot/lib/modules \
        || fail "cannot mount a tmpfs on /lib/modules"
    busybox cp -a "/lib/modules/$release" /newroot/lib/modules/ || fail "cannot copy the modules"
    # The image's own `depmod` (its links may be absolute: look inside the image).
    PATH=/usr/sbin:/usr/bin:/sbin:/bin busybox chroot /newroot depmod -a "$release" \
        || say "the image's depmod did not run: its udev cannot load this kernel's modules"
fi
for d in dev proc sys; do
    [ -d "/newroot/$d" ] && busybox mount --move "/$d" "/newroot/$d"
done
say "switching to $root ($init)"
exec busybox switch_root /newroot "$init"
"#;

/// What [`build`] made, beside the two files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub schema: String,
    /// The kernel package (`linux-image-6.1.0-28-arm64`).
    pub package: String,
    /// Its version (`6.1.119-1`).
    pub version: String,
    /// The kernel release (`uname -r`: `6.1.0-28-arm64`).
    pub release: String,
    /// The modules `/init` loads, in order (paths below `/lib/modules/<release>`).
    pub modules: Vec<String>,
    /// Names of [`ROOT_MODULES`] this kernel has neither built in nor as a module.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<String>,
}

/// The pinned kernel, ready to boot.
#[derive(Debug)]
pub struct TestKernel {
    pub vmlinuz: Vec<u8>,
    pub initrd: Vec<u8>,
    pub meta: Meta,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TestKernelError {
    #[error("cannot read the package `{package}`")]
    #[diagnostic(code(w4b::test_kernel::deb))]
    Deb {
        package: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the package `{package}` has no {what}")]
    #[diagnostic(
        code(w4b::test_kernel::contents),
        help("`//packages:w4b-test-kernel` must lock Debian's `linux-image-<release>` (through `linux-image-arm64`) and `busybox-static`; check the set and run `w4b lock`")
    )]
    Missing { package: String, what: &'static str },
    #[error("cannot write the initramfs")]
    #[diagnostic(code(w4b::test_kernel::cpio))]
    Cpio(#[from] CpioError),
}

/// Every file of a `.deb`'s data archive that `keep` wants, by its path without `./`.
fn files_of(
    package: &str,
    deb: impl Read,
    mut keep: impl FnMut(&str) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>, TestKernelError> {
    let io = |source: std::io::Error| TestKernelError::Deb {
        package: package.to_owned(),
        source,
    };
    let deb = Deb::open(deb).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let mut archive = tar::Archive::new(deb.into_data());
    let mut out = BTreeMap::new();
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").trim_start_matches('/').to_owned();
        if keep(&path) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(io)?;
            out.insert(path, bytes);
        }
    }
    Ok(out)
}

/// `lib/modules/<release>/<rest>` (or below `usr/`): `(release, rest)`.
fn module_path(path: &str) -> Option<(&str, &str)> {
    let p = path.strip_prefix("usr/").unwrap_or(path);
    p.strip_prefix("lib/modules/")?.split_once('/')
}

/// The modules to load for `roots`, dependencies first, each once; and the roots found
/// nowhere. `modules` maps a module's name to its path and its `depends=`; `builtin`
/// holds the names built into the kernel.
pub fn load_order(
    roots: &[&str],
    modules: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    fn visit(
        name: &str,
        modules: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return;
        }
        let Some((path, deps)) = modules.get(&name) else {
            return;
        };
        for d in deps {
            visit(d, modules, seen, order);
        }
        order.push(path.clone());
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    let mut absent = Vec::new();
    for r in roots {
        let name = r.replace('-', "_");
        if !modules.contains_key(&name) && !builtin.contains(&name) {
            absent.push(name.clone());
        }
        visit(&name, modules, &mut seen, &mut order);
    }
    (order, absent)
}

/// `path` and its parents as directories of `entries`.
fn dir(entries: &mut BTreeMap<String, CpioEntry>, path: &str) {
    let mut at = String::new();
    for c in path.split('/') {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(c);
        entries.entry(at.clone()).or_insert(CpioEntry {
            path: at.clone(),
            mode: 0o755,
            kind: CpioKind::Dir,
        });
    }
}

/// `path` in `entries`, with its parent directories.
fn file(entries: &mut BTreeMap<String, CpioEntry>, path: &str, mode: u32, kind: CpioKind) {
    if let Some((parent, _)) = path.rsplit_once('/') {
        dir(entries, parent);
    }
    entries.insert(
        path.to_owned(),
        CpioEntry {
            path: path.to_owned(),
            mode,
            kind,
        },
    );
}

/// Makes the kernel and initramfs from the two packages. `kernel_deb` is called twice:
/// the first pass reads every module's dependencies, the second keeps only the modules
/// needed (a kernel package unpacks to some 400 MB of modules; holding them all is not
/// worth one more decompression).
pub fn build<R: Read>(
    kernel_package: (&str, &str),
    mut kernel_deb: impl FnMut() -> std::io::Result<R>,
    busybox_deb: impl Read,
) -> Result<TestKernel, TestKernelError> {
    let (package, version) = kernel_package;
    let open_err = |source| TestKernelError::Deb {
        package: package.to_owned(),
        source,
    };
    // Pass 1: the kernel, `modules.builtin`, and every module's dependencies.
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut release: Option<String> = None;
    let first = files_of(package, kernel_deb().map_err(open_err)?, |path| {
        if path.starts_with("boot/vmlinuz-") {
            return true;
        }
        let Some((_, rest)) = module_path(path) else {
            return false;
        };
        rest.starts_with("modules.builtin") || rest == "modules.order" || kmod::module_name(rest).is_some()
    })?;
    let mut kept = BTreeMap::new();
    for (path, bytes) in first {
        if let Some(r) = path.strip_prefix("boot/vmlinuz-") {
            release = Some(r.to_owned());
            kept.insert(path, bytes);
            continue;
        }
        let Some((_, rest)) = module_path(&path) else {
            continue;
        };
        match kmod::module_name(rest) {
            // Only uncompressed modules are read; Debian bookworm's are.
            Some(name) if rest.ends_with(".ko") => {
                let d = kmod::depends(&bytes).unwrap_or_default();
                deps.insert(name, (rest.to_owned(), d));
            }
            Some(_) => {}
            None => {
                kept.insert(path, bytes);
            }
        }
    }
    let release = release.ok_or(TestKernelError::Missing {
        package: package.to_owned(),
        what: "`/boot/vmlinuz-<release>`",
    })?;
    let vmlinuz = kept
        .remove(&format!("boot/vmlinuz-{release}"))
        .unwrap_or_default();
    let builtin: BTreeSet<String> = kept
        .iter()
        .filter(|(p, _)| p.ends_with(&format!("{release}/modules.builtin")))
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(kmod::module_name)
                .collect::<Vec<_>>()
        })
        .collect();
    let (order, absent) = load_order(ROOT_MODULES, &deps, &builtin);
    let wanted: BTreeSet<&str> = order.iter().map(String::as_str).collect();

    // Pass 2: the bytes of the modules needed.
    let second = files_of(package, kernel_deb().map_err(open_err)?, |path| {
        module_path(path).is_some_and(|(r, rest)| r == release && wanted.contains(rest))
    })?;
    let busybox = files_of("busybox-static", busybox_deb, |p| {
        p == "bin/busybox" || p == "usr/bin/busybox"
    })?
    .into_values()
    .next()
    .ok_or(TestKernelError::Missing {
        package: "busybox-static".into(),
        what: "`/bin/busybox`",
    })?;

    let mut entries: BTreeMap<String, CpioEntry> = BTreeMap::new();
    for d in ["dev", "proc", "sys", "newroot"] {
        file(&mut entries, d, 0o755, CpioKind::Dir);
    }
    file(&mut entries, "bin/busybox", 0o755, CpioKind::File(busybox));
    file(&mut entries, "bin/sh", 0o777, CpioKind::Symlink("busybox".into()));
    file(
        &mut entries,
        "init",
        0o755,
        CpioKind::File(INIT.replace("@RELEASE@", &release).into_bytes()),
    );
    let mut list = order.join("\n");
    list.push('\n');
    file(
        &mut entries,
        "w4b-modules",
        0o644,
        CpioKind::File(list.into_bytes()),
    );
    for (path, bytes) in second.into_iter().chain(kept) {
        let Some((r, rest)) = module_path(&path) else {
            continue;
        };
        if r == release {
            file(
                &mut entries,
                &format!("lib/modules/{release}/{rest}"),
                0o644,
                CpioKind::File(bytes),
            );
        }
    }
    let entries: Vec<CpioEntry> = entries.into_values().collect();
    let mut initrd = Vec::new();
    write_newc(&mut initrd, &entries)?;
    Ok(TestKernel {
        vmlinuz,
        initrd,
        meta: Meta {
            schema: META_SCHEMA.to_owned(),
            package: package.to_owned(),
            version: version.to_owned(),
            release,
            modules: order,
            absent,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(entries: &[(&str, &str, &[&str])]) -> BTreeMap<String, (String, Vec<String>)> {
        entries
            .iter()
            .map(|(n, p, d)| {
                (
                    (*n).to_owned(),
                    ((*p).to_owned(), d.iter().map(|s| (*s).to_owned()).collect()),
                )
            })
            .collect()
    }

    /// Dependencies come first, each module once, in a fixed order; a root built into the
    /// kernel loads nothing, one found nowhere is named.
    #[test]
    fn the_closure_loads_dependencies_first_and_once() {
        let modules = m(&[
            ("ext4", "kernel/fs/ext4/ext4.ko", &["mbcache", "jbd2", "crc16"]),
            ("jbd2", "kernel/fs/jbd2/jbd2.ko", &[]),
            ("mbcache", "kernel/fs/mbcache.ko", &[]),
            ("crc16", "kernel/lib/crc16.ko", &[]),
            ("virtio_blk", "kernel/drivers/block/virtio_blk.ko", &[]),
            ("vfat", "kernel/fs/fat/vfat.ko", &["fat"]),
            ("fat", "kernel/fs/fat/fat.ko", &[]),
            ("virtio_rng", "kernel/drivers/char/hw_random/virtio-rng.ko", &[]),
            ("unused", "kernel/unused.ko", &[]),
        ]);
        let builtin: BTreeSet<String> = ["virtio_pci".to_owned()].into();
        let (order, absent) = load_order(
            &[
                "virtio_pci",
                "virtio_blk",
                "ext4",
                "jbd2",
                "vfat",
                "virtio-rng",
                "nls_utf8",
            ],
            &modules,
            &builtin,
        );
        assert_eq!(
            order,
            [
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/fs/mbcache.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/lib/crc16.ko",
                "kernel/fs/ext4/ext4.ko",
                "kernel/fs/fat/fat.ko",
                "kernel/fs/fat/vfat.ko",
                "kernel/drivers/char/hw_random/virtio-rng.ko",
            ]
        );
        assert_eq!(absent, ["nls_utf8"]);
    }

    #[test]
    fn a_dependency_cycle_ends() {
        let modules = m(&[("a", "a.ko", &["b"]), ("b", "b.ko", &["a"])]);
        let (order, _) = load_order(&["a"], &modules, &BTreeSet::new());
        assert_eq!(order, ["b.ko", "a.ko"]);
    }

    /// A `.deb` of `files` (path below the root, bytes), built by `dpkg-deb`.
    fn dpkg_deb(dir: &std::path::Path, name: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        // dpkg-deb wants 0755 whatever the umask (CI runs with 077).
        std::fs::set_permissions(
            root.join("DEBIAN"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!("Package: {name}\nVersion: 1\nArchitecture: arm64\nMaintainer: w4b <w4b@example.org>\nDescription: test\n"),
        )
        .unwrap();
        for (path, bytes) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let out = dir.join(format!("{name}.deb"));
        #[allow(clippy::disallowed_methods)] // the fixture's tool
        let st = std::process::Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&out)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        std::fs::read(out).unwrap()
    }

    /// Two packages shaped like Debian's give the kernel as it is and an initramfs that
    /// `cpio` lists: busybox, `/init` for this release, the roots' modules with their
    /// dependencies and nothing else; the same packages give the same bytes.
    #[test]
    fn the_packages_make_the_kernel_and_a_reproducible_initramfs() {
        if !crate::oracle::have_all(&["dpkg-deb", "cpio"]) {
            return;
        }
        use crate::formats::kmod::tests::tiny_module;
        let dir = tempfile::tempdir().unwrap();
        let rel = "6.1.0-9-arm64";
        let m = |p: &str| format!("lib/modules/{rel}/kernel/{p}");
        let ext4 = tiny_module(b"depends=jbd2,crc16\0name=ext4\0");
        let jbd2 = tiny_module(b"depends=\0name=jbd2\0");
        let crc16 = tiny_module(b"depends=\0name=crc16\0");
        let blk = tiny_module(b"depends=\0name=virtio_blk\0");
        let snd = tiny_module(b"depends=\0name=snd\0");
        let builtin = b"kernel/drivers/virtio/virtio_pci.ko\n".to_vec();
        let kernel_files: Vec<(String, Vec<u8>)> = vec![
            (format!("boot/vmlinuz-{rel}"), b"the kernel".to_vec()),
            (m("fs/ext4/ext4.ko"), ext4),
            (m("fs/jbd2/jbd2.ko"), jbd2),
            (m("lib/crc16.ko"), crc16),
            (m("drivers/block/virtio_blk.ko"), blk),
            (m("sound/core/snd.ko"), snd),
            (format!("lib/modules/{rel}/modules.builtin"), builtin),
        ];
        let refs: Vec<(&str, &[u8])> = kernel_files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let kernel = dpkg_deb(dir.path(), "linux-image-6.1.0-9-arm64", &refs);
        let busybox = dpkg_deb(dir.path(), "busybox-static", &[("bin/busybox", b"busybox!")]);
        let make = || {
            build(
                ("linux-image-6.1.0-9-arm64", "6.1.99-1"),
                || Ok(kernel.as_slice()),
                busybox.as_slice(),
            )
            .unwrap()
        };
        let k = make();
        assert_eq!(k.vmlinuz, b"the kernel");
        assert_eq!(k.meta.release, rel);
        assert_eq!(
            k.meta.modules,
            [
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/lib/crc16.ko",
                "kernel/fs/ext4/ext4.ko"
            ]
        );
        assert!(k.meta.absent.contains(&"vfat".to_owned()));
        assert!(!k.meta.absent.contains(&"virtio_pci".to_owned()), "built in");
        assert_eq!(make().initrd, k.initrd, "the same packages, the same bytes");

        let archive = dir.path().join("initrd.cpio");
        std::fs::write(&archive, &k.initrd).unwrap();
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        #[allow(clippy::disallowed_methods)] // the oracle
        let o = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet"])
            .current_dir(&x)
            .stdin(std::fs::File::open(&archive).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(x.join("bin/busybox")).unwrap(), b"busybox!");
        let init = std::fs::read_to_string(x.join("init")).unwrap();
        assert!(init.contains(&format!("release={rel}\n")), "{init}");
        assert_eq!(
            std::fs::read_to_string(x.join("w4b-modules")).unwrap(),
            format!("{}\n", k.meta.modules.join("\n"))
        );
        let mods = x.join("lib/modules").join(rel);
        assert!(mods.join("kernel/fs/ext4/ext4.ko").exists());
        assert!(mods.join("modules.builtin").exists());
        assert!(
            !mods.join("kernel/sound/core/snd.ko").exists(),
            "only what the roots need"
        );
        // A package without a kernel is named.
        let empty = dpkg_deb(dir.path(), "linux-image-empty", &[("usr/share/doc/x", b"x")]);
        let err = build(
            ("linux-image-empty", "1"),
            || Ok(empty.as_slice()),
            busybox.as_slice(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no `/boot/vmlinuz-<release>`"), "{err}");
    }
}
