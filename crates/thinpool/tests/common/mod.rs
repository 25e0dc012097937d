//! Helpers for the VM-tier tests, on the shared rig (`convoy-testkit`: loop devices, commands):
//! a pool fixture that tears everything down on drop, mounts, raw device I/O.
// The re-exports of the rig are not used by every test binary that includes this module.
#![allow(dead_code, unused_imports)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_thinpool::{PoolConfig, ThinPool};
use tempfile::TempDir;

pub use convoy_testkit::{run, LoopDevice, GIB, KIB, MIB};

/// A data and a metadata loop device and a unique pool name; the pool (if any) is torn down
/// on drop.
pub struct Fixture {
    pub name: String,
    pub data: LoopDevice,
    pub meta: LoopDevice,
    pub dir: TempDir,
}

impl Fixture {
    pub fn new(tag: &str, data_size: u64, meta_size: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = LoopDevice::new(&dir.path().join("data.img"), data_size);
        let meta = LoopDevice::new(&dir.path().join("meta.img"), meta_size);
        Fixture {
            name: format!("ctp-{tag}"),
            data,
            meta,
            dir,
        }
    }

    pub fn config(&self) -> PoolConfig {
        PoolConfig::new(self.data.path(), self.meta.path()).with_name(&self.name)
    }

    /// A sub-directory of the temp dir (for mount points).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Unmount anything left mounted under the temp dir (a failed test), then tear down.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path())
            .output();
        if let Ok((pool, _)) = ThinPool::open(self.config()) {
            if let Err(e) = pool.teardown() {
                eprintln!("fixture teardown of {}: {e}", self.name);
            }
        }
    }
}

/// A mount; unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(dev: &Path, dir: &Path, options: &str) -> Mount {
        run(
            "mount",
            &["-o", options, dev.to_str().unwrap(), dir.to_str().unwrap()],
        );
        Mount {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

pub fn mkfs_ext4(dev: &Path) {
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            dev.to_str().unwrap(),
        ],
    );
}

/// Write `data` at `offset` and sync.
pub fn write_at(dev: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(dev)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Read `len` bytes at `offset`.
pub fn read_at(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(dev).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// Is `path` a block device node for `major:minor`?
pub fn is_block_node_for(path: &Path, device: convoy_thinpool::Device) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(md) = std::fs::metadata(path) else {
        return false;
    };
    let rdev = md.rdev();
    let (major, minor) = (
        ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff),
        ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff),
    );
    md.file_type().is_block_device() && major as u32 == device.major && minor as u32 == device.minor
}

/// Names of all device-mapper devices (via dmsetup, independent of the crate).
pub fn dm_names() -> Vec<String> {
    convoy_testkit::dm_names("")
}
