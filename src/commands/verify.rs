//! `w4b verify MANIFEST [--artifact PATH]... [--key PUB]`: checks a build manifest and
//! exits with the bit mask of [`crate::manifest::verify`] (1 digest mismatch, 2 bad or
//! missing signature, 4 other error). Problems reading the files are findings too, so
//! the exit status stays a bit mask: an unreadable artifact sets 4 and 1 (it is not
//! verified), an unreadable key sets 4 and 2 (no signature can be checked).

use std::fmt::Write as _;

use miette::IntoDiagnostic;

use super::App;
use crate::cli::{ReportFormat, VerifyArgs};
use crate::manifest::dsse::PublicKey;
use crate::manifest::verify::{
    self, ArtifactDigest, Finding, SignatureStatus, Verification, BAD_SIGNATURE, DIGEST_MISMATCH,
    NOT_REPRODUCIBLE, OTHER_ERROR,
};

pub fn run(app: &App, args: &VerifyArgs) -> miette::Result<i32> {
    let mut early: Vec<Finding> = Vec::new();
    let mut key_failed = false;
    let key = match &args.key {
        None => None,
        Some(p) => match std::fs::read_to_string(app.cwd.join(p))
            .map_err(|e| e.to_string())
            .and_then(|t| PublicKey::parse(&t).map_err(|e| e.to_string()))
        {
            Ok(k) => Some(k),
            Err(e) => {
                key_failed = true;
                early.push(Finding {
                    bit: OTHER_ERROR | BAD_SIGNATURE,
                    code: "w4b::verify::key",
                    message: format!("cannot read key `{}`: {e}", p.display()),
                });
                None
            }
        },
    };
    let mut artifacts = Vec::new();
    for p in &args.artifacts {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::File::open(app.cwd.join(p)).and_then(|f| ArtifactDigest::of_reader(&name, f)) {
            Ok(a) => artifacts.push(a),
            Err(e) => early.push(Finding {
                bit: OTHER_ERROR | DIGEST_MISMATCH,
                code: "w4b::verify::artifact",
                message: format!("cannot read artifact `{}`: {e}", p.display()),
            }),
        }
    }
    let mut v = match std::fs::read(app.cwd.join(&args.manifest)) {
        Ok(doc) => verify::verify(&doc, &artifacts, key.as_ref()),
        Err(e) => {
            early.push(Finding {
                bit: OTHER_ERROR | if args.key.is_some() { BAD_SIGNATURE } else { 0 },
                code: "w4b::verify::manifest",
                message: format!("cannot read manifest `{}`: {e}", args.manifest.display()),
            });
            let mut v = Verification::empty();
            if args.key.is_some() {
                v.signature = SignatureStatus::Missing;
            }
            v
        }
    };
    if key_failed {
        v.signature = SignatureStatus::Invalid;
    }
    if args.rebuild {
        rebuild(app, args, &mut early)?;
    }
    for f in early.into_iter().rev() {
        v.exit |= f.bit;
        v.findings.insert(0, f);
    }
    match args.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?),
        ReportFormat::Text => print!("{}", render_text(&args.manifest.display().to_string(), &v)),
    }
    Ok(i32::from(v.exit))
}

fn render_text(manifest: &str, v: &Verification) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "manifest   `{manifest}`");
    if let Some(t) = &v.target {
        let _ = writeln!(
            s,
            "target     `{t}` (epoch {}, w4b {})",
            v.epoch.unwrap_or_default(),
            v.w4b_version.as_deref().unwrap_or("?")
        );
        if let Some(source) = &v.epoch_source {
            use crate::manifest::EpochSource;
            let from = match source {
                EpochSource::Definition { at } => format!("written at {at}"),
                EpochSource::BaseReleaseDate { base, date, at } => {
                    format!("the release date {date} of `{base}` ({at})")
                }
                EpochSource::BaseContent { base } => {
                    format!("the newest modification time in `{base}`'s root filesystem")
                }
                EpochSource::BaseLock {
                    base,
                    repository,
                    date,
                } => {
                    format!("the release file of `{repository}` ({date}) that `{base}` was locked against")
                }
            };
            let _ = writeln!(s, "epoch from {from}");
        }
        let _ = writeln!(
            s,
            "contents   {} subject(s), {} step(s), {} installed package(s)",
            v.subjects, v.steps, v.packages
        );
    }
    let sig = match &v.signature {
        SignatureStatus::Valid { keyid } => format!("valid (key `{keyid}`)"),
        SignatureStatus::Invalid => "INVALID".to_string(),
        SignatureStatus::Missing => "MISSING".to_string(),
        SignatureStatus::NotChecked { signatures } => {
            format!("not checked ({signatures} signature(s); pass `--key` to check)")
        }
        SignatureStatus::Unsigned => "none (unsigned; no `--key` given)".to_string(),
    };
    let _ = writeln!(s, "signature  {sig}");
    for a in &v.artifacts {
        let by = a
            .produced_by
            .as_deref()
            .map(|st| format!(" (output of `{st}`)"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "artifact   `{}` {}{by}",
            a.name,
            if a.ok { "ok" } else { "MISMATCH" }
        );
    }
    for f in &v.findings {
        let _ = writeln!(s, "error[{}]: {}", f.code, f.message);
    }
    if v.exit == 0 {
        let _ = writeln!(s, "verified");
    } else {
        let mut what = Vec::new();
        for (bit, name) in [
            (DIGEST_MISMATCH, "digest mismatch"),
            (BAD_SIGNATURE, "bad or missing signature"),
            (OTHER_ERROR, "other error"),
            (NOT_REPRODUCIBLE, "not reproducible"),
        ] {
            if v.exit & bit != 0 {
                what.push(name);
            }
        }
        let _ = writeln!(s, "NOT verified (exit {}: {})", v.exit, what.join(", "));
    }
    s
}

