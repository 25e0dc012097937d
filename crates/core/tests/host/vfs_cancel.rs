//! Host tier: cancel safety. A caller that drops a long operation half-way (an HTTP client
//! hanging up, a timeout) must neither cancel it half-way nor leave anything claimed: the
//! operation completes (or rolls back) on its own, and the objects stay usable. Also: a panic
//! inside a backup's upload releases the snapshot.

use convoy_testkit::noise;
use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_core::{CreateVolumeRequest, ErrorKind, Progress, VolumeManager};
use tokio::sync::oneshot;

use crate::common::{named, vfs_config as config};

/// Every file's relative path and content.
fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in fs::read_dir(root.join(&rel)).unwrap() {
            let rel = rel.join(entry.unwrap().file_name());
            if root.join(&rel).is_dir() {
                todo.push(rel);
            } else {
                out.insert(rel.clone(), fs::read(root.join(&rel)).unwrap());
            }
        }
    }
    out
}

/// Tells a waiting test when the operation has started its long part.
struct Started(Mutex<Option<oneshot::Sender<()>>>);

impl Started {
    fn new() -> (Arc<Started>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Arc::new(Started(Mutex::new(Some(tx)))), rx)
    }
}

impl Progress for Started {
    fn start(&self, _total_bytes: u64) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// Panics when the long part starts (a bug deep in an upload).
struct Panics;

impl Progress for Panics {
    fn start(&self, _total_bytes: u64) {
        panic!("injected panic in progress");
    }
}

/// Polls `operation` until `started` fires, then drops it (the caller goes away mid-way).
async fn drop_when_started<T>(operation: impl Future<Output = T>, started: oneshot::Receiver<()>) {
    tokio::select! {
        biased;
        _ = started => {}
        _ = operation => panic!("the operation finished before its long part started"),
    }
}

/// Retries `check` until it answers `Some` (the detached operation has finished); gives up
/// after two minutes, which only a stuck operation takes.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: still not done after two minutes");
}

/// A vfs volume `vol1` holding 24 MiB over a few files, and its snapshot `s1`.
async fn volume_with_snapshot(m: &VolumeManager) -> PathBuf {
    m.create_volume(named("vol1"), Arc::new(convoy_core::NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("vol1", None).await.unwrap();
    for i in 0..3u64 {
        fs::write(at.join(format!("f{i}")), noise(i + 1, 8 << 20)).unwrap();
    }
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfs_backup_dropped_mid_way_completes_and_releases_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let at = volume_with_snapshot(&m).await;
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let store = Default::default();

    // The reproduction: the client gives up while the backup uploads.
    let (progress, started) = Started::new();
    drop_when_started(m.create_backup("s1", &dest, &store, progress), started).await;

    // The backup finishes on its own and is listed whole.
    let backups = eventually("the dropped backup", async || {
        let list = m.list_backups(&dest, Some("vol1"), &store).await.unwrap();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(backups.len(), 1);
    let url = backups[0].backup_url.clone();

    // Another backup of the same snapshot works; then the snapshot and the volume are free.
    m.create_backup("s1", &dest, &store, Arc::new(convoy_core::NoProgress))
        .await
        .unwrap();
    eventually("snapshot delete", async || {
        match m.delete_snapshot("s1").await {
            Ok(()) => Some(()),
            Err(e) if e.kind() == ErrorKind::Busy => None,
            Err(e) => panic!("snapshot delete: {e}"),
        }
    })
    .await;

    // The dropped backup restores to the tree it was made of.
    let copy = m
        .create_volume(
            CreateVolumeRequest {
                backup_url: Some(url),
                ..named("copy")
            },
            Arc::new(convoy_core::NoProgress),
        )
        .await
        .unwrap();
    let copy_at = m.mount_volume(&copy.name, None).await.unwrap();
    assert_eq!(contents(&copy_at), contents(&at));
    m.delete_volume("vol1", false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfs_restore_dropped_mid_way_completes_and_frees_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let at = volume_with_snapshot(&m).await;
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let store = Default::default();
    let url = m
        .create_backup("s1", &dest, &store, Arc::new(convoy_core::NoProgress))
        .await
        .unwrap();

    let (progress, started) = Started::new();
    let request = CreateVolumeRequest {
        backup_url: Some(url),
        ..named("copy")
    };
    drop_when_started(m.create_volume(request, progress), started).await;

    // The restore finishes on its own: the volume becomes ready with the backup's content.
    let copy = eventually("the dropped restore", async || {
        match m.inspect_volume("copy").await {
            Ok(v) => Some(v),
            Err(e) if e.kind() == ErrorKind::Busy => None,
            Err(e) => panic!("inspect copy: {e}"),
        }
    })
    .await;
    let copy_at = m.mount_volume(&copy.name, None).await.unwrap();
    assert_eq!(contents(&copy_at), contents(&at));

    // Nothing is left claimed: it deletes, and its name is free again; the same survives a
    // restart.
    m.delete_volume("copy", false).await.unwrap();
    m.create_volume(named("copy"), Arc::new(convoy_core::NoProgress))
        .await
        .unwrap();
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert!(
        m.reconcile_report().is_empty(),
        "{:?}",
        m.reconcile_report()
    );
    m.delete_volume("copy", false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfs_delete_dropped_mid_way_completes() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let at = volume_with_snapshot(&m).await;
    for i in 0..2000 {
        fs::write(at.join(format!("small{i}")), b"x").unwrap();
    }
    let volume_dir = at.clone();

    // Polled once (the delete starts), then dropped.
    let mut delete = Box::pin(m.delete_volume("vol1", false));
    tokio::select! {
        biased;
        r = &mut delete => r.unwrap(),
        _ = tokio::task::yield_now() => {}
    }
    drop(delete);

    eventually("the dropped delete", async || {
        match m.inspect_volume("vol1").await {
            Err(e) if e.kind() == ErrorKind::NotFound => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(!volume_dir.exists(), "{} is left", volume_dir.display());
    // The snapshot went with it, and both names are free.
    assert_eq!(
        m.inspect_snapshot("s1").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    m.create_volume(named("vol1"), Arc::new(convoy_core::NoProgress))
        .await
        .unwrap();
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfs_panic_in_a_backup_releases_the_snapshot_and_in_a_restore_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    volume_with_snapshot(&m).await;
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let store = Default::default();

    let e = m
        .create_backup("s1", &dest, &store, Arc::new(Panics))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    assert!(e.to_string().contains("panic"), "{e}");
    // Not busy: the snapshot is usable and deletable at once.
    let url = m
        .create_backup("s1", &dest, &store, Arc::new(convoy_core::NoProgress))
        .await
        .unwrap();

    let request = CreateVolumeRequest {
        backup_url: Some(url),
        ..named("copy")
    };
    let e = m
        .create_volume(request, Arc::new(Panics))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    // Rolled back: no volume, the name free, nothing for start-up to settle.
    assert_eq!(
        m.inspect_volume("copy").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!dir.path().join("vols/copy").exists());
    m.delete_snapshot("s1").await.unwrap();
    m.delete_volume("vol1", false).await.unwrap();
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert!(
        m.reconcile_report().is_empty(),
        "{:?}",
        m.reconcile_report()
    );
    m.create_volume(named("copy"), Arc::new(convoy_core::NoProgress))
        .await
        .unwrap();
}
