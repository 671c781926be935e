//! The `.deb` binary package (deb(5)): an `ar` archive of `debian-binary`, `control.tar*`
//! and `data.tar*`, read in one forward pass over any [`Read`].
//!
//! ```text
//! "!<arch>\n"                                  ar global header, 8 bytes
//! per member: 60-byte header                   ar_name[16] ar_date[12] ar_uid[6] ar_gid[6]
//!                                              ar_mode[8] ar_size[10] ar_fmag[2] = "`\n"
//!             ar_size bytes, then one "\n" pad when ar_size is odd
//! members, in this order:
//!   debian-binary                              "2.0\n" (format 2.x)
//!   _*                                         optional, skipped (deb(5) reserves `_` names)
//!   control.tar[.gz|.xz|.zst]                  control, md5sums, conffiles, maintainer scripts
//!   _*                                         optional, skipped
//!   data.tar[.gz|.xz|.zst]                     the files, streamed to the caller
//!   anything after data.tar                    ignored, as deb(5) asks
//! ```
//!
//! Names may carry GNU `ar`'s trailing `/`. `data.tar.bz2` and `.lzma` (which dpkg still
//! reads) are reported as unsupported, not corrupt. The control member is read into
//! memory, bounded by [`CONTROL_LIMIT`] before and after decompression; the data member
//! is never buffered: [`Deb::into_data`] returns a reader of the *decompressed* tar that
//! pulls from the input as it is read, and fails with `UnexpectedEof` when the input ends
//! before the member's recorded size.

// Parses untrusted bytes: no unchecked arithmetic or indexing (STYLE, disk formats).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};

use super::control::{self, ControlError, Paragraph, Syntax};

/// The most a control member may take, compressed or decompressed (64 MiB): real ones
/// are a few kilobytes; the largest in Debian (big `md5sums`) are about a megabyte.
pub const CONTROL_LIMIT: u64 = 64 << 20;

/// `debian-binary` is four bytes; anything above this is not a package.
const DEBIAN_BINARY_LIMIT: u64 = 4096;

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: usize = 60;

/// How a member is compressed, from its name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The suffix after `.tar`, with its dot (empty for none).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }
}

/// Why a `.deb` could not be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DebError {
    #[error("reading the package failed")]
    #[diagnostic(code(w4b::deb::io))]
    Io(#[from] io::Error),

    #[error("the file is not a Debian package: it does not start with the `ar` magic `!<arch>`")]
    #[diagnostic(
        code(w4b::deb::not_ar),
        help("a `.deb` is an `ar` archive; check that the download is the package and not an error page")
    )]
    NotAr,

    #[error("the package ends at byte {offset}, inside {what}")]
    #[diagnostic(code(w4b::deb::truncated), help("the download is incomplete; fetch it again"))]
    Truncated { offset: u64, what: String },

    #[error("the `ar` member header at byte {offset} has an invalid `{field}`: {reason}")]
    #[diagnostic(code(w4b::deb::bad_member_header), help("the package is corrupt"))]
    BadMemberHeader {
        offset: u64,
        field: &'static str,
        reason: String,
    },

    #[error("the package format `{version}` (in `debian-binary`) is not supported")]
    #[diagnostic(
        code(w4b::deb::unsupported_format),
        help("w4b reads format 2.x packages, as dpkg builds them")
    )]
    UnsupportedFormat { version: String },

    #[error("the member at byte {offset} is `{found}`, but `{expected}` must come next")]
    #[diagnostic(
        code(w4b::deb::unexpected_member),
        help("deb(5): `debian-binary`, then `control.tar*`, then `data.tar*`; the package is corrupt")
    )]
    UnexpectedMember {
        offset: u64,
        found: String,
        expected: &'static str,
    },

    #[error("the package ends without its `{expected}` member")]
    #[diagnostic(code(w4b::deb::missing_member), help("the package is truncated or corrupt"))]
    MissingMember { expected: &'static str },

    #[error("the member `{member}` is compressed in a way w4b does not support")]
    #[diagnostic(
        code(w4b::deb::unsupported_compression),
        help("w4b reads members compressed with gzip, xz or zstd, or not at all; rebuild the package with `dpkg-deb -Zxz`")
    )]
    UnsupportedCompression { member: String },

    #[error("the control member `{member}` is larger than {limit} bytes")]
    #[diagnostic(
        code(w4b::deb::control_too_large),
        help("a control member holds only metadata; this package is hostile or corrupt")
    )]
    ControlTooLarge { member: String, limit: u64 },

    #[error("the control member `{member}` is not a valid compressed tar archive")]
    #[diagnostic(code(w4b::deb::bad_control_tar), help("the package is corrupt"))]
    BadControlTar {
        member: String,
        #[source]
        source: io::Error,
    },

    #[error("the control member has no `control` file")]
    #[diagnostic(code(w4b::deb::no_control), help("the package is corrupt"))]
    NoControlFile,

    #[error("the package's `{file}` is not UTF-8 text")]
    #[diagnostic(
        code(w4b::deb::not_utf8),
        help("control files are UTF-8 (Debian Policy §5.1)")
    )]
    NotUtf8 { file: &'static str },

    #[error("the package's `control` file is invalid")]
    #[diagnostic(code(w4b::deb::bad_control))]
    Control(#[source] ControlError),

    #[error("the package's `control` file holds no paragraph, or more than one")]
    #[diagnostic(
        code(w4b::deb::control_paragraphs),
        help("a binary package's `control` is one paragraph")
    )]
    ControlParagraphs,

    #[error("line {line} of the package's `md5sums` is not `<32 hex digits>  <path>`")]
    #[diagnostic(code(w4b::deb::bad_md5sums))]
    BadMd5sums { line: usize },
}

