//! Bind mounts for the Node service, and what `/proc/self/mountinfo` says is mounted.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use convoy_core::Volume;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tonic::Status;

/// A mount point as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub target: PathBuf,
    /// Mounted read-only (per-mount option `ro`).
    pub read_only: bool,
    /// The mounted filesystem's device (`major:minor`).
    pub dev: (u64, u64),
    /// The directory (or file) of that filesystem mounted there (`/` for the whole of it).
    pub root: PathBuf,
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
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let root = fields.get(3)?;
            let target = fields.get(4)?;
            let options = fields.get(5)?;
            Some(MountEntry {
                target: PathBuf::from(unescape(target)),
                read_only: options.split(',').any(|o| o == "ro"),
                dev: (major.parse().ok()?, minor.parse().ok()?),
                root: PathBuf::from(unescape(root)),
            })
        })
        .collect()
}

fn mount_table() -> Result<Vec<MountEntry>, Status> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Status::internal(format!("cannot read /proc/self/mountinfo: {e}")))?;
    Ok(parse_mountinfo(&text))
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn mounted_at(path: &Path) -> Result<Option<MountEntry>, Status> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(mount_table()?.into_iter().rev().find(|m| m.target == path))
}

/// `st_dev`/`st_rdev` as mountinfo's `major:minor` (the kernel's `dev_t` encoding).
fn major_minor(dev: u64) -> (u64, u64) {
    (
        ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff),
        ((dev >> 12) & 0xffff_ff00) | (dev & 0xff),
    )
}

/// Where `volume` is mounted, read from mountinfo alone (no `stat` of other mounts, which
/// could hang on a dead network filesystem): its filesystem (the mount's device is the
/// volume's), its device node bind-mounted on a file (raw block), or its directory
/// bind-mounted (vfs). A path that cannot be read (a device node that is gone) is mounted
/// nowhere.
pub fn mounts_of(volume: &Volume) -> Result<Vec<PathBuf>, Status> {
    let info = |key: &str| volume.driver_info.get(key).filter(|v| !v.is_empty());
    let Some(path) = info("Device").or_else(|| info("Path")) else {
        return Ok(Vec::new());
    };
    let Ok(path) = std::fs::canonicalize(path) else {
        return Ok(Vec::new());
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(Vec::new());
    };
    let filesystem = meta
        .file_type()
        .is_block_device()
        .then(|| major_minor(meta.rdev()));
    let holder = major_minor(meta.dev());
    let name = path.file_name();
    Ok(mount_table()?
        .into_iter()
        .filter(|m| {
            Some(m.dev) == filesystem
                || (m.dev == holder && name.is_some() && m.root.file_name() == name)
        })
        .map(|m| m.target)
        .collect())
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

/// How `stat` recognises a volume at a path: a filesystem on its device (the mount's root and
/// every bind mount of it carry the device's number as `st_dev`), its device node bind-mounted
/// on a file (raw block: `st_rdev`), or its directory bind-mounted (vfs: the same `st_dev` and
/// inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeIdentity {
    /// A block device, by device number.
    Device(u64),
    /// A directory, by device and inode.
    Directory {
        /// `st_dev` of the directory.
        dev: u64,
        /// `st_ino` of the directory.
        ino: u64,
    },
}

impl VolumeIdentity {
    /// The identity of `volume` (its `Device` or, without one, its `Path`); `None` when that
    /// device or directory cannot be read (a device node that is missing).
    pub fn of(volume: &Volume) -> Option<VolumeIdentity> {
        let info = |key: &str| volume.driver_info.get(key).filter(|v| !v.is_empty());
        if let Some(device) = info("Device") {
            let meta = std::fs::metadata(device).ok()?;
            return meta
                .file_type()
                .is_block_device()
                .then(|| VolumeIdentity::Device(meta.rdev()));
        }
        let meta = std::fs::metadata(info("Path")?).ok()?;
        Some(VolumeIdentity::Directory {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// `path` holds this volume (`false` when it cannot be read).
    pub fn is_at(&self, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        match *self {
            VolumeIdentity::Device(rdev) if meta.file_type().is_block_device() => {
                meta.rdev() == rdev
            }
            VolumeIdentity::Device(rdev) => meta.dev() == rdev,
            VolumeIdentity::Directory { dev, ino } => meta.dev() == dev && meta.ino() == ino,
        }
    }
}

/// Unmounts everything stacked on `target` that holds `volume` (nothing mounted is fine).
/// Answers `false` when a mount of something else is (or remains) there: that one is left
/// alone — `volume` is not at `target`, so there is nothing of it to undo.
pub fn unmount_volume(target: &Path, volume: &Volume) -> Result<bool, Status> {
    let identity = VolumeIdentity::of(volume);
    while mounted_at(target)?.is_some() {
        if identity.is_some_and(|i| !i.is_at(target)) {
            tracing::warn!(path = %target.display(), volume = %volume.name,
                "another mount is there, not this volume: left as it is");
            return Ok(false);
        }
        umount2(target, MntFlags::empty())
            .map_err(|e| Status::internal(format!("cannot unmount {}: {e}", target.display())))?;
    }
    Ok(true)
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
                    read_only: false,
                    dev: (98, 0),
                    root: "/mnt1".into(),
                },
                MountEntry {
                    target: "/ro".into(),
                    read_only: true,
                    dev: (98, 0),
                    root: "/".into(),
                },
            ]
        );
    }

    #[test]
    fn device_numbers_split_as_the_kernel_encodes_them() {
        // makedev(253, 3), and makedev(259, 65536) (a minor above 255 spills into high bits).
        assert_eq!(major_minor((253 << 8) | 3), (253, 3));
        let big = ((65536u64 & 0xffff_ff00) << 12) | ((259 & 0xfff) << 8);
        assert_eq!(major_minor(big), (259, 65536));
    }
}
