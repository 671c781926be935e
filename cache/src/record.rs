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
//!
//! A record published to a shared directory carries a [`RecordSignature`]: who vouches
//! for it. This crate only defines what is signed ([`Record::signing_digest`], every
//! field but the signature) and names the file after the signer, so records of several
//! signers sit side by side and none can take another's name; the cryptography and the
//! decision whom to trust belong to the application.

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

/// `blake3::derive_key` context for [`Record::signing_digest`].
const SIGNING_CONTEXT: &str = "w4b-cache record signature v1";

/// The longest signer id a record file name may carry.
const MAX_KEYID_LEN: usize = 64;

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
    /// Who vouches for this record, in a shared directory; `None` in a local one. Not
    /// part of [`signing_digest`](Self::signing_digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<RecordSignature>,
}

/// A signer's signature over a record's [`Record::signing_digest`]. The store treats both
/// fields as opaque text; the record's file name carries `keyid`, which must be lowercase
/// hex of at most 64 digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSignature {
    /// The signer's key id (an unauthenticated hint: checks verify, never look it up alone).
    pub keyid: String,
    /// The signature, encoded by the application (w4b: base64 of ed25519).
    pub sig: String,
}

impl RecordSignature {
    /// Whether `keyid` can be part of a file name: 1 to 64 lowercase hex digits.
    pub fn valid_keyid(keyid: &str) -> bool {
        (1..=MAX_KEYID_LEN).contains(&keyid.len())
            && keyid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

/// What a record file's name says: `<outputs>.json` for an unsigned record,
/// `<outputs>.<keyid>.json` for one signed by `keyid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordName {
    pub outputs: Digest,
    pub keyid: Option<String>,
}

impl RecordName {
    pub(crate) fn parse(file_name: &str) -> Option<RecordName> {
        let stem = file_name.strip_suffix(".json")?;
        let (outputs, keyid) = match stem.split_once('.') {
            None => (stem, None),
            Some((o, k)) if RecordSignature::valid_keyid(k) => (o, Some(k.to_owned())),
            Some(_) => return None,
        };
        Some(RecordName {
            outputs: outputs.parse().ok()?,
            keyid,
        })
    }

    pub(crate) fn file_name(&self) -> String {
        match &self.keyid {
            None => format!("{}.json", self.outputs),
            Some(k) => format!("{}.{k}.json", self.outputs),
        }
    }

