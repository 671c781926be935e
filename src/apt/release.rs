//! A repository's `Release` file, read from the *verified* payload of `InRelease` (or
//! `Release` checked against `Release.gpg`), and the next link of the hash chain: from
//! the `SHA256:` list to each downloaded index (docs/formats.md, "Debian repositories").
//!
//! The file is one deb822 paragraph (Debian Policy §5.1, and the repository format at
//! <https://wiki.debian.org/DebianRepository/Format>). The small field parser here is
//! private and deliberately minimal; the shared deb822 reader will replace it.
//!
//! What this module checks, as apt does:
//!
//! - the `Suite` or `Codename` equals the suite that was asked for, so a mirror cannot
//!   answer a request for `bookworm` with a correctly signed `trixie` or an old
//!   `buster` (a downgrade);
//! - `Valid-Until` has not passed, against a time the caller passes in (the module reads
//!   no clock), so a frozen mirror cannot replay an old, signed snapshot forever;
//! - every index is looked up in the `SHA256:` list (MD5 and SHA-1 lists are ignored) and
//!   must match its listed size and digest before a single byte of it is decompressed;
//!   decompression is bounded, and when the uncompressed file is listed too (Debian lists
//!   it even though it does not publish it), the decompressed bytes must match that entry.
//!
//! Paths in the list are relative to `dists/<suite>/`; a path that is absolute, empty or
//! climbs with `..` is corrupt, since it will be joined to a URL or a directory.

#![forbid(unsafe_code)]
// Parses bytes from the network: no unchecked arithmetic or indexing (docs/security.md).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use sha2::{Digest as _, Sha256};

/// Why a `Release` file or an index it lists was not accepted.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ReleaseError {
    /// The payload is not a well-formed `Release` paragraph.
    #[error("the `Release` file is malformed at line {line}: {reason}")]
    #[diagnostic(
        code(w4b::apt::release_malformed),
        help("the repository published a broken `Release` file; its signature was good, so report it to the repository's maintainers")
    )]
    Malformed { line: usize, reason: String },

    /// A field apt needs is absent.
    #[error("the `Release` file has no `{field}` field")]
    #[diagnostic(
        code(w4b::apt::release_missing_field),
        help("a repository made with `apt-ftparchive release` or `reprepro` always has it; the file is incomplete")
    )]
    MissingField { field: &'static str },

    /// The repository answered for another suite.
    #[error("asked for suite `{requested}`, but the `Release` file is for {}", describe_suite(suite.as_deref(), codename.as_deref()))]
    #[diagnostic(
        code(w4b::apt::suite_mismatch),
        help("check the suite name in the package set; a mirror that serves another suite for `{requested}` is misconfigured or replaying old files")
    )]
    SuiteMismatch {
        requested: String,
        suite: Option<String>,
        codename: Option<String>,
    },

    /// `Valid-Until` is in the past.
    #[error("the `Release` file expired at `{valid_until}` (`Valid-Until`)")]
    #[diagnostic(
        code(w4b::apt::release_expired),
        help("the mirror is stale or replaying an old snapshot; use an up-to-date mirror")
    )]
    Expired { valid_until: String },

    /// The requested index is not in the `SHA256:` list under any compression.
    #[error("the `Release` file lists no `{path}` (tried `.xz`, `.gz` and uncompressed)")]
    #[diagnostic(
        code(w4b::apt::index_not_listed),
        help("check the component and architecture against `Components: {components}` and `Architectures: {architectures}`")
    )]
    IndexNotListed {
        path: String,
        components: String,
        architectures: String,
    },

    /// A downloaded index has another size than the `Release` file says.
    #[error("`{path}` is {actual} bytes, but the `Release` file says {expected}")]
    #[diagnostic(
        code(w4b::apt::index_size_mismatch),
        help("the mirror is out of sync (caught between two updates) or tampered; retry later or use another mirror")
    )]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },

    /// A downloaded index has another sha256 than the `Release` file says.
    #[error("`{path}` has sha256 `{actual}`, but the `Release` file says `{expected}`")]
    #[diagnostic(
        code(w4b::apt::index_hash_mismatch),
        help("the mirror is out of sync (caught between two updates) or tampered; retry later or use another mirror")
    )]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    /// The decompressed index is larger than the caller allows.
    #[error("`{path}` decompresses to more than {limit} bytes")]
    #[diagnostic(
        code(w4b::apt::index_too_large),
        help("an index this large is not a real repository's; if it is, raise the limit")
    )]
    TooLarge { path: String, limit: u64 },

    /// The index matched its digest but does not decompress.
    #[error("`{path}` does not decompress as {compression}: {reason}")]
    #[diagnostic(
        code(w4b::apt::index_corrupt),
        help("the repository signed a broken file; report it to its maintainers")
    )]
    Corrupt {
        path: String,
        compression: Compression,
        reason: String,
    },
}

