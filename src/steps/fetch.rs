//! The `fetch` step kind: a file pinned by sha256, downloaded into the store.
//!
//! The step's key is the declared sha256 alone (not the URL, not the mirrors), so moving a
//! download to another host or adding a mirror never rebuilds anything. Getting the bytes
//! (sources and mirrors, retries, resume, verification) is the download engine's job, in
//! [`crate::download`]; this module wires it to the graph: the key, the progress of the
//! running step, and the import of the verified file into the store.

use std::fs::File;

// The engine's types a caller needs to build a `FetchStep`, re-exported so the step kind
// is usable from one path.
pub use crate::download::{parse_sha256, FetchConfig, FetchError, Fetcher, Sha256Digest};
use crate::download::{FetchProgress, FetchRequest};

/// The `fetch` step: a download keyed by its declared sha256 alone, so a moved URL or a
/// new mirror never causes a rebuild.
pub struct FetchStep {
    pub store: std::sync::Arc<crate::store::AppStore>,
    pub fetcher: std::sync::Arc<Fetcher>,
    pub url: String,
    pub sha256: Sha256Digest,
    pub mirrors: Vec<(String, Vec<String>)>,
    /// Where the sha256 was declared (`defs/layers/app.yaml:7:12`), for keys and errors.
    pub declared_in: String,
}

struct StepProgress<'a, 'b> {
    cx: &'a w4b_graph::RunContext<'b>,
    total: std::sync::Mutex<(u64, Option<u64>)>,
}

impl FetchProgress for StepProgress<'_, '_> {
    fn started(&self, _url: &str, total: Option<u64>) {
        if let Ok(mut t) = self.total.lock() {
            *t = (0, total);
        }
        self.cx.progress(0, total);
    }
    fn advanced(&self, bytes: u64) {
        if let Ok(mut t) = self.total.lock() {
            t.0 += bytes;
            self.cx.progress(t.0, t.1);
        }
    }
}

impl w4b_graph::Step for FetchStep {
    fn kind(&self) -> &'static str {
        "fetch"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(
        &self,
        _: &w4b_graph::PlanContext,
    ) -> Result<Vec<w4b_graph::Component>, w4b_graph::StepError> {
        Ok(vec![w4b_graph::Component::param(
            "sha256",
            hex::encode(self.sha256),
        )
        .at(Some(self.declared_in.clone()))])
    }
    fn run(&self, cx: &w4b_graph::RunContext<'_>) -> Result<w4b_graph::Outputs, w4b_graph::StepError> {
        let req = FetchRequest {
            mirrors: &self.mirrors,
            ..FetchRequest::new(&self.url, self.sha256, &self.declared_in)
        };
        // Named after the digest so an interrupted download resumes on the next build.
        let partial = self
            .store
            .scratch_path(&format!("fetch-{}.part", hex::encode(self.sha256)));
        let progress = StepProgress {
            cx,
            total: std::sync::Mutex::new((0, None)),
        };
        let got = self
            .fetcher
            .fetch_to(&req, &partial, &progress)
            .map_err(w4b_graph::StepError::diag)?;
        let mut file = File::open(&got.path).map_err(|e| {
            w4b_graph::StepError::msg(format!(
                "cannot reopen the download `{}`: {e}",
                got.path.display()
            ))
        })?;
        let size = self
            .store
            .local()
            .import_blob(&got.blake3, &mut file)
            .map_err(|e| w4b_graph::StepError::msg(format!("cannot store the download: {e}")))?;
        let _ = std::fs::remove_file(&got.path);
        let mut out = w4b_graph::Outputs::new();
        out.insert(
            "file".into(),
            w4b_cache::OutputRef {
                digest: got.blake3,
                size,
            },
        );
        Ok(out)
    }
}
