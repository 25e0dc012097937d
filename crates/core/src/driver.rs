//! The driver interface the manager drives. Methods are blocking (the manager calls them on
//! blocking threads) and never touch records: the manager writes the intent before calling a
//! method that makes something, and the completion after it returns (see `docs/core.md`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use convoy_backupstore::BlockSource;

use crate::error::{Error, Result};
use crate::records::{SnapshotRecord, VolumeRecord};

/// What a backup reads: an open snapshot and the byte ranges to read from it.
pub(crate) struct BackupSource {
    /// The snapshot's content (a block device opened read-only, or a vfs tree image).
    pub source: Arc<dyn BlockSource>,
    /// The content's size when it is not the snapshot's recorded size (vfs images).
    pub size: Option<u64>,
    /// Ranges to read, bytes, ascending, merged.
    pub ranges: Vec<Range<u64>>,
    /// Whether the ranges are a delta against the parent snapshot.
    pub incremental: bool,
}

/// A volume driver.
pub(crate) trait Driver: Send + Sync {
    /// `devicemapper` or `vfs`.
    fn name(&self) -> &'static str;

    /// The driver's `info` section.
    fn info(&self) -> Result<BTreeMap<String, String>>;

    /// Reads the pool's fill and logs a threshold crossing (`guard_fill.rs`); drivers without
    /// a pool do nothing.
    fn observe_fill(&self) {}

    /// Starts watching the driver's device-mapper events (see
    /// [`crate::VolumeManager::arm_pool_events`]); drivers without a pool answer `None`.
    fn arm_events(&self) -> Option<convoy_thinpool::ArmedEvents> {
        None
    }