/// The files of the control member, by name (`control`, `md5sums`, `conffiles`,
/// `preinst`, `postinst`, `prerm`, `postrm`, `triggers`, `shlibs`, `symbols`, …).
#[derive(Debug, Clone)]
pub struct ControlFiles {
    files: BTreeMap<String, Vec<u8>>,
    /// `control` as text, checked to be one valid paragraph when the package was opened.
    control: String,
}

/// One line of `md5sums`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Md5Entry {
    /// The path relative to the root, as written (without a leading `/`).
    pub path: String,
    pub md5: [u8; 16],
}

impl ControlFiles {
    /// The `control` file's text.
    pub fn control_text(&self) -> &str {
        &self.control
    }

    /// The `control` paragraph.
    pub fn paragraph(&self) -> Paragraph<'_> {
        // Checked when the package was opened: parsing again cannot fail.
        match control::parse_single(&self.control, Syntax::Strict) {
            Ok(Some(p)) => p,
            _ => Paragraph::empty(),
        }
    }

    /// A control file by name (`postinst`, `conffiles`, …).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// The names of all control files, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The maintainer script `name` (`preinst`, `postinst`, `prerm`, `postrm`, `config`).
    pub fn maintainer_script(&self, name: &str) -> Option<&[u8]> {
        match name {
            "preinst" | "postinst" | "prerm" | "postrm" | "config" => self.file(name),
            _ => None,
        }
    }

    /// The absolute paths listed in `conffiles` (empty when there is none); lines with
    /// dpkg's flags (`remove-on-upgrade /etc/x`) give their path.
    pub fn conffiles(&self) -> Result<Vec<String>, DebError> {
        let Some(bytes) = self.file("conffiles") else {
            return Ok(Vec::new());
        };
        let text = std::str::from_utf8(bytes).map_err(|_| DebError::NotUtf8 { file: "conffiles" })?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(str::to_owned)
            .collect())
    }

    /// The entries of `md5sums` (empty when there is none).
    pub fn md5sums(&self) -> Result<Vec<Md5Entry>, DebError> {
        let Some(bytes) = self.file("md5sums") else {
            return Ok(Vec::new());
        };
        let text = std::str::from_utf8(bytes).map_err(|_| DebError::NotUtf8 { file: "md5sums" })?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let bad = || DebError::BadMd5sums {
                line: i.saturating_add(1),
            };
            let (hex_digest, path) = line.split_once("  ").ok_or_else(bad)?;
            let mut md5 = [0u8; 16];
            hex::decode_to_slice(hex_digest, &mut md5).map_err(|_| bad())?;
            if path.is_empty() {
                return Err(bad());
            }
            out.push(Md5Entry {
                path: path.to_owned(),
                md5,
            });
        }
        Ok(out)
    }
}

