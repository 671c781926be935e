//! Reading `.xz` data with bounded memory.
//!
//! liblzma's "auto" decoder (what `XzDecoder::new_multi_decoder` uses) also accepts the
//! legacy `.lzma` format, whose 13-byte header declares a dictionary of up to 4 GiB that
//! the decoder allocates before reading any data: a 55-byte `Packages.xz` made it
//! allocate 4 GiB. Every `.xz` w4b reads (repository indices, `.deb` members, base images)
//! goes through [`decoder`] instead:
//!
//! - only the `.xz` container is accepted (the `.lzma` format is not a valid `.xz`, `.deb`
//!   members named `.lzma` are refused earlier by name);
//! - the decoder's memory is bounded by [`MEMORY_LIMIT`], 256 MiB: `xz -9e` needs 65 MiB
//!   to decompress, so every file the `xz` tool writes with a preset fits, and an input
//!   that asks for more is an error, not an allocation;
//! - concatenated streams decode to the concatenation, as `xz -d` does.

use std::io::{self, BufRead, BufReader, Read};

use liblzma::stream::{Stream, CONCATENATED};

/// The most memory a decoder may use.
pub const MEMORY_LIMIT: u64 = 256 << 20;

/// A bounded `.xz` decoder over `input`; see the module doc.
pub fn decoder<R: Read>(input: R) -> XzReader<BufReader<R>> {
    buf_decoder(BufReader::new(input))
}

/// [`decoder`] over a reader that already buffers.
pub fn buf_decoder<R: BufRead>(input: R) -> XzReader<R> {
    let stream = Stream::new_stream_decoder(MEMORY_LIMIT, CONCATENATED);
    XzReader {
        inner: stream.map(|s| liblzma::bufread::XzDecoder::new_stream(input, s)),
    }
}

/// The reader [`decoder`] returns.
pub struct XzReader<R: BufRead> {
    /// `Err` when liblzma could not even set the decoder up (out of memory).
    inner: Result<liblzma::bufread::XzDecoder<R>, liblzma::stream::Error>,
}

impl<R: BufRead> Read for XzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let decoder = match &mut self.inner {
            Ok(d) => d,
            Err(e) => return Err(io::Error::other(format!("cannot start the xz decoder: {e}"))),
        };
        decoder.read(buf).map_err(|e| {
            let limited = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<liblzma::stream::Error>())
                .is_some_and(|inner| matches!(inner, liblzma::stream::Error::MemLimit));
            if limited {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the xz data needs more than {} MiB of memory to decompress",
                        MEMORY_LIMIT >> 20
                    ),
                )
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)] // tests index their own fixtures
mod tests {
    use super::*;
    use std::io::Write;

    fn xz(data: &[u8], preset: u32) -> Vec<u8> {
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), preset);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn decode(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_xz_and_concatenated_streams() {
        let mut both = xz(b"hello ", 6);
        both.extend(xz(b"world", 9));
        assert_eq!(decode(&both).unwrap(), b"hello world");
    }

    #[test]
    fn refuses_the_legacy_lzma_format_that_declares_a_4_gib_dictionary() {
        // An `.lzma` header: properties 0x5d, a dictionary of 0xffffffff bytes, an
        // unknown size; then a few bytes of "data". The auto decoder allocated 4 GiB.
        let mut lzma = vec![0x5d, 0xff, 0xff, 0xff, 0xff];
        lzma.extend([0xff; 8]);
        lzma.extend([0u8; 42]);
        assert_eq!(lzma.len(), 55);
        let err = decode(&lzma).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn an_xz_stream_that_needs_more_memory_than_the_limit_is_an_error() {
        // A valid `.xz` whose LZMA2 filter declares a 1.5 GiB dictionary: liblzma checks
        // the limit from the block header, before allocating.
        let mut opts = liblzma::stream::LzmaOptions::new_preset(0).unwrap();
        opts.dict_size(1536 << 20);
        let mut filters = liblzma::stream::Filters::new();
        filters.lzma2(&opts);
        let stream = Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc64).unwrap();
        let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        enc.write_all(b"tiny").unwrap();
        let bytes = enc.finish().unwrap();
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("256 MiB"), "{err}");
    }
}