fn describe_suite(suite: Option<&str>, codename: Option<&str>) -> String {
    match (suite, codename) {
        (Some(s), Some(c)) => format!("suite `{s}`, codename `{c}`"),
        (Some(s), None) => format!("suite `{s}`"),
        (None, Some(c)) => format!("codename `{c}`"),
        (None, None) => "no suite at all".to_owned(),
    }
}

/// How an index file is compressed, in apt's order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Compression {
    Xz,
    Gzip,
    None,
}

impl Compression {
    /// The file name suffix, with its dot (empty for none).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Xz => ".xz",
            Compression::Gzip => ".gz",
            Compression::None => "",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::None => "uncompressed",
        })
    }
}

/// One line of the `SHA256:` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub sha256: [u8; 32],
    pub size: u64,
}

/// An index chosen for download: where it is (relative to `dists/<suite>/`) and what it
/// must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexRef {
    /// The path with its compression suffix, e.g. `main/binary-arm64/Packages.xz`.
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub compression: Compression,
    /// The uncompressed file's entry, when the `Release` file lists it.
    pub uncompressed: Option<FileEntry>,
}

impl IndexRef {
    /// The `by-hash` path apt uses when `Acquire-By-Hash: yes`: immune to a mirror
    /// updating `Packages.xz` between our `InRelease` and index downloads.
    pub fn by_hash_path(&self) -> String {
        let dir = self.path.rsplit_once('/').map_or("", |(d, _)| d);
        let hash = hex::encode(self.sha256);
        if dir.is_empty() {
            format!("by-hash/SHA256/{hash}")
        } else {
            format!("{dir}/by-hash/SHA256/{hash}")
        }
    }
}

/// The fields of a `Release` file that w4b uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub version: Option<String>,
    /// `Date` as written, and as Unix seconds.
    pub date: Option<(String, i64)>,
    /// `Valid-Until` as written, and as Unix seconds.
    pub valid_until: Option<(String, i64)>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub acquire_by_hash: bool,
    /// `No-Support-for-Architecture-all: Packages`: the `Architecture: all` packages are in
    /// every architecture's index, and a `binary-all` index is not for apt (Debian's).
    pub all_in_arch_indices: bool,
    /// The `SHA256:` list by path.
    pub sha256: BTreeMap<String, FileEntry>,
}

