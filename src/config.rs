//! `$OPM_HOME` and `config.toml`: where opm keeps its files, the user's
//! settings with their defaults, validation that reports every problem at
//! once, and in-place edits that keep the user's comments (toml_edit).
//! Touches only files under the home directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic_exact;

/// config.toml may hold tokens: every write leaves it 0600.
pub const CONFIG_MODE: u32 = 0o600;

/// The files of one opm home.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$OPM_HOME`, else `~/.opm`.
    pub fn from_env() -> Result<Home, ConfigError> {
        if let Some(dir) = std::env::var_os("OPM_HOME").filter(|d| !d.is_empty()) {
            return Ok(Home {
                root: PathBuf::from(dir),
            });
        }
        let home = std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .ok_or(ConfigError::NoHome)?;
        Ok(Home {
            root: PathBuf::from(home).join(".opm"),
        })
    }

    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("opm.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.root.join("agent.log")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn dump(&self) -> PathBuf {
        self.root.join("dump.toml")
    }
    pub fn out_log(&self, name: &str, id: u64) -> PathBuf {
        self.logs().join(format!("{name}-{id}.out.log"))
    }
    pub fn err_log(&self, name: &str, id: u64) -> PathBuf {
        self.logs().join(format!("{name}-{id}.err.log"))
    }
    /// The files a process's stdout and stderr go to: its `out_file` and
    /// `err_file` (stored absolute) or the defaults above; with merged logs
    /// both are the out file (default `NAME-ID.log`).
    pub fn process_logs(
        &self,
        name: &str,
        id: u64,
        def: &crate::definition::ProcessDef,
    ) -> (PathBuf, PathBuf) {
        let out = match &def.out_file {
            Some(f) => PathBuf::from(f),
            None if def.logs_merged() => self.logs().join(format!("{name}-{id}.log")),
            None => self.out_log(name, id),
        };
        if def.logs_merged() {
            return (out.clone(), out);
        }
        let err = def
            .err_file
            .as_ref()
            .map_or_else(|| self.err_log(name, id), PathBuf::from);
        (out, err)
    }

    /// Makes the home private before the daemon keeps secrets in it: it must
    /// belong to this user (a home someone else owns is refused), the home
    /// becomes 0700, and `config.toml` and the database 0600 (folders 0700).
    /// Returns what it changed, for the log.
    pub fn make_private(&self) -> Result<Vec<String>, ConfigError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let io = |p: &Path, e| ConfigError::Io(p.to_path_buf(), e);
        let meta = std::fs::metadata(&self.root).map_err(|e| io(&self.root, e))?;
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            let owner = nix::unistd::User::from_uid(meta.uid().into())
                .ok()
                .flatten()
                .map_or_else(
                    || format!("uid {}", meta.uid()),
                    |u| format!("{} (uid {})", u.name, meta.uid()),
                );
            return Err(ConfigError::Foreign {
                path: self.root.clone(),
                owner,
                me,
            });
        }
        let mut changed = Vec::new();
        let mut fix = |path: &Path, mode: u32| -> Result<(), ConfigError> {
            let meta = match std::fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io(path, e)),
            };
            if meta.file_type().is_symlink() || meta.mode() & 0o7777 == mode {
                return Ok(());
            }
            if meta.mode() & 0o077 != 0 {
                changed.push(format!(
                    "{} was {:o}, now {mode:o}",
                    path.display(),
                    meta.mode() & 0o7777
                ));
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io(path, e))
        };
        fix(&self.root, 0o700)?;
        fix(&self.config(), 0o600)?;
        let mut dirs = vec![self.db()];
        while let Some(dir) = dirs.pop() {
            fix(&dir, 0o700)?;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                match entry.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(entry.path()),
                    Ok(t) if t.is_file() => fix(&entry.path(), 0o600)?,
                    _ => {}
                }
            }
        }
        Ok(changed)
    }

    /// Creates the home (mode 0700) and its `logs/` folder.
    pub fn ensure(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [self.root.clone(), self.logs()] {
            if !dir.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| ConfigError::Io(dir.clone(), e))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Standalone,
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole of `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub daemon: DaemonSection,
    /// Other opm daemons the CLI can drive with `--server NAME`.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerEntry>,
    /// Settings of the server role.
    #[serde(default)]
    pub server: ServerSection,
    /// How processes' logs are bounded (each process may override).
    #[serde(default)]
    pub logs: LogsSection,
}

/// `[logs]`: the default cap and rotation of every process's logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsSection {
    /// The size past which a live log is rotated (e.g. "10M").
    #[serde(default = "default_log_max_size")]
    pub max_size: crate::definition::Bytes,
    /// How many rotated files are kept per log.
    #[serde(default = "default_log_files")]
    pub files: u32,
    /// Whether rotated files are gzipped.
    #[serde(default)]
    pub compress: bool,
    /// How often the daemon checks the logs' sizes.
    #[serde(default = "default_log_check_ms")]
    pub check_interval_ms: u64,
}

impl Default for LogsSection {
    fn default() -> Self {
        LogsSection {
            max_size: default_log_max_size(),
            files: default_log_files(),
            compress: false,
            check_interval_ms: default_log_check_ms(),
        }
    }
}

fn default_log_max_size() -> crate::definition::Bytes {
    crate::definition::Bytes(10 * 1024 * 1024)
}
fn default_log_files() -> u32 {
    5
}
fn default_log_check_ms() -> u64 {
    1000
}

/// How a server paces and judges its agents' heartbeats.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The interval the server asks agents to heartbeat at (it grows with
    /// the number of agents, see `max_heartbeats_per_second`).
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// How long past its interval an agent may stay silent before it is offline.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_grace_ms: u64,
    /// The heartbeat rate the server is willing to handle in all.
    #[serde(default = "default_max_heartbeats")]
    pub max_heartbeats_per_second: u64,
    /// A token that lets agents join (register once), and nothing else.
    /// When empty, a server generates one at start and writes it here.
    #[serde(default)]
    pub join_token: String,
    /// The most agents this server keeps; a join beyond it is refused.
    #[serde(default = "default_max_agents")]
    pub max_agents: usize,
    /// How many agents may join through the join token per minute.
    #[serde(default = "default_max_registrations")]
    pub max_registrations_per_minute: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            heartbeat_grace_ms: default_heartbeat_interval_ms(),
            max_heartbeats_per_second: default_max_heartbeats(),
            join_token: String::new(),
            max_agents: default_max_agents(),
            max_registrations_per_minute: default_max_registrations(),
        }
    }
}

impl fmt::Debug for ServerSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSection")
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("heartbeat_grace_ms", &self.heartbeat_grace_ms)
            .field("max_heartbeats_per_second", &self.max_heartbeats_per_second)
            .field("max_agents", &self.max_agents)
            .field(
                "max_registrations_per_minute",
                &self.max_registrations_per_minute,
            )
            .field(
                "join_token",
                &if self.join_token.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .finish()
    }
}

fn default_heartbeat_interval_ms() -> u64 {
    5_000
}
fn default_max_heartbeats() -> u64 {
    200
}
fn default_max_agents() -> usize {
    1000
}
fn default_max_registrations() -> u64 {
    60
}

/// An agent's API port when the config does not choose another.
pub const AGENT_DEFAULT_PORT: u16 = 9877;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    #[serde(default)]
    pub web: WebSection,
    #[serde(default)]
    pub history: HistorySection,
}

/// `[daemon.history]`: the CPU and memory history kept in memory for charts
/// (`GET /daemon/history`, the web UI, `opm monit`). It costs 8 bytes per
/// sample per process (and, on a server, per agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    /// How often every process is sampled.
    #[serde(default = "default_history_interval_ms")]
    pub interval_ms: u64,
    /// How many samples are kept per process (360 × 10 s = one hour).
    #[serde(default = "default_history_samples")]
    pub samples: usize,
    /// On a server: how often every agent's totals are sampled.
    #[serde(default = "default_agent_history_interval_ms")]
    pub agent_interval_ms: u64,
    /// On a server: how many samples are kept per agent (120 × 30 s = one hour).
    #[serde(default = "default_agent_history_samples")]
    pub agent_samples: usize,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            interval_ms: default_history_interval_ms(),
            samples: default_history_samples(),
            agent_interval_ms: default_agent_history_interval_ms(),
            agent_samples: default_agent_history_samples(),
        }
    }
}

fn default_history_interval_ms() -> u64 {
    10_000
}

fn default_history_samples() -> usize {
    360
}

fn default_agent_history_interval_ms() -> u64 {
    30_000
}

fn default_agent_history_samples() -> usize {
    120
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    #[serde(default)]
    pub ui: bool,
    #[serde(default)]
    pub api: bool,
    #[serde(default = "default_address")]
    pub address: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub secure: SecureSection,
    /// Host names (besides the address and loopback names) that requests
    /// may carry in `Host`, e.g. the name of a reverse proxy in front.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The most TCP connections served at once; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most live log streams open at once (unix socket and TCP).
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// TLS on the TCP API.
    #[serde(default)]
    pub tls: TlsSection,
}

/// `[daemon.web.tls]`: on by default on any address but a loopback one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Unset: on for a non-loopback address, off on loopback.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The user's certificate (PEM, the chain from the leaf); with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The user's private key (PEM); with `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl TlsSection {
    /// Whether a listener on `ip` serves TLS.
    pub fn on_for(&self, ip: IpAddr) -> bool {
        self.enabled.unwrap_or(!ip.is_loopback())
    }
}

impl Default for WebSection {
    fn default() -> Self {
        WebSection {
            ui: false,
            api: false,
            address: default_address(),
            port: default_port(),
            secure: SecureSection::default(),
            allowed_hosts: Vec::new(),
            max_connections: default_max_connections(),
            max_streams: default_max_streams(),
            tls: TlsSection::default(),
        }
    }
}

/// The default of `[daemon.web] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The default of `[daemon.web] max_streams`: live log streams open at once.
pub const DEFAULT_MAX_STREAMS: usize = 256;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_streams() -> usize {
    DEFAULT_MAX_STREAMS
}

fn default_address() -> String {
    "127.0.0.1".to_string()
}
fn default_port() -> u16 {
    9876
}

/// The TCP API's token. On by default: a daemon that serves TCP without a
/// configured token generates one and writes it here. `enabled = false` is
/// honoured only on a loopback address.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub token: String,
}

