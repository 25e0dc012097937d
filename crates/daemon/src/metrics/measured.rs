//! The volume manager's transfers, measured: a restore (a create from a backup) and a backup
//! counted, timed and their bytes summed while they run. Whoever starts one through the daemon
//! (`/v1`, the Docker plugin, the CSI services) calls these instead of the manager's own.

use std::sync::Arc;

use convoy_core::{CreateVolumeRequest, Progress, StoreOptions, Volume, VolumeManager};

use super::{CountingProgress, Transfer, TransferKind};

/// Creates a volume as [`VolumeManager::create_volume`] does; a restore (`backup_url` set) is
/// measured: started, succeeded or failed, duration, and the bytes written as reported to its
/// progress.
///
/// # Errors
/// Those of [`VolumeManager::create_volume`].
pub async fn create_volume(
    manager: &VolumeManager,
    request: CreateVolumeRequest,
    progress: Arc<dyn Progress>,
) -> convoy_core::Result<Volume> {
    let restore = request.backup_url.as_deref().map(|url| {
        let counted = CountingProgress::new(progress.clone());
        let transfer = Transfer::start(TransferKind::Restore, url);
        (counted, transfer)
    });
    let progress: Arc<dyn Progress> = match &restore {
        Some((counted, _)) => counted.clone(),
        None => progress,
    };
    let created = manager.create_volume(request, progress).await;
    if let Some((counted, transfer)) = restore {
        transfer.finish(created.as_ref().map(|_| counted.bytes()));
    }
    created
}

/// Backs snapshot `snapshot` up to `dest` as [`VolumeManager::create_backup_report`] does,
/// measured (started, succeeded or failed, duration, bytes read); answers the backup URL.
///
/// # Errors
/// Those of [`VolumeManager::create_backup_report`].
pub(crate) async fn create_backup(
    manager: &VolumeManager,
    snapshot: &str,
    dest: &str,
    store: &StoreOptions,
    progress: Arc<dyn Progress>,
) -> convoy_core::Result<String> {
    let transfer = Transfer::start(TransferKind::Backup, dest);
    let report = manager
        .create_backup_report(snapshot, dest, store, progress)
        .await;
    transfer.finish(report.as_ref().map(|r| r.bytes_read));
    report.map(|r| r.backup_url)
}
