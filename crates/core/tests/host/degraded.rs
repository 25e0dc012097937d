//! Host tier: a driver that cannot start (here: a devicemapper pool on a device that does not
//! exist) comes up degraded instead of taking the other drivers' volumes down with it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use convoy_core::{CreateVolumeRequest, ErrorKind, ManagerConfig, NoProgress, VolumeManager};

fn config(dir: &Path, drivers: &[&str]) -> ManagerConfig {
    let missing = dir.join("no-such-device");
    let mut driver_opts = BTreeMap::from([
        ("dm.datadev".to_owned(), missing.display().to_string()),
        ("dm.metadatadev".to_owned(), missing.display().to_string()),
    ]);
    // Options of a driver that is not enabled are refused at start: give vfs's only with it.
    if drivers.contains(&"vfs") {
        driver_opts.insert(
            "vfs.path".to_owned(),
            dir.join("vols").display().to_string(),
        );
    }
    ManagerConfig {
        root: dir.join("root"),
        drivers: drivers.iter().map(|d| d.to_string()).collect(),
        driver_opts,
    }
}

#[tokio::test]
async fn a_driver_that_cannot_start_is_degraded_and_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path(), &["vfs", "devicemapper"]))
        .await
        .unwrap();
    let report = m.reconcile_report().join("\n");
    assert!(report.contains("devicemapper: degraded"), "{report}");

    // vfs volumes work.
    let v = m
        .create_volume(
            CreateVolumeRequest {
                name: Some("v1".into()),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(v.driver, "vfs");
    m.mount_volume("v1", None).await.unwrap();
    m.create_snapshot("v1", Some("s1".into())).await.unwrap();

    // The degraded driver says why, in info and on use.
    let info = m.info().await.unwrap();
    assert!(
        info.drivers["devicemapper"].contains_key("Degraded"),
        "{:?}",
        info.drivers
    );
    let e = m
        .create_volume(
            CreateVolumeRequest {
                name: Some("d1".into()),
                driver: Some("devicemapper".into()),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("devicemapper"), "{e}");
    // The name was not taken by the refused create.
    assert_eq!(
        m.inspect_volume("d1").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    m.delete_snapshot("s1").await.unwrap();
    m.delete_volume("v1", false).await.unwrap();
}

#[tokio::test]
async fn the_only_driver_failing_still_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let e = VolumeManager::open(config(dir.path(), &["devicemapper"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pool"), "{e}");
}
