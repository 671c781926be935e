//! A small HTTP/1.1 server on `127.0.0.1` for tests of anything that downloads.
//!
//! It serves in-memory files and misbehaves on request: it can fail the first requests with a
//! status (503 by default, optionally with `Retry-After`), answer a fixed status forever (401,
//! 403, 404, 410, 500), cut the connection after a number of body bytes, honour `Range` or
//! ignore it, stall before the headers, between body chunks or in the middle of the body,
//! trickle the body a few bytes at a time, send an endless body, and demand credentials.
//! Every request it reads is recorded (method, path, `Range`, `User-Agent`, `Authorization`)
//! so a test can assert that a resume really sent a range.
//!
//! It is built on std sockets and threads rather than a server crate because the faults we need
//! (dropping a connection mid-body, a `Content-Range` that does not match) are exactly the
//! things a well-behaved server library refuses to do. Each connection is answered once and
//! closed (`Connection: close`), so no client connection pool can hide a fault. Dropping the
//! server stops the accept loop and joins every connection thread: nothing outlives a test.
//!
//! Include it from an integration test with `mod support;` (`tests/support/mod.rs`) or from a
//! unit test with `#[path = ".../tests/support/http.rs"] mod test_http;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a served path misbehaves. The default serves the body correctly.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Answer every request with this status and no file (e.g. 404, 403, 500).
    pub always_status: Option<u16>,
    /// Answer the first `fail_first` requests with `fail_status` before serving normally.
    pub fail_first: u32,
    /// The status used by `fail_first`; 503 unless changed.
    pub fail_status: u16,
    /// A `Retry-After` value (seconds) sent with the `fail_first` answers.
    pub retry_after: Option<u64>,
    /// Close the connection after this many body bytes, for the first `drop_times` bodies.
    pub drop_after: Option<usize>,
    /// How many bodies are cut short by `drop_after`; 1 unless changed.
    pub drop_times: u32,
    /// Ignore `Range` and always answer 200 with the whole file.
    pub ignore_range: bool,
    /// Wait this long before sending the status line.
    pub header_delay: Duration,
    /// Wait this long before each body chunk.
    pub chunk_delay: Duration,
    /// Bytes per body chunk (16 KiB unless changed); with `chunk_delay`, a trickle.
    pub chunk_size: Option<usize>,
    /// After this many body bytes, go silent for `stall_for`, then close the connection.
    pub stall_after: Option<usize>,
    /// How long `stall_after` stays silent.
    pub stall_for: Duration,
    /// Send the body over and over without `Content-Length`, until the client hangs up.
    pub endless: bool,
    /// Answer 401 unless the request's `Authorization` header is exactly this.
    pub require_auth: Option<String>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            always_status: None,
            fail_first: 0,
            fail_status: 503,
            retry_after: None,
            drop_after: None,
            drop_times: 1,
            ignore_range: false,
            header_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            chunk_size: None,
            stall_after: None,
            stall_for: Duration::ZERO,
            endless: false,
            require_auth: None,
        }
    }
}

/// One request as the server read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub user_agent: Option<String>,
    pub authorization: Option<String>,
}

struct Route {
    body: Arc<Vec<u8>>,
    faults: Faults,
    failures_sent: u32,
    drops_done: u32,
}

#[derive(Default)]
struct State {
    routes: BTreeMap<String, Route>,
    requests: Vec<RecordedRequest>,
}

