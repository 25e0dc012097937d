//! Whether a disk is in use: mounted (itself or a partition), active swap, held by another
//! kernel device (device-mapper, md), or claimed exclusively by someone (an `O_EXCL` open fails).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::device::{BlockDevice, DevNum};
use crate::error::{Result, SetupError};

/// Undoes the octal escapes of `/proc/self/mountinfo` and `/proc/swaps` (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device number a path names, if it is a device node.
fn node_number(path: &str) -> Option<DevNum> {
    let meta = fs::metadata(path).ok()?;
    use std::os::unix::fs::FileTypeExt;
    meta.file_type()
        .is_block_device()
        .then(|| DevNum::from_raw(meta.rdev()))
}

/// The mount point of the first mount in `mountinfo` whose device is one of `devs`, by the
/// `MAJOR:MINOR` field or by the mount source naming one of the devices.
pub fn find_mount(mountinfo: &str, devs: &HashSet<DevNum>) -> Option<String> {
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(number), Some(mount_point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let by_number = DevNum::parse(number).is_some_and(|d| devs.contains(&d));
        let source = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|dash| fields.get(dash + 2))
            .map(|s| unescape(s));
        let by_source = source
            .filter(|s| s.starts_with('/'))
            .and_then(|s| node_number(&s))
            .is_some_and(|d| devs.contains(&d));
        if by_number || by_source {
            return Some(unescape(mount_point));
        }
    }
    None
}

/// Whether `/proc/swaps`-formatted `swaps` lists one of `devs`.
pub fn is_swap(swaps: &str, devs: &HashSet<DevNum>) -> bool {
    swaps
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|path| node_number(&unescape(path)))
        .any(|d| devs.contains(&d))
}

/// Refuses a disk that is mounted, swapped on, held, or exclusively claimed.
pub fn check_unused(device: &BlockDevice) -> Result<()> {
    let path = device.path.clone();
    let mut devs: HashSet<DevNum> = device.kernel_partitions().iter().map(|p| p.dev).collect();
    devs.insert(device.dev);

    if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
        if let Some(mount_point) = find_mount(&mountinfo, &devs) {
            return Err(SetupError::Mounted {
                device: path,
                mount_point,
            });
        }
    }
    if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
        if is_swap(&swaps, &devs) {
            return Err(SetupError::Swap { device: path });
        }
    }
    let holders = device.holders();
    if !holders.is_empty() {
        return Err(SetupError::Held {
            device: path,
            holders: holders.join(", "),
        });
    }
    open_exclusive(&path, false).map(drop)
}

/// Opens a block device with `O_EXCL`, which the kernel refuses while anything has claimed it
/// (a mount, device-mapper, md, another exclusive opener).
pub fn open_exclusive(path: &Path, write: bool) -> Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                SetupError::NeedsRoot {
                    device: path.to_path_buf(),
                }
            } else if source.raw_os_error() == Some(libc::EBUSY) {
                SetupError::Busy {
                    device: path.to_path_buf(),
                    source,
                }
            } else {
                SetupError::Io {
                    action: "open",
                    device: path.to_path_buf(),
                    source,
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape(r"/plain\0"), r"/plain\0");
    }

    #[test]
    fn mount_by_device_number() {
        let info = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    37 35 7:3 / /srv/my\\040data rw - xfs /dev/loop3 rw\n";
        let devs: HashSet<DevNum> = [DevNum { major: 7, minor: 3 }].into();
        assert_eq!(find_mount(info, &devs).as_deref(), Some("/srv/my data"));
        let other: HashSet<DevNum> = [DevNum { major: 7, minor: 4 }].into();
        assert_eq!(find_mount(info, &other), None);
    }
}
