//! Helpers of the API tests: a minimal HTTP/1.1 client (one request per
//! connection, over TCP on 127.0.0.1 or over the daemon's unix socket, raw
//! bytes in and out, so a test can send what a polite client never would),
//! and `ApiHome`, a `TestHome` whose daemon serves the API over TCP on a free
//! port of 127.0.0.1 with a token.

#![allow(
    dead_code,
    reason = "each API test module uses a different part of the helpers"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::common::{free_port, unique, wait_until, TestHome, WAIT};

/// How long one request may take before the test fails instead of hanging.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the daemon answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Fails the test unless the status is `status`; returns self.
    #[track_caller]
    pub fn expect(self, status: u16) -> Response {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }

    /// Fails the test unless this is an error with a JSON body `{"error": "..."}`.
    #[track_caller]
    pub fn expect_json_error(self, status: u16) -> Response {
        let r = self.expect(status);
        let v = r.json();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "an error must be JSON {{\"error\": \"...\"}}: {r}"
        );
        r
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        let cut: String = text.chars().take(2000).collect();
        write!(f, "HTTP {} {cut}", self.status)
    }
}

/// How a request proves who it is.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// Header `token: T`.
    Token(&'a str),
    /// Header `Authorization: Bearer T`.
    Bearer(&'a str),
}

/// The `Host` of a request to `127.0.0.1:port` (the daemon refuses others).
pub fn host(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// The request head of one request (always `connection: close`) to `host`.
pub fn head(
    host: &str,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    extra: &[(&str, &str)],
    body_len: Option<usize>,
) -> Vec<u8> {
    let mut h = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    // A test may send its own Host (a forged one).
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        h.push_str(&format!("host: {host}\r\n"));
    }
    match auth {
        Auth::None => {}
        Auth::Token(t) => h.push_str(&format!("token: {t}\r\n")),
        Auth::Bearer(t) => h.push_str(&format!("authorization: Bearer {t}\r\n")),
    }
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    // Like opm's own client: every change is JSON, with or without a body
    // (the daemon refuses any other content type on a change).
    let sets_type = extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !sets_type && (body_len.is_some() || !matches!(method, "GET" | "HEAD")) {
        h.push_str("content-type: application/json\r\n");
    }
    if let Some(n) = body_len {
        h.push_str(&format!("content-length: {n}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// Sends one request to `host` on `stream` and reads the whole answer (the
/// server closes the connection after it).
pub fn exchange<S: Read + Write>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Response> {
    let mut req = head(host, method, path, auth, extra, body.map(<[u8]>::len));
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    // A server may answer (413) and close before it read a large body: a
    // failed write is then fine as long as the answer can be read.
    let wrote = stream.write_all(&req).and_then(|()| stream.flush());
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        wrote?;
        read?;
    }
    parse_response(&raw)
}

/// Sends one request on `stream` and reads only the answer's status line and
/// headers (for an endless stream); returns the status, the head and the
/// stream, open, to read the body from.
#[track_caller]
pub fn open_head<S: Read + Write>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    auth: Auth<'_>,
) -> (u16, String, S) {
    stream
        .write_all(&head(host, method, path, auth, &[], None))
        .expect("send the request");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).expect("read the answer");
        assert!(n > 0, "the connection closed before the headers: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad answer {text:?}"));
    (status, text, stream)
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Parses a whole HTTP/1.1 answer (content-length, chunked, or up to EOF).
pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            invalid(format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some((_, n)) = headers.iter().find(|(k, _)| k == "content-length") {
        let n: usize = n.parse().map_err(|_| invalid("bad content-length"))?;
        rest.get(..n)
            .ok_or_else(|| invalid("body shorter than its content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or_else(|| invalid("truncated chunk"))?);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// A connection to `127.0.0.1:port` with the request timeout set.
pub fn connect_tcp(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One request over TCP; any transport error fails the test.
#[track_caller]
pub fn tcp(port: u16, method: &str, path: &str, auth: Auth<'_>, body: Option<&[u8]>) -> Response {
    tcp_with(port, method, path, auth, &[], body)
}

/// One request over TCP with extra headers; any transport error fails the test.
#[track_caller]
pub fn tcp_with(
    port: u16,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    connect_tcp(port)
        .and_then(|s| exchange(s, &host(port), method, path, auth, extra, body))
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port} failed: {e}"))
}

/// One request to 127.0.0.1:`port` with `headers` (no token unless given
/// there); returns the status and the body as text.
#[track_caller]
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let r = tcp_with(
        port,
        method,
        path,
        Auth::None,
        headers,
        body.map(str::as_bytes),
    );
    (r.status, r.text())
}

/// A daemon configuration that serves the API on `port` with `token`.
pub fn api_config(role: &str, port: u16, token: &str) -> String {
    format!(
        "role = \"{role}\"\n\
         [daemon.web]\n\
         api = true\n\
         address = \"127.0.0.1\"\n\
         port = {port}\n\
         [daemon.web.secure]\n\
         enabled = true\n\
         token = \"{token}\"\n"
    )
}

/// A `TestHome` whose daemon serves the API over TCP with a token.
pub struct ApiHome {
    pub home: TestHome,
    pub port: u16,
    pub token: String,
}

impl ApiHome {
    /// A standalone daemon with the API on a free port and a fresh token.
    #[track_caller]
    pub fn start() -> ApiHome {
        ApiHome::start_as("standalone")
    }

    /// A daemon of `role` with the API on a free port and a fresh token.
    /// Another program may take the port between the probe and the daemon's
    /// bind: then the daemon is stopped and started again on another port.
    #[track_caller]
    pub fn start_as(role: &str) -> ApiHome {
        let home = TestHome::new();
        let token = unique("tok");
        for _ in 0..5 {
            let port = free_port();
            home.write_config(&api_config(role, port, &token));
            home.opm(&["daemon", "restore"]).ok();
            let health = home.health();
            if health["api"].as_str() == Some(format!("127.0.0.1:{port}").as_str()) {
                return ApiHome { home, port, token };
            }
            eprintln!("port {port} was taken ({health}); trying another");
            home.opm(&["daemon", "stop"]).ok();
        }
        panic!("the daemon could not listen on any free port");
    }

    /// One request with `Authorization: Bearer <token>`.
    #[track_caller]
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("serialize a body"));
        tcp(
            self.port,
            method,
            path,
            Auth::Bearer(&self.token),
            bytes.as_deref(),
        )
    }

    /// GET with the token.
    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.call("GET", path, None)
    }

    /// POST of a JSON body with the token.
    #[track_caller]
    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.call("POST", path, Some(body))
    }

    /// POST of raw bytes with the token.
    #[track_caller]
    pub fn post_raw(&self, path: &str, body: &[u8]) -> Response {
        tcp(
            self.port,
            "POST",
            path,
            Auth::Bearer(&self.token),
            Some(body),
        )
    }

    /// One request over the unix socket (no token).
    #[track_caller]
    pub fn unix(&self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        unix(&self.home, method, path, body)
    }

    /// `POST /daemon/action` with the token, which must succeed.
    #[track_caller]
    pub fn action(&self, id: &str, action: &str) -> Value {
        self.post(
            "/daemon/action",
            &serde_json::json!({ "id": id, "action": action }),
        )
        .expect(200)
        .json()
    }

    /// The `/daemon/list` entry named `name`, if any.
    #[track_caller]
    pub fn find(&self, name: &str) -> Option<Value> {
        let list = self.get("/daemon/list").expect(200).json();
        list.as_array()
            .unwrap_or_else(|| panic!("/daemon/list is not an array: {list}"))
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    }

    /// Waits until process `name` has `status` in `/daemon/list`; returns its entry.
    #[track_caller]
    pub fn wait_status(&self, name: &str, status: &str) -> Value {
        let mut last = Value::Null;
        wait_until(WAIT, &format!("{name} to be {status}"), || {
            last = self.find(name).unwrap_or(Value::Null);
            last["status"] == status
        });
        last
    }

    /// The daemon's pid from `/health`.
    #[track_caller]
    pub fn daemon_pid(&self) -> i64 {
        let h = tcp(self.port, "GET", "/health", Auth::Bearer(&self.token), None)
            .expect(200)
            .json();
        h["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no pid in /health: {h}"))
    }
}

