//! Hives: the W4B hive configuration manager's files as targets, validated, and the
//! typed configuration the W4B modules read.
//!
//! [`config`] holds the typed values, [`settings`] the old image generator's image-level
//! keys, [`load`] reads a hive (a hive target, or an image's `hive_file`/`hive:`) into a
//! [`config::HiveImage`] with every problem reported at its file, line and column, and
//! [`secrets`] resolves secret values (literals, `${env:NAME}`, `{file: path}`).

pub mod config;
pub mod load;
pub mod secrets;
pub mod settings;
pub mod timezones;
