//! The vfs driver: a volume is a directory under `vfs.path` (a local or NFS path); mounting
//! returns that directory; a snapshot is a copy of the tree under `<vfs.path>/.snapshots/`.
//!
//! Backups serialize a snapshot's tree into an image (`vfs_image`) read through the block
//! store like a devicemapper snapshot, incrementally when the parent snapshot's layout
//! (`vfs_layout`, saved per snapshot under `<vfs.path>/.layouts/`) lines up; a restore
//! writes the image into `<vfs.path>/.images/<volume>.restore`, builds the tree in
//! `<volume>.partial` and renames it into place.
//!
//! Limits (also in `docs/core.md`): a snapshot is a full copy (time and space grow with the
//! data), and it is not crash-consistent while something writes to the volume; no size limit
//! is enforced; backups hold directories, regular files and symlinks with modes and times
//! (no owners, hard links, xattrs, ACLs or special files).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::driver::{BackupSource, Driver};
use crate::error::{Error, Result};
use crate::records::{SnapshotRecord, VolumeRecord};
use crate::vfs_image::{materialize, TreeImage};
use crate::vfs_layout::{changed_ranges, Layout};

/// Name of the driver.
pub const VFS: &str = "vfs";

/// Directory (under `vfs.path`) holding snapshot copies; a name cannot start with `.`.
const SNAPSHOT_DIR: &str = ".snapshots";

/// Directory (under `vfs.path`) holding restore images while a restore runs.
const IMAGE_DIR: &str = ".images";

/// Directory (under `vfs.path`) holding each snapshot's backup image layout
/// (`<snapshot uuid>.json`, `vfs_layout`).
const LAYOUT_DIR: &str = ".layouts";

/// Backup chunk size, and the alignment of every file in a backup image.
const CHUNK_SIZE: u32 = 256 << 10;

/// The vfs driver.
#[derive(Debug)]
pub(crate) struct VfsDriver {
    path: PathBuf,
    /// Held while a snapshot's layout is loaded, computed and saved: two backups of one
    /// snapshot at once must agree on it.
    layouts: std::sync::Mutex<()>,
}

impl VfsDriver {
    /// Sets up the driver from `vfs.path`.
    pub(crate) fn new(opts: &BTreeMap<String, String>) -> Result<Self> {
        if let Some(key) = opts
            .keys()
            .find(|k| k.starts_with("vfs.") && k.as_str() != "vfs.path")
        {
            return Err(Error::invalid(
                "vfs driver options",
                format!("unknown option {key} (the vfs driver takes vfs.path)"),
            ));
        }
        let path = opts.get("vfs.path").ok_or_else(|| {
            Error::invalid(
                "vfs driver options",
                "vfs.path is required (the directory that holds the volumes)",
            )
        })?;
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(Error::invalid(
                "driver option vfs.path",
                format!("{} is not an absolute path", path.display()),
            ));
        }
        for sub in [SNAPSHOT_DIR, IMAGE_DIR, LAYOUT_DIR] {
            fs::create_dir_all(path.join(sub))
                .map_err(|e| Error::io("create directory", &path, e))?;
        }
        Ok(VfsDriver {
            path,
            layouts: std::sync::Mutex::new(()),
        })
    }

    fn volume_dir(&self, rec: &VolumeRecord) -> PathBuf {
        rec.path
            .clone()
            .unwrap_or_else(|| self.path.join(&rec.name))
    }

    fn restore_image(&self, rec: &VolumeRecord) -> PathBuf {
        self.path
            .join(IMAGE_DIR)
            .join(format!("{}.restore", rec.name))
    }

    fn layout_file(&self, snap: &SnapshotRecord) -> PathBuf {
        self.path
            .join(LAYOUT_DIR)
            .join(format!("{}.json", snap.uuid))
    }

    /// The snapshot's saved image layout; `None` when there is none (or it cannot be read:
    /// the next backup is then a full one).
    fn load_layout(&self, snap: &SnapshotRecord) -> Option<Layout> {
        let text = fs::read(self.layout_file(snap)).ok()?;
        match serde_json::from_slice(&text) {
            Ok(layout) => Some(layout),
            Err(e) => {
                tracing::warn!(
                    "vfs: ignoring the unreadable backup layout of snapshot {}: {e}",
                    snap.name
                );
                None
            }
        }
    }

    fn snapshot_dir(&self, snap: &SnapshotRecord) -> PathBuf {
        snap.path
            .clone()
            .unwrap_or_else(|| self.path.join(SNAPSHOT_DIR).join(&snap.name))
    }
}

