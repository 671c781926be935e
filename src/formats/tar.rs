//! A normalised tar writer: the same entries always produce the same archive bytes.
//!
//! Layer and rootfs archives are build outputs, so they must be bit-reproducible and
//! readable by every common tar (GNU tar, bsdtar, busybox, Python, the `tar` crate). This
//! module writes POSIX.1-2001 "pax" archives with a fixed set of rules, byte for byte:
//!
//! - Each member is a 512-byte ustar header (`magic = "ustar\0"`, `version = "00"`),
//!   optionally preceded by a pax extended header (typeflag `x`, name `././@PaxHeader`).
//! - Numeric fields are zero-padded octal terminated by NUL; the checksum is six octal
//!   digits, NUL, space (POSIX `chksum`). `uname`/`gname` are empty: owners are numeric.
//! - `mtime` is clamped to `0..=epoch` (the only time a build sees, DESIGN §6).
//!   `devmajor`/`devminor` are filled only for device nodes; atime/ctime never appear.
//! - A name or link target that is longer than 100 bytes or not plain ASCII goes into a
//!   pax `path`/`linkpath` record (never GNU `././@LongLink`, never the ustar `prefix`
//!   split, whose choice of split point differs between tools). The header then carries
//!   the name truncated at a character boundary, for readers that ignore pax.
//! - Values too large for their octal field (`size` ≥ 8 GiB, ids ≥ 2^21, far-future
//!   mtimes) go into pax `size`/`uid`/`gid`/`mtime` records; the header field is 0.
//! - Extended attributes are pax `SCHILY.xattr.<name>` records (the GNU tar and bsdtar
//!   convention), in name order. Records appear in a fixed order: `path`, `linkpath`,
//!   `size`, `uid`, `gid`, `mtime`, then xattrs.
//! - The archive ends with two zero blocks and no further record padding.
//!
//! The writer does not sort: callers hand it entries in their canonical order.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// Name of every pax extended header member (it is never extracted).
const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

/// What a member is. Sockets have no tar representation and are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    File,
    Dir,
    Symlink,
    /// A hard link to an earlier member named by `link_target`.
    HardLink,
    CharDev,
    BlockDev,
    Fifo,
}

impl TarKind {
    /// The ustar `typeflag`.
    fn typeflag(self) -> u8 {
        match self {
            TarKind::File => b'0',
            TarKind::HardLink => b'1',
            TarKind::Symlink => b'2',
            TarKind::CharDev => b'3',
            TarKind::BlockDev => b'4',
            TarKind::Dir => b'5',
            TarKind::Fifo => b'6',
        }
    }
}

/// One archive member, as the caller describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The member name exactly as it should appear (e.g. `./etc/hostname`, `./etc/`).
    pub path: String,
    pub kind: TarKind,
    /// Permission bits plus setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the Unix epoch; clamped to `0..=epoch` on write.
    pub mtime: i64,
    /// Content length; only meaningful for [`TarKind::File`].
    pub size: u64,
    /// Symlink target or hard-link target member name; empty for other kinds.
    pub link_target: String,
    /// Device numbers; only meaningful for character and block devices.
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl TarEntry {
    /// An entry of `kind` with everything else zero or empty.
    pub fn new(path: impl Into<String>, kind: TarKind) -> TarEntry {
        TarEntry {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link_target: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TarError {
    #[error("writing the tar archive failed")]
    #[diagnostic(code(w4b::tar::io))]
    Io(#[from] io::Error),

    #[error("tar member `{path}` has an invalid {field}: {reason}")]
    #[diagnostic(code(w4b::tar::invalid_entry))]
    InvalidEntry {
        path: String,
        field: &'static str,
        reason: &'static str,
    },

    #[error("content of tar member `{path}` ended after {actual} bytes, but its size is {expected}")]
    #[diagnostic(
        code(w4b::tar::content_too_short),
        help("the stored blob does not match the tree entry; run `w4b cache verify`")
    )]
    ContentTooShort {
        path: String,
        expected: u64,
        actual: u64,
    },

    #[error("content of tar member `{path}` is longer than its size {expected}")]
    #[diagnostic(
        code(w4b::tar::content_too_long),
        help("the stored blob does not match the tree entry; run `w4b cache verify`")
    )]
    ContentTooLong { path: String, expected: u64 },
}

/// Streams members into a deterministic pax archive.
///
/// If any call fails the archive written so far is incomplete and must be discarded.
pub struct TarWriter<W: Write> {
    out: W,
    epoch: u64,
}

