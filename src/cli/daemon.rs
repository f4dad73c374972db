//! `opm daemon …` and the daemon's start from the CLI: any command that
//! needs the daemon starts it when its socket does not answer, detached in
//! its own session with its output in `daemon.log`.

use std::io::{BufRead, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::format::{self, print_json};
use super::{CliError, Format, Remote};
use crate::client::{Client, ClientError, Endpoint};
use crate::config::{Config, Home, Role};
use crate::daemon::DaemonOptions;
use crate::model::Health;

/// How long the CLI waits for a daemon it started to open its socket.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `daemon stop` waits for the daemon to exit.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The refusal every remote operation gets on an agent.
pub const AGENT_REFUSAL: &str =
    "Agent role cannot perform remote operations. Only local process management is allowed.";

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the daemon if it is not running (adopting or restarting the stored processes)
    Restore(RestoreArgs),
    /// Stop the daemon; managed processes keep running and are adopted by the next daemon
    Stop,
    /// Report the daemon's role, pid, version, processes and API
    Health(HealthArgs),
    /// Print the TCP API's token (generated and stored in config.toml when none is set)
    Token(TokenArgs),
    /// Start the daemon and its processes at boot: write and enable a systemd unit (same as `opm startup`)
    Setup(super::startup::StartupArgs),
    /// Run the daemon in the foreground (what `restore` starts in the background)
    #[command(hide = true)]
    Run(RestoreArgs),
}

#[derive(Debug, Clone, Args, Default)]
pub struct RestoreArgs {
    /// Serve the HTTP API over TCP (config: [daemon.web] api)
    #[arg(long)]
    pub api: bool,
    /// Serve the web UI (implies the API)
    #[arg(long)]
    pub webui: bool,
    /// Refuse a damaged database and leave it untouched, instead of moving it
    /// aside and rebuilding it from its snapshot
    #[arg(long)]
    pub no_recover: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Print the join token agents register with (`[server] join_token`) instead
    #[arg(long)]
    pub join: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

pub fn run_foreground(args: RestoreArgs) -> Result<(), CliError> {
    // First, while this is the only thread: no secret of the environment
    // may reach a managed process, or stay readable in /proc/PID/environ
    // (which shows the environment the process was started with, so the
    // daemon starts itself again without them; the CLI never passes them).
    if crate::SECRET_ENV_VARS
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        if let Ok(exe) = std::env::current_exe() {
            let mut again = Command::new(exe);
            again.args(std::env::args_os().skip(1));
            for name in crate::SECRET_ENV_VARS {
                again.env_remove(name);
            }
            // Returns only when the exec failed: then drop them in place.
            let _ = again.exec();
        }
        crate::daemon::forget_secret_env();
    }
    let home = Home::from_env()?;
    // Descriptors the daemon inherited from whoever started it must not leak
    // into every child it spawns.
    // SAFETY: close_range only flags descriptors close-on-exec; it touches no
    // memory, and nothing of ours is open past stderr yet.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // One malloc arena: the daemon's threads allocate little, and an arena
    // per thread would only add resident memory.
    // SAFETY: mallopt changes an allocator setting before any other thread
    // exists; it takes two integers and touches no memory of ours.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // The daemon needs no terminal and holds no folder busy.
    let _ = std::env::set_current_dir("/");
    crate::daemon::run(
        home,
        DaemonOptions {
            api: args.api,
            webui: args.webui,
            no_recover: args.no_recover,
        },
    )
    .map_err(|e| match e {
        crate::daemon::DaemonError::Store(crate::store::StoreError::Locked(_)) => {
            CliError::Locked(e.to_string())
        }
        e => CliError::Daemon(e.to_string()),
    })
}

fn socket_answers(home: &Home) -> bool {
    std::os::unix::net::UnixStream::connect(home.socket()).is_ok()
}

