//! The agent side: the link to a server (kept in the `role` tree), the
//! registration, and the heartbeat loop that sends a process summary at the
//! interval the server asks for. When the server is down or has forgotten
//! the agent, the loop retries with backoff and registers again by itself;
//! the agent's processes never depend on the server. Its log is `agent.log`.
//!
//! Trust: an agent joins once with the join token; the server's answer
//! carries its id and its own credential, kept in the link (the `role`
//! tree) and sent (header `agent-token`) on every later registration and
//! heartbeat. A server that refuses the agent (401, 403: removed, revoked,
//! wrong token) is said so in `opm agent status` and `agent.log`, and asked
//! again only after an exponential backoff; the agent never joins again by
//! itself after a refusal. The admin token is never sent to or kept by an
//! agent: a server refuses it at registration.

use crate::sync::LockExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{Client, ClientError, Endpoint};
use crate::logging::AGENT_LINK;
use crate::model::{AgentStatus, HeartbeatAnswer, HeartbeatRequest, ProcessView, RegisterRequest};
use crate::spec::now_ms;
use crate::store::records::Stored;
use crate::store::{Store, StoreError};

/// The interval before the server has said otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// The longest wait between two attempts while the server cannot be reached.
pub const RETRY_CAP: Duration = Duration::from_secs(30);
/// The longest a registration or heartbeat may take.
pub const SERVER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts after the server refused this agent.
pub const REFUSED_RETRY_CAP: Duration = Duration::from_secs(300);

const LINK_KEY: &str = "link";

/// An agent's link to its server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLink {
    pub server: String,
    pub server_token: String,
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// `host:port` the agent's API listens on.
    pub bind: String,
    /// Where the server reaches that API.
    pub endpoint: String,
    /// The agent's API token, sent to the server at registration.
    pub token: String,
    pub connected_ms: u64,
    /// This agent's credential, issued by the server when it joined; empty
    /// before that.
    pub credential: String,
    /// The pinned fingerprint of the server's certificate (https); empty for
    /// an http server.
    pub server_fingerprint: String,
    /// The fingerprint of this agent's own API certificate, sent at
    /// registration; empty when its API speaks plain HTTP.
    pub api_fingerprint: String,
}

/// A link as written before agents had credentials.
#[derive(Deserialize)]
struct AgentLinkV1 {
    server: String,
    server_token: String,
    id: String,
    name: String,
    hostname: String,
    bind: String,
    endpoint: String,
    token: String,
    connected_ms: u64,
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLink")
            .field("server", &self.server)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AgentLink {
    /// Whether the agent's API serves TLS: when its server speaks https.
    pub fn tls(&self) -> bool {
        self.server.starts_with("https://")
    }
}

pub fn load_link(store: &Store) -> Result<Option<AgentLink>, StoreError> {
    store
        .role_records()?
        .get_stored(LINK_KEY)?
        .map(decode_link)
        .transpose()
}

fn decode_link(v: Stored) -> Result<AgentLink, StoreError> {
    match v.decode() {
        Ok(link) => Ok(link),
        // A link from before agents had credentials (and TLS): an http
        // server, nothing pinned; the agent joins again.
        Err(e) => match v.decode::<AgentLinkV1>() {
            Ok(old) => Ok(AgentLink {
                server: old.server,
                server_token: old.server_token,
                id: old.id,
                name: old.name,
                hostname: old.hostname,
                bind: old.bind,
                endpoint: old.endpoint,
                token: old.token,
                connected_ms: old.connected_ms,
                credential: String::new(),
                server_fingerprint: String::new(),
                api_fingerprint: String::new(),
            }),
            Err(_) => Err(e),
        },
    }
}

pub fn save_link(store: &Store, link: &AgentLink) -> Result<(), StoreError> {
    store.role_records()?.put(LINK_KEY, link)?;
    store.flush()
}

pub fn remove_link(store: &Store) -> Result<(), StoreError> {
    store.role_records()?.remove(LINK_KEY)?;
    store.flush()
}

/// What the loop last saw; read by `opm agent status`.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub connected: bool,
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    pub interval_ms: Option<u64>,
    /// The server refused this agent at the last attempt.
    pub refused: bool,
}

/// A running link: its state and the switch that ends its loop. The link
/// changes when the agent joins again (new id and credential).
pub struct AgentRuntime {
    pub link: Arc<Mutex<AgentLink>>,
    pub state: Arc<Mutex<LinkState>>,
    pub stop: watch::Sender<bool>,
}

impl AgentRuntime {
    pub fn link(&self) -> AgentLink {
        self.link.lock_or_recover().clone()
    }

