//! csi-sanity's "Identity Service" and "Controller Service [Controller Server]" cases
//! (`identity.go`, the first part of `controller.go`).

use convoy_csi::pb::controller_service_capability::rpc::Type as CtrlRpc;
use convoy_csi::pb::plugin_capability::service::Type as PluginService;
use convoy_csi::pb::*;
use tonic::Code;

use super::{expect_code, gated, Case, Ctx, Outcome};
use crate::{case, skip_unless};

const IDENTITY: &str = "Identity Service";
const CONTROLLER: &str = "Controller Service [Controller Server]";

pub fn identity_cases() -> Vec<Case> {
    vec![
        case!(
            IDENTITY,
            "GetPluginCapabilities should return appropriate capabilities",
            plugin_caps
        ),
        case!(
            IDENTITY,
            "Probe should return appropriate information",
            probe
        ),
        case!(
            IDENTITY,
            "GetPluginInfo should return appropriate information",
            plugin_info
        ),
    ]
}

async fn plugin_caps(s: Ctx) -> Outcome {
    let caps =
        s.i.clone()
            .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner();
    use plugin_capability::volume_expansion::Type as Expansion;
    for cap in caps.capabilities {
        match cap.r#type {
            Some(plugin_capability::Type::Service(svc)) => {
                // The services csi-sanity knows (SNAPSHOT_METADATA_SERVICE since csi-test
                // PR #559, released in v5.4.0; older releases fail on it).
                let known = [
                    PluginService::ControllerService,
                    PluginService::VolumeAccessibilityConstraints,
                    PluginService::GroupControllerService,
                    PluginService::SnapshotMetadataService,
                ];
                assert!(
                    known.iter().any(|k| *k as i32 == svc.r#type),
                    "Unknown service: {}",
                    svc.r#type
                );
            }
            Some(plugin_capability::Type::VolumeExpansion(e)) => assert!(
                [Expansion::Online as i32, Expansion::Offline as i32].contains(&e.r#type),
                "Unknown volume expansion mode: {}",
                e.r#type
            ),
            None => panic!("Unknown capability: none"),
        }
    }
    Outcome::Pass
}

async fn probe(s: Ctx) -> Outcome {
    // OK (or FAILED_PRECONDITION, which csi-sanity also accepts: but it expects no error).
    let res =
        s.i.clone()
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner();
    let _ = res.ready;
    Outcome::Pass
}

async fn plugin_info(s: Ctx) -> Outcome {
    let res =
        s.i.clone()
            .get_plugin_info(GetPluginInfoRequest {})
            .await
            .unwrap()
            .into_inner();
    let name = res.name.as_bytes();
    assert!(!name.is_empty() && name.len() <= 63, "{:?}", res.name);
    // ^[a-zA-Z][A-Za-z0-9-\\.\\_]{0,61}[a-zA-Z]$ (the class holds '-', '\', '.', '_').
    let inner = |c: &u8| c.is_ascii_alphanumeric() || b"-\\._".contains(c);
    assert!(
        name.len() >= 2
            && name[0].is_ascii_alphabetic()
            && name[name.len() - 1].is_ascii_alphabetic()
            && name[1..name.len() - 1].iter().all(inner),
        "plugin name {:?} does not match csi-sanity's pattern",
        res.name
    );
    Outcome::Pass
}

pub fn controller_cases() -> Vec<Case> {
    let g = CONTROLLER;
    vec![
        case!(g, "ControllerGetCapabilities should return appropriate capabilities", get_caps),
        case!(g, "GetCapacity should return capacity (no optional values added)", capacity),
        case!(g, "ListVolumes should return appropriate values (no optional values added)", list_plain),
        case!(g, "ListVolumes should fail when an invalid starting_token is passed", list_bad_token),
        case!(g, "ListVolumes check the presence of new volumes and absence of deleted ones in the volume list", list_presence),
        case!(g, "ListVolumes pagination should detect volumes added between pages and accept tokens when the last volume from a page is deleted (XIt: disabled in csi-sanity)", list_pagination),
        case!(g, "CreateVolume should fail when no name is provided", create_no_name),
        case!(g, "CreateVolume should fail when no volume capabilities are provided", create_no_caps),
        case!(g, "CreateVolume should return appropriate values SingleNodeWriter NoCapacity", create_no_capacity),
        case!(g, "CreateVolume should return appropriate values SingleNodeWriter WithCapacity 1Gi", create_with_capacity),
        case!(g, "CreateVolume should not fail when requesting to create a volume with already existing name and same capacity", create_twice),
        case!(g, "CreateVolume should fail when requesting to create a volume with already existing name and different capacity", create_twice_different),
        case!(g, "CreateVolume should not fail when creating volume with maximum-length name", create_max_name),
        case!(g, "CreateVolume should create volume from an existing source snapshot", create_from_snapshot),
        case!(g, "CreateVolume should fail when the volume source snapshot is not found", create_from_missing_snapshot),
        case!(g, "CreateVolume should create volume from an existing source volume", create_from_volume),
        case!(g, "CreateVolume should fail when the volume source volume is not found", create_from_missing_volume),
        case!(g, "CreateVolume should create volume with a volume attribute class", modify_gated),
        case!(g, "CreateVolume should not create volume with an invalid volume attribute class", modify_gated),
        case!(g, "DeleteVolume should fail when no volume id is provided", delete_no_id),
        case!(g, "DeleteVolume should succeed when an invalid volume id is used", delete_invalid_id),
        case!(g, "DeleteVolume should return appropriate values (no optional values added)", delete_plain),
        case!(g, "ValidateVolumeCapabilities should fail when no volume id is provided", validate_no_id),
        case!(g, "ValidateVolumeCapabilities should fail when no volume capabilities are provided", validate_no_caps),
        case!(g, "ValidateVolumeCapabilities should return appropriate values (no optional values added)", validate_plain),
        case!(g, "ValidateVolumeCapabilities should fail when the requested volume does not exist", validate_missing),
        case!(g, "ControllerPublishVolume should fail when no volume id is provided", publish_gated),
        case!(g, "ControllerPublishVolume should fail when no node id is provided", publish_gated),
        case!(g, "ControllerPublishVolume should fail when no volume capability is provided", publish_gated),
        case!(g, "ControllerPublishVolume should fail when publishing more volumes than the node max attach limit", publish_gated),
        case!(g, "ControllerPublishVolume should fail when the volume does not exist", publish_gated),
        case!(g, "ControllerPublishVolume should fail when the node does not exist", publish_gated),
        case!(g, "ControllerPublishVolume should fail when the volume is already published but is incompatible", publish_gated),
        case!(g, "volume lifecycle should work", publish_gated),
        case!(g, "volume lifecycle should be idempotent", publish_gated),
        case!(g, "ControllerUnpublishVolume should fail when no volume id is provided", publish_gated),
    ]
}

async fn get_caps(s: Ctx) -> Outcome {
    let caps =
        s.c.clone()
            .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner();
    for cap in caps.capabilities {
        let Some(controller_service_capability::Type::Rpc(r)) = cap.r#type else {
            panic!("a capability without an RPC");
        };
        let t = CtrlRpc::try_from(r.r#type).expect("a known RPC type");
        assert_ne!(t, CtrlRpc::Unknown, "Unknown capability");
    }
    Outcome::Pass
}

async fn capacity(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::GetCapacity).await,
        "GetCapacity not supported"
    );
    s.c.clone()
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap();
    Outcome::Pass
}

