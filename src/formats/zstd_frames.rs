//! Independent zstd frames and the zstd seekable format: the pieces a `.img.zst` is
//! assembled from when each span of the disk is compressed (and cached) on its own.
//!
//! A span of bytes becomes one zstd frame ([`FrameCompressor`]): single-threaded
//! `ZSTD_compress2` at a given level, with the content size and the content checksum in
//! the frame. One-shot single-threaded compression of the same bytes at the same level is
//! a pure function of the input for a given libzstd, so the frame can be cached under a key
//! that names the bytes, the level and [`libzstd_version`]. Frames compress in parallel
//! because they share nothing; concatenated, they are one valid `.zst` (RFC 8878 §3.1:
//! a decoder decodes frames one after another and skips skippable frames).
//!
//! After the frames comes the **seek table** of zstd's seekable format
//! (`contrib/seekable_format/zstd_seekable_compression_format.md`, version 0.1.0; all
//! fields little-endian), in one skippable frame:
//!
//! | field | size | value |
//! |---|---|---|
//! | `Skippable_Magic_Number` | 4 | `0x184D2A5E` |
//! | `Frame_Size` | 4 | bytes after this field: `12·n + 9` |
//! | `Seek_Table_Entries` | 12 each | `Compressed_Size`, `Decompressed_Size`, `Checksum` (u32 each) |
//! | `Number_Of_Frames` | 4 | `n` |
//! | `Seek_Table_Descriptor` | 1 | `0x80`: bit 7 `Checksum_Flag`; bits 6–2 reserved (0); bits 1–0 unused |
//! | `Seekable_Magic_Number` | 4 | `0x8F92EAB1`, the file's last bytes |
//!
//! `Checksum` is the low 32 bits of the XXH64 (seed 0) of the frame's decompressed bytes.
//! That is exactly the frame's own `Content_Checksum` (RFC 8878 §3.1.1), so it is read
//! from the frame's last four bytes instead of hashing the span a second time.
//!
//! [`SeekTable`] parses a table strictly (sizes add up to the file, reserved bits are
//! zero, every frame is below zstd's 1 GiB seekable limit) and never panics on any input;
//! [`SeekableReader`] reads the bytes at an offset by decoding only the frames that hold
//! them, checking each against its table entry.

#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::io::{self, Read, Seek, SeekFrom};

use zstd::zstd_safe;

/// `Magic_Number` of a zstd frame (RFC 8878 §3.1.1).
pub const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// `Skippable_Magic_Number` of the seek table's frame (one of the 16 skippable magics).
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// `Seekable_Magic_Number`, the last four bytes of a seekable `.zst`.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// `Seek_Table_Descriptor` bit 7: every entry carries a checksum.
pub const CHECKSUM_FLAG: u8 = 0x80;
/// `Seek_Table_Descriptor` bits 6–2, reserved for breaking changes: must be zero.
const RESERVED_BITS: u8 = 0x7C;
/// `Seek_Table_Footer`: `Number_Of_Frames`, `Seek_Table_Descriptor`, `Seekable_Magic_Number`.
pub const FOOTER_SIZE: usize = 9;
/// The skippable frame's header: magic and `Frame_Size`.
const SKIPPABLE_HEADER_SIZE: usize = 8;
/// The largest decompressed frame the reference implementation accepts
/// (`ZSTD_SEEKABLE_MAX_FRAME_DECOMPRESSED_SIZE`, 1 GiB).
pub const MAX_FRAME_DECOMPRESSED: u32 = 0x4000_0000;
/// The most frames a seek table may list (`ZSTD_SEEKABLE_MAXFRAMES`).
pub const MAX_FRAMES: u32 = 0x0800_0000;

/// The libzstd this binary links (zstd-sys vendors it), as `1.5.7`. Cached frames are
/// only reusable by the same libzstd, so keys of cached frames include it.
pub fn libzstd_version() -> &'static str {
    zstd_safe::version_string()
}

/// The zstd levels a frame may use.
pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;

/// One independent zstd frame with what its seek-table entry needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Vec<u8>,
    decompressed_size: u32,
    checksum: u32,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("compressed_size", &self.bytes.len())
            .field("decompressed_size", &self.decompressed_size)
            .field("checksum", &format_args!("{:#010x}", self.checksum))
            .finish()
    }
}

