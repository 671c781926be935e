//! Trust in the shared remote cache: who may put a result there that this builder uses.
//!
//! Whoever can write to the remote directory can write a well-formed record naming any
//! blob (a blob's name is only its BLAKE3, a record's name only a digest of its outputs).
//! So a record is used from the remote only when it is signed by a key this builder
//! trusts (`cache.trusted_keys`, plus the key it signs with itself), and a builder
//! publishes a record only when it can sign it (`cache.signing_key`). What a signature
//! covers is the store's [`Record::signing_digest`]; the signature is ed25519 over the
//! DSSE pre-authentication encoding of that digest with the payload type
//! [`RECORD_PAYLOAD_TYPE`], so a cache signature can never pass for a manifest signature
//! made with the same key, or the other way round. Keys are `w4b keygen`'s.
//!
//! [`RemoteTrust::judge`] sorts a key's remote records into the one to use, if any, and
//! the ones ignored with the reason. Two trusted records with different outputs are a
//! conflict: neither is used (choosing would let whichever signer was compromised win
//! half the time), and the caller reports both.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use w4b_cache::{Digest, Record, RecordSignature};

use crate::defs::workspace::KeyRef;
use crate::manifest::dsse::{Envelope, PublicKey, SecretKey, Signature};

/// The DSSE payload type a record's signing digest is signed under.
pub const RECORD_PAYLOAD_TYPE: &str = "application/vnd.w4b.cache-record.v1";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TrustError {
    #[error("cannot read the remote cache signing key `{}`: {source}", path.display())]
    #[diagnostic(
        code(w4b::cache::signing_key),
        help("create a key pair with `w4b keygen --out PREFIX` and point `cache.signing_key`, `--remote-sign-key` or `W4B_REMOTE_SIGN_KEY` at `PREFIX.key`")
    )]
    SigningKeyUnreadable { path: PathBuf, source: std::io::Error },

    #[error("`{}` is not a w4b secret key", path.display())]
    #[diagnostic(
        code(w4b::cache::signing_key),
        help("the signing key is the private half (`PREFIX.key`) written by `w4b keygen`; its `.pub` goes into `cache.trusted_keys`")
    )]
    SigningKeyFormat { path: PathBuf },

    #[error("cannot read the trusted key `{}`: {source}", path.display())]
    #[diagnostic(
        code(w4b::cache::trusted_key),
        help("list the `.pub` files of `w4b keygen` (or their text) in `cache.trusted_keys`, or pass `--remote-trusted-key`")
    )]
    TrustedKeyUnreadable { path: PathBuf, source: std::io::Error },

    #[error("{what} is not a w4b public key")]
    #[diagnostic(
        code(w4b::cache::trusted_key),
        help("a trusted key is a `PREFIX.pub` file of `w4b keygen`, or its one line `w4b-ed25519-public-v1 <base64>`")
    )]
    TrustedKeyFormat { what: String },
}

/// The keys this builder signs with and trusts.
#[derive(Debug, Default)]
pub struct RemoteTrust {
    signer: Option<SecretKey>,
    trusted: Vec<PublicKey>,
}

/// Why a remote record was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No signature: written by an older w4b, by hand, or by someone forging it.
    Unsigned,
    /// Signed by a key that is not in `cache.trusted_keys`.
    UntrustedKey { keyid: String },
    /// Claims a trusted key's id, but the signature does not verify: tampered with.
    BadSignature { keyid: String },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unsigned => f.write_str("it is not signed"),
            Rejection::UntrustedKey { keyid } => {
                write!(f, "it is signed by key `{keyid}`, which is not trusted")
            }
            Rejection::BadSignature { keyid } => {
                write!(
                    f,
                    "its signature does not verify with trusted key `{keyid}` (tampered with?)"
                )
            }
        }
    }
}

/// A remote record that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// The record's outputs digest (its file name).
    pub outputs: Digest,
    pub why: Rejection,
}

/// A record with a valid signature of a trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vouched {
    pub keyid: String,
    pub outputs: Digest,
}

/// What [`RemoteTrust::judge`] made of a key's remote records.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The record to use: signed by a trusted key, and no trusted record disagrees.
    pub accepted: Option<Record>,
    pub ignored: Vec<Ignored>,
    /// Every trusted record, when they name different outputs (then none is accepted).
    pub conflict: Vec<Vouched>,
}

impl Verdict {
    /// Why nothing was accepted, in one line; `None` when a record was.
    pub fn reason(&self) -> Option<String> {
        if self.accepted.is_some() {
            return None;
        }
        if !self.conflict.is_empty() {
            return Some("trusted signers published different outputs".into());
        }
        let mut why: Vec<String> = Vec::new();
        for i in &self.ignored {
            let text = i.why.to_string();
            if !why.contains(&text) {
                why.push(text);
            }
        }
        Some(format!(
            "no record is signed by a trusted key ({})",
            why.join("; ")
        ))
    }
}

