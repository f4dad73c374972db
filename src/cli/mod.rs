//! The command line: clap definitions and dispatch. One file per command
//! group (`process`, `daemon`); printing lives here, errors become a message
//! on stderr and an exit code in one place (`CliError`).

pub mod agent;
pub mod daemon;
pub mod events;
pub mod format;
pub mod import;
pub mod monit;
pub mod process;
pub mod scale;
pub mod startup;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::ClientError;
use crate::config::ConfigError;

#[derive(Debug, Parser)]
#[command(
    name = "opm",
    version,
    about = "A fast, crash-safe process manager",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    #[default]
    Default,
    Json,
}

/// Where a process command is carried out.
#[derive(Debug, Clone, Args, Default)]
pub struct Remote {
    /// Carry out the command on another opm: a [servers.NAME] entry of config.toml, or a URL
    #[arg(long, value_name = "S", global = false)]
    pub server: Option<String>,
    /// The server's token (visible to other users in `ps`: prefer --token-file or OPM_TOKEN)
    #[arg(
        long,
        value_name = "T",
        requires = "server",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the server's token from file F (its first line)
    #[arg(long, value_name = "F", requires = "server")]
    pub token_file: Option<std::path::PathBuf>,
    /// Trust the https server's certificate only if its fingerprint is FP (SHA256:…, as `opm daemon health` shows it)
    #[arg(long, value_name = "FP", requires = "server")]
    pub fingerprint: Option<String>,
}

