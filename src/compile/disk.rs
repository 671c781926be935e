//! The disk stage: the finished tree split back into the base's partitions, each
//! written as a filesystem, assembled into a disk, validated and compressed.

use std::sync::Arc;

use w4b_graph::NodeId;

use super::error::CompileError;
use super::vendor::Vendor;
use super::{loc, Compiler, Export, PlanEpoch};
use crate::defs::{self, LoadedTarget};
use crate::steps::compress::{CompressStep, ImageCodec};
use crate::steps::disk::DiskStep;
use crate::steps::graft::SplitStep;
use crate::steps::mkfs::{MkfsExt4Step, MkfsFatStep, RootSize};
use crate::steps::validate::ValidateStep;
use crate::validate::BoardCheck;

impl Compiler<'_> {
    /// `split` → `mkfs-fat` + `mkfs-ext4` → `disk` → `validate` → `compress`: the tree
    /// back into the base's two partitions, checked, and written out.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn disk(
        &mut self,
        label: &str,
        t: &LoadedTarget,
        image: &defs::Image,
        v: &Vendor,
        unpack: NodeId,
        tree: NodeId,
        epoch: &PlanEpoch,
        out_name: &str,
        level_location: Option<String>,
        gates: Vec<NodeId>,
    ) -> miette::Result<DiskPlan> {
        let step_name = |s: &str| format!("{label}#{s}");
        let mount = v.base.boot_mount.to_string();
        let mount_location = loc(&v.base_target, "boot_mount").or_else(|| loc(&v.base_target, "release"));

        // One split per partition (see `SplitStep::part`): a change on one side leaves the
        // other side's filesystem step cached.
        let mut split_for = |part: &'static str| {
            let step = Arc::new(SplitStep {
                store: self.store.clone(),
                boot_mount: Some(mount.clone()),
                boot_mount_location: mount_location.clone(),
                part: Some(part),
            });
            self.add(
                step_name(&format!("split.{part}")),
                format!("split {mount} {part}").as_bytes(),
                step,
                vec![tree, unpack],
            )
        };
        let split_boot = split_for("bootfs");
        let split_root = split_for("rootfs");

        let fat = Arc::new(MkfsFatStep {
            store: self.store.clone(),
            size: None,
            size_location: None,
            label: None,
            label_location: None,
            volume_id: None,
            volume_id_location: None,
        });
        let fat = self.add(step_name("bootfs"), b"mkfs-fat", fat, vec![split_boot, unpack]);

        let size = match image.partitions.root_headroom {
            None => RootSize::Base,
            Some(headroom) => RootSize::Grow { headroom },
        };
        let mut ext4_deps = vec![split_root, unpack];
        let ext4 = Arc::new(MkfsExt4Step {
            store: self.store.clone(),
            epoch: epoch.for_step(&mut ext4_deps),
            size,
            size_location: loc(t, "partitions.root.headroom"),
            verify_memos: self.verify_memos,
        });
        let def = format!("mkfs-ext4 epoch={epoch} size={}", size.key());
        let ext4 = self.add(step_name("rootfs.ext4"), def.as_bytes(), ext4, ext4_deps);

        let disk = Arc::new(DiskStep {
            store: self.store.clone(),
        });
        let disk = self.add(step_name("disk"), b"disk", disk, vec![unpack, fat, ext4]);

        let board = BoardCheck {
            kernels: v.board.kernel.get(&v.base.arch).cloned().into_iter().collect(),
            device_trees: v.board.device_trees.clone(),
        };
        let def = format!("validate {board:?} {:?}", v.board.partition_table);
        let validate = Arc::new(ValidateStep {
            store: self.store.clone(),
            board,
            partition_table: v.board.partition_table,
            board_label: v.board_label.to_string(),
            board_location: loc(&v.board_target, &format!("kernel.{}", v.base.arch))
                .or_else(|| loc(&v.board_target, "device_trees[0]"))
                .or_else(|| Some(v.board_label.to_string())),
        });
        let validate = self.add(step_name("validate"), def.as_bytes(), validate, vec![disk]);

        let codec = image_codec(&image.output, &t.label.to_string(), level_location.as_deref())
            .map_err(|e| miette::Report::new(*e))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let compress = Arc::new(CompressStep {
            store: self.store.clone(),
            codec,
            codec_location: level_location,
            threads,
            span_chunks: codec.default_span_chunks(),
            file_name: out_name.to_owned(),
            file_name_location: Some(t.label.to_string()),
            verify_memos: self.verify_memos,
        });
        let def = format!("compress {} {out_name}", codec.key());
        // `validate` is an input so that nothing unchecked is ever compressed or exported.
        let mut compress_deps = vec![disk, validate];
        compress_deps.extend(gates.iter().copied());
        let compress = self.add(step_name("compress"), def.as_bytes(), compress, compress_deps);
        let exports = vec![
            Export {
                node: compress,
                output: "image".into(),
                file_name: out_name.to_owned(),
                subject: true,
                sha256_output: Some("sha256".into()),
            },
            Export {
                node: compress,
                output: "sha256".into(),
                file_name: format!("{out_name}.sha256"),
                subject: false,
                sha256_output: None,
            },
            Export {
                node: compress,
                output: "bmap".into(),
                file_name: format!("{}.bmap", label.rsplit(':').next().unwrap_or(label)),
                subject: true,
                sha256_output: None,
            },
        ];
        let mut test_gates = vec![validate];
        test_gates.extend(gates);
        Ok(DiskPlan {
            roots: vec![compress],
            exports,
            disk,
            gates: test_gates,
        })
    }
}

