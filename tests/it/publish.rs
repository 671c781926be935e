//! `w4b publish` and fleet builds through the real binary: a hive image and a plain image
//! on the Raspberry-Pi-OS-like test base, published to a directory and to an HTTP server
//! on 127.0.0.1 that takes `PUT`; the Raspberry Pi Imager index judged field by field
//! against the files (`sha256sum` of the image and of what it decompresses to); a second
//! publish sends nothing. And `w4b build --keep-going` over two targets, one broken.

#![allow(clippy::disallowed_methods)] // Tests run the image tools and the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::env::TestEnv;
use crate::http::TestServer;
use crate::testbase::sh;

const HIVE: &str = "hive_LanX0001";
/// The second fixture hive, for the fleet.
const WIFI: &str = "hive_AbCd1234";

/// The test base's workspace with `//images:edge` (pi4, zstd level 3) and the fixture hive
/// `hive_LanX0001` built on it.
fn workspace(server: &TestServer) -> Option<TestEnv> {
    let env = crate::testbase::workspace_with_served_base(server)?;
    env.write("w4b.yaml", "hives: {image: //images:edge}\n");
    crate::testbase::stand_in_module_packages(&env);
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nboard: //boards:pi4\nbase: //bases:test\nlayers: [//layers:packaged-units]\noutput: {compression: zstd, level: 3}\n",
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for id in [HIVE, WIFI] {
        let text = std::fs::read_to_string(repo.join(format!("tests/hives/{id}.yaml"))).unwrap();
        env.write(&format!("defs/hives/{id}.yaml"), &text);
    }
    Some(env)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sha256_file(p: &Path) -> String {
    sh(&format!("sha256sum '{}'", p.display()))[..64].to_owned()
}

/// Every field Raspberry Pi Imager reads to list, download and verify an image, checked
/// against the published files below `root`, where `url` maps to a path.
fn check_entry(entry: &serde_json::Value, root: &Path, url_to_rel: impl Fn(&str) -> String, tmp: &Path) {
    let url = entry["url"].as_str().expect("url");
    let file = root.join(url_to_rel(url));
    assert!(file.is_file(), "{url} → {}", file.display());
    assert!(entry["name"].as_str().is_some_and(|n| !n.is_empty()), "{entry}");
    assert!(
        entry["description"].as_str().is_some_and(|n| !n.is_empty()),
        "{entry}"
    );
    assert_eq!(
        entry["image_download_size"],
        std::fs::metadata(&file).unwrap().len()
    );
    assert_eq!(entry["image_download_sha256"], sha256_file(&file));
    let raw = tmp.join("extracted.img");
    sh(&format!(
        "zstd -q -d -f -o '{}' '{}'",
        raw.display(),
        file.display()
    ));
    assert_eq!(entry["extract_size"], std::fs::metadata(&raw).unwrap().len());
    assert_eq!(entry["extract_sha256"], sha256_file(&raw));
    std::fs::remove_file(&raw).unwrap();
    let date = entry["release_date"].as_str().expect("release_date");
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "{date}"
    );
    assert_eq!(entry["devices"], serde_json::json!(["pi4-64bit"]));
    // Imager would offer to customise a hive image over its own settings.
    assert!(entry.get("init_format").is_none(), "{entry}");
}

