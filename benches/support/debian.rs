//! The repository's bootstrapped Debian base (`//bases:debian-bookworm-arm64`) in a bench
//! workspace, with what makes it cheap to run again: a kept lock, a local package pool,
//! and a kept w4b cache holding the bootstrapped base.
//!
//! Debian is reached through the host's apt mirror (its apt sources, both formats, as the
//! tests' `host_mirror` reads them), never a hard-coded host. Kept between runs, under
//! Cargo's `target/tmp/bench-debian/` (about 1 GiB: 840 MiB of base cache, 124 MiB of pool):
//!
//! - `w4b.lock`: `w4b lock` keeps the locked versions that still fit, so reruns bootstrap
//!   the same packages (delete it to lock afresh);
//! - `pool/`: the bootstrap's `.deb`s (~125 MiB), fetched once from the host mirror with
//!   w4b's own download engine and checked against the lock's sha256. Builds read them
//!   through `mirrors:` mapping every repository URL to `file://` in the pool: a warm
//!   package cache, with no network in any timed build (mmdebstrap's side copies the same
//!   files into its apt cache);
//! - `base-cache/`: a w4b cache holding the fetched `.deb`s and the bootstrapped root —
//!   nothing of a disk image (a tar image plans no `layout` or `graft`). It is made by building
//!   [`BASE_ONLY`] (the base with every top-level directory removed, written as a tar of a
//!   few bytes), which costs the whole bootstrap the first time (~13 min on 2 cores) and a
//!   no-op after; `w4b`'s own size limit ([`BASE_CACHE_LIMIT`]) bounds it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use super::build::{Run, W4b};
use super::disk;

/// The base every Debian bench image names.
pub const BASE: &str = "//bases:debian-bookworm-arm64";
/// The package set the base is bootstrapped from (its top-level names are mmdebstrap's
/// `--include`).
pub const SET: &str = "debian-bookworm-raspi";
/// The image whose build fills the base cache: the base's steps, and a tar of nothing.
pub const BASE_ONLY: &str = "bench-base-only";
/// Size limit of the kept base cache (w4b evicts the least recently used beyond it).
pub const BASE_CACHE_LIMIT: &str = "4GiB";

/// A repository of the lock entry: its name, URL and suite.
#[derive(Clone, Debug)]
pub struct Repo {
    pub name: String,
    pub url: String,
    pub suite: String,
}

/// A locked `.deb` of the bootstrap.
#[derive(Clone, Debug)]
pub struct LockedDeb {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
    pub size: u64,
    /// Index into [`Debian::repos`].
    pub repo: usize,
    /// `pool/main/a/adduser/adduser_3.134_all.deb`, relative to the repository URL.
    pub filename: String,
}

impl LockedDeb {
    /// The name apt gives the file in `/var/cache/apt/archives` (`:` of an epoch as `%3a`).
    pub fn apt_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// The prepared workspace's Debian side.
pub struct Debian {
    /// `target/tmp/bench-debian`.
    pub state: PathBuf,
    pub repos: Vec<Repo>,
    pub debs: Vec<LockedDeb>,
    /// The set's own package names, in file order.
    pub include: Vec<String>,
    /// The host's mirror URL for each of [`Debian::repos`].
    pub host_mirrors: Vec<String>,
}

impl Debian {
    pub fn pool(&self) -> PathBuf {
        self.state.join("pool")
    }

    /// The pool directory standing in for repository `i`'s URL.
    pub fn repo_dir(&self, i: usize) -> PathBuf {
        let url = &self.repos[i].url;
        let name: String = url
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.pool().join(name)
    }

    pub fn deb_path(&self, d: &LockedDeb) -> PathBuf {
        self.repo_dir(d.repo).join(&d.filename)
    }

    pub fn deb_bytes(&self) -> u64 {
        self.debs.iter().map(|d| d.size).sum()
    }

