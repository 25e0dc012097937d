//! # convoy-thinpool
//!
//! The device-mapper layer of convoy: everything the volume manager needs from the kernel's
//! dm-thin target, built on the [`devicemapper`] crate (ioctls, table types) and `nix`
//! (device nodes). Design notes: `docs/thinpool.md`.
//!
//! ## Overview
//!
//! * [`ThinPool`] — a pool on a data and a metadata block device. [`ThinPool::create`] makes a
//!   new one on zeroed metadata, [`ThinPool::open`] reuses an active pool (after checking its
//!   table) or re-activates existing metadata (never wiping it), [`ThinPool::setup`] does
//!   whichever applies (what a daemon calls at start-up) and says which by [`SetupAction`].
//!   [`ThinPool::teardown`] deactivates its thin devices and removes it.
//! * [`ThinPool::status`] — [`PoolStatus`]: data and metadata usage, transaction id, held
//!   metadata root, [`PoolMode`] (read-write / read-only / out of data space), needs-check.
//! * Thin devices by id ([`ThinId`], 24-bit): [`ThinPool::create_thin`],
//!   [`ThinPool::create_snap`] (suspends an active origin and always resumes it),
//!   [`ThinPool::delete`]; as devices: [`ThinPool::activate`] (idempotent) returns a
//!   [`ThinDevice`] with a stable path `/dev/mapper/<name>`, [`ThinPool::deactivate`],
//!   [`ThinPool::list_active`], [`ThinPool::thin_usage`].
//! * [`IdAllocator`] — collision-free ids from the set the caller has persisted.
//! * [`ThinPool::reserve_metadata_snap`] — a [`MetadataSnapshot`] guard, released on drop;
//!   [`Error::MetadataSnapshotHeld`] when one is already held.
//! * Units: [`Sectors`], [`Bytes`], [`DataBlocks`] (pool blocks), [`MetaBlocks`],
//!   [`BlockSize`] (validated: 128..=2097152 sectors, multiple of 128); [`SectorBytes`] for
//!   byte counts held in a `u64` (exact, rounded up, and back).
//! * [`Error`] — one enum, variants by meaning ([`Error::NotFound`], [`Error::AlreadyExists`],
//!   [`Error::Busy`], [`Error::PoolFull`], [`Error::InvalidBlockSize`], ...), each naming the
//!   pool, device, path or id involved.
//!
//! Policies: every pool is created with `error_if_no_space` (a full pool fails writes at once
//! instead of queueing them) and with block zeroing on ([`BlockZeroing::Zero`]): data of a deleted
//! device is never readable through a new one. [`BlockZeroing::Skip`] trades that for speed.
//!
//! ## Usage (how convoy-core drives it)
//!
//! ```no_run
//! use convoy_thinpool::{IdAllocator, PoolConfig, Sectors, ThinPool};
//!
//! # fn main() -> Result<(), convoy_thinpool::Error> {
//! // Start-up: open or create the pool; release a metadata snapshot left by a crash.
//! let (pool, _action) = ThinPool::setup(PoolConfig::new("/dev/vdb", "/dev/vdc"))?;
//! let _ = pool.release_metadata_snap();
//! let mut ids = IdAllocator::new([]); // give it the ids recorded in the volume records
//!
//! // Create a 1 GiB volume: allocate and persist the id, create it, activate it.
//! let vol = ids.allocate()?;
//! pool.create_thin(vol)?;
//! let dev = pool.activate(vol, "vol1", Sectors(2 * 1024 * 1024))?;
//! println!("mkfs {}", dev.path.display()); // /dev/mapper/vol1
//!
//! // Snapshot it (mounted or not), then read the metadata under a metadata snapshot.
//! let snap = ids.allocate()?;
//! pool.create_snap(snap, vol)?;
//! {
//!     let held = pool.reserve_metadata_snap()?;
//!     println!("read trees under metadata block {}", *held.held_root());
//! } // released here
//!
//! // Delete: deactivate, then delete the id, then forget it.
//! pool.deactivate("vol1")?;
//! pool.delete(vol)?;
//! ids.release(vol);
//! # Ok(()) }
//! ```
//!
//! Every code path that touches the kernel is tested against a real kernel in the VM tier
//! (`cargo xtask test`; tests named `dm_*`).

mod devnode;
mod dmio;
mod error;
mod events;
mod handover;
mod metasnap;
mod names;
mod pool;
mod resize;
mod status;
pub mod superblock;
mod thin;
mod thin_id;
mod units;

pub use devicemapper::Device;
pub use error::{Error, Result};
pub use events::{ArmedEvents, PoolEvents};
pub use handover::FrontState;
pub use metasnap::MetadataSnapshot;
pub use names::{mapper_path, validate_name, DEFAULT_POOL_NAME, DEV_MAPPER_DIR, MAX_NAME_LEN};
pub use pool::{BlockZeroing, PoolConfig, SetupAction, ThinPool};
pub use status::{
    parse_pool_status, parse_thin_status, NoSpacePolicy, PoolMode, PoolState, PoolStatus,
    ThinState, ThinUsage, Usage,
};
pub use thin::ThinDevice;
pub use thin_id::{IdAllocator, ThinId};
pub use units::{BlockSize, Bytes, DataBlocks, MetaBlocks, SectorBytes, Sectors, SECTOR_SIZE};
