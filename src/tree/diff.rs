//! The difference between two trees, path by path: what `w4b why` lists inside a
//! tree-valued input (a layer's `source:` directory, an unpacked archive).
//!
//! Both trees are walked side by side from their roots, the way git's `diff-tree` does.
//! Equal entries are skipped without being read — for a directory, equal listing digests
//! mean everything below is equal — so only the directories on the way to a change are
//! loaded: the cost follows the changed paths (times the width of the directories that
//! hold them), never the size of the tree. A directory that was added or removed is
//! listed with everything in it, since each of those paths changed.

use w4b_cache::Digest;

use super::{load_dir, load_root, Blobs, Entry, TreeError, TreePath};

/// One path whose entry differs; `None` on the side where it does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathDiff {
    pub path: TreePath,
    pub old: Option<Entry>,
    pub new: Option<Entry>,
}

/// Every path whose entry differs between the trees `old` and `new`, in sorted
/// depth-first order. A directory present in both is listed only when its own metadata
/// (mode, owner, mtime, xattrs) differs; the changes below it are listed on their own.
pub fn diff(blobs: &dyn Blobs, old: Digest, new: Digest) -> Result<Vec<PathDiff>, TreeError> {
    let mut out = Vec::new();
    if old == new {
        return Ok(out);
    }
    let (a, b) = (load_root(blobs, &old)?, load_root(blobs, &new)?);
    compare(blobs, &TreePath::root(), Some(&a), Some(&b), &mut out)?;
    Ok(out)
}

/// Whether two entries differ in anything but the digest of a directory's listing.
fn own_metadata_differs(a: &Entry, b: &Entry) -> bool {
    (a.mode, a.uid, a.gid, a.mtime, &a.xattrs) != (b.mode, b.uid, b.gid, b.mtime, &b.xattrs)
}

