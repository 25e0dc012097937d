//! VM tier: the partitions `convoy-partition` writes carry a real dm-thin pool. In the guest
//! (`cargo xtask test`), a sparse file on a loop device is partitioned with `--write-to-disk`,
//! a thin-pool with 2 MiB blocks is built with `dmsetup` on the two partitions the printed
//! daemon line names, thin devices are created and written, and the pool's status must show
//! the whole data partition and the whole metadata partition in use by the kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_testkit::{run, LoopDevice, LoopOptions};

const HELPER: &str = env!("CARGO_BIN_EXE_convoy-partition");

/// What a command printed, trimmed; the command must succeed.
fn stdout(program: &str, args: &[&str]) -> String {
    run(program, args).trim().to_string()
}

/// The dm devices built on the test's disk, removed on drop (newest first) before the disk
/// (the rig's loop device, a field) is detached.
struct Rig {
    dm_names: Vec<String>,
    _disk: LoopDevice,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for name in self.dm_names.iter().rev() {
            let _ = Command::new("dmsetup").args(["remove", name]).status();
        }
    }
}

fn sysfs_sectors(partition: &Path) -> u64 {
    let name = partition
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_partitions_carry_a_thin_pool() {
    let disk = LoopDevice::in_temp_dir(
        2 << 30,
        LoopOptions {
            partscan: true,
            ..LoopOptions::default()
        },
    );
    let loop_device = disk.path().to_path_buf();
    let mut rig = Rig {
        dm_names: Vec::new(),
        _disk: disk,
    };

    let max_thins = 32;
    let report = stdout(
        HELPER,
        &[
            "--write-to-disk",
            "--max-thins",
            &max_thins.to_string(),
            loop_device.to_str().unwrap(),
        ],
    );
    let command = report.lines().last().unwrap();
    let option = |key: &str| -> PathBuf {
        command
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {key} in {command:?}"))
    };
    let data = option("dm.datadev=");
    let metadata = option("dm.metadatadev=");
    let metadata_figure: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("Metadata Device size would be "))
        .and_then(|l| l.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .expect("metadata figure");

    let block_sectors = 4096u64; // 2 MiB, the block size the estimate assumes
    let data_sectors = sysfs_sectors(&data) / block_sectors * block_sectors;
    let metadata_sectors = sysfs_sectors(&metadata);
    assert!(metadata_sectors * 512 >= metadata_figure);

    let suffix = std::process::id();
    let pool = format!("convoy-partition-test-pool-{suffix}");
    let table = format!(
        "0 {data_sectors} thin-pool {} {} {block_sectors} 0",
        metadata.display(),
        data.display()
    );
    run("dmsetup", &["create", &pool, "--table", &table]);
    rig.dm_names.push(pool.clone());
    let pool_node = format!("/dev/mapper/{pool}");

    // The metadata is sized for `max_thins` devices: create them all, write to a few.
    for id in 0..max_thins {
        run(
            "dmsetup",
            &["message", &pool, "0", &format!("create_thin {id}")],
        );
    }
    for id in 0..3u32 {
        let thin = format!("convoy-partition-test-thin{id}-{suffix}");
        run(
            "dmsetup",
            &[
                "create",
                &thin,
                "--table",
                &format!("0 2097152 thin {pool_node} {id}"),
            ],
        );
        rig.dm_names.push(thin.clone());
        run(
            "dd",
            &[
                "if=/dev/urandom",
                &format!("of=/dev/mapper/{thin}"),
                "bs=1M",
                "count=8",
                "oflag=direct",
                "status=none",
            ],
        );
    }

    // thin-pool status: <transaction id> <used meta>/<total meta> <used data>/<total data> ...
    let status = stdout("dmsetup", &["status", &pool]);
    let fields: Vec<&str> = status.split_whitespace().collect();
    let pair = |field: &str| -> (u64, u64) {
        let (used, total) = field.split_once('/').unwrap();
        (used.parse().unwrap(), total.parse().unwrap())
    };
    let (used_meta, total_meta) = pair(fields[4]);
    let (used_data, total_data) = pair(fields[5]);
    assert_eq!(
        total_meta,
        metadata_sectors * 512 / 4096,
        "the whole metadata partition: {status}"
    );
    assert_eq!(
        total_data,
        data_sectors / block_sectors,
        "the whole data partition: {status}"
    );
    assert_eq!(
        used_data,
        3 * 4,
        "3 thins x 8 MiB in 2 MiB blocks: {status}"
    );
    assert!(used_meta > 0 && used_meta < total_meta, "{status}");
    assert!(
        !status.contains("Fail") && !status.contains("out_of_data_space"),
        "{status}"
    );
}
