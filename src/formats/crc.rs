//! Table-driven reflected CRCs, the one building block of the checksums the formats use:
//! CRC-32 (IEEE: GPT headers, xz streams), CRC-32C (Castagnoli, ext4 `metadata_csum`) and CRC-16/ARC
//! (ext4 `gdt_csum`). Each is a reflected polynomial; the tables are built at compile time.

/// The byte-at-a-time lookup table for the reflected polynomial `poly`. A 16-bit CRC uses
/// its 16-bit polynomial here and the low 16 bits of each entry.
#[allow(
    clippy::cast_possible_truncation,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)] // Runs at compile time, where overflow or a bad index fails the build.
pub const fn reflected_table(poly: u32) -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ poly } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// Advances a reflected 32-bit CRC register over `bytes` (no initial or final inversion:
/// callers apply the convention of their format).
pub fn update32(table: &[u32; 256], mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        let idx = usize::from((crc as u8) ^ b);
        crc = table.get(idx).copied().unwrap_or(0) ^ (crc >> 8);
    }
    crc
}

const IEEE_TABLE: [u32; 256] = reflected_table(0xEDB8_8320);

/// CRC-32 (IEEE, reflected, inverted in and out) of `bytes`: GPT headers and entry arrays,
/// xz stream headers, footers and indexes.
pub fn crc32(bytes: &[u8]) -> u32 {
    !update32(&IEEE_TABLE, !0, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The catalogue's check value for each: the CRC of "123456789".
        let ieee = reflected_table(0xEDB8_8320);
        assert_eq!(!update32(&ieee, !0, b"123456789"), 0xCBF4_3926);
        let castagnoli = reflected_table(0x82F6_3B78);
        assert_eq!(!update32(&castagnoli, !0, b"123456789"), 0xE306_9283);
        let arc = reflected_table(0xA001);
        assert_eq!(update32(&arc, 0, b"123456789") & 0xFFFF, 0xBB3D);
    }
}
