//! `w4b graph LABEL… --format dot|mermaid|json`: the compiled step graph, without building.

use miette::IntoDiagnostic;
use w4b_graph::render;

use super::App;
use crate::cli::{GraphArgs, GraphFormat};

pub fn run(app: &App, args: &GraphArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let store = app.store(&ws)?;
    let plan = app.compile(&ws, &store, &args.labels)?;
    let roots: Vec<_> = plan
        .targets
        .iter()
        .flat_map(|t| t.roots.iter().copied())
        .collect();
    match args.format {
        GraphFormat::Dot => print!("{}", render::dot(&plan.graph, &roots)),
        GraphFormat::Mermaid => print!("{}", render::mermaid(&plan.graph, &roots)),
        GraphFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json(&plan.graph, &roots)).into_diagnostic()?
        ),
    }
    Ok(0)
}
