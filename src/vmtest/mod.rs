//! `w4b test`: boot a built image in `qemu-system-aarch64 -M virt` and judge the running
//! system, as NixOS's VM tests do but from outside the image and declaratively.
//!
//! The bytes under test are the bytes shipped. The image is never edited: QEMU opens it
//! with `snapshot=on` (the guest's writes go to a temporary overlay), boots the image's
//! own kernel and initramfs (copied out with w4b's ext4 reader), and the harness reaches
//! the guest only through what a test may add — a second, read-only virtual disk with
//! its script and kernel command-line options that start it ([`harness`]). The guest
//! reports raw outcomes on a virtio-serial port, apart from the console, and the host
//! judges them against the [`TestSpec`] ([`judge`]); the whole console is kept as the
//! boot log. For a hive's image the guest also sends, last, a tar archive of the files the
//! hive checklist reads, and the host runs the checklist on it
//! ([`crate::validate::hive::Stage::Booted`]).
//!
//! One job per file: [`spec`] (what to check), [`boot_files`] (root, kernel, initramfs
//! and default target of the image), [`harness`] and `guest.sh` (the guest side),
//! [`qemu`] (the machine, and its teardown), [`results`] (the guest's records),
//! [`judge`] (verdicts), [`boot_time`] (`systemd-analyze`'s breakdown), [`console`]
//! (log tails), [`report`] (human and JSON output), [`run`] (one test, start to end).
//!
//! [`run::run`] is the entry point: an image path, a spec and options in, a [`Report`]
//! out, so that `w4b test IMAGE` and a build step that tests what it built share it.

pub mod boot_files;
pub mod boot_time;
pub mod console;
pub mod error;
pub mod harness;
pub mod judge;
pub mod qemu;
pub mod report;
pub mod results;
pub mod run;
pub mod spec;
pub mod test_kernel;

pub use error::VmTestError;
pub use report::{CheckResult, Report};
pub use run::{run, Options, PinnedKernel, PinnedSource};
pub use spec::{CommandCheck, TestDef, TestSpec};
