//! Step records: what a step was given and what it produced.
//!
//! A record is the unit a cache lookup returns and `why` diffs. The store treats the
//! preimage as opaque text; it only relies on `key` (the directory) and `outputs` (the
//! file name, see [`Record::outputs_digest`]). Naming the file after the outputs, not the
//! whole record, is what lets identical results dedupe while different results for one
//! key sit side by side as evidence of non-determinism.
//!
//! A cache hit needs only the outputs, so look-ups read a [`RecordHead`]: the same file,
//! checked the same way (schema, key, outputs against the file name), with the preimage
//! and the other fields syntax-checked by the JSON parser but not decoded. `why`,
//! `verify` and GC read whole [`Record`]s.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::Digest;

/// The `schema` value this crate writes and reads.
pub const RECORD_SCHEMA: &str = "w4b.record/1";

/// `blake3::derive_key` context for [`Record::outputs_digest`]. Changing the encoding
/// means a new context string, never a silent change.
const OUTPUTS_CONTEXT: &str = "w4b-cache record outputs v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub schema: String,
    pub key: Digest,
    /// Stable step name, e.g. `//images:demo#tar`.
    pub step: String,
    pub kind: String,
    pub preimage: Vec<PreimageEntry>,
    pub outputs: BTreeMap<String, OutputRef>,
    pub duration_ms: u64,
    pub producer: Producer,
}

/// One named component of a step key's preimage; opaque to the store, except for `tree`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreimageEntry {
    pub component: String,
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// For a value that stands for a whole tree of files (a directory's digest, an
    /// archive's): a blob in the store that spells the tree out (for w4b, a tree root),
    /// so `why` can name the files that differ. Recorded, never part of the key. The
    /// store keeps it, and every blob it references, as long as the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Digest>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    /// e.g. `w4b 0.1.0`.
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// What a cache hit needs from a record: the key it is filed under and its outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHead {
    pub key: Digest,
    pub outputs: BTreeMap<String, OutputRef>,
    /// The record file's mtime (GC's LRU clock) when it was read, so that marking a hit
    /// as used costs no second `stat`; `None` when unknown.
    pub(crate) used: Option<SystemTime>,
}

impl RecordHead {
    /// The record's file name digest; see [`Record::outputs_digest`].
    pub fn outputs_digest(&self) -> Digest {
        outputs_digest(&self.outputs)
    }
}

impl From<&Record> for RecordHead {
    fn from(r: &Record) -> RecordHead {
        RecordHead {
            key: r.key,
            outputs: r.outputs.clone(),
            used: None,
        }
    }
}

/// What a record file turned out to hold (a whole [`Record`], or a [`RecordHead`]).
pub(crate) enum Parsed<T = Box<Record>> {
    Valid(T),
    /// Well-formed, but another schema (a newer w4b sharing the directory): skip, keep.
    Foreign,
    /// Not a record, or not the record its path claims: quarantine.
    Invalid,
}

/// BLAKE3 (derive-key [`OUTPUTS_CONTEXT`]) over the outputs in name order; see
/// [`Record::outputs_digest`].
fn outputs_digest(outputs: &BTreeMap<String, OutputRef>) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(OUTPUTS_CONTEXT);
    for (name, out) in outputs {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(out.digest.as_bytes());
        h.update(&out.size.to_le_bytes());
    }
    h.finalize().into()
}

/// A record file that failed to decode: another schema is kept, anything else is invalid.
fn classify_failure<T>(bytes: &[u8]) -> Parsed<T> {
    #[derive(Deserialize)]
    struct Probe {
        schema: String,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) if p.schema != RECORD_SCHEMA => Parsed::Foreign,
        _ => Parsed::Invalid,
    }
}

impl Record {
    /// An empty record for `key`; fill in preimage, outputs and duration.
    pub fn new(key: Digest, step: impl Into<String>, kind: impl Into<String>, producer: Producer) -> Record {
        Record {
            schema: RECORD_SCHEMA.to_owned(),
            key,
            step: step.into(),
            kind: kind.into(),
            preimage: Vec::new(),
            outputs: BTreeMap::new(),
            duration_ms: 0,
            producer,
        }
    }

    /// BLAKE3 (derive-key [`OUTPUTS_CONTEXT`]) over the outputs in name order, each as
    /// `u64le(name length) ‖ name ‖ digest (32 bytes) ‖ u64le(size)`; the record's file name.
    pub fn outputs_digest(&self) -> Digest {
        outputs_digest(&self.outputs)
    }

