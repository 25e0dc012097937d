//! The devicemapper side of an instant restore (`crate::instant`, `docs/instant.md`).
//!
//! While a volume is filled, its thin device is active under a hidden name
//! (`convoy-<pool>-fill-<id>`, only the daemon opens it) and the volume's own device name
//! (`convoy-<pool>-thin-<id>`, what users mount) is a `linear` mapping of the `/dev/nbdN`
//! the daemon serves; when the fill is complete the volume's device is handed over to the
//! thin device in place (one table swap) and the hidden device removed.

use convoy_thinpool::{mapper_path, Device, FrontState, ThinDevice};

use super::*;

/// Why an operation waits for the fill to end.
pub(super) fn refuse_while_filling(rec: &VolumeRecord, what: &str) -> Result<()> {
    match &rec.instant {
        None => Ok(()),
        Some(fill) => Err(Error::busy(
            &rec.name,
            format!(
                "an instant restore of {} is still filling it; {what} once `convoy inspect {}` \
                 no longer shows InstantRestore",
                crate::backups::redact_urls(&fill.backup_url),
                rec.name
            ),
        )),
    }
}

impl DmDriver {
    /// The hidden name of a filling volume's thin device.
    pub(super) fn fill_name(&self, id: ThinId) -> String {
        names::fill_device_name(self.pool.name(), id)
    }

    /// The device of a volume being filled: its linear mapping while the fill serves it,
    /// its thin device once handed over. `Unavailable` while nothing serves it (the daemon
    /// has not resumed the fill yet): the thin device alone is not the volume's data yet.
    pub(super) fn filling_device(&self, rec: &VolumeRecord) -> Result<ThinDevice> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        let name = self.device_name(id);
        match self.instant_front(rec)? {
            FrontState::Thin(t) => Ok(t),
            FrontState::Other { device, .. } => Ok(ThinDevice {
                path: mapper_path(&name),
                name,
                id,
                size: record_sectors(rec.size, &rec.name)?,
                device,
                suspended: false,
            }),
            FrontState::Missing => Err(Error::busy(
                &rec.name,
                format!(
                    "it is being restored instantly and its fill is not serving it yet (the \
                     daemon resumes it at start-up; `convoy inspect {}` says why it waits)",
                    rec.name
                ),
            )),
        }
    }

    pub(super) fn instant_target_dm(&self, rec: &VolumeRecord, create: bool) -> Result<PathBuf> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        if create {
            self.pool.create_thin(id).map_err(Error::dm(format!(
                "create thin device for volume {}",
                rec.name
            )))?;
        }
        let hidden = self.fill_name(id);
        match self
            .pool
            .activate(id, &hidden, record_sectors(rec.size, &rec.name)?)
        {
            Ok(dev) => Ok(dev.path),
            Err(convoy_thinpool::Error::AlreadyExists { .. }) if !create => {
                Ok(mapper_path(&hidden))
            }
            Err(e) => {
                if create {
                    let _ = self.destroy_id(id, &rec.name);
                }
                Err(Error::dm(format!(
                    "activate the thin device of volume {} for its fill",
                    rec.name
                ))(e))
            }
        }
    }

    pub(super) fn instant_front_dm(&self, rec: &VolumeRecord) -> Result<FrontState> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        self.pool
            .front_state(&self.device_name(id))
            .map_err(Error::dm(format!(
                "look up the device of volume {}",
                rec.name
            )))
    }

    pub(super) fn instant_map_dm(&self, rec: &VolumeRecord, backing: Device) -> Result<()> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        self.pool
            .activate_over(
                &self.device_name(id),
                backing,
                record_sectors(rec.size, &rec.name)?,
            )
            .map(drop)
            .map_err(Error::dm(format!(
                "map volume {} over {}:{}",
                rec.name, backing.major, backing.minor
            )))
    }

    pub(super) fn instant_hand_over_dm(
        &self,
        rec: &VolumeRecord,
        sync: &dyn Fn() -> Result<()>,
    ) -> Result<()> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        let mut failed = None;
        let handed = self.pool.hand_over_to_thin_with(
            &self.device_name(id),
            id,
            record_sectors(rec.size, &rec.name)?,
            || {
                sync().map_err(|e| {
                    let text = e.to_string();
                    failed = Some(e);
                    convoy_thinpool::Error::Busy {
                        device: rec.name.clone(),
                        reason: text,
                    }
                })
            },
        );
        match (handed, failed) {
            (Ok(_), _) => Ok(()),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(Error::dm(format!(
                "hand volume {} over to its thin device",
                rec.name
            ))(e)),
        }
    }

    pub(super) fn instant_remove_dm(
        &self,
        rec: &VolumeRecord,
        front: bool,
        hidden: bool,
    ) -> Result<()> {
        let id = thin_id(rec.dev_id, &rec.name)?;
        if front {
            if let FrontState::Other { .. } = self.instant_front(rec)? {
                self.pool
                    .remove_device(&self.device_name(id))
                    .map_err(Error::dm(format!(
                        "remove the device of volume {}",
                        rec.name
                    )))?;
            }
        }
        if !hidden {
            return Ok(());
        }
        let hidden = self.fill_name(id);
        super::device::with_busy_grace(|| self.pool.remove_device(&hidden)).map_err(Error::dm(
            format!("remove the fill device of volume {}", rec.name),
        ))
    }
}
