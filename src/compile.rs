//! Compiles loaded targets into one step graph.
//!
//! An image becomes `#base` (the starting tree), one step per layer (`#<layer name>`),
//! `#rootfs` (the overlay of the layers on the base, in order), and an output step
//! (`#tar`). A layer's `fetch` entries add `fetch` steps in front of it. Node identities
//! are digests of each step's typed definition and its inputs' identities, so a layer
//! used unchanged by several images is one shared step.

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_graph::graph::identity;
use w4b_graph::{Graph, NodeId, Step};

use crate::defs::{self, Kind, Label, LoadedTarget, Loader, Target, Workspace};
use crate::hive::load::ResolvedHive;
use crate::steps::accounts::AccountsStep;
use crate::steps::compress::{CompressStep, ImageCodec};
use crate::steps::disk::DiskStep;
use crate::steps::extract::ExtractStep;
use crate::steps::fetch::{FetchConfig, FetchStep, Fetcher};
use crate::steps::firstboot::FirstbootStep;
use crate::steps::graft::{GraftStep, SplitStep};
use crate::steps::hive_check::HiveCheckStep;
use crate::steps::layer::{FileOp, LayerFile, LayerStep};
use crate::steps::mkfs::{MkfsExt4Step, MkfsFatStep, RootSize};
use crate::steps::module::ModuleStep;
use crate::steps::overlay::OverlayStep;
use crate::steps::scratch::ScratchStep;
use crate::steps::tar::TarStep;
use crate::steps::unpack::UnpackStep;
use crate::steps::validate::ValidateStep;
use crate::store::AppStore;
use crate::tree::TreePath;
use crate::validate::BoardCheck;

pub struct Plan {
    pub graph: Graph,
    pub targets: Vec<PlannedTarget>,
}

pub struct PlannedTarget {
    pub label: Label,
    /// The steps whose completion means the target is built.
    pub roots: Vec<NodeId>,
    pub exports: Vec<Export>,
    pub manifest: ManifestPlan,
}

/// An output copied into `--out` after a successful build.
pub struct Export {
    pub node: NodeId,
    pub output: String,
    pub file_name: String,
    /// Whether the manifest lists it as a subject (checksum files are not).
    pub subject: bool,
    /// An output of the same step holding this file's `sha256sum` line, so the manifest
    /// need not hash a large image again.
    pub sha256_output: Option<String>,
}

