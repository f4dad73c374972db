//! The types that cross the wire: API request and response bodies and the
//! `opm list --format json` objects. Shared by the daemon, the CLI and
//! a server talking to its agents. No I/O here; only shapes and validation of
//! shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::definition::ProcessDef;

/// What a process is doing, as users see it (`list`, `info`, the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Stopped,
    Errored,
    Starting,
    Stopping,
    /// Waiting out a restart backoff (after a crash or a failed start).
    Waiting,
    /// Ended on its own and not restarted (its `restart` policy or
    /// `stop_exit_codes`), as opposed to `stopped` by the user.
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Stopped => "stopped",
            Status::Errored => "errored",
            Status::Starting => "starting",
            Status::Stopping => "stopping",
            Status::Waiting => "waiting",
            Status::Exited => "exited",
        }
    }
}

/// One row of `opm list --format json` and `GET /daemon/list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    pub id: u64,
    pub name: String,
    pub pid: Option<u32>,
    pub status: Status,
    pub restarts: u32,
    pub uptime_ms: u64,
    /// Percent of one core, over the last sampling interval.
    pub cpu: f32,
    /// Resident memory of the whole process group, in bytes.
    pub memory: u64,
    pub command: String,
    pub cwd: String,
    pub autorestart: bool,
    /// `running` or `stopped`: what the user asked for.
    pub desired: String,
    /// Why the last start failed (command not found, not executable, out
    /// of file descriptors...), while no run has succeeded since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its index in its instance group (0…N-1); null for a process started
    /// without `--instances`.
    #[serde(default)]
    pub instance: Option<u32>,
    /// The copies in its group (1 for a process without instances).
    #[serde(default = "one")]
    pub instances: u32,
    /// `waiting`: when the next automatic start is due (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at_ms: Option<u64>,
    /// `exited`: the exit code of the run that ended (none when a signal
    /// ended it or its end was not seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

fn one() -> u32 {
    1
}

/// How a process last ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
    /// A sentence: "exit code 1", "killed by signal 9 (SIGKILL)", "gone while the daemon was down".
    pub description: String,
}

/// One entry of the events log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub at_ms: u64,
    pub id: u64,
    pub name: String,
    pub kind: String,
    pub detail: String,
}

/// One entry of `GET /daemon/events` and its stream: what happened, to
/// what (`subject`: `process`, with its `id`; `agent`; `daemon`), when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at_ms: u64,
    pub subject: String,
    /// The process id, for an event about a process.
    pub id: Option<u64>,
    /// The process's or the agent's name, or `daemon`.
    pub name: String,
    pub kind: String,
    pub detail: String,
}

impl From<&crate::spec::Event> for TimelineEvent {
    fn from(e: &crate::spec::Event) -> TimelineEvent {
        use crate::spec::Subject;
        let subject = match &e.subject {
            Subject::Process { .. } => "process",
            Subject::Agent(_) => "agent",
            Subject::Daemon => "daemon",
        };
        TimelineEvent {
            at_ms: e.at_ms,
            subject: subject.to_string(),
            id: e.subject.process_id(),
            name: e.subject.name().to_string(),
            kind: e.kind.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// `opm info` and `GET /daemon/info/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    #[serde(flatten)]
    pub view: ProcessView,
    pub created_ms: u64,
    pub max_restarts: u32,
    pub restart_delay_ms: u64,
    pub min_uptime_ms: u64,
    pub kill_timeout_ms: u64,
    pub max_memory: Option<u64>,
    pub watch: Option<String>,
    pub env_keys: Vec<String>,
    pub out_log: String,
    pub err_log: String,
    pub last_exit: Option<ExitView>,
    /// Why the process is `errored`, when it is.
    pub errored_reason: Option<String>,
    /// With `cron_restart`: its next match (ms since the epoch, the
    /// daemon's local time zone read the expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_next_ms: Option<u64>,
    /// With `wait_ready` or `ready_port`: whether the live run is ready, as
    /// a sentence ("ready", "waiting…", "not ready within 30s…").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    /// The last `STATUS=` text the process sent to its notify socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_status: Option<String>,
    pub events: Vec<EventView>,
    /// The whole definition, every default written out, as `opm save`
    /// writes it (`kill_signal`, and the options above in their file form).
    #[serde(default, deserialize_with = "crate::definition::lenient")]
    pub definition: ProcessDef,
    /// The ids of every copy of its instance group, lowest index first
    /// (absent for a process without instances).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<u64>,
}

/// The body of `POST /daemon/scale`: the group (a name, or the id of one
/// copy) and the number of copies it should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub id: Target,
    pub instances: u32,
}

/// The answer to a scale: the group as it is now, and what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleResponse {
    pub name: String,
    pub instances: u32,
    pub processes: Vec<ProcessView>,
    /// Ids of the copies created.
    pub added: Vec<u64>,
    /// Ids of the copies stopped and removed.
    pub removed: Vec<u64>,
}