    /// Bytes of the pool allocated to each of `volumes` (its mapped blocks), by volume name,
    /// for those the driver can tell; drivers without a pool answer nothing.
    fn allocated_bytes(&self, _volumes: &[VolumeRecord]) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }

    /// Marks the ids and paths of existing records as used (called once at start-up).
    fn load(&self, _records: &[VolumeRecord]) -> Result<()> {
        Ok(())
    }

    /// Takes over what the original Convoy (0.5.x) left under the root for this driver, before
    /// the records are loaded: writes convoy's records for its volumes and retires its files
    /// (`original.rs`). Returns report lines; refuses (changing nothing) what it cannot adopt
    /// safely.
    fn adopt_original(&self, _store: &crate::records::RecordStore) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Fills in what a new volume will be (id or path, size) without making anything.
    fn plan_volume(&self, rec: &mut VolumeRecord, size: Option<u64>) -> Result<()>;

    /// Makes the planned volume (formatted unless `format` is false, for a restore). On failure
    /// it removes whatever it made before returning the error.
    fn create_volume(&self, rec: &VolumeRecord, format: bool) -> Result<()>;

    /// Removes a volume and its snapshots (`reference_only`: forgets it but keeps the data).
    /// Idempotent: parts already gone are skipped.
    fn remove_volume(&self, rec: &VolumeRecord, reference_only: bool) -> Result<()>;

    /// Forgets the ids a volume and its snapshots used (after its record is gone or a plan
    /// was abandoned).
    fn release(&self, _rec: &VolumeRecord) {}

    /// Where a volume is mounted when no mount point is given.
    fn default_mount_point(&self, rec: &VolumeRecord) -> PathBuf;

    /// Mounts a volume at `at` (idempotent). Returns the mount point to report.
    fn mount(&self, rec: &VolumeRecord, at: &Path) -> Result<PathBuf>;

    /// Unmounts a volume from `at` (idempotent).
    fn umount(&self, rec: &VolumeRecord, at: &Path) -> Result<()>;

    /// Where the volume is mounted now, read from the system.
    fn mounted_at(&self, rec: &VolumeRecord) -> Result<Option<PathBuf>>;

    /// `DriverInfo` of a volume.
    fn volume_info(&self, rec: &VolumeRecord) -> BTreeMap<String, String>;

    /// `DriverInfo` of a snapshot.
    fn snapshot_info(&self, vol: &VolumeRecord, snap: &SnapshotRecord) -> BTreeMap<String, String>;

    /// Fills in what a new snapshot will be, without making anything.
    fn plan_snapshot(&self, vol: &VolumeRecord, snap: &mut SnapshotRecord) -> Result<()>;

    /// Makes the planned snapshot; on failure removes what it made.
    fn create_snapshot(&self, vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()>;

    /// Removes a snapshot (idempotent).
    fn remove_snapshot(&self, vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<()>;

    /// Whether a failed [`Driver::remove_snapshot`] leaves the snapshot whole (one atomic
    /// step that was refused), so that it can be made ready again instead of staying
    /// `Deleting` until start-up finishes the delete.
    fn failed_remove_keeps_snapshot(&self) -> bool {
        false
    }

    /// Forgets the id a snapshot used.
    fn release_snapshot(&self, _snap: &SnapshotRecord) {}

    /// Start-up: brings the system in line with the records (re-activates, re-mounts), and
    /// removes objects no record names. Records in `Creating`/`Deleting` state have been
    /// settled by the manager before this is called. Returns one line per action taken.
    fn reconcile(&self, records: &[VolumeRecord]) -> Result<Vec<String>>;

    /// Backup chunk size that matches the driver's block size, if it has one.
    fn backup_chunk_size(&self) -> Option<u32> {
        None
    }

    /// The pool's block size and the byte ranges of `snap` that hold data, or (with `base`,
    /// a snapshot of the same volume) that differ from `base` — without activating anything.
    fn block_ranges(
        &self,
        snap: &SnapshotRecord,
        _base: Option<&SnapshotRecord>,
    ) -> Result<(u64, Vec<std::ops::Range<u64>>)> {
        Err(Error::Unsupported {
            what: format!("block metadata of snapshot {}", snap.name),
            why: format!("the {} driver has no block metadata", self.name()),
        })
    }

    /// Opens a snapshot for a backup: every mapped range, or the ranges changed since
    /// `parent` when it is given.
    fn backup_source(
        &self,
        _vol: &VolumeRecord,
        snap: &SnapshotRecord,
        _parent: Option<&SnapshotRecord>,
    ) -> Result<BackupSource> {
        Err(Error::Unsupported {
            what: format!("backup of snapshot {}", snap.name),
            why: format!("the {} driver has no block backups", self.name()),
        })
    }

    /// Closes what [`Driver::backup_source`] opened.
    fn end_backup(&self, _vol: &VolumeRecord, _snap: &SnapshotRecord) -> Result<()> {
        Ok(())
    }

    /// Instant restore: makes a new volume's storage (devicemapper: its thin device) without
    /// giving the volume a device, or (`create` false, at a resume) activates it again.
    /// Returns the path an instant restore fills.
    fn instant_target(&self, rec: &VolumeRecord, _create: bool) -> Result<PathBuf> {
        Err(Error::Unsupported {
            what: format!("instant restore into volume {}", rec.name),
            why: format!(
                "the {} driver has no block devices; restore without --instant",
                self.name()
            ),
        })
    }

    /// Instant restore: what the volume's device is now.
    fn instant_front(&self, rec: &VolumeRecord) -> Result<convoy_thinpool::FrontState> {
        Err(Error::Internal(format!(
            "{} has no instant restore",
            rec.name
        )))
    }

    /// Instant restore: makes the volume's device a mapping of block device `backing`.
    fn instant_map(&self, rec: &VolumeRecord, _backing: convoy_thinpool::Device) -> Result<()> {
        Err(Error::Internal(format!(
            "{} has no instant restore",
            rec.name
        )))
    }

    /// Instant restore: turns the volume's device into its own storage's, with `sync` called
    /// while the device is suspended (makes what the fill wrote durable there).
    fn instant_hand_over(&self, rec: &VolumeRecord, _sync: &dyn Fn() -> Result<()>) -> Result<()> {
        Err(Error::Internal(format!(
            "{} has no instant restore",
            rec.name
        )))
    }

    /// Instant restore: removes the devices the fill used: with `front` the volume's device
    /// when it still maps something else, with `hidden` the target's own. Idempotent.
    fn instant_remove(&self, rec: &VolumeRecord, _front: bool, _hidden: bool) -> Result<()> {
        Err(Error::Internal(format!(
            "{} has no instant restore",
            rec.name
        )))
    }

    /// Opens a (new, unformatted) volume for writing a restore into, with direct I/O where
    /// the device or filesystem takes it (see [`convoy_backupstore::DirectFile`]).
    fn restore_sink(&self, rec: &VolumeRecord) -> Result<convoy_backupstore::DirectFile> {
        Err(Error::Unsupported {
            what: format!("restore into volume {}", rec.name),
            why: format!("the {} driver has no block restores", self.name()),
        })
    }

    /// Completes a restore after the backup was written into [`Driver::restore_sink`]'s file
    /// (vfs: builds the tree from the restored image). `size` is the backup's volume size. On
    /// error the manager removes the volume.
    fn finish_restore(&self, _rec: &VolumeRecord, _size: u64) -> Result<()> {
        Ok(())
    }

    /// Lifecycle (`lifecycle.rs`): the size a volume grows to when `size` bytes are asked
    /// (rounded as a create rounds it). Refuses a shrink or a size `create --size` would refuse.
    fn plan_expand(&self, rec: &VolumeRecord, _size: u64) -> Result<u64> {
        Err(Error::Unsupported {
            what: format!("expanding volume {}", rec.name),
            why: format!("not supported by the {} driver", self.name()),
        })
    }

    /// Grows the volume's device to `size` bytes and its filesystem to fill it (online when
    /// mounted). Idempotent: start-up calls it again to finish an expand a crash interrupted.
    fn expand(&self, rec: &VolumeRecord, _size: u64) -> Result<()> {
        Err(Error::Unsupported {
            what: format!("expanding volume {}", rec.name),
            why: format!("not supported by the {} driver", self.name()),
        })
    }

    /// Grows the filesystem of a (just restored, unmounted) volume to fill its device.
    fn grow_filesystem(&self, rec: &VolumeRecord) -> Result<()> {
        Err(Error::Unsupported {
            what: format!("growing the filesystem of volume {}", rec.name),
            why: format!("not supported by the {} driver", self.name()),
        })
    }

    /// Makes the planned volume `rec` as a clone of `snap` of `source` (of `source` itself
    /// when `snap` is `None`). On failure removes what it made.
    fn create_clone(
        &self,
        rec: &VolumeRecord,
        _source: &VolumeRecord,
        _snap: Option<&SnapshotRecord>,
    ) -> Result<()> {
        Err(Error::Unsupported {
            what: format!("cloning into volume {}", rec.name),
            why: format!("not supported by the {} driver", self.name()),
        })
    }

    /// Revert, step 1: a new id for the volume's data (devicemapper), without making anything.
    fn plan_revert(&self, vol: &VolumeRecord, snap: &SnapshotRecord) -> Result<u32> {
        Err(Error::Unsupported {
            what: format!("reverting volume {} to snapshot {}", vol.name, snap.name),
            why: format!("not supported by the {} driver", self.name()),
        })
    }

    /// Revert, step 2: makes `new_id` a copy of `snap` (the volume, unmounted, still points at
    /// its old data). On failure removes what it made.
    fn revert_make(&self, vol: &VolumeRecord, snap: &SnapshotRecord, _new_id: u32) -> Result<()> {
        Err(Error::Unsupported {
            what: format!("reverting volume {} to snapshot {}", vol.name, snap.name),
            why: format!("not supported by the {} driver", self.name()),
        })
    }

    /// Removes a thin id a revert made or replaced (idempotent), and forgets it.
    fn discard_id(&self, _id: u32) -> Result<()> {
        Ok(())
    }
}