    pub fn status(&self, role: &str) -> AgentStatus {
        let s = self.state.lock_or_recover().clone();
        let link = self.link();
        AgentStatus {
            role: role.to_string(),
            server: Some(link.server),
            agent_id: (!link.id.is_empty()).then_some(link.id),
            name: Some(link.name),
            endpoint: Some(link.endpoint),
            connected: s.connected,
            last_heartbeat_ms: s.last_ok_ms,
            last_error: s.last_error,
            heartbeat_interval_ms: s.interval_ms,
            connected_since_ms: Some(link.connected_ms),
            refused: s.refused,
            server_fingerprint: (!link.server_fingerprint.is_empty())
                .then_some(link.server_fingerprint),
        }
    }
}

/// A client for the server: the join token, and this agent's credential
/// once it has one. Answers are read up to a small limit.
fn server_client(link: &AgentLink) -> Result<Client, ClientError> {
    let endpoint = Endpoint::parse_url(&link.server, Some(link.server_token.clone()))?;
    let endpoint = match &endpoint {
        // An https server is trusted by its pinned certificate only.
        Endpoint::Tcp { tls: Some(_), .. } if link.server_fingerprint.is_empty() => {
            return Err(ClientError::Tls(format!(
                "no certificate fingerprint is pinned for {}: connect again (opm agent connect {} --token JOIN)",
                link.server, link.server
            )))
        }
        _ => endpoint.with_fingerprint(Some(&link.server_fingerprint))?,
    };
    let client = Client::new(endpoint).with_body_limit(SERVER_ANSWER_LIMIT);
    Ok(if link.credential.is_empty() {
        client
    } else {
        client.with_header("agent-token", &link.credential)
    })
}

/// The largest answer to a registration or heartbeat an agent reads.
const SERVER_ANSWER_LIMIT: usize = 64 * 1024;

/// Why a call to the server failed, as a user should read it.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach the server at {0}: {1}")]
    Unreachable(String, #[source] ClientError),
    #[error("the server refused this agent: {0}")]
    Refused(String),
    /// The server's certificate is not the pinned one.
    #[error("{0}")]
    Untrusted(String),
    #[error("the server does not know this agent")]
    Unknown,
    #[error("the server answered {0}: {1}")]
    Other(StatusCode, String),
}

async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
    server: &str,
) -> Result<T, LinkError> {
    match tokio::time::timeout(SERVER_CALL_TIMEOUT, fut).await {
        Err(_) => Err(LinkError::Unreachable(
            server.to_string(),
            ClientError::TimedOut(SERVER_CALL_TIMEOUT),
        )),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(ClientError::Api { status, message })) => Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LinkError::Refused(message),
            StatusCode::NOT_FOUND => LinkError::Unknown,
            s => LinkError::Other(s, message),
        }),
        Ok(Err(ClientError::Pin(m, _))) => Err(LinkError::Untrusted(format!(
            "refusing the server at {server}: its certificate fingerprint is {}, expected {} (the pinned one); someone may be standing in the middle. If the server's certificate changed on purpose: opm agent connect {server} --token JOIN --fingerprint {}",
            m.got, m.expected, m.got
        ))),
        Ok(Err(e)) => Err(LinkError::Unreachable(server.to_string(), e)),
    }
}

pub async fn register(
    link: &AgentLink,
    processes: Vec<ProcessView>,
) -> Result<HeartbeatAnswer, LinkError> {
    let client = server_client(link).map_err(|e| LinkError::Unreachable(link.server.clone(), e))?;
    let req = RegisterRequest {
        id: (!link.id.is_empty()).then(|| link.id.clone()),
        name: link.name.clone(),
        hostname: link.hostname.clone(),
        endpoint: link.endpoint.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        token: link.token.clone(),
        processes,
        fingerprint: (!link.api_fingerprint.is_empty()).then(|| link.api_fingerprint.clone()),
    };
    timed(client.post("/daemon/agents/register", &req), &link.server).await
}

async fn heartbeat(
    link: &AgentLink,
    processes: Vec<ProcessView>,
) -> Result<HeartbeatAnswer, LinkError> {
    let client = server_client(link).map_err(|e| LinkError::Unreachable(link.server.clone(), e))?;
    timed(
        client.post(
            &format!("/daemon/agents/{}/heartbeat", link.id),
            &HeartbeatRequest { processes },
        ),
        &link.server,
    )
    .await
}

pub async fn deregister(link: &AgentLink) -> Result<(), LinkError> {
    let client = server_client(link).map_err(|e| LinkError::Unreachable(link.server.clone(), e))?;
    timed(
        client.delete(&format!("/daemon/agents/{}", link.id)),
        &link.server,
    )
    .await
    .map(|_: serde_json::Value| ())
}

