//! `w4b build LABEL…`: compile targets into one graph, run it, export outputs, record
//! history for `why`, print the summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use w4b_cache::{CacheError, Digest};
use w4b_graph::exec::{BuildOptions, BuildReport, Engine, Observer, StepStatus};
use w4b_graph::{history, MissReason, NodeId};

use super::App;
use crate::cli::BuildArgs;
use crate::compile::Plan;
use crate::store::AppStore;
use crate::ui::progress::{Bars, JsonLines, Lines};

pub fn run(app: &App, args: &BuildArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let store = app.store(&ws)?;
    let _lease = store.lease()?;
    let plan = app.compile(&ws, &store, &args.labels)?;
    let roots: Vec<_> = plan
        .targets
        .iter()
        .flat_map(|t| t.roots.iter().copied())
        .collect();

    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C asks running steps to stop; nothing incomplete is ever recorded. A second
    // Ctrl-C terminates at once (the store is crash-safe).
    let _ =
        signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());

    let bars = (!app.style.json && app.style.tty && !app.style.quiet).then(Bars::new);
    let json = JsonLines::new();
    let lines = Lines {
        quiet: app.style.quiet,
    };
    let observer: &dyn Observer = if app.style.json {
        &json
    } else if let Some(b) = &bars {
        b
    } else {
        &lines
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let options = BuildOptions {
        jobs,
        force: args.force,
        keep_going: args.keep_going,
        force_nodes: BTreeMap::new(),
        producer: app.producer(),
    };
    let engine = |options: BuildOptions| Engine {
        graph: &plan.graph,
        cache: store.as_ref(),
        observer,
        cancel: &cancel,
        options,
    };
    let plan_err = |e: w4b_graph::exec::PlanError| match e {
        w4b_graph::exec::PlanError::Step { step, error } => super::step_error(&step, error),
    };
    let mut report = engine(options.clone()).build(&roots).map_err(plan_err)?;

    let out_dir = app.out_dir(&ws, args.out.as_deref());
    let mut exported = export(&store, &plan, &report, &out_dir)?;
    if !exported.repair.is_empty() {
        // An output that was a cache hit turned out corrupt (or gone) when copied out: run
        // its step again and export once more.
        let again = engine(BuildOptions {
            force_nodes: exported.repair.clone(),
            ..options
        })
        .build(&roots)
        .map_err(plan_err)?;
        report = merge(report, again);
        exported = export(&store, &plan, &report, &out_dir)?;
        if let Some((node, _)) = exported.repair.iter().next() {
            return Err(miette::miette!(
                code = "w4b::build::export",
                help = "run `w4b cache verify`; the disk under the cache may be failing",
                "the output of `{}` is still unreadable after re-running it",
                plan.graph.node(*node).name
            ));
        }
    }
    if let Some(b) = &bars {
        b.finish();
    }
    store.save_statcache();
    store.save_parse_cache();

    for t in &plan.targets {
        let complete = t.roots.iter().all(|r| {
            report
                .results
                .get(r)
                .is_some_and(|x| matches!(x.status, StepStatus::Ran | StepStatus::Cached))
        });
        if complete {
            history::record(
                store.as_ref(),
                &plan.graph,
                &report,
                &t.label.to_string(),
                &t.roots,
            )
            .map_err(|e| miette::miette!("recording the build history failed: {e}"))?;
        }
    }

    let (ran, cached, failed) = (
        report.count(StepStatus::Ran),
        report.count(StepStatus::Cached),
        report.count(StepStatus::Failed),
    );
    let steps = report.results.len();
    if app.style.json {
        json.flush();
        println!(
            "{}",
            serde_json::json!({"event": "finished", "steps": steps, "ran": ran, "cached": cached, "failed": failed})
        );
    } else {
        if !app.style.quiet {
            for (dest, digest, size) in &exported.files {
                eprintln!(
                    "  output {} ({}, blake3 {})",
                    app.display_path(dest),
                    crate::ui::bytes(*size),
                    digest.short(16)
                );
            }
        }
        let mut summary = format!("{steps} steps: {ran} ran, {cached} cached");
        if failed > 0 {
            summary.push_str(&format!(", {failed} failed"));
        }
        let skipped = report.count(StepStatus::Skipped);
        if skipped > 0 {
            summary.push_str(&format!(", {skipped} not run"));
        }
        eprintln!("{summary}");
    }
    if let Ok(w) = store.warnings.lock() {
        if let Some(first) = w.first() {
            eprintln!("warning: {first}");
            if w.len() > 1 {
                eprintln!(
                    "warning: … and {} more remote publication failure(s)",
                    w.len() - 1
                );
            }
        }
    }
    if report.cancelled {
        eprintln!("interrupted: finished steps are cached; run the same command to continue");
        return Ok(130);
    }
    // The first failure in graph order, whatever order the workers finished in.
    let mut failures = report.failures;
    failures.sort_by_key(|f| {
        plan.graph
            .find(&f.step)
            .map(|id| id.index())
            .unwrap_or(usize::MAX)
    });
    if let Some(f) = failures.into_iter().next() {
        return Err(super::step_error(&f.step, f.error));
    }
    Ok(0)
}

struct Exported {
    files: Vec<(PathBuf, Digest, u64)>,
    /// Steps whose output could not be read back intact.
    repair: BTreeMap<NodeId, MissReason>,
}

/// Copies every complete target's outputs into `out_dir`, atomically and verified.
fn export(
    store: &AppStore,
    plan: &Plan,
    report: &BuildReport,
    out_dir: &std::path::Path,
) -> miette::Result<Exported> {
    let mut ex = Exported {
        files: Vec::new(),
        repair: BTreeMap::new(),
    };
    for t in &plan.targets {
        for e in &t.exports {
            let Some(out) = report.results.get(&e.node).and_then(|r| r.outputs.get(&e.output)) else {
                continue;
            };
            let dest = out_dir.join(&e.file_name);
            match store.export(&out.digest, &dest) {
                Ok(()) => ex.files.push((dest, out.digest, out.size)),
                Err(CacheError::Corrupt { expected, .. }) => {
                    ex.repair.insert(
                        e.node,
                        MissReason::OutputCorrupt {
                            output: e.output.clone(),
                            digest: expected,
                        },
                    );
                }
                Err(CacheError::Missing { digest, .. }) => {
                    ex.repair.insert(
                        e.node,
                        MissReason::OutputMissing {
                            output: e.output.clone(),
                            digest,
                        },
                    );
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
    Ok(ex)
}

/// The second pass's results, keeping "ran" (and why) for steps that ran in the first.
fn merge(first: BuildReport, mut second: BuildReport) -> BuildReport {
    for (id, r) in first.results {
        if r.status == StepStatus::Ran {
            if let Some(s) = second.results.get_mut(&id) {
                if s.status == StepStatus::Cached {
                    *s = r;
                }
            }
        }
    }
    second.failures.extend(first.failures);
    second.cancelled |= first.cancelled;
    second
}
