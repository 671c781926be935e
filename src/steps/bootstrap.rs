//! `bootstrap`: a base's root built from its lock entry's `.deb`s into an empty
//! merged-`/usr` root by the engine in [`crate::install::bootstrap`] (the essential set
//! extracted, then dpkg in a chroot under qemu-user), as mmdebstrap builds one. Its
//! `tree` output takes the place of a downloaded base's root (`graft`'s `tree`).
//!
//! | keyed (besides the version) | deliberately not keyed |
//! |---|---|
//! | the lock entry's name; per package a `deb:NAME` param `VERSION ARCH SHA256` | repository URLs and mirrors (the bytes are pinned) |
//! | every `.deb` (inputs: their BLAKE3) | the scratch directory, thread counts, host paths |
//! | the architecture, the base's epoch (`SOURCE_DATE_EPOCH` of the scripts, mtimes) | the host's qemu version (the target's own dpkg runs) |
//!
//! After dpkg, the step adds what a root without SSH host keys needs when it has an SSH
//! server: `w4b-ssh-host-keys.service`, which makes the device's own keys on its first
//! boot before sshd starts (the install normalisation removed the keys the package's
//! postinst made). Outputs: `tree` (the root) and `packages` (the installed packages in
//! install order, JSON, as the `install` step writes them).

use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::install::{deb_component, LockedDeb};
use crate::defs::Arch;
use crate::install::bootstrap::{bootstrap, BootstrapRequest};
use crate::install::{self, InstallError};
use crate::store::AppStore;
use crate::tree::layer::{apply, Changeset, Op};
use crate::tree::{lookup, Blobs, Entry, TreePath};

/// The unit that makes the SSH host keys on first boot.
pub const SSH_KEYS_UNIT: &str = "/etc/systemd/system/w4b-ssh-host-keys.service";

const SSH_KEYS_UNIT_TEXT: &str = "\
# Added by w4b: the image carries no SSH host keys (every device must have its own), so
# they are made on the device, once, before the SSH server first starts.
[Unit]
Description=Generate this device's SSH host keys
Documentation=man:ssh-keygen(1)
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
After=local-fs.target
Before=ssh.service ssh.socket

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
";

/// Inputs 0..n are the `.deb` files in lock order (each a fetch step's `file`).
pub struct BootstrapStep {
    pub store: Arc<AppStore>,
    /// The lock entry (`//packages:… for arm64 bootstrapping //bases:…`).
    pub entry: String,
    pub arch: Arch,
    pub debs: Vec<LockedDeb>,
    pub epoch: Epoch,
}

impl Step for BootstrapStep {
    fn kind(&self) -> &'static str {
        "bootstrap"
    }
    fn version(&self) -> u32 {
        // 2: raspi-firmware's defaults seeded before its scripts run.
        // 3: the initramfs built once, after the triggers.
        3
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let mut c = vec![
            Component::param("entry", &self.entry),
            Component::param("arch", self.arch.name()),
            self.epoch.component(),
        ];
        c.extend(self.debs.iter().map(deb_component));
        Ok(c)
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let blobs: &dyn Blobs = self.store.as_ref();
        let mut debs = Vec::with_capacity(self.debs.len());
        for i in 0..self.debs.len() {
            debs.push(cx.input(i, "file")?.digest);
        }
        let epoch = self.epoch.resolve(blobs, cx)?;
        let arch = match self.arch {
            Arch::Arm64 => install::Arch::Arm64,
            Arch::Armhf => install::Arch::Armhf,
        };
        let scratch = tempfile::Builder::new()
            .prefix("bootstrap-")
            .tempdir_in(self.store.scratch_path(""))
            .map_err(|e| StepError::context("cannot make a scratch directory in the cache", &e))?;
        let root = scratch.path().join("root");
        let req = BootstrapRequest {
            debs: &debs,
            arch,
            epoch,
            scratch: &root,
        };
        let done = match bootstrap(blobs, &req, cx.cancel) {
            Ok(d) => d,
            Err(InstallError::Cancelled) => return Err(StepError::Cancelled),
            Err(InstallError::Tree(e)) => return Err(super::tree_error(e)),
            Err(e) => return Err(StepError::diag(e)),
        };
        let tree = first_boot_files(blobs, done.installed.tree, epoch).map_err(super::tree_error)?;
        let report = serde_json::to_vec(&done.installed.packages)
            .map_err(|e| StepError::msg(format!("cannot serialise the package list: {e}")))?;
        let report_digest = blobs.put(&report).map_err(super::tree_error)?;
        let mut out = Outputs::new();
        out.insert(
            "tree".into(),
            OutputRef {
                digest: tree,
                size: 0,
            },
        );
        out.insert(
            "packages".into(),
            OutputRef {
                digest: report_digest,
                size: report.len() as u64,
            },
        );
        Ok(out)
    }
}

