//! The driver's own state: opening the pool, thin ids, activation and deactivation of devices.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::*;

impl DmDriver {
    /// Opens (or creates) the pool named by the options.
    pub(crate) fn new(root: &Path, opts: &BTreeMap<String, String>) -> Result<Self> {
        let opts = DmOptions::parse(opts)?;
        names::check_pool_name(&opts.pool_name)?;
        check_pool_device("dm.datadev", &opts.data_device)?;
        check_pool_device("dm.metadatadev", &opts.metadata_device)?;
        let config = PoolConfig::new(&opts.data_device, &opts.metadata_device)
            .with_name(&opts.pool_name)
            .with_block_size(opts.block_size)
            // The kernel's low-water event then marks the crossing of dm.fillwarn (data).
            .with_low_water_free_percent(100 - opts.fill.warn.min(100));
        let (pool, _action) = ThinPool::setup(config)
            .map_err(Error::dm(format!("set up pool {}", opts.pool_name)))?;
        Ok(DmDriver {
            dir: root.join(DEVICEMAPPER),
            fill: FillGuard::new(&opts.pool_name, opts.fill),
            opts,
            pool,
            ids: Mutex::new(IdAllocator::new([])),
            metadata: Mutex::new(()),
        })
    }

    /// The pool's data and metadata fill, when its status can be read (a pool in `Fail` has
    /// none; the operation then fails on its own).
    pub(super) fn pool_fill(&self) -> Option<PoolFill> {
        let s = self.pool.status().ok()?;
        Some(PoolFill {
            data_used: s.data.used.0,
            data_total: s.data.total.0,
            meta_used: s.metadata.used.0,
            meta_total: s.metadata.total.0,
        })
    }

    /// The pool-fill guard: refuses `what` when the pool is filled past `dm.fillrefuse`.
    pub(super) fn guard_fill(&self, what: impl FnOnce() -> String) -> Result<()> {
        match self.pool_fill() {
            Some(fill) => self.fill.check(&fill, &what()),
            None => Ok(()),
        }
    }

    pub(super) fn ids(&self) -> MutexGuard<'_, IdAllocator> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn block_bytes(&self) -> u64 {
        self.opts.block_size.sectors().to_bytes()
    }

    pub(super) fn allocate(&self) -> Result<u32> {
        let id = self
            .ids()
            .allocate()
            .map_err(Error::dm("allocate a thin id"))?;
        Ok(id.get())
    }

    pub(super) fn forget(&self, id: Option<u32>) {
        if let Some(id) = id.and_then(|i| ThinId::new(u64::from(i)).ok()) {
            self.ids().release(id);
        }
    }

    /// The device-mapper name of thin id `id`.
    pub(super) fn device_name(&self, id: ThinId) -> String {
        names::thin_device_name(self.pool.name(), id)
    }

    /// Activates a volume's device (idempotent).
    pub(super) fn activate_volume(&self, rec: &VolumeRecord) -> Result<ThinDevice> {
        if rec.instant.is_some() {
            return self.filling_device(rec);
        }
        let id = thin_id(rec.dev_id, &rec.name)?;
        let name = self.device_name(id);
        let size = record_sectors(Self::wanted_size(rec), &rec.name)?;
        match self.pool.activate(id, &name, size) {
            // An expand a crash interrupted may have grown the device already (or not yet):
            // the expand's size is what it gets.
            Err(convoy_thinpool::Error::AlreadyExists { .. }) if rec.pending.is_some() => {
                self.pool.resize(&name, size)
            }
            other => other,
        }
        .map_err(Error::dm(format!("activate volume {}", rec.name)))
    }

    /// Deactivates every active device of `id`; a missing device is fine. A device that is
    /// open is given [`BUSY_GRACE`] to be let go before the busy error stands: a process that
    /// is dying (an `mkfs` killed with a crashed daemon by its parent-death signal, found by
    /// the next start's reconciliation) or a udev probe holds a device open for a moment.
    pub(super) fn deactivate_id(&self, id: ThinId, what: &str) -> Result<()> {
        let active = self
            .pool
            .find_active(id)
            .map_err(Error::dm(format!("look up devices of {what}")))?;
        for dev in active {
            with_busy_grace(|| self.pool.deactivate(&dev.name))
                .map_err(Error::dm(format!("deactivate {what}")))?;
        }
        Ok(())
    }

    /// Deactivates and deletes thin `id`; a missing id is fine.
    pub(super) fn destroy_id(&self, id: ThinId, what: &str) -> Result<()> {
        self.deactivate_id(id, what)?;
        match self.pool.delete(id) {
            Ok(()) | Err(convoy_thinpool::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::dm(format!("delete {what}"))(e)),
        }
    }

    /// Mount points of a volume's active device.
    pub(super) fn mounts_of(&self, rec: &VolumeRecord) -> Result<Vec<PathBuf>> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        let mut out = Vec::new();
        if rec.instant.is_some() {
            if let convoy_thinpool::FrontState::Other { device, .. } = self.instant_front_dm(rec)? {
                out.extend(mounts::mount_points_of(device.major, device.minor)?);
            }
        }
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
    pub(super) fn remove_half_made(&self, name: &str) -> Result<()> {
        self.pool
            .remove_half_made(name)
            .map(drop)
            .map_err(Error::dm(format!("remove the half-made device {name}")))
    }
}

/// Runs `op` until it is not refused as busy, for at most [`BUSY_GRACE`].
pub(super) fn with_busy_grace(
    mut op: impl FnMut() -> convoy_thinpool::Result<()>,
) -> convoy_thinpool::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_GRACE;
    loop {
        match op() {
            Err(convoy_thinpool::Error::Busy { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            outcome => return outcome,
        }
    }
}

/// Refuses a pool device that does not exist or is not a block device, naming the option and
/// the usual ways to get one, before device-mapper is asked.
fn check_pool_device(option: &str, path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let how = "convoy-partition DISK splits a spare disk into both devices, cargo xtask \
               dev-pool makes loop devices for development (see docs/setup.md)";
    match std::fs::metadata(path) {
        // A missing disk is a pool that cannot start (unplugged, not yet attached), not a
        // mistyped option: the driver comes up degraded when other drivers can serve.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::DriverDegraded {
            driver: DEVICEMAPPER.into(),
            reason: format!(
                "pool device {option}={} does not exist; {how}",
                path.display()
            ),
        }),
        Err(e) => Err(Error::invalid(
            format!("driver option {option}"),
            format!("{} cannot be examined: {e}", path.display()),
        )),
        Ok(m) if !m.file_type().is_block_device() => Err(Error::invalid(
            format!("driver option {option}"),
            format!(
                "{} is not a block device{}; {how}",
                path.display(),
                if m.is_file() {
                    " (a regular file: attach it with `losetup -f --show FILE` and give the \
                     loop device)"
                } else {
                    ""
                }
            ),
        )),
        Ok(_) => Ok(()),
    }
}
