//! What `convoy daemon` and `convoyd` do: set up logging, open the volume manager, bind the
//! socket and serve until SIGTERM or SIGINT.

use std::future::Future;
use std::path::Path;

use convoy_core::VolumeManager;

use crate::config::{manager_config, DaemonArgs};
use crate::{bind_socket, run, Daemon, DaemonError, DaemonSettings, Result};

/// Sends logs to `log` (appending, no colours) or to standard error. `RUST_LOG` overrides the
/// level (`debug` with `debug`, else `info`).
pub fn init_logging(log: Option<&Path>, debug: bool) -> Result<()> {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DaemonError::File {
                    what: "cannot open log file",
                    path: path.to_path_buf(),
                    source,
                })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(installed);
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

/// A daemon opened as `args` say, not serving yet: what `convoyd` starts with, with or
/// without the CSI services.
pub struct Opened {
    /// The volume manager (cheap to clone: other services share it).
    pub manager: VolumeManager,
    /// The daemon's state over that manager, for [`run`].
    pub daemon: Daemon,
    /// Watches the pool's fill while it lives.
    pub fill_watch: crate::fill_watch::FillWatch,
    /// The metrics endpoint (`--metrics-listen`), serving while it lives.
    pub metrics: Option<crate::metrics::MetricsServer>,
    /// Runs the policies while it lives.
    pub policy_runner: crate::policy_runner::PolicyRunner,
}

/// Applies `args` (external commands, backup secret), opens the manager (start-up
/// reconciliation logged), starts the pool-fill watch and makes the daemon's state.
pub async fn open(args: &DaemonArgs) -> Result<Opened> {
    let metrics_address = args
        .metrics_listen
        .as_deref()
        .map(crate::metrics::parse_listen_address)
        .transpose()?;
    crate::config::configure_external_commands(args)?;
    crate::config::configure_backup_secret(args);
    let config = manager_config(args)?;
    let manager = VolumeManager::open(config).await?;
    for line in manager.reconcile_report() {
        tracing::info!("start-up reconciliation: {line}");
    }
    let settings = DaemonSettings {
        ignore_docker_delete: args.ignore_docker_delete,
        create_on_docker_mount: args.create_on_docker_mount,
        backup_limit_upload: args.backup_limit_upload,
    };
    let fill_watch = crate::fill_watch::FillWatch::start(
        manager.clone(),
        crate::fill_watch::FILL_WATCH_INTERVAL,
    );
    let daemon = Daemon::new(manager.clone(), &args.root, settings)?;
    let metrics = metrics_address
        .map(|address| crate::metrics::MetricsServer::start(address, manager.clone()))
        .transpose()?;
    let policy_runner = crate::policy_runner::PolicyRunner::start(
        manager.clone(),
        daemon.policies().clone(),
        args.policy_max_backups,
    );
    Ok(Opened {
        manager,
        daemon,
        fill_watch,
        metrics,
        policy_runner,
    })
}

/// Opens the manager for `args`, binds `socket` and serves until `shutdown` completes. The
/// socket file is removed on the way out.
pub async fn serve(
    args: &DaemonArgs,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Opened {
        manager,
        daemon,
        fill_watch: _fill_watch,
        metrics: _metrics,
        policy_runner: _policy_runner,
    } = open(args).await?;
    let listener = bind_socket(socket)?;
    tracing::info!(socket = %socket.display(), root = %args.root.display(), "convoy daemon listening");
    let outcome = run(listener, daemon, shutdown).await;
    // The browse mounts' block devices are served by this process: unmount them now rather
    // than leave them failing every read until the next start cleans them up.
    for line in manager.umount_all_backups().await {
        tracing::info!("shutdown: {line}");
    }
    for line in manager.pause_instant_fills().await {
        tracing::info!("shutdown: {line}");
    }
    if let Err(e) = std::fs::remove_file(socket) {
        tracing::warn!(socket = %socket.display(), error = %e, "cannot remove the socket");
    }
    tracing::info!("convoy daemon stopped");
    outcome
}
