//! Crash-safe small files: write a temp file, fsync it, rename it over the target, fsync the
//! directory. A reader sees the old content or the new, never a torn file.

use std::io::Write;
use std::path::Path;

use crate::{DaemonError, Result};

/// Replaces `path` with `bytes` durably.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |source| DaemonError::File {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&temp).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&temp, path).map_err(fail)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)?;
    Ok(())
}
