//! What the host must provide before an install can start, checked up front so that a
//! missing piece is one clear error naming the Debian package that provides it, not a
//! maintainer script dying with `Exec format error` halfway through.
//!
//! - root, or else what an install through a user namespace needs ([`super::userns`]):
//!   unprivileged user namespaces allowed by the kernel's sysctls, `newuidmap` and
//!   `newgidmap` (Debian package `uidmap`), and 65,536 subordinate uids and gids for the
//!   user; without them, [`InstallError::NotRoot`] names the reason;
//! - a binfmt_misc handler for the target architecture, enabled and registered with the
//!   `F` (fix binary) flag, so the kernel opens the emulator at registration and it
//!   works inside a chroot that does not contain it (what `qemu-user-static` and
//!   `binfmt-support` register on Debian);
//! - `dpkg-deb` on the host, to read the packages' control fields;
//! - `/usr/bin/dpkg` in the root (checked once the root is materialized).

use std::fs;
use std::path::{Path, PathBuf};

use super::{Arch, InstallError};

/// Where the kernel lists binfmt_misc handlers.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// One registered binfmt_misc handler, as its file under [`BINFMT_DIR`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    pub offset: usize,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

impl Handler {
    /// Parses a handler file; `None` for an extension-based handler or garbage.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler {
            name: name.to_owned(),
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let line = line.trim();
            if line == "enabled" {
                h.enabled = true;
            } else if let Some(v) = line.strip_prefix("interpreter ") {
                h.interpreter = v.to_owned();
            } else if let Some(v) = line.strip_prefix("flags:") {
                h.flags = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("offset ") {
                h.offset = v.parse().ok()?;
            } else if let Some(v) = line.strip_prefix("magic ") {
                h.magic = hex::decode(v).ok()?;
            } else if let Some(v) = line.strip_prefix("mask ") {
                h.mask = hex::decode(v).ok()?;
            }
        }
        (!h.magic.is_empty()).then_some(h)
    }

    /// Whether this handler claims an executable starting with `header`.
    pub fn matches(&self, header: &[u8]) -> bool {
        self.magic.iter().enumerate().all(|(i, &m)| {
            let mask = if self.mask.is_empty() {
                0xff
            } else {
                self.mask.get(i).copied().unwrap_or(0xff)
            };
            self.offset
                .checked_add(i)
                .and_then(|at| header.get(at))
                .is_some_and(|&b| b & mask == m & mask)
        })
    }
}

/// The first 20 bytes of an executable of `arch` (ELF identification, `e_type`
/// `ET_EXEC`, `e_machine`), what binfmt_misc handlers match on.
pub fn elf_header(arch: Arch) -> [u8; 20] {
    let (class, machine) = match arch {
        Arch::Arm64 => (2, 0xb7), // ELFCLASS64, EM_AARCH64
        Arch::Armhf => (1, 0x28), // ELFCLASS32, EM_ARM
    };
    [
        0x7f, b'E', b'L', b'F', class, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, machine, 0,
    ]
}

/// Whether the host runs `arch` natively (an arm64 builder installing arm64 packages).
fn native(arch: Arch) -> bool {
    matches!(
        (arch, std::env::consts::ARCH),
        (Arch::Arm64, "aarch64") | (Arch::Armhf, "arm")
    )
}

/// How the install gets the privileges dpkg needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// w4b runs as root: a private mount namespace on a thread is enough.
    Root,
    /// A user namespace with these id maps.
    UserNamespace(super::userns::IdMaps),
}

/// Checks everything the host must provide for installing `arch` packages; returns how
/// the install runs privileged and the binfmt handler that will run the packages'
/// programs (`None` on a native host).
pub fn check_host(arch: Arch) -> Result<(Privilege, Option<Handler>), InstallError> {
    let privilege = if rustix::process::geteuid().is_root() {
        Privilege::Root
    } else {
        let maps = super::userns::check_host().map_err(|reason| InstallError::NotRoot {
            reason: Box::new(reason),
        })?;
        Privilege::UserNamespace(maps)
    };
    Ok((privilege, check_tools(arch)?))
}

