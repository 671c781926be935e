//! OpenPGP verification of package repositories: a pinned keyring in, the signed bytes out.
//!
//! A Debian repository is trusted through one file: `InRelease` (a clear-signed `Release`)
//! or `Release` with its detached `Release.gpg`. This module owns the first link of the
//! chain (docs/security.md, "Package repositories"): it decides whether those bytes were
//! signed by a key the user pinned, and hands back *only* the signed bytes, so nothing
//! outside the signature (text before or after the armor, a second message, trailing
//! whitespace the signature does not cover) can ever reach the `Release` parser.
//!
//! The cryptography is `pgp` (rPGP, pure Rust; docs/decisions.md says why not Sequoia);
//! the *policy* is ours and follows apt and gpgv:
//!
//! - a key is usable for a signature when its self-signatures verify; a signing subkey
//!   also needs its primary's binding and its own back-signature; the newest valid
//!   self-signature gives the key flags and expiry;
//! - a data signature counts when it verifies against a usable key that was neither
//!   expired nor revoked when the signature was made (and, with [`Keyring::at`], is not
//!   expired now); a "superseded" or "retired" revocation only invalidates later
//!   signatures, any other revocation all of them, as in RFC 9580 §5.2.3.31;
//! - signatures made with MD5, SHA-1 or RIPEMD-160 are refused outright, as apt does
//!   since 2.1 (collisions make them forgeable);
//! - several signatures (Debian signs `InRelease` with three keys) pass when at least one
//!   is good and none *from a known key* is bad; signatures by keys not in the keyring are
//!   ignored, exactly as apt ignores `NO_PUBKEY` when another signature is good.
//!
//! It reads no clock: "now" is an explicit input ([`Keyring::at`]) the application gives.

#![forbid(unsafe_code)]
// Parses bytes from the network: no unchecked arithmetic or indexing (docs/security.md).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::fmt;
use std::io::BufRead;
use std::str::FromStr;

