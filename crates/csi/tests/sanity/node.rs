//! csi-sanity's "Node Service" cases (`node.go`).

use convoy_csi::pb::controller_service_capability::rpc::Type as CtrlRpc;
use convoy_csi::pb::node_service_capability::rpc::Type as NodeRpc;
use convoy_csi::pb::plugin_capability::service::Type as PluginService;
use convoy_csi::pb::*;
use tonic::Code;

use super::controller::fake_volume_id;
use super::{expect_code, Case, Ctx, Outcome};
use crate::{case, skip_unless};

const NODE: &str = "Node Service";

pub fn cases() -> Vec<Case> {
    let g = NODE;
    vec![
        case!(
            g,
            "NodeGetCapabilities should return appropriate capabilities",
            caps
        ),
        case!(g, "NodeGetInfo should return appropriate values", info),
        case!(
            g,
            "NodePublishVolume should fail when no volume id is provided",
            publish_no_id
        ),
        case!(
            g,
            "NodePublishVolume should fail when no target path is provided",
            publish_no_target
        ),
        case!(
            g,
            "NodePublishVolume should fail when no volume capability is provided",
            publish_no_cap
        ),
        case!(
            g,
            "NodeUnpublishVolume should fail when no volume id is provided",
            unpublish_no_id
        ),
        case!(
            g,
            "NodeUnpublishVolume should fail when no target path is provided",
            unpublish_no_target
        ),
        case!(
            g,
            "NodeUnpublishVolume should remove target path",
            unpublish_removes_target
        ),
        case!(
            g,
            "NodeStageVolume should fail when no volume id is provided",
            stage_no_id
        ),
        case!(
            g,
            "NodeStageVolume should fail when no staging target path is provided",
            stage_no_path
        ),
        case!(
            g,
            "NodeStageVolume should fail when no volume capability is provided",
            stage_no_cap
        ),
        case!(
            g,
            "NodeUnstageVolume should fail when no volume id is provided",
            unstage_no_id
        ),
        case!(
            g,
            "NodeUnstageVolume should fail when no staging target path is provided",
            unstage_no_path
        ),
        case!(
            g,
            "NodeGetVolumeStats should fail when no volume id is provided",
            stats_no_id
        ),
        case!(
            g,
            "NodeGetVolumeStats should fail when no volume path is provided",
            stats_no_path
        ),
        case!(
            g,
            "NodeGetVolumeStats should fail when volume is not found",
            stats_missing_volume
        ),
        case!(
            g,
            "NodeGetVolumeStats should fail when volume does not exist on the specified path",
            stats_wrong_path
        ),
        case!(
            g,
            "NodeExpandVolume should fail when no volume id is provided",
            expand_no_id
        ),
        case!(
            g,
            "NodeExpandVolume should fail when no volume path is provided",
            expand_no_path
        ),
        case!(
            g,
            "NodeExpandVolume should fail when volume is not found",
            expand_missing_volume
        ),
        case!(
            g,
            "NodeExpandVolume should work if node-expand is called after node-publish",
            expand_after_publish
        ),
        case!(g, "should work", full),
        case!(g, "should be idempotent", idempotent),
    ]
}

async fn caps(s: Ctx) -> Outcome {
    let caps =
        s.n.clone()
            .node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner();
    for cap in caps.capabilities {
        let Some(node_service_capability::Type::Rpc(r)) = cap.r#type else {
            panic!("a capability without an RPC");
        };
        NodeRpc::try_from(r.r#type).expect("a known RPC type");
    }
    Outcome::Pass
}

async fn info(s: Ctx) -> Outcome {
    let ni = s.node_info().await;
    assert!(ni.max_volumes_per_node >= 0);
    if s.plugin_has(PluginService::VolumeAccessibilityConstraints)
        .await
    {
        assert!(ni.accessible_topology.is_some());
    }
    Outcome::Pass
}

