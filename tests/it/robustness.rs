//! Concurrency, corruption and crashes: the cache stays consistent and outputs correct.

#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::fixture::{demo, steps, ALL_STEPS};

fn blobs(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    let root = cache.join("v1/blobs");
    for d in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            v.push(f.unwrap().path());
        }
    }
    v.sort();
    v
}

pub(crate) fn flip_byte(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    // Blobs are read-only in the store; a disk error does not ask for permission.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn flipped_byte_in_the_output_blob_is_detected_and_rebuilt() {
    let env = demo();
    let first = env.build(&["//images:demo"]);
    assert!(first.ok());
    let good = env.read("out/demo.tar.zst");
    let digest = blake3::hash(&good).to_hex().to_string();
    let blob = env.cache.join("v1/blobs").join(&digest[..2]).join(&digest);
    flip_byte(&blob);
    std::fs::remove_file(env.path("out/demo.tar.zst")).unwrap();
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&["//images:demo#tar"]));
    assert_eq!(env.read("out/demo.tar.zst"), good);
    let why = env.why("//images:demo");
    assert_eq!(why["steps"][0]["status"], "miss", "{why:#}");
}

#[test]
fn a_quarantined_blob_is_named_with_its_reason_in_the_build_output() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let good = env.read("out/demo.tar.zst");
    let digest = blake3::hash(&good).to_hex().to_string();
    let blob = env.cache.join("v1/blobs").join(&digest[..2]).join(&digest);
    flip_byte(&blob);
    std::fs::remove_file(env.path("out/demo.tar.zst")).unwrap();
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    let err = b.stderr();
    let line = err
        .lines()
        .find(|l| l.starts_with("warning: quarantined"))
        .unwrap_or_else(|| panic!("no quarantine warning in\n{err}"));
    for want in [
        blob.display().to_string(),
        format!("blob `{digest}` is corrupt: its bytes hash to `"),
        "moved to `".to_string(),
        "v1/corrupt/".to_string(),
    ] {
        assert!(line.contains(&want), "missing {want:?} in {line}");
    }
}

#[test]
fn flipped_byte_in_an_input_blob_is_repaired_when_read() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let good = env.read("out/demo.tar.zst");
    // Corrupt every small blob that holds the motd text, then force the archive to be
    // re-made (new level): the tar step reads the corrupt blob and the engine repairs it.
    let mut hit = 0;
    for b in blobs(&env.cache) {
        if std::fs::read(&b).unwrap() == b"hello\n" {
            flip_byte(&b);
            hit += 1;
        }
    }
    assert_eq!(hit, 1);
    let b = env.build(&["//images:demo", "--set", "output.level=4"]);
    assert!(b.ok(), "{}", b.stderr());
    // And back: the original archive is bit-identical to the first build.
    let b = env.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(env.read("out/demo.tar.zst"), good);
}

#[test]
fn two_concurrent_builds_share_local_and_remote_caches() {
    let env = demo();
    let remote = env.root.path().join("remote");
    let (key, _) = env.keygen("ci");
    let spawn = || {
        env.command()
            .args([
                "build",
                "--message-format",
                "json",
                "//images:demo",
                "--remote-sign-key",
            ])
            .arg(&key)
            .arg("--remote-cache")
            .arg(&remote)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let out = env.read("out/demo.tar.zst");
    // A third build from a fresh local cache is served entirely by the remote.
    let mut env2 = crate::env::TestEnv::new();
    env2.cache = env.root.path().join("cache2");
    std::fs::remove_dir_all(&env2.ws).unwrap();
    crate::env::copy_dir(&env.ws, &env2.ws);
    std::fs::remove_dir_all(env2.ws.join("out")).unwrap();
    let c = env2.build(&[
        "//images:demo",
        "--remote-cache",
        remote.to_str().unwrap(),
        "--remote-sign-key",
        key.to_str().unwrap(),
    ]);
    assert!(c.ok(), "{}", c.stderr());
    assert_eq!(c.ran(), Vec::<String>::new());
    assert_eq!(c.cached(), steps(&ALL_STEPS));
    assert_eq!(env2.read("out/demo.tar.zst"), out);
}

#[test]
fn read_only_remote_is_never_written() {
    let env = demo();
    let remote = env.root.path().join("remote");
    let r = remote.to_str().unwrap();
    let (key, _) = env.keygen("ci");
    assert!(env
        .build(&[
            "//images:demo",
            "--remote-cache",
            r,
            "--remote-sign-key",
            key.to_str().unwrap()
        ])
        .ok());
    let count = || walk_count(&remote);
    let before = count();
    env.write(
        "defs/layers/motd.yaml",
        &crate::fixture::MOTD.replace("hello\\n", "changed\\n"),
    );
    let b = env.build(&["//images:demo", "--remote-cache", r, "--remote-read-only"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran().len(), 3);
    assert_eq!(count(), before, "a read-only remote received entries");
}

fn walk_count(p: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            n += 1;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                n += walk_count(&e.path());
            }
        }
    }
    n
}

/// A demo workspace with a 16 MiB incompressible source and an archive at zstd level 19,
/// so the archive step runs long enough to be interrupted; returns the running build
/// (JSON events on a pipe) once its archive step has started.
fn build_interrupted_mid_archive(
    seed: u64,
) -> (
    crate::env::TestEnv,
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let env = demo();
    let mut data = vec![0u8; 16 << 20];
    let mut x = seed;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(env.path("defs/layers/files/app/big.bin"), &data).unwrap();
    let mut child = env
        .command()
        .args([
            "build",
            "--message-format",
            "json",
            "//images:demo",
            "--set",
            "output.level=19",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"step-started\"") && line.contains("#tar") {
            break;
        }
    }
    (env, child, lines)
}

#[test]
fn kill_9_mid_build_leaves_a_consistent_cache() {
    let (env, mut child, _lines) = build_interrupted_mid_archive(0x9e3779b97f4a7c15);
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();

    let b = env.build(&["//images:demo", "--set", "output.level=19"]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(b.ran().contains(&"//images:demo#tar".to_string()));
    let after_kill = env.read("out/demo.tar.zst");

    // The same build in a fresh cache gives the same bytes.
    let mut fresh = crate::env::TestEnv::new();
    fresh.cache = env.root.path().join("fresh-cache");
    fresh.ws = env.ws.clone();
    let b = fresh.build(&["//images:demo", "--set", "output.level=19", "--out", "out-fresh"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(fresh.read("out-fresh/demo.tar.zst"), after_kill);
    let verify = env.run(&["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn ctrl_c_stops_cleanly_and_records_nothing_half_done() {
    let (env, child, lines) = build_interrupted_mid_archive(0x2545f4914f6cdd1d);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The archive step was interrupted: it is not recorded as finished, nor cached.
    assert!(
        !rest
            .iter()
            .any(|l| l.contains("step-finished") && l.contains("#tar")),
        "{rest:?}"
    );
    let b = env.build(&["//images:demo", "--set", "output.level=19"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&["//images:demo#tar"]));
}
