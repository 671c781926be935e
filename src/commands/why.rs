//! `w4b why LABEL`: what changed between the last two builds of a target, and what it
//! caused. Text for people, `w4b.why/1` JSON for tools.

use std::fmt::Write as _;

use miette::IntoDiagnostic;
use w4b_graph::explain::{explain, Why, WhyStatus};
use w4b_graph::history;

use super::App;
use crate::cli::{WhyArgs, WhyFormat};

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
    let mut why = explain(store.as_ref(), &h);
    current_locations(app, &ws, &store, &args.label, &mut why);
    match args.format {
        WhyFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&why).into_diagnostic()?);
        }
        WhyFormat::Text => print!("{}", render_text(&why)),
    }
    Ok(0)
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
                for c in step.changes.iter().filter(|c| c.component != "upstream") {
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