impl RemoteTrust {
    /// `signer` signs what is published, and is trusted too: a key one signs with is a key
    /// one trusts.
    pub fn new(signer: Option<SecretKey>, mut trusted: Vec<PublicKey>) -> RemoteTrust {
        if let Some(own) = signer.as_ref().map(SecretKey::public) {
            if !trusted.contains(&own) {
                trusted.push(own);
            }
        }
        RemoteTrust { signer, trusted }
    }

    /// Reads the signing key (if any) and the trusted keys.
    pub fn load(signing_key: Option<&Path>, trusted: &[KeyRef]) -> Result<RemoteTrust, TrustError> {
        let signer = match signing_key {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| TrustError::SigningKeyUnreadable {
                        path: path.to_owned(),
                        source,
                    })?;
                Some(SecretKey::parse(&text).map_err(|_| TrustError::SigningKeyFormat {
                    path: path.to_owned(),
                })?)
            }
        };
        let mut keys = Vec::new();
        for k in trusted {
            let (text, what) = match k {
                KeyRef::Inline(text) => (text.clone(), format!("the inline key `{text}`")),
                KeyRef::File(path) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| TrustError::TrustedKeyUnreadable {
                            path: path.clone(),
                            source,
                        })?;
                    (text, format!("`{}`", path.display()))
                }
            };
            keys.push(PublicKey::parse(&text).map_err(|_| TrustError::TrustedKeyFormat { what })?);
        }
        Ok(RemoteTrust::new(signer, keys))
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Whether any key is trusted (with none, every remote record is ignored).
    pub fn trusts_anyone(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// `r` signed with the signing key, for the remote; `None` without a signing key.
    pub fn sign(&self, r: &Record) -> Option<Record> {
        let key = self.signer.as_ref()?;
        let digest = r.signing_digest();
        let env = Envelope::sign(RECORD_PAYLOAD_TYPE, digest.as_bytes(), key);
        let sig = env.signatures.into_iter().next()?;
        Some(Record {
            signature: Some(RecordSignature {
                keyid: sig.keyid,
                sig: sig.sig,
            }),
            ..r.unsigned()
        })
    }

    /// Whether `r`'s signature is valid for `key`.
    fn verifies(r: &Record, s: &RecordSignature, key: &PublicKey) -> bool {
        let env = Envelope {
            payload: STANDARD.encode(r.signing_digest().as_bytes()),
            payload_type: RECORD_PAYLOAD_TYPE.to_owned(),
            signatures: vec![Signature {
                keyid: s.keyid.clone(),
                sig: s.sig.clone(),
            }],
        };
        env.verify(key).is_some()
    }

    /// Sorts one key's remote records (as the store lists them) into the one to use, if
    /// any, and the ignored ones. Deterministic: the store lists records by file name.
    pub fn judge(&self, candidates: Vec<Record>) -> Verdict {
        let mut v = Verdict::default();
        let mut vouched: Vec<(Vouched, Record)> = Vec::new();
        for r in candidates {
            let outputs = r.outputs_digest();
            let Some(s) = r.signature.clone() else {
                v.ignored.push(Ignored {
                    outputs,
                    why: Rejection::Unsigned,
                });
                continue;
            };
            // The key id only picks which trusted keys to try; the signature decides.
            let named: Vec<&PublicKey> = self.trusted.iter().filter(|k| k.keyid() == s.keyid).collect();
            let why = if named.is_empty() {
                Rejection::UntrustedKey { keyid: s.keyid }
            } else if named.iter().any(|k| RemoteTrust::verifies(&r, &s, k)) {
                vouched.push((
                    Vouched {
                        keyid: s.keyid,
                        outputs,
                    },
                    r,
                ));
                continue;
            } else {
                Rejection::BadSignature { keyid: s.keyid }
            };
            v.ignored.push(Ignored { outputs, why });
        }
        let first = vouched.first().map(|(w, _)| w.outputs);
        if vouched.iter().any(|(w, _)| Some(w.outputs) != first) {
            v.conflict = vouched.into_iter().map(|(w, _)| w).collect();
        } else {
            v.accepted = vouched.into_iter().next().map(|(_, r)| r);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use w4b_cache::{OutputRef, Producer};

    fn record(output: &[u8]) -> Record {
        let mut r = Record::new(
            Digest::of(b"key"),
            "//images:demo#tar",
            "tar",
            Producer {
                tool: "w4b test".into(),
                host: None,
            },
        );
        r.outputs.insert(
            "archive".into(),
            OutputRef {
                digest: Digest::of(output),
                size: output.len() as u64,
            },
        );
        r
    }

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn signer(n: u8) -> RemoteTrust {
        RemoteTrust::new(Some(key(n)), Vec::new())
    }

    fn reader(trusted: &[u8]) -> RemoteTrust {
        RemoteTrust::new(None, trusted.iter().map(|n| key(*n).public()).collect())
    }

    #[test]
    fn a_trusted_signature_is_accepted_and_anything_else_ignored() {
        let genuine = signer(1).sign(&record(b"genuine")).unwrap();
        assert_eq!(genuine.signature.as_ref().unwrap().keyid, key(1).public().keyid());
        let v = reader(&[1]).judge(vec![genuine.clone()]);
        assert_eq!(v.accepted.as_ref(), Some(&genuine));
        assert_eq!(v.reason(), None);

        let forged = record(b"forged");
        let foreign = signer(2).sign(&record(b"foreign")).unwrap();
        // A forger who copies the genuine signature onto other outputs.
        let mut tampered = record(b"tampered");
        tampered.signature = genuine.signature.clone();
        let v = reader(&[1]).judge(vec![
            forged.clone(),
            foreign.clone(),
            tampered.clone(),
            genuine.clone(),
        ]);
        assert_eq!(
            v.accepted.as_ref(),
            Some(&genuine),
            "the genuine record wins, not the first"
        );
        let why: Vec<Rejection> = v.ignored.iter().map(|i| i.why.clone()).collect();
        assert_eq!(
            why,
            vec![
                Rejection::Unsigned,
                Rejection::UntrustedKey {
                    keyid: key(2).public().keyid()
                },
                Rejection::BadSignature {
                    keyid: key(1).public().keyid()
                },
            ]
        );
        assert_eq!(v.ignored[0].outputs, forged.outputs_digest());

        // Without the genuine one, nothing is used, and the reason says why.
        let v = reader(&[1]).judge(vec![forged, foreign]);
        assert!(v.accepted.is_none() && v.conflict.is_empty());
        let reason = v.reason().unwrap();
        assert!(
            reason.contains("not signed") && reason.contains("not trusted"),
            "{reason}"
        );
        // Trusting nobody trusts nothing.
        assert!(reader(&[]).judge(vec![genuine]).accepted.is_none());
    }

    #[test]
    fn every_field_is_covered_and_a_manifest_signature_does_not_pass() {
        let genuine = signer(1).sign(&record(b"x")).unwrap();
        let mut t = genuine.clone();
        t.step = "//images:other#tar".into();
        assert!(reader(&[1]).judge(vec![t]).accepted.is_none());
        let mut t = genuine.clone();
        t.producer.host = Some("evil".into());
        assert!(reader(&[1]).judge(vec![t]).accepted.is_none());
        // The same key signing the same digest as a manifest payload type.
        let env = Envelope::sign(
            crate::manifest::dsse::IN_TOTO_PAYLOAD_TYPE,
            genuine.signing_digest().as_bytes(),
            &key(1),
        );
        let mut t = genuine.clone();
        t.signature.as_mut().unwrap().sig = env.signatures[0].sig.clone();
        assert!(reader(&[1]).judge(vec![t]).accepted.is_none());
    }

    #[test]
    fn trusted_signers_that_disagree_are_a_conflict_not_a_choice() {
        let a = signer(1).sign(&record(b"one")).unwrap();
        let a2 = signer(2).sign(&record(b"one")).unwrap();
        let b = signer(2).sign(&record(b"two")).unwrap();
        // Two signers of one result agree.
        let v = reader(&[1, 2]).judge(vec![a.clone(), a2]);
        assert_eq!(v.accepted, Some(a.clone()));
        let v = reader(&[1, 2]).judge(vec![a.clone(), b.clone()]);
        assert!(v.accepted.is_none());
        assert_eq!(
            v.conflict,
            vec![
                Vouched {
                    keyid: key(1).public().keyid(),
                    outputs: a.outputs_digest()
                },
                Vouched {
                    keyid: key(2).public().keyid(),
                    outputs: b.outputs_digest()
                },
            ]
        );
        assert!(v.reason().unwrap().contains("different outputs"));
        // Trusting only one of them is no conflict.
        assert_eq!(reader(&[2]).judge(vec![a, b.clone()]).accepted, Some(b));
    }

    #[test]
    fn the_signing_key_is_trusted_and_keys_load_from_files_or_text() {
        let own = signer(3);
        assert!(own.can_sign() && own.trusts_anyone());
        let r = own.sign(&record(b"x")).unwrap();
        assert!(own.judge(vec![r]).accepted.is_some());
        assert!(reader(&[]).sign(&record(b"x")).is_none());

        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("ci.key");
        let public = dir.path().join("ci.pub");
        std::fs::write(&secret, key(4).to_text()).unwrap();
        std::fs::write(&public, key(4).public().to_text()).unwrap();
        let inline = KeyRef::Inline(key(5).public().to_text().trim().to_owned());
        let t = RemoteTrust::load(Some(&secret), &[KeyRef::File(public.clone()), inline]).unwrap();
        assert_eq!(
            t.trusted.len(),
            2,
            "the signing key's own half is not listed twice"
        );
        assert!(matches!(
            RemoteTrust::load(Some(&public), &[]),
            Err(TrustError::SigningKeyFormat { .. })
        ));
        assert!(matches!(
            RemoteTrust::load(None, &[KeyRef::File(secret)]),
            Err(TrustError::TrustedKeyFormat { .. })
        ));
        assert!(matches!(
            RemoteTrust::load(None, &[KeyRef::File(dir.path().join("nope.pub"))]),
            Err(TrustError::TrustedKeyUnreadable { .. })
        ));
        assert!(matches!(
            RemoteTrust::load(None, &[KeyRef::Inline("w4b-ed25519-public-v1 AAAA".into())]),
            Err(TrustError::TrustedKeyFormat { .. })
        ));
    }
}
