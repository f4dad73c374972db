//! The role system: `standalone` (no server-agent relationship), `server`
//! (keeps a registry of agents, judges their liveness, and controls their
//! processes through their APIs) and `agent` (registers with a server,
//! heartbeats, and exposes its API to it). `server.rs` and `agent.rs` hold
//! each side; this file holds what both use. The room depends downward
//! only: joining and leaving a server, which also move the TCP API, are
//! driven from `api/link.rs`.

pub mod agent;
pub mod history;
pub mod server;

use crate::sync::{LockExt, RwLockExt};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Role;
use crate::model::{AgentStatus, RoleReport};

/// The role in force and what it runs: the agent registry on a server, the
/// link to a server on a connected agent. The API holds it beside the
/// service; the service never sees it.
pub struct RoleState {
    role: RwLock<Role>,
    /// The agent registry, on a server.
    pub registry: Option<Arc<server::Registry>>,
    /// The link to a server, on a connected agent.
    pub agent: Mutex<Option<agent::AgentRuntime>>,
    /// Each agent's totals over time, on a server.
    pub agent_history: Option<history::AgentHistory>,
}

impl RoleState {
    pub fn new(
        role: Role,
        registry: Option<Arc<server::Registry>>,
        history: &crate::config::HistorySection,
    ) -> RoleState {
        RoleState {
            role: RwLock::new(role),
            agent_history: registry.as_ref().map(|_| {
                history::AgentHistory::new(history.agent_interval_ms, history.agent_samples)
            }),
            registry,
            agent: Mutex::new(None),
        }
    }

    /// Samples every agent's totals each `agent_interval_ms`, on a server,
    /// until `shutdown`.
    pub async fn sample_agents(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let (Some(registry), Some(history)) = (&self.registry, &self.agent_history) else {
            return;
        };
        let every = std::time::Duration::from_millis(history.interval_ms());
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => history.record(crate::spec::now_ms(), &registry.list()),
                _ = shutdown.changed() => return,
            }
        }
    }

    pub fn role(&self) -> Role {
        *self.role.read_or_recover()
    }

    /// An agent's connect and disconnect change the role in force.
    pub fn set_role(&self, role: Role) {
        *self.role.write_or_recover() = role;
    }

    /// The truth about this daemon's link to a server.
    pub fn agent_status(&self) -> AgentStatus {
        let role = self.role();
        match &*self.agent.lock_or_recover() {
            Some(rt) => rt.status(role.as_str()),
            None => AgentStatus {
                role: role.as_str().to_string(),
                server: None,
                agent_id: None,
                name: None,
                endpoint: None,
                connected: false,
                last_heartbeat_ms: None,
                last_error: None,
                heartbeat_interval_ms: None,
                connected_since_ms: None,
                refused: false,
                server_fingerprint: None,
            },
        }
    }

    /// The role's part of the health report.
    pub fn report(&self) -> RoleReport {
        RoleReport {
            role: self.role().as_str().to_string(),
            agents: self.registry.as_ref().map(|r| r.counts()),
            server: self.agent_status().server,
            connected: self.agent_status().connected,
        }
    }
}

/// A cheap random number for jitter (not for secrets).
pub fn jitter_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = crate::spec::now_ms() ^ ((std::process::id() as u64) << 32) | 1;
    }
    // xorshift64
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}
