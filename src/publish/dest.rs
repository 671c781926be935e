//! Where releases go: a directory, an HTTP(S) server that takes `PUT`, or an
//! `s3://bucket/prefix` (the remote cache's object-store client, [`w4b_cache::S3Bucket`]).
//!
//! Each destination answers three questions about a path below it — how large is what
//! is there ([`Destination::size`]: a `stat`, a `HEAD`, an S3 `HEAD`), what are its bytes
//! ([`Destination::get`], for the small files) — and writes one ([`Destination::put`]).
//! [`Destination::publish`] uses them so that a file already there with the same bytes is
//! not sent again: small files are compared byte for byte, an image by its size and the
//! `.sha256` file published after it (an interrupted upload leaves no matching `.sha256`,
//! so it is sent again).

use std::io::Read;
use std::path::{Path, PathBuf};

/// What a destination could not do.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DestError {
    #[error("cannot {action} `{target}`: {message}")]
    #[diagnostic(
        code(w4b::publish::io),
        help("check that the destination exists and is writable (a directory's permissions, the server's answer to `PUT`, the bucket's credentials: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`)")
    )]
    Io {
        action: &'static str,
        target: String,
        message: String,
    },
    #[error("`{to}` is not a destination w4b can publish to")]
    #[diagnostic(
        code(w4b::publish::destination),
        help("give a directory, an `http://` or `https://` URL of a server that takes `PUT`, or `s3://BUCKET/PREFIX`")
    )]
    Unsupported { to: String },
}

/// Files below one root, addressed by `/`-separated relative paths.
pub trait Destination {
    /// The destination as given (`/srv/images`, `https://…/`, `s3://…`), for messages.
    fn describe(&self) -> String;
    /// The URL a person downloads `rel` from, if the destination itself has one.
    fn url(&self, rel: &str) -> Option<String>;
    fn size(&self, rel: &str) -> Result<Option<u64>, DestError>;
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, DestError>;
    /// Writes `body` as `rel`, replacing what is there; a reader sees the old file or the
    /// new one, never a part (where the destination allows).
    fn put(&self, rel: &str, body: Body<'_>) -> Result<(), DestError>;
}

/// What [`Destination::put`] sends: small bytes, or a file of a known size.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a Path, u64),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, n) => *n,
        }
    }

    fn reader(&self) -> Result<Box<dyn Read + Send + '_>, DestError> {
        Ok(match *self {
            Body::Bytes(b) => Box::new(b),
            Body::File(p, _) => Box::new(std::fs::File::open(p).map_err(io_err("read", p))?),
        })
    }
}

/// What publishing one file did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The same bytes were there.
    Unchanged,
    /// Sent, with its size.
    Uploaded(u64),
}

impl dyn Destination + '_ {
    /// Writes the small file `rel` unless the same bytes are there.
    pub fn publish_bytes(&self, rel: &str, bytes: &[u8]) -> Result<Sent, DestError> {
        if self.get(rel)?.as_deref() == Some(bytes) {
            return Ok(Sent::Unchanged);
        }
        self.put(rel, Body::Bytes(bytes))?;
        Ok(Sent::Uploaded(bytes.len() as u64))
    }

    /// Writes the file at `path` as `rel`, then its `.sha256` line as `sha256_rel`,
    /// unless both are there already (same size, same `.sha256`).
    pub fn publish_file(
        &self,
        rel: &str,
        path: &Path,
        size: u64,
        sha256_rel: &str,
        sha256_line: &str,
    ) -> Result<Sent, DestError> {
        if self.size(rel)? == Some(size) && self.get(sha256_rel)?.as_deref() == Some(sha256_line.as_bytes()) {
            return Ok(Sent::Unchanged);
        }
        self.put(rel, Body::File(path, size))?;
        self.put(sha256_rel, Body::Bytes(sha256_line.as_bytes()))?;
        Ok(Sent::Uploaded(size + sha256_line.len() as u64))
    }
}

/// `to` as a destination: `s3://…`, `http(s)://…`, else a directory (relative to `cwd`).
pub fn open(
    to: &str,
    cwd: &Path,
    s3: impl FnOnce() -> Result<w4b_cache::S3Bucket, w4b_cache::CacheError>,
    token: Option<String>,
) -> Result<Box<dyn Destination>, DestError> {
    if to.starts_with("s3://") {
        let bucket = s3().map_err(|e| DestError::Io {
            action: "open the bucket",
            target: to.to_owned(),
            message: e.to_string(),
        })?;
        return Ok(Box::new(S3(bucket)));
    }
    if to.starts_with("http://") || to.starts_with("https://") {
        return Ok(Box::new(Http::new(to, token)?));
    }
    if to.contains("://") {
        return Err(DestError::Unsupported { to: to.to_owned() });
    }
    Ok(Box::new(Dir(cwd.join(to))))
}

