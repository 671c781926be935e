//! File names in FAT: the 11-byte 8.3 short name every entry has, and the VFAT long name
//! (UTF-16 in `LDIR_*` entries before it) that carries any other name.
//!
//! Short names (fatgen103 §6.1 "File Names"): 8 name bytes and 3 extension bytes, padded
//! with spaces, upper case, from the set `A–Z 0–9 ! # $ % & ' ( ) - @ ^ _ ` { } ~`. A name
//! that is exactly such a name (`KERNEL8.IMG`) is stored alone; every other name gets a
//! long name plus a *generated* short name (the "basis-name generation algorithm" of
//! fatgen103 §7): upper-case it, drop spaces and leading periods, replace characters that
//! are not allowed by `_`, keep up to 8 + 3 characters around the last period, and add a
//! numeric tail `~N` when anything was lost or the name collides with one already taken in
//! the directory. Which names collide depends only on the directory's contents, and
//! callers process names in sorted order, so the result is deterministic.
//!
//! Long names (fatgen103 §7): up to 255 UTF-16 units, 13 per entry, the entries stored in
//! reverse order, the first stored one flagged `0x40`, each carrying the checksum of the
//! short name so that a reader can tell a long name that belongs to its short entry from
//! an orphan.

// Reading parses untrusted bytes: no unchecked arithmetic (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeSet;

/// Bytes besides `A–Z` and `0–9` allowed in a short name.
const SHORT_SPECIAL: &[u8] = b"!#$%&'()-@^_`{}~";

/// Characters never allowed in a long name (besides controls below 0x20); the Linux `vfat`
/// driver's list.
const LONG_FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

/// The longest long name, in UTF-16 units.
pub(crate) const MAX_LONG_UNITS: usize = 255;

/// UTF-16 units held by one long-name entry.
pub(crate) const UNITS_PER_ENTRY: usize = 13;

fn short_char_ok(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SHORT_SPECIAL.contains(&b)
}

/// `DIR_Name` for `name` if it already is a valid upper-case 8.3 name.
pub(crate) fn exact_short(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rsplit_once('.') {
        Some((base, ext)) => (base.as_bytes(), ext.as_bytes()),
        None => (name.as_bytes(), &[][..]),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || (name.contains('.') && ext.is_empty()) {
        return None;
    }
    if !base.iter().chain(ext).all(|&b| short_char_ok(b)) {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..][..ext.len()].copy_from_slice(ext);
    Some(out)
}

/// Why `name` cannot be a FAT long name, or its UTF-16 units.
pub(crate) fn long_units(name: &str) -> Result<Vec<u16>, &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("`.`, `..` and the empty name are reserved");
    }
    if let Some(c) = name
        .chars()
        .find(|c| (*c as u32) < 0x20 || LONG_FORBIDDEN.contains(c))
    {
        return Err(if (c as u32) < 0x20 {
            "control characters are not allowed"
        } else {
            "the characters \" * / : < > ? \\ | are not allowed"
        });
    }
    if name.ends_with('.') || name.ends_with(' ') {
        // Windows and the Linux driver strip these when looking a name up, so such a file
        // could never be opened by its name.
        return Err("a name may not end in a period or a space");
    }
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > MAX_LONG_UNITS {
        return Err("longer than 255 UTF-16 units");
    }
    Ok(units)
}

/// The basis name of fatgen103 §7: (name part ≤ 8, extension ≤ 3, whether a numeric tail
/// is required because characters were lost or truncated).
fn basis(name: &str) -> (Vec<u8>, Vec<u8>, bool) {
    let mut lossy = false;
    let trimmed = name.trim_start_matches('.');
    lossy |= trimmed.len() != name.len();
    let (base, ext) = trimmed.rsplit_once('.').unwrap_or((trimmed, ""));
    let mut convert = |part: &str, max: usize| -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for c in part.chars() {
            let b = match c {
                ' ' | '.' => {
                    lossy = true;
                    continue;
                }
                c if c.is_ascii() && short_char_ok(c.to_ascii_uppercase() as u8) => {
                    c.to_ascii_uppercase() as u8
                }
                _ => {
                    lossy = true;
                    b'_'
                }
            };
            out.push(b);
        }
        let truncated = out.len() > max;
        out.truncate(max);
        (out, truncated)
    };
    let (mut base, base_cut) = convert(base, 8);
    let (ext, ext_cut) = convert(ext, 3);
    if base.is_empty() {
        base.push(b'_');
        lossy = true;
    }
    (base, ext, lossy || base_cut || ext_cut)
}

/// Packs a name part, optional numeric tail and extension into `DIR_Name`.
fn pack(base: &[u8], tail: &[u8], ext: &[u8]) -> [u8; 11] {
    // A tail is `~1`..`~999999`: at most 7 bytes.
    let keep = base.len().min(8usize.saturating_sub(tail.len()));
    let mut out = [b' '; 11];
    out[..keep].copy_from_slice(&base[..keep]);
    out[keep..][..tail.len()].copy_from_slice(tail);
    out[8..][..ext.len()].copy_from_slice(ext);
    out
}

/// Generates the short name for a `name` that needs a long name, avoiding `used` (the
/// directory's short names so far, including every exact 8.3 name), and records it.
/// `None` only if all `~1`..`~999999` tails are taken, which a directory's 65 536-entry
/// limit rules out.
pub(crate) fn generate_short(name: &str, used: &mut BTreeSet<[u8; 11]>) -> Option<[u8; 11]> {
    let (base, ext, needs_tail) = basis(name);
    if !needs_tail {
        let plain = pack(&base, b"", &ext);
        if used.insert(plain) {
            return Some(plain);
        }
    }
    for n in 1..=999_999u32 {
        let candidate = pack(&base, format!("~{n}").as_bytes(), &ext);
        if used.insert(candidate) {
            return Some(candidate);
        }
    }
    None
}

