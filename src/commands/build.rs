//! `w4b build LABEL…`: compile targets into one graph, run it, export outputs, record
//! history for `why`, print the summary. With `--test` (and for `w4b test LABEL`, which
//! builds through [`run_with`]) each disk image's `#test` step is added after its disk
//! (`compile::add_tests`) and the tests' outcomes are printed after the outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use w4b_cache::{CacheError, Digest};
use w4b_graph::exec::{BuildOptions, BuildReport, Engine, Observer, StepStatus};
use w4b_graph::{history, MissReason, NodeId, Silent};

use super::{rebuild, App};
use crate::cli::BuildArgs;
use crate::compile::{self, Plan, TestNode, TestRequest};
use crate::defs::test_spec::TestDef;
use crate::store::{AppStore, AutoGc};
use crate::ui::log::Level;
use crate::ui::progress::{Bars, JsonLines, Lines, LogObserver, Tee};
use crate::vmtest;

/// Boot tests a build runs besides its steps (`--test`, `w4b test LABEL`).
#[derive(Clone, Debug)]
pub struct Tests {
    /// Merged over each image's own `test:` (the options of `w4b test`).
    pub over: TestDef,
    /// How to run the machines; `log_dir`, when given, is where the reports and boot logs
    /// go instead of the output directory.
    pub vm: vmtest::Options,
    /// Boot again even when a cached verdict exists.
    pub retest: bool,
    /// Every target must be a disk image (`w4b test LABEL`); otherwise tar archives are
    /// left untested with a note.
    pub required: bool,
    /// Print a ran test's whole report as a table (`w4b test LABEL`), rather than one line.
    pub tables: bool,
}

impl Tests {
    /// `build --test`: each image's own test, nothing added.
    pub fn of_build(app: &App) -> Tests {
        Tests {
            over: TestDef::default(),
            vm: vmtest::Options {
                path: app.env.get("PATH").cloned(),
                ..vmtest::Options::default()
            },
            retest: false,
            required: false,
            tables: false,
        }
    }
}

pub fn run(app: &App, args: &BuildArgs) -> miette::Result<i32> {
    let tests = args.test.then(|| Tests::of_build(app));
    run_with(app, args, tests.as_ref())
}

/// A build, with boot tests when `tests` is given.
pub fn run_with(app: &App, args: &BuildArgs, tests: Option<&Tests>) -> miette::Result<i32> {
    with_store(app, |ws, store| build(app, args, ws, store, tests))?.into_result()
}

/// Runs `f` with the workspace and its store, then applies the cache size limit, whatever
/// `f` returned: the shell of every command that builds (`build`, `test`, `publish`).
pub fn with_store<T>(
    app: &App,
    f: impl FnOnce(&crate::defs::Workspace, &Arc<AppStore>) -> miette::Result<T>,
) -> miette::Result<T> {
    let ws = app.workspace()?;
    let store = app.store(&ws)?;
    let result = f(&ws, &store);
    // After every build, successful or not: the cache stays within its limit.
    if let Some(line) = enforce_limit(app, &ws, &store) {
        if !app.style.quiet {
            eprintln!("{line}");
        }
    }
    result
}

/// What a build did, target by target, and how it ends.
pub struct Outcome {
    /// The exit code when there is no `error`: 0, or 130 when interrupted.
    pub code: i32,
    /// The first failure (in graph order), or what says that some targets did not build.
    pub error: Option<miette::Report>,
    pub targets: Vec<Built>,
}

impl Outcome {
    pub fn into_result(self) -> miette::Result<i32> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.code),
        }
    }
}

