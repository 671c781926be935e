//! The workspace shipped in the repository, on the base bootstrapped from Debian's own
//! packages, through the CLI, every run: what the README's first command builds.
//!
//! Against the host's Debian mirror (read from its apt sources, mapped with `mirrors:`):
//! `w4b lock` resolves the shipped base's set (the essential packages plus a bootable
//! Pi system) with no base and the north hive's module sets on top of it; then
//! - the base's root, written as a tar, is judged by dpkg itself (`dpkg --root … --audit`,
//!   every package `install ok installed`) and by what a booting Pi needs (merged `/usr`,
//!   kernel and initramfs under `/boot` and `/boot/firmware`, an empty machine id);
//! - the base as a disk image **boots** in QEMU (`w4b test LABEL --retest` with the
//!   image's `test:`: `multi-user.target`, no failed unit, sshd and NetworkManager
//!   active) — booted on every run, whatever verdict the kept cache holds;
//! - the north hive (the configuration manager's file, unchanged) builds on it and boots
//!   with what its modules run (`modules::boot_checks`): the first boot complete, sshd on
//!   its port, the firewall's table, the node exporter serving, the health check, and the
//!   hive checklist on the running system (the guest's files, judged on the host);
//! - a small bootstrapped root is built again from nothing by `w4b build --check` — another
//!   cache, `TZ`, locale, umask and `-j` — and every step's output is identical.
//!
//! The packages and the roots stay in [`CACHE`] (bounded by `cache.max_size`), so a rerun
//! with unchanged code bootstraps only in `--check`; the two boots always run. Without root, qemu-user, QEMU or the
//! mirror the test skips with a message (fails under `CI`).

#![allow(clippy::disallowed_methods)] // runs tar and dpkg as oracles

use std::path::Path;

use crate::env::TestEnv;
use crate::vmtest::{check, have_qemu, vm_lock};

/// The w4b cache the `.deb`s, the bootstrapped root and the images are kept in between runs.
const CACHE: &str = "/tmp/w4b-test-bootstrap-cache";

fn workspace() -> Option<TestEnv> {
    if !crate::install::preconditions() || !crate::oracle::have_all(&["tar", "zstd", "dpkg"]) || !have_qemu()
    {
        return None;
    }
    let (Some(debian), Some(security)) = (
        crate::testbase::host_mirror("bookworm"),
        crate::testbase::host_mirror("bookworm-security"),
    ) else {
        crate::oracle::skipped("the host's apt sources name no bookworm and bookworm-security mirror");
        return None;
    };
    let mut env = TestEnv::new();
    env.cache = CACHE.into();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate::env::copy_dir(&repo.join("defs"), &env.ws.join("defs"));
    let w4b_yaml = std::fs::read_to_string(repo.join("w4b.yaml")).unwrap();
    assert!(
        w4b_yaml.contains("hives: {image: //images:w4b-edge}"),
        "{w4b_yaml}"
    );
    env.write(
        "w4b.yaml",
        &format!(
            "{w4b_yaml}cache: {{max_size: 6GiB}}\nmirrors:\n  \"http://deb.debian.org/debian/\": [\"{debian}/\"]\n  \"http://deb.debian.org/debian-security/\": [\"{security}/\"]\n"
        ),
    );
    // The shipped base alone, as a root tar and as a disk, quick to compress.
    env.write(
        "defs/images/base-root.yaml",
        "kind: image\nbase: //bases:debian-bookworm-arm64\nboard: //boards:pi4\noutput: {format: tar, compression: zstd, level: 1}\n",
    );
    env.write(
        "defs/images/base-disk.yaml",
        "kind: image\nbase: //bases:debian-bookworm-arm64\nboard: //boards:pi4\noutput: {compression: zstd, level: 1}\ntest: {units_active: [ssh.service, NetworkManager.service]}\n",
    );
    Some(env)
}

fn sh(cmd: &str) -> String {
    crate::testbase::sh(cmd)
}

