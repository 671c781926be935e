//! Software bills of materials from a manifest: SPDX 2.3 JSON and CycloneDX 1.5 JSON,
//! for `w4b sbom`. Pure: a statement in, bytes out, nothing else read.
//!
//! The SBOM says what the manifest says, in the vocabulary scanners (syft, grype, trivy,
//! Dependency-Track) read: the image (each subject but a block map) is the described
//! package; every installed Debian package is a package it contains, identified by its
//! purl, with the `.deb`'s sha256 and download location and, in a comment or properties,
//! the repository, suite and signer; the base image is the image's ancestor; files a
//! layer fetched are contained in it; a `.bmap` is a metafile of the image.
//!
//! Deterministic bytes: the same manifest always gives the same SBOM. The document's
//! time is the build's epoch, never the clock; its identity (SPDX `documentNamespace`,
//! CycloneDX `serialNumber`) is derived from the manifest's digest (sha256 of its
//! compact canonical statement, the bytes a DSSE envelope signs); the tool named as
//! creator is the w4b that built the image, from the manifest. Keys are written sorted,
//! lists in the manifest's order (sorted), and packages by purl.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use sha2::Digest as _;

use super::packages::{packages_of, PackageEntry};
use super::statement::{canonical_json, DependencyDescriptor, Statement, SubjectDescriptor};

/// Which SBOM format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    /// SPDX 2.3, JSON.
    Spdx,
    /// CycloneDX 1.5, JSON.
    CycloneDx,
}

/// The prefix of an SPDX `documentNamespace`; the target and the manifest digest follow.
pub const SPDX_NAMESPACE_PREFIX: &str = "https://w4b.dev/spdx/";

/// RFC 4122's name space for URLs, which `serialNumber` is a version-5 UUID in.
const UUID_NAMESPACE_URL: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SbomError {
    #[error(
        "the manifest of `{target}` names no image among its subjects, so an SBOM has nothing to describe"
    )]
    #[diagnostic(
        code(w4b::sbom::no_image),
        help("pass the `.manifest.json` that `w4b build` wrote beside the image")
    )]
    NoImage { target: String },

    #[error("the SBOM could not be encoded as JSON: {0}")]
    #[diagnostic(code(w4b::sbom::encode))]
    Encode(#[from] serde_json::Error),
}

/// The SBOM of `statement` in `format`: indented JSON with sorted keys and a final newline.
pub fn render(statement: &Statement, format: SbomFormat) -> Result<String, SbomError> {
    let model = Model::of(statement)?;
    let doc = match format {
        SbomFormat::Spdx => spdx(&model),
        SbomFormat::CycloneDx => cyclonedx(&model),
    };
    Ok(canonical_json(&doc, true)?)
}

/// The manifest's digest: sha256 (hex) of the compact canonical statement.
pub fn manifest_digest(statement: &Statement) -> Result<String, serde_json::Error> {
    let bytes = canonical_json(statement, false)?;
    Ok(hex::encode(sha2::Sha256::digest(bytes.as_bytes())))
}

/// `1700000000` → `2023-11-14T22:13:20Z`: seconds since the Unix epoch as an RFC 3339
/// UTC date and time (proleptic Gregorian calendar).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from a day count, by 400-year eras (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A version-5 (name-based, SHA-1) UUID of `name` in the URL name space, RFC 4122 §4.3.
pub fn uuid_v5_url(name: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(UUID_NAMESPACE_URL);
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    let x = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// What an SBOM says, gathered from the statement once for both formats.
struct Model<'a> {
    target: &'a str,
    created: String,
    tool_version: &'a str,
    namespace: String,
    digest: String,
    /// The image subjects: every subject but block maps. The first is the image.
    images: Vec<&'a SubjectDescriptor>,
    /// Block maps (`.bmap`) of the image.
    metafiles: Vec<&'a SubjectDescriptor>,
    /// The base image (the fetched dependency named `base`).
    base: Option<&'a DependencyDescriptor>,
    /// Other fetched files (a layer's `fetch`), named by their path in the image.
    fetched: Vec<&'a DependencyDescriptor>,
    packages: Vec<PackageEntry<'a>>,
}

