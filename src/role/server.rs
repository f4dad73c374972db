//! The server side: the agent registry (persisted in the `agents` tree),
//! liveness (an agent is offline once its interval plus a grace passes
//! without a heartbeat), Nomad-style pacing (the interval grows with the
//! number of agents, with jitter), batched write-back of soft state, and the
//! calls to an agent's API that carry out the server's commands.
//!
//! Durability by kind: a registration and a deregistration are flushed
//! before the answer; `last_seen` and the process summary are soft state,
//! kept in memory and written back in batches. After a restart every known
//! agent gets a fresh grace period, so a server restart never flaps the fleet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::client::{Client, ClientError, Endpoint};
use crate::config::ServerSection;
use crate::model::{AgentView, HeartbeatAnswer, ProcessCounts, ProcessView, RegisterRequest};
use crate::spec::{now_ms, Event};
use crate::store::{codec, Store, StoreError, AGENTS};

/// How long soft state (last seen, summaries) may wait before it is written.
pub const WRITE_BACK_DELAY: Duration = Duration::from_secs(5);
/// The longest a call to an agent may take.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server keeps of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub endpoint: String,
    pub version: String,
    /// The agent's API token; never printed or returned.
    pub token: String,
    pub registered_ms: u64,
    pub last_seen_ms: u64,
    pub online: bool,
    pub summary: Vec<ProcessView>,
}

struct Live {
    rec: AgentRecord,
    deadline_ms: u64,
    dirty: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("no agent with id or name {0:?}")]
    NotFound(String),
    #[error("the agent token does not match agent {0:?}")]
    WrongAgentToken(String),
    #[error("an agent named {0:?} is already registered with another id; remove it first (DELETE /daemon/agents/{0})")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Registry {
    tree: sled::Tree,
    store: Arc<Store>,
    config: ServerSection,
    agents: Mutex<HashMap<String, Live>>,
    /// Wakes the liveness task when a deadline moves.
    changed: Notify,
    /// Wakes the write-back task when soft state changes.
    dirty: Notify,
    events: tokio::sync::broadcast::Sender<Event>,
}

/// Agent events have no process id.
pub const AGENT_EVENT_ID: u64 = u64::MAX;

impl Registry {
    /// Loads the registry; every known agent gets a fresh grace period.
    pub fn load(
        store: Arc<Store>,
        config: ServerSection,
        events: tokio::sync::broadcast::Sender<Event>,
    ) -> Result<Registry, StoreError> {
        let tree = store.tree(AGENTS)?;
        let now = now_ms();
        let mut agents = HashMap::new();
        let restart_grace = config.heartbeat_interval_ms + 2 * config.heartbeat_grace_ms;
        for item in tree.iter() {
            let (k, v) = item?;
            let rec: AgentRecord = codec::decode(AGENTS, &k, &v)?;
            agents.insert(
                rec.id.clone(),
                Live {
                    rec,
                    deadline_ms: now + restart_grace,
                    dirty: false,
                },
            );
        }
        Ok(Registry {
            tree,
            store,
            config,
            agents: Mutex::new(agents),
            changed: Notify::new(),
            dirty: Notify::new(),
            events,
        })
    }

    /// The lock is never held across an `.await`; a poisoned lock means a
    /// panic mid-update of one entry, which is whole again at its next beat.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The interval to hand an agent: the base, or more when the fleet would
    /// otherwise beat faster than `max_heartbeats_per_second`, plus up to 20 %
    /// jitter so agents do not beat in lockstep.
    pub fn interval_ms(&self, agents: usize) -> u64 {
        let base = self.config.heartbeat_interval_ms;
        let paced = (agents as u64 * 1000) / self.config.max_heartbeats_per_second.max(1);
        let interval = base.max(paced);
        interval + super::jitter_seed() % (interval / 5 + 1)
    }

    fn event(&self, rec: &AgentRecord, kind: &str, detail: String) {
        let e = Event {
            at_ms: now_ms(),
            id: AGENT_EVENT_ID,
            name: rec.name.clone(),
            kind: kind.into(),
            detail,
        };
        crate::daemon_log(format_args!(
            "{} {} ({}): {}",
            e.kind, e.name, rec.id, e.detail
        ));
        let _ = self.store.push_event(&e);
        let _ = self.events.send(e);
    }

    fn put(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        self.tree.insert(rec.id.as_bytes(), codec::encode(rec)?)?;
        Ok(())
    }