/// An opened package: its control files, and the data member still to be read.
pub struct Deb<R: Read> {
    control: ControlFiles,
    data_member: String,
    data: DataReader<R>,
}

impl<R: Read> std::fmt::Debug for Deb<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deb")
            .field("control", &self.control)
            .field("data_member", &self.data_member)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Deb<R> {
    /// Reads the package's header, `debian-binary` and control member from `input`,
    /// leaving it positioned at the start of the data member's contents.
    pub fn open(input: R) -> Result<Deb<R>, DebError> {
        let mut ar = ArReader { input, offset: 0 };
        let mut magic = [0u8; 8];
        ar.read_exact_or(&mut magic, "the `ar` magic")?;
        if &magic != AR_MAGIC {
            return Err(DebError::NotAr);
        }

        let first = ar.next_member()?.ok_or(DebError::MissingMember {
            expected: "debian-binary",
        })?;
        if first.name != "debian-binary" {
            return Err(DebError::UnexpectedMember {
                offset: first.header_offset,
                found: first.name,
                expected: "debian-binary",
            });
        }
        if first.size > DEBIAN_BINARY_LIMIT {
            return Err(DebError::UnsupportedFormat {
                version: format!("({} bytes)", first.size),
            });
        }
        let bytes = ar.read_member(&first)?;
        let version = String::from_utf8_lossy(&bytes).trim_end().to_owned();
        if !(version.starts_with("2.") && bytes.ends_with(b"\n")) {
            return Err(DebError::UnsupportedFormat { version });
        }

        let control_member = ar.next_required("control.tar")?;
        let compression = member_compression(&control_member.name, "control.tar")?.ok_or_else(|| {
            DebError::UnexpectedMember {
                offset: control_member.header_offset,
                found: control_member.name.clone(),
                expected: "control.tar",
            }
        })?;
        if control_member.size > CONTROL_LIMIT {
            return Err(DebError::ControlTooLarge {
                member: control_member.name,
                limit: CONTROL_LIMIT,
            });
        }
        let compressed = ar.read_member(&control_member)?;
        let control = read_control_tar(&compressed, compression, &control_member.name)?;

        let data_member = ar.next_required("data.tar")?;
        let data_compression =
            member_compression(&data_member.name, "data.tar")?.ok_or_else(|| DebError::UnexpectedMember {
                offset: data_member.header_offset,
                found: data_member.name.clone(),
                expected: "data.tar",
            })?;
        let raw = MemberReader {
            input: ar.input,
            remaining: data_member.size,
            offset: data_member.data_offset,
        };
        let data = DataReader::new(raw, data_compression)?;
        Ok(Deb {
            control,
            data_member: data_member.name,
            data,
        })
    }

    pub fn control(&self) -> &ControlFiles {
        &self.control
    }

    /// The data member's name (`data.tar.xz`, …).
    pub fn data_member(&self) -> &str {
        &self.data_member
    }

    /// The control files and a reader of the decompressed `data.tar`.
    pub fn into_parts(self) -> (ControlFiles, DataReader<R>) {
        (self.control, self.data)
    }

    /// A reader of the decompressed `data.tar`.
    pub fn into_data(self) -> DataReader<R> {
        self.data
    }
}

/// The compression named by `name` = `<base>[.suffix]`: `Ok(None)` when the name is not
/// `<base>*` at all, an error for a compression w4b does not read.
fn member_compression(name: &str, base: &str) -> Result<Option<Compression>, DebError> {
    let Some(suffix) = name.strip_prefix(base) else {
        return Ok(None);
    };
    match suffix {
        "" => Ok(Some(Compression::None)),
        ".gz" => Ok(Some(Compression::Gzip)),
        ".xz" => Ok(Some(Compression::Xz)),
        ".zst" => Ok(Some(Compression::Zstd)),
        s if s.starts_with('.') => Err(DebError::UnsupportedCompression {
            member: name.to_owned(),
        }),
        _ => Ok(None),
    }
}

