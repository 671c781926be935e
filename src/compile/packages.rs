//! The package stage: an image's package sets, as `w4b.lock` pins them, become one `fetch`
//! step per `.deb` (keyed by its sha256, shared by every image that installs it) and one
//! `install` step that runs them into the base's tree and yields a changeset, overlaid
//! before the board's and the image's layers.
//!
//! A build never resolves: the image's sets, architecture and base name a lock entry
//! ([`lockfile::entry_name`]), whose `inputs` digest must equal the digest of what the
//! definitions say now ([`lockfile::inputs_digest`]). A missing or stale entry is an error
//! that says to run `w4b lock`; nothing is fetched before it is fixed.

use std::sync::Arc;

use w4b_graph::NodeId;

use super::vendor::Vendor;
use super::{loc, CompileError, Compiler, PlanEpoch};
use crate::defs::{self, Kind, Label, LoadedTarget, Loader, PackageSet, Target};
use crate::hive::load::ResolvedHive;
use crate::lockfile::{self, Lockfile, LOCK_FILE};
use crate::steps::fetch::{parse_sha256, FetchStep};
use crate::steps::install::{InstallStep, LockedDeb};

/// What an image asks of `w4b.lock`: the entry it needs and what makes that entry current.
#[derive(Clone, Debug)]
pub struct LockRequest {
    /// The image (or hive) that asks, for messages.
    pub target: String,
    /// Where the image lists its sets (`defs/images/edge.yaml:7:11`).
    pub at: String,
    /// [`lockfile::entry_name`].
    pub entry: String,
    /// [`lockfile::inputs_digest`].
    pub inputs: String,
    /// The sets, loaded, in the image's order.
    pub sets: Vec<(Label, PackageSet)>,
    pub arch: defs::Arch,
    /// The base and its pinned sha256 (`None`: an empty tree). A bootstrapped base
    /// has no sha256; its bootstrap entry's `inputs` stand for it.
    pub base: Option<(Label, String)>,
    /// Set when this entry bootstraps a base: resolved with no dpkg database, with the
    /// base's own additions to the sets' requests.
    pub bootstrap: Option<BootstrapLock>,
    /// The bootstrap entry of the base this entry installs onto: its packages are what
    /// the base "already has" (no base build is needed to lock the image).
    pub on_bootstrap: Option<String>,
}

/// What a bootstrapped base adds to its sets' requests (`bootstrap.essential`,
/// `bootstrap.priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootstrapLock {
    pub essential: bool,
    pub priority: Option<defs::BootstrapPriority>,
}

