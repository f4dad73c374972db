//! The server side: the agent registry (persisted in the `agents` tree),
//! liveness (an agent is offline once its interval plus a grace passes
//! without a heartbeat), Nomad-style pacing (the interval grows with the
//! number of agents, with jitter), batched write-back of soft state, and the
//! calls to an agent's API that carry out the server's commands.
//!
//! Trust: the server assigns each agent its id (`ag-` and 16 hex digits, a
//! shape no name may take) and a credential, once, when the agent joins
//! with the join token. Registering again under an id or a name, a
//! heartbeat, or leaving needs that credential. Joins are capped
//! (`max_agents`) and rate-limited (`max_registrations_per_minute`). Removing
//! an agent revokes its credential and leaves a tombstone (in the `role`
//! tree), so it can only come back by joining again. Everything an agent
//! sends is bounded and free of control characters; the server calls an
//! agent only at `http://host:port` plus its own fixed paths, and reads at
//! most `AGENT_ANSWER_LIMIT` bytes within `AGENT_CALL_TIMEOUT`.
//!
//! Durability by kind: a registration and a deregistration are flushed
//! before the answer; `last_seen` and the process counts are soft state,
//! kept in memory and written back in batches. After a restart every known
//! agent gets a fresh grace period, so a server restart never flaps the fleet.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::client::{Client, ClientError, Endpoint};
use crate::config::{ConfigError, Home, Role, ServerSection};
use crate::model::{
    escape_control, AgentView, HeartbeatAnswer, ProcessCounts, ProcessView, RegisterRequest,
};
use crate::spec::{now_ms, Event, Subject};
use crate::store::records::Records;
use crate::store::{Store, StoreError};

/// How long soft state (last seen, summaries) may wait before it is written.
pub const WRITE_BACK_DELAY: Duration = Duration::from_secs(5);
/// The longest a call to an agent may take, its whole answer included.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer the server reads from an agent.
pub const AGENT_ANSWER_LIMIT: usize = 8 * 1024 * 1024;
/// How many removed agents' ids the server remembers (oldest forgotten first).
pub const TOMBSTONE_LIMIT: usize = 10_000;
/// Where the tombstones of removed agents live in the `role` tree.
const REVOKED_PREFIX: &str = "revoked/";

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
    /// What the agent shows to register again, heartbeat and leave; issued
    /// by this server; never printed or returned after the join.
    pub credential: String,
    pub registered_ms: u64,
    pub last_seen_ms: u64,
    pub online: bool,
    pub processes: ProcessCounts,
    /// The fingerprint of the agent API's certificate (https endpoints):
    /// the server trusts nothing else there. Empty for http.
    pub fingerprint: String,
}

/// A record as written before agents had credentials: read only to say
/// that its agent must join again.
#[derive(Deserialize)]
struct AgentRecordV1 {
    id: String,
    name: String,
}

struct Live {
    rec: AgentRecord,
    deadline_ms: u64,
    dirty: bool,
}

/// Who is asking, as the agent-facing routes established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Showed the credential of this agent (by id).
    Agent(String),
    /// Showed the join token.
    Join,
    /// Showed the admin token.
    Admin,
    /// No admin token is configured (the unix socket, or a loopback-only
    /// server with `secure.enabled = false`): full access, as everywhere there.
    Open,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("no agent with id or name {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("an agent named {0:?} is already registered: only that agent, with its own credential, can register under this name; to replace it, remove it first on the server (opm agent remove {0})")]
    NameTaken(String),
    #[error("{0}")]
    TooMany(String),
    /// This server keeps no history of its agents.
    #[error("no agent history here")]
    NoHistory,
    /// This daemon keeps no registry: it is an agent, or standalone.
    #[error("{}", not_a_server(*.0))]
    NotAServer(Role),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn not_a_server(role: Role) -> &'static str {
    match role {
        Role::Agent => "this opm is an agent: it manages only its own processes; agents are managed on the server",
        _ => "this opm is not a server (role = standalone): set role = \"server\" in config.toml and restart the daemon",
    }
}

/// Why a call from this server to an agent's API failed, as the
/// administrator should read it: which agent, and what went wrong.
/// An agent's own error answer (not a 401) is shown as the agent wrote it.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe_call(self))]
pub struct AgentCallError {
    pub name: String,
    pub endpoint: String,
    #[source]
    pub source: ClientError,
}