/// The body of `POST /daemon/create`: one process or several in one
/// transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CreateBody {
    One(Box<ProcessDef>),
    Many(Vec<ProcessDef>),
}

impl<'de> Deserialize<'de> for CreateBody {
    /// An object is one process, an array several; a bad key or value is
    /// named (with the process's place in an array), not hidden behind
    /// "no variant matched".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    serde_json::from_value(v)
                        .map_err(|e| D::Error::custom(format!("process {}: {e}", i + 1)))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(CreateBody::Many),
            v => serde_json::from_value(v)
                .map(|p| CreateBody::One(Box::new(p)))
                .map_err(D::Error::custom),
        }
    }
}

/// `POST /daemon/apply`: make the stored processes match a process file
/// (or one changed definition, for `opm update`) in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub processes: Vec<ProcessDef>,
    /// The file's absolute path, recorded in each definition (`origin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Remove the processes that came from `origin` and are not in `processes`.
    #[serde(default)]
    pub prune: bool,
    /// Restart the changed processes now (else at their next restart).
    #[serde(default = "yes")]
    pub restart: bool,
    /// The environment of the shell that ran `opm start FILE`, sent once:
    /// the `caller_env` of every definition that brings none.
    #[serde(
        default,
        with = "crate::definition::caller_env",
        skip_serializing_if = "Option::is_none"
    )]
    pub caller_env: Option<crate::definition::CallerEnv>,
}

fn yes() -> bool {
    true
}

/// The answer to an apply: every process of the request by what was done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub created: Vec<ProcessView>,
    pub changed: Vec<ProcessView>,
    pub unchanged: Vec<ProcessView>,
    /// Names of the processes removed by `prune`.
    pub pruned: Vec<String>,
}

/// What `POST /daemon/action` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Start,
    Stop,
    Restart,
    Reload,
    Remove,
    Flush,
    /// Zero the restart counters.
    Reset,
    /// Send `signal` to the process (`process_group`: to its whole process group).
    Signal,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Start => "start",
            ActionKind::Stop => "stop",
            ActionKind::Restart => "restart",
            ActionKind::Reload => "reload",
            ActionKind::Remove => "remove",
            ActionKind::Flush => "flush",
            ActionKind::Reset => "reset",
            ActionKind::Signal => "signal",
        }
    }
}

/// A process named by id (`3`, `"3"`) or name (`"api"`), or `"all"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    Id(u64),
    Name(String),
}

impl Target {
    /// Reads what a user typed: digits are an id, anything else a name.
    pub fn parse(s: &str) -> Target {
        match s.parse::<u64>() {
            Ok(id) => Target::Id(id),
            Err(_) => Target::Name(s.to_string()),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Target::Name(n) if n == "all")
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Id(id) => write!(f, "{id}"),
            Target::Name(n) => f.write_str(n),
        }
    }
}

/// `POST /daemon/action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub id: Target,
    pub action: ActionKind,
    /// With restart or reload: the caller's environment, replacing the
    /// captured one (`opm restart --update-env`).
    #[serde(
        default,
        with = "crate::definition::caller_env",
        skip_serializing_if = "Option::is_none"
    )]
    pub caller_env: Option<crate::definition::CallerEnv>,
    /// With signal: which one (`SIGUSR2`, `USR2` or `12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<crate::definition::Signal>,
    /// With signal: every process of the group, not only the main one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub process_group: bool,
}

/// The answer to an action: the processes it touched, as they are after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResponse {
    pub action: ActionKind,
    pub processes: Vec<ProcessView>,
    /// Ids that were removed (for `remove`).
    #[serde(default)]
    pub removed: Vec<u64>,
    /// For `reload`: how each process was reloaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reloads: Vec<ReloadReport>,
}

