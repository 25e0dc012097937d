//! Backups and restores of [`VolumeManager`] (through convoy-backupstore).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::manager::VolumeManager;
use crate::records::VolumeRecord;
use crate::types::{BackupInfo, BackupReport, Progress, StoreOptions};

/// A checked restore request.
pub(crate) struct RestorePlan {
    /// The backup's volume size, bytes.
    pub size: u64,
}

fn not_yet(what: &str) -> Error {
    Error::Unsupported {
        what: what.to_owned(),
        why: "backups are not wired to convoy-backupstore in this build yet".into(),
    }
}

impl VolumeManager {
    pub(crate) async fn plan_restore(
        &self,
        backup_url: &str,
        _driver: &str,
        _size: Option<u64>,
        _store: &StoreOptions,
    ) -> Result<RestorePlan> {
        Err(not_yet(&format!("restore of {backup_url}")))
    }

    pub(crate) async fn run_restore(
        &self,
        _rec: &VolumeRecord,
        _plan: RestorePlan,
        _progress: Arc<dyn Progress>,
    ) -> Result<()> {
        Err(not_yet("restore"))
    }

    /// Backs a snapshot up to `dest_url` (`vfs:///path`, `s3://bucket@region/path`):
    /// incremental against the volume's last backup there when that backup's snapshot still
    /// exists locally, full otherwise. Returns the backup URL.
    pub async fn create_backup(
        &self,
        snapshot: &str,
        dest_url: &str,
        store: &StoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<String> {
        Ok(self
            .create_backup_report(snapshot, dest_url, store, progress)
            .await?
            .backup_url)
    }

    /// [`VolumeManager::create_backup`] returning what the backup did.
    pub async fn create_backup_report(
        &self,
        snapshot: &str,
        _dest_url: &str,
        _store: &StoreOptions,
        _progress: Arc<dyn Progress>,
    ) -> Result<BackupReport> {
        Err(not_yet(&format!("backup of {snapshot}")))
    }

    /// Deletes a backup (and the blocks no other backup uses).
    pub async fn delete_backup(&self, backup_url: &str, _store: &StoreOptions) -> Result<()> {
        Err(not_yet(&format!("delete of {backup_url}")))
    }

    /// Lists the backups at `dest_url` (of one volume when `volume_name` is given).
    pub async fn list_backups(
        &self,
        dest_url: &str,
        _volume_name: Option<&str>,
        _store: &StoreOptions,
    ) -> Result<Vec<BackupInfo>> {
        Err(not_yet(&format!("listing {dest_url}")))
    }

    /// One backup's details.
    pub async fn inspect_backup(
        &self,
        backup_url: &str,
        _store: &StoreOptions,
    ) -> Result<BackupInfo> {
        Err(not_yet(&format!("inspect of {backup_url}")))
    }
}
