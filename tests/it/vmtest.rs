//! `w4b test` against a real system: a minimal Debian bookworm arm64 disk
//! (`tests/support/make-vm-image.sh`: mmdebstrap, Debian's generic kernel and initramfs,
//! an ext4 root named by PARTUUID) booted in `qemu-system-aarch64 -M virt` under TCG.
//! `w4b build --test` boots the same system rebuilt by w4b: the fixture with a FAT
//! partition appended is a base, and an image on it has a `test:` key ([`bootable_base`]).
//!
//! The fixture is built once and cached, compressed (about 200 MB), in [`CACHE`]; the
//! version in its name changes whenever the script does, and other versions are removed.
//! VM tests hold an exclusive file lock ([`LOCK`]) while they boot: two emulated arm64
//! machines at once on a 2-core runner would only make both miss their deadlines. Under
//! `CI` a missing `qemu-system-aarch64` (or anything the fixture needs) fails the test;
//! elsewhere it skips with a message.

#![allow(clippy::disallowed_methods)] // runs the w4b binary, mmdebstrap and pgrep

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::env::TestEnv;

/// Where the fixture is cached; the suffix is the fixture's version.
const CACHE: &str = "/tmp/w4b-test-vm-bookworm-arm64-v1";
const CACHE_PREFIX: &str = "w4b-test-vm-bookworm-arm64-";
/// The lock every VM test holds while it boots (and while the fixture is built).
const LOCK: &str = "/tmp/w4b-vmtest.lock";

/// Holds [`LOCK`] until dropped.
pub(crate) struct VmLock(#[allow(dead_code)] File);

pub(crate) fn vm_lock() -> VmLock {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .expect("open the VM test lock");
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).expect("lock");
    VmLock(f)
}

pub(crate) fn have_qemu() -> bool {
    crate::oracle::have("qemu-system-aarch64")
}

