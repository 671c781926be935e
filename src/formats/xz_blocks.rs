//! Independent xz blocks and the one `.xz` stream they are assembled into, so a `.img.xz`
//! can be made from blocks compressed (and cached) one span at a time.
//!
//! A span is encoded with liblzma's single-threaded stream encoder at a preset with a
//! CRC64 check, which writes a one-block stream; [`encode_block`] keeps the block (block
//! header, compressed data, block padding, check) with its unpadded and uncompressed sizes,
//! taken from the stream's index. [`write_stream`] then writes, in pure Rust, one standard
//! multi-block stream — what `xz -T0 --block-size` writes, read by `xz`, liblzma and
//! libarchive alike. Layout (The .xz File Format 1.2.1; integers little-endian, `VLI` is
//! the format's 7-bits-per-byte variable-length integer, §1.2):
//!
//! | part | bytes |
//! |---|---|
//! | Stream Header (§2.1.1) | `FD 37 7A 58 5A 00` ‖ Stream Flags `00 04` (CRC64) ‖ CRC32 of the flags |
//! | Blocks (§3) | each: Block Header (size byte `(n/4)−1`, flags, …, CRC32) ‖ Compressed Data ‖ Block Padding to 4 ‖ Check (8) |
//! | Index (§4) | `00` ‖ VLI record count ‖ records {VLI Unpadded Size, VLI Uncompressed Size} ‖ zero padding to 4 ‖ CRC32 |
//! | Stream Footer (§2.1.2) | CRC32 of the next 6 bytes ‖ Backward Size `(index size/4)−1` (u32) ‖ Stream Flags ‖ `59 5A` ("YZ") |
//!
//! Unpadded Size is a block's size without its Block Padding. liblzma's single-threaded
//! encoder at one preset is a pure function of its input, so a block can be cached under
//! a key naming the bytes and the preset.
//!
//! [`read_index`] parses a stream strictly (one stream, CRC64, every CRC32, minimal VLIs,
//! zero padding, block sizes that add up to where the index starts, each block header's
//! CRC32) and never panics on any input.

#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::crc::crc32;

/// Header Magic Bytes (§2.1.1.1).
pub const HEADER_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// Footer Magic Bytes (§2.1.2.4).
pub const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
/// Stream Flags (§2.1.1.2): no reserved bits, Check type 0x04, CRC64.
pub const STREAM_FLAGS: [u8; 2] = [0x00, 0x04];
/// Size of the CRC64 Check field.
const CHECK_SIZE: u64 = 8;
/// Stream Header and Stream Footer size.
pub const HEADER_SIZE: u64 = 12;
/// The largest value a VLI may hold (§1.2): 2^63 − 1.
const VLI_MAX: u64 = i64::MAX as u64;
/// The largest Unpadded Size (§4.3.1; liblzma's `UNPADDED_SIZE_MAX`).
const UNPADDED_SIZE_MAX: u64 = VLI_MAX & !3;
/// The smallest Unpadded Size: an 8-byte block header, one byte of data, the check.
const UNPADDED_SIZE_MIN: u64 = 5;

/// One xz block ready to be placed in a stream.
#[derive(Clone, PartialEq, Eq)]
pub struct XzBlock {
    bytes: Vec<u8>,
    record: IndexRecord,
}

impl std::fmt::Debug for XzBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XzBlock")
            .field("len", &self.bytes.len())
            .field("record", &self.record)
            .finish()
    }
}

/// One Index Record (§4.3): a block's Unpadded Size and Uncompressed Size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    pub unpadded_size: u64,
    pub uncompressed_size: u64,
}

impl IndexRecord {
    /// The block's size in the stream: Unpadded Size rounded up to a multiple of four.
    pub fn total_size(&self) -> u64 {
        round4(self.unpadded_size)
    }
}

