//! `install`: a lock entry's `.deb`s installed into the base's root tree at build time, for
//! the image's architecture, by the engine in [`crate::install`] (dpkg in a chroot under
//! qemu-user, maintainer scripts included), normalised into a `changeset` that the
//! `overlay` step applies before the board's and the image's layers.
//!
//! | keyed (besides the version) | deliberately not keyed |
//! |---|---|
//! | the lock entry's name; per package a `deb:NAME` param `VERSION ARCH SHA256` ([`deb_component`]) | repository URLs and mirrors (the bytes are pinned) |
//! | the base tree and every `.deb` (inputs: their BLAKE3) | the scratch directory, thread counts, host paths |
//! | the architecture, the epoch (`SOURCE_DATE_EPOCH` of the scripts, mtimes) | the host's qemu and dpkg versions (the target's own dpkg runs) |
//!
//! Besides `changeset`, the step writes `packages`: the dpkg status of what it installed
//! (name, version, architecture), a small JSON blob the manifest and `w4b why` read.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use crate::defs::Arch;
use crate::install::{self, Deb, InstallError, Request};
use crate::store::AppStore;
use crate::tree::Blobs;

/// One locked package, as the step is keyed by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedDeb {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    /// Where the lock pins it (`w4b.lock:12:9`), for `w4b why`; not keyed.
    #[serde(skip)]
    pub location: Option<String>,
}

/// The prefix of a package's component name: `deb:postgresql-15`.
const DEB_PREFIX: &str = "deb:";

/// A package as the step's key holds it: the param `deb:NAME` with the value
/// `VERSION ARCH SHA256` (Debian names, versions and architectures hold no spaces), at its
/// line in `w4b.lock`. Keyed by the name, so a version bump is one changed component that
/// `w4b why` reads back with [`parse_deb_component`].
pub fn deb_component(d: &LockedDeb) -> Component {
    Component::param(
        format!("{DEB_PREFIX}{}", d.name),
        format!("{} {} {}", d.version, d.architecture, d.sha256),
    )
    .at(d.location.clone())
}

/// The package a key component names, if it is one [`deb_component`] wrote (its
/// `location` is left empty: the caller has the record's).
pub fn parse_deb_component(kind: &str, name: &str, value: &str) -> Option<LockedDeb> {
    if kind != "param" {
        return None;
    }
    let name = name.strip_prefix(DEB_PREFIX)?;
    let mut fields = value.split(' ');
    let (version, architecture, sha256) = (fields.next()?, fields.next()?, fields.next()?);
    if name.is_empty()
        || version.is_empty()
        || architecture.is_empty()
        || sha256.is_empty()
        || fields.next().is_some()
    {
        return None;
    }
    Some(LockedDeb {
        name: name.to_owned(),
        version: version.to_owned(),
        architecture: architecture.to_owned(),
        sha256: sha256.to_owned(),
        location: None,
    })
}

/// Input 0 is the base `tree`, inputs 1..=n the `.deb` files in lock order (each a fetch
/// step's `file`), then the base's epoch when it is read from the base.
pub struct InstallStep {
    pub store: Arc<AppStore>,
    /// The lock entry (`//packages:hive for arm64 on //bases:…`).
    pub entry: String,
    pub arch: Arch,
    pub debs: Vec<LockedDeb>,
    pub epoch: Epoch,
}

impl Step for InstallStep {
    fn kind(&self) -> &'static str {
        "install"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let mut c = vec![
            Component::param("entry", &self.entry),
            Component::param("arch", self.arch.name()),
            self.epoch.component(),
        ];
        // One component per package, so `w4b why` names the package that moved.
        c.extend(self.debs.iter().map(deb_component));
        Ok(c)
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let blobs: &dyn Blobs = self.store.as_ref();
        let base = cx.input(0, "tree")?;
        let mut debs = Vec::with_capacity(self.debs.len());
        for i in 0..self.debs.len() {
            debs.push(Deb::Blob(cx.input(i + 1, "file")?.digest));
        }
        let epoch = self.epoch.resolve(blobs, cx)?;
        let arch = match self.arch {
            Arch::Arm64 => install::Arch::Arm64,
            Arch::Armhf => install::Arch::Armhf,
        };
        let scratch = tempfile::Builder::new()
            .prefix("install-")
            .tempdir_in(self.store.scratch_path(""))
            .map_err(|e| StepError::context("cannot make a scratch directory in the cache", &e))?;
        let root = scratch.path().join("root");
        let req = Request {
            base: base.digest,
            debs: &debs,
            arch,
            epoch,
            scratch: &root,
        };
        let installed = match install::install(blobs, &req, cx.cancel) {
            Ok(i) => i,
            Err(InstallError::Cancelled) => return Err(StepError::Cancelled),
            Err(e) => return Err(StepError::diag(e)),
        };
        let report = serde_json::to_vec(&installed.packages)
            .map_err(|e| StepError::msg(format!("cannot serialise the package list: {e}")))?;
        let report_digest = blobs.put(&report).map_err(super::tree_error)?;
        let mut out = Outputs::new();
        out.insert(
            "changeset".into(),
            OutputRef {
                digest: installed.changeset_digest,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_component_reads_back_as_the_package() {
        let deb = LockedDeb {
            name: "postgresql-15".into(),
            version: "15.10-0+deb12u1".into(),
            architecture: "arm64".into(),
            sha256: "ab".repeat(32),
            location: Some("w4b.lock:12:9".into()),
        };
        let c = deb_component(&deb);
        assert_eq!(c.name, "deb:postgresql-15");
        assert_eq!(c.location.as_deref(), Some("w4b.lock:12:9"));
        let back = parse_deb_component(c.kind.as_str(), &c.name, &c.value).unwrap();
        assert_eq!(
            back,
            LockedDeb {
                location: None,
                ..deb
            }
        );
        for (kind, name, value) in [
            ("input", "deb:x", "1 all 00"),
            ("param", "entry", "1 all 00"),
            ("param", "deb:", "1 all 00"),
            ("param", "deb:x", "1 all"),
            ("param", "deb:x", "1 all 00 extra"),
            ("param", "deb:x", "1  all 00"),
        ] {
            assert_eq!(parse_deb_component(kind, name, value), None, "{name} = {value:?}");
        }
    }
}
