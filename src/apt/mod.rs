//! Debian package sets: resolving requested packages against repository indices.

pub mod resolve;
