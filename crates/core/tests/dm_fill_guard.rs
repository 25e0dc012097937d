//! VM tier: the pool-fill guard on a real, small pool (64 MiB of data, 64 KiB blocks). A
//! writer on a volume's device fills it past the warning and the refusal thresholds (default
//! 80% and 95%); new volumes, snapshots, clones and restores are refused with `Unavailable`
//! naming the pool, the fill and the setting, while the writer itself goes on writing; freeing
//! space (the written range discarded, the snapshot holding it deleted) allows them again.
//!
//! The writer writes the volume's device, not a file in its mounted filesystem: a mounted ext4
//! zeroes its inode tables in the background (`ext4lazyinit`), which would move the fill
//! between the test's readings.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use common::{run, Fixture, MIB};
use convoy_core::{
    CreateVolumeRequest, ErrorKind, NoProgress, StoreOptions, VolumeManager, DEVICEMAPPER,
};

/// The devicemapper `info` section.
async fn pool_info(m: &VolumeManager) -> std::collections::BTreeMap<String, String> {
    m.info().await.unwrap().drivers[DEVICEMAPPER].clone()
}

/// Data blocks used and total, from `info`.
async fn blocks(m: &VolumeManager) -> (u64, u64) {
    let i = pool_info(m).await;
    (
        i["ThinpoolUsedBlocks"].parse().unwrap(),
        i["ThinpoolTotalBlocks"].parse().unwrap(),
    )
}

/// Appends `bytes` of non-repeating data to an open file and syncs it (so the pool allocates).
fn append(f: &mut File, bytes: u64, seed: u8) {
    let mut chunk = vec![0u8; MIB as usize];
    let mut left = bytes;
    let mut n: u64 = 0;
    while left > 0 {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i as u64)
                .wrapping_mul(31)
                .wrapping_add(n)
                .wrapping_add(u64::from(seed)) as u8;
        }
        chunk[..8].copy_from_slice(&n.to_le_bytes());
        let len = left.min(MIB) as usize;
        f.write_all(&chunk[..len]).unwrap();
        left -= len as u64;
        n += 1;
    }
    f.sync_all().unwrap();
}

/// Bytes to write for the pool to reach `percent`% of its data blocks (64 KiB each), plus a
/// margin of `extra` blocks for the filesystem's own metadata.
fn bytes_to(used: u64, total: u64, percent: u64, extra: u64) -> u64 {
    let want = (total * percent).div_ceil(100) + extra;
    want.saturating_sub(used) * 64 * 1024
}

fn named(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        size: Some(256 * MIB),
        ..Default::default()
    }
}

