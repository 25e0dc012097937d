//! The convoy setup helpers' shared logic.
//!
//! * [`metadata_size`] — `convoy-pdata_tools thin_metadata_size`, a faithful copy of
//!   thin-provisioning-tools' metadata-size calculator (arguments, units, output, errors).
//! * [`sizing`] — the same estimate in exact integer arithmetic, and the figures the partition
//!   helper prints (device, metadata and data sizes).
//! * [`device`], [`inuse`], [`signatures`] — what a block device is and whether it is free to
//!   partition: size and sector size from sysfs, existing partitions, mounts, swap, holders,
//!   exclusive open, on-disk signatures.
//! * [`layout`] and [`table`] — where the data and metadata partitions go (MBR up to 2 TiB, GPT
//!   beyond) and writing that table; [`reread`] makes the kernel pick it up.
//!
//! The binaries are thin: `convoy-partition` (the original `dm_dev_partition.sh`) and
//! `convoy-pdata_tools` (a multi-call binary of persistent-data tools).

pub mod device;
pub mod error;
pub mod helper;
pub mod inuse;
pub mod layout;
pub mod metadata_size;
pub mod reread;
pub mod signatures;
pub mod sizing;
pub mod table;

pub use error::{Result, SetupError};
