//! Bootstrapping a root from nothing but Debian packages, the way `mmdebstrap` does in
//! chroot mode: an empty merged-`/usr` root, the essential set's files extracted into it,
//! dpkg run over the essential set, then everything else.
//!
//! 1. **Read the control fields** of every `.deb` (in Rust, [`crate::formats::deb`]) and
//!    pick the *essential set*: every `Essential: yes` package and, transitively, what
//!    its `Pre-Depends` and `Depends` name inside the locked set (alternatives and
//!    `Provides` count, as in [`super::order`]). `w4b lock` resolved the closure; this
//!    only splits it, from the packages themselves, so the lock needs no extra field.
//! 2. **The initial root** ([`initial_root`]), a tree built in memory, no root needed:
//!    `bin`, `sbin`, `lib` → `usr/bin`, `usr/sbin`, `usr/lib` (bookworm's merged `/usr`,
//!    as `usrmerge` and mmdebstrap's `merged-usr` hook lay it out; `usr-is-merged`,
//!    which `w4b lock` puts in the closure, checks it in its `preinst`), dpkg's admin
//!    directory (`/var/lib/dpkg/status`, `available` empty, `info/`, `updates/`), and the
//!    essential set's `data.tar` members, in package-name order, each member's path placed
//!    through the merged-`/usr` symlinks (`./bin/sh` is stored as `usr/bin/sh`; the member
//!    `./bin/` itself is the symlink's). This gives dpkg, the shell and the libraries dpkg
//!    needs to run inside the root.
//! 3. **dpkg** through the install engine ([`super::install_with`]) with the initial root
//!    as its base: the same session (private mounts, `policy-rc.d`, qemu-user through
//!    binfmt_misc, or the user-namespace path of [`super::userns`]), first
//!    `dpkg --force-depends --install` of the essential set (dpkg unpacks over the
//!    extracted files, which it owns no record of, then configures all), then the rest in
//!    [`super::order`]'s rounds, deferred triggers once at the end, `dpkg --audit`.
//! 4. The root is captured and normalised against the initial root ([`super::normalise`]):
//!    mtimes clamped to the epoch, logs, apt lists, dpkg and debconf backups, SSH host keys
//!    and `/var/lib/dbus/machine-id` removed, `/etc/machine-id` empty.
//!
//! Why extract in Rust rather than with `dpkg-deb --extract`: the initial root is then a
//! tree like any other (content-addressed, shared with the packages' later unpack),
//! identical whoever runs it, and the merged-`/usr` placement is explicit instead of
//! depending on how a host tool follows symlinks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

use w4b_cache::Digest;

use super::order::Control;
use super::{install_with, Deb, InstallError, Installed, Request};
use crate::formats::deb::Deb as DebFile;
use crate::tree::import::read_tar_into;
use crate::tree::{Blobs, Entry, TreeBuilder, TreePath};

/// The top-level directories that are symlinks into `/usr` on a merged-`/usr` root, for
/// arm64 and armhf (amd64 would add `lib64`, `lib32`, `libx32`).
pub const MERGED_USR: [&str; 3] = ["bin", "sbin", "lib"];

/// A package's control fields, as the bootstrap reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub control: Control,
    pub essential: bool,
}

/// Reads the control fields of the `.deb` in blob `digest`.
pub fn read_package(blobs: &dyn Blobs, digest: &Digest) -> Result<PackageInfo, InstallError> {
    let bad = |reason: String| InstallError::BadControl {
        deb: format!("blob {digest}"),
        reason,
    };
    let deb = DebFile::open(blobs.open(digest)?).map_err(|e| bad(e.to_string()))?;
    let text = deb.control().control_text();
    let control = Control::parse(text).map_err(bad)?;
    let essential = deb
        .control()
        .paragraph()
        .get("Essential")
        .is_some_and(|v| v.trim() == "yes");
    Ok(PackageInfo { control, essential })
}

