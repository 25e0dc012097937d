//! The devicemapper driver: thin volumes and snapshots in one dm-thin pool (convoy-thinpool),
//! formatted ext4 or xfs, mounted under `<root>/devicemapper/mounts/<name>` by default.
//! Device-mapper names equal volume names (`/dev/mapper/<name>`); a snapshot is activated (as
//! `/dev/mapper/<snapshot name>`) only while a backup reads it.

mod meta;
mod mounts;
mod options;
mod reconcile;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use convoy_thinpool::{
    mapper_path, IdAllocator, PoolConfig, Sectors, ThinDevice, ThinId, ThinPool,
};

use crate::driver::{BackupSource, Driver};
use crate::error::{Error, Result};
use crate::records::{SnapshotRecord, VolumeRecord};

pub(crate) use options::DmOptions;

/// Name of the driver.
pub const DEVICEMAPPER: &str = "devicemapper";

/// The devicemapper driver.
pub(crate) struct DmDriver {
    /// `<root>/devicemapper`.
    dir: PathBuf,
    opts: DmOptions,
    pool: ThinPool,
    ids: Mutex<IdAllocator>,
    /// One metadata snapshot at a time (the kernel allows one).
    metadata: Mutex<()>,
}

fn thin_id(id: Option<u32>, what: &str) -> Result<ThinId> {
    let id = id.ok_or_else(|| Error::Internal(format!("{what} has no thin id recorded")))?;
    ThinId::new(u64::from(id)).map_err(Error::dm(format!("thin id of {what}")))
}

impl DmDriver {
    /// Opens (or creates) the pool named by the options.
    pub(crate) fn new(root: &Path, opts: &BTreeMap<String, String>) -> Result<Self> {
        let opts = DmOptions::parse(opts)?;
        let config = PoolConfig::new(&opts.data_device, &opts.metadata_device)
            .with_name(&opts.pool_name)
            .with_block_size(opts.block_size);
        let (pool, _action) = ThinPool::setup(config)
            .map_err(Error::dm(format!("set up pool {}", opts.pool_name)))?;
        Ok(DmDriver {
            dir: root.join(DEVICEMAPPER),
            opts,
            pool,
            ids: Mutex::new(IdAllocator::new([])),
            metadata: Mutex::new(()),
        })
    }

    fn ids(&self) -> MutexGuard<'_, IdAllocator> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn block_bytes(&self) -> u64 {
        *self.opts.block_size.sectors() * 512
    }

    fn allocate(&self) -> Result<u32> {
        let id = self
            .ids()
            .allocate()
            .map_err(Error::dm("allocate a thin id"))?;
        Ok(id.get())
    }

    fn forget(&self, id: Option<u32>) {
        if let Some(id) = id.and_then(|i| ThinId::new(u64::from(i)).ok()) {
            self.ids().release(id);
        }
    }

    /// Activates a volume's device (idempotent).
    fn activate_volume(&self, rec: &VolumeRecord) -> Result<ThinDevice> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        self.pool
            .activate(id, &rec.name, Sectors(rec.size / 512))
            .map_err(Error::dm(format!("activate volume {}", rec.name)))
    }

    /// Deactivates every active device of `id`; a missing device is fine.
    fn deactivate_id(&self, id: ThinId, what: &str) -> Result<()> {
        let active = self
            .pool
            .find_active(id)
            .map_err(Error::dm(format!("look up devices of {what}")))?;
        for dev in active {
            self.pool
                .deactivate(&dev.name)
                .map_err(Error::dm(format!("deactivate {what}")))?;
        }
        Ok(())
    }

    /// Deactivates and deletes thin `id`; a missing id is fine.
    fn destroy_id(&self, id: ThinId, what: &str) -> Result<()> {
        self.deactivate_id(id, what)?;
        match self.pool.delete(id) {
            Ok(()) | Err(convoy_thinpool::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::dm(format!("delete {what}"))(e)),
        }
    }

    /// Mount points of a volume's active device.
    fn mounts_of(&self, rec: &VolumeRecord) -> Result<Vec<PathBuf>> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        let mut out = Vec::new();
        for dev in self
            .pool
            .find_active(id)
            .map_err(Error::dm(format!("look up volume {}", rec.name)))?
        {
            out.extend(mounts::mount_points_of(dev.device.major, dev.device.minor)?);
        }
        Ok(out)
    }

    /// Removes a device of `name` with no live table, which a crash left between creating it
    /// and resuming its table.
    fn remove_half_made(&self, name: &str) -> Result<()> {
        self.pool
            .remove_half_made(name)
            .map(drop)
            .map_err(Error::dm(format!("remove the half-made device {name}")))
    }
}

