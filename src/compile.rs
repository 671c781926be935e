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
use crate::steps::fetch::{FetchConfig, FetchStep, Fetcher};
use crate::steps::layer::{FileOp, LayerFile, LayerStep};
use crate::steps::overlay::OverlayStep;
use crate::steps::scratch::ScratchStep;
use crate::steps::tar::TarStep;
use crate::store::AppStore;
use crate::tree::TreePath;

pub struct Plan {
    pub graph: Graph,
    pub targets: Vec<PlannedTarget>,
}

pub struct PlannedTarget {
    pub label: Label,
    /// The steps whose completion means the target is built.
    pub roots: Vec<NodeId>,
    pub exports: Vec<Export>,
}

/// An output copied into `--out` after a successful build.
pub struct Export {
    pub node: NodeId,
    pub output: String,
    pub file_name: String,
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

    #[error("cannot start the downloader")]
    #[diagnostic(code(w4b::compile::downloader))]
    Fetcher(#[source] crate::steps::fetch::FetchError),
}

struct Compiler<'a> {
    ws: &'a Workspace,
    store: &'a Arc<AppStore>,
    graph: Graph,
    fetcher: Option<Arc<Fetcher>>,
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
    ) -> miette::Result<PlannedTarget> {
        let label = t.label.to_string();
        let epoch = image
            .epoch
            .ok_or_else(|| CompileError::NoEpoch { label: label.clone() })?;
        let epoch = i64::try_from(epoch).map_err(|_| CompileError::NoEpoch { label: label.clone() })?;
        let epoch_loc = loc(t, "epoch");
        let step_name = |s: &str| format!("{label}#{s}");

        let base = match &image.base {
            defs::Base::Scratch => {
                let step = Arc::new(ScratchStep {
                    store: self.store.clone(),
                    epoch,
                    epoch_location: epoch_loc.clone(),
                });
                self.add(
                    step_name("base"),
                    format!("scratch epoch={epoch}").as_bytes(),
                    step,
                    vec![],
                )
            }
        };

        let mut layer_nodes = Vec::new();
        let mut layer_labels = Vec::new();
        let mut names_used: BTreeMap<String, usize> = BTreeMap::new();
        for l in &image.layers {
            *names_used.entry(l.value.name.clone()).or_default() += 1;
        }
        for (i, spanned) in image.layers.iter().enumerate() {
            let l = &spanned.value;
            let at = loc(t, &format!("layers[{i}]")).unwrap_or_default();
            if layer_labels.contains(&l.to_string()) {
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
            // `#motd`, or `#pkg/motd` when two packages contribute layers named alike.
            let short = if names_used[&l.name] > 1 {
                format!("{}/{}", l.package, l.name)
            } else {
                l.name.clone()
            };
            let node = self.layer(&lt, layer, t, image, epoch, epoch_loc.clone(), &step_name(&short))?;
            layer_nodes.push(node);
            layer_labels.push(l.to_string());
        }

        let mut deps = vec![base];
        deps.extend(layer_nodes);
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

        let out_name = image.output.file_name(&t.label.name);
        let node = match image.output.format {
            defs::Format::Tar => {
                let level = match image.output.compression {
                    defs::Compression::Zstd => Some(image.output.level),
                    defs::Compression::None => None,
                };
                let step = Arc::new(TarStep {
                    store: self.store.clone(),
                    epoch,
                    epoch_location: epoch_loc.clone(),
                    level,
                    level_location: loc(t, "output.level").or_else(|| loc(t, "output.compression")),
                });
                let def = format!("tar epoch={epoch} level={level:?}");
                self.add(step_name("tar"), def.as_bytes(), step, vec![rootfs])
            }
        };
        Ok(PlannedTarget {
            label: t.label.clone(),
            roots: vec![node],
            exports: vec![Export {
                node,
                output: "archive".into(),
                file_name: out_name,
            }],
        })
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
                    let mirrors: Vec<(String, Vec<String>)> = self
                        .ws
                        .config()
                        .mirrors
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
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
    };
    let mut targets = Vec::new();
    for label in labels {
        let t = loader.load(label)?;
        match &t.target {
            Target::Image(image) => {
                let image = image.clone();
                targets.push(c.image(&loader, &t, &image)?);
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