/// The compressed fixture image, built if it is not cached; `None` (a skip outside CI)
/// when this machine cannot build it. Call with the VM lock held.
fn fixture() -> Option<PathBuf> {
    let image = Path::new(CACHE).join("disk.img.zst");
    if image.exists() {
        return Some(image);
    }
    if !crate::kernel::is_root() {
        crate::oracle::unavailable("building the VM fixture needs root (mmdebstrap into a directory)");
        return None;
    }
    if !crate::oracle::have_all(&["mmdebstrap", "mkfs.ext4", "sfdisk", "zstd"]) {
        return None;
    }
    if let Err(e) = w4b::install::preflight::check_host(w4b::install::Arch::Arm64) {
        crate::oracle::unavailable(&format!("the host cannot run arm64 programs: {e}"));
        return None;
    }
    let Some(mirror) = crate::testbase::host_mirror("bookworm") else {
        crate::oracle::unavailable("no `deb` source for bookworm in the host's apt configuration");
        return None;
    };
    // Older versions of the fixture are dead weight.
    for old in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if name.starts_with(CACHE_PREFIX) && old.path() != Path::new(CACHE) {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    std::fs::create_dir_all(CACHE).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make-vm-image.sh");
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg(&image)
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make-vm-image.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("VM fixture built in {:?}", started.elapsed());
    Some(image)
}

fn sha256(path: &Path) -> String {
    let mut f = File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Processes whose command line mentions `needle` (other than this test's own).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let out = Command::new("pgrep").args(["-a", "-f", needle]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .map(str::to_owned)
        .collect()
}

/// `w4b test --message-format json ARGS…` with a private `TMPDIR`: the report and the
/// process's output.
pub(crate) fn w4b_test(env: &TestEnv, tmpdir: &Path, args: &[&str]) -> (Value, std::process::Output) {
    let mut cmd = env.command();
    cmd.env("TMPDIR", tmpdir)
        .args(["test", "--message-format", "json"])
        .args(args);
    let out = cmd.output().expect("spawn w4b");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out)
}

pub(crate) fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

#[test]
fn the_debian_fixture_boots_and_every_check_passes() {
    if !have_qemu() {
        return;
    }
    let _lock = vm_lock();
    let Some(image) = fixture() else { return };
    let env = TestEnv::new();
    let tmpdir = env.root.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    let spec = env.write(
        "spec.json",
        r#"{"commands": [
              {"name": "hostname", "run": "cat /etc/hostname", "stdout_contains": "w4b-vmtest"},
              {"name": "root is the image", "run": "findmnt -n -o SOURCE /", "stdout_regex": "^/dev/vda1\\s*$"}
           ]}"#,
    );
    let logs = env.root.path().join("logs");
    let before = sha256(&image);
    let started = std::time::Instant::now();
    let (report, out) = w4b_test(
        &env,
        &tmpdir,
        &[
            image.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
            "--unit-active",
            "systemd-journald.service",
            "--log",
            logs.to_str().unwrap(),
        ],
    );
    let whole = started.elapsed();
    assert!(
        out.status.success(),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["schema"], "w4b.test/1");
    assert_eq!(report["passed"], true);
    assert_eq!(report["kernel"]["source"], "image");
    assert!(report["kernel"]["kernel"]
        .as_str()
        .unwrap()
        .starts_with("/boot/vmlinuz-"));
    for name in [
        "boot settles",
        "`multi-user.target` active",
        "no failed units",
        "unit `systemd-journald.service` active",
        "command `hostname`",
        "command `root is the image`",
    ] {
        assert_eq!(check(&report, name)["passed"], true, "{name}: {report:#}");
    }
    // The boot-time breakdown and the whole console were kept.
    let reached = report["boot_time"]["target_reached"].as_f64().unwrap();
    assert!(!report["blame"].as_array().unwrap().is_empty());
    let log = std::fs::read_to_string(logs.join("disk.boot.log")).unwrap();
    assert!(
        log.contains("Linux version"),
        "the boot log starts with the kernel"
    );
    assert_eq!(sha256(&image), before, "the image was modified");
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "temporary files were left"
    );
    eprintln!(
        "boot to multi-user.target: {reached:.1} s (systemd-analyze); whole test: {:.1} s; {}",
        whole.as_secs_f64(),
        report["boot_time"]
    );
}

