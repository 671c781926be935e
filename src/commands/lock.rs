//! `w4b lock [LABEL…] [--update [PKG…]] [--check]`: resolves the package sets of images
//! and hives into `w4b.lock` (see [`crate::lockfile`] and [`crate::apt::lock`]).
//!
//! Only entries that are missing or stale are resolved, keeping every locked version
//! that still fits; `--update` resolves every entry afresh, `--update PKG…` moves only
//! those packages (and whatever their new versions need). `--check` reads no network and
//! fails when the lock does not match the definitions, for CI.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use w4b_graph::exec::{BuildOptions, Engine, StepStatus};
use w4b_graph::graph::identity;
use w4b_graph::NodeId;

use super::App;
use crate::apt::lock::{self as resolve_lock, DefinedAt, EntryInputs, RepoRelease};
use crate::apt::resolve::{Candidate, Installed};
use crate::cli::LockArgs;
use crate::compile::{self, LockRequest};
use crate::defs::packages::{Repository, Trust};
use crate::defs::Workspace;
use crate::lockfile::{changes, Entry, Lockfile, LOCK_FILE};
use crate::steps::fetch::FetchStep;
use crate::tree::{Blobs, Kind, TreePath};
use crate::ui::progress::Lines;

pub fn run(app: &App, args: &LockArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let store = app.store(&ws)?;
    let whole = args.labels.is_empty();
    let patterns = if whole {
        vec!["//...".to_owned()]
    } else {
        args.labels.clone()
    };
    let labels = app.resolve(&ws, &patterns)?;
    let mut plan = compile::lock_plan(&ws, &store, &labels, &app.env, &app.global.set)?;
    let graph = std::mem::take(&mut plan.graph);
    let old = read_lock(&ws)?;

    let update_all = args.update.as_ref().is_some_and(|names| names.is_empty());
    let update_names: BTreeSet<String> = args.update.iter().flatten().cloned().collect();
    let mut new = Lockfile::new();
    // Entries no target of this run asks for stay when only some labels were locked.
    if !whole {
        new.entries = old.entries.clone();
    }
    let mut todo: Vec<(&LockRequest, Option<NodeId>, Option<&Entry>)> = Vec::new();
    for (req, tree) in &plan.requests {
        let previous = old.entries.get(&req.entry);
        match previous {
            Some(e) if e.inputs == req.inputs && args.update.is_none() => {
                new.entries.insert(req.entry.clone(), e.clone());
            }
            _ => todo.push((req, *tree, previous)),
        }
    }

    if args.check {
        let mut problems = Vec::new();
        for (req, _, previous) in &todo {
            problems.push(match previous {
                None => format!("`{}` (for `{}`) is not locked", req.entry, req.target),
                Some(_) => format!("`{}` (for `{}`) is stale", req.entry, req.target),
            });
        }
        for name in old
            .entries
            .keys()
            .filter(|n| whole && !new.entries.contains_key(*n))
        {
            if todo.iter().all(|(r, _, _)| &r.entry != name) {
                problems.push(format!("`{name}` is locked but no target uses it"));
            }
        }
        if problems.is_empty() {
            if !app.style.quiet {
                eprintln!("`{LOCK_FILE}` is up to date ({} entries)", new.entries.len());
            }
            return Ok(0);
        }
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!("help: run `w4b lock` and commit `{LOCK_FILE}`");
        return Ok(1);
    }

    let mut resolved: BTreeMap<String, Entry> = BTreeMap::new();
    if !todo.is_empty() {
        resolved = resolve(
            app,
            &ws,
            &store,
            &plan,
            graph,
            &todo,
            &new.entries,
            update_all,
            &update_names,
        )?;
    }
    for (name, entry) in &resolved {
        new.entries.insert(name.clone(), entry.clone());
    }
    let text = new.render();
    let unchanged = read_text(&ws)?.as_deref() == Some(text.as_str());
    if !unchanged {
        write_lock(&ws, &text)?;
    }
    if !app.style.quiet {
        for (name, entry) in &new.entries {
            let before = old.entries.get(name);
            let diff = changes(before.map_or(&[][..], |e| &e.packages), &entry.packages);
            if before.is_none() {
                eprintln!("locked `{name}`: {} packages", entry.packages.len());
            } else if !diff.is_empty() {
                eprintln!("updated `{name}`:");
            }
            if before.is_some() {
                for c in &diff {
                    eprintln!("  {c}");
                }
            }
        }
        for name in old.entries.keys().filter(|n| !new.entries.contains_key(*n)) {
            eprintln!("removed `{name}`: no target uses it");
        }
        if unchanged {
            eprintln!("`{LOCK_FILE}` is up to date ({} entries)", new.entries.len());
        }
    }
    Ok(0)
}

