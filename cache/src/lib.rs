//! w4b-cache: the content-addressed store.

mod digest;

pub use digest::{Digest, ParseDigestError};
