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

/// Passes when no token is required or the request carries the right one.
pub fn require(token: Option<Arc<String>>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("token")
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |header: Option<String>, bearer: Option<String>| {
            let token = token.clone();
            async move {
                let Some(expected) = token else { return Ok(()) };
                let given = header.or_else(|| {
                    bearer.and_then(|b| b.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
                });
                match given {
                    Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
                    Some(_) => Err(refuse(StatusCode::UNAUTHORIZED, "wrong token")),
                    None => Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "a token is required: send the header 'token: T' or 'Authorization: Bearer T'",
                    )),
                }
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
