//! `w4b why LABEL`: what changed between the last two builds of a target, and what it
//! caused. Text for people, `w4b.why/1` JSON for tools.
//!
//! An `install` step's key holds one component per locked package
//! ([`crate::steps::install::deb_component`]); its changes are read back as package
//! changes (`postgresql-15: 15.8-0+deb12u1 → 15.10-0+deb12u1`, added, removed, each at its
//! `w4b.lock` line), in the text and as the step's `packages` in JSON.

use std::fmt::Write as _;

use miette::IntoDiagnostic;
use serde::Serialize;
use w4b_cache::Digest;
use w4b_graph::explain::{explain, Change, PathChange, PathStatus, TreeDiff, Why, WhyStatus, WhyStep};
use w4b_graph::history;

use super::App;
use crate::cli::{WhyArgs, WhyFormat};
use crate::store::AppStore;
use crate::tree::diff::PathDiff;
use crate::tree::{Entry, Kind};

/// How many paths inside one input the text lists; JSON lists them all.
const TEXT_PATHS: usize = 50;

pub fn run(app: &App, args: &WhyArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let label = app.resolve_one(&ws, &args.label)?;
    // A label that names no target is that error, not "never built". Only the file's
    // existence is checked: `why` must still explain the last build while today's
    // definitions do not parse.
    let file = ws.target_file(&label);
    if !ws.root().join(&file).is_file() {
        return Err(miette::miette!(
            code = "w4b::defs::target_not_found",
            help = "`w4b ls` lists the targets",
            "target `{label}` not found: no file `{file}`"
        ));
    }
    let store = app.store(&ws)?;
    let target = label.to_string();
    let Some(h) = history::load(store.as_ref(), &target).map_err(|e| miette::miette!("{e}"))? else {
        return Err(miette::miette!(
            code = "w4b::why::no_history",
            help = format!(
                "run `w4b build {target}` first; `why` explains the last build against the one before"
            ),
            "`{target}` has not been built with this cache"
        ));
    };
    let mut why = explain(store.as_ref(), &StoreTrees(store.as_ref()), &h);
    current_locations(app, &ws, &store, &args.label, &mut why);
    match args.format {
        WhyFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&to_json(&why)?).into_diagnostic()?
            );
        }
        WhyFormat::Text => print!("{}", render_text(&why)),
    }
    Ok(0)
}

/// The paths inside tree-valued inputs, from the trees the records name (read from the
/// cache, so the earlier build is explained even after its files changed on disk).
struct StoreTrees<'a>(&'a AppStore);

impl TreeDiff for StoreTrees<'_> {
    fn diff(&self, old: &Digest, new: &Digest) -> Result<Vec<PathChange>, String> {
        let diffs = crate::tree::diff::diff(self.0, *old, *new).map_err(|e| e.to_string())?;
        Ok(diffs.into_iter().map(path_change).collect())
    }
}

/// What an entry holds, as `why` shows it: a file's content digest, `symlink:<target>`,
/// `dir`, `hardlink:<path>`, or the kind of anything else.
fn describe(e: &Entry) -> String {
    match &e.kind {
        Kind::File { digest, .. } => digest.to_hex(),
        Kind::Dir { .. } => "dir".into(),
        Kind::Symlink { target } => format!("symlink:{target}"),
        Kind::HardLink { target } => format!("hardlink:{target}"),
        other => other.name().into(),
    }
}

fn path_change(d: PathDiff) -> PathChange {
    let change = match (&d.old, &d.new) {
        (None, _) => PathStatus::Added,
        (_, None) => PathStatus::Removed,
        _ => PathStatus::Changed,
    };
    let (old_mode, new_mode) = match (&d.old, &d.new) {
        (Some(a), Some(b)) if a.mode != b.mode => {
            (Some(format!("{:04o}", a.mode)), Some(format!("{:04o}", b.mode)))
        }
        _ => (None, None),
    };
    let path = d.path.to_string();
    PathChange {
        path: path.strip_prefix('/').unwrap_or(&path).to_owned(),
        change,
        old: d.old.as_ref().map(describe),
        new: d.new.as_ref().map(describe),
        old_mode,
        new_mode,
    }
}