impl AgentCallError {
    fn new(rec: &AgentRecord, source: ClientError) -> AgentCallError {
        AgentCallError {
            name: rec.name.clone(),
            endpoint: rec.endpoint.clone(),
            source,
        }
    }

    /// The agent's API refused the server's own credentials.
    pub fn unauthorized(rec: &AgentRecord) -> AgentCallError {
        AgentCallError::new(
            rec,
            ClientError::Api {
                status: hyper::StatusCode::UNAUTHORIZED,
                message: String::new(),
            },
        )
    }
}

fn describe_call(e: &AgentCallError) -> String {
    let what = match &e.source {
        ClientError::Api { status, message } if *status != hyper::StatusCode::UNAUTHORIZED => {
            return message.clone()
        }
        ClientError::TooLarge(n) => format!("answered more than {n} bytes; the server reads no more"),
        ClientError::Pin(m, _) => format!(
            "was refused: its certificate fingerprint is {}, expected {} (the one it registered with); someone may be standing in the middle. If the agent's certificate changed on purpose, it registers the new one when its daemon restarts",
            m.got, m.expected
        ),
        ClientError::Api { status, .. } if *status == hyper::StatusCode::UNAUTHORIZED => {
            "refused the server's credentials (the agent's API token changed: connect the agent again)".to_string()
        }
        e => format!("did not answer: {e}"),
    };
    format!(
        "agent {} ({}) {what}",
        escape_control(&e.name),
        escape_control(&e.endpoint)
    )
}

/// Joins through the join token: a bucket of `per_minute` that refills
/// continuously.
struct JoinBucket {
    tokens: f64,
    at_ms: u64,
}

impl JoinBucket {
    fn take(&mut self, per_minute: u64, now: u64) -> bool {
        let cap = per_minute as f64;
        let refill = now.saturating_sub(self.at_ms) as f64 * cap / 60_000.0;
        self.tokens = (self.tokens + refill).min(cap);
        self.at_ms = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Everything behind the registry's one lock.
struct State {
    live: HashMap<String, Live>,
    /// Removed agents' ids, with when they were removed.
    revoked: HashMap<String, u64>,
    joins: JoinBucket,
}

impl State {
    /// The id of `id_or_name`: an id has a shape no name can take, so an id
    /// can never shadow another agent's name.
    fn find(&self, id_or_name: &str) -> Option<String> {
        if is_agent_id(id_or_name) {
            return self
                .live
                .contains_key(id_or_name)
                .then(|| id_or_name.to_string());
        }
        self.live
            .values()
            .find(|l| l.rec.name == id_or_name)
            .map(|l| l.rec.id.clone())
    }
}

pub struct Registry {
    tree: Records,
    role_tree: Records,
    store: Arc<Store>,
    config: ServerSection,
    state: Mutex<State>,
    /// Wakes the liveness task when a deadline moves.
    changed: Notify,
    /// Wakes the write-back task when soft state changes.
    dirty: Notify,
}

const REMOVED: &str = "this agent was removed from the server and its credential revoked: join again with the join token (opm agent connect URL --token JOIN)";

impl Registry {
    /// Loads the registry; every known agent gets a fresh grace period.
    pub fn load(store: Arc<Store>, config: ServerSection) -> Result<Registry, StoreError> {
        let tree = store.agent_records()?;
        let role_tree = store.role_records()?;
        let now = now_ms();
        let mut live = HashMap::new();
        let restart_grace = config.heartbeat_interval_ms + 2 * config.heartbeat_grace_ms;
        let mut forgotten = Vec::new();
        tree.scan("", |k, v| {
            let rec: AgentRecord = match v.decode() {
                Ok(rec) => rec,
                Err(e) => match v.decode::<AgentRecordV1>() {
                    Ok(old) => {
                        // Its agent had no credential: it cannot prove who it
                        // is, so it joins again (by itself, with its join token).
                        tracing::warn!(
                            agent = %old.name,
                            "agent {} ({}) was registered by an older opm without a credential: forgotten; it must join again",
                            old.name,
                            old.id
                        );
                        forgotten.push(k.to_string());
                        return Ok(());
                    }
                    Err(_) => return Err(e),
                },
            };
            live.insert(
                rec.id.clone(),
                Live {
                    rec,
                    deadline_ms: now + restart_grace,
                    dirty: false,
                },
            );
            Ok(())
        })?;
        for k in &forgotten {
            tree.remove(k)?;
        }
        let mut revoked = HashMap::new();
        role_tree.scan(REVOKED_PREFIX, |k, v| {
            revoked.insert(k[REVOKED_PREFIX.len()..].to_string(), v.decode::<u64>()?);
            Ok(())
        })?;
        let joins = JoinBucket {
            tokens: config.max_registrations_per_minute as f64,
            at_ms: now,
        };
        Ok(Registry {
            tree,
            role_tree,
            store,
            config,
            state: Mutex::new(State {
                live,
                revoked,
                joins,
            }),
            changed: Notify::new(),
            dirty: Notify::new(),
        })
    }

    /// The lock is never held across an `.await`; a poisoned lock means a
    /// panic mid-update of one entry, which is whole again at its next beat.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_or_recover()
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
            subject: Subject::Agent(rec.name.clone()),
            kind: kind.into(),
            detail,
        };
        // The log escapes the agent's text (its name, its detail) itself.
        if kind == "agent_offline" {
            tracing::warn!(agent = %rec.name, "{kind} {} ({}): {}", rec.name, rec.id, e.detail);
        } else {
            tracing::info!(agent = %rec.name, "{kind} {} ({}): {}", rec.name, rec.id, e.detail);
        }
        let _ = self.store.push_event(&e);
    }