#[test]
fn a_fleet_published_to_a_directory_has_checksums_metadata_latest_and_an_imager_index() {
    let server = TestServer::start();
    let Some(env) = workspace(&server) else {
        return;
    };
    let site = env.root.path().join("site");
    let base = "https://images.example.org/w4b";
    let publish = || {
        env.run(&[
            "publish",
            "//hives/...",
            "--to",
            site.to_str().unwrap(),
            "--base-url",
            base,
        ])
    };
    let out = publish();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // One graph: the steps the hives share ran once.
    for step in ["//bases:test#fetch", "//bases:test#unpack"] {
        let lines = err
            .lines()
            .filter(|l| l.starts_with("ran ") && l.contains(step))
            .count();
        assert_eq!(lines, 1, "{step}: {err}");
    }
    // The fleet's summary table.
    for id in [HIVE, WIFI] {
        let row = row_of(&err, &format!("//hives:{id}"));
        assert_eq!(row[1..3], ["ok".to_owned(), format!("out/{id}.img.zst")], "{err}");
    }
    assert!(err.contains("2 of 2 targets built"), "{err}");
    // The epoch of the test base is its `date: 2023-11-14`.
    let stem = format!("{HIVE}/{HIVE}-1.0.0-2023-11-14");
    let url = format!("{base}/{stem}.img.zst");
    let printed = stdout(&out);
    let urls: Vec<&str> = printed.lines().collect();
    assert_eq!(
        urls,
        [
            format!("{base}/{WIFI}/{WIFI}-1.0.0-2023-11-14.img.zst"),
            url.clone()
        ],
        "the download URLs on stdout"
    );
    for f in [".img.zst", ".img.zst.sha256", ".bmap", ".manifest.json", ".json"] {
        assert!(site.join(format!("{stem}{f}")).is_file(), "{stem}{f} missing");
    }
    sh(&format!(
        "cd '{}' && sha256sum -c {HIVE}-1.0.0-2023-11-14.img.zst.sha256",
        site.join(HIVE).display()
    ));

    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join(format!("{stem}.json"))).unwrap()).unwrap();
    assert_eq!(meta["hive_id"], HIVE);
    assert_eq!(meta["hive_version"], "1.0.0");
    assert_eq!(meta["board"], "//boards:pi4");
    assert_eq!(meta["base"], "//bases:test");
    assert_eq!(meta["build_date"], "2023-11-14T00:00:00Z");
    assert_eq!(meta["image"]["url"], url);
    assert_eq!(
        meta["image"]["sha256"],
        sha256_file(&site.join(format!("{stem}.img.zst")))
    );
    assert_eq!(
        meta["manifest"]["sha256"],
        sha256_file(&site.join(format!("{stem}.manifest.json")))
    );
    assert_eq!(meta["manifest"]["subject"], format!("{HIVE}.img.zst"));
    assert_eq!(meta["w4b_version"], env!("CARGO_PKG_VERSION"));
    let latest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join(HIVE).join("latest.json")).unwrap()).unwrap();
    assert_eq!(latest["image"], format!("{stem}.img.zst"));
    assert_eq!(latest["url"], url);

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("os_list.json")).unwrap()).unwrap();
    let list = index["os_list"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{index}");
    let prefix = format!("{base}/");
    for entry in list {
        check_entry(
            entry,
            &site,
            |u| u.strip_prefix(&prefix).unwrap().to_owned(),
            env.root.path(),
        );
    }
    let ours = list.iter().find(|e| e["url"] == url).expect("the hive's entry");
    assert_eq!(ours["extract_sha256"], meta["extracted"]["sha256"]);

    // Again: nothing is built, nothing written.
    let mtimes = |dir: &Path| -> BTreeMap<String, std::time::SystemTime> {
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                    m.insert(
                        f.path().display().to_string(),
                        f.metadata().unwrap().modified().unwrap(),
                    );
                }
            } else {
                m.insert(
                    e.path().display().to_string(),
                    e.metadata().unwrap().modified().unwrap(),
                );
            }
        }
        m
    };
    let before = mtimes(&site);
    let again = publish();
    let err = stderr(&again);
    assert!(again.status.success(), "{err}");
    assert_eq!(err.matches("already there, nothing sent").count(), 2, "{err}");
    assert_eq!(mtimes(&site), before, "a second publish rewrote files");
    // One hive of the fleet alone: nothing is sent again, its manifest included — a hive's
    // manifest names the steps it shares with the fleet as it names them alone.
    let one = env.run(&[
        "publish",
        &format!("//hives:{HIVE}"),
        "--to",
        site.to_str().unwrap(),
        "--base-url",
        base,
    ]);
    let err = stderr(&one);
    assert!(one.status.success(), "{err}");
    let after = mtimes(&site);
    let changed: Vec<&String> = after.keys().filter(|k| after.get(*k) != before.get(*k)).collect();
    assert_eq!(changed, Vec::<&String>::new(), "{err}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("os_list.json")).unwrap()).unwrap();
    assert_eq!(index["os_list"].as_array().unwrap().len(), 2, "{index}");
}