async fn publish_no_id(s: Ctx) -> Outcome {
    let r =
        s.n.clone()
            .node_publish_volume(NodePublishVolumeRequest::default())
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn publish_no_target(s: Ctx) -> Outcome {
    let r =
        s.n.clone()
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: fake_volume_id(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn publish_no_cap(s: Ctx) -> Outcome {
    let r =
        s.n.clone()
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: fake_volume_id(),
                target_path: s.target().display().to_string(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn unpublish_no_id(s: Ctx) -> Outcome {
    let r =
        s.n.clone()
            .node_unpublish_volume(NodeUnpublishVolumeRequest::default())
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn unpublish_no_target(s: Ctx) -> Outcome {
    let r =
        s.n.clone()
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: fake_volume_id(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

/// The suite's `createVolume` of the Node cases: required bytes only.
async fn create(s: &Ctx, name: &str) -> Volume {
    s.must_create_volume(s.create_req_required(&s.unique(name)))
        .await
}

async fn unpublish_removes_target(s: Ctx) -> Outcome {
    let v = create(&s, "sanity-node-unpublish-volume").await;
    s.node_info().await;
    s.node_stage(&v).await;
    s.node_publish(&v).await;
    let target = s.target();
    assert!(
        std::fs::symlink_metadata(&target).is_ok(),
        "{} should have been made by the driver",
        target.display()
    );
    s.n.clone()
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap();
    assert!(
        std::fs::symlink_metadata(&target).is_err(),
        "{} should have been removed by NodeUnpublishVolume",
        target.display()
    );
    Outcome::Pass
}

async fn staged(s: &Ctx) -> bool {
    s.node_has(NodeRpc::StageUnstageVolume).await
}

async fn stage_no_id(s: Ctx) -> Outcome {
    skip_unless!(staged(&s).await, "NodeStageVolume not supported");
    let r =
        s.n.clone()
            .node_stage_volume(NodeStageVolumeRequest {
                staging_target_path: s.staging_dir.display().to_string(),
                volume_capability: Some(s.writer()),
                publish_context: [("device".to_string(), "/dev/mock".to_string())].into(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn stage_no_path(s: Ctx) -> Outcome {
    skip_unless!(staged(&s).await, "NodeStageVolume not supported");
    let r =
        s.n.clone()
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: fake_volume_id(),
                volume_capability: Some(s.writer()),
                publish_context: [("device".to_string(), "/dev/mock".to_string())].into(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn stage_no_cap(s: Ctx) -> Outcome {
    skip_unless!(staged(&s).await, "NodeStageVolume not supported");
    // Created with a mount capability whatever the suite's access type.
    let mut req = s.create_req_required(&s.unique("sanity-node-stage-nocaps"));
    req.capacity_range = None;
    req.volume_capabilities = vec![VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume::default(),
        )),
        ..s.writer()
    }];
    let v = s.must_create_volume(req).await;
    let r =
        s.n.clone()
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: v.volume_id,
                staging_target_path: s.staging_dir.display().to_string(),
                publish_context: [("device".to_string(), "/dev/mock".to_string())].into(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn unstage_no_id(s: Ctx) -> Outcome {
    skip_unless!(staged(&s).await, "NodeUnstageVolume not supported");
    let r =
        s.n.clone()
            .node_unstage_volume(NodeUnstageVolumeRequest {
                staging_target_path: s.staging_dir.display().to_string(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn unstage_no_path(s: Ctx) -> Outcome {
    skip_unless!(staged(&s).await, "NodeUnstageVolume not supported");
    let r =
        s.n.clone()
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: fake_volume_id(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn has_stats(s: &Ctx) -> bool {
    s.node_has(NodeRpc::GetVolumeStats).await
}

fn stats_req(id: &str, path: &str) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        ..Default::default()
    }
}

async fn stats_no_id(s: Ctx) -> Outcome {
    skip_unless!(has_stats(&s).await, "NodeGetVolume not supported");
    let r =
        s.n.clone()
            .node_get_volume_stats(stats_req("", "some/path"))
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn stats_no_path(s: Ctx) -> Outcome {
    skip_unless!(has_stats(&s).await, "NodeGetVolume not supported");
    let r =
        s.n.clone()
            .node_get_volume_stats(stats_req(&fake_volume_id(), ""))
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn stats_missing_volume(s: Ctx) -> Outcome {
    skip_unless!(has_stats(&s).await, "NodeGetVolume not supported");
    let r =
        s.n.clone()
            .node_get_volume_stats(stats_req(&fake_volume_id(), "some/path"))
            .await;
    expect_code(r, Code::NotFound);
    Outcome::Pass
}

async fn stats_wrong_path(s: Ctx) -> Outcome {
    skip_unless!(has_stats(&s).await, "NodeGetVolume not supported");
    let v = create(&s, "sanity-node-get-volume-stats").await;
    s.node_info().await;
    s.node_stage(&v).await;
    s.node_publish(&v).await;
    let r =
        s.n.clone()
            .node_get_volume_stats(stats_req(&v.volume_id, "some/path"))
            .await;
    expect_code(r, Code::NotFound);
    Outcome::Pass
}

async fn has_node_expand(s: &Ctx) -> bool {
    s.node_has(NodeRpc::ExpandVolume).await
}

async fn expand_no_id(s: Ctx) -> Outcome {
    skip_unless!(has_node_expand(&s).await, "NodeExpandVolume not supported");
    let r =
        s.n.clone()
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_path: s.mount_dir.display().to_string(),
                volume_capability: Some(s.writer()),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn expand_no_path(s: Ctx) -> Outcome {
    skip_unless!(has_node_expand(&s).await, "NodeExpandVolume not supported");
    let v = create(&s, "sanity-node-expand-volume-valid-id").await;
    let r =
        s.n.clone()
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: v.volume_id,
                volume_capability: Some(s.writer()),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn expand_missing_volume(s: Ctx) -> Outcome {
    skip_unless!(has_node_expand(&s).await, "NodeExpandVolume not supported");
    let r =
        s.n.clone()
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: fake_volume_id(),
                volume_path: "some/path".into(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::NotFound);
    Outcome::Pass
}

async fn expand_after_publish(s: Ctx) -> Outcome {
    skip_unless!(has_node_expand(&s).await, "NodeExpandVolume not supported");
    let v = create(&s, "sanity-node-expand-volume").await;
    if s.controller_has(CtrlRpc::ExpandVolume).await {
        let r =
            s.c.clone()
                .controller_expand_volume(ControllerExpandVolumeRequest {
                    volume_id: v.volume_id.clone(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: s.config.expand_size,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
        assert_eq!(r.capacity_bytes, s.config.expand_size);
    }
    s.node_info().await;
    s.node_stage(&v).await;
    s.node_publish(&v).await;
    s.n.clone()
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: v.volume_id,
            volume_path: s.target().display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: s.config.expand_size,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("while expanding volume on node: {e:?}"));
    Outcome::Pass
}

/// csi-sanity's `runControllerTest`: create with this node's topology, stage and publish
/// `count` times each, then the stats of the published volume.
async fn controller_test(s: &Ctx, count: usize) {
    let ni = s.node_info().await;
    let mut req = s.create_req_required(&s.unique(&format!("sanity-node-full-{count}")));
    req.accessibility_requirements = ni.accessible_topology.map(|t| TopologyRequirement {
        requisite: vec![t],
        preferred: vec![],
    });
    let v = s.must_create_volume(req).await;
    for _ in 0..count {
        s.node_stage(&v).await;
    }
    for _ in 0..count {
        s.node_publish(&v).await;
    }
    if has_stats(s).await {
        let stats =
            s.n.clone()
                .node_get_volume_stats(stats_req(&v.volume_id, &s.target().display().to_string()))
                .await
                .unwrap()
                .into_inner();
        assert!(!stats.usage.is_empty(), "{stats:?}");
    }
}

async fn full(s: Ctx) -> Outcome {
    controller_test(&s, 1).await;
    Outcome::Pass
}

async fn idempotent(s: Ctx) -> Outcome {
    skip_unless!(
        s.config.idempotent_count > 0,
        "Config.IdempotentCount is zero or negative, skip tests"
    );
    controller_test(&s, s.config.idempotent_count).await;
    Outcome::Pass
}
