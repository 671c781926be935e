//! The corpus of bad definitions under `tests/defs-corpus/`, each rendered as a person sees
//! it and pinned with an insta snapshot.
//!
//! A case is a workspace directory with a `case.txt`: `load <label>`, optional `env K=V` and
//! `set key=value` lines, `#` comments. Loading must fail; the rendered diagnostic (no colour,
//! fixed width) must name `file:line:col`, carry a `w4b::defs::` code and a `help:` line.

use std::collections::BTreeMap;
use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme};

use super::{DefsError, Label, Loader, Workspace};

struct Case {
    label: String,
    env: BTreeMap<String, String>,
    sets: Vec<String>,
}

fn read_case(dir: &Path) -> Case {
    let text = std::fs::read_to_string(dir.join("case.txt")).expect("case.txt");
    let mut case = Case {
        label: String::new(),
        env: BTreeMap::new(),
        sets: Vec::new(),
    };
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.split_once(' ') {
            Some(("load", label)) => case.label = label.to_owned(),
            Some(("env", pair)) => {
                let (k, v) = pair.split_once('=').expect("env K=V");
                case.env.insert(k.to_owned(), v.to_owned());
            }
            Some(("set", arg)) => case.sets.push(arg.to_owned()),
            _ => panic!("{}: bad case line {line:?}", dir.display()),
        }
    }
    case
}

fn load(dir: &Path, case: &Case) -> Result<(), DefsError> {
    let ws = Workspace::open(dir, &case.env)?;
    let loader = Loader::new(ws, case.env.clone(), &case.sets)?;
    let label = Label::parse(&case.label, None).map_err(|e| e.into_defs(None))?;
    loader.load(&label).map(drop)
}

fn render(err: &DefsError) -> String {
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    handler
        .render_report(&mut out, err)
        .expect("rendering to a String");
    out
}

#[test]
fn every_bad_definition_is_diagnosed_with_location_and_help() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/defs-corpus");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/defs-corpus")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "corpus has only {} cases", cases.len());
    for dir in cases {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_owned();
        let case = read_case(&dir);
        let err = match load(&dir, &case) {
            Ok(()) => panic!("{name}: loaded without an error"),
            Err(err) => err,
        };
        let rendered = render(&err);
        assert!(rendered.contains("w4b::defs::"), "{name}: no code in\n{rendered}");
        assert!(rendered.contains("help:"), "{name}: no help in\n{rendered}");
        let has_location = rendered
            .lines()
            .any(|l| l.contains("─[") && l.trim_end().ends_with(']') && l.matches(':').count() >= 2);
        assert!(has_location, "{name}: no file:line:col in\n{rendered}");
        insta::assert_snapshot!(name, rendered);
    }
}
