//! A base bootstrapped from Debian's own packages, through the CLI, against the host's
//! Debian mirror (read from its apt sources, mapped with `mirrors:`): `w4b lock` resolves
//! the essential set plus a minimal bootable set (systemd, the kernel, raspi-firmware,
//! initramfs-tools) with no base, `w4b build` bootstraps the root and writes it as a tar,
//! judged by dpkg itself (`dpkg --root … --audit`, every package `install ok installed`)
//! and by what a booting Pi needs (systemd, kernel and initramfs under `/boot`,
//! `/usr/lib/raspi-firmware`, merged `/usr`, an empty `/etc/machine-id`). The same
//! bootstrap again, forced, with another `TMPDIR`, `TZ`, `LC_ALL` and umask, must give
//! the same root digest.
//!
//! The packages and the first root stay in [`CACHE`] (about 400 MB), so a rerun fetches
//! nothing and only the forced bootstrap runs again. Without root, qemu-user or the mirror
//! the test skips with a message (fails under `CI`).

#![allow(clippy::disallowed_methods)] // runs tar and dpkg as oracles

use std::path::Path;
use std::process::Command;

use crate::env::TestEnv;

/// The w4b cache the bootstrap's `.deb`s and root are kept in between runs.
const CACHE: &str = "/tmp/w4b-test-bootstrap-cache";

const MINIMAL: &str = "\
kind: packages
extends: //packages:debian-bookworm-raspi
packages: [systemd, systemd-sysv, linux-image-arm64, raspi-firmware, initramfs-tools]
";

fn workspace() -> Option<TestEnv> {
    if !crate::install::preconditions() || !crate::oracle::have_all(&["tar", "zstd", "dpkg"]) {
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
    crate::env::copy_dir(&repo.join("defs/packages"), &env.ws.join("defs/packages"));
    crate::env::copy_dir(&repo.join("defs/boards"), &env.ws.join("defs/boards"));
    env.write(
        "w4b.yaml",
        &format!(
            "mirrors:\n  \"http://deb.debian.org/debian/\": [\"{debian}/\"]\n  \"http://deb.debian.org/debian-security/\": [\"{security}/\"]\n"
        ),
    );
    env.write("defs/packages/minimal.yaml", MINIMAL);
    env.write(
        "defs/bases/minimal.yaml",
        "kind: base\narch: arm64\nrelease: bookworm\nbootstrap: {packages: [//packages:minimal]}\n",
    );
    env.write(
        "defs/images/root.yaml",
        "kind: image\nbase: //bases:minimal\nboard: //boards:pi4\noutput: {format: tar, compression: zstd, level: 1}\n",
    );
    Some(env)
}

fn sh(cmd: &str) -> String {
    crate::testbase::sh(cmd)
}

#[test]
#[ignore = "bootstraps a Debian root twice under qemu-user (~50 min on 2 cores): run with `cargo test --test it bootstrap -- --ignored` until it is fast enough for every CI run"]
fn a_minimal_bookworm_is_bootstrapped_from_locked_packages_twice_to_the_same_root() {
    let Some(env) = workspace() else { return };
    let out = env.run(&["lock"]);
    assert!(
        out.status.success(),
        "lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lock = String::from_utf8(env.read("w4b.lock")).unwrap();
    let entry = "//packages:minimal for arm64 bootstrapping //bases:minimal";
    assert!(lock.contains(entry), "{lock}");
    for name in [
        "dpkg",
        "systemd",
        "raspi-firmware",
        "usr-is-merged",
        "initramfs-tools",
    ] {
        assert!(lock.contains(&format!("{{\"name\":\"{name}\",")), "{name} locked");
    }
    assert!(
        !lock.contains("{\"name\":\"usrmerge\","),
        "usr-is-merged, not usrmerge"
    );

    let first = env.build(&["//images:root", "--out", "out"]);
    assert!(first.ok(), "{}", first.stderr());
    let digest = first
        .output("//bases:minimal#bootstrap", "tree")
        .expect("the bootstrap's tree");

    // The root, as the tar image carries it, judged by dpkg.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sh(&format!(
        "tar --zstd -xpf '{}' -C '{}'",
        env.path("out/root.tar.zst").display(),
        root.display()
    ));
    let audit = sh(&format!("dpkg --root='{}' --audit", root.display()));
    assert_eq!(audit.trim(), "", "dpkg --audit");
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    let packages = status.matches("\nStatus: ").count() + usize::from(status.starts_with("Status: "));
    assert!(packages > 100, "{packages} packages");
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
    assert!(root.join("usr/lib/raspi-firmware").is_dir());
    let boot: Vec<String> = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(boot.iter().any(|n| n.starts_with("vmlinuz-")), "{boot:?}");
    assert!(boot.iter().any(|n| n.starts_with("initrd.img-")), "{boot:?}");
    assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
    assert!(!root.join("var/lib/dbus/machine-id").exists());
    assert!(
        std::fs::read_dir(root.join("var/log")).map_or(true, |mut d| d.all(|e| e.unwrap().path().is_dir()))
    );

    // Again from scratch (forced), in another environment: the same root.
    let tmp = tempfile::tempdir().unwrap();
    let w4b = env!("CARGO_BIN_EXE_w4b");
    let second = {
        let mut c = Command::new("sh");
        c.current_dir(&env.ws)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", env.root.path())
            .env("W4B_CACHE_DIR", &env.cache)
            .env("NO_COLOR", "1")
            .env("TMPDIR", tmp.path())
            .env("TZ", "Pacific/Chatham")
            .env("LC_ALL", "C.UTF-8")
            .arg("-c")
            .arg(format!(
                "umask 077; exec '{w4b}' build --force --message-format json //images:root --out out2"
            ));
        c.output().unwrap()
    };
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&second.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let again_digest = crate::env::Build {
        output: second,
        events,
    }
    .output("//bases:minimal#bootstrap", "tree")
    .expect("the second bootstrap's tree");
    assert_eq!(again_digest, digest, "the bootstrap is reproducible");
}
