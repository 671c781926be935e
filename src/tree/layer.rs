//! Layer changesets and the overlay that applies them to a tree.
//!
//! A layer step renders its file operations into a [`Changeset`]: an ordered list of
//! [`Op`]s on normalised paths, itself stored as a canonical blob so that a layer's output
//! is one digest. [`apply`] overlays changesets on a base tree. It loads only the
//! directories on the paths the operations touch and rewrites only those, so its cost
//! is proportional to the layers, not to the tree (a one-file layer on a 10,000-file tree
//! reads one listing per path component).
//!
//! Semantics, chosen to match overlayfs and what a layer author expects:
//!
//! - **Put** places an entry. Missing parents are created as `0755 root:root` directories
//!   with the mtime passed to [`apply`] (the target's epoch). A non-directory replaces whatever was at the path (a whole directory
//!   included); a directory put onto an existing directory *merges* like an overlayfs
//!   upper directory: the new metadata wins, the lower children stay, and the put
//!   directory's own children (if its listing is not empty) are overlaid recursively. A
//!   directory put onto a non-directory replaces it. Putting a directory at `/` sets the
//!   root's metadata (and merges its children).
//! - **PutTree** is Put of a whole stored tree (e.g. from [`import_dir`](super::import::import_dir)):
//!   the tree's root directory is put at the path with the same merge rule.
//! - **Remove** is a whiteout: it deletes the path and everything below it. Removing a
//!   path that does not exist is not an error, because one layer is applied to several
//!   bases; removing `/` is.
//! - **Append** extends the regular file at the path with a content blob, keeping its
//!   metadata but taking the epoch as mtime, or creates it (with the op's mode and owner)
//!   when absent.
//!   Appending to anything but a regular file (a directory, symlink, hard link, device)
//!   is an error: the result would be ambiguous.
//! - Symlinks are data and are never followed: an operation whose path goes *through* a
//!   symlink of the tree (lower has `/opt -> /etc`, the layer writes `/opt/x`) is an error
//!   naming both paths; an operation on the symlink's own path replaces or removes it.
//!   An operation through a regular file (or other non-directory) is an error too,
//!   except Remove, for which such a path simply does not exist.
//!
//! Operations apply in order, changeset after changeset; a later op sees the result of
//! the earlier ones. Hard links put by a layer must name a regular file that precedes
//! them in walk order when the tree is exported.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use w4b_cache::Digest;

use super::format::{empty_dir_digest, encode_dir, entry_ref, Dec, Enc};
use super::{load_dir, load_root, store_root, Blobs, Entry, Kind, TreeError, TreePath};

/// Magic and version of a changeset blob.
///
/// ```text
/// changeset = "w4b-chg" 0x01  u32 count  op{count}
/// op        = 1 put      str path  entry        (entry as in a dir blob, see `format`)
///           | 2 put-tree str path  digest tree  (a tree root blob)
///           | 3 remove   str path
///           | 4 append   str path  digest content  u32 mode  u32 uid  u32 gid
/// ```
/// Paths are normalised absolute tree paths; there are no trailing bytes.
pub const CHANGESET_MAGIC: &[u8; 8] = b"w4b-chg\x01";

/// Files appended to above this size are concatenated through a temporary file instead
/// of memory.
const SPOOL_THRESHOLD: u64 = 16 << 20;

/// One operation of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Place `entry` at `path` (see the module doc for replace/merge rules).
    Put { path: TreePath, entry: Entry },
    /// Place the stored tree `root` (a tree digest) at `path`.
    PutTree { path: TreePath, root: Digest },
    /// Delete `path` and everything below it; a missing path is fine.
    Remove { path: TreePath },
    /// Append the blob `digest` to the file at `path`, creating it with `mode`, `uid`
    /// and `gid` when absent.
    Append {
        path: TreePath,
        digest: Digest,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl Op {
    pub fn path(&self) -> &TreePath {
        match self {
            Op::Put { path, .. }
            | Op::PutTree { path, .. }
            | Op::Remove { path }
            | Op::Append { path, .. } => path,
        }
    }
}

/// An ordered list of operations: the rendered output of a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changeset {
    pub ops: Vec<Op>,
}

