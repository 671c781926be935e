//! Locking a package set: what `w4b lock` does once the bytes are local, for a set whose
//! closure is about 300 packages, against apt resolving the same request over the same
//! index, measured in the same run.
//!
//! The repository is generated: 390 packages in layers (libraries at the bottom,
//! programs and metapackages on top) with the edges real archives have — 2 to 5
//! `Depends` on lower layers with version constraints, alternatives (`a | b`), virtual
//! packages through `Provides`, a few `Pre-Depends` — plus 1,200 unrelated packages so
//! the index is the size of a small real one, and a base `status` of 80 installed
//! packages, some of which the set needs (found in the base, not locked): the lock
//! holds about 300. The index goes
//! out xz-compressed, listed in a `Release` that a throw-away GnuPG key clear-signs into
//! `InRelease` (`Filename` and `SHA256` of the packages are generated: the lock never
//! reads a `.deb`).
//!
//! Timed, in-process, per round: verifying `InRelease` against the key, parsing the
//! release, checking and decompressing the index, parsing it and the base's status, and
//! resolving the ten top-level requests into the closure — `w4b lock`'s work between the
//! downloads and writing `w4b.lock`. Baselines: `apt-get --simulate install` of the same
//! requests with a private apt (its own lists built by `apt-get update` from the same
//! `file:` repository beforehand, the same status), and `xz -dc` of the index alone, the
//! floor of anything that reads it.
//!
//! Target (issue 11): ≤ 2 s. A miss prints `MISS`, never a failure.
//!
//! Run: `cargo bench --bench lock [-- --runs N]`.

#![allow(clippy::disallowed_methods)] // A bench runs gpg, xz and apt-get and reads the clock.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::Digest as _;
use w4b::apt::release::{verify_index, Release};
use w4b::apt::resolve::{self, Candidate, Options, Request};
use w4b::apt::signature::{verify_clearsigned, Keyring};

const SET: usize = 390;
const UNRELATED: usize = 1_200;
const BASE: usize = 80;
const TOPS: usize = 10;
const SUITE: &str = "bench";
const TARGET: Duration = Duration::from_secs(2);

fn main() {
    let runs = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5usize);
    println!("lock: resolving a package set of ~{SET} packages from a signed local repository");
    println!(
        "   index: {} packages ({SET} in the set, {UNRELATED} unrelated), base status {BASE}, {TOPS} requests; {runs} rounds",
        SET + UNRELATED
    );
    println!("   load before: {}", loadavg());
    for tool in ["gpg", "xz", "apt-get"] {
        if !have(tool) {
            println!("   skipped: `{tool}` is not installed");
            return;
        }
    }
    let tmp = tempfile::tempdir().expect("cannot create a temporary directory");
    let repo = Repo::generate(tmp.path());
    println!(
        "   generated: Packages {} bytes ({} xz), status {} bytes",
        repo.packages_len,
        repo.index_xz.len(),
        repo.status.len()
    );

    let apt = PrivateApt::new(tmp.path(), &repo);
    let mut w4b = Vec::new();
    let mut apt_times = Vec::new();
    let mut xz_times = Vec::new();
    let mut closure = 0;
    let mut noted = false;
    for _ in 0..runs {
        let started = Instant::now();
        closure = lock_once(&repo);
        w4b.push(started.elapsed());

        let started = Instant::now();
        let simulated = apt.simulate(&repo.requests);
        apt_times.push(started.elapsed());
        if simulated != closure && !noted {
            // Where alternatives allow, apt and w4b may pick differently.
            println!("   note: apt installs {simulated} packages where w4b locks {closure}");
            noted = true;
        }

        let started = Instant::now();
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&repo.index_path)
            .output()
            .expect("cannot run xz");
        assert!(out.status.success());
        xz_times.push(started.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let (w, a, x) = (median(&mut w4b), median(&mut apt_times), median(&mut xz_times));
    println!();
    println!("   {:<52} {:>9}", "median of the rounds", "ms");
    println!(
        "   {:<52} {:>9.1}",
        format!("w4b: verify, parse, resolve ({closure} packages locked)"),
        ms(w)
    );
    println!(
        "   {:<52} {:>9.1}",
        "apt-get --simulate install (same index and status)",
        ms(a)
    );
    println!("   {:<52} {:>9.1}", "xz -dc of the index (floor)", ms(x));
    println!(
        "   w4b / apt: {:.2}; target <= {} ms: {}",
        ms(w) / ms(a).max(f64::MIN_POSITIVE),
        TARGET.as_millis(),
        if w <= TARGET { "ok" } else { "MISS" }
    );
    println!("   load after: {}", loadavg());
}