/// Records keep the locations of the build that first produced a key, which may be an
/// older layout of the file (or another checkout). Where the definitions still compile,
/// point at where each value is *now*.
fn current_locations(
    app: &App,
    ws: &crate::defs::Workspace,
    store: &std::sync::Arc<crate::store::AppStore>,
    label: &str,
    why: &mut Why,
) {
    let Ok(plan) = app.compile(ws, store, &[label.to_string()]) else {
        return;
    };
    for step in why.steps.iter_mut().filter(|s| !s.changes.is_empty()) {
        let Some(id) = plan.graph.find(&step.label) else {
            continue;
        };
        let node = plan.graph.node(id);
        let Ok(components) = node.step.components(&w4b_graph::PlanContext { name: &node.name }) else {
            continue;
        };
        for change in &mut step.changes {
            let now = components
                .iter()
                .find(|c| c.kind.as_str() == change.component && c.name == change.name)
                .and_then(|c| c.location.clone());
            if now.is_some() {
                change.location = now;
            }
        }
    }
}

/// How a locked package differs between the two builds of an `install` step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageStatus {
    Changed,
    Added,
    Removed,
}

/// One side of a package change: what the lock pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageVersion {
    pub version: String,
    pub architecture: String,
    pub sha256: String,
}

/// A package an `install` step installs that moved: `old` is `None` for an added package,
/// `new` for a removed one; `at` is its `w4b.lock` line (for a removed package, the line
/// in the lock of the earlier build, when that build recorded it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    pub name: String,
    pub change: PackageStatus,
    pub old: Option<PackageVersion>,
    pub new: Option<PackageVersion>,
    pub at: Option<String>,
}

/// The change's package, when it is one of an `install` step's package components.
fn package_change(c: &Change) -> Option<PackageChange> {
    let side = |v: &Option<String>| -> Option<Option<(String, PackageVersion)>> {
        match v {
            None => Some(None),
            Some(v) => {
                let d = crate::steps::install::parse_deb_component(&c.component, &c.name, v)?;
                Some(Some((
                    d.name,
                    PackageVersion {
                        version: d.version,
                        architecture: d.architecture,
                        sha256: d.sha256,
                    },
                )))
            }
        }
    };
    let (old, new) = (side(&c.old)?, side(&c.new)?);
    let (name, change) = match (&old, &new) {
        (Some((n, _)), Some(_)) => (n.clone(), PackageStatus::Changed),
        (None, Some((n, _))) => (n.clone(), PackageStatus::Added),
        (Some((n, _)), None) => (n.clone(), PackageStatus::Removed),
        (None, None) => return None,
    };
    Some(PackageChange {
        name,
        change,
        old: old.map(|(_, v)| v),
        new: new.map(|(_, v)| v),
        at: c.location.clone(),
    })
}

/// The package changes among an `install` step's changes, in the order of the changes
/// (by package name).
pub fn package_changes(step: &WhyStep) -> Vec<PackageChange> {
    if step.kind != "install" {
        return Vec::new();
    }
    step.changes.iter().filter_map(package_change).collect()
}

/// `w4b.why/1` as JSON: the engine's explanation, each `install` step with its package
/// changes added as `packages` (absent when none moved).
fn to_json(why: &Why) -> miette::Result<serde_json::Value> {
    let mut v = serde_json::to_value(why).into_diagnostic()?;
    if let Some(steps) = v.get_mut("steps").and_then(|s| s.as_array_mut()) {
        for (json, step) in steps.iter_mut().zip(&why.steps) {
            let packages = package_changes(step);
            if let (false, Some(obj)) = (packages.is_empty(), json.as_object_mut()) {
                obj.insert(
                    "packages".into(),
                    serde_json::to_value(packages).into_diagnostic()?,
                );
            }
        }
    }
    Ok(v)
}

/// A package change for people: `name: old → new`, `added   name version (arch)`,
/// `removed name version`, then where the lock pins it.
fn render_package(o: &mut String, p: &PackageChange) {
    match (&p.old, &p.new) {
        // Same version, other bytes: the repository rebuilt the package (as `w4b lock`
        // says it).
        (Some(a), Some(b)) if a.version == b.version && a.architecture == b.architecture => {
            let cut = |h: &str| h.chars().take(12).collect::<String>();
            let _ = writeln!(
                o,
                "  {}: {} rebuilt (sha256 {} → {})",
                p.name,
                b.version,
                cut(&a.sha256),
                cut(&b.sha256)
            );
        }
        (Some(a), Some(b)) => {
            let (arch_a, arch_b) = if a.architecture == b.architecture {
                (String::new(), String::new())
            } else {
                (format!(" ({})", a.architecture), format!(" ({})", b.architecture))
            };
            let _ = writeln!(o, "  {}: {}{arch_a} → {}{arch_b}", p.name, a.version, b.version);
        }
        (None, Some(b)) => {
            let _ = writeln!(o, "  added   {} {} ({})", p.name, b.version, b.architecture);
        }
        (Some(a), None) => {
            let _ = writeln!(o, "  removed {} {}", p.name, a.version);
        }
        (None, None) => return,
    }
    if let Some(at) = &p.at {
        let was = if p.change == PackageStatus::Removed {
            "was "
        } else {
            ""
        };
        let _ = writeln!(o, "    {was}at {at}");
    }
}