impl Release {
    /// Parses a verified payload (`Verified::payload` of `crate::apt::signature`).
    pub fn parse(payload: &[u8]) -> Result<Release, ReleaseError> {
        let text = std::str::from_utf8(payload).map_err(|e| ReleaseError::Malformed {
            line: line_of(payload, e.valid_up_to()),
            reason: "not UTF-8".into(),
        })?;
        let fields = parse_paragraph(text)?;
        let get = |name: &str| fields.get(name).map(|f| f.value.trim().to_owned());
        let words = |name: &str| {
            get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let date = |name: &str| -> Result<Option<(String, i64)>, ReleaseError> {
            let Some(field) = fields.get(name) else {
                return Ok(None);
            };
            let text = field.value.trim().to_owned();
            let secs = parse_date(&text).ok_or_else(|| ReleaseError::Malformed {
                line: field.line,
                reason: format!("`{name}: {text}` is not an RFC 2822 date"),
            })?;
            Ok(Some((text, secs)))
        };
        let sha256 = match fields.get("sha256") {
            Some(field) => parse_sha256_list(field)?,
            None => return Err(ReleaseError::MissingField { field: "SHA256" }),
        };
        let release = Release {
            origin: get("origin"),
            label: get("label"),
            suite: get("suite"),
            codename: get("codename"),
            version: get("version"),
            date: date("date")?,
            valid_until: date("valid-until")?,
            architectures: words("architectures"),
            components: words("components"),
            acquire_by_hash: get("acquire-by-hash").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            all_in_arch_indices: get("no-support-for-architecture-all")
                .is_some_and(|v| v.split_whitespace().any(|w| w == "Packages")),
            sha256,
        };
        if release.suite.is_none() && release.codename.is_none() {
            return Err(ReleaseError::MissingField { field: "Suite" });
        }
        Ok(release)
    }

    /// Parses a payload and checks it answers for `suite` ([`Release::check_suite`]).
    pub fn parse_for_suite(payload: &[u8], suite: &str) -> Result<Release, ReleaseError> {
        let release = Release::parse(payload)?;
        release.check_suite(suite)?;
        Ok(release)
    }

    /// `Suite` or `Codename` must equal the requested suite (apt's check; `bookworm` and
    /// `oldstable` both name Debian 12's `Release`).
    pub fn check_suite(&self, requested: &str) -> Result<(), ReleaseError> {
        let matches = |v: &Option<String>| v.as_deref() == Some(requested);
        if matches(&self.suite) || matches(&self.codename) {
            return Ok(());
        }
        Err(ReleaseError::SuiteMismatch {
            requested: requested.to_owned(),
            suite: self.suite.clone(),
            codename: self.codename.clone(),
        })
    }

    /// Fails when `Valid-Until` is at or before `now` (Unix seconds, the caller's clock).
    pub fn check_valid_at(&self, now: i64) -> Result<(), ReleaseError> {
        match &self.valid_until {
            Some((text, until)) if now >= *until => Err(ReleaseError::Expired {
                valid_until: text.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The entry for an exact path in the `SHA256:` list.
    pub fn entry(&self, path: &str) -> Option<&FileEntry> {
        self.sha256.get(path)
    }

    /// Chooses how to download the index `base` (e.g. `main/binary-arm64/Packages`):
    /// `.xz`, else `.gz`, else uncompressed, whichever the list has first.
    pub fn index(&self, base: &str) -> Result<IndexRef, ReleaseError> {
        for compression in [Compression::Xz, Compression::Gzip, Compression::None] {
            let path = format!("{base}{}", compression.suffix());
            if let Some(entry) = self.sha256.get(&path) {
                return Ok(IndexRef {
                    path,
                    size: entry.size,
                    sha256: entry.sha256,
                    compression,
                    uncompressed: self.sha256.get(base).cloned(),
                });
            }
        }
        Err(ReleaseError::IndexNotListed {
            path: base.to_owned(),
            components: self.components.join(" "),
            architectures: self.architectures.join(" "),
        })
    }
}

/// Checks downloaded index bytes against their `Release` entry, then decompresses them
/// into at most `max_size` bytes and, when the `Release` file lists the uncompressed
/// file too, checks that as well. Returns the uncompressed index.
pub fn verify_index(bytes: &[u8], index: &IndexRef, max_size: u64) -> Result<Vec<u8>, ReleaseError> {
    check_entry(
        &index.path,
        bytes,
        &FileEntry {
            sha256: index.sha256,
            size: index.size,
        },
    )?;
    let plain_path = index
        .path
        .strip_suffix(index.compression.suffix())
        .unwrap_or(&index.path);
    let corrupt = |reason: String| ReleaseError::Corrupt {
        path: index.path.clone(),
        compression: index.compression,
        reason,
    };
    let plain = match index.compression {
        Compression::None => {
            if bytes.len() as u64 > max_size {
                return Err(ReleaseError::TooLarge {
                    path: index.path.clone(),
                    limit: max_size,
                });
            }
            bytes.to_vec()
        }
        Compression::Xz => read_bounded(crate::formats::xz::decoder(bytes), max_size, &index.path)
            .map_err(|e| e.map_io(corrupt))?,
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(bytes), max_size, &index.path)
            .map_err(|e| e.map_io(corrupt))?,
    };
    if let Some(entry) = &index.uncompressed {
        check_entry(plain_path, &plain, entry)?;
    }
    Ok(plain)
}

/// Size first (cheap, and the usual symptom of a mirror caught mid-update), then sha256.
fn check_entry(path: &str, bytes: &[u8], entry: &FileEntry) -> Result<(), ReleaseError> {
    let actual = bytes.len() as u64;
    if actual != entry.size {
        return Err(ReleaseError::SizeMismatch {
            path: path.to_owned(),
            expected: entry.size,
            actual,
        });
    }
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    if digest != entry.sha256 {
        return Err(ReleaseError::HashMismatch {
            path: path.to_owned(),
            expected: hex::encode(entry.sha256),
            actual: hex::encode(digest),
        });
    }
    Ok(())
}

enum BoundedError {
    TooLarge(ReleaseError),
    Io(std::io::Error),
}

impl BoundedError {
    fn map_io(self, f: impl FnOnce(String) -> ReleaseError) -> ReleaseError {
        match self {
            BoundedError::TooLarge(e) => e,
            BoundedError::Io(e) => f(e.to_string()),
        }
    }
}

/// Reads all of `reader`, failing as soon as it yields more than `max` bytes (a small
/// compressed file can expand enormously: a decompression bomb).
fn read_bounded(reader: impl Read, max: u64, path: &str) -> Result<Vec<u8>, BoundedError> {
    let mut out = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(BoundedError::Io)?;
    if out.len() as u64 > max {
        return Err(BoundedError::TooLarge(ReleaseError::TooLarge {
            path: path.to_owned(),
            limit: max,
        }));
    }
    Ok(out)
}

/// One field's value and the line its name is on (1-based).
struct Field {
    value: String,
    line: usize,
}

/// The 1-based line of byte offset `at`.
fn line_of(bytes: &[u8], at: usize) -> usize {
    bytes
        .get(..at)
        .unwrap_or(bytes)
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        .saturating_add(1)
}

/// Reads one deb822 paragraph into lower-cased field names. Continuation lines (starting
/// with a space or tab) are joined with `\n`; blank lines before and after are allowed,
/// a second paragraph is not, nor is a duplicate field.
fn parse_paragraph(text: &str) -> Result<BTreeMap<String, Field>, ReleaseError> {
    let mut fields: BTreeMap<String, Field> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut ended = false;
    for (index, line) in text.lines().enumerate() {
        let line_no = index.saturating_add(1);
        let malformed = |reason: String| ReleaseError::Malformed {
            line: line_no,
            reason,
        };
        if line.trim().is_empty() {
            if !fields.is_empty() {
                ended = true;
            }
            current = None;
            continue;
        }
        if ended {
            return Err(malformed("a second paragraph after a blank line".into()));
        }
        if line.starts_with([' ', '\t']) {
            let Some(name) = &current else {
                return Err(malformed("a continuation line with no field before it".into()));
            };
            if let Some(field) = fields.get_mut(name) {
                field.value.push('\n');
                field.value.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!("`{line}` is not `Field: value`")));
        };
        let valid_name = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            && !name.starts_with(['#', '-']);
        if !valid_name {
            return Err(malformed(format!("`{name}` is not a field name")));
        }
        let key = name.to_ascii_lowercase();
        if fields.contains_key(&key) {
            return Err(malformed(format!("the field `{name}` appears twice")));
        }
        fields.insert(
            key.clone(),
            Field {
                value: value.trim().to_owned(),
                line: line_no,
            },
        );
        current = Some(key);
    }
    if fields.is_empty() {
        return Err(ReleaseError::Malformed {
            line: 1,
            reason: "no fields at all".into(),
        });
    }
    Ok(fields)
}

/// The `SHA256:` field: one `<hex> <size> <path>` per continuation line.
fn parse_sha256_list(field: &Field) -> Result<BTreeMap<String, FileEntry>, ReleaseError> {
    let mut list = BTreeMap::new();
    // The first line (after `SHA256:`) is empty; entries follow, one per line.
    for (offset, entry) in field.value.split('\n').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let line = field.line.saturating_add(offset);
        let malformed = |reason: String| ReleaseError::Malformed { line, reason };
        let parts: Vec<&str> = entry.split_whitespace().collect();
        let [hash, size, path] = parts.as_slice() else {
            return Err(malformed(format!("`{entry}` is not `<sha256> <size> <path>`")));
        };
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hash, &mut sha256)
            .map_err(|_| malformed(format!("`{hash}` is not a sha256 digest")))?;
        let size: u64 = size
            .parse()
            .map_err(|_| malformed(format!("`{size}` is not a size")))?;
        let unsafe_path =
            path.starts_with('/') || path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        if unsafe_path {
            return Err(malformed(format!(
                "`{path}` is not a relative path inside the suite"
            )));
        }
        if list
            .insert((*path).to_owned(), FileEntry { sha256, size })
            .is_some()
        {
            return Err(malformed(format!("`{path}` is listed twice")));
        }
    }
    Ok(list)
}

/// Parses apt's `Date`/`Valid-Until` format, RFC 2822 as `date -R -u` prints it:
/// `Sat, 11 Jul 2026 10:16:37 UTC`; the day name is optional, the zone is `UTC`, `GMT`,
/// `Z` or a numeric offset (`+0000`, `-0130`).
// Every field is range-checked before the arithmetic (year ≤ 9999), so none overflows.
#[allow(clippy::arithmetic_side_effects)]
pub fn parse_date(text: &str) -> Option<i64> {
    let text = match text.split_once(',') {
        Some((_day, rest)) => rest,
        None => text,
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month))
        .and_then(|m| i64::try_from(m).ok())?
        .checked_add(1)?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    let (h, m, s): (i64, i64, i64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
    if !(1..=31).contains(&day) || !(0..=23).contains(&h) || !(0..=59).contains(&m) || !(0..=60).contains(&s)
    {
        return None;
    }
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let offset = match *zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z => {
            let (sign, digits) = match z.split_at_checked(1)? {
                ("+", d) => (1, d),
                ("-", d) => (-1, d),
                _ => return None,
            };
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hh: i64 = digits.get(..2)?.parse().ok()?;
            let mm: i64 = digits.get(2..)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
#[allow(clippy::arithmetic_side_effects)] // callers pass range-checked dates
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)] // tests index their own fixtures
mod tests {
    use super::*;

