//! Backups and restores of [`VolumeManager`], through convoy-backupstore.
//!
//! The incremental rule (the seed's): a backup of snapshot S of volume V to destination D is
//! incremental when V's last backup to D still exists there and the snapshot it was made from
//! still exists locally (same UUID); it then reads only the ranges where S differs from that
//! snapshot (the thin-metadata delta). Otherwise it is full: every mapped range of S is read,
//! and the store's dedup skips uploading blocks it already holds.

use std::sync::Arc;

use convoy_backupstore::{
    self as store, BackupError, BackupMeta, BackupRef, BackupTarget, RestoreOptions, TargetOptions,
};

use crate::error::{Error, ErrorKind, Result};
use crate::guards::{detached, BusySnapshot};
use crate::manager::{blocking, VolumeManager};
use crate::records::{LastBackup, ObjectState, VolumeRecord};
use crate::types::{BackupInfo, BackupKind, BackupReport, Progress, StoreOptions};

/// A checked restore request.
pub(crate) struct RestorePlan {
    /// The backup URL.
    pub url: String,
    /// The backup's volume size, bytes.
    pub size: u64,
    /// How to reach the store.
    pub store: StoreOptions,
    /// A backup of the original Convoy, in its own store layout.
    pub legacy: bool,
}

/// `text` with the authority of every URL in it that carries a `:` (`s3://KEY:SECRET@bucket`)
/// replaced by `<redacted>`: errors name the store they failed on, never credentials typed
/// into its URL (bucket names and regions have no `:`).
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        out.push_str(if authority.contains(':') {
            "<redacted>"
        } else {
            authority
        });
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A backup URL as the original Convoy printed it — Go's JSON escaping of `&` left in:
/// `vfs:///b?backup=x\u0026volume=v` — read as the URL it stands for. Users pasted those into
/// scripts; the original daemon accepted them, and so does this one, in every backup URL.
pub fn unescape_backup_url(url: &str) -> std::borrow::Cow<'_, str> {
    if url.contains("\\u0026") {
        std::borrow::Cow::Owned(url.replace("\\u0026", "&"))
    } else {
        std::borrow::Cow::Borrowed(url)
    }
}

fn store_error(context: String) -> impl FnOnce(BackupError) -> Error {
    move |e| store_error_of(context, e)
}

