//! Build script: records the commit the binary is built from as `W4B_COMMIT`, shown by
//! `w4b --version` (see `build/commit.rs` for where it comes from and the fallback).

use std::path::PathBuf;

#[path = "build/commit.rs"]
mod commit;

fn main() {
    #[allow(clippy::disallowed_methods)] // Cargo's contract with a build script.
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let found = commit::find(&root);
    println!("cargo:rustc-env=W4B_COMMIT={}", found.describe());

    // Ask again when the commit or the checked-out files change. Directories are watched
    // recursively by cargo (newest mtime); a missing path (a tarball has no `.git`) only
    // means "always current", so list what exists.
    let mut watched = vec![
        root.join("build.rs"),
        root.join("build"),
        root.join("src"),
        root.join("defs"),
        root.join("graph/src"),
        root.join("cache/src"),
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
        root.join(".cargo_vcs_info.json"),
    ];
    if let commit::Commit::Git { .. } = found {
        for args in [
            ["rev-parse", "--git-path", "HEAD"],
            ["rev-parse", "--git-path", "index"],
        ] {
            if let Some(path) = git_path(&root, &args) {
                watched.push(path);
            }
        }
        if let Some(path) = git_path(&root, &["rev-parse", "--symbolic-full-name", "HEAD"]) {
            // `refs/heads/<branch>` lives in the common directory (shared by worktrees),
            // or in `packed-refs` there.
            if let Some(common) = git_path(&root, &["rev-parse", "--git-common-dir"]) {
                watched.push(common.join(&path));
                watched.push(common.join("packed-refs"));
            }
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// A path git prints, made absolute against `root`.
fn git_path(root: &std::path::Path, args: &[&str]) -> Option<PathBuf> {
    #[allow(clippy::disallowed_methods)] // The build script asks git; no step key sees it.
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() {
        return None;
    }
    Some(root.join(text))
}
