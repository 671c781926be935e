//! A file's stamp — `size, mtime, ctime, inode` — and the "racily clean" rule: what lets
//! the stat cache of input files ([`crate::inputs`]) and the cache of parsed definition
//! files ([`crate::defs::parse_cache`]) trust what they recorded about a file without
//! reading it.
//!
//! A recorded stamp vouches for a file only while all four fields match, and never when
//! the file changed less than [`RACY_WINDOW_NS`] before the cache was saved: a write in
//! the same timestamp tick as the one recorded would leave the stamp unchanged (git calls
//! such entries "racily clean"). This module depends on no other w4b module.

use std::fs;
use std::os::unix::fs::MetadataExt;

/// Files modified within this window before a cache was saved are read again next time.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// What identifies a file's contents without reading them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
}

impl Stamp {
    /// Bytes of [`Stamp::to_bytes`]: `size: u64, mtime_ns: i64, ctime_ns: i64, ino: u64`,
    /// little-endian, the layout both caches store.
    pub const LEN: usize = 32;

    pub fn of(m: &fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Stamp {
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        }
    }

    /// Whether `recorded`, saved in a cache at `saved_at_ns` (by the filesystem's clock),
    /// still vouches for the file whose stamp is now `self`: the same stamp, and not
    /// changed within [`RACY_WINDOW_NS`] before the save.
    pub fn vouched_by(&self, recorded: &Stamp, saved_at_ns: i64) -> bool {
        self == recorded && recorded.mtime_ns < saved_at_ns.saturating_sub(RACY_WINDOW_NS)
    }

    pub fn to_bytes(&self) -> [u8; Stamp::LEN] {
        let mut out = [0u8; Stamp::LEN];
        out[..8].copy_from_slice(&self.size.to_le_bytes());
        out[8..16].copy_from_slice(&self.mtime_ns.to_le_bytes());
        out[16..24].copy_from_slice(&self.ctime_ns.to_le_bytes());
        out[24..].copy_from_slice(&self.ino.to_le_bytes());
        out
    }

    /// The stamp [`Stamp::to_bytes`] wrote; `None` unless `bytes` is [`Stamp::LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Stamp> {
        let bytes: &[u8; Stamp::LEN] = bytes.try_into().ok()?;
        let (size, rest) = bytes.split_first_chunk::<8>()?;
        let (mtime, rest) = rest.split_first_chunk::<8>()?;
        let (ctime, ino) = rest.split_first_chunk::<8>()?;
        Some(Stamp {
            size: u64::from_le_bytes(*size),
            mtime_ns: i64::from_le_bytes(*mtime),
            ctime_ns: i64::from_le_bytes(*ctime),
            ino: u64::from_le_bytes(ino.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        size: 12,
        mtime_ns: 1_000,
        ctime_ns: 1_001,
        ino: 42,
    };

    #[test]
    fn a_stamp_vouches_only_when_equal_and_older_than_the_racy_window() {
        let saved = 1_000 + RACY_WINDOW_NS + 1;
        assert!(S.vouched_by(&S, saved));
        // Changed within the window before the save: a same-tick write could hide.
        assert!(!S.vouched_by(&S, saved - 1));
        for other in [
            Stamp { size: 13, ..S },
            Stamp { mtime_ns: 999, ..S },
            Stamp { ctime_ns: 1_002, ..S },
            Stamp { ino: 43, ..S },
        ] {
            assert!(!other.vouched_by(&S, saved), "{other:?}");
        }
    }

    #[test]
    fn the_stored_layout_is_four_little_endian_words() {
        let b = S.to_bytes();
        assert_eq!(b[..8], 12u64.to_le_bytes());
        assert_eq!(b[8..16], 1_000i64.to_le_bytes());
        assert_eq!(b[16..24], 1_001i64.to_le_bytes());
        assert_eq!(b[24..], 42u64.to_le_bytes());
        assert_eq!(Stamp::from_bytes(&b), Some(S));
        assert_eq!(Stamp::from_bytes(&b[1..]), None);
    }

    #[test]
    fn of_reads_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let m = std::fs::metadata(&path).unwrap();
        let s = Stamp::of(&m);
        assert_eq!(s.size, 5);
        assert_eq!(s.ino, m.ino());
        assert_eq!(s.mtime_ns, m.mtime() * 1_000_000_000 + m.mtime_nsec());
    }
}