impl Changeset {
    pub fn new(ops: Vec<Op>) -> Changeset {
        Changeset { ops }
    }

    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// The canonical encoding (see [`CHANGESET_MAGIC`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        e.bytes(CHANGESET_MAGIC);
        e.len(self.ops.len());
        for op in &self.ops {
            match op {
                Op::Put { path, entry } => {
                    e.u8(1);
                    e.str(&path.to_string());
                    e.entry(entry);
                }
                Op::PutTree { path, root } => {
                    e.u8(2);
                    e.str(&path.to_string());
                    e.digest(root);
                }
                Op::Remove { path } => {
                    e.u8(3);
                    e.str(&path.to_string());
                }
                Op::Append {
                    path,
                    digest,
                    mode,
                    uid,
                    gid,
                } => {
                    e.u8(4);
                    e.str(&path.to_string());
                    e.digest(digest);
                    e.u32(*mode);
                    e.u32(*uid);
                    e.u32(*gid);
                }
            }
        }
        e.0
    }

    /// Decodes the changeset blob named `digest`.
    pub fn decode(digest: Digest, blob: &[u8]) -> Result<Changeset, TreeError> {
        let mut d = Dec::new(digest, blob, "changeset");
        d.magic(CHANGESET_MAGIC)?;
        let count = d.u32()?;
        let mut ops = Vec::new();
        for _ in 0..count {
            let at = d.pos;
            let op = match d.u8()? {
                1 => Op::Put {
                    path: d.path()?,
                    entry: d.entry()?,
                },
                2 => Op::PutTree {
                    path: d.path()?,
                    root: d.digest()?,
                },
                3 => Op::Remove { path: d.path()? },
                4 => Op::Append {
                    path: d.path()?,
                    digest: d.digest()?,
                    mode: d.u32()?,
                    uid: d.u32()?,
                    gid: d.u32()?,
                },
                tag => return Err(d.corrupt_at(at, format!("unknown operation tag {tag}"))),
            };
            ops.push(op);
        }
        d.end()?;
        Ok(Changeset { ops })
    }

    /// Stores the changeset; returns its digest.
    ///
    /// Every blob the changeset names must be in the store for it to be published (the
    /// remote cache takes an output only with everything it references). Directories made
    /// by [`Entry::dir`] name the empty listing, which nobody else may have stored, so it
    /// is stored here.
    pub fn store(&self, blobs: &dyn Blobs) -> Result<Digest, TreeError> {
        if self.refs().contains(&empty_dir_digest()) {
            blobs.put(&encode_dir(&BTreeMap::new()))?;
        }
        blobs.put(&self.encode())
    }

    /// Loads the changeset named `digest`.
    pub fn load(blobs: &dyn Blobs, digest: &Digest) -> Result<Changeset, TreeError> {
        Changeset::decode(*digest, &blobs.get(digest)?)
    }

    /// Every blob the operations name (contents, listings, trees), for GC.
    pub fn refs(&self) -> Vec<Digest> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Put { entry, .. } => entry_ref(entry),
                Op::PutTree { root, .. } => Some(*root),
                Op::Remove { .. } => None,
                Op::Append { digest, .. } => Some(*digest),
            })
            .collect()
    }
}

/// Overlays `changesets` in order on the tree `base_root`; returns the new tree digest.
/// Only directories on touched paths are read and written.
pub fn apply(
    blobs: &dyn Blobs,
    base_root: Digest,
    changesets: &[Changeset],
    mtime: i64,
) -> Result<Digest, TreeError> {
    let base = load_root(blobs, &base_root)?;
    let mut root = Node::stored(base.clone());
    for changeset in changesets {
        for op in &changeset.ops {
            apply_op(blobs, &mut root, op, mtime)?;
        }
    }
    let entry = root.finish(blobs)?;
    if entry == base {
        return Ok(base_root);
    }
    store_root(blobs, &entry)
}

/// A tree entry during overlay. `children` is `None` until a directory is descended into
/// (and always for non-directories); `origin` is the stored listing it was loaded from.
struct Node {
    entry: Entry,
    children: Option<BTreeMap<String, Node>>,
    origin: Option<Digest>,
}

impl Node {
    /// An entry as stored (a directory's listing is read only when needed).
    fn stored(entry: Entry) -> Node {
        Node {
            entry,
            children: None,
            origin: None,
        }
    }

