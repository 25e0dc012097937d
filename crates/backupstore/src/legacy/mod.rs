//! Reader of the original Convoy's (0.5.x) backup stores, on `vfs://` and `s3://`: list,
//! inspect and restore its delta-block backups, every block's checksum verified. Nothing here
//! writes to the old store. The layout is in [`format`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), convoy_backupstore::legacy::LegacyError> {
//! use convoy_backupstore::{legacy::LegacyStore, BackupRef, NoProgress, TargetOptions};
//! let store = LegacyStore::open("vfs:///old/backups", &TargetOptions::default())?;
//! for info in store.list(None).await? {
//!     println!("{}", info.backup_url);
//! }
//! let r = BackupRef::new("vol1", "backup-8f51603bef644b6e").unwrap();
//! let out = std::sync::Arc::new(std::fs::File::create("/tmp/vol1.img").unwrap());
//! store.restore(&r, out, &NoProgress).await?;
//! # Ok(()) }
//! ```

pub mod format;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;

use crate::store::Store;
use crate::url::{backup_url, parse_destination, BackupRef, Destination};
use crate::{BackupError, BackupInfo, BlockSink, Progress, TargetOptions};
use format::{BackupConfig, BlockMapping, VolumeConfig, BLOCK_SIZE};

/// Blocks fetched at once during a restore.
const PARALLEL_FETCHES: usize = 4;