    pub fn base_cache(&self) -> PathBuf {
        self.state.join("base-cache")
    }
}

/// The host's apt mirror for a Debian suite: the first `deb` source listing it.
pub fn host_mirror(suite: &str) -> Option<String> {
    w4b::apt::sources::read_host(Path::new("/"))
        .ok()?
        .into_iter()
        .find(|s| s.suites.iter().any(|x| x == suite))
        .map(|s| s.uri.trim_end_matches('/').to_string())
}

fn copy_defs(ws: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("defs");
    let defs = ws.join("defs");
    fs::create_dir_all(&defs).unwrap_or_else(|e| panic!("create {}: {e}", defs.display()));
    for dir in ["bases", "boards", "packages"] {
        disk::run(Command::new("cp").arg("-r").arg(repo.join(dir)).arg(&defs));
    }
}

/// `w4b.yaml` with `mirrors:` mapping each `(url, replacement)`.
fn write_mirrors(ws: &Path, map: &[(String, String)]) {
    let mut yaml = String::from("mirrors:\n");
    for (from, to) in map {
        let _ = writeln!(yaml, "  \"{from}/\": [\"{to}/\"]");
    }
    let path = ws.join("w4b.yaml");
    fs::write(&path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The top-level names of `defs/packages/<SET>.yaml`'s `packages:` list.
fn set_names(ws: &Path) -> Vec<String> {
    let path = ws.join(format!("defs/packages/{SET}.yaml"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("packages:") {
            inside = true;
        } else if inside && !line.starts_with(' ') && !line.is_empty() {
            inside = false;
        } else if inside {
            if let Some(name) = line.trim().strip_prefix("- ") {
                names.push(name.trim().to_string());
            }
        }
    }
    assert!(!names.is_empty(), "no `packages:` list in {}", path.display());
    names
}

/// The bootstrap's lock entry: its repositories and packages.
fn read_lock(ws: &Path) -> (Vec<Repo>, Vec<LockedDeb>) {
    let path = ws.join("w4b.lock");
    let lock: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
            .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let want = format!("//packages:{SET} for arm64 bootstrapping {BASE}");
    let entry = &lock["entries"][&want];
    assert!(entry.is_object(), "no `{want}` in {}", path.display());
    let text = |v: &serde_json::Value, k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("`{k}` missing in {v}"))
            .to_string()
    };
    let repos: Vec<Repo> = entry["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Repo {
            name: text(r, "name"),
            url: text(r, "url").trim_end_matches('/').to_string(),
            suite: text(r, "suite"),
        })
        .collect();
    let debs = entry["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let repo = text(p, "repository");
            LockedDeb {
                name: text(p, "name"),
                version: text(p, "version"),
                arch: text(p, "architecture"),
                sha256: text(p, "sha256"),
                size: p["size"].as_u64().unwrap_or(0),
                repo: repos
                    .iter()
                    .position(|r| r.name == repo)
                    .unwrap_or_else(|| panic!("package of unknown repository `{repo}`")),
                filename: text(p, "filename"),
            }
        })
        .collect();
    (repos, debs)
}

fn sha256_hex(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}

/// Downloads every `.deb` not yet in the pool (or not matching its sha256) from the host
/// mirror, verified by w4b's download engine. Returns how many were fetched.
fn fill_pool(deb: &Debian) -> usize {
    let fetcher = w4b::download::Fetcher::new(&w4b::download::FetchConfig::default())
        .unwrap_or_else(|e| panic!("HTTP client: {e}"));
    let mut fetched = 0;
    for d in &deb.debs {
        let dest = deb.deb_path(d);
        if sha256_hex(&dest).as_deref() == Some(d.sha256.as_str()) {
            continue;
        }
        let dir = dest.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let url = format!("{}/{}", deb.host_mirrors[d.repo], d.filename);
        let sha = w4b::download::parse_sha256(&d.sha256).unwrap_or_else(|e| panic!("{}: {e}", d.name));
        let req = w4b::download::FetchRequest {
            size: Some(d.size),
            ..w4b::download::FetchRequest::new(&url, sha, "w4b.lock")
        };
        let partial = dest.with_extension("part");
        let got = fetcher
            .fetch_to(&req, &partial, &w4b::download::NoProgress)
            .unwrap_or_else(|e| panic!("download {url}: {e}"));
        let tmp = got
            .into_temp_file()
            .unwrap_or_else(|e| panic!("keep {}: {e}", dest.display()));
        tmp.persist(&dest)
            .unwrap_or_else(|e| panic!("keep {}: {}", dest.display(), e.error));
        fetched += 1;
    }
    fetched
}

