//! The command line as a user meets it: `ls`, `graph`, downloads, errors and exit codes.

use crate::http;

use sha2::Digest as _;

use crate::env::{tar_listing, TestEnv};
use crate::fixture::{demo, steps};

#[test]
fn ls_lists_targets_with_kinds() {
    let env = demo();
    let out = env.run(&["ls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("//images:demo") && lines[0].ends_with("image"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("//layers:extra") && lines[1].ends_with("layer"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("//layers:motd") && lines[2].ends_with("layer"),
        "{text}"
    );
    let out = env.run(&["ls", "//layers/..."]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn graph_formats() {
    let env = demo();
    let dot = env.run(&["graph", "//images:demo"]);
    assert!(dot.status.success(), "{}", String::from_utf8_lossy(&dot.stderr));
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph w4b {"), "{dot}");
    assert!(dot.contains("//images:demo#rootfs"), "{dot}");
    let mermaid = env.run(&["graph", "//images:demo", "--format", "mermaid"]);
    assert!(String::from_utf8_lossy(&mermaid.stdout).starts_with("flowchart LR"));
    let json = env.run(&["graph", "//images:demo", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["schema"], "w4b.graph/1");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 5);
    // rootfs has three inputs: base, motd, extra.
    let rootfs = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n["name"] == "//images:demo#rootfs")
        .unwrap();
    let inputs = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["to"] == rootfs)
        .count();
    assert_eq!(inputs, 3);
}

#[test]
fn workspace_is_found_from_a_subdirectory_and_relative_labels_work() {
    let env = demo();
    let out = env
        .command()
        .current_dir(env.path("defs/images"))
        .args(["build", ":demo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(env.path("out/demo.tar.zst").exists());
}

#[test]
fn unknown_key_is_a_located_diagnostic_with_a_suggestion() {
    let env = demo();
    env.write(
        "defs/layers/motd.yaml",
        &crate::fixture::MOTD.replace("mode: \"0644\"", "mdoe: \"0644\""),
    );
    let out = env.run(&["build", "//images:demo"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mdoe"), "{err}");
    assert!(err.contains("defs/layers/motd.yaml:3"), "{err}");
    assert!(err.contains("mode"), "{err}");
}

#[test]
fn bad_arguments_exit_2() {
    let env = demo();
    let out = env.run(&["build"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_target_is_an_error() {
    let env = demo();
    let out = env.run(&["build", "//images:nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("//images:nope"), "{err}");
}

#[test]
fn path_escape_in_a_layer_is_rejected_and_nothing_is_lost() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let good = env.read("out/demo.tar.zst");
    env.write(
        "defs/layers/extra.yaml",
        "kind: layer\nfiles:\n  - {path: /etc/../../x, content: \"x\"}\n",
    );
    let out = env.run(&["build", "//images:demo"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("defs/layers/extra.yaml:3"), "{err}");
    assert_eq!(
        env.read("out/demo.tar.zst"),
        good,
        "earlier output must stay intact"
    );
}

fn fetch_env(server: &http::TestServer, sha: &str) -> TestEnv {
    let env = TestEnv::new();
    env.write(
        "defs/layers/dl.yaml",
        &format!(
            "kind: layer\nfiles:\n  - {{path: /opt/blob.bin, fetch: {{url: \"{}\", sha256: \"{sha}\"}}}}\n",
            server.url("/blob.bin")
        ),
    );
    env.write(
        "defs/images/dl.yaml",
        "kind: image\nbase: scratch\nlayers: [//layers:dl]\nepoch: 1700000000\noutput: {format: tar}\n",
    );
    env
}

#[test]
fn fetch_downloads_verifies_and_is_keyed_by_digest() {
    let server = http::TestServer::start();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    server.serve("/blob.bin", body.clone());
    let sha = hex::encode(sha2::Sha256::digest(&body));
    let env = fetch_env(&server, &sha);
    let b = env.build(&["//images:dl"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(b.ran().iter().any(|s| s.contains("fetch")), "{:?}", b.ran());
    assert!(tar_listing(&env.path("out/dl.tar.zst")).contains("200000"));
    // Moving the file to another URL changes no key.
    server.serve("/moved.bin", body.clone());
    let yaml = String::from_utf8(env.read("defs/layers/dl.yaml"))
        .unwrap()
        .replace("/blob.bin\"", "/moved.bin\"");
    env.write("defs/layers/dl.yaml", &yaml);
    let b = env.build(&["//images:dl"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&[]));
}

#[test]
fn wrong_digest_fails_and_caches_nothing() {
    let server = http::TestServer::start();
    server.serve("/blob.bin", b"not what you expected".to_vec());
    let env = fetch_env(&server, &"0".repeat(64));
    let b = env.build(&["//images:dl"]);
    assert!(!b.ok());
    assert_eq!(b.output.status.code(), Some(1));
    let err = b.stderr();
    assert!(err.contains("sha256"), "{err}");
    assert_eq!(b.finished()["failed"], 1);
    // Nothing was recorded for the fetch: the next build tries again.
    let b = env.build(&["//images:dl"]);
    assert!(!b.ok());
    assert!(b
        .events
        .iter()
        .any(|e| e["event"] == "step-started" && e["kind"] == "fetch"));
}

#[test]
fn completions_are_generated_for_every_shell_and_name_every_subcommand() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env.run(&["completions", shell]);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["build", "verify", "completions", "remote-cache"] {
            assert!(script.contains(word), "{shell} completions lack `{word}`");
        }
    }
    // bash itself parses the bash script.
    if crate::oracle::have("bash") {
        let script = env.path("w4b.bash");
        std::fs::write(&script, env.run(&["completions", "bash"]).stdout).unwrap();
        #[allow(clippy::disallowed_methods)] // bash is the oracle
        let status = std::process::Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success(), "bash -n rejects the completion script");
    }
    let out = env.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn man_prints_a_page_and_writes_one_per_subcommand() {
    let env = TestEnv::new();
    let out = env.run(&["man"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH w4b 1"), "{page}");
    for word in ["build", "verify", "completions"] {
        assert!(page.contains(word), "the page lacks `{word}`");
    }
    let out = env.run(&["man", "--dir", "man"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["w4b.1", "w4b-build.1", "w4b-verify.1", "w4b-hive-validate.1"] {
        let text = String::from_utf8(env.read(&format!("man/{page}"))).unwrap();
        assert!(text.starts_with(".ie"), "{page}: {text}");
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let env = TestEnv::new();
    let out = env.run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected_start = format!("w4b {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected_start) && text.ends_with(')'), "{text}");
    // Built from this checkout (CI builds a fresh clone): the commit is git's.
    #[allow(clippy::disallowed_methods)] // git is the oracle for the commit
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success());
    match head {
        Some(head) => {
            let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
            assert!(text.contains(&format!("({head}")), "{text} does not name {head}");
        }
        None => assert!(text.ends_with("(unknown commit)"), "{text}"),
    }
    // Subcommands report the same version.
    let sub = env.run(&["build", "--version"]);
    assert_eq!(
        String::from_utf8_lossy(&sub.stdout).trim(),
        text.replace("w4b ", "w4b-build ")
    );
}
