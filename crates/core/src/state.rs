//! In-memory state of the manager: the records by volume name, per-volume operation locks,
//! and the snapshots a backup is reading. Guarded by one short-held std mutex; long operations
//! hold only their volume's async lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::records::{ObjectState, VolumeRecord};

/// Shared mutable state.
#[derive(Default)]
pub(crate) struct State {
    /// Every volume record (all drivers), by name.
    pub volumes: BTreeMap<String, VolumeRecord>,
    /// Per-volume operation locks.
    pub locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Snapshots being read by a backup, with the number of readers.
    pub busy_snapshots: HashMap<String, usize>,
}

impl State {
    /// Fails when `name` is taken by a volume or a snapshot.
    pub fn check_free(&self, name: &str) -> Result<()> {
        if self.volumes.contains_key(name) {
            return Err(Error::AlreadyExists {
                what: "volume",
                name: name.to_owned(),
            });
        }
        if self.owner_of_snapshot(name).is_some() {
            return Err(Error::AlreadyExists {
                what: "snapshot",
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// The volume holding snapshot `name`.
    pub fn owner_of_snapshot(&self, name: &str) -> Option<&VolumeRecord> {
        self.volumes
            .values()
            .find(|v| v.snapshots.contains_key(name))
    }

    /// The lock of volume `name` (made on first use).
    pub fn lock_of(&mut self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.entry(name.to_owned()).or_default().clone()
    }

    /// A ready volume's record.
    pub fn ready_volume(&self, name: &str) -> Result<&VolumeRecord> {
        match self.volumes.get(name) {
            None => Err(Error::not_found("volume", name)),
            Some(v) if v.state == ObjectState::Ready => Ok(v),
            Some(v) => Err(Error::busy(
                name,
                format!(
                    "it is being {}",
                    if v.state == ObjectState::Creating {
                        "created"
                    } else {
                        "deleted"
                    }
                ),
            )),
        }
    }
}
