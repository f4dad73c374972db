//! Token authentication for the TCP listener: header `token: T` or
//! `Authorization: Bearer T`, compared in constant time. The unix socket is
//! guarded by its file mode (0600) and needs no token. Wrong tokens are
//! counted per peer address: past `MAX_FAILURES` in `FAILURE_WINDOW`, that
//! address gets 429 until the window ends, whatever it sends (else the
//! answers would still tell a right guess from a wrong one). A right token
//! is never delayed, and it starts the count of its address again.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::errors::refuse;
use crate::token::constant_time_eq;

/// The tokens a listener accepts. Both `None` on the unix socket.
#[derive(Clone, Default)]
pub struct Tokens {
    /// Full access.
    pub admin: Option<Arc<String>>,
    /// Agents' registration and heartbeats only.
    pub join: Option<Arc<String>>,
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    /// Carries the join token: may register, heartbeat and leave.
    Join,
}

/// How many wrong tokens one peer address may send per `FAILURE_WINDOW`.
pub const MAX_FAILURES: u32 = 10;
/// The window over which wrong tokens are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Peers remembered at most: past this, finished windows are dropped, and
/// when all are live the oldest goes (memory stays bounded under a flood).
const MAX_PEERS: usize = 10_000;

/// Wrong-token counts per peer address.
#[derive(Default)]
pub struct FailureLimiter {
    peers: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    /// The daemon's one limiter (one TCP listener at a time, and a peer's
    /// failures count whichever listener it tried).
    pub fn global() -> &'static FailureLimiter {
        static LIMITER: OnceLock<FailureLimiter> = OnceLock::new();
        LIMITER.get_or_init(FailureLimiter::default)
    }

    /// When `peer` is locked out at `now`, how long until it may try again.
    pub fn locked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        // A poisoned lock only means another request panicked mid-count.
        let peers = self.peers.lock_or_recover();
        let (start, count) = *peers.get(&peer)?;
        let end = start + FAILURE_WINDOW;
        (count >= MAX_FAILURES && now < end).then(|| end - now)
    }

    /// A right token from `peer`: its count starts again (a user who
    /// mistyped a few times is not held; a guesser never gets here).
    pub fn succeed(&self, peer: IpAddr) {
        let mut peers = self.peers.lock_or_recover();
        peers.remove(&peer);
    }

    /// Counts one wrong token from `peer`.
    pub fn fail(&self, peer: IpAddr, now: Instant) {
        let mut peers = self.peers.lock_or_recover();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, (start, _)| now < *start + FAILURE_WINDOW);
            if peers.len() >= MAX_PEERS {
                if let Some(oldest) = peers.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k) {
                    peers.remove(&oldest);
                }
            }
        }
        let entry = peers.entry(peer).or_insert((now, 0));
        if now >= entry.0 + FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// The token a request carries (header `token`, or `Authorization: Bearer`).
fn given_token() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("token")
        .and(warp::header::optional::<String>("authorization"))
        .map(|header: Option<String>, bearer: Option<String>| {
            header.or_else(|| {
                bearer.and_then(|b| {
                    // The scheme is case-insensitive (RFC 7235).
                    let (scheme, token) = b.trim().split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| token.trim().to_string())
                })
            })
        })
}

/// The scope of a request that carries `given`, or why it has none:
/// `Ok(None)` when it carries no token at all.
fn judge(
    tokens: &Tokens,
    given: Option<&str>,
    peer: Option<SocketAddr>,
) -> Result<Option<Scope>, Rejection> {
    // An empty configured token matches nothing: fail closed.
    let matches = |t: &Option<Arc<String>>, g: &str| {
        t.as_ref()
            .is_some_and(|t| !t.is_empty() && constant_time_eq(g.as_bytes(), t.as_bytes()))
    };
    if tokens.admin.is_none() {
        return Ok(Some(Scope::Admin));
    }
    let Some(g) = given else {
        return Ok(None);
    };
    // A peer the listener cannot name shares one count with all such peers.
    let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
    let limiter = FailureLimiter::global();
    let now = Instant::now();
    if let Some(wait) = limiter.locked(ip, now) {
        return Err(super::errors::too_many(
            wait,
            format!(
                "too many wrong tokens from {ip}: try again in {} s",
                wait.as_secs() + 1
            ),
        ));
    }
    if matches(&tokens.admin, g) {
        limiter.succeed(ip);
        Ok(Some(Scope::Admin))
    } else if matches(&tokens.join, g) {
        limiter.succeed(ip);
        Ok(Some(Scope::Join))
    } else {
        limiter.fail(ip, now);
        Err(refuse(StatusCode::UNAUTHORIZED, "wrong token"))
    }
}

/// Reads the token (header `token`, or `Authorization: Bearer`) and gives
/// the request its scope; a wrong or missing token is a 401, and a peer
/// past its wrong tokens a 429.
pub fn scope(tokens: Tokens) -> impl Filter<Extract = (Scope,), Error = Rejection> + Clone {
    given_token()
        .and(super::tcp::peer_addr())
        .and_then(move |given: Option<String>, peer: Option<SocketAddr>| {
            let tokens = tokens.clone();
            async move {
                judge(&tokens, given.as_deref(), peer)?.ok_or_else(|| {
                    refuse(
                        StatusCode::UNAUTHORIZED,
                        "a token is required: send the header 'token: T' or 'Authorization: Bearer T'",
                    )
                })
            }
        })
}

/// Like `scope`, but a request without any token passes as `None` (for
/// `GET /health`, which then says only that the daemon is up).
pub fn optional_scope(
    tokens: Tokens,
) -> impl Filter<Extract = (Option<Scope>,), Error = Rejection> + Clone {
    given_token().and(super::tcp::peer_addr()).and_then(
        move |given: Option<String>, peer: Option<SocketAddr>| {
            let tokens = tokens.clone();
            async move { judge(&tokens, given.as_deref(), peer) }
        },
    )
}

/// Lets only full-access requests through.
pub fn admin(tokens: Tokens) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    scope(tokens)
        .and_then(|s: Scope| async move {
            match s {
                Scope::Admin => Ok(()),
                Scope::Join => Err(refuse(
                    StatusCode::FORBIDDEN,
                    "the join token only lets agents register and heartbeat",
                )),
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_locked_out_after_ten_failures_for_the_rest_of_the_window() {
        let l = FailureLimiter::default();
        let peer: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(l.locked(peer, t0), None, "after {i} failures");
            l.fail(peer, t0);
        }
        let wait = l
            .locked(peer, t0 + Duration::from_secs(10))
            .expect("locked");
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(l.locked(other, t0), None, "other peers are not affected");
        assert_eq!(l.locked(peer, t0 + FAILURE_WINDOW), None, "the window ends");
        l.fail(peer, t0 + FAILURE_WINDOW);
        assert_eq!(
            l.locked(peer, t0 + FAILURE_WINDOW),
            None,
            "a new window counts from one"
        );
    }

    #[test]
    fn the_limiter_forgets_peers_beyond_its_bound() {
        let l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 50) {
            l.fail(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        assert!(l.peers.lock().expect("lock").len() <= MAX_PEERS);
    }
}