/// The running server. Dropping it stops it.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// Chunk size of written bodies; small enough that `drop_after` and `chunk_delay` bite.
const CHUNK: usize = 16 * 1024;
/// Socket timeouts so a stuck client cannot keep a connection thread (and the test) alive.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking connection thread must not hide the requests from the test's assertions.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TestServer {
    /// Starts a server on an ephemeral port of `127.0.0.1`.
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || accept_loop(listener, state, stop))
        };
        TestServer {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Serves `body` at `path` without faults.
    pub fn serve(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.serve_with(path, body, Faults::default());
    }

    /// Serves `body` at `path` with `faults`. Replacing a route resets its fault counters.
    pub fn serve_with(&self, path: &str, body: impl Into<Vec<u8>>, faults: Faults) {
        lock(&self.state).routes.insert(
            path.to_owned(),
            Route {
                body: Arc::new(body.into()),
                faults,
                failures_sent: 0,
                drops_done: 0,
            },
        );
    }

    /// Answers every request for `path` with `status`.
    pub fn fail_always(&self, path: &str, status: u16) {
        self.serve_with(
            path,
            Vec::new(),
            Faults {
                always_status: Some(status),
                ..Faults::default()
            },
        );
    }

    /// Every request read so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// The requests for one path.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking `accept` so the loop sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// A URL on `127.0.0.1` where nothing listens: connecting is refused.
pub fn refused_url(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    format!("http://{addr}{path}")
}

fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let mut connections = Vec::new();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(&state);
        connections.push(std::thread::spawn(move || {
            let _ = handle(stream, &state);
        }));
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Reads the request head (up to the blank line). Bodies are not expected.
fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn parse_request(head: &str) -> RecordedRequest {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let mut range = None;
    let mut user_agent = None;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(value),
                "user-agent" => user_agent = Some(value),
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
    }
    RecordedRequest {
        method,
        path,
        range,
        user_agent,
        authorization,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// What one connection answers, decided under the lock and then written without it.
struct Plan {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    drop_after: Option<usize>,
    header_delay: Duration,
    /// The route's faults, for the body's pacing (chunks, stall, endless).
    faults: Faults,
}

fn plan(state: &Mutex<State>, request: &RecordedRequest) -> Plan {
    let mut state = lock(state);
    state.requests.push(request.clone());
    let empty = Arc::new(Vec::new());
    let status_only = |status: u16, headers: Vec<(String, String)>, delay: Duration| Plan {
        status,
        headers,
        body: Arc::clone(&empty),
        start: 0,
        end: 0,
        drop_after: None,
        header_delay: delay,
        faults: Faults::default(),
    };
    let Some(route) = state.routes.get_mut(&request.path) else {
        return status_only(404, Vec::new(), Duration::ZERO);
    };
    let faults = route.faults.clone();
    if let Some(status) = faults.always_status {
        return status_only(status, Vec::new(), faults.header_delay);
    }
    if faults.require_auth.is_some() && faults.require_auth != request.authorization {
        let headers = vec![("WWW-Authenticate".to_owned(), "Basic realm=\"test\"".to_owned())];
        return status_only(401, headers, faults.header_delay);
    }
    if route.failures_sent < faults.fail_first {
        route.failures_sent += 1;
        let headers = faults
            .retry_after
            .map(|s| vec![("Retry-After".to_owned(), s.to_string())])
            .unwrap_or_default();
        return status_only(faults.fail_status, headers, faults.header_delay);
    }
    let len = route.body.len();
    let wanted = if faults.ignore_range {
        None
    } else {
        request
            .range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok())
    };
    let (status, start, mut headers) = match wanted {
        Some(start) if start >= len => {
            let headers = vec![("Content-Range".to_owned(), format!("bytes */{len}"))];
            return status_only(416, headers, faults.header_delay);
        }
        Some(start) => (
            206,
            start,
            vec![(
                "Content-Range".to_owned(),
                format!("bytes {start}-{}/{len}", len - 1),
            )],
        ),
        None => (200, 0, Vec::new()),
    };
    headers.push(("Accept-Ranges".to_owned(), "bytes".to_owned()));
    let drop_after = match faults.drop_after {
        Some(k) if route.drops_done < faults.drop_times => {
            route.drops_done += 1;
            Some(k)
        }
        _ => None,
    };
    Plan {
        status,
        headers,
        body: Arc::clone(&route.body),
        start,
        end: len,
        drop_after,
        header_delay: faults.header_delay,
        faults,
    }
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let request = parse_request(&head);
    let plan = plan(state, &request);
    std::thread::sleep(plan.header_delay);
    let mut out = format!("HTTP/1.1 {} {}\r\n", plan.status, reason(plan.status));
    if !plan.faults.endless {
        out.push_str(&format!("Content-Length: {}\r\n", plan.end - plan.start));
    }
    out.push_str("Connection: close\r\n");
    for (name, value) in &plan.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    if request.method == "HEAD" {
        return stream.flush();
    }
    let body = &plan.body[plan.start..plan.end];
    let chunk_size = plan.faults.chunk_size.unwrap_or(CHUNK).max(1);
    if plan.faults.endless && plan.status == 200 && !body.is_empty() {
        // Until the client hangs up (the write fails) or the socket timeout fires.
        loop {
            for chunk in body.chunks(chunk_size) {
                std::thread::sleep(plan.faults.chunk_delay);
                stream.write_all(chunk)?;
            }
        }
    }
    let limit = plan.drop_after.map_or(body.len(), |k| k.min(body.len()));
    let mut sent = 0usize;
    for chunk in body[..limit].chunks(chunk_size) {
        if plan.faults.stall_after.is_some_and(|at| sent >= at) {
            stream.flush()?;
            std::thread::sleep(plan.faults.stall_for);
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        std::thread::sleep(plan.faults.chunk_delay);
        stream.write_all(chunk)?;
        sent += chunk.len();
    }
    stream.flush()?;
    if plan.drop_after.is_some() {
        // Cut the connection with the body incomplete: the client sees an early EOF.
        let _ = stream.shutdown(Shutdown::Both);
    }
    Ok(())
}
