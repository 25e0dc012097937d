//! convoy's own checks beside csi-sanity's, for the spec's rules the suite does not exercise
//! (or only through its clean-up): a target path the orchestrator made, repeated or stray
//! unpublish and unstage, ids no driver gave, capacity per capability and topology, the volume
//! context, a path that holds another volume, deleting a volume in use.

use convoy_csi::pb::controller_service_capability::rpc::Type as CtrlRpc;
use convoy_csi::pb::node_service_capability::rpc::Type as NodeRpc;
use convoy_csi::pb::volume_capability::access_mode::Mode;
use convoy_csi::pb::*;
use tonic::Code;

use super::{expect_code, Case, Ctx, Outcome};
use crate::{case, skip_unless};

const EXTRA: &str = "convoy";

pub fn cases() -> Vec<Case> {
    let g = EXTRA;
    vec![
        case!(g, "NodePublishVolume onto a target the orchestrator already made", publish_existing_target),
        case!(g, "NodeUnpublishVolume of a target never published (twice) succeeds; of an unknown volume is NOT_FOUND", unpublish_stray),
        case!(g, "NodeUnstageVolume of a path never staged (twice) succeeds; of an unknown volume is NOT_FOUND", unstage_stray),
        case!(g, "ids no driver gave (too long, odd characters) are NOT_FOUND, and their deletes succeed", odd_ids),
        case!(g, "GetCapacity per capability and topology segment", capacity_segments),
        case!(g, "the volume context round-trips through ControllerGetVolume, ValidateVolumeCapabilities, stage and publish", volume_context),
        case!(g, "NodeGetVolumeStats and NodeExpandVolume of a path that holds another volume or none are NOT_FOUND; unpublishing and unstaging a volume that is not there leave the other alone", wrong_volume_at_path),
        case!(g, "CreateVolume with required_bytes above limit_bytes is OUT_OF_RANGE; an access mode the driver cannot serve is INVALID_ARGUMENT", bad_requests),
        case!(g, "NodePublishVolume read-only where the volume is published read-write is ALREADY_EXISTS", publish_conflict),
        case!(g, "DeleteVolume of a staged and published volume is FAILED_PRECONDITION and keeps its data", delete_in_use),
        case!(g, "ListVolumes and ListSnapshots pages list everything once; a token not given is ABORTED", pages),
    ]
}

async fn publish_existing_target(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-existing-target")))
        .await;
    s.node_stage(&v).await;
    let target = s.target();
    if s.config.block {
        std::fs::write(&target, b"").unwrap();
    } else {
        std::fs::create_dir(&target).unwrap();
    }
    s.node_publish(&v).await;
    // Published again: the same answer.
    s.node_publish(&v).await;
    s.n.clone()
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: v.volume_id,
            target_path: target.display().to_string(),
        })
        .await
        .unwrap();
    assert!(std::fs::symlink_metadata(&target).is_err());
    Outcome::Pass
}

fn unpublish(id: &str, target: &std::path::Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
    }
}

async fn unpublish_stray(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-stray-unpublish")))
        .await;
    for _ in 0..2 {
        s.n.clone()
            .node_unpublish_volume(unpublish(&v.volume_id, &s.target()))
            .await
            .unwrap();
    }
    let r =
        s.n.clone()
            .node_unpublish_volume(unpublish("convoy-no-such-volume", &s.target()))
            .await;
    expect_code(r, Code::NotFound);
    Outcome::Pass
}

fn unstage(id: &str, staging: &std::path::Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: id.into(),
        staging_target_path: staging.display().to_string(),
    }
}

async fn unstage_stray(s: Ctx) -> Outcome {
    skip_unless!(
        s.node_has(NodeRpc::StageUnstageVolume).await,
        "NodeUnstageVolume not supported"
    );
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-stray-unstage")))
        .await;
    for at in [s.staging_dir.clone(), s.staging_dir.join("never-made")] {
        for _ in 0..2 {
            s.n.clone()
                .node_unstage_volume(unstage(&v.volume_id, &at))
                .await
                .unwrap();
        }
    }
    let r =
        s.n.clone()
            .node_unstage_volume(unstage("convoy-no-such-volume", &s.staging_dir))
            .await;
    expect_code(r, Code::NotFound);
    Outcome::Pass
}

