//! A new hive's credentials (`w4b hive new`, `w4b hive keys --rotate`): the hive's SSH
//! ed25519 key pair in OpenSSH's formats, its WireGuard key pair in `wg`'s, the database
//! and local-admin passwords, and the hive id itself — the lengths and shapes the hive
//! configuration manager generated (REFERENCE §1).
//!
//! This is, with `w4b keygen`, the one place where w4b wants randomness: keys and
//! passwords must be unpredictable, so they come from the operating system
//! ([`random_bytes`]). Nothing here reaches a step key or an image directly; the hive file
//! and its secret files do, like any hand-written credentials.
//!
//! Formats, written here rather than through a crate because each is a few lines and the
//! tests hold them against the reference tools (`ssh-keygen -y`, `wg pubkey`):
//!
//! | credential | written as |
//! |---|---|
//! | SSH private key | `openssh-key-v1`, unencrypted (cipher and KDF `none`), base64 in 70-column lines between the PEM-style armour (OpenSSH `PROTOCOL.key`) |
//! | SSH public key | `ssh-ed25519 <base64 of string "ssh-ed25519", string key> hive-<id>` (RFC 8709), usable in `authorized_keys` |
//! | WireGuard private key | 32 random bytes clamped as `wg genkey` clamps them (RFC 7748 §5), standard base64 |
//! | WireGuard public key | X25519 of the private key and the base point, standard base64 (`wg pubkey`) |
//! | passwords | letters and digits only (no quoting trouble in YAML, shell or SQL): 20 for the database, 16 for the local admin |

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Why a credential could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot draw random bytes from the operating system: {0}")]
#[diagnostic(
    code(w4b::hive::random),
    help("w4b needs the kernel's random number generator (`getrandom(2)`) to make keys")
)]
pub struct RandomError(String);

/// Fills `buf` from the operating system's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), RandomError> {
    #[allow(clippy::disallowed_methods)] // Keys, passwords and new hive ids must be unpredictable.
    getrandom::getrandom(buf).map_err(|e| RandomError(e.to_string()))
}

/// Letters and digits: every character of a generated password or hive id.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters drawn uniformly from [`ALPHANUMERIC`] (rejection sampling: a byte is
/// used only below the largest multiple of 62, so no character is more likely).
pub fn random_text(len: usize) -> Result<String, RandomError> {
    let n = ALPHANUMERIC.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        random_bytes(&mut buf)?;
        for &b in &buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(ALPHANUMERIC[usize::from(b) % n]));
            }
        }
    }
    Ok(out)
}

/// A new hive id: `hive_` and 8 letters or digits (the manager's format allows `_` and `-`
/// as well; generated ids leave them out so the host name `w4b-<id>` reads as written).
pub fn new_hive_id() -> Result<String, RandomError> {
    Ok(format!("hive_{}", random_text(8)?))
}

/// The database password: 20 characters, as the manager made them.
pub fn database_password() -> Result<String, RandomError> {
    random_text(20)
}

/// The local administrator's password: 16 characters, as the manager made them.
pub fn admin_password() -> Result<String, RandomError> {
    random_text(16)
}

/// An SSH ed25519 key pair in OpenSSH's formats.
pub struct SshKeyPair {
    /// The `authorized_keys` line: `ssh-ed25519 AAAA… hive-<id>`.
    pub public: String,
    /// The private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----` …), with a final
    /// newline.
    pub private: String,
}

impl SshKeyPair {
    /// A new key pair commented `comment` (`hive-<hive_id>`).
    pub fn generate(comment: &str) -> Result<SshKeyPair, RandomError> {
        let mut seed = [0u8; 32];
        random_bytes(&mut seed)?;
        let mut check = [0u8; 4];
        random_bytes(&mut check)?;
        Ok(SshKeyPair::from_seed(seed, u32::from_be_bytes(check), comment))
    }

    /// The key pair of an ed25519 seed; `checkint` is the private section's integrity
    /// word (random in OpenSSH, so that a wrong passphrase is detected).
    pub fn from_seed(seed: [u8; 32], checkint: u32, comment: &str) -> SshKeyPair {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = signing.verifying_key().to_bytes();
        // The public key blob (RFC 8709 §4): string "ssh-ed25519", string key.
        let mut blob = Vec::new();
        put_string(&mut blob, b"ssh-ed25519");
        put_string(&mut blob, &public);

        // The private section (PROTOCOL.key): checkint twice, the key type, the public
        // key, the 64-byte private key (seed ‖ public), the comment, then 1, 2, 3, … up to
        // a multiple of the cipher's block size (8 for `none`).
        let mut private = Vec::new();
        private.extend_from_slice(&checkint.to_be_bytes());
        private.extend_from_slice(&checkint.to_be_bytes());
        put_string(&mut private, b"ssh-ed25519");
        put_string(&mut private, &public);
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(&seed);
        secret.extend_from_slice(&public);
        put_string(&mut private, &secret);
        put_string(&mut private, comment.as_bytes());
        let mut pad = 1u8;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }

        let mut file = Vec::new();
        file.extend_from_slice(b"openssh-key-v1\0");
        put_string(&mut file, b"none"); // cipher
        put_string(&mut file, b"none"); // KDF
        put_string(&mut file, b""); // KDF options
        file.extend_from_slice(&1u32.to_be_bytes()); // number of keys
        put_string(&mut file, &blob);
        put_string(&mut file, &private);

        let encoded = STANDARD.encode(&file);
        let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
        for line in encoded.as_bytes().chunks(70) {
            text.push_str(&String::from_utf8_lossy(line));
            text.push('\n');
        }
        text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
        SshKeyPair {
            public: format!("ssh-ed25519 {} {comment}", STANDARD.encode(&blob)),
            private: text,
        }
    }
}

/// An SSH wire-format `string`: a big-endian u32 length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A WireGuard key pair, both halves base64 as `wg genkey` and `wg pubkey` print them.
pub struct WireGuardKeyPair {
    pub private: String,
    pub public: String,
}

impl WireGuardKeyPair {
    pub fn generate() -> Result<WireGuardKeyPair, RandomError> {
        let mut key = [0u8; 32];
        random_bytes(&mut key)?;
        Ok(WireGuardKeyPair::from_bytes(key))
    }

    /// The key pair of 32 private-key bytes, clamped first as `wg genkey` does, so the
    /// private key written is the one `wg` itself would have printed.
    pub fn from_bytes(mut key: [u8; 32]) -> WireGuardKeyPair {
        key[0] &= 248;
        key[31] &= 127;
        key[31] |= 64;
        let secret = x25519_dalek::StaticSecret::from(key);
        let public = x25519_dalek::PublicKey::from(&secret);
        WireGuardKeyPair {
            private: STANDARD.encode(key),
            public: STANDARD.encode(public.as_bytes()),
        }
    }

    /// The public key of a base64 private key (`wg pubkey`); `None` when it is not 32
    /// bytes of base64.
    pub fn public_of(private: &str) -> Option<String> {
        let bytes: [u8; 32] = STANDARD.decode(private.trim()).ok()?.try_into().ok()?;
        let secret = x25519_dalek::StaticSecret::from(bytes);
        Some(STANDARD.encode(x25519_dalek::PublicKey::from(&secret).as_bytes()))
    }
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
