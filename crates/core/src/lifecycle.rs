//! Volume lifecycle operations of [`VolumeManager`]: expand, clone (the source side of a
//! create) and revert, with their intent records (`Pending`) and the start-up settling of
//! those intents. See `docs/core.md`, "Expand, clone, revert".

use tokio::sync::OwnedMutexGuard;

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::guards::detached;
use crate::manager::{blocking, VolumeManager};
use crate::records::{ObjectState, Pending, RecordStore, SnapshotRecord, VolumeRecord};
use crate::types::{CreateVolumeRequest, Volume};

/// The source of a clone, locked for the time of the create.
pub(crate) struct CloneSource {
    /// The source volume's lock.
    pub guard: OwnedMutexGuard<()>,
    /// The source volume (of the snapshot, when cloning a snapshot).
    pub volume: VolumeRecord,
    /// The snapshot cloned, `None` for a clone of the volume itself.
    pub snapshot: Option<SnapshotRecord>,
}

impl CloneSource {
    /// The clone's size: that of its source.
    pub(crate) fn size(&self) -> u64 {
        self.snapshot.as_ref().map_or(self.volume.size, |s| s.size)
    }

    fn what(&self) -> String {
        match &self.snapshot {
            Some(s) => format!("snapshot {}", s.name),
            None => format!("volume {}", self.volume.name),
        }
    }

    /// Refuses another driver than the source's, and a size other than the source's.
    pub(crate) fn check(&self, driver: &str, size: Option<u64>) -> Result<()> {
        if driver != self.volume.driver {
            return Err(Error::invalid(
                "driver",
                format!(
                    "a clone of {} is made by its driver, {}, not {driver}",
                    self.what(),
                    self.volume.driver
                ),
            ));
        }
        match size {
            Some(s) if s != self.size() && self.size() != 0 => Err(Error::InvalidSize {
                value: s.to_string(),
                reason: format!(
                    "a clone has the size of its source ({} is {} bytes); omit the size and \
                     expand the clone afterwards",
                    self.what(),
                    self.size()
                ),
            }),
            _ => Ok(()),
        }
    }
}