impl Frame {
    /// Checks that `bytes` are exactly one zstd frame of the kind [`FrameCompressor`]
    /// writes (content size and content checksum present, at most 1 GiB decompressed)
    /// and takes its size and checksum from it. The frame's data is not decoded.
    pub fn parse(bytes: Vec<u8>) -> Result<Frame, ZstdFramesError> {
        let magic = le32(&bytes, 0).ok_or_else(|| corrupt(0, "Magic_Number", "fewer than 4 bytes"))?;
        if magic != ZSTD_MAGIC {
            return Err(corrupt(
                0,
                "Magic_Number",
                format!("{magic:#010x} is not a zstd frame's (0xfd2fb528)"),
            ));
        }
        // RFC 8878 §3.1.1.1.1: Frame_Header_Descriptor bit 2 is Content_Checksum_flag.
        let descriptor = *bytes
            .get(4)
            .ok_or_else(|| corrupt(4, "Frame_Header_Descriptor", "missing"))?;
        if descriptor & 0x04 == 0 {
            return Err(unsupported(
                4,
                "Content_Checksum_flag",
                "the frame has no content checksum",
            ));
        }
        let size = zstd_safe::find_frame_compressed_size(&bytes)
            .map_err(|code| corrupt(0, "Frame", zstd_safe::get_error_name(code)))?;
        if size != bytes.len() {
            return Err(corrupt(
                size as u64,
                "Frame",
                format!("{} bytes follow the frame", bytes.len().saturating_sub(size)),
            ));
        }
        if u32::try_from(bytes.len()).is_err() {
            return Err(unsupported(
                0,
                "Compressed_Size",
                format!("a frame of {} bytes does not fit a seek-table entry", bytes.len()),
            ));
        }
        let content = match zstd_safe::get_frame_content_size(&bytes) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return Err(unsupported(
                    5,
                    "Frame_Content_Size",
                    "the frame does not record its decompressed size",
                ))
            }
            Err(_) => return Err(corrupt(4, "Frame_Header", "unreadable frame header")),
        };
        let decompressed_size = u32::try_from(content)
            .ok()
            .filter(|&n| n <= MAX_FRAME_DECOMPRESSED)
            .ok_or_else(|| {
                unsupported(
                    5,
                    "Frame_Content_Size",
                    format!("{content} bytes is more than a seekable frame's 1 GiB"),
                )
            })?;
        // Content_Checksum: the frame's last 4 bytes (the size check above guarantees
        // a complete frame, which with the flag set ends in them).
        let checksum = bytes
            .len()
            .checked_sub(4)
            .and_then(|at| le32(&bytes, at))
            .ok_or_else(|| corrupt(0, "Content_Checksum", "missing"))?;
        Ok(Frame {
            bytes,
            decompressed_size,
            checksum,
        })
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The frame's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The number of bytes the frame decodes to.
    pub fn decompressed_size(&self) -> u32 {
        self.decompressed_size
    }

    /// The low 32 bits of the XXH64 of the decompressed bytes.
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// The frame's seek-table entry.
    pub fn entry(&self) -> SeekEntry {
        SeekEntry {
            // `parse` checked that the size fits.
            compressed_size: u32::try_from(self.bytes.len()).unwrap_or(u32::MAX),
            decompressed_size: self.decompressed_size,
            checksum: self.checksum,
        }
    }
}

/// Compresses spans into independent frames, reusing one compression context and one
/// output buffer (a fresh context and a `compress_bound`-sized buffer per frame cost page
/// faults and `memset`s on every frame).
pub struct FrameCompressor {
    inner: zstd::bulk::Compressor<'static>,
    level: i32,
    /// Where frames are compressed to before they are copied out at their own size.
    out: Vec<u8>,
}

