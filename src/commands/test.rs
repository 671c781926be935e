//! `w4b test IMAGE|LABEL`: boots a disk image in QEMU and judges the running system
//! ([`crate::vmtest`]).
//!
//! With an image file, the test definition comes from `--spec FILE` (JSON, the shape of a
//! `test:` key) with the command-line options added; the report is a table on standard
//! error, or with `--message-format json` one `w4b.test/1` object on standard output.
//!
//! With a label (`//hives:north`, `:demo`), the target is built as `w4b build --test`
//! builds it and its `#test` step runs: the definitions' `test:` with `--spec` and the
//! options merged over it, cached like any step (`--retest` boots again anyway); the
//! report `NAME.test.json` and the boot log `NAME.boot.log` go to the output directory.
//!
//! Exits 0 when every check passes, 1 otherwise. Ctrl-C stops the virtual machine.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use miette::IntoDiagnostic as _;

use super::build::{self, Tests};
use super::App;
use crate::cli::{BuildArgs, TestArgs};
use crate::vmtest::{self, TestDef};

/// Whether `target` names a label rather than an image file: `//…` and `:…` always do; a
/// word with a colon does when no file of that name exists.
fn is_label(app: &App, target: &str) -> bool {
    target.starts_with("//")
        || target.starts_with(':')
        || (target.contains(':') && !app.cwd.join(target).exists())
}

/// `--spec FILE` with the options merged over it.
fn options_def(app: &App, args: &TestArgs) -> miette::Result<TestDef> {
    let file = match &args.spec {
        Some(path) => {
            let full = app.cwd.join(path);
            let text = std::fs::read_to_string(&full).map_err(|e| {
                miette::miette!(
                    code = "w4b::test::spec",
                    help = "`--spec` takes a JSON file holding a test definition",
                    "cannot read `{}`: {e}",
                    app.display_path(&full)
                )
            })?;
            serde_json::from_str::<TestDef>(&text).map_err(|e| {
                miette::miette!(
                    code = "w4b::test::spec",
                    help = "the keys are `allow_failed_units`, `units_active`, `commands` (`name`, `run`, `exit`, `stdout_contains`, `stdout_regex`, `timeout`), `timeout`, `boot_timeout` and `hive_checklist`",
                    "`{}` is not a valid test definition: {e}",
                    app.display_path(&full)
                )
            })?
        }
        None => TestDef::default(),
    };
    Ok(file.merged(TestDef {
        allow_failed_units: args.allow_failed.clone(),
        units_active: args.unit_active.clone(),
        commands: Vec::new(),
        timeout: args.timeout,
        boot_timeout: args.boot_timeout,
        hive_checklist: None,
    }))
}

fn vm_options(app: &App, args: &TestArgs) -> vmtest::Options {
    vmtest::Options {
        kernel: args.kernel.as_ref().map(|k| app.cwd.join(k)),
        initrd: args.initrd.as_ref().map(|i| app.cwd.join(i)),
        memory_mib: args.memory,
        cpus: args.cpus,
        log_dir: args.log.as_ref().map(|d| app.cwd.join(d)),
        max_image_size: args.max_image_size,
        path: app.env.get("PATH").cloned(),
        pinned: None,
        detect_hive: false,
    }
}

pub fn run(app: &App, args: &TestArgs) -> miette::Result<i32> {
    if is_label(app, &args.target) {
        return run_label(app, args);
    }
    run_image(app, args)
}

/// A label: built, then its `#test` step.
fn run_label(app: &App, args: &TestArgs) -> miette::Result<i32> {
    let build_args = BuildArgs {
        labels: vec![args.target.clone()],
        jobs: args.jobs,
        out: args.out.clone(),
        force: false,
        keep_going: false,
        sign_key: None,
        check: false,
        test: true,
    };
    let tests = Tests {
        over: options_def(app, args)?,
        vm: vm_options(app, args),
        retest: args.retest,
        required: true,
        tables: true,
    };
    build::run_with(app, &build_args, Some(&tests))
}

