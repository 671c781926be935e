//! Unprivileged installs: the dpkg session in a user namespace, as
//! `mmdebstrap --mode=unshare` does, when w4b does not run as root.
//!
//! `unshare(CLONE_NEWUSER)` refuses a multi-threaded process, and w4b has rayon's threads
//! (and the build's) long before an install starts. So w4b runs itself again
//! (`/proc/self/exe`) with the hidden first argument [`SESSION_ARG`], which
//! [`crate::cli::main`] dispatches before clap parses anything and before any thread
//! exists:
//!
//! 1. The **session** process sets its parent-death signal, unshares user, mount and pid
//!    namespaces, and says `Unshared` ([`protocol`]). The parent writes its id maps with
//!    the setuid helpers `newuidmap`/`newgidmap` (Debian package `uidmap`): container 0 →
//!    the caller, container 1..=[`MAPPED`] → the caller's subordinate range from
//!    `/etc/subuid` and `/etc/subgid`, and answers `Mapped`.
//! 2. The session makes every mount private and starts w4b once more
//!    ([`WORKER_ARG`]): that process is pid 1 of the new pid namespace, so when it ends,
//!    the kernel kills every maintainer script and daemon still in the namespace, and the
//!    namespace's mounts go with it. It dies when the session does (its parent-death
//!    signal), and the session when w4b does.
//! 3. The **worker** asks for its [`Job`], materializes the base
//!    ([`materialize_without_devices`]: as the namespace's root, `chown` to mapped ids works),
//!    mounts `/proc`, `/dev`… ([`Devices::BindHost`]), runs dpkg exactly as a root install
//!    does ([`super::run_dpkg`]), captures the root ([`capture_with_placeholders`]), removes
//!    it (its files belong to subordinate ids the caller cannot delete), and sends `Done`.
//!
//! The blob store stays with the parent, which owns the cache's files: the worker reads
//! blobs with `Get` and stores with `Has` then `Put`, hashing locally and sending only
//! what the store lacks: after an install, almost every file of the root is the base's
//! (copying every blob back made an install of the test set 20–26 s where root took
//! 14–18 s).
//!
//! Cancellation: the parent sends SIGTERM to the session's process group; the worker's
//! handler sets its cancel flag, which kills dpkg's process group ([`super::run`]), then
//! unmounts, removes the root and reports `Cancelled`. Should it not finish within
//! [`GRACE`], SIGKILL: the session dies, the worker with it (parent-death signal), and
//! with pid 1 the whole namespace.

#![allow(clippy::disallowed_methods)] // re-executes w4b and runs newuidmap/newgidmap, recorded by the install step

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use w4b_cache::Digest;

use super::protocol::{expect_frame, read_frame, write_frame, Tag};
use super::session::{Devices, Mounts};
use super::{order, run, scratch, InstallError};
use crate::tree::host::{capture_with_placeholders, materialize_without_devices};
use crate::tree::{Blobs, TreeError};

/// The hidden first argument that makes w4b an install session.
pub const SESSION_ARG: &str = "__install-session";
/// The second argument that makes the session's child the worker (pid 1).
pub const WORKER_ARG: &str = "--pid1";
/// The highest container id mapped: 0 is the caller, 1..=MAPPED its subordinate ids.
/// Debian's static and dynamic ids, and `nobody` (65534), are all below it.
pub const MAPPED: u32 = 65536;
/// How long a cancelled session may take to clean up before it is killed.
pub const GRACE: Duration = Duration::from_secs(30);

/// The caller's id maps for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: u32,
    pub gid: u32,
    /// The first of [`MAPPED`] subordinate uids.
    pub sub_uid: u32,
    /// The first of [`MAPPED`] subordinate gids.
    pub sub_gid: u32,
}

/// What the worker is asked to do; paths are the parent's (the worker sees the same
/// filesystem).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub base: Digest,
    /// Absent; the worker creates it and removes it again.
    pub root: PathBuf,
    pub files: Vec<PathBuf>,
    pub controls: Vec<order::Control>,
    /// Installed first, by one `dpkg --force-depends --install` (a bootstrap's essential set).
    #[serde(default)]
    pub first: Vec<usize>,
    pub rounds: Vec<Vec<usize>>,
    pub epoch: i64,
    /// dpkg's log, created by the parent; appended to.
    pub log: PathBuf,
}