/// The indices of the essential set: every `Essential: yes` package and what it needs
/// (`Pre-Depends`, `Depends`, transitively, within `packages`), sorted.
pub fn essential_set(packages: &[PackageInfo]) -> Vec<usize> {
    let mut by_name: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, p) in packages.iter().enumerate() {
        by_name.entry(&p.control.package).or_default().insert(i);
        for provided in &p.control.provides {
            by_name.entry(provided).or_default().insert(i);
        }
    }
    let mut set: BTreeSet<usize> = packages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.essential)
        .map(|(i, _)| i)
        .collect();
    let mut queue: Vec<usize> = set.iter().copied().collect();
    while let Some(i) = queue.pop() {
        let Some(p) = packages.get(i) else { continue };
        for alt in p.control.pre_depends.iter().chain(&p.control.depends).flatten() {
            for &j in by_name.get(alt.as_str()).into_iter().flatten() {
                if set.insert(j) {
                    queue.push(j);
                }
            }
        }
    }
    set.into_iter().collect()
}

/// Where a `data.tar` member lands in a merged-`/usr` root: `bin/x` → `usr/bin/x`; the
/// member `bin` itself (a directory entry) is skipped, the symlink stays.
pub fn merged_usr_place(path: TreePath) -> Option<TreePath> {
    let components = path.components();
    match components.split_first() {
        Some((top, rest)) if MERGED_USR.contains(&top.as_str()) => {
            if rest.is_empty() {
                return None;
            }
            let mut moved: Vec<&str> = vec!["usr", top.as_str()];
            moved.extend(rest.iter().map(String::as_str));
            TreePath::from_components(&moved).ok()
        }
        _ => Some(path),
    }
}

/// The initial root: the merged-`/usr` skeleton, dpkg's admin directory, the `seeds`
/// (path relative to `/`, text: configuration that must be in place before the packages'
/// scripts run, see [`RASPI_FIRMWARE_DEFAULTS`]), and the `data.tar` of each package in
/// `extract` (blobs of `.deb`s), later ones over earlier.
/// Directories the skeleton makes carry `epoch` as their mtime.
pub fn initial_root(
    blobs: &dyn Blobs,
    extract: &[Digest],
    seeds: &[(&str, &str)],
    epoch: i64,
) -> Result<Digest, InstallError> {
    let mut b = TreeBuilder::new();
    let path = |p: &str| TreePath::parse(&format!("/{p}"));
    let stamped = |mut e: Entry| {
        e.mtime = epoch;
        e
    };
    b.replace(TreePath::root(), stamped(Entry::dir(0o755)));
    for dir in [
        "usr",
        "etc",
        "var",
        "var/lib",
        "var/lib/dpkg",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
    ] {
        b.replace(path(dir)?, stamped(Entry::dir(0o755)));
    }
    for top in MERGED_USR {
        b.replace(path(&format!("usr/{top}"))?, stamped(Entry::dir(0o755)));
        b.replace(path(top)?, stamped(Entry::symlink(format!("usr/{top}"))));
    }
    let empty = blobs.put(b"")?;
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        b.replace(path(file)?, stamped(Entry::file(empty, 0, 0o644)));
    }
    for (file, text) in seeds {
        let digest = blobs.put(text.as_bytes())?;
        let p = path(file)?;
        let mut parent = p.parent();
        let mut missing = Vec::new();
        while let Some(dir) = parent {
            if dir.is_root() {
                break;
            }
            missing.push(dir.clone());
            parent = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            b.replace(dir, stamped(Entry::dir(0o755)));
        }
        b.replace(p, stamped(Entry::file(digest, text.len() as u64, 0o644)));
    }
    for digest in extract {
        let bad = |reason: String| InstallError::BadControl {
            deb: format!("blob {digest}"),
            reason,
        };
        let deb = DebFile::open(blobs.open(digest)?).map_err(|e| bad(e.to_string()))?;
        read_tar_into(blobs, deb.into_data(), &mut b, &merged_usr_place)?;
    }
    Ok(b.finish(blobs)?)
}

/// Where `raspi-firmware` reads its settings.
pub const RASPI_FIRMWARE_DEFAULTS_PATH: &str = "etc/default/raspi-firmware";

/// `raspi-firmware`'s settings for a bootstrapped root, in place before its scripts run
/// (dpkg keeps a configuration file that is there already and puts the package's, all
/// comments, beside it as `.dpkg-dist`): the root by the label `raspi-layout` gives it, as
/// Debian's own images do, and the consoles of an arm64 Pi (HDMI and the UART at `ttyS1`).
pub const RASPI_FIRMWARE_DEFAULTS: &str = "\
# Written by w4b when the root was bootstrapped: the settings of raspi-firmware's
# scripts, which write /boot/firmware/config.txt and cmdline.txt at every kernel or
# firmware upgrade. See raspi-firmware.dpkg-dist beside this file for every setting.
ROOTPART=LABEL=RASPIROOT
CONSOLES=\"tty0 ttyS1,115200\"
";

