//! The epoch stage: where an image's only time comes from, decided once per image.
//!
//! In order: the image's `epoch` (from the image, `w4b.yaml`, `W4B_EPOCH` or `--set`), its
//! base's release date (`date:`, or the date in the file name of its URL), or — for a base
//! with neither — the newest modification time in the base's root filesystem, read by a
//! `base-epoch` step (`//bases:<name>#epoch`) that every epoch-using step takes as an
//! input. Never the clock; an image on `scratch` without an `epoch` is an error.

use std::fmt;
use std::sync::Arc;

use w4b_graph::NodeId;

use super::vendor::Vendor;
use super::{loc, CompileError, Compiler};
use crate::defs::{self, LoadedTarget};
use crate::manifest::EpochSource;
use crate::steps::epoch::{BaseEpochStep, Epoch};

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
        vendor: Option<(&Vendor, NodeId)>,
    ) -> miette::Result<(PlanEpoch, EpochSource)> {
        if let Some(e) = image.epoch {
            let seconds = i64::try_from(e).map_err(|_| CompileError::NoEpoch {
                label: label.to_owned(),
            })?;
            let location = loc(t, "epoch");
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
        let base = v.base_label.to_string();
        if let (Some(seconds), Some(date)) = (v.base.epoch(), v.base.date) {
            let location = loc(&v.base_target, "date").or_else(|| loc(&v.base_target, "url"));
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
