//! Compiles loaded targets into one step graph, stage by stage.
//!
//! An image becomes its base tree (`#base` for `scratch`, or the base image's `fetch` →
//! `unpack` → `graft`, see `vendor`), the board's layer, one step per layer
//! (`#<layer name>`, see `layers`), a hive's module layers and first boot (`hive`),
//! `#rootfs` (the overlay of all of them on the base, in order, see `image`), and an
//! output: `#tar`, or the disk chain `split` → `mkfs` → `disk` → `validate` → `compress`
//! (`disk`), and, when a test is asked for, `#test` booting the disk (`test`). Node identities are digests of each step's typed definition and its
//! inputs' identities, so a layer used unchanged by several images is one shared step.

mod bootstrap;
mod disk;
mod epoch;
mod error;
mod hive;
mod image;
mod layers;
mod packages;
mod test;
mod test_kernel;
mod vendor;

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_graph::graph::identity;
use w4b_graph::{Graph, NodeId, Step};

pub use self::epoch::PlanEpoch;
pub use self::error::CompileError;
pub use self::packages::{BootstrapLock, LockRequest};
pub use self::test::{add_tests, TestNode, TestPlan, TestRequest};
pub use self::test_kernel::test_kernel_plan;
use crate::defs::{self, Kind, Label, LoadedTarget, Loader, Target, Workspace};
use crate::steps::fetch::{FetchConfig, Fetcher, Netrc};
use crate::store::AppStore;

pub struct Plan {
    pub graph: Graph,
    pub targets: Vec<PlannedTarget>,
    /// Targets that did not compile, with their error, when compiled with `keep_going`
    /// (`w4b build --keep-going`): the others are planned and built without them.
    pub broken: Vec<(Label, miette::Report)>,
    /// The pinned test kernel (`//packages:w4b-test-kernel#test-kernel`), when the
    /// workspace has the set locked; built only when a boot test depends on it.
    pub test_kernel: Option<NodeId>,
}

pub struct PlannedTarget {
    pub label: Label,
    /// The steps whose completion means the target is built.
    pub roots: Vec<NodeId>,
    pub exports: Vec<Export>,
    pub manifest: ManifestPlan,
    /// The boot test of a disk image, added to the graph by [`add_tests`] when asked for;
    /// `None` for a tar archive.
    pub test: Option<TestPlan>,
    /// What the target is, for `w4b publish`'s names and metadata.
    pub about: About,
}

/// What a planned target is built from, as `w4b publish` names and describes it.
#[derive(Clone, Debug, Default)]
pub struct About {
    /// The hive's `hive_id` and `version`, for a hive (or an image carrying one).
    pub hive: Option<(String, String)>,
    /// The hive's `metadata.name`, else the image's `description`.
    pub title: Option<String>,
    /// The board's label (`//boards:pi4`) and architecture; `None` on `scratch`.
    pub board: Option<Label>,
    pub arch: Option<String>,
    /// The base's label (`//bases:raspios-bookworm-arm64-lite`); `None` on `scratch`.
    pub base: Option<Label>,
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
    /// The epoch: known when planned, or read by a `base-epoch` step of the graph.
    pub epoch: PlanEpoch,
    pub epoch_source: crate::manifest::EpochSource,
    /// Every definition file that contributed (workspace-relative path, BLAKE3), sorted.
    pub definitions: BTreeMap<String, w4b_cache::Digest>,
    /// The base image and fetched sources: (URI with any credentials redacted, sha256 hex,
    /// name).
    pub dependencies: Vec<(String, String, Option<String>)>,
    /// The Debian packages the image installs, as its lock entry pins them (repository
    /// URLs redacted).
    pub packages: Vec<crate::manifest::Package>,
}

