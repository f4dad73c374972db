//! The daemon's operations, one method per thing a client can ask: list,
//! info, create, act, logs, env, dump, health. It validates input, writes the
//! store (flushed before it answers), wakes the reconciler and waits for the
//! outcome it asked for. The API maps these methods to routes; this layer
//! knows nothing of HTTP.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::RwLock;

use crate::config::{Config, Home, Role};
use crate::model::{
    ActionKind, ActionRequest, ActionResponse, AgentStatus, CreateBody, CreateRequest,
    DaemonMetrics, Dump, EnvResponse, EventView, ExitView, Health, LogsResponse, Metrics,
    ProcessInfo, ProcessView, SavedProcess, Status, Target,
};
use crate::reconcile::plan::{restart_due_ms, status};
use crate::reconcile::{Entry, Handle};
use crate::role::agent::AgentRuntime;
use crate::role::server::Registry;
use crate::spec::{
    derive_name, now_ms, validate_name, Desired, Phase, RestartPolicy, Spec,
    DEFAULT_KILL_TIMEOUT_MS,
};
use crate::store::{NewSpec, Store, StoreError};
use crate::supervise::{logs, proc, spawn};

/// How long CPU and memory samples are reused by `list`.
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

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
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

struct UsageCache {
    at: Option<Instant>,
    values: HashMap<u32, proc::Usage>,
    sampler: proc::Sampler,
}

pub struct Service {
    pub store: Arc<Store>,
    pub rec: Handle,
    pub home: Home,
    pub config: Config,
    pub api: Mutex<ApiState>,
    /// Whether the web UI is served (`ui = true` or `--webui`).
    pub ui: bool,
    /// The role in force; an agent's connect and disconnect change it.
    role: RwLock<Role>,
    /// The agent registry, on a server.
    pub registry: Option<Arc<Registry>>,
    /// The link to a server, on a connected agent.
    pub agent: Mutex<Option<AgentRuntime>>,
    started: Instant,
    usage: Mutex<UsageCache>,
}

impl Service {
    pub fn new(
        store: Arc<Store>,
        rec: Handle,
        home: Home,
        config: Config,
        registry: Option<Arc<Registry>>,
    ) -> Service {
        Service {
            store,
            rec,
            home,
            role: RwLock::new(config.role),
            ui: false,
            config,
            registry,
            agent: Mutex::new(None),
            api: Mutex::new(ApiState::default()),
            started: Instant::now(),
            usage: Mutex::new(UsageCache {
                at: None,
                values: HashMap::new(),
                sampler: proc::Sampler::new(),
            }),
        }
    }

    /// CPU and memory per process group. `refresh` allows one scan of
    /// /proc (for every running process, so `list` and `info` share it) when
    /// the cached sample is older than `USAGE_TTL` or misses one of
    /// `entries`; answers to mutations pass `false` and show what is cached
    /// (nothing yet for a run that just started), so a start never pays for
    /// a scan of the whole machine.
    fn usage(&self, entries: &[Entry], refresh: bool) -> HashMap<u32, proc::Usage> {
        let mut cache = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = cache.at.is_some_and(|t| t.elapsed() < USAGE_TTL);
        let covered = entries
            .iter()
            .filter_map(|e| e.obs.pid())
            .all(|p| cache.values.contains_key(&p));
        if refresh && !(fresh && covered) {
            let pgids: Vec<u32> = self
                .rec
                .shared
                .read()
                .values()
                .filter_map(|e| e.obs.pid())
                .collect();
            cache.values = cache.sampler.sample_groups(&pgids);
            cache.at = Some(Instant::now());
        }
        entries
            .iter()
            .filter_map(|e| e.obs.pid())
            .filter_map(|p| cache.values.get(&p).map(|u| (p, *u)))
            .collect()
    }

    fn view(entry: &Entry, usage: &HashMap<u32, proc::Usage>, now: u64) -> ProcessView {
        let spec = &entry.spec;
        let obs = &entry.obs;
        let pid = obs.pid();
        let uptime_ms = match obs.phase {
            Phase::Running { since_ms, .. } => now.saturating_sub(since_ms),
            _ => 0,
        };
        let u = pid.and_then(|p| usage.get(&p)).copied().unwrap_or_default();
        ProcessView {
            id: spec.id,
            name: spec.name.clone(),
            pid,
            status: status(spec, obs),
            restarts: obs.restarts(),
            uptime_ms,
            cpu: (u.cpu_percent * 10.0).round() / 10.0,
            memory: u.memory_bytes,
            command: spec.command.clone(),
            cwd: spec.cwd.clone(),
            autorestart: spec.restart.autorestart,
            desired: spec.desired.as_str().to_string(),
            error: obs.last_error.clone(),
        }
    }