/// Decompresses and unpacks the control member, with both sizes bounded.
fn read_control_tar(
    compressed: &[u8],
    compression: Compression,
    member: &str,
) -> Result<ControlFiles, DebError> {
    let bad = |source: io::Error| DebError::BadControlTar {
        member: member.to_owned(),
        source,
    };
    let mut tar_bytes = Vec::new();
    let mut decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        Compression::Xz => Box::new(crate::formats::xz::decoder(compressed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(compressed).map_err(bad)?),
    };
    decoder
        .by_ref()
        .take(CONTROL_LIMIT.saturating_add(1))
        .read_to_end(&mut tar_bytes)
        .map_err(bad)?;
    if u64::try_from(tar_bytes.len()).map_or(true, |n| n > CONTROL_LIMIT) {
        return Err(DebError::ControlTooLarge {
            member: member.to_owned(),
            limit: CONTROL_LIMIT,
        });
    }

    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let name = path.trim_start_matches("./").trim_start_matches('/').to_owned();
        if name.is_empty() {
            continue;
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).map_err(bad)?;
        files.insert(name, content);
    }
    let control_bytes = files.get("control").ok_or(DebError::NoControlFile)?;
    let control =
        String::from_utf8(control_bytes.clone()).map_err(|_| DebError::NotUtf8 { file: "control" })?;
    match control::parse_single(&control, Syntax::Strict) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(DebError::ControlParagraphs),
        Err(ControlError::SecondParagraph { .. }) => return Err(DebError::ControlParagraphs),
        Err(e) => return Err(DebError::Control(e)),
    }
    Ok(ControlFiles { files, control })
}

/// An `ar` member header.
struct Member {
    name: String,
    size: u64,
    header_offset: u64,
    data_offset: u64,
}

/// A forward-only `ar` reader that tracks its offset for error messages.
struct ArReader<R> {
    input: R,
    offset: u64,
}