impl XzBlock {
    /// Checks that `bytes` are one block with these sizes: the Block Header's size and
    /// CRC32, its reserved flag bits, the sizes it declares (if any), the length
    /// (Unpadded Size rounded up to four) and zero Block Padding. The data is not decoded.
    pub fn new(bytes: Vec<u8>, record: IndexRecord) -> Result<XzBlock, XzBlocksError> {
        check_record(&record, 0)?;
        if bytes.len() as u64 != record.total_size() {
            return Err(corrupt(
                0,
                "Unpadded Size",
                format!(
                    "{} bytes, but Unpadded Size {} needs {}",
                    bytes.len(),
                    record.unpadded_size,
                    record.total_size()
                ),
            ));
        }
        let header_size = check_block_header(&bytes, 0, &record)?;
        // Compressed Data ends where the check and the padding before it begin.
        let data_end = record.unpadded_size.saturating_sub(CHECK_SIZE);
        if data_end <= header_size {
            return Err(corrupt(0, "Unpadded Size", "the block has no compressed data"));
        }
        let padding_end = record.total_size().saturating_sub(CHECK_SIZE);
        let padding = bytes.get(data_end as usize..padding_end as usize).unwrap_or(&[]);
        if padding.iter().any(|&b| b != 0) {
            return Err(corrupt(data_end, "Block Padding", "not zero"));
        }
        Ok(XzBlock { bytes, record })
    }

    /// The block's bytes, padding and check included.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The block's index record.
    pub fn record(&self) -> IndexRecord {
        self.record
    }
}

/// Checks the Block Header at the start of `bytes` (§3.1) against `record`; returns the
/// header's size. `at` is where `bytes` start in the stream, for errors.
fn check_block_header(bytes: &[u8], at: u64, record: &IndexRecord) -> Result<u64, XzBlocksError> {
    let size_byte = *bytes
        .first()
        .ok_or_else(|| corrupt(at, "Block Header Size", "missing"))?;
    if size_byte == 0 {
        return Err(corrupt(
            at,
            "Block Header Size",
            "0 is the Index Indicator, not a block",
        ));
    }
    let header_size = (usize::from(size_byte).saturating_add(1)).saturating_mul(4);
    let header = bytes.get(..header_size).ok_or_else(|| {
        corrupt(
            at,
            "Block Header Size",
            format!("{header_size} bytes, beyond the block"),
        )
    })?;
    let (body, sum) = header.split_at(header_size.saturating_sub(4));
    let stored = u32::from_le_bytes(sum.try_into().unwrap_or([0; 4]));
    if crc32(body) != stored {
        return Err(corrupt(
            at.saturating_add(body.len() as u64),
            "Block Header CRC32",
            "does not match the header",
        ));
    }
    let flags = *body.get(1).unwrap_or(&0);
    if flags & 0x3C != 0 {
        return Err(unsupported(
            at.saturating_add(1),
            "Block Flags",
            "reserved bits set",
        ));
    }
    let mut pos = 2usize;
    let header_u64 = header_size as u64;
    if flags & 0x40 != 0 {
        let (compressed, n) = read_vli(body, pos, at)?;
        pos = pos.saturating_add(n);
        let want = record
            .unpadded_size
            .saturating_sub(header_u64)
            .saturating_sub(CHECK_SIZE);
        if compressed != want {
            return Err(corrupt(
                at.saturating_add(2),
                "Compressed Size",
                format!("{compressed} in the block header, {want} from the index"),
            ));
        }
    }
    if flags & 0x80 != 0 {
        let (uncompressed, _) = read_vli(body, pos, at)?;
        if uncompressed != record.uncompressed_size {
            return Err(corrupt(
                at.saturating_add(pos as u64),
                "Uncompressed Size",
                format!(
                    "{uncompressed} in the block header, {} from the index",
                    record.uncompressed_size
                ),
            ));
        }
    }
    Ok(header_u64)
}

