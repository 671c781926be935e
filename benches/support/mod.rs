//! Shared machinery of the w4b benchmarks: a deterministic generator of synthetic
//! workspaces, a runner for the real `w4b` binary in a pinned environment, in-process
//! baselines (stat walks, record reads) and the small statistics and table printing every
//! bench reports with. [`disk`] holds what the disk-format benches add: generated host
//! trees, the adapter feeding them to w4b's image writers, and the external tools their
//! baselines run.
//!
//! The benches run on shared 2-core machines where absolute times are noise, so every
//! measurement here is meant to be paired with a baseline taken in the same run, in the
//! same rounds (interleaved, so a burst of load from a neighbour hits both sides).
//! Nothing here uses randomness: the same parameters generate the same bytes.

// Each bench binary includes this module and uses a different subset of it.
#![allow(dead_code)]

pub mod build;
pub mod debian;
pub mod disk;
/// The W4B modules' package sets and unit files stood in for on a base without dpkg
/// (`tests/support/module_stand_ins.rs`): the fleet bench's hives build without a network.
#[path = "../../tests/support/module_stand_ins.rs"]
pub mod module_stand_ins;
/// The tests' oracle policy (`tests/support/oracle.rs`); the benches use its `find` to
/// look tools up, and panic on a missing one (see [`disk::require`]).
#[path = "../../tests/support/oracle.rs"]
pub mod oracle;
pub mod pibase;

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The epoch every generated image pins, so builds never see the wall clock.
pub const EPOCH: u64 = 1_700_000_000;

/// What goes into a generated workspace. Every image gets its own layers (named after
/// the image), so no step is shared between images and the step count is exactly
/// `images × (layers_per_image + 3)`: `#base`, one step per layer, `#rootfs`, `#tar`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub images: usize,
    pub layers_per_image: usize,
    /// Host files below each layer's `source:` directory; 0 gives layers with a single
    /// inline `content:` file and no source directory.
    pub files_per_layer: usize,
    /// Sizes of the generated files vary deterministically in `min..=max` bytes.
    pub file_bytes: (usize, usize),
}

impl Shape {
    pub fn expected_steps(&self) -> usize {
        self.images * (self.layers_per_image + 3)
    }
}

/// A generated workspace inside its own temporary directory, with its own cache dir.
pub struct Workspace {
    /// Holds `ws/`, `cache/` and `home/`; removed on drop.
    pub root: tempfile::TempDir,
    pub ws: PathBuf,
    pub cache: PathBuf,
    pub home: PathBuf,
    /// Host input files written below `defs/` (layer sources, not the YAML files).
    pub source_files: usize,
    pub source_bytes: u64,
    /// Definition files (`*.yaml`) written below `defs/`.
    pub def_files: usize,
}

