//! ext4: the Linux root filesystem of Raspberry Pi images, written and read in-process.

pub mod write;