/// How one process was reloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub id: u64,
    pub name: String,
    /// `handover`: the new run was started beside the old one and was
    /// ready before the old one was stopped; `restart`: no handover was
    /// possible (`detail` says why), it was stopped, then started;
    /// `failed`: the new run did not get ready, the old one still serves.
    pub outcome: String,
    pub detail: String,
    pub old_pid: Option<u32>,
    pub new_pid: Option<u32>,
}

/// `GET /daemon/logs/{id}?lines=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsResponse {
    pub id: u64,
    pub name: String,
    pub out_log: String,
    pub err_log: String,
    pub out: Vec<String>,
    pub err: Vec<String>,
}

/// `POST /daemon/reload-logs`: what was found for each log descriptor of
/// each running process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadLogsResponse {
    pub logs: Vec<ReloadedLog>,
}

/// One stream of one running process, as `opm reload-logs` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadedLog {
    pub id: u64,
    pub name: String,
    /// `out`, `err`, or `both` (merged logs).
    pub stream: String,
    /// The configured file.
    pub path: String,
    /// `same` (it writes the configured file), `moved` (renamed away, given
    /// its name back), `deleted`, `elsewhere`, `occupied` or `failed`.
    pub outcome: String,
    /// What happened, in a sentence.
    pub detail: String,
}

/// `GET /daemon/env/{id}`: the environment opm adds to the inherited one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvResponse {
    pub id: u64,
    pub name: String,
    pub env: BTreeMap<String, String>,
    /// The whole environment the process gets: the captured caller's (or
    /// the daemon's, when none was captured), `env` over it, opm's own.
    #[serde(default)]
    pub full: BTreeMap<String, String>,
    /// The entries of `full` the daemon's own environment lacks or holds
    /// with another value.
    #[serde(default)]
    pub differs: BTreeMap<String, String>,
}

/// `GET /health` and `opm daemon health --format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub role: String,
    pub pid: u32,
    pub version: String,
    /// Number of managed processes.
    pub processes: usize,
    pub online: usize,
    pub stopped: usize,
    pub errored: usize,
    /// `address:port` of the TCP API, or null when it is off.
    pub api: Option<String>,
    /// Why the TCP API is not serving although it was asked for.
    pub api_error: Option<String>,
    pub uptime_ms: u64,
    pub home: String,
    pub schema_version: u32,
    pub memory: u64,
    /// On a server: agents online and offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_online: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_offline: Option<usize>,
    /// On an agent: its server and whether the last heartbeat got through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Where the TCP API's token is kept (`[daemon.web.secure] token` of
    /// this file), when the API serves with the configured token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// What weakens this daemon's security (e.g. a TCP API without a token).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Set when this daemon found its database damaged and rebuilt it from
    /// the snapshot; null otherwise.
    #[serde(default)]
    pub recovered: Option<Recovered>,
    /// The TCP API's URL (`https://…` when it serves TLS), or null when off.
    #[serde(default)]
    pub api_url: Option<String>,
    /// The fingerprint of the TCP API's TLS certificate (`SHA256:…`), which
    /// clients pin; null when it serves plain HTTP.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
}

/// A rebuild of a damaged database (`Health::recovered`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// When the daemon rebuilt it (ms since the epoch).
    pub at_ms: u64,
    /// What was wrong with the database.
    pub reason: String,
    /// The snapshot it was rebuilt from, and when that was written.
    pub from: String,
    pub snapshot_written_ms: u64,
    /// Where the damaged database was moved; null when it was missing.
    pub damaged_copy: Option<String>,
    /// Process definitions restored.
    pub processes: usize,
}

/// Every error body of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `GET /daemon/dump`: every process definition, for `opm save`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    /// Each with its name, desired state and every default written out.
    pub processes: Vec<ProcessDef>,
}

/// The role's part of the health report, given by the role system to the
/// service that writes the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleReport {
    pub role: String,
    /// (online, offline) agents, on a server.
    pub agents: Option<(usize, usize)>,
    /// The server this agent is linked to.
    pub server: Option<String>,
    /// Whether the last heartbeat to that server went through.
    pub connected: bool,
}

