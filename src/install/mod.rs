//! Installing Debian packages into a root tree at build time, for a foreign architecture
//! (arm64, armhf) on any host, the way `mmdebstrap` does in chroot mode.
//!
//! The lockfile fixes which `.deb`s a package set needs; this engine turns them plus a
//! root tree into a [`Changeset`] the caller overlays like a layer:
//!
//! 1. [`preflight`]: root (or, for an ordinary user, what [`userns`] needs to run steps
//!    2–4 in a user namespace of a re-executed w4b), a binfmt_misc handler with the `F` flag for the architecture
//!    (qemu-user), the host tools; errors name the Debian packages to install.
//! 2. The input tree is materialized ([`crate::tree::host::materialize`]) into a scratch
//!    directory the caller owns; `/usr/bin/dpkg` must be in it.
//! 3. In a private mount namespace ([`session`]): kernel filesystems and tmpfs mounts,
//!    `/usr/sbin/policy-rc.d` (exit 101, so `invoke-rc.d` and `deb-systemd-invoke` start
//!    no service; as mmdebstrap, no `start-stop-daemon` diversion), the `.deb`s copied to
//!    `/var/cache/w4b-debs`, then dpkg in the rounds [`order`] computes:
//!    `dpkg --no-triggers --unpack` then `dpkg --no-triggers --configure --pending` per
//!    round, and the deferred triggers once at the end (as apt), in a fixed
//!    environment ([`run`]). A failing maintainer script is an error naming the package
//!    with the end of dpkg's output; the cancel flag kills dpkg's process group.
//! 4. Everything mounted is unmounted, the scaffolding removed, the root captured
//!    ([`crate::tree::host::capture`]), and the difference to the input turned into a
//!    normalised changeset ([`normalise`]: volatile paths reverted, mtimes clamped);
//!    the scratch root is removed from many threads at once ([`scratch`]: on a
//!    filesystem with online discard, one thread took longer than everything but dpkg).
//!
//! dpkg runs with `--force-unsafe-io` (no fsync: the scratch root is thrown away and only
//! the captured, content-addressed result counts), `--force-confdef --force-confold`
//! (never a prompt). Measured on the openssh-server set (23
//! packages onto a minbase arm64 root, 2 cores, qemu-user): dpkg is 90 % of the time;
//! the numbers are in `docs/performance.md` ("Package sets").

pub mod bootstrap;
pub mod normalise;
pub mod order;
pub mod preflight;
pub mod protocol;
pub mod run;
pub mod scratch;
pub mod session;
pub mod userns;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use w4b_cache::Digest;

use crate::tree::host::{capture, materialize};
use crate::tree::layer::{apply, Changeset};
use crate::tree::{diff::diff, load_root, Blobs, TreeError};

use scratch::Scratch;

/// Where the engine puts the packages inside the root while dpkg runs.
pub const DEB_DIR: &str = "/var/cache/w4b-debs";
/// The policy layer that keeps maintainer scripts from starting services.
pub const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
const POLICY_RC_D_SCRIPT: &str =
    "#!/bin/sh\n# Written by w4b while installing packages: start no service.\nexit 101\n";

/// Lines of dpkg's output an error shows.
const TAIL_LINES: usize = 25;

/// The architectures the engine installs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    Arm64,
    Armhf,
}

impl Arch {
    /// Debian's name (`dpkg --print-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.debian())
    }
}

/// Where a package comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deb {
    /// A `.deb` file on the host.
    Path(PathBuf),
    /// A `.deb` in the blob store (a fetch step's output).
    Blob(Digest),
}

/// What to install, where.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The root tree to install into.
    pub base: Digest,
    /// The packages, each once; the order matters only between packages no dependency
    /// orders.
    pub debs: &'a [Deb],
    pub arch: Arch,
    /// `SOURCE_DATE_EPOCH` for the scripts and the newest mtime in the result.
    pub epoch: i64,
    /// A directory the engine may fill (under the cache's tmp); it must be empty or
    /// absent, and is left empty.
    pub scratch: &'a Path,
}

/// What an install produced.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The normalised difference to the base: overlay it with [`apply`].
    pub changeset: Changeset,
    /// The stored changeset's digest.
    pub changeset_digest: Digest,
    /// `apply(base, [changeset])`: the installed root.
    pub tree: Digest,
    /// The packages in install order: `(package, version, architecture)`.
    pub packages: Vec<(String, String, String)>,
    /// dpkg's whole output.
    pub log: String,
    /// Where the time went.
    pub timings: Timings,
}

