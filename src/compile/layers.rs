//! The layer stage: a `kind: layer` target's file operations as a `layer` step, with a
//! `fetch` step in front of it for each downloaded file.

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_graph::NodeId;

use super::{host_path, loc, Compiler, PlanEpoch};
use crate::defs::{self, LoadedTarget};
use crate::steps::fetch::FetchStep;
use crate::steps::layer::{FileOp, LayerFile, LayerStep};
use crate::tree::TreePath;

impl Compiler<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer(
        &mut self,
        lt: &LoadedTarget,
        layer: &defs::Layer,
        img: &LoadedTarget,
        image: &defs::Image,
        epoch: &PlanEpoch,
        name: &str,
    ) -> miette::Result<NodeId> {
        let mut files = Vec::new();
        let mut deps = Vec::new();
        let mut display = BTreeMap::new();
        let mut has_template = false;
        for (i, entry) in layer.files.iter().enumerate() {
            let f = &entry.value;
            let path = TreePath::parse(f.path.as_str()).map_err(|e| {
                miette::miette!(
                    code = "w4b::defs::bad_path",
                    "{e} (at {})",
                    loc(lt, &format!("files[{i}].path")).unwrap_or_default()
                )
            })?;
            let host = |p: &defs::WsPath, key: &str| {
                host_path(self.ws, p.as_str(), || {
                    loc(lt, &format!("files[{i}].{key}")).unwrap_or_else(|| lt.label.to_string())
                })
            };
            let (op, mode) = match &f.op {
                defs::FileOp::Content { content, mode } => (FileOp::Content(content.clone()), Some(mode.0)),
                defs::FileOp::Source { source, mode } => {
                    display.insert(i, source.to_string());
                    (FileOp::Source(host(source, "source")?), mode.map(|m| m.0))
                }
                defs::FileOp::Template { template, mode } => {
                    has_template = true;
                    display.insert(i, template.to_string());
                    (FileOp::Template(host(template, "template")?), Some(mode.0))
                }
                defs::FileOp::Symlink { target } => (FileOp::Symlink(target.clone()), None),
                defs::FileOp::Dir { mode } => (FileOp::Dir, Some(mode.0)),
                defs::FileOp::Remove => (FileOp::Remove, None),
                defs::FileOp::Append { content } => (FileOp::Append(content.clone()), None),
                defs::FileOp::Fetch {
                    url,
                    sha256,
                    size,
                    mode,
                } => {
                    let sha = crate::steps::fetch::parse_sha256(sha256).map_err(miette::Report::new)?;
                    let declared_in = loc(lt, &format!("files[{i}].fetch.sha256"))
                        .or_else(|| loc(lt, &format!("files[{i}].sha256")))
                        .unwrap_or_else(|| lt.label.to_string());
                    let mirrors = self.mirrors();
                    let step = Arc::new(FetchStep {
                        store: self.store.clone(),
                        fetcher: self.fetcher()?,
                        url: url.clone(),
                        sha256: sha,
                        size: *size,
                        mirrors,
                        declared_in,
                    });
                    let hex = hex::encode(sha);
                    let node = self.add(
                        format!("{}#fetch:{}", lt.label, f.path),
                        hex.as_bytes(),
                        step,
                        vec![],
                    );
                    deps.push(node);
                    (
                        FileOp::Fetch {
                            input: deps.len() - 1,
                            sha256: hex,
                        },
                        Some(mode.0),
                    )
                }
            };
            files.push(LayerFile {
                path,
                op,
                mode,
                uid: f.owner.uid,
                gid: f.owner.gid,
            });
        }
        let mut locations: BTreeMap<String, String> = lt
            .locations
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        // Templates see the image's `config`: point at its first value there.
        if let Some((_, l)) = img
            .locations
            .iter()
            .find(|(k, _)| *k == "config" || k.starts_with("config."))
        {
            locations.insert("config".into(), l.to_string());
        }
        let image_label = img.label.to_string();
        let config = config_json(&image.config, img)?;
        let template_context = has_template.then(|| (config, image_label.clone()));
        // Identity: the layer's typed definition, what its templates see, and the epoch.
        let mut def = format!("{:?}|epoch={epoch}", files);
        if let Some((c, t)) = &template_context {
            def.push_str(&format!("|config={c}|target={t}"));
        }
        for f in &files {
            if let FileOp::Source(p) | FileOp::Template(p) = &f.op {
                def.push_str(&format!("|host={}", p.display()));
            }
        }
        let step = Arc::new(LayerStep {
            store: self.store.clone(),
            files,
            locations,
            epoch: epoch.for_step(&mut deps),
            template_context,
            display,
            planned: Default::default(),
        });
        Ok(self.add(name.to_string(), def.as_bytes(), step, deps))
    }
}

