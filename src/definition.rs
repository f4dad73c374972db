//! The process definition: one type, `ProcessDef`, that is at once a
//! `[[process]]` of a process file and of `dump.toml` (TOML), the body of
//! `POST /daemon/create` (JSON), the flags of `opm start` (clap, flattened)
//! and the user's part of a stored `Spec` (JSON inside the record, so an
//! option added later needs no migration: an old record simply lacks the key
//! and gets the default). With it live the value types that read the same
//! everywhere (`Millis`, `Bytes`, `Signal`), each option's default (its
//! accessor) and each option's check (`check`). A leaf: it imports nothing
//! of the crate.
//!
//! To add an option: its field below (doc comment = `--help` text; clap and
//! serde attributes), its default in an accessor and in `filled`, its check
//! in `check` if it has limits. Then use it where it acts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use clap::Args;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod caller_env;
pub use caller_env::CallerEnv;

/// The base of the crash backoff when no restart delay is given.
pub const DEFAULT_RESTART_DELAY_MS: u64 = 100;
/// Consecutive quick restarts before a process is `errored`.
pub const DEFAULT_MAX_RESTARTS: u32 = 15;
/// Uptime after which an exit no longer counts as a crash loop.
pub const DEFAULT_MIN_UPTIME_MS: u64 = 10_000;
/// The smallest log cap (a rotation cuts whole file-system blocks).
pub const MIN_LOG_SIZE: u64 = 64 * 1024;
/// The most rotated files kept per log.
pub const MAX_LOG_FILES: u32 = 1000;
/// The time between the stop signal and SIGKILL when a process is stopped.
pub const DEFAULT_KILL_TIMEOUT_MS: u64 = 3_000;
/// How long watched files must be quiet before the restart (`watch_delay`).
pub const DEFAULT_WATCH_DELAY_MS: u64 = 300;
/// How long a run may take to be ready (`wait_ready`, `ready_port`) before
/// it is reported not ready and a reload gives up on it.
pub const DEFAULT_LISTEN_TIMEOUT_MS: u64 = 30_000;

