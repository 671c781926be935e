//! Chunk indexes: a large output stored as an ordered list of chunk blobs.
//!
//! A disk-sized output (a filesystem image, the disk, the compressed image) is cut into
//! chunks of [`CHUNK_SIZE`] aligned to its start; each chunk is an ordinary blob, shared by
//! every output that has the same bytes there. The [`ChunkIndex`] lists them in order and
//! is stored in its own namespace, `v1/indexes/<2 hex>/<64 hex>`, under a **keyed** BLAKE3
//! of its bytes ([`INDEX_CONTEXT`]): a digest names either a blob (plain BLAKE3) or an
//! index (keyed), never both, so an index can never be mistaken for a file that happens to
//! look like one, and a reader never assembles the wrong bytes. The index name is the
//! output's identity (a Merkle root over its chunks); records name it like any blob.
//!
//! Chunks of zeros are named by their real BLAKE3 ([`zero_digest`]) but never stored:
//! readers produce them without I/O, so a sparse image costs its data.
//!
//! The binary format (all integers little-endian; `docs/cache-format.md`, "Chunk indexes",
//! pinned by the golden vector in the tests below):
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 8 | `magic` | `W4BIDX\0\x01` (the last byte is the format version) |
//! | 8 | 4 | `flags` | bit 0: flat BLAKE3 present; bit 1: flat SHA-256 present; bit 2: the last entry is a trailer; other bits must be 0 |
//! | 12 | 4 | `chunk_size` | nominal chunk length; 0 = variable (frame lists) |
//! | 16 | 8 | `total_len` | logical length = Σ `len` |
//! | 24 | 8 | `count` | number of entries |
//! | 32 | 32 | `flat_blake3` | BLAKE3 of the whole flat content, if bit 0 |
//! | … | 32 | `flat_sha256` | SHA-256 of the whole flat content, if bit 1 |
//! | … | 36 × `count` | entries | `digest` (32, BLAKE3 of the chunk) ‖ `len` (u32, ≥ 1) |
//!
//! With `chunk_size` ≠ 0 every data entry (all but a trailer) has `len == chunk_size`
//! except the last, which has `1 ..= chunk_size`. Nothing may follow the last entry. These
//! rules make the encoding canonical: whatever decodes re-encodes to the same bytes, so
//! one output has exactly one index name.

#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use crate::error::CacheError;
use crate::Digest;

/// The nominal chunk length of chunked outputs: 1 MiB (issue 12 design §1.1: at 4 MiB a
/// one-file change costs up to 20 MiB of new chunks; below 1 MiB the index of a 2 GiB
/// disk grows past 2,048 entries and the compression ratio of per-chunk frames suffers).
pub const CHUNK_SIZE: u32 = 1 << 20;

/// The `derive_key` context that names an index: BLAKE3 keyed by this string, over the
/// index's encoded bytes.
pub const INDEX_CONTEXT: &str = "w4b-cache chunk index v1";

/// The first eight bytes of every index; the last one is the format version.
pub const INDEX_MAGIC: [u8; 8] = *b"W4BIDX\0\x01";

const FLAG_BLAKE3: u32 = 1;
const FLAG_SHA256: u32 = 1 << 1;
const FLAG_TRAILER: u32 = 1 << 2;
const KNOWN_FLAGS: u32 = FLAG_BLAKE3 | FLAG_SHA256 | FLAG_TRAILER;
const HEADER_LEN: usize = 32;
const ENTRY_LEN: usize = 36;

/// One entry of an index: a chunk blob and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRef {
    pub digest: Digest,
    pub len: u32,
}

impl ChunkRef {
    /// Whether this is the all-zero chunk of its length (never stored, read as zeros).
    pub fn is_zero(&self) -> bool {
        self.digest == zero_digest(self.len)
    }
}

/// Digests of the whole output as one flat byte stream, carried where someone reads
/// them (the compressed image's manifest entry); `None` when not computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlatDigests {
    pub blake3: Option<[u8; 32]>,
    pub sha256: Option<[u8; 32]>,
}

/// The decoded form of an index; see the module docs for the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkIndex {
    /// Nominal length of every chunk but the last; 0 for variable-length entries.
    pub chunk_size: u32,
    pub chunks: Vec<ChunkRef>,
    /// The last entry is a trailer (a seek table, an xz index) rather than data of the
    /// nominal size; it still counts in the logical length.
    pub trailer: bool,
    pub flat: FlatDigests,
}

