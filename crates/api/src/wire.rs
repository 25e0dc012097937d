//! The JSON shapes of convoy's `/v1` API.
//!
//! Field names are the original Convoy's (Go, v0.5.2): PascalCase, `URL`, `BackupURL`,
//! `MountPoint`. Requests are lenient the way Go's `encoding/json` was: missing fields take their
//! default and unknown fields are ignored. Responses serialize in the original's key order (struct
//! order for structs, sorted keys for maps) so its indented output is reproduced.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

mod policy;
pub use policy::{
    PolicyActionResponse, PolicyListResponse, PolicyRemoveRequest, PolicyResponse, PolicySetRequest,
};

/// `POST /v1/volumes/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeCreateRequest {
    /// Volume name; empty lets the daemon generate `volume-<16 hex>`.
    pub name: String,
    /// Driver to use; empty means the daemon's default driver.
    pub driver_name: String,
    /// Size in bytes; `None` (or 0) means the driver's default. Also accepted as a string
    /// such as `"10G"`.
    #[serde(
        deserialize_with = "size_field",
        skip_serializing_if = "Option::is_none"
    )]
    pub size: Option<u64>,
    /// Restore the new volume from this backup URL; empty for an empty volume.
    #[serde(rename = "BackupURL")]
    pub backup_url: String,
    /// S3 endpoint override for the restore (empty: `AWS_ENDPOINT` or AWS's own).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub s3_endpoint: String,
    /// convoy's addition: clone this snapshot into the new volume (`create --snapshot`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub snapshot_name: String,
    /// convoy's addition: clone this volume as it is now (`create --volume`).
    #[serde(rename = "SourceVolumeName", skip_serializing_if = "String::is_empty")]
    pub source_volume_name: String,
    /// convoy's addition: restore into a larger `Size` and grow the filesystem
    /// (`create --backup URL --size SIZE --grow`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub grow: bool,
    /// convoy's addition: an instant restore (`create --backup URL --instant`): answered as
    /// soon as the volume is usable, filled in the background.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub instant: bool,
    /// `false` asks for the bare answer (the original client's default: a name, mount point or
    /// URL as plain text); `true` or absent for the JSON object.
    #[serde(
        rename = "Verbose",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub verbose: Option<bool>,
}

/// `POST /v1/volumes/expand` (convoy's addition): grow a volume and its filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeExpandRequest {
    /// The volume.
    pub volume_name: String,
    /// The new size in bytes (also accepted as a string such as `"10G"`).
    #[serde(
        deserialize_with = "size_field",
        skip_serializing_if = "Option::is_none"
    )]
    pub size: Option<u64>,
}

/// `DELETE /v1/volumes/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeDeleteRequest {
    /// The volume to delete.
    pub volume_name: String,
    /// Forget the volume without destroying its data (`delete --reference`).
    pub reference_only: bool,
}

/// `POST /v1/volumes/mount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeMountRequest {
    /// The volume to mount.
    pub volume_name: String,
    /// Where to mount it; empty for the driver's default mount point.
    pub mount_point: String,
    /// `false` asks for the bare answer (the original client's default: a name, mount point or
    /// URL as plain text); `true` or absent for the JSON object.
    #[serde(
        rename = "Verbose",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub verbose: Option<bool>,
}

/// A request naming one volume: `POST /v1/volumes/umount`, `GET /v1/volumes/` (inspect).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeNameRequest {
    /// The volume.
    pub volume_name: String,
}

/// `GET /v1/volumes/list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeListRequest {
    /// Only volumes of this driver; empty for all.
    pub driver_name: String,
}

/// `POST /v1/snapshots/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SnapshotCreateRequest {
    /// Snapshot name; empty lets the daemon generate `snapshot-<16 hex>`.
    pub name: String,
    /// The volume to snapshot.
    pub volume_name: String,
    /// `false` asks for the bare answer (the original client's default: a name, mount point or
    /// URL as plain text); `true` or absent for the JSON object.
    #[serde(
        rename = "Verbose",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub verbose: Option<bool>,
}

