//! VM tier: convoy's device-mapper names (`convoy-<pool>-thin-<id>`). Volumes named like
//! foreign dm devices work and leave those devices alone; a pool whose devices an older convoy
//! named after the volumes is migrated at start-up.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{run, write_file, Fixture, MIB};
use convoy_core::{CreateVolumeRequest, NoProgress, VolumeManager};

fn named(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Devices that are not convoy's (an `error` target each: built into every kernel), removed on drop.
struct Foreign(Vec<String>);

impl Foreign {
    fn new(names: &[&str]) -> Foreign {
        for name in names {
            run("dmsetup", &["create", name, "--table", "0 2048 error"]);
        }
        Foreign(names.iter().map(|n| n.to_string()).collect())
    }

    /// Each device's name, table and open count, as the kernel reports them.
    fn state(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|n| {
                let table = run("dmsetup", &["table", n]);
                let open = run("dmsetup", &["info", "-c", "--noheadings", "-o", "open", n]);
                format!("{n}: {} open {}", table.trim(), open.trim())
            })
            .collect()
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("dmsetup").args(["remove", name]).status();
        }
    }
}

fn device(m_volume: &convoy_core::Volume) -> String {
    m_volume.driver_info["Device"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_names_volumes_named_like_foreign_devices_leave_them_alone() {
    let foreign = Foreign::new(&["vol1", "data"]);
    let before = foreign.state();
    let fx = Fixture::new("names", 128, "ext4", 512 * MIB);
    let m = fx.open().await;

    // Both names work, and both volumes mount and hold data.
    for name in ["data", "vol1"] {
        let v = m
            .create_volume(named(name), Arc::new(NoProgress))
            .await
            .unwrap();
        assert_eq!(
            device(&v),
            format!(
                "/dev/mapper/convoy-{}-thin-{}",
                fx.pool_name, v.driver_info["DevID"]
            )
        );
        let at = m.mount_volume(name, None).await.unwrap();
        write_file(&at.join("f"), 3, MIB as usize);
    }
    // A snapshot's device (active while a backup reads it) is convoy's too.
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    m.create_backup(
        "s1",
        &fx.backups(),
        &Default::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(foreign.state(), before);

    // A restart reconciles only convoy's devices.
    drop(m);
    let m = fx.open().await;
    let report = m.reconcile_report().join("\n");
    assert!(
        !report.contains("vol1 ") && !report.contains("data "),
        "{report}"
    );
    assert_eq!(foreign.state(), before);

    // Deleting the volumes deletes convoy's devices only.
    for name in ["vol1", "data"] {
        let dev = device(&m.inspect_volume(name).await.unwrap());
        m.umount_volume(name).await.unwrap();
        m.delete_volume(name, false).await.unwrap();
        assert!(!Path::new(&dev).exists(), "{dev}");
    }
    assert_eq!(foreign.state(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_names_a_pool_named_the_old_way_migrates_at_start_up() {
    let fx = Fixture::new("oldnames", 128, "ext4", 512 * MIB);
    let m = fx.open().await;
    let v = m
        .create_volume(named("old1"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("old1", None).await.unwrap();
    write_file(&at.join("f"), 5, MIB as usize);
    let before = std::fs::read(at.join("f")).unwrap();
    let snap = m
        .create_snapshot("old1", Some("olds".into()))
        .await
        .unwrap();
    drop(m);

    // What an older convoy left: the mounted volume active under its own name, and a
    // snapshot a crashed backup was reading active under the snapshot's name.
    let new_name = device(&v).trim_start_matches("/dev/mapper/").to_owned();
    run("dmsetup", &["rename", &new_name, "old1"]);
    let pool = run(
        "dmsetup",
        &[
            "info",
            "-c",
            "--noheadings",
            "-o",
            "major,minor",
            "--separator",
            ":",
            &fx.pool_name,
        ],
    );
    let sectors = snap.driver_info["Size"].parse::<u64>().unwrap() / 512;
    let table = format!(
        "0 {sectors} thin {} {}",
        pool.trim(),
        snap.driver_info["DevID"]
    );
    run("dmsetup", &["create", "olds", "--table", &table]);
    assert!(!Path::new(&device(&v)).exists());

    let m = VolumeManager::open(fx.config()).await.unwrap();
    let report = m.reconcile_report().join("\n");
    assert!(report.contains("renamed old1"), "{report}");
    assert!(report.contains("renamed olds"), "{report}");
    // Both old names are gone; the volume is active under convoy's name and still mounted.
    let list = run("dmsetup", &["ls"]);
    assert!(
        list.lines()
            .all(|l| !l.starts_with("old1\t") && !l.starts_with("olds\t")),
        "{list}"
    );
    assert!(Path::new(&device(&v)).exists());
    assert_eq!(m.mount_volume("old1", None).await.unwrap(), at);
    assert_eq!(std::fs::read(at.join("f")).unwrap(), before);
    // A second start finds nothing more to rename; the snapshot backs up.
    drop(m);
    let m = fx.open().await;
    let report = m.reconcile_report().join("\n");
    assert!(!report.contains("renamed"), "{report}");
    m.create_backup(
        "olds",
        &fx.backups(),
        &Default::default(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    m.umount_volume("old1").await.unwrap();
    m.delete_volume("old1", false).await.unwrap();
}
