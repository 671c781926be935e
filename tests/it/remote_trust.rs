//! A shared remote cache that someone else can write to: a builder uses a remote record
//! only when a key it trusts signed it, ignores (and names) every other one, refuses to
//! choose between trusted signers that disagree, and publishes nothing it cannot sign.
//!
//! The attack these pin: whoever can write to the remote directory writes a blob (its name
//! is just its BLAKE3) and a record for a real step key naming it; a fresh builder, even
//! with `--remote-read-only`, used to export those bytes and exit 0.

#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use w4b_cache::{Digest, OutputRef, Record};

use crate::env::{copy_dir, TestEnv};
use crate::fixture::{demo, steps, ALL_STEPS};

const TAR: &str = "//images:demo#tar";
const FORGED: &[u8] = b"forged bytes, not an archive of the demo image\n";

/// A writer's build of the demo into `remote`, signed with a fresh key: the environment,
/// the genuine archive, and the key pair.
fn published(remote: &Path) -> (TestEnv, Vec<u8>, PathBuf, PathBuf) {
    let env = demo();
    let (key, public) = env.keygen("ci");
    let b = env.build(&[
        "//images:demo",
        "--remote-cache",
        remote.to_str().unwrap(),
        "--remote-sign-key",
        key.to_str().unwrap(),
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert!(!b.stderr().contains("warning"), "{}", b.stderr());
    let out = env.read("out/demo.tar.zst");
    (env, out, key, public)
}

/// A builder with the same workspace and a fresh, empty local cache.
fn fresh(from: &TestEnv, name: &str) -> TestEnv {
    let mut env = TestEnv::new();
    env.cache = from.root.path().join(name);
    std::fs::remove_dir_all(&env.ws).unwrap();
    copy_dir(&from.ws, &env.ws);
    let _ = std::fs::remove_dir_all(env.ws.join("out"));
    env
}

/// Every record file in `remote` of the step named `step`, with its JSON.
fn records_of(remote: &Path, step: &str) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut stack = vec![remote.join("v1/records")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(&p).unwrap()) {
                if v["step"] == step {
                    out.push((p, v));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes `bytes` into `remote` as a blob, the way anyone with write access could.
fn plant_blob(remote: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    let hex = d.to_hex();
    let p = remote.join("v1/blobs").join(&hex[..2]).join(&hex);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    d
}

/// The genuine tar record, re-pointed at `blob`, without a signature.
fn forged_record(remote: &Path, blob: Digest, size: u64) -> Record {
    let (_, genuine) = records_of(remote, TAR).remove(0);
    let mut r: Record = serde_json::from_value(genuine).unwrap();
    r.signature = None;
    for o in r.outputs.values_mut() {
        *o = OutputRef { digest: blob, size };
    }
    r
}

/// Files `r` in `remote` under the name its outputs (and signer, if signed) give it.
fn plant_record(remote: &Path, r: &Record) -> PathBuf {
    let hex = r.key.to_hex();
    let name = match &r.signature {
        None => format!("{}.json", r.outputs_digest()),
        Some(s) => format!("{}.{}.json", r.outputs_digest(), s.keyid),
    };
    let p = remote.join("v1/records").join(&hex[..2]).join(&hex).join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, r.to_json()).unwrap();
    p
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_forged_remote_record_is_ignored_and_the_genuine_bytes_come_out() {
    let t = tempfile::tempdir().unwrap();
    let remote = t.path().join("remote");
    let (writer, genuine, _key, public) = published(&remote);
    let blob = plant_blob(&remote, FORGED);
    let forged = forged_record(&remote, blob, FORGED.len() as u64);
    plant_record(&remote, &forged);
    // The same forgery wearing the genuine record's signature.
    let (_, genuine_record) = records_of(&remote, TAR).remove(0);
    let mut tampered = forged.clone();
    tampered.signature = serde_json::from_value(genuine_record["signature"].clone()).unwrap();
    assert!(tampered.signature.is_some());
    plant_record(&remote, &tampered);
    assert_eq!(records_of(&remote, TAR).len(), 3);

    // Beside the genuine record: the genuine one is used, the forgeries are named.
    let reader = fresh(&writer, "cache-reader");
    let b = reader.build(&[
        "//images:demo",
        "--remote-cache",
        arg(&remote),
        "--remote-read-only",
        "--remote-trusted-key",
        arg(&public),
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(reader.read("out/demo.tar.zst"), genuine);
    assert_eq!(b.ran(), Vec::<String>::new());
    let err = b.stderr();
    assert!(
        err.contains(&format!("ignored a remote cache record for `{TAR}`"))
            && err.contains("it is not signed"),
        "{err}"
    );
    assert!(err.contains("does not verify"), "{err}");

    // Alone: nothing is used, the step runs here, and the output is still genuine.
    let (genuine_path, _) = records_of(&remote, TAR)
        .into_iter()
        .find(|(_, v)| v["outputs"] != serde_json::to_value(&forged.outputs).unwrap())
        .unwrap();
    std::fs::remove_file(genuine_path).unwrap();
    let reader = fresh(&writer, "cache-reader2");
    let b = reader.build(&[
        "//images:demo",
        "--remote-cache",
        arg(&remote),
        "--remote-read-only",
        "--remote-trusted-key",
        arg(&public),
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&[TAR]));
    assert_eq!(reader.read("out/demo.tar.zst"), genuine);
    let miss = b
        .events
        .iter()
        .find(|e| e["event"] == "step-finished" && e["step"] == TAR)
        .map(|e| e["miss"].clone())
        .unwrap();
    assert_eq!(miss["reason"], "remote-untrusted", "{miss}");
    assert!(!reader
        .cache
        .join("v1/blobs")
        .join(&blob.to_hex()[..2])
        .join(blob.to_hex())
        .exists());
}

#[test]
fn a_record_signed_by_an_untrusted_key_is_ignored_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let remote = t.path().join("remote");
    let (writer, genuine, _key, _public) = published(&remote);
    let (_, other_public) = writer.keygen("other");
    let signer_id = records_of(&remote, TAR)[0].1["signature"]["keyid"]
        .as_str()
        .unwrap()
        .to_owned();

    let reader = fresh(&writer, "cache-reader");
    let b = reader.build(&[
        "//images:demo",
        "--remote-cache",
        arg(&remote),
        "--remote-read-only",
        "--remote-trusted-key",
        arg(&other_public),
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&ALL_STEPS));
    assert_eq!(reader.read("out/demo.tar.zst"), genuine);
    let err = b.stderr();
    assert!(
        err.contains(&format!("signed by key `{signer_id}`, which is not trusted")),
        "{err}"
    );

    // Trusting nobody: every record is ignored, and the help says how to trust.
    let reader = fresh(&writer, "cache-reader2");
    let b = reader.build(&[
        "//images:demo",
        "--remote-cache",
        arg(&remote),
        "--remote-read-only",
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&ALL_STEPS));
    assert!(b.stderr().contains("cache.trusted_keys"), "{}", b.stderr());
}

#[test]
fn a_record_signed_by_a_trusted_key_is_a_cache_hit() {
    let t = tempfile::tempdir().unwrap();
    let remote = t.path().join("remote");
    let (writer, genuine, _key, public) = published(&remote);
    // Configured in `w4b.yaml`, inline, as a fleet would.
    let reader = fresh(&writer, "cache-reader");
    let text = std::fs::read_to_string(&public).unwrap();
    reader.write(
        "w4b.yaml",
        &format!(
            "cache:\n  remote: {}\n  remote_read_only: true\n  trusted_keys:\n    - \"{}\"\n",
            remote.display(),
            text.trim()
        ),
    );
    let b = reader.build(&["//images:demo"]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), Vec::<String>::new());
    assert_eq!(b.cached(), steps(&ALL_STEPS));
    assert_eq!(reader.read("out/demo.tar.zst"), genuine);
    assert!(!b.stderr().contains("warning"), "{}", b.stderr());
    // The local copies are the builder's own: unsigned.
    let local = records_of(&reader.cache, TAR);
    assert_eq!(local.len(), 1);
    assert!(local[0].1.get("signature").is_none(), "{:#}", local[0].1);
    // And `cache verify --remote` finds nothing to report.
    let out = reader.run(&["cache", "verify", "--remote"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("trust: 0 conflict(s), 0 record(s)"), "{text}");
}

#[test]
fn trusted_signers_that_disagree_are_reported_and_the_step_runs_here() {
    let t = tempfile::tempdir().unwrap();
    let remote = t.path().join("remote");
    let (writer, genuine, _key, public) = published(&remote);
    let (other_key, other_public) = writer.keygen("other");
    // The second trusted signer vouches for other outputs of the same step key.
    let blob = plant_blob(&remote, FORGED);
    let record = forged_record(&remote, blob, FORGED.len() as u64);
    let secret =
        w4b::manifest::dsse::SecretKey::parse(&std::fs::read_to_string(&other_key).unwrap()).unwrap();
    let signed = w4b::trust::RemoteTrust::new(Some(secret), Vec::new())
        .sign(&record)
        .unwrap();
    plant_record(&remote, &signed);

    let reader = fresh(&writer, "cache-reader");
    let b = reader.build(&[
        "//images:demo",
        "--remote-cache",
        arg(&remote),
        "--remote-read-only",
        "--remote-trusted-key",
        &format!("{},{}", arg(&public), arg(&other_public)),
    ]);
    assert!(b.ok(), "{}", b.stderr());
    assert_eq!(b.ran(), steps(&[TAR]));
    assert_eq!(reader.read("out/demo.tar.zst"), genuine);
    let err = b.stderr();
    let genuine_outputs = records_of(&remote, TAR)
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| !p.to_string_lossy().contains(&signed.outputs_digest().to_hex()))
        .unwrap();
    let genuine_outputs = genuine_outputs.file_name().unwrap().to_string_lossy()[..64].to_owned();
    assert!(
        err.contains(&format!("warning: trusted signers disagree on `{TAR}`"))
            && err.contains(&signed.outputs_digest().to_hex())
            && err.contains(&genuine_outputs)
            && err.contains(&signed.signature.as_ref().unwrap().keyid),
        "{err}"
    );

    let out = reader.run(&[
        "cache",
        "verify",
        "--remote",
        "--remote-cache",
        arg(&remote),
        "--remote-trusted-key",
        &format!("{},{}", arg(&public), arg(&other_public)),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("has trusted records that disagree"), "{text}");
    assert!(text.contains(&signed.outputs_digest().to_hex()), "{text}");
}

#[test]
fn without_a_signing_key_nothing_is_published() {
    let t = tempfile::tempdir().unwrap();
    let remote = t.path().join("remote");
    let env = demo();
    let b = env.build(&["//images:demo", "--remote-cache", arg(&remote)]);
    assert!(b.ok(), "{}", b.stderr());
    let err = b.stderr();
    assert!(
        err.contains("were not published to the remote cache: no signing key is set"),
        "{err}"
    );
    assert!(err.contains("cache.signing_key"), "{err}");
    assert_eq!(
        err.matches("no signing key").count(),
        1,
        "one warning for the whole build: {err}"
    );
    assert!(records_of(&remote, TAR).is_empty());
    assert!(std::fs::read_dir(remote.join("v1/records"))
        .unwrap()
        .next()
        .is_none());

    // A signing key from the environment publishes, signed, under the signer's name.
    let (key, _) = env.keygen("ci");
    let mut env2 = fresh(&env, "cache2");
    env2.extra_env
        .insert("W4B_REMOTE_SIGN_KEY".into(), arg(&key).into());
    let b = env2.build(&["//images:demo", "--remote-cache", arg(&remote)]);
    assert!(b.ok(), "{}", b.stderr());
    let recs = records_of(&remote, TAR);
    assert_eq!(recs.len(), 1);
    let keyid = recs[0].1["signature"]["keyid"].as_str().unwrap().to_owned();
    assert!(recs[0].0.to_string_lossy().ends_with(&format!(".{keyid}.json")));
}

#[test]
fn a_bad_key_configuration_is_an_error_that_says_how_to_fix_it() {
    let env = demo();
    let remote = env.root.path().join("remote");
    let (key, public) = env.keygen("ci");
    for (args, code) in [
        (vec!["--remote-sign-key", arg(&public)], "w4b::cache::signing_key"),
        (
            vec!["--remote-sign-key", "missing.key"],
            "w4b::cache::signing_key",
        ),
        (vec!["--remote-trusted-key", arg(&key)], "w4b::cache::trusted_key"),
        (
            vec!["--remote-trusted-key", "nope.pub"],
            "w4b::cache::trusted_key",
        ),
    ] {
        let mut all = vec!["//images:demo", "--remote-cache", arg(&remote)];
        all.extend(args);
        let b = env.build(&all);
        assert!(!b.ok());
        assert!(b.stderr().contains(code), "{}", b.stderr());
        assert!(b.stderr().contains("keygen"), "{}", b.stderr());
    }
}