impl<'a> Model<'a> {
    fn of(s: &'a Statement) -> Result<Model<'a>, SbomError> {
        let bd = &s.predicate.build_definition;
        let target = bd.external_parameters.target.as_str();
        let (metafiles, images): (Vec<_>, Vec<_>) = s.subject.iter().partition(|x| x.name.ends_with(".bmap"));
        if images.is_empty() {
            return Err(SbomError::NoImage {
                target: target.to_owned(),
            });
        }
        let others: Vec<&DependencyDescriptor> = bd
            .resolved_dependencies
            .iter()
            .filter(|d| !d.uri.starts_with("file:") && !d.uri.starts_with("pkg:"))
            .collect();
        let digest = manifest_digest(s)?;
        Ok(Model {
            target,
            created: rfc3339(bd.external_parameters.epoch),
            tool_version: &bd.internal_parameters.w4b_version,
            namespace: format!("{SPDX_NAMESPACE_PREFIX}{}-{digest}", slug(target)),
            digest,
            images,
            metafiles,
            base: others.iter().copied().find(|d| d.name.as_deref() == Some("base")),
            fetched: others
                .into_iter()
                .filter(|d| d.name.as_deref() != Some("base"))
                .collect(),
            packages: packages_of(s),
        })
    }
}

/// `//hives:north` → `hives-north`: a label as a URL path segment.
fn slug(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_owned()
}

/// The last path segment of a URL, for a package name (`raspios.img.xz`).
fn file_name_of(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(url)
}

/// What the repository line of a package says: where it came from and who vouches for it.
fn provenance(p: &PackageEntry<'_>) -> String {
    let a = p.annotations;
    let trust = if p.unsigned() {
        format!("{}: no signature vouches for its index", a.signed_by)
    } else {
        format!("index signed by key {}", a.signed_by)
    };
    format!(
        "architecture {}; from repository `{}` ({}, suite {}), {trust}",
        a.architecture, a.repository, a.repository_url, a.suite
    )
}

/// SPDX identifiers: `SPDXRef-` and letters, digits, `.` and `-` only, unique.
struct SpdxIds(BTreeSet<String>);

impl SpdxIds {
    fn make(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{clean}");
        let mut id = base.clone();
        let mut n = 1u32;
        while !self.0.insert(id.clone()) {
            n = n.saturating_add(1);
            id = format!("{base}-{n}");
        }
        id
    }
}

/// A `downloadLocation`: the URL when the SPDX grammar admits it, else `NOASSERTION`.
/// SPDX 2.3 (§7.7 and its URL pattern, which spdx-tools enforces) wants a host name with
/// a top-level domain: an address (`127.0.0.1`, `[::1]`) or `localhost` is not one, and
/// such a package says where it came from in its comment instead.
fn download_location(url: Option<&str>) -> String {
    match url {
        Some(u) if spdx_url(u) => u.to_owned(),
        _ => "NOASSERTION".to_owned(),
    }
}

/// `scheme://[userinfo@]host.tld[:port][/path]` with the schemes w4b fetches from.
fn spdx_url(u: &str) -> bool {
    let Some(rest) = ["https://", "http://", "ftp://"]
        .iter()
        .find_map(|scheme| u.strip_prefix(scheme))
    else {
        return false;
    };
    if u.contains(char::is_whitespace) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let Some((tld, names)) = labels.split_last() else {
        return false;
    };
    (2..=5).contains(&tld.len())
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
        && !names.is_empty()
        && names.iter().all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn spdx(m: &Model<'_>) -> Value {
    // Checksums are SHA256 only: SPDX 2.3 lists BLAKE3, but its reference validator
    // (spdx-tools 0.8) demands at least 256 hex digits of it, and SHA256 is what scanners
    // match on. The BLAKE3 of each subject is in its comment.
    let mut ids = SpdxIds(BTreeSet::new());
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let rel = |a: &str, kind: &str, b: &str| json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b});