/// One target of a build.
pub struct Built {
    pub label: crate::defs::Label,
    pub result: TargetResult,
    /// The files exported into the output directory: (file name, path, size).
    pub files: Vec<(String, PathBuf, u64)>,
    pub manifest: Option<PathBuf>,
    /// The target's `SOURCE_DATE_EPOCH`, once known.
    pub epoch: Option<i64>,
    /// Milliseconds its steps ran in this build (a step shared with other targets counts
    /// for each); cached steps cost nothing.
    pub ran_ms: u64,
    pub about: crate::compile::About,
    /// The disk image's file name (`north.img.zst`) and its uncompressed disk in the store
    /// (digest, size); `None` for a tar archive.
    pub disk: Option<(String, Digest, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetResult {
    Ok,
    /// A step of it failed (its name).
    Failed(String),
    /// It did not compile (`--keep-going` built the others).
    Broken,
    /// Not every step ran: another target failed first, or the build was interrupted.
    NotBuilt,
}

impl TargetResult {
    fn word(&self) -> &'static str {
        match self {
            TargetResult::Ok => "ok",
            TargetResult::Failed(_) => "failed",
            TargetResult::Broken => "broken",
            TargetResult::NotBuilt => "not built",
        }
    }
}

/// Ends the build's lease and applies the cache size limit; the line to print when a GC
/// ran or could not.
fn enforce_limit(app: &App, ws: &crate::defs::Workspace, store: &AppStore) -> Option<String> {
    let ended = store.end_lease();
    let limit = app.cache_limit(Some(ws))?;
    let outcome = ended.and_then(|()| store.enforce_limit(limit));
    let bytes = crate::ui::bytes;
    match outcome {
        Ok(None) => None,
        Ok(Some(AutoGc::Ran { report, limit })) => Some(format!(
            "cache: over its {} limit: removed {} record(s), freed {}; now {} of {}",
            bytes(limit),
            report.records_removed,
            bytes(report.bytes_freed),
            bytes(report.bytes_total),
            bytes(limit)
        )),
        Ok(Some(AutoGc::Busy { estimate, limit })) => Some(format!(
            "warning: the cache holds about {} of its {} limit, but another GC or a build of an older w4b holds it; the next build tries again\n  help: `w4b cache gc` collects now; it waits for nothing",
            bytes(estimate),
            bytes(limit)
        )),
        Err(e) => Some(format!(
            "warning: could not apply the cache size limit: {e}\n  help: run `w4b cache gc`; `w4b cache stats` shows the limit and the estimate"
        )),
    }
}

/// Each step's key in the last recorded build of the planned targets, for the log's
/// "what changed" lines.
fn previous_keys(cache: &dyn w4b_graph::Cache, plan: &Plan) -> BTreeMap<String, Digest> {
    let mut keys = BTreeMap::new();
    for t in &plan.targets {
        if let Ok(Some(h)) = history::load(cache, &t.label.to_string()) {
            if let Some(last) = h.builds.first() {
                for s in &last.steps {
                    keys.entry(s.name.clone()).or_insert(s.key);
                }
            }
        }
    }
    keys
}

/// Refuses a build of several hives of which two would get one hive id or one VPN
/// address, as `w4b hive validate` reports them (a `W4B_HIVE_ID` or a `--set` meant for
/// one hive reaching a whole fleet, or a copied hive file): images that would fight over
/// one WireGuard address or host name. Checked before anything is compiled or built, on
/// the values the images would get; a single hive is not checked (`hive validate` compares it with
/// the fleet).
fn refuse_shared_identities(
    app: &App,
    ws: &crate::defs::Workspace,
    store: &AppStore,
    patterns: &[String],
) -> miette::Result<()> {
    let labels = app.resolve(ws, patterns)?;
    if labels.len() < 2 {
        return Ok(());
    }
    // Through the store's parse cache, as the compile after it: a no-op build of many
    // targets reads no definition file for this.
    let loader = crate::defs::Loader::new(ws.clone(), app.env.clone(), &app.global.set)?
        .with_parse_cache(store.parse_cache());
    let (members, _) = crate::hive::fleet::scan(&loader, &labels);
    if members.len() < 2 {
        return Ok(());
    }
    let problems = crate::hive::fleet::check(&members, &ws.config().vpn);
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    for p in problems {
        super::show_diagnostic(&miette::Report::new(p));
    }
    Err(miette::miette!(
        code = "w4b::hive::fleet_conflict",
        help = "give each hive its own id and address (`w4b hive validate //hives/...` lists them; a `W4B_HIVE_ID` or `--set` is for one hive: unset it for a fleet build), or build the hives one at a time",
        "not building: {n} hive id{} or VPN address{} of this build would be shared by two hives",
        if n == 1 { "" } else { "s" },
        if n == 1 { "" } else { "es" }
    ))
}

/// Compiles and runs the graph of `args.labels`, exports and records what was built, and
/// prints the outputs, the tests and (for more than one target) the summary table.
pub fn build(
    app: &App,
    args: &BuildArgs,
    ws: &crate::defs::Workspace,
    store: &Arc<AppStore>,
    tests: Option<&Tests>,
) -> miette::Result<Outcome> {
    let store = store.clone();
    refuse_shared_identities(app, ws, &store, &args.labels)?;
    let mut plan = app.compile_with(ws, &store, &args.labels, args.keep_going)?;
    for (_, e) in &plan.broken {
        super::show_diagnostic(e);
    }
    let out_dir = app.out_dir(ws, args.out.as_deref());
    let test_nodes = match tests {
        None => Vec::new(),
        Some(t) => plan_tests(app, &mut plan, &store, t, &out_dir)?,
    };
    // Each target's steps as its history records them: its roots and its test.
    let target_roots = |i: usize| -> Vec<NodeId> {
        let mut r = plan.targets[i].roots.clone();
        r.extend(test_nodes.iter().filter(|n| n.target == i).map(|n| n.node));
        r
    };
    let roots: Vec<_> = (0..plan.targets.len()).flat_map(target_roots).collect();

    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C asks running steps to stop; nothing incomplete is ever recorded. A second
    // Ctrl-C terminates at once (the store is crash-safe).
    let _ =
        signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());