/// `w4b lock`'s local work for one entry; returns how many packages the lock holds.
fn lock_once(repo: &Repo) -> usize {
    let keys = Keyring::from_bytes(&repo.key).expect("the key");
    let verified = verify_clearsigned(&repo.in_release, &keys).expect("a good signature");
    let release = Release::parse_for_suite(&verified.payload, SUITE).expect("a release");
    let index = release
        .index("main/binary-arm64/Packages")
        .expect("the index entry");
    let text = verify_index(&repo.index_xz, &index, 1 << 30).expect("the index verifies");
    let universe = Candidate::read_index(&String::from_utf8_lossy(&text), 0).expect("the index parses");
    let base = resolve::read_status(&repo.status).expect("the status parses");
    let requests: Vec<Request> = repo
        .requests
        .iter()
        .map(|r| Request::parse(r).expect("a request"))
        .collect();
    let options = Options::new("arm64");
    let resolution = resolve::resolve(&universe, &base, &requests, &options).expect("it resolves");
    resolution.install.len()
}

/// The generated repository, in memory and on disk.
struct Repo {
    dir: std::path::PathBuf,
    key: Vec<u8>,
    in_release: Vec<u8>,
    index_xz: Vec<u8>,
    index_path: std::path::PathBuf,
    packages_len: usize,
    status: String,
    requests: Vec<String>,
}

/// A small deterministic generator (xorshift), so every run locks the same set.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

impl Repo {
    fn generate(tmp: &Path) -> Repo {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut packages = String::new();
        let mut status = String::new();
        // Package i of the set depends only on packages below it: libraries first.
        for i in 0..SET {
            let name = format!("pkg{i:03}");
            let arch = if i % 7 == 0 { "all" } else { "arm64" };
            let mut depends = Vec::new();
            if i >= 5 {
                for _ in 0..2 + rng.below(4) {
                    let d = rng.below(i);
                    let rel = match rng.below(4) {
                        0 => format!("pkg{d:03} (>= 1.{})", rng.below(d % 3 + 2)),
                        1 if d > 0 => format!("pkg{d:03} | pkg{:03}", rng.below(d)),
                        2 if d % 10 == 3 => format!("virtual{d:03}"),
                        _ => format!("pkg{d:03}"),
                    };
                    depends.push(rel);
                }
            }
            let mut para = format!(
                "Package: {name}\nVersion: 1.{}-1\nArchitecture: {arch}\nPriority: optional\nSection: misc\n\
                 Maintainer: Bench <bench@example.invalid>\nInstalled-Size: {}\n",
                i % 3 + 1,
                100 + i
            );
            if i % 10 == 3 {
                writeln!(para, "Provides: virtual{i:03}").unwrap();
            }
            if i > 20 && i % 17 == 0 {
                writeln!(para, "Pre-Depends: pkg{:03}", rng.below(20)).unwrap();
            }
            if !depends.is_empty() {
                writeln!(para, "Depends: {}", depends.join(", ")).unwrap();
            }
            let sha = hex::encode(sha2::Sha256::digest(name.as_bytes()));
            write!(
                para,
                "Filename: pool/main/p/{name}/{name}_1.{}-1_{arch}.deb\nSize: {}\nSHA256: {sha}\n\
                 Description: generated package {i}\n a package of the lock benchmark.\n\n",
                i % 3 + 1,
                1000 + i
            )
            .unwrap();
            packages.push_str(&para);
            // The lowest libraries are in the base already, as a real root has them.
            if i < BASE {
                write!(
                    status,
                    "Package: {name}\nStatus: install ok installed\nPriority: optional\nVersion: 1.{}-1\n\
                     Architecture: {arch}\nMaintainer: Bench <bench@example.invalid>\n",
                    i % 3 + 1
                )
                .unwrap();
                if i % 10 == 3 {
                    writeln!(status, "Provides: virtual{i:03}").unwrap();
                }
                status.push_str("Description: generated package\n\n");
            }
        }
        // The top layer: requested names whose closure reaches (nearly) the whole set.
        let mut requests: Vec<String> = (SET - TOPS..SET).map(|i| format!("pkg{i:03}")).collect();
        // And every package of the set nothing else in it depends on, so the closure is
        // the whole set less what the base has.
        let depended: BTreeSet<String> = packages
            .lines()
            .filter_map(|l| l.strip_prefix("Depends: "))
            .flat_map(|d| d.split([',', '|']))
            .filter_map(|r| r.split_whitespace().next().map(str::to_owned))
            .collect();
        for i in BASE..SET - TOPS {
            let name = format!("pkg{i:03}");
            if !depended.contains(&name) {
                requests.push(name);
            }
        }

        for u in 0..UNRELATED {
            let sha = hex::encode(sha2::Sha256::digest(format!("other{u}").as_bytes()));
            write!(
                packages,
                "Package: other{u:04}\nVersion: 2.{}-1\nArchitecture: arm64\nPriority: optional\n\
                 Depends: other{:04}, pkg{:03}\nFilename: pool/main/o/other{u:04}_2-1_arm64.deb\n\
                 Size: 2000\nSHA256: {sha}\nDescription: unrelated package\n\n",
                u % 5,
                rng.below(UNRELATED),
                rng.below(SET)
            )
            .unwrap();
        }
        let dir = tmp.join("repo");
        let dists = dir.join(format!("dists/{SUITE}"));
        let bin = dists.join("main/binary-arm64");
        fs::create_dir_all(&bin).unwrap();
        let plain = bin.join("Packages");
        fs::write(&plain, &packages).unwrap();
        let st = Command::new("xz")
            .args(["-k", "-6"])
            .arg(&plain)
            .status()
            .unwrap();
        assert!(st.success(), "xz failed");
        let index_path = bin.join("Packages.xz");
        let index_xz = fs::read(&index_path).unwrap();
        let entry = |bytes: &[u8], path: &str| {
            format!(
                " {} {} {path}\n",
                hex::encode(sha2::Sha256::digest(bytes)),
                bytes.len()
            )
        };
        let release = format!(
            "Origin: Bench\nLabel: Bench\nSuite: {SUITE}\nCodename: {SUITE}\n\
             Date: Mon, 01 Jan 2024 00:00:00 UTC\nArchitectures: arm64\nComponents: main\n\
             Description: lock benchmark\nSHA256:\n{}{}",
            entry(packages.as_bytes(), "main/binary-arm64/Packages"),
            entry(&index_xz, "main/binary-arm64/Packages.xz")
        );
        fs::write(dists.join("Release"), &release).unwrap();

        let gnupg = tmp.join("gnupg");
        fs::create_dir_all(&gnupg).unwrap();
        fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .env("GNUPGHOME", &gnupg)
                .args([
                    "--batch",
                    "--quiet",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                ])
                .args(args)
                .output()
                .expect("cannot run gpg");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let uid = "W4B Bench Repository <bench@example.invalid>";
        gpg(&["--quick-gen-key", uid, "ed25519", "sign", "never"]);
        let in_release_path = dists.join("InRelease");
        gpg(&[
            "--yes",
            "--local-user",
            uid,
            "--digest-algo",
            "SHA512",
            "--clearsign",
            "--output",
            &in_release_path.to_string_lossy(),
            &dists.join("Release").to_string_lossy(),
        ]);
        let key = gpg(&["--export", "--armor", uid]);
        Repo {
            in_release: fs::read(&in_release_path).unwrap(),
            key,
            index_xz,
            index_path,
            packages_len: packages.len(),
            status,
            requests,
            dir,
        }
    }
}

