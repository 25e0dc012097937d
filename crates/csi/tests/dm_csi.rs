//! VM tier: the CSI life cycle on devicemapper through a real gRPC client over the unix
//! socket, as an orchestrator drives it: create → stage → publish → write → snapshot → clone
//! from the snapshot → publish the clone → read the data → expand online → stats → unpublish →
//! unstage → delete; and a raw block volume published on a file. Small volumes (≤ 192 MiB), a
//! few MiB of data.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_csi::pb::*;
use convoy_thinpool::{BlockSize, PoolConfig, Sectors, ThinPool};
use support::{block_cap, create, mount_cap, Server};
use tonic::Code;

const MIB: i64 = 1 << 20;

/// A loop device over a sparse file; detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn new(file: &Path, size: u64) -> Loop {
        std::fs::File::create(file).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// The pool's devices; everything mounted under the test dir is unmounted and the pool torn
/// down on drop, also when the test fails.
struct Pool {
    name: String,
    dir: PathBuf,
    data: Loop,
    meta: Loop,
}

const BLOCK_SECTORS: u64 = 128;

impl Pool {
    fn new(dir: &Path, name: &str) -> Pool {
        Pool {
            name: name.into(),
            dir: dir.to_path_buf(),
            data: Loop::new(&dir.join("data.img"), 1 << 30),
            meta: Loop::new(&dir.join("meta.img"), 64 << 20),
        }
    }

    fn options(&self) -> Vec<String> {
        vec![
            format!("dm.datadev={}", self.data.0.display()),
            format!("dm.metadatadev={}", self.meta.0.display()),
            format!("dm.thinpoolname={}", self.name),
            format!("dm.thinpoolblocksize={BLOCK_SECTORS}"),
            "dm.defaultvolumesize=64m".into(),
            "dm.fs=ext4".into(),
        ]
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep ' {}' /proc/self/mountinfo | cut -d' ' -f5 | sort -r | xargs -r umount",
                self.dir.display()
            ))
            .output();
        let config = PoolConfig::new(&self.data.0, &self.meta.0)
            .with_name(&self.name)
            .with_block_size(BlockSize::new(Sectors(BLOCK_SECTORS)).unwrap());
        if let Ok((pool, _)) = ThinPool::open(config) {
            if let Err(e) = pool.teardown() {
                eprintln!("teardown of {}: {e}", self.name);
            }
        }
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

fn write_synced(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

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
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
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