/// Encodes `span` as one xz block at `preset` (0..=9) with a CRC64 check.
pub fn encode_block(span: &[u8], preset: u32) -> Result<XzBlock, XzBlocksError> {
    if preset > 9 {
        return Err(XzBlocksError::InvalidLevel { level: preset });
    }
    if span.is_empty() {
        // liblzma writes no block at all for empty input.
        return Err(XzBlocksError::EmptySpan);
    }
    let stream = liblzma::stream::Stream::new_easy_encoder(preset, liblzma::stream::Check::Crc64)
        .map_err(|e| XzBlocksError::Encode(e.into()))?;
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(span).map_err(XzBlocksError::Encode)?;
    let bytes = enc.finish().map_err(XzBlocksError::Encode)?;
    let block = block_of_single_block_stream(&bytes)?;
    if block.record.uncompressed_size != span.len() as u64 {
        return Err(XzBlocksError::Encode(io::Error::other(format!(
            "liblzma recorded {} bytes for a span of {}",
            block.record.uncompressed_size,
            span.len()
        ))));
    }
    Ok(block)
}

/// The block of a stream that has exactly one.
pub fn block_of_single_block_stream(stream: &[u8]) -> Result<XzBlock, XzBlocksError> {
    let index = read_index(&mut io::Cursor::new(stream))?;
    let [record] = index.records() else {
        return Err(unsupported(
            index.index_offset,
            "Number of Records",
            format!("{} blocks, expected one", index.records().len()),
        ));
    };
    let end = HEADER_SIZE.saturating_add(record.total_size());
    let bytes = stream
        .get(HEADER_SIZE as usize..end as usize)
        .ok_or_else(|| corrupt(HEADER_SIZE, "Block", "truncated"))?;
    XzBlock::new(bytes.to_vec(), *record)
}

/// The Stream Header: magic, flags (CRC64), CRC32 of the flags.
pub fn stream_header() -> [u8; HEADER_SIZE as usize] {
    let mut h = [0u8; HEADER_SIZE as usize];
    let crc = crc32(&STREAM_FLAGS).to_le_bytes();
    for (dst, src) in h
        .iter_mut()
        .zip(HEADER_MAGIC.iter().chain(&STREAM_FLAGS).chain(&crc))
    {
        *dst = *src;
    }
    h
}

/// The Index and Stream Footer that end a stream of blocks with these `records`.
pub fn index_and_footer(records: &[IndexRecord]) -> Result<Vec<u8>, XzBlocksError> {
    let mut index = vec![0x00];
    write_vli(&mut index, records.len() as u64);
    for (i, r) in records.iter().enumerate() {
        check_record(r, i as u64)?;
        write_vli(&mut index, r.unpadded_size);
        write_vli(&mut index, r.uncompressed_size);
    }
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let crc = crc32(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    let backward =
        u32::try_from((index.len() / 4).saturating_sub(1)).map_err(|_| XzBlocksError::TooManyBlocks {
            count: records.len() as u64,
        })?;
    let mut tail = backward.to_le_bytes().to_vec();
    tail.extend_from_slice(&STREAM_FLAGS);
    let footer_crc = crc32(&tail);
    index.extend_from_slice(&footer_crc.to_le_bytes());
    index.extend_from_slice(&tail);
    index.extend_from_slice(&FOOTER_MAGIC);
    Ok(index)
}

/// Writes one stream of `blocks` to `out`; returns the bytes written.
pub fn write_stream<'a, W: Write>(
    out: &mut W,
    blocks: impl IntoIterator<Item = &'a XzBlock>,
) -> Result<u64, XzBlocksError> {
    let header = stream_header();
    out.write_all(&header).map_err(XzBlocksError::Write)?;
    let mut written = HEADER_SIZE;
    let mut records = Vec::new();
    for block in blocks {
        out.write_all(&block.bytes).map_err(XzBlocksError::Write)?;
        written = written.saturating_add(block.bytes.len() as u64);
        records.push(block.record);
    }
    let tail = index_and_footer(&records)?;
    out.write_all(&tail).map_err(XzBlocksError::Write)?;
    Ok(written.saturating_add(tail.len() as u64))
}

