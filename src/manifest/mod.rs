//! Build manifests (`<name>.manifest.json`, DESIGN §7): what a build produced and from
//! what, as an in-toto v1 statement carrying a SLSA provenance v1 predicate, optionally
//! signed in a DSSE envelope with ed25519.
//!
//! This module is pure data: [`Manifest::build`] takes plain values (so `w4b build` can
//! fill them from its plan and outputs) and returns the statement; [`dsse`] signs and
//! opens envelopes; [`verify`] checks a manifest against artifacts and a public key. No
//! wall clock, no randomness (except [`dsse::SecretKey::generate`], used by `w4b keygen`
//! alone), no environment. Manifests never contain secret values: the input types below
//! have no field that could carry one, only names, URIs, digests, sizes and the epoch.
//!
//! The format is documented field by field in `docs/manifest.md`.

#![forbid(unsafe_code)]

pub mod dsse;
pub mod packages;
pub mod sbom;
pub mod statement;
pub mod verify;

pub use packages::{Package, Repository};
pub use statement::EpochSource;

use std::collections::BTreeMap;

use statement::{
    canonical_json, BuildDefinition, Builder, DependencyDescriptor, ExternalParameters, InternalParameters,
    Metadata, OutputDigest, Provenance, RunDetails, Statement, StepAnnotations, StepDescriptor,
    SubjectAnnotations, SubjectDescriptor, SubjectDigest,
};

/// The BLAKE3 `derive_key` context of `runDetails.metadata.invocationId`.
pub const INVOCATION_ID_CONTEXT: &str = "w4b 2026-11-26 manifest invocationId v1";

/// Everything a manifest says, as plain data. Order does not matter: [`Manifest::build`]
/// sorts every list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInput {
    /// The target's label, e.g. `//images:demo`.
    pub target: String,
    pub subjects: Vec<Subject>,
    /// The target's `SOURCE_DATE_EPOCH`, seconds.
    pub epoch: i64,
    /// Where the epoch came from.
    pub epoch_source: EpochSource,
    pub w4b_version: String,
    /// Definition files: path relative to the workspace root (with `/`), BLAKE3 hex.
    pub definitions: Vec<Definition>,
    /// Base image and fetched sources.
    pub dependencies: Vec<ResolvedDependency>,
    /// The Debian packages the image installs, from its lock entry.
    pub packages: Vec<Package>,
    pub steps: Vec<StepInfo>,
    /// `runDetails.builder.id`, e.g. `https://w4b.dev/builder/local`.
    pub builder_id: String,
}

/// A built file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The file name as written to the output directory.
    pub name: String,
    pub sha256: String,
    pub blake3: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub path: String,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDependency {
    pub uri: String,
    pub sha256: String,
    /// The name the definitions give it (`base`, a package name), if any.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    pub name: String,
    pub kind: String,
    /// The step's cache key, BLAKE3 hex.
    pub key: String,
    /// Output name → what the cache names it, with its size.
    pub outputs: BTreeMap<String, StepOutput>,
    /// Names of upstream steps.
    pub inputs: Vec<String>,
}

/// One output of a step as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutput {
    /// The cache's name for it, hex: the BLAKE3 of its bytes, or for a chunked output (an
    /// image kept as frames) the name of its chunk index.
    pub digest: String,
    pub size: u64,
    /// For a chunked output, the BLAKE3 of its bytes as one file (hex), when its index
    /// carries it: what a subject's `blake3` is compared with.
    pub flat_blake3: Option<String>,
}

impl StepOutput {
    /// An output stored as one blob, named by the BLAKE3 of its bytes.
    pub fn blob(digest: String, size: u64) -> StepOutput {
        StepOutput {
            digest,
            size,
            flat_blake3: None,
        }
    }
}

/// A built statement. Serialise with [`Manifest::to_json`]; sign with [`dsse::Envelope::sign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub statement: Statement,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ManifestError {
    #[error("the manifest could not be encoded as JSON: {0}")]
    #[diagnostic(code(w4b::manifest::encode))]
    Encode(#[from] serde_json::Error),
}

