//! Mounting volumes: [`VolumeManager::mount_volume`] and `umount_volume`, and mounts on behalf
//! of holders ([`VolumeManager::mount_for`], `unmount_for`, `mount_holders`,
//! `delete_unheld_volume`): Docker's reference-counted mounts, kept in `mount_refs.rs`.
//!
//! Everything here runs under the volume's lock, and only that: mounts of different volumes
//! (each possibly waiting on a slow device) proceed in parallel. Where a volume is mounted is
//! asked of the driver (devicemapper: the mount table), never taken from the record alone, so
//! a volume unmounted behind convoy's back is mounted again rather than handed out unmounted.

use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use crate::driver::Driver;
use crate::error::{Error, ErrorKind, Result};
use crate::guards::detached;
use crate::manager::{blocking, VolumeManager};
use crate::mount_refs::MountRefs;
use crate::records::VolumeRecord;

/// Where [`VolumeManager::mount_at`] mounts.
enum Place {
    /// At this path (busy when mounted elsewhere).
    Given(PathBuf),
    /// At the driver's default (busy when mounted elsewhere).
    Default,
    /// Where the volume is mounted now, else at the driver's default.
    Current,
}

impl VolumeManager {
    /// Mounts a volume at `mountpoint` or the driver's default (devicemapper:
    /// `<root>/devicemapper/mounts/<name>`). Returns the mount point. Idempotent: a volume
    /// already mounted there stays as it is.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Busy`] when mounted elsewhere; mount errors.
    pub async fn mount_volume(&self, name: &str, mountpoint: Option<PathBuf>) -> Result<PathBuf> {
        // Detached: a caller that goes away neither cuts the mount short nor releases the
        // volume's lock while the mount still runs.
        let (me, name) = (self.clone(), name.to_owned());
        detached("mount volume", async move {
            let (_guard, rec) = me.lock_volume(&name).await?;
            let place = mountpoint.map_or(Place::Default, Place::Given);
            let worker = me.clone();
            blocking(move || worker.mount_at(rec, place)).await
        })
        .await
    }

    /// Unmounts a volume (idempotent).
    ///
    /// # Errors
    /// [`Error::NotFound`]; umount errors (e.g. busy).
    pub async fn umount_volume(&self, name: &str) -> Result<()> {
        let (me, name) = (self.clone(), name.to_owned());
        detached("unmount volume", async move {
            let (_guard, rec) = me.lock_volume(&name).await?;
            let worker = me.clone();
            blocking(move || worker.umount_now(rec)).await
        })
        .await
    }

    /// Mounts volume `name` for `holder` (an id of the caller's, e.g. a Docker mount ID) and
    /// records the holder; answers the mount point. A volume already mounted is left where it
    /// is — where the driver finds it mounted, not where its record says (a volume unmounted
    /// behind convoy's back is mounted again at its default place). Mounting again for a
    /// holder that already holds the volume changes nothing. The holders are saved under the
    /// root (`docker-mounts.json`) and survive a restart.
    ///
    /// # Errors
    /// [`Error::NotFound`]; mount errors (nothing is recorded then); an error writing the
    /// references (the volume stays mounted, the holder is not recorded).
    pub async fn mount_for(&self, name: &str, holder: &str) -> Result<PathBuf> {
        let (me, name, holder) = (self.clone(), name.to_owned(), holder.to_owned());
        detached("mount volume", async move {
            let (_guard, rec) = me.lock_volume(&name).await?;
            let worker = me.clone();
            blocking(move || {
                let at = worker.mount_at(rec, Place::Current)?;
                worker.mount_refs().add(&name, &holder)?;
                Ok(at)
            })
            .await
        })
        .await
    }

    /// `holder` lets go of volume `name`; when it was the last holder the volume is unmounted.
    /// Answers whether `holder` held the volume: a holder that never mounted it (or already let
    /// go, or whose volume was deleted) changes nothing and is no error.
    ///
    /// # Errors
    /// Umount errors (the holder is forgotten all the same); an error writing the references.
    pub async fn unmount_for(&self, name: &str, holder: &str) -> Result<bool> {
        if !self.mount_refs().holds(name, holder) {
            return Ok(false);
        }
        let (me, name, holder) = (self.clone(), name.to_owned(), holder.to_owned());
        detached("unmount volume", async move {
            let (_guard, rec) = match me.lock_volume(&name).await {
                // Deleted meanwhile: its holders went with it.
                Err(e)
                    if e.kind() == ErrorKind::NotFound
                        && !me.mount_refs().holds(&name, &holder) =>
                {
                    return Ok(false)
                }
                locked => locked?,
            };
            let worker = me.clone();
            blocking(move || {
                let last = {
                    let mut refs = worker.mount_refs();
                    if !refs.remove(&name, &holder)? {
                        return Ok(false);
                    }
                    refs.holders(&name) == 0
                };
                if last {
                    worker.umount_now(rec)?;
                }
                Ok(true)
            })
            .await
        })
        .await
    }

    /// How many holders keep volume `name` mounted ([`VolumeManager::mount_for`]).
    pub fn mount_holders(&self, name: &str) -> usize {
        self.mount_refs().holders(name)
    }