/// Wall-clock durations of the phases, for progress reports and benchmarks only (they
/// never reach an output).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Copying the packages and reading their control fields.
    pub prepare: Duration,
    pub materialize: Duration,
    pub dpkg: Duration,
    pub capture: Duration,
    /// Diff, normalisation, overlay and removing the scratch root.
    pub finish: Duration,
    pub rounds: usize,
}

/// Why an install failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InstallError {
    #[error("installing packages needs root, or a user namespace this host does not give w4b")]
    #[diagnostic(
        code(w4b::install::not_root),
        help("fix the cause below so w4b can install through a user namespace (as `mmdebstrap --mode=unshare`), or run w4b as root")
    )]
    NotRoot {
        #[source]
        #[diagnostic_source]
        reason: Box<dyn miette::Diagnostic + Send + Sync>,
    },

    #[error("unprivileged user namespaces are disabled: `{sysctl}` is {value}")]
    #[diagnostic(
        code(w4b::install::userns_disabled),
        help("allow them (as root): `{fix}`; make it permanent in `/etc/sysctl.d/`")
    )]
    UserNamespacesDisabled {
        sysctl: &'static str,
        value: &'static str,
        fix: &'static str,
    },

    #[error("the kernel refused a user namespace: {reason}")]
    #[diagnostic(
        code(w4b::install::userns_denied),
        help("check `kernel.unprivileged_userns_clone` (Debian before 11), `user.max_user_namespaces` (must not be 0) and AppArmor's `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 24.04: set it to 0 or give w4b a profile with `userns,`); in a container, seccomp may forbid `unshare`")
    )]
    UserNamespaceDenied { reason: String },

    #[error("`{user}` has no subordinate ids in `{file}`")]
    #[diagnostic(
        code(w4b::install::no_subids),
        help("give the user 65,536 of them (as root): `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`, with a range no other user has")
    )]
    NoSubordinateIds { file: &'static str, user: String },

    #[error("`{user}` has only {count} subordinate ids in `{file}`; an install maps 65,536")]
    #[diagnostic(
        code(w4b::install::subids_too_few),
        help("add a range of 65,536 (as root): `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`, with a range no other user has")
    )]
    SubordinateIdsTooFew {
        file: &'static str,
        user: String,
        count: u64,
    },

    #[error("the unprivileged install session failed: {message}")]
    #[diagnostic(
        code(w4b::install::session),
        help("the session runs dpkg in a user namespace; running w4b as root takes the other path and may tell the causes apart")
    )]
    Session { message: String },

    #[error("`{tool}` is not installed on this host")]
    #[diagnostic(code(w4b::install::host_tool), help("install the Debian package `{package}`"))]
    HostToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    #[error("binfmt_misc is not mounted at `{}`", dir.display())]
    #[diagnostic(
        code(w4b::install::binfmt_not_mounted),
        help("run `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` (as root), or install `binfmt-support`, whose service mounts it")
    )]
    BinfmtNotMounted { dir: PathBuf },

    #[error("no binfmt_misc handler runs {arch} programs on this host")]
    #[diagnostic(
        code(w4b::install::binfmt_missing),
        help("install the Debian packages `qemu-user-static` and `binfmt-support`")
    )]
    BinfmtMissing { arch: Arch },

    #[error("the binfmt_misc handler `{name}` for {arch} programs is disabled")]
    #[diagnostic(
        code(w4b::install::binfmt_disabled),
        help("run `update-binfmts --enable {name}` (package `binfmt-support`)")
    )]
    BinfmtDisabled { arch: Arch, name: String },

    #[error("the binfmt_misc handler `{name}` for {arch} programs lacks the `F` flag (flags: `{flags}`)")]
    #[diagnostic(
        code(w4b::install::binfmt_not_fixed),
        help("without `F` the emulator must exist inside the root; install `qemu-user-static` (Debian registers its handlers with `F`) and run `update-binfmts --enable {name}`")
    )]
    BinfmtNotFixed { arch: Arch, name: String, flags: String },

    #[error("the root tree has no `/usr/bin/dpkg`")]
    #[diagnostic(
        code(w4b::install::no_dpkg),
        help("packages install into a Debian-based root; check the base the package set is installed onto")
    )]
    NoDpkg,

    #[error("`{path}` in the root is not a directory, so nothing can be mounted there")]
    #[diagnostic(
        code(w4b::install::bad_mount_point),
        help("the base tree has a symlink or file where a Debian root has a directory; fix the base")
    )]
    BadMountPoint { path: String },

    #[error("the scratch directory `{}` is not empty", path.display())]
    #[diagnostic(
        code(w4b::install::scratch_not_empty),
        help("remove it, or pass an empty directory")
    )]
    ScratchNotEmpty { path: PathBuf },

    #[error("cannot read the control fields of `{deb}`: {reason}")]
    #[diagnostic(
        code(w4b::install::bad_control),
        help("the file is not a valid Debian package")
    )]
    BadControl { deb: String, reason: String },

    #[error("`{deb}` is a package for `{found}`, not {arch}")]
    #[diagnostic(code(w4b::install::wrong_arch), help("lock the package set for {arch}"))]
    WrongArch { deb: String, found: String, arch: Arch },

    #[error("dpkg failed to {step} {}", packages_text(.packages))]
    #[diagnostic(
        code(w4b::install::dpkg),
        help("a maintainer script or dpkg itself failed ({status}); the end of its output:\n{tail}")
    )]
    Dpkg {
        step: &'static str,
        packages: Vec<String>,
        status: ExitStatus,
        tail: String,
    },

    #[error("dpkg left packages half-installed: {audit}")]
    #[diagnostic(
        code(w4b::install::audit),
        help("this is a dependency problem in the package set; run `w4b lock` again")
    )]
    Audit { audit: String },

    #[error("the install was cancelled")]
    #[diagnostic(code(w4b::install::cancelled))]
    Cancelled,

    #[error("cannot run `{tool}`")]
    #[diagnostic(code(w4b::install::spawn))]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("`{tool}` failed ({status}): {stderr}")]
    #[diagnostic(code(w4b::install::host_tool_failed))]
    HostTool {
        tool: &'static str,
        status: ExitStatus,
        stderr: String,
    },

    #[error("cannot create a private mount namespace")]
    #[diagnostic(
        code(w4b::install::namespace),
        help("the install needs CAP_SYS_ADMIN; in a container, run it privileged")
    )]
    Namespace {
        #[source]
        source: std::io::Error,
    },

    #[error("{what} `{}`", path.display())]
    #[diagnostic(code(w4b::install::mount))]
    Mount {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the install session ended abnormally")]
    #[diagnostic(code(w4b::install::panicked))]
    SessionPanicked,

    #[error("{what} `{}`", path.display())]
    #[diagnostic(code(w4b::install::io))]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Tree(#[from] TreeError),
}

