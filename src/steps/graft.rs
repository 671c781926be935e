//! `graft` and `split`: the boot filesystem inside the root filesystem and back, so that
//! layers see one tree, as the running Pi does (`/boot/firmware/config.txt` is a path in
//! a layer like any other), while the disk still gets two filesystems.
//!
//! Both are surgery on the Merkle tree along one path: only the listings from `/` down to
//! the mount point's parent are read and rewritten, plus the boot subtree's listings when
//! it holds hard links (their absolute targets move with the subtree). The boot tree's
//! listing is reused as is, so neither step copies a file or a big directory.
//!
//! What the combined tree holds at the mount point: a directory with the root
//! filesystem's metadata for the mount point (mode, owner, mtime — what `ls -ld` shows
//! for `/boot/firmware` on an unmounted root) and the boot filesystem's children. The
//! boot tree's own root entry is dropped by `graft` and rebuilt by `split` as the entry
//! the FAT reader gives every FAT root ([`fat_root_entry`]) — FAT stores no metadata for
//! its root, so nothing is lost, and `split(graft(b, r)) == (b, r)` holds digest-exact for
//! trees that `unpack` made. `split` leaves an empty directory with the kept metadata at
//! the mount point of the root tree.
//!
//! The mount point comes from the `table` output of `unpack` (schema 2, `boot_mount`,
//! read from the base's `/etc/fstab`) unless the step is given one; only an explicit
//! mount point is a key component, the table is keyed as an upstream output already.
//!
//! `graft` refuses a root tree whose mount point holds files (they would be hidden under
//! the mount on the Pi and silently dropped here) or is not a directory; `split` refuses a
//! combined tree where a layer replaced the mount point with something that is not a
//! directory, and hard links that cross the mount point (two filesystems cannot share an
//! inode).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_cache::{Digest, OutputRef};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::table::load_table;
use super::tree_error;
use crate::store::AppStore;
use crate::tree::format::empty_dir_digest;
use crate::tree::{load_dir, load_root, store_dir, store_root, Blobs, Entry, Kind, TreeError, TreePath};

/// The Unix time of 1980-01-01T00:00:00Z, the earliest FAT time, which the FAT reader
/// gives the root directory (FAT records no time for it).
const FAT_EPOCH: i64 = 315_532_800;

/// The entry the FAT reader gives a FAT root: `0755 root:root`, the FAT epoch, no xattrs.
pub fn fat_root_entry(listing: Digest) -> Entry {
    Entry {
        mtime: FAT_EPOCH,
        ..Entry::new(Kind::Dir { digest: listing }, 0o755)
    }
}