/// A directory (a web server's document root, a mounted share).
pub struct Dir(pub PathBuf);

impl Dir {
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

fn io_err<'a>(action: &'static str, p: &'a Path) -> impl Fn(std::io::Error) -> DestError + 'a {
    move |e| DestError::Io {
        action,
        target: p.display().to_string(),
        message: e.to_string(),
    }
}

impl Destination for Dir {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    fn url(&self, _rel: &str) -> Option<String> {
        None
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, DestError> {
        let p = self.path(rel);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("look at", &p)(e)),
        }
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, DestError> {
        let p = self.path(rel);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    fn put(&self, rel: &str, body: Body<'_>) -> Result<(), DestError> {
        let p = self.path(rel);
        let dir = p.parent().unwrap_or(&self.0).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        // Written beside the final name and renamed: a download never sees half a file.
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err("write into", &dir))?;
        std::io::copy(&mut body.reader()?, &mut tmp).map_err(io_err("write", &p))?;
        // Served files are readable by all (a temporary file starts private).
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_err("write", &p))?;
        // Durable before it has its name: after a power loss the name holds the whole
        // file or nothing, never a zero-filled one a later publish would take as sent.
        tmp.as_file().sync_all().map_err(io_err("write", &p))?;
        tmp.persist(&p).map_err(|e| io_err("write", &p)(e.error))?;
        // And the name itself, so a published `latest.json` never points at a lost file.
        if let Ok(d) = std::fs::File::open(&dir) {
            d.sync_all().map_err(io_err("write", &p))?;
        }
        Ok(())
    }
}

/// An HTTP(S) server taking `PUT` (nginx with WebDAV, a bucket's HTTP API, a release
/// server), with an optional bearer token (`W4B_PUBLISH_TOKEN`).
pub struct Http {
    base: String,
    client: reqwest::blocking::Client,
    token: Option<String>,
}

