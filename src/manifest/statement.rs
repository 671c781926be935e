//! The in-toto v1 statement with a SLSA provenance v1 predicate, as typed serde structs,
//! and the canonical JSON encoding every manifest is written and hashed in.
//!
//! Field names follow the in-toto Statement v1 and SLSA Provenance v1 specifications
//! (`_type`, `subject`, `predicateType`, `buildDefinition`, `runDetails`, …). The
//! w4b-specific parts live where those specifications leave room: the parameters, the
//! `annotations` of resource descriptors, and `byproducts` (the step graph).
//!
//! Canonical JSON: object keys sorted by their UTF-8 bytes at every level, integers only
//! (the types hold no floats), strings escaped as `serde_json` does. The struct field
//! order therefore never matters, and two builds of the same input give the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `_type` of every statement w4b writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of the SLSA provenance predicate.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// `buildDefinition.buildType`: what the parameters below mean.
pub const BUILD_TYPE: &str = "https://w4b.dev/build/v1";
/// `mediaType` of the step descriptors in `byproducts`.
pub const STEP_MEDIA_TYPE: &str = "application/vnd.w4b.step+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<SubjectDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// One built file: its name (a file name, as `w4b build` writes it to `out/`) and digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectDescriptor {
    pub name: String,
    pub digest: SubjectDigest,
    pub annotations: SubjectAnnotations,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectDigest {
    pub sha256: String,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAnnotations {
    /// Bytes; lets `verify` report "truncated" before hashing anything.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: ExternalParameters,
    pub internal_parameters: InternalParameters,
    pub resolved_dependencies: Vec<DependencyDescriptor>,
}

/// What the user chose: the target and its epoch (the only time in a manifest), with
/// where that epoch came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalParameters {
    pub target: String,
    pub epoch: i64,
    /// Absent in manifests written before the source was recorded.
    #[serde(rename = "epochSource", default, skip_serializing_if = "Option::is_none")]
    pub epoch_source: Option<EpochSource>,
}

/// Where an image's epoch came from. Never the clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EpochSource {
    /// An `epoch` the user wrote: in the image or `w4b.yaml` (`at` is `file:line:column`),
    /// `W4B_EPOCH` (`env W4B_EPOCH`) or `--set` (`--set epoch=…`).
    Definition { at: String },
    /// Midnight UTC of the base's release date: its `date:`, or the date in its URL's
    /// file name (`at` says which).
    BaseReleaseDate { base: String, date: String, at: String },
    /// The newest modification time in the base image's root filesystem.
    BaseContent { base: String },
    /// A bootstrapped base without a `date:`: the newest `Date:` of the signed release
    /// files its lock entry was resolved against (`repository` names which).
    BaseLock {
        base: String,
        repository: String,
        date: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InternalParameters {
    pub w4b_version: String,
}

/// A definition file (`file:` URI relative to the workspace root, `blake3` digest) or a
/// fetched source (its URL, `sha256` digest and the name the definitions give it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyDescriptor {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub digest: BTreeMap<String, String>,
    /// Where the bytes were fetched from, when `uri` names the thing rather than the
    /// place: an installed package's `.deb` in its repository (credentials redacted).
    #[serde(rename = "downloadLocation", default, skip_serializing_if = "Option::is_none")]
    pub download_location: Option<String>,
    /// What a Debian package descriptor says besides its purl (see
    /// [`super::packages`]); absent on every other descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<PackageAnnotations>,
}

/// The `annotations` of an installed package's descriptor: the package as `w4b.lock`
/// pinned it and the repository it came from, with the key that signed that
/// repository's index, or [`super::packages::UNSIGNED`] for a `trusted: true` one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageAnnotations {
    pub version: String,
    pub architecture: String,
    /// Bytes of the `.deb`.
    pub size: u64,
    /// The repository's name in the package set.
    pub repository: String,
    /// The repository's URL, credentials redacted.
    pub repository_url: String,
    pub suite: String,
    /// The fingerprint of the key that signed the repository's `InRelease`, or
    /// `unsigned (trusted: true)`.
    pub signed_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: Metadata,
    /// The step graph, one descriptor per step.
    pub byproducts: Vec<StepDescriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
    pub version: BTreeMap<String, String>,
}

/// `startedOn`/`finishedOn` are deliberately absent: they would be wall-clock times,
/// and the epoch (in `externalParameters`) is the only time a manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepDescriptor {
    pub name: String,
    pub media_type: String,
    pub annotations: StepAnnotations,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepAnnotations {
    pub kind: String,
    /// The step's cache key (BLAKE3, 64 hex).
    pub key: String,
    /// Names of the steps whose outputs this step consumes.
    pub inputs: Vec<String>,
    pub outputs: BTreeMap<String, OutputDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDigest {
    /// The cache's name for the output: the BLAKE3 of its bytes or, for a chunked output,
    /// of its chunk index (keyed; see `docs/cache-format.md`).
    pub blake3: String,
    pub size: u64,
    /// For a chunked output, the BLAKE3 of its bytes as one file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat_blake3: Option<String>,
}

/// Canonical JSON of any serialisable value: sorted keys, no whitespace when `pretty` is
/// false, two-space indentation and a final newline when it is true.
pub fn canonical_json<T: Serialize>(value: &T, pretty: bool) -> Result<String, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    let mut out = String::new();
    write_value(&v, pretty, 0, &mut out)?;
    if pretty {
        out.push('\n');
    }
    Ok(out)
}

fn write_value(v: &Value, pretty: bool, depth: usize, out: &mut String) -> Result<(), serde_json::Error> {
    let newline = |out: &mut String, depth: usize| {
        if pretty {
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
        }
    };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_value(item, pretty, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            // Sorted here rather than trusting `serde_json::Map`: its order depends on a
            // cargo feature (`preserve_order`) any crate in the build may switch on.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::to_string(k)?);
                out.push(':');
                if pretty {
                    out.push(' ');
                }
                write_value(&map[k], pretty, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_level_and_pretty_is_the_same_data() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": "x", "y": null}], "c": "\"q\""}, "e": [], "f": {}});
        let compact = canonical_json(&v, false).unwrap();
        assert_eq!(
            compact,
            r#"{"a":{"c":"\"q\"","d":[1,{"y":null,"z":"x"}]},"b":1,"e":[],"f":{}}"#
        );
        let pretty = canonical_json(&v, true).unwrap();
        assert!(pretty.ends_with("}\n"));
        let back: Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(back, v);
    }
}