    /// A directory created by the overlay, empty so far.
    fn new_dir(entry: Entry) -> Node {
        Node {
            entry,
            children: Some(BTreeMap::new()),
            origin: None,
        }
    }

    /// The children of this directory, reading its listing on first use.
    fn children_mut(&mut self, blobs: &dyn Blobs) -> Result<&mut BTreeMap<String, Node>, TreeError> {
        if self.children.is_none() {
            let mut map = BTreeMap::new();
            if let Some(listing) = self.entry.dir_digest() {
                for (name, entry) in load_dir(blobs, &listing)? {
                    map.insert(name, Node::stored(entry));
                }
                self.origin = Some(listing);
            }
            self.children = Some(map);
        }
        Ok(self.children.get_or_insert_with(BTreeMap::new))
    }

    /// The final entry, storing every listing that changed.
    fn finish(self, blobs: &dyn Blobs) -> Result<Entry, TreeError> {
        let Some(children) = self.children else {
            return Ok(self.entry);
        };
        let mut listing = BTreeMap::new();
        for (name, child) in children {
            listing.insert(name, child.finish(blobs)?);
        }
        let bytes = encode_dir(&listing);
        let digest = Digest::of(&bytes);
        // An unchanged listing is already stored; anything else is written.
        if self.origin != Some(digest) {
            blobs.put(&bytes)?;
        }
        Ok(self.entry.with_kind(Kind::Dir { digest }))
    }
}

fn apply_op(blobs: &dyn Blobs, root: &mut Node, op: &Op, mtime: i64) -> Result<(), TreeError> {
    match op {
        Op::Put { path, entry } => {
            entry.validate(path)?;
            put(blobs, root, path, entry.clone(), mtime)
        }
        Op::PutTree { path, root: tree } => {
            let entry = load_root(blobs, tree)?;
            put(blobs, root, path, entry, mtime)
        }
        Op::Remove { path } => remove(blobs, root, path),
        Op::Append {
            path,
            digest,
            mode,
            uid,
            gid,
        } => {
            let mut created = Entry::new(
                Kind::File {
                    digest: *digest,
                    size: 0,
                },
                *mode,
            );
            created.uid = *uid;
            created.gid = *gid;
            created.mtime = mtime;
            created.validate(path)?;
            append(blobs, root, path, *digest, created, mtime)
        }
    }
}

fn put(
    blobs: &dyn Blobs,
    root: &mut Node,
    path: &TreePath,
    entry: Entry,
    mtime: i64,
) -> Result<(), TreeError> {
    let Some(name) = path.name() else {
        if !entry.is_dir() {
            return Err(TreeError::Root {
                op: "replace with a non-directory",
            });
        }
        return merge_dir(blobs, root, entry);
    };
    let children = parent_for_write(blobs, root, path, mtime)?;
    match children.get_mut(name) {
        Some(existing) if entry.is_dir() && existing.entry.is_dir() => merge_dir(blobs, existing, entry),
        _ => {
            // An empty directory made by the layer may name a listing the store has
            // never seen; finishing it as a fresh directory stores that listing.
            let node = if entry.dir_digest() == Some(empty_dir_digest()) {
                Node::new_dir(entry)
            } else {
                Node::stored(entry)
            };
            children.insert(name.to_owned(), node);
            Ok(())
        }
    }
}

/// Overlays the directory `upper` on the directory `lower` (overlayfs merge).
fn merge_dir(blobs: &dyn Blobs, lower: &mut Node, upper: Entry) -> Result<(), TreeError> {
    let listing = upper.dir_digest().unwrap_or_else(empty_dir_digest);
    // Metadata from the upper directory; the lower listing stays until merged.
    lower.entry = upper.with_kind(lower.entry.kind.clone());
    if listing == empty_dir_digest() {
        return Ok(());
    }
    let upper_children = load_dir(blobs, &listing)?;
    let children = lower.children_mut(blobs)?;
    for (name, entry) in upper_children {
        match children.get_mut(&name) {
            Some(existing) if entry.is_dir() && existing.entry.is_dir() => {
                merge_dir(blobs, existing, entry)?;
            }
            _ => {
                children.insert(name, Node::stored(entry));
            }
        }
    }
    Ok(())
}

