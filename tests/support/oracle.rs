//! The one policy for oracle tests: checks of w4b's output by real tools (`e2fsck`,
//! `fsck.fat`, `sfdisk`, `nft`, `sshd -t`, `systemd-analyze`, PostgreSQL, Python, …).
//!
//! - With `CI` set (to anything but `false` or `0`), a missing oracle fails the test: CI
//!   installs every tool (`.ci/install-deps`), so a skip there would hide a broken check.
//! - Locally, it skips that check with a line on the test process's standard error,
//!   written to the file descriptor directly rather than through `eprintln!`. libtest
//!   captures only the `print!` family, so the line shows in `cargo test` output even for
//!   a passing test: `oracle skipped (<test>): <reason>`. (`cargo nextest` keeps a passing
//!   test's output; run it with `--success-output immediate` to see skips.)
//!
//! Include it with `#[path = ".../tests/support/oracle.rs"] mod oracle;` (the library does
//! so under `cfg(test)`, as does the integration test binary) and use:
//! [`have`] for a tool on `PATH`, [`unavailable`] for any other missing precondition
//! (root, a Python module), [`require!`] to return from a test early, and [`skipped`]
//! only for what CI cannot provide either (a kernel built without `vfat`).

#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // the policy reads `CI`; `have` searches `PATH`

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Whether this run is CI's: `CI` set and not `false`/`0`/empty.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The first executable named `tool` on `PATH` (or `tool` itself when it is a path).
pub fn find(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return is_executable(Path::new(tool)).then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the oracle `tool` can run. When it cannot: fails the test under CI, and
/// otherwise reports the skip (see the module doc) and returns `false`.
#[track_caller]
pub fn have(tool: &str) -> bool {
    if find(tool).is_some() {
        return true;
    }
    unavailable(&format!("`{tool}` is not installed"));
    false
}

/// Whether every tool in `tools` can run; reports all the missing ones at once.
#[track_caller]
pub fn have_all(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| find(t).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    unavailable(&format!("not installed: {}", missing.join(", ")));
    false
}

/// An oracle cannot run here for `reason` (a missing tool or module, no privileges, a
/// kernel without the filesystem). Under CI this fails the test; locally it reports the
/// skip, and the caller skips the check.
#[track_caller]
pub fn unavailable(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if in_ci() {
        panic!(
            "oracle unavailable in CI ({test}): {reason}\n\
             CI must provide every oracle: add it to `.ci/install-deps`"
        );
    }
    skipped(reason);
}

/// A check that cannot run here for a reason CI cannot remove either (a kernel built
/// without a filesystem, a fixture that needs privileges the test does not have by
/// design): reported like a skip, never a failure. Prefer [`unavailable`].
pub fn skipped(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("oracle skipped ({test}): {reason}\n");
    // Straight to the descriptor: `eprintln!` would be captured and hidden for a test
    // that passes.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Returns from the calling test (or function returning `()`) when the tool is missing.
/// Runs an oracle command and returns its output, failing the test (with the tool's
/// standard error) when it does not start or exits unsuccessfully.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[allow(unused_macros)] // not every includer uses it
macro_rules! require {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::oracle::have_all(&[$($tool),+]) {
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use require;

#[cfg(test)]
mod tests {
    #[test]
    fn find_sees_sh_and_not_an_invented_tool() {
        assert!(super::find("sh").is_some());
        assert!(super::find("w4b-no-such-oracle-tool").is_none());
        assert!(super::find("/bin/sh").is_some());
    }
}
