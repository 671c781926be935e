//! Freshness, in cargo's manner: build; rebuild (nothing runs); change one input (exactly
//! the expected steps run, and `why` names the change).

use serde_json::Value;

use crate::env::tar_listing;
use crate::fixture::{demo, steps, ALL_STEPS};

fn root_changes(why: &Value) -> Vec<(String, String, String)> {
    why["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "root")
        .flat_map(|s| {
            let label = s["label"].as_str().unwrap().to_string();
            s["changes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["component"] != "upstream")
                .map(move |c| {
                    (
                        label.clone(),
                        c["name"].as_str().unwrap().to_string(),
                        c["location"].as_str().unwrap_or("").to_string(),
                    )
                })
        })
        .collect()
}

#[test]
fn first_build_runs_everything_and_writes_the_archive() {
    let env = demo();
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&ALL_STEPS));
    assert_eq!(b.finished()["event"], "finished");
    assert_eq!(b.finished()["steps"], 5);
    assert_eq!(b.finished()["ran"], 5);
    assert_eq!(b.finished()["cached"], 0);
    assert_eq!(b.finished()["failed"], 0);
    let listing = tar_listing(&env.path("out/demo.tar.zst"));
    for needle in [
        "./etc/motd",
        "./opt/app/bin/app",
        "./etc/app.conf",
        "./usr/bin/app-link -> /opt/app/bin/app",
        "./var/lib/app/",
        "./etc/profile",
        "./etc/extra",
    ] {
        assert!(listing.contains(needle), "{needle} missing from\n{listing}");
    }
    assert!(listing.contains("drwxr-x--- 1000/1000"), "{listing}");
    assert!(listing.contains("-rwxr-xr-x 0/0"), "{listing}");
    assert!(!listing.contains("./etc/issue"), "{listing}");
}

#[test]
fn rebuild_runs_nothing() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), Vec::<String>::new());
    assert_eq!(b.cached(), steps(&ALL_STEPS));
    let why = env.why("//images:demo");
    assert_eq!(why["schema"], "w4b.why/1");
    assert_eq!(why["steps"].as_array().unwrap().len(), 0);
}

#[test]
fn human_summary_line() {
    let env = demo();
    let out = env.run(&["build", "//images:demo"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5 steps: 5 ran, 0 cached"), "{err}");
    let out = env.run(&["build", "//images:demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5 steps: 0 ran, 5 cached"), "{err}");
}

/// Builds, applies `change`, rebuilds: returns (steps that ran, why).
fn change(edit: impl FnOnce(&crate::env::TestEnv)) -> (Vec<String>, Value, crate::env::TestEnv) {
    let env = demo();
    let first = env.build(&["//images:demo"]);
    assert!(first.ok(), "{}", first.stderr());
    edit(&env);
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    let why = env.why("//images:demo");
    (b.ran(), why, env)
}

const MOTD_CHAIN: [&str; 3] = ["//images:demo#motd", "//images:demo#rootfs", "//images:demo#tar"];

#[test]
fn inline_content_change() {
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/layers/motd.yaml",
            &crate::fixture::MOTD.replace("hello\\n", "hello world\\n"),
        );
    });
    assert_eq!(ran, steps(&MOTD_CHAIN));
    let roots = root_changes(&why);
    assert_eq!(roots.len(), 1, "{why:#}");
    assert_eq!(roots[0].0, "//images:demo#motd");
    assert_eq!(roots[0].1, "files[0].content");
    assert!(
        roots[0].2.starts_with("defs/layers/motd.yaml:3:"),
        "{}",
        roots[0].2
    );
    let c = &why["steps"][0]["changes"][0];
    assert_eq!(c["old"], "hello\n");
    assert_eq!(c["new"], "hello world\n");
    assert_eq!(why["steps"][1]["status"], "propagated");
    assert_eq!(why["steps"][2]["status"], "propagated");
}

#[test]
fn source_file_change() {
    let (ran, why, _) = change(|e| {
        e.write("defs/layers/files/app/README", "read me twice\n");
    });
    assert_eq!(ran, steps(&MOTD_CHAIN));
    let roots = root_changes(&why);
    assert_eq!(roots.len(), 1, "{why:#}");
    assert_eq!(roots[0].1, "files[1].source");
    assert!(
        roots[0].2.starts_with("defs/layers/motd.yaml:4:"),
        "{}",
        roots[0].2
    );
}