/// What the worker sends back with `Done`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Captured {
        tree: Digest,
        materialize_ms: u64,
        dpkg_ms: u64,
        capture_ms: u64,
    },
    Failed(WireError),
}

/// An [`InstallError`] across the pipe: the variants a caller acts on keep their shape,
/// the rest their text.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum WireError {
    Cancelled,
    NoDpkg,
    Dpkg {
        step: String,
        packages: Vec<String>,
        status: i32,
        tail: String,
    },
    Audit {
        audit: String,
    },
    BadMountPoint {
        path: String,
    },
    UnmappedId {
        path: String,
        id: u32,
        max: u32,
    },
    Other {
        message: String,
    },
}

impl WireError {
    fn from_error(e: InstallError) -> WireError {
        use std::os::unix::process::ExitStatusExt;
        match e {
            InstallError::Cancelled => WireError::Cancelled,
            InstallError::NoDpkg => WireError::NoDpkg,
            InstallError::Dpkg {
                step,
                packages,
                status,
                tail,
            } => WireError::Dpkg {
                step: step.to_owned(),
                packages,
                status: status.into_raw(),
                tail,
            },
            InstallError::Audit { audit } => WireError::Audit { audit },
            InstallError::BadMountPoint { path } => WireError::BadMountPoint { path },
            InstallError::Tree(TreeError::UnmappedId { path, id, max }) => {
                WireError::UnmappedId { path, id, max }
            }
            other => WireError::Other {
                message: chain(&other),
            },
        }
    }

    fn into_error(self) -> InstallError {
        use std::os::unix::process::ExitStatusExt;
        match self {
            WireError::Cancelled => InstallError::Cancelled,
            WireError::NoDpkg => InstallError::NoDpkg,
            WireError::Dpkg {
                step,
                packages,
                status,
                tail,
            } => InstallError::Dpkg {
                step: match step.as_str() {
                    "unpack" => "unpack",
                    "configure" => "configure",
                    "run the triggers of" => "run the triggers of",
                    _ => "install",
                },
                packages,
                status: std::process::ExitStatus::from_raw(status),
                tail,
            },
            WireError::Audit { audit } => InstallError::Audit { audit },
            WireError::BadMountPoint { path } => InstallError::BadMountPoint { path },
            WireError::UnmappedId { path, id, max } => {
                InstallError::Tree(TreeError::UnmappedId { path, id, max })
            }
            WireError::Other { message } => InstallError::Session { message },
        }
    }
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

// ---------------------------------------------------------------------------------------
// Host checks.

/// The sysctls that switch unprivileged user namespaces off: the file, the value that
/// disables, the sysctl's name, and how to allow them.
const SYSCTLS: [(&str, &str, &str, &str); 3] = [
    (
        "/proc/sys/kernel/unprivileged_userns_clone",
        "0",
        "kernel.unprivileged_userns_clone",
        "sysctl -w kernel.unprivileged_userns_clone=1",
    ),
    (
        "/proc/sys/user/max_user_namespaces",
        "0",
        "user.max_user_namespaces",
        "sysctl -w user.max_user_namespaces=15000",
    ),
    (
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "1",
        "kernel.apparmor_restrict_unprivileged_userns",
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for w4b with `userns,`)",
    ),
];

/// Checks everything an unprivileged session needs; returns the id maps.
pub fn check_host() -> Result<IdMaps, InstallError> {
    for (file, off, sysctl, fix) in SYSCTLS {
        if fs::read_to_string(file).is_ok_and(|v| v.trim() == off) {
            return Err(InstallError::UserNamespacesDisabled {
                sysctl,
                value: off,
                fix,
            });
        }
    }
    for tool in ["newuidmap", "newgidmap"] {
        if run::find_tool(tool).is_none() {
            return Err(InstallError::HostToolMissing {
                tool,
                package: "uidmap",
            });
        }
    }
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(&fs::read_to_string("/etc/passwd").unwrap_or_default(), uid);
    let sub = |file: &'static str| -> Result<u32, InstallError> {
        let text = fs::read_to_string(file).unwrap_or_default();
        subordinate_start(&text, name.as_deref(), uid).map_err(|found| {
            let user = name.clone().unwrap_or_else(|| uid.to_string());
            match found {
                Some(count) => InstallError::SubordinateIdsTooFew { file, user, count },
                None => InstallError::NoSubordinateIds { file, user },
            }
        })
    };
    Ok(IdMaps {
        uid,
        gid,
        sub_uid: sub("/etc/subuid")?,
        sub_gid: sub("/etc/subgid")?,
    })
}

