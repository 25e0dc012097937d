//! Records under the root directory: one JSON file per volume (its snapshots inside), written
//! atomically ([`write_atomic`]: temp file, fsync, rename over the old one, fsync of the
//! directory) so a crash leaves either the old or the new record, never a torn one.
//!
//! Layout: `<root>/convoy.cfg`, `<root>/lock`, `<root>/<driver>/volumes/<name>.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::{remove_durably, write_atomic};
use crate::error::{Error, Result};

/// Where an object is in its life: an intent is recorded before anything is made, so start-up
/// reconciliation knows what to finish or undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectState {
    /// Being made (created, restored); undone by reconciliation.
    Creating,
    /// Complete.
    Ready,
    /// Being removed; finished by reconciliation.
    Deleting,
}

/// The last backup made of a volume to one destination (for the incremental rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBackup {
    /// Backup name at the destination.
    pub backup_name: String,
    /// The snapshot it was made from.
    pub snapshot: String,
    /// That snapshot's UUID (a re-created snapshot of the same name does not count).
    pub snapshot_uuid: String,
}

/// A snapshot as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Name (unique across volumes and snapshots).
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// Creation time (RubyDate).
    pub created_time: String,
    /// Life state.
    pub state: ObjectState,
    /// Size of the volume when snapshotted, bytes.
    pub size: u64,
    /// devicemapper: thin id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_id: Option<u32>,
    /// vfs: directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// A volume as recorded (the file `<root>/<driver>/volumes/<name>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Name.
    pub name: String,
    /// UUID.
    pub uuid: String,
    /// Driver name.
    pub driver: String,
    /// Creation time (RubyDate).
    pub created_time: String,
    /// Life state.
    pub state: ObjectState,
    /// Size in bytes (devicemapper: the thin size, whole pool blocks; vfs: 0).
    pub size: u64,
    /// Size asked for, when the driver rounded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_size: Option<u64>,
    /// Where it is mounted (re-mounted at start-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<PathBuf>,
    /// devicemapper: thin id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_id: Option<u32>,
    /// vfs: directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Filesystem made on it (devicemapper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    /// Restored from this backup URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// Snapshots by name.
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotRecord>,
    /// Last backup per destination URL.
    #[serde(default)]
    pub last_backups: BTreeMap<String, LastBackup>,
    /// An expand or revert under way (its intent): start-up finishes or rolls it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// An instant restore filling the volume (`instant/`): until it is handed over, the
    /// volume's device serves the backup through the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant: Option<InstantFill>,
}

/// What start-up needs to resume an instant restore (`docs/instant.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstantFill {
    /// The backup being copied in.
    pub backup_url: String,
    /// The S3 endpoint it was reached through, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// The backup's UUID (the fill map is made for it and checked against it).
    pub backup_uuid: String,
    /// `N` of the `/dev/nbdN` the volume's device maps, in boot `boot_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_index: Option<u32>,
    /// The boot the index belongs to (after a reboot it means nothing).
    #[serde(default)]
    pub boot_id: String,
}

/// An operation on a ready volume recorded before it changes anything (see `docs/core.md`,
/// "Crash ordering").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pending {
    /// Growing the volume to `size` bytes (whole pool blocks); `requested` is what was asked.
    Expand {
        /// The new size, bytes.
        size: u64,
        /// The size asked for, when rounding changed it.
        requested: Option<u64>,
    },
    /// Pointing the volume at a new thin snapshot of `snapshot`: while the record's `dev_id`
    /// is `old_dev_id` the revert is rolled back, once it is `new_dev_id` it is finished.
    Revert {
        /// The snapshot reverted to.
        snapshot: String,
        /// The volume's thin id before.
        old_dev_id: u32,
        /// The new thin id (a snapshot of the snapshot's).
        new_dev_id: u32,
    },
}

