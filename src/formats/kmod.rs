//! What a Linux kernel module (`.ko`, a 64-bit little-endian ELF relocatable file) says
//! about itself in its `.modinfo` section: NUL-separated `key=value` strings such as
//! `name=ext4`, `depends=mbcache,jbd2,crc16` and `softdep=pre: crc32c`.
//!
//! Debian's kernel packages ship no `modules.dep`: `depmod` writes it when the package
//! is installed. The pinned test kernel's initramfs (`crate::vmtest::test_kernel`) needs
//! the modules a few drivers depend on, so it reads `depends=` here, as `depmod` does.
//!
//! Only the ELF header fields that locate the section headers are read (ELF-64 Object
//! File Format, "ELF Header" and "Sections"): `e_ident` (+0, 16 bytes: `\x7fELF`, class 2
//! for 64-bit, data 1 for little-endian), `e_shoff` (+0x28, u64), `e_shentsize` (+0x3A,
//! u16), `e_shnum` (+0x3C, u16), `e_shstrndx` (+0x3E, u16); of each section header
//! `sh_name` (+0, u32, an offset into the section-name table), `sh_offset` (+0x18, u64) and
//! `sh_size` (+0x20, u64). Every offset is checked against the file's length.

/// Why a module's `.modinfo` could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KmodError {
    #[error("not a 64-bit little-endian ELF file")]
    Unsupported,
    #[error("corrupt ELF file: {0}")]
    Corrupt(&'static str),
    #[error("no `.modinfo` section")]
    NoModinfo,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The bytes of section `index`.
fn section(elf: &[u8], shoff: usize, shentsize: usize, index: usize) -> Result<(u32, &[u8]), KmodError> {
    let corrupt = KmodError::Corrupt;
    let h = index
        .checked_mul(shentsize)
        .and_then(|o| o.checked_add(shoff))
        .ok_or(corrupt("section header offset"))?;
    let name = u32_at(elf, h).ok_or(corrupt("section header past the end"))?;
    let offset = u64_at(elf, h + 0x18).ok_or(corrupt("section header past the end"))?;
    let size = u64_at(elf, h + 0x20).ok_or(corrupt("section header past the end"))?;
    let start = usize::try_from(offset).map_err(|_| corrupt("sh_offset"))?;
    let len = usize::try_from(size).map_err(|_| corrupt("sh_size"))?;
    let bytes = start
        .checked_add(len)
        .and_then(|end| elf.get(start..end))
        .ok_or(corrupt("section past the end of the file"))?;
    Ok((name, bytes))
}

/// The `key=value` strings of `elf`'s `.modinfo` section, in order.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, KmodError> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(KmodError::Unsupported);
    }
    let corrupt = KmodError::Corrupt;
    let shoff = u64_at(elf, 0x28).ok_or(corrupt("short header"))?;
    let shoff = usize::try_from(shoff).map_err(|_| corrupt("e_shoff"))?;
    let shentsize = usize::from(u16_at(elf, 0x3A).ok_or(corrupt("short header"))?);
    let shnum = usize::from(u16_at(elf, 0x3C).ok_or(corrupt("short header"))?);
    let shstrndx = usize::from(u16_at(elf, 0x3E).ok_or(corrupt("short header"))?);
    if shentsize < 0x28 {
        return Err(corrupt("e_shentsize"));
    }
    if shstrndx >= shnum {
        return Err(corrupt("e_shstrndx"));
    }
    let (_, names) = section(elf, shoff, shentsize, shstrndx)?;
    for i in 0..shnum {
        let (name, bytes) = section(elf, shoff, shentsize, i)?;
        let name = usize::try_from(name).map_err(|_| corrupt("sh_name"))?;
        let Some(rest) = names.get(name..) else {
            return Err(corrupt("sh_name past the name table"));
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] != b".modinfo" {
            continue;
        }
        return Ok(bytes
            .split(|&b| b == 0)
            .filter_map(|s| {
                let s = String::from_utf8_lossy(s);
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect());
    }
    Err(KmodError::NoModinfo)
}

/// The modules `elf` depends on (`depends=`), by name.
pub fn depends(elf: &[u8]) -> Result<Vec<String>, KmodError> {
    Ok(modinfo(elf)?
        .into_iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect())
}

/// A module's name from its file name: `kernel/fs/ext4/ext4.ko` → `ext4`,
/// `virtio-rng.ko.xz` → `virtio_rng` (the kernel treats `-` and `_` alike in names).
pub fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF-64 LE file with sections: null, `.modinfo`, `.shstrtab`.
    pub(crate) fn tiny_module(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        let modinfo_off = f.len();
        f.extend_from_slice(modinfo);
        let strtab_off = f.len();
        f.extend_from_slice(shstrtab);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        let headers = [
            sh(0, 0, 0),
            sh(1, modinfo_off, modinfo.len()),
            sh(10, strtab_off, shstrtab.len()),
        ];
        for h in headers {
            f.extend_from_slice(&h);
        }
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        f[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        f[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn depends_are_read_from_modinfo() {
        let m = tiny_module(b"license=GPL\0depends=mbcache,jbd2,crc16\0name=ext4\0");
        assert_eq!(depends(&m).unwrap(), ["mbcache", "jbd2", "crc16"]);
        let none = tiny_module(b"depends=\0name=crc16\0");
        assert!(depends(&none).unwrap().is_empty());
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            Some("virtio_rng".into())
        );
        assert_eq!(module_name("modules.dep"), None);
    }

    #[test]
    fn truncated_and_foreign_files_are_errors_not_panics() {
        let m = tiny_module(b"depends=a\0");
        for cut in 0..m.len() {
            let _ = modinfo(&m[..cut]);
        }
        assert_eq!(modinfo(b"\x7fELF\x01\x01"), Err(KmodError::Unsupported));
        let mut bad = m.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(modinfo(&bad), Err(KmodError::Corrupt(_))));
    }
}
