//! Usage counters: how much a local store holds, known without walking it (ccache's
//! idea: counters, not scans), so a build can tell cheaply whether the store is over its
//! size limit.
//!
//! ```text
//! v1/usage/base         {"schema":"w4b.usage/1","bytes":N,"last_gc":{…}}   the total at the last full count
//! v1/usage/<lease id>   {"schema":"w4b.usage-delta/1","bytes":N}          what one build published since
//! ```
//!
//! Every [`StoreDir`] counts the bytes it publishes (apparent sizes of blobs, chunk
//! indexes, records and memos); a build's [`Lease`](crate::Lease) writes its share as a
//! delta when it ends, and only when it published anything, so a no-op build writes
//! nothing here. The estimate is the base plus every delta. GC (and a first count, when
//! there is no base yet) rewrites the base from what it found and removes the deltas it
//! saw before it started counting; a delta written meanwhile is counted twice, which only
//! makes the next GC come a little early. Deletions by quarantine are not subtracted.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::dir::{sorted_dir, StoreDir};
use crate::error::{io_err, CacheError};

const BASE: &str = "base";
const BASE_SCHEMA: &str = "w4b.usage/1";
const DELTA_SCHEMA: &str = "w4b.usage-delta/1";

/// The total at the last full count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBase {
    pub schema: String,
    pub bytes: u64,
    #[serde(default)]
    pub last_gc: Option<LastGc>,
}

/// What the last GC of a local store did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastGc {
    /// Seconds since the Unix epoch, by the GC's clock.
    pub at: u64,
    pub bytes_freed: u64,
    pub records_removed: u64,
}

#[derive(Serialize, Deserialize)]
struct Delta {
    schema: String,
    bytes: u64,
}

/// The counters as read now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// `None` until a GC or a first count has run on this store.
    pub base: Option<UsageBase>,
    /// The sum of the deltas.
    pub deltas: u64,
    pub delta_files: u64,
}

impl Usage {
    /// Base plus deltas; `None` without a base.
    pub fn estimate(&self) -> Option<u64> {
        self.base.as_ref().map(|b| b.bytes.saturating_add(self.deltas))
    }
}

impl StoreDir {
    /// Bytes this directory (through any clone) has published since it was opened.
    pub fn published_bytes(&self) -> u64 {
        self.published_counter().load(Ordering::Relaxed)
    }

    pub(crate) fn count_published(&self, bytes: u64) {
        self.published_counter().fetch_add(bytes, Ordering::Relaxed);
    }

    /// Reads the base and every delta. Unreadable files count as absent (a delta) or as
    /// no base (which asks for a fresh count).
    pub fn usage(&self) -> Result<Usage, CacheError> {
        let mut usage = Usage::default();
        for (path, is_base) in self.usage_files()? {
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            if is_base {
                usage.base = serde_json::from_slice::<UsageBase>(&bytes)
                    .ok()
                    .filter(|b| b.schema == BASE_SCHEMA);
            } else if let Ok(d) = serde_json::from_slice::<Delta>(&bytes) {
                usage.deltas = usage.deltas.saturating_add(d.bytes);
                usage.delta_files += 1;
            }
        }
        Ok(usage)
    }

    /// Every file of `v1/usage/`, flagged when it is the base.
    fn usage_files(&self) -> Result<Vec<(PathBuf, bool)>, CacheError> {
        Ok(sorted_dir(&self.sub("usage"))?
            .into_iter()
            .map(|p| {
                let base = p.file_name().is_some_and(|n| n == BASE);
                (p, base)
            })
            .collect())
    }

    /// The delta files present now: GC removes exactly these once it has counted.
    pub(crate) fn usage_deltas(&self) -> Result<Vec<PathBuf>, CacheError> {
        Ok(self
            .usage_files()?
            .into_iter()
            .filter(|(_, base)| !base)
            .map(|(p, _)| p)
            .collect())
    }

    /// Records what one build published; nothing when it published nothing.
    pub(crate) fn write_usage_delta(&self, id: &str, bytes: u64) -> Result<(), CacheError> {
        if bytes == 0 {
            return Ok(());
        }
        let delta = Delta {
            schema: DELTA_SCHEMA.into(),
            bytes,
        };
        self.replace_usage_file(id, &serde_json::to_vec(&delta).unwrap_or_default())
    }

    /// Writes a new base of `bytes` (keeping or replacing the GC note) and removes the
    /// deltas it accounts for.
    pub(crate) fn write_usage_base(
        &self,
        bytes: u64,
        last_gc: Option<LastGc>,
        counted: &[PathBuf],
    ) -> Result<(), CacheError> {
        let last_gc = match last_gc {
            Some(g) => Some(g),
            None => self.usage()?.base.and_then(|b| b.last_gc),
        };
        let base = UsageBase {
            schema: BASE_SCHEMA.into(),
            bytes,
            last_gc,
        };
        self.replace_usage_file(BASE, &serde_json::to_vec(&base).unwrap_or_default())?;
        for p in counted {
            match fs::remove_file(p) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err("remove", p)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts what the store holds (records, blobs, chunk indexes, memos; apparent
    /// sizes) and makes that the base: for a store that has none yet. Returns the total.
    pub fn count_usage(&self) -> Result<u64, CacheError> {
        self.writable()?;
        let counted = self.usage_deltas()?;
        let mut total: u64 = 0;
        for e in self
            .record_entries()?
            .into_iter()
            .chain(self.blob_entries()?)
            .chain(self.index_entries()?)
        {
            total = total.saturating_add(e.size);
        }
        total = total.saturating_add(self.memo_bytes()?);
        self.write_usage_base(total, None, &counted)?;
        Ok(total)
    }

    /// Apparent bytes of every memo file.
    pub(crate) fn memo_bytes(&self) -> Result<u64, CacheError> {
        Ok(self
            .memo_files()?
            .iter()
            .filter_map(|m| fs::metadata(&m.path).ok())
            .map(|m| m.len())
            .sum())
    }

    /// Replaces `v1/usage/<name>` atomically, without an fsync: a lost counter only
    /// shifts when the next GC runs.
    fn replace_usage_file(&self, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.sub("usage").join(name);
        let mut tmp = self.tmp_file()?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        tmp.persist(&path)
            .map(drop)
            .map_err(|e| io_err("replace", &path)(e.error))
    }
}

/// Seconds since the epoch of `t` (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use crate::dir::tests::store;

    #[test]
    fn count_then_deltas_then_recount() {
        let (_t, dir) = store();
        assert_eq!(dir.usage().unwrap().estimate(), None);
        dir.put_bytes(&[1; 1000]).unwrap();
        assert_eq!(dir.count_usage().unwrap(), 1000);
        assert_eq!(dir.usage().unwrap().estimate(), Some(1000));
        dir.write_usage_delta("1.a", 500).unwrap();
        dir.write_usage_delta("2.b", 0).unwrap();
        let u = dir.usage().unwrap();
        assert_eq!((u.estimate(), u.delta_files), (Some(1500), 1));
        // A recount replaces the base and drops the deltas it saw.
        assert_eq!(dir.count_usage().unwrap(), 1000);
        let u = dir.usage().unwrap();
        assert_eq!((u.estimate(), u.delta_files), (Some(1000), 0));
    }
}
