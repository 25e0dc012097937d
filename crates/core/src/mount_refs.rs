//! Mount references: which holders keep each volume mounted, persisted under the root.
//!
//! A holder is an id a caller mounts a volume for — in practice Docker's mount IDs: dockerd
//! mounts a volume once per container start (and once more to copy image content), each time
//! with a fresh random ID, and unmounts with the same ID. The volume is mounted for the first
//! holder and unmounted when the last one leaves (`mounts.rs`). The table is written after every
//! change (atomically, [`write_atomic`]) so that a restart keeps the references: dockerd does
//! not send them again.
//!
//! Every change is made while the volume's lock is held; the table's own mutex (in the
//! manager) only orders the writes of the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::durable::write_atomic;
use crate::error::{Error, Result};

/// File name of the mount references under the root (`{"volume": ["id1", "id2"]}`). The name
/// is the one the daemon used before the table moved into the manager, so a root keeps its
/// references across the upgrade.
pub const MOUNT_REFS_FILE: &str = "docker-mounts.json";

/// Volume name → the holders keeping it mounted.
type Table = BTreeMap<String, BTreeSet<String>>;

/// The persisted table of mount references.
#[derive(Debug)]
pub(crate) struct MountRefs {
    path: PathBuf,
    table: Table,
}

impl MountRefs {
    /// Loads the table from `root` (empty when the file does not exist yet).
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] naming the file when it cannot be parsed; [`Error::Io`].
    pub(crate) fn load(root: &Path) -> Result<Self> {
        let path = root.join(MOUNT_REFS_FILE);
        let table = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::CorruptRecord {
                path: path.clone(),
                reason: format!("cannot parse the Docker mount references: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Table::new(),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        Ok(Self { path, table })
    }

    /// How many holders keep `volume` mounted.
    pub(crate) fn holders(&self, volume: &str) -> usize {
        self.table.get(volume).map_or(0, BTreeSet::len)
    }

    /// Whether `holder` keeps `volume` mounted.
    pub(crate) fn holds(&self, volume: &str, holder: &str) -> bool {
        self.table.get(volume).is_some_and(|h| h.contains(holder))
    }

    /// Records `holder` on `volume` and saves.
    pub(crate) fn add(&mut self, volume: &str, holder: &str) -> Result<()> {
        if self.holds(volume, holder) {
            return Ok(());
        }
        self.change(|table| {
            table
                .entry(volume.to_owned())
                .or_default()
                .insert(holder.to_owned());
        })
    }

    /// Removes `holder` from `volume` and saves; answers whether it was there.
    pub(crate) fn remove(&mut self, volume: &str, holder: &str) -> Result<bool> {
        if !self.holds(volume, holder) {
            return Ok(false);
        }
        self.change(|table| {
            if let Some(holders) = table.get_mut(volume) {
                holders.remove(holder);
                if holders.is_empty() {
                    table.remove(volume);
                }
            }
        })?;
        Ok(true)
    }

    /// Forgets every reference to `volume` and saves.
    pub(crate) fn forget(&mut self, volume: &str) -> Result<()> {
        if !self.table.contains_key(volume) {
            return Ok(());
        }
        self.change(|table| {
            table.remove(volume);
        })
    }

    /// Forgets the references of volumes `exists` does not know (their volume was deleted by
    /// a process that stopped before forgetting them) and saves; answers those volumes.
    pub(crate) fn retain_volumes(&mut self, exists: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let gone: Vec<String> = self.table.keys().filter(|v| !exists(v)).cloned().collect();
        if !gone.is_empty() {
            self.change(|table| table.retain(|v, _| !gone.contains(v)))?;
        }
        Ok(gone)
    }

    /// Applies `edit` to a copy of the table, writes the copy and only then keeps it: the
    /// table in memory is always what the file says.
    fn change(&mut self, edit: impl FnOnce(&mut Table)) -> Result<()> {
        let mut next = self.table.clone();
        edit(&mut next);
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.path, &bytes)?;
        self.table = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = MountRefs::load(dir.path()).unwrap();
        mounts.add("v", "a").unwrap();
        mounts.add("v", "b").unwrap();
        mounts.add("w", "c").unwrap();
        assert!(mounts.remove("w", "c").unwrap());
        assert!(!mounts.remove("w", "c").unwrap());
        let mut again = MountRefs::load(dir.path()).unwrap();
        assert_eq!(again.holders("v"), 2);
        assert_eq!(again.holders("w"), 0);
        assert!(again.holds("v", "a"));
        again.forget("v").unwrap();
        assert_eq!(MountRefs::load(dir.path()).unwrap().holders("v"), 0);
    }

    #[test]
    fn the_file_keeps_the_daemons_former_shape() {
        let dir = tempfile::tempdir().unwrap();
        // As the daemon wrote it before the table moved into the manager.
        std::fs::write(
            dir.path().join(MOUNT_REFS_FILE),
            br#"{"vol": ["id1", "id2"]}"#,
        )
        .unwrap();
        let mut mounts = MountRefs::load(dir.path()).unwrap();
        assert_eq!(mounts.holders("vol"), 2);
        mounts.add("other", "id3").unwrap();
        assert!(mounts.remove("vol", "id1").unwrap());
        let text = std::fs::read_to_string(dir.path().join(MOUNT_REFS_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"other": ["id3"], "vol": ["id2"]}),
            "{text}"
        );
        // The last holder leaving leaves an empty table, `{}`.
        mounts.remove("vol", "id2").unwrap();
        mounts.remove("other", "id3").unwrap();
        let text = std::fs::read_to_string(dir.path().join(MOUNT_REFS_FILE)).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn references_of_unknown_volumes_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = MountRefs::load(dir.path()).unwrap();
        mounts.add("kept", "a").unwrap();
        mounts.add("gone", "b").unwrap();
        let dropped = mounts.retain_volumes(|v| v == "kept").unwrap();
        assert_eq!(dropped, ["gone"]);
        let again = MountRefs::load(dir.path()).unwrap();
        assert_eq!((again.holders("kept"), again.holders("gone")), (1, 0));
    }

    #[test]
    fn a_corrupt_table_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MOUNT_REFS_FILE), b"{not json").unwrap();
        let err = MountRefs::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(MOUNT_REFS_FILE) && err.contains("cannot parse"),
            "{err}"
        );
    }
}
