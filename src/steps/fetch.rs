//! The `fetch` step kind: a file pinned by sha256, downloaded into the store.
//!
//! The step's key is the declared sha256 alone (not the URL, not the mirrors), so moving a
//! download to another host or adding a mirror never rebuilds anything. Getting the bytes
//! (sources and mirrors, retries, resume, verification) is the download engine's job, in
//! [`crate::download`]; this module wires it to the graph: the key, the progress of the
//! running step, its cancellation, and the import of the verified file into the store,
//! which links the download's file (written in the store's `tmp/`, hashed with BLAKE3 as
//! it was written) instead of copying it.
//!
//! The URL is not keyed and never recorded: it may carry credentials (`https://ci:token@…`),
//! which reach the server and nothing else (the engine redacts every URL it shows).

// The engine's types a caller needs to build a `FetchStep`, re-exported so the step kind
// is usable from one path.
pub use crate::download::{parse_sha256, redact_url, FetchConfig, FetchError, Fetcher, Netrc, Sha256Digest};
use crate::download::{FetchProgress, FetchRequest};

/// The `fetch` step: a download keyed by its declared sha256 alone, so a moved URL or a
/// new mirror never causes a rebuild.
pub struct FetchStep {
    pub store: std::sync::Arc<crate::store::AppStore>,
    pub fetcher: std::sync::Arc<Fetcher>,
    /// The URL as written, possibly with credentials: used for the request only.
    pub url: String,
    pub sha256: Sha256Digest,
    /// The size declared with the digest, if any: the download stops beyond it.
    pub size: Option<u64>,
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
    fn cancelled(&self) -> bool {
        self.cx.check_cancel().is_err()
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
            size: self.size,
            ..FetchRequest::new(&self.url, self.sha256, &self.declared_in)
        };
        // Named after the digest so a download killed mid-way resumes on the next build; the
        // engine locks it, so concurrent builders on one cache take turns instead of writing
        // the same file, and deletes it when `got` is dropped, after the import.
        let partial = self
            .store
            .scratch_path(&format!("fetch-{}.part", hex::encode(self.sha256)));
        let progress = StepProgress {
            cx,
            total: std::sync::Mutex::new((0, None)),
        };
        let got = match self.fetcher.fetch_to(&req, &partial, &progress) {
            Ok(got) => got,
            Err(FetchError::Cancelled) => return Err(w4b_graph::StepError::Cancelled),
            Err(e) => return Err(w4b_graph::StepError::diag(e)),
        };
        let blake3 = got.blake3;
        // The partial file is in the store's own `tmp/`, durable, and its BLAKE3 was
        // computed as it was written: linked into the store, not copied (a copy cost a
        // second write, read and hash of the whole download, and a second fsync).
        let tmp = got.into_temp_file().map_err(w4b_graph::StepError::diag)?;
        // The cache's error keeps its OS cause (`No space left on device`) as its source.
        let size = self
            .store
            .local()
            .adopt_hashed(&blake3, tmp)
            .map_err(w4b_graph::StepError::diag)?;
        let mut out = w4b_graph::Outputs::new();
        out.insert("file".into(), w4b_cache::OutputRef { digest: blake3, size });
        Ok(out)
    }
}
