//! The remote cache on an S3-compatible object store, against a real HTTP server
//! (moto, see `tests/support/s3.rs`): round trips of real builds, read-only mode, trust
//! prefixes, corrupt objects repaired by rebuilding, the store's conditional writes, and
//! eight builders at once.

#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use w4b_cache::{CacheError, Digest, NoRefs, Remote, S3Options, S3Remote, Store, StoreDir, CHUNK_SIZE};

use crate::env::{copy_dir, Build, TestEnv};
use crate::fixture::{demo, steps, ALL_STEPS, MOTD};
use crate::s3::{server, S3Server};

const OUT: &str = "out/demo.tar.zst";

/// `env` pointed at `server`.
fn with_s3(mut env: TestEnv, s3: &S3Server) -> TestEnv {
    env.extra_env.extend(s3.env());
    env
}

/// A builder with the same workspace and a fresh, empty local cache.
fn fresh(from: &TestEnv, name: &str) -> TestEnv {
    let mut env = TestEnv::new();
    env.cache = from.root.path().join(name);
    env.extra_env = from.extra_env.clone();
    std::fs::remove_dir_all(&env.ws).unwrap();
    copy_dir(&from.ws, &env.ws);
    let _ = std::fs::remove_dir_all(env.ws.join("out"));
    env
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `env` builds the demo image through the remote cache at `url`, publishing records
/// signed by `key`.
fn publish(env: &TestEnv, url: &str, key: &Path) -> Build {
    env.build(&[
        "//images:demo",
        "--remote-cache",
        url,
        "--remote-sign-key",
        s(key),
    ])
}

#[test]
fn a_build_published_to_s3_serves_a_clean_cache_every_step() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("round-trip");
    let url = format!("s3://{bucket}/main");
    let env = with_s3(demo(), s3);
    let (key, _) = env.keygen("ci");
    let b = publish(&env, &url, &key);
    assert!(b.ok(), "{}", b.stderr());
    assert!(!b.stderr().contains("warning"), "{}", b.stderr());
    let out = env.read(OUT);
    let keys = s3.keys(&bucket, "main/v1/");
    assert!(keys.iter().any(|k| k.starts_with("main/v1/records/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("main/v1/blobs/")), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.starts_with("main/v1/probe/")),
        "the probe cleans up: {keys:?}"
    );

    let other = fresh(&env, "cache2");
    let c = publish(&other, &url, &key);
    assert!(c.ok(), "{}", c.stderr());
    assert_eq!(c.ran(), Vec::<String>::new());
    assert_eq!(c.cached(), steps(&ALL_STEPS));
    assert_eq!(other.read(OUT), out);
    // The hit stamped its records as used, for the remote's GC.
    assert!(s3
        .keys(&bucket, "main/v1/records/")
        .iter()
        .any(|k| k.ends_with(".used")));

    let v = other.run(&["cache", "verify", "--remote", "--remote-cache", &url]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let stats = other.run(&["cache", "stats", "--remote-cache", &url]);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains(&format!("remote cache `{url}`")), "{text}");
}

#[test]
fn a_read_only_s3_remote_is_read_and_never_written() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("read-only");
    let url = format!("s3://{bucket}/main");
    let env = with_s3(demo(), s3);
    let (key, public) = env.keygen("ci");
    assert!(publish(&env, &url, &key).ok());
    let before = s3.keys(&bucket, "");

    // A hit (which would stamp `.used`) and a change (which would publish).
    let reader = fresh(&env, "cache2");
    reader.write("defs/layers/motd.yaml", &MOTD.replace("hello\\n", "changed\\n"));
    let b = reader.build(&[
        "//images:demo",
        "--remote-cache",
        &url,
        "--remote-read-only",
        "--remote-trusted-key",
        s(&public),
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran().len(), 3, "{:?}", b.ran());
    assert_eq!(b.cached().len(), 2, "{:?}", b.cached());
    assert_eq!(
        s3.keys(&bucket, ""),
        before,
        "a read-only remote received objects"
    );
}

#[test]
fn trust_namespaces_are_prefixes_and_signatures_still_decide() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("trust");
    let main = format!("s3://{bucket}/main");
    let pr = format!("s3://{bucket}/pr");
    let env = with_s3(demo(), s3);
    let (ci, _) = env.keygen("ci");
    assert!(publish(&env, &main, &ci).ok());

    // Another prefix is another cache: nothing there.
    let pr_builder = fresh(&env, "cache-pr");
    let (pr_key, pr_public) = pr_builder.keygen("pr");
    let b = publish(&pr_builder, &pr, &pr_key);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&ALL_STEPS));
    assert!(s3
        .keys(&bucket, "pr/v1/records/")
        .iter()
        .any(|k| k.ends_with(".json")));

    // The main prefix, read by a builder that trusts only the pull-request key: every
    // record there is ignored, and the steps run here.
    let strict = fresh(&env, "cache-strict");
    let b = strict.build(&[
        "//images:demo",
        "--remote-cache",
        &main,
        "--remote-read-only",
        "--remote-trusted-key",
        s(&pr_public),
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&ALL_STEPS));
    assert_eq!(strict.read(OUT), env.read(OUT));
}

