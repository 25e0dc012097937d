//! VM tier: the CSI life cycle on devicemapper through a real gRPC client over the unix
//! socket, as an orchestrator drives it: create → stage → publish → write → snapshot → clone
//! from the snapshot → publish the clone → read the data → expand online → stats → unpublish →
//! unstage → delete; and a raw block volume published on a file. Small volumes (≤ 192 MiB), a
//! few MiB of data.

#[path = "dm_csi/metadata.rs"]
mod metadata;
mod sanity;
mod support;

use std::path::{Path, PathBuf};

use convoy_csi::pb::*;
use metadata::snapshot_metadata;
use support::dm::{pattern, write_synced, Pool, BLOCK_SECTORS};
use support::{block_cap, create, mount_cap, Server};
use tonic::Code;

const MIB: i64 = 1 << 20;

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_csi_life_cycle_and_raw_block() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(life_cycle());
}

/// csi-sanity's cases (`tests/sanity`) on devicemapper, with the suite's mount access type
/// and then with `--csi.testvolumeaccesstype=block`, on one daemon as csi-sanity runs them.
/// Small volumes (csi-sanity's default is 10 GiB; the expansion step is its 1 GiB).
#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_csi_sanity_cases_mount_and_block() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(sanity_cases());
}

async fn sanity_cases() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::new(dir.path(), "csi-sanity");
    let server = Server::start(dir.path(), &["devicemapper"], pool.options()).await;
    for block in [false, true] {
        let base = dir.path().join(if block { "block" } else { "mount" });
        std::fs::create_dir(&base).unwrap();
        let mut config = sanity::Config::with_size(32 * MIB);
        config.block = block;
        let title = format!(
            "csi-sanity cases, devicemapper, access type {}",
            if block { "block" } else { "mount" }
        );
        let report = sanity::run(server.channel().await, &base, config, &sanity::all_cases()).await;
        report.assert_passed(&title);
        // devicemapper declares expansion: its cases run (and pass) here.
        for (group, name) in [
            ("ExpandVolume [Controller Server]", "should work"),
            (
                "Node Service",
                "NodeExpandVolume should work if node-expand is called after node-publish",
            ),
        ] {
            assert_eq!(
                report.outcome(group, name),
                Some(&Ok(sanity::Outcome::Pass)),
                "{title}: {group} / {name}"
            );
        }
    }
    // Every case cleaned up after itself.
    let left = server
        .controller()
        .await
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.entries.is_empty(), "{left:?}");
    server.stop().await;
    drop(pool);
    drop(dir);
}