/// The volume records of one driver.
#[derive(Clone, Debug)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    /// Records of `driver` under `root`.
    pub fn new(root: &Path, driver: &str) -> Self {
        RecordStore {
            dir: root.join(driver).join("volumes"),
        }
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes (replaces) the record of `rec.name`.
    pub fn save(&self, rec: &VolumeRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.path_of(&rec.name), &bytes)
    }

    /// Removes the record of `name`.
    pub fn remove(&self, name: &str) -> Result<()> {
        remove_durably(&self.path_of(name))
    }

    /// Moves a record to `<root>/<driver>/released/` (a reference-only delete: the data stays,
    /// convoy forgets the volume but keeps its ids reserved).
    pub fn release_record(&self, rec: &VolumeRecord) -> Result<()> {
        let dir = self.released_dir();
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&dir.join(format!("{}-{}.json", rec.name, rec.uuid)), &bytes)?;
        self.remove(&rec.name)
    }

    fn released_dir(&self) -> PathBuf {
        self.dir.with_file_name("released")
    }

    /// Records moved aside by [`RecordStore::release_record`].
    pub fn load_released(&self) -> Result<Vec<VolumeRecord>> {
        let dir = self.released_dir();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("read", &dir, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| Error::io("read", &dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
                out.push(
                    serde_json::from_slice(&bytes).map_err(|e| Error::CorruptRecord {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
                );
            }
        }
        Ok(out)
    }

    /// Every record, removing temp files a crash left behind.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] for a record that does not parse or whose name does not match
    /// its file; [`Error::Io`].
    pub fn load_all(&self) -> Result<Vec<VolumeRecord>> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))?;
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &self.dir, e))?;
            let path = entry.path();
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with('.') && file.ends_with(".tmp") {
                fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                continue;
            }
            let Some(stem) = file.strip_suffix(".json") else {
                continue;
            };
            let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
            let rec: VolumeRecord =
                serde_json::from_slice(&bytes).map_err(|e| Error::CorruptRecord {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if rec.name != stem {
                return Err(Error::CorruptRecord {
                    path,
                    reason: format!("it names volume {:?}", rec.name),
                });
            }
            out.push(rec);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(name: &str) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            uuid: "u".into(),
            driver: "vfs".into(),
            created_time: "t".into(),
            state: ObjectState::Ready,
            size: 0,
            requested_size: None,
            mount_point: None,
            dev_id: Some(3),
            path: None,
            filesystem: None,
            restored_from: None,
            snapshots: BTreeMap::new(),
            last_backups: BTreeMap::new(),
            pending: None,
            instant: None,
        }
    }

    #[test]
    fn records_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path(), "vfs");
        let mut a = sample("a1");
        store.save(&a).unwrap();
        a.state = ObjectState::Deleting;
        store.save(&a).unwrap();
        store.save(&sample("b2")).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], a);
        store.remove("a1").unwrap();
        store.remove("a1").unwrap();
        assert_eq!(store.load_all().unwrap().len(), 1);
    }

    #[test]
    fn pending_intents_round_trip_and_old_records_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path(), "vfs");
        let mut a = sample("a1");
        a.pending = Some(Pending::Revert {
            snapshot: "s1".into(),
            old_dev_id: 3,
            new_dev_id: 9,
        });
        store.save(&a).unwrap();
        let mut b = sample("b2");
        b.pending = Some(Pending::Expand {
            size: 1 << 30,
            requested: Some((1 << 30) - 1),
        });
        store.save(&b).unwrap();
        assert_eq!(store.load_all().unwrap(), vec![a, b]);
        // A record written before intents existed has no `pending` key.
        let mut old = serde_json::to_value(sample("c3")).unwrap();
        assert!(old.get("pending").is_none());
        old.as_object_mut().unwrap().remove("pending");
        fs::write(store.dir().join("c3.json"), old.to_string()).unwrap();
        assert_eq!(store.load_all().unwrap()[2].pending, None);
    }

    #[test]
    fn leftover_temp_files_are_removed_and_corrupt_records_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(dir.path(), "vfs");
        store.save(&sample("a1")).unwrap();
        fs::write(store.dir().join(".a1.json.tmp"), b"{half").unwrap();
        assert_eq!(store.load_all().unwrap().len(), 1);
        assert!(!store.dir().join(".a1.json.tmp").exists());

        fs::write(store.dir().join("bad.json"), b"{half").unwrap();
        let e = store.load_all().unwrap_err();
        assert!(e.to_string().contains("bad.json"), "{e}");

        fs::write(
            store.dir().join("bad.json"),
            serde_json::to_vec(&sample("other")).unwrap(),
        )
        .unwrap();
        let e = store.load_all().unwrap_err();
        assert!(e.to_string().contains("names volume"), "{e}");
    }
}
