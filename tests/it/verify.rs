//! `w4b keygen` and `w4b verify` through the real binary: a manifest made with the
//! library, signed with a key the binary generated, checked against artifacts on disk.
//! Every case asserts the exact exit bit mask.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::Digest as _;
use w4b::manifest::dsse::{Envelope, SecretKey, IN_TOTO_PAYLOAD_TYPE};
use w4b::manifest::{Definition, Manifest, ManifestInput, ResolvedDependency, StepInfo, StepOutput, Subject};

use crate::env::TestEnv;

const IMAGE: &[u8] = b"a small stand-in for a disk image\n";

fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn input() -> ManifestInput {
    ManifestInput {
        target: "//images:demo".into(),
        subjects: vec![Subject {
            name: "demo.img".into(),
            sha256: hex::encode(sha2::Sha256::digest(IMAGE)),
            blake3: b3(IMAGE),
            size: IMAGE.len() as u64,
        }],
        epoch: 1_700_000_000,
        epoch_source: w4b::manifest::EpochSource::BaseContent {
            base: "//bases:pi".into(),
        },
        w4b_version: "0.1.0".into(),
        definitions: vec![Definition {
            path: "defs/images/demo.yaml".into(),
            blake3: b3(b"demo.yaml"),
        }],
        dependencies: vec![ResolvedDependency {
            uri: "https://example.org/base.img.xz".into(),
            sha256: hex::encode(sha2::Sha256::digest(b"base")),
            name: Some("base".into()),
        }],
        packages: vec![],
        steps: vec![
            StepInfo {
                name: "//images:demo#fetch".into(),
                kind: "fetch".into(),
                key: b3(b"k1"),
                outputs: BTreeMap::from([("file".into(), StepOutput::blob(b3(b"base"), 4))]),
                inputs: vec![],
            },
            StepInfo {
                name: "//images:demo#image".into(),
                kind: "image".into(),
                key: b3(b"k2"),
                outputs: BTreeMap::from([("image".into(), StepOutput::blob(b3(IMAGE), IMAGE.len() as u64))]),
                inputs: vec!["//images:demo#fetch".into()],
            },
        ],
        builder_id: "https://w4b.dev/builder/local".into(),
    }
}

/// A workspace-free directory with `demo.img`, a key pair from `w4b keygen`, a bare
/// manifest and a signed one.
fn setup() -> (TestEnv, SecretKey) {
    let env = TestEnv::new();
    env.write("out/demo.img", std::str::from_utf8(IMAGE).unwrap());
    let out = env.run(&["keygen", "--out", "keys/release"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = SecretKey::parse(&String::from_utf8(env.read("keys/release.key")).unwrap()).unwrap();
    let m = Manifest::build(&input()).unwrap();
    env.write("out/demo.manifest.json", &m.to_json().unwrap());
    let env_json = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &m.canonical_bytes().unwrap(), &key)
        .to_json()
        .unwrap();
    env.write("out/demo.signed.json", &env_json);
    (env, key)
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exited")
}

#[test]
fn keygen_writes_a_private_secret_and_refuses_to_overwrite() {
    let (env, key) = setup();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(env.path("keys/release.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public = String::from_utf8(env.read("keys/release.pub")).unwrap();
    assert_eq!(public, key.public().to_text());
    let again = env.run(&["keygen", "--out", "keys/release"]);
    assert_eq!(code(&again), 1);
    assert!(String::from_utf8_lossy(&again.stderr).contains("w4b::keygen::exists"));
    assert_eq!(env.read("keys/release.pub"), public.as_bytes());
}

#[test]
fn signed_manifest_with_its_artifact_verifies() {
    let (env, key) = setup();
    let out = env.run(&[
        "verify",
        "out/demo.signed.json",
        "--artifact",
        "out/demo.img",
        "--key",
        "keys/release.pub",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{text}");
    assert!(
        text.contains(&format!("valid (key `{}`)", key.public().keyid())),
        "{text}"
    );
    assert!(
        text.contains("`demo.img` ok (output of `//images:demo#image`)"),
        "{text}"
    );
    assert!(text.ends_with("verified\n"), "{text}");
}

#[test]
fn json_report_carries_the_bits_and_findings() {
    let (env, _) = setup();
    env.write("elsewhere/demo.img", "not the image");
    let out = env.run(&[
        "verify",
        "out/demo.manifest.json",
        "--artifact",
        "elsewhere/demo.img",
        "--key",
        "keys/release.pub",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 1 | 2);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["schema"], "w4b.verify/1");
    assert_eq!(v["exit"], 3);
    assert_eq!(v["signature"]["status"], "missing");
    assert_eq!(v["target"], "//images:demo");
    assert_eq!(v["artifacts"][0]["ok"], false);
}

#[test]
fn tampered_signature_sets_bit_2_and_wrong_key_too() {
    let (env, _) = setup();
    let mut e: Value = serde_json::from_slice(&env.read("out/demo.signed.json")).unwrap();
    let sig = e["signatures"][0]["sig"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('A') {
        sig.replacen('A', "B", 1)
    } else {
        format!("A{}", &sig[1..])
    };
    e["signatures"][0]["sig"] = Value::String(flipped);
    env.write("out/tampered.json", &serde_json::to_string(&e).unwrap());
    let out = env.run(&["verify", "out/tampered.json", "--key", "keys/release.pub"]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stdout));

    assert!(env.run(&["keygen", "--out", "keys/other"]).status.success());
    let out = env.run(&["verify", "out/demo.signed.json", "--key", "keys/other.pub"]);
    assert_eq!(code(&out), 2);
    // Without `--key`, the signature is not checked and nothing else is wrong.
    assert_eq!(code(&env.run(&["verify", "out/tampered.json"])), 0);
}

#[test]
fn unknown_artifact_sets_bit_1_and_broken_graph_bit_4() {
    let (env, _) = setup();
    env.write("out/other.img", "x");
    let out = env.run(&["verify", "out/demo.manifest.json", "--artifact", "out/other.img"]);
    assert_eq!(code(&out), 1);

    let mut i = input();
    i.steps[0].inputs.push("//images:demo#ghost".into());
    env.write(
        "out/broken.json",
        &Manifest::build(&i).unwrap().to_json().unwrap(),
    );
    let out = env.run(&["verify", "out/broken.json", "--artifact", "out/demo.img"]);
    assert_eq!(code(&out), 4);
    assert!(String::from_utf8_lossy(&out.stdout).contains("w4b::verify::dangling_input"));
}

#[test]
fn unreadable_inputs_are_bits_too() {
    let (env, _) = setup();
    let out = env.run(&["verify", "out/missing.json"]);
    assert_eq!(code(&out), 4);
    let out = env.run(&["verify", "out/demo.signed.json", "--key", "keys/missing.pub"]);
    assert_eq!(code(&out), 4 | 2);
    let out = env.run(&[
        "verify",
        "out/demo.manifest.json",
        "--artifact",
        "out/missing.img",
    ]);
    assert_eq!(code(&out), 4 | 1);
}
