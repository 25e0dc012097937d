//! Browsing a backup: `convoy backup mount BACKUP_URL DIR` shows one backup's filesystem
//! read-only at DIR without restoring it.
//!
//! * A block backup (devicemapper) is served as a read-only `/dev/nbdN` over a
//!   [`convoy_backupstore::BackupReader`] (only the chunks reads touch are fetched, each
//!   verified, 256 MiB of decoded chunks cached), its filesystem found with `blkid` and
//!   mounted read-only without replaying its journal: ext4 `ro,noload`, xfs `ro,norecovery`.
//! * A directory-volume backup (vfs) holds a tree image: it is restored whole into
//!   `<root>/browse/<id>/tree` and bind-mounted read-only at DIR. That costs a full download
//!   and the tree's size on local disk, unlike a block backup.
//!
//! Each mount is recorded in `<root>/browse/<id>.json` before anything is mounted; a daemon
//! restart (its NBD servers died with it) unmounts every recorded mount, disconnects its
//! device (only in the same boot: after a reboot the index may be someone else's) and removes
//! the work directory. While a backup is mounted a delete of it through this manager is
//! refused, and the reader's shared store lock makes deletes from elsewhere wait and fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::backup_device::{attach_read_only, open_reader};
use crate::backups::{store_error_of, target_options, unescape_backup_url};
use crate::dm::mounts;
use crate::error::{Error, Result};
use crate::guards::detached;
use crate::manager::{blocking, VolumeManager};
use crate::records::{remove_durably, write_atomic};
use crate::types::StoreOptions;

/// Directory under the root holding browse records and work directories.
const BROWSE_DIR: &str = "browse";

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

/// A live mount.
struct Session {
    record_path: PathBuf,
    record: BrowseRecord,
    device: Option<convoy_nbd::NbdDevice>,
    reader: Option<convoy_backupstore::BackupReader>,
}

/// The manager's browse mounts, by mount point (`None`: being mounted or unmounted).
#[derive(Default)]
pub(crate) struct Browses {
    sessions: Mutex<BTreeMap<PathBuf, Option<Session>>>,
    /// Backups mounted, as `(dest, volume, backup)` → mount point.
    in_use: Mutex<BTreeMap<(String, String, String), PathBuf>>,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `(dest, volume, backup)` of a backup URL, the key deletes are checked against.
pub(crate) fn backup_key(url: &str) -> Option<(String, String, String)> {
    let (dest, r) = convoy_backupstore::parse_backup_url(&unescape_backup_url(url)).ok()?;
    Some((dest, r.volume, r.backup))
}

/// Takes the mount point `dir` for a mount in progress; dropped without `keep`, frees it.
struct Claim<'a> {
    browses: &'a Browses,
    dir: PathBuf,
    key: Option<(String, String, String)>,
    kept: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut s = self.browses.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(s.get(&self.dir), Some(None)) {
            s.remove(&self.dir);
        }
        if let Some(k) = &self.key {
            self.browses
                .in_use
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(k);
        }
    }
}

fn mount_options(fs: &str) -> &'static str {
    match fs {
        // Never replay a journal: the backup is read-only, and so is the device.
        "ext3" | "ext4" => "ro,noload",
        "xfs" => "ro,norecovery",
        _ => "ro",
    }
}