    /// Adds or refreshes an agent; durable before it returns.
    pub fn register(&self, req: RegisterRequest) -> Result<HeartbeatAnswer, RegistryError> {
        validate(&req)?;
        let now = now_ms();
        let rec = {
            let mut agents = self.lock();
            if let Some(other) = agents
                .values()
                .find(|l| l.rec.name == req.name && l.rec.id != req.id)
            {
                return Err(RegistryError::NameTaken(other.rec.name.clone()));
            }
            let registered_ms = agents.get(&req.id).map_or(now, |l| l.rec.registered_ms);
            let rec = AgentRecord {
                id: req.id.clone(),
                name: req.name,
                hostname: req.hostname,
                endpoint: req.endpoint.trim_end_matches('/').to_string(),
                version: req.version,
                token: req.token,
                registered_ms,
                last_seen_ms: now,
                online: true,
                summary: req.processes,
            };
            let n = agents.len() + usize::from(!agents.contains_key(&req.id));
            let interval = self.interval_ms(n);
            agents.insert(
                rec.id.clone(),
                Live {
                    rec: rec.clone(),
                    deadline_ms: now + interval + self.config.heartbeat_grace_ms,
                    dirty: false,
                },
            );
            (rec, interval)
        };
        let (rec, interval) = rec;
        self.put(&rec)?;
        self.store.flush()?;
        self.event(
            &rec,
            "agent_registered",
            format!("{} at {}", rec.hostname, rec.endpoint),
        );
        self.changed.notify_one();
        Ok(HeartbeatAnswer {
            id: rec.id,
            heartbeat_interval_ms: interval,
        })
    }

    /// Records a heartbeat (soft state).
    pub fn heartbeat(
        &self,
        id: &str,
        agent_token: &str,
        processes: Vec<ProcessView>,
    ) -> Result<HeartbeatAnswer, RegistryError> {
        let now = now_ms();
        let (came_back, interval) = {
            let mut agents = self.lock();
            let n = agents.len();
            let interval = self.interval_ms(n);
            let grace = self.config.heartbeat_grace_ms;
            let live = agents
                .get_mut(id)
                .ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
            if !crate::api::auth::constant_time_eq(
                live.rec.token.as_bytes(),
                agent_token.as_bytes(),
            ) {
                return Err(RegistryError::WrongAgentToken(id.to_string()));
            }
            let came_back = !live.rec.online;
            live.rec.online = true;
            live.rec.last_seen_ms = now;
            live.rec.summary = processes;
            live.deadline_ms = now + interval + grace;
            live.dirty = true;
            (came_back.then(|| live.rec.clone()), interval)
        };
        if let Some(rec) = came_back {
            self.event(&rec, "agent_online", "heartbeats resumed".into());
            self.changed.notify_one();
        }
        self.dirty.notify_one();
        Ok(HeartbeatAnswer {
            id: id.to_string(),
            heartbeat_interval_ms: interval,
        })
    }

    /// Forgets an agent; durable before it returns. `agent_token` is checked
    /// when given (an agent leaving); an administrator passes `None`.
    pub fn deregister(
        &self,
        id_or_name: &str,
        agent_token: Option<&str>,
    ) -> Result<AgentRecord, RegistryError> {
        let rec = {
            let mut agents = self.lock();
            let id = find_id(&agents, id_or_name)
                .ok_or_else(|| RegistryError::NotFound(id_or_name.to_string()))?;
            if let Some(t) = agent_token {
                let ok = agents.get(&id).is_some_and(|l| {
                    crate::api::auth::constant_time_eq(l.rec.token.as_bytes(), t.as_bytes())
                });
                if !ok {
                    return Err(RegistryError::WrongAgentToken(id_or_name.to_string()));
                }
            }
            agents
                .remove(&id)
                .map(|l| l.rec)
                .ok_or_else(|| RegistryError::NotFound(id_or_name.to_string()))?
        };
        self.tree
            .remove(rec.id.as_bytes())
            .map_err(StoreError::from)?;
        self.store.flush()?;
        self.event(&rec, "agent_removed", String::new());
        Ok(rec)
    }

