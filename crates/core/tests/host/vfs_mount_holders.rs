//! Host tier: mounts on behalf of holders (Docker's mount IDs) with the vfs driver — counted
//! per volume, saved under the root across restarts, forgotten with their volume, and a
//! delete for holders refused while any remain.

use crate::common;

use std::sync::Arc;

use common::{named, vfs_config};
use convoy_core::{ErrorKind, NoProgress, VolumeManager, MOUNT_REFS_FILE};

#[tokio::test]
async fn vfs_holders_mount_once_unmount_at_the_last_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(vfs_config(dir.path())).await.unwrap();
    m.create_volume(named("vol"), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(m.mount_holders("vol"), 0);

    let at = m.mount_for("vol", "a").await.unwrap();
    assert_eq!(at, dir.path().join("vols/vol"));
    assert_eq!(m.mount_for("vol", "b").await.unwrap(), at);
    // The same holder again changes nothing.
    assert_eq!(m.mount_for("vol", "b").await.unwrap(), at);
    assert_eq!(m.mount_holders("vol"), 2);
    assert_eq!(
        m.inspect_volume("vol").await.unwrap().mount_point,
        Some(at.clone())
    );
    // A holder that never mounted: nothing to do.
    assert!(!m.unmount_for("vol", "never").await.unwrap());
    assert!(!m.unmount_for("no-such-volume", "a").await.unwrap());

    // Held: a delete for holders is refused, naming how many hold it.
    let e = m.delete_unheld_volume("vol").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("2 Docker"), "{e}");

    // A restart keeps the holders (the file the daemon kept them in before).
    drop(m);
    let text = std::fs::read_to_string(dir.path().join("root").join(MOUNT_REFS_FILE)).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::json!({"vol": ["a", "b"]})
    );
    let m = VolumeManager::open(vfs_config(dir.path())).await.unwrap();
    assert_eq!(m.mount_holders("vol"), 2);

    assert!(m.unmount_for("vol", "a").await.unwrap());
    assert!(!m.unmount_for("vol", "a").await.unwrap());
    assert_eq!(
        m.inspect_volume("vol").await.unwrap().mount_point,
        Some(at),
        "still mounted for b"
    );
    assert!(m.unmount_for("vol", "b").await.unwrap());
    assert_eq!(m.mount_holders("vol"), 0);
    assert_eq!(m.inspect_volume("vol").await.unwrap().mount_point, None);

    m.delete_unheld_volume("vol").await.unwrap();
    assert_eq!(
        m.inspect_volume("vol").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let e = m.delete_unheld_volume("vol").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn vfs_deleting_a_held_volume_forgets_its_holders() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(vfs_config(dir.path())).await.unwrap();
    for name in ["gone", "kept"] {
        m.create_volume(named(name), Arc::new(NoProgress))
            .await
            .unwrap();
        m.mount_for(name, "a").await.unwrap();
    }
    // `/v1` delete (and CSI's) does not ask about holders; they go with the volume.
    m.delete_volume("gone", false).await.unwrap();
    assert_eq!(m.mount_holders("gone"), 0);
    assert!(!m.unmount_for("gone", "a").await.unwrap());
    // A volume made again under the name starts with none.
    m.create_volume(named("gone"), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(m.mount_holders("gone"), 0);
    assert_eq!(m.mount_holders("kept"), 1);
    drop(m);
    let m = VolumeManager::open(vfs_config(dir.path())).await.unwrap();
    assert_eq!((m.mount_holders("gone"), m.mount_holders("kept")), (0, 1));
}

#[tokio::test]
async fn vfs_holders_of_a_volume_that_no_longer_exists_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(vfs_config(dir.path())).await.unwrap();
    m.create_volume(named("vol"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.mount_for("vol", "a").await.unwrap();
    drop(m);
    // As a daemon stopped between a volume's removal and its holders' would leave it.
    let refs = dir.path().join("root").join(MOUNT_REFS_FILE);
    std::fs::write(&refs, br#"{"vol": ["a"], "ghost": ["b", "c"]}"#).unwrap();
    let m = VolumeManager::open(vfs_config(dir.path())).await.unwrap();
    let report = m.reconcile_report().join("\n");
    assert!(report.contains("ghost"), "{report}");
    assert_eq!((m.mount_holders("vol"), m.mount_holders("ghost")), (1, 0));
    // A volume created under the name later is held by no one.
    m.create_volume(named("ghost"), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(m.mount_holders("ghost"), 0);
}

#[tokio::test]
async fn vfs_a_corrupt_holder_table_stops_the_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    drop(VolumeManager::open(vfs_config(dir.path())).await.unwrap());
    std::fs::write(dir.path().join("root").join(MOUNT_REFS_FILE), b"{not json").unwrap();
    let e = VolumeManager::open(vfs_config(dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(MOUNT_REFS_FILE) && e.contains("cannot parse"),
        "{e}"
    );
}
