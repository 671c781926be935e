//! The install engine against real Debian arm64 packages: openssh-server and its missing
//! dependencies installed into a minbase bookworm root built by `mmdebstrap`, judged by
//! dpkg itself (`dpkg --audit`, `dpkg-query`), by the ELF header of `sshd`, and by the
//! normalisation rules (no SSH host keys). The same install twice, from other scratch
//! directories with another `TZ` and umask, must give the same changeset; a cancelled
//! install must leave no mount and no scratch files behind.
//!
//! The Debian mirror is the host's own (read from its deb822 sources, never hard-coded);
//! the root and the packages are cached in [`CACHE`] (about 250 MB) so reruns skip the
//! downloads and the bootstrap. Without network the test skips with a message.

#![allow(clippy::disallowed_methods)] // runs mmdebstrap, apt-get and dpkg as oracles

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use w4b::install::{install, Arch, Deb, InstallError, Request};
use w4b::tree::host::{capture, materialize};
use w4b::tree::{Blobs, MemBlobs};

use crate::throwaway_user::ThrowawayUser;

/// The cached minbase root, packages and private apt state.
const CACHE: &str = "/tmp/w4b-test-debian-arm64";
const SUITE: &str = "bookworm";
const EPOCH: i64 = 1_700_000_000;

/// The host's Debian mirror for [`SUITE`].
fn mirror() -> Option<String> {
    crate::testbase::host_mirror(SUITE)
}

/// Runs `cmd`; its output in the error when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
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

