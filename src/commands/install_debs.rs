//! `w4b install-debs` (hidden): the install engine on its own, for tests that compare an
//! install as root with one through a user namespace. Prints one JSON object: the base,
//! changeset and tree digests and the phase times.

use miette::IntoDiagnostic;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::App;
use crate::cli::InstallDebsArgs;
use crate::install::{self, Arch, Deb, InstallError, Request};
use crate::tree::host::capture;
use crate::tree::Blobs;

pub fn run(app: &App, args: &InstallDebsArgs) -> miette::Result<i32> {
    let store = app.store_for(None)?;
    store.begin_lease()?;
    let blobs: &dyn Blobs = store.as_ref();
    let base = match (&args.base, &args.base_tree) {
        (Some(d), _) => d.parse().map_err(|e| miette::miette!("`--base`: {e}"))?,
        (None, Some(dir)) => capture(blobs, &app.cwd.join(dir))?,
        (None, None) => return Err(miette::miette!("give `--base` or `--base-tree`")),
    };
    if args.capture_only {
        println!("{}", serde_json::json!({ "base": base.to_hex() }));
        return Ok(0);
    }
    let arch = match args.arch.as_str() {
        "arm64" => Arch::Arm64,
        "armhf" => Arch::Armhf,
        other => return Err(miette::miette!("unknown architecture `{other}`")),
    };
    let debs: Vec<Deb> = args.debs.iter().map(|p| Deb::Path(app.cwd.join(p))).collect();
    let scratch = tempfile::Builder::new()
        .prefix("install-")
        .tempdir_in(store.scratch_path(""))
        .into_diagnostic()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    let req = Request {
        base,
        debs: &debs,
        arch,
        epoch: args.epoch,
        scratch: &scratch.path().join("root"),
    };
    let installed = match install::install(blobs, &req, &cancel) {
        Ok(i) => i,
        Err(InstallError::Cancelled) => {
            eprintln!("cancelled");
            return Ok(130);
        }
        Err(e) => return Err(e.into()),
    };
    let t = installed.timings;
    println!(
        "{}",
        serde_json::json!({
            "base": base.to_hex(),
            "changeset": installed.changeset_digest.to_hex(),
            "tree": installed.tree.to_hex(),
            "packages": installed.packages.len(),
            "materialize_ms": t.materialize.as_millis() as u64,
            "dpkg_ms": t.dpkg.as_millis() as u64,
            "capture_ms": t.capture.as_millis() as u64,
        })
    );
    Ok(0)
}