/// The children of `path`'s parent, creating missing parent directories; refuses to go
/// through a symlink or a non-directory.
fn parent_for_write<'n>(
    blobs: &dyn Blobs,
    root: &'n mut Node,
    path: &TreePath,
    mtime: i64,
) -> Result<&'n mut BTreeMap<String, Node>, TreeError> {
    let parents = &path.components()[..path.components().len().saturating_sub(1)];
    let mut dir = root;
    for (depth, name) in parents.iter().enumerate() {
        let children = dir.children_mut(blobs)?;
        let child = children.entry(name.clone()).or_insert_with(|| {
            Node::new_dir(Entry {
                mtime,
                ..Entry::default_dir()
            })
        });
        check_traversable(&child.entry, path, depth)?;
        dir = child;
    }
    dir.children_mut(blobs)
}

/// An error unless `entry`, at component `depth` of `path`, is a directory.
fn check_traversable(entry: &Entry, path: &TreePath, depth: usize) -> Result<(), TreeError> {
    match &entry.kind {
        Kind::Dir { .. } => Ok(()),
        Kind::Symlink { target } => Err(TreeError::ThroughSymlink {
            path: path.to_string(),
            symlink: path.prefix(depth + 1).to_string(),
            target: target.clone(),
        }),
        other => Err(TreeError::NotADirectory {
            path: path.to_string(),
            parent: path.prefix(depth + 1).to_string(),
            kind: other.name(),
        }),
    }
}

fn remove(blobs: &dyn Blobs, root: &mut Node, path: &TreePath) -> Result<(), TreeError> {
    let Some((name, parents)) = path.components().split_last() else {
        return Err(TreeError::Root { op: "remove" });
    };
    let mut dir = root;
    for (depth, component) in parents.iter().enumerate() {
        let Some(child) = dir.children_mut(blobs)?.get_mut(component) else {
            return Ok(());
        };
        match check_traversable(&child.entry, path, depth) {
            Ok(()) => dir = child,
            Err(e @ TreeError::ThroughSymlink { .. }) => return Err(e),
            // Below a file nothing exists: the whiteout has nothing to remove.
            Err(_) => return Ok(()),
        }
    }
    dir.children_mut(blobs)?.remove(name);
    Ok(())
}

fn append(
    blobs: &dyn Blobs,
    root: &mut Node,
    path: &TreePath,
    addition: Digest,
    created: Entry,
    mtime: i64,
) -> Result<(), TreeError> {
    let Some(name) = path.name() else {
        return Err(TreeError::Root { op: "append to" });
    };
    let children = parent_for_write(blobs, root, path, mtime)?;
    let entry = match children.get(name).map(|n| &n.entry) {
        None => {
            let size = blobs.get(&addition)?.len() as u64;
            created.with_kind(Kind::File {
                digest: addition,
                size,
            })
        }
        Some(lower) => {
            let Kind::File { digest, size } = &lower.kind else {
                return Err(TreeError::AppendNotFile {
                    path: path.to_string(),
                    kind: lower.kind.name(),
                });
            };
            let (digest, size) = concat(blobs, &[*digest, addition], *size)?;
            Entry {
                mtime,
                ..lower.with_kind(Kind::File { digest, size })
            }
        }
    };
    children.insert(name.to_owned(), Node::stored(entry));
    Ok(())
}

/// Stores the concatenation of `parts`, streaming through a temporary file when the
/// first part is large.
fn concat(blobs: &dyn Blobs, parts: &[Digest], first_len: u64) -> Result<(Digest, u64), TreeError> {
    if first_len <= SPOOL_THRESHOLD {
        let mut bytes = Vec::new();
        for part in parts {
            blobs
                .open(part)?
                .read_to_end(&mut bytes)
                .map_err(|source| spool_error("cannot read blob", source))?;
        }
        let digest = blobs.put(&bytes)?;
        return Ok((digest, bytes.len() as u64));
    }
    let mut spool =
        tempfile::NamedTempFile::new().map_err(|e| spool_error("cannot create temporary file", e))?;
    for part in parts {
        io::copy(&mut blobs.open(part)?, spool.as_file_mut())
            .map_err(|e| spool_error("cannot write temporary file", e))?;
    }
    spool
        .as_file_mut()
        .flush()
        .map_err(|e| spool_error("cannot write temporary file", e))?;
    blobs.put_file(spool.path())
}