/// The history of one subject in `GET /daemon/history`: a process (`id`,
/// `name`; `count` is its restarts) or, in `GET /daemon/history/agents`,
/// an agent (`id` its agent id; `count` its online processes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectHistory<Id> {
    pub id: Id,
    pub name: String,
    #[serde(flatten)]
    pub series: crate::history::Series,
}

/// `GET /daemon/history`: CPU and memory over time, sampled every
/// `interval_ms`, at most `samples` per subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryResponse<Id> {
    pub interval_ms: u64,
    pub samples: usize,
    pub subjects: Vec<SubjectHistory<Id>>,
}

/// The daemon's own figures in `GET /daemon/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonMetrics {
    pub pid: u32,
    pub uptime_ms: u64,
    /// Percent of one core, averaged since the daemon started.
    pub cpu_avg: f32,
    /// Resident memory in bytes.
    pub memory: u64,
    pub processes: usize,
    pub online: usize,
    pub restarts: u64,
}

/// `GET /daemon/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub daemon: DaemonMetrics,
    pub processes: Vec<ProcessView>,
}

/// `POST /daemon/agents/register`: an agent introducing itself. A new
/// agent comes with the join token and no id; the server assigns the id and
/// a credential. An agent registering again sends its id, with its
/// credential in the `agent-token` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The id the server gave this agent before, if any.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    pub hostname: String,
    /// Where the server reaches the agent's API, e.g. `http://10.0.0.5:9877`.
    pub endpoint: String,
    pub version: String,
    /// The agent's API token: the server sends it on every call to the agent.
    pub token: String,
    #[serde(default)]
    pub processes: Vec<ProcessView>,
    /// The fingerprint of the agent API's TLS certificate (`SHA256:…`):
    /// required with an https endpoint, which the server then trusts only
    /// with it.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The server's answer to a registration or a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    pub id: String,
    /// When the agent should beat next, in ms from now (Nomad-style: grows
    /// with the number of agents, with jitter).
    pub heartbeat_interval_ms: u64,
    /// Issued once, when an agent joins: its own credential, which it sends
    /// (header `agent-token`) on every later registration and heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `POST /daemon/agents/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub processes: Vec<ProcessView>,
}

/// How many of an agent's processes are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCounts {
    pub total: usize,
    pub online: usize,
    pub stopped: usize,
    pub errored: usize,
}

impl ProcessCounts {
    pub fn of(views: &[ProcessView]) -> ProcessCounts {
        let n = |s: Status| views.iter().filter(|v| v.status == s).count();
        ProcessCounts {
            total: views.len(),
            online: n(Status::Online),
            stopped: n(Status::Stopped),
            errored: n(Status::Errored),
        }
    }
}

/// One row of `GET /daemon/agents/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub endpoint: String,
    pub version: String,
    /// `online` or `offline`.
    pub status: String,
    pub last_seen_ms: u64,
    pub registered_ms: u64,
    pub processes: ProcessCounts,
}

/// `GET /daemon/agent/status` on an agent: the truth about its link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub role: String,
    /// Absent when this opm is not connected to a server.
    pub server: Option<String>,
    pub agent_id: Option<String>,
    pub name: Option<String>,
    pub endpoint: Option<String>,
    /// Whether the last exchange with the server succeeded.
    pub connected: bool,
    pub last_heartbeat_ms: Option<u64>,
    pub last_error: Option<String>,
    pub heartbeat_interval_ms: Option<u64>,
    pub connected_since_ms: Option<u64>,
    /// The server refused this agent (401/403): it was removed, its
    /// credential revoked, or the token is wrong. It must join again.
    #[serde(default)]
    pub refused: bool,
    /// The pinned fingerprint of the server's certificate (https).
    #[serde(default)]
    pub server_fingerprint: Option<String>,
}

/// `POST /daemon/agent/connect` (local socket only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    pub server: String,
    pub token: String,
    pub name: Option<String>,
    /// `host:port` the agent's API listens on and the server reaches it at.
    pub api_address: Option<String>,
    /// The server certificate's fingerprint to pin (https); without it, the
    /// one the server shows is pinned (trust on first use).
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// `text` with control characters (newlines, escape sequences) shown as
/// `\u{..}` escapes, so text that came from another machine can never forge a
/// log line or drive a terminal.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Percent-encodes everything but unreserved characters, so a name or id is
/// one path segment (or one query value) whatever it holds.
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
