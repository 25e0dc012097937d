//! # convoy-nbd
//!
//! Userspace block devices through the kernel's NBD client: a backend written in Rust (an
//! object-store reader, a filling thin volume, a byte vector) appears as `/dev/nbdN` and can be
//! partitioned, formatted, mounted or put under a device-mapper table like any disk.
//!
//! ## Overview
//!
//! * [`BlockBackend`]: what a device serves — `size`, `read_at`, `write_at`, `flush`, optional
//!   `trim`, a read-only flag. Async, since backends fetch from object stores; called
//!   concurrently. [`MemoryBackend`] holds a device in memory.
//! * [`serve`]: the NBD transmission phase on any async stream: requests
//!   (magic `0x25609513`) `READ`, `WRITE`, `DISC`, `FLUSH`, `TRIM`; simple replies (magic
//!   `0x67446698`) with the request's cookie echoed, many requests in flight and replies sent
//!   as they complete, in any order. A backend error is an error reply (`EIO` unless the
//!   protocol names the errno), never data.
//! * [`NbdDevice::attach`]: hands one end of a socket pair to the kernel with generic netlink
//!   (`NBD_CMD_CONNECT`; the kernel picks a free device, so several attaches at once never
//!   race), loads the driver (`modprobe nbd`) when needed, sets the kernel's per-request and
//!   dead-connection timeouts, and returns a guard that disconnects on drop.
//!   [`NbdDevice::reconnect`] gives a device whose server died a new one (its queued requests
//!   wait for it, up to the dead-connection timeout).
//!
//! Why netlink and not the `NBD_SET_SOCK`/`NBD_DO_IT` ioctls: netlink needs no `unsafe` (this
//! crate has none: the workspace's `unsafe_code = "forbid"` holds), needs no thread blocked in
//! `NBD_DO_IT` per device, lets the kernel choose a free index atomically, and alone supports
//! reconnecting a device to a restarted server. It needs Linux 4.12 or later.
//!
//! ## Usage
//!
//! ```no_run
//! use std::sync::Arc;
//! use convoy_nbd::{AttachOptions, MemoryBackend, NbdDevice};
//!
//! # async fn demo() -> Result<(), convoy_nbd::NbdError> {
//! let dev = NbdDevice::attach(Arc::new(MemoryBackend::new(64 << 20)), AttachOptions::default())
//!     .await?;
//! println!("mkfs.ext4 {}", dev.path().display());
//! dev.detach().await?;
//! # Ok(()) }
//! ```

mod backend;
mod device;
mod error;
mod netlink;
pub mod protocol;
mod server;

pub use backend::{BlockBackend, MemoryBackend};
pub use device::{device_path, disconnect, ensure_driver, is_connected, AttachOptions, NbdDevice};
pub use error::{NbdError, Result};
pub use server::{flags_for, serve, ServeEnd, ServeOptions, ServeStats, MAX_REQUEST};