    // With `-v` the log's step lines replace the progress display on the terminal.
    let verbose = crate::ui::log::terminal_shows(Level::Step);
    let bars = (!app.style.json && app.style.tty && !app.style.quiet && !verbose).then(Bars::new);
    let json = JsonLines::new();
    let lines = Lines {
        quiet: app.style.quiet,
    };
    let display: &dyn Observer = if app.style.json {
        &json
    } else if let Some(b) = &bars {
        b
    } else if verbose {
        &Silent
    } else {
        &lines
    };
    let log = LogObserver {
        cache: store.as_ref(),
        previous: match crate::ui::log::enabled(Level::Step) {
            true => previous_keys(store.as_ref(), &plan),
            false => BTreeMap::new(),
        },
    };
    let tee = Tee(vec![display, &log]);
    let observer: &dyn Observer = &tee;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let options = BuildOptions {
        jobs,
        force: args.force,
        keep_going: args.keep_going,
        force_nodes: match tests {
            Some(t) if t.retest => test_nodes.iter().map(|n| (n.node, MissReason::Forced)).collect(),
            _ => BTreeMap::new(),
        },
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

    let mut exported = export(&store, &plan, &report, &out_dir)?;
    if !exported.repair.is_empty() {
        // An output that was a cache hit turned out corrupt (or gone) when copied out: run
        // its step again and export once more.
        // Only the repaired steps are forced this time: a test that just ran is cached.
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
    let sign_key = match &args.sign_key {
        None => None,
        Some(p) => Some(read_sign_key(&app.cwd.join(p))?),
    };
    for (i, t) in plan.targets.iter().enumerate() {
        if let Some(path) = write_manifest(&store, &plan, t, &report, &out_dir, sign_key.as_ref())? {
            exported.manifests.push((i, path));
        }
    }
    store.save_parse_cache();

    for (i, t) in plan.targets.iter().enumerate() {
        let roots = target_roots(i);
        let complete = roots.iter().all(|r| {
            report
                .results
                .get(r)
                .is_some_and(|x| matches!(x.status, StepStatus::Ran | StepStatus::Cached))
        });
        if complete {
            history::record(store.as_ref(), &plan.graph, &report, &t.label.to_string(), &roots)
                .map_err(|e| miette::miette!("recording the build history failed: {e}"))?;
        }
    }

    let (ran, cached, failed) = (
        report.count(StepStatus::Ran),
        report.count(StepStatus::Cached),
        report.count(StepStatus::Failed),
    );
    let steps = report.results.len();
    for n in &test_nodes {
        cached_test_report(app, &store, &report, n);
    }
    let targets = built(&store, &plan, &report, &exported, &target_roots);
    if app.style.json {
        json.flush();
        for n in &test_nodes {
            print_test(app, &store, &plan, &report, n, false);
        }
        for b in &targets {
            println!(
                "{}",
                serde_json::json!({
                    "event": "target-finished",
                    "target": b.label.to_string(),
                    "result": b.result.word(),
                    "failed_step": match &b.result { TargetResult::Failed(s) => Some(s), _ => None },
                    "image": b.files.first().map(|f| f.1.display().to_string()),
                    "size": b.files.first().map(|f| f.2),
                    "ran_ms": b.ran_ms,
                })
            );
        }
        println!(
            "{}",
            serde_json::json!({"event": "finished", "steps": steps, "ran": ran, "cached": cached, "failed": failed})
        );
    } else {
        if !app.style.quiet {
            for (_, dest, digest, size) in &exported.files {
                eprintln!(
                    "  output {} ({}, blake3 {})",
                    app.display_path(dest),
                    crate::ui::bytes(*size),
                    digest.short(16)
                );
            }
            for (_, m) in &exported.manifests {
                eprintln!("  manifest {}", app.display_path(m));
            }
        }
        if let Some(t) = tests {
            for n in &test_nodes {
                print_test(app, &store, &plan, &report, n, t.tables);
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
        if targets.len() > 1 {
            eprint!("{}", summary_table(app, &targets));
        }
        eprintln!("{summary}");
    }
    for line in super::cache::store_warnings(&store) {
        eprintln!("{line}");
    }
    let outcome = |code: i32, error: Option<miette::Report>| Outcome { code, error, targets };
    if report.cancelled {
        eprintln!("interrupted: finished steps are cached; run the same command to continue");
        return Ok(outcome(130, None));
    }
    // The first failure in graph order, whatever order the workers finished in.
    let mut failures = std::mem::take(&mut report.failures);
    failures.sort_by_key(|f| {
        plan.graph
            .find(&f.step)
            .map(|id| id.index())
            .unwrap_or(usize::MAX)
    });
    if let Some(f) = failures.into_iter().next() {
        return Ok(outcome(1, Some(super::step_error(&f.step, f.error))));
    }
    if !plan.broken.is_empty() {
        let names: Vec<String> = plan.broken.iter().map(|(l, _)| format!("`{l}`")).collect();
        let error = miette::miette!(
            code = "w4b::build::targets_broken",
            help = "fix the definitions named above; `--keep-going` built the other targets",
            "{} of {} targets did not compile: {}",
            names.len(),
            names.len() + plan.targets.len(),
            names.join(", ")
        );
        return Ok(outcome(1, Some(error)));
    }
    if args.check {
        check(app, ws, &store, &plan, &report, jobs)?;
    }
    Ok(outcome(0, None))
}

/// Each target's result, exported files, epoch and time; broken targets last.
fn built(
    store: &AppStore,
    plan: &Plan,
    report: &BuildReport,
    exported: &Exported,
    target_roots: &dyn Fn(usize) -> Vec<NodeId>,
) -> Vec<Built> {
    let mut all = Vec::new();
    for (i, t) in plan.targets.iter().enumerate() {
        let roots = target_roots(i);
        let closure = plan.graph.closure(&roots);
        let status = |id: &NodeId| report.results.get(id).map(|r| r.status);
        let failed = closure
            .iter()
            .find(|id| status(id) == Some(StepStatus::Failed))
            .map(|id| plan.graph.node(*id).name.clone());
        let complete = roots
            .iter()
            .all(|r| matches!(status(r), Some(StepStatus::Ran | StepStatus::Cached)));
        let result = match (failed, complete) {
            (Some(step), _) => TargetResult::Failed(step),
            (None, true) => TargetResult::Ok,
            (None, false) => TargetResult::NotBuilt,
        };
        let ran_ms = closure
            .iter()
            .filter_map(|id| report.results.get(id))
            .filter(|r| r.status == StepStatus::Ran)
            .map(|r| r.duration_ms)
            .sum();
        let files = exported
            .files
            .iter()
            .filter(|f| f.0 == i)
            .map(|(_, path, _, size)| {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, path.clone(), *size)
            })
            .collect();
        let disk = t.test.as_ref().and_then(|tp| {
            let out = report.results.get(&tp.disk)?.outputs.get("disk")?;
            Some((tp.image_file.clone(), out.digest, out.size))
        });
        all.push(Built {
            label: t.label.clone(),
            epoch: target_epoch(store, t, report).ok().flatten(),
            result,
            files,
            manifest: exported.manifests.iter().find(|m| m.0 == i).map(|m| m.1.clone()),
            ran_ms,
            about: t.about.clone(),
            disk,
        });
    }
    for (label, _) in &plan.broken {
        all.push(Built {
            label: label.clone(),
            result: TargetResult::Broken,
            files: Vec::new(),
            manifest: None,
            epoch: None,
            ran_ms: 0,
            about: Default::default(),
            disk: None,
        });
    }
    all
}

/// The fleet summary: one row per target (result, image, size, time of the steps that
/// ran), then the failed steps.
fn summary_table(app: &App, targets: &[Built]) -> String {
    let rows: Vec<[String; 5]> = targets
        .iter()
        .map(|b| {
            let (image, size) = match b.files.first() {
                Some((_, path, size)) if b.result == TargetResult::Ok => {
                    (app.display_path(path), crate::ui::bytes(*size))
                }
                _ => ("-".to_owned(), "-".to_owned()),
            };
            [
                b.label.to_string(),
                b.result.word().to_owned(),
                image,
                size,
                format!("{:.1} s", b.ran_ms as f64 / 1000.0),
            ]
        })
        .collect();
    let head = ["target", "result", "image", "size", "time"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut l = String::from(" ");
        for (c, w) in cells.iter().zip(widths) {
            l.push_str(&format!(" {c:<w$}"));
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(head);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    let ok = targets.iter().filter(|b| b.result == TargetResult::Ok).count();
    out.push_str(&format!("  {ok} of {} targets built\n", targets.len()));
    for b in targets {
        if let TargetResult::Failed(step) = &b.result {
            out.push_str(&format!(
                "  {}: step `{step}` failed (the error is below)\n",
                b.label
            ));
        }
    }
    out
}

/// Adds the tests to the plan: reports and boot logs go to `--log DIR` or the output
/// directory. A target that cannot be tested (a tar archive) is an error when the tests
/// are required, else a note.
fn plan_tests(
    app: &App,
    plan: &mut Plan,
    store: &Arc<AppStore>,
    t: &Tests,
    out_dir: &std::path::Path,
) -> miette::Result<Vec<TestNode>> {
    for target in plan.targets.iter().filter(|x| x.test.is_none()) {
        if t.required {
            return Err(miette::miette!(
                code = "w4b::test::not_a_disk",
                help = "only disk images boot; a target with `output.format: tar` is tested by the image it goes into",
                "`{}` builds a tar archive, not a disk image",
                target.label
            ));
        }
        if !app.style.quiet && !app.style.json {
            eprintln!("note: `{}` builds a tar archive; it is not booted", target.label);
        }
    }
    let artifacts = t.vm.log_dir.clone().unwrap_or_else(|| out_dir.to_path_buf());
    let request = TestRequest {
        over: t.over.clone(),
        over_location: "`w4b test` options".into(),
        vm: t.vm.clone(),
        artifacts_shown: app.display_path(&artifacts),
        artifacts,
    };
    Ok(compile::add_tests(plan, store, &request))
}

/// A cached verdict's `NAME.test.json`: kept when it is the report of a run on the same
/// disk with the same checks, else written from the verdicts (`"cached": true`), so the
/// file beside the outputs never describes another disk. The boot log of the run whose
/// report it replaces goes with it.
fn cached_test_report(app: &App, store: &AppStore, report: &BuildReport, n: &TestNode) {
    let Some(r) = report
        .results
        .get(&n.node)
        .filter(|r| r.status == StepStatus::Cached)
    else {
        return;
    };
    let disk = report.results.get(&n.disk).and_then(|d| d.outputs.get("disk"));
    let (Some(out), Some(disk)) = (r.outputs.get("verdicts"), disk) else {
        return;
    };
    let written = crate::steps::test::Verdicts::read(store, out).and_then(|v| {
        crate::steps::test::write_cached_report(&n.report_file, &n.image, &disk.digest, &v)
            .map_err(|e| e.to_string())
    });
    if written == Ok(true) {
        let _ = std::fs::remove_file(&n.boot_log);
    }
    if let Err(e) = written {
        if !app.style.quiet {
            eprintln!(
                "warning: cannot write the cached test report `{}`: {e}",
                app.display_path(&n.report_file)
            );
        }
    }
}

/// One test's outcome: a ran test's table (`tables`) or line, a cached verdict's line, or
/// in JSON a `test-finished` event. Failures are the step's diagnostic, printed after.
fn print_test(app: &App, store: &AppStore, plan: &Plan, report: &BuildReport, n: &TestNode, tables: bool) {
    let label = &plan.targets[n.target].label;
    let Some(r) = report.results.get(&n.node) else {
        return;
    };
    let cached = match r.status {
        StepStatus::Ran => false,
        StepStatus::Cached => true,
        StepStatus::Failed | StepStatus::Skipped => return,
    };
    let verdicts = r
        .outputs
        .get("verdicts")
        .map(|o| crate::steps::test::Verdicts::read(store, o));
    // A cached verdict's report is the one its run wrote, if it is still there.
    let report_file = n.report_file.exists().then(|| app.display_path(&n.report_file));
    let boot_log = n.boot_log.exists().then(|| app.display_path(&n.boot_log));
    if app.style.json {
        let checks = match &verdicts {
            Some(Ok(v)) => serde_json::to_value(&v.checks).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        println!(
            "{}",
            serde_json::json!({
                "event": "test-finished",
                "target": label.to_string(),
                "step": format!("{label}#test"),
                "cached": cached,
                "passed": true,
                "checks": checks,
                "report": report_file,
                "boot_log": boot_log,
            })
        );
        return;
    }
    if app.style.quiet {
        return;
    }
    let last = n.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match (last, verdicts) {
        (Some(mut rep), _) if !cached => {
            if tables {
                rep.image = app.display_path(&rep.image).into();
                rep.boot_log = app.display_path(&rep.boot_log).into();
                eprint!("{}", rep.render());
            } else {
                eprintln!(
                    "  test {label}: {} checks passed in {:.1} s; report {}",
                    rep.checks.len(),
                    rep.seconds,
                    report_file.as_deref().unwrap_or("(not written)")
                );
            }
        }
        (_, Some(Ok(v))) => {
            eprintln!(
                "  test {label}: {} checks passed (cached: this disk passed this test before; `w4b test {label} --retest` boots it again)",
                v.checks.len()
            );
            if tables {
                for c in &v.checks {
                    eprintln!("    pass  {}", c.name);
                }
            }
        }
        (_, Some(Err(e))) => eprintln!("  test {label}: passed, but its cached verdicts cannot be read: {e}"),
        (_, None) => {}
    }
}

/// `--check`: builds the same targets again in a child process that shares nothing with
/// this one and compares every step's outputs with this build's, in graph order.
fn check(
    app: &App,
    ws: &crate::defs::Workspace,
    store: &AppStore,
    plan: &Plan,
    report: &BuildReport,
    jobs: usize,
) -> miette::Result<()> {
    let labels: Vec<String> = plan.targets.iter().map(|t| t.label.to_string()).collect();
    let again = rebuild::rebuild_elsewhere(app, ws, store, &labels, jobs)?;
    let ours: rebuild::StepOutputs = report
        .results
        .values()
        .map(|r| {
            (
                r.name.clone(),
                r.outputs.iter().map(|(n, o)| (n.clone(), o.digest)).collect(),
            )
        })
        .collect();
    let roots: Vec<NodeId> = plan
        .targets
        .iter()
        .flat_map(|t| t.roots.iter().copied())
        .collect();
    let order: Vec<String> = plan
        .graph
        .closure(&roots)
        .into_iter()
        .map(|id| plan.graph.node(id).name.clone())
        .collect();
    match rebuild::first_difference(&order, &ours, &again.steps) {
        None if again.success => {
            if !app.style.quiet && !app.style.json {
                eprintln!("check: {} steps rebuilt, every output identical", order.len());
            }
            Ok(())
        }
        None => Err(miette::miette!(
            code = "w4b::build::check_failed",
            help = "the same build succeeded here; something the definitions do not declare differs between the two runs (network, files outside the workspace)",
            "--check: the second build did not finish: {}",
            again.why_failed()
        )),
        Some(d) => Err(miette::miette!(
            code = "w4b::build::not_reproducible",
            help = "everything upstream of this step was identical, so the step itself depends on something it does not declare (time, order, environment)",
            "not reproducible: {d} (the second build ran under {})",
            again.conditions
        )),
    }
}

struct Exported {
    /// (target index, path, flat BLAKE3, size).
    files: Vec<(usize, PathBuf, Digest, u64)>,
    /// (target index, path).
    manifests: Vec<(usize, PathBuf)>,
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
        manifests: Vec::new(),
        repair: BTreeMap::new(),
    };
    for (i, t) in plan.targets.iter().enumerate() {
        for e in &t.exports {
            let Some(out) = report.results.get(&e.node).and_then(|r| r.outputs.get(&e.output)) else {
                continue;
            };
            let dest = out_dir.join(&e.file_name);
            // The file's own BLAKE3, not a chunked output's index name.
            match store
                .export(&out.digest, &dest)
                .and_then(|()| store.flat_blake3(&out.digest))
            {
                Ok(flat) => ex.files.push((i, dest, flat, out.size)),
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

fn read_sign_key(path: &std::path::Path) -> miette::Result<crate::manifest::dsse::SecretKey> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        miette::miette!(
            code = "w4b::build::sign_key",
            help = "create a key pair with `w4b keygen PREFIX` and pass `--sign-key PREFIX.key`",
            "cannot read the signing key `{}`: {e}",
            path.display()
        )
    })?;
    crate::manifest::dsse::SecretKey::parse(&text).map_err(|e| {
        miette::miette!(
            code = "w4b::build::sign_key",
            help = "`--sign-key` takes the private half (`PREFIX.key`) written by `w4b keygen`",
            "`{}` is not a w4b signing key: {e}",
            path.display()
        )
    })
}

/// A target's epoch: fixed when planned, or an output of its base's `base-epoch` step
/// (`None` when that step did not finish).
fn target_epoch(
    store: &AppStore,
    t: &crate::compile::PlannedTarget,
    report: &BuildReport,
) -> miette::Result<Option<i64>> {
    Ok(Some(match &t.manifest.epoch {
        crate::compile::PlanEpoch::Fixed { seconds, .. } => *seconds,
        crate::compile::PlanEpoch::FromBase { node, step } => {
            let Some(out) = report.results.get(node).and_then(|r| r.outputs.get("epoch")) else {
                return Ok(None);
            };
            crate::steps::epoch::read(store, out).map_err(|e| miette::miette!("`{step}`: {e}"))?
        }
    }))
}

/// The name a target's manifest gives a step shared with other targets of the build: the
/// one the target itself planned it under (`own`: `//hives:north#`), else the smallest
/// name no other target planned (`others`) — a definition's own name such as
/// `//bases:…#fetch`. So a hive's manifest is the same whether it was built alone or with
/// its fleet, although the graph names a shared step after the smallest target's label.
fn step_name_for(node: &w4b_graph::graph::Node, own: &str, others: &[String]) -> String {
    let names = || std::iter::once(&node.name).chain(&node.aliases);
    names()
        .find(|n| n.starts_with(own))
        .or_else(|| {
            names()
                .filter(|n| !others.iter().any(|o| n.starts_with(o.as_str())))
                .min()
        })
        .unwrap_or(&node.name)
        .clone()
}

/// Writes `<name>.manifest.json` for a target whose outputs were all exported: subjects
/// from the exports, the step graph from the results, the rest from the plan. Nothing in
/// it depends on time, paths or the machine, so an unchanged build rewrites nothing.
fn write_manifest(
    store: &AppStore,
    plan: &Plan,
    t: &crate::compile::PlannedTarget,
    report: &BuildReport,
    out_dir: &std::path::Path,
    key: Option<&crate::manifest::dsse::SecretKey>,
) -> miette::Result<Option<PathBuf>> {
    use crate::manifest::{
        Definition, Manifest, ManifestInput, ResolvedDependency, StepInfo, StepOutput, Subject,
    };
    use std::io::Read;

    let mut subjects = Vec::new();
    for e in &t.exports {
        if !e.subject {
            continue;
        }
        let Some(result) = report.results.get(&e.node) else {
            return Ok(None);
        };
        let Some(out) = result.outputs.get(&e.output) else {
            return Ok(None);
        };
        let from_step = e
            .sha256_output
            .as_ref()
            .and_then(|o| result.outputs.get(o))
            .and_then(|line| {
                let mut text = String::new();
                store
                    .inner()
                    .reader(&line.digest)
                    .ok()?
                    .read_to_string(&mut text)
                    .ok()?;
                let hex = text.get(..64)?.to_owned();
                hex.bytes().all(|b| b.is_ascii_hexdigit()).then_some(hex)
            });
        let sha256 = match from_step {
            Some(hex) => hex,
            None => {
                let mut r = store
                    .inner()
                    .open_output(&out.digest)
                    .map_err(miette::Report::new)?;
                let mut h = sha2::Sha256::default();
                std::io::copy(&mut r, &mut h)
                    .map_err(|err| miette::miette!("cannot read `{}` from the cache: {err}", e.file_name))?;
                hex::encode(sha2::Digest::finalize(h))
            }
        };
        // Subjects name the file's bytes: a chunked output's flat digest, which its index
        // carries, rather than the index's name.
        let blake3 = store.flat_blake3(&out.digest).map_err(miette::Report::new)?;
        subjects.push(Subject {
            name: e.file_name.clone(),
            sha256,
            blake3: blake3.to_string(),
            size: out.size,
        });
    }
    let Some(epoch) = target_epoch(store, t, report)? else {
        return Ok(None);
    };
    let mut steps = Vec::new();
    let own = format!("{}#", t.label);
    let others: Vec<String> = plan
        .targets
        .iter()
        .filter(|u| u.label != t.label)
        .map(|u| format!("{}#", u.label))
        .collect();
    let name_of = |id| step_name_for(plan.graph.node(id), &own, &others);
    for id in plan.graph.closure(&t.roots) {
        let node = plan.graph.node(id);
        let Some(r) = report.results.get(&id) else {
            return Ok(None);
        };
        let Some(k) = r.key else {
            return Ok(None);
        };
        steps.push(StepInfo {
            name: name_of(id),
            kind: node.step.kind().to_owned(),
            key: k.to_string(),
            outputs: r
                .outputs
                .iter()
                .map(|(name, o)| {
                    let index = store.inner().index(&o.digest).map_err(miette::Report::new)?;
                    let output = StepOutput {
                        digest: o.digest.to_string(),
                        size: o.size,
                        flat_blake3: index.and_then(|i| i.flat.blake3).map(hex::encode),
                    };
                    Ok((name.clone(), output))
                })
                .collect::<miette::Result<_>>()?,
            inputs: node.deps.iter().map(|d| name_of(*d)).collect(),
        });
    }
    let input = ManifestInput {
        target: t.label.to_string(),
        subjects,
        epoch,
        epoch_source: t.manifest.epoch_source.clone(),
        w4b_version: env!("CARGO_PKG_VERSION").to_owned(),
        definitions: t
            .manifest
            .definitions
            .iter()
            .map(|(path, d)| Definition {
                path: path.clone(),
                blake3: d.to_string(),
            })
            .collect(),
        dependencies: t
            .manifest
            .dependencies
            .iter()
            .map(|(uri, sha256, name)| ResolvedDependency {
                uri: uri.clone(),
                sha256: sha256.clone(),
                name: name.clone(),
            })
            .collect(),
        packages: t.manifest.packages.clone(),
        steps,
        builder_id: "https://w4b.dev/builder/local".to_owned(),
    };
    let manifest = Manifest::build(&input)?;
    let bytes = match key {
        None => manifest.to_json()?.into_bytes(),
        Some(k) => {
            let payload = manifest.canonical_bytes()?;
            crate::manifest::dsse::Envelope::sign(crate::manifest::dsse::IN_TOTO_PAYLOAD_TYPE, &payload, k)
                .to_json()
                .map_err(miette::Report::new)?
                .into_bytes()
        }
    };
    let dest = out_dir.join(&t.manifest.file_name);
    if std::fs::read(&dest).is_ok_and(|old| old == bytes) {
        return Ok(Some(dest));
    }
    let io = |e: std::io::Error| {
        miette::miette!(
            code = "w4b::build::manifest",
            help = "check that the output directory is writable",
            "cannot write `{}`: {e}",
            dest.display()
        )
    };
    std::fs::create_dir_all(out_dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(out_dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(io)?;
    // Like every other output: readable by all (a temporary file starts private).
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(io)?;
    tmp.persist(&dest).map_err(|e| io(e.error))?;
    Ok(Some(dest))
}
