//! The devicemapper pool of the VM tests: loop devices over sparse files, torn down (with
//! everything mounted under its directory) on drop, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_thinpool::{BlockSize, PoolConfig, Sectors, ThinPool};

/// A loop device over a sparse file; detached on drop.
pub struct Loop(pub PathBuf);

impl Loop {
    pub fn new(file: &Path, size: u64) -> Loop {
        std::fs::File::create(file).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// The pool's devices; everything mounted under the test dir is unmounted and the pool torn
/// down on drop, also when the test fails.
pub struct Pool {
    pub name: String,
    pub dir: PathBuf,
    pub data: Loop,
    pub meta: Loop,
}

/// The pool's block size in sectors (64 KiB).
pub const BLOCK_SECTORS: u64 = 128;

impl Pool {
    /// A pool of 1 GiB data and 64 MiB metadata on loop devices under `dir`.
    pub fn new(dir: &Path, name: &str) -> Pool {
        Pool {
            name: name.into(),
            dir: dir.to_path_buf(),
            data: Loop::new(&dir.join("data.img"), 1 << 30),
            meta: Loop::new(&dir.join("meta.img"), 64 << 20),
        }
    }

    /// The daemon's `--driver-opts` for this pool (ext4, 64 MiB default volumes).
    pub fn options(&self) -> Vec<String> {
        vec![
            format!("dm.datadev={}", self.data.0.display()),
            format!("dm.metadatadev={}", self.meta.0.display()),
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
        let config = PoolConfig::new(&self.data.0, &self.meta.0)
            .with_name(&self.name)
            .with_block_size(BlockSize::new(Sectors(BLOCK_SECTORS)).unwrap());
        if let Ok((pool, _)) = ThinPool::open(config) {
            if let Err(e) = pool.teardown() {
                eprintln!("teardown of {}: {e}", self.name);
            }
        }
    }
}

/// `len` bytes of a pattern seeded by `seed`.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// Writes `data` to `path` and syncs it.
pub fn write_synced(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}
