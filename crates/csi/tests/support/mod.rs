//! A daemon with the CSI services, started in-process the way `convoyd --csi-endpoint` starts
//! them, and tonic clients over its unix socket.

#![allow(dead_code)]

pub mod dm;

use std::path::{Path, PathBuf};

use convoy_csi::launch::CsiOptions;
use convoy_csi::pb::controller_client::ControllerClient;
use convoy_csi::pb::identity_client::IdentityClient;
use convoy_csi::pb::node_client::NodeClient;
use convoy_csi::pb::*;
use convoy_daemon::DaemonArgs;
use tonic::transport::{Channel, Endpoint, Uri};

/// A running daemon + CSI server; stopped when dropped.
pub struct Server {
    /// The directory holding the root and the sockets.
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub csi_socket: PathBuf,
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), convoy_daemon::DaemonError>>>,
}

/// The node id the test servers use.
pub const NODE: &str = "node-a";

impl Server {
    /// Starts a daemon with `drivers`/`driver_opts` under a fresh root inside `dir`.
    pub async fn start(dir: &Path, drivers: &[&str], driver_opts: Vec<String>) -> Server {
        let root = dir.join("root");
        let args = DaemonArgs {
            root,
            drivers: drivers.iter().map(|d| d.to_string()).collect(),
            driver_opts,
            ..Default::default()
        };
        let socket = dir.join("convoy.sock");
        let csi_socket = dir.join("csi.sock");
        let options = CsiOptions {
            socket: csi_socket.clone(),
            node_id: NODE.into(),
            max_volumes: 7,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let socket = socket.clone();
            tokio::spawn(async move {
                convoy_csi::launch::serve(&args, &socket, &options, async {
                    let _ = stopped.await;
                })
                .await
            })
        };
        for _ in 0..500 {
            if csi_socket.exists() && socket.exists() {
                break;
            }
            assert!(
                !task.is_finished(),
                "the daemon stopped at start-up: {:?}",
                task.await
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Server {
            dir: dir.to_path_buf(),
            _temp: None,
            csi_socket,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A vfs daemon.
    pub async fn vfs() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let vols = dir.path().join("vols");
        let mut server = Server::start(
            dir.path(),
            &["vfs"],
            vec![format!("vfs.path={}", vols.display())],
        )
        .await;
        server._temp = Some(dir);
        server
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.csi_socket).await
    }

    pub async fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel().await)
    }

    pub async fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel().await)
    }

    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel().await)
    }

    /// GET `route` of the daemon's `/v1` API (HTTP/1.0 over its socket); answers the body.
    pub async fn v1_get(&self, route: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        s.write_all(format!("GET {route} HTTP/1.0\r\nHost: convoy\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(text)
    }

    /// POSTs `body` to `route` of the daemon's `/v1` API; answers the body.
    pub async fn v1_post(&self, route: &str, body: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        s.write_all(
            format!(
                "POST {route} HTTP/1.0\r\nHost: convoy\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(text)
    }

    /// Stops the servers and waits for them; panics if serving failed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A tonic channel over the unix socket at `path`.
pub async fn connect(path: &Path) -> Channel {
    let path = path.to_path_buf();
    Endpoint::try_from("http://[::1]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

/// A mount capability (fs type `fs`), single-node writer.
pub fn mount_cap(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            },
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A raw block capability, single-node writer.
pub fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(
            volume_capability::BlockVolume {},
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A CreateVolume request for `name` of `bytes` (0: default size).
pub fn create(name: &str, bytes: i64, cap: VolumeCapability) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: (bytes > 0).then_some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

/// The tests run as root (bind mounts need it).
pub fn is_root() -> bool {
    convoy_testkit::is_root()
}