#[test]
fn flipped_truncated_and_deleted_objects_are_quarantined_and_rebuilt() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("corrupt");
    let url = format!("s3://{bucket}/main");
    let env = with_s3(demo(), s3);
    let (key, _) = env.keygen("ci");
    assert!(publish(&env, &url, &key).ok());
    let good = env.read(OUT);

    // Damage every blob the remote has: flip, truncate, delete in turn.
    let blobs = s3.keys(&bucket, "main/v1/blobs/");
    assert!(blobs.len() >= 3, "{blobs:?}");
    for (i, k) in blobs.iter().enumerate() {
        let mut bytes = s3.get(&bucket, k).unwrap();
        match i % 3 {
            0 if !bytes.is_empty() => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x40;
                assert_eq!(s3.put(&bucket, k, &bytes), 200);
            }
            1 => assert_eq!(s3.put(&bucket, k, &bytes[..bytes.len() / 2]), 200),
            _ => assert_eq!(s3.delete(&bucket, k), 204),
        }
    }

    let other = fresh(&env, "cache2");
    let b = publish(&other, &url, &key);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(other.read(OUT), good, "never different bytes");
    assert!(!b.ran().is_empty(), "damaged outputs are rebuilt");

    // `verify --remote` quarantines what the build did not read; after it, the remote
    // is clean and a third builder gets identical bytes.
    let _ = other.run(&["cache", "verify", "--remote", "--remote-cache", &url]);
    let third = fresh(&env, "cache3");
    let c = publish(&third, &url, &key);
    assert!(c.ok(), "{}", c.stderr());
    assert_eq!(third.read(OUT), good);
    let v = third.run(&["cache", "verify", "--remote", "--remote-cache", &url]);
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        !s3.keys(&bucket, "main/v1/corrupt/").is_empty(),
        "flipped and truncated objects are kept as evidence"
    );
}

#[test]
fn the_server_refuses_a_second_create_if_absent_write() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("conditional");
    let create = [("If-None-Match", "*")];
    assert_eq!(s3.put_with(&bucket, "probe", &create, b"first"), 200);
    assert_eq!(
        s3.put_with(&bucket, "probe", &create, b"second"),
        412,
        "the S3 server ignores `If-None-Match: *`; the remote-cache tests would prove nothing"
    );
    assert_eq!(s3.get(&bucket, "probe").unwrap(), b"first");

    // Through the client: the second publication of a blob is "already there".
    let remote = s3_remote(s3, &bucket, "p", false);
    let d = Digest::of(b"bytes");
    assert_eq!(remote.put_blob(&d, &mut &b"bytes"[..], 5).unwrap(), 5);
    assert_eq!(remote.put_blob(&d, &mut &b"bytes"[..], 5).unwrap(), 0);
    assert_eq!(remote.has_many(&[d, Digest::of(b"no")]).unwrap(), [true, false]);
}

