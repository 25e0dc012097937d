//! Durable file changes, the one home of convoy's atomic file writer: every small state file
//! (volume records, `convoy.cfg`, Docker mount references, policies, browse records, the CSI
//! driver's records) is written with [`write_atomic`], so a crash leaves the old file or the
//! new one, never a torn one.
//!
//! The writer puts the bytes in `.<name>.tmp` next to the file, fsyncs it, renames it over the
//! file and fsyncs the directory (the rename itself is durable only then). A crash may leave the
//! temp file behind; it is never read, and the next write of the same file replaces it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically and durably, creating its directory if needed.
///
/// # Errors
/// [`Error::Io`] naming the file (or the temp file, or the directory) and the step that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let file_name = path
        .file_name()
        .map_or_else(|| "record".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
    sync_dir(dir)
}

/// Removes `path` (absent is fine) and syncs its directory.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn remove_durably(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("remove", path, e)),
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsync of a directory, making renames and unlinks in it durable.
///
/// # Errors
/// [`Error::Io`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.json");
        write_atomic(&path, b"first, and longer than the second").unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"first, and longer than the second"
        );
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(&dir.path().join("a/b")), ["state.json"]);
    }

    #[test]
    fn a_temp_file_left_by_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(dir.path().join(".state.json.tmp"), b"{half").unwrap();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(entries(dir.path()), ["state.json"]);
    }

    #[test]
    fn failures_name_the_file_and_leave_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        // A directory where the temp file goes: the write fails before the rename.
        fs::create_dir(dir.path().join(".state.json.tmp")).unwrap();
        let e = write_atomic(&path, b"new").unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains(".state.json.tmp"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"x").unwrap();
        remove_durably(&path).unwrap();
        assert!(!path.exists());
        remove_durably(&path).unwrap();
        sync_dir(dir.path()).unwrap();
        assert!(sync_dir(&dir.path().join("missing")).is_err());
    }
}
