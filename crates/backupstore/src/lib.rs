//! # convoy-backupstore
//!
//! The backup engine of convoy: incremental, deduplicated, verified block backups of volumes to
//! `vfs:///path` directories (local or NFS) and `s3://bucket[@region]/path` buckets, through
//! `object_store`. The on-store format is specified in `docs/backup-format.md`.
//!
//! ## Overview
//!
//! * A volume is cut into fixed **chunks** (1 MiB by default, 64 KiB–4 MiB, independent of the
//!   thin pool's block size: ranges are given in bytes). Each non-zero chunk is stored once per
//!   store as a **block** named by the BLAKE3 of its content ([`convoy_blockstore`]), zstd
//!   compressed, deduplicated across every volume. Zero chunks and unmapped ranges are holes.
//! * Each backup has one **manifest** listing the whole volume (44 bytes per stored chunk),
//!   streamed out as the backup runs and published last, atomically and durably: a backup is
//!   visible only once complete.
//! * An **incremental** backup reads only the byte ranges it is given and carries every other
//!   chunk from its parent's manifest.
//! * **Delete** removes the blocks no other backup uses, at a cost proportional to the deleted
//!   backup (reference records plus parent/child links); a **store lock** (shared for backup,
//!   restore and verify; exclusive for delete and repair) keeps concurrent backups and deletes
//!   from losing blocks.
//!
//! ## API
//!
//! | Call | Does | Lock |
//! |---|---|---|
//! | [`BackupTarget::open`]`(dest_url, TargetOptions)` | parse `vfs://` / `s3://` and set up the store (no network I/O) | — |
//! | [`BackupTarget::open_backup`]`(backup_url, opts)` | same, for `<dest>?backup=..&volume=..`; returns the [`BackupRef`] | — |
//! | [`BackupTarget::backup`]`(source, ranges, parent, meta, progress)` | full (`parent = None`) or incremental backup; returns [`BackupOutcome`] (info, ref, [`BackupStats`]) | shared |
//! | [`BackupTarget::restore`]`(backup, sink, options, progress)` | verified parallel restore, holes left sparse | shared (none on a read-only or full `vfs://` filesystem) |
//! | [`BackupTarget::delete`]`(backup)` | delete and collect blocks no other backup uses | exclusive |
//! | [`BackupTarget::list`]`(volume)` | backups (of one volume or all) keyed by backup URL | — |
//! | [`BackupTarget::inspect`]`(backup)` | the `backup inspect` record ([`BackupInfo`]) | — |
//! | [`BackupTarget::verify`]`(backup, progress)` | manifest checksum + every block's hash | shared (as restore) |
//! | [`BackupTarget::repair`]`()` | remove leftovers of crashed backups (whole-store scan) | exclusive |
//! | [`restore_url`], [`delete_url`], [`inspect_url`], [`verify_url`], [`list_url`] | the same by URL, for the CLI and daemon | |
//!
//! The caller supplies a [`BlockSource`] (`read_at`; implemented for `std::fs::File`), a
//! [`BlockSink`] (`write_at`, `finish`; implemented for `std::fs::File`, which fsyncs at the
//! end) and optionally a [`Progress`] ([`NoProgress`] is silent). Errors are one enum,
//! [`BackupError`], whose variants name the URL, backup, block id and volume offset involved.
//! S3 options: [`TargetOptions::s3_endpoint`] (the `--s3-endpoint` flag; `AWS_ENDPOINT`
//! otherwise), credentials from the environment or `~/.aws/credentials` (profile
//! `AWS_PROFILE` or `default`), transient errors retried per [`RetryPolicy`].
//!
//! ## Usage
//!
//! ```no_run
//! use std::sync::Arc;
//! use convoy_backupstore::{BackupMeta, BackupTarget, NoProgress, RestoreOptions, TargetOptions};
//! # async fn demo() -> Result<(), convoy_backupstore::BackupError> {
//! let target = BackupTarget::open("vfs:///var/backups", TargetOptions::default())?;
//! let image = Arc::new(std::fs::File::open("/dev/mapper/snap").unwrap());
//! let meta = BackupMeta {
//!     driver_name: "devicemapper".into(),
//!     volume_name: "vol1".into(),
//!     volume_size: 1 << 30,
//!     snapshot_name: "snap1".into(),
//!     ..Default::default()
//! };
//! // Full backup of the mapped ranges; pass the changed ranges and `Some(parent)` for an
//! // incremental one.
//! let done = target
//!     .backup(image, &[0..(1 << 30)], None, meta, &NoProgress)
//!     .await?;
//! println!("{}", done.info.backup_url);
//! let out = Arc::new(std::fs::File::create("/tmp/restored").unwrap());
//! target
//!     .restore(&done.backup, out, &RestoreOptions::default(), &NoProgress)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The functions [`restore_url`], [`delete_url`], [`inspect_url`], [`verify_url`] and
//! [`list_url`] take the URLs the CLI passes around (`<dest>?backup=<name>&volume=<name>`).

