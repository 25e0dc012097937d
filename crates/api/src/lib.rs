//! # convoy-api
//!
//! Wire types shared by the convoy daemon and its clients, and a client for the daemon's unix
//! socket.
//!
//! * [`wire`]: the JSON shapes of convoy's `/v1` API. Field names are those of the original
//!   Convoy (Go, v0.5.2) so that scripts parsing its output keep working: `Name`, `Driver`,
//!   `MountPoint`, `CreatedTime`, `DriverInfo`, `Snapshots`, `BackupURL`, ...
//! * [`plugin`]: the Docker volume plugin protocol (`/Plugin.Activate`, `/VolumeDriver.*`) as
//!   dockerd really speaks it (no `Content-Type`, `Opts` may be `null`).
//! * [`size`]: the size syntax of the CLI and of Docker's `-o size=...` (`10G`, `512m`, bytes).
//! * [`client`]: [`Client`], an HTTP/1.1 client over the unix socket with one typed method per
//!   route.
//!
//! ## Usage
//!
//! ```no_run
//! # async fn demo() -> Result<(), convoy_api::ApiError> {
//! let client = convoy_api::Client::new("/var/run/convoy/convoy.sock");
//! let volume = client
//!     .create_volume(&convoy_api::wire::VolumeCreateRequest {
//!         name: "vol1".into(),
//!         size: Some(1 << 30),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{}", volume.name);
//! # Ok(()) }
//! ```

pub mod client;
mod error;
pub mod plugin;
pub mod routes;
pub mod size;
pub mod wire;

pub use client::Client;
pub use error::ApiError;

/// The socket the daemon listens on and the CLI talks to unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/convoy/convoy.sock";