impl<W: Write> TarWriter<W> {
    /// A writer clamping every mtime to `epoch` (the build's `SOURCE_DATE_EPOCH`).
    pub fn new(out: W, epoch: u64) -> TarWriter<W> {
        TarWriter { out, epoch }
    }

    /// Appends one member. For [`TarKind::File`] exactly `entry.size` bytes are copied
    /// from `content` (streamed; more or fewer is an error); other kinds read nothing.
    pub fn append(&mut self, entry: &TarEntry, content: &mut dyn Read) -> Result<(), TarError> {
        validate(entry)?;
        let size = if entry.kind == TarKind::File {
            entry.size
        } else {
            0
        };
        let mtime = clamp_mtime(entry.mtime, self.epoch);

        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let name = header_text(&entry.path, "path", &mut pax);
        let link: &[u8] = match entry.kind {
            TarKind::Symlink | TarKind::HardLink => header_text(&entry.link_target, "linkpath", &mut pax),
            _ => b"",
        };
        let size_field = numeric_or_pax(size, 12, "size", &mut pax);
        let uid_field = numeric_or_pax(u64::from(entry.uid), 8, "uid", &mut pax);
        let gid_field = numeric_or_pax(u64::from(entry.gid), 8, "gid", &mut pax);
        let mtime_field = numeric_or_pax(mtime, 12, "mtime", &mut pax);
        for (key, value) in &entry.xattrs {
            pax.push((format!("SCHILY.xattr.{key}"), value.clone()));
        }

        if !pax.is_empty() {
            let body = pax_body(&pax);
            let pax_mtime = mtime_field;
            let header = Header {
                name: PAX_HEADER_NAME,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: body.len() as u64,
                mtime: pax_mtime,
                typeflag: b'x',
                linkname: b"",
                dev: None,
            }
            .encode();
            self.out.write_all(&header)?;
            self.out.write_all(&body)?;
            self.pad(body.len() as u64)?;
        }

        let dev = match entry.kind {
            TarKind::CharDev | TarKind::BlockDev => Some((entry.dev_major, entry.dev_minor)),
            _ => None,
        };
        let header = Header {
            name,
            mode: entry.mode,
            uid: uid_field,
            gid: gid_field,
            size: size_field,
            mtime: mtime_field,
            typeflag: entry.kind.typeflag(),
            linkname: link,
            dev,
        }
        .encode();
        self.out.write_all(&header)?;

        if size > 0 {
            let copied = io::copy(&mut (&mut *content).take(size), &mut self.out)?;
            if copied < size {
                return Err(TarError::ContentTooShort {
                    path: entry.path.clone(),
                    expected: size,
                    actual: copied,
                });
            }
            self.pad(size)?;
        }
        if entry.kind == TarKind::File && has_more(content)? {
            return Err(TarError::ContentTooLong {
                path: entry.path.clone(),
                expected: size,
            });
        }
        Ok(())
    }

    /// Writes the end-of-archive marker (two zero blocks), flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W, TarError> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn pad(&mut self, len: u64) -> Result<(), TarError> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

fn clamp_mtime(mtime: i64, epoch: u64) -> u64 {
    // Negative times cannot be stored in ustar and are meaningless for a build: 0.
    u64::try_from(mtime).unwrap_or(0).min(epoch)
}

fn validate(entry: &TarEntry) -> Result<(), TarError> {
    let invalid = |field, reason| TarError::InvalidEntry {
        path: entry.path.clone(),
        field,
        reason,
    };
    if entry.path.is_empty() {
        return Err(invalid("path", "it is empty"));
    }
    if entry.path.contains('\0') {
        return Err(invalid("path", "it contains a NUL byte"));
    }
    if entry.mode & !0o7777 != 0 {
        return Err(invalid("mode", "only the bits 0o7777 may be set"));
    }
    match entry.kind {
        TarKind::Symlink | TarKind::HardLink => {
            if entry.link_target.is_empty() {
                return Err(invalid("link target", "it is empty"));
            }
            if entry.link_target.contains('\0') {
                return Err(invalid("link target", "it contains a NUL byte"));
            }
        }
        // ustar's 7 octal digits hold 21 bits; Linux uses 12-bit majors and 20-bit
        // minors, so a larger number is a mistake, not something to encode.
        TarKind::CharDev | TarKind::BlockDev if entry.dev_major >= 1 << 21 || entry.dev_minor >= 1 << 21 => {
            return Err(invalid("device number", "it does not fit 21 bits"));
        }
        _ => {}
    }
    for name in entry.xattrs.keys() {
        if name.is_empty() || name.contains('\0') || name.contains('=') {
            return Err(invalid("xattr name", "it is empty or contains NUL or `=`"));
        }
    }
    Ok(())
}

/// The bytes for a 100-byte text field; long or non-ASCII text also becomes a pax record.
fn header_text<'a>(text: &'a str, key: &str, pax: &mut Vec<(String, Vec<u8>)>) -> &'a [u8] {
    if text.len() <= 100 && text.is_ascii() {
        return text.as_bytes();
    }
    pax.push((key.to_owned(), text.as_bytes().to_vec()));
    let mut end = text.len().min(100);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

