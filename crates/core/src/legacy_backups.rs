//! Backups of the original Convoy (0.5.x) in its own store layout: listed and inspected beside
//! convoy's, restored by `create --backup`, and imported into convoy's format by
//! [`import_legacy_backups`]. The old store is only ever read.

use std::ops::Range;
use std::sync::Arc;

use convoy_backupstore::legacy::{self, format, LegacyError, LegacyStore};
use convoy_backupstore::{BackupMeta, BackupRef, BackupTarget, BlockSink, NoProgress};

use crate::backups::{redact_urls, store_error_of, target_options};
use crate::error::{Error, ErrorKind, Result};
use crate::types::{BackupInfo, Progress, StoreOptions};

/// What [`import_legacy_backups`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// URLs (in the new store) of the backups imported by this run.
    pub imported: Vec<String>,
    /// URLs (in the new store) of the backups an earlier run had imported: left as they are.
    pub already_there: Vec<String>,
    /// Old backups that cannot be imported, with the reason (single-file vfs backups).
    pub refused: Vec<String>,
}

/// A legacy reader error as a core error.
pub(crate) fn legacy_error(context: String) -> impl FnOnce(LegacyError) -> Error {
    move |e| match e {
        LegacyError::Store(inner) => store_error_of(context, inner),
        other => {
            let kind = match &other {
                LegacyError::NotFound { .. } => ErrorKind::NotFound,
                LegacyError::Unsupported { .. } => ErrorKind::InvalidArgument,
                _ => ErrorKind::Internal,
            };
            Error::Store {
                context: redact_urls(&context),
                message: redact_urls(&other.to_string()),
                kind,
                source: Some(crate::error::StoreCause::of(&other)),
            }
        }
    }
}

/// The original's backup at `backup_url`, if its store holds it.
pub(crate) async fn inspect(backup_url: &str, store: &StoreOptions) -> Result<Option<BackupInfo>> {
    let (old, r) = legacy::open_backup(backup_url, &target_options(store, None))
        .map_err(legacy_error(format!("inspect {backup_url}")))?;
    Ok(old
        .backup(&r)
        .await
        .map_err(legacy_error(format!("inspect {backup_url}")))?
        .map(|b| b.info))
}

/// The original's backups at `dest_url` (of one volume when given).
pub(crate) async fn list(
    dest_url: &str,
    volume: Option<&str>,
    store: &StoreOptions,
) -> Result<Vec<BackupInfo>> {
    let old = LegacyStore::open(dest_url, &target_options(store, None))
        .map_err(legacy_error(format!("list {dest_url}")))?;
    old.list(volume)
        .await
        .map_err(legacy_error(format!("list {dest_url}")))
}

/// Restores the original's backup at `backup_url` into `sink`.
pub(crate) async fn restore(
    backup_url: &str,
    sink: Arc<dyn BlockSink>,
    store: &StoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let context = format!("restore {backup_url}");
    let (old, r) = legacy::open_backup(backup_url, &target_options(store, None))
        .map_err(legacy_error(context.clone()))?;
    old.restore(&r, sink, &*progress)
        .await
        .map_err(legacy_error(context))?;
    Ok(())
}

/// A staging file removed when dropped, on every path.
struct Staging {
    path: std::path::PathBuf,
    file: Arc<std::fs::File>,
}

impl Staging {
    fn create(size: u64) -> std::io::Result<Staging> {
        let path = std::env::temp_dir().join(format!(
            "convoy-import-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let staging = Staging {
            path,
            file: Arc::new(file),
        };
        staging.file.set_len(size)?;
        Ok(staging)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A sink that never fsyncs: the staging file is scratch space.
struct ScratchSink(Arc<std::fs::File>);

impl BlockSink for ScratchSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&*self.0, data, offset)
    }
}

/// The byte ranges of a backup's blocks, adjacent ones merged.
fn block_ranges(blocks: &[format::BlockMapping]) -> Vec<Range<u64>> {
    crate::block_ranges::coalesce(
        blocks
            .iter()
            .map(|b| b.offset as u64..b.offset as u64 + format::BLOCK_SIZE)
            .collect(),
    )
}