impl Http {
    fn new(base: &str, token: Option<String>) -> Result<Http, DestError> {
        let client = reqwest::blocking::Client::builder()
            .user_agent(concat!("w4b/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            // An upload of a large image may take long; a stalled server is caught by the
            // connection's own timeouts.
            .timeout(None)
            .build()
            .map_err(|e| DestError::Io {
                action: "start an HTTP client for",
                target: base.to_owned(),
                message: reqwest_text(e),
            })?;
        Ok(Http {
            base: format!("{}/", base.trim_end_matches('/')),
            client,
            token,
        })
    }

    fn request(&self, method: reqwest::Method, rel: &str) -> reqwest::blocking::RequestBuilder {
        let r = self.client.request(method, format!("{}{rel}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn fail(&self, action: &'static str, rel: &str, message: String) -> DestError {
        DestError::Io {
            action,
            // Credentials in the URL stay out of messages.
            target: crate::steps::fetch::redact_url(&format!("{}{rel}", self.base)).into_owned(),
            message,
        }
    }
}

/// A reqwest error's text with its causes, where the reason is ("connection refused",
/// "certificate not valid"; reqwest's own text is only "error sending request for url"),
/// and without its URL, which every message here already names, redacted.
fn reqwest_text(e: reqwest::Error) -> String {
    crate::download::reqwest_chain(e)
}

impl Destination for Http {
    fn describe(&self) -> String {
        crate::steps::fetch::redact_url(&self.base).into_owned()
    }

    /// The download URL: the upload URL without its credentials. A person's browser or
    /// Raspberry Pi Imager reads it; the redacted `https://***@…` of messages would have
    /// them log in as `***`.
    fn url(&self, rel: &str) -> Option<String> {
        let mut url = reqwest::Url::parse(&format!("{}{rel}", self.base)).ok()?;
        let _ = url.set_password(None);
        let _ = url.set_username("");
        Some(url.into())
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, DestError> {
        let r = self
            .request(reqwest::Method::HEAD, rel)
            .send()
            .map_err(|e| self.fail("look up", rel, reqwest_text(e)))?;
        match r.status() {
            s if s.is_success() => Ok(r
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())),
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE => Ok(None),
            s => Err(self.fail("look up", rel, format!("the server answered {s}"))),
        }
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, DestError> {
        let r = self
            .request(reqwest::Method::GET, rel)
            .send()
            .map_err(|e| self.fail("read", rel, reqwest_text(e)))?;
        match r.status() {
            s if s.is_success() => Ok(Some(
                r.bytes()
                    .map_err(|e| self.fail("read", rel, reqwest_text(e)))?
                    .to_vec(),
            )),
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE => Ok(None),
            s => Err(self.fail("read", rel, format!("the server answered {s}"))),
        }
    }

    fn put(&self, rel: &str, body: Body<'_>) -> Result<(), DestError> {
        let payload = match body {
            Body::Bytes(b) => reqwest::blocking::Body::from(b.to_vec()),
            Body::File(p, n) => {
                let f = std::fs::File::open(p).map_err(io_err("read", p))?;
                reqwest::blocking::Body::sized(f, n)
            }
        };
        let r = self
            .request(reqwest::Method::PUT, rel)
            .body(payload)
            .send()
            .map_err(|e| self.fail("upload", rel, reqwest_text(e)))?;
        if !r.status().is_success() {
            return Err(self.fail("upload", rel, format!("the server answered {}", r.status())));
        }
        Ok(())
    }
}

/// An `s3://bucket/prefix`.
pub struct S3(pub w4b_cache::S3Bucket);

impl S3 {
    fn fail(&self, action: &'static str, rel: &str, e: w4b_cache::CacheError) -> DestError {
        DestError::Io {
            action,
            target: format!("{}/{rel}", self.0.url()),
            message: e.to_string(),
        }
    }
}

impl Destination for S3 {
    fn describe(&self) -> String {
        self.0.url().to_owned()
    }

    fn url(&self, _rel: &str) -> Option<String> {
        None
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, DestError> {
        self.0.size(rel).map_err(|e| self.fail("look up", rel, e))
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, DestError> {
        self.0.get(rel).map_err(|e| self.fail("read", rel, e))
    }

    fn put(&self, rel: &str, body: Body<'_>) -> Result<(), DestError> {
        self.0
            .put(rel, &mut body.reader()?, body.len())
            .map(|_| ())
            .map_err(|e| self.fail("upload", rel, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_sends_only_what_differs() {
        let tmp = tempfile::tempdir().unwrap();
        let d: Box<dyn Destination> = Box::new(Dir(tmp.path().to_path_buf()));
        assert_eq!(d.publish_bytes("a/b.json", b"1").unwrap(), Sent::Uploaded(1));
        assert_eq!(d.publish_bytes("a/b.json", b"1").unwrap(), Sent::Unchanged);
        assert_eq!(d.publish_bytes("a/b.json", b"22").unwrap(), Sent::Uploaded(2));
        let img = tmp.path().join("img");
        std::fs::write(&img, b"image").unwrap();
        let first = d
            .publish_file("x/i.img", &img, 5, "x/i.img.sha256", "s  i.img\n")
            .unwrap();
        assert_eq!(first, Sent::Uploaded(5 + 9));
        let again = d
            .publish_file("x/i.img", &img, 5, "x/i.img.sha256", "s  i.img\n")
            .unwrap();
        assert_eq!(again, Sent::Unchanged);
        // An interrupted upload (no `.sha256`) is sent again.
        std::fs::remove_file(tmp.path().join("x/i.img.sha256")).unwrap();
        let redo = d
            .publish_file("x/i.img", &img, 5, "x/i.img.sha256", "s  i.img\n")
            .unwrap();
        assert_eq!(redo, Sent::Uploaded(14));
        let mode = std::fs::metadata(tmp.path().join("x/i.img"))
            .unwrap()
            .permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o644);
    }

    #[test]
    fn an_unreachable_server_is_named_with_the_cause_and_without_a_password() {
        let d = open(
            "http://ci:publish-pw-1234@127.0.0.1:1/w4b",
            Path::new("/"),
            || unreachable!(),
            None,
        )
        .unwrap();
        for e in [
            d.size("a.img").unwrap_err(),
            d.get("a.json").unwrap_err(),
            d.put("a.json", Body::Bytes(b"{}")).unwrap_err(),
        ] {
            let shown = format!("{:?}", miette::Report::new(e));
            assert!(!shown.contains("publish-pw-1234"), "{shown}");
            assert!(shown.contains("127.0.0.1:1/w4b/a."), "{shown}");
            // Why it failed, not only that sending failed.
            assert!(shown.contains("Connection refused"), "{shown}");
        }
        // The download URL has no credentials, not even masked ones.
        assert_eq!(
            d.url("h/a b.img.zst").as_deref(),
            Some("http://127.0.0.1:1/w4b/h/a%20b.img.zst")
        );
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let r = open("ftp://x/", Path::new("/"), || unreachable!(), None);
        assert!(matches!(r, Err(DestError::Unsupported { .. })));
    }
}
