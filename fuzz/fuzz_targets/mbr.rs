//! The MBR reader, with its chain of extended boot records: the input is a whole disk.
//!
//! A protective (0xEE) entry would send the read to the GPT reader, which the `gpt` target
//! covers; here such entries become FAT32 (0x0C) so that every input exercises the MBR.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut disk = data.to_vec();
    for slot in 0..4 {
        let at = 446 + 16 * slot + 4;
        if disk.get(at) == Some(&0xEE) {
            disk[at] = 0x0C;
        }
    }
    w4b_fuzz::partition::exercise(&disk);
});
