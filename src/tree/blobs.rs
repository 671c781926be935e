//! Where trees keep their bytes: the minimal blob-store interface the tree code needs.
//!
//! The tree module does not depend on the cache crate's store API; the application
//! adapts its store to [`Blobs`]. [`MemBlobs`] is an in-memory implementation for tests
//! and for small, throw-away trees.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use w4b_cache::Digest;

use super::TreeError;

/// A content-addressed blob store.
///
/// Implementations verify what they return: `get` and `open` either yield the exact bytes
/// named by the digest or fail (a streaming `open` may fail at the end of the stream).
pub trait Blobs: Sync {
    /// Stores `bytes`, returning their digest. Storing an existing blob is a no-op.
    fn put(&self, bytes: &[u8]) -> Result<Digest, TreeError>;
    /// Stores the contents of a host file without holding it in memory; returns the
    /// digest and the length.
    fn put_file(&self, path: &Path) -> Result<(Digest, u64), TreeError>;
    /// The verified bytes of a blob.
    fn get(&self, d: &Digest) -> Result<Vec<u8>, TreeError>;
    /// A stream of a blob's bytes, for contents too big to hold in memory.
    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>, TreeError>;
    /// Whether the blob is stored, so a caller across a process boundary sends only
    /// what is missing. The default opens it; stores with an index override this.
    fn contains(&self, d: &Digest) -> bool {
        self.open(d).is_ok()
    }
    /// Stores everything `reader` yields. The default buffers it; stores that can
    /// stream (the application's) override this so disk images never sit in memory.
    fn put_reader(&self, reader: &mut dyn Read) -> Result<(Digest, u64), TreeError> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(|source| TreeError::Io {
            what: "cannot read",
            path: "<stream>".into(),
            source,
        })?;
        let len = bytes.len() as u64;
        Ok((self.put(&bytes)?, len))
    }
}

/// An in-memory [`Blobs`], for tests.
#[derive(Default)]
pub struct MemBlobs {
    blobs: Mutex<BTreeMap<Digest, Arc<Vec<u8>>>>,
}

impl MemBlobs {
    pub fn new() -> MemBlobs {
        MemBlobs::default()
    }

    /// Number of stored blobs.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Overwrites a blob's bytes without changing its name, to test corruption handling.
    pub fn corrupt(&self, d: &Digest, bytes: Vec<u8>) {
        self.map().insert(*d, Arc::new(bytes));
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Digest, Arc<Vec<u8>>>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.blobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fetch(&self, d: &Digest) -> Result<Arc<Vec<u8>>, TreeError> {
        let bytes = self
            .map()
            .get(d)
            .cloned()
            .ok_or(TreeError::BlobMissing { digest: *d })?;
        if Digest::of(&bytes) != *d {
            return Err(TreeError::BlobCorrupt { digest: *d });
        }
        Ok(bytes)
    }
}

impl Blobs for MemBlobs {
    fn put(&self, bytes: &[u8]) -> Result<Digest, TreeError> {
        let d = Digest::of(bytes);
        self.map().entry(d).or_insert_with(|| Arc::new(bytes.to_vec()));
        Ok(d)
    }

    fn put_file(&self, path: &Path) -> Result<(Digest, u64), TreeError> {
        let io_err = |source| TreeError::Io {
            what: "cannot read",
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err)?;
        let d = self.put(&bytes)?;
        Ok((d, bytes.len() as u64))
    }

    fn get(&self, d: &Digest) -> Result<Vec<u8>, TreeError> {
        Ok(self.fetch(d)?.as_ref().clone())
    }

    fn open(&self, d: &Digest) -> Result<Box<dyn Read + '_>, TreeError> {
        Ok(Box::new(io::Cursor::new(ArcBytes(self.fetch(d)?))))
    }

    fn contains(&self, d: &Digest) -> bool {
        self.map().contains_key(d)
    }
}

/// Shares a stored blob with a reader without copying it.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_open_and_verify() {
        let b = MemBlobs::new();
        let d = b.put(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(b.get(&d).unwrap(), b"hello");
        let mut s = String::new();
        b.open(&d).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(matches!(
            b.get(&Digest::of(b"nope")),
            Err(TreeError::BlobMissing { .. })
        ));
        b.corrupt(&d, b"jello".to_vec());
        assert!(matches!(b.get(&d), Err(TreeError::BlobCorrupt { .. })));
    }
}