/// `w4b test LABEL --retest ARGS…` (holding the VM lock): builds through the kept cache
/// and boots the image whatever verdict is cached, so every run of the suite boots it;
/// asserts it passed and returns the report it wrote, `out/NAME.test.json`.
fn build_and_boot(env: &TestEnv, label: &str, name: &str, args: &[&str]) -> serde_json::Value {
    let _lock = vm_lock();
    let mut all = vec![
        "--message-format",
        "json",
        "test",
        label,
        "--retest",
        "--out",
        "out",
    ];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert!(
        out.status.success(),
        "{label} failed to build or boot:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let finished = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "test-finished")
        .unwrap_or_else(|| panic!("no test-finished event for {label}"));
    assert_eq!(finished["cached"], false, "{label} was booted: {finished}");
    let report: serde_json::Value =
        serde_json::from_slice(&env.read(&format!("out/{name}.test.json"))).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    assert!(report["seconds"].as_f64().is_some(), "a run's report: {report:#}");
    report
}

#[test]
fn the_shipped_hive_builds_on_the_bootstrapped_base_and_boots_with_its_services() {
    let Some(env) = workspace() else { return };
    let out = env.run(&["lock"]);
    assert!(
        out.status.success(),
        "lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lock = String::from_utf8(env.read("w4b.lock")).unwrap();
    for entry in [
        "//packages:debian-bookworm-raspi for arm64 bootstrapping //bases:debian-bookworm-arm64",
        "//packages:w4b-system + //packages:w4b-monitoring + //packages:w4b-firewall for arm64 on //bases:debian-bookworm-arm64",
    ] {
        assert!(lock.contains(entry), "no `{entry}` in\n{lock}");
    }
    for name in [
        "dpkg",
        "systemd",
        "linux-image-arm64",
        "raspi-firmware",
        "usr-is-merged",
        "openssh-server",
        "nftables",
        "locales",
    ] {
        assert!(lock.contains(&format!("{{\"name\":\"{name}\",")), "{name} locked");
    }
    assert!(
        !lock.contains("{\"name\":\"usrmerge\","),
        "usr-is-merged, not usrmerge"
    );

    // The root, as the tar image carries it, judged by dpkg.
    let root_build = env.build(&["//images:base-root", "--out", "out"]);
    assert!(root_build.ok(), "{}", root_build.stderr());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sh(&format!(
        "tar --zstd -xpf '{}' -C '{}'",
        env.path("out/base-root.tar.zst").display(),
        root.display()
    ));
    // The host's dpkg (amd64) reads the arm64 database once arm64 is a foreign
    // architecture of this throwaway copy.
    sh(&format!(
        "dpkg --root='{}' --add-architecture arm64",
        root.display()
    ));
    let audit = sh(&format!("dpkg --root='{}' --audit", root.display()));
    assert_eq!(audit.trim(), "", "dpkg --audit");
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    let packages = status.matches("\nStatus: ").count() + usize::from(status.starts_with("Status: "));
    assert!(packages > 150, "{packages} packages");
    assert_eq!(
        status.matches("Status: install ok installed").count(),
        packages,
        "every package installed"
    );
    for top in ["bin", "sbin", "lib"] {
        assert_eq!(
            std::fs::read_link(root.join(top)).unwrap(),
            Path::new("usr").join(top),
            "merged /usr"
        );
    }
    assert!(root.join("usr/lib/systemd/systemd").is_file());
    let names = |d: &str| -> Vec<String> {
        std::fs::read_dir(root.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let boot = names("boot");
    assert!(boot.iter().any(|n| n.starts_with("vmlinuz-")), "{boot:?}");
    assert_eq!(
        boot.iter().filter(|n| n.starts_with("initrd.img-")).count(),
        1,
        "one initramfs: {boot:?}"
    );
    // raspi-firmware's hooks filled the boot partition from the packages alone.
    let firmware = names("boot/firmware");
    for want in ["config.txt", "cmdline.txt", "start4.elf", "bcm2711-rpi-4-b.dtb"] {
        assert!(firmware.iter().any(|n| n == want), "{want} in {firmware:?}");
    }
    assert!(
        firmware.iter().any(|n| n.starts_with("initrd.img-")),
        "{firmware:?}"
    );
    let cmdline = std::fs::read_to_string(root.join("boot/firmware/cmdline.txt")).unwrap();
    assert!(cmdline.contains("root=LABEL=RASPIROOT"), "{cmdline}");
    assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
    assert!(!root.join("var/lib/dbus/machine-id").exists());
    assert!(
        !root.join("etc/ssh/ssh_host_ed25519_key").exists(),
        "no host key in the image"
    );

    // The base boots, checked as its definition's `test:` says.
    let report = build_and_boot(&env, "//images:base-disk", "base-disk", &[]);
    assert_eq!(check(&report, "unit `ssh.service` active")["passed"], true);
    assert_eq!(
        check(&report, "unit `NetworkManager.service` active")["passed"],
        true
    );

    // The north hive, as the manager wrote it, on the base: it builds and boots, asked for
    // what its modules run.
    let report = build_and_boot(&env, "//hives:north", "north", &["--set", "output.level=1"]);
    for name in [
        "command `first boot: every section done`",
        "command `security: sshd listening on port 22`",
        "command `security: the firewall's ruleset loaded`",
        "command `monitoring: the node exporter serves metrics on port 9100`",
        "command `monitoring: the health check runs`",
        // The hive checklist on the running system, from the files the guest sent back.
        "hive checklist (in the guest)",
    ] {
        assert_eq!(check(&report, name)["passed"], true, "{name}");
    }
}

/// A bootstrap again from nothing — another cache, `TZ`, locale, umask and `-j` — gives
/// the same root, every step's output identical (`w4b build --check`). A small set
/// (systemd and an SSH server over the essential packages, no kernel) keeps this to a few
/// minutes in every run; the shipped hive's whole `--check`, its kernel and initramfs
/// included, was measured identical by hand (`docs/performance.md`).
#[test]
fn a_small_bootstrapped_root_is_the_same_from_nothing_under_other_conditions() {
    let Some(env) = workspace() else { return };
    env.write(
        "defs/packages/small.yaml",
        "kind: packages\nextends: //packages:debian-bookworm\npackages: [systemd, openssh-server]\n",
    );
    env.write(
        "defs/bases/small.yaml",
        "kind: base\narch: arm64\nrelease: bookworm\nbootstrap: {packages: [//packages:small]}\n",
    );
    env.write(
        "defs/images/small-root.yaml",
        "kind: image\nbase: //bases:small\nboard: //boards:pi4\noutput: {format: tar, compression: zstd, level: 1}\n",
    );
    let out = env.run(&["lock", "//images:small-root"]);
    assert!(
        out.status.success(),
        "lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = env.build(&["//images:small-root", "--out", "out"]);
    assert!(first.ok(), "{}", first.stderr());
    let again = env.run(&["build", "//images:small-root", "--out", "out", "--check"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "--check: {stderr}");
    assert!(stderr.contains("every output identical"), "{stderr}");
    assert!(stderr.contains("TZ=Pacific/Chatham"), "{stderr}");
}