    let mut image_ids = Vec::new();
    for img in &m.images {
        let id = ids.make("Image", &img.name);
        packages.push(json!({
            "SPDXID": id,
            "name": img.name,
            "packageFileName": img.name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "checksums": [{"algorithm": "SHA256", "checksumValue": img.digest.sha256}],
            "comment": format!("built by w4b from `{}`; blake3 {}", m.target, img.digest.blake3),
        }));
        relationships.push(rel("SPDXRef-DOCUMENT", "DESCRIBES", &id));
        image_ids.push(id);
    }
    // `images` is never empty (checked in `Model::of`).
    let image = image_ids.first().cloned().unwrap_or_default();
    for f in &m.metafiles {
        let id = ids.make("File", &f.name);
        packages.push(json!({
            "SPDXID": id,
            "name": f.name,
            "packageFileName": f.name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "FILE",
            "checksums": [{"algorithm": "SHA256", "checksumValue": f.digest.sha256}],
            "comment": format!("the image's block map (bmaptool); blake3 {}", f.digest.blake3),
        }));
        relationships.push(rel(&id, "METAFILE_OF", &image));
    }
    if let Some(base) = m.base {
        let name = file_name_of(&base.uri);
        let id = ids.make("Base", name);
        packages.push(json!({
            "SPDXID": id,
            "name": name,
            "downloadLocation": download_location(Some(&base.uri)),
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "checksums": sha256_checksum(base),
            "comment": format!("the base image the image was built on, from {}", base.uri),
        }));
        for img in &image_ids {
            relationships.push(rel(img, "DESCENDANT_OF", &id));
        }
    }
    for f in &m.fetched {
        let name = f.name.as_deref().unwrap_or_else(|| file_name_of(&f.uri));
        let id = ids.make("Fetched", name);
        packages.push(json!({
            "SPDXID": id,
            "name": name,
            "downloadLocation": download_location(Some(&f.uri)),
            "filesAnalyzed": false,
            "primaryPackagePurpose": "FILE",
            "checksums": sha256_checksum(f),
            "comment": format!("a file a layer fetched into the image, from {}", f.uri),
        }));
        relationships.push(rel(&image, "CONTAINS", &id));
    }
    for p in &m.packages {
        let a = p.annotations;
        let id = ids.make("Package-deb", &format!("{}-{}", p.name(), a.architecture));
        packages.push(json!({
            "SPDXID": id,
            "name": p.name(),
            "versionInfo": a.version,
            "downloadLocation": download_location(p.descriptor.download_location.as_deref()),
            "filesAnalyzed": false,
            "checksums": sha256_checksum(p.descriptor),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl(),
            }],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "supplier": "NOASSERTION",
            "comment": provenance(p),
        }));
        relationships.push(rel(&image, "CONTAINS", &id));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("w4b image {}", m.target),
        "documentNamespace": m.namespace,
        "creationInfo": {
            "created": m.created,
            "creators": [format!("Tool: w4b-{}", m.tool_version)],
            "comment": format!("From the build manifest with sha256 {} (its compact canonical statement); the time is the image's epoch.", m.digest),
        },
        "packages": packages,
        "relationships": relationships,
    })
}

fn sha256_checksum(d: &DependencyDescriptor) -> Value {
    match d.digest.get("sha256") {
        Some(h) => json!([{"algorithm": "SHA256", "checksumValue": h}]),
        None => json!([]),
    }
}

fn cdx_hashes(d: &DependencyDescriptor) -> Value {
    match d.digest.get("sha256") {
        Some(h) => json!([{"alg": "SHA-256", "content": h}]),
        None => json!([]),
    }
}

