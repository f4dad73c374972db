//! Wiring of the daemon: open the store, adopt what survived the previous
//! daemon, serve the API on the unix socket (and TCP when enabled), handle
//! signals, and shut down leaving managed processes running. Runs in the
//! foreground; the CLI detaches it (`opm daemon run` in its own session).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::api::{self, Ctx, TcpSlot, Tokens};
use crate::config::{set_secure_token, Config, ConfigError, Home, Role};
use crate::reconcile::executor::Executor;
use crate::role::server::Registry;
use crate::role::RoleState;
use crate::service::Service;
use crate::store::{Store, StoreError};
use crate::token::random_token;

/// Options from `opm daemon restore [--api] [--webui]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonOptions {
    pub api: bool,
    pub webui: bool,
    /// Refuse a damaged database instead of rebuilding it from the snapshot.
    pub no_recover: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

/// Drops opm's secret variables (`OPM_TOKEN`, …) from this process's
/// environment, so no managed process inherits them. Call it before any
/// other thread exists.
pub fn forget_secret_env() {
    for name in crate::SECRET_ENV_VARS {
        // Edition 2021: safe to call; sound here because no other thread
        // reads the environment yet (see the caller).
        std::env::remove_var(name);
    }
}

/// Runs the daemon until SIGTERM, SIGINT or `POST /daemon/stop`.
pub fn run(home: Home, opts: DaemonOptions) -> Result<(), DaemonError> {
    home.ensure()?;
    // Before anything is read or written there: a home anyone may read
    // would give the tokens away (and a home of another user is refused).
    let made_private = home.make_private()?;
    crate::logging::init(&home.daemon_log(), &home.agent_log())
        .map_err(|e| DaemonError::Io(home.daemon_log().display().to_string(), e))?;
    for change in made_private {
        tracing::info!("made the home private: {change}");
    }
    crate::failpoint::setup();
    let mut config = Config::load_or_create(&home)?;
    let web = &config.daemon.web;
    let serves_tcp = web.api || web.ui || opts.api || opts.webui || config.role == Role::Server;
    if let Some(refusal) = config
        .tcp_refusal(serves_tcp)
        .or_else(|| config.missing_network_token(serves_tcp))
    {
        return Err(DaemonError::Refused(refusal));
    }
    if serves_tcp && web.secure.enabled && web.secure.token.is_empty() {
        // TCP is never open without a token: make one and keep it where
        // the user looks for settings (config.toml, 0600).
        let token = random_token().map_err(|e| DaemonError::Io("random token".into(), e))?;
        config = set_secure_token(&home, &token)?;
        tracing::info!(
            "generated a token for the TCP API and stored it in {} ([daemon.web.secure] token); `opm daemon token` prints it",
            home.config().display()
        );
    }
    match crate::supervise::proc::raise_fd_limit() {
        Ok((before, after)) if before != after => {
            tracing::info!("file descriptor limit raised from {before} to {after}")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the file descriptor limit: {e}"),
    }
    let store = Arc::new(Store::open_with(&home.db(), !opts.no_recover)?);
    if let Some(r) = store.recovery() {
        report_recovery(&store, r);
    }
    // Again for what the store just created (its folder and files hold the
    // agents' tokens); later files are born inside these 0700 folders.
    home.make_private()?;
    // After the database lock: of two daemons started at once, only the one
    // that runs writes the join token.
    let config = crate::role::server::ensure_join_token(&home, config)?;
    crate::fsutil::write_atomic(
        &home.pid_file(),
        format!("{}\n", std::process::id()).as_bytes(),
        0o600,
    )
    .map_err(|e| DaemonError::Io(home.pid_file().display().to_string(), e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Io("tokio runtime".into(), e))?;
    let result = runtime.block_on(serve(home.clone(), config, store, opts));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let _ = std::fs::remove_file(home.pid_file());
    result
}

async fn serve(
    home: Home,
    config: Config,
    store: Arc<Store>,
    opts: DaemonOptions,
) -> Result<(), DaemonError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (mut exec, handle) = Executor::new(store.clone(), home.clone());
    // Adopt before the socket exists: no client ever sees a half-restored list.
    exec.start();
    let exec_task = tokio::spawn(exec.run(shutdown_rx.clone()));
    let registry = if config.role == Role::Server {
        let r = Arc::new(Registry::load(store.clone(), config.server.clone())?);
        tokio::spawn(r.clone().run_liveness(shutdown_rx.clone()));
        tokio::spawn(r.clone().run_write_back(shutdown_rx.clone()));
        Some(r)
    } else {
        None
    };
    let mut svc = Service::new(store.clone(), handle, home.clone(), config.clone());
    svc.ui = config.daemon.web.ui || opts.webui;
    let svc = Arc::new(svc);
    tokio::spawn(sample_history(svc.clone(), shutdown_rx.clone()));
    tokio::spawn(sample_usage(svc.clone(), shutdown_rx.clone()));
    tokio::spawn(rotate_logs(svc.clone(), shutdown_rx.clone()));
    let role = Arc::new(RoleState::new(
        config.role,
        registry.clone(),
        &config.daemon.history,
    ));
    tokio::spawn(role.clone().sample_agents(shutdown_rx.clone()));
    let ctx = Ctx {
        svc: svc.clone(),
        role: role.clone(),
        shutdown: shutdown_tx.clone(),
        tcp: Arc::new(TcpSlot::default()),
    };

    let linked_agent = config.role == Role::Agent && crate::api::link::resume_agent(&ctx).await;
    if config.role == Role::Agent && !linked_agent {
        tracing::warn!("role = agent but not connected to a server: run `opm agent connect <url>`");
    }
    if !linked_agent {
        let api_wanted = config.daemon.web.api || opts.api || svc.ui;
        if registry.is_some() && !api_wanted {
            tracing::info!(
                "role = server needs the API: serving it on {}",
                config.api_address()
            );
        }
        if api_wanted || registry.is_some() {
            let tokens = api::agents::tokens_for(&ctx);
            // A failure is recorded for `daemon health` and the log.
            let _ = ctx
                .tcp
                .start(&ctx, &config.api_address(), tokens, false)
                .await;
        }
        let serves_tcp = api_wanted || registry.is_some();
        if let (true, Some(warning)) = (serves_tcp, config.tokenless_warning()) {
            tracing::warn!("{warning}");
        }
    }
    // The socket comes last: a client that reaches it finds the daemon whole
    // (processes adopted, TCP API up or its failure recorded).
    let socket = home.socket();
    let unix = bind_private(&home).map_err(|e| DaemonError::Io(socket.display().to_string(), e))?;
    let unix_server = tokio::spawn(
        warp::serve(api::routes(ctx.clone(), Tokens::default(), true))
            .incoming(unix)
            .graceful(wait_true(shutdown_rx.clone()))
            .run(),
    );

    crate::failpoint::arm();
    tracing::info!(
        "daemon {} started (pid {}, role {}, home {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        config.role,
        home.root.display()
    );

    let signals = {
        let tx = shutdown_tx.clone();
        async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping the daemon; processes keep running"),
                _ = int.recv() => tracing::info!("SIGINT: stopping the daemon; processes keep running"),
            }
            let _ = tx.send(true);
        }
    };
    tokio::select! {
        _ = signals => {}
        _ = wait_true(shutdown_rx.clone()) => {}
    }
    let _ = shutdown_tx.send(true);
    let _ = exec_task.await;
    if let Some(r) = &registry {
        let _ = r.write_back();
    }
    // Connections in flight get a moment to finish; then the socket goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), unix_server).await;
    let _ = std::fs::remove_file(&socket);
    store.flush()?;
    tracing::info!("daemon stopped");
    Ok(())
}

