//! An agent's link to its server, as the daemon drives it: joining
//! (`opm agent connect`), leaving (`opm agent disconnect`), and resuming it
//! at start. Each moves the TCP API too (an agent serves its own token), so
//! this lives with the API's `Ctx`; the link itself — registering,
//! heartbeats, the stored record — is `role::agent`'s.

use crate::sync::LockExt;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Ctx, Tokens};
use crate::config::{set_role, ConfigError, Role, AGENT_DEFAULT_PORT};
use crate::logging::AGENT_LINK;
use crate::model::{AgentStatus, ConnectRequest};
use crate::role::agent::{self, AgentLink, AgentRuntime, LinkError, LinkState};
use crate::store::StoreError;

/// Why `opm agent connect` or `disconnect` failed. Its HTTP status is
/// chosen in `api::errors`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("this opm is a server (role = \"server\"): agents connect to it, it does not connect to another")]
    IsServer,
    #[error("this opm is not connected to a server")]
    NotConnected,
    /// A field of the request is wrong (URL, name, address, fingerprint).
    #[error("{0}")]
    Invalid(String),
    /// The server's certificate could not be fetched to pin it.
    #[error("registration failed: {0}")]
    Probe(String),
    /// The server answered the registration with a refusal or not at all.
    #[error("registration failed: {0}")]
    Registration(#[source] LinkError),
    /// The agent's own API could not listen on its address.
    #[error("the agent API cannot start: {0}")]
    ApiCannotStart(String),
    #[error("no randomness: {0}")]
    NoRandomness(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Starts the heartbeat loop of `link` and records it in the service.
pub fn start_agent(ctx: &Ctx, link: AgentLink, registered: Option<u64>) {
    let state = Arc::new(Mutex::new(LinkState {
        connected: registered.is_some(),
        last_ok_ms: registered.map(|_| crate::spec::now_ms()),
        last_error: None,
        interval_ms: registered,
        refused: false,
    }));
    let (stop, stop_rx) = watch::channel(false);
    let svc = ctx.svc.clone();
    let summary = move || svc.list();
    let link = Arc::new(Mutex::new(link));
    tokio::spawn(agent::run(
        link.clone(),
        state.clone(),
        summary,
        ctx.svc.store.clone(),
        stop_rx,
        registered,
    ));
    let old = ctx
        .role
        .agent
        .lock_or_recover()
        .replace(AgentRuntime { link, state, stop });
    if let Some(old) = old {
        let _ = old.stop.send(true);
    }
}

/// The tokens of an agent's API: its own token, full access.
fn agent_tokens(link: &AgentLink) -> Tokens {
    Tokens {
        admin: Some(Arc::new(link.token.clone())),
        join: None,
    }
}

/// Starts the agent's API and heartbeats at daemon start, when linked.
pub async fn resume_agent(ctx: &Ctx) -> bool {
    let link = match agent::load_link(&ctx.svc.store) {
        Ok(Some(link)) => link,
        Ok(None) => return false,
        Err(e) => {
            tracing::error!("cannot read the agent link: {e}");
            return false;
        }
    };
    if let Err(e) = ctx
        .tcp
        .start(ctx, &link.bind, agent_tokens(&link), link.tls())
        .await
    {
        tracing::error!(target: AGENT_LINK, "agent API not serving: {e}");
    }
    tracing::info!(target: AGENT_LINK, "daemon started: resuming the link to {}", link.server);
    start_agent(ctx, link, None);
    true
}

/// The fingerprint of the certificate the TCP API serves, if it serves TLS.
fn api_fingerprint(ctx: &Ctx) -> Option<String> {
    ctx.svc.api.lock_or_recover().tls_fingerprint.clone()
}

/// `opm agent connect`: joins a server (README, "Server and agents").
pub async fn connect(ctx: &Ctx, req: ConnectRequest) -> Result<AgentStatus, ConnectError> {
    let svc = &ctx.svc;
    let bad = ConnectError::Invalid;
    if ctx.role.role() == Role::Server {
        return Err(ConnectError::IsServer);
    }
    let server = req.server.trim_end_matches('/').to_string();
    let server_endpoint =
        crate::client::Endpoint::parse_url(&server, None).map_err(|e| bad(e.to_string()))?;
    let (https, server_host, server_port) = match &server_endpoint {
        crate::client::Endpoint::Tcp {
            host, port, tls, ..
        } => (tls.is_some(), host.clone(), *port),
        crate::client::Endpoint::Unix(_) => (false, String::new(), 0),
    };
    // Without a token, the server decides: only one whose TCP API has no
    // token (loopback only) takes it.
    let previous = agent::load_link(&svc.store)?;
    let host = crate::supervise::proc::hostname();
    let name = match req
        .name
        .clone()
        .or_else(|| previous.as_ref().map(|l| l.name.clone()))
    {
        Some(n) => n,
        None => crate::spec::derive_name(&host),
    };
    crate::spec::validate_name(&name).map_err(bad)?;
    let web = &svc.config.daemon.web;
    let default_port = if web.port == 9876 {
        AGENT_DEFAULT_PORT
    } else {
        web.port
    };
    let bind = match &req.api_address {
        Some(a) => a
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
        None => previous
            .as_ref()
            .map_or(format!("{}:{default_port}", web.address), |l| {
                l.bind.clone()
            }),
    };
    let addr: std::net::SocketAddr = bind.parse().map_err(|_| {
        bad(format!(
            "--api-address {bind:?} must be host:port with an IP address, e.g. 10.0.0.5:9877"
        ))
    })?;
    // The agent's API speaks TLS with an https server, and wherever
    // [daemon.web.tls] wants it for its address.
    let api_tls = https || web.tls.on_for(addr.ip());
    let scheme = if api_tls { "https" } else { "http" };
    let endpoint = if addr.ip().is_unspecified() {
        format!("{scheme}://{host}:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    };
    // The server's certificate: the one given, else the one pinned for
    // this server before, else the one it shows now (trust on first use).
    let server_fingerprint = match &req.fingerprint {
        Some(_) if !https => {
            return Err(bad(format!(
                "--fingerprint goes with an https:// server URL, not {server}"
            )))
        }
        Some(fp) => crate::tls::parse_fingerprint(fp).map_err(bad)?,
        None if !https => String::new(),
        None => match previous
            .as_ref()
            .filter(|l| l.server == server && !l.server_fingerprint.is_empty())
        {
            Some(l) => l.server_fingerprint.clone(),
            None => crate::tls::probe(&server_host, server_port)
                .await
                .map_err(ConnectError::Probe)?,
        },
    };
    // Registering again with the same server keeps the id and credential.
    let (id, credential) = match &previous {
        Some(l) if l.server == server => (l.id.clone(), l.credential.clone()),
        _ => (String::new(), String::new()),
    };
    let token = match &previous {
        Some(l) => l.token.clone(),
        None => crate::token::random_hex(24).map_err(ConnectError::NoRandomness)?,
    };
    let mut link = AgentLink {
        server: server.clone(),
        server_token: req.token.clone(),
        id,
        name,
        hostname: host,
        bind: bind.clone(),
        endpoint,
        token,
        connected_ms: crate::spec::now_ms(),
        credential,
        server_fingerprint,
        api_fingerprint: String::new(),
    };
    let running = ctx.role.agent.lock_or_recover().take();
    // Connecting again on the same address keeps the agent API as it
    // serves (same token): closing it and binding anew could race its port.
    let serving = svc.api.lock_or_recover().address.clone();
    let keep_api = running.as_ref().is_some_and(|rt| {
        let old = rt.link();
        old.bind == bind
            && old.token == link.token
            && old.endpoint == link.endpoint
            && serving.as_deref() == Some(bind.as_str())
    });
    let was_running = running.map(|rt| {
        let _ = rt.stop.send(true);
        rt.link()
    });
    if !keep_api {
        ctx.tcp
            .start(ctx, &bind, agent_tokens(&link), link.tls())
            .await
            .map_err(ConnectError::ApiCannotStart)?;
    }
    link.api_fingerprint = api_fingerprint(ctx).unwrap_or_default();
    let mut answer = agent::register(&link, svc.list()).await;
    if matches!(answer, Err(LinkError::Refused(_))) && !link.credential.is_empty() {
        // The old credential was revoked (or the server lost it): join anew.
        link.id.clear();
        link.credential.clear();
        answer = agent::register(&link, svc.list()).await;
    }
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            // A failed connect changes nothing: a link that was running runs on.
            match was_running {
                Some(old) => {
                    if !keep_api {
                        if let Err(e) = ctx
                            .tcp
                            .start(ctx, &old.bind, agent_tokens(&old), old.tls())
                            .await
                        {
                            tracing::error!(target: AGENT_LINK, "agent API not serving: {e}");
                        }
                    }
                    start_agent(ctx, old, None);
                }
                None => restore_api(ctx).await,
            }
            return Err(ConnectError::Registration(e));
        }
    };
    link.id = answer.id.clone();
    if let Some(c) = &answer.credential {
        link.credential = c.clone();
    }
    agent::save_link(&svc.store, &link)?;
    set_role(&svc.home, Role::Agent)?;
    ctx.role.set_role(Role::Agent);
    tracing::info!(target: AGENT_LINK, "connected to {server} as {} ({}), API at {}",
            link.name, link.id, link.endpoint);
    start_agent(ctx, link, Some(answer.heartbeat_interval_ms));
    Ok(ctx.role.agent_status())
}

/// The TCP API as the configuration alone would have it.
async fn restore_api(ctx: &Ctx) {
    ctx.tcp.stop();
    let wanted = ctx.svc.config.daemon.web.api || ctx.role.registry.is_some();
    if wanted {
        let tokens = super::agents::tokens_for(ctx);
        let _ = ctx
            .tcp
            .start(ctx, &ctx.svc.config.api_address(), tokens, false)
            .await;
    } else {
        *ctx.svc.api.lock_or_recover() = crate::service::ApiState::default();
    }
}

/// `opm agent disconnect`: leave the server, become standalone, keep running.
pub async fn disconnect(ctx: &Ctx) -> Result<serde_json::Value, ConnectError> {
    let svc = &ctx.svc;
    let runtime = ctx.role.agent.lock_or_recover().take();
    let link = match runtime {
        Some(rt) => {
            let _ = rt.stop.send(true);
            Some(rt.link())
        }
        None => agent::load_link(&svc.store)?,
    };
    let Some(link) = link else {
        return Err(ConnectError::NotConnected);
    };
    let deregistered = agent::deregister(&link).await;
    agent::remove_link(&svc.store)?;
    set_role(&svc.home, Role::Standalone)?;
    ctx.role.set_role(Role::Standalone);
    restore_api(ctx).await;
    let note = match &deregistered {
        Ok(()) => format!("deregistered from {}", link.server),
        Err(e) => format!(
            "could not deregister from {} ({e}); the server will see this agent go offline",
            link.server
        ),
    };
    tracing::info!(target: AGENT_LINK, "disconnected: {note}");
    Ok(serde_json::json!({
        "disconnected": true,
        "server": link.server,
        "deregistered": deregistered.is_ok(),
        "note": note,
        "role": "standalone",
    }))
}