impl Compiler<'_> {
    /// The image's lock request, or `None` when it lists no package sets. Loads the sets
    /// and adds their files to `definitions`.
    #[allow(clippy::too_many_arguments)] // the image and what it builds on, as the caller has them
    pub(super) fn lock_request(
        &mut self,
        loader: &Loader,
        t: &LoadedTarget,
        target_label: &str,
        image: &defs::Image,
        hive: Option<&ResolvedHive>,
        vendor: Option<&Vendor>,
        definitions: &mut std::collections::BTreeMap<String, w4b_cache::Digest>,
    ) -> miette::Result<Option<LockRequest>> {
        let module_sets = hive.map(|h| crate::modules::software::package_sets(&h.config));
        let extras = hive.map_or(&[][..], |h| &h.config.settings.software.packages[..]);
        if image.packages.is_empty() && module_sets.as_ref().is_none_or(|m| m.is_empty()) {
            return Ok(None);
        }
        let at = loc(t, "packages")
            .or_else(|| loc(t, "packages[0]"))
            .or_else(|| {
                hive.and_then(|h| h.locations.get("hive.hive_id"))
                    .map(|l| l.to_string())
            })
            .unwrap_or_default();
        let mut sets: Vec<(Label, PackageSet)> = Vec::new();
        for (i, spanned) in image.packages.iter().enumerate() {
            let st = loader.load_expecting(spanned, Kind::Packages)?;
            let Target::Packages(set) = &st.target else {
                return Err(CompileError::WrongKind {
                    image: target_label.to_owned(),
                    key: "packages",
                    target: spanned.value.to_string(),
                    kind: st.target.kind().to_string(),
                    wanted: "packages",
                    at: loc(t, &format!("packages[{i}]")).unwrap_or_else(|| at.clone()),
                }
                .into());
            };
            definitions.extend(st.files.iter().cloned());
            sets.push((spanned.value.clone(), set.clone()));
        }
        // The W4B modules' sets (`//packages:w4b-<need>`), after the image's own.
        for name in module_sets.unwrap_or_default() {
            let label = Label::new("packages", name).expect("a valid label");
            if sets.iter().any(|(l, _)| l == &label) {
                continue;
            }
            let missing = |problem: String| CompileError::ModuleSetMissing {
                module: "software",
                hive: target_label.to_owned(),
                set: label.to_string(),
                name: name.to_owned(),
                problem,
            };
            let st = loader.load(&label).map_err(|e| missing(e.to_string()))?;
            let Target::Packages(set) = &st.target else {
                return Err(missing(format!("it is a `{}` target", st.target.kind())).into());
            };
            definitions.extend(st.files.iter().cloned());
            sets.push((label, set.clone()));
        }
        // The image's `software.packages`, resolved against the sets' repositories: a
        // set of their own, named after the image that lists them.
        if !extras.is_empty() {
            let packages = extras
                .iter()
                .map(|p| {
                    defs::de::Spanned::new(
                        defs::packages::Request {
                            name: p.value.clone(),
                            constraint: None,
                        },
                        p.span.clone(),
                    )
                })
                .collect();
            sets.push((
                t.label.clone(),
                PackageSet {
                    repositories: Vec::new(),
                    packages,
                    exclude: Vec::new(),
                    recommends: false,
                    description: Some("software.packages".into()),
                },
            ));
        }
        // Sets that ask for nothing install nothing: no lock entry, no install step.
        if sets.iter().all(|(_, s)| s.packages.is_empty()) {
            return Ok(None);
        }
        let Some(v) = vendor else {
            return Err(CompileError::PackagesWithoutBase {
                image: target_label.to_owned(),
                at,
            }
            .into());
        };
        let labels: Vec<Label> = sets.iter().map(|(l, _)| l.clone()).collect();
        let arch = v.base.arch;
        let entry = lockfile::entry_name(&labels, arch, Some(&v.base_label));
        let refs: Vec<(&Label, &PackageSet)> = sets.iter().map(|(l, s)| (l, s)).collect();
        // What the base is: its image's sha256, or its bootstrap entry's inputs.
        let (base_identity, on_bootstrap) = match (&v.bootstrap, v.base.download()) {
            (Some(b), _) => (b.inputs.clone(), Some(b.entry.clone())),
            (None, Some(d)) => (d.sha256.clone(), None),
            (None, None) => (String::new(), None),
        };
        let inputs = lockfile::inputs_digest(&refs, arch, Some(&base_identity));
        Ok(Some(LockRequest {
            target: target_label.to_owned(),
            at,
            entry,
            inputs,
            sets,
            arch,
            base: Some((v.base_label.clone(), base_identity)),
            bootstrap: None,
            on_bootstrap,
        }))
    }

    /// `w4b.lock` and its text, read once per compile; an absent file is an empty lock.
    fn lockfile(&mut self) -> miette::Result<Arc<(Lockfile, String)>> {
        if let Some(l) = &self.lockfile {
            return Ok(l.clone());
        }
        let path = self.ws.root().join(LOCK_FILE);
        let lock = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Lockfile::new(), String::new()),
            _ => {
                let real = super::host_path(self.ws, LOCK_FILE, || LOCK_FILE.to_owned())?;
                let bytes = crate::defs::workspace::read(&real, LOCK_FILE)?;
                let text = String::from_utf8(bytes).map_err(|_| CompileError::LockNotText)?;
                let lock = Lockfile::parse(LOCK_FILE, &text).map_err(|e| miette::Report::new(*e))?;
                (lock, text)
            }
        };
        let lock = Arc::new(lock);
        self.lockfile = Some(lock.clone());
        Ok(lock)
    }

    /// The image's locked packages as steps: one `fetch` per `.deb` and the `install` step
    /// over `base_tree`; returns the install step (its output is a `changeset`) and the
    /// packages as the manifest records them.
    pub(super) fn packages(
        &mut self,
        req: &LockRequest,
        base_tree: NodeId,
        epoch: &PlanEpoch,
        step_name: &str,
    ) -> miette::Result<(NodeId, Vec<crate::manifest::Package>)> {
        let (fetches, debs, recorded, shas) = self.fetch_locked(req)?;
        let mut deps = vec![base_tree];
        deps.extend(fetches);
        let step = Arc::new(InstallStep {
            store: self.store.clone(),
            entry: req.entry.clone(),
            arch: req.arch,
            debs,
            epoch: epoch.for_step(&mut deps),
        });
        let def = format!("install {} epoch={epoch} {shas}", req.entry);
        Ok((
            self.add(step_name.to_owned(), def.as_bytes(), step, deps),
            recorded,
        ))
    }

    /// The lock entry of `req`, checked to be current (`w4b::lock::missing`,
    /// `w4b::lock::stale` otherwise).
    pub(super) fn locked_entry(&mut self, req: &LockRequest) -> miette::Result<lockfile::Entry> {
        let lock = self.lockfile()?;
        let Some(entry) = lock.0.entries.get(&req.entry) else {
            return Err(CompileError::NotLocked {
                image: req.target.clone(),
                entry: req.entry.clone(),
                at: req.at.clone(),
            }
            .into());
        };
        if entry.inputs != req.inputs {
            return Err(CompileError::StaleLock {
                image: req.target.clone(),
                entry: req.entry.clone(),
                at: req.at.clone(),
            }
            .into());
        }
        Ok(entry.clone())
    }

    /// One `fetch` step per package of `req`'s (current) lock entry; returns the fetch
    /// nodes, the packages as a step keys them and as the manifest records them, and
    /// their sha256s joined (for node definitions).
    #[allow(clippy::type_complexity)] // four parallel views of one list
    pub(super) fn fetch_locked(
        &mut self,
        req: &LockRequest,
    ) -> miette::Result<(Vec<NodeId>, Vec<LockedDeb>, Vec<crate::manifest::Package>, String)> {
        let entry = self.locked_entry(req)?;
        let lock_and_text = self.lockfile()?;
        let text = &lock_and_text.1;
        let mirrors = self.mirrors();
        let fetcher = self.fetcher()?;
        let mut deps = Vec::new();
        let mut debs = Vec::new();
        let mut recorded = Vec::new();
        for p in &entry.packages {
            // The URL comes from the definitions, never from the lock: the lock's copy is
            // redacted and only says where the package was found.
            let repo = req
                .sets
                .iter()
                .flat_map(|(_, s)| s.repositories.iter())
                .find(|r| r.value.name == p.repository)
                .ok_or_else(|| CompileError::StaleLock {
                    image: req.target.clone(),
                    entry: req.entry.clone(),
                    at: req.at.clone(),
                })?;
            let url = format!("{}/{}", repo.value.url, p.filename);
            let sha256 = parse_sha256(&p.sha256).map_err(miette::Report::new)?;
            let fetch = Arc::new(FetchStep {
                store: self.store.clone(),
                fetcher: fetcher.clone(),
                url,
                sha256,
                size: Some(p.size),
                mirrors: mirrors.clone(),
                declared_in: format!("{LOCK_FILE} ({})", p.spec()),
            });
            let node = self.add(
                format!("//packages#{}_{}_{}.deb", p.name, p.version, p.architecture),
                p.sha256.as_bytes(),
                fetch,
                vec![],
            );
            deps.push(node);
            // The lock's copy of the repository: redacted, with the signer it was
            // resolved against.
            let locked = entry
                .repositories
                .iter()
                .find(|r| r.name == p.repository)
                .ok_or_else(|| CompileError::StaleLock {
                    image: req.target.clone(),
                    entry: req.entry.clone(),
                    at: req.at.clone(),
                })?;
            recorded.push(crate::manifest::Package {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                sha256: p.sha256.clone(),
                size: p.size,
                filename: p.filename.clone(),
                repository: crate::manifest::Repository {
                    name: locked.name.clone(),
                    url: crate::steps::fetch::redact_url(&locked.url).into_owned(),
                    suite: locked.suite.clone(),
                    signed_by: locked.signed_by.clone(),
                },
            });
            debs.push(LockedDeb {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                sha256: p.sha256.clone(),
                location: lock_line(text, &req.entry, &p.name),
            });
        }
        let shas = entry
            .packages
            .iter()
            .map(|p| p.sha256.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Ok((deps, debs, recorded, shas))
    }
}

