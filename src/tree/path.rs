//! Normalised absolute paths inside a tree, and the rules for entry names.
//!
//! Every path that reaches a tree — from a layer definition, a tar member, a host
//! directory — is parsed into a [`TreePath`] first, so `..`, `.`, empty components and NUL
//! can never address anything outside the tree or alias another path (DESIGN §8).
//! Ordering is component-wise by name bytes, which is exactly the depth-first order of
//! [`walk`](super::walk): `/a` < `/a/b` < `/a-b`.

use std::fmt;
use std::str::FromStr;

use super::TreeError;

/// Deepest path accepted. Linux's `PATH_MAX` (4096 bytes) allows at most 2048 components;
/// real root filesystems stay below 40. The bound keeps recursion over hostile input safe.
pub const MAX_DEPTH: usize = 1024;

/// Why `name` cannot be a directory entry name, if it cannot.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it has an empty component")
    } else if name == "." {
        Some("`.` components are not allowed")
    } else if name == ".." {
        Some("`..` components are not allowed")
    } else if name.contains('/') {
        Some("a name cannot contain `/`")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    }
}

/// A normalised absolute path: `/` or `/name(/name)*` with valid names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreePath {
    components: Vec<String>,
}

impl TreePath {
    /// The root directory, `/`.
    pub fn root() -> TreePath {
        TreePath {
            components: Vec::new(),
        }
    }

    /// Parses an absolute path, rejecting anything that is not already normalised.
    pub fn parse(text: &str) -> Result<TreePath, TreeError> {
        let invalid = |reason| TreeError::InvalidPath {
            path: text.escape_debug().to_string(),
            reason,
        };
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| invalid("it must be absolute (start with `/`)"))?;
        if rest.is_empty() {
            return Ok(TreePath::root());
        }
        let mut components = Vec::new();
        for name in rest.split('/') {
            if let Some(reason) = name_problem(name) {
                return Err(invalid(reason));
            }
            components.push(name.to_owned());
        }
        if components.len() > MAX_DEPTH {
            return Err(invalid("it is deeper than 1024 components"));
        }
        Ok(TreePath { components })
    }

    /// Builds a path from components, validating each.
    pub fn from_components<S: AsRef<str>>(names: &[S]) -> Result<TreePath, TreeError> {
        let mut path = TreePath::root();
        for name in names {
            path = path.join(name.as_ref())?;
        }
        Ok(path)
    }

    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The last component; `None` for `/`.
    pub fn name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }

    /// The parent directory; `None` for `/`.
    pub fn parent(&self) -> Option<TreePath> {
        let (_, parent) = self.components.split_last()?;
        Some(TreePath {
            components: parent.to_vec(),
        })
    }

    /// The path of the first `n` components.
    pub fn prefix(&self, n: usize) -> TreePath {
        TreePath {
            components: self.components[..n.min(self.components.len())].to_vec(),
        }
    }

    /// `self/name`, validating `name`.
    pub fn join(&self, name: &str) -> Result<TreePath, TreeError> {
        if let Some(reason) = name_problem(name) {
            return Err(TreeError::InvalidPath {
                path: format!("{}/{}", self.display_prefix(), name.escape_debug()),
                reason,
            });
        }
        if self.components.len() >= MAX_DEPTH {
            return Err(TreeError::InvalidPath {
                path: format!("{}/{}", self.display_prefix(), name),
                reason: "it is deeper than 1024 components",
            });
        }
        let mut components = self.components.clone();
        components.push(name.to_owned());
        Ok(TreePath { components })
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &TreePath) -> bool {
        self.components.starts_with(&other.components)
    }

    /// `""` for the root, else the path: for building child paths as text.
    fn display_prefix(&self) -> String {
        if self.is_root() {
            String::new()
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.components.is_empty() {
            return f.write_str("/");
        }
        for name in &self.components {
            f.write_str("/")?;
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreePath({self})")
    }
}

impl FromStr for TreePath {
    type Err = TreeError;
    fn from_str(s: &str) -> Result<TreePath, TreeError> {
        TreePath::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_normalised_paths_only() {
        assert!(TreePath::parse("/").unwrap().is_root());
        let p = TreePath::parse("/etc/ssh/sshd_config").unwrap();
        assert_eq!(p.components(), ["etc", "ssh", "sshd_config"]);
        assert_eq!(p.to_string(), "/etc/ssh/sshd_config");
        assert_eq!(p.parent().unwrap().to_string(), "/etc/ssh");
        assert_eq!(p.name(), Some("sshd_config"));
        for bad in [
            "",
            "etc",
            "/etc/",
            "//etc",
            "/etc/../x",
            "/./etc",
            "/..",
            "/a\0b",
            "/a//b",
        ] {
            assert!(
                matches!(TreePath::parse(bad), Err(TreeError::InvalidPath { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn order_is_depth_first() {
        let mut v: Vec<TreePath> = ["/a-b", "/a/b", "/a", "/", "/a/b/c", "/b"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(|p| p.to_string()).collect();
        assert_eq!(s, ["/", "/a", "/a/b", "/a/b/c", "/a-b", "/b"]);
    }

    #[test]
    fn join_validates_and_depth_is_bounded() {
        let root = TreePath::root();
        assert!(root.join("..").is_err());
        assert!(root.join("a/b").is_err());
        assert_eq!(root.join("a").unwrap().to_string(), "/a");
        let deep = "/a".repeat(MAX_DEPTH);
        let p = TreePath::parse(&deep).unwrap();
        assert!(p.join("b").is_err());
        assert!(TreePath::parse(&format!("{deep}/b")).is_err());
    }
}
