//! Making the kernel take a new partition table up: the `BLKRRPART` ioctl on the whole disk,
//! then, if the kernel still does not list the expected partitions, `partx --update` (which adds
//! them one at a time with BLKPG). Some kernels accept BLKRRPART on a loop device and change
//! nothing (seen on 6.18), hence the check between the two.
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

/// Asks the kernel to re-read the partition table of the whole disk `disk` (`device` names it)
/// until `listed` reports the new partitions. `listed` returns `Ok(())` or what is wrong.
pub fn reread_partitions(
    disk: &File,
    device: &Path,
    listed: impl Fn() -> std::result::Result<(), String>,
) -> Result<()> {
    // SAFETY: BLKRRPART takes no argument; the descriptor is open and owned by `disk` for the
    // duration of the call.
    let ioctl = unsafe { ioctl::blkrrpart(disk.as_raw_fd()) };
    let after_ioctl = match ioctl {
        Ok(_) => match listed() {
            Ok(()) => return Ok(()),
            Err(why) => format!("BLKRRPART succeeded but {why}"),
        },
        Err(errno) => format!("BLKRRPART failed ({errno})"),
    };
    let partx = match Command::new("partx").arg("--update").arg(device).output() {
        Ok(out) if out.status.success() => match listed() {
            Ok(()) => return Ok(()),
            Err(why) => format!("`partx --update` succeeded but {why}"),
        },
        Ok(out) => format!(
            "`partx --update` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("partx could not run ({e})"),
    };
    Err(SetupError::Reread {
        device: device.to_path_buf(),
        message: format!("{after_ioctl}; {partx}"),
    })
}