    fn entries(&self, ids: Option<&[u64]>) -> Vec<Entry> {
        let procs = self.rec.shared.read();
        match ids {
            None => procs.values().cloned().collect(),
            Some(ids) => ids.iter().filter_map(|id| procs.get(id).cloned()).collect(),
        }
    }

    fn views(&self, ids: Option<&[u64]>, refresh: bool) -> Vec<ProcessView> {
        let entries = self.entries(ids);
        let usage = self.usage(&entries, refresh);
        let now = now_ms();
        entries
            .iter()
            .map(|e| Service::view(e, &usage, now))
            .collect()
    }

    pub fn list(&self) -> Vec<ProcessView> {
        self.views(None, true)
    }

    /// Ids named by the targets, in order, without repeats.
    pub fn resolve(&self, targets: &[Target]) -> Result<Vec<u64>, ServiceError> {
        let mut ids = Vec::new();
        for t in targets {
            let found: Vec<u64> = if t.is_all() {
                self.rec.shared.read().keys().copied().collect()
            } else {
                vec![self.resolve_one(t)?]
            };
            for id in found {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    fn resolve_one(&self, t: &Target) -> Result<u64, ServiceError> {
        let found = match t {
            Target::Id(id) => self.store.get(*id)?.map(|s| s.id),
            Target::Name(name) => match name.parse::<u64>() {
                Ok(id) => self.store.get(id)?.map(|s| s.id),
                Err(_) => self.store.id_by_name(name)?,
            },
        };
        found.ok_or_else(|| ServiceError::NotFound(format!("no process with id or name {t}")))
    }

    pub fn info(&self, target: &Target) -> Result<ProcessInfo, ServiceError> {
        let id = self.resolve_one(target)?;
        let entry = self.entries(Some(&[id])).pop().ok_or_else(|| {
            ServiceError::NotFound(format!("no process with id or name {target}"))
        })?;
        let usage = self.usage(std::slice::from_ref(&entry), true);
        let view = Service::view(&entry, &usage, now_ms());
        let spec = &entry.spec;
        let obs = &entry.obs;
        let events = self
            .store
            .events(Some(id), 20)?
            .into_iter()
            .map(|e| EventView {
                at_ms: e.at_ms,
                id: e.id,
                name: e.name,
                kind: e.kind,
                detail: e.detail,
            })
            .collect();
        Ok(ProcessInfo {
            view,
            created_ms: spec.created_ms,
            max_restarts: spec.restart.max_restarts,
            restart_delay_ms: spec.restart.restart_delay_ms,
            min_uptime_ms: spec.restart.min_uptime_ms,
            kill_timeout_ms: spec.kill_timeout_ms,
            max_memory: spec.max_memory,
            watch: spec.watch.clone(),
            env_keys: spec.env.iter().map(|(k, _)| k.clone()).collect(),
            out_log: self.home.out_log(&spec.name, id).display().to_string(),
            err_log: self.home.err_log(&spec.name, id).display().to_string(),
            last_exit: obs.last_exit.as_ref().map(|e| ExitView {
                code: e.code,
                signal: e.signal,
                at_ms: e.at_ms,
                description: e.describe(),
            }),
            errored_reason: match &obs.phase {
                Phase::Errored { reason, .. } => Some(reason.clone()),
                _ => None,
            },
            restart_at_ms: restart_due_ms(spec, obs),
            events,
        })
    }

    /// Validates and stores new processes in one transaction, then waits
    /// (briefly) for them to be spawned so the answer shows their pids.
    pub async fn create(&self, body: CreateBody) -> Result<Vec<ProcessView>, ServiceError> {
        let requests = match body {
            CreateBody::One(r) => vec![*r],
            CreateBody::Many(v) => v,
        };
        if requests.is_empty() {
            return Err(ServiceError::BadRequest(
                "nothing to create: the list is empty".into(),
            ));
        }
        let mut new = Vec::with_capacity(requests.len());
        let mut errors = Vec::new();
        for (i, r) in requests.into_iter().enumerate() {
            match self.new_spec(r) {
                Ok(n) => new.push(n),
                Err(e) if i == 0 => errors.push(e.to_string()),
                Err(e) => errors.push(format!("process {}: {e}", i + 1)),
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::BadRequest(errors.join("; ")));
        }
        let mut seen = std::collections::HashSet::new();
        for n in &new {
            if n.explicit_name && !seen.insert(n.spec.name.clone()) {
                return Err(ServiceError::Conflict(format!(
                    "the name {:?} is given twice",
                    n.spec.name
                )));
            }
        }
        let store = self.store.clone();
        let created = blocking(move || store.create(new))
            .await
            .map_err(|e| match e {
                StoreError::DuplicateName(n) => {
                    ServiceError::Conflict(format!("a process named {n:?} already exists"))
                }
                other => ServiceError::Store(other),
            })?;
        let ids: Vec<u64> = created.iter().map(|s| s.id).collect();
        self.rec.wake(ids.clone());
        let want = ids.clone();
        self.rec
            .wait_for(SPAWN_WAIT, |procs| {
                want.iter().all(|id| {
                    procs
                        .get(id)
                        .is_some_and(|e| settled_start(e, e.spec.desired, 1))
                })
            })
            .await;
        self.settle_shells(&ids).await;
        Ok(self.views(Some(&ids), false))
    }

    /// Gives the shell command lines among `ids` that just started a moment
    /// to fail at once (a command the shell cannot find exits 127 right
    /// away), so the answer tells that instead of "online".
    async fn settle_shells(&self, ids: &[u64]) {
        let shells: Vec<u64> = self
            .entries(Some(ids))
            .iter()
            .filter(|e| spawn::runs_in_shell(&e.spec.command))
            .filter(|e| matches!(e.obs.phase, Phase::Running { .. }))
            .map(|e| e.spec.id)
            .collect();
        if shells.is_empty() {
            return;
        }
        let settle_ms = SHELL_SETTLE.as_millis() as u64;
        self.rec
            .wait_for(SHELL_SETTLE, |procs| {
                let now = now_ms();
                shells.iter().all(|id| match procs.get(id) {
                    Some(e) => match e.obs.phase {
                        Phase::Running { since_ms, .. } => now >= since_ms + settle_ms,
                        _ => true,
                    },
                    None => true,
                })
            })
            .await;
    }

    fn new_spec(&self, r: CreateRequest) -> Result<NewSpec, ServiceError> {
        let script = r.script.trim();
        if script.is_empty() {
            return Err(ServiceError::BadRequest(
                "the command is empty: give a command line or a script".into(),
            ));
        }
        if script.contains('\0') {
            return Err(ServiceError::BadRequest(
                "the command contains a NUL byte".into(),
            ));
        }
        let cwd = match &r.path {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
        };
        if !cwd.is_absolute() {
            return Err(ServiceError::BadRequest(format!(
                "the working directory {} is not an absolute path",
                cwd.display()
            )));
        }
        if !cwd.is_dir() {
            return Err(ServiceError::BadRequest(format!(
                "the working directory {} does not exist",
                cwd.display()
            )));
        }
        let command = with_interpreter(script, &cwd);
        let (name, explicit_name) = match r.name {
            Some(n) => {
                validate_name(&n).map_err(ServiceError::BadRequest)?;
                (n, true)
            }
            None => (derive_name(&command), false),
        };
        let mut env = Vec::new();
        for (k, v) in r.env.unwrap_or_default() {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(ServiceError::BadRequest(format!("invalid environment variable {k:?}: a name needs no '=' or NUL, a value no NUL")));
            }
            env.push((k, v));
        }
        // A command that cannot run at all is an answer, not a stored
        // process that retries forever (unless the caller keeps it anyway).
        if r.unchecked != Some(true) {
            spawn::check_command(&command, &cwd, &env)
                .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        }
        let defaults = RestartPolicy::default();
        let restart = RestartPolicy {
            autorestart: r.autorestart.unwrap_or(true),
            max_restarts: r.max_restarts.unwrap_or(defaults.max_restarts),
            restart_delay_ms: r.restart_delay_ms.unwrap_or(defaults.restart_delay_ms),
            min_uptime_ms: r.min_uptime_ms.unwrap_or(defaults.min_uptime_ms),
        };
        if restart.restart_delay_ms > 3_600_000 || restart.min_uptime_ms > 86_400_000 {
            return Err(ServiceError::BadRequest(
                "restart delay must be at most 1 h and min uptime at most 24 h".into(),
            ));
        }
        let kill_timeout_ms = r.kill_timeout_ms.unwrap_or(DEFAULT_KILL_TIMEOUT_MS);
        if kill_timeout_ms > 600_000 {
            return Err(ServiceError::BadRequest(
                "kill timeout must be at most 10 minutes".into(),
            ));
        }
        if r.max_memory == Some(0) {
            return Err(ServiceError::BadRequest(
                "max memory must be more than 0".into(),
            ));
        }
        if let Some(w) = &r.watch {
            let p = cwd.join(w);
            if w.is_empty() || !p.exists() {
                return Err(ServiceError::BadRequest(format!(
                    "the watched path {} does not exist",
                    p.display()
                )));
            }
        }
        let stopped = r.stopped.unwrap_or(false);
        Ok(NewSpec {
            spec: Spec {
                id: 0,
                name,
                command,
                cwd: cwd.display().to_string(),
                env,
                restart,
                kill_timeout_ms,
                max_memory: r.max_memory,
                watch: r.watch.clone(),
                desired: if stopped {
                    Desired::Stopped
                } else {
                    Desired::Running
                },
                generation: if stopped { 0 } else { 1 },
                created_ms: now_ms(),
            },
            explicit_name,
        })
    }

    /// Carries out one action on its targets and waits for the outcome.
    pub async fn action(&self, req: ActionRequest) -> Result<ActionResponse, ServiceError> {
        let ids = self.resolve(std::slice::from_ref(&req.id))?;
        let entries = self.entries(Some(&ids));
        if req.action == ActionKind::Flush {
            for e in &entries {
                for path in [
                    self.home.out_log(&e.spec.name, e.spec.id),
                    self.home.err_log(&e.spec.name, e.spec.id),
                ] {
                    logs::truncate(&path).map_err(|err| {
                        ServiceError::Conflict(format!("cannot empty {}: {err}", path.display()))
                    })?;
                }
            }
            return Ok(ActionResponse {
                action: req.action,
                processes: self.views(Some(&ids), false),
                removed: Vec::new(),
            });
        }
        let mut specs = Vec::with_capacity(entries.len());
        for id in &ids {
            // The store is the truth for specs; the published copy may lag.
            let Some(mut spec) = self.store.get(*id)? else {
                continue;
            };
            let obs = self
                .entries(Some(&[*id]))
                .pop()
                .map(|e| e.obs)
                .unwrap_or_default();
            match req.action {
                ActionKind::Start => {
                    let live = obs.pid().is_some() && !matches!(obs.phase, Phase::Stopping { .. });
                    if spec.desired != Desired::Running || !live {
                        spec.desired = Desired::Running;
                        spec.generation += 1;
                    }
                }
                ActionKind::Stop => spec.desired = Desired::Stopped,
                ActionKind::Restart | ActionKind::Reload => {
                    spec.desired = Desired::Running;
                    spec.generation += 1;
                }
                ActionKind::Remove => spec.desired = Desired::Removed,
                ActionKind::Flush => {}
            }
            specs.push(spec);
        }
        let specs = {
            let store = self.store.clone();
            blocking(move || store.update(&specs).map(|()| specs)).await?
        };
        self.rec.wake(ids.clone());
        let longest_kill = specs.iter().map(|s| s.kill_timeout_ms).max().unwrap_or(0);
        let timeout = Duration::from_millis(longest_kill) + STOP_WAIT_SLACK;
        let wanted: Vec<(u64, Desired, u64)> = specs
            .iter()
            .map(|s| (s.id, s.desired, s.generation))
            .collect();
        let action = req.action;
        self.rec
            .wait_for(timeout, |procs| {
                wanted
                    .iter()
                    .all(|(id, desired, generation)| match (action, procs.get(id)) {
                        (ActionKind::Remove, e) => e.is_none(),
                        (_, None) => true,
                        (ActionKind::Stop, Some(e)) => {
                            e.spec.desired == Desired::Stopped
                                && e.obs.pid().is_none()
                                && !matches!(e.obs.phase, Phase::Stopping { .. })
                        }
                        (_, Some(e)) => settled_start(e, *desired, *generation),
                    })
            })
            .await;
        let removed = if action == ActionKind::Remove {
            let procs = self.rec.shared.read();
            ids.iter()
                .copied()
                .filter(|id| !procs.contains_key(id))
                .collect()
        } else {
            Vec::new()
        };
        let remaining: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !removed.contains(id))
            .collect();
        Ok(ActionResponse {
            action,
            processes: self.views(Some(&remaining), false),
            removed,
        })
    }

    pub fn logs(&self, target: &Target, lines: usize) -> Result<LogsResponse, ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        let lines = lines.min(MAX_LOG_LINES);
        let out_log = self.home.out_log(&spec.name, id);
        let err_log = self.home.err_log(&spec.name, id);
        let read = |p: &Path| {
            logs::tail_lines(p, lines)
                .map_err(|e| ServiceError::Conflict(format!("cannot read {}: {e}", p.display())))
        };
        Ok(LogsResponse {
            id,
            name: spec.name.clone(),
            out: read(&out_log)?,
            err: read(&err_log)?,
            out_log: out_log.display().to_string(),
            err_log: err_log.display().to_string(),
        })
    }

