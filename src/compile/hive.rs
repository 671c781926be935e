//! The hive stage: a hive's own layers — the sensor manager's code, one `module` step
//! per enabled W4B module, and `firstboot` assembling their sections.

use std::collections::BTreeMap;
use std::sync::Arc;

use w4b_graph::NodeId;

use super::{Compiler, PlanEpoch};
use crate::hive::load::ResolvedHive;
use crate::steps::accounts::AccountsStep;
use crate::steps::extract::ExtractStep;
use crate::steps::fetch::{redact_url, FetchStep};
use crate::steps::firstboot::FirstbootStep;
use crate::steps::layer::{FileOp, LayerFile};
use crate::steps::module::ModuleStep;
use crate::tree::TreePath;

impl Compiler<'_> {
    /// A hive's own layers, after the image's: the sensor manager's code (from its pinned
    /// source), one `module` step per enabled W4B module, and `firstboot` assembling their
    /// sections.
    pub(super) fn hive_layers(
        &mut self,
        h: &ResolvedHive,
        epoch: &PlanEpoch,
        label: &str,
        dependencies: &mut Vec<(String, String, Option<String>)>,
    ) -> miette::Result<Vec<NodeId>> {
        let cfg = Arc::new(h.config.clone());
        let location = h
            .locations
            .get("hive.hive_id")
            .or_else(|| h.locations.values().next())
            .map(|l| l.to_string());
        let locations: BTreeMap<String, String> = h
            .locations
            .iter()
            .map(|(k, l)| (k.clone(), l.to_string()))
            .collect();
        let mut nodes = Vec::new();

        let sm = &cfg.settings.sensor_manager;
        if sm.enabled {
            match &sm.source {
                Some(crate::hive::config::SourceSpec::Path { path }) => {
                    let host = super::host_path(self.ws, path, || {
                        h.locations
                            .iter()
                            .find(|(k, _)| k.ends_with("sensor_manager.source.path"))
                            .map(|(_, l)| l.to_string())
                            .or_else(|| location.clone())
                            .unwrap_or_else(|| label.to_owned())
                    })?;
                    let files = vec![LayerFile {
                        path: TreePath::parse(SENSOR_MANAGER_DIR).expect("a valid path"),
                        op: FileOp::Source(host.clone()),
                        mode: None,
                        uid: 0,
                        gid: 0,
                    }];
                    let def = format!("sensor-manager source {} epoch={epoch}", host.display());
                    nodes.push(self.plain_layer(
                        format!("{label}#sensor-manager"),
                        &def,
                        files,
                        BTreeMap::new(),
                        [(0, path.clone())].into(),
                        epoch,
                    ));
                }
                Some(crate::hive::config::SourceSpec::Url { url, sha256 }) => {
                    dependencies.push((url.clone(), sha256.clone(), Some("sensor_manager".into())));
                    let sha = crate::steps::fetch::parse_sha256(sha256).map_err(miette::Report::new)?;
                    let mirrors = self.mirrors();
                    let fetch = Arc::new(FetchStep {
                        store: self.store.clone(),
                        fetcher: self.fetcher()?,
                        url: url.clone(),
                        sha256: sha,
                        size: None,
                        mirrors,
                        declared_in: location.clone().unwrap_or_else(|| label.to_owned()),
                    });
                    let fetch = self.add(
                        format!("{label}#fetch:sensor-manager"),
                        sha256.as_bytes(),
                        fetch,
                        vec![],
                    );
                    let mut deps = vec![fetch];
                    let extract = Arc::new(ExtractStep {
                        store: self.store.clone(),
                        dest: SENSOR_MANAGER_DIR.into(),
                        epoch: epoch.for_step(&mut deps),
                        source: redact_url(url).into_owned(),
                    });
                    let def = format!("extract {SENSOR_MANAGER_DIR} epoch={epoch}");
                    nodes.push(self.add(format!("{label}#sensor-manager"), def.as_bytes(), extract, deps));
                }
                None => {}
            }
        }

        let mut module_nodes = Vec::new();
        for m in crate::modules::all() {
            if !m.enabled(&cfg) {
                continue;
            }
            let (json, secrets) = m.inputs(&cfg)?;
            let key = self.secret_key()?;
            // The node's identity sees the secrets only through a keyed digest.
            let mut def = format!("module {} v{} {json} epoch={epoch}", m.name(), m.version());
            let reads_secrets = !secrets.is_empty();
            for s in secrets {
                def.push_str(&format!(
                    " {}={}",
                    s.name,
                    crate::steps::module::secret_digest(&key, s.expose())
                ));
            }
            let name = m.name();
            let mut deps = Vec::new();
            let step = Arc::new(ModuleStep {
                store: self.store.clone(),
                module: m,
                config: cfg.clone(),
                epoch: epoch.for_step(&mut deps),
                secret_key: key,
                location: location.clone(),
                locations: locations.clone(),
                reads_secrets,
            });
            module_nodes.push(self.add(format!("{label}#module:{name}"), def.as_bytes(), step, deps));
        }
        let mut fb_deps = module_nodes.clone();
        let firstboot = Arc::new(FirstbootStep {
            store: self.store.clone(),
            epoch: epoch.for_step(&mut fb_deps),
            hive_id: cfg.hive.hive_id.clone(),
        });
        let def = format!("firstboot {} epoch={epoch}", cfg.hive.hive_id);
        let fb = self.add(format!("{label}#firstboot"), def.as_bytes(), firstboot, fb_deps);
        nodes.extend(module_nodes);
        nodes.push(fb);
        Ok(nodes)
    }
}

impl Compiler<'_> {
    /// The local cache's key for digests of secrets, read (or made) once per compile.
    fn secret_key(&mut self) -> miette::Result<[u8; 32]> {
        if let Some(k) = self.secret_key {
            return Ok(k);
        }
        let k = crate::steps::module::secret_key(self.store).map_err(miette::Report::new)?;
        self.secret_key = Some(k);
        Ok(k)
    }

    /// `accounts` on the combined tree `rootfs` (see [`crate::steps::accounts`]).
    pub(super) fn accounts(
        &mut self,
        h: &ResolvedHive,
        rootfs: NodeId,
        epoch: &PlanEpoch,
        label: &str,
    ) -> miette::Result<NodeId> {
        let account = crate::modules::system::admin_account(&h.config).map_err(miette::Report::new)?;
        let location = [
            "hive.security.local_access.username",
            "hive.security.local_access",
            "hive.hive_id",
        ]
        .iter()
        .find_map(|k| h.locations.get(*k))
        .map(|l| l.to_string());
        let mut deps = vec![rootfs];
        let step = AccountsStep {
            store: self.store.clone(),
            account,
            epoch: epoch.for_step(&mut deps),
            secret_key: self.secret_key()?,
            location,
        };
        let def = step.definition();
        Ok(self.add(format!("{label}#accounts"), def.as_bytes(), Arc::new(step), deps))
    }
}

/// Where the sensor manager's code goes (the `sensor_manager` module's unit runs it there).
const SENSOR_MANAGER_DIR: &str = "/opt/w4b/sensor-manager";
