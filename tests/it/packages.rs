//! Package sets end to end, through the CLI: a signed repository of real `.deb`s served on
//! 127.0.0.1 (dpkg-deb, apt-ftparchive, a throw-away GnuPG key), a Raspberry-Pi-shaped base
//! whose root filesystem is a real Debian arm64 root (mmdebstrap), `w4b lock` resolving the
//! set against the signed index and the base's own dpkg database, and `w4b build`
//! installing the locked packages at build time with their maintainer scripts running
//! under qemu-user — judged by dpkg itself (`--audit`, the status database) on the image's
//! root filesystem as `debugfs` reads it back. As an ordinary user (a throwaway one with
//! subordinate ids) the same lock and build install through a user namespace, and must
//! write the image root writes, byte for byte, with the owners the packages give.

#![allow(clippy::disallowed_methods)] // Runs make-test-base.sh, zstd, sfdisk, debugfs, dpkg.

use std::path::Path;
use std::process::Command;

use crate::aptrepo::{AptRepo, Deb};
use crate::env::TestEnv;
use crate::testbase::sh;
use crate::throwaway_user::ThrowawayUser;

const HELLO_POSTINST: &str = "#!/bin/sh\nset -e\nmkdir -p /var/lib/w4b-hello\n\
    dpkg --print-architecture > /var/lib/w4b-hello/arch\n";

pub(crate) fn repository() -> Option<AptRepo> {
    AptRepo::builder()
        .package(
            Deb::new("w4b-hello", "1.0-1", "arm64")
                .depends("w4b-lib (>= 1.0) | w4b-missing, libc6 (>= 2.17)")
                .postinst(HELLO_POSTINST)
                .file("/usr/share/w4b-hello/README", b"hello from a package\n"),
        )
        .package(Deb::new("w4b-lib", "1.0-1", "all").file("/usr/lib/w4b/lib.txt", b"1.0\n"))
        .package(
            Deb::new("w4b-lib", "1.1-1", "all")
                .provides("w4b-virtual")
                .file("/usr/lib/w4b/lib.txt", b"1.1\n"),
        )
        .package(
            Deb::new("w4b-tool", "2.0-1", "arm64")
                .pre_depends("w4b-lib")
                .depends("w4b-virtual")
                .conffile("/etc/w4b-tool.conf", b"level = 1\n"),
        )
        .package(Deb::new("w4b-unwanted", "1.0-1", "arm64").file("/usr/share/w4b-unwanted", b"no\n"))
        .build()
}

/// The base: the test base's partitions around a real Debian arm64 root.
pub(crate) fn debian_base(root_dir: &Path, dir: &Path) -> Vec<u8> {
    let raw = dir.join("debian-base.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make-test-base.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&raw)
        .arg("768")
        .env("ROOT_DIR", root_dir)
        .status()
        .unwrap();
    assert!(st.success(), "make-test-base.sh failed");
    let zst = dir.join("debian-base.img.zst");
    sh(&format!(
        "zstd -q -1 -T0 -f -o '{}' '{}'",
        zst.display(),
        raw.display()
    ));
    std::fs::remove_file(&raw).unwrap();
    std::fs::read(&zst).unwrap()
}

/// The Debian arm64 base as a `.img.zst` and its sha256.
pub(crate) struct DebianBase {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// The Debian base, built once per test process (about 20 s) and shared by the tests that
/// lock or install package sets; `None` when installs cannot run here (no root, no
/// qemu-user, no Debian mirror: the oracle policy has spoken).
pub(crate) fn shared_debian_base() -> Option<&'static DebianBase> {
    static BASE: std::sync::OnceLock<Option<DebianBase>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        if !crate::install::preconditions()
            || !crate::oracle::have_all(&["zstd", "sfdisk", "debugfs", "dpkg"])
        {
            return None;
        }
        let (root_dir, _) = match crate::install::fixture() {
            Ok(f) => f,
            Err(e) => {
                crate::oracle::skipped(&format!("the Debian mirror is unreachable or failed: {e}"));
                return None;
            }
        };
        let tmp = tempfile::tempdir().unwrap();
        let bytes = debian_base(&root_dir, tmp.path());
        let sha256 = {
            use sha2::{Digest as _, Sha256};
            hex::encode(Sha256::digest(&bytes))
        };
        Some(DebianBase { bytes, sha256 })
    })
    .as_ref()
}

