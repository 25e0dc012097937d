//! A device that starts over another block device and is then handed over to a thin device
//! of this pool without being closed: what an instant restore needs. While a volume is being
//! filled its device is a `linear` mapping over a userspace device (`/dev/nbdN`, whose server
//! fills the thin device behind it); once the fill is done, [`ThinPool::hand_over_to_thin`]
//! loads a `thin` table in its place and swaps it in with one suspend/resume, so that a
//! filesystem mounted on it stays mounted and nothing of the userspace layer stays in its path.

use devicemapper::{
    DevId, Device, DmOptions, LinearDevTargetParams, LinearDevTargetTable, LinearTargetParams,
    TargetLine, TargetTable, ThinDevTargetTable, ThinTargetParams,
};

use crate::devnode::ensure_node;
use crate::dmio;
use crate::error::{dm_error, Error, Result};
use crate::names::{dm_name, validate_name};
use crate::pool::ThinPool;
use crate::thin::{resume, suspend, ThinDevice};
use crate::thin_id::ThinId;
use crate::units::Sectors;

/// What a device of a given name is now (see [`ThinPool::front_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontState {
    /// No device of that name.
    Missing,
    /// A thin device of this pool.
    Thin(ThinDevice),
    /// A device with any other table (a `linear` over `/dev/nbdN` during a fill), or none.
    Other {
        /// Its device number.
        device: Device,
        /// How many times it is open (a mounted filesystem holds it).
        open_count: u32,
        /// Whether it is suspended.
        suspended: bool,
    },
}

impl ThinPool {
    /// Creates device-mapper device `name` as a `linear` mapping of the first `size` sectors
    /// of `backing`. Answers its `/dev/mapper` path.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when `name` is taken; [`Error::InvalidSize`] for size 0;
    /// device-mapper failures (the half-made device is removed).
    pub fn activate_over(
        &self,
        name: &str,
        backing: Device,
        size: Sectors,
    ) -> Result<std::path::PathBuf> {
        validate_name(name)?;
        if *size == 0 {
            return Err(Error::invalid_size(name, size, "a device needs a size"));
        }
        let _guard = self.lock();
        if dmio::exists(&self.dm, name)? {
            return Err(Error::AlreadyExists {
                kind: "device-mapper device",
                name: name.to_owned(),
            });
        }
        let table = LinearDevTargetTable::new(vec![TargetLine::new(
            Sectors(0),
            size,
            LinearDevTargetParams::Linear(LinearTargetParams::new(backing, Sectors(0))),
        )]);
        let dm_id = DevId::Name(dm_name(name)?);
        self.dm
            .device_create(dm_name(name)?, None, DmOptions::default())
            .map_err(|e| dmio::create_error(name, e))?;
        let made = self
            .dm
            .table_load(&dm_id, &table.to_raw_table(), DmOptions::default())
            .map_err(|e| dm_error("load the linear table", name, e))
            .and_then(|_| {
                self.dm
                    .device_suspend(&dm_id, DmOptions::default())
                    .map_err(|e| dm_error("resume", name, e))
            });
        match made {
            Ok(info) => ensure_node(name, info.device()),
            Err(e) => {
                let _ = self.dm.device_remove(&dm_id, DmOptions::default());
                Err(e)
            }
        }
    }

    /// Replaces the table of device `name` (made by [`ThinPool::activate_over`], or already
    /// handed over: then this only makes sure it is resumed) with thin device `id` of this
    /// pool, `size` sectors long: the new table is loaded, the device suspended (its I/O in
    /// flight completes through the old table, a mounted filesystem is frozen) and resumed
    /// on the thin table. The caller makes sure whatever served the old table has written
    /// everything to `id` before the suspend completes (the suspend waits for that I/O).
    ///
    /// # Errors
    /// [`Error::NotFound`] when `name` does not exist; device-mapper failures (a failed resume
    /// leaves it suspended: call again).
    pub fn hand_over_to_thin(&self, name: &str, id: ThinId, size: Sectors) -> Result<ThinDevice> {
        self.hand_over_to_thin_with(name, id, size, || Ok(()))
    }