fn read_text(ws: &Workspace) -> miette::Result<Option<String>> {
    let path = ws.root().join(LOCK_FILE);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => {
            let real = crate::defs::beneath::resolve(ws.root(), LOCK_FILE).map_err(|e| {
                miette::miette!(code = "w4b::lock::unreadable", "cannot read `{LOCK_FILE}`: {e}")
            })?;
            let bytes = crate::defs::workspace::read(&real, LOCK_FILE)?;
            Ok(Some(String::from_utf8(bytes).map_err(|_| {
                miette::miette!(code = "w4b::lock::unreadable", "`{LOCK_FILE}` is not UTF-8 text")
            })?))
        }
    }
}

fn read_lock(ws: &Workspace) -> miette::Result<Lockfile> {
    match read_text(ws)? {
        None => Ok(Lockfile::new()),
        Some(text) => Lockfile::parse(LOCK_FILE, &text).map_err(|e| miette::Report::new(*e)),
    }
}

/// Replaces `w4b.lock` atomically: a reader sees the old file or the new one.
fn write_lock(ws: &Workspace, text: &str) -> miette::Result<()> {
    use std::io::Write;
    let io = |what: &str, e: std::io::Error| {
        miette::miette!(code = "w4b::lock::write", "cannot {what} `{LOCK_FILE}`: {e}")
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".w4b.lock.")
        .tempfile_in(ws.root())
        .map_err(|e| io("write", e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io("write", e))?;
    tmp.persist(ws.root().join(LOCK_FILE))
        .map_err(|e| io("replace", e.error))?;
    Ok(())
}

/// A repository as an entry uses it: the typed definition, and where it was defined.
struct RepoUse {
    repo: Repository,
    defined_in: DefinedAt,
}

/// The entry's repositories, in the sets' order, each once by name. Two sets that
/// define one name differently are an error.
fn repositories_of(req: &LockRequest) -> miette::Result<Vec<RepoUse>> {
    let mut out: Vec<RepoUse> = Vec::new();
    for (label, set) in &req.sets {
        for r in &set.repositories {
            match out.iter().find(|u| u.repo.name == r.value.name) {
                Some(u) if u.repo != r.value => {
                    return Err(miette::miette!(
                        code = "w4b::lock::repository_conflict",
                        help = "give one of them another `name:`, or define the repository once in a set the others extend",
                        "repository `{}` is defined differently in {} and `{label}` ({}) (both used by `{}`)",
                        r.value.name,
                        u.defined_in.text(),
                        r.span.location(),
                        req.target
                    ))
                }
                Some(_) => {}
                None => out.push(RepoUse {
                    repo: r.value.clone(),
                    defined_in: DefinedAt {
                        set: label.to_string(),
                        span: r.span.clone(),
                    },
                }),
            }
        }
    }
    if out.is_empty() {
        return Err(miette::miette!(
            code = "w4b::lock::no_repositories",
            help = "add `repositories:` to one of its package sets",
            "the package sets of `{}` name no repository (at {})",
            req.target,
            req.at
        ));
    }
    Ok(out)
}

/// The repository's pinned key file's bytes (`None` for `trusted: true`). A key file that
/// does not exist yet is fetched from the repository's `key_url`, kept only if its primary
/// keys are exactly among the pinned fingerprints, and written into the workspace.
fn repository_key(
    app: &App,
    ws: &Workspace,
    plan: &compile::LockPlan,
    u: &RepoUse,
) -> miette::Result<Option<Vec<u8>>> {
    let Trust::Key {
        file,
        fingerprints,
        url,
    } = &u.repo.trust
    else {
        return Ok(None);
    };
    let unreadable = |e: &dyn std::fmt::Display| {
        miette::miette!(
            code = "w4b::lock::bad_key",
            help = "the key file is a workspace path, written relative to the package set's file",
            "cannot read the key `{file}` of repository `{}`, defined in {}: {e}",
            u.repo.name,
            u.defined_in.text()
        )
    };
    let missing = matches!(
        std::fs::symlink_metadata(ws.root().join(file.as_str())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    );
    let Some(url) = url.as_ref().filter(|_| missing) else {
        let real = crate::defs::beneath::resolve(ws.root(), file.as_str()).map_err(|e| unreadable(&e))?;
        return Ok(Some(crate::defs::workspace::read(&real, file.as_str())?));
    };
    let shown = crate::download::redact_url(url).into_owned();
    if !app.style.quiet {
        eprintln!("fetching the key of repository `{}` from {shown}", u.repo.name);
    }
    let bytes = plan
        .fetcher
        .get_unpinned(url, &plan.mirrors, 1 << 20)
        .map_err(|e| {
            miette::miette!(
                code = "w4b::lock::key_unavailable",
                help = "check the URL and the network, or put the key into the workspace file yourself",
                "cannot fetch the key of repository `{}` from {shown} (defined in {}): {e}",
                u.repo.name,
                u.defined_in.text()
            )
        })?;
    let keys = crate::apt::signature::Keyring::from_bytes(&bytes).map_err(|e| {
        miette::miette!(
            code = "w4b::lock::bad_key",
            help = "the URL should serve the archive's OpenPGP public key",
            "{shown} did not serve an OpenPGP key for repository `{}`: {e}",
            u.repo.name
        )
    })?;
    let found: Vec<String> = keys.fingerprints().iter().map(|f| f.to_string()).collect();
    if found.is_empty() || found.iter().any(|f| !fingerprints.contains(f)) {
        return Err(miette::miette!(
            code = "w4b::lock::key_fingerprint",
            help = "the key was not written; if the archive rotated its key, check the new fingerprint out of band and pin it in `fingerprint:`",
            "the key served at {shown} for repository `{}` has the primary key(s) {}, not the pinned {} (defined in {})",
            u.repo.name,
            if found.is_empty() { "(none)".to_owned() } else { found.join(", ") },
            fingerprints.join(", "),
            u.defined_in.text()
        ));
    }
    let io =
        |e: std::io::Error| miette::miette!(code = "w4b::lock::write", "cannot write the key `{file}`: {e}");
    // Written into the key's directory as found beneath the workspace root (a symlink
    // out of the workspace is refused); the directory must exist.
    let (dir, name) = file.as_str().rsplit_once('/').unwrap_or(("", file.as_str()));
    let parent = if dir.is_empty() {
        ws.root().to_path_buf()
    } else {
        crate::defs::beneath::resolve(ws.root(), dir).map_err(|e| unreadable(&e))?
    };
    let dest = parent.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(".w4b-key.")
        .tempfile_in(parent)
        .map_err(io)?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist_noclobber(&dest).map_err(|e| io(e.error))?;
    if !app.style.quiet {
        eprintln!(
            "wrote `{file}` (fingerprint {}); commit it with `{LOCK_FILE}`",
            found.join(", ")
        );
    }
    Ok(Some(bytes))
}

/// Everything that identifies a repository's release for one architecture.
fn repo_key(r: &Repository, arch: &str) -> String {
    format!(
        "{} {} {} {:?} {:?} {arch}",
        r.name, r.url, r.suite, r.components, r.trust
    )
}

/// The request of the bootstrap entry `entry` among the plan's.
fn bootstrap_of<'p>(plan: &'p compile::LockPlan, entry: &str) -> miette::Result<&'p LockRequest> {
    plan.requests
        .iter()
        .map(|(r, _)| r)
        .find(|r| r.entry == entry)
        .ok_or_else(|| miette::miette!("the bootstrap entry `{entry}` is not planned"))
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    app: &App,
    ws: &Workspace,
    store: &Arc<crate::store::AppStore>,
    plan: &compile::LockPlan,
    mut graph: w4b_graph::Graph,
    todo: &[(&LockRequest, Option<NodeId>, Option<&Entry>)],
    current: &BTreeMap<String, Entry>,
    update_all: bool,
    update_names: &BTreeSet<String>,
) -> miette::Result<BTreeMap<String, Entry>> {
    // 1. Every repository's signed release, once: the entries' own, and for an image on a
    // bootstrapped base its base's (to read the base's packages' relations).
    let mut releases: BTreeMap<String, RepoRelease> = BTreeMap::new();
    let mut uses: Vec<Vec<String>> = Vec::new();
    let mut base_uses: Vec<Vec<String>> = Vec::new();
    for (req, _, _) in todo {
        let arch = req.arch.name();
        let mut keys = Vec::new();
        let mut base_keys = Vec::new();
        let base_req = match &req.on_bootstrap {
            Some(entry) => Some(bootstrap_of(plan, entry)?),
            None => None,
        };
        let own = repositories_of(req)?.into_iter().map(|u| (u, false));
        let base = match base_req {
            Some(b) => repositories_of(b)?,
            None => Vec::new(),
        };
        for (u, of_base) in own.chain(base.into_iter().map(|u| (u, true))) {
            let key = repo_key(&u.repo, arch);
            if !releases.contains_key(&key) {
                if !app.style.quiet {
                    eprintln!(
                        "reading `{}/dists/{}` for {arch}",
                        crate::download::redact_url(&u.repo.url),
                        u.repo.suite
                    );
                }
                let key_bytes = repository_key(app, ws, plan, &u)?;
                let rel = resolve_lock::read_release(
                    &plan.fetcher,
                    &plan.mirrors,
                    &u.repo,
                    key_bytes.as_deref(),
                    arch,
                    &u.defined_in,
                )
                .map_err(|e| miette::Report::new(*e))?;
                releases.insert(key.clone(), rel);
            }
            if of_base {
                base_keys.push(key);
            } else {
                keys.push(key);
            }
        }
        uses.push(keys);
        base_uses.push(base_keys);
    }

    // 2. The indices (fetch steps keyed by their sha256) and the bases' trees, through
    // the engine: cached, shared, and shown like any build.
    let mut index_nodes: BTreeMap<(String, usize), NodeId> = BTreeMap::new();
    for (key, rel) in &releases {
        for (i, index) in rel.indices.iter().enumerate() {
            let url = rel.index_url(index);
            let step = Arc::new(FetchStep {
                store: store.clone(),
                fetcher: plan.fetcher.clone(),
                url,
                sha256: index.sha256,
                size: Some(index.size),
                mirrors: rel.index_mirrors(index, &plan.mirrors),
                declared_in: format!("the release file of repository `{}`", rel.repo.name),
            });
            let def = hex::encode(index.sha256);
            let id = identity("fetch", def.as_bytes(), &[]);
            let name = format!("//repositories:{}#{}", rel.repo.name, index.path);
            let node = graph.add(name, id, step, vec![]);
            index_nodes.insert((key.clone(), i), node);
        }
    }
    let mut roots: Vec<NodeId> = index_nodes.values().copied().collect();
    roots.extend(todo.iter().filter_map(|(_, tree, _)| *tree));
    let cancel = AtomicBool::new(false);
    // `-v` step lines (and `-vv` commands under their step), as `build` logs them.
    let lines = Lines {
        quiet: app.style.quiet || crate::ui::log::terminal_shows(crate::ui::log::Level::Step),
    };
    let log = crate::ui::progress::LogObserver {
        cache: store.as_ref(),
        previous: BTreeMap::new(),
    };
    let observer = crate::ui::progress::Tee(vec![&lines, &log]);
    let engine = Engine {
        graph: &graph,
        cache: store.as_ref(),
        observer: &observer,
        cancel: &cancel,
        options: BuildOptions {
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            force: false,
            keep_going: false,
            force_nodes: BTreeMap::new(),
            producer: app.producer(),
        },
    };
    let report = engine.build(&roots).map_err(|e| match e {
        w4b_graph::exec::PlanError::Step { step, error } => super::step_error(&step, error),
    })?;
    if let Some(f) = report.failures.into_iter().next() {
        return Err(super::step_error(&f.step, f.error));
    }
    let output = |node: NodeId, name: &str| -> miette::Result<w4b_cache::Digest> {
        report
            .results
            .get(&node)
            .filter(|r| matches!(r.status, StepStatus::Ran | StepStatus::Cached))
            .and_then(|r| r.outputs.get(name))
            .map(|o| o.digest)
            .ok_or_else(|| miette::miette!("step `{}` did not finish", graph.node(node).name))
    };
    let blobs: &dyn Blobs = store.as_ref();

    // 3. Candidates per repository release.
    let mut candidates: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for (key, rel) in &releases {
        let mut all = Vec::new();
        for (i, index) in rel.indices.iter().enumerate() {
            let digest = output(index_nodes[&(key.clone(), i)], "file")?;
            let bytes = blobs.get(&digest).map_err(miette::Report::new)?;
            // The position is fixed per entry below; 0 here.
            all.extend(resolve_lock::read_index(rel, index, &bytes, 0).map_err(|e| miette::Report::new(*e))?);
        }
        candidates.insert(key.clone(), all);
    }

    // 4. Each entry.
    let status_path = TreePath::parse("/var/lib/dpkg/status").map_err(miette::Report::new)?;
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    for (((req, tree, previous), keys), base_keys) in todo.iter().zip(&uses).zip(&base_uses) {
        let base_name = req
            .base
            .as_ref()
            .map_or_else(|| "scratch".to_owned(), |(l, _)| l.to_string());
        let base: Vec<Installed> = match (tree, &req.on_bootstrap) {
            (Some(tree), _) => {
                let root = output(*tree, "tree")?;
                let status = match crate::tree::lookup(blobs, root, &status_path)
                    .map_err(miette::Report::new)?
                {
                    Some(e) => match e.kind {
                        Kind::File { digest, .. } => Some(blobs.get(&digest).map_err(miette::Report::new)?),
                        _ => None,
                    },
                    None => None,
                };
                resolve_lock::read_base(&base_name, status.as_deref()).map_err(|e| miette::Report::new(*e))?
            }
            // On a bootstrapped base: what its entry (resolved above, or current) installs.
            (None, Some(entry)) => {
                let locked = out.get(entry).or_else(|| current.get(entry)).ok_or_else(|| {
                    miette::miette!(
                        code = "w4b::lock::missing",
                        help = "run `w4b lock` without labels, or with the base's label too",
                        "the base `{base_name}` of `{}` is not locked (`{entry}`)",
                        req.target
                    )
                })?;
                let universe: Vec<Candidate> = base_keys
                    .iter()
                    .flat_map(|k| candidates[k].iter().cloned())
                    .collect();
                resolve_lock::installed_from_entry(&universe, locked).map_err(|spec| {
                    miette::miette!(
                        code = "w4b::lock::base_package_gone",
                        help = "the base's lock pins a version its repositories no longer offer; run `w4b lock --update` to move the base and its images to current versions",
                        "`{spec}` of the base `{base_name}` (`{entry}`) is not in its repositories any more (locking `{}`)",
                        req.target
                    )
                })?
            }
            (None, None) => Vec::new(),
        };
        let per_repo: Vec<Vec<Candidate>> = keys
            .iter()
            .enumerate()
            .map(|(pos, k)| {
                let mut v = candidates[k].clone();
                for c in &mut v {
                    c.repository = pos;
                }
                v
            })
            .collect();
        let repositories: Vec<(&RepoRelease, &[Candidate])> = keys
            .iter()
            .zip(&per_repo)
            .map(|(k, c)| (&releases[k], c.as_slice()))
            .collect();
        let prefer: BTreeMap<String, String> = match previous {
            Some(e) if !update_all => e
                .packages
                .iter()
                .filter(|p| !update_names.contains(&p.name))
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let arch = req.arch.name();
        let entry = resolve_lock::resolve_entry(&EntryInputs {
            entry: &req.entry,
            target: &req.target,
            at: &req.at,
            inputs: &req.inputs,
            arch,
            sets: &req.sets,
            repositories: &repositories,
            base: &base,
            prefer: &prefer,
            bootstrap: req.bootstrap,
        })
        .map_err(|e| miette::Report::new(*e))?;
        out.insert(req.entry.clone(), entry);
    }
    Ok(out)
}
