//! A whole-disk block device as the kernel sees it: its kernel name, device number, size and
//! logical sector size from sysfs (`/sys/dev/block/MAJOR:MINOR`), the partitions and holders
//! the kernel knows of, and the names its partitions get.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Result, SetupError};

/// A device number split into major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevNum {
    /// Major number (the driver).
    pub major: u32,
    /// Minor number (the unit).
    pub minor: u32,
}

impl DevNum {
    /// Splits a `st_rdev`/`st_dev` value (glibc's encoding of `dev_t`).
    pub fn from_raw(raw: u64) -> DevNum {
        DevNum {
            major: (((raw >> 8) & 0xfff) | ((raw >> 32) & !0xfff)) as u32,
            minor: ((raw & 0xff) | ((raw >> 12) & !0xff)) as u32,
        }
    }

    /// Parses `MAJOR:MINOR` as sysfs and mountinfo write it.
    pub fn parse(text: &str) -> Option<DevNum> {
        let (major, minor) = text.trim().split_once(':')?;
        Some(DevNum {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A partition the kernel currently knows on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPartition {
    /// Kernel name (`loop0p1`).
    pub name: String,
    /// Partition number.
    pub number: u32,
    /// Device number.
    pub dev: DevNum,
    /// First sector, in 512-byte sectors.
    pub start_sectors: u64,
    /// Length, in 512-byte sectors.
    pub size_sectors: u64,
}

/// A whole-disk block device.
#[derive(Debug, Clone)]
pub struct BlockDevice {
    /// The path the user gave.
    pub path: PathBuf,
    /// The kernel name (`sdb`, `loop0`, `nvme0n1`).
    pub name: String,
    /// The device number.
    pub dev: DevNum,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical sector size in bytes (the unit of partition-table addresses).
    pub logical_sector: u64,
    sysfs: PathBuf,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

impl BlockDevice {
    /// Inspects `path`: it must be a whole-disk block device.
    pub fn open(path: &Path) -> Result<BlockDevice> {
        let meta = fs::metadata(path).map_err(|source| SetupError::NotFound {
            device: path.to_path_buf(),
            source,
        })?;
        let file_type = meta.file_type();
        if !file_type.is_block_device() {
            let (kind, hint) = if file_type.is_file() {
                (
                    "a regular file",
                    format!(
                        "; to use a file, attach it first (`losetup -f --show {}`) and give the loop device",
                        path.display()
                    ),
                )
            } else if file_type.is_dir() {
                ("a directory", String::new())
            } else if file_type.is_char_device() {
                ("a character device", String::new())
            } else {
                ("a special file", String::new())
            };
            return Err(SetupError::NotBlockDevice {
                device: path.to_path_buf(),
                kind,
                hint,
            });
        }
        let dev = DevNum::from_raw(meta.rdev());
        let link = PathBuf::from(format!("/sys/dev/block/{dev}"));
        let sysfs = fs::canonicalize(&link).map_err(|source| SetupError::Io {
            action: "find the sysfs entry of",
            device: path.to_path_buf(),
            source,
        })?;
        let name = sysfs
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if let Some(number) = read_u64(&sysfs.join("partition")) {
            let disk = sysfs
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string();
            return Err(SetupError::IsPartition {
                device: path.to_path_buf(),
                disk,
                number: number as u32,
            });
        }
        let io_error = |what: &str| SetupError::Io {
            action: "read the size of",
            device: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "{what} is missing or unreadable in {}",
                sysfs.display()
            )),
        };
        let size_bytes = read_u64(&sysfs.join("size")).ok_or_else(|| io_error("size"))? * 512;
        let logical_sector = read_u64(&sysfs.join("queue/logical_block_size")).unwrap_or(512);
        Ok(BlockDevice {
            path: path.to_path_buf(),
            name,
            dev,
            size_bytes,
            logical_sector,
            sysfs,
        })
    }

    /// The partitions the kernel knows on this disk, by number.
    pub fn kernel_partitions(&self) -> Vec<KernelPartition> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir(&self.sysfs) else {
            return found;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(number) = read_u64(&dir.join("partition")) else {
                continue;
            };
            let Some(dev) = read_trimmed(&dir.join("dev")).and_then(|d| DevNum::parse(&d)) else {
                continue;
            };
            found.push(KernelPartition {
                name: entry.file_name().to_string_lossy().into_owned(),
                number: number as u32,
                dev,
                start_sectors: read_u64(&dir.join("start")).unwrap_or(0),
                size_sectors: read_u64(&dir.join("size")).unwrap_or(0),
            });
        }
        found.sort_by_key(|p| p.number);
        found
    }

    /// Kernel names of the devices built on this disk or on its partitions (dm, md, ...).
    pub fn holders(&self) -> Vec<String> {
        let mut dirs = vec![self.sysfs.join("holders")];
        dirs.extend(
            self.kernel_partitions()
                .iter()
                .map(|p| self.sysfs.join(&p.name).join("holders")),
        );
        let mut names: Vec<String> = dirs
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|entries| entries.flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Whether the kernel scans this disk for partitions (a loop device attached without `-P`
    /// does not: its partitions would never appear).
    pub fn partition_scan_disabled(&self) -> bool {
        // `ext_range` 1 means the disk cannot have partitions; loop devices expose the scan flag.
        read_u64(&self.sysfs.join("ext_range")) == Some(1)
            || read_trimmed(&self.sysfs.join("loop/partscan")).as_deref() == Some("0")
    }

    /// The device path of partition `number`, by the kernel's naming rule: a disk name ending in
    /// a digit takes a `p` before the number (`loop0p1`, `nvme0n1p1`), others not (`sdb1`).
    pub fn partition_path(&self, number: u32) -> PathBuf {
        PathBuf::from(format!("/dev/{}", partition_name(&self.name, number)))
    }
}

/// The kernel name of partition `number` of disk `disk` (`sdb` → `sdb1`, `loop0` → `loop0p1`).
pub fn partition_name(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(partition_name("sdb", 1), "sdb1");
        assert_eq!(partition_name("xvdf", 2), "xvdf2");
        assert_eq!(partition_name("loop0", 1), "loop0p1");
        assert_eq!(partition_name("nvme0n1", 2), "nvme0n1p2");
        assert_eq!(partition_name("mmcblk0", 1), "mmcblk0p1");
    }

    #[test]
    fn device_numbers() {
        assert_eq!(DevNum::from_raw(0x0703), DevNum { major: 7, minor: 3 });
        assert_eq!(DevNum::from_raw((259 << 8) | 1).major, 259);
        assert_eq!(DevNum::from_raw(3 | (0x100 << 12)).minor, 0x103);
        assert_eq!(
            DevNum::parse("8:16"),
            Some(DevNum {
                major: 8,
                minor: 16
            })
        );
        assert_eq!(DevNum::parse("8-16"), None);
    }

    #[test]
    fn regular_file_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = BlockDevice::open(file.path()).unwrap_err().to_string();
        assert!(
            err.contains("is a regular file, not a block device"),
            "{err}"
        );
        assert!(err.contains("losetup -f --show"), "{err}");
    }
}