/// A request naming one snapshot: `GET /v1/snapshots/` (inspect), `DELETE /v1/snapshots/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SnapshotNameRequest {
    /// The snapshot.
    pub snapshot_name: String,
}

/// `POST /v1/backups/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupCreateRequest {
    /// Destination: `s3://bucket@region/path` or `vfs:///path`.
    #[serde(rename = "URL")]
    pub url: String,
    /// The snapshot to back up.
    pub snapshot_name: String,
    /// S3 endpoint override (empty: `AWS_ENDPOINT` or AWS's own).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub s3_endpoint: String,
    /// Upload bandwidth limit in bytes per second (convoy's addition; absent: the daemon's
    /// `--backup-limit-upload`, else unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_upload: Option<u64>,
    /// `false` asks for the bare answer (the original client's default: a name, mount point or
    /// URL as plain text); `true` or absent for the JSON object.
    #[serde(
        rename = "Verbose",
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub verbose: Option<bool>,
}

/// `GET /v1/backups/list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupListRequest {
    /// The destination to list.
    #[serde(rename = "URL")]
    pub url: String,
    /// Only backups of this volume; empty for all.
    pub volume_name: String,
    /// S3 endpoint override.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub s3_endpoint: String,
}

/// A request naming one backup: `GET /v1/backups/inspect`, `DELETE /v1/backups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupUrlRequest {
    /// The backup URL (`<dest>?backup=<name>&volume=<name>`).
    #[serde(rename = "URL")]
    pub url: String,
    /// S3 endpoint override.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub s3_endpoint: String,
}

/// `POST /v1/backups/mount` (convoy's addition): mount a backup's filesystem read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupMountRequest {
    /// The backup URL (`<dest>?backup=<name>&volume=<name>`).
    #[serde(rename = "URL")]
    pub url: String,
    /// Where to mount it: an existing directory, absolute, not a mount point.
    pub mount_point: String,
    /// S3 endpoint override.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub s3_endpoint: String,
}

/// `POST /v1/backups/umount` (convoy's addition).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupUmountRequest {
    /// Where the backup is mounted.
    pub mount_point: String,
}

/// A backup mounted for browsing: the answer of `/v1/backups/mount`, and each entry of
/// `/v1/backups/mounts` (mount point → mount).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupMountResponse {
    /// The backup URL.
    #[serde(rename = "BackupURL")]
    pub backup_url: String,
    /// Where its filesystem is mounted (read-only).
    pub mount_point: String,
    /// The block device serving it (`/dev/nbdN`); empty for a directory-volume backup.
    pub device: String,
    /// The filesystem (`ext4`, `xfs`), or `tree` for a directory-volume backup.
    pub filesystem: String,
}

/// `GET /v1/backups/mounts`: mount point → mount.
pub type BackupMountListResponse = BTreeMap<String, BackupMountResponse>;

/// A volume, as `inspect`, `list` and `create --verbose` print it. Every field may be missing
/// from an answer (the original daemon's verbose `mount` answer carries only some).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeResponse {
    /// Volume name.
    pub name: String,
    /// Driver holding it (`devicemapper`, `vfs`).
    pub driver: String,
    /// Where it is mounted; empty when it is not.
    pub mount_point: String,
    /// Creation time, Go `time.RubyDate` format.
    pub created_time: String,
    /// Driver details (devicemapper: `DevID`, `Device`, `MountPoint`, `Size`).
    #[serde(default)]
    pub driver_info: BTreeMap<String, String>,
    /// The volume's snapshots by name.
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotResponse>,
}

/// A snapshot, as `snapshot inspect` prints it (and inside a volume's `Snapshots`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SnapshotResponse {
    /// Snapshot name.
    pub name: String,
    /// The volume it belongs to (left out inside a volume's `Snapshots`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub volume_name: String,
    /// The volume's creation time (left out inside a volume's `Snapshots`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub volume_created_at: String,
    /// Creation time, Go `time.RubyDate` format.
    pub created_time: String,
    /// Driver details (devicemapper: `DevID`, `Size`).
    #[serde(default)]
    pub driver_info: BTreeMap<String, String>,
}

