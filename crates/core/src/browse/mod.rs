//! Browsing a backup: `convoy backup mount BACKUP_URL DIR` shows one backup's filesystem
//! read-only at DIR without restoring it (`docs/instant.md`).
//!
//! * A block backup (devicemapper) is served as a read-only `/dev/nbdN` over a
//!   [`convoy_backupstore::BackupReader`] (only the chunks reads touch are fetched, each
//!   verified, [`CACHE_BYTES`] of decoded chunks cached), its filesystem found with `blkid`
//!   and mounted read-only without replaying its journal: ext4 `ro,noload`, xfs
//!   `ro,norecovery,nouuid` (the backed-up volume itself may be mounted, with the same UUID).
//! * A directory-volume backup (vfs) holds a tree image: it is restored whole into
//!   `<root>/browse/<id>/tree` and bind-mounted read-only at DIR. That costs a full download
//!   and the tree's size on local disk, unlike a block backup.
//!
//! Each mount is recorded in `<root>/browse/<id>.json` before anything is mounted; a daemon
//! start (its NBD servers died with the last one) unmounts every recorded mount, disconnects
//! its device and removes the work directory (`restart.rs`). While a backup is mounted a
//! delete of it through this manager is refused, and the reader's shared store lock makes
//! deletes from elsewhere wait and fail.
//!
//! Cancel safety: mount and umount run in tasks of their own ([`detached`]); the mount point
//! and the backup are claimed by a [`Claim`] guard that gives both back unless the mount is
//! complete, and a failed mount undoes what it set up before it answers.

mod restart;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub(crate) use restart::clean_at_start;

use crate::backup_device::{attach_read_only, nbd_error, open_reader};
use crate::backups::{redact_urls, store_error_of, target_options, unescape_backup_url};
use crate::dm::mounts;
use crate::durable::{remove_durably, write_atomic};
use crate::error::{Error, Result};
use crate::guards::detached;
use crate::manager::{blocking, VolumeManager};
use crate::types::StoreOptions;

/// Directory under the root holding browse records and work directories.
const BROWSE_DIR: &str = "browse";

/// Decoded chunks a browse mount keeps in memory.
pub const CACHE_BYTES: u64 = 256 << 20;

/// The filesystem of a directory-volume backup's mount.
const TREE: &str = "tree";

/// One backup mounted for browsing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMount {
    /// The backup's URL.
    pub backup_url: String,
    /// Where its filesystem is mounted (read-only).
    pub mount_point: PathBuf,
    /// The block device serving it (`/dev/nbdN`), for block backups.
    pub device: Option<PathBuf>,
    /// The filesystem found (`ext4`, `xfs`), or `tree` for a directory-volume backup.
    pub filesystem: String,
}

/// What is recorded on disk for a mount (`<root>/browse/<id>.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BrowseRecord {
    mount: BackupMount,
    nbd_index: Option<u32>,
    work_dir: Option<PathBuf>,
    boot_id: String,
}

/// A mount, complete or being set up: what has to be undone.
struct Session {
    record_path: PathBuf,
    record: BrowseRecord,
    /// Whether the filesystem is mounted at the mount point.
    mounted: bool,
    device: Option<convoy_nbd::NbdDevice>,
    reader: Option<convoy_backupstore::BackupReader>,
}

/// The backup a URL names, as deletes are checked against it: `(dest, volume, backup)`.
type BackupKey = (String, String, String);

/// The manager's browse mounts, by mount point (`None`: being mounted or unmounted).
#[derive(Default)]
pub(crate) struct Browses {
    sessions: Mutex<BTreeMap<PathBuf, Option<Session>>>,
    /// The mount points of each backup mounted (or being mounted).
    in_use: Mutex<BTreeMap<BackupKey, Vec<PathBuf>>>,
}

impl Browses {
    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Option<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_use(&self) -> std::sync::MutexGuard<'_, BTreeMap<BackupKey, Vec<PathBuf>>> {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets that `dir` uses backup `key`.
    fn release(&self, key: &BackupKey, dir: &Path) {
        let mut in_use = self.in_use();
        if let Some(dirs) = in_use.get_mut(key) {
            dirs.retain(|d| d != dir);
            if dirs.is_empty() {
                in_use.remove(key);
            }
        }
    }
}

pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `(dest, volume, backup)` of a backup URL, the key deletes are checked against.
pub(crate) fn backup_key(url: &str) -> Option<BackupKey> {
    let (dest, r) = convoy_backupstore::parse_backup_url(&unescape_backup_url(url)).ok()?;
    Some((dest, r.volume, r.backup))
}

/// Takes mount point `dir` and backup `key` for a mount in progress; dropped without
/// [`Claim::keep`] (an error, a panic), gives both back.
struct Claim<'a> {
    browses: &'a Browses,
    dir: PathBuf,
    key: BackupKey,
    kept: bool,
}