async fn odd_ids(s: Ctx) -> Outcome {
    let long = "v".repeat(300);
    for id in [long.as_str(), "../../etc", "a b/c", "-x", "é"] {
        s.delete_volume(id).await.unwrap();
        s.delete_snapshot(id).await.unwrap();
        let r =
            s.c.clone()
                .controller_get_volume(ControllerGetVolumeRequest {
                    volume_id: id.into(),
                })
                .await;
        expect_code(r, Code::NotFound);
        let r =
            s.c.clone()
                .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                    volume_id: id.into(),
                    volume_capabilities: vec![s.writer()],
                    ..Default::default()
                })
                .await;
        expect_code(r, Code::NotFound);
        let r = s
            .create_snapshot(s.make_create_snapshot_req(&s.unique("convoy-odd"), id))
            .await;
        expect_code(r, Code::NotFound);
        let r =
            s.n.clone()
                .node_stage_volume(NodeStageVolumeRequest {
                    volume_id: id.into(),
                    staging_target_path: s.staging_dir.display().to_string(),
                    volume_capability: Some(s.writer()),
                    ..Default::default()
                })
                .await;
        expect_code(r, Code::NotFound);
        for list in [
            ListSnapshotsRequest {
                snapshot_id: id.into(),
                ..Default::default()
            },
            ListSnapshotsRequest {
                source_volume_id: id.into(),
                ..Default::default()
            },
        ] {
            let r = s.c.clone().list_snapshots(list).await.unwrap().into_inner();
            assert!(r.entries.is_empty(), "{r:?}");
        }
    }
    Outcome::Pass
}

async fn capacity_segments(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::GetCapacity).await,
        "GetCapacity not supported"
    );
    let ni = s.node_info().await;
    let ask = |caps: Vec<VolumeCapability>, topology: Option<Topology>| GetCapacityRequest {
        volume_capabilities: caps,
        parameters: s.config.parameters.clone(),
        accessible_topology: topology,
    };
    let available = |r: GetCapacityRequest| {
        let mut c = s.c.clone();
        async move {
            c.get_capacity(r)
                .await
                .unwrap()
                .into_inner()
                .available_capacity
        }
    };
    let here = ni.accessible_topology.clone();
    assert!(available(ask(vec![], None)).await > 0);
    assert!(available(ask(vec![s.writer()], here.clone())).await > 0);
    let elsewhere = Topology {
        segments: [(
            convoy_csi::TOPOLOGY_KEY.to_string(),
            "another-node".to_string(),
        )]
        .into(),
    };
    assert_eq!(available(ask(vec![s.writer()], Some(elsewhere))).await, 0);
    let shared = s.cap(Mode::MultiNodeMultiWriter);
    assert_eq!(available(ask(vec![shared], here)).await, 0);
    Outcome::Pass
}

async fn volume_context(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-context")))
        .await;
    assert!(!v.volume_context.is_empty(), "{v:?}");
    let got =
        s.c.clone()
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: v.volume_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(got.volume.unwrap().volume_context, v.volume_context);
    let confirmed =
        s.c.clone()
            .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                volume_id: v.volume_id.clone(),
                volume_capabilities: vec![s.writer()],
                volume_context: v.volume_context.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .confirmed
            .expect("confirmed");
    assert_eq!(confirmed.volume_context, v.volume_context);
    // node_stage and node_publish pass the context on.
    s.node_stage(&v).await;
    s.node_publish(&v).await;
    Outcome::Pass
}

