//! `w4b hive validate FILE|LABEL` and `w4b hive show LABEL`: a hive checked by the hive
//! configuration manager's rules (every problem listed), and its resolved configuration
//! with secrets masked. The other `hive` subcommands live beside it: `new` and `keys` in
//! [`super::hive_new`], `list`, `peers` and `validate PATTERN` in [`super::hive_fleet`].

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::App;
use crate::cli::{HiveCommand, ShowFormat};
use crate::defs::Loader;
use crate::hive::load::{self, ResolvedHive};

pub fn run(app: &App, cmd: &HiveCommand) -> miette::Result<i32> {
    match cmd {
        HiveCommand::Validate(a) if a.target.contains("...") => super::hive_fleet::validate(app, &a.target),
        HiveCommand::Validate(a) => validate(app, &a.target),
        HiveCommand::Show(a) => show(app, &a.label, a.format),
        HiveCommand::New(a) => super::hive_new::new(app, a),
        HiveCommand::Keys(a) => super::hive_new::keys(app, a),
        HiveCommand::List(a) => super::hive_fleet::list(app, a.pattern.as_deref()),
        HiveCommand::Peers(a) => super::hive_fleet::peers(app, a.pattern.as_deref()),
    }
}

fn validate(app: &App, target: &str) -> miette::Result<i32> {
    let is_file = target.ends_with(".yaml")
        || target.ends_with(".yml")
        || (!target.contains(':') && Path::new(target).is_file());
    let mut conflicts = Vec::new();
    let result = if is_file {
        let ws = app.workspace().ok();
        let path = app.cwd.join(target);
        load::check_file(ws.as_ref(), &app.env, &path).map(|h| (h.hive_id, None))
    } else {
        let ws = app.workspace()?;
        let label = app.resolve_one(&ws, target)?;
        let loader = Loader::new(ws.clone(), app.env.clone(), &app.global.set)?;
        // What only the fleet knows about this hive: its id or VPN address in another file.
        conflicts = super::hive_fleet::conflicts_of(app, &ws, &loader, &label)?;
        load::resolve(&loader, &label).map(|r| (r.config.hive.hive_id, Some(r.image)))
    };
    let mut bad = conflicts.len();
    match result {
        Ok((id, image)) if conflicts.is_empty() => match image {
            Some(image) => println!("`{target}`: hive `{id}` is valid (built on `{image}`)"),
            None => println!("`{target}`: hive `{id}` is valid"),
        },
        Ok(_) => {}
        Err(e) => {
            super::show_diagnostic(&miette::Report::new(e));
            bad += 1;
        }
    }
    for p in conflicts {
        super::show_diagnostic(&miette::Report::new(p));
    }
    Ok(i32::from(bad > 0))
}

fn show(app: &App, label: &str, format: ShowFormat) -> miette::Result<i32> {
    let ws = app.workspace()?;
    let label = app.resolve_one(&ws, label)?;
    let loader = Loader::new(ws, app.env.clone(), &app.global.set)?;
    let resolved = load::resolve(&loader, &label)?;
    print!("{}", render(&resolved, format)?);
    Ok(0)
}

/// What `hive show` prints: the target, its image, the files read and the configuration.
/// Secrets serialise as `***` ([`crate::hive::config::Secret`]).
#[derive(Serialize)]
struct Shown<'a> {
    label: String,
    image: String,
    hostname: String,
    files: Vec<&'a str>,
    secret_files: &'a [String],
    config: &'a crate::hive::config::HiveImage,
}

/// Fails only if the configuration cannot be serialised, which is reported rather than
/// printed as `null`.
pub fn render(r: &ResolvedHive, format: ShowFormat) -> miette::Result<String> {
    let shown = Shown {
        label: r.label.to_string(),
        image: r.image.to_string(),
        hostname: r.config.hostname(),
        files: r.files.iter().map(|(p, _)| p.as_str()).collect(),
        secret_files: &r.secret_files,
        config: &r.config,
    };
    let not_json = |e: serde_json::Error| {
        miette::miette!(
            code = "w4b::hive::show",
            help = "report this as a w4b bug, with the hive file",
            "cannot show the configuration of `{}`: {e}",
            r.label
        )
    };
    let mut value = serde_json::to_value(&shown).map_err(not_json)?;
    redact_urls(&mut value);
    Ok(match format {
        ShowFormat::Json => format!("{}\n", serde_json::to_string_pretty(&value).map_err(not_json)?),
        ShowFormat::Yaml => {
            let mut out = String::new();
            yaml(&value, 0, &mut out);
            out
        }
    })
}