impl Default for SecureSection {
    fn default() -> Self {
        SecureSection {
            enabled: true,
            token: String::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// The shortest token a user may set (a generated one is 64 characters).
pub const MIN_TOKEN_LEN: usize = 16;

// The token never reaches a log line through `{:?}`.
impl fmt::Debug for SecureSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureSection")
            .field("enabled", &self.enabled)
            .field(
                "token",
                &if self.token.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub url: String,
    #[serde(default)]
    pub token: String,
    /// The fingerprint of the server's TLS certificate (`SHA256:…`), for an
    /// https URL: the only certificate trusted there.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl fmt::Debug for ServerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerEntry")
            .field("url", &self.url)
            .field("token", &"<hidden>")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// What a fresh home gets: the defaults, with comments that say what they do.
pub const DEFAULT_CONFIG: &str = r#"# opm configuration. See the README for every key.
# role: "standalone" (default), "server" or "agent"
role = "standalone"

[daemon.web]
ui = false            # serve the web UI at / of the API address
api = false           # serve the HTTP API over TCP
address = "127.0.0.1"
port = 9876           # an agent's default API port is 9877
max_connections = 256 # TCP connections served at once; more are closed at once
max_streams = 256     # live log streams open at once

[daemon.web.secure]
# Every TCP route needs this token (GET /health without it says only that
# the daemon is up). When it is empty, the daemon generates one the first
# time it serves TCP and writes it here (`opm daemon token` prints it).
# enabled = false turns the token off, which opm accepts only on a loopback
# address.
enabled = true
token = ""

[daemon.web.tls]
# On by default on any address but a loopback one (127.0.0.1, ::1), where
# enabled = true turns it on. Without cert and key, opm generates a
# self-signed certificate in OPM_HOME/tls at first need; `opm daemon health`
# shows its fingerprint, which clients pin.
# enabled = true
# cert = "/etc/opm/cert.pem"
# key = "/etc/opm/key.pem"
"#;

/// The default file of opm 0.1.0 and earlier, which had the token off.
/// Read as the current default: the user never chose that setting.
const OLD_DEFAULT_CONFIG: &str = r#"# opm configuration. See the README for every key.
# role: "standalone" (default), "server" or "agent"
role = "standalone"

[daemon.web]
ui = false            # serve the web UI at / of the API address
api = false           # serve the HTTP API over TCP
address = "127.0.0.1"
port = 9876           # an agent's default API port is 9877

[daemon.web.secure]
enabled = false       # require a token on every TCP route but GET /health
token = ""
"#;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("neither OPM_HOME nor HOME is set: cannot tell where opm keeps its files")]
    NoHome,
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{path} belongs to {owner}, not to you (uid {me}): opm keeps its tokens there, so it uses only a home of its own. Set OPM_HOME to a folder you own, or give this one to yourself (chown)")]
    Foreign {
        path: PathBuf,
        owner: String,
        me: u32,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} is not valid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads `config.toml`, writing the defaults first when it does not exist.
    pub fn load_or_create(home: &Home) -> Result<Config, ConfigError> {
        let path = home.config();
        match std::fs::read_to_string(&path) {
            Ok(text) if text == OLD_DEFAULT_CONFIG => {
                write_atomic_exact(&path, DEFAULT_CONFIG.as_bytes(), CONFIG_MODE)
                    .map_err(|e| ConfigError::Io(path.clone(), e))?;
                Config::parse(DEFAULT_CONFIG, &path)
            }
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                home.ensure()?;
                write_atomic_exact(&path, DEFAULT_CONFIG.as_bytes(), CONFIG_MODE)
                    .map_err(|e| ConfigError::Io(path.clone(), e))?;
                Config::parse(DEFAULT_CONFIG, &path)
            }
            Err(e) => Err(ConfigError::Io(path, e)),
        }
    }

    /// Parses and validates; the error names the line and every problem.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Every problem at once, so a user fixes the file in one go.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let web = &self.daemon.web;
        if web.address.parse::<IpAddr>().is_err() {
            problems.push(format!(
                "daemon.web.address = {:?} is not an IP address (e.g. \"127.0.0.1\" or \"0.0.0.0\")",
                web.address
            ));
        }
        if web.port == 0 {
            problems.push("daemon.web.port must be between 1 and 65535".to_string());
        }
        if !(1..=65_536).contains(&web.max_connections) {
            problems.push("daemon.web.max_connections must be between 1 and 65536".to_string());
        }
        if !(1..=65_536).contains(&web.max_streams) {
            problems.push("daemon.web.max_streams must be between 1 and 65536".to_string());
        }
        let token = &web.secure.token;
        if !token.is_empty() && token.trim().len() < MIN_TOKEN_LEN {
            problems.push(format!(
                "daemon.web.secure.token is too short ({} characters): use at least {MIN_TOKEN_LEN}, or leave it empty and the daemon generates one",
                token.trim().len()
            ));
        }
        if token.chars().any(|c| c.is_control() || c == ' ') {
            problems.push(
                "daemon.web.secure.token has spaces or control characters: an HTTP header cannot carry it"
                    .to_string(),
            );
        }
        if let Some(refusal) = self.tcp_refusal(web.api || web.ui || self.role == Role::Server) {
            problems.push(refusal);
        }
        for host in &web.allowed_hosts {
            if host.is_empty()
                || host.contains(['/', ' ', '@'])
                || host.chars().any(char::is_control)
            {
                problems.push(format!(
                    "daemon.web.allowed_hosts: {host:?} is not a host name (e.g. \"opm.example.com\")"
                ));
            }
        }
        let h = &self.daemon.history;
        for (key, ms) in [
            ("interval_ms", h.interval_ms),
            ("agent_interval_ms", h.agent_interval_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                problems.push(format!(
                    "daemon.history.{key} must be between 100 and 3600000"
                ));
            }
        }
        for (key, n) in [("samples", h.samples), ("agent_samples", h.agent_samples)] {
            if n == 0 || n > 10_000 {
                problems.push(format!("daemon.history.{key} must be between 1 and 10000"));
            }
        }
        if self.logs.max_size.0 < crate::definition::MIN_LOG_SIZE {
            problems.push("logs.max_size must be at least 64K".to_string());
        }
        if self.logs.files > crate::definition::MAX_LOG_FILES {
            problems.push(format!(
                "logs.files must be at most {}",
                crate::definition::MAX_LOG_FILES
            ));
        }
        if !(10..=60_000).contains(&self.logs.check_interval_ms) {
            problems.push("logs.check_interval_ms must be between 10 and 60000".to_string());
        }
        if self.server.heartbeat_interval_ms < 100 || self.server.heartbeat_interval_ms > 3_600_000
        {
            problems
                .push("server.heartbeat_interval_ms must be between 100 and 3600000".to_string());
        }
        if self.server.heartbeat_grace_ms > 3_600_000 {
            problems.push("server.heartbeat_grace_ms must be at most 3600000".to_string());
        }
        if self.server.max_heartbeats_per_second == 0 {
            problems.push("server.max_heartbeats_per_second must be at least 1".to_string());
        }
        let join = &self.server.join_token;
        if !join.is_empty()
            && (join.len() < MIN_TOKEN_LEN || join.chars().any(|c| !c.is_ascii_graphic()))
        {
            problems.push(format!("server.join_token must be at least {MIN_TOKEN_LEN} visible characters (or empty: a server then generates one)"));
        }
        if !join.is_empty() && *join == web.secure.token {
            problems.push("server.join_token must differ from daemon.web.secure.token: agents never get the admin token".to_string());
        }
        if self.server.max_agents == 0 || self.server.max_registrations_per_minute == 0 {
            problems.push(
                "server.max_agents and server.max_registrations_per_minute must be at least 1"
                    .to_string(),
            );
        }
        for (name, server) in &self.servers {
            if !(server.url.starts_with("http://") || server.url.starts_with("https://")) {
                problems.push(format!(
                    "servers.{name}.url = {:?} must start with http://",
                    server.url
                ));
            }
        }
        problems
    }

    /// Why TCP may not be served without a token on this address, when
    /// `serves_tcp`: `enabled = false` is honoured only on loopback.
    pub fn tcp_refusal(&self, serves_tcp: bool) -> Option<String> {
        let web = &self.daemon.web;
        (serves_tcp && !web.secure.enabled && !self.loopback()).then(|| {
            format!(
                "daemon.web.address = {:?} is not a loopback address and [daemon.web.secure] enabled = false: opm will not serve TCP there without a token. Remove `enabled = false` and run `opm daemon token` (it generates a token and stores it in config.toml), or set address = \"127.0.0.1\"",
                web.address
            )
        })
    }

    /// Why the daemon may not start serving TCP yet: off loopback the token
    /// must exist before the port opens (set by the user, or generated and
    /// shown by `opm daemon token`), so nothing the network reaches is ever
    /// served with a token nobody has seen. On loopback the daemon makes one.
    pub fn missing_network_token(&self, serves_tcp: bool) -> Option<String> {
        let web = &self.daemon.web;
        (serves_tcp && web.secure.enabled && web.secure.token.is_empty() && !self.loopback()).then(|| {
            format!(
                "daemon.web.address = {:?} is not a loopback address and no token is set: opm will not open a port to the network with a token you have not seen. Run `opm daemon token` (it generates one, stores it in config.toml with mode 0600 and prints it), then start again; or set address = \"127.0.0.1\"",
                web.address
            )
        })
    }

    /// Whether the TCP API's address is a loopback one (a name counts as not).
    fn loopback(&self) -> bool {
        self.daemon
            .web
            .address
            .parse::<IpAddr>()
            .map_or(self.daemon.web.address == "localhost", |ip| {
                ip.is_loopback()
            })
    }

    /// The warning that goes with a token-less TCP API on loopback.
    pub fn tokenless_warning(&self) -> Option<String> {
        (!self.daemon.web.secure.enabled).then(|| {
            format!(
                "the TCP API has no token ([daemon.web.secure] enabled = false): every user of this machine can drive this daemon through {}",
                self.api_address()
            )
        })
    }

    /// `address:port` of the TCP API.
    pub fn api_address(&self) -> String {
        format!("{}:{}", self.daemon.web.address, self.daemon.web.port)
    }
}

/// Edits `config.toml` in place as a document: the user's comments, order
/// and other keys stay as they are. The result must still be a valid
/// configuration before it replaces the file (atomically, mode 0600); a
/// missing file is edited from the default one. Returns the configuration
/// as it now reads.
fn edit_config(
    home: &Home,
    change: impl FnOnce(&mut toml_edit::DocumentMut),
) -> Result<Config, ConfigError> {
    let path = home.config();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_CONFIG.to_string(),
        Err(e) => return Err(ConfigError::Io(path, e)),
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string().trim_end().to_string(),
            })?;
    change(&mut doc);
    let mut new_text = doc.to_string();
    if !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    let config = Config::parse(&new_text, &path)?;
    write_atomic_exact(&path, new_text.as_bytes(), CONFIG_MODE)
        .map_err(|e| ConfigError::Io(path, e))?;
    Ok(config)
}

