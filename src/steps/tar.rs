//! `tar`: a tree as a normalised, zstd-compressed tar archive (`<name>.tar.zst`), streamed
//! from the store into the store.

use std::io::Write;
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, ComponentKind, Outputs, PlanContext, RunContext, Step, StepError};

use super::tree_error;
use crate::store::AppStore;
use crate::tree::export::{export_tar, export_tar_zst};

pub struct TarStep {
    pub store: Arc<AppStore>,
    pub epoch: i64,
    pub epoch_location: Option<String>,
    /// zstd level, or `None` for an uncompressed archive.
    pub level: Option<i32>,
    pub level_location: Option<String>,
}

/// Counts bytes for the progress display.
struct Counting<'a, W: Write> {
    inner: W,
    n: u64,
    cx: &'a RunContext<'a>,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        if self.cx.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted",
            ));
        }
        self.cx.progress(self.n, None);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Step for TarStep {
    fn kind(&self) -> &'static str {
        "tar"
    }
    fn version(&self) -> u32 {
        1
    }
    fn components(&self, _: &PlanContext) -> Result<Vec<Component>, StepError> {
        Ok(vec![
            Component::new(ComponentKind::Epoch, "epoch", self.epoch.to_string())
                .at(self.epoch_location.clone()),
            match self.level {
                Some(l) => Component::param("output.level", l.to_string()).at(self.level_location.clone()),
                None => Component::param("output.compression", "none").at(self.level_location.clone()),
            },
        ])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = cx.input(0, "tree")?;
        let writer = self
            .store
            .local()
            .writer()
            .map_err(|e| StepError::msg(format!("cannot write to the cache: {e}")))?;
        let counting = Counting {
            inner: writer,
            n: 0,
            cx,
        };
        let epoch = u64::try_from(self.epoch).unwrap_or(0);
        let blobs = self.store.as_ref();
        let counting = match self.level {
            Some(level) => export_tar_zst(blobs, tree.digest, epoch, level, counting),
            None => export_tar(blobs, tree.digest, epoch, counting),
        }
        .map_err(|e| {
            if cx.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                StepError::Cancelled
            } else {
                tree_error(e)
            }
        })?;
        let (digest, size) = counting
            .inner
            .commit()
            .map_err(|e| StepError::msg(format!("cannot store the archive: {e}")))?;
        let mut out = Outputs::new();
        out.insert("archive".into(), OutputRef { digest, size });
        Ok(out)
    }
}
