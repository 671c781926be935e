//! The download engine: a URL plus its pinned sha256 in, a verified local file out.
//!
//! Base images, source archives and packages are named by the sha256 their publisher gives;
//! the `fetch` step (`crate::steps::fetch`) keys on that digest and asks this module for the
//! bytes. It makes the bytes match the digest or fails loudly:
//!
//! - sources are tried in order: the workspace's mirrors for the longest matching URL prefix,
//!   then the URL itself; `http`, `https` and `file` are the only schemes;
//! - transient failures (connection refused or reset, timeouts, a name server that does not
//!   answer, 408, 429, 5xx) are retried with exponential backoff, honouring a small
//!   `Retry-After`; permanent ones (a host name that does not exist, 401, 403, 404, 410 and
//!   other 4xx, a missing local file) move on to the next source at once, without retrying;
//! - an interrupted download resumes from the partial file with `Range`, and a server that
//!   ignores the range is handled by starting over;
//! - sha256 and BLAKE3 (the store's digest) are computed in the same pass as the bytes are
//!   written, and a file whose sha256 is wrong is deleted, so it is never cached or resumed.
//!   A source that delivers wrong bytes is a digest mismatch (the pin or that source is
//!   wrong), never "unavailable", even when another source also failed;
//! - nothing is unbounded: a download stops with an error as soon as more bytes arrive than
//!   the declared `size` or [`FetchConfig::max_size`] allow (a `Content-Length` that is too
//!   large is refused before the body), `file://` reads only regular files (never a device
//!   or a FIFO), a transfer that stalls for [`FetchConfig::read_timeout`] or trickles slower
//!   than [`MIN_BYTES_PER_WINDOW`] per `read_timeout` fails and is retried with resume, and a
//!   cancelled build stops the transfer at the next chunk;
//! - credentials never leave the request: userinfo in a URL (`https://user:token@host/…`)
//!   is sent but shown everywhere as `***` ([`redact_url`], the one way every URL reaches a
//!   message, a progress line, a manifest or a record), and a [`Netrc`] file supplies
//!   credentials by host so definitions need none;
//! - the partial file is the caller's path (named after the sha256, so a build killed
//!   mid-download resumes), held under an exclusive lock for the whole fetch so concurrent
//!   builders on one cache wait for each other instead of writing the same file, and deleted
//!   when the fetch fails or its [`FetchOutcome`] is dropped.
//!
//! It prints nothing and reads no environment (except reqwest's standard proxy variables when
//! [`FetchConfig::system_proxy`] asks for them); the application renders progress through
//! [`FetchProgress`] and errors through miette.

#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use sha2::{Digest as _, Sha256};
use w4b_cache::Digest;

/// The `User-Agent` of every request, so mirror operators can tell w4b apart.
pub const USER_AGENT: &str = concat!("w4b/", env!("CARGO_PKG_VERSION"));

/// Size of one read from a source. Large enough that per-chunk overhead (hashing setup,
/// progress callbacks) is negligible next to the copy, small enough to resume finely.
const CHUNK: usize = 256 * 1024;

/// Size of one read from a `file://` source: each piece is hashed with SHA-256 on a
/// thread of its own while it is written, and large pieces keep that hand-off rare.
const FILE_CHUNK: usize = 4 << 20;

/// How often one source may force a restart from byte 0 (server ignored or botched the
/// range, or a resumed file turned out wrong). Each restart drops the `Range` header, so one
/// is enough for an honest server; the cap only stops a broken one from looping.
const MAX_RESTARTS_PER_SOURCE: u32 = 2;

/// The fewest bytes a transfer must deliver in every [`FetchConfig::read_timeout`] window; a
/// slower one (a server trickling a byte a second, which no read timeout catches) fails and is
/// retried. 64 KiB per the default 60 s is about 1 KiB/s: slower than that, a base image
/// would take weeks.
pub const MIN_BYTES_PER_WINDOW: u64 = 64 * 1024;

/// The default of [`FetchConfig::max_size`]: 16 GiB, four times the largest Raspberry Pi OS
/// image (the full desktop image is about 3 GiB compressed).
pub const DEFAULT_MAX_SIZE: u64 = 16 << 30;

/// How often a wait (a retry's backoff, another builder's lock) looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// A sha256 digest as the publisher gives it.
pub type Sha256Digest = [u8; 32];

/// Parses the 64 hex characters of a sha256 digest, as written in a definition.
pub fn parse_sha256(text: &str) -> Result<Sha256Digest, FetchError> {
    let mut out = [0u8; 32];
    let trimmed = text.trim();
    if trimmed.len() != 64 || hex::decode_to_slice(trimmed, &mut out).is_err() {
        return Err(FetchError::InvalidSha256 {
            text: text.to_owned(),
        });
    }
    Ok(out)
}

/// Settings of the HTTP client, fixed for the life of a [`Fetcher`].
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Limit on establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Limit on waiting for the response head and for each read of the body; a stalled
    /// transfer fails after this long and is retried with resume.
    pub read_timeout: Duration,
    /// Honour `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` as reqwest reads them. Tests turn it off
    /// so nothing they do can leave `127.0.0.1`.
    pub system_proxy: bool,
    /// The most bytes any one download may have, declared `size` or not.
    pub max_size: u64,
    /// Credentials by host, for URLs that carry none.
    pub netrc: Netrc,
}

impl Default for FetchConfig {
    fn default() -> FetchConfig {
        FetchConfig {
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            system_proxy: true,
            max_size: DEFAULT_MAX_SIZE,
            netrc: Netrc::default(),
        }
    }
}

/// `url` fit for display and records: the userinfo (`user:password@`) of a URL replaced by
/// `***`, everything else unchanged. Every path by which a URL leaves the download engine or
/// the compiler (errors, progress, manifests, step displays) goes through it, so a token
/// written into a URL is sent to the server and nowhere else.
///
/// A URL the `url` crate cannot parse is redacted by text, conservatively: everything between
/// `://` and the last `@` before the query is hidden.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    if let Ok(mut parsed) = Url::parse(url) {
        if parsed.username().is_empty() && parsed.password().is_none() {
            return Cow::Borrowed(url);
        }
        if parsed.set_password(None).is_ok() && parsed.set_username("***").is_ok() {
            return Cow::Owned(parsed.into());
        }
    }
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let start = scheme_end + 3;
    let head_end = url[start..].find(['?', '#']).map_or(url.len(), |i| start + i);
    match url[start..head_end].rfind('@') {
        None => Cow::Borrowed(url),
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &url[start + at..])),
    }
}

/// Credentials by host, in the format of `~/.netrc` (`machine HOST login USER password
/// SECRET`, optionally `default login USER password SECRET` for every other host; `account`
/// and `macdef` are read and ignored; `#` starts a comment line; a token may be
/// double-quoted). Applied as HTTP basic authentication to a source whose URL carries no
/// userinfo, so definitions name clean URLs. `Debug` shows hosts, never secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    machines: Vec<(String, Login)>,
    default: Option<Login>,
}

#[derive(Clone, Default, PartialEq, Eq)]
struct Login {
    login: String,
    password: String,
}

