//! DSSE envelopes and ed25519 keys: how a manifest is signed and how a signature is
//! checked.
//!
//! A signature covers the pre-authentication encoding [`pae`] of the payload type and
//! the payload bytes, never the payload alone, so a signature made for one payload type
//! cannot be replayed for another. `keyid` in an envelope is an unauthenticated hint: a
//! check tries every signature against the given key and never trusts `keyid` to pick
//! or exclude one.
//!
//! Key files are one line of text: `w4b-ed25519-secret-v1 <base64 of the 32-byte seed>`
//! or `w4b-ed25519-public-v1 <base64 of the 32-byte public key>`. A key's id is the first
//! 16 hex digits of the BLAKE3 of the public key bytes.

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::statement::canonical_json;

/// The payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const SECRET_TAG: &str = "w4b-ed25519-secret-v1";
const PUBLIC_TAG: &str = "w4b-ed25519-public-v1";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DsseError {
    #[error("not a w4b {expected} key file (expected one line `{expected} <base64>`)")]
    #[diagnostic(
        code(w4b::manifest::key_format),
        help("create a key pair with `w4b keygen --out PREFIX`; `PREFIX.key` signs, `PREFIX.pub` verifies")
    )]
    KeyFormat { expected: &'static str },
    #[error("the operating system's random number generator failed: {0}")]
    #[diagnostic(code(w4b::manifest::random))]
    Random(String),
    #[error("not a DSSE envelope: {0}")]
    #[diagnostic(code(w4b::manifest::envelope))]
    Envelope(String),
    #[error("the envelope could not be encoded: {0}")]
    #[diagnostic(code(w4b::manifest::encode))]
    Encode(#[from] serde_json::Error),
}

/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal bytes.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// An ed25519 signing key. Its `Debug` never shows the secret.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(keyid {})", self.public().keyid())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A new key from the operating system's random number generator: the one place in
    /// w4b where randomness is wanted (`w4b keygen`).
    pub fn generate() -> Result<SecretKey, DsseError> {
        let mut seed = [0u8; 32];
        #[allow(clippy::disallowed_methods)] // A signing key must be unpredictable.
        getrandom::getrandom(&mut seed).map_err(|e| DsseError::Random(e.to_string()))?;
        Ok(SecretKey::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key file text, with a final newline.
    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", STANDARD.encode(self.0.to_bytes()))
    }

    pub fn parse(text: &str) -> Result<SecretKey, DsseError> {
        let seed = parse_line(text, SECRET_TAG)?;
        Ok(SecretKey::from_seed(seed))
    }
}

impl PublicKey {
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {}\n", STANDARD.encode(self.0.as_bytes()))
    }

    pub fn parse(text: &str) -> Result<PublicKey, DsseError> {
        let bytes = parse_line(text, PUBLIC_TAG)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| DsseError::KeyFormat { expected: PUBLIC_TAG })
    }

    /// First 16 hex digits of BLAKE3(public key bytes).
    pub fn keyid(&self) -> String {
        blake3::hash(self.0.as_bytes()).to_hex()[..16].to_string()
    }
}

fn parse_line(text: &str, tag: &'static str) -> Result<[u8; 32], DsseError> {
    let bad = || DsseError::KeyFormat { expected: tag };
    let mut words = text.split_whitespace();
    if words.next() != Some(tag) {
        return Err(bad());
    }
    let b64 = words.next().ok_or_else(bad)?;
    if words.next().is_some() {
        return Err(bad());
    }
    let bytes = STANDARD.decode(b64).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// A DSSE JSON envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload bytes.
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the ed25519 signature over `pae(payloadType, payload)`.
    pub sig: String,
}

impl Envelope {
    /// Signs `payload` (the exact bytes that will be base64-encoded) with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SecretKey) -> Envelope {
        let sig = key.0.sign(&pae(payload_type, payload));
        Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![Signature {
                keyid: key.public().keyid(),
                sig: STANDARD.encode(sig.to_bytes()),
            }],
        }
    }

    /// The envelope file's text: canonical JSON, indented, final newline.
    pub fn to_json(&self) -> Result<String, DsseError> {
        Ok(canonical_json(self, true)?)
    }

    /// The payload bytes. The specification allows standard and URL-safe base64.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, DsseError> {
        decode_b64(&self.payload).ok_or_else(|| DsseError::Envelope("`payload` is not base64".into()))
    }

    /// The id of a key in `signatures` that signed the payload, if `key` did.
    pub fn verify(&self, key: &PublicKey) -> Option<String> {
        let payload = self.payload_bytes().ok()?;
        let message = pae(&self.payload_type, &payload);
        self.signatures.iter().find_map(|s| {
            let bytes: [u8; 64] = decode_b64(&s.sig)?.try_into().ok()?;
            let sig = ed25519_dalek::Signature::from_bytes(&bytes);
            key.0.verify(&message, &sig).ok().map(|()| key.keyid())
        })
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the DSSE protocol specification.
    #[test]
    fn pae_matches_the_specification_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn keys_round_trip_through_their_text_form() {
        let k = SecretKey::from_seed([7; 32]);
        let again = SecretKey::parse(&k.to_text()).unwrap();
        assert_eq!(again.public(), k.public());
        let p = PublicKey::parse(&k.public().to_text()).unwrap();
        assert_eq!(p, k.public());
        assert_eq!(p.keyid().len(), 16);
        assert!(matches!(
            PublicKey::parse(&k.to_text()),
            Err(DsseError::KeyFormat { .. })
        ));
        assert!(matches!(
            SecretKey::parse(&p.to_text()),
            Err(DsseError::KeyFormat { .. })
        ));
        assert!(PublicKey::parse("w4b-ed25519-public-v1 AAAA").is_err());
        assert!(format!("{k:?}").starts_with("SecretKey(keyid "));
    }

    #[test]
    fn generated_keys_differ() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a.public(), b.public());
    }

    #[test]
    fn sign_then_verify_and_tampering_fails() {
        let k = SecretKey::from_seed([1; 32]);
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}", &k);
        assert_eq!(env.verify(&k.public()), Some(k.public().keyid()));
        // Another key.
        assert_eq!(env.verify(&SecretKey::from_seed([2; 32]).public()), None);
        // Another payload.
        let mut t = env.clone();
        t.payload = STANDARD.encode(b"{\"a\":2}");
        assert_eq!(t.verify(&k.public()), None);
        // Another payload type: PAE binds it.
        let mut t = env.clone();
        t.payload_type = "application/json".into();
        assert_eq!(t.verify(&k.public()), None);
        // A flipped signature bit.
        let mut t = env.clone();
        let mut sig = STANDARD.decode(&t.signatures[0].sig).unwrap();
        sig[0] ^= 1;
        t.signatures[0].sig = STANDARD.encode(sig);
        assert_eq!(t.verify(&k.public()), None);
        // A lying keyid does not matter.
        let mut t = env.clone();
        t.signatures[0].keyid = "nope".into();
        assert!(t.verify(&k.public()).is_some());
    }
}
