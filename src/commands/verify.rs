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
    self, ArtifactDigest, Finding, SignatureStatus, Verification, BAD_SIGNATURE, DIGEST_MISMATCH, OTHER_ERROR,
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
        let _ = writeln!(s, "contents   {} subject(s), {} step(s)", v.subjects, v.steps);
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
        ] {
            if v.exit & bit != 0 {
                what.push(name);
            }
        }
        let _ = writeln!(s, "NOT verified (exit {}: {})", v.exit, what.join(", "));
    }
    s
}
