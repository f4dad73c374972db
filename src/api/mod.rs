//! The HTTP API: warp filters per area, served on the unix socket for the CLI
//! and, when enabled, on TCP. It knows the service's methods, not sled.

pub mod agents;
pub mod auth;
pub mod errors;
pub mod events;
pub mod guard;
pub mod link;
pub mod metrics;
pub mod openapi;
pub mod process;
pub mod tcp;
pub mod ui;

use crate::sync::LockExt;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use crate::role::RoleState;
use crate::service::{ApiState, Service};
pub use auth::Tokens;

/// The largest request body accepted.
pub const BODY_LIMIT: u64 = 1024 * 1024;

/// Hands every handler the context.
fn with_ctx(ctx: Ctx) -> impl Filter<Extract = (Ctx,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// A JSON body within the size limit: malformed JSON is a 400, JSON of the
/// wrong shape (unknown field, wrong type) a 422, each naming the problem.
fn json_body<T: serde::de::DeserializeOwned + Send>(
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(BODY_LIMIT)
        .and(warp::body::bytes())
        .and_then(|bytes: bytes::Bytes| async move {
            serde_json::from_slice::<T>(&bytes).map_err(|e| {
                let status = if e.is_data() {
                    warp::http::StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    warp::http::StatusCode::BAD_REQUEST
                };
                errors::refuse(status, format!("invalid JSON body: {e}"))
            })
        })
}

/// `?lines=N` of the log routes.
#[derive(Debug, serde::Deserialize)]
struct LinesQuery {
    lines: Option<usize>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct Ctx {
    pub svc: Arc<Service>,
    /// The role in force, the agent registry, the link to a server.
    pub role: Arc<RoleState>,
    /// Set to true to stop the daemon (`POST /daemon/stop`).
    pub shutdown: watch::Sender<bool>,
    /// The TCP listener, which the role system may start and stop.
    pub tcp: Arc<TcpSlot>,
}

/// Every route. `local` adds the routes only the unix socket serves (the
/// agent's own connect, disconnect and status).
pub fn routes(ctx: Ctx, tokens: Tokens, local: bool) -> BoxedFilter<(warp::reply::Response,)> {
    let health = {
        let ctx = ctx.clone();
        // On TCP, without the admin token, only "up": no pid, version or paths.
        let full = move |scope: Option<auth::Scope>| {
            if local || scope == Some(auth::Scope::Admin) {
                warp::reply::json(&ctx.svc.health(&ctx.role.report())).into_response()
            } else {
                warp::reply::json(&serde_json::json!({ "status": "ok" })).into_response()
            }
        };
        warp::path!("health")
            .and(warp::get())
            .and(auth::optional_scope(tokens.clone()))
            .map(full)
    };
    let openapi = warp::path!("openapi.json")
        .and(auth::admin(tokens.clone()))
        .and(warp::get())
        .map(|| warp::reply::json(&openapi::document()).into_response());
    let agent_facing = agents::agent_facing(ctx.clone(), tokens.clone());
    // Each route checks the token after its path matched, so a refusal is
    // always the answer of the route the request was meant for.
    let admin = process::routes(ctx.clone(), tokens.clone())
        .or(metrics::routes(ctx.clone(), tokens.clone()))
        .unify()
        .or(events::routes(ctx.clone(), tokens.clone()))
        .unify()
        .or(agents::admin_routes(ctx.clone(), tokens))
        .unify()
        .or(openapi)
        .unify();
    let mut open = health.boxed();
    if ctx.svc.ui {
        // The page asks for the token itself; the data routes it calls stay protected.
        open = open.or(ui::routes()).unify().boxed();
    }
    let mut all = open.or(agent_facing).unify().or(admin).unify().boxed();
    if local {
        all = all.or(agents::local_routes(ctx)).unify().boxed();
    }
    all.recover(errors::recover).unify().boxed()
}

/// The routes of a TCP listener bound to `bound`: every route, behind the
/// browser guard (`Host`, `Origin`, JSON content type).
fn tcp_routes(
    ctx: Ctx,
    tokens: Tokens,
    bound: std::net::SocketAddr,
) -> BoxedFilter<(warp::reply::Response,)> {
    let rules = guard::HostRules::new(bound, &ctx.svc.config.daemon.web.allowed_hosts);
    guard::browser_guard(rules)
        .and(routes(ctx, tokens, false))
        .recover(errors::recover)
        .unify()
        .boxed()
}

/// The connection cap of the TCP listener: `[daemon.web] max_connections`,
/// plus, on a server, one kept-alive connection per agent it may have
/// (`[server] max_agents`), so that agents' heartbeats never crowd out
/// everyone else.
fn max_connections(ctx: &Ctx) -> usize {
    let config = &ctx.svc.config;
    let agents = if ctx.role.registry.is_some() {
        config.server.max_agents
    } else {
        0
    };
    config.daemon.web.max_connections.saturating_add(agents)
}

/// A running TCP listener.
struct TcpHandle {
    stop: watch::Sender<bool>,
}

/// The daemon's one TCP listener, which can be (re)started at run time: an
/// agent's connect starts it with the agent token, a disconnect stops it.
#[derive(Default)]
pub struct TcpSlot {
    current: Mutex<Option<TcpHandle>>,
}

impl TcpSlot {
    /// Listens on `address` with `tokens`, replacing any listener. Records the
    /// outcome in the service's API state, and returns the bound address.
    /// TLS is on when `[daemon.web.tls]` says so for the address, or when
    /// `force_tls` (an agent linked to an https server).
    pub async fn start(
        &self,
        ctx: &Ctx,
        address: &str,
        tokens: Tokens,
        force_tls: bool,
    ) -> Result<String, String> {
        self.stop();
        let tokenless = tokens.admin.is_none();
        let tls_config = &ctx.svc.config.daemon.web.tls;
        let identity = match address.parse::<std::net::SocketAddr>() {
            Ok(addr) if force_tls || tls_config.on_for(addr.ip()) => {
                let extra: Vec<String> = (!addr.ip().is_unspecified())
                    .then(|| addr.ip().to_string())
                    .into_iter()
                    .collect();
                match crate::tls::server_identity(
                    &ctx.svc.home,
                    tls_config.cert.as_deref(),
                    tls_config.key.as_deref(),
                    &extra,
                ) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        let message = format!("cannot serve TLS on {address}: {e}");
                        tracing::error!("API not started: {message}");
                        *ctx.svc.api.lock_or_recover() = ApiState {
                            address: None,
                            error: Some(message.clone()),
                            tokenless,
                            tls_fingerprint: None,
                        };
                        return Err(message);
                    }
                }
            }
            _ => None,
        };
        let bound = match address.parse::<std::net::SocketAddr>() {
            Ok(addr) if tokenless && !addr.ip().is_loopback() => Err(format!(
                "{} is not a loopback address: opm serves TCP there only with a token",
                addr.ip()
            )),
            Ok(addr) => TcpListener::bind(addr).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("{address:?} is not an address:port ({e})")),
        };
        let set_state = |s: ApiState| *ctx.svc.api.lock_or_recover() = s;
        match bound {
            Ok(listener) => {
                let bound_addr = listener.local_addr();
                let local = bound_addr
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| address.to_string());
                let routes = match bound_addr {
                    Ok(a) => tcp_routes(ctx.clone(), tokens, a),
                    // No address to check `Host` against: nothing passes the guard.
                    Err(_) => tcp_routes(ctx.clone(), tokens, ([0, 0, 0, 0], 0).into()),
                };
                let (stop, stop_rx) = watch::channel(false);
                let mut daemon_stop = ctx.shutdown.subscribe();
                let mut own_stop = stop_rx;
                let tls_fingerprint = identity.as_ref().map(|i| i.fingerprint.clone());
                tokio::spawn(tcp::serve(
                    listener,
                    routes,
                    max_connections(ctx),
                    identity.map(|i| i.config),
                    async move {
                        tokio::select! {
                            _ = daemon_stop.wait_for(|v| *v) => {}
                            _ = own_stop.wait_for(|v| *v) => {}
                        }
                    },
                ));
                match &tls_fingerprint {
                    Some(fp) => {
                        tracing::info!("API listening on https://{local} (certificate {fp})")
                    }
                    None => tracing::info!("API listening on http://{local}"),
                }
                set_state(ApiState {
                    address: Some(local.clone()),
                    error: None,
                    tokenless,
                    tls_fingerprint,
                });
                *self.current.lock_or_recover() = Some(TcpHandle { stop });
                Ok(local)
            }
            Err(e) => {
                let message = format!("cannot listen on {address}: {e}");
                tracing::error!("API not started: {message}");
                set_state(ApiState {
                    address: None,
                    error: Some(message.clone()),
                    tokenless,
                    tls_fingerprint: None,
                });
                Err(message)
            }
        }
    }

    /// Stops the listener, if one runs.
    pub fn stop(&self) {
        if let Some(h) = self.current.lock_or_recover().take() {
            let _ = h.stop.send(true);
        }
    }
}