fn spool_error(what: &'static str, source: io::Error) -> TreeError {
    TreeError::Spool { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::testutil::CountingBlobs;
    use crate::tree::{lookup, walk, MemBlobs, Tree, TreeBuilder};

    fn p(s: &str) -> TreePath {
        s.parse().unwrap()
    }

    fn file(blobs: &dyn Blobs, content: &[u8], mode: u32) -> Entry {
        let d = blobs.put(content).unwrap();
        Entry::file(d, content.len() as u64, mode)
    }

    fn listing(blobs: &dyn Blobs, root: Digest) -> Vec<String> {
        walk(blobs, root)
            .map(|r| {
                let (path, entry) = r.unwrap();
                let what = match &entry.kind {
                    Kind::File { digest, .. } => {
                        format!("file {}", String::from_utf8(blobs.get(digest).unwrap()).unwrap())
                    }
                    Kind::Dir { .. } => "dir".into(),
                    Kind::Symlink { target } => format!("-> {target}"),
                    other => other.name().into(),
                };
                format!("{path} {:o} {what}", entry.mode)
            })
            .collect()
    }

    /// `/etc/hostname`, `/etc/ssh/sshd_config`, `/opt -> /etc`, `/usr/bin/sh`.
    fn base(blobs: &dyn Blobs) -> Digest {
        let mut b = TreeBuilder::new();
        b.insert(p("/etc/hostname"), file(blobs, b"old", 0o644)).unwrap();
        b.insert(p("/etc/ssh/sshd_config"), file(blobs, b"cfg", 0o600))
            .unwrap();
        b.insert(p("/opt"), Entry::symlink("/etc")).unwrap();
        b.insert(p("/usr/bin/sh"), file(blobs, b"elf", 0o755)).unwrap();
        b.finish(blobs).unwrap()
    }

    fn run(blobs: &dyn Blobs, root: Digest, ops: Vec<Op>) -> Result<Digest, TreeError> {
        apply(blobs, root, &[Changeset::new(ops)], 0)
    }

    #[test]
    fn put_replaces_files_and_creates_parents() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        let new = run(
            &blobs,
            root,
            vec![
                Op::Put {
                    path: p("/etc/hostname"),
                    entry: file(&blobs, b"hive-north", 0o644),
                },
                Op::Put {
                    path: p("/var/lib/w4b/state"),
                    entry: file(&blobs, b"s", 0o600),
                },
            ],
        )
        .unwrap();
        assert_eq!(
            listing(&blobs, new),
            [
                "/ 755 dir",
                "/etc 755 dir",
                "/etc/hostname 644 file hive-north",
                "/etc/ssh 755 dir",
                "/etc/ssh/sshd_config 600 file cfg",
                "/opt 777 -> /etc",
                "/usr 755 dir",
                "/usr/bin 755 dir",
                "/usr/bin/sh 755 file elf",
                "/var 755 dir",
                "/var/lib 755 dir",
                "/var/lib/w4b 755 dir",
                "/var/lib/w4b/state 600 file s",
            ]
        );
        let var = lookup(&blobs, new, &p("/var/lib")).unwrap().unwrap();
        assert_eq!((var.uid, var.gid, var.mtime), (0, 0, 0));
    }

    #[test]
    fn empty_changesets_keep_the_root() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        assert_eq!(apply(&blobs, root, &[], 0).unwrap(), root);
        // Putting an identical entry is a no-op too.
        let same = lookup(&blobs, root, &p("/usr/bin/sh")).unwrap().unwrap();
        let ops = vec![Op::Put {
            path: p("/usr/bin/sh"),
            entry: same,
        }];
        assert_eq!(run(&blobs, root, ops).unwrap(), root);
        // Removing a missing path is fine and changes nothing.
        let ops = vec![
            Op::Remove {
                path: p("/nope/deeper"),
            },
            Op::Remove {
                path: p("/etc/hostname/below-a-file"),
            },
        ];
        assert_eq!(run(&blobs, root, ops).unwrap(), root);
    }

    #[test]
    fn file_replaces_dir_and_dir_replaces_file() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        let new = run(
            &blobs,
            root,
            vec![
                Op::Put {
                    path: p("/etc/ssh"),
                    entry: file(&blobs, b"now a file", 0o644),
                },
                Op::Put {
                    path: p("/etc/hostname"),
                    entry: Entry::dir(0o700),
                },
            ],
        )
        .unwrap();
        let l = listing(&blobs, new);
        assert!(l.contains(&"/etc/ssh 644 file now a file".to_string()));
        assert!(l.contains(&"/etc/hostname 700 dir".to_string()));
        assert!(!l.iter().any(|s| s.starts_with("/etc/ssh/")));
    }

    #[test]
    fn dir_onto_dir_merges_like_overlayfs() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        // An upper tree with /etc/ssh/extra and new metadata for /etc/ssh.
        let mut b = TreeBuilder::new();
        b.insert(
            p("/ssh"),
            Entry {
                uid: 5,
                ..Entry::dir(0o750)
            },
        )
        .unwrap();
        b.insert(p("/ssh/extra"), file(&blobs, b"x", 0o644)).unwrap();
        b.insert(p("/motd"), file(&blobs, b"hi", 0o644)).unwrap();
        let upper = b.finish(&blobs).unwrap();
        let new = run(
            &blobs,
            root,
            vec![
                Op::PutTree {
                    path: p("/etc"),
                    root: upper,
                },
                Op::Put {
                    path: TreePath::root(),
                    entry: Entry {
                        mtime: 9,
                        ..Entry::dir(0o755)
                    },
                },
            ],
        )
        .unwrap();
        let l = listing(&blobs, new);
        for want in [
            "/etc/hostname 644 file old",
            "/etc/motd 644 file hi",
            "/etc/ssh 750 dir",
            "/etc/ssh/extra 644 file x",
            "/etc/ssh/sshd_config 600 file cfg",
            "/usr/bin/sh 755 file elf",
        ] {
            assert!(l.contains(&want.to_string()), "{want} missing from {l:#?}");
        }
        let ssh = lookup(&blobs, new, &p("/etc/ssh")).unwrap().unwrap();
        assert_eq!(ssh.uid, 5);
        assert_eq!(Tree::open(&blobs, new).root_entry().unwrap().mtime, 9);
        // A whole tree can also replace a file.
        let new = run(
            &blobs,
            root,
            vec![Op::PutTree {
                path: p("/etc/hostname"),
                root: upper,
            }],
        )
        .unwrap();
        assert!(lookup(&blobs, new, &p("/etc/hostname/ssh/extra"))
            .unwrap()
            .is_some());
    }

    #[test]
    fn remove_is_a_recursive_whiteout() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        let new = run(
            &blobs,
            root,
            vec![Op::Remove { path: p("/etc") }, Op::Remove { path: p("/opt") }],
        )
        .unwrap();
        assert_eq!(
            listing(&blobs, new),
            [
                "/ 755 dir",
                "/usr 755 dir",
                "/usr/bin 755 dir",
                "/usr/bin/sh 755 file elf"
            ]
        );
        assert!(matches!(
            run(
                &blobs,
                root,
                vec![Op::Remove {
                    path: TreePath::root()
                }]
            ),
            Err(TreeError::Root { .. })
        ));
        // Order matters: a later put after a removal recreates the path.
        let new = run(
            &blobs,
            root,
            vec![
                Op::Remove { path: p("/etc") },
                Op::Put {
                    path: p("/etc/hostname"),
                    entry: file(&blobs, b"n", 0o644),
                },
            ],
        )
        .unwrap();
        assert!(lookup(&blobs, new, &p("/etc/ssh")).unwrap().is_none());
        assert!(lookup(&blobs, new, &p("/etc/hostname")).unwrap().is_some());
    }

    #[test]
    fn append_creates_and_extends() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        let more = blobs.put(b"+more").unwrap();
        let append = |path: &str| Op::Append {
            path: p(path),
            digest: more,
            mode: 0o640,
            uid: 1,
            gid: 2,
        };
        let new = run(
            &blobs,
            root,
            vec![append("/etc/hostname"), append("/etc/new/file")],
        )
        .unwrap();
        let l = listing(&blobs, new);
        assert!(
            l.contains(&"/etc/hostname 644 file old+more".to_string()),
            "{l:#?}"
        );
        assert!(l.contains(&"/etc/new/file 640 file +more".to_string()), "{l:#?}");
        let created = lookup(&blobs, new, &p("/etc/new/file")).unwrap().unwrap();
        assert_eq!((created.uid, created.gid), (1, 2));
        assert_eq!(
            created.kind,
            Kind::File {
                digest: more,
                size: 5
            }
        );
        let extended = lookup(&blobs, new, &p("/etc/hostname")).unwrap().unwrap();
        assert_eq!(
            extended.kind,
            Kind::File {
                digest: Digest::of(b"old+more"),
                size: 8
            }
        );
        assert_eq!(extended.uid, 0, "extending keeps the lower owner");

        for bad in ["/etc", "/opt"] {
            assert!(matches!(
                run(&blobs, root, vec![append(bad)]),
                Err(TreeError::AppendNotFile { .. })
            ));
        }
    }

    #[test]
    fn writes_through_symlinks_are_rejected() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        let ops = [
            Op::Put {
                path: p("/opt/x"),
                entry: file(&blobs, b"x", 0o644),
            },
            Op::Append {
                path: p("/opt/x"),
                digest: Digest::of(b""),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            Op::Remove {
                path: p("/opt/hostname"),
            },
            Op::PutTree {
                path: p("/opt/sub/dir"),
                root,
            },
        ];
        for op in ops {
            let err = run(&blobs, root, vec![op]).unwrap_err();
            let TreeError::ThroughSymlink { symlink, target, .. } = &err else {
                panic!("wrong error {err:?}");
            };
            assert_eq!((symlink.as_str(), target.as_str()), ("/opt", "/etc"));
            let text = err.to_string();
            assert!(text.contains("`/opt`") && text.contains("`/etc`"), "{text}");
        }
        // Replacing the symlink itself is fine.
        let new = run(
            &blobs,
            root,
            vec![Op::Put {
                path: p("/opt"),
                entry: Entry::dir(0o755),
            }],
        )
        .unwrap();
        assert!(lookup(&blobs, new, &p("/opt")).unwrap().unwrap().is_dir());
        // Writing below a regular file is an error, not a silent replacement.
        assert!(matches!(
            run(
                &blobs,
                root,
                vec![Op::Put {
                    path: p("/etc/hostname/x"),
                    entry: Entry::dir(0o755)
                }]
            ),
            Err(TreeError::NotADirectory { .. })
        ));
    }

    #[test]
    fn unsafe_paths_never_reach_a_changeset() {
        for bad in ["/etc/../shadow", "/../x", "etc/passwd", "/a/./b", "/a//b", "/a\0"] {
            assert!(
                matches!(TreePath::parse(bad), Err(TreeError::InvalidPath { .. })),
                "{bad}"
            );
        }
        // A changeset blob carrying `..` is corrupt, not applied.
        let blobs = MemBlobs::new();
        let good = Changeset::new(vec![Op::Remove { path: p("/ab") }]).encode();
        let bad = String::from_utf8_lossy(&good).replace("/ab", "/..").into_bytes();
        assert_eq!(bad.len(), good.len());
        let d = blobs.put(&bad).unwrap();
        assert!(matches!(
            Changeset::load(&blobs, &d),
            Err(TreeError::Corrupt { .. })
        ));
    }

    #[test]
    fn invalid_entries_are_rejected() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        let mut e = file(&blobs, b"x", 0o644);
        e.mode = 0o100644;
        assert!(matches!(
            run(
                &blobs,
                root,
                vec![Op::Put {
                    path: p("/x"),
                    entry: e
                }]
            ),
            Err(TreeError::InvalidEntry { .. })
        ));
        assert!(matches!(
            run(
                &blobs,
                root,
                vec![Op::Put {
                    path: TreePath::root(),
                    entry: Entry::symlink("x")
                }]
            ),
            Err(TreeError::Root { .. })
        ));
    }

    #[test]
    fn changesets_apply_in_order_and_round_trip() {
        let blobs = MemBlobs::new();
        let root = base(&blobs);
        let first = Changeset::new(vec![Op::Put {
            path: p("/f"),
            entry: file(&blobs, b"1", 0o644),
        }]);
        let mut second = Changeset::default();
        second.push(Op::Put {
            path: p("/f"),
            entry: file(&blobs, b"2", 0o644),
        });
        second.push(Op::Append {
            path: p("/f"),
            digest: blobs.put(b"3").unwrap(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
        second.push(Op::PutTree { path: p("/t"), root });
        second.push(Op::Remove { path: p("/t/usr") });
        let new = apply(&blobs, root, &[first.clone(), second.clone()], 0).unwrap();
        let f = lookup(&blobs, new, &p("/f")).unwrap().unwrap();
        assert_eq!(
            f.kind,
            Kind::File {
                digest: Digest::of(b"23"),
                size: 2
            }
        );
        assert!(lookup(&blobs, new, &p("/t/etc/hostname")).unwrap().is_some());
        assert!(lookup(&blobs, new, &p("/t/usr")).unwrap().is_none());

        for cs in [first, second] {
            let d = cs.store(&blobs).unwrap();
            assert_eq!(Changeset::load(&blobs, &d).unwrap(), cs);
            let blob = cs.encode();
            for cut in 0..blob.len() {
                assert!(Changeset::decode(d, &blob[..cut]).is_err());
            }
            assert_eq!(crate::tree::dir_refs(&blob), cs.refs());
        }
    }

    #[test]
    fn changeset_encoding_is_pinned() {
        let cs = Changeset::new(vec![
            Op::Put {
                path: p("/a"),
                entry: Entry::symlink("b"),
            },
            Op::Remove { path: p("/c") },
        ]);
        assert_eq!(
            Digest::of(&cs.encode()).to_hex(),
            "b2eca3aaef99a2c92d01e7dbc3f710c2b7f09154f4b477c7d2986828ef002681"
        );
    }

    #[test]
    fn overlay_cost_is_proportional_to_the_layer() {
        let blobs = CountingBlobs::default();
        let content = blobs.put(b"x").unwrap();
        let mut b = TreeBuilder::new();
        for d in 0..100 {
            for f in 0..100 {
                let path = p(&format!("/usr/share/d{d:03}/f{f:03}"));
                // Distinct contents, so no two directories share a listing.
                let unique = blobs.put(path.to_string().as_bytes()).unwrap();
                b.insert(path, Entry::file(unique, 1, 0o644)).unwrap();
            }
        }
        let root = b.finish(&blobs).unwrap();
        assert!(blobs.inner.len() > 10_100);

        blobs.reset();
        let layer = Changeset::new(vec![Op::Put {
            path: p("/usr/share/d042/new"),
            entry: Entry::file(content, 1, 0o644),
        }]);
        let new = apply(&blobs, root, &[layer], 0).unwrap();
        // root blob + listings of /, /usr, /usr/share, /usr/share/d042.
        assert_eq!(blobs.reads(), 5, "reads");
        // Those four listings and the new root blob.
        assert_eq!(blobs.writes(), 5, "writes");
        assert!(lookup(&blobs.inner, new, &p("/usr/share/d042/new"))
            .unwrap()
            .is_some());
        assert_eq!(walk(&blobs.inner, new).count(), 1 + 2 + 100 + 10_000 + 1);

        // A whiteout of a whole subtree does not read inside it.
        blobs.reset();
        let layer = Changeset::new(vec![Op::Remove {
            path: p("/usr/share/d007"),
        }]);
        apply(&blobs, root, &[layer], 0).unwrap();
        assert_eq!(blobs.reads(), 4, "reads");
    }

    /// Regression: a module's changeset of new directories named the empty listing without
    /// storing it, so publishing it to the remote cache failed on every hive build.
    #[test]
    fn a_stored_changeset_has_every_blob_it_names() {
        let blobs = MemBlobs::new();
        let set = Changeset::new(vec![Op::Put {
            path: p("/var/lib/w4b"),
            entry: Entry::dir(0o755),
        }]);
        let d = set.store(&blobs).unwrap();
        let loaded = Changeset::load(&blobs, &d).unwrap();
        for r in loaded.refs() {
            assert!(blobs.get(&r).is_ok(), "{r} is named but not stored");
        }
    }
}
