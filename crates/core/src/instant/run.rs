//! Instant restores of [`VolumeManager`]: starting one (`create --backup URL --instant`),
//! the task that fills the volume and hands it over, resuming after a restart, stopping one
//! for a delete, and what `inspect` shows (`docs/instant.md`).
//!
//! One task per filling volume does everything after the create returns: (at a resume) it
//! serves the volume again, then fills it, retrying a failed fetch, then hands the volume's
//! device over to its thin device and clears the record. The task never holds a claim a
//! dropped client could strand: the create has returned before it starts, and a delete
//! aborts it under the volume's lock.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_backupstore::BackupReader;
use convoy_thinpool::FrontState;

use super::fill_map::FillMap;
use super::overlay::Overlay;
use crate::backup_device::{attach_options, nbd_device_number, nbd_error, open_reader};
use crate::backups::{redact_urls, RestorePlan};
use crate::browse::backup_key;
use crate::durable::remove_durably;
use crate::error::{Error, ErrorKind, Result};
use crate::manager::{blocking, VolumeManager};
use crate::records::{InstantFill, VolumeRecord};
use crate::types::StoreOptions;

/// Fill runs fetched at once.
const PARALLEL: usize = 8;

/// Wait between two tries of a failed fill or resume.
const RETRY: Duration = Duration::from_secs(5);

/// Decoded chunks the fill's reader keeps (the fill writes each chunk once; reads of
/// filled chunks go to the thin device).
const READER_CACHE: u64 = 32 << 20;

type Fill = Overlay<BackupReader>;

