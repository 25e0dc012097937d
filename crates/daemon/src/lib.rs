//! # convoy-daemon
//!
//! The convoy daemon as a library. Its whole life is one function, [`run`]`(listener, daemon,
//! shutdown)`: it serves convoy's `/v1` API (the original Convoy's routes and JSON field names)
//! and the Docker volume plugin protocol over HTTP on one unix socket, until `shutdown`
//! completes.
//!
//! * [`server`]: the router, [`run`] and [`bind_socket`] (stale socket removal, mode 0600, the
//!   file appears only once it listens).
//! * [`Daemon`]: the `convoy_core::VolumeManager` the handlers call directly, plus the
//!   daemon's own state (settings, policies). Docker's mount references are the manager's
//!   (`VolumeManager::mount_for`), kept under each volume's lock.
//! * [`config`]: daemon flags ([`DaemonArgs`]) checked against the saved `<root>/convoy.cfg`.
//! * [`launch`]: what `convoy daemon` and `convoyd` do — open the manager, bind, serve until
//!   SIGTERM/SIGINT.
//! * [`metrics`]: the opt-in Prometheus endpoint (`--metrics-listen`),
//!   [`metrics::record_policy_run`] and [`metrics::measured`] (restores and backups started
//!   through the daemon, the CSI services included, counted and timed).
//!
//! ## Usage
//!
//! ```text
//! let listener = convoy_daemon::bind_socket(Path::new("/tmp/convoy.sock"))?;
//! let daemon = convoy_daemon::Daemon::new(manager, root, DaemonSettings::default())?;
//! convoy_daemon::run(listener, daemon, async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! ```

pub mod config;
mod daemon;
mod error;
pub mod fill_watch;
mod http;
pub mod launch;
pub mod metrics;
mod plugin;
pub mod policy_runner;
mod progress;
pub mod server;
mod tasks;
mod v1;
mod wire;

pub use config::DaemonArgs;
pub use daemon::{Daemon, DaemonSettings};
pub use error::{http_status, DaemonError, ErrorKind, Result};
pub use server::{bind_socket, router, run};
