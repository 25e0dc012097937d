//! Host tier: the manager with the vfs driver — records, namespace, snapshots, restart and
//! reconciliation.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use convoy_core::{CreateVolumeRequest, ErrorKind, ManagerConfig, NoProgress, VolumeManager};

use crate::common::{named, vfs_config as config};

#[tokio::test]
async fn vfs_volume_life_cycle_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let v = m
        .create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(v.driver, "vfs");
    assert_eq!(v.mount_point, None);
    let at = m.mount_volume("vol1", None).await.unwrap();
    assert_eq!(at, dir.path().join("vols/vol1"));
    fs::write(at.join("a.txt"), b"one").unwrap();
    fs::create_dir(at.join("sub")).unwrap();
    fs::write(at.join("sub/b.txt"), b"two").unwrap();
    std::os::unix::fs::symlink("a.txt", at.join("link")).unwrap();

    let s = m
        .create_snapshot("vol1", Some("snap1".into()))
        .await
        .unwrap();
    assert_eq!(s.volume_name, "vol1");
    fs::write(at.join("a.txt"), b"changed").unwrap();
    let snap_dir = Path::new(&s.driver_info["Path"]).to_path_buf();
    assert_eq!(fs::read(snap_dir.join("a.txt")).unwrap(), b"one");
    assert_eq!(fs::read(snap_dir.join("sub/b.txt")).unwrap(), b"two");
    assert_eq!(
        fs::read_link(snap_dir.join("link")).unwrap(),
        Path::new("a.txt")
    );

    // Restart: the same state comes back.
    let before = m.inspect_volume("vol1").await.unwrap();
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let after = m.inspect_volume("vol1").await.unwrap();
    assert_eq!(before, after);
    assert_eq!(after.mount_point.as_deref(), Some(at.as_path()));
    assert!(after.snapshots.contains_key("snap1"));
    assert_eq!(m.inspect_snapshot("snap1").await.unwrap().name, "snap1");

    m.delete_snapshot("snap1").await.unwrap();
    assert!(!snap_dir.exists());
    assert_eq!(
        m.inspect_snapshot("snap1").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    m.umount_volume("vol1").await.unwrap();
    m.delete_volume("vol1", false).await.unwrap();
    assert!(!at.exists());
    assert!(m.list_volumes(None).await.unwrap().is_empty());
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert!(m.list_volumes(Some("vfs")).await.unwrap().is_empty());
}

