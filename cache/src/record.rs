//! Step records: what a step was keyed on and what it produced.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

pub const RECORD_SCHEMA: &str = "w4b.record/1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub schema: String,
    pub key: Digest,
    pub step: String,
    pub kind: String,
    pub preimage: Vec<PreimageEntry>,
    pub outputs: BTreeMap<String, OutputRef>,
    pub duration_ms: u64,
    pub producer: Producer,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreimageEntry {
    pub component: String,
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}
