//! The image stage: an image's base, board, layers and hive layers overlaid into
//! `#rootfs`, gated by the hive checklist, then written as a tar or a disk; a disk's boot
//! test is planned here ([`TestPlan`]) and added to the graph only when asked for
//! (`super::test`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{loc, CompileError, Compiler, Export, ManifestPlan, PlannedTarget, TestPlan};
use crate::defs::{self, Kind, LoadedTarget, Loader, Target};
use crate::hive::load::ResolvedHive;
use crate::steps::hive_check::HiveCheckStep;
use crate::steps::overlay::OverlayStep;
use crate::steps::scratch::ScratchStep;
use crate::steps::tar::TarStep;

impl Compiler<'_> {
    pub(super) fn image(
        &mut self,
        loader: &Loader,
        t: &LoadedTarget,
        image: &defs::Image,
        hive: Option<&ResolvedHive>,
    ) -> miette::Result<PlannedTarget> {
        // A hive builds on its image under its own name: `//hives:north#rootfs`.
        let target_label = hive.map_or_else(|| t.label.clone(), |h| h.label.clone());
        let label = target_label.to_string();
        let step_name = |s: &str| format!("{label}#{s}");
        let mut definitions: BTreeMap<String, w4b_cache::Digest> = t.files.iter().cloned().collect();
        if let Some(h) = hive {
            definitions.extend(h.files.iter().cloned());
        }
        let mut dependencies = Vec::new();
        let mut packages = Vec::new();

        // The base and the board, loaded and checked against each other before anything
        // is planned: an arm64 image for a 32-bit-only Pi is an error now, not at boot.
        let vendor = match &image.base {
            defs::Base::Scratch => None,
            defs::Base::Image(base_label) => {
                Some(self.vendor(loader, t, image, base_label, &mut definitions)?)
            }
        };
        let lock_request =
            self.lock_request(loader, t, &label, image, hive, vendor.as_ref(), &mut definitions)?;
        // The base's own tree first: a base without a release date gives the image its
        // epoch from what it holds.
        let base_tree = match &vendor {
            None => None,
            // A bootstrapped base has no disk image to unpack: its root is built below.
            Some(v) if v.bootstrap.is_some() => None,
            Some(v) => Some(self.base_tree(v)?),
        };
        let (epoch, epoch_source) = self.epoch(
            &label,
            t,
            image,
            vendor.as_ref().map(|v| (v, base_tree.map(|(unpack, _)| unpack))),
        )?;

        let mut deps = Vec::new();
        let mut layer_labels = Vec::new();
        let mut unpack_node = None;
        match (&vendor, base_tree) {
            (None, _) => {
                let step = Arc::new(ScratchStep {
                    store: self.store.clone(),
                    epoch: epoch.for_step(&mut Vec::new()),
                });
                deps.push(self.add(
                    step_name("base"),
                    format!("scratch epoch={epoch}").as_bytes(),
                    step,
                    vec![],
                ));
            }
            (Some(v), base_tree) => {
                let tree = match (base_tree, v.base.download()) {
                    (Some((unpack, tree)), Some(d)) => {
                        dependencies.push((d.url.clone(), d.sha256.clone(), Some("base".to_owned())));
                        unpack_node = Some(unpack);
                        tree
                    }
                    _ => {
                        let (node, base_packages) = self.bootstrap_root_and_packages(v)?;
                        packages.extend(base_packages);
                        if image.output.format == defs::Format::Image {
                            // The disk's partitions: `raspi-layout` makes what `unpack`
                            // makes of a downloaded base, `graft` joins them again.
                            let (layout, tree) = self.bootstrap_layout(v, node)?;
                            unpack_node = Some(layout);
                            tree
                        } else {
                            node
                        }
                    }
                };
                deps.push(tree);
                // Packages first: the board's and the image's layers override what the
                // packages install (their configuration files above all).
                if let Some(req) = &lock_request {
                    let (node, installed) = self.packages(req, tree, &epoch, &step_name("packages"))?;
                    packages.extend(installed);
                    deps.push(node);
                    layer_labels.push(format!("packages({})", req.entry));
                    if let Some(node) = self.apt_sources_layer(req, &epoch, &step_name("apt-sources"))? {
                        deps.push(node);
                        layer_labels.push("apt-sources".to_owned());
                    }
                }
                let board_layer = self.board_layer(v, &epoch, &step_name("board"));
                deps.push(board_layer);
                layer_labels.push(v.board_label.to_string());
            }
        }

        let mut names_used: BTreeMap<String, usize> = BTreeMap::new();
        for l in &image.layers {
            *names_used.entry(l.value.name.clone()).or_default() += 1;
        }
        let mut own_layers = Vec::new();
        for (i, spanned) in image.layers.iter().enumerate() {
            let l = &spanned.value;
            let at = loc(t, &format!("layers[{i}]")).unwrap_or_default();
            if own_layers.contains(&l.to_string()) {
                return Err(CompileError::DuplicateLayer {
                    image: label.clone(),
                    layer: l.to_string(),
                    at,
                }
                .into());
            }
            let lt = loader.load_expecting(spanned, Kind::Layer)?;
            let Target::Layer(layer) = &lt.target else {
                return Err(CompileError::NotALayer {
                    image: label.clone(),
                    layer: l.to_string(),
                    kind: lt.target.kind().to_string(),
                    at,
                }
                .into());
            };
            definitions.extend(lt.files.iter().cloned());
            for f in &layer.files {
                if let defs::FileOp::Fetch { url, sha256, .. } = &f.value.op {
                    dependencies.push((url.clone(), sha256.clone(), Some(f.value.path.to_string())));
                }
            }
            // `#motd`, or `#pkg/motd` when two packages contribute layers named alike.
            let short = if names_used[&l.name] > 1 {
                format!("{}/{}", l.package, l.name)
            } else {
                l.name.clone()
            };
            let node = self.layer(&lt, layer, t, image, &epoch, &step_name(&short))?;
            deps.push(node);
            own_layers.push(l.to_string());
        }
        layer_labels.extend(own_layers);
        if let Some(h) = hive {
            let nodes = self.hive_layers(h, &epoch, &label, &mut dependencies)?;
            deps.extend(nodes);
            layer_labels.push(format!("{label}#modules"));
        }

        let overlay = Arc::new(OverlayStep {
            store: self.store.clone(),
            layers: layer_labels.join(","),
            layers_location: loc(t, "layers").or_else(|| loc(t, "layers[0]")),
            epoch: epoch.for_step(&mut deps),
        });
        let rootfs = self.add(
            step_name("rootfs"),
            layer_labels.join(",").as_bytes(),
            overlay,
            deps,
        );

        // A hive's administrator is made in the combined tree's own account files.
        let rootfs = match hive {
            Some(h) => self.accounts(h, rootfs, &epoch, &label)?,
            None => rootfs,
        };

        let mut gates = Vec::new();
        if hive.is_some() {
            let check = Arc::new(HiveCheckStep {
                store: self.store.clone(),
            });
            gates.push(self.add(step_name("hive-check"), b"hive-check", check, vec![rootfs]));
        }
        let out_name = image.output.file_name(&target_label.name);
        let level_location = loc(t, "output.level").or_else(|| loc(t, "output.compression"));
        let (roots, exports, test) = match image.output.format {
            defs::Format::Tar => {
                let level = match image.output.compression {
                    defs::Compression::None => None,
                    _ => Some(image.output.level),
                };
                let mut tar_deps = vec![rootfs];
                tar_deps.extend(gates.iter().copied());
                let step = Arc::new(TarStep {
                    store: self.store.clone(),
                    epoch: epoch.for_step(&mut tar_deps),
                    level,
                    level_location,
                });
                let def = format!("tar epoch={epoch} level={level:?}");
                let node = self.add(step_name("tar"), def.as_bytes(), step, tar_deps);
                (
                    vec![node],
                    vec![Export {
                        node,
                        output: "archive".into(),
                        file_name: out_name,
                        subject: true,
                        sha256_output: None,
                    }],
                    // A tar archive does not boot.
                    None,
                )
            }
            defs::Format::Image => {
                let (Some(v), Some(unpack)) = (&vendor, unpack_node) else {
                    // The loader rejects `format: image` on `scratch`.
                    return Err(CompileError::NothingToBuild {
                        labels: label.clone(),
                    }
                    .into());
                };
                let d = self.disk(
                    &label,
                    t,
                    image,
                    v,
                    unpack,
                    rootfs,
                    &epoch,
                    &out_name,
                    level_location,
                    gates,
                )?;
                let test = TestPlan::of(image, hive, d.disk, d.gates, &out_name);
                (d.roots, d.exports, Some(test))
            }
        };
        let about = super::About {
            hive: hive.map(|h| (h.config.hive.hive_id.clone(), h.config.hive.version.clone())),
            title: hive
                .map(|h| h.config.hive.metadata.name.clone())
                .or_else(|| image.description.clone()),
            board: vendor.as_ref().map(|v| v.board_label.clone()),
            arch: vendor.as_ref().map(|v| v.board.arch.to_string()),
            base: vendor.as_ref().map(|v| v.base_label.clone()),
        };
        Ok(PlannedTarget {
            label: target_label.clone(),
            roots,
            exports,
            test,
            about,
            manifest: ManifestPlan {
                file_name: format!("{}.manifest.json", target_label.name),
                epoch,
                epoch_source,
                definitions,
                // A URL may carry credentials; the manifest records it without them.
                dependencies: dependencies
                    .into_iter()
                    .map(|(url, sha, name)| (crate::steps::fetch::redact_url(&url).into_owned(), sha, name))
                    .collect(),
                packages,
            },
        })
    }
}