/// `value` if it fits an octal field of `width` bytes (with its NUL); else a pax record and 0.
fn numeric_or_pax(value: u64, width: usize, key: &str, pax: &mut Vec<(String, Vec<u8>)>) -> u64 {
    let digits = (width - 1) as u32;
    if value < 8u64.pow(digits) {
        value
    } else {
        pax.push((key.to_owned(), value.to_string().into_bytes()));
        0
    }
}

/// Pax records: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_body(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in records {
        let rest = 1 + key.len() + 1 + value.len() + 1;
        let mut len = rest + 1;
        while len != rest + decimal_digits(len) {
            len = rest + decimal_digits(len);
        }
        body.extend_from_slice(len.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(key.as_bytes());
        body.push(b'=');
        body.extend_from_slice(value);
        body.push(b'\n');
    }
    body
}

fn decimal_digits(n: usize) -> usize {
    n.to_string().len()
}

fn has_more(content: &mut dyn Read) -> io::Result<bool> {
    let mut probe = [0u8; 1];
    loop {
        match content.read(&mut probe) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A ustar header's fields; numbers must already fit their fields.
struct Header<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    linkname: &'a [u8],
    dev: Option<(u32, u32)>,
}

impl Header<'_> {
    /// POSIX ustar layout (IEEE 1003.1-2001, `pax` "ustar Interchange Format").
    fn encode(&self) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[0..self.name.len()].copy_from_slice(self.name); // name[100]
        octal(&mut h[100..108], u64::from(self.mode)); // mode[8]
        octal(&mut h[108..116], self.uid); // uid[8]
        octal(&mut h[116..124], self.gid); // gid[8]
        octal(&mut h[124..136], self.size); // size[12]
        octal(&mut h[136..148], self.mtime); // mtime[12]
        h[156] = self.typeflag; // typeflag
        h[157..157 + self.linkname.len()].copy_from_slice(self.linkname); // linkname[100]
        h[257..263].copy_from_slice(b"ustar\0"); // magic[6]
        h[263..265].copy_from_slice(b"00"); // version[2]
                                            // uname[32] and gname[32] stay empty: numeric owners only.
        if let Some((major, minor)) = self.dev {
            octal(&mut h[329..337], u64::from(major)); // devmajor[8]
            octal(&mut h[337..345], u64::from(minor)); // devminor[8]
        }
        // prefix[155] stays empty: long names use pax `path`.
        h[148..156].copy_from_slice(b"        "); // chksum[8], counted as spaces
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let chksum = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(chksum.as_bytes());
        h
    }
}