impl std::fmt::Debug for Netrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netrc")
            .field(
                "machines",
                &self.machines.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
            )
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl Netrc {
    /// Reads a netrc file. A missing file is no credentials when `required` is false (the
    /// default `~/.netrc`) and an error when it is true (a file named by `W4B_NETRC`).
    pub fn load(path: &Path, required: bool) -> Result<Netrc, FetchError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(Netrc::default()),
            Err(source) => {
                return Err(FetchError::NetrcIo {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Netrc::parse(&text).map_err(|reason| FetchError::NetrcSyntax {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses the text of a netrc file; the error says what is wrong, never a secret.
    pub fn parse(text: &str) -> Result<Netrc, String> {
        let mut tokens = tokens(text)?.into_iter();
        let mut netrc = Netrc::default();
        // The entry being read: `Some(host)` for `machine`, `None` for `default`.
        let mut current: Option<(Option<String>, Login)> = None;
        let finish = |netrc: &mut Netrc, entry: Option<(Option<String>, Login)>| match entry {
            Some((Some(host), login)) => netrc.machines.push((host.to_ascii_lowercase(), login)),
            Some((None, login)) => netrc.default = Some(login),
            None => {}
        };
        while let Some(token) = tokens.next() {
            let mut value = |what: &str| {
                tokens
                    .next()
                    .ok_or_else(|| format!("`{token}` at the end of the file has no {what}"))
            };
            match token.as_str() {
                "machine" => {
                    let host = value("host name")?;
                    finish(&mut netrc, current.take());
                    current = Some((Some(host), Login::default()));
                }
                "default" => {
                    finish(&mut netrc, current.take());
                    current = Some((None, Login::default()));
                }
                "login" | "password" | "account" => {
                    let v = value("value")?;
                    let Some((_, login)) = current.as_mut() else {
                        return Err(format!("`{token}` comes before any `machine` or `default`"));
                    };
                    match token.as_str() {
                        "login" => login.login = v,
                        "password" => login.password = v,
                        _ => {}
                    }
                }
                "macdef" => {
                    // A macro runs to the next empty line; `tokens` already dropped it.
                    value("name")?;
                }
                other => {
                    let shown: String = other.chars().take(20).collect();
                    return Err(format!(
                        "unexpected `{shown}`: expected `machine`, `default`, `login`, `password`, `account` or `macdef`"
                    ));
                }
            }
        }
        finish(&mut netrc, current);
        Ok(netrc)
    }

    /// The login and password for `host`: its `machine` entry (the first one, as curl and
    /// ftp read it), else the `default` entry.
    fn for_host(&self, host: &str) -> Option<&Login> {
        let host = host.to_ascii_lowercase();
        self.machines
            .iter()
            .find(|(m, _)| *m == host)
            .map(|(_, l)| l)
            .or(self.default.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.machines.is_empty() && self.default.is_none()
    }
}

/// The tokens of a netrc file: whitespace-separated, `"…"` quoting with `\` escapes, `#`
/// comment lines, and `macdef` bodies (up to an empty line) dropped.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut in_macro = false;
    for line in text.lines() {
        if in_macro {
            in_macro = !line.trim().is_empty();
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut chars = line.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let Some(&first) = chars.peek() else { break };
            let mut token = String::new();
            if first == '"' {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err("a quoted token is not closed on its line".to_owned()),
                        Some('"') => break,
                        Some('\\') => token.extend(chars.next()),
                        Some(c) => token.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    token.push(c);
                }
            }
            out.push(token);
        }
        // `macdef NAME` as the line's last two tokens starts a macro on the next line.
        if out.len() >= 2 && out[out.len() - 2] == "macdef" {
            in_macro = true;
        }
    }
    Ok(out)
}

/// One file to download.
#[derive(Clone, Debug)]
pub struct FetchRequest<'a> {
    /// The URL as written in the definition.
    pub url: &'a str,
    /// The digest the bytes must have.
    pub sha256: Sha256Digest,
    /// Where the sha256 was declared, for the help of a mismatch (e.g. `` `defs/bases/rpios.yaml` ``).
    pub declared_in: &'a str,
    /// Workspace mirrors: URL prefix → replacement prefixes, tried in order before the URL.
    pub mirrors: &'a [(String, Vec<String>)],
    /// Extra attempts per source after the first, for transient failures.
    pub retries: u32,
    /// Delay before the first retry of a source; doubles on each further retry.
    pub backoff: Duration,
    /// Upper bound of any delay, including one asked for by `Retry-After`.
    pub max_backoff: Duration,
    /// The size the file must have, when the definition declares one: a source that sends
    /// more is cut off at once. Never above [`FetchConfig::max_size`].
    pub size: Option<u64>,
}

impl<'a> FetchRequest<'a> {
    /// A request with no mirrors and the default retry policy (5 retries, 500 ms doubling up
    /// to 30 s).
    pub fn new(url: &'a str, sha256: Sha256Digest, declared_in: &'a str) -> FetchRequest<'a> {
        FetchRequest {
            url,
            sha256,
            declared_in,
            mirrors: &[],
            retries: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            size: None,
        }
    }
}

/// Receives progress of a download. Every method has an empty default.
///
/// The sequence per attempt is `started` (the position is 0 again), then `advanced` as bytes
/// arrive; a resumed attempt reports the bytes already on disk with one `advanced` right
/// after `started`, so a bar shows the true position.
pub trait FetchProgress: Sync {
    /// An attempt on `url` began; `total` is the full size when the source tells it.
    fn started(&self, _url: &str, _total: Option<u64>) {}
    /// `bytes` more bytes are in the partial file.
    fn advanced(&self, _bytes: u64) {}
    /// Attempt number `attempt` (from 1) on `url` failed with `error`; another follows.
    fn retrying(&self, _url: &str, _attempt: u32, _error: &str) {}
    /// `url` is given up on with `error`; the next source (if any) follows.
    fn source_failed(&self, _url: &str, _error: &str) {}
    /// Another fetch of the same file (another builder on this cache) holds the partial
    /// file; this one waits for it.
    fn waiting(&self) {}
    /// Whether the build was cancelled: the transfer stops at the next chunk or wait.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl FetchProgress for NoProgress {}

/// A verified download, still in its partial file. The value holds the file open and
/// locked: read it with [`FetchOutcome::file`] and import it; dropping the value deletes the
/// file and lets the next builder waiting for the same path go on.
#[derive(Debug)]
pub struct FetchOutcome {
    /// The `partial` path given to [`Fetcher::fetch_to`], now complete and verified.
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// The store's digest of the same bytes, computed in the same pass.
    pub blake3: Digest,
    /// The URL that served the bytes (a mirror's, or the requested one), redacted.
    pub source: String,
    /// Whether `source` is a mirror rather than the requested URL.
    pub from_mirror: bool,
    /// Attempts made on `source`, from 1.
    pub attempts: u32,
    partial: Partial,
}

impl FetchOutcome {
    /// The verified file as a temp file at its partial path, still locked (the lock goes
    /// with the open file): for a store on the same filesystem to publish by linking it
    /// rather than copying it. Dropping the temp file removes the path, then closes the
    /// file, which releases the lock — the order [`Partial`]'s waiters rely on.
    pub fn into_temp_file(mut self) -> Result<tempfile::NamedTempFile, FetchError> {
        let file = self
            .partial
            .file
            .try_clone()
            .map_err(|source| io_error(&self.path, source))?;
        let path = tempfile::TempPath::try_from_path(self.partial.path.clone())
            .map_err(|source| io_error(&self.path, source))?;
        self.partial.handed_over = true;
        Ok(tempfile::NamedTempFile::from_parts(file, path))
    }

    /// The verified bytes, positioned at their start.
    pub fn file(&mut self) -> Result<&mut File, FetchError> {
        self.partial
            .file
            .seek(SeekFrom::Start(0))
            .map_err(|source| io_error(&self.path, source))?;
        Ok(&mut self.partial.file)
    }
}

/// Why one source was given up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFailure {
    /// The source's URL, redacted.
    pub url: String,
    pub attempts: u32,
    pub error: String,
    /// The answer will not change by asking again (404, an unknown host, a missing local
    /// file), as opposed to a transient failure that exhausted its retries.
    pub permanent: bool,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FetchError {
    #[error("`{url}` is not a valid URL: {reason}")]
    #[diagnostic(
        code(w4b::fetch::invalid_url),
        help("write an absolute URL such as `https://host/path` or `file:///absolute/path`")
    )]
    InvalidUrl { url: String, reason: String },

    #[error("cannot fetch `{url}`: the `{scheme}` scheme is not supported")]
    #[diagnostic(
        code(w4b::fetch::unsupported_scheme),
        help("use an `https://`, `http://` or `file://` URL")
    )]
    UnsupportedScheme { url: String, scheme: String },

    #[error("`{text}` is not a sha256 digest")]
    #[diagnostic(
        code(w4b::fetch::invalid_sha256),
        help(
            "write the 64 hex characters the publisher gives (e.g. the `.sha256` file next to the download)"
        )
    )]
    InvalidSha256 { text: String },

    /// A source delivered complete bytes whose sha256 is not the pinned one. Reported even
    /// when other sources failed for other reasons (listed in `others`): wrong bytes mean the
    /// pin or that source is wrong, and no amount of retrying or mirroring fixes that.
    #[error(
        "the sha256 of `{url}` is not the pinned one\n  expected: {expected}\n  actual:   {actual}{}",
        list_others(.others)
    )]
    #[diagnostic(
        code(w4b::fetch::digest_mismatch),
        help(
            "either the sha256 pinned in {declared_in} is wrong (the file changed upstream) or `{url}` serves another file; the download was discarded"
        )
    )]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
        declared_in: String,
        /// The other sources tried and how each failed (mismatches included).
        others: Vec<SourceFailure>,
    },

    #[error("cannot download `{url}`; every source failed:\n{}", list_failures(.failures))]
    #[diagnostic(
        code(w4b::fetch::unavailable),
        help("check the network, or add a mirror for this URL under `mirrors:` in `w4b.yaml` (e.g. `\"https://downloads.raspberrypi.com/\": [\"file:///srv/mirror/\"]`), or download the file yourself and use a `file://` URL")
    )]
    Unavailable {
        url: String,
        failures: Vec<SourceFailure>,
    },

    /// Every source answered with something that asking again will not change: the file
    /// or the host does not exist, or access is refused. Nothing was retried.
    #[error("cannot download `{url}`; no source has it:\n{}", list_failures(.failures))]
    #[diagnostic(
        code(w4b::fetch::not_found),
        help("check the URL declared in {declared_in} (and the mirrors for it in `w4b.yaml`): these answers are final, so they were not retried")
    )]
    NotFound {
        url: String,
        declared_in: String,
        failures: Vec<SourceFailure>,
    },

    /// A source sent more bytes than allowed. Reported like a digest mismatch: the source
    /// serves something else (or something endless), and retrying will not change it.
    #[error(
        "`{url}` sent more than {limit} bytes, the {why}; the download was stopped and discarded{}",
        list_others(.others)
    )]
    #[diagnostic(
        code(w4b::fetch::too_large),
        help("if the file really is this large, raise {raise}; otherwise the URL serves another file")
    )]
    TooLarge {
        url: String,
        limit: u64,
        /// What set the limit (`size declared in …`, `downloads.max_size of w4b.yaml`).
        why: String,
        /// What to raise (`` `size:` in … ``).
        raise: String,
        others: Vec<SourceFailure>,
    },

    #[error(
        "the `size` declared in {declared_in} ({size} bytes) is above the download limit of {max} bytes"
    )]
    #[diagnostic(
        code(w4b::fetch::size_over_limit),
        help("raise `downloads: {{max_size: …}}` in `w4b.yaml` if this file really is that large")
    )]
    SizeOverLimit {
        size: u64,
        max: u64,
        declared_in: String,
    },

    #[error("cannot fetch `{url}`: `{}` is not a regular file", path.display())]
    #[diagnostic(
        code(w4b::fetch::not_a_file),
        help("a `file://` URL must name a regular file; devices, FIFOs, sockets and directories are refused so nothing can be read without end")
    )]
    NotRegularFile { url: String, path: PathBuf },

    #[error("cannot read the credentials file `{}`", path.display())]
    #[diagnostic(
        code(w4b::fetch::netrc),
        help("`W4B_NETRC` names a netrc file (default `~/.netrc`, which may be absent); unset it or point it at a readable file")
    )]
    NetrcIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the credentials file `{}` is not a netrc file: {reason}", path.display())]
    #[diagnostic(
        code(w4b::fetch::netrc_syntax),
        help("write one entry per host: `machine downloads.example.org login ci password <token>`")
    )]
    NetrcSyntax { path: PathBuf, reason: String },

    #[error("the download was interrupted")]
    #[diagnostic(code(w4b::fetch::cancelled))]
    Cancelled,

    #[error("cannot write the download to `{}`", path.display())]
    #[diagnostic(
        code(w4b::fetch::io),
        help("the download is written in the cache's `tmp` folder: check its free space and permissions")
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot set up the HTTP client")]
    #[diagnostic(code(w4b::fetch::client))]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

fn list_others(others: &[SourceFailure]) -> String {
    if others.is_empty() {
        return String::new();
    }
    format!("\nother sources:\n{}", list_failures(others))
}

fn list_failures(failures: &[SourceFailure]) -> String {
    let lines: Vec<String> = failures
        .iter()
        .map(|f| {
            let tries = if f.attempts == 1 { "attempt" } else { "attempts" };
            format!("  - `{}` ({} {tries}): {}", f.url, f.attempts, f.error)
        })
        .collect();
    lines.join("\n")
}