#[test]
fn failing_checks_are_reported_with_their_output_and_the_vm_is_gone() {
    if !have_qemu() {
        return;
    }
    let _lock = vm_lock();
    let Some(compressed) = fixture() else { return };
    let env = TestEnv::new();
    let tmpdir = env.root.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    // A raw image: QEMU opens this very file, so this is where "never modified" matters.
    let image = env.root.path().join("raw.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -q -d -c '{}' | cp --sparse=always /dev/stdin '{}'",
            compressed.display(),
            image.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let before = sha256(&image);
    let spec = env.write(
        "spec.json",
        r#"{"commands": [
              {"name": "says oops", "run": "echo oops; echo to-stderr >&2; exit 1"},
              {"name": "wrong words", "run": "echo hello", "stdout_contains": "goodbye"},
              {"name": "writes", "run": "echo scribble > /etc/w4b-scribble && sync"}
           ],
           "hive_checklist": true}"#,
    );
    let (report, out) = w4b_test(
        &env,
        &tmpdir,
        &[
            image.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
            "--unit-active",
            "w4b-no-such.service",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["passed"], false);
    assert_eq!(check(&report, "boot settles")["passed"], true);
    let oops = check(&report, "command `says oops`");
    assert_eq!(oops["passed"], false);
    assert_eq!(oops["reason"], "exited with status 1, expected 0");
    let log: Vec<&str> = oops["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(log, ["stdout:", "  oops", "stderr:", "  to-stderr"]);
    let words = check(&report, "command `wrong words`");
    assert_eq!(words["reason"], "its output does not contain `goodbye`");
    let unit = check(&report, "unit `w4b-no-such.service` active");
    assert_eq!(unit["passed"], false);
    assert_eq!(unit["reason"], "`w4b-no-such.service` is `inactive`");
    assert_eq!(check(&report, "command `writes`")["passed"], true);
    // The hive checklist, forced on for an image that is no hive: each rule a plain Debian
    // system breaks is a log line of its own, and the rest passed on what the guest sent —
    // `units` found a unit file for every `*.wants/` link (under `/usr/lib`, `/lib` being
    // a link), the hostname rule read the fixture's name and its `/etc/hosts`.
    let hive = check(&report, "hive checklist (in the guest)");
    assert_eq!(hive["passed"], false, "{hive:#}");
    let log: Vec<&str> = hive["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        log.iter()
            .any(|l| l.starts_with("nftables `/etc/nftables.conf`: no firewall ruleset")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("account `/etc/w4b/system/admin`: no account record")),
        "{log:#?}"
    );
    assert!(
        log[0].starts_with("hostname `/etc/hosts`: `w4b-vmtest` has no line in /etc/hosts"),
        "{log:#?}"
    );
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(
        log.last().copied(),
        Some("skipped host_keys: a booted system: the first boot made its SSH host keys and machine-id")
    );
    // The guest wrote to its disk; the file did not change.
    assert_eq!(sha256(&image), before, "the image was modified");
    let boot_log = image.with_file_name("raw.boot.log");
    assert!(boot_log.exists(), "the boot log goes beside the image");
    assert!(
        processes_mentioning(image.to_str().unwrap()).is_empty(),
        "QEMU is still running"
    );
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "temporary files were left"
    );
    // A kernel that does not boot: the table for people names the boot that never came,
    // quotes the console and says what to do; nothing is left behind either.
    let bogus = env.root.path().join("bogus-vmlinuz");
    std::fs::write(&bogus, vec![0u8; 1 << 20]).unwrap();
    let human = env
        .command()
        .env("TMPDIR", &tmpdir)
        .args(["test", image.to_str().unwrap(), "--boot-timeout", "1"])
        .arg("--kernel")
        .arg(&bogus)
        .arg("--initrd")
        .arg(&bogus)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert_eq!(human.status.code(), Some(1), "{stderr}");
    for expected in [
        "given with `--kernel` (not the image's)",
        "FAIL boot settles: the system did not start its services within 1 s (the test harness never ran)",
        "console: empty; the kernel printed nothing",
        "help: read the console's last lines",
        "FAILED: 0 of 3 checks passed",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(processes_mentioning(image.to_str().unwrap()).is_empty());
    assert_eq!(std::fs::read_dir(&tmpdir).unwrap().count(), 0);

    // Ctrl-C while the machine boots: QEMU is stopped and nothing is left behind.
    let child = env
        .command()
        .env("TMPDIR", &tmpdir)
        .args(["test", image.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while processes_mentioning(image.to_str().unwrap()).is_empty() {
        assert!(waited.elapsed().as_secs() < 60, "QEMU never started");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::cancelled"), "{stderr}");
    assert!(
        processes_mentioning(image.to_str().unwrap()).is_empty(),
        "QEMU outlived Ctrl-C"
    );
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "temporary files were left"
    );
    assert_eq!(sha256(&image), before, "the image was modified");
}

#[test]
fn an_image_without_a_vm_kernel_is_refused_with_what_it_has() {
    if !have_qemu() {
        return;
    }
    let Some(images) = crate::testbase::images() else {
        return;
    };
    let env = TestEnv::new();
    let out = env.run(&["test", images.xz.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::no_kernel"), "{stderr}");
    assert!(stderr.contains("kernel8.img"), "{stderr}");
    // The help, however the terminal wraps it.
    let words: String = stderr
        .split_whitespace()
        .filter(|w| *w != "|")
        .collect::<Vec<_>>()
        .join(" ");
    assert!(words.contains("--kernel PATH --initrd PATH"), "{stderr}");
    assert!(
        words.contains("w4b-test-kernel` is locked (`w4b lock`)"),
        "{stderr}"
    );
}

#[test]
fn without_qemu_the_error_names_the_package() {
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.env("PATH", "/nonexistent-w4b").args(["test", "whatever.img"]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::no_qemu"), "{stderr}");
    assert!(stderr.contains("qemu-system-arm"), "{stderr}");
}

/// A base w4b can build on, made from the fixture in seconds: its disk with a FAT partition
/// appended (a Raspberry Pi image's boot partition, which `unpack` needs; the fixture's own
/// root stays partition 1, so its `/etc/fstab` and the PARTUUIDs hold), compressed. Written
/// into `dir`; `None` (a skip outside CI) without the tools.
fn bootable_base(fixture: &Path, dir: &Path) -> Option<PathBuf> {
    if !crate::oracle::have_all(&["zstd", "sfdisk", "mkfs.vfat", "truncate", "dd"]) {
        return None;
    }
    let disk = dir.join("fx.img");
    let fat = dir.join("fat.img");
    let out = dir.join("fx.img.zst");
    // 2 GiB of root from sector 2048, then 63 MiB of FAT32 at 2 GiB.
    crate::testbase::sh(&format!(
        "set -e
         zstd -q -d -c '{fixture}' | cp --sparse=always /dev/stdin '{disk}'
         truncate -s 2112M '{disk}'
         echo 'start=4194304, size=129024, type=c' | sfdisk --append --quiet '{disk}'
         mkfs.vfat -C -F 32 -n BOOTFS '{fat}' 64512 >/dev/null
         dd if='{fat}' of='{disk}' bs=1M seek=2048 conv=notrunc,sparse status=none
         zstd -q -1 -T0 -f --rm '{disk}' -o '{out}'
         rm -f '{fat}'",
        fixture = fixture.display(),
        disk = disk.display(),
        fat = fat.display(),
        out = out.display(),
    ));
    Some(out)
}

/// A workspace whose `//images:fx` is the fixture rebuilt by w4b (its root filesystem
/// written by w4b's ext4 writer) with a `test:` key. The board and the layer only satisfy
/// `#validate`, which checks Raspberry Pi boot files: the VM boots the root's own kernel.
fn bootable_workspace(base: &Path) -> TestEnv {
    let env = TestEnv::new();
    env.write(
        "defs/bases/fixture.yaml",
        &format!(
            "kind: base\nurl: file://{}\nsha256: {}\narch: arm64\nrelease: bookworm\ndate: 2023-11-14\n",
            base.display(),
            sha256(base)
        ),
    );
    env.write(
        "defs/boards/virt.yaml",
        "kind: board\narch: arm64\nconfig_txt: [\"kernel=vmlinuz\"]\n",
    );
    env.write(
        "defs/layers/fx.yaml",
        "kind: layer\nfiles:\n  - {path: /etc/fstab, append: \"PARTUUID=5734b007-02  /boot/firmware  vfat  defaults,nofail  0  2\\n\"}\n  - {path: /boot/firmware/vmlinuz, content: \"the VM boots /boot/vmlinuz-*\\n\"}\n  - {path: /boot/firmware/cmdline.txt, content: \"console=ttyAMA0 root=PARTUUID=5734b007-01 rootwait\\n\"}\n",
    );
    env.write(
        "defs/images/fx.yaml",
        "kind: image\nboard: //boards:virt\nbase: //bases:fixture\nlayers: [//layers:fx]\noutput: {compression: zstd, level: 1}\ntest:\n  units_active: [systemd-journald.service]\n  commands:\n    - {name: hostname, run: cat /etc/hostname, stdout_contains: w4b-vmtest}\n    - {name: boot partition, run: findmnt -n -o FSTYPE /boot/firmware, stdout_contains: vfat}\n",
    );
    env
}

/// `w4b build --test` on an image w4b built: the first build boots it and caches the
/// verdicts (not the timings), writing the run's report and boot log beside the image; an
/// unchanged image and test is a cache hit that never looks for QEMU; a changed test boots
/// again (`w4b test LABEL`, options merged over the `test:` key), and a failing one fails
/// with each failed check and its output, and is not cached. Two boots in all.
#[test]
fn a_built_image_is_booted_once_by_its_test_key_and_a_failure_is_never_cached() {
    if !have_qemu() {
        return;
    }
    let _lock = vm_lock();
    let Some(fixture) = fixture() else { return };
    let work = tempfile::tempdir().unwrap();
    let Some(base) = bootable_base(&fixture, work.path()) else {
        return;
    };
    let env = bootable_workspace(&base);
    let finished = |b: &crate::env::Build| -> Value {
        b.events
            .iter()
            .find(|e| e["event"] == "test-finished")
            .cloned()
            .unwrap_or_else(|| panic!("no test-finished event:\n{}", b.stderr()))
    };

    // 1. Builds and boots; the verdicts are cached, the run's report and console written.
    let started = std::time::Instant::now();
    let b = env.build(&["--test", "//images:fx"]);
    let first = started.elapsed();
    assert!(b.ok(), "{}", b.stderr());
    assert!(b.ran().contains(&"//images:fx#test".to_owned()), "{:?}", b.ran());
    let t = finished(&b);
    assert_eq!(t["cached"], false);
    let names: Vec<&str> = t["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "boot settles",
            "`multi-user.target` active",
            "no failed units",
            "unit `systemd-journald.service` active",
            "command `hostname`",
            "command `boot partition`"
        ]
    );
    assert!(
        !t["checks"].to_string().contains("seconds"),
        "no timings cached: {t}"
    );
    let report: Value = serde_json::from_slice(&env.read("out/fx.test.json")).unwrap();
    assert_eq!(report["schema"], "w4b.test/1");
    assert_eq!(report["passed"], true);
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    assert!(String::from_utf8_lossy(&env.read("out/fx.boot.log")).contains("Linux version"));
    let manifest = String::from_utf8(env.read("out/fx.manifest.json")).unwrap();
    assert!(
        !manifest.contains("#test"),
        "the manifest is the same with or without --test"
    );
    let scratch = env.cache.join("v1/tmp");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("test-"))
        .collect();
    assert!(
        left.is_empty(),
        "the disk's copy was left in {}",
        scratch.display()
    );

    // 2. The same image and test: cached, and QEMU is not even looked for.
    let started = std::time::Instant::now();
    let mut cmd = env.command();
    cmd.env("PATH", "/nonexistent-w4b")
        .args(["build", "--message-format", "json", "--test", "//images:fx"]);
    let out = cmd.output().unwrap();
    let hit = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "test-finished")
        .expect("a test-finished event");
    assert_eq!(t["cached"], true);
    assert!(stdout.contains(r#""ran":0"#), "{stdout}");
    let kept: Value = serde_json::from_slice(&env.read("out/fx.test.json")).unwrap();
    assert_eq!(kept, report, "the run's report stays on a hit for the same disk");
    let disk = report["disk"].as_str().expect("the run's report names its disk");
    assert_eq!(disk.len(), 64, "{report:#}");

    // 2b. A hit into another output directory still leaves a report there: the verdicts,
    //     marked cached, naming the same disk, nothing timed and no boot log.
    let mut cmd = env.command();
    cmd.env("PATH", "/nonexistent-w4b")
        .args(["build", "--test", "//images:fx", "--out", "elsewhere"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cached: Value = serde_json::from_slice(&env.read("elsewhere/fx.test.json")).unwrap();
    assert_eq!(cached["schema"], "w4b.test/1");
    assert_eq!(cached["cached"], true);
    assert_eq!(cached["passed"], true);
    assert_eq!(cached["disk"], disk);
    assert_eq!(cached["checks"].as_array().unwrap().len(), names.len());
    assert!(cached.get("seconds").is_none(), "{cached:#}");
    assert!(!env.path("elsewhere/fx.boot.log").exists());

    // 3. A changed test that fails: boots again, and the build fails with the check and
    //    its output.
    let spec = env.write(
        "fail.json",
        r#"{"commands": [{"name": "says oops", "run": "echo oops; exit 3"}]}"#,
    );
    let out = env.run(&["test", "//images:fx", "--spec", spec.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "step `//images:fx#test` failed",
        "w4b::test::failed",
        "the image failed its boot test: 1 of 7 checks failed",
        "command `says oops`: exited with status 3, expected 0",
        "| stdout:",
        "|   oops",
        "out/fx.boot.log",
        "is not cached",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    let report: Value = serde_json::from_slice(&env.read("out/fx.test.json")).unwrap();
    assert_eq!(report["passed"], false);

    // 4. Not cached: the same failing test runs again (and, without QEMU, fails at once
    //    instead of booting a third time).
    let mut cmd = env.command();
    cmd.env("PATH", "/nonexistent-w4b")
        .args(["test", "//images:fx", "--spec", spec.to_str().unwrap()]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::no_qemu"), "{stderr}");
    eprintln!(
        "build --test: first (build + boot) {:.1} s, cached {:.1} s",
        first.as_secs_f64(),
        hit.as_secs_f64()
    );
}

/// `w4b build --test` and `w4b test LABEL` add `#test` after the disk. It cannot boot here —
/// the Pi-OS-like test base has only `kernel8.img` — so the step fails at once with the
/// image's problem before QEMU starts: the build fails naming the step, while the image
/// itself is built and exported. A build without `--test` has no such step. A tar target
/// is refused by `w4b test` and left out, with a note, by `build --test`.
#[test]
fn build_test_and_test_label_run_the_test_step_after_the_disk() {
    if !have_qemu() {
        return;
    }
    let server = crate::http::TestServer::start();
    let Some(env) = crate::testbase::workspace_with_served_base(&server) else {
        return;
    };
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nboard: //boards:pi4\nbase: //bases:test\noutput: {compression: zstd, level: 3}\ntest:\n  units_active: [ssh.service]\n",
    );
    env.write(
        "defs/images/rootfs.yaml",
        "kind: image\nbase: scratch\nepoch: 1700000000\n",
    );

    let b = env.build(&["//images:edge", "--test"]);
    let stderr = b.stderr();
    assert_eq!(b.output.status.code(), Some(1), "{stderr}");
    for expected in [
        "step `//images:edge#test` failed",
        "w4b::test::no_kernel",
        "kernel8.img",
    ] {
        assert!(stderr.contains(expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(b
        .events
        .iter()
        .any(|e| e["event"] == "step-failed" && e["step"] == "//images:edge#test"));
    assert!(
        env.path("out/edge.img.zst").exists(),
        "the image is exported anyway"
    );

    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(b.ran().is_empty(), "{:?}", b.ran());
    assert!(
        !b.cached().iter().any(|s| s.ends_with("#test")),
        "{:?}",
        b.cached()
    );

    let out = env.run(&["test", "//images:edge"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("step `//images:edge#test` failed"), "{stderr}");
    assert!(stderr.contains("w4b::test::no_kernel"), "{stderr}");

    let out = env.run(&["test", "//images:rootfs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("w4b::test::not_a_disk"), "{stderr}");
    let out = env.run(&["build", "--test", "//images:rootfs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("builds a tar archive; it is not booted"),
        "{stderr}"
    );
}

/// The kernel release of the fixture's own Debian kernel (`/boot/vmlinuz-<release>`).
fn fixture_kernel_release(image: &Path) -> String {
    let opened = w4b::image::open_image(image, w4b::image::DEFAULT_MAX_IMAGE_SIZE).unwrap();
    let disk = w4b::image::read_disk(opened.file.try_clone().unwrap()).unwrap();
    let root = w4b::vmtest::boot_files::find_root(&disk, image).unwrap();
    let ext4 = w4b::formats::ext4::Ext4::open(&disk.file, root.offset, root.len).unwrap();
    let boot = ext4.lookup("/boot").unwrap();
    ext4.read_dir(boot)
        .unwrap()
        .iter()
        .find_map(|e| {
            String::from_utf8_lossy(&e.name)
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .expect("the fixture has a kernel")
}

/// A Raspberry-Pi-OS-shaped image has only a Raspberry Pi kernel: the fixture rebuilt by
/// w4b without its Debian kernel, initramfs and modules, with `kernel8.img` on its FAT boot
/// partition and that partition in `/etc/fstab` (no `nofail`: the boot needs `vfat`).
/// `w4b lock` locks the shipped `//packages:w4b-test-kernel` beside it (against the host's
/// Debian mirror), and `w4b test LABEL` boots the pinned generic kernel instead, says so
/// plainly, and reaches `multi-user.target` with the image's own systemd. One boot.
#[test]
fn a_raspberry_pi_os_like_image_boots_the_pinned_generic_kernel() {
    if !have_qemu() {
        return;
    }
    let (Some(debian), Some(security)) = (
        crate::testbase::host_mirror("bookworm"),
        crate::testbase::host_mirror("bookworm-security"),
    ) else {
        crate::oracle::unavailable("the host's apt sources name no bookworm and bookworm-security mirror");
        return;
    };
    let _lock = vm_lock();
    let Some(fixture) = fixture() else { return };
    let work = tempfile::tempdir().unwrap();
    let Some(base) = bootable_base(&fixture, work.path()) else {
        return;
    };
    let own = fixture_kernel_release(&base);
    let env = TestEnv::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["debian-bookworm.yaml", "w4b-test-kernel.yaml"] {
        std::fs::create_dir_all(env.ws.join("defs/packages")).unwrap();
        std::fs::copy(
            repo.join("defs/packages").join(f),
            env.ws.join("defs/packages").join(f),
        )
        .unwrap();
    }
    crate::env::copy_dir(
        &repo.join("defs/packages/keys"),
        &env.ws.join("defs/packages/keys"),
    );
    env.write(
        "w4b.yaml",
        &format!(
            "defs: defs\nmirrors:\n  \"http://deb.debian.org/debian/\": [\"{debian}/\"]\n  \"http://deb.debian.org/debian-security/\": [\"{security}/\"]\n"
        ),
    );
    env.write(
        "defs/bases/fixture.yaml",
        &format!(
            "kind: base\nurl: file://{}\nsha256: {}\narch: arm64\nrelease: bookworm\ndate: 2023-11-14\n",
            base.display(),
            sha256(&base)
        ),
    );
    env.write(
        "defs/boards/pi.yaml",
        "kind: board\narch: arm64\nconfig_txt: [\"arm_64bit=1\"]\n",
    );
    env.write(
        "defs/layers/pi.yaml",
        &format!(
            "kind: layer\nfiles:\n\
             \x20 - {{path: /boot/vmlinuz-{own}, remove: true}}\n\
             \x20 - {{path: /boot/initrd.img-{own}, remove: true}}\n\
             \x20 - {{path: /vmlinuz, remove: true}}\n\
             \x20 - {{path: /vmlinuz.old, remove: true}}\n\
             \x20 - {{path: /initrd.img, remove: true}}\n\
             \x20 - {{path: /initrd.img.old, remove: true}}\n\
             \x20 - {{path: /usr/lib/modules/{own}, remove: true}}\n\
             \x20 - {{path: /etc/fstab, append: \"PARTUUID=5734b007-02  /boot/firmware  vfat  defaults  0  2\\n\"}}\n\
             \x20 - {{path: /boot/firmware/kernel8.img, content: \"a Raspberry Pi kernel\\n\"}}\n\
             \x20 - {{path: /boot/firmware/cmdline.txt, content: \"console=serial0,115200 root=PARTUUID=5734b007-01 rootwait\\n\"}}\n"
        ),
    );
    let image = |checks: &str| {
        env.write(
            "defs/images/pi.yaml",
            &format!("kind: image\nboard: //boards:pi\nbase: //bases:fixture\nlayers: [//layers:pi]\noutput: {{compression: zstd, level: 1}}\n{checks}"),
        );
    };
    image("");

    // 1. `w4b lock` locks the test kernel beside the arm64 image, on no base.
    let out = env.run(&["lock", "//images:pi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("locked `//packages:w4b-test-kernel for arm64 booting tests`"),
        "{stderr}"
    );
    let lock: Value = serde_json::from_slice(&env.read("w4b.lock")).unwrap();
    let packages = lock["entries"]["//packages:w4b-test-kernel for arm64 booting tests"]["packages"]
        .as_array()
        .unwrap();
    let release = packages
        .iter()
        .filter_map(|p| p["name"].as_str())
        .find_map(|n| {
            n.strip_prefix("linux-image-")
                .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .expect("a versioned kernel package")
        .to_owned();
    assert!(packages.iter().any(|p| p["name"] == "busybox-static"));

    // 2. `w4b test` boots it with the pinned kernel: the image's own systemd, its FAT
    //    partition mounted, the kernel's modules lent to its udev.
    image(&format!(
        "test:\n  units_active: [systemd-journald.service, systemd-udevd.service]\n  commands:\n\
         \x20   - {{name: running kernel, run: uname -r, stdout_contains: \"{release}\"}}\n\
         \x20   - {{name: boot partition, run: findmnt -n -o FSTYPE /boot/firmware, stdout_contains: vfat}}\n\
         \x20   - {{name: modules, run: \"modprobe -n -v vfat && test -e /lib/modules/$(uname -r)/modules.dep\"}}\n"
    ));
    let started = std::time::Instant::now();
    let out = env.run(&["test", "//images:pi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected = format!("`linux-image-{release}` ");
    assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    assert!(
        stderr.contains("(pinned generic kernel; the image's own `kernel8.img` on the boot partition (partition 2) cannot boot the virt machine)"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&env.read("out/pi.test.json")).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["kernel"]["source"], "pinned");
    assert_eq!(report["kernel"]["release"], release.as_str());
    assert!(report["machine"]["cmdline"]
        .as_str()
        .unwrap()
        .ends_with(" w4b.root=/dev/vda1"));
    for name in [
        "`multi-user.target` active",
        "no failed units",
        "command `running kernel`",
        "command `boot partition`",
        "command `modules`",
    ] {
        assert_eq!(check(&report, name)["passed"], true, "{name}: {report:#}");
    }
    let log = String::from_utf8_lossy(&env.read("out/pi.boot.log")).into_owned();
    assert!(log.contains("w4b initramfs: switching to /dev/vda1"), "{log}");
    let by_label = started.elapsed();

    // 3. The built image as a file, tested from inside the workspace: the same pinned
    //    kernel, from the cache (no step runs), and the same plain words.
    let tmpdir = env.root.path().join("tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    let file = env.path("out/pi.img.zst");
    let (report, out) = w4b_test(&env, &tmpdir, &[file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["kernel"]["source"], "pinned");
    assert_eq!(
        report["kernel"]["instead_of"][0],
        "`kernel8.img` on the boot partition (partition 2)"
    );
    assert_eq!(check(&report, "`multi-user.target` active")["passed"], true);
    assert_eq!(
        std::fs::read_dir(&tmpdir).unwrap().count(),
        0,
        "temporary files were left"
    );
    eprintln!(
        "pinned kernel {release} (the fixture's own: {own}): lock, build and boot in {:.1} s; the file booted in {:.1} s",
        by_label.as_secs_f64(),
        (started.elapsed() - by_label).as_secs_f64()
    );
}