async fn wrong_volume_at_path(s: Ctx) -> Outcome {
    let a = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-at-a")))
        .await;
    let b = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-at-b")))
        .await;
    s.node_stage(&a).await;
    s.node_publish(&a).await;
    let target = s.target().display().to_string();
    let plain = s.mount_dir.display().to_string();
    let stats = |id: &str, path: &str| NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        ..Default::default()
    };
    s.n.clone()
        .node_get_volume_stats(stats(&a.volume_id, &target))
        .await
        .unwrap();
    for (id, path) in [(&b.volume_id, &target), (&a.volume_id, &plain)] {
        let r = s.n.clone().node_get_volume_stats(stats(id, path)).await;
        expect_code(r, Code::NotFound);
        if s.node_has(NodeRpc::ExpandVolume).await {
            let r =
                s.n.clone()
                    .node_expand_volume(NodeExpandVolumeRequest {
                        volume_id: id.clone(),
                        volume_path: path.clone(),
                        ..Default::default()
                    })
                    .await;
            expect_code(r, Code::NotFound);
        }
    }
    // Unpublishing or unstaging b where a is: b is not there, nothing to do (OK), and a is
    // left published.
    s.n.clone()
        .node_unpublish_volume(unpublish(&b.volume_id, &s.target()))
        .await
        .unwrap();
    if s.node_has(NodeRpc::StageUnstageVolume).await {
        s.n.clone()
            .node_unstage_volume(unstage(&b.volume_id, &s.staging_dir))
            .await
            .unwrap();
    }
    s.n.clone()
        .node_get_volume_stats(stats(&a.volume_id, &target))
        .await
        .unwrap();
    Outcome::Pass
}

async fn bad_requests(s: Ctx) -> Outcome {
    let mut req = s.make_create_volume_req(&s.unique("convoy-range"));
    req.capacity_range = Some(CapacityRange {
        required_bytes: 2 * s.config.volume_size,
        limit_bytes: s.config.volume_size,
    });
    expect_code(s.create_volume(req).await, Code::OutOfRange);
    let mut req = s.make_create_volume_req(&s.unique("convoy-shared"));
    req.volume_capabilities = vec![s.cap(Mode::MultiNodeMultiWriter)];
    expect_code(s.create_volume(req).await, Code::InvalidArgument);
    Outcome::Pass
}

async fn publish_conflict(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-conflict")))
        .await;
    s.node_stage(&v).await;
    s.node_publish(&v).await;
    let r =
        s.n.clone()
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: v.volume_id,
                target_path: s.target().display().to_string(),
                staging_target_path: s.staging_dir.display().to_string(),
                volume_capability: Some(s.writer()),
                readonly: true,
                ..Default::default()
            })
            .await;
    expect_code(r, Code::AlreadyExists);
    Outcome::Pass
}

async fn delete_in_use(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("convoy-in-use")))
        .await;
    s.node_stage(&v).await;
    s.node_publish(&v).await;
    let target = s.target();
    if !s.config.block {
        std::fs::write(target.join("kept"), b"still here").unwrap();
    }
    let r =
        s.c.clone()
            .delete_volume(DeleteVolumeRequest {
                volume_id: v.volume_id.clone(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::FailedPrecondition);
    if !s.config.block {
        assert_eq!(std::fs::read(target.join("kept")).unwrap(), b"still here");
        // The clean-up unpublishes and unstages before it deletes: the file goes with it.
        std::fs::remove_file(target.join("kept")).unwrap();
    }
    Outcome::Pass
}

async fn pages(s: Ctx) -> Outcome {
    let mut made = Vec::new();
    for i in 0..3 {
        let v = s
            .must_create_volume(s.make_create_volume_req(&s.unique(&format!("convoy-page-{i}"))))
            .await;
        s.must_create_snapshot(
            s.make_create_snapshot_req(&s.unique(&format!("convoy-page-snap-{i}")), &v.volume_id),
        )
        .await;
        made.push(v.volume_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page =
            s.c.clone()
                .list_volumes(ListVolumesRequest {
                    max_entries: 2,
                    starting_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "listed twice: {seen:?}");
    assert!(
        made.iter().all(|m| seen.contains(m)),
        "{made:?} not all in {seen:?}"
    );
    let mut snaps = 0;
    let mut token = String::new();
    loop {
        let page =
            s.c.clone()
                .list_snapshots(ListSnapshotsRequest {
                    max_entries: 1,
                    starting_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
        snaps += page.entries.len();
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert!(snaps >= 3);
    let r =
        s.c.clone()
            .list_snapshots(ListSnapshotsRequest {
                starting_token: "invalid-token".into(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::Aborted);
    Outcome::Pass
}