/// Tests only: `CONVOY_TEST_FILL_PAUSE_MS` paces the background fill (one run of chunks at a
/// time, this long between runs), so that a VM test can act while a small fill goes on.
fn test_pause() -> Option<Duration> {
    std::env::var("CONVOY_TEST_FILL_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// A volume being served and filled.
struct Session {
    overlay: Arc<Fill>,
    reader: BackupReader,
    device: Option<convoy_nbd::NbdDevice>,
}

/// The manager's instant restores, by volume name.
#[derive(Default)]
pub(crate) struct Fills {
    sessions: Mutex<BTreeMap<String, Session>>,
    tasks: Mutex<BTreeMap<String, tokio::task::JoinHandle<()>>>,
    /// Why a fill is not going on (a store down, a resume waiting), by volume name.
    trouble: Mutex<BTreeMap<String, String>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn map_path(root: &std::path::Path, rec: &VolumeRecord) -> PathBuf {
    root.join(crate::dm::DEVICEMAPPER)
        .join("fill")
        .join(format!("{}.map", rec.uuid))
}

fn map_id(backup_uuid: &str) -> [u8; 32] {
    *blake3::hash(backup_uuid.as_bytes()).as_bytes()
}

fn store_of(fill: &InstantFill) -> StoreOptions {
    StoreOptions {
        s3_endpoint: fill.s3_endpoint.clone(),
        limit_upload: None,
    }
}

impl VolumeManager {
    /// Refuses an instant restore the driver or the backup cannot do, before anything is
    /// made.
    pub(crate) fn check_instant(&self, driver: &str, plan: &RestorePlan, grow: bool) -> Result<()> {
        let what = || format!("instant restore of {}", redact_urls(&plan.url));
        if driver != crate::dm::DEVICEMAPPER {
            return Err(Error::Unsupported {
                what: what(),
                why: format!(
                    "only devicemapper volumes are block devices that can be served during a \
                     fill; restore into a {driver} volume without --instant"
                ),
            });
        }
        if plan.legacy {
            return Err(Error::Unsupported {
                what: what(),
                why: "the backup is in the original Convoy's store layout; restore it without \
                      --instant, or import the store (docs/migrating.md)"
                    .into(),
            });
        }
        if grow {
            return Err(Error::Unsupported {
                what: what(),
                why: "--grow needs the whole filesystem restored first; restore without \
                      --instant"
                    .into(),
            });
        }
        Ok(())
    }

    /// Starts serving new volume `rec` (its thin device made, hidden) from `plan`'s backup:
    /// sets `rec.instant`. Undoes what it made on error (the caller removes the volume).
    pub(crate) async fn start_instant(
        &self,
        rec: &mut VolumeRecord,
        plan: &RestorePlan,
    ) -> Result<()> {
        let mut fill = InstantFill {
            backup_url: plan.url.clone(),
            s3_endpoint: plan.store.s3_endpoint.clone(),
            backup_uuid: String::new(),
            nbd_index: None,
            boot_id: crate::browse::boot_id(),
        };
        let started = std::time::Instant::now();
        let reader = self.open_fill_reader(rec, &fill).await?;
        let opened = started.elapsed();
        fill.backup_uuid = reader.info().backup_uuid.clone();
        rec.instant = Some(fill);
        let made = self.serve(rec, reader, true).await;
        tracing::debug!(
            volume = %rec.name,
            open_ms = opened.as_millis() as u64,
            serve_ms = (started.elapsed() - opened).as_millis() as u64,
            "instant restore: backup opened and volume served"
        );
        match made {
            Ok(session) => {
                locked(&self.inner.fills.sessions).insert(rec.name.clone(), session);
                Ok(())
            }
            Err(e) => {
                let _ = remove_durably(&map_path(&self.inner.root, rec));
                Err(e)
            }
        }
    }

    /// Starts the task filling `name` (after its create returned, or at start-up).
    pub(crate) fn spawn_fill(&self, name: &str) {
        let (me, n) = (self.clone(), name.to_owned());
        let task = tokio::spawn(async move { me.fill_task(&n).await });
        if let Some(old) = locked(&self.inner.fills.tasks).insert(name.to_owned(), task) {
            old.abort();
        }
    }

    /// Resumes, in the background, every instant restore the records hold.
    pub(crate) fn resume_fills(&self) {
        let names: Vec<String> = self
            .state()
            .volumes
            .values()
            .filter(|r| r.instant.is_some())
            .map(|r| r.name.clone())
            .collect();
        for name in names {
            self.spawn_fill(&name);
        }
    }

    async fn open_fill_reader(
        &self,
        rec: &VolumeRecord,
        fill: &InstantFill,
    ) -> Result<BackupReader> {
        let reader = open_reader(
            &fill.backup_url,
            &store_of(fill),
            format!(
                "instant restore of {} into volume {}",
                fill.backup_url, rec.name
            ),
            READER_CACHE,
        )
        .await?;
        if reader.size() != rec.size {
            return Err(Error::Unsupported {
                what: format!("instant restore of {}", redact_urls(&fill.backup_url)),
                why: format!(
                    "the backup's volume is {} bytes and the new volume {} (whole pool \
                     blocks); restore without --instant",
                    reader.size(),
                    rec.size
                ),
            });
        }
        if !fill.backup_uuid.is_empty() && reader.info().backup_uuid != fill.backup_uuid {
            return Err(Error::invalid(
                format!("backup {}", redact_urls(&fill.backup_url)),
                format!(
                    "it is not the backup volume {} is being filled from (UUID {}, found {})",
                    rec.name,
                    fill.backup_uuid,
                    reader.info().backup_uuid
                ),
            ));
        }
        Ok(reader)
    }

    /// Serves `rec`'s device from `reader` over NBD: opens (or, `create`, makes) the fill map,
    /// opens the hidden thin device, reconnects the NBD device the last daemon left or
    /// attaches a new one and maps the volume's device over it. Saves `rec` when the NBD
    /// index changes (`create`: the caller saves it).
    async fn serve(
        &self,
        rec: &mut VolumeRecord,
        reader: BackupReader,
        create: bool,
    ) -> Result<Session> {
        let fill = rec.instant.clone().expect("an instant record");
        let driver = self.driver(&rec.driver)?;
        let path = map_path(&self.inner.root, rec);
        let (chunks, chunk) = (reader.chunk_count(), reader.chunk_size());
        let id = map_id(&fill.backup_uuid);
        let (d, r) = (driver.clone(), rec.clone());
        let (map, target, front) = blocking(move || {
            let map = if create {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io("create directory", dir, e))?;
                }
                FillMap::create(&path, chunks, chunk, &id)?
            } else {
                FillMap::open(&path, chunks, chunk, &id)?
            };
            let target_path = d.instant_target(&r, false)?;
            let target = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&target_path)
                .map_err(|e| Error::io("open for the fill", &target_path, e))?;
            // The background fill writes past the page cache (see `Overlay::with_direct`); a
            // device that refuses direct I/O is filled through the page cache.
            let direct = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&target_path)
                .ok();
            Ok((map, (target, direct), d.instant_front(&r)?))
        })
        .await?;
        let overlay = Arc::new(
            Overlay::new(reader.clone(), target.0, Arc::new(map))
                .map_err(|e| Error::Internal(format!("fill of volume {}: {e}", rec.name)))?
                .with_direct(target.1)
                .with_pause(test_pause()),
        );
        let what = format!("serve volume {} during its instant restore", rec.name);
        let same_boot = fill.boot_id == crate::browse::boot_id();
        let device = match front {
            FrontState::Thin(_) => None,
            FrontState::Other { open_count, .. } => {
                let again = match fill.nbd_index.filter(|_| same_boot) {
                    Some(i) => {
                        convoy_nbd::NbdDevice::reconnect(i, overlay.clone(), attach_options())
                            .await
                            .map_err(nbd_error(what.clone()))
                    }
                    None => Err(Error::Internal("no device of this boot".into())),
                };
                match again {
                    Ok(dev) => Some(dev),
                    Err(e) if open_count > 0 => {
                        return Err(Error::busy(
                            &rec.name,
                            format!(
                                "its device is open (mounted?) over an NBD device that can no \
                                 longer be served ({e}); unmount it and the fill resumes"
                            ),
                        ))
                    }
                    Err(_) => {
                        let (d, r) = (driver.clone(), rec.clone());
                        blocking(move || d.instant_remove(&r, true, false)).await?;
                        if let Some(i) = fill.nbd_index.filter(|_| same_boot) {
                            let _ = convoy_nbd::disconnect(i);
                        }
                        Some(self.attach_front(rec, &overlay, create, &what).await?)
                    }
                }
            }
            FrontState::Missing => Some(self.attach_front(rec, &overlay, create, &what).await?),
        };
        Ok(Session {
            overlay,
            reader,
            device,
        })
    }

    /// Attaches `overlay` to a new `/dev/nbdN` and maps the volume's device over it.
    async fn attach_front(
        &self,
        rec: &mut VolumeRecord,
        overlay: &Arc<Fill>,
        create: bool,
        what: &str,
    ) -> Result<convoy_nbd::NbdDevice> {
        let dev = convoy_nbd::NbdDevice::attach(overlay.clone(), attach_options())
            .await
            .map_err(nbd_error(what.to_owned()))?;
        if let Some(f) = rec.instant.as_mut() {
            f.nbd_index = Some(dev.index());
            f.boot_id = crate::browse::boot_id();
        }
        let (major, minor) = nbd_device_number(dev.index()).ok_or_else(|| {
            Error::Internal(format!(
                "{} has no device number in sysfs",
                dev.path().display()
            ))
        })?;
        let backing = convoy_thinpool::Device { major, minor };
        let (d, r, me) = (self.driver(&rec.driver)?, rec.clone(), self.clone());
        blocking(move || {
            if !create {
                me.commit(&r)?;
            }
            d.instant_map(&r, backing)?;
            if let (false, Some(at)) = (create, &r.mount_point) {
                // After a reboot: mounted again where it was.
                d.mount(&r, at)?;
            }
            Ok(())
        })
        .await?;
        Ok(dev)
    }

    async fn fill_task(&self, name: &str) {
        let fills = &self.inner.fills;
        // At a resume: serve the volume first.
        loop {
            if locked(&fills.sessions).contains_key(name) {
                break;
            }
            match self.resume_one(name).await {
                Ok(true) => break,
                Ok(false) => return,
                Err(e) if e.kind() == ErrorKind::NotFound => return,
                Err(e) => {
                    tracing::warn!("instant restore of volume {name}: resume: {e}");
                    locked(&fills.trouble).insert(name.to_owned(), format!("waiting: {e}"));
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        let Some(overlay) = locked(&fills.sessions).get(name).map(|s| s.overlay.clone()) else {
            return;
        };
        locked(&fills.trouble).remove(name);
        while !overlay.map().complete() {
            if let Err(e) = overlay.fill(PARALLEL).await {
                tracing::warn!("instant restore of volume {name}: fill: {e}; retrying");
                locked(&fills.trouble).insert(name.to_owned(), format!("retrying: {e}"));
                tokio::time::sleep(RETRY).await;
            } else {
                locked(&fills.trouble).remove(name);
            }
        }
        drop(overlay);
        loop {
            match self.finish(name).await {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => {
                    tracing::warn!("instant restore of volume {name}: hand-over: {e}; retrying");
                    locked(&fills.trouble).insert(name.to_owned(), format!("handing over: {e}"));
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        locked(&fills.trouble).remove(name);
        locked(&fills.tasks).remove(name);
    }

    /// Serves a volume again at start-up. `false`: nothing to resume.
    async fn resume_one(&self, name: &str) -> Result<bool> {
        let (_guard, mut rec) = self.lock_volume(name).await?;
        let Some(fill) = rec.instant.clone() else {
            return Ok(false);
        };
        let reader = self.open_fill_reader(&rec, &fill).await?;
        let session = self.serve(&mut rec, reader, false).await?;
        tracing::info!(
            "instant restore of volume {name}: resumed, {} of {} chunks filled",
            session.overlay.map().filled(),
            session.overlay.map().chunk_count()
        );
        locked(&self.inner.fills.sessions).insert(name.to_owned(), session);
        Ok(true)
    }

    /// Hands a completely filled volume over to its thin device and forgets the fill.
    async fn finish(&self, name: &str) -> Result<()> {
        let (_guard, mut rec) = self.lock_volume(name).await?;
        if rec.instant.is_none() {
            return Ok(());
        }
        let Some(overlay) = locked(&self.inner.fills.sessions)
            .get(name)
            .map(|s| s.overlay.clone())
        else {
            return Err(Error::Internal(format!(
                "volume {name} has no fill session"
            )));
        };
        let driver = self.driver(&rec.driver)?;
        let (d, r, o) = (driver.clone(), rec.clone(), overlay.clone());
        blocking(move || d.instant_hand_over(&r, &|| o.sync_now())).await?;
        drop(overlay);
        let session = locked(&self.inner.fills.sessions).remove(name);
        if let Some(s) = session {
            self.end_session(name, s).await;
        }
        let (d, r, me, path) = (
            driver,
            rec.clone(),
            self.clone(),
            map_path(&self.inner.root, &rec),
        );
        blocking(move || {
            d.instant_remove(&r, false, true)?;
            let mut r = r;
            r.instant = None;
            me.commit(&r)?;
            remove_durably(&path)
        })
        .await?;
        rec.instant = None;
        tracing::info!("instant restore of volume {name}: filled and handed over");
        Ok(())
    }

    /// Disconnects a session's device and releases its store lock.
    async fn end_session(&self, name: &str, s: Session) {
        if let Some(dev) = s.device {
            if let Err(e) = dev.detach().await {
                tracing::warn!("instant restore of volume {name}: detach: {e}");
            }
        }
        drop(s.overlay);
        if let Err(e) = s.reader.close().await {
            tracing::warn!("instant restore of volume {name}: releasing the store lock: {e}");
        }
    }

    /// Stops the fill of `rec` for a delete (the caller holds the volume's lock and removes
    /// the volume after): the task ends, the volume's device and the NBD device go.
    pub(crate) async fn stop_instant(&self, rec: &VolumeRecord) -> Result<()> {
        if rec.instant.is_none() {
            return Ok(());
        }
        let task = locked(&self.inner.fills.tasks).remove(&rec.name);
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        let driver = self.driver(&rec.driver)?;
        let (d, r) = (driver, rec.clone());
        blocking(move || d.instant_remove(&r, true, false)).await?;
        let session = locked(&self.inner.fills.sessions).remove(&rec.name);
        if let Some(s) = session {
            self.end_session(&rec.name, s).await;
        }
        locked(&self.inner.fills.trouble).remove(&rec.name);
        remove_durably(&map_path(&self.inner.root, rec))
    }

    /// At daemon stop: commits every fill's map and leaves its NBD device connected (the
    /// volume may be mounted), for the next start to serve again within the kernel's
    /// dead-connection timeout.
    pub async fn pause_instant_fills(&self) -> Vec<String> {
        let tasks: Vec<_> = std::mem::take(&mut *locked(&self.inner.fills.tasks))
            .into_values()
            .collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        let sessions = std::mem::take(&mut *locked(&self.inner.fills.sessions));
        let mut report = Vec::new();
        for (name, s) in sessions {
            let synced = s.overlay.sync().await;
            let index = s.device.map(|d| d.into_index());
            report.push(format!(
                "instant restore of volume {name}: paused at {} of {} chunks{}{}",
                s.overlay.map().filled(),
                s.overlay.map().chunk_count(),
                index
                    .map(|i| format!(", /dev/nbd{i} left connected"))
                    .unwrap_or_default(),
                synced
                    .err()
                    .map(|e| format!(" (sync failed: {e})"))
                    .unwrap_or_default()
            ));
        }
        report
    }

    /// What `inspect` shows of a volume's fill.
    pub(crate) fn fill_info(&self, rec: &VolumeRecord, info: &mut BTreeMap<String, String>) {
        let Some(fill) = &rec.instant else {
            return;
        };
        info.insert("InstantRestore".into(), redact_urls(&fill.backup_url));
        let fills = &self.inner.fills;
        if let Some(s) = locked(&fills.sessions).get(&rec.name) {
            let (done, all) = (s.overlay.map().filled(), s.overlay.map().chunk_count());
            info.insert("FillChunks".into(), format!("{done}/{all}"));
            let pct = if all == 0 {
                100.0
            } else {
                done as f64 * 100.0 / all as f64
            };
            info.insert("FillPercent".into(), format!("{pct:.1}"));
        }
        let state = locked(&fills.trouble)
            .get(&rec.name)
            .cloned()
            .unwrap_or_else(|| "filling".into());
        info.insert("FillState".into(), state);
    }

    /// Refuses to delete a backup an instant restore is filling a volume from.
    pub(crate) fn check_backup_not_filling(&self, url: &str) -> Result<()> {
        let Some(key) = backup_key(url) else {
            return Ok(());
        };
        let st = self.state();
        let user = st.volumes.values().find(|r| {
            r.instant
                .as_ref()
                .is_some_and(|f| backup_key(&f.backup_url).as_ref() == Some(&key))
        });
        match user {
            Some(rec) => Err(Error::busy(
                &redact_urls(url),
                format!(
                    "an instant restore is filling volume {} from it; delete the backup once \
                     `convoy inspect {}` no longer shows InstantRestore",
                    rec.name, rec.name
                ),
            )),
            None => Ok(()),
        }
    }
}