fn s3_remote(s3: &S3Server, bucket: &str, prefix: &str, read_only: bool) -> S3Remote {
    S3Remote::open(&S3Options {
        url: format!("s3://{bucket}/{prefix}"),
        endpoint: Some(s3.endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: true,
        virtual_hosted: false,
        access_key_id: Some("w4b-test".into()),
        secret_access_key: Some("w4b-test-secret".into()),
        session_token: None,
        read_only,
    })
    .unwrap()
}

/// Chunked outputs on S3: only the chunks the bucket lacks go up; a flipped chunk or index
/// is a quarantined miss naming the output, and the next publish repairs it.
#[test]
fn chunk_indexes_on_s3_move_only_missing_chunks_and_heal() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("chunks");
    let t = tempfile::tempdir().unwrap();
    let remote: Arc<dyn Remote> = Arc::new(s3_remote(s3, &bucket, "c", false));
    let writer = Store::with_remote(StoreDir::open(&t.path().join("a")).unwrap(), Some(remote.clone()));
    let mut bytes: Vec<u8> = (0..3 * CHUNK_SIZE as usize)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let put = |b: &[u8]| {
        let mut w = writer.local().chunked_writer().unwrap();
        std::io::Write::write_all(&mut w, b).unwrap();
        w.commit().unwrap().0
    };
    let d1 = put(&bytes);
    let r1 = record("k1", d1, bytes.len() as u64);
    let up = writer.publish(&r1, &NoRefs).unwrap();
    assert_eq!((up.blobs, up.indexes), (3, 1));
    // One changed chunk: one new chunk and one new index go up.
    bytes[5] ^= 1;
    let d2 = put(&bytes);
    let up = writer
        .publish(&record("k2", d2, bytes.len() as u64), &NoRefs)
        .unwrap();
    assert_eq!((up.blobs, up.indexes), (1, 1));

    let reader = Store::with_remote(StoreDir::open(&t.path().join("b")).unwrap(), Some(remote.clone()));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut reader.open_output(&d2).unwrap(), &mut out).unwrap();
    assert_eq!(out, bytes);

    // Flip the first chunk of `d1` in the bucket: a fresh reader gets `Corrupt` for the
    // output, naming the chunk; the object is quarantined; republishing repairs it.
    let idx = reader.index(&d1).unwrap().unwrap();
    let hex = idx.chunks[0].digest.to_hex();
    let chunk_key = format!("c/v1/blobs/{}/{hex}", &hex[..2]);
    let mut obj = s3.get(&bucket, &chunk_key).unwrap();
    obj[0] ^= 0xff;
    assert_eq!(s3.put(&bucket, &chunk_key, &obj), 200);
    let third = Store::with_remote(StoreDir::open(&t.path().join("c")).unwrap(), Some(remote.clone()));
    let err = std::io::Read::read_to_end(&mut third.open_output(&d1).unwrap(), &mut Vec::new()).unwrap_err();
    match w4b_cache::OutputReader::cache_error(err) {
        Ok(CacheError::Corrupt {
            expected,
            chunk: Some(c),
            ..
        }) => {
            assert_eq!(expected, d1);
            assert_eq!(c.chunk, idx.chunks[0].digest);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(remote.take_quarantined().len(), 1);
    assert!(s3.get(&bucket, &chunk_key).is_none(), "moved to `v1/corrupt/`");

    // A flipped index is corrupt for readers too.
    let ihex = d2.to_hex();
    let index_key = format!("c/v1/indexes/{}/{ihex}", &ihex[..2]);
    let mut obj = s3.get(&bucket, &index_key).unwrap();
    let last = obj.len() - 1;
    obj[last] ^= 1;
    assert_eq!(s3.put(&bucket, &index_key, &obj), 200);
    assert!(matches!(remote.index(&d2), Err(CacheError::Corrupt { .. })));

    // Verify finds nothing else wrong, but `d1` is incomplete; publish heals both.
    let rep = remote.verify(&NoRefs).unwrap();
    assert_eq!(rep.incomplete_indexes, vec![d1]);
    assert_eq!(rep.dangling_records.len(), 2, "{rep:?}");
    writer.publish(&r1, &NoRefs).unwrap();
    writer
        .publish(&record("k2", d2, bytes.len() as u64), &NoRefs)
        .unwrap();
    let rep = remote.verify(&NoRefs).unwrap();
    assert!(
        rep.incomplete_indexes.is_empty() && rep.dangling_records.is_empty(),
        "{rep:?}"
    );
    let fourth = Store::with_remote(StoreDir::open(&t.path().join("d")).unwrap(), Some(remote));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut fourth.open_output(&d2).unwrap(), &mut out).unwrap();
    assert_eq!(out, bytes);
}

