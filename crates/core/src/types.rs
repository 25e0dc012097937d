//! The public data types of the manager's API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/rancher/convoy";

/// How a [`crate::VolumeManager`] is set up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerConfig {
    /// Root directory of records, mount points and the config file.
    pub root: PathBuf,
    /// Drivers to enable (`devicemapper`, `vfs`); the first is the default. Empty: take them
    /// from `<root>/convoy.cfg` of an earlier run.
    pub drivers: Vec<String>,
    /// Driver options (`dm.datadev` → `/dev/vdb`, `vfs.path` → `/srv/volumes`, ...).
    pub driver_opts: BTreeMap<String, String>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            root: PathBuf::from(DEFAULT_ROOT),
            drivers: Vec::new(),
            driver_opts: BTreeMap::new(),
        }
    }
}

/// Options for reaching a backup store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// S3 endpoint (`--s3-endpoint`); the `AWS_ENDPOINT` environment variable otherwise.
    pub s3_endpoint: Option<String>,
    /// Upload bandwidth limit of a backup, in bytes per second (`--limit-upload`; `None`:
    /// unlimited). Zero is refused.
    pub limit_upload: Option<u64>,
}

/// What to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateVolumeRequest {
    /// Name; `None` generates `volume-<16 hex>`.
    pub name: Option<String>,
    /// Driver; `None` uses the default driver.
    pub driver: Option<String>,
    /// Size in bytes; `None` uses the driver's default (`dm.defaultvolumesize`), or the
    /// backup's size when restoring.
    pub size: Option<u64>,
    /// Restore this backup URL into the new volume.
    pub backup_url: Option<String>,
    /// How to reach the backup store.
    pub store: StoreOptions,
    /// Clone: make the new volume from this snapshot (devicemapper: an instant thin snapshot
    /// of it; vfs: a copy). Not with `backup_url` or `from_volume`.
    pub from_snapshot: Option<String>,
    /// Clone: make the new volume from this volume as it is now (devicemapper: an instant,
    /// crash-consistent thin snapshot of it; vfs: a copy).
    pub from_volume: Option<String>,
    /// Restore: a `size` larger than the backup's volume is allowed, and the restored
    /// filesystem is grown to fill it (devicemapper).
    pub grow: bool,
    /// Restore: return as soon as the volume is usable and fill it in the background
    /// (devicemapper; `docs/instant.md`).
    pub instant: bool,
}

/// A volume as `inspect` and `list` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Driver that holds it.
    pub driver: String,
    /// Where it is mounted, if it is.
    pub mount_point: Option<PathBuf>,
    /// Creation time, Go `time.RubyDate` layout.
    pub created_time: String,
    /// Driver details (devicemapper: `DevID`, `Device`, `MountPoint`, `Size`, ...).
    pub driver_info: BTreeMap<String, String>,
    /// Its snapshots by name.
    pub snapshots: BTreeMap<String, Snapshot>,
}

/// A snapshot as `snapshot inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Name.
    pub name: String,
    /// Volume it belongs to.
    pub volume_name: String,
    /// When that volume was created.
    pub volume_created_at: String,
    /// Creation time, Go `time.RubyDate` layout.
    pub created_time: String,
    /// Driver details (devicemapper: `DevID`, `Size`).
    pub driver_info: BTreeMap<String, String>,
}

/// A backup as `backup inspect` / `backup list` show it: convoy-backupstore's record, which
/// serializes with the original's field names (`BackupURL`, `BackupUUID`, `DriverName`, ...).
pub use convoy_backupstore::BackupInfo;

/// `info` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// `Root`, `DriverList` (comma list), `DefaultDriver`.
    pub general: BTreeMap<String, String>,
    /// Per driver: devicemapper → `Driver`, `Root`, `DataDevice`, `MetadataDevice`,
    /// `ThinpoolDevice`, `ThinpoolSize`, `ThinpoolBlockSize`, `DefaultVolumeSize`, ...
    pub drivers: BTreeMap<String, BTreeMap<String, String>>,
}

/// Progress of a long operation (backup, restore, import): convoy-backupstore's trait, the one
/// progress trait of convoy — `start(total_bytes)`, `advance(bytes)` of volume data,
/// `uploaded(stored_bytes)` for each new block a backup uploads, `finish()` — every method
/// with a silent default.
pub use convoy_backupstore::Progress;

/// The silent [`Progress`].
pub use convoy_backupstore::NoProgress;

/// Whether a backup read everything or only what changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKind {
    /// Every mapped range of the snapshot was read.
    Full,
    /// Only the ranges that differ from the parent backup's snapshot were read.
    Incremental,
}

/// What a backup did (from [`crate::VolumeManager::create_backup_report`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The new backup's URL.
    pub backup_url: String,
    /// Full or incremental.
    pub kind: BackupKind,
    /// The snapshot the parent backup was made from (incremental only).
    pub parent_snapshot: Option<String>,
    /// Bytes of the ranges given to the store to read (mapped or changed ranges).
    pub range_bytes: u64,
    /// Bytes the store read from the snapshot.
    pub bytes_read: u64,
    /// Blocks uploaded (new to the store).
    pub blocks_uploaded: u64,
    /// Blocks the store already held.
    pub blocks_deduplicated: u64,
}