use pgp::composed::{
    CleartextSignedMessage, Deserializable as _, DetachedSignature, PublicOrSecret, SignedPublicKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{self, KeyFlags, RevocationCode, Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails as _, KeyId, Tag};

/// An OpenPGP key fingerprint: 40 (v4) or 64 (v6) upper-case hex digits, printed without
/// spaces. Parsed leniently (spaces, lower case, a `0x` prefix) as people copy them from
/// `gpg --list-keys` or a web page; compared exactly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    fn from_pgp(fp: &pgp::types::Fingerprint) -> Fingerprint {
        Fingerprint(hex::encode_upper(fp.as_bytes()))
    }

    /// The upper-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last 16 hex digits: the "long key ID" issuers are often named by.
    pub fn key_id(&self) -> &str {
        self.0.get(self.0.len().saturating_sub(16)..).unwrap_or(&self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Fingerprint {
    type Err = SignatureError;

    fn from_str(text: &str) -> Result<Fingerprint, SignatureError> {
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        let digits: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let ok = matches!(digits.len(), 40 | 64) && digits.chars().all(|c| c.is_ascii_hexdigit());
        if !ok {
            return Err(SignatureError::InvalidFingerprint {
                text: text.to_owned(),
            });
        }
        Ok(Fingerprint(digits.to_ascii_uppercase()))
    }
}

/// Why a repository's signature was not accepted, or a keyring not read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SignatureError {
    /// The keyring is neither a binary OpenPGP keyring nor an armored public key block.
    #[error("the keyring is not a readable OpenPGP keyring: {reason}")]
    #[diagnostic(
        code(w4b::apt::malformed_keyring),
        help("give a binary keyring (`.gpg`, as in `/usr/share/keyrings`) or an armored key (`.asc`, `gpg --export --armor`)")
    )]
    MalformedKeyring { reason: String },

    /// The keyring parsed, but holds no public key.
    #[error("the keyring holds no public key")]
    #[diagnostic(
        code(w4b::apt::empty_keyring),
        help("export the repository's signing key with `gpg --export --armor FINGERPRINT`")
    )]
    EmptyKeyring,

    /// A key in the keyring uses something this implementation cannot read (a
    /// public-key algorithm or packet version it does not know).
    #[error("the keyring holds a key that is not supported: {reason}")]
    #[diagnostic(
        code(w4b::apt::unsupported_key),
        help("export only the repository's signing key (`gpg --export FINGERPRINT`)")
    )]
    UnsupportedKey { reason: String },

    /// The text given as a fingerprint is not one.
    #[error("`{text}` is not an OpenPGP fingerprint")]
    #[diagnostic(
        code(w4b::apt::invalid_fingerprint),
        help("a fingerprint is 40 hex digits (64 for a v6 key), as `gpg --list-keys --with-subkey-fingerprints` prints it; key IDs are too short to pin")
    )]
    InvalidFingerprint { text: String },

    /// [`Keyring::select`] found no key with this fingerprint.
    #[error("the keyring has no key `{fingerprint}`")]
    #[diagnostic(
        code(w4b::apt::key_not_in_keyring),
        help("the keyring holds: {}", available.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "))
    )]
    KeyNotInKeyring {
        fingerprint: Fingerprint,
        available: Vec<Fingerprint>,
    },

    /// The bytes are not a clear-signed message or a signature (broken armor, a bad
    /// checksum, text before or after the signed block, a second block).
    #[error("the signed file is malformed: {reason}")]
    #[diagnostic(
        code(w4b::apt::malformed_armor),
        help("the repository served a damaged or tampered file; nothing outside a valid signature is used")
    )]
    MalformedArmor { reason: String },

    /// The file carries no signature at all.
    #[error("the file is not signed")]
    #[diagnostic(
        code(w4b::apt::not_signed),
        help("the repository must publish `InRelease` or `Release` with `Release.gpg`; unsigned repositories are never trusted")
    )]
    NotSigned,

    /// Every signature was made by a key outside the keyring.
    #[error("signed only by keys not in the keyring: {}", issuers.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "))]
    #[diagnostic(
        code(w4b::apt::unknown_key),
        help("if you trust that key, add its fingerprint to the repository's pinned keys; otherwise the repository or the network is not what you expect")
    )]
    UnknownKey {
        /// Each signature's issuer: a fingerprint when the signature names one, else the
        /// 16-digit key ID.
        issuers: Vec<String>,
    },

    /// A signature by a known key does not match the signed bytes.
    #[error("bad signature by `{fingerprint}`: the signed bytes were changed")]
    #[diagnostic(
        code(w4b::apt::bad_signature),
        help("the file was modified after signing (a tampered mirror, or a broken proxy); do not use this repository until it serves a correctly signed file")
    )]
    BadSignature { fingerprint: Fingerprint },

    /// A signature by a known key uses a broken hash function.
    #[error("the signature by `{fingerprint}` uses `{algorithm}`, which is not accepted")]
    #[diagnostic(
        code(w4b::apt::weak_digest),
        help("MD5, SHA-1 and RIPEMD-160 signatures can be forged; the repository must be signed with SHA-256 or stronger (`gpg --digest-algo SHA512`)")
    )]
    WeakDigest {
        fingerprint: Fingerprint,
        algorithm: String,
    },

    /// The signing key had expired (when it signed, or at the reference time).
    #[error("the key `{fingerprint}` expired at {expired_at} (Unix time)")]
    #[diagnostic(
        code(w4b::apt::key_expired),
        help("update the pinned key (a newer `debian-archive-keyring`, or the repository's current key)")
    )]
    KeyExpired {
        fingerprint: Fingerprint,
        expired_at: u64,
    },

    /// The signing key was revoked.
    #[error("the key `{fingerprint}` is revoked{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    #[diagnostic(
        code(w4b::apt::key_revoked),
        help("a revoked key must not be trusted; pin the repository's replacement key")
    )]
    KeyRevoked {
        fingerprint: Fingerprint,
        reason: Option<String>,
    },

    /// The key exists but is not allowed to make data signatures (its flags say so, or
    /// a subkey lacks a valid binding).
    #[error("the key `{fingerprint}` is not valid for signing")]
    #[diagnostic(
        code(w4b::apt::key_not_for_signing),
        help("its self-signatures do not allow signing, or do not verify; the keyring may be damaged")
    )]
    KeyNotForSigning { fingerprint: Fingerprint },

    /// The signature's own expiry time has passed, or it claims to predate its key.
    #[error("the signature by `{fingerprint}` is not valid at this time: {reason}")]
    #[diagnostic(code(w4b::apt::signature_time))]
    SignatureTime {
        fingerprint: Fingerprint,
        reason: String,
    },

    /// A signature this implementation cannot check (an unknown version or algorithm).
    #[error("unsupported signature by `{fingerprint}`: {reason}")]
    #[diagnostic(code(w4b::apt::unsupported_signature))]
    UnsupportedSignature {
        fingerprint: Fingerprint,
        reason: String,
    },
}

