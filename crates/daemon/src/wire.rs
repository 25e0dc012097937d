//! convoy-core's answers in wire form (`convoy_api::wire`): what the `/v1` handlers and the
//! Docker plugin send. The handlers call `convoy_core::VolumeManager` themselves and map its
//! results with these functions (a core error becomes a [`crate::DaemonError::Volume`] by `From`,
//! kept whole).

use convoy_api::wire::*;
use convoy_core::{BackupInfo, Info, Snapshot, StoreOptions, Volume, VolumeManager};

/// Store options naming only an S3 endpoint.
pub(crate) fn store(s3_endpoint: Option<String>) -> StoreOptions {
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

/// A core backup in wire form (`BackupName` from the URL's `backup=`): the original's JSON,
/// every field a string (`VolumeSize` the decimal number of bytes).
pub(crate) fn backup_response(b: BackupInfo) -> BackupResponse {
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
        VolumeSize: b.volume_size.to_string(),
        VolumeUUID: b.volume_uuid,
    }
}

/// A snapshot in wire form, with its volume's driver in `DriverInfo.Driver`.
pub(crate) async fn snapshot_wire(manager: &VolumeManager, snapshot: Snapshot) -> SnapshotResponse {
    // The volume may have gone since; the snapshot is answered without its driver then.
    let driver = manager
        .inspect_volume(&snapshot.volume_name)
        .await
        .map(|v| v.driver)
        .unwrap_or_default();
    snapshot_response(snapshot, &driver)
}

/// `info` in wire form: `General` and one section per driver, values as JSON strings.
pub(crate) fn info_response(info: Info) -> InfoResponse {
    let strings = |section: std::collections::BTreeMap<String, String>| {
        section
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect()
    };
    let mut out = InfoResponse::new();
    out.insert("General".to_string(), strings(info.general));
    out.extend(info.drivers.into_iter().map(|(k, v)| (k, strings(v))));
    out
}

/// Volumes in wire form, by name.
pub(crate) fn volume_list(volumes: Vec<Volume>) -> VolumeListResponse {
    volumes
        .into_iter()
        .map(|v| (v.name.clone(), volume_response(v)))
        .collect()
}

/// Backups in wire form, by URL.
pub(crate) fn backup_list(backups: Vec<BackupInfo>) -> BackupListResponse {
    backups
        .into_iter()
        .map(|b| (b.backup_url.clone(), backup_response(b)))
        .collect()
}

/// Browse mounts in wire form, by mount point.
pub(crate) fn backup_mount_list(mounts: Vec<convoy_core::BackupMount>) -> BackupMountListResponse {
    mounts
        .into_iter()
        .map(|m| {
            let wire = backup_mount_response(m);
            (wire.mount_point.clone(), wire)
        })
        .collect()
}

/// The `backup=` name of a backup URL.
fn convoy_backupstore_name(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("backup="))
        .map(str::to_string)
}

/// A core browse mount in wire form.
pub(crate) fn backup_mount_response(m: convoy_core::BackupMount) -> BackupMountResponse {
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
        let d = crate::DaemonError::from(e);
        assert_eq!(d.kind(), crate::ErrorKind::Unavailable);
        assert_eq!(crate::error::http_status(d.kind()), 503);
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
