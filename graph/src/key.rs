//! Step keys: what goes into the BLAKE3 hash that names a step's result, and what does not.
//!
//! A step key is `BLAKE3-derive-key(KEY_CONTEXT, encode(preimage))`, where the preimage is
//! a list of named components sorted by `(kind, name)`. The encoding is specified below and
//! pinned by golden vectors in the tests; changing it means bumping [`KEY_SCHEMA`] (which is
//! itself the first component, so old and new keys can never collide).
//!
//! | component  | goes in                                                         | deliberately left out                  |
//! |------------|-----------------------------------------------------------------|----------------------------------------|
//! | `schema`   | the key schema number ([`KEY_SCHEMA`])                          |                                        |
//! | `kind`     | the step kind (`layer`, `overlay`, `tar`, `fetch`, …)           | the step's name or its target's label  |
//! | `version`  | the kind's implementation version, bumped when output changes   | the w4b version (a release that does not change a kind's output must not invalidate caches) |
//! | `param`    | every typed, defaulted parameter that can change the output     | YAML comments, key order, formatting, definition file paths and line numbers (recorded as locations, never hashed) |
//! | `input`    | digests of input files (sources, templates), by logical name    | absolute paths, mtimes, inode numbers, owners on the build host |
//! | `upstream` | *output digests* of upstream steps, by position and output name | upstream keys (so identical upstream output cuts a rebuild off) |
//! | `tool`     | versions of external tools a kind runs (none run on the build path today) |                               |
//! | `epoch`    | `SOURCE_DATE_EPOCH` of the target — the only time a step sees   | the wall clock                         |
//! | `secret`   | a secret's *name* plus a local keyed digest of its value        | the secret's value                     |
//! | `platform` | only for kinds whose output depends on the host (none today)    | host name, user, umask, TZ, locale, cwd, thread count |
//!
//! Two things are *recorded* with a component in the step's record but never hashed:
//!
//! | recorded   | what                                                                      |
//! |------------|---------------------------------------------------------------------------|
//! | `location` | where the value came from (`defs/…yaml:3:5`, `env W4B_EPOCH`, `--set …`), set when planning |
//! | `tree`     | for a value that stands for a whole tree of files (an `input` digest of a host directory, an `upstream` archive a step unpacks): the root of a tree in the store with the same content, reported by the step as it runs ([`crate::RunContext::input_tree`]). `why` walks the old and new trees side by side, descending only where listing digests differ, to name the files that changed |
//!
//! Upstream components are named `in<position>.<output>` ([`upstream_name`]).
//!
//! ## Encoding (schema 1)
//!
//! ```text
//! preimage := component*            (sorted by kind tag, then name bytes; no duplicates)
//! component := tag:u8  len(name):u64le  name  len(value):u64le  value
//! tag       := schema=1 kind=2 version=3 param=4 input=5 upstream=6 tool=7 epoch=8 secret=9 platform=10
//! key       := blake3::derive_key(KEY_CONTEXT, preimage)
//! ```
//! Names and values are UTF-8. Length prefixes make the encoding injective: no two
//! different preimages encode to the same bytes.

use std::fmt;

use serde::{Deserialize, Serialize};
use w4b_cache::Digest;

/// Bumped whenever the encoding below changes.
pub const KEY_SCHEMA: u32 = 1;

/// The BLAKE3 derive-key context for step keys. Globally unique, never reused.
pub const KEY_CONTEXT: &str = "w4b 2026-11-26 step key v1";

/// The kinds of key component, in their canonical order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    Schema,
    Kind,
    Version,
    Param,
    Input,
    Upstream,
    Tool,
    Epoch,
    Secret,
    Platform,
}

impl ComponentKind {
    /// The tag byte in the encoding. Never renumber.
    pub fn tag(self) -> u8 {
        match self {
            ComponentKind::Schema => 1,
            ComponentKind::Kind => 2,
            ComponentKind::Version => 3,
            ComponentKind::Param => 4,
            ComponentKind::Input => 5,
            ComponentKind::Upstream => 6,
            ComponentKind::Tool => 7,
            ComponentKind::Epoch => 8,
            ComponentKind::Secret => 9,
            ComponentKind::Platform => 10,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Schema => "schema",
            ComponentKind::Kind => "kind",
            ComponentKind::Version => "version",
            ComponentKind::Param => "param",
            ComponentKind::Input => "input",
            ComponentKind::Upstream => "upstream",
            ComponentKind::Tool => "tool",
            ComponentKind::Epoch => "epoch",
            ComponentKind::Secret => "secret",
            ComponentKind::Platform => "platform",
        }
    }

    pub fn parse(s: &str) -> Option<ComponentKind> {
        Some(match s {
            "schema" => ComponentKind::Schema,
            "kind" => ComponentKind::Kind,
            "version" => ComponentKind::Version,
            "param" => ComponentKind::Param,
            "input" => ComponentKind::Input,
            "upstream" => ComponentKind::Upstream,
            "tool" => ComponentKind::Tool,
            "epoch" => ComponentKind::Epoch,
            "secret" => ComponentKind::Secret,
            "platform" => ComponentKind::Platform,
            _ => return None,
        })
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of the `upstream` component for output `output` of the step's `index`-th
/// input: `in0.file`.
pub fn upstream_name(index: usize, output: &str) -> String {
    format!("in{index}.{output}")
}

/// One named input to a step key. `location` says where a value came from (a definition
/// file, an environment variable, a `--set`); it is recorded for `w4b why` but never hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub kind: ComponentKind,
    pub name: String,
    pub value: String,
    pub location: Option<String>,
}

impl Component {
    pub fn new(kind: ComponentKind, name: impl Into<String>, value: impl Into<String>) -> Self {
        Component {
            kind,
            name: name.into(),
            value: value.into(),
            location: None,
        }
    }