/// The last lines of `daemon.log`, to say why a daemon did not start.
fn log_tail(home: &Home, since: u64) -> String {
    let Ok(mut f) = std::fs::File::open(home.daemon_log()) else {
        return String::new();
    };
    let _ = f.seek(std::io::SeekFrom::Start(since));
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .collect();
    lines
        .iter()
        .rev()
        .take(5)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts the daemon in the background and waits until its socket answers.
fn spawn_daemon(home: &Home, opts: &RestoreArgs) -> Result<(), CliError> {
    home.ensure()?;
    let log_path = home.daemon_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| CliError::io(format!("cannot open {}", log_path.display()), e))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err_log = log
        .try_clone()
        .map_err(|e| CliError::io(format!("cannot open {}", log_path.display()), e))?;
    let exe = std::env::current_exe().map_err(|e| CliError::io("cannot find the opm binary", e))?;
    let mut cmd = Command::new(exe);
    cmd.args(["daemon", "run"]);
    if opts.api {
        cmd.arg("--api");
    }
    if opts.webui {
        cmd.arg("--webui");
    }
    for name in crate::SECRET_ENV_VARS {
        cmd.env_remove(name);
    }
    if opts.no_recover {
        cmd.arg("--no-recover");
    }
    cmd.env("OPM_HOME", &home.root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; the
    // daemon gets its own session so the terminal's signals never reach it.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::io("cannot start the daemon", e))?;
    let deadline = Instant::now() + DAEMON_START_TIMEOUT;
    loop {
        if socket_answers(home) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another CLI may have started a daemon at the same moment: ours
            // then fails on the database lock while the other one serves.
            if status.code() == Some(super::EXIT_LOCKED)
                && wait_for_socket(home, true, Duration::from_secs(3))
            {
                return Ok(());
            }
            let tail = log_tail(home, log_start);
            return Err(CliError::Daemon(format!(
                "the daemon did not start ({status}){}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(":\n{tail}")
                }
            )));
        }
        if Instant::now() > deadline {
            return Err(CliError::Daemon(format!(
                "the daemon (pid {}) did not open {} within {:?}; see {}",
                child.id(),
                home.socket().display(),
                DAEMON_START_TIMEOUT,
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether the socket takes connections (`answers`) or refuses them (not
/// `answers`) within `within`.
fn wait_for_socket(home: &Home, answers: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if socket_answers(home) == answers {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A client for the local daemon, started first when it is not running.
pub fn local(opts: &RestoreArgs) -> Result<(Client, Home, bool), CliError> {
    let home = Home::from_env()?;
    let started = if socket_answers(&home) {
        false
    } else {
        // A broken config.toml is reported here, before any daemon starts.
        Config::load_or_create(&home)?;
        spawn_daemon(&home, opts)?;
        true
    };
    Ok((Client::new(Endpoint::Unix(home.socket())), home, started))
}

/// The client a process command uses: the local daemon, or `--server`.
pub fn target(remote: &Remote) -> Result<Client, CliError> {
    let Some(server) = &remote.server else {
        return Ok(local(&RestoreArgs::default())?.0);
    };
    let home = Home::from_env()?;
    let config = Config::load_or_create(&home)?;
    if config.role == Role::Agent {
        return Err(CliError::Usage(AGENT_REFUSAL.to_string()));
    }
    // --token and --token-file win over a config entry's token; OPM_TOKEN
    // is for URLs only (an entry already names its token).
    let flag = super::given_token(remote.token.clone(), remote.token_file.as_deref(), "")?;
    let endpoint = match config.servers.get(server) {
        Some(entry) => {
            Endpoint::parse_url(&entry.url, Some(flag.unwrap_or_else(|| entry.token.clone())))?
                .with_fingerprint(remote.fingerprint.as_deref().or(entry.fingerprint.as_deref()))?
        }
        None if server.starts_with("http://") || server.starts_with("https://") => {
            let token = match flag {
                Some(t) => Some(t),
                None => super::given_token(None, None, "OPM_TOKEN")?,
            };
            Endpoint::parse_url(server, token)?.with_fingerprint(remote.fingerprint.as_deref())?
        }
        // On a server, any other name is one of its agents.
        None if config.role == Role::Server => {
            return Ok(local(&RestoreArgs::default())?.0.via_agent(server));
        }
        None => {
            return Err(CliError::Usage(format!(
                "unknown server {server:?}: add [servers.{server}] with url and token to {}, or give a URL",
                home.config().display()
            )))
        }
    };
    Ok(Client::new(endpoint))
}

pub async fn dispatch(cmd: DaemonCommand) -> Result<(), CliError> {
    match cmd {
        DaemonCommand::Restore(args) => restore(args).await,
        DaemonCommand::Stop => stop().await.map(|_| ()),
        DaemonCommand::Health(args) => health(args).await,
        DaemonCommand::Token(args) => token(args),
        DaemonCommand::Setup(args) => super::startup::startup(args),
        DaemonCommand::Run(_) => unreachable!("run is handled before the runtime starts"),
    }
}

async fn restore(args: RestoreArgs) -> Result<(), CliError> {
    let (client, home, started) = local(&args)?;
    let (h, started): (Health, bool) = match client.get("/health").await {
        Ok(h) => (h, started),
        // The socket took the connection and then dropped it unanswered: a
        // daemon killed a moment ago, whose socket lives until its last
        // thread has exited. Once that socket is gone, start the next one.
        Err(ClientError::Http(_))
            if !started && wait_for_socket(&home, false, DAEMON_START_TIMEOUT) =>
        {
            spawn_daemon(&home, &args)?;
            (client.get("/health").await?, true)
        }
        Err(e) => return Err(e.into()),
    };
    if started {
        println!(
            "✔ daemon started (pid {}, role {}, {} processes)",
            h.pid, h.role, h.processes
        );
    } else {
        println!(
            "✔ daemon already running (pid {}, role {}, {} processes)",
            h.pid, h.role, h.processes
        );
        if (args.api || args.webui) && h.api.is_none() {
            println!("  the API is off in this daemon: `opm daemon stop` then `opm daemon restore --api` to turn it on");
        }
    }
    if let Some(r) = &h.recovered {
        for line in recovered_lines(r) {
            println!("  {line}");
        }
    }
    match (&h.api, &h.api_error) {
        (Some(addr), _) => println!(
            "  API: {}",
            h.api_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"))
        ),
        (None, Some(err)) => println!("  API: not serving: {err}"),
        _ => {}
    }
    if let Some(fp) = &h.tls_fingerprint {
        println!("  certificate: {fp} (clients pin it: --fingerprint)");
    }
    if let Some(file) = &h.token_file {
        println!("  token: in {file} ([daemon.web.secure] token); `opm daemon token` prints it");
    }
    for w in &h.warnings {
        println!("  ⚠ {w}");
    }
    if let (true, Some(addr)) = (h.role == Role::Server.as_str(), &h.api) {
        print_join_hint(addr, h.tls_fingerprint.as_deref(), &home);
    }
    Ok(())
}

/// `opm daemon token [--join]`: what config.toml holds. The API token is
/// generated and stored when there is none yet (the daemon would make one
/// the first time it serves TCP), so the answer is always usable.
fn token(args: TokenArgs) -> Result<(), CliError> {
    let home = Home::from_env()?;
    let config = Config::load_or_create(&home)?;
    if args.join {
        if config.server.join_token.is_empty() {
            return Err(CliError::Usage(match config.role {
                Role::Server => format!(
                    "no join token yet: set [server] join_token in {}, or start the server (`opm daemon restore`)",
                    home.config().display()
                ),
                role => format!(
                    "this opm is not a server (role = {role}): join tokens are a server's; set role = \"server\" in {}",
                    home.config().display()
                ),
            }));
        }
        println!("{}", config.server.join_token);
        return Ok(());
    }
    let secure = &config.daemon.web.secure;
    if !secure.enabled {
        return Err(CliError::Usage(format!(
            "the TCP API has no token: [daemon.web.secure] enabled = false in {}. Remove that line to have one",
            home.config().display()
        )));
    }
    if !secure.token.is_empty() {
        println!("{}", secure.token);
        return Ok(());
    }
    home.ensure()?;
    let token = crate::token::random_token().map_err(|e| CliError::io("no randomness", e))?;
    crate::config::set_secure_token(&home, &token)?;
    eprintln!(
        "generated a new token and stored it in {} ([daemon.web.secure] token)",
        home.config().display()
    );
    println!("{token}");
    Ok(())
}

/// How an agent joins this server: the command to run on the agent.
fn print_join_hint(addr: &str, fingerprint: Option<&str>, home: &Home) {
    let scheme = if fingerprint.is_some() {
        "https"
    } else {
        "http"
    };
    let url = match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            format!(
                "{scheme}://{}:{}",
                crate::supervise::proc::hostname(),
                a.port()
            )
        }
        _ => format!("{scheme}://{addr}"),
    };
    let pin = fingerprint.map_or(String::new(), |fp| format!(" --fingerprint {fp}"));
    println!("  agents join with: opm agent connect {url} --name NAME --token JOIN{pin}");
    println!(
        "  JOIN is this server's join token: [server] join_token in {} (`opm daemon token --join` prints it)",
        home.config().display()
    );
}

/// Asks the daemon to stop and waits for its pid to go. Returns whether a
/// daemon was running.
pub async fn stop() -> Result<bool, CliError> {
    let home = Home::from_env()?;
    if !socket_answers(&home) {
        println!("daemon is not running");
        return Ok(false);
    }
    let client = Client::new(Endpoint::Unix(home.socket()));
    let h: Health = client.get("/health").await?;
    let _: serde_json::Value = client.post("/daemon/stop", &serde_json::json!({})).await?;
    let deadline = Instant::now() + DAEMON_STOP_TIMEOUT;
    let pid = nix::unistd::Pid::from_raw(h.pid as i32);
    // A zombie has finished: its parent (whoever adopted it) reaps it later.
    let running = || {
        nix::sys::signal::kill(pid, None).is_ok()
            && crate::supervise::proc::start_time(h.pid).is_some()
    };
    while running() {
        if Instant::now() > deadline {
            return Err(CliError::Daemon(format!(
                "the daemon (pid {}) did not exit within {:?}",
                h.pid, DAEMON_STOP_TIMEOUT
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "✔ daemon stopped (pid {}); {} processes keep running",
        h.pid, h.online
    );
    Ok(true)
}

async fn health(args: HealthArgs) -> Result<(), CliError> {
    let (client, _, _) = local(&RestoreArgs::default())?;
    let h: Health = client.get("/health").await?;
    if args.format == Format::Json {
        return print_json(&h);
    }
    println!("role:        {}", h.role);
    println!("pid:         {}", h.pid);
    println!("version:     {}", h.version);
    println!("uptime:      {}", format::duration(h.uptime_ms));
    println!(
        "processes:   {} ({} online, {} stopped, {} errored)",
        h.processes, h.online, h.stopped, h.errored
    );
    println!("memory:      {}", format::bytes(h.memory));
    match (&h.api, &h.api_error) {
        (Some(a), _) => println!(
            "api:         {}",
            h.api_url.clone().unwrap_or_else(|| format!("http://{a}"))
        ),
        (None, Some(e)) => println!("api:         not serving: {e}"),
        (None, None) => println!("api:         off"),
    }
    if let (Some(on), Some(off)) = (h.agents_online, h.agents_offline) {
        println!("agents:      {on} online, {off} offline");
    }
    if let Some(server) = &h.server {
        let state = if h.connected == Some(true) {
            "connected"
        } else {
            "not connected"
        };
        println!("server:      {server} ({state}; `opm agent status` for details)");
    }
    if let Some(file) = &h.token_file {
        println!("token:       in {file} (`opm daemon token` prints it)");
    }
    if let Some(fp) = &h.tls_fingerprint {
        println!("certificate: {fp}");
    }
    println!("home:        {}", h.home);
    println!("schema:      v{}", h.schema_version);
    for w in &h.warnings {
        println!("warning:     {w}");
    }
    if let Some(r) = &h.recovered {
        let mut lines = recovered_lines(r).into_iter();
        if let Some(first) = lines.next() {
            println!("recovered:   {first}");
        }
        for line in lines {
            println!("             {line}");
        }
    }
    Ok(())
}

/// What `restore` and `health` say about a rebuilt database.
fn recovered_lines(r: &crate::model::Recovered) -> Vec<String> {
    vec![
        format!(
            "⚠ the database was damaged and was rebuilt at {}: {}",
            format::timestamp(r.at_ms),
            r.reason
        ),
        format!(
            "from {} (written {}, {} processes)",
            r.from,
            format::timestamp(r.snapshot_written_ms),
            r.processes
        ),
        match &r.damaged_copy {
            Some(p) => format!("the damaged copy is kept at {p}"),
            None => "the database folder was missing: nothing to keep".to_string(),
        },
    ]
}

/// `opm kill`: stop every process, then the daemon.
pub async fn kill() -> Result<(), CliError> {
    let home = Home::from_env()?;
    if !socket_answers(&home) {
        println!("daemon is not running");
        return Ok(());
    }
    let client = Client::new(Endpoint::Unix(home.socket()));
    let r: crate::model::ActionResponse = client
        .post(
            "/daemon/action",
            &crate::model::ActionRequest {
                id: crate::model::Target::Name("all".into()),
                action: crate::model::ActionKind::Stop,
                caller_env: None,
                signal: None,
                process_group: false,
            },
        )
        .await?;
    println!("✔ stopped {} processes", r.processes.len());
    stop().await.map(|_| ())
}
