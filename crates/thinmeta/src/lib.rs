//! # convoy-thinmeta
//!
//! A pure, read-only reader of dm-thin pool metadata (bytes in, mappings out):
//!
//! * [`ThinMetadata`] opens metadata from any `Read + Seek` source of 4 KiB blocks (a file, a
//!   metadata device) through the live superblock or the held metadata snapshot, and gives the
//!   device details ([`ThinMetadata::devices`]) and each device's mapped runs
//!   ([`ThinMetadata::mapped_runs`]).
//! * [`ThinMetadata::delta`] compares two devices as a stream of [`DeltaRun`]s tagged
//!   [`DeltaKind::Same`] / `Different` / `LeftOnly` / `RightOnly`, walking both trees together
//!   and not descending where both point at the same block, so with
//!   [`DeltaMode::ChangesOnly`] the cost follows what changed rather than the volume size.
//!   [`DeltaMode::Full`] lists shared subtrees too (read once, from one side, a run of
//!   contiguous blocks at a time); [`DeltaMode::FullByKey`] splits runs only where virtual
//!   blocks stop being contiguous, which is all plain `thin_delta` output needs, so a shared
//!   leaf costs one read and its validation.
//! * [`builder`] writes kernel-format metadata for test fixtures, including snapshots that share
//!   subtrees with their origin.
//!
//! Every block read is validated (checksum and salt, location, flags, entry counts, ascending
//! keys within the range the parent gives, value size, height); corrupt input gives a
//! [`ThinMetaError`] naming the block. Memory is bounded by the tree depth: one node per level
//! per cursor plus a fixed 32-block cache and a read-ahead window of at most 64 blocks
//! (256 KiB), used when cache misses run forward through the file.
//!
//! Reading a live pool's metadata device: hold a metadata snapshot first (pool message
//! `reserve_metadata_snap`) and open through it; the kernel writes the metadata device around
//! the page cache, so drop that device's cached pages (`blockdev --flushbufs`, ioctl
//! `BLKFLSBUF`) before opening it with buffered reads, or read it with `O_DIRECT`.
//!
//! ```no_run
//! use convoy_thinmeta::{DeltaKind, DeltaMode, ThinMetadata};
//! let file = std::fs::File::open("/dev/mapper/pool_tmeta")?;
//! let mut md = ThinMetadata::open_metadata_snapshot(file, None)?;
//! for run in md.delta(1, 2, DeltaMode::ChangesOnly)? {
//!     let run = run?;
//!     assert_ne!(run.kind, DeltaKind::Same);
//!     println!("{:?} {}+{}", run.kind, run.begin, run.length);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod block;
pub mod builder;
pub mod checksum;
mod cursor;
mod delta;
mod details;
mod error;
mod mappings;
mod metadata;
mod node;
mod superblock;
pub mod xml;

pub use block::{Block, BlockReader};
pub use cursor::MAX_HEIGHT;
pub use delta::{Delta, DeltaKind, DeltaMode, DeltaRun};
pub use details::DeviceDetails;
pub use error::{Result, ThinMetaError};
pub use mappings::{pack_mapping, unpack_mapping, MappedRun, MappedRuns};
pub use metadata::ThinMetadata;
pub use node::max_entries;
pub use superblock::{SpaceMapRoot, Superblock, SUPERBLOCK_MAGIC};
