//! Streaming blob I/O: a writer that hashes on the way in, a reader that verifies on
//! the way out.
//!
//! Both exist so that multi-gigabyte images never need to sit in memory and are still
//! hashed exactly once per pass.

use std::fs::File;
use std::io::{self, BufWriter, ErrorKind, Read, Write};

use tempfile::NamedTempFile;

use crate::dir::StoreDir;
use crate::error::{io_err, CacheError};
use crate::Digest;

/// Streams into a temp file while hashing. Dropping it without [`commit`](Self::commit)
/// discards the temp file; a killed process leaves it for GC.
pub struct BlobWriter {
    dir: StoreDir,
    out: BufWriter<NamedTempFile>,
    hasher: blake3::Hasher,
    size: u64,
}

impl BlobWriter {
    pub(crate) fn new(dir: StoreDir, tmp: NamedTempFile) -> BlobWriter {
        BlobWriter {
            dir,
            out: BufWriter::with_capacity(256 * 1024, tmp),
            hasher: blake3::Hasher::new(),
            size: 0,
        }
    }

    /// Publishes the bytes written so far; returns their digest and length.
    pub fn commit(self) -> Result<(Digest, u64), CacheError> {
        self.commit_expecting(None)
    }

    pub(crate) fn commit_expecting(self, expected: Option<&Digest>) -> Result<(Digest, u64), CacheError> {
        let digest: Digest = self.hasher.finalize().into();
        if let Some(e) = expected.filter(|e| **e != digest) {
            return Err(CacheError::Mismatch {
                expected: *e,
                actual: digest,
            });
        }
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| io_err("write", self.dir.sub("tmp"))(e.into_error()))?;
        let dest = self.dir.blob_path(&digest);
        if !self.dir.present_pinned(&digest, &dest)? && self.dir.publish(tmp, &dest)? {
            self.dir.note_hashed(&digest);
        }
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads a blob and checks its digest when the end is reached: the read that would
/// return end-of-file instead fails with [`ErrorKind::InvalidData`] wrapping
/// [`CacheError::Corrupt`], after quarantining the entry. A reader dropped before the
/// end has verified nothing.
pub struct VerifyingReader {
    dir: StoreDir,
    digest: Digest,
    file: Source,
    hasher: blake3::Hasher,
    size: u64,
    /// Set once the end was reached with the wrong digest; later reads fail again.
    corrupt: Option<Digest>,
}

/// Where a [`VerifyingReader`] reads from: a blob's file, or a packed blob's bytes (read
/// and verified whole already, `crate::pack`).
enum Source {
    File(File),
    Bytes(io::Cursor<Vec<u8>>),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Bytes(b) => b.read(buf),
        }
    }
}

impl VerifyingReader {
    pub(crate) fn new(dir: StoreDir, digest: Digest, file: File) -> VerifyingReader {
        VerifyingReader::over(dir, digest, Source::File(file))
    }

    /// Over bytes already verified to be `digest` (not hashed again).
    pub(crate) fn verified(dir: StoreDir, digest: Digest, bytes: Vec<u8>) -> VerifyingReader {
        VerifyingReader::over(dir, digest, Source::Bytes(io::Cursor::new(bytes)))
    }

    fn over(dir: StoreDir, digest: Digest, file: Source) -> VerifyingReader {
        VerifyingReader {
            dir,
            digest,
            file,
            hasher: blake3::Hasher::new(),
            size: 0,
            corrupt: None,
        }
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.size
    }

    fn corrupt_error(&self, actual: Digest, evidence: std::path::PathBuf) -> io::Error {
        io::Error::new(
            ErrorKind::InvalidData,
            CacheError::Corrupt {
                expected: self.digest,
                actual,
                evidence,
                chunk: None,
            },
        )
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(actual) = self.corrupt {
            return Err(self.corrupt_error(actual, self.dir.sub("corrupt")));
        }
        let n = self.file.read(buf)?;
        // Bytes of a packed blob were verified whole before the reader was made.
        if n > 0 && matches!(self.file, Source::Bytes(_)) {
            self.size += n as u64;
            return Ok(n);
        }
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.size += n as u64;
            return Ok(n);
        }
        if buf.is_empty() || matches!(self.file, Source::Bytes(_)) {
            return Ok(0);
        }
        let actual: Digest = self.hasher.finalize().into();
        if actual == self.digest {
            return Ok(0);
        }
        self.corrupt = Some(actual);
        let Source::File(file) = &self.file else {
            return Err(self.corrupt_error(actual, self.dir.sub("corrupt")));
        };
        match self.dir.corrupt_blob(&self.digest, actual, file) {
            CacheError::Corrupt { evidence, .. } => Err(self.corrupt_error(actual, evidence)),
            other => Err(io::Error::new(ErrorKind::InvalidData, other)),
        }
    }
}

/// Recovers the [`CacheError::Corrupt`] a [`VerifyingReader`] wrapped in an `io::Error`.
pub(crate) fn unwrap_corrupt(e: io::Error) -> Result<CacheError, io::Error> {
    if e.kind() != ErrorKind::InvalidData || !e.get_ref().is_some_and(|i| i.is::<CacheError>()) {
        return Err(e);
    }
    match e.into_inner().map(|i| i.downcast::<CacheError>()) {
        Some(Ok(c)) => Ok(*c),
        _ => Err(io::Error::from(ErrorKind::InvalidData)),
    }
}
