//! `test-kernel`: the pinned generic kernel and its initramfs
//! ([`crate::vmtest::test_kernel`]), made from two locked `.deb`s, for the boot test of
//! an image whose own kernel cannot boot the virtual machine. One node per workspace
//! (`//packages:w4b-test-kernel#test-kernel`), shared by every image's `#test`.
//!
//! | key component | what | why |
//! |---|---|---|
//! | upstream `in0.file` | the kernel package (`linux-image-<release>`), by content | the kernel and its modules |
//! | upstream `in1.file` | `busybox-static`, by content | the initramfs's shell and tools |
//! | param `package` | the kernel package's name and version, from `w4b.lock` | named in the report; the bytes are keyed above |
//! | param `builder` | [`BUILDER_VERSION`] | the module list, `/init` and the archive's layout |
//!
//! Outputs: `vmlinuz`, `initrd` (a newc cpio archive, deterministic: the same packages
//! give the same bytes) and `meta` (`w4b.test-kernel/1`: package, version, release, the
//! modules `/init` loads).

use std::io::Read as _;
use std::sync::Arc;

use w4b_cache::{CacheError, Digest, OutputRef};
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use crate::store::AppStore;
use crate::tree::Blobs;
use crate::vmtest::test_kernel::{self, BUILDER_VERSION};

pub struct TestKernelStep {
    pub store: Arc<AppStore>,
    /// The kernel package's name and version (`linux-image-6.1.0-28-arm64`, `6.1.119-1`).
    pub package: (String, String),
    /// Where the set's lock entry is (`w4b.lock:LINE:COL`), for `why`.
    pub location: Option<String>,
}

fn unavailable(digest: Digest) -> impl Fn(CacheError) -> StepError {
    move |e| match e {
        CacheError::Missing { .. } | CacheError::Corrupt { .. } => StepError::InputUnavailable(digest),
        other => StepError::diag(other),
    }
}

impl Step for TestKernelStep {
    fn kind(&self) -> &'static str {
        "test-kernel"
    }

    fn version(&self) -> u32 {
        1
    }

    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![
            Component::param("package", format!("{}={}", self.package.0, self.package.1))
                .at(self.location.clone()),
            Component::param("builder", BUILDER_VERSION.to_string()),
        ])
    }

    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let kernel = cx.input(0, "file")?.digest;
        let busybox = cx.input(1, "file")?.digest;
        let store = &self.store;
        let open = |d: Digest| store.inner().reader(&d).map_err(unavailable(d));
        // The busybox package is small: read once, whole.
        let mut busybox_bytes = Vec::new();
        open(busybox)?
            .read_to_end(&mut busybox_bytes)
            .map_err(|e| StepError::context("cannot read `busybox-static`", &e))?;
        cx.check_cancel()?;
        let built = test_kernel::build(
            (&self.package.0, &self.package.1),
            || {
                store
                    .inner()
                    .reader(&kernel)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            },
            busybox_bytes.as_slice(),
        )
        .map_err(StepError::diag)?;
        cx.check_cancel()?;
        let meta = serde_json::to_vec(&built.meta).map_err(|e| StepError::msg(e.to_string()))?;
        let mut out = Outputs::new();
        for (name, bytes) in [
            ("vmlinuz", &built.vmlinuz),
            ("initrd", &built.initrd),
            ("meta", &meta),
        ] {
            let digest = store.put(bytes).map_err(crate::steps::tree_error)?;
            out.insert(
                name.into(),
                OutputRef {
                    digest,
                    size: bytes.len() as u64,
                },
            );
        }
        cx.note(&format!(
            "{} ({}): {} modules, initramfs {} KiB",
            built.meta.package,
            built.meta.release,
            built.meta.modules.len(),
            built.initrd.len() / 1024
        ));
        Ok(out)
    }
}