/// Deterministic file contents: printable lines derived from BLAKE3 of the file's name,
/// so files differ from each other (no accidental deduplication in the store) and the
/// same name always gives the same bytes.
fn file_content(name: &str, (min, max): (usize, usize)) -> Vec<u8> {
    let seed = blake3::hash(name.as_bytes());
    let span = max.saturating_sub(min) + 1;
    let pick = u64::from_le_bytes(seed.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    let len = min + (pick % span as u64) as usize;
    let mut out = Vec::with_capacity(len + 80);
    let mut block = *seed.as_bytes();
    while out.len() < len {
        out.extend_from_slice(hex::encode(block).as_bytes());
        out.push(b'\n');
        block = *blake3::hash(&block).as_bytes();
    }
    out.truncate(len);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Workspace {
    /// Writes the workspace described by `shape` into a fresh temporary directory.
    ///
    /// Layer `iXXlYYY` of image `imgXX` installs its source directory at `/opt/iXXlYYY`
    /// (a third of its files in a `sub/` directory, so walks recurse) plus an inline
    /// `/etc/iXXlYYY.conf`; with `files_per_layer == 0` only the inline file remains.
    pub fn generate(shape: Shape) -> Workspace {
        let root = tempfile::Builder::new()
            .prefix("w4b-bench-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ws = root.path().join("ws");
        let cache = root.path().join("cache");
        let home = root.path().join("home");
        write(&ws.join("w4b.yaml"), b"");
        fs::create_dir_all(&home).unwrap_or_else(|e| panic!("create {}: {e}", home.display()));
        let defs = ws.join("defs");
        let mut source_files = 0;
        let mut source_bytes = 0u64;
        let mut def_files = 0;
        for i in 0..shape.images {
            let mut labels = Vec::with_capacity(shape.layers_per_image);
            for l in 0..shape.layers_per_image {
                let name = format!("i{i:02}l{l:03}");
                let mut yaml = String::from("kind: layer\nfiles:\n");
                if shape.files_per_layer > 0 {
                    let _ = writeln!(yaml, "  - {{path: /opt/{name}, source: files/{name}}}");
                    for f in 0..shape.files_per_layer {
                        let rel = if f % 3 == 2 {
                            format!("sub/f{f:03}.txt")
                        } else {
                            format!("f{f:03}.txt")
                        };
                        let bytes = file_content(&format!("{name}/{rel}"), shape.file_bytes);
                        source_bytes += bytes.len() as u64;
                        source_files += 1;
                        write(&defs.join("layers/files").join(&name).join(rel), &bytes);
                    }
                }
                let _ = writeln!(
                    yaml,
                    "  - {{path: /etc/{name}.conf, content: \"layer {name}\\n\"}}"
                );
                write(&defs.join(format!("layers/{name}.yaml")), yaml.as_bytes());
                def_files += 1;
                labels.push(format!("//layers:{name}"));
            }
            let image = format!(
                "kind: image\nbase: scratch\nlayers: [{}]\nepoch: {EPOCH}\noutput: {{format: tar, level: 1}}\n",
                labels.join(", ")
            );
            write(&defs.join(format!("images/img{i:02}.yaml")), image.as_bytes());
            def_files += 1;
        }
        Workspace {
            root,
            ws,
            cache,
            home,
            source_files,
            source_bytes,
            def_files,
        }
    }

    /// Keeps the temporary directory on disk (for profiling a build by hand) and
    /// returns its path.
    pub fn keep(self) -> PathBuf {
        self.root.keep()
    }

    pub fn defs(&self) -> PathBuf {
        self.ws.join("defs")
    }

    /// `w4b ARGS…` from the workspace, in a pinned environment: nothing inherited but
    /// `PATH`, a private `HOME` and cache, `TZ=UTC`, `LC_ALL=C`, `NO_COLOR`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_w4b"));
        c.args(args)
            .current_dir(&self.ws)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .env("NO_COLOR", "1")
            .env("W4B_CACHE_DIR", &self.cache)
            .stdin(Stdio::null());
        c
    }

    /// Runs `w4b build //images/... --message-format json` and returns the wall time of
    /// the process (spawn to exit) with its `finished` event. Panics on failure: a bench
    /// of a build that fails measures nothing.
    pub fn build(&self) -> (Duration, Finished) {
        let mut cmd = self.command(&["build", "//images/...", "--message-format", "json"]);
        let start = Instant::now();
        let out = cmd.output().unwrap_or_else(|e| panic!("spawn w4b: {e}"));
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "w4b build failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let finished = stdout
            .lines()
            .rev()
            .find_map(Finished::parse)
            .unwrap_or_else(|| panic!("no `finished` event in w4b's output:\n{stdout}"));
        (took, finished)
    }

    /// Wall time of `w4b --version`: process start-up, argument parsing and exit, the
    /// floor under every command.
    pub fn version(&self) -> Duration {
        let mut cmd = self.command(&["--version"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().unwrap_or_else(|e| panic!("spawn w4b: {e}"));
        let took = start.elapsed();
        assert!(status.success(), "w4b --version failed: {status}");
        took
    }
}

/// The last event of `--message-format json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub steps: u64,
    pub ran: u64,
    pub cached: u64,
    pub failed: u64,
}

impl Finished {
    fn parse(line: &str) -> Option<Finished> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["event"] != "finished" {
            return None;
        }
        let n = |k: &str| v[k].as_u64();
        Some(Finished {
            steps: n("steps")?,
            ran: n("ran")?,
            cached: n("cached")?,
            failed: n("failed")?,
        })
    }
}

/// Totals of a walk, returned so the optimiser cannot drop the work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkTotals {
    pub files: u64,
    pub bytes: u64,
    /// XOR of the first byte of every BLAKE3 digest, or 0 when nothing was hashed.
    pub check: u8,
}

/// What a walk does with each regular file it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// `symlink_metadata` only: the least any mtime-based freshness check can do.
    Stat,
    /// `open` + `read` the whole file.
    Read,
    /// `open` + `read` + BLAKE3: what a no-op costs without a stat cache.
    ReadHash,
}