    /// Every agent, by name.
    pub fn list(&self) -> Vec<AgentView> {
        let agents = self.lock();
        let mut out: Vec<AgentView> = agents.values().map(|l| view(&l.rec)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn get(&self, id_or_name: &str) -> Option<AgentRecord> {
        let agents = self.lock();
        find_id(&agents, id_or_name).and_then(|id| agents.get(&id).map(|l| l.rec.clone()))
    }

    pub fn counts(&self) -> (usize, usize) {
        let agents = self.lock();
        let online = agents.values().filter(|l| l.rec.online).count();
        (online, agents.len() - online)
    }

    /// Marks agents offline when their deadline passes; sleeps until the
    /// earliest deadline or a change.
    pub async fn run_liveness(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let now = now_ms();
            let mut gone = Vec::new();
            let next = {
                let mut agents = self.lock();
                for live in agents.values_mut() {
                    if live.rec.online && live.deadline_ms <= now {
                        live.rec.online = false;
                        live.dirty = true;
                        gone.push(live.rec.clone());
                    }
                }
                agents
                    .values()
                    .filter(|l| l.rec.online)
                    .map(|l| l.deadline_ms)
                    .min()
            };
            for rec in &gone {
                let silent = now.saturating_sub(rec.last_seen_ms);
                self.event(
                    rec,
                    "agent_offline",
                    format!("no heartbeat for {silent} ms"),
                );
            }
            if !gone.is_empty() {
                self.dirty.notify_one();
            }
            let sleep = async {
                match next {
                    Some(at) => {
                        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.changed.notified() => {}
                _ = shutdown.wait_for(|v| *v) => break,
            }
        }
    }

    /// Writes soft state back in batches, at most once per `WRITE_BACK_DELAY`.
    pub async fn run_write_back(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = shutdown.wait_for(|v| *v) => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(WRITE_BACK_DELAY) => {}
                _ = shutdown.wait_for(|v| *v) => {}
            }
            if let Err(e) = self.write_back() {
                crate::daemon_log(format_args!("cannot write the agent registry back: {e}"));
            }
            if *shutdown.borrow() {
                break;
            }
        }
        let _ = self.write_back();
    }

    pub fn write_back(&self) -> Result<usize, StoreError> {
        let dirty: Vec<AgentRecord> = {
            let mut agents = self.lock();
            agents
                .values_mut()
                .filter(|l| l.dirty)
                .map(|l| {
                    l.dirty = false;
                    l.rec.clone()
                })
                .collect()
        };
        if dirty.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for rec in &dirty {
            batch.insert(rec.id.as_bytes(), codec::encode(rec)?);
        }
        self.tree.apply_batch(batch)?;
        self.store.flush()?;
        Ok(dirty.len())
    }
}

fn find_id(agents: &HashMap<String, Live>, id_or_name: &str) -> Option<String> {
    if agents.contains_key(id_or_name) {
        return Some(id_or_name.to_string());
    }
    agents
        .values()
        .find(|l| l.rec.name == id_or_name)
        .map(|l| l.rec.id.clone())
}

fn view(rec: &AgentRecord) -> AgentView {
    AgentView {
        id: rec.id.clone(),
        name: rec.name.clone(),
        hostname: rec.hostname.clone(),
        endpoint: rec.endpoint.clone(),
        version: rec.version.clone(),
        status: if rec.online { "online" } else { "offline" }.into(),
        last_seen_ms: rec.last_seen_ms,
        registered_ms: rec.registered_ms,
        processes: ProcessCounts::of(&rec.summary),
    }
}

fn validate(req: &RegisterRequest) -> Result<(), RegistryError> {
    let bad = |m: String| Err(RegistryError::Invalid(m));
    if req.id.is_empty()
        || req.id.len() > 64
        || !req
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return bad(format!("invalid agent id {:?}", req.id));
    }
    if crate::service::validate_name(&req.name).is_err() {
        return bad(format!(
            "invalid agent name {:?}: use letters, digits, '.', '_' or '-'",
            req.name
        ));
    }
    if Endpoint::parse_url(&req.endpoint, None).is_err() {
        return bad(format!(
            "invalid endpoint {:?}: it must be http://host:port",
            req.endpoint
        ));
    }
    if req.token.len() < 16 {
        return bad("the agent token must be at least 16 characters".into());
    }
    if req.hostname.len() > 255 || req.version.len() > 64 {
        return bad("hostname or version too long".into());
    }
    Ok(())
}

/// Calls an agent's API with its token; returns the status and body.
pub async fn call_agent(
    rec: &AgentRecord,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(hyper::StatusCode, bytes::Bytes), ClientError> {
    let client = Client::new(Endpoint::parse_url(&rec.endpoint, Some(rec.token.clone()))?);
    match tokio::time::timeout(AGENT_CALL_TIMEOUT, client.request(method, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Http(format!(
            "no answer within {AGENT_CALL_TIMEOUT:?}"
        ))),
    }
}

/// Opens an agent's streaming route with its token (the answer's headers
/// must come within `AGENT_CALL_TIMEOUT`; the stream itself has no limit).
pub async fn stream_agent(
    rec: &AgentRecord,
    path: &str,
) -> Result<hyper::body::Incoming, ClientError> {
    let client = Client::new(Endpoint::parse_url(&rec.endpoint, Some(rec.token.clone()))?);
    match tokio::time::timeout(AGENT_CALL_TIMEOUT, client.stream(path)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Http(format!(
            "no answer within {AGENT_CALL_TIMEOUT:?}"
        ))),
    }
}
