//! An S3-compatible server for the remote-cache tests: moto's server mode, a real HTTP
//! endpoint on 127.0.0.1 (never an object in the test process).
//!
//! `.ci/run` starts one and exports `W4B_TEST_S3=http://127.0.0.1:5055`; without it,
//! the first test that needs one spawns `moto_server` (from the venv `.ci/install-deps`
//! makes, or `PATH`) on a free port, for the rest of the test process. A missing moto
//! fails under CI and skips locally, like every oracle ([`crate::oracle`]). Each test
//! gets its own bucket. moto does not check signatures, so any credentials do.

#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // reads `W4B_TEST_S3`, spawns the server

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `.ci/install-deps` puts moto.
pub const VENV_SERVER: &str = "/opt/w4b-s3-oracle/bin/moto_server";

pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// The `sh` that owns a server this process spawned: it ends the server when the
    /// test process exits (its standard input closes).
    _owner: Option<Child>,
}

static SERVER: OnceLock<Option<S3Server>> = OnceLock::new();

/// The test S3 server, or `None` (reported as a skip, or a failure under CI).
#[track_caller]
pub fn server() -> Option<&'static S3Server> {
    let s = SERVER.get_or_init(start).as_ref();
    if s.is_none() {
        crate::oracle::unavailable(match std::env::var_os("W4B_TEST_S3") {
            Some(_) => "no S3 test server: the one `W4B_TEST_S3` names does not answer `GET /moto-api/`",
            None => "no S3 test server: `moto_server` is not installed (run `.ci/install-deps`) and `W4B_TEST_S3` is not set",
        });
    }
    s
}

fn start() -> Option<S3Server> {
    if let Ok(endpoint) = std::env::var("W4B_TEST_S3") {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        wait_ready(&endpoint).then_some(())?;
        return Some(S3Server {
            endpoint,
            _owner: None,
        });
    }
    let bin = crate::oracle::find(VENV_SERVER).or_else(|| crate::oracle::find("moto_server"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let script = format!(
        "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid",
        bin.display()
    );
    let owner = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    if !wait_ready(&endpoint) {
        panic!("`{}` did not answer on {endpoint} within 60 s", bin.display());
    }
    Some(S3Server {
        endpoint,
        _owner: Some(owner),
    })
}

/// Polls `GET /moto-api/` until it answers (60 s at most).
fn wait_ready(endpoint: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if request(endpoint, "GET", "/moto-api/").is_some_and(|s| s == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// One plain HTTP/1.1 request without a body; the status code.
pub fn request(endpoint: &str, method: &str, path: &str) -> Option<u16> {
    http(endpoint, method, path, &[], b"").map(|(status, _)| status)
}

/// An `Authorization` header moto accepts: it checks no signatures, but treats requests
/// without one as anonymous and applies the (private) object ACLs to them.
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=w4b-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

/// One plain HTTP/1.1 request with a dummy signature (moto does not check signatures):
/// the status and the body.
pub fn http(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let host = endpoint.strip_prefix("http://")?;
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {AUTH}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status_line = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut payload = resp[split + 4..].to_vec();
    if status_line
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = dechunk(&payload);
    }
    Some((status, payload))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

fn between(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open)
        .skip(1)
        .filter_map(|s| s.split_once(close).map(|(v, _)| v.replace("&amp;", "&")))
        .collect()
}

impl S3Server {
    /// Creates a fresh bucket for one test (moto takes an unverified `PUT /<bucket>`) and
    /// returns its name.
    pub fn bucket(&self, test: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let clean: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!("w4b-{clean}-{}-{n}", std::process::id());
        let status = request(&self.endpoint, "PUT", &format!("/{name}"));
        assert_eq!(status, Some(200), "creating bucket `{name}` on {}", self.endpoint);
        name
    }

    /// Every key in `bucket` under `prefix`, sorted (ListObjectsV2, followed page by page).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&prefix={prefix}");
            if let Some(t) = &token {
                path.push_str(&format!(
                    "&continuation-token={}",
                    t.replace('=', "%3D").replace('/', "%2F").replace('+', "%2B")
                ));
            }
            let (status, body) = http(&self.endpoint, "GET", &path, &[], b"").expect("list");
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let text = String::from_utf8_lossy(&body).into_owned();
            out.extend(between(&text, "<Key>", "</Key>"));
            token = between(&text, "<NextContinuationToken>", "</NextContinuationToken>")
                .into_iter()
                .next();
            if token.is_none() {
                break;
            }
        }
        out.sort();
        out
    }

    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        match http(&self.endpoint, "GET", &format!("/{bucket}/{key}"), &[], b"") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// A plain overwrite, behind the store's back.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> u16 {
        self.put_with(bucket, key, &[], body)
    }

    pub fn put_with(&self, bucket: &str, key: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        http(&self.endpoint, "PUT", &format!("/{bucket}/{key}"), headers, body)
            .expect("put")
            .0
    }

    pub fn delete(&self, bucket: &str, key: &str) -> u16 {
        http(&self.endpoint, "DELETE", &format!("/{bucket}/{key}"), &[], b"")
            .expect("delete")
            .0
    }

    /// The environment a `w4b` process needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "w4b-test"),
            ("AWS_SECRET_ACCESS_KEY", "w4b-test-secret"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}
