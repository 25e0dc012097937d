//! Proves the real-kernel harness end to end with `dmsetup` alone: a thin pool on loop devices,
//! a thin device with data, a snapshot of it, and `dmsetup status` of the pool.

use convoy_e2e::{device_sectors, run, LoopDevice};
use std::process::Command;

/// Removes the dm devices it names when dropped, in order, so a failed assertion cleans up.
struct DmDevices(Vec<String>);

impl Drop for DmDevices {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("dmsetup")
                .args(["remove", "--retry", name])
                .status();
        }
    }
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_harness_thin_pool_thin_device_and_snapshot() {
    println!("kernel: {}", run("uname", &["-r"]).trim());
    let targets = run("dmsetup", &["targets"]);
    assert!(
        targets.contains("thin-pool"),
        "no thin-pool target in:\n{targets}"
    );

    let dir = tempfile::tempdir().unwrap();
    let meta = LoopDevice::new(&dir.path().join("meta.img"), 16 << 20);
    let data = LoopDevice::new(&dir.path().join("data.img"), 1 << 30);
    let mut devices = DmDevices(Vec::new());

    let pool = "harness-pool";
    let table = format!(
        "0 {} thin-pool {} {} 128 0 1 error_if_no_space",
        device_sectors(data.as_str()),
        meta.as_str(),
        data.as_str()
    );
    run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", meta.as_str()),
            "bs=4096",
            "count=1",
        ],
    );
    run("dmsetup", &["create", pool, "--table", &table]);
    devices.0.insert(0, pool.to_string());

    run("dmsetup", &["message", pool, "0", "create_thin 0"]);
    let thin_table = format!("0 2097152 thin /dev/mapper/{pool} 0");
    run(
        "dmsetup",
        &["create", "harness-thin", "--table", &thin_table],
    );
    devices.0.insert(0, "harness-thin".to_string());
    run(
        "dd",
        &[
            "if=/dev/urandom",
            "of=/dev/mapper/harness-thin",
            "bs=64k",
            "count=16",
            "oflag=direct",
        ],
    );

    // Snapshot of an active origin: suspend it so no write is in flight, then resume.
    run("dmsetup", &["suspend", "harness-thin"]);
    let snap = Command::new("dmsetup")
        .args(["message", pool, "0", "create_snap 1 0"])
        .status();
    run("dmsetup", &["resume", "harness-thin"]);
    assert!(snap.unwrap().success(), "create_snap failed");
    let snap_table = format!("0 2097152 thin /dev/mapper/{pool} 1");
    run(
        "dmsetup",
        &["create", "harness-snap", "--table", &snap_table],
    );
    devices.0.insert(0, "harness-snap".to_string());

    let origin_sum = run(
        "sh",
        &["-c", "head -c 1048576 /dev/mapper/harness-thin | md5sum"],
    );
    let snap_sum = run(
        "sh",
        &["-c", "head -c 1048576 /dev/mapper/harness-snap | md5sum"],
    );
    assert_eq!(
        origin_sum, snap_sum,
        "the snapshot must hold the origin's data"
    );

    // `<start> <len> thin-pool <transaction id> <used meta>/<total meta> <used data>/<total data> ...`
    let status = run("dmsetup", &["status", pool]);
    println!("dmsetup status {pool}: {}", status.trim());
    let fields: Vec<&str> = status.split_whitespace().collect();
    assert_eq!(fields[2], "thin-pool");
    let used_data: u64 = fields[5].split('/').next().unwrap().parse().unwrap();
    assert_eq!(
        used_data, 16,
        "1 MiB written in 64 KiB pool blocks is 16 blocks, shared by the snapshot"
    );
    assert_eq!(fields[6], "-", "no metadata snapshot is held");
    assert_eq!(fields[7], "rw", "the pool is in read-write mode");
}