/// Zero-padded octal with a trailing NUL, filling `field` exactly.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(TarEntry, &[u8])], epoch: u64) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new(), epoch);
        for (entry, content) in entries {
            w.append(entry, &mut &content[..]).unwrap();
        }
        w.finish().unwrap()
    }

    fn file(path: &str, content: &[u8]) -> TarEntry {
        let mut e = TarEntry::new(path, TarKind::File);
        e.mode = 0o644;
        e.size = content.len() as u64;
        e
    }

    #[test]
    fn header_fields_are_exact() {
        let mut e = file("./a", b"hi");
        e.uid = 1000;
        e.gid = 7;
        e.mtime = 5_000;
        let bytes = archive(&[(e, b"hi")], 1_000);
        assert_eq!(bytes.len(), 512 + 512 + 1024);
        let h = &bytes[..512];
        assert_eq!(&h[0..4], b"./a\0");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(&h[108..116], b"0001750\0");
        assert_eq!(&h[124..136], b"00000000002\0");
        // clamped to the epoch
        assert_eq!(&h[136..148], b"00000001750\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert!(h[265..345].iter().all(|&b| b == 0), "uname/gname/dev empty");
        let header = ::tar::Header::from_byte_slice(h);
        assert_eq!(header.cksum().unwrap(), {
            let mut copy = h.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            copy.iter().map(|&b| u32::from(b)).sum::<u32>()
        });
        assert_eq!(&bytes[512..514], b"hi");
        assert!(bytes[514..].iter().all(|&b| b == 0));
    }

    #[test]
    fn long_names_xattrs_and_big_ids_use_pax() {
        let long = format!("./{}/file", "d".repeat(150));
        let mut e = file(&long, b"x");
        e.uid = 1 << 22;
        e.xattrs
            .insert("security.capability".into(), vec![1, 0, 0, 2, 0xff]);
        let mut link = TarEntry::new("./l", TarKind::Symlink);
        link.link_target = format!("/{}", "t".repeat(120));
        link.mode = 0o777;
        let bytes = archive(&[(e, b"x"), (link, b"")], 10);

        let mut ar = ::tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in ar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let uid = entry.header().uid().unwrap();
            let mut xattrs = Vec::new();
            if let Some(exts) = entry.pax_extensions().unwrap() {
                for ext in exts {
                    let ext = ext.unwrap();
                    if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                    }
                }
            }
            let target = entry
                .link_name()
                .unwrap()
                .map(|t| t.to_string_lossy().into_owned());
            seen.push((path, uid, xattrs, target));
        }
        assert_eq!(seen[0].0, long);
        // The header field is 0; the tar crate applies the pax `uid` record.
        assert_eq!(seen[0].1, 1 << 22);
        assert_eq!(&bytes[512 * 2 + 108..512 * 2 + 116], b"0000000\0");
        assert_eq!(
            seen[0].2,
            vec![("security.capability".to_owned(), vec![1, 0, 0, 2, 0xff])]
        );
        assert_eq!(seen[1].3.as_deref(), Some(&*format!("/{}", "t".repeat(120))));
        assert!(bytes.windows(12).any(|w| w == b"uid=4194304\n"));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        // 9 bytes of "rest" + 1 digit = 10, which needs 2 digits: the length is 11.
        let body = pax_body(&[("ab".into(), b"cdef".to_vec())]);
        assert_eq!(body, b"11 ab=cdef\n");
        let body = pax_body(&[("a".into(), b"b".to_vec())]);
        assert_eq!(body, b"6 a=b\n");
    }

    #[test]
    fn content_length_is_enforced() {
        let mut w = TarWriter::new(Vec::new(), 0);
        let e = file("./a", b"abc");
        assert!(matches!(
            w.append(&e, &mut &b"ab"[..]),
            Err(TarError::ContentTooShort { actual: 2, .. })
        ));
        let mut w = TarWriter::new(Vec::new(), 0);
        assert!(matches!(
            w.append(&e, &mut &b"abcd"[..]),
            Err(TarError::ContentTooLong { .. })
        ));
    }

    #[test]
    fn invalid_entries_are_rejected() {
        let mut w = TarWriter::new(Vec::new(), 0);
        let mut e = file("./a", b"");
        e.mode = 0o100644;
        assert!(matches!(
            w.append(&e, &mut io::empty()),
            Err(TarError::InvalidEntry { field: "mode", .. })
        ));
        let e = TarEntry::new("./l", TarKind::Symlink);
        assert!(matches!(
            w.append(&e, &mut io::empty()),
            Err(TarError::InvalidEntry {
                field: "link target",
                ..
            })
        ));
        let e = file("./a\0b", b"");
        assert!(w.append(&e, &mut io::empty()).is_err());
        let mut e = TarEntry::new("./dev", TarKind::BlockDev);
        e.dev_minor = 1 << 21;
        assert!(matches!(
            w.append(&e, &mut io::empty()),
            Err(TarError::InvalidEntry {
                field: "device number",
                ..
            })
        ));
    }

    #[test]
    fn devices_carry_numbers_and_others_do_not() {
        let mut dev = TarEntry::new("./null", TarKind::CharDev);
        dev.mode = 0o666;
        dev.dev_major = 1;
        dev.dev_minor = 3;
        let mut dir = TarEntry::new("./d/", TarKind::Dir);
        dir.dev_major = 9; // ignored for non-devices
        let bytes = archive(&[(dev, b""), (dir, b"")], 0);
        assert_eq!(&bytes[329..345], b"0000001\x000000003\0");
        assert!(bytes[512 + 329..512 + 345].iter().all(|&b| b == 0));
    }
}
