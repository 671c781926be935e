//! Which commit a binary was built from, for `w4b --version`.
//!
//! Shared by the build script (`build.rs`, which sets `W4B_COMMIT`) and the crate's own
//! tests. The answer comes from, in order: `git` in the source directory (short hash, and
//! whether tracked files differ from it); the `.cargo_vcs_info.json` that `cargo package`
//! writes into a published crate (`cargo install w4b`); otherwise it says plainly that the
//! commit is unknown (a source tarball, or no `git` on the machine). It never fails a build.
//! The commit is only shown by `--version`: it feeds no step key and no manifest, so two
//! commits with the same code still build identical images.

use std::path::Path;
use std::process::Command;

/// Where the source came from, as far as the build can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commit {
    /// A git checkout: the short hash, and whether tracked files were modified.
    Git { short: String, dirty: bool },
    /// A packaged crate (`.cargo_vcs_info.json`): the full hash from the packager.
    Packaged { sha1: String, dirty: bool },
    /// Neither: shown as such, never guessed.
    Unknown,
}

impl Commit {
    /// The text `--version` shows after the version number, e.g. `3f2a1bc`,
    /// `3f2a1bc, modified` or `unknown commit`.
    pub fn describe(&self) -> String {
        let (hash, dirty) = match self {
            Commit::Git { short, dirty } => (short.as_str(), *dirty),
            Commit::Packaged { sha1, dirty } => (sha1.get(..12).unwrap_or(sha1), *dirty),
            Commit::Unknown => return "unknown commit".to_owned(),
        };
        if dirty {
            format!("{hash}, modified")
        } else {
            hash.to_owned()
        }
    }
}

/// Finds the commit of the source in `root` (the package's directory).
pub fn find(root: &Path) -> Commit {
    from_git(root)
        .or_else(|| from_vcs_info(root))
        .unwrap_or(Commit::Unknown)
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    #[allow(clippy::disallowed_methods)] // The build script asks git; no step key sees it.
    let output = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn from_git(root: &Path) -> Option<Commit> {
    // Only the repository `root` itself belongs to: a crate unpacked inside some other
    // checkout (a tarball in a home directory under git) must not take that one's hash.
    let toplevel = git(root, &["rev-parse", "--show-toplevel"])?;
    let same = Path::new(&toplevel).canonicalize().ok()? == root.canonicalize().ok()?;
    if !same {
        return None;
    }
    let short = git(root, &["rev-parse", "--short=12", "HEAD"])?;
    if short.is_empty() {
        return None;
    }
    let status = git(root, &["status", "--porcelain", "--untracked-files=no"])?;
    Some(Commit::Git {
        short,
        dirty: !status.is_empty(),
    })
}

/// Reads `{"git": {"sha1": "…", "dirty": true}, …}` without a JSON parser: the file is
/// written by cargo in one known shape, and anything unexpected means "unknown".
fn from_vcs_info(root: &Path) -> Option<Commit> {
    let text = std::fs::read_to_string(root.join(".cargo_vcs_info.json")).ok()?;
    let after = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let start = after.find('"')? + 1;
    let len = after[start..].find('"')?;
    let sha1 = &after[start..start + len];
    if sha1.len() < 7 || !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dirty = text.find("\"dirty\"").is_some_and(|at| {
        text[at + "\"dirty\"".len()..]
            .trim_start_matches([':', ' '])
            .starts_with("true")
    });
    Some(Commit::Packaged {
        sha1: sha1.to_owned(),
        dirty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // git is the oracle for what `find` reports.
    fn run_git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn a_source_tree_outside_git_says_unknown_commit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(find(dir.path()), Commit::Unknown);
        assert_eq!(find(dir.path()).describe(), "unknown commit");
    }

    #[test]
    fn a_git_checkout_names_its_commit_and_whether_it_was_modified() {
        crate::oracle::require!("git");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        run_git(root, &["init", "-q"]);
        std::fs::write(root.join("Cargo.toml"), "[package]\n").unwrap();
        run_git(root, &["add", "Cargo.toml"]);
        run_git(root, &["commit", "-q", "-m", "first"]);
        let head = run_git(root, &["rev-parse", "--short=12", "HEAD"]);

        let clean = find(root);
        assert_eq!(
            clean,
            Commit::Git {
                short: head.clone(),
                dirty: false
            }
        );
        assert_eq!(clean.describe(), head);

        std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        assert_eq!(find(root).describe(), format!("{head}, modified"));
    }

    #[test]
    fn a_crate_unpacked_inside_another_checkout_does_not_take_its_commit() {
        crate::oracle::require!("git");
        let dir = tempfile::tempdir().unwrap();
        run_git(dir.path(), &["init", "-q"]);
        std::fs::write(dir.path().join("README"), "outer\n").unwrap();
        run_git(dir.path(), &["add", "README"]);
        run_git(dir.path(), &["commit", "-q", "-m", "outer"]);
        let inner = dir.path().join("w4b-0.1.0");
        std::fs::create_dir(&inner).unwrap();
        assert_eq!(find(&inner), Commit::Unknown);
    }

    #[test]
    fn a_packaged_crate_names_the_commit_cargo_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(
            dir.path().join(".cargo_vcs_info.json"),
            format!("{{\n  \"git\": {{\n    \"sha1\": \"{sha1}\",\n    \"dirty\": true\n  }},\n  \"path_in_vcs\": \"\"\n}}"),
        )
        .unwrap();
        assert_eq!(find(dir.path()).describe(), "0123456789ab, modified");
        std::fs::write(
            dir.path().join(".cargo_vcs_info.json"),
            format!("{{\"git\": {{\"sha1\": \"{sha1}\"}}}}"),
        )
        .unwrap();
        assert_eq!(find(dir.path()).describe(), "0123456789ab");
        std::fs::write(
            dir.path().join(".cargo_vcs_info.json"),
            "{\"git\": {\"sha1\": \"nope\"}}",
        )
        .unwrap();
        assert_eq!(find(dir.path()), Commit::Unknown);
    }
}