/// One process as the user defines it. Every option is optional: absent
/// means "the default" (see the accessors), so the same value serves a file
/// entry with three keys and a full dump.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct ProcessDef {
    /// A command line ("node app.js"), a script (app.js, worker.py) or a process file (.toml, .json, .yaml)
    #[arg(value_name = "SCRIPT", default_value = "", hide_default_value = true)]
    pub script: String,
    /// Name of the process (default: from the script)
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Working directory (default: the current one)
    #[arg(long, value_name = "DIR")]
    #[serde(default, alias = "path", skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables (`opm start` and `opm update` read `--env`
    /// themselves: a `K=V` is a variable, a bare word a named set).
    #[arg(skip)]
    #[serde(default, with = "env_map", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Do not restart the process when it exits
    #[arg(
        long = "no-autorestart",
        num_args = 0,
        default_missing_value = "false",
        value_parser = clap::value_parser!(bool)
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autorestart: Option<bool>,
    /// Consecutive quick restarts before the process is marked errored (default 15)
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// Wait this long before every automatic restart (default: none, and a crash loop waits 100ms, doubling)
    #[arg(long, value_name = "DURATION")]
    #[serde(
        default,
        alias = "restart_delay_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub restart_delay: Option<Millis>,
    /// Uptime after which an exit no longer counts as a crash loop (default 10s)
    #[arg(long, value_name = "DURATION")]
    #[serde(
        default,
        alias = "min_uptime_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_uptime: Option<Millis>,
    /// Signal that asks the process to stop: a name (SIGINT, INT) or a number (default SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_signal: Option<Signal>,
    /// Time between the stop signal and SIGKILL on stop (default 3s)
    #[arg(long, value_name = "DURATION")]
    #[serde(
        default,
        alias = "kill_timeout_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub kill_timeout: Option<Millis>,
    /// Restart when the process group's memory passes this size (e.g. 100M)
    #[arg(long, value_name = "SIZE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Bytes>,
    /// Restart the process when a file under this path changes (relative to --cwd; repeatable; bare --watch: the working directory)
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = ".")]
    #[serde(default, with = "watch_paths", skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<String>,
    // --- Deploy options (process files, arguments, the caller's environment)
    /// Arguments given to the script (`opm start app.js -- a b`)
    #[arg(last = true, value_name = "ARGS")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The program that runs the script (default: from its extension, e.g. node for .js)
    #[arg(long, value_name = "PROGRAM")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Arguments given to the interpreter, before the script (e.g. "--max-old-space-size=512")
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    #[serde(default, alias = "node_args", skip_serializing_if = "Option::is_none")]
    pub interpreter_args: Option<String>,
    /// The absolute path of the process file it was applied from (set by
    /// `opm start FILE`; `--prune` removes what a file no longer holds).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The environment of the shell that ran `opm start` (opm's own
    /// variables left out): the base the child's environment is built on,
    /// under `env`. Refreshed by `opm restart --update-env`; not compared
    /// when a file is applied again. Equal ones decoded are one shared
    /// copy (see the `caller_env` module).
    #[arg(skip)]
    #[serde(default, with = "caller_env", skip_serializing_if = "Option::is_none")]
    pub caller_env: Option<CallerEnv>,
    /// Start it even if the same command already runs under opm. A request
    /// flag, never stored.
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        value_parser = clap::value_parser!(bool)
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    // --- end of deploy options
    // --- Logs (issue 13) ---
    /// Rotate a log when it passes this size (e.g. 10M; default: [logs] max_size in config.toml, 10M)
    #[arg(long, value_name = "SIZE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_size: Option<Bytes>,
    /// Rotated files kept per log (default: [logs] files in config.toml, 5)
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_files: Option<u32>,
    /// The file stdout goes to (relative to --cwd, or absolute; its folder is created; default: NAME-ID.out.log in opm's logs folder)
    #[arg(long, value_name = "FILE", visible_alias = "output")]
    #[serde(default, alias = "output", skip_serializing_if = "Option::is_none")]
    pub out_file: Option<String>,
    /// The file stderr goes to (as --out-file; default: NAME-ID.err.log in opm's logs folder)
    #[arg(long, value_name = "FILE", visible_alias = "error-file")]
    #[serde(
        default,
        alias = "error_file",
        alias = "error",
        skip_serializing_if = "Option::is_none"
    )]
    pub err_file: Option<String>,
    /// Both streams to one file: --out-file, else NAME-ID.log in opm's logs folder
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        value_parser = clap::value_parser!(bool)
    )]
    #[serde(
        default,
        alias = "combine_logs",
        skip_serializing_if = "Option::is_none"
    )]
    pub merge_logs: Option<bool>,
    // --- end of logs ---
    // --- Watch and users (issue 14) ---
    /// Changes matching this glob do not restart (relative to each watched path; repeatable; e.g. logs, *.log, **/tmp/*)
    #[arg(long = "ignore", value_name = "GLOB")]
    #[serde(default, with = "watch_paths", skip_serializing_if = "Vec::is_empty")]
    pub ignore_watch: Vec<String>,
    /// Restart once the watched files have been quiet this long (default 300ms)
    #[arg(long, value_name = "DURATION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_delay: Option<Millis>,
    /// Run the process as this user, a name or a uid (the daemon must run as root)
    #[arg(long, value_name = "USER")]
    #[serde(
        default,
        alias = "uid",
        deserialize_with = "name_or_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<String>,
    /// Run the process with this group, a name or a gid (default: the user's primary group)
    #[arg(long, value_name = "GROUP")]
    #[serde(
        default,
        alias = "gid",
        deserialize_with = "name_or_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub group: Option<String>,
    // --- end of watch and users ---
    // --- Instances (issue 14) ---
    /// Run N copies under this name, each with its own id, pid and logs (`max`: one per CPU; -1: one less)
    #[arg(long, short = 'i', value_name = "N|max", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Instances>,
    /// A variable of the environment (e.g. PORT) raised by each copy's index: PORT=3000 gives 3000, 3001...
    #[arg(long, value_name = "VAR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_var: Option<String>,
    /// Which copy of its group this is (0…N-1): set by opm, never given.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    // --- end of instances ---
    // --- Readiness (issue 14) ---
    /// Online only once the process sends READY=1 to $NOTIFY_SOCKET (systemd's notify protocol); `reload` then starts the new run before stopping the old
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        value_parser = clap::value_parser!(bool)
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ready: Option<bool>,
    /// Online only once the process listens on this TCP port; `reload` then starts the new run before stopping the old
    #[arg(long, value_name = "PORT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_port: Option<u16>,
    /// How long a start waits to be ready before it is reported not ready, and a reload before it gives up and keeps the old run (default 30s)
    #[arg(long, value_name = "DURATION")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_timeout: Option<Millis>,
    // --- end of readiness ---
    /// `running` or `stopped` (create it without starting it). The API's
    /// older spelling `"stopped": true` is read as `stopped`.
    #[arg(skip)]
    #[serde(default, alias = "stopped", skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredState>,
    /// Store it even when its program cannot be found or run now (`opm
    /// restore`: a saved process is never dropped). A request flag, never
    /// stored.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<bool>,
    // --- Restart policy (issue 14) ---
    /// When an exit is restarted: `always` (the default), `on-failure`
    /// (not after exit code 0) or `never` (what `autorestart = false`
    /// means). The flag is `opm start --restart` (`opm update` reads its own
    /// `--restart`, which also means "restart now").
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// Exit codes after which the process is not restarted, comma-separated (e.g. 0,3)
    #[arg(
        long,
        value_name = "CODES",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_exit_codes: Vec<i32>,
    /// Restart (or start again, once exited) at each match of a cron expression, local time: "0 3 * * *", or six fields with seconds first
    #[arg(long, value_name = "CRON")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_restart: Option<String>,
    // --- end of restart policy ---
}

