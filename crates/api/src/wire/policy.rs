//! `/v1/policies/*` (convoy's addition): scheduled snapshots and backups with retention.
//! Intervals are written as `30s`, `15m`, `1h`, `1d`; retention rules as
//! `last=5,hourly=24,daily=7,weekly=4,monthly=12` (`docs/operations.md`).

use serde::{Deserialize, Serialize};

/// `POST /v1/policies/set`: set (or replace) one policy of a volume, or of all volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicySetRequest {
    /// The volume, or `*` for every volume (a volume's own policy of the same name wins).
    pub volume_name: String,
    /// The policy's name (empty: `default`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Take a snapshot this often (empty: no snapshot runs).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub snapshot_every: String,
    /// Snapshot and back up this often (empty: no backup runs).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub backup_every: String,
    /// Where backups go.
    #[serde(rename = "BackupDest", skip_serializing_if = "String::is_empty")]
    pub backup_dest: String,
    /// S3 endpoint override for the destination.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub s3_endpoint: String,
    /// Which of the policy's snapshots to keep (empty: see `docs/operations.md`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub keep_snapshots: String,
    /// Which of the policy's backups to keep (empty: all).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub keep_backups: String,
}

/// `POST /v1/policies/remove`: remove one policy (or every policy) of a volume or of `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicyRemoveRequest {
    /// The volume, or `*`.
    pub volume_name: String,
    /// The policy (empty: all of the volume's).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The state of one action of a policy; times are RFC 3339, UTC, empty when never.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicyActionResponse {
    /// Its interval (`1h`).
    pub every: String,
    /// When it last started.
    pub last_run: String,
    /// When it last succeeded.
    pub last_success: String,
    /// The last run's error (empty when it succeeded).
    pub last_error: String,
    /// When it runs next (empty: at the daemon's next look).
    pub next_run: String,
}

/// One policy as it applies to one volume, with its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicyResponse {
    /// The volume (`*` for an all-volumes policy as set).
    pub volume_name: String,
    /// The policy's name.
    pub name: String,
    /// Whether the volume follows the all-volumes policy of this name.
    pub from_all_volumes: bool,
    /// Whether the volume no longer exists (the policy does nothing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub volume_missing: bool,
    /// Snapshot runs (absent without a snapshot interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<PolicyActionResponse>,
    /// Backup runs (absent without a backup interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PolicyActionResponse>,
    /// Where backups go.
    #[serde(rename = "BackupDest", skip_serializing_if = "String::is_empty")]
    pub backup_dest: String,
    /// The snapshot retention rule (`none` for none).
    pub keep_snapshots: String,
    /// The backup retention rule (`none` for none).
    pub keep_backups: String,
    /// The policy's snapshots that exist.
    pub snapshots: Vec<String>,
    /// The policy's backups that exist.
    #[serde(rename = "BackupURLs")]
    pub backup_urls: Vec<String>,
    /// The snapshot the next incremental backup starts from.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protected_snapshot: String,
}

/// `GET /v1/policies/list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicyListResponse {
    /// Every policy: the all-volumes ones as set, then per volume.
    pub policies: Vec<PolicyResponse>,
}