    const SAMPLE: &str = "Origin: Debian
Label: Debian
Suite: oldstable
Version: 12.15
Codename: bookworm
Date: Sat, 11 Jul 2026 10:16:37 UTC
Valid-Until: Sat, 18 Jul 2026 10:16:37 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64 armhf
Components: main contrib
No-Support-for-Architecture-all: Packages
Description: Debian 12.15 Released 11 July 2026
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
SHA256:
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-arm64/Packages
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-arm64/Packages.gz
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-arm64/Packages.xz
 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855        0 main/binary-armhf/Packages.gz";

    #[test]
    fn parses_debian_fields() {
        let r = Release::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(r.origin.as_deref(), Some("Debian"));
        assert_eq!(r.suite.as_deref(), Some("oldstable"));
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert_eq!(r.version.as_deref(), Some("12.15"));
        assert!(r.acquire_by_hash);
        assert!(r.all_in_arch_indices);
        assert!(
            !Release::parse(
                SAMPLE
                    .replace("No-Support-for-Architecture-all: Packages\n", "")
                    .as_bytes()
            )
            .unwrap()
            .all_in_arch_indices
        );
        assert_eq!(r.architectures, ["all", "amd64", "arm64", "armhf"]);
        assert_eq!(r.components, ["main", "contrib"]);
        // `date -u -d '2026-07-11 10:16:37' +%s`
        assert_eq!(r.date.as_ref().map(|d| d.1), Some(1_783_764_997));
        assert_eq!(r.sha256.len(), 4);
    }

