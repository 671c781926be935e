//! w4b builds Raspberry Pi disk images for the W4B beehive network from YAML definitions.
//!
//! Architecture (see `docs/architecture.md`):
//! - [`defs`] reads the workspace: labels, YAML with spans, `extends`, overrides, typed
//!   targets, and the image settings images embed; it depends on no other w4b module
//!   but the leaf [`stamp`].
//! - [`hive`] reads hive files (the configuration manager's format) through `defs`, merges
//!   `hives.defaults` under them and types them for [`modules`], the W4B layer generators.
//! - [`compile`] turns targets into a graph of steps ([`w4b_graph`]), one file per stage
//!   (image, base and board, layers, hive, disk), each step a kind in [`steps`] (fetch,
//!   unpack, layer, module, accounts, overlay, mkfs, disk, compress, …) with a key built
//!   from its typed inputs; the disk pipeline's steps share the partition-table JSON of
//!   [`steps::table`].
//! - [`tree`] is the content-addressed filesystem tree those steps exchange; [`formats`]
//!   reads and writes on-disk formats (MBR, GPT, FAT32, ext4, tar, zstd/xz/gz, bmap) as
//!   pure bytes-in, bytes-out code; [`image`] opens (decompresses) disk images and reads
//!   them through those formats ([`formats::deb`] reads Debian packages and indices, and
//!   [`apt`] resolves package sets over them); [`validate`] checks that an image is structurally
//!   bootable (table, filesystems, `cmdline.txt`, `fstab`, kernels and device trees) and
//!   runs the hive checklist; [`manifest`] writes and verifies in-toto manifests;
//!   [`vmtest`] boots an image in QEMU and judges the running system (`w4b test`).
//! - [`install`] installs Debian packages into a tree for a foreign architecture (dpkg
//!   in a chroot under qemu-user) and returns the normalised changeset.
//! - [`download`] gets a file by URL and pinned sha256 (mirrors, retries, resume) for the
//!   `fetch` step; [`apt`] verifies Debian repositories (OpenPGP signatures against a
//!   pinned key, then the hash chain from `Release` to each index) for package sets.
//! - [`store`] adapts the content-addressed store ([`w4b_cache`]) for the engine and trees;
//!   [`inputs`] hashes input files with a stat cache; [`stamp`] is the file stamp and
//!   the racily-clean rule that cache and the cache of parsed definitions share;
//!   [`publish`] lays out released images (names, checksums, metadata, the Raspberry Pi
//!   Imager index) at a directory, HTTP server or bucket;
//!   [`trust`] decides which signed records of a shared remote cache a build may use.
//! - [`cli`], [`commands`] and [`ui`] are the shell: arguments, one file per subcommand,
//!   progress and diagnostics. Only they print or read the environment.
//!   [`redact`] holds the secret values loaded so far, which no log line may show.

pub mod apt;
pub mod cli;
pub mod commands;
pub mod compile;
pub mod defs;
pub mod download;
pub mod formats;
pub mod hive;
pub mod image;
pub mod inputs;
pub mod install;
pub mod lockfile;
pub mod manifest;
pub mod modules;
pub mod publish;
pub mod redact;
pub mod stamp;
pub mod steps;
pub mod store;
pub mod tree;
pub mod trust;
pub mod ui;
pub mod validate;
pub mod vmtest;

/// The oracle-test policy, shared with the integration tests (`tests/support/oracle.rs`).
#[cfg(test)]
#[path = "../tests/support/oracle.rs"]
mod oracle;
/// The SBOM oracles (`spdx-tools`, `cyclonedx-python-lib`), shared with the integration
/// tests (`tests/support/sbom_oracle.rs`).
#[cfg(test)]
#[path = "../tests/support/sbom_oracle.rs"]
mod sbom_oracle;
