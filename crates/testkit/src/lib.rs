//! # convoy-testkit
//!
//! The one test rig every suite of the workspace shares, so that a test needs no helper of its
//! own to get a device, a store or a server:
//!
//! * [`run`]: runs a command and fails the test with its output if it fails;
//!   [`device_sectors`], [`is_root`], [`workspace_bin`].
//! * [`LoopDevice`]: a loop device over a sparse file, detached when dropped; optionally with a
//!   partition scan or direct I/O ([`LoopOptions`]), optionally owning its temp dir.
//! * [`dm_names`], [`DmCleanup`]: the device-mapper devices a test made (by a tag in their
//!   names), removed when the guard drops — also when the test fails.
//! * `S3Server` (feature `s3`): an S3 server (s3s over s3s-fs) in the test process, on a free
//!   loopback port, with fixed credentials (`S3_ACCESS_KEY`, `S3_SECRET_KEY`) and the
//!   endpoint, credentials-file and environment helpers a convoy process needs to reach it.
//!   `s3::serve` is the same server for a separate process (`convoy-test-s3`). Behind a
//!   feature so that the suites needing no S3 do not compile s3s.
//! * [`ServerProcess`]: a daemon started by a test (`convoy daemon`, `dockerd`, ...), waited for
//!   until it serves, stopped with SIGTERM when dropped.
//! * [`noise`], [`pattern`], [`write_synced`], [`tree_files`]: test data and its comparison.
//!
//! It depends on no convoy crate (std and tempfile; tokio and s3s with `s3`): the lowest crates
//! (`convoy-thinpool`, `convoy-thinmeta`) use it as a dev-dependency, and a dependency of it on
//! them would be a cycle. Helpers that need a convoy type (a `ThinPool` fixture, a
//! `VolumeManager`, the `convoy` binary's CLI) stay in the suite that needs them, built on these.
//!
//! Where a test goes, and the rest of the conventions: `docs/testing.md`.

mod command;
mod data;
mod dm;
mod loop_device;
mod process;
#[cfg(feature = "s3")]
pub mod s3;

pub use command::{device_sectors, is_root, run, workspace_bin};
pub use data::{noise, pattern, tree_files, write_synced};
pub use dm::{dm_names, DmCleanup};
pub use loop_device::{LoopDevice, LoopOptions};
pub use process::{ServerProcess, StartFailure};
#[cfg(feature = "s3")]
pub use s3::{S3Server, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY};

/// 1 KiB.
pub const KIB: u64 = 1 << 10;
/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;