/// The table at `key` of `parent`, made (without a header of its own when
/// it only holds tables) if the file has none.
fn table<'a>(parent: &'a mut toml_edit::Item, key: &str) -> &'a mut toml_edit::Item {
    let item = &mut parent[key];
    if !item.is_table() {
        let mut t = toml_edit::Table::new();
        t.set_implicit(true);
        *item = toml_edit::Item::Table(t);
    }
    item
}

/// Sets `role` in `config.toml`, keeping the rest of the file as it is.
pub fn set_role(home: &Home, role: Role) -> Result<(), ConfigError> {
    edit_config(home, |doc| doc["role"] = toml_edit::value(role.as_str())).map(|_| ())
}

/// Stores `token` as `[daemon.web.secure] token` with `enabled = true` in
/// `config.toml`, keeping the rest of the file as it is, and returns the
/// configuration as it now reads.
pub fn set_secure_token(home: &Home, token: &str) -> Result<Config, ConfigError> {
    edit_config(home, |doc| {
        let secure = table(table(table(doc.as_item_mut(), "daemon"), "web"), "secure");
        secure["enabled"] = toml_edit::value(true);
        secure["token"] = toml_edit::value(token);
    })
}

/// Stores `token` as `[server] join_token` in `config.toml`, keeping the
/// rest of the file as it is, and returns the configuration as it now reads.
pub fn set_join_token(home: &Home, token: &str) -> Result<Config, ConfigError> {
    edit_config(home, |doc| {
        table(doc.as_item_mut(), "server")["join_token"] = toml_edit::value(token);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("config.toml"))
    }

    #[test]
    fn the_default_file_parses_to_the_defaults() {
        let c = parse(DEFAULT_CONFIG).expect("defaults parse");
        assert_eq!(c.role, Role::Standalone);
        assert_eq!(c.daemon.web.port, 9876);
        assert_eq!(c.daemon.web.address, "127.0.0.1");
        assert!(!c.daemon.web.api && !c.daemon.web.ui);
        assert!(c.daemon.web.secure.enabled, "the token is on by default");
        assert!(c.daemon.web.secure.token.is_empty());
    }

    #[test]
    fn an_empty_file_means_all_defaults() {
        let c = parse("").expect("empty parses");
        assert_eq!(c.daemon.web.port, 9876);
    }

    #[test]
    fn the_documented_server_config_parses() {
        let c = parse(
            "role = \"server\"\n[daemon.web]\napi = true\nui = true\naddress = \"0.0.0.0\"\nport = 9876\n[daemon.web.secure]\nenabled = true\ntoken = \"a-token-of-24-characters\"\n",
        )
        .expect("server config");
        assert_eq!(c.role, Role::Server);
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let e = parse("role = \"server\"\n[daemon.web\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn an_unknown_role_is_refused() {
        let e = parse("role = \"master\"").unwrap_err().to_string();
        assert!(e.contains("master"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = parse(
            "[daemon.web]\naddress = \"nowhere\"\nport = 0\n[daemon.web.secure]\ntoken = \"short\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not an IP address"), "{e}");
        assert!(e.contains("port must be"), "{e}");
        assert!(e.contains("too short (5 characters)"), "{e}");
    }

    #[test]
    fn setting_the_role_keeps_comments_and_other_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        let original =
            "# my comment\nrole = \"standalone\" # inline\n\n[daemon.web]\nport = 1234 # mine\n";
        std::fs::write(home.config(), original).expect("write");
        set_role(&home, Role::Agent).expect("set role");
        let text = std::fs::read_to_string(home.config()).expect("read");
        assert!(text.contains("# my comment"), "{text}");
        assert!(text.contains("port = 1234 # mine"), "{text}");
        assert!(text.contains("role = \"agent\""), "{text}");
        assert_eq!(
            Config::load_or_create(&home).expect("load").role,
            Role::Agent
        );
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let s = SecureSection {
            enabled: true,
            token: "s3cret".into(),
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn a_token_shorter_than_16_characters_is_refused_and_16_is_enough() {
        let e = parse("[daemon.web.secure]\ntoken = \"0123456789abcde\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("too short"), "{e}");
        parse("[daemon.web.secure]\ntoken = \"0123456789abcdef\"\n").expect("16 is enough");
    }

    #[test]
    fn no_token_is_refused_only_off_loopback_and_only_when_tcp_is_served() {
        let off = "[daemon.web.secure]\nenabled = false\n";
        let e = parse(&format!(
            "[daemon.web]\napi = true\naddress = \"0.0.0.0\"\n{off}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not a loopback address") && e.contains("enabled = false"),
            "{e}"
        );
        parse(&format!(
            "role = \"server\"\n[daemon.web]\naddress = \"10.0.0.1\"\n{off}"
        ))
        .expect_err("a server serves TCP");
        parse(&format!("[daemon.web]\naddress = \"0.0.0.0\"\n{off}")).expect("TCP is off");
        let c = parse(&format!(
            "[daemon.web]\napi = true\naddress = \"::1\"\n{off}"
        ))
        .expect("loopback");
        assert!(c.tokenless_warning().is_some());
        assert!(c.tcp_refusal(true).is_none());
    }

    #[test]
    fn the_old_default_file_is_read_as_the_new_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        std::fs::write(home.config(), OLD_DEFAULT_CONFIG).expect("write");
        let c = Config::load_or_create(&home).expect("load");
        assert!(c.daemon.web.secure.enabled);
        // A file the user changed keeps what it says.
        let mine = OLD_DEFAULT_CONFIG.replace("port = 9876", "port = 9000");
        std::fs::write(home.config(), &mine).expect("write");
        assert!(
            !Config::load_or_create(&home)
                .expect("load")
                .daemon
                .web
                .secure
                .enabled
        );
    }

    #[test]
    fn a_stored_token_keeps_the_file_and_its_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path());
        std::fs::write(
            home.config(),
            "# mine\nrole = \"server\" # keep\n[server]\njoin_token = \"\"\n",
        )
        .expect("write");
        std::fs::set_permissions(home.config(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let token = crate::token::random_token().expect("random");
        let c = set_secure_token(&home, &token).expect("store");
        assert_eq!(c.daemon.web.secure.token, token);
        assert!(c.daemon.web.secure.enabled);
        let text = std::fs::read_to_string(home.config()).expect("read");
        assert!(text.contains("# mine") && text.contains("# keep"), "{text}");
        let mode = std::fs::metadata(home.config())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        set_role(&home, Role::Standalone).expect("role");
        let mode = std::fs::metadata(home.config())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a rewrite keeps 0600");
    }

    #[test]
    fn a_home_becomes_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = Home::new(dir.path().join("h"));
        std::fs::create_dir_all(home.db().join("blobs")).expect("mkdir");
        std::fs::write(home.db().join("conf"), "x").expect("write");
        std::fs::write(home.config(), "").expect("write");
        for p in [
            home.root.clone(),
            home.db(),
            home.db().join("conf"),
            home.config(),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let changed = home.make_private().expect("private");
        assert!(changed.len() >= 4, "{changed:?}");
        let mode = |p: PathBuf| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(home.root.clone()), 0o700);
        assert_eq!(mode(home.db()), 0o700);
        assert_eq!(mode(home.db().join("blobs")), 0o700);
        assert_eq!(mode(home.db().join("conf")), 0o600);
        assert_eq!(mode(home.config()), 0o600);
        assert!(home.make_private().expect("again").is_empty());
    }
}
