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
//!   wrong), never "unavailable", even when another source also failed.
//!
//! It prints nothing and reads no environment (except reqwest's standard proxy variables when
//! [`FetchConfig::system_proxy`] asks for them); the application renders progress through
//! [`FetchProgress`] and errors through miette.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// How often one source may force a restart from byte 0 (server ignored or botched the
/// range, or a resumed file turned out wrong). Each restart drops the `Range` header, so one
/// is enough for an honest server; the cap only stops a broken one from looping.
const MAX_RESTARTS_PER_SOURCE: u32 = 2;

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
}

impl Default for FetchConfig {
    fn default() -> FetchConfig {
        FetchConfig {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            system_proxy: true,
        }
    }
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
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl FetchProgress for NoProgress {}

/// A verified download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The file holding the bytes: the `partial` path given to [`Fetcher::fetch_to`], now
    /// complete and verified. The caller imports it into the store.
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// The store's digest of the same bytes, computed in the same pass.
    pub blake3: Digest,
    /// The URL that served the bytes (a mirror's, or the requested one).
    pub source: String,
    /// Whether `source` is a mirror rather than the requested URL.
    pub from_mirror: bool,
    /// Attempts made on `source`, from 1.
    pub attempts: u32,
}

/// Why one source was given up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFailure {
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

    #[error("cannot write the download to `{}`", path.display())]
    #[diagnostic(code(w4b::fetch::io))]
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

fn parse_source(url: &str) -> Result<Source, FetchError> {
    let parsed = Url::parse(url).map_err(|e| FetchError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "http" | "https" => Ok(Source::Http(parsed)),
        "file" => parsed
            .to_file_path()
            .map(Source::File)
            .map_err(|()| FetchError::InvalidUrl {
                url: url.to_owned(),
                reason: "a `file://` URL must name an absolute local path".to_owned(),
            }),
        other => Err(FetchError::UnsupportedScheme {
            url: url.to_owned(),
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

fn reqwest_chain(error: reqwest::Error) -> String {
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
    /// The bytes are complete but their sha256 is `actual`; the partial file is deleted.
    Mismatch { actual: Sha256Digest },
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

    fn finish(self) -> (Sha256Digest, Digest, u64) {
        (
            self.sha256.finalize().into(),
            Digest::from(self.blake3.finalize()),
            self.size,
        )
    }
}

/// The partial file of one fetch, with the path for error messages.
struct Partial<'p> {
    path: &'p Path,
    file: File,
}

impl<'p> Partial<'p> {
    fn open(path: &'p Path) -> Result<Partial<'p>, FetchError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| io_error(path, source))?;
        Ok(Partial { path, file })
    }

    fn len(&self) -> Result<u64, FetchError> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|source| io_error(self.path, source))
    }

    /// Empties the file and positions at 0.
    fn truncate(&mut self) -> Result<(), FetchError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|source| io_error(self.path, source))
    }

    /// Feeds the existing bytes to `hashers` and leaves the position at the end.
    fn hash_existing(&mut self, hashers: &mut Hashers) -> Result<(), FetchError> {
        let path = self.path;
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
            .map_err(|source| io_error(self.path, source))
    }

    fn sync(&mut self) -> Result<(), FetchError> {
        self.file.sync_all().map_err(|source| io_error(self.path, source))
    }
}

fn io_error(path: &Path, source: io::Error) -> FetchError {
    FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

fn remove_partial(path: &Path) -> Result<(), FetchError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
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
}

impl Fetcher {
    pub fn new(config: &FetchConfig) -> Result<Fetcher, FetchError> {
        let mut builder = Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            // In the blocking client this bounds the wait for the response head and each
            // body read separately: a read timeout, not a limit on the whole transfer.
            .timeout(config.read_timeout);
        if !config.system_proxy {
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|source| FetchError::Client { source })?;
        Ok(Fetcher { client })
    }

    /// Downloads `req.url` (or a mirror of it) into `partial` and verifies its sha256.
    ///
    /// `partial` may hold the beginning of the same file from an interrupted run; it is
    /// resumed. On success it holds exactly the verified bytes. On a sha256 mismatch it is
    /// deleted. On any other failure it is left for a later resume (or removed if empty).
    ///
    /// The caller owns `partial`: its directory must exist, and no other fetch may use the
    /// same path at the same time (name it after the sha256 and hold the store's lock).
    pub fn fetch_to(
        &self,
        req: &FetchRequest<'_>,
        partial: &Path,
        progress: &dyn FetchProgress,
    ) -> Result<FetchOutcome, FetchError> {
        let urls = sources(req.url, req.mirrors);
        // Every source is checked before the first byte moves: a misconfigured mirror is a
        // configuration error, not something to skip silently on every build.
        let parsed = urls
            .iter()
            .map(|u| parse_source(u))
            .collect::<Result<Vec<_>, _>>()?;

        let mut failures = Vec::new();
        // The first source that delivered wrong bytes: its index in `failures` and digest.
        let mut mismatch: Option<(usize, Sha256Digest)> = None;
        for (url, source) in urls.iter().zip(&parsed) {
            match self.fetch_from(req, url, source, partial, progress)? {
                Ok(mut outcome) => {
                    outcome.from_mirror = url != req.url;
                    return Ok(outcome);
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
                    };
                    progress.source_failed(url, &error);
                    failures.push(SourceFailure {
                        url: url.clone(),
                        attempts,
                        error,
                        permanent,
                    });
                }
            }
        }

