//! Attaching a backend to a kernel `/dev/nbdN` and detaching it again.
//!
//! [`NbdDevice::attach`] makes a unix socket pair, starts the server on one end and hands the
//! other to the kernel with netlink `NBD_CMD_CONNECT`, which picks a free device itself (or
//! makes a new one), so several attaches at once never race for an index. The returned guard
//! disconnects the device when dropped; [`NbdDevice::detach`] does it and waits for the
//! server to finish.
//!
//! Timeouts: every request the kernel sends is failed by the kernel after
//! [`AttachOptions::request_timeout`] (so a server that stops answering cannot hang readers
//! forever), and a device whose server died waits [`AttachOptions::dead_connection_timeout`]
//! for [`NbdDevice::reconnect`] before failing its queued requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::BlockBackend;
use crate::error::{NbdError, Result};
use crate::netlink;
use crate::server::{serve, ServeEnd, ServeOptions, ServeStats};

/// How a device is attached.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Logical block size of the device: a power of two from 512 to 4096.
    pub block_size: u32,
    /// The kernel fails a request not answered within this (at least a second). Keep it
    /// above the longest a backend may take to answer (its own retries included): a timed
    /// out request also takes the connection down.
    pub request_timeout: Duration,
    /// How long the kernel keeps requests queued for a server that died, waiting for
    /// [`NbdDevice::reconnect`]; zero fails them at once.
    pub dead_connection_timeout: Duration,
    /// The server's options.
    pub serve: ServeOptions,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            block_size: 4096,
            request_timeout: Duration::from_secs(90),
            dead_connection_timeout: Duration::from_secs(120),
            serve: ServeOptions::default(),
        }
    }
}

/// The path of device `index`: `/dev/nbd<index>`.
pub fn device_path(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/nbd{index}"))
}

/// Loads the kernel's NBD driver when its netlink family is not registered (`modprobe nbd`).
///
/// # Errors
/// [`NbdError::DriverUnavailable`] naming what was tried.
pub fn ensure_driver() -> Result<()> {
    if netlink::driver_loaded() {
        return Ok(());
    }
    let outcome = std::process::Command::new("modprobe")
        .arg("nbd")
        .output()
        .map(|o| {
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            )
        });
    if netlink::driver_loaded() {
        return Ok(());
    }
    let tried = match outcome {
        Ok((true, _)) => "`modprobe nbd` succeeded but the nbd netlink family is not there \
                          (a kernel older than 4.12?)"
            .to_owned(),
        Ok((false, err)) => format!("`modprobe nbd` failed: {err}"),
        Err(e) => format!("`modprobe nbd` could not run: {e}"),
    };
    Err(NbdError::DriverUnavailable {
        reason: format!("{tried}; the kernel needs CONFIG_BLK_DEV_NBD (module nbd)"),
    })
}

/// Whether device `index` is connected (`None`: the kernel has no such device).
///
/// # Errors
/// Netlink failures (the driver not loaded among them).
pub fn is_connected(index: u32) -> Result<Option<bool>> {
    netlink::status(index)
}

/// Disconnects device `index`, whoever attached it (start-up clean-up of a device a dead
/// process left). Disconnecting an unconnected device is not an error.
///
/// # Errors
/// Netlink failures.
pub fn disconnect(index: u32) -> Result<()> {
    netlink::disconnect(index)
}

/// An attached device; disconnected when dropped (use [`NbdDevice::detach`] to wait for it).
#[derive(Debug)]
pub struct NbdDevice {
    index: u32,
    path: PathBuf,
    stats: Arc<ServeStats>,
    server: Option<tokio::task::JoinHandle<Result<ServeEnd>>>,
    attached: bool,
}

fn check(backend: &dyn BlockBackend, opts: &AttachOptions) -> Result<()> {
    if backend.size() == 0 {
        return Err(NbdError::InvalidArgument("a device needs a size".into()));
    }
    let b = opts.block_size;
    if !b.is_power_of_two() || !(512..=4096).contains(&b) {
        return Err(NbdError::InvalidArgument(format!(
            "block size {b} is not a power of two from 512 to 4096"
        )));
    }
    if !backend.size().is_multiple_of(u64::from(b)) {
        return Err(NbdError::InvalidArgument(format!(
            "size {} is not a multiple of the block size {b}",
            backend.size()
        )));
    }
    Ok(())
}

/// A socket pair with the server started on our end; returns the kernel's end.
fn start_server(
    backend: Arc<dyn BlockBackend>,
    opts: &AttachOptions,
    stats: Arc<ServeStats>,
) -> Result<(
    std::os::unix::net::UnixStream,
    tokio::task::JoinHandle<Result<ServeEnd>>,
)> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(NbdError::io("making a socket pair"))?;
    ours.set_nonblocking(true)
        .map_err(NbdError::io("making the server socket non-blocking"))?;
    let ours = tokio::net::UnixStream::from_std(ours)
        .map_err(NbdError::io("registering the server socket"))?;
    let serve_opts = opts.serve.clone();
    let server = tokio::spawn(serve(ours, backend, serve_opts, stats));
    Ok((theirs, server))
}