/// A store error as a core error, its kind by meaning.
pub(crate) fn store_error_of(context: String, e: BackupError) -> Error {
    {
        let context = redact_urls(&context);
        let kind = match &e {
            BackupError::InvalidUrl { .. }
            | BackupError::InvalidName { .. }
            | BackupError::InvalidArgument(_)
            | BackupError::BadParent { .. }
            | BackupError::Key { .. } => ErrorKind::InvalidArgument,
            BackupError::BackupNotFound { .. } => ErrorKind::NotFound,
            BackupError::BackupExists { .. } => ErrorKind::AlreadyExists,
            BackupError::Locked { .. } | BackupError::Conflict { .. } => ErrorKind::Busy,
            BackupError::Store { .. } | BackupError::S3Config { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Error::Store {
            context,
            message: redact_urls(&e.to_string()),
            kind,
            source: Some(crate::error::StoreCause::of(&e)),
        }
    }
}

pub(crate) fn target_options(store: &StoreOptions, chunk_size: Option<u32>) -> TargetOptions {
    let mut o = TargetOptions {
        s3_endpoint: store.s3_endpoint.clone(),
        limit_upload: store.limit_upload,
        secret: crate::backup_secret::current(),
        ..TargetOptions::default()
    };
    if let Some(c) = chunk_size {
        o.chunk_size = c.clamp(store::MIN_CHUNK_SIZE, store::MAX_CHUNK_SIZE);
    }
    o
}

impl VolumeManager {
    /// Checks a restore request against the backup: made by the driver of the new volume
    /// (devicemapper or vfs), of the same size when a size is given (devicemapper).
    pub(crate) async fn plan_restore(
        &self,
        backup_url: &str,
        driver: &str,
        size: Option<u64>,
        grow: bool,
        store: &StoreOptions,
    ) -> Result<RestorePlan> {
        let backup_url = &*unescape_backup_url(backup_url);
        if driver != crate::dm::DEVICEMAPPER && driver != crate::vfs::VFS {
            return Err(Error::Unsupported {
                what: format!(
                    "restoring {} into a {driver} volume",
                    redact_urls(backup_url)
                ),
                why: "only the devicemapper and vfs drivers restore backups".into(),
            });
        }
        let (info, legacy) = match store::inspect_url(backup_url, target_options(store, None)).await
        {
            Ok(info) => (info, false),
            Err(e @ BackupError::BackupNotFound { .. }) => {
                match crate::legacy_backups::inspect(backup_url, store).await? {
                    Some(info) => (info, true),
                    None => return Err(store_error_of(format!("inspect {backup_url}"), e)),
                }
            }
            Err(e) => return Err(store_error_of(format!("inspect {backup_url}"), e)),
        };
        if info.driver_name != driver {
            return Err(Error::invalid(
                format!("backup {backup_url}"),
                format!(
                    "it was made by the {} driver; a {driver} volume restores only {driver} \
                     backups",
                    info.driver_name
                ),
            ));
        }
        let backup_size = info.volume_size;
        // A vfs volume has no size (its backup's size is that of the tree's image).
        if let Some(requested) = size.filter(|_| driver == crate::dm::DEVICEMAPPER) {
            // `grow` (restore --grow) takes a larger volume, whose filesystem is grown after.
            if requested != backup_size && !(grow && requested > backup_size) {
                return Err(Error::SizeMismatch {
                    backup_url: backup_url.to_owned(),
                    backup: backup_size,
                    requested,
                });
            }
        }
        Ok(RestorePlan {
            url: backup_url.to_owned(),
            size: backup_size,
            store: store.clone(),
            legacy,
        })
    }

    /// Writes the backup into the new (unformatted, active) volume.
    pub(crate) async fn run_restore(
        &self,
        rec: &VolumeRecord,
        plan: RestorePlan,
        progress: Arc<dyn Progress>,
    ) -> Result<()> {
        let driver = self.driver(&rec.driver)?;
        let r = rec.clone();
        let sink = blocking(move || driver.restore_sink(&r)).await?;
        crate::crashpoint::hit("restore-after-open");
        let context = format!("restore {} into volume {}", plan.url, rec.name);
        let (url, options) = (plan.url.clone(), target_options(&plan.store, None));
        if plan.legacy {
            let store_options = plan.store.clone();
            detached("restore", async move {
                crate::legacy_backups::restore(&url, Arc::new(sink), &store_options, progress).await
            })
            .await?;
        } else {
            // In a task of its own: a panic in the download is an error here, and the caller
            // rolls the volume back.
            detached("restore", async move {
                store::restore_url(
                    &url,
                    Arc::new(sink),
                    options,
                    &RestoreOptions::default(),
                    &*progress,
                )
                .await
                .map_err(store_error(context))
            })
            .await?;
        }
        let driver = self.driver(&rec.driver)?;
        let r = rec.clone();
        let size = plan.size;
        blocking(move || driver.finish_restore(&r, size)).await
    }

    /// Backs a snapshot up to `dest_url` (`vfs:///path`, `s3://bucket@region/path`):
    /// incremental against the volume's last backup there when that backup's snapshot still
    /// exists locally, full otherwise. Returns the backup URL.
    ///
    /// # Errors
    /// [`Error::NotFound`] for the snapshot; [`Error::Unsupported`] for a vfs tree holding
    /// special files or non-UTF-8 names; store and device errors.
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

    /// [`VolumeManager::create_backup`], returning what the backup did.
    ///
    /// # Errors
    /// As [`VolumeManager::create_backup`].
    pub async fn create_backup_report(
        &self,
        snapshot: &str,
        dest_url: &str,
        store: &StoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<BackupReport> {
        let me = self.clone();
        let (snapshot, dest_url, store) = (snapshot.to_owned(), dest_url.to_owned(), store.clone());
        detached("backup", async move {
            me.create_backup_now(&snapshot, &dest_url, &store, progress)
                .await
        })
        .await
    }

    async fn create_backup_now(
        &self,
        snapshot: &str,
        dest_url: &str,
        store: &StoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<BackupReport> {
        let (guard, vol) = self.lock_snapshot_owner(snapshot).await?;
        let volume = vol.name.clone();
        let snap = vol
            .snapshots
            .get(snapshot)
            .filter(|s| s.state == ObjectState::Ready)
            .cloned()
            .ok_or_else(|| Error::not_found("snapshot", snapshot))?;
        let driver = self.driver(&vol.driver)?;
        let target =
            BackupTarget::open(dest_url, target_options(store, driver.backup_chunk_size()))
                .map_err(store_error(format!("open {dest_url}")))?;
        let dest = target.dest_url().to_owned();

        // The seed's rule: incremental against the last backup to this destination if both it
        // and its snapshot still exist, and it is of the snapshot's size (a volume expanded
        // since then takes a full backup; the vfs driver's images settle their own size).
        let mut parent = None;
        if let Some(last) = vol.last_backups.get(&dest) {
            let local = vol
                .snapshots
                .get(&last.snapshot)
                .filter(|s| s.state == ObjectState::Ready && s.uuid == last.snapshot_uuid);
            if let Some(local) = local.filter(|s| s.name != snap.name) {
                if let Ok(r) = BackupRef::new(&vol.name, &last.backup_name) {
                    match target.inspect(&r).await {
                        Ok(info) if snap.size > 0 && info.volume_size != snap.size => {
                            tracing::info!(
                                "backup of {}: the last backup {} is of {} bytes, the snapshot                                  of {}: a full backup",
                                snap.name,
                                last.backup_name,
                                info.volume_size,
                                snap.size
                            );
                        }
                        Ok(_) => parent = Some((last.backup_name.clone(), local.clone())),
                        Err(_) => {}
                    }
                }
            }
        }

        let busy = BusySnapshot::claim(&self.inner, &snap.name);
        let context = format!("back up {} to {dest}", snap.name);
        let (mut outcome, mut source_opened) = (None, false);
        let mut guard = Some(guard);
        // At most twice: the parent can still disappear (a delete of it running beside this
        // backup) between the check above and the store's use of it; the store then refuses
        // it before writing anything, and the backup is taken in full instead.
        for attempt in 0..2 {
            let p = if attempt == 0 { parent.clone() } else { None };
            let (d, v, s, pp) = (driver.clone(), vol.clone(), snap.clone(), p.clone());
            if source_opened {
                // The retry opens the snapshot again under the volume's lock, as the first
                // attempt did.
                let lock = self.state().lock_of(&volume);
                guard = Some(lock.lock_owned().await);
                let (d, v, s) = (driver.clone(), vol.clone(), snap.clone());
                blocking(move || d.end_backup(&v, &s)).await?;
            }
            let source =
                blocking(move || d.backup_source(&v, &s, pp.as_ref().map(|(_, s)| s))).await;
            source_opened = source.is_ok();
            crate::crashpoint::hit("backup-after-activate");
            // The long part runs without the volume's lock: the snapshot is marked busy.
            drop(guard.take());
            let source = match source {
                Err(e) => {
                    outcome = Some(Err(e));
                    break;
                }
                Ok(source) => source,
            };
            let range_bytes: u64 = source.ranges.iter().map(|r| r.end - r.start).sum();
            let meta = BackupMeta {
                backup_name: None,
                driver_name: vol.driver.clone(),
                volume_name: vol.name.clone(),
                volume_uuid: vol.uuid.clone(),
                volume_size: source.size.unwrap_or(snap.size),
                volume_created_at: vol.created_time.clone(),
                snapshot_name: snap.name.clone(),
                snapshot_uuid: snap.uuid.clone(),
                snapshot_created_at: snap.created_time.clone(),
            };
            // A full read (vfs images) must not carry chunks over from a parent.
            let parent_name = p
                .as_ref()
                .filter(|_| source.incremental)
                .map(|(b, _)| b.clone());
            let (target, progress) = (target.clone(), progress.clone());
            // In a task of its own: a panic in the upload is an error here, and the snapshot
            // is still closed below.
            let uploaded = detached("upload", async move {
                Ok::<_, Error>(
                    target
                        .backup(
                            source.source,
                            &source.ranges,
                            parent_name.as_deref(),
                            meta,
                            &*progress,
                        )
                        .await
                        .map(|done| (done, range_bytes, source.incremental)),
                )
            })
            .await;
            match uploaded {
                Ok(Err(BackupError::BadParent {
                    parent: gone,
                    reason,
                })) if attempt == 0 && p.is_some() => {
                    tracing::warn!(
                        "backup of {}: parent backup {gone} cannot be used ({reason}): taking a \
                         full backup",
                        snap.name
                    );
                    parent = None;
                }
                Ok(r) => {
                    outcome = Some(r.map_err(store_error(context.clone())));
                    break;
                }
                Err(e) => {
                    outcome = Some(Err(e));
                    break;
                }
            }
        }
        drop(guard);
        let outcome = outcome.expect("the loop ends with an outcome");

        // Close the snapshot and record the new last backup under the volume's lock.
        let (_guard, mut vol) = {
            let lock = self.state().lock_of(&volume);
            let g = lock.lock_owned().await;
            let v = self.state().volumes.get(&volume).cloned();
            (g, v)
        };
        drop(busy);
        let (d, s) = (driver.clone(), snap.clone());
        let closed = match &vol {
            Some(v) => {
                let v = v.clone();
                blocking(move || d.end_backup(&v, &s)).await
            }
            None => Ok(()),
        };
        let (done, range_bytes, incremental) = outcome?;
        closed?;
        if let Some(v) = vol.as_mut() {
            v.last_backups.insert(
                dest,
                LastBackup {
                    backup_name: done.backup.backup.clone(),
                    snapshot: snap.name.clone(),
                    snapshot_uuid: snap.uuid.clone(),
                },
            );
            let me = self.clone();
            let v = v.clone();
            blocking(move || me.commit(&v)).await?;
        }
        Ok(BackupReport {
            backup_url: done.info.backup_url,
            kind: if incremental {
                BackupKind::Incremental
            } else {
                BackupKind::Full
            },
            parent_snapshot: parent.filter(|_| incremental).map(|(_, s)| s.name),
            range_bytes,
            bytes_read: done.stats.bytes_read,
            blocks_uploaded: done.stats.blocks_uploaded,
            blocks_deduplicated: done.stats.blocks_deduplicated,
        })
    }

    /// Deletes a backup and the blocks no other backup uses.
    ///
    /// # Errors
    /// [`Error::Store`] (kind `NotFound` for a missing backup).
    pub async fn delete_backup(&self, backup_url: &str, store: &StoreOptions) -> Result<()> {
        let backup_url = unescape_backup_url(backup_url).into_owned();
        self.check_backup_unused(&backup_url)?;
        self.check_backup_not_filling(&backup_url)?;
        let (url, options) = (backup_url.clone(), target_options(store, None));
        let outcome = detached("delete backup", async move {
            Ok(store::delete_url(&url, options).await.map(drop))
        })
        .await?;
        match outcome {
            Ok(()) => Ok(()),
            Err(e @ BackupError::BackupNotFound { .. }) => {
                if crate::legacy_backups::inspect(&backup_url, store)
                    .await?
                    .is_some()
                {
                    return Err(Error::Unsupported {
                        what: format!("deleting {}", redact_urls(&backup_url)),
                        why: "it is a backup of the original Convoy in its own store layout, \
                              which convoy only reads; delete it with the original, or import \
                              the store (`convoy backup import`) and retire it whole"
                            .into(),
                    });
                }
                Err(store_error_of(format!("delete {backup_url}"), e))
            }
            Err(e) => Err(store_error_of(format!("delete {backup_url}"), e)),
        }
    }

    /// Lists the backups at `dest_url` (of one volume when `volume_name` is given).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn list_backups(
        &self,
        dest_url: &str,
        volume_name: Option<&str>,
        store: &StoreOptions,
    ) -> Result<Vec<BackupInfo>> {
        let all = store::list_url(dest_url, volume_name, target_options(store, None))
            .await
            .map_err(store_error(format!("list {dest_url}")))?;
        let mut out: Vec<BackupInfo> = all.into_values().collect();
        // The original Convoy's backups at the same destination, if any.
        out.extend(crate::legacy_backups::list(dest_url, volume_name, store).await?);
        Ok(out)
    }

    /// One backup's details.
    ///
    /// # Errors
    /// [`Error::Store`] (kind `NotFound` for a missing backup).
    pub async fn inspect_backup(
        &self,
        backup_url: &str,
        store: &StoreOptions,
    ) -> Result<BackupInfo> {
        let backup_url = &*unescape_backup_url(backup_url);
        match store::inspect_url(backup_url, target_options(store, None)).await {
            Ok(info) => Ok(info),
            Err(e @ BackupError::BackupNotFound { .. }) => {
                match crate::legacy_backups::inspect(backup_url, store).await? {
                    Some(info) => Ok(info),
                    None => Err(store_error_of(format!("inspect {backup_url}"), e)),
                }
            }
            Err(e) => Err(store_error_of(format!("inspect {backup_url}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn go_escaped_ampersands_are_read_as_ampersands() {
        use super::unescape_backup_url;
        assert_eq!(
            unescape_backup_url("vfs:///b?backup=backup-8f51\\u0026volume=vol1"),
            "vfs:///b?backup=backup-8f51&volume=vol1"
        );
        assert!(matches!(
            unescape_backup_url("vfs:///b?backup=x&volume=v"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_store_error_keeps_its_causes_redacted() {
        use std::error::Error as _;
        let e = super::store_error_of(
            "backup to s3://AKIA:SeCrEt@bkt/p".into(),
            convoy_backupstore::BackupError::LocalIo {
                what: "write",
                path: "/srv/b/x".into(),
                source: std::io::Error::other("s3://AKIA:SeCrEt@bkt refused"),
            },
        );
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
        let mut chain = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert_eq!(
            chain,
            [
                "backup store: backup to s3://<redacted>/p: write /srv/b/x: \
                 s3://<redacted> refused",
                "write /srv/b/x: s3://<redacted> refused",
                "s3://<redacted> refused",
            ]
        );
        // Its Debug form (logs) shows no credentials either.
        assert!(format!("{e:?}").contains("<redacted>"));
        assert!(!format!("{e:?}").contains("SeCrEt"));
    }

    #[test]
    fn credentials_in_urls_are_redacted_and_nothing_else_is() {
        assert_eq!(
            redact_urls("list s3://AKIA:SeCrEt@bkt/p: failed"),
            "list s3://<redacted>/p: failed"
        );
        assert_eq!(
            redact_urls("a s3://k:s@b@us-east-1/x?backup=b and vfs:///srv/b \"s3://u:p@h\""),
            "a s3://<redacted>/x?backup=b and vfs:///srv/b \"s3://<redacted>\""
        );
        for plain in [
            "s3://bkt@us-east-1/p",
            "vfs:///mnt/b?backup=x",
            "no url here",
            "",
        ] {
            assert_eq!(redact_urls(plain), plain);
        }
    }
}
