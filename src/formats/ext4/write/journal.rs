//! The jbd2 journal superblock of a freshly made, clean journal.
//!
//! Kernel documentation, §"Journal (jbd2)": all fields big-endian. The first journal
//! block holds `journal_superblock_t`: header (`h_magic = 0xC03B3998`, `h_blocktype = 4`
//! for a v2 superblock, `h_sequence = 0`), `s_blocksize`, `s_maxlen` (journal blocks),
//! `s_first = 1`, `s_sequence = 1`, `s_start = 0` (nothing to replay: clean),
//! `s_uuid` = the filesystem UUID, `s_nr_users = 1`. Every other journal block is zero.
//!
//! Like `mke2fs`, the writer sets no journal feature: the kernel turns on `64bit` and
//! `csum_v3` itself when it mounts a `64bit`/`metadata_csum` filesystem, and a journal
//! without `csum_v2/v3` carries no superblock checksum.

/// `JBD2_MAGIC_NUMBER`.
const JBD2_MAGIC: u32 = 0xC03B_3998;
/// `JBD2_SUPERBLOCK_V2`.
const SUPERBLOCK_V2: u32 = 4;

/// The first block of a clean journal of `blocks` blocks.
pub fn superblock(block_size: u32, blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; block_size as usize];
    let mut put = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put(0x00, JBD2_MAGIC); // h_magic
    put(0x04, SUPERBLOCK_V2); // h_blocktype
    put(0x0C, block_size); // s_blocksize
    put(0x10, blocks); // s_maxlen
    put(0x14, 1); // s_first
    put(0x18, 1); // s_sequence
    put(0x40, 1); // s_nr_users
    b[0x30..0x40].copy_from_slice(uuid); // s_uuid
    b
}

/// `ext2fs_default_journal_size`: journal blocks for a filesystem of `blocks` 4 KiB blocks.
pub fn default_blocks(blocks: u64) -> u32 {
    match blocks {
        0..=2047 => 0,
        2048..=32767 => 1024,
        32768..=262_143 => 4096,
        262_144..=524_287 => 8192,
        524_288..=4_194_303 => 16384,
        4_194_304..=8_388_607 => 32768,
        8_388_608..=16_777_215 => 65536,
        16_777_216..=33_554_431 => 131_072,
        _ => 262_144,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_fresh_mke2fs_journal() {
        let b = superblock(4096, 4096, &[0xAB; 16]);
        assert_eq!(&b[0..8], &[0xC0, 0x3B, 0x39, 0x98, 0, 0, 0, 4]);
        assert_eq!(&b[0x10..0x1C], &[0, 0, 0x10, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(b[0x43], 1);
    }

    #[test]
    fn default_sizes() {
        assert_eq!(default_blocks(65536), 4096);
        assert_eq!(default_blocks(1 << 20), 16384);
    }
}