    /// Deletes volume `name` and its snapshots, as [`VolumeManager::delete_volume`] does,
    /// unless holders keep it mounted (Docker's `Remove`). The check and the delete are made
    /// under the volume's lock, so no holder mounts it in between.
    ///
    /// # Errors
    /// [`Error::Busy`] while holders remain, and the errors of `delete_volume`.
    pub async fn delete_unheld_volume(&self, name: &str) -> Result<()> {
        let (me, name) = (self.clone(), name.to_owned());
        detached("delete volume", async move {
            me.delete_volume_now(&name, false, true).await
        })
        .await
    }

    /// The mount references (a short-held lock: taken with or without a volume's lock, never
    /// while the state's is held).
    pub(crate) fn mount_refs(&self) -> MutexGuard<'_, MountRefs> {
        self.inner
            .mount_refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// [`Error::Busy`] when holders keep `name` mounted (called under the volume's lock).
    pub(crate) fn check_unheld(&self, name: &str) -> Result<()> {
        match self.mount_holders(name) {
            0 => Ok(()),
            n => Err(Error::busy(
                name,
                format!("it is still mounted for {n} Docker container(s)"),
            )),
        }
    }

    /// Forgets every holder of `name` (its volume is gone).
    pub(crate) fn forget_holders(&self, name: &str) -> Result<()> {
        self.mount_refs().forget(name)
    }

    /// Mounts a locked volume at `place` and records where (blocking; under the volume's lock).
    fn mount_at(&self, mut rec: VolumeRecord, place: Place) -> Result<PathBuf> {
        let driver: Arc<dyn Driver> = self.driver(&rec.driver)?;
        let now = driver.mounted_at(&rec)?;
        let at = match place {
            Place::Given(at) => at,
            Place::Default => driver.default_mount_point(&rec),
            Place::Current => now
                .clone()
                .unwrap_or_else(|| driver.default_mount_point(&rec)),
        };
        if let Some(now) = now {
            if now != at {
                return Err(Error::busy(
                    &rec.name,
                    format!("it is mounted at {}; unmount it first", now.display()),
                ));
            }
        }
        let at = driver.mount(&rec, &at)?;
        rec.mount_point = Some(at.clone());
        self.commit(&rec)?;
        Ok(at)
    }

    /// Unmounts a locked volume wherever it is mounted and records it unmounted (blocking).
    fn umount_now(&self, mut rec: VolumeRecord) -> Result<()> {
        let driver = self.driver(&rec.driver)?;
        if let Some(at) = driver.mounted_at(&rec)? {
            driver.umount(&rec, &at)?;
        }
        rec.mount_point = None;
        self.commit(&rec)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::{CreateVolumeRequest, ManagerConfig, NoProgress, VolumeManager};

    /// Long enough never to fail a correct run; only turns a hang into a failure.
    pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

    /// A manager with the vfs driver under `dir`, holding `volumes`.
    pub(crate) async fn vfs_manager(dir: &std::path::Path, volumes: &[&str]) -> VolumeManager {
        let m = VolumeManager::open(ManagerConfig {
            root: dir.join("root"),
            drivers: vec!["vfs".into()],
            driver_opts: BTreeMap::from([(
                "vfs.path".to_owned(),
                dir.join("vols").display().to_string(),
            )]),
        })
        .await
        .unwrap();
        for name in volumes {
            let request = CreateVolumeRequest {
                name: Some((*name).into()),
                ..Default::default()
            };
            m.create_volume(request, Arc::new(NoProgress))
                .await
                .unwrap();
        }
        m
    }

    /// Docker mounts of different volumes do not wait for each other: a mount held up on one
    /// volume (its lock taken, as a mount waiting for mkfs or a slow device holds it) leaves
    /// mounts, unmounts and removes of other volumes free; the volume's lock is the only one
    /// they share. And the held-up mount, its caller gone, still completes (cancel safety).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mount_held_up_on_one_volume_holds_up_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let m = vfs_manager(dir.path(), &["slow", "fast", "doomed"]).await;
        let (held, _) = m.lock_volume("slow").await.unwrap();
        let waiting = tokio::spawn({
            let m = m.clone();
            async move { m.mount_for("slow", "first").await }
        });

        let others = async {
            let at = m.mount_for("fast", "a").await?;
            m.mount_for("fast", "b").await?;
            m.unmount_for("fast", "a").await?;
            m.delete_unheld_volume("doomed").await?;
            Ok::<_, crate::Error>(at)
        };
        let at = tokio::time::timeout(PATIENCE, others)
            .await
            .expect("mounts of other volumes waited for the held-up one")
            .unwrap();
        assert_eq!(at, dir.path().join("vols/fast"));
        assert_eq!(m.mount_holders("fast"), 1);
        assert!(!waiting.is_finished(), "the held-up mount did not wait");
        assert_eq!(m.mount_holders("slow"), 0);

        // The caller gives up; the mount is made once the volume is free all the same.
        waiting.abort();
        drop(held);
        tokio::time::timeout(PATIENCE, async {
            while m.mount_holders("slow") == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the abandoned mount was never made");
        assert!(m
            .inspect_volume("slow")
            .await
            .unwrap()
            .mount_point
            .is_some());
    }
}
