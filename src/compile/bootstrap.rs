//! The bootstrap stage: a `kind: base` with `bootstrap:` becomes a lock request of its own
//! (the closure of its package sets with no base, [`LockRequest::bootstrap`]), one `fetch`
//! per locked `.deb` and one `bootstrap` step (`//bases:<name>#bootstrap`) whose `tree` is
//! the root, shared by every image on that base.
//!
//! The base's epoch, when it has no `date:`, is the newest `Date:` of the signed release
//! files its entry was locked against ([`Compiler::bootstrap_epoch`]): it is in
//! `w4b.lock`, so it is known at plan time without a download; it changes only when the
//! lock does (the packages moved, or `w4b lock --update` read newer release files); and
//! it says "the archive as of that day", which is what the root holds.

use std::sync::Arc;

use w4b_graph::NodeId;

use super::packages::{BootstrapLock, LockRequest};
use super::vendor::Vendor;
use super::{loc, CompileError, Compiler};
use crate::defs::{self, Kind, Label, LoadedTarget, Loader, PackageSet, Target};
use crate::lockfile::{self, LOCK_FILE};
use crate::manifest::EpochSource;
use crate::steps::bootstrap::BootstrapStep;
use crate::steps::epoch::Epoch;
use crate::steps::graft::GraftStep;
use crate::steps::layout::{LayoutParams, LayoutStep};

/// The boot partition of a bootstrapped base without `bootstrap.boot_size`: 512 MiB, as
/// Raspberry Pi OS bookworm's.
const DEFAULT_BOOT_SIZE: u64 = 512 << 20;
/// Its root partition without `bootstrap.root_size`, before an image's
/// `partitions.root.headroom` grows it and the first boot grows it to the card: room for
/// the minimal system (~800 MiB) and a hive's packages.
const DEFAULT_ROOT_SIZE: u64 = 2 << 30;