/// Compares the entries at `path` and, where directories differ, their children. The depth
/// is bounded by [`TreePath::join`] ([`super::MAX_DEPTH`]).
fn compare(
    blobs: &dyn Blobs,
    path: &TreePath,
    a: Option<&Entry>,
    b: Option<&Entry>,
    out: &mut Vec<PathDiff>,
) -> Result<(), TreeError> {
    if a == b {
        return Ok(());
    }
    let (a_dir, b_dir) = (a.and_then(Entry::dir_digest), b.and_then(Entry::dir_digest));
    let both_dirs = a_dir.is_some() && b_dir.is_some();
    let listed = match (a, b) {
        (Some(x), Some(y)) if both_dirs => own_metadata_differs(x, y),
        _ => true,
    };
    if listed && !path.is_root() {
        out.push(PathDiff {
            path: path.clone(),
            old: a.cloned(),
            new: b.cloned(),
        });
    }
    if a_dir == b_dir {
        return Ok(());
    }
    // Children of whichever sides are directories; a side that is not one has none, so
    // its counterpart's whole subtree is listed as added or removed.
    let load = |d: Option<Digest>| d.map_or(Ok(Vec::new()), |d| load_dir(blobs, &d));
    let (xs, ys) = (load(a_dir)?, load(b_dir)?);
    let (mut i, mut j) = (0, 0);
    while i < xs.len() || j < ys.len() {
        let order = match (xs.get(i), ys.get(j)) {
            (Some((x, _)), Some((y, _))) => x.as_bytes().cmp(y.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (name, x, y) = match order {
            std::cmp::Ordering::Less => {
                i += 1;
                (&xs[i - 1].0, Some(&xs[i - 1].1), None)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (&ys[j - 1].0, None, Some(&ys[j - 1].1))
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                (&xs[i - 1].0, Some(&xs[i - 1].1), Some(&ys[j - 1].1))
            }
        };
        compare(blobs, &path.join(name)?, x, y, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::testutil::CountingBlobs;
    use crate::tree::{Kind, TreeBuilder};

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    fn file(blobs: &dyn Blobs, text: &str, mode: u32) -> Entry {
        Entry::file(blobs.put(text.as_bytes()).unwrap(), text.len() as u64, mode)
    }

    /// `/a` holds 50 files, `/b` two, `/c/deep/z` one; `edit` changes the entries.
    fn tree(blobs: &dyn Blobs, edit: impl FnOnce(&mut Vec<(String, Entry)>)) -> Digest {
        let mut entries: Vec<(String, Entry)> = (0..50)
            .map(|n| (format!("/a/f{n:02}"), file(blobs, &format!("file {n}"), 0o644)))
            .collect();
        entries.push(("/b/x".into(), file(blobs, "x one", 0o644)));
        entries.push(("/b/y".into(), file(blobs, "y", 0o755)));
        entries.push(("/c/deep/z".into(), file(blobs, "z", 0o644)));
        entries.push(("/l".into(), Entry::symlink("b/x")));
        edit(&mut entries);
        let mut b = TreeBuilder::new();
        for (path, e) in entries {
            b.insert(p(&path), e).unwrap();
        }
        b.finish(blobs).unwrap()
    }

    fn set(entries: &mut [(String, Entry)], path: &str, e: Entry) {
        entries.iter_mut().find(|(p, _)| p == path).unwrap().1 = e;
    }

    fn paths(d: &[PathDiff]) -> Vec<String> {
        d.iter().map(|d| d.path.to_string()).collect()
    }

    #[test]
    fn only_the_changed_subtree_is_read() {
        let blobs = CountingBlobs::default();
        let old = tree(&blobs, |_| {});
        let new = tree(&blobs, |e| set(e, "/b/x", file(&blobs, "x two", 0o644)));
        blobs.reset();
        let d = diff(&blobs, old, new).unwrap();
        assert_eq!(paths(&d), ["/b/x"]);
        assert_eq!(d[0].old, Some(file(&blobs, "x one", 0o644)));
        assert_eq!(d[0].new, Some(file(&blobs, "x two", 0o644)));
        // Two roots, two root listings, the two listings of `/b`: never `/a` (50 files)
        // or `/c/deep`, and never a file's content.
        assert_eq!(blobs.reads(), 6);

        blobs.reset();
        assert!(diff(&blobs, old, old).unwrap().is_empty());
        assert_eq!(blobs.reads(), 0, "equal trees are not read at all");
    }

    #[test]
    fn added_removed_and_retyped_paths_with_everything_below_them() {
        let blobs = MemBlobs::new();
        let old = tree(&blobs, |_| {});
        let new = tree(&blobs, |e| {
            e.retain(|(p, _)| p != "/b/y" && !p.starts_with("/c/"));
            e.push(("/b/new".into(), file(&blobs, "new", 0o644)));
            e.push(("/n/m/k".into(), file(&blobs, "k", 0o644)));
            set(e, "/l", Entry::symlink("b/new"));
        });
        let d = diff(&blobs, old, new).unwrap();
        assert_eq!(
            paths(&d),
            [
                "/b/new",
                "/b/y",
                "/c",
                "/c/deep",
                "/c/deep/z",
                "/l",
                "/n",
                "/n/m",
                "/n/m/k"
            ]
        );
        let side = |path: &str| {
            let x = d.iter().find(|x| x.path.to_string() == path).unwrap();
            (x.old.is_some(), x.new.is_some())
        };
        assert_eq!(side("/b/new"), (false, true));
        assert_eq!(side("/b/y"), (true, false));
        assert_eq!(side("/c/deep/z"), (true, false));
        assert_eq!(side("/l"), (true, true));
        assert_eq!(side("/n/m/k"), (false, true));

        // A file that became a directory: changed, and its new contents added.
        let retyped = tree(&blobs, |e| {
            e.retain(|(p, _)| p != "/b/x");
            e.push(("/b/x/inner".into(), file(&blobs, "i", 0o644)));
        });
        let d = diff(&blobs, old, retyped).unwrap();
        assert_eq!(paths(&d), ["/b/x", "/b/x/inner"]);
        assert!(matches!(d[0].old.as_ref().unwrap().kind, Kind::File { .. }));
        assert!(d[0].new.as_ref().unwrap().is_dir());
        assert_eq!(
            paths(&diff(&blobs, retyped, old).unwrap()),
            ["/b/x", "/b/x/inner"]
        );
    }

    #[test]
    fn a_mode_change_is_listed_but_a_directory_is_only_for_its_own_metadata() {
        let blobs = MemBlobs::new();
        let old = tree(&blobs, |_| {});
        let new = tree(&blobs, |e| set(e, "/b/x", file(&blobs, "x one", 0o755)));
        let d = diff(&blobs, old, new).unwrap();
        assert_eq!(paths(&d), ["/b/x"]);
        assert_eq!(
            (d[0].old.as_ref().unwrap().mode, d[0].new.as_ref().unwrap().mode),
            (0o644, 0o755)
        );

        let new = tree(&blobs, |e| e.push(("/b".into(), Entry::dir(0o700))));
        assert_eq!(paths(&diff(&blobs, old, new).unwrap()), ["/b"]);
    }

    #[test]
    fn an_evicted_listing_is_an_error_not_a_wrong_answer() {
        let blobs = MemBlobs::new();
        let old = tree(&blobs, |_| {});
        let new = tree(&blobs, |e| set(e, "/c/deep/z", file(&blobs, "zz", 0o644)));
        let deep = crate::tree::lookup(&blobs, old, &p("/c/deep"))
            .unwrap()
            .unwrap()
            .dir_digest()
            .unwrap();
        blobs.corrupt(&deep, b"w4b-dir\x01garbage".to_vec());
        assert!(diff(&blobs, old, new).is_err());
    }

    use crate::tree::MemBlobs;
}
