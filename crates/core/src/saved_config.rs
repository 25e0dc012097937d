//! `<root>/convoy.cfg`, the setup saved by an earlier run: the one module that reads and writes
//! it. The file is convoy's own (a [`ManagerConfig`] in JSON), or the original Convoy's (its
//! daemon's saved flags, another format, read through [`crate::original`]) on a root convoy
//! takes over. The daemon checks its flags against it ([`saved_config`]); the manager reuses
//! it when no drivers are given, writes it once the drivers have started, and replaces the
//! original's, once adopted, with its own.

use std::fs;
use std::path::{Path, PathBuf};

use crate::durable::write_atomic;
use crate::error::{Error, Result};
use crate::types::ManagerConfig;

/// Name of the saved setup under the root.
pub const CONFIG_FILE: &str = "convoy.cfg";

/// What `<root>/convoy.cfg` holds, as convoy's setup (its `root` is the root it was read from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavedConfig {
    /// convoy's own, saved by an earlier start.
    Convoy(ManagerConfig),
    /// The original Convoy's (with its `devicemapper.cfg`): its drivers and the `dm.*` options
    /// of its pool. The manager adopts its volumes (`docs/migrating.md`).
    Original(ManagerConfig),
}

/// The file's bytes, `None` when there is none.
fn read(root: &Path) -> Result<Option<(PathBuf, Vec<u8>)>> {
    let path = root.join(CONFIG_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some((path, bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// The setup saved under `root`, `None` when there is no `convoy.cfg`.
///
/// # Errors
/// [`Error::CorruptRecord`] when convoy's own file does not parse; the refusals of the
/// original's ([`original_saved_config`]); [`Error::Io`].
pub fn saved_config(root: &Path) -> Result<Option<SavedConfig>> {
    let Some((path, bytes)) = read(root)? else {
        return Ok(None);
    };
    if crate::original::is_original_config(&bytes) {
        return crate::original::config_of_original(root, &path, &bytes)
            .map(|c| Some(SavedConfig::Original(c)));
    }
    let saved: ManagerConfig =
        serde_json::from_slice(&bytes).map_err(|e| Error::CorruptRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    Ok(Some(SavedConfig::Convoy(ManagerConfig {
        root: root.to_path_buf(),
        ..saved
    })))
}

/// The setup the original daemon saved under `root` (`convoy.cfg`, and for devicemapper its
/// `devicemapper.cfg`), as convoy's [`ManagerConfig`]: its drivers (the default first) and the
/// `dm.*` options of its pool. `None` when `<root>/convoy.cfg` is missing or is not the
/// original's (convoy's own is not parsed here).
///
/// # Errors
/// [`Error::InvalidArgument`] for a driver convoy does not have, an unreadable or missing
/// `devicemapper.cfg`; [`Error::Io`].
pub fn original_saved_config(root: &Path) -> Result<Option<ManagerConfig>> {
    match read(root)? {
        Some((path, bytes)) if crate::original::is_original_config(&bytes) => {
            crate::original::config_of_original(root, &path, &bytes).map(Some)
        }
        _ => Ok(None),
    }
}

/// Writes `<root>/convoy.cfg`, atomically.
pub(crate) fn save_config(config: &ManagerConfig) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(config).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&config.root.join(CONFIG_FILE), &bytes)
}

/// Keeps the original's `convoy.cfg` in the adopted directory and writes convoy's in its place.
pub(crate) fn replace_original_config(config: &ManagerConfig) -> Result<()> {
    crate::original::preserve(&config.root, Path::new(CONFIG_FILE))?;
    save_config(config)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn convoys_own_file_round_trips_and_a_corrupt_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved_config(dir.path()).unwrap(), None);
        let config = ManagerConfig {
            root: dir.path().to_path_buf(),
            drivers: vec!["vfs".into()],
            driver_opts: BTreeMap::from([("vfs.path".into(), "/srv".into())]),
        };
        save_config(&config).unwrap();
        assert_eq!(
            saved_config(dir.path()).unwrap(),
            Some(SavedConfig::Convoy(config))
        );
        assert_eq!(original_saved_config(dir.path()).unwrap(), None);

        fs::write(dir.path().join(CONFIG_FILE), b"garbage").unwrap();
        let e = saved_config(dir.path()).unwrap_err();
        assert!(matches!(e, Error::CorruptRecord { .. }), "{e}");
        assert!(e.to_string().contains(CONFIG_FILE), "{e}");
        // Only the original's file is looked for: a garbled one of convoy's is not.
        assert_eq!(original_saved_config(dir.path()).unwrap(), None);
    }
}