/// One key of a certificate that may make data signatures: the primary or a subkey.
#[derive(Clone, Debug)]
enum Material {
    Primary(packet::PublicKey),
    Sub(packet::PublicSubkey),
}

impl Material {
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            Material::Primary(k) => sig.verify(k, data),
            Material::Sub(k) => sig.verify(k, data),
        }
    }
}

/// A revocation: when, and whether it reaches back before that time.
#[derive(Clone, Debug)]
struct Revocation {
    /// Creation time of the revocation signature.
    at: u64,
    /// "Superseded" or "retired": signatures before `at` stay valid.
    soft: bool,
    reason: Option<String>,
}

/// What the self-signatures say about one signing-capable component.
#[derive(Clone, Debug)]
struct Component {
    fingerprint: Fingerprint,
    key_id: KeyId,
    material: Material,
    created: u64,
    /// Unix time at which the key stops being valid (from the newest self-signature).
    expires: Option<u64>,
    revoked: Option<Revocation>,
    /// Whether the newest valid self-signature allows data signatures. `false` also
    /// when no self-signature verified at all.
    can_sign: bool,
}

/// A certificate (transferable public key) reduced to what verification needs.
#[derive(Clone, Debug)]
struct Cert {
    primary: Component,
    subkeys: Vec<Component>,
}

impl Cert {
    fn components(&self) -> impl Iterator<Item = &Component> {
        std::iter::once(&self.primary).chain(self.subkeys.iter())
    }
}

/// The keys a repository may be signed with. Built from a keyring file, usually narrowed
/// to one pinned key with [`Keyring::select`].
#[derive(Clone, Debug)]
pub struct Keyring {
    certs: Vec<Cert>,
    /// The reference time ("now") for expiry; `None` checks only at signing time.
    now: Option<u64>,
}

impl Keyring {
    /// Reads a keyring: a binary keyring (`.gpg`, concatenated transferable public keys as
    /// in `/usr/share/keyrings`) or one or more armored public key blocks (`.asc`).
    /// Subkeys come along with their primary. Secret keys are read for their public part.
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring, SignatureError> {
        let mut keys = Vec::new();
        if looks_armored(bytes) {
            for block in armor_blocks(bytes, "PGP PUBLIC KEY BLOCK")? {
                read_keys(block, &mut keys)?;
            }
        } else {
            read_keys(bytes, &mut keys)?;
        }
        if keys.is_empty() {
            return Err(SignatureError::EmptyKeyring);
        }
        let certs = keys.iter().map(cert_of).collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring { certs, now: None })
    }

    /// The primary fingerprints, in keyring order.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.certs.iter().map(|c| c.primary.fingerprint.clone()).collect()
    }

    /// Every fingerprint that may appear as a signer: primaries and their subkeys.
    pub fn all_fingerprints(&self) -> Vec<Fingerprint> {
        self.certs
            .iter()
            .flat_map(|c| c.components().map(|k| k.fingerprint.clone()))
            .collect()
    }

    /// The keys with any of these fingerprints ([`Keyring::select`] each; every one must
    /// be in the keyring).
    pub fn select_all(&self, fingerprints: &[Fingerprint]) -> Result<Keyring, SignatureError> {
        let mut certs = Vec::new();
        for f in fingerprints {
            certs.extend(self.select(f)?.certs);
        }
        Ok(Keyring { certs, now: self.now })
    }

    /// The keyring reduced to one pinned key. A primary fingerprint keeps that certificate
    /// with its subkeys; a subkey's fingerprint keeps only that subkey (apt's `FPR!`).
    pub fn select(&self, fingerprint: &Fingerprint) -> Result<Keyring, SignatureError> {
        for cert in &self.certs {
            if &cert.primary.fingerprint == fingerprint {
                return Ok(Keyring {
                    certs: vec![cert.clone()],
                    now: self.now,
                });
            }
            if let Some(sub) = cert.subkeys.iter().find(|s| &s.fingerprint == fingerprint) {
                let mut primary = cert.primary.clone();
                // Pinned to the subkey: the primary may no longer sign data itself, but
                // its expiry and revocation still bind the subkey.
                primary.can_sign = false;
                return Ok(Keyring {
                    certs: vec![Cert {
                        primary,
                        subkeys: vec![sub.clone()],
                    }],
                    now: self.now,
                });
            }
        }
        Err(SignatureError::KeyNotInKeyring {
            fingerprint: fingerprint.clone(),
            available: self.fingerprints(),
        })
    }

    /// Also requires keys and signatures to be unexpired at `unix_seconds` (the
    /// application's clock, as gpgv checks against the current time). Without it,
    /// validity is judged at the time each signature was made.
    pub fn at(mut self, unix_seconds: u64) -> Keyring {
        self.now = Some(unix_seconds);
        self
    }
}

