//! [`VolumeManager`]: opening (drivers, records, reconciliation) and the volume operations.
//! Snapshot operations are in `snapshots.rs`, backups in `backups.rs`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::fcntl::Flock;

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::guards::{detached, Reservation, Reserved};
use crate::names::{generate_name, now_ruby_date, validate_name};
use crate::records::{ObjectState, RecordStore, VolumeRecord};
use crate::state::State;
use crate::types::{CreateVolumeRequest, Info, ManagerConfig, Progress, Snapshot, Volume};
use crate::vfs::VFS;

/// The volume manager: the embedding API of convoy. Cheap to clone (an `Arc` inside); every
/// method is async and runs blocking device and file work on tokio's blocking threads. Calls on
/// different volumes run concurrently; calls on one volume are serialized by its lock, except
/// the long part of a backup, which holds no lock (the snapshot it reads is marked busy).
#[derive(Clone)]
pub struct VolumeManager {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for VolumeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("root", &self.inner.root)
            .field("drivers", &self.inner.order)
            .finish()
    }
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub order: Vec<String>,
    pub drivers: BTreeMap<String, Arc<dyn Driver>>,
    pub stores: BTreeMap<String, RecordStore>,
    /// Drivers that failed to start (a pool in `Fail`, a missing device), with the error:
    /// their volumes are listed but every operation on them answers `Unavailable`.
    pub degraded: BTreeMap<String, String>,
    pub state: Mutex<State>,
    /// Backups mounted for browsing (`browse.rs`).
    pub browses: crate::browse::Browses,
    /// Instant restores being filled (`instant/run.rs`).
    pub fills: crate::instant::Fills,
    /// Holders keeping volumes mounted (`mount_refs.rs`); changed under the volume's lock.
    pub mount_refs: Mutex<crate::mount_refs::MountRefs>,
    /// Lines describing what start-up reconciliation did.
    pub reconcile_report: Vec<String>,
    /// Held for the manager's life: one manager per root.
    pub(crate) _root_lock: Flock<File>,
}

/// Runs blocking work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

impl VolumeManager {
    /// Opens the manager: locks the root, reads or writes `convoy.cfg`, sets up the drivers
    /// (devicemapper: opens or creates the pool), loads the records and reconciles them with
    /// the system (see `docs/core.md`).
    ///
    /// # Errors
    /// [`Error::Busy`] when another manager uses the root; [`Error::InvalidArgument`] for bad
    /// driver options; driver and record errors.
    pub async fn open(config: ManagerConfig) -> Result<VolumeManager> {
        let manager = blocking(move || crate::open::open_blocking(config)).await?;
        manager.resume_fills();
        Ok(manager)
    }

    /// What start-up reconciliation did, one line per action.
    pub fn reconcile_report(&self) -> &[String] {
        &self.inner.reconcile_report
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn driver(&self, name: &str) -> Result<Arc<dyn Driver>> {
        if let Some(why) = self.inner.degraded.get(name) {
            return Err(Error::DriverDegraded {
                driver: name.to_owned(),
                reason: why.clone(),
            });
        }
        self.inner
            .drivers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("driver", name))
    }

    pub(crate) fn store(&self, driver: &str) -> Result<RecordStore> {
        self.inner
            .stores
            .get(driver)
            .cloned()
            .ok_or_else(|| Error::not_found("driver", driver))
    }

    /// Takes volume `name`'s lock and returns its (ready) record as of then.
    pub(crate) async fn lock_volume(
        &self,
        name: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, VolumeRecord)> {
        loop {
            let lock = {
                let mut st = self.state();
                st.ready_volume(name)?;
                st.lock_of(name)
            };
            let guard = lock.clone().lock_owned().await;
            let st = self.state();
            // A delete drops the volume's lock; a volume made again under the name has a new
            // one. Holding the old one would let two operations run on the new volume at once.
            if !st.locks.get(name).is_some_and(|l| Arc::ptr_eq(l, &lock)) {
                continue;
            }
            return Ok((guard, st.ready_volume(name)?.clone()));
        }
    }

    /// Takes the lock of the volume holding snapshot `name`. Errors name the snapshot: a
    /// volume deleted meanwhile (and perhaps being made again under its name) is the snapshot
    /// not found, as it went with its volume; a volume busy being deleted is the snapshot busy.
    pub(crate) async fn lock_snapshot_owner(
        &self,
        name: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, VolumeRecord)> {
        use crate::error::ErrorKind;
        let volume = self.volume_of_snapshot(name)?;
        let e = match self.lock_volume(&volume).await {
            Ok(locked) => return Ok(locked),
            Err(e) => e,
        };
        let still_there = self
            .state()
            .owner_of_snapshot(name)
            .is_some_and(|v| v.name == volume);
        match e {
            e if e.kind() == ErrorKind::NotFound
                || (e.kind() == ErrorKind::Busy && !still_there) =>
            {
                Err(Error::not_found("snapshot", name))
            }
            Error::Busy { why, .. } => {
                Err(Error::busy(name, format!("its volume {volume}: {why}")))
            }
            e => Err(e),
        }
    }