fn packages_text(packages: &[String]) -> String {
    match packages {
        [] => "the packages".to_owned(),
        [one] => format!("`{one}`"),
        many => many
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Installs `req.debs` into `req.base`; see the module doc. Needs root.
pub fn install(blobs: &dyn Blobs, req: &Request<'_>, cancel: &AtomicBool) -> Result<Installed, InstallError> {
    install_with(blobs, req, &[], cancel)
}

/// [`install`], with the packages at the indices `first` installed before the rounds by
/// one `dpkg --force-depends --install`, as `mmdebstrap` installs the essential set of a
/// new root whose files it extracted beforehand ([`bootstrap`]).
pub fn install_with(
    blobs: &dyn Blobs,
    req: &Request<'_>,
    first: &[usize],
    cancel: &AtomicBool,
) -> Result<Installed, InstallError> {
    let begun = Instant::now();
    let (privilege, _) = preflight::check_host(req.arch)?;
    let scratch = Scratch::new(req.scratch)?;
    let root = req.scratch.join("root");
    let debs_dir = req.scratch.join("debs");
    fs::create_dir(&debs_dir).map_err(io("cannot create", &debs_dir))?;

    // The packages on the host, with their control fields, before anything runs.
    let mut files = Vec::with_capacity(req.debs.len());
    for (i, deb) in req.debs.iter().enumerate() {
        let file = debs_dir.join(format!("{i:04}.deb"));
        match deb {
            Deb::Path(p) => {
                fs::copy(p, &file).map_err(io("cannot copy", p))?;
            }
            Deb::Blob(d) => {
                let mut out = File::create_new(&file).map_err(io("cannot create", &file))?;
                std::io::copy(&mut blobs.open(d)?, &mut out).map_err(io("cannot write", &file))?;
            }
        }
        files.push(file);
    }
    let controls = files
        .iter()
        .zip(req.debs)
        .map(|(f, deb)| control(f, deb, req.arch))
        .collect::<Result<Vec<_>, _>>()?;
    let rest: Vec<usize> = (0..controls.len()).filter(|i| !first.contains(i)).collect();
    let rest_controls: Vec<order::Control> = rest.iter().filter_map(|&i| controls.get(i).cloned()).collect();
    let rounds: Vec<Vec<usize>> = order::rounds(&rest_controls)
        .into_iter()
        .map(|round| round.into_iter().filter_map(|j| rest.get(j).copied()).collect())
        .collect();
    let first = first.to_vec();

    let started = Instant::now();
    let log_path = req.scratch.join("dpkg.log");
    let log = File::create_new(&log_path).map_err(io("cannot create", &log_path))?;
    let installed = match privilege {
        preflight::Privilege::Root => (|| {
            materialize(blobs, req.base, &root)?;
            let materialized = Instant::now();
            if fs::symlink_metadata(root.join("usr/bin/dpkg")).is_err() {
                return Err(InstallError::NoDpkg);
            }
            session::in_private_namespace(|| {
                let mounts = session::Mounts::setup(&root, session::Devices::Create)?;
                let result = run_dpkg(&root, &files, &controls, &first, &rounds, req.epoch, &log, cancel);
                mounts.teardown()?;
                result
            })?;
            let dpkg_done = Instant::now();
            let captured = capture(blobs, &root)?;
            Ok((
                captured,
                [
                    materialized - started,
                    dpkg_done - materialized,
                    dpkg_done.elapsed(),
                ],
            ))
        })(),
        preflight::Privilege::UserNamespace(maps) => {
            let job = userns::Job {
                base: req.base,
                root: root.clone(),
                files: files.clone(),
                controls: controls.clone(),
                first: first.clone(),
                rounds: rounds.clone(),
                epoch: req.epoch,
                log: log_path.clone(),
            };
            userns::run_session(blobs, maps, &job, cancel)
        }
    };
    // The commands dpkg ran and everything they printed, for `-vv` and the log file,
    // whether the install succeeded or not.
    let log_text = fs::read_to_string(&log_path).unwrap_or_default();
    crate::ui::log::output_lines(log_text.as_bytes());
    let (captured, [materialize_time, dpkg_time, capture_time]) = installed?;
    let captured_at = Instant::now();
    let base_root = load_root(blobs, &req.base)?;
    let new_root = load_root(blobs, &captured)?;
    let diffs = diff(blobs, req.base, captured)?;
    let empty = blobs.put(b"")?;
    let changeset = normalise::changeset(
        &diffs,
        (base_root != new_root).then_some((&base_root, &new_root)),
        req.epoch,
        empty,
    );
    let changeset_digest = changeset.store(blobs)?;
    let tree = apply(blobs, req.base, std::slice::from_ref(&changeset), req.epoch)?;
    drop(scratch);
    let finished = Instant::now();
    Ok(Installed {
        changeset,
        changeset_digest,
        tree,
        packages: std::iter::once(&first)
            .chain(&rounds)
            .flatten()
            .filter_map(|&i| controls.get(i))
            .map(|c| (c.package.clone(), c.version.clone(), c.architecture.clone()))
            .collect(),
        log: log_text,
        timings: Timings {
            prepare: started - begun,
            materialize: materialize_time,
            dpkg: dpkg_time,
            capture: capture_time,
            finish: finished - captured_at,
            rounds: rounds.len(),
        },
    })
}

/// The control fields of `file`, checked against the architecture.
fn control(file: &Path, deb: &Deb, arch: Arch) -> Result<order::Control, InstallError> {
    let name = match deb {
        Deb::Path(p) => p.display().to_string(),
        Deb::Blob(d) => format!("blob {d}"),
    };
    let fields = [
        "Package",
        "Version",
        "Architecture",
        "Pre-Depends",
        "Depends",
        "Provides",
    ];
    let mut args: Vec<&std::ffi::OsStr> = vec!["--field".as_ref(), file.as_os_str()];
    args.extend(fields.iter().map(std::ffi::OsStr::new));
    let out = run::host_output("dpkg-deb", "dpkg", &args).map_err(|e| InstallError::BadControl {
        deb: name.clone(),
        reason: e.to_string(),
    })?;
    let c =
        order::Control::parse(&String::from_utf8_lossy(&out)).map_err(|reason| InstallError::BadControl {
            deb: name.clone(),
            reason,
        })?;
    if c.architecture != arch.debian() && c.architecture != "all" {
        return Err(InstallError::WrongArch {
            deb: name,
            found: c.architecture,
            arch,
        });
    }
    Ok(c)
}

/// The dpkg part of the session: policy-rc.d, the packages, the `first` group and the
/// rounds, the audit, and the scaffolding removed again.
#[allow(clippy::too_many_arguments)] // the session's inputs, as the two callers hold them
fn run_dpkg(
    root: &Path,
    files: &[PathBuf],
    controls: &[order::Control],
    first: &[usize],
    rounds: &[Vec<usize>],
    epoch: i64,
    log: &File,
    cancel: &AtomicBool,
) -> Result<(), InstallError> {
    let in_root = |p: &str| root.join(p.trim_start_matches('/'));
    let policy = in_root(POLICY_RC_D);
    let saved_policy = in_root("/usr/sbin/policy-rc.d.w4b-saved");
    let had_policy = fs::symlink_metadata(&policy).is_ok();
    if had_policy {
        fs::rename(&policy, &saved_policy).map_err(io("cannot move aside", &policy))?;
    }
    fs::write(&policy, POLICY_RC_D_SCRIPT).map_err(io("cannot write", &policy))?;
    fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io("cannot change the mode of", &policy))?;
    let deb_dir = in_root(DEB_DIR);
    fs::create_dir_all(&deb_dir).map_err(io("cannot create", &deb_dir))?;
    let mut names = Vec::with_capacity(files.len());
    for (f, c) in files.iter().zip(controls) {
        let name = format!("{}_{}.deb", c.package, c.version.replace(':', "%3a"));
        let dest = deb_dir.join(&name);
        // Same filesystem (both under the scratch directory): no copy.
        fs::hard_link(f, &dest)
            .or_else(|_| fs::copy(f, &dest).map(drop))
            .map_err(io("cannot copy", f))?;
        names.push(format!("{DEB_DIR}/{name}"));
    }

    // A new root (the essential set `first`) gets its initramfs once, at the end. Without
    // this the kernel's postinst builds one (`update-initramfs -c`) and the triggers of
    // every later package with an initramfs hook (udev, kmod, zstd…) build it again: each
    // build is minutes of emulated shell and compression. `INITRD=No` is the switch the
    // kernel hooks of initramfs-tools and dracut read; the trigger's `update-initramfs -u`
    // then finds no initramfs and does nothing.
    let bootstrapping = !first.is_empty();
    let env: &[(&str, &str)] = if bootstrapping { &[("INITRD", "No")] } else { &[] };
    let dpkg = |step: &'static str, args: &[&str], packages: Vec<String>| -> Result<(), InstallError> {
        let mut argv = vec!["dpkg", "--force-confdef", "--force-confold", "--force-unsafe-io"];
        argv.extend_from_slice(args);
        let status = run::in_root_with(root, &argv, epoch, env, log, cancel)?;
        if status.success() {
            return Ok(());
        }
        let failed = failed_packages(log);
        Err(InstallError::Dpkg {
            step,
            packages: if failed.is_empty() { packages } else { failed },
            status,
            tail: tail(log),
        })
    };
    // Triggers are deferred to one run at the end, as apt does: each trigger run
    // (ldconfig, byte-compilation, man-db…) is emulated programs, and without
    // `--no-triggers` every `--unpack` and `--configure` runs the triggers its packages
    // activated again. A package left `triggers-pending` or `triggers-awaited` satisfies
    // the pre-dependencies of the next round (dpkg counts both as installed enough).
    let all: Vec<String> = controls.iter().map(|c| c.package.clone()).collect();
    if !first.is_empty() {
        // A new root's essential set: its files are already there (extracted), but dpkg
        // knows nothing of them, so dependencies inside the set cannot be ordered; dpkg
        // unpacks all, then configures all, as mmdebstrap and debootstrap do.
        let mut args = vec!["--force-depends", "--install"];
        let mut packages = Vec::new();
        for &i in first {
            if let (Some(n), Some(c)) = (names.get(i), controls.get(i)) {
                args.push(n.as_str());
                packages.push(c.package.clone());
            }
        }
        dpkg("install", &args, packages)?;
    }
    for round in rounds {
        let mut args = vec!["--no-triggers", "--unpack"];
        let mut packages = Vec::new();
        for &i in round {
            if let (Some(n), Some(c)) = (names.get(i), controls.get(i)) {
                args.push(n.as_str());
                packages.push(c.package.clone());
            }
        }
        dpkg("unpack", &args, packages.clone())?;
        dpkg(
            "configure",
            &["--no-triggers", "--configure", "--pending"],
            packages,
        )?;
    }
    // Everything still pending: the deferred triggers, also those of packages outside
    // the set (libc-bin's ldconfig), once.
    dpkg("configure", &["--configure", "--pending"], all.clone())?;
    dpkg("run the triggers of", &["--triggers-only", "--pending"], all)?;
    if bootstrapping {
        let kernels = controls
            .iter()
            .filter(|c| c.package.starts_with("linux-image-"))
            .map(|c| c.package.clone())
            .collect();
        initramfs_once(root, kernels, epoch, log, cancel)?;
    }
    let audit_log =
        tempfile::tempfile().map_err(io("cannot create a temporary file in", Path::new("/tmp")))?;
    run::in_root(root, &["dpkg", "--audit"], epoch, &audit_log, cancel)?;
    let audit = run::output_only(&read_all(&audit_log));
    if !audit.trim().is_empty() {
        return Err(InstallError::Audit {
            audit: audit.trim().to_owned(),
        });
    }

    fs::remove_dir_all(&deb_dir).map_err(io("cannot remove", &deb_dir))?;
    fs::remove_file(&policy).map_err(io("cannot remove", &policy))?;
    if had_policy {
        fs::rename(&saved_policy, &policy).map_err(io("cannot restore", &policy))?;
    }
    Ok(())
}

