//! One filesystem object in a tree: its kind, permissions, owner, time and xattrs.
//!
//! An [`Entry`] is what a parent directory records about a child (like a git tree entry),
//! so a directory's own metadata lives in its parent's listing and a directory's identity
//! is the digest of its child listing.

use std::collections::BTreeMap;

use w4b_cache::Digest;

use super::format::empty_dir_digest;
use super::{TreeError, TreePath};

/// What kind of object an entry is, with the data that identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: content blob and its length.
    File {
        digest: Digest,
        size: u64,
    },
    /// A directory: the digest of its child listing (a [`DIR_MAGIC`](super::DIR_MAGIC) blob).
    Dir {
        digest: Digest,
    },
    /// A symbolic link. The target is data: recorded as-is and never followed.
    Symlink {
        target: String,
    },
    /// Another name for the regular file at `target` (same inode when extracted).
    HardLink {
        target: TreePath,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

impl Kind {
    /// A word for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File { .. } => "regular file",
            Kind::Dir { .. } => "directory",
            Kind::Symlink { .. } => "symlink",
            Kind::HardLink { .. } => "hard link",
            Kind::CharDev { .. } => "character device",
            Kind::BlockDev { .. } => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// A filesystem object with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits plus setuid, setgid and sticky: only `0o7777` may be set.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the Unix epoch. Exports clamp it to the build's epoch.
    pub mtime: i64,
    /// Extended attributes by full name (`security.capability`, `user.foo`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    /// An entry of `kind` and `mode`, owned by root, mtime 0, without xattrs.
    pub fn new(kind: Kind, mode: u32) -> Entry {
        Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }

    /// A regular file with content `digest` of `size` bytes.
    pub fn file(digest: Digest, size: u64, mode: u32) -> Entry {
        Entry::new(Kind::File { digest, size }, mode)
    }

    /// An empty directory.
    pub fn dir(mode: u32) -> Entry {
        Entry::new(
            Kind::Dir {
                digest: empty_dir_digest(),
            },
            mode,
        )
    }

    /// A symlink to `target`, mode `0o777` as Linux reports it.
    pub fn symlink(target: impl Into<String>) -> Entry {
        Entry::new(
            Kind::Symlink {
                target: target.into(),
            },
            0o777,
        )
    }

    /// The default for a directory nobody described: `0755 root:root`, mtime 0.
    pub fn default_dir() -> Entry {
        Entry::dir(0o755)
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }

    /// The child listing digest, if this is a directory.
    pub fn dir_digest(&self) -> Option<Digest> {
        match self.kind {
            Kind::Dir { digest } => Some(digest),
            _ => None,
        }
    }

    /// This entry's metadata with another kind.
    pub fn with_kind(&self, kind: Kind) -> Entry {
        Entry { kind, ..self.clone() }
    }

    /// Checks the invariants the directory encoding relies on.
    pub fn validate(&self, path: &TreePath) -> Result<(), TreeError> {
        entry_problem(self).map_or(Ok(()), |reason| {
            Err(TreeError::InvalidEntry {
                path: path.to_string(),
                reason,
            })
        })
    }
}

/// Why `entry` breaks an invariant, if it does.
pub(super) fn entry_problem(entry: &Entry) -> Option<String> {
    if entry.mode & !0o7777 != 0 {
        return Some(format!(
            "mode {:o} has bits outside 0o7777 (the file type is the entry kind)",
            entry.mode
        ));
    }
    if let Kind::Symlink { target } = &entry.kind {
        if target.is_empty() {
            return Some("the symlink target is empty".into());
        }
        if target.contains('\0') {
            return Some("the symlink target contains a NUL byte".into());
        }
    }
    if let Kind::HardLink { target } = &entry.kind {
        if target.is_root() {
            return Some("a hard link cannot point to `/`".into());
        }
    }
    for name in entry.xattrs.keys() {
        if name.is_empty() || name.contains('\0') || name.contains('=') {
            return Some(format!(
                "xattr name `{}` is empty or contains NUL or `=`",
                name.escape_debug()
            ));
        }
    }
    None
}