pub(super) struct Compiler<'a> {
    ws: &'a Workspace,
    store: &'a Arc<AppStore>,
    graph: Graph,
    fetcher: Option<Arc<Fetcher>>,
    /// The old image generator's `W4B_DOWNLOAD_SERVER`: a mirror of the Raspberry Pi
    /// download servers, tried before them.
    download_server: Option<String>,
    /// The key for digests of secrets (see `hive`), read on first use.
    secret_key: Option<[u8; 32]>,
    /// The netrc file with download credentials, and whether it must exist: `W4B_NETRC`
    /// must, the default `$HOME/.netrc` may be absent. Read with the first fetch step.
    netrc: Option<(std::path::PathBuf, bool)>,
    /// `w4b.lock`, read with the first image that installs packages.
    lockfile: Option<Arc<(crate::lockfile::Lockfile, String)>>,
    /// `W4B_VERIFY_MEMOS`: steps re-render their memo hits and fail on a difference.
    verify_memos: bool,
}

/// The real path of the workspace path `rel`, which must not lead out of the workspace
/// (see [`crate::defs::beneath`]); `at` is where the definition names it.
pub(super) fn host_path(
    ws: &Workspace,
    rel: &str,
    at: impl FnOnce() -> String,
) -> miette::Result<std::path::PathBuf> {
    use crate::defs::beneath::{resolve, BeneathError};
    resolve(ws.root(), rel).map_err(|e| {
        match e {
            BeneathError::Escapes { path } => CompileError::EscapesWorkspace { path, at: at() },
            BeneathError::Io { path, source } => CompileError::Unresolvable {
                path,
                at: at(),
                source,
            },
        }
        .into()
    })
}

pub(super) fn loc(t: &LoadedTarget, key: &str) -> Option<String> {
    t.locations.get(key).map(|l| l.to_string())
}

impl<'a> Compiler<'a> {
    /// A compiler over `ws` and the loader of `labels`, whose targets (and their layers)
    /// are parsed in parallel first.
    fn start(
        ws: &'a Workspace,
        store: &'a Arc<AppStore>,
        labels: &[Label],
        env: &BTreeMap<String, String>,
        sets: &[String],
    ) -> miette::Result<(Loader, Compiler<'a>)> {
        let loader = Loader::new(ws.clone(), env.clone(), sets)?.with_parse_cache(store.parse_cache());
        prefetch(&loader, labels);
        let c = Compiler {
            ws,
            store,
            graph: Graph::new(),
            fetcher: None,
            secret_key: None,
            lockfile: None,
            netrc: netrc_of(env),
            download_server: download_server_of(env),
            verify_memos: env
                .get("W4B_VERIFY_MEMOS")
                .is_some_and(|v| !v.is_empty() && v != "0"),
        };
        Ok((loader, c))
    }

    fn add(&mut self, name: String, definition: &[u8], step: Arc<dyn Step>, deps: Vec<NodeId>) -> NodeId {
        let dep_nodes: Vec<_> = deps.iter().map(|d| self.graph.node(*d)).collect();
        let id = identity(step.kind(), definition, &dep_nodes);
        self.graph.add(name, id, step, deps)
    }

    /// An untemplated `layer` step of generated `files` (no inputs but the epoch); `display`
    /// names host inputs by file index for messages.
    fn plain_layer(
        &mut self,
        name: String,
        definition: &str,
        files: Vec<crate::steps::layer::LayerFile>,
        locations: BTreeMap<String, String>,
        display: BTreeMap<usize, String>,
        epoch: &PlanEpoch,
    ) -> NodeId {
        let mut deps = Vec::new();
        let step = Arc::new(crate::steps::layer::LayerStep {
            store: self.store.clone(),
            files,
            locations,
            epoch: epoch.for_step(&mut deps),
            template_context: None,
            display,
            planned: Default::default(),
        });
        self.add(name, definition.as_bytes(), step, deps)
    }

