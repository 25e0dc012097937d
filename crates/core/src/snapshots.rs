//! Snapshot operations of [`VolumeManager`].

use crate::error::{Error, Result};
use crate::guards::{detached, Reservation, Reserved};
use crate::manager::{blocking, VolumeManager};
use crate::names::{generate_name, now_ruby_date, validate_name};
use crate::records::{ObjectState, SnapshotRecord};
use crate::types::Snapshot;

impl VolumeManager {
    /// Snapshots a volume (devicemapper: a thin snapshot with the mounted filesystem frozen
    /// around it; vfs: a copy of the directory). `name` `None` generates `snapshot-<16 hex>`.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::AlreadyExists`] (names are shared with volumes),
    /// [`Error::NotFound`] for the volume, driver errors (nothing is left behind).
    pub async fn create_snapshot(&self, volume: &str, name: Option<String>) -> Result<Snapshot> {
        let (me, volume) = (self.clone(), volume.to_owned());
        detached("create snapshot", async move {
            me.create_snapshot_now(&volume, name).await
        })
        .await
    }

    async fn create_snapshot_now(&self, volume: &str, name: Option<String>) -> Result<Snapshot> {
        let name = match name {
            Some(n) => {
                validate_name(&n)?;
                n
            }
            None => generate_name("snapshot"),
        };
        let (_guard, mut vol) = self.lock_volume(volume).await?;
        let mut snap = SnapshotRecord {
            name: name.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            created_time: now_ruby_date(),
            state: ObjectState::Creating,
            size: vol.size,
            dev_id: None,
            path: None,
        };
        let driver = self.driver(&vol.driver)?;
        let store = self.store(&vol.driver)?;
        let mut reservation = {
            let mut st = self.state();
            st.check_free(&name)?;
            driver.plan_snapshot(&vol, &mut snap)?;
            vol.snapshots.insert(name.clone(), snap.clone());
            st.volumes.insert(vol.name.clone(), vol.clone());
            Reservation::new(&self.inner, Reserved::Snapshot, volume, &name)
        };
        let me = self.clone();
        let result = blocking(move || {
            // Intent first, so a crash from here on is undone at start-up.
            if let Err(e) = store.save(&vol) {
                driver.release_snapshot(&snap);
                return Err(e);
            }
            crate::crashpoint::hit("create-snapshot-after-intent");
            if let Err(e) = driver.create_snapshot(&vol, &snap) {
                vol.snapshots.remove(&snap.name);
                if store.save(&vol).is_ok() {
                    driver.release_snapshot(&snap);
                }
                me.state().volumes.insert(vol.name.clone(), vol);
                return Err(e);
            }
            crate::crashpoint::hit("create-snapshot-before-ready");
            snap.state = ObjectState::Ready;
            vol.snapshots.insert(snap.name.clone(), snap.clone());
            me.commit(&vol)?;
            Ok(me.to_snapshot(&vol, &snap))
        })
        .await;
        match &result {
            Ok(_) => reservation.keep(),
            // Dropped, the reservation removes the in-memory entry if the worker could not.
            Err(_) => reservation.on_disk(false),
        }
        result
    }

    /// Deletes a snapshot.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Busy`] while a backup reads it.
    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        let (me, name) = (self.clone(), name.to_owned());
        detached("delete snapshot", async move {
            me.delete_snapshot_now(&name).await
        })
        .await
    }

    async fn delete_snapshot_now(&self, name: &str) -> Result<()> {
        let (_guard, mut vol) = self.lock_snapshot_owner(name).await?;
        let mut snap = vol
            .snapshots
            .get(name)
            .filter(|s| s.state == ObjectState::Ready)
            .cloned()
            .ok_or_else(|| Error::not_found("snapshot", name))?;
        if self.state().busy_snapshots.contains_key(name) {
            return Err(Error::busy(
                name,
                "a backup is reading it; try again when it is done",
            ));
        }
        let driver = self.driver(&vol.driver)?;
        let me = self.clone();
        blocking(move || {
            snap.state = ObjectState::Deleting;
            vol.snapshots.insert(snap.name.clone(), snap.clone());
            me.commit(&vol)?;
            if let Err(e) = driver.remove_snapshot(&vol, &snap) {
                // Refused (a read-only pool): the snapshot is still whole, so it is ready
                // again rather than left `Deleting` until start-up finishes the delete.
                if driver.failed_remove_keeps_snapshot() {
                    snap.state = ObjectState::Ready;
                    vol.snapshots.insert(snap.name.clone(), snap);
                    me.commit(&vol)?;
                }
                return Err(e);
            }
            vol.snapshots.remove(&snap.name);
            me.commit(&vol)?;
            driver.release_snapshot(&snap);
            Ok(())
        })
        .await
    }

    /// One snapshot.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn inspect_snapshot(&self, name: &str) -> Result<Snapshot> {
        let st = self.state();
        let vol = st
            .owner_of_snapshot(name)
            .ok_or_else(|| Error::not_found("snapshot", name))?;
        let snap = vol
            .snapshots
            .get(name)
            .filter(|s| s.state == ObjectState::Ready)
            .ok_or_else(|| Error::not_found("snapshot", name))?;
        Ok(self.to_snapshot(vol, snap))
    }

    pub(crate) fn volume_of_snapshot(&self, name: &str) -> Result<String> {
        self.state()
            .owner_of_snapshot(name)
            .map(|v| v.name.clone())
            .ok_or_else(|| Error::not_found("snapshot", name))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::error::ErrorKind;
    use crate::mounts::tests::{vfs_manager, PATIENCE};
    use crate::records::ObjectState;

    /// A snapshot delete that waited for its volume's lock while the volume was deleted and
    /// then made again under its name (being created as the delete wakes) answers that the
    /// snapshot is not found, naming the snapshot (it answered "vol is busy: it is being
    /// created", naming the volume: seen in the reliability suite's storm on shared names).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_whose_volume_went_while_waiting_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let m = vfs_manager(dir.path(), &["vol"]).await;
        m.create_snapshot("vol", Some("vol-s".into()))
            .await
            .unwrap();
        let lock = m.state().lock_of("vol");
        let (held, _) = m.lock_volume("vol").await.unwrap();
        let waiters = Arc::strong_count(&lock);
        let delete = tokio::spawn({
            let m = m.clone();
            async move { m.delete_snapshot("vol-s").await }
        });
        // Once the delete holds a handle on the lock, it is waiting for it.
        tokio::time::timeout(PATIENCE, async {
            while Arc::strong_count(&lock) == waiters {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the snapshot delete never waited for the volume's lock");
        // Meanwhile the volume goes (its lock with it) and is being made again.
        {
            let mut st = m.state();
            st.locks.remove("vol");
            let v = st.volumes.get_mut("vol").unwrap();
            v.snapshots.clear();
            v.state = ObjectState::Creating;
        }
        drop(held);
        let e = tokio::time::timeout(PATIENCE, delete)
            .await
            .expect("the snapshot delete hung")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("vol-s"), "{e}");
    }
}