fn record(key: &str, d: Digest, len: u64) -> w4b_cache::Record {
    let mut r = w4b_cache::Record::new(
        Digest::of(key.as_bytes()),
        "//t:x#disk",
        "disk",
        w4b_cache::Producer {
            tool: "test".into(),
            host: None,
        },
    );
    r.outputs
        .insert("disk".into(), w4b_cache::OutputRef { digest: d, size: len });
    r
}

/// Eight `w4b build` processes at once, each with its own local cache, against one
/// bucket, then against one shared directory: none fails, all export the same bytes, and
/// the remote verifies clean.
#[test]
fn eight_concurrent_builders_share_one_bucket_and_one_directory() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("eight");
    let base = with_s3(demo(), s3);
    let (key, _) = base.keygen("ci");
    let dir = base.root.path().join("shared-dir");
    let url = format!("s3://{bucket}/ci");
    for remote in [url.as_str(), s(&dir)] {
        let envs: Vec<TestEnv> = (0..8).map(|i| fresh(&base, &format!("cache-{i}"))).collect();
        let children: Vec<_> = envs
            .iter()
            .map(|e| {
                e.command()
                    .args([
                        "build",
                        "--message-format",
                        "json",
                        "//images:demo",
                        "--remote-cache",
                        remote,
                    ])
                    .arg("--remote-sign-key")
                    .arg(&key)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut outs = Vec::new();
        for (e, c) in envs.iter().zip(children) {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "{remote}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                !String::from_utf8_lossy(&o.stderr).contains("failed"),
                "{remote}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            outs.push(e.read(OUT));
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "{remote}: different bytes");
        let v = envs[0].run(&["cache", "verify", "--remote", "--remote-cache", remote]);
        assert!(
            v.status.success(),
            "{remote}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }
}

/// GC on S3 evicts least recently used records down to the size asked, with the objects
/// only they kept (an index's chunks stay while another kept index names them), and
/// leaves a bucket that `verify` finds clean and readers read.
#[test]
fn gc_on_s3_evicts_least_recently_used_records_and_keeps_shared_chunks() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("gc");
    let t = tempfile::tempdir().unwrap();
    let remote: Arc<dyn Remote> = Arc::new(s3_remote(s3, &bucket, "g", false));
    let writer = Store::with_remote(StoreDir::open(&t.path().join("a")).unwrap(), Some(remote.clone()));
    let put = |b: &[u8]| {
        let mut w = writer.local().chunked_writer().unwrap();
        std::io::Write::write_all(&mut w, b).unwrap();
        w.commit().unwrap().0
    };
    let old_bytes: Vec<u8> = (0..3 * CHUNK_SIZE as usize)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut new_bytes = old_bytes.clone();
    new_bytes[2 * CHUNK_SIZE as usize + 9] ^= 1;
    let (old, new) = (put(&old_bytes), put(&new_bytes));
    let (r_old, r_new) = (
        record("old", old, old_bytes.len() as u64),
        record("new", new, new_bytes.len() as u64),
    );
    writer.publish(&r_old, &NoRefs).unwrap();
    // S3 times are whole seconds: the second record is newer.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    writer.publish(&r_new, &NoRefs).unwrap();
    let old_idx = remote.index(&old).unwrap().unwrap();
    let new_idx = remote.index(&new).unwrap().unwrap();
    let old_only = old_idx.chunks[2].digest;
    assert_ne!(old_only, new_idx.chunks[2].digest);

    // Three days on (past the grace), room for one record's closure: the older goes with
    // the chunk only it named; the two shared chunks stay.
    let mut policy =
        w4b_cache::GcPolicy::new(std::time::SystemTime::now() + std::time::Duration::from_secs(3 * 86_400));
    policy.max_bytes = Some(3 * u64::from(CHUNK_SIZE) + 4096);
    let rep = remote.gc(&policy, &NoRefs).unwrap();
    assert_eq!((rep.records_removed, rep.records_kept), (1, 1), "{rep:?}");
    assert_eq!((rep.indexes_removed, rep.blobs_removed), (1, 1), "{rep:?}");
    assert!(remote.records(&r_old.key).unwrap().is_empty());
    assert_eq!(
        remote.has_many(&[old, old_only, new]).unwrap(),
        [false, false, true]
    );
    let hex = old_only.to_hex();
    assert!(s3
        .get(&bucket, &format!("g/v1/blobs/{}/{hex}", &hex[..2]))
        .is_none());
    let rep = remote.verify(&NoRefs).unwrap();
    assert!(
        rep.incomplete_indexes.is_empty() && rep.dangling_records.is_empty(),
        "{rep:?}"
    );
    let reader = Store::with_remote(StoreDir::open(&t.path().join("b")).unwrap(), Some(remote.clone()));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut reader.open_output(&new).unwrap(), &mut out).unwrap();
    assert_eq!(out, new_bytes);

    // Used again (a hit's `.used` stamp), the older record would outlive the newer.
    writer.publish(&r_old, &NoRefs).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    remote
        .touch_outputs(&r_old.key, &r_old.outputs_digest(), std::time::SystemTime::now())
        .unwrap();
    let rep = remote.gc(&policy, &NoRefs).unwrap();
    assert_eq!(rep.records_removed, 1, "{rep:?}");
    assert_eq!(remote.records(&r_old.key).unwrap().len(), 1);
    assert!(remote.records(&r_new.key).unwrap().is_empty());
}

/// A blob above the single-request limit (a base image) goes up in parts and comes back
/// verified; a second upload sends nothing.
#[test]
fn a_blob_above_the_multipart_threshold_round_trips_through_s3() {
    let Some(s3) = server() else { return };
    let bucket = s3.bucket("multipart");
    let t = tempfile::tempdir().unwrap();
    let remote = s3_remote(s3, &bucket, "m", false);
    let a = StoreDir::open(&t.path().join("a")).unwrap();
    let len = w4b_cache::MULTIPART_OVER as usize + 3 * 1024 * 1024 + 17;
    let mut bytes = vec![0u8; len];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let d = a.put_bytes(&bytes).unwrap();
    let mut r = a.reader(&d).unwrap();
    assert_eq!(remote.put_blob(&d, &mut r, len as u64).unwrap(), len as u64);
    let mut r = a.reader(&d).unwrap();
    assert_eq!(
        remote.put_blob(&d, &mut r, len as u64).unwrap(),
        0,
        "already there"
    );
    let b = StoreDir::open(&t.path().join("b")).unwrap();
    assert_eq!(remote.fetch_blob(&d, &b).unwrap(), len as u64);
    assert_eq!(b.read(&d).unwrap(), bytes);
}
