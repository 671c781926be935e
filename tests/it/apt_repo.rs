//! Signed package repositories end to end: a repository built by `dpkg-deb`,
//! `apt-ftparchive` and `gpg` (tests/support/aptrepo.rs), served on 127.0.0.1, checked by
//! `w4b::apt` link by link — `InRelease` signature → `Release` → `Packages` → `.deb` —
//! with each failure a mirror or an attacker can cause; then Debian's real archive,
//! verified against the host's `debian-archive-keyring`, when the mirror is reachable.

#![allow(clippy::disallowed_methods)] // the oracles are spawned; the real mirror is read

use std::process::Command;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use w4b::apt::release::{verify_index, Compression, Release, ReleaseError};
use w4b::apt::signature::{verify_clearsigned, verify_detached, Fingerprint, Keyring, SignatureError};
use w4b::apt::sources::{read_host, SignedBy};

use crate::aptrepo::{AptRepo, Deb, Signing, Tamper, EPOCH};

/// The packages of the common repository: dependencies of every shape the resolver must
/// read (versioned, alternatives, virtual via `Provides`, `Pre-Depends`), a maintainer
/// script that creates a file, a conffile, and `arm64` next to `all`.
fn packages(builder: crate::aptrepo::AptRepoBuilder) -> crate::aptrepo::AptRepoBuilder {
    builder
        .package(
            Deb::new("hello", "1.0-1", "arm64")
                .depends("libfoo2 (>= 2.0), hello-data (= 1.0-1), mail-transport-agent | exim4")
                .pre_depends("init-system-helpers (>= 1.54~)")
                .postinst("touch /var/lib/hello/installed")
                .conffile("/etc/hello.conf", b"greeting = hello\n")
                .executable("/usr/bin/hello", b"#!/bin/sh\necho hello\n"),
        )
        .package(
            Deb::new("libfoo2", "2.1-3", "arm64")
                .provides("libfoo (= 2.1)")
                .file("/usr/lib/aarch64-linux-gnu/libfoo.so.2", b"\x7fELF not really"),
        )
        .package(Deb::new("hello-data", "1.0-1", "all").file("/usr/share/hello/words", b"hi\n"))
        .package(Deb::new("tiny-mta", "0.1", "arm64").provides("mail-transport-agent"))
}

fn repo_keyring(repo: &AptRepo) -> Keyring {
    let keys = Keyring::from_bytes(&repo.key).expect("the exported key reads");
    let fp: Fingerprint = repo.fingerprint.parse().expect("gpg prints fingerprints");
    keys.select(&fp).expect("the keyring holds the repository key")
}

/// A blocking client that never uses a proxy: everything here is on 127.0.0.1.
fn local_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn get(client: &reqwest::blocking::Client, url: &str) -> Vec<u8> {
    let response = client.get(url).send().unwrap_or_else(|e| panic!("{url}: {e}"));
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().expect("body").to_vec()
}

/// The paragraphs of a `Packages` file as (Package, Filename, Size, SHA256).
fn packages_entries(text: &str) -> Vec<(String, String, u64, String)> {
    text.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let field = |name: &str| {
                p.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_else(|| panic!("no `{name}` in\n{p}"))
                    .to_owned()
            };
            (
                field("Package"),
                field("Filename"),
                field("Size").parse().expect("Size"),
                field("SHA256"),
            )
        })
        .collect()
}

