//! Package sets given bad input, through the CLI: each failure is a clear error that names
//! the package, the repository and the definition line, and loses nothing — a failed
//! `w4b lock` leaves `w4b.lock` byte for byte as it was, a failed `w4b build` leaves the
//! last good image in place, caches nothing of the failure, leaves no mount and no scratch
//! directory, and the build works once the input is fixed.
//!
//! The repositories are real (`tests/support/aptrepo.rs`: `dpkg-deb`, `apt-ftparchive`,
//! `gpg`) and so is the base (a Debian arm64 root, built once per test process and shared
//! with `packages.rs`). Most cases are `w4b lock` failures, which install nothing; the
//! build failures share one workspace, so the whole file costs three installs under
//! qemu-user.

#![allow(clippy::disallowed_methods)] // Reads /proc/self/mounts and the cache directory.

use std::path::Path;

use crate::aptrepo::{AptRepo, Deb, Signing};
use crate::env::TestEnv;
use crate::packages::{shared_debian_base, workspace};

/// The package set file, and the name `w4b` gives its repository (the URL path's last part
/// and the suite).
const SET: &str = "defs/packages/hive.yaml";
const REPO_NAME: &str = "debian-w4b-test";

/// How a set's repository is trusted.
enum Trust<'a> {
    /// `key:` (a file below `keys/`) and `fingerprint:`.
    Key(&'a str, &'a str),
    /// Neither a key nor `trusted: true`.
    Unpinned,
    /// `trusted: true`.
    Trusted,
}

/// A set with one repository at `url` and one requested package a line.
fn set(url: &str, trust: &Trust<'_>, packages: &[&str]) -> String {
    let trust = match trust {
        Trust::Key(file, fingerprint) => {
            format!("    key: ../../keys/{file}\n    fingerprint: \"{fingerprint}\"\n")
        }
        Trust::Unpinned => String::new(),
        Trust::Trusted => "    trusted: true\n".to_owned(),
    };
    let mut text =
        format!("kind: packages\nrepositories:\n  - url: \"{url}\"\n    suite: w4b-test\n{trust}packages:\n");
    for p in packages {
        text.push_str(&format!("  - \"{p}\"\n"));
    }
    text
}

/// A set pinned to `repo`'s own key, saved as `keys/<file>`.
fn signed_set(env: &TestEnv, repo: &AptRepo, file: &str, packages: &[&str]) -> String {
    env.write(&format!("keys/{file}"), &String::from_utf8_lossy(&repo.key));
    set(&repo.url(), &Trust::Key(file, &repo.fingerprint), packages)
}

/// `defs/packages/hive.yaml:LINE` of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> String {
    let n = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in\n{text}"));
    format!("{SET}:{}", n + 1)
}