/// The BLAKE3 of `len` zero bytes, computed once per length and process: readers ask it
/// of every entry they serve, and a frame list has entries of many lengths.
pub fn zero_digest(len: u32) -> Digest {
    static FULL: OnceLock<Digest> = OnceLock::new();
    static OTHERS: Mutex<BTreeMap<u32, Digest>> = Mutex::new(BTreeMap::new());
    if len == CHUNK_SIZE {
        return *FULL.get_or_init(|| hash_zeros(CHUNK_SIZE));
    }
    if let Some(d) = OTHERS.lock().ok().and_then(|m| m.get(&len).copied()) {
        return d;
    }
    let d = hash_zeros(len);
    if let Ok(mut m) = OTHERS.lock() {
        // Bounded: an index has at most a few thousand distinct lengths.
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(len, d);
    }
    d
}

fn hash_zeros(len: u32) -> Digest {
    const ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];
    let mut h = blake3::Hasher::new();
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(ZEROS.len());
        h.update(ZEROS.get(..n).unwrap_or_default());
        left = left.saturating_sub(n);
    }
    h.finalize().into()
}

fn corrupt(offset: usize, field: &'static str, problem: String) -> CacheError {
    CacheError::IndexFormat {
        offset: offset as u64,
        field,
        problem,
    }
}