fn partial(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// The entries of `dir` that are not in `known`.
fn unrecorded(dir: &Path, known: &BTreeSet<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let path = entry.map_err(|e| Error::io("read", dir, e))?.path();
        if !known.contains(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Copies the tree at `from` to `to` (which must not exist): directories, regular files
/// (permissions and modification times kept), symlinks. Other file types are refused.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(|e| Error::io("stat", from, e))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(to).map_err(|e| Error::io("create directory", to, e))?;
        let entries = fs::read_dir(from).map_err(|e| Error::io("read", from, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", from, e))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions()).map_err(|e| Error::io("chmod", to, e))
    } else if ft.is_symlink() {
        let target = fs::read_link(from).map_err(|e| Error::io("read link", from, e))?;
        symlink(target, to).map_err(|e| Error::io("create symlink", to, e))
    } else if ft.is_file() {
        fs::copy(from, to).map_err(|e| Error::io("copy", from, e))?;
        // Keep the modification time (backups of the snapshot record it).
        if let Ok(mtime) = meta.modified() {
            fs::File::options()
                .write(true)
                .open(to)
                .and_then(|f| f.set_modified(mtime))
                .map_err(|e| Error::io("set time", to, e))?;
        }
        Ok(())
    } else {
        Err(Error::Unsupported {
            what: format!("snapshot of {}", from.display()),
            why: "the vfs driver copies only directories, regular files and symlinks".into(),
        })
    }
}

/// Makes the copy durable: fsync of every file and directory in it.
fn sync_tree(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(|e| Error::io("read", path, e))? {
            let entry = entry.map_err(|e| Error::io("read", path, e))?;
            sync_tree(&entry.path())?;
        }
    }
    if meta.is_dir() || meta.is_file() {
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("sync", path, e))?;
    }
    Ok(())
}

impl Driver for VfsDriver {
    fn name(&self) -> &'static str {
        VFS
    }

    fn info(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::from([
            ("Driver".to_owned(), VFS.to_owned()),
            ("Path".to_owned(), self.path.display().to_string()),
        ]))
    }

    fn plan_volume(&self, rec: &mut VolumeRecord, _size: Option<u64>) -> Result<()> {
        rec.path = Some(self.path.join(&rec.name));
        rec.size = 0;
        Ok(())
    }

    fn create_volume(&self, rec: &VolumeRecord, format: bool) -> Result<()> {
        // An existing directory (left by a reference-only delete) is taken over as it is,
        // except by a restore, which would replace (and on failure remove) it.
        let dir = self.volume_dir(rec);
        // A symlink planted where the volume's directory goes would make the volume (and its
        // delete) act on whatever it points to, outside vfs.path.
        if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::busy(
                &rec.name,
                format!(
                    "{} exists and is not a directory (a symlink or file); remove it first",
                    dir.display()
                ),
            ));
        }
        let occupied = fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
        if !format && occupied {
            return Err(Error::busy(
                &rec.name,
                format!(
                    "directory {} exists and is not empty; a restore needs a new directory",
                    dir.display()
                ),
            ));
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        crate::durable::sync_dir(&self.path)
    }

    fn remove_volume(&self, rec: &VolumeRecord, reference_only: bool) -> Result<()> {
        if reference_only {
            return Ok(());
        }
        for snap in rec.snapshots.values() {
            self.remove_snapshot(rec, snap)?;
        }
        remove_file(&self.restore_image(rec))?;
        remove_tree(&partial(&self.volume_dir(rec)))?;
        remove_tree(&self.volume_dir(rec))
    }

    fn default_mount_point(&self, rec: &VolumeRecord) -> PathBuf {
        self.volume_dir(rec)
    }

    fn mount(&self, rec: &VolumeRecord, at: &Path) -> Result<PathBuf> {
        let dir = self.volume_dir(rec);
        if at != dir {
            return Err(Error::Unsupported {
                what: format!("mounting vfs volume {} at {}", rec.name, at.display()),
                why: format!("a vfs volume is its directory {}", dir.display()),
            });
        }
        if !dir.is_dir() {
            return Err(Error::not_found(
                "volume directory",
                &dir.display().to_string(),
            ));
        }
        Ok(dir)
    }

    fn umount(&self, _rec: &VolumeRecord, _at: &Path) -> Result<()> {
        Ok(())
    }

    fn mounted_at(&self, rec: &VolumeRecord) -> Result<Option<PathBuf>> {
        Ok(rec.mount_point.clone())
    }

    fn volume_info(&self, rec: &VolumeRecord) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "Path".to_owned(),
            self.volume_dir(rec).display().to_string(),
        )])
    }

    fn snapshot_info(
        &self,
        _vol: &VolumeRecord,
        snap: &SnapshotRecord,
    ) -> BTreeMap<String, String> {
        BTreeMap::from([(
            "Path".to_owned(),
            self.snapshot_dir(snap).display().to_string(),
        )])
    }

    fn plan_snapshot(&self, _vol: &VolumeRecord, snap: &mut SnapshotRecord) -> Result<()> {
        snap.path = Some(self.path.join(SNAPSHOT_DIR).join(&snap.name));
        Ok(())
    }

    fn create_snapshot(&self, vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        let dest = self.snapshot_dir(snap);
        let tmp = partial(&dest);
        remove_tree(&tmp)?;
        let made = copy_tree(&self.volume_dir(vol), &tmp)
            .and_then(|()| sync_tree(&tmp))
            .and_then(|()| fs::rename(&tmp, &dest).map_err(|e| Error::io("rename", &tmp, e)))
            .and_then(|()| crate::durable::sync_dir(&self.path.join(SNAPSHOT_DIR)));
        if made.is_err() {
            let _ = remove_tree(&tmp);
        }
        made
    }

    fn remove_snapshot(&self, _vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        let dir = self.snapshot_dir(snap);
        remove_tree(&partial(&dir))?;
        remove_tree(&dir)?;
        crate::durable::remove_durably(&self.layout_file(snap))
    }

    fn create_clone(
        &self,
        rec: &VolumeRecord,
        source: &VolumeRecord,
        snap: Option<&SnapshotRecord>,
    ) -> Result<()> {
        // A copy, like a vfs snapshot: not instant, and not crash-consistent under writers.
        let from = snap.map_or_else(|| self.volume_dir(source), |s| self.snapshot_dir(s));
        let dir = self.volume_dir(rec);
        if fs::symlink_metadata(&dir).is_ok() {
            return Err(Error::busy(
                &rec.name,
                format!("{} exists; a clone needs a new directory", dir.display()),
            ));
        }
        let tmp = partial(&dir);
        remove_tree(&tmp)?;
        let made = copy_tree(&from, &tmp)
            .and_then(|()| sync_tree(&tmp))
            .and_then(|()| fs::rename(&tmp, &dir).map_err(|e| Error::io("rename", &tmp, e)))
            .and_then(|()| crate::durable::sync_dir(&self.path));
        if made.is_err() {
            let _ = remove_tree(&tmp);
        }
        made
    }

    fn backup_chunk_size(&self) -> Option<u32> {
        Some(CHUNK_SIZE)
    }

    fn backup_source(
        &self,
        _vol: &VolumeRecord,
        snap: &SnapshotRecord,
        parent: Option<&SnapshotRecord>,
    ) -> Result<BackupSource> {
        let align = u64::from(CHUNK_SIZE);
        let (image, layout, parent_layout) = {
            let _held = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
            let own = self.load_layout(snap);
            let parent_layout = parent.and_then(|p| self.load_layout(p));
            // This snapshot's own layout when it has one (every backup of a snapshot uses the
            // same), else the parent's, so that unchanged files keep their offsets.
            let base = own.as_ref().or(parent_layout.as_ref());
            let (image, layout) = TreeImage::scan(&self.snapshot_dir(snap), align, base)?;
            if own.as_ref() != Some(&layout) {
                // Saved before the backup starts: a child's incremental backup against this
                // one must find the offsets it used.
                let json = serde_json::to_vec(&layout)
                    .map_err(|e| Error::Internal(format!("vfs layout: {e}")))?;
                crate::durable::write_atomic(&self.layout_file(snap), &json)?;
            }
            (image, layout, parent_layout)
        };
        // Incremental when the parent's layout lines up: unchanged files are not read, their
        // chunks are carried over from the parent backup.
        let changed = parent_layout
            .as_ref()
            .and_then(|p| changed_ranges(&layout, p));
        let incremental = changed.is_some();
        Ok(BackupSource {
            ranges: changed.unwrap_or_else(|| image.ranges()),
            size: Some(image.size()),
            source: Arc::new(image),
            incremental,
        })
    }

    fn restore_sink(&self, rec: &VolumeRecord) -> Result<convoy_backupstore::DirectFile> {
        let path = self.restore_image(rec);
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|f| convoy_backupstore::DirectFile::new(f, &path))
            .map_err(|e| Error::io("create restore image", &path, e))
    }

    fn finish_restore(&self, rec: &VolumeRecord, size: u64) -> Result<()> {
        let image = self.restore_image(rec);
        // Holes at the end of the image are not written by the store: give it its full size.
        fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .and_then(|f| f.set_len(size))
            .map_err(|e| Error::io("extend restore image", &image, e))?;
        let dir = self.volume_dir(rec);
        let tmp = partial(&dir);
        remove_tree(&tmp)?;
        let what = format!(
            "backup {}",
            rec.restored_from.as_deref().unwrap_or(&rec.name)
        );
        let built = materialize(&image, &tmp, &what)
            .and_then(|()| {
                // The directory create_volume made is empty (checked there); replace it.
                fs::remove_dir(&dir).map_err(|e| Error::io("remove", &dir, e))
            })
            .and_then(|()| fs::rename(&tmp, &dir).map_err(|e| Error::io("rename", &tmp, e)))
            .and_then(|()| crate::durable::sync_dir(&self.path));
        if built.is_err() {
            let _ = remove_tree(&tmp);
        }
        let removed = remove_file(&image);
        built.and(removed)
    }

    fn reconcile(&self, records: &[VolumeRecord]) -> Result<Vec<String>> {
        let mut report = Vec::new();
        let snapshots = || records.iter().flat_map(|r| r.snapshots.values());
        for path in unrecorded(&self.path.join(IMAGE_DIR), &BTreeSet::new())? {
            remove_file(&path)?;
            report.push(format!("vfs: removed restore image {}", path.display()));
        }
        let known = snapshots().map(|s| self.snapshot_dir(s)).collect();
        for path in unrecorded(&self.path.join(SNAPSHOT_DIR), &known)? {
            remove_tree(&path)?;
            report.push(format!(
                "vfs: removed unrecorded snapshot copy {}",
                path.display()
            ));
        }
        let known = snapshots().map(|s| self.layout_file(s)).collect();
        for path in unrecorded(&self.path.join(LAYOUT_DIR), &known)? {
            remove_file(&path)?;
            report.push(format!(
                "vfs: removed the backup layout of a deleted snapshot {}",
                path.display()
            ));
        }
        for rec in records {
            if !self.volume_dir(rec).is_dir() {
                report.push(format!(
                    "vfs: volume {} has no directory {}",
                    rec.name,
                    self.volume_dir(rec).display()
                ));
            }
        }
        Ok(report)
    }
}
