//! The HTTP client of the CLI, of a server calling its agents and of an
//! agent calling its server: hyper over the daemon's unix socket, or over
//! TCP (plain or TLS) to another opm with its token. JSON in and out; API
//! errors come back as `ClientError::Api` with the daemon's own message.
//!
//! Over TCP, connections are kept alive and shared by every client of the
//! process with the same trust (one pool per pinned fingerprint), and TLS
//! sessions are resumed, so that repeated calls (heartbeats, a server's
//! calls to an agent) do not pay a connection and a handshake each. A TLS
//! endpoint trusts its pinned fingerprint only (`crate::tls`), or, without
//! a pin, a certificate signed by a known authority.

use crate::sync::LockExt;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpStream, UnixStream};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};

use crate::model::ApiError;

#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
        prefix: String,
        token: Option<String>,
        /// `Some` for https: the pinned fingerprint, if any.
        tls: Option<Tls>,
    },
}

/// How an https endpoint is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The certificate's pinned fingerprint (`SHA256:…`); without one, the
    /// certificate must be signed by a known authority.
    pub fingerprint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    /// The TLS handshake failed (a certificate not trusted, not TLS at all).
    #[error("{0}")]
    Tls(String),
    /// The peer's certificate is not the pinned one.
    #[error("{1}")]
    Pin(crate::tls::PinMismatch, String),
    /// The HTTP exchange failed on a connection of its own (unix socket);
    /// the text names each cause ("connection error" alone says nothing).
    #[error("{}", causes(.0))]
    Http(#[source] hyper::Error),
    /// A pooled TCP request failed (the text names each cause in turn).
    #[error("{}", causes(.0))]
    Pool(#[source] hyper_util::client::legacy::Error),
    /// The request could not be built (a header value not allowed).
    #[error("{0}")]
    Request(#[source] hyper::http::Error),
    /// A streamed answer ended in the middle.
    #[error("the stream broke: {}", causes(.0))]
    Stream(#[source] hyper::Error),
    #[error("no answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from the daemon: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{0}")]
    BadUrl(String),
    /// The answer was larger than the client's limit; the rest was not read.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

impl Endpoint {
    /// `http://host[:port][/prefix]` or `https://…` (trusted by a known
    /// authority until `with_fingerprint` pins it).
    pub fn parse_url(url: &str, token: Option<String>) -> Result<Endpoint, ClientError> {
        let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("http://") {
            (r, None, 80)
        } else if let Some(r) = url.strip_prefix("https://") {
            (r, Some(Tls { fingerprint: None }), 443)
        } else {
            return Err(ClientError::BadUrl(format!(
                "{url:?} is not an http:// or https:// URL"
            )));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_string()),
            None => (rest, String::new()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| ClientError::BadUrl(format!("bad port in {url:?}")))?;
                (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port,
                )
            }
            _ => (authority.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(ClientError::BadUrl(format!("no host in {url:?}")));
        }
        Ok(Endpoint::Tcp {
            host,
            port,
            prefix,
            token: token.filter(|t| !t.is_empty()),
            tls,
        })
    }

    /// The same endpoint, trusting only the certificate of `fingerprint`
    /// (an https URL only).
    pub fn with_fingerprint(self, fingerprint: Option<&str>) -> Result<Endpoint, ClientError> {
        let Some(fp) = fingerprint.filter(|f| !f.is_empty()) else {
            return Ok(self);
        };
        let fp = crate::tls::parse_fingerprint(fp).map_err(ClientError::BadUrl)?;
        match self {
            Endpoint::Tcp {
                host,
                port,
                prefix,
                token,
                tls: Some(_),
            } => Ok(Endpoint::Tcp {
                host,
                port,
                prefix,
                token,
                tls: Some(Tls {
                    fingerprint: Some(fp),
                }),
            }),
            e => Err(ClientError::BadUrl(format!(
                "a certificate fingerprint goes with an https:// URL, not {}",
                e.describe()
            ))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp {
                host,
                port,
                prefix,
                tls,
                ..
            } => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                if host.contains(':') {
                    format!("{scheme}://[{host}]:{port}{prefix}")
                } else {
                    format!("{scheme}://{host}:{port}{prefix}")
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    headers: Vec<(String, String)>,
    /// Send process requests to this agent through the server's routes.
    agent: Option<String>,
    /// The most bytes of an answer's body this client reads.
    body_limit: Option<usize>,
    /// Its own connections, instead of the process's shared pool.
    own_pool: Option<Pool>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            headers: Vec::new(),
            agent: None,
            body_limit: None,
            own_pool: None,
        }
    }

    /// The same client with connections of its own, not shared with the
    /// other clients of the process (what a separate agent would have).
    pub fn with_own_pool(mut self) -> Result<Client, ClientError> {
        if let Endpoint::Tcp { tls, .. } = &self.endpoint {
            self.own_pool = Some(new_pool(tls.as_ref())?);
        }
        Ok(self)
    }

    /// The same client, refusing (`ClientError::TooLarge`) any answer whose
    /// body is larger than `limit` bytes, without reading the rest.
    pub fn with_body_limit(mut self, limit: usize) -> Client {
        self.body_limit = Some(limit);
        self
    }

    /// The same client, acting on `agent`'s processes through a server.
    pub fn via_agent(mut self, agent: &str) -> Client {
        self.agent = Some(agent.to_string());
        self
    }

    /// A process route as the server serves it for an agent.
    fn route(&self, path: &str) -> Result<String, ClientError> {
        let Some(agent) = &self.agent else {
            return Ok(path.to_string());
        };
        let base = format!("/daemon/agents/{agent}");
        let (p, query) = match path.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (path, String::new()),
        };
        let mapped = match p {
            "/daemon/list" => format!("{base}/processes"),
            "/daemon/create" => format!("{base}/create"),
            "/daemon/action" => format!("{base}/action"),
            "/daemon/scale" => format!("{base}/scale"),
            "/daemon/history" => format!("{base}/history"),
            "/daemon/events" => format!("{base}/events"),
            "/daemon/events/stream" => format!("{base}/events/stream"),
            _ => match (
                p.strip_prefix("/daemon/logs/"),
                p.strip_prefix("/daemon/info/"),
            ) {
                (Some(id), _) if !id.contains('/') => format!("{base}/logs/{id}"),
                (Some(rest), _) if rest.ends_with("/stream") && rest.matches('/').count() == 1 => {
                    format!("{base}/logs/{rest}")
                }
                (_, Some(id)) => format!("{base}/info/{id}"),
                _ => {
                    return Err(ClientError::BadUrl(format!(
                    "this command is not available for an agent through the server (agent {agent})"
                )))
                }
            },
        };
        Ok(format!("{mapped}{query}"))
    }

    /// The same client, sending one more header on every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends `req`: over a new connection on the unix socket, over a
    /// pooled one on TCP.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let describe = self.endpoint.describe();
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| ClientError::Connect(describe.clone(), e))?;
                let (mut sender, conn): (Sender, _) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(ClientError::Http)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender.send_request(req).await.map_err(ClientError::Http)
            }
            Endpoint::Tcp { tls, .. } => {
                let pool = match &self.own_pool {
                    Some(p) => p.clone(),
                    None => pool(tls.as_ref())?,
                };
                pool.request(req)
                    .await
                    .map_err(|e| connect_error(e, &describe))
            }
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let path = self.route(path)?;
        let path = path.as_str();
        let (host, uri) = match &self.endpoint {
            Endpoint::Unix(_) => ("localhost".to_string(), path.to_string()),
            Endpoint::Tcp {
                host,
                port,
                prefix,
                tls,
                ..
            } => {
                let authority = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                let scheme = if tls.is_some() { "https" } else { "http" };
                let uri = format!("{scheme}://{authority}{prefix}{path}");
                (authority, uri)
            }
        };
        // A daemon takes changes only as JSON, with or without a body.
        let json = body.is_some() || !matches!(method, Method::GET | Method::HEAD);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host);
        if let Endpoint::Unix(_) = &self.endpoint {
            // One request per connection: nothing lingers to delay a graceful shutdown.
            req = req.header("connection", "close");
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Endpoint::Tcp { token: Some(t), .. } = &self.endpoint {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if json {
            req = req.header("content-type", "application/json");
        }
        let body = Full::new(body.map(Bytes::from).unwrap_or_default());
        req.body(body).map_err(ClientError::Request)
    }

    /// Sends a request and returns the status and the whole body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let req = self.build(method, path, body)?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let Some(limit) = self.body_limit else {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(ClientError::Http)?
                .to_bytes();
            return Ok((status, bytes));
        };
        let declared = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ClientError::TooLarge(limit));
        }
        let mut body = resp.into_body();
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ClientError::Http)?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > limit {
                    return Err(ClientError::TooLarge(limit));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok((status, buf.freeze()))
    }

    /// The body of a successful answer; an error answer becomes `Api`.
    async fn success(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let (status, bytes) = self.request(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes)));
            return Err(ClientError::Api { status, message });
        }
        Ok(bytes)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let bytes = self.success(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(ClientError::Decode)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, None).await
    }

    /// A GET whose answer is handed back as the daemon wrote it, checked
    /// to be one well-formed JSON value but not decoded (`opm list
    /// --format json` prints it as it came).
    pub async fn get_json_bytes(&self, path: &str) -> Result<Bytes, ClientError> {
        let bytes = self.success(Method::GET, path, None).await?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(ClientError::Decode)?;
        Ok(bytes)
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(ClientError::Encode)?;
        self.json(Method::POST, path, Some(bytes)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::DELETE, path, None).await
    }

    /// Opens a streaming GET (server-sent events) and returns its body.
    pub async fn stream(&self, path: &str) -> Result<hyper::body::Incoming, ClientError> {
        let req = self.build(Method::GET, path, None)?;
        let resp = self.send(req).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| status.to_string());
            return Err(ClientError::Api { status, message });
        }
        Ok(resp.into_body())
    }
}

