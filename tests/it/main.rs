//! The integration test binary: the real `w4b` binary against temporary workspaces,
//! caches and a local HTTP server (127.0.0.1 only).

/// A signed Debian repository built by `dpkg-deb`, `apt-ftparchive` and `gpg`.
#[path = "../support/aptrepo.rs"]
mod aptrepo;
mod env;
mod fixture;
/// The local test HTTP server (127.0.0.1 only), shared by the download tests.
#[path = "../support/http.rs"]
mod http;
/// The W4B modules' package sets and unit files, stood in for on a base without dpkg.
#[path = "../support/module_stand_ins.rs"]
mod module_stand_ins;
/// The oracle-test policy: a missing tool fails under CI, skips visibly elsewhere.
#[path = "../support/oracle.rs"]
mod oracle;
/// The S3-compatible test server (moto) for the remote cache on object storage.
#[path = "../support/s3.rs"]
mod s3;
/// The SBOM validators (`spdx-tools`, `cyclonedx-python-lib`) in their venv.
#[path = "../support/sbom_oracle.rs"]
mod sbom_oracle;
mod testbase;
mod throwaway_user;

mod apt_repo;
mod bootstrap;
mod cache;
mod cli;
mod container;
mod determinism;
mod download;
mod freshness;
mod hive_build;
mod hive_new;
mod hostile;
mod image_build;
mod inspect;
mod install;
mod kernel;
mod limits;
mod logs;
mod packages;
mod packages_errors;
mod pipeline;
mod publish;
mod remote_s3;
mod remote_trust;
mod resolve;
mod robustness;
mod roundtrip;
mod sbom;
mod unpack;
mod validate;
mod verify;
mod vmtest;
mod why_trees;
