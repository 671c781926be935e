//! ext4: the Raspberry Pi OS root filesystem, read (and written) in-process.
//!
//! Each on-disk structure has its own file with a lossless `decode`/`encode` pair and the
//! kernel's field names ([`superblock`], [`group`], [`inode`], [`extent`], [`blockmap`],
//! [`dir`], [`xattr`]); [`csum`] holds the metadata checksums, [`spec`] the shared
//! constants and [`error`] the error type. [`read`] turns an image into
//! [`crate::formats::fs::Node`]s and file readers.

pub mod blockmap;
pub mod csum;
pub mod dir;
pub mod error;
pub mod extent;
pub mod group;
pub mod inode;
pub mod read;
pub mod spec;
pub mod superblock;
pub mod write;
pub mod xattr;

#[cfg(test)]
mod oracle;

pub use error::Ext4Error;
pub use read::{content_id, content_inode, Ext4, FileReader, FileRef, WalkEntry};