/// A little-endian cursor over untrusted bytes; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CacheError> {
        let end = self.at.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.at..end).map(|s| (s, end))) {
            Some((s, end)) => {
                self.at = end;
                Ok(s)
            }
            None => Err(corrupt(
                self.at,
                field,
                format!(
                    "the index ends after {} bytes; `{field}` needs {n} more",
                    self.bytes.len()
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CacheError> {
        let s = self.take(N, field)?;
        s.try_into()
            .map_err(|_| corrupt(self.at, field, "short read".into()))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CacheError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, CacheError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
}

impl ChunkIndex {
    /// A fixed-size index of `chunks` (no trailer, no flat digests).
    pub fn fixed(chunks: Vec<ChunkRef>) -> ChunkIndex {
        ChunkIndex {
            chunk_size: CHUNK_SIZE,
            chunks,
            trailer: false,
            flat: FlatDigests::default(),
        }
    }

    /// The logical length: the sum of the entries' lengths.
    pub fn total_len(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// The entries that hold data (all but a trailer).
    fn data_len(&self) -> usize {
        match self.trailer {
            true => self.chunks.len().saturating_sub(1),
            false => self.chunks.len(),
        }
    }

    /// The canonical bytes. Only meaningful for an index that satisfies the rules in the
    /// module docs ([`decode`](Self::decode) of the result checks them); the writers in
    /// this crate build only such indexes.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        let mut out = Vec::with_capacity(
            HEADER_LEN
                .saturating_add(64)
                .saturating_add(self.chunks.len().saturating_mul(ENTRY_LEN)),
        );
        if self.flat.blake3.is_some() {
            flags |= FLAG_BLAKE3;
        }
        if self.flat.sha256.is_some() {
            flags |= FLAG_SHA256;
        }
        if self.trailer {
            flags |= FLAG_TRAILER;
        }
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.total_len().to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for flat in [self.flat.blake3, self.flat.sha256].into_iter().flatten() {
            out.extend_from_slice(&flat);
        }
        for c in &self.chunks {
            out.extend_from_slice(c.digest.as_bytes());
            out.extend_from_slice(&c.len.to_le_bytes());
        }
        out
    }

    /// The index's name: BLAKE3 keyed by [`INDEX_CONTEXT`] over [`encode`](Self::encode).
    pub fn name(&self) -> Digest {
        name_of(&self.encode())
    }

    /// Parses and checks untrusted bytes. Every malformed input is an
    /// [`CacheError::IndexFormat`] naming the offset and field; a newer format version or
    /// flag is [`CacheError::IndexUnsupported`]. Never panics, and allocates no more than
    /// the input's length justifies.
    pub fn decode(bytes: &[u8]) -> Result<ChunkIndex, CacheError> {
        let mut cur = Cursor { bytes, at: 0 };
        let magic: [u8; 8] = cur.array("magic")?;
        if magic.get(..7) != INDEX_MAGIC.get(..7) {
            return Err(corrupt(
                0,
                "magic",
                format!("`{}` is not a chunk index magic", hex::encode(magic)),
            ));
        }
        if magic != INDEX_MAGIC {
            return Err(CacheError::IndexUnsupported {
                offset: 7,
                field: "magic",
                value: u64::from(magic[7]),
            });
        }
        let flags = cur.u32("flags")?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(CacheError::IndexUnsupported {
                offset: 8,
                field: "flags",
                value: u64::from(flags),
            });
        }
        let chunk_size = cur.u32("chunk_size")?;
        let total_len = cur.u64("total_len")?;
        let count = cur.u64("count")?;
        let mut flat = FlatDigests::default();
        if flags & FLAG_BLAKE3 != 0 {
            flat.blake3 = Some(cur.array("flat_blake3")?);
        }
        if flags & FLAG_SHA256 != 0 {
            flat.sha256 = Some(cur.array("flat_sha256")?);
        }
        let entries_at = cur.at;
        let rest = bytes.len().saturating_sub(entries_at);
        let expected = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(ENTRY_LEN))
            .filter(|&n| n == rest);
        let Some(_) = expected else {
            return Err(corrupt(
                24,
                "count",
                format!(
                    "{count} entries need {count} × {ENTRY_LEN} bytes, but {rest} bytes follow the header"
                ),
            ));
        };
        let trailer = flags & FLAG_TRAILER != 0;
        if trailer && count == 0 {
            return Err(corrupt(
                8,
                "flags",
                "a trailer is flagged but there are no entries".into(),
            ));
        }
        let mut chunks = Vec::with_capacity(rest / ENTRY_LEN);
        for _ in 0..count {
            let digest = Digest(cur.array("digest")?);
            let len = cur.u32("len")?;
            if len == 0 {
                return Err(corrupt(
                    cur.at.saturating_sub(4),
                    "len",
                    "a chunk is empty".into(),
                ));
            }
            chunks.push(ChunkRef { digest, len });
        }
        let idx = ChunkIndex {
            chunk_size,
            chunks,
            trailer,
            flat,
        };
        if chunk_size != 0 {
            let data = idx.chunks.get(..idx.data_len()).unwrap_or_default();
            let last = data.len().checked_sub(1);
            for (i, c) in data.iter().enumerate() {
                let ok = match Some(i) == last {
                    true => c.len <= chunk_size,
                    false => c.len == chunk_size,
                };
                if !ok {
                    let at = i
                        .saturating_mul(ENTRY_LEN)
                        .saturating_add(entries_at)
                        .saturating_add(32);
                    return Err(corrupt(
                        at,
                        "len",
                        format!(
                            "chunk {i} is {} bytes in an index of {chunk_size}-byte chunks",
                            c.len
                        ),
                    ));
                }
            }
        }
        let sum = idx
            .chunks
            .iter()
            .try_fold(0u64, |acc, c| acc.checked_add(u64::from(c.len)));
        if sum != Some(total_len) {
            return Err(corrupt(
                16,
                "total_len",
                format!("{total_len} is not the sum of the entries' lengths"),
            ));
        }
        Ok(idx)
    }

    /// The entry holding logical byte `offset` and the offset within it; `None` at or
    /// past the end. O(1) for fixed-size indexes, a scan for variable ones (frame lists
    /// are read sequentially).
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        if offset >= self.total_len() {
            return None;
        }
        if self.chunk_size != 0 {
            let size = u64::from(self.chunk_size);
            let i = usize::try_from(offset.checked_div(size)?).ok()?;
            let data = self.data_len();
            if let Some(c) = self.chunks.get(i).filter(|_| i < data) {
                let within = offset.checked_rem(size)?;
                if within < u64::from(c.len) {
                    return Some((i, within));
                }
            }
            // Past the data (`offset < total_len`): in the trailer.
            let data_len: u64 = self.chunks.iter().take(data).map(|c| u64::from(c.len)).sum();
            return Some((self.chunks.len().checked_sub(1)?, offset.checked_sub(data_len)?));
        }
        let mut start = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            let end = start.checked_add(u64::from(c.len))?;
            if offset < end {
                return Some((i, offset.checked_sub(start)?));
            }
            start = end;
        }
        None
    }

    /// The logical offset of each entry's first byte.
    pub fn starts(&self) -> Vec<u64> {
        let mut at = 0u64;
        self.chunks
            .iter()
            .map(|c| {
                let s = at;
                at = at.saturating_add(u64::from(c.len));
                s
            })
            .collect()
    }
}

