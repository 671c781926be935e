//! Downloads through the real binary: credentials that reach the server and nothing else,
//! bounded sizes, timeouts, and concurrent builders sharing one cache.

#![allow(clippy::disallowed_methods)] // Tests spawn the binary.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::env::TestEnv;
use crate::http::{Faults, TestServer};

const TOKEN: &str = "tok-7f3a9c1e5b";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn body() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

/// A workspace whose image fetches one file with `fetch` (the YAML of the entry's value).
fn fetch_env(fetch: &str) -> TestEnv {
    let env = TestEnv::new();
    env.write(
        "defs/layers/dl.yaml",
        &format!("kind: layer\nfiles:\n  - {{path: /opt/blob.bin, fetch: {fetch}}}\n"),
    );
    env.write(
        "defs/images/dl.yaml",
        "kind: image\nbase: scratch\nlayers: [//layers:dl]\nepoch: 1700000000\noutput: {format: tar}\n",
    );
    env
}

/// Every regular file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(files_below(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

fn assert_nowhere(needle: &str, dirs: &[&Path], texts: &[(&str, &[u8])]) {
    let mut checked = 0;
    for dir in dirs {
        for file in files_below(dir) {
            let bytes = std::fs::read(&file).unwrap();
            checked += 1;
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "`{needle}` found in {}",
                file.display()
            );
        }
    }
    assert!(checked > 0, "no files were checked");
    for (what, text) in texts {
        assert!(
            !String::from_utf8_lossy(text).contains(needle),
            "`{needle}` found in {what}:\n{}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn a_token_in_a_url_reaches_the_server_and_no_file_output_or_message() {
    let server = TestServer::start();
    let body = body();
    let faults = Faults {
        require_auth: Some(basic("ci", TOKEN)),
        ..Faults::default()
    };
    server.serve_with("/blob.bin", body.clone(), faults.clone());
    let sha = hex::encode(Sha256::digest(&body));
    let url = server
        .url("/blob.bin")
        .replace("http://", "http://ci:${DL_TOKEN}@");
    let mut env = fetch_env(&format!("{{url: \"{url}\", sha256: \"{sha}\"}}"));
    env.extra_env.insert("DL_TOKEN".into(), TOKEN.into());

    let b = env.build(&["//images:dl"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(
        server.requests()[0].authorization.as_deref(),
        Some(basic("ci", TOKEN).as_str()),
        "the token is sent"
    );
    let manifest = String::from_utf8(env.read("out/dl.manifest.json")).unwrap();
    assert!(
        manifest.contains(&server.url("/blob.bin").replace("http://", "http://***@")),
        "{manifest}"
    );
    let why = env.run(&["why", "//images:dl"]);
    let why_json = env.run(&["why", "--format", "json", "//images:dl"]);
    let graph = env.run(&["graph", "//images:dl", "--format", "json"]);
    let ls = env.run(&["ls", "//..."]);

    // A failing download names the URL in its error, redacted.
    server.fail_always("/blob.bin", 404);
    env.write(
        "defs/layers/dl.yaml",
        &format!(
            "kind: layer\nfiles:\n  - {{path: /opt/blob.bin, fetch: {{url: \"{url}\", sha256: \"{}\"}}}}\n",
            "1".repeat(64)
        ),
    );
    let failed = env.run(&["build", "//images:dl"]);
    assert!(!failed.status.success());
    let failed_err = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(failed_err.contains("***@127.0.0.1"), "{failed_err}");

    assert_nowhere(
        TOKEN,
        &[&env.cache, &env.path("out")],
        &[
            ("build stdout", &b.output.stdout),
            ("build stderr", &b.output.stderr),
            ("why", &why.stdout),
            ("why stderr", &why.stderr),
            ("why --format json", &why_json.stdout),
            ("graph", &graph.stdout),
            ("ls", &ls.stdout),
            ("failed build", &failed.stderr),
            ("failed build stdout", &failed.stdout),
        ],
    );
}

#[test]
fn netrc_credentials_keep_urls_in_definitions_clean() {
    let server = TestServer::start();
    let body = body();
    server.serve_with(
        "/blob.bin",
        body.clone(),
        Faults {
            require_auth: Some(basic("ci", TOKEN)),
            ..Faults::default()
        },
    );
    let sha = hex::encode(Sha256::digest(&body));
    let mut env = fetch_env(&format!(
        "{{url: \"{}\", sha256: \"{sha}\"}}",
        server.url("/blob.bin")
    ));
    let netrc = env.root.path().join("ci-netrc");
    std::fs::write(&netrc, format!("machine 127.0.0.1 login ci password {TOKEN}\n")).unwrap();

    // Without credentials the server's 401 is final.
    let b = env.build(&["//images:dl"]);
    assert!(!b.ok());
    assert!(b.stderr().contains("401"), "{}", b.stderr());

    env.extra_env
        .insert("W4B_NETRC".into(), netrc.display().to_string());
    let b = env.build(&["//images:dl"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_nowhere(
        TOKEN,
        &[&env.cache, &env.path("out")],
        &[("build", &b.output.stderr)],
    );

    // A `W4B_NETRC` that names no file is an error, not silence.
    env.extra_env.insert(
        "W4B_NETRC".into(),
        env.root.path().join("absent").display().to_string(),
    );
    std::fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(&["build", "//images:dl"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("credentials file") && err.contains("W4B_NETRC"),
        "{err}"
    );
}

#[test]
fn a_fetch_of_a_device_is_refused_without_reading_it() {
    let env = fetch_env(&format!(
        "{{url: \"file:///dev/zero\", sha256: \"{}\"}}",
        "0".repeat(64)
    ));
    let out = env.run(&["build", "//images:dl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`/dev/zero` is not a regular file"), "{err}");
    assert_eq!(files_below(&env.cache.join("v1/tmp")), Vec::<PathBuf>::new());
}

#[test]
fn an_endless_body_stops_at_the_declared_size_or_the_workspace_maximum() {
    let server = TestServer::start();
    server.serve_with(
        "/endless",
        vec![0u8; 64 * 1024],
        Faults {
            endless: true,
            ..Faults::default()
        },
    );
    let url = server.url("/endless");
    let sha = "0".repeat(64);

    let env = fetch_env(&format!("{{url: \"{url}\", sha256: \"{sha}\", size: 1MiB}}"));
    let out = env.run(&["build", "//images:dl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sent more than 1048576 bytes"), "{err}");
    assert!(err.contains("defs/layers/dl.yaml"), "{err}");
    assert_eq!(files_below(&env.cache.join("v1/tmp")), Vec::<PathBuf>::new());

    let env = fetch_env(&format!("{{url: \"{url}\", sha256: \"{sha}\"}}"));
    env.write("w4b.yaml", "downloads: {max_size: 2MiB}\n");
    let out = env.run(&["build", "//images:dl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sent more than 2097152 bytes"), "{err}");
    assert!(err.contains("max_size"), "{err}");
    assert_eq!(files_below(&env.cache.join("v1/tmp")), Vec::<PathBuf>::new());
}

#[test]
fn a_stalled_download_fails_after_the_configured_read_timeout() {
    let server = TestServer::start();
    let body = body();
    server.serve_with(
        "/blob.bin",
        body.clone(),
        Faults {
            stall_after: Some(100_000),
            stall_for: std::time::Duration::from_secs(4),
            ..Faults::default()
        },
    );
    let sha = hex::encode(Sha256::digest(&body));
    let env = fetch_env(&format!(
        "{{url: \"{}\", sha256: \"{sha}\"}}",
        server.url("/blob.bin")
    ));
    env.write("w4b.yaml", "downloads: {read_timeout: 1s, connect_timeout: 2s}\n");
    let started = std::time::Instant::now();
    let out = env.run(&["build", "//images:dl"]);
    // Each stalled attempt ends after about a second and resumes where it stopped, so
    // the body arrives in a few attempts rather than never.
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    assert!(ranges.len() > 1 && ranges[1].is_some(), "{ranges:?}");
}

#[test]
fn concurrent_cold_builds_on_one_cache_all_succeed() {
    let server = TestServer::start();
    let body: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    server.serve_with(
        "/blob.bin",
        body.clone(),
        Faults {
            chunk_delay: std::time::Duration::from_millis(2),
            ..Faults::default()
        },
    );
    let sha = hex::encode(Sha256::digest(&body));
    let fetch = format!("{{url: \"{}\", sha256: \"{sha}\"}}", server.url("/blob.bin"));
    let shared = tempfile::tempdir().unwrap();
    let envs: Vec<TestEnv> = (0..6)
        .map(|_| {
            let mut env = fetch_env(&fetch);
            env.cache = shared.path().join("cache");
            env
        })
        .collect();
    let children: Vec<_> = envs
        .iter()
        .map(|env| {
            env.command()
                .args(["build", "//images:dl"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for env in &envs {
        assert!(crate::env::tar_listing(&env.path("out/dl.tar.zst")).contains("3000000"));
    }
    assert_eq!(
        files_below(&shared.path().join("cache/v1/tmp"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("fetch-"))
            .collect::<Vec<_>>(),
        Vec::<PathBuf>::new()
    );
}

/// SIGTERM, or one Ctrl-C, stops a build whose download is blocked on a silent server:
/// the transfer waits on a thread of its own and the step looks at the cancel flag every
/// 100 ms. The server stays silent for 12 s; the build must be gone long before, with a
/// failure status and no partial file.
#[test]
fn sigterm_and_one_sigint_stop_a_stalled_download_at_once() {
    for signal in ["-TERM", "-INT"] {
        let server = TestServer::start();
        let body = body();
        server.serve_with(
            "/blob.bin",
            body.clone(),
            Faults {
                stall_after: Some(100_000),
                stall_for: std::time::Duration::from_secs(12),
                ..Faults::default()
            },
        );
        let sha = hex::encode(Sha256::digest(&body));
        let env = fetch_env(&format!(
            "{{url: \"{}\", sha256: \"{sha}\"}}",
            server.url("/blob.bin")
        ));
        let mut child = env
            .command()
            .args(["build", "//images:dl"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let waited = std::time::Instant::now();
        while server.requests().is_empty() && waited.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Let the first 100 kB arrive and the transfer block on the silence.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let sent = std::time::Instant::now();
        let st = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if sent.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{signal}: the build still ran 10 s after the signal");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let took = sent.elapsed();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{signal}: {stderr}");
        assert!(
            took < std::time::Duration::from_secs(5),
            "{signal}: stopped after {took:?}"
        );
        assert_eq!(
            files_below(&env.cache.join("v1/tmp")),
            Vec::<PathBuf>::new(),
            "{signal}: {stderr}"
        );
    }
}