/// The name of `uid` in a passwd(5) file.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The start of the first range of at least [`MAPPED`] ids for the user (by name or by
/// uid) in a subuid(5)/subgid(5) file. `Err(Some(n))`: the user's largest range has only
/// `n` ids; `Err(None)`: the user has none.
pub fn subordinate_start(text: &str, name: Option<&str>, uid: u32) -> Result<u32, Option<u64>> {
    let mut largest = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(who), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let ours = Some(who) == name || who.parse::<u32>().is_ok_and(|id| id == uid);
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u64>()) else {
            continue;
        };
        if !ours {
            continue;
        }
        if count >= u64::from(MAPPED) && u64::from(start) + u64::from(MAPPED) <= u64::from(u32::MAX) {
            return Ok(start);
        }
        largest = Some(largest.map_or(count, |l: u64| l.max(count)));
    }
    Err(largest)
}

// ---------------------------------------------------------------------------------------
// The parent.

/// Runs `job` in a session; returns the captured root and the worker's phase times.
pub fn run_session(
    blobs: &dyn Blobs,
    maps: IdMaps,
    job: &Job,
    cancel: &AtomicBool,
) -> Result<(Digest, [Duration; 3]), InstallError> {
    let parent = rustix::process::getpid().as_raw_nonzero().get();
    let mut child = Command::new("/proc/self/exe")
        .arg(SESSION_ARG)
        .arg(parent.to_string())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own group: a Ctrl-C reaches w4b, which cancels; the group is what a
        // cancel signals.
        .process_group(0)
        .spawn()
        .map_err(|source| InstallError::Spawn { tool: "w4b", source })?;
    let group = Pid::from_child(&child);
    let (Some(mut to), Some(mut from)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(InstallError::SessionPanicked);
    };
    let done = AtomicBool::new(false);
    let served = std::thread::scope(|s| {
        s.spawn(|| watch(group, cancel, &done));
        let r = serve(blobs, maps, job, group, &mut to, &mut from);
        done.store(true, Ordering::Relaxed);
        r
    });
    drop(to);
    let status = child.wait();
    let outcome = served?;
    match outcome {
        Some(Outcome::Captured {
            tree,
            materialize_ms,
            dpkg_ms,
            capture_ms,
        }) => Ok((
            tree,
            [materialize_ms, dpkg_ms, capture_ms].map(Duration::from_millis),
        )),
        Some(Outcome::Failed(e)) => Err(e.into_error()),
        None if cancel.load(Ordering::Relaxed) => Err(InstallError::Cancelled),
        None => Err(InstallError::Session {
            message: match status {
                Ok(s) => format!("the session ended ({s}) before it reported a result"),
                Err(e) => format!("the session ended before it reported a result: {e}"),
            },
        }),
    }
}

