//! Block maps (`<name>.bmap`) in the bmaptool 2.0 format, so `bmaptool copy` writes only
//! the blocks of an image that hold data and checks each run of them on the way.
//!
//! A bmap is a small XML file: the image size, the block size (4096 here), the block
//! count, how many blocks are mapped, the checksum type (`sha256`), a checksum of the bmap
//! file itself, and a `<BlockMap>` of `<Range chksum="…">first-last</Range>` elements
//! (a single block is written as just its number), each with the SHA-256 of the image
//! bytes in that range; the last block may be short, and its checksum covers only the
//! bytes the image has.
//!
//! `BmapFileChecksum` is, as bmaptool checks it, the SHA-256 of the whole bmap file with
//! that element's value replaced by 64 ASCII `0`s: the file is rendered with zeros, hashed,
//! and the digest put in their place. bmaptool finds the value by its first occurrence in
//! the file, which is this element: nothing before it can hold 64 hex digits.
//!
//! bmaptool itself maps the blocks the filesystem has allocated (`SEEK_DATA`/`SEEK_HOLE`).
//! w4b instead maps every block that is not all zeros, found by reading the image: that
//! needs no platform calls, does not depend on the filesystem `--out` lives on, and for
//! w4b's images, which leave exactly their zero blocks as holes, gives the same map.
//! Leaving a zero block out is always safe for a fresh target only; like bmaptool's own
//! maps, a bmap says nothing about what the skipped blocks of the target contain.
//!
//! The whole map is rendered in memory (its size grows with the number of ranges, not
//! with the image) because the self-checksum sits before the ranges it covers.

use std::fmt::Write as _;
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest as _, Sha256};

use super::io::read_full;

/// The block size of every bmap w4b writes.
pub const BMAP_BLOCK_SIZE: u64 = 4096;

/// Bytes read at a time: a whole number of blocks.
const CHUNK: usize = 256 * BMAP_BLOCK_SIZE as usize;

/// One run of mapped blocks, inclusive at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    /// SHA-256 of the image bytes from `first * 4096` to the end of block `last`
    /// (or of the image, for a short last block).
    pub sha256: [u8; 32],
}

/// What [`write_bmap`] found and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapReport {
    pub image_size: u64,
    pub blocks: u64,
    pub mapped_blocks: u64,
    pub ranges: Vec<BmapRange>,
    /// The `BmapFileChecksum` written into the file.
    pub file_sha256: [u8; 32],
}

