//! The W4B modules (DESIGN §9): layer generators. Each module reads the typed hive
//! configuration ([`HiveImage`]) and returns the files it puts in the image and the
//! sections it adds to the first-boot script. It lives in its own file, with its own
//! tests, and adding one touches no other: [`all`] lists them.
//!
//! A module says exactly what it reads ([`Module::inputs`]): the step key of its layer
//! is that JSON (with secrets shown as their names only) plus, for each secret it reads, a
//! keyed digest of the value ([`crate::steps::module`]). So a hive value changes the keys
//! of the modules that read it and of no others, and no secret text reaches a key, a
//! record, a log or a manifest.
//!
//! First-boot sections never contain secret text: a section that needs a secret reads
//! it from a mode-0600 file the module wrote (the module step checks this).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::hive::config::{HiveImage, Secret};
use crate::tree::TreePath;

pub mod boot_checks;
pub mod database;
pub mod monitoring;
#[cfg(test)]
pub mod oracles;
pub mod security;
pub mod sensor_manager;
pub mod software;
pub mod system;
#[cfg(test)]
pub mod testing;

/// What a module puts at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A directory.
    Dir,
    /// Text appended to an existing file (created if absent).
    Append(Vec<u8>),
    /// Remove the path (and what is below it).
    Remove,
}

/// One generated path with its owner and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenFile {
    pub path: TreePath,
    pub body: Body,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl GenFile {
    /// A root-owned file.
    pub fn file(path: &str, text: impl Into<Vec<u8>>, mode: u32) -> GenFile {
        GenFile::owned(path, Body::File(text.into()), mode, 0, 0)
    }

    /// A root-owned directory.
    pub fn dir(path: &str, mode: u32) -> GenFile {
        GenFile::owned(path, Body::Dir, mode, 0, 0)
    }

    pub fn symlink(path: &str, target: &str) -> GenFile {
        GenFile::owned(path, Body::Symlink(target.to_owned()), 0o777, 0, 0)
    }

    /// A path with an explicit owner. Paths are written by module code, so a bad one is a
    /// bug in the module: it panics in tests long before it could reach a user.
    pub fn owned(path: &str, body: Body, mode: u32, uid: u32, gid: u32) -> GenFile {
        GenFile {
            path: TreePath::parse(path).unwrap_or_else(|e| panic!("module path `{path}`: {e}")),
            body,
            mode,
            uid,
            gid,
        }
    }
}

/// A part of the first-boot script. Sections run in `order`, then by module name; each
/// must be idempotent (it may run again after a power cut).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Section {
    pub order: u32,
    /// `system/ssh-host-keys`: module and a short name, shown in the log.
    pub name: String,
    /// POSIX shell, run with `set -eu`.
    pub script: String,
}

/// What a module generates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    pub files: Vec<GenFile>,
    pub sections: Vec<Section>,
}

/// Why a module could not generate its layer (a configuration it cannot express).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("module `{module}`: {message}")]
#[diagnostic(code(w4b::module::config))]
pub struct ModuleError {
    pub module: &'static str,
    pub message: String,
    #[help]
    pub help: Option<String>,
}

/// What a module reads: the configuration as JSON and the secrets whose text it reads.
pub type Inputs<'a> = (serde_json::Value, Vec<&'a Secret>);

/// `value` as the JSON of [`Module::inputs`]. Serialisation failing is an error naming
/// the module: a fallback such as `null` would give differently configured images the
/// same step key.
pub fn inputs_json(module: &'static str, value: impl Serialize) -> Result<serde_json::Value, ModuleError> {
    serde_json::to_value(value).map_err(|e| ModuleError {
        module,
        message: format!("cannot serialise the configuration the module reads: {e}"),
        help: Some("report this as a w4b bug, with the hive file".into()),
    })
}

/// A layer generator.
pub trait Module: Send + Sync {
    /// `system`, `security`, …: the step is `#module:<name>`.
    fn name(&self) -> &'static str;

    /// Bumped when the generated files change for the same inputs.
    fn version(&self) -> u32;

    /// Exactly the configuration this module reads, as JSON (secrets serialise as
    /// `***`), and the secrets whose text it reads. Nothing else may influence
    /// [`Module::generate`]. The JSON is the step's key, so a value that cannot be
    /// serialised is an error ([`inputs_json`]), never a `null` standing in for it.
    fn inputs<'a>(&self, cfg: &'a HiveImage) -> Result<Inputs<'a>, ModuleError>;

    /// Whether this module contributes anything for this configuration (a disabled
    /// service adds no step at all).
    fn enabled(&self, _cfg: &HiveImage) -> bool {
        true
    }

    fn generate(&self, cfg: &HiveImage) -> Result<Generated, ModuleError>;
}

/// Every module, in the order their layers apply.
pub fn all() -> Vec<std::sync::Arc<dyn Module>> {
    vec![
        std::sync::Arc::new(system::System),
        std::sync::Arc::new(security::Security),
        std::sync::Arc::new(software::Software),
        std::sync::Arc::new(database::Database),
        std::sync::Arc::new(sensor_manager::SensorManager),
        std::sync::Arc::new(monitoring::Monitoring),
    ]
}

/// The secret names in a list, sorted and unique, for keys and checks.
pub fn secret_names(secrets: &[&Secret]) -> BTreeSet<String> {
    secrets.iter().map(|s| s.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a module reads must serialise, or the step has no key: an error naming the
    /// module, not a `null` shared by every configuration that fails the same way.
    #[test]
    fn inputs_that_cannot_serialise_are_an_error() {
        let bad: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let err = inputs_json("system", &bad).expect_err("tuple keys are not JSON");
        assert_eq!(err.module, "system");
        assert!(err.message.contains("cannot serialise"), "{}", err.message);
        assert_eq!(
            inputs_json("system", serde_json::json!({"a": 1})).unwrap(),
            serde_json::json!({"a": 1})
        );
    }
}