/// Signals the session's group once `cancel` is set: SIGTERM, then SIGKILL after
/// [`GRACE`]. Returns when `done` is set.
fn watch(group: Pid, cancel: &AtomicBool, done: &AtomicBool) {
    let mut terminated: Option<Instant> = None;
    while !done.load(Ordering::Relaxed) {
        match terminated {
            None if cancel.load(Ordering::Relaxed) => {
                let _ = rustix::process::kill_process_group(group, Signal::TERM);
                terminated = Some(Instant::now());
            }
            Some(at) if at.elapsed() > GRACE => {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                return;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The parent's side of the protocol, until `Done` or the end of the pipe (`None`).
fn serve(
    blobs: &dyn Blobs,
    maps: IdMaps,
    job: &Job,
    session: Pid,
    to: &mut dyn Write,
    from: &mut dyn Read,
) -> Result<Option<Outcome>, InstallError> {
    let lost = |source: std::io::Error| InstallError::Session {
        message: format!("the pipe to the install session failed: {source}"),
    };
    loop {
        let Some((tag, payload)) = read_frame(from).map_err(lost)? else {
            return Ok(None);
        };
        match tag {
            Tag::Unshared => match write_maps(maps, session) {
                Ok(()) => write_frame(to, Tag::Mapped, b"").map_err(lost)?,
                Err(e) => {
                    let _ = write_frame(to, Tag::Failed, chain(&e).as_bytes());
                    return Err(e);
                }
            },
            Tag::Failed => {
                // The session could not create its namespaces.
                return Err(InstallError::UserNamespaceDenied {
                    reason: String::from_utf8_lossy(&payload).into_owned(),
                });
            }
            Tag::Job => {
                let json = serde_json::to_vec(job).map_err(|e| InstallError::Session {
                    message: format!("cannot encode the job: {e}"),
                })?;
                write_frame(to, Tag::Job, &json).map_err(lost)?;
            }
            Tag::Get => match digest(&payload).map(|d| blobs.get(&d)) {
                Some(Ok(bytes)) => write_frame(to, Tag::Blob, &bytes).map_err(lost)?,
                Some(Err(e)) => write_frame(to, Tag::Failed, chain(&e).as_bytes()).map_err(lost)?,
                None => write_frame(to, Tag::Failed, b"not a digest").map_err(lost)?,
            },
            Tag::Has => {
                let has = digest(&payload).is_some_and(|d| blobs.contains(&d));
                write_frame(to, if has { Tag::Yes } else { Tag::No }, b"").map_err(lost)?;
            }
            Tag::Put => match blobs.put(&payload) {
                Ok(d) => write_frame(to, Tag::Stored, d.as_bytes()).map_err(lost)?,
                Err(e) => write_frame(to, Tag::Failed, chain(&e).as_bytes()).map_err(lost)?,
            },
            Tag::Done => {
                let outcome = serde_json::from_slice(&payload).map_err(|e| InstallError::Session {
                    message: format!("the session's result is garbled: {e}"),
                })?;
                return Ok(Some(outcome));
            }
            Tag::Mapped | Tag::Blob | Tag::Yes | Tag::No | Tag::Stored => {
                return Err(InstallError::Session {
                    message: format!("the session sent an answer ({tag:?}) where a request belongs"),
                });
            }
        }
    }
}

fn digest(bytes: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(bytes).ok().map(Digest)
}

/// `newuidmap`/`newgidmap` for the session `pid`.
fn write_maps(maps: IdMaps, pid: Pid) -> Result<(), InstallError> {
    let pid = pid.as_raw_nonzero().get().to_string();
    for (tool, own, sub) in [
        ("newuidmap", maps.uid, maps.sub_uid),
        ("newgidmap", maps.gid, maps.sub_gid),
    ] {
        let (own, sub, mapped) = (own.to_string(), sub.to_string(), MAPPED.to_string());
        let argv = [pid.as_str(), "0", &own, "1", "1", &sub, &mapped];
        let args: Vec<&std::ffi::OsStr> = argv.iter().map(std::ffi::OsStr::new).collect();
        run::host_output(tool, "uidmap", &args)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The session and the worker: entered from `cli::main` before anything else runs.

/// The entry point for `w4b __install-session PARENT_PID [--pid1]`; returns the exit
/// code.
pub fn main(args: &[String]) -> i32 {
    let result = match args {
        [parent] => session(parent),
        [_, flag] if flag == WORKER_ARG => worker(),
        _ => Err("usage: w4b __install-session PARENT_PID [--pid1] (internal)".to_owned()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("w4b install session: {message}");
            1
        }
    }
}

/// The first process: creates the namespaces, waits for the maps, starts the worker.
fn session(parent: &str) -> Result<i32, String> {
    let parent: i32 = parent.parse().map_err(|_| "bad parent pid".to_owned())?;
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(|e| e.to_string())?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent) {
        return Err("w4b ended before its install session started".into());
    }
    // A cancel signals the group: the worker cleans up; this process waits for it.
    let ignored = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, ignored.clone()).map_err(|e| e.to_string())?;
    }
    let mut to = File::from(std::io::stdout().as_fd_owned()?);
    let mut from = File::from(std::io::stdin().as_fd_owned()?);
    use rustix::thread::UnshareFlags;
    // SAFETY: this process has one thread (nothing has started any), so no other thread
    // can observe the change of namespaces or lose its file descriptors.
    let unshared = unsafe {
        rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS | UnshareFlags::NEWPID)
    };
    if let Err(e) = unshared {
        let _ = write_frame(&mut to, Tag::Failed, format!("unshare: {e}").as_bytes());
        return Ok(1);
    }
    write_frame(&mut to, Tag::Unshared, b"").map_err(|e| e.to_string())?;
    match expect_frame(&mut from).map_err(|e| e.to_string())? {
        (Tag::Mapped, _) => {}
        (_, why) => return Err(String::from_utf8_lossy(&why).into_owned()),
    }
    // The caller's supplementary groups are unmapped (`nogroup` inside): drop them.
    let _ = rustix::thread::set_thread_groups(&[]);
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| format!("cannot make the mounts private: {e}"))?;
    let mut worker = Command::new("/proc/self/exe")
        .args([SESSION_ARG, "-", WORKER_ARG])
        .spawn()
        .map_err(|e| format!("cannot start the worker: {e}"))?;
    let status = worker.wait().map_err(|e| e.to_string())?;
    Ok(status.code().unwrap_or(1))
}

/// Standard streams as owned descriptors, so frames go out unbuffered.
trait OwnedFd {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd, String>;
}

impl<T: std::os::fd::AsFd> OwnedFd for T {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd, String> {
        self.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
    }
}

/// Pid 1 of the namespace: does the job, reports, and takes the namespace down by
/// exiting.
fn worker() -> Result<i32, String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).map_err(|e| e.to_string())?;
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, cancel.clone()).map_err(|e| e.to_string())?;
    }
    let to = File::from(std::io::stdout().as_fd_owned()?);
    let from = File::from(std::io::stdin().as_fd_owned()?);
    // Nothing but frames may reach the pipe: stray output goes to stderr.
    rustix::stdio::dup2_stdout(std::io::stderr()).map_err(|e| e.to_string())?;
    let remote = Remote {
        pipe: Mutex::new((to, from)),
    };
    let job: Job = match remote.call(Tag::Job, b"").map_err(|e| e.to_string())? {
        (Tag::Job, json) => serde_json::from_slice(&json).map_err(|e| e.to_string())?,
        (tag, _) => return Err(format!("expected the job, got {tag:?}")),
    };
    let outcome = match work(&remote, &job, &cancel) {
        Ok(o) => o,
        Err(e) => Outcome::Failed(WireError::from_error(e)),
    };
    let json = serde_json::to_vec(&outcome).map_err(|e| e.to_string())?;
    let mut pipe = remote.pipe.lock().map_err(|_| "poisoned".to_owned())?;
    write_frame(&mut pipe.0, Tag::Done, &json).map_err(|e| e.to_string())?;
    Ok(0)
}

