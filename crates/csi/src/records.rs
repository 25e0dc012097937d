//! The driver's own records: for each volume it created, the CSI request that made it, so a
//! repeated `CreateVolume` is answered with the same volume and a conflicting one with
//! ALREADY_EXISTS. One small JSON file per volume under `<state_dir>/volumes/`, written before
//! the volume is created (write to a temporary file, fsync, rename) and removed after it is
//! deleted; a record whose volume does not exist (a crash between the two) is simply redone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::Status;

/// What a `CreateVolume` asked for, as far as it decides the volume's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRequest {
    /// The CSI name.
    pub name: String,
    /// `capacity_range.required_bytes` (0: none).
    pub required_bytes: i64,
    /// `capacity_range.limit_bytes` (0: none).
    pub limit_bytes: i64,
    /// The parameters (StorageClass parameters).
    pub parameters: BTreeMap<String, String>,
    /// `snapshot:<id>` or `volume:<id>` for a clone; empty for a fresh volume.
    pub source: String,
}

fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join("volumes").join(format!("{id}.json"))
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what} {}: {e}", path.display()))
}

/// The record of volume `id`, if the driver made it.
pub fn load(dir: &Path, id: &str) -> Result<Option<VolumeRequest>, Status> {
    let file = path(dir, id);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error("cannot parse CSI record", &file, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("cannot read CSI record", &file, e)),
    }
}

/// Saves the record of volume `id` durably.
pub fn save(dir: &Path, id: &str, request: &VolumeRequest) -> Result<(), Status> {
    let file = path(dir, id);
    let parent = file.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
    let tmp = file.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(request).map_err(|e| io_error("encode", &file, e))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)?;
        std::fs::File::open(parent)?.sync_all()
    };
    write().map_err(|e| io_error("cannot write CSI record", &file, e))
}

/// Removes the record of volume `id` (no record is fine).
pub fn remove(dir: &Path, id: &str) -> Result<(), Status> {
    let file = path(dir, id);
    match std::fs::remove_file(&file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("cannot remove CSI record", &file, e)),
    }
}