fn short(v: &Option<String>) -> String {
    match v {
        None => "(absent)".into(),
        Some(s) => {
            let one_line = s.replace('\n', "\\n");
            if one_line.len() > 72 {
                let cut: String = one_line.chars().take(64).collect();
                format!("{cut}… ({} bytes)", s.len())
            } else {
                format!("`{one_line}`")
            }
        }
    }
}

/// An entry's description for people: a digest's first 12 hex digits.
fn short_entry(v: &Option<String>) -> String {
    match v.as_deref() {
        None => "(absent)".into(),
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => s[..12].to_owned(),
        Some(s) => s.to_owned(),
    }
}

/// The paths inside a tree-valued change (or why they cannot be listed), at `indent`.
fn render_paths(o: &mut String, c: &Change, indent: &str) {
    for p in c.paths.iter().take(TEXT_PATHS) {
        let mode = match (&p.old_mode, &p.new_mode) {
            (Some(a), Some(b)) => format!(" (mode {a} → {b})"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "{indent}{:<8} {}: {} → {}{mode}",
            p.change.as_str(),
            p.path,
            short_entry(&p.old),
            short_entry(&p.new)
        );
    }
    if c.paths.len() > TEXT_PATHS {
        let _ = writeln!(
            o,
            "{indent}… and {} more (`--format json` lists them all)",
            c.paths.len() - TEXT_PATHS
        );
    }
    if let Some(n) = &c.note {
        let _ = writeln!(o, "{indent}note: {n}");
    }
}

/// The people's rendering: root causes with old → new and where, then what followed.
pub fn render_text(why: &Why) -> String {
    let mut o = String::new();
    let s = &why.summary;
    if !why.compared {
        let _ = writeln!(
            o,
            "`{}` has been built once: {} steps, {} ran, {} cached; nothing to compare yet.",
            why.target, s.steps, s.ran, s.cached
        );
        return o;
    }
    let _ = writeln!(
        o,
        "`{}`: {} steps, {} ran, {} cached (compared with the build before)",
        why.target, s.steps, s.ran, s.cached
    );
    if why.steps.is_empty() {
        let _ = writeln!(o, "Nothing changed: every step had the same key as before.");
        return o;
    }
    for step in &why.steps {
        match step.status {
            WhyStatus::Root => {
                let cached = if step.ran { "" } else { ", served from the cache" };
                let _ = writeln!(o, "\nroot cause  {} ({}{cached})", step.label, step.kind);
                let is_install = step.kind == "install";
                for c in step.changes.iter().filter(|c| c.component != "upstream") {
                    if let Some(p) = is_install.then(|| package_change(c)).flatten() {
                        render_package(&mut o, &p);
                        continue;
                    }
                    let _ = writeln!(
                        o,
                        "  {} {}: {} → {}",
                        c.component,
                        c.name,
                        short(&c.old),
                        short(&c.new)
                    );
                    if let Some(l) = &c.location {
                        let _ = writeln!(o, "    at {l}");
                    }
                    render_paths(&mut o, c, "    ");
                }
                // An unpacked archive that changed along with the step's own inputs.
                for c in step
                    .changes
                    .iter()
                    .filter(|c| c.component == "upstream" && !c.paths.is_empty())
                {
                    let from = c.location.as_deref().unwrap_or("an input step");
                    let _ = writeln!(o, "  inside {} (from {from}):", c.name);
                    render_paths(&mut o, c, "    ");
                }
                if step.output_changed == Some(false) {
                    let _ = writeln!(o, "  output unchanged: the rebuild stopped here");
                }
                if let Some(n) = &step.note {
                    let _ = writeln!(o, "  note: {n}");
                }
            }
            WhyStatus::Miss => {
                let reason = step
                    .miss
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "not found in the cache".into());
                let _ = writeln!(
                    o,
                    "\nre-ran      {} ({}): same key, but {reason}",
                    step.label, step.kind
                );
            }
            _ => {}
        }
    }
    let list = |status: WhyStatus| why.steps.iter().filter(move |s| s.status == status);
    if s.propagated > 0 {
        let _ = writeln!(
            o,
            "\n{} step(s) changed because an input step's output changed:",
            s.propagated
        );
        for st in list(WhyStatus::Propagated) {
            let cut = if st.output_changed == Some(false) {
                " (output unchanged)"
            } else {
                ""
            };
            let cached = if st.ran { "" } else { " (served from the cache)" };
            let _ = writeln!(o, "  {}{cut}{cached} ← {}", st.label, st.because_of.join(", "));
            // What changed inside an archive the step unpacks.
            for c in st
                .changes
                .iter()
                .filter(|c| !c.paths.is_empty() || c.note.is_some())
            {
                let _ = writeln!(o, "    inside {}:", c.name);
                render_paths(&mut o, c, "      ");
            }
        }
    }
    if s.cutoff > 0 {
        let _ = writeln!(
            o,
            "\n{} step(s) cut off: their inputs re-ran with identical output:",
            s.cutoff
        );
        for st in list(WhyStatus::Cutoff) {
            let _ = writeln!(o, "  {}", st.label);
        }
    }
    for (status, title) in [(WhyStatus::New, "new"), (WhyStatus::Removed, "removed")] {
        for st in list(status) {
            let _ = writeln!(o, "{title:>11} {} ({})", st.label, st.kind);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use w4b_graph::explain::{WhySummary, WHY_SCHEMA};

    use super::*;

    fn hex(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn path(p: &str, change: PathStatus, old: Option<String>, new: Option<String>) -> PathChange {
        PathChange {
            path: p.into(),
            change,
            old,
            new,
            old_mode: None,
            new_mode: None,
        }
    }

    fn step(label: &str, status: WhyStatus, changes: Vec<Change>) -> WhyStep {
        WhyStep {
            label: label.into(),
            kind: "layer".into(),
            status,
            ran: true,
            output_changed: Some(true),
            changes,
            because_of: if status == WhyStatus::Propagated {
                vec!["//hives:h#fetch:sensor-manager".into()]
            } else {
                vec![]
            },
            miss: None,
            note: None,
        }
    }

    fn change(component: &str, name: &str, paths: Vec<PathChange>) -> Change {
        Change {
            component: component.into(),
            name: name.into(),
            old: Some(hex('a')),
            new: Some(hex('b')),
            location: Some("defs/layers/app.yaml:4:5".into()),
            paths,
            note: None,
        }
    }

    #[test]
    fn text_lists_the_paths_inside_a_tree_with_short_digests() {
        let mut mode = path("bin/run", PathStatus::Changed, Some(hex('1')), Some(hex('1')));
        mode.old_mode = Some("0644".into());
        mode.new_mode = Some("0755".into());
        let own = change(
            "input",
            "files[1].source",
            vec![
                path(
                    "conf/app.conf",
                    PathStatus::Changed,
                    Some(hex('c')),
                    Some(hex('d')),
                ),
                mode,
                path("new.txt", PathStatus::Added, None, Some(hex('e'))),
                path("old", PathStatus::Removed, Some("symlink:x".into()), None),
            ],
        );
        let many = (0..52)
            .map(|n| path(&format!("f{n:02}"), PathStatus::Added, None, Some(hex('f'))))
            .collect();
        let why = Why {
            schema: WHY_SCHEMA,
            target: "//hives:h".into(),
            compared: true,
            summary: WhySummary {
                steps: 2,
                ran: 2,
                root: 1,
                propagated: 1,
                ..WhySummary::default()
            },
            steps: vec![
                step("//hives:h#app", WhyStatus::Root, vec![own]),
                step(
                    "//hives:h#sensor-manager",
                    WhyStatus::Propagated,
                    vec![change("upstream", "in0.file", many)],
                ),
            ],
        };
        let text = render_text(&why);
        for line in [
            "  input files[1].source: `",
            "    at defs/layers/app.yaml:4:5\n    changed  conf/app.conf: cccccccccccc → dddddddddddd\n",
            "    changed  bin/run: 111111111111 → 111111111111 (mode 0644 → 0755)\n",
            "    added    new.txt: (absent) → eeeeeeeeeeee\n",
            "    removed  old: symlink:x → (absent)\n",
            "  //hives:h#sensor-manager ← //hives:h#fetch:sensor-manager\n    inside in0.file:\n      added    f00: (absent) → ffffffffffff\n",
            "      added    f49: (absent)",
            "      … and 2 more (`--format json` lists them all)\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("f50"), "{text}");
    }

    fn deb(version: &str, arch: &str, sha: char) -> Option<String> {
        Some(format!(
            "{version} {arch} {}",
            std::iter::repeat_n(sha, 64).collect::<String>()
        ))
    }

    fn deb_change(name: &str, old: Option<String>, new: Option<String>, at: Option<&str>) -> Change {
        Change {
            component: "param".into(),
            name: format!("deb:{name}"),
            old,
            new,
            location: at.map(Into::into),
            paths: vec![],
            note: None,
        }
    }

    /// An install step whose lock moved: one bump, one package added, one removed, one
    /// rebuilt under the same version, besides its other inputs.
    fn install_why() -> Why {
        let mut install = step(
            "//images:edge#packages",
            WhyStatus::Root,
            vec![
                deb_change(
                    "exim4-base",
                    deb("4.96-15", "arm64", '1'),
                    None,
                    Some("w4b.lock:9:9"),
                ),
                deb_change(
                    "libpq5",
                    deb("15.8-0+deb12u1", "arm64", '2'),
                    deb("15.8-0+deb12u1", "arm64", '3'),
                    Some("w4b.lock:10:9"),
                ),
                deb_change(
                    "postgresql-15",
                    deb("15.8-0+deb12u1", "arm64", '4'),
                    deb("15.10-0+deb12u1", "arm64", '5'),
                    Some("w4b.lock:11:9"),
                ),
                deb_change(
                    "wireguard-tools",
                    None,
                    deb("1.0.20210914-1.1", "arm64", '6'),
                    Some("w4b.lock:13:9"),
                ),
                Change {
                    location: None,
                    ..change("upstream", "in3.file", vec![])
                },
            ],
        );
        install.kind = "install".into();
        Why {
            schema: WHY_SCHEMA,
            target: "//images:edge".into(),
            compared: true,
            summary: WhySummary {
                steps: 1,
                ran: 1,
                root: 1,
                ..WhySummary::default()
            },
            steps: vec![install],
        }
    }

    #[test]
    fn an_install_step_names_its_package_changes_at_their_lock_lines() {
        let text = render_text(&install_why());
        let expected = "\nroot cause  //images:edge#packages (install)\n\
            \x20 removed exim4-base 4.96-15\n\
            \x20   was at w4b.lock:9:9\n\
            \x20 libpq5: 15.8-0+deb12u1 rebuilt (sha256 222222222222 → 333333333333)\n\
            \x20   at w4b.lock:10:9\n\
            \x20 postgresql-15: 15.8-0+deb12u1 → 15.10-0+deb12u1\n\
            \x20   at w4b.lock:11:9\n\
            \x20 added   wireguard-tools 1.0.20210914-1.1 (arm64)\n\
            \x20   at w4b.lock:13:9\n";
        assert!(text.ends_with(expected), "{text}");
        assert!(!text.contains("deb:"), "no raw digests: {text}");
    }

    #[test]
    fn an_architecture_change_shows_both_architectures() {
        let mut why = install_why();
        why.steps[0].changes = vec![deb_change(
            "w4b-lib",
            deb("1.0-1", "all", 'a'),
            deb("1.1-1", "arm64", 'b'),
            None,
        )];
        let text = render_text(&why);
        assert!(
            text.contains("\n  w4b-lib: 1.0-1 (all) → 1.1-1 (arm64)\n"),
            "{text}"
        );
        assert!(
            !text.contains("    at"),
            "no location recorded, none shown: {text}"
        );
    }

    #[test]
    fn only_install_steps_read_their_params_as_packages() {
        let mut why = install_why();
        why.steps[0].kind = "layer".into();
        let text = render_text(&why);
        assert!(
            text.contains("  param deb:postgresql-15: 15.8-0+deb12u1 arm64 "),
            "{text}"
        );
        assert!(package_changes(&why.steps[0]).is_empty());
        let json = to_json(&why).unwrap();
        assert!(json["steps"][0].get("packages").is_none(), "{json}");
    }

    #[test]
    fn json_carries_the_package_changes_of_an_install_step() {
        let json = to_json(&install_why()).unwrap();
        let packages = &json["steps"][0]["packages"];
        assert_eq!(packages.as_array().map(Vec::len), Some(4), "{json}");
        assert_eq!(
            packages[2],
            serde_json::json!({
                "name": "postgresql-15",
                "change": "changed",
                "old": {"version": "15.8-0+deb12u1", "architecture": "arm64", "sha256": "4".repeat(64)},
                "new": {"version": "15.10-0+deb12u1", "architecture": "arm64", "sha256": "5".repeat(64)},
                "at": "w4b.lock:11:9",
            })
        );
        assert_eq!(packages[0]["change"], "removed");
        assert_eq!(packages[0]["new"], serde_json::Value::Null);
        assert_eq!(packages[3]["change"], "added");
        assert_eq!(packages[3]["old"], serde_json::Value::Null);
        // The engine's own changes stay as they were.
        assert_eq!(json["steps"][0]["changes"][2]["name"], "deb:postgresql-15");
        assert_eq!(json["schema"], WHY_SCHEMA);
    }
}