impl Manifest {
    /// The statement for `input`, with its lists sorted and its invocation id set.
    pub fn build(input: &ManifestInput) -> Result<Manifest, ManifestError> {
        let mut subject: Vec<SubjectDescriptor> = input
            .subjects
            .iter()
            .map(|s| SubjectDescriptor {
                name: s.name.clone(),
                digest: SubjectDigest {
                    sha256: s.sha256.clone(),
                    blake3: s.blake3.clone(),
                },
                annotations: SubjectAnnotations { size: s.size },
            })
            .collect();
        subject.sort_by(|a, b| a.name.cmp(&b.name));

        let mut definitions: Vec<DependencyDescriptor> = input
            .definitions
            .iter()
            .map(|d| DependencyDescriptor {
                uri: format!("file:{}", d.path.trim_start_matches("./")),
                name: None,
                digest: BTreeMap::from([("blake3".to_string(), d.blake3.clone())]),
                download_location: None,
                annotations: None,
            })
            .collect();
        definitions.sort_by(|a, b| a.uri.cmp(&b.uri));
        let mut fetched: Vec<DependencyDescriptor> = input
            .dependencies
            .iter()
            .map(|d| DependencyDescriptor {
                uri: d.uri.clone(),
                name: d.name.clone(),
                digest: BTreeMap::from([("sha256".to_string(), d.sha256.clone())]),
                download_location: None,
                annotations: None,
            })
            .chain(input.packages.iter().map(Package::descriptor))
            .collect();
        // Packages sort among the fetched files by their purl (`pkg:deb/…`); a package
        // locked twice (two sets naming it) is one descriptor.
        fetched.sort_by(|a, b| (&a.uri, &a.name).cmp(&(&b.uri, &b.name)));
        fetched.dedup();
        // Definitions first, then what was fetched: both sorted, so the order is stable.
        let resolved_dependencies = definitions.into_iter().chain(fetched).collect();

        let mut byproducts: Vec<StepDescriptor> = input
            .steps
            .iter()
            .map(|s| {
                let mut inputs = s.inputs.clone();
                inputs.sort();
                inputs.dedup();
                StepDescriptor {
                    name: s.name.clone(),
                    media_type: statement::STEP_MEDIA_TYPE.to_string(),
                    annotations: StepAnnotations {
                        kind: s.kind.clone(),
                        key: s.key.clone(),
                        inputs,
                        outputs: s
                            .outputs
                            .iter()
                            .map(|(k, o)| {
                                (
                                    k.clone(),
                                    OutputDigest {
                                        blake3: o.digest.clone(),
                                        size: o.size,
                                        flat_blake3: o.flat_blake3.clone(),
                                    },
                                )
                            })
                            .collect(),
                    },
                }
            })
            .collect();
        byproducts.sort_by(|a, b| a.name.cmp(&b.name));

        let mut statement = Statement {
            type_: statement::STATEMENT_TYPE.to_string(),
            subject,
            predicate_type: statement::PREDICATE_TYPE.to_string(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: statement::BUILD_TYPE.to_string(),
                    external_parameters: ExternalParameters {
                        target: input.target.clone(),
                        epoch: input.epoch,
                        epoch_source: Some(input.epoch_source.clone()),
                    },
                    internal_parameters: InternalParameters {
                        w4b_version: input.w4b_version.clone(),
                    },
                    resolved_dependencies,
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: input.builder_id.clone(),
                        version: BTreeMap::from([("w4b".to_string(), input.w4b_version.clone())]),
                    },
                    metadata: Metadata { invocation_id: None },
                    byproducts,
                },
            },
        };
        statement.predicate.run_details.metadata.invocation_id = Some(invocation_id(&statement)?);
        Ok(Manifest { statement })
    }

    /// The manifest file's text: canonical JSON, indented, final newline.
    pub fn to_json(&self) -> Result<String, ManifestError> {
        Ok(canonical_json(&self.statement, true)?)
    }

    /// The bytes that are hashed and signed: canonical JSON without whitespace.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        Ok(canonical_json(&self.statement, false)?.into_bytes())
    }
}