/// The root with [`SSH_KEYS_UNIT`] enabled when it has an SSH server (`/usr/sbin/sshd`).
pub fn first_boot_files(
    blobs: &dyn Blobs,
    root: w4b_cache::Digest,
    epoch: i64,
) -> Result<w4b_cache::Digest, crate::tree::TreeError> {
    let path = |p: &str| TreePath::parse(p);
    if lookup(blobs, root, &path("/usr/sbin/sshd")?)?.is_none() {
        return Ok(root);
    }
    let text = blobs.put(SSH_KEYS_UNIT_TEXT.as_bytes())?;
    let stamp = |mut e: Entry| {
        e.mtime = epoch;
        e
    };
    let mut ops = vec![Op::Put {
        path: path(SSH_KEYS_UNIT)?,
        entry: stamp(Entry::file(text, SSH_KEYS_UNIT_TEXT.len() as u64, 0o644)),
    }];
    for wants in ["multi-user.target.wants", "ssh.service.wants"] {
        ops.push(Op::Put {
            path: path(&format!("/etc/systemd/system/{wants}"))?,
            entry: stamp(Entry::dir(0o755)),
        });
        ops.push(Op::Put {
            path: path(&format!("/etc/systemd/system/{wants}/w4b-ssh-host-keys.service"))?,
            entry: stamp(Entry::symlink(SSH_KEYS_UNIT)),
        });
    }
    apply(blobs, root, &[Changeset::new(ops)], epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Kind, MemBlobs, TreeBuilder};

    #[test]
    fn the_host_key_unit_is_added_only_with_an_ssh_server() {
        let blobs = MemBlobs::new();
        let p = |s: &str| TreePath::parse(s).unwrap();
        let empty = TreeBuilder::new().finish(&blobs).unwrap();
        assert_eq!(first_boot_files(&blobs, empty, 1).unwrap(), empty);
        let mut b = TreeBuilder::new();
        let sshd = blobs.put(b"ELF").unwrap();
        b.insert(p("/usr/sbin/sshd"), Entry::file(sshd, 3, 0o755))
            .unwrap();
        let with = b.finish(&blobs).unwrap();
        let out = first_boot_files(&blobs, with, 1_700_000_000).unwrap();
        let unit = lookup(&blobs, out, &p(SSH_KEYS_UNIT)).unwrap().unwrap();
        let Kind::File { digest, .. } = unit.kind else {
            panic!()
        };
        let text = String::from_utf8(blobs.get(&digest).unwrap()).unwrap();
        assert!(text.contains("ExecStart=/usr/bin/ssh-keygen -A"));
        assert!(text.contains("ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key"));
        assert_eq!(unit.mtime, 1_700_000_000);
        let link = lookup(
            &blobs,
            out,
            &p("/etc/systemd/system/multi-user.target.wants/w4b-ssh-host-keys.service"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            link.kind,
            Kind::Symlink {
                target: SSH_KEYS_UNIT.into()
            }
        );
    }
}
