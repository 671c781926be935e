//! `w4b build LABEL…`: compile targets into one graph, run it, export outputs, record
//! history for `why`, print the summary.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use w4b_graph::exec::{BuildOptions, Engine, Observer, StepStatus};
use w4b_graph::history;

use super::App;
use crate::cli::BuildArgs;
use crate::ui::progress::{Bars, JsonLines, Lines};

pub fn run(app: &App, args: &BuildArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let store = app.store(&ws)?;
    let _lease = store.lease()?;
    let plan = app.compile(&ws, &store, &args.labels)?;
    let roots: Vec<_> = plan.targets.iter().flat_map(|t| t.roots.iter().copied()).collect();

    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C asks running steps to stop; nothing incomplete is ever recorded. A second
    // Ctrl-C terminates at once (the store is crash-safe).
    let _ = signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());

    let bars = (!app.style.json && app.style.tty && !app.style.quiet).then(Bars::new);
    let json = JsonLines;
    let lines = Lines { quiet: app.style.quiet };
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
    let engine = Engine {
        graph: &plan.graph,
        cache: store.as_ref(),
        observer,
        cancel: &cancel,
        options: BuildOptions {
            jobs,
            force: args.force,
            keep_going: args.keep_going,
            producer: app.producer(),
        },
    };
    let report = engine.build(&roots).map_err(|e| match e {
        w4b_graph::exec::PlanError::Step { step, error } => super::step_error(&step, error),
    })?;
    if let Some(b) = &bars {
        b.finish();
    }
    store.save_statcache();

    // Export and record every target that completed.
    let out_dir = app.out_dir(&ws, args.out.as_deref());
    let mut exported = Vec::new();
    for t in &plan.targets {
        let complete = t.roots.iter().all(|r| {
            report
                .results
                .get(r)
                .is_some_and(|x| matches!(x.status, StepStatus::Ran | StepStatus::Cached))
        });
        if !complete {
            continue;
        }
        history::record(store.as_ref(), &plan.graph, &report, &t.label.to_string(), &t.roots)
            .map_err(|e| miette::miette!("recording the build history failed: {e}"))?;
        for ex in &t.exports {
            let Some(out) = report.results.get(&ex.node).and_then(|r| r.outputs.get(&ex.output)) else {
                continue;
            };
            let dest = out_dir.join(&ex.file_name);
            store.export(&out.digest, &dest)?;
            exported.push((dest, out.digest, out.size));
        }
    }

    let (ran, cached, failed) = (
        report.count(StepStatus::Ran),
        report.count(StepStatus::Cached),
        report.count(StepStatus::Failed),
    );
    let steps = report.results.len();
    if app.style.json {
        println!(
            "{}",
            serde_json::json!({"event": "finished", "steps": steps, "ran": ran, "cached": cached, "failed": failed})
        );
    } else {
        if !app.style.quiet {
            for (dest, digest, size) in &exported {
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
    if report.cancelled {
        eprintln!("interrupted: finished steps are cached; run the same command to continue");
        return Ok(130);
    }
    if let Some(f) = report.failures.into_iter().next() {
        return Err(super::step_error(&f.step, f.error));
    }
    Ok(0)
}