    /// Saves a record and publishes it in memory.
    pub(crate) fn commit(&self, rec: &VolumeRecord) -> Result<()> {
        self.store(&rec.driver)?.save(rec)?;
        self.state().volumes.insert(rec.name.clone(), rec.clone());
        Ok(())
    }

    /// `info`: general section and one section per driver.
    pub async fn info(&self) -> Result<Info> {
        let me = self.clone();
        blocking(move || {
            let mut info = Info::default();
            info.general
                .insert("Root".into(), me.inner.root.display().to_string());
            info.general
                .insert("DriverList".into(), me.inner.order.join(","));
            info.general.insert(
                "DefaultDriver".into(),
                me.inner.order.first().cloned().unwrap_or_default(),
            );
            for (name, driver) in &me.inner.drivers {
                info.drivers.insert(name.clone(), driver.info()?);
            }
            for (name, why) in &me.inner.degraded {
                info.drivers.insert(
                    name.clone(),
                    BTreeMap::from([("Degraded".into(), why.clone())]),
                );
            }
            Ok(info)
        })
        .await
    }

    /// Starts watching the pools' device-mapper events: the returned waiter wakes on an event
    /// raised from now on, such as the pool's low-water mark (set at `dm.fillwarn`'s data fill)
    /// crossed or the pool out of space. Call [`VolumeManager::check_pool_fill`] after arming
    /// and again when it wakes. `None` without a devicemapper pool.
    pub fn arm_pool_events(&self) -> Option<convoy_thinpool::ArmedEvents> {
        self.inner
            .drivers
            .iter()
            .filter(|(name, _)| !self.inner.degraded.contains_key(*name))
            .find_map(|(_, d)| d.arm_events())
    }

    /// Reads each pool's fill and logs every threshold crossing since the last look (the
    /// daemon calls this periodically, so a crossing caused by writers is logged even when no
    /// request comes). See `docs/operations.md`.
    pub async fn check_pool_fill(&self) {
        let me = self.clone();
        let _ = blocking(move || {
            for driver in me.inner.drivers.values() {
                driver.observe_fill();
            }
            Ok(())
        })
        .await;
    }

    /// The bytes of its driver's pool each volume has allocated, by volume name, where the
    /// driver can tell: devicemapper reads the mapped sectors of the volume's active thin
    /// device; vfs tells nothing. Read for the daemon's metrics (`docs/operations.md`).
    pub async fn volume_allocated_bytes(&self) -> BTreeMap<String, u64> {
        let me = self.clone();
        blocking(move || {
            let ready: Vec<VolumeRecord> = me
                .state()
                .volumes
                .values()
                .filter(|v| v.state == ObjectState::Ready)
                .cloned()
                .collect();
            let mut out = BTreeMap::new();
            for (name, driver) in &me.inner.drivers {
                let mine: Vec<VolumeRecord> = ready
                    .iter()
                    .filter(|r| &r.driver == name)
                    .cloned()
                    .collect();
                if !mine.is_empty() && !me.inner.degraded.contains_key(name) {
                    out.extend(driver.allocated_bytes(&mine));
                }
            }
            Ok(out)
        })
        .await
        .unwrap_or_default()
    }

    pub(crate) fn to_volume(&self, rec: &VolumeRecord) -> Volume {
        let driver = self.inner.drivers.get(&rec.driver);
        let snapshots = rec
            .snapshots
            .values()
            .filter(|s| s.state == ObjectState::Ready)
            .map(|s| (s.name.clone(), self.to_snapshot(rec, s)))
            .collect();
        Volume {
            name: rec.name.clone(),
            driver: rec.driver.clone(),
            mount_point: rec.mount_point.clone(),
            created_time: rec.created_time.clone(),
            driver_info: driver
                .map(|d| {
                    let mut info = d.volume_info(rec);
                    self.fill_info(rec, &mut info);
                    info
                })
                .unwrap_or_default(),
            snapshots,
        }
    }

    pub(crate) fn to_snapshot(
        &self,
        vol: &VolumeRecord,
        snap: &crate::records::SnapshotRecord,
    ) -> Snapshot {
        Snapshot {
            name: snap.name.clone(),
            volume_name: vol.name.clone(),
            volume_created_at: vol.created_time.clone(),
            created_time: snap.created_time.clone(),
            driver_info: self
                .inner
                .drivers
                .get(&vol.driver)
                .map(|d| d.snapshot_info(vol, snap))
                .unwrap_or_default(),
        }
    }

