//! The pinned test kernel in the graph: `//packages:w4b-test-kernel`, when the workspace
//! defines it, is locked by `w4b lock` beside the images (one entry, for arm64, on no
//! base: the closure of its packages alone, like a bootstrap entry) and planned, when its
//! entry is current, as two `fetch` steps (the kernel package and `busybox-static`, by
//! sha256) and one `test-kernel` step ([`crate::steps::test_kernel`]). Nothing builds it
//! unless a boot test depends on it ([`super::add_tests`]).

use std::sync::Arc;

use w4b_graph::NodeId;

use super::packages::LockRequest;
use super::{loc, Compiler};
use crate::defs::{self, Label, Loader, Target};
use crate::lockfile;
use crate::steps::test_kernel::TestKernelStep;

/// The set's name in `//packages`.
pub const TEST_KERNEL_SET: &str = "w4b-test-kernel";

/// The set's label.
pub fn label() -> Label {
    Label::new("packages", TEST_KERNEL_SET).expect("a valid label")
}

/// A graph of the test kernel alone (for `w4b test IMAGE`), or `None` when the workspace has
/// no such set or its lock entry is missing or stale.
pub fn test_kernel_plan(
    ws: &crate::defs::Workspace,
    store: &Arc<crate::store::AppStore>,
    env: &std::collections::BTreeMap<String, String>,
    sets: &[String],
) -> miette::Result<Option<(w4b_graph::Graph, NodeId)>> {
    let (loader, mut c) = Compiler::start(ws, store, &[], env, sets)?;
    let Some(node) = c.test_kernel(&loader)? else {
        return Ok(None);
    };
    Ok(Some((c.graph, node)))
}

impl Compiler<'_> {
    /// The lock request of the test kernel set, or `None` when the workspace has no such
    /// file.
    pub(super) fn test_kernel_request(&mut self, loader: &Loader) -> miette::Result<Option<LockRequest>> {
        let label = label();
        let file = self.ws.defs_dir().join(label.file_name());
        if !file.exists() {
            return Ok(None);
        }
        let t = loader.load(&label)?;
        let Target::Packages(set) = &t.target else {
            return Err(miette::miette!(
                code = "w4b::test_kernel::kind",
                help =
                    "`//packages:w4b-test-kernel` names the set of the pinned test kernel: `kind: packages`",
                "`{label}` is a `{}` target",
                t.target.kind()
            ));
        };
        let arch = defs::Arch::Arm64;
        let sets = vec![(label.clone(), set.clone())];
        let refs: Vec<(&Label, &defs::PackageSet)> = sets.iter().map(|(l, s)| (l, s)).collect();
        Ok(Some(LockRequest {
            target: label.to_string(),
            at: loc(&t, "packages").unwrap_or_else(|| self.ws.target_file(&label)),
            entry: lockfile::test_kernel_entry_name(&label, arch),
            inputs: lockfile::inputs_digest(&refs, arch, None),
            sets,
            arch,
            base: None,
            bootstrap: None,
            on_bootstrap: None,
        }))
    }

    /// The `test-kernel` step, when the set exists and its lock entry is current; `None`
    /// otherwise (an image without a kernel of its own is then refused with what to do).
    pub(super) fn test_kernel(&mut self, loader: &Loader) -> miette::Result<Option<NodeId>> {
        let Some(req) = self.test_kernel_request(loader)? else {
            return Ok(None);
        };
        if self.locked_entry(&req).is_err() {
            return Ok(None);
        }
        let (fetches, debs, _, _) = self.fetch_locked(&req)?;
        let kernel = debs.iter().position(|d| {
            d.name.starts_with("linux-image-")
                && d.name.ends_with("-arm64")
                && d.name != "linux-image-arm64"
                && d.name
                    .chars()
                    .nth("linux-image-".len())
                    .is_some_and(|c| c.is_ascii_digit())
        });
        let busybox = debs.iter().position(|d| d.name == "busybox-static");
        let (Some(k), Some(b)) = (kernel, busybox) else {
            return Err(miette::miette!(
                code = "w4b::test_kernel::contents",
                help = "the set asks for `linux-image-arm64` and `busybox-static`; restore it and run `w4b lock`",
                "the lock entry `{}` has no {}",
                req.entry,
                if kernel.is_none() { "`linux-image-<release>-arm64`" } else { "`busybox-static`" }
            ));
        };
        let step = Arc::new(TestKernelStep {
            store: self.store.clone(),
            package: (debs[k].name.clone(), debs[k].version.clone()),
            location: debs[k].location.clone(),
        });
        let def = format!("test-kernel {} {}", debs[k].sha256, debs[b].sha256);
        Ok(Some(self.add(
            format!("{}#test-kernel", label()),
            def.as_bytes(),
            step,
            vec![fetches[k], fetches[b]],
        )))
    }
}