/// The sources for `url`, in the order they are tried: the mirrors of the longest matching
/// prefix (the first declared wins a tie), then `url` itself; duplicates are dropped.
pub fn sources(url: &str, mirrors: &[(String, Vec<String>)]) -> Vec<String> {
    let mut best: Option<&(String, Vec<String>)> = None;
    for entry in mirrors {
        if url.starts_with(entry.0.as_str()) && best.is_none_or(|b| entry.0.len() > b.0.len()) {
            best = Some(entry);
        }
    }
    let mut out: Vec<String> = Vec::new();
    if let Some((prefix, replacements)) = best {
        let rest = &url[prefix.len()..];
        for replacement in replacements {
            let candidate = format!("{replacement}{rest}");
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    if !out.iter().any(|s| s == url) {
        out.push(url.to_owned());
    }
    out
}

/// Checks that `url` is absolute and uses a supported scheme. The workspace loader uses it
/// on `mirrors:` so a typo is reported where it was written, not at the first download.
pub fn check_url(url: &str) -> Result<(), FetchError> {
    parse_source(url).map(|_| ())
}

enum Source {
    Http(Url),
    File(PathBuf),
}

/// How one unpinned GET ended, when it did not deliver.
enum GetError {
    TooLarge,
    Permanent(String),
    Transient(String),
}

fn parse_source(url: &str) -> Result<Source, FetchError> {
    let parsed = Url::parse(url).map_err(|e| FetchError::InvalidUrl {
        url: redact_url(url).into_owned(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "http" | "https" => Ok(Source::Http(parsed)),
        "file" => parsed
            .to_file_path()
            .map(Source::File)
            .map_err(|()| FetchError::InvalidUrl {
                url: redact_url(url).into_owned(),
                reason: "a `file://` URL must name an absolute local path".to_owned(),
            }),
        other => Err(FetchError::UnsupportedScheme {
            url: redact_url(url).into_owned(),
            scheme: other.to_owned(),
        }),
    }
}

/// The delay before the next retry: the backoff, or a larger `Retry-After`, never more
/// than `max`.
fn retry_delay(backoff: Duration, retry_after: Option<Duration>, max: Duration) -> Duration {
    backoff.max(retry_after.unwrap_or(Duration::ZERO)).min(max)
}

/// A display of an error with its causes, which is where reqwest and hyper put the
/// interesting part ("connection refused", "operation timed out").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

pub(crate) fn reqwest_chain(error: reqwest::Error) -> String {
    // The URL is already in every message we build around this one.
    chain(&error.without_url())
}

/// Classifies a request that got no response. A host name the name server says does not
/// exist is permanent; everything else (refused, reset, timed out, a name server that did
/// not answer) may pass, and is retried. Connection refused counts as transient on purpose:
/// it is what a server restarting or a load balancer draining looks like.
fn send_error(error: reqwest::Error) -> AttemptError {
    let text = reqwest_chain(error);
    if is_unknown_host(&text) {
        AttemptError::GiveUp(text)
    } else {
        AttemptError::Retry {
            error: text,
            retry_after: None,
        }
    }
}

/// Whether an error chain says the host name does not exist. The resolver's verdict reaches
/// us only as text: hyper's connector wraps it as `dns error`, and std renders the
/// `getaddrinfo` code with `gai_strerror` (`EAI_NONAME`, `EAI_NODATA` on glibc and musl;
/// the BSD wording on macOS). `EAI_AGAIN` ("Temporary failure in name resolution") is not
/// among them: an unreachable name server is transient.
fn is_unknown_host(chain: &str) -> bool {
    const FINAL: [&str; 4] = [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname provided",
        "Name has no usable address",
    ];
    chain.contains("dns error") && FINAL.iter().any(|m| chain.contains(m))
}

/// How one attempt on one source ended, short of success.
enum AttemptError {
    /// Transient: try this source again after a delay.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Permanent for this source: move on to the next without retrying.
    GiveUp(String),
    /// The bytes are complete but their sha256 is `actual`; the partial file is emptied.
    Mismatch { actual: Sha256Digest },
    /// The source sent (or announced) more than the limit; the partial file is emptied.
    TooLarge,
    /// The partial file was truncated; start again from 0 without counting an attempt.
    Restart,
    /// Our own side failed (disk full, permissions): stop everything.
    Local(FetchError),
}

/// sha256 and BLAKE3 of the same bytes, fed together.
struct Hashers {
    sha256: Sha256,
    blake3: blake3::Hasher,
    size: u64,
}

impl Hashers {
    fn new() -> Hashers {
        Hashers {
            sha256: Sha256::new(),
            blake3: blake3::Hasher::new(),
            size: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.blake3.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// [`update`](Self::update) with SHA-256 on a thread of its own while this one runs
    /// `beside` (writing the piece) and BLAKE3: a local file's pieces are hashed while
    /// they are written. A scoped thread per piece rather than a pool, whose idle workers
    /// spin between pieces (measured: more CPU, no faster, on 2 busy cores).
    fn update_beside<T>(&mut self, bytes: &[u8], beside: impl FnOnce() -> T) -> T {
        let Hashers { sha256, blake3, size } = self;
        *size += bytes.len() as u64;
        std::thread::scope(|s| {
            let sha = s.spawn(|| sha256.update(bytes));
            let out = beside();
            blake3.update(bytes);
            if let Err(panic) = sha.join() {
                std::panic::resume_unwind(panic);
            }
            out
        })
    }

    fn finish(self) -> (Sha256Digest, Digest, u64) {
        (
            self.sha256.finalize().into(),
            Digest::from(self.blake3.finalize()),
            self.size,
        )
    }
}

/// The partial file of one fetch: open, locked exclusively for the whole fetch, and deleted
/// when dropped (a failed fetch leaves nothing behind; a verified one is deleted once the
/// caller has imported it). Only a process killed outright leaves it, and the next fetch of
/// the same file resumes from it.
#[derive(Debug)]
struct Partial {
    path: PathBuf,
    file: File,
    /// The name was handed over ([`FetchOutcome::into_temp_file`]): whoever took it
    /// removes it, and dropping this must not (the path may name a newer fetch's file).
    handed_over: bool,
}

impl Partial {
    /// Opens (or creates) `path` and takes its lock, waiting while another fetch holds it.
    ///
    /// The holder deletes the file before it unlocks, so a waiter can end up holding the lock
    /// of a deleted file: it checks that the path still names the file it locked (device and
    /// inode), and opens the path again if not.
    fn acquire(path: &Path, progress: &dyn FetchProgress) -> Result<Partial, FetchError> {
        use std::os::unix::fs::MetadataExt;
        let mut told = false;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|source| io_error(path, source))?;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) => {
                        if !told {
                            progress.waiting();
                            told = true;
                        }
                        if progress.cancelled() {
                            return Err(FetchError::Cancelled);
                        }
                        std::thread::sleep(CANCEL_POLL);
                    }
                    Err(std::fs::TryLockError::Error(source)) => return Err(io_error(path, source)),
                }
            }
            let locked = file.metadata().map_err(|source| io_error(path, source))?;
            match std::fs::metadata(path) {
                // A second name: a verified download linked into the store by a process
                // killed before it removed this one. Those bytes are the store's now;
                // writing here would change a blob, so start from a new file.
                Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() && locked.nlink() > 1 => {
                    std::fs::remove_file(path).map_err(|source| io_error(path, source))?;
                }
                Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {
                    return Ok(Partial {
                        path: path.to_owned(),
                        file,
                        handed_over: false,
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_error(path, source)),
            }
        }
    }

    fn len(&self) -> Result<u64, FetchError> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|source| io_error(&self.path, source))
    }

    /// Empties the file and positions at 0.
    fn truncate(&mut self) -> Result<(), FetchError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|source| io_error(&self.path, source))
    }

    /// Feeds the existing bytes to `hashers` and leaves the position at the end.
    fn hash_existing(&mut self, hashers: &mut Hashers) -> Result<(), FetchError> {
        let path = &self.path;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|source| io_error(path, source))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(io_error(path, source)),
            };
            hashers.update(&buf[..n]);
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), FetchError> {
        self.file
            .write_all(bytes)
            .map_err(|source| io_error(&self.path, source))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        self.file
            .sync_all()
            .map_err(|source| io_error(&self.path, source))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Deleted while still locked: a waiter then finds the path gone or new (see
        // `acquire`), never a file being deleted under it.
        if !self.handed_over {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_error(path: &Path, source: io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The most bytes one fetch may receive, and where that number comes from.
struct Limit {
    bytes: u64,
    /// Whether it is the definition's `size` (else the workspace's maximum).
    declared: bool,
}

impl Limit {
    fn check(&self, size: u64) -> Result<(), AttemptError> {
        if size > self.bytes {
            Err(AttemptError::TooLarge)
        } else {
            Ok(())
        }
    }
}

/// Sleeps `delay`, waking to look at the cancel flag.
fn sleep_unless_cancelled(delay: Duration, progress: &dyn FetchProgress) -> Result<(), FetchError> {
    let mut left = delay;
    while !left.is_zero() {
        if progress.cancelled() {
            return Err(FetchError::Cancelled);
        }
        let step = left.min(CANCEL_POLL);
        std::thread::sleep(step);
        left -= step;
    }
    Ok(())
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) into `(START, TOTAL)`.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Downloads files. Holds one HTTP client (its connection pool and TLS setup) for the whole
/// build; share it between threads by reference.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: Client,
    read_timeout: Duration,
    max_size: u64,
    netrc: Netrc,
}

impl Fetcher {
    pub fn new(config: &FetchConfig) -> Result<Fetcher, FetchError> {
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            // In the blocking client this bounds the wait for the response head and each
            // body read separately: a read timeout, not a limit on the whole transfer. A
            // body that trickles is caught by `MIN_BYTES_PER_WINDOW` in `copy_body`.
            .timeout(config.read_timeout);
        if !config.system_proxy {
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|source| FetchError::Client { source })?;
        Ok(Fetcher {
            client,
            read_timeout: config.read_timeout,
            max_size: config.max_size,
            netrc: config.netrc.clone(),
        })
    }

    /// Downloads a small file whose digest nothing pins yet (a repository's `InRelease`,
    /// which its signature vouches for), from the first of `url`'s sources that answers:
    /// mirrors first, each retried twice on transient failures, at most `max` bytes.
    /// Credentials come from the URL or the netrc file, as for pinned downloads; `file://`
    /// reads only regular files.
    pub fn get_unpinned(
        &self,
        url: &str,
        mirrors: &[(String, Vec<String>)],
        max: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let urls = sources(url, mirrors);
        let parsed = urls
            .iter()
            .map(|u| parse_source(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut failures = Vec::new();
        for (u, source) in urls.iter().zip(&parsed) {
            let shown = redact_url(u).into_owned();
            let mut attempts = 0u32;
            let mut delay = Duration::from_millis(250);
            let failure = loop {
                attempts += 1;
                let (error, permanent) = match self.get_once(source, max) {
                    Ok(bytes) => return Ok(bytes),
                    Err(GetError::TooLarge) => {
                        return Err(FetchError::TooLarge {
                            url: shown,
                            limit: max,
                            why: "limit for repository metadata".to_owned(),
                            raise: "nothing: a real `InRelease` is far smaller; check the URL".to_owned(),
                            others: failures,
                        })
                    }
                    Err(GetError::Permanent(e)) => (e, true),
                    Err(GetError::Transient(e)) => (e, false),
                };
                if permanent || attempts > 2 {
                    break SourceFailure {
                        url: shown.clone(),
                        attempts,
                        error,
                        permanent,
                    };
                }
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
            };
            failures.push(failure);
        }
        if failures.iter().all(|f| f.permanent) {
            return Err(FetchError::NotFound {
                url: redact_url(url).into_owned(),
                declared_in: "the package set's repository".to_owned(),
                failures,
            });
        }
        Err(FetchError::Unavailable {
            url: redact_url(url).into_owned(),
            failures,
        })
    }

    fn get_once(&self, source: &Source, max: u64) -> Result<Vec<u8>, GetError> {
        let mut body = Vec::new();
        match source {
            Source::File(path) => {
                let meta = std::fs::metadata(path).map_err(|e| GetError::Permanent(e.to_string()))?;
                if !meta.is_file() {
                    return Err(GetError::Permanent("not a regular file".to_owned()));
                }
                let file = File::open(path).map_err(|e| GetError::Permanent(e.to_string()))?;
                file.take(max.saturating_add(1))
                    .read_to_end(&mut body)
                    .map_err(|e| GetError::Transient(e.to_string()))?;
            }
            Source::Http(url) => {
                let mut request = self.client.get(url.clone());
                if url.username().is_empty() && url.password().is_none() {
                    if let Some(login) = url.host_str().and_then(|h| self.netrc.for_host(h)) {
                        request = request.basic_auth(&login.login, Some(&login.password));
                    }
                }
                let response = request.send().map_err(|e| match send_error(e) {
                    AttemptError::GiveUp(text) => GetError::Permanent(text),
                    AttemptError::Retry { error, .. } => GetError::Transient(error),
                    _ => GetError::Transient("request failed".to_owned()),
                })?;
                let status = response.status();
                if !status.is_success() {
                    let text = format!("HTTP {status}");
                    return Err(
                        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                            GetError::Transient(text)
                        } else {
                            GetError::Permanent(text)
                        },
                    );
                }
                if response.content_length().is_some_and(|n| n > max) {
                    return Err(GetError::TooLarge);
                }
                response
                    .take(max.saturating_add(1))
                    .read_to_end(&mut body)
                    .map_err(|e| GetError::Transient(chain(&e)))?;
            }
        }
        if body.len() as u64 > max {
            return Err(GetError::TooLarge);
        }
        Ok(body)
    }

    /// Downloads `req.url` (or a mirror of it) into `partial` and verifies its sha256.
    ///
    /// `partial` may hold the beginning of the same file from an interrupted run; it is
    /// resumed. It is locked for the whole fetch: another fetch of the same path (another
    /// builder on the same cache) waits until this one's outcome is dropped. On success the
    /// outcome holds exactly the verified bytes; on any failure, and when the outcome is
    /// dropped, the file is deleted.
    ///
    /// `partial`'s directory must exist; name the file after the sha256, so that only
    /// fetches of the same bytes share it.
    pub fn fetch_to(
        &self,
        req: &FetchRequest<'_>,
        partial: &Path,
        progress: &dyn FetchProgress,
    ) -> Result<FetchOutcome, FetchError> {
        let limit = match req.size {
            Some(size) if size > self.max_size => {
                return Err(FetchError::SizeOverLimit {
                    size,
                    max: self.max_size,
                    declared_in: req.declared_in.to_owned(),
                })
            }
            Some(size) => Limit {
                bytes: size,
                declared: true,
            },
            None => Limit {
                bytes: self.max_size,
                declared: false,
            },
        };
        let urls = sources(req.url, req.mirrors);
        // Every source is checked before the first byte moves: a misconfigured mirror is a
        // configuration error, not something to skip silently on every build.
        let parsed = urls
            .iter()
            .map(|u| parse_source(u))
            .collect::<Result<Vec<_>, _>>()?;

        let mut partial = Partial::acquire(partial, progress)?;
        let mut failures = Vec::new();
        // The first source that delivered wrong bytes: its index in `failures` and digest.
        let mut mismatch: Option<(usize, Sha256Digest)> = None;
        // The first source that sent too much: its index in `failures`.
        let mut too_large: Option<usize> = None;
        for (url, source) in urls.iter().zip(&parsed) {
            let shown = redact_url(url);
            match self.fetch_from(req, &limit, &shown, source, &mut partial, progress)? {
                Ok((sha256, blake3, size, attempts)) => {
                    return Ok(FetchOutcome {
                        path: partial.path.clone(),
                        size,
                        sha256,
                        blake3,
                        source: shown.into_owned(),
                        from_mirror: url != req.url,
                        attempts,
                        partial,
                    });
                }
                Err((attempts, failure)) => {
                    let (error, permanent) = match failure {
                        SourceEnd::Failed { error, permanent } => (error, permanent),
                        SourceEnd::Mismatch(actual) => {
                            if mismatch.is_none() {
                                mismatch = Some((failures.len(), actual));
                            }
                            (format!("sha256 mismatch (got {})", hex::encode(actual)), true)
                        }
                        SourceEnd::TooLarge => {
                            if too_large.is_none() {
                                too_large = Some(failures.len());
                            }
                            (format!("more than {} bytes", limit.bytes), true)
                        }
                    };
                    progress.source_failed(&shown, &error);
                    failures.push(SourceFailure {
                        url: shown.into_owned(),
                        attempts,
                        error,
                        permanent,
                    });
                }
            }
        }
        drop(partial);

        // Wrong bytes outrank every other failure: the pin or that source is wrong, and
        // "unavailable, add a mirror" would send the reader the wrong way.
        if let Some((index, actual)) = mismatch {
            let culprit = failures.remove(index);
            return Err(FetchError::DigestMismatch {
                url: culprit.url,
                expected: hex::encode(req.sha256),
                actual: hex::encode(actual),
                declared_in: req.declared_in.to_owned(),
                others: failures,
            });
        }
        if let Some(index) = too_large {
            let culprit = failures.remove(index);
            let (why, raise) = if limit.declared {
                (
                    format!("`size` declared in {}", req.declared_in),
                    format!("`size:` in {}", req.declared_in),
                )
            } else {
                (
                    "download limit (`downloads.max_size`)".to_owned(),
                    "`downloads: {max_size: …}` in `w4b.yaml`, or declare the file's `size:`".to_owned(),
                )
            };
            return Err(FetchError::TooLarge {
                url: culprit.url,
                limit: limit.bytes,
                why,
                raise,
                others: failures,
            });
        }
        if failures.iter().all(|f| f.permanent) {
            return Err(FetchError::NotFound {
                url: redact_url(req.url).into_owned(),
                declared_in: req.declared_in.to_owned(),
                failures,
            });
        }
        Err(FetchError::Unavailable {
            url: redact_url(req.url).into_owned(),
            failures,
        })
    }

    /// Tries one source with retries. The outer `Result` is a local failure that stops the
    /// whole fetch; the inner one is this source's verdict: the digests, size and attempts
    /// made, or how it ended.
    #[allow(clippy::type_complexity)]
    fn fetch_from(
        &self,
        req: &FetchRequest<'_>,
        limit: &Limit,
        shown: &str,
        source: &Source,
        partial: &mut Partial,
        progress: &dyn FetchProgress,
    ) -> Result<Result<(Sha256Digest, Digest, u64, u32), (u32, SourceEnd)>, FetchError> {
        let mut attempt = 0u32;
        let mut restarts = 0u32;
        let mut delay = req.backoff;
        loop {
            attempt += 1;
            let result = match source {
                Source::Http(parsed) => self.attempt_http(req, limit, shown, parsed, partial, progress),
                Source::File(path) => attempt_file(req, limit, shown, path, partial, progress),
            };
            match result {
                Ok((sha256, blake3, size)) => return Ok(Ok((sha256, blake3, size, attempt))),
                Err(AttemptError::Local(e)) => return Err(e),
                Err(AttemptError::Mismatch { actual }) => {
                    partial.truncate()?;
                    return Ok(Err((attempt, SourceEnd::Mismatch(actual))));
                }
                Err(AttemptError::TooLarge) => {
                    partial.truncate()?;
                    return Ok(Err((attempt, SourceEnd::TooLarge)));
                }
                Err(AttemptError::GiveUp(error)) => {
                    let end = SourceEnd::Failed {
                        error,
                        permanent: true,
                    };
                    return Ok(Err((attempt, end)));
                }
                Err(AttemptError::Restart) => {
                    restarts += 1;
                    if restarts > MAX_RESTARTS_PER_SOURCE {
                        let error = "the server keeps answering with a byte range that does \
                                     not fit the file"
                            .to_owned();
                        let end = SourceEnd::Failed {
                            error,
                            permanent: false,
                        };
                        return Ok(Err((attempt, end)));
                    }
                    attempt -= 1;
                }
                Err(AttemptError::Retry { error, retry_after }) => {
                    if attempt > req.retries {
                        let end = SourceEnd::Failed {
                            error,
                            permanent: false,
                        };
                        return Ok(Err((attempt, end)));
                    }
                    progress.retrying(shown, attempt, &error);
                    sleep_unless_cancelled(retry_delay(delay, retry_after, req.max_backoff), progress)?;
                    delay = delay.saturating_mul(2).min(req.max_backoff);
                }
            }
        }
    }

    /// One HTTP request, resuming from the partial file when it has bytes.
    fn attempt_http(
        &self,
        req: &FetchRequest<'_>,
        limit: &Limit,
        label: &str,
        url: &Url,
        partial: &mut Partial,
        progress: &dyn FetchProgress,
    ) -> Result<(Sha256Digest, Digest, u64), AttemptError> {
        let mut offset = partial.len().map_err(AttemptError::Local)?;
        if offset > limit.bytes {
            // A leftover from before the limit was lowered (or another file): start over.
            partial.truncate().map_err(AttemptError::Local)?;
            offset = 0;
        }
        let mut request = self.client.get(url.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        // reqwest sends a URL's own userinfo as basic authentication; the netrc is for the
        // URLs that carry none. Redirects to another host drop the header (reqwest's policy).
        if url.username().is_empty() && url.password().is_none() {
            if let Some(login) = url.host_str().and_then(|h| self.netrc.for_host(h)) {
                request = request.basic_auth(&login.login, Some(&login.password));
            }
        }
        let response = request.send().map_err(send_error)?;
        let status = response.status();
        let mut hashers = Hashers::new();
        let total = match status {
            StatusCode::OK => {
                // A full answer, whether or not we asked for a range: start over.
                partial.truncate().map_err(AttemptError::Local)?;
                response.content_length()
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    Some((start, total)) if start == offset => {
                        partial.hash_existing(&mut hashers).map_err(AttemptError::Local)?;
                        total.or_else(|| response.content_length().map(|n| n.saturating_add(offset)))
                    }
                    _ if offset > 0 => {
                        partial.truncate().map_err(AttemptError::Local)?;
                        return Err(AttemptError::Restart);
                    }
                    _ => {
                        return Err(AttemptError::GiveUp(
                            "answered 206 Partial Content to a request without a range".to_owned(),
                        ));
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                // Nothing lies past our partial file: it may already be the whole file.
                partial.hash_existing(&mut hashers).map_err(AttemptError::Local)?;
                let (sha256, blake3, size) = hashers.finish();
                if sha256 == req.sha256 {
                    partial.sync().map_err(AttemptError::Local)?;
                    return Ok((sha256, blake3, size));
                }
                partial.truncate().map_err(AttemptError::Local)?;
                return Err(AttemptError::Restart);
            }
            s if s.is_server_error()
                || s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT =>
            {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                return Err(AttemptError::Retry {
                    error: format!("HTTP {s}"),
                    retry_after,
                });
            }
            s => return Err(AttemptError::GiveUp(format!("HTTP {s}"))),
        };
        // A length announced above the limit is refused before a byte of the body is read.
        if let Some(total) = total {
            limit.check(total)?;
        }
        let resumed_from = hashers.size;
        progress.started(label, total);
        if resumed_from > 0 {
            progress.advanced(resumed_from);
        }
        self.copy_body(response, limit, partial, &mut hashers, progress)?;
        if let Some(total) = total {
            if hashers.size < total {
                return Err(AttemptError::Retry {
                    error: format!("the connection closed after {} of {total} bytes", hashers.size),
                    retry_after: None,
                });
            }
        }
        partial.sync().map_err(AttemptError::Local)?;
        verify(req, hashers, resumed_from, partial)
    }

    /// Streams the response body into the partial file, stopping as soon as the limit is
    /// passed, the transfer is slower than [`MIN_BYTES_PER_WINDOW`] per read timeout, or the
    /// build is cancelled. A read error leaves what arrived on disk, for the retry to resume.
    fn copy_body(
        &self,
        response: Response,
        limit: &Limit,
        partial: &mut Partial,
        hashers: &mut Hashers,
        progress: &dyn FetchProgress,
    ) -> Result<(), AttemptError> {
        // The body is read on a thread of its own, so that a read blocked on a silent server
        // (for up to the read timeout) never keeps a cancelled build waiting: this loop
        // looks at the cancel flag every `CANCEL_POLL` while chunks arrive over a channel.
        // A cancelled transfer's reader ends with its connection (the read timeout, or the
        // process exiting).
        let chunks = spawn_reader(response);
        let mut window = (Instant::now(), hashers.size);
        loop {
            if progress.cancelled() {
                return Err(AttemptError::Local(FetchError::Cancelled));
            }
            let chunk = match chunks.recv_timeout(CANCEL_POLL) {
                Ok(chunk) => chunk,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                // The reader ended without a last message: it cannot, but treat it as the end.
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let buf = match chunk {
                Ok(buf) if buf.is_empty() => return Ok(()),
                Ok(buf) => buf,
                Err(e) => {
                    return Err(AttemptError::Retry {
                        error: format!("the connection broke after {} bytes: {}", hashers.size, chain(&e)),
                        retry_after: None,
                    });
                }
            };
            let n = buf.len();
            limit.check(hashers.size.saturating_add(n as u64))?;
            partial.append(&buf).map_err(AttemptError::Local)?;
            hashers.update(&buf);
            progress.advanced(n as u64);
            let elapsed = window.0.elapsed();
            if elapsed >= self.read_timeout {
                let moved = hashers.size - window.1;
                if moved < MIN_BYTES_PER_WINDOW {
                    return Err(AttemptError::Retry {
                        error: format!(
                            "the transfer is too slow: {moved} bytes in the last {:.1} s (at least {MIN_BYTES_PER_WINDOW} are needed per read timeout)",
                            elapsed.as_secs_f64()
                        ),
                        retry_after: None,
                    });
                }
                window = (Instant::now(), hashers.size);
            }
        }
    }
}

/// Reads `response` on its own thread into chunks of at most [`CHUNK`] bytes; an empty
/// chunk is the end of the body, an error the end of the connection. At most a few chunks
/// wait in the channel, so a slow consumer slows the reader rather than filling memory.
fn spawn_reader(mut response: Response) -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; CHUNK];
        let item = loop {
            match response.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    break Ok(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        let last = !matches!(&item, Ok(b) if !b.is_empty());
        // The consumer gone (cancelled, failed) ends the reader too.
        if tx.send(item).is_err() || last {
            return;
        }
    });
    rx
}

/// How a source ended when it did not deliver.
enum SourceEnd {
    Failed { error: String, permanent: bool },
    Mismatch(Sha256Digest),
    TooLarge,
}

/// Checks the finished digest. A wrong file that was resumed from an earlier prefix gets one
/// fresh download from the same source before the source is blamed: the prefix may have come
/// from another mirror or an older run.
fn verify(
    req: &FetchRequest<'_>,
    hashers: Hashers,
    resumed_from: u64,
    partial: &mut Partial,
) -> Result<(Sha256Digest, Digest, u64), AttemptError> {
    let (sha256, blake3, size) = hashers.finish();
    if sha256 == req.sha256 {
        return Ok((sha256, blake3, size));
    }
    if resumed_from > 0 {
        partial.truncate().map_err(AttemptError::Local)?;
        return Err(AttemptError::Restart);
    }
    Err(AttemptError::Mismatch { actual: sha256 })
}

/// Copies a local file. Reading a local file is as fast as re-reading the partial one, so
/// this always starts from 0 rather than resuming. Only a regular file is read: a device
/// (`/dev/zero`), a FIFO or a socket could be read without end, or block forever.
fn attempt_file(
    req: &FetchRequest<'_>,
    limit: &Limit,
    label: &str,
    source: &Path,
    partial: &mut Partial,
    progress: &dyn FetchProgress,
) -> Result<(Sha256Digest, Digest, u64), AttemptError> {
    let not_regular = || {
        AttemptError::Local(FetchError::NotRegularFile {
            url: label.to_owned(),
            path: source.to_owned(),
        })
    };
    // Checked before opening: opening a FIFO waits for a writer.
    match std::fs::metadata(source) {
        Ok(m) if !m.is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) => {
            return Err(AttemptError::GiveUp(format!(
                "cannot open `{}`: {e}",
                source.display()
            )))
        }
    }
    let mut input = File::open(source)
        .map_err(|e| AttemptError::GiveUp(format!("cannot open `{}`: {e}", source.display())))?;
    // And again on what was opened, in case the path changed in between.
    let meta = input
        .metadata()
        .map_err(|e| AttemptError::GiveUp(format!("cannot read `{}`: {e}", source.display())))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    limit.check(meta.len())?;
    partial.truncate().map_err(AttemptError::Local)?;
    progress.started(label, Some(meta.len()));
    let mut hashers = Hashers::new();
    let mut buf = vec![0u8; FILE_CHUNK];
    loop {
        if progress.cancelled() {
            return Err(AttemptError::Local(FetchError::Cancelled));
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(AttemptError::GiveUp(format!(
                    "cannot read `{}`: {e}",
                    source.display()
                )));
            }
        };
        // A file that grows while it is read is bounded too.
        limit.check(hashers.size.saturating_add(n as u64))?;
        let piece = &buf[..n];
        hashers
            .update_beside(piece, || partial.append(piece))
            .map_err(AttemptError::Local)?;
        progress.advanced(n as u64);
    }
    partial.sync().map_err(AttemptError::Local)?;
    verify(req, hashers, 0, partial)
}

#[cfg(test)]
#[path = "../tests/support/http.rs"]
mod test_http;

#[cfg(test)]
mod tests {
    use super::test_http::{refused_url, Faults, TestServer};
    use super::*;
    use std::sync::Mutex;

    /// Deterministic, incompressible test content of `len` bytes.
    fn content(seed: &str, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut hasher = blake3::Hasher::new();
        hasher.update(seed.as_bytes());
        hasher.finalize_xof().fill(&mut out);
        out
    }

    fn sha(bytes: &[u8]) -> Sha256Digest {
        Sha256::digest(bytes).into()
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(&FetchConfig {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            system_proxy: false,
            ..FetchConfig::default()
        })
        .expect("client")
    }

    fn request<'a>(url: &'a str, sha256: Sha256Digest) -> FetchRequest<'a> {
        FetchRequest {
            retries: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..FetchRequest::new(url, sha256, "`defs/bases/test.yaml`")
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Started(String, Option<u64>),
        Retrying(String, u32),
        SourceFailed(String),
    }

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<Event>>,
        bytes: Mutex<u64>,
    }

    impl Recorder {
        fn events(&self) -> Vec<Event> {
            self.events.lock().unwrap().clone()
        }
        fn retries(&self) -> usize {
            self.events()
                .iter()
                .filter(|e| matches!(e, Event::Retrying(..)))
                .count()
        }
    }

    impl FetchProgress for Recorder {
        fn started(&self, url: &str, total: Option<u64>) {
            *self.bytes.lock().unwrap() = 0;
            self.events
                .lock()
                .unwrap()
                .push(Event::Started(url.to_owned(), total));
        }
        fn advanced(&self, bytes: u64) {
            *self.bytes.lock().unwrap() += bytes;
        }
        fn retrying(&self, url: &str, attempt: u32, _error: &str) {
            self.events
                .lock()
                .unwrap()
                .push(Event::Retrying(url.to_owned(), attempt));
        }
        fn source_failed(&self, url: &str, _error: &str) {
            self.events
                .lock()
                .unwrap()
                .push(Event::SourceFailed(url.to_owned()));
        }
    }

    fn assert_outcome(outcome: &FetchOutcome, body: &[u8]) {
        assert_eq!(outcome.size, body.len() as u64);
        assert_eq!(outcome.sha256, sha(body));
        assert_eq!(outcome.blake3, Digest::of(body));
        assert_eq!(std::fs::read(&outcome.path).unwrap(), body);
    }

    #[test]
    fn http_happy_path_hashes_both_digests_and_sends_user_agent() {
        let server = TestServer::start();
        let body = content("happy", 700_000);
        server.serve("/img.zip", body.clone());
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("img.partial");
        let url = server.url("/img.zip");
        let progress = Recorder::default();

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &progress)
            .unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(outcome.path, partial);
        assert_eq!(outcome.source, url);
        assert!(!outcome.from_mirror);
        assert_eq!(outcome.attempts, 1);
        assert_eq!(
            progress.events(),
            vec![Event::Started(url.clone(), Some(body.len() as u64))]
        );
        assert_eq!(*progress.bytes.lock().unwrap(), body.len() as u64);
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].range, None);
        assert_eq!(requests[0].user_agent.as_deref(), Some(USER_AGENT));
    }

    #[test]
    fn file_url_is_copied_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let body = content("file", 300_000);
        let source = dir.path().join("source.img");
        std::fs::write(&source, &body).unwrap();
        let url = String::from(Url::from_file_path(&source).unwrap());
        let partial = dir.path().join("out.partial");
        // A stale partial file must not leak into a local copy.
        std::fs::write(&partial, b"stale bytes").unwrap();

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
            .unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(outcome.source, url);
    }

    #[test]
    fn wrong_sha256_is_an_error_and_leaves_no_partial_file() {
        let server = TestServer::start();
        let body = content("wrong", 50_000);
        server.serve("/a.img", body.clone());
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("a.partial");
        let url = server.url("/a.img");
        let declared = [7u8; 32];

        let err = fetcher()
            .fetch_to(&request(&url, declared), &partial, &NoProgress)
            .unwrap_err();

        let FetchError::DigestMismatch {
            url: bad,
            expected,
            actual,
            declared_in,
            others,
        } = &err
        else {
            panic!("expected a digest mismatch, got {err:?}");
        };
        assert_eq!(bad, &url);
        assert_eq!(expected, &hex::encode(declared));
        assert_eq!(actual, &hex::encode(sha(&body)));
        assert_eq!(declared_in, "`defs/bases/test.yaml`");
        assert!(others.is_empty(), "{others:?}");
        let text = err.to_string();
        assert!(text.contains(&hex::encode(declared)) && text.contains(&hex::encode(sha(&body))));
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(
            help.contains(&url) && help.contains("defs/bases/test.yaml"),
            "{help}"
        );
        assert_eq!(
            miette::Diagnostic::code(&err).unwrap().to_string(),
            "w4b::fetch::digest_mismatch"
        );
        assert!(!partial.exists());
        // A wrong file is not a transient failure: it is not retried.
        assert_eq!(server.requests().len(), 1);
    }

    #[test]
    fn service_unavailable_twice_then_success_is_retried() {
        let server = TestServer::start();
        let body = content("retry", 40_000);
        server.serve_with(
            "/r.img",
            body.clone(),
            Faults {
                fail_first: 2,
                // Far beyond max_backoff: proves the cap, or the test would take a minute.
                retry_after: Some(60),
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("r.partial");
        let url = server.url("/r.img");
        let progress = Recorder::default();

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &progress)
            .unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(outcome.attempts, 3);
        assert_eq!(progress.retries(), 2);
        assert_eq!(server.requests().len(), 3);
    }

    #[test]
    fn retries_are_bounded() {
        let server = TestServer::start();
        server.fail_always("/down.img", 503);
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("down.partial");
        let url = server.url("/down.img");

        let err = fetcher()
            .fetch_to(&request(&url, [0; 32]), &partial, &NoProgress)
            .unwrap_err();

        let FetchError::Unavailable { failures, .. } = &err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].attempts, 4);
        assert!(failures[0].error.contains("503"), "{}", failures[0].error);
        assert_eq!(server.requests().len(), 4);
        assert!(!partial.exists(), "an empty partial file is cleaned up");
    }

    #[test]
    fn dropped_connection_resumes_with_a_range_request() {
        let server = TestServer::start();
        let body = content("drop", 500_000);
        server.serve_with(
            "/d.img",
            body.clone(),
            Faults {
                drop_after: Some(200_000),
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("d.partial");
        let url = server.url("/d.img");
        let progress = Recorder::default();

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &progress)
            .unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(outcome.attempts, 2);
        let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
        assert_eq!(ranges, vec![None, Some("bytes=200000-".to_owned())]);
        // The resumed attempt reports the bytes already on disk, so the bar ends at the total.
        assert_eq!(*progress.bytes.lock().unwrap(), body.len() as u64);
    }

    #[test]
    fn server_ignoring_range_restarts_from_zero() {
        let server = TestServer::start();
        let body = content("ignore", 300_000);
        server.serve_with(
            "/i.img",
            body.clone(),
            Faults {
                drop_after: Some(100_000),
                ignore_range: true,
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("i.partial");
        let url = server.url("/i.img");

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
            .unwrap();

        assert_outcome(&outcome, &body);
        let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
        assert_eq!(ranges, vec![None, Some("bytes=100000-".to_owned())]);
    }

    #[test]
    fn longer_stale_partial_and_a_server_ignoring_range_leave_exactly_the_file() {
        let server = TestServer::start();
        let body = content("short", 10_000);
        server.serve_with(
            "/short.img",
            body.clone(),
            Faults {
                ignore_range: true,
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("short.partial");
        std::fs::write(&partial, content("longer", 50_000)).unwrap();
        let url = server.url("/short.img");

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
            .unwrap();

        // The digest covers what was hashed; this checks no stale tail survives on disk.
        assert_outcome(&outcome, &body);
    }

    #[test]
    fn partial_file_from_an_earlier_run_is_resumed() {
        let server = TestServer::start();
        let body = content("earlier", 200_000);
        server.serve("/e.img", body.clone());
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("e.partial");
        std::fs::write(&partial, &body[..123_456]).unwrap();
        let url = server.url("/e.img");

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
            .unwrap();

        assert_outcome(&outcome, &body);
        let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
        assert_eq!(ranges, vec![Some("bytes=123456-".to_owned())]);
    }

    /// A builder killed between linking its verified download into the store and removing
    /// the `.part` name leaves a partial that is the store's blob: the next fetch must not
    /// resume into it (that would change the blob) but start a new file.
    #[test]
    fn a_partial_linked_into_the_store_is_never_written_to() {
        let server = TestServer::start();
        let body = content("linked", 300_000);
        server.serve("/l.img", body.clone());
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("l.partial");
        let blob = dir.path().join("blob");
        let stored = content("stored", 200_000);
        std::fs::write(&partial, &stored).unwrap();
        std::fs::hard_link(&partial, &blob).unwrap();

        let outcome = fetcher()
            .fetch_to(&request(&server.url("/l.img"), sha(&body)), &partial, &NoProgress)
            .unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(
            std::fs::read(&blob).unwrap(),
            stored,
            "the store's file is untouched"
        );
        let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
        assert_eq!(ranges, vec![None], "started from 0, not resumed");
    }

    /// The handed-over temp file keeps the partial's name until it is dropped, and then
    /// removes it; linked elsewhere first, the bytes stay there.
    #[test]
    fn a_verified_download_is_handed_over_as_a_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("base.img");
        let body = content("handed", 5_000_000);
        std::fs::write(&source, &body).unwrap();
        let partial = dir.path().join("h.partial");
        let url = format!("file://{}", source.display());
        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
            .unwrap();
        assert_outcome(&outcome, &body);
        let tmp = outcome.into_temp_file().unwrap();
        assert_eq!(tmp.path(), partial);
        let linked = dir.path().join("linked");
        std::fs::hard_link(tmp.path(), &linked).unwrap();
        drop(tmp);
        assert!(!partial.exists());
        assert_eq!(std::fs::read(&linked).unwrap(), body);
    }

    #[test]
    fn complete_partial_file_is_accepted_on_range_not_satisfiable() {
        let server = TestServer::start();
        let body = content("complete", 10_000);
        server.serve("/c.img", body.clone());
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("c.partial");
        std::fs::write(&partial, &body).unwrap();
        let url = server.url("/c.img");

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
            .unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(server.requests().len(), 1);
    }

    #[test]
    fn stale_partial_file_with_wrong_bytes_is_downloaded_again() {
        let server = TestServer::start();
        let body = content("stale", 100_000);
        server.serve("/s.img", body.clone());
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("s.partial");
        std::fs::write(&partial, content("other", 30_000)).unwrap();
        let url = server.url("/s.img");

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
            .unwrap();

        assert_outcome(&outcome, &body);
        let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
        assert_eq!(ranges, vec![Some("bytes=30000-".to_owned()), None]);
        assert_eq!(outcome.attempts, 1, "a restart is not a failed attempt");
    }

    #[test]
    fn not_found_on_first_mirror_moves_to_second_without_retrying() {
        let first = TestServer::start();
        let second = TestServer::start();
        let body = content("mirror", 60_000);
        first.fail_always("/m1/os/img.xz", 404);
        second.serve("/m2/os/img.xz", body.clone());
        let origin = refused_url("/os/img.xz");
        let prefix = origin.trim_end_matches("os/img.xz").to_owned();
        let mirrors = vec![(prefix, vec![first.url("/m1/"), second.url("/m2/")])];
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("m.partial");
        let progress = Recorder::default();

        let req = FetchRequest {
            mirrors: &mirrors,
            ..request(&origin, sha(&body))
        };
        let outcome = fetcher().fetch_to(&req, &partial, &progress).unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(outcome.source, second.url("/m2/os/img.xz"));
        assert!(outcome.from_mirror);
        assert_eq!(first.requests().len(), 1);
        assert_eq!(progress.retries(), 0);
        assert_eq!(
            progress.events()[0],
            Event::SourceFailed(first.url("/m1/os/img.xz"))
        );
    }

    #[test]
    fn mismatch_on_a_mirror_moves_to_the_next_source() {
        let mirror = TestServer::start();
        let origin = TestServer::start();
        let body = content("good", 50_000);
        mirror.serve("/pub/x.img", content("bad", 50_000));
        origin.serve("/pub/x.img", body.clone());
        let mirrors = vec![(origin.url("/"), vec![mirror.url("/")])];
        let url = origin.url("/pub/x.img");
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("x.partial");

        let req = FetchRequest {
            mirrors: &mirrors,
            ..request(&url, sha(&body))
        };
        let outcome = fetcher().fetch_to(&req, &partial, &NoProgress).unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(outcome.source, url);
        assert!(!outcome.from_mirror);
        assert_eq!(mirror.requests().len(), 1);
        // The mirror's wrong bytes were deleted, so the origin was not asked to resume them.
        assert_eq!(origin.requests()[0].range, None);
    }

    #[test]
    fn wrong_bytes_on_a_mirror_with_the_origin_down_is_a_digest_mismatch_not_unavailable() {
        let mirror = TestServer::start();
        let origin = TestServer::start();
        let body = content("pinned", 30_000);
        let wrong = content("something else", 30_000);
        mirror.serve("/pub/y.img", wrong.clone());
        origin.fail_always("/pub/y.img", 503);
        let mirrors = vec![(origin.url("/"), vec![mirror.url("/")])];
        let url = origin.url("/pub/y.img");
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("y.partial");
        let req = FetchRequest {
            mirrors: &mirrors,
            retries: 1,
            ..request(&url, sha(&body))
        };

        let err = fetcher().fetch_to(&req, &partial, &NoProgress).unwrap_err();

        let FetchError::DigestMismatch {
            url: culprit,
            expected,
            actual,
            others,
            ..
        } = &err
        else {
            panic!("expected a digest mismatch, got {err:?}");
        };
        assert_eq!(culprit, &mirror.url("/pub/y.img"));
        assert_eq!(expected, &hex::encode(sha(&body)));
        assert_eq!(actual, &hex::encode(sha(&wrong)));
        // The origin's own failure is still listed, after the mismatch.
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].url, url);
        assert!(others[0].error.contains("503"), "{}", others[0].error);
        assert_eq!(
            miette::Diagnostic::code(&err).unwrap().to_string(),
            "w4b::fetch::digest_mismatch"
        );
        let text = err.to_string();
        for needle in [culprit.as_str(), expected.as_str(), actual.as_str(), url.as_str()] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(
            help.contains("pinned") && help.contains(culprit.as_str()),
            "{help}"
        );
        assert!(!help.contains("mirrors:"), "no advice to add a mirror: {help}");
        assert_eq!(mirror.requests().len(), 1, "wrong bytes are not retried");
        assert!(!partial.exists());
    }

    #[test]
    fn final_http_answers_are_tried_once_and_reported_as_not_found() {
        for status in [401u16, 403, 404, 410] {
            let server = TestServer::start();
            server.fail_always("/missing.img", status);
            let dir = tempfile::tempdir().unwrap();
            let url = server.url("/missing.img");
            let progress = Recorder::default();

            let err = fetcher()
                .fetch_to(&request(&url, [3; 32]), &dir.path().join("m.partial"), &progress)
                .unwrap_err();

            assert_eq!(server.requests().len(), 1, "HTTP {status} was retried");
            assert_eq!(progress.retries(), 0);
            let FetchError::NotFound { failures, .. } = &err else {
                panic!("HTTP {status}: expected not found, got {err:?}");
            };
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].attempts, 1);
            assert!(failures[0].permanent);
            assert!(
                failures[0].error.contains(&status.to_string()),
                "{}",
                failures[0].error
            );
            assert_eq!(
                miette::Diagnostic::code(&err).unwrap().to_string(),
                "w4b::fetch::not_found"
            );
            let help = miette::Diagnostic::help(&err).unwrap().to_string();
            assert!(help.contains("defs/bases/test.yaml"), "{help}");
        }
    }

    #[test]
    fn unknown_host_name_is_not_retried() {
        // `.invalid` is reserved (RFC 6761): no resolver may answer it with an address.
        let url = "http://w4b-download-test.invalid/x.img";
        let dir = tempfile::tempdir().unwrap();
        let progress = Recorder::default();

        let err = fetcher()
            .fetch_to(&request(url, [4; 32]), &dir.path().join("x.partial"), &progress)
            .unwrap_err();

        let failures = match &err {
            FetchError::NotFound { failures, .. } => failures,
            FetchError::Unavailable { failures, .. } => {
                panic!("an unknown host was treated as transient: {failures:?}")
            }
            other => panic!("expected not found, got {other:?}"),
        };
        assert_eq!(failures[0].attempts, 1, "{failures:?}");
        assert_eq!(progress.retries(), 0);
        assert_eq!(progress.events(), vec![Event::SourceFailed(url.to_owned())]);
        assert!(failures[0].error.contains("dns error"), "{}", failures[0].error);
    }

    #[test]
    fn resolver_verdicts_are_told_apart() {
        let prefix = "error sending request: client error (Connect): dns error: \
                      failed to lookup address information: ";
        assert!(is_unknown_host(&format!("{prefix}Name or service not known")));
        assert!(is_unknown_host(&format!(
            "{prefix}No address associated with hostname"
        )));
        assert!(!is_unknown_host(&format!(
            "{prefix}Temporary failure in name resolution"
        )));
        assert!(!is_unknown_host(
            "error sending request: client error (Connect): tcp connect error: Connection refused"
        ));
        // The words alone, outside a resolver error, decide nothing.
        assert!(!is_unknown_host("HTTP 404: Name or service not known"));
    }

    #[test]
    fn file_mirror_is_used_before_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let body = content("local mirror", 20_000);
        std::fs::create_dir_all(dir.path().join("srv/os")).unwrap();
        std::fs::write(dir.path().join("srv/os/img.xz"), &body).unwrap();
        let local = String::from(Url::from_directory_path(dir.path().join("srv")).unwrap());
        let origin = refused_url("/os/img.xz");
        let prefix = origin.trim_end_matches("os/img.xz").to_owned();
        let mirrors = vec![(prefix, vec![local.clone()])];
        let partial = dir.path().join("f.partial");

        let req = FetchRequest {
            mirrors: &mirrors,
            ..request(&origin, sha(&body))
        };
        let outcome = fetcher().fetch_to(&req, &partial, &NoProgress).unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(outcome.source, format!("{local}os/img.xz"));
    }

    #[test]
    fn every_source_down_is_one_error_listing_them_all() {
        let server = TestServer::start();
        server.fail_always("/gone/img", 503);
        let dir = tempfile::tempdir().unwrap();
        let missing = String::from(Url::from_file_path(dir.path().join("nope/img")).unwrap());
        let refused = refused_url("/img");
        let origin = server.url("/gone/img");
        let mirrors = vec![(
            server.url("/gone/"),
            vec![
                refused.trim_end_matches("img").to_owned(),
                missing.trim_end_matches("img").to_owned(),
            ],
        )];
        let partial = dir.path().join("g.partial");
        let req = FetchRequest {
            mirrors: &mirrors,
            retries: 1,
            ..request(&origin, [1; 32])
        };

        let err = fetcher().fetch_to(&req, &partial, &NoProgress).unwrap_err();

        let FetchError::Unavailable { url, failures } = &err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert_eq!(url, &origin);
        let tried: Vec<_> = failures.iter().map(|f| f.url.as_str()).collect();
        assert_eq!(tried, vec![refused.as_str(), missing.as_str(), origin.as_str()]);
        // Connection refused and 503 are retried once; a missing local file is not.
        let attempts: Vec<_> = failures.iter().map(|f| f.attempts).collect();
        assert_eq!(attempts, vec![2, 1, 2]);
        let text = err.to_string();
        for source in [&refused, &missing, &origin] {
            assert!(text.contains(source.as_str()), "{text}");
        }
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(help.contains("mirrors:") && help.contains("file://"), "{help}");
        assert_eq!(
            miette::Diagnostic::code(&err).unwrap().to_string(),
            "w4b::fetch::unavailable"
        );
    }

    #[test]
    fn stalled_response_times_out_and_counts_as_transient() {
        let server = TestServer::start();
        server.serve_with(
            "/slow.img",
            content("slow", 1_000),
            Faults {
                header_delay: Duration::from_millis(600),
                ..Faults::default()
            },
        );
        let fetcher = Fetcher::new(&FetchConfig {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_millis(150),
            system_proxy: false,
            ..FetchConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = server.url("/slow.img");
        let req = FetchRequest {
            retries: 0,
            ..request(&url, [2; 32])
        };

        let err = fetcher
            .fetch_to(&req, &dir.path().join("slow.partial"), &NoProgress)
            .unwrap_err();

        let FetchError::Unavailable { failures, .. } = &err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert!(failures[0].error.contains("timed out"), "{}", failures[0].error);
    }

    #[test]
    fn unsupported_scheme_is_a_clear_error_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("p");
        let err = fetcher()
            .fetch_to(
                &request("ftp://example.org/x.img", [0; 32]),
                &partial,
                &NoProgress,
            )
            .unwrap_err();
        assert!(
            matches!(&err, FetchError::UnsupportedScheme { scheme, .. } if scheme == "ftp"),
            "{err:?}"
        );
        assert!(!partial.exists());

        // A bad mirror is reported too, even though the URL itself is fine.
        let server = TestServer::start();
        let mirrors = vec![(server.url("/"), vec!["rsync://mirror/".to_owned()])];
        let url = server.url("/x.img");
        let req = FetchRequest {
            mirrors: &mirrors,
            ..request(&url, [0; 32])
        };
        let err = fetcher().fetch_to(&req, &partial, &NoProgress).unwrap_err();
        assert!(
            matches!(&err, FetchError::UnsupportedScheme { url, .. } if url == "rsync://mirror/x.img"),
            "{err:?}"
        );
        assert!(server.requests().is_empty());

        assert!(matches!(
            check_url("not a url"),
            Err(FetchError::InvalidUrl { .. })
        ));
        assert!(check_url("https://downloads.raspberrypi.com/").is_ok());
    }

    #[test]
    fn sources_use_the_longest_matching_prefix_then_the_url() {
        let mirrors = vec![
            ("https://a.org/".to_owned(), vec!["http://m1/".to_owned()]),
            (
                "https://a.org/images/".to_owned(),
                vec!["file:///srv/".to_owned(), "http://m2/".to_owned()],
            ),
            ("https://b.org/".to_owned(), vec!["http://m3/".to_owned()]),
        ];
        assert_eq!(
            sources("https://a.org/images/x.img", &mirrors),
            vec![
                "file:///srv/x.img",
                "http://m2/x.img",
                "https://a.org/images/x.img"
            ]
        );
        assert_eq!(
            sources("https://a.org/other", &mirrors),
            vec!["http://m1/other", "https://a.org/other"]
        );
        assert_eq!(sources("https://c.org/y", &mirrors), vec!["https://c.org/y"]);
        let identity = vec![("https://a.org/".to_owned(), vec!["https://a.org/".to_owned()])];
        assert_eq!(sources("https://a.org/z", &identity), vec!["https://a.org/z"]);
    }

    #[test]
    fn retry_delay_doubles_from_backoff_and_caps_retry_after() {
        let ms = Duration::from_millis;
        assert_eq!(retry_delay(ms(100), None, ms(1000)), ms(100));
        assert_eq!(retry_delay(ms(100), Some(ms(300)), ms(1000)), ms(300));
        assert_eq!(
            retry_delay(ms(100), Some(Duration::from_secs(120)), ms(1000)),
            ms(1000)
        );
        assert_eq!(retry_delay(ms(5000), None, ms(1000)), ms(1000));
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, Some(100))));
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("bytes 9-1/100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn sha256_parsing() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_sha256(&hex64).unwrap(), [0xab; 32]);
        assert!(matches!(
            parse_sha256("abc"),
            Err(FetchError::InvalidSha256 { .. })
        ));
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }

    fn basic(user: &str, password: &str) -> String {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    /// Every file left in `dir`, for the "nothing left behind" checks.
    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn redact_url_hides_userinfo_and_nothing_else() {
        assert_eq!(
            redact_url("https://ci:s3cret@example.org/a/b.img?x=1"),
            "https://***@example.org/a/b.img?x=1"
        );
        assert_eq!(
            redact_url("http://token@127.0.0.1:8080/x"),
            "http://***@127.0.0.1:8080/x"
        );
        assert_eq!(
            redact_url("https://example.org/pkg@1.2/x"),
            "https://example.org/pkg@1.2/x"
        );
        assert_eq!(redact_url("file:///srv/mirror/x.img"), "file:///srv/mirror/x.img");
        assert!(matches!(redact_url("https://example.org/x"), Cow::Borrowed(_)));
        // Unparseable: everything up to the last `@` of the authority goes.
        let shown = redact_url("http://u:pa/ss@host:99999/x");
        assert!(!shown.contains("pa") && !shown.contains("ss@"), "{shown}");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn credentials_in_a_url_are_sent_but_never_shown() {
        let server = TestServer::start();
        let body = content("private", 20_000);
        server.serve_with(
            "/private.img",
            body.clone(),
            Faults {
                require_auth: Some(basic("ci", "s3cret-token")),
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let url = server
            .url("/private.img")
            .replace("http://", "http://ci:s3cret-token@");
        let progress = Recorder::default();

        let outcome = fetcher()
            .fetch_to(&request(&url, sha(&body)), &dir.path().join("p.part"), &progress)
            .unwrap();
        assert_outcome(&outcome, &body);
        assert_eq!(
            outcome.source,
            server.url("/private.img").replace("http://", "http://***@")
        );
        assert!(!format!("{outcome:?} {:?}", progress.events()).contains("s3cret"));
        drop(outcome);

        // Every failure names the URL; none names the token.
        server.fail_always("/gone.img", 404);
        server.fail_always("/down.img", 503);
        for path in ["/gone.img", "/down.img"] {
            let url = server.url(path).replace("http://", "http://ci:s3cret-token@");
            let mirrors = vec![(url.clone(), vec![format!("{url}.mirror")])];
            let req = FetchRequest {
                mirrors: &mirrors,
                retries: 0,
                ..request(&url, sha(&body))
            };
            let err = fetcher()
                .fetch_to(&req, &dir.path().join("p.part"), &progress)
                .unwrap_err();
            let plain = format!("{err}\n{err:?}");
            let shown = format!("{plain}\n{:?}", miette::Report::new(err));
            assert!(shown.contains("***@127.0.0.1"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let err = fetcher()
            .fetch_to(
                &request("ftp://ci:s3cret-token@example.org/x", [0; 32]),
                &dir.path().join("p.part"),
                &NoProgress,
            )
            .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }

    #[test]
    fn netrc_credentials_are_applied_by_host_to_clean_urls() {
        let server = TestServer::start();
        let body = content("netrc", 10_000);
        server.serve_with(
            "/n.img",
            body.clone(),
            Faults {
                require_auth: Some(basic("ci", "from netrc")),
                ..Faults::default()
            },
        );
        let netrc = Netrc::parse(
            "# CI credentials\nmachine other.example login x password y\n\
             machine 127.0.0.1\n  login ci\n  password \"from netrc\"\n\
             macdef init\ncd /pub\n\ndefault login anonymous password guest\n",
        )
        .unwrap();
        assert!(!format!("{netrc:?}").contains("netrc\""), "{netrc:?}");
        let fetcher = Fetcher::new(&FetchConfig {
            system_proxy: false,
            netrc,
            ..FetchConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = server.url("/n.img");

        let outcome = fetcher
            .fetch_to(
                &request(&url, sha(&body)),
                &dir.path().join("n.part"),
                &NoProgress,
            )
            .unwrap();

        assert_outcome(&outcome, &body);
        assert_eq!(
            server.requests()[0].authorization.as_deref(),
            Some(basic("ci", "from netrc").as_str())
        );
        // Without a netrc the server refuses, and that is final.
        let err = fetcher_with(|_| {})
            .fetch_to(
                &request(&url, sha(&body)),
                &dir.path().join("m.part"),
                &NoProgress,
            )
            .unwrap_err();
        assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn netrc_syntax_errors_name_the_problem_and_no_secret() {
        for (text, needle) in [
            ("login ci password x", "before any `machine`"),
            ("machine", "no host name"),
            ("machine h login ci password \"open", "not closed"),
            ("machine h pasword s3cret", "unexpected `pasword`"),
        ] {
            let err = Netrc::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Netrc::load(&dir.path().join("absent"), false).unwrap(),
            Netrc::default()
        );
        assert!(matches!(
            Netrc::load(&dir.path().join("absent"), true),
            Err(FetchError::NetrcIo { .. })
        ));
    }

    fn fetcher_with(change: impl FnOnce(&mut FetchConfig)) -> Fetcher {
        let mut config = FetchConfig {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            system_proxy: false,
            ..FetchConfig::default()
        };
        change(&mut config);
        Fetcher::new(&config).unwrap()
    }

    #[test]
    fn an_endless_body_stops_at_the_limit_and_leaves_nothing_behind() {
        let server = TestServer::start();
        server.serve_with(
            "/zero",
            vec![0u8; 64 * 1024],
            Faults {
                endless: true,
                ..Faults::default()
            },
        );
        let fetcher = fetcher_with(|c| c.max_size = 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let url = server.url("/zero");

        let err = fetcher
            .fetch_to(&request(&url, [0; 32]), &dir.path().join("z.part"), &NoProgress)
            .unwrap_err();

        let FetchError::TooLarge {
            url: culprit, limit, ..
        } = &err
        else {
            panic!("expected too large, got {err:?}");
        };
        assert_eq!((culprit.as_str(), *limit), (url.as_str(), 1 << 20));
        assert!(err.to_string().contains("downloads.max_size"), "{err}");
        let help = miette::Diagnostic::help(&err).unwrap().to_string();
        assert!(help.contains("max_size"), "{help}");
        assert_eq!(server.requests().len(), 1, "an oversized answer is not retried");
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_declared_size_cuts_off_a_longer_body_and_refuses_a_longer_length() {
        let server = TestServer::start();
        let body = content("long", 300_000);
        server.serve("/announced.img", body.clone());
        server.serve_with(
            "/endless.img",
            body.clone(),
            Faults {
                endless: true,
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let progress = Recorder::default();
        for path in ["/announced.img", "/endless.img"] {
            let url = server.url(path);
            let req = FetchRequest {
                size: Some(100_000),
                ..request(&url, sha(&body))
            };
            let err = fetcher()
                .fetch_to(&req, &dir.path().join("a.part"), &progress)
                .unwrap_err();
            let FetchError::TooLarge {
                limit, why, raise, ..
            } = &err
            else {
                panic!("{path}: expected too large, got {err:?}");
            };
            assert_eq!(*limit, 100_000);
            assert!(why.contains("defs/bases/test.yaml"), "{why}");
            assert!(raise.contains("`size:`"), "{raise}");
            assert_eq!(files_in(dir.path()), Vec::<String>::new());
        }
        // The announced length was refused before a byte of the body was read.
        assert!(progress
            .events()
            .iter()
            .all(|e| !matches!(e, Event::Started(u, _) if u.ends_with("/announced.img"))));
        assert!(*progress.bytes.lock().unwrap() <= 100_000);

        // The right size passes.
        let url = server.url("/announced.img");
        let req = FetchRequest {
            size: Some(300_000),
            ..request(&url, sha(&body))
        };
        assert_outcome(
            &fetcher()
                .fetch_to(&req, &dir.path().join("a.part"), &NoProgress)
                .unwrap(),
            &body,
        );
    }

    #[test]
    fn a_declared_size_above_the_maximum_is_refused_before_any_request() {
        let server = TestServer::start();
        let url = server.url("/big.img");
        let req = FetchRequest {
            size: Some(2 << 20),
            ..request(&url, [0; 32])
        };
        let dir = tempfile::tempdir().unwrap();
        let err = fetcher_with(|c| c.max_size = 1 << 20)
            .fetch_to(&req, &dir.path().join("b.part"), &NoProgress)
            .unwrap_err();
        assert!(
            matches!(err, FetchError::SizeOverLimit { size, max, .. } if size == 2 << 20 && max == 1 << 20),
            "{err:?}"
        );
        assert!(server.requests().is_empty());
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn file_urls_read_only_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        for path in [Path::new("/dev/zero"), dir.path()] {
            let url = String::from(Url::from_file_path(path).unwrap());
            let err = fetcher()
                .fetch_to(&request(&url, [0; 32]), &work.path().join("f.part"), &NoProgress)
                .unwrap_err();
            let FetchError::NotRegularFile { path: named, .. } = &err else {
                panic!("{}: expected not a regular file, got {err:?}", path.display());
            };
            assert_eq!(named, path);
            assert!(err.to_string().contains("not a regular file"), "{err}");
            assert_eq!(files_in(work.path()), Vec::<String>::new());
        }
        // A regular file over the limit is refused from its size, unread.
        let big = dir.path().join("big.img");
        std::fs::write(&big, content("big", 4096)).unwrap();
        let url = String::from(Url::from_file_path(&big).unwrap());
        let req = FetchRequest {
            size: Some(1000),
            ..request(&url, [0; 32])
        };
        let progress = Recorder::default();
        let err = fetcher()
            .fetch_to(&req, &work.path().join("f.part"), &progress)
            .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { limit: 1000, .. }), "{err:?}");
        assert_eq!(*progress.bytes.lock().unwrap(), 0);
    }

    #[test]
    fn a_stalled_body_times_out_and_the_next_source_delivers() {
        let stalling = TestServer::start();
        let origin = TestServer::start();
        let body = content("stall", 200_000);
        stalling.serve_with(
            "/s.img",
            body.clone(),
            Faults {
                stall_after: Some(50_000),
                stall_for: Duration::from_secs(3),
                ..Faults::default()
            },
        );
        origin.serve("/s.img", body.clone());
        let mirrors = vec![(origin.url("/"), vec![stalling.url("/")])];
        let url = origin.url("/s.img");
        let req = FetchRequest {
            mirrors: &mirrors,
            retries: 0,
            ..request(&url, sha(&body))
        };
        let progress = Recorder::default();
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();

        let outcome = fetcher_with(|c| c.read_timeout = Duration::from_millis(500))
            .fetch_to(&req, &dir.path().join("s.part"), &progress)
            .unwrap();

        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_outcome(&outcome, &body);
        assert_eq!(outcome.source, url);
        assert_eq!(progress.events()[1], Event::SourceFailed(stalling.url("/s.img")));
        // The mirror's bytes were kept: the origin resumed after them.
        assert!(origin.requests()[0].range.is_some(), "{:?}", origin.requests());
    }

    #[test]
    fn a_trickling_body_fails_as_too_slow_and_is_retried() {
        let server = TestServer::start();
        let body = content("trickle", 5_000);
        server.serve_with(
            "/t.img",
            body.clone(),
            Faults {
                chunk_size: Some(1),
                chunk_delay: Duration::from_millis(10),
                ..Faults::default()
            },
        );
        let url = server.url("/t.img");
        let req = FetchRequest {
            retries: 1,
            ..request(&url, sha(&body))
        };
        let dir = tempfile::tempdir().unwrap();
        let progress = Recorder::default();
        let started = Instant::now();

        let err = fetcher_with(|c| c.read_timeout = Duration::from_millis(400))
            .fetch_to(&req, &dir.path().join("t.part"), &progress)
            .unwrap_err();

        // 50 bytes a second would take 50 s; two windows of 0.4 s each and a backoff.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let FetchError::Unavailable { failures, .. } = &err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert_eq!(failures[0].attempts, 2);
        assert!(failures[0].error.contains("too slow"), "{}", failures[0].error);
        assert_eq!(progress.retries(), 1);
        // The retry resumed what the first attempt got.
        assert!(server.requests()[1].range.is_some());
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_failed_download_leaves_no_partial_file() {
        let server = TestServer::start();
        let body = content("cut", 100_000);
        server.serve_with(
            "/c.img",
            body.clone(),
            Faults {
                drop_after: Some(40_000),
                drop_times: 10,
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let url = server.url("/c.img");
        let req = FetchRequest {
            retries: 1,
            ..request(&url, sha(&body))
        };
        let err = fetcher()
            .fetch_to(&req, &dir.path().join("c.part"), &NoProgress)
            .unwrap_err();
        assert!(matches!(err, FetchError::Unavailable { .. }), "{err:?}");
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }

    /// Progress that cancels the fetch once `after` bytes arrived.
    struct CancelAfter {
        after: u64,
        seen: Mutex<u64>,
    }

    impl FetchProgress for CancelAfter {
        fn advanced(&self, bytes: u64) {
            *self.seen.lock().unwrap() += bytes;
        }
        fn cancelled(&self) -> bool {
            *self.seen.lock().unwrap() >= self.after
        }
    }

    #[test]
    fn a_cancelled_download_stops_and_leaves_no_partial_file() {
        let server = TestServer::start();
        server.serve_with(
            "/long.img",
            vec![7u8; 64 * 1024],
            Faults {
                endless: true,
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let url = server.url("/long.img");
        let progress = CancelAfter {
            after: 1 << 20,
            seen: Mutex::new(0),
        };
        let err = fetcher()
            .fetch_to(&request(&url, [0; 32]), &dir.path().join("l.part"), &progress)
            .unwrap_err();
        assert!(matches!(err, FetchError::Cancelled), "{err:?}");
        assert!(*progress.seen.lock().unwrap() < 2 << 20);
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn local_write_errors_keep_their_os_cause() {
        // `/dev/full` answers every write with ENOSPC, like a full cache disk.
        if !Path::new("/dev/full").exists() {
            return;
        }
        let mut partial = Partial {
            path: PathBuf::from("/dev/full"),
            file: OpenOptions::new().write(true).open("/dev/full").unwrap(),
            // Not deleted on drop: the path is not ours.
            handed_over: true,
        };
        let err = partial.append(&[0; 4096]).unwrap_err();
        drop(partial);
        let report = format!("{:?}", miette::Report::new(err));
        assert!(report.contains("No space left on device"), "{report}");
    }

    #[test]
    fn concurrent_fetches_of_one_file_take_turns_and_all_succeed() {
        let server = TestServer::start();
        let body = content("shared", 2_000_000);
        server.serve_with(
            "/shared.img",
            body.clone(),
            Faults {
                chunk_delay: Duration::from_millis(1),
                ..Faults::default()
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("fetch-shared.part");
        let url = server.url("/shared.img");
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    scope.spawn(|| {
                        // Each thread its own client, like separate builder processes.
                        let mut got = fetcher()
                            .fetch_to(&request(&url, sha(&body)), &partial, &NoProgress)
                            .unwrap();
                        let mut bytes = Vec::new();
                        got.file().unwrap().read_to_end(&mut bytes).unwrap();
                        assert_eq!(Digest::of(&bytes), Digest::of(&body));
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
        assert_eq!(files_in(dir.path()), Vec::<String>::new());
    }
}
