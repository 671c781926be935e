//! Running host tools and chrooted commands: a fixed environment, output to a log file,
//! and cancellation that kills the whole process group.
//!
//! Nothing of the caller's environment reaches a maintainer script: the environment is
//! cleared and set to [`chroot_env`], the umask is fixed by the `sh` wrapper, stdin is
//! `/dev/null`. Each command runs in its own process group so that a cancel (or an
//! error) kills dpkg together with every script and daemon it started.

#![allow(clippy::disallowed_methods)] // the install step runs dpkg by design; its tools are recorded by the caller

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::os::unix::process::CommandExt;

use super::InstallError;

/// Where host tools are looked up: fixed, so the result does not depend on the caller's
/// `PATH`.
const HOST_PATH: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// `PATH` inside the root, Debian's default for root.
pub const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts the lines w4b itself writes into a command log (the command line, the exit
/// status), so that readers of the log can tell them from the command's output.
pub const HEADER: &str = "[w4b] ";

/// `text` of a command log without the lines w4b wrote ([`HEADER`]): the command's output.
pub fn output_only(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(HEADER))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How often a running command is checked for completion and cancellation.
const POLL: Duration = Duration::from_millis(20);

/// The host tool `name` from [`HOST_PATH`].
pub fn find_tool(name: &str) -> Option<PathBuf> {
    HOST_PATH
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The environment of every command run in the root.
pub fn chroot_env(epoch: i64) -> Vec<(&'static str, String)> {
    vec![
        ("PATH", CHROOT_PATH.to_owned()),
        ("HOME", "/root".to_owned()),
        ("LC_ALL", "C.UTF-8".to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
        ("TZ", "UTC".to_owned()),
        ("DEBIAN_FRONTEND", "noninteractive".to_owned()),
        ("DEBCONF_NONINTERACTIVE_SEEN", "true".to_owned()),
        ("SOURCE_DATE_EPOCH", epoch.to_string()),
        // Byte-compilation and Perl's hash seeds are the usual nondeterminism in
        // maintainer scripts; fix them like reproducible-builds do.
        ("PYTHONHASHSEED", "0".to_owned()),
        ("PERL_HASH_SEED", "0".to_owned()),
        ("PERL_PERTURB_KEYS", "0".to_owned()),
    ]
}

/// Runs `argv` in the root `root` through `chroot` and `sh -c 'umask 022; exec "$@"'`,
/// output appended to `log`; returns the exit status.
pub fn in_root(
    root: &Path,
    argv: &[&str],
    epoch: i64,
    log: &File,
    cancel: &AtomicBool,
) -> Result<ExitStatus, InstallError> {
    in_root_with(root, argv, epoch, &[], log, cancel)
}

/// [`in_root`] with `extra` added to [`chroot_env`].
pub fn in_root_with(
    root: &Path,
    argv: &[&str],
    epoch: i64,
    extra: &[(&str, &str)],
    log: &File,
    cancel: &AtomicBool,
) -> Result<ExitStatus, InstallError> {
    let chroot = find_tool("chroot").ok_or(InstallError::HostToolMissing {
        tool: "chroot",
        package: "coreutils",
    })?;
    let mut cmd = Command::new(chroot);
    cmd.arg(root)
        .args(["/bin/sh", "-c", "umask 022; exec \"$@\"", "sh"])
        .args(argv)
        .env_clear()
        .envs(chroot_env(epoch))
        .envs(extra.iter().copied())
        .current_dir("/");
    wait(cmd, "chroot", log, cancel)
}

/// Runs the host tool `tool` (from the Debian package `package`) with `args` in the fixed
/// environment; returns its stdout.
pub fn host_output(
    tool: &'static str,
    package: &'static str,
    args: &[&std::ffi::OsStr],
) -> Result<Vec<u8>, InstallError> {
    let path = find_tool(tool).ok_or(InstallError::HostToolMissing { tool, package })?;
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("PATH", HOST_PATH.join(":"))
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null());
    crate::ui::log::command(&cmd);
    let out = cmd
        .output()
        .map_err(|source| InstallError::Spawn { tool, source })?;
    // Only stderr: stdout is the data the caller parses (a control file, say).
    crate::ui::log::finished(cmd.get_program(), &out.status, &out.stderr);
    if !out.status.success() {
        return Err(InstallError::HostTool {
            tool,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

/// Spawns `cmd` in its own process group with output to `log` and waits, killing the
/// group when `cancel` is set.
fn wait(
    mut cmd: Command,
    tool: &'static str,
    log: &File,
    cancel: &AtomicBool,
) -> Result<ExitStatus, InstallError> {
    let out = log
        .try_clone()
        .map_err(|source| InstallError::Spawn { tool, source })?;
    let err = log
        .try_clone()
        .map_err(|source| InstallError::Spawn { tool, source })?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    // The command line and its exit status go into the log beside the command's output,
    // so that the log read back by the step (`-vv`, `--log-file`, an error's tail) says
    // which command printed what: this may run in the user-namespace worker, which has
    // no terminal of its own.
    let mut header = log;
    let _ = writeln!(header, "{HEADER}{}", crate::ui::log::command_line(&cmd));
    let mut child = cmd
        .spawn()
        .map_err(|source| InstallError::Spawn { tool, source })?;
    let group = rustix::process::Pid::from_child(&child);
    loop {
        if cancel.load(Ordering::Relaxed) {
            // The whole group: dpkg, its maintainer scripts and anything they forked.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            return Err(InstallError::Cancelled);
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                // Daemons a script left behind in the group must not outlive the step.
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                let _ = writeln!(header, "{HEADER}{tool}: {status}");
                return Ok(status);
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(source) => {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                let _ = child.wait();
                return Err(InstallError::Spawn { tool, source });
            }
        }
    }
}