    /// Whether a record with these outputs and this signature belongs under this name.
    fn matches(&self, outputs: &Digest, signature: Option<&RecordSignature>) -> bool {
        self.outputs == *outputs && self.keyid.as_deref() == signature.map(|s| s.keyid.as_str())
    }
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
            signature: None,
        }
    }

    /// This record's file name (see [`RecordName`]).
    pub(crate) fn name(&self) -> RecordName {
        RecordName {
            outputs: self.outputs_digest(),
            keyid: self.signature.as_ref().map(|s| s.keyid.clone()),
        }
    }

    /// The same record without its signature: what a local directory keeps.
    pub fn unsigned(&self) -> Record {
        Record {
            signature: None,
            ..self.clone()
        }
    }

    /// What a signature covers: BLAKE3 (derive-key `w4b-cache record signature v1`) over
    /// every field but `signature`, in field order. Strings are `u64le(length) ‖ UTF-8`,
    /// optional values `0x00` (absent) or `0x01 ‖ value`, digests their 32 bytes, numbers
    /// `u64le`, the preimage `u64le(count)` then each entry's `component`, `name`, `value`,
    /// `location?`, `tree?`, and the outputs their [`outputs_digest`](Self::outputs_digest).
    pub fn signing_digest(&self) -> Digest {
        fn text(h: &mut blake3::Hasher, s: &str) {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        fn opt_text(h: &mut blake3::Hasher, s: Option<&str>) {
            if let Some(s) = s {
                h.update(&[1]);
                text(h, s);
            } else {
                h.update(&[0]);
            }
        }
        let mut h = blake3::Hasher::new_derive_key(SIGNING_CONTEXT);
        text(&mut h, &self.schema);
        h.update(self.key.as_bytes());
        text(&mut h, &self.step);
        text(&mut h, &self.kind);
        h.update(&(self.preimage.len() as u64).to_le_bytes());
        for e in &self.preimage {
            text(&mut h, &e.component);
            text(&mut h, &e.name);
            text(&mut h, &e.value);
            opt_text(&mut h, e.location.as_deref());
            if let Some(t) = &e.tree {
                h.update(&[1]);
                h.update(t.as_bytes());
            } else {
                h.update(&[0]);
            }
        }
        h.update(self.outputs_digest().as_bytes());
        h.update(&self.duration_ms.to_le_bytes());
        text(&mut h, &self.producer.tool);
        opt_text(&mut h, self.producer.host.as_deref());
        h.finalize().into()
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
    /// the file name's digest and whose signer (if any) is the one the name gives.
    /// One pass over the bytes when they hold a record of this schema; the schema probe
    /// runs only on failure.
    pub(crate) fn parse(bytes: &[u8], key: &Digest, name: &RecordName) -> Parsed {
        match serde_json::from_slice::<Record>(bytes) {
            Ok(r) if r.schema != RECORD_SCHEMA => Parsed::Foreign,
            Ok(r) if r.key == *key && name.matches(&r.outputs_digest(), r.signature.as_ref()) => {
                Parsed::Valid(Box::new(r))
            }
            Ok(_) => Parsed::Invalid,
            Err(_) => classify_failure(bytes),
        }
    }

    /// [`parse`](Self::parse) for a cache hit: the same checks of schema, key and outputs,
    /// and every field must be present and the whole file well-formed JSON, but the
    /// preimage, step, kind, duration and producer are skipped, not decoded (on a no-op
    /// rebuild of 1,000 steps, decoding preimages was most of the record look-ups' CPU).
    pub(crate) fn parse_head(bytes: &[u8], key: &Digest, name: &RecordName) -> Parsed<RecordHead> {
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
            #[serde(default)]
            signature: Option<RecordSignature>,
        }
        match serde_json::from_slice::<Head>(bytes) {
            Ok(h) if h.schema != RECORD_SCHEMA => Parsed::Foreign,
            Ok(h) if h.key == *key && name.matches(&outputs_digest(&h.outputs), h.signature.as_ref()) => {
                Parsed::Valid(RecordHead {
                    key: h.key,
                    outputs: h.outputs,
                    used: None,
                })
            }
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
        assert!(
            !text.contains("signature"),
            "unsigned records are written as before"
        );
        // Field order is part of the format.
        let order: Vec<usize> = ["\"schema\"", "\"key\"", "\"step\"", "\"outputs\"", "\"producer\""]
            .iter()
            .map(|f| text.find(f).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        let name = r.name();
        assert_eq!(name.outputs, r.outputs_digest());
        assert!(matches!(Record::parse(&bytes, &r.key, &name), Parsed::Valid(p) if *p == r));
        assert!(matches!(
            Record::parse(&bytes, &Digest::of(b"other"), &name),
            Parsed::Invalid
        ));
        assert!(matches!(
            Record::parse(&bytes, &r.key, &other_name()),
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
        let name = r.name();
        match Record::parse_head(&bytes, &r.key, &name) {
            Parsed::Valid(h) => {
                assert_eq!(h, RecordHead::from(&r));
                assert_eq!(h.outputs_digest(), name.outputs);
            }
            _ => panic!("a valid record is a valid head"),
        }
        let invalid = |b: &[u8]| matches!(Record::parse_head(b, &r.key, &name), Parsed::Invalid);
        assert!(matches!(
            Record::parse_head(&bytes, &Digest::of(b"other"), &name),
            Parsed::Invalid
        ));
        assert!(matches!(
            Record::parse_head(&bytes, &r.key, &other_name()),
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

    fn other_name() -> RecordName {
        RecordName {
            outputs: Digest::of(b"n"),
            keyid: None,
        }
    }

    fn signed(r: &Record, keyid: &str) -> Record {
        Record {
            signature: Some(RecordSignature {
                keyid: keyid.into(),
                sig: "c2ln".into(),
            }),
            ..r.clone()
        }
    }

    #[test]
    fn a_signed_record_is_filed_under_its_signer() {
        let r = signed(&record("a", &[("out", Digest::of(b"x"), 1)]), "0123abcd");
        let name = r.name();
        assert_eq!(name.file_name(), format!("{}.0123abcd.json", r.outputs_digest()));
        assert_eq!(RecordName::parse(&name.file_name()), Some(name.clone()));
        let bytes = r.to_json();
        assert!(matches!(Record::parse(&bytes, &r.key, &name), Parsed::Valid(p) if *p == r));
        assert!(matches!(
            Record::parse_head(&bytes, &r.key, &name),
            Parsed::Valid(_)
        ));
        // The name and the signature must agree: no signer's record under another's name,
        // no signed record under an unsigned name, and the other way round.
        for wrong in [
            RecordName {
                keyid: Some("ffff".into()),
                ..name.clone()
            },
            RecordName {
                keyid: None,
                ..name.clone()
            },
        ] {
            assert!(matches!(Record::parse(&bytes, &r.key, &wrong), Parsed::Invalid));
            assert!(matches!(
                Record::parse_head(&bytes, &r.key, &wrong),
                Parsed::Invalid
            ));
        }
        let plain = r.unsigned();
        assert!(plain.signature.is_none());
        assert!(matches!(
            Record::parse(&plain.to_json(), &r.key, &name),
            Parsed::Invalid
        ));
        // Names a signer id could smuggle anything through are not record names.
        for bad in [
            "x.json",
            "AB.json",
            &format!("{}.ABCD.json", r.outputs_digest()),
            &format!("{}.../x.json", r.outputs_digest()),
            &format!("{}..json", r.outputs_digest()),
            &format!("{}.{}.json", r.outputs_digest(), "a".repeat(65)),
        ] {
            assert_eq!(RecordName::parse(bad), None, "{bad}");
        }
        assert!(RecordSignature::valid_keyid(&"a".repeat(64)));
        assert!(!RecordSignature::valid_keyid(""));
    }

    #[test]
    fn the_signing_digest_covers_every_field_but_the_signature() {
        let mut r = record("a", &[("out", Digest::of(b"x"), 1)]);
        r.preimage[0].tree = Some(Digest::of(b"tree"));
        let d = r.signing_digest();
        assert_eq!(signed(&r, "ab").signing_digest(), d);
        let changes: [fn(&mut Record); 12] = [
            |r| r.schema.push('x'),
            |r| r.key = Digest::of(b"k"),
            |r| r.step.push('x'),
            |r| r.kind.push('x'),
            |r| r.preimage[0].value.push('x'),
            |r| r.preimage[0].location = None,
            |r| r.preimage[0].tree = None,
            |r| r.preimage.clear(),
            |r| r.outputs.get_mut("out").unwrap().size = 2,
            |r| r.duration_ms += 1,
            |r| r.producer.tool.push('x'),
            |r| r.producer.host = Some(String::new()),
        ];
        for change in changes {
            let mut other = r.clone();
            change(&mut other);
            assert_ne!(other.signing_digest(), d, "{other:?}");
        }
        // Length prefixes: moving a byte from one string to the next changes the digest.
        let mut a = r.clone();
        a.step = "ab".into();
        a.kind = "c".into();
        let mut b = r.clone();
        b.step = "a".into();
        b.kind = "bc".into();
        assert_ne!(a.signing_digest(), b.signing_digest());
        // Pinned so what signers sign cannot drift silently.
        assert_eq!(
            d.to_hex(),
            "37f06e510bd26b9c310f6437369740e1e432454131a58004fa0475ff7e6839b4"
        );
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
