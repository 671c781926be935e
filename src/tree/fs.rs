//! Trees to and from the disk formats' neutral node lists ([`crate::formats::fs`]): a tree
//! becomes the `Vec<Node>` + [`Contents`] the FAT and ext4 writers take, and what their
//! readers return becomes a tree. File contents stream through the store both ways.

use std::io::{self, Read};

use w4b_cache::Digest;

use super::{walk, Blobs, Entry, Kind, TreeBuilder, TreeError, TreePath};
use crate::formats::fs::{ContentId, Contents, Node, NodeKind};

/// The store as the writers' content source: a [`ContentId`] is a blob digest.
pub struct BlobContents<'a>(pub &'a dyn Blobs);

impl Contents for BlobContents<'_> {
    fn open(&self, id: &ContentId) -> io::Result<Box<dyn Read + '_>> {
        self.0.open(&Digest(id.0)).map_err(io::Error::other)
    }
}

/// Every entry of the tree `root`, in walk order, as nodes.
pub fn to_nodes(blobs: &dyn Blobs, root: Digest) -> Result<Vec<Node>, TreeError> {
    let mut nodes = Vec::new();
    for item in walk(blobs, root) {
        let (path, e) = item?;
        let kind = match &e.kind {
            Kind::File { digest, size } => NodeKind::File {
                size: *size,
                content: ContentId(digest.0),
            },
            Kind::Dir { .. } => NodeKind::Dir,
            Kind::Symlink { target } => NodeKind::Symlink {
                target: target.clone(),
            },
            Kind::HardLink { target } => NodeKind::HardLink {
                target: target.to_string(),
            },
            Kind::CharDev { major, minor } => NodeKind::CharDev {
                major: *major,
                minor: *minor,
            },
            Kind::BlockDev { major, minor } => NodeKind::BlockDev {
                major: *major,
                minor: *minor,
            },
            Kind::Fifo => NodeKind::Fifo,
            Kind::Socket => NodeKind::Socket,
        };
        nodes.push(Node {
            path: path.to_string(),
            kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            xattrs: e.xattrs.clone(),
        });
    }
    Ok(nodes)
}

/// A tree from nodes (in any order) whose file contents come from `contents`; returns the
/// tree digest. Contents are streamed into the store.
pub fn from_nodes(blobs: &dyn Blobs, nodes: &[Node], contents: &dyn Contents) -> Result<Digest, TreeError> {
    let mut b = TreeBuilder::new();
    for n in nodes {
        let path = TreePath::parse(&n.path)?;
        let kind = match &n.kind {
            NodeKind::File { size, content } => {
                let mut r = contents.open(content).map_err(|source| TreeError::Io {
                    what: "cannot read the content of",
                    path: n.path.clone().into(),
                    source,
                })?;
                let (digest, len) = blobs.put_reader(&mut r)?;
                if len != *size {
                    return Err(TreeError::InvalidEntry {
                        path: n.path.clone(),
                        reason: format!("declared {size} bytes, read {len}"),
                    });
                }
                Kind::File { digest, size: len }
            }
            NodeKind::Dir => Kind::Dir {
                digest: super::format::empty_dir_digest(),
            },
            NodeKind::Symlink { target } => Kind::Symlink {
                target: target.clone(),
            },
            NodeKind::HardLink { target } => Kind::HardLink {
                target: TreePath::parse(target)?,
            },
            NodeKind::CharDev { major, minor } => Kind::CharDev {
                major: *major,
                minor: *minor,
            },
            NodeKind::BlockDev { major, minor } => Kind::BlockDev {
                major: *major,
                minor: *minor,
            },
            NodeKind::Fifo => Kind::Fifo,
            NodeKind::Socket => Kind::Socket,
        };
        let mut e = Entry::new(kind, n.mode);
        e.uid = n.uid;
        e.gid = n.gid;
        e.mtime = n.mtime;
        e.xattrs = n.xattrs.clone();
        b.insert(path, e)?;
    }
    b.finish(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::fs::MemContents;
    use crate::tree::MemBlobs;

    #[test]
    fn nodes_to_tree_and_back_is_the_identity() {
        let mut contents = MemContents::default();
        let hello = contents.add(b"hello\n");
        let node = |path: &str, kind: NodeKind, mode: u32| Node {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Default::default(),
        };
        let mut cap = node(
            "/usr/bin/ping",
            NodeKind::File {
                size: 6,
                content: hello,
            },
            0o755,
        );
        cap.xattrs.insert("security.capability".into(), vec![1, 0, 0, 2]);
        let nodes = vec![
            node("/", NodeKind::Dir, 0o755),
            node("/dev", NodeKind::Dir, 0o755),
            node("/dev/null", NodeKind::CharDev { major: 1, minor: 3 }, 0o666),
            node("/etc", NodeKind::Dir, 0o755),
            node(
                "/etc/motd",
                NodeKind::File {
                    size: 6,
                    content: hello,
                },
                0o644,
            ),
            node(
                "/etc/motd2",
                NodeKind::HardLink {
                    target: "/etc/motd".into(),
                },
                0o644,
            ),
            node(
                "/etc/s",
                NodeKind::Symlink {
                    target: "motd".into(),
                },
                0o777,
            ),
            node("/usr", NodeKind::Dir, 0o755),
            node("/usr/bin", NodeKind::Dir, 0o755),
            cap,
        ];
        let blobs = MemBlobs::new();
        let root = from_nodes(&blobs, &nodes, &contents).unwrap();
        let back = to_nodes(&blobs, root).unwrap();
        let strip =
            |v: &[Node]| -> Vec<(String, u32)> { v.iter().map(|n| (n.path.clone(), n.mode)).collect() };
        assert_eq!(strip(&back), strip(&nodes));
        let again = from_nodes(&blobs, &back, &BlobContents(&blobs)).unwrap();
        assert_eq!(again, root);
    }
}
