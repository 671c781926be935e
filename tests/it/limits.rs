//! Values past what the outputs can hold are refused when the graph is planned, naming the
//! range and where the value was written, never wrapped or clamped by a writer.

use std::path::Path;

use crate::env::TestEnv;
use crate::fixture::demo;

/// Plans `label` (`w4b graph`, which downloads nothing): `Ok(())` or the error output
/// without whitespace or margins, since diagnostics are wrapped at 100 columns wherever
/// a line breaks (compare with [`squash`]ed text).
fn plan(env: &TestEnv, label: &str) -> Result<(), String> {
    let out = env.run(&["graph", label]);
    if out.status.success() {
        Ok(())
    } else {
        Err(squash(&String::from_utf8_lossy(&out.stderr)))
    }
}

fn squash(text: &str) -> String {
    // Wrapped lines of the message continue after a `|` (or `│`) margin.
    text.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '|' | '│'))
        .collect()
}

#[test]
fn an_epoch_past_ext4s_range_is_refused_where_it_was_written() {
    let env = demo();
    let image = |epoch: &str| crate::fixture::DEMO.replace("1700000000", epoch);
    // u64::MAX used to read as "has no epoch"; 2446-05-10T22:38:56Z used to wrap to 1902.
    for epoch in ["18446744073709551615", "15032385536"] {
        env.write("defs/images/demo.yaml", &image(epoch));
        let stderr = plan(&env, "//images:demo").expect_err(epoch);
        assert!(stderr.contains("w4b::compile::epoch_out_of_range"), "{stderr}");
        assert!(!stderr.contains("has no epoch"), "{stderr}");
        assert!(
            stderr.contains(&squash(&format!(
                "the epoch of `//images:demo` is out of range: {epoch}, written at `defs/images/demo.yaml:4:8`"
            ))),
            "{stderr}"
        );
        assert!(
            stderr.contains("2446-05-10T22:38:55Z") && stderr.contains("ext4"),
            "{stderr}"
        );
        assert!(stderr.contains("help:"), "{stderr}");
    }
    // The last second ext4 holds is fine for a tar image.
    env.write("defs/images/demo.yaml", &image("15032385535"));
    plan(&env, "//images:demo").unwrap();
    // `--set` is located as such.
    let out = env.run(&["graph", "//images:demo", "--set", "epoch=99999999999"]);
    let stderr = squash(&String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(
        stderr.contains(&squash("written at `--set epoch=99999999999`")),
        "{stderr}"
    );
}

/// A workspace with the repository's boards, a base that is never downloaded (planning
/// needs none) released on `date`, and `//images:disk` on it with `extra` lines.
fn disk_workspace(date: &str, extra: &str) -> TestEnv {
    let env = TestEnv::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate::env::copy_dir(&repo.join("defs/boards"), &env.ws.join("defs/boards"));
    env.write(
        "defs/bases/b.yaml",
        &format!(
            "kind: base\nurl: http://127.0.0.1:9/b.img.xz\nsha256: {}\narch: arm64\nrelease: bookworm\ndate: {date}\n",
            "ab".repeat(32)
        ),
    );
    env.write(
        "defs/images/disk.yaml",
        &format!("kind: image\nboard: //boards:pi4\nbase: //bases:b\n{extra}"),
    );
    env
}

#[test]
fn a_disk_image_needs_an_epoch_its_fat_boot_partition_can_hold() {
    // 2107-12-31T23:59:58Z is FAT's last time; a second later FAT clamped silently.
    let env = disk_workspace("2023-11-14", "epoch: 4354819199\n");
    let stderr = plan(&env, "//images:disk").unwrap_err();
    assert!(stderr.contains("w4b::compile::epoch_out_of_range"), "{stderr}");
    assert!(
        stderr.contains(&squash("4354819199, written at `defs/images/disk.yaml:4:8`")),
        "{stderr}"
    );
    assert!(
        stderr.contains("1980-01-01T00:00:00Z") && stderr.contains("2107-12-31T23:59:58Z"),
        "{stderr}"
    );
    // Before 1980 FAT clamped too.
    let env = disk_workspace("2023-11-14", "epoch: 315532799\n");
    assert!(plan(&env, "//images:disk")
        .unwrap_err()
        .contains("epoch_out_of_range"));
    // In range, and a tar of the same tree (no FAT written) takes ext4's range.
    let env = disk_workspace("2023-11-14", "epoch: 4354819198\n");
    plan(&env, "//images:disk").unwrap();
    let env = disk_workspace("2023-11-14", "epoch: 4354819199\noutput: {format: tar}\n");
    plan(&env, "//images:disk").unwrap();
}

#[test]
fn a_base_release_date_out_of_range_is_refused_naming_the_base() {
    let env = disk_workspace("2200-01-01", "");
    let stderr = plan(&env, "//images:disk").unwrap_err();
    assert!(stderr.contains("w4b::compile::epoch_out_of_range"), "{stderr}");
    assert!(
        stderr.contains(&squash(
            "2200-01-01, the release date of `//bases:b` at `defs/bases/b.yaml:6:7`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("date:"), "{stderr}");
}
