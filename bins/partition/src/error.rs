//! The one error type of the setup helpers' library: each variant names the device involved and
//! says what to do about it.

use std::path::PathBuf;

/// Why a device cannot be partitioned, or partitioning it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The path does not exist or cannot be inspected.
    #[error("cannot find device {device}: {source}")]
    NotFound {
        /// The path given.
        device: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The path is not a block device (a regular file, a directory, ...).
    #[error("{device} is {kind}, not a block device{hint}")]
    NotBlockDevice {
        /// The path given.
        device: PathBuf,
        /// What it is instead ("a regular file").
        kind: &'static str,
        /// A hint on what to do, starting with "; " (or empty).
        hint: String,
    },
    /// The device is itself a partition of another disk.
    #[error(
        "{device} is partition {number} of /dev/{disk}; give the whole disk, which must be empty"
    )]
    IsPartition {
        /// The path given.
        device: PathBuf,
        /// The disk it belongs to (kernel name).
        disk: String,
        /// Its partition number.
        number: u32,
    },
    /// The device already carries partitions (the original script's wording, plus how we know).
    #[error("{device} already partitioned, can't start partition ({detail})")]
    AlreadyPartitioned {
        /// The path given.
        device: PathBuf,
        /// Which partitions or table were found.
        detail: String,
    },
    /// The device, or a partition of it, is mounted.
    #[error(
        "{device} is mounted on {mount_point}; unmount it first (it must be an unused, empty disk)"
    )]
    Mounted {
        /// The path given.
        device: PathBuf,
        /// Where it is mounted.
        mount_point: String,
    },
    /// The device is an active swap area.
    #[error("{device} is in use as swap; swapoff it first (it must be an unused, empty disk)")]
    Swap {
        /// The path given.
        device: PathBuf,
    },
    /// Another kernel device (device-mapper, md, bcache...) is built on top of the device.
    #[error(
        "{device} is in use by {holders} (see /sys/class/block/*/holders); remove those first"
    )]
    Held {
        /// The path given.
        device: PathBuf,
        /// The holders' kernel names, comma separated.
        holders: String,
    },
    /// Opening the device was not permitted.
    #[error(
        "permission denied opening {device}: partitioning a disk needs root (run it with sudo)"
    )]
    NeedsRoot {
        /// The path given.
        device: PathBuf,
    },
    /// An exclusive open was refused: someone else has claimed the device.
    #[error("{device} is busy (an exclusive open failed: {source}); is it mounted or used by another program?")]
    Busy {
        /// The path given.
        device: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Data was found on the device: it is not empty.
    #[error("{device} is not empty: it holds {what} at byte {offset}; wipe it first (`wipefs -a {device}`) if its contents may be destroyed")]
    NotEmpty {
        /// The path given.
        device: PathBuf,
        /// What was recognised ("an ext2/3/4 filesystem").
        what: &'static str,
        /// Where its signature was found.
        offset: u64,
    },
    /// The device cannot hold a table, a metadata partition and a useful data partition.
    #[error("{device} is too small: {size} bytes, but at least {needed} bytes are needed ({why})")]
    TooSmall {
        /// The path given.
        device: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The minimum size in bytes.
        needed: u64,
        /// What takes the room.
        why: String,
    },
    /// A figure is out of range (a `--max-thins` of 0, a metadata area over dm-thin's limit).
    #[error("{0}")]
    InvalidFigure(String),
    /// Reading or writing the device failed.
    #[error("cannot {action} {device}: {source}")]
    Io {
        /// What was being done ("write the partition table of").
        action: &'static str,
        /// The path given.
        device: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The partition-table library refused the layout.
    #[error("cannot write the {kind} partition table of {device}: {message}")]
    Table {
        /// "MBR" or "GPT".
        kind: &'static str,
        /// The path given.
        device: PathBuf,
        /// The library's error.
        message: String,
    },
    /// The kernel did not take the new partitions up.
    #[error("the partition table of {device} was written, but the kernel did not re-read it: {message}; run `partx --update {device}` or reboot")]
    Reread {
        /// The path given.
        device: PathBuf,
        /// What was tried and what failed.
        message: String,
    },
}

/// The result type of the setup helpers' library.
pub type Result<T, E = SetupError> = std::result::Result<T, E>;

/// Maps an I/O error to [`SetupError::Io`] for `action` on `device` (for `map_err`).
pub(crate) fn io_err<'a>(
    device: &'a std::path::Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> SetupError + 'a {
    move |source| SetupError::Io {
        action,
        device: device.to_path_buf(),
        source,
    }
}
