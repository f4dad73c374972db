//! The HTTP client of the CLI (and of a server calling its agents):
//! hyper over the daemon's unix socket, or over TCP to another opm with its
//! token. One connection per client; JSON in and out; API errors come back
//! as `ClientError::Api` with the daemon's own message.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpStream, UnixStream};

use crate::model::ApiError;

#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
        prefix: String,
        token: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    #[error("{0}")]
    Http(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
    #[error("{0}")]
    BadUrl(String),
    /// The answer was larger than the client's limit; the rest was not read.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

impl Endpoint {
    /// `http://host[:port][/prefix]`.
    pub fn parse_url(url: &str, token: Option<String>) -> Result<Endpoint, ClientError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            ClientError::BadUrl(format!("{url:?} is not an http:// URL (for https, put a proxy in front and use it through http on localhost)"))
        })?;
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
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() {
            return Err(ClientError::BadUrl(format!("no host in {url:?}")));
        }
        Ok(Endpoint::Tcp {
            host,
            port,
            prefix,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp {
                host, port, prefix, ..
            } => format!("http://{host}:{port}{prefix}"),
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
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            headers: Vec::new(),
            agent: None,
            body_limit: None,
        }
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

    async fn connect(&self) -> Result<Sender, ClientError> {
        let describe = self.endpoint.describe();
        let (sender, conn_task) = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| ClientError::Connect(describe.clone(), e))?;
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ClientError::Http(e.to_string()))?;
                (
                    s,
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
            Endpoint::Tcp { host, port, .. } => {
                let stream = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| ClientError::Connect(describe.clone(), e))?;
                let _ = stream.set_nodelay(true);
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ClientError::Http(e.to_string()))?;
                (
                    s,
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
        };
        drop(conn_task);
        Ok(sender)
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
                host, port, prefix, ..
            } if host.contains(':') => (format!("[{host}]:{port}"), format!("{prefix}{path}")),
            Endpoint::Tcp {
                host, port, prefix, ..
            } => (format!("{host}:{port}"), format!("{prefix}{path}")),
        };
        // A daemon takes changes only as JSON, with or without a body.
        let json = body.is_some() || !matches!(method, Method::GET | Method::HEAD);
        // One request per connection: nothing lingers to delay a graceful shutdown.
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host)
            .header("connection", "close");
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
        req.body(body).map_err(|e| ClientError::Http(e.to_string()))
    }

    /// Sends a request and returns the status and the whole body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut sender = self.connect().await?;
        let req = self.build(method, path, body)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let Some(limit) = self.body_limit else {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
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
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > limit {
                    return Err(ClientError::TooLarge(limit));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok((status, buf.freeze()))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.request(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ApiError>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes)));
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.json(Method::POST, path, Some(bytes)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::DELETE, path, None).await
    }

    /// Opens a streaming GET (server-sent events) and returns its body.
    pub async fn stream(&self, path: &str) -> Result<hyper::body::Incoming, ClientError> {
        let mut sender = self.connect().await?;
        let req = self.build(Method::GET, path, None)?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
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
            let frame = frame.map_err(|e| ClientError::Http(format!("the stream broke: {e}")))?;
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
        assert!(Endpoint::parse_url("https://x", None).is_err());
        assert!(Endpoint::parse_url("http://x:notaport", None).is_err());
    }
}
