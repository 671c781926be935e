//! The content-addressed filesystem tree: how w4b describes a filesystem (DESIGN §4).
//!
//! A tree is a Merkle tree like git's. File contents are blobs; a directory is a blob
//! listing its children's [`Entry`]s (kind, mode, owner, mtime, xattrs, content or listing
//! digest) in name order; a tree is named by the digest of a small root blob holding the
//! root directory's own entry. Equal filesystems therefore have equal digests, trees share
//! every unchanged directory and file, and overlaying a layer rewrites only the
//! directories on the paths it touches ([`layer::apply`]) — work in proportion to the
//! layer, not the tree. The byte formats are specified in [`format`].
//!
//! Trees are built from entries ([`TreeBuilder`]), host directories and tar archives
//! ([`import`]), changed by layer changesets ([`layer`]), read back in sorted depth-first
//! order ([`walk`], [`lookup`]), compared path by path reading only what differs
//! ([`diff`]), and written out as normalised tar ([`export`]). Storage is
//! abstracted by [`Blobs`], so this module does not depend on the cache's store API.

#![forbid(unsafe_code)]

mod blobs;
mod builder;
pub mod diff;
mod entry;
mod error;
pub mod export;
pub mod format;
pub mod fs;
pub mod host;
pub mod import;
pub mod layer;
mod path;
mod walk;

pub use blobs::{Blobs, MemBlobs};
pub use builder::TreeBuilder;
pub use entry::{Entry, Kind};
pub use error::TreeError;
pub use format::{dir_refs, DIR_MAGIC, ROOT_MAGIC};

/// The prefix shared by every blob kind that names other blobs (listings, roots,
/// changesets): the store's GC and upload follow only blobs that start with it.
pub const REFS_MAGIC: &[u8] = b"w4b-";

/// The digests a listing, root or changeset blob names (empty for file contents).
pub fn blob_refs(blob: &[u8]) -> Vec<w4b_cache::Digest> {
    dir_refs(blob)
}
pub use path::{TreePath, MAX_DEPTH};
pub use walk::{lookup, walk, Walk};

use std::collections::BTreeMap;

use w4b_cache::Digest;

/// A tree in a blob store, named by its root digest. Cheap to copy; reads lazily.
#[derive(Clone, Copy)]
pub struct Tree<'b> {
    blobs: &'b dyn Blobs,
    root: Digest,
}

impl<'b> Tree<'b> {
    /// Stores the empty tree: a root directory `0755 root:root`, mtime 0, no children.
    pub fn empty(blobs: &'b dyn Blobs) -> Result<Tree<'b>, TreeError> {
        blobs.put(&format::encode_dir(&BTreeMap::new()))?;
        let root = store_root(blobs, &Entry::default_dir())?;
        Ok(Tree { blobs, root })
    }

    /// The tree named `root` (not read until used).
    pub fn open(blobs: &'b dyn Blobs, root: Digest) -> Tree<'b> {
        Tree { blobs, root }
    }

    /// The root digest: the tree's identity.
    pub fn root(&self) -> Digest {
        self.root
    }

    /// The root directory's own entry.
    pub fn root_entry(&self) -> Result<Entry, TreeError> {
        load_root(self.blobs, &self.root)
    }

    /// Every entry, `/` first, in sorted depth-first order.
    pub fn walk(&self) -> Walk<'b> {
        walk(self.blobs, self.root)
    }

    /// The entry at `path`, without following symlinks.
    pub fn lookup(&self, path: &TreePath) -> Result<Option<Entry>, TreeError> {
        lookup(self.blobs, self.root, path)
    }
}

/// Stores a root blob for the directory entry `root` and returns the tree digest.
/// The listing it names must already be stored.
pub fn store_root(blobs: &dyn Blobs, root: &Entry) -> Result<Digest, TreeError> {
    root.validate(&TreePath::root())?;
    if !root.is_dir() {
        return Err(TreeError::InvalidEntry {
            path: "/".into(),
            reason: format!("the root must be a directory, not a {}", root.kind.name()),
        });
    }
    blobs.put(&format::encode_root(root))
}

/// The root directory entry of the tree `root`.
pub fn load_root(blobs: &dyn Blobs, root: &Digest) -> Result<Entry, TreeError> {
    format::decode_root(*root, &blobs.get(root)?)
}

/// The children of the listing `listing`, in name order.
pub fn load_dir(blobs: &dyn Blobs, listing: &Digest) -> Result<Vec<(String, Entry)>, TreeError> {
    format::decode_dir(*listing, &blobs.get(listing)?)
}

/// Stores a listing and returns its digest.
pub fn store_dir(blobs: &dyn Blobs, children: &BTreeMap<String, Entry>) -> Result<Digest, TreeError> {
    blobs.put(&format::encode_dir(children))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A blob store that counts reads, for the "cost in proportion to the layer" tests.

    use std::io::Read;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use w4b_cache::Digest;

    use super::{Blobs, MemBlobs, TreeError};

    #[derive(Default)]
    pub struct CountingBlobs {
        pub inner: MemBlobs,
        pub reads: AtomicUsize,
        pub writes: AtomicUsize,
    }

    impl CountingBlobs {
        pub fn reset(&self) {
            self.reads.store(0, Ordering::SeqCst);
            self.writes.store(0, Ordering::SeqCst);
        }
        pub fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
        pub fn writes(&self) -> usize {
            self.writes.load(Ordering::SeqCst)
        }
    }

    impl Blobs for CountingBlobs {
        fn put(&self, bytes: &[u8]) -> Result<Digest, TreeError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.put(bytes)
        }
        fn put_file(&self, path: &Path) -> Result<(Digest, u64), TreeError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.put_file(path)
        }
        fn get(&self, d: &Digest) -> Result<Vec<u8>, TreeError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.get(d)
        }
        fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>, TreeError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.open(d)
        }
    }
}
