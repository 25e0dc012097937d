//! [`Manager`] for `convoy_core::VolumeManager`: calls it and maps its types to the wire forms.

use std::path::PathBuf;
use std::sync::Arc;

use convoy_api::wire::*;
use convoy_core::{
    BackupInfo, CreateVolumeRequest, Progress, Snapshot, StoreOptions, Volume, VolumeManager,
};

use crate::manager::NewVolume;
use crate::metrics::TransferKind;
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
    StoreOptions {
        s3_endpoint,
        ..StoreOptions::default()
    }
}

/// A core volume in wire form. `DriverInfo` carries the original's keys besides the driver's
/// own: `Driver`, `VolumeName`, `VolumeCreatedAt` (and per snapshot those of
/// [`snapshot_response`]).
pub(crate) fn volume_response(v: Volume) -> VolumeResponse {
    let mut driver_info = v.driver_info;
    for (key, value) in [
        ("Driver", &v.driver),
        ("VolumeName", &v.name),
        ("VolumeCreatedAt", &v.created_time),
    ] {
        driver_info
            .entry(key.to_string())
            .or_insert_with(|| value.clone());
    }
    let (name, driver) = (v.name.clone(), v.driver.clone());
    VolumeResponse {
        name: v.name,
        driver: v.driver,
        mount_point: v
            .mount_point
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created_time: v.created_time,
        driver_info,
        snapshots: v
            .snapshots
            .into_iter()
            .map(|(snapshot, mut s)| {
                if s.volume_name.is_empty() {
                    s.volume_name.clone_from(&name);
                }
                let mut wire = snapshot_response(s, &driver);
                // Inside a volume the original left the volume's keys out.
                wire.volume_name.clear();
                wire.volume_created_at.clear();
                (snapshot, wire)
            })
            .collect(),
    }
}

/// A core snapshot in wire form. `DriverInfo` carries the original's keys besides the
/// driver's own: `Driver`, `SnapshotName`, `SnapshotCreatedAt`, `UUID` (the name: convoy's
/// names are the original's identifiers) and `VolumeUUID` (the volume's name).
pub(crate) fn snapshot_response(s: Snapshot, driver: &str) -> SnapshotResponse {
    let mut driver_info = s.driver_info;
    for (key, value) in [
        ("Driver", driver),
        ("SnapshotName", &s.name),
        ("SnapshotCreatedAt", &s.created_time),
        ("UUID", &s.name),
        ("VolumeUUID", &s.volume_name),
    ] {
        driver_info
            .entry(key.to_string())
            .or_insert_with(|| value.to_string());
    }
    SnapshotResponse {
        name: s.name,
        volume_name: s.volume_name,
        volume_created_at: s.volume_created_at,
        created_time: s.created_time,
        driver_info,
    }
}

/// A backup's time in the original's form (Go's `time.RubyDate`, as volumes and snapshots
/// show theirs): convoy's store records RFC 3339; anything else is passed through.
fn ruby_time(text: &str) -> String {
    match humantime::parse_rfc3339_weak(text) {
        Ok(time) => {
            let secs = time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            convoy_core::ruby_date(secs)
        }
        Err(_) => text.to_string(),
    }
}

fn backup_response(b: BackupInfo) -> BackupResponse {
    let name = convoy_backupstore_name(&b.backup_url).unwrap_or_else(|| b.backup_uuid.clone());
    BackupResponse {
        BackupName: name,
        BackupURL: b.backup_url,
        BackupUUID: b.backup_uuid,
        CreatedTime: ruby_time(&b.created_time),
        DriverName: b.driver_name,
        Encrypted: b.encrypted,
        SnapshotCreatedAt: b.snapshot_created_at,
        SnapshotName: b.snapshot_name,
        SnapshotUUID: b.snapshot_uuid,
        VolumeCreatedAt: b.volume_created_at,
        VolumeName: b.volume_name,
        VolumeSize: b.volume_size,
        VolumeUUID: b.volume_uuid,
    }
}

/// A snapshot in wire form, with its volume's driver in `DriverInfo.Driver`.
trait SnapshotWire {
    async fn snapshot_wire(&self, snapshot: Snapshot) -> SnapshotResponse;
}

impl SnapshotWire for VolumeManager {
    async fn snapshot_wire(&self, snapshot: Snapshot) -> SnapshotResponse {
        // The volume may have gone since; the snapshot is answered without its driver then.
        let driver = VolumeManager::inspect_volume(self, &snapshot.volume_name)
            .await
            .map(|v| v.driver)
            .unwrap_or_default();
        snapshot_response(snapshot, &driver)
    }
}

/// The `backup=` name of a backup URL.
fn convoy_backupstore_name(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("backup="))
        .map(str::to_string)
}

impl Manager for VolumeManager {
    async fn info(&self) -> Result<InfoResponse> {
        let info = VolumeManager::info(self).await.map_err(map_err)?;
        let strings = |section: std::collections::BTreeMap<String, String>| {
            section
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect()
        };
        let mut out = InfoResponse::new();
        out.insert("General".to_string(), strings(info.general));
        out.extend(info.drivers.into_iter().map(|(k, v)| (k, strings(v))));
        Ok(out)
    }