async fn list(s: &Ctx, req: ListVolumesRequest) -> Result<ListVolumesResponse, tonic::Status> {
    s.c.clone().list_volumes(req).await.map(|r| r.into_inner())
}

async fn list_plain(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::ListVolumes).await,
        "ListVolumes not supported"
    );
    for e in list(&s, ListVolumesRequest::default())
        .await
        .unwrap()
        .entries
    {
        assert!(!e.volume.unwrap().volume_id.is_empty());
    }
    Outcome::Pass
}

async fn list_bad_token(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::ListVolumes).await,
        "ListVolumes not supported"
    );
    let r =
        s.c.clone()
            .list_volumes(ListVolumesRequest {
                starting_token: "invalid-token".into(),
                ..Default::default()
            })
            .await;
    expect_code(r, Code::Aborted);
    Outcome::Pass
}

async fn list_presence(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::ListVolumes).await,
        "ListVolumes not supported"
    );
    let total = list(&s, ListVolumesRequest::default())
        .await
        .unwrap()
        .entries
        .len();
    let mut req = s.create_req_required("sanity");
    req.capacity_range = None;
    let v = s.must_create_volume(req).await;
    let now = list(&s, ListVolumesRequest::default())
        .await
        .unwrap()
        .entries
        .len();
    assert_eq!(now, total + 1);
    s.delete_volume(&v.volume_id).await.unwrap();
    let after = list(&s, ListVolumesRequest::default())
        .await
        .unwrap()
        .entries
        .len();
    assert_eq!(after, total);
    Outcome::Pass
}

