//! The commands that look at every hive at once: `w4b hive validate PATTERN` (each hive by
//! its rules, then no hive id or VPN address twice; for a single label, [`conflicts_of`]), `w4b hive list` and `w4b hive peers`
//! (the hub's side of every hive's tunnel). Output is sorted by label, so it is the same
//! whatever order the files were found in.

use std::fmt::Write as _;

use serde::Serialize;

use super::App;
use crate::cli::MessageFormat;
use crate::defs::{Label, Loader, Workspace};
use crate::hive::fleet::{self, Member};
use crate::hive::load;

/// `w4b hive validate //hives/...`.
pub fn validate(app: &App, pattern: &str) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let labels = app.resolve(&ws, &[pattern.to_owned()])?;
    let loader = Loader::new(ws.clone(), app.env.clone(), &app.global.set)?;
    let (members, unreadable) = fleet::scan(&loader, &labels);
    let mut failed = 0usize;
    for e in unreadable {
        super::show_diagnostic(&miette::Report::new(e));
        failed += 1;
    }
    for m in &members {
        match load::resolve(&loader, &m.label) {
            Ok(r) => println!(
                "`{}`: hive `{}` is valid (built on `{}`)",
                m.label, r.config.hive.hive_id, r.image
            ),
            Err(e) => {
                super::show_diagnostic(&miette::Report::new(e));
                failed += 1;
            }
        }
    }
    let problems = fleet::check(&members, &ws.config().vpn);
    let conflicts = problems.len();
    for p in problems {
        super::show_diagnostic(&miette::Report::new(p));
    }
    if members.is_empty() && failed == 0 {
        return Err(miette::miette!(
            code = "w4b::hive::none",
            help = "`w4b ls` lists the targets; `w4b hive new` makes a hive",
            "`{pattern}` names no hive"
        ));
    }
    let bad = failed + conflicts;
    if bad > 0 {
        eprintln!(
            "{} hive{} checked: {bad} problem{}",
            members.len(),
            plural(members.len()),
            plural(bad)
        );
        return Ok(1);
    }
    println!(
        "{} hive{} valid; no hive id or VPN address used twice",
        members.len(),
        plural(members.len())
    );
    Ok(0)
}

/// The fleet problems of the one hive `label` (`w4b hive validate //hives:north`): another
/// hive target with its hive id or VPN address. Only definition files are read (untyped),
/// nothing is built. The other hives are read as their files say, without the `W4B_*`
/// variables and `--set`s that apply to `label`: `W4B_HIVE_ID` names the id of the one
/// hive being worked on, so it collides with another file, not with itself copied to
/// every hive.
pub fn conflicts_of(
    app: &App,
    ws: &Workspace,
    loader: &Loader,
    label: &Label,
) -> miette::Result<Vec<fleet::FleetProblem>> {
    let (one, _) = fleet::scan(loader, std::slice::from_ref(label));
    let Some(one) = one.into_iter().next() else {
        // Not a hive, or unreadable: `load::resolve` says which.
        return Ok(Vec::new());
    };
    let plain = as_written(app, ws)?;
    let all = ws.expand(
        &crate::defs::Pattern::parse("//...", None).map_err(|e| miette::Report::new(e.into_defs(None)))?,
    )?;
    // Files that cannot be read are their own hives' problem (`hive validate //...`).
    let (others, _) = fleet::scan(&plain, &all);
    Ok(fleet::check_one(&one, &others, &ws.config().vpn))
}

/// A loader that reads hive files as they are written: `${VAR}` substitution, but none of
/// the `W4B_*` overrides or `--set`s, which set a value of every hive a command reads and
/// would make every other hive seem to have the one being worked on's id or address.
pub fn as_written(app: &App, ws: &Workspace) -> miette::Result<Loader> {
    let mut env = app.env.clone();
    for o in crate::defs::ENV_OVERRIDES {
        env.remove(o.var);
    }
    Ok(Loader::new(ws.clone(), env, &[])?)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The hives a list or peers command is about: the pattern's, or every one.
fn members(app: &App, pattern: Option<&str>) -> miette::Result<(Workspace, Vec<Member>)> {
    let ws = app.workspace()?;
    let labels = app.resolve(&ws, &[pattern.unwrap_or("//...").to_owned()])?;
    let loader = Loader::new(ws.clone(), app.env.clone(), &app.global.set)?;
    let (members, _) = fleet::scan(&loader, &labels);
    Ok((ws, members))
}

/// One row of `w4b hive list`.
#[derive(Serialize)]
struct Row {
    label: String,
    hive_id: String,
    name: Option<String>,
    location: Option<String>,
    vpn_address: Option<String>,
    image: Option<String>,
    /// The digest (BLAKE3) of the last build's compressed image in this cache, if any.
    last_build: Option<String>,
}

/// `w4b hive list`.
pub fn list(app: &App, pattern: Option<&str>) -> miette::Result<i32> {
    let (ws, members) = members(app, pattern)?;
    let store = app.store_for(Some(&ws))?;
    let rows: Vec<Row> = members
        .iter()
        .map(|m| Row {
            label: m.label.to_string(),
            hive_id: m.id().to_owned(),
            name: m.name.clone(),
            location: m.location.clone(),
            vpn_address: m.client_ip.as_ref().map(|(t, _, _)| t.clone()),
            image: m.image.clone(),
            last_build: last_build(store.as_ref(), &m.label),
        })
        .collect();
    if app.global.message_format == MessageFormat::Json {
        let json = serde_json::to_string(&rows).map_err(|e| miette::miette!("{e}"))?;
        println!("{json}");
        return Ok(0);
    }
    print!("{}", table(&rows));
    Ok(0)
}

/// The image digest of the newest build of `label` in the build history, shortened.
fn last_build(store: &crate::store::AppStore, label: &Label) -> Option<String> {
    let h = w4b_graph::history::load(store, &label.to_string()).ok()??;
    let build = h.builds.first()?;
    let compress = build
        .steps
        .iter()
        .rev()
        .find(|s| s.kind == "compress")
        .or_else(|| build.steps.last())?;
    let digest = compress.outputs.values().next()?;
    Some(format!("{}", digest).chars().take(12).collect())
}

fn table(rows: &[Row]) -> String {
    let header = ["HIVE", "NAME", "LOCATION", "VPN ADDRESS", "IMAGE", "LAST BUILD"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            [
                r.hive_id.clone(),
                or(&r.name),
                or(&r.location),
                or(&r.vpn_address),
                or(&r.image),
                r.last_build.clone().unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: [&str; 6]| {
        let mut l = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c}{}  ", " ".repeat(w - c.chars().count()));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &cells {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    out
}

/// `w4b hive peers`: one `[Peer]` per hive that has a WireGuard public key and a VPN
/// address, in label order; hives lacking either are named on stderr.
pub fn peers(app: &App, pattern: Option<&str>) -> miette::Result<i32> {
    let (_ws, members) = members(app, pattern)?;
    let mut out = String::new();
    for m in &members {
        match (&m.public_key, &m.address()) {
            (Some(key), Some(addr)) => {
                let name = m.name.as_deref().unwrap_or("");
                let _ = writeln!(
                    out,
                    "# {} {}\n[Peer]\nPublicKey = {key}\nAllowedIPs = {addr}/32\n",
                    m.id(),
                    name.replace('\n', " ")
                );
            }
            _ => eprintln!(
                "`{}` ({}) has no WireGuard public key or VPN address: no peer",
                m.label, m.file
            ),
        }
    }
    print!("{}", out.trim_end_matches('\n'));
    if !out.is_empty() {
        println!();
    }
    Ok(0)
}