impl ProcessDef {
    /// Whether an exit may be restarted at all (`restart` is not `never`).
    pub fn autorestart(&self) -> bool {
        self.restart_policy() != RestartPolicy::Never
    }
    /// `restart`, else `never` for `autorestart = false`, else `always`.
    pub fn restart_policy(&self) -> RestartPolicy {
        match (self.restart, self.autorestart) {
            (Some(policy), _) => policy,
            (None, Some(false)) => RestartPolicy::Never,
            (None, _) => RestartPolicy::Always,
        }
    }
    /// The fixed wait before every automatic restart, when one is asked
    /// for (`restart_delay` given); none by default.
    pub fn fixed_restart_delay_ms(&self) -> u64 {
        self.restart_delay.map_or(0, |d| d.0)
    }
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS)
    }
    /// The base of the crash backoff: `restart_delay`, else 100 ms.
    pub fn restart_delay_ms(&self) -> u64 {
        self.restart_delay.map_or(DEFAULT_RESTART_DELAY_MS, |d| d.0)
    }
    pub fn min_uptime_ms(&self) -> u64 {
        self.min_uptime.map_or(DEFAULT_MIN_UPTIME_MS, |d| d.0)
    }
    pub fn kill_signal(&self) -> Signal {
        self.kill_signal.unwrap_or(Signal::TERM)
    }
    pub fn kill_timeout_ms(&self) -> u64 {
        self.kill_timeout.map_or(DEFAULT_KILL_TIMEOUT_MS, |d| d.0)
    }
    pub fn max_memory(&self) -> Option<u64> {
        self.max_memory.map(|b| b.0)
    }
    /// The log cap: its own, else `default` (`[logs] max_size`).
    pub fn max_log_size(&self, default: u64) -> u64 {
        self.max_log_size.map_or(default, |b| b.0)
    }
    /// Rotated files kept: its own, else `default` (`[logs] files`).
    pub fn log_files(&self, default: u32) -> u32 {
        self.log_files.unwrap_or(default)
    }
    /// Whether both streams go to one file: `merge_logs`, or the same
    /// `out_file` and `err_file`.
    pub fn logs_merged(&self) -> bool {
        self.merge_logs == Some(true) || (self.out_file.is_some() && self.out_file == self.err_file)
    }

    /// How long the watched files must be quiet before a restart.
    pub fn watch_delay_ms(&self) -> u64 {
        self.watch_delay.map_or(DEFAULT_WATCH_DELAY_MS, |d| d.0)
    }
    pub fn wait_ready(&self) -> bool {
        self.wait_ready.unwrap_or(false)
    }
    /// Whether the process says when it is ready (`wait_ready` or `ready_port`).
    pub fn awaits_readiness(&self) -> bool {
        self.wait_ready() || self.ready_port.is_some()
    }
    pub fn listen_timeout_ms(&self) -> u64 {
        self.listen_timeout
            .map_or(DEFAULT_LISTEN_TIMEOUT_MS, |d| d.0)
    }

    /// The same definition with every default written out: what `opm save`
    /// writes and `opm info` shows.
    pub fn filled(&self) -> ProcessDef {
        ProcessDef {
            // One key says it: `restart` (`autorestart = false` is `never`).
            autorestart: None,
            restart: Some(self.restart_policy()),
            max_restarts: Some(self.max_restarts()),
            // Unset is no fixed delay (the backoff starts from the
            // default): written out, it would ask for one.
            restart_delay: self.restart_delay,
            min_uptime: Some(Millis(self.min_uptime_ms())),
            kill_signal: Some(self.kill_signal()),
            kill_timeout: Some(Millis(self.kill_timeout_ms())),
            watch_delay: (!self.watch.is_empty()).then(|| Millis(self.watch_delay_ms())),
            wait_ready: Some(self.wait_ready()),
            listen_timeout: Some(Millis(self.listen_timeout_ms())),
            ..self.clone()
        }
    }

    /// Every problem of the options' values at once (what needs no file
    /// system: the working directory and the command are the service's).
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                problems.push(format!("invalid environment variable {k:?}: a name needs no '=' or NUL, a value no NUL"));
            }
        }
        if self.restart_delay_ms() > 3_600_000 {
            problems.push("restart delay must be at most 1 h".into());
        }
        if self.min_uptime_ms() > 86_400_000 {
            problems.push("min uptime must be at most 24 h".into());
        }
        if self.kill_timeout_ms() > 600_000 {
            problems.push("kill timeout must be at most 10 minutes".into());
        }
        if self.max_memory() == Some(0) {
            problems.push("max memory must be more than 0".into());
        }
        if self.max_log_size.is_some_and(|b| b.0 < MIN_LOG_SIZE) {
            problems.push("max log size must be at least 64K".into());
        }
        if self.log_files.is_some_and(|n| n > MAX_LOG_FILES) {
            problems.push(format!("log files must be at most {MAX_LOG_FILES}"));
        }
        if self
            .watch
            .iter()
            .any(|w| w.trim().is_empty() || w.contains('\0'))
        {
            problems.push("a watched path is empty or holds a NUL byte".into());
        }
        if let Err(e) = ignore_globs(&self.ignore_watch) {
            problems.push(e);
        }
        if self.watch_delay_ms() > 3_600_000 {
            problems.push("watch delay must be at most 1 h".into());
        }
        for (what, v) in [("user", &self.user), ("group", &self.group)] {
            if v.as_deref()
                .is_some_and(|v| v.trim().is_empty() || v.contains(['\0', ':']))
            {
                problems.push(format!("the {what} must be a name or a number"));
            }
        }
        if let Some(n) = self.instances {
            if let Err(e) = n.check() {
                problems.push(e);
            }
        }
        if let Some(v) = &self.increment_var {
            if v.is_empty() || v.contains(['=', '\0']) {
                problems.push(format!("increment_var {v:?} is not a variable name"));
            } else if self.instances.is_none() {
                problems.push(
                    "increment_var goes with instances (it is raised by each copy's index)".into(),
                );
            }
        }
        if let (Some(policy), Some(auto)) = (self.restart, self.autorestart) {
            if auto != (policy != RestartPolicy::Never) {
                problems.push(format!(
                    "autorestart = {auto} contradicts restart = {policy}: give one of them (autorestart = false is restart = never)"
                ));
            }
        }
        if let Some(code) = self
            .stop_exit_codes
            .iter()
            .find(|c| !(0..=255).contains(*c))
        {
            problems.push(format!(
                "stop exit code {code} is not an exit code (0 to 255)"
            ));
        }
        if let Some(expr) = &self.cron_restart {
            if let Err(e) = parse_cron(expr) {
                problems.push(e);
            }
        }
        if self.listen_timeout_ms() > 3_600_000 {
            problems.push("listen timeout must be at most 1 h".into());
        }
        if self.ready_port == Some(0) {
            problems.push("ready port must be 1 to 65535".into());
        }
        for (key, path) in [("out_file", &self.out_file), ("err_file", &self.err_file)] {
            match path.as_deref() {
                Some("") => problems.push(format!("{key} is empty")),
                Some(p) if p.contains('\0') => problems.push(format!("{key} contains a NUL byte")),
                Some(p) if p.ends_with('/') => {
                    problems.push(format!("{key} {p:?} names a folder: name a file in it"))
                }
                _ => {}
            }
        }
        if self.merge_logs == Some(true)
            && self.err_file.is_some()
            && self.err_file != self.out_file
        {
            problems.push(
                "merge_logs writes both streams to the out file: leave err_file out (or make it the same as out_file)"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Whether any option beyond the script was given (for `opm start
    /// FILE`, where options belong in the file).
    pub fn has_options(&self) -> bool {
        let bare = ProcessDef {
            script: self.script.clone(),
            ..ProcessDef::default()
        };
        *self != bare
    }

    /// The command line it runs: the interpreter and its arguments (when
    /// given), the script, then `args` (quoted for the shell when needed).
    pub fn command_line(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if let Some(i) = self
            .interpreter
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            words.push(i.to_string());
            if let Some(a) = self
                .interpreter_args
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty())
            {
                words.push(a.to_string());
            }
        }
        words.push(self.script.trim().to_string());
        words.extend(self.args.iter().map(|a| shell_quote(a)));
        words.join(" ")
    }

    /// Whether it asks to be created stopped.
    pub fn stopped(&self) -> bool {
        self.desired == Some(DesiredState::Stopped)
    }
}