/// How long an idle pooled connection is kept: less than a daemon's
/// `HEADER_READ_TIMEOUT`, after which it closes idle connections itself.
pub const POOL_IDLE: Duration = Duration::from_secs(8);

type Pool = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// The pool of connections for one kind of trust (plain, or TLS with one
/// pin), shared by the whole process.
fn pool(tls: Option<&Tls>) -> Result<Pool, ClientError> {
    type Key = Option<Option<String>>;
    static POOLS: OnceLock<Mutex<std::collections::HashMap<Key, Pool>>> = OnceLock::new();
    let key: Key = tls.map(|t| t.fingerprint.clone());
    let pools = POOLS.get_or_init(Default::default);
    if let Some(p) = pools.lock_or_recover().get(&key) {
        return Ok(p.clone());
    }
    let pool = new_pool(tls)?;
    let mut pools = pools.lock_or_recover();
    // The pools of agents long gone are not kept for ever.
    if pools.len() > 20_000 {
        pools.clear();
    }
    pools.insert(key, pool.clone());
    Ok(pool)
}

/// A pool of its own, for one kind of trust.
fn new_pool(tls: Option<&Tls>) -> Result<Pool, ClientError> {
    let config = match tls {
        Some(t) => {
            Some(crate::tls::client_config(t.fingerprint.as_deref()).map_err(ClientError::Tls)?)
        }
        None => None,
    };
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_max_idle_per_host(8)
            .build(Connector { tls: config }),
    )
}

