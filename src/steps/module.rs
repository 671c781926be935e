//! `module`: one W4B module's layer ([`crate::modules`]) — the files it generates as a
//! changeset, and its first-boot sections as a small JSON blob for `firstboot`.
//!
//! Keyed: the module's name and version, the JSON of exactly the configuration it reads
//! (secrets appear there as `***`), the epoch, and for every secret it reads a `secret`
//! component: the secret's name with a keyed BLAKE3 digest of its value. The digest's key
//! is local to the cache ([`secret_key`]), so the same secret on another machine gives
//! another key (nothing to look up remotely), and the digest says nothing about the
//! value. A module that reads a secret is not shareable: neither its result nor anything
//! built from it is published to a remote cache (DESIGN §8).
//!
//! First-boot sections never carry secret text; a section that contains one is refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::key::ComponentKind;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::tree_error;
use crate::hive::config::HiveImage;
use crate::modules::{Body, Module, Section};
use crate::store::AppStore;
use crate::tree::layer::{Changeset, Op};
use crate::tree::{Blobs, Entry};

/// The BLAKE3 `derive_key` context turning the cache's secret key into the key of secret
/// digests.
const SECRET_DIGEST_CONTEXT: &str = "w4b 2026-11-26 secret digest v1";

pub struct ModuleStep {
    pub store: Arc<AppStore>,
    pub module: Arc<dyn Module>,
    pub config: Arc<HiveImage>,
    pub epoch: Epoch,
    /// [`secret_key`] of the local cache.
    pub secret_key: [u8; 32],
    /// Where the hive was defined, for `why`.
    pub location: Option<String>,
    /// Where each hive value was written (`hive.maintenance.updates.update_hour` →
    /// `defs/hives/north.yaml:47:14`), to point `why` at the value a module read.
    pub locations: std::collections::BTreeMap<String, String>,
    /// Whether `module.inputs(config)` names any secret: decided once by the compiler
    /// (the engine asks every upstream step on each publication).
    pub reads_secrets: bool,
}

/// A module leaked secret text into a first-boot section.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("module `{module}` put the value of `{secret}` into its first-boot section `{section}`")]
#[diagnostic(
    code(w4b::module::secret_in_script),
    help("this is a bug in the module: first-boot sections read secrets from 0600 files, never from their own text")
)]
pub struct SecretInScript {
    pub module: &'static str,
    pub secret: String,
    pub section: String,
}

/// The cache's key for secret digests: 32 random bytes in the local store's metadata
/// (`meta/secret-key`, created on first use, mode 0600). Randomness is right here: the
/// key must be unguessable, and it never reaches an output.
pub fn secret_key(store: &AppStore) -> Result<[u8; 32], w4b_cache::CacheError> {
    let dir = store.inner().local();
    if let Some(bytes) = dir.read_meta("secret-key")? {
        if let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(k);
        }
    }
    let mut k = [0u8; 32];
    #[allow(clippy::disallowed_methods)] // A keyed-digest key must be unpredictable.
    getrandom::getrandom(&mut k).map_err(|e| w4b_cache::CacheError::Io {
        action: "draw a random key",
        path: dir.root().to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    dir.write_meta("secret-key", &k)?;
    // Another process may have written its own key at the same time: use what is stored.
    match dir.read_meta("secret-key")? {
        Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).or(Ok(k)),
        None => Ok(k),
    }
}

/// The digest standing for a secret's value in keys and node identities: BLAKE3 keyed
/// with a key derived from the cache's [`secret_key`].
pub fn secret_digest(secret_key: &[u8; 32], value: &str) -> String {
    let key = blake3::derive_key(SECRET_DIGEST_CONTEXT, secret_key);
    blake3::keyed_hash(&key, value.as_bytes()).to_hex().to_string()
}

/// The location of the configuration value a module input at `path` (`vpn.peer_public_key`)
/// most likely came from: the first written key path that ends in, or passes through,
/// the longest tail of `path` found (`peer_public_key` →
/// `hive.security.wireguard.peer_public_key`, which is `w4b.yaml`'s line when the value
/// is a `hives.defaults` one), else where the hive was defined.
fn location_for(
    locations: &std::collections::BTreeMap<String, String>,
    fallback: Option<&String>,
    path: &str,
) -> Option<String> {
    let segments: Vec<&str> = path.split('.').collect();
    (0..segments.len())
        .find_map(|i| {
            let key = segments[i..].join(".");
            let end = format!(".{key}");
            let through = format!(".{key}.");
            let indexed = format!(".{key}[");
            locations
                .iter()
                .find(|(k, _)| k.ends_with(&end) || k.contains(&through) || k.contains(&indexed))
                .map(|(_, l)| l.clone())
        })
        .or_else(|| fallback.cloned())
}

/// The leaves of a module's inputs by dotted path, in the map's (sorted) order; an empty
/// object is a leaf of its own so that it still shows in the key.
fn config_leaves(path: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                config_leaves(&p, child, out);
            }
        }
        other => out.push((path.to_owned(), other.to_string())),
    }
}

impl ModuleStep {
    fn secret_digest(&self, value: &str) -> String {
        secret_digest(&self.secret_key, value)
    }
}

