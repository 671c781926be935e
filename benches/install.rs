//! Installing a package set: w4b's `install` step against `mmdebstrap`, side by side on
//! the same machine in the same run, for the closure of a hive's packages (PostgreSQL,
//! sshd, nftables, WireGuard, the node exporter, Python's venv, systemd, NetworkManager,
//! sudo, curl: well over 100 arm64 packages) onto a minbase bookworm arm64 root.
//!
//! Baseline: mmdebstrap's share of the same install. Two mmdebstrap runs,
//! `--variant=minbase` with and without `--include=<the four>`, each with an
//! `--essential-hook` and a `--customize-hook` that write a timestamp: between the two
//! hooks mmdebstrap installs the non-essential packages (apt alone for minbase; apt and
//! the set with `--include`), so the difference of the two windows is what the set costs
//! mmdebstrap (apt's solver, dpkg under qemu-user, maintainer scripts, triggers), without
//! the bootstrap, the downloads or the tarball. Both runs take their `.deb`s from a local
//! cache (`sync-in`/`sync-out` hooks, mmdebstrap's documented way), so no window includes
//! a download.
//!
//! w4b: the minbase root (the first mmdebstrap run's output, kept) is captured into a
//! fresh store, the set's `.deb`s (downloaded once with a private apt whose status is the
//! root's) are put into it, and a graph of one `install` step builds; the timed run is
//! the whole step: materialize, dpkg, capture, normalise, removing the scratch root. Then
//! the same graph is built again on the same store: the step must be a cache hit, so a
//! cached rebuild installs nothing, and its time is printed too.
//!
//! Target (issue 11): w4b ≤ 1.2 × mmdebstrap's share. A miss prints `MISS`, never a
//! failure: benchmarks inform, and CI does not run them (they need root, binfmt, the
//! network and about 20 minutes).
//!
//! The mirror is the host's own (its deb822 sources, never hard-coded); without one, or
//! without root, qemu-user's binfmt handler or mmdebstrap, the bench says why and stops.
//! Caches (about 1 GB) live in [`CACHE`]; delete it to start over.
//!
//! Run: `cargo bench --bench install`.

#![allow(clippy::disallowed_methods)] // A bench runs mmdebstrap and apt-get and reads the clock.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest as _;
use w4b::defs::Arch;
use w4b::install::preflight;
use w4b::steps::epoch::Epoch;
use w4b::steps::install::{InstallStep, LockedDeb};
use w4b::store::AppStore;
use w4b::tree::host::capture;
use w4b::tree::Blobs;
use w4b_cache::{OutputRef, Producer};
use w4b_graph::exec::{BuildOptions, Engine, Silent};
use w4b_graph::graph::identity;
use w4b_graph::{Component, Graph, Outputs, PlanContext, RunContext, Step, StepError, StepStatus};

const CACHE: &str = "/tmp/w4b-bench-install-arm64";
const SUITE: &str = "bookworm";
const SET: [&str; 10] = [
    "postgresql-15",
    "openssh-server",
    "nftables",
    "wireguard-tools",
    "prometheus-node-exporter",
    "python3-venv",
    "systemd",
    "network-manager",
    "sudo",
    "curl",
];
const EPOCH: i64 = 1_700_000_000;
const TARGET: f64 = 1.2;