impl<'a> Claim<'a> {
    fn take(browses: &'a Browses, dir: &Path, key: BackupKey) -> Result<Self> {
        {
            let mut s = browses.sessions();
            if s.contains_key(dir) {
                return Err(Error::busy(
                    &dir.display().to_string(),
                    "a backup is mounted there (or being mounted); `convoy backup umount` it first",
                ));
            }
            s.insert(dir.to_path_buf(), None);
        }
        browses
            .in_use()
            .entry(key.clone())
            .or_default()
            .push(dir.to_path_buf());
        Ok(Claim {
            browses,
            dir: dir.to_path_buf(),
            key,
            kept: false,
        })
    }

    /// The mount is complete: `session` takes the mount point's place.
    fn keep(mut self, session: Session) {
        self.browses
            .sessions()
            .insert(self.dir.clone(), Some(session));
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut s = self.browses.sessions();
        if matches!(s.get(&self.dir), Some(None)) {
            s.remove(&self.dir);
        }
        drop(s);
        self.browses.release(&self.key, &self.dir);
    }
}

/// The mount options of a filesystem found in a backup; `None` for one convoy does not mount.
fn mount_options(fs: &str) -> Option<&'static str> {
    match fs {
        // Never replay a journal: the backup is read-only, and so is the device.
        "ext2" => Some("ro"),
        "ext3" | "ext4" => Some("ro,noload"),
        // `nouuid`: the backed-up volume (same UUID) may be mounted on this host.
        "xfs" => Some("ro,norecovery,nouuid"),
        _ => None,
    }
}

/// Checks a mount point given by a client: absolute, an existing directory, not a mount
/// point already. Answers it with symbolic links resolved (as the kernel records mounts).
fn check_mount_point(dir: &Path) -> Result<PathBuf> {
    let shown = dir.display().to_string();
    if !dir.is_absolute() {
        return Err(Error::invalid(
            "mount point",
            format!("{shown} is not an absolute path"),
        ));
    }
    let real = match std::fs::canonicalize(dir) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::invalid(
                "mount point",
                format!("{shown} does not exist; create the directory first"),
            ))
        }
        Err(e) => return Err(Error::io("resolve mount point", dir, e)),
    };
    if !real.is_dir() {
        return Err(Error::invalid(
            "mount point",
            format!("{shown} is not a directory"),
        ));
    }
    if let Some((ma, mi)) = mounts::device_at(&real)? {
        return Err(Error::busy(
            &shown,
            format!("it is already a mount point (of device {ma}:{mi}); pick an unused directory"),
        ));
    }
    Ok(real)
}

impl Session {
    fn save(&self) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(&self.record).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.record_path, &bytes)
    }

    /// Undoes what is set up: unmounts (lazily when `lazy`: a process may hold files open),
    /// disconnects the device, lets the store lock go, removes the work directory and the
    /// record. Every step runs; the first error is answered. A busy umount (not `lazy`)
    /// stops before anything else and answers the session back.
    async fn teardown(mut self, lazy: bool) -> std::result::Result<(), (Error, Option<Session>)> {
        if self.mounted {
            let at = self.record.mount.mount_point.clone();
            match blocking(move || mounts::umount_with(&at, lazy)).await {
                Ok(()) => self.mounted = false,
                Err(e) if !lazy => return Err((e, Some(self))),
                Err(e) => return Err((e, None)),
            }
        }
        let mut first: Option<Error> = None;
        if let Some(d) = self.device.take() {
            if let Err(e) = d
                .detach()
                .await
                .map_err(nbd_error("detach the browse device"))
            {
                first.get_or_insert(e);
            }
        }
        if let Some(r) = self.reader.take() {
            if let Err(e) = r.close().await {
                tracing::warn!("browse: releasing the store lock: {e}");
            }
        }
        let (work, record) = (self.record.work_dir.clone(), self.record_path.clone());
        let removed = blocking(move || {
            if let Some(w) = work.filter(|w| w.exists()) {
                std::fs::remove_dir_all(&w).map_err(|e| Error::io("remove", &w, e))?;
            }
            remove_durably(&record)
        })
        .await;
        if let Err(e) = removed {
            first.get_or_insert(e);
        }
        match first {
            None => Ok(()),
            Some(e) => Err((e, None)),
        }
    }
}

impl VolumeManager {
    /// Mounts backup `backup_url` read-only at `dir` (an existing directory that is not a
    /// mount point). See the module's documentation for what it costs.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL naming no backup or a bad `dir`; [`Error::Busy`]
    /// when `dir` is a mount point or in use; [`Error::Unsupported`] without the kernel's nbd
    /// driver or for a backup holding no filesystem convoy mounts; store errors (kind
    /// `NotFound` for an unknown backup).
    pub async fn mount_backup(
        &self,
        backup_url: &str,
        dir: &Path,
        store: &StoreOptions,
    ) -> Result<BackupMount> {
        let (me, url, dir, store) = (
            self.clone(),
            unescape_backup_url(backup_url).into_owned(),
            dir.to_path_buf(),
            store.clone(),
        );
        detached("mount backup", async move {
            me.mount_backup_now(&url, &dir, &store).await
        })
        .await
    }