/// The minbase root and the `.deb`s openssh-server adds to it, downloaded once.
pub(crate) fn fixture() -> Result<(PathBuf, Vec<PathBuf>), String> {
    // The tests of this file share the cache: one prepares it, the others wait.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mirror = mirror().ok_or("no `deb` source for bookworm in the host's apt configuration")?;
    let cache = Path::new(CACHE);
    let base = cache.join("base");
    if !cache.join("base.done").exists() {
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(cache).map_err(|e| e.to_string())?;
        let started = Instant::now();
        run(Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase", "--arch=arm64", SUITE])
            .arg(&base)
            .arg(&mirror))?;
        eprintln!("mmdebstrap minbase arm64: {:?}", started.elapsed());
        fs::write(cache.join("base.done"), b"").map_err(|e| e.to_string())?;
    }
    let debs = cache.join("debs");
    if !cache.join("debs.done").exists() {
        // A private apt: its own sources, lists and archives, the base's dpkg status,
        // arm64 only. The host's apt configuration is neither read nor changed.
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
        // Read before anything else (`APT_CONFIG`), so `Dir` moves the configuration
        // parts too: none of the host's `/etc/apt/apt.conf.d` applies.
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
        apt_get(&["-qq", "-y", "--download-only", "install", "openssh-server"])?;
        // The indexes are 100 MB and no longer needed.
        let _ = fs::remove_dir_all(&apt);
        let _ = fs::remove_dir_all(debs.join("partial"));
        fs::write(cache.join("debs.done"), b"").map_err(|e| e.to_string())?;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    files.sort();
    Ok((base, files))
}

pub(crate) fn preconditions() -> bool {
    if !crate::kernel::is_root() {
        crate::oracle::unavailable("installing packages needs root");
        return false;
    }
    if !crate::oracle::have_all(&[
        "mmdebstrap",
        "apt-get",
        "dpkg",
        "dpkg-query",
        "dpkg-deb",
        "chroot",
    ]) {
        return false;
    }
    if let Err(e) = w4b::install::preflight::check_host(Arch::Arm64) {
        crate::oracle::unavailable(&format!("the host cannot run arm64 programs: {e}"));
        return false;
    }
    true
}

fn install_once(
    blobs: &dyn Blobs,
    base: w4b_cache::Digest,
    debs: &[Deb],
    scratch: &Path,
) -> w4b::install::Installed {
    let cancel = AtomicBool::new(false);
    let req = Request {
        base,
        debs,
        arch: Arch::Arm64,
        epoch: EPOCH,
        scratch,
    };
    match install(blobs, &req, &cancel) {
        Ok(i) => i,
        Err(e) => panic!("{:?}", miette::Report::new(e)),
    }
}

#[test]
fn openssh_server_installs_into_an_arm64_root_reproducibly() {
    if !preconditions() {
        return;
    }
    let (base_dir, deb_files) = match fixture() {
        Ok(f) => f,
        Err(e) => {
            // The network is the one thing CI may lack for a moment: say so, do not fail.
            crate::oracle::skipped(&format!("the Debian mirror is unreachable or failed: {e}"));
            return;
        }
    };
    assert!(
        deb_files.len() >= 5,
        "openssh-server adds several packages: {deb_files:?}"
    );
    let debs: Vec<Deb> = deb_files.iter().cloned().map(Deb::Path).collect();
    let blobs = MemBlobs::new();
    let started = Instant::now();
    let base = capture(&blobs, &base_dir).unwrap();
    eprintln!("capture of the minbase root: {:?}", started.elapsed());

    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let first = install_once(&blobs, base, &debs, &tmp.path().join("one"));
    eprintln!(
        "install of {} packages: {:?} ({:?})",
        debs.len(),
        started.elapsed(),
        first.timings
    );
    let left: Vec<_> = fs::read_dir(tmp.path().join("one"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "the scratch directory is not left empty: {left:?}"
    );
    assert!(first
        .packages
        .iter()
        .any(|(p, _, a)| p == "openssh-server" && a == "arm64"));

    // Another scratch path, TZ and umask: the same changeset.
    let old_umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::env::set_var("TZ", "Pacific/Kiritimati");
    let second = install_once(&blobs, base, &debs, &tmp.path().join("second/scratch"));
    rustix::process::umask(old_umask);
    std::env::remove_var("TZ");
    if second.changeset_digest != first.changeset_digest {
        let d = w4b::tree::diff::diff(&blobs, first.tree, second.tree).unwrap();
        let paths: Vec<String> = d.iter().map(|d| d.path.to_string()).collect();
        panic!("the install is not reproducible; differing paths: {paths:#?}");
    }

    // The result as dpkg sees it.
    let out = tmp.path().join("out");
    materialize(&blobs, first.tree, &out).unwrap();
    let audit = Command::new("dpkg")
        .arg("--root")
        .arg(&out)
        .arg("--audit")
        .output()
        .unwrap();
    assert!(
        audit.status.success() && audit.stdout.is_empty(),
        "dpkg --audit: {}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let status = Command::new("dpkg-query")
        .arg(format!("--admindir={}", out.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Status} ${Architecture}", "openssh-server"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "install ok installed arm64"
    );
    let sshd = fs::read(out.join("usr/sbin/sshd")).unwrap();
    assert_eq!(&sshd[..5], b"\x7fELF\x02", "a 64-bit ELF");
    assert_eq!(&sshd[18..20], &[0xb7, 0], "e_machine EM_AARCH64");
    let passwd = fs::read_to_string(out.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("sshd:")), "{passwd}");
    // The password-change day of the new user is the epoch's, not today's: shadow's
    // tools honour SOURCE_DATE_EPOCH (no normalisation rule needed).
    let shadow = fs::read_to_string(out.join("etc/shadow")).unwrap();
    let sshd_shadow = shadow.lines().find(|l| l.starts_with("sshd:")).unwrap();
    let lastchg = sshd_shadow.split(':').nth(2).unwrap();
    assert!(
        lastchg.is_empty() || lastchg == (EPOCH / 86400).to_string(),
        "{sshd_shadow}"
    );
    let host_keys: Vec<_> = fs::read_dir(out.join("etc/ssh"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(host_keys.is_empty(), "host keys in the image: {host_keys:?}");
    assert!(!out.join("usr/sbin/policy-rc.d").exists());
    assert!(!out.join("var/cache/w4b-debs").exists());
    assert!(!out.join("var/log/dpkg.log").exists() || base_dir.join("var/log/dpkg.log").exists());
    // No mtime after the epoch anywhere the install touched.
    for op in &first.changeset.ops {
        if let w4b::tree::layer::Op::Put { path, entry } = op {
            assert!(entry.mtime <= EPOCH, "{path} has mtime {}", entry.mtime);
        }
    }
    // The base had no machine-id: systemd's is not installed by this set, so none.
    assert_eq!(
        fs::symlink_metadata(out.join("etc/machine-id")).is_ok(),
        base_dir.join("etc/machine-id").exists()
    );
    let mode = fs::symlink_metadata(out.join("usr/lib/openssh/ssh-keysign"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755, "setuid survives capture and materialize");
}

#[test]
fn a_cancelled_install_leaves_no_mount_and_no_scratch_files() {
    if !preconditions() {
        return;
    }
    let Ok((base_dir, deb_files)) = fixture() else {
        crate::oracle::skipped("the Debian mirror is unreachable");
        return;
    };
    let debs: Vec<Deb> = deb_files.into_iter().map(Deb::Path).collect();
    let blobs = MemBlobs::new();
    let base = capture(&blobs, &base_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    let cancel = AtomicBool::new(false);
    let req = Request {
        base,
        debs: &debs,
        arch: Arch::Arm64,
        epoch: EPOCH,
        scratch: &scratch,
    };
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            // Once dpkg runs (the log exists), pull the plug.
            let log = scratch.join("dpkg.log");
            while !log.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(1500));
            cancel.store(true, Ordering::Relaxed);
        });
        install(&blobs, &req, &cancel)
    });
    assert!(matches!(result, Err(InstallError::Cancelled)), "{result:?}");
    let left: Vec<_> = fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "scratch not emptied: {left:?}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*tmp.path().to_string_lossy()),
        "a mount survived: {mounts}"
    );
}

