//! `why` inside tree-valued inputs, in the manner of the freshness tests: build, change one
//! file inside a `source:` directory or a fetched archive (edit, add, remove), rebuild,
//! and `why` names exactly that file with its old and new digests, in text and JSON. The
//! old side comes from the cache: by then the file on disk is gone or different.

#![allow(clippy::disallowed_methods)] // Tests run the binary.

use serde_json::{json, Value};

use crate::env::TestEnv;
use crate::fixture::{demo, steps};
use crate::http::TestServer;

/// BLAKE3 of `text`, as `why` shows a file's content.
fn digest(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// The `paths` of the change `name` of step `label`.
fn paths(why: &Value, label: &str, name: &str) -> Value {
    let step = why["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == label)
        .unwrap_or_else(|| panic!("no step {label} in {why:#}"));
    let change = step["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no change {name} in {step:#}"));
    change["paths"].clone()
}

fn why_text(env: &TestEnv, label: &str) -> String {
    let out = env.run(&["why", label]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rebuild(env: &TestEnv, label: &str) -> Vec<String> {
    let b = env.build(&[label]);
    assert!(b.ok(), "{}", b.stderr());
    b.ran()
}

#[test]
fn a_file_edited_added_or_removed_inside_a_source_directory_is_named() {
    let env = demo();
    let label = "//images:demo";
    let motd = "//images:demo#motd";
    rebuild(&env, label);

    // `files[1].source` is `files/app`: `bin/app` and `README`.
    env.write("defs/layers/files/app/README", "read me twice\n");
    assert_eq!(
        rebuild(&env, label),
        steps(&[motd, "//images:demo#rootfs", "//images:demo#tar"])
    );
    let (old, new) = (digest("read me\n"), digest("read me twice\n"));
    assert_eq!(
        paths(&env.why(label), motd, "files[1].source"),
        json!([{"path": "README", "change": "changed", "old": old, "new": new}])
    );
    let text = why_text(&env, label);
    assert!(text.contains("    at defs/layers/motd.yaml:4:"), "{text}");
    assert!(
        text.contains(&format!("    changed  README: {} → {}\n", &old[..12], &new[..12])),
        "{text}"
    );

    env.write("defs/layers/files/app/doc/new.txt", "new\n");
    rebuild(&env, label);
    assert_eq!(
        paths(&env.why(label), motd, "files[1].source"),
        json!([
            {"path": "doc", "change": "added", "old": null, "new": "dir"},
            {"path": "doc/new.txt", "change": "added", "old": null, "new": digest("new\n")},
        ])
    );
    let text = why_text(&env, label);
    assert!(
        text.contains(&format!(
            "    added    doc/new.txt: (absent) → {}\n",
            &digest("new\n")[..12]
        )),
        "{text}"
    );

    std::fs::remove_file(env.path("defs/layers/files/app/README")).unwrap();
    rebuild(&env, label);
    assert_eq!(
        paths(&env.why(label), motd, "files[1].source"),
        json!([{"path": "README", "change": "removed", "old": new, "new": null}])
    );
    let text = why_text(&env, label);
    assert!(
        text.contains(&format!("    removed  README: {} → (absent)\n", &new[..12])),
        "{text}"
    );
}

#[test]
fn only_the_executable_bit_changed_is_named_with_its_modes() {
    use std::os::unix::fs::PermissionsExt;
    let env = demo();
    rebuild(&env, "//images:demo");
    let app = env.path("defs/layers/files/app/bin/app");
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o644)).unwrap();
    rebuild(&env, "//images:demo");
    let same = digest("#!/bin/sh\necho app\n");
    assert_eq!(
        paths(&env.why("//images:demo"), "//images:demo#motd", "files[1].source"),
        json!([{"path": "bin/app", "change": "changed", "old": same, "new": same,
                "old_mode": "0755", "new_mode": "0644"}])
    );
}

/// A release tarball (`sm-1.0/…`, gzip) of `files`.
fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("sm-1.0/{path}"), text.as_bytes())
            .unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_file_changed_inside_a_fetched_archive_is_named() {
    let server = TestServer::start();
    let Some(env) = crate::testbase::workspace_with_served_base(&server) else {
        return;
    };
    const HIVE: &str = "hive_LanX0001";
    let label = format!("//hives:{HIVE}");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let hive = std::fs::read_to_string(repo.join(format!("tests/hives/{HIVE}.yaml"))).unwrap();
    env.write(&format!("defs/hives/{HIVE}.yaml"), &hive);
    env.write("w4b.yaml", "hives: {image: //images:edge}\n");
    crate::testbase::stand_in_module_packages(&env);
    let publish = |files: &[(&str, &str)]| {
        let bytes = tarball(files);
        let sha = sha256(&bytes);
        server.serve("/sm.tar.gz", bytes);
        env.write(
            "defs/images/edge.yaml",
            &format!(
                "kind: image\nboard: //boards:pi4\nbase: //bases:test\nlayers: [//layers:packaged-units]\noutput: {{compression: zstd, level: 1}}\nservices:\n  sensor_manager:\n    source: {{url: {}, sha256: {sha}}}\n",
                server.url("/sm.tar.gz")
            ),
        );
    };
    let main_v1 = "print('w4b sensor manager 1.0')\n";
    let main_v2 = "print('w4b sensor manager 1.1')\n";
    publish(&[
        ("README", "read me\n"),
        ("sensor_manager/__main__.py", main_v1),
        ("sensor_manager/sensors.py", "SENSORS = []\n"),
    ]);
    rebuild(&env, &label);
    publish(&[
        ("NEWS", "1.1: louder\n"),
        ("sensor_manager/__main__.py", main_v2),
        ("sensor_manager/sensors.py", "SENSORS = []\n"),
    ]);
    let ran = rebuild(&env, &label);
    let step = format!("{label}#sensor-manager");
    assert!(ran.contains(&step), "{ran:?}");

    let why = env.why(&label);
    assert_eq!(
        paths(&why, &step, "in0.file"),
        json!([
            {"path": "NEWS", "change": "added", "old": null, "new": digest("1.1: louder\n")},
            {"path": "README", "change": "removed", "old": digest("read me\n"), "new": null},
            {"path": "sensor_manager/__main__.py", "change": "changed",
             "old": digest(main_v1), "new": digest(main_v2)},
        ])
    );
    let text = why_text(&env, &label);
    for line in [
        format!("  {step} ← {label}#fetch:sensor-manager\n    inside in0.file:\n"),
        format!(
            "      added    NEWS: (absent) → {}\n",
            &digest("1.1: louder\n")[..12]
        ),
        format!(
            "      removed  README: {} → (absent)\n",
            &digest("read me\n")[..12]
        ),
        format!(
            "      changed  sensor_manager/__main__.py: {} → {}\n",
            &digest(main_v1)[..12],
            &digest(main_v2)[..12]
        ),
    ] {
        assert!(text.contains(&line), "{line:?} missing from\n{text}");
    }
}