/// The one initramfs build of a bootstrapped root, for every installed kernel, by the
/// builder the root has (initramfs-tools, else dracut, else none: a root without a
/// kernel). Its hooks run as after a kernel install (raspi-firmware's copies kernel,
/// initramfs and device trees to `/boot/firmware`).
fn initramfs_once(
    root: &Path,
    kernels: Vec<String>,
    epoch: i64,
    log: &File,
    cancel: &AtomicBool,
) -> Result<(), InstallError> {
    let has = |p: &str| fs::symlink_metadata(root.join(p)).is_ok();
    let argv: &[&str] = if has("usr/sbin/update-initramfs") {
        &["update-initramfs", "-c", "-k", "all"]
    } else if has("usr/bin/dracut") {
        &["dracut", "--force", "--regenerate-all"]
    } else {
        return Ok(());
    };
    let status = run::in_root(root, argv, epoch, log, cancel)?;
    if status.success() {
        return Ok(());
    }
    Err(InstallError::Dpkg {
        step: "build the initramfs for",
        packages: kernels,
        status,
        tail: tail(log),
    })
}

/// What `log` holds so far.
fn read_all(log: &File) -> String {
    use std::io::{Read, Seek};
    let mut f = log;
    let mut s = String::new();
    if f.rewind().is_ok() {
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_ok() {
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    s
}

/// The last [`TAIL_LINES`] lines of the log.
fn tail(log: &File) -> String {
    let text = read_all(log);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The packages dpkg reports as failed: `dpkg: error processing package NAME (--configure):`
/// and `dpkg: error processing archive PATH (--unpack):`.
fn failed_packages(log: &File) -> Vec<String> {
    let text = read_all(log);
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let rest = line
            .strip_prefix("dpkg: error processing package ")
            .or_else(|| line.strip_prefix("dpkg: error processing archive "));
        let Some(rest) = rest else { continue };
        let name = rest.split(' ').next().unwrap_or("");
        let name = name.rsplit('/').next().unwrap_or(name);
        let name = name
            .split('_')
            .next()
            .unwrap_or(name)
            .split(':')
            .next()
            .unwrap_or(name);
        if !name.is_empty() && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    out
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl Fn(std::io::Error) -> InstallError + 'p {
    move |source| InstallError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_packages_are_named_from_dpkg_output() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(
            &mut f,
            b"Setting up a (1) ...\n\
              dpkg: error processing package openssh-server (--configure):\n \
              installed openssh-server package post-installation script subprocess returned error exit status 1\n\
              dpkg: error processing archive /var/cache/w4b-debs/libfoo1_2%3a1.0_arm64.deb (--unpack):\n\
              dpkg: error processing package openssh-server (--configure):\n",
        )
        .unwrap();
        assert_eq!(failed_packages(&f), ["openssh-server", "libfoo1"]);
        assert!(tail(&f).ends_with("(--configure):"));
        assert_eq!(packages_text(&["a".into(), "b".into()]), "`a`, `b`");
    }
}