    async fn mount_backup_now(
        &self,
        url: &str,
        dir: &Path,
        store: &StoreOptions,
    ) -> Result<BackupMount> {
        let key = backup_key(url).ok_or_else(|| {
            Error::invalid(
                "backup URL",
                format!(
                    "{:?} names no backup (expected <dest>?backup=<name>&volume=<name>, as \
                     `convoy backup list` prints it)",
                    redact_urls(url)
                ),
            )
        })?;
        let d = dir.to_path_buf();
        let dir = blocking(move || check_mount_point(&d)).await?;
        let claim = Claim::take(&self.inner.browses, &dir, key)?;

        let reader = open_reader(url, store, format!("browse of {url}"), CACHE_BYTES).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let browse_dir = self.inner.root.join(BROWSE_DIR);
        let d = browse_dir.clone();
        blocking(move || std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e)))
            .await?;
        let is_tree = reader.info().driver_name == crate::vfs::VFS;
        let mut session = Session {
            record_path: browse_dir.join(format!("{id}.json")),
            record: BrowseRecord {
                mount: BackupMount {
                    backup_url: url.to_owned(),
                    mount_point: dir.clone(),
                    device: None,
                    filesystem: String::new(),
                },
                nbd_index: None,
                work_dir: is_tree.then(|| browse_dir.join(&id)),
                boot_id: boot_id(),
            },
            mounted: false,
            device: None,
            reader: Some(reader),
        };
        let made = if is_tree {
            self.mount_tree(&mut session, store).await
        } else {
            mount_device(&mut session).await
        };
        if let Err(e) = made {
            if let Err((undo, _)) = session.teardown(true).await {
                tracing::warn!(
                    "browse: undoing a failed mount at {}: {undo}",
                    dir.display()
                );
            }
            return Err(e);
        }
        let mount = session.record.mount.clone();
        claim.keep(session);
        tracing::info!(
            "browse: mounted {} at {} ({})",
            redact_urls(url),
            dir.display(),
            mount.filesystem
        );
        Ok(mount)
    }

    /// Restores the tree image of the session's backup into `<work>/tree` and bind-mounts it
    /// read-only at the mount point.
    async fn mount_tree(&self, session: &mut Session, store: &StoreOptions) -> Result<()> {
        session.record.mount.filesystem = TREE.into();
        session.save()?;
        let url = session.record.mount.backup_url.clone();
        let work = session
            .record
            .work_dir
            .clone()
            .expect("a tree has a work dir");
        let size = session.reader.as_ref().map_or(0, |r| r.size());
        let image = work.join("image");
        let (w, i) = (work.clone(), image.clone());
        let sink = blocking(move || {
            std::fs::create_dir_all(&w).map_err(|e| Error::io("create", &w, e))?;
            let f = std::fs::File::create(&i).map_err(|e| Error::io("create", &i, e))?;
            f.set_len(size).map_err(|e| Error::io("size", &i, e))?;
            Ok(f)
        })
        .await?;
        let (u, opts) = (url.clone(), target_options(store, None));
        detached("restore for browsing", async move {
            convoy_backupstore::restore_url(
                &u,
                Arc::new(sink),
                opts,
                &convoy_backupstore::RestoreOptions::default(),
                &convoy_backupstore::NoProgress,
            )
            .await
            .map(drop)
            .map_err(|e| store_error_of(format!("restore {u} for browsing"), e))
        })
        .await?;
        // The tree is local now: the store lock is not needed any more.
        if let Some(r) = session.reader.take() {
            let _ = r.close().await;
        }
        let (tree, at) = (work.join("tree"), session.record.mount.mount_point.clone());
        let what = format!("backup {}", redact_urls(&url));
        blocking(move || {
            crate::vfs_image::materialize(&image, &tree, &what)?;
            let _ = std::fs::remove_file(&image);
            mounts::mount_with(&tree, &at, "bind,ro")
        })
        .await?;
        session.mounted = true;
        Ok(())
    }

    /// Unmounts a backup mounted with [`VolumeManager::mount_backup`] and lets its device
    /// and store lock go.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no backup is mounted at `dir`; [`Error::Busy`] while it is
    /// being mounted or a process uses it (the mount stays).
    pub async fn umount_backup(&self, dir: &Path) -> Result<()> {
        let (me, dir) = (self.clone(), dir.to_path_buf());
        detached(
            "umount backup",
            async move { me.umount_backup_now(&dir).await },
        )
        .await
    }

    async fn umount_backup_now(&self, dir: &Path) -> Result<()> {
        let browses = &self.inner.browses;
        // The mount point as it was recorded (links resolved), or as given when it is gone.
        let d = dir.to_path_buf();
        let dir = blocking(move || Ok(std::fs::canonicalize(&d).unwrap_or(d))).await?;
        let session = {
            let mut s = browses.sessions();
            match s.get_mut(&dir) {
                Some(slot @ Some(_)) => slot.take().expect("checked"),
                Some(None) => {
                    return Err(Error::busy(
                        &dir.display().to_string(),
                        "a backup is being mounted or unmounted there",
                    ))
                }
                None => return Err(Error::not_found("backup mount", &dir.display().to_string())),
            }
        };
        let url = session.record.mount.backup_url.clone();
        let outcome = session.teardown(false).await;
        if let Err((e, Some(session))) = outcome {
            // Still mounted (busy): put it back.
            browses.sessions().insert(dir.clone(), Some(session));
            return Err(e);
        }
        browses.sessions().remove(&dir);
        if let Some(k) = backup_key(&url) {
            browses.release(&k, &dir);
        }
        tracing::info!(
            "browse: unmounted {} from {}",
            redact_urls(&url),
            dir.display()
        );
        outcome.map_err(|(e, _)| e)
    }

    /// Unmounts every browse mount (lazily) and disconnects their devices: at daemon
    /// shutdown, whose NBD servers stop with it. Answers one line per mount.
    pub async fn umount_all_backups(&self) -> Vec<String> {
        let sessions: Vec<(PathBuf, Session)> = {
            let mut s = self.inner.browses.sessions();
            let dirs: Vec<PathBuf> = s
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            dirs.into_iter()
                .filter_map(|d| s.remove(&d).flatten().map(|v| (d, v)))
                .collect()
        };
        let mut report = Vec::new();
        for (dir, session) in sessions {
            let url = redact_urls(&session.record.mount.backup_url);
            if let Some(k) = backup_key(&session.record.mount.backup_url) {
                self.inner.browses.release(&k, &dir);
            }
            report.push(match session.teardown(true).await {
                Ok(()) => format!("browse: unmounted {url} from {}", dir.display()),
                Err((e, _)) => format!("browse: unmounting {url} from {}: {e}", dir.display()),
            });
        }
        report
    }

    /// The backups mounted for browsing, by mount point.
    pub fn list_backup_mounts(&self) -> Vec<BackupMount> {
        self.inner
            .browses
            .sessions()
            .values()
            .flatten()
            .map(|s| s.record.mount.clone())
            .collect()
    }

    /// Refuses to delete a backup that a browse mount reads.
    pub(crate) fn check_backup_unused(&self, url: &str) -> Result<()> {
        let Some(key) = backup_key(url) else {
            return Ok(());
        };
        let at = self.inner.browses.in_use().get(&key).cloned();
        if let Some(at) = at.and_then(|dirs| dirs.into_iter().next()) {
            return Err(Error::busy(
                &redact_urls(url),
                format!(
                    "it is mounted for browsing at {}; `convoy backup umount {}` first",
                    at.display(),
                    at.display()
                ),
            ));
        }
        Ok(())
    }
}