/// A token given as `--token T`, `--token-file F` (first line) or the
/// environment variable `env`, in that order; `None` when none is given.
pub fn given_token(
    flag: Option<String>,
    file: Option<&std::path::Path>,
    env: &str,
) -> Result<Option<String>, CliError> {
    if let Some(t) = flag.filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--token-file {}: {e}", path.display())))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            return Err(CliError::Usage(format!(
                "--token-file {}: the file is empty (it should hold the token on its first line)",
                path.display()
            )));
        }
        return Ok(Some(token));
    }
    Ok(std::env::var(env).ok().filter(|t| !t.is_empty()))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a command line or a script, or apply a process file (.toml, .json, .yaml): create what is new, restart what changed
    Start(Box<process::StartArgs>),
    /// Change a process's stored definition (same options as start); applied at its next restart, or now with --restart
    #[command(visible_alias = "adjust")]
    Update(Box<process::UpdateArgs>),
    /// Stop processes (ids, names or `all`)
    Stop(process::TargetArgs),
    /// Restart processes: stop, then start again
    Restart(process::TargetArgs),
    /// Same as restart for a single-instance process; an instance group is replaced one copy at a time
    Reload(process::TargetArgs),
    /// Grow or shrink an instance group: `opm scale api 4` (or +N, -N)
    Scale(scale::ScaleArgs),
    /// Stop and forget processes
    #[command(visible_aliases = ["rm", "delete", "del"])]
    Remove(process::TargetArgs),
    /// List processes
    #[command(visible_alias = "ls")]
    List(process::ListArgs),
    /// Everything about one process
    #[command(visible_alias = "show")]
    Info(process::InfoArgs),
    /// Print the last lines of a process's output, and follow it
    Logs(process::LogsArgs),
    /// What happened, newest last: starts, exits with their codes, restarts, agents online and offline
    Events(events::EventsArgs),
    /// A live dashboard in the terminal: processes, CPU and memory, logs, restart/stop/start keys
    Monit(monit::MonitArgs),
    /// Zero the restart counters (↺) of processes
    Reset(process::TargetArgs),
    /// Send a signal to processes: `opm signal SIGUSR2 api` (the main process; --process-group for all of its group)
    Signal(process::SignalArgs),
    /// Print the pid of each running process named (all when none is), one per line; exit 1 if one is not running
    Pid(process::PidArgs),
    /// Empty the log files of processes (all when none is named)
    Flush(process::FlushArgs),
    /// After an outside tool (logrotate) renamed log files away: give each running process's file its configured name back
    ReloadLogs(process::ReloadLogsArgs),
    /// The environment opm gives a process
    Env(process::EnvArgs),
    /// Write the process list to dump.toml (restored by `opm restore`)
    Save(process::SaveArgs),
    /// Start the daemon and bring back the processes of dump.toml
    #[command(visible_alias = "resurrect")]
    Restore,
    /// Stop every process, then the daemon
    Kill,
    /// Manage the daemon
    #[command(subcommand)]
    Daemon(daemon::DaemonCommand),
    /// Print a shell completion script: `source <(opm completion bash)`
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print opm's manual page (roff): `opm man | man -l -`
    Man,
    /// Connect to a server as an agent, or list a server's agents
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Convert a PM2 ecosystem file (ecosystem.config.js, .json, .yaml) into an opm process file
    Import(import::ImportArgs),
    /// Start the daemon and its processes at boot: write and enable a systemd unit (alias: daemon setup)
    Startup(startup::StartupArgs),
    /// Remove the systemd unit `opm startup` wrote
    Unstartup(startup::UnstartupArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Daemon(String),
    /// Another daemon holds the database (exit code `EXIT_LOCKED`).
    #[error("{0}")]
    Locked(String),
    /// A local file or system call failed: what opm was doing, and why.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// opm itself went wrong (what happened was printed already).
    #[error("{0}")]
    Internal(&'static str),
    #[error("cannot write the file as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    #[error("cannot print as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Some of several targets failed; their messages were printed already.
    #[error("{0} of the targets failed")]
    Partial(usize),
}

impl CliError {
    /// An I/O failure while doing `what` ("cannot read /path").
    pub fn io(what: impl Into<String>, source: std::io::Error) -> CliError {
        CliError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The exit code of a daemon that found another one holding the database
/// (EX_TEMPFAIL): the CLI that started it then waits for the other's socket.
pub const EXIT_LOCKED: i32 = 75;

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if !matches!(cli.command, Command::Daemon(daemon::DaemonCommand::Run(_))) {
        // Like any Unix tool, `opm list | head` ends quietly when the reader
        // goes, instead of panicking on a closed pipe. (Not the daemon: its
        // sockets report a gone peer as an error.)
        // SAFETY: resetting a signal's disposition to the default at start-up,
        // before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Daemon(daemon::DaemonCommand::Run(args)) => daemon::run_foreground(args),
        other => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(dispatch(other)),
            Err(e) => Err(CliError::io("cannot start the async runtime", e)),
        },
    };
    match result {
        Ok(()) => 0,
        Err(CliError::Partial(_)) => 1,
        Err(e @ CliError::Locked(_)) => {
            eprintln!("✘ {e}");
            EXIT_LOCKED
        }
        Err(e) => {
            eprintln!("✘ {e}");
            1
        }
    }
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    use crate::model::ActionKind;
    match command {
        Command::Start(a) => process::start(*a).await,
        Command::Update(a) => process::update(*a).await,
        Command::Stop(a) => process::act(a, ActionKind::Stop).await,
        Command::Restart(a) => process::act(a, ActionKind::Restart).await,
        Command::Reload(a) => process::act(a, ActionKind::Reload).await,
        Command::Remove(a) => process::act(a, ActionKind::Remove).await,
        Command::Scale(a) => scale::scale(a).await,
        Command::List(a) => process::list(a).await,
        Command::Info(a) => process::info(a).await,
        Command::Logs(a) => process::logs(a).await,
        Command::Monit(a) => monit::monit(a).await,
        Command::Events(a) => events::events(a).await,
        Command::Reset(a) => process::act(a, ActionKind::Reset).await,
        Command::Signal(a) => process::signal(a).await,
        Command::Pid(a) => process::pid(a).await,
        Command::Flush(a) => process::flush(a).await,
        Command::ReloadLogs(a) => process::reload_logs(a).await,
        Command::Env(a) => process::env(a).await,
        Command::Save(a) => process::save(a).await,
        Command::Restore => process::restore().await,
        Command::Kill => daemon::kill().await,
        Command::Daemon(d) => daemon::dispatch(d).await,
        Command::Agent(a) => agent::dispatch(a).await,
        Command::Import(a) => import::import(a),
        Command::Startup(a) => startup::startup(a),
        Command::Unstartup(a) => startup::unstartup(a),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "opm", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| CliError::io("cannot write the manual page", e))
        }
    }
}