/// Whether `err` says `needle`, whatever the report's line wrapping (miette wraps at 100
/// columns and marks continuation lines with `|`).
fn says(err: &str, needle: &str) -> bool {
    let flat = |s: &str| -> String { s.chars().filter(|c| !c.is_whitespace() && *c != '|').collect() };
    flat(err).contains(&flat(needle))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `w4b ARGS…`, which must fail, and checks that `w4b.lock` is byte for byte what it
/// was (`None`: still absent). Returns standard error.
#[track_caller]
fn fails_keeping_the_lock(env: &TestEnv, args: &[&str], lock: Option<&[u8]>) -> String {
    let out = env.run(args);
    let err = stderr(&out);
    eprintln!("w4b {}:\n{err}", args.join(" "));
    assert!(
        !out.status.success(),
        "`w4b {}` succeeded:\n{err}",
        args.join(" ")
    );
    match lock {
        Some(bytes) => assert_eq!(
            env.read("w4b.lock"),
            bytes,
            "`w4b {}` changed `w4b.lock`",
            args.join(" ")
        ),
        None => assert!(!env.path("w4b.lock").exists(), "`w4b.lock` was written"),
    }
    err
}

#[track_caller]
fn succeeds(env: &TestEnv, args: &[&str]) -> String {
    let out = env.run(args);
    let err = stderr(&out);
    assert!(out.status.success(), "`w4b {}` failed:\n{err}", args.join(" "));
    err
}

/// `name=version` of each package of the lock's only entry.
fn locked(env: &TestEnv) -> Vec<String> {
    let lock: serde_json::Value = serde_json::from_slice(&env.read("w4b.lock")).unwrap();
    let entries = lock["entries"].as_object().unwrap();
    assert_eq!(entries.len(), 1, "{lock}");
    let entry = entries.values().next().unwrap();
    entry["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}={}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// The lock's only entry's repositories.
fn locked_repositories(env: &TestEnv) -> serde_json::Value {
    let lock: serde_json::Value = serde_json::from_slice(&env.read("w4b.lock")).unwrap();
    let entry = lock["entries"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    entry["repositories"].clone()
}

fn hello() -> Deb {
    Deb::new("w4b-hello", "1.0-1", "arm64")
        .depends("w4b-lib (>= 1.0), libc6 (>= 2.17)")
        .file("/usr/share/w4b-hello/README", b"hello from a package\n")
}

fn lib(version: &str) -> Deb {
    Deb::new("w4b-lib", version, "all").file("/usr/lib/w4b/lib.txt", format!("{version}\n").as_bytes())
}

fn tool(version: &str) -> Deb {
    Deb::new("w4b-tool", version, "all")
        .depends("w4b-lib")
        .file("/usr/share/w4b-tool/VERSION", format!("{version}\n").as_bytes())
}

/// The resolver's failures: an unknown name, a dependency nobody provides (two links down),
/// a version nobody has; then a base with another sha256, and `--update` of one package.
#[test]
fn lock_errors_name_the_package_the_repository_and_the_line_and_keep_the_lock() {
    let Some(base) = shared_debian_base() else { return };
    let Some(repo) = AptRepo::builder()
        .package(hello())
        .package(lib("1.0-1"))
        .package(tool("1.0-1"))
        .package(Deb::new("w4b-needs-gone", "1.0-1", "arm64").depends("w4b-gone"))
        .package(Deb::new("w4b-chain", "1.0-1", "all").depends("w4b-needs-gone (>= 1.0)"))
        .package(Deb::new("w4b-extra", "1.0-1", "all"))
        .package(Deb::new("w4b-needs-new", "1.0-1", "all").depends("w4b-extra (>= 2.0)"))
        .build()
    else {
        return;
    };
    let env = workspace(base, repo.server());
    let good = signed_set(&env, &repo, "w4b-test.asc", &["w4b-hello", "w4b-tool"]);
    env.write(SET, &good);
    succeeds(&env, &["lock"]);
    let lock = env.read("w4b.lock");
    assert_eq!(
        locked(&env),
        ["w4b-hello=1.0-1", "w4b-lib=1.0-1", "w4b-tool=1.0-1"]
    );

    // 1. An unknown name: named with its line, the repository searched, a close name.
    let text = good.replace("\"w4b-tool\"", "\"w4b-tol\"");
    env.write(SET, &text);
    let err = fails_keeping_the_lock(&env, &["lock"], Some(&lock));
    assert!(says(&err, "w4b::apt::unknown_package"), "{err}");
    assert!(says(&err, "`w4b-tol`"), "{err}");
    assert!(says(&err, &line_of(&text, "w4b-tol")), "{err}");
    assert!(says(&err, REPO_NAME), "{err}");
    assert!(says(&err, "`w4b-tool`"), "a close name is suggested: {err}");

    // 2. A dependency that no repository has, two links below the request: the chain.
    let text = good.replace("\"w4b-tool\"", "\"w4b-chain\"");
    env.write(SET, &text);
    let err = fails_keeping_the_lock(&env, &["lock"], Some(&lock));
    assert!(says(&err, "w4b::apt::unknown_package"), "{err}");
    assert!(says(&err, "w4b-chain → w4b-needs-gone"), "{err}");
    assert!(says(&err, "`w4b-gone`"), "{err}");
    assert!(says(&err, &line_of(&text, "w4b-chain")), "{err}");
    assert!(says(&err, REPO_NAME), "{err}");

    // 3. A version that is too new for what the repository has.
    let text = good.replace("\"w4b-tool\"", "\"w4b-needs-new\"");
    env.write(SET, &text);
    let err = fails_keeping_the_lock(&env, &["lock"], Some(&lock));
    assert!(says(&err, "w4b::apt::no_candidate"), "{err}");
    assert!(says(&err, "w4b-needs-new → w4b-extra (>= 2.0)"), "{err}");
    assert!(says(&err, "1.0-1"), "the versions on offer: {err}");
    assert!(says(&err, &line_of(&text, "w4b-needs-new")), "{err}");

    // The same, asked for directly in the set.
    let text = good.replace("\"w4b-tool\"", "\"w4b-tool (>= 3)\"");
    env.write(SET, &text);
    let err = fails_keeping_the_lock(&env, &["lock"], Some(&lock));
    assert!(says(&err, "w4b::apt::no_candidate"), "{err}");
    assert!(says(&err, &line_of(&text, "w4b-tool (>= 3)")), "{err}");

    env.write(SET, &good);
    succeeds(&env, &["lock", "--check"]);

    // 4. Another base (another sha256): the lock is stale, for a build and for `--check`.
    let bases = env.read("defs/bases/debian.yaml");
    let other = String::from_utf8(bases.clone())
        .unwrap()
        .replace(&base.sha256, &"0".repeat(64));
    env.write("defs/bases/debian.yaml", &other);
    let b = env.build(&["//images:edge"]);
    assert!(!b.ok());
    let err = b.stderr();
    assert!(says(&err, "w4b::lock::stale"), "{err}");
    assert!(says(&err, "w4b lock"), "{err}");
    assert!(says(&err, "defs/images/edge.yaml:"), "{err}");
    let out = env.run(&["lock", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is stale"), "{}", stderr(&out));
    assert_eq!(env.read("w4b.lock"), lock);
    env.write("defs/bases/debian.yaml", &String::from_utf8(bases).unwrap());

    // 5. The repository gains versions (a new state of the archive at another URL): `--update
    // w4b-lib` moves that package only, although `w4b-tool` has a newer version too.
    let Some(newer) = AptRepo::builder()
        .package(hello())
        .package(lib("1.0-1"))
        .package(lib("1.1-1"))
        .package(tool("1.0-1"))
        .package(tool("1.1-1"))
        .build()
    else {
        return;
    };
    env.write(
        SET,
        &signed_set(&env, &newer, "newer.asc", &["w4b-hello", "w4b-tool"]),
    );
    let err = succeeds(&env, &["lock", "--update", "w4b-lib"]);
    assert!(says(&err, "w4b-lib: 1.0-1 → 1.1-1"), "{err}");
    assert!(!says(&err, "w4b-tool:"), "{err}");
    assert_eq!(
        locked(&env),
        ["w4b-hello=1.0-1", "w4b-lib=1.1-1", "w4b-tool=1.0-1"]
    );
    succeeds(&env, &["lock", "--check"]);
}

/// A repository whose `InRelease` does not verify against the pinned key (signed by
/// another key, not signed at all, signed with SHA-1) is refused; a set without a pinned
/// key is a definition error; an unsigned repository is accepted with `trusted: true`, and
/// the lock says it was not signed.
#[test]
fn a_repository_that_fails_its_signature_check_is_refused_and_the_lock_kept() {
    let Some(base) = shared_debian_base() else { return };
    let packages = || AptRepo::builder().package(hello()).package(lib("1.0-1"));
    let Some(good) = packages().build() else { return };
    let env = workspace(base, good.server());
    env.write(SET, &signed_set(&env, &good, "good.asc", &["w4b-hello"]));
    succeeds(&env, &["lock"]);
    let lock = env.read("w4b.lock");

    for (signing, code, what) in [
        (Signing::OtherKey, "w4b::lock::bad_signature", "signature"),
        (Signing::Unsigned, "w4b::lock::unsigned", "InRelease"),
        (Signing::Sha1, "w4b::lock::bad_signature", "SHA-1"),
    ] {
        let Some(bad) = packages().signing(signing).build() else {
            return;
        };
        let text = signed_set(&env, &bad, "bad.asc", &["w4b-hello"]);
        env.write(SET, &text);
        let err = fails_keeping_the_lock(&env, &["lock"], Some(&lock));
        assert!(says(&err, code), "{signing:?}: {err}");
        assert!(says(&err, what), "{signing:?}: {err}");
        assert!(says(&err, REPO_NAME), "{signing:?}: {err}");
        assert!(says(&err, &bad.url()), "{signing:?}: {err}");
        assert!(says(&err, &line_of(&text, "- url:")), "{signing:?}: {err}");
    }

    // No pinned key: the definition is refused before anything is downloaded, at its line.
    let Some(unsigned) = packages().signing(Signing::Unsigned).build() else {
        return;
    };
    let text = set(&unsigned.url(), &Trust::Unpinned, &["w4b-hello"]);
    env.write(SET, &text);
    let err = fails_keeping_the_lock(&env, &["lock"], Some(&lock));
    assert!(says(&err, "w4b::defs::"), "{err}");
    assert!(says(&err, &format!("{SET}:3")), "{err}");
    assert!(says(&err, "trusted: true"), "{err}");
    assert!(unsigned.server().requests().is_empty(), "nothing is downloaded");

    // `trusted: true`: the unsigned repository is used, and the lock says it is unsigned.
    env.write(SET, &set(&unsigned.url(), &Trust::Trusted, &["w4b-hello"]));
    succeeds(&env, &["lock"]);
    assert_eq!(locked(&env), ["w4b-hello=1.0-1", "w4b-lib=1.0-1"]);
    let repos = locked_repositories(&env);
    assert_eq!(repos[0]["name"], REPO_NAME, "{repos}");
    assert_eq!(repos[0]["signed_by"], serde_json::Value::Null, "{repos}");
    succeeds(&env, &["lock", "--check"]);
}

/// Every file below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.push(path.clone());
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A cache holds nothing of a failed build: it verifies, has no scratch left, no mount
/// below it, and no blob of `bad` bytes.
#[track_caller]
fn assert_clean_cache(env: &TestEnv, cache: &Path, bad: Option<&[u8]>) {
    let verify = env.run(&["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        stderr(&verify)
    );
    assert_eq!(
        files_below(&cache.join("v1/tmp")),
        Vec::<std::path::PathBuf>::new()
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let cache_text = cache.to_string_lossy();
    assert!(
        !mounts.lines().any(|l| l.contains(&*cache_text)),
        "a mount below the cache survived:\n{mounts}"
    );
    if let Some(bad) = bad {
        let digest = blake3::hash(bad).to_hex().to_string();
        let blob = cache.join("v1/blobs").join(&digest[..2]).join(&digest);
        assert!(
            !blob.exists(),
            "the bad bytes were cached at `{}`",
            blob.display()
        );
    }
}

const BROKEN_POSTINST: &str = "#!/bin/sh\necho 'w4b-broken: the hive scale is not calibrated' >&2\nexit 1\n";

/// A `.deb` whose bytes differ from the lock, then a maintainer script that fails: the
/// build fails naming the package, the last image stays, nothing is cached; a fixed
/// package (a new version, `w4b lock --update`) builds.
#[test]
fn a_failed_install_names_the_package_caches_nothing_and_keeps_the_last_image() {
    let Some(base) = shared_debian_base() else { return };
    let broken = || {
        Deb::new("w4b-broken", "1.0-1", "arm64")
            .postinst(BROKEN_POSTINST)
            .file("/usr/share/w4b-broken/README", b"broken\n")
    };
    let Some(repo) = AptRepo::builder()
        .package(hello())
        .package(lib("1.0-1"))
        .package(broken())
        .build()
    else {
        return;
    };
    let mut env = workspace(base, repo.server());
    let hello_set = signed_set(&env, &repo, "w4b-test.asc", &["w4b-hello"]);
    env.write(SET, &hello_set);
    succeeds(&env, &["lock"]);
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    let image = env.read("out/edge.img.zst");

    // 6. Another machine (an empty cache) is served other bytes for `w4b-hello`.
    let cache = env.root.path().join("cache-2");
    env.extra_env
        .insert("W4B_CACHE_DIR".into(), cache.to_string_lossy().into_owned());
    let deb = repo.packages.iter().find(|d| d.name == "w4b-hello").unwrap();
    let pool = format!("/debian/{}", deb.pool_path());
    let good_bytes = repo.file(&deb.pool_path());
    let mut bad_bytes = good_bytes.clone();
    if let Some(last) = bad_bytes.last_mut() {
        *last ^= 0x55;
    }
    repo.server().serve(&pool, bad_bytes.clone());
    let b = env.build(&["//images:edge"]);
    assert!(!b.ok());
    let err = b.stderr();
    assert!(says(&err, "w4b::fetch::digest_mismatch"), "{err}");
    assert!(says(&err, "w4b.lock (w4b-hello=1.0-1)"), "{err}");
    assert_eq!(env.read("out/edge.img.zst"), image, "the last image is intact");
    assert_clean_cache(&env, &cache, Some(&bad_bytes));
    repo.server().serve(&pool, good_bytes);

    // 7. A package whose postinst fails.
    env.write(
        SET,
        &signed_set(&env, &repo, "w4b-test.asc", &["w4b-hello", "w4b-broken"]),
    );
    succeeds(&env, &["lock"]);
    let b = env.build(&["//images:edge"]);
    assert!(!b.ok());
    let err = b.stderr();
    assert!(says(&err, "w4b::install::"), "{err}");
    assert!(says(&err, "w4b-broken"), "{err}");
    assert!(
        says(&err, "the hive scale is not calibrated"),
        "dpkg's output: {err}"
    );
    assert!(says(&err, "//images:edge#packages"), "{err}");
    assert_eq!(env.read("out/edge.img.zst"), image, "the last image is intact");
    assert_clean_cache(&env, &cache, None);

    // Fixed upstream: a new version; `--update w4b-broken` moves it alone, and it builds.
    let Some(fixed) = AptRepo::builder()
        .package(hello())
        .package(lib("1.0-1"))
        .package(lib("1.1-1"))
        .package(broken())
        .package(
            Deb::new("w4b-broken", "1.1-1", "arm64")
                .postinst("echo calibrated > /usr/share/w4b-broken/state")
                .file("/usr/share/w4b-broken/README", b"fixed\n"),
        )
        .build()
    else {
        return;
    };
    env.write(
        SET,
        &signed_set(&env, &fixed, "fixed.asc", &["w4b-hello", "w4b-broken"]),
    );
    let err = succeeds(&env, &["lock", "--update", "w4b-broken"]);
    assert!(says(&err, "w4b-broken: 1.0-1 → 1.1-1"), "{err}");
    assert_eq!(
        locked(&env),
        ["w4b-broken=1.1-1", "w4b-hello=1.0-1", "w4b-lib=1.0-1"]
    );
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_ne!(env.read("out/edge.img.zst"), image);
    assert_clean_cache(&env, &cache, None);
}