impl Step for ModuleStep {
    fn kind(&self) -> &'static str {
        "module"
    }

    fn version(&self) -> u32 {
        // 2: one key component per leaf of the module's inputs (was: per top-level part).
        2
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let (json, secrets) = self.module.inputs(&self.config).map_err(StepError::diag)?;
        let mut c = vec![
            Component::param("module", self.module.name()),
            Component::param("module.version", self.module.version().to_string()),
            self.epoch.component(),
        ];
        // One component per leaf of what the module reads (objects are walked, lists and
        // scalars are leaves), each pointing at where that value was written, so `why`
        // names the hive value that changed and its file:line — the hive file's, or
        // `w4b.yaml`'s for a `hives.defaults` value.
        let mut leaves = Vec::new();
        config_leaves("", &json, &mut leaves);
        for (path, value) in leaves {
            let at = if path.is_empty() {
                self.location.clone()
            } else {
                location_for(&self.locations, self.location.as_ref(), &path)
            };
            let name = if path.is_empty() {
                "config".to_owned()
            } else {
                format!("config.{path}")
            };
            c.push(Component::param(name, value).at(at));
        }
        let mut seen = BTreeSet::new();
        for s in secrets {
            if seen.insert(s.name.clone()) {
                c.push(
                    Component::new(
                        ComponentKind::Secret,
                        s.name.clone(),
                        self.secret_digest(s.expose()),
                    )
                    .at(self.location.clone()),
                );
            }
        }
        Ok(c)
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let generated = self.module.generate(&self.config).map_err(StepError::diag)?;
        let (_, secrets) = self.module.inputs(&self.config).map_err(StepError::diag)?;
        for sec in &generated.sections {
            for s in &secrets {
                if !s.expose().is_empty() && sec.script.contains(s.expose()) {
                    return Err(StepError::diag(SecretInScript {
                        module: self.module.name(),
                        secret: s.name.clone(),
                        section: sec.name.clone(),
                    }));
                }
            }
        }
        let blobs = self.store.as_ref();
        let epoch = self.epoch.resolve(blobs, cx)?;
        let mut ops = Vec::with_capacity(generated.files.len());
        for f in &generated.files {
            cx.check_cancel()?;
            let own = |mut e: Entry| {
                e.uid = f.uid;
                e.gid = f.gid;
                e.mtime = epoch;
                e
            };
            let op = match &f.body {
                Body::File(bytes) => {
                    let d = blobs.put(bytes).map_err(tree_error)?;
                    Op::Put {
                        path: f.path.clone(),
                        entry: own(Entry::file(d, bytes.len() as u64, f.mode)),
                    }
                }
                Body::Dir => Op::Put {
                    path: f.path.clone(),
                    entry: own(Entry::dir(f.mode)),
                },
                Body::Symlink(t) => Op::Put {
                    path: f.path.clone(),
                    entry: own(Entry::symlink(t.clone())),
                },
                Body::Append(bytes) => {
                    let d = blobs.put(bytes).map_err(tree_error)?;
                    Op::Append {
                        path: f.path.clone(),
                        digest: d,
                        mode: f.mode,
                        uid: f.uid,
                        gid: f.gid,
                    }
                }
                Body::Remove => Op::Remove { path: f.path.clone() },
            };
            ops.push(op);
        }
        let digest = Changeset::new(ops).store(blobs).map_err(tree_error)?;
        let sections: Vec<Section> = generated.sections;
        let json = serde_json::to_vec(&sections).map_err(|e| StepError::msg(e.to_string()))?;
        let sections_digest = blobs.put(&json).map_err(tree_error)?;
        let mut out = Outputs::new();
        out.insert("changeset".into(), OutputRef { digest, size: 0 });
        out.insert(
            "firstboot".into(),
            OutputRef {
                digest: sections_digest,
                size: json.len() as u64,
            },
        );
        Ok(out)
    }

    fn shareable(&self) -> bool {
        !self.reads_secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_input_leaf_points_at_the_value_it_came_from() {
        let json = serde_json::json!({
            "ssh": {"port": 22, "enabled": true},
            "vpn": {"peer_public_key": "k", "endpoint": "h:1"},
            "services": [[9100, "node exporter"]],
            "empty": {},
        });
        let mut leaves = Vec::new();
        config_leaves("", &json, &mut leaves);
        let paths: Vec<&str> = leaves.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "empty",
                "services",
                "ssh.enabled",
                "ssh.port",
                "vpn.endpoint",
                "vpn.peer_public_key"
            ]
        );
        let locations: std::collections::BTreeMap<String, String> = [
            ("hive.hive_id", "defs/hives/north.yaml:1:10"),
            ("hive.security.ssh.port", "defs/hives/north.yaml:9:11"),
            ("hive.security.wireguard.endpoint", "defs/hives/north.yaml:12:15"),
            ("hive.security.wireguard.peer_public_key", "w4b.yaml:5:41"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let fallback = "defs/hives/north.yaml:1:10".to_owned();
        let at = |p: &str| location_for(&locations, Some(&fallback), p);
        assert_eq!(at("vpn.peer_public_key").as_deref(), Some("w4b.yaml:5:41"));
        assert_eq!(at("vpn.endpoint").as_deref(), Some("defs/hives/north.yaml:12:15"));
        assert_eq!(at("ssh.port").as_deref(), Some("defs/hives/north.yaml:9:11"));
        assert_eq!(
            at("bluetooth_needed").as_deref(),
            Some("defs/hives/north.yaml:1:10")
        );
    }
}