/// Serves the session's backup on a read-only `/dev/nbdN` and mounts its filesystem.
async fn mount_device(session: &mut Session) -> Result<()> {
    let url = redact_urls(&session.record.mount.backup_url);
    let reader = session.reader.clone().expect("a block mount has a reader");
    let device = attach_read_only(reader, &format!("browse {url}")).await?;
    session.record.nbd_index = Some(device.index());
    session.record.mount.device = Some(device.path().to_path_buf());
    let path = device.path().to_path_buf();
    session.device = Some(device);
    session.save()?;
    let p = path.clone();
    let fs = blocking(move || mounts::filesystem_of(&p)).await?;
    let Some(fs) = fs else {
        return Err(Error::Unsupported {
            what: format!("mounting backup {url}"),
            why: "the backup holds no filesystem blkid recognizes (a volume never formatted, \
                  or one holding a partition table)"
                .into(),
        });
    };
    let Some(options) = mount_options(&fs) else {
        return Err(Error::Unsupported {
            what: format!("mounting backup {url}"),
            why: format!(
                "it holds a {fs} filesystem; convoy browses ext2, ext3, ext4 and xfs \
                 (restore the backup with `convoy create --backup` instead)"
            ),
        });
    };
    session.record.mount.filesystem = fs;
    session.save()?;
    let at = session.record.mount.mount_point.clone();
    blocking(move || mounts::mount_with(&path, &at, options)).await?;
    session.mounted = true;
    Ok(())
}

#[cfg(test)]
mod tests;