/// A backup, as `backup inspect` prints it and `backup list` lists it. The original printed a
/// string map, so every value is a string and keys come out sorted: the fields are declared in
/// that order. Every field may be missing from an answer (the original daemon has no
/// `BackupUUID`, `SnapshotUUID` or `VolumeUUID`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case)]
#[serde(default)]
pub struct BackupResponse {
    /// The backup's name (the original's key).
    pub BackupName: String,
    /// The backup's URL, to restore from or delete.
    pub BackupURL: String,
    /// The backup's name (our older key, kept for scripts that read it).
    pub BackupUUID: String,
    /// When the backup was made, Go `time.RubyDate` layout (`Tue Dec 01 22:08:32 +0000 2026`).
    pub CreatedTime: String,
    /// The driver the backed-up volume used.
    pub DriverName: String,
    /// `"true"` for a backup in an encrypted store; empty and left out otherwise (the original
    /// had no such key).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub Encrypted: String,
    /// When the snapshot was made.
    pub SnapshotCreatedAt: String,
    /// The snapshot's name.
    pub SnapshotName: String,
    /// The snapshot's name (the original used UUIDs).
    pub SnapshotUUID: String,
    /// When the volume was made.
    pub VolumeCreatedAt: String,
    /// The volume's name.
    pub VolumeName: String,
    /// The volume's size in bytes, as a decimal string.
    pub VolumeSize: String,
    /// The volume's name (the original used UUIDs).
    pub VolumeUUID: String,
}

/// `GET /v1/info`: `{"General": {...}, "<driver>": {...}}`. Values are JSON values: the
/// original's `General` holds a list (`DriverList`) and booleans (`IgnoreDockerDelete`,
/// `CreateOnDockerMount`); driver sections hold strings. [`driver_list`] reads `DriverList` in
/// either of the forms daemons have sent.
pub type InfoResponse = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

/// The drivers named by an `info` answer's `General.DriverList`: a JSON list (the original
/// daemon, and ours now) or a comma-separated string (this daemon before it matched the original).
pub fn driver_list(info: &InfoResponse) -> Vec<String> {
    match info.get("General").and_then(|g| g.get("DriverList")) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// `GET /v1/volumes/list`: volume name → volume.
pub type VolumeListResponse = BTreeMap<String, VolumeResponse>;

/// `GET /v1/backups/list`: backup URL → backup.
pub type BackupListResponse = BTreeMap<String, BackupResponse>;

/// `POST /v1/backups/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupUrlResponse {
    /// The new backup's URL.
    #[serde(rename = "URL")]
    pub url: String,
}

/// Every error answer: `{"Error": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What failed, on what, and what to do.
    #[serde(rename = "Error")]
    pub error: String,
}

/// Request header asking `POST /v1/backups/create` and `POST /v1/volumes/create` (restore) to
/// stream progress: the answer is then `application/x-ndjson`, one [`StreamLine`] per line,
/// ending with a line carrying `Result` or `Error`. Without it the answer is the plain object.
pub const PROGRESS_HEADER: &str = "x-convoy-progress";

/// Content type of a progress stream.
pub const NDJSON: &str = "application/x-ndjson";

/// One line of a progress stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamLine {
    /// Progress so far.
    #[serde(rename = "Progress", default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressUpdate>,
    /// The final answer (the object the plain request would have answered).
    #[serde(rename = "Result", default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The final error.
    #[serde(rename = "Error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Bytes of volume data processed so far, out of a total once known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressUpdate {
    /// Bytes the operation covers (0 until known).
    #[serde(rename = "Total")]
    pub total: u64,
    /// Bytes processed.
    #[serde(rename = "Done")]
    pub done: u64,
}