impl VolumeManager {
    /// Mounts backup `backup_url` read-only at `dir` (created if missing; it must not be a
    /// mount point already). See the module's documentation for what it costs.
    ///
    /// # Errors
    /// [`Error::Busy`] when `dir` is in use; [`Error::Unsupported`] without the kernel's nbd
    /// driver or for a backup holding no filesystem convoy knows; store errors.
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
        if !dir.is_absolute() {
            return Err(Error::invalid(
                "mount point",
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        let key = backup_key(url)
            .ok_or_else(|| Error::invalid("backup URL", format!("{url:?} names no backup")))?;
        let browses = &self.inner.browses;
        let mut claim = {
            let mut s = browses.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if s.contains_key(dir) {
                return Err(Error::busy(
                    &dir.display().to_string(),
                    "a backup is mounted there (or being mounted); `convoy backup umount` it first",
                ));
            }
            s.insert(dir.to_path_buf(), None);
            Claim {
                browses,
                dir: dir.to_path_buf(),
                key: None,
                kept: false,
            }
        };
        browses
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), dir.to_path_buf());
        claim.key = Some(key);
        let d = dir.to_path_buf();
        blocking(move || {
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create mount point", &d, e))?;
            match mounts::device_at(&d)? {
                Some((ma, mi)) => Err(Error::busy(
                    &d.display().to_string(),
                    format!("it is the mount point of device {ma}:{mi}"),
                )),
                None => Ok(()),
            }
        })
        .await?;

        let reader = open_reader(url, store, format!("browse of {url}"), 256 << 20).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let browse_dir = self.inner.root.join(BROWSE_DIR);
        let record_path = browse_dir.join(format!("{id}.json"));
        let mut record = BrowseRecord {
            mount: BackupMount {
                backup_url: url.to_owned(),
                mount_point: dir.to_path_buf(),
                device: None,
                filesystem: String::new(),
            },
            nbd_index: None,
            work_dir: None,
            boot_id: boot_id(),
        };
        let save = |r: &BrowseRecord| -> Result<()> {
            let bytes = serde_json::to_vec_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
            write_atomic(&record_path, &bytes)
        };
        let session = if reader.info().driver_name == crate::vfs::VFS {
            // A tree image: restored whole, then bind-mounted read-only.
            let size = reader.size();
            reader.close().await.map_err(|e| store_error_of(format!("close {url}"), e))?;
            let work = browse_dir.join(&id);
            record.work_dir = Some(work.clone());
            record.mount.filesystem = "tree".into();
            save(&record)?;
            let made = self.materialize_tree(url, store, &work, size, dir).await;
            if let Err(e) = made {
                let (w, r) = (work.clone(), record_path.clone());
                let _ = blocking(move || {
                    let _ = std::fs::remove_dir_all(&w);
                    remove_durably(&r)
                })
                .await;
                return Err(e);
            }
            Session {
                record_path: record_path.clone(),
                record,
                device: None,
                reader: None,
            }
        } else {
            let device = attach_read_only(reader.clone(), &format!("browse {url}")).await?;
            record.nbd_index = Some(device.index());
            record.mount.device = Some(device.path().to_path_buf());
            save(&record)?;
            let (path, at) = (device.path().to_path_buf(), dir.to_path_buf());
            let mounted = blocking(move || {
                let fs = mounts::filesystem_of(&path)?.ok_or_else(|| Error::Unsupported {
                    what: format!("mounting {}", path.display()),
                    why: "the backup holds no filesystem blkid recognizes".into(),
                })?;
                mounts::mount_with(&path, &at, mount_options(&fs))?;
                Ok(fs)
            })
            .await;
            match mounted {
                Ok(fs) => record.mount.filesystem = fs,
                Err(e) => {
                    let _ = device.detach().await;
                    let _ = reader.close().await;
                    let r = record_path.clone();
                    let _ = blocking(move || remove_durably(&r)).await;
                    return Err(e);
                }
            }
            save(&record)?;
            Session {
                record_path: record_path.clone(),
                record,
                device: Some(device),
                reader: Some(reader),
            }
        };
        let mount = session.record.mount.clone();
        browses
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf(), Some(session));
        claim.kept = true;
        Ok(mount)
    }

    /// Restores the tree image of `url` into `work/tree` and bind-mounts it read-only at `at`.
    async fn materialize_tree(
        &self,
        url: &str,
        store: &StoreOptions,
        work: &Path,
        size: u64,
        at: &Path,
    ) -> Result<()> {
        let image = work.join("image");
        let (w, i) = (work.to_path_buf(), image.clone());
        let sink = blocking(move || {
            std::fs::create_dir_all(&w).map_err(|e| Error::io("create", &w, e))?;
            let f = std::fs::File::create(&i).map_err(|e| Error::io("create", &i, e))?;
            f.set_len(size).map_err(|e| Error::io("size", &i, e))?;
            Ok(f)
        })
        .await?;
        let (u, opts) = (url.to_owned(), target_options(store, None));
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
        let (tree, at, what) = (work.join("tree"), at.to_path_buf(), format!("backup {url}"));
        blocking(move || {
            crate::vfs_image::materialize(&image, &tree, &what)?;
            let _ = std::fs::remove_file(&image);
            mounts::mount_with(&tree, &at, "bind,ro")
        })
        .await
    }

    /// Unmounts a backup mounted with [`VolumeManager::mount_backup`] and lets its device
    /// and store lock go.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no backup is mounted at `dir`; umount errors (busy).
    pub async fn umount_backup(&self, dir: &Path) -> Result<()> {
        let (me, dir) = (self.clone(), dir.to_path_buf());
        detached("umount backup", async move { me.umount_backup_now(&dir).await }).await
    }

    async fn umount_backup_now(&self, dir: &Path) -> Result<()> {
        let browses = &self.inner.browses;
        let session = {
            let mut s = browses.sessions.lock().unwrap_or_else(|p| p.into_inner());
            match s.get_mut(dir) {
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
        let at = dir.to_path_buf();
        if let Err(e) = blocking(move || mounts::umount(&at)).await {
            // Still mounted (busy): put it back.
            browses
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dir.to_path_buf(), Some(session));
            return Err(e);
        }
        let Session {
            record_path,
            record,
            device,
            reader,
        } = session;
        if let Some(d) = device {
            d.detach()
                .await
                .map_err(crate::backup_device::nbd_error("detach the browse device"))?;
        }
        if let Some(r) = reader {
            let _ = r.close().await;
        }
        let work = record.work_dir.clone();
        blocking(move || {
            if let Some(w) = work {
                let _ = std::fs::remove_dir_all(&w);
            }
            remove_durably(&record_path)
        })
        .await?;
        browses
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dir);
        if let Some(k) = backup_key(&record.mount.backup_url) {
            browses
                .in_use
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&k);
        }
        Ok(())
    }

    /// The backups mounted for browsing.
    pub fn list_backup_mounts(&self) -> Vec<BackupMount> {
        self.inner
            .browses
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .map(|s| s.record.mount.clone())
            .collect()
    }

    /// Where backup `url` is mounted for browsing, if it is.
    pub(crate) fn browsed_at(&self, url: &str) -> Option<PathBuf> {
        let key = backup_key(url)?;
        self.inner
            .browses
            .in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

/// Start-up: undoes every recorded browse mount (their servers died with the last daemon).
pub(crate) fn clean_at_start(root: &Path, report: &mut Vec<String>) -> Result<()> {
    let dir = root.join(BROWSE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    let boot = boot_id();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            if path.is_dir() && !path.with_extension("json").exists() {
                let _ = std::fs::remove_dir_all(&path);
            }
            continue;
        }
        let rec: Option<BrowseRecord> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(rec) = rec {
            let at = &rec.mount.mount_point;
            if mounts::device_at(at)?.is_some() {
                // Lazily: a process may still hold files open on a device that errors.
                let _ = mounts::run("umount", &["-l", &at.to_string_lossy()]);
            }
            if let Some(i) = rec.nbd_index.filter(|_| rec.boot_id == boot) {
                let _ = convoy_nbd::disconnect(i);
            }
            if let Some(w) = &rec.work_dir {
                let _ = std::fs::remove_dir_all(w);
            }
            report.push(format!(
                "browse: unmounted backup {} from {}, left mounted by the last run",
                crate::backups::redact_urls(&rec.mount.backup_url),
                at.display()
            ));
        }
        remove_durably(&path)?;
    }
    Ok(())
}

impl VolumeManager {
    /// Refuses to delete a backup that a browse mount or an instant restore reads.
    pub(crate) fn check_backup_unused(&self, url: &str) -> Result<()> {
        if let Some(at) = self.browsed_at(url) {
            return Err(Error::busy(
                &crate::backups::redact_urls(url),
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
