//! Expand, clone and revert for the devicemapper driver. Everything here is a metadata
//! operation of the pool (a table reload, a thin snapshot) plus a filesystem grow or a new xfs
//! UUID; no data is copied. The manager records the intent before and the result after
//! (`crate::lifecycle`).

use std::path::{Path, PathBuf};

use convoy_thinpool::{SectorBytes, ThinDevice};

use crate::error::{Error, Result};
use crate::records::{Pending, SnapshotRecord, VolumeRecord};

use super::{mounts, record_sectors, thin_id, DmDriver};

/// The filesystem on a volume's device: the recorded one (made by convoy, or a clone's), or
/// what `blkid` finds (a restored volume records none). Saves a process start per call.
fn fs_of(rec: &VolumeRecord, dev: &ThinDevice) -> Result<Option<String>> {
    match &rec.filesystem {
        Some(fs) => Ok(Some(fs.clone())),
        None => mounts::filesystem_of(&dev.path),
    }
}

/// Filesystems the driver can grow.
fn growable(fs: &str) -> bool {
    matches!(fs, "ext4" | "ext3" | "ext2" | "xfs")
}

impl DmDriver {
    /// The size the volume's device should have now: an expand under way wins.
    pub(super) fn wanted_size(rec: &VolumeRecord) -> u64 {
        match &rec.pending {
            Some(Pending::Expand { size, .. }) => (*size).max(rec.size),
            _ => rec.size,
        }
    }

    /// A private directory for a temporary mount of volume `name`.
    fn temp_mount_point(&self, name: &str) -> PathBuf {
        self.dir.join("tmp").join(name)
    }

    /// Runs `work` with the filesystem on `dev` mounted at a private temporary place, then
    /// unmounts it (also when `work` fails).
    fn with_temp_mount<T>(
        &self,
        name: &str,
        dev: &Path,
        options: &str,
        work: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        let at = self.temp_mount_point(name);
        // A crash may have left it mounted: unmount first (failure means it was not).
        if mounts::device_at(&at)?.is_some() {
            mounts::umount(&at)?;
        }
        mounts::mount_with(dev, &at, options)?;
        let out = work(&at);
        let unmounted = mounts::umount(&at);
        let _ = std::fs::remove_dir(&at);
        let out = out?;
        unmounted?;
        Ok(out)
    }

    pub(super) fn plan_expand_dm(&self, rec: &VolumeRecord, size: u64) -> Result<u64> {
        let new = self.opts.round_to_blocks(size)?.to_bytes();
        if new < rec.size {
            return Err(Error::InvalidSize {
                value: size.to_string(),
                reason: format!(
                    "volume {} is {} bytes; a volume can only grow (shrinking would cut its \
                     filesystem)",
                    rec.name, rec.size
                ),
            });
        }
        let dev = self.activate_volume(rec)?;
        match fs_of(rec, &dev)? {
            Some(fs) if growable(&fs) => Ok(new),
            found => Err(Error::Unsupported {
                what: format!("expanding volume {}", rec.name),
                why: format!(
                    "its device holds {}; only ext4 and xfs are grown",
                    found.unwrap_or_else(|| "no filesystem blkid knows".into())
                ),
            }),
        }
    }