/// The workspace's pinned test kernel, built (through the cache) only if the image turns
/// out to have no kernel that boots the virtual machine; `None` outside a workspace or
/// when the workspace has none locked.
fn pinned_source(app: &App) -> miette::Result<Option<vmtest::PinnedSource>> {
    let Ok(ws) = app.workspace() else {
        return Ok(None);
    };
    let store = app.store(&ws)?;
    let Some((graph, node)) = crate::compile::test_kernel_plan(&ws, &store, &app.env, &app.global.set)?
    else {
        return Ok(None);
    };
    let producer = app.producer();
    let quiet = app.style.quiet || app.style.json;
    let graph = Arc::new(graph);
    Ok(Some(vmtest::PinnedSource(Arc::new(
        move |dir: &std::path::Path| {
            use w4b_graph::exec::{BuildOptions, Engine, StepStatus};
            let failed = |message: String| vmtest::VmTestError::PinnedKernel { message };
            let cancel = AtomicBool::new(false);
            // `-v` step lines (and `-vv` commands under their step), as `build` logs them.
            let verbose = crate::ui::log::terminal_shows(crate::ui::log::Level::Step);
            let lines = crate::ui::progress::Lines {
                quiet: quiet || verbose,
            };
            let log = crate::ui::progress::LogObserver {
                cache: store.as_ref(),
                previous: std::collections::BTreeMap::new(),
            };
            let observer = crate::ui::progress::Tee(vec![&lines, &log]);
            let engine = Engine {
                graph: &graph,
                cache: store.as_ref(),
                observer: &observer,
                cancel: &cancel,
                options: BuildOptions {
                    jobs: 2,
                    force: false,
                    keep_going: false,
                    force_nodes: std::collections::BTreeMap::new(),
                    producer: producer.clone(),
                },
            };
            let report = engine.build(&[node]).map_err(|e| failed(format!("{e:?}")))?;
            if let Some(f) = report.failures.into_iter().next() {
                return Err(failed(format!("step `{}` failed: {}", f.step, f.error)));
            }
            let outputs = report
                .results
                .get(&node)
                .filter(|r| matches!(r.status, StepStatus::Ran | StepStatus::Cached))
                .map(|r| r.outputs.clone())
                .ok_or_else(|| failed("the `test-kernel` step did not finish".into()))?;
            let output = |name: &str| {
                outputs
                    .get(name)
                    .map(|o| o.digest)
                    .ok_or_else(|| failed(format!("the `test-kernel` step has no `{name}` output")))
            };
            let kernel = dir.join("pinned-vmlinuz");
            let initrd = dir.join("pinned-initrd");
            for (name, path) in [("vmlinuz", &kernel), ("initrd", &initrd)] {
                crate::steps::test::materialize(&store, &output(name)?, path)
                    .map_err(|e| failed(format!("cannot copy `{name}` out of the cache: {e}")))?;
            }
            let blobs: &dyn crate::tree::Blobs = store.as_ref();
            let meta = blobs.get(&output("meta")?).map_err(|e| failed(e.to_string()))?;
            let meta = serde_json::from_slice(&meta).map_err(|e| failed(e.to_string()))?;
            Ok(vmtest::PinnedKernel { kernel, initrd, meta })
        },
    ))))
}

/// An image file, as it is.
fn run_image(app: &App, args: &TestArgs) -> miette::Result<i32> {
    let def = options_def(app, args)?;
    let spec = def.spec();
    let image = app.cwd.join(&args.target);
    let mut opts = vmtest::Options {
        // A hive's image gets the hive checklist unless the spec says otherwise.
        detect_hive: def.hive_checklist.is_none(),
        ..vm_options(app, args)
    };
    if opts.kernel.is_none() {
        opts.pinned = pinned_source(app)?;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C stops the virtual machine and removes the temporary files; a second one
    // ends w4b at once (QEMU dies with it: it has w4b as its death signal's parent).
    let _ =
        signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    if !app.style.json && !app.style.quiet {
        eprintln!(
            "booting `{}` in QEMU (boot timeout {} s, whole test {} s)…",
            app.display_path(&image),
            spec.boot_timeout,
            spec.timeout
        );
    }
    let mut report = vmtest::run(&image, &spec, &opts, &cancel)?;
    report.image = app.display_path(&image).into();
    report.boot_log = app.display_path(&report.boot_log).into();
    if app.style.json {
        println!("{}", serde_json::to_string(&report).into_diagnostic()?);
    } else {
        eprint!("{}", report.render());
    }
    Ok(if report.passed { 0 } else { 1 })
}
