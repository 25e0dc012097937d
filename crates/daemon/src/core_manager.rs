//! [`Manager`] for `convoy_core::VolumeManager`: calls it and maps its types to the wire forms.

use std::path::PathBuf;
use std::sync::Arc;

use convoy_api::wire::*;
use convoy_core::{
    BackupInfo, CreateVolumeRequest, Progress, Snapshot, StoreOptions, Volume, VolumeManager,
};

use crate::manager::NewVolume;
use crate::{DaemonError, ErrorKind, Manager, Result};

pub(crate) fn map_err(e: convoy_core::Error) -> DaemonError {
    let kind = match e.kind() {
        convoy_core::ErrorKind::NotFound => ErrorKind::NotFound,
        convoy_core::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        convoy_core::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
        convoy_core::ErrorKind::Busy => ErrorKind::Busy,
        convoy_core::ErrorKind::Unavailable => ErrorKind::Unavailable,
        convoy_core::ErrorKind::Internal => ErrorKind::Internal,
    };
    DaemonError::volume(kind, e.to_string())
}

fn store(s3_endpoint: Option<String>) -> StoreOptions {
    StoreOptions { s3_endpoint }
}

/// A core volume in wire form.
pub(crate) fn volume_response(v: Volume) -> VolumeResponse {
    VolumeResponse {
        name: v.name,
        driver: v.driver,
        mount_point: v
            .mount_point
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_time: v.created_time,
        driver_info: v.driver_info,
        snapshots: v
            .snapshots
            .into_iter()
            .map(|(name, s)| (name, snapshot_response(s)))
            .collect(),
    }
}

fn snapshot_response(s: Snapshot) -> SnapshotResponse {
    SnapshotResponse {
        name: s.name,
        volume_name: s.volume_name,
        volume_created_at: s.volume_created_at,
        created_time: s.created_time,
        driver_info: s.driver_info,
    }
}

fn backup_response(b: BackupInfo) -> BackupResponse {
    BackupResponse {
        BackupURL: b.backup_url,
        BackupUUID: b.backup_uuid,
        CreatedTime: b.created_time,
        DriverName: b.driver_name,
        SnapshotCreatedAt: b.snapshot_created_at,
        SnapshotName: b.snapshot_name,
        SnapshotUUID: b.snapshot_uuid,
        VolumeCreatedAt: b.volume_created_at,
        VolumeName: b.volume_name,
        VolumeSize: b.volume_size,
        VolumeUUID: b.volume_uuid,
    }
}

impl Manager for VolumeManager {
    async fn info(&self) -> Result<InfoResponse> {
        let info = VolumeManager::info(self).await.map_err(map_err)?;
        let mut out = InfoResponse::new();
        out.insert("General".to_string(), info.general);
        out.extend(info.drivers);
        Ok(out)
    }

    async fn create_volume(
        &self,
        volume: NewVolume,
        progress: Arc<dyn Progress>,
    ) -> Result<VolumeResponse> {
        let request = CreateVolumeRequest {
            name: volume.name,
            driver: volume.driver,
            size: volume.size,
            backup_url: volume.backup_url,
            store: store(volume.s3_endpoint),
        };
        VolumeManager::create_volume(self, request, progress)
            .await
            .map(volume_response)
            .map_err(map_err)
    }

    async fn delete_volume(&self, name: &str, reference_only: bool) -> Result<()> {
        VolumeManager::delete_volume(self, name, reference_only)
            .await
            .map_err(map_err)
    }

    async fn mount_volume(&self, name: &str, mount_point: Option<PathBuf>) -> Result<PathBuf> {
        VolumeManager::mount_volume(self, name, mount_point)
            .await
            .map_err(map_err)
    }

    async fn umount_volume(&self, name: &str) -> Result<()> {
        VolumeManager::umount_volume(self, name)
            .await
            .map_err(map_err)
    }

    async fn list_volumes(&self, driver: Option<&str>) -> Result<VolumeListResponse> {
        let volumes = VolumeManager::list_volumes(self, driver)
            .await
            .map_err(map_err)?;
        Ok(volumes
            .into_iter()
            .map(|v| (v.name.clone(), volume_response(v)))
            .collect())
    }

    async fn inspect_volume(&self, name: &str) -> Result<VolumeResponse> {
        VolumeManager::inspect_volume(self, name)
            .await
            .map(volume_response)
            .map_err(map_err)
    }

    async fn create_snapshot(
        &self,
        volume: &str,
        name: Option<String>,
    ) -> Result<SnapshotResponse> {
        VolumeManager::create_snapshot(self, volume, name)
            .await
            .map(snapshot_response)
            .map_err(map_err)
    }

    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        VolumeManager::delete_snapshot(self, name)
            .await
            .map_err(map_err)
    }

    async fn inspect_snapshot(&self, name: &str) -> Result<SnapshotResponse> {
        VolumeManager::inspect_snapshot(self, name)
            .await
            .map(snapshot_response)
            .map_err(map_err)
    }

    async fn create_backup(
        &self,
        snapshot: &str,
        dest: &str,
        s3_endpoint: Option<String>,
        progress: Arc<dyn Progress>,
    ) -> Result<String> {
        VolumeManager::create_backup(self, snapshot, dest, &store(s3_endpoint), progress)
            .await
            .map_err(map_err)
    }

    async fn delete_backup(&self, url: &str, s3_endpoint: Option<String>) -> Result<()> {
        VolumeManager::delete_backup(self, url, &store(s3_endpoint))
            .await
            .map_err(map_err)
    }

    async fn list_backups(
        &self,
        dest: &str,
        volume: Option<&str>,
        s3_endpoint: Option<String>,
    ) -> Result<BackupListResponse> {
        let backups = VolumeManager::list_backups(self, dest, volume, &store(s3_endpoint))
            .await
            .map_err(map_err)?;
        Ok(backups
            .into_iter()
            .map(|b| (b.backup_url.clone(), backup_response(b)))
            .collect())
    }

    async fn inspect_backup(
        &self,
        url: &str,
        s3_endpoint: Option<String>,
    ) -> Result<BackupResponse> {
        VolumeManager::inspect_backup(self, url, &store(s3_endpoint))
            .await
            .map(backup_response)
            .map_err(map_err)
    }
}