async fn wait_for_node(index: u32, size: u64) -> Result<PathBuf> {
    let path = device_path(index);
    let sys = PathBuf::from(format!("/sys/block/nbd{index}/size"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sectors = std::fs::read_to_string(&sys)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if path.exists() && sectors == Some(size / 512) {
            return Ok(path);
        }
        if Instant::now() > deadline {
            return Err(NbdError::Io {
                what: format!(
                    "waiting for {} of {size} bytes ({} says {sectors:?} sectors)",
                    path.display(),
                    sys.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NbdError::Protocol(format!("netlink task failed: {e}")))?
}

impl NbdDevice {
    /// Attaches `backend` to a free `/dev/nbdN` (loading the driver if needed) and returns
    /// once the device has its size. Must be called inside a tokio runtime, which runs the
    /// server for as long as the device is attached.
    ///
    /// # Errors
    /// [`NbdError::InvalidArgument`] for a size of zero or not a multiple of the block size;
    /// [`NbdError::DriverUnavailable`]; [`NbdError::Netlink`] (`EPERM` without
    /// `CAP_SYS_ADMIN`).
    pub async fn attach(backend: Arc<dyn BlockBackend>, opts: AttachOptions) -> Result<Self> {
        check(backend.as_ref(), &opts)?;
        blocking(ensure_driver).await?;
        let size = backend.size();
        let request = netlink::ConnectRequest {
            size,
            block_size: u64::from(opts.block_size),
            server_flags: u64::from(crate::server::flags_for(backend.as_ref())),
            timeout: opts.request_timeout,
            dead_connection_timeout: opts.dead_connection_timeout,
        };
        let stats = Arc::new(ServeStats::default());
        let (theirs, server) = start_server(backend, &opts, stats.clone())?;
        let connected = blocking(move || {
            use std::os::fd::AsRawFd;
            // The kernel takes its own reference to the socket: our copy of the fd closes
            // when `theirs` drops at the end of this closure.
            netlink::connect(theirs.as_raw_fd(), &request)
        })
        .await;
        let index = match connected {
            Ok(i) => i,
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };
        let mut dev = NbdDevice {
            index,
            path: device_path(index),
            stats,
            server: Some(server),
            attached: true,
        };
        dev.path = wait_for_node(index, size).await?;
        tracing::debug!(index, size, "nbd device attached");
        Ok(dev)
    }

    /// Serves `backend` on device `index`, which a previous server (a process that died)
    /// left connected with a dead socket: the kernel's queued requests go to the new server.
    ///
    /// # Errors
    /// [`NbdError::Netlink`]: `EINVAL` when the device is not connected any more (its
    /// dead-connection timeout ran out, or it was disconnected); then attach a new one.
    pub async fn reconnect(
        index: u32,
        backend: Arc<dyn BlockBackend>,
        opts: AttachOptions,
    ) -> Result<Self> {
        check(backend.as_ref(), &opts)?;
        blocking(ensure_driver).await?;
        let stats = Arc::new(ServeStats::default());
        let (theirs, server) = start_server(backend, &opts, stats.clone())?;
        let done = blocking(move || {
            use std::os::fd::AsRawFd;
            netlink::reconfigure(index, theirs.as_raw_fd())
        })
        .await;
        if let Err(e) = done {
            server.abort();
            return Err(e);
        }
        Ok(NbdDevice {
            index,
            path: device_path(index),
            stats,
            server: Some(server),
            attached: true,
        })
    }

    /// The device's index (`N` of `/dev/nbdN`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `/dev/nbdN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServeStats {
        &self.stats
    }

    /// Whether the server is still running.
    pub fn is_serving(&self) -> bool {
        self.server.as_ref().is_some_and(|s| !s.is_finished())
    }

    /// Disconnects the device and waits (up to 30 s) for the server to answer what is in
    /// flight and stop.
    ///
    /// # Errors
    /// [`NbdError::Netlink`] when the kernel refuses the disconnect; the server's own error.
    pub async fn detach(mut self) -> Result<()> {
        let index = self.index;
        self.attached = false;
        blocking(move || netlink::disconnect(index)).await?;
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(30), server).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(NbdError::Protocol(format!("the server task failed: {e}"))),
            Err(_) => Err(NbdError::Protocol(format!(
                "the server of /dev/nbd{index} did not stop within 30 s of the disconnect"
            ))),
        }
    }

    /// Leaves the device connected and the server running without this guard (for a caller
    /// that records the index and detaches with [`disconnect`] later). Returns the index.
    pub fn into_index(mut self) -> u32 {
        self.attached = false;
        self.server.take();
        self.index
    }
}

impl Drop for NbdDevice {
    fn drop(&mut self) {
        if self.attached {
            // A quick netlink call: the kernel then ends the server with NBD_CMD_DISC.
            if let Err(e) = netlink::disconnect(self.index) {
                tracing::warn!("disconnecting /dev/nbd{}: {e}", self.index);
            }
        }
    }
}