/// What the build needs, besides the results, to write `<name>.manifest.json`.
pub struct ManifestPlan {
    pub file_name: String,
    pub epoch: i64,
    /// Every definition file that contributed (workspace-relative path, BLAKE3), sorted.
    pub definitions: BTreeMap<String, w4b_cache::Digest>,
    /// The base image and fetched sources: (URI, sha256 hex, name).
    pub dependencies: Vec<(String, String, Option<String>)>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CompileError {
    #[error("`{label}` is a {kind} target; only images can be built")]
    #[diagnostic(
        code(w4b::compile::not_buildable),
        help(
            "build an image that uses it, e.g. `w4b build //images/...`; `w4b ls` shows every target's kind"
        )
    )]
    NotBuildable { label: String, kind: String },

    #[error("nothing to build: no image among {labels}")]
    #[diagnostic(
        code(w4b::compile::nothing_to_build),
        help("`w4b ls` shows every target's kind; images are buildable")
    )]
    NothingToBuild { labels: String },

    #[error("`{label}` has no epoch")]
    #[diagnostic(
        code(w4b::compile::no_epoch),
        help("add `epoch: <seconds since 1970>` to the image (or to `w4b.yaml` for every target); it is the only time the build sees")
    )]
    NoEpoch { label: String },

    #[error("layer `{layer}` appears twice in `{image}`")]
    #[diagnostic(
        code(w4b::compile::duplicate_layer),
        help("list each layer once; order matters")
    )]
    DuplicateLayer {
        image: String,
        layer: String,
        at: String,
    },

    #[error("`{layer}` (used by `{image}` at {at}) is a {kind} target, not a layer")]
    #[diagnostic(
        code(w4b::compile::not_a_layer),
        help("`layers:` lists labels of `kind: layer` targets")
    )]
    NotALayer {
        image: String,
        layer: String,
        kind: String,
        at: String,
    },

    #[error("`{target}` (the `{key}` of `{image}` at {at}) is a {kind} target, not a {wanted}")]
    #[diagnostic(
        code(w4b::compile::wrong_kind),
        help("`base:` names a `kind: base` target (or `scratch`), `board:` a `kind: board` target; `w4b ls` shows every target's kind")
    )]
    WrongKind {
        image: String,
        key: &'static str,
        target: String,
        kind: String,
        wanted: &'static str,
        at: String,
    },

    #[error("`{image}` starts from the disk image `{base}` but names no board (at {at})")]
    #[diagnostic(
        code(w4b::compile::no_board),
        help("add `board: //boards:pi4` (or pi3, pi5, zero2w, cm4): the board decides config.txt, the kernel and the checks")
    )]
    NoBoard { image: String, base: String, at: String },

    #[error("`{board}` cannot run `{base}`: the base is {base_arch}, the board runs only {board_arch} (in `{image}` at {at})")]
    #[diagnostic(
        code(w4b::compile::arch_mismatch),
        help("use a {board_arch} base (e.g. `//bases:raspios-bookworm-armhf-lite`), or a board that runs {base_arch} (pi3, pi4, pi5, zero2w, cm4)")
    )]
    ArchMismatch {
        image: String,
        base: String,
        base_arch: defs::Arch,
        board: String,
        board_arch: defs::Arch,
        at: String,
    },

    #[error("`{board}` names no kernel for {arch} (at {at})")]
    #[diagnostic(
        code(w4b::compile::no_kernel),
        help("add the kernel file its firmware loads, e.g. `kernel: {{arm64: kernel8.img, armhf: kernel7l.img}}`")
    )]
    NoKernel {
        board: String,
        arch: defs::Arch,
        at: String,
    },

    #[error("cannot start the downloader")]
    #[diagnostic(code(w4b::compile::downloader))]
    Fetcher(#[source] crate::steps::fetch::FetchError),
}

/// An image's base and board, loaded.
struct Vendor {
    base: defs::BaseImage,
    base_label: Label,
    base_target: LoadedTarget,
    board: defs::Board,
    board_label: Label,
    board_target: LoadedTarget,
}

struct Compiler<'a> {
    ws: &'a Workspace,
    store: &'a Arc<AppStore>,
    graph: Graph,
    fetcher: Option<Arc<Fetcher>>,
    /// The old image generator's `W4B_DOWNLOAD_SERVER`: a mirror of the Raspberry Pi
    /// download servers, tried before them.
    download_server: Option<String>,
}

fn loc(t: &LoadedTarget, key: &str) -> Option<String> {
    t.locations.get(key).map(|l| l.to_string())
}

