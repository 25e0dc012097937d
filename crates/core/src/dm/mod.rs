//! The devicemapper driver: thin volumes and snapshots in one dm-thin pool (convoy-thinpool),
//! formatted ext4 or xfs, mounted under `<root>/devicemapper/mounts/<name>` by default.
//! Thin devices are named `convoy-<pool>-thin-<id>` (`names.rs`), never after the user's
//! volumes; a snapshot is activated only while a backup reads it.

mod adopt;
mod device;
mod instant;
mod lifecycle;
mod meta;
pub(crate) mod mounts;
mod names;
mod options;
mod reconcile;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use convoy_thinpool::{
    mapper_path, IdAllocator, PoolConfig, SectorBytes, Sectors, ThinDevice, ThinId, ThinPool,
};

use crate::driver::{BackupSource, Driver};
use crate::error::{Error, Result};
use crate::guard_fill::{FillGuard, PoolFill};
use crate::records::{SnapshotRecord, VolumeRecord};

pub(crate) use options::DmOptions;

/// How long a deactivation waits for an open device to be let go before it is busy.
const BUSY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Pool-fill thresholds and the level last seen (`guard_fill.rs`).
    fill: FillGuard,
}

fn thin_id(id: Option<u32>, what: &str) -> Result<ThinId> {
    let id = id.ok_or_else(|| Error::Internal(format!("{what} has no thin id recorded")))?;
    ThinId::new(u64::from(id)).map_err(Error::dm(format!("thin id of {what}")))
}