/// A server on 127.0.0.1 that keeps what is `PUT` and answers `GET` and `HEAD` from it,
/// counting the `PUT`s.
struct PutServer {
    url: String,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    puts: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PutServer {
    fn start() -> PutServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}/releases", server.server_addr().to_ip().unwrap());
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let puts: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, f, p) = (server.clone(), files.clone(), puts.clone());
        let thread = std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let path = req.url().to_owned();
                let resp = match req.method() {
                    tiny_http::Method::Put => {
                        let mut body = Vec::new();
                        req.as_reader().read_to_end(&mut body).unwrap();
                        f.lock().unwrap().insert(path.clone(), body);
                        p.lock().unwrap().push(path);
                        tiny_http::Response::from_data(Vec::new()).with_status_code(201)
                    }
                    tiny_http::Method::Get | tiny_http::Method::Head => match f.lock().unwrap().get(&path) {
                        // `Content-Length` on every answer, `HEAD`s included, as a
                        // file server sends it (not chunked above 32 KiB).
                        Some(b) => {
                            tiny_http::Response::from_data(b.clone()).with_chunked_threshold(usize::MAX)
                        }
                        None => tiny_http::Response::from_data(Vec::new()).with_status_code(404),
                    },
                    _ => tiny_http::Response::from_data(Vec::new()).with_status_code(405),
                };
                let _ = req.respond(resp);
            }
        });
        PutServer {
            url,
            files,
            puts,
            server,
            thread: Some(thread),
        }
    }

    fn take_puts(&self) -> Vec<String> {
        std::mem::take(&mut *self.puts.lock().unwrap())
    }
}