#[test]
fn a_signed_repository_verifies_link_by_link_over_http() {
    let Some(repo) = packages(AptRepo::builder()).build() else {
        return;
    };
    let client = local_client();
    let base = repo.url();
    let keys = repo_keyring(&repo);

    // InRelease: signed by the pinned key, payload is exactly the signed Release.
    let inrelease = get(&client, &format!("{base}/dists/w4b-test/InRelease"));
    let verified = verify_clearsigned(&inrelease, &keys).expect("InRelease verifies");
    assert_eq!(verified.signer().primary.as_str(), repo.fingerprint);
    assert_eq!(verified.signer().signed_at, EPOCH);
    let release_file = get(&client, &format!("{base}/dists/w4b-test/Release"));
    assert_eq!(
        verified.payload,
        release_file.strip_suffix(b"\n").unwrap(),
        "the clear-signed payload is the Release file, as signed"
    );

    // Release + Release.gpg: the same key, the same bytes.
    let detached = get(&client, &format!("{base}/dists/w4b-test/Release.gpg"));
    let verified_detached = verify_detached(&release_file, &detached, &keys).unwrap();
    assert_eq!(verified_detached.signer().key, verified.signer().key);

    // gpgv, the tool apt itself runs, agrees on both files.
    if crate::oracle::have("gpgv") {
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("ring.gpg");
        let dearmored = Command::new("gpg")
            .args(["--batch", "--dearmor", "--output"])
            .arg(&ring)
            .arg(write(dir.path(), "key.asc", &repo.key))
            .status()
            .unwrap();
        assert!(dearmored.success());
        let inr = write(dir.path(), "InRelease", &inrelease);
        let status = Command::new("gpgv")
            .arg("--keyring")
            .arg(&ring)
            .arg(&inr)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
    }

    // Release: the suite and the codename both answer; the list has every index.
    let release = Release::parse_for_suite(&verified.payload, "w4b-test").unwrap();
    release.check_suite("hive").unwrap();
    assert_eq!(release.architectures, ["arm64", "armhf"]);
    assert_eq!(release.components, ["main"]);
    assert_eq!(release.origin.as_deref(), Some("W4B"));
    assert_eq!(release.date.as_ref().map(|d| d.1), Some(EPOCH as i64));

    // Packages.xz: preferred, verified, decompressed, cross-checked with the plain entry.
    let index = release.index("main/binary-arm64/Packages").unwrap();
    assert_eq!(index.compression, Compression::Xz);
    assert!(index.uncompressed.is_some());
    let packed = get(&client, &format!("{base}/dists/w4b-test/{}", index.path));
    let plain = verify_index(&packed, &index, 1 << 20).unwrap();
    assert_eq!(plain, repo.dist_file("main/binary-arm64/Packages"));
    let text = String::from_utf8(plain).unwrap();
    let entries = packages_entries(&text);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names.len(), 4, "{text}");
    for name in ["hello", "hello-data", "libfoo2", "tiny-mta"] {
        assert!(names.contains(&name), "{name} missing from\n{text}");
    }
    assert!(text.contains("Depends: libfoo2 (>= 2.0), hello-data (= 1.0-1), mail-transport-agent | exim4"));
    assert!(text.contains("Pre-Depends: init-system-helpers (>= 1.54~)"));
    assert!(text.contains("Provides: libfoo (= 2.1)"));
    // `all` packages are in every architecture's index, `arm64` ones only in arm64's.
    let armhf = verify_index(
        &get(
            &client,
            &format!("{base}/dists/w4b-test/main/binary-armhf/Packages.xz"),
        ),
        &release.index("main/binary-armhf/Packages").unwrap(),
        1 << 20,
    )
    .unwrap();
    let armhf_names: Vec<String> = packages_entries(&String::from_utf8(armhf).unwrap())
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(armhf_names, ["hello-data"]);

    // Each .deb: the bytes the Packages entry names, and what dpkg-deb says it holds.
    let dir = tempfile::tempdir().unwrap();
    for (name, filename, size, sha256) in &entries {
        let deb = get(&client, &format!("{base}/{filename}"));
        assert_eq!(deb.len() as u64, *size, "{name}");
        assert_eq!(hex::encode(Sha256::digest(&deb)), *sha256, "{name}");
        if name == "hello" {
            let path = write(dir.path(), "hello.deb", &deb);
            let info = Command::new("dpkg-deb")
                .arg("--info")
                .arg(&path)
                .output()
                .unwrap();
            let info = String::from_utf8_lossy(&info.stdout);
            assert!(info.contains("postinst") && info.contains("conffiles"), "{info}");
            let conffiles = Command::new("dpkg-deb")
                .args(["--info"])
                .arg(&path)
                .arg("conffiles")
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&conffiles.stdout), "/etc/hello.conf\n");
        }
    }
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn an_rsa_key_with_sha512_verifies() {
    let Some(repo) = AptRepo::builder().rsa().offline().build() else {
        return;
    };
    let verified = verify_clearsigned(&repo.dist_file("InRelease"), &repo_keyring(&repo)).unwrap();
    assert_eq!(verified.signer().primary.as_str(), repo.fingerprint);
}

