//! The small, format-neutral description of a filesystem that the FAT and ext4 writers
//! take and their readers give back. `src/tree/` adapts content-addressed trees to it.
//!
//! A filesystem is a list of [`Node`]s in **walk order**: `/` first, then depth-first with
//! the children of each directory sorted by name bytes (the order of `tree::walk`). Paths
//! are absolute, `/`-separated, normalised UTF-8 (`/`, `/etc`, `/etc/hostname`). Every
//! parent directory precedes its children. A hard link names an earlier regular file.
//! File contents are not held here: a writer asks a [`Contents`] for them by [`ContentId`]
//! when it needs them, so images far larger than memory stream from the store.

use std::collections::BTreeMap;
use std::io::{self, Read};

/// Identifies a file's content to the caller's [`Contents`] (for w4b: a blob digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentId(pub [u8; 32]);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File {
        size: u64,
        content: ContentId,
    },
    Dir,
    Symlink {
        target: String,
    },
    /// Another name for the regular file at `target` (an absolute path).
    HardLink {
        target: String,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub path: String,
    pub kind: NodeKind,
    /// Permission bits plus setuid/setgid/sticky (`0o7777`); the type is `kind`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the Unix epoch. Writers use it for every time field they have
    /// (atime, ctime, mtime, crtime), so only one time reaches the image.
    pub mtime: i64,
    /// Extended attributes by full name (`security.capability`, `user.x`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Where writers get file contents.
pub trait Contents {
    /// A reader of exactly the `size` bytes the node declared.
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>>;
}

/// Contents held in memory, for tests and small trees.
#[derive(Default)]
pub struct MemContents(pub BTreeMap<ContentId, Vec<u8>>);

impl MemContents {
    /// Stores `bytes` and returns its id (their BLAKE3).
    pub fn add(&mut self, bytes: &[u8]) -> ContentId {
        let id = ContentId(*blake3::hash(bytes).as_bytes());
        self.0.insert(id, bytes.to_vec());
        id
    }
}

impl Contents for MemContents {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        match self.0.get(id) {
            Some(b) => Ok(Box::new(&b[..])),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such content")),
        }
    }
}
