//! Debian package repositories: the signed `InRelease`/`Release`, the hash chain from it
//! to each index, and the host's apt sources (docs/security.md, "Package repositories").

pub mod release;
pub mod signature;
pub mod sources;
