//! `w4b keygen --out PREFIX`: a new ed25519 key pair for signing manifests and the
//! records published to a shared remote cache. The secret
//! key goes to `PREFIX.key` (created with mode 0600), the public key to `PREFIX.pub`.
//! Existing files are never overwritten: losing a signing key silently is worse than an
//! error.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use miette::IntoDiagnostic;

use super::App;
use crate::cli::KeygenArgs;
use crate::manifest::dsse::SecretKey;

pub fn run(app: &App, args: &KeygenArgs) -> miette::Result<i32> {
    let prefix = app.cwd.join(&args.out);
    let secret_path = with_suffix(&prefix, "key");
    let public_path = with_suffix(&prefix, "pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(miette::miette!(
                code = "w4b::keygen::exists",
                help = "choose another `--out` prefix, or move the old key pair away first",
                "`{}` already exists",
                p.display()
            ));
        }
    }
    if let Some(dir) = secret_path.parent() {
        std::fs::create_dir_all(dir)
            .into_diagnostic()
            .map_err(|e| e.wrap_err(format!("cannot create `{}`", dir.display())))?;
    }
    let key = SecretKey::generate()?;
    write_new(&secret_path, key.to_text().as_bytes(), 0o600)?;
    write_new(&public_path, key.public().to_text().as_bytes(), 0o644)?;
    if !app.global.quiet {
        println!(
            "secret key  {}  (keep it private; sign manifests with `--sign-key`, remote cache records with `cache.signing_key`)",
            secret_path.display()
        );
        println!(
            "public key  {}  (give it to verifiers: `w4b verify --key`, `cache.trusted_keys`)",
            public_path.display()
        );
        println!("key id      {}", key.public().keyid());
    }
    Ok(0)
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates `path` (failing if it exists) with `mode` from the start, so the secret is
/// never readable by others, not even between create and chmod.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> miette::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(path)
        .into_diagnostic()
        .map_err(|e| e.wrap_err(format!("cannot create `{}`", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .into_diagnostic()
        .map_err(|e| e.wrap_err(format!("cannot write `{}`", path.display())))
}
