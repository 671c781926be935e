//! The chroot session: a private mount namespace with the few kernel filesystems dpkg
//! and maintainer scripts need, torn down on every way out.
//!
//! The session runs on a thread of its own that first leaves the host's mount namespace
//! (`unshare(CLONE_NEWNS)`, then everything made recursively private so nothing
//! propagates back). The mounts below therefore exist only for that thread and the
//! commands it spawns: the rest of w4b (and the capture that follows) never sees them,
//! and if w4b is killed outright the kernel drops them with the namespace. [`Mounts`]
//! still unmounts them in reverse order when dropped (also on error and cancellation),
//! so the scratch root is plain files again before the session ends.
//!
//! | path | what | why |
//! |---|---|---|
//! | `/proc` | proc | dpkg, `update-alternatives`, `systemctl` read it |
//! | `/sys` | sysfs, read-only | scripts probe it; nothing may change the host |
//! | `/dev` | tmpfs with `null zero full random urandom tty`, `fd`, `ptmx`… | never the host's devices |
//!
//! In a user namespace ([`super::userns`], [`Devices::BindHost`]) two rows differ, as in
//! `mmdebstrap --mode=unshare`: the kernel refuses `mknod` of devices there, so the six
//! device nodes are the host's, bind-mounted onto empty files; and a new sysfs needs a
//! network namespace of its own, so `/sys` is the host's, bind-mounted recursively and
//! remounted read-only (the namespace's root has no rights over the host's sysfs anyway).
//! | `/dev/pts` | a new devpts instance | `script`/`expect`-style scripts open ptys |
//! | `/dev/shm`, `/tmp`, `/run` | tmpfs | what scripts leave there must not leak into the tree |

use std::fs;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FileType, Mode, CWD};
use rustix::mount::{self, MountFlags, MountPropagationFlags, UnmountFlags};

use super::InstallError;

/// Runs `f` on a new thread inside a private mount namespace; returns its result.
pub fn in_private_namespace<T: Send>(
    f: impl FnOnce() -> Result<T, InstallError> + Send,
) -> Result<T, InstallError> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            // SAFETY: only `NEWNS` (which implies `FS`) is unshared, never `FILES`, so no
            // thread can lose access to a file descriptor; the namespace and the
            // cwd/root copy belong to this thread alone, which runs nothing else.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
                .map_err(|e| InstallError::Namespace { source: e.into() })?;
            mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
                .map_err(|e| InstallError::Namespace { source: e.into() })?;
            f()
        });
        handle
            .join()
            .unwrap_or_else(|_| Err(InstallError::SessionPanicked))
    })
}

/// The session's mounts below a root; unmounted (and mount points w4b created removed)
/// when dropped.
pub struct Mounts {
    mounted: Vec<PathBuf>,
    created: Vec<PathBuf>,
}

/// Device nodes of the private `/dev`: name, major, minor (Linux's devices.txt).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks of the private `/dev`, as udev and systemd create them.
const DEV_LINKS: [(&str, &str); 6] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

/// How the private `/dev` gets its device nodes, and `/sys` its sysfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// `mknod` and a new sysfs: as root.
    Create,
    /// The host's nodes and sysfs bind-mounted: in a user namespace.
    BindHost,
}