/// apt with its own directories, reading only the generated repository.
struct PrivateApt {
    conf: std::path::PathBuf,
}

impl PrivateApt {
    fn new(tmp: &Path, repo: &Repo) -> PrivateApt {
        let apt = tmp.join("apt");
        for d in [
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
        ] {
            fs::create_dir_all(apt.join(d)).unwrap();
        }
        fs::write(apt.join("status"), &repo.status).unwrap();
        // The signature is w4b's concern in this bench; apt reads the same bytes unsigned
        // (`trusted=yes`) so its time is resolving, not gpgv.
        fs::write(
            apt.join("etc/apt/sources.list"),
            format!(
                "deb [trusted=yes arch=arm64] file:{} {SUITE} main\n",
                repo.dir.display()
            ),
        )
        .unwrap();
        let conf = apt.join("apt.conf");
        fs::write(
            &conf,
            format!(
                "Dir \"{apt}/\";\nDir::State::status \"{apt}/status\";\nAPT::Architecture \"arm64\";\n\
                 APT::Architectures {{ \"arm64\"; }};\nAPT::Install-Recommends \"false\";\n\
                 Acquire::Languages \"none\";\nDebug::NoLocking \"true\";\n",
                apt = apt.display()
            ),
        )
        .unwrap();
        let p = PrivateApt { conf };
        let out = p.apt_get(&["-qq", "update"]);
        assert!(
            out.status.success(),
            "apt-get update: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    fn apt_get(&self, args: &[&str]) -> std::process::Output {
        Command::new("apt-get")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("APT_CONFIG", &self.conf)
            .args(args)
            .output()
            .expect("cannot run apt-get")
    }

    /// How many packages `apt-get --simulate install` would install.
    fn simulate(&self, requests: &[String]) -> usize {
        let mut args = vec!["--simulate", "-qq", "install"];
        args.extend(requests.iter().map(String::as_str));
        let out = self.apt_get(&args);
        assert!(
            out.status.success(),
            "apt-get --simulate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("Inst "))
            .count()
    }
}

fn have(tool: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