#[test]
fn a_changed_payload_is_a_bad_signature() {
    let Some(repo) = packages(AptRepo::builder()).offline().build() else {
        return;
    };
    let keys = repo_keyring(&repo);
    let inrelease = String::from_utf8(repo.dist_file("InRelease")).unwrap();
    // A mirror swaps the suite (a downgrade) and keeps the signature.
    let tampered = inrelease.replace("Suite: w4b-test", "Suite: w4b-tost");
    assert_ne!(tampered, inrelease);
    match verify_clearsigned(tampered.as_bytes(), &keys) {
        Err(SignatureError::BadSignature { fingerprint }) => {
            assert_eq!(fingerprint.as_str(), repo.fingerprint)
        }
        other => panic!("{other:?}"),
    }
    // The same for Release next to Release.gpg.
    let mut release = repo.dist_file("Release");
    release.extend_from_slice(b"Extra: field\n");
    assert!(matches!(
        verify_detached(&release, &repo.dist_file("Release.gpg"), &keys),
        Err(SignatureError::BadSignature { .. })
    ));
    // Trailing blanks are not covered by the signature, so they are not in the payload.
    let padded = inrelease.replacen("Suite: w4b-test\n", "Suite: w4b-test   \n", 1);
    let verified = verify_clearsigned(padded.as_bytes(), &keys).unwrap();
    assert!(!String::from_utf8(verified.payload)
        .unwrap()
        .contains("w4b-test   "));
}

#[test]
fn text_outside_the_signed_part_is_refused() {
    let Some(repo) = AptRepo::builder().offline().build() else {
        return;
    };
    let keys = repo_keyring(&repo);
    let inrelease = String::from_utf8(repo.dist_file("InRelease")).unwrap();
    let before = format!("Suite: evil\nSHA256:\n{inrelease}");
    let after = format!("{inrelease}Suite: evil\n");
    let twice = format!("{inrelease}{inrelease}");
    for (what, text) in [("before", before), ("after", after), ("a second message", twice)] {
        match verify_clearsigned(text.as_bytes(), &keys) {
            Err(SignatureError::MalformedArmor { .. }) => {}
            other => panic!("text {what} the signed message: {other:?}"),
        }
    }
}

#[test]
fn an_unsigned_repository_is_not_signed() {
    let Some(repo) = AptRepo::builder().signing(Signing::Unsigned).offline().build() else {
        return;
    };
    assert!(!repo.has_file("dists/w4b-test/InRelease"));
    assert!(!repo.has_file("dists/w4b-test/Release.gpg"));
    assert!(matches!(
        verify_clearsigned(&repo.dist_file("Release"), &repo_keyring(&repo)),
        Err(SignatureError::NotSigned)
    ));
    assert!(matches!(
        verify_detached(&repo.dist_file("Release"), b"", &repo_keyring(&repo)),
        Err(SignatureError::NotSigned | SignatureError::MalformedArmor { .. })
    ));
}

#[test]
fn a_repository_signed_by_another_key_names_that_key() {
    let Some(repo) = AptRepo::builder().signing(Signing::OtherKey).offline().build() else {
        return;
    };
    let other = repo.other_fingerprint.clone().unwrap();
    let inrelease = repo.dist_file("InRelease");
    match verify_clearsigned(&inrelease, &repo_keyring(&repo)) {
        Err(e @ SignatureError::UnknownKey { .. }) => {
            let SignatureError::UnknownKey { issuers } = &e else {
                unreachable!()
            };
            assert_eq!(issuers, std::slice::from_ref(&other));
            assert!(e.to_string().contains(&other), "{e}");
        }
        other => panic!("{other:?}"),
    }

    // Pinning: a keyring file with both keys verifies only with the one selected.
    let mut both = repo.key.clone();
    both.extend_from_slice(repo.other_key.as_ref().unwrap());
    let ring = Keyring::from_bytes(&both).unwrap();
    let mut fps: Vec<String> = ring.fingerprints().iter().map(|f| f.to_string()).collect();
    fps.sort();
    let mut expected = vec![repo.fingerprint.clone(), other.clone()];
    expected.sort();
    assert_eq!(fps, expected);
    let pinned_other = ring.select(&other.parse().unwrap()).unwrap();
    assert_eq!(
        verify_clearsigned(&inrelease, &pinned_other)
            .unwrap()
            .signer()
            .primary
            .as_str(),
        other
    );
    let pinned_repo = ring.select(&repo.fingerprint.parse().unwrap()).unwrap();
    assert!(matches!(
        verify_clearsigned(&inrelease, &pinned_repo),
        Err(SignatureError::UnknownKey { .. })
    ));
    let absent: Fingerprint = "00".repeat(20).parse().unwrap();
    assert!(matches!(
        ring.select(&absent),
        Err(SignatureError::KeyNotInKeyring { .. })
    ));
}