    fn put(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        self.tree.put(&rec.id, rec)
    }

    /// The agent whose credential this is (compared in constant time).
    pub fn agent_by_credential(&self, credential: &str) -> Option<String> {
        let state = self.lock();
        let mut found = None;
        for l in state.live.values() {
            if !l.rec.credential.is_empty()
                && crate::token::constant_time_eq(
                    l.rec.credential.as_bytes(),
                    credential.as_bytes(),
                )
            {
                found = Some(l.rec.id.clone());
            }
        }
        found
    }

    /// A join (new agent, new id and credential) or an agent registering
    /// again with its credential; durable before it returns.
    pub fn register(
        &self,
        caller: &Caller,
        req: RegisterRequest,
    ) -> Result<HeartbeatAnswer, RegistryError> {
        validate(&req)?;
        let now = now_ms();
        let (rec, interval, issued) = {
            let mut state = self.lock();
            let (id, credential, registered_ms, issued) = match caller {
                Caller::Admin => {
                    return Err(RegistryError::Forbidden(
                        "the admin token never leaves the server: agents join with the join token ([server] join_token in the server's config.toml; `opm daemon token --join` prints it)".into(),
                    ))
                }
                Caller::Agent(id) => {
                    if req.id.as_ref().is_some_and(|x| x != id) {
                        return Err(RegistryError::Unauthorized(
                            "this credential belongs to another agent".into(),
                        ));
                    }
                    let live = state
                        .live
                        .get(id)
                        .ok_or_else(|| RegistryError::Unauthorized(REMOVED.into()))?;
                    (
                        id.clone(),
                        live.rec.credential.clone(),
                        live.rec.registered_ms,
                        false,
                    )
                }
                Caller::Join | Caller::Open => {
                    if let Some(x) = &req.id {
                        if state.live.contains_key(x) {
                            return Err(RegistryError::Unauthorized(format!(
                                "agent {x} is registered: registering again under its id needs its own credential (header agent-token)"
                            )));
                        }
                        if state.revoked.contains_key(x) {
                            return Err(RegistryError::Unauthorized(REMOVED.into()));
                        }
                    }
                    if state.find(&req.name).is_some() {
                        return Err(RegistryError::NameTaken(req.name));
                    }
                    if state.live.len() >= self.config.max_agents {
                        return Err(RegistryError::Forbidden(format!(
                            "this server already has {} agents, its limit ([server] max_agents): remove one (opm agent remove NAME) or raise the limit",
                            self.config.max_agents
                        )));
                    }
                    if !state
                        .joins
                        .take(self.config.max_registrations_per_minute, now)
                    {
                        return Err(RegistryError::TooMany(format!(
                            "too many agents joining: this server accepts {} per minute ([server] max_registrations_per_minute); try again shortly",
                            self.config.max_registrations_per_minute
                        )));
                    }
                    let random = |n| {
                        crate::token::random_hex(n).map_err(|e| {
                            RegistryError::Store(StoreError::Io("getrandom".into(), e))
                        })
                    };
                    (format!("ag-{}", random(8)?), random(32)?, now, true)
                }
            };
            if state.find(&req.name).is_some_and(|o| o != id) {
                return Err(RegistryError::NameTaken(req.name));
            }
            let rec = AgentRecord {
                id: id.clone(),
                name: req.name,
                hostname: req.hostname,
                endpoint: req.endpoint.trim_end_matches('/').to_string(),
                version: req.version,
                token: req.token,
                credential,
                registered_ms,
                last_seen_ms: now,
                online: true,
                processes: ProcessCounts::of(&req.processes),
                fingerprint: req
                    .fingerprint
                    .as_deref()
                    .and_then(|f| crate::tls::parse_fingerprint(f).ok())
                    .unwrap_or_default(),
            };
            let n = state.live.len() + usize::from(!state.live.contains_key(&id));
            let interval = self.interval_ms(n);
            state.live.insert(
                id,
                Live {
                    rec: rec.clone(),
                    deadline_ms: now + interval + self.config.heartbeat_grace_ms,
                    dirty: false,
                },
            );
            (rec, interval, issued)
        };
        self.put(&rec)?;
        self.store.flush()?;
        self.event(
            &rec,
            if issued {
                "agent_joined"
            } else {
                "agent_registered"
            },
            format!("{} at {}", rec.hostname, rec.endpoint),
        );
        self.changed.notify_one();
        Ok(HeartbeatAnswer {
            id: rec.id,
            heartbeat_interval_ms: interval,
            credential: issued.then_some(rec.credential),
        })
    }

