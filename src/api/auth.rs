//! Token authentication for the TCP listener: header `token: T` or
//! `Authorization: Bearer T`, compared in constant time. The unix socket is
//! guarded by its file mode (0600) and needs no token.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::errors::refuse;

/// Compares without an early exit, so timing does not reveal a prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

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

/// Reads the token (header `token`, or `Authorization: Bearer`) and gives
/// the request its scope; a wrong or missing token is a 401.
pub fn scope(tokens: Tokens) -> impl Filter<Extract = (Scope,), Error = Rejection> + Clone {
    warp::header::optional::<String>("token")
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |header: Option<String>, bearer: Option<String>| {
            let tokens = tokens.clone();
            async move {
                let given = header.or_else(|| {
                    bearer.and_then(|b| {
                        // The scheme is case-insensitive (RFC 7235).
                        let (scheme, token) = b.trim().split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
                    })
                });
                let matches = |t: &Option<Arc<String>>, g: &str| {
                    t.as_ref().is_some_and(|t| constant_time_eq(g.as_bytes(), t.as_bytes()))
                };
                match (&given, &tokens.admin) {
                    (_, None) => Ok(Scope::Admin),
                    (Some(g), _) if matches(&tokens.admin, g) => Ok(Scope::Admin),
                    (Some(g), _) if matches(&tokens.join, g) => Ok(Scope::Join),
                    (Some(_), _) => Err(refuse(StatusCode::UNAUTHORIZED, "wrong token")),
                    (None, _) => Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "a token is required: send the header 'token: T' or 'Authorization: Bearer T'",
                    )),
                }
            }
        })
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
    fn equal_tokens_match_and_others_do_not() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