/// Takes what a registration answered into the link: a join's new id and
/// credential are saved before anything else is sent.
pub fn adopt_answer(
    link: &mut AgentLink,
    answer: &HeartbeatAnswer,
    store: &Store,
) -> Result<(), StoreError> {
    if let Some(credential) = &answer.credential {
        link.id = answer.id.clone();
        link.credential = credential.clone();
        save_link(store, link)?;
    }
    Ok(())
}

/// Heartbeats until `stop`; registers again when the server has forgotten
/// this agent (joining anew with the join token when the server lost it
/// altogether); backs off while the server cannot be reached, and longer
/// while it refuses this agent.
pub async fn run(
    link: Arc<Mutex<AgentLink>>,
    state: Arc<Mutex<LinkState>>,
    summary: impl Fn() -> Vec<ProcessView> + Send + 'static,
    store: Arc<Store>,
    mut stop: watch::Receiver<bool>,
    registered_with_interval: Option<u64>,
) {
    let mut registered = registered_with_interval.is_some();
    let mut wait = Duration::from_millis(registered_with_interval.unwrap_or(0));
    let mut failures: u32 = 0;
    let mut refusals: u32 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let current = link.lock_or_recover().clone();
        let result = if registered {
            heartbeat(&current, summary()).await
        } else {
            register(&current, summary()).await
        };
        if *stop.borrow() {
            return;
        }
        let mut s = state.lock_or_recover();
        match result {
            Ok(answer) => {
                let joined = answer.credential.is_some();
                if joined {
                    let mut l = link.lock_or_recover();
                    if let Err(e) = adopt_answer(&mut l, &answer, &store) {
                        tracing::error!(target: AGENT_LINK, "cannot save the new credential: {e}");
                    }
                }
                if !registered || failures > 0 || refusals > 0 {
                    tracing::info!(target: AGENT_LINK, "{} {} as {} ({})",
                            if joined {
                                "joined"
                            } else if registered {
                                "heartbeats resumed with"
                            } else {
                                "registered with"
                            },
                            current.server,
                            current.name,
                            answer.id);
                }
                registered = true;
                failures = 0;
                refusals = 0;
                s.connected = true;
                s.refused = false;
                s.last_ok_ms = Some(now_ms());
                s.last_error = None;
                s.interval_ms = Some(answer.heartbeat_interval_ms);
                wait = Duration::from_millis(answer.heartbeat_interval_ms.max(100));
            }
            Err(LinkError::Unknown) if registered => {
                tracing::warn!(target: AGENT_LINK, "the server does not know this agent any more: registering again");
                registered = false;
                s.connected = false;
                s.last_error =
                    Some("the server had forgotten this agent; registering again".into());
                wait = Duration::ZERO;
            }
            Err(e @ LinkError::Untrusted(_)) => {
                refusals = refusals.saturating_add(1);
                failures = 0;
                let backoff = refused_backoff(refusals);
                if refusals == 1 || refusals.is_power_of_two() {
                    tracing::warn!(target: AGENT_LINK, "{e} (attempt {refusals})");
                }
                s.connected = false;
                s.last_error = Some(e.to_string());
                wait = backoff;
            }
            Err(e @ LinkError::Refused(_)) => {
                refusals = refusals.saturating_add(1);
                failures = 0;
                // Asked again by registering, with the credential: only a
                // server that knows it (or lost every trace of this agent)
                // lets it back in.
                registered = false;
                let backoff = refused_backoff(refusals);
                if refusals == 1 || refusals.is_power_of_two() {
                    tracing::warn!(target: AGENT_LINK, "{e} (attempt {refusals}); asking again in {}s; to join again: opm agent connect {} --token JOIN",
                            backoff.as_secs(),
                            current.server);
                }
                s.connected = false;
                s.refused = true;
                s.last_error = Some(e.to_string());
                wait = backoff;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(target: AGENT_LINK, "{e} (attempt {failures})");
                }
                s.connected = false;
                s.last_error = Some(e.to_string());
                let base = s
                    .interval_ms
                    .map_or(DEFAULT_HEARTBEAT_INTERVAL, Duration::from_millis)
                    .min(Duration::from_secs(5));
                let backoff = base.saturating_mul(1u32 << failures.min(5)).min(RETRY_CAP);
                let jitter = Duration::from_millis(
                    super::jitter_seed() % (backoff.as_millis() as u64 / 5 + 1),
                );
                wait = backoff / 2 + jitter;
            }
        }
    }
}

/// How long an agent waits after its `refusals`-th refusal in a row (its
/// credential or its server's certificate): doubling, capped.
fn refused_backoff(refusals: u32) -> Duration {
    DEFAULT_HEARTBEAT_INTERVAL
        .saturating_mul(1u32 << refusals.min(8))
        .min(REFUSED_RETRY_CAP)
}