fn cyclonedx(m: &Model<'_>) -> Value {
    let subject = |s: &SubjectDescriptor, kind: &str| {
        json!({
            "type": kind,
            "bom-ref": format!("w4b:subject:{}", s.name),
            "name": s.name,
            "hashes": [
                {"alg": "SHA-256", "content": s.digest.sha256},
                {"alg": "BLAKE3", "content": s.digest.blake3},
            ],
        })
    };
    let fetched = |d: &DependencyDescriptor, name: &str, kind: &str, reference: String| {
        let mut c = json!({
            "type": kind,
            "bom-ref": reference,
            "name": name,
            "hashes": cdx_hashes(d),
        });
        if d.uri.contains("://") {
            c["externalReferences"] = json!([{"type": "distribution", "url": d.uri}]);
        }
        c
    };
    let image_ref = m
        .images
        .first()
        .map(|s| format!("w4b:subject:{}", s.name))
        .unwrap_or_default();
    let mut main = m
        .images
        .first()
        .map(|s| subject(s, "operating-system"))
        .unwrap_or(Value::Null);
    if let Some(base) = m.base {
        main["pedigree"] = json!({
            "ancestors": [fetched(base, file_name_of(&base.uri), "operating-system", "w4b:base".to_owned())],
        });
    }
    let mut components = Vec::new();
    let mut contained = Vec::new();
    for s in m.images.iter().skip(1).chain(&m.metafiles) {
        components.push(subject(s, "file"));
    }
    for f in &m.fetched {
        let name = f.name.as_deref().unwrap_or_else(|| file_name_of(&f.uri));
        let reference = format!("w4b:fetched:{name}");
        components.push(fetched(f, name, "file", reference.clone()));
        contained.push(reference);
    }
    for p in &m.packages {
        let a = p.annotations;
        let mut c = json!({
            "type": "library",
            "bom-ref": p.purl(),
            "name": p.name(),
            "version": a.version,
            "purl": p.purl(),
            "hashes": cdx_hashes(p.descriptor),
            "properties": [
                {"name": "w4b:architecture", "value": a.architecture},
                {"name": "w4b:repository", "value": a.repository},
                {"name": "w4b:repository-url", "value": a.repository_url},
                {"name": "w4b:signed-by", "value": a.signed_by},
                {"name": "w4b:suite", "value": a.suite},
            ],
        });
        if let Some(dl) = &p.descriptor.download_location {
            c["externalReferences"] = json!([{"type": "distribution", "url": dl}]);
        }
        components.push(c);
        contained.push(p.purl().to_owned());
    }
    let mut dependencies = vec![json!({"ref": image_ref, "dependsOn": contained})];
    for p in &m.packages {
        // Known, and known to need nothing the SBOM lists: dpkg's relations are not in
        // the manifest.
        dependencies.push(json!({"ref": p.purl()}));
    }
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_v5_url(&m.namespace)),
        "version": 1,
        "metadata": {
            "timestamp": m.created,
            "tools": {"components": [{"type": "application", "name": "w4b", "version": m.tool_version}]},
            "component": main,
            "properties": [
                {"name": "w4b:manifest-sha256", "value": m.digest},
                {"name": "w4b:target", "value": m.target},
            ],
        },
        "components": components,
        "dependencies": dependencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::packages::tests::package;
    use crate::manifest::tests::sample_input;
    use crate::manifest::Manifest;

    fn statement() -> Statement {
        let mut input = sample_input(b"disk image bytes");
        input.subjects.push(crate::manifest::Subject {
            name: "demo.bmap".into(),
            sha256: "ab".repeat(32),
            blake3: "cd".repeat(32),
            size: 10,
        });
        input.packages = vec![
            package(
                "w4b-tool",
                "2.0-1+b1",
                "arm64",
                Some("0123456789ABCDEF0123456789ABCDEF01234567"),
            ),
            package(
                "libstdc++6",
                "12.2.0-14",
                "arm64",
                Some("0123456789ABCDEF0123456789ABCDEF01234567"),
            ),
            package("timescaledb", "2.14.2~debian12", "arm64", None),
        ];
        Manifest::build(&input).unwrap().statement
    }

    #[test]
    fn uuid_v5_matches_rfc_4122() {
        // Python's `uuid.uuid5(uuid.NAMESPACE_URL, …)` gives the same.
        assert_eq!(
            uuid_v5_url("https://w4b.dev/spdx/images-edge-0123"),
            "6c7241e1-e2b7-5b0d-986c-2b4e3a4b4477"
        );
    }

    #[test]
    fn download_locations_follow_the_spdx_url_grammar() {
        for ok in [
            "https://deb.debian.org/debian/pool/main/c/curl/curl_7.88.1-10_arm64.deb",
            "http://archive.raspberrypi.com:8080/debian",
            "https://***@mirror.example.org/x.img.xz?token=1",
            "ftp://ftp.de.debian.org/debian/",
        ] {
            assert_eq!(download_location(Some(ok)), ok);
        }
        for no in [
            "http://127.0.0.1:43349/debian/pool/x.deb",
            "http://localhost/x.deb",
            "http://[::1]:80/x.deb",
            "file:/srv/x.deb",
            "https://example.org:123456/x",
            "https://-bad.example.org/x",
            "https://example.org/a b",
        ] {
            assert_eq!(download_location(Some(no)), "NOASSERTION", "{no}");
        }
        assert_eq!(download_location(None), "NOASSERTION");
    }

    #[test]
    fn dates_are_rfc_3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn spdx_describes_the_image_and_contains_every_package() {
        let s = statement();
        let text = render(&s, SbomFormat::Spdx).unwrap();
        assert_eq!(text, render(&s, SbomFormat::Spdx).unwrap(), "deterministic");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["SPDXID"], "SPDXRef-DOCUMENT");
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let digest = manifest_digest(&s).unwrap();
        assert_eq!(
            v["documentNamespace"],
            format!("https://w4b.dev/spdx/images-demo-{digest}")
        );
        let packages = v["packages"].as_array().unwrap();
        let debs: Vec<&Value> = packages.iter().filter(|p| p["externalRefs"].is_array()).collect();
        let purls: Vec<&str> = debs
            .iter()
            .map(|p| p["externalRefs"][0]["referenceLocator"].as_str().unwrap())
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=arm64",
                "pkg:deb/debian/timescaledb@2.14.2~debian12?arch=arm64",
                "pkg:deb/debian/w4b-tool@2.0-1%2Bb1?arch=arm64",
            ]
        );
        assert_eq!(debs[0]["SPDXID"], "SPDXRef-Package-deb-libstdc--6-arm64");
        assert!(
            debs[1]["comment"]
                .as_str()
                .unwrap()
                .contains("unsigned (trusted: true)"),
            "{text}"
        );
        let rels: Vec<(String, String, String)> = v["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["spdxElementId"].as_str().unwrap().to_owned(),
                    r["relationshipType"].as_str().unwrap().to_owned(),
                    r["relatedSpdxElement"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let image = "SPDXRef-Image-demo.img".to_owned();
        assert!(rels.contains(&("SPDXRef-DOCUMENT".into(), "DESCRIBES".into(), image.clone())));
        assert!(rels.contains(&(
            "SPDXRef-File-demo.bmap".into(),
            "METAFILE_OF".into(),
            image.clone()
        )));
        assert!(rels.contains(&(
            image.clone(),
            "DESCENDANT_OF".into(),
            "SPDXRef-Base-raspios.img.xz".into()
        )));
        for d in &debs {
            assert!(rels.contains(&(
                image.clone(),
                "CONTAINS".into(),
                d["SPDXID"].as_str().unwrap().into()
            )));
        }
    }

    #[test]
    fn cyclonedx_lists_components_with_purls_and_a_derived_serial() {
        let s = statement();
        let text = render(&s, SbomFormat::CycloneDx).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["bomFormat"], "CycloneDX");
        assert_eq!(v["specVersion"], "1.5");
        assert_eq!(v["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
        let serial = v["serialNumber"].as_str().unwrap();
        assert!(serial.starts_with("urn:uuid:") && serial.len() == 45, "{serial}");
        assert_eq!(serial.as_bytes()[23], b'5', "a version-5 UUID: {serial}");
        assert_eq!(v["metadata"]["component"]["name"], "demo.img");
        assert_eq!(
            v["metadata"]["component"]["pedigree"]["ancestors"][0]["name"],
            "raspios.img.xz"
        );
        let libs: Vec<&Value> = v["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] == "library")
            .collect();
        assert_eq!(libs.len(), 3);
        assert_eq!(libs[2]["purl"], "pkg:deb/debian/w4b-tool@2.0-1%2Bb1?arch=arm64");
        assert_eq!(libs[2]["version"], "2.0-1+b1");
        assert_eq!(libs[2]["hashes"][0]["alg"], "SHA-256");
        assert_eq!(v["dependencies"][0]["dependsOn"].as_array().unwrap().len(), 3);
        // Another manifest, another serial number.
        let mut other = s.clone();
        other.predicate.build_definition.external_parameters.epoch += 1;
        let w: Value = serde_json::from_str(&render(&other, SbomFormat::CycloneDx).unwrap()).unwrap();
        assert_ne!(w["serialNumber"], v["serialNumber"]);
    }

    /// The SPDX and CycloneDX projects' own validators accept both documents.
    #[test]
    fn the_reference_validators_accept_both_formats() {
        let Some(python) = crate::sbom_oracle::python() else {
            return;
        };
        let s = statement();
        let dir = tempfile::tempdir().unwrap();
        let spdx = dir.path().join("demo.spdx.json");
        std::fs::write(&spdx, render(&s, SbomFormat::Spdx).unwrap()).unwrap();
        let out =
            crate::sbom_oracle::check_spdx(&python, &spdx).unwrap_or_else(|e| panic!("spdx-tools: {e}"));
        // Image, block map, base and three packages.
        assert!(out.contains("6 packages"), "{out}");
        let cdx = dir.path().join("demo.cdx.json");
        std::fs::write(&cdx, render(&s, SbomFormat::CycloneDx).unwrap()).unwrap();
        crate::sbom_oracle::check_cyclonedx(&python, &cdx).unwrap_or_else(|e| panic!("cyclonedx: {e}"));
    }

    #[test]
    fn a_manifest_without_an_image_has_no_sbom() {
        let mut s = statement();
        s.subject.retain(|x| x.name.ends_with(".bmap"));
        assert!(matches!(
            render(&s, SbomFormat::Spdx),
            Err(SbomError::NoImage { .. })
        ));
    }
}
