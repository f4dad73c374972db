//! The daemon's operations, one method per thing a client can ask, split by
//! operation: `views` (list, info, env, dump, metrics), `create`, `action`
//! (start, stop, restart, reload, remove, flush), `logs` and `health`. Each
//! validates input, writes the store (flushed before it answers), wakes the
//! reconciler and waits for the outcome it asked for. The decisions that
//! need no I/O (what an action does to desired state, when a start has
//! settled) live in `reconcile::plan` beside their unit tests. The API maps
//! these methods to routes; this layer knows nothing of HTTP nor of roles.

mod action;
mod apply;
mod create;
mod events;
mod health;
mod history;
mod instances;
mod logs;
mod reload;
mod views;

pub use create::with_interpreter;
pub use events::{EventFilter, DEFAULT_EVENTS, MAX_EVENTS};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, Home};
use crate::definition::ProcessDef;
use crate::model::{
    ActionKind, ActionRequest, ActionResponse, CreateBody, DaemonMetrics, Dump, EnvResponse,
    EventView, ExitView, Health, LogsResponse, Metrics, ProcessInfo, ProcessView, RoleReport,
    Status, Target,
};
use crate::reconcile::plan::{
    action_settled, on_user_action, restart_due_ms, start_settled, status,
};
use crate::reconcile::{Entry, Handle};
use crate::spec::{derive_name, now_ms, validate_name, Desired, Phase, Spec};
use crate::store::{NewSpec, Store, StoreError};
use crate::supervise::{self, proc, spawn};

/// How old a CPU and memory sample may be before a read asks for a new
/// pass over /proc (taken in the background; the read answers at once).
pub const USAGE_TTL: Duration = Duration::from_millis(1000);
/// The longest a create or start waits for the spawn before answering.
pub const SPAWN_WAIT: Duration = Duration::from_secs(3);
/// Added to a process's kill timeout when a stop waits for it.
pub const STOP_WAIT_SLACK: Duration = Duration::from_secs(3);
/// The most lines `logs` returns.
pub const MAX_LOG_LINES: usize = 10_000;
/// How long a create or start of a shell command line waits for the shell
/// to exit at once (127: command not found, 126: not executable), so that
/// the answer can say so.
pub const SHELL_SETTLE: Duration = Duration::from_millis(250);

/// Why the service refused or failed a request. Which HTTP status each
/// variant becomes is decided in `api::errors`, and there only.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request itself is wrong (a field, a combination of fields).
    #[error("{0}")]
    BadRequest(String),
    /// It names a process that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It clashes with what exists (a name taken).
    #[error("{0}")]
    Conflict(String),
    /// A file of the daemon's own (a log file) could not be read or
    /// written: the daemon's trouble, not the caller's.
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the TCP API is or is not serving.
#[derive(Debug, Clone, Default)]
pub struct ApiState {
    pub address: Option<String>,
    pub error: Option<String>,
    /// The listener takes no token (`enabled = false`, on loopback only).
    pub tokenless: bool,
    /// The fingerprint of the certificate the listener serves TLS with;
    /// `None` when it speaks plain HTTP.
    pub tls_fingerprint: Option<String>,
}

/// CPU and memory of every process group, from one pass over /proc.
#[derive(Default)]
struct UsageSnapshot {
    at: Option<Instant>,
    values: HashMap<u32, proc::Usage>,
}

pub struct Service {
    pub store: Arc<Store>,
    pub rec: Handle,
    pub home: Home,
    pub config: Config,
    pub api: Mutex<ApiState>,
    /// Whether the web UI is served (`ui = true` or `--webui`).
    pub ui: bool,
    started: Instant,
    /// What reads show: the last pass over /proc, swapped whole.
    usage: Mutex<Arc<UsageSnapshot>>,
    /// The one taking passes (its previous tick counts give CPU).
    sampler: Mutex<proc::Sampler>,
    /// Asks the daemon's sampling task for a pass, off the request path.
    pub usage_wanted: tokio::sync::Notify,
    /// CPU, memory and restarts of every process over the last samples.
    history: Mutex<crate::history::History<u64>>,
    /// The time of the newest history sample, for whoever refreshes at its pace.
    pub ticks: tokio::sync::watch::Sender<u64>,
    /// What the log rotation check keeps between its passes.
    log_checks: Mutex<logs::LogChecks>,
}

