//! Checking a manifest: its signature, the artifacts it names, and the internal
//! consistency of its step graph. The result is a list of findings, each with the exit
//! status bit it sets, so `w4b verify` can exit with the bit mask (DESIGN §7).
//!
//! Rules (also in `docs/manifest.md`):
//! - bit 1 ([`DIGEST_MISMATCH`]): an artifact's size, sha256 or blake3 differs from the
//!   subject of the same file name, or no subject has that file name.
//! - bit 2 ([`BAD_SIGNATURE`]): a key was given and the document is not an envelope, or
//!   no signature in it verifies with that key.
//! - bit 4 ([`OTHER_ERROR`]): the document is not a w4b manifest (`_type`,
//!   `predicateType`, `buildType`), a digest or key is not 64 lowercase hex, subject or
//!   step names repeat, a step input names no step, the step graph has a cycle, or the
//!   invocation id is not the one the statement's content gives.
//! - bit 8 ([`NOT_REPRODUCIBLE`]): reserved for `--rebuild`: the same definitions rebuilt
//!   to other outputs. When the rebuild differs and definition files changed since the
//!   manifest ([`changed_definitions`]), the rebuild did not start from the manifest's
//!   inputs, so nothing was learnt about reproducibility: that is bit 4, naming each file
//!   and its digest in the manifest and now.
//!
//! Subjects are not required to equal a step output (a compressed image is made after
//! the graph); when one does, the summary names the step.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path};

use serde::Serialize;
use sha2::Digest as _;

use super::dsse::{Envelope, PublicKey, IN_TOTO_PAYLOAD_TYPE};
use super::statement::{Statement, BUILD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE};

pub const DIGEST_MISMATCH: u8 = 1;
pub const BAD_SIGNATURE: u8 = 2;
pub const OTHER_ERROR: u8 = 4;
pub const NOT_REPRODUCIBLE: u8 = 8;

/// A definition file the manifest lists (`file:` dependency) whose bytes in the workspace
/// are not the ones the manifest recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefinitionChange {
    /// The path relative to the workspace root, as the manifest gives it.
    pub path: String,
    /// The blake3 the manifest recorded.
    pub recorded: String,
    /// The blake3 of the file now, or `None` when it is gone (or not a path inside the
    /// workspace: a manifest is untrusted input, and `..` or an absolute path is never read).
    pub now: Option<String>,
}

/// The manifest's definition files that differ in the workspace at `root`, in the
/// manifest's order (sorted by path).
pub fn changed_definitions(statement: &Statement, root: &Path) -> Vec<DefinitionChange> {
    let mut out = Vec::new();
    for dep in &statement.predicate.build_definition.resolved_dependencies {
        let (Some(path), Some(recorded)) = (dep.uri.strip_prefix("file:"), dep.digest.get("blake3")) else {
            continue;
        };
        let inside = Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        // Read only inside the workspace, as the build does (a symlink out reads as changed).
        let now = if inside {
            crate::defs::beneath::resolve(root, path)
                .ok()
                .and_then(|p| std::fs::read(p).ok())
                .map(|bytes| blake3::hash(&bytes).to_hex().to_string())
        } else {
            None
        };
        if now.as_deref() != Some(recorded.as_str()) {
            out.push(DefinitionChange {
                path: path.to_owned(),
                recorded: recorded.clone(),
                now,
            });
        }
    }
    out
}

/// The digests of a file on disk, named by its file name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactDigest {
    pub name: String,
    pub sha256: String,
    pub blake3: String,
    pub size: u64,
}