#[test]
fn template_change() {
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/layers/files/app.conf.j2",
            "greeting={{ config.greeting }}!\n",
        );
    });
    assert_eq!(ran, steps(&MOTD_CHAIN));
    assert_eq!(root_changes(&why)[0].1, "files[2].template");
}

#[test]
fn template_config_change() {
    let (ran, why, env) = change(|e| {
        e.write(
            "defs/images/demo.yaml",
            &crate::fixture::DEMO.replace("greeting: hi", "greeting: ho"),
        );
    });
    assert_eq!(ran, steps(&MOTD_CHAIN));
    let roots = root_changes(&why);
    assert_eq!(roots[0].1, "config.greeting");
    assert!(tar_listing(&env.path("out/demo.tar.zst")).contains("./etc/app.conf"));
}

#[test]
fn mode_change() {
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/layers/motd.yaml",
            &crate::fixture::MOTD.replace("mode: \"0750\"", "mode: \"0700\""),
        );
    });
    assert_eq!(ran, steps(&MOTD_CHAIN));
    let roots = root_changes(&why);
    assert_eq!(roots[0].1, "files[4].mode");
    assert!(
        roots[0].2.starts_with("defs/layers/motd.yaml:7:"),
        "{}",
        roots[0].2
    );
}

#[test]
fn layer_order_change() {
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/images/demo.yaml",
            &crate::fixture::DEMO.replace(
                "[//layers:motd, //layers:extra]",
                "[//layers:extra, //layers:motd]",
            ),
        );
    });
    // The two layers touch disjoint paths: the reordered overlay gives the same tree, so
    // the archive is cut off.
    assert_eq!(ran, steps(&["//images:demo#rootfs"]));
    let roots = root_changes(&why);
    assert_eq!(roots[0].0, "//images:demo#rootfs");
    assert_eq!(roots[0].1, "layers");
    assert!(
        roots[0].2.starts_with("defs/images/demo.yaml:3:"),
        "{}",
        roots[0].2
    );
    assert_eq!(why["steps"][0]["output_changed"], false);
    assert_eq!(why["steps"][1]["label"], "//images:demo#tar");
    assert_eq!(why["steps"][1]["status"], "cutoff");
}

#[test]
fn layer_order_change_with_overlapping_layers() {
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/layers/extra.yaml",
            "kind: layer\nfiles:\n  - {path: /etc/motd, content: \"extra\\n\"}\n",
        );
        e.write(
            "defs/images/demo.yaml",
            &crate::fixture::DEMO.replace(
                "[//layers:motd, //layers:extra]",
                "[//layers:extra, //layers:motd]",
            ),
        );
    });
    assert!(ran.contains(&"//images:demo#tar".to_string()), "{ran:?}");
    assert!(root_changes(&why)
        .iter()
        .any(|r| r.0 == "//images:demo#rootfs" && r.1 == "layers"));
}

#[test]
fn epoch_change() {
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/images/demo.yaml",
            &crate::fixture::DEMO.replace("1700000000", "1700000001"),
        );
    });
    // Every step sees the epoch (mtimes of what it writes).
    assert_eq!(ran, steps(&ALL_STEPS));
    let roots = root_changes(&why);
    assert!(roots.iter().all(|r| r.1 == "epoch"), "{roots:?}");
    assert!(
        roots.iter().all(|r| r.2.starts_with("defs/images/demo.yaml:4:")),
        "{roots:?}"
    );
}

#[test]
fn extends_parent_change() {
    let env = demo();
    env.write(
        "defs/images/parent.yaml",
        "kind: image\nbase: scratch\noutput: {format: tar, level: 3}\n",
    );
    env.write(
        "defs/images/demo.yaml",
        &format!(
            "extends: //images:parent\n{}",
            crate::fixture::DEMO.replace("output: {format: tar}\n", "")
        ),
    );
    assert!(env.build(&["//images:demo"]).ok());
    env.write(
        "defs/images/parent.yaml",
        "kind: image\nbase: scratch\noutput: {format: tar, level: 5}\n",
    );
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&["//images:demo#tar"]));
    let why = env.why("//images:demo");
    let roots = root_changes(&why);
    assert_eq!(roots[0].1, "output.level");
    assert!(
        roots[0].2.starts_with("defs/images/parent.yaml:3:"),
        "{}",
        roots[0].2
    );
}