impl Compiler<'_> {
    /// The lock request of a bootstrapped base `base` (loaded as `bt`); adds the sets'
    /// files to `definitions`.
    pub(super) fn bootstrap_request(
        &mut self,
        loader: &Loader,
        bt: &LoadedTarget,
        base: &defs::BaseImage,
        bootstrap: &defs::Bootstrap,
        definitions: &mut std::collections::BTreeMap<String, w4b_cache::Digest>,
    ) -> miette::Result<LockRequest> {
        let base_label = bt.label.to_string();
        let at = loc(bt, "bootstrap.packages")
            .or_else(|| loc(bt, "bootstrap.packages[0]"))
            .or_else(|| loc(bt, "bootstrap"))
            .unwrap_or_else(|| base_label.clone());
        let mut sets: Vec<(Label, PackageSet)> = Vec::new();
        for (i, spanned) in bootstrap.packages.iter().enumerate() {
            let st = loader.load_expecting(spanned, Kind::Packages)?;
            let Target::Packages(set) = &st.target else {
                return Err(CompileError::WrongKind {
                    image: base_label.clone(),
                    key: "bootstrap.packages",
                    target: spanned.value.to_string(),
                    kind: st.target.kind().to_string(),
                    wanted: "packages",
                    at: loc(bt, &format!("bootstrap.packages[{i}]")).unwrap_or_else(|| at.clone()),
                }
                .into());
            };
            definitions.extend(st.files.iter().cloned());
            sets.push((spanned.value.clone(), set.clone()));
        }
        let labels: Vec<Label> = sets.iter().map(|(l, _)| l.clone()).collect();
        let refs: Vec<(&Label, &PackageSet)> = sets.iter().map(|(l, s)| (l, s)).collect();
        let entry = lockfile::bootstrap_entry_name(&labels, base.arch, &bt.label);
        let inputs =
            lockfile::bootstrap_inputs_digest(&refs, base.arch, bootstrap.essential, bootstrap.priority);
        Ok(LockRequest {
            target: base_label,
            at,
            entry,
            inputs,
            sets,
            arch: base.arch,
            base: None,
            bootstrap: Some(BootstrapLock {
                essential: bootstrap.essential,
                priority: bootstrap.priority,
            }),
            on_bootstrap: None,
        })
    }

    /// `raspi-layout` → `graft` on the bootstrapped root `root`: the base's partitions
    /// (`bootfs`, `rootfs`, `table`, as `unpack` gives them for a downloaded base) and the
    /// combined tree the image's layers go on, both shared by every image on the base.
    pub(super) fn bootstrap_layout(&mut self, v: &Vendor, root: NodeId) -> miette::Result<(NodeId, NodeId)> {
        let (epoch, _) = self.bootstrap_epoch(v)?;
        let bootstrap = v.base.bootstrap();
        let params = LayoutParams {
            boot_size: bootstrap.and_then(|b| b.boot_size).unwrap_or(DEFAULT_BOOT_SIZE),
            root_size: bootstrap.and_then(|b| b.root_size).unwrap_or(DEFAULT_ROOT_SIZE),
            epoch,
        };
        let def = format!("raspi-layout {params:?}");
        let layout = Arc::new(LayoutStep {
            store: self.store.clone(),
            params,
            location: loc(&v.base_target, "bootstrap"),
        });
        let layout = self.add(
            format!("{}#layout", v.base_label),
            def.as_bytes(),
            layout,
            vec![root],
        );
        let mount = v.base.boot_mount.to_string();
        let graft = Arc::new(GraftStep {
            store: self.store.clone(),
            boot_mount: Some(mount.clone()),
            boot_mount_location: loc(&v.base_target, "boot_mount").or_else(|| loc(&v.base_target, "release")),
        });
        let def = format!("graft mount={mount}");
        let graft = self.add(
            format!("{}#graft", v.base_label),
            def.as_bytes(),
            graft,
            vec![layout],
        );
        Ok((layout, graft))
    }

    /// [`Self::bootstrap_root`] and the base's packages as the manifest records them.
    pub(super) fn bootstrap_root_and_packages(
        &mut self,
        v: &Vendor,
    ) -> miette::Result<(NodeId, Vec<crate::manifest::Package>)> {
        let Some(req) = v.bootstrap.clone() else {
            return Err(CompileError::NotBootstrapped {
                base: v.base_label.to_string(),
            }
            .into());
        };
        let (deps, debs, recorded, shas) = self.fetch_locked(&req)?;
        let (seconds, _) = self.bootstrap_epoch(v)?;
        let location = match v.base.date {
            Some(_) => loc(&v.base_target, "date"),
            None => Some(LOCK_FILE.to_owned()),
        };
        let step = Arc::new(BootstrapStep {
            store: self.store.clone(),
            entry: req.entry.clone(),
            arch: req.arch,
            debs,
            epoch: Epoch::Fixed { seconds, location },
        });
        let def = format!("bootstrap {} epoch={seconds} {shas}", req.entry);
        let node = self.add(format!("{}#bootstrap", v.base_label), def.as_bytes(), step, deps);
        Ok((node, recorded))
    }

    /// The epoch of a bootstrapped base: its `date:` (midnight UTC), else the newest
    /// `Date:` of the release files its lock entry was resolved against.
    pub(super) fn bootstrap_epoch(&mut self, v: &Vendor) -> miette::Result<(i64, EpochSource)> {
        let base = v.base_label.to_string();
        if let (Some(seconds), Some(date)) = (v.base.epoch(), v.base.date) {
            return Ok((
                seconds,
                EpochSource::BaseReleaseDate {
                    base: base.clone(),
                    date: date.to_string(),
                    at: loc(&v.base_target, "date").unwrap_or(base),
                },
            ));
        }
        let Some(req) = v.bootstrap.clone() else {
            return Err(CompileError::NotBootstrapped { base }.into());
        };
        let entry = self.locked_entry(&req)?;
        let newest = entry
            .repositories
            .iter()
            .filter_map(|r| {
                let text = r.date.as_deref()?;
                Some((
                    crate::apt::release::parse_date(text)?,
                    r.name.clone(),
                    text.to_owned(),
                ))
            })
            .max();
        let Some((seconds, repository, date)) = newest else {
            return Err(CompileError::BootstrapWithoutDate {
                base,
                entry: req.entry.clone(),
                at: loc(&v.base_target, "bootstrap").unwrap_or_default(),
            }
            .into());
        };
        Ok((
            seconds,
            EpochSource::BaseLock {
                base,
                repository,
                date,
            },
        ))
    }
}
