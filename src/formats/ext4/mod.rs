//! ext4: the Raspberry Pi OS root filesystem, read (and written) in-process.
//!
//! Each on-disk structure has its own file with a lossless `decode`/`encode` pair and the
//! kernel's field names ([`superblock`], [`group`], [`inode`], [`extent`], [`dir`],
//! [`xattr`]); [`csum`] holds the metadata checksums and [`spec`] the shared constants.
//! [`read`] turns an image into [`crate::formats::fs::Node`]s and file readers.

pub mod csum;
pub mod group;
pub mod inode;
pub mod spec;
pub mod superblock;