/// The name of encoded index bytes.
pub(crate) fn name_of(bytes: &[u8]) -> Digest {
    Digest(blake3::derive_key(INDEX_CONTEXT, bytes))
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing
)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The index of the golden vector: two 4-byte chunks of `abcdef`, flat BLAKE3 set.
    pub(crate) fn golden() -> ChunkIndex {
        ChunkIndex {
            chunk_size: 4,
            chunks: vec![
                ChunkRef {
                    digest: Digest::of(b"abcd"),
                    len: 4,
                },
                ChunkRef {
                    digest: Digest::of(b"ef"),
                    len: 2,
                },
            ],
            trailer: false,
            flat: FlatDigests {
                blake3: Some(*Digest::of(b"abcdef").as_bytes()),
                sha256: None,
            },
        }
    }

    /// Pins the byte layout and the naming function (`docs/cache-format.md` quotes both).
    #[test]
    fn golden_vector() {
        let idx = golden();
        let bytes = idx.encode();
        let expected = concat!(
            "5734424944580001", // magic
            "01000000",         // flags: flat BLAKE3
            "04000000",         // chunk_size 4
            "0600000000000000", // total_len 6
            "0200000000000000", // count 2
        );
        let hex = hex::encode(&bytes);
        assert_eq!(&hex[..64], expected);
        assert_eq!(&hex[64..128], Digest::of(b"abcdef").to_hex());
        assert_eq!(&hex[128..192], Digest::of(b"abcd").to_hex());
        assert_eq!(&hex[192..200], "04000000");
        assert_eq!(&hex[200..264], Digest::of(b"ef").to_hex());
        assert_eq!(&hex[264..], "02000000");
        assert_eq!(bytes.len(), 32 + 32 + 2 * 36);
        assert_eq!(
            idx.name().to_hex(),
            "688ead1a786ada73afec8879456477760a197ea67d631312732904d9264c3c8f",
            "the index name is pinned"
        );
        assert_ne!(idx.name(), Digest::of(&bytes), "keyed, not the blob name");
        assert_eq!(ChunkIndex::decode(&bytes).unwrap(), idx);
    }

    /// The fuzz seeds are written by an independent encoder (`fuzz/make-seeds.sh`, from
    /// `docs/cache-format.md`): the decoder must accept them and re-encode them exactly.
    #[test]
    fn the_documented_format_written_elsewhere_decodes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/chunks");
        let mut seen = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            let idx = ChunkIndex::decode(&bytes).unwrap();
            assert_eq!(idx.encode(), bytes);
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn zero_digest_is_the_hash_of_zeros() {
        for len in [1u32, 4096, 16 * 1024 + 1, CHUNK_SIZE] {
            assert_eq!(zero_digest(len), Digest::of(&vec![0u8; len as usize]));
        }
        let z = ChunkRef {
            digest: zero_digest(7),
            len: 7,
        };
        assert!(z.is_zero());
        assert!(!ChunkRef { len: 8, ..z }.is_zero());
    }

    #[test]
    fn locate_fixed_variable_and_trailer() {
        let c = |len| ChunkRef {
            digest: Digest::of(b"x"),
            len,
        };
        let mut idx = ChunkIndex {
            chunk_size: 4,
            chunks: vec![c(4), c(4), c(2)],
            trailer: false,
            flat: FlatDigests::default(),
        };
        assert_eq!(idx.locate(0), Some((0, 0)));
        assert_eq!(idx.locate(5), Some((1, 1)));
        assert_eq!(idx.locate(9), Some((2, 1)));
        assert_eq!(idx.locate(10), None);
        idx.trailer = true;
        idx.chunks = vec![c(4), c(3), c(9)];
        ChunkIndex::decode(&idx.encode()).unwrap();
        assert_eq!(idx.locate(6), Some((1, 2)));
        assert_eq!(idx.locate(7), Some((2, 0)));
        assert_eq!(idx.locate(15), Some((2, 8)));
        assert_eq!(idx.locate(16), None);
        idx.chunk_size = 0;
        idx.chunks = vec![c(3), c(1), c(5)];
        assert_eq!(idx.locate(3), Some((1, 0)));
        assert_eq!(idx.locate(8), Some((2, 4)));
        assert_eq!(idx.locate(9), None);
        assert_eq!(idx.starts(), vec![0, 3, 4]);
    }

    #[test]
    fn malformed_indexes_are_errors_naming_the_field() {
        let good = golden().encode();
        let field = |b: &[u8]| match ChunkIndex::decode(b) {
            Err(CacheError::IndexFormat { field, .. }) => format!("corrupt {field}"),
            Err(CacheError::IndexUnsupported { field, .. }) => format!("unsupported {field}"),
            other => panic!("{other:?}"),
        };
        let with = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        assert_eq!(field(&with(0, b"X")), "corrupt magic");
        assert_eq!(field(&with(7, &[2])), "unsupported magic");
        assert_eq!(field(&with(8, &[9])), "unsupported flags");
        assert_eq!(
            field(&with(8, &[0])),
            "corrupt count",
            "no flat digest: lengths disagree"
        );
        assert_eq!(field(&with(12, &[3])), "corrupt len");
        assert!(
            ChunkIndex::decode(&with(12, &[0])).is_ok(),
            "chunk_size 0: variable lengths"
        );
        assert_eq!(field(&with(16, &[7])), "corrupt total_len");
        assert_eq!(field(&with(24, &[3])), "corrupt count");
        assert_eq!(field(&with(24, &[0xff; 8])), "corrupt count");
        assert_eq!(field(&with(132, &[0; 4])), "corrupt len");
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(field(&trailing), "corrupt count");
        let mut empty_trailer = golden();
        empty_trailer.chunks.clear();
        empty_trailer.trailer = true;
        empty_trailer.flat.blake3 = None;
        assert_eq!(field(&empty_trailer.encode()), "corrupt flags");
        // An empty output is a valid (empty) index.
        let empty = ChunkIndex::fixed(Vec::new());
        assert_eq!(ChunkIndex::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let good = golden().encode();
        for n in 0..good.len() {
            assert!(matches!(
                ChunkIndex::decode(&good[..n]),
                Err(CacheError::IndexFormat { .. })
            ));
        }
    }

    fn arb_index() -> impl Strategy<Value = ChunkIndex> {
        (
            prop_oneof![Just(0u32), Just(4u32), Just(CHUNK_SIZE)],
            proptest::collection::vec((any::<[u8; 32]>(), 1u32..10), 0..20),
            any::<bool>(),
            any::<Option<[u8; 32]>>(),
            any::<Option<[u8; 32]>>(),
        )
            .prop_map(|(chunk_size, raw, trailer, b3, sha)| {
                let n = raw.len();
                let chunks = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, (d, len))| {
                        let data = if trailer { n.saturating_sub(1) } else { n };
                        let len = match (chunk_size, i + 1 < data) {
                            (0, _) => len,
                            (s, true) => s,
                            (s, false) if i < data => len.min(s),
                            (_, false) => len,
                        };
                        ChunkRef {
                            digest: Digest(d),
                            len,
                        }
                    })
                    .collect();
                ChunkIndex {
                    chunk_size,
                    chunks,
                    trailer: trailer && n > 0,
                    flat: FlatDigests {
                        blake3: b3,
                        sha256: sha,
                    },
                }
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(idx in arb_index()) {
            let bytes = idx.encode();
            let back = ChunkIndex::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &idx);
            prop_assert_eq!(back.encode(), bytes);
            let total = idx.total_len();
            let starts = idx.starts();
            for probe in [0, total / 2, total.saturating_sub(1)] {
                if let Some((i, within)) = idx.locate(probe) {
                    prop_assert_eq!(starts[i] + within, probe);
                    prop_assert!(within < u64::from(idx.chunks[i].len));
                }
            }
        }

        #[test]
        fn garbage_never_panics_and_what_decodes_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(idx) = ChunkIndex::decode(&bytes) {
                prop_assert_eq!(idx.encode(), bytes);
            }
        }

        #[test]
        fn mutated_indexes_never_panic(at in 0usize..136, v in any::<u8>()) {
            let mut bytes = golden().encode();
            bytes[at] ^= v;
            if let Ok(idx) = ChunkIndex::decode(&bytes) {
                prop_assert_eq!(idx.encode(), bytes);
            }
        }
    }
}