/// A workspace with the repository's boards, `//bases:debian` (the shared base, served by
/// `server` and pinned by its sha256) and `//images:edge` installing `//packages:hive`,
/// whose file the caller writes.
pub(crate) fn workspace(base: &DebianBase, server: &crate::http::TestServer) -> TestEnv {
    server.serve("/debian-base.img.zst", base.bytes.clone());
    let env = TestEnv::new();
    let defs = Path::new(env!("CARGO_MANIFEST_DIR")).join("defs/boards");
    crate::env::copy_dir(&defs, &env.ws.join("defs/boards"));
    env.write(
        "defs/bases/debian.yaml",
        &format!(
            "kind: base\nurl: {}\nsha256: {}\narch: arm64\nrelease: bookworm\ndate: 2023-11-14\n",
            server.url("/debian-base.img.zst"),
            base.sha256
        ),
    );
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nbase: //bases:debian\nboard: //boards:pi4\npackages: [//packages:hive]\noutput: {level: 3}\n",
    );
    env
}

/// The root partition of a built `.img.zst`, as a file of its own.
pub(crate) fn root_partition(image: &Path, dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("built.img");
    sh(&format!(
        "zstd -q -d -f -o '{}' '{}'",
        raw.display(),
        image.display()
    ));
    let table: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json '{}'", raw.display()))).unwrap();
    let p = &table["partitiontable"]["partitions"][1];
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    let rootfs = dir.join("rootfs.img");
    sh(&format!(
        "dd if='{}' of='{}' bs=512 skip={start} count={size} conv=sparse status=none",
        raw.display(),
        rootfs.display()
    ));
    std::fs::remove_file(&raw).unwrap();
    rootfs
}

pub(crate) fn debugfs_cat(fs: &Path, path: &str) -> String {
    sh(&format!("debugfs -R 'cat {path}' '{}' 2>/dev/null", fs.display()))
}

/// The mode (octal, as `debugfs` prints it), uid and gid of `path` in an ext4 image, from
/// `debugfs -R stat`: `Mode:  04755`, `User:     0   Group:     0`.
fn debugfs_stat(fs: &Path, path: &str) -> (String, u32, u32) {
    let stat = sh(&format!(
        "debugfs -R 'stat {path}' '{}' 2>/dev/null",
        fs.display()
    ));
    let after = |label: &str| {
        stat.split_whitespace()
            .skip_while(|w| *w != label)
            .nth(1)
            .unwrap_or_else(|| panic!("no {label} in the stat of {path}:\n{stat}"))
            .to_owned()
    };
    let id = |label: &str| {
        after(label)
            .parse()
            .unwrap_or_else(|e| panic!("{label} of {path}: {e}\n{stat}"))
    };
    (after("Mode:"), id("User:"), id("Group:"))
}

