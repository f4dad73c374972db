//! Serving the API on TCP so that a flood cannot stop supervision: at most
//! `max_connections` connections at a time (one over the cap is closed at
//! once, never queued), a request's headers must arrive within
//! `HEADER_READ_TIMEOUT` (hyper's own timer, which also ends idle
//! keep-alive connections), and running out of file descriptors pauses
//! accepting instead of spinning. Each request carries its peer's address
//! (`peer_addr`). warp's own server takes only its listener types, so the
//! warp filters are served here through hyper.
//!
//! With TLS, each connection's first byte is looked at before the
//! handshake: a TLS handshake starts with 0x16; anything else (plain HTTP
//! sent to the TLS port) gets a plain `400` that says to use https, and the
//! connection is closed at once. The handshake must end within
//! `HANDSHAKE_TIMEOUT`; the connection cap counts TLS connections alike.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use warp::filters::BoxedFilter;
use warp::Filter;

/// A request's headers must be complete this long after the connection
/// started waiting for them, or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS handshake (its first byte included) must end within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the listener stops, open connections get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long accepting pauses when no file descriptor is left.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a refused connection or a failed accept is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The TCP peer of a request, set on every request served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address of a request: set by this server, or by warp's own
/// (`warp::addr::remote`); `None` on the unix socket.
pub fn peer_addr() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::addr::remote())
        .map(|own: Option<PeerAddr>, warp: Option<SocketAddr>| own.map(|p| p.0).or(warp))
}

/// Adds the peer address to each request before warp sees it.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: hyper::Request<B>) -> Self::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(req)
    }
}

/// Logs at most once per `LOG_EVERY`, with how many were not logged.
struct Throttled {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled {
            last: None,
            skipped: 0,
        }
    }

    fn log(&mut self, what: std::fmt::Arguments) {
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.skipped += 1;
            return;
        }
        let more = match self.skipped {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        };
        tracing::warn!("{what}{more}");
        self.last = Some(Instant::now());
        self.skipped = 0;
    }
}

/// Serves `routes` on `listener` until `stop` completes, with at most
/// `max_connections` connections open at once.
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(warp::reply::Response,)>,
    max_connections: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl Future<Output = ()>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut refused = Throttled::new();
    let mut failed = Throttled::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if out_of_fds {
                    failed.log(format_args!(
                        "API: cannot accept connections ({e}); pausing {ACCEPT_BACKOFF:?}"
                    ));
                    // Waiting lets other connections end; not waiting would spin.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused.log(format_args!(
                "API: closed a connection from {peer}: {max_connections} are open, the cap ([daemon.web] max_connections)"
            ));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = WithPeer {
            inner: TowerToHyperService::new(warp::service(routes.clone())),
            peer,
        };
        let closing = closing_rx.clone();
        let http = http.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => run(&http, stream, service, closing).await,
                Some(acceptor) => {
                    let Some(tls) = handshake(&acceptor, stream).await else {
                        return;
                    };
                    run(&http, tls, service, closing).await
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
}

/// Serves one connection until it ends, or gracefully once `closing` is set.
async fn run<I, S>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    mut closing: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let closed = async move {
        let _ = closing.wait_for(|v| *v).await;
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = closed => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// What plain HTTP sent to the TLS port gets.
const PLAIN_HTTP_ANSWER: &str = "this port speaks HTTPS (TLS): use https:// instead of http://\n";

/// The TLS handshake of an accepted connection, within `HANDSHAKE_TIMEOUT`;
/// `None` when it failed (plain HTTP got its 400).
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            let mut stream = stream;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PLAIN_HTTP_ANSWER}",
                PLAIN_HTTP_ANSWER.len()
            );
            // Read what the client sent while answering, so that closing
            // does not reset the connection before it reads the answer.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            return None;
        }
        _ => return None,
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        _ => None,
    }
}