/// Converts every backup of the original's store at `old_dest` into convoy's format at
/// `new_dest`, oldest first per volume, through the public [`BackupTarget`] API: each backup
/// keeps its name, volume, snapshot and times of volume and snapshot (the new record's
/// `CreatedTime` is the import's). Blocks are deduplicated by the new store. A backup the new
/// store already holds is left alone, so an interrupted import resumes where it stopped (a
/// backup there is complete or absent). The old store is only read. Each backup is staged in
/// a sparse file under the temporary directory (`TMPDIR`), removed afterwards.
///
/// # Errors
/// Store errors of either side; a missing or corrupt block of the old store stops the import
/// with the block and backup named (backups imported before it stay).
pub async fn import_legacy_backups(
    old_dest: &str,
    new_dest: &str,
    store: &StoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<ImportReport> {
    let context = format!("import {old_dest} into {new_dest}");
    let old = LegacyStore::open(old_dest, &target_options(store, None))
        .map_err(legacy_error(context.clone()))?;
    let target = BackupTarget::open(new_dest, target_options(store, None))
        .map_err(store_error_of_fn(context.clone()))?;
    let mut report = ImportReport::default();
    for volume in old.volumes().await.map_err(legacy_error(context.clone()))? {
        let mut backups = old
            .list(Some(&volume))
            .await
            .map_err(legacy_error(context.clone()))?;
        backups.sort_by_key(|b| format::parse_ruby_date(&b.created_time).unwrap_or(i64::MAX));
        for info in backups {
            let r = BackupRef::new(&volume, &info.backup_uuid)
                .map_err(store_error_of_fn(context.clone()))?;
            let new_url = target.backup_url(&r);
            if target.inspect(&r).await.is_ok() {
                report.already_there.push(new_url);
                continue;
            }
            let backup = old
                .inspect(&r)
                .await
                .map_err(legacy_error(context.clone()))?;
            if !backup.config.single_file.file_path.is_empty() {
                report.refused.push(format!(
                    "{}: a single-file backup of the original's vfs driver",
                    info.backup_url
                ));
                continue;
            }
            let size = backup.volume.size as u64;
            let staging = Staging::create(size).map_err(|e| Error::Store {
                context: redact_urls(&context),
                message: format!("cannot create a staging file in the temporary directory: {e}"),
                kind: ErrorKind::Unavailable,
                source: Some(crate::error::StoreCause::of(&e)),
            })?;
            old.restore(&r, Arc::new(ScratchSink(staging.file.clone())), &NoProgress)
                .await
                .map_err(legacy_error(context.clone()))?;
            let meta = BackupMeta {
                backup_name: Some(r.backup.clone()),
                driver_name: backup.volume.driver.clone(),
                volume_name: volume.clone(),
                volume_uuid: volume.clone(),
                volume_size: size,
                volume_created_at: backup.volume.created_time.clone(),
                snapshot_name: backup.config.snapshot_name.clone(),
                snapshot_uuid: backup.config.snapshot_name.clone(),
                snapshot_created_at: backup.config.snapshot_created_at.clone(),
            };
            let ranges = block_ranges(&backup.config.blocks);
            let done = target
                .backup(staging.file.clone(), &ranges, None, meta, &*progress)
                .await
                .map_err(store_error_of_fn(context.clone()))?;
            drop(staging);
            report.imported.push(done.info.backup_url);
        }
    }
    Ok(report)
}

fn store_error_of_fn(context: String) -> impl FnOnce(convoy_backupstore::BackupError) -> Error {
    move |e| store_error_of(context, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_merge_neighbours() {
        let m = |o: u64| format::BlockMapping {
            offset: o as i64,
            block_checksum: String::new(),
        };
        let b = format::BLOCK_SIZE;
        assert_eq!(
            block_ranges(&[m(4 * b), m(0), m(b), m(7 * b)]),
            vec![0..2 * b, 4 * b..5 * b, 7 * b..8 * b]
        );
        assert!(block_ranges(&[]).is_empty());
    }
}