    /// Grows the device of `rec` to `size` bytes (activating it if needed).
    fn grow_device(&self, rec: &VolumeRecord, size: u64) -> Result<ThinDevice> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        let name = self.device_name(id);
        let sectors = record_sectors(size, &rec.name)?;
        match self.pool.activate(id, &name, sectors) {
            Err(convoy_thinpool::Error::AlreadyExists { .. }) => self.pool.resize(&name, sectors),
            other => other,
        }
        .map_err(Error::dm(format!("grow the device of volume {}", rec.name)))
    }

    /// Grows the filesystem on `dev` to fill it: online where it is mounted, through a
    /// private temporary mount otherwise.
    fn grow_fs(&self, rec: &VolumeRecord, dev: &ThinDevice) -> Result<()> {
        let Some(fs) = fs_of(rec, dev)? else {
            return Err(Error::Unsupported {
                what: format!("growing the filesystem of volume {}", rec.name),
                why: "its device holds no filesystem blkid knows".into(),
            });
        };
        let mounted = mounts::mount_points_of(dev.device.major, dev.device.minor)?
            .into_iter()
            .next();
        match mounted {
            Some(at) => mounts::grow_mounted(&fs, &dev.path, &at),
            None => {
                // xfs grows only mounted; ext4 offline would need a full e2fsck first. One
                // path for both: a private mount (`nouuid` so that an xfs restored next to
                // its mounted origin mounts too).
                let options = if fs == "xfs" { "nouuid" } else { "defaults" };
                self.with_temp_mount(&rec.name, &dev.path, options, |at| {
                    mounts::grow_mounted(&fs, &dev.path, at)
                })
            }
        }
    }

    pub(super) fn expand_dm(&self, rec: &VolumeRecord, size: u64) -> Result<()> {
        let dev = self.grow_device(rec, size)?;
        crate::crashpoint::hit("expand-after-device");
        self.grow_fs(rec, &dev)
    }

    pub(super) fn grow_filesystem_dm(&self, rec: &VolumeRecord) -> Result<()> {
        let dev = self.grow_device(rec, rec.size)?;
        self.grow_fs(rec, &dev)
    }

    /// An xfs clone gets a new filesystem UUID, so that it mounts next to its origin.
    /// `xfs_admin` does not change the UUID of a filesystem whose log needs replaying (a
    /// snapshot of a mounted xfs; seen to exit 0 all the same on Linux 6.1 / xfsprogs 6.1): a
    /// private `nouuid` mount and unmount replay the log first, and the change is checked.
    fn fresh_xfs_uuid(&self, rec: &VolumeRecord, dev: &ThinDevice) -> Result<()> {
        let name = &rec.name;
        if fs_of(rec, dev)?.as_deref() != Some("xfs") {
            return Ok(());
        }
        let before = mounts::uuid_of(&dev.path)?;
        self.with_temp_mount(name, &dev.path, "nouuid", |_| Ok(()))?;
        mounts::xfs_new_uuid(&dev.path)?;
        let after = mounts::uuid_of(&dev.path)?;
        if after == before {
            return Err(Error::Internal(format!(
                "xfs_admin -U generate left the UUID of clone {name} at {before}"
            )));
        }
        Ok(())
    }

    pub(super) fn create_clone_dm(
        &self,
        rec: &VolumeRecord,
        source: &VolumeRecord,
        snap: Option<&SnapshotRecord>,
    ) -> Result<()> {
        let origin = match snap {
            Some(s) => thin_id(s.dev_id, &s.name)?,
            None => thin_id(source.dev_id, &source.name)?,
        };
        let id = thin_id(rec.dev_id, &rec.name)?;
        // The pool suspends the origin's active device around the message, which freezes a
        // mounted filesystem for that instant: the clone is crash-consistent.
        self.pool
            .create_snap(id, origin)
            .map_err(Error::dm(format!(
                "clone {} into volume {}",
                snap.map_or(&source.name, |s| &s.name),
                rec.name
            )))?;
        crate::crashpoint::hit("clone-after-snap");
        let made = self
            .activate_volume(rec)
            .and_then(|dev| self.fresh_xfs_uuid(rec, &dev));
        if let Err(e) = made {
            let _ = self.destroy_id(id, &rec.name);
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn revert_make_dm(
        &self,
        vol: &VolumeRecord,
        snap: &SnapshotRecord,
        new_id: u32,
    ) -> Result<()> {
        let old = thin_id(vol.dev_id, &vol.name)?;
        let new = thin_id(Some(new_id), &vol.name)?;
        let from = thin_id(snap.dev_id, &snap.name)?;
        self.deactivate_id(old, &format!("volume {}", vol.name))?;
        let made = self
            .pool
            .create_snap(new, from)
            .map_err(Error::dm(format!(
                "revert volume {} to snapshot {}",
                vol.name, snap.name
            )))
            .and_then(|()| {
                crate::crashpoint::hit("revert-after-snap");
                self.pool
                    .activate(
                        new,
                        &self.device_name(new),
                        record_sectors(snap.size, &snap.name)?,
                    )
                    .map_err(Error::dm(format!("activate reverted volume {}", vol.name)))
            });
        if let Err(e) = made {
            let _ = self.destroy_id(new, &format!("volume {} (reverted copy)", vol.name));
            let _ = self.activate_volume(vol);
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn discard_id_dm(&self, id: u32) -> Result<()> {
        let tid = thin_id(Some(id), "thin id")?;
        self.remove_half_made(&self.device_name(tid))?;
        self.destroy_id(tid, &format!("thin id {id}"))?;
        self.forget(Some(id));
        Ok(())
    }
}