    /// Creates a volume (or restores a backup into a new one when `req.backup_url` is set).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::AlreadyExists`], [`Error::InvalidSize`],
    /// [`Error::SizeMismatch`] (restore with a different size), driver errors. A failed create
    /// leaves nothing behind.
    pub async fn create_volume(
        &self,
        req: CreateVolumeRequest,
        progress: Arc<dyn Progress>,
    ) -> Result<Volume> {
        let me = self.clone();
        detached("create volume", async move {
            me.create_volume_now(req, progress).await
        })
        .await
    }

    async fn create_volume_now(
        &self,
        req: CreateVolumeRequest,
        progress: Arc<dyn Progress>,
    ) -> Result<Volume> {
        let name = match &req.name {
            Some(n) => {
                validate_name(n)?;
                n.clone()
            }
            None => generate_name("volume"),
        };
        // A clone holds its source volume's lock until it is made.
        let clone = self.clone_source(&req).await?;
        let driver_name = req
            .driver
            .clone()
            .or_else(|| clone.as_ref().map(|c| c.volume.driver.clone()))
            .or_else(|| self.inner.order.first().cloned())
            .ok_or_else(|| Error::invalid("driver", "no driver is enabled"))?;
        if let Some(c) = &clone {
            c.check(&driver_name, req.size)?;
        }
        let driver = self.driver(&driver_name)?;
        if req.size == Some(0) {
            return Err(Error::InvalidSize {
                value: "0".into(),
                reason: "a size must be greater than zero".into(),
            });
        }
        let restore = match &req.backup_url {
            Some(url) => Some(
                self.plan_restore(url, &driver_name, req.size, req.grow, &req.store)
                    .await?,
            ),
            None => None,
        };
        let instant = req.instant;
        match &restore {
            Some(plan) if instant => self.check_instant(&driver_name, plan, req.grow)?,
            None if instant => {
                return Err(Error::invalid(
                    "--instant",
                    "it restores a backup: give the backup with --backup URL",
                ))
            }
            _ => {}
        }
        let size = match (&restore, &clone) {
            (Some(r), _) if !req.grow => Some(r.size),
            (Some(r), _) => req.size.or(Some(r.size)),
            (None, Some(c)) => Some(c.size()),
            (None, None) => req.size,
        };
        let mut rec = VolumeRecord {
            name: name.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            driver: driver_name.clone(),
            created_time: now_ruby_date(),
            state: ObjectState::Creating,
            size: 0,
            requested_size: None,
            mount_point: None,
            dev_id: None,
            path: None,
            filesystem: None,
            restored_from: req.backup_url.clone(),
            snapshots: BTreeMap::new(),
            last_backups: BTreeMap::new(),
            pending: None,
            instant: None,
        };
        // Reserve the name (in memory) and take the new volume's lock.
        let (guard, mut reservation) = {
            let mut st = self.state();
            st.check_free(&name)?;
            st.volumes.insert(name.clone(), rec.clone());
            let reservation = Reservation::new(&self.inner, Reserved::Volume, &name, &name);
            (st.lock_of(&name).try_lock_owned().ok(), reservation)
        };
        reservation.on_disk(true);
        let store = self.store(&driver_name)?;
        let d = driver.clone();
        let format = restore.is_none() && clone.is_none();
        // The source's lock stays here (held to the end); its records go to the worker.
        let (_clone_guard, clone) = match clone {
            Some(c) => (Some(c.guard), Some((c.volume, c.snapshot))),
            None => (None, None),
        };
        let planned = blocking(move || {
            d.plan_volume(&mut rec, size)?;
            if !format {
                // A restore brings its own filesystem (whatever the backup holds).
                rec.filesystem = None;
            }
            if let Some((source, _)) = &clone {
                // A clone holds its source's filesystem.
                rec.filesystem.clone_from(&source.filesystem);
            }
            if let Some(req) = size {
                if req != rec.size && rec.size != 0 {
                    rec.requested_size = Some(req);
                }
            }
            // Intent first: a crash from here on is undone at start-up.
            store.save(&rec)?;
            crate::crashpoint::hit("create-volume-after-intent");
            let made = match &clone {
                Some((source, snap)) => d.create_clone(&rec, source, snap.as_ref()),
                None if instant => d.instant_target(&rec, true).map(drop),
                None => d.create_volume(&rec, format),
            };
            if let Err(e) = made {
                let _ = store.remove(&rec.name);
                d.release(&rec);
                return Err(e);
            }
            Ok(rec)
        })
        .await;
        let mut rec = match planned {
            Ok(rec) => rec,
            Err(e) => {
                // The worker removed its intent record (or never wrote one).
                reservation.on_disk(false);
                return Err(e);
            }
        };
        if let Some(plan) = restore {
            let grow = req.grow && plan.size < rec.size;
            let mut restored = if instant {
                self.start_instant(&mut rec, &plan).await
            } else {
                self.run_restore(&rec, plan, progress).await
            };
            if restored.is_ok() && grow {
                let (d, r) = (driver.clone(), rec.clone());
                restored = blocking(move || d.grow_filesystem(&r)).await;
            }
            if let Err(e) = restored {
                let store = self.store(&driver_name)?;
                let d = driver.clone();
                let r = rec.clone();
                let cleanup = blocking(move || {
                    d.remove_volume(&r, false)?;
                    store.remove(&r.name)?;
                    d.release(&r);
                    Ok(())
                })
                .await;
                // A failed clean-up leaves the intent record (and the name reserved):
                // start-up finishes the removal.
                reservation.on_disk(cleanup.is_err());
                return Err(e);
            }
        }
        crate::crashpoint::hit("create-volume-before-ready");
        rec.state = ObjectState::Ready;
        let store = self.store(&driver_name)?;
        let saved = rec.clone();
        blocking(move || store.save(&saved)).await?;
        self.state().volumes.insert(name.clone(), rec.clone());
        reservation.keep();
        drop(guard);
        if rec.instant.is_some() {
            self.spawn_fill(&name);
        }
        Ok(self.to_volume(&rec))
    }

