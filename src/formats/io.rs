//! The one reading primitive the formats share: fill a buffer from a stream that may
//! return short reads (a decompressor, a verifying store reader, a pipe), stopping only at
//! its end. `Read::read_exact` cannot be used where a short tail is legitimate (the last
//! block of an image, a file whose stored size must be checked against its content).

use std::io::{self, Read};

/// Reads until `buf` is full or the input ends, retrying interrupted reads; returns the
/// bytes read (less than `buf.len()` only at the end of the input).
pub fn read_full<R: Read + ?Sized>(input: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most 3 bytes per read and is interrupted before each.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_and_interrupted_reads_fill_the_buffer_until_the_end() {
        let mut r = Trickle {
            data: b"0123456789",
            interrupt: false,
        };
        let mut buf = [0u8; 8];
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 8);
        assert_eq!(&buf, b"01234567");
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 0);
        assert_eq!(read_full(&mut r, &mut []).unwrap(), 0);
        // Through a trait object, as the writers read file contents.
        let mut dynamic: Box<dyn Read> = Box::new(&b"abc"[..]);
        assert_eq!(read_full(dynamic.as_mut(), &mut buf).unwrap(), 3);
    }

    #[test]
    fn other_errors_are_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("bad sector"))
            }
        }
        assert!(read_full(&mut Broken, &mut [0u8; 4]).is_err());
    }
}
