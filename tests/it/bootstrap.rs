//! The workspace shipped in the repository, on the base bootstrapped from Debian's own
//! packages, through the CLI, every run: what the README's first command builds.
//!
//! Against the host's Debian mirror (read from its apt sources, mapped with `mirrors:`):
//! `w4b lock` resolves the shipped base's set (the essential packages plus a bootable
//! Pi system) with no base and the north hive's module sets on top of it; then
//! - the base's root, written as a tar, is judged by dpkg itself (`dpkg --root … --audit`,
//!   every package `install ok installed`) and by what a booting Pi needs (merged `/usr`,
//!   kernel and initramfs under `/boot` and `/boot/firmware`, an empty machine id);
//! - the base as a disk image **boots** in QEMU (`w4b test`: `multi-user.target`, no failed
//!   unit, sshd and NetworkManager active);
//! - the north hive (the configuration manager's file, unchanged) builds on it and boots
//!   with its services: sshd, the firewall's ruleset loaded, the node exporter, and the
//!   W4B first boot complete;
//! - `w4b build --check` builds the hive again from nothing — another cache, `TZ`, locale,
//!   umask and `-j` — bootstrap included, and finds every step's output identical.
//!
//! The packages and the roots stay in [`CACHE`] (bounded by `cache.max_size`), so a rerun
//! with unchanged code bootstraps only in `--check`. Without root, qemu-user, QEMU or the
//! mirror the test skips with a message (fails under `CI`).

#![allow(clippy::disallowed_methods)] // runs tar and dpkg as oracles

use std::path::Path;

use crate::env::TestEnv;
use crate::vmtest::{check, have_qemu, vm_lock, w4b_test};

/// The w4b cache the `.deb`s, the bootstrapped root and the images are kept in between runs.
const CACHE: &str = "/tmp/w4b-test-bootstrap-cache";

/// What the north hive's image must show once booted, besides the checks every test runs.
const NORTH_SPEC: &str = r#"{
  "units_active": ["ssh.service", "nftables.service", "prometheus-node-exporter.service", "w4b-firstboot.service"],
  "commands": [
    {"name": "first boot complete", "run": "cat /var/log/w4b/firstboot.log", "stdout_contains": "== w4b first boot complete"},
    {"name": "firewall ruleset", "run": "nft list ruleset", "stdout_contains": "table inet"},
    {"name": "hostname", "run": "hostname", "stdout_contains": "north"}
  ]
}"#;

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
        "kind: image\nbase: //bases:debian-bookworm-arm64\nboard: //boards:pi4\noutput: {compression: zstd, level: 1}\n",
    );
    Some(env)
}

fn sh(cmd: &str) -> String {
    crate::testbase::sh(cmd)
}

/// Boots `image` with `args` and asserts every check passed; returns the report.
fn boots(env: &TestEnv, image: &str, args: &[&str]) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = vec![image];
    all.extend_from_slice(args);
    let (report, out) = w4b_test(env, tmp.path(), &all);
    assert!(
        out.status.success(),
        "{image} failed its boot test:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["passed"], true, "{report:#}");
    report
}

#[test]
fn the_shipped_hive_builds_on_the_bootstrapped_base_boots_and_rebuilds_bit_for_bit() {
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

    // The base boots.
    let disk = env.build(&["//images:base-disk", "--out", "out"]);
    assert!(disk.ok(), "{}", disk.stderr());
    let _lock = vm_lock();
    let report = boots(
        &env,
        "out/base-disk.img.zst",
        &[
            "--unit-active",
            "ssh.service",
            "--unit-active",
            "NetworkManager.service",
        ],
    );
    assert_eq!(check(&report, "unit `ssh.service` active")["passed"], true);

    // The north hive, as the manager wrote it, on the base: it builds and boots with its
    // services.
    let north = env.build(&["//hives:north", "--set", "output.level=1", "--out", "out"]);
    assert!(north.ok(), "{}", north.stderr());
    std::fs::write(env.path("north-test.json"), NORTH_SPEC).unwrap();
    let report = boots(&env, "out/north.img.zst", &["--spec", "north-test.json"]);
    assert_eq!(check(&report, "command `first boot complete`")["passed"], true);
    drop(_lock);

    // From nothing again, elsewhere: every step's output the same, the bootstrap included.
    let again = env.build(&[
        "//hives:north",
        "--set",
        "output.level=1",
        "--out",
        "out",
        "--check",
    ]);
    assert!(again.ok(), "--check: {}", again.stderr());
}