impl ProcessDef {
    /// The variables that tell a copy of a group which one it is:
    /// `OPM_INSTANCE` and `NODE_APP_INSTANCE` (PM2's), and `increment_var`
    /// raised by the index. Its base value comes from `env`, else the
    /// caller's environment, else `inherited` (the daemon's own).
    pub fn instance_env(
        &self,
        inherited: impl Fn(&str) -> Option<String>,
    ) -> Vec<(String, String)> {
        let Some(index) = self.instance else {
            return Vec::new();
        };
        let mut out = vec![
            ("OPM_INSTANCE".to_string(), index.to_string()),
            ("NODE_APP_INSTANCE".to_string(), index.to_string()),
        ];
        if let Some(var) = &self.increment_var {
            if let Ok(Some(base)) = self.increment_base(inherited) {
                out.push((var.clone(), (base + u64::from(index)).to_string()));
            }
        }
        out
    }

    /// The number `increment_var` starts from (see `instance_env`), or why
    /// there is none.
    pub fn increment_base(
        &self,
        inherited: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<u64>, String> {
        let Some(var) = &self.increment_var else {
            return Ok(None);
        };
        let value = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
            .or_else(|| self.caller_env.as_ref().and_then(|c| c.get(var).cloned()))
            .or_else(|| inherited(var));
        match value {
            Some(v) => {
                v.trim().parse::<u64>().map(Some).map_err(|_| {
                    format!("increment_var {var}: its value {v:?} is not a whole number")
                })
            }
            None => Err(format!(
                "increment_var {var}: give its first value (e.g. --env {var}=3000)"
            )),
        }
    }
}

/// A word as the shell reads it back: as it is when plain, else in single quotes.
pub fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// When an exit is followed by a restart (`restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Every exit (today's behaviour, and the default).
    Always,
    /// Every exit but a clean one (exit code 0).
    #[serde(alias = "on_failure")]
    OnFailure,
    /// No exit (`autorestart = false`, `--no-autorestart`).
    Never,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

/// Reads a `cron_restart` expression: five fields (minute hour day month
/// weekday), or six with seconds first; `@daily` and the like too.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr.trim())
        .map_err(|e| {
            format!(
                "cron_restart {expr:?} is not a cron expression ({e}): give five fields \"minute hour day month weekday\" (e.g. \"0 3 * * *\"), or six with seconds first"
            )
        })
}

/// `desired` of a definition: what to do with it once created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