impl FrameCompressor {
    /// A compressor at `level` (1..=22): single-threaded, content size and checksum on.
    pub fn new(level: i32) -> Result<Self, ZstdFramesError> {
        use zstd_safe::CParameter;
        if !LEVELS.contains(&level) {
            return Err(ZstdFramesError::InvalidLevel { level });
        }
        let setup = || -> io::Result<zstd::bulk::Compressor<'static>> {
            let mut c = zstd::bulk::Compressor::new(level)?;
            // Single-threaded: the one mode whose output is a function of the input
            // alone for a one-shot compression (no job boundaries).
            c.set_parameter(CParameter::NbWorkers(0))?;
            c.set_parameter(CParameter::ChecksumFlag(true))?;
            c.set_parameter(CParameter::ContentSizeFlag(true))?;
            Ok(c)
        };
        let inner = setup().map_err(ZstdFramesError::Compress)?;
        Ok(FrameCompressor {
            inner,
            level,
            out: Vec::new(),
        })
    }

    /// The level this compressor uses.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// `span` as one zstd frame. The same bytes at the same level give the same frame
    /// with the same libzstd, whichever compressor or thread makes it.
    pub fn compress(&mut self, span: &[u8]) -> Result<Frame, ZstdFramesError> {
        let len = span.len() as u64;
        if len > u64::from(MAX_FRAME_DECOMPRESSED) {
            return Err(ZstdFramesError::SpanTooLarge { len });
        }
        self.out.clear();
        self.out.reserve(zstd_safe::compress_bound(span.len()));
        self.inner
            .compress_to_buffer(span, &mut self.out)
            .map_err(ZstdFramesError::Compress)?;
        let frame = Frame::parse(self.out.clone())?;
        if u64::from(frame.decompressed_size) != len {
            return Err(ZstdFramesError::Compress(io::Error::other(format!(
                "libzstd recorded {} bytes for a span of {len}",
                frame.decompressed_size
            ))));
        }
        Ok(frame)
    }
}

/// [`FrameCompressor::compress`] with a fresh context.
pub fn compress_frame(span: &[u8], level: i32) -> Result<Frame, ZstdFramesError> {
    FrameCompressor::new(level)?.compress(span)
}

/// One `Seek_Table_Entries` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeekEntry {
    /// `Compressed_Size`: the frame's size in the file.
    pub compressed_size: u32,
    /// `Decompressed_Size`: what it decodes to (0 for a skippable frame).
    pub decompressed_size: u32,
    /// `Checksum`: low 32 bits of the XXH64 of the decoded bytes (0 when the table has none).
    pub checksum: u32,
}

/// The seek table's skippable frame for `entries`, with checksums.
pub fn seek_table(entries: &[SeekEntry]) -> Result<Vec<u8>, ZstdFramesError> {
    let count = u32::try_from(entries.len())
        .ok()
        .filter(|&n| n <= MAX_FRAMES)
        .ok_or(ZstdFramesError::TooManyFrames {
            count: entries.len() as u64,
        })?;
    // At most 12 · 2^27 + 9 bytes: fits in `Frame_Size`.
    let frame_size = count
        .checked_mul(12)
        .and_then(|n| n.checked_add(FOOTER_SIZE as u32))
        .ok_or(ZstdFramesError::TooManyFrames {
            count: u64::from(count),
        })?;
    let mut out = Vec::with_capacity(entries.len().saturating_mul(12).saturating_add(17));
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&frame_size.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.compressed_size.to_le_bytes());
        out.extend_from_slice(&e.decompressed_size.to_le_bytes());
        out.extend_from_slice(&e.checksum.to_le_bytes());
    }
    out.extend_from_slice(&count.to_le_bytes());
    out.push(CHECKSUM_FLAG);
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    Ok(out)
}

/// A parsed seek table with each frame's place in the file and in the decoded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekTable {
    entries: Vec<SeekEntry>,
    checksums: bool,
    /// `n + 1` compressed offsets: frame `i` is `c_offsets[i]..c_offsets[i + 1]`.
    c_offsets: Vec<u64>,
    /// `n + 1` decompressed offsets, likewise.
    d_offsets: Vec<u64>,
}

