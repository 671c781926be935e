//! Debian package sets, from repositories to a lock entry: the signed `InRelease`/`Release`
//! and the hash chain from it to each index ([`release`], [`signature`]; docs/security.md,
//! "Package repositories"), the host's apt sources ([`sources`]), the resolver over the
//! indices and a base's dpkg database ([`resolve`]), and `w4b lock`'s resolution of one
//! entry ([`lock`]).

pub mod lock;
pub mod release;
pub mod resolve;
pub mod signature;
pub mod sources;
