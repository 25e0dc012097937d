//! The crate's one error type, with variants by meaning. Every variant names the pool, device,
//! path or id involved, so that a message read in a log says what failed and on what.

use std::path::PathBuf;

use devicemapper::{DataBlocks, DmError};
use nix::errno::Errno;

use crate::units::Sectors;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `convoy-thinpool`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pool block size outside the kernel's rules.
    #[error(
        "invalid thin-pool block size {sectors} sectors: it must be a multiple of 128 sectors \
         (64 KiB) between 128 and 2097152 sectors (1 GiB); the default is 4096 (2 MiB)"
    )]
    InvalidBlockSize {
        /// The value given, in 512-byte sectors.
        sectors: u64,
    },

    /// A device-mapper name that the kernel would refuse.
    #[error("invalid device-mapper name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A thin device id above the kernel's 24-bit limit.
    #[error("invalid thin device id {value:?}: the kernel allows 0..=16777215 (24 bits)")]
    InvalidThinId {
        /// The id given, as given.
        value: String,
    },

    /// A size that cannot be used for the device named.
    #[error("invalid size for {device}: {reason}")]
    InvalidSize {
        /// The device (or path) involved.
        device: String,
        /// What is wrong.
        reason: String,
    },

    /// A path that should be a block device is something else.
    #[error("{path} is not a block device")]
    NotABlockDevice {
        /// The path given.
        path: PathBuf,
    },

    /// The object named does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// What kind of object: "thin pool", "thin device id", "device-mapper device", ...
        kind: &'static str,
        /// Its name or id.
        name: String,
    },

    /// The object named exists already.
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// What kind of object.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },

    /// The device is in use (open, mounted, or active) and the operation needs it idle.
    #[error("{device} is busy: {reason}")]
    Busy {
        /// The device involved.
        device: String,
        /// Why it counts as busy.
        reason: String,
    },

    /// The pool has no free data blocks.
    #[error(
        "thin pool {pool} is out of data space ({} of {} blocks used): \
         delete volumes or snapshots, or extend the data device",
        used.0,
        total.0
    )]
    PoolFull {
        /// The pool's device-mapper name.
        pool: String,
        /// Data blocks in use.
        used: DataBlocks,
        /// Data blocks in total.
        total: DataBlocks,
    },

    /// The pool is in read-only or failed mode and refuses changes.
    #[error(
        "thin pool {pool} is {mode} and refuses changes (a metadata commit failed, e.g. after \
         I/O errors on its data or metadata device; see dmesg): fix the device, stop convoy, \
         unmount its volumes, deactivate the pool and its thin devices, run thin_check \
         --clear-needs-check-flag on the metadata device (thin_repair if it reports damage) and \
         start convoy again"
    )]
    PoolReadOnly {
        /// The pool's device-mapper name.
        pool: String,
        /// The mode the kernel reports.
        mode: String,
    },

    /// The pool ran out of metadata space; the kernel switched it to read-only.
    #[error(
        "thin pool {pool} is out of metadata space ({used} of {total} metadata blocks used) and \
         the kernel made it read-only: deleting volumes or snapshots is refused too; grow the \
         metadata device and reload the pool's table (or deactivate the pool and start convoy \
         again)"
    )]
    MetadataFull {
        /// The pool's device-mapper name.
        pool: String,
        /// Metadata blocks in use (the kernel counts its reserve as used).
        used: u64,
        /// Metadata blocks in total.
        total: u64,
    },

    /// The kernel answered a pool message with an I/O error: a device under the pool (data or
    /// metadata) fails.
    #[error(
        "thin pool {pool}: {operation} failed with an I/O error (EIO): a device under the pool \
         ({devices}) has I/O errors; see dmesg"
    )]
    PoolIo {
        /// The pool's device-mapper name.
        pool: String,
        /// What was attempted, e.g. `message "reserve_metadata_snap"`.
        operation: String,
        /// The pool's devices, as `data /dev/X or metadata /dev/Y` (one field keeps the error
        /// type small).
        devices: String,
    },

    /// A metadata snapshot is already held on the pool (only one may exist).
    #[error(
        "thin pool {pool} already holds a metadata snapshot (kernel allows one; \
         release it with release_metadata_snap first)"
    )]
    MetadataSnapshotHeld {
        /// The pool's device-mapper name.
        pool: String,
    },

    /// The metadata device holds something that is neither a thin-pool superblock nor zeroes.
    #[error(
        "metadata device {path} holds data that is not thin-pool metadata \
         (first 4 KiB neither zeroed nor a thin-pool superblock); refusing to overwrite it \
         without the force option"
    )]
    ForeignMetadata {
        /// The metadata device.
        path: PathBuf,
    },

    /// Existing pool metadata was written with another block size than the one requested.
    #[error(
        "metadata device {path} belongs to a pool with block size {on_disk} sectors, \
         but {requested} sectors were requested; the block size of a pool cannot change"
    )]
    BlockSizeMismatch {
        /// The metadata device.
        path: PathBuf,
        /// Block size requested.
        requested: u64,
        /// Block size recorded in the superblock.
        on_disk: u64,
    },

    /// The metadata device already holds a pool, and `create` was asked for a new one.
    #[error(
        "metadata device {path} already holds thin-pool metadata (transaction id \
         {transaction_id}): open the pool instead, or pass the force option to wipe it"
    )]
    MetadataInUse {
        /// The metadata device.
        path: PathBuf,
        /// Transaction id recorded in its superblock.
        transaction_id: u64,
    },

    /// The kernel reports the device as failed (`Fail` or `Error` status).
    #[error(
        "{device} has failed (the kernel reports its status as Fail/Error: I/O errors on its \
         devices, see dmesg); fix the device, then unmount its volumes, deactivate the pool and \
         its thin devices, run thin_check on the metadata device and start convoy again"
    )]
    Failed {
        /// The device involved.
        device: String,
    },

    /// `set_transaction_id` was given an old id that is not the pool's current one.
    #[error("thin pool {pool} has transaction id {actual}, not {given}")]
    TransactionIdMismatch {
        /// The pool's device-mapper name.
        pool: String,
        /// The old id the caller gave.
        given: u64,
        /// The id the pool has.
        actual: u64,
    },

    /// An active device's table differs from the one expected.
    #[error("device-mapper device {device} is active with a different table: expected {expected:?}, found {found:?}")]
    TableMismatch {
        /// The device's name.
        device: String,
        /// Table line expected.
        expected: String,
        /// Table line the kernel reports.
        found: String,
    },

    /// Every id in the 24-bit space is in use.
    #[error("no free thin device id: all 16777216 ids are in use")]
    IdsExhausted,

    /// The kernel reported a status line this crate cannot read.
    #[error("cannot parse status of {device}: {reason} (status line {line:?})")]
    StatusParse {
        /// The device involved.
        device: String,
        /// The raw status line.
        line: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Device-mapper itself is not available (no `/dev/mapper/control`, module not loaded).
    #[error("device-mapper is not available on this system: {reason}")]
    DeviceMapperUnavailable {
        /// What the open of the control device said.
        reason: String,
    },

    /// A device-mapper call failed for a reason with no more specific variant.
    #[error("device-mapper {operation} on {device} failed: {source}")]
    DeviceMapper {
        /// What was attempted, e.g. `message "create_thin 7"`.
        operation: String,
        /// The device involved.
        device: String,
        /// The underlying error.
        #[source]
        source: DmError,
    },

    /// I/O on a path failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Build an [`Error::Io`].
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    /// Build an [`Error::InvalidSize`] for a size of zero or otherwise unusable.
    pub(crate) fn invalid_size(device: impl Into<String>, size: Sectors, why: &str) -> Error {
        Error::InvalidSize {
            device: device.into(),
            reason: format!("{size}: {why}"),
        }
    }
}

/// The errno of a failed ioctl, if the error carries one.
pub(crate) fn errno_of(err: &DmError) -> Option<Errno> {
    match err {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => Some(**errno),
        _ => None,
    }
}

/// Wrap a devicemapper error into [`Error::DeviceMapper`].
pub(crate) fn dm_error(operation: impl Into<String>, device: &str, source: DmError) -> Error {
    Error::DeviceMapper {
        operation: operation.into(),
        device: device.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_object() {
        let full = Error::PoolFull {
            pool: "convoy-pool".into(),
            used: DataBlocks(128),
            total: DataBlocks(128),
        };
        assert_eq!(
            full.to_string(),
            "thin pool convoy-pool is out of data space (128 of 128 blocks used): delete \
             volumes or snapshots, or extend the data device"
        );
        let nf = Error::NotFound {
            kind: "thin device id",
            name: "7 in pool convoy-pool".into(),
        };
        assert_eq!(
            nf.to_string(),
            "thin device id 7 in pool convoy-pool not found"
        );
        let held = Error::MetadataSnapshotHeld { pool: "p".into() };
        assert!(held.to_string().contains("thin pool p already holds"));
    }
}