    /// Deletes a volume and its snapshots. `reference_only` forgets the volume but keeps its
    /// data (vfs: the directory stays; devicemapper: the thin device stays, its record moves
    /// to `<root>/devicemapper/released/`). The volume's holders
    /// ([`VolumeManager::mount_for`]) are forgotten with it; to refuse while there are any,
    /// use [`VolumeManager::delete_unheld_volume`].
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Busy`] when it is mounted (devicemapper) or a backup reads
    /// one of its snapshots.
    pub async fn delete_volume(&self, name: &str, reference_only: bool) -> Result<()> {
        let (me, name) = (self.clone(), name.to_owned());
        detached("delete volume", async move {
            me.delete_volume_now(&name, reference_only, false).await
        })
        .await
    }

    /// Deletes a volume under its lock; `refuse_held`: [`Error::Busy`] while holders keep it
    /// mounted (`mounts.rs`). Its holders are forgotten with it.
    pub(crate) async fn delete_volume_now(
        &self,
        name: &str,
        reference_only: bool,
        refuse_held: bool,
    ) -> Result<()> {
        let (_guard, mut rec) = self.lock_volume(name).await?;
        if refuse_held {
            self.check_unheld(name)?;
        }
        {
            let st = self.state();
            if let Some(s) = rec
                .snapshots
                .keys()
                .find(|s| st.busy_snapshots.contains_key(*s))
            {
                return Err(Error::busy(
                    name,
                    format!("a backup is reading its snapshot {s}"),
                ));
            }
        }
        let driver = self.driver(&rec.driver)?;
        let store = self.store(&rec.driver)?;
        let d = driver.clone();
        let r = rec.clone();
        if let Some(at) = blocking(move || d.mounted_at(&r)).await? {
            if driver.name() != VFS {
                return Err(Error::busy(
                    name,
                    format!("it is mounted at {}; unmount it first", at.display()),
                ));
            }
        }
        if !reference_only {
            // (`--reference` of a filling volume is refused by the driver.)
            self.stop_instant(&rec).await?;
        }
        blocking(move || {
            if reference_only {
                driver.remove_volume(&rec, true)?;
                store.release_record(&rec)?;
                return Ok(());
            }
            rec.state = ObjectState::Deleting;
            store.save(&rec)?;
            crate::crashpoint::hit("delete-volume-after-intent");
            driver.remove_volume(&rec, false)?;
            crate::crashpoint::hit("delete-volume-before-record-removed");
            store.remove(&rec.name)?;
            driver.release(&rec);
            Ok(())
        })
        .await?;
        // Still under the lock: no holder mounts a volume of that name in between.
        let (me, gone) = (self.clone(), name.to_owned());
        let forgotten = blocking(move || me.forget_holders(&gone)).await;
        let mut st = self.state();
        st.volumes.remove(name);
        st.locks.remove(name);
        forgotten
    }

    /// Every volume (of one driver when `driver` is given), by name.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown driver.
    pub async fn list_volumes(&self, driver: Option<&str>) -> Result<Vec<Volume>> {
        if let Some(d) = driver {
            self.driver(d)?;
        }
        let recs: Vec<VolumeRecord> = self
            .state()
            .volumes
            .values()
            .filter(|v| v.state == ObjectState::Ready && driver.is_none_or(|d| v.driver == d))
            .cloned()
            .collect();
        Ok(recs.iter().map(|r| self.to_volume(r)).collect())
    }

    /// One volume.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn inspect_volume(&self, name: &str) -> Result<Volume> {
        let rec = self.state().ready_volume(name)?.clone();
        Ok(self.to_volume(&rec))
    }
}
