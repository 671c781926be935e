//! One timed `w4b build` process as the image benches run it, and what they read from it:
//! the wall time from spawn to exit, the peak RSS (`/usr/bin/time -f %M`, `wait4`'s
//! rusage), and the `--message-format json` events — which steps ran and which were
//! cached, each step's own time and miss reason, the `step-note` lines. Also the cache
//! bookkeeping the image benches share: hard-linked copies of a warm cache and its size
//! on disk.
//!
//! The process runs in the pinned environment of every bench (nothing inherited but
//! `PATH`; a private `HOME`, `TZ=UTC`, `LC_ALL=C`, `NO_COLOR`), with the cache directory
//! the caller names.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{disk, Samples, Table};

/// A step that ran, with its own `duration_ms` (steps run in parallel, so these add up
/// to more than the wall time) and its miss reason.
#[derive(Clone, Debug)]
pub struct StepTime {
    /// The name after `#` (`bootstrap`, `rootfs.ext4`, `adduser_3.134_all.deb`).
    pub name: String,
    /// The step kind (`fetch`, `bootstrap`, `compress`).
    pub kind: String,
    pub ms: u64,
    pub miss: String,
}

/// A target of a build: its label, its result word (`ok`, `failed`) and the summed own
/// time of its steps that ran.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetDone {
    pub label: String,
    pub result: String,
    pub ran_ms: u64,
}

/// One w4b process: wall time, peak RSS, and what ran.
pub struct Run {
    pub took: Duration,
    pub max_rss_kib: u64,
    /// Full names of the steps that ran, and of those found cached.
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    pub steps: u64,
    /// The steps that ran, in the order they finished.
    pub timings: Vec<StepTime>,
    /// The steps' `step-note` lines (`#compress`: frames compressed and reused).
    pub notes: Vec<String>,
    /// Each built target, from the `target-finished` events: the summary table's rows.
    pub targets: Vec<TargetDone>,
}

impl Run {
    /// Whether a step whose name ends with `suffix` ran.
    pub fn ran(&self, suffix: &str) -> bool {
        self.ran.iter().any(|s| s.ends_with(suffix))
    }

    /// Whether a step whose name ends with `suffix` was cached.
    pub fn cached(&self, suffix: &str) -> bool {
        self.cached.iter().any(|s| s.ends_with(suffix))
    }
}

/// Where and how a bench runs w4b.
pub struct W4b<'a> {
    pub ws: &'a Path,
    pub home: &'a Path,
    /// Scratch file for `/usr/bin/time`'s output.
    pub rss_file: &'a Path,
}