/// A signature that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The certificate's primary fingerprint (what users pin).
    pub primary: Fingerprint,
    /// The key that made the signature: the primary or one of its subkeys.
    pub key: Fingerprint,
    /// The signature's creation time, Unix seconds.
    pub signed_at: u64,
}

/// The outcome of a successful verification: the signed bytes and who signed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Exactly the bytes the signature covers. For a clear-signed file: the text between
    /// the armor headers and the signature, dash-unescaped, trailing blanks of each line
    /// removed, lines ending in `\n` (the last line has no line ending, as signed).
    pub payload: Vec<u8>,
    /// The first good signature.
    signer: Signer,
    /// Every good signature after the first, in file order.
    more: Vec<Signer>,
}

impl Verified {
    fn new(payload: Vec<u8>, mut signers: Vec<Signer>) -> Option<Verified> {
        if signers.is_empty() {
            return None;
        }
        let signer = signers.remove(0);
        Some(Verified {
            payload,
            signer,
            more: signers,
        })
    }

    /// The first good signature.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Every good signature, in file order (at least one).
    pub fn signers(&self) -> impl Iterator<Item = &Signer> {
        std::iter::once(&self.signer).chain(self.more.iter())
    }
}

/// Verifies a clear-signed file (`InRelease`) and returns its signed payload.
pub fn verify_clearsigned(text: &[u8], keys: &Keyring) -> Result<Verified, SignatureError> {
    let text = std::str::from_utf8(text).map_err(|e| SignatureError::MalformedArmor {
        reason: format!("not UTF-8 text ({e})"),
    })?;
    let trimmed = text.trim_start_matches(['\n', '\r', ' ', '\t']);
    if !trimmed.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        // Anything else: text before the header (apt rejects it too, CVE-2013-1051 and
        // the 2018 InRelease injection), or no clear-signed block at all.
        return Err(if text.contains("-----BEGIN PGP SIGNED MESSAGE-----") {
            SignatureError::MalformedArmor {
                reason: "text before `-----BEGIN PGP SIGNED MESSAGE-----`".into(),
            }
        } else {
            SignatureError::NotSigned
        });
    }
    let (message, _headers) =
        CleartextSignedMessage::from_string(trimmed).map_err(|e| SignatureError::MalformedArmor {
            reason: e.to_string(),
        })?;
    // `signed_text` is the canonical form the hash covers (CRLF line breaks); hand back
    // the same bytes with LF, so the payload is exactly what was signed.
    let signed = message.signed_text();
    let payload = signed.replace("\r\n", "\n").into_bytes();
    let verdict = judge(message.signatures(), signed.as_bytes(), keys)?;
    // `judge` returns at least one signer or an error, so `None` cannot happen.
    Verified::new(payload, verdict).ok_or(SignatureError::NotSigned)
}

/// Verifies `data` (`Release`) against a detached signature (`Release.gpg`, armored or
/// binary) and returns `data` as the payload.
pub fn verify_detached(data: &[u8], signature: &[u8], keys: &Keyring) -> Result<Verified, SignatureError> {
    let malformed = |e: pgp::errors::Error| SignatureError::MalformedArmor {
        reason: e.to_string(),
    };
    let mut sigs = Vec::new();
    if looks_armored(signature) {
        for block in armor_blocks(signature, "PGP SIGNATURE")? {
            let (iter, _) = DetachedSignature::from_armor_many(block).map_err(malformed)?;
            for sig in iter {
                sigs.push(sig.map_err(malformed)?.signature);
            }
        }
    } else {
        for sig in DetachedSignature::from_bytes_many(signature).map_err(malformed)? {
            sigs.push(sig.map_err(malformed)?.signature);
        }
    }
    let signers = judge(&sigs, data, keys)?;
    Verified::new(data.to_vec(), signers).ok_or(SignatureError::NotSigned)
}

