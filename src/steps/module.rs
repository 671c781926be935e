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
    pub epoch: i64,
    pub epoch_location: Option<String>,
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

impl ModuleStep {
    /// The location of the configuration value a module input named `key` most likely
    /// came from: the first written key path that ends in it or passes through it.
    fn location_for(&self, key: &str) -> Option<String> {
        let end = format!(".{key}");
        let through = format!(".{key}.");
        let indexed = format!(".{key}[");
        self.locations
            .iter()
            .find(|(k, _)| k.ends_with(&end) || k.contains(&through) || k.contains(&indexed))
            .map(|(_, l)| l.clone())
            .or_else(|| self.location.clone())
    }

    fn secret_digest(&self, value: &str) -> String {
        secret_digest(&self.secret_key, value)
    }
}

impl Step for ModuleStep {
    fn kind(&self) -> &'static str {
        "module"
    }

    fn version(&self) -> u32 {
        1
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        let (json, secrets) = self.module.inputs(&self.config);
        let mut c = vec![
            Component::param("module", self.module.name()),
            Component::param("module.version", self.module.version().to_string()),
            Component::new(ComponentKind::Epoch, "epoch", self.epoch.to_string())
                .at(self.epoch_location.clone()),
        ];
        // One component per top-level part of what the module reads, each pointing at
        // where that part was written, so `why` names the hive value that changed.
        match &json {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    c.push(Component::param(format!("config.{k}"), v.to_string()).at(self.location_for(k)));
                }
            }
            other => c.push(Component::param("config", other.to_string()).at(self.location.clone())),
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
        let (_, secrets) = self.module.inputs(&self.config);
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
        let mut ops = Vec::with_capacity(generated.files.len());
        for f in &generated.files {
            cx.check_cancel()?;
            let own = |mut e: Entry| {
                e.uid = f.uid;
                e.gid = f.gid;
                e.mtime = self.epoch;
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
