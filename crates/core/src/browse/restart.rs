//! Start-up: undoing the browse mounts the last daemon left (their NBD servers died with it).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{boot_id, BrowseRecord, BROWSE_DIR};
use crate::backups::redact_urls;
use crate::dm::mounts;
use crate::durable::remove_durably;
use crate::error::{Error, Result};

use crate::backup_device::nbd_device_number;

/// Whether what is mounted at the record's mount point is the record's own mount: its NBD
/// device, or (a tree) the filesystem holding its work directory. Anything else mounted
/// there since is left alone.
fn is_ours(rec: &BrowseRecord) -> Result<bool> {
    let Some(at) = mounts::device_at(&rec.mount.mount_point)? else {
        return Ok(false);
    };
    if let Some(i) = rec.nbd_index {
        return Ok(nbd_device_number(i) == Some(at));
    }
    let Some(tree) = rec.work_dir.as_ref().map(|w| w.join("tree")) else {
        return Ok(false);
    };
    Ok(std::fs::metadata(&tree)
        .map(|m| (libc::major(m.dev()), libc::minor(m.dev())) == at)
        .unwrap_or(false))
}

/// Undoes every recorded browse mount of `root`: unmounts it lazily (a process may still
/// hold files open on a device that now fails every read), disconnects its device (only in
/// the same boot: after a reboot nothing is mounted and the index may be someone else's),
/// removes its work directory and its record. One line per mount goes to `report`.
pub(crate) fn clean_at_start(root: &Path, report: &mut Vec<String>) -> Result<()> {
    let dir = root.join(BROWSE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", &dir, e)),
    };
    let boot = boot_id();
    let mut work_dirs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io("read", &dir, e))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            if path.is_dir() {
                work_dirs.push(path);
            }
            continue;
        }
        let rec: Option<BrowseRecord> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(rec) = rec else {
            report.push(format!(
                "browse: removed unreadable record {}",
                path.display()
            ));
            remove_durably(&path)?;
            continue;
        };
        let at = &rec.mount.mount_point;
        let same_boot = rec.boot_id == boot;
        let mut what = Vec::new();
        if same_boot && is_ours(&rec)? {
            match mounts::umount_with(at, true) {
                Ok(()) => what.push("unmounted".to_owned()),
                Err(e) => what.push(format!("could not unmount ({e})")),
            }
        }
        if let Some(i) = rec.nbd_index.filter(|_| same_boot) {
            match convoy_nbd::disconnect(i) {
                Ok(()) => what.push(format!("disconnected /dev/nbd{i}")),
                Err(e) => what.push(format!("could not disconnect /dev/nbd{i} ({e})")),
            }
        }
        if let Some(w) = rec.work_dir.as_ref().filter(|w| w.exists()) {
            std::fs::remove_dir_all(w).map_err(|e| Error::io("remove", w, e))?;
        }
        what.push("forgot it".into());
        report.push(format!(
            "browse: backup {} at {}, left mounted by the last run: {}",
            redact_urls(&rec.mount.backup_url),
            at.display(),
            what.join(", ")
        ));
        remove_durably(&path)?;
    }
    // Work directories whose record is gone (a crash between the two removals).
    // (A work directory listed before its record was removed with it above.)
    for w in work_dirs {
        if w.exists() && !w.with_extension("json").exists() {
            match std::fs::remove_dir_all(&w) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", &w, e))
                }
                _ => {}
            }
        }
    }
    Ok(())
}
