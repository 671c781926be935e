//! The layer stage: a `kind: layer` target's file operations as a `layer` step, with a
//! `fetch` step in front of it for each downloaded file.

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_graph::NodeId;

use super::{loc, Compiler, PlanEpoch};
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
            let host = |p: &defs::WsPath| self.ws.root().join(p.as_str());
            let (op, mode) = match &f.op {
                defs::FileOp::Content { content, mode } => (FileOp::Content(content.clone()), Some(mode.0)),
                defs::FileOp::Source { source, mode } => {
                    display.insert(i, source.to_string());
                    (FileOp::Source(host(source)), mode.map(|m| m.0))
                }
                defs::FileOp::Template { template, mode } => {
                    has_template = true;
                    display.insert(i, template.to_string());
                    (FileOp::Template(host(template)), Some(mode.0))
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
        let config = serde_json::to_value(&image.config).unwrap_or(serde_json::Value::Null);
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