/// A stream's index with each block's place in the file and in the decoded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIndex {
    records: Vec<IndexRecord>,
    /// Where each block starts in the file, then where the index starts.
    block_offsets: Vec<u64>,
    /// Where each block starts in the decoded data, then the total.
    data_offsets: Vec<u64>,
    index_offset: u64,
}

impl StreamIndex {
    /// The blocks' records, in order.
    pub fn records(&self) -> &[IndexRecord] {
        &self.records
    }

    /// Where block `i` starts in the file and in the decoded data.
    pub fn block_start(&self, i: usize) -> Option<(u64, u64)> {
        Some((*self.block_offsets.get(i)?, *self.data_offsets.get(i)?))
    }

    /// The decoded size of the stream.
    pub fn uncompressed_size(&self) -> u64 {
        self.data_offsets.last().copied().unwrap_or(0)
    }
}

/// Reads and checks the structure of a `.xz` file holding one stream (see the module doc).
pub fn read_index<R: Read + Seek>(file: &mut R) -> Result<StreamIndex, XzBlocksError> {
    let len = file.seek(SeekFrom::End(0)).map_err(XzBlocksError::Read)?;
    // Header, footer, and the smallest index (indicator, count, CRC32).
    if len < HEADER_SIZE.saturating_mul(2).saturating_add(8) {
        return Err(corrupt(
            0,
            "Stream Header",
            format!("{len} bytes is too short for an xz stream"),
        ));
    }
    let mut header = [0u8; HEADER_SIZE as usize];
    read_exact_at(file, 0, &mut header)?;
    let (magic, rest) = header.split_at(6);
    if magic != HEADER_MAGIC {
        return Err(corrupt(0, "Header Magic Bytes", "not an xz file"));
    }
    let (flags, sum) = rest.split_at(2);
    if crc32(flags) != u32::from_le_bytes(sum.try_into().unwrap_or([0; 4])) {
        return Err(corrupt(
            8,
            "Stream Header CRC32",
            "does not match the stream flags",
        ));
    }
    if flags != STREAM_FLAGS {
        return Err(unsupported(
            6,
            "Stream Flags",
            format!("{flags:02x?}: only CRC64 streams (00 04) are read"),
        ));
    }
    let footer_at = len.saturating_sub(HEADER_SIZE);
    let mut footer = [0u8; HEADER_SIZE as usize];
    read_exact_at(file, footer_at, &mut footer)?;
    if footer.get(10..) != Some(&FOOTER_MAGIC[..]) {
        // Stream Padding (§2.2) is zero bytes in fours after a stream.
        if footer.get(8..) == Some(&[0u8; 4][..]) {
            return Err(unsupported(
                footer_at,
                "Stream Padding",
                "only a single unpadded stream is read",
            ));
        }
        return Err(corrupt(
            footer_at.saturating_add(10),
            "Footer Magic Bytes",
            "not an xz stream footer",
        ));
    }
    let (sum, covered) = footer.split_at(4);
    let covered = covered.get(..6).unwrap_or(&[]);
    if crc32(covered) != u32::from_le_bytes(sum.try_into().unwrap_or([0; 4])) {
        return Err(corrupt(
            footer_at,
            "Stream Footer CRC32",
            "does not match the footer",
        ));
    }
    if covered.get(4..) != Some(flags) {
        return Err(corrupt(
            footer_at.saturating_add(8),
            "Stream Flags",
            "the footer's differ from the header's",
        ));
    }
    let backward = u32::from_le_bytes(covered.get(..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]));
    let index_size = (u64::from(backward).saturating_add(1)).saturating_mul(4);
    let index_offset = footer_at
        .checked_sub(index_size)
        .filter(|&at| at >= HEADER_SIZE)
        .ok_or_else(|| {
            corrupt(
                footer_at.saturating_add(4),
                "Backward Size",
                format!("an index of {index_size} bytes does not fit in the file"),
            )
        })?;
    let mut index = vec![0u8; index_size as usize];
    read_exact_at(file, index_offset, &mut index)?;
    let records = parse_index(&index, index_offset)?;

    let mut block_offsets = Vec::with_capacity(records.len().saturating_add(1));
    let mut data_offsets = Vec::with_capacity(records.len().saturating_add(1));
    let (mut at, mut data) = (HEADER_SIZE, 0u64);
    for (i, r) in records.iter().enumerate() {
        block_offsets.push(at);
        data_offsets.push(data);
        let next = at.checked_add(r.total_size()).filter(|&n| n <= index_offset);
        let Some(next) = next else {
            return Err(corrupt(
                index_offset,
                "Unpadded Size",
                format!("block {i} runs past the index"),
            ));
        };
        // The block header, read and checked where the index says the block is.
        let mut head = [0u8; 1024];
        let head_len = (r.total_size()).min(1024) as usize;
        let head = head.get_mut(..head_len).unwrap_or(&mut []);
        read_exact_at(file, at, head)?;
        check_block_header(head, at, r)?;
        at = next;
        data = data
            .checked_add(r.uncompressed_size)
            .filter(|&d| d <= VLI_MAX)
            .ok_or_else(|| {
                corrupt(
                    index_offset,
                    "Uncompressed Size",
                    "the blocks add up to more than 2^63 − 1",
                )
            })?;
    }
    if at != index_offset {
        return Err(corrupt(
            at,
            "Index",
            format!("the blocks end at byte {at}, but the index starts at {index_offset}"),
        ));
    }
    block_offsets.push(at);
    data_offsets.push(data);
    Ok(StreamIndex {
        records,
        block_offsets,
        data_offsets,
        index_offset,
    })
}