impl<'de> Deserialize<'de> for DesiredState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DesiredState;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"running\" or \"stopped\"")
            }
            /// The API's older `"stopped": true|false`.
            fn visit_bool<E: serde::de::Error>(self, stopped: bool) -> Result<DesiredState, E> {
                Ok(if stopped {
                    DesiredState::Stopped
                } else {
                    DesiredState::Running
                })
            }
            fn visit_str<E: serde::de::Error>(self, w: &str) -> Result<DesiredState, E> {
                match w {
                    "running" => Ok(DesiredState::Running),
                    "stopped" => Ok(DesiredState::Stopped),
                    _ => Err(E::custom(format!(
                        "desired = {w:?} must be \"running\" or \"stopped\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

// --- Value types ---------------------------------------------------------

/// A duration in milliseconds. Reads `500ms`, `2s`, `1.5m`, `1h` or a bare
/// number of milliseconds (a string or, in JSON and TOML, a number); writes
/// `2s` when whole seconds, else `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub u64);

impl FromStr for Millis {
    type Err = String;
    fn from_str(s: &str) -> Result<Millis, String> {
        let t = s.trim();
        let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1000.0)
        } else if let Some(n) = t.strip_suffix('m') {
            (n, 60_000.0)
        } else if let Some(n) = t.strip_suffix('h') {
            (n, 3_600_000.0)
        } else {
            (t, 1.0)
        };
        let bad = || format!("{s:?} is not a duration (e.g. 500ms, 2s, 1m)");
        let v: f64 = num.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || v < 0.0 || v * mult > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Millis((v * mult).round() as u64))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 && self.0 % 1000 == 0 {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

/// A size in bytes. Reads `100M`, `1.5G`, `512K` or a bare number of bytes
/// (a string or a number); writes the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Bytes, String> {
        let t = s.trim().trim_end_matches(['b', 'B']).trim_end_matches('i');
        let (num, mult) = match t.chars().last() {
            Some('K' | 'k') => (&t[..t.len() - 1], 1024.0),
            Some('M' | 'm') => (&t[..t.len() - 1], 1024.0 * 1024.0),
            Some('G' | 'g') => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
            _ => (t, 1.0),
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 100M, 1G, 512K)"))?;
        if !v.is_finite() || v <= 0.0 || v * mult > u64::MAX as f64 {
            return Err(format!("{s:?} is not a size above 0 (e.g. 100M, 1G, 512K)"));
        }
        Ok(Bytes((v * mult).round() as u64))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A signal, read as a name (`SIGINT`, `INT`, any case) or a number (`2`),
/// written as its name (`SIGINT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub nix::sys::signal::Signal);

impl Signal {
    pub const TERM: Signal = Signal(nix::sys::signal::Signal::SIGTERM);
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Signal, String> {
        use nix::sys::signal::Signal as Nix;
        let t = s.trim();
        let found = match t.parse::<i32>() {
            Ok(n) => Nix::try_from(n).ok(),
            Err(_) => {
                let upper = t.to_ascii_uppercase();
                let name = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                Nix::from_str(&name).ok()
            }
        };
        found
            .map(Signal)
            .ok_or_else(|| format!("{s:?} is not a signal (e.g. SIGINT, INT, 2, SIGTERM)"))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// How many copies of a process run: a number, `max` (one per CPU) or a
/// negative number (that many fewer than the CPUs, at least one), as PM2
/// reads `instances` (where 0 also means `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instances(pub i64);

/// The most copies one group may have.
pub const MAX_INSTANCES: u32 = 1024;

impl Instances {
    /// The number of copies on a machine with `cpus` CPUs.
    pub fn count(self, cpus: u32) -> u32 {
        let cpus = i64::from(cpus.max(1));
        let n = match self.0 {
            0 => cpus,
            n if n < 0 => (cpus + n).max(1),
            n => n,
        };
        n.clamp(1, i64::from(MAX_INSTANCES)) as u32
    }

    /// The number of copies on this machine.
    pub fn here(self) -> u32 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        self.count(cpus)
    }

    fn check(self) -> Result<(), String> {
        if self.0 > i64::from(MAX_INSTANCES) || self.0 < -i64::from(MAX_INSTANCES) {
            return Err(format!("instances must be at most {MAX_INSTANCES}"));
        }
        Ok(())
    }
}

impl FromStr for Instances {
    type Err = String;
    fn from_str(s: &str) -> Result<Instances, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Instances(0));
        }
        t.parse::<i64>()
            .map(Instances)
            .map_err(|_| format!("{s:?} is not a number of instances (e.g. 4, max, -1)"))
    }
}

impl fmt::Display for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("max"),
            n => write!(f, "{n}"),
        }
    }
}