/// Why a bmap could not be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BmapError {
    #[error("cannot write a block map for an empty image")]
    #[diagnostic(
        code(w4b::bmap::empty_image),
        help("bmaptool refuses zero-sized images; check that the image step produced data")
    )]
    EmptyImage,

    #[error("reading the image for its block map failed")]
    #[diagnostic(code(w4b::bmap::read))]
    Read(#[source] io::Error),

    #[error("writing the block map failed")]
    #[diagnostic(code(w4b::bmap::write))]
    Write(#[source] io::Error),
}

/// Scans `image` from its start and writes its bmap to `out`.
pub fn write_bmap<R: Read + Seek, W: Write>(image: &mut R, out: &mut W) -> Result<BmapReport, BmapError> {
    let (image_size, ranges) = scan(image)?;
    write_bmap_ranges(image_size, ranges, out)
}

/// The runs of non-zero blocks in one chunk of an image, numbered from the chunk's first
/// block. A chunk starts on a block boundary (chunks are a whole number of blocks); only
/// the image's last chunk may end in a short block. Empty for an all-zero chunk.
///
/// A bmap assembled from per-chunk runs ([`write_bmap_ranges`]) has its ranges split at
/// chunk boundaries; bmaptool takes any ordered, non-overlapping range list, so the runs of
/// a chunk can be computed once and reused for every image that holds the chunk.
pub fn chunk_ranges(chunk: &[u8]) -> Vec<BmapRange> {
    // Scanned in place: no read buffer, no copy of the chunk.
    let mut runs = Runs::default();
    runs.feed(chunk);
    runs.finish()
}

/// Runs of non-zero blocks found in bytes fed in order, block-aligned except for the end.
#[derive(Default)]
struct Runs {
    ranges: Vec<BmapRange>,
    /// The run being hashed: its first block and the hash so far.
    open: Option<(u64, Sha256)>,
    /// The next block's number.
    block: u64,
}

impl Runs {
    /// Feeds the next bytes: whole blocks, except at the very end.
    fn feed(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(BMAP_BLOCK_SIZE as usize) {
            if is_zero(chunk) {
                if let Some((first, hasher)) = self.open.take() {
                    self.ranges.push(close(first, self.block - 1, hasher));
                }
            } else {
                let block = self.block;
                self.open
                    .get_or_insert_with(|| (block, Sha256::new()))
                    .1
                    .update(chunk);
            }
            self.block += 1;
        }
    }

    fn finish(mut self) -> Vec<BmapRange> {
        if let Some((first, hasher)) = self.open.take() {
            self.ranges.push(close(first, self.block - 1, hasher));
        }
        self.ranges
    }
}

/// Writes the bmap of an image of `image_size` bytes whose non-zero blocks are `ranges`
/// (absolute block numbers, ascending, not overlapping), as [`write_bmap`] would after
/// reading the image, except that runs may be split (at chunk boundaries).
pub fn write_bmap_ranges<W: Write>(
    image_size: u64,
    ranges: Vec<BmapRange>,
    out: &mut W,
) -> Result<BmapReport, BmapError> {
    if image_size == 0 {
        return Err(BmapError::EmptyImage);
    }
    let blocks = image_size.div_ceil(BMAP_BLOCK_SIZE);
    let mapped_blocks = ranges.iter().map(|r| r.last - r.first + 1).sum();
    let mut report = BmapReport {
        image_size,
        blocks,
        mapped_blocks,
        ranges,
        file_sha256: [0; 32],
    };
    let text = render(&mut report);
    out.write_all(text.as_bytes()).map_err(BmapError::Write)?;
    out.flush().map_err(BmapError::Write)?;
    Ok(report)
}

/// Reads the whole image once, returning its size and its runs of non-zero blocks.
fn scan<R: Read + Seek>(image: &mut R) -> Result<(u64, Vec<BmapRange>), BmapError> {
    image.seek(SeekFrom::Start(0)).map_err(BmapError::Read)?;
    let mut buf = vec![0u8; CHUNK];
    let mut runs = Runs::default();
    let mut size = 0u64;
    loop {
        let n = read_full(image, &mut buf).map_err(BmapError::Read)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        runs.feed(&buf[..n]);
        if n < buf.len() {
            // Short only at the end: `read_full` fills the buffer otherwise.
            break;
        }
    }
    if size == 0 {
        return Err(BmapError::EmptyImage);
    }
    Ok((size, runs.finish()))
}

fn close(first: u64, last: u64, hasher: Sha256) -> BmapRange {
    BmapRange {
        first,
        last,
        sha256: hasher.finalize().into(),
    }
}

fn is_zero(block: &[u8]) -> bool {
    // Word-wise compare; the tail (a short last block) byte-wise.
    let mut words = block.chunks_exact(8);
    words.all(|w| w == [0u8; 8]) && words.remainder().iter().all(|&b| b == 0)
}

/// Renders the bmap file and fills in `report.file_sha256`.
fn render(report: &mut BmapReport) -> String {
    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let mut s = String::new();
    // `write!` into a String cannot fail.
    let _ = write!(
        s,
        "<?xml version=\"1.0\" ?>\n\
         <!-- Block map written by w4b: bmaptool copy writes only the mapped blocks. -->\n\
         <bmap version=\"2.0\">\n\
         \x20   <ImageSize> {} </ImageSize>\n\
         \x20   <BlockSize> {} </BlockSize>\n\
         \x20   <BlocksCount> {} </BlocksCount>\n\
         \x20   <MappedBlocksCount> {} </MappedBlocksCount>\n\
         \x20   <ChecksumType> sha256 </ChecksumType>\n\
         \x20   <BmapFileChecksum> ",
        report.image_size, BMAP_BLOCK_SIZE, report.blocks, report.mapped_blocks
    );
    let checksum_at = s.len();
    s.push_str(ZEROS);
    s.push_str(" </BmapFileChecksum>\n    <BlockMap>\n");
    for r in &report.ranges {
        let sum = hex::encode(r.sha256);
        if r.first == r.last {
            let _ = writeln!(s, "        <Range chksum=\"{sum}\"> {} </Range>", r.first);
        } else {
            let _ = writeln!(
                s,
                "        <Range chksum=\"{sum}\"> {}-{} </Range>",
                r.first, r.last
            );
        }
    }
    s.push_str("    </BlockMap>\n</bmap>\n");
    let digest: [u8; 32] = Sha256::digest(s.as_bytes()).into();
    s.replace_range(checksum_at..checksum_at + ZEROS.len(), &hex::encode(digest));
    report.file_sha256 = digest;
    s
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // spawns the `bmaptool` oracle
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::process::Command;

    const B: usize = BMAP_BLOCK_SIZE as usize;

    fn bmap_of(image: &[u8]) -> (String, BmapReport) {
        let mut out = Vec::new();
        let report = write_bmap(&mut Cursor::new(image), &mut out).expect("bmap");
        (String::from_utf8(out).expect("utf-8"), report)
    }

    fn hex_sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Blocks 0-1 data, 2 zero, 3 data, 4-5 zero, then a short last block of data.
    fn small_image() -> Vec<u8> {
        let mut img = vec![0u8; 6 * B + 100];
        img[0] = 1;
        img[2 * B - 1] = 2;
        img[3 * B + 7] = 3;
        img[6 * B + 99] = 4;
        img
    }

    #[test]
    fn golden_file_for_a_small_image() {
        let img = small_image();
        let (text, report) = bmap_of(&img);
        let r1 = hex_sha(&img[..2 * B]);
        let r2 = hex_sha(&img[3 * B..4 * B]);
        let r3 = hex_sha(&img[6 * B..]);
        let expected_zeroed = format!(
            "<?xml version=\"1.0\" ?>\n\
<!-- Block map written by w4b: bmaptool copy writes only the mapped blocks. -->\n\
<bmap version=\"2.0\">\n    <ImageSize> 24676 </ImageSize>\n    <BlockSize> 4096 </BlockSize>\n    \
<BlocksCount> 7 </BlocksCount>\n    <MappedBlocksCount> 4 </MappedBlocksCount>\n    \
<ChecksumType> sha256 </ChecksumType>\n    <BmapFileChecksum> {} </BmapFileChecksum>\n    \
<BlockMap>\n        <Range chksum=\"{r1}\"> 0-1 </Range>\n        \
<Range chksum=\"{r2}\"> 3 </Range>\n        <Range chksum=\"{r3}\"> 6 </Range>\n    \
</BlockMap>\n</bmap>\n",
            "0".repeat(64)
        );
        let file_sum = hex_sha(expected_zeroed.as_bytes());
        assert_eq!(text, expected_zeroed.replace(&"0".repeat(64), &file_sum));
        assert_eq!(report.file_sha256.to_vec(), hex::decode(&file_sum).unwrap());
        assert_eq!((report.blocks, report.mapped_blocks), (7, 4));
    }

    #[test]
    fn all_zero_and_all_data_images() {
        let (text, report) = bmap_of(&vec![0u8; 3 * B]);
        assert_eq!((report.blocks, report.mapped_blocks), (3, 0));
        assert!(text.contains("<BlockMap>\n    </BlockMap>"));
        let (_, report) = bmap_of(&vec![7u8; 3 * B]);
        assert_eq!(report.ranges.len(), 1);
        assert_eq!((report.ranges[0].first, report.ranges[0].last), (0, 2));
    }

    #[test]
    fn empty_image_is_refused() {
        let err = write_bmap(&mut Cursor::new(Vec::new()), &mut Vec::new());
        assert!(matches!(err, Err(BmapError::EmptyImage)));
    }

    #[test]
    fn scans_from_the_start_whatever_the_position() {
        let img = small_image();
        let mut cur = Cursor::new(&img[..]);
        cur.set_position(5000);
        let report = write_bmap(&mut cur, &mut Vec::new()).expect("bmap");
        assert_eq!(report.image_size, img.len() as u64);
    }

    /// The real `bmaptool copy` accepts the map (including its self-checksum and every
    /// range checksum) and reproduces the image (bmap-tools, one of CI's oracles).
    #[test]
    fn bmaptool_copies_the_image_with_our_map() {
        crate::oracle::require!("bmaptool");
        let tool = "bmaptool";
        let dir = tempfile::tempdir().expect("tempdir");
        // Spans several read chunks, with runs crossing chunk boundaries.
        let mut img = vec![0u8; 3 * CHUNK + 5 * B + 17];
        for (i, b) in img.iter_mut().enumerate() {
            let block = i / B;
            if block.is_multiple_of(5) || (250..300).contains(&block) || block > 3 * 256 {
                *b = (i % 251) as u8 | 1;
            }
        }
        let image = dir.path().join("pi.img");
        let map = dir.path().join("pi.bmap");
        let dest = dir.path().join("dest.img");
        std::fs::write(&image, &img).expect("write");
        let mut out = Vec::new();
        write_bmap(&mut std::fs::File::open(&image).expect("open"), &mut out).expect("bmap");
        std::fs::write(&map, &out).expect("write");
        let run = |map: &std::path::Path| {
            Command::new(tool)
                .arg("copy")
                .arg("--bmap")
                .arg(map)
                .arg(&image)
                .arg(&dest)
                .output()
                .expect("running bmaptool")
        };
        let res = run(&map);
        assert!(
            res.status.success(),
            "bmaptool copy: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert!(std::fs::read(&dest).expect("read") == img);

        // A map whose self-checksum no longer matches is refused.
        let text = String::from_utf8(out).expect("utf-8");
        let tampered = text.replace("<BlockSize> 4096", "<BlockSize>  4096");
        let bad = dir.path().join("bad.bmap");
        std::fs::write(&bad, tampered).expect("write");
        let res = run(&bad);
        assert!(!res.status.success(), "bmaptool accepted a tampered bmap");
        assert!(
            String::from_utf8_lossy(&res.stderr).contains("checksum mismatch for bmap file"),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );

        // A corrupted mapped block fails its range checksum.
        let mut corrupt = img.clone();
        corrupt[5 * B + 1] ^= 0xff;
        std::fs::write(&image, &corrupt).expect("write");
        let res = run(&map);
        assert!(!res.status.success(), "bmaptool accepted a corrupted image");
        assert!(
            String::from_utf8_lossy(&res.stderr).contains("checksum mismatch for blocks range"),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
}