/// The disk stage's steps as the rest of the compile needs them.
pub(super) struct DiskPlan {
    pub roots: Vec<NodeId>,
    pub exports: Vec<Export>,
    /// The raw disk (`disk`), which a boot test boots.
    pub disk: NodeId,
    /// What must pass before anything boots it: `validate`, and a hive's `hive-check`.
    pub gates: Vec<NodeId>,
}

/// The codec of an image's `output`. The loader already bounds `output.level` per
/// compression; a level outside the codec's range here (an `Output` built some other way)
/// is an error naming `output.level`, never a quietly substituted default, because the
/// level is part of the `compress` step's key.
fn image_codec(
    output: &defs::Output,
    label: &str,
    at: Option<&str>,
) -> Result<ImageCodec, Box<CompileError>> {
    let bad = |codec, range| {
        Box::new(CompileError::BadLevel {
            label: label.to_owned(),
            codec,
            level: output.level,
            range,
            at: at.map_or_else(
                || "`output.level`".to_owned(),
                |a| format!("`output.level` at {a}"),
            ),
        })
    };
    let in_range = |range: std::ops::RangeInclusive<u32>, codec, text| {
        u32::try_from(output.level)
            .ok()
            .filter(|l| range.contains(l))
            .ok_or_else(|| bad(codec, text))
    };
    Ok(match output.compression {
        defs::Compression::Zstd if (1..=22).contains(&output.level) => {
            ImageCodec::Zstd { level: output.level }
        }
        defs::Compression::Zstd => return Err(bad("zstd", "1 to 22")),
        defs::Compression::Xz => ImageCodec::Xz {
            level: in_range(0..=9, "xz", "0 to 9")?,
        },
        defs::Compression::Gz => ImageCodec::Gzip {
            level: in_range(1..=9, "gz", "1 to 9")?,
        },
        defs::Compression::None => ImageCodec::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(compression: defs::Compression, level: i32) -> defs::Output {
        defs::Output {
            format: defs::Format::Image,
            compression,
            level,
        }
    }

    #[test]
    fn levels_in_range_become_codecs() {
        use defs::Compression::{Gz, Xz, Zstd};
        assert_eq!(
            image_codec(&output(Xz, 0), "//i:a", None).unwrap(),
            ImageCodec::Xz { level: 0 }
        );
        assert_eq!(
            image_codec(&output(Gz, 9), "//i:a", None).unwrap(),
            ImageCodec::Gzip { level: 9 }
        );
        assert_eq!(
            image_codec(&output(Zstd, 19), "//i:a", None).unwrap(),
            ImageCodec::Zstd { level: 19 }
        );
        assert_eq!(
            image_codec(&output(defs::Compression::None, 0), "//i:a", None).unwrap(),
            ImageCodec::None
        );
    }

    /// Regression: an xz or gz level that did not fit a `u32` used to become 6 silently,
    /// so two different definitions shared a `compress` key.
    #[test]
    fn out_of_range_levels_are_errors_naming_output_level() {
        use defs::Compression::{Gz, Xz, Zstd};
        for (c, level) in [(Xz, -1), (Xz, 10), (Gz, 0), (Gz, i32::MIN), (Zstd, 0), (Zstd, 23)] {
            let err = image_codec(
                &output(c, level),
                "//images:edge",
                Some("defs/images/edge.yaml:4:10"),
            )
            .expect_err("out of range");
            assert!(
                matches!(*err, CompileError::BadLevel { level: l, .. } if l == level),
                "{err:?}"
            );
            let help = miette::Diagnostic::help(&*err)
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("`output.level` at defs/images/edge.yaml:4:10"),
                "{help}"
            );
            assert!(err.to_string().contains("//images:edge"), "{err}");
        }
    }
}
