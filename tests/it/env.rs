//! A pinned test environment: a temporary workspace and cache, a fixed environment
//! (`TZ=UTC`, `NO_COLOR`, `LC_ALL=C`, no inherited `W4B_*`), and helpers that run the real
//! `w4b` binary and read its JSON event stream.

#![allow(clippy::disallowed_methods)] // Tests spawn the binary and oracles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct TestEnv {
    pub root: tempfile::TempDir,
    pub cache: PathBuf,
    pub ws: PathBuf,
    pub extra_env: BTreeMap<String, String>,
}

/// The outcome of one `w4b build --message-format json`.
#[derive(Debug)]
pub struct Build {
    pub output: Output,
    pub events: Vec<Value>,
}

impl Build {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }
    /// Names of the steps that ran, sorted.
    pub fn ran(&self) -> Vec<String> {
        self.with_status("ran")
    }
    pub fn cached(&self) -> Vec<String> {
        self.with_status("cached")
    }
    fn with_status(&self, status: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .events
            .iter()
            .filter(|e| e["event"] == "step-finished" && e["status"] == status)
            .map(|e| e["step"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    }
    /// The digest of output `name` of step `step` (a full label), whether it ran or was
    /// cached.
    pub fn output(&self, step: &str, name: &str) -> Option<String> {
        self.events
            .iter()
            .find(|e| e["event"] == "step-finished" && e["step"] == step)
            .and_then(|e| e["outputs"][name]["digest"].as_str())
            .map(str::to_owned)
    }
    pub fn finished(&self) -> &Value {
        self.events.last().expect("no events")
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        normal_umask();
        let root = tempfile::tempdir().expect("tempdir");
        let ws = root.path().join("ws");
        let cache = root.path().join("cache");
        std::fs::create_dir_all(ws.join("defs")).unwrap();
        std::fs::write(ws.join("w4b.yaml"), "").unwrap();
        TestEnv {
            root,
            cache,
            ws,
            extra_env: BTreeMap::new(),
        }
    }

    /// Writes a file below the workspace, creating parents.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.ws.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.ws.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_w4b"));
        c.current_dir(&self.ws);
        c.env_clear();
        c.env("PATH", std::env::var("PATH").unwrap_or_default());
        c.env("HOME", self.root.path());
        c.env("TZ", "UTC");
        c.env("LC_ALL", "C");
        c.env("NO_COLOR", "1");
        c.env("W4B_CACHE_DIR", &self.cache);
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("spawn w4b")
    }

    /// `w4b build --message-format json ARGS…`
    pub fn build(&self, args: &[&str]) -> Build {
        let mut all = vec!["build", "--message-format", "json"];
        all.extend_from_slice(args);
        let output = self.run(&all);
        let events = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Build { output, events }
    }

    /// `w4b why --format json LABEL`
    pub fn why(&self, label: &str) -> Value {
        let out = self.run(&["why", "--format", "json", label]);
        assert!(
            out.status.success(),
            "why failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("why json")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }

    /// `w4b keygen --out <root>/keys/NAME`: the paths of `NAME.key` and `NAME.pub`.
    pub fn keygen(&self, name: &str) -> (PathBuf, PathBuf) {
        let prefix = self.root.path().join("keys").join(name);
        let out = self.run(&["keygen", "--out", prefix.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (prefix.with_extension("key"), prefix.with_extension("pub"))
    }
}

/// Lists a `.tar.zst` with GNU tar: `mode owner size mtime path -> target`.
pub fn tar_listing(archive: &Path) -> String {
    let out = Command::new("tar")
        .args(["--zstd", "-tv", "--numeric-owner", "--full-time", "-f"])
        .arg(archive)
        .env("TZ", "UTC")
        .output()
        .expect("tar (install tar and zstd)");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree (files, directories, symlinks as symlinks).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&e.path(), &t);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &t).unwrap();
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// The fixtures (workspace files, test bases, package trees) are written with the modes a
/// developer's shell gives them: umask 022, whatever the test runner's umask (some CI
/// runners use 077). w4b itself is tested under other umasks by the determinism tests.
pub fn normal_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
}
