//! What an auditor gets about an image's packages, end to end through the CLI: the build
//! manifest lists every installed package as `w4b.lock` pinned it (purl, sha256,
//! repository, signer), `w4b verify` counts them, `w4b sbom` turns the manifest into SPDX
//! 2.3 and CycloneDX 1.5 that the SPDX and CycloneDX projects' own validators accept,
//! and `w4b inspect --packages` reads the dpkg database of the built image and of its
//! base, judged against `dpkg-query` on the same database.
//!
//! One package install (the setup of `packages.rs`: a signed repository on 127.0.0.1, a
//! Debian arm64 base), one build.

#![allow(clippy::disallowed_methods)] // Runs make-test-base.sh, zstd, debugfs, dpkg-query.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::env::TestEnv;
use crate::packages::{debian_base, repository, root_partition};
use crate::testbase::sh;

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `dpkg-query`'s view of the dpkg database under `admindir`: name, version,
/// architecture, status, sorted as `w4b inspect --packages` sorts.
fn dpkg_query(admindir: &Path) -> Vec<(String, String, String, String)> {
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args([
            "-W",
            "-f",
            "${Package}\\t${Version}\\t${Architecture}\\t${Status}\\n",
        ])
        .output()
        .unwrap();
    let mut rows: Vec<(String, String, String, String)> = stdout(&out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].into(), f[2].into(), f[1].into(), f[3].into())
        })
        .collect();
    rows.sort();
    rows.into_iter()
        .map(|(name, arch, version, status)| (name, version, arch, status))
        .collect()
}

/// `w4b inspect --packages --format json`'s rows.
fn inspected(env: &TestEnv, image: &Path) -> (Value, Vec<(String, String, String, String)>) {
    let out = env.run(&[
        "inspect",
        "--packages",
        "--format",
        "json",
        image.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_owned();
            (s("name"), s("version"), s("architecture"), s("status"))
        })
        .collect();
    (v, rows)
}

