//! The credential formats, pinned by vectors and judged by the reference tools.

#![allow(clippy::disallowed_methods)] // The oracles are external programs.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::*;

use crate::oracle::{self, require};

#[test]
fn wireguard_public_key_matches_rfc_7748_vector() {
    // RFC 7748 §6.1: Alice's private key and public key.
    let private = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
    let public = hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a").unwrap();
    let pair = WireGuardKeyPair::from_bytes(private.try_into().unwrap());
    assert_eq!(pair.public, STANDARD.encode(public));
    assert_eq!(WireGuardKeyPair::public_of(&pair.private).unwrap(), pair.public);
    // Clamped as `wg genkey` clamps.
    let bytes = STANDARD.decode(&pair.private).unwrap();
    assert_eq!(bytes[0] & 7, 0);
    assert_eq!(bytes[31] & 0xc0, 0x40);
}

#[test]
fn ssh_key_pair_has_openssh_shape() {
    let pair = SshKeyPair::from_seed([7; 32], 0x0102_0304, "hive-hive_AbCd1234");
    assert!(
        pair.public.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"),
        "{}",
        pair.public
    );
    assert!(pair.public.ends_with(" hive-hive_AbCd1234"));
    assert!(pair
        .private
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"));
    assert!(pair.private.ends_with("-----END OPENSSH PRIVATE KEY-----\n"));
    assert!(pair
        .private
        .lines()
        .all(|l| l.len() <= 70 || l.starts_with("-----")));
}

#[test]
fn passwords_and_ids_are_alphanumeric_of_the_managers_lengths() {
    let db = database_password().unwrap();
    let admin = admin_password().unwrap();
    assert_eq!((db.len(), admin.len()), (20, 16));
    assert!(db.chars().chain(admin.chars()).all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(database_password().unwrap(), db);
    let id = new_hive_id().unwrap();
    assert!(id.starts_with("hive_") && id.len() == 13, "{id}");
}

#[test]
fn wg_pubkey_derives_the_same_public_key() {
    require!("wg");
    for _ in 0..3 {
        let pair = WireGuardKeyPair::generate().unwrap();
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{}\n", pair.private).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pair.public);
    }
}

#[test]
fn ssh_keygen_reads_the_private_key_and_derives_the_same_public_key() {
    require!("ssh-keygen");
    let dir = tempfile::tempdir().unwrap();
    let pair = SshKeyPair::generate("hive-hive_Test0001").unwrap();
    let path = dir.path().join("id_ed25519");
    std::fs::write(&path, &pair.private).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = oracle::run_ok(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&path));
    let derived = String::from_utf8_lossy(&out.stdout);
    // `ssh-keygen -y` prints the type, the key and (from OpenSSH 7.x on) the comment.
    let ours: Vec<&str> = pair.public.split(' ').collect();
    let theirs: Vec<&str> = derived.trim().split(' ').collect();
    assert_eq!(&theirs[..2], &ours[..2], "{derived}");
    // And the public line is one `ssh-keygen -l` accepts as an authorized key.
    let pub_path = dir.path().join("id_ed25519.pub");
    std::fs::write(&pub_path, format!("{}\n", pair.public)).unwrap();
    let out = oracle::run_ok(Command::new("ssh-keygen").arg("-l").arg("-f").arg(&pub_path));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(ED25519)"));
}
