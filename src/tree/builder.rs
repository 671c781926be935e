//! Building a whole tree from `(path, entry)` pairs given in any order.
//!
//! Importers (tar archives, filesystem images, generated layers) describe a filesystem as
//! a set of paths; the builder turns that set into listings bottom-up. The result depends
//! only on the set, never on insertion order: entries are kept in a sorted map, missing
//! parents get the default directory entry (`0755 root:root`, mtime 0), and hard-link
//! groups are canonicalised so that the first member in walk order holds the file and the
//! others link to it (tar readers need the file before its links).

use std::collections::{BTreeMap, BTreeSet};

use w4b_cache::Digest;

use super::{store_dir, store_root, Blobs, Entry, Kind, TreeError, TreePath};

/// Collects entries, then stores them as a tree with [`finish`](TreeBuilder::finish).
///
/// A directory entry given to the builder supplies metadata only: its children are the
/// entries inserted below it, and the listing digest in its [`Kind::Dir`] is ignored.
/// An entry for `/` sets the root directory's metadata.
#[derive(Debug, Default)]
pub struct TreeBuilder {
    entries: BTreeMap<TreePath, Entry>,
}

/// An entry with the children inserted below it.
struct Node {
    entry: Entry,
    children: BTreeMap<String, Node>,
}

impl TreeBuilder {
    pub fn new() -> TreeBuilder {
        TreeBuilder::default()
    }