/// Materialize, dpkg, capture; the root is removed on every way out.
fn work(blobs: &Remote, job: &Job, cancel: &AtomicBool) -> Result<Outcome, InstallError> {
    let result = (|| {
        let begun = Instant::now();
        let (_, placeholders) = materialize_without_devices(blobs, job.base, &job.root, MAPPED)?;
        let materialized = Instant::now();
        if fs::symlink_metadata(job.root.join("usr/bin/dpkg")).is_err() {
            return Err(InstallError::NoDpkg);
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(InstallError::Cancelled);
        }
        let log = OpenOptions::new()
            .append(true)
            .open(&job.log)
            .map_err(super::io("cannot open", &job.log))?;
        let mounts = Mounts::setup(&job.root, Devices::BindHost)?;
        let ran = super::run_dpkg(
            &job.root,
            &job.files,
            &job.controls,
            &job.first,
            &job.rounds,
            job.epoch,
            &log,
            cancel,
        );
        mounts.teardown()?;
        ran?;
        if cancel.load(Ordering::Relaxed) {
            return Err(InstallError::Cancelled);
        }
        let dpkg_done = Instant::now();
        let tree = capture_with_placeholders(blobs, &job.root, &placeholders)?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(Outcome::Captured {
            tree,
            materialize_ms: ms(materialized - begun),
            dpkg_ms: ms(dpkg_done - materialized),
            capture_ms: ms(dpkg_done.elapsed()),
        })
    })();
    scratch::remove_contents(&job.root);
    let _ = fs::remove_dir(&job.root);
    result
}

/// The parent's blob store, seen from the worker.
struct Remote {
    pipe: Mutex<(File, File)>,
}

impl Remote {
    fn call(&self, tag: Tag, payload: &[u8]) -> std::io::Result<(Tag, Vec<u8>)> {
        let mut pipe = self
            .pipe
            .lock()
            .map_err(|_| std::io::Error::other("the pipe's lock is poisoned"))?;
        let (to, from) = &mut *pipe;
        write_frame(to, tag, payload)?;
        expect_frame(from)
    }

