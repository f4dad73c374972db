//! Wiring of the daemon: open the store, adopt what survived the previous
//! daemon, serve the API on the unix socket (and TCP when enabled), handle
//! signals, and shut down leaving managed processes running. Runs in the
//! foreground; the CLI detaches it (`opm daemon run` in its own session).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::api::{self, Ctx};
use crate::config::{write_atomic, Config, ConfigError, Home};
use crate::reconcile::executor::Executor;
use crate::service::{ApiState, Service};
use crate::store::{Store, StoreError};

/// Options from `opm daemon restore [--api] [--webui]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonOptions {
    pub api: bool,
    pub webui: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Runs the daemon until SIGTERM, SIGINT or `POST /daemon/stop`.
pub fn run(home: Home, opts: DaemonOptions) -> Result<(), DaemonError> {
    home.ensure()?;
    let config = Config::load_or_create(&home)?;
    let store = Arc::new(Store::open(&home.db())?);
    write_atomic(
        &home.pid_file(),
        format!("{}\n", std::process::id()).as_bytes(),
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
    let api_wanted = config.daemon.web.api || opts.api || opts.webui;
    let svc = Arc::new(Service::new(
        store.clone(),
        handle,
        home.clone(),
        config.clone(),
    ));
    let ctx = Ctx {
        svc: svc.clone(),
        shutdown: shutdown_tx.clone(),
    };

    let socket = home.socket();
    let _ = std::fs::remove_file(&socket);
    // The socket is born 0600: nobody else may drive this daemon.
    let old_mask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(&socket);
    nix::sys::stat::umask(old_mask);
    let unix = bound.map_err(|e| DaemonError::Io(socket.display().to_string(), e))?;
    let unix_server = tokio::spawn(
        warp::serve(api::routes(ctx.clone(), None))
            .incoming(unix)
            .graceful(wait_true(shutdown_rx.clone()))
            .run(),
    );

    let mut tcp_server = None;
    if api_wanted {
        let address = config.api_address();
        let bound = match address.parse::<SocketAddr>() {
            Ok(addr) => TcpListener::bind(addr).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match bound {
            Ok(listener) => {
                let local = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or(address);
                crate::daemon_log(format_args!("API listening on http://{local}"));
                *svc.api.lock().unwrap_or_else(|p| p.into_inner()) = ApiState {
                    address: Some(local),
                    error: None,
                };
                let secure = &config.daemon.web.secure;
                let token = secure.enabled.then(|| Arc::new(secure.token.clone()));
                tcp_server = Some(tokio::spawn(
                    warp::serve(api::routes(ctx.clone(), token))
                        .incoming(listener)
                        .graceful(wait_true(shutdown_rx.clone()))
                        .run(),
                ));
            }
            Err(e) => {
                let message = format!("cannot listen on {address}: {e}");
                crate::daemon_log(format_args!("API not started: {message}"));
                *svc.api.lock().unwrap_or_else(|p| p.into_inner()) = ApiState {
                    address: None,
                    error: Some(message),
                };
            }
        }
    }
    crate::daemon_log(format_args!(
        "daemon {} started (pid {}, role {}, home {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        config.role,
        home.root.display()
    ));

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
                _ = term.recv() => crate::daemon_log(format_args!("SIGTERM: stopping the daemon; processes keep running")),
                _ = int.recv() => crate::daemon_log(format_args!("SIGINT: stopping the daemon; processes keep running")),
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
    // Connections in flight get a moment to finish; then the socket goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), unix_server).await;
    if let Some(t) = tcp_server {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    let _ = std::fs::remove_file(&socket);
    store.flush()?;
    crate::daemon_log(format_args!("daemon stopped"));
    Ok(())
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
