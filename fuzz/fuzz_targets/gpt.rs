//! The GPT reader (primary and backup headers, entry arrays, the protective MBR): the
//! input is a whole disk.
//!
//! LBA 0 is made a valid protective MBR — boot signature and an 0xEE first entry — so that
//! every input reaches the GPT reader; the other three MBR entries stay as given, which
//! keeps hybrid MBRs in play.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = data.to_vec();
    if disk.len() < 512 {
        disk.resize(512, 0);
    }
    disk[446 + 4] = 0xEE;
    disk[510] = 0x55;
    disk[511] = 0xAA;
    w4b_fuzz::partition::exercise(&disk);
});
