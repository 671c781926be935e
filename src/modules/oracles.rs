//! Checks of generated files by the real tools (`sh -n`, `systemd-analyze verify`,
//! Python's parsers), for the modules' tests. A missing tool follows the one oracle
//! policy (`crate::oracle`: fails under CI, skips visibly elsewhere); a present one that
//! complains fails the test.
#![allow(clippy::disallowed_methods)] // tests run the oracle tools

use std::io::Write as _;
use std::process::{Command, Stdio};

pub use crate::oracle::have;

fn run(cmd: &mut Command, stdin: &str) -> (bool, String) {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    };
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    match child.wait_with_output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => panic!("{cmd:?}: {e}"),
    }
}

/// Runs a script with `sh` and returns its output; a failure fails the test.
pub fn run_sh(script: &str) -> String {
    let (ok, out) = run(Command::new("sh").arg("-s"), script);
    assert!(ok, "sh failed:\n{out}\n--- script:\n{script}");
    out
}

/// `sh -n` (dash on Debian: POSIX, no bashisms) parses the script, with the
/// `set -eu` header the assembler adds.
pub fn sh_syntax_ok(name: &str, script: &str) {
    if !have("sh") {
        return;
    }
    let (ok, out) = run(Command::new("sh").arg("-n"), &format!("set -eu\n{script}"));
    assert!(ok, "section {name} does not parse:\n{out}\n--- script:\n{script}");
}

/// `systemd-analyze verify` on units written to a temporary directory: its complaints,
/// or `None` without the tool (reported by the oracle policy). Complaints about what
/// exists only on the hive (the service's executables) are not errors of the unit file
/// and are left out.
pub fn systemd_complaints(units: &[(&str, &str)]) -> Option<Vec<String>> {
    if !have("systemd-analyze") {
        return None;
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut paths = Vec::new();
    for (name, text) in units {
        let p = dir.path().join(name);
        if let Err(e) = std::fs::write(&p, text) {
            panic!("write {}: {e}", p.display());
        }
        paths.push(p);
    }
    let (_, out) = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--generators=no", "--recursive-errors=no"])
            .args(&paths)
            .env("SYSTEMD_LOG_COLOR", "0"),
        "",
    );
    Some(
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !(l.contains("Command ") && l.contains("is not executable")))
            .map(str::to_owned)
            .collect(),
    )
}

/// Fails the test on any complaint of `systemd-analyze verify`; skips without it.
pub fn systemd_verify(units: &[(&str, &str)]) {
    if let Some(c) = systemd_complaints(units) {
        assert!(c.is_empty(), "systemd-analyze verify:\n{}", c.join("\n"));
    }
}

#[test]
fn the_systemd_oracle_reports_bad_units() {
    let bad = "[Service]\nType=oneshot\nExecStart=/bin/true\nBogusKey=1\nProtectSystem=sometimes\n";
    if let Some(c) = systemd_complaints(&[("bad.service", bad)]) {
        assert_eq!(c.len(), 2, "{c:?}");
    }
    let good = "[Service]\nType=oneshot\nExecStart=/no/such/tool\n";
    if let Some(c) = systemd_complaints(&[("good.service", good)]) {
        assert!(c.is_empty(), "{c:?}");
    }
}

/// Runs Python code with `stdin`, when python3 and the module it needs exist.
pub fn python(code: &str, stdin: &str, module: &str) {
    if !have("python3") {
        return;
    }
    let (has_module, _) = run(
        Command::new("python3").args(["-c", &format!("import {module}")]),
        "",
    );
    if !has_module {
        crate::oracle::unavailable(&format!("python3 has no `{module}` module"));
        return;
    }
    let (ok, out) = run(Command::new("python3").args(["-c", code]), stdin);
    assert!(ok, "python check failed:\n{out}\n--- input:\n{stdin}");
}
