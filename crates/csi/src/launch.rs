//! What `convoyd --csi-endpoint` does: the daemon's own start (open the manager, bind the
//! `/v1` socket) plus the CSI services on their socket, both on the one manager, until
//! SIGTERM or SIGINT. Both sockets are removed on the way out.

use std::future::Future;
use std::path::{Path, PathBuf};

use convoy_daemon::{bind_socket, DaemonArgs, DaemonError, ErrorKind};
use futures::FutureExt;

use crate::{serve as serve_csi, Csi, CsiSettings};

/// The CSI options of `convoyd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiOptions {
    /// The CSI socket's path.
    pub socket: PathBuf,
    /// This node's id.
    pub node_id: String,
    /// `max_volumes_per_node`.
    pub max_volumes: i64,
}

/// Where the CSI records of a daemon rooted at `root` live.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join("csi")
}

/// Opens the manager for `args`, serves the daemon on `socket` and the CSI services as
/// `csi` says, until `shutdown` completes or either server fails.
pub async fn serve(
    args: &DaemonArgs,
    socket: &Path,
    csi: &CsiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let convoy_daemon::launch::Opened {
        manager,
        daemon,
        fill_watch: _fill_watch,
        metrics: _metrics,
        policy_runner: _policy_runner,
    } = convoy_daemon::launch::open(args).await?;
    let listener = bind_socket(socket)?;
    let csi_listener = match bind_socket(&csi.socket) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(socket);
            return Err(e);
        }
    };
    let services = Csi::new(
        manager,
        CsiSettings {
            node_id: csi.node_id.clone(),
            max_volumes: csi.max_volumes,
            state_dir: state_dir(&args.root),
        },
    );
    tracing::info!(socket = %socket.display(), csi = %csi.socket.display(), node = %csi.node_id,
        root = %args.root.display(), "convoy daemon listening, CSI services on");
    let shutdown = shutdown.shared();
    let daemon_run = convoy_daemon::run(listener, daemon, shutdown.clone());
    let csi_run = serve_csi(csi_listener, services, shutdown);
    let csi_failed = |e: tonic::transport::Error| {
        DaemonError::failed(ErrorKind::Internal, format!("CSI server failed: {e}"))
    };
    tokio::pin!(daemon_run, csi_run);
    // Both stop on `shutdown`; when one fails the other is stopped with it.
    let outcome = tokio::select! {
        r = &mut daemon_run => match r {
            Ok(()) => csi_run.await.map_err(csi_failed),
            Err(e) => Err(e),
        },
        r = &mut csi_run => match r {
            Ok(()) => daemon_run.await,
            Err(e) => Err(csi_failed(e)),
        },
    };
    for path in [socket, csi.socket.as_path()] {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(socket = %path.display(), error = %e, "cannot remove the socket");
        }
    }
    tracing::info!("convoy daemon stopped");
    outcome
}

/// The `convoyd` flags that turn the CSI services on.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CsiArgs {
    /// Also serve the CSI Identity, Controller and Node services on this endpoint
    /// (unix:///path/csi.sock), in this process, on the same pool.
    #[arg(long, value_name = "ENDPOINT")]
    pub csi_endpoint: Option<String>,
    /// This node's id for CSI (default: the host name).
    #[arg(long, value_name = "ID", requires = "csi_endpoint")]
    pub node_id: Option<String>,
    /// The most volumes the CSI node service lets the orchestrator put on this node.
    #[arg(long, value_name = "N", default_value_t = crate::DEFAULT_MAX_VOLUMES)]
    pub csi_max_volumes: i64,
}

impl CsiArgs {
    /// The CSI options when `--csi-endpoint` is given; an error for a malformed endpoint or an
    /// empty node id.
    pub fn options(&self) -> Result<Option<CsiOptions>, String> {
        let Some(endpoint) = &self.csi_endpoint else {
            return Ok(None);
        };
        let socket = crate::endpoint_path(endpoint)?;
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .map_err(|e| format!("--node-id not given and the host name is unreadable: {e}"))?,
        };
        if node_id.is_empty() {
            return Err("--node-id must not be empty".into());
        }
        if self.csi_max_volumes < 1 {
            return Err("--csi-max-volumes must be at least 1".into());
        }
        Ok(Some(CsiOptions {
            socket,
            node_id,
            max_volumes: self.csi_max_volumes,
        }))
    }
}
