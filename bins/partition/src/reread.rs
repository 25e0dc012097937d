//! Making the kernel take a new partition table up: the `BLKRRPART` ioctl on the whole disk,
//! and `partx --update` (BLKPG, one partition at a time) if the ioctl is refused.
//!
//! This is the crate's only `unsafe` code: an ioctl has no safe wrapper in nix or rustix.

#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use crate::error::{Result, SetupError};

mod ioctl {
    // BLKRRPART is _IO(0x12, 95) in <linux/fs.h>: no argument.
    nix::ioctl_none!(blkrrpart, 0x12, 95);
}

/// Asks the kernel to re-read the partition table of the whole disk `disk` (`device` names it
/// in errors). Falls back to `partx --update` if the ioctl fails.
pub fn reread_partitions(disk: &File, device: &Path) -> Result<()> {
    // SAFETY: BLKRRPART takes no argument; the descriptor is open and owned by `disk` for the
    // duration of the call.
    let ioctl = unsafe { ioctl::blkrrpart(disk.as_raw_fd()) };
    let Err(errno) = ioctl else {
        return Ok(());
    };
    let partx = Command::new("partx").arg("--update").arg(device).output();
    match partx {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(SetupError::Reread {
            device: device.to_path_buf(),
            message: format!(
                "BLKRRPART failed ({errno}) and `partx --update` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        Err(e) => Err(SetupError::Reread {
            device: device.to_path_buf(),
            message: format!("BLKRRPART failed ({errno}) and partx could not run ({e})"),
        }),
    }
}