fn main() {
    println!("install: a locked package set installed by w4b vs mmdebstrap's share of the same install");
    println!(
        "   set: closure of `{}` onto minbase {SUITE} arm64",
        SET.join(" ")
    );
    println!("   load before: {}", loadavg());
    if let Err(why) = preconditions() {
        println!("   skipped: {why}");
        return;
    }
    let Some(mirror) = mirror() else {
        println!("   skipped: no `deb` source for {SUITE} in the host's apt configuration");
        return;
    };
    let cache = Path::new(CACHE);
    fs::create_dir_all(cache.join("mm-archives")).expect("cannot create the cache");

    // 1. mmdebstrap, plain minbase; its output becomes the base w4b installs onto.
    let base = cache.join("base");
    let keep_base = !cache.join("base.done").exists();
    let minbase_out = if keep_base {
        let _ = fs::remove_dir_all(&base);
        base.clone()
    } else {
        cache.join("mm-minbase")
    };
    let minbase = match mmdebstrap(&mirror, &[], &minbase_out) {
        Ok(m) => m,
        Err(e) => {
            println!("   skipped: mmdebstrap failed (is the mirror reachable?): {e}");
            return;
        }
    };
    if keep_base {
        fs::write(cache.join("base.done"), b"").expect("cannot mark the base");
    } else {
        remove(&minbase_out);
    }
    println!(
        "   mmdebstrap minbase:           total {:>7.1} s, non-essential phase {:>6.1} s",
        secs(minbase.total),
        secs(minbase.phase)
    );

    // 2. mmdebstrap, minbase + the set.
    let include_out = cache.join("mm-include");
    if let Err(e) = clear(&include_out) {
        println!("   skipped: cannot clear {}: {e}", include_out.display());
        return;
    }
    let include = match mmdebstrap(&mirror, &SET, &include_out) {
        Ok(m) => m,
        Err(e) => {
            println!("   skipped: mmdebstrap --include failed: {e}");
            return;
        }
    };
    let mm_added: BTreeSet<String> = installed(&include_out)
        .difference(&installed(&base))
        .cloned()
        .collect();
    remove(&include_out);
    println!(
        "   mmdebstrap minbase + set:     total {:>7.1} s, non-essential phase {:>6.1} s ({} packages added)",
        secs(include.total),
        secs(include.phase),
        mm_added.len()
    );
    let mm_share = include.phase.saturating_sub(minbase.phase);

    // 3. The set's .debs, resolved by apt against the base's status.
    let debs = match download(&mirror, &base) {
        Ok(d) => d,
        Err(e) => {
            println!("   skipped: downloading the set failed: {e}");
            return;
        }
    };
    let locked: Vec<LockedDeb> = debs.iter().map(|p| locked(p)).collect();
    let ours: BTreeSet<String> = locked.iter().map(|d| d.name.clone()).collect();
    if ours != mm_added {
        println!(
            "   note: the sets differ; only mmdebstrap: {:?}; only w4b: {:?}",
            mm_added.difference(&ours).collect::<Vec<_>>(),
            ours.difference(&mm_added).collect::<Vec<_>>()
        );
    }
    assert!(locked.len() >= 100, "the set has only {} packages", locked.len());

    // 4. w4b: one install step through the graph, cold, then cached.
    let store_dir = tempfile::tempdir_in(cache).expect("cannot create the store directory");
    let store = Arc::new(AppStore::open(store_dir.path(), None, false).expect("cannot open the store"));
    let tree = capture(store.as_ref(), &base).expect("cannot capture the base");
    let mut graph = Graph::new();
    let base_node = given(&mut graph, "base", "tree", tree);
    let mut deps = vec![base_node];
    for (d, path) in locked.iter().zip(&debs) {
        let bytes = fs::read(path).expect("cannot read a .deb");
        let digest = store.as_ref().put(&bytes).expect("cannot store a .deb");
        deps.push(given(&mut graph, &format!("deb:{}", d.name), "file", digest));
    }
    let step = InstallStep {
        store: store.clone(),
        entry: "//bench:set for arm64".into(),
        arch: Arch::Arm64,
        debs: locked.clone(),
        epoch: Epoch::fixed(EPOCH),
    };
    let dep_nodes: Vec<_> = deps.iter().map(|d| graph.node(*d)).collect();
    let id = identity("install", b"bench", &dep_nodes);
    let install = graph.add("install", id, Arc::new(step), deps);

    let build = |what: &str| {
        let cancel = AtomicBool::new(false);
        let engine = Engine {
            graph: &graph,
            cache: store.as_ref(),
            observer: &Silent,
            cancel: &cancel,
            options: BuildOptions {
                jobs: 2,
                force: false,
                keep_going: false,
                force_nodes: Default::default(),
                producer: Producer {
                    tool: "w4b bench".into(),
                    host: None,
                },
            },
        };
        let started = Instant::now();
        let report = engine.build(&[install]).expect("cannot plan");
        let took = started.elapsed();
        if let Some(f) = report.failures.first() {
            panic!(
                "{what}: `{}` failed: {}",
                f.step,
                w4b_graph::exec::render_error(&f.error)
            );
        }
        let status = report.results.get(&install).map(|r| r.status);
        (took, status)
    };
    let (cold, cold_status) = build("cold build");
    assert_eq!(cold_status, Some(StepStatus::Ran), "a fresh store cannot hit");
    let (warm, warm_status) = build("rebuild");
    assert_eq!(
        warm_status,
        Some(StepStatus::Cached),
        "a rebuild with the same inputs must not install again"
    );
    drop(store);
    remove(store_dir.path());

    let ratio = secs(cold) / secs(mm_share).max(f64::MIN_POSITIVE);
    println!();
    println!("   {:<44} {:>9}", "", "seconds");
    println!(
        "   {:<44} {:>9.1}",
        "mmdebstrap's share (include - minbase)",
        secs(mm_share)
    );
    println!(
        "   {:<44} {:>9.1}",
        format!("w4b install step, {} packages, cold", locked.len()),
        secs(cold)
    );
    println!(
        "   {:<44} {:>9.3}",
        "w4b rebuild, install step cached",
        secs(warm)
    );
    println!(
        "   ratio w4b / mmdebstrap: {ratio:.2} (target <= {TARGET}) {}",
        if ratio <= TARGET { "ok" } else { "MISS" }
    );
    println!("   load after: {}", loadavg());
}

