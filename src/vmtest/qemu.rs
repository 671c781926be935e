//! Starting `qemu-system-aarch64` and making sure it stops.
//!
//! The machine is `-M virt`: the one arm64 machine QEMU emulates well and fast, with
//! virtio disks and consoles that Debian's generic kernel drives. Raspberry Pi boards
//! (`raspi3b`, `raspi4b`) are emulated too, but slowly, partially and without virtio.
//! On an x86_64 host there is no KVM for arm64, so it is TCG; KVM is used only on an
//! arm64 host whose `/dev/kvm` opens. Under TCG, `-cpu max` emulates pointer
//! authentication with the architected algorithm (QARMA), which QEMU's documentation
//! calls slow; `pauth-impdef=on` swaps in QEMU's own cheaper one, which the guest cannot
//! tell apart (not measured against plain `max` here).
//!
//! QEMU runs in its own process group with `PR_SET_PDEATHSIG`: [`Vm`] kills the group
//! when it is dropped (on success, on error, on a cancel), and the kernel kills QEMU if
//! w4b itself dies. Its environment is empty but for `PATH` and `TMPDIR`, which points
//! into the test's temporary directory, so the overlay of `snapshot=on` (where the
//! guest's writes go instead of the image) is removed with it even after a kill.

#![allow(clippy::disallowed_methods)] // runs QEMU by design; `w4b test` is not a build step's hidden tool

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use serde::Serialize;

use super::error::VmTestError;
use super::harness::{DISK_SERIAL, RESULTS_PORT};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-aarch64";
/// Where QEMU is looked for when the caller has no `PATH`.
const FALLBACK_PATH: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin"];

/// How QEMU executes guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// QEMU's translator: any host, slow.
    Tcg,
    /// Hardware virtualisation: an arm64 host with `/dev/kvm`.
    Kvm,
}

/// `qemu-system-aarch64` on `path` (a `PATH` value), or in the usual directories when
/// there is none.
pub fn find_qemu(path: Option<&str>) -> Result<PathBuf, VmTestError> {
    let dirs: Vec<PathBuf> = match path {
        Some(p) => std::env::split_paths(p).collect(),
        None => FALLBACK_PATH.iter().map(PathBuf::from).collect(),
    };
    dirs.iter()
        .map(|d| d.join(QEMU))
        .find(|p| is_executable(p))
        .ok_or(VmTestError::NoQemu)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// KVM when the host is arm64 and `/dev/kvm` opens for reading and writing, else TCG.
pub fn pick_accel() -> Accel {
    let arm64 = std::env::consts::ARCH == "aarch64";
    if arm64
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
    {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// Everything QEMU is started with.
#[derive(Debug)]
pub struct Launch<'a> {
    pub qemu: &'a Path,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    /// The image under test (a path QEMU can open: the file, or `/proc/PID/fd/N`).
    pub image: &'a Path,
    pub harness_disk: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    /// Where the serial console goes: the boot log.
    pub console_log: &'a Path,
    /// Where the guest's results port goes.
    pub results: &'a Path,
    /// QEMU's own messages.
    pub qemu_log: &'a Path,
    /// The test's temporary directory (QEMU's `TMPDIR`).
    pub tmp: &'a Path,
    /// `PATH` for QEMU (it runs no helpers here; kept for its own lookups).
    pub path: Option<&'a str>,
}

/// QEMU's arguments for `l`.
pub fn args(l: &Launch<'_>) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    let cpu = match l.accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max,pauth-impdef=on",
    };
    let accel = match l.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    for s in [
        "-M",
        "virt",
        "-cpu",
        cpu,
        "-accel",
        accel,
        "-nodefaults",
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
    ] {
        push(s);
    }
    push("-smp");
    push(&l.cpus.to_string());
    push("-m");
    push(&format!("{}M", l.memory_mib));
    // The serial console, whole, into the boot log.
    push("-chardev");
    push(&format!("file,id=console,path={}", opt_path(l.console_log)));
    push("-serial");
    push("chardev:console");
    push("-kernel");
    push(&l.kernel.display().to_string());
    push("-initrd");
    push(&l.initrd.display().to_string());
    push("-append");
    push(l.cmdline);
    // The image: writes go to a temporary overlay (`snapshot=on`), never to the file.
    push("-drive");
    push(&format!(
        "if=none,id=image,format=raw,snapshot=on,file={}",
        opt_path(l.image)
    ));
    push("-device");
    push("virtio-blk-pci,drive=image");
    // The harness, read-only, with the serial that names it in the guest.
    push("-drive");
    push(&format!(
        "if=none,id=harness,format=raw,readonly=on,file={}",
        opt_path(l.harness_disk)
    ));
    push("-device");
    push(&format!("virtio-blk-pci,drive=harness,serial={DISK_SERIAL}"));
    // The results channel, apart from the console.
    push("-device");
    push("virtio-serial-pci,id=vser");
    push("-chardev");
    push(&format!("file,id=results,path={}", opt_path(l.results)));
    push("-device");
    push(&format!(
        "virtserialport,bus=vser.0,chardev=results,name={RESULTS_PORT}"
    ));
    // A network card with nowhere to go: units that wait for a link see one, and the
    // guest reaches neither the host nor anything beyond it.
    push("-netdev");
    push("user,id=net0,restrict=on");
    push("-device");
    // No option ROM: the kernel is loaded directly, and Debian installs the iPXE ROMs
    // (`ipxe-qemu`) only as a recommendation of `qemu-system-arm`.
    push("virtio-net-pci,netdev=net0,romfile=");
    push("-device");
    push("virtio-rng-pci");
    a
}

/// A path inside a QEMU option, where `,` must be doubled.
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// A running QEMU. Dropping it kills its whole process group and reaps it.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    group: rustix::process::Pid,
    exited: Option<ExitStatus>,
}

