//! The Node service through a real tonic client over the unix socket, against a daemon with the
//! vfs driver (host tier): staging and publishing with bind mounts (read-only honoured), stats,
//! error codes, idempotent unpublish and unstage. Bind mounts need root.

mod support;

use convoy_csi::pb::*;
use support::{create, is_root, mount_cap, Server};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stages_publishes_read_only_and_cleans_up() {
    if !is_root() {
        eprintln!("SKIPPED: bind mounts need root");
        return;
    }
    let server = Server::vfs().await;
    let mut c = server.controller().await;
    let mut n = server.node().await;
    c.create_volume(create("pvc-node", 0, mount_cap("")))
        .await
        .unwrap();
    let base = server.dir.join("kubelet");
    let staging = base.join("staging");
    let target = base.join("pods/a/mount");
    let ro_target = base.join("pods/b/mount");
    let stage = NodeStageVolumeRequest {
        volume_id: "pvc-node".into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(mount_cap("")),
        ..Default::default()
    };
    n.node_stage_volume(stage.clone()).await.unwrap();
    n.node_stage_volume(stage.clone()).await.unwrap();
    let publish = |path: &std::path::Path, readonly: bool| NodePublishVolumeRequest {
        volume_id: "pvc-node".into(),
        staging_target_path: staging.display().to_string(),
        target_path: path.display().to_string(),
        volume_capability: Some(mount_cap("")),
        readonly,
        ..Default::default()
    };
    n.node_publish_volume(publish(&target, false))
        .await
        .unwrap();
    n.node_publish_volume(publish(&target, false))
        .await
        .unwrap();
    let conflict = n
        .node_publish_volume(publish(&target, true))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);
    n.node_publish_volume(publish(&ro_target, true))
        .await
        .unwrap();
    std::fs::write(target.join("hello"), b"from pod a").unwrap();
    assert_eq!(
        std::fs::read(ro_target.join("hello")).unwrap(),
        b"from pod a"
    );
    let denied = std::fs::write(ro_target.join("nope"), b"x").unwrap_err();
    assert_eq!(denied.raw_os_error(), Some(libc::EROFS));

    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "pvc-node".into(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let units: Vec<i32> = stats.usage.iter().map(|u| u.unit).collect();
    assert_eq!(
        units,
        vec![
            volume_usage::Unit::Bytes as i32,
            volume_usage::Unit::Inodes as i32
        ]
    );
    assert!(stats
        .usage
        .iter()
        .all(|u| u.total > 0 && u.used >= 0 && u.used <= u.total));
    let missing = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "pvc-node".into(),
            volume_path: base.join("nowhere").display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // Errors: missing ids and paths, unknown volumes, publishing what is not staged.
    let mut no_cap = stage.clone();
    no_cap.volume_capability = None;
    assert_eq!(
        n.node_stage_volume(no_cap).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut no_path = stage.clone();
    no_path.staging_target_path.clear();
    assert_eq!(
        n.node_stage_volume(no_path).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut unknown = stage.clone();
    unknown.volume_id = "nope".into();
    assert_eq!(
        n.node_stage_volume(unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut unstaged = publish(&base.join("pods/c/mount"), false);
    unstaged.staging_target_path = base.join("not-staged").display().to_string();
    assert_eq!(
        n.node_publish_volume(unstaged).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    for path in [&target, &ro_target, &target] {
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "pvc-node".into(),
            target_path: path.display().to_string(),
        })
        .await
        .unwrap();
        assert!(!path.exists());
    }
    let unstage = NodeUnstageVolumeRequest {
        volume_id: "pvc-node".into(),
        staging_target_path: staging.display().to_string(),
    };
    n.node_unstage_volume(unstage.clone()).await.unwrap();
    n.node_unstage_volume(unstage).await.unwrap();
    assert!(!convoy_mounted(&staging));
    // The data is in the volume, not in the staging directory.
    assert!(!staging.join("hello").exists());
    c.delete_volume(DeleteVolumeRequest {
        volume_id: "pvc-node".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    server.stop().await;
}

fn convoy_mounted(path: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = path.display().to_string();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}
