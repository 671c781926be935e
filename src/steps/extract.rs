//! `extract`: a fetched source archive (`.tar`, `.tar.gz`, `.tar.xz`, `.tar.zst`, by
//! magic) as a changeset that places its files under a directory of the image — how the
//! sensor manager's pinned source tarball becomes `/opt/w4b/sensor-manager`.
//!
//! Normalised like every layer: owners root, times the epoch, modes from the archive
//! (permission bits only), regular files, directories and symlinks; anything else
//! (devices, hard links to outside the archive, paths escaping the destination) is an
//! error naming the member. When every member sits under one top-level directory
//! (`project-1.2.3/…`, as release tarballs do), that directory is stripped.
//!
//! Keyed: the destination and the epoch; the archive is an upstream output. That
//! upstream component is recorded with a tree of the archive's members (as placed, relative
//! to the destination), so `why` names the files that differ between two archives.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::tree_error;
use crate::image::{decoder, Compression};
use crate::store::AppStore;
use crate::tree::layer::{Changeset, Op};
use crate::tree::{Blobs, Entry, TreeBuilder, TreePath};

pub struct ExtractStep {
    pub store: Arc<AppStore>,
    /// Where the archive's contents go (`/opt/w4b/sensor-manager`).
    pub dest: String,
    pub epoch: Epoch,
    /// The archive's URL, for messages.
    pub source: String,
}

struct Member {
    path: String,
    kind: MemberKind,
    mode: u32,
}

enum MemberKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

impl ExtractStep {
    fn bad(&self, what: String) -> StepError {
        StepError::msg(format!("the source archive `{}` {what}", self.source))
    }

    /// [`Self::bad`] with the error's whole cause chain (the tar crate wraps the
    /// operating system's or the decoder's error as a source).
    fn bad_because(&self, what: &str, e: &(dyn std::error::Error + 'static)) -> StepError {
        StepError::context(format_args!("the source archive `{}` {what}", self.source), e)
    }

    fn members(&self, r: impl Read) -> Result<Vec<Member>, StepError> {
        let mut archive = tar::Archive::new(r);
        let mut out = Vec::new();
        let entries = archive
            .entries()
            .map_err(|e| self.bad_because("is not a tar archive", &e))?;
        for entry in entries {
            let mut e = entry.map_err(|e| self.bad_because("is damaged", &e))?;
            let raw = e
                .path()
                .map_err(|e| self.bad_because("has a bad member name", &e))?;
            let name = raw.to_string_lossy().into_owned();
            let clean: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
            if clean.contains(&"..") {
                return Err(self.bad(format!("has a member `{name}` that leaves its directory")));
            }
            if clean.is_empty() {
                continue;
            }
            // Only a regular file's mode is used (its executable bits): read it there.
            let mut mode = 0;
            let header_mode = e.header().mode();
            let kind = match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    mode = header_mode.map_err(|err| {
                        self.bad(format!("has a member `{name}` with an unreadable mode: {err}"))
                    })? & 0o7777;
                    let mut bytes = Vec::new();
                    e.read_to_end(&mut bytes)
                        .map_err(|err| self.bad(format!("is damaged at `{name}`: {err}")))?;
                    MemberKind::File(bytes)
                }
                tar::EntryType::Directory => MemberKind::Dir,
                tar::EntryType::Symlink => {
                    let target = e
                        .link_name()
                        .map_err(|err| {
                            self.bad(format!("has a symlink `{name}` with an unreadable target: {err}"))
                        })?
                        .map(|t| t.to_string_lossy().into_owned())
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| self.bad(format!("has a symlink `{name}` without a target")))?;
                    MemberKind::Symlink(target)
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                other => {
                    return Err(self.bad(format!(
                        "has `{name}` of a kind a source tree should not hold ({other:?})"
                    )))
                }
            };
            out.push(Member {
                path: clean.join("/"),
                kind,
                mode,
            });
        }
        Ok(out)
    }
}

