//! w4b-cache: the content-addressed store.

mod digest;
mod record;

pub use digest::{Digest, ParseDigestError};
pub use record::{OutputRef, PreimageEntry, Producer, Record, RECORD_SCHEMA};
