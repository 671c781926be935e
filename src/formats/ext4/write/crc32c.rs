//! CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`) in the form ext4 and e2fsprogs
//! use it: a running value is passed in and returned **without** the final inversion, so
//! `update(!0, bytes)` is the bitwise complement of the textbook CRC-32C. Every ext4
//! metadata checksum chains calls of this function (seed, then fields, then the structure).
//!
//! A table-driven byte-at-a-time loop: checksummed metadata is a small fraction of an image
//! (file data carries no checksum), so a slicing or SIMD variant would not pay for itself.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// One table entry per byte value, computed at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Continues the running CRC `crc` over `bytes` (no pre- or post-inversion).
pub fn update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        // The CRC-32C catalogue check value for "123456789" is 0xE3069283 (with the usual
        // initial and final inversion, which `update` leaves to the caller).
        assert_eq!(!update(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn chaining_equals_one_pass() {
        let a = update(update(!0, b"1234"), b"56789");
        assert_eq!(a, update(!0, b"123456789"));
    }
}