impl Step for ExtractStep {
    fn kind(&self) -> &'static str {
        "extract"
    }

    fn version(&self) -> u32 {
        1
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![Component::param("dest", &self.dest), self.epoch.component()])
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let file = cx.input(0, "file")?;
        let reader = self
            .store
            .inner()
            .reader(&file.digest)
            .map_err(|_| StepError::InputUnavailable(file.digest))?;
        let mut buffered = BufReader::with_capacity(1 << 16, reader);
        let head = buffered
            .fill_buf()
            .map_err(|e| self.bad_because("cannot be read", &e))?;
        let compression = Compression::from_magic(head);
        let decoded = decoder(buffered, compression).map_err(|e| self.bad_because("cannot be read", &e))?;
        let mut members = self.members(decoded)?;
        // Strip one common top-level directory.
        let top: Option<String> = members
            .first()
            .map(|m| m.path.split('/').next().unwrap_or("").to_owned());
        if let Some(top) = top {
            let prefix = format!("{top}/");
            let all_under = members
                .iter()
                .all(|m| m.path == top || m.path.starts_with(&prefix));
            let top_is_dir = members
                .iter()
                .any(|m| m.path == top && matches!(m.kind, MemberKind::Dir))
                || members.iter().any(|m| m.path.starts_with(&prefix));
            if all_under && top_is_dir && members.len() > 1 {
                members.retain(|m| m.path != top);
                for m in &mut members {
                    m.path = m.path[prefix.len()..].to_owned();
                }
            }
        }
        members.sort_by(|a, b| a.path.cmp(&b.path));
        let blobs = self.store.as_ref();
        let epoch = self.epoch.resolve(blobs, cx)?;
        let dest = TreePath::parse(&self.dest).map_err(|e| StepError::msg(format!("{}: {e}", self.dest)))?;
        let mut ops = vec![Op::Put {
            path: dest.clone(),
            entry: Entry {
                mtime: epoch,
                ..Entry::dir(0o755)
            },
        }];
        // The same members as a tree of their own (paths relative to the destination, times
        // left at 0): recorded with the archive's digest so `why` names the files that
        // differ between two archives.
        let mut tree = TreeBuilder::new();
        let mut tree_ok = true;
        for m in members {
            cx.check_cancel()?;
            let path = TreePath::parse(&format!("{}/{}", self.dest, m.path))
                .map_err(|e| self.bad(format!("has a member `{}` that is not a valid path: {e}", m.path)))?;
            let mut entry = match m.kind {
                MemberKind::File(bytes) => {
                    let d = blobs.put(&bytes).map_err(tree_error)?;
                    Entry::file(d, bytes.len() as u64, m.mode & 0o755 | 0o644)
                }
                MemberKind::Dir => Entry::dir(0o755),
                MemberKind::Symlink(t) => Entry::symlink(t),
            };
            // The tree describes the archive, not this build: no epoch in it.
            match TreePath::parse(&format!("/{}", m.path)) {
                Ok(rel) => tree.replace(rel, entry.clone()),
                Err(_) => tree_ok = false,
            }
            entry.mtime = epoch;
            ops.push(Op::Put { path, entry });
        }
        let digest = Changeset::new(ops).store(blobs).map_err(tree_error)?;
        // The tree only explains; an archive the changeset accepts but a tree cannot hold
        // (a member below a file) is recorded without one, and `why` says so.
        if tree_ok {
            if let Ok(root) = tree.finish(blobs) {
                cx.upstream_tree(0, "file", root);
            }
        }
        let mut out = Outputs::new();
        out.insert("changeset".into(), OutputRef { digest, size: 0 });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::tree::layer::apply;
    use crate::tree::{lookup, Kind, MemBlobs, TreeBuilder};

    /// A `.tar.gz` of `members` (path, Some(content) for a file / None for a directory)
    /// plus one symlink, as a release tarball lays it out.
    fn tarball(members: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in members {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(text) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(text.len() as u64);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, text.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o700);
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "sm-1.0/current", "sensor_manager").unwrap();
        let raw = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap()
    }

    fn extract(bytes: &[u8]) -> (tempfile::TempDir, Arc<AppStore>, Result<Outputs, StepError>) {
        let (dir, store, out, _) = extract_with_tree(bytes);
        (dir, store, out)
    }

    /// [`extract`], with the tree the step reported for the archive.
    fn extract_with_tree(
        bytes: &[u8],
    ) -> (
        tempfile::TempDir,
        Arc<AppStore>,
        Result<Outputs, StepError>,
        Option<w4b_cache::Digest>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AppStore::open(&dir.path().join("cache"), None, false).unwrap());
        let digest = store.put(bytes).unwrap();
        let mut fetched = Outputs::new();
        fetched.insert(
            "file".into(),
            OutputRef {
                digest,
                size: bytes.len() as u64,
            },
        );
        let step = ExtractStep {
            store: store.clone(),
            dest: "/opt/w4b/sensor-manager".into(),
            epoch: Epoch::fixed(1_700_000_000),
            source: "https://example.org/sm-1.0.tar.gz".into(),
        };
        let cancel = AtomicBool::new(false);
        let progress = |_: u64, _: Option<u64>| {};
        let trees = w4b_graph::InputTrees::default();
        let inputs = [fetched];
        let cx = RunContext {
            name: "//hives:t#sensor-manager",
            inputs: &inputs,
            cache: store.as_ref(),
            cancel: &cancel,
            progress: &progress,
            trees: &trees,
            note: &|_| {},
        };
        let out = step.run(&cx);
        let tree = trees.get(w4b_graph::ComponentKind::Upstream, "in0.file");
        (dir, store, out, tree)
    }

    #[test]
    fn a_release_tarball_lands_under_its_destination_without_its_top_directory() {
        let bytes = tarball(&[
            ("sm-1.0/", None),
            ("sm-1.0/sensor_manager/", None),
            ("sm-1.0/sensor_manager/__main__.py", Some("print('hi')\n")),
            ("sm-1.0/README", Some("read me\n")),
        ]);
        let (_dir, store, out) = extract(&bytes);
        let out = out.unwrap();
        let set = Changeset::load(store.as_ref(), &out["changeset"].digest).unwrap();
        let empty = TreeBuilder::new().finish(store.as_ref()).unwrap();
        let root = apply(store.as_ref(), empty, &[set], 1_700_000_000).unwrap();
        let at = |p: &str| lookup(store.as_ref(), root, &TreePath::parse(p).unwrap()).unwrap();
        let main = at("/opt/w4b/sensor-manager/sensor_manager/__main__.py").expect("the file");
        assert!(matches!(main.kind, Kind::File { size: 12, .. }));
        assert_eq!(main.mode & 0o7777, 0o755);
        assert_eq!((main.uid, main.gid, main.mtime), (0, 0, 1_700_000_000));
        assert!(at("/opt/w4b/sensor-manager/README").is_some());
        assert!(matches!(
            at("/opt/w4b/sensor-manager/current").map(|e| e.kind),
            Some(Kind::Symlink { target }) if target == "sensor_manager"
        ));
        assert!(
            at("/opt/w4b/sensor-manager/sm-1.0").is_none(),
            "the top directory is stripped"
        );
        assert_eq!(
            at("/opt/w4b/sensor-manager/sensor_manager").unwrap().mode & 0o7777,
            0o755
        );
    }

    #[test]
    fn the_archive_is_recorded_as_a_tree_of_its_members_and_two_archives_diff_by_file() {
        let one = tarball(&[
            ("sm-1.0/", None),
            ("sm-1.0/sensor_manager/__main__.py", Some("print('hi')\n")),
            ("sm-1.0/README", Some("read me\n")),
        ]);
        let two = tarball(&[
            ("sm-1.0/", None),
            ("sm-1.0/sensor_manager/__main__.py", Some("print('ho')\n")),
            ("sm-1.0/NEWS", Some("new\n")),
        ]);
        let (_d1, s1, _, t1) = extract_with_tree(&one);
        let (_d2, s2, _, t2) = extract_with_tree(&two);
        let (t1, t2) = (t1.expect("a tree for the archive"), t2.unwrap());
        // Same blobs in one store, as in a real cache.
        let blobs = MemBlobs::new();
        for (store, root) in [(&s1, t1), (&s2, t2)] {
            for item in crate::tree::walk(store.as_ref(), root) {
                let (_, e) = item.unwrap();
                if let Some(d) = e.dir_digest() {
                    blobs.put(&Blobs::get(store.as_ref(), &d).unwrap()).unwrap();
                }
            }
            blobs.put(&Blobs::get(store.as_ref(), &root).unwrap()).unwrap();
        }
        let diff = crate::tree::diff::diff(&blobs, t1, t2).unwrap();
        let shown: Vec<(String, bool, bool)> = diff
            .iter()
            .map(|d| (d.path.to_string(), d.old.is_some(), d.new.is_some()))
            .collect();
        assert_eq!(
            shown,
            [
                ("/NEWS".to_owned(), false, true),
                ("/README".to_owned(), true, false),
                ("/sensor_manager/__main__.py".to_owned(), true, true),
            ],
            "relative to the destination, the top directory stripped, no epoch"
        );
    }

    #[test]
    fn members_leaving_the_destination_and_garbage_are_errors() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        // `append_data` refuses `..`; write the name into the header directly.
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let raw = b.into_inner().unwrap();
        let (_d, _s, out) = extract(&raw);
        let Err(e) = out else {
            panic!("accepted `../escape`")
        };
        assert!(e.to_string().contains("leaves its directory"), "{e}");

        let (_d, _s, out) = extract(b"this is not an archive at all, just text that goes on");
        assert!(out.is_err());
    }

    /// A header's damaged mode or an empty symlink target used to become `0644` or an
    /// empty link silently; both are errors naming the member.
    #[test]
    fn damaged_modes_and_empty_symlink_targets_are_errors() {
        let archive = |edit: &dyn Fn(&mut tar::Header)| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            h.set_mode(0o644);
            h.set_path("app/file").unwrap();
            edit(&mut h);
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let raw = archive(&|h| h.as_old_mut().mode.copy_from_slice(b"zz\0\0\0\0\0\0"));
        let (_d, _s, out) = extract(&raw);
        let e = out.expect_err("a damaged mode is an error");
        assert!(e.to_string().contains("unreadable mode"), "{e}");

        let raw = archive(&|h| {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
        });
        let (_d, _s, out) = extract(&raw);
        let e = out.expect_err("a symlink without a target is an error");
        assert!(e.to_string().contains("without a target"), "{e}");
    }
}
