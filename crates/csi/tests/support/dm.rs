//! The devicemapper pool of the VM tests: loop devices over sparse files (the test rig's
//! `convoy_testkit::LoopDevice`), torn down (with everything mounted under its directory) on
//! drop, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use convoy_testkit::LoopDevice;

/// `len` bytes of a pattern seeded by `seed` (the rig's).
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    convoy_testkit::pattern(seed, len)
}

/// Writes `data` to `path` and syncs it (the rig's).
pub fn write_synced(path: &Path, data: &[u8]) {
    convoy_testkit::write_synced(path, data)
}

use convoy_thinpool::{BlockSize, PoolConfig, Sectors, ThinPool};

/// The pool's devices; everything mounted under the test dir is unmounted and the pool torn
/// down on drop, also when the test fails.
pub struct Pool {
    pub name: String,
    pub dir: PathBuf,
    pub data: LoopDevice,
    pub meta: LoopDevice,
}

/// The pool's block size in sectors (64 KiB).
pub const BLOCK_SECTORS: u64 = 128;

impl Pool {
    /// A pool of 1 GiB data and 64 MiB metadata on loop devices under `dir`.
    pub fn new(dir: &Path, name: &str) -> Pool {
        Pool {
            name: name.into(),
            dir: dir.to_path_buf(),
            data: LoopDevice::new(&dir.join("data.img"), 1 << 30),
            meta: LoopDevice::new(&dir.join("meta.img"), 64 << 20),
        }
    }

    /// The daemon's `--driver-opts` for this pool (ext4, 64 MiB default volumes).
    pub fn options(&self) -> Vec<String> {
        vec![
            format!("dm.datadev={}", self.data.path().display()),
            format!("dm.metadatadev={}", self.meta.path().display()),
            format!("dm.thinpoolname={}", self.name),
            format!("dm.thinpoolblocksize={BLOCK_SECTORS}"),
            "dm.defaultvolumesize=64m".into(),
            "dm.fs=ext4".into(),
        ]
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep ' {}' /proc/self/mountinfo | cut -d' ' -f5 | sort -r | xargs -r umount",
                self.dir.display()
            ))
            .output();
        let config = PoolConfig::new(self.data.path(), self.meta.path())
            .with_name(&self.name)
            .with_block_size(BlockSize::new(Sectors(BLOCK_SECTORS)).unwrap());
        if let Ok((pool, _)) = ThinPool::open(config) {
            if let Err(e) = pool.teardown() {
                eprintln!("teardown of {}: {e}", self.name);
            }
        }
    }
}