    /// The blobs this record keeps alive: its outputs, then the trees its preimage names
    /// (see [`PreimageEntry::tree`]), in that order, without repeats.
    pub fn roots(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self.outputs.values().map(|o| o.digest).collect();
        for t in self.preimage.iter().filter_map(|e| e.tree) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Pretty JSON with a trailing newline; field order is the struct's, maps are sorted.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs and string-keyed maps into memory cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Checks that `bytes` is a record of this schema for `key` whose outputs hash to
    /// `name` (the file name's digest).
    /// One pass over the bytes when they hold a record of this schema; the schema probe
    /// runs only on failure.
    pub(crate) fn parse(bytes: &[u8], key: &Digest, name: &Digest) -> Parsed {
        match serde_json::from_slice::<Record>(bytes) {
            Ok(r) if r.schema != RECORD_SCHEMA => Parsed::Foreign,
            Ok(r) if r.key == *key && r.outputs_digest() == *name => Parsed::Valid(Box::new(r)),
            Ok(_) => Parsed::Invalid,
            Err(_) => classify_failure(bytes),
        }
    }

    /// [`parse`](Self::parse) for a cache hit: the same checks of schema, key and outputs,
    /// and every field must be present and the whole file well-formed JSON, but the
    /// preimage, step, kind, duration and producer are skipped, not decoded (on a no-op
    /// rebuild of 1,000 steps, decoding preimages was most of the record look-ups' CPU).
    pub(crate) fn parse_head(bytes: &[u8], key: &Digest, name: &Digest) -> Parsed<RecordHead> {
        #[derive(Deserialize)]
        #[allow(dead_code)] // Fields that must be present, read only by `Record`.
        struct Head {
            schema: String,
            key: Digest,
            step: IgnoredAny,
            kind: IgnoredAny,
            preimage: IgnoredAny,
            outputs: BTreeMap<String, OutputRef>,
            duration_ms: IgnoredAny,
            producer: IgnoredAny,
        }
        match serde_json::from_slice::<Head>(bytes) {
            Ok(h) if h.schema != RECORD_SCHEMA => Parsed::Foreign,
            Ok(h) if h.key == *key && outputs_digest(&h.outputs) == *name => Parsed::Valid(RecordHead {
                key: h.key,
                outputs: h.outputs,
                used: None,
            }),
            Ok(_) => Parsed::Invalid,
            Err(_) => classify_failure(bytes),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests use the clock, the environment and child processes.
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(key: &str, outputs: &[(&str, Digest, u64)]) -> Record {
        let mut r = Record::new(
            Digest::of(key.as_bytes()),
            format!("//t:{key}#step"),
            "test",
            Producer {
                tool: "w4b-cache tests".into(),
                host: None,
            },
        );
        r.preimage.push(PreimageEntry {
            component: "param".into(),
            name: "key".into(),
            value: key.into(),
            location: Some("t.yaml:1:1".into()),
            tree: None,
        });
        for (name, digest, size) in outputs {
            r.outputs.insert(
                (*name).into(),
                OutputRef {
                    digest: *digest,
                    size: *size,
                },
            );
        }
        r
    }

    #[test]
    fn json_round_trip_and_name_check() {
        let r = record("a", &[("out", Digest::of(b"x"), 1)]);
        let bytes = r.to_json();
        let text = String::from_utf8(bytes.clone()).unwrap();
        // Field order is part of the format.
        let order: Vec<usize> = ["\"schema\"", "\"key\"", "\"step\"", "\"outputs\"", "\"producer\""]
            .iter()
            .map(|f| text.find(f).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        let name = r.outputs_digest();
        assert!(matches!(Record::parse(&bytes, &r.key, &name), Parsed::Valid(p) if *p == r));
        assert!(matches!(
            Record::parse(&bytes, &Digest::of(b"other"), &name),
            Parsed::Invalid
        ));
        assert!(matches!(
            Record::parse(&bytes, &r.key, &Digest::of(b"n")),
            Parsed::Invalid
        ));
        assert!(matches!(
            Record::parse(b"{\"schema\":\"w4b.record/9\"}", &r.key, &name),
            Parsed::Foreign
        ));
        assert!(matches!(
            Record::parse(b"\x00garbage", &r.key, &name),
            Parsed::Invalid
        ));
    }

    #[test]
    fn head_checks_what_parse_checks_but_skips_the_preimage() {
        let r = record("a", &[("out", Digest::of(b"x"), 1)]);
        let bytes = r.to_json();
        let name = r.outputs_digest();
        match Record::parse_head(&bytes, &r.key, &name) {
            Parsed::Valid(h) => {
                assert_eq!(h, RecordHead::from(&r));
                assert_eq!(h.outputs_digest(), name);
            }
            _ => panic!("a valid record is a valid head"),
        }
        let invalid = |b: &[u8]| matches!(Record::parse_head(b, &r.key, &name), Parsed::Invalid);
        assert!(matches!(
            Record::parse_head(&bytes, &Digest::of(b"other"), &name),
            Parsed::Invalid
        ));
        assert!(matches!(
            Record::parse_head(&bytes, &r.key, &Digest::of(b"n")),
            Parsed::Invalid
        ));
        assert!(matches!(
            Record::parse_head(b"{\"schema\":\"w4b.record/9\"}", &r.key, &name),
            Parsed::Foreign
        ));
        assert!(invalid(b"\x00garbage"));
        // Skipped fields must still be there, and the whole file well-formed.
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(invalid(text.replace("\"producer\"", "\"produce\"").as_bytes()));
        assert!(invalid(
            text.replace("\"preimage\": [", "\"preimage\": [[").as_bytes()
        ));
        // A preimage of the wrong shape is only caught by the full parse (`why`).
        let odd = text.replacen("\"component\": \"param\"", "\"component\": 7", 1);
        assert!(matches!(
            Record::parse_head(odd.as_bytes(), &r.key, &name),
            Parsed::Valid(_)
        ));
        assert!(matches!(
            Record::parse(odd.as_bytes(), &r.key, &name),
            Parsed::Invalid
        ));
    }

    #[test]
    fn outputs_digest_depends_on_outputs_only() {
        let a = record("a", &[("out", Digest::of(b"x"), 1)]);
        let mut b = a.clone();
        b.duration_ms = 99;
        b.step = "//other".into();
        assert_eq!(a.outputs_digest(), b.outputs_digest());
        let c = record("a", &[("out", Digest::of(b"x"), 2)]);
        let d = record("a", &[("out2", Digest::of(b"x"), 1)]);
        assert_ne!(a.outputs_digest(), c.outputs_digest());
        assert_ne!(a.outputs_digest(), d.outputs_digest());
        // Pinned so the file-name encoding cannot drift silently.
        assert_eq!(
            a.outputs_digest().to_hex(),
            "1f2abba426ace24df998e35cf5b5ad57a06b958b0aaafd6ac968cb318fe70995"
        );
    }
}