    async fn create_volume(
        &self,
        volume: NewVolume,
        progress: Arc<dyn Progress>,
    ) -> Result<VolumeResponse> {
        // A restore is measured (`metrics`): bytes written, as reported to its progress.
        let restore = volume.backup_url.as_deref().map(|url| {
            let counted = crate::metrics::CountingProgress::new(progress.clone());
            let transfer = crate::metrics::Transfer::start(TransferKind::Restore, url);
            (counted, transfer)
        });
        let progress: Arc<dyn Progress> = match &restore {
            Some((counted, _)) => counted.clone(),
            None => progress,
        };
        let request = CreateVolumeRequest {
            name: volume.name,
            driver: volume.driver,
            size: volume.size,
            backup_url: volume.backup_url,
            store: store(volume.s3_endpoint),
            from_snapshot: volume.from_snapshot,
            from_volume: volume.from_volume,
            grow: volume.grow,
            instant: volume.instant,
        };
        let created = VolumeManager::create_volume(self, request, progress).await;
        if let Some((counted, transfer)) = restore {
            transfer.finish(created.as_ref().map(|_| counted.bytes()));
        }
        created.map(volume_response).map_err(map_err)
    }

    async fn expand_volume(&self, name: &str, size: u64) -> Result<VolumeResponse> {
        VolumeManager::expand_volume(self, name, size)
            .await
            .map(volume_response)
            .map_err(map_err)
    }

    async fn revert_snapshot(&self, name: &str) -> Result<VolumeResponse> {
        VolumeManager::revert_snapshot(self, name)
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
        let snapshot = VolumeManager::create_snapshot(self, volume, name)
            .await
            .map_err(map_err)?;
        Ok(self.snapshot_wire(snapshot).await)
    }

    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        VolumeManager::delete_snapshot(self, name)
            .await
            .map_err(map_err)
    }

    async fn snapshot_block_ranges(
        &self,
        target: &str,
        base: Option<&str>,
    ) -> Result<convoy_core::BlockRanges> {
        VolumeManager::snapshot_block_ranges(self, target, base)
            .await
            .map_err(map_err)
    }

    async fn inspect_snapshot(&self, name: &str) -> Result<SnapshotResponse> {
        let snapshot = VolumeManager::inspect_snapshot(self, name)
            .await
            .map_err(map_err)?;
        Ok(self.snapshot_wire(snapshot).await)
    }

    async fn create_backup(
        &self,
        snapshot: &str,
        dest: &str,
        s3_endpoint: Option<String>,
        limit_upload: Option<u64>,
        progress: Arc<dyn Progress>,
    ) -> Result<String> {
        let store = StoreOptions {
            limit_upload,
            ..store(s3_endpoint)
        };
        let transfer = crate::metrics::Transfer::start(TransferKind::Backup, dest);
        let report =
            VolumeManager::create_backup_report(self, snapshot, dest, &store, progress).await;
        transfer.finish(report.as_ref().map(|r| r.bytes_read));
        report.map(|r| r.backup_url).map_err(map_err)
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

    async fn mount_backup(
        &self,
        url: &str,
        mount_point: PathBuf,
        s3_endpoint: Option<String>,
    ) -> Result<BackupMountResponse> {
        VolumeManager::mount_backup(self, url, &mount_point, &store(s3_endpoint))
            .await
            .map(backup_mount_response)
            .map_err(map_err)
    }

    async fn umount_backup(&self, mount_point: PathBuf) -> Result<()> {
        VolumeManager::umount_backup(self, &mount_point)
            .await
            .map_err(map_err)
    }

    async fn list_backup_mounts(&self) -> Result<BackupMountListResponse> {
        Ok(VolumeManager::list_backup_mounts(self)
            .into_iter()
            .map(|m| {
                let wire = backup_mount_response(m);
                (wire.mount_point.clone(), wire)
            })
            .collect())
    }
}

/// A core browse mount in wire form.
fn backup_mount_response(m: convoy_core::BackupMount) -> BackupMountResponse {
    BackupMountResponse {
        backup_url: m.backup_url,
        mount_point: m.mount_point.to_string_lossy().into_owned(),
        device: m
            .device
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default(),
        filesystem: m.filesystem,
    }
}

#[cfg(test)]
mod fill_tests {
    use super::*;

    #[test]
    fn a_fill_refusal_reaches_clients_as_503_with_its_message() {
        let e = convoy_core::Error::PoolFill(Box::new(convoy_core::FillRefusal {
            what: "create volume v2".into(),
            pool: "convoy-pool".into(),
            space: "data",
            used: 983,
            total: 1024,
            percent: convoy_core::percent_text(983, 1024),
            setting: "dm.fillrefuse=95".into(),
        }));
        let d = map_err(e);
        assert_eq!(d.kind(), ErrorKind::Unavailable);
        assert_eq!(d.kind().http_status(), 503);
        let msg = d.to_string();
        for part in [
            "create volume v2 refused",
            "convoy-pool",
            "95.9% full",
            "983 of 1024",
            "dm.fillrefuse=95",
        ] {
            assert!(msg.contains(part), "{part:?} missing from {msg}");
        }
    }
}