    /// Records a heartbeat (soft state). Only the agent itself, with its
    /// credential, may beat; an unknown id is a 404 (the agent then joins
    /// again), a removed one a 401.
    pub fn heartbeat(
        &self,
        caller: &Caller,
        id: &str,
        processes: &[ProcessView],
    ) -> Result<HeartbeatAnswer, RegistryError> {
        let now = now_ms();
        let (came_back, interval) = {
            let mut state = self.lock();
            match caller {
                Caller::Agent(aid) if aid == id => {}
                Caller::Agent(_) => {
                    return Err(RegistryError::Unauthorized(
                        "this credential belongs to another agent".into(),
                    ))
                }
                _ if state.live.contains_key(id) => {
                    return Err(RegistryError::Unauthorized(
                        "a heartbeat needs the agent's own credential (header agent-token)".into(),
                    ))
                }
                _ if state.revoked.contains_key(id) => {
                    return Err(RegistryError::Unauthorized(REMOVED.into()))
                }
                _ => return Err(RegistryError::NotFound(id.to_string())),
            }
            let n = state.live.len();
            let interval = self.interval_ms(n);
            let grace = self.config.heartbeat_grace_ms;
            let live = state
                .live
                .get_mut(id)
                .ok_or_else(|| RegistryError::Unauthorized(REMOVED.into()))?;
            let came_back = !live.rec.online;
            live.rec.online = true;
            live.rec.last_seen_ms = now;
            live.rec.processes = ProcessCounts::of(processes);
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
            credential: None,
        })
    }

    /// Forgets an agent and revokes its credential; durable before it
    /// returns. An administrator removes any agent; an agent only itself.
    pub fn deregister(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<AgentRecord, RegistryError> {
        let now = now_ms();
        let (rec, dropped) = {
            let mut state = self.lock();
            let id = state.find(id_or_name);
            match (caller, &id) {
                (Caller::Admin | Caller::Open, _) => {}
                (Caller::Agent(aid), Some(id)) if aid == id => {}
                (Caller::Agent(_), _) => {
                    return Err(RegistryError::Unauthorized(
                        "an agent can only remove itself".into(),
                    ))
                }
                (Caller::Join, _) => {
                    return Err(RegistryError::Unauthorized(
                        "leaving needs the agent's own credential (header agent-token)".into(),
                    ))
                }
            }
            let id = id.ok_or_else(|| RegistryError::NotFound(id_or_name.to_string()))?;
            let rec = state
                .live
                .remove(&id)
                .map(|l| l.rec)
                .ok_or_else(|| RegistryError::NotFound(id_or_name.to_string()))?;
            state.revoked.insert(rec.id.clone(), now);
            let mut dropped = Vec::new();
            while state.revoked.len() > TOMBSTONE_LIMIT {
                let Some(oldest) = state
                    .revoked
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(id, _)| id.clone())
                else {
                    break;
                };
                state.revoked.remove(&oldest);
                dropped.push(oldest);
            }
            (rec, dropped)
        };
        self.tree.remove(&rec.id)?;
        self.role_tree
            .put(&format!("{REVOKED_PREFIX}{}", rec.id), &now)?;
        for id in dropped {
            self.role_tree.remove(&format!("{REVOKED_PREFIX}{id}"))?;
        }
        self.store.flush()?;
        self.event(&rec, "agent_removed", "credential revoked".into());
        Ok(rec)
    }

    /// Every agent, by name.
    pub fn list(&self) -> Vec<AgentView> {
        let state = self.lock();
        let mut out: Vec<AgentView> = state.live.values().map(|l| view(&l.rec)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn get(&self, id_or_name: &str) -> Option<AgentRecord> {
        let state = self.lock();
        state
            .find(id_or_name)
            .and_then(|id| state.live.get(&id).map(|l| l.rec.clone()))
    }

    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        let online = state.live.values().filter(|l| l.rec.online).count();
        (online, state.live.len() - online)
    }

    /// Marks agents offline when their deadline passes; sleeps until the
    /// earliest deadline or a change.
    pub async fn run_liveness(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let now = now_ms();
            let mut gone = Vec::new();
            let next = {
                let mut state = self.lock();
                for live in state.live.values_mut() {
                    if live.rec.online && live.deadline_ms <= now {
                        live.rec.online = false;
                        live.dirty = true;
                        gone.push(live.rec.clone());
                    }
                }
                state
                    .live
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
                tracing::error!("cannot write the agent registry back: {e}");
            }
            if *shutdown.borrow() {
                break;
            }
        }
        let _ = self.write_back();
    }

    pub fn write_back(&self) -> Result<usize, StoreError> {
        let dirty: Vec<AgentRecord> = {
            let mut state = self.lock();
            state
                .live
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
        self.tree
            .put_all(dirty.iter().map(|rec| (rec.id.as_str(), rec)))?;
        self.store.flush()?;
        Ok(dirty.len())
    }
}