    fn request(&self, tag: Tag, payload: &[u8], answer: Tag) -> Result<Vec<u8>, TreeError> {
        let lost = |source| TreeError::Io {
            what: "the install session lost its blob store:",
            path: PathBuf::from("<w4b>"),
            source,
        };
        match self.call(tag, payload).map_err(lost)? {
            (t, bytes) if t == answer => Ok(bytes),
            (Tag::Failed, why) => Err(lost(std::io::Error::other(
                String::from_utf8_lossy(&why).into_owned(),
            ))),
            (t, _) => Err(lost(std::io::Error::other(format!(
                "expected {answer:?}, got {t:?}"
            )))),
        }
    }
}

impl Blobs for Remote {
    fn put(&self, bytes: &[u8]) -> Result<Digest, TreeError> {
        let d = Digest::of(bytes);
        if self.contains(&d) {
            return Ok(d);
        }
        let stored = self.request(Tag::Put, bytes, Tag::Stored)?;
        if stored != d.as_bytes() {
            return Err(TreeError::BlobCorrupt { digest: d });
        }
        Ok(d)
    }

    fn put_file(&self, path: &Path) -> Result<(Digest, u64), TreeError> {
        let bytes = fs::read(path).map_err(|source| TreeError::Io {
            what: "cannot read",
            path: path.to_owned(),
            source,
        })?;
        Ok((self.put(&bytes)?, bytes.len() as u64))
    }

    fn get(&self, d: &Digest) -> Result<Vec<u8>, TreeError> {
        self.request(Tag::Get, d.as_bytes(), Tag::Blob)
    }

    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>, TreeError> {
        Ok(Box::new(std::io::Cursor::new(self.get(d)?)))
    }

    fn contains(&self, d: &Digest) -> bool {
        matches!(self.call(Tag::Has, d.as_bytes()), Ok((Tag::Yes, _)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_are_found_by_name_or_uid_and_must_be_large_enough() {
        let text = "# comment\nalice:100000:65536\nbob:165536:1000\nbob:300000:70000\n1005:400000:65536\nbroken\ncarol:x:65536\n";
        assert_eq!(subordinate_start(text, Some("alice"), 1000), Ok(100_000));
        assert_eq!(
            subordinate_start(text, Some("bob"), 1001),
            Ok(300_000),
            "the first large enough"
        );
        assert_eq!(subordinate_start(text, Some("dave"), 1005), Ok(400_000), "by uid");
        assert_eq!(
            subordinate_start(text, Some("carol"), 1002),
            Err(None),
            "garbage is no range"
        );
        assert_eq!(subordinate_start(text, None, 7), Err(None));
        assert_eq!(
            subordinate_start("erin:100000:65535\nerin:200000:5\n", Some("erin"), 9),
            Err(Some(65535))
        );
        assert_eq!(
            subordinate_start("frank:4294967000:65536\n", Some("frank"), 9),
            Err(Some(65536)),
            "a range past the last id does not count"
        );
    }

    #[test]
    fn user_names_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 5), None);
    }

    #[test]
    fn errors_keep_their_shape_across_the_pipe() {
        use std::os::unix::process::ExitStatusExt;
        let e = InstallError::Dpkg {
            step: "configure",
            packages: vec!["openssh-server".into()],
            status: std::process::ExitStatus::from_raw(256),
            tail: "end".into(),
        };
        let json = serde_json::to_vec(&Outcome::Failed(WireError::from_error(e))).unwrap();
        let Outcome::Failed(back) = serde_json::from_slice(&json).unwrap() else {
            panic!()
        };
        match back.into_error() {
            InstallError::Dpkg {
                step,
                packages,
                status,
                ..
            } => {
                assert_eq!((step, packages), ("configure", vec!["openssh-server".to_owned()]));
                assert_eq!(status.code(), Some(1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            WireError::from_error(InstallError::Cancelled).into_error(),
            InstallError::Cancelled
        ));
        let io = InstallError::Io {
            what: "cannot read",
            path: "/x".into(),
            source: std::io::Error::other("boom"),
        };
        match WireError::from_error(io).into_error() {
            InstallError::Session { message } => assert_eq!(message, "cannot read `/x`: boom"),
            other => panic!("{other:?}"),
        }
    }
}
