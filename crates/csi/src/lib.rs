//! # convoy-csi
//!
//! The convoy CSI driver: the Container Storage Interface's Identity, Controller and Node
//! services over gRPC (tonic) on a unix socket, served **inside the daemon's process** on the
//! same `convoy_core::VolumeManager` as the `/v1` API — one process owns the pool, so a volume created through
//! CSI is a convoy volume (`convoy list` shows it, `convoy backup create` backs its snapshots
//! up) and no second process ever writes the records.
//!
//! * [`Csi`]: the services' shared state (manager, node id, CSI records); it implements the
//!   generated `Identity`, `Controller`, `Node` and `SnapshotMetadata` server traits.
//! * [`serve`]: runs the services on a unix socket until a shutdown future completes.
//! * [`launch`]: what `convoyd --csi-endpoint` does — the daemon and the CSI server together.
//! * [`pb`]: the CSI messages, compiled from `proto/csi.proto` by protox (pure Rust; no
//!   `protoc` is needed to build).
//!
//! Ids: a CSI volume or snapshot id is the convoy name (see [`util::convoy_name`] for names
//! that are not valid convoy names). See `docs/csi.md`.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use convoy_core::VolumeManager;
use tokio::net::UnixListener;

mod capacity;
mod controller;
mod features;
mod identity;
pub mod launch;
mod mounts;
mod node;
mod records;
mod snapshot_metadata;
mod snapshots;
pub mod util;

pub use controller::{PARAM_BACKUP_URL, PARAM_DRIVER, PARAM_FS_TYPE, PARAM_S3_ENDPOINT};

/// The CSI v1 messages and services, generated from `proto/csi.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("csi.v1");
}

/// The driver's name (`GetPluginInfo`, the Kubernetes `CSIDriver` object).
pub const PLUGIN_NAME: &str = "csi.convoy.io";
/// The topology key naming a node: convoy volumes live in one node's pool.
pub const TOPOLOGY_KEY: &str = "topology.csi.convoy.io/node";
/// Default `max_volumes_per_node` reported by `NodeGetInfo`.
pub const DEFAULT_MAX_VOLUMES: i64 = 1000;

/// Settings of the CSI services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsiSettings {
    /// This node's id (`NodeGetInfo`, the topology segment).
    pub node_id: String,
    /// `max_volumes_per_node` reported by `NodeGetInfo`.
    pub max_volumes: i64,
    /// Where the driver keeps its own records (the CSI request of each volume it created).
    pub state_dir: PathBuf,
}

/// The CSI services' shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Csi {
    pub(crate) manager: VolumeManager,
    pub(crate) settings: Arc<CsiSettings>,
    /// One lock per volume or snapshot name: concurrent calls for one name (orchestrators
    /// retry) run one at a time, so idempotency checks see each other's results.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// The daemon's enabled drivers, read on first use (see `features`).
    drivers: Arc<tokio::sync::OnceCell<Vec<String>>>,
}

impl Csi {
    /// The services for `manager`.
    pub fn new(manager: VolumeManager, settings: CsiSettings) -> Self {
        Self {
            manager,
            settings: Arc::new(settings),
            locks: Arc::default(),
            drivers: Arc::default(),
        }
    }

    /// The lock of `name` (held by the detached task, so a caller hanging up releases it only
    /// when the work is over).
    pub(crate) async fn lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1 || l.try_lock().is_err());
            locks.entry(name.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// This node's topology segment.
    pub(crate) fn topology(&self) -> pb::Topology {
        pb::Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.to_string(), self.settings.node_id.clone())]),
        }
    }

    fn records_dir(&self) -> &Path {
        &self.settings.state_dir
    }
}

/// Serves the Identity, Controller, Node and SnapshotMetadata services of `csi` on `listener`
/// until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    csi: Csi,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(pb::identity_server::IdentityServer::new(csi.clone()))
        .add_service(pb::controller_server::ControllerServer::new(csi.clone()))
        .add_service(pb::node_server::NodeServer::new(csi.clone()))
        .add_service(pb::snapshot_metadata_server::SnapshotMetadataServer::new(
            csi,
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// The socket path of a CSI endpoint: `unix:///path`, `unix:/path` or a plain absolute path.
pub fn endpoint_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !path.starts_with('/') {
        return Err(format!(
            "CSI endpoint {endpoint:?}: expected unix:///absolute/path (only unix sockets are served)"
        ));
    }
    Ok(PathBuf::from(path))
}
