//! Loop devices over sparse files: the disks of every device test (VM tier, root).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::run;

/// How [`LoopDevice`] attaches its file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopOptions {
    /// Scan the device for partitions (`losetup -P`), so that `/dev/loopNpM` nodes appear for a
    /// partition table written to it.
    pub partscan: bool,
    /// Direct I/O to the backing file (`--direct-io=on`): the device then behaves as a disk
    /// rather than a second page cache (on a buffered loop device every flush writes out every
    /// dirty page of the whole backing file).
    pub direct_io: bool,
}

/// A loop device over a sparse file, detached when dropped (also when the test fails).
///
/// Tests make these in a temp dir (`TMPDIR`, never a literal `/tmp`: in the guest it is a
/// fresh filesystem on a scratch disk), see `docs/testing.md`.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    backing: PathBuf,
    // Dropped after `Drop::drop` detached the device: the file goes with its directory.
    _dir: Option<tempfile::TempDir>,
}

impl LoopDevice {
    /// Creates a sparse file of `bytes` at `backing` (truncating one that exists) and attaches
    /// it to a free loop device.
    pub fn new(backing: &Path, bytes: u64) -> Self {
        Self::with_options(backing, bytes, LoopOptions::default())
    }

    /// [`LoopDevice::new`] with `options`.
    pub fn with_options(backing: &Path, bytes: u64, options: LoopOptions) -> Self {
        std::fs::File::create(backing)
            .and_then(|f| f.set_len(bytes))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", backing.display()));
        let mut args = vec!["-f", "--show"];
        if options.partscan {
            args.push("-P");
        }
        if options.direct_io {
            args.push("--direct-io=on");
        }
        let file = backing.to_str().expect("backing file paths are UTF-8");
        args.push(file);
        let device = run("losetup", &args);
        Self {
            path: PathBuf::from(device.trim()),
            backing: backing.to_path_buf(),
            _dir: None,
        }
    }

    /// A loop device over a sparse file of `bytes` in a temp dir of its own, removed with the
    /// device.
    pub fn in_temp_dir(bytes: u64, options: LoopOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut device = Self::with_options(&dir.path().join("disk.img"), bytes, options);
        device._dir = Some(dir);
        device
    }

    /// The loop device node, e.g. `/dev/loop0`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node as a string, for command lines.
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("loop device paths are ASCII")
    }

    /// The kernel's name of the device, e.g. `loop0` (as in `/sys/block/loop0`).
    pub fn name(&self) -> &str {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("loop device paths end in a name")
    }

    /// The sparse file behind the device.
    pub fn backing(&self) -> &Path {
        &self.backing
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}
