//! The stable device path of an active device: `/dev/mapper/<name>`.
//!
//! With udev running, its device-mapper rules create `/dev/mapper/<name>` (the `devicemapper`
//! crate waits for udev's cookie before returning). Without udev (containers, minimal hosts,
//! the test guest) nothing does, and only the kernel's `/dev/dm-N` appears through devtmpfs.
//! So after every activation this module makes sure the node exists and points at the device's
//! `major:minor`, creating it with `mknod` when missing — what libdevmapper's fallback does. On
//! deactivation it removes a node only if it is a block node for that very device (a udev symlink
//! is left to udev).

use std::io;
use std::path::{Path, PathBuf};

use devicemapper::Device;
use nix::errno::Errno;
use nix::libc::dev_t;
use nix::sys::stat::{lstat, mknod, stat, Mode, SFlag};

use crate::error::{Error, Result};
use crate::names::{mapper_path, DEV_MAPPER_DIR};

/// Make sure `/dev/mapper/<name>` is a block node for `device`; return its path.
pub(crate) fn ensure_node(name: &str, device: Device) -> Result<PathBuf> {
    let path = mapper_path(name);
    std::fs::create_dir_all(DEV_MAPPER_DIR)
        .map_err(|e| Error::io("create directory", DEV_MAPPER_DIR, e))?;
    for _ in 0..3 {
        match node_state(&path, device)? {
            NodeState::Correct => return Ok(path),
            NodeState::Stale => remove(&path)?,
            NodeState::Missing => {}
        }
        let mode = Mode::from_bits_truncate(0o660);
        match mknod(&path, SFlag::S_IFBLK, mode, dev_t::from(device)) {
            Ok(()) => return Ok(path),
            // Someone (udev) made it meanwhile: check it again.
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(Error::io("mknod", &path, io::Error::from(e))),
        }
    }
    Err(Error::AlreadyExists {
        kind: "device node",
        name: path.display().to_string(),
    })
}

/// Remove `/dev/mapper/<name>` if it is a block node for `device` that this crate would have
/// made. Anything else is left alone.
pub(crate) fn remove_node(name: &str, device: Device) -> Result<()> {
    let path = mapper_path(name);
    match lstat(&path) {
        Ok(st) if is_block(st.st_mode) && st.st_rdev == dev_t::from(device) => remove(&path),
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io("stat", &path, io::Error::from(e))),
    }
}

enum NodeState {
    Missing,
    Correct,
    Stale,
}

fn node_state(path: &Path, device: Device) -> Result<NodeState> {
    // `stat` follows a udev symlink to the real node.
    match stat(path) {
        Ok(st) if is_block(st.st_mode) && st.st_rdev == dev_t::from(device) => {
            Ok(NodeState::Correct)
        }
        Ok(st) if is_block(st.st_mode) => Ok(NodeState::Stale),
        Ok(_) => Err(Error::AlreadyExists {
            kind: "non-device file at device node path",
            name: path.display().to_string(),
        }),
        Err(Errno::ENOENT) => match lstat(path) {
            // A dangling symlink: stale.
            Ok(_) => Ok(NodeState::Stale),
            Err(_) => Ok(NodeState::Missing),
        },
        Err(e) => Err(Error::io("stat", path, io::Error::from(e))),
    }
}

fn is_block(mode: u32) -> bool {
    mode & SFlag::S_IFMT.bits() == SFlag::S_IFBLK.bits()
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove device node", path, e)),
    }
}

/// The `major:minor` of the block device at `path`.
pub(crate) fn block_device_number(path: &Path) -> Result<Device> {
    match stat(path) {
        Ok(st) if is_block(st.st_mode) => Ok(Device::from(st.st_rdev)),
        Ok(_) => Err(Error::NotABlockDevice {
            path: path.to_owned(),
        }),
        Err(e) => Err(Error::io("stat", path, io::Error::from(e))),
    }
}

/// Size of the block device (or file) at `path`, in bytes.
pub(crate) fn device_size_bytes(path: &Path) -> Result<u64> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    f.seek(io::SeekFrom::End(0))
        .map_err(|e| Error::io("find size of", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data.img");
        std::fs::write(&f, [0u8; 4096]).unwrap();
        assert!(matches!(
            block_device_number(&f),
            Err(Error::NotABlockDevice { .. })
        ));
        assert_eq!(device_size_bytes(&f).unwrap(), 4096);
        let missing = dir.path().join("nope");
        let err = block_device_number(&missing).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