async fn list_pagination(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::ListVolumes).await,
        "ListVolumes not supported"
    );
    let mut existing = std::collections::HashMap::new();
    let all = list(&s, ListVolumesRequest::default()).await.unwrap();
    for e in &all.entries {
        existing.insert(e.volume.as_ref().unwrap().volume_id.clone(), true);
    }
    let mut min = 3;
    if all.entries.len() >= min {
        min = all.entries.len();
    } else {
        for i in all.entries.len()..min {
            let mut req = s.create_req_required(&format!("sanity{i}"));
            req.capacity_range = None;
            let v = s.must_create_volume(req).await;
            existing.insert(v.volume_id, true);
        }
    }
    let page = list(
        &s,
        ListVolumesRequest {
            max_entries: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.entries.len(), 2);
    for e in &page.entries {
        let id = e.volume.as_ref().unwrap().volume_id.clone();
        assert_eq!(existing.get(&id), Some(&true));
        s.delete_volume(&id).await.unwrap();
        existing.insert(id, false);
    }
    let mut req = s.create_req_required("new-addition");
    req.capacity_range = None;
    let v = s.must_create_volume(req).await;
    existing.insert(v.volume_id, true);
    let rest = list(
        &s,
        ListVolumesRequest {
            starting_token: page.next_token,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Volumes may be missed, never listed twice.
    assert!(rest.entries.len() <= min - 2 + 1);
    for e in rest.entries {
        let id = e.volume.unwrap().volume_id;
        assert_eq!(
            existing.insert(id.clone(), false),
            Some(true),
            "{id} listed twice or unknown"
        );
    }
    Outcome::Pass
}

async fn create_no_name(s: Ctx) -> Outcome {
    let r = s
        .create_volume(CreateVolumeRequest {
            parameters: s.config.parameters.clone(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn create_no_caps(s: Ctx) -> Outcome {
    let r = s
        .create_volume(CreateVolumeRequest {
            name: s.unique("sanity-controller-create-no-volume-capabilities"),
            parameters: s.config.parameters.clone(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn create_no_capacity(s: Ctx) -> Outcome {
    s.must_create_volume(
        s.create_req_required(&s.unique("sanity-controller-create-single-no-capacity")),
    )
    .await;
    Outcome::Pass
}

fn big_enough(v: &Volume, size: i64) {
    assert!(
        v.capacity_bytes >= size || v.capacity_bytes == 0,
        "capacity {} below {size}",
        v.capacity_bytes
    );
}

async fn create_with_capacity(s: Ctx) -> Outcome {
    let r = s
        .create_volume(
            s.create_req_required(&s.unique("sanity-controller-create-single-with-capacity")),
        )
        .await;
    if let Err(e) = &r {
        skip_unless!(
            !matches!(e.code(), Code::OutOfRange | Code::Unimplemented),
            "Required bytes not supported"
        );
    }
    let v = r.unwrap().into_inner().volume.unwrap();
    assert!(!v.volume_id.is_empty());
    big_enough(&v, s.config.volume_size);
    Outcome::Pass
}

async fn create_twice(s: Ctx) -> Outcome {
    let name = s.unique("sanity-controller-create-twice");
    let v1 = s.must_create_volume(s.create_req_required(&name)).await;
    big_enough(&v1, s.config.volume_size);
    let v2 = s.must_create_volume(s.create_req_required(&name)).await;
    big_enough(&v2, s.config.volume_size);
    assert_eq!(v1.volume_id, v2.volume_id);
    Outcome::Pass
}

async fn create_twice_different(s: Ctx) -> Outcome {
    let name = s.unique("sanity-controller-create-twice-different");
    s.must_create_volume(s.make_create_volume_req(&name)).await;
    let mut req = s.make_create_volume_req(&name);
    req.capacity_range = Some(CapacityRange {
        required_bytes: 2 * s.config.volume_size,
        limit_bytes: 2 * s.config.volume_size,
    });
    expect_code(s.create_volume(req).await, Code::AlreadyExists);
    Outcome::Pass
}

async fn create_max_name(s: Ctx) -> Outcome {
    let name = s.unique_with_length("sanity-controller-create-maxlen", super::MAX_NAME_LENGTH);
    let v = s.must_create_volume(s.create_req_required(&name)).await;
    big_enough(&v, s.config.volume_size);
    Outcome::Pass
}

fn snapshot_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: id.into(),
            },
        )),
    })
}

fn volume_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: id.into(),
            },
        )),
    })
}

