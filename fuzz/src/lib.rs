//! Helpers shared by the fuzz targets in `fuzz_targets/` (see docs/security.md,
//! "Fuzzing").
//!
//! A filesystem image is mostly zeros, and FAT32 or ext4 geometries need megabytes before
//! their first interesting byte. The image targets therefore read their input as the
//! *start* of an image whose remaining bytes are zero ([`ZeroExtended`]): seeds stay a few
//! kilobytes, and a mutation of one boot-sector or superblock field can reach a large
//! geometry without a large input. The readers see an ordinary `Read + Seek` of a fixed
//! length and cannot tell.

use std::io::{self, Read, Seek, SeekFrom};

pub mod partition;

/// `data` followed by zeros up to `len` bytes (or `data` alone when it is longer).
#[derive(Clone, Debug)]
pub struct ZeroExtended<'a> {
    data: &'a [u8],
    len: u64,
    pos: u64,
}

impl<'a> ZeroExtended<'a> {
    pub fn new(data: &'a [u8], len: u64) -> ZeroExtended<'a> {
        ZeroExtended {
            data,
            len: len.max(data.len() as u64),
            pos: 0,
        }
    }

    /// The image's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for ZeroExtended<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        let out = &mut buf[..n];
        let start = usize::try_from(self.pos).unwrap_or(usize::MAX);
        let from_data = self.data.get(start..).unwrap_or(&[]);
        let copied = from_data.len().min(n);
        out[..copied].copy_from_slice(&from_data[..copied]);
        out[copied..].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ZeroExtended<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the image",
            )),
        }
    }
}

/// Renders a diagnostic as the command line prints it — message, labelled source
/// snippet, help — so that spans pointing outside their text are caught, not only the
/// one-line message. Lines are not wrapped: wrapping is a third of a `defs` execution and
/// is miette's own code.
pub fn render(diagnostic: &dyn miette::Diagnostic) -> String {
    let mut out = String::new();
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_wrap_lines(false);
    handler
        .render_report(&mut out, diagnostic)
        .expect("rendering into a String cannot fail");
    out
}

/// Reads at most `limit` bytes of `r` into a reused buffer and returns how many it read.
///
/// A file's size in an image is a claim, not an allocation: a sparse file may rightly be
/// far larger than its image. The targets read every file, but only this far, so that a
/// legitimate huge sparse file costs bounded time; the readers themselves must never
/// allocate by the claimed size, which the RSS limit of the run checks.
pub fn drain(r: &mut dyn Read, limit: u64) -> io::Result<u64> {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    while total < limit {
        let want = (limit - total).min(buf.len() as u64) as usize;
        match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_extended_reads_data_then_zeros_and_seeks_from_the_end() {
        let mut z = ZeroExtended::new(b"abc", 6);
        let mut out = Vec::new();
        z.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0\0");
        assert_eq!(z.seek(SeekFrom::End(-4)).unwrap(), 2);
        let mut two = [9u8; 2];
        z.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"c\0");
        assert!(z.seek(SeekFrom::Current(-10)).is_err());
        z.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(z.read(&mut two).unwrap(), 0);
    }
}