impl Drop for PutServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn an_image_published_over_http_is_put_once_and_verifies_as_imager_would() {
    let server = TestServer::start();
    let Some(env) = workspace(&server) else {
        return;
    };
    let http = PutServer::start();
    let out = env.run(&["publish", "//images:edge", "--to", &http.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    // An image without a hive is named by its target, version 0.0.0.
    let stem = "edge/edge-0.0.0-2023-11-14";
    let url = format!("{}/{stem}.img.zst", http.url);
    assert_eq!(stdout(&out).trim(), url);
    let mut puts = http.take_puts();
    puts.sort();
    let want: Vec<String> = [
        "edge/edge-0.0.0-2023-11-14.bmap",
        "edge/edge-0.0.0-2023-11-14.img.zst",
        "edge/edge-0.0.0-2023-11-14.img.zst.sha256",
        "edge/edge-0.0.0-2023-11-14.json",
        "edge/edge-0.0.0-2023-11-14.manifest.json",
        "edge/latest.json",
        "os_list.json",
    ]
    .iter()
    .map(|p| format!("/releases/{p}"))
    .collect();
    assert_eq!(puts, want);

    // What the server holds, as files, judged like the directory's.
    let site = env.root.path().join("served");
    for (path, body) in http.files.lock().unwrap().iter() {
        let p = site.join(path.trim_start_matches("/releases/"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    sh(&format!(
        "cd '{}' && sha256sum -c edge-0.0.0-2023-11-14.img.zst.sha256",
        site.join("edge").display()
    ));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("os_list.json")).unwrap()).unwrap();
    let list = index["os_list"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{index}");
    let prefix = format!("{}/", http.url);
    check_entry(
        &list[0],
        &site,
        |u| u.strip_prefix(&prefix).unwrap().to_owned(),
        env.root.path(),
    );

    // The same image again: HEAD and GET only.
    let again = env.run(&["publish", "//images:edge", "--to", &http.url]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(http.take_puts(), Vec::<String>::new(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), url);
}

#[test]
fn keep_going_builds_the_other_target_summarises_both_and_fails() {
    let env = crate::fixture::demo();
    env.write(
        "defs/images/other.yaml",
        "kind: image\nbase: scratch\nlayers: [//layers:extra]\nepoch: 1700000000\noutput: {format: tar}\n",
    );
    // A layer whose template names a value nobody defines: it fails when it runs.
    env.write(
        "defs/layers/broken.yaml",
        "kind: layer\nfiles:\n  - {path: /etc/broken, template: files/broken.j2}\n",
    );
    env.write("defs/layers/files/broken.j2", "{{ config.missing.deeper }}\n");
    env.write(
        "defs/images/bad.yaml",
        "kind: image\nbase: scratch\nlayers: [//layers:broken]\nepoch: 1700000000\noutput: {format: tar}\n",
    );
    let out = env.run(&["build", "//images:bad", "//images:other", "--keep-going"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(env.path("out/other.tar.zst").is_file(), "{err}");
    assert!(!env.path("out/bad.tar.zst").exists(), "{err}");
    let row = |label: &str| {
        err.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no row for {label}: {err}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(err.contains("target") && err.contains("result"), "{err}");
    assert_eq!(row("//images:bad")[1], "failed", "{err}");
    assert_eq!(row("//images:other")[1], "ok", "{err}");
    assert_eq!(row("//images:other")[2], "out/other.tar.zst", "{err}");
    assert!(err.contains("1 of 2 targets built"), "{err}");

    // A definition that does not compile is set aside the same way.
    env.write("defs/images/bad.yaml", "kind: image\nbase: scratch\nlayerz: []\n");
    let out = env.run(&["build", "//images/...", "--keep-going"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(row_of(&err, "//images:bad")[1], "broken", "{err}");
    assert_eq!(row_of(&err, "//images:other")[1], "ok", "{err}");
    assert_eq!(row_of(&err, "//images:demo")[1], "ok", "{err}");
    assert!(err.contains("w4b::build::targets_broken"), "{err}");
    // Without --keep-going the broken definition stops everything, as before.
    let out = env.run(&["build", "//images/..."]);
    assert_eq!(out.status.code(), Some(1));
}

fn row_of(err: &str, label: &str) -> Vec<String> {
    err.lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no row for {label}: {err}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_image_published_to_s3_lands_under_the_prefix_once() {
    let Some(s3) = crate::s3::server() else { return };
    let server = TestServer::start();
    let Some(mut env) = workspace(&server) else {
        return;
    };
    env.extra_env.extend(s3.env());
    let bucket = s3.bucket("publish");
    let to = format!("s3://{bucket}/releases");
    let base = "https://images.example.org/w4b";
    let args = [
        "publish",
        "//images:edge",
        "--to",
        &to,
        "--base-url",
        base,
        "--message-format",
        "json",
    ];
    let out = env.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let published = |o: &std::process::Output| -> serde_json::Value {
        stdout(o)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "published")
            .expect("a published event")
    };
    let first = published(&out);
    assert_eq!(first["url"], format!("{base}/edge/edge-0.0.0-2023-11-14.img.zst"));
    assert_eq!(first["files_sent"], 5, "{first}");
    let keys = s3.keys(&bucket, "releases/");
    let want: Vec<String> = [
        "edge/edge-0.0.0-2023-11-14.bmap",
        "edge/edge-0.0.0-2023-11-14.img.zst",
        "edge/edge-0.0.0-2023-11-14.img.zst.sha256",
        "edge/edge-0.0.0-2023-11-14.json",
        "edge/edge-0.0.0-2023-11-14.manifest.json",
        "edge/latest.json",
        "os_list.json",
    ]
    .iter()
    .map(|k| format!("releases/{k}"))
    .collect();
    assert_eq!(keys, want);
    assert_eq!(
        s3.get(&bucket, "releases/edge/edge-0.0.0-2023-11-14.img.zst")
            .unwrap(),
        env.read("out/edge.img.zst")
    );
    let index = s3.get(&bucket, "releases/os_list.json").unwrap();

    let again = env.run(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(published(&again)["files_sent"], 0);
    assert_eq!(s3.get(&bucket, "releases/os_list.json").unwrap(), index);
}

#[test]
fn a_failed_build_publishes_nothing_and_a_tar_archive_is_not_published() {
    let env = crate::fixture::demo();
    env.write(
        "defs/layers/broken.yaml",
        "kind: layer\nfiles:\n  - {path: /etc/broken, template: files/broken.j2}\n",
    );
    env.write("defs/layers/files/broken.j2", "{{ config.missing.deeper }}\n");
    env.write(
        "defs/images/bad.yaml",
        "kind: image\nbase: scratch\nlayers: [//layers:broken]\nepoch: 1700000000\noutput: {format: tar}\n",
    );
    let site = env.root.path().join("site");
    let out = env.run(&[
        "publish",
        "//images:bad",
        "//images:demo",
        "--to",
        site.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!site.exists(), "a failed build published something");
    let out = env.run(&["publish", "//images:demo", "--to", site.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("w4b::publish::not_a_disk"),
        "{}",
        stderr(&out)
    );
    assert!(!site.exists());
    // A template that escapes the destination fails before anything is built.
    let out = env.run(&[
        "publish",
        "//images:demo",
        "--to",
        site.to_str().unwrap(),
        "--name",
        "../{hive_id}.img",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("w4b::publish::template"),
        "{}",
        stderr(&out)
    );
}
