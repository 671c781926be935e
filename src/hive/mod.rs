//! Hives: the W4B hive configuration manager's files as targets, validated, and the
//! typed configuration the W4B modules read.
//!
//! [`config`] holds the typed values (the image-level settings they embed live in
//! [`crate::defs::image_settings`]: images carry them, and `defs` never depends on `hive`).
//! A hive file is read the one way every definition is: [`raw`] is its shape as written,
//! deserialised by [`crate::defs::de`] with spanned leaves and unknown keys rejected;
//! [`convert`] checks the manager's rules and types it, reporting every problem at once;
//! [`load`] finds the hive (a hive target, or an image's `hive_file`/`hive:`), merges
//! `hives.defaults` of `w4b.yaml` under it and combines it with its image into a
//! [`config::HiveImage`]; [`secrets`] resolves secret values (literals, `${env:NAME}`,
//! `{file: path}`).

pub mod config;
pub mod convert;
pub mod load;
pub mod raw;
pub mod secrets;
