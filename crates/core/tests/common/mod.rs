//! Helpers for the tests, on the shared rig (`convoy-testkit`: loop devices, commands, test
//! data): a manager fixture that unmounts and tears its pool down on drop, checksums of whole
//! devices, crash children, a vfs-only manager configuration.
// The re-exports of the rig are not used by every test binary that includes this module.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_core::{ManagerConfig, VolumeManager};
use convoy_thinpool::{BlockSize, PoolConfig, Sectors, ThinPool};
use tempfile::TempDir;

pub use convoy_testkit::{noise, run, LoopDevice, MIB};

/// Devices, a pool name, a root dir and the options for a manager over them.
pub struct Fixture {
    pub pool_name: String,
    pub block_sectors: u64,
    pub fs: String,
    pub data: LoopDevice,
    pub meta: LoopDevice,
    pub dir: TempDir,
}

impl Fixture {
    pub fn new(tag: &str, block_sectors: u64, fs: &str, data_size: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = LoopDevice::new(&dir.path().join("data.img"), data_size);
        let meta = LoopDevice::new(&dir.path().join("meta.img"), 64 * MIB);
        Fixture {
            pool_name: format!("cc-{tag}"),
            block_sectors,
            fs: fs.into(),
            data,
            meta,
            dir,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn backups(&self) -> String {
        format!("vfs://{}", self.dir.path().join("backups").display())
    }

    pub fn config(&self) -> ManagerConfig {
        ManagerConfig {
            root: self.root(),
            drivers: vec!["devicemapper".into()],
            driver_opts: BTreeMap::from([
                ("dm.datadev".into(), self.data.path().display().to_string()),
                (
                    "dm.metadatadev".into(),
                    self.meta.path().display().to_string(),
                ),
                ("dm.thinpoolname".into(), self.pool_name.clone()),
                (
                    "dm.thinpoolblocksize".into(),
                    self.block_sectors.to_string(),
                ),
                ("dm.defaultvolumesize".into(), "64m".into()),
                ("dm.fs".into(), self.fs.clone()),
            ]),
        }
    }

    pub async fn open(&self) -> VolumeManager {
        VolumeManager::open(self.config()).await.unwrap()
    }

    /// The pool, opened independently of the manager (for checks and fault injection).
    pub fn pool(&self) -> ThinPool {
        let config = PoolConfig::new(self.data.path(), self.meta.path())
            .with_name(&self.pool_name)
            .with_block_size(BlockSize::new(Sectors(self.block_sectors)).unwrap());
        ThinPool::open(config).unwrap().0
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg(self.root()).output();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep ' {}' /proc/self/mountinfo | cut -d' ' -f5 | sort -r | xargs -r umount",
                self.dir.path().display()
            ))
            .output();
        let config = PoolConfig::new(self.data.path(), self.meta.path())
            .with_name(&self.pool_name)
            .with_block_size(BlockSize::new(Sectors(self.block_sectors)).unwrap());
        if let Ok((pool, _)) = ThinPool::open(config) {
            if let Err(e) = pool.teardown() {
                eprintln!("fixture teardown of {}: {e}", self.pool_name);
            }
        }
    }
}

/// SHA-256 of a whole device or file (sha256sum) and its size.
pub fn checksum(path: &Path) -> (String, u64) {
    let out = run("sha256sum", &[path.to_str().unwrap()]);
    let len = run("blockdev", &["--getsize64", path.to_str().unwrap()]);
    (
        out.split_whitespace().next().unwrap().to_owned(),
        len.trim().parse().unwrap(),
    )
}

/// Writes `len` bytes of a pattern derived from `seed` to `path` and syncs.
pub fn write_file(path: &Path, seed: u8, len: usize) {
    convoy_testkit::write_synced(path, &convoy_testkit::pattern(seed, len));
}

