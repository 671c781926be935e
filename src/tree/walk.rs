//! Reading a tree back: a sorted depth-first walk and single-path lookup.
//!
//! The walk order (a directory, then its children by name bytes, each subtree complete
//! before the next sibling) is the order of archives, manifests and filesystem images,
//! so every output that lists a tree is sorted by construction. The walk is iterative
//! and reads one listing at a time, so it runs in memory proportional to the depth.

use w4b_cache::Digest;

use super::{load_dir, load_root, Blobs, Entry, TreeError, TreePath};

/// Every `(path, entry)` of the tree `root`: `/` first, then depth-first by name.
pub fn walk(blobs: &dyn Blobs, root: Digest) -> Walk<'_> {
    Walk {
        blobs,
        pending_root: Some(root),
        stack: Vec::new(),
    }
}

/// Iterator returned by [`walk`]. After an error it ends.
pub struct Walk<'b> {
    blobs: &'b dyn Blobs,
    pending_root: Option<Digest>,
    stack: Vec<(TreePath, std::vec::IntoIter<(String, Entry)>)>,
}

impl Walk<'_> {
    fn open_dir(&mut self, path: &TreePath, entry: &Entry) -> Result<(), TreeError> {
        if let Some(listing) = entry.dir_digest() {
            let children = load_dir(self.blobs, &listing)?;
            self.stack.push((path.clone(), children.into_iter()));
        }
        Ok(())
    }

    fn step(&mut self) -> Option<Result<(TreePath, Entry), TreeError>> {
        if let Some(root) = self.pending_root.take() {
            let entry = match load_root(self.blobs, &root) {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            let path = TreePath::root();
            return Some(self.open_dir(&path, &entry).map(|()| (path, entry)));
        }
        loop {
            let (dir, children) = self.stack.last_mut()?;
            let Some((name, entry)) = children.next() else {
                self.stack.pop();
                continue;
            };
            let path = match dir.join(&name) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            return Some(self.open_dir(&path, &entry).map(|()| (path, entry)));
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<(TreePath, Entry), TreeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.step();
        if matches!(item, Some(Err(_))) {
            self.pending_root = None;
            self.stack.clear();
        }
        item
    }
}

/// The entry at `path` in the tree `root`, or `None`. Symlinks are never followed: a
/// path through a symlink or a file does not exist.
pub fn lookup(blobs: &dyn Blobs, root: Digest, path: &TreePath) -> Result<Option<Entry>, TreeError> {
    let mut entry = load_root(blobs, &root)?;
    for name in path.components() {
        let Some(listing) = entry.dir_digest() else {
            return Ok(None);
        };
        let mut children = load_dir(blobs, &listing)?;
        match children.binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes())) {
            Ok(i) => entry = children.swap_remove(i).1,
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{MemBlobs, TreeBuilder};

    #[test]
    fn a_corrupt_listing_ends_the_walk_with_an_error() {
        let blobs = MemBlobs::new();
        let mut b = TreeBuilder::new();
        b.insert("/a/b".parse().unwrap(), Entry::dir(0o755)).unwrap();
        b.insert("/c".parse().unwrap(), Entry::dir(0o755)).unwrap();
        let root = b.finish(&blobs).unwrap();
        let a = lookup(&blobs, root, &"/a".parse().unwrap()).unwrap().unwrap();
        let listing = a.dir_digest().unwrap();
        blobs.corrupt(&listing, b"w4b-dir\x01garbage".to_vec());
        let items: Vec<_> = walk(&blobs, root).collect();
        assert_eq!(items.len(), 2, "`/`, then the error; nothing after");
        assert!(matches!(items[1], Err(TreeError::BlobCorrupt { .. })));
        assert!(lookup(&blobs, root, &"/a/b".parse().unwrap()).is_err());
    }
}