/// BLAKE3 (`derive_key` with [`INVOCATION_ID_CONTEXT`]) of the compact canonical JSON of
/// `statement` with `invocationId` removed: the same build always gets the same id, and
/// any edit to the statement changes it.
pub fn invocation_id(statement: &Statement) -> Result<String, ManifestError> {
    let mut s = statement.clone();
    s.predicate.run_details.metadata.invocation_id = None;
    let bytes = canonical_json(&s, false)?;
    let mut h = blake3::Hasher::new_derive_key(INVOCATION_ID_CONTEXT);
    h.update(bytes.as_bytes());
    Ok(h.finalize().to_hex().to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex_of(seed: &str) -> String {
        blake3::hash(seed.as_bytes()).to_hex().to_string()
    }

    /// A small, fixed input: a fetch, a layer and an image step, one subject.
    pub(crate) fn sample_input(image: &[u8]) -> ManifestInput {
        use sha2::Digest as _;
        let image_b3 = blake3::hash(image).to_hex().to_string();
        ManifestInput {
            target: "//images:demo".into(),
            subjects: vec![Subject {
                name: "demo.img".into(),
                sha256: hex::encode(sha2::Sha256::digest(image)),
                blake3: image_b3.clone(),
                size: image.len() as u64,
            }],
            epoch: 1_700_000_000,
            epoch_source: EpochSource::Definition {
                at: "defs/images/demo.yaml:3:8".into(),
            },
            w4b_version: "0.1.0".into(),
            definitions: vec![
                Definition {
                    path: "defs/images/demo.yaml".into(),
                    blake3: hex_of("demo.yaml"),
                },
                Definition {
                    path: "w4b.yaml".into(),
                    blake3: hex_of("w4b.yaml"),
                },
            ],
            dependencies: vec![ResolvedDependency {
                uri: "https://downloads.example.org/raspios.img.xz".into(),
                sha256: hex::encode(sha2::Sha256::digest(b"base")),
                name: Some("base".into()),
            }],
            packages: vec![],
            steps: vec![
                StepInfo {
                    name: "//images:demo#image".into(),
                    kind: "image".into(),
                    key: hex_of("key-image"),
                    outputs: BTreeMap::from([(
                        "image".into(),
                        StepOutput::blob(image_b3, image.len() as u64),
                    )]),
                    inputs: vec!["//images:demo#layer".into()],
                },
                StepInfo {
                    name: "//images:demo#fetch".into(),
                    kind: "fetch".into(),
                    key: hex_of("key-fetch"),
                    outputs: BTreeMap::from([("file".into(), StepOutput::blob(hex_of("base"), 4))]),
                    inputs: vec![],
                },
                StepInfo {
                    name: "//images:demo#layer".into(),
                    kind: "layer".into(),
                    key: hex_of("key-layer"),
                    outputs: BTreeMap::from([("tree".into(), StepOutput::blob(hex_of("tree"), 120))]),
                    inputs: vec!["//images:demo#fetch".into()],
                },
            ],
            builder_id: "https://w4b.dev/builder/local".into(),
        }
    }

    #[test]
    fn same_input_in_any_order_gives_the_same_bytes() {
        let a = sample_input(b"disk image bytes");
        let mut b = a.clone();
        b.steps.reverse();
        b.definitions.reverse();
        let ma = Manifest::build(&a).unwrap();
        let mb = Manifest::build(&b).unwrap();
        assert_eq!(ma.to_json().unwrap(), mb.to_json().unwrap());
        assert_eq!(ma.canonical_bytes().unwrap(), mb.canonical_bytes().unwrap());
    }

    /// Pins the encoding: any change to field names, order or the invocation id rule
    /// changes this digest, and must come with a format version bump in the docs.
    #[test]
    fn canonical_encoding_is_pinned() {
        let m = Manifest::build(&sample_input(b"disk image bytes")).unwrap();
        let bytes = m.canonical_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"buildDefinition":{"buildType":"https://w4b.dev/build/v1","externalParameters":{"epoch":1700000000,"epochSource":{"at":"defs/images/demo.yaml:3:8","kind":"definition"},"target":"//images:demo"}"#), "{text}");
        assert_eq!(
            blake3::hash(&bytes).to_hex().to_string(),
            "082c1a1bda51561413ae430fd3ccba054ce29650a600a6bc21ae807997412456",
            "{text}"
        );
    }

    #[test]
    fn invocation_id_is_recomputable_and_changes_with_content() {
        let m = Manifest::build(&sample_input(b"x")).unwrap();
        let id = m
            .statement
            .predicate
            .run_details
            .metadata
            .invocation_id
            .clone()
            .unwrap();
        assert_eq!(invocation_id(&m.statement).unwrap(), id);
        let other = Manifest::build(&sample_input(b"y")).unwrap();
        assert_ne!(
            other.statement.predicate.run_details.metadata.invocation_id,
            Some(id)
        );
    }

    #[test]
    fn packages_follow_the_fetched_files_sorted_by_purl_and_once() {
        use super::packages::tests::package;
        let mut input = sample_input(b"x");
        let tool = package("w4b-tool", "2.0-1", "arm64", Some("ABCD"));
        input.packages = vec![
            tool.clone(),
            package("timescaledb", "2.14.2", "arm64", None),
            tool,
        ];
        let m = Manifest::build(&input).unwrap();
        let deps = &m.statement.predicate.build_definition.resolved_dependencies;
        let uris: Vec<&str> = deps.iter().map(|d| d.uri.as_str()).collect();
        assert_eq!(
            uris,
            [
                "file:defs/images/demo.yaml",
                "file:w4b.yaml",
                "https://downloads.example.org/raspios.img.xz",
                "pkg:deb/debian/timescaledb@2.14.2?arch=arm64",
                "pkg:deb/debian/w4b-tool@2.0-1?arch=arm64",
            ]
        );
        let json = m.to_json().unwrap();
        assert!(
            json.contains(r#""signedBy": "unsigned (trusted: true)""#),
            "{json}"
        );
        assert!(json.contains(r#""signedBy": "ABCD""#), "{json}");
        // Descriptors without packages keep their encoding: the pinned digest above holds.
        assert!(!deps[0..3]
            .iter()
            .any(|d| d.annotations.is_some() || d.download_location.is_some()));
    }

    #[test]
    fn definitions_come_first_as_file_uris() {
        let m = Manifest::build(&sample_input(b"x")).unwrap();
        let uris: Vec<&str> = m
            .statement
            .predicate
            .build_definition
            .resolved_dependencies
            .iter()
            .map(|d| d.uri.as_str())
            .collect();
        assert_eq!(
            uris,
            [
                "file:defs/images/demo.yaml",
                "file:w4b.yaml",
                "https://downloads.example.org/raspios.img.xz"
            ]
        );
    }
}