#[test]
fn package_sets_are_locked_then_installed_at_build_time_with_their_scripts() {
    let Some(base) = shared_debian_base() else { return };
    let Some(repo) = repository() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let env = workspace(base, repo.server());
    std::fs::create_dir_all(env.ws.join("keys")).unwrap();
    std::fs::write(env.ws.join("keys/w4b-test.asc"), &repo.key).unwrap();
    let set = format!(
        "kind: packages\nrepositories:\n  - {{url: \"{}\", suite: w4b-test, key: ../../keys/w4b-test.asc, fingerprint: \"{}\"}}\npackages: [w4b-hello, w4b-tool]\nexclude: [w4b-unwanted]\n",
        repo.url(),
        repo.fingerprint
    );
    env.write("defs/packages/hive.yaml", &set);

    // A build never resolves: without a lock it says what to run.
    let b = env.build(&["//images:edge"]);
    assert!(!b.ok());
    let err = b.stderr();
    assert!(
        err.contains("w4b::lock::missing") && err.contains("w4b lock"),
        "{err}"
    );
    let out = env.run(&["lock", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `w4b lock`: the closure, newest versions, what the base already has recorded.
    let out = env.run(&["lock"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(env.read("w4b.lock")).unwrap();
    let lock: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &lock["entries"]["//packages:hive for arm64 on //bases:debian"];
    let names: Vec<String> = entry["packages"]
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
        .collect();
    assert_eq!(
        names,
        ["w4b-hello=1.0-1", "w4b-lib=1.1-1", "w4b-tool=2.0-1"],
        "{text}"
    );
    assert_eq!(entry["repositories"][0]["signed_by"], repo.fingerprint.as_str());
    let base_packages: Vec<&str> = entry["base_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(base_packages.iter().any(|p| p.starts_with("libc6=")), "{text}");
    // One package a line: a version bump is a one-line diff.
    assert_eq!(text.lines().filter(|l| l.contains("\"sha256\"")).count(), 3);
    let out = env.run(&["lock", "--check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = env.run(&["lock"]);
    assert!(again.status.success());
    assert_eq!(
        env.read("w4b.lock"),
        text.as_bytes(),
        "locking again changes nothing"
    );

    // The build installs the locked packages into the base's tree.
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(
        b.ran().contains(&"//images:edge#packages".to_owned()),
        "{:?}",
        b.ran()
    );
    let rootfs = root_partition(&env.path("out/edge.img.zst"), tmp.path());
    assert_eq!(
        debugfs_cat(&rootfs, "/var/lib/w4b-hello/arch"),
        "arm64\n",
        "postinst ran for arm64"
    );
    assert_eq!(debugfs_cat(&rootfs, "/usr/lib/w4b/lib.txt"), "1.1\n");
    assert_eq!(debugfs_cat(&rootfs, "/etc/w4b-tool.conf"), "level = 1\n");
    assert_eq!(debugfs_cat(&rootfs, "/usr/share/w4b-unwanted"), "");
    // dpkg's own verdict on the image's database.
    let admin = tmp.path().join("dpkg");
    sh(&format!(
        "debugfs -R 'rdump /var/lib/dpkg {}' '{}' 2>/dev/null",
        tmp.path().display(),
        rootfs.display()
    ));
    let status = std::fs::read_to_string(admin.join("status")).unwrap();
    for name in ["w4b-hello", "w4b-lib", "w4b-tool"] {
        let para = status
            .split("\n\n")
            .find(|p| p.starts_with(&format!("Package: {name}\n")))
            .unwrap_or_else(|| panic!("{name} is not in the image's dpkg status"));
        assert!(para.contains("Status: install ok installed"), "{para}");
    }
    let audit = Command::new("dpkg")
        .arg(format!("--admindir={}", admin.display()))
        .arg("--audit")
        .output()
        .unwrap();
    assert!(
        audit.status.success() && audit.stdout.is_empty(),
        "dpkg --audit: {}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    // No apt lists, logs or host keys of the install reach the image.
    assert_eq!(debugfs_cat(&rootfs, "/var/log/dpkg.log"), "");

    // Unchanged: nothing runs, the install is not repeated.
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(b.ran().is_empty(), "{:?}", b.ran());

    // A changed set makes the lock stale: the build says so before fetching anything.
    env.write(
        "defs/packages/hive.yaml",
        &set.replace("w4b-tool]", "w4b-tool, w4b-lib]"),
    );
    let b = env.build(&["//images:edge"]);
    assert!(!b.ok());
    assert!(b.stderr().contains("w4b::lock::stale"), "{}", b.stderr());
    // Locking again keeps the versions that still fit: the closure is the same, so the
    // install is a cache hit.
    let out = env.run(&["lock"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(
        !b.ran().contains(&"//images:edge#packages".to_owned()),
        "{:?}",
        b.ran()
    );
}

/// A package that moves in the repository: `w4b lock --update` pins the new version, the
/// rebuild downloads that one `.deb` and installs again, and `w4b why` names the package,
/// its old and new versions and its line in `w4b.lock`.
#[test]
fn a_package_bump_refetches_one_deb_and_why_names_it_at_its_lock_line() {
    let Some(base) = shared_debian_base() else { return };
    let Some(mut repo) = AptRepo::builder()
        .package(
            Deb::new("w4b-hello", "1.0-1", "arm64")
                .depends("w4b-lib")
                .file("/usr/share/w4b-hello/README", b"hello\n"),
        )
        .package(Deb::new("w4b-lib", "1.0-1", "all").file("/usr/lib/w4b/lib.txt", b"1.0\n"))
        .build()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let env = workspace(base, repo.server());
    std::fs::create_dir_all(env.ws.join("keys")).unwrap();
    std::fs::write(env.ws.join("keys/w4b-test.asc"), &repo.key).unwrap();
    env.write(
        "defs/packages/hive.yaml",
        &format!(
            "kind: packages\nrepositories:\n  - {{url: \"{}\", suite: w4b-test, key: ../../keys/w4b-test.asc, fingerprint: \"{}\"}}\npackages: [w4b-hello]\n",
            repo.url(),
            repo.fingerprint
        ),
    );
    let out = env.run(&["lock"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());

    // The archive publishes w4b-lib 1.1-1 in place of 1.0-1.
    repo.replace(Deb::new("w4b-lib", "1.1-1", "all").file("/usr/lib/w4b/lib.txt", b"1.1\n"));
    let out = env.run(&["lock", "--update"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("w4b-lib: 1.0-1 → 1.1-1"), "{said}");
    let lock = String::from_utf8(env.read("w4b.lock")).unwrap();
    let line = lock
        .lines()
        .position(|l| l.contains("{\"name\":\"w4b-lib\","))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("w4b-lib is not in\n{lock}"));
    let at = format!("w4b.lock:{line}:9");

    // The rebuild downloads exactly the new `.deb`, and installs again.
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    let ran = b.ran();
    let fetched: Vec<&String> = ran.iter().filter(|s| s.starts_with("//packages#")).collect();
    assert_eq!(fetched, ["//packages#w4b-lib_1.1-1_all.deb"], "{ran:?}");
    assert!(ran.contains(&"//images:edge#packages".to_owned()), "{ran:?}");
    let rootfs = root_partition(&env.path("out/edge.img.zst"), tmp.path());
    assert_eq!(debugfs_cat(&rootfs, "/usr/lib/w4b/lib.txt"), "1.1\n");

    // `why` names the package, not the digests behind it.
    let out = env.run(&["why", "//images:edge"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let cause =
        format!("root cause  //images:edge#packages (install)\n  w4b-lib: 1.0-1 → 1.1-1\n    at {at}\n");
    assert!(text.contains(&cause), "{cause:?} missing from\n{text}");
    assert!(!text.contains("deb:w4b-lib"), "{text}");
    assert!(
        text.contains("new //packages#w4b-lib_1.1-1_all.deb (fetch)"),
        "{text}"
    );
    assert!(
        text.contains("removed //packages#w4b-lib_1.0-1_all.deb (fetch)"),
        "{text}"
    );
    let why = env.why("//images:edge");
    let install = why["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "//images:edge#packages")
        .unwrap_or_else(|| panic!("{why:#}"));
    assert_eq!(install["status"], "root", "{install:#}");
    let packages = install["packages"]
        .as_array()
        .unwrap_or_else(|| panic!("{install:#}"));
    assert_eq!(packages.len(), 1, "{install:#}");
    let p = &packages[0];
    assert_eq!(
        (
            &p["name"],
            &p["change"],
            &p["old"]["version"],
            &p["new"]["version"],
            &p["at"]
        ),
        (
            &serde_json::json!("w4b-lib"),
            &serde_json::json!("changed"),
            &serde_json::json!("1.0-1"),
            &serde_json::json!("1.1-1"),
            &serde_json::json!(at),
        ),
        "{install:#}"
    );
    assert_eq!(p["new"]["architecture"], "all");
    let sha = lock
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split("\"sha256\":\"").nth(1))
        .and_then(|r| r.get(..64))
        .unwrap();
    assert_eq!(p["new"]["sha256"], sha, "{install:#}");
}

/// Gives files to users other than root, as packages' scripts do: a system user made by
/// `useradd` owns a setgid directory, and a file belongs to `_apt:nogroup` (42:65534, near
/// the top of the ids a user namespace maps).
const OWNED_POSTINST: &str = "#!/bin/sh\nset -e\n\
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin w4b-owned\n\
    install -d -o w4b-owned -g w4b-owned -m 2750 /var/lib/w4b-owned\n\
    echo spool > /var/lib/w4b-owned/spool\n\
    chown w4b-owned:w4b-owned /var/lib/w4b-owned/spool\n\
    echo apt > /var/lib/w4b-owned/apt\n\
    chown _apt:nogroup /var/lib/w4b-owned/apt\n";

/// `w4b lock` and `w4b build` as an ordinary user with subordinate ids, from definitions
/// to the `.img.zst`: the install runs in a user namespace, yet the image's files belong to
/// root, or to the users the maintainer scripts gave them, and dpkg lists the packages.
/// Root building the same definitions in a fresh cache writes the same bytes.
#[test]
fn an_unprivileged_build_writes_the_image_a_root_build_writes() {
    if !crate::install::unprivileged_preconditions() {
        return;
    }
    let Some(base) = shared_debian_base() else { return };
    let Some(repo) = AptRepo::builder()
        .package(
            Deb::new("w4b-owned", "1.0-1", "arm64")
                .depends("w4b-lib, passwd")
                .postinst(OWNED_POSTINST)
                .executable("/usr/bin/w4b-owned", b"#!/bin/sh\necho owned\n"),
        )
        .package(Deb::new("w4b-lib", "1.0-1", "all").file("/usr/lib/w4b/lib.txt", b"1.0\n"))
        .build()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let user = ThrowawayUser::create("w4b-it-build", "600000-665535").unwrap();
    user.copy_w4b();
    user.chown_home();
    let env = workspace(base, repo.server());
    std::fs::create_dir_all(env.ws.join("keys")).unwrap();
    std::fs::write(env.ws.join("keys/w4b-test.asc"), &repo.key).unwrap();
    env.write(
        "defs/packages/hive.yaml",
        &format!(
            "kind: packages\nrepositories:\n  - {{url: \"{}\", suite: w4b-test, key: ../../keys/w4b-test.asc, fingerprint: \"{}\"}}\npackages: [w4b-owned]\n",
            repo.url(),
            repo.fingerprint
        ),
    );
    // The user owns the workspace and the cache (`env.cache` is beneath `env.root`); the
    // test's own temporary directories are root's, mode 0700 under CI's umask.
    user.chown(env.root.path());
    let as_user = |args: &[&str]| {
        let vars = [
            ("W4B_CACHE_DIR", env.cache.as_os_str()),
            ("TZ", "UTC".as_ref()),
            ("LC_ALL", "C".as_ref()),
            ("NO_COLOR", "1".as_ref()),
        ];
        user.w4b_in(&env.ws, &vars, args).output().unwrap()
    };

    let out = as_user(&["lock"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = std::time::Instant::now();
    let out = as_user(&["build", "--message-format", "json", "//images:edge"]);
    eprintln!("unprivileged build: {:?}", started.elapsed());
    let b = crate::env::Build {
        events: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        output: out,
    };
    assert!(b.ok(), "{}", b.stderr());
    assert!(
        b.ran().contains(&"//images:edge#packages".to_owned()),
        "{:?}",
        b.ran()
    );
    assert_eq!(user.processes(), "", "the build left processes");
    let scratch: Vec<_> = std::fs::read_dir(env.cache.join("v1/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(scratch.is_empty(), "scratch left behind: {scratch:?}");
    let image = env.path("out/edge.img.zst");
    let owner = std::fs::metadata(&image).unwrap();
    let uid = sh(&format!("id -u {}", user.name));
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&owner).to_string(),
        uid.trim(),
        "the image is the user's"
    );

    // Owners as the image records them: root for what the packages ship, the scripts'
    // users for what they gave away — container ids, not the subordinate ids behind them.
    let rootfs = root_partition(&image, tmp.path());
    assert_eq!(debugfs_cat(&rootfs, "/usr/lib/w4b/lib.txt"), "1.0\n");
    assert_eq!(
        debugfs_stat(&rootfs, "/usr/bin/w4b-owned"),
        ("0755".to_owned(), 0, 0)
    );
    assert_eq!(
        debugfs_stat(&rootfs, "/usr/lib/w4b/lib.txt"),
        ("0644".to_owned(), 0, 0)
    );
    let passwd = debugfs_cat(&rootfs, "/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("w4b-owned:"))
        .unwrap_or_else(|| panic!("postinst's user is not in\n{passwd}"));
    let ids: Vec<u32> = line
        .split(':')
        .skip(2)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    assert!((100..1000).contains(&ids[0]), "a system user: {line}");
    assert_eq!(
        debugfs_stat(&rootfs, "/var/lib/w4b-owned"),
        ("02750".to_owned(), ids[0], ids[1])
    );
    assert_eq!(
        debugfs_stat(&rootfs, "/var/lib/w4b-owned/spool"),
        ("0644".to_owned(), ids[0], ids[1])
    );
    assert_eq!(
        debugfs_stat(&rootfs, "/var/lib/w4b-owned/apt"),
        ("0644".to_owned(), 42, 65534)
    );
    sh(&format!(
        "debugfs -R 'rdump /var/lib/dpkg {}' '{}' 2>/dev/null",
        tmp.path().display(),
        rootfs.display()
    ));
    let status = std::fs::read_to_string(tmp.path().join("dpkg/status")).unwrap();
    for name in ["w4b-owned", "w4b-lib"] {
        let para = status
            .split("\n\n")
            .find(|p| p.starts_with(&format!("Package: {name}\n")))
            .unwrap_or_else(|| panic!("{name} is not in the image's dpkg status"));
        assert!(para.contains("Status: install ok installed"), "{para}");
    }

    // Root, the same definitions and lock, a fresh cache: the same image, byte for byte.
    let root_env = TestEnv::new();
    for rel in ["w4b.yaml", "w4b.lock"] {
        std::fs::copy(env.path(rel), root_env.path(rel)).unwrap();
    }
    crate::env::copy_dir(&env.path("defs"), &root_env.path("defs"));
    crate::env::copy_dir(&env.path("keys"), &root_env.path("keys"));
    let b = root_env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(
        b.ran().contains(&"//images:edge#packages".to_owned()),
        "{:?}",
        b.ran()
    );
    let as_root = std::fs::read(root_env.path("out/edge.img.zst")).unwrap();
    let unprivileged = std::fs::read(&image).unwrap();
    if as_root != unprivileged {
        let digest = |b: &[u8]| {
            use sha2::{Digest as _, Sha256};
            hex::encode(Sha256::digest(b))
        };
        panic!(
            "root's image differs from the user's: {} vs {}",
            digest(&as_root),
            digest(&unprivileged)
        );
    }
}