/// One request over a home's unix socket; any transport error fails the test.
#[track_caller]
pub fn unix(home: &TestHome, method: &str, path: &str, body: Option<&[u8]>) -> Response {
    let socket = home.join("opm.sock");
    UnixStream::connect(&socket)
        .and_then(|s| {
            s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            exchange(s, "localhost", method, path, Auth::None, &[], body)
        })
        .unwrap_or_else(|e| panic!("{method} {path} on {} failed: {e}", socket.display()))
}

impl TestHome {
    /// `GET /daemon/list` on the socket: the objects `opm list --format json`
    /// prints, straight from the daemon, without a CLI run. `None` while no
    /// daemon answers.
    pub fn try_api_list(&self) -> Option<Vec<Value>> {
        let socket = UnixStream::connect(self.join("opm.sock")).ok()?;
        socket.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
        let r = exchange(
            socket,
            "localhost",
            "GET",
            "/daemon/list",
            Auth::None,
            &[],
            None,
        )
        .ok()?;
        match serde_json::from_slice(&r.body).ok()? {
            Value::Array(list) if r.status == 200 => Some(list),
            _ => None,
        }
    }

    /// `GET /daemon/list` on the socket, which must answer.
    #[track_caller]
    pub fn api_list(&self) -> Vec<Value> {
        self.try_api_list()
            .unwrap_or_else(|| panic!("no daemon list on {}", self.join("opm.sock").display()))
    }

    /// Waits until process `name` holds `pred` in the daemon's own list
    /// (polled on the socket, up to `WAIT`); returns that entry.
    #[track_caller]
    pub fn wait_for(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        wait_until(WAIT, &format!("{name}: {what}"), || {
            last = self
                .try_api_list()
                .and_then(|l| l.into_iter().find(|p| p["name"] == name))
                .unwrap_or(Value::Null);
            !last.is_null() && pred(&last)
        });
        last
    }

    /// Waits until process `name` has `status` in the daemon's own list;
    /// returns its entry.
    #[track_caller]
    pub fn wait_process(&self, name: &str, status: &str) -> Value {
        self.wait_for(name, &format!("status {status}"), |p| p["status"] == status)
    }

    /// `opm daemon health --format json`, which must succeed.
    #[track_caller]
    pub fn health(&self) -> Value {
        let out = self.opm(&["daemon", "health", "--format", "json"]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("daemon health --format json is not JSON ({e}): {out}"))
    }
}
