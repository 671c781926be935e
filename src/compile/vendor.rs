//! The base and board stage: an image's base and board loaded and checked against each
//! other, the base image's `fetch` → `unpack` → `graft` chain (shared by every image on
//! that base), and the board's own layer (`config.txt` lines, `i2c-dev`).

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_graph::NodeId;

use super::{loc, CompileError, Compiler, PlanEpoch};
use crate::defs::{self, Kind, Label, LoadedTarget, Loader, Target};
use crate::steps::fetch::{redact_url, FetchStep};
use crate::steps::graft::GraftStep;
use crate::steps::layer::{FileOp, LayerFile};
use crate::steps::unpack::UnpackStep;
use crate::tree::TreePath;

/// An image's base and board, loaded.
pub(super) struct Vendor {
    pub(super) base: defs::BaseImage,
    pub(super) base_label: Label,
    pub(super) base_target: LoadedTarget,
    pub(super) board: defs::Board,
    pub(super) board_label: Label,
    pub(super) board_target: LoadedTarget,
    /// A bootstrapped base's lock request (`None`: a downloaded base).
    pub(super) bootstrap: Option<super::LockRequest>,
}

impl Compiler<'_> {
    /// Loads an image's base and board and checks that they go together.
    pub(super) fn vendor(
        &mut self,
        loader: &Loader,
        t: &LoadedTarget,
        image: &defs::Image,
        base_label: &defs::Spanned<Label>,
        definitions: &mut BTreeMap<String, w4b_cache::Digest>,
    ) -> miette::Result<Vendor> {
        let label = t.label.to_string();
        let bt = loader.load_expecting(base_label, Kind::Base)?;
        let Target::Base(base) = &bt.target else {
            return Err(CompileError::WrongKind {
                image: label,
                key: "base",
                target: base_label.value.to_string(),
                kind: bt.target.kind().to_string(),
                wanted: "base",
                at: loc(t, "base").unwrap_or_default(),
            }
            .into());
        };
        let Some(board_label) = &image.board else {
            return Err(CompileError::NoBoard {
                image: label,
                base: base_label.value.to_string(),
                at: loc(t, "base").unwrap_or_default(),
            }
            .into());
        };
        let brt = loader.load_expecting(board_label, Kind::Board)?;
        let Target::Board(board) = &brt.target else {
            return Err(CompileError::WrongKind {
                image: label,
                key: "board",
                target: board_label.value.to_string(),
                kind: brt.target.kind().to_string(),
                wanted: "board",
                at: loc(t, "board").unwrap_or_default(),
            }
            .into());
        };
        if !board.arch.runs(base.arch) {
            return Err(CompileError::ArchMismatch {
                image: label,
                base: base_label.value.to_string(),
                base_arch: base.arch,
                board: board_label.value.to_string(),
                board_arch: board.arch,
                at: loc(t, "board").unwrap_or_default(),
            }
            .into());
        }
        if !board.kernel.contains_key(&base.arch) {
            return Err(CompileError::NoKernel {
                board: board_label.value.to_string(),
                arch: base.arch,
                at: loc(&brt, "arch").unwrap_or_else(|| board_label.value.to_string()),
            }
            .into());
        }
        definitions.extend(bt.files.iter().cloned());
        definitions.extend(brt.files.iter().cloned());
        let bootstrap = match base.bootstrap() {
            Some(b) => Some(self.bootstrap_request(loader, &bt, base, b, definitions)?),
            None => None,
        };
        Ok(Vendor {
            bootstrap,
            base: base.clone(),
            base_label: base_label.value.clone(),
            base_target: bt.clone(),
            board: board.clone(),
            board_label: board_label.value.clone(),
            board_target: brt.clone(),
        })
    }

    /// `fetch` → `unpack` → `graft`: the base's root tree with its boot partition's tree
    /// at the boot mount point, shared by every image on this base.
    /// A bootstrapped base has no disk image: [`Self::bootstrap_root`] builds its root.
    pub(super) fn base_tree(&mut self, v: &Vendor) -> miette::Result<(NodeId, NodeId)> {
        let Some(download) = v.base.download() else {
            return Err(CompileError::BootstrapDiskImage {
                image: String::new(),
                base: v.base_label.to_string(),
                at: loc(&v.base_target, "bootstrap").unwrap_or_default(),
            }
            .into());
        };
        let sha = crate::steps::fetch::parse_sha256(&download.sha256).map_err(miette::Report::new)?;
        let declared_in = loc(&v.base_target, "sha256").unwrap_or_else(|| v.base_label.to_string());
        let mirrors = self.mirrors();
        let fetch = Arc::new(FetchStep {
            store: self.store.clone(),
            fetcher: self.fetcher()?,
            url: download.url.clone(),
            sha256: sha,
            size: download.size,
            mirrors,
            declared_in,
        });
        let fetch = self.add(
            format!("{}#fetch", v.base_label),
            download.sha256.as_bytes(),
            fetch,
            vec![],
        );
        let unpack = Arc::new(UnpackStep {
            store: self.store.clone(),
            image: redact_url(&download.url).into_owned(),
        });
        let unpack = self.add(format!("{}#unpack", v.base_label), b"unpack", unpack, vec![fetch]);
        let graft = Arc::new(GraftStep {
            store: self.store.clone(),
            boot_mount: Some(v.base.boot_mount.to_string()),
            boot_mount_location: loc(&v.base_target, "boot_mount").or_else(|| loc(&v.base_target, "release")),
        });
        let def = format!("graft mount={}", v.base.boot_mount);
        let graft = self.add(
            format!("{}#graft", v.base_label),
            def.as_bytes(),
            graft,
            vec![unpack],
        );
        Ok((unpack, graft))
    }

    /// The board's own layer: its `config.txt` lines on the boot partition, and the
    /// `i2c-dev` module when I2C is on (so `/dev/i2c-1` exists for sensor code).
    pub(super) fn board_layer(&mut self, v: &Vendor, epoch: &PlanEpoch, name: &str) -> NodeId {
        let mut files = Vec::new();
        let lines = v.board.config_lines();
        if !lines.is_empty() {
            let mut text = format!("\n# Added by w4b for {}\n[all]\n", v.board_label);
            for l in &lines {
                text.push_str(l);
                text.push('\n');
            }
            let path = TreePath::parse(&format!("{}/config.txt", v.base.boot_mount))
                .unwrap_or_else(|_| TreePath::parse("/boot/firmware/config.txt").expect("a valid path"));
            files.push(LayerFile {
                path,
                op: FileOp::Append(text.clone()),
                mode: None,
                uid: 0,
                gid: 0,
            });
            // On a bootstrapped base `config.txt` is `raspi-firmware`'s, rewritten at every
            // kernel upgrade on the Pi; the lines it inserts from this file survive that.
            if v.bootstrap.is_some() {
                files.push(LayerFile {
                    path: TreePath::parse("/etc/default/raspi-firmware-custom").expect("a valid path"),
                    op: FileOp::Append(text.trim_start().to_owned()),
                    mode: Some(0o644),
                    uid: 0,
                    gid: 0,
                });
            }
        }
        if v.board.interfaces.i2c {
            files.push(LayerFile {
                path: TreePath::parse("/etc/modules-load.d/w4b-i2c.conf").expect("a valid path"),
                op: FileOp::Content("# Added by w4b: /dev/i2c-* for I2C sensors\ni2c-dev\n".into()),
                mode: Some(0o644),
                uid: 0,
                gid: 0,
            });
        }
        let locations: BTreeMap<String, String> = v
            .board_target
            .locations
            .iter()
            .map(|(k, val)| (k.clone(), val.to_string()))
            .collect();
        let def = format!("{files:?}|epoch={epoch}");
        self.plain_layer(name.to_owned(), &def, files, locations, BTreeMap::new(), epoch)
    }
}