/// The two timestamps and the total of one mmdebstrap run.
struct Mm {
    total: Duration,
    /// From the end of the essential phase to the customize hook.
    phase: Duration,
}

fn mmdebstrap(mirror: &str, include: &[&str], out: &Path) -> Result<Mm, String> {
    let stamps = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ess = stamps.path().join("essential");
    let cust = stamps.path().join("customize");
    let archives = Path::new(CACHE).join("mm-archives");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--quiet", "--mode=root", "--variant=minbase", "--arch=arm64"])
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives",
            archives.display()
        ))
        .arg(format!("--essential-hook=date +%s.%N > {}", ess.display()))
        .arg(format!("--customize-hook=date +%s.%N > {}", cust.display()))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            archives.display()
        ));
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    cmd.arg(SUITE).arg(out).arg(mirror);
    let started = Instant::now();
    run(&mut cmd)?;
    let total = started.elapsed();
    let stamp = |p: &Path| -> Result<f64, String> {
        fs::read_to_string(p)
            .map_err(|e| format!("no timestamp from a hook: {e}"))?
            .trim()
            .parse::<f64>()
            .map_err(|e| e.to_string())
    };
    let phase = (stamp(&cust)? - stamp(&ess)?).max(0.0);
    Ok(Mm {
        total,
        phase: Duration::from_secs_f64(phase),
    })
}

/// The packages dpkg has installed in the root `root`.
fn installed(root: &Path) -> BTreeSet<String> {
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
        .output()
        .expect("cannot run dpkg-query");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with("ii "))
        .filter_map(|l| l.split(' ').next().map(str::to_owned))
        .collect()
}