    /// The log files of a process, for the live stream.
    pub fn log_paths(&self, target: &Target) -> Result<(u64, PathBuf, PathBuf), ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        Ok((
            id,
            self.home.out_log(&spec.name, id),
            self.home.err_log(&spec.name, id),
        ))
    }

    pub fn env(&self, target: &Target) -> Result<EnvResponse, ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        let mut env: BTreeMap<String, String> = spec.env.iter().cloned().collect();
        env.insert("OPM_ID".into(), id.to_string());
        env.insert("OPM_NAME".into(), spec.name.clone());
        Ok(EnvResponse {
            id,
            name: spec.name,
            env,
        })
    }

    pub fn dump(&self) -> Result<Dump, ServiceError> {
        let processes = self
            .store
            .specs()?
            .into_iter()
            .filter(|s| s.desired != Desired::Removed)
            .map(|s| SavedProcess {
                name: s.name,
                script: s.command,
                path: s.cwd,
                env: s.env.into_iter().collect(),
                autorestart: s.restart.autorestart,
                max_restarts: s.restart.max_restarts,
                restart_delay_ms: s.restart.restart_delay_ms,
                min_uptime_ms: s.restart.min_uptime_ms,
                kill_timeout_ms: s.kill_timeout_ms,
                max_memory: s.max_memory,
                watch: s.watch,
                desired: s.desired.as_str().to_string(),
            })
            .collect();
        Ok(Dump { processes })
    }

    pub fn metrics(&self) -> Metrics {
        let processes = self.list();
        let pid = std::process::id();
        let stat = proc::stat(pid);
        let uptime_ms = self.started.elapsed().as_millis() as u64;
        let cpu_avg = match &stat {
            Some(s) if uptime_ms > 0 => {
                let cpu_ms = (s.utime + s.stime) * 1000 / proc::clock_ticks().max(1);
                ((cpu_ms as f64 / uptime_ms as f64) * 1000.0).round() as f32 / 10.0
            }
            _ => 0.0,
        };
        Metrics {
            daemon: DaemonMetrics {
                pid,
                uptime_ms,
                cpu_avg,
                memory: stat.map_or(0, |s| s.rss_pages * proc::page_size()),
                processes: processes.len(),
                online: processes
                    .iter()
                    .filter(|p| p.status == Status::Online)
                    .count(),
                restarts: processes.iter().map(|p| u64::from(p.restarts)).sum(),
            },
            processes,
        }
    }

    pub fn role(&self) -> Role {
        *self.role.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_role(&self, role: Role) {
        *self.role.write().unwrap_or_else(|p| p.into_inner()) = role;
    }

    /// The truth about this daemon's link to a server.
    pub fn agent_status(&self) -> AgentStatus {
        let role = self.role();
        match &*self.agent.lock().unwrap_or_else(|p| p.into_inner()) {
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

    pub fn health(&self) -> Health {
        let views = {
            let procs = self.rec.shared.read();
            procs
                .values()
                .map(|e| status(&e.spec, &e.obs))
                .collect::<Vec<_>>()
        };
        let count = |s: Status| views.iter().filter(|v| **v == s).count();
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pid = std::process::id();
        let (agents_online, agents_offline) = match &self.registry {
            Some(r) => {
                let (on, off) = r.counts();
                (Some(on), Some(off))
            }
            None => (None, None),
        };
        let link = self.agent_status();
        // An agent's listener serves with the agent's own token, not the config's.
        let own_tokens = api.address.is_some() && link.server.is_none();
        let token_file =
            (own_tokens && !api.tokenless).then(|| self.home.config().display().to_string());
        let warnings = (own_tokens && api.tokenless)
            .then(|| self.config.tokenless_warning())
            .flatten()
            .into_iter()
            .collect();
        let api_url = api.address.as_ref().map(|a| {
            let scheme = if api.tls_fingerprint.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{a}")
        });
        Health {
            api_url,
            tls_fingerprint: api.tls_fingerprint,
            token_file,
            warnings,
            agents_online,
            agents_offline,
            server: link.server.clone(),
            connected: link.server.as_ref().map(|_| link.connected),
            role: self.role().as_str().to_string(),
            pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            processes: views.len(),
            online: count(Status::Online),
            stopped: count(Status::Stopped),
            errored: count(Status::Errored),
            api: api.address,
            api_error: api.error,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            home: self.home.root.display().to_string(),
            schema_version: self.store.schema_version(),
            memory: proc::stat(pid).map_or(0, |s| s.rss_pages * proc::page_size()),
            recovered: self.store.recovery().map(|r| crate::model::Recovered {
                at_ms: r.at_ms,
                reason: r.reason.clone(),
                from: r.snapshot.display().to_string(),
                snapshot_written_ms: r.snapshot_written_ms,
                damaged_copy: r.damaged_copy.as_ref().map(|p| p.display().to_string()),
                processes: r.processes,
            }),
        }
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

/// Whether a start of `generation` has been carried out (spawned, failed or
/// given up on), so its answer can be given.
///
/// The published spec must be the one this request wrote (same desired
/// state, same generation), else the reconciler has not looked yet.
fn settled_start(e: &Entry, desired: Desired, generation: u64) -> bool {
    if e.spec.desired != desired || e.spec.generation < generation {
        return false;
    }
    if desired != Desired::Running {
        return true;
    }
    e.obs.generation >= generation
        && !matches!(
            e.obs.phase,
            Phase::Spawning { .. } | Phase::Stopping { .. } | Phase::Idle
        )
}

/// `app.js` → `node app.js` when the first word is a script file in `cwd`
/// that is not executable by itself.
pub fn with_interpreter(command: &str, cwd: &Path) -> String {
    let Some(first) = command.split_whitespace().next() else {
        return command.to_string();
    };
    let path = cwd.join(first);
    let interpreter = match path.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => "node",
        Some("py") => "python3",
        Some("sh") => "bash",
        Some("rb") => "ruby",
        Some("pl") => "perl",
        Some("php") => "php",
        _ => return command.to_string(),
    };
    if path.is_file() {
        format!("{interpreter} {command}")
    } else {
        command.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_script() {
        assert_eq!(derive_name("node app.js"), "app");
        assert_eq!(derive_name("python3 /srv/worker.py --fast"), "worker");
        assert_eq!(derive_name("/usr/bin/sleep 100"), "sleep");
        assert_eq!(derive_name("./server"), "server");
        assert_eq!(derive_name("123"), "process");
    }

    #[test]
    fn names_that_read_as_ids_or_all_are_refused() {
        assert!(validate_name("42").is_err());
        assert!(validate_name("all").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("web-1.api_v2").is_ok());
    }

    #[test]
    fn a_script_file_gets_its_interpreter() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.js"), "").expect("write");
        assert_eq!(
            with_interpreter("app.js --port 3", dir.path()),
            "node app.js --port 3"
        );
        assert_eq!(with_interpreter("missing.js", dir.path()), "missing.js");
        assert_eq!(with_interpreter("sleep 1", dir.path()), "sleep 1");
    }
}
