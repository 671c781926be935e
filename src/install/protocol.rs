//! The framed protocol between w4b and its unprivileged install session ([`super::userns`]).
//!
//! The session runs in a user namespace as a re-executed w4b; the blob store (the cache)
//! stays with the parent, which owns its files. The session asks, the parent answers,
//! strictly in turn, over the session's stdin (parent → session) and stdout
//! (session → parent):
//!
//! | frame | bytes |
//! |---|---|
//! | tag | 1 (a [`Tag`]) |
//! | length | 8, little-endian, at most [`MAX_FRAME`] |
//! | payload | `length` |
//!
//! | request (session) | payload | answer (parent) |
//! |---|---|---|
//! | `Unshared` | — | `Mapped` once the id maps are written, or `Failed` |
//! | `Job` | — | `Job`: the [`super::userns::Job`] as JSON |
//! | `Get` | a 32-byte digest | `Blob` with its bytes, or `Failed` |
//! | `Has` | a 32-byte digest | `Yes` or `No` |
//! | `Put` | the bytes | `Stored` with their 32-byte digest, or `Failed` |
//! | `Done` | the result as JSON; the session exits after it | — |
//!
//! Reads are unbuffered and exact, so a process that reads one frame never consumes the
//! next one meant for another reader of the same pipe (the session's first process reads
//! `Mapped`, the process it starts reads everything after).

use std::io::{self, Read, Write};

/// The largest payload either side accepts: a blob bigger than any file of a root tree
/// is garbage or an attack on the parent's memory.
pub const MAX_FRAME: u64 = 1 << 32;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    Unshared = 1,
    Mapped = 2,
    Job = 3,
    Get = 4,
    Blob = 5,
    Has = 6,
    Yes = 7,
    No = 8,
    Put = 9,
    Stored = 10,
    Failed = 11,
    Done = 12,
}

impl Tag {
    fn from_byte(b: u8) -> Option<Tag> {
        Some(match b {
            1 => Tag::Unshared,
            2 => Tag::Mapped,
            3 => Tag::Job,
            4 => Tag::Get,
            5 => Tag::Blob,
            6 => Tag::Has,
            7 => Tag::Yes,
            8 => Tag::No,
            9 => Tag::Put,
            10 => Tag::Stored,
            11 => Tag::Failed,
            12 => Tag::Done,
            _ => return None,
        })
    }
}

/// Writes one frame and flushes it.
pub fn write_frame(w: &mut dyn Write, tag: Tag, payload: &[u8]) -> io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = tag as u8;
    head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.flush()
}

/// Reads one frame; `None` at a clean end of the stream (before a frame starts).
pub fn read_frame(r: &mut dyn Read) -> io::Result<Option<(Tag, Vec<u8>)>> {
    let mut first = [0u8; 1];
    loop {
        match r.read(&mut first) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let tag = Tag::from_byte(first[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame tag {}", first[0]),
        )
    })?;
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {MAX_FRAME}"),
        ));
    }
    let len =
        usize::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    let mut payload = Vec::new();
    payload
        .try_reserve_exact(len)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "frame too large"))?;
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((tag, payload)))
}

/// Reads one frame that must be there.
pub fn expect_frame(r: &mut dyn Read) -> io::Result<(Tag, Vec<u8>)> {
    read_frame(r)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the other side closed the pipe"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Tag::Get, &[7u8; 32]).unwrap();
        write_frame(&mut buf, Tag::Yes, b"").unwrap();
        write_frame(&mut buf, Tag::Put, b"hello").unwrap();
        assert_eq!(buf.len(), 9 + 32 + 9 + 9 + 5);
        assert_eq!(&buf[..9], &[4, 32, 0, 0, 0, 0, 0, 0, 0]);
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some((Tag::Get, vec![7u8; 32])));
        assert_eq!(read_frame(&mut r).unwrap(), Some((Tag::Yes, vec![])));
        assert_eq!(read_frame(&mut r).unwrap(), Some((Tag::Put, b"hello".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), None, "a clean end");
    }

    #[test]
    fn a_bad_tag_a_truncated_frame_and_an_oversized_length_are_errors() {
        let mut r: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(read_frame(&mut r).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut r: &[u8] = &[9, 5, 0, 0, 0, 0, 0, 0, 0, b'h', b'i'];
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut r: &[u8] = &[9, 5, 0];
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut huge = vec![5u8];
        huge.extend_from_slice(&(MAX_FRAME + 1).to_le_bytes());
        let mut r = &huge[..];
        assert_eq!(read_frame(&mut r).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut r: &[u8] = &[];
        assert_eq!(
            expect_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