impl W4b<'_> {
    /// `w4b build //images:<name> --message-format json <extra…>` with `cache` as the
    /// cache directory, under `/usr/bin/time -f %M`. Panics when the build fails: a bench
    /// of a failed build measures nothing.
    pub fn build(&self, cache: &Path, name: &str, extra: &[&OsStr]) -> Run {
        self.build_label(cache, &format!("//images:{name}"), extra)
    }

    /// `w4b ARGS…` in the pinned environment with `cache` as the cache directory (the
    /// commands around a build: `w4b hive new`, `w4b hive list`).
    pub fn command(&self, cache: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_w4b"));
        self.pin(&mut cmd, cache);
        cmd
    }

    fn pin(&self, cmd: &mut Command, cache: &Path) {
        cmd.current_dir(self.ws)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home)
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .env("NO_COLOR", "1")
            .env("W4B_CACHE_DIR", cache)
            .stdin(Stdio::null());
    }

    /// [`W4b::build`] of any label or pattern (`//hives/...`).
    pub fn build_label(&self, cache: &Path, label: &str, extra: &[&OsStr]) -> Run {
        assert!(
            Path::new("/usr/bin/time").exists(),
            "/usr/bin/time (GNU time) measures the peak memory; install `time`"
        );
        disk::remove(self.rss_file);
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "%M", "-o"])
            .arg(self.rss_file)
            .arg(env!("CARGO_BIN_EXE_w4b"))
            .arg("build")
            .arg(label)
            .args(["--message-format", "json"])
            .args(extra);
        self.pin(&mut cmd, cache);
        let start = Instant::now();
        let out = cmd.output().unwrap_or_else(|e| panic!("spawn w4b: {e}"));
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "w4b build {label} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let max_rss_kib = fs::read_to_string(self.rss_file)
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no max RSS from /usr/bin/time in {}", self.rss_file.display()));
        let (mut ran, mut cached, mut steps, mut timings) = (Vec::new(), Vec::new(), None, Vec::new());
        let (mut notes, mut targets) = (Vec::new(), Vec::new());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let step = || v["step"].as_str().unwrap_or_default().to_string();
            match (v["event"].as_str(), v["status"].as_str()) {
                (Some("step-finished"), Some("ran")) => {
                    let name = step();
                    let short = name
                        .rsplit_once('#')
                        .map_or(name.as_str(), |(_, s)| s)
                        .to_string();
                    let miss = v["miss"]["reason"]
                        .as_str()
                        .or(v["miss"].as_str())
                        .map_or_else(|| v["miss"].to_string(), str::to_string);
                    timings.push(StepTime {
                        name: short,
                        kind: v["kind"].as_str().unwrap_or_default().to_string(),
                        ms: v["duration_ms"].as_u64().unwrap_or(0),
                        miss,
                    });
                    ran.push(name);
                }
                (Some("step-finished"), Some("cached")) => cached.push(step()),
                (Some("step-note"), _) => notes.push(format!(
                    "{}: {}",
                    step(),
                    v["message"].as_str().unwrap_or_default()
                )),
                (Some("target-finished"), _) => targets.push(TargetDone {
                    label: v["target"].as_str().unwrap_or_default().to_string(),
                    result: v["result"].as_str().unwrap_or_default().to_string(),
                    ran_ms: v["ran_ms"].as_u64().unwrap_or(0),
                }),
                (Some("finished"), _) => steps = v["steps"].as_u64(),
                _ => {}
            }
        }
        let steps = steps.unwrap_or_else(|| {
            panic!(
                "no `finished` event in w4b's output:\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        Run {
            took,
            max_rss_kib,
            ran,
            cached,
            steps,
            timings,
            notes,
            targets,
        }
    }
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Peak RSS of several runs in MiB: one number, or the range.
pub fn rss_cell(rss: &[u64]) -> String {
    let max = rss.iter().copied().max().unwrap_or(0);
    let min = rss.iter().copied().min().unwrap_or(0);
    if min == max {
        format!("{:.0}", mib(max))
    } else {
        format!("{:.0}–{:.0}", mib(min), mib(max))
    }
}

pub fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A table row: median, min, max, and the median's ratio to `base`.
pub fn row(table: &mut Table, name: &str, s: &Samples, base: Duration) {
    table.row(vec![
        name.to_string(),
        s.len().to_string(),
        format!("{:.2}", secs(s.median())),
        format!("{:.2}", secs(s.min())),
        format!("{:.2}", secs(s.max())),
        format!("{:.2}", secs(s.median()) / secs(base)),
    ]);
}

/// Per-step medians over the rounds' [`Run::timings`], in the order the steps finished.
/// The `fetch` steps (one per `.deb` on a bootstrapped base) are one row: their own
/// times summed per round, and how many ran.
pub fn step_table(title: &str, runs: &[Vec<StepTime>]) {
    let row_name = |t: &StepTime| {
        if t.kind == "fetch" {
            "fetch (all)".to_string()
        } else {
            format!("#{}", t.name)
        }
    };
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for t in r {
            let n = row_name(t);
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let mut table = Table::new(&[
        title,
        "steps",
        "median s",
        "min s",
        "max s",
        "why it ran (last round)",
    ]);
    for n in &names {
        let mut s = Samples::default();
        let mut why = String::new();
        let mut count = 0;
        for r in runs {
            let mine: Vec<&StepTime> = r.iter().filter(|t| &row_name(t) == n).collect();
            if let Some(last) = mine.last() {
                why.clone_from(&last.miss);
                count = mine.len();
                s.push(Duration::from_millis(mine.iter().map(|t| t.ms).sum()));
            }
        }
        let mut why: String = why.chars().take(60).collect();
        if why == "null" {
            why.clear();
        }
        table.row(vec![
            n.clone(),
            count.to_string(),
            format!("{:.2}", secs(s.median())),
            format!("{:.2}", secs(s.min())),
            format!("{:.2}", secs(s.max())),
            why,
        ]);
    }
    table.print();
}

/// A copy of the warm cache at `dst` made of hard links (`cp -al`, untimed): every round
/// starts from the same warm state, and what it adds is deleted after it, so the rounds
/// cost no disk beyond one rebuild. Blobs and records are never rewritten in place (temp
/// file + rename), so sharing their inodes is safe; only their times are shared.
pub fn fresh_copy(warm: &Path, dst: &Path) -> PathBuf {
    if dst.exists() {
        fs::remove_dir_all(dst).unwrap_or_else(|e| panic!("remove {}: {e}", dst.display()));
    }
    disk::run(Command::new("cp").arg("-al").arg(warm).arg(dst));
    dst.to_path_buf()
}

/// Bytes below `dir` as allocated on disk (holes of sparse files do not count; hard
/// links count once), by `du`.
pub fn du(dir: &Path) -> u64 {
    let out = disk::run(Command::new("du").args(["-s", "--block-size=1"]).arg(dir));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What a round added to a hard-linked copy of a warm cache ([`fresh_copy`]), by kind:
/// every file below `dir` with one link (new, or rewritten by rename) counted by its
/// allocated bytes, grouped as `blobs ≥ 256 KiB` (chunks, frames), `blobs < 256 KiB`,
/// `indexes`, `memos`, `records` and `other` (usage counters, pack tables, temp). Sorted
/// by bytes, largest first. Directories are not counted: `du` of the round's growth minus
/// this total is the directories' own growth.
pub fn growth_by_kind(dir: &Path) -> Vec<(String, u64, u64)> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, rel: &str, out: &mut BTreeMap<String, (u64, u64)>) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if m.is_dir() {
                walk(&e.path(), &sub, out);
                continue;
            }
            if m.nlink() != 1 {
                continue;
            }
            let kind = match sub.split('/').nth(1).unwrap_or("") {
                "blobs" if m.len() >= 256 << 10 => "blobs ≥ 256 KiB",
                "blobs" => "blobs < 256 KiB",
                "indexes" => "indexes",
                "memos" => "memos",
                "records" => "records",
                _ => "other",
            };
            let slot = out.entry(kind.to_owned()).or_default();
            slot.0 += 1;
            slot.1 += m.blocks() * 512;
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    let mut v: Vec<(String, u64, u64)> = out.into_iter().map(|(k, (n, b))| (k, n, b)).collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    v
}

/// [`growth_by_kind`] as one line: `kind count×, KiB; …`.
pub fn growth_line(kinds: &[(String, u64, u64)]) -> String {
    kinds
        .iter()
        .map(|(k, n, b)| format!("{k}: {n} files, {} KiB", b / 1024))
        .collect::<Vec<_>>()
        .join("; ")
}