/// A failed pooled request, as a user should read it: a refused
/// certificate names the fingerprint expected and the one shown.
fn connect_error(e: hyper_util::client::legacy::Error, url: &str) -> ClientError {
    if let Some(m) = crate::tls::mismatch_of(&e) {
        let message = format!(
            "refusing {url}: its certificate fingerprint is {}, expected {} (the pinned one). Someone may be standing in the middle; if the certificate changed on purpose, pin the new one",
            m.got, m.expected
        );
        return ClientError::Pin(m, message);
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return ClientError::Tls(crate::tls::describe(r, url));
            }
            if e.is_connect() {
                return ClientError::Connect(
                    url.to_string(),
                    std::io::Error::new(io.kind(), io.to_string()),
                );
            }
        }
        cur = err.source();
    }
    ClientError::Pool(e)
}

/// An error and each of its causes, joined by ": " (hyper's own text says
/// only "client error (Connect)"; the cause says what happened).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text = format!("{text}: {s}");
        src = s.source();
    }
    text
}

/// Opens TCP connections, wrapped in TLS when configured.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A pooled connection: plain TCP or TLS.
pub enum Conn {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl tower_service::Service<hyper::Uri> for Connector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| bad(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if tls.is_some() { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let Some(config) = tls else {
                return Ok(Conn::Plain(TokioIo::new(tcp)));
            };
            let name = crate::tls::server_name(&host).map_err(bad)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(Conn::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The longest line of a server-sent event stream a reader accepts.
pub const SSE_LINE_LIMIT: usize = 1024 * 1024;

/// Reads server-sent events from a streaming body: `(event, data)` pairs,
/// `message` when an event has no name. It holds at most one line
/// (`SSE_LINE_LIMIT`) plus one frame, and looks at each byte once.
pub struct SseReader {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    event: String,
    ready: std::collections::VecDeque<(String, String)>,
}

impl SseReader {
    pub fn new(body: hyper::body::Incoming) -> SseReader {
        SseReader {
            body,
            buf: Vec::new(),
            scanned: 0,
            event: "message".into(),
            ready: Default::default(),
        }
    }

    /// The next event, `None` when the stream has ended.
    pub async fn next(&mut self) -> Result<Option<(String, String)>, ClientError> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(ClientError::Stream)?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            self.buf.extend_from_slice(data);
            let mut start = 0;
            while let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + pos;
                let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
                self.take_line(line.trim_end_matches('\r'));
                start = end + 1;
                self.scanned = start;
            }
            self.buf.drain(..start);
            self.scanned = self.buf.len();
            if self.buf.len() > SSE_LINE_LIMIT {
                return Err(ClientError::TooLarge(SSE_LINE_LIMIT));
            }
        }
    }

    fn take_line(&mut self, line: &str) {
        if let Some(e) = line.strip_prefix("event:") {
            self.event = e.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            let d = d.strip_prefix(' ').unwrap_or(d).to_string();
            self.ready.push_back((self.event.clone(), d));
        } else if line.is_empty() {
            self.event = "message".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_prefix() {
        let Endpoint::Tcp {
            host,
            port,
            prefix,
            token,
            tls: None,
        } = Endpoint::parse_url("http://127.0.0.1:9876/opm/", Some("t".into())).expect("url")
        else {
            panic!("tcp")
        };
        assert_eq!(
            (host.as_str(), port, prefix.as_str(), token.as_deref()),
            ("127.0.0.1", 9876, "/opm", Some("t"))
        );
        assert!(matches!(
            Endpoint::parse_url("http://example", None),
            Ok(Endpoint::Tcp { port: 80, .. })
        ));
        assert!(matches!(
            Endpoint::parse_url("https://x", None),
            Ok(Endpoint::Tcp {
                port: 443,
                tls: Some(Tls { fingerprint: None }),
                ..
            })
        ));
        assert!(Endpoint::parse_url("ftp://x", None).is_err());
        assert!(Endpoint::parse_url("http://x", None)
            .and_then(|e| e.with_fingerprint(Some(&crate::tls::fingerprint(b"c"))))
            .is_err());
        assert!(Endpoint::parse_url("http://x:notaport", None).is_err());
    }
}