    #[test]
    fn suite_or_codename_must_match() {
        let r = Release::parse(SAMPLE.as_bytes()).unwrap();
        r.check_suite("bookworm").unwrap();
        r.check_suite("oldstable").unwrap();
        let e = r.check_suite("trixie").unwrap_err();
        assert!(matches!(e, ReleaseError::SuiteMismatch { .. }), "{e}");
        assert!(e.to_string().contains("codename `bookworm`"), "{e}");
    }

    #[test]
    fn index_prefers_xz_then_gz_then_plain() {
        let r = Release::parse(SAMPLE.as_bytes()).unwrap();
        let arm64 = r.index("main/binary-arm64/Packages").unwrap();
        assert_eq!(arm64.compression, Compression::Xz);
        assert_eq!(arm64.path, "main/binary-arm64/Packages.xz");
        assert!(arm64.uncompressed.is_some());
        assert_eq!(
            arm64.by_hash_path(),
            "main/binary-arm64/by-hash/SHA256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let armhf = r.index("main/binary-armhf/Packages").unwrap();
        assert_eq!(armhf.compression, Compression::Gzip);
        assert!(armhf.uncompressed.is_none());
        let e = r.index("main/binary-riscv64/Packages").unwrap_err();
        assert!(matches!(e, ReleaseError::IndexNotListed { .. }), "{e}");
    }

    #[test]
    fn valid_until_is_checked_against_the_given_time() {
        let r = Release::parse(SAMPLE.as_bytes()).unwrap();
        let until = r.valid_until.as_ref().unwrap().1;
        r.check_valid_at(until - 1).unwrap();
        assert!(matches!(
            r.check_valid_at(until),
            Err(ReleaseError::Expired { .. })
        ));
    }

    #[test]
    fn dates_in_the_forms_apt_writes() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_date("01 Jan 1970 00:00:00 +0100"), Some(-3600));
        assert_eq!(parse_date("Sat, 29 Feb 2020 12:00:00 GMT"), Some(1_582_977_600));
        assert_eq!(parse_date("Sat, 29 Feb 2020 12:00:00 -0130"), Some(1_582_983_000));
        for bad in [
            "",
            "yesterday",
            "Sat, 11 Foo 2026 10:16:37 UTC",
            "11 Jul 2026 25:00:00 UTC",
            "11 Jul 2026 10:00:00 CEST",
            "11 Jul 2026 10:00 UTC",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_release_files_are_rejected_with_their_line() {
        let cases: &[(&str, usize)] = &[
            ("Suite: a\nSuite: b\nSHA256:\n", 2),
            ("Suite: a\n\nCodename: b\nSHA256:\n", 3),
            (" leading continuation\n", 1),
            ("Suite: a\nno colon here\n", 2),
            ("Suite: a\nSHA256:\n zz 1 main/Packages\n", 3),
            ("Suite: a\nSHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 -1 main/Packages\n", 3),
            ("Suite: a\nSHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 1 ../../etc/passwd\n", 3),
            ("Suite: a\nSHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 1 /abs\n", 3),
            ("Suite: a\nDate: tomorrow\nSHA256:\n", 2),
        ];
        for (text, line) in cases {
            match Release::parse(text.as_bytes()) {
                Err(ReleaseError::Malformed { line: l, .. }) => assert_eq!(l, *line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            Release::parse(b"Suite: a\n"),
            Err(ReleaseError::MissingField { field: "SHA256" })
        ));
        assert!(matches!(
            Release::parse(b"Origin: x\nSHA256:\n"),
            Err(ReleaseError::MissingField { field: "Suite" })
        ));
        assert!(matches!(
            Release::parse(b"Suite: \xff\n"),
            Err(ReleaseError::Malformed { line: 1, .. })
        ));
    }

    fn release_for(files: &[(&str, &[u8])]) -> Release {
        let mut text = String::from("Suite: test\nSHA256:\n");
        for (path, bytes) in files {
            text.push_str(&format!(
                " {} {} {}\n",
                hex::encode(Sha256::digest(bytes)),
                bytes.len(),
                path
            ));
        }
        Release::parse(text.as_bytes()).unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn verify_index_checks_both_ends_of_decompression() {
        let plain = b"Package: hello\nVersion: 1.0\n\n".repeat(50);
        let packed = xz(&plain);
        let r = release_for(&[
            ("main/binary-arm64/Packages", &plain),
            ("main/binary-arm64/Packages.xz", &packed),
        ]);
        let index = r.index("main/binary-arm64/Packages").unwrap();
        assert_eq!(verify_index(&packed, &index, 1 << 20).unwrap(), plain);

        // One flipped byte: size matches, digest does not.
        let mut tampered = packed.clone();
        let last = tampered.len() - 10;
        tampered[last] ^= 1;
        assert!(matches!(
            verify_index(&tampered, &index, 1 << 20),
            Err(ReleaseError::HashMismatch { .. })
        ));
        assert!(matches!(
            verify_index(&packed[1..], &index, 1 << 20),
            Err(ReleaseError::SizeMismatch { .. })
        ));
        // The bound holds before the whole file is inflated.
        assert!(matches!(
            verify_index(&packed, &index, 100),
            Err(ReleaseError::TooLarge { limit: 100, .. })
        ));
    }

    #[test]
    fn verify_index_checks_the_listed_uncompressed_digest() {
        // A `.gz` that matches its own entry but inflates to something else than the
        // listed uncompressed file: the signed list contradicts itself, which is corrupt.
        let plain = b"Package: a\n".to_vec();
        let other = gzip(b"Package: b\n");
        let r = release_for(&[
            ("main/binary-arm64/Packages", &plain),
            ("main/binary-arm64/Packages.gz", &other),
        ]);
        let index = r.index("main/binary-arm64/Packages").unwrap();
        assert_eq!(index.compression, Compression::Gzip);
        match verify_index(&other, &index, 1 << 20) {
            Err(ReleaseError::HashMismatch { path, .. }) => {
                assert_eq!(path, "main/binary-arm64/Packages")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verify_index_reports_undecompressable_bytes_as_corrupt() {
        let junk = b"not xz at all".to_vec();
        let r = release_for(&[("main/binary-arm64/Packages.xz", &junk)]);
        let index = r.index("main/binary-arm64/Packages").unwrap();
        assert!(matches!(
            verify_index(&junk, &index, 1 << 20),
            Err(ReleaseError::Corrupt {
                compression: Compression::Xz,
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Release::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_field_soup(text in "([A-Za-z-]{1,8}:[ -~]{0,20}\n| [0-9a-f ]{0,70}[a-z/.]{0,10}\n|\n){0,12}") {
            let _ = Release::parse(text.as_bytes());
        }
    }
}