    /// `mirrors:` of `w4b.yaml`, for a fetch step.
    /// With `W4B_DOWNLOAD_SERVER`, that server comes first for the Raspberry Pi download
    /// hosts (`https://downloads.raspberrypi.com/…` → `<server>/…`).
    pub(crate) fn mirrors(&self) -> Vec<(String, Vec<String>)> {
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
        let defaults = FetchConfig::default();
        let downloads = &self.ws.config().downloads;
        let netrc = match &self.netrc {
            Some((path, required)) => Netrc::load(path, *required).map_err(miette::Report::new)?,
            None => Netrc::default(),
        };
        let config = FetchConfig {
            connect_timeout: downloads.connect_timeout.unwrap_or(defaults.connect_timeout),
            read_timeout: downloads.read_timeout.unwrap_or(defaults.read_timeout),
            max_size: downloads.max_size.unwrap_or(defaults.max_size),
            netrc,
            ..defaults
        };
        let f = Arc::new(Fetcher::new(&config).map_err(CompileError::Fetcher)?);
        self.fetcher = Some(f.clone());
        Ok(f)
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
    keep_going: bool,
) -> miette::Result<Plan> {
    let (loader, mut c) = Compiler::start(ws, store, labels, env, sets)?;
    let mut targets = Vec::new();
    let mut broken = Vec::new();
    for label in labels {
        match c.target(&loader, label, explicit) {
            Ok(Some(t)) => targets.push(t),
            Ok(None) => {}
            // A target that does not compile leaves at most unrooted nodes behind, which
            // no build runs.
            Err(e) if keep_going => broken.push((label.clone(), e)),
            Err(e) => return Err(e),
        }
    }
    if targets.is_empty() {
        if let Some((_, e)) = broken.into_iter().next() {
            return Err(e);
        }
        return Err(CompileError::NothingToBuild {
            labels: labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    }
    let test_kernel = c.test_kernel(&loader)?;
    Ok(Plan {
        graph: c.graph,
        targets,
        broken,
        test_kernel,
    })
}

impl Compiler<'_> {
    /// One label's target; `None` for a kind a pattern matched but nothing builds alone.
    fn target(
        &mut self,
        loader: &Loader,
        label: &Label,
        explicit: &std::collections::BTreeSet<Label>,
    ) -> miette::Result<Option<PlannedTarget>> {
        let t = loader.load(label)?;
        match &t.target {
            Target::Image(image) => {
                let image = image.clone();
                let hive = match image.hive {
                    Some(_) => Some(crate::hive::load::resolve(loader, label)?),
                    None => None,
                };
                Ok(Some(self.image(loader, &t, &image, hive.as_ref())?))
            }
            Target::Hive(_) => {
                let hive = crate::hive::load::resolve(loader, label)?;
                let it = loader.load(&hive.image)?;
                let Target::Image(image) = &it.target else {
                    return Err(CompileError::NotBuildable {
                        label: hive.image.to_string(),
                        kind: it.target.kind().to_string(),
                    }
                    .into());
                };
                let image = image.clone();
                Ok(Some(self.image(loader, &it, &image, Some(&hive))?))
            }
            other if explicit.contains(label) => Err(CompileError::NotBuildable {
                label: label.to_string(),
                kind: other.kind().to_string(),
            }
            .into()),
            // A pattern like `//...` also matches layers: they are built as part of the
            // images that use them.
            _ => Ok(None),
        }
    }
}

/// What `w4b lock` needs: every lock request of the targets (one per entry name, the
/// first target that asks names it), and a graph whose `tree` nodes are the bases' root
/// trees, so their dpkg databases can be read.
pub struct LockPlan {
    pub graph: Graph,
    /// Each request with its base's root tree node, whose dpkg database the resolution
    /// reads (`None` for a bootstrap entry, which has no base, and for an image on a
    /// bootstrapped base, whose base is its bootstrap entry's packages). Bootstrap entries
    /// come first.
    pub requests: Vec<(LockRequest, Option<NodeId>)>,
    /// The workspace's downloader (timeouts, limits, netrc) and `mirrors:`, for the
    /// repositories' indices.
    pub fetcher: Arc<Fetcher>,
    pub mirrors: Vec<(String, Vec<String>)>,
}

/// Loads every label (images and hives; other kinds are skipped) and plans what locking
/// their package sets needs. Downloads nothing.
pub fn lock_plan(
    ws: &Workspace,
    store: &Arc<AppStore>,
    labels: &[Label],
    env: &BTreeMap<String, String>,
    sets: &[String],
) -> miette::Result<LockPlan> {
    let (loader, mut c) = Compiler::start(ws, store, labels, env, sets)?;
    let mut requests: Vec<(LockRequest, Option<NodeId>)> = Vec::new();
    let push = |requests: &mut Vec<(LockRequest, Option<NodeId>)>, req: LockRequest, tree| {
        if !requests.iter().any(|(r, _)| r.entry == req.entry) {
            requests.push((req, tree));
        }
    };
    // Whether some image (or bootstrapped base) is for arm64: the test kernel is locked then.
    let mut arm64 = false;
    for label in labels {
        let t = loader.load(label)?;
        // A bootstrapped base is locked on its own, with or without images on it.
        if let Target::Base(base) = &t.target {
            if let Some(b) = base.bootstrap() {
                arm64 |= base.arch == defs::Arch::Arm64;
                let req = c.bootstrap_request(&loader, &t, base, b, &mut BTreeMap::new())?;
                push(&mut requests, req, None);
            }
            continue;
        }
        // A hive (or an image carrying one) adds its modules' package sets.
        let (image_target, image, hive) = match &t.target {
            Target::Image(image) if image.hive.is_none() => (t.clone(), image.clone(), None),
            Target::Image(_) | Target::Hive(_) => {
                let hive = crate::hive::load::resolve(&loader, label)?;
                let it = if hive.image == *label {
                    t.clone()
                } else {
                    loader.load(&hive.image)?
                };
                let Target::Image(image) = &it.target else {
                    continue;
                };
                let image = image.clone();
                (it, image, Some(hive))
            }
            _ => continue,
        };
        let name = label.to_string();
        let mut definitions = BTreeMap::new();
        let vendor = match &image.base {
            defs::Base::Scratch => None,
            defs::Base::Image(base_label) => {
                Some(c.vendor(&loader, &image_target, &image, base_label, &mut definitions)?)
            }
        };
        arm64 |= vendor.as_ref().is_some_and(|v| v.base.arch == defs::Arch::Arm64);
        if let Some(b) = vendor.as_ref().and_then(|v| v.bootstrap.clone()) {
            push(&mut requests, b, None);
        }
        let Some(req) = c.lock_request(
            &loader,
            &image_target,
            &name,
            &image,
            hive.as_ref(),
            vendor.as_ref(),
            &mut definitions,
        )?
        else {
            continue;
        };
        if requests.iter().any(|(r, _)| r.entry == req.entry) {
            continue;
        }
        let Some(v) = &vendor else { continue };
        let tree = match v.bootstrap {
            Some(_) => None,
            None => Some(c.base_tree(v)?.1),
        };
        requests.push((req, tree));
    }
    // The pinned test kernel, with any arm64 image: `w4b test` boots it when an image's own
    // kernel cannot boot the virtual machine.
    if arm64 {
        if let Some(req) = c.test_kernel_request(&loader)? {
            if !requests.iter().any(|(r, _)| r.entry == req.entry) {
                requests.push((req, None));
            }
        }
    }
    // Bootstrap entries first: an image's entry on a bootstrapped base reads its base's.
    requests.sort_by_key(|(r, _)| r.bootstrap.is_none());
    let fetcher = c.fetcher()?;
    let mirrors = c.mirrors();
    Ok(LockPlan {
        graph: c.graph,
        requests,
        fetcher,
        mirrors,
    })
}

fn netrc_of(env: &BTreeMap<String, String>) -> Option<(std::path::PathBuf, bool)> {
    match env.get("W4B_NETRC").filter(|v| !v.is_empty()) {
        Some(path) => Some((path.into(), true)),
        None => env
            .get("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| (std::path::Path::new(home).join(".netrc"), false)),
    }
}

fn download_server_of(env: &BTreeMap<String, String>) -> Option<String> {
    env.get("W4B_DOWNLOAD_SERVER").filter(|v| !v.is_empty()).map(|v| {
        if v.ends_with('/') {
            v.clone()
        } else {
            format!("{v}/")
        }
    })
}