/// Whether the bytes start (after blanks) with an armor line.
fn looks_armored(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes
        .get(start..)
        .is_some_and(|rest| rest.starts_with(b"-----BEGIN PGP "))
}

/// Splits armored text into its `kind` blocks (several keys exported one after another
/// make several blocks). Text between blocks is ignored for keyrings (comments people
/// paste), but any other block kind, or no block at all, is malformed.
fn armor_blocks<'a>(bytes: &'a [u8], kind: &str) -> Result<Vec<&'a [u8]>, SignatureError> {
    let begin = format!("-----BEGIN {kind}-----");
    let end = format!("-----END {kind}-----");
    let mut blocks = Vec::new();
    let mut rest = bytes;
    while let Some(start) = find(rest, begin.as_bytes()) {
        let from = rest.get(start..).unwrap_or_default();
        let Some(stop) = find(from, end.as_bytes()) else {
            return Err(SignatureError::MalformedArmor {
                reason: format!("`{begin}` without `{end}`"),
            });
        };
        let until = stop.saturating_add(end.len());
        blocks.push(from.get(..until).unwrap_or_default());
        rest = from.get(until..).unwrap_or_default();
    }
    if blocks.is_empty() {
        return Err(SignatureError::MalformedArmor {
            reason: format!("no `{begin}` block"),
        });
    }
    Ok(blocks)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses every transferable key in `bytes` (armored block or binary) into `out`.
fn read_keys(bytes: &[u8], out: &mut Vec<SignedPublicKey>) -> Result<(), SignatureError> {
    let malformed = |e: pgp::errors::Error| match e {
        pgp::errors::Error::Unsupported { .. } | pgp::errors::Error::Unimplemented { .. } => {
            SignatureError::UnsupportedKey {
                reason: e.to_string(),
            }
        }
        _ => SignatureError::MalformedKeyring {
            reason: e.to_string(),
        },
    };
    let reader: &mut dyn BufRead = &mut &*bytes;
    let (iter, _) = PublicOrSecret::from_reader_many_buf(reader).map_err(malformed)?;
    for key in iter {
        out.push(match key.map_err(malformed)? {
            PublicOrSecret::Public(k) => k,
            PublicOrSecret::Secret(k) => k.to_public_key(),
        });
    }
    Ok(())
}

fn secs(t: pgp::types::Timestamp) -> u64 {
    u64::from(t.as_secs())
}

fn created(sig: &Signature) -> u64 {
    sig.created().map(secs).unwrap_or(0)
}

/// Whether the signature's hashed area carries a key flags subpacket at all (a v4 key
/// without one may sign, RFC 9580 §5.2.3.29 leaves it to the implementation; gpg allows).
fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

fn flags_allow_signing(sig: &Signature) -> bool {
    let flags: KeyFlags = sig.key_flags();
    flags.sign() || !has_key_flags(sig)
}

fn expiry(created_at: u64, sig: &Signature) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| u64::from(d.as_secs()))
        .filter(|&d| d != 0)
        .map(|d| created_at.saturating_add(d))
}

fn revocation(sig: &Signature) -> Revocation {
    let code = sig.revocation_reason_code();
    let soft = matches!(
        code,
        Some(RevocationCode::KeySuperseded) | Some(RevocationCode::KeyRetired)
    );
    let text = sig
        .revocation_reason_string()
        .map(|b| String::from_utf8_lossy(b).trim().to_owned())
        .filter(|s| !s.is_empty());
    let reason = match (code, text) {
        (Some(c), Some(t)) => Some(format!("{c:?}: {t}")),
        (Some(c), None) => Some(format!("{c:?}")),
        (None, t) => t,
    };
    Revocation {
        at: created(sig),
        soft,
        reason,
    }
}

