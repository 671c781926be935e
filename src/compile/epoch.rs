//! The epoch stage: where an image's only time comes from, decided once per image.
//!
//! In order: the image's `epoch` (from the image, `w4b.yaml`, `W4B_EPOCH` or `--set`), its
//! base's release date (`date:`, or the date in the file name of its URL), or — for a base
//! with neither — the newest modification time in the base's root filesystem, read by a
//! `base-epoch` step (`//bases:<name>#epoch`) that every epoch-using step takes as an
//! input. Never the clock; an image on `scratch` without an `epoch` is an error.
//!
//! The epoch stamps every file, so it must be a time every filesystem the image is written
//! to can hold ([`EpochRange`]): ext4's range for every image, FAT's for a disk image
//! (`format: image`, whose boot partition is FAT) and for an epoch taken from a base's
//! release date (a base is such a disk image; `base-epoch` checks the same for the
//! base's files). Out of range is an error naming the range and where the value was
//! written, never a time the writers would wrap or clamp.

use std::fmt;
use std::sync::Arc;

use w4b_graph::NodeId;

use super::vendor::Vendor;
use super::{loc, CompileError, Compiler};
use crate::defs::{self, LoadedTarget};
use crate::manifest::EpochSource;
use crate::steps::epoch::{BaseEpochStep, Epoch, EpochRange};

/// An image's epoch as planned.
#[derive(Clone, Debug)]
pub enum PlanEpoch {
    /// Known now.
    Fixed { seconds: i64, location: Option<String> },
    /// The output `epoch` of the `base-epoch` step `node`, named `step`.
    FromBase { node: NodeId, step: String },
}

impl PlanEpoch {
    /// The epoch of a step whose other upstream inputs are `deps`: a base's epoch step
    /// becomes its last input. Call it after every other input is in `deps`.
    pub(super) fn for_step(&self, deps: &mut Vec<NodeId>) -> Epoch {
        match self {
            PlanEpoch::Fixed { seconds, location } => Epoch::Fixed {
                seconds: *seconds,
                location: location.clone(),
            },
            PlanEpoch::FromBase { node, step } => {
                deps.push(*node);
                Epoch::FromBase {
                    input: deps.len() - 1,
                    step: step.clone(),
                }
            }
        }
    }
}

/// How node definitions spell the epoch (see [`Epoch`]'s `Display`).
impl fmt::Display for PlanEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanEpoch::Fixed { seconds, .. } => write!(f, "{seconds}"),
            PlanEpoch::FromBase { step, .. } => write!(f, "from {step}"),
        }
    }
}

impl Compiler<'_> {
    /// The epoch of the image `t` on `vendor` (`None`: `scratch`), whose base was unpacked
    /// by `unpack`, and what the manifest says about where it came from.
    pub(super) fn epoch(
        &mut self,
        label: &str,
        t: &LoadedTarget,
        image: &defs::Image,
        vendor: Option<(&Vendor, Option<NodeId>)>,
    ) -> miette::Result<(PlanEpoch, EpochSource)> {
        if let Some(e) = image.epoch {
            let location = loc(t, "epoch");
            let range = match image.output.format {
                defs::Format::Image => EpochRange::Fat,
                defs::Format::Tar => EpochRange::Ext4,
            };
            let seconds = i64::try_from(e)
                .ok()
                .filter(|s| range.contains(*s))
                .ok_or_else(|| CompileError::EpochOutOfRange {
                    label: label.to_owned(),
                    value: e.to_string(),
                    origin: format!(
                        "written at `{}`",
                        location.clone().unwrap_or_else(|| t.label.to_string())
                    ),
                    range: range.describe(),
                    help: format!(
                        "write `epoch:` as seconds since 1970-01-01T00:00:00Z in that range (1700000000 is \
                         2023-11-14T22:13:20Z){}",
                        match range {
                            EpochRange::Fat =>
                                "; a disk image's boot partition is FAT, which holds no other times",
                            EpochRange::Ext4 => "",
                        }
                    ),
                })?;
            return Ok((
                PlanEpoch::Fixed {
                    seconds,
                    location: location.clone(),
                },
                EpochSource::Definition {
                    at: location.unwrap_or_else(|| t.label.to_string()),
                },
            ));
        }
        let Some((v, unpack)) = vendor else {
            return Err(CompileError::NoEpoch {
                label: label.to_owned(),
            }
            .into());
        };
        if v.bootstrap.is_some() {
            // A bootstrapped base's epoch: its `date:`, or its lock's newest release date.
            let (seconds, source) = self.bootstrap_epoch(v)?;
            let location = match &source {
                EpochSource::BaseReleaseDate { at, .. } => Some(at.clone()),
                _ => Some(crate::lockfile::LOCK_FILE.to_owned()),
            };
            return Ok((PlanEpoch::Fixed { seconds, location }, source));
        }
        let Some(unpack) = unpack else {
            return Err(CompileError::NoEpoch {
                label: label.to_owned(),
            }
            .into());
        };
        let base = v.base_label.to_string();
        if let (Some(seconds), Some(date)) = (v.base.epoch(), v.base.date) {
            let location = loc(&v.base_target, "date").or_else(|| loc(&v.base_target, "url"));
            if !EpochRange::Fat.contains(seconds) {
                return Err(CompileError::EpochOutOfRange {
                    label: label.to_owned(),
                    value: date.to_string(),
                    origin: format!(
                        "the release date of `{base}` at `{}`",
                        location.unwrap_or_else(|| base.clone())
                    ),
                    range: EpochRange::Fat.describe(),
                    help:
                        "correct the base's `date:` (or the date in its URL), or give the image an `epoch:`"
                            .into(),
                }
                .into());
            }
            return Ok((
                PlanEpoch::Fixed {
                    seconds,
                    location: location.clone(),
                },
                EpochSource::BaseReleaseDate {
                    base,
                    date: date.to_string(),
                    at: location.unwrap_or_else(|| v.base_label.to_string()),
                },
            ));
        }
        let step = format!("{base}#epoch");
        let node = self.add(
            step.clone(),
            b"base-epoch newest-mtime rootfs",
            Arc::new(BaseEpochStep {
                store: self.store.clone(),
                base: base.clone(),
            }),
            vec![unpack],
        );
        Ok((
            PlanEpoch::FromBase { node, step },
            EpochSource::BaseContent { base },
        ))
    }
}