/// Hides the credentials of every URL in the shown configuration (the sensor manager's
/// `source.url` may be `https://ci:token@host/…`), as every other display of a URL does.
fn redact_urls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.contains("://") => {
            *s = crate::download::redact_url(s).into_owned();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_urls),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_urls),
        _ => {}
    }
}

/// A small YAML writer for JSON values: block style, strings double-quoted with JSON
/// escapes (valid YAML), empty collections in flow style.
fn yaml(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value as J;
    let pad = " ".repeat(indent);
    match v {
        J::Object(map) => {
            for (k, item) in map {
                let _ = write!(out, "{pad}{k}:");
                scalar_or_nested(item, indent, out);
            }
        }
        J::Array(items) => {
            for item in items {
                let _ = write!(out, "{pad}-");
                match item {
                    J::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line, the rest aligned under it.
                        let mut first = String::new();
                        yaml(item, indent + 2, &mut first);
                        let _ = write!(out, " {}", first.trim_start());
                    }
                    _ => scalar_or_nested(item, indent, out),
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

fn scalar_or_nested(item: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value as J;
    match item {
        J::Object(m) if !m.is_empty() => {
            out.push('\n');
            yaml(item, indent + 2, out);
        }
        J::Array(a) if !a.is_empty() => {
            out.push('\n');
            yaml(item, indent + 2, out);
        }
        other => {
            let _ = writeln!(out, " {}", scalar(other));
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match v {
        J::Null => "null".into(),
        J::Object(_) => "{}".into(),
        J::Array(_) => "[]".into(),
        // Strings as JSON strings (quoted, escaped): valid YAML.
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::{Label, Workspace};

    #[test]
    fn show_masks_secrets_and_writes_yaml_that_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("w4b.yaml", "hives: {image: //images:edge}\n".to_owned()),
            ("defs/images/edge.yaml", "kind: image\nbase: scratch\n".to_owned()),
            (
                "defs/hives/north.yaml",
                include_str!("../../tests/hives/hive_AbCd1234.yaml").to_owned(),
            ),
        ];
        for (p, t) in &files {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let env = Default::default();
        let ws = Workspace::open(dir.path(), &env).unwrap();
        let loader = Loader::new(ws, env, &[]).unwrap();
        let r = load::resolve(&loader, &Label::parse("//hives:north", None).unwrap()).unwrap();
        let json = render(&r, ShowFormat::Json).unwrap();
        let yaml_text = render(&r, ShowFormat::Yaml).unwrap();
        for secret in r.config.secrets() {
            for line in secret.expose().lines() {
                assert!(!json.contains(line) && !yaml_text.contains(line), "{line}");
            }
        }
        assert!(yaml_text.contains("password: \"***\""), "{yaml_text}");
        // The YAML is the JSON, written differently.
        let j: serde_json::Value = serde_json::from_str(&json).unwrap();
        let file = crate::defs::SourceFile::new(
            crate::defs::Origin::File {
                path: "show.yaml".into(),
            },
            yaml_text.clone(),
        );
        let doc = crate::defs::yaml::parse(&file).unwrap();
        let back: crate::defs::ConfigValue = crate::defs::de::from_value(&doc).unwrap();
        assert_eq!(serde_json::to_value(back).unwrap(), j);
        assert_eq!(j["hostname"], "w4b-abcd1234");
        assert_eq!(j["config"]["hive"]["sensors"][1]["interface"]["data_pin"], 5);
        assert!(yaml_text.contains("\n        id: \"temp_01\"\n"), "{yaml_text}");
    }

    #[test]
    fn show_redacts_credentials_in_urls() {
        let mut v = serde_json::json!({
            "source": {"url": "https://ci:tok3n@example.org/sm.tar.gz"},
            "list": ["http://u@h/x", "plain text", "https://example.org/a@b"],
        });
        redact_urls(&mut v);
        let text = v.to_string();
        assert!(!text.contains("tok3n") && !text.contains("u@h"), "{text}");
        assert!(text.contains("https://***@example.org/sm.tar.gz"), "{text}");
        assert!(text.contains("https://example.org/a@b"), "{text}");
    }
}