/// Binds the unix socket and makes it 0600 before anything is accepted.
/// No process-wide umask change (it would race with other threads): the
/// home is 0700 by now, so nobody else can reach the socket in between.
fn bind_private(home: &Home) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let socket = home.socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Says loudly, in the log and the events, that the database was rebuilt.
fn report_recovery(store: &Store, r: &crate::store::Recovery) {
    let copy = match &r.damaged_copy {
        Some(p) => format!("the damaged copy is kept at {}", p.display()),
        None => "there was no database to keep".to_string(),
    };
    let detail = format!(
        "the database was damaged ({}); rebuilt from {} (written {}, {} processes); {copy}",
        r.reason,
        r.snapshot.display(),
        crate::spec::utc_timestamp(r.snapshot_written_ms),
        r.processes
    );
    tracing::error!("RECOVERED: {detail}");
    let event = crate::spec::Event {
        at_ms: r.at_ms,
        subject: crate::spec::Subject::Daemon,
        kind: "recovered".into(),
        detail,
    };
    // The snapshot holds no events: the log's own fsync is enough.
    if let Err(e) = store.push_event(&event).and_then(|()| store.flush_log()) {
        tracing::error!("cannot record the recovery event: {e}");
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Rotates every log past its cap each `[logs] check_interval_ms`, until
/// the daemon stops (a daemon restored after a crash resumes here). Stat,
/// copy and fallocate run off the runtime's worker threads.
async fn rotate_logs(svc: Arc<Service>, shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(svc.config.logs.check_interval_ms);
    every_blocking(every, shutdown, move || svc.rotate_logs()).await;
}

/// Samples every process's CPU and memory each `[daemon.history]
/// interval_ms` into the in-memory history, until the daemon stops. The
/// scan of /proc runs off the runtime's worker threads.
async fn sample_history(svc: Arc<Service>, shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(svc.config.daemon.history.interval_ms);
    every_blocking(every, shutdown, move || {
        svc.record_history();
        crate::supervise::heap::trim();
    })
    .await;
}

/// Takes a pass over /proc whenever a read asks for one (its last is older
/// than `USAGE_TTL`): at most one at a time, off the request path, so reads
/// never scan /proc themselves.
async fn sample_usage(svc: Arc<Service>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = svc.usage_wanted.notified() => {
                let svc = svc.clone();
                let _ = tokio::task::spawn_blocking(move || svc.sample_usage()).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs `work` on tokio's blocking pool every `every` (a late tick delays
/// the next rather than bunching), until `shutdown`.
async fn every_blocking(
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    work: impl Fn() + Clone + Send + 'static,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = tokio::task::spawn_blocking(work.clone()).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}