/// Recursively walks `dir` in sorted order, `symlink_metadata` on every entry, and
/// visits each regular file as `visit` says.
pub fn walk(dir: &Path, visit: Visit) -> WalkTotals {
    let mut totals = WalkTotals::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    walk_into(dir, visit, &mut totals, &mut buf);
    totals
}

fn walk_into(dir: &Path, visit: Visit, totals: &mut WalkTotals, buf: &mut Vec<u8>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("read {}: {e}", dir.display())).path())
        .collect();
    paths.sort();
    for path in paths {
        let m = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        if m.is_dir() {
            walk_into(&path, visit, totals, buf);
        } else if m.is_file() {
            totals.files += 1;
            totals.bytes += m.len();
            if visit != Visit::Stat {
                buf.clear();
                fs::File::open(&path)
                    .and_then(|mut f| f.read_to_end(buf))
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                if visit == Visit::ReadHash {
                    totals.check ^= blake3::hash(buf).as_bytes()[0];
                }
            }
        }
    }
}

/// Every regular file below `dir`, in sorted order.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = e.unwrap_or_else(|e| panic!("read {}: {e}", d.display())).path();
            let m = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            if m.is_dir() {
                stack.push(path);
            } else if m.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Visits each of `paths`, already known (no directory listing): what a lookup by key
/// costs when the key names the path.
pub fn visit_each(paths: &[PathBuf], visit: Visit) -> WalkTotals {
    let mut totals = WalkTotals::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    for path in paths {
        if visit == Visit::Stat {
            let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            totals.bytes += m.len();
        } else {
            buf.clear();
            fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            totals.bytes += buf.len() as u64;
            if visit == Visit::ReadHash {
                totals.check ^= blake3::hash(&buf).as_bytes()[0];
            }
        }
        totals.files += 1;
    }
    totals
}

/// Times one call of `f`.
pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let v = f();
    (start.elapsed(), v)
}

/// Samples of one measurement.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }
    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> Duration {
        let v = self.sorted();
        assert!(!v.is_empty(), "median of no samples");
        let mid = v.len() / 2;
        if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2
        }
    }
    pub fn min(&self) -> Duration {
        self.sorted().first().copied().unwrap_or_default()
    }
    pub fn max(&self) -> Duration {
        self.sorted().last().copied().unwrap_or_default()
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Number of timed rounds: `--runs N` on the bench's command line, else `default`.
/// Other arguments (cargo passes `--bench`) are ignored.
pub fn runs(default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == "--runs")
        .map(|w| {
            w[1].parse()
                .unwrap_or_else(|_| panic!("--runs takes a positive number, got `{}`", w[1]))
        })
        .filter(|&n: &usize| n > 0)
        .unwrap_or(default)
}

/// Whether `flag` was given on the bench's command line (after `--`).
pub fn flag(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

/// The header every bench prints: what is measured, and on what.
pub fn header(name: &str, what: &str) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("== {name} ==");
    for line in what.lines() {
        println!("   {line}");
    }
    println!("   machine: {cpus} CPU(s) available; absolute times are noise here, ratios are the signal");
    println!();
}

/// A plain-text table with a left-aligned first column and right-aligned others.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.head.len(), "table row width");
        self.rows.push(cells);
    }
    pub fn print(&self) {
        let mut width: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&width).enumerate() {
                let pad = w - cell.chars().count();
                if i == 0 {
                    let _ = write!(s, "   {cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(s, "  {}{cell}", " ".repeat(pad));
                }
            }
            println!("{}", s.trim_end());
        };
        line(&self.head);
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule);
        for row in &self.rows {
            line(row);
        }
        println!();
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The value after `name` on the bench's command line (`--base debian`), if given.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}