async fn life_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::new(dir.path(), "csi-life");
    let options = pool.options();
    let base = dir.path().join("kubelet");
    let server = Server::start(dir.path(), &["devicemapper"], options).await;
    let mut c = server.controller().await;
    let mut n = server.node().await;
    let probe = server
        .identity()
        .await
        .probe(ProbeRequest {})
        .await
        .unwrap();
    assert_eq!(probe.into_inner().ready, Some(true));
    let free_before = c
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        free_before.available_capacity > 512 * MIB,
        "{free_before:?}"
    );

    // Create: the size asked for, the pool's filesystem; another filesystem is refused.
    let v = c
        .create_volume(create("pvc-life", 128 * MIB, mount_cap("ext4")))
        .await
        .unwrap();
    let v = v.into_inner().volume.unwrap();
    assert_eq!(
        (v.volume_id.as_str(), v.capacity_bytes),
        ("pvc-life", 128 * MIB)
    );
    let again = c
        .create_volume(create("pvc-life", 128 * MIB, mount_cap("ext4")))
        .await
        .unwrap();
    assert_eq!(again.into_inner().volume.unwrap(), v);
    let xfs = c
        .create_volume(create("pvc-xfs", 128 * MIB, mount_cap("xfs")))
        .await
        .unwrap_err();
    assert_eq!(xfs.code(), Code::InvalidArgument);

    // Stage once, publish twice (one read-only).
    let staging = base.join("staging/pvc-life");
    let stage = |id: &str, at: &Path| NodeStageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: at.display().to_string(),
        volume_capability: Some(mount_cap("ext4")),
        ..Default::default()
    };
    let publish = |id: &str, staged: &Path, at: &Path, readonly: bool| NodePublishVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staged.display().to_string(),
        target_path: at.display().to_string(),
        volume_capability: Some(mount_cap("ext4")),
        readonly,
        ..Default::default()
    };
    n.node_stage_volume(stage("pvc-life", &staging))
        .await
        .unwrap();
    n.node_stage_volume(stage("pvc-life", &staging))
        .await
        .unwrap();
    let target = base.join("pods/a/pvc-life");
    let ro_target = base.join("pods/b/pvc-life");
    n.node_publish_volume(publish("pvc-life", &staging, &target, false))
        .await
        .unwrap();
    n.node_publish_volume(publish("pvc-life", &staging, &ro_target, true))
        .await
        .unwrap();
    // convoy's own API sees where CSI mounted it.
    let listed = server.v1_get("/v1/volumes/list").await;
    assert!(listed.contains(&staging.display().to_string()), "{listed}");

    // Write, snapshot, clone from the snapshot, publish the clone, read the data back.
    let data = pattern(7, 4 << 20);
    write_synced(&target.join("data"), &data);
    assert_eq!(std::fs::read(ro_target.join("data")).unwrap(), data);
    let denied = std::fs::write(ro_target.join("nope"), b"x").unwrap_err();
    assert_eq!(denied.raw_os_error(), Some(libc::EROFS));
    let snap = c
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: "pvc-life".into(),
            name: "snap-life".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(
        snap.ready_to_use && snap.size_bytes == 128 * MIB,
        "{snap:?}"
    );
    // Written after the snapshot: not in the clone.
    write_synced(&target.join("later"), b"after the snapshot");
    let mut clone = create("pvc-clone", 160 * MIB, mount_cap("ext4"));
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            },
        )),
    });
    let cv = c
        .create_volume(clone)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        cv.capacity_bytes,
        160 * MIB,
        "a clone grows to the size asked for"
    );
    let clone_staging = base.join("staging/pvc-clone");
    let clone_target = base.join("pods/c/pvc-clone");
    n.node_stage_volume(stage("pvc-clone", &clone_staging))
        .await
        .unwrap();
    n.node_publish_volume(publish("pvc-clone", &clone_staging, &clone_target, false))
        .await
        .unwrap();
    assert_eq!(std::fs::read(clone_target.join("data")).unwrap(), data);
    assert!(!clone_target.join("later").exists());

    // Expand online (mounted, published): device and filesystem grow.
    let stats = |path: PathBuf, id: &'static str| NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.display().to_string(),
        ..Default::default()
    };
    let before = n
        .node_get_volume_stats(stats(target.clone(), "pvc-life"))
        .await
        .unwrap()
        .into_inner();
    let bytes_before = before.usage[0];
    assert!(
        bytes_before.used >= 4 * MIB && bytes_before.total <= 128 * MIB,
        "{before:?}"
    );
    assert!(before.usage[1].used > 0, "inodes: {before:?}");
    let grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: "pvc-life".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 192 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (grown.capacity_bytes, grown.node_expansion_required),
        (192 * MIB, false)
    );
    let node_grown = n
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: "pvc-life".into(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: 192 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node_grown.capacity_bytes, 192 * MIB);
    let after = n
        .node_get_volume_stats(stats(target.clone(), "pvc-life"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        after.usage[0].total > 128 * MIB,
        "the filesystem grew: {after:?}"
    );
    assert!(!after.volume_condition.unwrap().abnormal);
    assert_eq!(std::fs::read(target.join("data")).unwrap(), data);

    // A published volume cannot be deleted under its pods.
    let busy = c
        .delete_volume(DeleteVolumeRequest {
            volume_id: "pvc-clone".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition, "{busy:?}");

    // Raw block: the device node bind-mounted on a file.
    c.create_volume(create("pvc-raw", 64 * MIB, block_cap()))
        .await
        .unwrap();
    let raw_target = base.join("pods/d/pvc-raw");
    n.node_stage_volume(NodeStageVolumeRequest {
        volume_id: "pvc-raw".into(),
        staging_target_path: base.join("staging/pvc-raw").display().to_string(),
        volume_capability: Some(block_cap()),
        ..Default::default()
    })
    .await
    .unwrap();
    n.node_publish_volume(NodePublishVolumeRequest {
        volume_id: "pvc-raw".into(),
        staging_target_path: base.join("staging/pvc-raw").display().to_string(),
        target_path: raw_target.display().to_string(),
        volume_capability: Some(block_cap()),
        ..Default::default()
    })
    .await
    .unwrap();
    let block = pattern(3, 1 << 20);
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&raw_target)
            .unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&block).unwrap();
        f.sync_all().unwrap();
        let mut back = vec![0u8; block.len()];
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.read_exact(&mut back).unwrap();
        assert_eq!(back, block);
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), 64 << 20);
    }
    let raw_stats = n
        .node_get_volume_stats(stats(raw_target.clone(), "pvc-raw"))
        .await
        .unwrap();
    assert_eq!(raw_stats.into_inner().usage[0].total, 64 * MIB);
    let raw_snaps = snapshot_metadata(&server, &pool, &mut c, &raw_target).await;
    backup_and_restore(&server, &mut c, &raw_snaps[0], dir.path()).await;

    // Tear down as the orchestrator does.
    for (id, path) in [
        ("pvc-life", &target),
        ("pvc-life", &ro_target),
        ("pvc-clone", &clone_target),
        ("pvc-raw", &raw_target),
    ] {
        n.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: id.into(),
            target_path: path.display().to_string(),
        })
        .await
        .unwrap();
        assert!(!path.exists(), "{}", path.display());
    }
    for (id, path) in [
        ("pvc-life", staging.clone()),
        ("pvc-clone", clone_staging.clone()),
        ("pvc-raw", base.join("staging/pvc-raw")),
    ] {
        let req = NodeUnstageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: path.display().to_string(),
        };
        n.node_unstage_volume(req.clone()).await.unwrap();
        n.node_unstage_volume(req).await.unwrap();
    }
    let listed = server.v1_get("/v1/volumes/list").await;
    assert!(!listed.contains(&staging.display().to_string()), "{listed}");
    for snapshot_id in [snap.snapshot_id].into_iter().chain(raw_snaps) {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for id in ["pvc-life", "pvc-clone", "pvc-raw"] {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let left = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(left.entries.is_empty(), "{left:?}");
    server.stop().await;
    drop(pool);
    drop(dir);
}

/// A CSI snapshot backed up with convoy's own API, restored by CreateVolume's `backupURL`
/// parameter: the restored device holds the snapshot's data, not what was written after it.
async fn backup_and_restore(
    server: &Server,
    c: &mut convoy_csi::pb::controller_client::ControllerClient<tonic::transport::Channel>,
    snapshot: &str,
    dir: &Path,
) {
    let dest = format!("vfs://{}", dir.join("backups").display());
    let answer = server
        .v1_post(
            "/v1/backups/create",
            &format!(r#"{{"SnapshotName":"{snapshot}","URL":"{dest}","Verbose":true}}"#),
        )
        .await;
    let url: serde_json::Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("backup of CSI snapshot {snapshot}: {e}: {answer}"));
    let url = url["URL"].as_str().unwrap().to_owned();
    let mut restore = create("pvc-restored", 64 * MIB, block_cap());
    restore
        .parameters
        .insert(convoy_csi::PARAM_BACKUP_URL.into(), url.clone());
    let v = c
        .create_volume(restore.clone())
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.capacity_bytes, 64 * MIB);
    // Idempotent: the same request gives the same volume.
    assert_eq!(
        c.create_volume(restore)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap(),
        v
    );
    let listed: serde_json::Value =
        serde_json::from_str(&server.v1_get("/v1/volumes/list").await).unwrap();
    let device = listed["pvc-restored"]["DriverInfo"]["Device"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = |offset: u64, len: usize| {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&device).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).unwrap();
        buf
    };
    assert_eq!(read(8 << 20, 1 << 20), pattern(3, 1 << 20));
    let block = (BLOCK_SECTORS * 512) as usize;
    assert_ne!(read(20 << 20, block), pattern(4, block));
    c.delete_volume(DeleteVolumeRequest {
        volume_id: "pvc-restored".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}