/// The host tools and the binfmt handler.
fn check_tools(arch: Arch) -> Result<Option<Handler>, InstallError> {
    if super::run::find_tool("dpkg-deb").is_none() {
        return Err(InstallError::HostToolMissing {
            tool: "dpkg-deb",
            package: "dpkg",
        });
    }
    if super::run::find_tool("chroot").is_none() {
        return Err(InstallError::HostToolMissing {
            tool: "chroot",
            package: "coreutils",
        });
    }
    if native(arch) {
        return Ok(None);
    }
    binfmt_handler(Path::new(BINFMT_DIR), arch).map(Some)
}

/// The enabled fix-binary handler in `dir` for `arch`.
pub fn binfmt_handler(dir: &Path, arch: Arch) -> Result<Handler, InstallError> {
    if !dir.join("status").exists() {
        return Err(InstallError::BinfmtNotMounted { dir: dir.to_owned() });
    }
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| InstallError::Io {
            what: "cannot list",
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let header = elf_header(arch);
    let mut disabled_or_unfixed = None;
    for path in names {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == "status" || name == "register" {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Some(h) = Handler::parse(name, &text) else {
            continue;
        };
        if !h.matches(&header) {
            continue;
        }
        if h.enabled && h.flags.contains('F') {
            return Ok(h);
        }
        disabled_or_unfixed.get_or_insert(h);
    }
    Err(match disabled_or_unfixed {
        Some(h) if !h.enabled => InstallError::BinfmtDisabled { arch, name: h.name },
        Some(h) => InstallError::BinfmtNotFixed {
            arch,
            name: h.name,
            flags: h.flags,
        },
        None => InstallError::BinfmtMissing { arch },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const ARM: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: P\noffset 0\nmagic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn handlers_match_their_architecture_only() {
        let a = Handler::parse("qemu-aarch64", AARCH64).unwrap();
        assert!(a.enabled && a.flags == "PF");
        assert!(a.matches(&elf_header(Arch::Arm64)));
        assert!(!a.matches(&elf_header(Arch::Armhf)));
        let mut shared_object = elf_header(Arch::Arm64);
        shared_object[16] = 3; // ET_DYN: the mask's `fe` lets PIE executables match too
        assert!(a.matches(&shared_object));
        let arm = Handler::parse("qemu-arm", ARM).unwrap();
        assert!(arm.matches(&elf_header(Arch::Armhf)));
        assert!(!arm.matches(&elf_header(Arch::Arm64)));
        assert!(!arm.matches(&[0x7f]), "a short header matches nothing");
        assert!(Handler::parse(
            "python3",
            "enabled\ninterpreter /usr/bin/python3\nflags: \nextension .py\n"
        )
        .is_none());
    }

    #[test]
    fn the_errors_say_what_is_wrong_with_the_registration() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert!(matches!(
            binfmt_handler(d, Arch::Arm64),
            Err(InstallError::BinfmtNotMounted { .. })
        ));
        fs::write(d.join("status"), "enabled\n").unwrap();
        fs::write(d.join("register"), "").unwrap();
        assert!(matches!(
            binfmt_handler(d, Arch::Arm64),
            Err(InstallError::BinfmtMissing { .. })
        ));
        fs::write(d.join("qemu-arm"), ARM).unwrap();
        assert!(matches!(
            binfmt_handler(d, Arch::Armhf),
            Err(InstallError::BinfmtNotFixed { .. })
        ));
        fs::write(d.join("qemu-aarch64"), AARCH64.replace("enabled", "disabled")).unwrap();
        assert!(matches!(
            binfmt_handler(d, Arch::Arm64),
            Err(InstallError::BinfmtDisabled { .. })
        ));
        fs::write(d.join("qemu-aarch64"), AARCH64).unwrap();
        assert_eq!(binfmt_handler(d, Arch::Arm64).unwrap().name, "qemu-aarch64");
    }
}