/// Whether `s` has the shape of a server-assigned agent id: `ag-` and 16
/// lowercase hex digits. No agent name may take this shape.
pub fn is_agent_id(s: &str) -> bool {
    s.len() == 19
        && s.starts_with("ag-")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
        processes: rec.processes,
    }
}

/// An agent's endpoint: `http://host:port` or `https://host:port`, nothing
/// more (no path, query, user info or fragment), so the server can only
/// ever call its own fixed paths on it. Returns the host, the port and
/// whether it is https.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16, bool), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid endpoint {:?}: {why}; it must be https://host:port or http://host:port",
            escape_control(endpoint)
        ))
    };
    if endpoint.len() > 300 {
        return bad("too long");
    }
    let (rest, tls) = if let Some(r) = endpoint.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = endpoint.strip_prefix("http://") {
        (r, false)
    } else {
        return bad("not an http:// or https:// URL");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return bad("a path, query or fragment is not allowed");
    }
    if rest.contains('@') {
        return bad("user info is not allowed");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.starts_with('[')) => (h, p),
        _ => return bad("no :port"),
    };
    let Ok(port) = port.parse::<u16>() else {
        return bad("bad port");
    };
    if port == 0 {
        return bad("bad port");
    }
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("bad IPv6 address");
        }
        v6.to_string()
    } else {
        let ok = host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !host.starts_with(['.', '-']);
        if !ok {
            return bad("bad host name");
        }
        host.to_string()
    };
    Ok((host, port, tls))
}