impl SeekTable {
    /// Parses `bytes`, which must be exactly one seek-table skippable frame. Offsets in
    /// errors are within `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<SeekTable, ZstdFramesError> {
        Self::parse_at(bytes, 0)
    }

    /// [`SeekTable::parse`], reporting offsets as `base + offset within bytes`.
    fn parse_at(bytes: &[u8], base: u64) -> Result<SeekTable, ZstdFramesError> {
        let at = |o: usize| base.saturating_add(o as u64);
        let len = bytes.len();
        let footer_at = len
            .checked_sub(FOOTER_SIZE)
            .filter(|&f| f >= SKIPPABLE_HEADER_SIZE)
            .ok_or_else(|| {
                corrupt(
                    at(0),
                    "Seek_Table_Footer",
                    format!("{len} bytes is shorter than a seek table (17)"),
                )
            })?;
        let (count, entry_size, checksums) = parse_footer(bytes, footer_at, base)?;
        let magic = le32(bytes, 0).unwrap_or(0);
        if magic != SKIPPABLE_MAGIC {
            return Err(corrupt(
                at(0),
                "Skippable_Magic_Number",
                format!("{magic:#010x}, expected 0x184d2a5e"),
            ));
        }
        let frame_size = le32(bytes, 4).unwrap_or(0);
        let want = (len as u64).saturating_sub(SKIPPABLE_HEADER_SIZE as u64);
        if u64::from(frame_size) != want {
            return Err(corrupt(
                at(4),
                "Frame_Size",
                format!("{frame_size}, but the seek table frame has {want} bytes after it"),
            ));
        }
        let entries_len = (count as usize).checked_mul(entry_size);
        if entries_len != footer_at.checked_sub(SKIPPABLE_HEADER_SIZE) {
            return Err(corrupt(
                at(footer_at),
                "Number_Of_Frames",
                format!("{count} entries of {entry_size} bytes do not fill the table"),
            ));
        }
        let area = bytes
            .get(SKIPPABLE_HEADER_SIZE..footer_at)
            .ok_or_else(|| corrupt(at(0), "Seek_Table_Entries", "missing"))?;
        let mut entries = Vec::with_capacity(count as usize);
        let mut c_offsets = Vec::with_capacity((count as usize).saturating_add(1));
        let mut d_offsets = Vec::with_capacity((count as usize).saturating_add(1));
        let (mut c, mut d) = (0u64, 0u64);
        c_offsets.push(c);
        d_offsets.push(d);
        for (i, raw) in area.chunks_exact(entry_size).enumerate() {
            let entry_at = at(SKIPPABLE_HEADER_SIZE.saturating_add(i.saturating_mul(entry_size)));
            let e = SeekEntry {
                compressed_size: le32(raw, 0).unwrap_or(0),
                decompressed_size: le32(raw, 4).unwrap_or(0),
                checksum: if checksums { le32(raw, 8).unwrap_or(0) } else { 0 },
            };
            if e.decompressed_size > MAX_FRAME_DECOMPRESSED {
                return Err(unsupported(
                    entry_at.saturating_add(4),
                    "Decompressed_Size",
                    format!(
                        "frame {i} decodes to {} bytes, more than 1 GiB",
                        e.decompressed_size
                    ),
                ));
            }
            if e.compressed_size == 0 {
                return Err(corrupt(
                    entry_at,
                    "Compressed_Size",
                    format!("frame {i} is empty"),
                ));
            }
            // No overflow: at most 2^27 entries of at most 2^32 each.
            c = c.saturating_add(u64::from(e.compressed_size));
            d = d.saturating_add(u64::from(e.decompressed_size));
            c_offsets.push(c);
            d_offsets.push(d);
            entries.push(e);
        }
        Ok(SeekTable {
            entries,
            checksums,
            c_offsets,
            d_offsets,
        })
    }

    /// Reads the seek table at the end of a seekable `.zst` and checks that its frames
    /// fill the file before it exactly.
    pub fn read_from<R: Read + Seek>(file: &mut R) -> Result<SeekTable, ZstdFramesError> {
        let len = file.seek(SeekFrom::End(0)).map_err(ZstdFramesError::Read)?;
        let min = (SKIPPABLE_HEADER_SIZE + FOOTER_SIZE) as u64;
        if len < min {
            return Err(corrupt(
                0,
                "Seek_Table_Footer",
                format!("the file has {len} bytes, fewer than a seek table's 17"),
            ));
        }
        let footer_at = len.saturating_sub(FOOTER_SIZE as u64);
        let mut footer = [0u8; FOOTER_SIZE];
        read_exact_at(file, footer_at, &mut footer)?;
        let (count, entry_size, _) = parse_footer(&footer, 0, footer_at)?;
        // Bounded before anything is allocated: the table must fit in the file.
        let table_len = u64::from(count)
            .saturating_mul(entry_size as u64)
            .saturating_add(min);
        if table_len > len {
            return Err(corrupt(
                footer_at,
                "Number_Of_Frames",
                format!("{count} frames need a {table_len}-byte seek table; the file has {len} bytes"),
            ));
        }
        let table_at = len.saturating_sub(table_len);
        let mut bytes = vec![0u8; table_len as usize];
        read_exact_at(file, table_at, &mut bytes)?;
        let table = Self::parse_at(&bytes, table_at)?;
        if table.compressed_size() != table_at {
            return Err(corrupt(
                table_at,
                "Compressed_Size",
                format!(
                    "the frames add up to {} bytes, but the seek table starts at byte {table_at}",
                    table.compressed_size()
                ),
            ));
        }
        Ok(table)
    }

    /// The entries, one per frame.
    pub fn entries(&self) -> &[SeekEntry] {
        &self.entries
    }

    /// Whether the entries carry checksums.
    pub fn has_checksums(&self) -> bool {
        self.checksums
    }

    /// The frames' total size: where the seek table starts.
    pub fn compressed_size(&self) -> u64 {
        self.c_offsets.last().copied().unwrap_or(0)
    }

    /// The decoded size of the whole file.
    pub fn decompressed_size(&self) -> u64 {
        self.d_offsets.last().copied().unwrap_or(0)
    }

    /// Where frame `index` starts in the file and in the decoded data.
    pub fn frame_start(&self, index: usize) -> Option<(u64, u64)> {
        Some((*self.c_offsets.get(index)?, *self.d_offsets.get(index)?))
    }

    /// The frame holding decoded byte `offset`, or `None` past the end.
    pub fn frame_at(&self, offset: u64) -> Option<usize> {
        if offset >= self.decompressed_size() {
            return None;
        }
        // The first frame whose end is past `offset`; frames that decode to nothing
        // (end == start) are never chosen.
        let ends = self.d_offsets.get(1..)?;
        Some(ends.partition_point(|&end| end <= offset))
    }
}

