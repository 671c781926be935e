//! Building targets again from nothing, in a child process that shares nothing with this
//! one — an empty cache beside the real one, no remote, another working directory, TZ,
//! locale, umask and `-j` — for `w4b build --check` and `w4b verify --rebuild`. The child
//! is w4b itself with `--message-format json`; its `step-finished` events give each step's
//! outputs, which callers compare with a build or a manifest in graph order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use w4b_cache::Digest;

use super::App;
use crate::store::AppStore;

/// Each step's outputs by step name.
pub type StepOutputs = BTreeMap<String, BTreeMap<String, Digest>>;

/// What the second build did.
pub struct Rebuild {
    pub steps: StepOutputs,
    /// The first step that failed, and its error.
    pub failure: Option<(String, String)>,
    pub success: bool,
    pub stderr: String,
    /// The conditions it ran under, for messages.
    pub conditions: String,
}

impl Rebuild {
    /// Why it did not finish: the first failed step, or the end of its stderr.
    pub fn why_failed(&self) -> String {
        match &self.failure {
            Some((step, e)) => format!("`{step}` failed: {e}"),
            None => self.stderr.lines().rev().take(5).collect::<Vec<_>>().join("\n"),
        }
    }
}

/// Builds `labels` again from nothing (see the module docs).
pub fn rebuild_elsewhere(
    app: &App,
    ws: &crate::defs::Workspace,
    store: &AppStore,
    labels: &[String],
    jobs: usize,
) -> miette::Result<Rebuild> {
    let io =
        |what: &str, e: std::io::Error| miette::miette!(code = "w4b::rebuild::spawn", "cannot {what}: {e}");
    // Beside the cache: the check build needs as much room as the first one did, and the
    // system temporary directory is often a small tmpfs.
    let parent = store
        .inner()
        .local()
        .root()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix("w4b-check-")
        .tempdir_in(&parent)
        .map_err(|e| io("create a scratch directory", e))?;
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).map_err(|e| io("create a scratch directory", e))?;
    let exe = std::env::current_exe().map_err(|e| io("find the w4b executable", e))?;

    let tz = if app.env.get("TZ").is_some_and(|t| t.contains("Chatham")) {
        "UTC"
    } else {
        "Pacific/Chatham"
    };
    let locale = if app.env.get("LC_ALL").is_some_and(|l| l.starts_with("tr_")) {
        "C.UTF-8"
    } else {
        "tr_TR.UTF-8"
    };
    let child_jobs = if jobs > 1 { 1 } else { 2 };
    let umask = "0077";
    let conditions = format!(
        "TZ={tz}, LC_ALL={locale}, umask {umask}, -j {child_jobs}, an empty cache, no remote, working directory {}",
        dir.path().display()
    );
    if !app.style.quiet && !app.style.json {
        eprintln!("building again from nothing ({conditions})");
    }

    let mut argv: Vec<std::ffi::OsString> = vec![
        "-c".into(),
        "umask \"$1\" && cd \"$2\" && shift 2 && exec \"$@\"".into(),
        "w4b-check".into(),
        umask.into(),
        cwd.clone().into(),
        exe.into(),
        "--workspace".into(),
        ws.root().into(),
        "--cache-dir".into(),
        dir.path().join("cache").into(),
        "--no-remote".into(),
        "--message-format".into(),
        "json".into(),
    ];
    for s in &app.global.set {
        argv.push("--set".into());
        argv.push(s.into());
    }
    argv.push("build".into());
    argv.extend(labels.iter().map(Into::into));
    argv.extend([
        "--out".into(),
        dir.path().join("out").into(),
        "-j".into(),
        child_jobs.to_string().into(),
    ]);

    #[allow(clippy::disallowed_methods)] // The check runs w4b itself, not a tool inside a step.
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(&argv)
        .env("TZ", tz)
        .env("LC_ALL", locale)
        .env("LANG", locale)
        .env_remove("W4B_REMOTE_CACHE")
        .env_remove("W4B_CACHE_DIR")
        .stdin(std::process::Stdio::null());
    let out = cmd.output().map_err(|e| io("start the check build", e))?;

    let mut steps: StepOutputs = BTreeMap::new();
    let mut failure = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("step-finished") => {
                let outputs = v["outputs"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter_map(|(name, r)| Some((name.clone(), r["digest"].as_str()?.parse().ok()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                steps.insert(v["step"].as_str().unwrap_or_default().to_owned(), outputs);
            }
            Some("step-failed") if failure.is_none() => {
                failure = Some((
                    v["step"].as_str().unwrap_or_default().to_owned(),
                    v["error"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            _ => {}
        }
    }
    Ok(Rebuild {
        steps,
        failure,
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        conditions,
    })
}

/// The first step, in graph order, whose outputs differ between two builds.
pub fn first_difference(order: &[String], ours: &StepOutputs, theirs: &StepOutputs) -> Option<String> {
    for step in order {
        let (Some(a), Some(b)) = (ours.get(step), theirs.get(step)) else {
            continue;
        };
        for (name, da) in a {
            match b.get(name) {
                Some(db) if db == da => {}
                Some(db) => {
                    return Some(format!(
                        "`{step}` output `{name}` is {} in the first build and {} in the rebuild",
                        da.short(16),
                        db.short(16)
                    ))
                }
                None => return Some(format!("`{step}` has no output `{name}` in the rebuild")),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_found_in_graph_order() {
        let d = |b: u8| Digest::of(&[b]);
        let side = |x: u8| -> StepOutputs {
            [
                ("a".to_owned(), [("tree".to_owned(), d(1))].into()),
                ("b".to_owned(), [("tree".to_owned(), d(x))].into()),
                ("c".to_owned(), [("archive".to_owned(), d(x))].into()),
            ]
            .into()
        };
        let order = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(first_difference(&order, &side(2), &side(2)), None);
        let diff = first_difference(&order, &side(2), &side(3)).unwrap();
        assert!(diff.starts_with("`b` output `tree`"), "{diff}");
        let mut missing = side(2);
        missing.get_mut("a").unwrap().clear();
        assert!(first_difference(&order, &side(2), &missing)
            .unwrap()
            .contains("no output `tree`"));
    }
}
