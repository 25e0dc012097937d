//! The driver's own records: for each volume it created, the CSI request that made it, so a
//! repeated `CreateVolume` is answered with the same volume and a conflicting one with
//! ALREADY_EXISTS. One small JSON file per volume under `<state_dir>/volumes/`, written before
//! the volume is created (atomically, with core's writer) and removed after it is
//! deleted; a record whose volume does not exist (a crash between the two) is simply redone.

use std::collections::BTreeMap;
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

/// The record file of volume `id`; `None` for an id that is not a convoy name (no volume has
/// it, and a `/` or `..` in it must not reach the file system).
fn path(dir: &Path, id: &str) -> Option<PathBuf> {
    convoy_core::validate_name(id).ok()?;
    Some(dir.join("volumes").join(format!("{id}.json")))
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what} {}: {e}", path.display()))
}

/// The record of volume `id`, if the driver made it.
pub fn load(dir: &Path, id: &str) -> Result<Option<VolumeRequest>, Status> {
    let Some(file) = path(dir, id) else {
        return Ok(None);
    };
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error("cannot parse CSI record", &file, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("cannot read CSI record", &file, e)),
    }
}

/// Saves the record of volume `id` durably ([`convoy_core::write_atomic`]).
pub fn save(dir: &Path, id: &str, request: &VolumeRequest) -> Result<(), Status> {
    let file = path(dir, id)
        .ok_or_else(|| Status::invalid_argument(format!("{id:?} is not a convoy volume name")))?;
    let bytes = serde_json::to_vec_pretty(request).map_err(|e| io_error("encode", &file, e))?;
    convoy_core::write_atomic(&file, &bytes)
        .map_err(|e| io_error("cannot write CSI record", &file, e))
}

/// Removes the record of volume `id` (no record, or an id no volume can have, is fine).
pub fn remove(dir: &Path, id: &str) -> Result<(), Status> {
    let Some(file) = path(dir, id) else {
        return Ok(());
    };
    convoy_core::remove_durably(&file).map_err(|e| io_error("cannot remove CSI record", &file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_names_never_reach_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("etc.json");
        std::fs::write(&outside, b"not a record").unwrap();
        let records = dir.path().join("state");
        // `<state>/volumes/../../etc.json` would be `outside`.
        remove(&records, "../../etc").unwrap();
        assert!(outside.exists());
        assert_eq!(load(&records, "../../etc").unwrap(), None);
        let request = VolumeRequest {
            name: "x".into(),
            required_bytes: 0,
            limit_bytes: 0,
            parameters: BTreeMap::new(),
            source: String::new(),
        };
        let err = save(&records, "../../etc", &request).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        save(&records, "pvc-1", &request).unwrap();
        assert_eq!(load(&records, "pvc-1").unwrap(), Some(request));
    }
}