/// `w4b.lock:LINE` of package `name` in entry `entry`, for `w4b why` to point at: the file
/// is written one package a line (see [`Lockfile::render`]).
fn lock_line(text: &str, entry: &str, name: &str) -> Option<String> {
    let header = format!("    {}: {{", serde_json::to_string(entry).ok()?);
    let needle = format!("{{\"name\":{},", serde_json::to_string(name).ok()?);
    let mut in_entry = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("    \"") {
            in_entry = line == header;
        } else if in_entry && line.trim_start().starts_with(&needle) {
            return Some(format!("{LOCK_FILE}:{}:9", i + 1));
        }
    }
    None
}

impl Compiler<'_> {
    /// A layer with an apt source (deb822) and the pinned key of every repository of the
    /// request marked `apt_source: true`, so the installed system updates from it; `None`
    /// when no repository is.
    pub(super) fn apt_sources_layer(
        &mut self,
        req: &LockRequest,
        epoch: &PlanEpoch,
        step_name: &str,
    ) -> miette::Result<Option<NodeId>> {
        use std::collections::BTreeMap;

        use crate::steps::layer::{FileOp, LayerFile};
        use crate::tree::TreePath;

        let mut files = Vec::new();
        let mut display = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (label, set) in &req.sets {
            for r in &set.repositories {
                let repo = &r.value;
                if !repo.apt_source || !seen.insert(repo.name.clone()) {
                    continue;
                }
                let defs::packages::Trust::Key { file, .. } = &repo.trust else {
                    continue;
                };
                let at = r.span.location().to_string();
                let host = super::host_path(self.ws, file.as_str(), || at.clone()).map_err(|_| {
                    CompileError::AptSourceKeyMissing {
                        repo: repo.name.clone(),
                        key: file.to_string(),
                        at: at.clone(),
                    }
                })?;
                let head = crate::defs::workspace::read(&host, file.as_str())?;
                let armored = head.starts_with(b"-----BEGIN PGP");
                let keyring = format!(
                    "/etc/apt/keyrings/w4b-{}.{}",
                    repo.name,
                    if armored { "asc" } else { "gpg" }
                );
                let sources = format!(
                    "# Added by w4b: the repository `{}` of the package set {label}, which the\n\
                     # image's packages were installed from.\n\
                     Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {keyring}\n",
                    repo.name,
                    crate::download::redact_url(&repo.url),
                    repo.suite,
                    repo.components.join(" "),
                );
                let path = |p: &str| TreePath::parse(p).expect("a valid path");
                if files.is_empty() {
                    files.push(LayerFile {
                        path: path("/etc/apt/keyrings"),
                        op: FileOp::Dir,
                        mode: Some(0o755),
                        uid: 0,
                        gid: 0,
                    });
                }
                display.insert(files.len() + 1, file.to_string());
                files.push(LayerFile {
                    path: path(&format!("/etc/apt/sources.list.d/w4b-{}.sources", repo.name)),
                    op: FileOp::Content(sources),
                    mode: Some(0o644),
                    uid: 0,
                    gid: 0,
                });
                files.push(LayerFile {
                    path: path(&keyring),
                    op: FileOp::Source(host),
                    mode: Some(0o644),
                    uid: 0,
                    gid: 0,
                });
            }
        }
        if files.is_empty() {
            return Ok(None);
        }
        let def = format!("apt sources {files:?} epoch={epoch}");
        Ok(Some(self.plain_layer(
            step_name.to_owned(),
            &def,
            files,
            BTreeMap::new(),
            display,
            epoch,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockfile::{Entry, LockedPackage};

    #[test]
    fn lock_line_points_at_the_package_in_its_entry() {
        let pkg = |name: &str| LockedPackage {
            name: name.into(),
            version: "1".into(),
            architecture: "arm64".into(),
            size: 1,
            sha256: "00".repeat(32),
            repository: "r".into(),
            filename: format!("pool/{name}.deb"),
        };
        let entry = |names: &[&str]| Entry {
            inputs: String::new(),
            architecture: "arm64".into(),
            repositories: vec![],
            base_packages: vec![],
            packages: names.iter().map(|n| pkg(n)).collect(),
        };
        let mut lock = Lockfile::new();
        lock.entries
            .insert("a for arm64 on //bases:x".into(), entry(&["nftables", "w4b-lib"]));
        lock.entries
            .insert("b for arm64 on //bases:x".into(), entry(&["w4b-lib"]));
        let text = lock.render();
        let at = |entry: &str, name: &str| {
            let loc = lock_line(&text, entry, name)?;
            let line: usize = loc.split(':').nth(1)?.parse().ok()?;
            Some(text.lines().nth(line - 1)?.to_owned())
        };
        let line = at("b for arm64 on //bases:x", "w4b-lib").unwrap();
        assert!(line.contains("\"name\":\"w4b-lib\""), "{line}");
        let a = lock_line(&text, "a for arm64 on //bases:x", "w4b-lib").unwrap();
        let b = lock_line(&text, "b for arm64 on //bases:x", "w4b-lib").unwrap();
        assert_ne!(a, b, "each entry's own line");
        assert_eq!(lock_line(&text, "a for arm64 on //bases:x", "nft"), None);
    }
}