fn assert_refused(r: convoy_core::Result<impl std::fmt::Debug>, fx: &Fixture, what: &str) {
    let e = r.expect_err(&format!("{what} must be refused by the fill guard"));
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{what}: {e}");
    let msg = e.to_string();
    for part in [
        what,
        fx.pool_name.as_str(),
        "% full",
        "data",
        "dm.fillrefuse=95",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_fill_guard_refuses_new_objects_and_never_stops_writers() {
    let fx = Fixture::new("fill", 128, "ext4", 64 * MIB);
    let m = fx.open().await;
    m.create_volume(named("v1"), Arc::new(NoProgress))
        .await
        .unwrap();
    // A backup made while the pool is nearly empty, to try a restore later.
    m.create_snapshot("v1", Some("s0".into())).await.unwrap();
    let backup = m
        .create_backup(
            "s0",
            &fx.backups(),
            &StoreOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    let info = pool_info(&m).await;
    assert_eq!(info["ThinpoolFillLevel"], "ok", "{info:?}");
    assert_eq!(info["ThinpoolFillWarnPercent"], "80");
    assert_eq!(info["ThinpoolFillRefusePercent"], "95");
    let (used, total) = blocks(&m).await;
    assert_eq!(total, 1024, "64 MiB of 64 KiB blocks");
    assert!(used * 100 < total * 60, "mkfs filled {used} of {total}");

    // Past the warning threshold: warned, still allowed. The writer starts at 128 MiB of the
    // 256 MiB volume, above what mkfs wrote.
    let device = m.inspect_volume("v1").await.unwrap().driver_info["Device"].clone();
    let mut writer = OpenOptions::new().write(true).open(&device).unwrap();
    writer.seek(SeekFrom::Start(128 * MIB)).unwrap();
    append(&mut writer, bytes_to(used, total, 85, 0), 1);
    let (used, _) = blocks(&m).await;
    let info = pool_info(&m).await;
    assert_eq!(info["ThinpoolFillLevel"], "warn", "{info:?}");
    assert!(info["ThinpoolDataFill"].ends_with('%'), "{info:?}");
    m.create_snapshot("v1", Some("s1".into())).await.unwrap();
    assert!(used * 100 < total * 95, "{used} of {total}");

    // Past the refusal threshold, by the same open writer.
    append(&mut writer, bytes_to(used, total, 96, 0), 2);
    let (used, _) = blocks(&m).await;
    assert!(used * 100 >= total * 95, "{used} of {total}");
    assert!(
        used < total,
        "the pool itself is not full yet: {used} of {total}"
    );
    assert_eq!(pool_info(&m).await["ThinpoolFillLevel"], "refuse");
    assert_refused(
        m.create_volume(named("v2"), Arc::new(NoProgress)).await,
        &fx,
        "create volume v2",
    );
    assert_refused(
        m.create_snapshot("v1", Some("s2".into())).await,
        &fx,
        "snapshot s2 of volume v1",
    );
    let restore = CreateVolumeRequest {
        name: Some("r1".into()),
        backup_url: Some(backup.clone()),
        ..Default::default()
    };
    assert_refused(
        m.create_volume(restore.clone(), Arc::new(NoProgress)).await,
        &fx,
        "into new volume r1",
    );
    let clone = CreateVolumeRequest {
        name: Some("c1".into()),
        from_snapshot: Some("s1".into()),
        ..Default::default()
    };
    assert_refused(
        m.create_volume(clone, Arc::new(NoProgress)).await,
        &fx,
        "create volume c1",
    );
    // Refused requests left nothing: no records, names free, the snapshot list unchanged.
    let names: Vec<String> = m
        .list_volumes(None)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["v1"]);
    let v1 = m.inspect_volume("v1").await.unwrap();
    assert_eq!(
        v1.snapshots.keys().collect::<Vec<_>>(),
        ["s0", "s1"],
        "{v1:?}"
    );

    // The running writer is not cut off by the guard: it goes on writing and syncing.
    append(&mut writer, MIB, 3);
    let end = writer.stream_position().unwrap();
    drop(writer);
    let (after, _) = blocks(&m).await;
    assert!(
        after > used,
        "the writer's last MiB was allocated: {used} -> {after}"
    );

    // Space freed (the written range discarded, the snapshot still holding part of it
    // deleted): everything is allowed again.
    let len = (end - 128 * MIB).to_string();
    let offset = (128 * MIB).to_string();
    run("blkdiscard", &["-o", &offset, "-l", &len, &device]);
    m.delete_snapshot("s1").await.unwrap();
    let (used, total) = blocks(&m).await;
    assert!(used * 100 < total * 80, "{used} of {total} after freeing");
    assert_eq!(pool_info(&m).await["ThinpoolFillLevel"], "ok");
    m.create_snapshot("v1", Some("s2".into())).await.unwrap();
    m.create_volume(named("v2"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_volume(restore, Arc::new(NoProgress))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_fill_guard_thresholds_are_driver_options() {
    let fx = Fixture::new("fillopt", 128, "ext4", 64 * MIB);
    // A fresh pool's metadata is already about 10% used (measured on 6.1: 1648 of 16384 blocks
    // of a 64 MiB metadata device), so thresholds of 1% and 5% refuse the first create.
    let mut config = fx.config();
    config.driver_opts.insert("dm.fillwarn".into(), "1".into());
    config
        .driver_opts
        .insert("dm.fillrefuse".into(), "5".into());
    let m = VolumeManager::open(config.clone()).await.unwrap();
    let e = m
        .create_volume(named("v1"), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let msg = e.to_string();
    for part in ["create volume v1", "metadata", "dm.fillrefuse=5"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    let info = pool_info(&m).await;
    assert_eq!(info["ThinpoolFillRefusePercent"], "5");
    assert_eq!(info["ThinpoolFillLevel"], "refuse");
    assert!(m.list_volumes(None).await.unwrap().is_empty());
    drop(m);
    // A bad value stops the start with an error naming the option.
    config
        .driver_opts
        .insert("dm.fillrefuse".into(), "120".into());
    let e = VolumeManager::open(config).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("dm.fillrefuse"), "{e}");
}