/// Why the boot tree could not be grafted into, or split from, the root tree.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GraftError {
    #[error("the boot mount point `{path}` is not an absolute path below `/`")]
    #[diagnostic(
        code(w4b::graft::bad_mount_point),
        help("the boot partition mounts at a directory such as `/boot/firmware`")
    )]
    BadMountPoint { path: String },

    #[error("cannot mount the boot partition at `{mount}`: `{path}` in the root tree is a {kind}, not a directory")]
    #[diagnostic(
        code(w4b::graft::not_a_directory),
        help("the base's root filesystem has something else where the boot partition mounts; check the base image")
    )]
    NotADirectory {
        mount: String,
        path: String,
        kind: &'static str,
    },

    #[error("the boot mount point `{mount}` in the root tree is not empty (it holds `{first}`)")]
    #[diagnostic(
        code(w4b::graft::mount_point_not_empty),
        help("files under a mount point are hidden on the Pi; the base image is unusual — remove them from the base or mount the boot partition elsewhere")
    )]
    MountPointNotEmpty { mount: String, first: String },

    #[error("`{mount}` is a {kind} in the built tree, but the boot partition mounts there")]
    #[diagnostic(
        code(w4b::split::mount_point_replaced),
        help("a layer replaced the boot mount point; put boot files under `{mount}/` instead of replacing the directory itself")
    )]
    MountPointReplaced { mount: String, kind: &'static str },

    #[error("the boot mount point `{mount}` is missing from the built tree")]
    #[diagnostic(
        code(w4b::split::mount_point_missing),
        help("a layer removed the boot mount point; the boot partition's files must stay under `{mount}`")
    )]
    MountPointMissing { mount: String },

    #[error(
        "the hard link `{path}` points to `{target}`, across the boot partition's mount point `{mount}`"
    )]
    #[diagnostic(
        code(w4b::split::cross_mount_link),
        help("the boot and root partitions are separate filesystems and cannot share a file; copy it instead of hard-linking it")
    )]
    CrossMountLink {
        mount: String,
        path: String,
        target: String,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Tree(#[from] TreeError),
}

impl GraftError {
    pub(crate) fn into_step(self) -> StepError {
        match self {
            GraftError::Tree(e) => tree_error(e),
            other => StepError::diag(other),
        }
    }
}

/// The mount point as a tree path: absolute, not `/`.
pub fn mount_path(text: &str) -> Result<TreePath, GraftError> {
    let bad = || GraftError::BadMountPoint {
        path: text.to_owned(),
    };
    if !text.starts_with('/') {
        return Err(bad());
    }
    let path = TreePath::parse(text).map_err(|_| bad())?;
    if path.is_root() {
        return Err(bad());
    }
    Ok(path)
}

/// The directories from `/` to the mount point's parent: each one's entry and children.
struct Spine {
    /// `levels[i]` is the directory at the first `i` components of the mount point.
    levels: Vec<(Entry, BTreeMap<String, Entry>)>,
}

impl Spine {
    /// Reads the directories above `mount` in the tree `root`. Missing directories are
    /// created (`0755 root:root`, mtime 0) when `create` is set; otherwise the spine
    /// stops short and `mount_entry` reports the mount point missing.
    fn read(
        blobs: &dyn Blobs,
        root: Digest,
        mount: &TreePath,
        create: bool,
    ) -> Result<Option<Spine>, GraftError> {
        let names = mount.components();
        let mut entry = load_root(blobs, &root)?;
        let mut levels = Vec::with_capacity(names.len());
        for (depth, name) in names.iter().enumerate() {
            let children: BTreeMap<String, Entry> = match entry.dir_digest() {
                // A directory created above has the empty listing, which need not be
                // in the store yet.
                Some(listing) if listing == empty_dir_digest() => BTreeMap::new(),
                Some(listing) => load_dir(blobs, &listing)?.into_iter().collect(),
                None => {
                    return Err(GraftError::NotADirectory {
                        mount: mount.to_string(),
                        path: mount.prefix(depth).to_string(),
                        kind: entry.kind.name(),
                    })
                }
            };
            let last = depth + 1 == names.len();
            let next = match children.get(name) {
                Some(e) => Some(e.clone()),
                None if create && !last => Some(Entry::default_dir()),
                None => None,
            };
            levels.push((entry, children));
            match next {
                Some(e) => entry = e,
                None if last => break,
                None => return Ok(None),
            }
        }
        Ok(Some(Spine { levels }))
    }

    /// The mount point's current entry.
    fn mount_entry(&self, mount: &TreePath) -> Option<&Entry> {
        let name = mount.name()?;
        self.levels.last().and_then(|(_, children)| children.get(name))
    }

    /// Stores the spine with `entry` at the mount point; returns the new tree digest.
    fn store(self, blobs: &dyn Blobs, mount: &TreePath, entry: Entry) -> Result<Digest, GraftError> {
        let names = mount.components();
        let mut child = entry;
        for (depth, (dir, mut children)) in self.levels.into_iter().enumerate().rev() {
            children.insert(names[depth].clone(), child);
            let digest = store_dir(blobs, &children)?;
            child = dir.with_kind(Kind::Dir { digest });
        }
        Ok(store_root(blobs, &child)?)
    }
}

/// Rewrites the targets of hard links in the subtree `listing` with `map`, storing only
/// the directories that change; returns the (possibly unchanged) listing digest.
/// `here` is the subtree's path in the tree the links are being moved out of.
fn relink(
    blobs: &dyn Blobs,
    listing: Digest,
    here: &TreePath,
    map: &dyn Fn(&TreePath, &TreePath) -> Result<TreePath, GraftError>,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<Digest>, GraftError> {
    if cancel() {
        return Ok(None);
    }
    let mut children: BTreeMap<String, Entry> = load_dir(blobs, &listing)?.into_iter().collect();
    let mut changed = false;
    for (name, e) in children.iter_mut() {
        let path = here.join(name)?;
        match &e.kind {
            Kind::Dir { digest } => {
                let Some(new) = relink(blobs, *digest, &path, map, cancel)? else {
                    return Ok(None);
                };
                if new != *digest {
                    e.kind = Kind::Dir { digest: new };
                    changed = true;
                }
            }
            Kind::HardLink { target } => {
                e.kind = Kind::HardLink {
                    target: map(&path, target)?,
                };
                changed = true;
            }
            _ => {}
        }
    }
    if changed {
        Ok(Some(store_dir(blobs, &children)?))
    } else {
        Ok(Some(listing))
    }
}

/// The root tree `rootfs` with the boot tree `bootfs` mounted at `mount`. `cancel` is
/// polled between directories of the boot tree.
pub fn graft(
    blobs: &dyn Blobs,
    rootfs: Digest,
    bootfs: Digest,
    mount: &TreePath,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<Digest>, GraftError> {
    let Some(spine) = Spine::read(blobs, rootfs, mount, true)? else {
        // Unreachable: with `create`, only the mount point itself may be missing.
        return Err(GraftError::BadMountPoint {
            path: mount.to_string(),
        });
    };
    let point = match spine.mount_entry(mount) {
        None => Entry::default_dir(),
        Some(e) => match e.dir_digest() {
            None => {
                return Err(GraftError::NotADirectory {
                    mount: mount.to_string(),
                    path: mount.to_string(),
                    kind: e.kind.name(),
                })
            }
            Some(listing) if listing != empty_dir_digest() => {
                let first = load_dir(blobs, &listing)?
                    .into_iter()
                    .next()
                    .map(|(name, _)| name)
                    .unwrap_or_default();
                return Err(GraftError::MountPointNotEmpty {
                    mount: mount.to_string(),
                    first,
                });
            }
            Some(_) => e.clone(),
        },
    };
    let boot = load_root(blobs, &bootfs)?;
    let Some(listing) = boot.dir_digest() else {
        return Err(GraftError::Tree(TreeError::InvalidEntry {
            path: "/".into(),
            reason: "the boot tree's root is not a directory".into(),
        }));
    };
    // Hard-link targets are absolute in the boot tree; below the mount point they gain
    // its path.
    let prefix = |_: &TreePath, target: &TreePath| -> Result<TreePath, GraftError> {
        let mut names: Vec<String> = mount.components().to_vec();
        names.extend(target.components().iter().cloned());
        Ok(TreePath::from_components(&names)?)
    };
    let Some(listing) = relink(blobs, listing, &TreePath::root(), &prefix, cancel)? else {
        return Ok(None);
    };
    let entry = point.with_kind(Kind::Dir { digest: listing });
    spine.store(blobs, mount, entry).map(Some)
}

/// The combined tree `tree` as `(bootfs, rootfs)`: the subtree at `mount` as its own
/// tree, and the rest with an empty directory at `mount`. `None` when cancelled.
pub fn split(
    blobs: &dyn Blobs,
    tree: Digest,
    mount: &TreePath,
    cancel: &dyn Fn() -> bool,
) -> Result<Option<(Digest, Digest)>, GraftError> {
    let missing = || GraftError::MountPointMissing {
        mount: mount.to_string(),
    };
    let spine = match Spine::read(blobs, tree, mount, false) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(missing()),
        // A file or symlink where a parent of the mount point belongs: a layer replaced it.
        Err(GraftError::NotADirectory { kind, .. }) => {
            return Err(GraftError::MountPointReplaced {
                mount: mount.to_string(),
                kind,
            })
        }
        Err(e) => return Err(e),
    };
    let point = spine.mount_entry(mount).ok_or_else(missing)?.clone();
    let Some(listing) = point.dir_digest() else {
        return Err(GraftError::MountPointReplaced {
            mount: mount.to_string(),
            kind: point.kind.name(),
        });
    };
    let strip = |path: &TreePath, target: &TreePath| -> Result<TreePath, GraftError> {
        if !target.starts_with(mount) || target == mount {
            return Err(GraftError::CrossMountLink {
                mount: mount.to_string(),
                path: format!("{mount}{path}"),
                target: target.to_string(),
            });
        }
        Ok(TreePath::from_components(
            &target.components()[mount.components().len()..],
        )?)
    };
    let Some(listing) = relink(blobs, listing, &TreePath::root(), &strip, cancel)? else {
        return Ok(None);
    };
    let bootfs = store_root(blobs, &fat_root_entry(listing))?;
    // The empty listing must be in the store: the new mount point names it.
    let empty = store_dir(blobs, &BTreeMap::new())?;
    let rootfs = spine.store(blobs, mount, point.with_kind(Kind::Dir { digest: empty }))?;
    Ok(Some((bootfs, rootfs)))
}

/// The mount point: the step's own, else the table's.
fn resolve_mount(
    store: &AppStore,
    explicit: &Option<String>,
    table: OutputRef,
) -> Result<TreePath, StepError> {
    let text = match explicit {
        Some(m) => m.clone(),
        None => load_table(store, table)?.boot_mount,
    };
    mount_path(&text).map_err(GraftError::into_step)
}

fn tree_out(digest: Digest) -> OutputRef {
    OutputRef { digest, size: 0 }
}

/// `graft`: input 0 is `unpack` (`bootfs`, `rootfs`, `table`); output `tree`.
///
/// Keyed: the explicit mount point, when given (the table's is an upstream output).
pub struct GraftStep {
    pub store: Arc<AppStore>,
    /// Where the boot partition mounts; `None` takes the table's `boot_mount`.
    pub boot_mount: Option<String>,
    pub boot_mount_location: Option<String>,
}

impl Step for GraftStep {
    fn kind(&self) -> &'static str {
        "graft"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(self
            .boot_mount
            .iter()
            .map(|m| Component::param("boot.mount", m).at(self.boot_mount_location.clone()))
            .collect())
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let bootfs = cx.input(0, "bootfs")?;
        let rootfs = cx.input(0, "rootfs")?;
        let mount = resolve_mount(&self.store, &self.boot_mount, cx.input(0, "table")?)?;
        let cancel = || cx.cancel.load(std::sync::atomic::Ordering::Relaxed);
        let tree = graft(self.store.as_ref(), rootfs.digest, bootfs.digest, &mount, &cancel)
            .map_err(GraftError::into_step)?
            .ok_or(StepError::Cancelled)?;
        cx.check_cancel()?;
        let mut out = Outputs::new();
        out.insert("tree".into(), tree_out(tree));
        Ok(out)
    }
}

/// `split`: input 0 is the combined tree (`tree`, from `overlay`), input 1 is `unpack`
/// (`table`); outputs `bootfs` and `rootfs`.
///
/// Keyed: the explicit mount point, when given, and which part is kept.
///
/// With `part` set, only that output is produced. The compiler plans one split per
/// partition so that each filesystem step consumes exactly the tree it writes: a change
/// that lands on the root partition then leaves the boot side's output, and so `mkfs-fat`,
/// untouched (the engine keys a step on all outputs of the steps it consumes).
pub struct SplitStep {
    pub store: Arc<AppStore>,
    /// Where the boot partition mounts; `None` takes the table's `boot_mount`.
    pub boot_mount: Option<String>,
    pub boot_mount_location: Option<String>,
    /// `Some("bootfs")` or `Some("rootfs")`: produce only that output.
    pub part: Option<&'static str>,
}

impl Step for SplitStep {
    fn kind(&self) -> &'static str {
        "split"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let mut c: Vec<Component> = self
            .boot_mount
            .iter()
            .map(|m| Component::param("boot.mount", m).at(self.boot_mount_location.clone()))
            .collect();
        if let Some(part) = self.part {
            c.push(Component::param("part", part));
        }
        Ok(c)
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = cx.input(0, "tree")?;
        let mount = resolve_mount(&self.store, &self.boot_mount, cx.input(1, "table")?)?;
        let cancel = || cx.cancel.load(std::sync::atomic::Ordering::Relaxed);
        let (bootfs, rootfs) = split(self.store.as_ref(), tree.digest, &mount, &cancel)
            .map_err(GraftError::into_step)?
            .ok_or(StepError::Cancelled)?;
        cx.check_cancel()?;
        let mut out = Outputs::new();
        if self.part != Some("rootfs") {
            out.insert("bootfs".into(), tree_out(bootfs));
        }
        if self.part != Some("bootfs") {
            out.insert("rootfs".into(), tree_out(rootfs));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::testutil::CountingBlobs;
    use crate::tree::{lookup, MemBlobs, TreeBuilder};

    fn p(s: &str) -> TreePath {
        TreePath::parse(s).unwrap()
    }

    fn file(blobs: &dyn Blobs, text: &str, mode: u32) -> Entry {
        let d = blobs.put(text.as_bytes()).unwrap();
        Entry {
            mtime: 1_700_000_000,
            ..Entry::file(d, text.len() as u64, mode)
        }
    }

    fn never() -> bool {
        false
    }

    /// A FAT-like boot tree and a root tree with an empty `/boot/firmware 0700 1:2`.
    fn trees(blobs: &dyn Blobs) -> (Digest, Digest) {
        let mut b = TreeBuilder::new();
        b.insert(TreePath::root(), fat_root_entry(empty_dir_digest()))
            .unwrap();
        b.insert(p("/config.txt"), file(blobs, "arm_64bit=1\n", 0o644))
            .unwrap();
        b.insert(p("/overlays"), Entry::dir(0o755)).unwrap();
        b.insert(p("/overlays/w1.dtbo"), file(blobs, "dtbo", 0o644))
            .unwrap();
        let boot = b.finish(blobs).unwrap();
        let mut r = TreeBuilder::new();
        r.insert(p("/etc"), Entry::dir(0o755)).unwrap();
        r.insert(p("/etc/hostname"), file(blobs, "pi\n", 0o644)).unwrap();
        r.insert(p("/boot"), Entry::dir(0o755)).unwrap();
        let mut mp = Entry::dir(0o700);
        mp.uid = 1;
        mp.gid = 2;
        mp.mtime = 42;
        r.insert(p("/boot/firmware"), mp).unwrap();
        for i in 0..50 {
            r.insert(
                p(&format!("/usr/share/doc/pkg{i}/README")),
                file(blobs, &format!("{i}"), 0o644),
            )
            .unwrap();
        }
        let root = r.finish(blobs).unwrap();
        (boot, root)
    }

    #[test]
    fn split_of_graft_is_the_identity_and_the_mount_point_keeps_its_metadata() {
        let blobs = MemBlobs::new();
        let (boot, root) = trees(&blobs);
        let mount = p("/boot/firmware");
        let tree = graft(&blobs, root, boot, &mount, &never).unwrap().unwrap();
        let cfg = lookup(&blobs, tree, &p("/boot/firmware/config.txt"))
            .unwrap()
            .unwrap();
        assert!(matches!(cfg.kind, Kind::File { size: 12, .. }));
        let mp = lookup(&blobs, tree, &mount).unwrap().unwrap();
        assert_eq!((mp.mode, mp.uid, mp.gid, mp.mtime), (0o700, 1, 2, 42));
        assert_eq!(
            split(&blobs, tree, &mount, &never).unwrap().unwrap(),
            (boot, root)
        );
    }

    #[test]
    fn graft_and_split_touch_only_the_path_to_the_mount_point() {
        let blobs = CountingBlobs::default();
        let (boot, root) = trees(&blobs);
        let mount = p("/boot/firmware");
        blobs.reset();
        let tree = graft(&blobs, root, boot, &mount, &never).unwrap().unwrap();
        // Root blob, `/`, `/boot`, the mount point's listing, the boot root and its two
        // listings (scanned for hard links): nothing of `/usr`.
        assert!(blobs.reads() <= 7, "{} reads", blobs.reads());
        assert!(blobs.writes() <= 3, "{} writes", blobs.writes());
        blobs.reset();
        split(&blobs, tree, &mount, &never).unwrap().unwrap();
        assert!(blobs.reads() <= 6, "{} reads", blobs.reads());
        assert!(blobs.writes() <= 5, "{} writes", blobs.writes());
    }

    #[test]
    fn a_layer_that_adds_under_the_mount_point_lands_in_the_boot_tree() {
        let blobs = MemBlobs::new();
        let (boot, root) = trees(&blobs);
        let mount = p("/boot/firmware");
        let tree = graft(&blobs, root, boot, &mount, &never).unwrap().unwrap();
        let set = crate::tree::layer::Changeset::new(vec![crate::tree::layer::Op::Put {
            path: p("/boot/firmware/ssh"),
            entry: file(&blobs, "", 0o644),
        }]);
        let changed = crate::tree::layer::apply(&blobs, tree, &[set], 0).unwrap();
        let (b2, r2) = split(&blobs, changed, &mount, &never).unwrap().unwrap();
        assert_eq!(r2, root);
        assert!(lookup(&blobs, b2, &p("/ssh")).unwrap().is_some());
        assert!(lookup(&blobs, b2, &p("/config.txt")).unwrap().is_some());
    }

    #[test]
    fn a_mount_point_replaced_by_a_file_is_a_clear_error() {
        let blobs = MemBlobs::new();
        let (boot, root) = trees(&blobs);
        let mount = p("/boot/firmware");
        let tree = graft(&blobs, root, boot, &mount, &never).unwrap().unwrap();
        let set = crate::tree::layer::Changeset::new(vec![
            crate::tree::layer::Op::Remove { path: mount.clone() },
            crate::tree::layer::Op::Put {
                path: mount.clone(),
                entry: Entry::symlink("/mnt"),
            },
        ]);
        let changed = crate::tree::layer::apply(&blobs, tree, &[set], 0).unwrap();
        let e = split(&blobs, changed, &mount, &never).unwrap_err();
        assert!(
            matches!(e, GraftError::MountPointReplaced { kind: "symlink", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("`/boot/firmware` is a symlink"), "{e}");
    }

    #[test]
    fn hard_links_move_with_the_boot_tree_and_may_not_cross_it() {
        let blobs = MemBlobs::new();
        let (boot, root) = trees(&blobs);
        // A boot tree with a link: its target gains the mount point and loses it again.
        let mut b = TreeBuilder::new();
        b.insert(TreePath::root(), fat_root_entry(empty_dir_digest()))
            .unwrap();
        b.insert(p("/a"), file(&blobs, "x", 0o644)).unwrap();
        b.insert(p("/b"), Entry::new(Kind::HardLink { target: p("/a") }, 0o644))
            .unwrap();
        let linked = b.finish(&blobs).unwrap();
        let mount = p("/boot/firmware");
        let tree = graft(&blobs, root, linked, &mount, &never).unwrap().unwrap();
        let e = lookup(&blobs, tree, &p("/boot/firmware/b")).unwrap().unwrap();
        assert_eq!(
            e.kind,
            Kind::HardLink {
                target: p("/boot/firmware/a")
            }
        );
        assert_eq!(
            split(&blobs, tree, &mount, &never).unwrap().unwrap(),
            (linked, root)
        );
        // A link from the boot partition to the root filesystem cannot be split.
        let tree = graft(&blobs, root, boot, &mount, &never).unwrap().unwrap();
        let set = crate::tree::layer::Changeset::new(vec![crate::tree::layer::Op::Put {
            path: p("/boot/firmware/hostname"),
            entry: Entry::new(
                Kind::HardLink {
                    target: p("/etc/hostname"),
                },
                0o644,
            ),
        }]);
        let changed = crate::tree::layer::apply(&blobs, tree, &[set], 0).unwrap();
        let e = split(&blobs, changed, &mount, &never).unwrap_err();
        assert!(matches!(e, GraftError::CrossMountLink { .. }), "{e:?}");
    }

    #[test]
    fn graft_refuses_a_non_empty_mount_point_and_creates_a_missing_one() {
        let blobs = MemBlobs::new();
        let (boot, root) = trees(&blobs);
        let e = graft(&blobs, root, boot, &p("/etc"), &never).unwrap_err();
        assert!(
            matches!(e, GraftError::MountPointNotEmpty { ref first, .. } if first == "hostname"),
            "{e:?}"
        );
        let e = graft(&blobs, root, boot, &p("/etc/hostname/x"), &never).unwrap_err();
        assert!(matches!(e, GraftError::NotADirectory { .. }), "{e:?}");
        let tree = graft(&blobs, root, boot, &p("/mnt/boot"), &never)
            .unwrap()
            .unwrap();
        assert!(lookup(&blobs, tree, &p("/mnt/boot/config.txt"))
            .unwrap()
            .is_some());
        assert!(matches!(mount_path("/"), Err(GraftError::BadMountPoint { .. })));
        assert!(matches!(
            mount_path("boot"),
            Err(GraftError::BadMountPoint { .. })
        ));
        assert!(matches!(
            mount_path("/a/../b"),
            Err(GraftError::BadMountPoint { .. })
        ));
    }

    #[test]
    fn a_missing_mount_point_chain_is_created_in_a_store_without_empty_listings() {
        let blobs = MemBlobs::new();
        let mut b = TreeBuilder::new();
        b.insert(TreePath::root(), fat_root_entry(empty_dir_digest()))
            .unwrap();
        b.insert(p("/config.txt"), file(&blobs, "x", 0o644)).unwrap();
        let boot = b.finish(&blobs).unwrap();
        let mut r = TreeBuilder::new();
        r.insert(p("/etc/hostname"), file(&blobs, "pi\n", 0o644)).unwrap();
        let root = r.finish(&blobs).unwrap();
        assert!(
            blobs.get(&empty_dir_digest()).is_err(),
            "the empty listing is not stored"
        );
        let tree = graft(&blobs, root, boot, &p("/boot/firmware"), &never)
            .unwrap()
            .unwrap();
        let (b2, r2) = split(&blobs, tree, &p("/boot/firmware"), &never)
            .unwrap()
            .unwrap();
        assert_eq!(b2, boot);
        let mp = lookup(&blobs, r2, &p("/boot/firmware")).unwrap().unwrap();
        assert_eq!(mp.dir_digest(), Some(empty_dir_digest()));
        assert!(crate::tree::walk(&blobs, r2).all(|i| i.is_ok()));
    }

    #[test]
    fn a_cancelled_graft_stops() {
        let blobs = MemBlobs::new();
        let (boot, root) = trees(&blobs);
        assert_eq!(
            graft(&blobs, root, boot, &p("/boot/firmware"), &|| true).unwrap(),
            None
        );
    }
}
