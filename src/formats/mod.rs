//! On-disk and archive formats, written and read in-process: bytes in, bytes out.
//!
//! Nothing here depends on another w4b module. Each format exchanges entries through its
//! own small types over `std::io` traits and takes times, sizes and IDs as explicit inputs,
//! so the same inputs always produce the same bytes; `src/tree/` adapts trees to them.

#![forbid(unsafe_code)]

pub mod bmap;
pub mod compress;
pub mod cpio;
pub mod crc;
pub mod deb;
pub mod ext4;
pub mod fat;
pub mod fs;
pub mod gpt;
pub mod io;
pub mod kmod;
pub mod mbr;
pub mod partition;
pub mod placement;
pub mod tar;
pub mod xz;
pub mod xz_blocks;
pub mod zstd_frames;
