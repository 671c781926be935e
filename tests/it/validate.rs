//! `w4b validate` on the test base (`tests/support/make-test-base.sh`, a
//! Raspberry-Pi-OS-like image made by the standard tools) and on copies of it broken one
//! way each with the same tools (mtools for the FAT side, debugfs for ext4): the base
//! passes, every breakage fails the check that names it, and `--mount` (root) agrees.

#![allow(clippy::disallowed_methods)] // Tests run the image tools and read `CI`.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::env::TestEnv;
use crate::kernel::require_root;
use crate::testbase::images;

const BOOT_OFFSET: u64 = 8192 * 512;
const ROOT_OFFSET: u64 = (8192 + 131_072) * 512;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `w4b validate --format json IMAGE ARGS…`: exit code and report.
fn validate(env: &TestEnv, image: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["validate", "--format", "json", image.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("validate json: {e}; stderr: {}", stderr(&out)));
    assert_eq!(json["schema"], "w4b.validate/1");
    (out.status.code().unwrap_or(-1), json, stderr(&out))
}

/// `(name, file)` of every failed check.
fn failures(report: &Value) -> Vec<(String, Option<String>)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["file"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// A copy of the test base in `env`'s directory.
fn copy_of_base(env: &TestEnv, name: &str) -> Option<PathBuf> {
    let img = images()?;
    let to = env.path(name);
    std::fs::copy(&img.raw, &to).unwrap();
    Some(to)
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

/// Replaces `/name` on the boot partition (mtools), or deletes it with `None`.
fn put_boot_file(img: &Path, name: &str, text: Option<&str>) {
    let fat = format!("{}@@{BOOT_OFFSET}", img.display());
    match text {
        Some(t) => {
            let src = img.with_extension(format!("src-{name}"));
            std::fs::write(&src, t).unwrap();
            sh(Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-o", "-i", &fat])
                .arg(&src)
                .arg(format!("::{name}")));
        }
        None => {
            sh(Command::new("mdel")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-i", &fat, &format!("::{name}")]))
        }
    }
}

/// Replaces `/etc/fstab` on the root partition (debugfs, in place at the offset).
fn put_fstab(img: &Path, text: &str) {
    let src = img.with_extension("fstab");
    std::fs::write(&src, text).unwrap();
    let dev = format!("{}?offset={ROOT_OFFSET}", img.display());
    sh(Command::new("debugfs").args(["-w", "-R", "rm /etc/fstab", &dev]));
    sh(Command::new("debugfs")
        .args(["-w", "-R"])
        .arg(format!("write {} /etc/fstab", src.display()))
        .arg(&dev));
}

#[test]
fn the_test_base_passes_for_every_board() {
    let Some(img) = images() else { return };
    let env = TestEnv::new();
    for board in ["pi3", "pi4", "pi5", "zero2w", "cm4"] {
        for arch in ["arm64", "armhf"] {
            let (code, report, err) = validate(&env, &img.raw, &["--board", board, "--arch", arch]);
            assert_eq!(code, 0, "{board} {arch}: {report:#} {err}");
            assert_eq!(report["passed"], true);
            assert_eq!(report["board"]["name"], board);
        }
    }
    // Compressed, without a board, and in text.
    let out = env.run(&["validate", img.zst.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for rule in [
        "partition_table",
        "boot_fs",
        "root_fs",
        "cmdline",
        "fstab",
        "config_txt",
        "kernel",
        "device_tree",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with("pass") && l.contains(rule)),
            "{rule}: {text}"
        );
    }
    assert!(
        text.ends_with("10 checks: 10 passed, 0 failed, 0 skipped\n"),
        "{text}"
    );
}

#[test]
fn cmdline_root_on_partition_3_fails_the_cmdline_check() {
    let env = TestEnv::new();
    let Some(img) = copy_of_base(&env, "root3.img") else {
        return;
    };
    put_boot_file(
        &img,
        "cmdline.txt",
        Some("console=serial0,115200 console=tty1 root=PARTUUID=1a2b3c4d-03 rootfstype=ext4 rootwait\n"),
    );
    let (code, report, err) = validate(&env, &img, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        failures(&report),
        [("cmdline".into(), Some("bootfs:/cmdline.txt".into()))]
    );
    // The diagnostic names the rule, the file and the fix.
    assert!(err.contains("w4b::validate::cmdline"), "{err}");
    assert!(err.contains("root=PARTUUID=1a2b3c4d-03"), "{err}");
    assert!(err.contains("use `root=PARTUUID=1a2b3c4d-02`"), "{err}");
}

#[test]
fn fstab_naming_a_missing_partuuid_fails_the_fstab_check() {
    let env = TestEnv::new();
    let Some(img) = copy_of_base(&env, "fstab.img") else {
        return;
    };
    put_fstab(
        &img,
        "proc /proc proc defaults 0 0\n\
         PARTUUID=1a2b3c4d-07  /boot/firmware  vfat  defaults  0  2\n\
         PARTUUID=1a2b3c4d-02  /  ext4  defaults,noatime  0  1\n",
    );
    let (code, report, err) = validate(&env, &img, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        failures(&report),
        [("fstab".into(), Some("rootfs:/etc/fstab:2".into()))]
    );
    assert!(err.contains("w4b::validate::fstab"), "{err}");
    assert!(err.contains("PARTUUID=1a2b3c4d-07"), "{err}");
}

#[test]
fn a_missing_pi5_kernel_fails_the_kernel_check() {
    let env = TestEnv::new();
    let Some(img) = copy_of_base(&env, "nokernel.img") else {
        return;
    };
    put_boot_file(&img, "kernel_2712.img", None);
    let (code, report, _) = validate(&env, &img, &["--board", "pi5"]);
    assert_eq!(code, 1);
    assert_eq!(
        failures(&report),
        [("kernel".into(), Some("bootfs:/kernel_2712.img".into()))]
    );
    // A Pi 4 boots kernel8.img, which is still there.
    let (code, _, _) = validate(&env, &img, &["--board", "pi4"]);
    assert_eq!(code, 0);
}

#[test]
fn a_truncated_image_fails_the_partition_table_check() {
    let env = TestEnv::new();
    let Some(img) = copy_of_base(&env, "cut.img") else {
        return;
    };
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(200 << 20).unwrap();
    drop(f);
    let (code, report, err) = validate(&env, &img, &[]);
    assert_eq!(code, 1);
    let names: Vec<String> = failures(&report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("partition_table"),
        "{report:#}"
    );
    assert!(err.contains("w4b::validate::partition_table"), "{err}");
}

#[test]
fn a_corrupt_ext4_superblock_fails_the_root_fs_check() {
    let env = TestEnv::new();
    let Some(img) = copy_of_base(&env, "sb.img") else {
        return;
    };
    let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    // `s_inodes_count`, covered by the superblock checksum; the magic stays.
    f.seek(SeekFrom::Start(ROOT_OFFSET + 1024)).unwrap();
    f.write_all(&[0xff, 0xff, 0xff, 0x7f]).unwrap();
    drop(f);
    let (code, report, _) = validate(&env, &img, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failures(&report),
        [("root_fs".into(), Some("partition 2".into()))]
    );
    // The oracle agrees, when installed.
    if Command::new("e2fsck").arg("-V").output().is_ok() {
        let (_, report, _) = validate(&env, &img, &["--oracles"]);
        let names: Vec<String> = failures(&report).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["root_fs", "oracle_e2fsck"], "{report:#}");
    }
}

#[test]
fn oracles_pass_on_the_test_base() {
    let Some(img) = images() else { return };
    let env = TestEnv::new();
    let (code, report, err) = validate(&env, &img.raw, &["--oracles"]);
    assert_eq!(code, 0, "{report:#} {err}");
    for rule in ["oracle_fsck_fat", "oracle_e2fsck"] {
        let c = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == rule)
            .unwrap_or_else(|| panic!("{rule} missing"));
        if std::env::var_os("CI").is_some() {
            assert_eq!(c["status"], "pass", "{c}");
        } else {
            assert_ne!(c["status"], "fail", "{c}");
        }
    }
}

#[test]
fn mount_agrees_with_our_reader() {
    if !require_root("mount_agrees_with_our_reader") {
        return;
    }
    let Some(img) = images() else { return };
    let env = TestEnv::new();
    // The zstd copy goes through a decompressed temporary file, the raw one in place.
    for path in [&img.raw, &img.zst] {
        let (code, report, err) = validate(&env, path, &["--mount"]);
        assert_eq!(code, 0, "{report:#} {err}");
        let status = |rule: &str| {
            report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == rule)
                .map(|c| c["status"].as_str().unwrap().to_string())
        };
        assert_eq!(status("mount_rootfs").as_deref(), Some("pass"), "{report:#}");
        let vfat = std::fs::read_to_string("/proc/filesystems")
            .unwrap()
            .lines()
            .any(|l| l.split_whitespace().last() == Some("vfat"));
        let want = if vfat { "pass" } else { "skip" };
        assert_eq!(status("mount_bootfs").as_deref(), Some(want), "{report:#}");
    }
    let out = Command::new("losetup").arg("-a").output().unwrap();
    let leftover = String::from_utf8_lossy(&out.stdout);
    assert!(
        !leftover.contains(img.raw.to_str().unwrap()),
        "loop devices left attached: {leftover}"
    );
}

#[test]
fn mount_as_a_normal_user_is_a_clear_error() {
    if crate::kernel::is_root() {
        // Root cannot see this error; the unit tests cover the message.
        return;
    }
    let Some(img) = images() else { return };
    let env = TestEnv::new();
    let out = env.run(&["validate", img.raw.to_str().unwrap(), "--mount"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("w4b::validate::mount_not_root"), "{err}");
    assert!(err.contains("sudo"), "{err}");
}

#[test]
fn unknown_boards_are_usage_errors() {
    let env = TestEnv::new();
    let out = env.run(&["validate", "x.img", "--board", "pi9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pi4"), "{}", stderr(&out));
}