/// Parses an Index (§4) of exactly `index.len()` bytes found at `at`.
fn parse_index(index: &[u8], at: u64) -> Result<Vec<IndexRecord>, XzBlocksError> {
    let off = |o: usize| at.saturating_add(o as u64);
    if index.first() != Some(&0) {
        return Err(corrupt(at, "Index Indicator", "not 0x00"));
    }
    let (body, sum) = index.split_at(index.len().saturating_sub(4));
    if crc32(body) != u32::from_le_bytes(sum.try_into().unwrap_or([0; 4])) {
        return Err(corrupt(
            off(body.len()),
            "Index CRC32",
            "does not match the index",
        ));
    }
    let (count, mut pos) = read_vli(body, 1, at)?;
    // Each record takes at least two bytes: bound the count before allocating.
    if count > (body.len() as u64) / 2 {
        return Err(corrupt(
            off(1),
            "Number of Records",
            format!("{count} records cannot fit in {} bytes", body.len()),
        ));
    }
    pos = pos.saturating_add(1);
    let mut records = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (unpadded_size, n) = read_vli(body, pos, at)?;
        pos = pos.saturating_add(n);
        let (uncompressed_size, n) = read_vli(body, pos, at)?;
        pos = pos.saturating_add(n);
        let r = IndexRecord {
            unpadded_size,
            uncompressed_size,
        };
        check_record(&r, i).map_err(|e| match e {
            XzBlocksError::Corrupt { field, detail, .. } => corrupt(off(pos), field, detail),
            other => other,
        })?;
        records.push(r);
    }
    let padding = body.get(pos..).unwrap_or(&[]);
    if padding.len() > 3 || padding.iter().any(|&b| b != 0) || round4(pos as u64) != body.len() as u64 {
        return Err(corrupt(
            off(pos),
            "Index Padding",
            "not 0–3 zero bytes up to the CRC32",
        ));
    }
    Ok(records)
}

fn check_record(r: &IndexRecord, i: u64) -> Result<(), XzBlocksError> {
    if !(UNPADDED_SIZE_MIN..=UNPADDED_SIZE_MAX).contains(&r.unpadded_size) {
        return Err(corrupt(
            0,
            "Unpadded Size",
            format!("block {i}: {} is out of range", r.unpadded_size),
        ));
    }
    if r.uncompressed_size > VLI_MAX {
        return Err(corrupt(
            0,
            "Uncompressed Size",
            format!("block {i}: {} is out of range", r.uncompressed_size),
        ));
    }
    Ok(())
}