/// The image's `config` as the JSON templates see (and the layer's key holds). JSON has no
/// NaN or infinity, and serde would write either as `null`, so such a value is an error
/// naming where it was written rather than a `null` that keys like a real one.
fn config_json(
    config: &BTreeMap<String, defs::ConfigValue>,
    img: &LoadedTarget,
) -> miette::Result<serde_json::Value> {
    fn check(path: &str, v: &defs::ConfigValue) -> Result<(), String> {
        match v {
            defs::ConfigValue::Float(f) if !f.is_finite() => Err(path.to_owned()),
            defs::ConfigValue::List(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| check(&format!("{path}[{i}]"), item)),
            defs::ConfigValue::Map(m) => m
                .iter()
                .try_for_each(|(k, item)| check(&format!("{path}.{k}"), item)),
            _ => Ok(()),
        }
    }
    for (k, v) in config {
        check(&format!("config.{k}"), v).map_err(|path| {
            let at = loc(img, &path).unwrap_or_else(|| img.label.to_string());
            miette::miette!(
                code = "w4b::defs::config_not_json",
                help = "template values must be JSON numbers: write a finite number, or quote it as a string",
                "`{path}` is not a finite number (at {at})"
            )
        })?;
    }
    serde_json::to_value(config).map_err(|e| {
        miette::miette!(
            code = "w4b::defs::config_not_json",
            help = "report this as a w4b bug, with the image definition",
            "the image's `config` of `{}` cannot be serialised: {e}",
            img.label
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(config_yaml: &str) -> (LoadedTarget, BTreeMap<String, defs::ConfigValue>) {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("w4b.yaml", String::new()),
            (
                "defs/images/edge.yaml",
                format!("kind: image\nbase: scratch\nconfig:\n{config_yaml}"),
            ),
        ];
        for (p, t) in &files {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let env = Default::default();
        let ws = defs::Workspace::open(dir.path(), &env).unwrap();
        let loader = defs::Loader::new(ws, env, &[]).unwrap();
        let t = loader
            .load(&defs::Label::parse("//images:edge", None).unwrap())
            .unwrap();
        let config = match &t.target {
            defs::Target::Image(i) => i.config.clone(),
            other => panic!("{other:?}"),
        };
        (t, config)
    }

    #[test]
    fn config_becomes_json() {
        let (t, config) = target("  motd: hello\n  n: 1.5\n  list: [1, two]\n");
        let json = config_json(&config, &t).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"motd": "hello", "n": 1.5, "list": [1, "two"]})
        );
    }

    /// Regression: `.inf`, `.nan` and `null` all became `null`, so images whose configs
    /// differ shared a layer key and their templates saw the same value.
    #[test]
    fn non_finite_numbers_are_errors_naming_where_they_are() {
        for (yaml, path) in [
            ("  n: .inf\n", "config.n"),
            ("  deep: {list: [1, -.inf]}\n", "config.deep.list[1]"),
            ("  x: .nan\n", "config.x"),
        ] {
            let (t, config) = target(yaml);
            let err = config_json(&config, &t).expect_err(yaml);
            let text = format!("{err:?}");
            assert!(
                text.contains(&format!("`{path}` is not a finite number")),
                "{text}"
            );
            assert!(text.contains("edge.yaml"), "{text}");
        }
    }
}