#[test]
fn the_manifest_sbom_and_inspect_list_the_installed_packages() {
    if !crate::install::preconditions()
        || !crate::oracle::have_all(&["zstd", "sfdisk", "debugfs", "dpkg-query"])
    {
        return;
    }
    let Some(python) = crate::sbom_oracle::python() else {
        return;
    };
    let (root_dir, _) = match crate::install::fixture() {
        Ok(f) => f,
        Err(e) => {
            crate::oracle::skipped(&format!("the Debian mirror is unreachable or failed: {e}"));
            return;
        }
    };
    let Some(repo) = repository() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base = debian_base(&root_dir, tmp.path());
    let base_sha = {
        use sha2::{Digest as _, Sha256};
        hex::encode(Sha256::digest(&base))
    };
    let base_file = tmp.path().join("debian-base.img.zst");
    std::fs::write(&base_file, &base).unwrap();
    repo.server().serve("/debian-base.img.zst", base);

    let env = TestEnv::new();
    let defs = Path::new(env!("CARGO_MANIFEST_DIR")).join("defs/boards");
    crate::env::copy_dir(&defs, &env.ws.join("defs/boards"));
    std::fs::create_dir_all(env.ws.join("keys")).unwrap();
    std::fs::write(env.ws.join("keys/w4b-test.asc"), &repo.key).unwrap();
    env.write(
        "defs/bases/debian.yaml",
        &format!(
            "kind: base\nurl: {}\nsha256: {base_sha}\narch: arm64\nrelease: bookworm\ndate: 2023-11-14\n",
            repo.server().url("/debian-base.img.zst")
        ),
    );
    env.write(
        "defs/packages/hive.yaml",
        &format!(
            "kind: packages\nrepositories:\n  - {{url: \"{}\", suite: w4b-test, key: ../../keys/w4b-test.asc, fingerprint: \"{}\"}}\npackages: [w4b-hello, w4b-tool]\n",
            repo.url(),
            repo.fingerprint
        ),
    );
    env.write(
        "defs/images/edge.yaml",
        "kind: image\nbase: //bases:debian\nboard: //boards:pi4\npackages: [//packages:hive]\noutput: {level: 3}\n",
    );
    let out = env.run(&["lock"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = env.build(&["//images:edge"]);
    assert!(b.ok(), "{}", b.stderr());

    // The manifest: the three locked packages, with the lock's sha256, repository and
    // signer, as purl descriptors among the resolved dependencies.
    let lock: Value = serde_json::from_slice(&env.read("w4b.lock")).unwrap();
    let entry = &lock["entries"]["//packages:hive for arm64 on //bases:debian"];
    let locked_repo = &entry["repositories"][0];
    let manifest: Value = serde_json::from_slice(&env.read("out/edge.manifest.json")).unwrap();
    let deps = manifest["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let packages: Vec<&Value> = deps
        .iter()
        .filter(|d| d["uri"].as_str().unwrap().starts_with("pkg:deb/"))
        .collect();
    let purls: Vec<&str> = packages.iter().map(|d| d["uri"].as_str().unwrap()).collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/debian/w4b-hello@1.0-1?arch=arm64",
            "pkg:deb/debian/w4b-lib@1.1-1?arch=all",
            "pkg:deb/debian/w4b-tool@2.0-1?arch=arm64",
        ]
    );
    for (d, l) in packages.iter().zip(entry["packages"].as_array().unwrap()) {
        assert_eq!(d["name"], l["name"]);
        assert_eq!(d["digest"]["sha256"], l["sha256"], "the lock's sha256");
        let a = &d["annotations"];
        assert_eq!(a["version"], l["version"]);
        assert_eq!(a["architecture"], l["architecture"]);
        assert_eq!(a["size"], l["size"]);
        assert_eq!(a["repository"], locked_repo["name"]);
        assert_eq!(a["repositoryUrl"], locked_repo["url"]);
        assert_eq!(a["suite"], "w4b-test");
        assert_eq!(a["signedBy"], repo.fingerprint.as_str());
        assert_eq!(
            d["downloadLocation"].as_str().unwrap(),
            format!("{}/{}", repo.url(), l["filename"].as_str().unwrap())
        );
    }
    // `w4b verify` still passes and counts them.
    let out = env.run(&[
        "verify",
        "out/edge.manifest.json",
        "--artifact",
        "out/edge.img.zst",
    ]);
    let text = stdout(&out);
    assert!(text.contains("3 installed package(s)"), "{text}");

    // SPDX 2.3: from the image (its manifest beside it) or the manifest, the same bytes,
    // accepted by spdx-tools.
    let out = env.run(&["sbom", "out/edge.img.zst", "-o", "edge.spdx.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spdx_text = String::from_utf8(env.read("edge.spdx.json")).unwrap();
    assert_eq!(
        stdout(&env.run(&["sbom", "out/edge.manifest.json", "--format", "spdx"])),
        spdx_text,
        "deterministic, whichever way the manifest is named"
    );
    let verdict = crate::sbom_oracle::check_spdx(&python, &env.path("edge.spdx.json"))
        .unwrap_or_else(|e| panic!("spdx-tools rejects the SBOM: {e}\n{spdx_text}"));
    // The image, its block map, the base and the three packages.
    assert!(verdict.contains("6 packages"), "{verdict}");
    let spdx: Value = serde_json::from_str(&spdx_text).unwrap();
    assert_eq!(
        spdx["creationInfo"]["created"], "2023-11-14T00:00:00Z",
        "the epoch"
    );
    let spdx_purls: Vec<&str> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    assert_eq!(spdx_purls, purls);
    // The test repository is an address, which SPDX's URL grammar does not admit: the
    // location is `NOASSERTION` and the comment names the repository.
    let hello = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "w4b-hello")
        .unwrap();
    assert_eq!(hello["downloadLocation"], "NOASSERTION");
    assert!(
        hello["comment"]
            .as_str()
            .unwrap()
            .contains(&format!("index signed by key {}", repo.fingerprint)),
        "{hello}"
    );

    // CycloneDX 1.5, accepted by cyclonedx-python-lib's strict schema validation.
    let out = env.run(&["sbom", "out/edge.manifest.json", "--format", "cyclonedx"]);
    let cdx_text = stdout(&out);
    std::fs::write(tmp.path().join("edge.cdx.json"), &cdx_text).unwrap();
    crate::sbom_oracle::check_cyclonedx(&python, &tmp.path().join("edge.cdx.json"))
        .unwrap_or_else(|e| panic!("CycloneDX validation fails: {e}\n{cdx_text}"));
    let cdx: Value = serde_json::from_str(&cdx_text).unwrap();
    let hashes: Vec<&str> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "library")
        .map(|c| c["hashes"][0]["content"].as_str().unwrap())
        .collect();
    let locked: Vec<&str> = entry["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(hashes, locked);

    // An image that is not its manifest's subject gives no SBOM.
    std::fs::copy(
        env.path("out/edge.manifest.json"),
        tmp.path().join("edge.manifest.json"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("edge.img.zst"), b"another image").unwrap();
    let out = env.run(&["sbom", tmp.path().join("edge.img.zst").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("w4b::sbom::not_the_image"), "{err}");

    // `inspect --packages` on the built image, judged by dpkg-query on the database
    // `debugfs` copies out of the same root filesystem.
    let (report, rows) = inspected(&env, &env.path("out/edge.img.zst"));
    assert_eq!(report["schema"], "w4b.inspect.packages/1");
    assert_eq!(report["partition"], 2);
    let rootfs = root_partition(&env.path("out/edge.img.zst"), tmp.path());
    sh(&format!(
        "debugfs -R 'rdump /var/lib/dpkg {}' '{}' 2>/dev/null",
        tmp.path().display(),
        rootfs.display()
    ));
    std::fs::remove_file(&rootfs).unwrap();
    assert_eq!(rows, dpkg_query(&tmp.path().join("dpkg")));
    for name in ["w4b-hello", "w4b-lib", "w4b-tool"] {
        assert!(
            rows.iter().any(|r| r.0 == name && r.3 == "install ok installed"),
            "{name}: {rows:?}"
        );
    }
    let text = stdout(&env.run(&["inspect", "--packages", "out/edge.img.zst"]));
    assert!(
        text.lines().any(|l| l.starts_with("w4b-tool ")
            && l.contains("2.0-1")
            && l.ends_with("install ok installed")),
        "{text}"
    );
    // `--message-format json` asks for JSON too.
    let out = env.run(&[
        "--message-format",
        "json",
        "inspect",
        "--packages",
        "out/edge.img.zst",
    ]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["packages"].as_array().unwrap().len(), rows.len());

    // And on the base as downloaded: the vendor's database, none of ours.
    let (_, rows) = inspected(&env, &base_file);
    assert_eq!(rows, dpkg_query(&root_dir.join("var/lib/dpkg")));
    assert!(!rows.iter().any(|r| r.0 == "w4b-hello"));
}

#[test]
fn inspect_packages_says_when_an_image_has_no_dpkg_database() {
    let Some(images) = crate::testbase::images() else {
        return;
    };
    let env = TestEnv::new();
    let out = env.run(&["inspect", "--packages", images.raw.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // miette wraps at 100 columns, and the image's path may be long: compare unwrapped.
    let flat: String = err.chars().filter(|c| !c.is_whitespace() && *c != '|').collect();
    assert!(
        err.contains("w4b::inspect::no_dpkg") && flat.contains("/var/lib/dpkg/status"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn sbom_without_a_manifest_or_from_an_edited_one_explains() {
    let env = TestEnv::new();
    std::fs::write(env.path("north.img.zst"), b"not an image").unwrap();
    let out = env.run(&["sbom", "north.img.zst"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w4b::sbom::no_manifest") && err.contains("north.manifest.json"),
        "{err}"
    );

    std::fs::write(env.path("edited.manifest.json"), br#"{"_type": "x"}"#).unwrap();
    let out = env.run(&["sbom", "edited.manifest.json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("w4b::sbom::bad_manifest"), "{err}");
}
