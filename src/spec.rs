//! The stored records of one process: its definition (`Spec`, the desired
//! state the user asked for) and what was observed of it (`Observed`, the
//! runtime facts the reconciler keeps). Data only: the store encodes them,
//! the reconciler decides on them, the API turns them into views.

use serde::{Deserialize, Serialize};

use crate::definition::{DesiredState, ProcessDef};

/// What the user wants of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Desired {
    Running,
    Stopped,
    /// Stop it, then forget it.
    Removed,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Removed => "removed",
        }
    }
}

/// A stored process: who it is and what the user wants of it (bincode), and
/// its definition (`def`, JSON inside the record: see `definition`). `def`
/// holds the resolved command (`script`, with its interpreter), the absolute
/// working directory, the environment and the options; its `name`,
/// `desired` and `unchecked` are not kept there (the fields below are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub id: u64,
    pub name: String,
    pub desired: Desired,
    /// Bumped by every user start/restart: a run older than this is replaced.
    pub generation: u64,
    pub created_ms: u64,
    #[serde(with = "crate::definition::as_json")]
    pub def: ProcessDef,
}

impl Spec {
    /// The command line it runs (interpreter, script and arguments).
    pub fn command(&self) -> String {
        self.def.command_line()
    }

    /// Its working directory (absolute).
    pub fn cwd(&self) -> &str {
        self.def.cwd.as_deref().unwrap_or("/")
    }

    /// The whole definition as a user would write it: name, desired state
    /// and every default written out (`opm save`, `opm info`).
    pub fn definition(&self) -> ProcessDef {
        ProcessDef {
            name: Some(self.name.clone()),
            desired: Some(match self.desired {
                Desired::Stopped => DesiredState::Stopped,
                Desired::Running | Desired::Removed => DesiredState::Running,
            }),
            unchecked: None,
            instance: None,
            ..self.def.filled()
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
    pub uptime_ms: u64,
}

impl Exit {
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
            (None, None) => "ended while the daemon was not watching (status unknown)".into(),
        }
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("unknown signal")
}

/// Where a process is in its life, with the facts each phase needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Never started.
    Idle,
    /// About to spawn: recorded (and flushed) first, so that a daemon killed
    /// between the spawn and recording the pid can find the child by its nonce.
    Spawning {
        nonce: u64,
        at_ms: u64,
    },
    Running {
        pid: u32,
        start_time: u64,
        since_ms: u64,
    },
    /// The stop signal sent at `since_ms`; SIGKILL due at `deadline_ms`.
    Stopping {
        pid: u32,
        start_time: u64,
        since_ms: u64,
        deadline_ms: u64,
        killed: bool,
        /// The group leader has exited; other members of its group may remain.
        leader_gone: bool,
    },
    /// Ended on its own; the restart decision is pending.
    Exited {
        at_ms: u64,
    },
    Stopped {
        at_ms: u64,
    },
    Errored {
        at_ms: u64,
        reason: String,
    },
}

/// What the reconciler knows of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub phase: Phase,
    /// How many times a run was started; `restarts` shown to users is one less.
    pub starts: u32,
    /// Consecutive exits that came before `min_uptime`.
    pub unstable: u32,
    /// The spec generation of the current (or last) run.
    pub generation: u64,
    pub last_exit: Option<Exit>,
    /// The boot the recorded pid belongs to: after a reboot it means nothing.
    pub boot_id: String,
    /// Why the last start failed before the program ran (e.g. no such file).
    pub last_error: Option<String>,
    /// A restart the daemon decided on (e.g. memory limit); served at the next spawn.
    pub restart_pending: Option<String>,
    /// Whether the live run has said it is ready (`wait_ready`, `ready_port`).
    pub readiness: Readiness,
    /// A reload under way: the run that is to replace the live one, or the
    /// run being stopped beside it. Kept here so a daemon killed mid-reload
    /// knows every run of the process.
    pub handover: Option<Handover>,
    /// The last `STATUS=` text the process sent to its notify socket.
    pub notify_status: Option<String>,
}

/// Whether a run has said it is ready, when its definition asks it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// Not asked (no `wait_ready` nor `ready_port`): online once spawned.
    NotAsked,
    /// Not ready yet; `deadline_ms` is when `listen_timeout` passes.
    Waiting {
        deadline_ms: u64,
    },
    /// `listen_timeout` passed at `at_ms` without a sign (reported); it
    /// still runs, and is ready if it says so later.
    TimedOut {
        at_ms: u64,
    },
    Ready {
        at_ms: u64,
    },
}