/// The device size of a recorded size in bytes (whole pool blocks, so whole sectors; a record
/// saying otherwise is refused rather than its device cut short).
fn record_sectors(bytes: u64, what: &str) -> Result<Sectors> {
    Sectors::from_bytes(bytes).ok_or_else(|| {
        Error::Internal(format!(
            "the recorded size of {what}, {bytes} bytes, is not whole sectors"
        ))
    })
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
            self.pool.data_size().to_bytes().to_string(),
        );
        m.insert("ThinpoolBlockSize".into(), self.block_bytes().to_string());
        m.insert(
            "DefaultVolumeSize".into(),
            o.default_volume_size.to_string(),
        );
        m.insert("Filesystem".into(), o.filesystem.clone());
        if let Some(fill) = self.pool_fill() {
            m.insert("ThinpoolUsedBlocks".into(), fill.data_used.to_string());
            m.insert("ThinpoolTotalBlocks".into(), fill.data_total.to_string());
            self.fill.observe(&fill);
            fill.info(self.fill.thresholds(), &mut m);
        }
        Ok(m)
    }

    fn observe_fill(&self) {
        if let Some(fill) = self.pool_fill() {
            self.fill.observe(&fill);
        }
    }

    fn arm_events(&self) -> Option<convoy_thinpool::ArmedEvents> {
        self.pool.events().arm().ok()
    }

    fn allocated_bytes(&self, volumes: &[VolumeRecord]) -> BTreeMap<String, u64> {
        // The mapped sectors of each volume's active thin device (its status line); a volume
        // whose device is not active is left out.
        let Ok(active) = self.pool.list_active() else {
            return BTreeMap::new();
        };
        volumes
            .iter()
            .filter_map(|rec| {
                let id = thin_id(rec.dev_id, &rec.name).ok()?;
                let dev = active.iter().find(|d| d.id == id)?;
                let usage = self.pool.thin_usage(&dev.name).ok()?;
                Some((rec.name.clone(), usage.mapped.to_bytes()))
            })
            .collect()
    }

    fn load(&self, records: &[VolumeRecord]) -> Result<()> {
        let mut ids = self.ids();
        for rec in records {
            let pending = match &rec.pending {
                Some(crate::records::Pending::Revert {
                    old_dev_id,
                    new_dev_id,
                    ..
                }) => vec![Some(*old_dev_id), Some(*new_dev_id)],
                _ => Vec::new(),
            };
            let all = std::iter::once(rec.dev_id)
                .chain(rec.snapshots.values().map(|s| s.dev_id))
                .chain(pending);
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
        self.guard_fill(|| match &rec.restored_from {
            Some(url) => format!("restore of {url} into new volume {}", rec.name),
            None => format!("create volume {}", rec.name),
        })?;
        let sectors = self
            .opts
            .round_to_blocks(size.unwrap_or(self.opts.default_volume_size))?;
        rec.size = sectors.to_bytes();
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
            instant::refuse_while_filling(rec, "forget it")?;
        } else {
            // An instant restore's devices go first (the manager stopped its fill; a crash
            // may also have left them behind a record still `Creating`): the linear volume
            // device is not a thin device, which the removal below would not see.
            self.instant_remove_dm(rec, true, true)?;
        }
        if reference_only {
            return self.deactivate_id(id, &format!("volume {}", rec.name));
        }
        for snap in rec.snapshots.values() {
            self.remove_snapshot(rec, snap)?;
        }
        if let Some(crate::records::Pending::Revert {
            old_dev_id,
            new_dev_id,
            ..
        }) = &rec.pending
        {
            for other in [*old_dev_id, *new_dev_id] {
                if Some(other) != rec.dev_id {
                    let other = thin_id(Some(other), &rec.name)?;
                    self.remove_half_made(&self.device_name(other))?;
                    self.destroy_id(other, &format!("volume {} (revert)", rec.name))?;
                }
            }
        }
        // First: a device with only an inactive table (a crash between loading and resuming
        // it) holds the thin id open, and the pool refuses to delete it (busy).
        self.remove_half_made(&self.device_name(id))?;
        self.destroy_id(id, &format!("volume {}", rec.name))
    }

    fn release(&self, rec: &VolumeRecord) {
        self.forget(rec.dev_id);
        if let Some(crate::records::Pending::Revert {
            old_dev_id,
            new_dev_id,
            ..
        }) = &rec.pending
        {
            self.forget(Some(*old_dev_id));
            self.forget(Some(*new_dev_id));
        }
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
            rec.dev_id
                .and_then(|id| ThinId::new(u64::from(id)).ok())
                .map(|id| mapper_path(&self.device_name(id)).display().to_string())
                .unwrap_or_default(),
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

    fn plan_snapshot(&self, vol: &VolumeRecord, snap: &mut SnapshotRecord) -> Result<()> {
        instant::refuse_while_filling(vol, "snapshot it")?;
        self.guard_fill(|| format!("snapshot {} of volume {}", snap.name, vol.name))?;
        snap.dev_id = Some(self.allocate()?);
        Ok(())
    }

    fn create_snapshot(&self, vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        let origin = thin_id(vol.dev_id, &vol.name)?;
        let id = thin_id(snap.dev_id, &snap.name)?;
        // The suspend inside create_snap freezes a mounted filesystem itself (dm lockfs: the
        // kernel's freeze_bdev, whose freeze_super first syncs the filesystem — data, metadata
        // and journal — then blocks writers) for the instant of the snapshot and thaws it on
        // resume, so the snapshot holds everything written before the call. A separate syncfs
        // (`sync -f`) before it did the same flush a second time and started a process: it
        // was removed (docs/benchmarks.md, "lifecycle"). An fsfreeze around it cannot be
        // used: the suspend's own freeze of an already frozen filesystem fails with EBUSY
        // (measured on Linux 6.1).
        self.pool.create_snap(id, origin).map_err(Error::dm(format!(
            "snapshot {} of volume {}",
            snap.name, vol.name
        )))
    }

    fn remove_snapshot(&self, _vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        match snap.dev_id {
            None => Ok(()),
            Some(id) => {
                let id = thin_id(Some(id), &snap.name)?;
                self.remove_half_made(&self.device_name(id))?;
                self.destroy_id(id, &format!("snapshot {}", snap.name))
            }
        }
    }

    fn failed_remove_keeps_snapshot(&self) -> bool {
        // A thin device is deleted by one pool message: refused, nothing changed. (Before
        // it, only a half-made device of the snapshot's name is removed, which a ready
        // snapshot does not have.)
        true
    }

    fn release_snapshot(&self, snap: &SnapshotRecord) {
        self.forget(snap.dev_id);
    }

    fn reconcile(&self, records: &[VolumeRecord]) -> Result<Vec<String>> {
        reconcile::reconcile(self, records)
    }

    fn adopt_original(&self, store: &crate::records::RecordStore) -> Result<Vec<String>> {
        adopt::adopt_original(self, store)
    }

    fn backup_chunk_size(&self) -> Option<u32> {
        u32::try_from(self.block_bytes()).ok()
    }

    fn block_ranges(
        &self,
        snap: &SnapshotRecord,
        base: Option<&SnapshotRecord>,
    ) -> Result<(u64, Vec<std::ops::Range<u64>>)> {
        let id = u64::from(thin_id(snap.dev_id, &snap.name)?.get());
        let base_id = base
            .map(|b| thin_id(b.dev_id, &b.name).map(|i| u64::from(i.get())))
            .transpose()?;
        let block = self.block_bytes();
        let _one = self.metadata.lock().unwrap_or_else(|e| e.into_inner());
        let ranges =
            meta::with_metadata(&self.pool, &self.opts.metadata_device, |md| match base_id {
                Some(b) => meta::changed_ranges(md, b, id, block, snap.size),
                None => meta::mapped_ranges(md, id, block, snap.size),
            })?;
        Ok((block, ranges))
    }

    fn backup_source(
        &self,
        vol: &VolumeRecord,
        snap: &SnapshotRecord,
        parent: Option<&SnapshotRecord>,
    ) -> Result<BackupSource> {
        let id = thin_id(snap.dev_id, &snap.name)?;
        // The same metadata read as the SnapshotMetadata service's.
        let (_, ranges) = self.block_ranges(snap, parent)?;
        let dev = self
            .pool
            .activate(
                id,
                &self.device_name(id),
                record_sectors(snap.size, &snap.name)?,
            )
            .map_err(Error::dm(format!(
                "activate snapshot {} of {}",
                snap.name, vol.name
            )))?;
        let file = File::open(&dev.path).map_err(|e| Error::io("open", &dev.path, e))?;
        Ok(BackupSource {
            source: std::sync::Arc::new(file),
            size: None,
            ranges,
            incremental: parent.is_some(),
        })
    }

    fn end_backup(&self, _vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()> {
        self.deactivate_id(
            thin_id(snap.dev_id, &snap.name)?,
            &format!("snapshot {}", snap.name),
        )
    }

    fn plan_expand(&self, rec: &VolumeRecord, size: u64) -> Result<u64> {
        instant::refuse_while_filling(rec, "expand it")?;
        self.plan_expand_dm(rec, size)
    }

    fn expand(&self, rec: &VolumeRecord, size: u64) -> Result<()> {
        self.expand_dm(rec, size)
    }

    fn grow_filesystem(&self, rec: &VolumeRecord) -> Result<()> {
        self.grow_filesystem_dm(rec)
    }

    fn create_clone(
        &self,
        rec: &VolumeRecord,
        source: &VolumeRecord,
        snap: Option<&SnapshotRecord>,
    ) -> Result<()> {
        instant::refuse_while_filling(source, "clone it")?;
        self.create_clone_dm(rec, source, snap)
    }

    fn plan_revert(&self, vol: &VolumeRecord, _snap: &SnapshotRecord) -> Result<u32> {
        instant::refuse_while_filling(vol, "revert it")?;
        self.allocate()
    }

    fn revert_make(&self, vol: &VolumeRecord, snap: &SnapshotRecord, new_id: u32) -> Result<()> {
        self.revert_make_dm(vol, snap, new_id)
    }

    fn discard_id(&self, id: u32) -> Result<()> {
        self.discard_id_dm(id)
    }

    fn instant_target(&self, rec: &VolumeRecord, create: bool) -> Result<PathBuf> {
        self.instant_target_dm(rec, create)
    }

    fn instant_front(&self, rec: &VolumeRecord) -> Result<convoy_thinpool::FrontState> {
        self.instant_front_dm(rec)
    }

    fn instant_map(&self, rec: &VolumeRecord, backing: convoy_thinpool::Device) -> Result<()> {
        self.instant_map_dm(rec, backing)
    }

    fn instant_hand_over(&self, rec: &VolumeRecord, sync: &dyn Fn() -> Result<()>) -> Result<()> {
        self.instant_hand_over_dm(rec, sync)
    }

    fn instant_remove(&self, rec: &VolumeRecord, front: bool, hidden: bool) -> Result<()> {
        self.instant_remove_dm(rec, front, hidden)
    }

    fn restore_sink(&self, rec: &VolumeRecord) -> Result<convoy_backupstore::DirectFile> {
        let dev = self.activate_volume(rec)?;
        OpenOptions::new()
            .write(true)
            .open(&dev.path)
            .and_then(|f| convoy_backupstore::DirectFile::new(f, &dev.path))
            .map_err(|e| Error::io("open for restore", &dev.path, e))
    }
}