mod aws_files;
mod backup;
mod delete;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod layout;
mod list;
mod lock;
mod manifest;
mod options;
mod publish;
mod repair;
mod restore;
mod store;
mod types;
mod url;
mod worker;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

pub use aws_files::StaticCredentials;
pub use error::{BackupError, Result};
pub use manifest::{ENTRY_LEN, FORMAT_VERSION};
pub use options::{
    LockPolicy, RetryPolicy, TargetOptions, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
pub use types::{
    BackupInfo, BackupMeta, BackupOutcome, BackupStats, BlockSink, BlockSource, DeleteStats,
    NoProgress, Progress, RepairStats, RestoreOptions, RestoreStats,
};
pub use url::{backup_url, parse_backup_url, parse_destination, BackupRef, Destination};

use lock::{LockGuard, LockKind};
use manifest::{ManifestHeader, FORMAT_VERSION as MANIFEST_VERSION};
use store::Store;

/// An open backup destination.
#[derive(Clone)]
pub struct BackupTarget {
    store: Arc<Store>,
    opts: TargetOptions,
}

impl std::fmt::Debug for BackupTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupTarget")
            .field("dest", &self.store.dest)
            .finish()
    }
}

/// Runs `f` under a lock of `kind`, releasing it afterwards whatever the outcome.
async fn locked<T, F>(t: &BackupTarget, kind: LockKind, op: &str, f: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let guard = LockGuard::acquire(t.store.clone(), kind, op, &t.opts.lock).await?;
    let out = f.await;
    let released = guard.release().await;
    let value = out?;
    released?;
    Ok(value)
}