/// What to bootstrap.
#[derive(Debug, Clone)]
pub struct BootstrapRequest<'a> {
    /// Every package of the root (a lock entry's closure), as blobs.
    pub debs: &'a [Digest],
    pub arch: super::Arch,
    pub epoch: i64,
    /// An empty or absent directory the engine may fill; left empty.
    pub scratch: &'a std::path::Path,
}

/// What a bootstrap produced: the install's result (its `tree` is the whole root), and
/// the essential set's package names.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub installed: Installed,
    pub initial_root: Digest,
    pub essential: Vec<String>,
}

/// Bootstraps a root from `req.debs`; see the module doc. Needs root, or what
/// [`super::userns`] needs.
pub fn bootstrap(
    blobs: &dyn Blobs,
    req: &BootstrapRequest<'_>,
    cancel: &AtomicBool,
) -> Result<Bootstrapped, InstallError> {
    let infos = req
        .debs
        .iter()
        .map(|d| read_package(blobs, d))
        .collect::<Result<Vec<_>, _>>()?;
    let essential = essential_set(&infos);
    // Extracted in name order, so the initial root does not depend on the lock's order.
    let mut by_name: Vec<usize> = essential.clone();
    by_name.sort_by(|&a, &b| {
        let name = |i: usize| infos.get(i).map(|p| p.control.package.as_str());
        name(a).cmp(&name(b))
    });
    let extract: Vec<Digest> = by_name.iter().filter_map(|&i| req.debs.get(i).copied()).collect();
    // `raspi-firmware`'s scripts write `cmdline.txt` from its defaults file; without one
    // they ask `findmnt` for the root device and probe `/dev` for consoles: the build
    // host's, in a chroot.
    let seeds: Vec<(&str, &str)> = if infos.iter().any(|p| p.control.package == "raspi-firmware") {
        vec![(RASPI_FIRMWARE_DEFAULTS_PATH, RASPI_FIRMWARE_DEFAULTS)]
    } else {
        Vec::new()
    };
    let initial = initial_root(blobs, &extract, &seeds, req.epoch)?;
    let debs: Vec<Deb> = req.debs.iter().map(|d| Deb::Blob(*d)).collect();
    let installed = install_with(
        blobs,
        &Request {
            base: initial,
            debs: &debs,
            arch: req.arch,
            epoch: req.epoch,
            scratch: req.scratch,
        },
        &essential,
        cancel,
    )?;
    Ok(Bootstrapped {
        installed,
        initial_root: initial,
        essential: by_name
            .iter()
            .filter_map(|&i| infos.get(i).map(|p| p.control.package.clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{lookup, Kind, MemBlobs};

    fn info(text: &str, essential: bool) -> PackageInfo {
        PackageInfo {
            control: Control::parse(text).unwrap(),
            essential,
        }
    }

    #[test]
    fn the_essential_set_is_the_essential_packages_and_what_they_need() {
        let set = [
            info("Package: dash\nPre-Depends: libc6\n", true),
            info("Package: libc6\nDepends: libgcc-s1\n", false),
            info("Package: libgcc-s1\n", false),
            info(
                "Package: init-system-helpers\nDepends: usrmerge | usr-is-merged\n",
                true,
            ),
            info("Package: usr-is-merged\n", false),
            info("Package: systemd\nDepends: libc6, mount\n", false),
            info("Package: mount\n", false),
            info("Package: mawk\nProvides: awk\n", false),
            info("Package: base-files\nPre-Depends: awk\n", true),
        ];
        let names: Vec<&str> = essential_set(&set)
            .into_iter()
            .map(|i| set[i].control.package.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "dash",
                "libc6",
                "libgcc-s1",
                "init-system-helpers",
                "usr-is-merged",
                "mawk",
                "base-files"
            ]
        );
    }

    #[test]
    fn members_are_placed_through_the_merged_usr_symlinks() {
        let p = |s: &str| TreePath::parse(s).unwrap();
        assert_eq!(merged_usr_place(p("/bin/sh")), Some(p("/usr/bin/sh")));
        assert_eq!(
            merged_usr_place(p("/lib/aarch64-linux-gnu/libc.so.6")),
            Some(p("/usr/lib/aarch64-linux-gnu/libc.so.6"))
        );
        assert_eq!(merged_usr_place(p("/sbin")), None);
        assert_eq!(merged_usr_place(p("/etc/passwd")), Some(p("/etc/passwd")));
        assert_eq!(merged_usr_place(p("/library/x")), Some(p("/library/x")));
        assert_eq!(merged_usr_place(p("/usr/lib/x")), Some(p("/usr/lib/x")));
    }

    /// A `.deb` built in memory: `debian-binary`, `control.tar.gz`, `data.tar.xz` in an
    /// `ar` archive, as deb(5) lays it out.
    fn deb(control: &str, files: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
            let mut t = tar::Builder::new(Vec::new());
            for (name, kind, data, link) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(*kind);
                h.set_mode(if *kind == tar::EntryType::Directory {
                    0o755
                } else {
                    0o644
                });
                h.set_size(data.len() as u64);
                h.set_mtime(1_600_000_000);
                h.set_uid(0);
                h.set_gid(0);
                if !link.is_empty() {
                    h.set_link_name(link).unwrap();
                }
                t.append_data(&mut h, name, *data).unwrap();
            }
            t.into_inner().unwrap()
        }
        let control_tar = tar_of(&[("./control", tar::EntryType::Regular, control.as_bytes(), "")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &control_tar).unwrap();
        let control_gz = gz.finish().unwrap();
        let data = tar_of(files);
        let mut xz = Vec::new();
        let mut enc = liblzma::write::XzEncoder::new(&mut xz, 1);
        std::io::Write::write_all(&mut enc, &data).unwrap();
        enc.finish().unwrap();
        let mut out = b"!<arch>\n".to_vec();
        for (name, body) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_gz),
            ("data.tar.xz", xz),
        ] {
            out.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .bytes(),
            );
            out.extend(&body);
            if body.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn the_initial_root_extracts_packages_through_merged_usr_with_dpkgs_admin_dir() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let blobs = MemBlobs::new();
        let dash = blobs
            .put(&deb(
                "Package: dash\nVersion: 1\nArchitecture: arm64\nEssential: yes\n",
                &[
                    ("./", Directory, b"", ""),
                    ("./bin/", Directory, b"", ""),
                    ("./bin/dash", Regular, b"ELF dash", ""),
                    ("./bin/sh", Symlink, b"", "dash"),
                    ("./bin/dash-again", Link, b"", "./bin/dash"),
                    ("./usr/share/doc/dash/copyright", Regular, b"(c)", ""),
                ],
            ))
            .unwrap();
        let info = read_package(&blobs, &dash).unwrap();
        assert_eq!(info.control.package, "dash");
        assert!(info.essential);
        let root = initial_root(&blobs, &[dash], &[], 1_700_000_000).unwrap();
        let at = |p: &str| lookup(&blobs, root, &TreePath::parse(p).unwrap()).unwrap();
        for top in MERGED_USR {
            let e = at(&format!("/{top}")).unwrap();
            assert_eq!(
                e.kind,
                Kind::Symlink {
                    target: format!("usr/{top}")
                },
                "/{top} stays the symlink although the package has a `./{top}/` member"
            );
        }
        assert!(matches!(
            at("/usr/bin/dash").unwrap().kind,
            Kind::File { size: 8, .. }
        ));
        assert_eq!(
            at("/usr/bin/sh").unwrap().kind,
            Kind::Symlink {
                target: "dash".into()
            }
        );
        assert!(matches!(
            at("/usr/bin/dash-again").unwrap().kind,
            Kind::HardLink { .. } | Kind::File { .. }
        ));
        assert!(at("/usr/share/doc/dash/copyright").is_some());
        for p in ["/var/lib/dpkg/status", "/var/lib/dpkg/available"] {
            assert!(matches!(at(p).unwrap().kind, Kind::File { size: 0, .. }), "{p}");
        }
        assert!(at("/var/lib/dpkg/info").unwrap().is_dir());
        assert_eq!(at("/var/lib/dpkg").unwrap().mtime, 1_700_000_000);
        // The same packages give the same root.
        assert_eq!(initial_root(&blobs, &[dash], &[], 1_700_000_000).unwrap(), root);
    }
}
