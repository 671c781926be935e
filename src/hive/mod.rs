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
//! `{file: path}`). For `w4b hive new` and its siblings, [`fleet`] sees every hive of the
//! workspace at once (ids and VPN addresses that must be unique, the next free address),
//! [`credentials`] makes keys and passwords and [`create`] writes a new hive file.

pub mod config;
pub mod convert;
pub mod create;
pub mod credentials;
pub mod fleet;
pub mod load;
pub mod raw;
pub mod secrets;
