//! The reference tools as a second opinion on an image: `fsck.fat -n` on the boot
//! partition and `e2fsck -fn` on the root partition, both read-only. Only
//! `w4b validate --oracles` runs them; the build validates with the in-process readers
//! alone, so a build never depends on which tools a machine has.
//!
//! `e2fsck` reads the partition in place (`IMAGE?offset=N`, e2fsprogs' unix I/O option);
//! `fsck.fat` has no offset option, so the boot partition is copied (sparsely) to a
//! temporary file first — it is small.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output};

use super::{Layout, Report};
use crate::image::copy_sparse;

/// The last lines of a tool's output, for a failure's detail.
fn tail(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(8);
    lines.get(from..).unwrap_or(&[]).join(" | ")
}

/// Runs `tool` with `args`; `None` when it is not installed.
fn run(tool: &str, args: &[&std::ffi::OsStr]) -> Option<std::io::Result<Output>> {
    #[allow(clippy::disallowed_methods)] // `--oracles` runs the reference tools on purpose; never in a build.
    let mut cmd = Command::new(tool);
    cmd.args(args).env("LC_ALL", "C");
    match cmd.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        other => Some(other),
    }
}

/// Adds `oracle_fsck_fat` and `oracle_e2fsck` checks for the image file at `image`.
pub fn run_oracles(image: &Path, layout: &Layout, report: &mut Report) {
    match layout.boot.and_then(|i| layout.part(i)).filter(|p| p.inside) {
        None => report.skip("oracle_fsck_fat", None, "no FAT partition to check"),
        Some(p) => {
            let file = Some(format!("partition {}", p.info.index));
            match copy_partition(image, p.offset, p.len) {
                Err(e) => report.fail(
                    "oracle_fsck_fat",
                    file,
                    format!("cannot copy the boot partition to a temporary file: {e}"),
                    "`TMPDIR` needs room for the boot partition",
                ),
                Ok(tmp) => {
                    let path = tmp.path().as_os_str();
                    match run("fsck.fat", &["-n".as_ref(), path]) {
                        None => report.skip("oracle_fsck_fat", file, "`fsck.fat` is not installed (dosfstools)"),
                        Some(Err(e)) => report.fail("oracle_fsck_fat", file, format!("`fsck.fat` did not run: {e}"), "check the dosfstools installation"),
                        Some(Ok(out)) if out.status.success() => report.pass("oracle_fsck_fat", file, "`fsck.fat -n` found nothing to fix"),
                        Some(Ok(out)) => report.fail(
                            "oracle_fsck_fat",
                            file,
                            format!("`fsck.fat -n` exited with {}: {}", out.status, tail(&out)),
                            "the boot filesystem is damaged; rebuild the image (or repair a copy with `fsck.fat -a`)",
                        ),
                    }
                }
            }
        }
    }
    match layout.root.and_then(|i| layout.part(i)).filter(|p| p.inside) {
        None => report.skip("oracle_e2fsck", None, "no ext4 partition to check"),
        Some(p) => {
            let file = Some(format!("partition {}", p.info.index));
            let mut dev = image.as_os_str().to_owned();
            dev.push(format!("?offset={}", p.offset));
            match run("e2fsck", &["-f".as_ref(), "-n".as_ref(), dev.as_os_str()]) {
                None => report.skip("oracle_e2fsck", file, "`e2fsck` is not installed (e2fsprogs)"),
                Some(Err(e)) => report.fail(
                    "oracle_e2fsck",
                    file,
                    format!("`e2fsck` did not run: {e}"),
                    "check the e2fsprogs installation",
                ),
                Some(Ok(out)) if out.status.success() => {
                    report.pass("oracle_e2fsck", file, "`e2fsck -fn` found nothing to fix")
                }
                Some(Ok(out)) => report.fail(
                    "oracle_e2fsck",
                    file,
                    format!("`e2fsck -fn` exited with {}: {}", out.status, tail(&out)),
                    "the root filesystem is damaged; rebuild the image (or repair a copy with `e2fsck -f`)",
                ),
            }
        }
    }
}

/// `len` bytes at `offset` of `image` in a new temporary file, holes kept.
fn copy_partition(image: &Path, offset: u64, len: u64) -> std::io::Result<tempfile::NamedTempFile> {
    let mut src = File::open(image)?;
    src.seek(SeekFrom::Start(offset))?;
    let mut tmp = tempfile::NamedTempFile::new()?;
    let copied = copy_sparse(std::io::Read::take(src, len), tmp.as_file_mut()).map_err(|e| match e {
        crate::image::SparseError::Read { source, .. } | crate::image::SparseError::Write(source) => source,
    })?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the image ends {} bytes into the partition", copied),
        ));
    }
    Ok(tmp)
}
