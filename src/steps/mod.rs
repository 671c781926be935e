//! Step kinds: each turns typed parameters and upstream outputs into content-addressed
//! outputs, and says exactly what its key is made of.
//!
//! | kind      | inputs                                  | outputs                  |
//! |-----------|-----------------------------------------|--------------------------|
//! | `fetch`   | URL (not keyed), sha256 (keyed)         | `file`: the download     |
//! | `scratch` | —                                       | `tree`: the empty tree   |
//! | `layer`   | file operations, sources, templates     | `changeset`              |
//! | `overlay` | a base tree and changesets, in order    | `tree`                   |
//! | `tar`     | a tree, epoch, compression level        | `archive`: `.tar.zst`    |

pub mod fetch;
pub mod layer;
pub mod overlay;
pub mod scratch;
pub mod tar;

use w4b_graph::StepError;

use crate::tree::TreeError;

/// Tree errors as step errors: a missing or corrupt blob is an unavailable input, which
/// the engine repairs by re-running whatever produced it.
pub fn tree_error(e: TreeError) -> StepError {
    match e {
        TreeError::BlobMissing { digest } | TreeError::BlobCorrupt { digest } => StepError::InputUnavailable(digest),
        other => StepError::diag(other),
    }
}