impl Driver for DmDriver {
    fn name(&self) -> &'static str {
        DEVICEMAPPER
    }

    fn info(&self) -> Result<BTreeMap<String, String>> {
        let o = &self.opts;
        let mut m = BTreeMap::new();
        m.insert("Driver".into(), DEVICEMAPPER.into());
        m.insert("Root".into(), self.dir.display().to_string());
        m.insert("DataDevice".into(), o.data_device.display().to_string());
        m.insert(
            "MetadataDevice".into(),
            o.metadata_device.display().to_string(),
        );
        m.insert(
            "ThinpoolDevice".into(),
            self.pool.path().display().to_string(),
        );
        m.insert(
            "ThinpoolSize".into(),
            (*self.pool.data_size() * 512).to_string(),
        );
        m.insert("ThinpoolBlockSize".into(), self.block_bytes().to_string());
        m.insert(
            "DefaultVolumeSize".into(),
            o.default_volume_size.to_string(),
        );
        m.insert("Filesystem".into(), o.filesystem.clone());
        if let Ok(s) = self.pool.status() {
            m.insert("ThinpoolUsedBlocks".into(), s.data.used.0.to_string());
            m.insert("ThinpoolTotalBlocks".into(), s.data.total.0.to_string());
        }
        Ok(m)
    }

    fn load(&self, records: &[VolumeRecord]) -> Result<()> {
        let mut ids = self.ids();
        for rec in records {
            let all = std::iter::once(rec.dev_id).chain(rec.snapshots.values().map(|s| s.dev_id));
            for id in all.flatten() {
                ids.mark_used(
                    ThinId::new(u64::from(id))
                        .map_err(Error::dm(format!("record of {}", rec.name)))?,
                );
            }
        }
        Ok(())
    }

    fn plan_volume(&self, rec: &mut VolumeRecord, size: Option<u64>) -> Result<()> {
        let sectors = self
            .opts
            .round_to_blocks(size.unwrap_or(self.opts.default_volume_size))?;
        rec.size = *sectors * 512;
        rec.filesystem = Some(self.opts.filesystem.clone());
        rec.dev_id = Some(self.allocate()?);
        Ok(())
    }

    fn create_volume(&self, rec: &VolumeRecord, format: bool) -> Result<()> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        self.pool.create_thin(id).map_err(Error::dm(format!(
            "create thin device for volume {}",
            rec.name
        )))?;
        let made = self.activate_volume(rec).and_then(|dev| {
            if format {
                mounts::mkfs(rec.filesystem.as_deref().unwrap_or("ext4"), &dev.path)?;
            }
            Ok(())
        });
        if let Err(e) = made {
            // Leave no half-volume behind (start-up retries if this fails too).
            let _ = self.destroy_id(id, &rec.name);
            return Err(e);
        }
        Ok(())
    }

    fn remove_volume(&self, rec: &VolumeRecord, reference_only: bool) -> Result<()> {
        let Some(id) = rec.dev_id else {
            return Ok(());
        };
        let id = thin_id(Some(id), &rec.name)?;
        if reference_only {
            return self.deactivate_id(id, &format!("volume {}", rec.name));
        }
        for snap in rec.snapshots.values() {
            self.remove_snapshot(rec, snap)?;
        }
        // First: a device with only an inactive table (a crash between loading and resuming
        // it) holds the thin id open, and the pool refuses to delete it (busy).
        self.remove_half_made(&rec.name)?;
        self.destroy_id(id, &format!("volume {}", rec.name))
    }

    fn release(&self, rec: &VolumeRecord) {
        self.forget(rec.dev_id);
        for s in rec.snapshots.values() {
            self.forget(s.dev_id);
        }
    }

    fn default_mount_point(&self, rec: &VolumeRecord) -> PathBuf {
        self.dir.join("mounts").join(&rec.name)
    }

    fn mount(&self, rec: &VolumeRecord, at: &Path) -> Result<PathBuf> {
        let dev = self.activate_volume(rec)?;
        match mounts::device_at(at)? {
            Some((major, minor)) if major == dev.device.major && minor == dev.device.minor => {
                Ok(at.to_path_buf())
            }
            Some((major, minor)) => Err(Error::busy(
                &rec.name,
                format!(
                    "{} is already the mount point of device {major}:{minor}",
                    at.display()
                ),
            )),
            None => {
                mounts::mount(&dev.path, at)?;
                Ok(at.to_path_buf())
            }
        }
    }

    fn umount(&self, _rec: &VolumeRecord, at: &Path) -> Result<()> {
        mounts::umount(at)
    }

    fn mounted_at(&self, rec: &VolumeRecord) -> Result<Option<PathBuf>> {
        let all = self.mounts_of(rec)?;
        Ok(match &rec.mount_point {
            Some(p) if all.contains(p) => Some(p.clone()),
            _ => all.into_iter().next(),
        })
    }

    fn volume_info(&self, rec: &VolumeRecord) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(
            "DevID".into(),
            rec.dev_id.map(|i| i.to_string()).unwrap_or_default(),
        );
        m.insert(
            "Device".into(),
            mapper_path(&rec.name).display().to_string(),
        );
        m.insert(
            "MountPoint".into(),
            rec.mount_point
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        m.insert("Size".into(), rec.size.to_string());
        if let Some(fs) = &rec.filesystem {
            m.insert("Filesystem".into(), fs.clone());
        }
        if let Some(req) = rec.requested_size {
            m.insert("RequestedSize".into(), req.to_string());
        }
        m
    }

    fn snapshot_info(
        &self,
        _vol: &VolumeRecord,
        snap: &SnapshotRecord,
    ) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "DevID".to_owned(),
                snap.dev_id.map(|i| i.to_string()).unwrap_or_default(),
            ),
            ("Size".to_owned(), snap.size.to_string()),
        ])
    }

    fn plan_snapshot(&self, _vol: &VolumeRecord, snap: &mut SnapshotRecord) -> Result<()> {
        snap.dev_id = Some(self.allocate()?);
        Ok(())
    }

    fn create_snapshot(&self, vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        let origin = thin_id(vol.dev_id, &vol.name)?;
        let id = thin_id(snap.dev_id, &snap.name)?;
        // Flush the mounted filesystem first (syncfs), so the suspend below has little to
        // write. The suspend inside create_snap freezes the filesystem itself (dm lockfs: the
        // kernel's freeze_bdev) for the instant of the snapshot and thaws it on resume, so the
        // snapshot is consistent. An fsfreeze around it cannot be used: the suspend's own
        // freeze of an already frozen filesystem fails with EBUSY (measured on Linux 6.1).
        if let Some(at) = self.mounted_at(vol)? {
            mounts::flush(&at)?;
        }
        self.pool.create_snap(id, origin).map_err(Error::dm(format!(
            "snapshot {} of volume {}",
            snap.name, vol.name
        )))
    }

    fn remove_snapshot(&self, _vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        match snap.dev_id {
            None => Ok(()),
            Some(id) => {
                self.remove_half_made(&snap.name)?;
                self.destroy_id(
                    thin_id(Some(id), &snap.name)?,
                    &format!("snapshot {}", snap.name),
                )
            }
        }
    }

    fn release_snapshot(&self, snap: &SnapshotRecord) {
        self.forget(snap.dev_id);
    }

    fn reconcile(&self, records: &[VolumeRecord]) -> Result<Vec<String>> {
        reconcile::reconcile(self, records)
    }

    fn backup_chunk_size(&self) -> Option<u32> {
        u32::try_from(self.block_bytes()).ok()
    }

    fn backup_source(
        &self,
        vol: &VolumeRecord,
        snap: &SnapshotRecord,
        parent: Option<&SnapshotRecord>,
    ) -> Result<BackupSource> {
        let id = thin_id(snap.dev_id, &snap.name)?;
        let parent_id = parent.map(|p| thin_id(p.dev_id, &p.name)).transpose()?;
        let ranges = {
            let _one = self.metadata.lock().unwrap_or_else(|e| e.into_inner());
            meta::with_metadata(
                &self.pool,
                &self.opts.metadata_device,
                |md| match parent_id {
                    Some(p) => meta::changed_ranges(
                        md,
                        u64::from(p.get()),
                        u64::from(id.get()),
                        self.block_bytes(),
                        snap.size,
                    ),
                    None => {
                        meta::mapped_ranges(md, u64::from(id.get()), self.block_bytes(), snap.size)
                    }
                },
            )?
        };
        let dev = self
            .pool
            .activate(id, &snap.name, Sectors(snap.size / 512))
            .map_err(Error::dm(format!(
                "activate snapshot {} of {}",
                snap.name, vol.name
            )))?;
        let file = File::open(&dev.path).map_err(|e| Error::io("open", &dev.path, e))?;
        Ok(BackupSource {
            source: std::sync::Arc::new(file),
            size: None,
            ranges,
            incremental: parent_id.is_some(),
        })
    }

    fn end_backup(&self, _vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        self.deactivate_id(
            thin_id(snap.dev_id, &snap.name)?,
            &format!("snapshot {}", snap.name),
        )
    }

    fn restore_sink(&self, rec: &VolumeRecord) -> Result<File> {
        let dev = self.activate_volume(rec)?;
        OpenOptions::new()
            .write(true)
            .open(&dev.path)
            .map_err(|e| Error::io("open for restore", &dev.path, e))
    }
}
