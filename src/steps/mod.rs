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
//! | `unpack`  | a `fetch`ed disk image                  | `bootfs`, `rootfs`, `table` |
//! | `raspi-layout` | a root tree bootstrapped from packages (`/boot/firmware` filled by `raspi-firmware`), sizes, epoch | `bootfs`, `rootfs`, `table`, as `unpack` |
//! | `base-epoch` | `unpack`'s `rootfs`: its newest mtime, for images with no other epoch | `epoch` |
//! | `graft`   | `unpack`: both trees, the table's mount point | `tree`             |
//! | `split`   | a combined tree, the `table`            | `bootfs`, `rootfs`       |
//! | `mkfs-fat` | `bootfs`, the `table` (size, ids)      | `fs`, `report`           |
//! | `mkfs-ext4` | `rootfs`, the `table`, epoch, size    | `fs`, `report`           |
//! | `disk`    | the `table`, both `fs` images           | `disk`: the raw image    |
//! | `module`  | a W4B module, the hive config it reads, secret digests | `changeset`, `firstboot` |
//! | `firstboot` | the modules' `firstboot` sections      | `changeset`              |
//! | `accounts` | a hive image's combined tree, the administrator, the password's secret digest | `tree` |
//! | `hive-check` | a hive image's combined tree           | `report`                 |
//! | `extract` | a fetched source archive, a destination  | `changeset`              |
//! | `validate` | `disk`, the board's kernel and device trees | `report`       |
//! | `compress` | `disk`, codec and level, file name     | `image`, `bmap`, `sha256` |
//! | `test`    | `disk` (and its gates), the `TestSpec`, the harness version | `verdicts` |
//!
//! The disk pipeline (`unpack` → `graft` → `overlay` → `split` → `mkfs-*` → `disk` →
//! `validate` → `compress`) is described in `docs/architecture.md`; a hive image puts
//! `accounts` and `hive-check` between `overlay` and `split`. With `--test`, `test` boots
//! the disk after `validate`.
//!
//! [`table`] is no step: it is the partition-table JSON (`unpack`'s `table` output) that
//! the disk pipeline's steps share.

pub mod accounts;
pub mod bootstrap;
pub mod compress;
pub mod disk;
pub mod epoch;
pub mod extract;
pub mod fetch;
pub mod firstboot;
pub mod frames;
pub mod graft;
pub mod hive_check;
pub mod install;
pub mod layer;
pub mod layout;
pub mod mkfs;
pub mod module;
pub mod overlay;
pub mod scratch;
pub mod table;
pub mod tar;
pub mod test;
pub mod test_kernel;
pub mod unpack;
pub mod validate;

use w4b_graph::StepError;

use crate::tree::TreeError;

/// Tree errors as step errors: a missing or corrupt blob is an unavailable input, which
/// the engine repairs by re-running whatever produced it.
pub fn tree_error(e: TreeError) -> StepError {
    match e {
        TreeError::BlobMissing { digest } | TreeError::BlobCorrupt { digest } => {
            StepError::InputUnavailable(digest)
        }
        other => match unavailable_blob(&other) {
            Some(digest) => StepError::InputUnavailable(digest),
            None => StepError::diag(other),
        },
    }
}

/// Finds a missing or corrupt store blob anywhere in an error's chain — including inside
/// `io::Error`s, which is how a streaming read reports a digest mismatch at end of file.
pub fn unavailable_blob(e: &(dyn std::error::Error + 'static)) -> Option<w4b_cache::Digest> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<w4b_cache::CacheError>() {
            match c {
                w4b_cache::CacheError::Missing { digest, .. } => return Some(*digest),
                w4b_cache::CacheError::Corrupt { expected, .. } => return Some(*expected),
                _ => {}
            }
        }
        if let Some(TreeError::BlobMissing { digest } | TreeError::BlobCorrupt { digest }) =
            err.downcast_ref::<TreeError>()
        {
            return Some(*digest);
        }
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(d) = unavailable_blob(inner) {
                return Some(d);
            }
        }
        cur = err.source();
    }
    None
}