impl VolumeManager {
    /// The source of a clone asked for by `req` (locked), `None` for other creates.
    pub(crate) async fn clone_source(
        &self,
        req: &CreateVolumeRequest,
    ) -> Result<Option<CloneSource>> {
        let (guard, volume, snapshot) = match (&req.from_snapshot, &req.from_volume) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "clone source",
                    "give a snapshot or a volume to clone, not both",
                ))
            }
            (Some(snap), None) => {
                let (guard, vol) = self.lock_snapshot_owner(snap).await?;
                let s = vol
                    .snapshots
                    .get(snap)
                    .filter(|s| s.state == ObjectState::Ready)
                    .cloned()
                    .ok_or_else(|| Error::not_found("snapshot", snap))?;
                (guard, vol, Some(s))
            }
            (None, Some(name)) => {
                let (guard, vol) = self.lock_volume(name).await?;
                (guard, vol, None)
            }
        };
        if req.backup_url.is_some() {
            return Err(Error::invalid(
                "clone source",
                "a volume is either restored from a backup or cloned, not both",
            ));
        }
        Ok(Some(CloneSource {
            guard,
            volume,
            snapshot,
        }))
    }

    /// Grows volume `name` to `size` bytes (rounded up to whole pool blocks, as a create
    /// rounds): its device, then its filesystem — online when mounted (`resize2fs`,
    /// `xfs_growfs`), through a private temporary mount otherwise. A size equal to the
    /// current one (after rounding) changes nothing.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidSize`] for a smaller size or one `create` would
    /// refuse; [`Error::Unsupported`] for the vfs driver and for a device without an ext4 or
    /// xfs filesystem; device and tool errors (a crash or a failure after the intent is
    /// finished at the next start-up).
    pub async fn expand_volume(&self, name: &str, size: u64) -> Result<Volume> {
        let (me, name) = (self.clone(), name.to_owned());
        detached("expand volume", async move {
            me.expand_volume_now(&name, size).await
        })
        .await
    }

    async fn expand_volume_now(&self, name: &str, size: u64) -> Result<Volume> {
        let (_guard, mut rec) = self.lock_volume(name).await?;
        let driver = self.driver(&rec.driver)?;
        let me = self.clone();
        let rec = blocking(move || {
            let new_size = driver.plan_expand(&rec, size)?;
            if new_size == rec.size {
                return Ok(rec);
            }
            let requested = (size != new_size).then_some(size);
            rec.pending = Some(Pending::Expand {
                size: new_size,
                requested,
            });
            me.commit(&rec)?;
            crate::crashpoint::hit("expand-after-intent");
            // A failure from here on leaves the intent: start-up (or the next expand)
            // finishes it; the device is never shrunk back under a grown filesystem.
            driver.expand(&rec, new_size)?;
            crate::crashpoint::hit("expand-before-record");
            rec.size = new_size;
            rec.requested_size = requested;
            rec.pending = None;
            me.commit(&rec)?;
            Ok(rec)
        })
        .await?;
        Ok(self.to_volume(&rec))
    }

    /// Points the volume of snapshot `name` back at the snapshot's data: its data becomes a
    /// new thin snapshot of the snapshot (devicemapper), the old data is deleted, the snapshot
    /// stays. The volume takes the snapshot's size.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Busy`] while the volume is mounted;
    /// [`Error::Unsupported`] for the vfs driver; device errors (nothing changed).
    pub async fn revert_snapshot(&self, name: &str) -> Result<Volume> {
        let (me, name) = (self.clone(), name.to_owned());
        detached("revert to snapshot", async move {
            me.revert_snapshot_now(&name).await
        })
        .await
    }

    async fn revert_snapshot_now(&self, name: &str) -> Result<Volume> {
        let (_guard, mut vol) = self.lock_snapshot_owner(name).await?;
        let snap = vol
            .snapshots
            .get(name)
            .filter(|s| s.state == ObjectState::Ready)
            .cloned()
            .ok_or_else(|| Error::not_found("snapshot", name))?;
        let driver = self.driver(&vol.driver)?;
        let me = self.clone();
        let vol = blocking(move || {
            if let Some(at) = driver.mounted_at(&vol)? {
                return Err(Error::busy(
                    &vol.name,
                    format!(
                        "it is mounted at {}; unmount it before reverting it to snapshot {}",
                        at.display(),
                        snap.name
                    ),
                ));
            }
            let new_id = driver.plan_revert(&vol, &snap)?;
            let Some(old_id) = vol.dev_id else {
                driver.discard_id(new_id)?;
                return Err(Error::Internal(format!(
                    "volume {} has no thin id",
                    vol.name
                )));
            };
            vol.pending = Some(Pending::Revert {
                snapshot: snap.name.clone(),
                old_dev_id: old_id,
                new_dev_id: new_id,
            });
            if let Err(e) = me.commit(&vol) {
                driver.discard_id(new_id)?;
                return Err(e);
            }
            crate::crashpoint::hit("revert-after-intent");
            if let Err(e) = driver.revert_make(&vol, &snap, new_id) {
                // Nothing changed: the volume still has its own data.
                vol.pending = None;
                me.commit(&vol)?;
                driver.discard_id(new_id)?;
                return Err(e);
            }
            // The switch: one atomic record write.
            vol.dev_id = Some(new_id);
            vol.size = snap.size;
            vol.requested_size = None;
            me.commit(&vol)?;
            crate::crashpoint::hit("revert-after-switch");
            driver.discard_id(old_id)?;
            vol.pending = None;
            me.commit(&vol)?;
            Ok(vol)
        })
        .await?;
        Ok(self.to_volume(&vol))
    }
}

/// Start-up: finishes an expand or a revert a crash interrupted (a revert whose switch was
/// not recorded is rolled back). A failure to finish an expand is reported and leaves the
/// intent (the volume keeps serving; the next start or expand retries); the other failures
/// stop the driver's start like any failed settling.
pub(crate) fn settle_pending(
    driver: &dyn Driver,
    store: &RecordStore,
    rec: &mut VolumeRecord,
    report: &mut Vec<String>,
) -> Result<()> {
    let Some(pending) = rec.pending.clone() else {
        return Ok(());
    };
    let name = driver.name();
    match pending {
        Pending::Expand { size, requested } => match driver.expand(rec, size) {
            Ok(()) => {
                rec.size = size;
                rec.requested_size = requested;
                rec.pending = None;
                store.save(rec)?;
                report.push(format!(
                    "{name}: finished the expand of volume {} to {size} bytes, interrupted by \
                     a crash",
                    rec.name
                ));
            }
            Err(e) => report.push(format!(
                "{name}: could not finish the expand of volume {} to {size} bytes: {e} (run \
                 convoy expand again)",
                rec.name
            )),
        },
        Pending::Revert {
            snapshot,
            old_dev_id,
            new_dev_id,
        } => {
            let (drop_id, what) = if rec.dev_id == Some(new_dev_id) {
                (old_dev_id, "finished")
            } else {
                (new_dev_id, "rolled back")
            };
            driver.discard_id(drop_id)?;
            rec.pending = None;
            store.save(rec)?;
            report.push(format!(
                "{name}: {what} the revert of volume {} to snapshot {snapshot}, interrupted by \
                 a crash",
                rec.name
            ));
        }
    }
    Ok(())
}
