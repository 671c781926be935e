//! The resolver against real Debian indices, with apt as the oracle: the host's
//! `/var/lib/apt/lists/*_Packages` (bookworm, after `apt-get update`) and its
//! `/var/lib/dpkg/status`, compared with the `Inst` lines of `apt-get install --simulate
//! --no-install-recommends`. Without the lists (or apt) the test fails under `CI` and
//! skips with a message otherwise.
//!
//! Documented differences: none for these requests. apt also applies pins and phased
//! updates, which the host does not configure.

#![allow(clippy::disallowed_methods)] // runs apt-get and apt-helper, the oracles

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use w4b::apt::resolve::{read_status, resolve, Candidate, Options, Reason, Request};

use crate::oracle;

const REQUESTS: [&str; 4] = ["postgresql-15", "openssh-server", "nftables", "wireguard-tools"];

/// The host's bookworm `Packages` lists for its own architecture, sorted by name.
fn package_lists(arch: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/var/lib/apt/lists") else {
        return Vec::new();
    };
    let mut lists: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.contains("_dists_bookworm")
                && name.contains(&format!("_binary-{arch}_Packages"))
                && !name.ends_with(".diff_Index")
        })
        .collect();
    lists.sort();
    lists
}

/// A list's text: apt stores them compressed (`.lz4`, `.gz`, `.xz`) or not, and
/// `apt-helper cat-file` reads them all.
fn cat(path: &Path) -> String {
    let out = Command::new("/usr/lib/apt/apt-helper")
        .arg("cat-file")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running apt-helper: {e}"));
    assert!(
        out.status.success(),
        "apt-helper cat-file {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("lists are UTF-8")
}

/// The names apt would install (`Inst name ...` lines) with `status` as dpkg's status file.
fn apt_inst(status: &Path) -> BTreeSet<String> {
    let out = Command::new("apt-get")
        .args([
            "install",
            "--simulate",
            "--no-install-recommends",
            "-o",
            "Debug::NoLocking=1",
        ])
        .arg(format!("-o=Dir::State::status={}", status.display()))
        .args(REQUESTS)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("running apt-get: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "apt-get --simulate: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split(':').next().unwrap_or(n).to_owned())
        .collect()
}

fn host_arch() -> String {
    let out = Command::new("dpkg").arg("--print-architecture").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn resolve_matches_apt_on_the_hosts_bookworm_lists() {
    if !oracle::have_all(&["apt-get", "dpkg", "/usr/lib/apt/apt-helper"]) {
        return;
    }
    let arch = host_arch();
    let lists = package_lists(&arch);
    if lists.is_empty() {
        oracle::unavailable("no bookworm `Packages` lists in `/var/lib/apt/lists`: run `apt-get update`");
        return;
    }
    let texts: Vec<String> = lists.iter().map(|p| cat(p)).collect();
    let started = Instant::now();
    let mut universe = Vec::new();
    for (repo, text) in texts.iter().enumerate() {
        universe.extend(Candidate::read_index(text, repo).unwrap());
    }
    let parsed = started.elapsed();
    assert!(universe.len() > 60_000, "{} candidates", universe.len());
    let requests: Vec<Request> = REQUESTS.iter().map(|r| Request::parse(r).unwrap()).collect();
    let options = Options::new(arch.clone());

    // 1. Onto this host, as it is.
    let status_text = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let base = read_status(&status_text).unwrap();
    let started = Instant::now();
    let r = resolve(&universe, &base, &requests, &options).unwrap();
    let solved = started.elapsed();
    let ours: BTreeSet<String> = r.install.iter().map(|c| c.candidate.name.clone()).collect();
    let theirs = apt_inst(Path::new("/var/lib/dpkg/status"));
    assert_eq!(ours, theirs, "onto the host: w4b (left) and apt (right) differ");
    for c in &r.install {
        assert!(!c.reasons.is_empty());
        assert!(c.candidate.architecture == arch || c.candidate.architecture == "all");
    }

    // 2. Onto an empty system: the whole closure (a few hundred packages).
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("status");
    std::fs::write(&empty, "").unwrap();
    let started = Instant::now();
    let r = resolve(&universe, &[], &requests, &options).unwrap();
    let solved_empty = started.elapsed();
    let ours: BTreeSet<String> = r.install.iter().map(|c| c.candidate.name.clone()).collect();
    let theirs = apt_inst(&empty);
    let only_ours: Vec<&String> = ours.difference(&theirs).collect();
    let only_theirs: Vec<&String> = theirs.difference(&ours).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "onto an empty system: only w4b: {only_ours:?}; only apt: {only_theirs:?}"
    );
    assert!(r.from_base.is_empty());
    assert!(r.install.iter().any(|c| c.reasons.contains(&Reason::Requested)));
    // The closure is sorted by name.
    let names: Vec<&str> = r.install.iter().map(|c| c.candidate.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    eprintln!(
        "resolve: {} candidates parsed in {parsed:?}; host closure in {solved:?}; {} packages onto an empty system in {solved_empty:?}",
        universe.len(),
        r.install.len()
    );
}