#[test]
fn comments_and_key_order_change_nothing() {
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/images/demo.yaml",
            "# a comment\nconfig: {greeting: hi}   # trailing\noutput:\n  format: tar\nepoch: 1700000000\n\nlayers:\n  - //layers:motd\n  - //layers:extra\nbase: scratch\nkind: image\n",
        );
        e.write(
            "defs/layers/motd.yaml",
            &crate::fixture::MOTD.replace(
                "{path: /etc/motd, content: \"hello\\n\", mode: \"0644\"}",
                "{mode: \"644\", content: \"hello\\n\", path: /etc/motd}   # moved",
            ),
        );
    });
    assert_eq!(ran, Vec::<String>::new());
    assert_eq!(why["steps"].as_array().unwrap().len(), 0);
}

#[test]
fn identical_upstream_output_cuts_off() {
    // A template edit that renders the same bytes re-runs the layer only.
    let (ran, why, _) = change(|e| {
        e.write(
            "defs/layers/files/app.conf.j2",
            "greeting={{ config.greeting | trim }}\n",
        );
    });
    assert_eq!(ran, steps(&["//images:demo#motd"]));
    let motd = why["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "//images:demo#motd")
        .unwrap();
    assert_eq!(motd["status"], "root");
    assert_eq!(motd["output_changed"], false);
    let rootfs = why["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "//images:demo#rootfs")
        .unwrap();
    assert_eq!(rootfs["status"], "cutoff");
    assert_eq!(why["summary"]["cutoff"], 1);
}

#[test]
fn set_and_env_overrides_are_keyed_and_located() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let b = env.build(&["//images:demo", "--set", "output.level=4"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&["//images:demo#tar"]));
    let why = env.why("//images:demo");
    let roots = root_changes(&why);
    assert_eq!(roots[0].1, "output.level");
    assert!(roots[0].2.contains("--set"), "{}", roots[0].2);
}

#[test]
fn why_text_names_the_change() {
    let (_, _, env) = change(|e| {
        e.write(
            "defs/layers/motd.yaml",
            &crate::fixture::MOTD.replace("hello\\n", "bonjour\\n"),
        );
    });
    let out = env.run(&["why", "//images:demo"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("root cause  //images:demo#motd"), "{text}");
    assert!(
        text.contains("files[0].content: `hello\\n` → `bonjour\\n`"),
        "{text}"
    );
    assert!(text.contains("at defs/layers/motd.yaml:3:"), "{text}");
    assert!(text.contains("//images:demo#tar"), "{text}");
}

#[test]
fn shared_layer_runs_once_across_images() {
    let env = demo();
    env.write(
        "defs/images/other.yaml",
        &crate::fixture::DEMO.replace(
            "layers: [//layers:motd, //layers:extra]",
            "layers: [//layers:extra]",
        ),
    );
    let b = env.build(&["//images/..."]);
    assert!(b.ok(), "{}", b.stderr());
    // `extra` renders the same in both images: one step, named after the first image.
    let extra: Vec<_> = b.ran().into_iter().filter(|s| s.ends_with("#extra")).collect();
    assert_eq!(extra, vec!["//images:demo#extra".to_string()]);
    assert!(env.path("out/demo.tar.zst").exists());
    assert!(env.path("out/other.tar.zst").exists());
}

#[test]
fn symlinked_source_is_keyed_on_what_it_points_to() {
    // Regression: the source digest hashed the link's target string, not the content,
    // so editing the linked files was a wrong cache hit.
    let env = demo();
    env.write("defs/layers/files/v1/a.txt", "one\n");
    env.write("defs/layers/files/real.txt", "hello\n");
    std::os::unix::fs::symlink("v1", env.path("defs/layers/files/current")).unwrap();
    std::os::unix::fs::symlink("real.txt", env.path("defs/layers/files/link.txt")).unwrap();
    env.write(
        "defs/layers/extra.yaml",
        "kind: layer\nfiles:\n  - {path: /opt/cur, source: files/current}\n  - {path: /opt/link.txt, source: files/link.txt}\n",
    );
    assert!(env.build(&["//images:demo"]).ok());
    env.write("defs/layers/files/v1/a.txt", "two\n");
    let b = env.build(&["//images:demo"]);
    assert!(
        b.ran().contains(&"//images:demo#extra".to_string()),
        "{:?}",
        b.ran()
    );
    env.write("defs/layers/files/real.txt", "bye\n");
    let b = env.build(&["//images:demo"]);
    assert!(
        b.ran().contains(&"//images:demo#extra".to_string()),
        "{:?}",
        b.ran()
    );
}

#[test]
fn a_missing_source_names_the_definition() {
    let env = demo();
    std::fs::remove_file(env.path("defs/layers/files/app.conf.j2")).unwrap();
    let out = env.run(&["build", "//images:demo"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("defs/layers/files/app.conf.j2"), "{err}");
    assert!(err.contains("defs/layers/motd.yaml:5:"), "{err}");
}

#[test]
fn why_points_at_where_a_value_is_now() {
    // Regression: the location came from the record of the first build with that key,
    // so after lines moved `why` pointed at the old line.
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let motd = crate::fixture::MOTD;
    env.write(
        "defs/layers/motd.yaml",
        &motd.replace("mode: \"0750\"", "mode: \"0700\""),
    );
    assert!(env.build(&["//images:demo"]).ok());
    env.write("defs/layers/motd.yaml", &format!("# one\n# two\n# three\n{motd}"));
    let b = env.build(&["//images:demo"]);
    assert!(b.ok());
    assert_eq!(b.ran(), Vec::<String>::new(), "the 0750 results are still cached");
    let roots = root_changes(&env.why("//images:demo"));
    assert_eq!(roots[0].1, "files[4].mode");
    assert!(
        roots[0].2.starts_with("defs/layers/motd.yaml:10:"),
        "{}",
        roots[0].2
    );
}

#[test]
fn history_does_not_depend_on_what_else_was_built() {
    // Regression: a step shared with another target was recorded under the other
    // target's name when both were built together.
    let env = demo();
    env.write("defs/images/alpha.yaml", "extends: //images:demo\n");
    assert!(env.build(&["//images:demo"]).ok());
    assert!(env.build(&["//images/..."]).ok());
    let why = env.why("//images:demo");
    assert_eq!(why["steps"].as_array().unwrap().len(), 0, "{why:#}");
}

/// The cache of parsed definitions (`src/defs/parse_cache.rs`) only trusts files old enough
/// to be outside the racy window, so the other tests here, which edit files seconds apart,
/// never hit it. This one ages every definition first: the second build must take them all
/// from the cache (the cache file is left as it is), and an edit that keeps the size and
/// the mtime (only the ctime tells), a changed environment variable and a new `--set` must
/// all still be seen.
#[test]
fn cached_definitions_still_see_edits_env_and_set() {
    use std::time::{Duration, SystemTime};
    let mut env = demo();
    env.write(
        "defs/layers/extra.yaml",
        &crate::fixture::EXTRA.replace("x\\n", "${GREETING:-x}\\n"),
    );
    let age = |env: &crate::env::TestEnv, rel: &str| {
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(env.path(rel))
            .unwrap()
            .set_modified(old)
            .unwrap();
    };
    for rel in [
        "defs/layers/motd.yaml",
        "defs/layers/extra.yaml",
        "defs/images/demo.yaml",
    ] {
        age(&env, rel);
    }
    assert!(env.build(&["//images:demo"]).ok());
    let cache_file = env.cache.join("v1/meta/defs-parse");
    let saved = std::fs::read(&cache_file).expect("the build saved its parses");
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(b.ran().is_empty(), "{:?}", b.ran());
    assert_eq!(std::fs::read(&cache_file).unwrap(), saved, "every file was a hit");

    // Same size, same mtime: only the ctime differs.
    env.write(
        "defs/layers/motd.yaml",
        &crate::fixture::MOTD.replace("hello", "HELLO"),
    );
    age(&env, "defs/layers/motd.yaml");
    let b = env.build(&["//images:demo"]);
    assert_eq!(b.ran(), steps(&MOTD_CHAIN), "{}", b.stderr());
    let why = env.why("//images:demo");
    assert_eq!(root_changes(&why)[0].1, "files[0].content");

    env.extra_env.insert("GREETING".into(), "bonjour".into());
    let b = env.build(&["//images:demo"]);
    assert_eq!(
        b.ran(),
        steps(&["//images:demo#extra", "//images:demo#rootfs", "//images:demo#tar"]),
        "{}",
        b.stderr()
    );

    let b = env.build(&["//images:demo", "--set", "output.level=4"]);
    assert_eq!(b.ran(), steps(&["//images:demo#tar"]), "{}", b.stderr());
}