    /// [`ThinPool::hand_over_to_thin`], calling `while_suspended` after the device is
    /// suspended (its I/O drained: nothing reaches the old table any more) and before it is
    /// resumed on the thin table: the place to make what served the old table durable on
    /// the thin device (a sync of another device's page cache, which the thin table does not
    /// read). When it fails, the new table is dropped and the device resumed on its old one.
    ///
    /// # Errors
    /// As [`ThinPool::hand_over_to_thin`]; the error of `while_suspended`.
    pub fn hand_over_to_thin_with(
        &self,
        name: &str,
        id: ThinId,
        size: Sectors,
        while_suspended: impl FnOnce() -> Result<()>,
    ) -> Result<ThinDevice> {
        let _guard = self.lock();
        if !dmio::exists(&self.dm, name)? {
            return Err(Error::NotFound {
                kind: "device-mapper device",
                name: name.to_owned(),
            });
        }
        let dm_id = DevId::Name(dm_name(name)?);
        let already = self
            .thin_table(name)?
            .filter(|t| t.id == id && t.size == size);
        match already {
            Some(t) if !t.suspended => {}
            Some(_) => resume(&self.dm, name)?,
            None => {
                let table = ThinDevTargetTable::new(
                    Sectors(0),
                    size,
                    ThinTargetParams::new(self.device, id.to_dm(), None),
                );
                self.dm
                    .table_load(&dm_id, &table.to_raw_table(), DmOptions::default())
                    .map_err(|e| dm_error("load the thin table", name, e))?;
                if !dmio::info(&self.dm, name)?
                    .flags()
                    .contains(devicemapper::DmFlags::DM_SUSPEND)
                {
                    suspend(&self.dm, name)?;
                }
                if let Err(e) = while_suspended() {
                    // Back to the old table: drop the inactive one, resume.
                    let _ = self.dm.table_clear(&dm_id);
                    let _ = resume(&self.dm, name);
                    return Err(e);
                }
                resume(&self.dm, name)?;
            }
        }
        let info = dmio::info(&self.dm, name)?;
        let path = ensure_node(name, info.device())?;
        Ok(ThinDevice {
            name: name.to_owned(),
            id,
            size,
            device: info.device(),
            path,
            suspended: false,
        })
    }

    /// What device `name` is now: missing, a thin device of this pool, or another device.
    ///
    /// # Errors
    /// Device-mapper failures.
    pub fn front_state(&self, name: &str) -> Result<FrontState> {
        let _guard = self.lock();
        if !dmio::exists(&self.dm, name)? {
            return Ok(FrontState::Missing);
        }
        if let Some(t) = self.thin_table(name)? {
            return Ok(FrontState::Thin(t));
        }
        let info = dmio::info(&self.dm, name)?;
        Ok(FrontState::Other {
            device: info.device(),
            open_count: u32::try_from(info.open_count()).unwrap_or(u32::MAX),
            suspended: info.flags().contains(devicemapper::DmFlags::DM_SUSPEND),
        })
    }

    /// Removes device `name` whatever its table (a linear device of a failed instant restore).
    ///
    /// # Errors
    /// [`Error::Busy`] while it is open; device-mapper failures. A missing device is not an
    /// error.
    pub fn remove_device(&self, name: &str) -> Result<()> {
        let _guard = self.lock();
        if !dmio::exists(&self.dm, name)? {
            return Ok(());
        }
        let info = dmio::info(&self.dm, name)?;
        if info.open_count() > 0 {
            return Err(Error::Busy {
                device: name.to_owned(),
                reason: format!("it is open {} time(s) (mounted?)", info.open_count()),
            });
        }
        self.remove_thin_device(name, info.device())
    }
}