async fn create_from_snapshot(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::CreateDeleteSnapshot).await,
        "Snapshot not supported"
    );
    let v1 = s
        .must_create_volume(s.make_create_volume_req(&s.unique("sanity-controller-source-vol")))
        .await;
    let req =
        s.make_create_snapshot_req(&s.unique("sanity-controller-snap-from-vol"), &v1.volume_id);
    let snap = loop {
        let snap = s.must_create_snapshot(req.clone()).await;
        if snap.ready_to_use {
            break snap;
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    };
    let mut req = s.make_create_volume_req(&s.unique("sanity-controller-vol-from-snap"));
    req.volume_content_source = snapshot_source(&snap.snapshot_id);
    let v = s
        .create_volume(req)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(v.content_source.is_some(), "no content source: {v:?}");
    Outcome::Pass
}

async fn create_from_missing_snapshot(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::CreateDeleteSnapshot).await,
        "Snapshot not supported"
    );
    let mut req = s.make_create_volume_req(&s.unique("sanity-controller-vol-from-snap"));
    req.volume_content_source = snapshot_source("non-existing-snapshot-id");
    expect_code(s.create_volume(req).await, Code::NotFound);
    Outcome::Pass
}

async fn create_from_volume(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::CloneVolume).await,
        "Volume Cloning not supported"
    );
    let v1 = s
        .must_create_volume(s.make_create_volume_req(&s.unique("sanity-controller-source-vol")))
        .await;
    let mut req = s.make_create_volume_req(&s.unique("sanity-controller-vol-from-vol"));
    req.volume_content_source = volume_source(&v1.volume_id);
    s.create_volume(req).await.unwrap();
    Outcome::Pass
}

/// `GenerateUniqueValidVolumeID` of csi-sanity's default id generator.
pub fn fake_volume_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("fake-vol-id-{nanos:010x}")
}

async fn create_from_missing_volume(s: Ctx) -> Outcome {
    skip_unless!(
        s.controller_has(CtrlRpc::CloneVolume).await,
        "Volume Cloning not supported"
    );
    let mut req = s.make_create_volume_req(&s.unique("sanity-controller-vol-from-snap"));
    req.volume_content_source = volume_source(&fake_volume_id());
    expect_code(s.create_volume(req).await, Code::NotFound);
    Outcome::Pass
}

async fn modify_gated(s: Ctx) -> Outcome {
    gated(
        s.controller_has(CtrlRpc::ModifyVolume).await,
        "MODIFY_VOLUME",
    )
}

async fn publish_gated(s: Ctx) -> Outcome {
    gated(
        s.controller_has(CtrlRpc::PublishUnpublishVolume).await,
        "PUBLISH_UNPUBLISH_VOLUME",
    )
}

async fn delete_no_id(s: Ctx) -> Outcome {
    let r =
        s.c.clone()
            .delete_volume(DeleteVolumeRequest::default())
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn delete_invalid_id(s: Ctx) -> Outcome {
    s.delete_volume("fake-vol-id").await.unwrap();
    Outcome::Pass
}

async fn delete_plain(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(
            s.create_req_required(&s.unique("sanity-controller-create-appropriate")),
        )
        .await;
    s.delete_volume(&v.volume_id).await.unwrap();
    Outcome::Pass
}

fn validate(id: &str, caps: Vec<VolumeCapability>) -> ValidateVolumeCapabilitiesRequest {
    ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    }
}

async fn validate_no_id(s: Ctx) -> Outcome {
    let r =
        s.c.clone()
            .validate_volume_capabilities(ValidateVolumeCapabilitiesRequest::default())
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn validate_no_caps(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("sanity-controller-validate-nocaps")))
        .await;
    let r =
        s.c.clone()
            .validate_volume_capabilities(validate(&v.volume_id, vec![]))
            .await;
    expect_code(r, Code::InvalidArgument);
    Outcome::Pass
}

async fn validate_plain(s: Ctx) -> Outcome {
    let v = s
        .must_create_volume(s.create_req_required(&s.unique("sanity-controller-validate")))
        .await;
    let answer =
        s.c.clone()
            .validate_volume_capabilities(validate(&v.volume_id, vec![s.writer()]))
            .await
            .unwrap()
            .into_inner();
    if let Some(confirmed) = answer.confirmed {
        assert!(!confirmed.volume_capabilities.is_empty());
    }
    Outcome::Pass
}

async fn validate_missing(s: Ctx) -> Outcome {
    let r =
        s.c.clone()
            .validate_volume_capabilities(validate(&fake_volume_id(), vec![s.writer()]))
            .await;
    expect_code(r, Code::NotFound);
    Outcome::Pass
}
