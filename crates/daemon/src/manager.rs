//! [`Manager`]: what the daemon needs from a volume manager.
//!
//! The daemon serves HTTP; the volume work is done by `convoy_core::VolumeManager`, which
//! implements this trait (see `core_manager`). Answers are already in wire form so that the HTTP
//! layer only routes and encodes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use convoy_api::wire::{
    BackupListResponse, BackupMountListResponse, BackupMountResponse, BackupResponse, InfoResponse,
    SnapshotResponse, VolumeListResponse, VolumeResponse,
};

use convoy_core::Progress;

use crate::Result;

/// A volume to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewVolume {
    /// Name; `None` lets the manager generate one.
    pub name: Option<String>,
    /// Driver; `None` for the default driver.
    pub driver: Option<String>,
    /// Size in bytes; `None` for the driver's default.
    pub size: Option<u64>,
    /// Restore from this backup URL.
    pub backup_url: Option<String>,
    /// S3 endpoint override for the restore.
    pub s3_endpoint: Option<String>,
    /// Clone this snapshot into the new volume.
    pub from_snapshot: Option<String>,
    /// Clone this volume (as it is now) into the new volume.
    pub from_volume: Option<String>,
    /// Restore into a larger `size` and grow the filesystem.
    pub grow: bool,
    /// Instant restore: usable at once, filled in the background.
    pub instant: bool,
}

/// The volume operations the daemon exposes. Every method is safe to call concurrently.
pub trait Manager: Clone + Send + Sync + 'static {
    /// Daemon and driver information (`info`).
    fn info(&self) -> impl Future<Output = Result<InfoResponse>> + Send;
    /// Creates a volume (restoring it from a backup if asked, reporting to `progress`).
    fn create_volume(
        &self,
        volume: NewVolume,
        progress: Arc<dyn Progress>,
    ) -> impl Future<Output = Result<VolumeResponse>> + Send;
    /// Deletes a volume; `reference_only` forgets it without destroying its data.
    fn delete_volume(
        &self,
        name: &str,
        reference_only: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Mounts a volume (at `mount_point` or its default place); answers where.
    fn mount_volume(
        &self,
        name: &str,
        mount_point: Option<PathBuf>,
    ) -> impl Future<Output = Result<PathBuf>> + Send;
    /// Unmounts a volume.
    fn umount_volume(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Every volume, or those of one driver.
    fn list_volumes(
        &self,
        driver: Option<&str>,
    ) -> impl Future<Output = Result<VolumeListResponse>> + Send;
    /// One volume.
    fn inspect_volume(&self, name: &str) -> impl Future<Output = Result<VolumeResponse>> + Send;
    /// Grows a volume and its filesystem to `size` bytes; answers the volume.
    fn expand_volume(
        &self,
        name: &str,
        size: u64,
    ) -> impl Future<Output = Result<VolumeResponse>> + Send;
    /// Points a snapshot's volume back at the snapshot's data; answers the volume.
    fn revert_snapshot(&self, name: &str) -> impl Future<Output = Result<VolumeResponse>> + Send;
    /// The byte ranges of snapshot `target` that hold data, or (with `base`, a snapshot of the
    /// same volume) that differ from `base` (the CSI SnapshotMetadata service).
    fn snapshot_block_ranges(
        &self,
        target: &str,
        base: Option<&str>,
    ) -> impl Future<Output = Result<convoy_core::BlockRanges>> + Send;
    /// Snapshots a volume.
    fn create_snapshot(
        &self,
        volume: &str,
        name: Option<String>,
    ) -> impl Future<Output = Result<SnapshotResponse>> + Send;
    /// Deletes a snapshot.
    fn delete_snapshot(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// One snapshot.
    fn inspect_snapshot(&self, name: &str)
        -> impl Future<Output = Result<SnapshotResponse>> + Send;
    /// Backs a snapshot up to `dest` (uploading at most `limit_upload` bytes/s when given),
    /// reporting to `progress`; answers the backup URL.
    fn create_backup(
        &self,
        snapshot: &str,
        dest: &str,
        s3_endpoint: Option<String>,
        limit_upload: Option<u64>,
        progress: Arc<dyn Progress>,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Deletes a backup.
    fn delete_backup(
        &self,
        url: &str,
        s3_endpoint: Option<String>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The backups at `dest`, optionally of one volume.
    fn list_backups(
        &self,
        dest: &str,
        volume: Option<&str>,
        s3_endpoint: Option<String>,
    ) -> impl Future<Output = Result<BackupListResponse>> + Send;
    /// One backup.
    fn inspect_backup(
        &self,
        url: &str,
        s3_endpoint: Option<String>,
    ) -> impl Future<Output = Result<BackupResponse>> + Send;
    /// Mounts backup `url`'s filesystem read-only at `mount_point` for browsing.
    fn mount_backup(
        &self,
        url: &str,
        mount_point: PathBuf,
        s3_endpoint: Option<String>,
    ) -> impl Future<Output = Result<BackupMountResponse>> + Send;
    /// Unmounts a backup mounted for browsing.
    fn umount_backup(&self, mount_point: PathBuf) -> impl Future<Output = Result<()>> + Send;
    /// The backups mounted for browsing, by mount point.
    fn list_backup_mounts(&self) -> impl Future<Output = Result<BackupMountListResponse>> + Send;
}