/// Blocks that differ between two thin ids, by thin_delta (thin-provisioning-tools, an
/// independent oracle) under a metadata snapshot.
pub fn thin_delta_blocks(fx: &Fixture, left: u64, right: u64) -> u64 {
    let pool = fx.pool();
    let _held = pool.reserve_metadata_snap().unwrap();
    let out = run(
        "thin_delta",
        &[
            "--metadata-snap",
            "--snap1",
            &left.to_string(),
            "--snap2",
            &right.to_string(),
            fx.meta.as_str(),
        ],
    );
    out.lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("<different")
                || l.starts_with("<left_only")
                || l.starts_with("<right_only")
        })
        .map(|l| {
            let v = l.split("length=\"").nth(1).unwrap();
            v[..v.find('"').unwrap()].parse::<u64>().unwrap()
        })
        .sum()
}

/// SHA-256 of thin id `id` activated temporarily (size in bytes).
pub fn thin_checksum(fx: &Fixture, id: u64, size: u64) -> String {
    let pool = fx.pool();
    // Named after the fixture's pool: tests of other binaries may run at the same time.
    let name = format!("{}-checksum", fx.pool_name);
    let dev = pool
        .activate(
            convoy_thinpool::ThinId::new(id).unwrap(),
            &name,
            Sectors(size / 512),
        )
        .unwrap();
    let sum = checksum(&dev.path).0;
    pool.deactivate(&name).unwrap();
    sum
}

/// The crash tests' child process: a test of the same binary, run with the fixture's config
/// and a step in these variables, that performs the step until the crash point named in
/// `CONVOY_CORE_CRASH_AT` aborts it.
pub const CHILD_CONFIG: &str = "CONVOY_CORE_TEST_CONFIG";
pub const CHILD_STEP: &str = "CONVOY_CORE_TEST_STEP";
pub const CHILD_ARG: &str = "CONVOY_CORE_TEST_ARG";

/// The child's config, step and argument (inside the child test).
pub fn child_request() -> (ManagerConfig, String, String) {
    let config =
        serde_json::from_str(&std::env::var(CHILD_CONFIG).expect("run by the parent test"))
            .unwrap();
    let step = std::env::var(CHILD_STEP).unwrap();
    let arg = std::env::var(CHILD_ARG).unwrap_or_default();
    (config, step, arg)
}

/// Runs test `child` of this binary on `step arg`, crashing at `point`; panics unless it
/// crashed there.
pub fn run_crash_child(fx: &Fixture, child: &str, point: &str, step: &str, arg: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_CONFIG, serde_json::to_string(&fx.config()).unwrap())
        .env(CHILD_STEP, step)
        .env(CHILD_ARG, arg)
        .env("CONVOY_CORE_CRASH_AT", point)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{point}: the child did not crash: {stderr}"
    );
    assert!(
        stderr.contains(&format!("crash injected at {point}")),
        "{point}: the child failed elsewhere: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Re-opens twice after a crash: the second open must find nothing left to do. Answers the
/// second manager and the first open's report.
pub async fn reopen_settled(fx: &Fixture, point: &str) -> (VolumeManager, String) {
    let m = fx.open().await;
    let report = m.reconcile_report().join("\n");
    drop(m);
    let m = fx.open().await;
    let again: Vec<&String> = m
        .reconcile_report()
        .iter()
        .filter(|l| !l.contains("thawed"))
        .collect();
    assert!(
        again.is_empty(),
        "{point}: second start-up still had work: {again:?}"
    );
    (m, report)
}

/// A manager with only the vfs driver: root `<dir>/root`, volumes under `<dir>/vols`.
pub fn vfs_config(dir: &Path) -> ManagerConfig {
    ManagerConfig {
        root: dir.join("root"),
        drivers: vec!["vfs".into()],
        driver_opts: BTreeMap::from([(
            "vfs.path".to_owned(),
            dir.join("vols").display().to_string(),
        )]),
    }
}

/// A create request for `name`, everything else defaulted.
pub fn named(name: &str) -> convoy_core::CreateVolumeRequest {
    convoy_core::CreateVolumeRequest {
        name: Some(name.into()),
        ..Default::default()
    }
}