/// A dependency-closed subset of the openssh-server set, with maintainer scripts (`ucf`).
const SUBSET: [&str; 6] = [
    "libbsd0",
    "libcbor0.8",
    "libedit2",
    "libssl3",
    "ucf",
    "sensible-utils",
];

pub(crate) fn unprivileged_preconditions() -> bool {
    if !preconditions() {
        return false;
    }
    crate::oracle::have_all(&[
        "useradd",
        "usermod",
        "userdel",
        "setpriv",
        "newuidmap",
        "newgidmap",
        "pgrep",
    ])
}

/// Root runs `install-debs` on the subset; the same, as a throwaway user through a user
/// namespace, must give the same changeset and tree. The user gets a cache holding only
/// the base, so every new blob crosses the session's pipe.
#[test]
fn an_unprivileged_install_gives_the_changeset_of_a_root_install() {
    if !unprivileged_preconditions() {
        return;
    }
    let Ok((base_dir, deb_files)) = fixture() else {
        crate::oracle::skipped("the Debian mirror is unreachable");
        return;
    };
    let user = ThrowawayUser::create("w4b-it-userns", "400000-465535").unwrap();
    let debs_dir = user.home.join("debs");
    fs::create_dir_all(&debs_dir).unwrap();
    let mut debs = Vec::new();
    for f in &deb_files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if SUBSET.iter().any(|p| name.starts_with(&format!("{p}_"))) {
            fs::copy(f, debs_dir.join(&name)).unwrap();
            debs.push(format!("debs/{name}"));
        }
    }
    assert_eq!(debs.len(), SUBSET.len(), "{deb_files:?}");
    user.copy_w4b();
    let root_cache = tempfile::tempdir().unwrap();
    let w4b_root = |cache: &Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_w4b"))
            .arg("--cache-dir")
            .arg(cache)
            .args(["install-debs", "--epoch", &EPOCH.to_string(), "--base-tree"])
            .arg(&base_dir)
            .args(extra)
            .current_dir(&user.home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let deb_args: Vec<&str> = debs.iter().map(String::as_str).collect();
    let started = Instant::now();
    let as_root = w4b_root(root_cache.path(), &deb_args);
    eprintln!("as root: {:?} {as_root}", started.elapsed());
    let user_cache = user.home.join("cache");
    let base = w4b_root(&user_cache, &["--capture-only"]);
    assert_eq!(base["base"], as_root["base"]);
    user.chown_home();

    let base_hex = base["base"].as_str().unwrap().to_owned();
    let mut args = vec!["--cache-dir", "cache", "install-debs", "--base", &base_hex];
    let epoch = EPOCH.to_string();
    args.extend(["--epoch", &epoch]);
    args.extend(&deb_args);
    let started = Instant::now();
    let out = user.w4b(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unprivileged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("unprivileged: {:?} {unprivileged}", started.elapsed());
    assert_eq!(unprivileged["changeset"], as_root["changeset"]);
    assert_eq!(unprivileged["tree"], as_root["tree"]);
    assert_eq!(user.processes(), "", "the session left processes");
    let tmp: Vec<_> = fs::read_dir(user_cache.join("v1/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(tmp.is_empty(), "scratch left behind: {tmp:?}");
}

/// SIGTERM to an unprivileged install while dpkg runs: it reports the cancel, and no
/// process, mount or scratch file of the session survives.
#[test]
fn a_cancelled_unprivileged_install_leaves_no_process_behind() {
    if !unprivileged_preconditions() {
        return;
    }
    let Ok((base_dir, deb_files)) = fixture() else {
        crate::oracle::skipped("the Debian mirror is unreachable");
        return;
    };
    let user = ThrowawayUser::create("w4b-it-cancel", "500000-565535").unwrap();
    let debs_dir = user.home.join("debs");
    fs::create_dir_all(&debs_dir).unwrap();
    let mut args: Vec<String> = ["--cache-dir", "cache", "install-debs", "--epoch", "1700000000"]
        .map(String::from)
        .to_vec();
    for f in &deb_files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        fs::copy(f, debs_dir.join(&name)).unwrap();
        args.push(format!("debs/{name}"));
    }
    user.copy_w4b();
    let out = Command::new(env!("CARGO_BIN_EXE_w4b"))
        .arg("--cache-dir")
        .arg(user.home.join("cache"))
        .args(["install-debs", "--epoch", "0", "--capture-only", "--base-tree"])
        .arg(&base_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let base: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    user.chown_home();
    args.push("--base".into());
    args.push(base["base"].as_str().unwrap().to_owned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = user
        .w4b(&arg_refs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the scratch root has dpkg's log, then a little longer: dpkg runs.
    let tmp = user.home.join("cache/v1/tmp");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !fs::read_dir(&tmp)
        .map(|d| d.flatten().any(|e| e.path().join("root/dpkg.log").exists()))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "dpkg never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(3000));
    // setpriv and env exec: the child's pid is w4b's.
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(user.processes(), "", "the cancelled session left processes");
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*user.home.to_string_lossy()), "{mounts}");
}
