//! `w4b ls [PATTERN]`: targets and their kinds, one per line, sorted.

use super::App;
use crate::cli::LsArgs;

pub fn run(app: &App, args: &LsArgs) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let pattern = app.pattern(&ws, args.pattern.as_deref().unwrap_or("//..."))?;
    let loader = crate::defs::Loader::new(ws.clone(), app.env.clone(), &app.global.set)?;
    let targets = loader.list(&pattern)?;
    let width = targets
        .iter()
        .map(|(l, _)| l.to_string().len())
        .max()
        .unwrap_or(0);
    for (label, kind) in targets {
        println!("{:width$}  {kind}", label.to_string());
    }
    Ok(0)
}