impl<R: Read> ArReader<R> {
    /// Reads exactly `buf.len()` bytes; `Ok(false)` when the input ended before the first.
    fn read_exact_or_eof(&mut self, buf: &mut [u8], what: &str) -> Result<bool, DebError> {
        let mut filled = 0usize;
        while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
            match self.input.read(rest) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(DebError::Truncated {
                        offset: self.offset,
                        what: what.to_owned(),
                    })
                }
                Ok(n) => {
                    filled = filled.saturating_add(n);
                    self.offset = self.offset.saturating_add(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    fn read_exact_or(&mut self, buf: &mut [u8], what: &str) -> Result<(), DebError> {
        if self.read_exact_or_eof(buf, what)? {
            Ok(())
        } else {
            Err(DebError::Truncated {
                offset: self.offset,
                what: what.to_owned(),
            })
        }
    }

    /// The next member header, `None` at the end of the archive.
    fn next_member(&mut self) -> Result<Option<Member>, DebError> {
        let header_offset = self.offset;
        let mut h = [0u8; AR_HEADER];
        if !self.read_exact_or_eof(&mut h, "an `ar` member header")? {
            return Ok(None);
        }
        let bad = |field: &'static str, reason: String| DebError::BadMemberHeader {
            offset: header_offset,
            field,
            reason,
        };
        if h.get(58..60) != Some(b"`\n".as_slice()) {
            return Err(bad("ar_fmag", String::from("it is not \"`\\n\"")));
        }
        let name_bytes = h.get(0..16).unwrap_or(&[]);
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| bad("ar_name", String::from("it is not ASCII")))?
            .trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name);
        if name.is_empty() {
            return Err(bad("ar_name", String::from("it is empty")));
        }
        let size_field = std::str::from_utf8(h.get(48..58).unwrap_or(&[]))
            .map_err(|_| bad("ar_size", String::from("it is not ASCII")))?
            .trim_end_matches(' ');
        if size_field.is_empty() || !size_field.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("ar_size", format!("`{size_field}` is not a decimal number")));
        }
        let size: u64 = size_field
            .parse()
            .map_err(|_| bad("ar_size", format!("`{size_field}` is out of range")))?;
        Ok(Some(Member {
            name: name.to_owned(),
            size,
            header_offset,
            data_offset: self.offset,
        }))
    }

    /// The next member that is not an optional `_…` member; it must be `<base>*`.
    fn next_required(&mut self, base: &'static str) -> Result<Member, DebError> {
        loop {
            let member = self
                .next_member()?
                .ok_or(DebError::MissingMember { expected: base })?;
            if member.name.starts_with('_') {
                self.skip_member(&member)?;
                continue;
            }
            if !member.name.starts_with(base) {
                return Err(DebError::UnexpectedMember {
                    offset: member.header_offset,
                    found: member.name,
                    expected: base,
                });
            }
            return Ok(member);
        }
    }

    /// Reads a whole (small, already bounded) member and its padding.
    fn read_member(&mut self, member: &Member) -> Result<Vec<u8>, DebError> {
        let len = usize::try_from(member.size).map_err(|_| DebError::ControlTooLarge {
            member: member.name.clone(),
            limit: CONTROL_LIMIT,
        })?;
        let mut buf = vec![0u8; len];
        self.read_exact_or(&mut buf, &format!("the member `{}`", member.name))?;
        self.skip_padding(member)?;
        Ok(buf)
    }

    fn skip_member(&mut self, member: &Member) -> Result<(), DebError> {
        let copied = io::copy(&mut (&mut self.input).take(member.size), &mut io::sink())?;
        self.offset = self.offset.saturating_add(copied);
        if copied != member.size {
            return Err(DebError::Truncated {
                offset: self.offset,
                what: format!("the member `{}`", member.name),
            });
        }
        self.skip_padding(member)
    }

    /// ar pads odd-sized members to an even offset with one `\n`.
    fn skip_padding(&mut self, member: &Member) -> Result<(), DebError> {
        if member.size % 2 == 1 {
            let mut pad = [0u8; 1];
            // A missing pad byte after the last member is tolerated, as ar(1) does.
            self.read_exact_or_eof(&mut pad, "the padding of a member")?;
        }
        Ok(())
    }
}

/// The data member's raw bytes: exactly `remaining` bytes of the input, and an
/// `UnexpectedEof` error (naming the offset) when the input ends earlier.
pub struct MemberReader<R> {
    input: R,
    remaining: u64,
    offset: u64,
}

impl<R: Read> Read for MemberReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.input.read(buf.get_mut(..want).unwrap_or(&mut []))?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the package ends at byte {} inside its data member", self.offset),
            ));
        }
        self.remaining = self.remaining.saturating_sub(n as u64);
        self.offset = self.offset.saturating_add(n as u64);
        Ok(n)
    }
}

/// A reader of the decompressed `data.tar`, pulling from the package as it is read.
pub enum DataReader<R: Read> {
    None(MemberReader<R>),
    Gzip(flate2::read::MultiGzDecoder<MemberReader<R>>),
    Xz(crate::formats::xz::XzReader<BufReader<MemberReader<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<MemberReader<R>>>),
}

impl<R: Read> DataReader<R> {
    fn new(raw: MemberReader<R>, compression: Compression) -> Result<DataReader<R>, DebError> {
        Ok(match compression {
            Compression::None => DataReader::None(raw),
            Compression::Gzip => DataReader::Gzip(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Xz => DataReader::Xz(crate::formats::xz::decoder(raw)),
            Compression::Zstd => DataReader::Zstd(zstd::stream::read::Decoder::new(raw)?),
        })
    }

    pub fn compression(&self) -> Compression {
        match self {
            DataReader::None(_) => Compression::None,
            DataReader::Gzip(_) => Compression::Gzip,
            DataReader::Xz(_) => Compression::Xz,
            DataReader::Zstd(_) => Compression::Zstd,
        }
    }
}

impl<R: Read> Read for DataReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DataReader::None(r) => r.read(buf),
            DataReader::Gzip(r) => r.read(buf),
            DataReader::Xz(r) => r.read(buf),
            DataReader::Zstd(r) => r.read(buf),
        }
    }
}