/// Every error of the legacy reader; each names the backup, block or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// No such backup in the old store.
    #[error(
        "backup {backup} of volume {volume} not found in the original Convoy's store at {dest}"
    )]
    NotFound {
        /// Destination URL.
        dest: String,
        /// Volume name.
        volume: String,
        /// Backup name.
        backup: String,
    },
    /// A config file of the old store cannot be used.
    #[error("{path} in the original Convoy's store at {dest} is unusable: {reason}")]
    BadConfig {
        /// Destination URL.
        dest: String,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A block the backup lists is not in the store.
    #[error("block {checksum} at volume offset {offset} of backup {backup} is missing from the original Convoy's store ({path})")]
    MissingBlock {
        /// Backup name.
        backup: String,
        /// Byte offset in the volume.
        offset: u64,
        /// The block's checksum.
        checksum: String,
        /// Its file.
        path: String,
    },
    /// A block does not decompress to 2 MiB of the content its checksum names.
    #[error("block {checksum} at volume offset {offset} of backup {backup} is corrupt: {reason}")]
    CorruptBlock {
        /// Backup name.
        backup: String,
        /// Byte offset in the volume.
        offset: u64,
        /// The block's checksum.
        checksum: String,
        /// What is wrong.
        reason: String,
    },
    /// A backup this reader cannot restore.
    #[error("backup {backup} of volume {volume} cannot be restored: {reason}")]
    Unsupported {
        /// Volume name.
        volume: String,
        /// Backup name.
        backup: String,
        /// Why.
        reason: String,
    },
    /// Writing the restore target failed.
    #[error("writing the restore target at offset {offset}: {source}")]
    SinkWrite {
        /// Byte offset.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reaching the store failed, or its URL is invalid.
    #[error(transparent)]
    Store(#[from] BackupError),
    /// A worker task failed.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Result with [`LegacyError`].
pub type Result<T, E = LegacyError> = std::result::Result<T, E>;

/// One backup of the old store, its volume's record and its block list.
#[derive(Debug, Clone)]
pub struct LegacyBackup {
    /// The volume's `volume.cfg`.
    pub volume: VolumeConfig,
    /// The backup's config.
    pub config: BackupConfig,
    /// Its `backup inspect` record (`CreatedTime` as the original wrote it).
    pub info: BackupInfo,
}

/// An original Convoy store at a destination, read-only.
pub struct LegacyStore {
    /// `None` when the destination is a `vfs://` folder without a `convoy-objectstore`: an
    /// empty store, and the folder is not created.
    store: Option<Store>,
    dest: String,
}

impl LegacyStore {
    /// Opens the original's store at `dest_url` (`vfs:///path`, `s3://bucket[@region]/path`).
    /// No I/O for S3; a missing `vfs://` folder is an empty store.
    pub fn open(dest_url: &str, opts: &TargetOptions) -> Result<Self> {
        let dest = dest_url.trim_end_matches('/').to_string();
        let store = match parse_destination(dest_url)? {
            Destination::Vfs { path } if !path.join(format::BASE).is_dir() => None,
            _ => Some(Store::open(dest_url, opts)?),
        };
        Ok(LegacyStore { store, dest })
    }

    /// The destination URL.
    pub fn dest_url(&self) -> &str {
        &self.dest
    }

    async fn get(&self, path: &str) -> Result<Option<bytes::Bytes>> {
        match &self.store {
            None => Ok(None),
            Some(s) => Ok(s.get_opt(&Path::from(path)).await?),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let Some(bytes) = self.get(path).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LegacyError::BadConfig {
                dest: self.dest.clone(),
                path: path.to_string(),
                reason: format!("not the JSON the original wrote: {e}"),
            })
    }

    /// The names of every volume with a `volume.cfg`.
    pub async fn volumes(&self) -> Result<Vec<String>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let prefix = Path::from(format!("{}/volumes", format::BASE));
        let mut names: Vec<String> = store
            .list(&prefix)
            .try_filter_map(|p| async move {
                let parts: Vec<String> = p.parts().map(|s| s.as_ref().to_owned()).collect();
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                Ok(volume_of_config(&parts))
            })
            .try_collect()
            .await?;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The names of `volume`'s backups.
    pub async fn backup_names(&self, volume: &str) -> Result<Vec<String>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let prefix = Path::from(format::backups_dir(volume));
        let mut names: Vec<String> = store
            .list(&prefix)
            .try_filter_map(|p| async move {
                Ok(p.filename()
                    .and_then(format::backup_name_of)
                    .map(str::to_string))
            })
            .try_collect()
            .await?;
        names.sort();
        Ok(names)
    }

    /// One backup, or `None` if the store does not hold it.
    pub async fn backup(&self, r: &BackupRef) -> Result<Option<LegacyBackup>> {
        let Some(volume) = self
            .json::<VolumeConfig>(&format::volume_config_path(&r.volume))
            .await?
        else {
            return Ok(None);
        };
        let path = format::backup_config_path(&r.volume, &r.backup);
        let Some(config) = self.json::<BackupConfig>(&path).await? else {
            return Ok(None);
        };
        self.check(&path, &volume, &config)?;
        let info = BackupInfo {
            backup_url: backup_url(&self.dest, r),
            backup_uuid: config.name.clone(),
            driver_name: volume.driver.clone(),
            volume_uuid: volume.name.clone(),
            volume_name: volume.name.clone(),
            // `check` has refused a size that is not positive.
            volume_size: u64::try_from(volume.size).unwrap_or(0),
            volume_created_at: volume.created_time.clone(),
            snapshot_uuid: config.snapshot_name.clone(),
            snapshot_name: config.snapshot_name.clone(),
            snapshot_created_at: config.snapshot_created_at.clone(),
            created_time: config.created_time.clone(),
            encrypted: String::new(),
        };
        Ok(Some(LegacyBackup {
            volume,
            config,
            info,
        }))
    }

    /// Checks a backup against its volume: names, block offsets within the volume and
    /// aligned, checksums well formed.
    fn check(&self, path: &str, volume: &VolumeConfig, config: &BackupConfig) -> Result<()> {
        let bad = |reason: String| LegacyError::BadConfig {
            dest: self.dest.clone(),
            path: path.to_string(),
            reason,
        };
        if volume.size <= 0 {
            return Err(bad(format!(
                "its volume's size {} is not positive",
                volume.size
            )));
        }
        for block in &config.blocks {
            let offset = u64::try_from(block.offset)
                .map_err(|_| bad(format!("block offset {} is negative", block.offset)))?;
            if offset % BLOCK_SIZE != 0 || offset + BLOCK_SIZE > volume.size as u64 {
                return Err(bad(format!(
                    "block offset {offset} is not a 2 MiB block inside the {}-byte volume",
                    volume.size
                )));
            }
            if !format::valid_checksum(&block.block_checksum) {
                return Err(bad(format!(
                    "block checksum {:?} is not 64 hex digits",
                    block.block_checksum
                )));
            }
        }
        Ok(())
    }

    /// Every backup (of `volume` only, when given), as `backup list` shows them.
    pub async fn list(&self, volume: Option<&str>) -> Result<Vec<BackupInfo>> {
        let volumes = match volume {
            Some(v) => vec![v.to_string()],
            None => self.volumes().await?,
        };
        let mut out = Vec::new();
        for v in volumes {
            for name in self.backup_names(&v).await? {
                let Ok(r) = BackupRef::new(&v, &name) else {
                    continue;
                };
                if let Some(b) = self.backup(&r).await? {
                    out.push(b.info);
                }
            }
        }
        Ok(out)
    }

    /// One backup's record; [`LegacyError::NotFound`] if absent.
    pub async fn inspect(&self, r: &BackupRef) -> Result<LegacyBackup> {
        self.backup(r).await?.ok_or_else(|| LegacyError::NotFound {
            dest: self.dest.clone(),
            volume: r.volume.clone(),
            backup: r.backup.clone(),
        })
    }

    /// The verified content of one block of backup `backup`.
    pub async fn read_block(&self, backup: &LegacyBackup, block: &BlockMapping) -> Result<Vec<u8>> {
        let path = format::block_path(&backup.volume.name, &block.block_checksum);
        let offset = block.offset as u64;
        let stored = self
            .get(&path)
            .await?
            .ok_or_else(|| LegacyError::MissingBlock {
                backup: backup.config.name.clone(),
                offset,
                checksum: block.block_checksum.clone(),
                path: path.clone(),
            })?;
        let checksum = block.block_checksum.clone();
        let decoded = tokio::task::spawn_blocking(move || format::decode_block(&stored, &checksum))
            .await
            .map_err(|e| LegacyError::Task(e.to_string()))?;
        decoded.map_err(|reason| LegacyError::CorruptBlock {
            backup: backup.config.name.clone(),
            offset,
            checksum: block.block_checksum.clone(),
            reason,
        })
    }

    /// Restores backup `r` into `sink` (a fresh, zeroed target of the backup's volume size):
    /// every block fetched, decompressed and checked against its checksum before it is
    /// written; all-zero blocks are not written. `sink.finish()` is called at the end.
    pub async fn restore(
        &self,
        r: &BackupRef,
        sink: Arc<dyn BlockSink>,
        progress: &dyn Progress,
    ) -> Result<LegacyBackup> {
        let backup = self.inspect(r).await?;
        if !backup.config.single_file.file_path.is_empty() {
            return Err(LegacyError::Unsupported {
                volume: r.volume.clone(),
                backup: r.backup.clone(),
                reason: "it is a single-file backup of the original's vfs driver; only its \
                         devicemapper (block) backups are read"
                    .into(),
            });
        }
        progress.start(backup.config.blocks.len() as u64 * BLOCK_SIZE);
        let backup_ref = &backup;
        // Owned blocks: a closure over references would not be `Send` for every lifetime.
        let fetches = backup
            .config
            .blocks
            .clone()
            .into_iter()
            .map(|block| async move {
                let data = self.read_block(backup_ref, &block).await?;
                Ok::<_, LegacyError>((block.offset as u64, data))
            });
        let mut blocks = futures::stream::iter(fetches).buffered(PARALLEL_FETCHES);
        while let Some(next) = blocks.next().await {
            let (offset, data) = next?;
            if data.iter().any(|&b| b != 0) {
                let sink = sink.clone();
                tokio::task::spawn_blocking(move || sink.write_at(offset, &data))
                    .await
                    .map_err(|e| LegacyError::Task(e.to_string()))?
                    .map_err(|source| LegacyError::SinkWrite { offset, source })?;
            }
            progress.advance(BLOCK_SIZE);
        }
        drop(blocks);
        let done = sink.clone();
        tokio::task::spawn_blocking(move || done.finish())
            .await
            .map_err(|e| LegacyError::Task(e.to_string()))?
            .map_err(|source| LegacyError::SinkWrite { offset: 0, source })?;
        progress.finish();
        Ok(backup)
    }
}

/// The volume name of a key `convoy-objectstore/volumes/<l1>/<l2>/<name>/volume.cfg`.
fn volume_of_config(parts: &[&str]) -> Option<String> {
    match parts {
        [base, "volumes", _, _, name, "volume.cfg"] if *base == format::BASE => {
            Some(name.trim_end_matches('!').to_string())
        }
        _ => None,
    }
}

/// Splits a backup URL (also in the `\u0026` form the original printed) into its legacy store
/// and reference.
pub fn open_backup(backup_url: &str, opts: &TargetOptions) -> Result<(LegacyStore, BackupRef)> {
    let url = backup_url.replace("\\u0026", "&");
    let (dest, r) = crate::url::parse_backup_url(&url)?;
    Ok((LegacyStore::open(&dest, opts)?, r))
}
