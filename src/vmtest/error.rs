//! Why a boot test could not be run at all. A system that boots badly is not an error
//! here: it is a failed check in the [`super::Report`], which is always produced once
//! QEMU has started. These are the problems before that point (no QEMU, no kernel, an
//! unreadable image), and a cancelled run.

use std::io;
use std::path::PathBuf;

use crate::formats::ext4::Ext4Error;
use crate::image::ImageError;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum VmTestError {
    #[error("`qemu-system-aarch64` is not installed")]
    #[diagnostic(
        code(w4b::test::no_qemu),
        help("install Debian's `qemu-system-arm` package (`apt-get install qemu-system-arm`), which provides `qemu-system-aarch64`")
    )]
    NoQemu,

    #[error("cannot read `{path}`")]
    #[diagnostic(code(w4b::test::image))]
    Image {
        path: PathBuf,
        #[source]
        #[diagnostic_source]
        source: ImageError,
    },

    #[error("`{path}` has no ext4 root filesystem")]
    #[diagnostic(
        code(w4b::test::no_root),
        help("`w4b test` boots disk images whose root filesystem is an ext4 partition of an MBR or GPT disk; check the image with `w4b inspect`")
    )]
    NoRoot { path: PathBuf },

    #[error("cannot read the root filesystem of `{path}`")]
    #[diagnostic(code(w4b::test::root_fs))]
    RootFs {
        path: PathBuf,
        #[source]
        #[diagnostic_source]
        source: Ext4Error,
    },

    #[error("`{path}` holds no kernel that boots in a virtual machine{}", found_note(.found))]
    #[diagnostic(
        code(w4b::test::no_kernel),
        help("the test boots the image's own Debian kernel (`/boot/vmlinuz-<version>` with `/boot/initrd.img-<version>`, as `linux-image-arm64` installs them); a Raspberry Pi OS kernel (`kernel8.img`) drives only Raspberry Pi hardware. Test the image in a workspace whose `//packages:w4b-test-kernel` is locked (`w4b lock`) to boot its pinned generic kernel, or give a generic arm64 kernel and its initramfs with `--kernel PATH --initrd PATH`")
    )]
    NoKernel { path: PathBuf, found: Vec<String> },

    #[error("cannot make the pinned test kernel: {message}")]
    #[diagnostic(
        code(w4b::test::pinned_kernel),
        help("the image has no kernel that boots the virtual machine, and the pinned one of `//packages:w4b-test-kernel` could not be fetched or built; `w4b lock` locks it, or give a kernel with `--kernel PATH --initrd PATH`")
    )]
    PinnedKernel { message: String },

    #[error("`{path}` has a kernel `{kernel}` but no initramfs `{initrd}` beside it")]
    #[diagnostic(
        code(w4b::test::no_initrd),
        help("Debian's kernel finds its root filesystem through the initramfs; install `initramfs-tools` in the image, or give both with `--kernel PATH --initrd PATH`")
    )]
    NoInitrd {
        path: PathBuf,
        kernel: String,
        initrd: String,
    },

    #[error("cannot read `{path}`")]
    #[diagnostic(
        code(w4b::test::override_file),
        help("`--kernel` and `--initrd` take files on this machine: a generic arm64 kernel (`vmlinuz`) and its initramfs")
    )]
    OverrideFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`--kernel` and `--initrd` go together")]
    #[diagnostic(
        code(w4b::test::override_pair),
        help("give both the kernel and its initramfs, or neither to boot the image's own")
    )]
    OverridePair,

    #[error("cannot prepare the test's temporary files")]
    #[diagnostic(
        code(w4b::test::temp),
        help("the test's files (a decompressed image, the kernel, the harness disk) go to `TMPDIR` (default `/tmp`); point it at a directory with room")
    )]
    Temp(#[source] io::Error),

    #[error("cannot write the boot log `{path}`")]
    #[diagnostic(
        code(w4b::test::log),
        help("the boot log goes beside the image unless `--log DIR` names another directory; choose a writable one")
    )]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot start `{qemu}`")]
    #[diagnostic(
        code(w4b::test::spawn),
        help("check that `qemu-system-aarch64 --version` runs; reinstall `qemu-system-arm` if it does not")
    )]
    Spawn {
        qemu: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the `stdout_regex` of check `{check}` is not a valid regular expression")]
    #[diagnostic(
        code(w4b::test::bad_regex),
        help(
            "the syntax is Rust's `regex` crate's (https://docs.rs/regex): no look-around or back-references"
        )
    )]
    BadRegex {
        check: String,
        #[source]
        source: regex::Error,
    },

    #[error("the test was interrupted; the virtual machine was stopped")]
    #[diagnostic(code(w4b::test::cancelled))]
    Cancelled,
}

impl VmTestError {
    /// The error with the image it names called `shown`: the `test` step boots a scratch
    /// copy of the disk, which means nothing to the user, while the image it ships does.
    pub fn naming(mut self, shown: &std::path::Path) -> VmTestError {
        match &mut self {
            VmTestError::Image { path, .. }
            | VmTestError::NoRoot { path }
            | VmTestError::RootFs { path, .. }
            | VmTestError::NoKernel { path, .. }
            | VmTestError::NoInitrd { path, .. } => *path = shown.to_path_buf(),
            _ => {}
        }
        self
    }
}

fn found_note(found: &[String]) -> String {
    match found {
        [] => String::new(),
        f => format!(" (found only {})", f.join(", ")),
    }
}
