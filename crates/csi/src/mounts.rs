//! Bind mounts for the Node service, and what `/proc/self/mountinfo` says is mounted.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tonic::Status;

/// A mount point as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub target: PathBuf,
    /// Mounted read-only (per-mount option `ro`).
    pub read_only: bool,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let target = fields.get(4)?;
            let options = fields.get(5)?;
            Some(MountEntry {
                target: PathBuf::from(unescape(target)),
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn mounted_at(path: &Path) -> Result<Option<MountEntry>, Status> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Status::internal(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.target == path))
}

/// Bind-mounts `source` on `target`, read-only when asked (a bind mount takes `ro` only on a
/// remount). A failed remount undoes the bind mount.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), Status> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        Status::internal(format!(
            "cannot bind-mount {} on {}: {e}",
            source.display(),
            target.display()
        ))
    })?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = umount2(target, MntFlags::empty());
            return Err(Status::internal(format!(
                "cannot make {} read-only: {e}",
                target.display()
            )));
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (nothing mounted is fine).
pub fn unmount_all(target: &Path) -> Result<(), Status> {
    while mounted_at(target)?.is_some() {
        umount2(target, MntFlags::empty())
            .map_err(|e| Status::internal(format!("cannot unmount {}: {e}", target.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 98:0 / /ro ro,relatime - ext4 /dev/vda rw\n";
        let all = parse_mountinfo(text);
        assert_eq!(
            all,
            vec![
                MountEntry {
                    target: "/mnt/with space".into(),
                    read_only: false
                },
                MountEntry {
                    target: "/ro".into(),
                    read_only: true
                },
            ]
        );
    }
}
