//! `w4b test IMAGE`: boots a disk image in QEMU and judges the running system
//! ([`crate::vmtest`]). The test definition comes from `--spec FILE` (JSON, the shape of
//! a `test:` key) with the command-line options added; the report is a table on standard
//! error, or with `--message-format json` one `w4b.test/1` object on standard output.
//! Exits 0 when every check passes, 1 otherwise. Ctrl-C stops the virtual machine.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use miette::IntoDiagnostic as _;

use super::App;
use crate::cli::TestArgs;
use crate::vmtest::{self, TestSpec};

fn spec(app: &App, args: &TestArgs) -> miette::Result<TestSpec> {
    let mut spec = match &args.spec {
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
            serde_json::from_str::<TestSpec>(&text).map_err(|e| {
                miette::miette!(
                    code = "w4b::test::spec",
                    help = "the keys are `allow_failed_units`, `units_active`, `commands` (`name`, `run`, `exit`, `stdout_contains`, `stdout_regex`, `timeout`), `timeout` and `boot_timeout`",
                    "`{}` is not a valid test definition: {e}",
                    app.display_path(&full)
                )
            })?
        }
        None => TestSpec::default(),
    };
    spec.allow_failed_units.extend(args.allow_failed.iter().cloned());
    spec.units_active.extend(args.unit_active.iter().cloned());
    if let Some(t) = args.timeout {
        spec.timeout = t;
    }
    if let Some(t) = args.boot_timeout {
        spec.boot_timeout = t;
    }
    Ok(spec)
}

pub fn run(app: &App, args: &TestArgs) -> miette::Result<i32> {
    let spec = spec(app, args)?;
    let image = app.cwd.join(&args.image);
    let opts = vmtest::Options {
        kernel: args.kernel.as_ref().map(|k| app.cwd.join(k)),
        initrd: args.initrd.as_ref().map(|i| app.cwd.join(i)),
        memory_mib: args.memory,
        cpus: args.cpus,
        log_dir: args.log.as_ref().map(|d| app.cwd.join(d)),
        max_image_size: args.max_image_size,
        path: app.env.get("PATH").cloned(),
    };
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