impl Vm {
    /// Starts QEMU for `l` in its own process group.
    pub fn start(l: &Launch<'_>) -> Result<Vm, VmTestError> {
        let spawn_err = |source| VmTestError::Spawn {
            qemu: l.qemu.to_path_buf(),
            source,
        };
        let log = File::create(l.qemu_log).map_err(VmTestError::Temp)?;
        let log2 = log.try_clone().map_err(VmTestError::Temp)?;
        let mut cmd = Command::new(l.qemu);
        cmd.args(args(l))
            .env_clear()
            .env("TMPDIR", l.tmp)
            .env("PATH", l.path.unwrap_or("/usr/bin:/bin"))
            .current_dir(l.tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only makes one
        // async-signal-safe system call (prctl), touching no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        crate::ui::log::command(&cmd);
        let child = cmd.spawn().map_err(spawn_err)?;
        let group = rustix::process::Pid::from_child(&child);
        Ok(Vm {
            child,
            group,
            exited: None,
        })
    }

    /// QEMU's exit status once it has ended by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited
    }

    /// Kills QEMU's process group and reaps QEMU.
    pub fn stop(&mut self) {
        // Only while QEMU is unreaped: its zombie holds the group's id, which could name
        // someone else's group once it is reaped.
        if self.exited.is_none() {
            let _ = rustix::process::kill_process_group(self.group, rustix::process::Signal::KILL);
            if let Ok(status) = self.child.wait() {
                self.exited = Some(status);
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_keep_the_image_read_only_and_the_channels_apart() {
        let p = Path::new;
        let l = Launch {
            qemu: p("/usr/bin/qemu-system-aarch64"),
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            image: p("/tmp/a,b.img"),
            harness_disk: p("/tmp/t/harness.tar"),
            kernel: p("/tmp/t/vmlinuz"),
            initrd: p("/tmp/t/initrd.img"),
            cmdline: "root=PARTUUID=x",
            console_log: p("/out/a.boot.log"),
            results: p("/tmp/t/results"),
            qemu_log: p("/tmp/t/qemu.log"),
            tmp: p("/tmp/t"),
            path: None,
        };
        let a: Vec<String> = args(&l).into_iter().map(|s| s.into_string().unwrap()).collect();
        let joined = a.join(" ");
        assert!(joined
            .starts_with("-M virt -cpu max,pauth-impdef=on -accel tcg -nodefaults -nographic -no-reboot"));
        assert!(joined.contains("-drive if=none,id=image,format=raw,snapshot=on,file=/tmp/a,,b.img"));
        assert!(joined.contains("readonly=on,file=/tmp/t/harness.tar"));
        assert!(joined.contains("serial=w4b-test"));
        assert!(joined.contains("name=org.w4b.test.results"));
        assert!(joined.contains("-smp 2 -m 1024M"));
    }

    #[test]
    fn a_missing_qemu_is_a_clear_error() {
        let e = find_qemu(Some("/nonexistent-w4b")).unwrap_err();
        assert!(matches!(e, VmTestError::NoQemu));
    }
}
