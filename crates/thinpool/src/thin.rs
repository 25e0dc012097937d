//! Thin devices of a pool: create, snapshot, delete (pool messages on ids) and activate,
//! deactivate, list (device-mapper devices with a `thin` table over the pool).
//!
//! Which devices are active is never cached: it is read from the kernel (every dm device whose
//! table is `thin <this pool> <id>`), so it stays right across daemon restarts.

use std::path::PathBuf;

use devicemapper::{
    DevId, Device, DmError, DmFlags, DmOptions, TargetTable, ThinDevTargetTable, ThinTargetParams,
};
use nix::errno::Errno;

use crate::devnode::{ensure_node, remove_node};
use crate::dmio::{self, raw_table_text};
use crate::error::{dm_error, errno_of, Error, Result};
use crate::names::{dm_name, validate_name};
use crate::pool::ThinPool;
use crate::status::{parse_thin_status, PoolMode, ThinState, ThinUsage};
use crate::thin_id::ThinId;
use crate::units::Sectors;

/// An active thin device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThinDevice {
    /// Device-mapper name.
    pub name: String,
    /// Thin id inside the pool.
    pub id: ThinId,
    /// Virtual size.
    pub size: Sectors,
    /// The device's `major:minor`.
    pub device: Device,
    /// Stable path: `/dev/mapper/<name>` (created by this crate when udev does not).
    pub path: PathBuf,
    /// The device is suspended (I/O to it waits). Only a crash between the suspend and the
    /// resume of [`ThinPool::create_snap`] leaves one so; [`ThinPool::resume_suspended`]
    /// recovers.
    pub suspended: bool,
}

impl ThinDevice {
    /// The kernel's own node for the device, `/dev/dm-<minor>` (not stable across
    /// re-activation; prefer [`ThinDevice::path`]).
    pub fn dm_path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/dm-{}", self.device.minor))
    }
}

impl ThinPool {
    /// Create a new, empty thin device with id `id` in the pool's metadata (not activated).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the id exists; [`Error::PoolFull`] when the pool is out of
    /// data space; [`Error::PoolReadOnly`]; [`Error::MetadataFull`]; [`Error::Failed`].
    pub fn create_thin(&self, id: ThinId) -> Result<()> {
        let _guard = self.lock();
        self.ensure_writable()?;
        let msg = format!("create_thin {id}");
        self.message(&msg)
            .map_err(|e| self.message_error(&msg, &self.subject(id), e))
    }