/// Parses the 9-byte footer at `bytes[at..]`: (frame count, entry size, checksums?).
fn parse_footer(bytes: &[u8], at: usize, base: u64) -> Result<(u32, usize, bool), ZstdFramesError> {
    let off = |o: usize| base.saturating_add(at.saturating_add(o) as u64);
    let magic = at
        .checked_add(5)
        .and_then(|o| le32(bytes, o))
        .ok_or_else(|| corrupt(off(0), "Seek_Table_Footer", "truncated"))?;
    if magic != SEEKABLE_MAGIC {
        return Err(corrupt(
            off(5),
            "Seekable_Magic_Number",
            format!("{magic:#010x}, expected 0x8f92eab1: the file has no seek table"),
        ));
    }
    let descriptor = at.checked_add(4).and_then(|o| bytes.get(o)).copied().unwrap_or(0);
    if descriptor & RESERVED_BITS != 0 {
        return Err(unsupported(
            off(4),
            "Seek_Table_Descriptor",
            format!("reserved bits set ({descriptor:#04x})"),
        ));
    }
    let count = le32(bytes, at).unwrap_or(0);
    if count > MAX_FRAMES {
        return Err(unsupported(
            off(0),
            "Number_Of_Frames",
            format!("{count} frames, more than the format's {MAX_FRAMES}"),
        ));
    }
    let checksums = descriptor & CHECKSUM_FLAG != 0;
    Ok((count, if checksums { 12 } else { 8 }, checksums))
}

/// Reads a seekable `.zst` at any decoded offset, decoding only the frames it needs (the
/// last one stays decoded for the next read). Every decoded frame is checked against its
/// entry: one frame of exactly `Compressed_Size` bytes, `Decompressed_Size` bytes out,
/// and the entry's checksum.
pub struct SeekableReader<R> {
    inner: R,
    table: SeekTable,
    dctx: zstd::bulk::Decompressor<'static>,
    cached: Option<(usize, Vec<u8>)>,
    pos: u64,
}

