//! VM tier: cancel safety on the real kernel. A backup whose caller drops it mid-way finishes
//! on its own, deactivates its snapshot's device and leaves the snapshot and volume free.

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