    /// Create `snapshot` as a snapshot of `origin`. Every active device of `origin` is suspended
    /// (flushing and freezing a mounted filesystem) around the message and resumed afterwards,
    /// also when the message fails.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when `snapshot` exists; [`Error::NotFound`] when `origin` does
    /// not; [`Error::PoolFull`]; [`Error::PoolReadOnly`]; a resume failure is reported after
    /// every resume was attempted.
    pub fn create_snap(&self, snapshot: ThinId, origin: ThinId) -> Result<()> {
        let _guard = self.lock();
        self.ensure_writable()?;
        let active = self.scan_active()?;
        let origins: Vec<&ThinDevice> = active.iter().filter(|t| t.id == origin).collect();
        if let Some(t) = active.iter().find(|t| t.id == snapshot) {
            return Err(Error::AlreadyExists {
                kind: "thin device id",
                name: format!("{} (active as {})", self.subject(snapshot), t.name),
            });
        }

        let mut suspended: Vec<&ThinDevice> = Vec::new();
        let mut outcome = Ok(());
        for dev in &origins {
            match suspend(&self.dm, &dev.name) {
                Ok(()) => suspended.push(dev),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if outcome.is_ok() {
            let msg = format!("create_snap {snapshot} {origin}");
            outcome = self.message(&msg).map_err(|e| {
                let subject = match errno_of(&e) {
                    Some(Errno::ENODATA) | Some(Errno::ENOENT) => self.subject(origin),
                    _ => self.subject(snapshot),
                };
                self.message_error(&msg, &subject, e)
            });
        }
        // Resume everything we suspended, whatever happened above.
        let mut resume_error = None;
        for dev in suspended {
            if let Err(e) = resume(&self.dm, &dev.name) {
                resume_error.get_or_insert(e);
            }
        }
        outcome?;
        resume_error.map_or(Ok(()), Err)
    }

    /// Delete thin device `id` and free its blocks.
    ///
    /// # Errors
    /// [`Error::Busy`] when the id is active (deactivate it first); [`Error::NotFound`];
    /// [`Error::PoolReadOnly`].
    pub fn delete(&self, id: ThinId) -> Result<()> {
        let _guard = self.lock();
        if let Some(t) = self.scan_active()?.into_iter().find(|t| t.id == id) {
            return Err(Error::Busy {
                device: self.subject(id),
                reason: format!("it is active as {}; deactivate it first", t.name),
            });
        }
        let msg = format!("delete {id}");
        self.message(&msg)
            .map_err(|e| self.message_error(&msg, &self.subject(id), e))
    }

    /// Activate thin device `id` as device-mapper device `name` with virtual size `size`.
    /// Idempotent: if `name` is already this id of this pool with this size, it is returned.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when `name` is taken by another device or `id` is already active
    /// under another name; [`Error::NotFound`]
    /// when the id does not exist in the pool; [`Error::InvalidSize`] for size 0.
    pub fn activate(&self, id: ThinId, name: &str, size: Sectors) -> Result<ThinDevice> {
        validate_name(name)?;
        if *size == 0 {
            return Err(Error::invalid_size(
                name,
                size,
                "a thin device needs a size",
            ));
        }
        let _guard = self.lock();
        // A crash between creating the device and loading its table leaves a table-less
        // device of that name: removed here, or the name could never be activated again.
        if dmio::exists(&self.dm, name)? && !self.remove_half_made_locked(name)? {
            return match self.thin_table(name)? {
                Some(t) if t.id == id && t.size == size && !t.suspended => {
                    let path = ensure_node(name, t.device)?;
                    Ok(ThinDevice { path, ..t })
                }
                _ => Err(Error::AlreadyExists {
                    kind: "device-mapper device",
                    name: name.to_owned(),
                }),
            };
        }
        // Two live devices on one thin id would let two filesystems write one device.
        if let Some(t) = self.scan_active()?.into_iter().find(|t| t.id == id) {
            return Err(Error::AlreadyExists {
                kind: "active thin device id",
                name: format!("{} (active as {})", self.subject(id), t.name),
            });
        }
        let table = ThinDevTargetTable::new(
            Sectors(0),
            size,
            ThinTargetParams::new(self.device, id.to_dm(), None),
        );
        let dm_id = DevId::Name(dm_name(name)?);
        self.dm
            .device_create(dm_name(name)?, None, DmOptions::default())
            .map_err(|e| dmio::create_error(name, e))?;
        let loaded = self
            .dm
            .table_load(&dm_id, &table.to_raw_table(), DmOptions::default())
            .map_err(|e| match errno_of(&e) {
                Some(Errno::ENODATA) | Some(Errno::ENOENT) => Error::NotFound {
                    kind: "thin device id",
                    name: self.subject(id),
                },
                _ => dm_error("load thin table", name, e),
            })
            .and_then(|_| {
                self.dm
                    .device_suspend(&dm_id, DmOptions::default())
                    .map_err(|e| dm_error("resume", name, e))
            });
        let info = match loaded {
            Ok(info) => info,
            Err(e) => {
                let _ = self.dm.device_remove(&dm_id, DmOptions::default());
                return Err(e);
            }
        };
        let device = info.device();
        let path = ensure_node(name, device)?;
        Ok(ThinDevice {
            name: name.to_owned(),
            id,
            size,
            device,
            path,
            suspended: false,
        })
    }

    /// Resume every suspended thin device of this pool (start-up recovery after a crash in
    /// the middle of [`ThinPool::create_snap`]). Returns the names resumed.
    ///
    /// # Errors
    /// The first resume failure, after trying them all.
    pub fn resume_suspended(&self) -> Result<Vec<String>> {
        let _guard = self.lock();
        let mut resumed = Vec::new();
        let mut first_error = None;
        for t in self.scan_active()?.into_iter().filter(|t| t.suspended) {
            match resume(&self.dm, &t.name) {
                Ok(()) => resumed.push(t.name),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(resumed), Err)
    }

    /// Remove the device `name` if a crash left it half-made: it exists, has no live table
    /// (the process creating it died before loading or resuming its table; an inactive thin
    /// table still holds its thin id open, so the pool refuses to delete the id) and is not
    /// open.
    /// Returns whether it removed one.
    ///
    /// # Errors
    /// Device-mapper failures reading or removing it.
    pub fn remove_half_made(&self, name: &str) -> Result<bool> {
        let _guard = self.lock();
        self.remove_half_made_locked(name)
    }

    fn remove_half_made_locked(&self, name: &str) -> Result<bool> {
        if !dmio::exists(&self.dm, name)? || !dmio::table(&self.dm, name)?.is_empty() {
            return Ok(false);
        }
        let info = dmio::info(&self.dm, name)?;
        if info.open_count() > 0 {
            return Ok(false);
        }
        self.remove_thin_device(name, info.device())?;
        Ok(true)
    }

    /// Rename the active thin device `old` of this pool to `new` (one atomic ioctl; a mounted
    /// device stays mounted: mounts hold the device number, not the name). The
    /// `/dev/mapper` node follows the name. Idempotent: when `old` is gone and `new` is a thin
    /// device of this pool, nothing is done.
    ///
    /// # Errors
    /// [`Error::NotFound`] when neither `old` nor `new` is a thin device of this pool (a
    /// foreign device is never renamed); [`Error::AlreadyExists`] when `new` is taken by
    /// another device; device-mapper failures.
    pub fn rename(&self, old: &str, new: &str) -> Result<ThinDevice> {
        validate_name(new)?;
        let _guard = self.lock();
        let thin_named = |name: &str| -> Result<Option<ThinDevice>> {
            if dmio::exists(&self.dm, name)? {
                self.thin_table(name)
            } else {
                Ok(None)
            }
        };
        let Some(thin) = thin_named(old)? else {
            if let Some(t) = thin_named(new)? {
                let path = ensure_node(new, t.device)?;
                return Ok(ThinDevice { path, ..t });
            }
            return Err(Error::NotFound {
                kind: "thin device",
                name: format!("{old} of pool {}", self.name()),
            });
        };
        if dmio::exists(&self.dm, new)? {
            return Err(Error::AlreadyExists {
                kind: "device-mapper device",
                name: new.to_owned(),
            });
        }
        self.dm
            .device_rename(dm_name(old)?, &DevId::Name(dm_name(new)?))
            .map_err(|e| dm_error("rename", old, e))?;
        remove_node(old, thin.device)?;
        let path = ensure_node(new, thin.device)?;
        Ok(ThinDevice {
            name: new.to_owned(),
            path,
            ..thin
        })
    }

    /// Deactivate the thin device `name` (the id and its data stay in the pool).
    ///
    /// # Errors
    /// [`Error::NotFound`] when no device of that name is a thin device of this pool;
    /// [`Error::Busy`] when it is open (mounted).
    pub fn deactivate(&self, name: &str) -> Result<()> {
        let _guard = self.lock();
        let thin = self.thin_table(name)?.ok_or_else(|| Error::NotFound {
            kind: "thin device",
            name: format!("{name} of pool {}", self.name()),
        })?;
        let open = dmio::info(&self.dm, name)?.open_count();
        if open > 0 {
            return Err(Error::Busy {
                device: name.to_owned(),
                reason: format!("it is open {open} time(s) (mounted?)"),
            });
        }
        self.remove_thin_device(name, thin.device)
    }

    /// Every active thin device of this pool, read from the kernel. Ensures each has its
    /// `/dev/mapper` node.
    pub fn list_active(&self) -> Result<Vec<ThinDevice>> {
        let _guard = self.lock();
        let mut thins = self.scan_active()?;
        for t in &mut thins {
            t.path = ensure_node(&t.name, t.device)?;
        }
        Ok(thins)
    }

    /// The active devices of thin id `id` (usually none or one).
    pub fn find_active(&self, id: ThinId) -> Result<Vec<ThinDevice>> {
        Ok(self
            .list_active()?
            .into_iter()
            .filter(|t| t.id == id)
            .collect())
    }

    /// Mapped sectors of the active thin device `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Failed`]; [`Error::StatusParse`].
    pub fn thin_usage(&self, name: &str) -> Result<ThinUsage> {
        let line = dmio::status_line(&self.dm, name)?;
        match parse_thin_status(&line) {
            Ok(ThinState::Working(u)) => Ok(u),
            Ok(ThinState::Failed) => Err(Error::Failed {
                device: format!("thin device {name}"),
            }),
            Err(reason) => Err(Error::StatusParse {
                device: format!("thin device {name}"),
                line,
                reason,
            }),
        }
    }

    /// Send a message to the pool.
    pub(crate) fn message(&self, msg: &str) -> std::result::Result<(), DmError> {
        let id = DevId::Name(dm_name(self.name()).expect("pool name was validated"));
        self.dm.target_msg(&id, None, msg).map(|_| ())
    }

    /// Map a failed pool message to an error by meaning.
    pub(crate) fn message_error(&self, msg: &str, subject: &str, e: DmError) -> Error {
        match errno_of(&e) {
            Some(Errno::EEXIST) => Error::AlreadyExists {
                kind: "thin device id",
                name: subject.to_owned(),
            },
            Some(Errno::ENODATA) | Some(Errno::ENOENT) => Error::NotFound {
                kind: "thin device id",
                name: subject.to_owned(),
            },
            Some(Errno::EBUSY) => Error::Busy {
                device: subject.to_owned(),
                reason: "the kernel reports it busy (open, or a metadata snapshot is held)"
                    .to_owned(),
            },
            Some(Errno::EOPNOTSUPP) | Some(Errno::EROFS) => self.read_only_error(),
            Some(Errno::EIO) => Error::PoolIo {
                pool: self.name().to_owned(),
                operation: format!("message {msg:?}"),
                devices: format!(
                    "data {} or metadata {}",
                    self.config.data_device.display(),
                    self.config.metadata_device.display()
                ),
            },
            _ => dm_error(format!("message {msg:?}"), self.name(), e),
        }
    }

    /// Why the pool refuses changes, from its status now: out of metadata space (the kernel
    /// reports every metadata block used, its reserve counted), read-only, or failed.
    pub(crate) fn read_only_error(&self) -> Error {
        match self.status() {
            Ok(s) if s.metadata.used >= s.metadata.total => Error::MetadataFull {
                pool: self.name().to_owned(),
                used: s.metadata.used.0,
                total: s.metadata.total.0,
            },
            Ok(s) => Error::PoolReadOnly {
                pool: self.name().to_owned(),
                mode: s.mode.as_str().to_owned(),
            },
            Err(e) => e,
        }
    }

    /// "thin device id N in pool P", for error messages.
    pub(crate) fn subject(&self, id: ThinId) -> String {
        format!("{id} in pool {}", self.name())
    }

    /// Refuse changes on a pool that is out of space or read-only.
    fn ensure_writable(&self) -> Result<()> {
        let status = self.status()?;
        match status.mode {
            PoolMode::ReadWrite => Ok(()),
            PoolMode::OutOfDataSpace => Err(Error::PoolFull {
                pool: self.name().to_owned(),
                used: status.data.used,
                total: status.data.total,
            }),
            PoolMode::ReadOnly => Err(self.read_only_error()),
        }
    }

    /// Active thin devices of this pool, without the lock and without touching nodes.
    pub(crate) fn scan_active(&self) -> Result<Vec<ThinDevice>> {
        let mut found = Vec::new();
        for name in dmio::list(&self.dm)? {
            // A device can vanish between list and table read: skip it.
            match self.thin_table(&name) {
                Ok(Some(t)) => found.push(t),
                Ok(None) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// The thin device `name` if its table is `thin <this pool> <id>`.
    ///
    /// # Errors
    /// [`Error::Failed`] naming this pool when `name` is a thin device of this pool and the
    /// pool has failed: the kernel then prints `Fail` instead of the thin table.
    pub(crate) fn thin_table(&self, name: &str) -> Result<Option<ThinDevice>> {
        let raw = dmio::table(&self.dm, name)?;
        if raw.len() != 1 || raw[0].2 != "thin" {
            return Ok(None);
        }
        if raw[0].3.trim() == "Fail" {
            // Which pool it belongs to is only in its dependencies now.
            let id = DevId::Name(dm_name(name)?);
            let deps = self
                .dm
                .table_deps(&id, DmOptions::default())
                .map_err(|e| dm_error("read dependencies", name, e))?;
            return if deps.contains(&self.device) {
                Err(Error::Failed {
                    device: format!(
                        "thin pool {} (its thin device {name} reports Fail)",
                        self.name()
                    ),
                })
            } else {
                Ok(None)
            };
        }
        let table = ThinDevTargetTable::from_raw_table(&raw).map_err(|_| Error::StatusParse {
            device: name.to_owned(),
            line: raw_table_text(&raw),
            reason: "unreadable thin table".to_owned(),
        })?;
        let params = &table.table.params;
        if params.pool != self.device {
            return Ok(None);
        }
        let info = dmio::info(&self.dm, name)?;
        Ok(Some(ThinDevice {
            name: name.to_owned(),
            id: ThinId::from_dm(params.thin_id),
            size: table.table.length,
            device: info.device(),
            path: crate::names::mapper_path(name),
            suspended: info.flags().contains(DmFlags::DM_SUSPEND),
        }))
    }

    /// Remove a thin dm device and its node.
    pub(crate) fn remove_thin_device(&self, name: &str, device: Device) -> Result<()> {
        dmio::remove(&self.dm, name)?;
        remove_node(name, device)
    }
}

/// Suspend a device, flushing I/O and freezing a mounted filesystem (lockfs).
pub(crate) fn suspend(dm: &devicemapper::DM, name: &str) -> Result<()> {
    let id = DevId::Name(dm_name(name)?);
    dm.device_suspend(&id, DmOptions::default().set_flags(DmFlags::DM_SUSPEND))
        .map(|_| ())
        .map_err(|e| dm_error("suspend", name, e))
}

/// Resume a device.
pub(crate) fn resume(dm: &devicemapper::DM, name: &str) -> Result<()> {
    let id = DevId::Name(dm_name(name)?);
    dm.device_suspend(&id, DmOptions::default())
        .map(|_| ())
        .map_err(|e| dm_error("resume", name, e))
}