impl Mounts {
    /// Mounts everything in the table of the module doc below `root`. Must run inside
    /// [`in_private_namespace`] (as root) or in the user namespace's own mount namespace.
    pub fn setup(root: &Path, devices: Devices) -> Result<Mounts, InstallError> {
        let mut m = Mounts {
            mounted: Vec::new(),
            created: Vec::new(),
        };
        let safe = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
        m.mount(root, "proc", "proc", safe, "")?;
        match devices {
            Devices::Create => m.mount(root, "sys", "sysfs", safe | MountFlags::RDONLY, "")?,
            Devices::BindHost => m.bind_sys(root)?,
        }
        m.mount(
            root,
            "dev",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            "mode=0755,size=4m",
        )?;
        let dev = root.join("dev");
        for (name, major, minor) in DEVICES {
            let p = dev.join(name);
            if devices == Devices::BindHost {
                m.bind_device(&p, name)?;
                continue;
            }
            rfs::mknodat(
                CWD,
                &p,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rfs::makedev(major, minor),
            )
            .map_err(|e| InstallError::Mount {
                what: "cannot create the device node",
                path: p.clone(),
                source: e.into(),
            })?;
            // mknod applied the umask.
            rfs::chmodat(CWD, &p, Mode::from_raw_mode(0o666), rfs::AtFlags::empty()).map_err(|e| {
                InstallError::Mount {
                    what: "cannot change the mode of",
                    path: p.clone(),
                    source: e.into(),
                }
            })?;
        }
        for (name, target) in DEV_LINKS {
            let p = dev.join(name);
            std::os::unix::fs::symlink(target, &p).map_err(|source| InstallError::Mount {
                what: "cannot create the symlink",
                path: p,
                source,
            })?;
        }
        m.mount(
            root,
            "dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        )?;
        m.mount(root, "dev/shm", "tmpfs", safe, "mode=1777")?;
        m.mount(
            root,
            "tmp",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=1777",
        )?;
        m.mount(
            root,
            "run",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=0755",
        )?;
        let lock = root.join("run/lock");
        fs::create_dir(&lock)
            .and_then(|()| fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o1777)))
            .map_err(|source| InstallError::Mount {
                what: "cannot create",
                path: lock,
                source,
            })?;
        Ok(m)
    }

    /// Mounts `fstype` on `root/rel`, creating the mount point if the tree has none.
    /// A mount point that is not a real directory (a symlink in an untrusted base could
    /// point anywhere on the host) is refused.
    fn mount(
        &mut self,
        root: &Path,
        rel: &str,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> Result<(), InstallError> {
        let target = root.join(rel);
        self.mount_point(root, rel)?;
        let data = std::ffi::CString::new(data).map_err(|_| InstallError::Mount {
            what: "invalid mount options for",
            path: target.clone(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        mount::mount(fstype, &target, fstype, flags, Some(data.as_c_str())).map_err(|e| {
            InstallError::Mount {
                what: "cannot mount",
                path: target.clone(),
                source: e.into(),
            }
        })?;
        self.mounted.push(target);
        Ok(())
    }

    /// The host's `/sys` on `root/sys`, recursively, read-only where the kernel lets
    /// the namespace remount it.
    fn bind_sys(&mut self, root: &Path) -> Result<(), InstallError> {
        let target = root.join("sys");
        self.mount_point(root, "sys")?;
        mount::mount_bind_recursive("/sys", &target).map_err(|e| InstallError::Mount {
            what: "cannot bind-mount the host's `/sys` on",
            path: target.clone(),
            source: e.into(),
        })?;
        self.mounted.push(target.clone());
        // A bind mount's flags are locked in a user namespace: a remount must keep the
        // ones it inherited, and may add these. If the host's mount has flags it cannot
        // restate (`noatime`…), it stays writable, which gives the namespace's root
        // nothing: the host's sysfs files belong to the host's root.
        let _ = mount::mount_remount(
            &target,
            MountFlags::BIND
                | MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC,
            c"",
        );
        Ok(())
    }

    /// The host's `/dev/NAME` on an empty file at `p`.
    fn bind_device(&mut self, p: &Path, name: &str) -> Result<(), InstallError> {
        fs::File::create_new(p).map_err(|source| InstallError::Mount {
            what: "cannot create the mount point",
            path: p.to_owned(),
            source,
        })?;
        let host = Path::new("/dev").join(name);
        mount::mount_bind(&host, p).map_err(|e| InstallError::Mount {
            what: "cannot bind-mount the host's device on",
            path: p.to_owned(),
            source: e.into(),
        })?;
        self.mounted.push(p.to_owned());
        Ok(())
    }

    /// Checks or creates the directory `root/rel` to mount on.
    fn mount_point(&mut self, root: &Path, rel: &str) -> Result<(), InstallError> {
        let target = root.join(rel);
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(InstallError::BadMountPoint {
                path: format!("/{rel}"),
            }),
            Err(_) => {
                fs::create_dir(&target).map_err(|source| InstallError::Mount {
                    what: "cannot create the mount point",
                    path: target.clone(),
                    source,
                })?;
                self.created.push(target);
                Ok(())
            }
        }
    }

    /// Unmounts everything now; errors are reported, not ignored.
    pub fn teardown(mut self) -> Result<(), InstallError> {
        self.unmount_all()
    }

    fn unmount_all(&mut self) -> Result<(), InstallError> {
        let mut first_error = None;
        while let Some(p) = self.mounted.pop() {
            // Lazy: a straggling process cannot keep the scratch root busy; the namespace
            // is private, so nothing else can see the detached mount.
            if let Err(e) = mount::unmount(&p, UnmountFlags::DETACH) {
                first_error.get_or_insert(InstallError::Mount {
                    what: "cannot unmount",
                    path: p,
                    source: e.into(),
                });
            }
        }
        while let Some(p) = self.created.pop() {
            // A mount point made inside a filesystem that is unmounted now (`/dev/shm`,
            // `/dev/pts` in the private `/dev`, when the root has no `/dev`) went with it.
            match fs::remove_dir(&p) {
                Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                    first_error.get_or_insert(InstallError::Mount {
                        what: "cannot remove the mount point",
                        path: p,
                        source,
                    });
                }
                _ => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        let _ = self.unmount_all();
    }
}
