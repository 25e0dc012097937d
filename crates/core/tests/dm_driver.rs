//! VM tier: the devicemapper driver against a real dm-thin kernel (`cargo xtask test`).

mod common;

use std::fs;
use std::sync::Arc;

use common::{run, write_file, Fixture, MIB};
use convoy_core::{CreateVolumeRequest, ErrorKind, NoProgress};
use convoy_thinpool::ThinId;

fn named(name: &str, size: Option<u64>) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        size,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_volumes_mount_snapshot_and_survive_restarts() {
    let fx = Fixture::new("life", 4096, "ext4", 1024 * MIB);
    let m = fx.open().await;

    let info = m.info().await.unwrap();
    let dm = &info.drivers["devicemapper"];
    assert_eq!(dm["ThinpoolBlockSize"], (2 * MIB).to_string());
    assert_eq!(dm["DefaultVolumeSize"], (64 * MIB).to_string());
    assert_eq!(dm["ThinpoolSize"], (1024 * MIB).to_string());
    assert_eq!(dm["DataDevice"], fx.data.path().display().to_string());
    assert_eq!(
        dm["ThinpoolDevice"],
        format!("/dev/mapper/{}", fx.pool_name)
    );
    assert_eq!(info.general["DefaultDriver"], "devicemapper");

    // Size rounded up to whole 2 MiB blocks, the rounding reported.
    let v = m
        .create_volume(named("vol1", Some(100 * MIB + 1)), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(v.driver_info["Size"], (102 * MIB).to_string());
    assert_eq!(v.driver_info["RequestedSize"], (100 * MIB + 1).to_string());
    // convoy's own device name (pool- and id-scoped), never the volume's name.
    assert_eq!(
        v.driver_info["Device"],
        format!(
            "/dev/mapper/convoy-{}-thin-{}",
            fx.pool_name, v.driver_info["DevID"]
        )
    );
    assert!(std::path::Path::new(&v.driver_info["Device"]).exists());
    assert_eq!(v.driver_info["MountPoint"], "");
    // Default size.
    let v2 = m
        .create_volume(named("vol2", None), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(v2.driver_info["Size"], (64 * MIB).to_string());
    assert_ne!(v2.driver_info["DevID"], v.driver_info["DevID"]);

    let at = m.mount_volume("vol1", None).await.unwrap();
    assert_eq!(at, fx.root().join("devicemapper/mounts/vol1"));
    assert_eq!(
        m.mount_volume("vol1", None).await.unwrap(),
        at,
        "mount is idempotent"
    );
    write_file(&at.join("a"), 1, 3 * MIB as usize);
    let e = m.delete_volume("vol1", false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("mounted"), "{e}");
    // A second mount point elsewhere is refused.
    let e = m
        .mount_volume("vol1", Some(fx.dir.path().join("elsewhere")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");

    // Snapshot while mounted (frozen around it); the snapshot keeps the old content.
    let s = m
        .create_snapshot("vol1", Some("snap1".into()))
        .await
        .unwrap();
    assert_eq!(s.driver_info["Size"], (102 * MIB).to_string());
    write_file(&at.join("a"), 2, 3 * MIB as usize);
    let e = m
        .create_snapshot("vol2", Some("vol1".into()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");

    // Restart: still mounted, same records.
    let before = m.list_volumes(None).await.unwrap();
    drop(m);
    let m = fx.open().await;
    assert_eq!(m.list_volumes(None).await.unwrap(), before);
    assert!(at.join("a").exists());

    // Crash while mounted, then the mount vanished (reboot): re-mounted at start-up.
    drop(m);
    run("umount", &[at.to_str().unwrap()]);
    let m = fx.open().await;
    let report = m.reconcile_report().join("\n");
    assert!(report.contains("re-mounted volume vol1"), "{report}");
    assert!(at.join("a").exists());

    // Orphan thin id in the pool: deleted at start-up. Half-made volume: removed.
    let vol2_device = v2.driver_info["Device"].clone();
    drop(m);
    fx.pool().create_thin(ThinId::new(4242).unwrap()).unwrap();
    let rec = fx.root().join("devicemapper/volumes/vol2.json");
    let text = fs::read_to_string(&rec)
        .unwrap()
        .replace("\"Ready\"", "\"Creating\"");
    fs::write(&rec, text).unwrap();
    let m = fx.open().await;
    let report = m.reconcile_report().join("\n");
    assert!(report.contains("orphan thin id 4242"), "{report}");
    assert!(report.contains("vol2"), "{report}");
    assert!(m.inspect_volume("vol2").await.is_err());
    assert!(
        fx.pool().delete(ThinId::new(4242).unwrap()).is_err(),
        "orphan still there"
    );
    assert!(!std::path::Path::new(&vol2_device).exists());

    // Unmount, delete: the snapshot goes with it, the name is free again.
    m.umount_volume("vol1").await.unwrap();
    m.umount_volume("vol1").await.unwrap();
    assert_eq!(m.inspect_volume("vol1").await.unwrap().mount_point, None);
    let dev_id: u64 = m.inspect_volume("vol1").await.unwrap().driver_info["DevID"]
        .parse()
        .unwrap();
    m.delete_volume("vol1", false).await.unwrap();
    assert!(m.inspect_snapshot("snap1").await.is_err());
    assert!(fx
        .pool()
        .find_active(ThinId::new(dev_id).unwrap())
        .unwrap()
        .is_empty());
    drop(m);
    let m = fx.open().await;
    assert!(m.list_volumes(None).await.unwrap().is_empty());
    assert!(
        m.reconcile_report().iter().all(|l| !l.contains("orphan")),
        "{:?}",
        m.reconcile_report()
    );
    m.create_volume(named("vol1", None), Arc::new(NoProgress))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_a_volume_unmounted_behind_convoys_back_is_mounted_again_for_a_holder() {
    let fx = Fixture::new("held", 4096, "ext4", 1024 * MIB);
    let m = fx.open().await;
    m.create_volume(named("held", None), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_for("held", "docker-a").await.unwrap();
    write_file(&at.join("data"), 7, MIB as usize);

    // Someone unmounts it by hand; the record still names the mount point.
    run("umount", &[at.to_str().unwrap()]);
    assert!(!at.join("data").exists());
    assert_eq!(
        m.inspect_volume("held").await.unwrap().mount_point,
        Some(at.clone())
    );
    // The next holder's mount asks the mount table, not the record: mounted again.
    assert_eq!(m.mount_for("held", "docker-b").await.unwrap(), at);
    assert!(at.join("data").exists(), "handed out unmounted");
    assert_eq!(m.mount_holders("held"), 2);

    assert!(m.unmount_for("held", "docker-a").await.unwrap());
    assert!(at.join("data").exists(), "unmounted under docker-b");
    assert!(m.unmount_for("held", "docker-b").await.unwrap());
    assert!(
        !at.join("data").exists(),
        "still mounted after the last holder"
    );
    m.delete_unheld_volume("held").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_xfs_volume_and_bad_requests() {
    let fx = Fixture::new("xfs", 128, "xfs", 1024 * MIB);
    let m = fx.open().await;
    let v = m
        .create_volume(named("xv", Some(320 * MIB)), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(v.driver_info["Filesystem"], "xfs");
    let at = m
        .mount_volume("xv", Some(fx.dir.path().join("mnt/xv")))
        .await
        .unwrap();
    write_file(&at.join("f"), 9, MIB as usize);
    m.create_snapshot("xv", Some("xs".into())).await.unwrap();
    let info = m.inspect_volume("xv").await.unwrap();
    assert_eq!(info.driver_info["MountPoint"], at.display().to_string());
    assert!(info.snapshots.contains_key("xs"));

    // A failed create (xfs refuses a tiny filesystem) leaves nothing behind.
    let e = m
        .create_volume(named("tiny", Some(MIB)), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("mkfs.xfs"), "{e}");
    assert!(m.inspect_volume("tiny").await.is_err());
    assert!(!fx.root().join("devicemapper/volumes/tiny.json").exists());
    // No device of it: the pool's only active thin device is xv's.
    let active: Vec<_> = fx
        .pool()
        .list_active()
        .unwrap()
        .into_iter()
        .map(|d| d.path.display().to_string())
        .collect();
    assert_eq!(active, [info.driver_info["Device"].clone()]);
    drop(m);
    let m = fx.open().await;
    assert!(
        m.reconcile_report().iter().all(|l| !l.contains("orphan")),
        "{:?}",
        m.reconcile_report()
    );
    m.umount_volume("xv").await.unwrap();
    m.delete_snapshot("xs").await.unwrap();
    m.delete_volume("xv", false).await.unwrap();
}