#[tokio::test]
async fn names_are_validated_generated_and_shared() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let e = m
        .create_volume(named("-bad"), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(!dir.path().join("vols/-bad").exists());

    let v = m
        .create_volume(CreateVolumeRequest::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert!(
        v.name.starts_with("volume-") && v.name.len() == 23,
        "{}",
        v.name
    );
    let s = m.create_snapshot(&v.name, None).await.unwrap();
    assert!(s.name.starts_with("snapshot-"), "{}", s.name);

    // One namespace for volumes and snapshots.
    let e = m
        .create_volume(named(&s.name), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains("snapshot"), "{e}");
    let e = m
        .create_snapshot(&v.name, Some(v.name.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let e = m
        .create_volume(named(&v.name), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");

    let e = m.create_snapshot("nosuch", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("nosuch"), "{e}");
    let e = m.delete_volume("nosuch", false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = m.list_volumes(Some("zfs")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = m
        .create_volume(
            CreateVolumeRequest {
                driver: Some("devicemapper".into()),
                ..named("vol2")
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // The failed create did not keep the name.
    m.create_volume(named("vol2"), Arc::new(NoProgress))
        .await
        .unwrap();
}

#[tokio::test]
async fn one_manager_per_root_and_config_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let e = VolumeManager::open(config(dir.path())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    drop(m);
    // No drivers given: the ones of convoy.cfg are used.
    let m = VolumeManager::open(ManagerConfig {
        root: dir.path().join("root"),
        drivers: vec![],
        driver_opts: BTreeMap::new(),
    })
    .await
    .unwrap();
    let info = m.info().await.unwrap();
    assert_eq!(info.general["DriverList"], "vfs");
    assert_eq!(info.general["DefaultDriver"], "vfs");
    assert_eq!(
        info.drivers["vfs"]["Path"],
        dir.path().join("vols").display().to_string()
    );

    let fresh = tempfile::tempdir().unwrap();
    let e = VolumeManager::open(ManagerConfig {
        root: fresh.path().to_path_buf(),
        drivers: vec![],
        driver_opts: BTreeMap::new(),
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("convoy.cfg"), "{e}");
    let e = VolumeManager::open(ManagerConfig {
        root: fresh.path().to_path_buf(),
        drivers: vec!["vfs".into()],
        driver_opts: BTreeMap::new(),
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("vfs.path"), "{e}");
}

#[tokio::test]
async fn reconciliation_settles_interrupted_operations() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("keep"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_volume(named("half"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_volume(named("gone"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_snapshot("keep", Some("s1".into())).await.unwrap();
    m.create_snapshot("keep", Some("s2".into())).await.unwrap();
    drop(m);

    // Simulate crashes: "half" was being created, "gone" being deleted, s2 being created,
    // and a snapshot copy no record names.
    let recs = dir.path().join("root/vfs/volumes");
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let p = recs.join(format!("{name}.json"));
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    };
    edit("half", &|v| v["state"] = "Creating".into());
    edit("gone", &|v| v["state"] = "Deleting".into());
    edit("keep", &|v| {
        v["snapshots"]["s2"]["state"] = "Creating".into()
    });
    fs::create_dir(dir.path().join("vols/.snapshots/stray")).unwrap();

    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let report = m.reconcile_report().join("\n");
    assert!(report.contains("half"), "{report}");
    assert!(report.contains("gone"), "{report}");
    assert!(report.contains("s2"), "{report}");
    assert!(report.contains("stray"), "{report}");
    let names: Vec<String> = m
        .list_volumes(None)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["keep"]);
    let keep = m.inspect_volume("keep").await.unwrap();
    assert_eq!(keep.snapshots.keys().collect::<Vec<_>>(), ["s1"]);
    assert!(!dir.path().join("vols/gone").exists());
    assert!(!dir.path().join("vols/.snapshots/s2").exists());
    assert!(!dir.path().join("vols/.snapshots/stray").exists());
    assert!(dir.path().join("vols/.snapshots/s1").exists());
    // The names are free again.
    m.create_volume(named("half"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_snapshot("keep", Some("s2".into())).await.unwrap();
}

#[tokio::test]
async fn reference_only_delete_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let at = {
        m.create_volume(named("vol1"), Arc::new(NoProgress))
            .await
            .unwrap();
        m.mount_volume("vol1", None).await.unwrap()
    };
    fs::write(at.join("data"), b"x").unwrap();
    m.delete_volume("vol1", true).await.unwrap();
    assert!(m.inspect_volume("vol1").await.is_err());
    assert_eq!(fs::read(at.join("data")).unwrap(), b"x");
    // Re-creating the name adopts the directory as it is.
    m.create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(fs::read(at.join("data")).unwrap(), b"x");
}

#[tokio::test]
async fn vfs_backup_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    // A backup of an empty tree works; the snapshot is not left busy.
    m.create_backup("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    m.delete_snapshot("s1").await.unwrap();

    let e = m
        .create_volume(
            CreateVolumeRequest {
                backup_url: Some(format!("{dest}?backup=b1&volume=vol1")),
                ..named("r1")
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(m.inspect_volume("r1").await.is_err());
    assert!(!dir.path().join("vols/r1").exists());
    let e = m
        .create_backup("nosuch", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = m
        .list_backups("ftp://x", None, &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[tokio::test]
async fn a_setup_that_cannot_start_is_not_saved_and_the_next_start_is_free() {
    let dir = tempfile::tempdir().unwrap();
    // A vfs.path that cannot be made (under a regular file).
    fs::write(dir.path().join("file"), b"x").unwrap();
    let mut bad = config(dir.path());
    bad.driver_opts.insert(
        "vfs.path".into(),
        dir.path().join("file/vols").display().to_string(),
    );
    let e = VolumeManager::open(bad).await.unwrap_err();
    assert!(e.to_string().contains("file/vols"), "{e}");
    assert!(
        !dir.path().join("root/convoy.cfg").exists(),
        "a setup that did not start was saved"
    );
    // Without flags there is nothing to reuse; with good ones it starts and is saved.
    let none = ManagerConfig {
        root: dir.path().join("root"),
        ..ManagerConfig::default()
    };
    let e = VolumeManager::open(none.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    drop(VolumeManager::open(config(dir.path())).await.unwrap());
    assert!(dir.path().join("root/convoy.cfg").exists());
    let again = VolumeManager::open(none).await.unwrap();
    drop(again);
}