        // An empty partial file from sources that never sent a byte helps no later resume.
        if std::fs::metadata(partial).is_ok_and(|m| m.len() == 0) {
            remove_partial(partial)?;
        }
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
        if failures.iter().all(|f| f.permanent) {
            return Err(FetchError::NotFound {
                url: req.url.to_owned(),
                declared_in: req.declared_in.to_owned(),
                failures,
            });
        }
        Err(FetchError::Unavailable {
            url: req.url.to_owned(),
            failures,
        })
    }

    /// Tries one source with retries. The outer `Result` is a local failure that stops the
    /// whole fetch; the inner one is this source's verdict (with the attempts made).
    fn fetch_from(
        &self,
        req: &FetchRequest<'_>,
        url: &str,
        source: &Source,
        partial: &Path,
        progress: &dyn FetchProgress,
    ) -> Result<Result<FetchOutcome, (u32, SourceEnd)>, FetchError> {
        let mut attempt = 0u32;
        let mut restarts = 0u32;
        let mut delay = req.backoff;
        loop {
            attempt += 1;
            let result = match source {
                Source::Http(parsed) => self.attempt_http(req, url, parsed, partial, progress),
                Source::File(path) => attempt_file(req, url, path, partial, progress),
            };
            match result {
                Ok((sha256, blake3, size)) => {
                    return Ok(Ok(FetchOutcome {
                        path: partial.to_owned(),
                        size,
                        sha256,
                        blake3,
                        source: url.to_owned(),
                        from_mirror: false,
                        attempts: attempt,
                    }));
                }
                Err(AttemptError::Local(e)) => return Err(e),
                Err(AttemptError::Mismatch { actual }) => {
                    remove_partial(partial)?;
                    return Ok(Err((attempt, SourceEnd::Mismatch(actual))));
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
                    progress.retrying(url, attempt, &error);
                    std::thread::sleep(retry_delay(delay, retry_after, req.max_backoff));
                    delay = delay.saturating_mul(2).min(req.max_backoff);
                }
            }
        }
    }

    /// One HTTP request, resuming from the partial file when it has bytes.
    fn attempt_http(
        &self,
        req: &FetchRequest<'_>,
        label: &str,
        url: &Url,
        path: &Path,
        progress: &dyn FetchProgress,
    ) -> Result<(Sha256Digest, Digest, u64), AttemptError> {
        let mut partial = Partial::open(path).map_err(AttemptError::Local)?;
        let offset = partial.len().map_err(AttemptError::Local)?;
        let mut request = self.client.get(url.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
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
                        total.or_else(|| response.content_length().map(|n| n + offset))
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
        let resumed_from = hashers.size;
        progress.started(label, total);
        if resumed_from > 0 {
            progress.advanced(resumed_from);
        }
        copy_body(response, &mut partial, &mut hashers, progress)?;
        if let Some(total) = total {
            if hashers.size < total {
                return Err(AttemptError::Retry {
                    error: format!("the connection closed after {} of {total} bytes", hashers.size),
                    retry_after: None,
                });
            }
        }
        partial.sync().map_err(AttemptError::Local)?;
        verify(req, hashers, resumed_from, &mut partial)
    }
}

/// How a source ended when it did not deliver.
enum SourceEnd {
    Failed { error: String, permanent: bool },
    Mismatch(Sha256Digest),
}

/// Checks the finished digest. A wrong file that was resumed from an earlier prefix gets one
/// fresh download from the same source before the source is blamed: the prefix may have come
/// from another mirror or an older run.
fn verify(
    req: &FetchRequest<'_>,
    hashers: Hashers,
    resumed_from: u64,
    partial: &mut Partial<'_>,
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

/// Streams the response body into the partial file. A read error leaves what arrived on
/// disk, for the retry to resume.
fn copy_body(
    mut response: Response,
    partial: &mut Partial<'_>,
    hashers: &mut Hashers,
    progress: &dyn FetchProgress,
) -> Result<(), AttemptError> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(AttemptError::Retry {
                    error: format!("the connection broke after {} bytes: {}", hashers.size, chain(&e)),
                    retry_after: None,
                });
            }
        };
        partial.append(&buf[..n]).map_err(AttemptError::Local)?;
        hashers.update(&buf[..n]);
        progress.advanced(n as u64);
    }
}

/// Copies a local file. Reading a local file is as fast as re-reading the partial one, so
/// this always starts from 0 rather than resuming.
fn attempt_file(
    req: &FetchRequest<'_>,
    label: &str,
    source: &Path,
    path: &Path,
    progress: &dyn FetchProgress,
) -> Result<(Sha256Digest, Digest, u64), AttemptError> {
    let mut input = File::open(source)
        .map_err(|e| AttemptError::GiveUp(format!("cannot open `{}`: {e}", source.display())))?;
    let total = input.metadata().ok().map(|m| m.len());
    let mut partial = Partial::open(path).map_err(AttemptError::Local)?;
    partial.truncate().map_err(AttemptError::Local)?;
    progress.started(label, total);
    let mut hashers = Hashers::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
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
        partial.append(&buf[..n]).map_err(AttemptError::Local)?;
        hashers.update(&buf[..n]);
        progress.advanced(n as u64);
    }
    partial.sync().map_err(AttemptError::Local)?;
    verify(req, hashers, 0, &mut partial)
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
}