    pub fn param(name: impl Into<String>, value: impl Into<String>) -> Self {
        Component::new(ComponentKind::Param, name, value)
    }

    pub fn input(name: impl Into<String>, digest: &Digest) -> Self {
        Component::new(ComponentKind::Input, name, digest.to_hex())
    }

    pub fn at(mut self, location: Option<String>) -> Self {
        self.location = location;
        self
    }
}

/// Two components share a `(kind, name)`: the step kind built an ambiguous preimage.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("step preimage has two `{kind}` components named `{name}`")]
#[diagnostic(
    code(w4b::graph::duplicate_component),
    help("this is a bug in the step kind; each component needs a unique name")
)]
pub struct DuplicateComponent {
    pub kind: ComponentKind,
    pub name: String,
}

/// A complete, canonical (sorted, duplicate-free) key preimage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preimage(Vec<Component>);

impl Preimage {
    /// Sorts the components into canonical order and rejects duplicates.
    pub fn new(mut components: Vec<Component>) -> Result<Preimage, DuplicateComponent> {
        components.sort_by(|a, b| (a.kind, a.name.as_bytes()).cmp(&(b.kind, b.name.as_bytes())));
        for pair in components.windows(2) {
            if pair[0].kind == pair[1].kind && pair[0].name == pair[1].name {
                return Err(DuplicateComponent {
                    kind: pair[0].kind,
                    name: pair[0].name.clone(),
                });
            }
        }
        Ok(Preimage(components))
    }

    pub fn components(&self) -> &[Component] {
        &self.0
    }

    /// The exact bytes that are hashed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.0 {
            out.push(c.kind.tag());
            out.extend_from_slice(&(c.name.len() as u64).to_le_bytes());
            out.extend_from_slice(c.name.as_bytes());
            out.extend_from_slice(&(c.value.len() as u64).to_le_bytes());
            out.extend_from_slice(c.value.as_bytes());
        }
        out
    }

    pub fn key(&self) -> Digest {
        let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        h.update(&self.encode());
        Digest::from(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Preimage {
        Preimage::new(vec![
            Component::param("files[0].content", "hello\n"),
            Component::new(ComponentKind::Kind, "kind", "layer"),
            Component::new(ComponentKind::Schema, "schema", "1"),
            Component::new(ComponentKind::Version, "version", "1"),
            Component::new(ComponentKind::Epoch, "epoch", "1700000000"),
        ])
        .unwrap()
    }

    #[test]
    fn golden_encoding() {
        let enc = sample().encode();
        // schema first: tag 1, name "schema" (6 bytes), value "1".
        assert_eq!(&enc[..1], &[1]);
        assert_eq!(&enc[1..9], &6u64.to_le_bytes());
        assert_eq!(&enc[9..15], b"schema");
        assert_eq!(&enc[15..23], &1u64.to_le_bytes());
        assert_eq!(&enc[23..24], b"1");
        assert_eq!(enc.len(), 5 * 17 + 6 + 1 + 4 + 5 + 7 + 1 + 16 + 6 + 5 + 10);
    }

    #[test]
    fn golden_keys() {
        // Pinned: a change here is a cache-format change and needs a new KEY_SCHEMA.
        assert_eq!(
            sample().key().to_hex(),
            "84b2ff42505abc55295b3eaf6069849bb575ac8aabf9bb0e8c9f84d88c4d5e66"
        );
        assert_eq!(
            Preimage::new(vec![]).unwrap().key().to_hex(),
            "ae622a5d24ceedd9b9a245e84f42aef7d67d18d4d0de50afa02038a58279336b"
        );
    }

    #[test]
    fn order_does_not_matter_but_values_do() {
        let mut a = sample().components().to_vec();
        a.reverse();
        assert_eq!(Preimage::new(a).unwrap().key(), sample().key());
        let mut b = sample().components().to_vec();
        b[0].value = "2".into();
        assert_ne!(Preimage::new(b).unwrap().key(), sample().key());
    }

    #[test]
    fn location_is_not_hashed() {
        let mut a = sample().components().to_vec();
        a[0].location = Some("defs/layers/motd.yaml:3:5".into());
        assert_eq!(Preimage::new(a).unwrap().key(), sample().key());
    }

    #[test]
    fn length_prefix_prevents_ambiguity() {
        let a = Preimage::new(vec![Component::param("ab", "c")]).unwrap();
        let b = Preimage::new(vec![Component::param("a", "bc")]).unwrap();
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn duplicates_rejected() {
        let e = Preimage::new(vec![Component::param("x", "1"), Component::param("x", "2")]);
        assert!(e.is_err());
    }
}
