//! `tar`: a tree as a normalised, zstd-compressed tar archive (`<name>.tar.zst`), streamed
//! from the store into the store.

use std::io::Write;
use std::sync::Arc;

use w4b_cache::OutputRef;
use w4b_graph::{Component, Outputs, PlanContext, RunContext, Step, StepError};

use super::epoch::Epoch;
use super::tree_error;
use crate::store::AppStore;
use crate::tree::export::{export_tar, export_tar_zst};
use crate::tree::{Blobs, TreeError};

pub struct TarStep {
    pub store: Arc<AppStore>,
    pub epoch: Epoch,
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
        // Checked before writing, and not `ErrorKind::Interrupted`: writers retry those
        // (zstd's would write the same buffer again and again).
        if self.cx.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("the build was interrupted"));
        }
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        self.cx.progress(self.n, None);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The store, with every content stream checking for Ctrl-C between reads, so an
/// interrupted archive stops within one read, not one compressed block.
struct Cancellable<'a> {
    store: &'a AppStore,
    cancel: &'a std::sync::atomic::AtomicBool,
}

struct CancellableRead<'a, R> {
    inner: R,
    cancel: &'a std::sync::atomic::AtomicBool,
}

impl<R: std::io::Read> std::io::Read for CancellableRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("the build was interrupted"));
        }
        self.inner.read(buf)
    }
}

impl Blobs for Cancellable<'_> {
    fn put(&self, bytes: &[u8]) -> Result<w4b_cache::Digest, TreeError> {
        self.store.put(bytes)
    }
    fn put_file(&self, path: &std::path::Path) -> Result<(w4b_cache::Digest, u64), TreeError> {
        self.store.put_file(path)
    }
    fn get(&self, d: &w4b_cache::Digest) -> Result<Vec<u8>, TreeError> {
        self.store.get(d)
    }
    fn open(&self, d: &w4b_cache::Digest) -> Result<Box<dyn std::io::Read + '_>, TreeError> {
        Ok(Box::new(CancellableRead {
            inner: self.store.open(d)?,
            cancel: self.cancel,
        }))
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
            self.epoch.component(),
            match self.level {
                Some(l) => Component::param("output.level", l.to_string()).at(self.level_location.clone()),
                None => Component::param("output.compression", "none").at(self.level_location.clone()),
            },
        ])
    }
    fn run(&self, cx: &RunContext<'_>) -> Result<Outputs, StepError> {
        let tree = cx.input(0, "tree")?;
        let seconds = self.epoch.resolve(self.store.as_ref(), cx)?;
        let epoch = u64::try_from(seconds).map_err(|_| {
            StepError::msg(format!(
                "the epoch {seconds} is before 1970; a tar header cannot hold it"
            ))
        })?;
        let writer = self
            .store
            .local()
            .writer()
            .map_err(|e| StepError::context("cannot write to the cache", &e))?;
        let counting = Counting {
            inner: writer,
            n: 0,
            cx,
        };
        let blobs = &Cancellable {
            store: self.store.as_ref(),
            cancel: cx.cancel,
        };
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
            .map_err(|e| StepError::context("cannot store the archive", &e))?;
        let mut out = Outputs::new();
        out.insert("archive".into(), OutputRef { digest, size });
        Ok(out)
    }
}