impl Compiler<'_> {
    fn add(&mut self, name: String, definition: &[u8], step: Arc<dyn Step>, deps: Vec<NodeId>) -> NodeId {
        let dep_nodes: Vec<_> = deps.iter().map(|d| self.graph.node(*d)).collect();
        let id = identity(step.kind(), definition, &dep_nodes);
        self.graph.add(name, id, step, deps)
    }

    /// `mirrors:` of `w4b.yaml`, for a fetch step.
    /// With `W4B_DOWNLOAD_SERVER`, that server comes first for the Raspberry Pi download
    /// hosts (`https://downloads.raspberrypi.com/…` → `<server>/…`).
    fn mirrors(&self) -> Vec<(String, Vec<String>)> {
        let mut m: BTreeMap<String, Vec<String>> = self.ws.config().mirrors.clone();
        if let Some(server) = &self.download_server {
            for host in [
                "https://downloads.raspberrypi.com/",
                "https://downloads.raspberrypi.org/",
            ] {
                m.entry(host.to_owned()).or_default().insert(0, server.clone());
            }
        }
        m.into_iter().collect()
    }

    fn fetcher(&mut self) -> miette::Result<Arc<Fetcher>> {
        if let Some(f) = &self.fetcher {
            return Ok(f.clone());
        }
        let f = Arc::new(Fetcher::new(&FetchConfig::default()).map_err(CompileError::Fetcher)?);
        self.fetcher = Some(f.clone());
        Ok(f)
    }

    fn image(
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

        // The base and the board, loaded and checked against each other before anything
        // is planned: an arm64 image for a 32-bit-only Pi is an error now, not at boot.
        let vendor = match &image.base {
            defs::Base::Scratch => None,
            defs::Base::Image(base_label) => {
                Some(self.vendor(loader, t, image, base_label, &mut definitions)?)
            }
        };
        let epoch_loc = loc(t, "epoch").or_else(|| {
            vendor
                .as_ref()
                .and_then(|v| loc(&v.base_target, "date").or_else(|| loc(&v.base_target, "url")))
        });
        let epoch = match (image.epoch, vendor.as_ref().and_then(|v| v.base.epoch())) {
            (Some(e), _) => i64::try_from(e).map_err(|_| CompileError::NoEpoch { label: label.clone() })?,
            (None, Some(e)) => e,
            (None, None) => return Err(CompileError::NoEpoch { label: label.clone() }.into()),
        };

        let mut deps = Vec::new();
        let mut layer_labels = Vec::new();
        let mut unpack_node = None;
        match &vendor {
            None => {
                let step = Arc::new(ScratchStep {
                    store: self.store.clone(),
                    epoch,
                    epoch_location: epoch_loc.clone(),
                });
                deps.push(self.add(
                    step_name("base"),
                    format!("scratch epoch={epoch}").as_bytes(),
                    step,
                    vec![],
                ));
            }
            Some(v) => {
                dependencies.push((v.base.url.clone(), v.base.sha256.clone(), Some("base".to_owned())));
                let (unpack, tree) = self.base_tree(v)?;
                unpack_node = Some(unpack);
                deps.push(tree);
                let board_layer = self.board_layer(v, epoch, epoch_loc.clone(), &step_name("board"));
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
            let node = self.layer(&lt, layer, t, image, epoch, epoch_loc.clone(), &step_name(&short))?;
            deps.push(node);
            own_layers.push(l.to_string());
        }
        layer_labels.extend(own_layers);
        if let Some(h) = hive {
            let nodes = self.hive_layers(h, epoch, epoch_loc.clone(), &label, &mut dependencies)?;
            deps.extend(nodes);
            layer_labels.push(format!("{label}#modules"));
        }

        let overlay = Arc::new(OverlayStep {
            store: self.store.clone(),
            layers: layer_labels.join(","),
            layers_location: loc(t, "layers").or_else(|| loc(t, "layers[0]")),
            epoch,
            epoch_location: epoch_loc.clone(),
        });
        let rootfs = self.add(
            step_name("rootfs"),
            layer_labels.join(",").as_bytes(),
            overlay,
            deps,
        );

        // A hive's administrator is made in the combined tree's own account files.
        let rootfs = match hive {
            Some(h) => self.accounts(h, rootfs, epoch, epoch_loc.clone(), &label)?,
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
        let (roots, exports) = match image.output.format {
            defs::Format::Tar => {
                let level = match image.output.compression {
                    defs::Compression::None => None,
                    _ => Some(image.output.level),
                };
                let step = Arc::new(TarStep {
                    store: self.store.clone(),
                    epoch,
                    epoch_location: epoch_loc.clone(),
                    level,
                    level_location,
                });
                let def = format!("tar epoch={epoch} level={level:?}");
                let mut tar_deps = vec![rootfs];
                tar_deps.extend(gates.iter().copied());
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
                self.disk(
                    &label,
                    t,
                    image,
                    v,
                    unpack,
                    rootfs,
                    epoch,
                    epoch_loc.clone(),
                    &out_name,
                    level_location,
                    gates,
                )?
            }
        };
        Ok(PlannedTarget {
            label: target_label.clone(),
            roots,
            exports,
            manifest: ManifestPlan {
                file_name: format!("{}.manifest.json", target_label.name),
                epoch,
                definitions,
                dependencies,
            },
        })
    }

    /// Loads an image's base and board and checks that they go together.
    fn vendor(
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
        Ok(Vendor {
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
    fn base_tree(&mut self, v: &Vendor) -> miette::Result<(NodeId, NodeId)> {
        let sha = crate::steps::fetch::parse_sha256(&v.base.sha256).map_err(miette::Report::new)?;
        let declared_in = loc(&v.base_target, "sha256").unwrap_or_else(|| v.base_label.to_string());
        let mirrors = self.mirrors();
        let fetch = Arc::new(FetchStep {
            store: self.store.clone(),
            fetcher: self.fetcher()?,
            url: v.base.url.clone(),
            sha256: sha,
            mirrors,
            declared_in,
        });
        let fetch = self.add(
            format!("{}#fetch", v.base_label),
            v.base.sha256.as_bytes(),
            fetch,
            vec![],
        );
        let unpack = Arc::new(UnpackStep {
            store: self.store.clone(),
            image: v.base.url.clone(),
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
    fn board_layer(&mut self, v: &Vendor, epoch: i64, epoch_location: Option<String>, name: &str) -> NodeId {
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
                op: FileOp::Append(text),
                mode: None,
                uid: 0,
                gid: 0,
            });
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
        let step = Arc::new(LayerStep {
            store: self.store.clone(),
            files,
            locations,
            epoch,
            epoch_location,
            template_context: None,
            display: BTreeMap::new(),
            planned: Default::default(),
        });
        self.add(name.to_owned(), def.as_bytes(), step, vec![])
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &mut self,
        lt: &LoadedTarget,
        layer: &defs::Layer,
        img: &LoadedTarget,
        image: &defs::Image,
        epoch: i64,
        epoch_location: Option<String>,
        name: &str,
    ) -> miette::Result<NodeId> {
        let mut files = Vec::new();
        let mut deps = Vec::new();
        let mut display = BTreeMap::new();
        let mut has_template = false;
        for (i, entry) in layer.files.iter().enumerate() {
            let f = &entry.value;
            let path = TreePath::parse(f.path.as_str()).map_err(|e| {
                miette::miette!(
                    code = "w4b::defs::bad_path",
                    "{e} (at {})",
                    loc(lt, &format!("files[{i}].path")).unwrap_or_default()
                )
            })?;
            let host = |p: &defs::WsPath| self.ws.root().join(p.as_str());
            let (op, mode) = match &f.op {
                defs::FileOp::Content { content, mode } => (FileOp::Content(content.clone()), Some(mode.0)),
                defs::FileOp::Source { source, mode } => {
                    display.insert(i, source.to_string());
                    (FileOp::Source(host(source)), mode.map(|m| m.0))
                }
                defs::FileOp::Template { template, mode } => {
                    has_template = true;
                    display.insert(i, template.to_string());
                    (FileOp::Template(host(template)), Some(mode.0))
                }
                defs::FileOp::Symlink { target } => (FileOp::Symlink(target.clone()), None),
                defs::FileOp::Dir { mode } => (FileOp::Dir, Some(mode.0)),
                defs::FileOp::Remove => (FileOp::Remove, None),
                defs::FileOp::Append { content } => (FileOp::Append(content.clone()), None),
                defs::FileOp::Fetch { url, sha256, mode } => {
                    let sha = crate::steps::fetch::parse_sha256(sha256).map_err(miette::Report::new)?;
                    let declared_in = loc(lt, &format!("files[{i}].fetch.sha256"))
                        .or_else(|| loc(lt, &format!("files[{i}].sha256")))
                        .unwrap_or_else(|| lt.label.to_string());
                    let mirrors = self.mirrors();
                    let step = Arc::new(FetchStep {
                        store: self.store.clone(),
                        fetcher: self.fetcher()?,
                        url: url.clone(),
                        sha256: sha,
                        mirrors,
                        declared_in,
                    });
                    let hex = hex::encode(sha);
                    let node = self.add(
                        format!("{}#fetch:{}", lt.label, f.path),
                        hex.as_bytes(),
                        step,
                        vec![],
                    );
                    deps.push(node);
                    (
                        FileOp::Fetch {
                            input: deps.len() - 1,
                            sha256: hex,
                        },
                        Some(mode.0),
                    )
                }
            };
            files.push(LayerFile {
                path,
                op,
                mode,
                uid: f.owner.uid,
                gid: f.owner.gid,
            });
        }
        let mut locations: BTreeMap<String, String> = lt
            .locations
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        // Templates see the image's `config`: point at its first value there.
        if let Some((_, l)) = img
            .locations
            .iter()
            .find(|(k, _)| *k == "config" || k.starts_with("config."))
        {
            locations.insert("config".into(), l.to_string());
        }
        let image_label = img.label.to_string();
        let config = serde_json::to_value(&image.config).unwrap_or(serde_json::Value::Null);
        let template_context = has_template.then(|| (config, image_label.clone()));
        // Identity: the layer's typed definition, what its templates see, and the epoch.
        let mut def = format!("{:?}|epoch={epoch}", files);
        if let Some((c, t)) = &template_context {
            def.push_str(&format!("|config={c}|target={t}"));
        }
        for f in &files {
            if let FileOp::Source(p) | FileOp::Template(p) = &f.op {
                def.push_str(&format!("|host={}", p.display()));
            }
        }
        let step = Arc::new(LayerStep {
            store: self.store.clone(),
            files,
            locations,
            epoch,
            epoch_location,
            template_context,
            display,
            planned: Default::default(),
        });
        Ok(self.add(name.to_string(), def.as_bytes(), step, deps))
    }
}

/// Parses the targets and the layers they name in parallel, so the sequential compile
/// below finds them in the loader's cache (about half the time of a no-op rebuild of
/// 1,000 definitions on two cores was parsing). Errors are ignored here: the compile meets
/// them again, in a deterministic order.
fn prefetch(loader: &Loader, labels: &[Label]) {
    use rayon::prelude::*;
    let images: Vec<LoadedTarget> = labels.par_iter().filter_map(|l| loader.load(l).ok()).collect();
    let layers: Vec<&defs::Spanned<Label>> = images
        .iter()
        .filter_map(|t| match &t.target {
            Target::Image(i) => Some(i.layers.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    layers.par_iter().for_each(|l| {
        let _ = loader.load_expecting(l, Kind::Layer);
    });
}

/// Loads every label and compiles the buildable ones into one graph.
pub fn compile(
    ws: &Workspace,
    store: &Arc<AppStore>,
    labels: &[Label],
    explicit: &std::collections::BTreeSet<Label>,
    env: &BTreeMap<String, String>,
    sets: &[String],
) -> miette::Result<Plan> {
    let loader = Loader::new(ws.clone(), env.clone(), sets)?.with_parse_cache(store.parse_cache());
    prefetch(&loader, labels);
    let mut c = Compiler {
        ws,
        store,
        graph: Graph::new(),
        fetcher: None,
        download_server: env.get("W4B_DOWNLOAD_SERVER").filter(|v| !v.is_empty()).map(|v| {
            if v.ends_with('/') {
                v.clone()
            } else {
                format!("{v}/")
            }
        }),
    };
    let mut targets = Vec::new();
    for label in labels {
        let t = loader.load(label)?;
        match &t.target {
            Target::Image(image) => {
                let image = image.clone();
                let hive = match image.hive {
                    Some(_) => Some(crate::hive::load::resolve(&loader, label)?),
                    None => None,
                };
                targets.push(c.image(&loader, &t, &image, hive.as_ref())?);
            }
            Target::Hive(_) => {
                let hive = crate::hive::load::resolve(&loader, label)?;
                let it = loader.load(&hive.image)?;
                let Target::Image(image) = &it.target else {
                    return Err(CompileError::NotBuildable {
                        label: hive.image.to_string(),
                        kind: it.target.kind().to_string(),
                    }
                    .into());
                };
                let image = image.clone();
                targets.push(c.image(&loader, &it, &image, Some(&hive))?);
            }
            other if explicit.contains(label) => {
                return Err(CompileError::NotBuildable {
                    label: label.to_string(),
                    kind: other.kind().to_string(),
                }
                .into())
            }
            // A pattern like `//...` also matches layers: they are built as part of the
            // images that use them.
            _ => {}
        }
    }
    if targets.is_empty() {
        return Err(CompileError::NothingToBuild {
            labels: labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    }
    Ok(Plan {
        graph: c.graph,
        targets,
    })
}

impl Compiler<'_> {
    /// `split` → `mkfs-fat` + `mkfs-ext4` → `disk` → `validate` → `compress`: the tree
    /// back into the base's two partitions, checked, and written out.
    #[allow(clippy::too_many_arguments)]
    fn disk(
        &mut self,
        label: &str,
        t: &LoadedTarget,
        image: &defs::Image,
        v: &Vendor,
        unpack: NodeId,
        tree: NodeId,
        epoch: i64,
        epoch_location: Option<String>,
        out_name: &str,
        level_location: Option<String>,
        gates: Vec<NodeId>,
    ) -> miette::Result<(Vec<NodeId>, Vec<Export>)> {
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
        let ext4 = Arc::new(MkfsExt4Step {
            store: self.store.clone(),
            epoch,
            epoch_location,
            size,
            size_location: loc(t, "partitions.root.headroom"),
        });
        let def = format!("mkfs-ext4 epoch={epoch} size={}", size.key());
        let ext4 = self.add(
            step_name("rootfs.ext4"),
            def.as_bytes(),
            ext4,
            vec![split_root, unpack],
        );

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

        let codec = match image.output.compression {
            defs::Compression::Zstd => ImageCodec::Zstd {
                level: image.output.level,
            },
            defs::Compression::Xz => ImageCodec::Xz {
                level: u32::try_from(image.output.level).unwrap_or(6),
            },
            defs::Compression::Gz => ImageCodec::Gzip {
                level: u32::try_from(image.output.level).unwrap_or(6),
            },
            defs::Compression::None => ImageCodec::None,
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let compress = Arc::new(CompressStep {
            store: self.store.clone(),
            codec,
            codec_location: level_location,
            threads,
            file_name: out_name.to_owned(),
            file_name_location: Some(t.label.to_string()),
        });
        let def = format!("compress {} {out_name}", codec.key());
        // `validate` is an input so that nothing unchecked is ever compressed or exported.
        let mut compress_deps = vec![disk, validate];
        compress_deps.extend(gates);
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
        Ok((vec![compress], exports))
    }
}

impl Compiler<'_> {
    /// A hive's own layers, after the image's: the sensor manager's code (from its pinned
    /// source), one `module` step per enabled W4B module, and `firstboot` assembling their
    /// sections.
    fn hive_layers(
        &mut self,
        h: &ResolvedHive,
        epoch: i64,
        epoch_location: Option<String>,
        label: &str,
        dependencies: &mut Vec<(String, String, Option<String>)>,
    ) -> miette::Result<Vec<NodeId>> {
        let cfg = Arc::new(h.config.clone());
        let location = h
            .locations
            .get("hive.hive_id")
            .or_else(|| h.locations.values().next())
            .map(|l| l.to_string());
        let locations: BTreeMap<String, String> = h
            .locations
            .iter()
            .map(|(k, l)| (k.clone(), l.to_string()))
            .collect();
        let mut nodes = Vec::new();

        let sm = &cfg.settings.sensor_manager;
        if sm.enabled {
            match &sm.source {
                Some(crate::hive::config::SourceSpec::Path { path }) => {
                    let host = self.ws.root().join(path);
                    let files = vec![LayerFile {
                        path: TreePath::parse(SENSOR_MANAGER_DIR).expect("a valid path"),
                        op: FileOp::Source(host.clone()),
                        mode: None,
                        uid: 0,
                        gid: 0,
                    }];
                    let def = format!("sensor-manager source {}", host.display());
                    let step = Arc::new(LayerStep {
                        store: self.store.clone(),
                        files,
                        locations: BTreeMap::new(),
                        epoch,
                        epoch_location: epoch_location.clone(),
                        template_context: None,
                        display: [(0, path.clone())].into(),
                        planned: Default::default(),
                    });
                    nodes.push(self.add(format!("{label}#sensor-manager"), def.as_bytes(), step, vec![]));
                }
                Some(crate::hive::config::SourceSpec::Url { url, sha256 }) => {
                    dependencies.push((url.clone(), sha256.clone(), Some("sensor_manager".into())));
                    let sha = crate::steps::fetch::parse_sha256(sha256).map_err(miette::Report::new)?;
                    let mirrors = self.mirrors();
                    let fetch = Arc::new(FetchStep {
                        store: self.store.clone(),
                        fetcher: self.fetcher()?,
                        url: url.clone(),
                        sha256: sha,
                        mirrors,
                        declared_in: location.clone().unwrap_or_else(|| label.to_owned()),
                    });
                    let fetch = self.add(
                        format!("{label}#fetch:sensor-manager"),
                        sha256.as_bytes(),
                        fetch,
                        vec![],
                    );
                    let extract = Arc::new(ExtractStep {
                        store: self.store.clone(),
                        dest: SENSOR_MANAGER_DIR.into(),
                        epoch,
                        source: url.clone(),
                    });
                    let def = format!("extract {SENSOR_MANAGER_DIR} epoch={epoch}");
                    nodes.push(self.add(
                        format!("{label}#sensor-manager"),
                        def.as_bytes(),
                        extract,
                        vec![fetch],
                    ));
                }
                None => {}
            }
        }

        let mut secret_key = None;
        let mut module_nodes = Vec::new();
        for m in crate::modules::all() {
            if !m.enabled(&cfg) {
                continue;
            }
            let (json, secrets) = m.inputs(&cfg);
            let key = match secret_key {
                Some(k) => k,
                None => {
                    let k = crate::steps::module::secret_key(self.store).map_err(miette::Report::new)?;
                    secret_key = Some(k);
                    k
                }
            };
            // The node's identity sees the secrets only through a keyed digest.
            let mut def = format!("module {} v{} {json} epoch={epoch}", m.name(), m.version());
            let reads_secrets = !secrets.is_empty();
            for s in secrets {
                def.push_str(&format!(
                    " {}={}",
                    s.name,
                    crate::steps::module::secret_digest(&key, s.expose())
                ));
            }
            let name = m.name();
            let step = Arc::new(ModuleStep {
                store: self.store.clone(),
                module: m,
                config: cfg.clone(),
                epoch,
                epoch_location: epoch_location.clone(),
                secret_key: key,
                location: location.clone(),
                locations: locations.clone(),
                reads_secrets,
            });
            module_nodes.push(self.add(format!("{label}#module:{name}"), def.as_bytes(), step, vec![]));
        }
        let firstboot = Arc::new(FirstbootStep {
            store: self.store.clone(),
            epoch,
            epoch_location,
            hive_id: cfg.hive.hive_id.clone(),
        });
        let def = format!("firstboot {} epoch={epoch}", cfg.hive.hive_id);
        let fb = self.add(
            format!("{label}#firstboot"),
            def.as_bytes(),
            firstboot,
            module_nodes.clone(),
        );
        nodes.extend(module_nodes);
        nodes.push(fb);
        Ok(nodes)
    }
}

impl Compiler<'_> {
    /// `accounts` on the combined tree `rootfs` (see [`crate::steps::accounts`]).
    fn accounts(
        &mut self,
        h: &ResolvedHive,
        rootfs: NodeId,
        epoch: i64,
        epoch_location: Option<String>,
        label: &str,
    ) -> miette::Result<NodeId> {
        let account = crate::modules::system::admin_account(&h.config).map_err(miette::Report::new)?;
        let location = [
            "hive.security.local_access.username",
            "hive.security.local_access",
            "hive.hive_id",
        ]
        .iter()
        .find_map(|k| h.locations.get(*k))
        .map(|l| l.to_string());
        let step = AccountsStep {
            store: self.store.clone(),
            account,
            epoch,
            epoch_location,
            secret_key: crate::steps::module::secret_key(self.store).map_err(miette::Report::new)?,
            location,
        };
        let def = step.definition();
        Ok(self.add(
            format!("{label}#accounts"),
            def.as_bytes(),
            Arc::new(step),
            vec![rootfs],
        ))
    }
}

/// Where the sensor manager's code goes (the `sensor_manager` module's unit runs it there).
const SENSOR_MANAGER_DIR: &str = "/opt/w4b/sensor-manager";
