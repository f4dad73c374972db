//! What keeps a web browser from driving the TCP API on a page's behalf:
//! `Host` must name this listener (its address, a loopback name, or a name
//! of `[daemon.web] allowed_hosts`), which defeats DNS rebinding; a request
//! that carries an `Origin` must come from the daemon's own origin; and a
//! request that changes anything must be `application/json`, which a page
//! cannot send to another origin without a CORS preflight that opm never
//! approves (it sends no CORS headers). Only the TCP listener has the guard:
//! the unix socket is the CLI's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use warp::http::{HeaderMap, Method, StatusCode};
use warp::{Filter, Rejection};

use super::errors::refuse;

/// The `Host` values a listener answers to.
#[derive(Debug, Clone)]
pub struct HostRules {
    bound: SocketAddr,
    /// `allowed_hosts`, lowercase: accepted with any port or none.
    names: Vec<String>,
    /// This machine's host name, when the listener is on every address.
    hostname: Option<String>,
}

impl HostRules {
    pub fn new(bound: SocketAddr, allowed: &[String]) -> HostRules {
        let hostname = bound
            .ip()
            .is_unspecified()
            .then(|| crate::supervise::proc::hostname().to_ascii_lowercase())
            .filter(|h| h != "unknown");
        HostRules {
            bound,
            names: allowed.iter().map(|n| n.to_ascii_lowercase()).collect(),
            hostname: hostname.filter(|h| !h.is_empty()),
        }
    }

    /// Whether a request with this `Host` is meant for this listener.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        if self.names.iter().any(|n| *n == name) {
            return true;
        }
        if port != Some(self.bound.port()) {
            return false;
        }
        if name == "localhost" {
            return true;
        }
        match name.parse::<IpAddr>() {
            // An address is never a rebinding: a page can reach it only
            // from its own origin, which the Origin check sees.
            Ok(ip) => ip.is_loopback() || ip == self.bound.ip() || self.bound.ip().is_unspecified(),
            Err(_) => self.hostname.as_deref() == Some(name),
        }
    }
}

/// `name[:port]` or `[v6][:port]` into the name (without brackets) and the
/// port; `None` when it is not a host at all.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            Some(_) => return None,
            None => (host, None),
        }
    };
    if name.is_empty() || name.contains(['/', '@', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((name, port))
}

/// Whether a `Content-Type` value is JSON (`application/json`, any parameters).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// The refusal of a request that fails the guard, if it does.
pub fn check(rules: &HostRules, method: &Method, headers: &HeaderMap) -> Result<(), Rejection> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).unwrap_or("\u{fffd}"))
    };
    let host = text("host").unwrap_or("");
    if headers.get_all("host").iter().count() > 1 || !rules.allows(host) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this daemon does not answer to host {host:?}: use its address, localhost, or add the name to [daemon.web] allowed_hosts in config.toml"
            ),
        ));
    }
    if let Some(origin) = text("origin") {
        let own = |scheme: &str| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        };
        if !(own("http://") || own("https://")) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("requests from another origin ({origin}) are refused"),
            ));
        }
    }
    let changes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes && !text("content-type").is_some_and(is_json) {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{method} needs the header 'Content-Type: application/json'"),
        ));
    }
    Ok(())
}

/// The guard as a filter in front of every TCP route.
pub fn browser_guard(rules: HostRules) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let rules = Arc::new(rules);
    warp::method()
        .and(warp::header::headers_cloned())
        .and_then(move |method: Method, headers: HeaderMap| {
            let rules = rules.clone();
            async move { check(&rules, &method, &headers) }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(bound: &str, allowed: &[&str]) -> HostRules {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        HostRules::new(bound.parse().expect("addr"), &allowed)
    }

    #[test]
    fn a_loopback_listener_answers_to_its_address_and_loopback_names_with_its_port() {
        let r = rules("127.0.0.1:9876", &[]);
        for ok in [
            "127.0.0.1:9876",
            "localhost:9876",
            "LOCALHOST:9876",
            "[::1]:9876",
        ] {
            assert!(r.allows(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:9877",
            "127.0.0.1",
            "evil.example:9876",
            "10.0.0.1:9876",
            "",
            "127.0.0.1:9876/x",
            "a@127.0.0.1:9876",
            "::1:9876",
        ] {
            assert!(!r.allows(bad), "{bad}");
        }
    }

    #[test]
    fn listed_names_pass_with_any_port_and_a_wildcard_listener_takes_addresses() {
        let r = rules("0.0.0.0:9876", &["opm.example.com"]);
        assert!(r.allows("opm.example.com"));
        assert!(r.allows("OPM.example.com:443"));
        assert!(r.allows("192.168.1.100:9876"));
        assert!(!r.allows("rebind.example:9876"));
        let r = rules("10.0.0.5:9877", &[]);
        assert!(r.allows("10.0.0.5:9877"));
        assert!(!r.allows("10.0.0.6:9877"));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn changes_need_json_and_a_foreign_origin_is_refused() {
        let r = rules("127.0.0.1:9876", &[]);
        let host = ("host", "127.0.0.1:9876");
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(check(&r, &Method::GET, &headers(&[host])).is_ok());
        assert!(check(&r, &Method::POST, &headers(&[host, json])).is_ok());
        assert!(check(
            &r,
            &Method::POST,
            &headers(&[host, ("content-type", "text/plain")])
        )
        .is_err());
        assert!(check(&r, &Method::DELETE, &headers(&[host])).is_err());
        let own = ("origin", "http://127.0.0.1:9876");
        assert!(check(&r, &Method::POST, &headers(&[host, json, own])).is_ok());
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9877"] {
            let h = headers(&[host, json, ("origin", origin)]);
            assert!(check(&r, &Method::POST, &h).is_err(), "{origin}");
            assert!(check(&r, &Method::GET, &h).is_err(), "{origin}");
        }
    }
}