    /// Adds `entry` at `path`; a path given twice is an error.
    pub fn insert(&mut self, path: TreePath, entry: Entry) -> Result<(), TreeError> {
        if self.entries.contains_key(&path) {
            return Err(TreeError::DuplicatePath {
                path: path.to_string(),
            });
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    /// Adds `entry` at `path`, replacing an earlier one (archive semantics: the last
    /// member with a name wins).
    pub fn replace(&mut self, path: TreePath, entry: Entry) {
        self.entries.insert(path, entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stores every listing and the root blob; returns the tree digest.
    pub fn finish(self, blobs: &dyn Blobs) -> Result<Digest, TreeError> {
        let mut entries = self.entries;
        for (path, entry) in &entries {
            entry.validate(path)?;
        }
        canonicalise_hard_links(&mut entries)?;

        let root_entry = entries
            .remove(&TreePath::root())
            .unwrap_or_else(Entry::default_dir);
        if !root_entry.is_dir() {
            return Err(TreeError::InvalidEntry {
                path: "/".into(),
                reason: format!("the root must be a directory, not a {}", root_entry.kind.name()),
            });
        }
        let mut root = Node {
            entry: root_entry,
            children: BTreeMap::new(),
        };
        // Sorted order puts every directory before its contents, so a parent is either
        // already present (given or defaulted) or missing because nobody described it.
        for (path, entry) in entries {
            let Some((last, parents)) = path.components().split_last() else {
                continue;
            };
            let mut node = &mut root;
            for (depth, name) in parents.iter().enumerate() {
                let child = node.children.entry(name.clone()).or_insert_with(|| Node {
                    entry: Entry::default_dir(),
                    children: BTreeMap::new(),
                });
                match &child.entry.kind {
                    Kind::Dir { .. } => {}
                    Kind::Symlink { target } => {
                        return Err(TreeError::ThroughSymlink {
                            path: path.to_string(),
                            symlink: path.prefix(depth + 1).to_string(),
                            target: target.clone(),
                        })
                    }
                    other => {
                        return Err(TreeError::NotADirectory {
                            path: path.to_string(),
                            parent: path.prefix(depth + 1).to_string(),
                            kind: other.name(),
                        })
                    }
                }
                node = child;
            }
            node.children.insert(
                last.clone(),
                Node {
                    entry,
                    children: BTreeMap::new(),
                },
            );
        }
        let root = store_node(blobs, root)?;
        store_root(blobs, &root)
    }
}

/// Stores a node's listings bottom-up; returns its entry with the real listing digest.
fn store_node(blobs: &dyn Blobs, node: Node) -> Result<Entry, TreeError> {
    if !node.entry.is_dir() {
        return Ok(node.entry);
    }
    let mut listing = BTreeMap::new();
    for (name, child) in node.children {
        listing.insert(name, store_node(blobs, child)?);
    }
    let digest = store_dir(blobs, &listing)?;
    Ok(node.entry.with_kind(Kind::Dir { digest }))
}

/// Makes each hard-link group canonical: the member first in walk order is the file,
/// the others are links to it carrying the file's mode, owner and mtime.
fn canonicalise_hard_links(entries: &mut BTreeMap<TreePath, Entry>) -> Result<(), TreeError> {
    let mut groups: BTreeMap<TreePath, BTreeSet<TreePath>> = BTreeMap::new();
    for (path, entry) in entries.iter() {
        let Kind::HardLink { target } = &entry.kind else {
            continue;
        };
        let file = resolve_link(entries, path, target)?;
        groups.entry(file).or_default().insert(path.clone());
    }
    for (file_path, mut members) in groups {
        members.insert(file_path.clone());
        let Some(leader) = members.first().cloned() else {
            continue;
        };
        let Some(file) = entries.get(&file_path).cloned() else {
            continue;
        };
        let link = Entry {
            kind: Kind::HardLink {
                target: leader.clone(),
            },
            xattrs: BTreeMap::new(),
            ..file.clone()
        };
        for member in members {
            let entry = if member == leader {
                file.clone()
            } else {
                link.clone()
            };
            entries.insert(member, entry);
        }
    }
    Ok(())
}

/// Follows a chain of hard links from `path` to the regular file it names.
fn resolve_link(
    entries: &BTreeMap<TreePath, Entry>,
    path: &TreePath,
    target: &TreePath,
) -> Result<TreePath, TreeError> {
    let bad = |reason| TreeError::BadHardLink {
        path: path.to_string(),
        target: target.to_string(),
        reason,
    };
    let mut seen = BTreeSet::from([path.clone()]);
    let mut current = target.clone();
    loop {
        match entries.get(&current).map(|e| &e.kind) {
            None => return Err(bad("does not exist")),
            Some(Kind::File { .. }) => return Ok(current),
            Some(Kind::HardLink { target: next }) => {
                if !seen.insert(current.clone()) {
                    return Err(bad("leads to a cycle of hard links"));
                }
                current = next.clone();
            }
            Some(_) => return Err(bad("is not a regular file")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{lookup, walk, MemBlobs, Tree};

    fn p(s: &str) -> TreePath {
        s.parse().unwrap()
    }

    fn sample_entries(blobs: &MemBlobs) -> Vec<(TreePath, Entry)> {
        let hello = blobs.put(b"hello\n").unwrap();
        let mut etc = Entry::dir(0o755);
        etc.mtime = 7;
        vec![
            (p("/etc"), etc),
            (p("/etc/hostname"), Entry::file(hello, 6, 0o644)),
            (p("/usr/bin/tool"), Entry::file(hello, 6, 0o755)),
            (p("/etc/alt"), Entry::symlink("/usr/bin/tool")),
            (
                p("/dev/null"),
                Entry::new(Kind::CharDev { major: 1, minor: 3 }, 0o666),
            ),
            (p("/a-b"), Entry::dir(0o700)),
        ]
    }

    fn build(blobs: &MemBlobs, entries: &[(TreePath, Entry)]) -> Digest {
        let mut b = TreeBuilder::new();
        for (path, entry) in entries {
            b.insert(path.clone(), entry.clone()).unwrap();
        }
        b.finish(blobs).unwrap()
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let blobs = MemBlobs::new();
        let mut entries = sample_entries(&blobs);
        let a = build(&blobs, &entries);
        entries.reverse();
        let b = build(&blobs, &entries);
        entries.swap(0, 3);
        let c = build(&blobs, &entries);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn walk_is_sorted_depth_first_with_default_parents() {
        let blobs = MemBlobs::new();
        let root = build(&blobs, &sample_entries(&blobs));
        let listed: Vec<String> = walk(&blobs, root).map(|r| r.unwrap().0.to_string()).collect();
        assert_eq!(
            listed,
            [
                "/",
                "/a-b",
                "/dev",
                "/dev/null",
                "/etc",
                "/etc/alt",
                "/etc/hostname",
                "/usr",
                "/usr/bin",
                "/usr/bin/tool"
            ]
        );
        let usr = lookup(&blobs, root, &p("/usr")).unwrap().unwrap();
        assert_eq!(usr.mode, 0o755);
        assert_eq!(usr.mtime, 0);
        let etc = lookup(&blobs, root, &p("/etc")).unwrap().unwrap();
        assert_eq!(etc.mtime, 7);
        let host = lookup(&blobs, root, &p("/etc/hostname")).unwrap().unwrap();
        assert_eq!(
            host.kind,
            Kind::File {
                digest: Digest::of(b"hello\n"),
                size: 6
            }
        );
        assert!(lookup(&blobs, root, &p("/etc/nope")).unwrap().is_none());
        // Lookups never go through files or symlinks.
        assert!(lookup(&blobs, root, &p("/etc/hostname/x")).unwrap().is_none());
        assert!(lookup(&blobs, root, &p("/etc/alt/x")).unwrap().is_none());
    }

    #[test]
    fn walk_round_trips_through_the_builder() {
        let blobs = MemBlobs::new();
        let root = build(&blobs, &sample_entries(&blobs));
        let mut b = TreeBuilder::new();
        for item in walk(&blobs, root) {
            let (path, entry) = item.unwrap();
            b.insert(path, entry).unwrap();
        }
        assert_eq!(b.finish(&blobs).unwrap(), root);
    }

    #[test]
    fn every_metadata_field_changes_the_digest() {
        let blobs = MemBlobs::new();
        let base = sample_entries(&blobs);
        let reference = build(&blobs, &base);
        let edits: [fn(&mut Entry); 5] = [
            |e| e.mode = 0o600,
            |e| e.uid = 1,
            |e| e.gid = 1,
            |e| e.mtime = 1,
            |e| {
                e.xattrs.insert("user.x".into(), b"1".to_vec());
            },
        ];
        let mut seen = BTreeSet::from([reference]);
        for edit in edits {
            // A deep file and a directory: both must propagate to the root digest.
            for index in [1, 0] {
                let mut entries = base.clone();
                edit(&mut entries[index].1);
                assert!(seen.insert(build(&blobs, &entries)), "edit was not seen");
            }
        }
        let mut entries = base.clone();
        entries.push((
            TreePath::root(),
            Entry {
                mtime: 5,
                ..Entry::default_dir()
            },
        ));
        assert!(seen.insert(build(&blobs, &entries)), "root metadata not hashed");
    }

    #[test]
    fn conflicts_are_errors() {
        let blobs = MemBlobs::new();
        let mut b = TreeBuilder::new();
        b.insert(p("/a"), Entry::dir(0o755)).unwrap();
        assert!(matches!(
            b.insert(p("/a"), Entry::dir(0o700)),
            Err(TreeError::DuplicatePath { .. })
        ));
        let mut b = TreeBuilder::new();
        b.insert(p("/f"), Entry::file(Digest::of(b""), 0, 0o644)).unwrap();
        b.insert(p("/f/x"), Entry::dir(0o755)).unwrap();
        assert!(matches!(
            b.finish(&blobs),
            Err(TreeError::NotADirectory { parent, .. }) if parent == "/f"
        ));
        let mut b = TreeBuilder::new();
        b.insert(p("/opt"), Entry::symlink("/etc")).unwrap();
        b.insert(p("/opt/passwd"), Entry::dir(0o755)).unwrap();
        assert!(matches!(
            b.finish(&blobs),
            Err(TreeError::ThroughSymlink { symlink, .. }) if symlink == "/opt"
        ));
        let mut b = TreeBuilder::new();
        b.insert(TreePath::root(), Entry::symlink("x")).unwrap();
        assert!(b.finish(&blobs).is_err());
        let mut b = TreeBuilder::new();
        b.insert(p("/x"), Entry::new(Kind::Fifo, 0o100644)).unwrap();
        assert!(matches!(b.finish(&blobs), Err(TreeError::InvalidEntry { .. })));
    }

    #[test]
    fn hard_link_groups_are_canonical() {
        let blobs = MemBlobs::new();
        let d = blobs.put(b"data").unwrap();
        let mut file = Entry::file(d, 4, 0o755);
        file.uid = 3;
        let link = |t: &str| Entry::new(Kind::HardLink { target: p(t) }, 0o644);
        // As a tar might list them: the file under a late name, links before it.
        let mut b = TreeBuilder::new();
        b.insert(p("/z/file"), file.clone()).unwrap();
        b.insert(p("/a/link"), link("/z/file")).unwrap();
        b.insert(p("/m/link2"), link("/a/link")).unwrap();
        let one = b.finish(&blobs).unwrap();
        // The same group described from its canonical leader.
        let mut b = TreeBuilder::new();
        b.insert(p("/a/link"), file.clone()).unwrap();
        b.insert(p("/z/file"), link("/a/link")).unwrap();
        b.insert(p("/m/link2"), link("/z/file")).unwrap();
        let two = b.finish(&blobs).unwrap();
        assert_eq!(one, two);
        let t = Tree::open(&blobs, one);
        assert_eq!(t.lookup(&p("/a/link")).unwrap().unwrap(), file);
        let l = t.lookup(&p("/z/file")).unwrap().unwrap();
        assert_eq!(l.kind, Kind::HardLink { target: p("/a/link") });
        assert_eq!((l.mode, l.uid), (0o755, 3));

        let mut b = TreeBuilder::new();
        b.insert(p("/l"), link("/missing")).unwrap();
        assert!(matches!(b.finish(&blobs), Err(TreeError::BadHardLink { .. })));
        let mut b = TreeBuilder::new();
        b.insert(p("/l1"), link("/l2")).unwrap();
        b.insert(p("/l2"), link("/l1")).unwrap();
        assert!(matches!(b.finish(&blobs), Err(TreeError::BadHardLink { .. })));
        let mut b = TreeBuilder::new();
        b.insert(p("/d"), Entry::dir(0o755)).unwrap();
        b.insert(p("/l"), link("/d")).unwrap();
        assert!(matches!(b.finish(&blobs), Err(TreeError::BadHardLink { .. })));
    }
}