/// Accepts a boolean as JSON `true`/`false`, `null`, or the strings `"true"`/`"false"` (a query
/// string's form).
fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Option::<Flag>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Flag::Bool(b)) => Ok(Some(b)),
        Some(Flag::Text(t)) => match t.as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" | "" => Ok(Some(false)),
            other => Err(serde::de::Error::custom(format!(
                "invalid Verbose {other:?}: expected true or false"
            ))),
        },
    }
}

/// Accepts a size as a JSON number, a string with a unit (`"10G"`), `null` or `""`.
fn size_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(deserializer)? {
        None | Some(Size::Number(0)) => Ok(None),
        Some(Size::Number(n)) => Ok(Some(n)),
        Some(Size::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(Size::Text(t)) => match crate::size::parse_size(&t) {
            // A number 0 is Go's "unset"; a size written out as "0" is a mistake.
            Ok(0) => Err(serde::de::Error::custom(format!(
                "invalid size {t:?}: a volume cannot be 0 bytes; leave Size out for the driver's default"
            ))),
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(serde::de::Error::custom(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_fields_are_a_superset_of_the_original_create() {
        // The original's request is read as before: no clone, no grow.
        let r: VolumeCreateRequest =
            serde_json::from_str(r#"{"Name":"v1","Size":"1G","BackupURL":""}"#).unwrap();
        assert_eq!((r.snapshot_name.as_str(), r.grow), ("", false));
        // And not written with the additions when they are unset.
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("SnapshotName") && !text.contains("Grow"),
            "{text}"
        );
        let r: VolumeCreateRequest = serde_json::from_str(
            r#"{"Name":"c1","SnapshotName":"s1","SourceVolumeName":"v1","Grow":true}"#,
        )
        .unwrap();
        assert_eq!(r.snapshot_name, "s1");
        assert_eq!(r.source_volume_name, "v1");
        assert!(r.grow);
        let e: VolumeExpandRequest =
            serde_json::from_str(r#"{"VolumeName":"v1","Size":"20G"}"#).unwrap();
        assert_eq!(e.size, Some(20 << 30));
        assert!(serde_json::from_str::<VolumeExpandRequest>(r#"{"Size":"0"}"#).is_err());
    }

    #[test]
    fn create_request_uses_original_field_names_and_accepts_string_sizes() {
        let req: VolumeCreateRequest = serde_json::from_str(
            r#"{"Name":"v1","DriverName":"vfs","Size":"1G","BackupURL":"","Verbose":true}"#,
        )
        .unwrap();
        assert_eq!(req.name, "v1");
        assert_eq!(req.driver_name, "vfs");
        assert_eq!(req.size, Some(1 << 30));
        let req: VolumeCreateRequest = serde_json::from_str(r#"{"Size":4096}"#).unwrap();
        assert_eq!(req.size, Some(4096));
        let req: VolumeCreateRequest = serde_json::from_str(r#"{"Size":null}"#).unwrap();
        assert_eq!(req.size, None);
        let err = serde_json::from_str::<VolumeCreateRequest>(r#"{"Size":"lots"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid size"), "{err}");
        let text = serde_json::to_string(&VolumeCreateRequest {
            name: "a".into(),
            size: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"Name":"a","DriverName":"","Size":5,"BackupURL":""}"#
        );
    }

    #[test]
    fn volume_response_keys_are_the_originals() {
        let v = VolumeResponse {
            name: "v".into(),
            driver: "devicemapper".into(),
            ..Default::default()
        };
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            text,
            r#"{"Name":"v","Driver":"devicemapper","MountPoint":"","CreatedTime":"","DriverInfo":{},"Snapshots":{}}"#
        );
        let b = serde_json::to_value(BackupResponse::default()).unwrap();
        let keys: Vec<_> = b.as_object().unwrap().keys().cloned().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(keys.contains(&"BackupURL".to_string()));
        assert_eq!(
            serde_json::to_string(&BackupUrlResponse { url: "x".into() }).unwrap(),
            r#"{"URL":"x"}"#
        );
    }
}