/// The short-name checksum stored in every long-name entry (fatgen103 §7
/// `ChkSum`): rotate right by one, add the next byte, over all 11 bytes.
pub(crate) fn checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// A short name as text: `DIR_Name` trimmed, with `DIR_NTRes` lower-case flags applied
/// (0x08 name, 0x10 extension, as Windows NT writes for all-lower-case 8.3 names).
/// `Err` names what is wrong.
pub(crate) fn short_to_string(raw: &[u8; 11], nt_res: u8) -> Result<String, &'static str> {
    let mut name = *raw;
    if name[0] == 0x05 {
        // fatgen103 §6.1: 0x05 stands for a leading 0xE5 byte (a KANJI lead byte).
        name[0] = 0xE5;
    }
    if name.iter().any(|&b| !(0x20..0x7F).contains(&b)) {
        return Err("a short name without a long name has non-ASCII bytes (an OEM code page)");
    }
    if name.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err("a short name contains a path separator");
    }
    let trim = |part: &[u8]| {
        part.iter()
            .rposition(|&b| b != b' ')
            .map_or(&[][..], |last| &part[..=last])
            .to_vec()
    };
    let mut base = trim(&name[..8]);
    let mut ext = trim(&name[8..]);
    if base.is_empty() {
        return Err("the short name is blank");
    }
    if nt_res & 0x08 != 0 {
        base.make_ascii_lowercase();
    }
    if nt_res & 0x10 != 0 {
        ext.make_ascii_lowercase();
    }
    if !ext.is_empty() {
        base.push(b'.');
        base.extend_from_slice(&ext);
    }
    // Only ASCII bytes remain, so this cannot fail.
    String::from_utf8(base).map_err(|_| "the short name is not ASCII")
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // tests compute their own fixtures
mod tests {
    use super::*;

    fn s(x: &[u8; 11]) -> &str {
        std::str::from_utf8(x).unwrap()
    }

    #[test]
    fn exact_names_need_no_long_name() {
        assert_eq!(s(&exact_short("KERNEL8.IMG").unwrap()), "KERNEL8 IMG");
        assert_eq!(s(&exact_short("FIXUP4").unwrap()), "FIXUP4     ");
        assert_eq!(s(&exact_short("A~1.B").unwrap()), "A~1     B  ");
        for name in [
            "config.txt",
            "KERNEL89.IMGX",
            "ABCDEFGHI",
            "A.B.C",
            "A B",
            ".X",
            "X.",
            "A+B",
            "É",
        ] {
            assert_eq!(exact_short(name), None, "{name}");
        }
    }

    #[test]
    fn generated_names_follow_the_basis_algorithm() {
        let mut used = BTreeSet::new();
        let mut g = |n: &str| s(&generate_short(n, &mut used).unwrap()).to_owned();
        assert_eq!(g("config.txt"), "CONFIG  TXT");
        assert_eq!(g("Config.txt"), "CONFIG~1TXT");
        assert_eq!(g("CONFIG.txt"), "CONFIG~2TXT");
        assert_eq!(g("bcm2711-rpi-4-b.dtb"), "BCM271~1DTB");
        assert_eq!(g("bcm2711-rpi-400.dtb"), "BCM271~2DTB");
        assert_eq!(g(".bashrc"), "BASHRC~1   ");
        assert_eq!(g("a+b c.tar.gz"), "A_BCTA~1GZ ");
        assert_eq!(g("ünïcode"), "_N_COD~1   ");
        assert_eq!(g("x.jpeg"), "X~1     JPE");
        assert_eq!(g("日本"), "__~1       ");
    }

    #[test]
    fn tails_grow_into_the_name_part() {
        let mut used = BTreeSet::new();
        for _ in 0..9 {
            generate_short("longfilename.txt", &mut used).unwrap();
        }
        let tenth = generate_short("longfilename.txt", &mut used).unwrap();
        assert_eq!(s(&tenth), "LONGF~10TXT");
    }

    #[test]
    fn checksum_matches_the_spec_example() {
        // Checked against a directory written by mtools: "CONFIG  TXT".
        let sum = checksum(b"CONFIG  TXT");
        let mut manual = 0u8;
        for &b in b"CONFIG  TXT" {
            manual = (if manual & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(manual >> 1)
                .wrapping_add(b);
        }
        assert_eq!(sum, manual);
    }

    #[test]
    fn long_name_rules() {
        assert!(long_units("bcm2711-rpi-4-b.dtb").is_ok());
        assert_eq!(long_units("ü").unwrap(), vec![0xFC]);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a\u{1}",
            "end.",
            "end ",
            &"x".repeat(256),
        ] {
            assert!(long_units(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_names_read_back() {
        assert_eq!(short_to_string(b"CONFIG  TXT", 0).unwrap(), "CONFIG.TXT");
        assert_eq!(short_to_string(b"CONFIG  TXT", 0x18).unwrap(), "config.txt");
        assert_eq!(short_to_string(b"README     ", 0x08).unwrap(), "readme");
        assert!(short_to_string(b"        TXT", 0).is_err());
        assert!(short_to_string(b"\x05BC        ", 0).is_err());
    }
}
