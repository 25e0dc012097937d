//! Host tier: expand, clone and revert with the vfs driver (clones copy; expand and revert
//! are refused with a clear error) and the argument checks shared by every driver.

use std::fs;
use std::sync::Arc;

use convoy_core::{CreateVolumeRequest, ErrorKind, NoProgress, VolumeManager};

use crate::common::{named, vfs_config as config};

fn clone_of(name: &str, snapshot: Option<&str>, volume: Option<&str>) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        from_snapshot: snapshot.map(Into::into),
        from_volume: volume.map(Into::into),
        ..Default::default()
    }
}

#[tokio::test]
async fn vfs_clones_copy_and_each_sees_only_its_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("src"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("src", None).await.unwrap();
    fs::write(at.join("a.txt"), b"one").unwrap();
    m.create_snapshot("src", Some("s1".into())).await.unwrap();
    fs::write(at.join("a.txt"), b"two").unwrap();

    let c1 = m
        .create_volume(clone_of("c1", Some("s1"), None), Arc::new(NoProgress))
        .await
        .unwrap();
    let c2 = m
        .create_volume(clone_of("c2", None, Some("src")), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!((c1.driver.as_str(), c2.driver.as_str()), ("vfs", "vfs"));
    let p1 = m.mount_volume("c1", None).await.unwrap();
    let p2 = m.mount_volume("c2", None).await.unwrap();
    assert_eq!(fs::read(p1.join("a.txt")).unwrap(), b"one");
    assert_eq!(fs::read(p2.join("a.txt")).unwrap(), b"two");
    fs::write(p1.join("a.txt"), b"clone").unwrap();
    assert_eq!(fs::read(at.join("a.txt")).unwrap(), b"two");
    assert_eq!(fs::read(p2.join("a.txt")).unwrap(), b"two");

    // Restart: the clones are ordinary volumes.
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert_eq!(m.list_volumes(None).await.unwrap().len(), 3);
    m.delete_volume("c1", false).await.unwrap();
    assert!(!p1.exists());
}

#[tokio::test]
async fn bad_clone_requests_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("src"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_snapshot("src", Some("s1".into())).await.unwrap();

    let e = m
        .create_volume(clone_of("cc", Some("nope"), None), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    let e = m
        .create_volume(clone_of("cc", None, Some("nope")), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = m
        .create_volume(
            clone_of("cc", Some("s1"), Some("src")),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("not both"), "{e}");
    let mut both = clone_of("cc", Some("s1"), None);
    both.backup_url = Some("vfs:///nowhere?backup=b&volume=v".into());
    let e = m
        .create_volume(both, Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // A name already taken (the source's own) is refused.
    let e = m
        .create_volume(clone_of("src", Some("s1"), None), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");

    assert_eq!(m.list_volumes(None).await.unwrap().len(), 1);
    assert!(!dir.path().join("vols/cc").exists());
    // The source's lock was given back: it still works.
    m.create_snapshot("src", Some("s2".into())).await.unwrap();
}

#[tokio::test]
async fn vfs_expand_and_revert_say_they_are_not_supported() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vv"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_snapshot("vv", Some("ss".into())).await.unwrap();
    let e = m.expand_volume("vv", 1 << 30).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.to_string().contains("not supported by the vfs driver"),
        "{e}"
    );
    let e = m.revert_snapshot("ss").await.unwrap_err();
    assert!(
        e.to_string().contains("not supported by the vfs driver"),
        "{e}"
    );
    let e = m.expand_volume("missing", 1 << 30).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = m.revert_snapshot("missing").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Nothing was recorded: a restart finds nothing to settle.
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert!(
        m.reconcile_report().is_empty(),
        "{:?}",
        m.reconcile_report()
    );
}