/// Text from an agent that ends up in tables and logs: bounded, and with
/// no control characters.
fn clean_text(what: &str, text: &str, max: usize) -> Result<(), RegistryError> {
    if text.len() > max {
        return Err(RegistryError::Invalid(format!(
            "the {what} is longer than {max} bytes"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(RegistryError::Invalid(format!(
            "the {what} {:?} contains control characters",
            escape_control(text)
        )));
    }
    Ok(())
}

fn validate(req: &RegisterRequest) -> Result<(), RegistryError> {
    let bad = |m: String| Err(RegistryError::Invalid(m));
    if let Some(id) = &req.id {
        if id.is_empty()
            || id.len() > 64
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return bad(format!("invalid agent id {:?}", escape_control(id)));
        }
    }
    clean_text("name", &req.name, 64)?;
    if crate::spec::validate_name(&req.name).is_err() {
        return bad(format!(
            "invalid agent name {:?}: use 1 to 64 letters, digits, '.', '_' or '-'",
            req.name
        ));
    }
    if is_agent_id(&req.name) {
        return bad(format!(
            "invalid agent name {:?}: it has the shape of an agent id",
            req.name
        ));
    }
    clean_text("hostname", &req.hostname, 255)?;
    clean_text("version", &req.version, 64)?;
    let (_, _, https) = parse_endpoint(&req.endpoint).map_err(RegistryError::Invalid)?;
    match (&req.fingerprint, https) {
        (None, true) => {
            return bad(
                "an https endpoint needs the fingerprint of the agent's certificate (field fingerprint)"
                    .into(),
            )
        }
        (Some(_), false) => {
            return bad("a certificate fingerprint goes with an https endpoint only".into())
        }
        (Some(fp), true) => {
            crate::tls::parse_fingerprint(fp).map_err(RegistryError::Invalid)?;
        }
        (None, false) => {}
    }
    if req.token.len() < 16 || req.token.len() > 256 {
        return bad("the agent token must be 16 to 256 characters".into());
    }
    if !req.token.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("the agent token must be visible ASCII characters".into());
    }
    Ok(())
}

/// A client for an agent's API, at its validated endpoint, with its token,
/// reading at most `AGENT_ANSWER_LIMIT` bytes of an answer.
fn agent_client(rec: &AgentRecord) -> Result<Client, ClientError> {
    let (host, port, https) = parse_endpoint(&rec.endpoint).map_err(ClientError::BadUrl)?;
    let tls = match (https, rec.fingerprint.is_empty()) {
        (false, _) => None,
        (true, false) => Some(crate::client::Tls {
            fingerprint: Some(rec.fingerprint.clone()),
        }),
        (true, true) => {
            return Err(ClientError::Tls(format!(
                "no certificate fingerprint is known for {}: the agent must register again",
                rec.endpoint
            )))
        }
    };
    Ok(Client::new(Endpoint::Tcp {
        host,
        port,
        prefix: String::new(),
        token: Some(rec.token.clone()),
        tls,
    })
    .with_body_limit(AGENT_ANSWER_LIMIT))
}

/// Gives a server a join token when it has none: 32 random bytes, written
/// to `[server] join_token` of `config.toml` (comments kept, mode 0600).
pub fn ensure_join_token(
    home: &Home,
    mut config: crate::config::Config,
) -> Result<crate::config::Config, ConfigError> {
    if config.role != Role::Server || !config.server.join_token.is_empty() {
        return Ok(config);
    }
    let token = crate::token::random_hex(32).map_err(|e| ConfigError::Io("getrandom".into(), e))?;
    let path = home.config();
    config = crate::config::set_join_token(home, &token)?;
    tracing::info!(
        "generated a join token for agents: [server] join_token in {}",
        path.display()
    );
    Ok(config)
}

/// Calls an agent's API with its token; returns the status and body (at
/// most `AGENT_ANSWER_LIMIT` bytes, all within `AGENT_CALL_TIMEOUT`).
pub async fn call_agent(
    rec: &AgentRecord,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(hyper::StatusCode, bytes::Bytes), AgentCallError> {
    let client = agent_client(rec).map_err(|e| AgentCallError::new(rec, e))?;
    match tokio::time::timeout(AGENT_CALL_TIMEOUT, client.request(method, path, body)).await {
        Ok(r) => r.map_err(|e| AgentCallError::new(rec, e)),
        Err(_) => Err(AgentCallError::new(
            rec,
            ClientError::TimedOut(AGENT_CALL_TIMEOUT),
        )),
    }
}

/// Opens an agent's streaming route with its token (the answer's headers
/// must come within `AGENT_CALL_TIMEOUT`; the stream itself has no limit).
pub async fn stream_agent(
    rec: &AgentRecord,
    path: &str,
) -> Result<hyper::body::Incoming, AgentCallError> {
    let client = agent_client(rec).map_err(|e| AgentCallError::new(rec, e))?;
    match tokio::time::timeout(AGENT_CALL_TIMEOUT, client.stream(path)).await {
        Ok(r) => r.map_err(|e| AgentCallError::new(rec, e)),
        Err(_) => Err(AgentCallError::new(
            rec,
            ClientError::TimedOut(AGENT_CALL_TIMEOUT),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_http_host_port_and_nothing_more() {
        assert_eq!(
            parse_endpoint("http://10.0.0.5:9877"),
            Ok(("10.0.0.5".into(), 9877, false))
        );
        assert_eq!(
            parse_endpoint("https://agent-1.lan:9877/"),
            Ok(("agent-1.lan".into(), 9877, true))
        );
        assert_eq!(
            parse_endpoint("http://[::1]:9877"),
            Ok(("::1".into(), 9877, false))
        );
        for bad in [
            "http://h:1/path",
            "http://h:1?q",
            "http://h:1#f",
            "http://u:p@h:1",
            "http://u@h:1",
            "http://h",
            "http://h:0",
            "http://h:99999",
            "http://:1",
            "https://h:1/p",
            "ftp://h:1",
            "http://h h:1",
            "http://h\n:1",
            "http://[nope]:1",
            "http://::1:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn ids_have_a_shape_no_name_can_take() {
        assert!(is_agent_id("ag-0123456789abcdef"));
        assert!(!is_agent_id("ag-0123456789ABCDEF"));
        assert!(!is_agent_id("0123456789abcdef"));
        assert!(!is_agent_id("ag-0123"));
        assert!(!is_agent_id("web-1"));
    }

    #[test]
    fn the_join_bucket_allows_a_minutes_worth_then_refills_slowly() {
        let mut b = JoinBucket {
            tokens: 6.0,
            at_ms: 0,
        };
        assert_eq!((0..10).filter(|_| b.take(6, 0)).count(), 6);
        assert!(!b.take(6, 5_000), "one more only after 10 s");
        assert!(b.take(6, 10_000));
        assert!(!b.take(6, 10_001));
        // Long idle refills only up to the burst.
        assert_eq!((0..10).filter(|_| b.take(6, 10_000_000)).count(), 6);
    }

    #[test]
    fn a_record_from_before_credentials_is_forgotten_at_load() {
        #[derive(Serialize)]
        struct V1 {
            id: String,
            name: String,
            hostname: String,
            endpoint: String,
            version: String,
            token: String,
            registered_ms: u64,
            last_seen_ms: u64,
            online: bool,
            summary: Vec<ProcessView>,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let old = V1 {
            id: "0123456789abcdef".into(),
            name: "old".into(),
            hostname: "h".into(),
            endpoint: "http://127.0.0.1:9".into(),
            version: "0".into(),
            token: "t".repeat(16),
            registered_ms: 1_700_000_000_000,
            last_seen_ms: 1_700_000_000_000,
            online: true,
            summary: Vec::new(),
        };
        let tree = store.agent_records().expect("tree");
        tree.put(&old.id, &old).expect("insert");
        let reg = Registry::load(store.clone(), ServerSection::default()).expect("load");
        assert!(reg.list().is_empty());
        assert!(tree.is_empty(), "the old record is gone from the tree");
    }

    #[test]
    fn a_join_issues_an_id_and_credential_that_alone_let_the_agent_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let reg = Registry::load(store, ServerSection::default()).expect("load");
        let req = |id: Option<&str>, name: &str| RegisterRequest {
            id: id.map(String::from),
            name: name.into(),
            hostname: "h".into(),
            endpoint: "http://127.0.0.1:9".into(),
            version: "1".into(),
            token: "agent-api-token-0123".into(),
            processes: Vec::new(),
            fingerprint: None,
        };
        let a = reg.register(&Caller::Join, req(None, "a")).expect("join");
        let credential = a.credential.clone().expect("a credential");
        assert!(is_agent_id(&a.id));
        assert_eq!(reg.agent_by_credential(&credential), Some(a.id.clone()));
        assert_eq!(reg.agent_by_credential("nope"), None);
        let again = reg
            .register(&Caller::Agent(a.id.clone()), req(Some(&a.id), "a"))
            .expect("again");
        assert_eq!((again.id.as_str(), again.credential), (a.id.as_str(), None));
        assert!(matches!(
            reg.register(&Caller::Join, req(Some(&a.id), "x")),
            Err(RegistryError::Unauthorized(_))
        ));
        assert!(matches!(
            reg.register(&Caller::Join, req(None, "a")),
            Err(RegistryError::NameTaken(_))
        ));
        assert!(matches!(
            reg.register(&Caller::Admin, req(None, "b")),
            Err(RegistryError::Forbidden(_))
        ));
        reg.deregister(&Caller::Admin, "a").expect("remove");
        assert!(matches!(
            reg.heartbeat(&Caller::Join, &a.id, &[]),
            Err(RegistryError::Unauthorized(_))
        ));
        assert!(matches!(
            reg.heartbeat(&Caller::Join, "ag-0000000000000000", &[]),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn the_interval_grows_with_the_fleet_and_carries_up_to_a_fifth_of_jitter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let config = ServerSection {
            heartbeat_interval_ms: 1000,
            max_heartbeats_per_second: 100,
            ..ServerSection::default()
        };
        let reg = Registry::load(store, config).expect("load");
        // Up to 100 agents beat at the base interval; 1000 would beat 1000
        // times a second at it, so each is paced to 10 s.
        for (agents, base) in [(1, 1000), (100, 1000), (1000, 10_000), (5000, 50_000)] {
            let seen: Vec<u64> = (0..200).map(|_| reg.interval_ms(agents)).collect();
            for &ms in &seen {
                assert!(
                    (base..=base + base / 5).contains(&ms),
                    "{agents} agents: {ms} ms is not within {base} + 20 %"
                );
            }
            let distinct: std::collections::BTreeSet<u64> = seen.iter().copied().collect();
            assert!(
                distinct.len() > 20,
                "{agents} agents: the jitter spreads the beats, got {distinct:?}"
            );
        }
    }

    #[test]
    fn heartbeats_are_written_back_in_one_batch_not_one_write_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("store"));
        let reg = Registry::load(store.clone(), ServerSection::default()).expect("load");
        let ids: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let req = RegisterRequest {
                    id: None,
                    name: (*name).into(),
                    hostname: "h".into(),
                    endpoint: "http://127.0.0.1:9".into(),
                    version: "1".into(),
                    token: "agent-api-token-0123".into(),
                    processes: Vec::new(),
                    fingerprint: None,
                };
                reg.register(&Caller::Join, req).expect("join").id
            })
            .collect();
        reg.write_back().expect("settle the registrations");
        let tree = store.agent_records().expect("tree");
        let stored = |id: &str| -> AgentRecord { tree.get(id).expect("read").expect("stored") };
        let before: Vec<u64> = ids.iter().map(|id| stored(id).last_seen_ms).collect();
        std::thread::sleep(Duration::from_millis(5));
        for id in &ids {
            reg.heartbeat(&Caller::Agent(id.clone()), id, &[])
                .expect("beat");
        }
        let unwritten: Vec<u64> = ids.iter().map(|id| stored(id).last_seen_ms).collect();
        assert_eq!(unwritten, before, "a heartbeat alone writes nothing");
        assert!(reg
            .list()
            .iter()
            .all(|a| before.iter().all(|b| a.last_seen_ms > *b)));
        assert_eq!(
            reg.write_back().expect("write back"),
            3,
            "one batch of three"
        );
        for (id, b) in ids.iter().zip(&before) {
            assert!(stored(id).last_seen_ms > *b, "{id} written back");
        }
        assert_eq!(reg.write_back().expect("again"), 0, "nothing left dirty");
    }
}
