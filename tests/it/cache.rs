//! `w4b cache stats|gc|verify` on a real cache.

use crate::fixture::demo;

#[test]
fn stats_gc_verify() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let stats = env.run(&["cache", "stats"]);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("records"), "{text}");
    let verify = env.run(&["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // GC with generous limits keeps what the last build needs: the rebuild is all cached.
    let gc = env.run(&["cache", "gc", "--max-age", "30d"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let b = env.build(&["//images:demo"]);
    assert_eq!(b.ran(), Vec::<String>::new());
}

#[test]
fn verify_reports_corruption() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let good = env.read("out/demo.tar.zst");
    let digest = blake3::hash(&good).to_hex().to_string();
    let blob = env.cache.join("v1/blobs").join(&digest[..2]).join(&digest);
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let verify = env.run(&["cache", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("corrupt"));
}

/// The bytes of every entry GC counts: records, blobs, chunk indexes, memos.
fn store_bytes(cache: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    ["blobs", "indexes", "records", "memo"]
        .iter()
        .map(|d| walk(&cache.join("v1").join(d)))
        .sum()
}

fn blob_exists(cache: &std::path::Path, bytes: &[u8]) -> bool {
    let hex = blake3::hash(bytes).to_hex().to_string();
    cache.join("v1/blobs").join(&hex[..2]).join(&hex).exists()
}

/// `n` bytes that do not compress, different for every `seed`.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block = blake3::hash(&seed.to_le_bytes());
    while out.len() < n {
        out.extend_from_slice(block.as_bytes());
        block = blake3::hash(block.as_bytes());
    }
    out.truncate(n);
    out
}

/// The demo with an incompressible file in the `extra` layer, different per variant.
fn variant(env: &crate::env::TestEnv, seed: u64) {
    env.write(
        "defs/layers/extra.yaml",
        "kind: layer\nfiles:\n  - {path: /etc/extra, content: \"x\\n\"}\n  - {path: /opt/noise, source: files/noise}\n",
    );
    let p = env.path("defs/layers/files/noise");
    std::fs::write(&p, noise(seed, 300_000)).unwrap();
}

fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_size_limit_evicts_least_recently_used_builds_after_each_build() {
    let env = demo();
    variant(&env, 0);
    assert!(env.build(&["--cache-max-size", "none", "//images:demo"]).ok());
    let first = env.read("out/demo.tar.zst");
    let s0 = store_bytes(&env.cache);
    variant(&env, 1);
    assert!(env.build(&["--cache-max-size", "none", "//images:demo"]).ok());
    let second = env.read("out/demo.tar.zst");
    let s1 = store_bytes(&env.cache);
    // Room for two variants, not three.
    let per_build = s1 - s0;
    let limit = s1 + per_build / 2;
    assert!(
        s0 < 4 * per_build,
        "the shared part is small: {s0} vs {per_build}"
    );
    let limit_arg = limit.to_string();

    let mut outputs = vec![first, second];
    for seed in 2..5u64 {
        variant(&env, seed);
        let b = env.build(&["--cache-max-size", &limit_arg, "//images:demo"]);
        assert!(b.ok(), "{}", b.stderr());
        assert!(b.stderr().contains("cache: over its"), "{}", b.stderr());
        outputs.push(env.read("out/demo.tar.zst"));
        let now = store_bytes(&env.cache);
        assert!(now <= limit, "after variant {seed}: {now} > {limit}");
        // Least recently used first: the two newest variants stay, the older ones go.
        let n = outputs.len();
        for (i, o) in outputs.iter().enumerate() {
            assert_eq!(blob_exists(&env.cache, o), i + 2 >= n, "variant {i} after {seed}");
        }
        let stats = env.run(&["--cache-max-size", &limit_arg, "cache", "stats"]);
        let text = String::from_utf8_lossy(&stats.stdout);
        assert!(text.contains("last gc  20"), "{text}");
        assert!(text.contains("limit "), "{text}");
    }
    let verify = env.run(&["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // The evicted variant builds again, identically.
    variant(&env, 0);
    let b = env.build(&["--cache-max-size", "none", "//images:demo"]);
    assert!(b.ran().contains(&"//images:demo#tar".to_string()));
    assert_eq!(env.read("out/demo.tar.zst"), outputs[0]);
}

#[test]
fn a_noop_build_writes_no_usage_file_and_counts_nothing() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    let usage = env.cache.join("v1/usage");
    assert_eq!(file_names(&usage), vec!["base".to_string()], "counted once");
    let base = std::fs::metadata(usage.join("base")).unwrap();
    let before = std::fs::read(usage.join("base")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = env.build(&["//images:demo"]);
    assert_eq!(b.ran(), Vec::<String>::new());
    // Nothing published: no delta; no count or GC: the base is untouched.
    assert_eq!(file_names(&usage), vec!["base".to_string()]);
    assert_eq!(std::fs::read(usage.join("base")).unwrap(), before);
    assert_eq!(
        std::fs::metadata(usage.join("base")).unwrap().modified().unwrap(),
        base.modified().unwrap()
    );
    assert!(
        file_names(&env.cache.join("v1/leases")).is_empty(),
        "the lease ended"
    );
    // A build that publishes writes exactly one delta.
    env.write("defs/layers/files/app/README", "read me again\n");
    assert!(env.build(&["//images:demo"]).ok());
    assert_eq!(file_names(&usage).len(), 2);
}

#[test]
fn a_stale_lease_is_removed_and_a_bad_limit_is_diagnosed() {
    let env = demo();
    assert!(env.build(&["//images:demo"]).ok());
    // What a killed build leaves: a lease nobody holds (its process is gone).
    let stale = env.cache.join("v1/leases/4194303.deadbeef");
    std::fs::write(&stale, "w4b-lease/1 1700000000000000000 4194303\n").unwrap();
    let stats = env.run(&["cache", "stats"]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("1 stale"), "{text}");
    let gc = env.run(&["cache", "gc"]);
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    assert!(!stale.exists());

    env.write("w4b.yaml", "cache:\n  max_size: 20 gigs\n");
    let b = env.build(&["//images:demo"]);
    assert!(!b.ok());
    let err = b.stderr();
    assert!(err.contains("w4b.yaml:2"), "{err}");
    assert!(err.contains("`none` for no limit"), "{err}");
    let bad = env.run(&["--cache-max-size", "lots", "cache", "stats"]);
    assert_eq!(bad.status.code(), Some(2));
    env.write("w4b.yaml", "cache:\n  max_size: none\n");
    let stats = env.run(&["cache", "stats"]);
    assert!(String::from_utf8_lossy(&stats.stdout).contains("limit        none"));
    let over = env.run(&["cache", "stats"]);
    assert!(over.status.success());
}

/// A GC asked to empty the cache, again and again while a build runs in another process,
/// takes nothing that build looked up, opened or is writing: it finishes, and its output
/// is the clean build's.
#[test]
fn gc_beside_a_running_build_takes_nothing_it_uses() {
    let clean = demo();
    variant(&clean, 7);
    assert!(clean.build(&["//images:demo"]).ok());
    let expected = clean.read("out/demo.tar.zst");

    let env = demo();
    variant(&env, 6);
    assert!(env.build(&["//images:demo"]).ok());
    // Half of the graph hits (base, motd), half runs (extra, rootfs, tar).
    variant(&env, 7);
    // The first build's records are older than the slack a running build's lease keeps
    // (entries written just before it began are not evicted), so the GCs beside round 0
    // can evict them whether or not the build has taken its lease yet.
    backdate(&env.cache.join("v1/records"), std::time::Duration::from_secs(180));
    for round in 0..3 {
        let _ = std::fs::remove_file(env.path("out/demo.tar.zst"));
        let mut build = env
            .command()
            .args(["build", "--message-format", "json", "//images:demo"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (mut gcs, mut evicted) = (0, false);
        let status = loop {
            if let Some(s) = build.try_wait().unwrap() {
                break s;
            }
            let gc = env.run(&["cache", "gc", "--max-size", "1"]);
            assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
            evicted |= !String::from_utf8_lossy(&gc.stdout).starts_with("removed 0 record(s)");
            gcs += 1;
        };
        let mut err = String::new();
        std::io::Read::read_to_string(build.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(status.success(), "round {round}: {err}");
        assert!(gcs > 0, "no GC ran beside the build");
        assert!(
            round > 0 || evicted,
            "the GCs beside the first build evicted nothing"
        );
        assert_eq!(env.read("out/demo.tar.zst"), expected, "round {round}");
    }
    let verify = env.run(&["cache", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Sets the modification time of every file below `dir` to `ago` before now.
#[allow(clippy::disallowed_methods)] // the clock: cache bookkeeping in a test, no output
fn backdate(dir: &std::path::Path, ago: std::time::Duration) {
    let then = std::time::SystemTime::now() - ago;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            backdate(&p, ago);
        } else {
            std::fs::File::options()
                .append(true)
                .open(&p)
                .and_then(|f| f.set_modified(then))
                .or_else(|_| std::fs::File::open(&p).and_then(|f| f.set_modified(then)))
                .unwrap_or_else(|e| panic!("backdate {}: {e}", p.display()));
        }
    }
}