#[test]
fn a_sha1_signature_is_refused() {
    let Some(repo) = AptRepo::builder().signing(Signing::Sha1).offline().build() else {
        return;
    };
    let inrelease = repo.dist_file("InRelease");
    assert!(
        String::from_utf8_lossy(&inrelease).contains("Hash: SHA1"),
        "gpg made a SHA-1 signature"
    );
    match verify_clearsigned(&inrelease, &repo_keyring(&repo)) {
        Err(SignatureError::WeakDigest { algorithm, .. }) => assert_eq!(algorithm, "SHA1"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        verify_detached(
            &repo.dist_file("Release"),
            &repo.dist_file("Release.gpg"),
            &repo_keyring(&repo)
        ),
        Err(SignatureError::WeakDigest { .. })
    ));
}

#[test]
fn an_expired_key_is_refused_at_a_later_time() {
    let Some(repo) = AptRepo::builder().key_expires("1d").offline().build() else {
        return;
    };
    let inrelease = repo.dist_file("InRelease");
    // At signing time (and a day later, minus a second) the key was valid.
    verify_clearsigned(&inrelease, &repo_keyring(&repo)).unwrap();
    verify_clearsigned(&inrelease, &repo_keyring(&repo).at(EPOCH + 86_399)).unwrap();
    match verify_clearsigned(&inrelease, &repo_keyring(&repo).at(EPOCH + 2 * 86_400)) {
        Err(SignatureError::KeyExpired {
            fingerprint,
            expired_at,
        }) => {
            assert_eq!(fingerprint.as_str(), repo.fingerprint);
            assert_eq!(expired_at, EPOCH + 86_400);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_revoked_key_is_refused() {
    let Some(repo) = AptRepo::builder().revoked().offline().build() else {
        return;
    };
    match verify_clearsigned(&repo.dist_file("InRelease"), &repo_keyring(&repo)) {
        Err(SignatureError::KeyRevoked { fingerprint, .. }) => {
            assert_eq!(fingerprint.as_str(), repo.fingerprint)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_release_for_another_suite_is_refused() {
    let Some(repo) = AptRepo::builder()
        .suite("stable")
        .codename("bookworm")
        .offline()
        .build()
    else {
        return;
    };
    let verified = verify_clearsigned(&repo.dist_file("InRelease"), &repo_keyring(&repo)).unwrap();
    Release::parse_for_suite(&verified.payload, "bookworm").unwrap();
    Release::parse_for_suite(&verified.payload, "stable").unwrap();
    match Release::parse_for_suite(&verified.payload, "trixie") {
        Err(e @ ReleaseError::SuiteMismatch { .. }) => {
            let text = e.to_string();
            assert!(text.contains("`trixie`") && text.contains("`bookworm`"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_packages_index_that_does_not_match_the_signed_release_is_refused() {
    let Some(repo) = packages(AptRepo::builder())
        .tamper(Tamper::PackagesHash)
        .offline()
        .build()
    else {
        return;
    };
    // The signature is good: the lie is inside the signed file (or the index was swapped).
    let verified = verify_clearsigned(&repo.dist_file("InRelease"), &repo_keyring(&repo)).unwrap();
    let release = Release::parse_for_suite(&verified.payload, "w4b-test").unwrap();
    let index = release.index("main/binary-arm64/Packages").unwrap();
    match verify_index(&repo.dist_file(&index.path), &index, 1 << 20) {
        Err(ReleaseError::HashMismatch { path, .. }) => {
            assert_eq!(path, "main/binary-arm64/Packages.xz")
        }
        other => panic!("{other:?}"),
    }
    // The other architecture's index is untouched and still verifies.
    let armhf = release.index("main/binary-armhf/Packages").unwrap();
    verify_index(&repo.dist_file(&armhf.path), &armhf, 1 << 20).unwrap();
}

#[test]
fn a_deb_that_does_not_match_its_packages_entry_is_refused_by_the_downloader() {
    let Some(repo) = packages(AptRepo::builder())
        .tamper(Tamper::DebBytes("hello".into()))
        .build()
    else {
        return;
    };
    let verified = verify_clearsigned(&repo.dist_file("InRelease"), &repo_keyring(&repo)).unwrap();
    let release = Release::parse_for_suite(&verified.payload, "w4b-test").unwrap();
    let index = release.index("main/binary-arm64/Packages").unwrap();
    let text =
        String::from_utf8(verify_index(&repo.dist_file(&index.path), &index, 1 << 20).unwrap()).unwrap();
    let fetcher = w4b::download::Fetcher::new(&w4b::download::FetchConfig {
        system_proxy: false,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, filename, size, sha256) in packages_entries(&text) {
        let url = format!("{}/{filename}", repo.url());
        let digest = w4b::download::parse_sha256(&sha256).unwrap();
        let mut request = w4b::download::FetchRequest::new(&url, digest, "Packages");
        request.size = Some(size);
        request.retries = 0;
        let result = fetcher.fetch_to(&request, &dir.path().join(&sha256), &w4b::download::NoProgress);
        if name == "hello" {
            assert!(
                matches!(result, Err(w4b::download::FetchError::DigestMismatch { .. })),
                "{name}: {:?}",
                result.err()
            );
        } else {
            result.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// The host's Debian mirror, as apt is configured: `(uri, suite, keyring)` for the first
/// `deb` source that carries `bookworm` and names a keyring file.
fn host_bookworm() -> Option<(String, std::path::PathBuf)> {
    let sources = read_host(std::path::Path::new("/")).expect("the host's apt sources read");
    sources.into_iter().find_map(|s| {
        let keyring = match &s.signed_by {
            Some(SignedBy::Keyrings(k)) => k.first().cloned(),
            None => Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            _ => None,
        }?;
        s.suites
            .iter()
            .any(|x| x == "bookworm")
            .then_some((s.uri, keyring))
    })
}

#[test]
fn debian_bookworm_verifies_against_the_archive_keyring() {
    let keyring_path = std::path::Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    if !keyring_path.is_file() {
        crate::oracle::unavailable(
            "`/usr/share/keyrings/debian-archive-keyring.gpg` is missing (package `debian-archive-keyring`)",
        );
        return;
    }
    let Some((uri, signed_by)) = host_bookworm() else {
        crate::oracle::skipped("the host's apt sources name no `bookworm` mirror");
        return;
    };
    // The network is the one thing CI may lack too: a short connect timeout, then a
    // visible skip. Once connected, every failure is a failure.
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .user_agent(w4b::download::USER_AGENT)
        .build()
        .unwrap();
    let url = format!("{uri}/dists/bookworm/InRelease");
    let response = match client.get(&url).send() {
        Ok(r) => r,
        Err(e) if e.is_connect() || e.is_timeout() => {
            crate::oracle::skipped(&format!("the mirror `{uri}` is unreachable: {e}"));
            return;
        }
        Err(e) => panic!("{url}: {e}"),
    };
    assert!(response.status().is_success(), "{url}: {}", response.status());
    let inrelease = response.bytes().unwrap();

    let keys = Keyring::from_bytes(&std::fs::read(&signed_by).unwrap()).unwrap();
    assert!(keys.fingerprints().len() >= 3, "{:?}", keys.fingerprints());
    let verified = verify_clearsigned(&inrelease, &keys).expect("bookworm's InRelease verifies");
    // Debian signs with its archive keys' RSA 4096 subkeys and the release team's
    // Ed25519 key; every one of them that is in the keyring must have verified.
    let signers: Vec<&str> = verified.signers().map(|s| s.primary.as_str()).collect();
    assert!(
        signers.contains(&"B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"),
        "the bookworm archive key signed: {signers:?}"
    );
    let release = Release::parse_for_suite(&verified.payload, "bookworm").unwrap();
    assert_eq!(release.origin.as_deref(), Some("Debian"));
    assert!(release.architectures.iter().any(|a| a == "arm64"));

    // Pinning the bookworm archive key alone still verifies (its subkey signed).
    let pinned = keys
        .select(&"B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8".parse().unwrap())
        .expect("the bookworm archive key is in the keyring");
    let by_pinned = verify_clearsigned(&inrelease, &pinned).unwrap();
    assert_eq!(
        by_pinned.signer().primary.as_str(),
        "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"
    );
    assert_ne!(
        by_pinned.signer().key,
        by_pinned.signer().primary,
        "a subkey signs"
    );
    // Pinning that subkey alone (apt's `FPR!`) verifies with it.
    let subkey: Fingerprint = by_pinned.signer().key.clone();
    let by_subkey = verify_clearsigned(&inrelease, &keys.select(&subkey).unwrap()).unwrap();
    assert_eq!(by_subkey.signer().key, subkey);

    // The hash chain: Packages.xz for arm64, by hash when the archive offers it.
    let index = release.index("main/binary-arm64/Packages").unwrap();
    assert_eq!(index.compression, Compression::Xz);
    let path = if release.acquire_by_hash {
        index.by_hash_path()
    } else {
        index.path.clone()
    };
    let packed = client
        .get(format!("{uri}/dists/bookworm/{path}"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let plain = verify_index(&packed, &index, 512 << 20).expect("Packages.xz matches InRelease");
    let text = String::from_utf8(plain).unwrap();
    assert!(text.contains("\nPackage: base-files\n"), "a real Packages index");
}