impl ArtifactDigest {
    /// Hashes `reader` to its end with both algorithms in one pass.
    pub fn of_reader(name: &str, mut reader: impl Read) -> std::io::Result<ArtifactDigest> {
        let mut sha = sha2::Sha256::new();
        let mut b3 = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sha.update(&buf[..n]);
            b3.update(&buf[..n]);
            size += n as u64;
        }
        Ok(ArtifactDigest {
            name: name.to_string(),
            sha256: hex::encode(sha.finalize()),
            blake3: b3.finalize().to_hex().to_string(),
            size,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum SignatureStatus {
    /// A signature verified with the given key.
    Valid { keyid: String },
    /// A key was given; no signature verified with it.
    Invalid,
    /// A key was given; the document is a bare statement.
    Missing,
    /// The document is signed, no key was given.
    NotChecked { signatures: usize },
    /// A bare statement and no key: nothing to check.
    Unsigned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub bit: u8,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactCheck {
    pub name: String,
    pub ok: bool,
    /// The step whose output has this artifact's BLAKE3, if any.
    pub produced_by: Option<String>,
}

/// What `verify` found. `schema` is `w4b.verify/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub schema: &'static str,
    pub target: Option<String>,
    pub epoch: Option<i64>,
    /// Where the epoch came from, when the manifest says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_source: Option<super::EpochSource>,
    pub w4b_version: Option<String>,
    pub signature: SignatureStatus,
    pub subjects: usize,
    pub steps: usize,
    /// Installed Debian packages the manifest lists (`pkg:deb/` dependencies).
    pub packages: usize,
    pub artifacts: Vec<ArtifactCheck>,
    pub findings: Vec<Finding>,
    pub exit: u8,
}

impl Verification {
    /// Nothing checked yet, nothing found.
    pub fn empty() -> Verification {
        Verification {
            schema: "w4b.verify/1",
            target: None,
            epoch: None,
            epoch_source: None,
            w4b_version: None,
            signature: SignatureStatus::Unsigned,
            subjects: 0,
            steps: 0,
            packages: 0,
            artifacts: Vec::new(),
            findings: Vec::new(),
            exit: 0,
        }
    }

    fn add(&mut self, bit: u8, code: &'static str, message: String) {
        self.exit |= bit;
        self.findings.push(Finding { bit, code, message });
    }
}

/// Checks `document` (a bare statement or a DSSE envelope around one).
pub fn verify(document: &[u8], artifacts: &[ArtifactDigest], key: Option<&PublicKey>) -> Verification {
    let mut v = Verification::empty();
    let value: serde_json::Value = match serde_json::from_slice(document) {
        Ok(x) => x,
        Err(e) => {
            v.add(
                OTHER_ERROR,
                "w4b::verify::json",
                format!("the manifest is not JSON: {e}"),
            );
            if key.is_some() {
                v.signature = SignatureStatus::Missing;
                v.add(
                    BAD_SIGNATURE,
                    "w4b::verify::signature",
                    "no signature could be read".into(),
                );
            }
            return v;
        }
    };
    let payload = if value.get("payloadType").is_some() {
        match open_envelope(value, key, &mut v) {
            Some(p) => p,
            None => return v,
        }
    } else {
        if key.is_some() {
            v.signature = SignatureStatus::Missing;
            v.add(
                BAD_SIGNATURE,
                "w4b::verify::unsigned",
                "a key was given but the manifest is not signed (a bare statement, not a DSSE envelope)"
                    .into(),
            );
        }
        document.to_vec()
    };
    let statement: Statement = match serde_json::from_slice(&payload) {
        Ok(s) => s,
        Err(e) => {
            v.add(
                OTHER_ERROR,
                "w4b::verify::statement",
                format!("not a w4b in-toto statement: {e}"),
            );
            return v;
        }
    };
    check_statement(&statement, &mut v);
    check_artifacts(&statement, artifacts, &mut v);
    v
}

/// The statement inside a manifest (bare, or the payload of a DSSE envelope), without
/// checking any signature: for `--rebuild`, after [`verify`] has judged the document.
pub fn statement_of(document: &[u8]) -> Option<Statement> {
    let value: serde_json::Value = serde_json::from_slice(document).ok()?;
    let payload = if value.get("payloadType").is_some() {
        serde_json::from_value::<Envelope>(value)
            .ok()?
            .payload_bytes()
            .ok()?
    } else {
        document.to_vec()
    };
    serde_json::from_slice(&payload).ok()
}

fn open_envelope(value: serde_json::Value, key: Option<&PublicKey>, v: &mut Verification) -> Option<Vec<u8>> {
    let bad_sig = |v: &mut Verification, status: SignatureStatus, message: String| {
        if key.is_some() {
            v.signature = status;
            v.add(BAD_SIGNATURE, "w4b::verify::signature", message);
        }
    };
    let env: Envelope = match serde_json::from_value(value) {
        Ok(e) => e,
        Err(e) => {
            v.add(
                OTHER_ERROR,
                "w4b::verify::envelope",
                format!("not a DSSE envelope: {e}"),
            );
            bad_sig(
                v,
                SignatureStatus::Missing,
                "the envelope could not be read".into(),
            );
            return None;
        }
    };
    match key {
        Some(k) => match env.verify(k) {
            Some(keyid) => v.signature = SignatureStatus::Valid { keyid },
            None => bad_sig(
                v,
                SignatureStatus::Invalid,
                format!("no signature in the envelope verifies with key `{}`", k.keyid()),
            ),
        },
        None => {
            v.signature = SignatureStatus::NotChecked {
                signatures: env.signatures.len(),
            }
        }
    }
    if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
        v.add(
            OTHER_ERROR,
            "w4b::verify::payload_type",
            format!(
                "payload type `{}`, expected `{IN_TOTO_PAYLOAD_TYPE}`",
                env.payload_type
            ),
        );
        return None;
    }
    match env.payload_bytes() {
        Ok(p) => Some(p),
        Err(e) => {
            v.add(OTHER_ERROR, "w4b::verify::envelope", e.to_string());
            None
        }
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_statement(s: &Statement, v: &mut Verification) {
    let bd = &s.predicate.build_definition;
    let rd = &s.predicate.run_details;
    v.target = Some(bd.external_parameters.target.clone());
    v.epoch = Some(bd.external_parameters.epoch);
    v.epoch_source = bd.external_parameters.epoch_source.clone();
    v.w4b_version = Some(bd.internal_parameters.w4b_version.clone());
    v.subjects = s.subject.len();
    v.steps = rd.byproducts.len();
    for (field, got, want) in [
        ("_type", &s.type_, STATEMENT_TYPE),
        ("predicateType", &s.predicate_type, PREDICATE_TYPE),
        ("buildDefinition.buildType", &bd.build_type, BUILD_TYPE),
    ] {
        if got != want {
            v.add(
                OTHER_ERROR,
                "w4b::verify::type",
                format!("`{field}` is `{got}`, expected `{want}`"),
            );
        }
    }
    let mut names = BTreeSet::new();
    for sub in &s.subject {
        if !names.insert(&sub.name) {
            v.add(
                OTHER_ERROR,
                "w4b::verify::duplicate",
                format!("subject `{}` appears twice", sub.name),
            );
        }
        for (alg, d) in [("sha256", &sub.digest.sha256), ("blake3", &sub.digest.blake3)] {
            if !is_hex64(d) {
                v.add(
                    OTHER_ERROR,
                    "w4b::verify::digest_format",
                    format!(
                        "subject `{}`: {alg} `{d}` is not 64 lowercase hex digits",
                        sub.name
                    ),
                );
            }
        }
    }
    for dep in &bd.resolved_dependencies {
        for (alg, d) in &dep.digest {
            if (alg == "sha256" || alg == "blake3") && !is_hex64(d) {
                v.add(
                    OTHER_ERROR,
                    "w4b::verify::digest_format",
                    format!(
                        "dependency `{}`: {alg} `{d}` is not 64 lowercase hex digits",
                        dep.uri
                    ),
                );
            }
        }
    }
    check_packages(s, v);
    // The step graph.
    let mut steps: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
    for st in &rd.byproducts {
        if steps.insert(st.name.as_str(), &st.annotations.inputs).is_some() {
            v.add(
                OTHER_ERROR,
                "w4b::verify::duplicate",
                format!("step `{}` appears twice", st.name),
            );
        }
        if !is_hex64(&st.annotations.key) {
            v.add(
                OTHER_ERROR,
                "w4b::verify::key_format",
                format!(
                    "step `{}`: key `{}` is not 64 lowercase hex digits",
                    st.name, st.annotations.key
                ),
            );
        }
        for (out, d) in &st.annotations.outputs {
            if !is_hex64(&d.blake3) {
                v.add(
                    OTHER_ERROR,
                    "w4b::verify::digest_format",
                    format!(
                        "step `{}`: output `{out}` digest `{}` is not 64 lowercase hex digits",
                        st.name, d.blake3
                    ),
                );
            }
        }
    }
    for st in &rd.byproducts {
        for input in &st.annotations.inputs {
            if !steps.contains_key(input.as_str()) {
                v.add(
                    OTHER_ERROR,
                    "w4b::verify::dangling_input",
                    format!(
                        "step `{}` consumes `{input}`, which is not a step of this manifest",
                        st.name
                    ),
                );
            }
        }
    }
    if let Some(step) = find_cycle(&steps) {
        v.add(
            OTHER_ERROR,
            "w4b::verify::cycle",
            format!("the step graph has a cycle through `{step}`"),
        );
    }
    match (&rd.metadata.invocation_id, super::invocation_id(s)) {
        (Some(got), Ok(want)) if *got == want => {}
        (got, _) => v.add(
            OTHER_ERROR,
            "w4b::verify::invocation_id",
            format!(
                "`invocationId` is {}, not the digest of the statement's content: the manifest was edited",
                got.as_deref().map_or("missing".to_string(), |g| format!("`{g}`"))
            ),
        ),
    }
}

/// Every `pkg:deb/` dependency is a package descriptor whose purl is the one its name,
/// version and architecture give, with a sha256 and a signer (or the unsigned mark).
fn check_packages(s: &Statement, v: &mut Verification) {
    let mut purls = BTreeSet::new();
    for dep in &s.predicate.build_definition.resolved_dependencies {
        if !dep.uri.starts_with("pkg:deb/") {
            continue;
        }
        v.packages = v.packages.saturating_add(1);
        let problem = match (&dep.name, &dep.annotations) {
            (None, _) => Some("has no `name`".to_owned()),
            (_, None) => Some("has no package `annotations`".to_owned()),
            (Some(name), Some(a)) => {
                let want = super::packages::deb_purl(name, &a.version, &a.architecture);
                if dep.uri != want {
                    Some(format!(
                        "is not the purl of its name, version and architecture (`{want}`)"
                    ))
                } else if !dep.digest.contains_key("sha256") {
                    Some("has no sha256 digest".to_owned())
                } else if a.signed_by.is_empty() {
                    Some("names no signer (`signedBy`)".to_owned())
                } else {
                    None
                }
            }
        };
        if let Some(p) = problem {
            v.add(
                OTHER_ERROR,
                "w4b::verify::package",
                format!("package `{}` {p}", dep.uri),
            );
        }
        if !purls.insert(dep.uri.as_str()) {
            v.add(
                OTHER_ERROR,
                "w4b::verify::duplicate",
                format!("package `{}` appears twice", dep.uri),
            );
        }
    }
}

/// A step on a cycle, by depth-first search with colours (0 new, 1 on the path, 2 done).
fn find_cycle(steps: &BTreeMap<&str, &Vec<String>>) -> Option<String> {
    let mut colour: BTreeMap<&str, u8> = BTreeMap::new();
    for &start in steps.keys() {
        if colour.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        // Iterative DFS: (node, index of the next input to visit).
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        colour.insert(start, 1);
        while let Some((node, i)) = stack.pop() {
            let inputs = steps.get(node).map_or(&[][..], |v| v.as_slice());
            if let Some(next) = inputs.get(i) {
                stack.push((node, i + 1));
                let next = next.as_str();
                if !steps.contains_key(next) {
                    continue;
                }
                match colour.get(next).copied().unwrap_or(0) {
                    1 => return Some(next.to_string()),
                    0 => {
                        colour.insert(next, 1);
                        stack.push((next, 0));
                    }
                    _ => {}
                }
            } else {
                colour.insert(node, 2);
            }
        }
    }
    None
}

fn check_artifacts(s: &Statement, artifacts: &[ArtifactDigest], v: &mut Verification) {
    let outputs: BTreeMap<&str, &str> = s
        .predicate
        .run_details
        .byproducts
        .iter()
        .flat_map(|st| {
            st.annotations
                .outputs
                .values()
                .flat_map(|o| std::iter::once(&o.blake3).chain(&o.flat_blake3))
                .map(move |d| (d.as_str(), st.name.as_str()))
        })
        .collect();
    for a in artifacts {
        let Some(sub) = s.subject.iter().find(|sub| sub.name == a.name) else {
            v.add(
                DIGEST_MISMATCH,
                "w4b::verify::no_subject",
                format!("`{}` is not a subject of this manifest", a.name),
            );
            v.artifacts.push(ArtifactCheck {
                name: a.name.clone(),
                ok: false,
                produced_by: None,
            });
            continue;
        };
        let mut ok = true;
        for (what, got, want) in [
            ("size", a.size.to_string(), sub.annotations.size.to_string()),
            ("sha256", a.sha256.clone(), sub.digest.sha256.clone()),
            ("blake3", a.blake3.clone(), sub.digest.blake3.clone()),
        ] {
            if got != want {
                ok = false;
                v.add(
                    DIGEST_MISMATCH,
                    "w4b::verify::digest_mismatch",
                    format!("`{}`: {what} is `{got}`, the manifest says `{want}`", a.name),
                );
            }
        }
        v.artifacts.push(ArtifactCheck {
            name: a.name.clone(),
            ok,
            produced_by: outputs.get(sub.digest.blake3.as_str()).map(|s| s.to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::dsse::SecretKey;
    use super::super::tests::{hex_of, sample_input};
    use super::super::Manifest;
    use super::*;

    const IMAGE: &[u8] = b"disk image bytes";

    fn bare() -> Vec<u8> {
        Manifest::build(&sample_input(IMAGE))
            .unwrap()
            .to_json()
            .unwrap()
            .into_bytes()
    }

    fn signed(key: &SecretKey) -> Vec<u8> {
        let m = Manifest::build(&sample_input(IMAGE)).unwrap();
        Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &m.canonical_bytes().unwrap(), key)
            .to_json()
            .unwrap()
            .into_bytes()
    }

    fn artifact(name: &str, bytes: &[u8]) -> ArtifactDigest {
        ArtifactDigest::of_reader(name, bytes).unwrap()
    }

    #[test]
    fn changed_definitions_names_each_file_with_both_digests() {
        let statement = statement_of(&bare()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("defs/images")).unwrap();
        // The sample manifest's digests are those of these exact bytes.
        std::fs::write(dir.path().join("defs/images/demo.yaml"), "demo.yaml").unwrap();
        std::fs::write(dir.path().join("w4b.yaml"), "w4b.yaml").unwrap();
        assert_eq!(changed_definitions(&statement, dir.path()), vec![]);

        std::fs::write(dir.path().join("defs/images/demo.yaml"), "edited").unwrap();
        std::fs::remove_file(dir.path().join("w4b.yaml")).unwrap();
        assert_eq!(
            changed_definitions(&statement, dir.path()),
            vec![
                DefinitionChange {
                    path: "defs/images/demo.yaml".into(),
                    recorded: hex_of("demo.yaml"),
                    now: Some(hex_of("edited")),
                },
                DefinitionChange {
                    path: "w4b.yaml".into(),
                    recorded: hex_of("w4b.yaml"),
                    now: None,
                },
            ]
        );
    }

    #[test]
    fn changed_definitions_never_reads_outside_the_workspace() {
        let mut statement = statement_of(&bare()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(dir.path().join("secret"), "demo.yaml").unwrap();
        let deps = &mut statement.predicate.build_definition.resolved_dependencies;
        deps.retain(|d| d.uri.starts_with("file:"));
        deps.truncate(1);
        deps[0].uri = "file:../secret".into();
        let changes = changed_definitions(&statement, &ws);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].now, None,
            "`..` is not followed even though the bytes match"
        );
    }

    fn with_packages() -> Statement {
        use super::super::packages::tests::package;
        let mut input = sample_input(IMAGE);
        input.packages = vec![
            package("nftables", "1.0.6-2+deb12u2", "arm64", Some("ABCD")),
            package("timescaledb", "2.14.2", "arm64", None),
        ];
        Manifest::build(&input).unwrap().statement
    }

    /// `statement` with its invocation id made to match again after an edit, so only the
    /// package rules can object.
    fn reseal(mut statement: Statement) -> Vec<u8> {
        statement.predicate.run_details.metadata.invocation_id =
            Some(super::super::invocation_id(&statement).unwrap());
        super::super::statement::canonical_json(&statement, true)
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn packages_are_counted_and_their_purls_checked() {
        let s = with_packages();
        let v = verify(&reseal(s.clone()), &[], None);
        assert_eq!((v.exit, v.packages), (0, 2), "{:?}", v.findings);

        // A purl that says another version than the annotations.
        let mut edited = s.clone();
        let dep = edited
            .predicate
            .build_definition
            .resolved_dependencies
            .iter_mut()
            .find(|d| d.name.as_deref() == Some("nftables"))
            .unwrap();
        dep.uri = dep.uri.replace("1.0.6", "1.0.9");
        let v = verify(&reseal(edited), &[], None);
        assert_eq!(v.exit, OTHER_ERROR);
        assert!(
            v.findings
                .iter()
                .any(|f| f.code == "w4b::verify::package" && f.message.contains("1.0.9")),
            "{:?}",
            v.findings
        );

        // A package descriptor stripped of its annotations.
        let mut edited = s;
        for d in &mut edited.predicate.build_definition.resolved_dependencies {
            d.annotations = None;
        }
        let v = verify(&reseal(edited), &[], None);
        assert_eq!(v.exit, OTHER_ERROR);
        assert_eq!(v.packages, 2);
    }

    #[test]
    fn a_good_signed_manifest_and_artifact_verify() {
        let k = SecretKey::from_seed([3; 32]);
        let v = verify(&signed(&k), &[artifact("demo.img", IMAGE)], Some(&k.public()));
        assert_eq!(v.exit, 0, "{:?}", v.findings);
        assert_eq!(
            v.signature,
            SignatureStatus::Valid {
                keyid: k.public().keyid()
            }
        );
        assert_eq!(v.artifacts[0].produced_by.as_deref(), Some("//images:demo#image"));
        assert_eq!(v.target.as_deref(), Some("//images:demo"));
        assert_eq!(v.steps, 3);
    }

    #[test]
    fn a_chunked_image_is_traced_to_its_step_by_its_flat_digest() {
        // The cache keeps the image as frames: the step's output is named by its chunk
        // index, and the subject by the BLAKE3 of the file's bytes.
        let mut input = sample_input(IMAGE);
        let index_name = hex_of("chunk index");
        let flat = blake3::hash(IMAGE).to_hex().to_string();
        let step = input.steps.iter_mut().find(|s| s.kind == "image").unwrap();
        let out = step.outputs.get_mut("image").unwrap();
        out.digest = index_name.clone();
        out.flat_blake3 = Some(flat.clone());
        let doc = Manifest::build(&input).unwrap().to_json().unwrap();
        assert!(doc.contains(&format!("\"flat_blake3\": \"{flat}\"")), "{doc}");
        let v = verify(doc.as_bytes(), &[artifact("demo.img", IMAGE)], None);
        assert_eq!(v.exit, 0, "{:?}", v.findings);
        assert_eq!(v.artifacts[0].produced_by.as_deref(), Some("//images:demo#image"));

        // Without the flat digest nothing names the image's bytes: no producer, no error.
        let step = input.steps.iter_mut().find(|s| s.kind == "image").unwrap();
        step.outputs.get_mut("image").unwrap().flat_blake3 = None;
        let doc = Manifest::build(&input).unwrap().to_json().unwrap();
        let v = verify(doc.as_bytes(), &[artifact("demo.img", IMAGE)], None);
        assert_eq!(v.exit, 0, "{:?}", v.findings);
        assert_eq!(v.artifacts[0].produced_by, None);
    }

    #[test]
    fn bare_statement_without_key_is_fine_and_with_key_sets_bit_2() {
        assert_eq!(verify(&bare(), &[], None).exit, 0);
        let k = SecretKey::from_seed([3; 32]);
        let v = verify(&bare(), &[], Some(&k.public()));
        assert_eq!(v.exit, BAD_SIGNATURE);
        assert_eq!(v.signature, SignatureStatus::Missing);
        // A signed manifest checked without a key: nothing is claimed about the signature.
        let v = verify(&signed(&k), &[], None);
        assert_eq!(v.exit, 0);
        assert_eq!(v.signature, SignatureStatus::NotChecked { signatures: 1 });
    }

    #[test]
    fn tampered_payload_or_signature_or_wrong_key_sets_bit_2() {
        let k = SecretKey::from_seed([3; 32]);
        let doc = signed(&k);
        let env: Envelope = serde_json::from_slice(&doc).unwrap();
        // Payload edited consistently (invocationId recomputed) so that only the signature fails.
        let mut input = sample_input(IMAGE);
        input.epoch += 1;
        let other = Manifest::build(&input).unwrap().canonical_bytes().unwrap();
        let mut t = env.clone();
        t.payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &other);
        let v = verify(t.to_json().unwrap().as_bytes(), &[], Some(&k.public()));
        assert_eq!(v.exit, BAD_SIGNATURE, "{:?}", v.findings);
        assert_eq!(v.signature, SignatureStatus::Invalid);

        let mut t = env.clone();
        t.signatures[0].sig = t.signatures[0].sig.replacen(|c: char| c != 'A', "A", 1);
        assert_eq!(
            verify(t.to_json().unwrap().as_bytes(), &[], Some(&k.public())).exit,
            BAD_SIGNATURE
        );

        let other_key = SecretKey::from_seed([4; 32]).public();
        assert_eq!(verify(&doc, &[], Some(&other_key)).exit, BAD_SIGNATURE);
    }

    #[test]
    fn wrong_or_unknown_artifact_sets_bit_1() {
        let v = verify(&bare(), &[artifact("demo.img", b"disk image byteZ")], None);
        assert_eq!(v.exit, DIGEST_MISMATCH);
        assert_eq!(
            v.findings.len(),
            2,
            "sha256 and blake3 differ, size does not: {:?}",
            v.findings
        );
        let v = verify(&bare(), &[artifact("demo.img", b"short")], None);
        assert_eq!(v.exit, DIGEST_MISMATCH);
        let v = verify(&bare(), &[artifact("other.img", IMAGE)], None);
        assert_eq!(v.exit, DIGEST_MISMATCH);
        assert_eq!(v.findings[0].code, "w4b::verify::no_subject");
    }

    fn with_steps(edit: impl FnOnce(&mut Vec<crate::manifest::StepInfo>)) -> Vec<u8> {
        let mut input = sample_input(IMAGE);
        edit(&mut input.steps);
        Manifest::build(&input).unwrap().to_json().unwrap().into_bytes()
    }

    #[test]
    fn inconsistent_graphs_set_bit_4() {
        let dangling = with_steps(|s| s[0].inputs.push("//images:demo#ghost".into()));
        let v = verify(&dangling, &[], None);
        assert_eq!(v.exit, OTHER_ERROR);
        assert_eq!(v.findings[0].code, "w4b::verify::dangling_input");

        let cycle = with_steps(|s| s[1].inputs.push("//images:demo#image".into()));
        let v = verify(&cycle, &[], None);
        assert_eq!(v.exit, OTHER_ERROR);
        assert_eq!(v.findings[0].code, "w4b::verify::cycle");

        let bad_key = with_steps(|s| s[2].key = "XYZ".into());
        assert_eq!(
            verify(&bad_key, &[], None).findings[0].code,
            "w4b::verify::key_format"
        );

        let dup = with_steps(|s| s[2].name = s[1].name.clone());
        assert!(verify(&dup, &[], None)
            .findings
            .iter()
            .any(|f| f.code == "w4b::verify::duplicate"));
    }

    #[test]
    fn hand_edits_break_the_invocation_id() {
        let text = String::from_utf8(bare())
            .unwrap()
            .replace(&hex_of("key-fetch"), &hex_of("other"));
        let v = verify(text.as_bytes(), &[], None);
        assert_eq!(v.exit, OTHER_ERROR);
        assert_eq!(v.findings[0].code, "w4b::verify::invocation_id");
    }

    #[test]
    fn garbage_is_bit_4_and_also_bit_2_when_a_key_is_required() {
        assert_eq!(verify(b"not json", &[], None).exit, OTHER_ERROR);
        let k = SecretKey::from_seed([3; 32]).public();
        assert_eq!(
            verify(b"not json", &[], Some(&k)).exit,
            OTHER_ERROR | BAD_SIGNATURE
        );
        assert_eq!(verify(b"{\"_type\": 1}", &[], None).exit, OTHER_ERROR);
    }

    #[test]
    fn artifact_digests_are_sha256_and_blake3() {
        let a = artifact("x", b"abc");
        assert_eq!(
            a.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(a.blake3, blake3::hash(b"abc").to_hex().to_string());
        assert_eq!(a.size, 3);
    }
}