/// `--rebuild`: builds the manifest's target again from nothing in the current workspace
/// and compares every step's outputs with the manifest's, in the manifest's order (the
/// build's graph order). A difference, or a rebuild that fails, sets bit 8 — unless
/// definition files changed since the manifest: then the finding names each file with its
/// digest in the manifest and now, and sets bit 4 (the check could not be made).
fn rebuild(app: &App, args: &VerifyArgs, early: &mut Vec<Finding>) -> miette::Result<()> {
    let Some(statement) = std::fs::read(app.cwd.join(&args.manifest))
        .ok()
        .and_then(|doc| verify::statement_of(&doc))
    else {
        early.push(Finding {
            bit: OTHER_ERROR | NOT_REPRODUCIBLE,
            code: "w4b::verify::rebuild",
            message: "cannot rebuild: the manifest's statement could not be read".into(),
        });
        return Ok(());
    };
    let target = statement
        .predicate
        .build_definition
        .external_parameters
        .target
        .clone();
    let ws = app.workspace()?;
    let store = app.store(&ws)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !app.style.quiet {
        eprintln!("rebuilding `{target}` from nothing to compare with the manifest …");
    }
    let again = super::rebuild::rebuild_elsewhere(app, &ws, &store, std::slice::from_ref(&target), jobs)?;
    let steps = &statement.predicate.run_details.byproducts;
    let order = dependency_order(steps);
    let mut theirs = super::rebuild::StepOutputs::new();
    for step in steps {
        let outputs = step
            .annotations
            .outputs
            .iter()
            .filter_map(|(name, o)| Some((name.clone(), o.blake3.parse().ok()?)))
            .collect();
        theirs.insert(step.name.clone(), outputs);
    }
    // A rebuild from other definitions proves nothing about reproducibility: say which
    // files changed rather than "not reproducible".
    let changed = verify::changed_definitions(&statement, ws.root());
    let difference = super::rebuild::first_difference(&order, &theirs, &again.steps);
    let missing_step = order.iter().any(|s| !again.steps.contains_key(s));
    if !changed.is_empty() && (difference.is_some() || missing_step) {
        let mut message = String::from(
            "the rebuild differs because definition files changed since the manifest was made \
             (build from the revision the manifest records to check reproducibility):",
        );
        for c in &changed {
            let now = c.now.as_deref().unwrap_or("missing");
            let _ = write!(
                message,
                "\n    `{}`: blake3 {} in the manifest, {now} now",
                c.path, c.recorded
            );
        }
        if let Some(d) = &difference {
            let _ = write!(
                message,
                "\n  first difference: {}",
                d.replace("in the first build", "in the manifest")
            );
        }
        early.push(Finding {
            bit: OTHER_ERROR,
            code: "w4b::verify::definitions_changed",
            message,
        });
        return Ok(());
    }
    match difference {
        Some(d) => early.push(Finding {
            bit: NOT_REPRODUCIBLE,
            code: "w4b::verify::not_reproducible",
            message: format!(
                "rebuilt under {}: {}",
                again.conditions,
                d.replace("in the first build", "in the manifest")
            ),
        }),
        None if !again.success => early.push(Finding {
            bit: NOT_REPRODUCIBLE | OTHER_ERROR,
            code: "w4b::verify::rebuild_failed",
            message: format!("the rebuild did not finish: {}", again.why_failed()),
        }),
        None => {
            let missing: Vec<&String> = order.iter().filter(|s| !again.steps.contains_key(*s)).collect();
            if let Some(first) = missing.first() {
                early.push(Finding {
                    bit: NOT_REPRODUCIBLE,
                    code: "w4b::verify::rebuild_differs",
                    message: format!(
                        "the rebuild has no step `{first}` ({} of the manifest's steps are missing): the workspace's definitions are not the ones the manifest was built from",
                        missing.len()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The manifest's steps (listed by name) in dependency order, ties by name, so the first
/// difference reported is the most upstream one.
fn dependency_order(steps: &[crate::manifest::statement::StepDescriptor]) -> Vec<String> {
    use std::collections::BTreeSet;
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < steps.len() {
        let before = order.len();
        for s in steps {
            if !done.contains(s.name.as_str())
                && s.annotations
                    .inputs
                    .iter()
                    .all(|i| done.contains(i.as_str()) || !steps.iter().any(|t| &t.name == i))
            {
                done.insert(&s.name);
                order.push(s.name.clone());
            }
        }
        if order.len() == before {
            // A cycle (which `verify` already reports): keep the rest in name order.
            order.extend(
                steps
                    .iter()
                    .filter(|s| !done.contains(s.name.as_str()))
                    .map(|s| s.name.clone()),
            );
            break;
        }
    }
    order
}