/// Reduces a transferable public key to its usable components, checking every
/// self-signature that grants something (RFC 9580 §10.1: self-signatures that do not
/// verify are ignored, not trusted).
fn cert_of(key: &SignedPublicKey) -> Result<Cert, SignatureError> {
    let primary_key = &key.primary_key;
    let fingerprint = Fingerprint::from_pgp(&primary_key.fingerprint());
    let primary_created = secs(primary_key.created_at());

    // The newest self-signature that verifies: a user ID certification or a direct-key
    // signature. It gives the primary's flags and expiry.
    let mut newest: Option<&Signature> = None;
    for user in &key.details.users {
        for s in &user.signatures {
            let ok =
                s.is_certification() && s.verify_certification(primary_key, Tag::UserId, &user.id).is_ok();
            if ok && newest.is_none_or(|n| created(s) >= created(n)) {
                newest = Some(s);
            }
        }
    }
    let mut newest_direct: Option<&Signature> = None;
    for s in &key.details.direct_signatures {
        if s.verify_key(primary_key).is_ok() && newest_direct.is_none_or(|n| created(s) >= created(n)) {
            newest_direct = Some(s);
        }
    }
    // A direct-key signature's expiry applies to the whole key (§10.1.1); a user ID's
    // only when no direct-key signature says otherwise.
    let binding = newest_direct.or(newest);
    let revoked = key
        .details
        .revocation_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::KeyRevocation))
        .filter(|s| s.verify_key(primary_key).is_ok())
        .map(revocation)
        .min_by_key(|r| (r.soft, r.at));
    let primary = Component {
        fingerprint: fingerprint.clone(),
        key_id: primary_key.legacy_key_id(),
        material: Material::Primary(primary_key.clone()),
        created: primary_created,
        expires: binding.and_then(|s| expiry(primary_created, s)),
        revoked,
        can_sign: binding.is_some_and(flags_allow_signing),
    };

    let mut subkeys = Vec::new();
    for sub in &key.public_subkeys {
        let sub_created = secs(sub.key.created_at());
        let mut newest_binding: Option<&Signature> = None;
        let mut revoked: Option<Revocation> = None;
        for s in &sub.signatures {
            match s.typ() {
                Some(SignatureType::SubkeyBinding) => {
                    if s.verify_subkey_binding(primary_key, &sub.key).is_err() {
                        continue;
                    }
                    // A signing subkey must prove the primary may claim it (back-sig),
                    // else anyone could attach someone else's signing key to theirs.
                    if s.key_flags().sign() {
                        let back = s
                            .embedded_signature()
                            .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary_key).is_ok());
                        if !back {
                            continue;
                        }
                    }
                    if newest_binding.is_none_or(|n| created(s) >= created(n)) {
                        newest_binding = Some(s);
                    }
                }
                Some(SignatureType::SubkeyRevocation)
                    if s.verify_subkey_binding(primary_key, &sub.key).is_ok() =>
                {
                    let r = revocation(s);
                    if revoked.as_ref().is_none_or(|o| (r.soft, r.at) < (o.soft, o.at)) {
                        revoked = Some(r);
                    }
                }
                _ => {}
            }
        }
        subkeys.push(Component {
            fingerprint: Fingerprint::from_pgp(&sub.key.fingerprint()),
            key_id: sub.key.legacy_key_id(),
            material: Material::Sub(sub.key.clone()),
            created: sub_created,
            expires: newest_binding.and_then(|s| expiry(sub_created, s)),
            revoked,
            // Subkeys have no "no flags means sign" legacy: only an explicit sign flag.
            can_sign: newest_binding.is_some_and(|s| s.key_flags().sign()),
        });
    }
    Ok(Cert { primary, subkeys })
}

/// How one signature fared.
enum Outcome {
    Good(Signer),
    /// By a key not in the keyring; the issuer as the signature names it.
    Unknown(String),
    Rejected(SignatureError),
}

/// Applies the module's policy to every signature (see the module doc).
fn judge(sigs: &[Signature], data: &[u8], keys: &Keyring) -> Result<Vec<Signer>, SignatureError> {
    if sigs.is_empty() {
        return Err(SignatureError::NotSigned);
    }
    let mut good = Vec::new();
    let mut unknown = Vec::new();
    let mut first_rejection = None;
    for sig in sigs {
        match check_one(sig, data, keys) {
            Outcome::Good(s) => good.push(s),
            Outcome::Unknown(issuer) => unknown.push(issuer),
            Outcome::Rejected(e) => {
                first_rejection.get_or_insert(e);
            }
        }
    }
    // A bad signature by a trusted key fails the file even next to a good one: the file
    // was changed after one of our keys signed it, or one of our keys is misused.
    if let Some(e) = first_rejection {
        return Err(e);
    }
    if good.is_empty() {
        unknown.sort();
        unknown.dedup();
        return Err(SignatureError::UnknownKey { issuers: unknown });
    }
    Ok(good)
}