impl Serialize for Instances {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            0 => s.serialize_str("max"),
            n => s.serialize_i64(n),
        }
    }
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Instances;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of instances (4, \"max\", -1)")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Instances, E> {
                Ok(Instances(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Instances, E> {
                i64::try_from(n)
                    .map(Instances)
                    .map_err(|_| E::custom(format!("{n} instances is too many")))
            }
            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Instances, E> {
                t.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Serde for the value types: written as their text (`Bytes` as its
/// number), read from a string through `FromStr` or from a number.
macro_rules! text_serde {
    ($t:ty, $expecting:literal, number_as = $num:expr, write_number = $write_num:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match $write_num(self) {
                    Some(n) => s.serialize_u64(n),
                    None => s.collect_str(self),
                }
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<$t, E> {
                        $num(n).map_err(E::custom)
                    }
                    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<$t, E> {
                        match u64::try_from(n) {
                            Ok(n) => self.visit_u64(n),
                            Err(_) => Err(E::custom(format!("{n} is not {}", $expecting))),
                        }
                    }
                    fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<$t, E> {
                        t.parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

text_serde!(
    Millis,
    "a duration (500ms, 2s, 1m, or a number of milliseconds)",
    number_as = |n| Ok::<_, String>(Millis(n)),
    write_number = |_: &Millis| None
);
text_serde!(
    Bytes,
    "a size (100M, 1G, 512K, or a number of bytes)",
    number_as = |n| match n {
        0 => Err("a size must be more than 0".to_string()),
        n => Ok(Bytes(n)),
    },
    write_number = |b: &Bytes| Some(b.0)
);
text_serde!(
    Signal,
    "a signal (SIGINT, INT, or its number)",
    number_as = |n: u64| n.to_string().parse::<Signal>(),
    write_number = |_: &Signal| None
);

/// One `--env` of `opm start` and `opm update`: `K=V` sets a variable, a
/// bare word picks a named set (`env_<word>` of a process file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvArg {
    Var(String, String),
    Set(String),
}

impl FromStr for EnvArg {
    type Err = String;
    fn from_str(s: &str) -> Result<EnvArg, String> {
        match s.split_once('=') {
            Some(("", _)) => Err(format!("{s:?} must look like KEY=value or a set name")),
            Some((k, v)) => Ok(EnvArg::Var(k.to_string(), v.to_string())),
            None if !s.is_empty()
                && s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                Ok(EnvArg::Set(s.to_string()))
            }
            None => Err(format!(
                "{s:?} must look like KEY=value (a variable) or a word (a named set such as production)"
            )),
        }
    }
}

/// The environment as a map in files and JSON (`env = { K = "V" }`), a
/// list of pairs in memory (the order `--env` gave, the last of a name wins
/// when read back as a map).
mod env_map {
    use super::*;

    pub fn serialize<S: Serializer>(env: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        map.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// `watch` and `ignore_watch`: one string or a list of strings (one path
/// is written as a string, as before several were allowed, so an older opm
/// reads it back); PM2's `watch: true` is the working directory, `false`
/// none.
mod watch_paths {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Flag(bool),
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a path, a list of paths, or true"))?
        {
            OneOrMany::Flag(true) => Ok(vec![".".into()]),
            OneOrMany::Flag(false) => Ok(Vec::new()),
            OneOrMany::One(s) => Ok(vec![s]),
            OneOrMany::Many(v) => Ok(v),
        }
    }
}

/// `user` and `group`: a name, or a number (PM2's `uid: 1000`).
fn name_or_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrId {
        Id(u32),
        Name(String),
    }
    match NameOrId::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a name or a number"))?
    {
        NameOrId::Id(n) => Ok(Some(n.to_string())),
        NameOrId::Name(s) => Ok(Some(s)),
    }
}

/// The globs of `ignore_watch`, as matched against a path relative to a
/// watched root: a pattern without a `/` names a file or folder at any
/// depth (`logs`, `*.log`, `node_modules`), one with a `/` is anchored at
/// the root (`build/tmp`, `**/tmp/*`); both also cover what is inside a
/// matching folder. `*` stays within one path segment.
pub fn ignore_globs(patterns: &[String]) -> Result<globset::GlobSet, String> {
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        let t = p.trim().trim_start_matches("./").trim_end_matches('/');
        if t.is_empty() {
            return Err(format!("the ignore pattern {p:?} is empty"));
        }
        let base = if t.contains('/') {
            t.to_string()
        } else {
            format!("**/{t}")
        };
        for g in [base.clone(), format!("{base}/**")] {
            let glob = globset::GlobBuilder::new(&g)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("the ignore pattern {p:?} is not a glob: {}", e.kind()))?;
            set.add(glob);
        }
    }
    set.build().map_err(|e| format!("the ignore patterns: {e}"))
}

/// The definition inside a stored record: JSON text (the same keys as the
/// API body), so that adding an option changes no stored shape. Keys this
/// opm does not know (written by a newer one) are dropped on reading, so a
/// downgrade keeps every process with the options it understands.
pub mod as_json {
    use super::*;

    pub fn serialize<S: Serializer>(def: &ProcessDef, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(def).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ProcessDef, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map_err(serde::de::Error::custom)
    }

    pub fn decode(text: &str) -> Result<ProcessDef, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        from_value(value)
    }

    /// A definition from JSON, without the keys this opm does not know.
    pub fn from_value(mut value: serde_json::Value) -> Result<ProcessDef, String> {
        // Each pass drops one key that serde names as unknown; the number
        // of keys bounds the loop.
        loop {
            match serde_json::from_value::<ProcessDef>(value.clone()) {
                Ok(def) => return Ok(def),
                Err(e) => {
                    let msg = e.to_string();
                    let unknown = msg
                        .strip_prefix("unknown field `")
                        .and_then(|rest| rest.split_once('`'))
                        .map(|(key, _)| key.to_string());
                    let removed = match (&unknown, value.as_object_mut()) {
                        (Some(key), Some(obj)) => obj.remove(key).is_some(),
                        _ => false,
                    };
                    if !removed {
                        return Err(msg);
                    }
                }
            }
        }
    }
}

/// Reads a definition that another opm sent in a view (`opm info` of a
/// newer agent), ignoring the options this one does not know.
pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<ProcessDef, D::Error> {
    as_json::from_value(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units_or_as_milliseconds() {
        assert_eq!("150ms".parse(), Ok(Millis(150)));
        assert_eq!("2s".parse(), Ok(Millis(2000)));
        assert_eq!("1m".parse(), Ok(Millis(60_000)));
        assert_eq!("250".parse(), Ok(Millis(250)));
        assert!("soon".parse::<Millis>().is_err());
        assert!("-1s".parse::<Millis>().is_err());
        assert_eq!(
            serde_json::from_str::<Millis>("500").ok(),
            Some(Millis(500))
        );
        assert_eq!(
            serde_json::from_str::<Millis>("\"1s\"").ok(),
            Some(Millis(1000))
        );
        assert_eq!(Millis(3000).to_string(), "3s");
        assert_eq!(Millis(150).to_string(), "150ms");
    }

    #[test]
    fn sizes_read_with_units_or_as_bytes() {
        assert_eq!("100M".parse(), Ok(Bytes(100 * 1024 * 1024)));
        assert_eq!("1.5G".parse(), Ok(Bytes(1_610_612_736)));
        assert_eq!("2048".parse(), Ok(Bytes(2048)));
        assert!("lots".parse::<Bytes>().is_err());
        assert!("0".parse::<Bytes>().is_err());
        assert_eq!(
            serde_json::from_str::<Bytes>("4096").ok(),
            Some(Bytes(4096))
        );
        assert_eq!(
            serde_json::to_string(&Bytes(4096)).ok(),
            Some("4096".into())
        );
    }

    #[test]
    fn signals_read_as_names_short_names_or_numbers_and_write_as_names() {
        let int = Signal(nix::sys::signal::Signal::SIGINT);
        assert_eq!("SIGINT".parse(), Ok(int));
        assert_eq!("INT".parse(), Ok(int));
        assert_eq!("int".parse(), Ok(int));
        assert_eq!("2".parse(), Ok(int));
        assert!("SIGNOPE".parse::<Signal>().is_err());
        assert!("0".parse::<Signal>().is_err());
        assert!("99".parse::<Signal>().is_err());
        assert_eq!(serde_json::from_str::<Signal>("2").ok(), Some(int));
        assert_eq!(serde_json::to_string(&int).ok(), Some("\"SIGINT\"".into()));
    }

    #[test]
    fn the_api_keys_and_the_file_keys_read_the_same() {
        let api: ProcessDef = serde_json::from_str(
            r#"{"script":"sleep 1","path":"/tmp","restart_delay_ms":1000,"kill_timeout_ms":500,
                "max_memory":1048576,"stopped":true,"env":{"A":"1"},"kill_signal":"SIGINT"}"#,
        )
        .expect("API body");
        let file: ProcessDef = toml::from_str(
            "script = \"sleep 1\"\ncwd = \"/tmp\"\nrestart_delay = \"1s\"\nkill_timeout = \"500ms\"\n\
             max_memory = \"1M\"\ndesired = \"stopped\"\nenv = { A = \"1\" }\nkill_signal = \"INT\"\n",
        )
        .expect("file entry");
        assert_eq!(api, file);
        assert!(api.stopped());
        assert_eq!(api.kill_signal().to_string(), "SIGINT");
    }

    #[test]
    fn a_dump_written_before_the_definition_type_still_reads() {
        // What `opm save` wrote before: every key, sizes as strings.
        let old = "script = \"sleep 1\"\nname = \"a\"\ncwd = \"/\"\nautorestart = true\n\
                   max_restarts = 15\nrestart_delay = \"100ms\"\nmin_uptime = \"10000ms\"\n\
                   kill_timeout = \"3000ms\"\nmax_memory = \"536870912\"\ndesired = \"running\"\n";
        let def: ProcessDef = toml::from_str(old).expect("old dump entry");
        assert_eq!(def.max_memory(), Some(536_870_912));
        assert_eq!(def.min_uptime_ms(), 10_000);
        assert_eq!(def.kill_signal(), Signal::TERM);
        assert!(!def.stopped());
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = serde_json::from_str::<ProcessDef>(r#"{"script":"x","kill_sigal":"INT"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kill_sigal"), "{e}");
    }

    #[test]
    fn a_stored_definition_with_a_key_from_a_newer_opm_still_reads() {
        let def =
            as_json::decode(r#"{"script":"x","kill_signal":"SIGINT","future":1}"#).expect("read");
        assert_eq!(def.kill_signal().to_string(), "SIGINT");
        assert!(as_json::decode(r#"{"script":1}"#).is_err());
    }

    #[test]
    fn stored_records_from_before_read_the_same_and_share_one_caller_environment() {
        // As the store holds a `Spec`: bincode around the definition's JSON.
        #[derive(Serialize, Deserialize)]
        struct Record {
            #[serde(with = "as_json")]
            def: ProcessDef,
        }
        let before =
            r#"{"script":"sleep 1","caller_env":{"HOME":"/home/stored","PATH":"/usr/bin"}}"#;
        let bytes = bincode::serialize(&before).expect("encode");
        let one: Record = bincode::deserialize(&bytes).expect("decode");
        let two: Record = bincode::deserialize(&bytes).expect("decode");
        let (a, b) = (one.def.caller_env.as_ref(), two.def.caller_env.as_ref());
        assert_eq!(
            a.and_then(|e| e.get("HOME")).map(String::as_str),
            Some("/home/stored")
        );
        assert!(std::sync::Arc::ptr_eq(a.expect("env"), b.expect("env")));
        // Written back, the record is the bytes it was.
        assert_eq!(bincode::serialize(&one).expect("encode"), bytes);
    }

    #[test]
    fn a_filled_definition_writes_every_default_and_reads_back_the_same() {
        let def = ProcessDef {
            script: "sleep 1".into(),
            ..ProcessDef::default()
        }
        .filled();
        assert_eq!(def.kill_signal, Some(Signal::TERM));
        assert_eq!(def.kill_timeout, Some(Millis(DEFAULT_KILL_TIMEOUT_MS)));
        let text = toml::to_string(&def).expect("toml");
        assert!(text.contains("kill_signal = \"SIGTERM\""), "{text}");
        assert_eq!(toml::from_str::<ProcessDef>(&text).ok(), Some(def));
    }

    #[test]
    fn watch_reads_one_path_a_list_or_true_and_writes_one_path_as_before() {
        let one: ProcessDef = serde_json::from_str(r#"{"script":"x","watch":"src"}"#).expect("one");
        assert_eq!(one.watch, vec!["src".to_string()]);
        assert_eq!(
            serde_json::to_value(&one).expect("json")["watch"],
            serde_json::json!("src"),
            "an older opm reads a single path back"
        );
        let many: ProcessDef = toml::from_str(
            "script = \"x\"\nwatch = [\"a\", \"b\"]\nignore_watch = \"logs\"\nwatch_delay = \"1s\"\n\
             user = \"nobody\"\ngid = 65534\n",
        )
        .expect("many");
        assert_eq!(many.watch, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(many.ignore_watch, vec!["logs".to_string()]);
        assert_eq!(many.watch_delay_ms(), 1000);
        assert_eq!(many.user.as_deref(), Some("nobody"));
        assert_eq!(many.group.as_deref(), Some("65534"));
        let back: ProcessDef =
            toml::from_str(&toml::to_string(&many.filled()).expect("toml")).expect("back");
        assert_eq!(back, many.filled());
        let pm2: ProcessDef =
            serde_json::from_str(r#"{"script":"x","watch":true,"uid":33}"#).expect("pm2");
        assert_eq!(pm2.watch, vec![".".to_string()]);
        assert_eq!(pm2.user.as_deref(), Some("33"));
        assert!(serde_json::from_str::<ProcessDef>(r#"{"script":"x","watch":3}"#).is_err());
        let bad = ProcessDef {
            ignore_watch: vec!["a[".into()],
            user: Some(String::new()),
            ..one
        };
        let e = bad.check().expect_err("refused");
        assert!(e.contains("a[") && e.contains("user"), "{e}");
    }

    #[test]
    fn the_cli_flags_parse_into_the_same_definition() {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            def: ProcessDef,
        }
        use clap::Parser;
        let bare = Cmd::try_parse_from(["start", "sleep 1"])
            .expect("parse")
            .def;
        assert_eq!(bare.autorestart, None, "absent flag is no choice");
        assert!(!bare.has_options());
        let full = Cmd::try_parse_from([
            "start",
            "sleep 1",
            "--no-autorestart",
            "--kill-signal",
            "INT",
            "--kill-timeout",
            "2s",
            "--max-memory",
            "1M",
        ])
        .expect("parse")
        .def;
        assert_eq!(full.autorestart, Some(false));
        assert_eq!(full.kill_signal().to_string(), "SIGINT");
        assert_eq!(full.kill_timeout_ms(), 2000);
        assert_eq!(full.max_memory(), Some(1024 * 1024));
        assert!(Cmd::try_parse_from(["start", "x", "--kill-signal", "NOPE"]).is_err());
        let watch = |args: &[&str]| {
            let d = Cmd::try_parse_from(args).expect("parse").def;
            (d.script, d.watch)
        };
        let v = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            watch(&["start", "app.js", "--watch"]),
            ("app.js".into(), v(&["."]))
        );
        assert_eq!(
            watch(&["start", "--watch", "src", "--watch=lib", "app.js"]),
            ("app.js".into(), v(&["src", "lib"]))
        );
        assert_eq!(
            watch(&["start", "--watch", "--name", "a", "app.js"]),
            ("app.js".into(), v(&["."]))
        );
        // The CLI takes the value back as the script (`cli::process::start`).
        assert_eq!(
            watch(&["start", "--watch", "app.js"]),
            (String::new(), v(&["app.js"]))
        );
        assert_eq!(
            "B=x=y".parse::<EnvArg>(),
            Ok(EnvArg::Var("B".into(), "x=y".into()))
        );
        assert_eq!(
            "production".parse::<EnvArg>(),
            Ok(EnvArg::Set("production".into()))
        );
        assert!("=x".parse::<EnvArg>().is_err());
        assert!("a b".parse::<EnvArg>().is_err());
    }
    #[test]
    fn the_restart_policy_comes_from_restart_or_autorestart_and_a_contradiction_is_refused() {
        let file = |text: &str| toml::from_str::<ProcessDef>(text).expect("entry");
        assert_eq!(
            file("script = \"x\"").restart_policy(),
            RestartPolicy::Always
        );
        assert_eq!(
            file("script = \"x\"\nautorestart = false").restart_policy(),
            RestartPolicy::Never
        );
        let on_failure = file("script = \"x\"\nrestart = \"on-failure\"");
        assert_eq!(on_failure.restart_policy(), RestartPolicy::OnFailure);
        assert!(on_failure.autorestart());
        let bad = toml::from_str::<ProcessDef>("script = \"x\"\nrestart = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("sometimes") && bad.contains("on-failure"),
            "{bad}"
        );
        let e = file("script = \"x\"\nrestart = \"always\"\nautorestart = false")
            .check()
            .unwrap_err();
        assert!(e.contains("contradicts"), "{e}");
        assert!(
            file("script = \"x\"\nrestart = \"never\"\nautorestart = false")
                .check()
                .is_ok()
        );
    }

    #[test]
    fn stop_exit_codes_and_cron_restart_are_checked() {
        let def = |codes: Vec<i32>, cron: Option<&str>| ProcessDef {
            script: "x".into(),
            stop_exit_codes: codes,
            cron_restart: cron.map(str::to_string),
            ..ProcessDef::default()
        };
        assert!(def(vec![0, 3, 255], Some("0 3 * * *")).check().is_ok());
        assert!(def(vec![], Some("*/2 * * * * *")).check().is_ok());
        assert!(def(vec![], Some("@daily")).check().is_ok());
        let e = def(vec![256], Some("0 3 * *")).check().unwrap_err();
        assert!(e.contains("stop exit code 256"), "{e}");
        assert!(
            e.contains("cron_restart \"0 3 * *\" is not a cron expression"),
            "{e}"
        );
        assert!(def(vec![], Some("61 * * * *")).check().is_err());
    }

    #[test]
    fn a_filled_definition_says_the_policy_once_and_asks_for_no_fixed_delay() {
        let def = ProcessDef {
            script: "x".into(),
            autorestart: Some(false),
            ..ProcessDef::default()
        }
        .filled();
        assert_eq!(
            (def.autorestart, def.restart),
            (None, Some(RestartPolicy::Never))
        );
        assert_eq!(def.restart_delay, None, "unset stays unset: no fixed delay");
        assert_eq!(def.fixed_restart_delay_ms(), 0);
        let text = toml::to_string(&def).expect("toml");
        assert!(text.contains("restart = \"never\""), "{text}");
        assert_eq!(toml::from_str::<ProcessDef>(&text).ok(), Some(def));
    }

    #[test]
    fn stop_exit_codes_parse_from_a_comma_separated_flag() {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            def: ProcessDef,
        }
        use clap::Parser;
        let def = Cmd::try_parse_from([
            "start",
            "x",
            "--stop-exit-codes",
            "0,3",
            "--cron-restart",
            "0 3 * * *",
        ])
        .expect("parse")
        .def;
        assert_eq!(def.stop_exit_codes, [0, 3]);
        assert_eq!(def.cron_restart.as_deref(), Some("0 3 * * *"));
        assert!(Cmd::try_parse_from(["start", "x", "--stop-exit-codes", "zero"]).is_err());
    }
}