impl<R: Read + Seek> SeekableReader<R> {
    /// Reads and checks the seek table of `inner`.
    pub fn open(mut inner: R) -> Result<Self, ZstdFramesError> {
        let table = SeekTable::read_from(&mut inner)?;
        let dctx = zstd::bulk::Decompressor::new().map_err(ZstdFramesError::Read)?;
        Ok(SeekableReader {
            inner,
            table,
            dctx,
            cached: None,
            pos: 0,
        })
    }

    /// The seek table.
    pub fn table(&self) -> &SeekTable {
        &self.table
    }

    /// Fills `buf` with the decoded bytes from `offset`; returns how many there were
    /// (fewer than `buf.len()` only at the end).
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, ZstdFramesError> {
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let at = offset.saturating_add(done as u64);
            let Some(index) = self.table.frame_at(at) else {
                break;
            };
            let (_, start) = self.table.frame_start(index).unwrap_or((0, 0));
            let data = self.frame(index)?;
            let within = usize::try_from(at.saturating_sub(start)).unwrap_or(usize::MAX);
            let avail = data.get(within..).unwrap_or(&[]);
            let n = avail.len().min(rest.len());
            if n == 0 {
                break;
            }
            for (dst, src) in rest.iter_mut().zip(avail) {
                *dst = *src;
            }
            done = done.saturating_add(n);
        }
        Ok(done)
    }

    /// Frame `index`, decoded and checked.
    fn frame(&mut self, index: usize) -> Result<&[u8], ZstdFramesError> {
        if self.cached.as_ref().is_none_or(|(i, _)| *i != index) {
            self.cached = None;
            let data = self.decode(index)?;
            self.cached = Some((index, data));
        }
        Ok(self.cached.as_ref().map(|(_, d)| d.as_slice()).unwrap_or(&[]))
    }

    fn decode(&mut self, index: usize) -> Result<Vec<u8>, ZstdFramesError> {
        let entry = *self
            .table
            .entries
            .get(index)
            .ok_or_else(|| corrupt(0, "Seek_Table_Entries", format!("no frame {index}")))?;
        let (c_start, _) = self.table.frame_start(index).unwrap_or((0, 0));
        let dsize = entry.decompressed_size as usize;
        let csize = entry.compressed_size as usize;
        // A frame larger than zstd's bound for its content is corrupt; checking first
        // keeps the read below bounded by the entry's (already bounded) decoded size.
        if csize > zstd_safe::compress_bound(dsize) {
            return Err(corrupt(
                c_start,
                "Compressed_Size",
                format!("frame {index}: {csize} bytes cannot hold only {dsize} decoded bytes"),
            ));
        }
        let mut comp = vec![0u8; csize];
        read_exact_at(&mut self.inner, c_start, &mut comp)?;
        let found = zstd_safe::find_frame_compressed_size(&comp).map_err(|code| {
            corrupt(
                c_start,
                "Frame",
                format!("frame {index}: {}", zstd_safe::get_error_name(code)),
            )
        })?;
        if found != csize {
            return Err(corrupt(
                c_start,
                "Compressed_Size",
                format!("frame {index} is {found} bytes, its entry says {csize}"),
            ));
        }
        let data = self
            .dctx
            .decompress(&comp, dsize)
            .map_err(|e| corrupt(c_start, "Frame", format!("frame {index}: {e}")))?;
        if data.len() != dsize {
            return Err(corrupt(
                c_start,
                "Decompressed_Size",
                format!(
                    "frame {index} decodes to {} bytes, its entry says {dsize}",
                    data.len()
                ),
            ));
        }
        if self.table.checksums {
            let sum = xxh64(&data, 0) as u32;
            if sum != entry.checksum {
                return Err(corrupt(
                    c_start,
                    "Checksum",
                    format!(
                        "frame {index}: the data's checksum is {sum:#010x}, its entry says {:#010x}",
                        entry.checksum
                    ),
                ));
            }
        }
        Ok(data)
    }
}

impl<R: Read + Seek> Read for SeekableReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .read_at(self.pos, buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for SeekableReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(n) => (n, 0),
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.table.decompressed_size(), d),
        };
        self.pos = base.checked_add_signed(delta).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the data")
        })?;
        Ok(self.pos)
    }
}