fn issuer_name(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return Fingerprint::from_pgp(fp).0;
    }
    if let Some(id) = sig.issuer_key_id().first() {
        return hex::encode_upper(id.as_ref());
    }
    "(no issuer named)".to_owned()
}

fn check_one(sig: &Signature, data: &[u8], keys: &Keyring) -> Outcome {
    // Candidates: components whose fingerprint or key ID the signature names. A
    // signature that names no issuer is tried against every key (gpg does the same).
    let fps: Vec<Fingerprint> = sig
        .issuer_fingerprint()
        .into_iter()
        .map(Fingerprint::from_pgp)
        .collect();
    let ids: Vec<&KeyId> = sig.issuer_key_id();
    let names_none = fps.is_empty() && ids.is_empty();
    let mut candidates = Vec::new();
    for cert in &keys.certs {
        for c in cert.components() {
            if names_none || fps.contains(&c.fingerprint) || ids.iter().any(|i| **i == c.key_id) {
                candidates.push((cert, c));
            }
        }
    }
    if candidates.is_empty() {
        return Outcome::Unknown(issuer_name(sig));
    }
    let mut first_error = None;
    for (cert, c) in candidates {
        match check_with(sig, data, cert, c, keys.now) {
            Ok(signer) => return Outcome::Good(signer),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        // With no issuer named, a failure against every key is "not ours".
        Some(_) if names_none => Outcome::Unknown(issuer_name(sig)),
        Some(e) => Outcome::Rejected(e),
        None => Outcome::Unknown(issuer_name(sig)),
    }
}

fn check_with(
    sig: &Signature,
    data: &[u8],
    cert: &Cert,
    c: &Component,
    now: Option<u64>,
) -> Result<Signer, SignatureError> {
    let fingerprint = c.fingerprint.clone();
    let Some(algorithm) = sig.hash_alg() else {
        return Err(SignatureError::UnsupportedSignature {
            fingerprint,
            reason: format!("signature version {:?}", sig.version()),
        });
    };
    if matches!(
        algorithm,
        HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
    ) {
        return Err(SignatureError::WeakDigest {
            fingerprint,
            algorithm: algorithm.to_string(),
        });
    }
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(SignatureError::UnsupportedSignature {
            fingerprint,
            reason: format!("signature type {:?} is not a document signature", sig.typ()),
        });
    }
    if let Err(e) = c.material.verify(sig, data) {
        use pgp::errors::Error;
        return Err(match e {
            Error::Unsupported { .. } | Error::Unimplemented { .. } => SignatureError::UnsupportedSignature {
                fingerprint,
                reason: e.to_string(),
            },
            _ => SignatureError::BadSignature { fingerprint },
        });
    }
    // Cryptographically good; now whether the key could make it.
    let Some(signed_at) = sig.created().map(secs) else {
        return Err(SignatureError::SignatureTime {
            fingerprint,
            reason: "it has no creation time".into(),
        });
    };
    if !c.can_sign {
        return Err(SignatureError::KeyNotForSigning { fingerprint });
    }
    if signed_at < c.created {
        return Err(SignatureError::SignatureTime {
            fingerprint,
            reason: format!("made at {signed_at}, before the key existed ({})", c.created),
        });
    }
    for component in [&cert.primary, c] {
        if let Some(r) = &component.revoked {
            if !r.soft || signed_at >= r.at {
                return Err(SignatureError::KeyRevoked {
                    fingerprint: component.fingerprint.clone(),
                    reason: r.reason.clone(),
                });
            }
        }
        if let Some(expires) = component.expires {
            let at = now.map_or(signed_at, |n| n.max(signed_at));
            if at >= expires {
                return Err(SignatureError::KeyExpired {
                    fingerprint: component.fingerprint.clone(),
                    expired_at: expires,
                });
            }
        }
    }
    if let (Some(now), Some(d)) = (now, sig.signature_expiration_time()) {
        let d = u64::from(d.as_secs());
        if d != 0 && now >= signed_at.saturating_add(d) {
            return Err(SignatureError::SignatureTime {
                fingerprint,
                reason: format!("it expired at {}", signed_at.saturating_add(d)),
            });
        }
    }
    Ok(Signer {
        primary: cert.primary.fingerprint.clone(),
        key: c.fingerprint.clone(),
        signed_at,
    })
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // tests index their own fixtures
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_leniently_and_print_canonically() {
        let fp: Fingerprint = "0x4cb5 0190 207b 4758 a3f7  3a79 6ed0 e7b8 2643 e131"
            .parse()
            .unwrap();
        assert_eq!(fp.as_str(), "4CB50190207B4758A3F73A796ED0E7B82643E131");
        assert_eq!(fp.key_id(), "6ED0E7B82643E131");
        for bad in [
            "",
            "6ED0E7B82643E131",
            "4CB50190207B4758A3F73A796ED0E7B82643E13G",
            "4CB50190207B4758A3F73A796ED0E7B82643E1311",
        ] {
            assert!(
                matches!(
                    bad.parse::<Fingerprint>(),
                    Err(SignatureError::InvalidFingerprint { .. })
                ),
                "{bad}"
            );
        }
        let v6 = "A".repeat(64);
        assert_eq!(v6.parse::<Fingerprint>().unwrap().as_str(), v6);
    }

    #[test]
    fn keyrings_that_are_not_keyrings() {
        assert!(matches!(
            Keyring::from_bytes(b""),
            Err(SignatureError::EmptyKeyring | SignatureError::MalformedKeyring { .. })
        ));
        assert!(matches!(
            Keyring::from_bytes(
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64!\n-----END PGP PUBLIC KEY BLOCK-----\n"
            ),
            Err(SignatureError::MalformedKeyring { .. } | SignatureError::UnsupportedKey { .. })
        ));
        assert!(matches!(
            Keyring::from_bytes(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n"),
            Err(SignatureError::MalformedArmor { .. })
        ));
        assert!(Keyring::from_bytes(b"\x99\x00\x01garbage").is_err());
    }

    #[test]
    fn armor_blocks_split_concatenated_exports() {
        let text = b"comment\n-----BEGIN PGP PUBLIC KEY BLOCK-----\na\n-----END PGP PUBLIC KEY BLOCK-----\nbetween\n-----BEGIN PGP PUBLIC KEY BLOCK-----\nb\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let blocks = armor_blocks(text, "PGP PUBLIC KEY BLOCK").unwrap();
        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].starts_with(b"-----BEGIN") && blocks[1].ends_with(b"BLOCK-----"));
        assert!(armor_blocks(b"nothing", "PGP SIGNATURE").is_err());
    }

    #[test]
    fn unsigned_and_malformed_clearsigned_files() {
        // A keyring is not needed to reject these; any key-less ring would do, but the
        // API wants one, so use an empty one built by hand.
        let keys = Keyring {
            certs: Vec::new(),
            now: None,
        };
        assert!(matches!(
            verify_clearsigned(b"Origin: Debian\nSuite: stable\n", &keys),
            Err(SignatureError::NotSigned)
        ));
        let injected = b"Suite: evil\n-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: x\n-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n";
        assert!(matches!(
            verify_clearsigned(injected, &keys),
            Err(SignatureError::MalformedArmor { .. })
        ));
        let truncated = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSuite: x\n";
        assert!(matches!(
            verify_clearsigned(truncated, &keys),
            Err(SignatureError::MalformedArmor { .. })
        ));
        assert!(matches!(
            verify_clearsigned(b"\xff\xfe", &keys),
            Err(SignatureError::MalformedArmor { .. })
        ));
        assert!(matches!(
            verify_detached(
                b"data",
                b"-----BEGIN PGP SIGNATURE-----\n\n!!\n-----END PGP SIGNATURE-----\n",
                &keys
            ),
            Err(SignatureError::MalformedArmor { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let keys = Keyring { certs: Vec::new(), now: None };
            let _ = verify_clearsigned(&bytes, &keys);
            let _ = verify_detached(b"x", &bytes, &keys);
            let _ = Keyring::from_bytes(&bytes);
        }
    }
}