/// Writes the Debian workspace at `ws` (the repository's bases, boards and package sets,
/// plus [`BASE_ONLY`]), locks it against the host mirror (reusing the kept lock), fills
/// the pool, and leaves `w4b.yaml` mapping every repository to the pool. Panics when the
/// host's apt sources name no mirror for a suite the lock uses.
pub fn prepare(ws: &Path, home: &Path) -> Debian {
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-debian");
    fs::create_dir_all(&state).unwrap_or_else(|e| panic!("create {}: {e}", state.display()));
    copy_defs(ws);
    let write = |rel: &str, body: &str| {
        let p = ws.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    };
    let mut strip = String::from(
        "kind: layer\ndescription: everything removed, so the base-only tar is a few bytes\nfiles:\n",
    );
    for top in [
        "bin", "boot", "dev", "etc", "home", "lib", "media", "mnt", "opt", "proc", "root", "run", "sbin",
        "srv", "sys", "tmp", "usr", "var",
    ] {
        let _ = writeln!(strip, "  - {{path: /{top}, remove: true}}");
    }
    write("defs/layers/bench-strip.yaml", &strip);
    write(
        &format!("defs/images/{BASE_ONLY}.yaml"),
        &format!(
            "kind: image\nbase: {BASE}\nboard: //boards:pi4\nlayers: [//layers:bench-strip]\n\
             output: {{format: tar, compression: none}}\n"
        ),
    );

    // Lock against the host mirror: each repository URL of the definitions mapped to the
    // host's mirror of its suite.
    let kept = state.join("w4b.lock");
    if kept.exists() {
        fs::copy(&kept, ws.join("w4b.lock")).unwrap_or_else(|e| panic!("copy {}: {e}", kept.display()));
    }
    let suites = [
        ("http://deb.debian.org/debian", "bookworm"),
        ("http://deb.debian.org/debian-security", "bookworm-security"),
    ];
    let map: Vec<(String, String)> = suites
        .iter()
        .map(|(url, suite)| {
            let m = host_mirror(suite)
                .unwrap_or_else(|| panic!("the host's apt sources name no `{suite}` mirror"));
            (url.to_string(), m)
        })
        .collect();
    write_mirrors(ws, &map);
    let out = disk::run(
        Command::new(env!("CARGO_BIN_EXE_w4b"))
            .arg("lock")
            .current_dir(ws)
            .env("HOME", home)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null()),
    );
    drop(out);
    fs::copy(ws.join("w4b.lock"), &kept).unwrap_or_else(|e| panic!("keep {}: {e}", kept.display()));

    let (repos, debs) = read_lock(ws);
    let host_mirrors = repos
        .iter()
        .map(|r| host_mirror(&r.suite).unwrap_or_else(|| panic!("no host mirror for `{}`", r.suite)))
        .collect();
    let deb = Debian {
        state,
        include: set_names(ws),
        repos,
        debs,
        host_mirrors,
    };
    let fetched = fill_pool(&deb);
    if fetched > 0 {
        println!(
            "   pool: fetched {fetched} of {} .debs into {}",
            deb.debs.len(),
            deb.pool().display()
        );
    }
    // From here on the builds read the pool.
    let mut pool_map: Vec<(String, String)> = Vec::new();
    for (i, r) in deb.repos.iter().enumerate() {
        if !pool_map.iter().any(|(u, _)| u == &r.url) {
            pool_map.push((r.url.clone(), format!("file://{}", deb.repo_dir(i).display())));
        }
    }
    write_mirrors(ws, &pool_map);
    deb
}

/// Makes sure the kept base cache holds the bootstrapped base: builds [`BASE_ONLY`] into
/// it (the whole bootstrap the first time, a no-op after) under the size limit. Returns
/// the build, for its report.
pub fn ensure_base_cache(deb: &Debian, w4b: &W4b<'_>) -> Run {
    let cache = deb.base_cache();
    let limit = ["--cache-max-size", BASE_CACHE_LIMIT];
    let args: Vec<&std::ffi::OsStr> = limit.iter().map(std::ffi::OsStr::new).collect();
    w4b.build(&cache, BASE_ONLY, &args)
}