fn read_exact_at<R: Read + Seek>(file: &mut R, at: u64, buf: &mut [u8]) -> Result<(), ZstdFramesError> {
    file.seek(SeekFrom::Start(at)).map_err(ZstdFramesError::Read)?;
    file.read_exact(buf).map_err(ZstdFramesError::Read)
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let raw: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// XXH64 (xxHash specification, "XXH64 algorithm"), the hash behind zstd's content
/// checksum and the seek table's `Checksum`. Only the reader needs it, to check decoded
/// frames against the table independently of the frames' own checksums.
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(acc: u64, v: u64) -> u64 {
        (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    fn lane(b: &[u8]) -> u64 {
        let mut raw = [0u8; 8];
        for (d, s) in raw.iter_mut().zip(b) {
            *d = *s;
        }
        u64::from_le_bytes(raw)
    }
    let stripes = data.chunks_exact(32);
    let tail = stripes.remainder();
    let mut h = if data.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        for stripe in stripes {
            for (acc, word) in v.iter_mut().zip(stripe.chunks_exact(8)) {
                *acc = round(*acc, lane(word));
            }
        }
        let [v1, v2, v3, v4] = v;
        let mut h = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        for acc in v {
            h = merge(h, acc);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u64);
    let words = tail.chunks_exact(8);
    let rest = words.remainder();
    for word in words {
        h = (h ^ round(0, lane(word)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
    }
    let quads = rest.chunks_exact(4);
    let bytes = quads.remainder();
    for quad in quads {
        h = (h ^ lane(quad).wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
    }
    for &b in bytes {
        h = (h ^ u64::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// Why a frame or seek table could not be made or read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ZstdFramesError {
    #[error("zstd level {level} is out of range")]
    #[diagnostic(
        code(w4b::zstd_frames::invalid_level),
        help("use a level from 1 to 22 in `output.compression`")
    )]
    InvalidLevel { level: i32 },

    #[error("a span of {len} bytes is too large for one seekable zstd frame")]
    #[diagnostic(
        code(w4b::zstd_frames::span_too_large),
        help("seekable frames decode to at most 1 GiB; compress the data in smaller spans")
    )]
    SpanTooLarge { len: u64 },

    #[error("a seek table cannot list {count} frames")]
    #[diagnostic(
        code(w4b::zstd_frames::too_many_frames),
        help("the seekable format allows at most 134,217,728 frames; use larger spans")
    )]
    TooManyFrames { count: u64 },

    #[error("zstd compression failed")]
    #[diagnostic(
        code(w4b::zstd_frames::compress),
        help("this is a problem in libzstd or out of memory; try again with fewer threads")
    )]
    Compress(#[source] io::Error),

    #[error("reading the zstd file failed")]
    #[diagnostic(
        code(w4b::zstd_frames::read),
        help("check that the file exists and is readable; a short file is a truncated download")
    )]
    Read(#[source] io::Error),

    #[error("corrupt seekable zstd data at byte {offset}, `{field}`: {detail}")]
    #[diagnostic(
        code(w4b::zstd_frames::corrupt),
        help("the file is damaged or truncated; fetch or build it again")
    )]
    Corrupt {
        offset: u64,
        field: &'static str,
        detail: String,
    },

    #[error("unsupported seekable zstd data at byte {offset}, `{field}`: {detail}")]
    #[diagnostic(
        code(w4b::zstd_frames::unsupported),
        help("w4b reads the seekable format 0.1.0 with frames of at most 1 GiB, as w4b writes it")
    )]
    Unsupported {
        offset: u64,
        field: &'static str,
        detail: String,
    },
}

fn corrupt(offset: u64, field: &'static str, detail: impl Into<String>) -> ZstdFramesError {
    ZstdFramesError::Corrupt {
        offset,
        field,
        detail: detail.into(),
    }
}

fn unsupported(offset: u64, field: &'static str, detail: impl Into<String>) -> ZstdFramesError {
    ZstdFramesError::Unsupported {
        offset,
        field,
        detail: detail.into(),
    }
}

#[cfg(test)]
#[path = "zstd_frames_tests.rs"]
pub(crate) mod tests;