/// Reads a VLI (§1.2) at `bytes[pos..]`: at most 9 bytes, the last without bit 7, no
/// trailing zero byte; returns the value and its length.
fn read_vli(bytes: &[u8], pos: usize, at: u64) -> Result<(u64, usize), XzBlocksError> {
    let here = at.saturating_add(pos as u64);
    let mut value = 0u64;
    for (i, shift) in (0..9usize).zip((0..63u32).step_by(7)) {
        let b = *pos
            .checked_add(i)
            .and_then(|p| bytes.get(p))
            .ok_or_else(|| corrupt(here, "VLI", "truncated"))?;
        // Nine 7-bit groups: bits 0..=62, so a VLI never exceeds 2^63 − 1.
        value |= u64::from(b & 0x7F).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(corrupt(here, "VLI", "not minimally encoded"));
            }
            return Ok((value, i.saturating_add(1)));
        }
    }
    Err(corrupt(here, "VLI", "longer than 9 bytes"))
}

fn write_vli(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn round4(n: u64) -> u64 {
    n.saturating_add(3) & !3
}

fn read_exact_at<R: Read + Seek>(file: &mut R, at: u64, buf: &mut [u8]) -> Result<(), XzBlocksError> {
    file.seek(SeekFrom::Start(at)).map_err(XzBlocksError::Read)?;
    file.read_exact(buf).map_err(XzBlocksError::Read)
}

/// Why a block or stream could not be made or read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum XzBlocksError {
    #[error("xz level {level} is out of range")]
    #[diagnostic(
        code(w4b::xz_blocks::invalid_level),
        help("use a level from 0 to 9 in `output.compression`")
    )]
    InvalidLevel { level: u32 },

    #[error("an empty span cannot be an xz block")]
    #[diagnostic(
        code(w4b::xz_blocks::empty_span),
        help("leave empty spans out of the stream: they decode to nothing")
    )]
    EmptySpan,

    #[error("an xz index cannot list {count} blocks")]
    #[diagnostic(
        code(w4b::xz_blocks::too_many_blocks),
        help("the index is limited to 16 GiB by its Backward Size field; use larger spans")
    )]
    TooManyBlocks { count: u64 },

    #[error("xz compression failed")]
    #[diagnostic(
        code(w4b::xz_blocks::encode),
        help("this is a problem in liblzma or out of memory; a lower preset needs less memory")
    )]
    Encode(#[source] io::Error),

    #[error("writing the xz stream failed")]
    #[diagnostic(
        code(w4b::xz_blocks::write),
        help("check the free space where the output goes")
    )]
    Write(#[source] io::Error),

    #[error("reading the xz file failed")]
    #[diagnostic(
        code(w4b::xz_blocks::read),
        help("check that the file exists and is readable; a short file is a truncated download")
    )]
    Read(#[source] io::Error),

    #[error("corrupt xz data at byte {offset}, `{field}`: {detail}")]
    #[diagnostic(
        code(w4b::xz_blocks::corrupt),
        help("the file is damaged or truncated; fetch or build it again")
    )]
    Corrupt {
        offset: u64,
        field: &'static str,
        detail: String,
    },

    #[error("unsupported xz data at byte {offset}, `{field}`: {detail}")]
    #[diagnostic(
        code(w4b::xz_blocks::unsupported),
        help("w4b reads single .xz streams with CRC64 checks, as it writes them; `xz -d` reads the rest")
    )]
    Unsupported {
        offset: u64,
        field: &'static str,
        detail: String,
    },
}

fn corrupt(offset: u64, field: &'static str, detail: impl Into<String>) -> XzBlocksError {
    XzBlocksError::Corrupt {
        offset,
        field,
        detail: detail.into(),
    }
}

fn unsupported(offset: u64, field: &'static str, detail: impl Into<String>) -> XzBlocksError {
    XzBlocksError::Unsupported {
        offset,
        field,
        detail: detail.into(),
    }
}

#[cfg(test)]
#[path = "xz_blocks_tests.rs"]
mod tests;
