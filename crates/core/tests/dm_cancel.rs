//! VM tier: cancel safety on the real kernel. A backup whose caller drops it mid-way finishes
//! on its own, deactivates its snapshot's device and leaves the snapshot and volume free; an
//! instant restore whose caller drops it mid-way is made, filled and handed over all the same.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{write_file, Fixture, MIB};
use convoy_core::{CreateVolumeRequest, ErrorKind, NoProgress, Progress};
use tokio::sync::oneshot;

/// Tells the test when the upload has started.
struct Started(Mutex<Option<oneshot::Sender<()>>>);

impl Progress for Started {
    fn start(&self, _total_bytes: u64) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_cancel_backup_dropped_mid_way_completes_and_frees_the_snapshot() {
    let fx = Fixture::new("cancel", 128, "ext4", 512 * MIB);
    let m = fx.open().await;
    m.create_volume(
        CreateVolumeRequest {
            name: Some("cv".into()),
            size: Some(128 * MIB),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let at = m.mount_volume("cv", None).await.unwrap();
    write_file(&at.join("f"), 7, 48 * MIB as usize);
    let snap = m.create_snapshot("cv", Some("cs".into())).await.unwrap();
    // What the backup must hold: the snapshot's bytes.
    let want = common::thin_checksum(
        &fx,
        snap.driver_info["DevID"].parse().unwrap(),
        snap.driver_info["Size"].parse().unwrap(),
    );
    let dest = fx.backups();
    let store = Default::default();

    let (tx, started) = oneshot::channel();
    let progress = Arc::new(Started(Mutex::new(Some(tx))));
    tokio::select! {
        biased;
        _ = started => {}
        _ = m.create_backup("cs", &dest, &store, progress) => panic!("finished before starting"),
    }

    // It completes on its own: listed, then the snapshot deletes (busy until then).
    let mut listed = Vec::new();
    for _ in 0..1200 {
        listed = m.list_backups(&dest, Some("cv"), &store).await.unwrap();
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed.len(), 1, "the dropped backup never finished");
    let mut deleted = false;
    for _ in 0..1200 {
        match m.delete_snapshot("cs").await {
            Ok(()) => {
                deleted = true;
                break;
            }
            Err(e) if e.kind() == ErrorKind::Busy => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("snapshot delete: {e}"),
        }
    }
    assert!(deleted, "the snapshot stayed busy");
    // Its device is gone (deactivated by the finished backup, then deleted).
    let device = format!(
        "/dev/mapper/convoy-{}-thin-{}",
        fx.pool_name, snap.driver_info["DevID"]
    );
    assert!(!std::path::Path::new(&device).exists(), "{device}");

    // The backup is whole: it restores to the snapshot's bytes.
    let url = listed[0].backup_url.clone();
    m.umount_volume("cv").await.unwrap();
    let r = m
        .create_volume(
            CreateVolumeRequest {
                name: Some("cr".into()),
                backup_url: Some(url),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(
        common::checksum(std::path::Path::new(&r.driver_info["Device"])).0,
        want
    );
    m.delete_volume("cr", false).await.unwrap();
    m.delete_volume("cv", false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel and nbd: run by cargo xtask test"]
async fn dm_cancel_instant_restore_dropped_mid_way_completes_and_fills() {
    let fx = Fixture::new("cancelir", 128, "ext4", 512 * MIB);
    let m = fx.open().await;
    m.create_volume(
        CreateVolumeRequest {
            name: Some("iv".into()),
            size: Some(128 * MIB),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let at = m.mount_volume("iv", None).await.unwrap();
    write_file(&at.join("f"), 9, 48 * MIB as usize);
    let snap = m.create_snapshot("iv", Some("is".into())).await.unwrap();
    let want = common::thin_checksum(
        &fx,
        snap.driver_info["DevID"].parse().unwrap(),
        snap.driver_info["Size"].parse().unwrap(),
    );
    let store = Default::default();
    let url = m
        .create_backup("is", &fx.backups(), &store, Arc::new(NoProgress))
        .await
        .unwrap();

    // The caller gives up right after the create started (it opens the backup, makes the
    // thin device and attaches the NBD device: far more than 20 ms).
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        m.create_volume(
            CreateVolumeRequest {
                name: Some("ir".into()),
                backup_url: Some(url),
                instant: true,
                ..Default::default()
            },
            Arc::new(NoProgress),
        ),
    )
    .await;
    assert!(dropped.is_err(), "the create finished before the drop");

    // It completes on its own, then fills and hands over: the volume holds the snapshot's
    // bytes, with nothing of the fill left.
    let mut filled = None;
    for _ in 0..1200 {
        match m.inspect_volume("ir").await {
            Ok(v) if !v.driver_info.contains_key("InstantRestore") => {
                filled = Some(v);
                break;
            }
            Ok(_) => {}
            // Not made yet, or being made ("busy: it is being created").
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Busy) => {}
            Err(e) => panic!("inspect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = filled.expect("the dropped instant restore never completed its fill");
    assert_eq!(
        common::checksum(std::path::Path::new(&r.driver_info["Device"])).0,
        want
    );
    let hidden = format!(
        "/dev/mapper/convoy-{}-fill-{}",
        fx.pool_name, r.driver_info["DevID"]
    );
    assert!(!std::path::Path::new(&hidden).exists(), "{hidden} left");
    // Nothing stays claimed: the name is taken by a usable volume, and it deletes.
    let e = m
        .create_volume(
            CreateVolumeRequest {
                name: Some("ir".into()),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    m.delete_volume("ir", false).await.unwrap();
    m.umount_volume("iv").await.unwrap();
    m.delete_volume("iv", false).await.unwrap();
}
