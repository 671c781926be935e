//! Hives: the W4B hive configuration manager's files as targets, validated, and the
//! typed configuration the W4B modules read.

pub mod config;