impl Readiness {
    /// Whether the run counts as up (`online`).
    pub fn is_up(&self) -> bool {
        matches!(self, Readiness::NotAsked | Readiness::Ready { .. })
    }
}

/// The other run of a process during a reload (`reconcile::handover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handover {
    /// The new run's spawn is recorded (and flushed) before it is made: a
    /// daemon killed next finds it by this nonce.
    Spawning { nonce: u64, at_ms: u64 },
    /// The new run is up and not ready yet; the live one still serves.
    Starting {
        pid: u32,
        start_time: u64,
        since_ms: u64,
        deadline_ms: u64,
    },
    /// A run being stopped beside the live one: the replaced one after a
    /// reload, or a new one that did not get ready. The stop signal was sent;
    /// SIGKILL is due at `deadline_ms`.
    Retiring {
        pid: u32,
        start_time: u64,
        deadline_ms: u64,
        killed: bool,
        leader_gone: bool,
    },
}

impl Observed {
    pub fn new() -> Observed {
        Observed {
            phase: Phase::Idle,
            starts: 0,
            unstable: 0,
            generation: 0,
            last_exit: None,
            boot_id: String::new(),
            last_error: None,
            restart_pending: None,
            readiness: Readiness::NotAsked,
            handover: None,
            notify_status: None,
        }
    }

    /// The pid of the live run, if there is one.
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { pid, .. } => Some(pid),
            Phase::Stopping {
                pid,
                leader_gone: false,
                ..
            } => Some(pid),
            _ => None,
        }
    }
}

impl Observed {
    /// Restarts as users count them: every start after the first.
    pub fn restarts(&self) -> u32 {
        self.starts.saturating_sub(1)
    }
}

impl Default for Observed {
    fn default() -> Self {
        Observed::new()
    }
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A managed process, by id and by the name it had then.
    Process { id: u64, name: String },
    /// An agent of this server, by name.
    Agent(String),
    /// The daemon itself (a recovery of its database).
    Daemon,
}

impl Subject {
    /// The name shown with the event: the process's, the agent's, or "daemon".
    pub fn name(&self) -> &str {
        match self {
            Subject::Process { name, .. } | Subject::Agent(name) => name,
            Subject::Daemon => "daemon",
        }
    }

    /// The process id, for an event about a process.
    pub fn process_id(&self) -> Option<u64> {
        match self {
            Subject::Process { id, .. } => Some(*id),
            Subject::Agent(_) | Subject::Daemon => None,
        }
    }
}

/// One entry of the bounded events log. How it is stored is the store's
/// business (`store::push_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ms: u64,
    pub subject: Subject,
    pub kind: String,
    pub detail: String,
}

/// Milliseconds since the Unix epoch: the clock of every stored time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A Unix time in ms as UTC (year, month, day, hour, minute, second).
pub fn civil_utc(ms: u64) -> (i64, i64, i64, i64, i64, i64) {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d, rem / 3600, (rem / 60) % 60, rem % 60)
}

/// A Unix time in ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_timestamp(ms: u64) -> String {
    let (y, m, d, h, mi, s) = civil_utc(ms);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}
// --- Names -------------------------------------------------------------

/// Interpreters that take a script file as their first argument.
const INTERPRETERS: &[&str] = &[
    "node", "nodejs", "python", "python3", "bash", "sh", "ruby", "perl", "deno", "bun", "php",
];

/// A name users can type: letters, digits, `.`, `_`, `-`; not only digits
/// (that would be an id) and not `all`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(format!(
            "invalid name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) || name == "all" {
        return Err(format!(
            "invalid name {name:?}: it would be read as an id or as 'all'"
        ));
    }
    Ok(())
}

/// A default name from the command: the script's file name without its
/// extension (`node app.js` → `app`), else the program's.
pub fn derive_name(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let first = words.first().copied().unwrap_or("process");
    let base = |w: &str| {
        std::path::Path::new(w)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let word = match words.get(1) {
        Some(second)
            if INTERPRETERS.contains(&base(first).as_str()) && !second.starts_with('-') =>
        {
            *second
        }
        _ => first,
    };
    let file = base(word);
    let stem = std::path::Path::new(&file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or(file);
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned
        .trim_start_matches(['.', '-'])
        .chars()
        .take(48)
        .collect::<String>();
    if validate_name(&cleaned).is_ok() {
        cleaned
    } else {
        "process".to_string()
    }
}