/// Whether `e` comes from a local filesystem that refuses writes (mounted read-only, or full).
fn refuses_writes(e: &BackupError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{QuotaExceeded, ReadOnlyFilesystem, StorageFull};
            if matches!(io.kind(), ReadOnlyFilesystem | StorageFull | QuotaExceeded) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// Runs a read-only operation (restore, verify) under a shared lock; on a `vfs://` store
/// whose filesystem refuses the lock record (a read-only mount, a full disk) runs it without
/// one, so that backups stay restorable from such a store. Without the lock a delete made
/// elsewhere could remove blocks as they are read; the read then fails with a missing block
/// (every block is verified), never returns wrong data.
async fn locked_read<T, F>(t: &BackupTarget, op: &str, f: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    match LockGuard::acquire(t.store.clone(), LockKind::Shared, op, &t.opts.lock).await {
        Ok(guard) => {
            let out = f.await;
            let released = guard.release().await;
            let value = out?;
            released?;
            Ok(value)
        }
        Err(e) if t.store.local_root.is_some() && refuses_writes(&e) => f.await,
        Err(e) => Err(e),
    }
}

impl BackupTarget {
    /// Opens a destination URL (`vfs:///path`, `s3://bucket@region/path`, `s3://bucket/path`).
    /// No network I/O happens here; a `vfs://` directory is created if missing.
    pub fn open(dest_url: &str, options: TargetOptions) -> Result<Self> {
        let c = options.chunk_size;
        if !c.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&c) {
            return Err(BackupError::InvalidArgument(format!(
                "chunk size {c} must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
            )));
        }
        Ok(BackupTarget {
            store: Arc::new(Store::open(dest_url, &options)?),
            opts: options,
        })
    }

    /// Opens the destination of a backup URL and returns the backup it names.
    pub fn open_backup(backup_url: &str, options: TargetOptions) -> Result<(Self, BackupRef)> {
        let (dest, r) = parse_backup_url(backup_url)?;
        Ok((Self::open(&dest, options)?, r))
    }

    /// The destination URL.
    pub fn dest_url(&self) -> &str {
        &self.store.dest
    }

    /// The URL of one backup at this destination.
    pub fn backup_url(&self, r: &BackupRef) -> String {
        backup_url(&self.store.dest, r)
    }

    /// Backs up `source`: reads the chunks covering `ranges` (bytes; every mapped range for a
    /// full backup, the changed ranges for an incremental one), carries every other chunk from
    /// `parent` (a backup of the same volume at this destination), and publishes the manifest.
    pub async fn backup(
        &self,
        source: Arc<dyn BlockSource>,
        ranges: &[Range<u64>],
        parent: Option<&str>,
        meta: BackupMeta,
        progress: &dyn Progress,
    ) -> Result<BackupOutcome> {
        if meta.volume_size == 0 {
            return Err(BackupError::InvalidArgument(format!(
                "volume {} has size 0",
                meta.volume_name
            )));
        }
        if let Some(r) = ranges
            .iter()
            .find(|r| r.start > r.end || r.end > meta.volume_size)
        {
            return Err(BackupError::InvalidArgument(format!(
                "range {}..{} is outside volume {} of {} bytes",
                r.start, r.end, meta.volume_name, meta.volume_size
            )));
        }
        let name = meta.backup_name.clone().unwrap_or_else(|| {
            format!(
                "backup-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..16]
            )
        });
        let me = BackupRef::new(&meta.volume_name, &name)?;
        let header = ManifestHeader {
            format_version: MANIFEST_VERSION,
            backup_name: name,
            backup_uuid: uuid::Uuid::new_v4().to_string(),
            driver_name: meta.driver_name,
            volume_name: meta.volume_name,
            volume_uuid: meta.volume_uuid,
            volume_size: meta.volume_size,
            volume_created_at: meta.volume_created_at,
            snapshot_name: meta.snapshot_name,
            snapshot_uuid: meta.snapshot_uuid,
            snapshot_created_at: meta.snapshot_created_at,
            created_time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            chunk_size: self.opts.chunk_size,
            parent: None,
        };
        let store = self.store.clone();
        let stats = locked(self, LockKind::Shared, "backup", async {
            self.ensure_marker().await?;
            backup::run(backup::BackupJob {
                store,
                source,
                ranges,
                parent,
                header,
                parallelism: self.opts.parallelism,
                level: self.opts.zstd_level,
                progress,
            })
            .await
        })
        .await?;
        let info = self.inspect(&me).await?;
        Ok(BackupOutcome {
            info,
            backup: me,
            stats,
        })
    }

    async fn ensure_marker(&self) -> Result<()> {
        let key = layout::marker();
        let body = serde_json::json!({"format": "convoy-backupstore", "version": MANIFEST_VERSION});
        if let Some(existing) = self.store.get_opt(&key).await? {
            let v = serde_json::from_slice::<serde_json::Value>(&existing)
                .ok()
                .and_then(|v| v.get("version")?.as_u64());
            if v != Some(u64::from(MANIFEST_VERSION)) {
                return Err(BackupError::InvalidArgument(format!(
                    "{} holds a store of format version {v:?}; this build writes {MANIFEST_VERSION}",
                    self.store.dest
                )));
            }
            return Ok(());
        }
        self.store
            .put_new(&key, serde_json::to_vec(&body).expect("json"))
            .await?;
        Ok(())
    }

    /// Restores backup `r` into `sink` (holes are not written unless `options.zero_holes`).
    pub async fn restore(
        &self,
        r: &BackupRef,
        sink: Arc<dyn BlockSink>,
        options: &RestoreOptions,
        progress: &dyn Progress,
    ) -> Result<RestoreStats> {
        locked_read(self, "restore", async {
            restore::restore(
                &self.store,
                r,
                sink,
                options,
                self.opts.parallelism,
                progress,
            )
            .await
        })
        .await
    }

    /// Deletes backup `r` and every block no other backup uses.
    pub async fn delete(&self, r: &BackupRef) -> Result<DeleteStats> {
        locked(
            self,
            LockKind::Exclusive,
            "delete",
            delete::delete(&self.store, r),
        )
        .await
    }

    /// Lists backups, of one volume or of all, keyed by backup URL.
    pub async fn list(&self, volume: Option<&str>) -> Result<BTreeMap<String, BackupInfo>> {
        list::list(&self.store, volume).await
    }

    /// The `backup inspect` record of backup `r`.
    pub async fn inspect(&self, r: &BackupRef) -> Result<BackupInfo> {
        let h = list::header(&self.store, r).await?;
        Ok(BackupInfo::from_header(self.backup_url(r), &h))
    }

    /// Checks that backup `r` is complete and every block it references hashes right.
    pub async fn verify(&self, r: &BackupRef, progress: &dyn Progress) -> Result<RestoreStats> {
        locked_read(self, "verify", async {
            restore::verify(&self.store, r, self.opts.parallelism, progress).await
        })
        .await
    }

    /// Removes leftovers of crashed backups and deletes (full scan; see [`RepairStats`]).
    pub async fn repair(&self) -> Result<RepairStats> {
        locked(
            self,
            LockKind::Exclusive,
            "repair",
            repair::repair(&self.store),
        )
        .await
    }
}

/// Restores the backup at `backup_url` into `sink`.
pub async fn restore_url(
    backup_url: &str,
    sink: Arc<dyn BlockSink>,
    target: TargetOptions,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.restore(&r, sink, options, progress).await
}

/// Deletes the backup at `backup_url`.
pub async fn delete_url(backup_url: &str, target: TargetOptions) -> Result<DeleteStats> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.delete(&r).await
}

/// Inspects the backup at `backup_url`.
pub async fn inspect_url(backup_url: &str, target: TargetOptions) -> Result<BackupInfo> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.inspect(&r).await
}

/// Verifies the backup at `backup_url`.
pub async fn verify_url(backup_url: &str, target: TargetOptions) -> Result<RestoreStats> {
    let (t, r) = BackupTarget::open_backup(backup_url, target)?;
    t.verify(&r, &NoProgress).await
}

/// Lists the backups at `dest_url` (of `volume`, or all).
pub async fn list_url(
    dest_url: &str,
    volume: Option<&str>,
    target: TargetOptions,
) -> Result<BTreeMap<String, BackupInfo>> {
    BackupTarget::open(dest_url, target)?.list(volume).await
}