/// The set's `.deb`s, downloaded once into the cache with a private apt.
fn download(mirror: &str, base: &Path) -> Result<Vec<PathBuf>, String> {
    let cache = Path::new(CACHE);
    let debs = cache.join("debs");
    // The marker names the set, so a changed SET downloads again.
    let done = cache.join(format!("debs.done.{}", SET.join(",")));
    if !done.exists() {
        let apt = cache.join("apt");
        let _ = fs::remove_dir_all(&apt);
        let _ = fs::remove_dir_all(&debs);
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d",
            "etc/apt/sources.list.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt",
        ] {
            fs::create_dir_all(apt.join(d)).map_err(|e| e.to_string())?;
        }
        fs::create_dir_all(debs.join("partial")).map_err(|e| e.to_string())?;
        fs::write(
            apt.join("etc/apt/sources.list"),
            format!("deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {SUITE} main\n"),
        )
        .map_err(|e| e.to_string())?;
        fs::copy(base.join("var/lib/dpkg/status"), apt.join("status")).map_err(|e| e.to_string())?;
        // `APT_CONFIG` is read first, so `Dir` moves the configuration parts too: none of
        // the host's apt configuration applies. No recommends, as mmdebstrap.
        let conf = apt.join("apt.conf");
        fs::write(
            &conf,
            format!(
                "Dir \"{apt}/\";\nDir::State::status \"{apt}/status\";\n\
                 Dir::Cache::archives \"{debs}/\";\nAPT::Architecture \"arm64\";\n\
                 APT::Architectures {{ \"arm64\"; }};\nAPT::Install-Recommends \"false\";\n\
                 Acquire::Languages \"none\";\n",
                apt = apt.display(),
                debs = debs.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let apt_get = |args: &[&str]| {
            let mut c = Command::new("apt-get");
            c.env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("APT_CONFIG", &conf)
                .args(args);
            run(&mut c)
        };
        apt_get(&["-qq", "update"])?;
        let mut args = vec!["-qq", "-y", "--download-only", "install"];
        args.extend(SET);
        apt_get(&args)?;
        let _ = fs::remove_dir_all(&apt);
        let _ = fs::remove_dir_all(debs.join("partial"));
        fs::write(&done, b"").map_err(|e| e.to_string())?;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    files.sort();
    Ok(files)
}

/// A lock entry for a `.deb` apt downloaded: `name_version_arch.deb`, `:` as `%3a`.
fn locked(path: &Path) -> LockedDeb {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("a .deb name")
        .replace("%3a", ":");
    let parts: Vec<&str> = stem.split('_').collect();
    let [name, version, architecture] = parts[..] else {
        panic!("unexpected .deb name `{stem}`")
    };
    let bytes = fs::read(path).expect("cannot read a .deb");
    LockedDeb {
        name: name.into(),
        version: version.into(),
        architecture: architecture.into(),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        location: None,
    }
}

/// A step whose output is a blob already in the store (the base tree, a `.deb`): what
/// the fetch and unpack steps give the install step in a real build.
struct Given {
    output: &'static str,
    digest: w4b_cache::Digest,
}

impl Step for Given {
    fn kind(&self) -> &'static str {
        "given"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![Component::param(self.output, self.digest.to_hex())])
    }
    fn run(&self, _: &RunContext<'_>) -> Result<Outputs, StepError> {
        let mut out = Outputs::new();
        out.insert(
            self.output.into(),
            OutputRef {
                digest: self.digest,
                size: 0,
            },
        );
        Ok(out)
    }
}

fn given(
    graph: &mut Graph,
    name: &str,
    output: &'static str,
    digest: w4b_cache::Digest,
) -> w4b_graph::NodeId {
    let id = identity("given", digest.to_hex().as_bytes(), &[]);
    graph.add(name, id, Arc::new(Given { output, digest }), Vec::new())
}

fn preconditions() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("installing packages needs root".into());
    }
    for tool in ["mmdebstrap", "apt-get", "dpkg-query", "dpkg-deb", "chroot"] {
        if w4b::install::run::find_tool(tool).is_none() {
            return Err(format!("`{tool}` is not installed"));
        }
    }
    preflight::check_host(w4b::install::Arch::Arm64)
        .map(drop)
        .map_err(|e| format!("the host cannot run arm64 programs: {e}"))
}

/// The host's Debian mirror: the first `deb` source for [`SUITE`] in the host's apt
/// configuration (`w4b::apt::sources::read_host`, both formats), never a hard-coded host.
fn mirror() -> Option<String> {
    w4b::apt::sources::read_host(std::path::Path::new("/"))
        .ok()?
        .into_iter()
        .find(|s| s.suites.iter().any(|x| x == SUITE))
        .map(|s| s.uri)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Removes a root tree mmdebstrap or the store left, with the engine's parallel remover
/// (a root tree on a `discard` filesystem takes minutes one file at a time).
/// Removes `dir` after unmounting whatever an interrupted mmdebstrap run left mounted below
/// it (innermost first); an error when it cannot be removed.
fn clear(dir: &Path) -> Result<(), String> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let prefix = format!("{}/", dir.display());
    let mut below: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in below {
        let st = Command::new("umount")
            .arg("--lazy")
            .arg(m)
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("umount {m} failed"));
        }
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    }
}

fn remove(dir: &Path) {
    w4b::install::scratch::remove_contents(dir);
    let _ = fs::remove_dir(dir);
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
