//! Docker mount references: which Docker mount IDs hold each volume mounted.
//!
//! dockerd mounts a volume once per container start (and once more to copy image content), each
//! time with a fresh random ID, and unmounts with the same ID. The volume is mounted on the first
//! ID and unmounted when the last one leaves. The table is saved under the daemon root after every
//! change so that a daemon restart keeps the references (dockerd does not re-send them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::{durable, DaemonError, Result};

/// File name of the table under the daemon root.
pub const DOCKER_MOUNTS_FILE: &str = "docker-mounts.json";

/// The persisted table: volume name → Docker mount IDs.
#[derive(Debug)]
pub struct DockerMounts {
    path: PathBuf,
    table: BTreeMap<String, BTreeSet<String>>,
}

impl DockerMounts {
    /// Loads the table from `root` (empty if the file does not exist yet).
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(DOCKER_MOUNTS_FILE);
        let table = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DaemonError::Config {
                path: path.clone(),
                message: format!("cannot parse the Docker mount table: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(DaemonError::File {
                    what: "cannot read",
                    path,
                    source,
                })
            }
        };
        Ok(Self { path, table })
    }

    /// The IDs holding `volume`.
    pub fn holders(&self, volume: &str) -> usize {
        self.table.get(volume).map_or(0, BTreeSet::len)
    }

    /// Whether `id` holds `volume`.
    pub fn holds(&self, volume: &str, id: &str) -> bool {
        self.table.get(volume).is_some_and(|ids| ids.contains(id))
    }

    /// Records `id` on `volume` and saves the table.
    pub fn add(&mut self, volume: &str, id: &str) -> Result<()> {
        self.table
            .entry(volume.to_string())
            .or_default()
            .insert(id.to_string());
        self.save()
    }

    /// Removes `id` from `volume` and saves; answers whether it was there.
    pub fn remove(&mut self, volume: &str, id: &str) -> Result<bool> {
        let Some(ids) = self.table.get_mut(volume) else {
            return Ok(false);
        };
        let was = ids.remove(id);
        if ids.is_empty() {
            self.table.remove(volume);
        }
        if was {
            self.save()?;
        }
        Ok(was)
    }

    /// Forgets every reference to `volume` and saves.
    pub fn forget(&mut self, volume: &str) -> Result<()> {
        if self.table.remove(volume).is_some() {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.table).expect("a string table serializes");
        durable::write_file(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut mounts = DockerMounts::load(dir.path()).unwrap();
        mounts.add("v", "a").unwrap();
        mounts.add("v", "b").unwrap();
        mounts.add("w", "c").unwrap();
        assert!(mounts.remove("w", "c").unwrap());
        assert!(!mounts.remove("w", "c").unwrap());
        let mut again = DockerMounts::load(dir.path()).unwrap();
        assert_eq!(again.holders("v"), 2);
        assert_eq!(again.holders("w"), 0);
        assert!(again.holds("v", "a"));
        again.forget("v").unwrap();
        assert_eq!(DockerMounts::load(dir.path()).unwrap().holders("v"), 0);
    }

    #[test]
    fn a_corrupt_table_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DOCKER_MOUNTS_FILE), b"{not json").unwrap();
        let err = DockerMounts::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(DOCKER_MOUNTS_FILE) && err.contains("cannot parse"),
            "{err}"
        );
    }
}