impl Service {
    pub fn new(store: Arc<Store>, rec: Handle, home: Home, config: Config) -> Service {
        let history = Mutex::new(crate::history::History::new(config.daemon.history.samples));
        Service {
            store,
            rec,
            home,
            ui: false,
            config,
            api: Mutex::new(ApiState::default()),
            started: Instant::now(),
            usage: Mutex::default(),
            sampler: Mutex::new(proc::Sampler::new()),
            usage_wanted: tokio::sync::Notify::new(),
            history,
            ticks: tokio::sync::watch::channel(0).0,
            log_checks: Mutex::default(),
        }
    }

    /// Waits until every `(id, desired, generation)` of `starts` has
    /// settled (`start_settled`), every id of `gone` has left, and `also`
    /// holds: at most the spawn wait plus the longest `kill_timeout` among
    /// `changed` (their old runs are stopped first).
    pub(super) async fn wait_settled(
        &self,
        starts: &[(u64, Desired, u64)],
        gone: &[u64],
        changed: &[Spec],
        also: impl Fn(&BTreeMap<u64, Entry>) -> bool,
    ) {
        let longest_kill = changed
            .iter()
            .map(|s| s.def.kill_timeout_ms())
            .max()
            .unwrap_or(0);
        self.rec
            .wait_for(
                SPAWN_WAIT + Duration::from_millis(longest_kill) + STOP_WAIT_SLACK,
                |procs| {
                    starts.iter().all(|(id, desired, generation)| {
                        procs
                            .get(id)
                            .is_some_and(|e| start_settled(&e.spec, &e.obs, *desired, *generation))
                    }) && gone.iter().all(|id| !procs.contains_key(id))
                        && also(procs)
                },
            )
            .await;
    }

    /// Every process's definition as the executor holds it (shared, not
    /// decoded again).
    pub(super) fn shared_specs(&self) -> Vec<Arc<Spec>> {
        self.rec
            .shared
            .read()
            .values()
            .map(|e| e.spec.clone())
            .collect()
    }

    pub(super) fn entries(&self, ids: Option<&[u64]>) -> Vec<Entry> {
        let procs = self.rec.shared.read();
        match ids {
            None => procs.values().cloned().collect(),
            Some(ids) => ids.iter().filter_map(|id| procs.get(id).cloned()).collect(),
        }
    }

    /// Ids named by the targets, in order, without repeats.
    pub fn resolve(&self, targets: &[Target]) -> Result<Vec<u64>, ServiceError> {
        let mut ids = Vec::new();
        for t in targets {
            let found: Vec<u64> = if t.is_all() {
                self.rec.shared.read().keys().copied().collect()
            } else {
                // A group's name names every copy; an id, one.
                let id = self.resolve_one(t)?;
                match t {
                    Target::Name(n) if n.parse::<u64>().is_err() && !n.contains(':') => {
                        self.group_of(id)?
                    }
                    _ => vec![id],
                }
            };
            for id in found {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    pub(super) fn resolve_one(&self, t: &Target) -> Result<u64, ServiceError> {
        let found = match t {
            Target::Id(id) => self.store.get(*id)?.map(|s| s.id),
            Target::Name(name) => match name.parse::<u64>() {
                Ok(id) => self.store.get(id)?.map(|s| s.id),
                Err(_) => match name.rsplit_once(':') {
                    // `api:2`: copy 2 of the group `api`.
                    Some((group, k)) => self.copy_of(group, k)?,
                    None => self.store.id_by_name(name)?,
                },
            },
        };
        found.ok_or_else(|| ServiceError::NotFound(format!("no process with id or name {t}")))
    }
}

/// Runs a store mutation on tokio's blocking pool: its commit waits for
/// fsyncs, and concurrent requests must wait there together (the store's
/// group commit) instead of holding the runtime's two worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io(
            "the store's writer thread".into(),
            std::io::Error::other(e.to_string()),
        ))
    })
}
