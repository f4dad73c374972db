//! The agent side: the link to a server (kept in the `role` tree), the
//! registration, and the heartbeat loop that sends a process summary at the
//! interval the server asks for. When the server is down or has forgotten
//! the agent, the loop retries with backoff and registers again by itself;
//! the agent's processes never depend on the server. Its log is `agent.log`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{Client, ClientError, Endpoint};
use crate::model::{AgentStatus, HeartbeatAnswer, HeartbeatRequest, ProcessView, RegisterRequest};
use crate::spec::now_ms;
use crate::store::{codec, Store, StoreError, ROLE};

/// The interval before the server has said otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// The longest wait between two attempts while the server cannot be reached.
pub const RETRY_CAP: Duration = Duration::from_secs(30);
/// The longest a registration or heartbeat may take.
pub const SERVER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

const LINK_KEY: &[u8] = b"link";

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

pub fn load_link(store: &Store) -> Result<Option<AgentLink>, StoreError> {
    let tree = store.tree(ROLE)?;
    tree.get(LINK_KEY)?
        .map(|v| codec::decode(ROLE, LINK_KEY, &v))
        .transpose()
}

pub fn save_link(store: &Store, link: &AgentLink) -> Result<(), StoreError> {
    store.tree(ROLE)?.insert(LINK_KEY, codec::encode(link)?)?;
    store.flush()
}

pub fn remove_link(store: &Store) -> Result<(), StoreError> {
    store.tree(ROLE)?.remove(LINK_KEY)?;
    store.flush()
}

/// What the loop last saw; read by `opm agent status`.
#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub connected: bool,
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    pub interval_ms: Option<u64>,
}

/// A running link: its state and the switch that ends its loop.
pub struct AgentRuntime {
    pub link: AgentLink,
    pub state: Arc<Mutex<LinkState>>,
    pub stop: watch::Sender<bool>,
}

impl AgentRuntime {
    pub fn status(&self, role: &str) -> AgentStatus {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        AgentStatus {
            role: role.to_string(),
            server: Some(self.link.server.clone()),
            agent_id: Some(self.link.id.clone()),
            name: Some(self.link.name.clone()),
            endpoint: Some(self.link.endpoint.clone()),
            connected: s.connected,
            last_heartbeat_ms: s.last_ok_ms,
            last_error: s.last_error,
            heartbeat_interval_ms: s.interval_ms,
            connected_since_ms: Some(self.link.connected_ms),
        }
    }
}

/// Appends a line to `agent.log`.
pub fn agent_log(path: &PathBuf, message: &str) {
    let now = now_ms();
    let secs = now / 1000;
    let line = format!(
        "{} {:02}:{:02}:{:02}.{:03} {message}\n",
        crate::cli::format::timestamp(now)
            .split(' ')
            .next()
            .unwrap_or(""),
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        now % 1000
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn server_client(link: &AgentLink) -> Result<Client, ClientError> {
    Ok(Client::new(Endpoint::parse_url(
        &link.server,
        Some(link.server_token.clone()),
    )?))
}

/// Why a call to the server failed, as a user should read it.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach the server at {0}: {1}")]
    Unreachable(String, String),
    #[error("the server refused the token ({0})")]
    Refused(String),
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
            format!("no answer within {SERVER_CALL_TIMEOUT:?}"),
        )),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(ClientError::Api { status, message })) => Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LinkError::Refused(message),
            StatusCode::NOT_FOUND => LinkError::Unknown,
            s => LinkError::Other(s, message),
        }),
        Ok(Err(e)) => Err(LinkError::Unreachable(server.to_string(), e.to_string())),
    }
}

pub async fn register(
    link: &AgentLink,
    processes: Vec<ProcessView>,
) -> Result<HeartbeatAnswer, LinkError> {
    let client = server_client(link)
        .map_err(|e| LinkError::Unreachable(link.server.clone(), e.to_string()))?;
    let req = RegisterRequest {
        id: link.id.clone(),
        name: link.name.clone(),
        hostname: link.hostname.clone(),
        endpoint: link.endpoint.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        token: link.token.clone(),
        processes,
    };
    timed(client.post("/daemon/agents/register", &req), &link.server).await
}

async fn heartbeat(
    link: &AgentLink,
    processes: Vec<ProcessView>,
) -> Result<HeartbeatAnswer, LinkError> {
    let client = server_client(link)
        .map_err(|e| LinkError::Unreachable(link.server.clone(), e.to_string()))?;
    let client = client.with_header("agent-token", &link.token);
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
    let client = server_client(link)
        .map_err(|e| LinkError::Unreachable(link.server.clone(), e.to_string()))?;
    let client = client.with_header("agent-token", &link.token);
    timed(
        client.delete(&format!("/daemon/agents/{}", link.id)),
        &link.server,
    )
    .await
    .map(|_: serde_json::Value| ())
}

/// Heartbeats until `stop`; registers again when the server has forgotten
/// this agent; backs off while the server cannot be reached.
pub async fn run(
    link: AgentLink,
    state: Arc<Mutex<LinkState>>,
    summary: impl Fn() -> Vec<ProcessView> + Send + 'static,
    log: PathBuf,
    mut stop: watch::Receiver<bool>,
    registered_with_interval: Option<u64>,
) {
    let mut registered = registered_with_interval.is_some();
    let mut wait = Duration::from_millis(registered_with_interval.unwrap_or(0));
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let result = if registered {
            heartbeat(&link, summary()).await
        } else {
            register(&link, summary()).await
        };
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(answer) => {
                if !registered || failures > 0 {
                    agent_log(
                        &log,
                        &format!(
                            "{} with {} as {} ({})",
                            if registered {
                                "heartbeats resumed"
                            } else {
                                "registered"
                            },
                            link.server,
                            link.name,
                            link.id
                        ),
                    );
                }
                registered = true;
                failures = 0;
                s.connected = true;
                s.last_ok_ms = Some(now_ms());
                s.last_error = None;
                s.interval_ms = Some(answer.heartbeat_interval_ms);
                wait = Duration::from_millis(answer.heartbeat_interval_ms.max(100));
            }
            Err(LinkError::Unknown) if registered => {
                agent_log(
                    &log,
                    "the server does not know this agent any more: registering again",
                );
                registered = false;
                s.connected = false;
                s.last_error =
                    Some("the server had forgotten this agent; registering again".into());
                wait = Duration::ZERO;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_power_of_two() {
                    agent_log(&log, &format!("{e} (attempt {failures})"));
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
