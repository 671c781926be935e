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
//! Keyed: the destination and the epoch; the archive is an upstream output.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::key::ComponentKind;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::tree_error;
use crate::image::{decoder, Compression};
use crate::store::AppStore;
use crate::tree::layer::{Changeset, Op};
use crate::tree::{Blobs, Entry, TreePath};

pub struct ExtractStep {
    pub store: Arc<AppStore>,
    /// Where the archive's contents go (`/opt/w4b/sensor-manager`).
    pub dest: String,
    pub epoch: i64,
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

    fn members(&self, r: impl Read) -> Result<Vec<Member>, StepError> {
        let mut archive = tar::Archive::new(r);
        let mut out = Vec::new();
        let entries = archive
            .entries()
            .map_err(|e| self.bad(format!("is not a tar archive: {e}")))?;
        for entry in entries {
            let mut e = entry.map_err(|e| self.bad(format!("is damaged: {e}")))?;
            let raw = e
                .path()
                .map_err(|e| self.bad(format!("has a bad member name: {e}")))?;
            let name = raw.to_string_lossy().into_owned();
            let clean: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
            if clean.contains(&"..") {
                return Err(self.bad(format!("has a member `{name}` that leaves its directory")));
            }
            if clean.is_empty() {
                continue;
            }
            let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
            let kind = match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut bytes = Vec::new();
                    e.read_to_end(&mut bytes)
                        .map_err(|err| self.bad(format!("is damaged at `{name}`: {err}")))?;
                    MemberKind::File(bytes)
                }
                tar::EntryType::Directory => MemberKind::Dir,
                tar::EntryType::Symlink => {
                    let target = e
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default();
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
        Ok(vec![
            Component::param("dest", &self.dest),
            Component::new(ComponentKind::Epoch, "epoch", self.epoch.to_string()),
        ])
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
            .map_err(|e| self.bad(format!("cannot be read: {e}")))?;
        let compression = Compression::from_magic(head);
        let decoded = decoder(buffered, compression).map_err(|e| self.bad(format!("cannot be read: {e}")))?;
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
        let dest = TreePath::parse(&self.dest).map_err(|e| StepError::msg(format!("{}: {e}", self.dest)))?;
        let mut ops = vec![Op::Put {
            path: dest.clone(),
            entry: Entry {
                mtime: self.epoch,
                ..Entry::dir(0o755)
            },
        }];
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
            entry.mtime = self.epoch;
            ops.push(Op::Put { path, entry });
        }
        let digest = Changeset::new(ops).store(blobs).map_err(tree_error)?;
        let mut out = Outputs::new();
        out.insert("changeset".into(), OutputRef { digest, size: 0 });
        Ok(out)
    }
}
